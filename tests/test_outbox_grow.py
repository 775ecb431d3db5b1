"""A stored session larger than this client's outbox (a firmware update
lowered max_inflight, outbox_size, outbox_bytes or buf_size while messages
waited): the outbox grows at boot to hold it, so that every accepted
message still goes out, with event `outbox_grown`. Until then such a state was set aside
(`discarded`) and its messages were never sent. Each backend, against
mosquitto."""
import pytest

from conftest import run_mp

PRE = r"""
from durable_mqtt import MQTTClient, QueueFull
from durable_mqtt.filelog import FileLog
from norflash import NorFlash
from testlib import wait_until
PORT = %(port)d
VER = %(ver)d
KIND = %(kind)r
PATH = %(path)r
got = []
events = []
def cb(t, m, r, q):
    got.append(bytes(m))
def where():
    if KIND == "path":
        return PATH
    if KIND == "filelog":
        return FileLog(PATH)
    return NorFlash(1024, 16, prog_size=32, path=PATH)
def dev(tag="", **kw):
    # (tag: a test's own client id, when another test's session under the
    # same id may still be at the broker: MQTT 5 Session Present 1 to a
    # client holding none is SessionError, MQTT-3.2.2-4)
    c = MQTTClient("grow%%s%%s%%d" %% (tag, KIND, VER), "127.0.0.1", PORT, version=VER, keepalive=10,
                   clean_session=False, session_file=where(), ring_prog_size=32,
                   event_callback=lambda e, i: events.append((e, i)), **kw)
    c.set_callback(cb)
    return c
"""


def mp(port, ver, kind, path, body):
    return run_mp(PRE % {"port": port, "ver": ver, "kind": kind, "path": str(path)} + body)


@pytest.mark.parametrize("ver", [4, 5])
@pytest.mark.parametrize("kind", ["path", "filelog", "ring"])
def test_a_smaller_outbox_grows_to_hold_the_stored_session(broker, tmp_path, kind, ver):
    path = tmp_path / ("s" if kind != "ring" else "flash.img")
    # Old firmware: a large outbox, 12 messages accepted offline (QoS 1 and
    # QoS 2), then the power goes.
    mp(broker.port, ver, kind, path, r"""
c = dev(max_inflight=8, outbox_size=16)
c.connect()
c.subscribe("grow/%s/%d" % (KIND, VER), 2)
c.disconnect()
for i in range(12):
    c.publish("grow/%s/%d" % (KIND, VER), b"m%02d" % i, qos=2 if i % 3 == 2 else 1)
assert c.pending() == 12
""")
    # New firmware: an outbox of 2 (max_inflight 1 + outbox_size 1) and an
    # arena of 200 bytes: the stored 12 messages are restored and all sent.
    r = mp(broker.port, ver, kind, path, r"""
c = dev(max_inflight=1, outbox_size=1, outbox_bytes=200)
print("BOOT", c.pending(), [e for e, _ in events])
info = [i for e, i in events if e == "outbox_grown"][0]
print("INFO", info["messages"], info["bytes"] >= 12 * 20)
try:
    c.publish("grow/%s/%d" % (KIND, VER), b"over", qos=1)
    print("ACCEPTED")
except QueueFull:
    print("FULL")
assert c.connect() is True
wait_until(c, lambda: not c.pending() and len(got) >= 12)
print("GOT", sorted(got))
c.disconnect()
""")
    out = r.stdout
    assert "BOOT 12 ['outbox_grown']" in out and "INFO 12 True" in out, out
    assert "FULL" in out, out                     # grown to the state's size, no more
    assert "GOT %s" % sorted(b"m%02d" % i for i in range(12)) in out, out
    # The next boot, the outbox drained: the configured size again, no event.
    r = mp(broker.port, ver, kind, path, r"""
c = dev(max_inflight=1, outbox_size=1, outbox_bytes=200)
print("AGAIN", c.pending(), events)
n = 0
try:
    for i in range(5):
        c.publish("grow/%s/%d" % (KIND, VER), b"x", qos=1)
        n += 1
except QueueFull:
    pass
print("ACCEPTS", n)
""")
    assert "AGAIN 0 []" in r.stdout and "ACCEPTS 2" in r.stdout, r.stdout


@pytest.mark.parametrize("ver", [4, 5])
@pytest.mark.parametrize("kind", ["path", "filelog", "ring"])
def test_a_smaller_buf_size_still_sends_the_larger_stored_messages(broker, tmp_path, kind, ver):
    # The update lowered buf_size (often the first RAM to give back) while
    # messages larger than the new one waited. Such a state was set aside
    # (`discarded`), its messages never sent. They go out from the outbox,
    # as any stored message; the event is outbox_grown. publish() still
    # refuses a new message larger than buf_size.
    path = tmp_path / ("s" if kind != "ring" else "flash.img")
    topic = "big/%s/%d" % (kind, ver)
    mp(broker.port, ver, kind, path, r"""
c = dev("big", buf_size=1024)
for i in range(6):
    c.publish(%r, b"%%d" %% i * (600 if i %% 2 else 20), qos=1 + i %% 3 // 2)
assert c.pending() == 6
""" % topic)
    r = mp(broker.port, ver, kind, path, r"""
from durable_mqtt import PacketTooLarge
TOPIC = %r
w = MQTTClient("watch%%s%%d" %% (KIND, VER), "127.0.0.1", PORT, version=VER, buf_size=2048)
w.set_callback(cb)
w.connect()
w.subscribe(TOPIC, 2)
c = dev("big", buf_size=256)
print("BOOT", c.pending(), [e for e, _ in events])
try:
    c.publish(TOPIC, b"n" * 300, qos=1)
    print("ACCEPTED")
except PacketTooLarge:
    print("TOO LARGE")
c.connect()
for _ in range(200):
    c.check_msg()
    w.check_msg()
    if not c.pending() and len(got) >= 6:
        break
    import time
    time.sleep_ms(20)
print("GOT", sorted((m[:1], len(m)) for m in got))
c.disconnect()
w.disconnect()
""" % topic)
    out = r.stdout
    assert "BOOT 6 ['outbox_grown']" in out and "TOO LARGE" in out, out
    want = sorted((b"%d" % i, 600 if i % 2 else 20) for i in range(6))
    assert "GOT %s" % want in out, out
    # Drained, the next boot is the configured client again: no event.
    r = mp(broker.port, ver, kind, path, 'c = dev("big", buf_size=256)\nprint("AGAIN", c.pending(), events)\n')
    assert "AGAIN 0 []" in r.stdout, r.stdout


def test_a_grown_outbox_larger_than_this_heap_does_not_stop_every_boot(tmp_path):
    # A firmware update lowers the outbox, often to free RAM for something
    # else: the new firmware's heap may not hold the outbox the stored
    # session needs. The constructor then raised MemoryError (Session.resize,
    # from restore()) at every boot, the state unchanged on flash: the device
    # never ran again. A state this heap cannot hold is set aside
    # (`discarded`, PATH.d.bad kept for inspection), as load.read() does with
    # a file too large for the heap; with room enough, the outbox grows.
    where = repr(str(tmp_path / "s"))
    store_large(where, "max_inflight=8, outbox_size=32, outbox_bytes=80000, buf_size=2048", 36, 1900)
    boot = BOOT_SMALL_HEAP % (where, "max_inflight=1, outbox_size=1, buf_size=2048",
                              "'s.d.bad' in os.listdir(%r)" % str(tmp_path))
    r = run_mp(boot, heapsize="150k")
    assert "BOOTED 0 ['discarded'] True" in r.stdout, r.stdout
    r = run_mp(boot, heapsize="150k")
    assert "BOOTED 0 [] True" in r.stdout, r.stdout


# A state stored by a client with more RAM (`where`: the session_file
# expression), then a boot under a small heap that prints BOOTED, pending(),
# the events and `check`, or BOOT FAILED and the MemoryError.
STORE_LARGE = r"""
from durable_mqtt import MQTTClient
from durable_mqtt.filelog import FileLog
c = MQTTClient("heap", "127.0.0.1", 1, clean_session=False, session_file=%s, %s)
for i in range(%d):
    c.publish("t", b"%%04d" %% i + b"x" * %d, qos=1)
"""
BOOT_SMALL_HEAP = r"""
import os, sys
from durable_mqtt import MQTTClient
from durable_mqtt.filelog import FileLog
ev = []
try:
    c = MQTTClient("heap", "127.0.0.1", 1, clean_session=False, session_file=%s, %s,
                   event_callback=lambda e, i: ev.append(e))
    print("BOOTED", c.pending(), ev, %s)
except MemoryError as x:
    sys.print_exception(x)
    print("BOOT FAILED", repr(x), ev)
"""


def store_large(where, config, n, size):
    run_mp(STORE_LARGE % (where, config, n, size))


@pytest.mark.parametrize("kind", ["path", "filelog", "ring"])
def test_restore_session_bytes_from_a_larger_client_grow_the_outbox(broker, tmp_path, kind):
    # save_session() bytes of a client with a larger outbox, restored into a
    # small one: the outbox grows (event outbox_grown), the state reaches
    # its store, and a reboot of the small client restores it all again.
    path = tmp_path / ("s" if kind != "ring" else "flash.img")
    r = mp(broker.port, 4, kind, path, r"""
big = MQTTClient("growbytes", "127.0.0.1", PORT, clean_session=False, outbox_size=16)
for i in range(10):
    big.publish("grow/bytes", b"b%02d" % i, qos=1 + i % 2)
data = big.save_session()
c = MQTTClient("growbytes", "127.0.0.1", PORT, clean_session=False, session_file=where(), ring_prog_size=32,
               max_inflight=1, outbox_size=1, event_callback=lambda e, i: events.append((e, i)))
c.restore_session(data)
print("RESTORED", c.pending(), [(e, i["messages"], i["bytes"]) for e, i in events])
events.clear()
c = MQTTClient("growbytes", "127.0.0.1", PORT, clean_session=False, session_file=where(), ring_prog_size=32,
               max_inflight=1, outbox_size=1, event_callback=lambda e, i: events.append(e))
print("REBOOT", c.pending(), events)
""")
    assert "RESTORED 10 [('outbox_grown', 10, 190)]" in r.stdout, r.stdout     # 10 PUBLISH of 19 bytes
    assert "REBOOT 10 ['outbox_grown']" in r.stdout, r.stdout


def test_a_ring_state_larger_than_this_heap_never_stops_every_boot(tmp_path):
    # A raw ring holding a state that a device with more RAM wrote: its
    # load() raised MemoryError from the constructor at every boot, and
    # reading it took the state's size four times over (the ring's copy,
    # bytes() of it, parse()'s bytearray, a copy of each packet). Now one
    # copy is read and the packets are views of it; a heap that cannot hold
    # even that sees the state as unusable: erased, `discarded`, its reason
    # said, as a grown outbox the heap cannot hold already was. Swept over
    # heap sizes: each boots as a device without the state would (the
    # smallest fail to import the ring module either way), restores all
    # 20 messages or discards them, never a MemoryError of the state's.
    img = tmp_path / "flash.img"
    where = "NorFlash(4096, 32, prog_size=32, path=%r)" % str(img)
    pre = "from norflash import NorFlash\n"
    run_mp(pre + STORE_LARGE % (where, "outbox_size=32, outbox_bytes=80000, buf_size=2048", 20, 1900))
    stored = img.read_bytes()
    boot = pre + BOOT_SMALL_HEAP % (where, "max_inflight=1, outbox_size=1, buf_size=2048", 0)
    seen = set()
    for k in range(280, 480, 20):
        heap = "%dk" % k
        img.unlink()                 # a device without the state: the same code, an empty ring
        empty = run_mp(boot, heapsize=heap)
        if "BOOTED 0 []" not in empty.stdout:
            assert "BOOT FAILED" in empty.stdout, empty.stdout
            continue
        img.write_bytes(stored)
        r = run_mp(boot, heapsize=heap)
        assert "BOOTED 20 ['outbox_grown'] 0" in r.stdout or "BOOTED 0 ['discarded'] 0" in r.stdout, (heap, r.stdout)
        seen.add(r.stdout.split()[1])
    assert seen == {"0", "20"}, seen          # both outcomes swept (else move the range)


def test_a_log_file_larger_than_this_heap_is_set_aside(tmp_path):
    # A FileLog read whole at boot: one larger than the heap (a device with
    # more RAM wrote it) raised MemoryError from the constructor at every
    # boot. It is set aside (path.bad, event discarded) and the client runs.
    path = str(tmp_path / "log")
    store_large("FileLog(%r, compact_bytes=1 << 20)" % path, "outbox_size=64, outbox_bytes=200000, buf_size=4096",
                40, 3000)
    r = run_mp(BOOT_SMALL_HEAP % ("FileLog(%r)" % path, "buf_size=4096", "os.stat(%r)[6] > 100000" % (path + ".bad")),
               heapsize="160k")
    assert "BOOTED 0 ['discarded'] True" in r.stdout, r.stdout



@pytest.mark.parametrize("how", ["buf_size", "outbox"])
def test_outbox_grown_is_told_once_the_state_is_restored(tmp_path, how):
    # restore_session() told outbox_grown in the middle of restore(): the
    # engine emptied (or still the old state) and each stored packet still a
    # view of the caller's bytes. A message the event callback published
    # was then dropped and its packet id given to a restored message (whose
    # PUBACK would complete it); a callback that reused its buffer corrupted
    # the restored packets; save_session() there returned another state.
    # The event now comes once the state is in place.
    r = run_mp(r"""
from durable_mqtt import MQTTClient, QueueFull
HOW = %r
def msgs(cl):
    e = cl.engine
    return [(e.pid[e.index(k)], bytes(e.arena[e.off[e.index(k)] + 1:e.off[e.index(k)] + e.len[e.index(k)]]))
            for k in range(e.count) if e.slot(k)]
big = MQTTClient("evt", "127.0.0.1", 1, clean_session=False, buf_size=1024, outbox_size=20)
for i in range(12):
    big.publish("t", b"%%02d" %% i * (300 if i == 3 else 1), qos=1 + i %% 2)
want = big.save_session()
data = bytearray(want)
kw = {"buf_size": 256} if HOW == "buf_size" else {"buf_size": 1024, "max_inflight": 1, "outbox_size": 1}
c = MQTTClient("evt", "127.0.0.1", 1, clean_session=False, session_file=%r, **kw)
seen = []
def on(e, info):
    if e == "outbox_grown":
        seen.append(c.save_session() == want)
        for k in range(len(data)):           # the application reuses its buffer
            data[k] = 0
        try:
            seen.append(c.publish("alert", b"grown", qos=1))
        except QueueFull:                     # (a grown outbox is full: documented)
            seen.append(0)
c.set_event_callback(on)
c.restore_session(data)
a = seen[1]
print("SAVED", seen[0], "INTACT", [m for m in msgs(c) if m[0] != a] == msgs(big),
      "ALERT", not a or c.pending() == 13 and not big.holds(a) and msgs(c)[-1][0] == a)
""" % (how, str(tmp_path / "s")))
    assert "SAVED True INTACT True ALERT True" in r.stdout, r.stdout
