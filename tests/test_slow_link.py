"""Bad networks and hostile brokers against the front ends, found in
review: a link that moves, but slowly, under a packet larger than the
socket's send room; a TCP connect that gets no answer; and, held, a broker
that lies (a stray PUBACK, a SUBACK with the wrong id, a close mid-packet),
a board's ticks wrapping during keepalive, several brokers of which the
first is dead.

A write was bounded by timeout_ms from the moment it first found no room,
however much it moved after: a 60 KB PUBLISH on a link taking 10 KB/s,
with timeout_ms 2 s, ended in Timeout ("write stalled") although the
broker never stopped reading; the link was dropped, and each reconnect
sent the message again into the same end: never delivered. A stall is
timeout_ms without progress (docs/api.md, "a stalled write")."""
import concurrent.futures
import socket
import time

import pytest

from conftest import fields, free_port, run_mp
from fakebroker import FakeBroker, connack, packets, pkt, publish, stalling_broker, u16

SIZE = 60000              # the PUBLISH's payload: many times the send room
CHUNK, PAUSE = 512, 0.05  # the broker reads 10 KB/s


def slow_reader(v, chunk=CHUNK, pause=PAUSE):
    """A broker that answers CONNECT, then reads `chunk` bytes every `pause`
    seconds with a small receive buffer (the client's socket fills), and
    acknowledges every QoS 1 PUBLISH, recording (QoS, payload length).
    Returns (port, thread, seen)."""
    seen = {"pubs": [], "disconnect": False}

    def read_slowly(conn):
        for first, body in packets(conn, chunk, pause):
            if first == 0xE0:
                seen["disconnect"] = True
                return
            if first & 0xF0 == 0x30:
                tl = body[0] << 8 | body[1]
                qos = first >> 1 & 3
                head = 2 + tl + (2 if qos else 0) + (1 if v == 5 else 0)
                seen["pubs"].append((qos, len(body) - head))
                if qos:
                    conn.sendall(pkt(0x40, body[2 + tl:4 + tl] + (b"\x00\x00" if v == 5 else b"")))

    port, t = stalling_broker(v, 0, read_slowly, io_timeout=30)
    return port, t, seen


# The client's socket gets a board-sized send buffer (SO_SNDBUF 4096: Linux
# makes it about 8 KB), so that the PUBLISH is larger than its room.
BLOCKING = r"""
import time
from durable_mqtt import MQTTClient
c = MQTTClient("slow-big", "127.0.0.1", %(port)d, version=%(ver)d, timeout_ms=2000,
               buf_size=%(size)d + 200, outbox_bytes=2 * %(size)d + 600)
c.connect()
c.socket().setsockopt(1, 7, 4096)      # SOL_SOCKET, SO_SNDBUF
t0 = time.ticks_ms()
err = None
try:
    c.publish("slow/big", b"y" * %(size)d, qos=1)
    while c.pending() and time.ticks_diff(time.ticks_ms(), t0) < 20000:
        c.wait_msg(100)
except OSError as x:
    err = x
print("DONE", time.ticks_diff(time.ticks_ms(), t0), "PENDING", c.pending(), "UP", c.is_connected(), repr(err))
c.disconnect()
"""

ASYNC = r"""
import asyncio, time
from durable_mqtt.aio import AsyncClient
from testlib import ticker
loop = [0, 0]
async def main():
    c = AsyncClient("slow-big", "127.0.0.1", %(port)d, version=%(ver)d, timeout_ms=2000,
                    keepalive=0, buf_size=%(size)d + 200, outbox_bytes=2 * %(size)d + 600)
    await c.connect(timeout_ms=2000)
    c.client.socket().setsockopt(1, 7, 4096)      # SOL_SOCKET, SO_SNDBUF
    asyncio.create_task(ticker(loop))
    await asyncio.sleep_ms(50)
    t0 = time.ticks_ms()
    try:
        r = await c.publish("slow/big", b"y" * %(size)d, qos=1, timeout_ms=20000)
    except Exception as x:
        r = repr(x)
    print("DONE", time.ticks_diff(time.ticks_ms(), t0), "PENDING", c.pending(), "UP", c.is_connected(),
          "DOWNS", c.stats()["link_downs"], "GAP", loop[1], "R", r)
    await c.disconnect()
asyncio.run(main())
"""


@pytest.mark.parametrize("front", ["blocking", "async"])
def test_a_large_publish_on_a_slow_but_moving_link_is_delivered(front):
    # Before: "write stalled 1000 ms" about 1 s into the write (the broker
    # reading all along), the link dropped, the message still pending.
    port, t, seen = slow_reader(4)
    r = run_mp((BLOCKING if front == "blocking" else ASYNC) % {"port": port, "ver": 4, "size": SIZE},
               timeout=60)
    t.join(10)
    f = fields(r.stdout, "DONE")
    assert seen["pubs"] == [(1, SIZE)], (seen, r.stdout)      # whole, once
    assert f[3] == "0" and f[5] == "True", r.stdout           # acknowledged, link up
    # It took the link's time (about 2 s past the first stall), longer
    # than timeout_ms: the write went on while the broker read.
    assert int(f[1]) > 1500, r.stdout
    if front == "async":
        assert f[7] == "0", r.stdout
    assert seen["disconnect"], seen


def syn_hole():
    """A port whose SYNs go unanswered, as a broker host that is down or a
    lost route: a listener that never accepts, its backlog full (Linux
    drops a SYN then). Returns (listener, the sockets filling it)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(0)
    fill = []
    for _ in range(4):
        c = socket.socket()
        c.setblocking(False)
        try:
            c.connect(s.getsockname())
        except BlockingIOError:
            pass
        fill.append(c)
    time.sleep(0.2)
    return s, fill


def test_aio_a_tcp_connect_without_answer_does_not_hold_the_loop():
    # The TCP connect was awaited (timeout_ms), but when it timed out the
    # CONNECT was written all the same, into a socket still connecting:
    # that write waited for room another timeout_ms holding the event loop
    # (a ticking task stood still 2 s here, 10 s at the default), and the
    # attempt failed as "write stalled".
    s, fill = syn_hole()
    try:
        r = run_mp(r"""
import asyncio, time
from durable_mqtt.aio import AsyncClient
from testlib import ticker
loop = [0, 0]
async def main():
    asyncio.create_task(ticker(loop))
    c = AsyncClient("hole", "127.0.0.1", %d, keepalive=10, timeout_ms=2000)
    t0 = time.ticks_ms()
    try:
        await c.connect(timeout_ms=5000)
    except Exception as x:
        print(repr(x))
    print("DONE", time.ticks_diff(time.ticks_ms(), t0), "GAP", loop[1], "FAILURES", c.stats()["connect_failures"])
    print("ERROR", repr(c.client.last_error))
    await c.disconnect()
asyncio.run(main())
""" % s.getsockname()[1], timeout=60)
    finally:
        for c in fill:
            c.close()
        s.close()
    f = fields(r.stdout, "DONE")
    assert int(f[3]) < 500, r.stdout                    # was 2,000 ms (timeout_ms)
    assert int(f[5]) >= 2, r.stdout                     # 2 s per attempt, not 4
    assert "no answer in 2000 ms" in r.stdout and "write stalled" not in r.stdout, r.stdout


def test_aio_a_lying_broker_costs_a_reconnect_each_time_and_nothing_else():
    # Held: a PUBACK for an id never sent, a SUBACK with the wrong id and a
    # PUBLISH cut off mid-packet by a close each end that connection
    # (ProtocolError, PeerClosed) and nothing more: the publish() and the
    # subscribe() waiting across them complete on the next connection, the
    # message in flight is sent again once (DUP), the cut message is
    # delivered once, whole, when the broker sends it again.
    def pid_of(got):
        body = got[-1][1]
        return body[2 + (body[0] << 8 | body[1]):][:2]
    whole = pkt(0x32, u16(3) + b"c/m" + u16(5) + b"whole message")
    fb = FakeBroker([("send", connack(4)), ("recv",), ("send", pkt(0x40, u16(999)))],
                    [("send", connack(4, sp=1)), ("recv",), ("reply", lambda g: pkt(0x40, pid_of(g))),
                     ("recv",), ("send", pkt(0x90, u16(999) + b"\x01"))],
                    [("send", connack(4, sp=1)), ("recv",), ("reply", lambda g: pkt(0x90, g[-1][1][:2] + b"\x01")),
                     ("send", whole[:12]), ("close",)],
                    [("send", connack(4, sp=1)), ("send", whole), ("recv",), ("sleep", 0.5)], io_timeout=15)
    r = run_mp(r"""
import asyncio, time
from durable_mqtt.aio import AsyncClient
got = []
async def main():
    c = AsyncClient("liar", "127.0.0.1", %d, keepalive=20, timeout_ms=2000, backoff_ms=(50, 200))
    c.set_callback(lambda t, m, r, q: got.append((bytes(t), bytes(m), q)))
    await c.connect(timeout_ms=3000)
    print("PUB", await c.publish("c/p", b"once", qos=1, timeout_ms=5000))
    print("SUB", await c.subscribe("c/m", 1, timeout_ms=2000))
    t0 = time.ticks_ms()
    while not got and time.ticks_diff(time.ticks_ms(), t0) < 5000:
        await asyncio.sleep_ms(20)
    await asyncio.sleep_ms(200)
    print("GOT", got)
    print("STATS", c.stats()["link_downs"], c.pending(), repr(c.client.last_error))
    await c.disconnect()
asyncio.run(main())
""" % fb.port, timeout=60)
    fb.join()
    assert fields(r.stdout, "PUB")[1] == "1", r.stdout
    assert fields(r.stdout, "SUB")[1] == "1", r.stdout
    assert "GOT [(b'c/m', b'whole message', 1)]" in r.stdout, r.stdout
    assert fields(r.stdout, "STATS")[1:3] == ["3", "0"], r.stdout
    pubs = [p for conn in fb.conns for p in conn if p[0] & 0xF0 == 0x30]
    assert [p[0] for p in pubs] == [0x32, 0x3A], fb.conns       # sent, then once again with DUP
    assert fb.conns[3][1:] == [(0x40, u16(5)), (0xE0, b"")], fb.conns    # the whole one acknowledged


# A board's ticks for the whole library: period 2**30 ms,
# starting 1.5 s before the wrap. Installed as the module "time" before
# anything imports it.
BOARD_TICKS = r"""
import sys, time as _t
P = 1 << 30
class BoardTime:
    off = 0
    @staticmethod
    def ticks_ms():
        return (_t.ticks_ms() + BoardTime.off) & (P - 1)
    @staticmethod
    def ticks_add(a, d):
        return (a + d) & (P - 1)
    @staticmethod
    def ticks_diff(a, b):
        d = (a - b) & (P - 1)
        return d - P if d >= P // 2 else d
    @staticmethod
    def near_wrap():
        BoardTime.off = P - 1500 - _t.ticks_ms()
for _k in dir(_t):
    if not _k.startswith("ticks") and not _k.startswith("_"):
        setattr(BoardTime, _k, getattr(_t, _k))
sys.modules["time"] = BoardTime
import time
"""

WRAP_BLOCKING = BOARD_TICKS + r"""
from durable_mqtt.robust import RobustClient
def run(port, ms):
    BoardTime.near_wrap()
    c = RobustClient("wrap", "127.0.0.1", port, keepalive=2, timeout_ms=1500)
    c.connect()
    t0 = time.ticks_ms()
    down = -1
    while time.ticks_diff(time.ticks_ms(), t0) < ms:
        c.poll(50)
        if down < 0 and c.link_downs:
            down = time.ticks_diff(time.ticks_ms(), t0)
    print("RUN", t0 > P - 2000, time.ticks_ms() < 10000, c.link_downs, down)
    c.disconnect()
run(%(port)d, %(ms)d)
"""

def test_keepalive_across_a_wrap_of_the_boards_ticks(broker):
    # Held: ticks_ms() wraps at 2**30 on a board (12.4 days). Across the
    # wrap, a live link is pinged and kept (no drop in 5 s at keepalive 2 s),
    # and a broker silent after CONNACK is found dead within 1.5 x keepalive.
    # (RobustClient: the keepalive is link.py's, AsyncClient's too. Faked
    # ticks cannot drive asyncio here: its C task queue keeps the port's.)
    fb = FakeBroker([("send", connack(4)), ("sleep", 6)], io_timeout=15)
    # The two runs (live 5 s, silent 4 s; the fake broker holds the silent
    # link 6 s) wait on the clock, not the CPU: one process each, at once.
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        rs = list(ex.map(lambda pm: run_mp(WRAP_BLOCKING % {"port": pm[0], "ms": pm[1]}, timeout=60, check=False),
                         [(broker.port, 5000), (fb.port, 4000)]))
    fb.join()
    out = "".join(r.stdout for r in rs)
    for r in rs:
        assert r.returncode == 0, "micropython exited %d\n%s\n%s" % (r.returncode, r.stdout[-6000:], r.stderr[-3000:])
    runs = [line.split()[1:] for line in out.splitlines() if line.startswith("RUN")]
    assert len(runs) == 2 and all(x[:2] == ["True", "True"] for x in runs), out   # it wrapped
    assert runs[0][2:] == ["0", "-1"], out
    assert runs[1][2] == "1" and 0 < int(runs[1][3]) <= 3000, out


@pytest.mark.parametrize("front", ["blocking", "async"])
@pytest.mark.parametrize("dead", ["refused", "no answer"])
def test_the_second_broker_is_reached_when_the_first_is_dead(broker, front, dead):
    # Held: servers=[dead, live]. A refused connect passes the turn at once
    # (the switch waits out the 1.1 s since the last CONNECT); one whose SYN
    # gets no answer after timeout_ms (1.5 s); AsyncClient's loop runs
    # throughout.
    s, fill = syn_hole()
    first = s.getsockname()[1] if dead == "no answer" else free_port()
    servers = '[("127.0.0.1", %d), ("127.0.0.1", %d)]' % (first, broker.port)
    prog = r"""
import asyncio, time
from durable_mqtt.robust import RobustClient
from durable_mqtt.aio import AsyncClient
from testlib import ticker
loop = [0, 0]
def blocking():
    c = RobustClient("two", "127.0.0.1", 0, keepalive=10, timeout_ms=1500, servers=%(s)s)
    t0 = time.ticks_ms()
    while not c.poll(50) and time.ticks_diff(time.ticks_ms(), t0) < 10000:
        pass
    print("UP", c.is_connected(), time.ticks_diff(time.ticks_ms(), t0), c.port, "GAP", 0)
    c.disconnect()
async def main():
    asyncio.create_task(ticker(loop))
    c = AsyncClient("two", "127.0.0.1", 0, keepalive=10, timeout_ms=1500, servers=%(s)s)
    t0 = time.ticks_ms()
    await c.connect(timeout_ms=10000)
    print("UP", c.is_connected(), time.ticks_diff(time.ticks_ms(), t0), c.client.port, "GAP", loop[1])
    await c.disconnect()
""" % {"s": servers} + ("blocking()\n" if front == "blocking" else "asyncio.run(main())\n")
    try:
        r = run_mp(prog, timeout=60)
    finally:
        for c in fill:
            c.close()
        s.close()
    f = fields(r.stdout, "UP")
    assert f[1] == "True" and f[3] == str(broker.port), r.stdout
    assert int(f[2]) < (2500 if dead == "refused" else 3500), r.stdout
    assert int(f[5]) < 500, r.stdout


def test_aio_disconnect_from_a_broker_slow_to_close_does_not_hold_the_loop():
    # After its DISCONNECT the client reads until the broker closes its
    # side, at most 500 ms (a socket closed with bytes unread resets the
    # connection, and the broker loses the DISCONNECT). AsyncClient did so
    # blocking: a broker that did not close at once held every task 500 ms.
    fb = FakeBroker([("send", connack(4)), ("sleep", 3)], io_timeout=15)
    r = run_mp(r"""
import asyncio, time
from durable_mqtt.aio import AsyncClient
from testlib import ticker
loop = [0, 0]
async def main():
    c = AsyncClient("linger", "127.0.0.1", %d, keepalive=20, timeout_ms=3000)
    await c.connect(timeout_ms=2000)
    asyncio.create_task(ticker(loop))
    await asyncio.sleep_ms(100)
    t0 = time.ticks_ms()
    await c.disconnect()
    t = time.ticks_diff(time.ticks_ms(), t0)
    await asyncio.sleep_ms(50)
    print("DISC", t, "GAP", loop[1], "UP", c.is_connected(), c.client.socket())
asyncio.run(main())
""" % fb.port, timeout=60)
    fb.join()
    f = fields(r.stdout, "DISC")
    assert 300 < int(f[1]) < 2000, r.stdout          # it waited for the broker, up to 500 ms
    assert int(f[3]) < 200, r.stdout                 # was 511 ms
    assert f[5:] == ["False", "None"], r.stdout      # then closed
    assert fb.conns[0][-1] == (0xE0, b""), fb.conns  # the DISCONNECT reached the broker


def test_aio_disconnect_while_a_subscribe_awaits_its_answer_still_waits_for_the_close():
    # The subscribe() that disconnect() ends (NotConnected) closed the
    # socket the disconnect was lingering on (k.failed(): a link closed
    # already was "failed" again): the connection ended 3 ms after the
    # DISCONNECT, with what the broker sent unread (a reset: the broker
    # loses the DISCONNECT). Its steps leave a closed link alone now; the
    # disconnect waits for the broker as without a subscribe (a review
    # found it).
    fb = FakeBroker([("send", connack(4)), ("recv",), ("sleep", 3)], io_timeout=15)
    r = run_mp(r"""
import asyncio, time
from durable_mqtt.aio import AsyncClient
async def main():
    c = AsyncClient("linger-sub", "127.0.0.1", %d, keepalive=20, timeout_ms=3000)
    await c.connect(timeout_ms=2000)
    t = asyncio.create_task(c.subscribe("no/answer", 1))
    await asyncio.sleep_ms(100)
    t0 = time.ticks_ms()
    await c.disconnect()
    d = time.ticks_diff(time.ticks_ms(), t0)
    try:
        await t
    except Exception as x:
        print("SUB", type(x).__name__)
    print("DISC", d)
asyncio.run(main())
""" % fb.port, timeout=60)
    fb.join()
    assert "SUB NotConnected" in r.stdout, r.stdout
    assert 300 < int(fields(r.stdout, "DISC")[1]) < 2000, r.stdout      # waited for the broker (2-7 ms before)
    assert fb.conns[0][-1] == (0xE0, b""), fb.conns


def test_aio_connect_while_disconnect_awaits_the_close_opens_the_next_connection():
    # disconnect() now awaits the broker's close: a connect() in that time
    # found the old connection still "up" and returned its Session Present
    # at once, and the linger could take the next connection's socket.
    def pid_of(got):
        body = got[-1][1]
        return body[2 + (body[0] << 8 | body[1]):][:2]
    fb = FakeBroker([("send", connack(4)), ("sleep", 2)],
                    [("send", connack(4, sp=1)), ("recv",), ("reply", lambda g: pkt(0x40, pid_of(g))),
                     ("sleep", 1)], io_timeout=15)
    r = run_mp(r"""
import asyncio, time
from durable_mqtt.aio import AsyncClient
async def main():
    c = AsyncClient("again", "127.0.0.1", %d, keepalive=20, timeout_ms=3000, backoff_ms=(50, 100))
    await c.connect(timeout_ms=2000)
    d = asyncio.create_task(c.disconnect())
    await asyncio.sleep_ms(100)
    print("CONNECT", await c.connect(timeout_ms=5000), c.is_connected())
    await d
    print("PUB", await c.publish("r/x", b"1", qos=1, timeout_ms=3000), c.is_connected())
    await c.disconnect()
asyncio.run(main())
""" % fb.port, timeout=60)
    fb.join()
    assert fields(r.stdout, "CONNECT")[1:] == ["True", "True"], r.stdout    # the second broker session
    assert fields(r.stdout, "PUB")[1:] == ["1", "True"], r.stdout
    assert [p[0] for p in fb.conns[1]] == [0x10, 0x32, 0xE0], fb.conns


def trickle_broker(total, chunk=1000, pause=0.1):
    """Answers CONNECT, then sends one QoS 1 PUBLISH of `total` payload
    bytes, `chunk` bytes every `pause` s (10 KB/s: a link that keeps
    moving), then answers every PINGREQ; notes the PUBACK."""
    seen = {"puback": False}

    def then(conn):
        p = publish(4, b"big", b"x" * total, qos=1, pid=7)
        for i in range(0, len(p), chunk):
            conn.sendall(p[i:i + chunk])
            time.sleep(pause)
        for first, body in packets(conn, 4096):
            if first == 0xC0:
                conn.sendall(pkt(0xD0))
            elif first == 0x40:
                seen["puback"] = True
    port, t = stalling_broker(4, 0, then, io_timeout=15)
    return port, t, seen


TRICKLE = r"""
import time
from durable_mqtt import MQTTClient, PacketTooLarge
got = []
c = MQTTClient("trickle", "127.0.0.1", %d, keepalive=2, timeout_ms=2000, buf_size=%d)
c.set_callback(lambda t, m, r, q: got.append(len(m)))
c.connect()
t0 = time.ticks_ms()
res = "alive"
while time.ticks_diff(time.ticks_ms(), t0) < 5000:
    try:
        c.check_msg()
    except PacketTooLarge:
        pass
    except Exception as x:
        res = "%%s %%s after %%d ms" %% (type(x).__name__, x, time.ticks_diff(time.ticks_ms(), t0))
        break
    time.sleep_ms(20)
print("RESULT", res, got)
"""


@pytest.mark.parametrize("buf_size", [1024, 40000])
def test_a_packet_still_arriving_keeps_the_link_alive(buf_size):
    """A 30 KB PUBLISH arriving at 10 KB/s (3 s of bytes) with keepalive
    2 s: the PINGRESP waits behind it in the stream. Only a whole packet
    counted as a sign of life, so the link was dropped as dead ("no
    PINGRESP in 1000 ms") while bytes never stopped, and the broker resent
    the message into the same end at every reconnect (a review found it).
    Part of a packet now counts, read into the buffer (buf_size 40000:
    delivered) or drained as oversize (buf_size 1024: dropped, and
    acknowledged)."""
    port, t, seen = trickle_broker(30000)
    r = run_mp(TRICKLE % (port, buf_size), timeout=30)
    t.join(10)
    assert "RESULT alive" in r.stdout, r.stdout
    assert ("[30000]" if buf_size > 30000 else "[]") in r.stdout, r.stdout
    assert seen["puback"], r.stdout
