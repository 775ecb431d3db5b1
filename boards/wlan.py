# Network link glue for RobustClient (`link=`), kept out of the MQTT core.
# `make deploy` copies it to the board's root as /wlan.py (firmware/main.py
# imports it); the unix board's profile uses its NullLink.
#
#   from wlan import WLANLink
#   link = WLANLink("my-ssid", "secret")
#   c = RobustClient(..., link=link)    # up() is called before a reconnect
#                                       # when isconnected() says the link is down
#   c = AsyncClient(..., link=AsyncWLANLink("my-ssid", "secret"))   # up() awaited
#   WLANLink("my-ssid", "secret", feed=wdt.feed)   # called every 100 ms of a join
#
# The interface is two methods, so any transport can provide it:
#   up(timeout_ms) -> bool     bring the link up; True when usable (AsyncClient
#                              also takes an `async def up`, and awaits it)
#   isconnected() -> bool      the link looks usable (not a liveness proof:
#                              MQTT keepalive finds a dead path)
import time


class NullLink:
    """A link that is always up (the unix port, Ethernet boards)."""

    def up(self, timeout_ms):
        return True

    def isconnected(self):
        return True


class WLANLink:
    """network.WLAN in station mode, as on ESP32 and Pico W.

    Status codes differ by port (ESP32 reports STAT_GOT_IP 1010, the Pico W
    3), so success is taken from isconnected(), and a connect attempt that
    has not succeeded within timeout_ms is restarted from scratch next time:
    a half-associated radio (the STAT_CONNECTING limbo seen after access
    point reboots) does not recover by waiting."""

    def __init__(self, ssid, password, hostname=None, pm=None, feed=None, country=None):
        import network
        self.ssid, self.password = ssid, password
        if country:
            # The regulatory domain (ISO 3166 code, e.g. "DE"): the Pico W's
            # CYW43 uses only the channels of the one it is told, and some
            # access points sit on a channel the default lacks. Before the
            # interface starts.
            try:
                network.country(country)
            except (AttributeError, ValueError, OSError):
                pass
        self.wlan = network.WLAN(network.STA_IF)
        if hostname:
            try:
                network.hostname(hostname)
            except (AttributeError, ValueError, OSError):
                pass
        self._pm = pm
        self.feed = feed             # e.g. a machine.WDT's feed, while the radio associates
        self.attempts = 0

    def isconnected(self):
        return self.wlan.isconnected()

    def up(self, timeout_ms):
        if not self._start():
            for _ in self._waits(timeout_ms):
                time.sleep_ms(100)
        return self.wlan.isconnected()

    def _waits(self, timeout_ms):
        # One item per 100 ms to wait while the radio associates, for
        # timeout_ms at most (up() sleeps them, AsyncWLANLink.up() awaits).
        t0 = time.ticks_ms()
        while not self.wlan.isconnected() and time.ticks_diff(time.ticks_ms(), t0) < timeout_ms:
            if self.feed:
                self.feed()
            yield

    def _start(self):
        # True when up already; else a connect attempt from scratch.
        w = self.wlan
        if w.isconnected():
            return True
        self.attempts += 1
        w.active(True)
        if self._pm is not None:
            try:
                w.config(pm=self._pm)        # e.g. 0xa11140 on the Pico W: no power save
            except (ValueError, OSError):
                pass
        try:
            w.disconnect()                   # leave any half-finished attempt
        except OSError:
            pass
        w.connect(self.ssid, self.password)
        return False

    def down(self):
        self.wlan.disconnect()
        self.wlan.active(False)


class AsyncWLANLink(WLANLink):
    """WLANLink for AsyncClient: up() is a coroutine, awaited, so other
    tasks run while the radio associates (WLANLink.up() sleeps, holding the
    event loop up to timeout_ms)."""

    async def up(self, timeout_ms):
        import asyncio
        if not self._start():
            for _ in self._waits(timeout_ms):
                await asyncio.sleep_ms(100)
        return self.wlan.isconnected()
