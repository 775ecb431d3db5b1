"""MQTT 5 conformance of what the client itself sends, found in review:
values the application passes that would make a packet the broker must
refuse (a malformed CONNECT refused at every reconnect, a SUBSCRIBE that
closes the link) are refused with ValueError before anything is sent, as
publish() and subscribe() already refuse a bad topic or filter."""
import pytest

from conftest import reports, run_mp
from fakebroker import FakeBroker, connack, publish

REFUSE = r"""
from fake_report import report
from durable_mqtt import MQTTClient
"""


def refused(res, tag, *words):
    d = res[tag]
    assert not d["ok"], "%s was accepted" % tag
    assert d["cls"] == "ValueError", d
    msg = str(d["args"]).lower()
    for w in words:
        assert w.lower() in msg, (w, d)


WILL_BAD = {
    # MQTT-3.3.2-14 (a Will's Response Topic is a Topic Name): no wildcard.
    "response_topic_wildcard": ({"response_topic": "reply/#"}, "wildcard"),
    # MQTT-1.5.4-2: no U+0000 in a UTF-8 Encoded String (mosquitto closes the connection).
    "content_type_nul": ({"content_type": "text\x00plain"}, "U+0000"),
    # MQTT-1.5.4-1: well-formed UTF-8 (a surrogate is not).
    "content_type_surrogate": ({"content_type": b"\xed\xa0\x80"}, "UTF-8"),
    # MQTT-1.5.7-1: both strings of a User Property are UTF-8 Encoded Strings.
    "user_property_nul": ({"user_property": [("k\x00", "v")]}, "U+0000"),
    # Section 3.1.3.2.3: a Payload Format Indicator is 0 or 1.
    "payload_format_2": ({"payload_format": 2}, "0x01"),
}


def test_MQTT_1_5_4_1_will_properties_are_checked_before_the_connect_is_sent():
    # set_last_will() checked which properties a will may carry, never their
    # values: a wildcard Response Topic or a U+0000 in a Content Type or a
    # User Property went out in every CONNECT, and mosquitto closed the
    # connection at each reconnect (PeerClosed, taken for a link failure).
    # A publish()'s properties were checked, but refused with ProtocolError,
    # an OSError, where a bad argument is a ValueError.
    body = REFUSE + "c = MQTTClient('w', '127.0.0.1', 1, version=5)\n"
    for tag, (props, _) in WILL_BAD.items():
        body += "report(%r, lambda: c.set_last_will('w/t', b'gone', props=%r))\n" % (tag, props)
    body += "report('publish_pf2', lambda: c.publish('t', b'x', props={'payload_format': 2}))\n"
    body += ("report('good', lambda: c.set_last_will('w/t', 'gone', props={'will_delay': 5, 'payload_format': 1,"
             " 'content_type': 'text/plain', 'response_topic': 'r/1', 'correlation_data': b'\\x00\\xff',"
             " 'user_property': [('k', 'v')]}))\n")
    res = reports(run_mp(body).stdout)
    for tag, (_, word) in WILL_BAD.items():
        refused(res, tag, word)
    refused(res, "publish_pf2", "0x01")
    assert res["good"]["ok"], res["good"]


SUBSCRIBE_AFTER = r"""
from fake_report import report, emit
from durable_mqtt import MQTTClient
c = MQTTClient("s", "127.0.0.1", %d, version=5, timeout_ms=2000)
c.connect()
%s
emit("state", connected=c.is_connected())
c.disconnect()
"""


def subscribes(fb):
    """The SUBSCRIBE packets the client sent."""
    return [body for first, body in fb.conns[0] if first == 0x82]


def test_retain_handling_3_is_refused_before_the_subscribe_is_sent():
    # MQTT 5, 3.8.3.1: "It is a Protocol Error to send a Retain Handling
    # value of 3." subscribe(retain_handling=3) sent it (mosquitto answers
    # DISCONNECT 0x81 and the link is gone); a value of 4 or more was cut
    # to its low two bits and sent as another option than asked.
    fb = FakeBroker([("send", connack(5))])
    calls = "\n".join("report(%r, lambda: c.subscribe('t', 1, retain_handling=%d))" % ("rh%d" % v, v)
                      for v in (3, 4, -1))
    res = reports(run_mp(SUBSCRIBE_AFTER % (fb.port, calls)).stdout)
    fb.join()
    for v in (3, 4, -1):
        refused(res, "rh%d" % v, "retain_handling")
    assert res["state"]["connected"] is True
    assert subscribes(fb) == [], subscribes(fb)


SHARED_BAD = ["$share/+/t", "$share//t", "$share/g", "$share/g/", "$share/#"]


def test_MQTT_4_8_2_1_and_3_8_3_4_a_shared_subscription_is_well_formed_and_without_no_local():
    # MQTT-4.8.2-1, -2: "$share/", a ShareName of at least one character
    # without "/", "+" or "#", then "/" and a Topic Filter. MQTT-3.8.3-4:
    # No Local on a shared subscription is a protocol error. All of these
    # were sent as they were (mosquitto granted them; a broker that follows
    # the specification closes the connection). The one good filter still
    # goes out, with its SUBACK.
    good = "$share/g/a/+"
    fb = FakeBroker([("send", connack(5)), ("recv",),
                     ("reply", lambda got: bytes((0x90, 4)) + got[-1][1][:2] + b"\x00\x01")])
    calls = "\n".join(["report(%r, lambda: c.subscribe(%r, 1))" % (f, f) for f in SHARED_BAD]
                      + ["report('unsub', lambda: c.unsubscribe('$share//t'))",
                         "report('no_local', lambda: c.subscribe('$share/g/t', 1, no_local=True))",
                         "report('good', lambda: c.subscribe(%r, 1))" % good])
    res = reports(run_mp(SUBSCRIBE_AFTER % (fb.port, calls)).stdout)
    fb.join()
    for f in SHARED_BAD + ["unsub"]:
        refused(res, f, "MQTT-4.8.2")
    refused(res, "no_local", "MQTT-3.8.3-4")
    assert res["good"]["ok"] and res["good"]["value"] == 1, res["good"]
    assert res["state"]["connected"] is True
    assert [s[5:-1] for s in subscribes(fb)] == [good.encode()], subscribes(fb)
    assert not [b for f, b in fb.conns[0] if f == 0xA2], fb.conns[0]


@pytest.mark.parametrize("v", [4, 5])
def test_MQTT_3_1_3_4_client_id_and_user_name_are_utf8_strings(v):
    # The Client Identifier (MQTT-3.1.3-4) and the User Name (MQTT 5:
    # MQTT-3.1.3-12) are UTF-8 Encoded Strings: well formed, no U+0000
    # (MQTT-1.5.4-1, -2). Both went into the CONNECT unchecked, mosquitto
    # closed the connection, and the client reported PeerClosed, a link
    # failure that RobustClient retries for ever; a topic or filter like it
    # is refused with ValueError.
    bad = {"cid_nul": "('dev\\x00', None)", "cid_ill": "(b'dev\\xff', None)",
           "user_nul": "('dev', 'u\\x00')", "user_surrogate": "('dev', b'\\xed\\xa0\\x80')"}
    body = REFUSE + "".join(
        "report(%r, lambda: MQTTClient(%s[0], '127.0.0.1', 1, user=%s[1], version=%d))\n" % (tag, a, a, v)
        for tag, a in bad.items())
    body += "report('good', lambda: MQTTClient('d\\u00e9v', '127.0.0.1', 1, user='\\u00fc', version=%d))\n" % v
    res = reports(run_mp(body).stdout)
    for tag in bad:
        refused(res, tag, "client id" if tag.startswith("cid") else "user name")
    assert res["good"]["ok"], res["good"]


@pytest.mark.parametrize("v", [4, 5])
def test_MQTT_4_5_0_2_a_message_asyncclient_cannot_copy_is_not_left_unacknowledged_on_a_live_link(v):
    # A QoS 1 message that AsyncClient's copy for messages() finds no heap
    # for is not taken: left unacknowledged, but the link stayed up, so no
    # reconnect came: the message was never acknowledged (MQTT-4.5.0-2)
    # nor resent (MQTT-4.4.0-1 allows that only at a reconnect), and it held
    # one unit of the broker's send quota (Receive Maximum) for good. Now
    # the link closes; the broker sends it again on the next connection,
    # where it is copied and acknowledged. (The heap is filled with 8 KB
    # blocks but one: no room for a copy of 20 KB, room for the rest.)
    big = b"m" * 20000
    fb = FakeBroker([("send", connack(v)), ("recv",), ("send", publish(v, b"t", big, qos=1, pid=1)),
                     ("sleep", 1.0)],
                    [("send", connack(v, sp=1)), ("send", publish(v, b"t", big, qos=1, pid=1, first=0x3A)),
                     ("recv",), ("sleep", 0.3)])
    r = run_mp(r"""
import asyncio, gc
from durable_mqtt.aio import AsyncClient
hog = []
def fill():
    gc.collect()
    try:
        while True:
            hog.append(bytearray(8000))
    except MemoryError:
        pass
    hog.pop()
async def main():
    downs = []
    c = AsyncClient("mem", "127.0.0.1", %d, version=%d, clean_session=False, timeout_ms=2000,
                    buf_size=21000, backoff_ms=(50, 100), on_down=lambda c, x: downs.append(repr(x)))
    await c.connect()
    await c.publish("ready", b"", qos=0)
    fill()
    for i in range(100):
        await asyncio.sleep_ms(20)
        if downs:
            break
    print("down", downs)
    hog.clear()
    gc.collect()
    async for t, m, r, q in c.messages():
        print("got", bytes(t), len(m), q)
        break
    await asyncio.sleep_ms(200)
    await c.disconnect()
asyncio.run(main())
""" % (fb.port, v), heapsize="400K")
    fb.join()
    # (The MemoryError is the event "callback_error", printed; the link
    # went down with it.)
    assert "MemoryError: memory allocation failed" in r.stdout and "down [\"OSError" in r.stdout, r.stdout
    assert "got b't' 20000 1" in r.stdout, r.stdout
    assert not [f for f, b in fb.conns[0][1:] if f == 0x40], fb.conns[0]      # not acknowledged there
    assert [(f, b[:2]) for f, b in fb.conns[1][1:] if f == 0x40] == [(0x40, b"\x00\x01")], fb.conns


@pytest.mark.parametrize("v", [4, 5])
@pytest.mark.parametrize("qos", [1, 2])
def test_a_memoryerror_of_the_callback_counts_as_delivered_and_a_qos2_message_reaches_it_once(v, qos):
    # The application's callback raised MemoryError after it had acted on
    # the message: it was taken for "not taken", the link closed, and the
    # broker sent the message again: a QoS 2 command ran twice (API.md: "a
    # message reaches the callback once"). As any other exception of the
    # callback, it now counts as delivered: acknowledged, raised from
    # wait_msg() when it has handled what it read, the link up.
    fb = FakeBroker([("send", connack(v)), ("send", publish(v, b"t", b"open-valve", qos=qos, pid=7)),
                     ("recv",), ("sleep", 0.3)])
    r = run_mp(r"""
from durable_mqtt import MQTTClient
c = MQTTClient("mem", "127.0.0.1", %d, version=%d, clean_session=False, timeout_ms=2000)
got = []
def cb(t, m, r, q):
    got.append(bytes(m))
    raise MemoryError("the application's own")
c.set_callback(cb)
c.connect()
try:
    for i in range(20):
        c.wait_msg(20)
except MemoryError as x:
    print("raised", repr(x))
print("connected", c.is_connected(), "got", got)
c.disconnect()
""" % (fb.port, v))
    fb.join()
    assert "raised MemoryError(" in r.stdout and "connected True got [b'open-valve']" in r.stdout, r.stdout
    ack = 0x40 if qos == 1 else 0x50
    assert [(f, b[:2]) for f, b in fb.conns[0][1:] if f == ack] == [(ack, b"\x00\x07")], fb.conns


@pytest.mark.parametrize("v", [4, 5])
@pytest.mark.parametrize("props", [False, True])
def test_MQTT_4_5_0_2_a_message_whose_views_find_no_heap_is_not_taken(v, props):
    # The memoryviews (and MQTT 5 properties) handed to the callback are made
    # before it is called; no heap for them (a new size on a full heap): the
    # callback never saw the message, so it is not taken (unacknowledged,
    # the link closed, the broker sends it again), not counted as delivered
    # as a MemoryError of the callback's own is. (Counted so, it was
    # acknowledged and lost; a review found it. The allocation failure is
    # stood in by a view() that raises once.)
    fb = FakeBroker([("send", connack(v)), ("send", publish(v, b"t", b"cmd-1", qos=1, pid=1)), ("sleep", 1.0)],
                    [("send", connack(v, sp=1)), ("send", publish(v, b"t", b"cmd-1", qos=1, pid=1, first=0x3A)),
                     ("recv",), ("sleep", 0.3)])
    r = run_mp(r"""
from durable_mqtt import MQTTClient, inbound
got = []
c = MQTTClient("memv", "127.0.0.1", %d, version=%d, clean_session=False, timeout_ms=2000)
c.set_callback(lambda t, m, r, q, *p: got.append(bytes(m)), %r)
real = inbound.view
fail = [1]
def view(link, off, n):
    if fail[0]:
        fail[0] = 0
        raise MemoryError("no heap for the view")
    return real(link, off, n)
inbound.view = view
c.connect()
try:
    for _ in range(20):
        c.wait_msg(50)
except MemoryError as x:
    print("raised", repr(x), "connected", c.is_connected())
if not c.is_connected():
    c.connect()
for _ in range(10):
    c.wait_msg(50)
print("got", got)
c.disconnect()
""" % (fb.port, v, props))
    fb.join()
    assert "raised MemoryError('no heap for the view',) connected False" in r.stdout, r.stdout
    assert "got [b'cmd-1']" in r.stdout, r.stdout
    assert not [f for f, b in fb.conns[0][1:] if f == 0x40], fb.conns[0]
    assert [(f, b[:2]) for f, b in fb.conns[1][1:] if f == 0x40] == [(0x40, b"\x00\x01")], fb.conns


def _prop32(ident, n):
    return bytes((ident,)) + n.to_bytes(4, "big")


RESUME = r"""
from fake_report import report, emit, pump
from durable_mqtt import MQTTClient
PATH = %r
done = []
def client():
    c = MQTTClient("resume", "127.0.0.1", %d, version=5, clean_session=False, session_file=PATH,
                   timeout_ms=3000)
    c.set_done_callback(lambda pid, r: done.append((pid, r)))
    return c
"""


def test_MQTT_3_1_2_24_a_sent_message_over_a_lowered_maximum_packet_size_is_not_resent(tmp_path):
    # A QoS 1 PUBLISH of ~500 bytes went out unacknowledged; after a reboot
    # the broker's CONNACK (Session Present) gives Maximum Packet Size 200.
    # It must not be sent again over the limit (MQTT-3.1.2-24), nor vanish
    # unseen: it leaves the session refused, 0x95, through the done
    # callback and stats()["refused"]; the small one is resent (DUP).
    from fakebroker import pkt, u16
    fb = FakeBroker([("send", connack(5)), ("recv",), ("recv",), ("close",)],
                    [("send", connack(5, sp=1, props=_prop32(0x27, 200))), ("recv",),
                     ("reply", lambda got: pkt(0x40, got[-1][1][3:5])), ("sleep", 0.5)])
    r = run_mp(RESUME % (str(tmp_path / "s"), fb.port) + r"""
c = client()
c.connect()
big = c.publish("t", b"B" * 500, qos=1)
small = c.publish("t", b"s", qos=1)
report("cut", lambda: pump(c, ms=2000))
c.close()
c = client()                                # a reboot
c.connect()
report("flush", lambda: c.flush(2000))
emit("after", done=repr(done), big=big, small=small, refused=c.stats()["refused"], pending=c.pending())
c.disconnect()
""")
    fb.join()
    res = reports(r.stdout)
    a = res["after"]
    assert res["flush"].get("value") is True, (r.stdout, fb.conns)
    assert a["done"] == repr([(a["big"], 0x95), (a["small"], 0)]), r.stdout
    assert a["refused"] == 1 and a["pending"] == 0, r.stdout
    sent = [(f, b) for f, b in fb.conns[1][1:] if f & 0xF0 == 0x30]
    assert len(sent) == 1 and sent[0][0] & 0x08 and sent[0][1][3:5] == u16(a["small"]), fb.conns[1]
    assert all(len(b) + 2 <= 200 for f, b in fb.conns[1]), [len(b) for f, b in fb.conns[1]]


def test_MQTT_3_2_2_5_a_qos2_message_past_pubrec_dropped_at_session_present_0_reaches_the_done_callback(tmp_path):
    # A QoS 2 message past PUBREC (PUBREL sent, no PUBCOMP) and a QoS 1
    # unacknowledged; the broker lost the session (Session Present 0). No
    # state of the old session is reused (MQTT-3.2.2-5): the PUBREL is not
    # sent again and the QoS 2 message leaves the session (the broker had
    # received it: PUBREC 0), counted in the "lost" event's dropped_released.
    # It leaves, so the done callback is told (docs/api.md: f(pid, reason)
    # when a QoS 1/2 message leaves the session), as for the QoS 1 one
    # re-queued and acknowledged; before, the QoS 2 one was never reported.
    from fakebroker import pkt, u16
    fb = FakeBroker([("send", connack(5)), ("recv",), ("recv",), ("send", pkt(0x50, u16(1))), ("recv",),
                     ("close",)],
                    [("send", connack(5, sp=0)), ("recv",),
                     ("reply", lambda got: pkt(0x40, got[-1][1][3:5])), ("sleep", 0.5)])
    r = run_mp(RESUME % (str(tmp_path / "s"), fb.port) + r"""
events = []
c = client()
c.set_event_callback(lambda ev, info: events.append((ev, info)))
c.connect()
ids = [c.publish("t", b"q2", qos=2), c.publish("t", b"q1", qos=1)]
report("cut", lambda: pump(c, ms=1500))
emit("before", ids=repr(ids), pending=c.pending(), done=repr(done))
c.connect()
report("flush", lambda: c.flush(2000))
ev, info = events[-1]
emit("after", ev=ev, dropped=info.get("dropped_released"), done=repr(sorted(done)), pending=c.pending())
c.disconnect()
""")
    fb.join()
    res = reports(r.stdout)
    assert res["before"]["ids"] == "[1, 2]" and res["before"]["pending"] == 2, r.stdout
    assert res["before"]["done"] == "[]", r.stdout
    a = res["after"]
    assert a["ev"] == "lost" and a["dropped"] == 1 and a["pending"] == 0, r.stdout
    assert a["done"] == repr([(1, 0), (2, 0)]), r.stdout
    assert not any(f == 0x62 for f, b in fb.conns[1][1:]), fb.conns[1]     # no PUBREL to the new session


def test_MQTT_4_9_0_2_pubrels_are_resent_when_receive_maximum_leaves_no_quota(tmp_path):
    # Three QoS 2 messages past PUBREC (PUBRELs sent, no PUBCOMP) and two
    # QoS 1 unacknowledged; the broker resumes with Receive Maximum 2, so
    # the send quota is 0 (the PUBRELs count, MQTT-4.9.0-2). The PUBRELs
    # are no PUBLISH: they go again at once, in order (MQTT-4.4.0-1,
    # MQTT-4.6.0-3), and each PUBCOMP gives a place back, so the QoS 1
    # messages follow (DUP) and the outbox drains.
    from fakebroker import pkt, u16
    def pubcomp(*ids):
        return b"".join(pkt(0x70, u16(i)) for i in ids)
    fb = FakeBroker([("send", connack(5)), ("recv",), ("recv",), ("recv",), ("recv",), ("recv",),
                     ("send", b"".join(pkt(0x50, u16(i)) for i in (1, 2, 3))), ("recv",), ("recv",), ("recv",),
                     ("close",)],
                    [("send", connack(5, sp=1, props=b"\x21" + u16(2))), ("recv",), ("recv",), ("recv",),
                     ("sleep", 0.3), ("send", pubcomp(1, 2)), ("recv",), ("sleep", 0.3), ("send", pubcomp(3)),
                     ("recv",), ("send", pkt(0x40, u16(4)) + pkt(0x40, u16(5))), ("sleep", 0.5)])
    r = run_mp(RESUME % (str(tmp_path / "s"), fb.port) + r"""
c = client()
c.connect()
ids = [c.publish("t", b"q2", qos=2) for _ in range(3)] + [c.publish("t", b"q1", qos=1) for _ in range(2)]
report("cut", lambda: pump(c, ms=3000))
emit("before", ids=repr(ids), pending=c.pending())
c = client()                                # a reboot
c.connect()
report("flush", lambda: c.flush(4000))
emit("after", done=repr(sorted(done)), pending=c.pending())
c.disconnect()
""")
    fb.join()
    res = reports(r.stdout)
    assert res["before"]["ids"] == "[1, 2, 3, 4, 5]", r.stdout
    assert res["flush"]["value"] is True and res["after"]["pending"] == 0, r.stdout
    assert res["after"]["done"] == repr([(i, 0) for i in (1, 2, 3, 4, 5)]), r.stdout
    got = [(f, b[:2]) for f, b in fb.conns[1][1:]]
    assert got[:3] == [(0x62, u16(1)), (0x62, u16(2)), (0x62, u16(3))], got
    pubs = [(f, b[3:5]) for f, b in fb.conns[1][1:] if f & 0xF0 == 0x30]
    assert pubs == [(0x3A, u16(4)), (0x3A, u16(5))], got


def test_MQTT_4_4_0_2_acknowledgement_reasons_below_0x80_are_success_and_0x80_up_ends_the_message(tmp_path):
    # A PUBACK / PUBREC reason below 0x80 is a success: 0x10 No matching
    # subscribers is what mosquitto 2 answers a QoS 1 PUBLISH nobody
    # subscribed to. api.md: the done callback's reason is 0 when the
    # message is acknowledged, >= 0x80 when refused; a PUBACK 0x10 was
    # passed on as 16 (and the same message at QoS 2, PUBREC 0x10 then
    # PUBCOMP, as 0), so `if reason:` took a delivered message for a
    # failure. A reason >= 0x80 ends the message (MQTT-4.4.0-2 ... 3.4.2.1,
    # 3.5.2.1): reported, counted refused, no PUBREL, and never sent again,
    # on the connection or after a reboot on the stored session.
    from fakebroker import pkt, u16
    def ack(kind, pid, rc):
        return pkt(kind, u16(pid) + bytes((rc,)))
    fb = FakeBroker([("send", connack(5)), ("recv",), ("recv",), ("recv",), ("recv",),
                     ("send", ack(0x40, 1, 0x10) + ack(0x50, 2, 0x10) + ack(0x40, 3, 0x80) + ack(0x50, 4, 0x97)),
                     ("recv",), ("send", pkt(0x70, u16(2)))],
                    [("send", connack(5, sp=1)), ("sleep", 0.5)])
    r = run_mp(RESUME % (str(tmp_path / "s"), fb.port) + r"""
c = client()
c.connect()
ids = [c.publish("t", b"m", qos=q) for q in (1, 2, 1, 2)]
report("flush", lambda: c.flush(3000))
emit("after", ids=repr(ids), done=repr(sorted(done)), refused=c.stats()["refused"], pending=c.pending())
c.disconnect()
c = client()                                # a reboot
c.connect()
report("pump", lambda: pump(c, ms=300))
emit("boot", pending=c.pending())
c.disconnect()
""")
    fb.join()
    res = reports(r.stdout)
    a = res["after"]
    assert res["flush"].get("value") is True and a["ids"] == "[1, 2, 3, 4]", r.stdout
    assert a["done"] == repr([(1, 0), (2, 0), (3, 0x80), (4, 0x97)]), r.stdout
    assert a["refused"] == 2 and a["pending"] == 0 and res["boot"]["pending"] == 0, r.stdout
    assert [f for f, _ in fb.conns[0][1:]] == [0x32, 0x34, 0x32, 0x34, 0x62, 0xE0], fb.conns[0]
    assert fb.conns[0][5] == (0x62, u16(2)), fb.conns[0]                 # PUBREL for 2 only
    assert [f for f, _ in fb.conns[1][1:]] == [0xE0], fb.conns[1]       # nothing sent again


def test_MQTT_3_1_2_23_a_session_expiry_the_connack_raised_keeps_the_session_at_disconnect():
    """The CONNECT asked Session Expiry 0 (a clean session); the CONNACK
    says 300 (3.2.2.3.2: the Server's value is the one in use), and "the
    Client and Server MUST store the Session State after the Network
    Connection is closed if the Session Expiry Interval is greater than 0"
    (MQTT-3.1.2-23). disconnect() went by the CONNECT's 0 and dropped the
    client's half: a connect(clean_session=False) within the 300 s then
    met Session Present 1 with no session (SessionError), the message
    unsent. Now it resumes, and the message goes again with DUP."""
    fb = FakeBroker([("send", connack(5, props=b"\x11" + (300).to_bytes(4, "big"))), ("recv",), ("recv",)],
                    [("send", connack(5, sp=1)), ("recv",), ("sleep", 0.3)])
    r = run_mp(r"""
from durable_mqtt import MQTTClient
c = MQTTClient("raised", "127.0.0.1", %d, version=5, timeout_ms=2000)
c.connect()
c.publish("t", b"unacked", qos=1)
c.disconnect()
print("RESUMED", c.connect(clean_session=False), c.pending())
c.close()
""" % fb.port, timeout=30)
    fb.join()
    assert "RESUMED True 1" in r.stdout, r.stdout + r.stderr
    resent = [p for p in fb.conns[1] if p[0] & 0xF0 == 0x30]
    assert resent and resent[0][0] & 0x08, fb.conns[1]          # DUP


def test_an_mqtt5_connect_answered_by_a_3_1_1_broker_says_so():
    """A 3.1.1-only broker answers an MQTT 5 CONNECT with its own CONNACK,
    return code 1 (unacceptable protocol version, 3.1.1 3.2.2.3), which has
    no property length. connect() raised ProtocolError('bad variable byte
    integer') and sent DISCONNECT 0x81; it now raises ConnectRefused(0x84,
    Unsupported Protocol Version) saying to use version=4."""
    fb = FakeBroker([("send", b"\x20\x02\x00\x01")])
    r = run_mp(r"""
from durable_mqtt import MQTTClient
c = MQTTClient("v311", "127.0.0.1", %d, version=5, timeout_ms=2000)
try:
    c.connect()
except Exception as x:
    print("REFUSED", type(x).__name__, x.args[0], x.args[1])
""" % fb.port, timeout=30)
    fb.join()
    assert "REFUSED ConnectRefused 132" in r.stdout and "version=4" in r.stdout, r.stdout
    assert [p for p in fb.conns[0][1:] if p[0] == 0xE0] == [], fb.conns[0]      # no DISCONNECT 0x81
