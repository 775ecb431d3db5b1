# SUBSCRIBE and UNSUBSCRIBE, one topic filter each, and their acks. Loaded
# by subscribe() / unsubscribe() (and by connect() when it resubscribes)
# once the request is checked (filters.py's check(), unloaded by then),
# and unloaded before the checkpoint of the answer (client.requesting()).
#
# requesting() is a generator, like connect.connecting().
import time
from micropython import const

from .codec import fail, put_str, put_block, put_u16, put_varint, varint_size, u16, too_large
from .errors import ConnectRefused, NotConnected, Timeout
from . import subs

_SUBSCRIBE = const(0x82)     # SUBSCRIBE, UNSUBSCRIBE carry flags 0b0010 (MQTT-3.8.1-1, 3.10.1-1)
_SUBACK = const(0x90)
_UNSUBSCRIBE = const(0xA2)
_UNSUBACK = const(0xB0)
_ERR_TIMEOUT = const(-4)
_ERR_NOT_CONNECTED = const(-6)
# Reason codes a broker may put in a SUBACK (3.1.1: 0 1 2 0x80) and an MQTT 5 UNSUBACK.
_RC_SUB = b"\x00\x01\x02\x80\x83\x87\x8f\x91\x97\x9e\xa1\xa2"
_RC_SUB4 = b"\x00\x01\x02\x80"
_RC_UNSUB = b"\x00\x11\x80\x83\x87\x8f\x91"
_BAD_ANSWER = const(-2)      # link.result after an (UN)SUBACK that failed its checks (ack())


def requesting(c, f, opts, sid, props, timeout_ms=0):
    # SUBSCRIBE to filter f with the options byte opts, or (opts < 0)
    # UNSUBSCRIBE; returns the SUBACK / UNSUBACK code (a refusal raises).
    # props: what filters.check() returned for it (it raised for a
    # request refused before it has an id: below, with one, the same
    # bytes cannot raise). timeout_ms: this request's own (0: the
    # client's), never set on the client, where other tasks of an
    # AsyncClient would run by it.
    timeout_ms = timeout_ms or c.timeout_ms
    e = c.engine
    k = c.conn
    sub = opts >= 0
    # A request made while another waits for its answer (a callback's,
    # inside that wait): the other's answer, which comes first, is kept
    # for it (ack), and its id is awaited again once this one is done.
    up = e.req_pid and [e.req_pid, e.req_kind, -1]
    if up:
        if not hasattr(k, "up"):
            k.up = []
        k.up.append(up)
    try:
        held = k.box.held
        if held & 0x70000 == 0x60000 and e.rx2_index(held & 0xFFFF) < 0:
            # In the callback of a QoS 2 message (inbound.incoming), whose
            # id reaches flash when the callback returns: now, before this
            # wait for the answer (up to timeout_ms), where a power cut
            # delivered it again after the reboot. Its PUBREC still goes
            # when the callback returns (the id recorded: acknowledged as
            # one). late.py does the same for those read meanwhile.
            from .inbound import put_send
            e.ack_incoming(2, held & 0xFFFF, 0, c.tx)
            try:
                put_send(k, 0)
            except OSError as x:
                # Refused (StoreFull, EIO): the link closes, as when the
                # record after the callback is refused: no PUBREC goes for
                # an id on no flash (c.unsaved: the next connect's
                # checkpoint first), and no request.
                k.failed(x)
                raise
        pid = subs.request(e, _SUBACK if sub else _UNSUBACK)
        n = subscribe_packet(c.tx, pid, f, opts, props, e.max_out)
        k.result = -1
        s = k.net.sock                       # the connection the request goes on
        try:
            k.send(c.tx, 0, n)
            deadline = time.ticks_add(time.ticks_ms(), timeout_ms)
            while True:
                while k.connected and k.read():
                    if k.result >= 0 or time.ticks_diff(deadline, time.ticks_ms()) <= 0:
                        break
                k.keepalive()
                if k.result >= 0:
                    break
                if not k.connected:          # closed meanwhile (disconnect(), a failure): no answer comes
                    raise NotConnected(_ERR_NOT_CONNECTED, "the link closed before the %sACK" % ("SUB" if sub else "UNSUB"))
                left = time.ticks_diff(deadline, time.ticks_ms())
                if left <= 0:
                    raise Timeout(_ERR_TIMEOUT, "no %sACK in %d ms" % ("SUB" if sub else "UNSUB", timeout_ms))
                yield left
                if k.net.sock is not s and k.net.sock is not None:
                    # Another connection since (AsyncClient: disconnect() and
                    # connect() while these steps waited; they resume every
                    # 20 ms): its answer never comes there.
                    raise NotConnected(_ERR_NOT_CONNECTED, "the link closed before the %sACK" % ("SUB" if sub else "UNSUB"))
        except BaseException as x:
            if k.net.sock is s or k.net.sock is None:
                subs.abandon(e, True, f, opts, sid)
                if isinstance(x, OSError) and k.connected:
                    # The link closes over its own failure, which this raises:
                    # not kept for the next call as well. One another call met
                    # first (a callback's publish() that could not write, an
                    # AsyncClient task's) is the real cause: it stays kept.
                    # (Not when closed already: a disconnect() meanwhile
                    # leaves its socket open for the broker's close, which
                    # AsyncClient awaits, and closed here it reset the
                    # connection 3 ms after the DISCONNECT.)
                    k.failed(x)
                    if k.failure is x:
                        k.failure = None
            elif e.req_pid == pid:
                subs.abandon(e, False)       # (its connection is gone: no late answer either)
            # Not on a connection made since: that is someone else's. Closed
            # (k.failed) or its request table touched (abandon), the connect
            # dialling it failed, or a request of its own (a resubscribe) took
            # its own answer for a late one.
            raise
        code = k.result
    finally:
        if up:
            k.up.remove(up)
            if not k.up:
                del k.up                 # (the link's dict as it was)
            e.req_pid = 0 if up[2] >= 0 else up[0]     # (the engine's awaited request, public)
            e.req_kind = up[1]
            k.result = up[2]
    if code >= 0x80:
        # Refused (MQTT 5 UNSUBACK too: 0x87 Not authorized, ...): the
        # broker's subscriptions are as they were, and so are those the
        # session keeps to make again (an unsubscribe refused leaves the
        # filter subscribed, at the broker and here).
        from .reasons import text
        raise ConnectRefused(code, "broker refused the %s %r: %s"
                             % ("subscription to" if sub else "unsubscription from", f, text(code, True)))
    if sub:
        subs.subscribed(e, f, opts, sid)
    else:
        subs.unsubscribed(e, f)
    # (The checkpoint of the answer is the caller's, client.requesting(),
    # once this module is unloaded.)
    return code


def subscribe_packet(buf, pid, f, opts, props, limit):
    # SUBSCRIBE to f with the options byte opts, or (opts < 0) UNSUBSCRIBE,
    # at buf[0]; returns its length. props: the encoded properties (MQTT 5)
    # or None (3.1.1). limit: the largest packet the broker takes
    # (MQTT-3.2.2-15) and buf holds.
    sub = opts >= 0
    rl = 4 + len(f) + sub + (varint_size(len(props)) + len(props) if props is not None else 0)
    if 1 + varint_size(rl) + rl > min(len(buf), limit):
        too_large("SUBSCRIBE" if sub else "UNSUBSCRIBE", 1 + varint_size(rl) + rl, min(len(buf), limit), 0)
    buf[0] = _SUBSCRIBE if sub else _UNSUBSCRIBE
    n = put_u16(buf, put_varint(buf, 1, rl), pid)
    if props is not None:
        n = put_block(buf, n, props)
    n = put_str(buf, n, f)
    if sub:
        buf[n] = opts
        n += 1
    return n


def ack(c, kind, n):
    # A SUBACK or UNSUBACK (link.py hands it over): one reason code for
    # the one filter asked (3.1.1 UNSUBACK: none). One that fails the
    # checks below (malformed, or not the answer awaited) leaves
    # k.result at _BAD_ANSWER: the broker's answer, not the link, failed
    # the request, and the front ends do not send it again and again
    # (robust.py, aio.py).
    k = c.conn
    k.result = _BAD_ANSWER
    rx = k.rx
    count = 1 if kind == _SUBACK or c.v5 else 0
    off = 2
    if c.v5 and n > 3:
        off = c.props.check(rx, 2, n - 1, 4, k.box)
    if n != off + count or c.v5 and n < 4:
        fail("malformed %sACK" % ("SUB" if kind == _SUBACK else "UNSUB"))
    code = rx[off] if count else 0
    if count and code not in (_RC_UNSUB if kind == _UNSUBACK else _RC_SUB if c.v5 else _RC_SUB4):
        fail("reason code 0x%02x not allowed here" % code, 0x82)
    pid = u16(rx, 0)
    for up in getattr(k, "up", ()):
        if up[0] == pid and up[1] == kind:
            up[2] = code                 # the answer to a request the one awaited interrupted
            k.result = -1
            return
    f = subs.answer(c.engine, kind, pid)
    if f is True:
        k.result = code
        return
    # The late answer to a request abandoned (a cancelled wait): the one
    # awaited is still to come. The broker made (or removed) the
    # subscription whatever became of that wait: recorded as an awaited
    # answer is, on flash with the next write (the journal is behind).
    k.result = -1
    if f and f[1] is not None and code < 0x80 and (kind == _SUBACK) == (f[2] >= 0):
        if f[2] >= 0:
            subs.subscribed(c.engine, f[1], f[2], f[3])
        else:
            subs.unsubscribed(c.engine, f[1])
        if c.persist:
            c.journal.behind = True
