# The client's half of an MQTT session, as data plus the rules that change
# it. No sockets, files or clocks: the client feeds it events and performs
# what it returns.
#
# Rules this module owns:
# - MQTT-2.3.1-2 / MQTT-2.2.1-3: a new packet id is non-zero and not in use;
#   the counter wraps 65535 -> 1 and skips ids still held.
# - MQTT-4.4.0-1: on resume, unacknowledged PUBLISH (DUP=1, MQTT-3.3.1-1) and
#   PUBREL are resent with their original ids, in their original order
#   (MQTT-4.6.0-1).
# - MQTT-4.3.3-6: once PUBREC arrived, the PUBLISH is never sent again; only
#   its PUBREL. Its bytes are released then.
# - MQTT-4.3.3-10: an incoming QoS 2 id stays recorded until its PUBREL, and a
#   repeated PUBLISH with that id is acknowledged but not delivered again.
# - MQTT-3.3.4-7 / 4.9.0-2: no more than `window` QoS>0 PUBLISH in flight.
#
# Outgoing messages live, already encoded as PUBLISH packets, in one byte
# arena used as a FIFO ring (a message never wraps round its end), indexed by
# a ring of slots. Sending is a write straight from the arena; nothing is
# copied or allocated per message.
from array import array
from micropython import const

# Slot states.
FREE = const(0)      # hole left by an out-of-order completion
QUEUED = const(1)    # accepted, not sent on this connection
SENT = const(2)      # PUBLISH sent, awaiting PUBACK / PUBREC
RELEASE = const(3)   # PUBREC received: PUBREL owed / awaiting PUBCOMP
# Slot flags (high bits of the state byte).
F_DUP = const(0x10)      # send with DUP=1 (it may have gone out before)
F_REL_DUE = const(0x20)  # PUBREL not yet sent on this connection
_STATE = const(0x0F)


class Outgoing:
    """Outbox and in-flight table of QoS 0/1/2 PUBLISH packets."""

    def __init__(self, slots, arena_bytes):
        self.arena = bytearray(arena_bytes)
        self.size = arena_bytes
        self.nslots = slots
        self.pid = array("H", bytes(2 * slots))
        self.off = array("i", bytes(4 * slots))
        self.len = array("i", bytes(4 * slots))
        self.stamp = array("i", bytes(4 * slots))   # ticks_ms when accepted (message expiry)
        self.expiry = array("i", bytes(4 * slots))  # MQTT 5 Message Expiry in s, 0 = none
        self.state = bytearray(slots)
        self.clear()

    def clear(self):
        self.head = 0        # ring index of the oldest slot
        self.count = 0       # slots from head, holes included
        self.send = 0        # slots from head already handled by drain()
        self.inflight = 0    # SENT + RELEASE slots (count against the window)
        self.held = 0        # QoS 1/2 messages in the session (pending())
        self.nbytes = 0      # bytes of the QoS 1/2 packets held (sizes the stored state)
        self.nbytes0 = 0     # bytes of queued QoS 0 packets
        self.a_head = 0      # arena: oldest byte still used
        self.a_tail = 0      # arena: next free byte
        for i in range(self.nslots):
            self.state[i] = FREE

    # ------------------------------------------------------------ arena
    def reserve(self, n):  # noalloc
        """Arena offset for an n-byte packet, or -1 when there is no room."""
        if self.count >= self.nslots:
            return -1
        if self.a_head == self.a_tail and not self._bytes_held():
            self.a_head = self.a_tail = 0
        h, t = self.a_head, self.a_tail
        if t >= h:
            if t + n <= self.size:
                return t
            if n < h:                 # wrap: skip the unused end of the arena
                return 0
            return -1
        return t if t + n < h else -1

    def _bytes_held(self):  # noalloc
        i = self.head
        for _ in range(self.count):
            if self.len[i] and self.state[i] & _STATE:
                return True
            i = i + 1 if i + 1 < self.nslots else 0
        return False

    def add(self, off, n, pid, qos, now_ms, expiry_s):  # noalloc
        """Append a slot for the packet just encoded at arena[off:off+n]."""
        i = self.head + self.count
        if i >= self.nslots:
            i -= self.nslots
        self.pid[i] = pid
        self.off[i] = off
        self.len[i] = n
        self.stamp[i] = now_ms
        self.expiry[i] = expiry_s
        self.state[i] = QUEUED
        self.count += 1
        self.a_tail = off + n
        if qos:
            self.held += 1
            self.nbytes += n
        else:
            self.nbytes0 += n
        return i

    def unadd(self):  # noalloc
        """Take back the newest slot (its persistence failed)."""
        self.count -= 1
        i = self.head + self.count
        if i >= self.nslots:
            i -= self.nslots
        if self.pid[i]:
            self.held -= 1
            self.nbytes -= self.len[i]
        else:
            self.nbytes0 -= self.len[i]
        self.state[i] = FREE
        self.a_tail = self.off[i]
        self._trim()

    def _trim(self):  # noalloc
        # Drop freed slots at the head and release the arena bytes before the
        # oldest packet still held.
        while self.count and not self.state[self.head] & _STATE:
            self.head = self.head + 1 if self.head + 1 < self.nslots else 0
            self.count -= 1
            if self.send:
                self.send -= 1
        i = self.head
        for _ in range(self.count):
            if self.len[i]:
                self.a_head = self.off[i]
                return
            i = i + 1 if i + 1 < self.nslots else 0
        self.a_head = self.a_tail = 0

    # ------------------------------------------------------------ lookups
    def find(self, pid, want):  # noalloc
        """Ring index of the live slot with this pid in state `want`, or -1."""
        i = self.head
        for _ in range(self.count):
            if self.pid[i] == pid and self.state[i] & _STATE == want:
                return i
            i = i + 1 if i + 1 < self.nslots else 0
        return -1

    def holds(self, pid):  # noalloc
        i = self.head
        for _ in range(self.count):
            if self.pid[i] == pid and self.state[i] & _STATE:
                return True
            i = i + 1 if i + 1 < self.nslots else 0
        return False

    def index(self, k):  # noalloc
        i = self.head + k
        return i - self.nslots if i >= self.nslots else i

    # ------------------------------------------------------------ transitions
    def complete(self, i):  # noalloc
        """PUBACK / PUBCOMP (or a refusal code >= 0x80, MQTT-4.4.0-2)."""
        self.nbytes -= self.len[i]
        self.state[i] = FREE
        self.len[i] = 0
        self.inflight -= 1
        self.held -= 1
        self._trim()

    def released(self, i):  # noalloc
        """PUBREC arrived: the PUBLISH bytes are no longer needed (MQTT-4.3.3-6)."""
        self.nbytes -= self.len[i]
        self.state[i] = RELEASE | F_REL_DUE
        self.len[i] = 0
        self._trim()

    def sent_qos0(self, i):  # noalloc
        self.nbytes0 -= self.len[i]
        self.state[i] = FREE
        self.len[i] = 0
        self._trim()

    def resume(self):  # noalloc
        """A session resumes on a new connection: everything in flight is
        owed again, PUBLISH with DUP=1 and PUBREL, in the original order."""
        i = self.head
        for _ in range(self.count):
            s = self.state[i] & _STATE
            if s == SENT:
                self.state[i] = QUEUED | F_DUP
            elif s == RELEASE:
                self.state[i] = RELEASE | F_REL_DUE
            i = i + 1 if i + 1 < self.nslots else 0
        self.send = 0
        self.inflight = self.count_state(RELEASE)

    def requeue_as_new(self):  # noalloc
        """The broker lost the session (Session Present 0): unacknowledged
        messages go out again as new PUBLISH (DUP 0) with their own ids.
        A QoS 2 message past PUBREC was received by the old session; it is
        dropped (its PUBREL has no one to go to). Returns how many dropped."""
        dropped = 0
        i = self.head
        for _ in range(self.count):
            s = self.state[i] & _STATE
            if s == SENT or s == QUEUED:
                self.state[i] = QUEUED
                if self.len[i]:
                    self.arena[self.off[i]] &= 0xF7     # a new publish: DUP 0
            elif s == RELEASE:
                self.state[i] = FREE
                self.held -= 1
                dropped += 1
            i = i + 1 if i + 1 < self.nslots else 0
        self.send = 0
        self.inflight = 0
        self._trim()
        return dropped

    def count_state(self, want):  # noalloc
        n = 0
        i = self.head
        for _ in range(self.count):
            if self.state[i] & _STATE == want:
                n += 1
            i = i + 1 if i + 1 < self.nslots else 0
        return n


class Incoming2:
    """Packet ids of incoming QoS 2 messages delivered and awaiting PUBREL."""

    def __init__(self, size):
        self.ids = array("H", bytes(2 * size))
        self.size = size
        self.n = 0

    def has(self, pid):  # noalloc
        ids = self.ids
        for k in range(self.n):
            if ids[k] == pid:
                return True
        return False

    def add(self, pid):  # noalloc
        if self.n >= self.size:
            return False
        self.ids[self.n] = pid
        self.n += 1
        return True

    def remove(self, pid):  # noalloc
        ids = self.ids
        for k in range(self.n):
            if ids[k] == pid:
                self.n -= 1
                ids[k] = ids[self.n]
                return True
        return False

    def clear(self):
        self.n = 0


class PacketIds:
    """MQTT-2.3.1-2: non-zero, wraps 65535 -> 1, skips ids in use."""

    def __init__(self):
        self.last = 0

    def next(self, in_use):  # noalloc
        pid = self.last
        for _ in range(65535):
            pid = pid + 1 if pid < 65535 else 1
            if not in_use(pid):
                self.last = pid
                return pid
        return 0
