# Acknowledgements held until the application takes the message: AsyncClient's
# messages() queue. A QoS 1/2 copy put in the queue is acknowledged (PUBACK;
# QoS 2: the id recorded on flash, then PUBREC) when messages() hands it
# out, not when it is queued: a reset while copies wait in the queue loses
# none, the broker sends them again (MQTT-4.4.0-1). Loaded by aio.py only.
#
# link.later holds an int per copy queued, oldest first (the queue's order,
# so acknowledgements go in the order the PUBLISHes came: MQTT-4.6.0-2, -3):
# QoS << 16 | packet id, _STALE when it came on an earlier connection; QoS 0
# (0) marks one with nothing to acknowledge any more. After them, _TAKEN
# ones: copies taken while they could not be acknowledged (the link down,
# or stale), waiting for the broker's second copy, which is then
# acknowledged and not delivered.
#
# On a resumed session the broker sends its unacknowledged PUBLISHes again,
# with DUP 1 (MQTT-4.4.0-1, MQTT-3.3.1-1), in their order per topic only
# (MQTT-4.6.0-6): a new message of another topic may come first. A stale
# entry ends only when a PUBLISH with DUP 0 comes with its id: the broker
# dropped that copy (Message Expiry) and uses the id for a new message.
# (Ended at any DUP 0 PUBLISH, a QoS 2 copy whose resend came after a new
# message of another topic was delivered twice.)
_STALE = 0x40000
_TAKEN = 0x80000
_ACK = bytearray(8)          # the acknowledgements built here (never the link's tx,
                             # where a reconnect may have its CONNECT waiting)


def hold(c, now):
    # Inside the message callback (inbound.incoming, box.held: 0x40000 |
    # QoS << 16 | id, 0x80000 once the callback runs): the message's
    # acknowledgement waits for release(); 0x100000 tells incoming() so.
    # now: acknowledged as usual instead (a queue past its size: what is
    # held stays within queue_size, and so within the QoS 2 table), its
    # place kept with nothing to acknowledge.
    k = c.conn
    box = k.box
    if box.held >> 16 & 3:           # (QoS 0: nothing to hold)
        if k.later is None:
            k.later = []
        k.later.append(0 if now else box.held & 0x3FFFF)
        if not now:
            box.held |= 0x100000


def incoming(link, qos, pid, dup):
    # A QoS 1/2 PUBLISH: True when it is the broker's second copy of one
    # held (not delivered again, MQTT-4.3.3-10; acknowledged on this
    # connection when its first copy is taken) or of one taken (acknowledged
    # now, not delivered). False: a new one, delivered as usual (QoS 2: the
    # table's room checked counting the ids held, recorded when taken).
    # None: a new QoS 2 one the table has no room for, counting those
    # (inbound.incoming does not take it).
    if not dup:
        over(link, pid)
    h = link.later
    key = qos << 16 | pid
    n = 0
    for i in range(len(h)):
        x = h[i]
        if x & 0x3FFFF == key:
            if x & _TAKEN:
                del h[i]
                ack(link, qos, pid)
            else:
                h[i] = key
            return True
        n += x & (_TAKEN | 0x30000) == 0x20000
    if qos == 2:
        e = link.engine
        if e.rx2_index(pid) < 0 and e.rx2_n + n >= len(e.rx2):
            return None
    return False


def over(link, pid):
    # A new message with the id of a stale entry: the broker dropped that
    # copy. A copy queued keeps nothing to acknowledge; a taken one goes,
    # and a QoS 2 id recorded when it was taken is released (on flash too).
    h = link.later
    i = 0
    while i < len(h):
        x = h[i]
        if x & _STALE and x & 0xFFFF == pid:
            if not x & _TAKEN:
                h[i] = 0
            else:
                del h[i]
                if x >> 16 & 3 == 2:
                    e = link.engine
                    e.pubrel(x & 0xFFFF, _ACK)
                    record(link)
                continue
        i += 1


def connected(link, resumed):
    # A new connection: what is held came on an earlier one. A resumed
    # session will have the broker send those messages again; a new session
    # has forgotten them (and the QoS 2 table with them), and their ids may
    # be reused.
    h = link.later
    i = 0
    while i < len(h):
        if resumed:
            if h[i]:                 # (a void one stays 0: nothing to acknowledge, ever)
                h[i] |= _STALE
        elif h[i] & _TAKEN:
            del h[i]
            continue
        else:
            h[i] = 0
        i += 1


def release(c):
    # messages() hands out the oldest copy: its acknowledgement now.
    h = c.conn.later
    i = 0
    while h[i] & _TAKEN:
        i += 1
    try:
        take(c, i)
    finally:
        del h[i]                     # (a write that failed too: the next copy has the next entry)


def release_all(c):
    # set_callback() with copies queued: all are acknowledged now, as if
    # taken (left unacknowledged, they held the broker's send quota for
    # good, or the callback's messages were acknowledged ahead of them).
    # Their places stay, with nothing to acknowledge, for messages().
    k = c.conn
    h = k.later
    for i in range(len(h)):
        if not h[i] & _TAKEN:
            try:
                take(c, i)
            except OSError as x:
                k.failed(x)          # (the rest as with the link down: taken, acknowledged when sent again)


def take(c, i):
    # The copy of entry i is the application's: acknowledged on the
    # connection it came on. One that came on an earlier connection, or
    # taken with the link down, cannot be: it becomes _TAKEN, so that the
    # broker's second copy is acknowledged and not delivered, and a QoS 2
    # id is recorded (on flash) all the same, should a reboot come first
    # (a full table: not recorded). The entry itself is left void.
    k = c.conn
    h = k.later
    x = h[i]
    h[i] = 0
    qos = x >> 16 & 3
    if not qos:
        return
    if k.connected and not x & _STALE:
        ack(k, qos, x & 0xFFFF)
        k.flush()
        return
    h.append(_TAKEN | x & (_STALE | 0x3FFFF))
    e = c.engine
    if qos == 2 and e.rx2_n < len(e.rx2):
        e.ack_incoming(2, x & 0xFFFF, 0, _ACK)
        record(k)


def ack(link, qos, pid):
    # PUBACK, or PUBREC once the id is on flash, joins the acknowledgements
    # owed (sent after the read under way, or flushed by take()).
    n = link.engine.ack_incoming(qos, pid, 0, _ACK)
    record(link)
    link.owe(_ACK, n)


def record(link):
    # What the engine just asked to keep reaches flash (inbound.put_send,
    # with nothing to send).
    from .inbound import put_send
    put_send(link, 0)


def forget(c, q):
    # close() with the session kept on flash: the copies in queue q whose
    # acknowledgements are held go (the broker keeps them and sends them
    # again at the next connect). Returns the copies kept.
    k = c.conn
    h = k.later
    queued = iter([x for x in h if not x & _TAKEN])
    kept = []
    left = []
    for m in q:
        if m[3]:
            x = next(queued)
            if x >> 16 & 3:          # (held: the broker has it; void: the copy is the only one)
                continue
            left.append(x)
        kept.append(m)
    k.later = left + [x for x in h if x & _TAKEN]
    return kept
