"""tools/session_inspect.py against session states written by the library.

Every state is made by the real library in the unix port: a file-backend
session file on the host filesystem, or a raw flash ring on the NOR flash
test device kept in an image file (tests/mp/norflash.py, path=...). The
inspector (CPython, its own decoder) must report what the library itself
reads back (store.parse, RingStore.load), and exit 0 / 1 / 2 as
documented. No broker: messages are published while never connected, and
the acknowledgement paths are driven with a fake wire where a test needs
every record type.
"""
import json
import random
import subprocess
import sys

import pytest

from conftest import ROOT, run_mp

TOOL = ROOT / "tools" / "session_inspect.py"


def inspect(*args):
    """Run the inspector; returns (exit status, stdout, stderr)."""
    r = subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True, timeout=30)
    return r.returncode, r.stdout, r.stderr


def inspect_json(*args):
    rc, out, err = inspect("--json", *args)
    return rc, json.loads(out)


# What the library reads back, as JSON, for comparison with the inspector.
LIB_READ = r"""
import json, sys
from durable_mqtt.stream import parse as parse_state
if sys.argv[1] == "dir":
    # The directory as the library restores it, and its header file parsed.
    from durable_mqtt import load
    from durable_mqtt.session import Session
    st = parse_state(open(sys.argv[2] + ".d/h", "rb").read())
    e = Session(st.version == 5, st.client_id, 40, 32, 8192, 64, 16, 1024)
    j = load.open_journal(sys.argv[2], e, None, 0, lambda ev, info: None)
    out = []
    for k in range(e.count):
        i = e.index(k)
        s = e.slot(k)
        if s:
            p = bytearray(e.arena[e.off[i]:e.off[i] + e.len[i]])
            out.append([e.pid[i], "".join("%02x" % b for b in p) if s == 1 else None])
    print(json.dumps({"client_id": e.cid.decode(), "version": st.version, "flags": st.flags,
                      "expiry": st.expiry, "saved_min": st.saved_min, "next_pid": e.last_pid,
                      "subs": [[f.decode(), o, s] for f, o, s in e.subs], "out": out,
                      "in_qos2": sorted(e.rx2[k] for k in range(e.rx2_n)), "torn": False, "bytes": 0}))
    raise SystemExit
if sys.argv[1] == "ring":
    from norflash import NorFlash
    from durable_mqtt.ring import RingStore
    dev = NorFlash(int(sys.argv[3]), int(sys.argv[4]), path=sys.argv[2])
    data = RingStore(dev, prog_size=int(sys.argv[5])).load()
    dev.close()
else:
    data = open(sys.argv[2], "rb").read()
st = parse_state(data)
print(json.dumps({"client_id": st.client_id.decode(), "version": st.version, "flags": st.flags,
                  "expiry": st.expiry, "saved_min": st.saved_min, "next_pid": st.next_pid,
                  "subs": [[f.decode(), o, s] for f, o, s in st.subs],
                  "out": [[pid, None if p is None else "".join("%02x" % b for b in p)] for pid, p in st.out],
                  "in_qos2": st.rx2, "torn": st.torn, "bytes": len(data)}))
"""


def lib_read(*args):
    return json.loads(run_mp(LIB_READ, args=[str(a) for a in args]).stdout.strip().splitlines()[-1])


def assert_same_as_library(doc, lib):
    """The inspector's JSON against the library's own reading."""
    assert doc["valid"] is True
    h = doc["header"]
    assert h["client_id"] == lib["client_id"]
    assert h["protocol"] == lib["version"]
    assert h["flags"] == lib["flags"]
    assert h["session_expiry"] == lib["expiry"]
    assert h["saved_min"] == lib["saved_min"]
    assert h["last_pid"] == lib["next_pid"]
    assert [[s["filter"], s["options"], s["sub_id"]] for s in doc["subscriptions"]] == lib["subs"]
    assert [[m["pid"], m["packet_hex"]] for m in doc["outgoing"]] == lib["out"]
    assert doc["incoming_qos2"] == lib["in_qos2"]
    assert doc["torn"] == lib["torn"]
    assert doc["session_bytes"] == lib["bytes"]


# ---------------------------------------------------------------- state makers

PUBLISH_FEW = r"""
import sys
from durable_mqtt.client import MQTTClient
from durable_mqtt.filelog import FileLog
where = FileLog(sys.argv[1]) if sys.argv[2] == "log" else sys.argv[1]
c = MQTTClient("sensor-7", "localhost", clean_session=False, session_file=where)
print(c.publish("plant/line1/temp", b"21.5", qos=1))
print(c.publish("plant/line1/blob", bytes(range(256)) * 2, qos=2, retain=True))
print(c.publish("plant/line1/qos0", b"not kept", qos=0))
print(c.publish(b"plant/line1/status", "\u00e9t\u00e9 ok".encode(), qos=1))
"""


@pytest.fixture
def session_file(tmp_path):
    # The log layout (filelog.py): one file, byte by byte.
    path = tmp_path / "session.dat"
    out = run_mp(PUBLISH_FEW, args=[str(path), "log"]).stdout.split()
    assert out == ["1", "2", "None", "3"]
    return path


# Every record type through the library's real code paths: the session
# engine (session.py) fed the broker's answers, its changes logged by the
# journal (store.py) to a file (filelog.py); no network.
ENGINE = r"""
from durable_mqtt.session import Session
from durable_mqtt import subs
from durable_mqtt.store import LogJournal
tx = bytearray(64)

def engine(cid, v5, backend, expiry):
    e = Session(v5, cid, 40, 32, 8192, 16, 16, 1024)
    e.expiry = expiry
    j = LogJournal(backend, e)
    j.checkpoint()
    return e, j

def commit(e, j):
    # what the client does after each engine call: the record, then the ack
    if e.rec:
        j.put()
    if e.done_pid:
        j.acked(e.done_pid)
        e.done_pid = 0

def publish(e, j, topic, payload, qos, retain=False):
    pid = e.accept(topic, payload, qos, retain, b"" if e.v5 else None, 0, 0)
    commit(e, j)
    return pid

def send_all(e):
    while e.next_out(0, tx):
        pass
"""

ALL_RECORDS = ENGINE + r"""
import sys
from durable_mqtt.filelog import FileLog
VER = int(sys.argv[2])
e, j = engine(b"dev-all", VER == 5, FileLog(sys.argv[1]), 86400 if VER == 5 else 0xFFFFFFFF)
# What a granted subscribe() leaves behind (subscribe() itself needs a broker).
subs.subscribed(e, b"cmd/#", 2 | (4 if VER == 5 else 0), 7 if VER == 5 else 0)
j.checkpoint()
for i in range(1, 7):
    publish(e, j, b"out/%d" % i, b"payload-%d" % i, 1 + (i % 2 == 0), i == 3)
send_all(e)
e.puback(1, 0)              # OUT_ACKED, lazy: rides on the next record
commit(e, j)
e.pubrec(2, 0, tx)          # OUT_REL
commit(e, j)
e.pubrec(4, 0, tx)          # OUT_REL
commit(e, j)
e.pubcomp(4)                # OUT_ACKED
commit(e, j)
for pid in (100, 101):      # IN_QOS2
    assert e.incoming(2, pid)
    e.ack_incoming(2, pid, 0, tx)
    commit(e, j)
e.pubrel(100, tx)           # IN_REL
commit(e, j)
j.flush()
print("ok")
"""


RING_WRITER = ENGINE + r"""
import sys
from norflash import NorFlash
from durable_mqtt.ring import RingStore
from durable_mqtt.stream import parse
path, B, N, P, start, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
acks = int(sys.argv[7]) if len(sys.argv) > 7 else 0
dev = NorFlash(B, N, prog_size=P, path=path)
ring = RingStore(dev, prog_size=P, max_append=1100)
data = ring.load()
e, j = engine(b"ring-dev", True, ring, 3600)
if data:
    from durable_mqtt.restore import restore
    restore(e, parse(data), 0)        # a reboot: restore, checkpoint, then appends
    j.checkpoint()
for i in range(start, start + count):
    pid = publish(e, j, b"ring/%04d" % i, b"m%04d" % i + bytes(i % 50), 1)
    if acks and i % acks:
        send_all(e)                   # "sends" it, then the broker acknowledges
        e.puback(pid, 0)
        commit(e, j)
j.flush()
dev.close()
print("ok", j.checkpoints, dev.erases)
"""


def write_ring(path, start, count, B=4096, N=16, P=32, acks=0):
    out = run_mp(RING_WRITER, args=[str(x) for x in (path, B, N, P, start, count, acks)]).stdout.split()
    assert out[0] == "ok"
    return int(out[1]), int(out[2])


# ---------------------------------------------------------------- file backend

def test_file_session(session_file):
    rc, doc = inspect_json(session_file)
    assert rc == 0
    h = doc["header"]
    assert h["client_id"] == "sensor-7"
    assert h["protocol"] == 4 and h["protocol_name"] == "MQTT 3.1.1"
    assert h["session_expiry"] == 0xFFFFFFFF and h["session_expiry_never"]
    assert h["last_pid"] == 3 and h["next_new_pid"] == 4
    out = doc["outgoing"]
    assert [m["pid"] for m in out] == [1, 2, 3]              # QoS 0 is never stored
    assert [m["topic"] for m in out] == ["plant/line1/temp", "plant/line1/blob", "plant/line1/status"]
    assert [m["qos"] for m in out] == [1, 2, 1]
    assert [m["retain"] for m in out] == [False, True, False]
    assert [m["dup"] for m in out] == [False, False, False]
    assert {m["state"] for m in out} == {"publish"}
    assert bytes.fromhex(out[0]["payload_hex"]) == b"21.5"
    assert bytes.fromhex(out[1]["payload_hex"]) == bytes(range(256)) * 2
    assert out[2]["payload_text"] == "\u00e9t\u00e9 ok"
    assert doc["subscriptions"] == [] and doc["incoming_qos2"] == []
    assert doc["diagnostics"] == [] and doc["torn"] is False
    assert_same_as_library(doc, lib_read("file", session_file))

    rc, text, _ = inspect(session_file)
    assert rc == 0
    assert "'sensor-7'" in text and "never" in text and "plant/line1/blob" in text
    assert "'21.5'" in text and "result: valid" in text

    rc, text, _ = inspect("--hex", session_file)
    assert rc == 0
    assert "44 4d 51 53 01" in text and "OUT_PUB" in text and "HEADER" in text


def test_directory_session(tmp_path):
    # The layout a path session_file gets (filestore.py): the inspector reads
    # the directory as the library restores it, given the device's path.
    path = tmp_path / "session.dmq"
    out = run_mp(PUBLISH_FEW, args=[str(path), "dir"]).stdout.split()
    assert out == ["1", "2", "None", "3"]
    rc, doc = inspect_json(path)
    assert rc == 0, doc
    assert doc["source"]["mode"] == "directory"
    assert [sl["state"] for sl in doc["source"]["directory"]["slots"]] == ["message"] * 3
    assert [m["topic"] for m in doc["outgoing"]] == ["plant/line1/temp", "plant/line1/blob", "plant/line1/status"]
    assert bytes.fromhex(doc["outgoing"][1]["payload_hex"]) == bytes(range(256)) * 2
    assert doc["diagnostics"] == []
    lib = lib_read("dir", path)
    doc["session_bytes"] = 0
    assert_same_as_library(doc, lib)
    rc, text, _ = inspect(path)
    assert rc == 0 and "session directory" in text and "OUT_PUB packet id 2" in text
    # A damaged slot: reported, its message gone (as the library reads it).
    slot = path.parent / "session.dmq.d" / "1"
    slot.write_bytes(slot.read_bytes()[:-1] + b"\x00")
    rc, doc = inspect_json(path.parent / "session.dmq.d")
    assert rc == 0 and [m["pid"] for m in doc["outgoing"]] == [1, 3]
    assert any(d["kind"] == "damaged_slot" for d in doc["diagnostics"])
    # A good CRC round a record the library empties as damage (dirload.py):
    # an OUT_PUB whose PUBLISH carries another packet id.
    import zlib
    slot = next(f for f in (path.parent / "session.dmq.d").iterdir() if f.name.isdigit() and f.name != "1"
                and f.read_bytes()[7:9] == b"\0\3")
    d = bytearray(slot.read_bytes())
    assert d[4] == 0x02, d[:9]
    d[7:9] = b"\0\x09"
    d[-4:] = zlib.crc32(bytes(d[:-4])).to_bytes(4, "big")
    slot.write_bytes(bytes(d))
    rc, doc = inspect_json(path)
    assert rc == 0 and [m["pid"] for m in doc["outgoing"]] == [1], doc["outgoing"]
    assert {sl["slot"]: sl["state"] for sl in doc["source"]["directory"]["slots"]}[int(slot.name)] == "damaged"
    # No header: no session.
    (path.parent / "session.dmq.d" / "h").unlink()
    rc, text, _ = inspect(path)
    assert rc == 1 and "no session" in text and "ok:" not in text


def test_directory_with_an_unreadable_slot_is_reported_not_a_traceback(tmp_path):
    # A folder where a slot file belongs (the library fails writing that
    # slot): a clear "cannot be read" and exit 1, in text and JSON, where
    # the inspector died in IsADirectoryError.
    path = tmp_path / "session.dmq"
    run_mp(PUBLISH_FEW, args=[str(path), "dir"])
    slot = path.parent / "session.dmq.d" / "1"
    slot.unlink()
    slot.mkdir()
    rc, text, err = inspect(path)
    assert rc == 1 and "Traceback" not in err, err
    assert "slot 1 cannot be read" in text and "UNUSABLE: slot file(s) 1" in text, text
    rc, doc = inspect_json(path)
    assert rc == 1 and doc["valid"] is False and "slot file(s) 1" in doc["error"]
    assert [m["pid"] for m in doc["outgoing"]] == [1, 3]          # the readable slots, still listed
    assert any(d["kind"] == "unreadable_slot" for d in doc["diagnostics"])


def test_missing_file_is_reported_without_an_ok(tmp_path):
    rc, text, _ = inspect(tmp_path / "nothing.dat")
    assert rc == 1 and "cannot read" in text and "ok:" not in text


def test_flag_of_a_state_saved_at_disconnect_is_known(tmp_path):
    path = tmp_path / "off.dat"
    run_mp(r"""
import sys
from durable_mqtt.client import MQTTClient
from durable_mqtt.filelog import FileLog
c = MQTTClient("off", "localhost", clean_session=False, session_file=FileLog(sys.argv[1]))
c.engine.has_state = True            # (as after a CONNACK: a session held)
c.disconnect()                       # saves at DISCONNECT: header flag 0x02
""", args=[str(path)])
    rc, doc = inspect_json(path)
    assert rc == 0 and doc["header"]["flags"] == 2 and doc["header"]["saved_at_disconnect"] is True
    assert doc["header"]["no_session"] is False and doc["diagnostics"] == []


def test_flag_of_a_state_that_holds_no_session_is_known(tmp_path):
    # Header flag 0x08 (with 0x02): saved at a DISCONNECT that held no
    # session (here none was ever made; MQTT 5 disconnect(session_expiry=0)
    # ends one): messages for the next session, no expiry to judge.
    path = tmp_path / "none.dat"
    run_mp(r"""
import sys
from durable_mqtt.client import MQTTClient
from durable_mqtt.filelog import FileLog
c = MQTTClient("none", "localhost", clean_session=False, session_file=FileLog(sys.argv[1]))
c.publish("t", b"m", qos=1)
c.disconnect()
""", args=[str(path)])
    rc, doc = inspect_json(path)
    assert rc == 0 and doc["header"]["flags"] == 0x0A and doc["header"]["no_session"] is True
    assert len(doc["outgoing"]) == 1 and doc["diagnostics"] == []
    rc, text, _ = inspect(path)
    assert rc == 0 and "saved-at-disconnect no-session" in text


def test_flag_of_subscriptions_owed_is_known(tmp_path):
    # Header flag 0x04: a lost session's subscriptions not all made again
    # (connect.py stores it before resubscribing).
    path = tmp_path / "owed.dat"
    run_mp(r"""
import sys
from durable_mqtt.client import MQTTClient
from durable_mqtt.filelog import FileLog
from durable_mqtt import subs
c = MQTTClient("owed", "localhost", clean_session=False, session_file=FileLog(sys.argv[1]))
subs.subscribed(c.engine, b"cmd/a", 1, 0)
c.engine.has_state = True            # (as after a CONNACK: a session held)
c.engine.resub_owed = True
c.journal.checkpoint()
""", args=[str(path)])
    rc, doc = inspect_json(path)
    assert rc == 0 and doc["header"]["flags"] == 4 and doc["header"]["subscriptions_owed"] is True
    assert doc["diagnostics"] == []
    rc, text, _ = inspect(path)
    assert rc == 0 and "subscriptions-owed" in text


@pytest.mark.parametrize("ver", [4, 5])
def test_every_record_type(tmp_path, ver):
    path = tmp_path / "all.dat"
    assert run_mp(ALL_RECORDS, args=[str(path), str(ver)]).stdout.split()[0] == "ok"
    rc, doc = inspect_json(path)
    assert rc == 0
    names = [r["name"] for r in doc["records"]]
    for n in ("HEADER", "SUB", "OUT_PUB", "OUT_ACKED", "OUT_REL", "IN_QOS2", "IN_REL"):
        assert n in names
    assert doc["header"]["client_id"] == "dev-all"
    assert doc["header"]["session_expiry"] == (86400 if ver == 5 else 0xFFFFFFFF)
    subs = doc["subscriptions"]
    assert [(s["filter"], s["qos"], s["no_local"], s["sub_id"]) for s in subs] == \
        [("cmd/#", 2, ver == 5, 7 if ver == 5 else 0)]
    out = doc["outgoing"]
    # 1 PUBACKed, 4 PUBCOMPed: gone; 2 past PUBREC: PUBREL owed, in its place.
    # the PUBREL owed comes last: PUBRELs in the order of their PUBRECs (MQTT-4.6.0-4)
    assert [(m["pid"], m["state"]) for m in out] == [(3, "publish"), (5, "publish"), (6, "publish"), (2, "pubrel")]
    assert [m.get("topic") for m in out] == ["out/3", "out/5", "out/6", None]
    assert out[0]["retain"] is True and out[2]["qos"] == 2
    assert bytes.fromhex(out[1]["payload_hex"]) == b"payload-5"
    assert doc["incoming_qos2"] == [101]
    assert doc["diagnostics"] == []
    assert_same_as_library(doc, lib_read("file", path))

    rc, text, _ = inspect(path)
    assert "PUBREL owed" in text and "awaiting PUBREL (1): 101" in text
    assert "no local, sub id 7" in text if ver == 5 else "cmd/#" in text


def test_truncated_file_is_a_torn_tail(session_file, tmp_path):
    data = session_file.read_bytes()
    cut = tmp_path / "cut.dat"
    cut.write_bytes(data[:-10])                      # the last append torn
    rc, doc = inspect_json(cut)
    assert rc == 0 and doc["valid"] and doc["torn"]
    assert [m["pid"] for m in doc["outgoing"]] == [1, 2]
    (d,) = doc["diagnostics"]
    assert d["level"] == "warning" and d["kind"] == "torn_tail"
    assert_same_as_library(doc, lib_read("file", cut))
    rc, text, _ = inspect(cut)
    assert rc == 0 and "torn append" in text and "warning" in text

    # Cut inside a record header (fewer than 3 bytes left).
    last = doc["records"][-1]
    cut.write_bytes(data[:last["offset"] + last["size"] + 2])
    rc, doc = inspect_json(cut)
    assert rc == 0 and doc["torn"] and doc["diagnostics"][0]["kind"] == "torn_tail"


def test_bad_crc_in_the_middle(session_file, tmp_path):
    data = bytearray(session_file.read_bytes())
    rc, doc = inspect_json(session_file)
    second = doc["records"][2]                       # the OUT_PUB of pid 2
    data[second["offset"] + 20] ^= 0x40
    bad = tmp_path / "bad.dat"
    bad.write_bytes(data)
    rc, doc = inspect_json(bad)
    assert rc == 0 and doc["torn"]
    assert [m["pid"] for m in doc["outgoing"]] == [1]   # the library stops there too
    (d,) = doc["diagnostics"]
    assert d["kind"] == "bad_crc" and d["offset"] == second["offset"]
    assert d["intact_after"] == 1                        # pid 3's record is intact but lost
    assert "bad CRC at offset %d" % second["offset"] in d["message"]
    assert_same_as_library(doc, lib_read("file", bad))


def test_unknown_record_is_skipped(session_file, tmp_path):
    import zlib
    rec = bytes([0x7E, 0, 3]) + b"new"
    rec += zlib.crc32(rec).to_bytes(4, "big")
    f = tmp_path / "newer.dat"
    f.write_bytes(session_file.read_bytes() + rec)
    rc, doc = inspect_json(f)
    assert rc == 0 and not doc["torn"]
    (d,) = doc["diagnostics"]
    assert d["kind"] == "unknown_record" and d["type"] == 0x7E
    assert len(doc["outgoing"]) == 3
    assert_same_as_library(doc, lib_read("file", f))    # the library skips it as well


def _record(kind, body):
    import zlib
    rec = bytes([kind]) + len(body).to_bytes(2, "big") + body
    return rec + zlib.crc32(rec).to_bytes(4, "big")


def _publish(qos, pid, topic=b"t", payload=b"x"):
    body = len(topic).to_bytes(2, "big") + topic + (pid.to_bytes(2, "big") if qos else b"") + payload
    return bytes([0x30 | qos << 1, len(body)]) + body


def test_records_the_library_drops_as_damage_are_not_listed(session_file, tmp_path):
    # Good CRCs, contents no writer of the library makes (docs/session-format.md):
    # the library skips each and reports `damaged`; the inspector listed them
    # as held messages and subscriptions.
    pid = (7).to_bytes(2, "big")
    bad = [_record(0x02, b"\0\0" + _publish(1, 0)),            # OUT_PUB of packet id 0
           _record(0x02, pid + _publish(0, 0)),                 # a QoS 0 PUBLISH
           _record(0x02, pid + _publish(1, 8)),                 # carrying another id
           _record(0x04, b"\0\0"),                              # OUT_REL of id 0
           _record(0x04, pid + b"\0"),                          # OUT_REL of 3 bytes
           _record(0x07, bytes(4) + b"\x03" + b"a/b"),          # SUB with QoS 3
           _record(0x07, (5).to_bytes(4, "big") + b"\x01a/c"),  # 3.1.1 SUB with an identifier
           _record(0x07, b"\0\0\0\x05"),                         # SUB with no options byte
           _record(0x07, b"")]      # an empty SUB, last: the library's parse read past the end (IndexError, every boot)
    f = tmp_path / "damaged.dat"
    f.write_bytes(session_file.read_bytes() + b"".join(bad))
    rc, doc = inspect_json(f)
    assert rc == 0 and doc["header"]["protocol"] == 4, doc["header"]
    kinds = [d["kind"] for d in doc["diagnostics"]]
    assert kinds.count("damaged_record") == len(bad), doc["diagnostics"]
    assert set(kinds) <= {"damaged_record", "malformed_record"}, doc["diagnostics"]    # (short bodies: both)
    assert len(doc["outgoing"]) == 3 and doc["subscriptions"] == []
    assert_same_as_library(doc, lib_read("file", f))    # what the library keeps
    rc, out, err = inspect(f)
    assert rc == 0 and "Traceback" not in out + err and "damaged" in out, out


def test_a_saved_time_past_the_year_9999_is_a_warning_not_a_traceback(session_file, tmp_path):
    data = bytearray(session_file.read_bytes())
    h = 5 + 3                                   # the magic, then the header record's body
    data[h + 6:h + 10] = b"\xff\xff\xff\xff"     # saved_min
    import zlib
    n = int.from_bytes(data[6:8], "big")
    data[8 + n:12 + n] = zlib.crc32(bytes(data[5:8 + n])).to_bytes(4, "big")
    f = tmp_path / "future.dat"
    f.write_bytes(bytes(data))
    for args in ((f,), ("--json", f), ("--hex", f)):
        rc, out, err = inspect(*args)
        assert rc == 0 and "Traceback" not in out + err, out + err
        assert "9999" in out, out


def test_corrupted_header_exit_1(session_file, tmp_path):
    data = bytearray(session_file.read_bytes())
    data[12] ^= 0x01                                     # inside the HEADER body: CRC fails
    f = tmp_path / "hdr.dat"
    f.write_bytes(data)
    rc, doc = inspect_json(f)
    assert rc == 1 and not doc["valid"]
    assert "header" in doc["error"]
    assert any(d["kind"] == "bad_header" for d in doc["diagnostics"])
    rc, text, _ = inspect(f)
    assert rc == 1 and "UNUSABLE" in text

    data = bytearray(session_file.read_bytes())
    data[4] = 2                                          # a future format version
    f.write_bytes(data)
    rc, doc = inspect_json(f)
    assert rc == 1 and doc["diagnostics"][0]["kind"] == "future_format"

    data = bytearray(session_file.read_bytes())
    data[0:4] = b"XMQS"                                  # foreign magic
    f.write_bytes(data)
    rc, doc = inspect_json(f)
    assert rc == 1 and doc["diagnostics"][0]["kind"] == "foreign_magic"


def test_random_and_empty_files_exit_1(tmp_path):
    rng = random.Random(1)
    f = tmp_path / "random.bin"
    for n in (1, 4, 5, 64, 4096):
        f.write_bytes(bytes(rng.randrange(256) for _ in range(n)))
        rc, doc = inspect_json(f)
        assert rc == 1 and doc["valid"] is False
    f.write_bytes(b"")
    assert inspect(f)[0] == 1
    f.write_bytes(b"DMQS\x01")                           # magic and nothing else
    assert inspect(f)[0] == 1
    assert inspect(tmp_path / "missing.dat")[0] == 1


def test_usage(session_file):
    rc, out, _ = inspect("--help")
    assert rc == 0 and "--ring" in out and "--block-size" in out and "exit status" in out
    assert inspect()[0] == 2
    assert inspect("--prog-size", "32", session_file)[0] == 2      # needs --ring
    assert inspect("--ring", "--prog-size", "24", session_file)[0] == 2
    # Block ranges that cannot be a ring: a usage error, not "blocks 0..-1 are outside".
    for args in (["--first-block", "-1"], ["--num-blocks", "0"], ["--num-blocks", "-3"]):
        rc, _, err = inspect("--ring", *args, session_file)
        assert rc == 2 and args[0] in err and "Traceback" not in err, (args, err)
    assert inspect("--bogus", session_file)[0] == 2


# ---------------------------------------------------------------- ring backend

@pytest.mark.parametrize("version,word", [(3, "newer"), (1, "older")])
def test_ring_of_another_format_is_named_and_discarded_with_the_event(tmp_path, version, word):
    """Block headers of a later format version (a firmware downgrade), or
    of format 1 (development builds, whose commit CRCs do not cover their
    place): the inspector said only "no formatted ring block", and the
    library took the region for blank and formatted it without a word, its
    5 messages gone. Now the inspector names the version (exit 1) and the
    client reports `discarded` (docs/api.md), then works on a fresh ring."""
    import zlib
    img = tmp_path / "flash.img"
    write_ring(img, 0, 5)
    d = bytearray(img.read_bytes())
    for b in range(0, len(d), 4096):
        if d[b:b + 4] == b"DMQR":
            d[b + 4] = version
            d[b + 12:b + 16] = zlib.crc32(bytes(d[b:b + 12])).to_bytes(4, "big")
    img.write_bytes(d)
    rc, text, err = inspect("--ring", img)
    assert rc == 1 and "Traceback" not in err, err
    assert "flash ring format %d is %s" % (version, word) in text and "format version %d" % version in text, text
    out = run_mp(r"""
import sys
from norflash import NorFlash
from durable_mqtt import MQTTClient
ev = []
c = MQTTClient("ring-dev", "localhost", version=5, clean_session=False,
               session_file=NorFlash(4096, 16, prog_size=32, path=sys.argv[1]),
               event_callback=lambda e, i: ev.append((e, i)))
print(repr(ev))
print(c.pending(), c.publish("t", b"x", qos=1), c.pending())
""", args=[str(img)]).stdout.splitlines()
    assert out[0] == repr([("discarded", {"reason": "flash ring format %d is %s than this library's"
                                                    % (version, word)})]), out
    assert out[1] == "0 1 1", out



def test_ring_image(tmp_path):
    img = tmp_path / "flash.img"
    write_ring(img, 0, 5)
    write_ring(img, 5, 3)          # a reboot: load, checkpoint, then appends
    assert img.stat().st_size == 16 * 4096
    rc, doc = inspect_json("--ring", "--block-size", "4096", img)
    assert rc == 0, doc
    ring = doc["source"]["ring"]
    assert ring["prog_size"] == 32 and ring["blocks"] == 16
    assert ring["appends"]["count"] == 3
    h = doc["header"]
    assert h["client_id"] == "ring-dev" and h["protocol"] == 5 and h["session_expiry"] == 3600
    out = doc["outgoing"]
    assert [m["pid"] for m in out] == list(range(1, 9))
    assert [m["topic"] for m in out] == ["ring/%04d" % i for i in range(8)]
    assert bytes.fromhex(out[7]["payload_hex"]) == b"m0007" + bytes(7)
    assert doc["diagnostics"] == []
    assert_same_as_library(doc, lib_read("ring", img, 4096, 16, 32))

    rc, text, _ = inspect("--ring", "--prog-size", "32", "--hex", img)
    assert rc == 0 and "live checkpoint" in text and "part BEGIN END" in text and "append" in text
    # Written with prog_size 32: as a 256 ring it is foreign.
    rc, doc = inspect_json("--ring", "--prog-size", "256", img)
    assert rc == 1 and any(d["kind"] == "foreign_ring" for d in doc["diagnostics"])
    # Not a session file: the plain mode says so and points at --ring.
    rc, text, _ = inspect(img)
    assert rc == 1 and "--ring" in text


def test_ring_wraps_with_acks_and_prog_size_256(tmp_path):
    img = tmp_path / "pico.img"
    erases = 0
    for k in range(3):             # three boots; 9 in 10 messages acknowledged
        _, e = write_ring(img, 40 * k, 40, B=4096, N=4, P=256, acks=10)
        erases += e
    assert erases >= 8             # the 4-block ring went round twice
    rc, doc = inspect_json("--ring", img)                # prog_size read from the block headers
    assert rc == 0, doc
    assert doc["source"]["ring"]["prog_size"] == 256
    pids = [m["pid"] for m in doc["outgoing"]]
    assert pids and all(m["topic"] == "ring/%04d" % (m["pid"] - 1) for m in doc["outgoing"])
    assert len(pids) == 12                               # every 10th of 120 is left unacknowledged
    assert_same_as_library(doc, lib_read("ring", img, 4096, 4, 256))


def test_ring_torn_append(tmp_path):
    img = tmp_path / "cut.img"
    write_ring(img, 0, 4)
    run_mp(r"""
import sys
from norflash import NorFlash, PowerCut
from durable_mqtt.client import MQTTClient
dev = NorFlash(4096, 16, path=sys.argv[1])
c = MQTTClient("ring-dev", "localhost", clean_session=False, session_file=dev, version=5, session_expiry=3600)
c.publish("ring/a", b"kept", qos=1)
dev.cut_after(1, fraction=0.5)
try:
    c.publish("ring/b", b"torn" * 10, qos=1)
except PowerCut:
    print("cut")
dev.close()
""", args=[str(img)])
    rc, doc = inspect_json("--ring", img)
    assert rc == 0
    assert [m["topic"] for m in doc["outgoing"]][-1] == "ring/a"
    assert any(d["kind"] == "ring_torn_commit" for d in doc["diagnostics"])
    assert_same_as_library(doc, lib_read("ring", img, 4096, 16, 32))
    # The boot after the cut writes on in the same block, past the torn
    # commit: the inspector reads on there, as the library does.
    out = run_mp(r"""
import sys
from norflash import NorFlash
from durable_mqtt.client import MQTTClient
dev = NorFlash(4096, 16, path=sys.argv[1])
c = MQTTClient("ring-dev", "localhost", clean_session=False, session_file=dev, version=5, session_expiry=3600)
c.publish("ring/c", b"after", qos=1)
print(c.stats()["flash_head"])
dev.close()
""", args=[str(img)]).stdout.split()
    rc, doc = inspect_json("--ring", img)
    assert rc == 0, doc
    assert [m["topic"] for m in doc["outgoing"]][-2:] == ["ring/a", "ring/c"]
    torn = [d for d in doc["diagnostics"] if d["kind"] == "ring_torn_commit"]
    assert len(torn) == 1 and torn[0]["block"] == int(out[-1]), (doc["diagnostics"], out)
    assert_same_as_library(doc, lib_read("ring", img, 4096, 16, 32))


def test_ring_commit_number_repeated_after_a_failed_read_back(tmp_path):
    """A commit that landed although its program reported an error, and
    whose read-back failed too, is followed by one with the same number
    (ring-format.md, "Write errors"). The library reads on; the inspector
    read a gap there and dropped the session."""
    from test_ring import FLAKY
    img = tmp_path / "flaky.img"
    run_mp(FLAKY + r"""
import sys
from norflash import NorFlash
from durable_mqtt import MQTTClient
nor = NorFlash(4096, 16, prog_size=32, path=sys.argv[1])
dev = Flaky(nor, fail_read=True)
c = MQTTClient("ring-dev", "localhost", clean_session=False, session_file=dev, version=5, session_expiry=3600)
publish_past_a_failed_program(c, dev, "ring/%d", 4, 2)      # ring/4 raises
nor.close()
""", args=[str(img)])
    rc, doc = inspect_json("--ring", img)
    assert rc == 0, doc
    assert not any(d["kind"] == "ring_seq_gap" for d in doc["diagnostics"]), doc["diagnostics"]
    assert [m["topic"] for m in doc["outgoing"]] == ["ring/%d" % i for i in (0, 1, 2, 3, 5, 6)]
    assert_same_as_library(doc, lib_read("ring", img, 4096, 16, 32))


def test_blank_and_wrong_geometry_ring(tmp_path):
    img = tmp_path / "blank.img"
    img.write_bytes(b"\xff" * 4 * 4096)
    rc, doc = inspect_json("--ring", img)
    assert rc == 1 and not doc["valid"]
    write_ring(img, 0, 2, N=4)
    rc, doc = inspect_json("--ring", "--block-size", "3000", img)
    assert rc == 1
    rc, doc = inspect_json("--ring", "--block-size", "4096", "--num-blocks", "4", img)
    assert rc == 0 and len(doc["outgoing"]) == 2
    # Read as a ring of another size, or over a region that starts at
    # another block: refused with the reason, as the library discards it
    # (tests/test_ring.py), never decoded into an older checkpoint.
    rc, doc = inspect_json("--ring", "--block-size", "4096", "--num-blocks", "3", img)
    assert rc == 1 and any(d["kind"] == "foreign_ring" for d in doc["diagnostics"]), doc
    shifted = tmp_path / "shifted.img"
    shifted.write_bytes(b"\xff" * 4096 + img.read_bytes())      # the region starts a block later
    rc, doc = inspect_json("--ring", "--block-size", "4096", "--first-block", "1", "--num-blocks", "4", shifted)
    assert rc == 0 and len(doc["outgoing"]) == 2, doc
    rc, doc = inspect_json("--ring", "--block-size", "4096", "--first-block", "0", "--num-blocks", "4", shifted)
    assert rc == 1 and any("another block" in d["message"] for d in doc["diagnostics"]), doc


def test_a_log_file_beside_a_directory_without_header_is_what_a_boot_restores(session_file, tmp_path):
    """A 0.1.0 session file PATH beside a PATH.d that has no header yet (the
    first boot of 0.2.0 cut while it moved the file into the directory: the
    slots are written first, "h" last): a boot restores the file's messages
    (load.py reads PATH when PATH.d holds no session). The inspector said
    "UNUSABLE: no session in PATH.d", exit 1, for a session the next boot
    restores whole."""
    import shutil
    path = tmp_path / "session.dmq"
    shutil.copyfile(session_file, path)
    (tmp_path / "session.dmq.d").mkdir()
    # What the library restores from there (on a copy: a boot rewrites it).
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copyfile(path, copy / "session.dmq")
    (copy / "session.dmq.d").mkdir()
    boot = run_mp(r"""
import sys
from durable_mqtt import load
from durable_mqtt.session import Session
e = Session(False, b"sensor-7", 40, 32, 8192, 64, 16, 1024)
load.open_journal(sys.argv[1], e, None, 0, lambda ev, info: print("EVENT", ev))
print("PIDS", *[e.pid[e.index(k)] for k in range(e.count) if e.slot(k)])
""", args=[str(copy / "session.dmq")]).stdout
    assert "PIDS 1 2 3" in boot and "EVENT" not in boot, boot
    for arg in (path, tmp_path / "session.dmq.d"):
        rc, doc = inspect_json(arg)
        assert rc == 0, doc
        assert [m["pid"] for m in doc["outgoing"]] == [1, 2, 3]
        assert any(d["kind"] == "log_file_beside" for d in doc["diagnostics"]), doc["diagnostics"]
        rc, text, err = inspect(arg)
        assert rc == 0 and "result: valid" in text and "plant/line1/blob" in text, text + err
    # A header in the directory wins over the file, as at a boot.
    run_mp(PUBLISH_FEW, args=[str(tmp_path / "other"), "dir"])
    shutil.rmtree(tmp_path / "session.dmq.d")
    shutil.copytree(tmp_path / "other.d", tmp_path / "session.dmq.d")
    rc, doc = inspect_json(path)
    assert rc == 0 and doc["source"]["mode"] == "directory"
    assert not any(d["kind"] == "log_file_beside" for d in doc["diagnostics"])


def test_a_restored_state_not_yet_renamed_is_read_where_a_boot_finds_it(tmp_path):
    """restore_session() writes the state whole into PATH.d.d and renames
    it into place of PATH.d; a rename cut or refused leaves it there, and
    the next boot moves it (load.py, slotmove.rename). The inspector read
    PATH.d, a session the boot replaces."""
    import shutil
    path = tmp_path / "session.dmq"
    run_mp(PUBLISH_FEW, args=[str(path), "dir"])
    d = tmp_path / "session.dmq.d"
    shutil.copytree(d, tmp_path / "session.dmq.d.d")
    for f in d.iterdir():
        if f.name.isdigit():
            f.write_bytes(b"")        # PATH.d: the old session's messages gone
    rc, doc = inspect_json(path)
    assert rc == 0, doc
    assert [m["pid"] for m in doc["outgoing"]] == [1, 2, 3], doc["outgoing"]
    assert any(x["kind"] == "restored_beside" for x in doc["diagnostics"]), doc["diagnostics"]
    boot = run_mp(r"""
import sys
from durable_mqtt import load
from durable_mqtt.session import Session
e = Session(False, b"sensor-7", 40, 32, 8192, 64, 16, 1024)
load.open_journal(sys.argv[1], e, None, 0, lambda ev, info: print("EVENT", ev))
print("PIDS", *[e.pid[e.index(k)] for k in range(e.count) if e.slot(k)])
""", args=[str(path)]).stdout
    assert "PIDS 1 2 3" in boot and "EVENT" not in boot, boot
    assert not (tmp_path / "session.dmq.d.d").exists()
