# Closing a session's connection: DISCONNECT, after the session state
# reached flash. Loaded by disconnect() and unloaded after (client.unload):
# a module of its own, so that closing does not load connect.py again into
# the heap of a device that has run for days.
from time import ticks_add, ticks_diff, ticks_ms
from micropython import const

from . import errors
from .codec import put_block

_DISCONNECT = const(0xE0)
_LINGER_MS = const(500)      # at most, for the broker to close its side


def disconnect(c, session_expiry, report=False):
    # DISCONNECT (MQTT 5: with a new Session Expiry Interval) after the
    # session state reached flash; the connection closes. report: the
    # application's disconnect() (not a connect()'s, which reports once the
    # new link is whole).
    e = c.engine
    k = c.connection()
    old = c.cb_error                     # (one kept before: not this call's to raise)
    if session_expiry is not None:
        if not c.v5:
            raise ValueError("session_expiry on DISCONNECT needs MQTT 5")
        if type(session_expiry) is not int:
            raise TypeError("session_expiry must be an int, not %s" % type(session_expiry).__name__)
        if not 0 <= session_expiry <= 0xFFFFFFFF:
            raise ValueError("session_expiry 0..0xFFFFFFFF")
        # (The CONNECT's value counts, not the CONNACK's: MQTT 5, 3.14.2.2.2.)
        if not c.sent_expiry and session_expiry:
            raise ValueError("a session connected with expiry 0 cannot be extended (MQTT 5, 3.14.2.2.2)")
        if not k.connected:
            # Only the broker can end or keep its half: told nothing, it
            # would resume a session this client had dropped.
            from .errors import NotConnected
            raise NotConnected(-6, "disconnect(session_expiry) needs the connection it applies to")
        e.expiry = session_expiry
    # The session ends here when the application ends it: Clean Session 1
    # (3.1.1), expiry 0 on the CONNECT or on this DISCONNECT (MQTT 5). Not
    # when the CONNACK lowered the expiry to 0 (3.2.2.3.2): the broker's
    # half ends, the client's stays, on flash and in RAM; the next connect
    # finds it lost, sends the accepted messages as new ones and makes the
    # subscriptions again (as after a reboot).
    # Nor when the CONNACK raised it from 0: the broker keeps its half
    # then (MQTT-3.1.2-23), and the client keeps its own.
    failure = None
    held, subs, rx2_n = e.has_state, e.subs, e.rx2_n
    # (3.1.1: a clean session ends with its connection. A client storing
    # then: a persistent connect after it failed before its CONNECT went.)
    end = not c.v5 and c.clean or c.v5 and not (
        e.expiry if session_expiry is not None else c.sent_expiry or e.expiry)
    try:
        if end:
            # The session ends, not the messages the application handed
            # over: they go out as new ones at the next connect (API.md),
            # which starts a new session ("new"). Flash keeps them, the
            # ended session's state replaced in one checkpoint by theirs
            # alone, marked as no session's (records.py); erased, a reboot
            # before that connect lost them, and what publish() took
            # meanwhile. Its subscriptions and incoming QoS 2 ids go
            # (MQTT-3.1.2-6), but RobustClient's subscriptions, which it
            # makes again on every new session (renews_subs).
            e.has_state = False
            e.rx2_n = 0
            if not c.renews_subs:
                e.subs = []
        if c.persist:
            c.journal.checkpoint(True)   # the broker's expiry clock starts now
        if end:
            c.unsaved = 0                # (a QoS 2 record refused went with its session: connect.py)
    except Exception as x:
        # The state stays in RAM; the next checkpoint that gets through
        # writes it. A session ending here stays whole on flash, and so in
        # RAM: the next connect finds the broker's half gone, as after a
        # reboot.
        e.has_state, e.subs, e.rx2_n = held, subs, rx2_n
        if isinstance(x, errors.StoreFull):
            # A full or read-only filesystem: reported, as a connect's.
            c.event("store_full", {"reason": x.args[1]})
        else:
            # Any other failure of the store (a write error, EIO): raised
            # once the DISCONNECT is sent and the link closed. Raised here,
            # it kept the DISCONNECT back: the link was dropped without one
            # later, and the broker published the will. What was accepted
            # before is on flash (each message before it went out, unless
            # batched).
            failure = x
    if not c.v5 and c.clean:
        e.has_state = False              # the broker ends such a session with the connection
    if k.connected:
        buf = c.tx
        buf[0] = _DISCONNECT
        buf[1] = 0
        n = 2
        if session_expiry is not None:   # MQTT 5: reason 0, Session Expiry
            p = c.props.encode({"session_expiry": session_expiry})
            buf[1] = len(p) + 2
            buf[2] = 0
            n = put_block(buf, 3, p)
        try:
            k.send(buf, 0, n)
            if k.gentle:
                # AsyncClient's link: the front end lingers, awaited, and
                # closes it (aio.py); here the wait held the event loop.
                k.connected = False
                k = None                 # (not closed here)
            else:
                _linger(k.net, buf, min(c.timeout_ms, _LINGER_MS))
        except OSError:
            pass
    if k is not None:
        k.drop()
    if failure is not None:
        raise failure                    # (the DISCONNECT sent, the link closed)
    if report and old is None and not c.conn.gentle:
        # What the event callback raised (store_full above), now that the
        # link is closed; AsyncClient reports it itself (callback_error).
        c.report()


def refuse(k):
    # MQTT 5, 4.13.1: a Client that detects a Malformed Packet or a Protocol
    # Error sends DISCONNECT with the reason code (errors.why: 0x81, 0x82,
    # 0x93, 0x94, 0x95...) before it closes the connection (the caller,
    # Link.drop(), closes it). Sent after the acknowledgements owed for
    # the packets handled before (k.send(); MQTT-4.5.0-2: those messages
    # were delivered); any failure to send is ignored: the connection
    # closes anyway. 3.1.1 has no reason codes: only the acknowledgements
    # go. The session is not touched: what is in flight goes again after
    # the reconnect, and the broker publishes the will (only reason 0x00
    # removes it, MQTT-3.1.2-10).
    rc = errors.why
    errors.why = 0
    if not rc:
        return
    net = k.net
    buf = k.c.tx
    buf[0] = _DISCONNECT
    buf[1] = 1                       # the reason code alone: no properties (3.14.2.2.1)
    buf[2] = rc
    try:
        if not k.c.v5:
            if k.owed and (not k.gentle or net.room()):
                k.flush()
                _linger(net, k.rx, 0)    # (what came only: no 3.1.1 broker closes its side)
        elif k.gentle:
            # AsyncClient's link: never a wait that holds the event loop.
            # What already came is read first: a socket closed with bytes
            # unread sends a reset, which may cost the broker the DISCONNECT.
            if net.room():
                k.send(buf, 0, 3)
            _linger(net, k.rx, 0)
        else:
            k.send(buf, 0, 3)
            _linger(net, k.rx, min(k.c.timeout_ms, _LINGER_MS))
    except OSError:
        pass


def _linger(net, buf, ms):
    # Reads (and drops) what still comes until the broker closes its side,
    # at most ms. A socket closed with bytes unread sends a TCP reset, not a
    # FIN, and a broker that meets the reset before it has read everything
    # loses the rest: seen with mosquitto, the last PUBLISH and the
    # DISCONNECT itself, so the will fired. An acknowledgement dropped here
    # only means a resend, as after any lost link. ms 0: only what already
    # came, never waiting (AsyncClient's link).
    if not ms:
        for _ in range(8):           # (a bound: a broker may not stop sending)
            if not net.wait(0):
                return
            net.read_into(buf, len(buf))
        return
    deadline = ticks_add(ticks_ms(), ms)
    while True:
        left = ticks_diff(deadline, ticks_ms())
        if left <= 0:
            return
        if net.wait(left):
            net.read_into(buf, len(buf))     # PeerClosed at the end of the stream
