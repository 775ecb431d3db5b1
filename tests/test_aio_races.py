"""AsyncClient under concurrency and cancellation (a review's findings):
messages() overflow with mixed QoS, subscribes cancelled in a row, the
outcome of a publish() the session dropped at a reconnect, disconnect()
with calls still waiting, and a message callback that raises."""
import subprocess

import pytest

from conftest import MICROPYTHON, free_port, mp_env, run_mp
from fakebroker import FakeBroker, connack, pkt
from test_frontends import AIO
from faultproxy import FaultProxy


# The end of a call that may wait: its result, NotConnected, or "hung".
OUTCOME = r"""
async def outcome(name, coro):
    try:
        return "%s returned %r" % (name, await asyncio.wait_for_ms(coro, 2000))
    except NotConnected:
        return "%s NotConnected" % name
    except asyncio.TimeoutError:
        return "%s hung" % name
"""


def test_aio_a_qos0_message_over_a_full_queue_never_drops_a_qos1_copy(broker):
    # A burst of 4 QoS 1 then 2 QoS 0 messages with queue_size=4: each QoS 0
    # one dropped "the oldest copy", a QoS 1 message already PUBACKed: lost.
    # Now only QoS 0 copies go (the new one when the queue holds no other).
    r = run_mp(AIO % broker.port + r"""
from durable_mqtt import MQTTClient
async def main():
    c = await connected("race-q0", 2000, queue_size=4)
    await c.subscribe("race/q1", 1)
    await c.subscribe("race/q0", 0)
    p = MQTTClient("race-q0-pub", "127.0.0.1", PORT)
    p.connect()
    for i in range(4):
        p.publish("race/q1", b"q1-%d" % i, qos=1)
    while p.pending():
        p.wait_msg(1000)                  # (the event loop is held: c reads nothing yet)
    p.publish("race/q0", b"q0-0")
    p.publish("race/q0", b"q0-1")
    p.disconnect()
    await asyncio.sleep_ms(300)           # all six arrive in one read
    got = []
    it = c.messages()
    while True:
        try:
            got.append(bytes((await asyncio.wait_for_ms(it.__anext__(), 500))[1]))
        except asyncio.TimeoutError:
            break
    print("got", got, "dropped", c.dropped_messages)
    await c.disconnect()
asyncio.run(main())
""", timeout=60)
    assert "got [b'q1-0', b'q1-1', b'q1-2', b'q1-3'] dropped 2" in r.stdout, r.stdout


def test_aio_subscribes_cancelled_in_a_row_leave_the_link_up():
    # wait_for_ms() cancelled two subscribe() calls before their SUBACKs: the
    # session remembered one abandoned id, and the first late SUBACK was a
    # protocol error that closed the connection.
    def suback_to(i):
        return ("reply", lambda got: pkt(0x90, got[i][1][:2] + b"\x01"))
    fb = FakeBroker([("send", connack(4)), ("recv",), ("recv",), ("recv",), ("sleep", 0.1),
                     suback_to(1), suback_to(2), suback_to(3), ("sleep", 0.8)])
    r = run_mp(AIO % fb.port + r"""
async def main():
    c = await connected("race-cancel", 2000)
    for f in ("race/a", "race/b", "race/c"):
        try:
            await asyncio.wait_for_ms(c.subscribe(f, 1), 80)
        except asyncio.TimeoutError:
            print("cancelled", f)
    await asyncio.sleep_ms(500)
    print("link_downs", c.stats()["link_downs"], "error", repr(c.client.last_error), "connected", c.is_connected())
    await c.disconnect()
asyncio.run(main())
""", timeout=30)
    fb.join()
    assert r.stdout.count("cancelled") == 3, r.stdout
    assert "link_downs 0 error None connected True" in r.stdout, r.stdout


@pytest.mark.parametrize("case", ["expired", "refused"])
def test_aio_publish_raises_for_a_message_the_reconnect_dropped(case):
    # publish() awaited while the link is down; at the reconnect the message
    # leaves the session unsent: its Message Expiry passed (-1), or the new
    # CONNACK's Maximum QoS 1 forbids QoS 2 (0x9B). _on_up() took it for a
    # message finished outside the ack path and overwrote the outcome with
    # 0: publish() returned as if acknowledged.
    second = connack(5, props=b"\x24\x01") if case == "refused" else connack(5)
    fb = FakeBroker([("send", connack(5)), ("sleep", 0.2), ("close",)], [("send", second), ("sleep", 0.5)])
    r = run_mp(AIO % fb.port + r"""
async def main():
    c = await connected("race-drop", 2000, version=5, backoff_ms=(2400, 2400))
    while c.is_connected():
        await asyncio.sleep_ms(10)
    props = {"message_expiry": 1} if "%s" == "expired" else None
    try:
        print("returned", await asyncio.wait_for_ms(c.publish("race/t", b"x", qos=2, props=props), 5000))
    except MQTTException as e:
        print("raised", e.args[0])
    await c.disconnect()
asyncio.run(main())
""" % case, timeout=30)
    fb.join()
    assert ("raised -1" if case == "expired" else "raised 155") in r.stdout, r.stdout


def test_aio_disconnect_ends_what_waits_for_the_connection():
    # No broker: connect(), subscribe() and a QoS 1 publish() wait for a
    # connection. disconnect() left them waiting for good (a subscribe
    # already sent raised NotConnected). Now each raises NotConnected; the
    # message stays queued.
    r = run_mp(AIO % free_port() + OUTCOME + r"""
async def main():
    c = AsyncClient("race-disc", "127.0.0.1", PORT, backoff_ms=(100, 200))
    ts = [asyncio.create_task(outcome("connect", c.connect())),
          asyncio.create_task(outcome("subscribe", c.subscribe("race/s", 1))),
          asyncio.create_task(outcome("publish", c.publish("race/t", b"x", qos=1)))]
    await asyncio.sleep_ms(300)
    await c.disconnect()
    for t in ts:
        print(await t)
    print("pending", c.pending())
asyncio.run(main())
""", timeout=30)
    for name in ("connect", "subscribe", "publish"):
        assert name + " NotConnected" in r.stdout, r.stdout
    assert "pending 1" in r.stdout, r.stdout


def test_aio_a_raising_callback_neither_stalls_nor_drops_the_link(broker):
    # A callback that raises: (1) for a QoS 1 message it was left
    # unacknowledged on a live link, so after receive_max of them the broker
    # sent nothing more; (2) an OSError (QueueFull from a publish_nowait()
    # in it) dropped the link, again at every redelivery; (3) raised while a
    # subscribe() read the socket, it failed that subscribe().
    r = run_mp(AIO % broker.port + r"""
from durable_mqtt import MQTTClient, QueueFull
good = []
def cb(t, m, r, q):
    if m[:3] == b"bad":
        raise ValueError("application bug")
    if m[:4] == b"full":
        raise QueueFull(-7, "outbox full")
    good.append(bytes(m))
async def main():
    c = await connected("race-cb", 2000, cb, version=5, receive_max=4, keepalive=5)
    await c.subscribe("race/cb", 1)
    p = MQTTClient("race-cb-pub", "127.0.0.1", PORT)
    p.connect()
    for m in (b"bad0", b"bad1", b"bad2", b"bad3", b"full", b"good0", b"good1", b"bad4"):
        p.publish("race/cb", m, qos=1)
    while p.pending():
        p.wait_msg(1000)
    p.disconnect()
    print("granted", await c.subscribe("race/other", 1))     # it reads the burst
    for i in range(100):
        if len(good) == 2:
            break
        await asyncio.sleep_ms(20)
    print("good", good, "errors", c.callback_errors, "link_downs", c.stats()["link_downs"])
    await c.disconnect()
asyncio.run(main())
""", timeout=60)
    assert "granted 1" in r.stdout, r.stdout
    assert "good [b'good0', b'good1'] errors 6 link_downs 0" in r.stdout, r.stdout


def test_aio_acks_owed_by_a_subscribe_read_are_sent_at_once(broker):
    # subscribe()'s read loop stops at the SUBACK: the PUBACKs owed for QoS 1
    # messages it read before stayed unsent, and the background task waited
    # for the socket, which the broker (Receive Maximum 4 used up) kept
    # quiet until the keepalive ping flushed them: 30 s at keepalive 60.
    # (The SUBACK lands among the messages in some rounds only: 6 rounds.)
    r = run_mp(AIO % broker.port + r"""
from durable_mqtt import MQTTClient
async def main():
    worst = 0
    for rnd in range(6):
        c = await connected("race-acks", 2000, version=5, receive_max=4, keepalive=60, clean_session=True)
        await c.subscribe("race/acks", 1)
        p = MQTTClient("race-acks-pub", "127.0.0.1", PORT)
        p.connect()
        for i in range(8):
            p.publish("race/acks", b"%d" % i, qos=1)
        while p.pending():
            p.wait_msg(1000)
        p.disconnect()
        t0 = time.ticks_ms()
        await c.subscribe("race/other", 1)
        it = c.messages()
        n = 0
        while n < 8:
            try:
                await asyncio.wait_for_ms(it.__anext__(), 2000)
                n += 1
            except asyncio.TimeoutError:
                break
        worst = max(worst, time.ticks_diff(time.ticks_ms(), t0))
        await c.disconnect()
    print("worst", worst)
asyncio.run(main())
""", timeout=60)
    assert int(r.stdout.split("worst ")[1].split()[0]) < 1000, r.stdout


def test_aio_disconnect_that_raises_still_ends_what_waits():
    # disconnect(session_expiry=0) with the link down: client.disconnect()
    # raises NotConnected after the background task was cancelled, and the
    # waiters were woken only after it: connect(), subscribe() and publish()
    # hung for ever (no task left to connect).
    r = run_mp(AIO % free_port() + OUTCOME + r"""
async def main():
    c = AsyncClient("race-disc-raise", "127.0.0.1", PORT, version=5, backoff_ms=(100, 200))
    ts = [asyncio.create_task(outcome("connect", c.connect())),
          asyncio.create_task(outcome("subscribe", c.subscribe("race/s", 1))),
          asyncio.create_task(outcome("publish", c.publish("race/t", b"x", qos=1)))]
    await asyncio.sleep_ms(300)
    try:
        await c.disconnect(session_expiry=0)
    except NotConnected:
        print("disconnect raised")
    for t in ts:
        print(await t)
asyncio.run(main())
""", timeout=30)
    assert "disconnect raised" in r.stdout, r.stdout
    for name in ("connect", "subscribe", "publish"):
        assert name + " NotConnected" in r.stdout, r.stdout


def test_aio_a_qos1_copy_that_finds_no_heap_is_not_acknowledged(broker):
    # messages() path: _deliver's copy of the message (bytes(msg)) runs as
    # the client's message callback. A MemoryError there was caught as "the
    # callback raised" and the message PUBACKed: an acknowledged QoS 1
    # message that never reached the queue, gone for good. Unacknowledged,
    # the broker sends it again after a reconnect.
    r = run_mp(AIO % broker.port + r"""
import gc
from durable_mqtt import MQTTClient
BIG = 6000
async def main():
    c = await connected("race-oom", 2000, buf_size=8192, keepalive=30)
    await c.subscribe("race/oom", 1)
    p = MQTTClient("race-oom-pub", "127.0.0.1", PORT, buf_size=8192)
    p.connect()
    payload = b"P" * BIG
    await asyncio.sleep_ms(50)
    gc.collect()
    ballast = []
    try:
        while True:
            ballast.append(bytearray(1024))
    except MemoryError:
        pass
    for i in range(0, len(ballast), 4):
        ballast[i] = None                 # 1 KB holes: no 6 KB block for the copy
    p.publish("race/oom", payload, False, 1)
    t0 = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), t0) < 500:
        p.check_msg()
        await asyncio.sleep_ms(20)
    ballast = None
    gc.collect()
    print("received", c.stats()["received"], "queued", len(c._queue))
    await c.disconnect()
    await c.connect(timeout_ms=2000)
    got = []
    it = c.messages()
    while True:
        try:
            got.append(len((await asyncio.wait_for_ms(it.__anext__(), 1000))[1]))
        except asyncio.TimeoutError:
            break
    print("after reconnect", got)
    await c.disconnect()
    p.disconnect()
asyncio.run(main())
""", heapsize="400k", timeout=60)
    assert "received 1 queued 0" in r.stdout, r.stdout      # the copy did fail
    assert "after reconnect [6000]" in r.stdout, r.stdout



STALLED_SUB = r"""
import asyncio, sys, time
from durable_mqtt.aio import AsyncClient
downs = []
async def main():
    c = AsyncClient("race-stall-sub", "127.0.0.1", %(port)d, version=%(ver)d, timeout_ms=500,
                    keepalive=60, buf_size=420000, backoff_ms=(50, 100),
                    on_down=lambda c, x: downs.append(repr(x)))
    await c.connect(timeout_ms=3000)
    c.client.socket().setsockopt(1, 7, 4096)      # SOL_SOCKET, SO_SNDBUF: a board's send room
    print("READY")
    sys.stdin.readline()                          # the proxy forwards nothing now
    # A QoS 0 message larger than the send room and the proxy's receive
    # room: its write stalls, and after timeout_ms its Timeout ends the
    # link, kept for the background task (which has not run since).
    c.publish_nowait("race/stall", b"x" * 400000)
    print("LINK", c.is_connected(), c.up.is_set())
    try:
        r = repr(await c.subscribe("race/stall/sub", 1, timeout_ms=3000))
    except Exception as x:
        r = repr(x)
    print("SUB", r, "UP", c.is_connected(), "DOWNS", downs, c.stats()["link_downs"])
    await c.disconnect()
asyncio.run(main())
"""


def _stalled_for_3s(broker, script, template, ver):
    # Runs template (it prints READY, then waits for a line) through a fault
    # proxy whose broker-bound direction stalls for 3 s from READY on; its
    # output.
    with FaultProxy(upstream=("127.0.0.1", broker.port)) as p:
        script.write_text(template % {"port": p.port, "ver": ver})
        dev = subprocess.Popen([MICROPYTHON, "-X", "heapsize=4m", str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=mp_env())
        line = dev.stdout.readline()
        assert line.startswith("READY"), line + dev.stdout.read()
        p.stall("up", seconds=3)
        # Attempts meanwhile are refused, not held: a CONNECT held past its
        # attempt's timeout reached the broker when the stall ended and took
        # the session from the link made then (the broker closed it).
        p.refuse = True
        p.run_script([(3.1, "refuse", "off")])
        out, _ = dev.communicate("go\n", timeout=30)
    return out


@pytest.mark.parametrize("ver", [4, 5])
def test_aio_subscribe_waits_for_the_reconnect_after_a_publish_stalled_the_link(broker, tmp_path, ver):
    # A publish whose write stalled past timeout_ms ended the link, its
    # Timeout kept for the background task (which reports it: on_down,
    # then reconnects). A subscribe() issued before the task ran took
    # that Timeout as its own (the link's kept failure, raised by the
    # first call that needs the link) and raised it, and on_down heard
    # only "link dropped while sending". Now the subscribe waits for the
    # reconnect and subscribes on the new link; the Timeout goes to on_down.
    out = _stalled_for_3s(broker, tmp_path / "stall_sub.py", STALLED_SUB, ver)
    assert "LINK False True" in out, out            # the link failed, the task had not seen it yet
    assert "SUB 1 UP True" in out, out
    assert "write stalled" in out.split("DOWNS", 1)[1], out


FAILED_UNDER_SUB = r"""
import asyncio, sys, time
from durable_mqtt.aio import AsyncClient
downs = []
async def main():
    c = AsyncClient("race-fail-sub", "127.0.0.1", %(port)d, version=%(ver)d, timeout_ms=500,
                    keepalive=60, buf_size=420000, backoff_ms=(50, 100), queue_size=1,
                    on_down=lambda c, x: downs.append(repr(x)))
    await c.connect(timeout_ms=3000)
    c.client.socket().setsockopt(1, 7, 4096)      # SOL_SOCKET, SO_SNDBUF: a board's send room
    await c.subscribe("race/fail/q", 0)
    c.publish_nowait("race/fail/q", b"fills the queue")
    it = c.messages()
    while c.stats()["received"] < 1:
        await asyncio.sleep_ms(20)
    # The queue is full: the background task reads no more, the subscribe
    # below is the link's only reader.
    print("READY")
    sys.stdin.readline()                          # the proxy forwards nothing now
    sub = asyncio.create_task(c.subscribe("race/fail/sub", 1, timeout_ms=5000))
    await asyncio.sleep_ms(100)                   # it waits for its SUBACK
    # A QoS 0 message larger than the send room and the proxy's receive
    # room: its write stalls, and after timeout_ms its Timeout ends the
    # link, kept for the background task while the subscribe waits.
    c.publish_nowait("race/fail/big", b"x" * 400000)
    print("LINK", c.is_connected(), c.up.is_set())
    await asyncio.sleep_ms(200)                   # the subscribe sees the link closed
    await it.__anext__()                          # room in the queue: the task looks again
    for _ in range(100):
        if downs:
            break
        await asyncio.sleep_ms(20)
    print("DOWNS", downs)
    try:
        r = repr(await sub)
    except Exception as x:
        r = repr(x)
    print("SUB", r)
    await c.disconnect()
asyncio.run(main())
"""


@pytest.mark.parametrize("ver", [4, 5])
def test_aio_a_link_failure_met_while_a_subscribe_waits_reaches_on_down(broker, tmp_path, ver):
    # A publish's write stalled past timeout_ms while a subscribe() waited
    # for its SUBACK: the link closed, its Timeout kept for the background
    # task. The subscribe, seeing the link closed, failed on it and cleared
    # that Timeout (k.failed(x); k.failure = None, its own failure's
    # handling), and on_down heard only "link dropped while sending". Now a
    # request leaves a failure another call met before it: on_down hears the
    # real cause; the subscribe still waits for the reconnect.
    out = _stalled_for_3s(broker, tmp_path / "fail_under_sub.py", FAILED_UNDER_SUB, ver)
    assert "LINK False True" in out, out            # the link failed, the task had not seen it yet
    downs = out.split("DOWNS", 1)[1].split("\n", 1)[0]
    assert "write stalled" in downs and "dropped while sending" not in downs, out
    assert "SUB 1" in out, out



LATE_ANSWER = r"""
import asyncio
from durable_mqtt.aio import AsyncClient

async def main():
    c = AsyncClient("aio-late", "127.0.0.1", %(port)d, version=%(ver)d, session_file=%(path)r,
                    clean_session=False)
    await c.connect(timeout_ms=3000)
    for call in (lambda: c.subscribe("late/a", 1), lambda: c.subscribe("late/b", 0),
                 lambda: c.unsubscribe("late/b")):
        try:
            await asyncio.wait_for_ms(call(), 150)       # the broker answers after 400 ms
        except asyncio.TimeoutError:
            print("cancelled")
        await asyncio.sleep_ms(500)                      # the late answer arrives; the task reads it
        print("SUBS", [bytes(s[0]) for s in c.client.engine.subs])
    await c.disconnect()
    c.client.close()
    d = AsyncClient("aio-late", "127.0.0.1", %(port)d, version=%(ver)d, session_file=%(path)r)
    print("BOOT", [bytes(s[0]) for s in d.client.engine.subs])

asyncio.run(main())
"""


@pytest.mark.parametrize("ver", [4, 5])
def test_aio_a_cancelled_request_whose_answer_comes_late_is_recorded(tmp_path, ver):
    # The broker made the subscription (or removed it) whatever the
    # caller's wait became: the late SUBACK / UNSUBACK is recorded in the
    # session, as an awaited one is, and reaches flash. Unrecorded, a lost
    # session was not resubscribed to the filter, and a cancelled
    # unsubscribe's filter came back with the next resubscribe.
    p5 = b"\x00" if ver == 5 else b""

    def late(i, first, code):        # the answer to the i-th packet received (0: the CONNECT)
        return ("reply", lambda got: pkt(first, got[i][1][:2] + p5 + code))
    fb = FakeBroker([("send", connack(ver)), ("recv",), ("sleep", 0.4), late(1, 0x90, b"\x01"),
                     ("recv",), ("sleep", 0.4), late(2, 0x90, b"\x00"),
                     ("recv",), ("sleep", 0.4), late(3, 0xB0, b"\x00" if ver == 5 else b"")])
    r = run_mp(LATE_ANSWER % {"port": fb.port, "ver": ver, "path": str(tmp_path / "s")}, timeout=30)
    fb.join()
    assert r.stdout.split("\n")[:7] == ["cancelled", "SUBS [b'late/a']", "cancelled", "SUBS [b'late/a', b'late/b']",
                                        "cancelled", "SUBS [b'late/a']", "BOOT [b'late/a']"], r.stdout
