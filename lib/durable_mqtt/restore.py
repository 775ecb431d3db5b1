# A stored State (stream.py) put into the engine, at boot or by
# restore_session(); unloaded after (client.unload). A module of its own:
# in stream.py it made that module's compile the peak of a reboot from .py
# source with a full outbox, and in load.py, which every boot loads, it cost
# a first boot from .mpy 1.5 KB more heap (measured on 32 bits).
from array import array
from micropython import const

from .sizing import clear, resize

_HF_RESUB = const(0x04)      # header flag: the subscriptions are owed again (docs/session-format.md)


def restore(e, st, now, event=None):
    # Replace engine e's state with a stored one (a stream.State; now: the
    # wall clock in minutes, 0 unknown). Raises ValueError, changing
    # nothing, when it is not this client's or needs an outbox larger than
    # the heap holds. event(name, info): told when the outbox grows.
    if (st.version == 5) != e.v5:
        raise ValueError("session is for another MQTT version")
    if st.client_id != e.cid and not (st.cid_assigned and not e.cid):
        raise ValueError("session belongs to client id %r" % st.client_id)
    nbytes = big = 0
    for _, pkt in st.out:
        n = pkt if type(pkt) is int else len(pkt) if pkt else 0
        big = max(big, n)
        nbytes += n
    # More messages or bytes than this configuration's outbox holds (a
    # firmware update lowered max_inflight, outbox_size or outbox_bytes
    # while messages waited): it grows to hold them, as the table of
    # incoming QoS 2 ids does below. Set aside, they would never be sent.
    # This boot only: the next one, drained, makes the configured size.
    # An outbox larger than this heap holds (the update may have lowered
    # the outbox to free RAM) is a state this client cannot use: raised, the
    # MemoryError would stop every boot the same way, so it is set aside.
    q = len(st.out)                   # (places: configure.py's rule, a quarter more for QoS 0)
    grown = False
    if q > e.qos12 or nbytes > len(e.arena):
        old = (e.nslots, e.qos12, len(e.arena))
        try:
            resize(e, max(e.nslots, q + max(4, q // 4)), max(e.qos12, q), max(len(e.arena), nbytes))
        except MemoryError:
            # It may have replaced some tables: all are made again, the
            # grown arena let go first. (Here, not in sizing.resize: in
            # session.py the code cost a board 256 B more heap at every boot.)
            e.arena = None
            resize(e, *old)
            raise ValueError("%d stored messages, %d bytes: more than this heap holds" % (q, nbytes))
        grown = True
    # A packet larger than buf_size (the update lowered it) goes out from
    # the outbox as any other, so the engine's largest packet grows with it,
    # for this boot; publish() still takes none larger than buf_size.
    if big > e.buf_size:
        if e.max_out == e.buf_size:   # (a broker's smaller Maximum Packet Size stays)
            e.max_out = big
        e.buf_size = big
        grown = True
    # Saved at DISCONNECT (where the broker's expiry clock starts) longer ago
    # than the expiry: the broker has dropped it, most likely (event
    # "expired", load.py). The next connect finds out: Session Present 0
    # requeues the messages as new ones and makes the subscriptions again
    # (connect.py). A state saved while connected is never judged: a power
    # cut has no time.
    # A state written while the client held no session (none made yet, or
    # one ended: MQTT 5 session_expiry 0, a 3.1.1 clean session; leave.py)
    # holds messages for the next session, not one to resume or judge: the
    # next connect starts one ("new"), as it would have without this
    # reboot, with the expiry this client is configured for, not the ended
    # one's (load.py: whether it stores).
    held = not st.flags & 0x08        # (the header flag "no session": records.py)
    e.expired = bool(held and st.offline and st.saved_min and now and st.expiry != 0xFFFFFFFF
                     and now - st.saved_min > (st.expiry + 59) // 60)
    clear(e)
    for k in range(len(st.out)):
        pid, pkt = st.out[k]
        e.stored(pid, st.view(k) if type(pkt) is int else pkt)
    # More incoming QoS 2 ids than this client's table (a smaller
    # receive_max now): the table grows to hold them, since an id forgotten
    # before its PUBREL could let a message be delivered twice (MQTT-4.3.3-2).
    if len(st.rx2) > len(e.rx2):
        e.rx2 = array("H", bytes(2 * len(st.rx2)))
    for pid in st.rx2:
        e.rx2[e.rx2_n] = pid
        e.rx2_n += 1
    e.subs = list(st.subs)
    e.last_pid = st.next_pid
    e.cid = st.client_id
    e.cid_assigned = st.cid_assigned
    owed = bool(st.flags & _HF_RESUB)
    if owed != e.resub_owed:          # (set only when it changes: Session's class default)
        e.resub_owed = owed
    if held:
        e.expiry = st.expiry
    e.has_state = held
    # Told last: the callback may publish, save_session() or reuse the
    # bytes given to restore_session() (the packets are views of them until
    # copied). Told earlier, what it published was cleared above.
    if grown and event:
        event("outbox_grown", {"messages": q, "bytes": nbytes})
