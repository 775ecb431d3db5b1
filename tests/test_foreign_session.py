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
