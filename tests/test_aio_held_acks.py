"""AsyncClient's messages() acknowledges a QoS 1/2 message when it hands the
copy out, not when the copy enters its queue (lib/durable_mqtt/later.py). A
reset while copies wait in the queue loses none of them; a reconnect that
resumes the session gets them again from the broker, and a QoS 2 one is
still delivered once. Real mosquitto; the rules on their own, without a
broker, at the end."""
import pytest

from conftest import run_mp

HEAD = r"""
import asyncio, sys
from durable_mqtt.aio import AsyncClient
from durable_mqtt import MQTTClient
PORT = %(port)d
VER = %(ver)d
CID = "held-%(name)s-%(ver)d"
LOG = %(log)r

def client(**kw):
    return AsyncClient(CID, "127.0.0.1", PORT, version=VER, keepalive=20, timeout_ms=2000,
                       session_file=LOG, clean_session=False, queue_size=16, **kw)

def publish_all(topic_qos, first=0):
    # Each (topic, qos) published, its payload its number from first on.
    p = MQTTClient(CID + "-pub", "127.0.0.1", PORT, version=VER)
    p.connect()
    for i, (t, q) in enumerate(topic_qos):
        p.publish(t, b"%%d" %% (first + i), qos=q)
    while p.pending():
        p.wait_msg(1000)
    p.disconnect()

async def relinked(c, cut):
    # cut() ends the link under the background task; back once it has
    # connected again.
    links = c.client.stats()["reconnects"]
    cut()
    while c.client.stats()["reconnects"] == links or not c.is_connected():
        await asyncio.sleep_ms(5)

async def queued(c, topic, qos, n):
    # Connected and subscribed, n messages published to topic and queued.
    await c.connect()
    await c.subscribe(topic, qos)
    publish_all([(topic, qos)] * n)
    await asyncio.sleep_ms(500)

async def mixed(c):
    # Connected, subscribed to held/NAME/1 at QoS 1 and held/NAME/2 at QoS 2,
    # and ten messages queued, one topic then the other.
    await c.connect()
    for q in (1, 2):
        await c.subscribe("held/%(name)s/%%d" %% q, q)
    publish_all([("held/%(name)s/%%d" %% (1 + i %% 2), 1 + i %% 2) for i in range(10)])
    await asyncio.sleep_ms(500)

async def drain(c, quiet_ms=1500):
    got = []
    it = c.messages()
    while True:
        try:
            t, m, r, q = await asyncio.wait_for_ms(it.__anext__(), quiet_ms)
        except asyncio.TimeoutError:
            return got
        got.append((int(m), q))
"""

@pytest.mark.parametrize("ver", [4, 5])
def test_reset_with_copies_queued_loses_none(broker, tmp_path, ver):
    # Ten messages (QoS 1 and 2) arrive and wait in the queue; the
    # application takes three and the board resets (no DISCONNECT, nothing
    # more sent). The next boot resumes the session and gets the other
    # seven, once each. When the copies were acknowledged as they were
    # queued, those seven were lost (the broker had them acknowledged).
    v = dict(port=broker.port, ver=ver, name="reset", log=str(tmp_path / "s.dmq"))
    first = run_mp(HEAD % v + r"""
async def main():
    c = client()
    await mixed(c)          # all ten queued, none taken
    it = c.messages()
    for _ in range(3):
        t, m, r, q = await it.__anext__()
        print("took", int(m), q)
    await asyncio.sleep_ms(300)          # the PUBREL of a QoS 2 one taken, answered
    sys.exit(0)                          # the reset: the socket just closes
asyncio.run(main())
""", check=False)
    taken = [(int(line.split()[1]), int(line.split()[2])) for line in first.stdout.splitlines()
             if line.startswith("took")]
    assert len(taken) == 3, first.stdout + first.stderr
    second = run_mp(HEAD % v + r"""
async def main():
    c = client()
    print("present", await c.connect())
    got = await drain(c)
    print("got", sorted(got))
    await c.disconnect()
asyncio.run(main())
""")
    got = eval(second.stdout.split("got ", 1)[1].splitlines()[0])
    assert "present True" in second.stdout, second.stdout
    # The seven not taken, each once (QoS 2 included), none of the three again.
    assert sorted(taken + got) == [(i, 1 + i % 2) for i in range(10)], (taken, second.stdout)


@pytest.mark.parametrize("ver", [4, 5])
def test_reconnect_with_qos2_copies_queued_delivers_each_once(broker, tmp_path, ver):
    # Five QoS 2 copies wait in the queue when the link drops. The broker
    # resumes the session and sends the five again (DUP): those are the
    # copies already queued, not delivered again; each is acknowledged
    # (PUBREC) on the new connection when taken, and its PUBREL / PUBCOMP
    # end it: the incoming QoS 2 table is empty afterwards.
    v = dict(port=broker.port, ver=ver, name="drop", log=str(tmp_path / "s.dmq"))
    r = run_mp(HEAD % v + r"""
async def main():
    c = client()
    await queued(c, "held/drop/2", 2, 5)
    await relinked(c, c.client.drop_link)     # the link fails under the task
    await asyncio.sleep_ms(500)          # the broker's resends read (and not queued again)
    got = await drain(c)
    await asyncio.sleep_ms(300)
    print("got", sorted(got))
    print("table", c.client.engine.rx2_n)
    await c.disconnect()
asyncio.run(main())
""")
    got = eval(r.stdout.split("got ", 1)[1].splitlines()[0])
    assert got == [(i, 2) for i in range(5)], r.stdout
    assert "table 0" in r.stdout, r.stdout


@pytest.mark.parametrize("ver", [4, 5])
def test_qos2_copies_taken_while_down_are_not_delivered_again(broker, tmp_path, ver):
    # disconnect() with three QoS 2 copies queued; the application takes
    # them while the client is down (they cannot be acknowledged: their ids
    # are recorded, on flash). The next connect resumes the session and the
    # broker sends them again: duplicates, acknowledged, not delivered.
    v = dict(port=broker.port, ver=ver, name="down", log=str(tmp_path / "s.dmq"))
    r = run_mp(HEAD % v + r"""
async def main():
    c = client()
    await queued(c, "held/down/2", 2, 3)
    await c.disconnect()
    it = c.messages()
    took = []
    for _ in range(3):
        t, m, r, q = await it.__anext__()
        took.append(int(m))
    print("took", took, "table", c.client.engine.rx2_n)
    await c.connect()
    got = await drain(c)
    await asyncio.sleep_ms(300)
    print("again", got, "table", c.client.engine.rx2_n)
    await c.disconnect()
asyncio.run(main())
""")
    assert "took [0, 1, 2] table 3" in r.stdout, r.stdout
    assert "again [] table 0" in r.stdout, r.stdout


@pytest.mark.parametrize("ver", [4, 5])
def test_close_leaves_the_unacknowledged_copies_to_the_broker(broker, tmp_path, ver):
    # close() with copies queued and the session on flash: those copies go
    # (the store is closed: a QoS 2 one taken then could not be recorded),
    # and the broker sends them at the next connect, once each.
    v = dict(port=broker.port, ver=ver, name="close", log=str(tmp_path / "s.dmq"))
    r = run_mp(HEAD % v + r"""
async def main():
    c = client()
    await mixed(c)
    await c.close()
    left = []
    async for t, m, r, q in c.messages():    # ends: close(), and nothing kept
        left.append(int(m))
    print("left", left)
    c = client()
    await c.connect()
    got = await drain(c)
    print("got", sorted(got))
    await c.disconnect()
asyncio.run(main())
""")
    assert "left []" in r.stdout, r.stdout
    got = eval(r.stdout.split("got ", 1)[1].splitlines()[0])
    assert got == [(i, 1 + i % 2) for i in range(10)], r.stdout


@pytest.mark.parametrize("ver", [4, 5])
def test_a_lost_session_reuses_the_ids_of_copies_queued(broker, tmp_path, ver):
    # Three QoS 2 copies wait in the queue (ids 1-3) when another connection
    # with the same client id and a clean session takes the session over:
    # the broker forgets it. The reconnect finds the session lost, the
    # client subscribes again, and the broker's new session numbers three
    # new messages 1-3 again: they are new messages, delivered, not taken
    # for resends of the copies queued (whose acknowledgements are now void).
    v = dict(port=broker.port, ver=ver, name="lost", log=str(tmp_path / "s.dmq"))
    r = run_mp(HEAD % v + r"""
async def main():
    c = client()
    await queued(c, "held/lost/2", 2, 3)
    t = MQTTClient(CID, "127.0.0.1", PORT, version=VER, clean_session=True)
    await relinked(c, lambda: (t.connect(), t.disconnect()))   # the takeover: the session is gone
    await asyncio.sleep_ms(500)          # its subscription made again
    publish_all([("held/lost/2", 2)] * 3, 3)
    got = await drain(c)
    print("present", c.client.session_present, "got", sorted(got))
    await c.disconnect()
asyncio.run(main())
""")
    assert "present False" in r.stdout, r.stdout
    got = eval(r.stdout.split("got ", 1)[1].splitlines()[0])
    assert got == [(i, 2) for i in range(6)], r.stdout


def test_a_copy_taken_during_a_reconnect_leaves_its_connect_alone(broker, tmp_path):
    # A stale QoS 2 copy taken while the reconnect dials: its id is recorded
    # (no PUBREC: the link is down), and nothing is built in the client's
    # transmit buffer, where the CONNECT waits to be written. (It was: the
    # broker read PUBREC bytes, closed for a protocol error, and the attempt
    # failed.)
    v = dict(port=broker.port, ver=5, name="dial", log=str(tmp_path / "s.dmq"))
    r = run_mp(HEAD % v + r"""
async def main():
    c = client()
    await queued(c, "held/dial/2", 2, 3)
    failed = []
    down = c.client.link_down
    c.client.link_down = lambda x, *a: (failed.append(repr(x)), down(x, *a))[1]
    c.client.drop_link()
    while not c.client.conn.in_connect:
        await asyncio.sleep_ms(0)
    first = bytes(c.client.tx[0:1])
    t, m, r, q = await c.messages().__anext__()
    print("tx kept", bytes(c.client.tx[0:1]) == first == b"\x10")
    while not c.is_connected():
        await asyncio.sleep_ms(5)
    got = [int(m)] + [n for n, _ in await drain(c)]
    print("failed", failed, "got", sorted(got))
    await c.disconnect()
asyncio.run(main())
""")
    assert "tx kept True" in r.stdout, r.stdout
    assert "failed [] got [0, 1, 2]" in r.stdout, r.stdout


STALE_DROPPED = r"""
import asyncio
from durable_mqtt.aio import AsyncClient
async def main():
    c = AsyncClient("held-expired", "127.0.0.1", %d, version=4, keepalive=20, timeout_ms=2000,
                    clean_session=False, session_file=%r, backoff_ms=(50, 100))
    await c.connect()
    while not c._queue:
        await asyncio.sleep_ms(10)
    links = c.client.stats()["reconnects"]
    while c.client.stats()["reconnects"] == links or not c.is_connected():
        await asyncio.sleep_ms(10)
    t, m, r, q = await c.messages().__anext__()    # stale: taken, its id recorded
    e = c.client.engine
    print("taken", bytes(m), "table", [e.rx2[k] for k in range(e.rx2_n)])
    t, m, r, q = await asyncio.wait_for_ms(c.messages().__anext__(), 3000)
    print("then", bytes(m), "dup_in", c.client.stats()["dup_in"])
    await c.disconnect()
asyncio.run(main())
"""


def test_an_id_the_broker_dropped_while_down_is_a_new_message_when_it_comes_again(tmp_path):
    # A QoS 2 copy queued when the link drops; the session resumes, but the
    # broker sends nothing again (the message expired there: mosquitto
    # drops it). The copy is taken: its id is recorded, awaiting the
    # broker's second copy. The broker's next PUBLISH has DUP 0 (its
    # resends are over) and reuses that id for a new message: delivered.
    # (It was taken for a duplicate and never delivered, and the id stayed
    # in the table, on flash, for good.)
    from fakebroker import FakeBroker, connack, publish
    fb = FakeBroker([("send", connack(4)), ("send", publish(4, b"t", b"old", qos=2, pid=1)), ("sleep", 0.3)],
                    [("send", connack(4, sp=1)), ("sleep", 0.6), ("send", publish(4, b"t", b"new", qos=2, pid=1)),
                     ("recv",), ("send", bytes((0x62, 2, 0, 1))), ("recv",), ("sleep", 0.3)], io_timeout=10)
    r = run_mp(STALE_DROPPED % (fb.port, str(tmp_path / "s.dmq")))
    fb.join()
    assert "taken b'old' table [1]" in r.stdout, r.stdout
    assert "then b'new' dup_in 0" in r.stdout, r.stdout


def test_set_callback_with_copies_queued_acknowledges_them(broker, tmp_path):
    # MQTT 5, Receive Maximum 2: two QoS 1 copies queued (acknowledgements
    # held) use up the broker's quota. set_callback() acknowledges them, so
    # the rest reach the callback. (Held, nothing more came.)
    v = dict(port=broker.port, ver=5, name="cb", log=str(tmp_path / "s.dmq"))
    r = run_mp(HEAD % v + r"""
async def main():
    c = client(receive_max=2)
    await queued(c, "held/cb/1", 1, 3)
    got = []
    c.set_callback(lambda t, m, r, q: got.append(int(m)))
    publish_all([("held/cb/1", 1)] * 7, 3)
    await asyncio.sleep_ms(1000)
    print("callback", got, "queued", [int(m) for _, m, _, _ in c._queue])
    await c.disconnect()
asyncio.run(main())
""")
    assert "callback [2, 3, 4, 5, 6, 7, 8, 9] queued [0, 1]" in r.stdout, r.stdout


@pytest.mark.parametrize("ver", [4, 5])
def test_qos1_copies_queued_at_a_link_drop_are_delivered_once(broker, tmp_path, ver):
    # 40 QoS 1 messages through a queue of 2, four link drops with copies
    # queued: the broker's second copy of each is matched with the one
    # queued (or taken) and not delivered again.
    v = dict(port=broker.port, ver=ver, name="q1", log=str(tmp_path / "s.dmq"))
    r = run_mp(HEAD.replace("queue_size=16", "queue_size=2, backoff_ms=(50, 200)") % v + r"""
async def main():
    c = client()
    await queued(c, "held/q1/1", 1, 40)
    it = c.messages()
    got = []
    for d in range(4):
        for _ in range(5):
            got.append(int((await it.__anext__())[1]))
        await asyncio.sleep_ms(100)
        await relinked(c, c.client.drop_link)
        await asyncio.sleep_ms(100)
    got += [n for n, _ in await drain(c)]
    print("deliveries", len(got), "messages", len(set(got)))
    await c.disconnect()
asyncio.run(main())
""", timeout=90)
    assert "deliveries 40 messages 40" in r.stdout, r.stdout


RULES = r"""
from durable_mqtt import later

class Engine:
    def __init__(self):
        self.rx2 = bytearray(4)
        self.rx2_n = 0
    def rx2_index(self, pid):
        return -1

class Link:
    later = None
    def __init__(self):
        self.engine = Engine()

k = Link()
k.later = [0x10007, 0x20008, 0x20009]
print("again", later.incoming(k, 2, 8, 8), k.later == [0x10007, 0x20008, 0x20009])
print("new", later.incoming(k, 2, 10, 0))
k.engine.rx2_n = 2                     # two in the table, two QoS 2 copies held: no room
print("full", later.incoming(k, 2, 11, 0), later.incoming(k, 1, 12, 0))
k.engine.rx2_n = 0
later.connected(k, True)
print("stale", [hex(x) for x in k.later])
print("resent", later.incoming(k, 2, 9, 8), [hex(x) for x in k.later])
later.over(k, 7)                      # a new message with id 7: the broker dropped that copy
print("over", [hex(x) for x in k.later])
k.later = [0x10007, 0x20008]
later.connected(k, False)
print("void", k.later)
"""


def test_the_held_acknowledgement_rules():
    # later.py on a stand-in link: a QoS 2 id held is a resend, matched
    # (and live again on this connection); one not held has the table's
    # room checked counting the held QoS 2 ids (None: no room, not taken); a reconnect marks what is
    # held as stale; a PUBLISH with DUP 0 and a stale entry's id means the
    # broker dropped that copy: nothing left to acknowledge; a new
    # session voids what is held (its ids may be reused).
    r = run_mp(RULES)
    assert "again True True" in r.stdout, r.stdout
    assert "new False" in r.stdout and "full None False" in r.stdout, r.stdout
    assert "stale ['0x50007', '0x60008', '0x60009']" in r.stdout, r.stdout
    assert "resent True ['0x50007', '0x60008', '0x20009']" in r.stdout, r.stdout
    assert "over ['0x0', '0x60008', '0x20009']" in r.stdout, r.stdout
    assert "void [0, 0]" in r.stdout, r.stdout


STANDIN = r"""
from durable_mqtt import later

class Engine:
    rec = 0
    def __init__(self):
        self.rx2 = bytearray(4)
        self.rx2_n = 0
    def ack_incoming(self, qos, pid, reason, tx):
        return 4

class Link:
    later = None
    connected = True
    def __init__(self, fail_at):
        self.engine = Engine()
        self.c = self
        self.conn = self
        self.persist = False
        self.flushes = 0
        self.fail_at = fail_at
        self.owed = []
    def owe(self, tx, n):
        self.owed.append(n)
    def flush(self):
        self.flushes += 1
        if self.flushes == self.fail_at:
            raise OSError(104)
    def failed(self, x):
        self.connected = False

k = Link(2)
k.later = [0x20001, 0x20002, 0x20003]
later.release(k)
try:
    later.release(k)
except OSError:
    pass
print("after a failed write", [hex(x) for x in k.later])
k = Link(1)
k.later = [0x10001, 0x10002, 0x20003]
later.release_all(k)
print("release_all", [hex(x) for x in k.later], k.connected)
k = Link(0)
k.later = [0, 0x10002]
later.connected(k, True)
kept = later.forget(k, [("t", b"1", False, 1), ("t", b"2", False, 1)])
print("close keeps", [m[1] for m in kept], k.later)
"""


def test_the_entries_stay_with_their_copies():
    # later.py on a stand-in link whose second write fails (the broker
    # closed the link): the entry of the copy handed out goes all the same,
    # so the next copy still has its own (it was left behind: every later
    # take acknowledged the copy before it, and a QoS 2 id went unrecorded).
    # release_all() (set_callback()) meeting a failed write goes on with
    # the rest as with the link down: taken, acknowledged when the broker
    # sends them again (they were left held for good).
    r = run_mp(STANDIN)
    assert "after a failed write ['0x20003']" in r.stdout, r.stdout
    assert "release_all ['0x0', '0x0', '0x0', '0x90002', '0xa0003'] False" in r.stdout, r.stdout
    # close() after a resumed reconnect keeps a copy with nothing to
    # acknowledge (one past the queue's size, acknowledged when queued: the
    # broker has no other); it was taken for a held one and dropped.
    assert "close keeps [b'1'] [0]" in r.stdout, r.stdout


BACKLOG = r"""
import asyncio
from durable_mqtt.aio import AsyncClient
async def main():
    c = AsyncClient("held-backlog", "127.0.0.1", %d, version=4, keepalive=20, timeout_ms=2000,
                    clean_session=False, queue_size=8, backoff_ms=(5000, 5000))
    await c.connect()
    await asyncio.sleep_ms(1000)
    print("queued", len(c._queue), "held", len([x for x in c.client.conn.later if x]))
    await c.close()
asyncio.run(main())
"""


def test_a_backlog_past_the_queue_is_acknowledged_as_it_comes():
    # A broker's backlog of 70 QoS 2 messages at once (a resumed session,
    # mosquitto with no in-flight limit): the copies past queue_size are
    # acknowledged as they are queued, so what is held stays within the
    # queue's size. (All were held: the table of unreleased ids filled with
    # ids never acknowledged, every connection closed on it, and the broker
    # sent the same backlog again.)
    from fakebroker import FakeBroker, connack, publish
    backlog = b"".join(publish(4, b"t", b"%d" % i, qos=2, pid=i + 1) for i in range(70))
    fb = FakeBroker([("send", connack(4, sp=1)), ("sleep", 0.3), ("send", backlog), ("sleep", 1.2)],
                    io_timeout=10)
    r = run_mp(BACKLOG % fb.port)
    fb.join()
    recs = [body[:2] for f, body in fb.conns[0] if f == 0x50]
    assert len(recs) >= 56, (len(recs), r.stdout)
    assert "held 8" in r.stdout, r.stdout


@pytest.mark.parametrize("mode", ["queued", "taken"])
def test_MQTT_4_6_0_6_a_held_qos2_copy_resent_after_a_new_message_of_another_topic_is_delivered_once(mode):
    """A QoS 2 copy held in messages() (queued, or taken while the link was
    down) when the link drops; the resumed session's broker sends a new
    message of another topic (DUP 0) before its resend of the held one
    (DUP 1): the order per topic is all MQTT asks (MQTT-4.6.0-6). Any DUP 0
    PUBLISH ended the held entries (later.py), so the resend was taken for
    a new message and X delivered twice (a load review). Now only a DUP 0
    PUBLISH with the entry's own id ends it: X once, then Y."""
    from fakebroker import FakeBroker, connack, publish
    X = publish(4, b"a", b"X", qos=2, pid=5)
    X_DUP = publish(4, b"a", b"X", qos=2, pid=5, first=0x30 | 4 | 8)
    Y = publish(4, b"b", b"Y", qos=2, pid=6)
    fb = FakeBroker([("send", connack(4)), ("send", X), ("sleep", 0.5), ("close",)],
                    [("send", connack(4, sp=1)), ("sleep", 0.2), ("send", Y), ("sleep", 0.2), ("send", X_DUP),
                     ("sleep", 1.5)], io_timeout=10)
    r = run_mp(r"""
import asyncio
from durable_mqtt.aio import AsyncClient
TAKE = %r
async def main():
    c = AsyncClient("dup-over", "127.0.0.1", %d, keepalive=20, timeout_ms=2000,
                    clean_session=False, queue_size=8, backoff_ms=(300, 300))
    await c.connect()
    got = []
    it = c.messages()
    if TAKE:
        await asyncio.sleep_ms(100)
        while c.is_connected():
            await asyncio.sleep_ms(5)
        t, m, r, q = await it.__anext__()     # taken while the link is down
        got.append((bytes(t), bytes(m)))
    else:
        await asyncio.sleep_ms(1500)          # all copies queued, none taken yet
    while True:
        try:
            t, m, r, q = await asyncio.wait_for_ms(it.__anext__(), 2500)
        except asyncio.TimeoutError:
            break
        got.append((bytes(t), bytes(m)))
    print("GOT", got)
    await c.close()
asyncio.run(main())
""" % (mode == "taken", fb.port), timeout=60)
    fb.join()
    assert "GOT [(b'a', b'X'), (b'b', b'Y')]" in r.stdout, r.stdout
