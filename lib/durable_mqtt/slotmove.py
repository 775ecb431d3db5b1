# Boot only, and rarely: a session directory written by a client with a
# larger outbox holds a message in a slot past this client's. dirload.py
# calls move_far() then; it is a module of its own because dirload.py's
# compile is the heap's peak of a boot from .py source with a full outbox.
import os

from .codec import u16
from .dirload import note_slot, read_slot, seq_of


def move_far(j, moved, buf, nbytes):
    for name in moved:
        # A message in a slot past this client's outbox goes into a free slot
        # of it: written there, then removed (a cut between leaves two
        # copies, the same record: the next boot keeps one).
        n = read_slot(j.dir + "/" + name, buf)
        s = -1
        for t in range(len(j.pid) - 1, -1, -1):   # its copy, else the first free slot
            if j.pid[t] == u16(buf, 7) and j.seq[t] == seq_of(buf):
                s = t
                break
            if not j.pid[t]:
                s = t
        if s < 0:
            raise ValueError("session holds more messages than this client's outbox")
        if not j.pid[s]:
            j.put_file(str(s), memoryview(buf)[0:n])
            j.made = max(j.made, s + 1)
            note_slot(j, s, buf, n, nbytes)
        os.remove(j.dir + "/" + name)
