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
    # No PUBACK for it; MQTT 5 closes with DISCONNECT 0x81 (Malformed
    # Packet, MQTT 5 4.13.1), 3.1.1 just closes.
    assert fb.conns[0][1:] == ([(0xE0, b"\x81")] if ver == 5 else []), fb.conns[0]


# Topic Names longer than rx (buf_size=128: the body's first 128 bytes, the
# Topic Name's first 126): the rest passes through the bytes dropped.
LONG_TOPICS = {
    "plus_in_kept_part": (b"a/+/" + b"x" * 200, False),
    "hash_past_buf_size": (b"a/" + b"x" * 200 + b"/#", False),
    "nul_past_buf_size": (b"a/" + b"x" * 300 + b"\x00", False),
    "bad_utf8_past_buf_size": (b"a/" + b"x" * 200 + b"\xc3\x28", False),
    "utf8_cut_at_the_end": (b"a/" + b"x" * 200 + b"\xf0\x9f\x98", False),
    "bad_byte_after_the_seam": (b"a/" + b"x" * 122 + b"\xe2\x82(" + b"/z" * 20, False),
    "surrogate_across_the_seam": (b"a/" + b"x" * 123 + b"\xed\xa0\x80" + b"/z" * 20, False),
    "well_formed_across_the_seam": (b"a/" + b"x" * 120 + "\U0001F600\u20ac\u00e9".encode() * 5, True),
}


@pytest.mark.parametrize("name", sorted(LONG_TOPICS))
@pytest.mark.parametrize("ver", VERSIONS)
def test_oversize_publish_with_a_topic_name_longer_than_buf_size_is_checked_whole(ver, name):
    """API.md: an incoming PUBLISH whose Topic Name is not well formed closes
    the link with MQTTException, unacknowledged, whatever its size. A Topic
    Name longer than the receive buffer was not checked at all, even where
    rx kept it (a '+' at its third byte): the PUBLISH was acknowledged and
    dropped as a well-formed oversize one (PacketTooLarge, link kept). A
    well-formed one, UTF-8 sequences across the buffer's end included, is
    still that."""
    topic, good = LONG_TOPICS[name]
    fb = FakeBroker([("send", connack(ver)), ("send", publish(ver, topic, b"p" * 50, qos=1, pid=5)),
                     ("sleep", 0.5)])
    res, out = mp(fb.port, ver, OVERSIZE_BAD_TOPIC)
    fb.join()
    err = res["err"]
    assert not err["ok"] and err["mqtt"], out
    if good:
        assert err["cls"] == "PacketTooLarge" and res["after"]["connected"] is True, out
        assert fb.conns[0][1:] == [(0x40, u16(5) + (b"\x97" if ver == 5 else b""))], fb.conns[0]
    else:
        assert err["cls"] == "ProtocolError", out
        assert res["after"] == {"tag": "after", "got": "[]", "connected": False}, out
        assert fb.conns[0][1:] == ([(0xE0, b"\x81")] if ver == 5 else []), fb.conns[0]


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
    # ... in the order the PUBLISHes came (MQTT-4.6.0-2, -3): the outer
    # one's first, though the inner one's callback ended first.
    acks = [(first, body[:2]) for first, body in fb.conns[0][1:] if first in (0x40, 0x50)]
    assert acks == [(0x40, u16(11)), (0x50, u16(22))], fb.conns[0]


BAD_ARGUMENTS = r"""
from array import array
CID = "bad-args-%d" % V
T = "bad/%d/t" % V
def make(**kw):
    kw.setdefault("port", PORT)
    return lambda: MQTTClient(CID, "127.0.0.1", version=V, **kw)
for tag, kw in (("port_str", {"port": "1883"}), ("port_big", {"port": 70000}),
                ("keepalive_float", {"keepalive": 1.5}), ("buf_size_str", {"buf_size": "1024"}),
                ("timeout_neg", {"timeout_ms": -1}), ("timeout_str", {"timeout_ms": "x"}),
                ("outbox_bytes_neg", {"outbox_bytes": -5}), ("session_file_int", {"session_file": 5}),
                ("session_file_empty", {"session_file": ""}), ("event_callback_int", {"event_callback": 5})):
    report("ctor_" + tag, make(**kw))
report("ctor_cid_int", lambda: MQTTClient(123, "127.0.0.1", PORT, version=V))
report("ctor_password_int", lambda: MQTTClient(CID, "127.0.0.1", PORT, version=V, user="u", password=5))
c = MQTTClient(CID, "127.0.0.1", PORT, version=V, clean_session=False, session_file=PATH)
report("set_callback", lambda: c.set_callback(5))
report("set_event_callback", lambda: c.set_event_callback("no"))
report("will_msg_int", lambda: c.set_last_will("w/t", 5))
report("will_topic_int", lambda: c.set_last_will(5, b"x"))
report("will_qos_float", lambda: c.set_last_will("w/t", b"x", qos=1.0))
for tag, m in (("int", 5), ("list", [1, 2]), ("dict", {})):
    report("msg_" + tag, lambda: c.publish(T, m, qos=1))
report("retain_2_qos2", lambda: c.publish(T, b"x", retain=2, qos=2))
report("retain_str", lambda: c.publish(T, b"x", retain="no", qos=1))
report("qos_float", lambda: c.publish(T, b"x", qos=1.0))       # was: TypeError from the encoder
report("qos2_float", lambda: c.publish(T, b"x", qos=2.0))
report("retain_float", lambda: c.publish(T, b"x", retain=1.0, qos=1))
report("retain_none", lambda: c.publish(T, b"x", retain=None, qos=1))
report("array_msg", lambda: c.publish(T, array("H", [1, 2]), retain=1, qos=1))
report("restore_none", lambda: c.restore_session(None))
report("restore_int", lambda: c.restore_session(5))
emit("state", pending=c.pending(), events=repr(c.last_event))
c.connect()
report("unsubscribe_int", lambda: c.unsubscribe(5))
report("subscribe_list", lambda: c.subscribe(["a", "b"]))
report("qos0_float_online", lambda: c.publish(T, b"x", qos=0.0))       # QoS 0 goes straight to the wire
report("retain_float_online", lambda: c.publish(T, b"x", retain=0.0))
got = []
c.set_callback(lambda t, m, r, q: got.append((bytes(t), bytes(m), r)))
c.subscribe(T, 1)
report("flush", lambda: c.flush(3000))
pump(c, ms=300)
emit("after", got=repr(got), connected=c.is_connected(), pending=c.pending())
c.disconnect()
"""


@pytest.mark.parametrize("ver", VERSIONS)
def test_bad_arguments_raise_at_the_call_and_store_nothing(broker, tmp_path, ver):
    """Wrong types and out-of-range values (API.md) are refused at the call
    with TypeError / ValueError naming what is wrong: not accepted as
    something else (bytes(5) is five zero bytes; retain=2 sets a QoS bit of
    the PUBLISH header, a malformed packet the broker closes the link over,
    resent at every connect), nor failing later inside a connect or a
    received message's handling (a non-callable callback). Nothing refused
    reaches the session file; the client stays usable."""
    res, out = mp(broker.port, ver, BAD_ARGUMENTS, path=tmp_path / "s")

    def refused(tag, cls, *words):
        r = res[tag]
        assert not r["ok"] and r["cls"] == cls, (tag, r, out)
        for w in words:
            assert w in str(r["args"][0]), (tag, r)

    refused("ctor_port_str", "TypeError", "port")
    refused("ctor_port_big", "ValueError", "port")
    refused("ctor_keepalive_float", "TypeError", "keepalive")
    refused("ctor_buf_size_str", "TypeError", "buf_size")
    refused("ctor_timeout_neg", "ValueError", "timeout_ms")
    refused("ctor_timeout_str", "TypeError", "timeout_ms")
    refused("ctor_outbox_bytes_neg", "ValueError", "outbox_bytes")
    refused("ctor_session_file_int", "TypeError", "session_file")
    refused("ctor_session_file_empty", "ValueError", "session_file")
    refused("ctor_event_callback_int", "TypeError", "callable")
    for tag in ("ctor_cid_int", "ctor_password_int", "will_msg_int", "will_topic_int", "msg_int", "msg_list",
                "msg_dict", "unsubscribe_int", "subscribe_list"):
        refused(tag, "TypeError", "str or bytes-like")
    refused("set_callback", "TypeError", "callable")
    refused("set_event_callback", "TypeError", "callable")
    refused("retain_2_qos2", "ValueError", "retain")
    refused("will_qos_float", "ValueError", "QoS")      # was kept, and every connect() failed
    refused("retain_str", "ValueError", "retain")
    for tag in ("qos_float", "qos2_float", "qos0_float_online"):
        refused(tag, "ValueError", "qos")
    for tag in ("retain_float", "retain_none", "retain_float_online"):
        refused(tag, "ValueError", "retain")
    refused("restore_none", "TypeError", "save_session()")      # was: NoneType has no len()
    refused("restore_int", "TypeError", "save_session()")
    assert res["array_msg"]["ok"], out                     # a bytes-like payload still goes
    assert res["state"]["pending"] == 1, out               # only it was accepted
    assert res["flush"] == dict(res["flush"], ok=True, value=True), out
    assert res["after"]["connected"] is True and res["after"]["pending"] == 0, out
    assert res["after"]["got"] == repr([(b"bad/%d/t" % ver, b"\x01\x00\x02\x00", True)]), out   # retained: sent before the SUBSCRIBE


LONG_STRINGS = r"""
CID = "long-%d" % V
L = "x" * 65536                           # one byte over a 16-bit length
def make(**kw):
    return lambda: MQTTClient(kw.pop("cid", CID), "127.0.0.1", PORT, version=V, buf_size=140000,
                              timeout_ms=2000, **kw)
report("cid", make(cid=L))
report("user", make(user=L))
report("password", make(user="u", password=L))
c = MQTTClient(CID, "127.0.0.1", PORT, version=V, buf_size=140000, timeout_ms=2000)
report("will_topic", lambda: c.set_last_will(L, b"x"))
report("will_msg", lambda: c.set_last_will("w/%d" % V, b"m" * 65536))
report("pub_q1", lambda: c.publish(L, b"x", qos=1))             # offline: it would be queued
emit("queued", pending=c.pending())
report("connect", c.connect)
report("pub_q0", lambda: c.publish(L, b"x"))
report("sub", lambda: c.subscribe(L))
report("unsub", lambda: c.unsubscribe(L))
got = []
c.set_callback(lambda t, m, r, q: got.append(bytes(m)))
c.subscribe("long/%d" % V, 1)
c.publish("long/%d" % V, b"still up", qos=1)
report("flush", lambda: c.flush(3000))
pump(c, ms=300)
emit("after", got=repr(got), connected=c.is_connected(), pending=c.pending())
c.disconnect()
"""


@pytest.mark.parametrize("ver", VERSIONS)
def test_strings_over_65535_bytes_are_refused_at_the_call(broker, ver):
    """An MQTT string (client id, user name, password, will topic and
    message, topic, topic filter) has a 16-bit length (MQTT 1.5.3): one
    longer was sent with its length wrapped, a malformed packet the broker
    closes the link over; in the CONNECT (id, user, will) at every connect,
    and a QoS 1 message so addressed stayed in the session, resent and
    refused at every connect. Now each is a ValueError at the call, and the
    client goes on working."""
    res, out = mp(broker.port, ver, LONG_STRINGS)
    for tag in ("cid", "user", "password", "will_topic", "will_msg", "pub_q1", "pub_q0", "sub", "unsub"):
        r = res[tag]
        assert not r["ok"] and r["cls"] == "ValueError" and "65535" in r["args"][0], (tag, r, out)
    assert res["queued"]["pending"] == 0, out
    assert res["connect"]["ok"], out
    assert res["flush"]["ok"] and res["flush"]["value"] is True, out
    assert res["after"] == {"tag": "after", "got": repr([b"still up"]), "connected": True, "pending": 0}, out


BAD_PROPS = r"""
c = MQTTClient("bad-props", "127.0.0.1", PORT, version=5)
for tag, p in (("int", 5), ("list", [("message_expiry", 5)]), ("unknown", {"nope": 1}),
               ("binary_int", {"correlation_data": 5}), ("u32_str", {"message_expiry": "300"}),
               ("u32_big", {"message_expiry": 1 << 32}), ("u16_big", {"topic_alias": 70000})):
    report("pub_" + tag, lambda: c.publish("p/t", b"x", qos=1, props=p))
report("will_unknown", lambda: c.set_last_will("w/t", b"x", props={"nope": 1}))
report("good", lambda: c.publish("p/t", b"x", qos=1, props={"correlation_data": b"\x00\x01"}))
emit("state", pending=c.pending())
"""


def test_bad_publish_props_name_the_property():
    """publish()/set_last_will() props (API.md, MQTT 5 properties): a value
    that is not a dict or bytes is a TypeError, an unknown name or a value
    its property cannot hold a ValueError saying which (an unknown name gave
    "object not in sequence", props=5 an AttributeError, a str Message
    Expiry an AttributeError, and correlation_data=5 was sent as five zero
    bytes). None of them is accepted into the session."""
    res, out = mp(1, 5, BAD_PROPS)
    for tag, cls, word in (("pub_int", "TypeError", "dict"), ("pub_list", "TypeError", "dict"),
                           ("pub_unknown", "ValueError", "'nope'"), ("will_unknown", "ValueError", "'nope'"),
                           ("pub_binary_int", "ValueError", "correlation_data"),
                           ("pub_u32_str", "ValueError", "message_expiry"),
                           ("pub_u32_big", "ValueError", "message_expiry"),
                           ("pub_u16_big", "ValueError", "topic_alias")):
        r = res[tag]
        assert not r["ok"] and r["cls"] == cls and word in r["args"][0], (tag, r, out)
    assert res["good"]["ok"] and res["state"]["pending"] == 1, out


BAD_ROBUST = r"""
from durable_mqtt.robust import RobustClient
def make(**kw):
    return lambda: RobustClient("bad-robust-%d" % V, "127.0.0.1", PORT, version=V, **kw)
for tag, kw in (("servers_str", {"servers": "127.0.0.1"}), ("servers_1tuple", {"servers": [("127.0.0.1",)]}),
                ("servers_port_str", {"servers": [("127.0.0.1", "1883")]}),
                ("backoff_zero", {"backoff_ms": (0, 0)}), ("backoff_inverted", {"backoff_ms": (500, 100)}),
                ("on_up_int", {"on_up": 5}), ("on_down_int", {"on_down": 5})):
    report(tag, make(**kw))
ups = []
r = RobustClient("bad-robust-%d" % V, "127.0.0.1", PORT, version=V, backoff_ms=(50, 100),
                 servers=[("127.0.0.1", PORT), "127.0.0.1"], on_up=lambda c: ups.append(1))
def up():
    t0 = time.ticks_ms()
    while not r.is_connected() and time.ticks_diff(time.ticks_ms(), t0) < 3000:
        r.poll(50)
    return r.is_connected()
report("poll", up)
emit("after", ups=len(ups), servers=repr(r.servers))
r.disconnect()
"""


@pytest.mark.parametrize("ver", VERSIONS)
def test_robust_client_arguments_are_checked(broker, ver):
    """RobustClient(servers=..., backoff_ms=..., on_up=..., on_down=...)
    (API.md, Other front ends): a str for servers was taken letter by
    letter (nine "brokers" for "127.0.0.1"), a 1-tuple failed with
    IndexError, a backoff of 0 would reconnect without pause, and a
    non-callable on_up made poll(), which never raises for the link, raise
    TypeError at each connect. Each is refused at the constructor now."""
    res, out = mp(broker.port, ver, BAD_ROBUST)
    for tag, cls in (("servers_str", "TypeError"), ("servers_1tuple", "TypeError"),
                     ("servers_port_str", "TypeError"), ("backoff_zero", "ValueError"),
                     ("backoff_inverted", "ValueError"), ("on_up_int", "TypeError"), ("on_down_int", "TypeError")):
        r = res[tag]
        assert not r["ok"] and r["cls"] == cls, (tag, r, out)
    assert "servers" in res["servers_str"]["args"][0] and "backoff_ms" in res["backoff_zero"]["args"][0]
    assert "callable" in res["on_up_int"]["args"][0], out
    assert res["poll"]["ok"] and res["poll"]["value"] is True, out
    assert res["after"]["ups"] == 1, out
    assert res["after"]["servers"] == repr([("127.0.0.1", broker.port), ("127.0.0.1", broker.port)]), out


CALL_TYPES = r"""
c = MQTTClient("call-types-%d" % V, "127.0.0.1", PORT, version=V, timeout_ms=2000)
report("connect_timeout_str", lambda: c.connect(timeout_ms="5000"))
c.connect()
report("sub_qos_float", lambda: c.subscribe("ct/%d" % V, 1.0))
report("sub_id_str", lambda: c.subscribe("ct/%d" % V, 1, sub_id="7"))
if V == 5:
    report("disc_expiry_float", lambda: c.disconnect(1.5))
report("sub_ok", lambda: c.subscribe("ct/%d" % V, 1))
emit("after", connected=c.is_connected())
c.disconnect()
"""


@pytest.mark.parametrize("ver", VERSIONS)
def test_call_arguments_of_the_wrong_type(broker, ver):
    """connect(timeout_ms=), subscribe(qos=, sub_id=) and (MQTT 5)
    disconnect(session_expiry=) of the wrong type: a TypeError or ValueError
    naming the argument, not one from deep inside ("can't convert float to
    int", "unsupported types for __truediv__"; disconnect(1.5) said the
    session could not be extended), and the link stays up."""
    res, out = mp(broker.port, ver, CALL_TYPES)
    want = [("connect_timeout_str", "TypeError", "timeout_ms"), ("sub_qos_float", "ValueError", "qos"),
            ("sub_id_str", "TypeError", "sub_id")]
    if ver == 5:
        want.append(("disc_expiry_float", "TypeError", "session_expiry"))
    for tag, cls, word in want:
        r = res[tag]
        assert not r["ok"] and r["cls"] == cls and word in r["args"][0], (tag, r, out)
    assert res["sub_ok"]["ok"] and res["after"]["connected"] is True, out


RECONNECT_WHILE_UP = r"""
CID = "again-%d" % V
W = "again/%d/will" % V
got = []
s = MQTTClient(CID + "-s", "127.0.0.1", PORT, version=V)
s.set_callback(lambda t, m, r, q: got.append(bytes(m)))
s.connect()
s.subscribe(W, 1)
a = MQTTClient(CID, "127.0.0.1", PORT, version=V, clean_session=False)
a.set_last_will(W, b"gone", qos=1)
a.connect()
a.publish("again/%d/x" % V, b"q", qos=1)
a.flush(2000)
report("again", lambda: a.connect())          # connected already
emit("state", connected=a.is_connected(), sp=a.session_present)
pump(s, ms=800)
emit("will", got=repr(got))
report("after", lambda: a.publish("again/%d/x" % V, b"r", qos=1))
report("flush", lambda: a.flush(2000))
a.disconnect()
s.disconnect()
"""


@pytest.mark.parametrize("ver", VERSIONS)
def test_MQTT_3_1_2_8_and_3_1_2_10_connect_while_connected_ends_the_old_connection_with_disconnect(broker, ver):
    """connect() on a client that is connected: the old connection ends
    with a DISCONNECT, as disconnect() ends it, then the new one is made
    (resuming the session). It was closed without one, an abnormal close
    for the broker: it published the will (MQTT-3.1.2-8; a DISCONNECT
    removes it, MQTT-3.1.2-10) although nothing failed."""
    res, out = mp(broker.port, ver, RECONNECT_WHILE_UP)
    assert res["again"]["ok"] and res["again"]["value"] is True, out      # Session Present: resumed
    assert res["state"]["connected"] is True, out
    assert res["will"]["got"] == "[]", out
    assert res["flush"]["ok"] and res["flush"]["value"] is True, out


@pytest.mark.parametrize("ver", VERSIONS)
def test_MQTT_3_2_2_4_and_3_2_2_6_session_present_is_that_of_the_last_connack_a_refusal_included(ver):
    """API.md: `session_present` is the flag from the last CONNACK. A
    CONNACK that refuses has Session Present 0 (MQTT-3.2.2-4 in 3.1.1,
    MQTT-3.2.2-6 in 5.0); the attribute kept the 1 of the connection
    before."""
    refused = 5 if ver == 4 else 0x87
    fb = FakeBroker([("send", connack(ver))], [("send", connack(ver, sp=1))],
                    [("send", connack(ver, code=refused))])
    r = run_mp(PRE % {"port": fb.port, "ver": ver, "path": ""} + r"""
c = MQTTClient("sp-refused", "127.0.0.1", PORT, version=V, clean_session=False, timeout_ms=2000)
c.connect()
c.disconnect()
print("FIRST", c.connect(), c.session_present)
c.disconnect()
try:
    c.connect()
except MQTTException as x:
    print("REFUSED", x.args[0], c.session_present)
""", timeout=30)
    fb.join()
    assert "FIRST True True" in r.stdout and "REFUSED %d False" % refused in r.stdout, r.stdout
