# asyncio front end. The session, codec and store are the ones the blocking
# client uses (a RobustClient inside); this module only schedules them. The
# connect and (un)subscribe steps are the same generators MQTTClient runs:
# here every wait for the socket is awaited, so other tasks run while a
# broker is slow to answer CONNECT, SUBSCRIBE or UNSUBSCRIBE.
#
#   c = AsyncClient("dev1", "broker.lan", session_file="/session.dmq")
#   await c.connect()                       # starts the background task
#   await c.subscribe("cmd/dev1", 1)
#   await c.publish("tele/dev1", b"21.5", qos=1)   # returns when PUBACK came,
#                                                 # waiting across outages
#   c.publish_nowait("tele/dev1", b"21.6", qos=1)  # only enqueues
#   async for topic, msg, retained, qos in c.messages(): ...
#
# Stated limits (docs/resilience.md): the DNS lookup and a TLS handshake's
# CPU work between its waits run without yielding; the TCP connect and the
# handshake's waits do yield (timeout_ms bounds it whole). A publish writes
# only while the socket has room (link.Link.gentle); _send_rest() sends the
# rest. Acknowledgements, PINGREQ, (UN)SUBSCRIBE and the rest of a packet
# larger than the room wait for room (each stall at most timeout_ms: a write
# that moves goes on). Messages a subscribe() or unsubscribe() reads before its
# answer are queued past queue_size (QoS 1/2: never dropped). messages()
# acknowledges a QoS 1/2 message when it hands the copy out (later.py).
import asyncio
import sys
import time
from micropython import const

from .client import need_callable, unload
from .errors import (MQTTException, NotConnected, PeerClosed, ProtocolError, StoreFull, Timeout, ERR_NOT_CONNECTED,
                     ERR_PROTOCOL, ERR_TIMEOUT)
from .robust import RobustClient

_io = asyncio.core._io_queue
_LOOK_MS = const(20)         # a SUBSCRIBE / UNSUBSCRIBE looks for its answer this often
_LOOK_DOWN_MS = const(1000)  # the background task looks for a link closed elsewhere this often
_LINGER_MS = const(500)      # at most, after DISCONNECT, for the broker to close its side
_UP_GRACE_MS = const(1000)   # an awaited link.up() gets timeout_ms and this, then is cancelled
_BAD_ANSWER = const(-2)      # link.result after a malformed or wrong (UN)SUBACK (request.py's)


async def _ready(sock, out):
    # Suspends until the socket is readable (out: writable), through the
    # event loop's own poll, as asyncio streams wait.
    yield (_io.queue_write if out else _io.queue_read)(sock)


class AsyncClient:
    _closed = False         # close() came, and no connect() since: messages() ends when empty

    def __init__(self, client_id, server, port=0, user=None, password=None, keepalive=60,
                 ssl=None, *, queue_size=8, on_up=None, on_down=None, **kw):
        # on_up(self) / on_down(self, exc): RobustClient's hooks, called
        # with this client; the up and down events say the same.
        need_callable(on_up)
        need_callable(on_down)
        self._hooks = (on_up, on_down)
        self.client = c = RobustClient(client_id, server, port, user, password, keepalive, ssl,
                                       on_up=self._on_up, on_down=self._on_down, **kw)
        c.async_connect = True
        c.set_done_callback(self._done)
        c.set_callback(self._deliver)
        self.up = asyncio.Event()       # set while connected (like mqtt_as)
        self.down = asyncio.Event()     # set while not connected
        self.down.set()
        self._waiters = {}              # pid -> [Event, reason]
        self._queue = []                # copies of messages for messages()
        self._queue_size = queue_size
        self._queue_ev = asyncio.Event()
        self._space = asyncio.Event()   # messages() took one from a full queue
        self._req = asyncio.Lock()      # one SUBSCRIBE / UNSUBSCRIBE at a time
        self._wake = asyncio.Event()    # set when up; pulsed by disconnect() (see _wait_up)
        self._stops = 0                 # disconnect() calls so far
        self._links = 0                 # connections made so far
        self._holds = {}                # _links when taken -> subscribe() calls holding the outbox
        self._task = None
        self._sending = False           # _send_rest() runs
        self._cb = None
        self._props = False
        self.dropped_messages = 0
        self.callback_errors = 0

    async def steps(self, gen, look=False):
        # Run a step generator of the client (connecting, requesting,
        # reconnecting), awaiting the socket where it would block. look: the
        # background task is the socket's reader (asyncio keeps one waiter
        # per socket: a second would take its place and leave it deaf), so
        # the generator only looks again every _LOOK_MS for what it read.
        c = self.client
        try:
            while True:
                w = next(gen)
                if look:
                    await asyncio.sleep_ms(c.due(min(abs(w), _LOOK_MS)))
                    continue
                sock = c.socket()
                if sock is None:
                    raise NotConnected(ERR_NOT_CONNECTED, "the link closed")
                try:
                    await asyncio.wait_for_ms(_ready(sock, w < 0), c.due(abs(w)))
                except asyncio.TimeoutError:
                    pass
        except StopIteration as s:
            return s.value
        except BaseException:
            gen.close()             # its cleanup runs (e.g. a cancelled connect)
            raise
        finally:
            unload()

    # ------------------------------------------------------------ connection
    async def connect(self, timeout_ms=None):
        # Start the background task and wait for the first connection
        # (timeout_ms None: as long as it takes). Returns Session Present.
        n = self._stops
        self._closed = False
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        if timeout_ms is None:
            await self._wait_up(n)
        else:
            try:
                await asyncio.wait_for_ms(self._wait_up(n), timeout_ms)
            except asyncio.TimeoutError:
                raise Timeout(ERR_TIMEOUT, "not connected in %d ms (last error: %r)"
                              % (timeout_ms, self.client.last_error))
        return self.client.session_present

    async def disconnect(self, session_expiry=None):
        c = self.client
        k = c.conn
        x = None
        try:
            try:
                await self._stop_task()
                # What the socket had no room for goes before the DISCONNECT,
                # as a blocking write sent it, waiting as long as one would.
                k = c.conn
                self._kick()
                end = time.ticks_add(time.ticks_ms(), c.timeout_ms)
                while k is not None and k.full and k.connected and time.ticks_diff(end, time.ticks_ms()) > 0:
                    await asyncio.sleep_ms(_LOOK_MS)
            except BaseException:
                # Cancelled before the DISCONNECT could go (e.g. in that wait
                # for room): the link closes now, as close() closes it (the
                # session stays; asked for, not a drop). Left open, with no
                # task reading it, it still counted as connected, and the next
                # connect() waited for an `up` that never came.
                if k is not None and k.connected:
                    c.drop_link()
                raise
            try:
                c.disconnect(session_expiry)
            except Exception as e:
                # Refused (ValueError: session_expiry in 3.1.1...) with the
                # link up: it ends all the same, with a plain DISCONNECT (it
                # was left open, unread, as above); raised after the linger.
                x = e
                if k is not None and k.connected:
                    try:
                        c.disconnect()
                    except Exception:
                        k.drop()
        finally:
            # Even when client.disconnect() raised (e.g. session_expiry with
            # the link down): the background task is gone all the same.
            self._stopped()
            self._report()              # (store_full at its checkpoint)
        # Down already for the application: a connect() meanwhile starts
        # the next connection (which closes this socket).
        await self._linger(k)
        if x is not None:
            raise x

    async def close(self):
        # The link closes at once, without a DISCONNECT (the broker then
        # publishes the will; the session stays on both sides), the
        # background task ends and the store closes: before a deep sleep or
        # a power-off. (client.close() alone, with the task running, was
        # undone by its next reconnect.) What waits ends as at disconnect().
        try:
            await self._stop_task()
        finally:
            c = self.client
            c.close()
            if c.persist and c.conn is not None and c.conn.later:
                # The copies not yet taken whose acknowledgements are held
                # go: the session on flash and the broker's keep them, and
                # the broker sends them at the next connect (a QoS 2 one
                # taken now could not be recorded: the store is closed).
                from .later import forget
                self._queue = forget(c, self._queue)
            self._stopped()
            self._closed = True             # messages() ends once its queue is empty
            self._queue_ev.set()

    async def _stop_task(self):
        # The background task ends: cancelled, and awaited. Cancelled again
        # until it has ended: MicroPython's asyncio passes a cancel on to the
        # task a task awaits, and wait_for_ms(), cleaning up after its own
        # timeout, awaits its runner task, which absorbs it. The background
        # task then went on (its wait timed out, as every second), and
        # disconnect() and close() awaited it for ever.
        t = self._task
        self._task = None
        if t:
            while not t.done():
                t.cancel()
                await asyncio.sleep_ms(0)
            try:
                await t
            except asyncio.CancelledError:
                pass

    def _stopped(self):
        # Asked for, not a drop: no on_down. What waits for a connection or
        # an acknowledgement ends with NotConnected: no connection comes
        # unless connect() is called again (the messages stay queued and go
        # out then).
        self._on_down(self.client, None)
        self._stops += 1
        self._wake.set()
        self._wake.clear()
        for w in self._waiters.values():
            if not w[0].is_set():   # (one acknowledged already keeps its outcome)
                w[1] = None
                w[0].set()

    async def _linger(self, k):
        # After the DISCONNECT (leave.py leaves the socket open for this):
        # what still comes is read and dropped until the broker closes its
        # side, at most _LINGER_MS, as leave._linger() does for the blocking
        # clients, but awaited: a broker slow to close held the loop 500 ms.
        # (Closed with bytes unread, the socket sends a reset, and a broker
        # that meets it loses what it had not read yet: the DISCONNECT.)
        # (Only this socket: a connect() meanwhile opens the next one on k.)
        s = k.net.sock if k is not None else None
        try:
            end = time.ticks_add(time.ticks_ms(), min(self.client.timeout_ms, _LINGER_MS))
            while s is not None and k.net.sock is s:
                left = time.ticks_diff(end, time.ticks_ms())
                if left <= 0:
                    break
                try:
                    await asyncio.wait_for_ms(_ready(s, False), left)
                except asyncio.TimeoutError:
                    break
                if k.net.sock is s:
                    k.net.read_into(k.tx, len(k.tx))     # PeerClosed at the end of the stream
        except OSError:
            pass
        finally:
            if s is not None and k.net.sock is s:
                k.drop()

    async def _wait_up(self, n):
        # Until connected; NotConnected if disconnect() comes first (n:
        # self._stops when the call began).
        while not self.up.is_set():
            if self._stops != n:
                raise NotConnected(ERR_NOT_CONNECTED, "disconnect() while waiting for the connection")
            await self._wake.wait()

    def is_connected(self):
        return self.client.is_connected()

    # ------------------------------------------------------------ publishing
    def publish_nowait(self, topic, msg, retain=False, qos=0, props=None):
        # Enqueue and return at once (the packet id for QoS 1/2). Raises
        # QueueFull when the outbox is full; never waits for the link, nor
        # for room in the socket (what does not fit waits for _send_rest).
        pid = self.client.publish(topic, msg, retain, qos, props)
        self._kick()
        return pid

    async def publish(self, topic, msg, retain=False, qos=0, props=None, timeout_ms=None):
        # Publish and wait until the QoS flow completes (PUBACK, PUBCOMP),
        # across outages. Returns the packet id (None for QoS 0). Raises
        # MQTTException with the broker's reason code if it refused the
        # message (MQTT 5, >= 0x80), -1 if it expired unsent; Timeout after
        # timeout_ms, NotConnected at a disconnect() (the message stays
        # queued and is still delivered).
        pid = self.publish_nowait(topic, msg, retain, qos, props)
        if not qos or not pid:
            return pid
        w = self._waiters[pid] = [asyncio.Event(), 0]    # (this message's: an id comes round again)
        try:
            if timeout_ms is None:
                await w[0].wait()
            else:
                await asyncio.wait_for_ms(w[0].wait(), timeout_ms)
        except asyncio.TimeoutError:
            raise Timeout(ERR_TIMEOUT, "message %d not acknowledged in %d ms (still queued)" % (pid, timeout_ms))
        finally:
            if self._waiters.get(pid) is w:
                del self._waiters[pid]       # done, timed out or cancelled: no waiter stays behind
        r = w[1]
        if r is None:
            raise NotConnected(ERR_NOT_CONNECTED, "disconnect() before message %d was acknowledged "
                               "(it stays queued)" % pid)
        if r < 0:
            raise MQTTException(r, "message %d expired before it could be sent" % pid)
        if r >= 0x80:
            raise MQTTException(r, "broker refused message %d (reason 0x%02x)" % (pid, r))
        return pid

    def _kick(self):
        # The link left output the socket had no room for (link.Link.gentle):
        # a task sends it as the socket takes it.
        k = self.client.conn
        if k is not None and k.full and not self._sending:
            self._sending = True
            asyncio.create_task(self._send_rest())

    async def _send_rest(self):
        # Looks for room every _LOOK_MS, as a request looks for its answer:
        # the background task is the socket's reader, and asyncio drops
        # every waiter on a socket when one is cancelled (a wait_for_ms()
        # that times out), which left that task deaf to the broker until
        # its own timeout (up to half the keepalive).
        k = self.client.conn
        try:
            while k.full and k.connected:
                await asyncio.sleep_ms(_LOOK_MS)
                if k.net.room():
                    k.full = False
                    k.net.moved = time.ticks_ms()    # room again: the link moves (Link.keepalive)
                    k.drain()       # as much as the socket takes; a failure is kept
        finally:
            self._sending = False

    def _done(self, pid, reason):
        w = self._waiters.get(pid)
        if w is not None:
            w[1] = reason
            w[0].set()

    async def flush(self, timeout_ms=10000):
        # Wait until nothing is pending (before deep sleep). True on success.
        deadline = time.ticks_add(time.ticks_ms(), timeout_ms)
        c = self.client
        while c.pending() and time.ticks_diff(deadline, time.ticks_ms()) > 0:
            await asyncio.sleep_ms(20)
        return c.flush(0)

    def pending(self):
        return self.client.pending()

    def stats(self):
        return self.client.stats()

    # ------------------------------------------------------------ subscriptions
    async def subscribe(self, topic, qos=0, timeout_ms=None, **kw):
        # Wait for the connection, then SUBSCRIBE and await the SUBACK.
        # (filters.py unloaded before the wait for the connection: checked
        # again, loaded again, when the request goes; refused, it unloads
        # itself)
        args = self.client.subscription(topic, qos, **kw)
        unload()
        return await self._request(args, timeout_ms)

    async def unsubscribe(self, topic, timeout_ms=None):
        f, _, _ = self.client.subscription(topic)
        unload()
        return await self._request((f, -1, 0), timeout_ms)

    async def _request(self, args, timeout_ms):
        # A link lost before the answer (a broker restart, a Wi-Fi drop):
        # the request waits for the next connection and goes again, as
        # RobustClient.subscribe() does (SUBSCRIBE and UNSUBSCRIBE are
        # idempotent); a Timeout or a refusal is raised. timeout_ms bounds
        # each attempt.
        n = self._stops
        bad = 0                         # answers the broker got wrong
        went = False                    # a SUBSCRIBE / UNSUBSCRIBE went out
        c = self.client
        # A subscribe() asked while down is made at the next connection
        # before the outbox goes (RobustClient.holds_outbox), as
        # RobustClient's are: a backend that answers the device's first
        # message finds its subscriptions in place. Held until its first
        # attempt, or the end of that connection (_on_down: a request ahead
        # of it may keep the lock), never longer: a broker that closes on
        # it never holds the outbox back for good.
        held = args[1] >= 0 and not c.is_connected()
        gen = self._links
        if held:
            self._holds[gen] = self._holds.get(gen, 0) + 1
            c.subs_waiting += 1
        try:
            async with self._req:           # the session awaits one answer at a time
                while True:
                    await self._wait_up(n)
                    t = time.ticks_ms()
                    try:
                        # A link that failed elsewhere (a publish's stalled write)
                        # keeps its failure for the background task, which
                        # reports it and reconnects (`up` stays set until then):
                        # not this request's to raise; it waits for the next link.
                        if c.is_connected():
                            went = True         # (its attempt: the hold ends with it)
                            return await self.steps(c.requesting(*args, timeout_ms), True)
                    except MQTTException as x:
                        # The link lost while the answer was awaited: closed
                        # (NotConnected, PeerClosed), the broker's answer
                        # malformed or not the awaited one (ProtocolError), or
                        # a failure of the link's that the wait's reads met
                        # (a keepalive's "link dead" or a stalled write:
                        # Timeout; 3.1.1's incoming QoS 2 table full). Not a
                        # refusal (the link stays up), nor this request's own
                        # Timeout (timeout_ms ran out), nor the store's refusal
                        # to record (StoreFull): raised, as MQTTClient raises
                        # them. (Raised, those of the link's left the filter
                        # unsubscribed on the next connection.) The first three
                        # always go again: the link they say closed may be
                        # up again already (the background task reconnects).
                        if not isinstance(x, (NotConnected, PeerClosed, ProtocolError)) and (
                                c.is_connected() or isinstance(x, StoreFull) or isinstance(x, Timeout)
                                and time.ticks_diff(time.ticks_ms(), t) >= (timeout_ms or c.timeout_ms)):
                            raise
                        if self._task is None or self._stops != n:
                            raise           # disconnect(): ends it, even with a connect() made since
                        # The background task may be paused on a full queue
                        # (messages() behind), where it slept through the
                        # link's close up to the keepalive (for ever with
                        # none): woken, it sees the link down and reconnects.
                        self._space.set()
                        if c.conn.result == _BAD_ANSWER:
                            # The answer itself failed (request.ack): sent once
                            # more, for a one-off; a broker that answers it so
                            # again always will, and going again for ever (a
                            # reconnect each time, the will published) left
                            # the caller waiting with no error. (Read by the
                            # background task, it ends this wait as NotConnected.)
                            bad += 1
                            if bad > 1:
                                if isinstance(x, ProtocolError):
                                    raise
                                raise ProtocolError(ERR_PROTOCOL, "the broker's answer to the %s was malformed "
                                                    "or not the one awaited, twice"
                                                    % ("SUBSCRIBE" if args[1] >= 0 else "UNSUBSCRIBE"))
                    finally:
                        self._after_request()
                        if held and went:
                            held = False
                            self._release(c, gen)
                    # (up may still be set until the task sees the link down)
                    await asyncio.sleep_ms(_LOOK_MS)
        finally:
            if held:                    # cancelled, or a disconnect() first
                self._release(c, gen)

    def _release(self, c, gen):
        # A subscribe() asked while down has had its attempt (or no longer
        # waits): the outbox goes once none holds it, when the connection
        # is made (not from inside a connect: connect.py sends it then).
        n = self._holds.get(gen, 0)
        if not n:
            return                      # ended with its connection (_on_down)
        if n > 1:
            self._holds[gen] = n - 1
        else:
            del self._holds[gen]
        c.subs_waiting -= 1
        if not c.subs_waiting and self.up.is_set() and c.is_connected():
            c.conn.release()
            self._kick()

    def _after_request(self):
        # The request's reads stop at its answer: the acknowledgements owed
        # for the messages they read, and whole packets read with the answer,
        # are handled now. Left to the background task, which waits for the
        # socket, they would wait for the next input -- which may never come
        # while the broker awaits those acknowledgements (Receive Maximum).
        c = self.client
        self._report()                  # (store_full at the answer's checkpoint)
        if not c.is_connected():
            return
        if self._cb is None and len(self._queue) >= self._queue_size:
            k = c.conn
            if k.owed:
                try:
                    k.flush()
                except OSError as x:
                    k.failed(x)         # (the background task reports it)
            return
        try:
            c.check_msg()
        except OSError as x:
            if c.is_connected():
                c.last_error = x     # reported with the link up (an oversize PUBLISH dropped)
        self._kick()                 # what the acknowledged messages let out, if the socket was full

    # ------------------------------------------------------------ receiving
    def set_callback(self, f, props=False):
        # f(topic, msg, retained, qos[, props]) runs in the background task
        # with views valid only during the call (no copy, no allocation).
        self._cb = f
        self._props = props
        self.client.set_callback(self._deliver, props)
        k = self.client.conn
        if f is not None and k is not None and k.later:
            # Copies queued for messages() before: acknowledged now (left
            # held, they kept the broker's send quota from the callback).
            from .later import release_all
            release_all(self.client)
        self._space.set()            # (a task paused on a full queue reads again)

    def _deliver(self, topic, msg, retained, qos, props=None):
        if self._cb is not None:
            try:
                if self._props:
                    self._cb(topic, msg, retained, qos, props)
                else:
                    self._cb(topic, msg, retained, qos)
            except Exception as x:
                # The application's callback raised: counted, reported as
                # the event "callback_error" and printed; the message counts
                # as delivered (acknowledged). Raised on, it would leave the
                # message unacknowledged on a live link (the broker's send
                # quota runs out: nothing more arrives), drop the link for
                # an OSError, or fail a subscribe() that was reading.
                self._callback_error(x)
            return
        q = self._queue
        if len(q) >= self._queue_size and not qos:
            # Bounded for QoS 0: the oldest QoS 0 copy goes (counted), or
            # this one if the queue holds none. A QoS 1/2 message is kept,
            # never dropped: the background task reads no more while the
            # queue is full (the broker holds the rest back).
            self.dropped_messages += 1
            for i in range(len(q)):
                if not q[i][3]:
                    q.pop(i)
                    break
            else:
                return
        q.append((bytes(topic), bytes(msg), retained, qos))
        if qos:
            # Acknowledged when messages() hands it out, not now: a reset
            # while it waits here loses nothing (later.py). Past queue_size
            # (what one read, or a subscribe() waiting for its answer,
            # brings at once) at once, as before: held, a broker's backlog
            # of QoS 2 messages filled the table of unreleased ids with
            # ones never acknowledged, and every connection closed on it.
            from .later import hold
            try:
                hold(self.client, len(q) > self._queue_size)
            except MemoryError:
                q.pop()              # (not taken: unacknowledged, as when the copy found no heap)
                raise
        self._queue_ev.set()

    def messages(self):
        # Async iterator of (topic, msg, retained, qos) copies, used when no
        # callback is set: `async for topic, msg, retained, qos in c.messages()`.
        return _Messages(self)

    def _taken(self):
        # messages() hands out a QoS 1/2 copy: its acknowledgement goes now
        # (QoS 2: the id reaches flash first), on the connection it came on.
        from .later import release
        c = self.client
        try:
            release(c)
        except OSError as x:
            c.conn.failed(x)         # (the background task reconnects)
        except Exception as x:
            self._callback_error(x)  # (a store's write error: reported, as the task's are)
        self._kick()                 # what the acknowledgement let the broker send, or the window out

    # ------------------------------------------------------------ background task
    def _on_up(self, c):
        self._links += 1
        if not c.subs_waiting and c.conn.held:
            # (A safety net: no subscribe() holds the outbox now, and
            # _release() sends it only once up is set.)
            c.conn.release()
        self.down.clear()
        self.up.set()
        self._wake.set()
        # Messages that left the session outside the ack path (a QoS 2 past
        # PUBREC that a lost broker session cannot release) wake their waiters.
        # (Not one whose outcome is known already: connect() itself drains
        # the outbox, where a message can expire or meet the CONNACK's
        # limits, reported through _done before this.)
        for pid, w in list(self._waiters.items()):
            if not c.holds(pid) and not w[0].is_set():
                self._done(pid, 0)
        self._hook(0, ())

    def _on_down(self, c, exc):
        # The subscribe() calls that held the outbox for this connection
        # and made no attempt on it (a request ahead of them kept failing)
        # hold it no longer: the next connection sends it first.
        c.subs_waiting -= self._holds.pop(self._links - 1, 0)
        self.up.clear()
        self._wake.clear()
        self.down.set()
        if exc is not None:
            self._hook(1, (exc,))

    def _hook(self, k, args):
        # The application's on_up / on_down: an exception from it is
        # reported (callback_error), never the end of the task.
        f = self._hooks[k]
        if f is not None:
            try:
                f(self, *args)
            except Exception as x:
                self._callback_error(x)

    async def _run(self):
        c = self.client
        while True:
            if not c.is_connected():
                wait = c.offline()
                if wait:
                    await asyncio.sleep_ms(c.due(min(wait, 1000)))
                    continue
                try:
                    k = c.link
                    if k is not None and not k.isconnected():
                        # Before the steps, so that an `async def up()` is
                        # awaited and the loop runs while Wi-Fi associates
                        # (a plain up() holds the loop until it returns).
                        r = k.up(c.timeout_ms)
                        if hasattr(r, "send"):
                            # Bounded: an up() that never returns (a driver
                            # that lost its radio's answer) held this task
                            # for good, never to reconnect. One that honours
                            # timeout_ms ends within it (AsyncWLANLink: plus
                            # its last 100 ms sleep); cut, it is cancelled
                            # and counts as a failed attempt.
                            try:
                                r = await asyncio.wait_for_ms(r, c.timeout_ms + _UP_GRACE_MS)
                            except asyncio.TimeoutError:
                                r = False
                        if not r:
                            raise OSError(-1, "network link did not come up")
                    await self.steps(c.reconnecting(False))
                except Exception as x:
                    # A failed attempt: an OSError, a MemoryError (a heap too
                    # full to connect, e.g. just after a message copy found
                    # none: the next attempt may have it), or anything else
                    # with the link down (a store's driver that raised no
                    # OSError). Anything else with the link made is reported
                    # (raised on, it ended this task for good, perhaps with
                    # the socket open and nobody reading it).
                    if isinstance(x, (OSError, MemoryError)) or not c.is_connected():
                        c.link_down(x, True)
                        x = c.cb_error
                        if x is not None:
                            # What the event callback raised in this attempt
                            # (store_full, then the attempt failed): left
                            # kept, the next attempt reported it as its own.
                            del c.cb_error
                            self._callback_error(x)
                        continue
                    self._callback_error(x)
                try:
                    c.link_up()  # _on_up, and the event callback's exception ("new", "resumed", "lost")
                except Exception as x:
                    self._callback_error(x)
                self._kick()            # what the resend after CONNACK left
                continue
            if self._cb is None and len(self._queue) >= self._queue_size:
                # messages() is behind: nothing more is read until it takes
                # one (the broker holds the rest back: TCP's flow control,
                # and its own queue).
                self._space.clear()
                try:
                    await asyncio.wait_for_ms(self._space.wait(), self._paused())
                except asyncio.TimeoutError:
                    pass
                continue
            try:
                c.check_msg()
            except OSError as x:
                if c.is_connected():
                    c.last_error = x     # reported with the link up (an oversize PUBLISH dropped)
                else:
                    c.link_down(x)
                    continue
            except Exception as x:
                # Something other than a link failure (the application's
                # callback is caught in _deliver): the task goes on (the
                # message being handled is not acknowledged: a QoS 1/2 one
                # closed the link, and the broker sends it again after the
                # reconnect); counted, reported as
                # the event "callback_error" and printed.
                self._callback_error(x)
            self._kick()
            w = self._keepalive()
            if c.is_connected() and c.conn.cut:
                # check_msg() stopped at its budget: what it left may be whole
                # packets already read (no socket wait), or more in the socket.
                # (Not c.conn.end: a part of a header waits for the socket.)
                await asyncio.sleep_ms(0)
            elif c.is_connected():
                # At most _LOOK_DOWN_MS: a failure outside this task (a
                # request's read, a publish's write, _send_rest()) closes the
                # socket, and a closed socket never polls ready; this wait
                # would last until the keepalive (20 s and more) before the
                # reconnect.
                try:
                    await asyncio.wait_for_ms(_ready(c.socket(), False), c.due(min(w, _LOOK_DOWN_MS)))
                except asyncio.TimeoutError:
                    pass

    def _report(self):
        # What the event callback raised in a call of the application's
        # (subscribe(), disconnect(): store_full), reported now, as that
        # call's. (MQTTClient's report() raises it; left, the next
        # reconnect reported it as its own.)
        c = self.client
        x = c.cb_error
        if x is not None:
            del c.cb_error
            self._callback_error(x)

    def _callback_error(self, x):
        # The application's callback raised: counted, reported as the event
        # "callback_error" and printed; the task goes on.
        self.callback_errors += 1
        c = self.client
        e = c.cb_error
        c.cb_error = None             # (event() keeps only a first one: one kept hid this one's)
        c.event("callback_error", {"error": repr(x)})
        sys.print_exception(x)
        x = c.cb_error
        c.cb_error = e
        if x is not None:
            # The event callback raised on this very event: counted and
            # printed here. Kept (event()), it came out of the next connect's
            # report() as a callback_error again, raised again, and so on.
            self.callback_errors += 1
            sys.print_exception(x)

    def _paused(self):
        # _keepalive() while nothing is read (messages() is behind): the
        # PINGRESP waits behind what is unread. Input waiting in the socket
        # counts as the broker's answer: the ping is taken as answered, so
        # the next PINGREQ goes when due (the broker hears from the client
        # each keepalive) and the link is not taken for dead. (It was: the
        # link dropped at every keepalive while the consumer stalled, and
        # what waited unread went with it: QoS 0 messages, and with a clean
        # session QoS 1 ones, lost.) With nothing come at all, the link is
        # dead, as when reading.
        c = self.client
        k = c.conn
        if k is not None and k.connected and k.ping_at >= 0:
            import select
            p = select.poll()
            p.register(c.socket(), select.POLLIN)
            if p.poll(0):
                k.ping_at = -1
        return self._keepalive()

    def _keepalive(self):
        # ms until the keepalive needs the task; a ping the broker did not
        # answer in time takes the link down (it is then reconnected).
        c = self.client
        try:
            return c.keepalive_wait()
        except OSError as x:
            c.link_down(x)
            return 0


class _Messages:
    def __init__(self, owner):
        self.o = owner

    def __aiter__(self):
        return self

    async def __anext__(self):
        o = self.o
        while not o._queue:
            if o._closed:
                raise StopAsyncIteration   # close(): the copies queued taken, no more come
            o._queue_ev.clear()
            await o._queue_ev.wait()
        o._space.set()
        m = o._queue.pop(0)
        if m[3]:
            o._taken()
        return m
