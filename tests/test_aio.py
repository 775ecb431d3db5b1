"""The asyncio front end never holds the event loop while the broker is slow
to answer: CONNECT, SUBSCRIBE and UNSUBSCRIBE are awaited (the same step
generators the blocking client runs, aio.AsyncClient.steps awaiting the
socket), so other tasks keep running. Brokers here are silent on purpose: a
TCP listener that never answers, and a fake broker that sends CONNACK and
then nothing."""

import pytest

from conftest import reports, run_mp
from fakebroker import FakeBroker, connack, listener

SCRIPT = r"""
import asyncio, time
from durable_mqtt.aio import AsyncClient
from durable_mqtt import Timeout

from testlib import ticker
loop = [0, 0]               # ticker's wake-ups, longest gap (ms)

async def main():
    asyncio.create_task(ticker(loop))
    c = AsyncClient("aio-silent", "127.0.0.1", %(port)d, version=%(ver)d, timeout_ms=1500,
                    backoff_ms=(5000, 5000))
    t0 = time.ticks_ms()
    %(body)s
    print("TICKS", loop[0], "GAP", loop[1], "MS", time.ticks_diff(time.ticks_ms(), t0))

asyncio.run(main())
"""

CONNECT = """try:
        await c.connect(timeout_ms=1200)
        print("CONNECTED")
    except Timeout:
        print("TIMEOUT connect")"""

SUBSCRIBE = """await c.connect(timeout_ms=2000)
    t0 = time.ticks_ms()
    loop[0] = 0
    try:
        await c.subscribe("aio/x", 1, timeout_ms=1000)
        print("SUBSCRIBED")
    except Timeout:
        print("TIMEOUT subscribe")"""


def silent_listener():
    held = []                       # accepted, never answered
    return listener(held.append), held


def ticks_of(out):
    f = out.split()
    return int(f[f.index("TICKS") + 1]), int(f[f.index("GAP") + 1])


@pytest.mark.parametrize("ver", [4, 5])
def test_connect_to_a_silent_broker_leaves_other_tasks_running(ver):
    s, held = silent_listener()
    try:
        r = run_mp(SCRIPT % {"port": s.getsockname()[1], "ver": ver, "body": CONNECT}, timeout=30)
    finally:
        s.close()
    assert "TIMEOUT connect" in r.stdout, r.stdout
    ticks, gap = ticks_of(r.stdout)
    # 1.2 s of waiting for a CONNACK that never comes: the ticker ran all along.
    assert ticks >= 60 and gap < 200, r.stdout
    assert held, "the client never reached the broker"


@pytest.mark.parametrize("ver", [4, 5])
def test_subscribe_without_suback_leaves_other_tasks_running(ver):
    fb = FakeBroker([("send", connack(ver)), ("sleep", 2)])
    r = run_mp(SCRIPT % {"port": fb.port, "ver": ver, "body": SUBSCRIBE}, timeout=30)
    fb.join()
    assert "TIMEOUT subscribe" in r.stdout, r.stdout
    ticks, gap = ticks_of(r.stdout)
    assert ticks >= 50 and gap < 200, r.stdout
    # the SUBSCRIBE did go out
    assert any(p[0] == 0x82 for p in fb.conns[0]), fb.conns


PUBLISH_TYPES = r"""
import asyncio
from durable_mqtt.aio import AsyncClient
from fake_report import report, emit

async def main():
    c = AsyncClient("aio-types", "127.0.0.1", 1, version=%d)    # never connected: publish queues
    report("nowait_qos_float", lambda: c.publish_nowait("t", b"x", qos=1.0))
    report("nowait_retain_float", lambda: c.publish_nowait("t", b"x", retain=1.0, qos=1))
    for tag, kw in (("qos_float", {"qos": 2.0}), ("retain_none", {"retain": None, "qos": 1})):
        try:
            await c.publish("t", b"x", **kw)
            emit(tag, ok=True)
        except Exception as e:
            emit(tag, ok=False, cls=type(e).__name__, text=str(e))
    emit("state", pending=c.client.pending())

asyncio.run(main())
"""


@pytest.mark.parametrize("ver", [4, 5])
def test_publish_of_a_float_qos_or_retain_is_refused_at_the_call(ver):
    """AsyncClient.publish() and publish_nowait() with qos=1.0 or
    retain=1.0/None: a ValueError naming the argument, raised at the call
    (it was a TypeError from the PUBLISH encoder, naming neither), and
    nothing is queued."""
    res = reports(run_mp(PUBLISH_TYPES % ver, timeout=30).stdout)
    for tag, word in (("nowait_qos_float", "qos"), ("nowait_retain_float", "retain"), ("qos_float", "qos"),
                      ("retain_none", "retain")):
        r = res[tag]
        assert not r["ok"] and r["cls"] == "ValueError", (tag, r)
        assert word in str(r.get("text") or r["args"][0]), (tag, r)
    assert res["state"]["pending"] == 0, res


# A fake network link for AsyncClient(link=...): its up() is a coroutine
# function (async def), awaited; come_up() is how the radio behaves.
FAKE_NET = r"""
import asyncio

class FakeNet:
    def __init__(self):
        self.connected = False
        self.ups = 0
    def isconnected(self):
        return self.connected
    async def up(self, timeout_ms):
        self.ups += 1
        await self.come_up()
        self.connected = True
        return True
"""

ASYNC_LINK = FAKE_NET + r"""
import asyncio, time
from durable_mqtt.aio import AsyncClient
from testlib import ticker

class Net(FakeNet):
    # 800 ms to come up: the loop runs meanwhile.
    async def come_up(self):
        await asyncio.sleep_ms(800)

class SyncNet(Net):
    def up(self, timeout_ms):                # a plain up() still works
        self.ups += 1
        self.connected = True
        return True

async def main():
    loop = [0, 0]
    asyncio.create_task(ticker(loop))
    for kind in (Net, SyncNet):
        net = kind()
        c = AsyncClient("aio-link-%%s" %% kind.__name__, "127.0.0.1", %d, version=%d, link=net)
        t0 = time.ticks_ms()
        loop[0] = loop[1] = 0
        await c.connect(timeout_ms=5000)
        print(kind.__name__, "UPS", net.ups, "TICKS", loop[0], "GAP", loop[1], "MS",
              time.ticks_diff(time.ticks_ms(), t0))
        await c.disconnect()

asyncio.run(main())
"""


@pytest.mark.parametrize("ver", [4, 5])
def test_an_async_network_link_is_awaited(broker, ver):
    """AsyncClient(link=...): a link whose up() is a coroutine function is
    awaited before the CONNECT, and other tasks run while the network comes
    up (a coroutine's truthy object was taken for success without running
    it: the network was never brought up). A plain up() is called as
    RobustClient calls it."""
    r = run_mp(ASYNC_LINK % (broker.port, ver), timeout=30)
    lines = {ln.split()[0]: ln.split() for ln in r.stdout.splitlines() if "UPS" in ln}
    a = lines["Net"]
    assert a[2] == "1", r.stdout
    assert int(a[4]) >= 40 and int(a[6]) < 200 and int(a[8]) >= 800, r.stdout
    assert lines["SyncNet"][2] == "1", r.stdout


AGAIN = r"""
import asyncio
from durable_mqtt.aio import AsyncClient
from durable_mqtt import MQTTClient

async def main():
    got = []
    s = MQTTClient("aio-again-s-%(ver)d", "127.0.0.1", %(port)d, version=%(ver)d)
    s.set_callback(lambda t, m, r, q: got.append(bytes(m)))
    s.connect()
    s.subscribe("aio/again/%(ver)d/will", 1)
    c = AsyncClient("aio-again-%(ver)d", "127.0.0.1", %(port)d, version=%(ver)d)
    c.client.set_last_will("aio/again/%(ver)d/will", b"gone", qos=1)
    await c.connect(timeout_ms=3000)
    sock = c.client.socket()
    await c.connect(timeout_ms=3000)           # connected already
    print("SAME", c.client.socket() is sock, c.is_connected())
    await asyncio.sleep_ms(300)
    for _ in range(10):
        s.check_msg()
        await asyncio.sleep_ms(50)
    print("WILL", got)
    await c.disconnect()
    s.disconnect()

asyncio.run(main())
"""


@pytest.mark.parametrize("ver", [4, 5])
def test_connect_while_connected_keeps_the_connection(broker, ver):
    """AsyncClient.connect() while connected returns at once: the background
    task keeps the connection it has (no new socket, no will)."""
    r = run_mp(AGAIN % {"port": broker.port, "ver": ver}, timeout=30)
    assert "SAME True True" in r.stdout and "WILL []" in r.stdout, r.stdout


HUNG_LINK = FAKE_NET + r"""
import asyncio, time
from durable_mqtt.aio import AsyncClient

class Net(FakeNet):
    # The first time, up() never returns (it awaits an event nothing sets:
    # a driver that lost its radio's answer); the second time the network
    # comes up.
    async def come_up(self):
        if self.ups == 1:
            await asyncio.Event().wait()

async def main():
    net = Net()
    c = AsyncClient("aio-hung", "127.0.0.1", %d, version=%d, link=net, timeout_ms=500,
                    backoff_ms=(50, 100))
    try:
        await c.connect(timeout_ms=5000)
        print("UP", net.ups, c.is_connected())
    except Exception as e:
        print("DOWN", net.ups, repr(e))
    await c.disconnect()

asyncio.run(main())
"""


@pytest.mark.parametrize("ver", [4, 5])
def test_an_async_link_up_that_never_returns_is_bounded_by_timeout_ms(broker, ver):
    """The awaited up() of a link gets timeout_ms (RobustClient's
    `timeout_ms`), as a plain one is trusted to; one that never returns
    held the background task for good: no reconnect ever again. It is
    cancelled after timeout_ms, counted as a failed attempt, and tried
    again after the backoff."""
    r = run_mp(HUNG_LINK % (broker.port, ver), timeout=30)
    assert "UP 2 True" in r.stdout, r.stdout


EVENT_RAISES = r"""
import asyncio
from durable_mqtt.aio import AsyncClient
from durable_mqtt import MQTTClient

def on_event(name, info):
    if name in ("new", "resumed", "lost"):
        raise RuntimeError("the application's event callback: " + name)

async def main():
    c = AsyncClient("aio-ev", "127.0.0.1", %(port)d, version=%(ver)d, clean_session=False,
                    timeout_ms=2000, backoff_ms=(50, 100), event_callback=on_event)
    await c.connect(timeout_ms=5000)
    print("UP1", c.is_connected(), c.callback_errors)
    # Another connection under the same client id takes the session over:
    # the broker closes ours, and the task reconnects (to a new session:
    # "lost").
    t = MQTTClient("aio-ev", "127.0.0.1", %(port)d, version=%(ver)d)
    t.connect()
    t.disconnect()
    for _ in range(100):
        await asyncio.sleep_ms(50)
        if c.callback_errors >= 2 and c.is_connected():
            break
    print("UP2", c.is_connected(), c.callback_errors, c.up.is_set(), c._task.done())
    pid = await c.publish("aio/ev", b"m", qos=1, timeout_ms=3000)
    print("ACKED", pid > 0)
    await c.disconnect()

asyncio.run(main())
"""


@pytest.mark.parametrize("ver", [4, 5])
def test_an_event_callback_that_raises_on_reconnect_leaves_the_task_running(broker, ver):
    """The event callback runs inside the connect ("new", "resumed",
    "lost"). One that raised on a reconnect ended AsyncClient's background
    task for good, with the socket open and nobody reading it: nothing was
    acknowledged or resent again (a review found it). The client now
    raises the callback's exception once the connection is whole; the task
    reports it (callback_errors, the event "callback_error") and goes on."""
    r = run_mp(EVENT_RAISES % {"port": broker.port, "ver": ver}, timeout=30)
    assert "UP1 True 1" in r.stdout, r.stdout + r.stderr
    assert "UP2 True 2 True False" in r.stdout and "ACKED True" in r.stdout, r.stdout + r.stderr


HOOKS = r"""
import asyncio
from durable_mqtt.aio import AsyncClient
from durable_mqtt import MQTTClient
seen = []
def up(c):
    seen.append(("up", type(c).__name__))
    raise RuntimeError("the application's on_up")
def down(c, exc):
    seen.append(("down", type(c).__name__))

async def main():
    c = AsyncClient("aio-hooks", "127.0.0.1", %(port)d, version=%(ver)d, timeout_ms=2000,
                    backoff_ms=(50, 100), on_up=up, on_down=down)
    await c.connect(timeout_ms=5000)
    t = MQTTClient("aio-hooks", "127.0.0.1", %(port)d, version=%(ver)d)   # takes the session over
    t.connect()
    t.disconnect()
    for _ in range(100):
        await asyncio.sleep_ms(50)
        if len(seen) >= 3 and c.is_connected():
            break
    print("SEEN", seen, c.callback_errors, c.is_connected())
    await c.disconnect()

asyncio.run(main())
"""


@pytest.mark.parametrize("ver", [4, 5])
def test_on_up_and_on_down_are_called_with_the_async_client(broker, ver):
    """api.md says AsyncClient takes RobustClient's arguments, but on_up /
    on_down raised TypeError ("multiple values for argument"): AsyncClient
    passed its own (a review found it). They are called now, with the
    AsyncClient; one that raises is reported, and the task goes on."""
    r = run_mp(HOOKS % {"port": broker.port, "ver": ver}, timeout=30)
    assert "SEEN [('up', 'AsyncClient'), ('down', 'AsyncClient'), ('up', 'AsyncClient')] 2 True" in r.stdout, \
        r.stdout + r.stderr



HOOK_AND_EVENT_RAISE = r"""
import asyncio
from durable_mqtt.aio import AsyncClient
from durable_mqtt import MQTTClient
seen = []
def on_event(name, info):
    seen.append(name)
    if name in ("new", "resumed", "lost") and seen.count("up") == 0:
        raise ValueError("the application's event callback")
def up(c):
    seen.append("up")
    if seen.count("up") == 1:
        raise RuntimeError("the application's on_up")

async def main():
    c = AsyncClient("aio-up-ev", "127.0.0.1", %(port)d, version=%(ver)d, timeout_ms=2000,
                    backoff_ms=(50, 100), on_up=up, event_callback=on_event)
    await c.connect(timeout_ms=5000)
    print("UP1", c.is_connected(), c.callback_errors, seen.count("callback_error"))
    t = MQTTClient("aio-up-ev", "127.0.0.1", %(port)d, version=%(ver)d)   # takes the session over
    t.connect()
    t.disconnect()
    for _ in range(100):
        await asyncio.sleep_ms(50)
        if seen.count("up") >= 2 and c.is_connected():
            break
    print("UP2", c.is_connected(), c.callback_errors, seen.count("up"), c._task.done())
    await c.disconnect()

asyncio.run(main())
"""


@pytest.mark.parametrize("ver", [4, 5])
def test_an_on_up_and_an_event_callback_that_both_raise_are_both_reported(broker, ver):
    """The link coming up reports what the event callback raised in the
    connect (report()) and calls on_up, whatever either does: both
    exceptions are reported (callback_errors, the event "callback_error"),
    the task goes on, and neither comes back at the next reconnect."""
    r = run_mp(HOOK_AND_EVENT_RAISE % {"port": broker.port, "ver": ver}, timeout=30)
    assert "UP1 True 2 2" in r.stdout, r.stdout + r.stderr
    assert "UP2 True 2 2 False" in r.stdout, r.stdout + r.stderr


HOOKS_ASKED = r"""
import asyncio
from durable_mqtt.aio import AsyncClient
seen = []
def up(c):
    seen.append("up")
def down(c, exc):
    seen.append(("down", exc))

async def main():
    c = AsyncClient("aio-hooks2", "127.0.0.1", %(port)d, version=4, timeout_ms=2000,
                    backoff_ms=(50, 100), on_up=up, on_down=down)
    await c.connect(timeout_ms=5000)
    await c.disconnect()                      # asked for: not a drop
    print("SEEN", seen)
    try:
        AsyncClient("x", "127.0.0.1", %(port)d, on_up=5)
        print("NOT CALLABLE ACCEPTED")
    except TypeError:
        print("NOT CALLABLE REFUSED")

asyncio.run(main())
"""


def test_on_down_is_not_called_for_an_asked_disconnect_and_hooks_are_checked(broker):
    """disconnect() is asked for, not a drop: RobustClient calls no on_down
    for it, and AsyncClient did (a review found it); and a hook that is not
    callable is a TypeError at construction, as for the other callbacks."""
    r = run_mp(HOOKS_ASKED % {"port": broker.port}, timeout=30)
    print(r.stdout)
    assert "SEEN ['up']" in r.stdout, r.stdout
    assert "NOT CALLABLE REFUSED" in r.stdout, r.stdout


EVENT_RAISES_ON_CALLBACK_ERROR = r"""
import asyncio
from durable_mqtt.aio import AsyncClient
from durable_mqtt import MQTTClient
seen = []
def on_event(name, info):
    seen.append(name)
    if name == "callback_error":
        raise ValueError("the event callback, on callback_error")
def ups_of(seen):
    return seen.count("new") + seen.count("resumed") + seen.count("lost")
def on_msg(topic, msg, retained, qos):
    raise RuntimeError("the message callback")

async def main():
    c = AsyncClient("aio-ev-cb-err", "127.0.0.1", %(port)d, version=%(ver)d, timeout_ms=2000,
                    backoff_ms=(50, 100), event_callback=on_event)
    c.set_callback(on_msg)
    await c.connect(timeout_ms=5000)
    await c.subscribe("aio/evcb", 0)
    c.publish_nowait("aio/evcb", b"m")
    for _ in range(100):
        await asyncio.sleep_ms(20)
        if c.callback_errors:
            break
    await asyncio.sleep_ms(100)
    print("ERR1", c.callback_errors, seen.count("callback_error"))
    ups = ups_of(seen)
    for i in range(2):                 # two reconnects: another connection takes the session over
        t = MQTTClient("aio-ev-cb-err", "127.0.0.1", %(port)d, version=%(ver)d)
        t.connect()
        t.disconnect()
        for _ in range(100):
            await asyncio.sleep_ms(50)
            if ups_of(seen) > ups and c.is_connected():
                break
        ups = ups_of(seen)
    await asyncio.sleep_ms(100)
    print("ERR2", c.callback_errors, seen.count("callback_error"), ups, c._task.done())
    await c.disconnect()

asyncio.run(main())
"""


@pytest.mark.parametrize("ver", [4, 5])
def test_an_event_callback_that_raises_on_callback_error_is_not_reported_again_at_each_reconnect(broker, ver):
    """The message callback raised: reported as the event "callback_error",
    on which the event callback raised too. That exception was kept for the
    next connect's report(), which reported it as another callback_error,
    on which the event callback raised again: every reconnect reported a
    stale error once more. Now it is counted and printed where it happens,
    and nothing is kept for a later connect."""
    r = run_mp(EVENT_RAISES_ON_CALLBACK_ERROR % {"port": broker.port, "ver": ver}, timeout=30)
    assert "ERR1 2 1" in r.stdout, r.stdout + r.stderr
    assert "ERR2 2 1 3 False" in r.stdout, r.stdout + r.stderr


def test_an_event_callback_that_raises_on_callback_error_is_counted_while_another_exception_is_kept():
    """docs/api.md: an exception the event callback raises on
    "callback_error" is counted and printed. While an exception it raised
    on an earlier event was still kept for the next connect's report()
    (here "store_full"), event() kept only that first one, and the new one
    was neither counted nor printed: lost without a trace. Now it is, and
    the kept one stays for report()."""
    r = run_mp(r"""
from durable_mqtt.aio import AsyncClient
def on_event(name, info):
    raise ValueError("the event callback, on " + name)
c = AsyncClient("aio-ev-kept", "127.0.0.1", 1, event_callback=on_event)
c.client.event("store_full", {"reason": "filesystem full"})    # kept for the next connect
kept = c.client.cb_error
c._callback_error(RuntimeError("the message callback"))
print("COUNTED", c.callback_errors, "KEPT", c.client.cb_error is kept)
""")
    assert "COUNTED 2 KEPT True" in r.stdout, r.stdout
    assert "the event callback, on callback_error" in r.stdout + r.stderr, r.stdout + r.stderr


@pytest.mark.parametrize("ver", [4, 5])
def test_a_refused_port_is_said_so_by_the_async_client(ver):
    """AsyncClient's connect waits for the socket to become writable, and a
    failed connect is writable too: the CONNECT was written to it and the
    error read "connection dropped (errno 32)" where the blocking client
    says "refused: no broker on that port" (docs/troubleshooting.md)."""
    from conftest import free_port
    r = run_mp(r"""
import asyncio
from durable_mqtt.aio import AsyncClient
async def main():
    c = AsyncClient("aio-refused", "127.0.0.1", %d, version=%d, timeout_ms=1000, backoff_ms=(5000, 5000))
    try:
        await c.connect(timeout_ms=800)
    except Exception as x:
        print("RAISED", type(x).__name__)
    print("LAST", repr(c.client.last_error))
asyncio.run(main())
""" % (free_port(), ver))
    assert "refused: no broker on that port" in r.stdout, r.stdout


@pytest.mark.parametrize("ver", [4, 5])
def test_a_consumer_behind_past_the_keepalive_costs_no_link(broker, ver):
    """messages() full: nothing is read, so the PINGRESP waits behind what
    is unread, and the task took the link for dead at every keepalive (a
    review found it): the unread messages went with it, QoS 1 ones too on a
    clean session. Input waiting counts as the broker's answer now: the
    link stays, and every message comes once the consumer takes them."""
    r = run_mp(r"""
import asyncio
from durable_mqtt.aio import AsyncClient
from durable_mqtt import MQTTClient
async def main():
    c = AsyncClient("behind-%d", "127.0.0.1", %d, version=%d, keepalive=2, queue_size=2, clean_session=True)
    await c.connect(timeout_ms=3000)
    await c.subscribe("behind/%d", 1)
    p = MQTTClient("behind-pub-%d", "127.0.0.1", %d)
    p.connect()
    for i in range(10):
        p.publish("behind/%d", b"m%%d" %% i, qos=1)
        await asyncio.sleep_ms(50)
    p.disconnect()
    await asyncio.sleep_ms(4000)          # the consumer late: two keepalives
    got = []
    async def take():
        async for t, m, r, q in c.messages():
            got.append(bytes(m))
    t = asyncio.create_task(take())
    for _ in range(40):
        await asyncio.sleep_ms(50)
        if len(got) == 10:
            break
    t.cancel()
    print("DOWNS", c.stats()["link_downs"], "GOT", got)
    await c.disconnect()
asyncio.run(main())
""" % (ver, broker.port, ver, ver, ver, broker.port, ver), timeout=60)
    assert "DOWNS 0 GOT [%s]" % ", ".join("b'm%d'" % i for i in range(10)) in r.stdout, r.stdout


CLOSE = r"""
import asyncio, time
from durable_mqtt.aio import AsyncClient
from durable_mqtt import MQTTClient
from durable_mqtt.filelog import FileLog

async def main():
    got = []
    s = MQTTClient("aio-close-s-%(ver)d", "127.0.0.1", %(port)d, version=%(ver)d)
    s.set_callback(lambda t, m, r, q: got.append(bytes(m)))
    s.connect()
    s.subscribe("aio/close/%(ver)d/will", 1)
    log = FileLog(%(path)r)
    c = AsyncClient("aio-close-%(ver)d", "127.0.0.1", %(port)d, version=%(ver)d, session_file=log,
                    backoff_ms=(50, 100))
    c.client.set_last_will("aio/close/%(ver)d/will", b"gone", qos=1)
    await c.connect(timeout_ms=3000)
    await c.publish("aio/close/%(ver)d/x", b"one", qos=1)
    # A publish awaiting its PUBACK when close() comes: NotConnected, its
    # message kept in the session.
    async def waiter():
        try:
            await c.publish("aio/close/%(ver)d/x", b"two", qos=1, timeout_ms=5000)
            return "acked"
        except Exception as x:
            return type(x).__name__
    async def consumer():
        n = 0
        async for m in c.messages():
            n += 1
        return n
    reader = asyncio.create_task(consumer())
    await asyncio.sleep_ms(50)              # the reader waits in messages()
    t = asyncio.create_task(waiter())
    await c.close()
    print("WAITER", await t)
    print("READER", await asyncio.wait_for_ms(reader, 1000))   # messages() ends at close()
    print("OPEN", log._f is not None, c.is_connected())
    await asyncio.sleep_ms(600)            # the task's backoff is 50-100 ms: it would be back by now
    print("LATER", c.is_connected(), log._f is not None)
    for _ in range(20):
        s.check_msg()
        await asyncio.sleep_ms(20)
    print("WILL", got)
    sp = await c.connect(timeout_ms=3000)  # the session stays on both sides
    print("RESUMED", sp)
    await c.disconnect()
    s.disconnect()

asyncio.run(main())
"""


@pytest.mark.parametrize("ver", [4, 5])
def test_close_ends_the_task_and_the_store_without_a_disconnect(broker, tmp_path, ver):
    """AsyncClient.close(): the link closes without a DISCONNECT (the broker
    publishes the will), the background task ends (no reconnect after it:
    client.close() alone was undone by the next one), the store closes, a
    publish awaiting its acknowledgement ends with NotConnected and
    messages() ends (a consumer task hung in it for ever). The
    session stays: the next connect() resumes it."""
    r = run_mp(CLOSE % {"port": broker.port, "ver": ver, "path": str(tmp_path / "log")}, timeout=30)
    assert "WAITER NotConnected" in r.stdout and "READER 0" in r.stdout, r.stdout
    assert "OPEN False False" in r.stdout and "LATER False False" in r.stdout, r.stdout
    assert "WILL [b'gone']" in r.stdout and "RESUMED True" in r.stdout, r.stdout
