# MQTTClient.stats(): its counters and state as a dict. A module of its
# own, loaded at the first call: not a per-message path, and a board
# need not hold these lines, nor the counters' names, before it.
# counts[], in link.py's numbering: one string, split here, since on a
# board that compiles the .py each short string literal becomes an interned
# name for good (qstr), and these are needed only there.
_COUNTS = "sent acked refused dropped_expired received dup_in dropped_qos0 oversize_in resent reconnects"


def stats(c):
    # Client c's counters and state as a dict (docs/api.md names them).
    d = {}
    for i, name in enumerate(_COUNTS.split()):
        d[name] = c.counts[i]
    e = c.engine
    d["pending"] = e.held
    d["inflight"] = e.inflight
    # (not count - inflight: count takes in the places freed behind an
    # older message still held, a QoS 2 awaiting PUBCOMP)
    d["queued"] = e.held + e.n0 - e.inflight
    j = c.journal
    if j:
        d["store_appends"] = j.appends
        d["store_checkpoints"] = j.checkpoints
        for k, v in j.stats().items():
            d["flash_" + k] = v
    return d
