# Reads inside a message callback (a subscribe() there waits for its
# SUBACK, handling what arrives meanwhile): the PUBLISHes read then are
# delivered at once, but acknowledged late, after the message whose
# callback is running (inbound.py). A module of its own, loaded only when
# that happens: a board need not hold these lines, nor compile them with
# request.py at every subscribe().
from micropython import const

_DUP_IN = const(5)           # link.py's counter numbers


def late(link, qos, pid):
    # A PUBLISH read while a message callback runs (a subscribe() in it
    # waits for its SUBACK). Delivered (the callback is called again), but
    # its acknowledgement waits until the message being delivered has had
    # its own: they go in the order the PUBLISHes came (MQTT-4.6.0-2, -3).
    # A QoS 2 id being delivered, or delivered meanwhile (recorded at once),
    # is not delivered again (MQTT-4.3.3-10: 3.1.1 lets a broker resend on
    # the connection).
    box = link.box
    if box.owed is None:
        box.owed = []
    # The QoS 2 id of the callback's own message, delivered and not yet in
    # the table, takes its place first: else the table, found to have room
    # here, could be full when flush() records it, which would then have
    # been delivered and never recorded (delivered again when the broker
    # resends it). (Those read meanwhile are in the table: below.)
    n = (box.held >> 16) & 3 == 2 and link.engine.rx2_index(box.held & 0xFFFF) < 0   # (request.py may have)
    if qos == 2 and box.held & 0x7FFFF == 0x60000 | pid or not link.engine.incoming(qos, pid, n):
        link.counts[_DUP_IN] += 1
    else:
        from .inbound import deliver
        # While its callback runs, box.held names this message, as
        # incoming() names the outer one (deliver() adds its mark, 0x80000):
        # a request in it records this one's id first (request.py), and a
        # resend of it read meanwhile is a duplicate (above). The outer
        # one's, marked, is back after it.
        h = box.held | 0x80000
        box.held = 0x40000 | qos << 16 | pid
        try:
            deliver(link)
        except Exception as x:
            if isinstance(x, MemoryError) and (link.gentle or not box.held & 0x80000):
                # Not taken (inbound.incoming(): no heap for what the
                # callback is handed, or AsyncClient's copy): raised,
                # unacknowledged; the link closes so that it comes again.
                if qos:
                    link.drop()
                box.held = h
                raise
            if link.cb_error is None:
                link.cb_error = x    # (delivered: the callback's own, a MemoryError too)
        box.held = h                 # (the outer callback's call goes on)
        if qos == 2:
            # Its id reaches flash now, not when the outer callback returns:
            # a power cut in that wait (a SUBACK up to timeout_ms) delivered
            # it again after the reboot. Its PUBREC still waits for the
            # outer one's (flush(): a recorded id is acknowledged as one).
            from .inbound import put_send
            link.engine.ack_incoming(2, pid, 0, link.tx)
            put_send(link, 0)
    if qos:
        box.owed.append(qos << 16 | pid)


def flush(link):
    # The acknowledgements late() kept, in the order their PUBLISHes
    # came; QoS 2 ids recorded even when the link is gone meanwhile.
    from .inbound import put_send
    box = link.box
    owed = box.owed
    box.owed = None
    box.held = 0
    for k in owed or ():
        n = link.engine.ack_incoming(k >> 16, k & 0xFFFF, 0, link.tx)
        put_send(link, n if link.connected else 0)
