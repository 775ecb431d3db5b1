# The packets the broker sends, once link.Link.read() has one whole in its
# buffer: the fixed header read, the dispatch by type, an incoming PUBLISH
# checked and delivered, and the acknowledgements and packets the session
# engine returns put out (put_send: what the engine asks to keep reaches
# flash first). Split from link.py, which drives it, so that a board that
# compiles the .py compiles two halves one after the other, not one parse
# tree of both (docs/benchmarks.md). Resident, like link.py.
# Paths marked `# noalloc` allocate nothing.
from micropython import const
# The builtins the per-packet code calls per message, as globals of this module.
from builtins import len, min

from . import codec
from .errors import PacketTooLarge

_CONNACK = const(0x20)
_PUBLISH = const(0x30)
_PUBACK = const(0x40)
_PUBREL = const(0x60)
_PUBCOMP = const(0x70)
_PINGRESP = const(0xD0)
_SUBACK = const(0x90)
_UNSUBACK = const(0xB0)
_DISCONNECT = const(0xE0)
_ERR_TOO_LARGE = const(-3)
_HDR = const(16)             # bytes read for a fixed header: 4 PUBACKs, or a header and a body's start
_ACKS = const(64)            # link.py's acknowledgement buffer
_VIEWS = const(24)           # views of the receive buffer kept for callbacks
_HEAD = const(0)             # reader states (link.py's)
_BODY = const(1)
# Counters: their index in MQTTClient.counts (link.py's numbering)
_ACKED = const(1)
_REFUSED = const(2)
_EXPIRED = const(3)
_RECEIVED = const(4)
_DUP_IN = const(5)
_DROPPED_QOS0 = const(6)


def _copy(dst, src, pos, n):  # noalloc
    # dst[0:n] = src[pos:pos+n] (dst may be src: pos >= 0), without a
    # slice's copy.
    for k in range(n):
        dst[k] = src[pos + k]


# ---------------------------------------------------------------- per packet
# The reader's steps are module functions of the link, not methods: a
# method is looked up in the link's instance dict first (32 attributes in
# 37 places: a miss probes to the end of a run) and then in the class; a
# module global is one lookup. Link's methods (link.py) are what the
# client and the once-per-connection modules call.


def more(link):  # noalloc
    # Reads until hdr holds a whole fixed header; its length, or 0.
    hdr = link.hdr
    pos = link.pos
    end = link.end
    if pos:                      # part of a header (< 5 bytes) moves to the front
        end -= pos
        _copy(hdr, hdr, pos, end)
        link.pos = 0
    while True:
        r = link.net.read_into(link.hdrv[end], _HDR - end)
        if not r:
            link.end = end
            return 0
        link.dry = r < _HDR - end
        end += r
        link.end = end
        h = codec.header_length(hdr, 0, end)
        if h:
            return h


def header(link, h):  # noalloc
    # Takes the h-byte fixed header at hdr[pos]; the body bytes that came
    # with it go to rx, the rest wait in hdr[pos:end].
    pos = link.pos
    hdr = link.hdr
    link.first = hdr[pos]
    # (a one-byte Remaining Length, below 0x80, is its own value)
    link.rlen = hdr[pos + 1] if h == 2 else codec.remaining_length(hdr, pos, h)
    pos += h
    n = link.got = min(link.end - pos, link.rlen)
    # (_copy() inline, once per packet; link.rlen, not a local: the
    # frame stays within 11 words)
    if pos + n == _HDR and pos < 5:
        link.rx[0:n] = link.hdrv[pos]     # the rest of a full hdr: one copy in C
    else:
        for k in range(n):
            link.rx[k] = hdr[pos + k]
    pos += n
    if pos == link.end:
        pos = link.end = 0
    link.pos = pos
    link.rs = _BODY
    if h + link.rlen > len(link.rx):
        link.oversized(h + link.rlen, link.rlen - n)


def dispatch(link):  # noalloc
    first = link.first
    kind = first & 0xF0
    link.rs = _HEAD
    if first & 0x0F != (2 if kind == _PUBREL else 0) and kind != _PUBLISH:
        # (The first byte of a connection, so: no MQTT broker, perhaps, an
        # HTTP server, a proxy or a captive portal; "reserved flags" told
        # nobody that.)
        if link.in_connect:
            codec.fail((33, first), 0x82)  # the first byte, 0x%02x, is no CONNACK: is there an MQTT broker on that port?
        codec.fail((12, first & 15, kind))  # reserved flags 0x%x in packet type 0x%02x
    if (kind == _CONNACK) != link.in_connect:
        codec.fail((13, kind, "before" if link.in_connect else "after"), 0x82)  # packet type 0x%02x %s CONNACK
    if kind == _PUBLISH:
        incoming(link)
    elif _PUBACK <= kind <= _PUBCOMP:
        link.ack(kind)
    elif kind == _PINGRESP:
        if link.rlen:                # it has none (3.13.1): Malformed, 0x81
            codec.fail((14, link.rlen))  # PINGRESP with a %d-byte body
        link.ping_at = -1
    elif kind == _CONNACK:
        from .connack import connack     # (loaded: this is connect()'s time)
        connack(link.c, link.rlen)
    elif kind == _SUBACK or kind == _UNSUBACK:
        from .request import ack
        ack(link.c, kind, link.rlen)
    elif kind == _DISCONNECT and link.c.v5:
        link.disconnected()
    else:
        codec.fail((15, kind), 0x82)  # unexpected packet type 0x%02x
    return kind


def done(link):  # noalloc
    # A QoS 1/2 message left the session: logged lazily, reported; its
    # window place goes to the next one once the reads are handled.
    c = link.c
    e = link.engine
    pid = e.done_pid
    r = e.done_reason
    if not pid:                      # a queued QoS 0 message expired (-1) or the broker's limits refuse
        link.counts[_EXPIRED if r < 0 else _DROPPED_QOS0] += 1
        return
    e.done_pid = 0
    link.counts[_REFUSED if r >= 0x80 else _EXPIRED if r < 0 else _ACKED] += 1
    if c.persist:
        c.journal.acked(pid)
    if c.on_done:
        c.on_done(pid, r)
    link.due = True


def after(link):  # noalloc
    # After reading: the window places freed go to the next messages, the
    # store writes what is due (client.tick); a callback's error or an
    # oversize PUBLISH dropped is raised, with the link up.
    if link.due:
        link.due = False
        e = link.engine
        # (e.pending_out(), inline; drain() takes a heap frame: a try block)
        if e.send < e.count:
            link.drain()
    j = link.c.journal
    if j is not None and (j.nacks or j.nbatch or j.behind):
        link.c.tick()                # (its write error: raised, or RobustClient's to report)
    if link.cb_error is not None or not link.connected:
        link.report()
    if link.oversize:
        n = link.oversize
        link.oversize = 0
        raise PacketTooLarge(_ERR_TOO_LARGE, "dropped an incoming PUBLISH of %d bytes: buf_size is %d"
                             % (n, link.c.buf_size))


def incoming(link):  # noalloc
    c = link.c
    box = link.box
    rx = link.rx
    n = link.rlen
    codec.parse_publish(rx, n, link.first & 0x0F, c.v5, box)
    if c.v5:
        c.props.incoming(rx, box.props_off, n, box)
    link.counts[_RECEIVED] += 1
    # The acknowledgement's QoS and id, kept here (in locals done with:
    # the frame stays within 11 words): a callback that reads packets
    # (subscribe() waits for its SUBACK) decodes them into the same box.
    rx = box.qos
    n = box.pid
    if box.held:
        from .late import late         # (a read inside a callback: rare)
        return late(link, rx, n)
    if rx and link.later:
        # AsyncClient's messages() holds acknowledgements (later.py): this
        # may be the broker's second copy of one held there, or taken.
        from . import later
        c = later.incoming(link, rx, n, link.first & 8)     # (c: a local less, the frame within 11 words)
        if c:
            rx = -1
        elif c is None:
            rx = 3                   # the table full, counting the copies held: not taken (below)
        c = link.c
    if rx < 0:                       # (an int compare: the QoS 0 path looks up nothing more)
        link.counts[_DUP_IN] += 1
        rx = 0                       # (its acknowledgement is later.py's)
    elif rx == 3 or rx == 2 and link.engine.rx2_n >= len(link.engine.rx2) and link.engine.rx2_index(n) < 0:
        # A new QoS 2 message and the table of unreleased ids full
        # (session.py, _rx2_full): not taken, neither delivered nor
        # acknowledged (the broker sends it again after a reconnect), and
        # the read goes on. The broker's resends that follow it get their
        # PUBREC, its PUBRELs free the table, and the link closes once no
        # more input waits (Link.idle(), reasons.full). Closed at once,
        # with the resends unread, every connection met the same new
        # message first (a broker may send one before its resends: the
        # order is per topic, MQTT-4.6.0-6) and closed over it again, for
        # good.
        link.counts[_RECEIVED] -= 1  # (not taken: counted when it comes again)
        link.floods += 1
        rx = 0                       # (no acknowledgement below)
    elif rx == 2 and not link.engine.incoming(rx, n):  # (QoS 0/1: always True, no call)
        link.counts[_DUP_IN] += 1                     # MQTT-4.3.3-10: not again
    elif c.cb is not None:
        box.held = 0x40000 | rx << 16 | n
        # The message reached the application even if its callback raises:
        # it is acknowledged, and the error is raised when the call that
        # was reading ends (after()), outside its handling of link failures.
        # Raised here, it left the message unacknowledged on a live link,
        # and the broker, its send quota used up (Receive Maximum, or its
        # own in-flight window), sent nothing more; an OSError from the
        # callback dropped the link.
        try:
            deliver(link)
        except BaseException as x:
            if isinstance(x, MemoryError) and (link.gentle or not box.held & 0x80000):
                # Not taken: the views or the properties handed to the
                # callback found no heap (deliver(): the callback was not
                # called yet), or AsyncClient's copy for messages() did (its
                # link is the gentle one; its own callback's errors never
                # come out here). Raised now, unacknowledged;
                # acknowledged, it would be lost. A QoS 1/2 one closes the
                # link, so that the broker sends it again after the
                # reconnect (MQTT-4.4.0-1): left unacknowledged on a live
                # link it held the broker's send quota for good, and a
                # message received is acknowledged (MQTT-4.5.0-2). (A
                # MemoryError from an application's callback is its own,
                # as any other: the message reached it, and a QoS 2 one
                # delivered again would be a second delivery.)
                if rx:                   # (rx: its QoS now, see above)
                    link.drop()
                owed(link)
                raise
            if not isinstance(x, Exception):
                owed(link)      # (KeyboardInterrupt: no read is inside a callback any more)
                raise
            if link.cb_error is None:
                link.cb_error = x
        if box.held & 0x100000:
            rx = 0                   # held (later.hold): acknowledged when messages() hands it out
        box.held = 0
    # QoS 2: the id reaches flash after delivery and before the PUBREC:
    # a power cut in between delivers it again (docs/sessions.md). A
    # callback that closed the link (disconnect()) still has the id
    # recorded; no acknowledgement is owed on a link that is gone.
    if rx == 1:
        # QoS 1: the engine keeps nothing; the PUBACK goes straight into
        # the acknowledgements owed (Link.owe(), inline: 4 calls fewer).
        if link.connected:
            c = link.owed
            if c > _ACKS - 4:
                link.flush()
                c = 0
            rx = link.acks
            rx[c] = _PUBACK
            rx[c + 1] = 2
            rx[c + 2] = n >> 8
            rx[c + 3] = n & 0xFF
            link.owed = c + 4
    else:
        n = link.engine.ack_incoming(rx, n, 0, link.tx)
        put_send(link, n if link.connected else 0)
    if box.owed:
        owed(link)


def owed(link):
    # The acknowledgements of PUBLISHes read while a callback ran
    # (late.py), after the outer one's; none read: only the mark goes (no
    # import, which on the MemoryError path would want heap there is none of).
    box = link.box
    box.held = 0
    if box.owed:
        from .late import flush
        flush(link)


def deliver(link):  # noalloc
    # (No local beyond c and box: the frame stays within 11 words, on the
    # C stack, not taken from the heap per message.)
    c = link.c
    box = link.box
    if c.cb_props:
        deliver_props(link)
        return
    t = view(link, box.topic_off, box.topic_len)
    link = view(link, box.payload_off, box.payload_len)     # (the payload's: a local less)
    box.held |= 0x80000     # the callback is called: beside 0x40000 | qos << 16 | pid (incoming())
    c.cb(t, link, bool(box.retain), box.qos)


def deliver_props(link):  # noalloc
    # deliver() with a fifth argument: the properties (None for 3.1.1).
    c = link.c
    box = link.box
    p = c.props.decode(link.rx, box.props_off, box.payload_off, 2) if c.v5 else None
    t = view(link, box.topic_off, box.topic_len)
    link = view(link, box.payload_off, box.payload_len)
    box.held |= 0x80000     # (deliver()'s mark)
    c.cb(t, link, bool(box.retain), box.qos, p)


def view(link, off, n):  # noalloc after the first sight of (off, n)
    # A memoryview of rx[off:off+n], kept: a repeated size costs nothing.
    if n >> 20:
        # The key below holds n in 20 bits: past 1 MiB (buf_size allows
        # 256 MB) two views would share one, and a message was handed the
        # bytes of another. A view of its own, then.
        return memoryview(link.rx)[off:off + n]
    key = (off << 20) | n
    v = link.views.get(key)
    if v is None:
        if len(link.views) >= _VIEWS:
            link.views.clear()
        v = link.views[key] = memoryview(link.rx)[off:off + n]
    return v


def put_send(link, n):  # noalloc
    # What the session just asked to keep goes to flash, then the n-byte
    # acknowledgement in tx joins those waiting to be sent.
    e = link.engine
    if e.rec:
        c = link.c
        if c.persist:
            # Unsaved until it is written, or any checkpoint after it
            # (connect.py: a refused checkpoint then raises).
            j = c.journal
            c.unsaved = j.checkpoints + 1
            j.put()
            c.unsaved = 0
        e.rec = 0
    if n:
        link.owe(link.tx, n)
