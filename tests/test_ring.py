"""RingStore (lib/durable_mqtt/ring.py) on the NOR flash test device.

Every test runs a MicroPython script in the unix port. The power-cut sweeps
cut the power at every program and erase of an operation (with a torn
program, a torn program with half-cleared bits, and no program at all; torn
erases leaving a prefix, a suffix or stripes of the block erased), reboot
(new device object, new RingStore on the same image) and require load() to
return exactly the state before or exactly the state after the operation.
"""
import pytest

from conftest import run_mp

PRELUDE = r"""
import gc, micropython
from norflash import NorFlash, PowerCut, ProgramError
from durable_mqtt.ring import RingStore
from durable_mqtt.errors import StoreFull


from testlib import assert_no_alloc as _no_alloc


def assert_no_alloc(f, what):
    # testlib's check: heap_lock, gc.mem_alloc() and micropython.mem_total()
    _no_alloc(what, f)


class Rand:  # deterministic, same on every port
    def __init__(self, seed):
        self.x = seed or 1

    def next(self, n):
        self.x = (self.x * 1103515245 + 12345) & 0x7FFFFFFF
        return (self.x >> 8) % n


def data(seed, n):
    b = bytearray(n)
    x = seed & 0xFF
    for i in range(n):
        x = (x * 73 + 41) & 0xFF
        b[i] = x
    return b


def checkpoint(r, state, chunk=97):
    # Stream `state` as the session layer does: several chunks.
    r.begin()
    i = 0
    while i < len(state):
        k = min(chunk, len(state) - i)
        r.write(state, i, k)
        i += k
    r.end()


def append(r, buf, n):
    # One commit, as the journal makes one per record batch.
    r.write(buf, 0, n)
    r.sync()

# Cut modes: (torn, fraction, noise, erase pattern)
MODES = ((True, 0.5, False, "prefix"), (True, 0.9, True, "suffix"), (False, 0.0, False, "stripes"),
         (True, 0.1, True, "stripes"), (True, 0.99, False, "prefix"))


def sweep(dev, kw, op, before, after, marker=b"AFTER-REBOOT", limit=400, full_ok=False):
    # Run op(ring) on a fresh copy of dev's image once per (cut point, mode).
    image = dev.snapshot()
    geom = (dev.block_size, dev.num_blocks, dev.prog_size)
    counts = [0, 0]
    n = 1
    while True:
        completed = 0
        for mode in MODES:
            dev = NorFlash(geom[0], geom[1], geom[2])
            dev.restore(image)
            r = RingStore(dev, **kw)
            assert r.load() == before, "setup image does not load to `before`"
            dev.cut_after(n, torn=mode[0], fraction=mode[1], noise=mode[2],
                          count_erases=True, erase_pattern=mode[3])
            try:
                op(r)
                done = True
            except PowerCut:
                done = False
            dev.disarm()
            dev = dev.reboot()
            r = RingStore(dev, **kw)
            got = r.load()
            if got == before and not done:
                counts[0] += 1
            elif got == after:
                counts[1] += 1
            else:
                raise AssertionError("cut %d mode %r: loaded %d bytes, neither before (%d) nor after (%d)"
                                     % (n, mode, len(got), len(before), len(after)))
            # The rebooted ring keeps working from there.
            try:
                append(r, marker, len(marker))
            except StoreFull:
                assert full_ok and got == before
                r.erase()
                got, marker = b"", b""
            got2 = RingStore(dev, **kw).load()
            assert got2 == got + marker, "cut %d: append after reboot lost" % n
            completed += done
        if completed == len(MODES):
            return n - 1, counts
        n += 1
        assert n < limit
"""


def mp(code, **kw):
    r = run_mp(PRELUDE + code, **kw)
    print(r.stdout)      # shown with -s / -rP and on failure
    return r.stdout


def test_blank_device_loads_empty_and_round_trips():
    out = mp(r"""
dev = NorFlash(4096, 8, prog_size=32)
r = RingStore(dev)
assert r.load() == b""
assert not r.needs_checkpoint()
assert dev.programs == 0 and dev.erases == 0      # nothing written until needed
append(r, b"hello", 5)
append(r, bytearray(b"world!"), 6)
assert RingStore(dev).load() == b"helloworld!"
r.begin()
r.write(b"base", 0, 4)
r.end()
assert RingStore(dev).load() == b"base"
append(r, b"+1", 2)
append(r, memoryview(b"xx+2yy")[2:], 2)
assert RingStore(dev).load() == b"base+1+2"
# n smaller than the buffer: only buf[0:n] is stored
append(r, bytearray(b"abcdef"), 3)
assert RingStore(dev).load() == b"base+1+2abc"
# an empty checkpoint and an empty append
checkpoint(r, b"")
append(r, b"", 0)
assert RingStore(dev).load() == b""
append(r, b"z", 1)
assert RingStore(dev).load() == b"z"
assert r.load() == b"z"            # load() again on the writer rescans
append(r, b"y", 1)
assert r.load() == b"zy" == RingStore(dev).load()
r.erase()
assert RingStore(dev).load() == b""
print("ok", r.capacity, r.max_append)
""")
    assert out.splitlines()[-1].startswith("ok")


def test_interface_errors():
    out = mp(r"""
def raises(exc, f):
    try:
        f()
    except exc as e:
        return str(e)
    raise AssertionError("no %r" % exc)

print(raises(ValueError, lambda: RingStore(NorFlash(4096, 2))))
print(raises(ValueError, lambda: RingStore(NorFlash(4096, 16), first_block=14)))
print(raises(ValueError, lambda: RingStore(NorFlash(4096, 16), prog_size=24)))
print(raises(ValueError, lambda: RingStore(NorFlash(512, 16), prog_size=256)))
r = RingStore(NorFlash(4096, 8), max_append=200)
assert r.max_append == 212        # rounded up to the prog_size
raises(ValueError, lambda: append(r, bytearray(213), 213))
append(r, bytearray(212), 212)
r.begin()
raises(ValueError, lambda: append(r, b"x", 1))   # no append commit inside a checkpoint
r.end()
raises(ValueError, lambda: r.end())
# a sub-region: blocks 4..7 of a 10-block device, the others untouched
dev = NorFlash(4096, 10)
r = RingStore(dev, first_block=4, num_blocks=4)
for i in range(200):
    append(r, data(i, 100), 100)
    if r.needs_checkpoint():
        checkpoint(r, data(7, 300))
assert all(dev.data[i] == 0xFF for i in range(4 * 4096))
assert all(dev.data[i] == 0xFF for i in range(8 * 4096, 10 * 4096))
print("ok")
""")
    assert out.splitlines()[-1] == "ok"
    assert "at least 3" in out


def _wrap_script(P, B, N, ops, seed, max_append):
    return r"""
P, B, N = %d, %d, %d
dev = NorFlash(B, N, prog_size=P)
kw = {"prog_size": P, "max_append": %d}
r = RingStore(dev, **kw)
rnd = Rand(%d)
state = bytearray()
cap = r.capacity
reboots = cks = 0
for i in range(%d):
    c = rnd.next(100)
    if c < 3:
        r.erase()
        state = bytearray()
    elif r.needs_checkpoint() or c < 8:
        # compact: keep the newest part of the state, within capacity
        keep = min(len(state), cap, rnd.next(cap + 1))
        state = bytearray(state[len(state) - keep:])
        checkpoint(r, state, chunk=1 + rnd.next(300))
        cks += 1
    else:
        n = rnd.next(r.max_append + 1)
        d = data(i, n)
        try:
            append(r, d, n)
            state += d
        except StoreFull:
            checkpoint(r, state[len(state) - min(len(state), cap // 2):])
            state = bytearray(state[len(state) - min(len(state), cap // 2):])
    if c >= 97:
        r = RingStore(dev, **kw)
        got = r.load()
        assert got == state, "op %%d: %%d != %%d" %% (i, len(got), len(state))
        reboots += 1
assert RingStore(dev, **kw).load() == state
laps = dev.erases / N
print("laps", laps, "reboots", reboots, "checkpoints", cks, "max wear", max(dev.block_erases),
      "min wear", min(dev.block_erases))
assert laps > 5
assert max(dev.block_erases) - min(dev.block_erases) <= 2     # even wear
""" % (P, B, N, max_append, seed, ops)


def test_wraps_many_times_with_reboots_prog32():
    out = mp(_wrap_script(32, 1024, 5, 3000, 7, 200))
    assert "laps" in out


def test_wraps_many_times_with_reboots_prog256():
    # RP2040 geometry: 256-byte pages, 4 KB sectors.
    out = mp(_wrap_script(256, 4096, 4, 1500, 11, 1000))
    assert "laps" in out


def test_store_full_keeps_state_and_erase_always_works():
    out = mp(r"""
dev = NorFlash(512, 6, prog_size=32)
kw = {"max_append": 100}
r = RingStore(dev, **kw)
checkpoint(r, data(1, 200))
state = bytearray(data(1, 200))
n = 0
try:
    while True:
        d = data(n, 50)
        append(r, d, 50)
        state += d
        n += 1
except StoreFull as e:
    print("full after", n, "appends:", e.args)
assert n > 10
assert RingStore(dev, **kw).load() == state      # nothing accepted was lost
# a checkpoint cannot fit either: the ring is all live
try:
    checkpoint(r, data(2, 100))
    raise AssertionError("checkpoint fit in a full ring")
except StoreFull:
    pass
assert RingStore(dev, **kw).load() == state
# erase() needs no room: it may wipe the live block, leaving empty
r.erase()
assert RingStore(dev, **kw).load() == b""
append(r, b"again", 5)
assert RingStore(dev, **kw).load() == b"again"
# a state larger than capacity is refused before anything is written
p = dev.programs
try:
    checkpoint(r, bytearray(r.capacity + 1), chunk=10000)
    raise AssertionError("oversized checkpoint accepted")
except StoreFull:
    pass
assert dev.programs == p
assert RingStore(dev, **kw).load() == b"again"
print("ok")
""")
    assert out.splitlines()[-1] == "ok"


def test_checkpoint_of_capacity_always_fits_when_asked_in_time():
    # Follow the contract: checkpoint as soon as needs_checkpoint() says so,
    # with a state of exactly capacity; it must never be StoreFull.
    # Different append sizes move the block alignment around.
    out = mp(r"""
for (B, N, P, ma) in ((4096, 3, 32, 1012), (512, 6, 32, 100), (4096, 16, 32, 1012),
                      (4096, 4, 256, 1012), (2048, 5, 16, 300)):
    dev = NorFlash(B, N, prog_size=P)
    kw = {"prog_size": P, "max_append": ma}
    r = RingStore(dev, **kw)
    cap = r.capacity
    big = data(3, cap)
    rnd = Rand(B + N)
    cks = 0
    for i in range(400 if B < 4096 else 1500):
        n = rnd.next(r.max_append + 1)
        append(r, data(i, n), n)
        if r.needs_checkpoint():
            checkpoint(r, big, chunk=1 + rnd.next(700))
            cks += 1
            assert not r.needs_checkpoint()
    assert cks > 2, cks
    print(B, N, P, "capacity", cap, "of", B * N, "checkpoints", cks)
print("ok")
""", timeout=60)
    assert out.splitlines()[-1] == "ok"


def test_torn_commit_is_dropped_and_writing_goes_on_after_it():
    """A torn commit costs the room of one commit, not the rest of its block:
    the boot after it writes on in the same block, past the largest commit
    the cut program could have touched (bits it half programmed may read as
    erased: never programmed twice), and the reader goes on at the commit
    that carries the next number. Before, the block was closed: each cut in
    a row took a block, and N cuts filled an N-block ring for good."""
    out = mp(r"""
dev = NorFlash(4096, 4, prog_size=32)
r = RingStore(dev, max_append=200)          # commits of at most 224 bytes
cmax = len(r._stage)

def torn_append(dev, r, data):
    # The append cut halfway, then a boot: the device and its ring.
    dev.cut_after(1, fraction=0.5)
    try:
        append(r, data, len(data))
    except PowerCut:
        pass
    dev = dev.reboot()
    return dev, RingStore(dev, max_append=200)

append(r, b"one", 3)
head = r.stats()["head"]
want = b"one"
for i in range(5):                          # five cuts in the same block
    at = r._pos
    dev, r = torn_append(dev, r, bytearray(b"two" * 30))
    assert r.load() == want, (i, r.load())
    assert r.stats()["head"] == head        # the same block
    assert r._pos == at + cmax, (r._pos, at, cmax)    # one largest commit past the torn one
    append(r, b"+%d" % i, 2)                # ProgramError if it hit a programmed byte
    want += b"+%d" % i
    assert RingStore(dev).load() == want
checkpoint(r, b"state")
append(r, b"+x", 2)
assert RingStore(dev).load() == b"state+x"
# a cut where no commit fits after the torn one: the next block
while r._pos <= 4096 - 240:               # the torn 192-byte commit fits, a commit past 224 bytes of it does not
    append(r, b"..", 2)
got = r.load()
dev, r = torn_append(dev, r, bytearray(b"y" * 150))
assert r.load() == got
pos = r._pos
assert pos == 4096 and r.stats()["head"] == head, (pos, r.stats())
append(r, b"+z", 2)
assert r.stats()["head"] == head + 1
assert RingStore(dev).load() == got + b"+z"
print("ok", head, pos, r.stats()["head"])
""")
    assert out.splitlines()[-1].startswith("ok"), out


def test_a_commit_image_inside_a_torn_commit_is_never_read():
    """A held message's bytes go into an append verbatim, so a torn append
    may hold, at a multiple of prog_size, the image of a valid commit
    (a message that carries a dump of a ring, or one made to). Reading on
    after the torn commit must not take it: neither at the boot after the
    cut, with the number the torn commit had, nor once the ring has wrapped
    so that the block is the chain's oldest, where any number goes. Both
    were read before (a forged state; the live checkpoint lost). The image
    here is made for the place it lands at (its CRC covers the place), as
    only a payload made to forge one could be."""
    out = mp(r"""
from durable_mqtt import crc
from durable_mqtt.ring import _sum, _reg
def image(seq, payload, bseq, at):
    b = bytearray(12 + len(payload))
    b[0] = 0xC7
    b[2] = len(payload) >> 8
    b[3] = len(payload) & 0xFF
    b[4:8] = seq.to_bytes(4, "big")
    b[8:8 + len(payload)] = payload
    _sum(bseq, at, b, 0, 8 + len(payload))
    crc.put(_reg, b, 8 + len(payload))
    return b
for label in ("next number", "any number"):
    dev = NorFlash(1024, 4, prog_size=32)
    r = RingStore(dev, max_append=200)
    checkpoint(r, b"old")
    while r._pos + 64 <= 1024:
        append(r, b"x" * 20, 20)
    seq = r._seq if label == "next number" else 12345
    # the new block's first commit is at 32, its payload at 40: the image at 64
    msg = bytearray(b"." * 24) + image(seq, b"FORGED", r._head_seq + 1, 64) + b"." * 150
    dev.cut_after(2, fraction=0.5)              # the new block's header, then the append, torn
    try:
        append(r, msg, len(msg))
    except PowerCut:
        pass
    dev = dev.reboot()
    r = RingStore(dev, max_append=200)
    got = r.load()
    assert got.startswith(b"old") and b"FORGED" not in got, (label, got)
    checkpoint(r, b"LIVE")                      # in the block of the torn append
    want = bytearray(b"LIVE")
    try:
        while True:                             # until the ring wraps onto that block
            append(r, b"y" * 100, 100)
            want += b"y" * 100
    except StoreFull:
        pass
    assert RingStore(dev, max_append=200).load() == want, label
print("ok")
""")
    assert out.splitlines()[-1] == "ok", out


def test_a_boot_with_another_max_append_never_programs_into_a_torn_commit():
    """The room a torn commit may have touched is the largest commit of the
    writer that tore it, which each block records in its header; a boot
    whose max_append (sized from buf_size) is smaller skips by the block's,
    not its own (it programmed inside the torn program's range, where bits
    half programmed may read as erased), and one whose commits are larger
    than the block allows goes on in the next block."""
    out = mp(r"""
for second in (200, 1012):
    dev = NorFlash(4096, 4, prog_size=32)
    r = RingStore(dev, max_append=1012)         # commits of up to 1,024 bytes
    checkpoint(r, b"base")
    at = r._pos
    big = bytearray(b"z" * 1000)
    dev.cut_after(1, fraction=0.1)              # 1,024 bytes programmed, the first 102 shown
    try:
        append(r, big, 1000)
    except PowerCut:
        pass
    dev = dev.reboot()
    r = RingStore(dev, max_append=second)
    assert r.load() == b"base"
    # one 1,024-byte commit past it, whatever this boot's own largest commit
    assert r._pos == at + 1024 and r.stats()["head"] == 0, (second, r._pos, at)
    append(r, b"after", 5)
    assert RingStore(dev, max_append=second).load() == b"baseafter"
dev = NorFlash(4096, 4, prog_size=32)
r = RingStore(dev, max_append=200)              # the block records 224-byte commits
checkpoint(r, b"base")
dev = dev.reboot()
r = RingStore(dev, max_append=1012)
assert r.load() == b"base"
append(r, b"larger", 6)
assert r.stats()["head"] == 1                   # its commits may be larger: a new block
assert RingStore(dev).load() == b"baselarger"
print("ok")
""")
    assert out.splitlines()[-1] == "ok", out


def test_a_block_whose_commit_bound_reads_zero_or_torn_is_closed_after_a_tear():
    """The commit bound in a block header (bytes 16..19, with their
    complement: not under the header's CRC) read as 0 made the walk after a
    torn commit stand still: a boot that never ended. A bound that is 0,
    or whose complement does not match (a header program torn there), is
    taken as the rest of the block: a torn commit closes it."""
    out = mp(r"""
for bound in (b"\x00\x00\xff\xff", b"\x00\x04\xff\xff"):
    dev = NorFlash(1024, 4, prog_size=32)
    r = RingStore(dev, max_append=100)
    append(r, b"a" * 10, 10)
    head = r.stats()["head"]
    dev.cut_after(1, fraction=0.5)
    try:
        append(r, b"b" * 60, 60)
    except PowerCut:
        pass
    dev = dev.reboot()
    a = head * 1024
    dev.data[a + 16:a + 20] = bound             # 0 (corrupt); a complement whose last byte a cut left erased
    r = RingStore(dev, max_append=100)
    assert r.load() == b"a" * 10
    assert r._pos == 1024                       # closed: the next commit in a new block
    append(r, b"c", 1)
    assert r.stats()["head"] == head + 1 and RingStore(dev, max_append=100).load() == b"a" * 10 + b"c"
print("ok")
""")
    assert out.splitlines()[-1] == "ok", out


def test_a_half_erased_oldest_block_does_not_hide_the_commit_after_a_tear():
    """The walk's next-number check after a torn commit holds within a
    block. An advance whose erase of the oldest block was cut, keeping its
    header and its first commits, leaves that block's last number an old
    one; carried into the next block, it refused the commit that a boot
    wrote past a torn first commit there, the live checkpoint with it, and
    the stale checkpoint of the half-erased block was loaded instead."""
    out = mp(r"""
import binascii
for P, pattern, fraction in ((32, "suffix", 0.5), (32, "suffix", 0.9), (32, "stripes", 0.5), (16, "suffix", 0.5)):
    dev = NorFlash(4096, 4, prog_size=P)
    r = RingStore(dev, prog_size=P, max_append=200)
    checkpoint(r, b"old")
    while r._pos + 64 <= 4096:                  # block 0 full of old commits
        append(r, b"o" * 40, 40)
    dev.cut_after(2, fraction=0.5)              # block 1's header, then its first commit, torn
    try:
        append(r, b"t" * 150, 150)
    except PowerCut:
        pass
    dev = dev.reboot()
    r = RingStore(dev, prog_size=P, max_append=200)
    assert r.load().startswith(b"old")
    checkpoint(r, b"LIVE")                      # written past the torn commit, in block 1
    assert r.stats()["head"] == 1, r.stats()
    want = bytearray(b"LIVE")
    i = 0
    while not (r.stats()["head"] == 3 and r._pos + 64 > 4096):
        m = b"%03d" % i + b"a" * 37
        append(r, m, 40)
        want += m
        i += 1
    # The next append wraps onto block 0 (free: the checkpoint is in
    # block 1); its erase is cut, leaving (suffix) its header and first
    # commits, or (stripes) bits of both.
    dev.cut_after(1, count_erases=True, erase_pattern=pattern, fraction=fraction)
    try:
        append(r, b"l" * 40, 40)
    except PowerCut:
        pass
    dev = dev.reboot()
    assert pattern != "suffix" or dev.data[0:4] == b"DMQR"      # the case: its header kept
    r = RingStore(dev, prog_size=P, max_append=200)
    got = r.load()
    assert got == want, (P, pattern, fraction, bytes(got[:8]), len(got), len(want))
    append(r, b"next", 4)                       # and the ring goes on
    assert RingStore(dev, prog_size=P, max_append=200).load() == want + b"next"
    print("image", P, binascii.hexlify(dev.data).decode(), binascii.hexlify(want + b"next").decode())
print("ok")
""")
    assert out.splitlines()[-1] == "ok", out
    # tools/session_inspect.py --ring reads these images as the library does.
    import session_inspect
    images = [line.split()[1:] for line in out.splitlines() if line.startswith("image ")]
    assert len(images) == 4
    for P, img, want in images:
        got = session_inspect.read_ring(bytes.fromhex(img), 4096, int(P), 0, 4, session_inspect.Diag(), {})
        assert got == bytes.fromhex(want)


def test_a_commit_copied_to_another_place_is_not_a_commit():
    """A commit's CRC covers its place (its block's number and its offset)
    as well as its bytes, so the image of a commit anywhere else is never
    valid: a held message carrying a dump of a ring, or an old commit's
    bytes where the next commit goes. Before (format 1) an old checkpoint's
    copy at the write position was read, a gap in the numbers made it the
    latest, and the boot loaded that old state."""
    out = mp(r"""
from durable_mqtt import crc
from durable_mqtt.ring import _sum, _reg
dev = NorFlash(4096, 4, prog_size=32)
r = RingStore(dev, max_append=200)
checkpoint(r, b"old state")
old_at = r.stats()["head"] * 4096 + 64           # after the empty checkpoint the format wrote
assert dev.data[old_at + 8:old_at + 17] == b"old state"
old = bytes(dev.data[old_at:old_at + 32])
append(r, b"+1", 2)
checkpoint(r, b"new state")
append(r, b"+2", 2)
want = r.load()
assert want == b"new state+2"
for blk, at in ((r.stats()["head"], r._pos), (r.stats()["head"] + 1, 32)):
    d = NorFlash(4096, 4, prog_size=32)
    d.restore(dev.snapshot())
    a = blk * 4096
    if blk != r.stats()["head"]:                 # another block: formatted, as the ring's next
        d.data[a:a + 32] = d.data[0:32]
        d.data[a + 8:a + 12] = (1).to_bytes(4, "big")
        crc.seal(d.data, a, 12)
    d.data[a + at:a + at + 32] = old             # the old checkpoint's bytes, elsewhere
    assert RingStore(d, max_append=200).load() == want, (blk, at)
    # the same bytes with the CRC of that place are read (the check above is the CRC's)
    forged = bytearray(old)
    _sum(int.from_bytes(d.data[a + 8:a + 12], "big"), at, forged, 0, 8 + 9)
    crc.put(_reg, forged, 8 + 9)
    d.data[a + at:a + at + 32] = forged
    assert RingStore(d, max_append=200).load() == b"old state", (blk, at)
print("ok")
""")
    assert out.splitlines()[-1] == "ok", out


def test_garbage_at_write_position():
    # Bytes that are neither erased nor a valid commit where the next commit
    # would go (e.g. a program the chip half did): load ignores them, the
    # writer never programs over them.
    out = mp(r"""
dev = NorFlash(1024, 4, prog_size=32)
r = RingStore(dev)
checkpoint(r, b"state")
append(r, b"+a", 2)
st = r.stats()
blk, pos = st["head"], r._pos
for junk in (b"\x00" * 32, b"\xc0\x00\x00\x05" + b"\xff" * 28, b"\xff" * 31 + b"\x7f"):
    dev2 = NorFlash(1024, 4, prog_size=32)
    dev2.restore(dev.snapshot())
    dev2.writeblocks(blk, junk, pos + 64)      # a little past the write position
    r2 = RingStore(dev2)
    assert r2.load() == b"state+a"
    append(r2, b"+b", 2)                         # would raise ProgramError if it hit junk
    checkpoint(r2, b"s2")
    append(r2, b"+c", 2)
    assert RingStore(dev2).load() == b"s2+c"
print("ok")
""")
    assert out.splitlines()[-1] == "ok"


def test_foreign_content_loads_empty_then_works():
    out = mp(r"""
dev = NorFlash(1024, 4, prog_size=32)
rnd = Rand(5)
for i in range(len(dev.data)):
    dev.data[i] = rnd.next(256)
r = RingStore(dev)
assert r.load() == b""
append(r, b"fresh", 5)          # erases before programming (NorFlash checks)
assert RingStore(dev).load() == b"fresh"
# a ring written with another prog_size is not misparsed: refused, with why
try:
    RingStore(dev, prog_size=64).load()
    raise AssertionError("read with another prog_size")
except ValueError as x:
    assert "prog_size 32, opened with 64" in str(x), x
print("ok")
""")
    assert out.splitlines()[-1] == "ok"


def test_no_allocation_in_append_checkpoint_erase():
    out = mp(r"""
dev = NorFlash(1024, 40, prog_size=32)   # room for 3 x 40 messages
r = RingStore(dev, max_append=300)
r.load()
msg = bytearray(96)
ack = bytearray(9)
st = bytearray(700)
cks = [0]

def appends():
    # crosses blocks (erase + block header) several times
    for i in range(40):
        append(r, msg, 96)
        append(r, ack, 9)
        r.needs_checkpoint()

def ck():
    r.begin()
    r.write(st, 0, 250)
    r.write(st, 0, 300)
    r.write(st, 0, 150)
    r.end()
    cks[0] += 1

def er():
    r.erase()

assert_no_alloc(appends, "append")
assert_no_alloc(ck, "checkpoint")
assert_no_alloc(er, "erase")
assert_no_alloc(lambda: r.needs_checkpoint(), "needs_checkpoint")
# all of it together, many laps, under heap_lock
def mixed():
    for i in range(60):
        append(r, msg, 96)
        if r.needs_checkpoint():
            ck()
assert_no_alloc(mixed, "mixed")
print("ok", dev.erases, cks[0])
""")
    assert out.splitlines()[-1].startswith("ok")


def test_commit_sequence_wraps_at_2_30_without_allocating():
    """The commit sequence number counts modulo 2**30. It was stepped as
    (seq + 1) & mask, which makes 2**30 at the wrap: a big integer on a
    board, one allocation per 2**30 commits (MemoryError under heap_lock).
    Commits across the wrap allocate nothing, and a reboot reads them back
    as one run (the walk's check that each follows the one before). The
    allocation shows on a 32-bit port (MICROPY32: the old step fails
    there); on a 64-bit one the test checks the wrap and the reboot."""
    out = mp(r"""
base = data(1, 200)
probe = RingStore(NorFlash(1024, 8, prog_size=32), max_append=300)
probe.load()
checkpoint(probe, base)
k = probe._seq                   # commits a checkpoint takes
dev = NorFlash(1024, 8, prog_size=32)
r = RingStore(dev, max_append=300)
r.load()
# The step from 2**30 - 1 to 0 falls in the run under heap_lock (after
# assert_no_alloc's two warm-up calls, 3 commits each)
r._seq = 0x3FFFFFFF - 7 - k
checkpoint(r, base)
msg = data(2, 50)
n = [0]
def appends():
    for i in range(3):
        append(r, msg, 50)
        n[0] += 1
assert_no_alloc(appends, "appends across the wrap")   # (runs it more than once)
assert r._seq < 100, r._seq      # wrapped to 0 and on
got = RingStore(dev, max_append=300).load()
assert got == bytes(base) + bytes(msg) * n[0], (len(got), n[0])
print("ok", r._seq)
""")
    assert out.splitlines()[-1].startswith("ok")


# ---------------------------------------------------------------- power cuts

SWEEP_SETUP = r"""
B, N = 512, 10
kw = {"max_append": 100}
dev = NorFlash(B, N, prog_size=32)
r = RingStore(dev, **kw)
"""


def test_power_cut_sweep_append():
    out = mp(SWEEP_SETUP + r"""
checkpoint(r, data(1, 300))
for i in range(3):
    append(r, data(10 + i, 80), 80)
before = RingStore(dev, **kw).load()
x = data(99, 100)
def op(r):
    append(r, x, 100)
n, c = sweep(dev, kw, op, before, before + x)
print("append: %d cut points, before/after" % n, c)

# an append that must open a new block (erase + header + commit)
while r._pos + 128 <= B:
    append(r, b"f", 1)
before = RingStore(dev, **kw).load()
n, c = sweep(dev, kw, op, before, before + x)
assert n >= 3, n
print("append with block change: %d cut points" % n, c)
""")
    assert "append with block change" in out


def test_power_cut_sweep_checkpoint():
    out = mp(SWEEP_SETUP + r"""
checkpoint(r, data(1, 300))
for i in range(5):
    append(r, data(10 + i, 60), 60)
before = RingStore(dev, **kw).load()
new = data(5, 800)                 # spans two blocks: two erases
def op(r):
    checkpoint(r, new, chunk=150)
n, c = sweep(dev, kw, op, before, new)
assert n > 8
print("checkpoint: %d cut points" % n, c)
""")
    assert "checkpoint:" in out


def test_power_cut_sweep_checkpoint_that_wraps_and_erases():
    out = mp(SWEEP_SETUP + r"""
# drive the ring round until the head is in the last block, after a lap
rnd = Rand(3)
i = 0
while not (dev.erases >= N and r._head == N - 1 and r._pos > 256):
    append(r, data(i, 40), 40)
    if r.needs_checkpoint():
        checkpoint(r, data(i, 200))
    i += 1
checkpoint(r, data(7, 150))
append(r, b"tail", 4)
before = RingStore(dev, **kw).load()
e0 = dev.erases
new = data(8, 700)
def op(r):
    checkpoint(r, new, chunk=64)
# without a cut the checkpoint does wrap from the last block to block 0
probe = NorFlash(B, N, prog_size=32)
probe.restore(dev.snapshot())
pr = RingStore(probe, **kw)
pr.load()
op(pr)
assert pr._head < N - 1 and probe.erases >= 1, (pr._head, probe.erases)
n, c = sweep(dev, kw, op, before, new)
print("wrapping checkpoint: %d cut points" % n, c, "head moves 9 ->", pr._head)
""")
    assert "wrapping checkpoint" in out


def test_power_cut_sweep_erase_of_full_ring():
    # erase() on an all-live ring wipes the live block: cuts must still load
    # to the old state or to empty.
    out = mp(SWEEP_SETUP + r"""
checkpoint(r, data(1, 300))
try:
    while True:
        append(r, data(2, 100), 100)
except StoreFull:
    pass
while True:
    try:
        append(r, b"!", 1)
    except StoreFull:
        break
before = RingStore(dev, **kw).load()
def op(r):
    r.erase()
n, c = sweep(dev, kw, op, before, b"", full_ok=True)
print("erase of a full ring: %d cut points" % n, c)
assert n >= 2
""")
    assert "erase of a full ring" in out


def test_power_cut_sweep_prog256():
    out = mp(r"""
B, N = 2048, 8
kw = {"prog_size": 256}
dev = NorFlash(B, N, prog_size=256)
r = RingStore(dev, **kw)
checkpoint(r, data(1, 700))
for i in range(4):
    append(r, data(i, 117), 117)
before = RingStore(dev, **kw).load()
x = data(9, 117)
n1, c1 = sweep(dev, kw, lambda r: append(r, x, 117), before, before + x)
new = data(3, 2400)          # spans two blocks
n2, c2 = sweep(dev, kw, lambda r: checkpoint(r, new, chunk=500), before, new)
print("prog256: append %d, checkpoint %d cut points" % (n1, n2))
""")
    assert "prog256" in out


# ---------------------------------------------------------------- figures

def test_wear_figures():
    """Bytes programmed and erases per message on rings of 16 and 64 blocks
    of 4 KB (64 KB, 256 KB). A message is an 86-byte PUBLISH + 10-byte record
    header (a 96-byte append) plus its acknowledgement (a 9-byte record),
    either as a separate append or packed into the next message's append
    (105 bytes); ~10 messages in flight, so a checkpoint holds ~1 KB. The
    lifetime is for 100k erase cycles per block at 1 message/s. Printed for
    docs/ring-format.md and docs/flash-wear.md."""
    out = mp(r"""
MSGS = 8000
YEAR = 31557600
for N in (16, 64):
    for P in (32, 256):
        for packed in (False, True):
            dev = NorFlash(4096, N, prog_size=P)
            r = RingStore(dev, prog_size=P)
            msg = data(1, 96)
            both = data(2, 105)
            ack = data(3, 9)
            state = data(4, 1000)
            cks = 0
            for i in range(MSGS):
                if packed:
                    append(r, both, 105)
                else:
                    append(r, msg, 96)
                    append(r, ack, 9)
                if r.needs_checkpoint():
                    checkpoint(r, state, chunk=96)
                    cks += 1
            pb = dev.programmed_bytes / MSGS
            er = dev.erases / MSGS
            pad = (((12 + 105 + P - 1) // P) * P if packed
                   else ((12 + 96 + P - 1) // P) * P + ((12 + 9 + P - 1) // P) * P)
            years = N * 100000 / er / YEAR
            print("FIG ring %3d KB P=%3d %-8s: %6.1f B programmed/msg (%.3fx the padded commits, %d B), "
                  "%.4f erases/msg, %3d checkpoints, block wear %d..%d, %.2f years"
                  % (N * 4, P, "packed" if packed else "separate", pb, pb / pad, pad, er, cks,
                     min(dev.block_erases), max(dev.block_erases), years))
            assert max(dev.block_erases) - min(dev.block_erases) <= 1
# The design target: 96-byte appends with ~1 KB checkpoints, 16 x 4 KB, P=32
dev = NorFlash(4096, 16, prog_size=32)
r = RingStore(dev)
msg = data(1, 96)
state = data(4, 1000)
for i in range(MSGS):
    append(r, msg, 96)
    if r.needs_checkpoint():
        checkpoint(r, state, chunk=96)
pb = dev.programmed_bytes / MSGS
er = dev.erases / MSGS
print("FIG ring target (96-byte appends, P=32, 64 KB): %.1f B programmed/append (%.3fx of 128), %.4f erases/append"
      % (pb, pb / 128, er))
assert er <= 0.05 and pb <= 1.1 * 128
""", timeout=60)
    assert "FIG ring target" in out


RANDOM_CRASH = r"""
def random_crashes(B, N, P, ma, steps, seed):
    dev = NorFlash(B, N, prog_size=P)
    kw = {"prog_size": P, "max_append": ma}
    r = RingStore(dev, **kw)
    state = r.load()
    cap = r.capacity
    rnd = Rand(seed)
    n = [0, 0, 0]             # power cuts, StoreFull, erase + rewrite
    pats = ("prefix", "suffix", "stripes")

    def compact(r, state):
        # What a client does on StoreFull: checkpoint (it compacts); if power
        # cuts during checkpoints left too much dead log for that, the last
        # resort: erase() (always works) and write the state again.
        dev.disarm()
        n[1] += 1
        state = state[len(state) - min(len(state), cap // 2):]
        try:
            checkpoint(r, state)
        except StoreFull:
            n[2] += 1
            r.erase()
            checkpoint(r, state)
        return state

    for step in range(steps):
        c = rnd.next(100)
        if c < 3:
            kind, after = 0, b""
        elif r.needs_checkpoint() or c < 12:
            keep = min(len(state), rnd.next(cap + 1))
            kind, after = 1, bytes(state[len(state) - keep:])
        else:
            x = data(step, rnd.next(r.max_append + 1))
            kind, after = 2, state + x
        if rnd.next(3) == 0:
            dev.cut_after(1 + rnd.next(5), torn=rnd.next(4) > 0, fraction=rnd.next(101) / 100,
                          noise=rnd.next(2) == 1, count_erases=True, erase_pattern=pats[rnd.next(3)])
        try:
            if kind == 0:
                r.erase()
            elif kind == 1:
                checkpoint(r, after, chunk=1 + rnd.next(400))
            else:
                append(r, x, len(x))
            state = after
        except StoreFull:
            state = compact(r, state)
        except PowerCut:
            dev = dev.reboot()
            r = RingStore(dev, **kw)
            got = r.load()
            assert got == state or got == after, "step %d kind %d: neither before nor after" % (step, kind)
            state = got
            n[0] += 1
            if rnd.next(2):           # the session layer checkpoints after a restore
                state = state[len(state) - min(len(state), cap):]
                try:
                    checkpoint(r, state)
                except StoreFull:
                    state = compact(r, state)
        dev.disarm()
        if rnd.next(20) == 0:
            assert RingStore(dev, **kw).load() == state, "step %d: clean reboot differs" % step
    assert RingStore(dev, **kw).load() == state
    print("random crashes: B=%d N=%d P=%d: %d steps, %d power cuts, %d StoreFull, %d erase+rewrite, %d erases"
          % (B, N, P, steps, n[0], n[1], n[2], dev.erases))
"""


def test_random_power_cuts_during_a_long_run():
    # Many cuts in a row: torn commits, half-erased blocks and closed blocks
    # pile up between checkpoints; every reboot must still load a state the
    # writer had promised (before or after the interrupted operation).
    out = mp(RANDOM_CRASH + r"""
random_crashes(512, 8, 32, 100, 2500, 1)
random_crashes(1024, 4, 16, 60, 1500, 2)
random_crashes(2048, 6, 256, 600, 1500, 3)
""", timeout=60)
    assert out.count("random crashes") == 3


def test_copy_and_crc_viper_and_fallback():
    # lib/durable_mqtt/native.py (viper) and crc.py's bytecode fallback, used
    # on firmware without the viper emitter, give the same bytes.
    out = mp(r"""
import binascii
from durable_mqtt import crc
from durable_mqtt import crcpy
assert hasattr(crc, "crc_add")               # the viper version is the one in use
data = bytearray(b"123456789" * 37)
for add, copy in ((crc.add, crc.copy), (crcpy.add, crcpy.copy)):
    s = bytearray(4)
    out = bytearray(4)
    crc.start(s)
    add(s, data, 0, 100)
    add(s, data, 100, len(data) - 100)
    crc.put(s, out, 0)
    assert out == binascii.crc32(data).to_bytes(4, "big"), out
    b = bytearray(b"0123456789")
    copy(b, 5, b"abcde", 1, 3)
    assert b == b"01234bcd89", b
    copy(b, 0, memoryview(b"xyz")[1:], 0, 2)
    assert b == b"yz234bcd89", b
def both():
    crc.start(s)
    crc.add(s, data, 0, len(data))
    crc.copy(out, 0, data, 3, 4)
assert_no_alloc(both, "crc and copy")
print("ok")
""")
    assert out.splitlines()[-1] == "ok"


def test_a_boot_whose_checkpoint_finds_the_ring_full_keeps_the_session():
    """A 4 x 4 KB ring filled to its capacity with held messages, its live
    span past the checkpoint threshold (so a boot checkpoints: a ring's
    boot writes nothing otherwise); the power
    is cut during the boot checkpoint at boots in a row (five or more: a
    cut costs one commit's room, not the rest of its block), whose
    abandoned commits leave too little room for the next one. That boot
    checkpoint raised StoreFull out of the constructor at every boot after
    (only wiping the flash got out). Now the session loads, whole, with the
    event "store_full"; acknowledgements make room for a later checkpoint."""
    r = run_mp(r"""
from norflash import NorFlash, PowerCut
from durable_mqtt.session import Session
from durable_mqtt import load
tx = bytearray(300)
def mk():
    e = Session(False, b"dev1", 80, 64, 16384, 2, 64, 256)    # (a table of 2 incoming ids: little reserve)
    e.expiry = 0xFFFFFFFF
    return e
d = NorFlash(4096, 4, prog_size=32)
e = mk()
j = load.open_journal(d, e, 32, 0, lambda a, b: None)
j.checkpoint()
while j.fits(1 + 2 + 2 + 16 + 2 + 64 + 9 + 60):
    e.accept(b"sensors/dev1/t00", bytes(64), 1, 0, None, 0, 0); j.put(); e.rec = 0
held = e.held
while not j.b.needs_checkpoint():       # traffic, until the live span asks for a checkpoint (the boot's)
    pid = e.accept(b"sensors/dev1/t00", bytes(10), 1, 0, None, 0, 0)
    j.put(); e.rec = 0
    while e.next_out(0, tx) > 0:
        pass
    e.puback(pid, 0); e.done_pid = 0
    j.acked(pid); j.flush()
def boot(d, cut=None):
    if cut:
        d.cut_after(cut, torn=True, fraction=0.5, count_erases=True)
    e = mk()
    ev = []
    try:
        load.open_journal(d, e, 32, 0, lambda a, b: ev.append(a))
        d.disarm()
        return e.held, ev
    except PowerCut:
        return None, ev
seen = set()
for c in range(1, 12):                  # every boot cut at its c-th program (counting erases)
    for k in range(1, 16):              # k such boots in a row
        dd = NorFlash(4096, 4, prog_size=32)
        dd.restore(d.snapshot())
        for i in range(k):
            boot(dd, c)
            dd = dd.reboot()
        n, ev = boot(dd)
        assert n == held, (c, k, n, held, ev)
        seen.update(ev)
        if ev:
            break
print("held", held, "events", sorted(seen))
""")
    assert "store_full" in r.stdout, r.stdout          # the case happened, and every boot kept it all


# A block device over another that programs a commit whole, then reports an
# error (fail_next); with fail_read, the read after it fails too. Prepended
# to the scripts below (its errors made beforehand: raising them allocates
# nothing, for a test under heap_lock()).
FLAKY = r"""
ERR = OSError(116, "flash write reported an error")
READ_ERR = OSError(110, "read timed out")

class Flaky:
    def __init__(self, d, fail_read=False):
        self.d = d
        self.fail_next = self.fail_read = False
        self.then_read = fail_read
    def readblocks(self, n, buf, off=0):
        if self.fail_read:
            self.fail_read = False
            raise READ_ERR
        return self.d.readblocks(n, buf, off)
    def writeblocks(self, n, buf, off=None):
        self.d.writeblocks(n, buf, off)
        if self.fail_next:
            self.fail_next = False
            self.fail_read = self.then_read
            raise ERR
    def ioctl(self, op, arg):
        return self.d.ioctl(op, arg)


def publish_past_a_failed_program(c, dev, topic, before, after):
    # before + 1 + after QoS 1 messages (topic % i, b"msg %d" % i); the
    # program of message `before` lands whole and reports an error (and the
    # read-back that checks it fails too, with fail_read): publish() raises.
    for i in range(before + 1 + after):
        dev.fail_next = i == before
        try:
            c.publish(topic % i, b"msg %d" % i, qos=1)
        except OSError:
            assert i == before
"""


def test_a_program_that_lands_whole_but_reports_an_error_counts():
    """A driver may program a commit whole and then raise (a verify or
    timeout error). The next commit reused its sequence number, the boot
    read a gap and dropped the whole session as stale, with no event. Read
    back, a commit that is on flash whole now counts: the publish succeeds
    and a reboot restores every message."""
    r = run_mp(FLAKY + r"""
from norflash import NorFlash
from durable_mqtt import MQTTClient


nor = NorFlash(4096, 8, prog_size=32)
dev = Flaky(nor)
c = MQTTClient("dev1", "127.0.0.1", session_file=dev, clean_session=False, buf_size=256)
for i in range(3):
    c.publish("t/a", b"held %d" % i, qos=1)
dev.fail_next = True
c.publish("t/a", b"msg 3", qos=1)
for i in range(40):                       # on into the next block
    c.publish("t/a", b"after %d" % i, qos=1)
held = c.pending()
ev = []
c2 = MQTTClient("dev1", "127.0.0.1", session_file=Flaky(nor.reboot()), clean_session=False, buf_size=256,
                event_callback=lambda e, i: ev.append(e))
print("held", held, "restored", c2.pending(), "events", ev)
""")
    assert "held 44 restored 44 events []" in r.stdout, r.stdout


def test_a_commit_that_landed_but_could_not_be_read_back_keeps_the_session():
    """As above, but the read-back that tells whether the commit landed
    fails too (the bus errs again). The commit counts as not landed and
    the next one takes its sequence number again. The boot read that
    repeat as a gap and dropped everything before it: the whole session,
    with no event. A number repeated is now the log going on (a gap is a
    number skipped; nothing else repeats one): the reboot restores every
    message accepted."""
    r = run_mp(FLAKY + r"""
from norflash import NorFlash
from durable_mqtt import MQTTClient


nor = NorFlash(4096, 8, prog_size=32)
dev = Flaky(nor, fail_read=True)
c = MQTTClient("dev1", "127.0.0.1", session_file=dev, clean_session=False, buf_size=256)
publish_past_a_failed_program(c, dev, "t/%d", 10, 3)
held = c.pending()
ev = []
c2 = MQTTClient("dev1", "127.0.0.1", session_file=nor.reboot(), clean_session=False, buf_size=256,
                event_callback=lambda e, i: ev.append(e))
print("held", held, "restored", c2.pending(), "events", ev)
""")
    assert "held 13 restored 13 events []" in r.stdout, r.stdout         # 0 restored before


def test_a_commit_whose_read_back_finds_no_heap_keeps_what_was_before():
    """The same where the read-back's buffer finds no heap (heap_lock()
    here; a full heap on a board): every commit before it, and after it,
    is loaded."""
    r = run_mp(FLAKY + r"""
import micropython
from norflash import NorFlash
from durable_mqtt.ring import RingStore


def append(r, b):
    r.write(b, 0, len(b))
    r.sync()

nor = NorFlash(4096, 8, prog_size=32)
dev = Flaky(nor)
r = RingStore(dev)
r.begin(); r.write(b"STATE", 0, 5); r.end()
for i in range(5):
    append(r, b"+m%d" % i)
M = b"+m5"
dev.fail_next = True
micropython.heap_lock()
try:
    append(r, M)
except OSError:
    pass
micropython.heap_unlock()
for i in range(6, 9):
    append(r, b"+m%d" % i)
print("loaded", bytes(RingStore(nor.reboot()).load()))
""")
    # +m5 is on flash, its append reported failed: loaded too (sent again, never lost)
    assert "loaded b'STATE+m0+m1+m2+m3+m4+m5+m6+m7+m8'" in r.stdout, r.stdout      # b'' before


def test_a_load_never_copies_more_than_its_scan_sized():
    """load() walked the flash a second time and copied into the buffer the
    first walk (at construction) had sized, with viper, which checks no
    bounds: flash written since (a second RingStore on the device) or a
    read that disagreed with the first made it write past that buffer
    (here 100 bytes sized, 18,100 copied: a heap overwritten, or a crash
    at boot). A walk that reads more or less than its scan now reads again
    from a fresh scan, and returns what flash holds."""
    r = run_mp(r"""
from norflash import NorFlash
from durable_mqtt.ring import RingStore
nor = NorFlash(4096, 8, prog_size=32)
w = RingStore(nor)
w.begin(); w.write(b"S" * 100, 0, 100); w.end()
reader = RingStore(nor)              # scans now: 100 bytes
for i in range(20):
    w.write(b"%02d" % i + b"x" * 898, 0, 900); w.sync()
out = reader.load()
print("loaded", len(out), out == b"S" * 100 + b"".join(b"%02d" % i + b"x" * 898 for i in range(20)))
""")
    assert "loaded 18100 True" in r.stdout, r.stdout


def test_flash_that_refuses_every_program_is_not_erased_at_every_retry():
    """Programs fail (EIO) while erases work: each retry of the store (a
    RobustClient offline retries at every poll) took the next block, erased
    it, failed on its header, and started again: 59 erases a second of one
    block, a chip worn out within the hour. A block erased whose header
    did not go, still blank, is not erased again, and a commit whose
    program left its range erased keeps its place."""
    r = run_mp(r"""
import time
from norflash import FailingNorFlash
from durable_mqtt.robust import RobustClient
for where in ("header", "commit"):
    dev = FailingNorFlash(4096, 8, prog_size=32)
    c = RobustClient("dev1", "127.0.0.1", port=1, session_file=dev, clean_session=False,
                     persist_batch_ms=50, backoff_ms=(60000, 60000))
    for i in range(3):
        c.publish("t/a", b"m%d" % i, qos=1)
    c.journal.flush()
    if where == "header":
        # fill the head block: the next write needs a new block
        while c.journal.b.stats()["head"] == 0:
            c.publish("t/a", b"x" * 200, qos=1)
            c.journal.flush()
    dev.bad = True                           # every program now raises EIO
    c.publish("t/a", b"batched", qos=1)      # written when due, and tried again at every poll
    e0 = dev.erases
    t0 = time.ticks_ms()
    polls = 0
    while time.ticks_diff(time.ticks_ms(), t0) < 1500:
        c.poll(50)
        polls += 1
    print(where, "polls", polls, "erases", dev.erases - e0, "error", c.store_error is not None)
""", timeout=60)
    for where in ("header", "commit"):
        line = [x for x in r.stdout.splitlines() if x.startswith(where)]
        assert line, r.stdout
        f = line[0].split()
        assert int(f[2]) >= 10 and int(f[4]) <= 1 and f[6] == "True", r.stdout


def test_boots_cut_in_a_row_leave_the_ring_writable():
    """A brown-out loop: the power fails during every boot's checkpoint. A
    cut commit closes its block for the next boot, which checkpointed in a
    fresh one and was cut again: a block a boot, until the ring was full
    for good (every publish StoreFull, on every boot after, until erase()).
    A ring's boot writes no checkpoint unless its live span asks for one
    (its commits are whole: there is no torn tail to drop), so these boots
    write nothing, and the session stays whole and writable."""
    r = run_mp(r"""
from norflash import NorFlash, PowerCut
from durable_mqtt import MQTTClient
nor = NorFlash(4096, 8, prog_size=32)
c = MQTTClient("dev1", "127.0.0.1", session_file=nor, clean_session=False, buf_size=256)
for i in range(3):
    c.publish("t/a", b"held %d" % i, qos=1)
dev = nor
for k in range(12):
    dev = dev.reboot()
    dev.cut_after(1, torn=True, fraction=0.5, count_erases=True)   # its first program or erase
    try:
        MQTTClient("dev1", "127.0.0.1", session_file=dev, clean_session=False, buf_size=256)
        dev.disarm()
    except PowerCut:
        pass
dev = dev.reboot()
ev = []
c = MQTTClient("dev1", "127.0.0.1", session_file=dev, clean_session=False, buf_size=256,
               event_callback=lambda e, i: ev.append(e))
held = c.pending()
for i in range(20):
    c.publish("t/a", b"new %d" % i, qos=1)
print("held", held, "then", c.pending(), "events", ev)
""", timeout=60)
    assert "held 3 then 23 events []" in r.stdout, r.stdout

@pytest.mark.parametrize("prog_size", [32, 16])
def test_boots_cut_at_their_first_commit_cost_a_commit_each(prog_size):
    """A brown-out loop where every boot is cut at its first commit (its
    publish's append, or the checkpoint its live span asks for). Each cut
    commit used to close its block: 16 such boots filled a ring of 16 blocks
    for good (every QoS 1 publish StoreFull, every boot store_full, until
    the session was ended). Now a cut costs one commit's room: 60 such boots
    leave the ring writable, and the session whole. With a prog_size of 16
    too, whose header takes 32 bytes for the bound (it had no room, and a
    cut still closed its block)."""
    r = run_mp(r"""
from norflash import NorFlash, PowerCut
from durable_mqtt import MQTTClient

class CutCommit:
    # Cuts the power at the first commit (a program past a block header).
    def __init__(self, d):
        self.d = d
        self.armed = True
    def readblocks(self, n, buf, off=0):
        return self.d.readblocks(n, buf, off)
    def writeblocks(self, n, buf, off=None):
        if self.armed and off:
            self.armed = False
            self.d.cut_after(1, torn=True, fraction=0.5)
        return self.d.writeblocks(n, buf, off)
    def ioctl(self, op, arg):
        return self.d.ioctl(op, arg)

def mk(dev, ev):
    return MQTTClient("dev1", "127.0.0.1", session_file=dev, clean_session=False, buf_size=256,
                      ring_prog_size=P, event_callback=lambda e, i: ev.append(e))
import sys
P = int(sys.argv[1])
dev = NorFlash(4096, 16, prog_size=P)
ev = []
w = CutCommit(dev)
w.armed = False
c = mk(w, ev)
for i in range(3):
    c.publish("t/a", b"held %d" % i, qos=1)
cuts = 0
for k in range(60):
    dev = dev.reboot()
    try:
        c = mk(CutCommit(dev), ev)
        c.publish("t/a", b"x" * 40, qos=1)
    except PowerCut:
        cuts += 1
dev = dev.reboot()
w = CutCommit(dev)
w.armed = False
c = mk(w, ev)
held = c.pending()
for i in range(20):
    c.publish("t/a", b"new %d" % i, qos=1)
dev = dev.reboot()
print("cuts", cuts, "held", held, "then", mk(dev, ev).pending(), "events", ev)
""", timeout=120, args=[str(prog_size)])
    assert "cuts 60 held 3 then 23 events []" in r.stdout, r.stdout


def test_a_ring_read_over_a_region_of_another_size_is_not_taken_for_its_state():
    """A ring written over 16 blocks, read over 8 or 12 (the partition or
    rp2.Flash region was resized between boots): the chain the smaller
    region sees is the ring's older blocks, and load() returned an older
    checkpoint with its appends as the session, silently: messages accepted
    since were lost and acknowledged ones came back. The block header now
    records the region's size: a ring of another size is refused
    (ValueError; the client discards it with an event and formats the
    region), and a ring written before (bytes FF FF) still loads."""
    out = mp(r"""
from durable_mqtt.client import MQTTClient
def state(i):
    return (b"STATE%05d" % i) * 30
def fill(dev, stop):
    r = RingStore(dev)
    for i in range(stop):
        checkpoint(r, state(i))
        for a in range(3):
            m = b"+%05d-%d" % (i, a)
            append(r, m, len(m))
    return r
dev = NorFlash(4096, 16, prog_size=32)
fill(dev, 118)
true = RingStore(dev).load()
assert true.startswith(state(117)), true[:20]
assert RingStore(dev).stats()["head"] >= 12
for n in (8, 12):
    try:
        got = RingStore(dev, num_blocks=n).load()
        print("over", n, "loaded", got[:10])
    except ValueError as x:
        print("over", n, "refused:", x)
assert RingStore(dev).load() == true           # reading changed nothing

# Through the client: the first 8 blocks of the region as a device of their own.
def small_copy(dev, n):
    d = NorFlash(4096, n, prog_size=32)
    b = bytearray(4096)
    for k in range(n):
        dev.readblocks(k, b, 0)
        d.writeblocks(k, b, 0)
    return d
big = NorFlash(4096, 16, prog_size=32)
c = MQTTClient("dev1", "localhost", clean_session=False, session_file=big)
c.publish("t/early", b"x" * 50, qos=1)
for i in range(300):
    c.journal.checkpoint()
    if RingStore(big).stats()["head"] >= 9:
        break
c.publish("t/late", b"y", qos=1)
assert MQTTClient("dev1", "localhost", clean_session=False, session_file=big).engine.held == 2
small = small_copy(big, 8)
ev = []
c = MQTTClient("dev1", "localhost", clean_session=False, session_file=small,
               event_callback=lambda e, i: ev.append((e, i)))
print("client over 8:", c.engine.held, ev)
assert ev and ev[0][0] == "discarded" and c.engine.held == 0, ev
c.publish("t/new", b"z", qos=1)                  # the region works as a ring of 8 blocks
assert MQTTClient("dev1", "localhost", clean_session=False, session_file=small).engine.held == 1

# A ring written before the size was recorded (bytes 6..7 FF FF) loads as before.
old = NorFlash(4096, 8, prog_size=32)
r = RingStore(old)
r._hdr[6] = r._hdr[7] = 0xFF
checkpoint(r, state(1))
append(r, b"+a", 2)
assert RingStore(old).load() == state(1) + b"+a"
print("ok")
""")
    assert "over 8 refused" in out and "over 12 refused" in out, out
    assert out.splitlines()[-1] == "ok"


def test_a_ring_of_a_later_format_written_since_makes_ours_stale():
    """A downgrade, an upgrade, a downgrade again: a later library's ring
    (another format) written over part of the region since ours numbers
    its blocks above ours, as every format does over another ring's blocks.
    Ours is then stale (what it holds was acknowledged long ago) and is
    refused with the reason, as one resized and set back is; it was loaded
    (blocks of another format were left out of the numbering). The reason
    is the newest foreign block's (an older one of format 1 further on
    named it at first). The inspector says the same."""
    out = mp(r"""
import binascii
from durable_mqtt import crc
dev = NorFlash(1024, 6, prog_size=32)
r = RingStore(dev, max_append=100)
checkpoint(r, b"acknowledged long ago")
for i in range(8):
    append(r, b"+%d" % i, 2)
head = r.stats()["head"]
seq = r._head_seq
k = (head + 1) % 6                              # a block the later ring took
dev.erase(k)
h = bytearray(b"\xff" * 32)
h[0:8] = b"DMQR\x03\x05\x00\x06"
h[8:12] = (seq + 6 + (k - seq - 6) % 6).to_bytes(4, "big")   # above ours, block k numbered k mod 6
crc.seal(h, 0, 12)
dev.writeblocks(k, h, 0)
j = (k + 2) % 6                                 # an old format-1 block further on
assert j != head and dev.data[j * 1024:j * 1024 + 4] == b"\xff" * 4
h[4] = 1
h[8:12] = bytes(4)
crc.seal(h, 0, 12)
dev.writeblocks(j, h, 0)
try:
    RingStore(dev, max_append=100).load()
    print("loaded")
except ValueError as e:
    print("refused:", e)
print("image", binascii.hexlify(dev.data).decode())
""")
    assert "refused: flash ring format 3 is newer than this library's" in out, out
    import session_inspect
    img = bytes.fromhex(out.split("image ")[1].split()[0])
    with pytest.raises(session_inspect.Unreadable, match="format 3 is newer"):
        session_inspect.read_ring(img, 1024, 32, 0, 6, session_inspect.Diag(), {})


def test_a_ring_resized_and_set_back_does_not_bring_its_old_session_back():
    """Firmware A has a 16-block ring; an update B uses 8 blocks of it,
    refuses A's ring (another size), formats and runs; a rollback to A
    loaded A's last state from before the update, with no event: messages
    acknowledged long ago sent again, B's queue lost (a review found it).
    A ring now formats numbered above every block of another size it finds
    (that ring's blocks are numbered in a row), so a ring written since
    outranks the old one, which is then refused as foreign. Both ways the
    client reports `discarded` and starts afresh."""
    out = mp(r"""
def state(tag, i):
    return (b"%s%05d" % (tag, i)) * 30
dev = NorFlash(4096, 16, prog_size=32)
r = RingStore(dev)                      # firmware A: 16 blocks
for i in range(60):
    checkpoint(r, state(b"OLD", i))
r = RingStore(dev, num_blocks=8)        # firmware B: the first 8
try:
    r.load()
    print("B loaded A's ring")
except ValueError:
    pass
r.erase()                               # what the client does after "discarded"
for i in range(3):                      # (a short run: few blocks of B's)
    checkpoint(r, state(b"NEW", i))
assert RingStore(dev, num_blocks=8).load().startswith(b"NEW")
try:                                    # the rollback: 16 blocks again
    got = RingStore(dev).load()
    print("A loaded", got[:8])
except ValueError as x:
    print("A refused:", x)
r = RingStore(dev)
r.erase()
checkpoint(r, state(b"AGAIN", 0))
print("A again", bytes(RingStore(dev).load()[:10]))
""")
    assert "B loaded" not in out and "A loaded" not in out, out
    assert "A refused: flash ring written over 8 blocks, opened over 16" in out, out
    assert "A again b'AGAIN00000'" in out, out


def test_a_ring_written_with_another_prog_size_is_refused_and_never_comes_back():
    """A ring written with prog_size 32, opened with 256 (a firmware that
    sets prog_size=256, as load.py does on rp2) loaded empty with no
    reason, and formatted from sequence 0; opened with 32 again, the old
    blocks outranked the new ring's and load() returned the old session
    (OLD00059 instead of NEW00002): messages acknowledged long ago sent
    again, a QoS 2 one delivered twice. Another prog_size is now refused
    like another size (ValueError: the client reports `discarded`), and
    the new ring is numbered above the old one."""
    out = mp(r"""
def state(tag, i):
    return (b"%s%05d" % (tag, i)) * 30
dev = NorFlash(4096, 16, prog_size=32)
r = RingStore(dev, prog_size=32)
for i in range(60):
    checkpoint(r, state(b"OLD", i))
for P in (256, 16):
    try:
        print("P", P, "loaded", bytes(RingStore(dev, prog_size=P).load()[:8]))
    except ValueError as x:
        print("P", P, "refused:", x)
r = RingStore(dev, prog_size=256)
r.erase()                               # what the client does after "discarded"
for i in range(3):
    checkpoint(r, state(b"NEW", i))
assert RingStore(dev, prog_size=256).load().startswith(b"NEW")
try:
    print("back to 32 loaded", bytes(RingStore(dev, prog_size=32).load()[:8]))
except ValueError as x:
    print("back to 32 refused:", x)
""")
    assert "P 256 refused: flash ring written with prog_size 32, opened with 256" in out, out
    assert "P 16 refused: flash ring written with prog_size 32, opened with 16" in out, out
    assert "back to 32 refused: flash ring written with prog_size 256, opened with 32" in out, out


def test_a_ring_read_over_a_region_that_starts_elsewhere_is_refused():
    """The same number of blocks, starting 1..7 blocks later (an
    rp2.Flash(start=...) or a first_block moved by a firmware update): the
    block headers say nothing of where the region starts, so the blocks
    the two regions share read as a ring of their own, and load() returned
    an older checkpoint (S00167 for S00189) as the session, silently. A
    ring's block sequence numbers now run with the block's place in the
    region (seq % N == index): a block elsewhere is refused like a ring of
    another size, and a ring formatted there outranks the old one."""
    out = mp(r"""
def state(tag, i):
    return (b"%s%05d" % (tag, i)) * 30
dev = NorFlash(4096, 16, prog_size=32)
r = RingStore(dev, num_blocks=8)
i = 0
while r.erases < 9 or r.stats()["head"] != 1:
    checkpoint(r, state(b"S", i))
    i += 1
true = bytes(RingStore(dev, num_blocks=8).load()[:6])
print("true", true)
for fb in range(1, 9):
    try:
        got = bytes(RingStore(dev, first_block=fb, num_blocks=8).load()[:6])
        print("shift", fb, "loaded", got)
        assert got == b"", (fb, got)            # blank (8: a region of its own)
    except ValueError as x:
        print("shift", fb, "refused:", x)
        assert "first block" in str(x), x
assert bytes(RingStore(dev, num_blocks=8).load()[:6]) == true     # reading changed nothing
r = RingStore(dev, first_block=3, num_blocks=8)
r.erase()
checkpoint(r, state(b"N", 0))
assert RingStore(dev, first_block=3, num_blocks=8).load().startswith(b"N00000")
try:
    print("back loaded", bytes(RingStore(dev, num_blocks=8).load()[:6]))
except ValueError as x:
    print("back refused:", x)
print("ok")
""")
    assert "loaded b'S" not in out, out
    assert "back refused" in out, out
    assert out.splitlines()[-1] == "ok"


def test_a_journal_behind_stays_behind_when_the_rings_erase_fails():
    """LogJournal on the ring: a write error when the gathered acks fill
    their record leaves the journal behind (its next write a checkpoint of
    the whole state, store.py). An erase (MQTT 5 disconnect with Session
    Expiry 0; a clean connect) that fails must leave it so: it cleared the
    flags first, and the next publish's record was appended to a log that
    lacks those acknowledgements."""
    out = mp(r"""
from durable_mqtt.session import Session
from durable_mqtt.store import LogJournal
from norflash import FailingNorFlash
dev = FailingNorFlash(4096, 8, prog_size=32)
e = Session(False, b"ring-behind", 10, 8, 2048, 16, 4, 256)
e.expiry = 0xFFFFFFFF
j = LogJournal(RingStore(dev), e)
j.checkpoint()
dev.bad = True
for pid in range(1, 13):
    j.acked(pid)
print("behind", j.behind, j.nacks, repr(j.error))
try:
    j.erase()
except OSError as x:
    print("erase raised", repr(x))
print("after", j.behind, j.nacks)
dev.bad = False
j.erase()
print("erased", j.behind, j.nacks, j.error)
""")
    assert "behind True 10 OSError(5,)" in out, out
    assert "erase raised OSError(5,)\nafter True 10" in out, out
    assert "erased False 0 None" in out, out


def test_a_ring_too_small_for_buf_size_says_so():
    """A 3 x 4 KB ring holds a session with buf_size=256, but not with
    buf_size=4096: the room a ring keeps grows with its largest append,
    sized from buf_size. The refusal named the region alone; it now says
    which appends it was sized for, and what to change."""
    r = run_mp(r"""
from norflash import NorFlash
from durable_mqtt import MQTTClient
try:
    MQTTClient("d", "127.0.0.1", session_file=NorFlash(4096, 3, prog_size=32), clean_session=False, buf_size=4096)
except ValueError as x:
    print("REFUSED", x)
c = MQTTClient("d", "127.0.0.1", session_file=NorFlash(4096, 3, prog_size=32), clean_session=False, buf_size=256)
c.publish("t", b"x", qos=1)
print("OK", c.pending())
""")
    assert "REFUSED ring too small: 3 blocks of 4096 bytes" in r.stdout and "buf_size" in r.stdout, r.stdout
    assert "OK 1" in r.stdout, r.stdout
