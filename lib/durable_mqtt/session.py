# The client's half of an MQTT session and the rules that change it.
# Sans-IO: no socket, no store, no clock. A front end feeds it decoded
# events and the time, and does what it returns: packets encoded into the
# front end's transmit buffer (or already encoded in the outbox), a record
# to put on flash *before* that packet is sent (`rec`), a message that left
# the session (`done_pid`), whether to deliver an incoming message.
#
# Rules (MQTT 3.1.1 / 5.0 statements about the client):
# - MQTT-2.2.1-3 / 2.3.1-2: a new packet id is non-zero and not in use; the
#   counter wraps 65535 -> 1 and skips ids still held, and those of
#   requests abandoned whose late answer may still come.
# - MQTT-3.2.2-1: Session Present after a clean start is a protocol error.
# - MQTT-3.2.2-4: Session Present 1 while the client holds no state (MQTT 5,
#   no clean start asked): the client closes the connection.
# - MQTT-3.2.2-5 / 3.1.2-6: Session Present 0, or a clean start: no state
#   of the old session is reused. Accepted messages are not dropped: they go
#   out again as new PUBLISH (DUP 0) with their ids (API.md).
# - MQTT-4.4.0-1: on resume, unacknowledged PUBLISH are resent with DUP=1
#   (MQTT-3.3.1-1) and their original ids, and PUBREL too, in the original
#   order (MQTT-4.6.0-1); never at any other time.
# - MQTT-4.3.3-6 (3.1.1: 4.3.3-2): once PUBREC arrived the PUBLISH is never
#   sent again, only its PUBREL.
# - MQTT-4.3.3-10 (3.1.1: 4.3.3-2): an incoming QoS 2 id stays recorded
#   until its PUBREL; the same PUBLISH again is acknowledged, not delivered,
#   with PUBREC 0 even when it is refused now: after PUBREC >= 0x80 the id
#   would be a new message's (MQTT-4.3.3-9).
# - MQTT-3.3.4-7 / 4.9.0-2: at most `window` QoS 1/2 PUBLISH unacknowledged
#   (MQTT 5: the broker's Receive Maximum). PUBRELs use no quota.
# - MQTT-4.4.0-2 (MQTT 5): a PUBACK or PUBREC with a reason >= 0x80 ends
#   the message; it is not resent.
# - MQTT-3.2.2-15 / -11 / -14: a queued message larger than the broker's
#   Maximum Packet Size, above its Maximum QoS or retained when Retain
#   Available is 0 can never be sent: it ends refused.
# - MQTT-3.3.2-5 (MQTT 5 Message Expiry): a message that waited longer than
#   its expiry before it could be sent is dropped unsent.
#
# Outgoing messages live encoded, as PUBLISH packets, in one byte arena used
# as a FIFO ring (a packet never wraps round its end), indexed by a ring of
# slots, so sending one is a write from the arena: nothing is copied.
#
# What runs once per client, connection or request is in modules of its own,
# functions of the engine, loaded for the call and not kept (client.unload):
# sizing.py (the set-up: Session() and a restored state's sizes), connack.py
# (Session Present: MQTT-3.2.2-1, -4, -5, 4.4.0-1; the clean start),
# subs.py (the requests' ids and answers, the subscription list).
from micropython import const
from time import ticks_add, ticks_diff
# The builtins accept() and _reserve() calls per message, as globals of this module:
# found in its dict, not after a miss there and a search of the builtins.
from builtins import len

from .codec import publish_size, varint_size, put_publish, put_ack, fail
from .errors import QueueFull, said

expiry = None                # MQTT 5: props.expiry, set by the first version 5 Session

_ERR_FULL = const(-7)
_STALE = const(4)        # ids of abandoned requests kept in use, at most (subs.py's)

# What must reach flash before the packet just returned is sent (`rec`).
# The store writes each as a record of this type (docs/session-format.md),
# named as the stores name them (one name per kind on a board that compiles .py).
_R_OUT_PUB = const(2)    # rec_slot: a QoS 1/2 message was accepted (rec_pid: the id counter before)
_R_OUT_REL = const(4)    # rec_pid: PUBREC received, PUBREL owed
_R_IN_QOS2 = const(5)    # rec_pid: incoming QoS 2 delivered, PUBREC owed
_R_IN_REL = const(6)     # rec_pid: PUBREL received, the id released

_PUBACK = const(0x40)
_PUBREC = const(0x50)
_PUBREL = const(0x62)    # PUBREL carries flags 0b0010 (MQTT-3.6.1-1)
_PUBCOMP = const(0x70)

# Slot states, with flags in the same byte.
_FREE = const(0)
_QUEUED = const(1)       # accepted, not sent on this connection
_SENT = const(2)         # PUBLISH sent, awaiting PUBACK / PUBREC
_RELEASE = const(3)      # PUBREC received: awaiting PUBCOMP
_STATE = const(0x0F)
_DUP = const(0x10)       # send with DUP=1: it may have gone out before
_REL_DUE = const(0x20)   # PUBREL not yet sent on this connection


class Session:
    # slots: outbox places in all, of which qos12 are promised to QoS 1/2;
    # arena: bytes for the encoded packets; rx2: incoming QoS 2 ids awaiting
    # PUBREL; window: QoS 1/2 messages in flight at most; max_out: the
    # largest packet (buf_size).

    # True while the subscriptions of a session the broker lost are not all
    # made again (connect.py); stored with the state. A class attribute
    # until set: the instance dict of the hot path stays as small.
    resub_owed = False
    # The requests sent whose wait was abandoned, oldest first (the first
    # stale_n, at most _STALE), as (id, filter, options, subscription id):
    # their ids in use until their late answer (subs.py). Made at the
    # first such request: a class attribute until then.
    stale_ids = None

    def __init__(self, v5, cid, slots, qos12, arena, rx2, window, max_out):
        # The attributes and tables: sizing.setup(), run once per client
        # and not kept (client.unload).
        if v5:
            global expiry
            from .props import expiry     # Message Expiry's rule, with no import per message
        from .sizing import setup
        setup(self, v5, cid, slots, qos12, arena, rx2, window, max_out)

    def limits(self, receive_max, max_packet, max_qos, retain):
        # The broker's limits from CONNACK (MQTT 5; 0: not given, but
        # retain 0: Retain Available 0).
        w = self.max_inflight
        self.window = min(w, receive_max) if receive_max else w      # MQTT-3.3.4-7
        self.max_out = min(self.buf_size, max_packet) if max_packet else self.buf_size
        self.max_qos = max_qos
        self.retain = retain

    # ------------------------------------------------------------ slots
    def _free_run(self, pid):  # noalloc
        # The first id at or after pid (not wrapping past 65535) in use by a
        # held slot or the request awaiting its ack; 65536 when none is.
        end = self.req_pid if self.req_pid >= pid else 65536
        i = self.first
        for _ in range(self.count):
            p = self.pid[i]
            if self.st[i] & _STATE and pid <= p < end:
                end = p
            i = i + 1 if i + 1 < self.nslots else 0
        for i in range(self.stale_n if self.stale_n < _STALE else _STALE):
            p = self.stale_ids[i][0]
            if pid <= p < end:
                end = p
        return end

    def find(self, pid, state):  # noalloc
        # Ring index of the slot holding pid in state `state` (0: any), or -1.
        i = self.first
        for _ in range(self.count):
            s = self.st[i] & _STATE
            if s and self.pid[i] == pid and (s == state or not state):
                return i
            i = i + 1 if i + 1 < self.nslots else 0
        return -1

    def index(self, k):  # noalloc
        i = self.first + k
        return i - self.nslots if i >= self.nslots else i

    def slot(self, k):  # noalloc
        # What the k-th slot from the oldest holds, as the store sees it:
        # 0 nothing, 1 a PUBLISH owed (arena at off[i]), 3 a PUBREL owed.
        i = self.index(k)
        s = self.st[i] & _STATE
        return 0 if not s or not self.pid[i] else 3 if s == _RELEASE else 1

    # ------------------------------------------------------------ outbox
    def accept(self, topic, msg, qos, retain, props, now, ttl, rl=0):  # noalloc
        # Encode a PUBLISH into the outbox. Returns its packet id (QoS 1/2),
        # 0 (QoS 0 queued) or -1 (QoS 0 dropped: its room is full). A QoS 1/2
        # message that does not fit raises QueueFull. props: the encoded
        # property block (MQTT 5) or None; ttl: Message Expiry in s, or 0;
        # rl: the PUBLISH's Remaining Length if the caller has it already
        # (publish() does: its size checks), else 0.
        if not rl:
            rl = publish_size(len(topic), len(msg), qos, len(props) if props else 0, self.v5)
        n = rl + 2 if rl < 128 else 1 + varint_size(rl) + rl   # (varint_size inline below 128: a call less)
        if qos:
            if self.held >= self.qos12:
                raise QueueFull(_ERR_FULL, said((27, self.held)))  # outbox full: %d messages
        elif self.n0 >= self.nslots - self.qos12 or self.nbytes0 + n > self.qos0_bytes:
            return -1
        off = _reserve(self, n)
        if off < 0:
            if not qos:
                return -1
            raise QueueFull(_ERR_FULL, said((28, n)))  # outbox full: no room for %d bytes (outbox_bytes)
        pid = next_pid(self) if qos else 0
        p = put_publish(self.arena, off, 0x30 | qos << 1 | retain, rl, topic, pid, props)
        self.arena[p:p + len(msg)] = msg
        # (ticks_ms differences hold about 6 days: a longer expiry is none)
        i = _slot(self, pid, off, n, ticks_add(now, ttl * 1000) | 1 if 0 < ttl < 500000 else 0)
        if qos:
            # The id is taken only now: a topic or payload the arena cannot
            # copy (a memoryview of an array("H")) raised ValueError above.
            # The counter it leaves waits in rec_pid (an _R_OUT_PUB record
            # has none) for unaccept() to put back.
            self.rec_pid = self.last_pid
            self.last_pid = pid
            self.rec = _R_OUT_PUB
            self.rec_slot = i
        return pid

    def stored(self, pid, pkt):
        # Append a message read back from flash (load.py): a PUBLISH to
        # resend with DUP=1 (MQTT-4.4.0-1), or, for pkt None, a PUBREL owed.
        n = len(pkt) if pkt else 0
        off = self.a_tail
        self.run_pid = 0                # its id may lie in the free run
        if n:
            self.arena[off:off + n] = pkt
            self.arena[off] &= 0xF7
        _slot(self, pid, off, n, 0)
        if n:
            self.st[self.index(self.count - 1)] = _QUEUED | _DUP
        else:
            self.rel_due = True         # a PUBREL owed (pubrec() moves one that is not)

    def unaccept(self):  # noalloc
        # Take back the newest message (its record could not be stored;
        # right after its accept()): the id counter is back where it was
        # (the id less 1 was not, when the id had skipped ids in use).
        self.count -= 1
        i = self.index(self.count)
        self.held -= 1
        self.last_pid = self.rec_pid
        _free(self, i)
        self.a_tail = self.off[i]
        trim(self)

    def _compact(self):  # noalloc
        # Squeeze out slots freed behind an older message still held (a QoS 2
        # awaiting PUBCOMP while later QoS 1 were acknowledged).
        src = dst = self.first
        count = 0
        sent = self.send
        for k in range(self.count):
            if self.st[src]:
                if dst != src:
                    self.pid[dst] = self.pid[src]
                    self.off[dst] = self.off[src]
                    self.len[dst] = self.len[src]
                    self.dl[dst] = self.dl[src]
                    self.st[dst] = self.st[src]
                    self.st[src] = _FREE
                dst = dst + 1 if dst + 1 < self.nslots else 0
                count += 1
            elif k < sent:
                self.send -= 1
            src = src + 1 if src + 1 < self.nslots else 0
        self.count = count

    def pending_out(self):  # noalloc
        # Is anything left to send on this connection (a queued PUBLISH, an
        # owed PUBREL)? next_out() may still hold it back (the window).
        return self.send < self.count

    def next_out(self, now, tx):  # noalloc
        # The next packet to send, in order, as the window allows. Returns
        # n > 0: send n bytes of self.src from self.src_off; -1: a message
        # left the session unsent (see done_pid); 0: nothing to send now.
        # (Within 11 words of frame: no heap frame for a call per message.)
        while self.send < self.count:
            i = self.first + self.send         # (index(), inline: once per message)
            if i >= self.nslots:
                i -= self.nslots
            s = self.st[i]
            if s & _STATE == _QUEUED:
                pid = self.pid[i]
                if pid and self.inflight >= self.window:
                    return self._release_beyond(tx)
                if self.dl[i] and ticks_diff(now, self.dl[i]) < 0:
                    expiry(self, i, now)       # (first: should it fail, this one is still next)
                self.send += 1
                if self.dl[i] and ticks_diff(now, self.dl[i]) >= 0:        # MQTT-3.3.2-5
                    if pid:
                        _finish(self, i, -1)
                        return -1
                    _free(self, i)             # (QoS 0: done_pid 0, counted by the front end)
                    trim(self)
                    self.done_pid = 0
                    self.done_reason = -1
                    return -1
                self.src = self.arena
                self.src_off = self.off[i]
                if not pid:
                    return self._qos0_out(i)
                r = _limit(self, i)
                if r:                          # the broker's limits forbid it: it leaves the session
                    _finish(self, i, r)
                    return -1
                if s & _DUP:
                    self.arena[self.src_off] |= 0x08    # MQTT-3.3.1-1
                self.dl[i] = 0                 # sent: no expiry any more (MQTT-4.3.3-7)
                self.st[i] = _SENT
                self.inflight += 1
                return self.len[i]
            self.send += 1
            if s == _RELEASE | _REL_DUE:
                return self._pubrel(i, tx)
        return 0

    def _qos0_out(self, i):  # noalloc
        # A QoS 0 packet is gone from the outbox once written; its length,
        # or -1 (done_pid 0) when the broker's limits refuse it: queued
        # while the link was down, it is dropped.
        n = self.len[i]
        r = _limit(self, i)
        _free(self, i)
        trim(self)
        if r:
            self.done_pid = 0
            self.done_reason = r
            return -1
        return n

    def _release_beyond(self, tx):  # noalloc
        # The window blocks the next PUBLISH; a PUBREL owed further on uses no
        # quota and must not wait behind it (MQTT-4.4.0-1 after a reconnect
        # with a smaller Receive Maximum).
        if self.rel_due:
            for k in range(self.send + 1, self.count):
                i = self.index(k)
                if self.st[i] == _RELEASE | _REL_DUE:
                    return self._pubrel(i, tx)
            self.rel_due = False    # none owed past send; earlier ones are sent in order
        return 0

    def _pubrel(self, i, tx):  # noalloc
        self.st[i] = _RELEASE
        self.src = tx
        self.src_off = 0
        return put_ack(tx, _PUBREL, self.pid[i], 0)

    # ------------------------------------------------------------ acknowledgements
    def puback(self, pid, reason):  # noalloc
        i = self.find(pid, _SENT)
        if i < 0 or (self.arena[self.off[i]] & 6) != 2:
            fail((16, pid), 0x82)  # PUBACK for packet id %d, not awaiting one
        _finish(self, i, reason & 0x80 and reason)    # below 0x80 (0x10 no subscribers): acknowledged, 0

    def pubrec(self, pid, reason, tx):  # noalloc
        # Returns the bytes of the PUBREL in tx (send after rec is stored).
        i = self.find(pid, _SENT)
        if i < 0 or (self.arena[self.off[i]] & 6) != 4:
            if self.find(pid, _RELEASE) >= 0:            # a repeated PUBREC: PUBREL again
                return put_ack(tx, _PUBREL, pid, 0)
            if self.v5:
                return put_ack(tx, _PUBREL, pid, 0x92)   # packet identifier not found
            fail((17, pid), 0x82)  # PUBREC for packet id %d, not awaiting one
        if reason >= 0x80:                                # MQTT-4.4.0-2
            _finish(self, i, reason)
            return 0
        # MQTT-4.3.3-6: only the PUBREL now. It moves to the end, so that
        # PUBRELs go out again in the order their PUBRECs came (MQTT-4.6.0-4).
        _free(self, i)
        trim(self)
        if self.count >= self.nslots:
            self._compact()
        i = _slot(self, pid, 0, 0, 0)
        self.st[i] = _RELEASE                             # (sent now: not due)
        self.held -= 1                                    # (the same message)
        if self.send == self.count - 1:
            self.send = self.count                        # nothing before it left to send
        self.rec = _R_OUT_REL
        self.rec_pid = pid
        return put_ack(tx, _PUBREL, pid, 0)

    def pubcomp(self, pid):  # noalloc
        i = self.find(pid, _RELEASE)
        if i >= 0:          # else: for a PUBREL resent after a lost lazy ack
            _finish(self, i, 0)

    # ------------------------------------------------------------ incoming
    def rx2_index(self, pid):  # noalloc
        for k in range(self.rx2_n):
            if self.rx2[k] == pid:
                return k
        return -1

    def incoming(self, qos, pid, n=0):  # noalloc
        # A PUBLISH arrived: True to deliver it, False for a QoS 2 id
        # delivered before and not yet released (MQTT-4.3.3-10). n: QoS 2
        # ids delivered whose place in the table is still to be taken
        # (reads inside a callback: late.py).
        if qos == 2:
            if self.rx2_index(pid) >= 0:
                return False
            if self.rx2_n + n >= len(self.rx2):
                self._rx2_full()
        return True

    def _rx2_full(self):
        # More incoming QoS 2 ids unreleased than the table holds (twice
        # Receive Maximum, 64 at least). MQTT 5: more than Receive Maximum
        # (MQTT-3.3.4-9); 3.1.1 has none. mosquitto 2.0.11 passes it after a
        # reconnect that resends PUBRELs: its whole offline queue follows
        # them at once (seen: 44 unreleased against Receive Maximum 8). An
        # id forgotten before its PUBREL could let a resent PUBLISH be
        # delivered twice (MQTT-4.3.3-2), so the message is not taken: the
        # connection closes, and the next one starts with the PUBRELs that
        # free the table, then the rest again. (floods tells a reconnecting
        # front end that such a close was progress, not a failure.) This
        # raise is for reads inside a callback (late.py) and an oversize
        # PUBLISH; a read's own, inbound.incoming, reads on before it closes.
        self.floods += 1
        from .reasons import full     # (the exception, with its words: reasons.py)
        full(self)

    def ack_incoming(self, qos, pid, reason, tx):  # noalloc
        # The acknowledgement of an incoming PUBLISH, after delivery. QoS 2
        # records the id first (rec): delivered once, ever.
        if qos == 1:
            return put_ack(tx, _PUBACK, pid, reason)
        if qos:
            if self.rx2_index(pid) >= 0:
                # Delivered before, its PUBREL still to come: a duplicate,
                # acknowledged as one (MQTT-4.3.3-10) even if it is refused
                # now (oversize), since a refusal ends the message at the
                # broker, which then never releases the id (MQTT-4.3.3-9).
                reason = 0
            elif not reason:
                if self.rx2_n >= len(self.rx2):
                    self._rx2_full()      # (an oversize PUBLISH comes here without incoming())
                self.rx2[self.rx2_n] = pid
                self.rx2_n += 1
                self.rec = _R_IN_QOS2
                self.rec_pid = pid
            return put_ack(tx, _PUBREC, pid, reason)
        return 0

    def _rx2_remove(self, k):  # noalloc
        # The table stays in arrival order: the oldest first.
        self.rx2_n -= 1
        for i in range(k, self.rx2_n):
            self.rx2[i] = self.rx2[i + 1]

    def pubrel(self, pid, tx):  # noalloc
        k = self.rx2_index(pid)
        if k >= 0:
            self._rx2_remove(k)
            self.rec = _R_IN_REL
            self.rec_pid = pid
        return put_ack(tx, _PUBCOMP, pid, 0x92 if k < 0 and self.v5 else 0)

    # ------------------------------------------------------------ connection
    def connected(self, sp, clean):
        # Session Present against what this client holds, after CONNACK:
        # "resumed", "lost" or "new" (connack.py: once per connection).
        from .connack import connected
        return connected(self, sp, clean)

# ---------------------------------------------------------------- slot helpers
# Session's per-message helpers are module functions of the session (e),
# not methods: a method is looked up in the instance's dict first, about
# 50 attributes in 59 places, where a miss probes a long run before the
# class is searched; a module global is found in one lookup.


def _finish(e, i, reason):  # noalloc
    # A QoS 1/2 message leaves the session: PUBACK, PUBCOMP, a refusal,
    # expiry (-1). The front end logs done_pid (lazily) and reports it.
    if e.st[i] & _STATE != _QUEUED:
        e.inflight -= 1
    e.held -= 1
    e.done_pid = e.pid[i]
    e.done_reason = reason
    e.nbytes -= e.len[i]      # (_free() of a QoS 1/2 slot, inline: once per message)
    e.len[i] = 0
    e.st[i] = _FREE
    trim(e)


def _limit(e, i):  # noalloc
    # The MQTT 5 reason code for which the CONNACK's limits forbid
    # sending slot i's PUBLISH, or 0: Maximum Packet Size (MQTT-3.2.2-15),
    # Maximum QoS (MQTT-3.2.2-11), Retain Available (MQTT-3.2.2-14).
    first = e.arena[e.off[i]]
    return (0x95 if e.len[i] > e.max_out else 0x9B if (first >> 1) & 3 > e.max_qos
            else 0x9A if first & 1 and not e.retain else 0)


def trim(e):  # noalloc
    # Drop freed slots at the front; the arena is in use from the oldest
    # packet still held. (Public: connack.start_clean's too.)
    while e.count and not e.st[e.first]:
        e.first = e.first + 1 if e.first + 1 < e.nslots else 0
        e.count -= 1
        if e.send:
            e.send -= 1
    i = e.first
    for _ in range(e.count):
        if e.len[i]:
            e.a_head = e.off[i]
            return
        i = i + 1 if i + 1 < e.nslots else 0
    e.a_head = e.a_tail = 0


def _slot(e, pid, off, n, dl):  # noalloc
    # Append a slot for the n-byte packet at arena[off]; its index.
    i = e.first + e.count            # (index(), inline: once per message)
    if i >= e.nslots:
        i -= e.nslots
    e.pid[i] = pid
    e.off[i] = off
    e.len[i] = n
    e.dl[i] = dl
    e.st[i] = _QUEUED if n else _RELEASE | _REL_DUE
    e.count += 1
    if pid:
        e.held += 1
        e.nbytes += n
    else:
        e.nbytes0 += n
        e.n0 += 1
    if n:
        e.a_tail = off + n
    return i


def _reserve(e, n):  # noalloc
    # Arena offset for n bytes, or -1. A packet never wraps round the end.
    if e.count >= e.nslots:
        e._compact()
        if e.count >= e.nslots:
            return -1
    if not (e.nbytes or e.nbytes0):
        e.a_head = e.a_tail = 0
    h = e.a_head
    t = e.a_tail
    if t >= h:
        if t + n <= len(e.arena):
            return t
        return 0 if n < h else -1
    return t if t + n < h else -1


def next_pid(e):  # noalloc
    # Ids go round 1..65535, skipping any still in use (MQTT-2.2.1-3).
    # run_pid..run_end-1 are known free, so the slots are scanned once
    # per run of ids, not once per message. The caller sets last_pid
    # once the id is used.
    pid = e.last_pid
    for _ in range(65535):
        pid = pid + 1 if pid < 65535 else 1
        if pid != e.run_pid:
            e.run_end = e._free_run(pid)
        if pid < e.run_end:
            e.run_pid = pid + 1
            return pid
    raise QueueFull(_ERR_FULL, said(29))  # no packet id free


def _free(e, i):  # noalloc
    # Slot i holds no packet any more (its bytes are free once trimmed).
    if e.pid[i]:
        e.nbytes -= e.len[i]
    else:
        e.nbytes0 -= e.len[i]
        e.n0 -= 1
    e.len[i] = 0
    e.st[i] = _FREE
