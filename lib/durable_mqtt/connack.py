# The CONNECT packet and its CONNACK: encoded, decoded, and the broker's
# limits taken from the CONNACK (MQTT 5). connect.py's, in a module of
# its own so that each compiles in less heap (a board compiling .py source
# after a reboot with a full outbox: the peak); unloaded with it (client.unload).
from micropython import const

from .codec import fail, put_str, put_block, put_u16, put_varint, varint_size, too_large

_CONNECT = const(0x10)


def connect(c, clean):
    # CONNECT at tx[0]; returns its length.
    props = b""
    c.sent_expiry = c.engine.expiry      # (a CONNACK may change engine.expiry; DISCONNECT goes by this)
    if c.v5:
        d = {"receive_maximum": c.receive_max, "maximum_packet_size": c.buf_size}
        if c.engine.expiry:
            d["session_expiry"] = c.engine.expiry
        props = c.props.encode(d)
    return connect_packet(c.tx, c.engine.cid, c.v5, c.keepalive, clean, c.user, c.pswd, c.will, props)


def connect_packet(buf, cid, v5, keepalive, clean, user, pswd, will, props):
    # CONNECT at buf[0]; returns its length. Strings are bytes; will is
    # (topic, msg, retain, qos, props block) or None; props: the CONNECT
    # properties, encoded (MQTT 5).
    rl = 12 + len(cid) + (varint_size(len(props)) + len(props) if v5 else 0)
    flags = 0x02 if clean else 0
    if will:
        flags |= 0x04 | (will[3] << 3) | (0x20 if will[2] else 0)
        rl += 4 + len(will[0]) + len(will[1]) + (varint_size(len(will[4])) + len(will[4]) if v5 else 0)
    if user is not None:
        flags |= 0x80
        rl += 2 + len(user)
    if pswd is not None:
        flags |= 0x40
        rl += 2 + len(pswd)
    if 1 + varint_size(rl) + rl > len(buf):
        too_large("CONNECT (client id, user name, password and will: a larger buf_size holds it)",
                  1 + varint_size(rl) + rl, len(buf), 0)
    buf[0] = _CONNECT
    off = put_str(buf, put_varint(buf, 1, rl), b"MQTT")
    buf[off] = 5 if v5 else 4
    buf[off + 1] = flags
    off = put_u16(buf, off + 2, keepalive)
    if v5:
        off = put_block(buf, off, props)
    off = put_str(buf, off, cid)
    if will:
        if v5:
            off = put_block(buf, off, will[4])
        off = put_str(buf, put_str(buf, off, will[0]), will[1])
    if user is not None:
        off = put_str(buf, off, user)
    if pswd is not None:
        off = put_str(buf, off, pswd)
    return off


def connack(c, n):
    # CONNACK (link.py hands it over while connecting).
    k = c.conn
    rx = k.rx
    if n < 2 or (n != 2 and not c.v5) or rx[0] & 0xFE:
        fail("malformed CONNACK (MQTT-3.2.2-1)")
    p = c.props.decode(rx, 2, n, 1) if c.v5 else None
    if rx[0] and rx[1]:
        # A refusal never has a session (MQTT-3.2.2-4; MQTT 5: MQTT-3.2.2-6):
        # a Protocol Error, not taken for the refusal it also says.
        fail("CONNACK with Session Present 1 and refusal 0x%02x (%s)"
             % (rx[1], "MQTT-3.2.2-6" if c.v5 else "MQTT-3.2.2-4"), 0x82)
    k.connack = (bool(rx[0]), rx[1], p)


def limits(c, p):
    # The broker's limits and overrides in CONNACK (MQTT 5).
    e = c.engine
    k = c.conn
    k.ka_ms = c.keepalive * 1000
    k.sub_avail = 7
    if not p:
        e.limits(0, 0, 2, 1)
        return
    # Subscriptions the broker takes: wildcards 1, identifiers 2, shared 4
    # (CONNACK's Wildcard / Subscription Identifiers / Shared Subscription
    # Available; absent means available). request.py refuses the others.
    k.sub_avail = (p.get("wildcard_sub_available", 1) | p.get("sub_id_available", 1) << 1
                   | p.get("shared_sub_available", 1) << 2)
    e.limits(p.get("receive_maximum", 0), p.get("maximum_packet_size", 0),   # MQTT-3.3.4-7, 3.2.2-15
             p.get("maximum_qos", 2), p.get("retain_available", 1))         # MQTT-3.2.2-11, -14
    if "server_keep_alive" in p:                                             # MQTT-3.2.2-21
        k.ka_ms = p["server_keep_alive"] * 1000
    if "session_expiry" in p:
        e.expiry = p["session_expiry"]
    if "assigned_client_id" in p and not e.cid:
        # Only for a CONNECT with an empty client id (MQTT 5, 3.2.2.3.7):
        # taking one for an id of our own would make the stored session
        # another client's (restore.restore discards it at the next boot).
        e.cid = p["assigned_client_id"].encode()
        e.cid_assigned = True
