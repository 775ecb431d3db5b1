# An incoming PUBLISH larger than buf_size: read off the socket and
# dropped, acknowledged, reported. (An MQTT 5 broker is told buf_size as
# Maximum Packet Size and must not exceed it, MQTT-3.1.2-24; a 3.1.1
# broker has no such limit.) Link's, in a module of its own: few devices
# ever receive one, so its code is loaded at the first (Link.oversized:
# any packet too large) and kept from then on.
from time import ticks_ms
from micropython import const

from . import codec
from .inbound import put_send, view

_PUBLISH = const(0x30)
_HEAD = const(0)             # reader states (link.py's)
_DRAIN = const(2)
_RECEIVED = const(4)         # link.py's counter numbers
_DUP_IN = const(5)
_OVERSIZE_IN = const(7)
# A UTF-8 sequence begun in a long Topic Name's bytes checked so far
# (far_topic): its bytes, how many came and how many it has.
_seq = bytearray(4)
_got = 0
_len = 0


def oversized(link, n, left):
    # An incoming packet of n bytes does not fit rx: a PUBLISH is read
    # and dropped (drain()), anything else breaks the link; so does a
    # PUBLISH before CONNACK (MQTT-3.2.0-1), never acknowledged.
    if link.first & 0xF0 != _PUBLISH or link.in_connect:
        codec.too_large("incoming packet type 0x%02x" % (link.first & 0xF0), n, len(link.rx))
    codec.publish_qos(link.first & 0x0F)     # malformed flags close the link, whatever the size
    link.rs = _DRAIN
    link.left = left


def drain(link):  # noalloc
    # An oversize PUBLISH: its first buf_size bytes (topic, packet id)
    # stay in rx, the rest is read into tx (free: nothing is sent
    # meanwhile) and dropped. It is acknowledged, so the broker does not
    # resend it for ever, and reported by the call that read it
    # (PacketTooLarge); the link stays up.
    rx = link.rx
    keep = min(len(rx), link.rlen)
    while link.left:
        got = link.got
        if got < keep:
            r = link.net.read_into(view(link, got, keep - got) if got else rx, keep - got)
            link.got += r
        else:
            r = link.net.read_into(link.tx, min(len(rx), link.left))
            if r:
                far_topic(link, r)
                if link.first & 6:
                    far_id(link, r)
        if not r:
            return 0
        link.left -= r
        link.net.moved = ticks_ms()   # part of it came: the link lives (as in read())
    link.rs = _HEAD
    link.last_rx = ticks_ms()
    link.counts[_OVERSIZE_IN] += 1
    qos = (link.first >> 1) & 3
    t = codec.u16(rx, 0) + 2
    # Malformed whatever its size (API.md): a Topic Name that is not
    # one, or that runs past the packet, closes the link, unacknowledged.
    if t + (2 if qos else 0) > link.rlen:
        codec.fail("PUBLISH topic length beyond packet")
    if t <= keep:                        # (a longer one: far_topic())
        codec.check_utf8(rx, 2, t, True)
    if qos:
        # Its packet id: kept in rx, or (a Topic Name that long) taken
        # from the bytes dropped by far_id(), or half and half.
        r = link.box.pid
        if t + 2 <= keep:
            r = codec.u16(rx, t)
        elif t < keep:
            r = rx[t] << 8 | r & 0xFF
        if not r:
            codec.fail("PUBLISH with packet id 0 (MQTT-2.3.1-1)")
        if qos == 2 and link.engine.rx2_index(r) >= 0:
            # Delivered before, its PUBREL still to come (a smaller
            # buf_size since): a duplicate, answered PUBREC 0
            # (ack_incoming) and not delivered again (MQTT-4.3.3-10).
            # Nothing is dropped: counted as a duplicate, not raised.
            link.counts[_OVERSIZE_IN] -= 1
            link.counts[_RECEIVED] += 1
            link.counts[_DUP_IN] += 1
            keep = 0             # (nothing dropped: no report below)
        put_send(link, link.engine.ack_incoming(qos, r, 0x97 if link.c.v5 else 0, link.tx))
    if keep:
        # Dropped: after() reports it (its size, fixed header included).
        # Set here, once the duplicate is known, not when its header
        # came: a duplicate's reset cleared the report of a PUBLISH
        # dropped before it in the same call.
        link.oversize = 1 + codec.varint_size(link.rlen) + link.rlen
    return _PUBLISH


def far_id(link, r):  # noalloc
    # The r bytes of an oversize QoS 1/2 PUBLISH just read into tx, to
    # be dropped, may hold its packet id: with a Topic Name longer than
    # rx it comes after what rx keeps. Taken into box.pid (free: no
    # PUBLISH is being decoded), so that the PUBLISH is acknowledged
    # all the same (MQTT-4.5.0-2; left unacknowledged on a live link it
    # held the broker's send quota for good).
    o = link.rlen - link.left            # the body offset of tx[0]
    t = codec.u16(link.rx, 0) + 2        # the packet id's
    for k in range(max(t, o), min(t + 2, o + r)):
        if k == t:
            link.box.pid = link.tx[k - o] << 8
        else:
            link.box.pid = link.box.pid & 0xFF00 | link.tx[k - o]


def far_topic(link, r):  # noalloc
    # The r bytes just read into tx, to be dropped, may hold part of a
    # Topic Name longer than rx: checked as they pass (after the part rx
    # keeps, at the first of them), as check_utf8() checks a whole one.
    global _got
    o = link.rlen - link.left            # the body offset of tx[0]
    rx = link.rx
    t = codec.u16(rx, 0) + 2             # where the Topic Name ends
    if o < t:
        if o == len(rx):
            _got = 0
            _check(rx, 2, o)
        _check(link.tx, 0, min(r, t - o))
        if _got and o + r >= t:
            codec.fail("ill-formed UTF-8 (MQTT-1.5.3-1)")    # cut short


def _check(buf, i, end):  # noalloc
    # buf[i:end]: the next bytes of a Topic Name. A multi-byte sequence is
    # gathered in _seq, across calls, and checked whole by codec.utf8().
    global _got, _len
    while i < end:
        c = buf[i]
        if _got or c >= 0x80:
            if not _got:
                _len = 2 if c < 0xE0 else 3 if c < 0xF0 else 4
            _seq[_got] = c
            _got += 1
            if _got == _len:
                _got = 0
                codec.utf8(_seq, 0, _len)
        elif not c or c == 0x23 or c == 0x2B:
            codec.check_utf8(buf, i, i + 1, True)    # raises: U+0000, a wildcard
        i += 1
