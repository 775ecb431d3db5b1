# What a connect does after the CONNACK (connect.py's steps up to it): the
# counters, the journal's checkpoint, a lost session's subscriptions made
# again, the event. A module of its own, loaded once the CONNACK is in
# (connack.py and dial.py unloaded by then) and unloaded after
# (client.unload): in connect.py it was in the heap beside dial.py while
# the connection opened, the peak of a connect from .mpy.
import gc
from micropython import const

from .errors import ConnectRefused, PacketTooLarge, ProtocolError, StoreFull

# (Counter numbers and state flags as numbers, not consts: a const is one
# more interned name in a source install, tests/test_names.py.)
_BAD_ANSWER = const(-2)      # request.py: link.result after an (UN)SUBACK that failed its checks


def settle(c, ev, persistent, keep, rel):
    # After CONNACK: the counters, the journal, a lost session's
    # subscriptions made again, the event. rel: the ids of the QoS 2
    # messages past PUBREC before the CONNECT.
    from .client import unload
    e = c.engine
    c.counts[9] += 1                     # reconnects (link.py numbers the counters)
    info = {"queued": e.held}
    if ev == "resumed":
        # What went out on an earlier connection goes again (connack.py
        # marked it at the CONNACK: session.py's DUP and REL_DUE flags);
        # what was queued and never sent goes for the first time, not
        # counted (e.held counted it: resent went up for a message
        # published while down, which the broker saw with DUP 0).
        n = 0
        for k in range(e.count):
            if e.st[e.index(k)] & 0x30:        # session.py's _DUP | _REL_DUE
                n += 1
        c.counts[8] += n                 # resent
        info = {"resending": n, "awaiting_pubrel": e.rx2_n}
    else:
        # The session gone (Session Present 0, or a clean start): so is a
        # QoS 2 record of it the store refused (c.unsaved, _checkpoint).
        c.unsaved = 0
        if ev == "lost":
            info = {"requeued": e.held, "dropped_released": e.dropped, "resubscribed": 0}
    j = c.journal
    # A clean session's state is never written, so never reused
    # (MQTT-3.1.2-6): connecting clean clears what is stored. The messages
    # held go out from RAM. (keep: the clean leg of connect_fresh(), whose
    # persistent connect writes the state over at once.)
    c.persist = j is not None and persistent
    # A new session (a clean start, or none held): the old one's
    # subscriptions went with it (MQTT-3.1.2-6) and are not made again
    # later, unless the front end renews its own (renews_subs).
    if ev == "new" and e.subs and not c.renews_subs:
        e.subs = []
    # A lost session's subscriptions are owed until every one is made again,
    # and the debt is on flash with the state: a link lost (or a reboot)
    # meanwhile leaves the broker a session without them, which it then says
    # is present. RobustClient's are owed to every new session too, but not
    # to the clean leg of connect_fresh(), which sends nothing (api.md).
    # (Empty e.subs: request.py is not compiled here, the heap's peak.)
    owed = bool(c.resubscribe and e.subs and not keep and (
        ev == "lost" or ev == "resumed" and e.resub_owed or ev == "new" and c.renews_subs))
    if owed != e.resub_owed:             # (set only when it changes: Session's class default)
        e.resub_owed = owed
    try:
        try:
            if j:
                if persistent:
                    checkpoint(c, j)
                elif not keep:
                    try:
                        j.erase()
                    except StoreFull as x:
                        # Not even its header emptied (dirclear.py): the
                        # old session stays on flash, reported; the next
                        # clean connect erases it again (a boot before
                        # that restores it, as a session held).
                        full(c, x)
        finally:
            # A QoS 2 message past PUBREC that a new session dropped (MQTT-3.2.2-5)
            # left the session: the broker had it (PUBREC < 0x80), reason 0.
            # (Also when the checkpoint raises: no later connect knows of it.)
            for pid in rel:
                if not c.holds(pid):
                    c.on_done(pid, 0)
        if owed:
            gc.collect()                 # before a compile or load: MQTTClient.__init__
            yield from _resubscribing(c, info)
            unload()                     # (filters.py, request.py: before the checkpoint loads dirstate.py)
            e.resub_owed = False
            if c.persist:
                checkpoint(c, j)
    except BaseException:
        # The session lost (or new) all the same, what it held requeued or
        # dropped: the application hears it from this connect, failed
        # (a refused QoS 2 record, a resubscribe's link), as the next one
        # finds the session this one opened ("resumed").
        if ev != "resumed":
            c.event(ev, info)
        raise
    c.event(ev, info)


def checkpoint(c, j):
    try:
        j.checkpoint()
    except BaseException as x:
        if isinstance(x, StoreFull):     # (connected all the same: acknowledgements make room)
            full(c, x)
            if c.unsaved != j.checkpoints + 1:
                return
            # Unless a QoS 2 record the store refused (c.unsaved: no
            # checkpoint of the whole state since, the journal's count) is
            # still not on flash: the resumed session would send what
            # depends on it (a PUBREL whose OUT_REL is missing: after a
            # power cut the boot sent its PUBLISH again, a duplicate,
            # MQTT-4.3.3-6). The connect fails, nothing sent, until a
            # checkpoint gets through.
        # Any other failure (a write error, EIO) fails the connect as a
        # whole: the link closed, nothing sent, the session kept.
        c.conn.drop()
        raise


def full(c, x):
    # A checkpoint refused by a full or read-only filesystem: the event
    # (a subscribe()'s too: client.requesting).
    c.event("store_full", {"reason": x.args[1]})


def _resubscribing(c, info):
    # The steps that make a lost session's subscriptions again, after its
    # CONNACK (here, not in request.py: a subscribe() compiles or loads
    # less). Each made counts in info["resubscribed"]; each is checked
    # first (filters.py), as subscribe() checks it.
    from .filters import check
    from .request import requesting
    from .subs import unsubscribed
    e = c.engine
    for f, opts, sid in list(e.subs):
        try:
            yield from requesting(c, f, opts, sid, check(c, f, opts, sid, c.conn))
            info["resubscribed"] = info.get("resubscribed", 0) + 1
            if getattr(c, "bad_sub", None) == f:
                del c.bad_sub            # (answered well: a bad answer months later is a first again)
        except (ConnectRefused, PacketTooLarge, ValueError):
            # The broker refuses it, or takes no packet that large, or
            # no broker may take it (a filter subscribe() refuses: a
            # stored state no writer of this library made): forgotten,
            # else every connect would raise over it.
            unsubscribed(e, f)
        except ProtocolError:
            # Its answer was malformed or not the one awaited (request.ack)
            # and the link closed over it: still owed, made at the next
            # connect. A broker that answers it so a second time always
            # will, and every connect failed over it: forgotten then, as a
            # refused one, and the connect after goes on without it.
            if c.conn.result == _BAD_ANSWER:
                if getattr(c, "bad_sub", None) == f:
                    unsubscribed(e, f)
                    if c.persist:
                        checkpoint(c, c.journal)
                c.bad_sub = f
            raise
