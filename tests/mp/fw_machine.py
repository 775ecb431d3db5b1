# Stand-in for the board's `machine` module, for tests/mp/board_rom.py on
# the unix port: deepsleep() prints and ends the run, as the reset that ends
# a deep sleep on an ESP32 would.
#
# WDT and Timer: the unix port has neither, and no real watchdog exists
# here, so this one only measures. WDT is one watchdog, as on the boards (a
# second WDT() takes the new timeout); each feed() notes the time since the
# last one, and "WDT EXPIRED" is printed where a board would have reset.
# Timer runs no callback (no interrupt here): while one runs, the watchdog
# counts as fed, as the callback would feed it; deinit() is its last feed.
# At the end: "WDT feeds N max_gap_ms M".
import sys
import time


def deepsleep(ms=0):
    print("DEEPSLEEP", ms)
    sys.exit(0)


_wdt = None


class _Watchdog:
    def __init__(self):
        self.feeds = 0
        self.max_gap = 0
        self.held = 0            # timers running (each feeds it)
        sys.atexit(_report)

    def feed(self):
        now = time.ticks_ms()
        gap = time.ticks_diff(now, self.last)
        if not self.held:
            self.max_gap = max(self.max_gap, gap)
            if gap > self.timeout:
                print("WDT EXPIRED after %d ms" % gap)
        self.last = now
        self.feeds += 1


def WDT(id=0, timeout=5000):
    global _wdt
    if _wdt is None:
        _wdt = _Watchdog()
    _wdt.timeout = timeout
    _wdt.last = time.ticks_ms()
    print("WDT start", timeout)
    return _wdt


def _report():
    print("WDT feeds %d max_gap_ms %d" % (_wdt.feeds, _wdt.max_gap))


class Timer:
    def __init__(self, id=-1, **kw):
        self.cb = None
        if kw:
            self.init(**kw)

    def init(self, period=1000, callback=None, **kw):
        print("TIMER feeds every", period)
        self.cb = callback
        if _wdt is not None:
            _wdt.held += 1

    def deinit(self):
        if self.cb is not None:
            print("TIMER stop")
            if _wdt is not None:
                _wdt.held -= 1
                _wdt.last = time.ticks_ms()      # (it fed until now)
            self.cb(self)
            self.cb = None
