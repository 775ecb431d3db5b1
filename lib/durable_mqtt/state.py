# The session state as bytes, out (save_session()) and in
# (restore_session()): API calls a device makes rarely, so a module of their
# own, loaded for the call and unloaded after (client.unload). In load.py
# they were compiled at every boot from source, beside the boot's own
# peak (32-bit, small configuration: 3 KB more heap once restore_session()
# put back what flash refused). The record stream is stream.py's.


def save_session(c):
    if c.journal:
        c.journal.flush()
    from .store import state_bytes
    return state_bytes(c.engine)


def restore_session(c, data):
    if c.is_connected():
        from .errors import MQTTException
        raise MQTTException(-8, "restore_session() needs a disconnected client")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("restore_session() takes the bytes save_session() returned, not %s" % type(data).__name__)
    from .stream import parse
    from .restore import restore
    if c.journal:
        # What flash holds now, to put back should flash refuse the new
        # state (a full filesystem): RAM must describe what flash holds, or
        # the next write adds to the old state there what belongs to the new.
        from .store import state_bytes
        old = (c.persist, c.clean_session, c.clean, c.sent_expiry, state_bytes(c.engine))
    try:
        st = parse(data)
        if st.torn or st.dropped:     # (dropped: a record skipped as damage)
            raise ValueError("truncated or damaged (save_session() bytes are whole)")
        restore(c.engine, st, 0, c.event)
    except ValueError as x:
        raise ValueError("not a valid session state: %s" % x)
    c.clean_session = c.clean = False   # (clean: as if the state's last CONNECT was this client's: leave.py)
    c.sent_expiry = c.expiry_for(False)
    if c.journal:
        c.persist = True
        try:
            j = c.journal.checkpoint(replaced=True)
        except Exception:
            c.persist, c.clean_session, c.clean, c.sent_expiry, data = old
            restore(c.engine, parse(data), 0)
            raise
        if j is not None:
            c.journal = j             # (a session directory: a new one, slotmove.replace)
            c.unsaved = 0             # (its count starts again: connect.py)
    c.report()                        # what the event callback raised (outbox_grown)
