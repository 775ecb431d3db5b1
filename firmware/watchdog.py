# The example firmware's watchdog (boot.py, main.py): machine.WDT, so that a
# board whose application hangs resets itself. Off unless config.json sets
# "wdt_ms" (docs/firmware.md says how to choose it).
#
# machine.WDT cannot be stopped once started: not by Ctrl-C, not by a soft
# reset (on an ESP32 a second WDT() only takes a new timeout; on an RP2040
# 8388 ms at most). So that a console or an mpremote session (make deploy)
# is not cut short by a reset, a timer feeds it while no application runs:
#   boot.py    starts it and the timer (boot.py runs at every soft reset,
#              mpremote's included; main.py only at a normal boot);
#   main.py    stops the timer (take()) and feeds it itself: each loop
#              iteration, each step of a connect attempt, the Wi-Fi join;
#              at Ctrl-C or the "stop" command the timer feeds again
#              (hold()). Any other exception that ends main.py leaves it
#              unfed, a config fault before take() included (main.py
#              stops the timer): the board resets and runs the
#              application again (docs/firmware.md says why).
MIN_MS = 2000          # a session checkpoint erases flash blocks: not much less

ms = 0                 # the timeout of the watchdog running, 0: none
_wdt = None
_timer = None


def timeout(cfg, where="config.json"):
    # cfg's "wdt_ms", checked: 0 or absent (off), else MIN_MS or more and
    # at least twice timeout_ms (a whole number of ms, checked too): a
    # connect step waits up to timeout_ms unfed, and a DNS lookup (which
    # nothing can interrupt) may come first.
    w = cfg.get("wdt_ms") or 0
    if type(w) is not int or 0 < w < MIN_MS or w < 0:
        raise ValueError("%s: wdt_ms must be 0 (off) or a whole number of ms from %d, not %r"
                         % (where, MIN_MS, cfg.get("wdt_ms")))
    t = cfg.get("timeout_ms", 5000)
    if type(t) is not int:       # (checked here for boot.py too, wdt_ms set or not)
        raise ValueError("%s: timeout_ms must be a whole number of ms, not %r" % (where, t))
    if w and 2 * t > w:
        raise ValueError("%s: wdt_ms %d needs timeout_ms %d at most (half of it), not %r"
                         % (where, w, w // 2, t))
    return w


def start(w):
    # Starts machine.WDT with timeout w ms (0: none); one running already
    # takes w again. Returns it, or None (with a note where the port has
    # no machine.WDT, e.g. the unix port).
    global _wdt, ms
    if not w:
        return None
    try:
        from machine import WDT
    except ImportError:
        print("WDT: this port has no machine.WDT: running without a watchdog")
        return None
    _wdt = WDT(timeout=w)        # ValueError past the chip's maximum (RP2040: 8388 ms)
    ms = w
    return _wdt


def feed():
    if _wdt is not None:
        _wdt.feed()


def hold():
    # While no application runs (after boot.py, at Ctrl-C, after "stop"):
    # a timer feeds the watchdog, a quarter of its timeout apart.
    global _timer
    if _wdt is None or _timer is not None:
        return
    from machine import Timer
    try:
        t = Timer(-1)            # a virtual timer (RP2040, recent ESP32 firmware)
    except ValueError:
        t = Timer(0)             # older ESP32 firmware ("invalid Timer number"): hardware timer 0
    t.init(period=ms // 4, callback=_fed)
    _timer = t


def take():
    # The application feeds the watchdog from now on: the timer stops.
    global _timer
    if _timer is not None:
        _timer.deinit()
        _timer = None
    feed()


def _fed(_):
    feed()
