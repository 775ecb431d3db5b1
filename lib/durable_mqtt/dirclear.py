# Clearing a session directory, rarely (filestore.py's journal calls these;
# dirstate.py keeps the checkpoint, which would otherwise hold them in the
# heap at every connect, subscribe and disconnect): erasing the session (a
# clean start, a session ended), setting an unusable one aside (boot),
# emptying acknowledged records when the outbox is full. Loaded for the
# call and unloaded after (client.unload). docs/session-format.md#session-directory.
import os


def make_room(j, s):
    # Before slot s is written: acknowledged records still on flash (the
    # OUT_REL of a finished message, kept while its OUT_PUB was there) are
    # emptied until the new record leaves no more than the outbox holds, so
    # that no cut between the writes finds one too many. A guarded OUT_PUB
    # goes before the OUT_REL it guards; never an OUT_REL whose OUT_PUB is
    # still on flash.
    while j.records() - j.stale[s] + 1 > j.e.qos12:
        t = -1
        for r in range(j.made):
            if j.stale[r] and not j.blocked[r] and (r != s or j.guard[r]):
                t = r
                if j.guard[r]:
                    break
        if t < 0:
            return
        j.put_file(str(t), b"")
        j.rewritten(t)
        j.lead = True


def erase(j):
    # Forget the session: "h" first (without it nothing loads), then every
    # slot. An "h.tmp" (a checkpoint whose rename was refused) goes before
    # it: a boot that finds no "h" takes a whole "h.tmp" for a checkpoint
    # cut before its rename (load.py), and brought the session back.
    if j.path:
        remove(j.path + ".d")     # (in PATH.d.d: an old PATH.d left would be read at the next boot)
    for name in ("h.tmp", "h", "i0", "i1"):
        remove(j.dir + "/" + name)
        if name[0] == "h":
            emptied(j, name)
    for s in range(j.made):
        if j.pid[s] or j.stale[s]:
            j.put_file(str(s), b"")
        _forget(j, s)
    j.nacks = j.nbatch = 0


def set_aside(j):
    # Keep an unusable session for inspection (PATH.d.bad) and start empty.
    bad = j.dir + ".bad"
    # The older copy goes whole, whatever it is: were it left (a file, a
    # directory holding one), the rename would fail and the unusable
    # directory stay in place, its slots read as this session's at the
    # next boot.
    remove(bad)
    if j.path:
        remove(j.path + ".d")     # (in PATH.d.d: as erase())
    try:
        os.rename(j.dir, bad)
    except OSError:
        # Refused (a full filesystem): the state goes where it is, or its
        # slots and ids would be read as this session's once a header is
        # written. Whatever cannot be removed is emptied (quietly: a file
        # neither removed nor emptied is one this filesystem will not let
        # a header be written beside either, until it has room again).
        remove(j.dir)
        try:
            bad = list(os.ilistdir(j.dir))     # what is left ("bad" is free again)
        except OSError:
            bad = ()
        for x in bad:
            try:
                j.put_file(x[0], b"")
            except OSError:
                pass
    from .dirstate import make_dir
    make_dir(j.dir)
    for s in range(j.made):
        _forget(j, s)
    j.made = 0
    j.nacks = 0


def emptied(j, name):
    # After remove(): a header the filesystem would not remove (a full
    # LittleFS refuses removes) is emptied instead; an empty "h" or "h.tmp"
    # holds no session. Refused too: StoreFull, raised with the session
    # still whole on flash ("h.tmp" goes first, the slots after "h"), so
    # that the caller keeps it, rather than have the next boot bring back
    # a session this one ended.
    try:
        os.stat(j.dir + "/" + name)
    except OSError:
        return
    j.put_file(name, b"")


def remove(path):
    # Remove path, quietly: a file, or a directory and all it holds.
    try:
        for x in list(os.ilistdir(path)):
            remove(path + "/" + x[0])
    except OSError:               # a file, or nothing
        try:
            os.remove(path)
        except OSError:
            pass
        return
    try:
        os.rmdir(path)
    except OSError:
        pass


def _forget(j, s):
    j.pid[s] = j.stale[s] = j.rel[s] = j.guard[s] = j.blocked[s] = 0
