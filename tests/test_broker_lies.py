"""A broker that lies or floods, found in review: an Assigned Client
Identifier for a client that gave its own id, a flood that held one
check_msg() (and the asyncio loop) for as long as it lasted, an oversize
incoming PUBLISH that RobustClient and AsyncClient took for a lost link."""
import pytest

from conftest import run_mp
from fakebroker import FakeBroker, connack, props_block, pkt, publish, u16
from test_edge_cases import PRE as EDGE_PRE

# test_edge_cases' prelude (MQTTClient, MQTTException, time, PORT, pump(),
# first_error()), and sys.
PRE = EDGE_PRE + "import sys\n"
# 240,000 QoS 0 messages sent without pause (12 writes of 300 KB).
FLOOD = [("send", publish(4, b"t", b"x" * 10) * 20000)] * 12
# A message callback that counts into n[0].
COUNT = r"""
n = [0]
def count(t, m, r, q):
    n[0] += 1
"""


def test_an_assigned_client_id_is_taken_only_for_an_empty_one(tmp_path):
    # MQTT 5, 3.2.2.3.7: the Assigned Client Identifier is sent only when
    # the CONNECT had a zero-length client id. This broker sends one to
    # "dev1" anyway. The client took it and stored its session under
    # "other"; the next boot set that session aside as another client's
    # and the unacknowledged QoS 1 message was lost. Its own id stands now.
    aci = bytes((0x12,)) + u16(5) + b"other"
    fb = FakeBroker([("send", pkt(0x20, bytes((0, 0)) + props_block(aci))), ("sleep", 0.3), ("close",)],
                    [("send", connack(5, sp=1)), ("recv",), ("sleep", 0.3)])
    prog = PRE % fb.port + r"""
c = MQTTClient("dev1", "127.0.0.1", PORT, version=5, clean_session=False,
               session_file=%r, timeout_ms=2000)
c.set_event_callback(lambda ev, info: print("event", ev, info))
print("pending at boot", c.pending())
if sys.argv[-1] == "first":
    c.connect()
    c.publish("t", b"precious", qos=1)   # not acknowledged on this connection
    pump(c, 300)
    c.close()                             # power cut
else:
    c.connect()
    pump(c, 300)
""" % str(tmp_path / "s")
    r1 = run_mp(prog, args=("first",))
    r2 = run_mp(prog, args=("reboot",))
    fb.join()
    assert "pending at boot 1" in r2.stdout and "discarded" not in r2.stdout, (r1.stdout, r2.stdout)
    assert [conn[0][1].endswith(b"dev1") for conn in fb.conns] == [True, True], fb.conns
    assert [f & 0xF0 for f, _ in fb.conns[1][1:2]] == [0x30], fb.conns[1]


@pytest.mark.parametrize("front", ["check_msg", "async"])
def test_a_flood_does_not_hold_one_check_msg_or_the_event_loop(front):
    # The broker sends QoS 0 messages without pause for a few seconds. One
    # check_msg() call handled them all until the broker stopped (2 s,
    # 240,000 messages), keepalive unserved; AsyncClient's task, calling it
    # without yielding, starved every other task (a 10 ms ticker saw a
    # 1.9 s gap). Now a call reads for 50 ms at most.
    fb = FakeBroker([("send", connack(4))] + FLOOD)
    if front == "check_msg":
        body = COUNT + r"""
c = MQTTClient("flood", "127.0.0.1", PORT, keepalive=10, timeout_ms=2000)
c.set_callback(count)
c.connect()
time.sleep_ms(100)
t0 = time.ticks_ms()
c.check_msg()
print("one check_msg: ms", time.ticks_diff(time.ticks_ms(), t0), "messages", n[0])
c.close()
"""
    else:
        body = COUNT + r"""
import asyncio
from durable_mqtt.aio import AsyncClient
gaps = []
async def ticker():
    last = time.ticks_ms()
    while True:
        await asyncio.sleep_ms(10)
        now = time.ticks_ms()
        gaps.append(time.ticks_diff(now, last))
        last = now
async def main():
    c = AsyncClient("flood", "127.0.0.1", PORT, keepalive=10, timeout_ms=2000)
    c.set_callback(count)
    t = asyncio.create_task(ticker())
    await c.connect()
    await asyncio.sleep_ms(3000)
    print("messages", n[0], "longest ticker gap ms", max(gaps) if gaps else None, "ticks", len(gaps))
asyncio.run(main())
"""
    r = run_mp(PRE % fb.port + body, timeout=60)
    fb.join()
    if front == "check_msg":
        n = int(r.stdout.split("messages ")[1].split()[0])
        assert 0 < n < 100000, r.stdout          # 240,000 when it held until the flood ended
    else:
        gap = int(r.stdout.split("gap ms ")[1].split()[0])
        assert gap < 500, r.stdout


@pytest.mark.parametrize("front", ["robust", "async"])
@pytest.mark.parametrize("v", [4, 5])
def test_an_oversize_incoming_publish_keeps_the_link_in_robust_and_async(v, front):
    # MQTTClient reports an oversize incoming PUBLISH (PacketTooLarge) and
    # keeps the link (test_malformed.py; troubleshooting.md "the
    # connection stays up"). RobustClient.poll() and AsyncClient treat
    # that report as a link failure: the link is closed and reconnected,
    # and what the broker sent meanwhile on the old connection is lost
    # (here a QoS 0 message 0.2 s later).
    big = publish(v, b"big", b"B" * 600, qos=1, pid=7)
    fb = FakeBroker([("send", connack(v)), ("send", big), ("sleep", 0.2),
                     ("send", publish(v, b"small", b"s")), ("sleep", 1.0)],
                    [("send", connack(v, sp=1)), ("sleep", 1.0)])
    if front == "robust":
        body = r"""
from durable_mqtt.robust import RobustClient
c = RobustClient("x", "127.0.0.1", PORT, version=%d, buf_size=256, timeout_ms=2000)
got = []
c.set_callback(lambda t, m, r, q: got.append(bytes(t)))
c.connect()
t0 = time.ticks_ms()
while time.ticks_diff(time.ticks_ms(), t0) < 1500:
    c.poll(20)
print("got", got, "link_downs", c.link_downs)
""" % v
    else:
        body = r"""
import asyncio
from durable_mqtt.aio import AsyncClient
got = []
async def main():
    c = AsyncClient("x", "127.0.0.1", PORT, version=%d, buf_size=256, timeout_ms=2000)
    c.set_callback(lambda t, m, r, q: got.append(bytes(t)))
    await c.connect()
    await asyncio.sleep_ms(1500)
    print("got", got, "link_downs", c.client.link_downs)
asyncio.run(main())
""" % v
    r = run_mp(PRE % fb.port + body)
    fb.join()
    assert len(fb.conns) == 1 and "got [b'small'] link_downs 0" in r.stdout, (len(fb.conns), r.stdout)


def test_async_a_packet_split_inside_its_fixed_header_does_not_spin_the_task():
    # The next packet's first byte arrives alone (a TCP segment boundary, a
    # Wi-Fi stall), the rest 1.5 s later. The half header waits in the
    # link's header buffer (conn.end > 0): the task took that for "input
    # already read" and yielded with sleep_ms(0) instead of waiting on the
    # socket, calling check_msg() about 100,000 times a second until the
    # rest came (or the keepalive gave up).
    p = publish(4, b"t", b"hello")
    fb = FakeBroker([("send", connack(4)), ("sleep", 0.3), ("send", p[:1]), ("sleep", 1.5),
                     ("send", p[1:]), ("sleep", 0.5)])
    r = run_mp(PRE % fb.port + r"""
import asyncio
from durable_mqtt.aio import AsyncClient
calls = [0]
got = []
async def main():
    c = AsyncClient("split", "127.0.0.1", PORT, keepalive=60, timeout_ms=2000)
    c.set_callback(lambda t, m, r, q: got.append(bytes(m)))
    cm = c.client.check_msg
    def counting():
        calls[0] += 1
        cm()
    c.client.check_msg = counting
    await c.connect()
    await asyncio.sleep_ms(500)
    n0 = calls[0]
    await asyncio.sleep_ms(1000)
    print("calls", calls[0] - n0)
    await asyncio.sleep_ms(800)
    print("got", got)
asyncio.run(main())
""", timeout=30)
    fb.join()
    assert int(r.stdout.split("calls ")[1].split()[0]) < 50, r.stdout
    assert "got [b'hello']" in r.stdout, r.stdout


def test_one_check_msg_handles_a_whole_burst_already_received():
    # API.md: check_msg() "handles every packet already received". 40 QoS 1
    # messages in the socket (retained messages after a subscribe, say):
    # one call delivers and acknowledges them all. (A budget of 32 packets
    # a call, against floods, had left 8 for the next call.)
    burst = b"".join(publish(4, b"t", b"m%d" % i, qos=1, pid=i + 1) for i in range(40))
    fb = FakeBroker([("send", connack(4)), ("send", burst), ("sleep", 1.0)])
    r = run_mp(PRE % fb.port + COUNT + r"""
c = MQTTClient("burst", "127.0.0.1", PORT, timeout_ms=2000)
c.set_callback(count)
c.connect()
time.sleep_ms(300)
c.check_msg()
print("delivered", n[0])
time.sleep_ms(100)
c.close()
""")
    fb.join()
    assert "delivered 40" in r.stdout, r.stdout
    assert len([f for f, _ in fb.conns[0][1:] if f & 0xF0 == 0x40]) == 40, fb.conns[0]


def test_subscribe_under_a_flood_keeps_its_timeout():
    # No SUBACK comes, and the broker floods QoS 0 messages meanwhile.
    # subscribe()'s read loop ran while the socket had input, past its
    # timeout_ms, until the flood ended (240,000 messages); it now looks at
    # its deadline after every packet and raises Timeout.
    fb = FakeBroker([("send", connack(4)), ("recv",)] + FLOOD)
    r = run_mp(PRE % fb.port + COUNT + r"""
from durable_mqtt import Timeout
c = MQTTClient("floodsub", "127.0.0.1", PORT, keepalive=10, timeout_ms=300)
c.set_callback(count)
c.connect()
try:
    c.subscribe("a/b", 0)
    print("subscribed")
except Timeout:
    print("timeout after messages", n[0])
c.close()
""", timeout=60)
    fb.join()
    n = int(r.stdout.split("timeout after messages ")[1].split()[0])
    assert n < 200000, r.stdout                  # 240,000 when it held until the flood ended


@pytest.mark.parametrize("tl", [125, 126, 253, 400])
@pytest.mark.parametrize("qos", [1, 2])
@pytest.mark.parametrize("v", [4, 5])
def test_MQTT_4_5_0_2_an_oversize_publish_whose_packet_id_lies_past_buf_size_is_acknowledged(v, qos, tl):
    # An incoming PUBLISH larger than buf_size is dropped and acknowledged
    # (api.md, check_msg()), so that the broker neither keeps it in flight
    # for ever (its send quota, Receive Maximum or its own window, one
    # place short for good) nor resends it at every reconnect. Only the
    # first buf_size bytes are kept: with a Topic Name that long the
    # packet id came after them, among the bytes dropped, and the PUBLISH
    # went unacknowledged. buf_size 128: the id straddles the kept bytes
    # and the dropped ones (tl 125), starts right after them (126), spans
    # two of the dropped reads (253), lies far past them (400).
    big = publish(v, b"t" * tl, b"x" * 10, qos=qos, pid=0x0107)
    fb = FakeBroker([("send", connack(v)), ("send", big), ("sleep", 0.2),
                     ("send", publish(v, b"s", b"y", qos=1, pid=8)), ("sleep", 0.6)])
    r = run_mp(PRE % fb.port + r"""
from durable_mqtt.errors import PacketTooLarge
c = MQTTClient("long", "127.0.0.1", PORT, version=%d, buf_size=128, timeout_ms=2000)
got = []
c.set_callback(lambda t, m, r, q: got.append(bytes(m)))
c.connect()
t0 = time.ticks_ms()
while time.ticks_diff(time.ticks_ms(), t0) < 600:
    try:
        c.check_msg()
    except PacketTooLarge as e:
        print("dropped", e.args[1])
    time.sleep_ms(5)
print("got", got, "connected", c.is_connected())
c.close()
""" % v)
    fb.join()
    assert "dropped an incoming PUBLISH of %d bytes" % len(big) in r.stdout, r.stdout
    assert "got [b'y'] connected True" in r.stdout, r.stdout
    acks = [(f, b[:2], b[2:3]) for f, b in fb.conns[0][1:]]
    refused = b"\x97" if v == 5 else b""               # MQTT 5: Quota exceeded; 3.1.1 has no refusal
    assert acks == [(0x40 if qos == 1 else 0x50, u16(0x0107), refused), (0x40, u16(8), b"")], acks
