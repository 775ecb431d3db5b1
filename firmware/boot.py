# Runs first on every reset, soft resets included (mpremote's: main.py then
# does not run). Kept minimal: a crash here would stop the board from
# reaching main.py (and from being reachable with mpremote).
import gc

# The watchdog, when config.json sets wdt_ms (watchdog.py): started, or
# taken over from before a soft reset, and fed by a timer until main.py
# takes it; a deploy or a console session is not cut short by it.
try:
    import json
    import watchdog
    with open("config.json") as f:
        if watchdog.start(watchdog.timeout(json.load(f))):
            watchdog.hold()
except OSError:
    pass                         # no config.json: main.py says so
except Exception as e:           # (main.py reports a bad config.json)
    print("boot: no watchdog:", repr(e))

gc.collect()
