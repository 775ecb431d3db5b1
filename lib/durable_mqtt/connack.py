# The CONNACK: decoded, and the broker's limits taken from it (MQTT 5).
# connect.py's, in a module of its own so that each compiles in less heap (a
# board compiling .py source after a reboot with a full outbox: the peak),
# and loaded once dial.py is unloaded (the CONNECT is dial.py's): never both
# at once, the peak of a connect from .mpy. Unloaded with connect.py
# (client.unload).
from micropython import const

from .codec import fail
from .errors import SessionError
from .session import trim

_ERR_SESSION = const(-8)
# Slot states (session.py's)
_FREE = const(0)
_QUEUED = const(1)
_SENT = const(2)
_RELEASE = const(3)
_STATE = const(0x0F)
_DUP = const(0x10)
_REL_DUE = const(0x20)


def connack(c, n):
    # CONNACK (link.py hands it over while connecting).
    k = c.conn
    rx = k.rx
    if n < 2 or (n != 2 and not c.v5) or rx[0] & 0xFE:
        fail("malformed CONNACK (MQTT-3.2.2-1)")
    if c.v5 and n == 2 and rx[1] == 1:
        # A 3.1.1 broker's answer to an MQTT 5 CONNECT: no properties, return
        # code 1, "unacceptable protocol version" (3.1.1, 3.2.2.3). Its own
        # words, as MQTT 5's 0x84 Unsupported Protocol Version, rather than
        # a malformed packet.
        k.connack = (False, 0x84, {"reason_string": "the broker speaks MQTT 3.1.1 only (CONNACK return "
                                   "code 1): connect with version=4"})
        return
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


def connected(e, sp, clean):
    # Engine e's rule at a CONNACK (Session.connected(), session.py's):
    # Session Present against what this client holds. Returns "resumed",
    # "lost" or "new"; raises when the connection must close
    # (MQTT-3.2.2-1, MQTT-3.2.2-4). Pure: no socket, store or clock.
    if sp and clean:
        fail("Session Present after a clean start (MQTT-3.2.2-1)", 0x82)
    if sp and not e.has_state and e.v5:
        raise SessionError(_ERR_SESSION, "broker has a session the client lost (MQTT-3.2.2-4): "
                           "connect_fresh() starts a new one")
    e.stale_n = 0                # (no answer of an earlier connection comes)
    ev = "resumed" if sp else "lost" if e.has_state and not clean else "new"
    if sp:
        # MQTT-4.4.0-1: everything in flight is owed again, in order.
        e.inflight = 0
        for k in range(e.count):
            i = e.index(k)
            s = e.st[i] & _STATE
            if s == _SENT:
                e.st[i] = _QUEUED | _DUP
            elif s == _RELEASE:
                e.st[i] = _RELEASE | _REL_DUE
                e.rel_due = True
                e.inflight += 1
        e.send = 0
    else:
        start_clean(e)                               # MQTT-3.2.2-5
    e.has_state = True
    return ev


def start_clean(e):
    # No state of an old session is reused (MQTT-3.1.2-6): incoming QoS 2
    # ids are dropped; accepted messages go out as new PUBLISH with DUP 0
    # and their ids (API.md); a QoS 2 message past PUBREC was received by
    # the old session and is dropped (counted in e.dropped).
    e.rx2_n = 0
    e.has_state = False
    e.dropped = 0
    for k in range(e.count):
        i = e.index(k)
        s = e.st[i] & _STATE
        if s == _RELEASE:
            e.st[i] = _FREE
            e.held -= 1
            e.dropped += 1
        elif s:
            e.st[i] = _QUEUED
            e.arena[e.off[i]] &= 0xF7
    e.send = 0
    e.inflight = 0
    trim(e)
