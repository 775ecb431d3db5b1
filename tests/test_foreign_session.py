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

# Every free block of the mount at /fl taken by files fill0, fill1, ...:
# their count (tests/test_store_errors.py fills a filesystem so too).
FILL = r"""
def fill(k=0, sizes=(4096, 1024, 256, 64, 16, 1), spare=False):
    # Files fill<k>, ... of each size in turn until refused; the next k.
    # spare: the file a refusal cut short goes, which leaves the directory
    # room for a name (blocks full, not the metadata).
    for sz in sizes:
        try:
            while True:
                with open("/fl/fill%d" % k, "wb") as f:
                    f.write(bytes(sz))
                k += 1
        except OSError:
            if spare:
                os.remove("/fl/fill%d" % k)
    return k
"""

# tails(c, n): the held messages' last n payload bytes, in resend order
# (the outbox, or a boot's).
TAILS = r"""
def tails(c, n=1):
    e = c.engine
    out = []
    for k in range(e.count):
        i = e.index(k)
        out.append(bytes(e.arena[e.off[i] + e.len[i] - n:e.off[i] + e.len[i]]))
    return out
"""

LFS = TAILS + r"""
import os, vfs
from norflash import NorFlash
from durable_mqtt import MQTTClient, crc, subs
P = 32
def fresh(blocks=32):
    dev = NorFlash(4096, blocks, prog_size=P)
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
    return b"".join(tails(c))
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
    old[14:16] = pid.to_bytes(2, "big")           # and in the PUBLISH (topic "t": bytes 9..13 before it)
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
    r = run_mp(LFS + FILL + r"""
from durable_mqtt import StoreFull
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


# --- docs/session-format.md against the bytes the library writes ---------
# A parser written from the document's tables alone (not from the code):
# every integer big-endian; a record is type u8, len u16, body, CRC-32/IEEE
# (zlib's) over type, len and body.

def _crc_ok(b, end):
    return struct.unpack(">I", b[end:end + 4])[0] == binascii.crc32(b[:end]) & 0xFFFFFFFF


def _doc_records(b, p):
    out = []
    while p < len(b):
        kind, ln = b[p], struct.unpack(">H", b[p + 1:p + 3])[0]
        rec = b[p:p + 3 + ln + 4]
        assert len(rec) == ln + 7 and _crc_ok(rec, 3 + ln), ("bad record at", p)
        out.append((kind, rec[3:3 + ln]))
        p += ln + 7
    return out


def _doc_header(body):
    proto, flags, expiry, saved, pid, k = struct.unpack(">BBIIHH", body[:14])
    assert len(body) == 14 + k
    return dict(proto=proto, flags=flags, expiry=expiry, saved=saved, pid=pid, cid=body[14:])


def _doc_publish(pkt):
    # The PUBLISH packet of an OUT_PUB: fixed header, topic, packet id.
    assert pkt[0] >> 4 == 3
    n, mult, p = 0, 1, 1
    while True:
        n += (pkt[p] & 0x7F) * mult
        mult *= 128
        p += 1
        if not pkt[p - 1] & 0x80:
            break
    assert len(pkt) == p + n
    tl = struct.unpack(">H", pkt[p:p + 2])[0]
    topic = pkt[p + 2:p + 2 + tl]
    pid = struct.unpack(">H", pkt[p + 2 + tl:p + 4 + tl])[0]
    return (pkt[0] >> 1) & 3, topic, pid, pkt


def test_the_session_directory_and_stream_bytes_match_the_document():
    """On a LittleFS image: an MQTT 5 client with two subscriptions (one
    with a subscription identifier and options), a QoS 1 message, a QoS 2
    message past its PUBREC and another before it, and two incoming QoS 2
    ids awaiting PUBREL. Every file of PATH.d and the save_session() stream
    are decoded with the document's tables: h = preamble, HEADER, SUB
    records; i0/i1 = seq and IN_LIST, CRC over both; each slot = seq and an
    OUT_PUB / OUT_REL, CRC over both; the stream = preamble, HEADER, SUBs,
    messages oldest first (OUT_REL for the released one), IN_QOS2."""
    r = run_mp(LFS + r"""
import binascii
fresh()
c, ev = boot(version=5, session_expiry=3600)
e, j = c.engine, c.journal
subs.subscribed(e, b"cmd/#", 1 | 4 | 8 | 16, 77)     # QoS 1, No Local, RAP, Retain Handling 1
subs.subscribed(e, b"cfg", 2, 0)
e.has_state = True                                    # (a session held, as after a CONNACK)
j.checkpoint()
p1 = c.publish("tele/a", b"one", qos=1)
p2 = c.publish("tele/b", b"two", qos=2, retain=True)
p3 = c.publish("tele/c", b"three", qos=2)
tx = bytearray(64)
e.connected(False, False)
while e.next_out(0, tx) > 0:
    pass
e.pubrec(p2, 0, tx)
j.put()
for pid in (300, 301):
    e.incoming(2, pid)
    e.ack_incoming(2, pid, 0, tx)
    j.put()
print("PIDS", p1, p2, p3)
for n in sorted(os.listdir("/fl/s.d")):
    with open("/fl/s.d/" + n, "rb") as f:
        print("FILE", n, binascii.hexlify(f.read()).decode() or "-")
print("STREAM", binascii.hexlify(c.save_session()).decode())
""")
    files, stream, pids = {}, None, None
    for line in r.stdout.splitlines():
        w = line.split()
        if w[0] == "FILE":
            files[w[1]] = b"" if w[2] == "-" else bytes.fromhex(w[2])
        elif w[0] == "STREAM":
            stream = bytes.fromhex(w[1])
        elif w[0] == "PIDS":
            pids = [int(x) for x in w[1:]]
    p1, p2, p3 = pids
    # h: preamble "DMQS" 01, HEADER, one SUB per subscription in order
    h = files.pop("h")
    assert h[:5] == b"DMQS\x01"
    recs = _doc_records(h, 5)
    assert recs[0][0] == 0x01
    hd = _doc_header(recs[0][1])
    assert hd["proto"] == 5 and hd["cid"] == b"dev" and hd["expiry"] == 3600
    assert hd["flags"] & 0xF8 == 0 and hd["saved"] == 0      # not written by disconnect()
    subs = [(b[5:], b[4], struct.unpack(">I", b[:4])[0]) for k, b in recs[1:] if k == 0x07]
    assert [k for k, _ in recs[1:]] == [0x07, 0x07]
    assert subs == [(b"cmd/#", 0x1D, 77), (b"cfg", 2, 0)], subs
    # i0 / i1: the intact one with the higher seq holds the ids
    ids = {}
    for name in ("i0", "i1"):
        b = files.pop(name, b"")
        if b:
            seq = struct.unpack(">I", b[:4])[0]
            assert b[4] == 0x08
            ln = struct.unpack(">H", b[5:7])[0]
            assert len(b) == 11 + ln and _crc_ok(b, 7 + ln)
            ids[seq] = sorted(struct.unpack(">%dH" % (ln // 2), b[7:7 + ln]))
    assert ids[max(ids)] == [300, 301], ids
    # slots: seq, OUT_PUB (02) or OUT_REL (04), CRC over seq and record
    slots = []
    for name, b in files.items():
        assert name.isdigit(), name                      # nothing else in the directory
        if not b:
            continue
        seq, kind, ln, pid = struct.unpack(">IBHH", b[:9])
        assert len(b) == 13 + ln - 2 and _crc_ok(b, 9 + ln - 2), name
        assert kind in (0x02, 0x04)
        pkt = b[9:9 + ln - 2]
        if kind == 0x04:
            assert pkt == b""
        else:
            assert _doc_publish(pkt)[2] == pid           # the pid inside equals the record's
        slots.append((seq, kind, pid, pkt))
    slots.sort()
    newest = {}
    for seq, kind, pid, pkt in slots:                     # of one id, the higher seq counts
        newest[pid] = (seq, kind, pkt)
    order = sorted(newest.items(), key=lambda x: x[1][0])
    assert [(pid, kind) for pid, (_, kind, _) in order] == [(p1, 2), (p3, 2), (p2, 4)], order
    q, topic, _, pkt = _doc_publish(newest[p1][2])
    assert q == 1 and topic == b"tele/a" and pkt.endswith(b"one")
    q, topic, _, pkt = _doc_publish(newest[p3][2])
    assert q == 2 and topic == b"tele/c" and pkt.endswith(b"three")
    # the stream: preamble, HEADER, SUBs, the messages oldest first (OUT_PUB
    # while the PUBLISH is owed, OUT_REL once PUBREC came), IN_QOS2
    assert stream[:5] == b"DMQS\x01"
    recs = _doc_records(stream, 5)
    kinds = [k for k, _ in recs]
    assert kinds == [0x01, 0x07, 0x07, 0x02, 0x02, 0x04, 0x05, 0x05], kinds
    sh = _doc_header(recs[0][1])
    assert sh["pid"] == p3 and dict(sh, pid=0) == dict(hd, pid=0)    # h was written before the publishes
    msgs = [(struct.unpack(">H", b[:2])[0], b[2:]) for k, b in recs if k in (0x02, 0x04)]
    assert [m[0] for m in msgs] == [p1, p3, p2] and msgs[2][1] == b""
    assert msgs[0][1][1:] == newest[p1][2][1:]            # (DUP may differ)
    assert sorted(struct.unpack(">H", b)[0] for k, b in recs if k == 0x05) == [300, 301]


def test_a_ring_with_every_block_erased_but_one():
    """A flash ring (ring.py) whose blocks were all erased but one, for each
    block in turn: the boot never raises; what it restores is a state the
    ring held at some time (here: the current one, an older checkpoint of a
    stale block, or nothing), only messages that were published, each once;
    and the ring takes new messages after it."""
    r = run_mp(r"""
from norflash import NorFlash
from durable_mqtt import MQTTClient
N = 6
def boot(dev):
    ev = []
    c = MQTTClient("dev", "127.0.0.1", 1, clean_session=False, session_file=dev,
                   event_callback=lambda e, i: ev.append(e))
    return c, ev
def held(c):
    e = c.engine
    return [bytes(e.arena[e.off[e.index(k)]:e.off[e.index(k)] + e.len[e.index(k)]])[-44:-40]
            for k in range(e.count)]
dev = NorFlash(4096, N, prog_size=32)
c, ev = boot(dev)
tx = bytearray(64)
e, j = c.engine, c.journal
e.connected(False, False)
for i in range(120):                       # the ring wraps; the last four stay held
    pid = c.publish("t", b"m%03d" % i + b"x" * 40, qos=1)
    while e.next_out(0, tx) > 0:
        pass
    if i < 116:
        e.puback(pid, 0)
        j.acked(e.done_pid)
        e.done_pid = 0
c.close()
c, ev = boot(dev)
now = held(c)
assert ev == [] and now == [b"m116", b"m117", b"m118", b"m119"], (ev, now)
img = dev.snapshot()
outcomes = []
for b in range(N):
    d = NorFlash(4096, N, prog_size=32)
    d.restore(img)
    for o in range(N):
        if o != b:
            d.ioctl(6, o)
    c, ev = boot(d)
    got = held(c)
    assert "discarded" not in ev, (b, ev)
    assert len(set(got)) == len(got) and all(m.startswith(b"m") and int(m[1:]) < 120 for m in got), (b, got)
    assert got == now or len(got) <= 4, (b, got)
    outcomes.append(len(got))
    c.publish("t", b"m999" + b"y" * 40, qos=1)
    c.close()
    c, ev = boot(d)
    assert ev == [] and held(c) == got + [b"m999"], (b, ev, held(c))
print("OK", outcomes)
""")
    assert "OK" in r.stdout, r.stdout
    print(r.stdout)


def test_a_filelog_torn_at_every_byte(tmp_path):
    """A FileLog (one log file, filelog.py) cut at every length, as a host
    filesystem without atomic appends can leave it: a cut inside the header
    sets the state aside (`discarded`); a cut anywhere after it restores
    the messages whose records are whole, in order, in silence (a torn last
    write is not damage); a message published after such a boot is kept by
    the next one (the boot's checkpoint dropped the torn tail first)."""
    r = run_mp(TAILS + r"""
import os
from durable_mqtt import MQTTClient
from durable_mqtt.filelog import FileLog
P = %r
def boot():
    ev = []
    c = MQTTClient("dev", "127.0.0.1", 1, clean_session=False, session_file=FileLog(P),
                   event_callback=lambda e, i: ev.append(e))
    return c, ev
c, ev = boot()
for i in range(3):
    c.publish("t", b"m%%d" %% i, qos=1)
c.close()
with open(P, "rb") as f:
    full = f.read()
seen = {}
for L in range(len(full) - 1, 4, -1):
    for n in (P + ".bad", P + ".tmp"):
        try:
            os.remove(n)
        except OSError:
            pass
    with open(P, "wb") as f:
        f.write(full[:L])
    c, ev = boot()
    got = tails(c, 2)
    if ev:
        assert ev == ["discarded"] and got == [], (L, ev, got)
    else:
        assert got == [b"m0", b"m1", b"m2"][:len(got)] and len(got) < 3, (L, got)
    c.publish("t", b"ZZ", qos=1)
    c.close()
    c, ev2 = boot()
    assert ev2 == [] and tails(c, 2) == got + [b"ZZ"], (L, ev2, tails(c, 2))
    c.close()
    seen[(tuple(ev), len(got))] = seen.get((tuple(ev), len(got)), 0) + 1
print("OK", sorted(seen.items()))
""" % str(tmp_path / "log"))
    assert "OK" in r.stdout, r.stdout


def test_incoming_id_files_across_the_sequence_numbers_wrap():
    """i0 / i1 alternate, the newer (higher sequence number) holding the
    incoming QoS 2 ids awaiting PUBREL. Their numbers are u32 too: past
    2**32 the newer file's number is the smaller one, and a plain compare
    took the older file's ids (an id released since would then make the
    broker's next message with it be taken for a duplicate and never
    delivered, MQTT-4.3.3-10; one added since would be delivered twice).
    They are compared as serial numbers."""
    r = run_mp(LFS + r"""
tx = bytearray(64)
def reseq(name, seq):
    p = "/fl/s.d/" + name
    with open(p, "rb") as f:
        b = bytearray(f.read())
    b[0:4] = seq.to_bytes(4, "big")
    crc.seal(b, 0, len(b) - 4)
    with open(p, "wb") as f:
        f.write(b)
def ids(c):
    e = c.engine
    return sorted(e.rx2[k] for k in range(e.rx2_n))
for newer in (0, 1, 0x80000000, 0x80000001):
    fresh()
    c, ev = boot()
    e, j = c.engine, c.journal
    for pid in (7, 8):                          # i0: [7] (seq 2), i1: [7, 8] (seq 3)
        e.incoming(2, pid)
        e.ack_incoming(2, pid, 0, tx)
        j.put()
    e.pubrel(7, tx)
    j.put()                                     # i0: [8] (seq 4), the newer
    c.close()
    c, ev = boot()
    assert ids(c) == [8], ids(c)
    new = "i0" if j.iseq % 2 == 0 else "i1"
    reseq(new, newer)
    reseq("i1" if new == "i0" else "i0", (newer - 1) & 0xFFFFFFFF)
    c, ev = boot()
    print(hex(newer), ev, ids(c))
    assert ev == [] and ids(c) == [8], (hex(newer), ids(c))
    e, j = c.engine, c.journal
    e.incoming(2, 9)
    e.ack_incoming(2, 9, 0, tx)
    j.put()                                     # goes over the older file, numbered after the newer
    c.close()
    c, ev = boot()
    assert ev == [] and ids(c) == [8, 9], (hex(newer), ids(c))
    vfs.umount("/fl")
print("OK")
""")
    assert "OK" in r.stdout, r.stdout


def test_a_second_set_aside_over_a_bad_copy_that_is_a_file_or_holds_a_directory(tmp_path):
    """set_aside() renames PATH.d to PATH.d.bad, removing an older .d.bad
    first, but only its files: an older .d.bad that was a file (a PATH.d
    file set aside) or held a directory could not be removed, the rename
    failed in silence, and the unusable directory stayed where it was. Its
    slots were then read as this client's at the next boot: here another
    client id's message came back as this client's, to be sent under its
    name. Now the older .d.bad goes whole, whatever it holds."""
    r = run_mp(LFS + r"""
for older in ("file", "nested"):
    fresh()
    if older == "file":
        with open("/fl/s.d.bad", "wb") as f:
            f.write(b"old")
    else:
        os.mkdir("/fl/s.d.bad")
        os.mkdir("/fl/s.d.bad/h")
        with open("/fl/s.d.bad/h/x", "wb") as f:
            f.write(b"x")
    c, ev = boot("other")
    c.publish("t", b"theirs", qos=1)
    c.close()
    c, ev = boot("dev")
    print(older, ev, c.pending(), sorted(os.listdir("/fl")))
    assert names(ev) == ["discarded"] and c.pending() == 0, ev
    c.close()
    c, ev = boot("dev")
    print(older, ev, payloads(c))
    assert ev == [] and payloads(c) == b"", (older, ev, payloads(c))
    assert "h" in os.listdir("/fl/s.d.bad") and not os.stat("/fl/s.d.bad/h")[0] & 0x4000
    vfs.umount("/fl")
print("OK")
""")
    assert "OK" in r.stdout, r.stdout


def test_a_filelog_path_that_is_a_directory():
    """session_file=FileLog(path) where path is a directory (empty, or
    holding a file): the constructor raised OSError (EISDIR) from its
    first checkpoint's rename. It is foreign data at the path: set aside
    (path.bad), event `discarded`, and the log works."""
    r = run_mp(LFS + r"""
from durable_mqtt.filelog import FileLog
def boot_log():
    ev = []
    c = MQTTClient("dev", "127.0.0.1", 1, clean_session=False, session_file=FileLog("/fl/log"),
                   event_callback=lambda e, i: ev.append(e))
    return c, ev
for inside in (False, True):
    fresh()
    os.mkdir("/fl/log")
    if inside:
        with open("/fl/log/a", "wb") as f:
            f.write(b"a")
    c, ev = boot_log()
    print(inside, ev, sorted(os.listdir("/fl")))
    assert ev == ["discarded"] and c.pending() == 0, ev
    c.publish("t", b"A", qos=1)
    c.close()
    c, ev = boot_log()
    assert ev == [] and payloads(c) == b"A", (ev, payloads(c))
    assert os.stat("/fl/log.bad")[0] & 0x4000
    vfs.umount("/fl")
print("OK")
""")
    assert "OK" in r.stdout, r.stdout


# A FAT device for the unix port (VfsFat, as an SD card): 512-byte sectors,
# each written whole or not at all; `left` writes go through, then Cut
# (a power cut, or with fail=OSError(5): a write error the program sees).
FAT_SECTORS = r"""
import os, vfs
from durable_mqtt import MQTTClient, subs
class Cut(Exception):
    pass
class Sectors:
    def __init__(self, n):
        self.data = bytearray(512 * n)
        self.left = -1                    # writes before the cut (-1: never)
        self.fail = Cut
    def readblocks(self, n, buf):         # (no allocation: a finaliser may read, heap locked)
        d = self.data
        a = n * 512
        for i in range(len(buf)):
            buf[i] = d[a + i]
    def writeblocks(self, n, buf):
        if self.left == 0:
            raise self.fail
        self.left -= 1
        self.data[n * 512:n * 512 + len(buf)] = buf
    def ioctl(self, op, arg):
        return len(self.data) // 512 if op == 4 else 512 if op == 5 else 0
def reboot(dev):
    # The power back (the cut disarmed): the card mounted again, as a boot mounts it.
    dev.left = -1
    try:
        vfs.umount("/fat")
    except OSError:
        pass
    vfs.mount(vfs.VfsFat(dev), "/fat")
def fat(n, at="/fat"):
    # A card of n sectors, formatted and mounted at `at`.
    dev = Sectors(n)
    vfs.VfsFat.mkfs(dev)
    vfs.mount(vfs.VfsFat(dev), at)
    return dev
"""


def test_a_checkpoint_cut_at_every_sector_write_on_fat():
    """FAT (VfsFat, an SD card) renames over an existing file in two steps:
    the old file is removed, then the new one named. A power cut between
    them left h.tmp, whole, and no h: the boot took that for "no session"
    and emptied every slot, losing the held messages in silence. A whole
    h.tmp without h is now taken as the header (renamed into place). The
    device here writes each 512-byte sector whole or not at all, as an SD
    card does; the checkpoint is cut before each of its writes in turn."""
    r = run_mp(FAT_SECTORS + r"""
def boot():
    ev = []
    c = MQTTClient("dev", "127.0.0.1", 1, clean_session=False, session_file="/fat/s",
                   event_callback=lambda e, i: ev.append(e))
    return c, ev
dev = fat(256)
c, ev = boot()
for i in range(3):
    c.publish("t", b"m%d" % i, qos=1)
c.close()
vfs.umount("/fat")
img = bytes(dev.data)
n = 0
while True:
    dev = Sectors(256)
    dev.data[:] = img
    vfs.mount(vfs.VfsFat(dev), "/fat")
    c, ev = boot()
    subs.subscribed(c.engine, b"cmd", 1, 0)
    dev.left = n
    try:
        c.journal.checkpoint()           # as subscribe() makes one
        done = True
    except Cut:
        done = False
    reboot(dev)
    c, ev = boot()
    print(n, ev, c.pending(), sorted(os.listdir("/fat/s.d")))
    assert ev == [] and c.pending() == 3, (n, ev, c.pending())
    vfs.umount("/fat")
    if done:
        break
    n += 1
print("OK", n)
""")
    assert "OK" in r.stdout, r.stdout


def test_a_read_only_filesystem_with_leftovers_of_an_erased_session():
    """No "h" (a session erased header first, cut before its slots were
    emptied) on a filesystem mounted read-only: the boot empties such slots,
    and the write it could not make raised from the constructor. Now they
    stay (emptied at a later boot that can write) and the client starts
    with no session; a whole h.tmp without "h" is read all the same."""
    r = run_mp(LFS + r"""
dev = fresh()
c, ev = boot()
for m in (b"A", b"B"):
    c.publish("t", m, qos=1)
c.close()
os.rename("/fl/s.d/h", "/fl/s.d/h.tmp")          # as FAT's cut rename leaves it
with open("/fl/s.d/h.tmp", "rb") as f:
    head = f.read()
vfs.umount("/fl")
vfs.mount(vfs.VfsLfs2(dev, progsize=P), "/fl", readonly=True)
c, ev = boot()
assert ev == [] and payloads(c) == b"AB", (ev, payloads(c))
vfs.umount("/fl")
vfs.mount(vfs.VfsLfs2(dev, progsize=P), "/fl")
os.remove("/fl/s.d/h.tmp")                        # an erase cut after its first step
vfs.umount("/fl")
vfs.mount(vfs.VfsLfs2(dev, progsize=P), "/fl", readonly=True)
c, ev = boot()
print(ev, c.pending())
assert c.pending() == 0 and "discarded" not in names(ev), ev
vfs.umount("/fl")
vfs.mount(vfs.VfsLfs2(dev, progsize=P), "/fl")
c, ev = boot()
assert ev == [] and c.pending() == 0
assert all(not os.stat("/fl/s.d/" + n)[6] for n in os.listdir("/fl/s.d") if n.isdigit())
print("OK")
""")
    assert "OK" in r.stdout, r.stdout


# --- docs/ring-format.md against the bytes the library writes ------------

def _commit_ok(blk, p, n):
    # The commit's CRC: over its place (the block's number, its offset:
    # u32 each, big-endian), then its header and payload.
    place = blk[8:12] + struct.pack(">I", p)
    return struct.unpack(">I", blk[p + 8 + n:p + 12 + n])[0] == binascii.crc32(place + blk[p:p + 8 + n])


def _doc_ring(img, B, N, P):
    def commit_sizes(blk):
        # The padded sizes of a block's valid commits, in order.
        p = P
        while p + 12 <= B:
            kind, res, n = struct.unpack(">BBH", blk[p:p + 4])
            if kind not in (0xC0, 0xC1, 0xC3, 0xC5, 0xC7) or res or p + 12 + n > B or not _commit_ok(blk, p, n):
                return
            size = -(-(12 + n) // P) * P
            yield blk[p:p + size]
            p += size

    # The state a ring image holds, by the document's "How load() picks the
    # state"; also checks every block header and commit against its tables.
    heads = {}
    for b in range(N):
        blk = img[b * B:(b + 1) * B]
        if blk[:4] != b"DMQR":
            assert blk[:4] == b"\xff" * 4, b                  # never-written blocks only
            continue
        assert blk[4] == 2 and blk[5] == P.bit_length() - 1 and struct.unpack(">H", blk[6:8])[0] == N
        assert _crc_ok(blk, 12) and blk[20:P] == b"\xff" * (P - 20)
        # the commit bound: the largest commit, in units of P, and its complement
        bound = struct.unpack(">H", blk[16:18])[0]
        assert bound and struct.unpack(">H", blk[18:20])[0] == bound ^ 0xFFFF
        assert all(len(x) <= bound * P for x in commit_sizes(blk))
        heads[b] = struct.unpack(">I", blk[8:12])[0]
    head = max(heads, key=heads.get)
    chain = [head]
    while len(chain) < N:
        prev = (chain[-1] - 1) % N
        if heads.get(prev) != heads[chain[-1]] - 1:
            break
        chain.append(prev)
    commits = []
    for b in reversed(chain):
        blk = img[b * B:(b + 1) * B]
        p = P
        while p + 12 <= B:
            kind, res, n, seq = struct.unpack(">BBHI", blk[p:p + 8])
            if kind not in (0xC0, 0xC1, 0xC3, 0xC5, 0xC7) or res or p + 12 + n > B or not _commit_ok(blk, p, n):
                assert kind == 0xFF and blk[p:] == b"\xff" * (B - p), (b, p)   # the rest is erased
                break
            size = -(-(12 + n) // P) * P
            assert blk[p + 12 + n:p + size] == b"\xff" * (size - 12 - n)     # padding
            commits.append((kind, seq, blk[p + 8:p + 8 + n]))
            p += size
    for a, b in zip(commits, commits[1:]):
        assert b[1] == (a[1] + 1) % (1 << 30)                               # no gap in a clean run
    state, cand, appends = None, None, []
    for kind, seq, payload in commits:
        if kind & 0x02:                    # BEGIN
            cand = [payload]
        elif kind == 0xC1 or kind == 0xC5:
            if cand is not None:
                cand.append(payload)
        if kind & 0x04 and cand is not None:   # END
            state, cand, appends = b"".join(cand), None, []
        elif kind == 0xC0:
            cand = None
            appends.append(payload)
    return state + b"".join(appends)


def _doc_messages(stream):
    # A stream's outgoing messages by the records' "Reading" rules.
    assert stream[:5] == b"DMQS\x01"
    out = []
    for kind, body in _doc_records(stream, 5):
        if kind == 0x02:
            pid = struct.unpack(">H", body[:2])[0]
            out = [m for m in out if m[0] != pid] + [(pid, bytes([body[2] & 0xF7]) + body[3:])]
        elif kind == 0x03:
            gone = set(struct.unpack(">%dH" % (len(body) // 2), body))
            out = [m for m in out if m[0] not in gone]
        elif kind == 0x04:
            pid = struct.unpack(">H", body)[0]
            out = [m for m in out if m[0] != pid] + [(pid, None)]
    return out


def test_the_ring_bytes_match_the_document():
    """A flash ring (ESP32 program size, 8 blocks of 4 KB) after many
    messages, acknowledgements, a PUBREC and checkpoints, so that it wraps:
    every block header and commit is checked against ring-format.md's
    tables, and the state picked by the document's rules, read with
    session-format.md's, holds exactly the messages the client holds."""
    B, N, P = 4096, 8, 32
    r = run_mp(r"""
import binascii
from norflash import NorFlash
from durable_mqtt import MQTTClient
dev = NorFlash(%d, %d, prog_size=%d)
c = MQTTClient("dev", "127.0.0.1", 1, clean_session=False, session_file=dev)
e, j = c.engine, c.journal
tx = bytearray(64)
e.connected(False, False)
for i in range(300):
    pid = c.publish("t/%%d" %% (i %% 7), b"p%%03d" %% i + b"." * (i %% 50), qos=1 + (i %% 5 == 0))
    while e.next_out(0, tx) > 0:
        pass
    if i %% 5 == 0:
        e.pubrec(pid, 0, tx)
        j.put()
        if i < 285:
            e.pubcomp(pid)
            j.acked(e.done_pid)
            e.done_pid = 0
    elif i < 295:
        e.puback(pid, 0)
        j.acked(e.done_pid)
        e.done_pid = 0
    if i %% 97 == 0:
        j.checkpoint()
held = []
for k in range(e.count):
    s = e.slot(k)                               # 1: PUBLISH owed, 3: PUBREL owed, 0: done
    if s:
        i = e.index(k)
        pkt = bytes(e.arena[e.off[i]:e.off[i] + e.len[i]]) if s == 1 else b""
        held.append("%%d:%%s" %% (e.pid[i], binascii.hexlify(pkt).decode() or "-"))
print("HELD", " ".join(held))
print("IMG", binascii.hexlify(dev.snapshot()).decode())
""" % (B, N, P))
    img = held = None
    for line in r.stdout.splitlines():
        if line.startswith("IMG "):
            img = bytes.fromhex(line[4:])
        elif line.startswith("HELD "):
            held = [(int(x.split(":")[0]), None if x.split(":")[1] == "-" else bytes.fromhex(x.split(":")[1]))
                    for x in line[5:].split()]
    want = [(pid, None if pkt is None else bytes([pkt[0] & 0xF7]) + pkt[1:]) for pid, pkt in held]
    got = _doc_messages(_doc_ring(img, B, N, P))
    assert max(struct.unpack(">I", img[b * B + 8:b * B + 12])[0] for b in range(N)) >= N     # it wrapped
    assert len(want) >= 5 and any(p is None for _, p in want)
    assert got == want, (got[:3], want[:3])


def test_a_stored_publish_that_is_no_publish_of_its_packet_id():
    """A record with a good CRC whose packet is not a QoS 1/2 PUBLISH
    carrying the record's packet id (session-format.md: "the packet id
    inside the packet equals the record's"): no writer of this library
    makes one. It was restored and its bytes sent to the broker as they
    were (a QoS 0 PUBLISH, another id, nothing at all). Now such a record
    is damage: a slot is emptied, a log record skipped, event `damaged`,
    every other message restored."""
    r = run_mp(LFS + r"""
from durable_mqtt.filelog import FileLog
def pub(first, topic, pid, payload):
    return bytes([first, 2 + len(topic) + (2 if pid is not None else 0) + len(payload)]) + \
        len(topic).to_bytes(2, "big") + topic + (pid.to_bytes(2, "big") if pid is not None else b"") + payload
BAD = {"qos0": (9, pub(0x30, b"t", None, b"X")),
       "qos3": (9, pub(0x36, b"t", 9, b"X")),
       "other_id": (9, pub(0x32, b"t", 8, b"X")),
       "not_publish": (9, b"\x82\x06\x00\x09\x00\x01t\x01"),
       "short_length": (9, pub(0x32, b"t", 9, b"X")[:-1]),
       "no_packet": (9, b""),
       "pid_0": (0, pub(0x32, b"t", 0, b"X"))}     # a packet id is never 0 (MQTT-2.3.1-1)
for name, (pid, pkt) in sorted(BAD.items()):
    # the session directory: one slot more
    fresh()
    c, ev = boot()
    c.publish("t", b"A", qos=1)
    c.publish("t", b"B", qos=1)
    c.close()
    b = bytearray(13 + len(pkt))
    b[0:4] = (3).to_bytes(4, "big")
    b[4] = 2
    b[5:7] = (2 + len(pkt)).to_bytes(2, "big")
    b[7:9] = pid.to_bytes(2, "big")
    b[9:9 + len(pkt)] = pkt
    crc.seal(b, 0, 9 + len(pkt))
    with open("/fl/s.d/5", "wb") as f:
        f.write(b)
    c, ev = boot()
    print(name, "dir", ev, payloads(c))
    assert names(ev) == ["damaged"] and payloads(c) == b"AB", (name, ev, payloads(c))
    c.close()
    c, ev = boot()
    assert ev == [] and payloads(c) == b"AB"
    # a log: the record appended between two good ones
    c = MQTTClient("dev", "127.0.0.1", 1, clean_session=False, session_file=FileLog("/fl/log"))
    c.publish("t", b"A", qos=1)
    c.publish("t", b"B", qos=1)
    c.close()
    rec = bytearray(7 + 2 + len(pkt))
    rec[0] = 2
    rec[1:3] = (2 + len(pkt)).to_bytes(2, "big")
    rec[3:5] = pid.to_bytes(2, "big")
    rec[5:5 + len(pkt)] = pkt
    crc.seal(rec, 0, 5 + len(pkt))
    with open("/fl/log", "ab") as f:
        f.write(rec)
    ev = []
    c = MQTTClient("dev", "127.0.0.1", 1, clean_session=False, session_file=FileLog("/fl/log"),
                   event_callback=lambda e, i: ev.append((e, i)))
    print(name, "log", ev, payloads(c))
    assert names(ev) == ["damaged"] and payloads(c) == b"AB", (name, ev, payloads(c))
    try:                                        # the same bytes handed to restore_session()
        c.restore_session(c.save_session() + rec)
        raise AssertionError("restored")
    except ValueError as x:
        assert "damaged" in str(x), x
    assert payloads(c) == b"AB"
    vfs.umount("/fl")
# an OUT_REL slot of packet id 0, and one with bytes after its id
for rel in (b"\x00\x00", b"\x00\x09X"):
    fresh()
    c, ev = boot()
    c.publish("t", b"A", qos=1)
    c.close()
    b = bytearray(11 + len(rel))
    b[0:4] = (3).to_bytes(4, "big")
    b[4] = 4
    b[5:7] = len(rel).to_bytes(2, "big")
    b[7:7 + len(rel)] = rel
    crc.seal(b, 0, 7 + len(rel))
    with open("/fl/s.d/4", "wb") as f:
        f.write(b)
    c, ev = boot()
    assert names(ev) == ["damaged"] and c.pending() == 1, (rel, ev, c.pending())
    vfs.umount("/fl")
print("OK")
""")
    assert "OK" in r.stdout, r.stdout


def test_an_in_qos2_record_whose_body_is_not_one_packet_id_is_damage():
    """An IN_QOS2 record (type 5) with a good CRC and a body of 0 or 3
    bytes, or of id 0: the format gives it 2 bytes, a non-zero id. The
    empty one was read with its CRC bytes as the id, and a QoS 2 message
    the broker sent later with that id was acknowledged, never delivered.
    Now each is damage: restore_session() raises ValueError, as for an
    OUT_REL record of that shape (above), and the client keeps its state."""
    r = run_mp(r"""
from durable_mqtt import MQTTClient, crc
c = MQTTClient("dev", "127.0.0.1", 1, clean_session=False)
base = c.save_session()
for body in (b"", b"\x00\x07X", b"\x00\x00"):
    rec = bytearray(7 + len(body))
    rec[0] = 5
    rec[1:3] = len(body).to_bytes(2, "big")
    rec[3:3 + len(body)] = body
    crc.seal(rec, 0, 3 + len(body))
    try:
        c.restore_session(base + rec)
        raise AssertionError("restored %r" % body)
    except ValueError as x:
        assert "damaged" in str(x), x
    assert c.engine.rx2_n == 0, body
rec = bytearray(b"\x05\x00\x02\x00\x07....")
crc.seal(rec, 0, 5)
c.restore_session(base + rec)          # a whole one: held
assert c.engine.rx2_n == 1 and c.engine.rx2[0] == 7
print("OK")
""")
    assert "OK" in r.stdout, r.stdout


def test_a_stored_subscription_no_broker_takes(tmp_path):
    """A SUB record (good CRC) whose topic filter subscribe() would refuse
    ("a/#/b": no writer of this library stores one). When the broker had
    lost the session, the resubscribe raised ValueError out of connect(),
    at every connect, and the debt stayed on flash: the client could never
    make its other subscriptions. It is forgotten now, as a filter the
    broker refuses is; the others are made again and the session goes on."""
    from fakebroker import FakeBroker, connack, pkt, u16
    path = str(tmp_path / "s")
    run_mp(r"""
from durable_mqtt import MQTTClient, subs
c = MQTTClient("dev", "127.0.0.1", 1, clean_session=False, session_file=%r)
c.engine.has_state = True            # (a session held, as after a CONNACK: the broker loses it)
subs.subscribed(c.engine, b"a/#/b", 1, 0)
subs.subscribed(c.engine, b"ok/x", 1, 0)
c.journal.checkpoint()
c.publish("t", b"A", qos=1)
c.close()
""" % path)
    fb = FakeBroker([("send", connack(4, sp=0)), ("recv",),
                     ("reply", lambda got: b"".join(pkt(0x90, body[:2] + b"\x01") for f, body in got if f == 0x82)),
                     ("recv",), ("send", pkt(0x40, u16(1)))])
    r = run_mp(r"""
from durable_mqtt import MQTTClient
ev = []
def boot():
    return MQTTClient("dev", "127.0.0.1", %d, clean_session=False, session_file=%r, timeout_ms=3000,
                      event_callback=lambda e, i: ev.append((e, i)))
c = boot()
print("connect", c.connect())
print("subs", [s[0] for s in c.engine.subs])
c.disconnect()
c = boot()
print("after", [s[0] for s in c.engine.subs], c.pending())
""" % (fb.port, path))
    fb.done = True
    fb.join()
    assert "subs [b'ok/x']" in r.stdout and "after [b'ok/x']" in r.stdout, r.stdout
    sent = [f for f, _ in fb.conns[0]]
    assert 0x82 in sent, sent                       # ok/x subscribed again


def test_stored_subscription_options_no_broker_takes():
    """SUB records (good CRC) whose options or subscription identifier the
    protocol forbids: QoS 3, MQTT 3.1.1 with bits other than the QoS set
    (MQTT-3.8.3-4) or a subscription identifier, MQTT 5 with Retain
    Handling 3 or bits 6-7 set, an identifier past 268,435,455. They were
    restored and sent as they were at the next resubscribe, a SUBSCRIBE
    the broker must take for malformed and close the connection over, at
    every connect. They are damage now: skipped, event `damaged`, the
    other subscriptions and the messages restored."""
    r = run_mp(LFS + r"""
def h_with(v, subs):
    cid = b"dev"
    b = bytearray(b"DMQS\x01")
    hd = bytearray(3 + 14 + len(cid) + 4)
    hd[0] = 1
    hd[1:3] = (14 + len(cid)).to_bytes(2, "big")
    hd[3] = v
    hd[5:9] = b"\xff\xff\xff\xff"
    hd[15:17] = len(cid).to_bytes(2, "big")
    hd[17:17 + len(cid)] = cid
    crc.seal(hd, 0, len(hd) - 4)
    b += hd
    for f, opts, sid in subs:
        r = bytearray(3 + 5 + len(f) + 4)
        r[0] = 7
        r[1:3] = (5 + len(f)).to_bytes(2, "big")
        r[3:7] = sid.to_bytes(4, "big")
        r[7] = opts
        r[8:8 + len(f)] = f
        crc.seal(r, 0, len(r) - 4)
        b += r
    return b
CASES = [(4, b"q3", 3, 0), (4, b"nolocal", 1 | 4, 0), (4, b"sid", 1, 5),
         (5, b"q3", 3, 0), (5, b"rh3", 1 | 0x30, 0), (5, b"bit6", 1 | 0x40, 0), (5, b"bigsid", 1, 268435456)]
for v, f, opts, sid in CASES:
    fresh()
    c, ev = boot(version=v)
    c.publish("t", b"A", qos=1)
    c.close()
    good = (b"ok", 1 | (4 if v == 5 else 0), 7 if v == 5 else 0)
    with open("/fl/s.d/h", "wb") as fh:
        fh.write(h_with(v, [good, (f, opts, sid)]))
    c, ev = boot(version=v)
    print(v, f, ev, c.engine.subs)
    assert names(ev) == ["damaged"] and c.engine.subs == [good] and payloads(c) == b"A", (v, f, ev, c.engine.subs)
    vfs.umount("/fl")
print("OK")
""")
    assert "OK" in r.stdout, r.stdout


OVERSIZE = r"""
import os
from durable_mqtt import MQTTClient
P = %(path)r
ev = []
def boot(**kw):
    del ev[:]
    return MQTTClient("dev", "127.0.0.1", 1, clean_session=False, session_file=P,
                      event_callback=lambda e, i: ev.append(e), **kw)
def payloads(c):
    e = c.engine
    return [bytes(e.arena[e.off[e.index(k)] + e.len[e.index(k)] - 1:][:1]) for k in range(e.count)]
def slots():
    return sorted(n for n in os.listdir(P + ".d") if n.isdigit())
def big(name, n):
    with open(name, "wb") as f:
        for k in range(n // 1000):
            f.write(bytes((k * 7 + i) & 0xFF for i in range(1000)))
CASE = %(case)r
if CASE in ("whole", "damaged"):
    c = boot(buf_size=65535)
    c.publish("t", b"x" * 60000, qos=1)          # written while buf_size was large
    c.publish("t", b"A", qos=1)
    if CASE == "damaged":
        name = P + ".d/0"
        with open(name, "rb") as f:
            d = bytearray(f.read())
        d[30000] ^= 1
        with open(name, "wb") as f:
            f.write(d)
    del c
elif CASE in ("stray", "ids"):
    c = boot()
    c.publish("t", b"A", qos=1)
    c.publish("t", b"B", qos=1)
    del c
    big(P if CASE == "stray" else P + ".d/i0", 300000)
print("WRITTEN")
""" 

OVERSIZE_BOOT = r"""
import gc
gc.collect()
c = boot()                                       # buf_size 1024, a 160,000-byte heap
print("BOOTED", ev, payloads(c), os.stat(P + ".bad")[6] if CASE == "stray" else "")
"""


def test_a_file_too_large_for_the_heap_is_set_aside_or_emptied_never_a_boot_loop(tmp_path):
    """Files larger than the heap can read at boot: a slot written while
    buf_size was larger (whole, or damaged), a stray 300 KB file where a
    0.1.0 session file would be, a 300 KB file as the incoming QoS 2 ids.
    Each was read whole, so the constructor raised MemoryError at every
    boot (a review found it). Now a slot's CRC is checked through the
    receive buffer: a damaged one is emptied (`damaged`, the rest kept); a
    whole one is restored when the heap holds it (test_outbox_grow.py),
    and here, where it does not, the session is set aside (`discarded`,
    not a MemoryError at every boot); the stray
    file is renamed PATH.bad (`discarded`) and the directory restored; an
    id file larger than any record can say is damage."""
    want = {"whole": "BOOTED ['discarded'] []",
            "damaged": "BOOTED ['damaged'] [b'A']",
            "stray": "BOOTED ['discarded'] [b'A', b'B'] 300000",
            "ids": "BOOTED ['damaged'] [b'A', b'B']"}
    for case, expect in want.items():
        path = str(tmp_path / case)
        prog = OVERSIZE % {"path": path, "case": case}
        assert "WRITTEN" in run_mp(prog).stdout
        r = run_mp(prog.replace('CASE in ("whole", "damaged")', "False").replace(
            'CASE in ("stray", "ids")', "False") + OVERSIZE_BOOT, heapsize=160000, check=False)
        assert expect in r.stdout, (case, r.stdout + r.stderr)


def test_a_failed_write_of_the_incoming_qos2_ids_keeps_the_newer_copy_out_of_the_next_on_fat():
    """The incoming QoS 2 ids awaiting PUBREL go to the older of i0 / i1, so
    the newer stays intact (filestore.write_ids). The turn moved on before
    the write: after a write that failed (an SD card's write error, the
    program going on), the next went to the file holding the newest intact
    copy, and FAT's writes are not atomic: a power cut in that one left
    neither, and after the reboot a resent QoS 2 PUBLISH would be delivered
    a second time (MQTT-4.3.3-2). Swept over where the error and the cut
    fall."""
    r = run_mp(FAT_SECTORS + r"""
tx = bytearray(16)
def boot():
    return MQTTClient("dev", "127.0.0.1", 1, clean_session=False, session_file="/fat/s")
dev = fat(256)
c = boot()
for pid in (101, 102):
    c.engine.ack_incoming(2, pid, 0, tx)
    c.journal.write_ids()
c.close()
vfs.umount("/fat")
img = bytes(dev.data)
lost = []
for n1 in range(4):
    for n2 in range(4):
        dev = Sectors(256)
        dev.data[:] = img
        vfs.mount(vfs.VfsFat(dev), "/fat")
        c = boot()
        dev.fail = OSError(5)            # a write error from the n1-th sector write on
        dev.left = n1
        c.engine.ack_incoming(2, 103, 0, tx)
        try:
            c.journal.write_ids()
        except OSError:
            pass
        dev.fail = Cut                   # the card works again; the power goes at its n2-th
        dev.left = n2
        c.engine.ack_incoming(2, 104, 0, tx)
        try:
            c.journal.write_ids()
        except (OSError, Cut):
            pass
        reboot(dev)
        e = boot().engine
        ids = sorted(e.rx2[:e.rx2_n])
        vfs.umount("/fat")
        if not (101 in ids and 102 in ids):
            lost.append((n1, n2, ids))
print("LOST", lost)
""")
    assert "LOST []" in r.stdout, r.stdout
