# MQTTClient: the blocking/polling front end (umqtt-like), API.md.
#
# Policy lives here (connect, keepalive, callbacks, when to persist); the
# wire format is in codec, the session rules in session, flash in store and
# its backends, sockets in transport. Every buffer is allocated in
# __init__; the steady-state paths marked `# noalloc` allocate nothing
# (tests/test_noalloc.py runs them under micropython.heap_lock()).
import micropython
import sys
import time
from micropython import const

from . import codec
from .codec import (PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK, PINGRESP,
                    CONNACK, DISCONNECT, FLAG_DUP)
from .errors import (MQTTException, ConnectRefused, ProtocolError, PacketTooLarge, Timeout,
                     PeerClosed, NotConnected, QueueFull, StoreFull, SessionError,
                     ERR_PROTOCOL, ERR_TOO_LARGE, ERR_TIMEOUT, ERR_NOT_CONNECTED, ERR_FULL, ERR_SESSION)
from .session import Outgoing, Incoming2, PacketIds, QUEUED, SENT, RELEASE, F_DUP, F_REL_DUE
from .transport import Transport

_HDR_MAX = const(5)
_VIEW_CACHE_MAX = const(24)     # views of the receive buffer kept for callbacks and reads
_TOPIC_CACHE_MAX = const(8)     # str topics kept encoded
_NEVER = const(0xFFFFFFFF)
_V4_RX2_MIN = const(64)
_EPOCH_2000 = const(946684800)

# Reader states.
_R_HEAD = const(0)
_R_BODY = const(1)
_R_DRAIN = const(2)

# Session events reported to set_event_callback().
EV_NEW = "new"           # no session existed on the broker; a new one started
EV_RESUMED = "resumed"   # the broker had our session: resent what was owed
EV_LOST = "lost"         # we held state but the broker had none (Session Present 0)
EV_EXPIRED = "expired"   # the stored session was older than its expiry interval
EV_DISCARDED = "discarded"   # a stored session file was unusable and was set aside
EV_DAMAGED = "damaged"       # a damaged record cut the stored state short


def _to_bytes(s):
    return s.encode() if isinstance(s, str) else bytes(s)


def _header_length(hdr, got):  # noalloc
    """Length of the fixed header in hdr[0:got], or 0 while incomplete.
    Raises ProtocolError for a Remaining Length longer than 4 bytes."""
    for i in range(1, got):
        if not hdr[i] & 0x80:
            return i + 1
        if i == 4:
            raise ProtocolError(ERR_PROTOCOL, "remaining length longer than 4 bytes")
    return 0


def _check_topic(t):  # noalloc
    n = len(t)
    if not n:
        raise ValueError("empty topic")
    for i in range(n):
        c = t[i]
        if c == 0x2B or c == 0x23:      # '+' '#'
            raise ValueError("wildcards are not allowed in a PUBLISH topic (MQTT-3.3.2-2)")


_EPOCH_IS_2000 = time.gmtime(0)[0] == 2000


def wall_minutes():
    """Minutes since 2000-01-01 UTC from the board's clock, or 0 when the
    clock is not set (before 2020). Read fresh each time: ticks_ms wraps
    every 2**30 ms on a board, so it cannot carry a clock for long. Minutes
    since 2000 stay below 2**30 (no big integer on a 32-bit board)."""
    t = time.time()
    if not _EPOCH_IS_2000:
        t -= _EPOCH_2000
    return int(t) // 60 if t > 631152000 else 0


class MQTTClient:
    def __init__(self, client_id, server, port=0, user=None, password=None, keepalive=0,
                 ssl=None, *, version=4, clean_session=True, session_expiry=None,
                 session_file=None, buf_size=1024, max_inflight=16, receive_max=8,
                 outbox_size=32, outbox_bytes=None, timeout_ms=10000, resubscribe=True,
                 ring_prog_size=None, persist_batch_ms=0, persist_batch_bytes=None):
        if version not in (4, 5):
            raise ValueError("version must be 4 (MQTT 3.1.1) or 5 (MQTT 5.0)")
        if not 64 <= buf_size <= 268435460:
            raise ValueError("buf_size must be at least 64 bytes")
        if not 1 <= max_inflight <= 65535 or not 1 <= receive_max <= 65535 or outbox_size < 0:
            raise ValueError("max_inflight and receive_max must be 1..65535, outbox_size >= 0")
        if keepalive < 0 or keepalive > 65535:
            raise ValueError("keepalive must be 0..65535 seconds")
        if session_expiry is not None and not 0 <= session_expiry <= _NEVER:
            raise ValueError("session_expiry must be 0..0xFFFFFFFF seconds")
        self._cid = _to_bytes(client_id)
        self._cid_assigned = False
        self.server = server
        self.port = port or (8883 if ssl is not None else 1883)
        self.user = None if user is None else _to_bytes(user)
        self.pswd = None if password is None else _to_bytes(password)
        self.keepalive = keepalive
        self.ssl = ssl
        self._version = version
        self.clean_session = clean_session
        self._expiry_arg = session_expiry
        self._set_expiry(self._default_expiry(clean_session))
        self.buf_size = buf_size
        self.timeout_ms = timeout_ms
        self.resubscribe = resubscribe
        self.max_inflight = max_inflight
        self.receive_max = receive_max
        self.session_present = False

        # Buffers: allocated once, here.
        self._tx = bytearray(buf_size)
        self._rx = bytearray(buf_size)
        self._hdr = bytearray(_HDR_MAX)
        self._hdrv = [memoryview(self._hdr)[i:] for i in range(_HDR_MAX)]
        self._views = {}
        self._topics = {}
        self._inc = codec.Incoming()
        # QoS 1/2 get max_inflight + outbox_size slots; QoS 0 queued while
        # the link is down gets a quarter of that on top, and as many bytes.
        self._qos12_slots = max_inflight + outbox_size
        slots = self._qos12_slots + max(4, self._qos12_slots // 4)
        # Default arena: room for every slot at ~96 bytes (a 16-byte topic and
        # 64-byte payload is an 86-byte PUBLISH), and at least two full packets.
        self._out = Outgoing(slots, outbox_bytes or max(96 * slots, 2 * buf_size + 64))
        self._qos0_bytes = self._out.size // 5
        # Ids of incoming QoS 2 messages awaiting PUBREL (2 bytes an entry).
        # After a reconnect a broker resends what was in flight on the old
        # connection and starts a fresh send quota beside it (mosquitto 2.0
        # was seen holding 11 unreleased against Receive Maximum 8), so the
        # table holds twice the window. MQTT 3.1.1 has no Receive Maximum
        # at all: the broker's own in-flight limit applies (mosquitto 20,
        # EMQX 32), hence the floor.
        self._rx2 = Incoming2(2 * receive_max if version == 5 else max(2 * receive_max, _V4_RX2_MIN))
        self._pids = PacketIds()
        self._in_use = self._pid_in_use       # bound once: binding allocates
        self._subs = []
        self._subs_bytes = 0
        if persist_batch_ms and not persist_batch_bytes:
            persist_batch_bytes = 2 * buf_size
        self._stage_size = max(buf_size + 16 + 2 * slots, persist_batch_bytes or 0)
        self._batch_ms = persist_batch_ms
        self._net = Transport()

        self._cb = None
        self._cb_props = False
        self._on_done = None          # f(pid, reason): a QoS 1/2 message completed (front ends)
        self._event_cb = None
        self.last_event = None
        self._will = None
        self._connected = False
        self._has_session = False     # this object has session state (MQTT-3.2.2-4)
        self._persist = False         # the current session is written to flash
        self._pending_exc = None
        self._window = max_inflight
        self._max_out = buf_size      # largest packet the broker takes (MQTT 5)
        self._max_qos = 2
        self._ka_ms = keepalive * 1000
        self._last_tx = self._last_rx = self._ping_at = 0
        self._ping_out = False
        self._rs = _R_HEAD
        self._rgot = 0
        self._carry = 0               # bytes of the next packet already in _hdr
        self._rlen = 0
        self._rfirst = 0
        self._drain_left = 0
        self._oversize = 0
        self._sub_pid = 0
        self._sub_kind = 0
        self._sub_result = -1
        self._in_connect = False
        self._fresh_start = False     # a locally expired session: next connect starts clean
        self._saving_offline = False
        self._sub_stale = 0           # pid of a SUBSCRIBE abandoned by an exception
        self._drain_due = False
        self._exp_props = None
        self._exp_value = 0
        self._props_ok = None
        self._drain_pid = 0
        self.stats_counters = {"sent": 0, "acked": 0, "resent": 0, "received": 0,
                               "dup_in": 0, "dropped_qos0": 0, "dropped_expired": 0,
                               "refused": 0, "reconnects": 0, "oversize_in": 0}

        self._store = None
        self._backend = None
        self._store_cap = 0
        if session_file is not None:
            self._open_store(session_file, ring_prog_size)
            if not self._persist and self._persistent(self.clean_session):
                # A session that will persist: messages accepted before the
                # first connect are already kept on flash.
                self._persist = True
                self._checkpoint()

    def _persistent(self, clean):
        return self._expiry > 0 if self._version == 5 else not clean

    # ------------------------------------------------------------ configuration
    def _default_expiry(self, clean):
        if self._expiry_arg is not None:
            return self._expiry_arg
        return 0 if clean else _NEVER

    def _set_expiry(self, v):
        self._expiry = v
        b = bytearray(4)
        codec.put_u32(b, 0, v)
        self._expiry_bytes = bytes(b)

    def set_callback(self, f, props=False):
        self._cb = f
        self._cb_props = props

    def set_event_callback(self, f):
        """f(event, info): event is 'new', 'resumed', 'lost', 'expired' or
        'discarded'; info a dict of figures (requeued, dropped, ...)."""
        self._event_cb = f

    def set_last_will(self, topic, msg, retain=False, qos=0, props=None):
        if not topic:
            raise ValueError("last will needs a topic")
        if qos not in (0, 1, 2):
            raise ValueError("qos must be 0, 1 or 2")
        self._will = (_to_bytes(topic), _to_bytes(msg), retain, qos, codec.encode_props(props))

    def _event(self, ev, info):
        self.last_event = ev
        if self._event_cb:
            self._event_cb(ev, info)

    def _wall_minutes(self):
        return wall_minutes()

    # ------------------------------------------------------------ flash store
    def _open_store(self, session_file, prog_size):
        from .store import SessionStore
        try:
            if isinstance(session_file, str):
                from .filestore import FileStore
                self._backend = FileStore(session_file)
            else:
                from .ring import RingStore
                if prog_size is None and sys.platform == "rp2":
                    prog_size = 256       # rp2.Flash programs whole 256-byte pages
                self._backend = RingStore(session_file, prog_size=prog_size, max_append=self._stage_size)
        except ImportError as e:
            raise ImportError("session_file needs durable_mqtt's flash backends (filestore.py, ring.py), "
                              "which package-core.json leaves out: install package.json (%s)" % e)
        self._store = SessionStore(self._backend, self._stage_size, self._out.nslots, self, self._batch_ms)
        # The whole state must fit one checkpoint; publish() refuses beyond.
        self._store_cap = self._backend.capacity_bytes()
        data = self._backend.load()
        if data:
            try:
                self._load_state(data, from_flash=True)
            except ValueError as e:
                self._set_aside(str(e))

    def _set_aside(self, why):
        aside = getattr(self._backend, "set_aside", None)
        if aside:
            aside()
        else:
            self._backend.erase()
        self._event(EV_DISCARDED, {"reason": why})

    def _load_state(self, data, from_flash):
        """Replace the session with the state in `data` (ValueError if it is
        not a usable state for this client)."""
        from .store import parse_state
        st = parse_state(data)
        if st.intact_after:
            # More than a torn last append: intact records after a damaged
            # one are lost. Say so (the rewrite below makes it final).
            self._event(EV_DAMAGED, {"dropped_bytes": st.dropped})
        if st.flags & 1:                       # id assigned by the broker
            if self._cid and self._cid != st.client_id:
                raise ValueError("session belongs to client id %r" % st.client_id)
            self._cid = st.client_id
            self._cid_assigned = True
        elif st.client_id != self._cid:
            raise ValueError("session belongs to client id %r, not %r" % (st.client_id, self._cid))
        if st.version != self._version:
            raise ValueError("session is for MQTT protocol level %d, client uses %d" % (st.version, self._version))
        # Will it fit? Checked before anything changes (a failed restore
        # leaves the client as it was).
        o = self._out
        need = sum(len(pkt) for _, pkt in st.out if pkt)
        if len(st.out) > o.nslots or need > o.size:
            raise ValueError("session holds %d messages (%d bytes): more than this client's outbox "
                             "(max_inflight + outbox_size = %d, outbox_bytes = %d)" % (len(st.out), need, o.nslots, o.size))
        for _, pkt in st.out:
            if pkt and len(pkt) > self.buf_size:
                raise ValueError("session holds a %d-byte packet, larger than buf_size %d" % (len(pkt), self.buf_size))
        if len(st.in_qos2) > self._rx2.size:
            raise ValueError("session holds more incoming QoS 2 ids than this client's table (receive_max)")
        if (st.saved_offline and st.saved_min and st.expiry != _NEVER
                and 0 < wall_minutes() - st.saved_min > (st.expiry + 59) // 60):
            # Saved at DISCONNECT, longer ago than the expiry: the broker
            # has dropped the session. The next connect starts clean (no
            # pretending), and the messages are kept and sent as new ones.
            # (A state saved while connected is never judged here: the
            # time of a power cut is unknown; Session Present decides.)
            self._fresh_start = True
            self._event(EV_EXPIRED, {"saved_min": st.saved_min, "expiry": st.expiry})
        o.clear()
        self._rx2.clear()
        for pid, pkt in st.out:
            n = len(pkt) if pkt else 0
            off = o.reserve(n)
            if n:
                o.arena[off:off + n] = pkt
                o.arena[off] &= ~FLAG_DUP & 0xFF
            i = o.add(off, n, pid, 1, time.ticks_ms(), 0)
            o.state[i] = (QUEUED | F_DUP) if n else (RELEASE | F_REL_DUE)
        for pid in st.in_qos2:
            self._rx2.add(pid)
        self._set_subs(list(st.subs))
        self._pids.last = st.next_pid
        if self._expiry_arg is None and self._version == 5:
            self._set_expiry(st.expiry)
        self.clean_session = False
        self._has_session = True
        self._persist = self._store is not None
        if self._store and from_flash:
            # Rewrite at once: drops a torn tail and the acks it replays.
            self._store.checkpoint(self)

    # ------------------------------------------------------------ state helpers
    def _set_subs(self, subs):
        # Subscriptions this client made: re-subscribed when a broker lost
        # the session, and part of the stored state.
        self._subs = subs
        self._subs_bytes = sum(12 + len(f) for f, _, _ in subs)

    def _state_size(self):  # noalloc
        """Upper bound of the stored state's size (docs/session-format.md):
        magic and header, subscriptions, one record per message and id."""
        o = self._out
        return (26 + len(self._cid) + self._subs_bytes + o.nbytes + 9 * o.count + 9 * self._rx2.n)

    def _pid_in_use(self, pid):  # noalloc
        return self._out.holds(pid) or pid == self._sub_pid

    def pending(self):
        return self._out.held

    def is_connected(self):
        return self._connected

    def flush(self, timeout_ms=10000):
        """Send what is queued and wait for its acknowledgements, e.g. before
        deep sleep. True when nothing is pending any more; False on timeout.
        Raises the link error if the connection fails meanwhile (RobustClient
        reconnects instead)."""
        deadline = time.ticks_add(time.ticks_ms(), timeout_ms)
        if self._store:
            self._store.flush()           # the batch reaches flash whatever happens next
        while self._out.held:
            left = time.ticks_diff(deadline, time.ticks_ms())
            if left <= 0:
                return False
            self._step(min(left, 100))
        if self._store:
            self._store.flush()
        return True

    def _step(self, timeout_ms):
        # One step of flush(); RobustClient's also reconnects.
        self.wait_msg(timeout_ms)

    def save_session(self):
        from .store import state_bytes
        if self._store:
            self._store.flush()
        return state_bytes(self)

    def restore_session(self, data):
        if self._connected:
            raise MQTTException(ERR_SESSION, "restore_session() needs a disconnected client")
        from .store import parse_state
        try:
            if parse_state(data).torn:
                raise ValueError("truncated or damaged (save_session() bytes are whole)")
            self._load_state(data, from_flash=False)
        except ValueError as e:
            raise ValueError("not a valid session state: %s" % e)
        self.clean_session = False
        self._has_session = True
        if self._store:
            self._store.checkpoint(self)

    # ------------------------------------------------------------ connection
    def connect(self, clean_session=None, timeout_ms=None):
        if self._fresh_start and clean_session is None:
            self._fresh_start = False
            return self.connect_fresh(timeout_ms)
        clean = self.clean_session if clean_session is None else clean_session
        tmo = timeout_ms or self.timeout_ms
        self._drop_link()
        if self._expiry_arg is None:
            self._set_expiry(self._default_expiry(clean))
        persistent = self._persistent(clean)
        self._net.open(self.server, self.port, self.ssl, tmo)
        self._rs = _R_HEAD
        self._rgot = 0
        self._carry = 0
        self._pending_exc = None
        self._in_connect = True
        try:
            n = self._encode_connect(clean)
            self._net.write(self._tx, 0, n, tmo)
            self._connected = True
            sp = self._await_connack(tmo)
        except Exception:
            self._drop_link()
            raise
        finally:
            self._in_connect = False
        if clean:
            self._start_clean()      # only now: a refused connect changes nothing
        self.session_present = sp
        now = time.ticks_ms()
        self._last_tx = self._last_rx = now
        self._ping_out = False
        self._reconcile(sp, clean, persistent)
        return sp

    def _start_clean(self):
        # MQTT-3.1.2-6: a clean session reuses no session state. Messages
        # this client accepted are not dropped: they go out again as new
        # publishes, and stay on flash until then (application data, not
        # session state); with none held the stored state is erased.
        self._rx2.clear()
        self._out.requeue_as_new()
        if self._store:
            if self._out.held:
                self._store.checkpoint(self)
            else:
                self._backend.erase()
        self._persist = False
        self._has_session = False

    def _encode_connect(self, clean):
        props = b""
        v5 = self._version == 5
        if v5:
            p = {"receive_maximum": self.receive_max, "maximum_packet_size": self.buf_size}
            if self._expiry:
                p["session_expiry"] = self._expiry
            props = codec.encode_props(p)
        w = self._will
        return codec.encode_connect(
            self._tx, self._cid, version=self._version, keepalive=self.keepalive, clean=clean,
            user=self.user, password=self.pswd,
            will_topic=w[0] if w else None, will_msg=w[1] if w else None,
            will_qos=w[3] if w else 0, will_retain=w[2] if w else False,
            will_props=w[4] if w else b"", props=props)

    def _await_connack(self, tmo):
        deadline = time.ticks_add(time.ticks_ms(), tmo)
        while True:
            kind = self._read_packet()
            if kind == CONNACK:
                break
            if kind:
                raise ProtocolError(ERR_PROTOCOL, "expected CONNACK, got packet type 0x%02x" % kind)
            left = time.ticks_diff(deadline, time.ticks_ms())
            if left <= 0:
                raise Timeout(ERR_TIMEOUT, "no CONNACK within %d ms" % tmo)
            self._net.wait_readable(left)
        sp, code, props = codec.parse_connack(self._rx, self._rlen, self._version)
        if code:
            text = codec.reason_text(code, self._version, connack=True)
            if props and "reason_string" in props:
                text += " (%s)" % props["reason_string"]
            raise ConnectRefused(code, "broker refused the connection: " + text)
        self._window = self.max_inflight
        self._max_out = self.buf_size
        self._max_qos = 2
        self._ka_ms = self.keepalive * 1000
        if props:
            self._apply_connack_props(props)
        return sp

    def _apply_connack_props(self, p):
        if "receive_maximum" in p:                        # MQTT-3.3.4-7
            self._window = max(1, min(self.max_inflight, p["receive_maximum"]))
        if "maximum_packet_size" in p:                    # MQTT-3.2.2-15
            self._max_out = min(self.buf_size, p["maximum_packet_size"])
        if "maximum_qos" in p:                            # MQTT-3.2.2-11
            self._max_qos = p["maximum_qos"]
        if "server_keep_alive" in p:                      # MQTT-3.2.2-21
            self._ka_ms = p["server_keep_alive"] * 1000
        if "session_expiry" in p:
            self._set_expiry(p["session_expiry"])
        if "assigned_client_id" in p:
            self._cid = p["assigned_client_id"].encode()
            self._cid_assigned = True

    def _reconcile(self, sp, clean, persistent):
        """Session Present against what this client holds."""
        o = self._out
        if sp and not self._has_session and self._version == 5 and not clean:
            # MQTT-3.2.2-4: we hold no state but the broker has a session.
            self._drop_link()
            raise SessionError(ERR_SESSION, "broker has a session for this client id but the client "
                               "holds none (MQTT-3.2.2-4); restore its session file or connect clean")
        if sp:
            o.resume()                                    # MQTT-4.4.0-1
            self.stats_counters["resent"] += o.held
            self._event(EV_RESUMED, {"resending": o.held, "awaiting_pubrel": self._rx2.n})
        elif self._has_session and not clean:
            # MQTT-3.2.2-5: discard broker-bound state, then, by our policy,
            # re-subscribe and re-queue the messages as new publishes.
            self._rx2.clear()
            dropped = o.requeue_as_new()
            info = {"requeued": o.held, "dropped_released": dropped, "resubscribed": 0}
            self._persist = persistent and self._store is not None
            self._checkpoint()
            if self.resubscribe and self._subs:
                info["resubscribed"] = self._resubscribe()
            self._event(EV_LOST, info)
        else:
            self._event(EV_NEW, {"queued": o.held})
        self._has_session = True
        self._persist = persistent and self._store is not None
        if self._store:
            if persistent:
                self._checkpoint()
            else:
                self._backend.erase()    # MQTT-3.1.2-6: a clean session is never reused
        self.stats_counters["reconnects"] += 1
        self._drain()

    def _resubscribe(self):
        # Iterates over a copy: a link failure half way keeps every
        # subscription recorded; only a refusal by the broker removes one.
        n = 0
        for f, opts, sid in list(self._subs):
            try:
                self._subscribe(f, opts, sid)
                n += 1
            except ConnectRefused:
                self._set_subs([s for s in self._subs if s[0] != f])
        return n

    def connect_fresh(self, timeout_ms=None):
        """MQTT 3.1.1 'fresh start, persistent afterwards', the spec-correct
        way: connect clean (discarding any old session on both sides),
        disconnect, then connect with Clean Session 0. MQTT 5 does it in one
        CONNECT (Clean Start 1 with a Session Expiry Interval)."""
        if self._version == 5:
            if self._expiry_arg is None:
                self._expiry_arg = _NEVER
            self.connect(clean_session=True, timeout_ms=timeout_ms)
        else:
            self.connect(clean_session=True, timeout_ms=timeout_ms)
            self.disconnect()
            self.connect(clean_session=False, timeout_ms=timeout_ms)
        self.clean_session = False
        return False

    def disconnect(self, session_expiry=None):
        if session_expiry is not None:
            if self._version != 5:
                raise ValueError("session_expiry on DISCONNECT needs MQTT 5")
            if self._expiry == 0 and session_expiry:
                raise ValueError("a session with expiry 0 cannot be extended at DISCONNECT (MQTT-3.14.2-1)")
            self._set_expiry(session_expiry)
        if self._store and self._persist:
            if self._version == 4 or self._expiry:
                self._saving_offline = True       # the broker's expiry clock starts now
                try:
                    self._checkpoint()
                finally:
                    self._saving_offline = False
            else:                       # expiry 0: the session ends here
                self._backend.erase()
                self._persist = False
        if self._connected:
            try:
                n = codec.encode_disconnect(self._tx, self._version, 0, session_expiry)
                self._net.write(self._tx, 0, n, self.timeout_ms)
            except OSError:
                pass
        self._drop_link()

    def close(self):
        """Drop the connection without DISCONNECT (the will fires) and close
        the store."""
        self._drop_link()
        if self._backend:
            self._store.flush()
            self._backend.close()

    def _drop_link(self):
        self._connected = False
        self._net.close()
        self._ping_out = False
        self._sub_pid = 0

    def _link_failed(self, exc):  # noalloc
        # Remember the first failure; the next check_msg/wait_msg/ping raises it.
        if self._pending_exc is None:
            self._pending_exc = exc
        self._drop_link()

    def _checkpoint(self):
        if self._store and self._persist:
            self._store.checkpoint(self)

    # ------------------------------------------------------------ publish
    @micropython.native
    def publish(self, topic, msg, retain=False, qos=0, props=None):
        if qos not in (0, 1, 2):
            raise ValueError("qos must be 0, 1 or 2")
        if qos > self._max_qos:
            raise MQTTException(0x9B, "broker accepts QoS %d at most (MQTT-3.2.2-11)" % self._max_qos)
        t = self._topics.get(topic) if isinstance(topic, str) else topic
        if t is None:
            t = self._encode_topic(topic)
        elif t is topic:
            _check_topic(t)
        tl = len(t)
        if isinstance(msg, str):
            pl = len(msg)
        elif msg is None:
            msg = b""
            pl = 0
        else:
            mt = type(msg)                # (a tuple of types here would allocate)
            if mt is not bytes and mt is not bytearray and mt is not memoryview:
                msg = bytes(msg)          # e.g. an array('H'): len() counts items, not bytes
            pl = len(msg)
        if props is None or self._version == 4:
            pr = None
            prl = 0
        else:
            pr = props if isinstance(props, bytes) else codec.encode_props(props)
            prl = len(pr)
            if pr is not self._props_ok:     # checked once per props object
                if codec.has_prop(pr, codec.P_TOPIC_ALIAS):
                    # Aliases belong to one connection (MQTT-3.3.2-7); a
                    # stored message must not carry one.
                    raise ValueError("topic aliases are not supported in publish() props")
                self._props_ok = pr
        v = self._version
        rl = codec.publish_size(tl, pl, qos, prl, v)
        n = 1 + codec.varint_size(rl) + rl
        if n > self._max_out:
            raise PacketTooLarge(ERR_TOO_LARGE, "PUBLISH of %d bytes exceeds the limit of %d (buf_size / broker maximum)"
                                 % (n, self._max_out))
        try:
            if qos == 0 and self._connected:
                end = codec.encode_publish(self._tx, 0, t, tl, msg, pl, 0, retain, 0, 0, pr, prl, v)
                try:
                    self._send(self._tx, 0, end)
                    self.stats_counters["sent"] += 1
                except OSError as e:
                    # The link just broke: QoS 0 is lost (counted); the error
                    # surfaces from the next check_msg() / wait_msg().
                    self._link_failed(e)
                    self.stats_counters["dropped_qos0"] += 1
                return None
            return self._enqueue(t, tl, msg, pl, qos, retain, pr, prl, n)
        except ValueError as e:
            if isinstance(msg, str):            # non-ASCII payload: encode once and retry
                return self.publish(topic, msg.encode(), retain, qos, props)
            raise e

    def _encode_topic(self, topic):
        if isinstance(topic, str):
            if not topic:
                raise ValueError("empty topic")
            t = topic.encode()
            if "+" in topic or "#" in topic:
                raise ValueError("wildcards are not allowed in a PUBLISH topic (MQTT-3.3.2-2)")
            if len(self._topics) >= _TOPIC_CACHE_MAX:
                self._topics.clear()
            self._topics[topic] = t
            return t
        raise TypeError("topic must be str or bytes-like")

    @micropython.native
    def _enqueue(self, t, tl, msg, pl, qos, retain, pr, prl, n):  # noalloc
        o = self._out
        if qos and o.held >= self._qos12_slots:
            raise QueueFull(ERR_FULL, "outbox full: %d messages await delivery" % o.held)
        if not qos and (o.count - o.held >= o.nslots - self._qos12_slots or o.nbytes0 + n > self._qos0_bytes):
            # QoS 0 waits only in room of its own: it never takes a place a
            # QoS 1/2 message is promised (outbox_size).
            self.stats_counters["dropped_qos0"] += 1
            return None
        off = o.reserve(n)
        if off < 0:
            if not qos:
                self.stats_counters["dropped_qos0"] += 1
                return None
            raise QueueFull(ERR_FULL, "outbox full: no room for %d more bytes (outbox_bytes)" % n)
        if qos and self._persist and self._state_size() + n + 9 > self._store_cap:
            raise StoreFull(ERR_FULL, "flash store full: the session state would exceed %d bytes"
                            % self._store_cap)
        pid = self._pids.next(self._in_use) if qos else 0
        codec.encode_publish(o.arena, off, t, tl, msg, pl, qos, retain, 0, pid, pr, prl, self._version)
        o.add(off, n, pid, qos, time.ticks_ms(), self._msg_expiry(pr) if prl else 0)
        if qos and self._persist:
            try:
                self._store.out_publish(o.arena, off, n, pid)   # on flash before the wire
            except Exception as e:
                o.unadd()
                raise e
        if self._connected:
            self._drain()
        return pid or None

    def _msg_expiry(self, pr):
        # MQTT 5 Message Expiry Interval in an encoded property block, or 0.
        # Cached by identity, so a constant props block costs nothing.
        if pr is self._exp_props:
            return self._exp_value
        b = bytearray(4 + len(pr))
        e = codec.put_varint(b, 0, len(pr))
        b[e:e + len(pr)] = pr
        d, _ = codec.decode_props(b, 0, e + len(pr), False)
        self._exp_props = pr
        self._exp_value = d.get(codec.P_MESSAGE_EXPIRY, 0)
        return self._exp_value

    @micropython.native
    def _drain(self):  # noalloc
        """Send what the window allows, in order: queued PUBLISH, owed PUBREL.
        Consecutive queued packets lie next to each other in the arena and
        go out in one write (a burst after a window of PUBACKs, or the
        resend after a reconnect, costs one system call, not one each)."""
        o = self._out
        st = o.state
        run = -1          # arena offset of packets marked sent, not yet written
        end = 0
        try:
            while self._connected and o.send < o.count:
                i = o.index(o.send)
                s = st[i]
                kind = s & 0x0F
                pid = o.pid[i]
                if (kind == QUEUED and pid and o.inflight < self._window
                        and not (o.expiry[i] and self._expired(i)) and self._fits_broker(i)):
                    off = o.off[i]
                    if s & F_DUP:
                        o.arena[off] |= FLAG_DUP                # MQTT-3.3.1-1
                    if run >= 0 and off != end:
                        self._send(o.arena, run, end - run)
                        run = -1
                    if run < 0:
                        run = off
                    end = off + o.len[i]
                    st[i] = SENT
                    o.inflight += 1
                    self.stats_counters["sent"] += 1
                    o.send += 1
                    continue
                if run >= 0:
                    self._send(o.arena, run, end - run)
                    run = -1
                if kind == RELEASE:
                    if s & F_REL_DUE:
                        self._send_ack(PUBREL, pid, 0)
                        st[i] = RELEASE
                elif kind == QUEUED:
                    o.send += 1
                    if pid:
                        if o.inflight >= self._window:
                            o.send -= 1
                            self._release_beyond()
                            return
                        if o.expiry[i] and self._expired(i):
                            self._drop_expired(i)
                        else:
                            self._refuse_queued(i)              # over the broker's limits
                        continue
                    if not (o.expiry[i] and self._expired(i)):
                        self._send(o.arena, o.off[i], o.len[i])
                        self.stats_counters["sent"] += 1
                    o.sent_qos0(i)
                    continue
                o.send += 1
            if run >= 0:
                self._send(o.arena, run, end - run)
        except OSError as e:
            self._link_failed(e)

    def _release_beyond(self):
        # The window blocks the next PUBLISH; PUBRELs owed further on use no
        # quota and must not wait behind it (MQTT-4.4.0-1 after a reconnect
        # with a smaller Receive Maximum).
        o = self._out
        st = o.state
        for k in range(o.send + 1, o.count):
            i = o.index(k)
            if st[i] == RELEASE | F_REL_DUE:
                self._send_ack(PUBREL, o.pid[i], 0)
                st[i] = RELEASE

    def _fits_broker(self, i):  # noalloc
        o = self._out
        return o.len[i] <= self._max_out and (o.arena[o.off[i]] >> 1) & 3 <= self._max_qos

    def _refuse_queued(self, i):
        # Accepted before this broker's Maximum Packet Size / Maximum QoS was
        # known (MQTT-3.2.2-15, -11): it can never be sent; complete it as
        # refused, like a PUBACK >= 0x80, and tell the application.
        o = self._out
        self.stats_counters["refused"] += 1
        o.inflight += 1          # it was never in flight; complete() takes one back
        self._finish(i, 0x95 if o.len[i] > self._max_out else 0x9B)

    def _finish(self, i, reason):  # noalloc
        """A QoS 1/2 message leaves the session: PUBACK, PUBCOMP, a refusal
        (>= 0x80, MQTT-4.4.0-2), expiry. Logged lazily, reported to the
        front end, and its window place is given to the next message once
        every packet already received is handled."""
        o = self._out
        pid = o.pid[i]
        o.complete(i)
        if self._persist:
            self._store.out_acked(pid)
        if self._on_done:
            self._on_done(pid, reason)
        self._drain_due = True

    def _expired(self, i):
        return time.ticks_diff(time.ticks_ms(), self._out.stamp[i]) >= self._out.expiry[i] * 1000

    def _drop_expired(self, i):
        o = self._out
        pid = o.pid[i]
        self.stats_counters["dropped_expired"] += 1
        if pid:
            o.inflight += 1        # it was never in flight; complete() takes one back
            self._finish(i, 0)
        else:
            o.sent_qos0(i)

    def _send(self, buf, off, n):  # noalloc
        self._net.write(buf, off, n, self.timeout_ms)
        self._last_tx = time.ticks_ms()

    @micropython.native
    def _send_ack(self, kind, pid, reason):  # noalloc
        end = codec.encode_ack(self._tx, 0, kind, pid, reason, self._version)
        self._send(self._tx, 0, end)

    # ------------------------------------------------------------ subscribe
    def subscribe(self, topic, qos=0, *, no_local=False, retain_as_published=False,
                  retain_handling=0, sub_id=0):
        if qos not in (0, 1, 2):
            raise ValueError("qos must be 0, 1 or 2")
        f = _to_bytes(topic)
        if not f:
            raise ValueError("empty topic filter")
        opts = qos
        if self._version == 5:
            opts |= (4 if no_local else 0) | (8 if retain_as_published else 0) | ((retain_handling & 3) << 4)
        elif no_local or retain_as_published or retain_handling or sub_id:
            raise ValueError("subscription options need MQTT 5")
        return self._subscribe(f, opts, sub_id)

    def _subscribe(self, f, opts, sid):
        self._need_link()
        pid = self._pids.next(self._in_use)
        props = codec.encode_props({codec.P_SUBSCRIPTION_ID: sid}) if sid else b""
        n = codec.encode_subscribe(self._tx, pid, [(f, opts)], self._version, props)
        code = self._request(pid, n, SUBACK)
        if code >= 0x80:
            raise ConnectRefused(code, "broker refused the subscription to %r: %s"
                                 % (f, codec.reason_text(code, 5)))
        subs = [s for s in self._subs if s[0] != f]
        subs.append((f, opts, sid))
        self._set_subs(subs)
        self._checkpoint()
        return code

    def unsubscribe(self, topic):
        f = _to_bytes(topic)
        self._need_link()
        pid = self._pids.next(self._in_use)
        n = codec.encode_unsubscribe(self._tx, pid, [f], self._version)
        self._request(pid, n, UNSUBACK)
        self._set_subs([s for s in self._subs if s[0] != f])
        self._checkpoint()

    def _request(self, pid, n, want):
        """Send a SUBSCRIBE/UNSUBSCRIBE and handle packets until its ack."""
        self._sub_pid = pid
        self._sub_result = -1
        self._sub_kind = want
        try:
            self._send(self._tx, 0, n)
            deadline = time.ticks_add(time.ticks_ms(), self.timeout_ms)
            while self._sub_result < 0:
                left = time.ticks_diff(deadline, time.ticks_ms())
                if left <= 0:
                    raise Timeout(ERR_TIMEOUT, "no %s within %d ms" % ("SUBACK" if want == SUBACK else "UNSUBACK",
                                                                      self.timeout_ms))
                self.wait_msg(left)
        except OSError as e:
            if self._connected:
                self._link_failed(e)
            self._pending_exc = None
            raise
        except BaseException:
            self._sub_stale = pid     # e.g. the message callback raised meanwhile
            raise
        finally:
            self._sub_pid = 0
        return self._sub_result

    def _need_link(self):
        if self._pending_exc is not None:
            e = self._pending_exc
            self._pending_exc = None
            raise e
        if not self._connected:
            raise NotConnected(ERR_NOT_CONNECTED, "not connected: call connect() first")

    # ------------------------------------------------------------ receiving
    @micropython.native
    def check_msg(self):  # noalloc
        self._need_link()
        try:
            while self._connected:
                kind = self._read_packet()
                if not kind:
                    break
            self._keepalive()
        except OSError as e:
            self._link_failed(e)
            self._need_link()
        if self._drain_due:
            self._drain_due = False
            self._drain()
        self._report_oversize()

    @micropython.native
    def wait_msg(self, timeout_ms=None):  # noalloc
        self._need_link()
        deadline = time.ticks_add(time.ticks_ms(), timeout_ms) if timeout_ms is not None else 0
        kind = None
        try:
            while True:
                k = self._read_packet()
                if k:
                    kind = k
                    self._keepalive()
                    break
                if not self._connected:
                    self._need_link()
                wait = self._keepalive()
                if timeout_ms is not None:
                    left = time.ticks_diff(deadline, time.ticks_ms())
                    if left <= 0:
                        break
                    if wait < 0 or left < wait:
                        wait = left
                self._net.wait_readable(wait)
        except OSError as e:
            self._link_failed(e)
            self._need_link()
        if self._drain_due:
            self._drain_due = False
            self._drain()
        self._report_oversize()      # outside the try: the link stays up
        return kind

    def _report_oversize(self):
        if self._oversize:
            n = self._oversize
            self._oversize = 0
            raise PacketTooLarge(ERR_TOO_LARGE, "dropped an incoming PUBLISH of %d bytes: larger than buf_size %d"
                                 % (n, self.buf_size))

    @micropython.native
    def ping(self):
        self._need_link()
        try:
            self._net.write(self._tx, 0, codec.encode_pingreq(self._tx, 0), self.timeout_ms)
            now = time.ticks_ms()
            self._last_tx = now
            if not self._ping_out:
                self._ping_out = True
                self._ping_at = now
        except OSError as e:
            self._link_failed(e)
            self._need_link()

    @micropython.native
    def _keepalive(self):  # noalloc
        """Ping when idle; a PINGRESP overdue by half the keepalive means a
        dead link (a black-holed TCP connection never errors by itself).
        Returns ms until the next keepalive action, or -1 for none."""
        st = self._store
        if st is not None and st.fill:
            st.tick()                      # batched mode: write the batch when due
        ka = self._ka_ms
        if not ka:
            return -1
        now = time.ticks_ms()
        half = ka >> 1
        if self._ping_out:
            late = time.ticks_diff(now, self._ping_at)
            if late >= half:
                raise Timeout(ERR_TIMEOUT, "no PINGRESP within %d ms: link is dead" % half)
            return half - late
        idle = max(time.ticks_diff(now, self._last_tx), time.ticks_diff(now, self._last_rx))
        if idle >= half:
            self._send(self._tx, 0, codec.encode_pingreq(self._tx, 0))
            self._ping_out = True
            self._ping_at = now
            return half
        return half - idle

    def _keepalive_wait_ms(self):
        """ms until the keepalive needs attention (front ends sleep that
        long at most); 1000 when there is no keepalive."""
        w = self._keepalive()
        return 1000 if w < 0 else max(1, w)

    def _rview(self, off, n):  # noalloc after first sight of (off, n)
        key = (off << 20) | n
        v = self._views.get(key)
        if v is None:
            if len(self._views) >= _VIEW_CACHE_MAX:
                self._views.clear()
            v = memoryview(self._rx)[off:off + n]
            self._views[key] = v
        return v

    @micropython.native
    def _read_packet(self):  # noalloc
        """Advance the reader with what the socket has; when a whole packet
        is in, handle it and return its type, else return 0."""
        net = self._net
        if self._rs == _R_HEAD:
            # Read up to 5 bytes at once: the fixed header and, for the
            # small packets that dominate (PUBACK is 4 bytes), the body too.
            # Bytes past this packet stay in hdr as the start of the next.
            hdr = self._hdr
            got = self._carry
            h = _header_length(hdr, got)
            while not h:
                r = net.read_into(self._hdrv[got], _HDR_MAX - got)
                if not r:
                    self._carry = got
                    return 0
                got += r
                h = _header_length(hdr, got)
            self._last_rx = time.ticks_ms()
            self._rfirst = hdr[0]
            self._inc.value = 0
            codec.get_varint(hdr, 1, h, self._inc)
            rl = self._rlen = self._inc.value
            extra = got - h                     # bytes of the body (or beyond) already here
            take = extra if extra < rl else rl
            rx = self._rx
            for k in range(take):
                rx[k] = hdr[h + k]
            left = extra - take                 # bytes of the next packet
            for k in range(left):
                hdr[k] = hdr[h + take + k]
            self._carry = left
            self._rgot = take
            if h + rl > self.buf_size:
                if self._rfirst & 0xF0 != PUBLISH:
                    raise PacketTooLarge(ERR_TOO_LARGE, "incoming packet type 0x%02x of %d bytes exceeds buf_size %d"
                                         % (self._rfirst, h + rl, self.buf_size))
                self._rs = _R_DRAIN
                self._drain_left = rl
                self._oversize = h + rl
            elif take < rl:
                self._rs = _R_BODY
            else:
                self._rgot = 0
                return self._dispatch()
        if self._rs == _R_BODY:
            got = self._rgot
            while got < self._rlen:
                r = net.read_into(self._rx if not got else self._rview(got, self.buf_size - got), self._rlen - got)
                if not r:
                    self._rgot = got
                    return 0
                got += r
            self._rgot = 0
            self._rs = _R_HEAD
            self._last_rx = time.ticks_ms()
            return self._dispatch()
        # _R_DRAIN: an oversize PUBLISH. Keep its first buf_size bytes (topic
        # and packet id), discard the rest in buf_size chunks.
        while self._drain_left:
            first = self._rlen == self._drain_left
            got = self._rgot
            if first:
                chunk = min(self.buf_size, self._drain_left)
                r = net.read_into(self._rx if not got else self._rview(got, self.buf_size - got), chunk - got)
                if not r:
                    self._rgot = got
                    return 0
                got += r
                if got < chunk:
                    self._rgot = got
                    continue
                self._rgot = 0
                self._drain_left -= chunk
                self._drain_pid = 0
                if (self._rfirst >> 1) & 3 and chunk >= 4:
                    tl = codec.get_u16(self._rx, 0)
                    if 2 + tl + 2 <= chunk:
                        self._drain_pid = codec.get_u16(self._rx, 2 + tl)
                continue
            r = net.read_into(self._rx, min(self.buf_size, self._drain_left))
            if not r:
                return 0
            self._drain_left -= r
        self._rs = _R_HEAD
        self._last_rx = time.ticks_ms()
        self._refuse_oversize()
        return PUBLISH

    def _refuse_oversize(self):
        # Acknowledge so the broker does not resend it forever, deliver nothing.
        # (The packet id was taken from the first chunk: the drain has
        # overwritten the buffer since.)
        qos = (self._rfirst >> 1) & 3
        self.stats_counters["oversize_in"] += 1
        pid = self._drain_pid
        if qos and pid:
            reason = 0x97 if self._version == 5 else 0     # quota exceeded
            if qos == 1:
                self._send_ack(PUBACK, pid, reason)
            elif reason:
                self._send_ack(PUBREC, pid, reason)
            else:
                self._rx2.add(pid)
                self._send_ack(PUBREC, pid, 0)

    @micropython.native
    def _dispatch(self):  # noalloc
        first = self._rfirst
        kind = first & 0xF0
        n = self._rlen
        rx = self._rx
        v = self._version
        if kind != PUBLISH and first & 0x0F != codec.expected_flags(kind):
            raise ProtocolError(ERR_PROTOCOL, "packet type 0x%02x with reserved flags 0x%x" % (kind, first & 0xF))
        if kind == PUBLISH:
            self._on_publish(first, n)
        elif kind == PUBACK:
            self._on_puback(codec.parse_ack(rx, n, v), codec.ack_reason(rx, n))
        elif kind == PUBREC:
            self._on_pubrec(codec.parse_ack(rx, n, v), codec.ack_reason(rx, n))
        elif kind == (PUBREL & 0xF0):
            self._on_pubrel(codec.parse_ack(rx, n, v))
        elif kind == PUBCOMP:
            self._on_pubcomp(codec.parse_ack(rx, n, v))
        elif kind == SUBACK or kind == UNSUBACK:
            self._on_suback(kind, n)
        elif kind == PINGRESP:
            self._ping_out = False
        elif kind == CONNACK:
            if not self._in_connect:
                self._unexpected(kind)
        elif kind == DISCONNECT and v == 5:
            self._on_disconnect(n)
        else:
            self._unexpected(kind)
        return kind

    def _unexpected(self, kind):
        raise ProtocolError(ERR_PROTOCOL, "unexpected packet type 0x%02x from the broker" % kind)

    def _on_disconnect(self, n):
        code = self._rx[0] if n else 0
        text = codec.reason_text(code, 5)
        if n > 1:
            props, _ = codec.decode_props(self._rx, 1, n)
            if "reason_string" in props:
                text += " (%s)" % props["reason_string"]
        raise PeerClosed(code, "broker sent DISCONNECT: " + text)

    @micropython.native
    def _on_publish(self, first, n):  # noalloc
        inc = self._inc
        codec.parse_publish(self._rx, n, first & 0x0F, self._version, inc)
        if inc.topic_alias:
            # We announce Topic Alias Maximum 0, so the broker may not use one.
            raise ProtocolError(0x94, "broker used a topic alias though the client allows none")
        qos = inc.qos
        pid = inc.pid
        self.stats_counters["received"] += 1
        if qos == 2:
            if self._rx2.has(pid):                         # MQTT-4.3.3-10
                self.stats_counters["dup_in"] += 1
                self._send_ack(PUBREC, pid, 0)
                return
            if self._rx2.n >= self._rx2.size:
                raise ProtocolError(0x93, "broker has more than %d QoS 2 messages unreleased (receive_max=%d)"
                                    % (self._rx2.size, self.receive_max))
        self._deliver(inc)
        if qos == 1:
            self._send_ack(PUBACK, pid, 0)
        elif qos == 2:
            self._rx2.add(pid)
            if self._persist:
                self._store.in_qos2(pid)     # after delivery: the duplicate window, see docs
            self._send_ack(PUBREC, pid, 0)

    @micropython.native
    def _deliver(self, inc):
        cb = self._cb
        if cb is None:
            return
        topic = self._rview(inc.topic_off, inc.topic_len)
        msg = self._rview(inc.payload_off, inc.payload_len)
        if self._cb_props:
            props = None
            if self._version == 5:
                props, _ = codec.decode_props(self._rx, inc.props_off, inc.payload_off)
            cb(topic, msg, bool(inc.retain), inc.qos, props)
        else:
            cb(topic, msg, bool(inc.retain), inc.qos)

    def _on_puback(self, pid, reason):  # noalloc
        o = self._out
        i = o.find(pid, SENT)
        if i < 0:
            raise ProtocolError(ERR_PROTOCOL, "PUBACK for packet id %d, which is not awaiting one" % pid)
        if reason >= 0x80:                                  # MQTT-4.4.0-2: acknowledged, not resent
            self.stats_counters["refused"] += 1
        self.stats_counters["acked"] += 1
        self._finish(i, reason)

    def _on_pubrec(self, pid, reason):  # noalloc
        o = self._out
        i = o.find(pid, SENT)
        if i < 0:
            if o.find(pid, RELEASE) >= 0:                  # a repeated PUBREC: PUBREL again
                self._send_ack(PUBREL, pid, 0)
                return
            if self._version == 5:
                self._send_ack(PUBREL, pid, 0x92)          # packet identifier not found
                return
            raise ProtocolError(ERR_PROTOCOL, "PUBREC for packet id %d, which is not awaiting one" % pid)
        if reason >= 0x80:
            self.stats_counters["refused"] += 1
            self._finish(i, reason)
            return
        o.released(i)
        if self._persist:
            self._store.out_rel(pid)                        # on flash before the PUBREL
        o.state[i] = RELEASE
        self._send_ack(PUBREL, pid, 0)

    def _on_pubrel(self, pid):  # noalloc
        known = self._rx2.remove(pid)
        if known and self._persist:
            self._store.in_rel(pid)                         # on flash before the PUBCOMP
        self._send_ack(PUBCOMP, pid, 0 if known or self._version == 4 else 0x92)

    def _on_pubcomp(self, pid):  # noalloc
        o = self._out
        i = o.find(pid, RELEASE)
        if i < 0:
            return        # PUBCOMP for a PUBREL resent after a lost lazy ack
        self.stats_counters["acked"] += 1
        self._finish(i, 0)

    def _on_suback(self, kind, n):
        rx = self._rx
        pid = codec.get_u16(rx, 0) if n >= 2 else 0
        if pid and pid == self._sub_stale:
            self._sub_stale = 0       # the answer to a request an exception abandoned
            return
        if not pid or pid != self._sub_pid or kind != self._sub_kind:
            raise ProtocolError(ERR_PROTOCOL, "%s for packet id %d, which is not awaiting one"
                                % ("SUBACK" if kind == SUBACK else "UNSUBACK", pid))
        off = 2
        if self._version == 5:
            props, off = codec.decode_props(rx, 2, n)
        if kind == SUBACK:
            if off >= n:
                raise ProtocolError(ERR_PROTOCOL, "SUBACK without a return code")
            self._sub_result = rx[off]
        else:
            self._sub_result = rx[off] if off < n else 0

    # ------------------------------------------------------------ figures
    def stats(self):
        d = dict(self.stats_counters)
        d["pending"] = self._out.held
        d["queued"] = self._out.count - self._out.inflight
        d["inflight"] = self._out.inflight
        if self._store:
            d["store_appends"] = self._store.appends
            d["store_checkpoints"] = self._store.checkpoints
            b = self._backend
            for k in ("bytes_written", "bytes_programmed", "erases"):
                if hasattr(b, k):
                    d["flash_" + k] = getattr(b, k)
        return d
