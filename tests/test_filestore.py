"""FileLog (lib/durable_mqtt/filelog.py) on the host filesystem and on
LittleFS mounted on the NOR flash test device.

The power-cut sweeps cut at every program and erase LittleFS makes during an
operation, reboot (the old device object is retired, a NEW VfsLfs2 is mounted
on the same image, a new FileStore is built), and require load() to return
exactly the state before or after, with no stale .tmp left.
"""
from conftest import run_mp

PRELUDE = r"""
import gc, os, vfs, micropython
from norflash import NorFlash, PowerCut
from durable_mqtt.filelog import FileLog as FileStore
from durable_mqtt.errors import StoreFull

MNT = "/fl"
PATH = MNT + "/session"


from testlib import assert_no_alloc as _no_alloc


def assert_no_alloc(f, what):
    # testlib's check: heap_lock, gc.mem_alloc() and micropython.mem_total()
    _no_alloc(what, f)


def data(seed, n):
    b = bytearray(n)
    x = seed & 0xFF
    for i in range(n):
        x = (x * 73 + 41) & 0xFF
        b[i] = x
    return b


def exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False


LFS = {"progsize": 32}       # VfsLfs2 settings: 32 as on ESP32, 256 as on rp2


def mount(dev):
    vfs.mount(vfs.VfsLfs2(dev, progsize=LFS["progsize"]), MNT)


def fresh_fs(block_size=4096, num_blocks=16, prog_size=32):
    LFS["progsize"] = prog_size
    dev = NorFlash(block_size, num_blocks, prog_size=prog_size)
    vfs.VfsLfs2.mkfs(dev, progsize=prog_size)
    mount(dev)
    return dev


def reboot(dev):
    # The chip keeps its bytes; everything in RAM is gone. The old device
    # object is retired so the old littlefs and its open files (finalisers
    # run at some later gc) can never touch the image again.
    new = dev.reboot()
    try:
        vfs.umount(MNT)
    except Exception:
        pass
    gc.collect()
    mount(new)
    return new


def append(s, buf, n):
    # One append commit, as the journal makes one per record batch.
    s.write(buf, 0, n)
    s.sync()


def checkpoint(s, state, chunk=200):
    s.begin()
    i = 0
    while i < len(state):
        k = min(chunk, len(state) - i)
        s.write(state, i, k)
        i += k
    s.end()

MODES = ((True, 0.5, False, "prefix"), (True, 0.9, True, "suffix"), (False, 0.0, False, "stripes"),
         (True, 0.1, True, "stripes"), (True, 0.99, False, "prefix"))


def sweep(dev, op, before, after, marker=b"AFTER-REBOOT", modes=MODES, limit=300):
    image = dev.snapshot()
    geom = (dev.block_size, dev.num_blocks, dev.prog_size)
    vfs.umount(MNT)
    counts = [0, 0]
    tmp_seen = [0]
    n = 1
    while True:
        completed = 0
        for mode in modes:
            d = NorFlash(geom[0], geom[1], geom[2])
            d.restore(image)
            mount(d)
            s = FileStore(PATH)
            assert s.load() == before
            d.cut_after(n, torn=mode[0], fraction=mode[1], noise=mode[2],
                        count_erases=True, erase_pattern=mode[3])
            try:
                op(s)
                done = True
            except PowerCut:
                done = False
            d.disarm()
            s = None
            d = reboot(d)
            tmp_seen[0] += exists(PATH + ".tmp")
            s = FileStore(PATH)
            assert not exists(PATH + ".tmp"), "stale .tmp survived the boot"
            got = s.load()
            if got == before and not done:
                counts[0] += 1
            elif got == after:
                counts[1] += 1
            else:
                raise AssertionError("cut %d mode %r: loaded %d bytes, neither before (%d) nor after (%d)"
                                     % (n, mode, len(got), len(before), len(after)))
            append(s, marker, len(marker))
            s.close()
            d = reboot(d)
            assert FileStore(PATH).load() == got + marker, "cut %d: append after reboot lost" % n
            vfs.umount(MNT)
            completed += done
        if completed == len(modes):
            counts.append(tmp_seen[0])
            return n - 1, counts
        n += 1
        assert n < limit
"""


def mp(code, **kw):
    r = run_mp(PRELUDE + code, **kw)
    print(r.stdout)
    return r.stdout


def test_round_trip_on_host_filesystem(tmp_path):
    path = str(tmp_path / "sess.bin")
    out = mp(r"""
p = %r
s = FileStore(p)
assert s.load() == b""
append(s, b"hello", 5)
append(s, bytearray(b"world!"), 6)
append(s, bytearray(b"abcdef"), 3)          # only buf[0:n]
assert FileStore(p).load() == b"helloworld!abc"
checkpoint(s, data(1, 1000))
assert not exists(p + ".tmp")
append(s, b"+1", 2)
assert FileStore(p).load() == data(1, 1000) + b"+1"
s.erase()
assert FileStore(p).load() == b""
append(s, b"x", 1)
s.close()
assert FileStore(p).load() == b"x"
print("ok")
""" % path)
    assert out.splitlines()[-1] == "ok"


def test_stale_tmp_removed_and_set_aside(tmp_path):
    path = str(tmp_path / "sess.bin")
    out = mp(r"""
p = %r
with open(p, "wb") as f:
    f.write(b"GARBAGE")
with open(p + ".tmp", "wb") as f:
    f.write(b"half a checkpoint")
s = FileStore(p)
assert not exists(p + ".tmp")
assert s.load() == b"GARBAGE"         # the session layer judges the bytes
s.set_aside()
assert s.load() == b""
with open(p + ".bad", "rb") as f:
    assert f.read() == b"GARBAGE"
append(s, b"clean", 5)
assert FileStore(p).load() == b"clean"
s.set_aside(".old")
assert exists(p + ".old") and not exists(p)
print("ok")
""" % path)
    assert out.splitlines()[-1] == "ok"


def test_needs_checkpoint_after_compact_bytes():
    out = mp(r"""
fresh_fs()
s = FileStore(PATH, compact_bytes=1000)
n = 0
while not s.needs_checkpoint():
    append(s, data(n, 96), 96)
    n += 1
assert n == 11, n                  # 11 * 96 > 1000
checkpoint(s, data(1, 500))
assert not s.needs_checkpoint()
assert FileStore(PATH).load() == data(1, 500)
print("ok")
""")
    assert out.splitlines()[-1] == "ok"


def test_append_allocates_nothing(tmp_path):
    out = mp(r"""
msg = bytearray(96)
ack = bytearray(9)
for where in ("littlefs", "host"):
    if where == "littlefs":
        fresh_fs()
        s = FileStore(PATH)
    else:
        s = FileStore(%r)
    s.load()
    def ap():
        for i in range(20):
            append(s, msg, 96)
            append(s, ack, 9)
            s.needs_checkpoint()
    assert_no_alloc(ap, "append on " + where)
    print(where, "ok")
""" % str(tmp_path / "s.bin"))
    assert "littlefs ok" in out and "host ok" in out


def test_append_after_checkpoint_asks_the_filesystem_nothing():
    # The log after a checkpoint is the checkpoint: its size is known, so
    # the next append opens the file and no more (no stat: a flash read and
    # a tuple for the collector per checkpoint).
    out = mp(r"""
import durable_mqtt.filelog as filelog
fresh_fs()
s = FileStore(PATH)
calls = []
class CountingOs:
    def stat(self, p):
        calls.append(p)
        return os.stat(p)
    def __getattr__(self, name):
        return getattr(os, name)
filelog.os = CountingOs()
for k in range(3):
    checkpoint(s, data(k, 300))
    append(s, data(k + 10, 96), 96)
    append(s, data(k + 20, 96), 96)
filelog.os = os
print("stat calls", len(calls))
assert FileStore(PATH).load() == data(2, 300) + data(12, 96) + data(22, 96)
print("ok")
""")
    assert "stat calls 0" in out and out.splitlines()[-1] == "ok"


def test_full_filesystem_raises_store_full_and_keeps_file():
    out = mp(r"""
fresh_fs(4096, 8)
s = FileStore(PATH)
checkpoint(s, data(1, 600))
for i in range(5):
    append(s, data(i, 96), 96)
good = FileStore(PATH).load()
# fill the filesystem with another file
with open(MNT + "/filler", "wb") as f:
    try:
        while True:
            f.write(bytearray(512))
            f.flush()
    except OSError:
        pass
n = 0
try:
    while True:
        append(s, data(50 + n, 96), 96)
        good += data(50 + n, 96)
        n += 1
except StoreFull as e:
    print("StoreFull after", n, "more appends:", e.args)
assert FileStore(PATH).load() == good          # nothing half-written
# a smaller append may still fit or not; either way the file is consistent
for i in range(5):
    try:
        append(s, b"x", 1)
        good += b"x"
    except StoreFull:
        pass
    assert FileStore(PATH).load() == good
# a checkpoint that does not fit is refused and leaves the old state
try:
    checkpoint(s, data(9, 8000))
    raise AssertionError("checkpoint into a full filesystem")
except StoreFull:
    pass
assert not exists(PATH + ".tmp")
assert FileStore(PATH).load() == good
# room again: appends continue on the same object
os.remove(MNT + "/filler")
append(s, b"more", 4)
assert FileStore(PATH).load() == good + b"more"
print("ok")
""")
    assert out.splitlines()[-1] == "ok"


# ---------------------------------------------------------------- power cuts

def test_power_cut_sweep_append_littlefs():
    out = mp(r"""
dev = fresh_fs(4096, 16)
s = FileStore(PATH)
checkpoint(s, data(1, 700))
for i in range(6):
    append(s, data(10 + i, 96), 96)
s.close()
before = FileStore(PATH).load()
x = data(99, 96)
n, c = sweep(dev, lambda s: append(s, x, 96), before, before + x)
print("littlefs append: %d cut points, before/after" % n, c)
assert n >= 3
""", timeout=60)
    assert "littlefs append" in out


def test_power_cut_sweep_first_append_littlefs():
    # No file yet: the append creates it.
    out = mp(r"""
dev = fresh_fs(4096, 16)
x = data(99, 96)
n, c = sweep(dev, lambda s: append(s, x, 96), b"", x)
print("littlefs first append: %d cut points" % n, c)
""", timeout=60)
    assert "first append" in out


def test_power_cut_sweep_checkpoint_littlefs():
    out = mp(r"""
dev = fresh_fs(4096, 16)
s = FileStore(PATH)
checkpoint(s, data(1, 2500))
for i in range(4):
    append(s, data(10 + i, 96), 96)
s.close()
before = FileStore(PATH).load()
new = data(5, 5000)               # more than a block: several programs, erases
n, c = sweep(dev, lambda s: checkpoint(s, new, chunk=300), before, new)
print("littlefs checkpoint: %d cut points, [before, after, stale .tmp removed]" % n, c)
assert n >= 5 and c[2] > 0
""", timeout=60)
    assert "littlefs checkpoint" in out


def test_power_cut_sweep_erase_littlefs():
    out = mp(r"""
dev = fresh_fs(4096, 16)
s = FileStore(PATH)
checkpoint(s, data(1, 1500))
append(s, b"tail", 4)
s.close()
before = FileStore(PATH).load()
n, c = sweep(dev, lambda s: s.erase(), before, b"")
print("littlefs erase: %d cut points" % n, c)
""", timeout=60)
    assert "littlefs erase" in out


# ---------------------------------------------------------------- figures

def test_wear_figures_littlefs():
    """Per message on LittleFS (4 KB blocks, counted at the device): a 96-byte
    append and a 9-byte ack append (or both in one 105-byte append), with the
    default compact_bytes=4096 checkpoints of ~1 KB. progsize 32 is what
    ESP32 uses, 256 what rp2 uses (its _boot.py). Lifetime: 100k cycles per
    block, 1 message/s, wear spread evenly over the blocks of the filesystem
    (16 here; 240 = the 960 KB vfs partition of a 4 MB ESP32, 212 = the
    848 KB filesystem of a Pico W)."""
    out = mp(r"""
MSGS = 300
YEAR = 31557600
for (P, N, fs_blocks, board) in ((32, 16, 240, "ESP32"), (256, 16, 212, "Pico W")):
    for packed in (False, True):
        dev = fresh_fs(4096, N, prog_size=P)
        s = FileStore(PATH)
        s.load()
        msg = data(1, 96)
        ack = data(2, 9)
        both = data(3, 105)
        state = data(4, 1000)
        checkpoint(s, state)
        dev.reset_counters()
        cks = 0
        for i in range(MSGS):
            if packed:
                append(s, both, 105)
            else:
                append(s, msg, 96)
                append(s, ack, 9)
            if s.needs_checkpoint():
                checkpoint(s, state)
                cks += 1
        er = dev.erases / MSGS
        print("FIG littlefs progsize=%3d %-8s: %5.0f B programmed/msg, %.3f erases/msg, %4.1f programs/msg, "
              "%d checkpoints, block wear %d..%d; %.0f days on %d blocks, %.2f years on %d blocks (%s)"
              % (P, "packed" if packed else "separate", dev.programmed_bytes / MSGS, er,
                 dev.programs / MSGS, cks, min(dev.block_erases), max(dev.block_erases),
                 N * 100000 / er / 86400, N, fs_blocks * 100000 / er / YEAR, fs_blocks, board))
        s.close()
        vfs.umount(MNT)
""", timeout=60)
    assert out.count("FIG littlefs") == 4


def test_random_power_cuts_littlefs():
    out = mp(r"""
class Rand:
    def __init__(self, seed):
        self.x = seed

    def next(self, n):
        self.x = (self.x * 1103515245 + 12345) & 0x7FFFFFFF
        return (self.x >> 8) % n

rnd = Rand(9)
dev = fresh_fs(4096, 16)
s = FileStore(PATH, compact_bytes=2000)
state = s.load()
cuts = 0
pats = ("prefix", "suffix", "stripes")
for step in range(400):
    c = rnd.next(100)
    if c < 3:
        kind, after = 0, b""
    elif s.needs_checkpoint() or c < 10:
        kind, after = 1, bytes(state[len(state) - min(len(state), rnd.next(3000)):])
    else:
        x = data(step, rnd.next(200))
        kind, after = 2, state + x
    if rnd.next(3) == 0:
        dev.cut_after(1 + rnd.next(12), torn=rnd.next(4) > 0, fraction=rnd.next(101) / 100,
                      noise=rnd.next(2) == 1, count_erases=True, erase_pattern=pats[rnd.next(3)])
    try:
        if kind == 0:
            s.erase()
        elif kind == 1:
            checkpoint(s, after, chunk=1 + rnd.next(500))
        else:
            append(s, x, len(x))
        state = after
    except PowerCut:
        s = None
        dev = reboot(dev)
        s = FileStore(PATH, compact_bytes=2000)
        assert not exists(PATH + ".tmp")
        got = s.load()
        assert got == state or got == after, "step %d kind %d: neither before nor after" % (step, kind)
        state = got
        cuts += 1
    dev.disarm()
    if rnd.next(25) == 0:
        s.close()
        dev = reboot(dev)
        s = FileStore(PATH, compact_bytes=2000)
        assert s.load() == state, "step %d: clean reboot differs" % step
print("littlefs random crashes: 400 steps, %d power cuts" % cuts)
""", timeout=60)
    assert "littlefs random crashes" in out


def test_failed_checkpoint_leaves_the_logs_size_right():
    # A checkpoint cut by ENOSPC left _pending at the bytes of its .tmp; the
    # next append's sync() added them to the log's expected size, and the
    # next failed append marked the intact log torn: appends were refused
    # ("needs a checkpoint") even after space came back.
    out = mp(r"""
fresh_fs(4096, 8)
s = FileStore(PATH)
checkpoint(s, data(1, 600))
append(s, data(2, 96), 96)
with open(MNT + "/filler", "wb") as f:
    f.write(bytearray(4096 * 2)); f.flush()
try:
    checkpoint(s, data(9, 12000))
    raise AssertionError("checkpoint fitted")
except StoreFull:
    pass
append(s, data(3, 96), 96)
print("size", s._size == os.stat(PATH)[6], "since", s.stats()["since_checkpoint"])
with open(MNT + "/filler2", "wb") as f:
    try:
        while True:
            f.write(bytearray(256)); f.flush()
    except OSError:
        pass
try:
    while True:
        append(s, data(4, 96), 96)
except StoreFull:
    pass
os.remove(MNT + "/filler2")
os.remove(MNT + "/filler")
append(s, data(5, 96), 96)
print("ok")
""")
    assert "size True since 192" in out and out.splitlines()[-1] == "ok", out
