# Example device application: telemetry at QoS 1 and commands, on a session
# that survives Wi-Fi drops and resets.
#
# Files beside it on the board (`make deploy BOARD=esp32|rp2040` copies them,
# with the library in /lib/durable_mqtt):
#   config.json    broker, client id, topics, interval (in the repository)
#   secrets.json   Wi-Fi and MQTT credentials (never committed; see
#                  secrets.example.json; copied with DEPLOY_ARGS=--with-secrets)
#   profile.py     the board profile (boards/<board>/profile.py)
#   wlan.py        the Wi-Fi link (boards/wlan.py)
#   watchdog.py    machine.WDT when config.json sets wdt_ms (with boot.py)
#
# Topics, under topic_base:
#   <base>/tele    {"boot": B, "seq": S, "up_ms": T} every interval_ms, QoS 1
#   <base>/cmd     commands: "interval=<ms>", "ping", "stop" (QoS 1)
#   <base>/reply   answers to commands, QoS 1
#
# B counts resets (one flash write per boot), S counts messages within a
# boot, so (B, S) names every message ever accepted; a receiver can tell a
# QoS 1 repeat from a new message.
#
# On the console: BOOT (what was restored), STATS once a second, CMD for
# each command, REFUSED when the outbox is full, and ERROR with the reason
# whenever a connect attempt or the link fails (a refused login, no Wi-Fi,
# no broker).
#
# With "wdt_ms" in config.json a hardware watchdog resets a board whose
# application hangs (watchdog.py, docs/firmware.md): fed at each loop
# iteration, at each step of a connect attempt (each waits timeout_ms at
# most; the broker's DNS lookup is a step of its own, as long as lwIP
# takes: watchdog.LOOKUP_MS) and during the Wi-Fi join.
import json
import sys
import time

import profile
import watchdog
from durable_mqtt import QueueFull
from durable_mqtt.robust import RobustClient


class Client(RobustClient):
    # A connect attempt (link, CONNECT, CONNACK, resends, subscriptions)
    # runs in one poll() as steps, each waiting up to timeout_ms: the
    # watchdog is fed between them, or a slow broker would starve it for
    # several timeouts in a row. run(steps) is the client's documented hook
    # for this (docs/api.md#runsteps): every step passed on, unchanged.
    def run(self, steps):
        return super().run(fed(steps))


def fed(steps):
    # steps, with the watchdog fed before each.
    while True:
        watchdog.feed()
        try:
            w = next(steps)
        except StopIteration as s:
            return s.value
        yield w


def load(path, optional=False):
    # A JSON object from path; a missing optional file is {}. A fault stops
    # main() with a sentence that names the file (not "ENOENT" or "syntax
    # error in JSON"), and a malformed file is never taken for a missing one.
    try:
        f = open(path)
    except OSError:
        if optional:
            return {}
        raise ValueError("%s: not found beside main.py (make deploy copies it)" % path)
    with f:
        try:
            d = json.load(f)
        except ValueError:
            raise ValueError("%s: not valid JSON (a missing comma, quote or brace?)" % path)
    if not isinstance(d, dict):
        raise ValueError("%s: a JSON object {...} expected, not %s" % (path, type(d).__name__))
    return d


def main(config="config.json", secrets="secrets.json"):
    cfg = load(config)
    cfg.update(load(secrets, True))
    for key in ("client_id", "broker", "topic_base"):
        if not isinstance(cfg.get(key), str) or not cfg[key]:
            raise ValueError("%s: \"%s\" missing or not a string" % (config, key))
    interval = cfg.get("interval_ms", 1000)
    if type(interval) is not int:
        raise ValueError("%s: interval_ms must be a whole number of ms, not %r" % (config, interval))
    watchdog.start(watchdog.timeout(cfg, config))   # (boot.py started it already, and a timer feeds it)
    watchdog.take()                           # fed here from now on
    feed = watchdog.feed
    if hasattr(profile, "setup"):             # the simulated board mounts its flash image
        link = profile.setup(**cfg.get("sim", {}))
    else:
        from wlan import WLANLink
        if not cfg.get("wifi_ssid"):
            raise ValueError("no wifi_ssid: put secrets.json (see secrets.example.json) beside main.py, "
                             "e.g. make deploy DEPLOY_ARGS=--with-secrets")
        link = WLANLink(cfg["wifi_ssid"], cfg.get("wifi_password"), cfg.get("hostname"),
                        getattr(profile, "WLAN_PM", None),    # the Pico W: power saving off
                        feed,                                 # every 100 ms of the join
                        cfg.get("country"))                   # the Wi-Fi regulatory domain
    base = cfg["topic_base"]
    # 10 ms to a day, as the interval= command takes it (ticks_add() takes
    # less than 2**29 ms on a board)
    state = {"interval": max(10, min(interval, 86400000)), "run": True}
    trace = open(cfg["trace"], "a") if cfg.get("trace") else None   # simulation only

    def on_message(topic, msg, retained, qos):
        # A command is acknowledged before this runs and is not sent again:
        # a bad one gets a reply, never an exception that would end main().
        if retained:
            # Commands are one-shot: a retained one (mosquitto_pub -r) came
            # again at every boot's subscribe, and a retained "stop" stopped
            # every boot for good.
            print("CMD retained, ignored:", repr(bytes(msg)[:32]))
            return
        try:
            cmd = bytes(msg).decode()
            if cmd.startswith("interval="):
                # 10 ms to a day: ticks_add() takes less than 2**29 ms on a board
                state["interval"] = max(10, min(int(cmd[9:]), 86400000))
            elif cmd == "stop":
                state["run"] = False
            elif cmd != "ping":           # (ping: the reply below is the answer, with the boot count)
                raise ValueError("unknown")
            ok = "ok"
        except (ValueError, UnicodeError):
            cmd, ok = repr(bytes(msg)[:32]), "bad command"
        cmd = cmd[:64]                        # (a long command's echo would not fit buf_size)
        try:
            c.publish(base + "/reply", "boot %d: %s %s" % (boot, cmd, ok), qos=1)
        except OSError as e:                  # QueueFull after an outage: the reply is dropped, the command stands
            print("REFUSED reply:", repr(e))
        print("CMD", cmd, ok)

    feed()
    c = Client(cfg["client_id"], cfg["broker"], cfg.get("port", 1883),
               cfg.get("mqtt_user"), cfg.get("mqtt_password"), cfg.get("keepalive", 30),
               version=cfg.get("version", 4), link=link, clean_session=False,
               session_file=profile.session_file(), timeout_ms=cfg.get("timeout_ms", 5000),
               **profile.PROFILE)
    feed()                                    # (the session read from flash)
    # written once the client took the settings: a fault that ends main.py
    # before (and resets the board, in a loop) writes nothing to flash
    boot = next_boot(profile.SESSION_PATH.rsplit("/", 1)[0] + "/boot_count")
    c.set_callback(on_message)
    print("BOOT", boot, "restored", c.pending(), "event", c.last_event)
    c.subscribe(base + "/cmd", 1)             # made now, or after the first connect, before the telemetry
    seq = 0
    t_last = time.ticks_add(time.ticks_ms(), -state["interval"])    # the last telemetry sent
    t_stats = time.ticks_ms()
    shown = None                              # the last failure printed
    while state["run"]:
        feed()
        now = time.ticks_ms()
        # (Against the interval as it is now: interval= takes effect at once,
        # also when it shortens a long one.)
        left = state["interval"] - time.ticks_diff(now, t_last)
        if left <= 0:
            t_last = now
            left = state["interval"]
            try:
                c.publish(base + "/tele", '{"boot":%d,"seq":%d,"up_ms":%d}' % (boot, seq, now), qos=1)
                if trace:
                    trace.write("%d:%d\n" % (boot, seq))
                    trace.flush()
                seq += 1
            except QueueFull as e:             # offline too long: the outbox is full
                print("REFUSED", e.args[1])
        c.poll(min(50, max(1, left - time.ticks_diff(time.ticks_ms(), now))))
        if c.last_error is not shown:         # why the broker is not reached: a refused
            shown = c.last_error              # login, no Wi-Fi, no broker (once a failure)
            if shown is not None:
                print("ERROR", repr(shown))
        if time.ticks_diff(now, t_stats) >= 1000:
            t_stats = now
            report(c, boot, seq)
    for _ in range(100):                      # c.flush(10000), fed every 100 ms
        feed()
        if c.flush(100):
            break
    report(c, boot, seq)
    feed()
    c.disconnect()
    print("STOPPED")


def next_boot(path):
    # The boot counter: read, increment, write once per reset.
    try:
        with open(path) as f:
            n = int(f.read()) + 1
    except (OSError, ValueError):
        n = 1
    with open(path, "w") as f:
        f.write(str(n))
    return n


def report(c, boot, seq):
    s = c.stats()
    if hasattr(profile, "flash_stats"):
        s.update(profile.flash_stats())
    s["boot"] = boot
    s["seq"] = seq
    print("STATS", json.dumps(s))


if __name__ == "__main__":
    try:
        main(*sys.argv[1:3])
    except KeyboardInterrupt:
        watchdog.hold()          # Ctrl-C: the console's; the watchdog cannot be stopped
        raise
    except Exception:
        watchdog.take()          # any other fault, a bad config included: boot.py's timer
        raise                    # stops, the board resets and tries again (docs/firmware.md)
    watchdog.hold()              # "stop": the board stays at the REPL, not reset
