"""Zero allocation in steady state (API.md): each hot path runs once under
micropython.heap_lock() and once with its gc.mem_alloc() delta measured,
through a real mosquitto, for MQTT 3.1.1 and 5.0.

Steady state means the topic and payload sizes repeat, so a warm-up call
comes first (it may fill the bounded view cache)."""
import pytest

from conftest import run_mp

SCRIPT = r"""
from durable_mqtt import MQTTClient
from testlib import assert_no_alloc
import time

VER = %(ver)d
PORT = %(port)d
SESSION = %(session)r
seen = [0, 0, 0]          # deliveries per QoS, preallocated
sizes = [0]

def cb(topic, msg, retained, qos):
    seen[qos] += 1
    sizes[0] = len(msg)

kw = {}
if SESSION == "file":
    # The log-file layout (filelog.py): one file kept open, nothing allocated.
    from durable_mqtt.filelog import FileLog
    kw = dict(session_file=FileLog("/tmp/noalloc-%%d-%%d.bin" %% (VER, PORT)), clean_session=False)
elif SESSION == "ring":
    from norflash import NorFlash
    kw = dict(session_file=NorFlash(4096, 16, prog_size=32), clean_session=False, ring_prog_size=32)
c = MQTTClient("noalloc%%d%%s" %% (VER, SESSION or ""), "127.0.0.1", PORT, keepalive=30, version=VER, **kw)
c.set_callback(cb)
c.connect(clean_session=True) if not kw else c.connect()
c.subscribe(b"na/%%d/in" %% VER, 2)
TOPIC_OUT = b"na/%%d/out" %% VER
TOPIC_IN = "na/%%d/in" %% VER         # str topic: exercises the encoded-topic cache
PAYLOAD = b"x" * 64

def settle():
    # Run the connection until nothing is owed and nothing is queued.
    for _ in range(2000):
        if not c.pending():
            break
        c.wait_msg(5)

def pub0():
    c.publish(TOPIC_OUT, PAYLOAD)

def pub1():
    c.publish(TOPIC_OUT, PAYLOAD, qos=1)
    settle()

def pub2():
    c.publish(TOPIC_OUT, PAYLOAD, qos=2)
    settle()

def recv(q):
    def run():
        n = seen[q]
        c.publish(TOPIC_IN, PAYLOAD, False, q)
        for _ in range(2000):
            if seen[q] > n and not c.pending():
                break
            c.wait_msg(5)
        if seen[q] <= n:
            raise AssertionError("QoS %%d message not received" %% q)
        # let the QoS 2 receive flow finish (PUBREL -> PUBCOMP)
        for _ in range(3):
            c.check_msg()
    return run

def ping():
    c.ping()
    for _ in range(2000):
        if c.wait_msg(5) == 0xD0:     # PINGRESP handled
            break

def idle():
    c.check_msg()

recv0 = recv(0)
recv1 = recv(1)
recv2 = recv(2)
for name, f in (("publish qos0", pub0), ("publish qos1 + PUBACK", pub1),
                ("publish qos2 + PUBREC/PUBREL/PUBCOMP", pub2),
                ("receive qos0", recv0), ("receive qos1", recv1), ("receive qos2", recv2),
                ("ping + PINGRESP", ping), ("check_msg idle", idle)):
    assert_no_alloc(name, f)
assert sizes[0] == 64
c.disconnect()
print("DONE", seen)
"""


@pytest.mark.parametrize("ver", [4, 5])
def test_hot_paths_allocate_nothing(broker, ver):
    r = run_mp(SCRIPT % {"ver": ver, "port": broker.port, "session": None})
    assert r.stdout.count("noalloc ok") == 8, r.stdout
    assert "DONE" in r.stdout


@pytest.mark.parametrize("ver", [4, 5])
@pytest.mark.parametrize("backend", ["file", "ring"])
def test_hot_paths_allocate_nothing_with_session_on_flash(broker, ver, backend):
    # Every QoS 1/2 step writes to flash here (the ring: a NOR flash model
    # that programs into erased space; the log-file layout: one file kept
    # open), and still nothing is allocated.
    r = run_mp(SCRIPT % {"ver": ver, "port": broker.port, "session": backend})
    assert r.stdout.count("noalloc ok") == 8, r.stdout


DIR_COST = r"""
from durable_mqtt import MQTTClient
from testlib import alloc_bytes
import os
PATH = %(path)r
c = MQTTClient("dircost%(ver)d", "127.0.0.1", %(port)d, version=%(ver)d, clean_session=False, session_file=PATH)
c.connect()
T = b"na/dir"
P = b"x" * 64
def pub1():
    c.publish(T, P, qos=1)
    for _ in range(2000):
        if not c.pending():
            break
        c.wait_msg(5)
def idle():
    c.check_msg()
for _ in range(3):
    pub1()
print("PER_MESSAGE", alloc_bytes(pub1), "IDLE", alloc_bytes(idle))
c.disconnect()
"""


@pytest.mark.parametrize("ver", [4, 5])
def test_directory_layout_allocates_one_file_object_per_flash_write(broker, tmp_path, ver):
    # The session directory (filestore.py) rewrites a small file per change,
    # and LittleFS needs a file object for it: that is the one allocation
    # on the path, bounded, once per flash write (here the message's slot,
    # and its truncation when the link goes idle). Nothing else allocates;
    # an idle link allocates nothing.
    r = run_mp(DIR_COST % {"ver": ver, "port": broker.port, "path": str(tmp_path / "s")})
    f = r.stdout.split()
    per, idle = int(f[1]), int(f[3])
    assert idle == 0, r.stdout
    assert 0 < per <= 2 * 400, r.stdout          # two file objects (unix, 64-bit) at most
    print(r.stdout.strip())


def test_a_new_transports_first_wait_and_room_allocate_nothing():
    # A poll object makes the tuple of its ipoll() results at its first
    # ipoll() call. The first wait() of a connection can come in a locked
    # call (when the CONNACK and SUBACK were already there at their first
    # read): the test above failed 3 runs in 8 with the FileLog session.
    r = run_mp(r"""
import micropython
from durable_mqtt.transport import Transport
t = Transport()
w = r = None                  # (a new global under the lock would grow the module's dict)
micropython.heap_lock()
try:
    w = t.wait(0)
    r = t.room()
finally:
    micropython.heap_unlock()
print("WAIT", w, "ROOM", r)
""")
    assert "WAIT False ROOM False" in r.stdout, r.stdout


LOG_COST = r"""
import gc, os, vfs
from norflash import NorFlash
from durable_mqtt import MQTTClient
from durable_mqtt.filelog import FileLog
bdev = NorFlash(4096, 64, 32)         # a stock ESP32 mount
vfs.VfsLfs2.mkfs(bdev)
vfs.mount(vfs.VfsLfs2(bdev), "/flash")
log = FileLog("/flash/s.dmq")
c = MQTTClient("logcost%(ver)d", "127.0.0.1", %(port)d, version=%(ver)d, clean_session=False, session_file=log)
c.connect()
P = b"x" * 64

def run(qos):
    for _ in range(150):
        while c.pending() >= 8:
            c.wait_msg(1000)
        c.publish(b"na/log", P, False, qos)
        c.check_msg()
    while c.pending():
        c.wait_msg(1000)

# What a checkpoint's filesystem calls leave by themselves: the checkpoint
# file opened and written, the log reopened, the rename (filelog.py).
t, p = log.tmp, log.path + "x"

def fs_calls():
    f = open(t, "wb")
    f.write(P)
    f.close()
    f = open(p, "ab")
    f.close()
    os.rename(t, p)

run(1)
fs_calls()
gc.collect(); gc.disable(); g0 = gc.mem_alloc(); fs_calls(); fs = gc.mem_alloc() - g0; gc.enable()
for qos in (1, 2):
    k0 = log.checkpoints
    gc.collect(); gc.disable(); g0 = gc.mem_alloc()
    run(qos)
    g = gc.mem_alloc() - g0
    gc.enable()
    print("QOS", qos, "GARBAGE", g, "CHECKPOINTS", log.checkpoints - k0, "FS", fs)
c.disconnect()
"""


@pytest.mark.parametrize("ver", [4, 5])
def test_log_file_garbage_is_its_checkpoints_filesystem_calls(broker, ver):
    # FileLog appends into a file it keeps open (nothing allocated); each
    # checkpoint opens its file, reopens the log and renames, and LittleFS
    # and the VFS allocate for those (a file object with its cache buffer,
    # the path inside the mount). Over 150 messages a QoS, on a real
    # LittleFS image, the garbage is exactly that, checkpoint for
    # checkpoint: the library adds nothing of its own.
    r = run_mp(LOG_COST % {"ver": ver, "port": broker.port})
    rows = [line.split() for line in r.stdout.splitlines() if line.startswith("QOS")]
    assert len(rows) == 2, r.stdout + r.stderr
    for row in rows:
        g, k, fs = int(row[3]), int(row[5]), int(row[7])
        assert k >= 2 and fs > 0, r.stdout
        assert g == k * fs, r.stdout
