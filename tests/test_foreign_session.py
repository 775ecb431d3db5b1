"""The session directory (filestore.py, read back by load.py) on a real
LittleFS image (VfsLfs2 on the NOR flash test device, tests/mp/norflash.py,
ESP32 mount) against what the library itself never writes there, or writes
only after a very long life: the directory a file, a name of its own taken
by a directory, a full filesystem at the first boot, sequence numbers past
2**31. docs/api.md's promise: an unusable session is reported and set aside,
the boot never raises, nothing intact is lost or delivered twice. Also the
byte tables of docs/session-format.md checked against the files the library
writes, with a parser written from the document alone.
"""
import binascii
import struct

from conftest import run_mp

LFS = r"""
import os, vfs
from norflash import NorFlash
from durable_mqtt import MQTTClient, crc
P = 32
def fresh():
    dev = NorFlash(4096, 32, prog_size=P)
    vfs.VfsLfs2.mkfs(dev, progsize=P)
    vfs.mount(vfs.VfsLfs2(dev, progsize=P), "/fl")
    return dev
def boot(cid="dev", **kw):
    ev = []
    c = MQTTClient(cid, "127.0.0.1", 1, clean_session=False, session_file="/fl/s",
                   event_callback=lambda e, i: ev.append((e, i)), **kw)
    return c, ev
def names(ev):
    return [e for e, _ in ev]
def payloads(c):
    # The held messages' last payload byte, in resend order.
    e = c.engine
    out = []
    for k in range(e.count):
        i = e.index(k)
        out.append(bytes(e.arena[e.off[i] + e.len[i] - 1:e.off[i] + e.len[i]]))
    return b"".join(out)
"""


def test_resend_order_holds_across_the_sequence_numbers_wrap(tmp_path):
    """Slot sequence numbers are u32 and only grow while a message is held
    (a boot with an empty session starts them at 1 again). Past 2**31 the
    boot compared them as signed 32-bit numbers: a message written after
    the wrap was resent before older ones (MQTT-4.6.0-1), and of two slots
    with one packet id the older won. They are compared as serial numbers
    (by distance), across 2**31 and 2**32 alike."""
    r = run_mp(LFS + r"""
def reseq(path, seq):
    with open(path, "rb") as f:
        b = bytearray(f.read())
    b[0:4] = seq.to_bytes(4, "big")
    crc.seal(b, 0, len(b) - 4)
    with open(path, "wb") as f:
        f.write(b)
for start in (0x7FFFFFFE, 0xFFFFFFFE, 0x7FFFFFFF, 0xFFFFFFFF):
    fresh()
    c, ev = boot()
    c.publish("t", b"A", qos=1)
    c.close()
    reseq("/fl/s.d/0", start)                   # as if written 2**31 messages later
    c, ev = boot()
    c.publish("t", b"B", qos=1)
    c.publish("t", b"C", qos=1)
    c.close()
    c, ev = boot()
    print(hex(start), ev, payloads(c))
    assert ev == [] and payloads(c) == b"ABC", (hex(start), payloads(c))
    # The same packet id in two slots across the wrap: the newer one counts
    # (a message whose slot was not emptied before its id came round again).
    pid = c.publish("t", b"D", qos=1)
    c.close()
    d = "/fl/s.d/"
    with open(d + "2", "rb") as f:                # C, the newest before D
        old = bytearray(f.read())
    old[7:9] = pid.to_bytes(2, "big")
    crc.seal(old, 0, len(old) - 4)
    with open(d + "5", "wb") as f:                # an older copy of D's id, holding C
        f.write(old)
    reseq(d + "5", start - 5)
    c, ev = boot()
    assert ev == [] and payloads(c) == b"ABCD", (hex(start), payloads(c))
    vfs.umount("/fl")
print("OK")
""")
    assert "OK" in r.stdout, r.stdout


def test_a_session_directory_that_is_a_file_or_holds_directories(tmp_path):
    """What the library never writes: PATH.d a file; "h", "h.tmp", "i0" or a
    slot name taken by a directory; a stranger's directory, empty or not.
    Each made the constructor raise OSError (ENOTDIR, EISDIR, ENOTEMPTY) or
    a later publish() fail. Now: an empty directory goes like a stray file;
    a name the library needs taken by one that cannot be removed makes the
    session unusable (set aside as PATH.d.bad, `discarded`); a stranger's
    directory that cannot be removed is left alone; the messages of a
    session that stays usable are all restored."""
    r = run_mp(LFS + r"""
def three():
    fresh()
    c, ev = boot()
    for m in (b"A", b"B", b"C"):
        c.publish("t", m, qos=1)
    c.close()
def then(ev0, n0, msgs):
    # After the boot under test: the store works on.
    c, ev = boot()
    c.publish("t", b"Z", qos=1)
    c.close()
    c, ev = boot()
    assert ev == [] and payloads(c) == msgs + b"Z", (ev, payloads(c))
    vfs.umount("/fl")
# 1. PATH.d is a file
fresh()
with open("/fl/s.d", "wb") as f:
    f.write(b"not a directory")
c, ev = boot()
assert names(ev) == ["discarded"] and c.pending() == 0, ev
with open("/fl/s.d.bad", "rb") as f:
    assert f.read() == b"not a directory"      # kept aside
then(ev, 0, b"")
# 2. a name of the library's taken by a directory that holds something
for name in ("h", "h.tmp", "i0", "1"):
    three()
    if name == "h":
        os.rename("/fl/s.d/h", "/fl/s.h")
    os.mkdir("/fl/s.d/" + name) if name != "1" else (os.remove("/fl/s.d/1"), os.mkdir("/fl/s.d/1"))
    with open("/fl/s.d/" + name + "/x", "wb") as f:
        f.write(b"x")
    c, ev = boot()
    print(name, ev, c.pending())
    assert names(ev) == ["discarded"] and c.pending() == 0, (name, ev)
    assert "x" in os.listdir("/fl/s.d.bad/" + name)
    then(ev, 0, b"")
# 3. the same names as empty directories: removed, nothing lost
for name in ("h.tmp", "i0", "7"):
    three()
    os.mkdir("/fl/s.d/" + name)
    c, ev = boot()
    print(name, ev, payloads(c))
    assert ev == [] and payloads(c) == b"ABC", (name, ev, payloads(c))
    then(ev, 3, b"ABC")
# 4. a stranger's directory: emptied or not, the session is restored
for full in (False, True):
    three()
    os.mkdir("/fl/s.d/notes")
    if full:
        with open("/fl/s.d/notes/a", "wb") as f:
            f.write(b"a")
    c, ev = boot()
    print("notes", full, ev, payloads(c))
    assert ev == [] and payloads(c) == b"ABC", (ev, payloads(c))
    then(ev, 3, b"ABC")
print("OK")
""")
    assert "OK" in r.stdout, r.stdout


def test_a_full_or_read_only_filesystem_at_the_first_boot(tmp_path):
    """A persistent client's first boot writes the session's first
    checkpoint. On a filesystem too full to make PATH.d, or read-only, the
    constructor raised OSError (ENOENT from listing the directory it could
    not make). Now it starts with event `store_full`; publish() at QoS 1/2
    raises StoreFull (nothing accepted that is not on flash) while QoS 0
    still goes; once there is room, the next checkpoint (connect(), here a
    new boot) makes the directory and the session is kept."""
    r = run_mp(LFS + r"""
from durable_mqtt import StoreFull
def fill():
    k = 0
    for sz in (4096, 1024, 256, 64, 16, 1):
        try:
            while True:
                with open("/fl/fill%d" % k, "wb") as f:
                    f.write(bytes(sz))
                k += 1
        except OSError:
            pass
    return k
def check(c, ev):
    assert names(ev) == ["store_full"], ev
    try:
        c.publish("t", b"q1", qos=1)
        raise AssertionError("accepted")
    except StoreFull:
        pass
    assert c.pending() == 0
    c.publish("t", b"q0", qos=0)               # QoS 0 is never stored
    c.close()
dev = fresh()
k = fill()
c, ev = boot()
print("full", ev)
check(c, ev)
for n in range(k):
    os.remove("/fl/fill%d" % n)
c, ev = boot()
assert ev == [], ev
c.publish("t", b"A", qos=1)
c.close()
c, ev = boot()
assert ev == [] and payloads(c) == b"A", (ev, payloads(c))
vfs.umount("/fl")
# read-only: the first boot, and a boot that holds a session
dev = fresh()
vfs.umount("/fl")
vfs.mount(vfs.VfsLfs2(dev, progsize=P), "/fl", readonly=True)
c, ev = boot()
print("ro", ev)
check(c, ev)
vfs.umount("/fl")
vfs.mount(vfs.VfsLfs2(dev, progsize=P), "/fl")
c, ev = boot()
c.publish("t", b"A", qos=1)
c.close()
vfs.umount("/fl")
vfs.mount(vfs.VfsLfs2(dev, progsize=P), "/fl", readonly=True)
c, ev = boot()
assert ev == [] and payloads(c) == b"A", (ev, payloads(c))
print("OK")
""")
    assert "OK" in r.stdout, r.stdout
