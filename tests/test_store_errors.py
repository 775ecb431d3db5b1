"""The stores' error paths that the power-cut sweeps do not reach: a
filesystem full (ENOSPC) or read-only (EROFS) at each kind of write, and
what follows once there is room again, without a reboot. docs/api.md's
promise: a message publish() refused (StoreFull) leaves nothing behind in
RAM, one it accepted is never lost, and a boot reports what it cannot do
instead of raising. On a real LittleFS image (VfsLfs2 on the NOR flash
test device, tests/mp/norflash.py, ESP32 mount) or the host filesystem.
"""
import pytest

from conftest import free_port, run_mp
from test_foreign_session import FAT_SECTORS, FILL, LFS as FS_LFS, TAILS

LFS = FS_LFS + FILL + r"""
from durable_mqtt import QueueFull, StoreFull
def unfill(k):
    for n in range(k):
        os.remove("/fl/fill%d" % n)
BIG = bytes(200)              # (a slot file past the inline limit: it needs a block)
def faulty():
    # A LittleFS at /fl on NOR flash whose writes raise OSError(5) while .bad.
    from norflash import FailingNorFlash
    dev = FailingNorFlash(4096, 64, prog_size=P)
    vfs.VfsLfs2.mkfs(dev, progsize=P)
    vfs.mount(vfs.VfsLfs2(dev, progsize=P), "/fl")
    return dev
def boots_full(make):
    # The client make() builds on a full store: it boots, with store_full
    # only (ev: the script's event list).
    try:
        c = make()
    except OSError as x:
        print("boot raised", repr(x))
        raise
    print("boot", ev)
    assert ev == [("store_full", {"reason": "filesystem full"})], ev
    return c
def call(f, *a):
    # f(*a), or the repr of what it raised.
    try:
        return f(*a)
    except Exception as x:
        return repr(x)
"""


def test_publishes_refused_by_a_full_filesystem_leave_no_slot_taken():
    """A QoS 1 publish() the full filesystem refuses raised StoreFull, but
    the slot it had chosen stayed marked in RAM as holding the refused
    message's id: each refusal took one more slot. Once there was room
    again publish() raised IndexError (the slot count past the tables), and
    went on raising it, a checkpoint too, until a reboot: 0 of the 20
    messages the outbox takes were accepted (before: a refusal past the
    outbox's slot count already raised IndexError, not StoreFull)."""
    r = run_mp(LFS + r"""
fresh()
c, ev = boot(max_inflight=4)
q = c.engine.qos12
k = fill()
refused = other = 0
for t in range(q + 2):                       # the application retries
    try:
        c.publish("t", BIG + b"x%02d" % t, qos=1)
    except StoreFull:
        refused += 1
    except Exception as x:
        other += 1
print("refused", refused, "raised otherwise", other, "of", q + 2)
assert c.pending() == 0
unfill(k)
got = []
for t in range(q):
    try:
        c.publish("t", BIG + b"%03d" % t, qos=1)
        got.append(b"%03d" % t)
    except Exception as x:
        print("after room came back:", repr(x))
        assert type(x) is QueueFull, x            # the outbox full (outbox_bytes), not the store
        break
print("accepted", len(got))
assert len(got) == 20, got                       # as many as a fresh client's outbox takes
c.journal.checkpoint()
c.close()
c, ev = boot(max_inflight=4)
print("boot", ev, len(tails(c, 3)))
assert tails(c, 3) == got, (tails(c, 3), got)
print("OK")
""")
    print(r.stdout)
    assert "OK" in r.stdout, r.stdout


def test_a_batch_whose_write_fails_is_not_written_twice_when_retried():
    """Batched mode: a due batch is written one slot per message; when the
    filesystem refused one, the ones before it were written, but the batch
    stayed whole, and each retry (every publish() while the batch was due)
    wrote them again into one more slot each. Here 35 retries filled every
    slot with copies of the first message, then publish() raised IndexError
    and the client stayed broken until a reboot (after an acknowledgement
    a copy left behind came back at the next boot)."""
    r = run_mp(LFS + r"""
import time
fresh()
c, ev = boot(max_inflight=4, persist_batch_ms=10)
q = c.engine.qos12
k = fill()
c.publish("t", b"a01", qos=1)              # batched: accepted (a small slot file fits)
c.publish("t", BIG + b"b02", qos=1)        # batched: accepted (its slot file will not)
refused = other = 0
for t in range(q):
    time.sleep_ms(15)
    try:
        c.publish("t", b"c%02d" % t, qos=1)   # the batch is due: written first
    except StoreFull:
        refused += 1
    except Exception as x:
        import sys; sys.print_exception(x)
        other += 1
held = [p for p in c.journal.pid if p]
print("refused", refused, "raised otherwise", other, "slots held", held)
assert other == 0 and held == [1], held
unfill(k)
c.journal.flush()
got = [b"a01", b"b02"]
for t in range(q):
    try:
        c.publish("t", b"%03d" % t, qos=1)
        got.append(b"%03d" % t)
    except Exception as x:
        print("after room came back:", repr(x))
        assert type(x) is QueueFull, x
        break
c.journal.flush()
print("accepted", len(got))
c.close()
c, ev = boot(max_inflight=4)
assert ev == [] and tails(c, 3) == got and len(got) == q, (ev, tails(c, 3), got)
print("OK")
""")
    print(r.stdout)
    assert "OK" in r.stdout, r.stdout



def test_a_torn_filelog_append_on_fat_is_checkpointed_by_the_next_publish(broker):
    """FAT (VfsFat, an SD card) has no atomic append: a write the full
    card cut short leaves its first bytes in the file (the size is
    committed when the file closes), so FileLog refuses every append after
    it until a checkpoint rewrites the file. That checkpoint came only with
    the next connect: a device that stayed connected refused every QoS 1
    publish() (StoreFull "session file needs a checkpoint") although the
    card had room again. Now the next write after the torn one checkpoints
    first: once there is room, publish() is accepted on the same
    connection; every message accepted before and after is on the card in
    order (no garbage after the torn bytes: the boot sees no damage) and
    reaches the broker."""
    r = run_mp(FAT_SECTORS + TAILS + FILL.replace("/fl/", "/fat/") + r"""
from durable_mqtt import StoreFull
from durable_mqtt.filelog import FileLog
PORT = %d
def boot():
    ev = []
    c = MQTTClient("torn-fat", "127.0.0.1", PORT, clean_session=False, session_file=FileLog("/fat/log"),
                   event_callback=lambda e, i: ev.append(e))
    return c, ev
dev = fat(128)
c, ev = boot()
c.connect(clean_session=True)
c.disconnect()
c.connect(clean_session=False)
got = []
c.set_callback(lambda t, m, r, q: got.append(bytes(m[-3:])))
c.subscribe("torn/fat", 1)
k = fill()
accepted = []
for t in range(40):                          # until the card is full (no read: nothing acknowledged)
    try:
        c.publish("torn/fat", b"x" * 100 + b"%%03d" %% t, qos=1)
        accepted.append(b"%%03d" %% t)
    except StoreFull as x:
        print("full at", t, x)
        break
assert accepted and len(accepted) < 40, accepted
log = os.stat("/fat/log")[6]
assert c.journal.b._torn, "the refused append left no torn bytes: no case for this test"
try:
    c.publish("torn/fat", b"x" * 100 + b"still", qos=1)
    raise AssertionError("accepted on a full card")
except StoreFull:
    pass
for n in range(k):
    os.remove("/fat/fill%%d" %% n)
for t in range(100, 103):                    # room again, the same connection
    try:
        c.publish("torn/fat", b"x" * 100 + b"%%03d" %% t, qos=1)
        accepted.append(b"%%03d" %% t)
    except StoreFull as x:
        print("refused with room:", repr(x))
        break
print("held", tails(c, 3))
assert accepted[-3:] == [b"100", b"101", b"102"], accepted
assert tails(c, 3) == accepted, (tails(c, 3), accepted)
assert c.is_connected()
c.close()                                    # (a power cut: no DISCONNECT)
reboot(dev)
c, ev = boot()
print("boot", ev, tails(c, 3))
assert ev == [] and tails(c, 3) == accepted, (ev, tails(c, 3), accepted)
c.set_callback(lambda t, m, r, q: got.append(bytes(m[-3:])))
c.connect()
for _ in range(100):
    if not c.pending() and len(set(got)) >= len(accepted):
        break
    c.wait_msg(100)
assert c.pending() == 0 and sorted(set(got)) == sorted(accepted), (c.pending(), got, accepted)
c.disconnect()
print("OK", len(accepted))
""" % broker.port)
    print(r.stdout)
    assert "OK" in r.stdout, r.stdout

def test_a_filelog_on_a_read_only_filesystem_boots_and_refuses_with_store_full():
    """A FileLog on a filesystem mounted read-only: its boot checkpoint
    raised OSError(EROFS) out of the constructor, at every boot, the
    session on it intact but unreachable (a session directory there boots
    with event store_full and its messages restored), and a QoS 1
    publish() raised the bare OSError instead of StoreFull."""
    r = run_mp(LFS + r"""
from durable_mqtt.filelog import FileLog
def fboot():
    ev = []
    c = MQTTClient("dev", "127.0.0.1", 1, clean_session=False, session_file=FileLog("/fl/log"),
                   event_callback=lambda e, i: ev.append((e, i)))
    return c, ev
def ro(dev):
    vfs.umount("/fl")
    vfs.mount(vfs.VfsLfs2(dev, progsize=P), "/fl", readonly=True)
dev = fresh()
c, ev = fboot()
c.publish("t", b"A01", qos=1)
c.close()
ro(dev)
c, ev = fboot()                            # a session held
print("boot", ev, tails(c, 3))
assert [e for e, _ in ev] == ["store_full"] and tails(c, 3) == [b"A01"], (ev, tails(c, 3))
try:
    c.publish("t", b"A02", qos=1)
    raise AssertionError("accepted")
except StoreFull:
    pass
assert tails(c, 3) == [b"A01"]
c.close()
vfs.umount("/fl")
vfs.mount(vfs.VfsLfs2(dev, progsize=P), "/fl")
c, ev = fboot()                            # writable again: all there
assert ev == [] and tails(c, 3) == [b"A01"], (ev, tails(c, 3))
c.publish("t", b"A03", qos=1)
c.close()
vfs.umount("/fl")
dev = fresh()
ro(dev)
c, ev = fboot()                            # a first boot
print("first boot", ev)
assert [e for e, _ in ev] == ["store_full"], ev
print("OK")
""")
    print(r.stdout)
    assert "OK" in r.stdout, r.stdout


def test_a_filelog_on_a_full_littlefs_boots_with_store_full():
    """LittleFS reports a file it cannot create for want of room as
    LFS_ERR_NAMETOOLONG (OSError 36), not ENOSPC: a FileLog's first boot
    on a full LittleFS raised that OSError out of the constructor (its
    checkpoint's .tmp file), at every boot while the flash stayed full.
    Now the boot reports store_full and QoS 1 is refused (StoreFull), as on
    a full FAT card or a read-only mount."""
    r = run_mp(LFS + r"""
from durable_mqtt.filelog import FileLog
fresh()
k = fill()
try:
    open("/fl/probe", "wb").close()
except OSError as x:
    print("create on full", x.args[0])
ev = []
c = MQTTClient("dev", "127.0.0.1", 1, clean_session=False, session_file=FileLog("/fl/log"),
               event_callback=lambda e, i: ev.append(e))
print("boot", ev)
assert ev == ["store_full"], ev
try:
    c.publish("t", b"A01", qos=1)
    raise AssertionError("accepted")
except StoreFull:
    pass
c.publish("t", b"q0", qos=0)
print("OK")
""")
    print(r.stdout)
    assert "create on full 36" in r.stdout and "OK" in r.stdout, r.stdout


def test_a_session_directory_beside_an_old_session_file_on_a_read_only_filesystem():
    """A session directory with its header, and beside it a session file of
    the older log layout at the same path (a move into the directory cut
    after its header, before the old file's removal): the boot removes the
    old file, and on a read-only filesystem that removal raised OSError
    (EROFS) out of the constructor, at every boot, the session in the
    directory intact. Now the file stays until a writable boot."""
    r = run_mp(LFS + r"""
dev = fresh()
c, ev = boot()
c.publish("t", b"A01", qos=1)
old = c.save_session()
c.publish("t", b"A02", qos=1)
c.close()
with open("/fl/s", "wb") as f:        # the old layout's file, one message behind
    f.write(old)
vfs.umount("/fl")
vfs.mount(vfs.VfsLfs2(dev, progsize=P), "/fl", readonly=True)
c, ev = boot()
print("read-only boot", ev, tails(c, 3))
assert ev == [] and tails(c, 3) == [b"A01", b"A02"], (ev, tails(c, 3))
c.close()
vfs.umount("/fl")
vfs.mount(vfs.VfsLfs2(dev, progsize=P), "/fl")
c, ev = boot()
with open("/fl/s", "rb") as f:           # the session file is the tag now (dirstate.tag)
    tag = f.read()
assert ev == [] and tails(c, 3) == [b"A01", b"A02"] and sorted(os.listdir("/fl")) == ["s", "s.d"], (ev, os.listdir("/fl"))
assert tag == b"DMQS\x00", tag
print("OK")
""")
    print(r.stdout)
    assert "OK" in r.stdout, r.stdout


def test_a_session_file_removed_on_a_read_only_filesystem_forgets_the_session_there_too():
    """A session file removed takes its session with it; on a filesystem
    mounted read-only the header cannot go, and the boot restored the
    session there while the next writable boot forgot it. Now neither
    restores it, and the writable boot removes it from flash (its new,
    empty session's header replaces it)."""
    r = run_mp(LFS + r"""
dev = fresh()
c, ev = boot()
c.publish("t", b"A01", qos=1)
c.close()
os.remove("/fl/s")
vfs.umount("/fl")
vfs.mount(vfs.VfsLfs2(dev, progsize=P), "/fl", readonly=True)
c, ev = boot()
print("read-only boot", ev, tails(c, 3), sorted(os.listdir("/fl/s.d")))
assert names(ev) == ["store_full"] and tails(c, 3) == [], (ev, tails(c, 3))    # (its new session: no checkpoint)
c.close()
vfs.umount("/fl")
vfs.mount(vfs.VfsLfs2(dev, progsize=P), "/fl")
c, ev = boot()
print("writable boot", ev, tails(c, 3), sorted(os.listdir("/fl/s.d")))
assert ev == [] and tails(c, 3) == [] and "h" in os.listdir("/fl/s.d"), (ev, os.listdir("/fl/s.d"))
with open("/fl/s", "rb") as f:
    assert f.read() == b"DMQS\x00"
c.close()
c, ev = boot()
assert tails(c, 3) == [], tails(c, 3)
print("OK")
""")
    assert "OK" in r.stdout, r.stdout


def test_a_session_directory_needing_repair_on_a_read_only_filesystem_boots():
    """A boot empties what it cannot use in a session directory: a damaged
    slot file, a damaged incoming id file, the older of two copies of a
    message, a slot past the outbox holding nothing. On a filesystem
    mounted read-only each of those writes raised out of MQTTClient()
    (StoreFull, or OSError(EROFS)), at every boot, though the messages
    left were intact (docs/sessions.md: a session on a read-only
    filesystem is restored as usual). Now they are reported (damaged) and
    restored; the files are emptied at a later writable boot."""
    r = run_mp(LFS + r"""
def get(name):
    with open("/fl/s.d/" + name, "rb") as f:
        return bytearray(f.read())
def put(name, d):
    with open("/fl/s.d/" + name, "wb") as f:
        f.write(d)
def ro_boot(dev, what):
    vfs.umount("/fl")
    vfs.mount(vfs.VfsLfs2(dev, progsize=P), "/fl", readonly=True)
    try:
        c, ev = boot(max_inflight=4)
        print(what, [e for e, _ in ev], tails(c, 3))
        c.close()
        ok = tails(c, 3) == [b"A02", b"A03"]
    except Exception as x:
        print(what, "raised", repr(x))
        ok = False
    vfs.umount("/fl")
    vfs.mount(vfs.VfsLfs2(dev, progsize=P), "/fl")
    return ok
results = []
for what in ("damaged slot", "damaged i1", "two copies", "empty far slot"):
    dev = fresh()
    c, ev = boot(max_inflight=4)
    c.publish("t", b"A01", qos=1)
    c.publish("t", b"A02", qos=1)
    c.publish("t", b"A03", qos=1)
    c.close()
    d = get("0")
    if what == "damaged slot":
        d[-1] ^= 1                       # message 1 lost: reported
        put("0", d)
    else:
        put("0", b"")                    # message 1 acknowledged
    if what == "damaged i1":
        put("i1", b"\x00\x00\x00\x02\x08\x00\x02\x00\x07\x00\x00\x00\x00")
    if what == "two copies":
        put("7", get("1"))
    if what == "empty far slot":
        put("99", b"\x01")               # (a slot no outbox this size has, holding nothing whole)
    results.append(ro_boot(dev, what))
    c, ev = boot(max_inflight=4)         # writable: repaired, nothing lost
    assert tails(c, 3) == [b"A02", b"A03"], (what, ev, tails(c, 3))
    c.close()
    vfs.umount("/fl")
print("results", results)
assert results == [True] * 4, results
print("OK")
""")
    print(r.stdout)
    assert "OK" in r.stdout, r.stdout


def test_a_message_past_the_outbox_on_a_read_only_filesystem_is_restored():
    """A message in a slot past this client's outbox (a client with a
    larger one wrote it) is moved at boot into a free slot. On a
    filesystem mounted read-only the move's write raised StoreFull out of
    MQTTClient(), at every boot. Now it stays where it is for this boot,
    as when more messages than the outbox holds are stored."""
    r = run_mp(LFS + r"""
dev = fresh()
c, ev = boot(max_inflight=4)
c.publish("t", b"A01", qos=1)
c.publish("t", b"A02", qos=1)
c.close()
with open("/fl/s.d/1", "rb") as f:
    d = f.read()
with open("/fl/s.d/99", "wb") as f:    # message 2 in slot 99, slot 1 free
    f.write(d)
with open("/fl/s.d/1", "wb") as f:
    pass
vfs.umount("/fl")
vfs.mount(vfs.VfsLfs2(dev, progsize=P), "/fl", readonly=True)
c, ev = boot(max_inflight=4)
print("read-only boot", ev, tails(c, 3))
assert ev == [] and tails(c, 3) == [b"A01", b"A02"], (ev, tails(c, 3))
c.close()
vfs.umount("/fl")
vfs.mount(vfs.VfsLfs2(dev, progsize=P), "/fl")
c, ev = boot(max_inflight=4)
assert ev == [] and tails(c, 3) == [b"A01", b"A02"], (ev, tails(c, 3))
assert "99" not in os.listdir("/fl/s.d"), os.listdir("/fl/s.d")
print("OK")
""")
    print(r.stdout)
    assert "OK" in r.stdout, r.stdout


def test_a_ring_state_too_large_to_checkpoint_never_leaves_the_ring_full_for_good():
    # A state past the ring's capacity (subscriptions added to a ring full
    # of held messages): each checkpoint wrote up to capacity bytes before
    # it was refused, and those dead bytes stayed inside the live span. The
    # ring budgets one such (a checkpoint a power cut ends); after a dozen
    # refused attempts it was full for good: with every message
    # acknowledged and the subscriptions gone, flush(), checkpoint() and
    # publish() all raised StoreFull, even after a reboot (a review found
    # it). After one refused midway, a checkpoint that cannot fit is
    # refused before it writes.
    r = run_mp(r"""
from norflash import NorFlash
from durable_mqtt.session import Session
from durable_mqtt import load
from durable_mqtt.errors import StoreFull
tx = bytearray(300)
e = Session(False, b"dev1", 80, 64, 16384, 8, 64, 256)
e.expiry = 0xFFFFFFFF
nor = NorFlash(4096, 4, prog_size=32)
j = load.open_journal(nor, e, 32, 0, lambda a, b: None)
j.checkpoint()
live = []
while j.fits(100):
    pid = e.accept(b"sensors/dev1/t00", bytes(64), 1, 0, None, 0, 0)
    j.put()
    e.rec = 0
    live.append(pid)
    while e.next_out(0, tx) > 0:
        pass
refused = 0
for k in range(12):                       # each subscription pushes the state further past capacity
    e.subs.append((b"x/%03d/" % k + b"y" * 200, 1, 0))
    try:
        j.checkpoint()
    except StoreFull:
        refused += 1
del e.subs[:]
for p in live:                            # every message acknowledged: the state is tiny
    e.puback(p, 0)
    e.done_pid = 0
    j.acked(p)
out = []
for step in ("flush", "checkpoint", "publish"):
    try:
        if step == "publish":
            e.accept(b"t", b"x", 1, 0, None, 0, 0)
            j.put()
        else:
            getattr(j, step)()
        out.append(step + " ok")
    except StoreFull:
        out.append(step + " full")
print("HELD", len(live), "REFUSED", refused, out)
""")
    assert "HELD 21 REFUSED 11" in r.stdout, r.stdout     # (the first subscription still fits)
    assert "['flush ok', 'checkpoint ok', 'publish ok']" in r.stdout, r.stdout


# A FileLog on LittleFS whose QoS 2 message's OUT_REL the full filesystem
# refused: pubrec_refused(port) returns the publisher (link closed, the
# message past PUBREC in RAM, its OUT_PUB alone on flash), its event names
# and the number of fill files. `got`: the last byte of each message the
# subscriber `sub` receives on TOPIC.
PUBREC_REFUSED = r"""
import time
from durable_mqtt.filelog import FileLog
TOPIC = "se/pubrel/%d" % time.ticks_ms()
got = []
def fboot(port):
    ev = []
    c = MQTTClient("se-pub-" + TOPIC[10:], "127.0.0.1", port, clean_session=False,
                   session_file=FileLog("/fl/log"), event_callback=lambda e, i: ev.append(e))
    return c, ev
def pump(c, ms):
    # Both clients read for ms; the publisher's first error, if any.
    t0 = time.ticks_ms()
    err = None
    while time.ticks_diff(time.ticks_ms(), t0) < ms:
        sub.check_msg()
        if c.is_connected():
            try:
                c.wait_msg(20)
            except OSError as x:
                err = err or x
        else:
            time.sleep_ms(20)
    return err
def remount(readonly=False):
    vfs.umount("/fl")
    vfs.mount(vfs.VfsLfs2(dev, progsize=P), "/fl", readonly=readonly)
def pubrec_refused(port):
    global dev, sub
    sub = MQTTClient("se-sub-" + TOPIC[10:], "127.0.0.1", port)
    sub.set_callback(lambda t, m, r, q: got.append(bytes(m[-1:])))
    sub.connect()
    sub.subscribe(TOPIC, 2)
    dev = fresh()
    c, ev = fboot(port)
    c.connect()
    c.publish(TOPIC, BIG + b"X", qos=2)      # its OUT_PUB on flash; the PUBREC on its way
    k = fill(0, (4096, 1024, 256), True)     # then the blocks are full (a name still fits)
    x = pump(c, 300)                         # the PUBREC: OUT_REL refused, checkpoint refused
    print("PUBREC read:", repr(x), "connected", c.is_connected())
    assert isinstance(x, StoreFull) and not c.is_connected(), x
    return c, ev, k
"""



@pytest.mark.parametrize("then", ["cut", "room"])
def test_a_qos2_message_whose_pubrel_flash_refused_is_never_published_again_after_it(broker, then):
    """MQTT-4.3.3 (3.1.1: 4.3.3-2): once the PUBREL is sent, the PUBLISH is
    never sent again. A PUBREC came while the filesystem under a FileLog
    was full: its OUT_REL append was refused, and so was the checkpoint
    that replaces a refused append; the link closed with StoreFull, the
    message past PUBREC in RAM, its OUT_PUB alone on flash. The reconnect's
    checkpoint was refused too, reported as `store_full`, and the
    connection went on: the PUBREL went out, the broker delivered the
    message and completed it. After a power cut the boot found the OUT_PUB
    and sent the PUBLISH again (DUP=1) with an id the broker had released:
    a new message, delivered a second time. Now a connect whose checkpoint
    is refused while a QoS 2 record the store refused is not on flash
    raises StoreFull and sends nothing: the PUBREL waits until it can be
    recorded, and a reboot meanwhile resends the PUBLISH before any PUBREL,
    which the broker answers with PUBREC, delivering nothing again ("cut");
    once the store takes the checkpoint, the next connect resumes with the
    PUBREL ("room") and no boot after it holds the message. (The
    filesystem full, then read-only: LittleFS, short of blocks, still took
    the reconnect's small checkpoint into its metadata.)"""
    r = run_mp(LFS + PUBREC_REFUSED + r"""
PORT, THEN = %d, %r
c, ev, k = pubrec_refused(PORT)
# The filesystem now goes read-only (the refused append closed the log:
# no file is open), so that no checkpoint gets through: the state past
# PUBREC, without its message's bytes, now fits in LittleFS's metadata.
remount(True)
refused = False
try:
    c.connect()                              # Session Present 1; its checkpoint refused too
    print("reconnected", ev)
except StoreFull as x:
    print("reconnect refused:", repr(x))
    refused = True
pump(c, 500)                                 # (before: PUBREL, PUBCOMP, the message delivered)
print("delivered", got)
remount()
unfill(k)
if THEN == "room":                           # writable again, no reboot: the PUBREL goes now
    c.connect()
    pump(c, 1000)
    print("room: pending", c.pending(), "delivered", got)
    assert c.pending() == 0 and got == [b"X"], (c.pending(), got)
    remount()
# A power cut: the next boot (with room) holds what flash holds.
c, ev = fboot(PORT)
print("boot", ev, "holds", [c.engine.slot(i) for i in range(c.engine.count)])
c.connect()
pump(c, 1000)
print("pending", c.pending(), "delivered", got)
assert c.pending() == 0, c.pending()
assert got == [b"X"], got
assert refused                               # the connect said why it sent nothing
print("OK")
""" % (broker.port, then))
    print(r.stdout)
    assert "OK" in r.stdout, r.stdout


# The end of the full-at-boot tests: with room again, on the same
# connection, a QoS 1 publish (MSG + b"A01") reaches the broker (w's `got`)
# and, after a power cut, the reboot BOOT() restores it; it is resent and
# acknowledged, and A02 follows. Needs c, w, got, T, MSG, BOOT and mk().
ROOM_AGAIN = r"""
try:                                         # room again, the same connection, no call in between
    c.publish(T, MSG + b"A01", qos=1)
except StoreFull as x:
    print("refused with room:", repr(x))
    raise
for _ in range(50):
    if got:
        break
    w.wait_msg(100)
print("broker", got)
assert got == [b"A01"], got
c.close()                                    # (a power cut: its PUBACK never read)
vfs.umount("/fl")
vfs.mount(mk(), "/fl")
c, ev = BOOT()
print("reboot", ev, tails(c, 3))
assert ev == [] and tails(c, 3) == [b"A01"], (ev, tails(c, 3))
c.connect()                                  # resent, acknowledged
for _ in range(50):
    if not c.pending():
        break
    c.wait_msg(100)
assert c.pending() == 0
c.publish(T, MSG + b"A02", qos=1)
for _ in range(50):
    if len(got) == 3 and not c.pending():
        break
    c.wait_msg(100)
    w.wait_msg(10)
print("broker", got)
assert got == [b"A01", b"A01", b"A02"] and c.pending() == 0, got
c.disconnect()
w.disconnect()
print("OK")
"""

@pytest.mark.parametrize("fs", ["fat", "littlefs"])
def test_a_filelog_full_at_boot_takes_qos1_once_there_is_room(broker, fs):
    """FileLog measured its capacity (what one checkpoint may hold) once,
    in its constructor: on a card or flash full at that moment it was 0,
    and every QoS 1/2 publish() raised StoreFull ("flash store full") until
    a reboot, whatever room came back, connected or not (the connect's
    checkpoint was refused before it wrote, against the same 0). Measured
    again, the message was appended to a log holding no state (its first
    checkpoint refused): no header before it, so the next boot set the log
    aside (discarded) and the message was lost. Now a refusal measures the
    filesystem again and a log holding no state takes a checkpoint first:
    once there is room, publish() is accepted on the same connection,
    reaches the broker, and is on flash at the next boot, which resends it."""
    r = run_mp(LFS + FAT_SECTORS + (r"""
from durable_mqtt.filelog import FileLog
PORT = %d
FS = %r
T = "fullboot/" + FS
if FS == "fat":
    dev = Sectors(128)
    vfs.VfsFat.mkfs(dev)
    mk = lambda: vfs.VfsFat(dev)
else:
    dev = NorFlash(4096, 32, prog_size=P)
    vfs.VfsLfs2.mkfs(dev, progsize=P)
    mk = lambda: vfs.VfsLfs2(dev, progsize=P)
vfs.mount(mk(), "/fl")
def fboot():
    ev = []
    c = MQTTClient("fullboot-" + FS, "127.0.0.1", PORT, clean_session=False, session_file=FileLog("/fl/log"),
                   event_callback=lambda e, i: ev.append(e))
    return c, ev
def refused(c):
    try:
        c.publish(T, b"full", qos=1)
    except StoreFull:
        return True
got = []
w = MQTTClient("fullboot-w-" + FS, "127.0.0.1", PORT)
w.set_callback(lambda t, m, r, q: got.append(bytes(m)))
w.connect()
w.subscribe(T, 1)
k = fill()
c, ev = fboot()                              # full at boot
print("boot", ev, "capacity", c.journal.b.capacity)
assert refused(c) and c.pending() == 0
c.connect()                                  # (its checkpoint refused: connected all the same)
assert refused(c) and c.pending() == 0
unfill(k)
MSG, BOOT = b"", fboot
""" + ROOM_AGAIN) % (broker.port, fs))
    print(r.stdout)
    assert "OK" in r.stdout, r.stdout


@pytest.mark.parametrize("store", ["FileLog", "directory"])
def test_a_littlefs_full_down_to_its_metadata_is_reported_as_store_full(broker, store):
    """LittleFS refuses a new file as ENAMETOOLONG (36), not ENOSPC, when
    the directory's metadata block has no room for its name and no free
    block is left to grow into: lfs2_file_open() turns the create commit's
    LFS_ERR_NOSPC into LFS_ERR_NAMETOOLONG (littlefs 3b62ec1, PR #638:
    meant for a name no metadata block can take; the library's names are a
    few bytes, under name_max 255), and MicroPython's VfsLfs2 raises -err.
    A checkpoint makes a new file (FileLog: path.tmp; a directory: h.tmp),
    so the 36 passed out of a first boot (MQTTClient() raised) and out of
    connect() as a plain OSError instead of the `store_full` event that a
    full filesystem (ENOSPC) gives, and a directory's publish() whose new
    slot file found no room raised it instead of StoreFull: now a boot and
    a connect give `store_full`, a publish() StoreFull."""
    r = run_mp(LFS + r"""
import time
from durable_mqtt.filelog import FileLog
PORT, STORE = %d, %r
TOPIC = "se/meta/%%08d" %% (time.ticks_ms() %% 100000000)    # (a fixed length)
def sboot():
    ev = []
    c = MQTTClient("se-meta-" + TOPIC[8:], "127.0.0.1", PORT, clean_session=False,
                   session_file=FileLog("/fl/log") if STORE == "FileLog" else "/fl/s",
                   event_callback=lambda e, i: ev.append((e, i)))
    return c, ev
def attempt(what, f):
    try:
        f()
        print(what, "ok")
    except OSError as x:
        print(what, "raised", repr(x))
# A first boot on a full filesystem: its checkpoint refused.
dev = fresh()
k = fill()
attempt("first boot", sboot)
unfill(k)
vfs.umount("/fl")
# A connect on one that filled since the boot.
dev = fresh()
c, ev = sboot()
k = fill()
if STORE == "directory":
    # (The directory has a metadata block of its own: small messages, kept
    # inline in it, fill that too, then empty ones what room they left: a
    # new file of the checkpoint's (i0, h.tmp) finds it full too.)
    for body in (bytes(64), b""):
        try:
            while True:
                c.publish(TOPIC, body, qos=1)
        except OSError as x:
            print("publish refused:", repr(x))
attempt("connect", c.connect)
print("events", ev, "connected", c.is_connected())
assert c.is_connected() and ("store_full", {"reason": "filesystem full"}) in ev, ev
c.close()
print("OK")
""" % (broker.port, store), check=False)
    print(r.stdout)
    assert "first boot ok" in r.stdout, r.stdout
    if store == "directory":
        assert "publish refused: StoreFull(-7, 'filesystem full')" in r.stdout, r.stdout
    assert "connect ok" in r.stdout, r.stdout
    assert "OK" in r.stdout, r.stdout


@pytest.mark.parametrize("saved_by", ["disconnect", "compaction"])
def test_a_refused_qos2_record_a_later_checkpoint_saved_does_not_fail_the_connect(broker, saved_by):
    """A QoS 2 record the store refused (here an OUT_REL at a PUBREC, on
    a full filesystem) makes a connect whose checkpoint is refused raise
    StoreFull, as long as the record is not on flash. It was counted as
    missing until a connect's checkpoint succeeded: after a successful
    checkpoint elsewhere had written it (disconnect() offline, or the
    FileLog's own compaction at the next publish()), a connect whose
    checkpoint was refused (the filesystem full again, here read-only)
    still raised StoreFull and sent nothing, while flash held the OUT_REL.
    Now any checkpoint of the whole state clears it: the connect goes
    through (`store_full` reported), the PUBREL goes out and the message
    is delivered once, also across a power cut after it."""
    r = run_mp(LFS + PUBREC_REFUSED + r"""
PORT, SAVED_BY = %d, %r
c, ev, k = pubrec_refused(PORT)
unfill(k)                                    # room again
if SAVED_BY == "disconnect":
    c.disconnect()                           # (offline: its checkpoint only)
else:
    c.journal.b.compact_bytes = 0            # the next append asks for a checkpoint
    c.publish(TOPIC, b"q", qos=1)            # its put() checkpoints instead
print("saved", c.journal.checkpoints, "checkpoint(s)")
remount(True)                                # no checkpoint gets through now
try:
    c.connect()
    print("reconnected", ev)
except StoreFull as x:
    print("reconnect refused:", repr(x))
pump(c, 500)
print("delivered", got, "connected", c.is_connected())
remount()
# A power cut: the next boot holds what flash holds.
c, ev = fboot(PORT)
c.connect()
pump(c, 1000)
print("pending", c.pending(), "delivered", got)
assert c.pending() == 0, c.pending()
assert got.count(b"X") == 1, got
print("OK")
""" % (broker.port, saved_by))
    print(r.stdout)
    assert "reconnected" in r.stdout, r.stdout
    assert "OK" in r.stdout, r.stdout


@pytest.mark.parametrize("fs,store", [("fat", "directory"), ("fat", "FileLog"),
                                      ("littlefs", "directory"), ("littlefs", "FileLog")])
def test_a_connect_whose_checkpoint_meets_a_write_error_closes_the_link(broker, fs, store):
    """A write error from the device (EIO: a failing SD card, a flash
    program that fails) is no full filesystem: the store passes the
    OSError on, and the connect's checkpoint after CONNACK raised it out of
    connect(), but only a StoreFull closed the link there: connect() had
    raised and is_connected() was True, the resends owed never sent on that
    connection. Now the link is closed before the error passes: connect()
    fails as a whole, the session stays as it was, and the next connect on
    a working device resends the message, delivered once. Here the
    device's writeblocks raises OSError(5) (as esp32.Partition does on a
    failed write) under a real FAT or LittleFS."""
    r = run_mp(LFS + FAT_SECTORS + r"""
import time
from durable_mqtt.filelog import FileLog
PORT, FS, STORE = %d, %r, %r
T = "se/eio/%%s/%%s/%%d" %% (FS, STORE, time.ticks_ms())
if FS == "fat":
    dev = fat(256, "/fl")
    def fault(on):
        dev.fail = OSError(5)
        dev.left = 0 if on else -1
else:
    dev = faulty()
    def fault(on):
        dev.bad = on
got = []
w = MQTTClient("se-eio-w-" + T[7:], "127.0.0.1", PORT)
w.set_callback(lambda t, m, r, q: got.append(bytes(m)))
w.connect()
w.subscribe(T, 1)
ev = []
c = MQTTClient("se-eio-" + T[7:], "127.0.0.1", PORT, clean_session=False,
               session_file=FileLog("/fl/log") if STORE == "FileLog" else "/fl/s",
               event_callback=lambda e, i: ev.append(e))
c.connect()
c.disconnect()                               # the broker holds the session
c.publish(T, b"A01", qos=1)                  # offline: accepted, on flash
fault(True)                                  # every write from now on fails
raised = None
try:
    c.connect()                              # Session Present 1; its checkpoint fails
    print("connect ok", ev)
except OSError as x:
    raised = x
    print("connect raised", repr(x))
print("connected", c.is_connected(), "pending", c.pending())
assert type(raised) is OSError and raised.args[0] == 5, raised
assert not c.is_connected()
fault(False)                                 # the device works again
c.connect()
for _ in range(50):
    if got and not c.pending():
        break
    c.wait_msg(100)
    w.check_msg()
for _ in range(5):
    w.wait_msg(50)
print("delivered", got, "pending", c.pending(), ev)
assert got == [b"A01"] and c.pending() == 0, (got, c.pending())
c.disconnect()
w.disconnect()
print("OK")
""" % (broker.port, fs, store))
    print(r.stdout)
    assert "OK" in r.stdout, r.stdout


@pytest.mark.parametrize("call,store", [("subscribe", "directory"), ("subscribe", "FileLog"),
                                        ("unsubscribe", "directory")])
def test_a_subscribe_whose_checkpoint_meets_a_write_error_closes_the_link(broker, call, store):
    """The checkpoint after a SUBACK (UNSUBACK) that meets a write error
    (EIO) raised it out of subscribe() with the link left up: a call that
    raised as a failed link does (an OSError), on a link still up, which
    RobustClient.subscribe() took for the broker's refusal; and nothing
    said the session on flash was behind the one in RAM. Now it fails as
    a connect whose checkpoint meets one does (docs/api.md): the link
    closed before the error passes. The subscription the broker granted is
    kept in the session in RAM, reaches flash with the next connect's
    checkpoint (a boot from flash then holds it), and the broker holds it
    (Session Present): a message on it arrives after the next connect.
    Here the device's writeblocks raises OSError(5) under a real LittleFS."""
    r = run_mp(LFS + r"""
import time
from durable_mqtt.filelog import FileLog
PORT, CALL, STORE = %d, %r, %r
T = "se/subeio/%%s/%%s/%%d" %% (CALL, STORE, time.ticks_ms())
CID = "se-subeio-" + T[10:]
dev = faulty()
def client():
    got = []
    c = MQTTClient(CID, "127.0.0.1", PORT, clean_session=False,
                   session_file=FileLog("/fl/log") if STORE == "FileLog" else "/fl/s")
    c.set_callback(lambda t, m, r, q: got.append(bytes(m)))
    return c, got
c, got = client()
c.connect()
if CALL == "unsubscribe":
    c.subscribe(T, 1)
dev.bad = True                               # every write from now on fails
raised = None
try:
    print(CALL, "returned", getattr(c, CALL)(T, 1) if CALL == "subscribe" else c.unsubscribe(T))
except OSError as x:
    raised = x
    print(CALL, "raised", repr(x))
print("connected", c.is_connected(), "subs", len(c.engine.subs))
assert type(raised) is OSError and raised.args[0] == 5, raised
assert not c.is_connected()
assert len(c.engine.subs) == (CALL == "subscribe")      # the broker's answer, in RAM
dev.bad = False                              # the device works again
print("session present", c.connect())        # its checkpoint writes the session
w = MQTTClient(CID + "w", "127.0.0.1", PORT)
w.connect()
w.publish(T, b"M01", qos=1)
w.disconnect()
for _ in range(10):
    c.wait_msg(100)
print("delivered", got)
assert got == ([b"M01"] if CALL == "subscribe" else []), got
c.close()
c, got = client()                            # a boot: the session as flash holds it
print("subs after a boot", [bytes(s[0]) for s in c.engine.subs])
assert [bytes(s[0]) for s in c.engine.subs] == ([T.encode()] if CALL == "subscribe" else [])
c.close()
print("OK")
""" % (broker.port, call, store))
    print(r.stdout)
    assert "OK" in r.stdout, r.stdout


@pytest.mark.parametrize("between", ["lost", "clean", "fresh"])
def test_a_refused_qos2_record_of_a_session_gone_does_not_fail_the_connect(broker, between):
    """A QoS 2 record the store refused (an OUT_REL at a PUBREC, on a full
    filesystem) makes a connect whose checkpoint is refused raise StoreFull
    while it is not on flash: the resumed session would send the PUBREL
    that depends on it. Once the session it belongs to is gone (the broker
    answered Session Present 0: the engine drops the message past PUBREC;
    or a clean connect came in between), nothing depends on it, but the
    mark stayed: every connect whose checkpoint was refused (here the
    filesystem read-only) still raised StoreFull and sent nothing, until a
    checkpoint got through. connect_fresh() the same ("fresh": 3.1.1, its
    clean leg ended the session, and its persistent leg was refused over
    the mark). Now the mark goes with the session: the connect goes
    through, `store_full` reported."""
    r = run_mp(LFS + PUBREC_REFUSED + r"""
PORT, BETWEEN = %d, %r
c, ev, k = pubrec_refused(PORT)
remount(True)                                # no checkpoint gets through now
if BETWEEN == "lost":
    # The broker loses the session: a clean connect of the same client id.
    o = MQTTClient("se-pub-" + TOPIC[10:], "127.0.0.1", PORT)
    o.connect()
    o.disconnect()
elif BETWEEN == "clean":
    c.connect(clean_session=True)            # (no checkpoint: a clean session is not written)
    print("clean connect", c.is_connected())
del ev[:]
try:
    sp = c.connect_fresh() if BETWEEN == "fresh" else c.connect(clean_session=False)
    print("connected: session present", sp, "events", ev)
except StoreFull as x:
    print("connect refused:", repr(x), "events", ev)
assert c.is_connected() and "store_full" in ev, ev
assert ("lost" if BETWEEN == "lost" else "new") in ev, ev
assert not c.clean_session or BETWEEN != "fresh"     # (the next connect() resumes it)
c.close()
remount()
print("OK")
""" % (broker.port, between))
    print(r.stdout)
    assert "OK" in r.stdout, r.stdout


# A client with a session store on LittleFS, subscribed to TOPIC, whose
# broker session another connection of its client id then ended (Session
# Present 0 at its next connect: its subscriptions are made again).
# refuse(WHAT) then makes every checkpoint fail: the filesystem mounted
# read-only, or full (a FileLog: the session directory's small files would
# still fit in LittleFS's metadata). heard(c, msg) reads for up to a second
# whether msg, which a second client publishes on TOPIC, arrives: the
# subscription's proof. lose(c): c subscribes to TOPIC and leaves, its
# broker session is ended, and the store refuses from then on.
# When `arm` holds a client, the event callback, at a store_full while that
# client is connected (after a CONNACK), closes its socket (the lost
# session's resubscribe then fails on the link) and raises.
RESUB_ON_A_FULL_STORE = r"""
import time
from durable_mqtt.filelog import FileLog
TOPIC = "se/resubfull/%d" % time.ticks_ms()
CID = "se-rsf-" + TOPIC[13:]
ev = []
got = []
arm = []
def on_event(name, info):
    ev.append((name, info))
    if name == "store_full" and arm and arm[0].is_connected():
        arm.pop().socket().close()
        raise ValueError("event store_full")
def store():
    return "/fl/s" if WHAT == "read-only" else FileLog("/fl/log")
def client(cls=MQTTClient, **kw):
    c = cls(CID, "127.0.0.1", PORT, clean_session=False, session_file=store(), event_callback=on_event, **kw)
    c.set_callback(lambda t, m, r, q: got.append(bytes(m)))
    return c
def end_broker_session():
    t = MQTTClient(CID, "127.0.0.1", PORT, clean_session=True)
    t.connect()
    t.disconnect()
def refuse():
    global k
    if WHAT == "read-only":
        vfs.umount("/fl")
        vfs.mount(vfs.VfsLfs2(dev, progsize=P), "/fl", readonly=True)
    else:
        k = fill()
def room():
    if WHAT == "read-only":
        vfs.umount("/fl")
        vfs.mount(vfs.VfsLfs2(dev, progsize=P), "/fl")
    else:
        unfill(k)
def heard(c, msg, topic=TOPIC):
    if not c.is_connected():
        return False
    p = MQTTClient(CID + "-p", "127.0.0.1", PORT)
    p.connect()
    p.publish(topic, msg, qos=1)
    p.disconnect()
    for _ in range(50):
        if msg in got:
            return True
        c.wait_msg(20)
    return False
def names():
    return [e for e, _ in ev]
def lose(c):
    c.connect()
    c.subscribe(TOPIC, 1)
    c.disconnect()
    end_broker_session()
    refuse()
    del ev[:]
dev = fresh()
"""


def test_a_connect_whose_resubscribe_fails_raises_the_event_callbacks_exception_from_store_full(broker):
    """MQTTClient.connect() of a lost session on a read-only filesystem:
    the checkpoint after CONNACK is refused, reported as the event
    store_full, on which the event callback raised (kept by event() for
    report() once the connect is whole); then the resubscribe failed on the
    link. connect() raised that failure and skipped report(): the
    callback's exception stayed kept, and the next connect, which
    succeeded (the filesystem writable again), raised it as its own. Now
    the connect that failed raises it (in place of its failure, as
    RobustClient.connect() does), and the next one resumes the session and
    raises nothing."""
    r = run_mp(LFS + r"""
PORT, WHAT = %d, "read-only"
""" % broker.port + RESUB_ON_A_FULL_STORE + r"""
lose(client())
c = client()                      # (the session as the read-only store holds it)
arm.append(c)
print("FIRST", call(c.connect), names())
room()                            # room again: the next connect's checkpoints get through
print("SECOND", call(c.connect), c.is_connected(), len(c.engine.subs), c.engine.resub_owed)
c.close()
""")
    print(r.stdout)
    # ("lost": the CONNACK found the session lost, reported although the
    # connect failed after it.)
    assert "FIRST ValueError('event store_full',) ['store_full', 'store_full', 'lost']" in r.stdout, r.stdout
    # (Session Present: the broker kept the session the first one opened;
    # the subscription made again, nothing owed.)
    assert "SECOND True True 1 False" in r.stdout, r.stdout


def test_an_async_reconnect_whose_resubscribe_fails_reports_the_event_callbacks_exception_at_once(broker):
    """The same in AsyncClient's background task: the attempt whose
    resubscribe failed after the event callback raised on store_full was
    a failed attempt (link_down) that left the exception kept; the next
    attempt, which succeeded, reported it (callback_error) as its own.
    Now the attempt that failed reports it, before the next one's CONNACK
    ("resumed")."""
    r = run_mp(LFS + r"""
PORT, WHAT = %d, "read-only"
""" % broker.port + RESUB_ON_A_FULL_STORE + r"""
import asyncio
from durable_mqtt.aio import AsyncClient
lose(client())
def on_event(name, info, f=on_event):
    try:
        f(name, info)
    except ValueError:
        room()                    # (the socket closed) room again for the next attempt
        raise
async def main():
    a = AsyncClient(CID, "127.0.0.1", PORT, timeout_ms=2000, backoff_ms=(50, 100), session_file=store(),
                    event_callback=on_event)
    arm.append(a.client)
    await a.connect(timeout_ms=5000)
    await asyncio.sleep_ms(100)
    print("SEEN", names(), a.callback_errors, len(a.client.engine.subs))
    await a.disconnect()
asyncio.run(main())
""")
    print(r.stdout)
    assert "SEEN ['store_full', 'store_full', 'lost', 'callback_error', 'resumed'] 1 1" in r.stdout, r.stdout


def test_an_async_attempt_failing_on_a_drivers_non_oserror_reports_the_event_callbacks_exception_at_once(broker):
    """AsyncClient's background task: an attempt that failed with an
    exception that is no OSError, the link down (here the session's block
    device driver raised RuntimeError under LittleFS at the checkpoint
    after CONNACK, which closed the link), was counted a failed attempt
    (link_down) but left kept what the event callback had raised in it
    (on store_full, the pre-CONNECT checkpoint refused by a read-only
    filesystem): the next attempt, which succeeded, reported it
    (callback_error) as its own, after its CONNACK's event. Now the
    attempt that failed reports it, as a failed attempt's OSError does."""
    r = run_mp(LFS + r"""
import asyncio, time
from durable_mqtt.aio import AsyncClient
PORT = %d
TOPIC = "se/aiox/%%d" %% time.ticks_ms()
CID = "se-aiox-" + TOPIC[8:]
class Faulty(NorFlash):
    bad = None
    def writeblocks(self, n, buf, off=None):
        x = self.bad
        if x is not None:
            self.bad = None
            raise x
        return super().writeblocks(n, buf, off)
dev = Faulty(4096, 64, prog_size=P)
vfs.VfsLfs2.mkfs(dev, progsize=P)
def remount(readonly=False):
    try:
        vfs.umount("/fl")
    except OSError:
        pass
    vfs.mount(vfs.VfsLfs2(dev, progsize=P), "/fl", readonly=readonly)
remount()
c = MQTTClient(CID, "127.0.0.1", PORT, clean_session=False, session_file="/fl/s")
c.connect()
c.subscribe(TOPIC, 1)
c.disconnect()
t = MQTTClient(CID, "127.0.0.1", PORT, clean_session=True)
t.connect()
t.disconnect()
remount(True)
ev = []
arm = [1]
errs = []
def on_event(name, info):
    ev.append(name)
    if name in ("lost", "resumed"):
        errs.append(repr(a.client.last_error))   # the attempt before's failure
    if name == "store_full" and arm:
        del arm[0]
        remount()
        dev.bad = RuntimeError("bus fault")   # the next write: a driver's non-OSError
        raise ValueError("event store_full")
a = None
async def main():
    global a
    a = AsyncClient(CID, "127.0.0.1", PORT, timeout_ms=2000, backoff_ms=(50, 100), session_file="/fl/s",
                    event_callback=on_event)
    await a.connect(timeout_ms=5000)
    await asyncio.sleep_ms(100)
    print("SEEN", ev, a.callback_errors, a.client.connect_failures, errs)
    await a.disconnect()
asyncio.run(main())
""" % broker.port)
    print(r.stdout)
    seen = [l for l in r.stdout.splitlines() if l.startswith("SEEN")]
    # The failed attempt found the session lost and says so before it
    # fails ("lost", last_error None then); the next resumes it, the bus
    # fault its attempt before's failure.
    assert seen and "1 1 ['None', \"RuntimeError('bus fault',)\"]" in seen[0], r.stdout
    names = seen[0].split("[", 1)[1].split("]", 1)[0]
    # callback_error before the next attempt's CONNACK event, counted once
    assert names == "'store_full', 'lost', 'callback_error', 'resumed'", r.stdout


@pytest.mark.parametrize("call", ["connect", "connect_fresh"])
def test_a_connect_refused_for_a_qos2_record_raises_the_event_callbacks_exception_from_store_full(broker, call):
    """The other failure after store_full: a connect whose checkpoint is
    refused while a refused QoS 2 record is not on flash raises StoreFull
    (nothing sent), after reporting store_full. What the event callback
    raised there stayed kept, and the next connect that succeeded (room
    again) raised it as its own. Now the call that failed raises it, in
    place of StoreFull. (connect_fresh() does not fail: its clean leg
    ended the session the record belonged to, and the mark with it; the
    callback's exception comes out of it all the same, the link up.)"""
    r = run_mp(LFS + PUBREC_REFUSED + r"""
PORT, CALL = %d, %r
c, ev, k = pubrec_refused(PORT)
raised = []
def on_event(name, info):
    if name == "store_full" and not raised:
        raised.append(name)
        raise ValueError("event store_full")
c.set_event_callback(on_event)
remount(True)                                # no checkpoint gets through (as above)
print("FIRST", call(getattr(c, CALL)), c.is_connected())
remount()
unfill(k)                                    # room again
print("SECOND", call(c.connect), c.is_connected())
c.close()
""" % (broker.port, call))
    print(r.stdout)
    # connect() fails and closes the link; connect_fresh()'s clean leg
    # ends the session the refused record belonged to (and its mark): its
    # persistent leg is connected, store_full reported, and raises what
    # the callback raised all the same.
    assert "FIRST ValueError('event store_full',) %s" % (call == "connect_fresh") in r.stdout, r.stdout
    assert "SECOND True True" in r.stdout, r.stdout


@pytest.mark.parametrize("fs", ["full", "read-only"])
def test_a_publish_the_filesystem_refuses_takes_no_packet_id_and_changes_no_stats(fs):
    """A QoS 1/2 publish() whose record the filesystem refused (StoreFull,
    raised by the journal's write after the engine had accepted the
    message and taken it back) is not accepted, as one with bad arguments:
    nothing may change. Its packet id stayed used up (each refusal moved
    the next message's id on by one: 3 refusals, then id 5, not 2), and
    the session directory counted a slot file for the write that failed
    (stats()["flash_slots"] 1 -> 2)."""
    r = run_mp(LFS + r"""
FS = %r
dev = fresh()
c, ev = boot()
assert c.publish("t", b"A01", qos=1) == 1
if FS == "full":
    k = fill()
else:
    vfs.umount("/fl")
    vfs.mount(vfs.VfsLfs2(dev, progsize=P), "/fl", readonly=True)
s0 = c.stats()
for qos in (1, 2, 1):
    try:
        c.publish("t", BIG + b"B%%d" %% qos, qos=qos)
        raise AssertionError("accepted")
    except StoreFull:
        pass
changed = [(n, s0[n], v) for n, v in c.stats().items() if v != s0[n]]
print("stats changed by the refusals:", changed)
if FS == "full":
    unfill(k)
else:
    vfs.umount("/fl")
    vfs.mount(vfs.VfsLfs2(dev, progsize=P), "/fl")
ids = [c.publish("t", b"C02", qos=2), c.publish("t", b"C03", qos=1)]
print("ids after room came back:", ids)
assert ids == [2, 3], ids
assert changed == [], changed
c.close()
c, ev = boot()
assert ev == [] and tails(c, 3) == [b"A01", b"C02", b"C03"], (ev, tails(c, 3))
print("OK")
""" % fs)
    print(r.stdout)
    assert "OK" in r.stdout, r.stdout


@pytest.mark.parametrize("what", ["read-only", "full"])
def test_a_lost_sessions_resubscribe_on_a_refusing_store_still_connects(broker, what):
    """A connect that finds its session lost (Session Present 0) makes its
    subscriptions again; each SUBACK was followed by a checkpoint
    (request.py), and on a full or read-only filesystem that raised
    StoreFull out of connect(), the link up, the rest of the subscriptions
    never made and the `lost` event never given: every connect failed so
    while the store refused, although the connect's own checkpoint
    refused is only reported (`store_full`: acknowledgements make room).
    Now the resubscribe's refused checkpoint is reported the same way:
    the connect goes through with every subscription made, and the
    broker's messages on them arrive."""
    r = run_mp(LFS + r"""
PORT, WHAT = %d, %r
""" % (broker.port, what) + RESUB_ON_A_FULL_STORE + r"""
c = client()
c.connect()
c.subscribe(TOPIC, 1)
c.subscribe(TOPIC + "/2", 1)
c.disconnect()
end_broker_session()
refuse()
del ev[:]
print("CONNECT", call(c.connect), c.is_connected(), "store_full" in names(), [i for e, i in ev if e == "lost"])
print("HEARD", heard(c, b"one"), heard(c, b"two", TOPIC + "/2"))
room()
c.close()
c = client()                                 # (a reboot: what flash holds)
print("REBOOT", len(c.engine.subs), call(c.connect), c.is_connected(), heard(c, b"three"))
c.close()
""")
    print(r.stdout)
    assert "CONNECT False True True [{'requeued': 0, 'dropped_released': 0, 'resubscribed': 2}]" in r.stdout, r.stdout
    assert "HEARD True True" in r.stdout, r.stdout
    # (the subscriptions were on flash from before; the broker kept the session)
    assert "REBOOT 2 True True True" in r.stdout, r.stdout


@pytest.mark.parametrize("what", ["read-only", "full"])
def test_a_robust_client_reconnects_to_a_lost_session_on_a_refusing_store(broker, what):
    """RobustClient (and AsyncClient, whose task runs the same steps) makes
    its subscriptions at every connect that starts a new session: their
    checkpoint refused on a full or read-only filesystem raised StoreFull
    out of each reconnect attempt, taken as a failed attempt (the link
    closed, backoff, the next broker): it never connected again while the
    store refused. Now the attempt succeeds, `store_full` reported."""
    r = run_mp(LFS + r"""
PORT, WHAT = %d, %r
""" % (broker.port, what) + RESUB_ON_A_FULL_STORE + r"""
from durable_mqtt.robust import RobustClient
c = client(RobustClient, backoff_ms=(20, 40))
lose(c)
t0 = time.ticks_ms()
while not c.poll(20) and time.ticks_diff(time.ticks_ms(), t0) < 1500:
    pass
print("POLL", c.is_connected(), "store_full" in names(), "lost" in names(), repr(c.last_error))
print("HEARD", heard(c, b"one"))
room()
c.close()
""")
    print(r.stdout)
    assert "POLL True True True None" in r.stdout, r.stdout
    assert "HEARD True" in r.stdout, r.stdout


@pytest.mark.parametrize("what", ["read-only", "full"])
def test_a_subscription_whose_checkpoint_a_refusing_store_refuses_is_made_and_kept(broker, what):
    """subscribe() on a full or read-only filesystem: the broker granted
    the subscription, the session took it (RAM), then the checkpoint after
    the SUBACK was refused and subscribe() raised StoreFull, as if it had
    not been made (RobustClient's raised it too; AsyncClient's, a
    reconnect's subscriptions made while down, failed the attempt). Now
    it returns the granted QoS, `store_full` reported, as a connect's
    refused checkpoint is: the subscription is kept in RAM, made again
    after the broker loses the session, and on flash once a checkpoint
    gets through."""
    r = run_mp(LFS + r"""
PORT, WHAT = %d, %r
""" % (broker.port, what) + RESUB_ON_A_FULL_STORE + r"""
c = client()
c.connect()
refuse()
del ev[:]
print("SUBSCRIBE", call(c.subscribe, TOPIC, 1), c.is_connected(), names(), len(c.engine.subs))
print("HEARD", heard(c, b"one"))
c.close()
end_broker_session()
del ev[:]
print("CONNECT", call(c.connect), [i for e, i in ev if e == "lost"], heard(c, b"two"))
room()
c.disconnect()                               # (its checkpoint gets through)
c = client()                                 # (a reboot)
print("REBOOT", len(c.engine.subs))
c.close()
""")
    print(r.stdout)
    assert "SUBSCRIBE 1 True ['store_full'] 1" in r.stdout, r.stdout
    assert "HEARD True" in r.stdout, r.stdout
    assert "CONNECT False [{'requeued': 0, 'dropped_released': 0, 'resubscribed': 1}] True" in r.stdout, r.stdout
    assert "REBOOT 1" in r.stdout, r.stdout


@pytest.mark.parametrize("what", ["read-only", "full"])
def test_a_disconnect_on_a_refusing_store_sends_disconnect_and_the_will_is_not_published(broker, what):
    """disconnect() writes the session state, then sends DISCONNECT. On a
    full or read-only filesystem the checkpoint raised StoreFull out of
    disconnect() before the DISCONNECT went: the link stayed open, and the
    close() that followed dropped it without one, so the broker published
    the will the application had asked it to discard (MQTT-3.1.2-10).
    Now the refused checkpoint is reported (`store_full`, as a connect's
    or a subscribe()'s is), the DISCONNECT goes and the link closes; the
    state stays in RAM and the next checkpoint that gets through writes it."""
    r = run_mp(LFS + r"""
PORT, WHAT = %d, %r
""" % (broker.port, what) + RESUB_ON_A_FULL_STORE + r"""
wills = []
w = MQTTClient(CID + "-w", "127.0.0.1", PORT)
w.set_callback(lambda t, m, r, q: wills.append(bytes(m)))
w.connect()
w.subscribe(TOPIC + "/will", 1)
c = client()
c.set_last_will(TOPIC + "/will", b"gone", qos=1)
c.connect()
c.subscribe(TOPIC, 1)
refuse()
del ev[:]
print("DISCONNECT", call(c.disconnect), c.is_connected(), names())
c.close()
for _ in range(25):
    w.check_msg()
    time.sleep_ms(20)
print("WILL", wills)
w.disconnect()
room()
del ev[:]
print("CONNECT", call(c.connect), names(), heard(c, b"one"))
c.close()
""")
    print(r.stdout)
    assert "DISCONNECT None False ['store_full']" in r.stdout, r.stdout
    assert "WILL []" in r.stdout, r.stdout
    assert "CONNECT True ['resumed'] True" in r.stdout, r.stdout
FAT_FL = FAT_SECTORS + r"""
def fat():
    # A 64 KB FAT card at /fl (512-byte clusters); returns its mount maker.
    global dev
    dev = Sectors(128)
    vfs.VfsFat.mkfs(dev)
    vfs.mount(vfs.VfsFat(dev), "/fl")
    return lambda: vfs.VfsFat(dev)
"""


def test_a_session_directory_on_a_full_fat_card_boots_and_connects_with_store_full(broker):
    """FatFs refuses a new directory on a full volume with FR_DENIED
    (f_mkdir finds no cluster for it), which VfsFat raises as EACCES (13),
    not ENOSPC; so does a new file whose directory's cluster is full and
    cannot grow. The session directory made at a first boot on a full card
    (its checkpoint must make it) passed OSError(13) out of MQTTClient(),
    at every boot while the card stayed full, and out of connect(), instead
    of the `store_full` event a full LittleFS gives: now StoreFull, so the
    boot and the connect report store_full and go on."""
    r = run_mp(LFS + FAT_FL + r"""
PORT = %d
fat()
k = fill()
ev = []
def dboot():
    return MQTTClient("se-fatfull", "127.0.0.1", PORT, clean_session=False, session_file="/fl/s",
                      event_callback=lambda e, i: ev.append((e, i)))
c = boots_full(dboot)
try:
    c.publish("t", b"x", qos=1)
except StoreFull as x:
    print("publish", repr(x))
del ev[:]
c.connect()
print("connect", ev, c.is_connected())
assert c.is_connected() and ev[0] == ("store_full", {"reason": "filesystem full"}), ev
c.close()
print("OK")
""" % broker.port)
    print(r.stdout)
    assert "OK" in r.stdout, r.stdout


def test_a_filelog_on_a_full_fat_card_whose_directory_cannot_grow_boots_with_store_full():
    """FatFs refuses a new file whose directory's cluster is full when no
    cluster is free to grow it with FR_DENIED, raised by VfsFat as EACCES
    (13). The session directory maps that to StoreFull; a FileLog did not:
    its first boot's checkpoint (the .tmp file) raised OSError(13) out of
    MQTTClient(), at every boot while the card stayed full, where a full
    LittleFS or a read-only mount boots with `store_full`. Now the same."""
    r = run_mp(LFS + FAT_FL + r"""
from durable_mqtt.filelog import FileLog
fat()
os.mkdir("/fl/d")
k = fill()
n = 0
try:
    while True:                          # the directory's cluster filled: no cluster to grow it
        open("/fl/d/e%d" % n, "wb").close()
        n += 1
except OSError as x:
    print("create in full directory", x.args[0])
ev = []
c = boots_full(lambda: MQTTClient("dev", "127.0.0.1", 1, clean_session=False, session_file=FileLog("/fl/d/log"),
                               event_callback=lambda e, i: ev.append((e, i))))
try:
    c.publish("t", b"A01", qos=1)
    raise AssertionError("accepted")
except StoreFull:
    pass
os.remove("/fl/d/e0")                    # room for a name again (and a cluster: the files are empty)
unfill(k)
c.publish("t", b"A02", qos=1)
c.close()
ev = []
c = MQTTClient("dev", "127.0.0.1", 1, clean_session=False, session_file=FileLog("/fl/d/log"),
               event_callback=lambda e, i: ev.append((e, i)))
print("reboot", ev, tails(c, 3))
assert ev == [] and tails(c, 3) == [b"A02"], (ev, tails(c, 3))
print("OK")
""")
    print(r.stdout)
    assert "create in full directory 13" in r.stdout and "OK" in r.stdout, r.stdout

def test_a_connect_refused_for_an_unsaved_pubrel_record_still_reports_the_messages_a_lost_session_dropped(broker):
    """A PUBREC's OUT_REL refused by a full store, then the broker lost the
    session: the connect drops the message past PUBREC (nothing left to
    send, "dropped_released") and tells the done callback (reason 0). Its
    checkpoint refused while the record was not on flash, the connect
    raised StoreFull before that report: the message had left the engine,
    so no later connect reported it, and the done callback never heard of
    it. Now it is told once, by the connect that dropped it."""
    r = run_mp(LFS + PUBREC_REFUSED + r"""
PORT = %d
c, ev, k = pubrec_refused(PORT)
done = []
c.set_done_callback(lambda pid, reason: done.append((pid, reason)))
x = MQTTClient("se-pub-" + TOPIC[10:], "127.0.0.1", PORT, clean_session=True)   # the broker's session goes
x.connect()
x.disconnect()
remount(True)                                # no checkpoint gets through now
try:
    c.connect()
    print("reconnected", ev)
except StoreFull as e:
    print("reconnect refused:", repr(e), ev)
print("done", done, "pending", c.pending())
remount()
unfill(k)
c.connect()
pump(c, 500)
print("then", c.last_event, "done", done, "pending", c.pending())
assert done == [(1, 0)], done
print("OK")
""" % broker.port)
    print(r.stdout)
    assert "OK" in r.stdout, r.stdout


@pytest.mark.parametrize("at_boot", ["full", "small"])
@pytest.mark.parametrize("fs", ["fat", "littlefs"])
def test_a_session_directory_short_of_room_at_boot_takes_qos1_once_there_is_room(broker, fs, at_boot):
    """The session directory's capacity (the largest state publish() lets
    in) was measured at boot, and again only at a checkpoint that found it
    0. Full at boot: every QoS 1/2 publish() raised StoreFull ("flash store
    full") until the next connect(), subscribe() or disconnect(), however
    much room came back before it. Small but not 0 at boot: a message
    larger than it was refused until a reboot, checkpoints or not. Now a
    refusal measures the filesystem again: once there is room, publish() is
    accepted on the same connection, with no call in between; a directory
    holding no session yet (its checkpoints refused) takes a checkpoint
    first, so that the message is on flash with its header, and the next
    boot restores and resends it."""
    r = run_mp(LFS + FAT_FL + (r"""
import time
PORT, FS, AT_BOOT = %d, %r, %r
T = "se/dirroom/%%s/%%s/%%d" %% (FS, AT_BOOT, time.ticks_ms())
if FS == "fat":
    mk = fat()
else:
    dev = fresh()
    mk = lambda: vfs.VfsLfs2(dev, progsize=P)
def dboot():
    ev = []
    c = MQTTClient("se-dirroom-" + FS + AT_BOOT, "127.0.0.1", PORT, clean_session=False, session_file="/fl/s",
                   buf_size=8192, event_callback=lambda e, i: ev.append(e))
    return c, ev
def refused(c, m):
    try:
        c.publish(T, m, qos=1)
    except StoreFull:
        return True
MSG = bytes(7000)                            # (two blocks of flash, 14 clusters of the card)
got = []
w = MQTTClient("se-dirroom-w-" + FS + AT_BOOT, "127.0.0.1", PORT, buf_size=8192)
w.set_callback(lambda t, m, r, q: got.append(bytes(m[-3:])))
w.connect()
w.subscribe(T, 1)
k = fill()
j = 0
if AT_BOOT == "small":                       # a little room: the first files go
    j = 1 if FS == "fat" else 9
    for n in range(j):
        os.remove("/fl/fill%%d" %% n)
c, ev = dboot()
print("boot", ev, "capacity", c.journal.capacity)
if AT_BOOT == "full":
    assert ev == ["store_full"], ev
else:
    assert ev == [] and 0 < c.journal.capacity < len(MSG), (ev, c.journal.capacity)
assert refused(c, MSG + b"A00") and c.pending() == 0
c.connect()
assert refused(c, MSG + b"A00") and c.pending() == 0
for n in range(j, k):                        # room again
    os.remove("/fl/fill%%d" %% n)
BOOT = dboot
""" + ROOM_AGAIN) % (broker.port, fs, at_boot))
    print(r.stdout)
    assert "OK" in r.stdout, r.stdout


@pytest.mark.parametrize("store", ["directory", "FileLog"])
def test_an_over_full_littlefs_gives_the_store_no_room_not_terabytes(store):
    """MicroPython's VfsLfs2.statvfs() counts the blocks in use with
    lfs2_fs_traverse() (a callback per block, a block reached twice counted
    twice) and reports block_count minus that count as free, in unsigned
    32-bit arithmetic: on a LittleFS filled up beside a directory the count
    passes block_count and the free count wraps to 2**32 - 2 (on a 32-bit
    board the small int reads -2). Both file stores took it as room: a
    capacity of about 8.8 TB, so publish() let a message through to
    writes the filesystem then refused (StoreFull "filesystem full", flash
    programmed and erased on the way). More free blocks than the filesystem
    has now count as none: the capacity stays within the filesystem, and a
    QoS 1 publish() is refused before it writes ("flash store full")."""
    r = run_mp(LFS + r"""
from durable_mqtt.filelog import FileLog
STORE = %r
dev = fresh()
if STORE == "FileLog":
    os.mkdir("/fl/x")                        # (the application's: the directory's blocks)
k = fill()
for n in range(2 if STORE == "directory" else 0):
    os.remove("/fl/fill%%d" %% n)
ev = []
c = MQTTClient("dev", "127.0.0.1", 1, clean_session=False, buf_size=8192,
               session_file="/fl/s" if STORE == "directory" else FileLog("/fl/log"),
               event_callback=lambda e, i: ev.append(e))
def cap():
    return c.journal.capacity if STORE == "directory" else c.journal.b.capacity
st = os.statvfs("/fl")
size = st[0] * st[2]
print("boot", ev, "statvfs", st, "capacity", cap(), "of", size)
assert st[3] > st[2]                         # more free blocks than the filesystem has: wrapped
assert 0 <= cap() <= size, cap()
was = (dev.programs, dev.erases)
try:
    c.publish("t", bytes(6000), qos=1)
    why = "accepted"
except StoreFull as x:
    why = x.args[1]
print("publish:", why, "programs, erases", was, (dev.programs, dev.erases), "capacity", cap())
assert why == "flash store full" and (dev.programs, dev.erases) == was and cap() <= size, why
print("OK")
""" % store)
    print(r.stdout)
    assert "OK" in r.stdout, r.stdout


def test_a_refused_qos2_record_of_a_session_its_disconnect_erased_does_not_fail_the_connect(broker):
    """MQTT 5: a QoS 2 record the store refused (an OUT_REL at a PUBREC, on
    a full filesystem) marks the session until a checkpoint gets through
    or the session ends. disconnect() after a CONNECT with Session Expiry
    0 (here a clean connect that went to a listener that never answers)
    ends it, but the mark stayed: RobustClient's next connect, whose
    checkpoint before the CONNECT (its subscriptions owed to a new session)
    was refused on the read-only filesystem, raised StoreFull and sent
    nothing, although nothing unsaved was left on flash to depend on. Now
    the session's end clears the mark: the connect goes through ("new",
    `store_full` reported). (A clean connect that finds no TCP at all sends
    no CONNECT and ends nothing: tests/test_stored_while_down.py.)"""
    r = run_mp(LFS + PUBREC_REFUSED + r"""
from durable_mqtt.robust import RobustClient
import socket
PORT = %d
SILENT = %d
silent = socket.socket()                     # takes the TCP connection, never answers the CONNECT
silent.bind(socket.getaddrinfo("127.0.0.1", SILENT)[0][-1])
silent.listen(1)
def fboot(port):
    ev = []
    c = RobustClient("se-pub-" + TOPIC[10:], "127.0.0.1", port, version=5, clean_session=False,
                     session_file=FileLog("/fl/log"), event_callback=lambda e, i: ev.append(e))
    c.subscribe(TOPIC + "/s", 1)             # (made at the connect)
    return c, ev
c, ev, k = pubrec_refused(PORT)
print("subscriptions", len(c.engine.subs))
try:
    c.run(c.connecting(True, 500, "127.0.0.1", SILENT))   # a clean start (expiry 0) that no broker answers
except OSError as x:
    print("clean connect:", repr(x))
c.disconnect()                               # the session ends here
o = MQTTClient("se-pub-" + TOPIC[10:], "127.0.0.1", PORT)   # and the broker's side
o.connect()
o.disconnect()
remount(True)                                # no checkpoint gets through now
del ev[:]
try:
    c.connect()
    print("connected", ev)
except StoreFull as x:
    print("connect refused:", repr(x), ev)
assert c.is_connected() and "new" in ev and "store_full" in ev, ev
c.close()
remount()
print("OK")
""" % (broker.port, free_port()))
    print(r.stdout)
    assert "OK" in r.stdout, r.stdout


def test_a_lost_session_whose_connect_then_fails_on_a_refused_qos2_record_reports_lost(broker):
    """The broker lost the session; the connect makes its subscriptions
    again on a read-only filesystem, and a retained QoS 2 message on the
    first arrives while the second's SUBACK is awaited: its IN_QOS2 record
    refused, the connect raised StoreFull. The CONNACK had been counted
    (`reconnects`) and the messages requeued, but the event "lost" never
    came: the next connect found the session the failed one had opened
    and said "resumed", and the application never heard that its session
    was lost. Now the failed connect reports "lost" before it raises."""
    r = run_mp(LFS + PUBREC_REFUSED + r"""
PORT = %d
CID = "se-lq2-" + TOPIC[10:]
dev = fresh()
ev = []
c = MQTTClient(CID, "127.0.0.1", PORT, clean_session=False, session_file=FileLog("/fl/log"),
               event_callback=lambda e, i: ev.append(e))
c.connect()
c.subscribe(TOPIC + "/a", 2)
c.subscribe(TOPIC + "/b", 2)
c.disconnect()
p = MQTTClient(CID + "p", "127.0.0.1", PORT)
p.connect()
p.publish(TOPIC + "/a", b"kept", retain=True, qos=2)
t0 = time.ticks_ms()
while p.pending() and time.ticks_diff(time.ticks_ms(), t0) < 2000:
    p.wait_msg(20)
p.disconnect()
o = MQTTClient(CID, "127.0.0.1", PORT)       # the broker loses the session
o.connect()
o.disconnect()
remount(True)                                # no record gets through now
del ev[:]
n = c.stats()["reconnects"]
try:
    c.connect()
    print("FIRST connected", ev)
except StoreFull as x:
    print("FIRST", repr(x), ev, "reconnects +%%d" %% (c.stats()["reconnects"] - n))
remount()
del ev[:]
c.connect()
print("SECOND", ev)
c.publish(TOPIC + "/a", b"", retain=True, qos=1)
c.close()
""" % broker.port)
    print(r.stdout)
    assert "FIRST StoreFull(-7, 'filesystem read-only') ['store_full', 'store_full', 'lost'] reconnects +1" \
        in r.stdout, r.stdout
    assert "SECOND ['resumed']" in r.stdout, r.stdout


FAULT = LFS + r"""
from faultfs import FaultFS
def faultfs(blocks=32):
    # A LittleFS at /fl on NOR flash whose operations can be refused (fs.refuse).
    dev = NorFlash(4096, blocks, prog_size=P)
    vfs.VfsLfs2.mkfs(dev, progsize=P)
    fs = FaultFS(vfs.VfsLfs2(dev, progsize=P))
    vfs.mount(fs, "/fl")
    return dev, fs
def reboot(dev):
    vfs.umount("/fl")
    dev = dev.reboot()
    vfs.mount(vfs.VfsLfs2(dev, progsize=P), "/fl")
    return dev
def reboot_faulty(dev):
    # As reboot(), the filesystem mounted again through a FaultFS.
    vfs.umount("/fl")
    dev = dev.reboot()
    fs = FaultFS(vfs.VfsLfs2(dev, progsize=P))
    vfs.mount(fs, "/fl")
    return dev, fs
def ls(p):
    try:
        return sorted(os.listdir(p))
    except OSError:
        return None
"""


def test_a_restore_session_whose_rename_is_refused_loses_nothing_accepted_after_it():
    """restore_session() writes the state whole into PATH.d.d, removes
    PATH.d and renames PATH.d.d into its place. A refused rename (a full
    filesystem) raised StoreFull and left the client writing into PATH.d
    (publish() met ENOENT, then a checkpoint made PATH.d again), while the
    next boot replaced PATH.d with PATH.d.d: what was accepted in between
    was lost. Now PATH.d.d is the session until a boot or the next
    restore_session() moves it: its journal goes on there; a boot whose
    rename is refused too uses it where it is."""
    r = run_mp(FAULT + r"""
dev, fs = faultfs()
c, ev = boot()
c.publish("t", b"A1", qos=1)
saved = c.save_session()
c.publish("t", b"B2", qos=1)
fs.refuse("rename", "/s.d.d")
c.restore_session(saved)                 # durable in PATH.d.d: not an error
print("restored", fs.refused, tails(c, 2), ls("/fl"))
assert fs.refused == 1 and tails(c, 2) == [b"A1"] and "s.d.d" in ls("/fl"), ls("/fl")
c.publish("t", b"C3", qos=1)
c.journal.checkpoint()                   # as a connect's after its CONNACK
c.publish("t", b"D4", qos=1)
c.close()
# The boot's rename is refused too: it runs where the session is.
dev, fs = reboot_faulty(dev)
fs.refuse("rename", "/s.d.d")
c, ev = boot()
print("boot, rename refused", ev, tails(c, 2), ls("/fl"))
assert tails(c, 2) == [b"A1", b"C3", b"D4"] and fs.refused == 1, (tails(c, 2), fs.refused)
c.publish("t", b"E5", qos=1)
saved = c.save_session()
try:
    c.restore_session(saved)             # PATH.d.d's move first: refused again, raised
    print("restored with the rename refused")
except StoreFull as x:
    print("restore refused", repr(x))
assert ls("/fl") == ["s", "s.d.d"] and tails(c, 2) == [b"A1", b"C3", b"D4", b"E5"], ls("/fl")
fs.refuse(None)
c.restore_session(saved)                 # moves PATH.d.d first, then as ever
assert ls("/fl") == ["s", "s.d"], ls("/fl")
c.publish("t", b"F6", qos=1)
c.close()
dev = reboot(dev)
c, ev = boot()
print("boot", ev, tails(c, 2), ls("/fl"))
assert ev == [] and tails(c, 2) == [b"A1", b"C3", b"D4", b"E5", b"F6"], (ev, tails(c, 2))
assert ls("/fl") == ["s", "s.d"], ls("/fl")
with open("/fl/s", "rb") as f:
    assert f.read() == b"DMQS\x00"
print("OK")
""")
    assert "OK" in r.stdout, r.stdout


def test_a_refused_boot_moves_a_refused_restore_into_place_at_the_next():
    """The same refused rename, then a boot whose rename gets through: the
    session is PATH.d again, with all that was accepted."""
    r = run_mp(FAULT + r"""
dev, fs = faultfs()
c, ev = boot()
c.publish("t", b"A1", qos=1)
saved = c.save_session()
fs.refuse("rename", "/s.d.d")
c.restore_session(saved)
fs.refuse(None)
c.publish("t", b"B2", qos=1)
c.close()
dev = reboot(dev)
c, ev = boot()
print("boot", ev, tails(c, 2), ls("/fl"))
assert ev == [] and tails(c, 2) == [b"A1", b"B2"] and ls("/fl") == ["s", "s.d"], (ev, tails(c, 2), ls("/fl"))
print("OK")
""")
    assert "OK" in r.stdout, r.stdout


@pytest.mark.parametrize("cut", [False, True])
def test_an_erased_session_does_not_come_back_from_a_checkpoint_left_unrenamed(cut):
    """A checkpoint whose rename h.tmp -> h is refused leaves a whole
    h.tmp. erase() (a clean start, a session ended) removed h, i0 and i1
    and the slots, not h.tmp: a boot that finds no h takes a whole h.tmp for
    a checkpoint cut before its rename, and the ended session came back
    (its subscriptions; with a cut before the slots were emptied, its
    messages too, sent again). Now h.tmp goes first."""
    r = run_mp(FAULT + r"""
dev, fs = faultfs()
c, ev = boot()
c.publish("t", b"A1", qos=1)
subs.subscribed(c.engine, b"cmd/#", 1, 0)      # as a granted subscribe() leaves it
fs.refuse("rename", "/h.tmp")
try:
    c.journal.checkpoint()                     # subscribe()'s, refused at its rename
except OSError as x:
    print("checkpoint", repr(x))
fs.refuse("open", "/s.d/0", 5) if %r else fs.refuse(None)    # a cut before slot 0 is emptied
try:
    c.journal.erase()                          # connect(clean_session=True)'s, disconnect(0)'s
except OSError as x:
    print("erase cut", repr(x))
fs.refuse(None)
print("after erase", ls("/fl/s.d"))
c.close()
dev = reboot(dev)
c, ev = boot()
print("boot", ev, c.engine.subs, tails(c, 2), ls("/fl/s.d"))
assert not c.engine.subs and tails(c, 2) == [], (c.engine.subs, tails(c, 2))
print("OK")
""" % cut)
    assert "OK" in r.stdout, r.stdout


def test_a_filelog_torn_tail_whose_boot_checkpoint_is_refused_takes_no_append_after_it():
    """FileLog on FAT: a cut mid-append leaves part of a record, which the
    boot's checkpoint drops. Refused (no room for the copy), the boot went
    on, and the next publish() was appended after the torn bytes, where no
    boot reads it: accepted, then lost. Now the next write is a checkpoint:
    refused while there is no room (publish() raises StoreFull, nothing
    accepted), written once there is."""
    r = run_mp(FAULT + r"""
from durable_mqtt.filelog import FileLog
dev, fs = faultfs()
def fboot():
    ev = []
    c = MQTTClient("dev", "127.0.0.1", 1, clean_session=False, session_file=FileLog("/fl/log"),
                   event_callback=lambda e, i: ev.append((e, i)))
    return c, ev
c, ev = fboot()
c.publish("t", b"A1", qos=1)
c.close()
with open("/fl/log", "ab") as f:           # a torn append: the start of an OUT_PUB record
    f.write(b"\x02\x00\x20\x00\x07" + b"\x30" * 15)
fs.refuse("open", "/log.tmp")
c, ev = fboot()
print("boot", ev, tails(c, 2))
assert names(ev) == ["store_full"] and tails(c, 2) == [b"A1"], ev
try:
    c.publish("t", b"B2", qos=1)
    print("accepted B2 with no room")
except StoreFull as x:
    print("refused", repr(x))
assert tails(c, 2) == [b"A1"], tails(c, 2)
fs.refuse(None)
c.publish("t", b"C3", qos=1)
c.close()
dev = reboot(dev)
c, ev = fboot()
print("boot", ev, tails(c, 2))
assert ev == [] and tails(c, 2) == [b"A1", b"C3"], (ev, tails(c, 2))
print("OK")
""")
    assert "OK" in r.stdout, r.stdout


def test_an_old_directory_left_beside_a_refused_restore_never_comes_back():
    """A restore_session() whose removal of the old PATH.d was refused too
    (a full LittleFS refuses removes), then whose rename failed: the client
    works in PATH.d.d, and what was left of PATH.d (its header) stayed. An
    erase() there (the session ended) left no header in PATH.d.d, and the
    next boot dropped PATH.d.d and read the old PATH.d: the session before
    the restore came back, with its subscription. The old directory is now
    removed when the client moves to PATH.d.d, and again by erase()."""
    r = run_mp(FAULT + r"""
dev, fs = faultfs()
c, ev = boot()
c.publish("t", b"A1", qos=1)
saved = c.save_session()                      # no subscription in it
subs.subscribed(c.engine, b"old/#", 1, 0)     # the session before the restore had one
c.journal.checkpoint()
fs.refuse("remove", "/s.d/h")                 # the header of PATH.d stays
c.restore_session(saved)
print("after restore", ls("/fl"), ls("/fl/s.d"), ls("/fl/s.d.d"))
fs.refuse(None)
c.journal.erase()                             # the session ends
c.close()
dev = reboot(dev)
c, ev = boot()
print("boot", ev, c.engine.subs, c.engine.has_state, tails(c, 2))
assert not c.engine.subs and not c.engine.has_state and tails(c, 2) == [], (c.engine.subs, tails(c, 2))
print("OK")
""")
    assert "OK" in r.stdout, r.stdout


@pytest.mark.parametrize("store, refused", [("directory", ("mkdir", "/s.d.d")), ("filelog", ("open", "/log.tmp"))])
def test_a_restore_session_flash_refuses_leaves_ram_with_the_state_flash_holds(store, refused):
    """restore_session() on a full filesystem (ENOSPC where the new state
    is first written) raised StoreFull, but RAM held the restored state
    and the journal the old one: the next publish() went on flash beside
    the old state, and the boot after it restored the old messages with
    the new one (Z1..Z3 lost, A1 back). Now RAM goes back to what flash
    holds, and the refusal changes nothing."""
    r = run_mp(FAULT + r"""
from durable_mqtt.filelog import FileLog
LOG = %r == "filelog"
def sboot(cid="dev", path="/fl/s"):
    ev = []
    c = MQTTClient(cid, "127.0.0.1", 1, clean_session=False, session_file=FileLog("/fl/log") if LOG else path,
                   event_callback=lambda e, i: ev.append((e, i)))
    return c, ev
dev, fs = faultfs()
o, _ = sboot(path="/fl/other")
for m in (b"Z1", b"Z2", b"Z3"):
    o.publish("t", m, qos=1)
saved = o.save_session()
o.close()
if LOG:
    os.remove("/fl/log")                 # (the other client's log: /fl/other is a directory's)
c, ev = sboot()
c.publish("t", b"A1", qos=1)
subs.subscribed(c.engine, b"a/#", 1, 0)
c.journal.checkpoint()
fs.refuse(%r, %r, 28)
try:
    c.restore_session(saved)
    raise AssertionError("restore_session() returned")
except StoreFull as x:
    print("refused", repr(x))
fs.refuse(None)
print("RAM", tails(c, 2), c.engine.subs, c.pending())
assert tails(c, 2) == [b"A1"] and c.engine.subs == [(b"a/#", 1, 0)] and c.pending() == 1
assert c.publish("t", b"C2", qos=1) == 2
c.close()
dev = reboot(dev)
c, ev = sboot()
print("boot", ev, tails(c, 2), c.engine.subs)
assert ev == [] and tails(c, 2) == [b"A1", b"C2"] and c.engine.subs == [(b"a/#", 1, 0)], (ev, tails(c, 2))
c.restore_session(saved)                 # with room: as ever
assert tails(c, 2) == [b"Z1", b"Z2", b"Z3"] and c.engine.subs == []
c.close()
dev = reboot(dev)
c, ev = sboot()
assert tails(c, 2) == [b"Z1", b"Z2", b"Z3"] and c.engine.subs == [], tails(c, 2)
print("OK")
""" % (store, refused[0], refused[1]))
    assert "OK" in r.stdout, r.stdout


@pytest.mark.parametrize("full", ["rename refused", "filesystem full"])
def test_another_clients_session_that_cannot_be_set_aside_is_never_read_as_this_ones(full):
    """A boot finds another client id's session directory ("discarded") and
    the rename to PATH.d.bad is refused (a full filesystem). The failure
    was ignored and the new session started in the same directory, over the
    other client's slots and ids: its first checkpoint wrote this client's
    header beside them, and the next boot resent the other client's
    messages as this one's. Now what cannot be renamed aside is removed
    (or emptied) where it is."""
    r = run_mp(FAULT + r"""
dev, fs = faultfs()
o, _ = boot(cid="other")
for m in (b"O1", b"O2", b"O3"):
    o.publish("t", m, qos=1)
o.close()
FULL = %r == "filesystem full"
if FULL:
    k = fill()
else:
    fs.refuse("rename", "/s.d")
c, ev = boot(cid="dev")
print("boot", ev, ls("/fl/s.d"))
assert names(ev)[0] == "discarded" and tails(c, 2) == [], ev
assert fs.refused == (0 if FULL else 1) and "s.d.bad" not in ls("/fl"), ls("/fl")   # not set aside
fs.refuse(None)
if FULL:
    unfill(k)                      # the application makes room
c.publish("t", b"D1", qos=1)
c.journal.checkpoint()             # as a connect's after its CONNACK
c.close()
dev = reboot(dev)
c, ev = boot(cid="dev")
print("reboot", ev, tails(c, 2))
assert ev == [] and tails(c, 2) == [b"D1"], (ev, tails(c, 2))
print("OK")
""" % full)
    assert "OK" in r.stdout, r.stdout


@pytest.mark.parametrize("store", ["directory", "filelog"])
def test_an_erase_whose_remove_is_refused_does_not_bring_the_session_back(store):
    """erase() (a clean connect, disconnect(session_expiry=0)) ignored a
    refused remove (a full LittleFS refuses removes): the header (or the
    log) stayed, and the next boot restored the session this one ended,
    its messages and subscriptions. Now the file is emptied instead (an
    empty one holds no session); when that is refused too, erase() raises
    StoreFull and flash keeps the session whole, as RAM does."""
    r = run_mp(FAULT + r"""
from durable_mqtt.filelog import FileLog
LOG = %r == "filelog"
NAME = "/log" if LOG else "/s.d/h"
def sboot():
    ev = []
    c = MQTTClient("dev", "127.0.0.1", 1, clean_session=False, session_file=FileLog("/fl/log") if LOG else "/fl/s",
                   event_callback=lambda e, i: ev.append((e, i)))
    return c, ev
dev, fs = faultfs()
c, ev = sboot()
c.publish("t", b"A1", qos=1)
subs.subscribed(c.engine, b"cmd/#", 1, 0)
c.journal.checkpoint()
fs.refuse("remove", NAME)
c.journal.erase()                          # settle.py's and leave.py's call
assert fs.refused == 1
fs.refuse(None)
c.close()
dev = reboot(dev)
c, ev = sboot()
print("after an erase whose remove was refused", ev, c.engine.subs, tails(c, 2))
assert not c.engine.has_state and c.engine.subs == [] and tails(c, 2) == [], (c.engine.subs, tails(c, 2))
# Both refused: StoreFull, and the session is whole on flash.
c.publish("t", b"B1", qos=1)
subs.subscribed(c.engine, b"cmd/#", 1, 0)
c.journal.checkpoint()
dev, fs = reboot_faulty(dev)
c, ev = sboot()
assert tails(c, 2) == [b"B1"]
fs.refuse(("remove", "open"), NAME)
try:
    c.journal.erase()
    raise AssertionError("erase() returned")
except StoreFull as x:
    print("erase refused", repr(x))
fs.refuse(None)
c.close()
dev = reboot(dev)
c, ev = sboot()
print("after an erase refused", ev, c.engine.subs, tails(c, 2))
assert c.engine.subs == [(b"cmd/#", 1, 0)] and tails(c, 2) == [b"B1"], (c.engine.subs, tails(c, 2))
print("OK")
""" % store)
    assert "OK" in r.stdout, r.stdout


def test_an_erase_the_filesystem_refuses_is_store_full_at_connect_and_disconnect(broker):
    """The public calls that end a stored session on a filesystem that
    refuses it: reported as store_full, as a refused checkpoint is.
    MQTT 5 disconnect(session_expiry=0), whose checkpoint of the messages
    alone is refused, still sends DISCONNECT and returns; a clean connect(),
    whose erase meets a header that will neither go nor empty, connects.
    The session stays whole on flash and in RAM (the next connect finds the
    broker's half gone). Once the filesystem lets it, the next clean
    connect erases it."""
    r = run_mp(FAULT + r"""
import time
PORT = %d
CID = "erase-%%d" %% time.ticks_ms()
dev, fs = faultfs()
def mk(expiry=3600):
    ev = []
    c = MQTTClient(CID, "127.0.0.1", PORT, version=5, clean_session=False, session_expiry=expiry,
                   session_file="/fl/s", event_callback=lambda e, i: ev.append(e))
    return c, ev
c, ev = mk()
c.connect()
c.subscribe("erase/cmd/#", 1)
fs.refuse("open", "/s.d/h.tmp")
del ev[:]
print("DISCONNECT", c.disconnect(session_expiry=0), c.is_connected(), ev)
assert ev == ["store_full"] and c.engine.subs and c.engine.has_state and c.persist, ev
fs.refuse(None)
c.close()
dev, fs = reboot_faulty(dev)
c, ev = mk(None)                           # the session on flash: held
assert c.engine.subs == [(b"erase/cmd/#", 1, 0)] and not c.clean_session, c.engine.subs
fs.refuse(("remove", "open"), "/s.d/h")
del ev[:]
c.connect(clean_session=True)              # Clean Start, no Session Expiry: a session that ends with the link
print("CLEAN CONNECT", c.is_connected(), ev)
assert c.is_connected() and ev == ["store_full", "new"], ev
c.disconnect()
fs.refuse(None)
c.connect(clean_session=True)              # clean again: the erase gets through
c.disconnect()
c.close()
dev = reboot(dev)
c, ev = mk()
print("BOOT", ev, c.engine.subs, c.engine.has_state)
assert not c.engine.has_state and c.engine.subs == [], c.engine.subs
print("OK")
""" % broker.port)
    assert "OK" in r.stdout, r.stdout


def test_a_released_messages_publish_a_boot_could_not_empty_never_outlives_its_pubrel():
    """A power cut after a QoS 2 message's OUT_REL was written, before the
    slot of its OUT_PUB was emptied: the boot finds both, keeps the OUT_REL
    and empties the OUT_PUB. When the filesystem refused that (full), the
    OUT_PUB stayed on flash while the journal took its slot for free and
    unguarded: the message completed, its OUT_REL's slot was reused first,
    and the next boot found the OUT_PUB alone and sent the PUBLISH again
    (MQTT-4.3.3-6: a second delivery under an id the broker had released).
    Now the slot is guarded as a released message's OUT_PUB is: emptied or
    reused before its OUT_REL's slot is (a store review's suspicion)."""
    r = run_mp(FAULT + r"""
dev, fs = faultfs()
c, ev = boot()
assert c.publish("t", b"Q1", qos=2) == 1
with open("/fl/s.d/0", "rb") as f:
    pub = f.read()                       # its OUT_PUB
e = c.engine
e.connected(False, False)
tx = bytearray(64)
while e.next_out(0, tx) > 0:
    pass
e.pubrec(1, 0, tx)
c.journal.put()                          # OUT_REL in slot 1
c.close()
with open("/fl/s.d/0", "wb") as f:
    f.write(pub)                         # the power cut came before slot 0 was emptied
print("cut with", [(n, os.stat("/fl/s.d/" + n)[6]) for n in ls("/fl/s.d")])
dev, fs = reboot_faulty(dev)
fs.refuse("write", "/s.d/0")             # the boot cannot empty slot 0
c, ev = boot()
fs.refuse(None)
print("boot", ev, fs.refused, tails(c, 2), c.pending())
assert fs.refused == 1 and c.pending() == 1, ev
e = c.engine
assert e.connected(True, False) == "resumed"     # the PUBREL goes again
while e.next_out(0, tx) > 0:
    pass
e.pubcomp(1)                             # the message completes
c.journal.acked(e.done_pid)
e.done_pid = 0
c.journal.flush()                        # the acknowledged slot emptied
c.close()
dev = reboot(dev)
c, ev = boot()
print("reboot", ev, tails(c, 2), [c.engine.pid[c.engine.index(k)] for k in range(c.engine.count)])
assert c.pending() == 0, tails(c, 2)     # (before: Q1's PUBLISH again, its id released)
print("OK")
""")
    print(r.stdout)
    assert "OK" in r.stdout, r.stdout


def test_a_slot_left_in_a_directory_without_a_header_is_never_taken_into_the_next_session():
    """A session directory with no header but a slot still holding a
    message (an erase() cut short: the header goes first, the slots after).
    A boot empties such slots; when the filesystem refused that (full), the
    slot stayed, the new session's first checkpoint wrote its header beside
    it, and the next boot took the old message for this session's and sent
    it (a store review's suspicion). Now the slot is noted as an
    acknowledged one, which that checkpoint empties before the header."""
    r = run_mp(FAULT + r"""
dev, fs = faultfs()
c, ev = boot()
c.publish("t", b"O1", qos=1)
c.publish("t", b"O2", qos=1)
c.close()
os.remove("/fl/s.d/h")                   # the erase cut after its header
dev, fs = reboot_faulty(dev)
fs.refuse("write", "/s.d/1")             # the boot cannot empty slot 1
c, ev = boot()
fs.refuse(None)
print("boot", ev, fs.refused, c.pending(), [(n, os.stat("/fl/s.d/" + n)[6]) for n in ls("/fl/s.d")])
# (The boot's own checkpoint tried to empty it first, refused: no header.)
assert fs.refused == 2 and c.pending() == 0 and names(ev) == ["store_full"], ev
assert "h" not in ls("/fl/s.d")
c.publish("t", b"N1", qos=1)
c.journal.checkpoint()                   # the new session's header
c.close()
dev = reboot(dev)
c, ev = boot()
print("reboot", ev, tails(c, 2))
assert tails(c, 2) == [b"N1"], tails(c, 2)
print("OK")
""")
    print(r.stdout)
    assert "OK" in r.stdout, r.stdout
