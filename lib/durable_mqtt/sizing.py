# The session engine's set-up: an empty Session of the sizes asked (its
# constructor's work), grown for a stored state larger than this
# configuration (restore.py), emptied (restore.py). What runs once per
# client or boot, out of session.py so that a running device does not keep
# it: loaded for the call and unloaded after (client.unload). Sans-IO as
# session.py: no socket, no store, no clock.
from array import array
from micropython import const

_LONG_BYTES = 8 // len(array("l", bytes(8)))     # 4 on a board, 8 on the 64-bit unix port
_FREE = const(0)         # slot state (session.py's)


def setup(e, v5, cid, slots, qos12, arena, rx2, window, max_out):
    # Session(...) (session.py has what each argument is).
    e.v5 = v5
    e.cid = cid
    e.cid_assigned = False          # the broker assigned cid (MQTT 5)
    e.expiry = 0                    # Session Expiry Interval, s
    e.subs = []                     # [(filter, options, subscription id)]
    e.last_pid = 0
    e.has_state = False             # holds session state (MQTT-3.2.2-4)
    e.expired = False               # a restored state outlived its expiry (load.py)
    e.dropped = 0                   # QoS 2 past PUBREC the last clean start dropped
    e.max_inflight = window
    e.buf_size = max_out
    e.limits(0, 0, 2, 1)            # none known before a CONNACK
    e.rx2 = array("H", bytes(2 * rx2))
    e.req_pid = 0                   # SUBSCRIBE / UNSUBSCRIBE awaiting its ack
    e.run_pid = e.run_end = 0       # next_pid: ids run_pid..run_end-1 free
    e.rel_due = False               # a slot may owe a PUBREL (_REL_DUE)
    e.req_kind = 0
    e.stale_n = 0                   # requests sent on this connection whose wait was abandoned
    e.rec = e.rec_pid = e.rec_slot = 0
    e.done_pid = e.done_reason = 0
    e.src = None
    e.src_off = 0
    resize(e, slots, qos12, arena)


def resize(e, slots, qos12, arena):
    # An empty outbox of `slots` places, qos12 of them promised to QoS 1/2,
    # and `arena` bytes. Also for a stored state larger than this
    # configuration (restore.py).
    e.arena = bytearray(arena)
    e.nslots = slots
    e.qos12 = qos12
    e.qos0_bytes = arena // 5       # QoS 0 waits only in room of its own
    t = "H" if arena < 65536 else "i"
    w = 2 if arena < 65536 else 4
    e.pid = array("H", bytes(2 * slots))
    e.off = array(t, bytes(w * slots))
    e.len = array(t, bytes(w * slots))
    # MQTT 5 expiry: a ticks_ms deadline, 0 none. A C long: ticks_ms
    # wraps at 2**30 on a board, at 2**62 on the 64-bit unix port. MQTT
    # 3.1.1 has no Message Expiry: every deadline stays 0, a byte each.
    e.dl = array("l", bytes(_LONG_BYTES * slots)) if e.v5 else bytearray(slots)
    e.st = bytearray(slots)
    clear(e)


def clear(e):
    # An empty outbox, no incoming QoS 2 id.
    e.first = 0             # ring index of the oldest slot
    e.count = 0             # slots from first, holes included
    e.send = 0              # slots from first handled on this connection
    e.inflight = 0          # SENT and RELEASE slots (the window)
    e.held = 0              # QoS 1/2 messages in the session: pending()
    e.nbytes = 0            # bytes of the QoS 1/2 packets held
    e.nbytes0 = 0           # bytes of queued QoS 0 packets
    e.n0 = 0                # queued QoS 0 packets (count - held counts holes too)
    e.a_head = 0            # arena: oldest byte in use
    e.a_tail = 0            # arena: next free byte
    e.rx2_n = 0
    e.floods = 0            # links closed by _rx2_full()
    for i in range(e.nslots):
        e.st[i] = _FREE
