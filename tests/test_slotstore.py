"""The session directory on LittleFS (lib/durable_mqtt/filestore.py, read
back by load.py) under power cuts, on both stock mounts: ESP32
(VfsLfs2(bdev), 32-byte programs) and RP2040 (VfsLfs2(bdev, progsize=256)),
on the NOR flash test device (tests/mp/norflash.py).

A device runs a long script of session changes (publishes at QoS 1 and 2,
acknowledgements, PUBREC, incoming QoS 2 and its PUBREL, flushes, header
rewrites), so the directory grows, slots are reused and LittleFS compacts
its metadata. Before chosen steps the flash image is kept; each such step
is then replayed from that image, booting the device first (the state is
whatever load.py reads back), with the power cut at every program and
erase it makes, in several ways (torn, noisy, not written; erases left
half done). After each cut the device boots again: the session it reads
must be the state before the step or the state after it, never anything
else, and the store must keep working. Without cuts, after every step, what
a boot would read must match the engine that wrote it: every message it
holds, as it holds it, in order; besides them only completed messages not
yet emptied, as they were when they completed (never a PUBLISH of a QoS 2
message past its PUBREC).
"""
import os
import subprocess
import time

import pytest

from conftest import MICROPYTHON, mp_env, run_mp

SOAK = bool(os.environ.get("SOAK"))

# What both scripts share: an engine as the client would make it for a
# small outbox, and its changes handed to the journal as the client does.
ENGINE = r"""
from durable_mqtt.session import Session
from durable_mqtt import load, subs


def engine():
    e = Session(False, b"dev", 24, 16, 4096, 16, 8, 1024)
    e.expiry = 0xFFFFFFFF
    return e


def commit(e, j):
    if e.rec:
        j.put()
    if e.done_pid:
        j.acked(e.done_pid)
        e.done_pid = 0
"""

SCRIPT = ENGINE + r"""
import gc, vfs
from norflash import NorFlash, PowerCut

P = %(prog)d                  # program size: 32 as on ESP32, 256 as on RP2040
STEPS = %(steps)d
KEEP = %(keep)r               # the steps swept
MNT = "/fl"
PATH = MNT + "/s"
tx = bytearray(64)
MODES = ((True, 0.5, False, "prefix"), (False, 0.0, False, "stripes"), (True, 0.9, True, "suffix"))


def mount(dev):
    vfs.mount(vfs.VfsLfs2(dev, progsize=P), MNT)


def boot(dev):
    # A reset: a new engine, the journal opened on the mounted image.
    e = engine()
    events = []
    j = load.open_journal(PATH, e, None, 0, lambda ev, info: events.append(ev))
    return e, j, events


def state(e):
    # What the session holds: messages in order (id, packet or None for a
    # PUBREL owed), the incoming QoS 2 ids.
    out = []
    for k in range(e.count):
        s = e.slot(k)
        if s:
            i = e.index(k)
            pkt = bytearray(e.arena[e.off[i]:e.off[i] + e.len[i]]) if s == 1 else None
            if pkt:
                pkt[0] &= 0xF7                   # DUP: set by a resend, not session state
            out.append((e.pid[i], pkt))
    return out, sorted(e.rx2[k] for k in range(e.rx2_n))


def resume(e):
    # The booted session resumes: what it owes is sent again.
    if e.count:
        e.connected(True, False)
    while e.next_out(0, tx) > 0:
        pass


def step(e, j, k):
    # Step k of the script: always the same change for the same k. Returns
    # whether the change must be on flash when the step returns (an
    # acknowledgement need not be: it is written lazily).
    kind = k %% 9
    if kind in (0, 2, 5):                        # publish QoS 1 / 2, payload sizes vary
        q = 2 if kind == 5 else 1
        e.accept(b"tele/%%d" %% (k %% 5), b"x" * (8 + (k * 7) %% 60), q, 0, None, 0, 0)
        commit(e, j)
    elif kind in (1, 6, 7):                      # the oldest PUBLISH acknowledged
        resume(e)
        for i in range(e.nslots):
            if e.st[i] & 15 == 2:
                lazy = e.arena[e.off[i]] & 6 == 2
                if lazy:
                    e.puback(e.pid[i], 0)
                else:
                    e.pubrec(e.pid[i], 0, tx)
                commit(e, j)
                j.tick(0)                        # as the client: emptied once nothing is in flight
                return not lazy
        return True
    elif kind == 3:                              # PUBCOMP for a PUBREL owed
        resume(e)
        for i in range(e.nslots):
            if e.st[i] & 15 == 3:
                e.pubcomp(e.pid[i])
                commit(e, j)
                j.tick(0)
                return False
        return True
    elif kind == 4:                              # incoming QoS 2, then (later) its PUBREL
        pid = 100 + k %% 7
        if e.incoming(2, pid):
            e.ack_incoming(2, pid, 0, tx)
            commit(e, j)
        else:
            e.pubrel(pid, tx)
            commit(e, j)
    elif kind == 8:                              # a header rewrite (connect, subscribe)
        subs.subscribed(e, b"cmd/%%d" %% (k %% 3), 1, 0)
        j.checkpoint()
    return True


def reads_back(dev, e, last, gone):
    # What a boot would read from dev now, against the engine e that wrote
    # it: every message e holds, in e's order and as e holds it (an OUT_REL
    # once PUBREC came: the PUBLISH is never sent again after its PUBREL);
    # beside them only completed messages not yet emptied on flash, each as
    # it was when it completed; the incoming QoS 2 ids exactly.
    d = NorFlash(4096, 32, prog_size=P)
    d.restore(dev.snapshot())
    vfs.mount(vfs.VfsLfs2(d, progsize=P), "/chk")
    e2 = engine()
    load.open_journal("/chk/s", e2, None, 0, lambda ev, info: None)
    vfs.umount("/chk")
    (ram, ram_ids), (got, got_ids) = state(e), state(e2)
    for pid, pkt in ram:
        last[pid] = pkt
    held = dict(ram)
    for pid in list(last):
        if pid not in held:
            gone[pid] = last.pop(pid)
    assert got_ids == ram_ids, (got_ids, ram_ids)
    assert [x for x in got if x[0] in held] == ram, (got, ram)
    for pid, pkt in got:
        assert pid in held or gone.get(pid, 0) == pkt, ("came back changed", pid, pkt, gone.get(pid, 0))


dev = NorFlash(4096, 32, prog_size=P)
vfs.VfsLfs2.mkfs(dev, progsize=P)
mount(dev)
e, j, ev = boot(dev)
j.checkpoint()
images = {}
last, gone = {}, {}
for k in range(STEPS):
    if k in KEEP:
        images[k] = dev.snapshot()
    step(e, j, k)
    reads_back(dev, e, last, gone)
vfs.umount(MNT)

cuts = outcomes_before = outcomes_after = 0
for k in KEEP:
    n = 1
    while True:
        completed = 0
        for torn, fraction, noise, pattern in MODES:
            d = NorFlash(4096, 32, prog_size=P)
            d.restore(images[k])
            mount(d)
            e, j, ev = boot(d)
            before = state(e)
            assert "discarded" not in ev and "damaged" not in ev, (k, ev)
            d.cut_after(n, torn=torn, fraction=fraction, noise=noise, count_erases=True, erase_pattern=pattern)
            durable = True
            try:
                durable = step(e, j, k)
                done = True
            except PowerCut:
                done = False
            after = state(e)
            d.disarm()
            d = d.reboot()
            try:
                vfs.umount(MNT)
            except Exception:
                pass
            gc.collect()
            mount(d)
            e, j, ev = boot(d)
            got = state(e)
            assert "discarded" not in ev, (k, n, ev)
            if got == before and (not done or not durable):
                outcomes_before += 1
            elif got == after:
                outcomes_after += 1
            else:
                raise AssertionError("step %%d cut %%d %%r: loaded %%r\n before %%r\n after %%r"
                                     %% (k, n, (torn, fraction, pattern), got, before, after))
            # The store works on after the cut: one more message, read back.
            e.accept(b"after", b"cut", 1, 0, None, 0, 0)
            commit(e, j)
            want = state(e)
            d = d.reboot()
            vfs.umount(MNT)
            mount(d)
            e, j, ev = boot(d)
            assert state(e) == want, (k, n, state(e), want)
            vfs.umount(MNT)
            cuts += 1
            completed += done
        if completed == len(MODES):
            break
        n += 1
        assert n < 200
print("SWEEP", P, "steps", len(KEEP), "cuts", cuts, "before", outcomes_before, "after", outcomes_after)
"""


PROGS = (32, 256)


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory, request):
    """Both mounts' sweeps start at once, one unix port process each: they
    share nothing, and each takes a core for ~17 s, so on two cores the pair
    takes the time of one. Each test below waits for its own and judges it.
    Early steps (the directory and its slots being created) and runs of
    later ones covering every kind of change many times over, across
    LittleFS compacting the directory (every ~18 writes on ESP32, ~11 on
    RP2040). `make soak` sweeps every step of a longer script."""
    steps, keep = (400, range(400)) if SOAK else (240, list(range(0, 45)) + list(range(180, 240)))
    d = tmp_path_factory.mktemp("sweeps")
    procs = {}
    # Only the sweeps this run will judge (pytest -k ... may pick one).
    wanted = {it.callspec.params["prog"] for it in request.session.items
              if it.originalname == "test_power_cut_at_every_program_of_every_kind_of_change"}
    try:
        for prog in sorted(wanted):
            # The image copies need contiguous blocks (131,073 B): 16 MB holds
            # those of make test's sweep, not the longer one of make soak
            # (MemoryError). A smaller heap is a faster collection, and every
            # boot collects.
            cmd = [MICROPYTHON, "-X", "heapsize=%s" % ("64M" if SOAK else "16M"),
                   "-c", SCRIPT % {"prog": prog, "steps": steps, "keep": set(keep)}]
            # Files, not pipes: neither process can stall on a full pipe
            # while the other test waits.
            out, err = open(d / ("sweep%d.out" % prog), "w+"), open(d / ("sweep%d.err" % prog), "w+")
            procs[prog] = (subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=mp_env()), out, err,
                           time.monotonic())
        yield procs
    finally:
        for p, out, err, _ in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
            out.close()
            err.close()


def sweep(procs, prog, timeout=1800):
    p, out, err, t0 = procs[prog]
    p.wait(timeout=max(1, timeout - (time.monotonic() - t0)))
    out.seek(0)
    err.seek(0)
    stdout, stderr = out.read(), err.read()
    if p.returncode != 0:
        pytest.fail("micropython exited %d\n--- stdout\n%s\n--- stderr\n%s"
                    % (p.returncode, stdout[-6000:], stderr[-3000:]))
    line = [x for x in stdout.splitlines() if x.startswith("SWEEP")]
    assert line, stdout
    f = line[0].split()
    assert int(f[5]) > 50 and int(f[7]) > 0 and int(f[9]) > 0, line
    return line[0]


@pytest.mark.parametrize("prog", PROGS)
def test_power_cut_at_every_program_of_every_kind_of_change(sweeps, prog):
    # ESP32 (32-byte programs) and RP2040 (256); see the sweeps fixture.
    print(sweep(sweeps, prog))


FUZZ = r"""
import os
from durable_mqtt import MQTTClient
D = %(dir)r
CASES = %(cases)d
PATH = D + "/s"


class Rand:                  # deterministic on every port
    def __init__(self, seed):
        self.x = seed
    def next(self, n):
        self.x = (self.x * 1103515245 + 12345) & 0x7FFFFFFF
        return (self.x >> 8) %% n


def ls(p):
    try:
        return sorted(os.listdir(p))
    except OSError:
        return []


def rmtree(p):
    for n in ls(p):
        os.remove(p + "/" + n)
    try:
        os.rmdir(p)
    except OSError:
        pass


def read(p):
    with open(p, "rb") as f:
        return f.read()


def write(p, b):
    with open(p, "wb") as f:
        f.write(b)


# A valid session directory: QoS 1 and 2 messages, a subscription-free header.
rmtree(PATH + ".d")
c = MQTTClient("fz", "127.0.0.1", 1, clean_session=False, session_file=PATH, max_inflight=4, outbox_size=8)
written = set()
for i in range(9):
    pid = c.publish("fz/%%d" %% i, b"payload-%%d" %% i * (1 + i %% 4), qos=1 + i %% 2)
    written.add(pid)
c.close()
good = {n: read(PATH + ".d/" + n) for n in ls(PATH + ".d")}


def packets(cl):
    # The restored messages as the client would resend them (save_session()).
    from durable_mqtt.stream import parse
    return parse(cl.save_session()).out

base = packets(MQTTClient("fz", "127.0.0.1", 1, clean_session=False, session_file=PATH, max_inflight=4, outbox_size=8))
rmtree(PATH + ".d")
r = Rand(7)
outcomes = {}
for case in range(CASES):
    rmtree(PATH + ".d")
    rmtree(PATH + ".d.bad")
    os.mkdir(PATH + ".d")
    files = dict(good)
    names = sorted(files)
    for _ in range(1 + r.next(3)):
        op = r.next(6)
        n = names[r.next(len(names))]
        b = bytearray(files.get(n, b""))
        if op == 0 and b:                        # flip a bit
            b[r.next(len(b))] ^= 1 << r.next(8)
        elif op == 1:                            # cut short
            b = b[:r.next(len(b) + 1)]
        elif op == 2:                            # garbage tail
            b += bytes(r.next(256) for _ in range(r.next(20)))
        elif op == 3:                            # the file gone
            files.pop(n, None)
            continue
        elif op == 4:                            # another file's bytes (a slot copied over another)
            b = bytearray(files.get(names[r.next(len(names))], b""))
        else:                                    # zeroed
            b = bytearray(len(b))
        files[n] = bytes(b)
    for n, b in files.items():
        write(PATH + ".d/" + n, b)
    try:
        cl = MQTTClient("fz", "127.0.0.1", 1, clean_session=False, session_file=PATH, max_inflight=4, outbox_size=8)
    except Exception as x:
        raise AssertionError("case %%d: the constructor raised %%r" %% (case, x))
    ev = cl.last_event
    assert ev in (None, "damaged", "discarded"), (case, ev)
    got = packets(cl)
    for pid, pkt in got:                         # nothing restored that was never written
        assert [pid, pkt] in base or (pkt is None and any(p == pid for p, _ in base)), (case, pid, pkt, base)
    assert cl.pending() == len(got)
    cl.publish("fz/after", b"ok", qos=1)         # the store works on
    cl.close()
    again = MQTTClient("fz", "127.0.0.1", 1, clean_session=False, session_file=PATH, max_inflight=4, outbox_size=8)
    assert again.pending() == len(got) + 1, (case, again.pending(), len(got))
    outcomes[ev] = outcomes.get(ev, 0) + 1
print("FUZZ", CASES, sorted((str(k), v) for k, v in outcomes.items()))
"""


def test_mutated_session_directories_restore_or_set_aside(tmp_path):
    # Random damage to the directory's files (bit flips, cuts, garbage,
    # deletions, one file's bytes in another, zeroes): the constructor never
    # raises; the outcome is a documented event; nothing is restored that
    # was never written; the store keeps working.
    n = 4000 if SOAK else 400
    r = run_mp(FUZZ % {"dir": str(tmp_path), "cases": n}, timeout=900)
    assert ("FUZZ %d" % n) in r.stdout, r.stdout
    print(r.stdout.strip())


def test_qos2_publish_never_comes_back_after_its_pubrel(tmp_path):
    """The OUT_REL of a QoS 2 message goes into another slot than its
    OUT_PUB (so a cut never leaves neither). The OUT_PUB's slot must then be
    reused or emptied before the OUT_REL's: were the OUT_REL's slot reused
    first, a reboot would find the OUT_PUB alone and send the PUBLISH again
    after its PUBREL, which the broker takes for a new message. Here slot 0
    is the first free one when the PUBREC comes (its message was acked), so
    it takes the OUT_REL, and is the first free one again when the next
    message comes."""
    r = run_mp(ENGINE + r"""
PATH = %r
tx = bytearray(64)
def boot():
    e = engine()
    j = load.open_journal(PATH, e, None, 0, lambda ev, info: None)
    return e, j
def held(e):
    out = []
    for k in range(e.count):
        i = e.index(k)
        out.append((e.pid[i], "OUT_PUB" if e.slot(k) == 1 else "OUT_REL"))
    return out
e, j = boot()
j.checkpoint()
m0 = e.accept(b"t", b"m0", 1, 0, None, 0, 0); commit(e, j)          # slot 0
a = e.accept(b"t", b"a", 2, 0, None, 0, 0); commit(e, j)            # slot 1
while e.next_out(0, tx) > 0:
    pass
e.puback(m0, 0); commit(e, j)                                       # slot 0 free (lazily)
e.pubrec(a, 0, tx); commit(e, j)                                    # OUT_REL of a: slot 0
e.pubcomp(a); commit(e, j)                                          # slot 0 free again
c = e.accept(b"t", b"c", 1, 0, None, 0, 0); commit(e, j)            # must not take slot 0
e2, j2 = boot()
print("HELD", held(e2))
assert (a, "OUT_PUB") not in held(e2), held(e2)
assert (c, "OUT_PUB") in held(e2), held(e2)
print("OK")
""" % str(tmp_path / "s"))
    assert "OK" in r.stdout, r.stdout


def test_a_slot_longer_than_this_clients_buf_size(tmp_path):
    """A session directory written with a larger buf_size than the client
    that reads it back. Boot reads each slot into a buffer of buf_size + 14
    bytes; these are the files that do not fit it. A whole message longer
    than buf_size makes the buffer grow and is restored (event
    outbox_grown: it goes out as any other); a damaged file of that length
    is only emptied ("damaged"), the rest restored."""
    r = run_mp(r"""
from durable_mqtt import MQTTClient
PATH = %r
def boot(path, **kw):
    events = []
    c = MQTTClient("big", "127.0.0.1", 1, clean_session=False, session_file=path, event_callback=lambda ev, info: events.append((ev, info)), **kw)
    return c, events
# 1. a whole 600-byte message: restored, with the small one
c, _ = boot(PATH + "1", buf_size=1024)
c.publish("t", b"s" * 10, qos=1)
c.publish("t", b"L" * 600, qos=1)
saved = c.save_session()
lp = c.engine.last_pid
c.close()
c, ev = boot(PATH + "1", buf_size=256)
assert [e for e, _ in ev] == ["outbox_grown"] and c.pending() == 2, (ev, c.pending())
c.engine.last_pid = lp                        # (a boot's counter jumps: load.py)
assert c.save_session() == saved              # the same state, byte for byte
c.close()
# 2. the same message with a bit flipped: that slot is damaged, the other comes back
c, _ = boot(PATH + "2", buf_size=1024)
c.publish("t", b"s" * 10, qos=1)
c.publish("t", b"L" * 600, qos=1)
c.close()
import os
d = PATH + "2.d/"
big = [n for n in os.listdir(d) if n.isdigit() and os.stat(d + n)[6] > 600][0]
with open(d + big, "rb") as f:
    b = bytearray(f.read())
b[300] ^= 1
with open(d + big, "wb") as f:
    f.write(b)
c, ev = boot(PATH + "2", buf_size=256)
assert [e for e, _ in ev] == ["damaged"] and ev[0][1]["dropped_bytes"] == len(b), ev
assert c.pending() == 1, c.pending()
print("OK")
""" % str(tmp_path / "s"))
    assert "OK" in r.stdout, r.stdout


def test_a_qos12_message_larger_than_a_session_record_is_refused(tmp_path):
    """buf_size may be set far above 64 KB (a board with PSRAM), but a
    session record's length is a u16: a QoS 1/2 PUBLISH of more than 65,533
    bytes cannot be stored. With a session file (directory or log) publish()
    refuses it (PacketTooLarge, not accepted) instead of writing a record
    that the next boot would find damaged; one just under the limit is
    restored whole. save_session() refuses to write such a message."""
    r = run_mp(r"""
from durable_mqtt import MQTTClient, PacketTooLarge
from durable_mqtt.filelog import FileLog
PATH = %r
msg = bytes(range(256)) * 255                   # 65,280 B: the PUBLISH is 65,288
big = msg + bytes(1000)
for where in (lambda: PATH, lambda: FileLog(PATH + ".log")):
    c = MQTTClient("huge", "127.0.0.1", 1, clean_session=False, session_file=where(), buf_size=70000)
    try:
        c.publish("t", big, qos=1)
        raise AssertionError("accepted")
    except PacketTooLarge as x:
        assert "65533" in x.args[1], x
    assert c.pending() == 0
    pid = c.publish("t", msg, qos=2)
    assert c.publish("t", big, qos=0) is None   # QoS 0 is never stored: queued offline
    c.close()
    c = MQTTClient("huge", "127.0.0.1", 1, clean_session=False, session_file=where(), buf_size=70000,
                   event_callback=lambda ev, info: print("EVENT", ev, info))
    assert c.pending() == 1 and c.holds(pid), c.pending()
    assert msg in c.save_session()
    c.close()
c = MQTTClient("nosess", "127.0.0.1", 1, buf_size=70000)
c.publish("t", big, qos=1)                      # no session file: held in RAM only
try:
    c.save_session()
    raise AssertionError("saved")
except ValueError as x:
    assert "larger than a session record" in str(x), x
print("OK")
""" % str(tmp_path / "s"))
    assert "OK" in r.stdout and "EVENT" not in r.stdout, r.stdout


BOOT = ENGINE + r"""
import os
PATH = %r
tx = bytearray(64)


def engine_of(q):
    e = Session(False, b"dev", q + 8, q, 4096, 16, 8, 1024)
    e.expiry = 0xFFFFFFFF
    return e


def boot(q=16, batch_ms=0):
    e = engine_of(q)
    ev = []
    j = load.open_journal(PATH, e, None, batch_ms, lambda a, b: ev.append(a))
    return e, j, ev


def held(e):
    out = []
    for k in range(e.count):
        i = e.index(k)
        s = e.slot(k)
        if s:
            out.append((e.pid[i], "PUB" if s == 1 else "REL"))
    return out


def send_all(e):
    while e.next_out(0, tx) > 0:
        pass
"""


def test_a_full_outbox_beside_a_finished_qos2_message_survives_a_reboot(tmp_path):
    """Outbox of two: QoS 2 A gets PUBREC and PUBCOMP while QoS 1 B waits
    for its PUBACK, then C is accepted. C's slot is A's old OUT_PUB (it had
    to go first); A's OUT_REL would stay until the next flush, one message
    more on flash than the outbox holds, and a reboot would set the whole
    session aside as another client's, B and C with it. The OUT_REL goes at
    once: the reboot restores B and C."""
    r = run_mp(BOOT % str(tmp_path / "s") + r"""
e, j, _ = boot(2)
j.checkpoint()
a = e.accept(b"t", b"A", 2, 0, None, 0, 0); commit(e, j)
b = e.accept(b"t", b"B", 1, 0, None, 0, 0); commit(e, j)
send_all(e)
e.pubrec(a, 0, tx); commit(e, j)
e.pubcomp(a); commit(e, j); j.tick(0)        # B still held: nothing emptied by tick
c = e.accept(b"t", b"C", 1, 0, None, 0, 0); commit(e, j)
e2, j2, ev = boot(2)
assert ev == [] and held(e2) == [(b, "PUB"), (c, "PUB")], (ev, held(e2))
print("OK")
""")
    assert "OK" in r.stdout, r.stdout


def test_batched_mode_a_pubrec_before_the_batch_is_written_stores_the_pubrel(tmp_path):
    """persist_batch_ms with a directory: a QoS 2 message still in the
    batch when its PUBREC comes. The OUT_REL is a QoS 2 record, written at
    once, and takes the batch with it: its message is written as the PUBREL
    it now owes (before, nothing was written until a checkpoint, and a
    reboot lost it)."""
    r = run_mp(BOOT % str(tmp_path / "s") + r"""
e, j, _ = boot(16, batch_ms=60000)
j.checkpoint()
q1 = e.accept(b"t", b"q1", 1, 0, None, 0, 0); commit(e, j)
a = e.accept(b"t", b"A", 2, 0, None, 0, 0); commit(e, j)
assert j.nbatch == 2
send_all(e)
e.pubrec(a, 0, tx); commit(e, j)
assert j.nbatch == 0
e2, j2, _ = boot(16)
assert held(e2) == [(q1, "PUB"), (a, "REL")], held(e2)
print("OK")
""")
    assert "OK" in r.stdout, r.stdout


def test_restore_session_replaces_a_stored_message_with_the_same_packet_id(tmp_path):
    """restore_session(): the bytes win. A slot on flash holding the same
    packet id as a restored message holds another message; the checkpoint
    writes every restored message again, so a reboot brings back the
    restored one, not the old."""
    r = run_mp(r"""
from durable_mqtt import MQTTClient
PATH = %r
def client():
    return MQTTClient("dev", "127.0.0.1", 1, clean_session=False, session_file=PATH)
c = client()
c.publish("t", b"NEW", qos=1)
saved = c.save_session()
c.close()
import os
for n in os.listdir(PATH + ".d"):
    os.remove(PATH + ".d/" + n)
os.rmdir(PATH + ".d")
c = client()
assert c.publish("t", b"OLD", qos=1) == 1
c.restore_session(saved)
c.close()
c = client()
st = c.save_session()
assert b"NEW" in st and b"OLD" not in st, st
print("OK")
""" % str(tmp_path / "s"))
    assert "OK" in r.stdout, r.stdout


def test_stale_incoming_ids_left_by_a_cut_erase_do_not_come_back(tmp_path):
    """erase() removes "h", then i0 and i1: cut in between, the next boot
    has no session but old id files. They go with the rest (else the new
    session's first id file, numbered from 1, would rank below an old one,
    and a second cut would bring the old ids back: a new message with a
    recycled id taken for a duplicate and never delivered)."""
    r = run_mp(BOOT % str(tmp_path / "s") + r"""
e, j, _ = boot()
j.checkpoint()
for pid in (1, 2, 3):
    e.incoming(2, pid)
    e.ack_incoming(2, pid, 0, tx); commit(e, j)
os.remove(PATH + ".d/h")                        # erase() cut after its first step
e, j, _ = boot()
assert sorted(os.listdir(PATH + ".d")) == [], os.listdir(PATH + ".d")
j.checkpoint()                                  # a new session; cut again
e, j, _ = boot()
assert e.rx2_n == 0, [e.rx2[k] for k in range(e.rx2_n)]
print("OK")
""")
    assert "OK" in r.stdout, r.stdout


def test_two_released_qos2_messages_and_a_full_outbox_survive_a_cut_after_any_write(tmp_path):
    """Outbox of three: QoS 2 A and B both get PUBREC (B's OUT_REL takes A's
    old OUT_PUB slot), A gets PUBCOMP, then D is accepted into B's old
    OUT_PUB slot (the guarded one, _free's first choice). A's OUT_REL,
    finished but not emptied, was a fourth record on flash: a power cut
    then made the reboot set the whole session aside (B, C and D lost).
    After every single file write of the sequence a boot must restore the
    session, never discard it."""
    r = run_mp(BOOT % str(tmp_path / "s") + r"""
e, j, _ = boot(3)
j.checkpoint()
cuts = [0]
def check():
    e2, j2, ev = boot(3)
    assert "discarded" not in ev, (cuts[0], ev)
    cuts[0] += 1
w, pf = j._write, j.put_file
def _write(*a):
    w(*a); check()
def put_file(*a):
    pf(*a); check()
j._write, j.put_file = _write, put_file
a = e.accept(b"t", b"A", 2, 0, None, 0, 0); commit(e, j)
b = e.accept(b"t", b"B", 2, 0, None, 0, 0); commit(e, j)
c = e.accept(b"t", b"C", 1, 0, None, 0, 0); commit(e, j)
send_all(e)
e.pubrec(a, 0, tx); commit(e, j)
e.pubrec(b, 0, tx); commit(e, j)
e.pubcomp(a); commit(e, j); j.tick(0)        # B, C still held: nothing emptied by tick
d = e.accept(b"t", b"D", 1, 0, None, 0, 0); commit(e, j)
j._write, j.put_file = w, pf
e2, j2, ev = boot(3)
assert ev == [] and sorted(held(e2)) == sorted([(b, "REL"), (c, "PUB"), (d, "PUB")]), (ev, held(e2))
print("OK", cuts[0])
""")
    assert "OK" in r.stdout, r.stdout + r.stderr


def test_a_message_in_a_slot_beyond_a_smaller_outbox_is_restored(tmp_path):
    """Ten messages went out; the broker acknowledged the first nine, and the
    client disconnected (their slots emptied). The tenth stays in slot 9 of
    the session directory. The device reboots with
    a smaller outbox (max_inflight=1, outbox_size=2: slots 0..3). One
    message fits it, but its slot number did not, and the boot set the
    whole session aside ("discarded"): the message never went out. A held
    slot past the outbox is now moved into a free slot of it at boot;
    more messages than the outbox holds make it grow (test_outbox_grow.py)."""
    from fakebroker import FakeBroker, connack, pkt, u16
    fb = FakeBroker([("send", connack(4))] + [("recv",)] * 10
                    + [("send", b"".join(pkt(0x40, u16(p)) for p in range(1, 10)))])
    path = str(tmp_path / "s")
    first = run_mp(r"""
import time
from durable_mqtt import MQTTClient
c = MQTTClient("far", "127.0.0.1", %d, clean_session=False, session_file=%r, timeout_ms=2000)
for i in range(10):
    c.publish("t", b"m%%d" %% i, qos=1)
c.connect()
t0 = time.ticks_ms()
while c.pending() > 1 and time.ticks_diff(time.ticks_ms(), t0) < 3000:
    c.wait_msg(50)
print("pending", c.pending())
c.disconnect()
""" % (fb.port, path))
    fb.join()
    assert "pending 1" in first.stdout, first.stdout
    r = run_mp(r"""
import os
from durable_mqtt import MQTTClient
ev = []
def boot():
    return MQTTClient("far", "127.0.0.1", 1, clean_session=False, session_file=%r, max_inflight=1,
                      outbox_size=2, event_callback=lambda e, i: ev.append((e, i)))
c = boot()
print("events", ev, "pending", c.pending(), "bad", "s.d.bad" in os.listdir(%r))
out = c.engine
i = out.index(0)
print("message", bytes(out.arena[out.off[i]:out.off[i] + out.len[i]])[-2:])
c.publish("t", b"new", qos=1)
c.close()
ev.clear()
c = boot()
print("again", ev, c.pending(), sorted(os.listdir(%r)))
""" % (path, str(tmp_path), path + ".d"))
    assert "events [] pending 1 bad False" in r.stdout, r.stdout
    assert "message b'm9'" in r.stdout and "again [] 2" in r.stdout, r.stdout
    # A cut between the move's write and the removal: two copies of one
    # record, one kept. Two messages and an outbox of one: it grows to
    # hold both (test_outbox_grow.py), nothing set aside.
    r = run_mp(r"""
import os
from durable_mqtt import MQTTClient
D = %r
def boot(**kw):
    ev = []
    c = MQTTClient("far", "127.0.0.1", 1, clean_session=False, session_file=D[:-2],
                   event_callback=lambda e, i: ev.append(e), **kw)
    return c, ev
c, ev = boot()
for i in range(8):
    c.publish("t", b"c%%d" %% i, qos=1)
c.close()
with open(D + "/7", "rb") as f:
    rec = f.read()
for n in ("0", "1", "2", "3", "4", "5", "6"):
    with open(D + "/" + n, "wb") as f:
        pass
with open(D + "/2", "wb") as f:
    f.write(rec)                     # the copy a cut move left
c, ev = boot(max_inflight=1, outbox_size=2)
print("copies", ev, c.pending(), sorted(n for n in os.listdir(D) if os.stat(D + "/" + n)[6] and n.isdigit()))
c.close()
c, ev = boot()
c.publish("t", b"x", qos=1)
c.close()
c, ev = boot(max_inflight=1, outbox_size=0)
print("two", ev, c.pending())
""" % str(tmp_path / "t.d"))
    assert "copies [] 1 ['2']" in r.stdout and "two ['outbox_grown'] 2" in r.stdout, r.stdout


def test_a_damaged_incoming_id_file_is_reported(tmp_path):
    """i0 / i1 hold the incoming QoS 2 ids awaiting PUBREL, written in turn.
    A damaged one (a bad CRC) was skipped in silence: the older file's ids
    were taken, and an id recorded only in the damaged one was forgotten,
    so the broker's resent PUBLISH would be delivered again (MQTT-4.3.3-10)
    with no sign. On LittleFS a write is never left half done, so a damaged
    id file is damage, reported as event `damaged` and emptied like a
    damaged slot; the intact file still gives its ids."""
    r = run_mp(BOOT % str(tmp_path / "s") + r"""
def flip(name, k=8):
    p = PATH + ".d/" + name
    with open(p, "rb") as f:
        b = bytearray(f.read())
    b[k] ^= 1
    with open(p, "wb") as f:
        f.write(b)
    return len(b)
def ids(e):
    return [e.rx2[k] for k in range(e.rx2_n)]
e, j, _ = boot()
j.checkpoint()
for pid in (7, 8):                              # one file: [7], then the other: [7, 8]
    e.incoming(2, pid)
    e.ack_incoming(2, pid, 0, tx); commit(e, j)
flip("i1" if j.iseq & 1 else "i0")              # the newer one
e, j, ev = boot()
print("ONE", ev, ids(e))
assert ev == ["damaged"] and ids(e) == [7], (ev, ids(e))
e, j, ev = boot()                               # emptied: reported once
assert ev == [] and ids(e) == [7], (ev, ids(e))
e.pubrel(7, tx); commit(e, j)
e, j, ev = boot()
assert ev == [] and ids(e) == [], (ev, ids(e))
e.incoming(2, 9)
e.ack_incoming(2, 9, 0, tx); commit(e, j)
flip("i0"); flip("i1")                          # both
e, j, ev = boot()
print("BOTH", ev, ids(e))
assert ev == ["damaged"] and ids(e) == [], (ev, ids(e))
print("OK")
""")
    assert "OK" in r.stdout, r.stdout


def test_sequence_numbers_wrap_at_2_29_and_keep_the_resend_order(tmp_path):
    """Slot and i0/i1 sequence numbers grew for ever: on a 32-bit board an
    int past 2**30 is a big integer, so after about 2**30 writes every
    message allocated (and raised MemoryError under heap_lock()). They now
    count modulo 2**29 and are read back as serial numbers modulo 2**29:
    messages written across the wrap come back in the order they were
    sent, PUBRELs in their PUBRECs' order, and the newer i0/i1 counts."""
    r = run_mp(BOOT % str(tmp_path / "s") + r"""
from durable_mqtt.dirload import seq_of
W = 2 ** 29
e, j, _ = boot()
j.checkpoint()
j.next = W - 3
j.iseq = W - 2
pids = []
for k in range(6):
    pids.append(e.accept(b"t", b"m%d" % k, 1 + k % 2, 0, None, 0, 0)); commit(e, j)
assert 0 < j.next < 6, j.next                   # W-3, W-2, W-1, 0, 1, 2: wrapped
send_all(e)
e.pubrec(pids[3], 0, tx); commit(e, j)          # PUBREL owed: 3 (seq 3), then 1 (seq 4)
e.pubrec(pids[1], 0, tx); commit(e, j)
for pid in (7, 8, 9):                           # i0 / i1 written at W-1, 0, 1
    e.incoming(2, pid)
    e.ack_incoming(2, pid, 0, tx); commit(e, j)
assert j.iseq == 1, j.iseq
seqs = []
for name in os.listdir(PATH + ".d"):
    with open(PATH + ".d/" + name, "rb") as f:
        d = f.read()
    if name != "h" and d:
        assert d[0] < 0x20, (name, d[:4])       # below 2**29 on flash
        seqs.append(seq_of(d))
assert max(seqs) >= W - 3 and min(seqs) <= 4, seqs
e2, j2, ev = boot()
assert ev == [], ev
want = [(pids[0], "PUB"), (pids[2], "PUB"), (pids[4], "PUB"), (pids[5], "PUB"), (pids[3], "REL"), (pids[1], "REL")]
got = held(e2)
print("HELD", got)
assert sorted(got, key=lambda h: h[1]) == sorted(want, key=lambda h: h[1]), got
pubs = [h for h in got if h[1] == "PUB"]
rels = [h for h in got if h[1] == "REL"]
assert pubs == want[:4] and rels == want[4:], got
assert [e2.rx2[k] for k in range(e2.rx2_n)] == [7, 8, 9]
assert j2.next == 5 and j2.iseq == 1, (j2.next, j2.iseq)   # counting goes on from the newest
print("OK")
""")
    assert "OK" in r.stdout, r.stdout + r.stderr
