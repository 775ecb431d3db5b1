# Acknowledgements held until the application takes the message: AsyncClient's
# messages() queue. A QoS 1/2 copy put in the queue is acknowledged (PUBACK;
# QoS 2: the id recorded on flash, then PUBREC) when messages() hands it
# out, not when it is queued: a reset while copies wait in the queue loses
# none, the broker sends them again (MQTT-4.4.0-1). Loaded by aio.py only.
#
# link.later holds one int per copy queued, oldest first (the queue's
# order, so acknowledgements go in the order the PUBLISHes came:
# MQTT-4.6.0-2, -3): QoS << 16 | packet id, with _STALE when it came on an
# earlier connection. QoS 0 marks one whose id means nothing any more (a
# new session): nothing to acknowledge.
_STALE = 0x40000


def hold(c):
    # Inside the message callback (inbound.incoming, box.held: 0x40000 |
    # QoS << 16 | id, 0x80000 once the callback runs): the message's
    # acknowledgement waits for release(); 0x100000 tells incoming() so.
    k = c.conn
    box = k.box
    if box.held >> 16 & 3:           # (QoS 0: nothing to hold)
        if k.later is None:
            k.later = []
        k.later.append(box.held & 0x3FFFF)
        box.held |= 0x100000


def incoming(link, pid):
    # An incoming QoS 2 PUBLISH: True when a copy of it waits in the
    # queue (the broker sent it again: a reconnect that resumed the
    # session, or a 3.1.1 broker's retry), which is then not delivered
    # again (MQTT-4.3.3-10) and is acknowledged on this connection when it
    # is taken. Otherwise the table's room is checked counting the QoS 2
    # ids held (recorded when they are taken): Session.incoming().
    h = link.later
    n = 0
    for i in range(len(h)):
        if h[i] & 0x3FFFF == 0x20000 | pid:
            h[i] = 0x20000 | pid
            return True
        n += h[i] >> 16 & 3 == 2
    link.engine.incoming(2, pid, n)
    return False


def connected(link, resumed):
    # A new connection: what is held came on an earlier one. A session
    # resumed will have the broker send those messages again; a new
    # session has forgotten them, and their ids may be reused.
    h = link.later
    for i in range(len(h)):
        h[i] = h[i] | _STALE if resumed else 0


def release(c):
    # messages() hands out the oldest copy: its acknowledgement now, on
    # the connection it came on. One that came on an earlier connection
    # (or with the link down now) is not acknowledged: the broker sends it
    # again after the reconnect; a QoS 2 id is recorded all the same, so
    # that the copy sent again is a duplicate, acknowledged but not
    # delivered (a full table: not recorded, and that copy is delivered
    # again).
    k = c.conn
    h = k.later
    x = h.pop(0)
    qos = x >> 16 & 3
    if not qos:
        return
    e = c.engine
    live = k.connected and not x & _STALE
    if not live and (qos == 1 or e.rx2_n >= len(e.rx2)):
        return
    from .inbound import put_send
    n = e.ack_incoming(qos, x & 0xFFFF, 0, k.tx)
    put_send(k, n if live else 0)
    if live:
        k.flush()


def forget(c, q):
    # close() with the session kept on flash: the copies in queue q whose
    # acknowledgements are held go (the broker keeps them and sends them
    # again at the next connect). Returns the copies kept.
    k = c.conn
    h = k.later
    kept = []
    held = []
    i = 0
    for m in q:
        if m[3]:
            x = h[i]
            i += 1
            if x >> 16 & 3:
                continue
            held.append(x)
        kept.append(m)
    k.later = held
    return kept
