"""The NOR flash test device (tests/mp/norflash.py): NOR rules, counters,
power cuts, reboot, LittleFS on top of it, and the file-backed image that
survives SIGKILL."""
from conftest import run_mp, spawn_mp

PRELUDE = r"""
import gc, micropython
from norflash import NorFlash, PowerCut, ProgramError


def raises(exc, f):
    try:
        f()
    except exc:
        return True
    raise AssertionError("expected %r" % exc)
"""


def mp(code, **kw):
    r = run_mp(PRELUDE + code, **kw)
    print(r.stdout)
    return r.stdout


def test_nor_rules_and_counters():
    out = mp(r"""
d = NorFlash(256, 4, prog_size=16)
assert d.ioctl(4, 0) == 4 and d.ioctl(5, 0) == 256
b = bytearray(16)
d.readblocks(1, b, 32)
assert b == b"\xff" * 16                     # erased reads 0xFF
d.writeblocks(1, b"\x0f" * 16, 32)
d.readblocks(1, b, 32)
assert b == b"\x0f" * 16
# programming over a programmed byte is a bug, even with the same value
raises(ProgramError, lambda: d.writeblocks(1, b"\x0f" * 16, 32))
raises(ProgramError, lambda: d.writeblocks(1, b"\xff" * 16, 32))
# unaligned offset or length
raises(ProgramError, lambda: d.writeblocks(1, b"\x00" * 16, 40))
raises(ProgramError, lambda: d.writeblocks(1, b"\x00" * 8, 64))
raises(ValueError, lambda: d.writeblocks(3, b"\x00" * 32, 240))   # past the end
assert d.programs == 1 and d.programmed_bytes == 16
# 0xFF bytes in a program leave erased bytes erased (padding is free)
d.writeblocks(2, b"\x00" * 8 + b"\xff" * 8, 0)
d.writeblocks(2, b"\x12" * 16, 16)
assert d.ioctl(6, 1) == 0
assert d.erases == 1 and d.block_erases == [0, 1, 0, 0]
d.readblocks(1, b, 32)
assert b == b"\xff" * 16
d.writeblocks(1, b"\x01" * 16, 32)          # programmable again after erase
# simple protocol (no offset): erase, then program whole blocks
d.writeblocks(1, bytearray(256))
assert d.erases == 2
print("ok")
""")
    assert out.splitlines()[-1] == "ok"


def test_power_cut_torn_program_and_reboot():
    out = mp(r"""
d = NorFlash(256, 4)
d.cut_after(2)
d.writeblocks(0, b"A" * 32, 0)              # 1st: fine
raises(PowerCut, lambda: d.writeblocks(0, b"B" * 32, 32))   # 2nd: torn
assert d.cut
# every call raises until power_on / reboot
raises(PowerCut, lambda: d.readblocks(0, bytearray(4), 0))
raises(PowerCut, lambda: d.writeblocks(0, b"C" * 4, 100))
raises(PowerCut, lambda: d.ioctl(6, 0))
assert d.ioctl(4, 0) == 4                     # geometry is not an operation
d2 = d.reboot()
b = bytearray(32)
d2.readblocks(0, b, 32)
assert b == b"B" * 16 + b"\xff" * 16, b       # half programmed
# the retired object works on a private copy and never reaches the image
d.writeblocks(3, b"Z" * 8, 0)
d2.readblocks(3, b, 0)
assert b == b"\xff" * 32
# torn=False: nothing programmed
d2.cut_after(1, torn=False)
raises(PowerCut, lambda: d2.writeblocks(1, b"D" * 16, 0))
d2.power_on()
d2.readblocks(1, b, 0)
assert b == b"\xff" * 32
# noise: the bytes after the prefix get only some of their bits cleared
d2.cut_after(1, fraction=0.25, noise=True)
raises(PowerCut, lambda: d2.writeblocks(2, b"\x00" * 64, 0))
d2.power_on()
b = bytearray(64)
d2.readblocks(2, b, 0)
assert b[:16] == b"\x00" * 16 and b[16:32] == b"\x55" * 16 and b[32:] == b"\xff" * 32, b
# erases are counted only when asked; a cut erase leaves the block partly erased
d2.writeblocks(3, b"\x00" * 256, 0)
d2.cut_after(1, count_erases=True, erase_pattern="prefix", fraction=0.5)
raises(PowerCut, lambda: d2.ioctl(6, 3))
d2.power_on()
b = bytearray(256)
d2.readblocks(3, b, 0)
assert b[:128] == b"\xff" * 128 and b[128:] == b"\x00" * 128
for pat, check in (("suffix", lambda b: b[:128] == b"\x00" * 128 and b[128:] == b"\xff" * 128),
                   ("stripes", lambda b: b[:64] == b"\xff" * 64 and b[64:128] == b"\x00" * 64)):
    d2.ioctl(6, 3)
    d2.writeblocks(3, b"\x00" * 256, 0)
    d2.cut_after(1, count_erases=True, erase_pattern=pat, fraction=0.5)
    raises(PowerCut, lambda: d2.ioctl(6, 3))
    d2.power_on()
    d2.readblocks(3, b, 0)
    assert check(b), pat
# programs are counted from now: cut_after(3) spares two
d2.cut_after(3)
d2.writeblocks(0, b"\x00" * 4, 100)
d2.writeblocks(0, b"\x00" * 4, 104)
raises(PowerCut, lambda: d2.writeblocks(0, b"\x00" * 4, 108))
print("ok")
""")
    assert out.splitlines()[-1] == "ok"


def test_device_calls_allocate_nothing():
    out = mp(r"""
d = NorFlash(4096, 4, prog_size=32)
buf = bytearray(128)
def ops():
    d.ioctl(6, 1)
    d.writeblocks(1, buf, 0)
    d.writeblocks(1, buf, 128)
    d.readblocks(1, buf, 64)
    d.ioctl(4, 0)
    d.ioctl(5, 0)
    d.ioctl(3, 0)
ops()
micropython.heap_lock()
try:
    ops()
finally:
    micropython.heap_unlock()
gc.collect(); gc.disable()
m = gc.mem_alloc(); ops(); delta = gc.mem_alloc() - m
gc.enable()
assert delta == 0, delta
print("ok")
""")
    assert out.splitlines()[-1] == "ok"


def test_littlefs_runs_on_it():
    # VfsLfs2 uses the extended protocol: ioctl(6) erases, writeblocks with
    # an offset programs; it must never program a byte twice.
    out = mp(r"""
import vfs, os
for P in (1, 32):
    d = NorFlash(4096, 16, prog_size=P)
    vfs.VfsLfs2.mkfs(d)
    vfs.mount(vfs.VfsLfs2(d), "/fl")
    for i in range(30):
        with open("/fl/f%d" % (i % 5), "wb") as f:
            f.write(bytearray(100 * i))
        with open("/fl/log", "ab") as f:
            f.write(b"x" * 96)
    os.rename("/fl/f1", "/fl/f2")
    vfs.umount("/fl")
    vfs.mount(vfs.VfsLfs2(d), "/fl")
    assert os.stat("/fl/log")[6] == 30 * 96
    vfs.umount("/fl")
    print("prog_size", P, "programs", d.programs, "erases", d.erases)
print("ok")
""")
    assert out.splitlines()[-1] == "ok"


def test_file_backed_image_survives_sigkill(tmp_path):
    img = tmp_path / "flash.img"
    script = tmp_path / "writer.py"
    script.write_text(r"""
import sys, time
from norflash import NorFlash
d = NorFlash(1024, 4, path=sys.argv[1])
d.ioctl(6, 2)
d.writeblocks(2, b"survivor" * 4, 64)
print("written")                  # the unix port does not buffer stdout
while True:
    time.sleep(1)
""")
    p = spawn_mp(script, img)
    try:
        line = p.stdout.readline()
        assert line.strip() == "written"
        p.kill()                      # SIGKILL: no chance to flush anything
        p.wait(5)
    finally:
        if p.poll() is None:
            p.kill()
    assert img.stat().st_size == 4096
    out = mp(r"""
d = NorFlash(1024, 4, path=%r)
b = bytearray(32)
d.readblocks(2, b, 64)
assert b == b"survivor" * 4, b
d.readblocks(2, b, 0)
assert b == b"\xff" * 32
raises(ProgramError, lambda: d.writeblocks(2, b"x" * 32, 64))
print("ok")
""" % str(img))
    assert out.splitlines()[-1] == "ok"
