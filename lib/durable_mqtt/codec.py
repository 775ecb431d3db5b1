# MQTT 3.1.1 / 5.0 packet codec: bytes in, bytes out. No sockets, clock or
# files. Encoders write a whole packet into the caller's bytearray and return
# the end offset; decoders read a body the transport already placed in a
# buffer. Functions marked `# noalloc` allocate nothing (heap-locked tests).
# MQTT 5 properties are in props.py, which only an MQTT 5 client loads; here
# a property block is bytes already encoded (or a length to skip).
from micropython import const

from .errors import ProtocolError, PacketTooLarge, ERR_PROTOCOL, ERR_TOO_LARGE

_CONNECT = const(0x10)
_PUBLISH = const(0x30)
_SUBSCRIBE = const(0x82)     # SUBSCRIBE, UNSUBSCRIBE, PUBREL carry flags 0b0010 (MQTT-3.8.1-1)
_UNSUBSCRIBE = const(0xA2)
_DISCONNECT = const(0xE0)


def fail(msg):
    raise ProtocolError(ERR_PROTOCOL, msg)


def too_large(what, n, limit):
    raise PacketTooLarge(ERR_TOO_LARGE, "%s of %d bytes exceeds the limit of %d" % (what, n, limit))


class Box:
    """Preallocated decode results: a varint's value, a PUBLISH's fields."""
    value = 0
    topic_off = 0
    topic_len = 0
    pid = 0
    qos = 0
    retain = 0
    props_off = 0      # MQTT 5: offset of the property block (its length varint)
    payload_off = 0
    payload_len = 0
    alias = 0          # MQTT 5 Topic Alias seen in the last property block checked
    expiry = 0         # MQTT 5 Message Expiry Interval of the same


# ---------------------------------------------------------------- primitives

def varint_size(n):  # noalloc
    return 1 if n < 128 else 2 if n < 16384 else 3 if n < 2097152 else 4


def put_varint(buf, off, n):  # noalloc
    while n > 127:
        buf[off] = (n & 0x7F) | 0x80
        n >>= 7
        off += 1
    buf[off] = n
    return off + 1


def get_varint(buf, off, end, box):  # noalloc
    """Variable Byte Integer at off -> box.value; returns the offset after."""
    v = 0
    shift = 0
    while True:
        if off >= end or shift > 21:
            fail("bad variable byte integer")
        b = buf[off]
        off += 1
        v |= (b & 0x7F) << shift
        if b < 0x80:
            box.value = v
            return off
        shift += 7


def put_u16(buf, off, v):  # noalloc
    buf[off] = v >> 8
    buf[off + 1] = v & 0xFF
    return off + 2


def u16(buf, off):  # noalloc
    return (buf[off] << 8) | buf[off + 1]


def put_str(buf, off, s):
    """A length-prefixed string or binary field (s: bytes-like)."""
    n = len(s)
    put_u16(buf, off, n)
    buf[off + 2:off + 2 + n] = s
    return off + 2 + n


def put_block(buf, off, block):
    """An MQTT 5 property block: its length, then the encoded properties."""
    off = put_varint(buf, off, len(block))
    buf[off:off + len(block)] = block
    return off + len(block)


def header_length(hdr, got):  # noalloc
    """Bytes of the fixed header in hdr[0:got], or 0 while incomplete."""
    for i in range(1, got):
        if hdr[i] < 0x80:
            return i + 1
        if i == 4:
            fail("remaining length longer than 4 bytes")
    return 0


# ---------------------------------------------------------------- UTF-8

def utf8_seq(b, i, end):  # noalloc
    """Checks the multi-byte UTF-8 sequence starting at b[i] (>= 0x80) and
    returns the offset after it. Ill-formed: overlongs, surrogates, code
    points past U+10FFFF, stray continuation bytes (MQTT-1.5.3-1)."""
    c = b[i]
    if c < 0xC2 or c > 0xF4:
        fail("ill-formed UTF-8 (MQTT-1.5.3-1)")
    n = 1 if c < 0xE0 else 2 if c < 0xF0 else 3
    if i + n >= end:
        fail("truncated UTF-8 (MQTT-1.5.3-1)")
    lo = 0xA0 if c == 0xE0 else 0x90 if c == 0xF0 else 0x80
    hi = 0x9F if c == 0xED else 0x8F if c == 0xF4 else 0xBF
    d = b[i + 1]
    if d < lo or d > hi:
        fail("ill-formed UTF-8 (MQTT-1.5.3-1)")
    for k in range(i + 2, i + n + 1):
        if b[k] & 0xC0 != 0x80:
            fail("ill-formed UTF-8 (MQTT-1.5.3-1)")
    return i + n + 1


def check_utf8(b, i, end):  # noalloc
    """A UTF-8 Encoded String's bytes: well formed, no U+0000 (MQTT-1.5.3-2)."""
    while i < end:
        c = b[i]
        if c >= 0x80:
            i = utf8_seq(b, i, end)
        elif c:
            i += 1
        else:
            fail("U+0000 in a string (MQTT-1.5.3-2)")


def check_topic(b, i, n):  # noalloc
    """A Topic Name in a PUBLISH: at least one character (MQTT-4.7.3-1), no
    wildcard (MQTT-3.3.2-2), well-formed UTF-8 without U+0000. The ASCII
    bytes of a topic are checked one by one with no call."""
    if not n:
        fail("empty topic name (MQTT-4.7.3-1)")
    end = i + n
    while i < end:
        c = b[i]
        if c >= 0x80:
            i = utf8_seq(b, i, end)
            continue
        if c == 0x2B or c == 0x23 or not c:
            fail("'+', '#' or U+0000 in a topic name (MQTT-3.3.2-2)")
        i += 1


# ---------------------------------------------------------------- PUBLISH

def publish_size(tl, pl, qos, prl, v5):  # noalloc
    """Remaining Length of a PUBLISH (prl: bytes of its encoded properties)."""
    n = 2 + tl + pl + (2 if qos else 0)
    if v5:
        n += varint_size(prl) + prl
    return n


def put_publish(buf, off, first, rl, topic, tl, pid, props, prl):  # noalloc
    """A PUBLISH up to its payload, at off; returns where the payload goes.
    props: the encoded property block of an MQTT 5 PUBLISH, or None (3.1.1)."""
    buf[off] = first
    off = put_varint(buf, off + 1, rl)
    off = put_u16(buf, off, tl)
    buf[off:off + tl] = topic
    off += tl
    if first & 6:
        off = put_u16(buf, off, pid)
    if props is not None:
        off = put_varint(buf, off, prl)
        if prl:
            buf[off:off + prl] = props
            off += prl
    return off


def parse_publish(body, n, flags, v5, box):  # noalloc
    """A PUBLISH body of n bytes into box (flags: low nibble of the first
    byte). A malformed one raises ProtocolError: the link must close."""
    qos = (flags >> 1) & 3
    if qos == 3:
        fail("PUBLISH with QoS 3 (MQTT-3.3.1-4)")
    if n < 2:
        fail("short PUBLISH")
    tl = u16(body, 0)
    off = 2 + tl + (2 if qos else 0)
    if off > n:
        fail("PUBLISH topic length beyond packet")
    if tl or not v5:              # (MQTT 5: empty with a Topic Alias; props decide)
        check_topic(body, 2, tl)
    box.qos = qos
    box.retain = flags & 1
    box.topic_off = 2
    box.topic_len = tl
    pid = 0
    if qos:
        pid = u16(body, off - 2)
        if not pid:
            fail("PUBLISH with packet id 0 (MQTT-2.3.1-1)")
    box.pid = pid
    box.props_off = off
    if v5:
        off = get_varint(body, off, n, box)
        off += box.value
        if off > n:
            fail("PUBLISH property length beyond packet")
    box.payload_off = off
    box.payload_len = n - off


# ---------------------------------------------------------------- small packets

def put_ack(buf, kind, pid, reason):  # noalloc
    """PUBACK, PUBREC, PUBREL or PUBCOMP at offset 0. The reason code is
    omitted when it is 0 (MQTT 5, section 3.4.2.1); the caller passes 0 in
    3.1.1, which has none."""
    buf[0] = kind
    buf[1] = 3 if reason else 2
    put_u16(buf, 2, pid)
    buf[4] = reason
    return 5 if reason else 4


def parse_ack(body, n, v5):  # noalloc
    """Packet id of a PUBACK/PUBREC/PUBREL/PUBCOMP/UNSUBACK (3.1.1: exactly
    2 bytes; MQTT 5 may add a reason code and properties)."""
    if n < 2 or (n != 2 and not v5):
        fail("acknowledgement of %d bytes" % n)
    pid = u16(body, 0)
    if not pid:
        fail("acknowledgement with packet id 0")
    return pid


# ---------------------------------------------------------------- once per connection

def connect(buf, cid, v5, keepalive, clean, user, pswd, will, props):
    """CONNECT at offset 0; strings are bytes. will: (topic, msg, retain,
    qos, props block) or None; props: the encoded CONNECT properties."""
    rl = 12 + len(cid)
    flags = 0x02 if clean else 0
    if v5:
        rl += varint_size(len(props)) + len(props)
    if will:
        flags |= 0x04 | (will[3] << 3) | (0x20 if will[2] else 0)
        rl += 4 + len(will[0]) + len(will[1])
        if v5:
            rl += varint_size(len(will[4])) + len(will[4])
    if user is not None:
        flags |= 0x80
        rl += 2 + len(user)
    if pswd is not None:
        flags |= 0x40
        rl += 2 + len(pswd)
    n = 1 + varint_size(rl) + rl
    if n > len(buf):
        too_large("CONNECT", n, len(buf))
    buf[0] = _CONNECT
    off = put_varint(buf, 1, rl)
    off = put_str(buf, off, b"MQTT")
    buf[off] = 5 if v5 else 4
    buf[off + 1] = flags
    off = put_u16(buf, off + 2, keepalive)
    if v5:
        off = put_block(buf, off, props)
    off = put_str(buf, off, cid)
    if will:
        if v5:
            off = put_block(buf, off, will[4])
        off = put_str(buf, off, will[0])
        off = put_str(buf, off, will[1])
    if user is not None:
        off = put_str(buf, off, user)
    if pswd is not None:
        off = put_str(buf, off, pswd)
    return off


def subscribe(buf, kind, pid, topic, opts, props):
    """SUBSCRIBE (opts: the options byte) or UNSUBSCRIBE (opts < 0) for one
    topic filter; props: the encoded properties (MQTT 5) or None."""
    rl = 4 + len(topic) + (opts >= 0)
    if props is not None:
        rl += varint_size(len(props)) + len(props)
    n = 1 + varint_size(rl) + rl
    if n > len(buf):
        too_large("SUBSCRIBE", n, len(buf))
    buf[0] = kind
    off = put_u16(buf, put_varint(buf, 1, rl), pid)
    if props is not None:
        off = put_block(buf, off, props)
    off = put_str(buf, off, topic)
    if opts >= 0:
        buf[off] = opts
        off += 1
    return off


def disconnect(buf, props):
    """DISCONNECT: MQTT 5 with reason 0 and properties when props is given."""
    buf[0] = _DISCONNECT
    if not props:
        buf[1] = 0
        return 2
    off = put_varint(buf, 1, 1 + varint_size(len(props)) + len(props))
    buf[off] = 0
    return put_block(buf, off + 1, props)
