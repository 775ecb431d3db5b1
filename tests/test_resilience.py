"""A session kept alive across a flaky link: RobustClient through the fault
proxy (tools/faultproxy.py) and a real mosquitto. `make test` runs short
versions; `make soak` runs each with the long settings (SOAK=1)."""
import os
import subprocess
import sys
import time

import pytest

from conftest import DRAINED, ROOT, MP_HELPERS, log_size, run_mp, spawn_mp, wait_drained, wait_subscribed

sys.path.insert(0, str(ROOT / "tools"))
from faultproxy import FaultProxy  # noqa: E402
from fakebroker import FakeBroker, connack  # noqa: E402

SOAK = os.environ.get("SOAK") == "1"
DROPS = 120 if SOAK else 25
N = 3000 if SOAK else 400


def subscriber(port, ver, topic, out_path):
    # Into a file, which wait_drained() polls (mosquitto_sub flushes each
    # message).
    with open(out_path, "w") as out:
        return subprocess.Popen(["mosquitto_sub", "-p", str(port), "-q", "2", "-t", topic,
                                 "-V", "mqttv5" if ver == 5 else "mqttv311"], stdout=out)


def received(sub, out_path):
    sub.terminate()
    sub.wait(5)
    return [x for x in out_path.read_text().split() if x != DRAINED]


def run_stream(broker, tmp_path, ver, qos, script, prefix, seed):
    """A numbered stream from `script` through the proxy with random drops
    and stalls until DROPS drops happened; returns (device output, faults,
    numbers received by a real subscriber)."""
    topic = "%s/%d/%d" % (prefix, ver, qos)
    since = log_size(broker)
    sub_out = tmp_path / "sub.out"
    sub = subscriber(broker.port, ver, topic, sub_out)
    wait_subscribed(broker, since, topic, 0.3)
    with FaultProxy(upstream=("127.0.0.1", broker.port), seed=seed) as p:
        p.random_faults(seed=seed, drop_every=(0.05, 0.25), stall_every=(0.3, 0.9),
                        stall_for=(0.05, 0.3), max_faults=int(DROPS * 1.6))
        dev = spawn_mp(MP_HELPERS / script, p.port, ver, qos, N, 2)
        # Keep faults coming until enough drops happened, then let it finish.
        deadline = time.monotonic() + (600 if SOAK else 120)
        while dev.poll() is None and time.monotonic() < deadline:
            if p.stats()["faults"]["drop"] >= DROPS:
                p.random_faults(max_faults=0)
            time.sleep(0.1)
        out, _ = dev.communicate(timeout=max(5, deadline - time.monotonic()))
        faults = p.stats()["faults"]
    wait_drained(broker.port, ver, qos, topic, sub_out, 0.5)
    got = [int(x) for x in received(sub, sub_out)]
    assert "RESULT flushed=True" in out, out[-3000:]
    missing = set(range(N)) - set(got)
    assert not missing, "lost %d: %s" % (len(missing), sorted(missing)[:20])
    if qos == 2:
        assert len(got) == len(set(got)), "QoS 2 duplicates: %d" % (len(got) - len(set(got)))
    assert faults["drop"] >= DROPS and faults["stall"] > 0, faults
    print(out.strip().splitlines()[-1], "faults", faults)
    return out


@pytest.mark.parametrize("ver,qos", [(4, 1), (4, 2), (5, 1), (5, 2)])
def test_stream_survives_random_drops_and_stalls(broker, tmp_path, ver, qos):
    out = run_stream(broker, tmp_path, ver, qos, "device_flaky.py", "flaky", ver * 10 + qos)
    # Every drop is reported through on_down, wherever it was noticed (in
    # poll() or inside publish()): one down per reconnect after the first.
    downs = int(out.split("downs=")[1].split()[0])
    ups = int(out.split("reconnects=")[1].split()[0])
    assert ups - 2 <= downs <= ups, out


@pytest.mark.parametrize("ver", [4, 5])
@pytest.mark.parametrize("script", ["detect_blackhole.py", "detect_blackhole_aio.py"])
def test_black_holed_link_detected_within_1_5x_keepalive(broker, ver, script):
    # The link goes silent (no RST, no FIN): only the keepalive can tell.
    with FaultProxy(upstream=("127.0.0.1", broker.port)) as p:
        dev = spawn_mp(MP_HELPERS / script, p.port, ver, 2)
        line = dev.stdout.readline()
        assert line.startswith("READY"), line + dev.stdout.read()
        p.blackhole()
        out, _ = dev.communicate(timeout=30)
    detected_ms = int(out.split("DETECTED_MS ")[1].split()[0])
    assert 0 < detected_ms <= 1.5 * 2000, out
    print("%s: black hole detected after %d ms (keepalive 2000 ms)" % (script, detected_ms))


def test_memory_flat_across_1000_reconnects(broker):
    r = run_mp(r"""
import gc
from durable_mqtt.robust import RobustClient
c = RobustClient("flat", "127.0.0.1", %d, keepalive=30, backoff_ms=(1, 1))
c.connect(clean_session=True)
c.clean_session = False
free = []
for i in range(1000):
    c.socket().close()            # the link dies under the client
    c.poll()                       # -> error, link down
    while not c.poll():            # -> reconnect, session resumed
        pass
    c.publish("flat/x", b"m", qos=1)
    c.flush(2000)
    if i in (99, 999):
        gc.collect()
        free.append(gc.mem_free())
s = c.stats()
assert s["reconnects"] >= 1000, s
print("FREE", free, "delta", free[0] - free[1])
assert abs(free[0] - free[1]) <= 512, free
""" % broker.port, timeout=120)
    assert "FREE" in r.stdout
    print(r.stdout.strip())


@pytest.mark.parametrize("ver", [4, 5])
def test_publish_while_down_never_blocks_and_drains_in_order(broker, tmp_path, ver):
    with FaultProxy(upstream=("127.0.0.1", broker.port)) as p:
        since = log_size(broker)
        sub_out = tmp_path / "sub.out"
        sub = subscriber(broker.port, ver, "down/%d" % ver, sub_out)
        wait_subscribed(broker, since, "down/%d" % ver, 0.3)
        # Refuse new connections and drop the live one: the device is offline.
        r = run_mp(r"""
import time
from durable_mqtt.robust import RobustClient
c = RobustClient("down%d", "127.0.0.1", %d, version=%d, keepalive=5, backoff_ms=(20, 100), timeout_ms=500)
c.poll()
assert c.is_connected()
c.socket().close()
c.poll()
assert not c.is_connected()
t0 = time.ticks_ms()
for i in range(20):
    c.publish("down/%d", b"%%d" %% i, qos=1)        # while down
worst = time.ticks_diff(time.ticks_ms(), t0)
assert c.pending() == 20
assert c.flush(10000)
print("OK publish-while-down ms", worst)
""" % (ver, p.port, ver, ver))
        assert "OK" in r.stdout
        wait_drained(broker.port, ver, 1, "down/%d" % ver, sub_out, 0.3)
        got = received(sub, sub_out)
        assert got == [str(i) for i in range(20)], got


@pytest.mark.parametrize("ver,qos", [(4, 1), (5, 2)])
def test_asyncio_stream_survives_random_drops_and_stalls(broker, tmp_path, ver, qos):
    out = run_stream(broker, tmp_path, ver, qos, "device_flaky_aio.py", "aflaky", ver + qos)
    # Outages never hold the event loop for long: the reconnect attempts
    # are bounded by timeout_ms (1 s here) and usually fail fast.
    gap = int(out.split("worst_loop_gap_ms=")[1].split()[0])
    assert gap < 1500, out


def test_asyncio_front_end_ram(broker):
    r = run_mp(r"""
import gc
gc.collect(); m0 = gc.mem_alloc()
from durable_mqtt.robust import RobustClient
gc.collect(); m1 = gc.mem_alloc()
import asyncio
from durable_mqtt.aio import AsyncClient
gc.collect(); m2 = gc.mem_alloc()
r = RobustClient("ram-r", "127.0.0.1", %d)
gc.collect(); m3 = gc.mem_alloc()
a = AsyncClient("ram-a", "127.0.0.1", %d)
gc.collect(); m4 = gc.mem_alloc()
print("RAM import_robust=%%d import_asyncio_and_aio=%%d robust_client=%%d async_client=%%d" %% (
    m1 - m0, m2 - m1, m3 - m2, m4 - m3))
""" % (broker.port, broker.port))
    assert "RAM" in r.stdout
    print(r.stdout.strip())


def test_network_link_is_brought_up_only_when_it_reports_down(broker):
    """RobustClient(link=...): after a drop the client asks isconnected();
    up() runs only when the network reports down, and a network that does
    not come up is a failed attempt (backoff), not an exception."""
    r = run_mp(r"""
from durable_mqtt.robust import RobustClient
class Net:
    def __init__(self):
        self.connected = True
        self.ups = 0
        self.works = True
    def isconnected(self):
        return self.connected
    def up(self, timeout_ms):
        self.ups += 1
        self.connected = self.works
        return self.works
net = Net()
c = RobustClient("netlink", "127.0.0.1", %d, keepalive=5, backoff_ms=(1, 2), timeout_ms=1000, link=net)
assert c.poll() and net.ups == 0                 # Wi-Fi up: no up() call
c.socket().close()                               # the broker link drops, Wi-Fi stays
while not c.poll(5):
    pass
assert net.ups == 0, net.ups
c.socket().close()
net.connected = False                            # this time Wi-Fi is gone too
net.works = False                                # and does not come back at first
for i in range(5):
    c.poll(5)
assert not c.is_connected() and net.ups >= 2, net.ups
assert "network link did not come up" in str(c.last_error), c.last_error
net.works = True
while not c.poll(5):
    pass
print("OK ups", net.ups, "downs", c.stats()["link_downs"], "failures", c.stats()["connect_failures"])
""" % broker.port)
    assert "OK" in r.stdout, r.stdout


def test_a_host_name_in_servers_uses_the_constructors_port(broker):
    """servers=[(host, port), host]: a bare host name is tried on `port`
    (docs/api.md, robust.py), not on the port of the entry tried before it.
    Broker A refuses; the turn passes to B, given by name only."""
    from testbroker import free_port
    dead = free_port()
    r = run_mp(r"""
import time
from durable_mqtt.robust import RobustClient
c = RobustClient("srv-port", "unused", %d, servers=[("127.0.0.1", %d), "127.0.0.1"],
                 backoff_ms=(10, 20), timeout_ms=500)
t0 = time.ticks_ms()
while not c.poll(20) and time.ticks_diff(time.ticks_ms(), t0) < 5000:
    pass
print("connected", c.is_connected(), "port", c.port, "failures", c.stats()["connect_failures"], repr(c.last_error))
c.disconnect()
""" % (broker.port, dead))
    assert "connected True port %d" % broker.port in r.stdout, r.stdout


def test_no_route_errno_of_an_esp32_is_a_dropped_link_not_try_again(broker):
    """On an ESP32 (newlib errno numbers, docs/troubleshooting.md) 118 is
    EHOSTUNREACH: lwIP returns it from send() once Wi-Fi is gone (ERR_RTE,
    "no route"). It is a dead link, to be reported at once; taken as "try
    again" it had a write spin on a writable socket until timeout_ms ran out
    (and the data was queued again each turn), and a read never failed."""
    r = run_mp(r"""
import socket, time
from durable_mqtt.transport import Transport
from durable_mqtt.errors import PeerClosed
class NoRoute:
    # a connected socket whose send and recv fail as lwIP's do on an ESP32 without Wi-Fi
    def __init__(self, s):
        self.s = s
    def write(self, *a):
        raise OSError(118)
    def readinto(self, *a):
        raise OSError(118)
    def close(self):
        self.s.close()
s = socket.socket()
s.connect(socket.getaddrinfo("127.0.0.1", %d)[0][-1])
t = Transport()
t.opened(s)
t.sock = NoRoute(s)
for what in ("write", "read"):
    t0 = time.ticks_ms()
    try:
        if what == "write":
            t.write(b"\xc0\x00", 0, 2, 2000)
        else:
            t.read_into(bytearray(4), 4)
        print(what, "no error")
    except PeerClosed as e:
        print(what, "PeerClosed", e.args[1])
    except OSError as e:
        print(what, type(e).__name__, e.args, "after", time.ticks_diff(time.ticks_ms(), t0), "ms")
t.close()
""" % broker.port)
    assert "write PeerClosed" in r.stdout and "read PeerClosed" in r.stdout, r.stdout


WEEK_TICKS = r"""
import time
from durable_mqtt import robust
P = 1 << 30                            # a board's ticks period
class Ticks:                           # the board's ticks for robust.py: real time, `off` later
    off = 0
    @staticmethod
    def ticks_ms():
        return (time.ticks_ms() + Ticks.off) % P
    @staticmethod
    def ticks_add(a, d):
        return (a + d) % P
    @staticmethod
    def ticks_diff(a, b):
        d = (a - b) & (P - 1)
        return d - P if d >= P // 2 else d
    sleep_ms = time.sleep_ms
robust.time = Ticks
WEEK = 7 * 86400000
"""


def test_a_link_longer_than_half_the_ticks_period_resets_the_backoff():
    """On a board ticks_ms() wraps at 2**30 ms (12.4 days), and ticks_diff()
    of two readings more than 6.2 days apart comes out negative. A link that
    lasted a week was taken for one shorter than 10 s: its drop doubled the
    backoff left from the last outage (here the cap) instead of starting
    again at its first value (docs/resilience.md). The board's ticks are
    simulated for robust.py; no connection is made."""
    r = run_mp(WEEK_TICKS + r"""
from durable_mqtt.robust import RobustClient
c = RobustClient("wrap", "127.0.0.1", 1, backoff_ms=(250, 30000))
for i in range(10):                    # an outage: the backoff reaches its cap
    c.link_down(OSError(-1, "no"), True)
for days in (1, 7):
    c.link_up()
    Ticks.off += days * 86400000       # a link that lasted that long
    c.link_down(OSError(-1, "dropped"))
    print("after", days, "days: next try in", c.offline(), "ms")
    for i in range(10):
        c.link_down(OSError(-1, "no"), True)
""")
    waits = [int(line.split("in ")[1].split()[0]) for line in r.stdout.splitlines() if line.startswith("after")]
    assert len(waits) == 2 and all(w <= 250 for w in waits), r.stdout




def test_a_connection_asked_to_end_after_a_week_up_is_made_again_at_once(broker):
    """The next attempt's time (_next_try) was set only when a link dropped.
    A link that ended as asked for, after lasting longer than half the
    board's ticks period (6.2 days), left the last drop's time in place,
    and ticks_diff() read it as days ahead: after a week up, connect()
    while connected that fails ("poll() then tries again at once",
    docs/resilience.md) left poll() waiting 468,941,818 ms (5.4 days), and
    an AsyncClient's disconnect() then connect() waited as long. The
    board's ticks are simulated for robust.py (the link's are real)."""
    fb = FakeBroker([("send", connack(4))],
                    [("close",)],
                    [("send", connack(4, sp=1)), ("sleep", 0.5)])
    r = run_mp(WEEK_TICKS + r"""
from durable_mqtt.robust import RobustClient
c = RobustClient("week", "127.0.0.1", %d, timeout_ms=1500, backoff_ms=(3000, 3000))
c.connect()
Ticks.off += WEEK
try:
    c.connect()
except OSError as x:
    print("second connect raised", type(x).__name__)
print("next try in", c.offline(), "ms")
t0 = time.ticks_ms()
while not c.is_connected() and time.ticks_diff(time.ticks_ms(), t0) < 2000:
    c.poll(50)
print("robust connected", c.is_connected())
""" % fb.port)
    fb.join()
    assert "second connect raised PeerClosed" in r.stdout, r.stdout
    assert "next try in 0 ms" in r.stdout and "robust connected True" in r.stdout, r.stdout
    r = run_mp(WEEK_TICKS + r"""
import asyncio
from durable_mqtt.aio import AsyncClient
async def main():
    a = AsyncClient("week-aio", "127.0.0.1", %d, timeout_ms=1500, backoff_ms=(3000, 3000))
    await a.connect(timeout_ms=2000)
    Ticks.off += WEEK
    await a.disconnect()
    try:
        await a.connect(timeout_ms=2000)
        print("aio connected", a.client.is_connected())
    except OSError as x:
        print("aio", repr(x))
    await a.disconnect()
asyncio.run(main())
""" % broker.port)
    assert "aio connected True" in r.stdout, r.stdout


def test_a_network_link_that_fails_to_come_up_moves_to_no_other_broker_and_waits_no_days(broker):
    """With several brokers and a `link`: up() failing before any CONNECT
    was taken for a broker's failed attempt. The turn passed to the next
    broker, and the spacing of broker switches was measured from the last
    CONNECT, days old after a long link: past half the ticks period it
    wrapped, and the next try came 5.4 days later (a review found it). Now
    the turn passes only when a CONNECT went, and the spacing is measured
    only from this attempt's. The board's ticks are simulated for robust.py."""
    r = run_mp(WEEK_TICKS + r"""
from durable_mqtt.robust import RobustClient
class Link:
    ok = True
    def isconnected(self):
        return self.ok
    def up(self, timeout_ms):
        return self.ok
L = Link()
c = RobustClient("wrapsw", "127.0.0.1", servers=[("127.0.0.1", %d), ("127.0.0.1", %d)], link=L,
                 timeout_ms=1500, backoff_ms=(100, 100))
print("up", c.poll(10), c.server, c.port)
Ticks.off += WEEK                      # the link lasted a week
L.ok = False                           # then the Wi-Fi went
c.conn.drop()
c.poll(0)                              # the drop reported, the first retry scheduled
time.sleep_ms(c.offline() + 10)
c.poll(0)                              # the attempt: link.up() fails
print("failed", repr(c.last_error), c.connect_failures)
print("next try in", c.offline())
L.ok = True
t0 = time.ticks_ms()
while not c.is_connected() and time.ticks_diff(time.ticks_ms(), t0) < 3000:
    c.poll(20)
print("back", c.is_connected(), c.port == %d, c.connect_failures)
c.disconnect()
""" % (broker.port, broker.port + 1 if broker.port < 65535 else 1, broker.port))
    assert "up True" in r.stdout, r.stdout
    assert "failed OSError(-1, 'network link did not come up') 1" in r.stdout, r.stdout
    wait = int(r.stdout.split("next try in ")[1].split()[0])
    assert wait <= 100, r.stdout
    # Back on the first broker with no other attempt: passed to the second
    # (nothing listens there), it failed once more before it came back.
    assert "back True True 1" in r.stdout, r.stdout


def test_close_is_asked_for_not_a_drop(broker):
    """RobustClient.close() (MQTTClient's: no DISCONNECT, the store closed)
    was taken for a drop by the next poll(): on_down with a made-up
    "link dropped while sending", counted in link_downs, and a backoff.
    It is asked for, as disconnect() and drop_link() are."""
    r = run_mp(r"""
from durable_mqtt.robust import RobustClient
hooks = []
c = RobustClient("closed", "127.0.0.1", %d, timeout_ms=1500, on_up=lambda c: hooks.append("up"),
                 on_down=lambda c, x: hooks.append(repr(x)))
c.connect()
c.close()
print("offline", c.offline(), hooks, c.link_downs, repr(c.last_error))
print("poll", c.poll(50), hooks)
c.disconnect()
""" % broker.port)
    assert "offline 0 ['up'] 0 None" in r.stdout, r.stdout
    assert "poll True ['up', 'up']" in r.stdout, r.stdout


def test_an_unsubscribe_while_down_goes_after_the_next_connect(broker):
    """RobustClient.unsubscribe() while down raised NotConnected, and a
    subscription made while down for that filter was made all the same at
    the next connect. Now, as subscribe() while down, it is made after the
    next connect, in its turn, and a subscription waiting for the filter is
    dropped."""
    r = run_mp(r"""
from durable_mqtt import MQTTClient
from durable_mqtt.robust import RobustClient
got = []
c = RobustClient("unsub-down", "127.0.0.1", %d, timeout_ms=2000, clean_session=False)
c.set_callback(lambda t, m, r, q: got.append(bytes(t)))
c.connect()
c.subscribe("u/old", 1)
c.close()                              # down; the broker keeps the session and u/old
print("sub", c.subscribe("u/new", 1), "unsub", c.unsubscribe("u/new"), c.unsubscribe("u/old"))
print("pending", c.pending_subs)
c.connect()
print("subs", c.engine.subs, c.pending_subs)
p = MQTTClient("unsub-pub", "127.0.0.1", %d)
p.connect()
p.publish("u/old", b"1", qos=1)
p.publish("u/new", b"2", qos=1)
p.publish("u/other", b"3", qos=1)
p.disconnect()
for _ in range(20):
    c.poll(20)
print("got", got)
c.disconnect()
""" % (broker.port, broker.port))
    assert "sub None unsub None None" in r.stdout, r.stdout
    assert "pending [('u/new', -1, None), ('u/old', -1, None)]" in r.stdout, r.stdout
    assert "subs [] []" in r.stdout and "got []" in r.stdout, r.stdout


def test_an_async_network_link_is_refused_by_the_blocking_client(broker):
    """RobustClient(link=...) whose up() is `async def` (boards/wlan.py's
    AsyncWLANLink, meant for AsyncClient): its coroutine object is truthy
    and was taken for a network brought up, never run. poll() raises a
    TypeError saying so; the client makes no CONNECT."""
    r = run_mp(r"""
from durable_mqtt.robust import RobustClient
class Net:
    ups = 0
    def isconnected(self):
        return False
    async def up(self, timeout_ms):
        Net.ups += 1
        return True
c = RobustClient("asyncnet", "127.0.0.1", %d, backoff_ms=(1, 2), timeout_ms=1000, link=Net())
try:
    c.poll()
    print("NO ERROR", c.is_connected())
except TypeError as x:
    print("TYPEERROR", x, c.is_connected(), Net.ups)
""" % broker.port)
    assert "TYPEERROR" in r.stdout and "AsyncClient" in r.stdout and "False 0" in r.stdout, r.stdout


def test_a_queued_qos0_message_whose_write_fails_is_dropped_not_sent(broker, tmp_path):
    """QoS 0 messages published while the link is down wait in the outbox
    and go out after the next CONNACK. One whose write failed (the link
    reset under it) was counted in stats()["sent"] although it never left:
    the outbox had given it up before the write. MQTT's at-most-once has no
    retry by the sender (MQTT 3.1.1 and 5, 4.3.1), so it is dropped, and now
    counted so: `dropped_qos0`, not `sent`. The ones behind it stay queued
    for the next link. Here the connect's event callback (after CONNACK,
    before the queued messages go) has the fault proxy reset the connection
    and waits until the reset is in, so the first queued message's write is
    the one that fails. A subscriber on the real broker gets exactly what
    `sent` says."""
    script = tmp_path / "q0fail.py"
    script.write_text(r"""
import select, sys
from durable_mqtt import MQTTClient
PROXY, BROKER = int(sys.argv[1]), int(sys.argv[2])
T = "q0fail/t"
sub = MQTTClient("q0fail-sub", "127.0.0.1", BROKER)
got = []
sub.set_callback(lambda t, m, r, q: got.append(bytes(m)))
sub.connect()
sub.subscribe(T, 0)
dev = MQTTClient("q0fail-dev", "127.0.0.1", PROXY)
def reset_now(ev, info):
    # CONNACK read: the proxy resets the link; wait until that is in.
    print("CONNACK")
    p = select.poll()
    p.register(dev.socket(), select.POLLIN)
    assert p.poll(5000), "no reset"
    dev.set_event_callback(lambda ev, info: None)
dev.set_event_callback(reset_now)
for i in range(3):
    dev.publish(T, b"m%d" % i)                                  # the link is down: queued
s = dev.stats()
assert s["queued"] == 3 and s["sent"] == 0, s
dev.connect()
s = dev.stats()
print("after the failed write", s["sent"], s["dropped_qos0"], s["queued"])
try:
    dev.check_msg()
    raise AssertionError("the link's failure was not reported")
except OSError as x:
    print("reported", repr(x))
dev.connect()                                                   # the ones behind it go now
for _ in range(50):
    sub.wait_msg(100)
    if len(got) >= 2:
        break
sub.wait_msg(300)                                               # (anything more would come meanwhile)
s = dev.stats()
print("STATS", s["sent"], s["dropped_qos0"], s["queued"], "GOT", got)
assert s["queued"] == 0 and s["sent"] + s["dropped_qos0"] == 3, s
assert s["dropped_qos0"] == 1 and s["sent"] == len(got) == 2, (s, got)
assert got == [b"m1", b"m2"], got
dev.disconnect()
sub.disconnect()
print("OK")
""")
    with FaultProxy(upstream=("127.0.0.1", broker.port)) as p:
        dev = spawn_mp(script, p.port, broker.port)
        line = dev.stdout.readline()
        assert line.startswith("CONNACK"), line + dev.stdout.read()
        p.drop_all()
        out, _ = dev.communicate(timeout=30)
    print(out)
    assert "OK" in out, out
