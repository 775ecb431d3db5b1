# The session's header and subscription records (docs/session-format.md),
# shared by both layouts: the log (store.py streams them, allocating
# nothing) and the session directory (dirstate.py writes them as the "h"
# file). Also the size check both stores use before accepting a message,
# and which filesystem errors they report as a full store (raise_full).
import time
from micropython import const

from .codec import put_u16
from .errors import StoreFull

MAGIC = b"DMQS"
MAX_PACKET = const(65533)  # the largest PUBLISH a record holds (its u16 length: pid + packet)
FORMAT = const(1)          # the format version this code writes
_R_HEADER = const(0x01)    # proto u8, flags u8, expiry u32, saved_min u32, next_pid u16, id_len u16, id
_R_SUB = const(0x07)       # sub_id u32, options u8, topic filter
_HF_ASSIGNED_ID = const(0x01)   # the client id was assigned by the broker
_HF_OFFLINE = const(0x02)       # written at DISCONNECT: saved_min starts the broker's expiry clock
_HF_RESUB = const(0x04)         # the subscriptions are owed to the broker (Session.resub_owed)
# 0x08: no session held (before the first CONNACK, after one ended): the
# state's messages are for the next session (a literal where used: a name
# more would cross a source reboot's qstr pool, tests/test_names.py)
_EPOCH_2000 = const(946684800)
_ENOSPC = const(28)
_EROFS = const(30)


def header(e, h, expiry, offline):  # noalloc when offline is False
    # The HEADER record of engine e into h[0:17], up to the client id;
    # expiry: the Session Expiry Interval as 4 bytes.
    cid = e.cid
    h[0] = _R_HEADER
    put_u16(h, 1, 14 + len(cid))
    h[3] = 5 if e.v5 else 4
    h[4] = (_HF_ASSIGNED_ID if e.cid_assigned else 0) | (_HF_OFFLINE if offline else 0) | (
        _HF_RESUB if e.resub_owed else 0) | (0 if e.has_state else 0x08)
    h[5:9] = expiry
    # The time is kept only for a state saved at DISCONNECT, the one case
    # the expiry rule judges (session.py); reading it allocates on some ports.
    m = wall_minutes() if offline else 0
    put_u16(h, 9, m >> 16)
    put_u16(h, 11, m & 0xFFFF)
    put_u16(h, 13, e.last_pid)
    put_u16(h, 15, len(cid))


def sub(h, k, e):  # noalloc
    # The SUB record of e's subscription k into h[0:8], up to the filter;
    # returns the filter.
    f, opts, sid = e.subs[k]
    h[0] = _R_SUB
    put_u16(h, 1, 5 + len(f))
    put_u16(h, 3, sid >> 16)
    put_u16(h, 5, sid & 0xFFFF)
    h[7] = opts
    return f


def fits(e, n, capacity):  # noalloc
    # Would engine e's state, grown by a record of n bytes (a PUBLISH and 9),
    # be at most capacity bytes (what one checkpoint of the store can hold)?
    # The incoming QoS 2 table counts full: those ids are taken without
    # asking (a state past capacity could never be checkpointed again, not
    # even at boot). A record's length is a u16: a PUBLISH of more than
    # MAX_PACKET bytes can never be stored.
    if n > MAX_PACKET + 9:
        return False
    n += 30 + len(e.cid) + e.nbytes + 13 * e.count + 9 * len(e.rx2)
    for k in range(len(e.subs)):
        n += 16 + len(e.subs[k][0])
    return n <= capacity


def wall_minutes():
    # Minutes since 2000-01-01 UTC from the board's clock, 0 when the clock
    # is not set (before 2020). Below 2**30: no big integer on a board.
    t = time.time()
    if time.gmtime(0)[0] != 2000:
        t -= _EPOCH_2000
    return int(t) // 60 if t > 631152000 else 0


def raise_full(x):
    # A write the filesystem refuses for want of room, or at all (mounted
    # read-only): StoreFull, the message not accepted, nothing lost, and a
    # boot reports it (store_full) instead of raising. Full also: 36,
    # LittleFS's ENAMETOOLONG for a new file whose name its full metadata
    # block cannot take (lfs2_file_open() turns the create's NOSPC into it,
    # littlefs 3b62ec1; our names are far below name_max), and 13, FAT's
    # EACCES (FR_DENIED) for a directory or a new entry on a full card.
    # (Numbers, not consts: a const is one more interned name in a source
    # install, tests/test_names.py.)
    if x.args and x.args[0] in (_ENOSPC, _EROFS, 36, 13):
        raise StoreFull(-7, "filesystem read-only" if x.args[0] == _EROFS else "filesystem full")
    raise x
