# MQTTClient: the blocking and polling front end (umqtt-like), ../API.md.
#
# A thin driver, in modules that load as they are needed:
#   client.py   this: the API, the outbox side of publish(); works offline
#   link.py     the connection, per packet: read, acks, keepalive, and
#   inbound.py  what each packet read does (dispatch, delivery); both
#               loaded at construction, then kept
#   connect.py, request.py, load.py (with dial.py, reasons.py): what runs
#               once per connect, subscribe or boot; loaded for the call and
#               unloaded after (unload()), so a running device does not
#               keep them in RAM
# The session rules are in session.py, the wire format in codec.py, flash in
# store.py and its backends, sockets in transport.py.
#
# Every buffer is allocated in __init__ (the link's at the first connect);
# the paths marked `# noalloc` allocate nothing in steady state
# (tests/test_noalloc.py).
import gc
import time
from time import ticks_ms
from micropython import const
# The builtins publish() calls per message, as globals of this module:
# found in its dict, not after a miss there and a search of the builtins.
from builtins import isinstance, len, type

from .codec import as_bytes, publish_size, topic_name, too_large, varint_size
from .errors import NotConnected, StoreFull, said

_NEVER = const(0xFFFFFFFF)
_TOPICS = const(8)           # str topics kept encoded
_ERR_NOT_CONNECTED = const(-6)
_DROPPED_QOS0 = const(6)     # link.py numbers the counters
_NO_PROPS = (None, b"", 0, False)   # publish() props: (object, encoded block, expiry s, UTF-8 payload)
_INT = (int, bool)           # qos, retain (MicroPython's bool is no int subclass)


# Modules of what runs once (connect, subscribe, boot, error texts): unload()
# drops them when the call that needed them is over.
_ONCE = ("configure", "connect", "connack", "leave", "request", "late", "load", "dirload", "slotmove", "stream", "restore", "dial", "reasons",
         "dirstate", "filters", "dirclear", "tls", "subs", "sizing",
         "settle")


def unload():
    import sys
    p = sys.modules.get(__name__.rsplit(".", 1)[0])     # the package
    for m in _ONCE:
        if sys.modules.pop(p.__name__ + "." + m, None) is not None:
            try:
                delattr(p, m)
            except (AttributeError, TypeError):
                pass


class MQTTClient:
    # MQTT 5: the last Server Reference a broker sent (connect.py, link.py).
    # A class attribute until one comes: the instance dict stays as small.
    server_reference = None
    # A connect that starts a new session makes the subscriptions again
    # (connect.py; resubscribe=True): RobustClient's, whose reconnects
    # are its own, not the application's.
    renews_subs = False
    # The first exception of the event callback in the call under way
    # (event()): raised by report() when that call's work is done. A class
    # attribute until one comes.
    cb_error = None
    # A QoS 2 record (OUT_REL, IN_QOS2, IN_REL) the store refused: the
    # journal's checkpoints + 1 then; on flash once that count has moved on,
    # 0 once its session is gone (inbound.put_send, connect.py). A class
    # attribute until one.
    unsaved = 0

    def __init__(self, client_id, server, port=0, user=None, password=None, keepalive=0,
                 ssl=None, **kw):
        # The connection's modules (link, inbound, transport) stay loaded.
        # On a board that compiles .py they are the largest compile: first,
        # while the heap is emptiest (measured on 32 bits: 44 KB less heap
        # needed than importing them at the first connect). As bytecode
        # (.mpy) they load after the session is read: a reboot that restores
        # a full outbox then needs 6.4 KB less heap (72,960 -> 66,560 B on
        # 32 bits, 36 messages), and a first boot no more than before.
        # A collection before each module is compiled or loaded, here and
        # at boot and connect only: the compiler's parse tree and tables need
        # contiguous blocks; the garbage of what ran before lies scattered
        # between the blocks that stay, and the collector runs only when an
        # allocation fails, in mid-compile. Collected first, the compile
        # takes the low, free part of the heap: a smaller smallest heap, from
        # source and from .mpy (CHANGELOG; docs/benchmarks.md has the figures).
        gc.collect()
        from . import session  # noqa: F401
        gc.collect()
        # (__file__: set unless the port is built below the core features
        # level; a frozen module's ends in .py, and its code is in flash.)
        if globals().get("__file__", ".py").endswith(".py"):   # compiled here from source
            from . import link  # noqa: F401
            gc.collect()
        from .configure import configure
        try:
            f = configure(self, client_id, server, port, user, password, keepalive, ssl, **kw)
            del configure
            unload()
            if f:
                from .load import open_session
                open_session(self, *f)
        finally:
            unload()
        gc.collect()
        from . import link  # noqa: F401
        if not self.early:
            self.early = None
        self.pc = _NO_PROPS             # the last publish() props checked (props.publish)
        self.report()

    # ------------------------------------------------------------ settings and figures
    def expiry_for(self, clean):
        x = self.expiry_arg
        return x if x is not None else 0 if clean else _NEVER

    def persistent(self, clean):
        # Does a session connected with this clean flag outlive its connection?
        return self.engine.expiry > 0 if self.v5 else not clean

    def set_callback(self, f, props=False):
        need_callable(f)
        self.cb = f
        self.cb_props = props

    def set_event_callback(self, f):
        # f(event, info): "new", "resumed", "lost", "expired", "discarded",
        # "damaged", "outbox_grown", "store_full" or (AsyncClient)
        # "callback_error", and a dict of figures (docs/api.md). The events
        # the constructor raised (restoring the session) go to f at once.
        need_callable(f)
        self.on_event = f
        for ev, info in self.early or ():
            f(ev, info)
        self.early = None

    def set_done_callback(self, f):
        # f(pid, reason) when a QoS 1/2 message leaves the session: reason 0
        # acknowledged, >= 0x80 refused (MQTT 5), -1 expired unsent. (Not
        # callable: refused here, not at each PUBACK.)
        need_callable(f)
        self.on_done = f

    def event(self, kind, info):
        self.last_event = kind
        if self.on_event:
            # The application's exception waits until the library has done
            # what the event is part of (the constructor's restore, the
            # connect's resends): raised at once it left the session owed
            # its resends, and ended AsyncClient's task for good.
            try:
                self.on_event(kind, info)
            except Exception as x:
                if self.cb_error is None:
                    self.cb_error = x
        elif self.early is not None:
            self.early.append((kind, info))

    def due(self, wait):
        # wait (ms; -1: none) cut to when the records batched on
        # persist_batch_ms are due (batch.py: batched mode only).
        j = self.journal
        if j is not None and j.batch_ms:
            return j.due(j, wait)
        return wait

    def tick(self):  # noalloc
        # What the store holds back and is due now (acknowledgements, a
        # batch) reaches flash: after the link's reads (inbound.after), and
        # RobustClient's while down. A write error is raised here, with the
        # link up; RobustClient reports it instead (the store tries again
        # at the next tick, or checkpoint).
        self.journal.tick(ticks_ms())

    def report(self):
        # Raise what the event callback raised (cb_error), if it did.
        x = self.cb_error
        if x is not None:
            del self.cb_error            # (back to the class default)
            raise x

    def set_last_will(self, topic, msg, retain=False, qos=0, props=None):
        # (checked as the constructor's arguments are: configure.py)
        from .configure import will
        try:
            self.will = will(self, topic, msg, retain, qos, props)
        finally:
            unload()

    def pending(self):
        return self.engine.held

    def is_connected(self):
        return self.conn is not None and self.conn.connected

    def holds(self, pid):
        # True while the QoS 1/2 message with this packet id is in the session.
        return self.engine.find(pid, 0) >= 0

    def stats(self):
        # Counters and state as a dict (docs/api.md names them): stats.py.
        from .stats import stats
        return stats(self)

    def flush(self, timeout_ms=10000):
        # Send what is queued and wait for its acknowledgements, e.g. before
        # deep sleep; what the store holds back reaches flash. True when
        # nothing is pending any more, False at the timeout.
        deadline = time.ticks_add(time.ticks_ms(), timeout_ms)
        while True:
            if self.journal:
                self.journal.flush()     # a batch or acks reach flash whatever happens next
            left = time.ticks_diff(deadline, time.ticks_ms())
            if not self.engine.held or left <= 0:
                return not self.engine.held
            self._step(min(left, 100))

    def _step(self, ms):
        # One step of flush(); RobustClient's reconnects too.
        self.wait_msg(ms)

    # ------------------------------------------------------------ connection
    def connection(self):
        # The connection (link.Link), made at the first call.
        if self.conn is None:
            from .link import Link
            self.conn = Link(self)
            unload()                     # (dial.py: its buffers made)
        return self.conn

    def run(self, steps):
        # Runs a step generator (connecting, requesting) to its end,
        # waiting on the socket as it asks; returns its result.
        try:
            while True:
                w = next(steps)
                self.conn.net.wait(self.due(max(0, w)))
        except StopIteration as s:
            return s.value
        finally:
            unload()

    def connect(self, clean_session=None, timeout_ms=None):
        try:
            return self.run(self.connecting(clean_session, timeout_ms))
        finally:
            # The event callback's, now that the connection is whole, or
            # failed after the event (a resubscribe after store_full): in
            # place of the failure then. Left, it came out of the next connect.
            self.report()

    def connect_fresh(self, timeout_ms=None):
        # Start afresh and persist from now on: MQTT 5 in one CONNECT (Clean
        # Start with a Session Expiry); 3.1.1 the spec-correct way, connect
        # clean, disconnect, connect with Clean Session 0.
        try:
            return self.run(self.connecting(True, timeout_ms, None, 0, True))
        finally:
            self.report()

    def connecting(self, clean_session=None, timeout_ms=None, server=None, port=0, fresh=False):
        # The steps of connect(): a generator that yields how long it may
        # wait for the socket (ms; negative: to become writable).
        self.connection()
        gc.collect()                    # before a compile or load: see __init__
        from .connect import connecting
        return connecting(self, clean_session, timeout_ms, server, port, fresh)

    def requesting(self, f, opts, sid, timeout_ms=0):
        # The steps of subscribe() (opts: the options byte) and of
        # unsubscribe() (opts < 0); returns the SUBACK / UNSUBACK code. One
        # module at a time, the peak of a subscribe from .mpy: the request
        # is checked (filters.py), sent and answered (request.py), then the
        # answer checkpointed (dirstate.py for a session directory), each
        # module unloaded before the next loads.
        k = self.need_link()
        gc.collect()                    # before a compile or load: see __init__
        from .filters import check
        try:
            props = check(self, f, opts, sid, k)
        finally:
            del check                    # (no reference left to filters.py: freed)
            unload()
        gc.collect()
        from .request import requesting
        code = yield from requesting(self, f, opts, sid, props, timeout_ms)
        del requesting
        unload()
        # A lost session's resubscribe (settle.py; e.resub_owed, on flash)
        # writes nothing per SUBACK: the connect writes the state once all
        # are made, and a cut before that makes them all again.
        if self.persist and not self.engine.resub_owed:
            gc.collect()
            try:
                self.journal.checkpoint()
            except BaseException as x:
                if not isinstance(x, StoreFull):
                    # A write error, EIO: the call fails as a connect fails
                    # over its checkpoint, the link closed, the error
                    # raised; the answer stays in the session in RAM, on
                    # flash with the next checkpoint.
                    k.drop()
                    raise
                # Made all the same (a full or read-only filesystem): kept
                # in RAM, on flash with the next checkpoint that gets
                # through; reported, not raised, or a lost session's
                # resubscribe failed every connect. (settle.py: the event's
                # words are not interned at import.)
                from .settle import full
                full(self, x)
        return code

    def subscription(self, topic, qos=0, no_local=False, retain_as_published=False,
                     retain_handling=0, sub_id=0):
        # (filter, options byte, subscription id): what requesting() takes.
        # (filters.py stays loaded for requesting(), which unloads it; a
        # caller that goes no further unloads it itself)
        gc.collect()                    # before a compile or load: see __init__
        from .filters import subscription
        return subscription(self, topic, qos, no_local, retain_as_published, retain_handling, sub_id)

    def subscribe(self, topic, qos=0, *, no_local=False, retain_as_published=False,
                  retain_handling=0, sub_id=0):
        old = self.cb_error
        code = self.run(self.requesting(*self.subscription(topic, qos, no_local, retain_as_published,
                                                           retain_handling, sub_id)))
        if old is None:
            # The event callback's (store_full, at the answer's checkpoint),
            # once the subscription is made: left, it came out of the next
            # connect(), as that one's. (Not in place of the request's own
            # failure, which RobustClient tells from a refusal; nor one
            # kept before, a poll()'s store_error, its connect's to raise.)
            self.report()
        return code

    def unsubscribe(self, topic):
        old = self.cb_error
        code = self.run(self.requesting(as_bytes(topic), -1, 0))
        if old is None:
            self.report()
        return code

    def disconnect(self, session_expiry=None):
        # DISCONNECT (MQTT 5: with a new Session Expiry Interval) after the
        # session state reached flash; the connection closes.
        from .leave import disconnect
        try:
            disconnect(self, session_expiry, True)
        finally:
            unload()

    def close(self):
        # Drop the connection without DISCONNECT (the will fires); the
        # store writes what it holds back, and closes.
        if self.conn:
            self.conn.drop()
        if self.journal:
            self.journal.flush()
            self.journal.close()

    def save_session(self):
        from .state import save_session
        try:
            return save_session(self)
        finally:
            unload()

    def restore_session(self, data):
        from .state import restore_session
        try:
            restore_session(self, data)
        finally:
            unload()

    def need_link(self):  # noalloc
        # Raises the failure the link met since the last call, or
        # NotConnected; returns the link when it is up.
        k = self.conn
        if k is not None:
            x = k.failure
            if x is not None:
                k.failure = None
                raise x
            if k.connected:
                return k
        raise NotConnected(_ERR_NOT_CONNECTED, "not connected")

    def socket(self):
        # The connection's socket (front ends wait on it), or None.
        return self.conn.net.sock if self.conn else None

    def check_msg(self):  # noalloc
        k = self.conn
        if k is None or k.failure is not None or not k.connected:
            k = self.need_link()         # raises
        k.check_msg()

    def wait_msg(self, timeout_ms=None):  # noalloc
        k = self.conn                    # (need_link()'s checks inline, as in check_msg())
        if k is None or k.failure is not None or not k.connected:
            k = self.need_link()         # raises
        return k.wait_msg(timeout_ms)

    def ping(self):
        # What arrived is read first (as by check_msg()): a link the broker
        # closed fails here, not at the next call (its first write succeeds).
        self.check_msg()
        self.need_link().ping()

    def keepalive_wait(self):
        # ms until the keepalive needs attention (front ends sleep no longer).
        return self.conn.keepalive_wait() if self.conn else 1000

    # ------------------------------------------------------------ publish
    def publish(self, topic, msg, retain=False, qos=0, props=None):  # noalloc for a bytes-like msg
        # (One function from the arguments to the wire: a call with this many
        # arguments needs a heap frame, so a second one would cost another.)
        e = self.engine
        # (qos 1.0 and retain 1.0 pass `in` and `!=`: without the type checks
        # they failed deep in the encoder, with a TypeError naming neither)
        if (qos not in (0, 1, 2) or qos > e.max_qos or not isinstance(qos, _INT) or not isinstance(retain, _INT)
                or retain and (retain != 1 or not e.retain)):
            _refuse(e, qos, retain)
        kind = type(topic)
        t = self.topics.get(topic) if kind is str or kind is bytes else None
        if t is None:
            t = self._topic(topic)
        kind = type(msg)                 # (a tuple of types here would allocate)
        if kind is not bytes and kind is not bytearray and kind is not memoryview:
            if isinstance(msg, str) or msg is None:
                msg = msg.encode() if msg else b""
            else:
                msg = as_bytes(msg)      # e.g. array("H"): len() counts items, not bytes
        pc = self.props.publish(self, props) if self.v5 else _NO_PROPS
        pr = pc[1] if self.v5 else None
        if pc[3]:                        # Payload Format Indicator 1 (MQTT 5, 3.3.2.3.2)
            self.props.utf8_payload(msg)
        rl = publish_size(len(t), len(msg), qos, len(pr) if pr else 0, self.v5)
        n = rl + 2 if rl < 128 else 1 + varint_size(rl) + rl   # (varint_size inline below 128: a call less)
        if n > e.max_out or n > self.buf_size:      # (the engine's may be larger: restore.py)
            # (rc 0: errors.why. The limit named: "exceeds the limit of 64"
            # alone left a user to guess which.)
            too_large("PUBLISH (the broker's Maximum Packet Size)" if e.max_out < self.buf_size
                      else "PUBLISH (buf_size)", n, min(e.max_out, self.buf_size), 0)
        k = self.conn
        if (not qos and k is not None and k.connected and not k.held
                and (not k.gentle or not k.full and k.net.room())
                and not k.publish0(t, msg, retain, rl, pr, n)):
            return None                  # (sent at once, or lost with the link: publish0())
        if qos and self.persist and not self.journal.fits(n + 9):
            _refuse(e, qos, retain, n)
        pid = e.accept(t, msg, qos, retain, pr, ticks_ms(), pc[2], rl)
        if pid < 0:
            self.counts[_DROPPED_QOS0] += 1
            return None
        if pid and self.persist:
            self._store(e)               # on flash before the wire
        e.rec = 0
        if k is not None and k.connected:
            try:                         # (k.drain(), inline: its handler would take a heap frame)
                k.send_out()
            except OSError as x:
                k.failed(x)
        return pid or None

    def _store(self, e):  # noalloc
        # The message just accepted goes to flash; if it cannot, it is not
        # accepted either.
        try:
            self.journal.put()
        except BaseException:
            e.unaccept()
            raise

    def _topic(self, topic):  # noalloc for a bytearray or memoryview topic
        # publish()'s topic as bytes, checked. A str or bytes topic is
        # remembered: checked (and encoded) once, not at every publish().
        kind = type(topic)
        if kind is str:
            t = topic.encode()
        elif kind is bytes or kind is bytearray or kind is memoryview:
            t = topic
        else:
            raise TypeError(said(32))  # topic must be str or bytes-like
        topic_name(t)
        if kind is str or kind is bytes:
            if len(self.topics) >= _TOPICS:
                self.topics.clear()
            self.topics[topic] = t
        return t

def need_callable(f):
    # A callback the library would call only later, deep in a connect or a
    # received message's handling (where a TypeError would cost the message).
    if f is not None and not callable(f):
        raise TypeError(said((22, type(f).__name__)))  # the callback must be callable, not %s


def _refuse(e, qos, retain, n=0):
    # publish() refused: a QoS or retain flag that is not allowed, or (n)
    # a QoS 1/2 PUBLISH of n bytes the store cannot take. Raises, with
    # reasons.py's words, unloaded again: a device refused over and over
    # (its flash full) does not hold it.
    from . import reasons
    try:
        if n:
            raise reasons.refusal(n)
        reasons.refuse(e, qos, retain)
    finally:
        unload()
