# Opening a session's connection: the steps from TCP to CONNACK (the
# packets and the broker's limits are connack.py's), Session Present against
# the stored state (the rules are session.py's); what follows the CONNACK
# is settle.py's. Loaded by connect() and unloaded after (client.unload): a
# device pays for it while connecting. Closing is leave.py's.
#
# connecting() is a generator: it yields how long it may wait for the socket
# (ms; negative: for it to become writable). MQTTClient.run() waits
# blocking; aio.AsyncClient awaits the same steps.
import gc
import time
from micropython import const

from .errors import BAD_PACKET, ConnectRefused, PeerClosed, StoreFull, Timeout

_ERR_TIMEOUT = const(-4)


def connecting(c, clean_session, timeout_ms, server, port, fresh):
    # (Three generators, not one: a device that reconnects after days finds
    # its heap in pieces, and each function's bytecode needs one piece.)
    if timeout_ms is not None and type(timeout_ms) is not int:
        raise TypeError("timeout_ms must be an int, not %s" % type(timeout_ms).__name__)
    if timeout_ms is not None and timeout_ms < 0:
        raise ValueError("timeout_ms >= 0 (0: the constructor's), not %d" % timeout_ms)
    e = c.engine
    if c.v5:
        c.props.tick(e, time.ticks_ms())     # Message Expiry across a long outage
    if not (c.v5 or e.cid or (not fresh and (c.clean_session if clean_session is None else clean_session))):
        # The constructor checks its own clean_session; connect(False) and
        # connect_fresh() ask for Clean Session 0 here.
        raise ValueError("an empty client id needs clean_session=True in MQTT 3.1.1 (MQTT-3.1.3-7)")
    if c.conn.connected:
        # connect() while connected: the old connection ends as disconnect()
        # ends it, with a DISCONNECT (its acknowledgements owed go first).
        # Closed without one it was an abnormal close, and the broker
        # published the will (MQTT-3.1.2-8; a DISCONNECT removes it,
        # MQTT-3.1.2-10) although nothing had failed.
        from .leave import disconnect
        disconnect(c, None)
    # (A restored state judged expired, "expired" at boot, connects as any
    # other: the broker says whether it kept its side. Started clean, its
    # subscriptions were forgotten ("new"), where Session Present 0 makes
    # them again ("lost", resubscribe); and the mark stayed after a
    # connect(clean_session=...) or connect_fresh(), so that a later
    # connect() threw a live session away.)
    if fresh:
        if not c.v5:                     # 3.1.1: a clean connection ends the old session
            yield from connecting(c, True, timeout_ms, server, port, None)
            from .leave import disconnect
            disconnect(c, None)
            # What is held now (a message the clean leg's event callback
            # published among it) is stored before the persistent CONNECT,
            # as after any clean session (below).
            clean_session = False
    clean = c.clean_session if clean_session is None else clean_session
    k = c.conn
    k.drop()
    k.failure = None
    k.oversize = 0                       # an oversize PUBLISH of the link before is not this one's to report
    if k.floods:
        del k.floods                     # (inbound.incoming: QoS 2 not taken on the link before, sent again)
    # MQTT 5 connect_fresh(): Clean Start with the expiry of a persistent
    # session (session_expiry, else 0xFFFFFFFF), for this CONNECT only: a
    # later connect(clean_session=True) asks for 0 again (API.md).
    expiry = e.expiry                    # (back if no CONNECT goes: _handshake)
    e.expiry = c.expiry_for(clean and not (fresh and c.v5))
    persistent = c.persistent(clean)
    j = c.journal
    if j and persistent and not c.persist and fresh is not None:
        # A persistent connect after a clean session, or on a client built
        # clean: the client stores what it holds, and what publish() takes
        # from now on, from this attempt, not from its CONNACK. Before, a
        # connect that failed (Wi-Fi down, RobustClient retrying for hours)
        # left every message accepted meanwhile in RAM only, for a reboot
        # to lose. Refused (a full filesystem), storing waits for the
        # CONNACK's checkpoint; any other failure fails the connect, nothing
        # sent, as that checkpoint's does.
        try:
            j.checkpoint()
            c.persist = True
        except StoreFull as x:
            c.event("store_full", {"reason": x.args[1]})
        from .client import unload
        unload()                         # (the checkpoint's module: not kept through the dial)
    if (j and persistent and fresh is not None and not e.resub_owed and c.resubscribe and e.subs
            and (e.has_state and not clean or c.renews_subs)):
        # This CONNECT may find the session lost and leave the broker a new,
        # empty one: the subscriptions are owed on flash before it goes out
        # (a power cut before the checkpoint after CONNACK would leave them
        # made nowhere). That checkpoint clears the debt when it resumed.
        e.resub_owed = True
        from .settle import checkpoint
        try:
            checkpoint(c, j)
        except StoreFull:
            # Refused while a QoS 2 record the store refused is not on
            # flash (c.unsaved): no resumed session may follow. A clean
            # start ends the session that record belongs to (its CONNACK
            # drops the message past PUBREC, and the mark: settle.py): it
            # goes on, or connect_fresh() failed as long as the store refused.
            if not clean:
                raise
        finally:
            # Failed (that refusal, a write error), nothing sent: the debt
            # goes too. Left, the connect after it took a resumed session
            # for one owing its subscriptions, and made them all again
            # (the broker sent their retained messages again).
            del e.resub_owed          # (back to Session's class default)
            # settle.py and the checkpoint's module (dirstate.py) are not
            # kept through the dial: loaded again after the CONNACK.
            checkpoint = None
            from .client import unload
            unload()
    # QoS 2 messages past PUBREC: a new session drops them (start_clean);
    # each leaves the session, so settle.py reports it (to a done callback).
    rel = [e.pid[e.index(k)] for k in range(e.count) if e.slot(k) == 3] if c.on_done else ()
    sp, ev = yield from _handshake(c, clean, timeout_ms or c.timeout_ms, server or c.server, port or c.port, expiry)
    if k.later:
        # Copies queued for messages() came on an earlier connection (later.py).
        from .later import connected
        connected(k, ev == "resumed")
    # The link is up, and the outbox waits (k.held) until the end of the
    # connect, or longer: what a callback publishes meanwhile (an event's,
    # a retained message's during a resubscribe) joins it, instead of
    # sending all of it at once ahead of what goes first.
    k.held = True
    try:
        # What follows the CONNACK is settle.py's, loaded now: not in the
        # heap beside dial.py while the connection opens (the peak of a
        # connect from .mpy). connack.py is done: unloaded first.
        from .client import unload
        unload()
        gc.collect()                     # before a compile or load: MQTTClient.__init__
        from .settle import settle
        yield from settle(c, ev, persistent, fresh is None, rel)
    except BaseException:
        if k.held:                       # (the connect failed: nothing sent)
            del k.held                   # (back to Link's class default)
        raise
    if fresh:                            # (connect_fresh: the next connect() resumes)
        c.clean_session = False
    # The outbox goes out now (not on the clean leg of connect_fresh:
    # nothing goes out there), unless the front end has subscriptions to
    # make first (RobustClient's, asked for while down): then it sends the
    # outbox after their SUBACKs, so that what the device publishes is
    # seen only once its subscriptions are in place. Sent before, a first
    # boot's telemetry reached a backend that answered with a command
    # before the broker had the subscription: the command was lost.
    hold = getattr(c, "holds_outbox", None)
    if fresh is not None and not (hold and hold()):
        k.release()
    return sp


def _handshake(c, clean, timeout_ms, host, port, expiry):
    # TCP (and TLS), CONNECT, CONNACK; returns (Session Present, the
    # session's event: "resumed", "lost" or "new"). expiry: the session's
    # before this connect.
    k = c.conn
    gc.collect()                         # before a compile or load: MQTTClient.__init__
    from . import dial
    try:
        k.connack = None
        k.in_connect = True
        try:
            yield from dial.opening(c, host, port, timeout_ms, clean)
        except BaseException:
            # No CONNECT went (no address, no TCP, no TLS): the broker's
            # session is as it was, and so is the client's. A disconnect()
            # after a failed connect(clean_session=True) took the session
            # for ended (MQTT 5: the expiry 0 it was to send) and dropped
            # its subscriptions, which the broker still held.
            c.engine.expiry = expiry
            raise
        # The CONNECT went: a DISCONNECT goes by its Session Expiry (a
        # CONNACK may change the engine's) and Clean Session (leave.py).
        c.sent_expiry = c.engine.expiry
        c.clean = clean
        # dial.py is done: unloaded before the CONNACK loads connack.py (not
        # both in the heap at once: the peak of a connect from .mpy)
        dial = None
        from .client import unload
        unload()
        gc.collect()                     # (then connack.py loads in what dial.py held)
        deadline = time.ticks_add(time.ticks_ms(), timeout_ms)
        while True:
            try:
                while k.connack is None and k.read():
                    pass
                if k.connack is not None:
                    break
                left = time.ticks_diff(deadline, time.ticks_ms())
                if left <= 0:
                    raise Timeout(_ERR_TIMEOUT, "no CONNACK in %d ms" % timeout_ms)
            except (PeerClosed, Timeout):
                # No CONNACK, and bytes came (a packet begun, or part of a
                # header) whose first is no MQTT packet's (its flags): what
                # answers there is no MQTT broker (an HTTP server, a proxy,
                # a captive portal), said so (texts.py) rather than "no
                # CONNACK" or "the broker closed the connection". (A whole
                # packet is dispatch()'s to say.)
                if k.rs or k.end:
                    from .errors import fail
                    first = k.first if k.rs else k.hdr[k.pos]
                    if first & 0x0F != (2 if first & 0xF0 == 0x60 else 0) and first & 0xF0 != 0x30:
                        fail((33, first), 0x82)  # the first byte, 0x%02x, is no CONNACK: is there an MQTT broker on that port?
                raise
            yield left
        sp, code, p = k.connack
        k.net.addr[3] = 0                # a broker answered there: its address is good (dial.address)
        if code:
            c.session_present = sp       # 0 with a refusal (MQTT-3.2.2-4; 5.0 MQTT-3.2.2-6): the last CONNACK's
            if p and "server_reference" in p:
                c.server_reference = p["server_reference"]
            from .reasons import text
            raise ConnectRefused(code, "broker refused the connection: " + text(code, c.v5, True, p))
        from .connack import limits
        limits(c, p)
        ev = c.engine.connected(sp, clean)
    except BAD_PACKET:
        # A CONNACK malformed or breaking the protocol (or too large): MQTT 5
        # tells the broker why, a DISCONNECT with the reason code, before the
        # connection closes (4.13.1: a client MAY for a CONNACK, SHOULD for
        # any other packet; link.Link.drop does the same there). 3.1.1 has
        # no reason codes, and just closes. The session is not touched:
        # engine.connected() never ran.
        if c.v5:
            from .leave import refuse
            refuse(k)
        k.drop()
        raise
    except BaseException:
        k.drop()
        raise
    finally:
        k.in_connect = False
    k.connected = True
    c.session_present = sp
    k.last_tx = k.last_rx = time.ticks_ms()
    return sp, ev
