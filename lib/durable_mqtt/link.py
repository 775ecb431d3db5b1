# The connection of an MQTTClient, per packet: reading what the broker sends
# (what each packet does is inbound.py's), acknowledgements, keepalive, and
# sending what the session lets out. Loaded at construction and kept
# (client.py explains the split); connecting, requests and disconnecting
# are connect.py's, request.py's and leave.py's.
#
# The session engine decides, this module carries out: a change the engine
# asks to keep (engine.rec) reaches flash before the packet that depends on
# it is sent (put_send). Acknowledgements wait in a small buffer and go out
# together, in order, once the socket has no more input for now or before
# any other packet: a burst of 16 PUBACKs is one write, one TCP segment.
# Paths marked `# noalloc` allocate nothing.
from time import ticks_add, ticks_diff, ticks_ms
from micropython import const
# The builtins the per-packet code calls per message, as globals of this module:
# found in its dict, not after a miss there and a search of the builtins.
from builtins import len, min

from . import codec, errors
from .errors import BAD_PACKET, PacketTooLarge, Timeout, said
from .transport import Transport  # noqa: F401  (loaded with the link; dial.connection() makes its Transport)
from .inbound import after, dispatch, done, header, more, put_send, view

_PUBACK = const(0x40)
_PUBREC = const(0x50)
_PUBREL = const(0x60)
_PINGREQ = const(0xC0)
_ERR_TIMEOUT = const(-4)
_HDR = const(16)             # bytes read for a fixed header: 4 PUBACKs, or a header and a body's start
_AHEAD = const(2)            # bytes read past a body: the next fixed header (Remaining Length < 128)
_ACKS = const(64)            # bytes of acknowledgements sent in one write (PUBACK: 4 or 5)
_BURST_MS = const(50)        # one check_msg() reads for this long at most: a flood cannot hold it
_HEAD = const(0)             # reader states (inbound.py's too)
_DRAIN = const(2)
# Counters: their index in MQTTClient.counts (client.py's _COUNTS names
# them; inbound.py counts what it receives). Private: a public const() is
# also stored in the module's globals, and every global lookup in this
# module probes a fuller dict.
_SENT = const(0)
_DROPPED_QOS0 = const(6)
# MQTT 5 reason codes a broker may put in PUBACK/PUBREC, and in PUBREL/PUBCOMP.
_RC_PUB = b"\x00\x10\x80\x83\x87\x90\x91\x97\x99"
_RC_REL = b"\x00\x92"


class Link:
    # check_msg() stopped at its budget (a flood): input may wait in hdr. A
    # class attribute until a flood sets it: an instance attribute more
    # makes every method lookup on the link probe a fuller dict (+1.5% of
    # the instructions per QoS 1 publish, callgrind).
    cut = False
    # The first exception the message callback raised, kept until the call
    # that was reading ends (incoming(), after()). A class attribute, as cut.
    cb_error = None
    # Incoming QoS 2 messages not taken for want of room in the table of
    # unreleased ids (inbound.incoming): the link closes once no more input
    # waits (idle()). A class attribute, as cut.
    floods = 0
    # AsyncClient's link (gentle): send_out() writes a packet only when the
    # socket has room, so a congested link never holds the event loop; it
    # sets full when it left output for the front end to send once there is
    # room. Class attributes, as cut.
    gentle = False
    full = False
    # The outbox waits: set by connect.py from the CONNACK to the end of
    # the connect, and after it while a front end's subscriptions go first
    # (holds_outbox(): RobustClient / AsyncClient then call release()).
    # Meanwhile send_out() sends nothing and a QoS 0 publish() is queued.
    # Cost, callgrind, QoS 1 publish: +1,244 instructions a message for
    # its checks; the deleted entry stays in the link's dict as a marker
    # that lookups of absent names probe past, as they would an entry
    # (+980). Together +1.8%: docs/benchmarks.md still has it above peers.
    held = False
    # The acknowledgements held until messages() hands the copies out
    # (later.py): a list once AsyncClient queues one. A class attribute, as cut.
    later = None

    def __init__(self, c):
        # Made at client c's first connect (MQTTClient.connection()); the
        # buffers and the state: dial.py's, run once per client.
        from .dial import connection
        connection(self, c)

    def drop(self, bad=False):  # noalloc
        # Close the connection; the next one starts with a fresh reader.
        # bad: a packet the broker sent is malformed or breaks the protocol
        # (errors.BAD_PACKET was raised): the connection closes (MQTT-4.8.0-1;
        # MQTT 5, 4.13.1), after the acknowledgements owed (MQTT-4.5.0-2)
        # and, MQTT 5, a DISCONNECT with the reason code (leave.refuse).
        # errors.why < 0: a close of this client's own with no reason code
        # to send (reasons.full): the acknowledgements owed go all the same.
        if (bad or errors.why < 0) and self.connected:
            from .leave import refuse
            refuse(self)
        errors.why = 0          # (refuse() took it; a link already down: it meant nothing)
        self.connected = False
        self.net.close()
        self.ping_at = -1                    # ticks_ms of the PINGREQ awaiting its PINGRESP
        self.rs = _HEAD
        self.pos = self.end = 0  # hdr[pos:end]: read, not yet handled
        self.got = self.rlen = self.first = self.left = 0
        self.owed = 0           # bytes of acknowledgements waiting in acks
        self.dry = False        # the last read took less than asked: the socket had no more
        if self.held:
            del self.held       # (back to the class default: see held)

    def failed(self, exc):  # noalloc
        # The first failure is kept; the next call that needs the link raises it.
        if self.failure is None:
            self.failure = exc
        self.drop(isinstance(exc, BAD_PACKET))

    def send(self, buf, off, n):  # noalloc
        if self.owed:
            self.flush()                 # acknowledgements first: the order read is the order sent
        self.net.write(buf, off, n, self.c.timeout_ms)
        self.last_tx = ticks_ms()

    def owe(self, tx, n):  # noalloc
        # The n-byte acknowledgement at tx[0] joins those waiting in acks.
        if self.owed + n > _ACKS:
            self.flush()
        a = self.owed
        self.owed = a + n
        for k in range(n):
            self.acks[a + k] = tx[k]

    def flush(self):  # noalloc
        n = self.owed
        self.owed = 0
        self.net.write(self.acks, 0, n, self.c.timeout_ms)
        self.last_tx = ticks_ms()

    # ------------------------------------------------------------ sending
    def publish0(self, t, msg, retain, rl, pr, n):  # noalloc
        # A QoS 0 PUBLISH straight out of tx, never queued; True (not sent)
        # while QoS 0 messages queued while down still wait (behind the
        # window): the caller queues this one after them, so that a topic's
        # messages leave in the order published. (The test is here, not in
        # publish(): "n0" at import crossed a qstr pool, 2.3 KB more heap.)
        if self.engine.n0:
            return True
        tx = self.tx
        p = codec.put_publish(tx, 0, 0x30 | retain, rl, t, 0, pr)
        tx[p:p + len(msg)] = msg
        try:
            self.send(tx, 0, n)
            self.counts[_SENT] += 1
        except OSError as x:
            # The link just broke: a QoS 0 message is lost (counted); the
            # error comes from the next check_msg() / wait_msg().
            self.failed(x)
            self.counts[_DROPPED_QOS0] += 1

    def drain(self):  # noalloc
        # Send what the session lets out now: queued PUBLISH, owed PUBREL;
        # a failure is kept (failed()).
        try:
            self.send_out()
        except OSError as x:
            self.failed(x)

    def release(self):
        # The hold is over (held): the outbox goes now.
        if self.held:
            del self.held
        self.drain()

    def send_out(self):  # noalloc
        # drain() without the handler, which takes a heap frame: publish()
        # calls this in its own, on the heap anyway.
        if self.held:
            return
        e = self.engine
        while self.connected and e.send < e.count:     # (e.pending_out(), inline)
            if self.gentle and not self.net.room():
                self.full = True
                return
            n = e.next_out(ticks_ms(), self.tx)
            if n > 0:
                if e.src is e.arena and not e.arena[e.src_off] & 6:
                    # QoS 0, no longer in the outbox: counted dropped until
                    # written (a failed write is not retried: at most once,
                    # MQTT 4.3.1). (A count, not a flag: no name more.)
                    self.counts[_DROPPED_QOS0] += 1
                # (send(), inline: a call fewer per message)
                if self.owed:
                    self.flush()     # acknowledgements first
                self.net.write(e.src, e.src_off, n, self.c.timeout_ms)
                self.last_tx = ticks_ms()
                if e.src is e.arena:
                    self.counts[_SENT] += 1      # (written: a write that failed sent nothing)
                    if not e.arena[e.src_off] & 6:
                        self.counts[_DROPPED_QOS0] -= 1
            elif n:
                done(self)
            else:
                return

    # ------------------------------------------------------------ receiving
    def check_msg(self):  # noalloc
        # (MQTTClient.check_msg() raised any failure kept before it called
        # this; one kept during this call, e.g. a callback's publish() that
        # could not write, is the first and is raised instead, as failed()
        # and need_link() would. A handler without "as x" keeps the frame
        # within 11 words, off the heap.)
        try:
            start = ticks_ms()
            if self.cut:
                self.cut = False
            while self.connected and self.read():
                if self.dry and not self.end:
                    if self.owed:       # (idle(), inline: once per call)
                        self.flush()
                    break   # that read emptied the socket: no call just to hear "nothing yet"
                # Everything already received is handled, unless a broker
                # sending without pause keeps the socket full past _BURST_MS.
                if ticks_diff(ticks_ms(), start) >= _BURST_MS:
                    self.cut = True
                    self.idle()
                    break
            if self.ka_ms:                  # (no call with keepalive off, the default)
                self.keepalive()
        except BAD_PACKET:
            # (A clause of its own: "as x" would take this frame from the
            # heap; errors.why holds the reason code.)
            self.drop(True)
            if self.failure is not None:
                self.c.need_link()
            raise
        except OSError:
            self.drop()
            if self.failure is not None:
                self.c.need_link()      # raises that one, and clears it
            raise
        after(self)

    def wait_msg(self, timeout_ms):  # noalloc
        deadline = ticks_add(ticks_ms(), timeout_ms or 0)
        kind = None
        try:
            while True:
                k = self.read()
                if k:
                    kind = k
                    # A packet just came: keepalive() can only have a PINGREQ
                    # to send, when the client has sent nothing for half the
                    # keepalive (a flood of input): no call unless it is due.
                    if self.ka_ms and ticks_diff(ticks_ms(), self.last_tx) >= self.ka_ms >> 1:
                        self.keepalive()
                    # The acknowledgements owed go now, unless more input is
                    # already waiting: the caller comes back for it, and the
                    # next packets' acknowledgements join them in one write.
                    if self.owed and not self.end and (self.dry or not self.net.wait(0)):
                        self.flush()
                    break
                wait = self.keepalive() if self.ka_ms else -1    # (no call with keepalive off)
                if not self.connected:
                    self.c.need_link()
                if timeout_ms is not None:
                    left = ticks_diff(deadline, ticks_ms())
                    if left <= 0:
                        break
                    wait = left if wait < 0 or left < wait else wait
                self.net.wait(self.c.due(wait))
        except OSError as x:
            self.failed(x)
            self.c.need_link()
        after(self)
        return kind

    def report(self):
        # What the reads met besides packets: the link's failure first (it
        # failed meanwhile: a callback's publish() could not write), then
        # the callback's error, which waits for the next connection only
        # behind such a failure. A link the application closed itself (the
        # callback called disconnect() or close()) has none: the error is
        # this call's, not a later connection's.
        if not self.connected and self.failure is not None:
            self.c.need_link()      # raises it, and clears it
        x = self.cb_error
        if x is not None:
            self.cb_error = None
            raise x

    def ping(self):
        try:
            self.ping_now()
        except OSError as x:
            self.failed(x)
            self.c.need_link()

    def ping_now(self):  # noalloc
        tx = self.tx
        tx[0] = _PINGREQ
        tx[1] = 0
        self.send(tx, 0, 2)
        if self.ping_at < 0:
            self.ping_at = self.net.moved = self.last_tx

    def keepalive(self):  # noalloc
        # Ping when idle half the keepalive; a PINGRESP half a keepalive late
        # means a dead link (a black-holed TCP connection never errors by
        # itself). Returns ms until the next keepalive action, -1 for none.
        # The PINGREQ waits behind what was sent before it, up to a socket's
        # send room of data: on a slow link (5 KB/s: over a second) its
        # PINGRESP came late and a link that was moving all along was
        # dropped. So the wait counts from the latest of: the PINGREQ; the
        # last time the socket took data again after it was full (net.moved,
        # set to the PINGREQ's time when it goes: the broker's TCP
        # acknowledged data; or part of a packet read, read() and
        # oversize.drain()); the last packet read (the broker answers).
        # A dead link does neither: no packet comes, and the socket takes
        # no more data once its send room is full.
        limit = self.ka_ms >> 1
        if not limit or not self.connected:
            return -1
        now = ticks_ms()
        if self.ping_at >= 0:
            late = ticks_diff(now, self.net.moved)
            idle = ticks_diff(now, self.last_rx)
            if 0 <= idle < late:
                late = idle
            if late >= limit:
                raise Timeout(_ERR_TIMEOUT, said((26, limit)))  # no PINGRESP in %d ms: link dead
            return limit - late
        idle = max(ticks_diff(now, self.last_tx), ticks_diff(now, self.last_rx))
        if idle >= limit:
            self.ping_now()
            return limit
        return limit - idle

    def keepalive_wait(self):
        w = self.keepalive()
        return 1000 if w < 0 else max(1, w)

    def read(self):  # noalloc
        # Advance the reader with what the socket has; when a whole packet
        # is in, handle it and return its type, else 0 (the acknowledgements
        # owed are sent then: no more input now).
        if self.rs == _HEAD:
            # The next fixed header, from what an earlier read left in hdr
            # or from one read of up to _HDR bytes: a burst of
            # acknowledgements (4 bytes each) comes in a few reads, not one
            # each. (end 0: hdr is empty, nothing to look at before reading)
            h = self.end and codec.header_length(self.hdr, self.pos, self.end) or more(self)
            if not h:
                return self.idle()      # no whole header yet
            header(self, h)
        if self.rs == _DRAIN:
            return self.drain_big() or self.idle()
        got = self.got
        while got < self.rlen:
            # The rest of the body and the next packet's fixed header (hdr
            # is empty: header() took all of it; rx has room: a fixed header
            # and this body fit it): in a stream of messages one read each,
            # straight into rx, and wait_msg() needs no poll to know that
            # more input waits.
            h = self.rlen - got + _AHEAD
            r = self.net.read_into(view(self, got, len(self.rx) - got) if got else self.rx, h)
            if not r:
                if got > self.got:
                    # Part of a packet came: the link lives (a PINGRESP may
                    # wait behind a large packet on a slow link). A sign of
                    # life for keepalive() (net.moved), not a packet read:
                    # when to ping stays as it was.
                    self.net.moved = ticks_ms()
                self.got = got
                return self.idle()
            self.dry = r < h
            got += r
        h = self.rlen
        if got > h:
            # The next packet's first bytes came too: to hdr (two copied,
            # end says how many count).
            self.end = got - h
            r = self.rx
            got = self.hdr
            got[0] = r[h]
            got[1] = r[h + 1]
        self.last_rx = ticks_ms()
        return dispatch(self)

    def drain_big(self):  # noalloc once loaded
        # (Here, not in read(): one more local there gave read() a heap frame.)
        from .oversize import drain   # (an oversize PUBLISH, rare: loaded at the first, and kept)
        return drain(self)

    def idle(self):  # noalloc
        if self.owed:
            self.flush()
        if self.floods:              # (QoS 2 not taken: inbound.incoming)
            from .reasons import full
            full(self.engine, self)
        return 0

    def oversized(self, n, left):
        # An incoming packet of n bytes does not fit rx (oversize.py).
        from .oversize import oversized
        oversized(self, n, left)

    def disconnected(self):
        # MQTT 5: the broker closes the connection with a reason (reasons.py).
        from .reasons import disconnected
        disconnected(self)

    def ack(self, kind):  # noalloc
        e = self.engine
        pid = codec.parse_ack(self.rx, self.rlen, self.c.v5)
        r = self.reason(kind) if self.rlen > 2 else 0
        if kind == _PUBACK:
            e.puback(pid, r)
        elif kind == _PUBREC:
            r = e.pubrec(pid, r, self.tx)    # r: the PUBREL's length now (no new local: 11 words)
            put_send(self, r)
        elif kind == _PUBREL:
            r = e.pubrel(pid, self.tx)
            put_send(self, r)
        else:
            e.pubcomp(pid)
        if e.done_pid:
            done(self)

    def reason(self, kind):  # noalloc
        # MQTT 5: the reason code of an acknowledgement, checked, and its
        # properties, if any.
        rx = self.rx
        r = rx[2]
        if r not in (_RC_PUB if kind < _PUBREL else _RC_REL):
            codec.fail((19, r), 0x82)  # reason code 0x%02x not allowed here
        if self.rlen > 3:
            self.c.props.check(rx, 3, self.rlen, 4, self.box)
        return r
