# MQTT 3.1.1 / 5.0 packet codec, the part every message uses: bytes in,
# bytes out; no sockets, clock or files. Encoders write into the caller's
# bytearray and return the end offset; decoders read a body already in a
# buffer and raise ProtocolError for a malformed one (the link must close).
# Functions marked `# noalloc` allocate nothing (heap-locked tests).
# The packets sent once per connection are encoded where they are sent
# (CONNECT dial.py, SUBSCRIBE request.py, DISCONNECT leave.py); MQTT 5
# properties in props.py, which only an MQTT 5 client loads (with the check
# of a UTF-8 payload). Here a property block is bytes already encoded.
# The builtins put_str() calls per message, as globals of this module:
# found in its dict, not after a miss there and a search of the builtins.
from builtins import len

# fail() and too_large(): errors.py's, here where the decoders and their
# callers have always found them.
from .errors import ProtocolError, fail, said, too_large


class Box:
    # Preallocated decode results: a varint's value, a PUBLISH's fields.
    value = 0
    topic_off = 0
    topic_len = 0
    pid = 0
    qos = 0
    retain = 0
    props_off = 0      # MQTT 5: where the property block starts (its length varint)
    payload_off = 0
    payload_len = 0
    alias = 0          # MQTT 5: the Topic Alias and Message Expiry in the
    expiry = 0         # last property block checked (props.py)
    # inbound.py: the message whose callback runs (0x40000 | qos << 16 | id;
    # 0: none), and the acknowledgements owed to those read meanwhile.
    held = 0
    owed = None


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
    # A Variable Byte Integer at off into box.value; returns the offset after.
    v = 0
    shift = 0
    while True:
        if off >= end or shift > 21:
            fail(0)  # bad variable byte integer
        b = buf[off]
        off += 1
        v |= (b & 0x7F) << shift
        if b < 0x80:
            if not b and shift:
                fail(1)  # variable byte integer not minimal (MQTT-1.5.5-1)
            box.value = v
            return off
        shift += 7


def put_u16(buf, off, v):  # noalloc
    buf[off] = v >> 8
    buf[off + 1] = v & 0xFF
    return off + 2


def as_bytes(s):
    # A str (UTF-8) or bytes-like argument of the API as bytes. TypeError
    # for anything else: bytes(5) would be five zero bytes, bytes([1]) a list's.
    if isinstance(s, str):
        return s.encode()
    try:
        return bytes(memoryview(s))
    except TypeError:
        raise TypeError(said((30, type(s).__name__)))  # str or bytes-like expected, not %s


def u16(buf, off):  # noalloc
    return (buf[off] << 8) | buf[off + 1]


def put_str(buf, off, s):  # noalloc
    # A length-prefixed string or binary field (s: bytes-like).
    n = len(s)
    buf[off] = n >> 8              # (put_u16, inline: a call less per PUBLISH)
    buf[off + 1] = n & 0xFF
    buf[off + 2:off + 2 + n] = s
    return off + 2 + n


def put_block(buf, off, block):  # noalloc
    # An MQTT 5 property block: its length, then the encoded properties.
    off = put_varint(buf, off, len(block))
    buf[off:off + len(block)] = block
    return off + len(block)


def header_length(buf, start, end):  # noalloc
    # Bytes of the fixed header that starts at buf[start], or 0 while
    # buf[start:end] holds only part of it.
    for i in range(start + 1, end):
        if buf[i] < 0x80:
            return i + 1 - start
        if i - start == 4:
            fail(2)  # remaining length longer than 4 bytes
    return 0


def remaining_length(buf, start, h):  # noalloc
    # The Remaining Length of the h-byte fixed header at buf[start], whose
    # end header_length() found.
    v = 0
    for i in range(start + h - 1, start, -1):
        v = (v << 7) | (buf[i] & 0x7F)
    if h > 2 and not buf[start + h - 1]:
        fail(1)  # variable byte integer not minimal (MQTT-1.5.5-1)
    return v


def utf8(buf, i, end, topic=0):  # noalloc
    # Checks the multi-byte UTF-8 sequence at buf[i] (>= 0x80); returns the
    # offset after it. Ill-formed (MQTT-1.5.3-1): overlongs, surrogates, code
    # points past U+10FFFF, stray continuation bytes, a sequence cut short.
    # topic & 2 (a string this client sends, check_utf8): no C1 control
    # character or non-character either.
    c = buf[i]
    n = 1 if c < 0xE0 else 2 if c < 0xF0 else 3
    # The second byte's range: start..stop (names the firmware has).
    start = 0xA0 if c == 0xE0 else 0x90 if c == 0xF0 else 0x80
    stop = 0x9F if c == 0xED else 0x8F if c == 0xF4 else 0xBF
    if c < 0xC2 or c > 0xF4 or i + n >= end or not start <= buf[i + 1] <= stop:
        fail(3)  # ill-formed UTF-8 (MQTT-1.5.3-1)
    for k in range(i + 2, i + n + 1):
        if buf[k] & 0xC0 != 0x80:
            fail(3)  # ill-formed UTF-8 (MQTT-1.5.3-1)
    # U+0080..U+009F (C2 80..9F); U+FDD0..U+FDEF (EF B7 90..AF); the last
    # two code points of every plane, U+xFFFE and U+xFFFF (EF BF BE..BF,
    # and 4 bytes whose low 16 bits of code point are all ones).
    if topic & 2 and (c == 0xC2 and buf[i + 1] < 0xA0 or c == 0xEF and (
            buf[i + 1] == 0xB7 and 0x8F < buf[i + 2] < 0xB0 or buf[i + 1] == 0xBF and buf[i + 2] > 0xBD)
            or c > 0xEF and buf[i + 1] & 0x0F == 0x0F and buf[i + 2] == 0xBF and buf[i + 3] > 0xBD):
        fail(34)  # a control character or non-character (3.1.1 1.5.3, 5.0 1.5.4)
    return i + n + 1


def check_utf8(buf, i, end, topic=False):  # noalloc
    # A UTF-8 string: well formed, no U+0000 (MQTT-1.5.3-2); a Topic Name
    # (topic & 1, True) also no wildcard (MQTT-3.3.2-2) and at least one
    # character (MQTT-4.7.3-1). topic & 2: a string this client sends, also
    # no control character (U+0001..U+001F, U+007F..U+009F) or
    # non-character: the specs say a receiver may close the connection over
    # one (3.1.1 section 1.5.3, 5.0 section 1.5.4), mosquitto does, and a
    # stored message with such a topic was refused at every reconnect for
    # good. (Received, they are taken.) ASCII bytes are checked in this
    # loop, with no call.
    if topic & 1 and i == end:
        fail(4)  # empty topic name (MQTT-4.7.3-1)
    while i < end:
        c = buf[i]
        if 0x2B < c < 0x7F:
            # Most characters: NUL, '#' (0x23), '+' (0x2B), the controls
            # and the multi-byte leads all lie outside this range; one
            # test, not four.
            i += 1
        elif c >= 0x80:
            i = utf8(buf, i, end, topic)
        elif not c:
            fail(5)  # U+0000 in a string (MQTT-1.5.3-2)
        elif topic & 1 and (c == 0x2B or c == 0x23):
            fail(6)  # a wildcard in a Topic Name (MQTT-3.3.2-2)
        elif topic & 2 and (c < 0x20 or c == 0x7F):
            fail(34)  # a control character or non-character (3.1.1 1.5.3, 5.0 1.5.4)
        else:
            i += 1


def topic_name(t):  # noalloc
    # An outgoing Topic Name (publish(), the will): ValueError unless it is
    # one, so that the broker never closes the connection over it: a stored
    # message with a bad topic would be resent, and refused, at every
    # connect (MQTT-4.7.3-1, 1.5.3-1, 1.5.3-2, 3.3.2-2). At most 65535
    # bytes (MQTT-4.7.3-3): its length field has two bytes.
    if len(t) > 65535:
        raise ValueError(said((31, len(t))))  # topic of %d bytes: 65535 at most (MQTT-4.7.3-3)
    try:
        check_utf8(t, 0, len(t), 3)      # (a Topic Name this client sends)
    except ProtocolError as x:
        raise ValueError("topic %r: %s" % (bytes(t), x.args[1]))


# ---------------------------------------------------------------- PUBLISH

def publish_size(topic_len, payload_len, qos, prl, v5):  # noalloc
    # Remaining Length of a PUBLISH (prl: bytes of its encoded properties).
    n = 2 + topic_len + payload_len + (2 if qos else 0)
    return n + varint_size(prl) + prl if v5 else n


def put_publish(buf, off, first, rl, topic, pid, props):  # noalloc
    # A PUBLISH up to its payload, at off; returns where the payload goes.
    # props: the encoded property block (MQTT 5), or None (3.1.1).
    # (put_varint and put_u16 inline where they are one or two bytes: a
    # call each less per message)
    buf[off] = first
    if rl < 128:
        buf[off + 1] = rl
        off += 2
    else:
        off = put_varint(buf, off + 1, rl)
    off = put_str(buf, off, topic)
    if first & 6:
        buf[off] = pid >> 8
        buf[off + 1] = pid & 0xFF
        off += 2
    return off if props is None else put_block(buf, off, props)


def publish_qos(flags):  # noalloc
    # The QoS of a PUBLISH from flags, its first byte's low nibble.
    qos = (flags >> 1) & 3
    if qos == 3 or not qos and flags & 8:
        fail(7)  # PUBLISH with QoS 3, or DUP on QoS 0 (MQTT-3.3.1-4, -2)
    return qos


def parse_publish(body, n, flags, v5, box):  # noalloc
    # A PUBLISH body of n bytes into box (flags: the first byte's low nibble).
    # (u16() inline for the two 16-bit fields: once per message received;
    # flags holds the QoS once retain is taken, off the Topic Name's end,
    # then the packet id's: a frame of 11 words, on the C stack)
    box.retain = flags & 1
    box.qos = flags = publish_qos(flags)
    off = 2 + (body[0] << 8 | body[1] if n > 1 else n)
    box.topic_off = 2
    box.topic_len = off - 2
    if off + (2 if flags else 0) > n:
        fail(8)  # PUBLISH topic length beyond packet
    if off > 2 or not v5:       # (MQTT 5: empty with a Topic Alias; props decide)
        check_utf8(body, 2, off, True)
    if flags:
        off += 2
        flags = body[off - 2] << 8 | body[off - 1]     # (the packet id)
        if not flags:
            fail(9)  # PUBLISH with packet id 0 (MQTT-2.3.1-1)
    box.pid = flags
    box.props_off = off
    if v5:
        off = get_varint(body, off, n, box) + box.value
        if off > n:
            fail(10)  # PUBLISH property length beyond packet
    box.payload_off = off
    box.payload_len = n - off


def put_ack(buf, kind, pid, reason):  # noalloc
    # PUBACK, PUBREC, PUBREL or PUBCOMP at offset 0. The reason code is
    # left out when it is 0 (MQTT 5, section 3.4.2.1); 3.1.1 passes 0.
    buf[0] = kind
    buf[1] = 3 if reason else 2
    buf[2] = pid >> 8               # (put_u16, inline: once per acknowledgement)
    buf[3] = pid & 0xFF
    buf[4] = reason
    return 5 if reason else 4


def parse_ack(body, n, v5):  # noalloc
    # The packet id of a PUBACK/PUBREC/PUBREL/PUBCOMP (3.1.1: exactly 2
    # bytes; MQTT 5 may add a reason code and properties).
    pid = body[0] << 8 | body[1] if n > 1 else 0     # (u16, inline: once per acknowledgement)
    if not pid or n != 2 and not v5:
        fail((11, n, pid))  # acknowledgement of %d bytes, packet id %d
    return pid
