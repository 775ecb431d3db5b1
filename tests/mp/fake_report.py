# Helpers for the error-path tests (test_malformed, test_tls, test_errors):
# run a call, print what it returned or raised as one JSON line that the
# pytest side parses. Runs inside the MicroPython unix port.
import json
import time

from durable_mqtt import MQTTException


def _plain(x):
    return x if isinstance(x, (int, str, bool)) or x is None else repr(x)


def outcome(tag, f):
    """Call f(); return a dict describing its result or its exception."""
    t0 = time.ticks_ms()
    try:
        r = f()
        d = {"tag": tag, "ok": True, "value": _plain(r)}
    except Exception as e:      # noqa: BLE001 - every class is reported, not judged, here
        d = {"tag": tag, "ok": False, "cls": type(e).__name__,
             "args": [_plain(a) for a in e.args],
             "oserror": isinstance(e, OSError), "mqtt": isinstance(e, MQTTException)}
    d["ms"] = time.ticks_diff(time.ticks_ms(), t0)
    return d


def report(tag, f, **extra):
    d = outcome(tag, f)
    for k in extra:
        d[k] = _plain(extra[k])
    print("R " + json.dumps(d))
    return d


def emit(tag, **values):
    d = {"tag": tag}
    for k in values:
        d[k] = _plain(values[k])
    print("R " + json.dumps(d))


def pump(c, how="wait", ms=3000):
    """Service the client until it raises or ms pass ("no error")."""
    end = time.ticks_add(time.ticks_ms(), ms)
    while time.ticks_diff(end, time.ticks_ms()) > 0:
        if how == "wait":
            c.wait_msg(50)
        elif how == "check":
            c.check_msg()
            time.sleep_ms(5)
        else:
            c.ping()
            time.sleep_ms(20)
    return "no error"


def pump_until(c, cond, how="wait", ms=5000):
    """Service the client until cond() holds; AssertionError after ms."""
    end = time.ticks_add(time.ticks_ms(), ms)
    while not cond():
        if time.ticks_diff(end, time.ticks_ms()) <= 0:
            raise AssertionError("timed out waiting for a condition")
        if how == "wait":
            c.wait_msg(50)
        else:
            c.check_msg()
            time.sleep_ms(5)
    return True
