# asyncio front end. The protocol, session and flash store are the same
# objects the blocking client uses (a RobustClient inside); this module only
# schedules them: a background task waits for the socket to become readable,
# handles what arrived, keeps the connection alive and reconnects with
# backoff. Nothing here parses or builds a packet.
#
#   c = AsyncClient("dev1", "broker.lan", clean_session=False, session_file="/session.bin")
#   await c.connect()                       # starts the background task
#   await c.subscribe("cmd/dev1", 1)
#   await c.publish("tele/dev1", b"21.5", qos=1)   # returns when PUBACK came,
#                                                 # waiting across outages
#   c.publish_nowait("tele/dev1", b"21.6", qos=1)  # only enqueues
#   async for topic, msg, retained, qos in c.messages(): ...
#
# Limits, stated: the TCP/TLS connect and the CONNECT/CONNACK exchange run
# to completion (bounded by timeout_ms) without yielding, as do writes that
# find the socket buffer full. Keep timeout_ms short on a busy board.
import asyncio
import time

from .errors import MQTTException, Timeout, ERR_TIMEOUT
from .robust import RobustClient

try:
    from asyncio import core as _core

    def _io_wait_supported():
        return hasattr(_core, "_io_queue")
except ImportError:  # pragma: no cover
    _core = None

    def _io_wait_supported():
        return False


async def _readable(sock):
    # Suspends until the socket has data, through the event loop's own poll
    # (the way asyncio streams wait); no busy polling.
    yield _core._io_queue.queue_read(sock)


class AsyncClient:
    def __init__(self, client_id, server, port=0, user=None, password=None, keepalive=60,
                 ssl=None, *, queue_size=8, **kw):
        self.client = c = RobustClient(client_id, server, port, user, password, keepalive, ssl,
                                       on_up=self._on_up, on_down=self._on_down, **kw)
        c._on_done = self._done
        self.up = asyncio.Event()       # set while connected (like mqtt_as)
        self.down = asyncio.Event()     # set while not connected
        self.down.set()
        self._waiters = {}              # pid -> [Event, reason]
        self._queue = []                # copies of messages for messages()
        self._queue_size = queue_size
        self._queue_ev = asyncio.Event()
        self._task = None
        self._cb = None
        self.dropped_messages = 0
        c.set_callback(self._deliver)

    # ------------------------------------------------------------ connection
    async def connect(self, timeout_ms=None):
        """Start the background task and wait for the first connection
        (timeout_ms None: wait as long as it takes). Returns Session Present."""
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        if timeout_ms is None:
            await self.up.wait()
        else:
            try:
                await asyncio.wait_for_ms(self.up.wait(), timeout_ms)
            except asyncio.TimeoutError:
                raise Timeout(ERR_TIMEOUT, "not connected within %d ms (last error: %r)"
                              % (timeout_ms, self.client.last_error))
        return self.client.session_present

    async def disconnect(self, session_expiry=None):
        t = self._task
        self._task = None
        if t:
            t.cancel()
            try:
                await t
            except asyncio.CancelledError:
                pass
        self.client.disconnect(session_expiry)
        self._on_down(self.client, None)

    def is_connected(self):
        return self.client.is_connected()

    # ------------------------------------------------------------ publishing
    def publish_nowait(self, topic, msg, retain=False, qos=0, props=None):
        """Enqueue and return at once (the packet id for QoS 1/2). Raises
        QueueFull when the outbox is full; never blocks, never waits for the
        link."""
        return self.client.publish(topic, msg, retain, qos, props)

    async def publish(self, topic, msg, retain=False, qos=0, props=None, timeout_ms=None):
        """Publish and wait until the QoS flow completes (PUBACK, PUBCOMP),
        across outages. Returns the packet id (None for QoS 0). Raises
        MQTTException with the broker's reason code if it refused the
        message (MQTT 5, code >= 0x80); Timeout if timeout_ms passes (the
        message stays queued and will still be delivered)."""
        pid = self.client.publish(topic, msg, retain, qos, props)
        if not qos:
            return None
        w = self._waiters.get(pid)
        if w is None:
            w = self._waiters[pid] = [asyncio.Event(), 0]
        try:
            if timeout_ms is None:
                await w[0].wait()
            else:
                await asyncio.wait_for_ms(w[0].wait(), timeout_ms)
        except asyncio.TimeoutError:
            raise Timeout(ERR_TIMEOUT, "message %d not acknowledged within %d ms (still queued)"
                          % (pid, timeout_ms))
        finally:
            if w[0].is_set():
                self._waiters.pop(pid, None)
        if w[1] >= 0x80:
            raise MQTTException(w[1], "broker refused message %d (reason 0x%02x)" % (pid, w[1]))
        return pid

    def _done(self, pid, reason):
        w = self._waiters.get(pid)
        if w is not None:
            w[1] = reason
            w[0].set()

    async def flush(self, timeout_ms=10000):
        """Wait until nothing is pending (before deep sleep). True on success."""
        deadline = time.ticks_add(time.ticks_ms(), timeout_ms)
        while self.client.pending():
            if time.ticks_diff(deadline, time.ticks_ms()) <= 0:
                return False
            await asyncio.sleep_ms(20)
        if self.client._store:
            self.client._store.flush()
        return True

    def pending(self):
        return self.client.pending()

    def stats(self):
        return self.client.stats()

    # ------------------------------------------------------------ subscriptions
    async def subscribe(self, topic, qos=0, timeout_ms=None, **kw):
        """Wait for the connection, then SUBSCRIBE and wait for SUBACK."""
        return await self._request(self.client.subscribe, (topic, qos), kw, timeout_ms)

    async def unsubscribe(self, topic, timeout_ms=None):
        return await self._request(self.client.unsubscribe, (topic,), {}, timeout_ms)

    async def _request(self, call, args, kw, timeout_ms):
        # SUBSCRIBE / UNSUBSCRIBE are rare; they run the blocking core call
        # (one round trip) once the link is up.
        await self.up.wait()
        c = self.client
        old = c.timeout_ms
        if timeout_ms:
            c.timeout_ms = timeout_ms
        try:
            return call(*args, **kw)
        finally:
            c.timeout_ms = old

    # ------------------------------------------------------------ receiving
    def set_callback(self, f, props=False):
        """f(topic, msg, retained, qos) runs in the background task with
        views valid only during the call (no copy, no allocation)."""
        self._cb = f
        self.client._cb_props = props

    def _deliver(self, topic, msg, retained, qos, props=None):
        if self._cb is not None:
            if self.client._cb_props:
                self._cb(topic, msg, retained, qos, props)
            else:
                self._cb(topic, msg, retained, qos)
            return
        if len(self._queue) >= self._queue_size:
            # Bounded: the oldest copy goes (counted). At QoS 1/2 the broker
            # holds back beyond receive_max, so this is rare.
            self._queue.pop(0)
            self.dropped_messages += 1
        self._queue.append((bytes(topic), bytes(msg), retained, qos))
        self._queue_ev.set()

    def messages(self):
        """Async iterator of (topic, msg, retained, qos) copies, used when no
        callback is set: `async for topic, msg, retained, qos in c.messages()`.
        (MicroPython has no async generators, hence the small class.)"""
        return _Messages(self)

    # ------------------------------------------------------------ background task
    def _on_up(self, c):
        self.down.clear()
        self.up.set()
        # Messages finished outside the ack path (a QoS 2 past PUBREC that
        # a lost broker session can no longer release) wake their waiters.
        for pid in list(self._waiters):
            if not c._out.holds(pid):
                self._done(pid, 0)

    def _on_down(self, c, exc):
        self.up.clear()
        self.down.set()

    async def _run(self):
        c = self.client
        io_wait = _io_wait_supported()
        while True:
            if not c.is_connected():
                c.poll()                      # connects when the backoff allows
                if not c.is_connected():
                    wait = time.ticks_diff(c._next_try, time.ticks_ms())
                    await asyncio.sleep_ms(max(10, min(wait, 1000)))
                continue
            c.poll()                          # everything already received, keepalive
            if not c.is_connected():
                continue
            wait = c._keepalive_wait_ms()
            if io_wait:
                try:
                    await asyncio.wait_for_ms(_readable(c._net.sock), wait)
                except asyncio.TimeoutError:
                    pass
            else:
                await asyncio.sleep_ms(min(wait, 20))


class _Messages:
    def __init__(self, owner):
        self.o = owner

    def __aiter__(self):
        return self

    async def __anext__(self):
        o = self.o
        while not o._queue:
            o._queue_ev.clear()
            await o._queue_ev.wait()
        return o._queue.pop(0)
