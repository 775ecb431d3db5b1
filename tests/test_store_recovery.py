"""What follows a store failure once the store works again, and what the
broker sees meanwhile: a QoS 2 record the store refused (its PUBREL held
back until a checkpoint gets through), a write error (EIO) at disconnect()
and at a RobustClient subscribe(). On a real LittleFS image (the NOR flash
test device, tests/mp/norflash.py) and a real mosquitto, whose log counts
the packets it received.
"""
import itertools
import os
import re
import time

import pytest

from conftest import log_size, run_mp
from test_store_errors import LFS, PUBREC_REFUSED

_TAGS = itertools.count()


def tag():
    # A client id and topic part no other test (or worker) uses.
    return "%d-%d-%d" % (os.getpid(), next(_TAGS), time.monotonic_ns() % 1000000)


def received(broker, since, cid, what):
    """How many `what` packets (SUBSCRIBE, PUBREL...) mosquitto's log says
    client `cid` sent since byte `since` of the log."""
    want = re.compile(r"Received %s from %s( |$)" % (what, re.escape(cid)), re.M)
    n = -1
    for _ in range(50):                       # (the broker's log is written as it goes)
        with open(broker.log, "rb") as f:
            f.seek(since)
            m = len(want.findall(f.read().decode(errors="replace")))
        if m == n:
            return m
        n = m
        time.sleep(0.02)
    return n


# A LittleFS on a device whose writes fail while dev.bad is set: a session
# directory or a FileLog on it (STORE). The device returns -EIO, the block
# protocol's error (VfsLfs2 raises OSError(5) for it), rather than raising
# OSError(5) itself as test_store_errors.py's do: an exception raised inside
# LittleFS jumps out of it midway, and a file whose close it cut short stays
# in LittleFS's list of open files; when the garbage collector finalises that
# file object while the device still fails, the next LittleFS call hangs or
# the unix port crashes (SIGSEGV), whatever the library does. reboot()
# mounts the image again with the fault gone, as the next power-up would.
EIO = r"""
import time
from durable_mqtt.filelog import FileLog
class Faulty(NorFlash):
    bad = False
    def writeblocks(self, n, buf, off=None):
        if self.bad:
            return -5
        return super().writeblocks(n, buf, off)
dev = Faulty(4096, 64, prog_size=P)
vfs.VfsLfs2.mkfs(dev, progsize=P)
vfs.mount(vfs.VfsLfs2(dev, progsize=P), "/fl")
def store():
    return FileLog("/fl/log") if STORE == "FileLog" else "/fl/s"
def reboot():
    dev.bad = False
    vfs.umount("/fl")
    vfs.mount(vfs.VfsLfs2(dev, progsize=P), "/fl")
def watch(topic, qos):
    # A second client that keeps what reaches topic: (client, [payloads]).
    seen = []
    w = MQTTClient(CID + "-w", "127.0.0.1", PORT)
    w.set_callback(lambda t, m, r, q: seen.append(bytes(m)))
    w.connect()
    w.subscribe(topic, qos)
    return w, seen
def booted():
    # The client a boot builds on what the flash holds, connected.
    c = MQTTClient(CID, "127.0.0.1", PORT, clean_session=False, session_file=store())
    print("BOOT", c.pending())
    c.connect()
    return c
def delivered(c, w, got):
    # What reached the watcher w, what c still holds; both leave.
    wait([c, w], 300)
    print("DELIVERED", got, c.pending())
    c.disconnect()
    w.disconnect()
def stopped(a):
    # AsyncClient a's task stopped; its client, as the power cut finds it.
    print("BEFORE THE CUT", a.is_connected(), a.pending(), a._task.done())
    a._task.cancel()
    return a.client
def cut(c):
    # A power cut: nothing more written, the image mounted afresh.
    call(c.close)
    reboot()
def wait(clients, ms, until=lambda: False):
    # The clients read for ms, or until until().
    t0 = time.ticks_ms()
    while not until() and time.ticks_diff(time.ticks_ms(), t0) < ms:
        for x in clients:
            if x.is_connected():
                x.check_msg()
        time.sleep_ms(10)
"""


@pytest.mark.parametrize("store", ["directory", "FileLog"])
@pytest.mark.parametrize("front", ["MQTTClient", "RobustClient"])
def test_a_connect_refused_for_a_qos2_record_recovers_once_the_store_has_room(broker, front, store):
    """A PUBREC's OUT_REL the store refused (a full or read-only
    filesystem): while it is not on flash no connect may send the PUBREL,
    so connect() fails (StoreFull) until a checkpoint of the whole state
    gets through; RobustClient's reconnects fail alike. With subscriptions
    in the session, the checkpoint that fails first is the one before the
    CONNECT (the subscriptions owed on flash should the CONNACK find the
    session lost): it set the session's `resub_owed` for the checkpoint
    and, raising, left it set. Once the store had room, the next connect
    resumed the session (PUBREL sent, the message delivered once), but
    took the subscriptions as owed to it and sent every one of them
    again, and the broker sent their retained messages again: a second
    delivery of each. Now a refused checkpoint before the CONNECT leaves
    nothing behind: the device recovers at the first connect after room
    came back (and RobustClient's poll() at its next attempt), the PUBREL
    goes then and not before, the message is delivered once, the retained
    message once, one SUBSCRIBE in all, and a boot after finds nothing
    left to send."""
    cid = "se-rec-" + tag()
    since = log_size(broker)
    r = run_mp(LFS + r"""
import time
from durable_mqtt.filelog import FileLog
from durable_mqtt.robust import RobustClient
PORT, FRONT, STORE, CID = %d, %r, %r, %r
TOPIC = "se/rec/" + CID
got = []
w = MQTTClient(CID + "-w", "127.0.0.1", PORT)
w.set_callback(lambda t, m, r, q: got.append(bytes(m[-1:])))
w.connect()
w.subscribe(TOPIC, 2)
w.publish(TOPIC + "/r", b"R", retain=True, qos=1)
dev = fresh()
ev = []
mine = []
def boot():
    kw = {"backoff_ms": (20, 40)} if FRONT == "RobustClient" else {}
    c = (RobustClient if FRONT == "RobustClient" else MQTTClient)(
        CID, "127.0.0.1", PORT, clean_session=False,
        session_file=FileLog("/fl/log") if STORE == "FileLog" else "/fl/s",
        event_callback=lambda e, i: ev.append(e), **kw)
    c.set_callback(lambda t, m, r, q: mine.append(bytes(m)))
    return c
def remount(readonly=False):
    vfs.umount("/fl")
    vfs.mount(vfs.VfsLfs2(dev, progsize=P), "/fl", readonly=readonly)
def pump(c, ms, until=lambda: False):
    # Both clients read for ms (until until()); RobustClient's poll() reconnects.
    t0 = time.ticks_ms()
    while not until() and time.ticks_diff(time.ticks_ms(), t0) < ms:
        w.check_msg()
        if FRONT == "RobustClient":
            c.poll(10)
        elif c.is_connected():
            try:
                c.wait_msg(10)
            except OSError as x:
                print("read:", repr(x))
        else:
            time.sleep_ms(10)
c = boot()
c.connect()
c.subscribe(TOPIC + "/r", 1)
pump(c, 1000, lambda: mine)
c.publish(TOPIC, BIG + b"X", qos=2)          # its OUT_PUB on flash; the PUBREC on its way
k = 0
if STORE == "FileLog":
    k = fill(0, (4096, 1024, 256), True)     # the blocks full: the OUT_REL append refused
else:
    remount(True)                            # (a slot file fits LittleFS's metadata: read-only)
pump(c, 1000, lambda: not c.is_connected())
print("PUBREC read: connected", c.is_connected(), "unsaved", bool(c.unsaved))
assert not c.is_connected() and c.unsaved
if STORE == "FileLog":
    remount(True)                            # no checkpoint gets through (the log is closed)
del ev[:]
if FRONT == "RobustClient":
    pump(c, 300)
    print("refusing: connected", c.is_connected(), repr(c.last_error), c.connect_failures)
    assert not c.is_connected() and c.connect_failures >= 2, c.connect_failures
else:
    for _ in range(2):
        try:
            c.connect()
            raise AssertionError("connected")
        except StoreFull as x:
            print("refusing:", repr(x))
pump(c, 300)
print("delivered while refusing", got)
assert got == [] and "store_full" in ev, (got, ev)
remount()
unfill(k)                                    # room again
del ev[:]
if FRONT == "MQTTClient":
    c.connect()
pump(c, 3000, lambda: c.is_connected() and not c.pending() and got)
pump(c, 300)
print("room:", ev, "pending", c.pending(), "delivered", got, "retained", mine)
assert c.is_connected() and ev == ["resumed"] and c.pending() == 0, (ev, c.pending())
assert got == [b"X"] and mine == [b"R"], (got, mine)
c.close()                                    # (a power cut)
ev = []
c = boot()
c.connect()
pump(c, 500)
print("boot:", ev, "pending", c.pending(), "delivered", got, "retained", mine)
assert ev == ["resumed"] and c.pending() == 0 and got == [b"X"] and mine == [b"R"], (ev, got, mine)
w.publish(TOPIC + "/r", b"", retain=True, qos=1)
c.disconnect()
w.disconnect()
print("OK")
""" % (broker.port, front, store, cid))
    print(r.stdout)
    assert "OK" in r.stdout, r.stdout
    assert received(broker, since, cid, "SUBSCRIBE") == 1
    assert received(broker, since, cid, "PUBREL") == 1


@pytest.mark.parametrize("call", ["connect_fresh", "clean"])
def test_a_robust_clean_start_is_not_refused_over_a_qos2_record_of_the_session_it_ends(broker, call):
    """MQTT 5 RobustClient with subscriptions: a QoS 2 record the store
    refused (an OUT_REL at a PUBREC, on a full filesystem) fails every
    connect that would resume its session while no checkpoint gets
    through. A clean start ends that session (the engine drops the message
    past PUBREC at the CONNACK, and the mark with it: connect.py), so
    MQTTClient's connect_fresh() goes through, `store_full` reported. Not
    RobustClient's: its subscriptions are owed to the new session, and the
    checkpoint that puts that debt on flash before the CONNECT, refused,
    raised StoreFull over the mark and sent nothing: connect_fresh() (or
    connect(clean_session=True)), the way out an application takes, failed
    as long as the store refused (so did connect(clean_session=True) with
    a Session Expiry: "clean"). Now that checkpoint fails no clean start:
    the connect goes through ("new"), its subscription made."""
    r = run_mp(LFS + PUBREC_REFUSED + r"""
from durable_mqtt.robust import RobustClient
PORT, CALL = %d, %r
def fboot(port):
    ev = []
    c = RobustClient("se-pub-" + TOPIC[10:], "127.0.0.1", port, version=5, clean_session=False,
                     session_expiry=None if CALL == "connect_fresh" else 3600,
                     session_file=FileLog("/fl/log"), event_callback=lambda e, i: ev.append(e))
    c.subscribe(TOPIC + "/s", 1)             # (made at the connect)
    return c, ev
c, ev, k = pubrec_refused(PORT)
remount(True)                                # no checkpoint gets through now
del ev[:]
try:
    sp = c.connect_fresh() if CALL == "connect_fresh" else c.connect(clean_session=True)
    print("connected", sp, ev)
except StoreFull as x:
    print("connect refused:", repr(x), ev)
assert c.is_connected() and "new" in ev and "store_full" in ev, ev
assert [bytes(s[0]) for s in c.engine.subs] == [(TOPIC + "/s").encode()] and not c.engine.resub_owed
pump(c, 300)
print("pending", c.pending(), "delivered", got)
assert got == [] and c.pending() == 0, got     # (the new session holds nothing: no PUBREL)
c.close()
remount()
print("OK")
""" % (broker.port, call))
    print(r.stdout)
    assert "OK" in r.stdout, r.stdout


@pytest.mark.parametrize("front,store", [("MQTTClient", "directory"), ("MQTTClient", "FileLog"),
                                         ("AsyncClient", "directory"), ("AsyncClient", "FileLog"),
                                         ("expiry 0", "directory")])
def test_a_disconnect_whose_checkpoint_meets_a_write_error_still_sends_disconnect(broker, front, store):
    """disconnect() writes the session state, then sends DISCONNECT. A
    write error from the flash there (EIO: a failing SD card, a flash
    program that fails) was raised before the DISCONNECT went: the link
    stayed open, and the close() that followed (or the program's end)
    dropped it without one, so the broker published the will the
    application had asked it to discard (MQTT-3.1.2-10). AsyncClient's
    disconnect() called it again, met the error again, and dropped the
    link without a DISCONNECT too. (A full or read-only filesystem there
    was already reported as `store_full`, the DISCONNECT sent.) So did
    the erase of MQTT 5's disconnect(session_expiry=0) ("expiry 0"). Now
    the DISCONNECT goes and the link closes first, then the error is
    raised: the will is not published, and nothing is lost: the messages
    accepted before are on flash, and the next boot resends them."""
    cid = "se-bye-" + tag()
    r = run_mp(LFS + EIO + r"""
import asyncio
from durable_mqtt.aio import AsyncClient
PORT, FRONT, STORE, CID = %d, %r, %r, %r
TOPIC = "se/bye/" + CID
w, wills = watch(TOPIC + "/will", 1)
if FRONT != "AsyncClient":
    c = MQTTClient(CID, "127.0.0.1", PORT, clean_session=False, session_file=store(),
                   version=5 if FRONT == "expiry 0" else 4)
    c.set_last_will(TOPIC + "/will", b"gone", qos=1)
    c.connect()
    for n in range(3):                       # on flash before the wire; their PUBACKs never read
        c.publish(TOPIC, b"A%%02d" %% n, qos=1)
    dev.bad = True                           # every write from now on fails
    # (MQTT 5, Session Expiry 0: the session ends here, its store erased)
    print("DISCONNECT", call(c.disconnect, 0 if FRONT == "expiry 0" else None), c.is_connected())
    held = tails(c, 3)
    call(c.close)                            # (the program ends)
else:
    async def main():
        a = AsyncClient(CID, "127.0.0.1", PORT, session_file=store())
        a.client.set_last_will(TOPIC + "/will", b"gone", qos=1)
        await a.connect()
        for n in range(3):
            a.publish_nowait(TOPIC, b"A%%02d" %% n, qos=1)
        dev.bad = True
        try:
            await a.disconnect()
            print("DISCONNECT None", a.is_connected())
        except Exception as x:
            print("DISCONNECT", repr(x), a.is_connected())
        return a.client
    c = asyncio.run(main())
    held = tails(c, 3)
    call(c.close)
wait([w], 1000, lambda: wills)
print("WILL", wills)
reboot()                                     # (the flash works again)
c = MQTTClient(CID, "127.0.0.1", PORT, clean_session=False, session_file=store())
print("BOOT", tails(c, 3) == held, len(held))
c.connect()
wait([c], 2000, lambda: not c.pending())
print("RESENT", c.pending())
c.disconnect()
w.disconnect()
""" % (broker.port, front, store, cid))
    print(r.stdout)
    assert "DISCONNECT OSError(5,) False" in r.stdout, r.stdout
    assert "WILL []" in r.stdout, r.stdout
    assert "RESENT 0" in r.stdout, r.stdout
    if front != "expiry 0":                  # (that one's session ended: its store erased)
        assert "BOOT True" in r.stdout, r.stdout
    if front == "MQTTClient":
        assert "BOOT True 3" in r.stdout, r.stdout


@pytest.mark.parametrize("store", ["directory", "FileLog"])
@pytest.mark.parametrize("when", ["up", "queued"])
def test_a_robust_subscription_whose_checkpoint_meets_a_write_error_is_not_sent_again(broker, when, store):
    """RobustClient.subscribe() while up: the broker granted the
    subscription (SUBACK), the session took it, then the checkpoint after
    it met a write error (EIO), which closes the link (request.py).
    subscribe() took that for a link lost before the answer and queued
    the subscription, and the reconnect (whose checkpoint put the
    subscription on flash) sent a second SUBSCRIBE for it: a packet id and
    a checkpoint wasted, and the broker's retained messages on it sent
    again. A subscription made while down ("queued") the same: made at the
    reconnect, its checkpoint failed the attempt, and it stayed queued for
    the next. Now one whose answer came is not queued again: one SUBSCRIBE
    in all (mosquitto's log), the error reported in last_error, the link
    back at the next poll(), a message on the topic delivered once, and
    the subscription on flash for the next boot."""
    cid = "se-rsub-" + tag()
    since = log_size(broker)
    r = run_mp(LFS + EIO + r"""
from durable_mqtt.robust import RobustClient
PORT, WHEN, STORE, CID = %d, %r, %r, %r
TOPIC = "se/rsub/" + CID
got = []
arm = []
def on_event(name, info):
    if name == "resumed" and arm:             # the connect's checkpoint is done: the next write fails
        del arm[0]
        dev.bad = True
def client():
    c = RobustClient(CID, "127.0.0.1", PORT, session_file=store(), backoff_ms=(20, 40), event_callback=on_event)
    c.set_callback(lambda t, m, r, q: got.append(bytes(m)))
    return c
def poll(c, ms, until):
    t0 = time.ticks_ms()
    while not until() and time.ticks_diff(time.ticks_ms(), t0) < ms:
        c.poll(10)
        if isinstance(c.last_error, OSError) and c.last_error.args[0] == 5:
            print("attempt failed:", repr(c.last_error))
            c.last_error = None
            dev.bad = False                   # the flash works again
c = client()
c.connect()
if WHEN == "up":
    dev.bad = True
    print("SUBSCRIBE", c.subscribe(TOPIC, 1), c.is_connected(), repr(c.last_error))
    dev.bad = False
else:
    c.drop_link()
    print("SUBSCRIBE", c.subscribe(TOPIC, 1), c.is_connected())
    arm.append(1)
poll(c, 500, lambda: False)
print("UP", c.is_connected(), len(c.pending_subs), [bytes(s[0]) for s in c.engine.subs] == [TOPIC.encode()])
p = MQTTClient(CID + "-p", "127.0.0.1", PORT)
p.connect()
p.publish(TOPIC, b"M01", qos=1)
p.disconnect()
poll(c, 1000, lambda: got)
poll(c, 200, lambda: False)
print("DELIVERED", got)
c.close()
c = client()                                  # a boot: the session as flash holds it
print("BOOT", [bytes(s[0]) for s in c.engine.subs] == [TOPIC.encode()])
c.close()
""" % (broker.port, when, store, cid))
    print(r.stdout)
    assert "UP True 0 True" in r.stdout, r.stdout
    assert "DELIVERED [b'M01']" in r.stdout, r.stdout
    assert "BOOT True" in r.stdout, r.stdout
    assert received(broker, since, cid, "SUBSCRIBE") == 1


@pytest.mark.parametrize("store", ["directory", "FileLog"])
@pytest.mark.parametrize("front", ["RobustClient", "AsyncClient"])
@pytest.mark.parametrize("qos,then", [(1, "recovers"), (2, "recovers"), (2, "reboot")])
def test_a_write_error_recording_an_acknowledgement_does_not_stop_the_loop(broker, front, store, qos, then):
    """The acknowledgement of a QoS 1/2 message (PUBACK, PUBCOMP) reaches
    flash lazily: the message's slot is emptied (a session directory) or an
    OUT_ACKED record appended (a FileLog) once nothing is in flight, at
    the end of the call that read it. A write error there (EIO) came out
    of wait_msg() / check_msg() with the link up, and RobustClient.poll()
    raised it as if the message callback had (OSError(5) from every
    poll(), the link still up: the write was tried again at each), so
    loop_forever() died. Now it is reported in last_error, the client
    goes on from RAM (a message arriving meanwhile is delivered), and the
    write is tried again until it gets through: once the flash works
    again, a power cut and a boot find nothing to send again ("recovers").
    At QoS 2 a boot while the acknowledgement is still missing from flash
    ("reboot": the flash works again at the power-up) sends the PUBREL
    again, never the PUBLISH: the message is delivered once (MQTT-4.3.3).
    AsyncClient the same (its task reported the error and went on)."""
    cid = "se-ack-" + tag()
    r = run_mp(LFS + EIO + r"""
import asyncio
from durable_mqtt.robust import RobustClient
from durable_mqtt.aio import AsyncClient
PORT, FRONT, STORE, CID, QOS, THEN = %d, %r, %r, %r, %d, %r
TOPIC = "se/ack/" + CID
w, got = watch(TOPIC, 2)
mine = []
events = []                                  # the "store_error" events, in order
def fail(pid, reason):
    dev.bad = True                           # acknowledged: the flash fails from the next write on
def raised(f):
    try:
        f()
    except Exception as x:
        print("RAISED", repr(x))
        raise
if FRONT == "RobustClient":
    c = RobustClient(CID, "127.0.0.1", PORT, session_file=store(), backoff_ms=(20, 40))
    c.set_callback(lambda t, m, r, q: mine.append(bytes(m)))
    c.set_event_callback(lambda ev, info: ev == "store_error" and events.append(repr(info["error"])))
    c.connect()
    c.subscribe(TOPIC + "/in", 1)
    c.set_done_callback(fail)
    c.publish(TOPIC, b"M1", qos=QOS)
    for n in range(3):
        raised(lambda: c.poll(100))
    print("FAILING", c.is_connected(), repr(c.last_error), c.pending())
    print("STORE_ERROR", events, repr(c.store_error))
    w.publish(TOPIC + "/in", b"I1", qos=1)   # the client goes on meanwhile
    t0 = time.ticks_ms()
    while not mine and time.ticks_diff(time.ticks_ms(), t0) < 2000:
        raised(lambda: c.poll(20))
        w.check_msg()
    print("MEANWHILE", c.is_connected(), mine)
    if THEN == "recovers":
        dev.bad = False
        for n in range(5):
            raised(lambda: c.poll(20))
    print("BEFORE THE CUT", c.is_connected(), c.pending())
    print("AFTER", events, repr(c.store_error))
else:
    async def main():
        a = AsyncClient(CID, "127.0.0.1", PORT, session_file=store(), backoff_ms=(20, 40))
        a.set_callback(lambda t, m, r, q: mine.append(bytes(m)))
        a.client.set_event_callback(lambda ev, info: ev == "store_error" and events.append(repr(info["error"])))
        await a.connect()
        await a.subscribe(TOPIC + "/in", 1)
        done = a.client.on_done
        a.client.set_done_callback(lambda p, r: (fail(p, r), done(p, r)))
        await a.publish(TOPIC, b"M1", qos=QOS)
        await asyncio.sleep_ms(300)
        print("FAILING", a.is_connected(), repr(a.client.last_error), a.pending())
        print("STORE_ERROR", events, repr(a.client.store_error))
        w.publish(TOPIC + "/in", b"I1", qos=1)
        t0 = time.ticks_ms()
        while not mine and time.ticks_diff(time.ticks_ms(), t0) < 2000:
            await asyncio.sleep_ms(20)
            w.check_msg()
        print("MEANWHILE", a.is_connected(), mine, a._task.done())
        if THEN == "recovers":
            dev.bad = False
            # An idle link: the task reads (nothing) at least once a second
            # (_LOOK_DOWN_MS), and each read's tick tries the write again.
            t0 = time.ticks_ms()
            while a.client.store_error is not None and time.ticks_diff(time.ticks_ms(), t0) < 3000:
                await asyncio.sleep_ms(20)
            print("IDLE RETRY", a.client.store_error is None, time.ticks_diff(time.ticks_ms(), t0) < 2000)
            w.publish(TOPIC + "/in", b"I2", qos=1)
            t0 = time.ticks_ms()
            while len(mine) < 2 and time.ticks_diff(time.ticks_ms(), t0) < 2000:
                await asyncio.sleep_ms(20)
                w.check_msg()
            await asyncio.sleep_ms(300)
        print("AFTER", events, repr(a.client.store_error))
        return stopped(a)
    c = asyncio.run(main())
cut(c)
c = booted()
wait([c, w], 1000, lambda: not c.pending() and len(got) > 1)
delivered(c, w, got)
""" % (broker.port, front, store, cid, qos, then))
    print(r.stdout)
    assert "RAISED" not in r.stdout, r.stdout
    assert "FAILING True OSError(5,) 0" in r.stdout, r.stdout
    # The first write error is the event "store_error", once while the
    # flash fails (each tick tries again), and the client's store_error.
    assert "STORE_ERROR ['OSError(5,)'] OSError(5,)" in r.stdout, r.stdout
    assert "MEANWHILE True [b'I1']" in r.stdout, r.stdout
    assert "BEFORE THE CUT True 0" in r.stdout, r.stdout
    if then == "recovers":
        assert "AFTER ['OSError(5,)'] None" in r.stdout, r.stdout     # cleared by the tick that got through
        if front == "AsyncClient":
            assert "IDLE RETRY True True" in r.stdout, r.stdout
        assert "BOOT 0" in r.stdout, r.stdout
    else:
        assert "AFTER ['OSError(5,)'] OSError(5,)" in r.stdout, r.stdout
    assert "DELIVERED [b'M1'] 0" in r.stdout, r.stdout


def test_an_exception_the_event_callback_raises_on_store_error_comes_out_of_the_next_connect(broker):
    """docs/api.md, "store_error": the event comes from inside a read (the
    acknowledgement's lazy write), where raising would end the loop as a
    write error did; an exception the event callback raises on it is kept
    and comes out of the poll() that next connects, once, the link up."""
    cid = "se-evx-" + tag()
    r = run_mp(LFS + EIO + r"""
from durable_mqtt.robust import RobustClient
PORT, STORE, CID = %d, "directory", %r
TOPIC = "se/evx/" + CID
def on_event(ev, info):
    if ev == "store_error":
        print("EVENT", repr(info["error"]))
        raise ValueError("from the event callback")
def polls(n):
    for _ in range(n):
        try:
            c.poll(20)
        except ValueError as x:
            print("RAISED", repr(x), c.is_connected())
c = RobustClient(CID, "127.0.0.1", PORT, session_file=store(), backoff_ms=(20, 40))
c.set_event_callback(on_event)
c.connect()
c.set_done_callback(lambda pid, reason: setattr(dev, "bad", True))
c.publish(TOPIC, b"M1", qos=1)
polls(5)
print("UP", c.is_connected(), repr(c.store_error))
dev.bad = False
c.drop_link()
polls(10)
print("AFTER", c.is_connected(), repr(c.store_error))
c.disconnect()
""" % (broker.port, cid))
    out = r.stdout
    assert out.count("EVENT OSError(5,)") == 1, out
    assert "UP True OSError(5,)" in out and out.index("UP") < out.index("RAISED"), out
    assert out.count("RAISED ValueError('from the event callback',) True") == 1, out
    assert "AFTER True None" in out, out


@pytest.mark.parametrize("store", ["directory", "FileLog"])
@pytest.mark.parametrize("front", ["RobustClient", "AsyncClient"])
def test_a_write_error_of_a_batch_due_while_down_does_not_stop_the_loop(broker, front, store):
    """Batched mode (persist_batch_ms): a message published while the link
    is down waits in RAM, and the loop writes the batch when it is due,
    before the next connect attempt (RobustClient.offline()). A write
    error there (EIO) came out of RobustClient.poll() at every call while
    down, and ended AsyncClient's background task for good: no reconnect
    ever again. Now it is reported in last_error and the loop goes on: the
    reconnects fail at their checkpoint while the flash fails (the link
    closed, as a connect's write error closes it), and once it works again
    the next one writes the state and sends the message, which a power cut
    after it does not send again. (The flash comes back with a remount:
    LittleFS keeps the data of a program that failed in its cache and
    programs it later, over the place its next commit then programs
    again, littlefs issue 760; this sequence of failed writes meets that,
    and the NOR flash model refuses the second program.)"""
    cid = "se-batch-" + tag()
    r = run_mp(LFS + EIO + r"""
import asyncio
from durable_mqtt.robust import RobustClient
from durable_mqtt.aio import AsyncClient
PORT, FRONT, STORE, CID = %d, %r, %r, %r
TOPIC = "se/batch/" + CID
w, got = watch(TOPIC, 1)
recover = reboot          # the flash works again; LittleFS mounted afresh (see above)
events = []               # the "store_error" events, in order
def on_event(ev, info):
    if ev == "store_error":
        events.append(repr(info["error"]))
def raised(f):
    try:
        return f()
    except Exception as x:
        print("RAISED", repr(x))
        raise
if FRONT == "RobustClient":
    c = RobustClient(CID, "127.0.0.1", PORT, session_file=store(), backoff_ms=(20, 40), persist_batch_ms=50)
    c.set_event_callback(on_event)
    c.connect()
    c.drop_link()
    c.publish(TOPIC, b"B1", qos=1)           # batched: in RAM until due
    dev.bad = True
    t0 = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), t0) < 300:
        raised(lambda: c.poll(20))
    print("FAILING", c.is_connected(), repr(c.last_error), c.pending())
    print("STORE_ERROR", events, repr(c.store_error))
    recover()
    t0 = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), t0) < 2000 and (not c.is_connected() or c.pending()):
        raised(lambda: c.poll(20))
    print("BEFORE THE CUT", c.is_connected(), c.pending())
    print("AFTER", events, repr(c.store_error))
else:
    async def main():
        a = AsyncClient(CID, "127.0.0.1", PORT, session_file=store(), backoff_ms=(20, 40), persist_batch_ms=50)
        a.client.set_event_callback(on_event)
        await a.connect()
        a.client.drop_link()
        a.publish_nowait(TOPIC, b"B1", qos=1)
        dev.bad = True
        await asyncio.sleep_ms(300)
        print("FAILING", a.is_connected(), repr(a.client.last_error), a.pending(), a._task.done())
        print("STORE_ERROR", events, repr(a.client.store_error))
        recover()
        t0 = time.ticks_ms()
        while time.ticks_diff(time.ticks_ms(), t0) < 2000 and (not a.is_connected() or a.pending()):
            await asyncio.sleep_ms(20)
        print("AFTER", events, repr(a.client.store_error))
        return stopped(a)
    c = asyncio.run(main())
cut(c)
wait([w], 300, lambda: got)
c = booted()
delivered(c, w, got)
""" % (broker.port, front, store, cid))
    print(r.stdout)
    assert "RAISED" not in r.stdout, r.stdout
    assert "FAILING False OSError(5,) 1" in r.stdout, r.stdout
    # The batch's write error is the event "store_error", once while the
    # flash fails; the connect whose checkpoint got through clears it.
    assert "STORE_ERROR ['OSError(5,)'] OSError(5,)" in r.stdout, r.stdout
    assert "BEFORE THE CUT True 0" in r.stdout, r.stdout
    assert "AFTER ['OSError(5,)'] None" in r.stdout, r.stdout
    assert "BOOT 0" in r.stdout, r.stdout
    assert "DELIVERED [b'B1'] 0" in r.stdout, r.stdout


@pytest.mark.parametrize("front", ["MQTTClient", "RobustClient"])
def test_a_write_error_when_the_acknowledgements_fill_their_record_keeps_the_link(broker, front):
    """A FileLog's acknowledgements ride on the next record, or go alone
    once the window is empty; in batched mode (persist_batch_ms) with the
    window never empty they fill their record (one place per slot), which
    is then written inside the read that brought the next PUBACK. A write
    error there (EIO) came out of that read, which closed the link over a
    flash fault (RobustClient: a reconnect, the window sent again). Now
    the read goes on and the error comes out after it, the link up
    (MQTTClient: from check_msg(); RobustClient: the event "store_error");
    the next write is a checkpoint of the whole state, and once the flash
    works again a power cut and a boot find nothing to send again."""
    cid = "se-full-" + tag()
    r = run_mp(LFS + EIO + r"""
from durable_mqtt.robust import RobustClient
PORT, FRONT, CID = %d, %r, %r
STORE = "FileLog"
TOPIC = "se/full/" + CID
w, got = watch(TOPIC, 1)
events = []
acked = [0]
kw = dict(session_file=store(), persist_batch_ms=60000, max_inflight=4, outbox_size=16)
if FRONT == "RobustClient":
    c = RobustClient(CID, "127.0.0.1", PORT, backoff_ms=(20, 40), **kw)
    c.set_event_callback(lambda ev, info: ev == "store_error" and events.append(repr(info["error"])))
else:
    c = MQTTClient(CID, "127.0.0.1", PORT, clean_session=False, **kw)
c.connect()
def done(pid, reason):
    # Each of the first 40 acknowledgements publishes the next message
    # (the window is never empty; the batch of puts fills at 20: a flush
    # with the acks); the flash fails from the 42nd on.
    acked[0] += 1
    if acked[0] == 42:
        # The 20 batched went with the acks at the 21st's put; these 5
        # acks come with no put, the 47th finds their record full.
        dev.bad = True
        print("FULL AT", c.journal.nacks, c.journal.nbatch, len(c.journal.acks))
    if acked[0] <= 40:
        c.publish(TOPIC, b"M%%d" %% (acked[0] + 20), qos=1)
c.set_done_callback(done)
for n in range(20):
    c.publish(TOPIC, b"M%%d" %% (n + 1), qos=1)
raised = []
t0 = time.ticks_ms()
while c.pending() and time.ticks_diff(time.ticks_ms(), t0) < 5000:
    try:
        c.poll(20) if FRONT == "RobustClient" else c.wait_msg(20)
    except OSError as x:
        raised.append(repr(x))
        if not c.is_connected():
            break
print("FAILING", c.is_connected(), raised[:1], acked[0], c.pending())
if FRONT == "RobustClient":
    print("ROBUST", c.link_downs, events, repr(c.store_error))
dev.bad = False
for n in range(3):
    c.poll(20) if FRONT == "RobustClient" else c.check_msg()
if FRONT == "RobustClient":
    print("AFTER", repr(c.store_error))
print("BEFORE THE CUT", c.is_connected(), c.pending())
cut(c)
c = booted()
wait([c, w], 3000, lambda: len(got) >= 60)     # (all 60: the count is taken before delivered() waits)
delivered(c, w, len(got))
""" % (broker.port, front, cid))
    print(r.stdout)
    assert "FULL AT 21 20 57" in r.stdout, r.stdout          # 25 places: the 47th ack overflows
    if front == "RobustClient":
        assert "FAILING True [] 60 0" in r.stdout, r.stdout
        assert "ROBUST 0 ['OSError(5,)'] OSError(5,)" in r.stdout, r.stdout     # no link down
        assert "AFTER None" in r.stdout, r.stdout
    else:
        assert "FAILING True ['OSError(5,)'] 60 0" in r.stdout, r.stdout
    assert "BEFORE THE CUT True 0" in r.stdout and "BOOT 0" in r.stdout, r.stdout
    assert "DELIVERED 60 0" in r.stdout, r.stdout


def test_the_journal_behind_its_acknowledgements_tries_one_checkpoint_per_tick_not_per_ack():
    """The store's side of the test above, without a broker: a LogJournal
    on a FileLog on a LittleFS whose writes fail (EIO), the acknowledgements
    fed to it directly. The write when their record fills fails: the error
    is kept for tick(), and the acks that follow in the same read write
    nothing (each tried a whole checkpoint, a block erase each on the ring).
    tick() raises the kept error once, then each tick tries one checkpoint;
    the first that gets through ends it all. One that gets through before
    the tick (a PUBREC's record in the same read) leaves no stale error."""
    r = run_mp(LFS + EIO + r"""
from durable_mqtt.session import Session
from durable_mqtt.store import LogJournal
STORE = "FileLog"
e = Session(False, b"behind", 10, 8, 2048, 16, 4, 256)
e.expiry = 0xFFFFFFFF
log = store()
begun = [0]
begin = log.begin
def counted():
    begun[0] += 1
    begin()
log.begin = counted
j = LogJournal(log, e)
j.checkpoint()
def tick():
    try:
        j.tick(0)
        return "ok"
    except OSError as x:
        return repr(x)
for case in ("ticks", "checkpoint"):
    begun[0] = 0
    for pid in range(1, 10):
        j.acked(pid)
    print(case, "full at", j.nacks)
    dev.bad = True
    for pid in range(10, 20):
        j.acked(pid)                  # the 10th fills the record: one write, failed
    print(case, "behind", j.behind, j.nacks, "checkpoints tried", begun[0])
    if case == "ticks":
        print(case, "tick", tick(), tick(), begun[0])
        reboot()                      # the flash works again, mounted afresh (docs/api.md: littlefs 760)
        print(case, "tick", tick(), begun[0], j.behind, j.nacks)
    else:
        reboot()
        j.checkpoint()                # (as a PUBREC's put() would: the next write)
        print(case, "tick", tick(), j.behind, j.nacks)
""")
    out = r.stdout
    assert "ticks full at 9\nticks behind True 10 checkpoints tried 0" in out, out
    assert "ticks tick OSError(5,) OSError(5,) 1" in out, out          # the kept one, then one checkpoint
    assert "ticks tick ok 2 False 0" in out, out
    assert "checkpoint behind True 10 checkpoints tried 0" in out, out
    assert "checkpoint tick ok False 0" in out, out
