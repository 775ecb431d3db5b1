# MQTTClient: the blocking and polling front end (umqtt-like), ../API.md.
#
# A thin driver: the session rules are in session.py, the wire format in
# codec.py (MQTT 5 properties in props.py), flash in store.py and its
# backends, sockets in transport.py. It reads packets, hands them to the
# session, puts what the session asks on flash, then on the wire.
#
# Connecting and (un)subscribing are generators that yield how long they may
# wait for the socket (ms; negative: for it to become writable): connect()
# runs them with blocking waits, aio.AsyncClient awaits the same steps.
# Every buffer is allocated in __init__; the paths marked `# noalloc`
# allocate nothing in steady state (tests/test_noalloc.py).
import time
from micropython import const

from . import codec
from .errors import (MQTTException, ConnectRefused, ProtocolError, PacketTooLarge, Timeout,
                     PeerClosed, NotConnected, ERR_PROTOCOL, ERR_TOO_LARGE, ERR_TIMEOUT,
                     ERR_NOT_CONNECTED, ERR_SESSION)
from .session import Session
from .transport import Transport

_CONNACK = const(0x20)
_PUBLISH = const(0x30)
_PUBACK = const(0x40)
_PUBREC = const(0x50)
_PUBREL = const(0x60)
_PUBCOMP = const(0x70)
_SUBSCRIBE = const(0x82)
_SUBACK = const(0x90)
_UNSUBSCRIBE = const(0xA2)
_UNSUBACK = const(0xB0)
_PINGREQ = const(0xC0)
_PINGRESP = const(0xD0)
_DISCONNECT = const(0xE0)
_NEVER = const(0xFFFFFFFF)
_HDR = const(5)               # bytes read at once: a fixed header, or a whole small packet
_VIEWS = const(24)            # views of the receive buffer kept for callbacks
_TOPICS = const(8)            # str topics kept encoded
_HEAD = const(0)              # reader states
_BODY = const(1)
_DRAIN = const(2)
# MQTT 5 reason codes a broker may send, per packet (MQTT-3.4.2-1 and alike).
_RC_PUB = b"\x00\x10\x80\x83\x87\x90\x91\x97\x99"
_RC_REL = b"\x00\x92"
_RC_SUB = b"\x00\x01\x02\x80\x83\x87\x8f\x91\x97\x9e\xa1\xa2"   # 3.1.1: 0 1 2 0x80
_RC_UNSUB = b"\x00\x11\x80\x83\x87\x8f\x91"


def _b(s):
    return s.encode() if isinstance(s, str) else bytes(s)


class MQTTClient:
    def __init__(self, client_id, server, port=0, user=None, password=None, keepalive=0,
                 ssl=None, *, version=4, clean_session=True, session_expiry=None,
                 session_file=None, buf_size=1024, max_inflight=16, receive_max=8,
                 outbox_size=32, outbox_bytes=None, timeout_ms=10000, resubscribe=True,
                 ring_prog_size=None, persist_batch_ms=0, tls_verify=True, event_callback=None):
        if version != 4 and version != 5:
            raise ValueError("version must be 4 (MQTT 3.1.1) or 5 (MQTT 5.0)")
        if not 64 <= buf_size <= 268435460:
            raise ValueError("buf_size must be 64 bytes or more")
        if not (0 < max_inflight < 65536 and 0 < receive_max < 65536 and outbox_size >= 0
                and 0 <= keepalive < 65536):
            raise ValueError("max_inflight, receive_max: 1..65535; outbox_size >= 0; keepalive 0..65535")
        if session_expiry is not None and not 0 <= session_expiry <= _NEVER:
            raise ValueError("session_expiry: 0..0xFFFFFFFF")
        if ssl is not None and not hasattr(ssl, "wrap_socket"):
            raise TypeError("ssl must be an ssl.SSLContext with the broker's CA loaded")
        self.server = server
        self.port = port or (8883 if ssl is not None else 1883)
        self.user = None if user is None else _b(user)
        self.pswd = None if password is None else _b(password)
        self.keepalive = keepalive
        self.ssl = ssl
        self.tls_verify = tls_verify
        self.clean_session = clean_session
        self.buf_size = buf_size
        self.max_inflight = max_inflight
        self.receive_max = receive_max
        self.timeout_ms = timeout_ms
        self.resubscribe = resubscribe
        self.session_present = False
        self.async_connect = False        # aio: yield while the TCP connect is under way
        self.last_event = None
        self.stats_counters = {"sent": 0, "acked": 0, "resent": 0, "received": 0, "dup_in": 0,
                               "dropped_qos0": 0, "dropped_expired": 0, "refused": 0,
                               "reconnects": 0, "oversize_in": 0}
        self._v5 = v5 = version == 5
        self._p = None
        if v5:
            from . import props          # MQTT 5 only: 3.1.1 never loads it
            self._p = props
        self._expiry_arg = session_expiry
        # QoS 1/2 get max_inflight + outbox_size places; QoS 0 queued while
        # the link is down a quarter of that on top (and a fifth of the bytes).
        q = max_inflight + outbox_size
        slots = q + max(4, q // 4)
        # Default arena: 96 bytes a message (an 86-byte PUBLISH: 16-byte
        # topic, 64-byte payload), and room for two full packets at least.
        # The incoming QoS 2 table holds twice receive_max: after a reconnect
        # a broker resends the old connection's messages beside a fresh quota
        # (mosquitto was seen with 11 unreleased against 8); 3.1.1 has no
        # Receive Maximum, so the broker's own limit applies (mosquitto 20).
        self._e = e = Session(v5, _b(client_id), slots, q, outbox_bytes or max(96 * slots, 2 * buf_size + 64),
                              2 * receive_max if v5 else max(2 * receive_max, 64), max_inflight, buf_size)
        e.expiry = self._expiry_for(clean_session)
        self._tx = bytearray(buf_size)
        self._rx = bytearray(buf_size)
        self._hdr = bytearray(_HDR)
        self._hdrv = [memoryview(self._hdr)[i:] for i in range(_HDR)]
        self._box = codec.Box()
        self._views = {}
        self._topics = {}
        self._net = Transport()
        self._cb = None
        self._cb_props = False
        self._on_done = None              # f(pid, reason): a QoS 1/2 message left (front ends)
        self._event_cb = event_callback
        self._early = []                  # events the constructor raised: replayed to the callback
        self._will = None
        self._props_ok = None             # the last publish() props object checked
        self._props_pr = self._pr = None
        self._props_ttl = self._ttl = 0
        self._connected = False
        self._clean = clean_session       # the last connect's clean flag
        self._in_connect = False
        self._connack = None
        self._result = -1
        self._pending_exc = None
        self._drain_due = False
        self._ka_ms = keepalive * 1000
        self._last_tx = self._last_rx = self._ping_at = 0
        self._ping_out = False
        self._rs = _HEAD
        self._rgot = self._carry = self._rlen = self._rfirst = 0
        self._drain_left = self._drain_pid = self._oversize = 0
        self._persist = False
        self._j = None
        if session_file is not None:
            from .store import open_journal
            self._j = open_journal(session_file, e, ring_prog_size, persist_batch_ms, self._event)
            if e.has_state:
                self.clean_session = False
                self._persist = True
            elif self._persistent(clean_session):
                # Messages accepted before the first connect are kept too.
                self._persist = True
                self._j.checkpoint()
        if not self._early:
            self._early = None                # only the constructor's events wait for a callback

    # ------------------------------------------------------------ settings
    def _expiry_for(self, clean):
        x = self._expiry_arg
        return x if x is not None else 0 if clean else _NEVER

    def _persistent(self, clean):
        return self._e.expiry > 0 if self._v5 else not clean

    def set_callback(self, f, props=False):
        self._cb = f
        self._cb_props = props

    def set_event_callback(self, f):
        """f(event, info): "new", "resumed", "lost", "expired", "discarded" or
        "damaged", with a dict of figures. Events raised before (while the
        constructor restored the session) are passed to f at once."""
        self._event_cb = f
        early = self._early
        self._early = None
        for ev, info in early or ():
            f(ev, info)

    def _event(self, ev, info):
        self.last_event = ev
        if self._event_cb:
            self._event_cb(ev, info)
        elif self._early is not None:
            self._early.append((ev, info))

    def set_done_callback(self, f):
        """f(pid, reason) when a QoS 1/2 message leaves the session: reason 0
        acknowledged, >= 0x80 refused by the broker (MQTT 5), -1 expired."""
        self._on_done = f

    def set_last_will(self, topic, msg, retain=False, qos=0, props=None):
        if not topic or qos not in (0, 1, 2):
            raise ValueError("a will needs a topic and QoS 0..2")
        self._will = (_b(topic), _b(msg), retain, qos,
                      self._p.encode(props) if self._v5 and props else b"")

    # ------------------------------------------------------------ figures
    def pending(self):
        return self._e.held

    def is_connected(self):
        return self._connected

    def holds(self, pid):
        """True while the QoS 1/2 message with this packet id is in the session."""
        return self._e.find(pid, 0) >= 0

    def socket(self):
        """The connection's socket (front ends wait on it), or None."""
        return self._net.sock

    def flush(self, timeout_ms=10000):
        """Send what is queued and wait for its acknowledgements, e.g. before
        deep sleep; what the store holds back reaches flash. True when
        nothing is pending any more, False at the timeout."""
        deadline = time.ticks_add(time.ticks_ms(), timeout_ms)
        if self._j:
            self._j.flush()               # the batch reaches flash whatever happens next
        while self._e.held:
            left = time.ticks_diff(deadline, time.ticks_ms())
            if left <= 0:
                return False
            self._step(min(left, 100))
        if self._j:
            self._j.flush()
        return True

    def _step(self, ms):
        # One step of flush(); RobustClient's reconnects too.
        self.wait_msg(ms)

    def stats(self):
        e = self._e
        d = dict(self.stats_counters)
        d["pending"] = e.held
        d["inflight"] = e.inflight
        d["queued"] = e.count - e.inflight
        j = self._j
        if j:
            d["store_appends"] = j.appends
            d["store_checkpoints"] = j.checkpoints
            for k, v in j.stats().items():
                d["flash_" + k] = v
        return d

    # ------------------------------------------------------------ session bytes
    def save_session(self):
        from .store import state_bytes
        if self._j:
            self._j.flush()
        return state_bytes(self._e)

    def restore_session(self, data):
        if self._connected:
            raise MQTTException(ERR_SESSION, "restore_session() needs a disconnected client")
        from .store import parse
        try:
            st = parse(data)
            if st.torn:
                raise ValueError("truncated or damaged (save_session() bytes are whole)")
            self._e.restore(st, time.ticks_ms(), 0)
        except ValueError as ex:
            raise ValueError("not a valid session state: %s" % ex)
        self.clean_session = False
        if self._j:
            self._persist = True
            self._j.checkpoint()

    # ------------------------------------------------------------ connection
    def _run(self, steps):
        # Runs a step generator to its end, waiting on the socket as it asks.
        try:
            while True:
                w = next(steps)
                self._net.wait(w if w > 0 else 0)
        except StopIteration as s:
            return s.value

    def connect(self, clean_session=None, timeout_ms=None):
        return self._run(self.connecting(clean_session, timeout_ms))

    def connect_fresh(self, timeout_ms=None):
        """MQTT 3.1.1 'start afresh, persist from now on', the spec-correct
        way: connect clean, disconnect, connect with Clean Session 0. MQTT 5
        does it in one CONNECT (Clean Start with a Session Expiry)."""
        return self._run(self.connecting(True, timeout_ms, fresh=True))

    def connecting(self, clean_session=None, timeout_ms=None, server=None, port=0, fresh=False):
        """The steps of connect() (a generator; front ends run it)."""
        e = self._e
        if e.expired and clean_session is None:
            e.expired = False                 # the stored session outlived its expiry
            clean_session = fresh = True
        if fresh:
            if self._v5 and self._expiry_arg is None:
                self._expiry_arg = _NEVER
            if not self._v5:
                yield from self.connecting(True, timeout_ms, server, port)
                self.disconnect()
                clean_session = False
        clean = self.clean_session if clean_session is None else clean_session
        self._clean = clean
        tmo = timeout_ms or self.timeout_ms
        host = server or self.server
        port = port or self.port
        self._drop_link()
        e.expiry = self._expiry_for(clean)
        persistent = self._persistent(clean)
        net = self._net
        try:
            net.open(host, port, tmo, not self.async_connect)
            if self.async_connect:
                yield -tmo
            net.secure(host, port, self.ssl, self.tls_verify, tmo)
            self._rs = _HEAD
            self._carry = 0
            self._pending_exc = None
            self._connack = None
            self._in_connect = True
            self._send(self._tx, 0, self._encode_connect(clean))
            deadline = time.ticks_add(time.ticks_ms(), tmo)
            while self._connack is None:
                while self._read() and self._connack is None:
                    pass
                left = time.ticks_diff(deadline, time.ticks_ms())
                if self._connack is None:
                    if left <= 0:
                        raise Timeout(ERR_TIMEOUT, "no CONNACK in %d ms" % tmo)
                    yield left
            sp, code, p = self._connack
            if code:
                raise ConnectRefused(code, "broker refused the connection: " + self._reason(code, p, True))
            self._limits(p)
            ev = e.connected(sp, clean)
        except BaseException:
            self._drop_link()
            raise
        finally:
            self._in_connect = False
        self._connected = True
        self.session_present = sp
        self._last_tx = self._last_rx = time.ticks_ms()
        self._ping_out = False
        c = self.stats_counters
        c["reconnects"] += 1
        info = {"queued": e.held}
        if ev == "resumed":
            c["resent"] += e.held
            info = {"resending": e.held, "awaiting_pubrel": e.rx2_n}
        elif ev == "lost":
            info = {"requeued": e.held, "dropped_released": e.dropped, "resubscribed": 0}
        self._persist = self._j is not None and persistent
        if self._j:
            if persistent or e.held:
                self._j.checkpoint()          # accepted messages stay stored until sent
            else:
                self._j.erase()               # MQTT-3.1.2-6: a clean session is never reused
        if ev == "lost" and self.resubscribe:
            subs = list(e.subs)
            for f, opts, sid in subs:
                try:
                    yield from self.requesting(f, opts, sid)
                    info["resubscribed"] += 1
                except ConnectRefused:
                    e.unsubscribed(f)         # the broker refused it: forgotten
        self._event(ev, info)
        if fresh and not clean:
            self.clean_session = False
        self._drain()
        return sp

    def _encode_connect(self, clean):
        props = b""
        if self._v5:
            d = {"receive_maximum": self.receive_max, "maximum_packet_size": self.buf_size}
            if self._e.expiry:
                d["session_expiry"] = self._e.expiry
            props = self._p.encode(d)
        return codec.connect(self._tx, self._e.cid, self._v5, self.keepalive, clean, self.user,
                             self.pswd, self._will, props)

    def _limits(self, p):
        # CONNACK properties (MQTT 5): the broker's limits and overrides.
        e = self._e
        self._ka_ms = self.keepalive * 1000
        if not p:
            e.limits(0, 0, 2)
            return
        e.limits(p.get("receive_maximum", 0), p.get("maximum_packet_size", 0),   # MQTT-3.3.4-7, 3.2.2-15
                 p.get("maximum_qos", 2))                                       # MQTT-3.2.2-11
        if "server_keep_alive" in p:                                             # MQTT-3.2.2-21
            self._ka_ms = p["server_keep_alive"] * 1000
        if "session_expiry" in p:
            e.expiry = p["session_expiry"]
        if "assigned_client_id" in p:
            e.cid = p["assigned_client_id"].encode()
            e.cid_assigned = True

    def _reason(self, code, p, connack=False):
        from .reasons import text
        t = text(code, 5 if self._v5 else 4, connack)
        if p and "reason_string" in p:
            t += " (%s)" % p["reason_string"]
        return t

    def disconnect(self, session_expiry=None):
        e = self._e
        if session_expiry is not None:
            if not self._v5:
                raise ValueError("session_expiry on DISCONNECT needs MQTT 5")
            if not e.expiry and session_expiry:
                raise ValueError("a session with expiry 0 cannot be extended (MQTT-3.14.2-1)")
            e.expiry = session_expiry
        if self._persist:
            if self._v5 and not e.expiry:
                self._j.erase()               # the session ends here
                self._persist = False
            else:
                self._j.checkpoint(True)      # the broker's expiry clock starts now
        if not self._persistent(self._clean):
            e.has_state = False               # the broker ends such a session with the connection
        if self._connected:
            try:
                props = None
                if session_expiry is not None:
                    props = self._p.encode({"session_expiry": session_expiry})
                self._net.write(self._tx, 0, codec.disconnect(self._tx, props), self.timeout_ms)
            except OSError:
                pass
        self._drop_link()

    def close(self):
        """Drop the connection without DISCONNECT (the will fires); the
        store writes what it holds back and closes."""
        self._drop_link()
        if self._j:
            self._j.flush()
            self._j.close()

    def _drop_link(self):  # noalloc
        self._connected = False
        self._net.close()
        self._ping_out = False

    def _link_failed(self, exc):  # noalloc
        # The first failure is kept; the next call that needs the link raises it.
        if self._pending_exc is None:
            self._pending_exc = exc
        self._drop_link()

    def _need_link(self):  # noalloc
        x = self._pending_exc
        if x is not None:
            self._pending_exc = None
            raise x
        if not self._connected:
            raise NotConnected(ERR_NOT_CONNECTED, "not connected: call connect() first")

    # ------------------------------------------------------------ publish
    def publish(self, topic, msg, retain=False, qos=0, props=None):
        if qos not in (0, 1, 2):
            raise ValueError("qos must be 0, 1 or 2")
        e = self._e
        if qos > e.max_qos:
            raise MQTTException(0x9B, "broker takes QoS %d at most (MQTT-3.2.2-11)" % e.max_qos)
        t = self._topics.get(topic) if isinstance(topic, str) else topic
        if t is None:
            t = self._topic(topic)
        elif t is topic:
            _check_topic(t)
        if isinstance(msg, str) or msg is None:
            msg = b"" if msg is None else msg.encode()
        else:
            mt = type(msg)                 # (a tuple of types here would allocate)
            if mt is not bytes and mt is not bytearray and mt is not memoryview:
                msg = bytes(msg)           # e.g. array("H"): len() counts items, not bytes
        self._publish_props(props)
        pr = self._pr
        prl = len(pr) if pr else 0
        tl = len(t)
        pl = len(msg)
        rl = codec.publish_size(tl, pl, qos, prl, self._v5)
        n = 1 + codec.varint_size(rl) + rl
        if n > e.max_out:
            raise PacketTooLarge(ERR_TOO_LARGE, "PUBLISH of %d bytes exceeds the limit of %d (buf_size or the broker's)"
                                 % (n, e.max_out))
        if not qos and self._connected:
            return self._publish0(t, msg, retain, rl, n)
        if qos and self._persist and not self._j.fits(n + 9):
            from .errors import StoreFull, ERR_FULL
            raise StoreFull(ERR_FULL, "flash store full")
        pid = e.accept(t, tl, msg, pl, qos, retain, pr, prl, time.ticks_ms(), self._ttl)
        if pid < 0:
            self.stats_counters["dropped_qos0"] += 1
            return None
        if pid and self._persist:
            try:
                self._j.put()                  # on flash before the wire
            except BaseException as x:
                e.unaccept()
                raise x
        e.rec = 0
        if self._connected:
            self._drain()
        return pid or None

    def _publish0(self, t, msg, retain, rl, n):  # noalloc
        # QoS 0 while connected: straight out of tx, never queued.
        tx = self._tx
        p = codec.put_publish(tx, 0, 0x30 | retain, rl, t, len(t), 0, self._pr, len(self._pr) if self._pr else 0)
        tx[p:p + len(msg)] = msg
        c = self.stats_counters
        try:
            self._send(tx, 0, n)
            c["sent"] += 1
        except OSError as x:
            # The link just broke: a QoS 0 message is lost (counted); the
            # error surfaces from the next check_msg() / wait_msg().
            self._link_failed(x)
            c["dropped_qos0"] += 1

    def _topic(self, topic):
        if not isinstance(topic, str):
            raise TypeError("topic must be str or bytes-like")
        t = topic.encode()
        _check_topic(t)
        if len(self._topics) >= _TOPICS:
            self._topics.clear()
        self._topics[topic] = t
        return t

    def _publish_props(self, props):  # noalloc for the same props object
        # The encoded block (self._pr) and Message Expiry (self._ttl) of
        # publish() props, checked once per props object.
        if not self._v5 or props is None:
            self._pr = None if not self._v5 else b""
            self._ttl = 0
            return
        if props is not self._props_ok:
            pr = props if isinstance(props, bytes) else self._p.encode(props)
            box = self._p.scan(pr)
            if box.alias:
                # Aliases belong to one connection (MQTT-3.3.2-7); a stored
                # message must not carry one.
                raise ValueError("topic aliases are not supported in publish() props")
            self._props_ok = props
            self._props_pr = pr
            self._props_ttl = box.expiry
        self._pr = self._props_pr
        self._ttl = self._props_ttl

    def _drain(self):  # noalloc
        """Send what the session lets out now: queued PUBLISH, owed PUBREL."""
        e = self._e
        c = self.stats_counters
        try:
            while self._connected:
                n = e.next_out(time.ticks_ms(), self._tx)
                if n > 0:
                    if e.src is e.arena:
                        c["sent"] += 1
                    self._send(e.src, e.src_off, n)
                elif n < 0:
                    self._done()
                else:
                    return
        except OSError as x:
            self._link_failed(x)

    def _done(self):  # noalloc
        # A QoS 1/2 message left the session: logged lazily, reported, and
        # its window place goes to the next one once the reads are handled.
        e = self._e
        pid = e.done_pid
        r = e.done_reason
        e.done_pid = 0
        c = self.stats_counters
        if r >= 0x80:
            c["refused"] += 1
        elif r < 0:
            c["dropped_expired"] += 1
        else:
            c["acked"] += 1
        if self._persist:
            self._j.acked(pid)
        if self._on_done:
            self._on_done(pid, r)
        self._drain_due = True

    def _send(self, buf, off, n):  # noalloc
        self._net.write(buf, off, n, self.timeout_ms)
        self._last_tx = time.ticks_ms()

    def _put_send(self, n):  # noalloc
        # What the session just asked to keep goes to flash, then n bytes of tx out.
        if self._e.rec:
            if self._persist:
                self._j.put()
            self._e.rec = 0
        if n:
            self._send(self._tx, 0, n)

    # ------------------------------------------------------------ subscribe
    def subscribe(self, topic, qos=0, *, no_local=False, retain_as_published=False,
                  retain_handling=0, sub_id=0):
        return self._run(self.requesting(*self.subscription(topic, qos, no_local, retain_as_published,
                                                         retain_handling, sub_id)))

    def subscription(self, topic, qos=0, no_local=False, retain_as_published=False, retain_handling=0,
                  sub_id=0):
        """(filter, options byte, subscription id): what requesting() takes."""
        if qos not in (0, 1, 2):
            raise ValueError("qos must be 0, 1 or 2")
        f = _b(topic)
        if not f:
            raise ValueError("empty topic filter")
        if self._v5:
            qos |= (4 if no_local else 0) | (8 if retain_as_published else 0) | ((retain_handling & 3) << 4)
        elif no_local or retain_as_published or retain_handling or sub_id:
            raise ValueError("subscription options need MQTT 5")
        return f, qos, sub_id

    def unsubscribe(self, topic):
        return self._run(self.requesting(_b(topic), -1, 0))

    def requesting(self, f, opts, sid):
        """The steps of subscribe() (opts: the options byte) or unsubscribe()
        (opts < 0); a generator front ends run. Returns the SUBACK code."""
        self._need_link()
        e = self._e
        kind = _SUBACK if opts >= 0 else _UNSUBACK
        pid = e.request(kind)
        props = None
        if self._v5:
            props = self._p.encode({"subscription_id": sid}) if sid else b""
        n = codec.subscribe(self._tx, _SUBSCRIBE if opts >= 0 else _UNSUBSCRIBE, pid, f, opts, props)
        self._result = -1
        try:
            self._send(self._tx, 0, n)
            deadline = time.ticks_add(time.ticks_ms(), self.timeout_ms)
            while self._result < 0:
                self._pump()
                left = time.ticks_diff(deadline, time.ticks_ms())
                if self._result < 0:
                    if left <= 0:
                        raise Timeout(ERR_TIMEOUT, "no %sACK in %d ms" % ("SUB" if opts >= 0 else "UNSUB",
                                                                         self.timeout_ms))
                    yield left
        except OSError as x:
            e.abandon()
            if self._connected:
                self._link_failed(x)
            self._pending_exc = None
            raise
        except BaseException:
            e.abandon()          # e.g. the message callback raised meanwhile
            raise
        code = self._result
        if code >= 0x80 and opts >= 0:
            raise ConnectRefused(code, "broker refused the subscription to %r: %s"
                                 % (f, self._reason(code, None)))
        if opts >= 0:
            e.subscribed(f, opts, sid)
        else:
            e.unsubscribed(f)
        if self._persist:
            self._j.checkpoint()
        return code

    # ------------------------------------------------------------ receiving
    def check_msg(self):  # noalloc
        self._need_link()
        try:
            self._pump()
        except OSError as x:
            self._link_failed(x)
            self._need_link()
        self._after()

    def wait_msg(self, timeout_ms=None):  # noalloc
        self._need_link()
        deadline = time.ticks_add(time.ticks_ms(), timeout_ms or 0)
        kind = None
        try:
            while True:
                k = self._read()
                wait = self._keepalive()
                if k:
                    kind = k
                    break
                if not self._connected:
                    self._need_link()
                if timeout_ms is not None:
                    left = time.ticks_diff(deadline, time.ticks_ms())
                    if left <= 0:
                        break
                    if wait < 0 or left < wait:
                        wait = left
                self._net.wait(wait)
        except OSError as x:
            self._link_failed(x)
            self._need_link()
        self._after()
        return kind

    def _pump(self):  # noalloc
        # Every packet already received, then the keepalive.
        while self._connected and self._read():
            pass
        self._keepalive()

    def _after(self):  # noalloc
        if self._drain_due:
            self._drain_due = False
            self._drain()
        j = self._j
        if j is not None and (j.nacks or j.nbatch):
            j.tick(time.ticks_ms())
        if self._oversize:
            n = self._oversize
            self._oversize = 0
            raise PacketTooLarge(ERR_TOO_LARGE, "dropped an incoming PUBLISH of %d bytes: buf_size is %d"
                                 % (n, self.buf_size))

    def ping(self):
        self._need_link()
        try:
            self._ping()
        except OSError as x:
            self._link_failed(x)
            self._need_link()

    def _ping(self):  # noalloc
        tx = self._tx
        tx[0] = _PINGREQ
        tx[1] = 0
        self._send(tx, 0, 2)
        if not self._ping_out:
            self._ping_out = True
            self._ping_at = self._last_tx

    def _keepalive(self):  # noalloc
        """Ping when idle half the keepalive; a PINGRESP half a keepalive
        late means a dead link (a black-holed TCP connection never errors by
        itself). Returns ms until the next keepalive action, -1 for none."""
        ka = self._ka_ms
        if not ka or not self._connected:
            return -1
        now = time.ticks_ms()
        half = ka >> 1
        if self._ping_out:
            late = time.ticks_diff(now, self._ping_at)
            if late >= half:
                raise Timeout(ERR_TIMEOUT, "no PINGRESP in %d ms: link dead" % half)
            return half - late
        idle = max(time.ticks_diff(now, self._last_tx), time.ticks_diff(now, self._last_rx))
        if idle >= half:
            self._ping()
            return half
        return half - idle

    def keepalive_wait(self):
        """ms until the keepalive needs attention (front ends sleep no longer)."""
        w = self._keepalive()
        return 1000 if w < 0 else max(1, w)

    def _view(self, off, n):  # noalloc after the first sight of (off, n)
        key = (off << 20) | n
        v = self._views.get(key)
        if v is None:
            if len(self._views) >= _VIEWS:
                self._views.clear()
            v = self._views[key] = memoryview(self._rx)[off:off + n]
        return v

    def _read(self):  # noalloc
        """Advance the reader with what the socket has; when a whole packet
        is in, handle it and return its type, else 0."""
        net = self._net
        if self._rs == _HEAD:
            # Up to 5 bytes at once: the fixed header and, for the small
            # packets that dominate (PUBACK is 4 bytes), the body too. Bytes
            # past this packet stay in hdr as the start of the next.
            hdr = self._hdr
            got = self._carry
            h = codec.header_length(hdr, got)
            while not h:
                r = net.read_into(self._hdrv[got], _HDR - got)
                if not r:
                    self._carry = got
                    return 0
                got += r
                h = codec.header_length(hdr, got)
            self._last_rx = time.ticks_ms()
            self._rfirst = hdr[0]
            codec.get_varint(hdr, 1, h, self._box)
            rl = self._rlen = self._box.value
            take = got - h if got - h < rl else rl
            rx = self._rx
            for k in range(take):
                rx[k] = hdr[h + k]
            left = got - h - take
            for k in range(left):
                hdr[k] = hdr[h + take + k]
            self._carry = left
            self._rgot = take
            if h + rl > self.buf_size:
                if self._rfirst & 0xF0 != _PUBLISH:
                    codec.too_large("incoming packet type 0x%02x" % (self._rfirst & 0xF0), h + rl, self.buf_size)
                self._rs = _DRAIN
                self._drain_left = rl
                self._oversize = h + rl
            elif take < rl:
                self._rs = _BODY
            else:
                return self._dispatch()
        if self._rs == _BODY:
            got = self._rgot
            while got < self._rlen:
                r = net.read_into(self._view(got, self.buf_size - got) if got else self._rx, self._rlen - got)
                if not r:
                    self._rgot = got
                    return 0
                got += r
            self._rs = _HEAD
            self._last_rx = time.ticks_ms()
            return self._dispatch()
        return self._drain_big()

    def _drain_big(self):  # noalloc
        # An oversize PUBLISH: its first buf_size bytes (topic, packet id)
        # are kept, the rest read and dropped in buf_size chunks.
        net = self._net
        while self._drain_left:
            got = self._rgot
            if self._rlen == self._drain_left:
                chunk = min(self.buf_size, self._drain_left)
                r = net.read_into(self._view(got, self.buf_size - got) if got else self._rx, chunk - got)
                if not r:
                    self._rgot = got
                    return 0
                self._rgot = got = got + r
                if got < chunk:
                    continue
                self._rgot = 0
                self._drain_left -= chunk
                self._drain_pid = 0
                if (self._rfirst >> 1) & 3 and chunk >= 4 and 4 + codec.u16(self._rx, 0) <= chunk:
                    self._drain_pid = codec.u16(self._rx, 2 + codec.u16(self._rx, 0))
                continue
            r = net.read_into(self._rx, min(self.buf_size, self._drain_left))
            if not r:
                return 0
            self._drain_left -= r
        self._rs = _HEAD
        self._last_rx = time.ticks_ms()
        # Acknowledged so the broker does not resend it for ever; not delivered.
        self.stats_counters["oversize_in"] += 1
        qos = (self._rfirst >> 1) & 3
        if qos and self._drain_pid:
            self._put_send(self._e.ack_incoming(qos, self._drain_pid, 0x97 if self._v5 else 0, self._tx))
        return _PUBLISH

    def _dispatch(self):  # noalloc
        first = self._rfirst
        kind = first & 0xF0
        n = self._rlen
        rx = self._rx
        e = self._e
        self._rs = _HEAD
        if first & 0x0F != (2 if kind == _PUBREL else 0) and kind != _PUBLISH:
            self._fail("reserved flags 0x%x in packet type 0x%02x" % (first & 15, kind))
        if (kind == _CONNACK) != self._in_connect:
            self._fail("packet type 0x%02x %s CONNACK" % (kind, "before" if self._in_connect else "after"))
        if kind == _PUBLISH:
            self._publish(first, n)
        elif kind == _CONNACK:
            self._on_connack(n)
        elif kind == _PINGRESP:
            self._ping_out = False
        elif kind == _SUBACK or kind == _UNSUBACK:
            self._on_suback(kind, n)
        elif kind == _DISCONNECT and self._v5:
            code = rx[0] if n else 0
            p = self._p.decode(rx, 1, n, 8) if n > 1 else None
            raise PeerClosed(code, "broker sent DISCONNECT: " + self._reason(code, p))
        elif _PUBACK <= kind <= _PUBCOMP:
            pid = codec.parse_ack(rx, n, self._v5)
            r = self._ack_reason(kind, n)
            if kind == _PUBACK:
                e.puback(pid, r)
            elif kind == _PUBREC:
                self._put_send(e.pubrec(pid, r, self._tx))
            elif kind == _PUBREL:
                self._put_send(e.pubrel(pid, self._tx))
            else:
                e.pubcomp(pid)
            if e.done_pid:
                self._done()
        else:
            self._fail("unexpected packet type 0x%02x" % kind)
        return kind

    def _fail(self, msg):
        raise ProtocolError(ERR_PROTOCOL, msg)

    def _ack_reason(self, kind, n):  # noalloc
        # MQTT 5: the reason code (checked) and properties (checked) of an ack.
        if n < 3:
            return 0
        r = self._rx[2]
        if r not in (_RC_PUB if kind < _PUBREL else _RC_REL):
            self._fail("reason code 0x%02x not allowed here" % r)
        if n > 3:
            self._p.check(self._rx, 3, n, 4, self._box)
        return r

    def _on_connack(self, n):
        rx = self._rx
        if n < 2 or (n != 2 and not self._v5) or rx[0] & 0xFE:
            self._fail("malformed CONNACK (MQTT-3.2.2-1)")
        p = self._p.decode(rx, 2, n, 1) if self._v5 else None
        self._connack = (bool(rx[0] & 1), rx[1], p)

    def _on_suback(self, kind, n):
        # One topic filter per request: one reason code (3.1.1 UNSUBACK: none).
        rx = self._rx
        codes = 1 if kind == _SUBACK or self._v5 else 0
        off = 2
        if self._v5 and n > 3:
            off = self._p.check(rx, 2, n - 1, 4, self._box)
        if n != off + codes or self._v5 and n < 4:
            self._fail("malformed %sACK" % ("SUB" if kind == _SUBACK else "UNSUB"))
        code = rx[off] if codes else 0
        if codes and code not in (_RC_SUB if kind == _SUBACK else _RC_UNSUB if self._v5 else b""):
            self._fail("reason code 0x%02x not allowed here" % code)
        if self._e.answer(kind, codec.u16(rx, 0)):
            self._result = code

    def _publish(self, first, n):  # noalloc
        box = self._box
        rx = self._rx
        codec.parse_publish(rx, n, first & 0x0F, self._v5, box)
        if self._v5:
            self._p.check(rx, box.props_off, n, 2, box)
            if box.alias:
                # This client announces Topic Alias Maximum 0 (MQTT-3.3.2-8).
                raise ProtocolError(0x94, "broker used a topic alias; the client allows none")
            if not box.topic_len:
                codec.check_topic(rx, 2, 0)
        e = self._e
        qos = box.qos
        pid = box.pid
        c = self.stats_counters
        c["received"] += 1
        if not e.incoming(qos, pid):                     # MQTT-4.3.3-10: not again
            c["dup_in"] += 1
        else:
            cb = self._cb
            if cb is not None:
                topic = self._view(box.topic_off, box.topic_len)
                msg = self._view(box.payload_off, box.payload_len)
                if self._cb_props:
                    p = self._p.decode(rx, box.props_off, box.payload_off, 2) if self._v5 else None
                    cb(topic, msg, bool(box.retain), qos, p)
                else:
                    cb(topic, msg, bool(box.retain), qos)
        # QoS 2: the id reaches flash after delivery and before the PUBREC:
        # a power cut in between delivers it again (docs/sessions.md).
        self._put_send(e.ack_incoming(qos, pid, 0, self._tx))


def _check_topic(t):  # noalloc
    n = len(t)
    if not n:
        raise ValueError("empty topic")
    for i in range(n):
        c = t[i]
        if c == 0x2B or c == 0x23:
            raise ValueError("no wildcards in a PUBLISH topic (MQTT-3.3.2-2)")
