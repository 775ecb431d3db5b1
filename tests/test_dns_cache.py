"""A reconnect dials the address the last lookup gave, without looking the
name up again: MicroPython's socket.getaddrinfo() blocks (on an ESP32 for
seconds when the Wi-Fi is up and the internet is not), and with it every
task of an AsyncClient. After three dials on that address with no CONNACK
the name is looked up again (the broker may have moved); a lookup that
fails keeps the address for three more dials.

The unix port's lookup of "localhost" is instant, so a socket.py on the
path stands in front of the built-in one: it counts the lookups, can make
each one block (time.sleep_ms, as lwIP's does) or fail, and otherwise
calls the real getaddrinfo. Everything else is real: the broker, the
sockets, the client."""

import pathlib

import pytest

from conftest import run_mp
from testbroker import free_port

SHIM = r"""
from usocket import *
import usocket
import time

calls = [0]
slow_ms = [0]
fail = [False]


def getaddrinfo(*a):
    calls[0] += 1
    time.sleep_ms(slow_ms[0])
    if fail[0]:
        raise OSError(-202)          # lwIP's "name not resolved"
    return usocket.getaddrinfo(*a)
"""


@pytest.fixture
def shim(tmp_path):
    d = tmp_path / "shim"
    d.mkdir()
    (d / "socket.py").write_text(SHIM)
    return str(d)


AIO = r"""
import asyncio, time, socket
from durable_mqtt.aio import AsyncClient
from testlib import ticker

loop = [0, 0]

async def main():
    socket.slow_ms[0] = 800
    c = AsyncClient("dns-aio", "localhost", %(port)d, version=%(ver)d, keepalive=0,
                    backoff_ms=(50, 100), timeout_ms=2000)
    await c.connect(timeout_ms=5000)
    print("FIRST", socket.calls[0])
    asyncio.create_task(ticker(loop))
    await asyncio.sleep_ms(50)
    for i in range(3):
        c.client.socket().close()        # the link drops (as when the Wi-Fi goes)
        while c.is_connected():
            await asyncio.sleep_ms(5)
        while not c.is_connected():
            await asyncio.sleep_ms(5)
    print("AGAIN", socket.calls[0], "GAP", loop[1])
    await c.disconnect()

asyncio.run(main())
"""


@pytest.mark.parametrize("ver", [4, 5])
def test_a_reconnect_does_not_look_the_name_up_again(broker, shim, ver):
    r = run_mp(AIO % {"port": broker.port, "ver": ver}, timeout=60, extra_path=[shim])
    f = r.stdout.split()
    assert f[f.index("FIRST") + 1] == "1", r.stdout
    # Three reconnects, no lookup: the event loop never stopped for one
    # (each would hold it 800 ms).
    assert f[f.index("AGAIN") + 1] == "1", r.stdout
    assert int(f[f.index("GAP") + 1]) < 400, r.stdout


BLOCKING = r"""
import socket
from durable_mqtt import MQTTClient

def dial(c, n):
    for i in range(n):
        try:
            c.connect()
            c.disconnect()
            return "UP"
        except OSError as e:
            pass
    return "DOWN"

c = MQTTClient("dns-b", "localhost", %(dead)d, keepalive=0, timeout_ms=1000)
# A broker that is not there: a lookup, two dials on its address, a lookup...
print("DEAD", dial(c, 7), socket.calls[0])
# The lookup fails from now on: the address is kept, three dials for each lookup.
socket.fail[0] = True
print("NOLOOKUP", dial(c, 8), socket.calls[0])
# Another port, the same name: not the cached address (the port is part of it).
socket.fail[0] = False
c.port = %(port)d
print("LIVE", dial(c, 1), socket.calls[0])
c.port = %(port)d
print("AGAIN", dial(c, 1), socket.calls[0])
"""


def test_an_address_that_never_connects_is_looked_up_again_every_third_dial(broker, shim):
    r = run_mp(BLOCKING % {"port": broker.port, "dead": free_port()}, timeout=60, extra_path=[shim])
    lines = {ln.split()[0]: ln.split()[1:] for ln in r.stdout.splitlines() if ln.strip()}
    # 7 dials on a dead port: lookups before dials 1, 4 and 7.
    assert lines["DEAD"] == ["DOWN", "3"], r.stdout
    # 8 more with the lookup failing: dial 7's address serves dials 8 and 9;
    # 10 looks up (fails, the address is kept), 11-13 dial it, 14 looks up
    # (fails), 15 dials it.
    assert lines["NOLOOKUP"] == ["DOWN", "5"], r.stdout
    # The live port: a lookup (another port), a connect; then none.
    assert lines["LIVE"] == ["UP", "6"], r.stdout
    assert lines["AGAIN"] == ["UP", "6"], r.stdout


ROTATION = r"""
import time, socket
from durable_mqtt.robust import RobustClient

socket.fail_after[0] = 2         # the DNS goes after two lookups
c = RobustClient("dns-r", "localhost", 0, keepalive=0, timeout_ms=1500, backoff_ms=(50, 100),
                 servers=[("localhost", %(fake)d), ("localhost", %(dead)d)])
t0 = time.ticks_ms()
while not c.poll(50) and time.ticks_diff(time.ticks_ms(), t0) < 10000:
    pass
print("UP", c.is_connected(), c.port, socket.calls[0], c.connect_failures)
c.disconnect()
"""


def test_each_broker_of_servers_keeps_its_own_address(broker, shim, tmp_path):
    # servers=[A, B]: A refuses the first connect (CONNACK 3), B is dead, and
    # after those two lookups the DNS is gone (a broker on the LAN, its DNS
    # server out on the internet). A's turn comes again: its kept address
    # is dialled, without a lookup. (One kept address for all brokers: B's
    # lookup replaced A's, A's lookup failed, and the client never came up.)
    from fakebroker import FakeBroker, connack
    (pathlib.Path(shim) / "socket.py").write_text(
        SHIM.replace("if fail[0]:", "if fail[0] or 0 < fail_after[0] < calls[0]:")
        + "\nfail_after = [0]\n")
    fb = FakeBroker([("send", connack(4, code=3))], [("send", connack(4)), ("sleep", 2)])
    r = run_mp(ROTATION % {"fake": fb.port, "dead": free_port()}, timeout=60, extra_path=[shim])
    fb.join()
    f = r.stdout.split()
    assert f[:5] == ["UP", "True", str(fb.port), "2", "2"], r.stdout


def test_a_kept_address_survives_another_brokers_failed_lookup(broker, shim):
    # servers=[A, B]: A refuses the first connect, and B's name never
    # resolves (the DNS is gone after A's lookup). The failed lookup of B
    # left no current address, and A's turn then skipped the kept ones and
    # looked A up again: with the DNS gone, A (on the LAN) never came up,
    # and each success of that lookup kept one more copy of A's entry.
    from fakebroker import FakeBroker, connack
    (pathlib.Path(shim) / "socket.py").write_text(
        SHIM.replace("if fail[0]:", "if fail[0] or 0 < fail_after[0] < calls[0]:")
        + "\nfail_after = [0]\n")
    fb = FakeBroker([("send", connack(4, code=3))], [("send", connack(4)), ("sleep", 2)])
    r = run_mp(ROTATION.replace("fail_after[0] = 2", "fail_after[0] = 1")
               % {"fake": fb.port, "dead": free_port()}, timeout=60, extra_path=[shim])
    fb.join()
    f = r.stdout.split()
    # One lookup for A, one (failed) for B; then A's kept address.
    assert f[:5] == ["UP", "True", str(fb.port), "2", "2"], r.stdout


FIVE = r"""
import time, socket
from durable_mqtt.robust import RobustClient

socket.fail_after[0] = 5         # the DNS goes after the first round of lookups
ports = %(ports)r
c = RobustClient("dns-5", "localhost", 0, keepalive=0, timeout_ms=1500, backoff_ms=(50, 100),
                 servers=[("localhost", p) for p in ports])
tries = []
t0 = time.ticks_ms()
n = 0
while time.ticks_diff(time.ticks_ms(), t0) < 15000:
    up = c.poll(20)
    if up or c.connect_failures != n:
        tries.append((ports.index(c.port), time.ticks_diff(time.ticks_ms(), t0)))
        n = c.connect_failures
    if up:
        break
print("UP", c.is_connected(), socket.calls[0])
print("TRIES", tries)
c.disconnect()
"""


def test_a_fifth_broker_of_servers_keeps_its_address_and_its_turn(shim):
    # servers=[A, B, C, D, E]: A refuses the first connect (CONNACK 3), B..E
    # are dead, and after the first round's five lookups the DNS is gone.
    # The turns go round in order, each switch more than a second after
    # the last CONNECT (api.md). dial.py kept the addresses of four brokers
    # only: E's lookup dropped A's, A's next turn looked A up, failed, and
    # the client never came up. Each broker of `servers` now keeps its own.
    from fakebroker import FakeBroker, connack
    (pathlib.Path(shim) / "socket.py").write_text(
        SHIM.replace("if fail[0]:", "if fail[0] or 0 < fail_after[0] < calls[0]:")
        + "\nfail_after = [0]\n")
    fb = FakeBroker([("send", connack(4, code=3))], [("send", connack(4)), ("sleep", 2)], io_timeout=20)
    ports = [fb.port] + [free_port() for _ in range(4)]
    r = run_mp(FIVE % {"ports": ports}, timeout=60, extra_path=[shim])
    fb.join()
    assert "UP True 5" in r.stdout, r.stdout
    tries = eval(r.stdout.split("TRIES", 1)[1].strip())
    assert [i for i, _ in tries] == [0, 1, 2, 3, 4, 0], r.stdout
    gaps = [b - a for (_, a), (_, b) in zip(tries, tries[1:])]
    assert all(g >= 1000 for g in gaps), gaps                  # switches spaced (_SWITCH_MS, 1100)
