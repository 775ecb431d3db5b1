# RobustClient: MQTTClient plus the loop that keeps a session alive across a
# flaky link, so the application writes no retry code.
#
# Failure model (docs/resilience.md has the figures):
# - a dead link is found by the core: a socket error, the peer closing, or a
#   PINGRESP overdue by half the keepalive (a black-holed TCP connection
#   never errors by itself; nothing came back for at most 1x keepalive);
# - the client then reconnects with capped exponential backoff and jitter,
#   bringing the network link back first through an optional `link` object
#   (boards/wlan.py for ESP32 / Pico W: `up(timeout_ms) -> bool`,
#   `isconnected() -> bool`);
# - the session resumes (Clean Session 0 / Clean Start 0): what was in
#   flight is resent, the outbox drains in order. publish() never blocks or
#   fails while the link is down; only a full outbox refuses a message.
import random
import time

from .client import MQTTClient
from .errors import SessionError


class RobustClient(MQTTClient):
    """Keyword arguments beyond MQTTClient's:

    link          object with up(timeout_ms) and isconnected(), or None
    backoff_ms    (first, cap) reconnect delay; doubles per failure, jittered
                  between 50 % and 100 % so a fleet does not reconnect in step
    on_up, on_down  callables f(client) / f(client, exc) for link events
    """

    def __init__(self, client_id, server, port=0, user=None, password=None, keepalive=60,
                 ssl=None, *, link=None, backoff_ms=(250, 30000), on_up=None, on_down=None, **kw):
        kw.setdefault("clean_session", False)
        super().__init__(client_id, server, port, user, password, keepalive, ssl, **kw)
        self.link = link
        self.backoff_min, self.backoff_max = backoff_ms
        self.on_up = on_up
        self.on_down = on_down
        self._backoff = 0
        self._up = False              # the link was up (the core drops it before we hear)
        self._next_try = time.ticks_ms()
        self._pending_subs = []
        self.last_error = None
        self.stats_counters["link_downs"] = 0
        self.stats_counters["connect_failures"] = 0

    def connect(self, clean_session=None, timeout_ms=None):
        sp = super().connect(clean_session, timeout_ms)
        self._up = True               # a drop from here on is reported (on_down)
        return sp

    # ------------------------------------------------------------ the loop
    def poll(self, timeout_ms=0):
        """One step: reconnect when the link is down and the backoff allows,
        otherwise handle traffic for up to timeout_ms. Never raises for a
        link or broker failure (see last_error); returns True while up."""
        if not self._connected:
            if self._up:
                # The link failed inside publish() (its send path does not
                # raise); report it now like any other drop.
                self._went_down(self._pending_exc or OSError(-1, "link dropped while sending"))
            st = self._store
            if st is not None and st.fill:
                st.tick()                 # batched mode: the batch is due offline too
            wait = time.ticks_diff(self._next_try, time.ticks_ms())
            if wait > 0:
                if timeout_ms:
                    time.sleep_ms(min(wait, timeout_ms))
                return False
            self._try_connect()
            return self._connected
        try:
            if timeout_ms:
                self.wait_msg(timeout_ms)
            else:
                self.check_msg()
        except OSError as e:
            self._went_down(e)
        return self._connected

    def loop_forever(self, step_ms=1000):
        while True:
            self.poll(step_ms)

    def _step(self, timeout_ms):
        # flush() (MQTTClient's) reconnects as needed through poll().
        self.poll(timeout_ms)

    def subscribe(self, topic, qos=0, **kw):
        """Subscribes now when up; when down, remembers the subscription and
        makes it after the next connect. Returns the granted QoS, or None
        when deferred. A refusal by the broker still raises."""
        if self._connected:
            try:
                return super().subscribe(topic, qos, **kw)
            except OSError as e:
                if self._connected:      # the broker refused: not a link problem
                    raise
                self._went_down(e)
        self._pending_subs.append((topic, qos, kw))
        return None

    # ------------------------------------------------------------ internals
    def _try_connect(self):
        try:
            if self.link is not None and not self.link.isconnected():
                if not self.link.up(self.timeout_ms):
                    raise OSError(-1, "network link did not come up")
            try:
                self.connect()
            except SessionError:
                # MQTT 5: the broker holds a session this device has no
                # state for (a new flash, a lost file). Start clean with a
                # persistent expiry: the spec-correct way to go on.
                self.connect_fresh()
            while self._pending_subs:
                topic, qos, kw = self._pending_subs[0]
                MQTTClient.subscribe(self, topic, qos, **kw)
                self._pending_subs.pop(0)
        except OSError as e:
            self.stats_counters["connect_failures"] += 1
            self._went_down(e)
            return
        self._backoff = 0
        self._up = True
        self.last_error = None
        if self.on_up:
            self.on_up(self)

    def _went_down(self, exc):
        was_up = self._up
        self._up = False
        self._drop_link()
        self._pending_exc = None
        self.last_error = exc
        self._backoff = min(self.backoff_max, self._backoff * 2 if self._backoff else self.backoff_min)
        jitter = self._backoff // 2
        delay = self._backoff - jitter + (random.getrandbits(16) * jitter >> 16)
        self._next_try = time.ticks_add(time.ticks_ms(), delay)
        if was_up:
            self.stats_counters["link_downs"] += 1
            if self.on_down:
                self.on_down(self, exc)
