"""An external-style audit of the public contract (API.md): each test
drives the library only through the names on that page (plus the event
callback where the contract's effect is otherwise invisible), against a
real mosquitto or the scripted fake broker, in both protocol versions."""
import pytest

from conftest import reports, run_mp
from fakebroker import FakeBroker, connack, pkt, publish, publish_of_size, u16

VERSIONS = (4, 5)

PRE = r"""
from durable_mqtt import MQTTClient, MQTTException
from fake_report import report, emit, pump, pump_until
import time
PORT = %(port)d
V = %(ver)d
PATH = %(path)r
"""


def mp(port, ver, body, path="", **kw):
    r = run_mp(PRE % {"port": port, "ver": ver, "path": str(path)} + body, **kw)
    return reports(r.stdout), r.stdout


@pytest.mark.parametrize("restored", [False, True])
@pytest.mark.parametrize("ver", VERSIONS)
def test_clean_connect_forgets_the_old_sessions_subscriptions(broker, tmp_path, ver, restored):
    """connect(clean_session=True) starts clean (MQTT-3.1.2-6, API.md): the
    subscriptions of the session it discards are not made again by a later
    connect() after the link dropped, which finds the broker without a
    session: the application never subscribed on the new one."""
    res, out = mp(broker.port, ver, r"""
CID = "forget-subs-%d-%d" % (V, RESTORED)
kw = {"session_file": PATH} if RESTORED else {}
a = MQTTClient(CID, "127.0.0.1", PORT, version=V, clean_session=False, **kw)
a.connect()
a.subscribe("forget/%d/old" % V, 1)
a.disconnect()
if RESTORED:
    a = MQTTClient(CID, "127.0.0.1", PORT, version=V, **kw)       # a reboot: the stored session
    assert a.clean_session is False
events = []
a.set_event_callback(lambda ev, info: events.append((ev, info)))
a.connect(clean_session=True)            # the old session, its subscription included, is gone
a.close()                                # the link drops (Wi-Fi)
sp = a.connect()                         # persistent again: the broker has no session
emit("second", sp=sp, event=events[-1][0], resubscribed=events[-1][1].get("resubscribed", 0))
got = []
a.set_callback(lambda t, m, r, q: got.append(bytes(m)))
o = MQTTClient(CID + "-pub", "127.0.0.1", PORT, version=V)
o.connect()
o.publish("forget/%d/old" % V, b"stale", qos=1)
o.disconnect()
pump(a, ms=500)
emit("got", got=repr(got))
a.disconnect()
""".replace("RESTORED", str(int(restored))), path=tmp_path / "s")
    assert res["second"]["resubscribed"] == 0, out
    assert res["got"]["got"] == "[]", out


OVERSIZE_BAD_TOPIC = r"""
c = MQTTClient("bad-topic", "127.0.0.1", PORT, version=V, buf_size=128, timeout_ms=2000)
got = []
c.set_callback(lambda t, m, r, q: got.append(bytes(t)))
c.connect()
def until_closed():
    t0 = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), t0) < 1500:
        c.wait_msg(50)
    return "no error"
report("err", until_closed)
emit("after", got=repr(got), connected=c.is_connected())
"""


@pytest.mark.parametrize("topic", [b"a/+", b"a/#", b"a\x00b", b"\xc0\x80", b""],
                         ids=["plus", "hash", "nul", "overlong", "empty"])
@pytest.mark.parametrize("ver", VERSIONS)
def test_oversize_publish_with_a_malformed_topic_name_closes_the_link(ver, topic):
    """API.md: an incoming PUBLISH whose Topic Name is not well formed is a
    malformed packet: the client closes the connection and raises
    MQTTException. That holds for one larger than buf_size too: it was
    acknowledged (PUBACK) and the link kept, as for a well-formed one."""
    big = publish(ver, topic, b"x" * 300, qos=1, pid=5)
    fb = FakeBroker([("send", connack(ver)), ("send", big), ("sleep", 0.3),
                     ("send", publish(ver, b"ok", b"y")), ("sleep", 0.5)])
    res, out = mp(fb.port, ver, OVERSIZE_BAD_TOPIC)
    fb.join()
    err = res["err"]
    assert not err["ok"] and err["mqtt"], out
    assert err["cls"] == "ProtocolError", out
    assert res["after"] == {"tag": "after", "got": "[]", "connected": False}, out
    assert [p[0] for p in fb.conns[0][1:]] == [], fb.conns[0]          # no PUBACK for it


SUBSCRIBE_IN_CALLBACK = r"""
c = MQTTClient("cb-sub", "127.0.0.1", PORT, version=V, timeout_ms=2000)
got = []
def cb(t, m, r, q):
    got.append((bytes(t), q))
    if bytes(t) == b"cmd":
        c.subscribe("new/topic", 1)       # reads (and handles) packets until its SUBACK
c.set_callback(cb)
c.connect()
report("run", lambda: pump(c, ms=600))
emit("got", got=repr(got))
"""


@pytest.mark.parametrize("ver", VERSIONS)
def test_subscribe_from_the_callback_acknowledges_both_messages(ver):
    """subscribe() waits for SUBACK handling what arrives meanwhile; called
    from the message callback, a PUBLISH read during that wait must not
    take the place of the one being delivered: each is acknowledged once,
    with its own id (the outer QoS 1 message was never acknowledged and the
    inner QoS 2 one twice)."""
    def suback(got):
        return pkt(0x90, got[-1][1][:2] + (b"\x00" if ver == 5 else b"") + b"\x01")
    fb = FakeBroker([("send", connack(ver)), ("send", publish(ver, b"cmd", b"x", qos=1, pid=11)), ("recv",),
                     ("send", publish(ver, b"other", b"y", qos=2, pid=22)), ("reply", suback), ("sleep", 0.7)])
    res, out = mp(fb.port, ver, SUBSCRIBE_IN_CALLBACK)
    fb.join()
    assert res["run"]["ok"], out
    assert res["got"]["got"] == repr([(b"cmd", 1), (b"other", 2)]), out
    acks = sorted((first, body[:2]) for first, body in fb.conns[0][1:] if first in (0x40, 0x50))
    assert acks == [(0x40, u16(11)), (0x50, u16(22))], fb.conns[0]
