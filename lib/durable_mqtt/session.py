# The client's half of an MQTT session and the rules that change it.
# Sans-IO: no socket, no store, no clock. A front end feeds it decoded
# events and the time, and does what it returns: packets encoded into the
# front end's transmit buffer (or already encoded in the outbox), records to
# put on flash *before* those packets are sent (`rec`), messages that left
# the session (`done_pid`), messages to deliver.
#
# Rules (MQTT 3.1.1 / 5.0 statements about the client):
# - MQTT-2.2.1-3 / 2.3.1-2: a new packet id is non-zero and not in use; the
#   counter wraps 65535 -> 1 and skips ids still held.
# - MQTT-3.2.2-1: Session Present after a clean start is a protocol error.
# - MQTT-3.2.2-4: Session Present 1 while the client holds no state (MQTT 5,
#   clean start not asked): the client closes the connection.
# - MQTT-3.2.2-5 / 3.1.2-6: Session Present 0, or a clean start: no state
#   of the old session is reused. Accepted messages are not dropped: they go
#   out again as new PUBLISH (DUP 0) with their ids (API.md).
# - MQTT-4.4.0-1: on resume, unacknowledged PUBLISH are resent with DUP=1
#   (MQTT-3.3.1-1) and their original ids, and PUBREL too, in the original
#   order (MQTT-4.6.0-1); never at any other time.
# - MQTT-4.3.3-6 (3.1.1: 4.3.3-2): once PUBREC arrived the PUBLISH is never
#   sent again, only its PUBREL.
# - MQTT-4.3.3-10 (3.1.1: 4.3.3-2): an incoming QoS 2 id stays recorded
#   until its PUBREL; the same PUBLISH again is acknowledged, not delivered.
# - MQTT-3.3.4-7 / 4.9.0-2: at most `window` QoS 1/2 PUBLISH unacknowledged
#   (MQTT 5: the broker's Receive Maximum). PUBRELs use no quota.
# - MQTT-4.4.0-2 (MQTT 5): a PUBACK or PUBREC with a reason >= 0x80 ends
#   the message; it is not resent.
# - MQTT-3.2.2-15 / -11: a queued message larger than the broker's Maximum
#   Packet Size or above its Maximum QoS can never be sent: it ends refused.
#
# Outgoing messages live encoded, as PUBLISH packets, in one byte arena used
# as a FIFO ring, indexed by a ring of slots. Each packet has `head` bytes
# of room before it and `tail` after it, so that a store can frame it as a
# record where it lies and write it with no copy.
from array import array
from micropython import const
from time import ticks_diff

from .codec import publish_size, varint_size, put_publish, put_ack, fail
from .errors import ProtocolError, QueueFull, SessionError, ERR_FULL, ERR_SESSION

# What must reach flash before the packet just returned is sent (`rec`):
# the store writes each as a record of this type (docs/session-format.md).
OUT_PUB = const(2)       # rec_slot: a QoS 1/2 message was accepted
OUT_REL = const(4)       # rec_pid: PUBREC received, PUBREL owed
IN_QOS2 = const(5)       # rec_pid: incoming QoS 2 delivered, PUBREC owed
IN_REL = const(6)        # rec_pid: PUBREL received, id released

_PUBACK = const(0x40)
_PUBREC = const(0x50)
_PUBREL = const(0x62)
_PUBCOMP = const(0x70)

# Slot states, and flags in the same byte.
_FREE = const(0)
_QUEUED = const(1)       # accepted, not sent on this connection
_SENT = const(2)         # PUBLISH sent, awaiting PUBACK / PUBREC
_RELEASE = const(3)      # PUBREC received: awaiting PUBCOMP
_STATE = const(0x0F)
_DUP = const(0x10)       # send with DUP=1: it may have gone out before
_REL_DUE = const(0x20)   # PUBREL not yet sent on this connection


class Session:
    """slots: outbox places in all, of which qos12 are promised to QoS 1/2;
    arena_bytes: bytes for encoded packets; rx2_size: incoming QoS 2 ids
    awaiting PUBREL; head, tail: room kept around each packet."""

    def __init__(self, v5, cid, slots, qos12, arena_bytes, rx2_size, max_inflight, buf_size,
                 head=0, tail=0):
        self.v5 = v5
        self.cid = cid
        self.cid_assigned = False       # the broker assigned cid (MQTT 5)
        self.expiry = 0                 # Session Expiry Interval in s (the store keeps it)
        self.subs = []                  # [(filter, options, subscription id)]
        self.subs_len = 0               # bytes of the filters
        self.last_pid = 0
        self.has_state = False          # this client holds session state (MQTT-3.2.2-4)
        self.expired = False            # a restored state outlived its expiry interval
        self.dropped = 0                # QoS 2 messages past PUBREC the last clean start dropped
        self.max_inflight = max_inflight
        self.buf_size = buf_size
        self.limits(0, 0, 2)
        self.head = head
        self.tail = tail
        self.arena = bytearray(arena_bytes)
        self.nslots = slots
        self.qos12 = qos12
        self.qos0_bytes = arena_bytes // 5      # QoS 0 waits only in room of its own
        t = "H" if arena_bytes < 65536 else "i"
        self.pid = array("H", bytes(2 * slots))
        self.off = array(t, bytes(4 * slots))
        self.len = array(t, bytes(4 * slots))
        self.stamp = array("i", bytes(4 * slots))   # ticks_ms when accepted
        self.ttl = array("i", bytes(4 * slots))     # MQTT 5 Message Expiry in s; 0 none
        self.st = bytearray(slots)
        self.rx2 = array("H", bytes(2 * rx2_size))
        self.rx2_size = rx2_size
        self.req_pid = 0                # SUBSCRIBE / UNSUBSCRIBE awaiting its ack
        self.req_kind = 0
        self.stale_pid = 0              # one whose wait was abandoned
        self.rec = 0                    # outputs, see the top of the file
        self.rec_pid = 0
        self.rec_slot = 0
        self.done_pid = 0
        self.done_reason = 0
        self.src = None
        self.src_off = 0
        self.clear()

    def clear(self):
        """Empty outbox, no incoming QoS 2 ids."""
        self.first = 0          # ring index of the oldest slot
        self.count = 0          # slots from first, holes included
        self.send = 0           # slots from first handled on this connection
        self.inflight = 0       # SENT and RELEASE slots (the window)
        self.held = 0           # QoS 1/2 messages in the session: pending()
        self.nbytes = 0         # bytes of the QoS 1/2 packets held
        self.nbytes0 = 0        # bytes of queued QoS 0 packets
        self.a_head = 0         # arena: oldest byte in use
        self.a_tail = 0         # arena: next free byte
        self.rx2_n = 0
        for i in range(self.nslots):
            self.st[i] = _FREE

    def limits(self, receive_max, max_packet, max_qos):
        """The broker's limits from CONNACK (MQTT 5; 0: not given)."""
        w = self.max_inflight
        self.window = min(w, receive_max) if receive_max else w     # MQTT-3.3.4-7
        self.max_out = min(self.buf_size, max_packet) if max_packet else self.buf_size
        self.max_qos = max_qos

    # ------------------------------------------------------------ packet ids
    def next_pid(self):  # noalloc
        pid = self.last_pid
        for _ in range(65535):
            pid = pid + 1 if pid < 65535 else 1
            if pid != self.req_pid and self.find(pid, 0) < 0:
                self.last_pid = pid
                return pid
        raise QueueFull(ERR_FULL, "no packet id free")

    def find(self, pid, want):  # noalloc
        """Ring index of the slot holding pid in state `want` (0: any), or -1."""
        i = self.first
        for _ in range(self.count):
            s = self.st[i] & _STATE
            if self.pid[i] == pid and s and (s == want or not want):
                return i
            i = i + 1 if i + 1 < self.nslots else 0
        return -1

    def index(self, k):  # noalloc
        i = self.first + k
        return i - self.nslots if i >= self.nslots else i

    def slot(self, k):  # noalloc
        """State of the k-th slot from the oldest: 0 none, 1 a PUBLISH is
        owed (arena at off[i]), 3 a PUBREL is owed (the store's view)."""
        i = self.index(k)
        s = self.st[i] & _STATE
        return 0 if not s or not self.pid[i] else 3 if s == _RELEASE else 1

    # ------------------------------------------------------------ outbox
    def accept(self, topic, tl, msg, pl, qos, retain, props, prl, now, ttl):  # noalloc
        """Encode a PUBLISH into the outbox. Returns its packet id (QoS 1/2),
        0 (QoS 0 queued) or -1 (QoS 0 dropped: its room is full). A QoS 1/2
        message that does not fit raises QueueFull. props: the encoded
        property block (MQTT 5) or None."""
        rl = publish_size(tl, pl, qos, prl, self.v5)
        n = 1 + varint_size(rl) + rl
        if qos:
            if self.held >= self.qos12:
                raise QueueFull(ERR_FULL, "outbox full: %d messages wait" % self.held)
        elif self.count - self.held >= self.nslots - self.qos12 or self.nbytes0 + n > self.qos0_bytes:
            return -1
        if self.count >= self.nslots:
            self._compact()
        at = self._reserve(self.head + n + self.tail)
        if at < 0:
            if not qos:
                return -1
            raise QueueFull(ERR_FULL, "outbox full: no room for %d more bytes (outbox_bytes)" % n)
        pid = self.next_pid() if qos else 0
        off = at + self.head
        p = put_publish(self.arena, off, 0x30 | qos << 1 | retain, rl, topic, tl, pid, props, prl)
        self.arena[p:p + pl] = msg
        i = self.index(self.count)
        self.pid[i] = pid
        self.off[i] = off
        self.len[i] = n
        self.stamp[i] = now
        self.ttl[i] = ttl
        self.st[i] = _QUEUED
        self.count += 1
        self.a_tail = off + n + self.tail
        if qos:
            self.held += 1
            self.nbytes += n
            self.rec = OUT_PUB
            self.rec_slot = i
        else:
            self.nbytes0 += n
        return pid

    def unaccept(self):  # noalloc
        """Take back the newest message (its record could not be stored)."""
        self.count -= 1
        i = self.index(self.count)
        if self.pid[i]:
            self.held -= 1
            self.nbytes -= self.len[i]
        else:
            self.nbytes0 -= self.len[i]
        self.st[i] = _FREE
        self.a_tail = self.off[i] - self.head
        self._trim()

    def _compact(self):  # noalloc
        # Squeeze out the slots freed behind an older message still held (a
        # QoS 2 awaiting PUBCOMP while later QoS 1 were acknowledged).
        src = dst = self.first
        kept = 0
        send = self.send
        for k in range(self.count):
            if self.st[src]:
                if dst != src:
                    self.pid[dst] = self.pid[src]
                    self.off[dst] = self.off[src]
                    self.len[dst] = self.len[src]
                    self.stamp[dst] = self.stamp[src]
                    self.ttl[dst] = self.ttl[src]
                    self.st[dst] = self.st[src]
                    self.st[src] = _FREE
                dst = dst + 1 if dst + 1 < self.nslots else 0
                kept += 1
            elif k < self.send:
                send -= 1
            src = src + 1 if src + 1 < self.nslots else 0
        self.count = kept
        self.send = send

    def _reserve(self, n):  # noalloc
        # Arena offset for n bytes, or -1. A packet never wraps round the end.
        if self.count >= self.nslots:
            return -1
        if not (self.nbytes or self.nbytes0):
            self.a_head = self.a_tail = 0
        h = self.a_head
        t = self.a_tail
        if t >= h:
            if t + n <= len(self.arena):
                return t
            return 0 if n < h else -1
        return t if t + n < h else -1

    def _trim(self):  # noalloc
        # Drop freed slots at the front; the arena is used from the oldest
        # packet still held.
        while self.count and not self.st[self.first]:
            self.first = self.first + 1 if self.first + 1 < self.nslots else 0
            self.count -= 1
            if self.send:
                self.send -= 1
        i = self.first
        for _ in range(self.count):
            if self.len[i]:
                self.a_head = self.off[i] - self.head
                return
            i = i + 1 if i + 1 < self.nslots else 0
        self.a_head = self.a_tail = 0

    def _drop_bytes(self, i):  # noalloc
        if self.pid[i]:
            self.nbytes -= self.len[i]
        else:
            self.nbytes0 -= self.len[i]
        self.len[i] = 0

    def _finish(self, i, reason):  # noalloc
        # A QoS 1/2 message leaves the session: PUBACK, PUBCOMP, a refusal,
        # expiry. The front end logs done_pid (lazily) and reports it.
        self._drop_bytes(i)
        if self.st[i] & _STATE != _QUEUED:
            self.inflight -= 1
        self.st[i] = _FREE
        self.held -= 1
        self.done_pid = self.pid[i]
        self.done_reason = reason
        self._trim()

    def next_out(self, now, tx):  # noalloc
        """The next packet to send, in order, as the window allows. Returns
        n > 0: send n bytes of self.src from self.src_off; -1: a message
        left the session unsent (expired or over the broker's limits; see
        done_pid); 0: nothing to send now."""
        while self.send < self.count:
            i = self.index(self.send)
            s = self.st[i]
            k = s & _STATE
            if k == _QUEUED:
                pid = self.pid[i]
                if pid and self.inflight >= self.window:
                    return self._release_beyond(tx)
                self.send += 1
                if self.ttl[i] and ticks_diff(now, self.stamp[i]) >= self.ttl[i] * 1000:
                    if pid:
                        self._finish(i, -1)                 # expired (MQTT 5 Message Expiry)
                        return -1
                    self._drop_bytes(i)
                    self.st[i] = _FREE
                    self._trim()
                    continue
                off = self.off[i]
                n = self.len[i]
                self.src = self.arena
                self.src_off = off
                if not pid:
                    self._drop_bytes(i)             # QoS 0: gone once written
                    self.st[i] = _FREE
                    self._trim()
                    return n
                if n > self.max_out or (self.arena[off] >> 1) & 3 > self.max_qos:
                    self._finish(i, 0x95 if n > self.max_out else 0x9B)
                    return -1
                if s & _DUP:
                    self.arena[off] |= 0x08             # MQTT-3.3.1-1
                self.st[i] = _SENT
                self.inflight += 1
                return n
            self.send += 1
            if k == _RELEASE and s & _REL_DUE:
                self.st[i] = _RELEASE
                self.src = tx
                self.src_off = 0
                return put_ack(tx, _PUBREL, self.pid[i], 0)
        return 0

    def _release_beyond(self, tx):  # noalloc
        # The window blocks the next PUBLISH; a PUBREL owed further on uses
        # no quota and must not wait behind it (MQTT-4.4.0-1 after a
        # reconnect with a smaller Receive Maximum).
        for k in range(self.send + 1, self.count):
            i = self.index(k)
            if self.st[i] == _RELEASE | _REL_DUE:
                self.st[i] = _RELEASE
                self.src = tx
                self.src_off = 0
                return put_ack(tx, _PUBREL, self.pid[i], 0)
        return 0

    # ------------------------------------------------------------ acknowledgements
    def puback(self, pid, reason):  # noalloc
        i = self.find(pid, _SENT)
        if i < 0:
            fail("PUBACK for packet id %d, not awaiting one" % pid)
        self._finish(i, reason)

    def pubrec(self, pid, reason, tx):  # noalloc
        """Returns the bytes of the PUBREL to send (after rec reached flash)."""
        i = self.find(pid, _SENT)
        if i < 0:
            if self.find(pid, _RELEASE) >= 0:           # a repeated PUBREC: PUBREL again
                return put_ack(tx, _PUBREL, pid, 0)
            if self.v5:
                return put_ack(tx, _PUBREL, pid, 0x92)  # packet identifier not found
            fail("PUBREC for packet id %d, not awaiting one" % pid)
        if reason >= 0x80:                               # MQTT-4.4.0-2
            self._finish(i, reason)
            return 0
        self._drop_bytes(i)                              # MQTT-4.3.3-6: never the PUBLISH again
        self.st[i] = _RELEASE
        self._trim()
        self.rec = OUT_REL
        self.rec_pid = pid
        return put_ack(tx, _PUBREL, pid, 0)

    def pubcomp(self, pid):  # noalloc
        i = self.find(pid, _RELEASE)
        if i >= 0:            # else: for a PUBREL resent after a lost lazy ack
            self._finish(i, 0)

    # ------------------------------------------------------------ incoming QoS 2
    def rx2_index(self, pid):  # noalloc
        for k in range(self.rx2_n):
            if self.rx2[k] == pid:
                return k
        return -1

    def incoming(self, qos, pid):  # noalloc
        """A PUBLISH arrived: True to deliver it, False for a QoS 2 id
        delivered before and not yet released (MQTT-4.3.3-10)."""
        if qos == 2:
            if self.rx2_index(pid) >= 0:
                return False
            if self.rx2_n >= self.rx2_size:
                raise ProtocolError(0x93, "more than %d QoS 2 messages unreleased" % self.rx2_size)
        return True

    def ack_incoming(self, qos, pid, reason, tx):  # noalloc
        """The acknowledgement of an incoming PUBLISH, after delivery. QoS 2
        records the id first (rec): delivered once, ever."""
        if qos == 1:
            return put_ack(tx, _PUBACK, pid, reason)
        if qos == 2:
            if not reason and self.rx2_index(pid) < 0 and self.rx2_n < self.rx2_size:
                self.rx2[self.rx2_n] = pid
                self.rx2_n += 1
                self.rec = IN_QOS2
                self.rec_pid = pid
            return put_ack(tx, _PUBREC, pid, reason)
        return 0

    def pubrel(self, pid, tx):  # noalloc
        k = self.rx2_index(pid)
        if k >= 0:
            self.rx2_n -= 1
            self.rx2[k] = self.rx2[self.rx2_n]
            self.rec = IN_REL
            self.rec_pid = pid
        return put_ack(tx, _PUBCOMP, pid, 0x92 if k < 0 and self.v5 else 0)

    # ------------------------------------------------------------ subscriptions
    def request(self, kind):
        """A packet id for a SUBSCRIBE (kind: the ack awaited) or UNSUBSCRIBE."""
        self.req_pid = 0
        pid = self.next_pid()
        self.req_pid = pid
        self.req_kind = kind
        return pid

    def abandon(self):
        """The wait for the request's answer ended without it."""
        self.stale_pid = self.req_pid
        self.req_pid = 0

    def answer(self, kind, pid):
        """A SUBACK / UNSUBACK: True when it is the one awaited, False for
        the late answer to an abandoned request."""
        if pid and pid == self.stale_pid:
            self.stale_pid = 0
            return False
        if not pid or pid != self.req_pid or kind != self.req_kind:
            fail("%sACK for packet id %d, not awaiting one" % ("SUB" if kind == 0x90 else "UNSUB", pid))
        self.req_pid = 0
        return True

    def subscribed(self, f, opts, sid):
        self.unsubscribed(f)
        self.subs.append((f, opts, sid))
        self.subs_len += len(f)

    def unsubscribed(self, f):
        for k in range(len(self.subs)):
            if self.subs[k][0] == f:
                self.subs_len -= len(f)
                del self.subs[k]
                return

    # ------------------------------------------------------------ connection
    def connected(self, sp, clean):
        """Session Present against what this client holds, after CONNACK.
        Returns "resumed", "lost" or "new"; raises SessionError when the
        connection must close (MQTT-3.2.2-4)."""
        if clean:
            if sp:
                fail("Session Present after a clean start (MQTT-3.2.2-1)")
        elif sp and not self.has_state and self.v5:
            raise SessionError(ERR_SESSION, "broker has a session the client holds no state for "
                               "(MQTT-3.2.2-4): connect clean")
        ev = "new"
        if sp:
            self._resume()
            ev = "resumed"
        else:
            if self.has_state and not clean:
                ev = "lost"                             # MQTT-3.2.2-5
            self.start_clean()
        self.has_state = True
        return ev

    def start_clean(self):
        """No state of an old session is reused (MQTT-3.1.2-6): incoming
        QoS 2 ids are dropped; accepted messages go out as new PUBLISH with
        DUP 0 and their ids; a QoS 2 message past PUBREC was received by the
        old session and is dropped. Returns how many were dropped."""
        self.rx2_n = 0
        self.has_state = False
        dropped = 0
        i = self.first
        for _ in range(self.count):
            s = self.st[i] & _STATE
            if s == _SENT or s == _QUEUED:
                self.st[i] = _QUEUED
                self.arena[self.off[i]] &= 0xF7
            elif s == _RELEASE:
                self.st[i] = _FREE
                self.held -= 1
                dropped += 1
            i = i + 1 if i + 1 < self.nslots else 0
        self.send = 0
        self.inflight = 0
        self._trim()
        self.dropped = dropped
        return dropped

    def _resume(self):
        # MQTT-4.4.0-1: everything in flight is owed again, in order.
        i = self.first
        for _ in range(self.count):
            s = self.st[i] & _STATE
            if s == _SENT:
                self.st[i] = _QUEUED | _DUP
            elif s == _RELEASE:
                self.st[i] = _RELEASE | _REL_DUE
            i = i + 1 if i + 1 < self.nslots else 0
        self.send = 0
        self.inflight = 0
        i = self.first
        for _ in range(self.count):
            if self.st[i] & _STATE == _RELEASE:
                self.inflight += 1
            i = i + 1 if i + 1 < self.nslots else 0

    # ------------------------------------------------------------ restore
    def restore(self, st, now, now_min):
        """Replace the state with a stored one (st: version, client_id,
        assigned, expiry, offline, saved_min, next_pid, subs, out [(pid,
        packet or None for a PUBREL owed)], in_qos2). Raises ValueError,
        changing nothing, when it is not this client's or does not fit."""
        if (st.version == 5) != self.v5:
            raise ValueError("session is for another MQTT version")
        if st.assigned:
            if self.cid and self.cid != st.client_id:
                raise ValueError("session belongs to client id %r" % st.client_id)
        elif st.client_id != self.cid:
            raise ValueError("session belongs to client id %r" % st.client_id)
        need = 0
        for _, pkt in st.out:
            if pkt:
                if len(pkt) > self.buf_size:
                    raise ValueError("stored packet larger than buf_size")
                need += self.head + len(pkt) + self.tail
        if len(st.out) > self.qos12 or need > len(self.arena) or len(st.in_qos2) > self.rx2_size:
            raise ValueError("stored session larger than this client's outbox")
        # Saved at DISCONNECT (the broker's expiry clock starts there) longer
        # ago than the expiry: the broker has dropped it. The next connect
        # starts clean; the messages are kept and go out as new ones. A state
        # saved while connected is never judged: a power cut has no time.
        self.expired = bool(st.offline and st.saved_min and now_min and st.expiry != 0xFFFFFFFF
                            and now_min - st.saved_min > (st.expiry + 59) // 60)
        self.clear()
        for pid, pkt in st.out:
            if pkt:
                n = len(pkt)
                off = self.a_tail + self.head
                self.arena[off:off + n] = pkt
                self.arena[off] &= 0xF7
                self.a_tail = off + n + self.tail
                self.nbytes += n
            else:
                off = n = 0
            i = self.count
            self.pid[i] = pid
            self.off[i] = off
            self.len[i] = n
            self.stamp[i] = now
            self.ttl[i] = 0
            self.st[i] = _QUEUED | _DUP if n else _RELEASE | _REL_DUE
            self.count += 1
            self.held += 1
        for pid in st.in_qos2:
            self.rx2[self.rx2_n] = pid
            self.rx2_n += 1
        self.subs = []
        self.subs_len = 0
        for f, opts, sid in st.subs:
            self.subscribed(f, opts, sid)
        self.last_pid = st.next_pid
        self.cid = st.client_id
        self.cid_assigned = st.assigned
        self.expiry = st.expiry
        self.has_state = True
