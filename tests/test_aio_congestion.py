"""A congested link never holds the asyncio event loop. A broker (a thread
here) that stops reading fills the socket's buffers; the application keeps
publishing. AsyncClient writes only while the socket has room: what does
not fit waits in the session (QoS 1/2) or the QoS 0 queue, and a task sends
it when the socket has room again. Before, a publish on a full socket waited
for room up to timeout_ms, holding every other task (a watchdog feeder, a
sensor loop) for that long, and a QoS 0 publish then dropped the link."""

import threading
import time

import pytest

from conftest import fields, run_mp
from fakebroker import FakeBroker, connack, pkt, stalling_broker, u16

SCRIPT = r"""
import asyncio, time
from durable_mqtt.aio import AsyncClient

from testlib import ticker
loop = [0, 0]               # ticker's wake-ups, longest gap (ms)

async def main():
    c = AsyncClient("aio-full", "127.0.0.1", %(port)d, version=%(ver)d, timeout_ms=3000,
                    keepalive=0, buf_size=1100, outbox_size=40, outbox_bytes=60000)
    await c.connect(timeout_ms=2000)
    asyncio.create_task(ticker(loop))
    msg = b"x" * 1000
    t0 = time.ticks_ms()
    # QoS 0 until the socket is full, and on (the broker reads nothing for 2 s)
    for i in range(%(n0)d):
        c.publish_nowait("aio/full", msg, qos=0)
        await asyncio.sleep_ms(0)
    print("QOS0", time.ticks_diff(time.ticks_ms(), t0), "GAP", loop[1], "UP", c.is_connected())
    ids = [c.publish_nowait("aio/full", msg, qos=1) for i in range(30)]
    print("QUEUED", c.pending(), "UP", c.is_connected())
    # The broker reads again after 2 s and acknowledges: all 30 go out.
    print("ACKED", await c.flush(15000), c.pending())
    print("TICKS", loop[0], "GAP", loop[1], "UP", c.is_connected())
    print("STATS", c.stats()["dropped_qos0"], c.stats()["sent"])
    await c.disconnect()

asyncio.run(main())
"""


def slow_reader(v, stall_s):
    """stalling_broker() that then reads everything: it acknowledges QoS 1
    PUBLISHes, counts QoS 0 ones, records the payloads on aio/last and
    whether a DISCONNECT came."""
    seen = {"qos0": 0, "qos1": set(), "last": [], "disconnect": False}

    def read_all(conn):
        while True:
            p = FakeBroker._read(FakeBroker, conn)
            if p is None:
                return
            if p[0] == 0xE0:
                seen["disconnect"] = True
                return
            first, body = p
            if first & 0xF0 != 0x30:
                continue
            tl = body[0] << 8 | body[1]
            if first >> 1 & 3:
                pid = body[2 + tl:4 + tl]
                seen["qos1"].add(pid)
                conn.sendall(pkt(0x40, pid + (b"\x00\x00" if v == 5 else b"")))
                continue
            seen["qos0"] += 1
            if body[2:2 + tl] == b"aio/last":
                seen["last"].append(body[2 + tl + (1 if v == 5 else 0):])
    port, t = stalling_broker(v, stall_s, read_all)
    return port, t, seen


@pytest.mark.parametrize("ver", [4, 5])
def test_publishing_into_a_full_socket_leaves_other_tasks_running(ver):
    port, t, seen = slow_reader(ver, 2.0)
    r = run_mp(SCRIPT % {"port": port, "ver": ver, "n0": 3000}, timeout=60)
    t.join(10)
    q0 = fields(r.stdout, "QOS0")
    # The flood met a full socket (3 MB of QoS 0 against a broker reading
    # nothing), and no publish held the loop: the ticker ran every few ms,
    # never stopping for the 3 s a blocking write may wait. The link stayed up.
    assert int(q0[3]) < 500, r.stdout
    assert q0[5] == "True", r.stdout
    assert fields(r.stdout, "QUEUED")[1] == "30", r.stdout
    acked = fields(r.stdout, "ACKED")
    assert acked[1:] == ["True", "0"], r.stdout
    ticks = fields(r.stdout, "TICKS")
    assert int(ticks[3]) < 500 and ticks[5] == "True", r.stdout
    dropped, sent = map(int, fields(r.stdout, "STATS")[1:3])
    # Every QoS 1 message reached the broker once the socket had room; the
    # QoS 0 messages the queue could not hold were dropped and counted.
    assert len(seen["qos1"]) == 30, seen
    assert dropped > 0 and seen["qos0"] + dropped == 3000, (seen["qos0"], dropped, r.stdout)
    assert sent == 30 + seen["qos0"], (sent, seen["qos0"])


HEAR = r"""
import asyncio, time
from durable_mqtt.aio import AsyncClient

got = []

async def main():
    c = AsyncClient("aio-hear", "127.0.0.1", %(port)d, version=%(ver)d, timeout_ms=3000,
                    keepalive=60, buf_size=1100, outbox_size=40, outbox_bytes=60000)
    c.set_callback(lambda t, m, r, q: got.append(time.ticks_ms()))
    await c.connect(timeout_ms=2000)
    t0 = time.ticks_ms()
    msg = b"x" * 1000
    # QoS 0 for 1.3 s: the socket is full (a few MB), and stays so for over a second.
    while time.ticks_diff(time.ticks_ms(), t0) < 1300:
        for i in range(20):
            c.publish_nowait("aio/full", msg, qos=0)
        await asyncio.sleep_ms(1)
    # The broker reads again 1.5 s after CONNACK, and sends a message 0.5 s later.
    while not got and time.ticks_diff(time.ticks_ms(), t0) < 8000:
        await asyncio.sleep_ms(20)
    print("HEARD", time.ticks_diff(got[0], t0) if got else -1, "UP", c.is_connected())
    await c.disconnect()

asyncio.run(main())
"""


def stalling_talker(v, stall_s, talk_after_s):
    """stalling_broker() that then reads everything, and talk_after_s later
    sends the client a PUBLISH."""
    def drain(conn):
        try:
            while FakeBroker._read(FakeBroker, conn) is not None:
                pass
        except OSError:
            pass

    def talk(conn):
        threading.Thread(target=drain, args=(conn,), daemon=True).start()
        time.sleep(talk_after_s)
        conn.sendall(pkt(0x30, u16(4) + b"in/x" + (b"\x00" if v == 5 else b"") + b"hello"))
        time.sleep(10)
    return stalling_broker(v, stall_s, talk)


@pytest.mark.parametrize("ver", [4, 5])
def test_a_congested_link_still_hears_the_broker(ver):
    # _send_rest() waited for room with a timeout; asyncio's IOQueue drops a
    # socket's whole entry when one waiter on it is cancelled, so each
    # timeout took the background task's read wait with it: the broker's
    # messages then waited for that task's own timeout (up to half the
    # keepalive: 30 s here).
    port, t = stalling_talker(ver, 1.5, 0.5)
    r = run_mp(HEAR % {"port": port, "ver": ver}, timeout=60)
    f = fields(r.stdout, "HEARD")
    assert 0 < int(f[1]) < 4000 and f[3] == "True", r.stdout


LAST = r"""
import asyncio, time
from durable_mqtt.aio import AsyncClient

async def main():
    c = AsyncClient("aio-last", "127.0.0.1", %(port)d, version=%(ver)d, timeout_ms=4000,
                    keepalive=0, buf_size=1100, outbox_size=40, outbox_bytes=60000)
    await c.connect(timeout_ms=2000)
    msg = b"x" * 1000
    t0 = time.ticks_ms()
    # Until the socket is full (the broker reads nothing for 1 s) ...
    while not c.client.conn.full and time.ticks_diff(time.ticks_ms(), t0) < 900:
        c.publish_nowait("aio/full", msg, qos=0)
    # ... then the last readings, and the DISCONNECT before deep sleep.
    for i in range(5):
        c.publish_nowait("aio/last", b"%%d" %% i, qos=0)
    s = c.stats()
    await c.disconnect()
    print("FULL", c.client.conn.full, "SENT", c.stats()["sent"], "DROPPED", c.stats()["dropped_qos0"])

asyncio.run(main())
"""


@pytest.mark.parametrize("ver", [4, 5])
def test_disconnect_sends_what_was_published_before_it(ver):
    # A QoS 0 message the full socket had no room for waited in the queue
    # for _send_rest(); disconnect() sent DISCONNECT past it and closed:
    # neither sent nor counted as dropped, where a blocking write had sent
    # it before the DISCONNECT.
    port, t, seen = slow_reader(ver, 1.0)
    r = run_mp(LAST % {"port": port, "ver": ver}, timeout=60)
    t.join(15)
    f = fields(r.stdout, "FULL")
    assert seen["last"] == [b"0", b"1", b"2", b"3", b"4"], (seen["last"], r.stdout)
    assert seen["disconnect"], seen
    assert int(f[3]) == seen["qos0"], (seen["qos0"], r.stdout)
