"""A scripted fake broker: CPython reads the client's CONNECT, answers with
raw bytes chosen by each test, and the MicroPython client must turn every
malformed or unexpected packet into a clear MQTTException subclass: never
MemoryError, IndexError, a hang or a bare OSError. Bad arguments to the
public calls are refused with ValueError / MQTTException and clear text.
"""

import pytest

from conftest import reports, run_mp

VERSIONS = (4, 5)


from fakebroker import vbi, u16, pkt, props_block, connack, publish, publish_of_size, FakeBroker  # noqa: F401


# ---------------------------------------------------------------- MicroPython side

PRELUDE = """
import gc, time
from durable_mqtt import MQTTClient, MQTTException
from durable_mqtt.errors import PacketTooLarge
from fake_report import report, emit, pump, pump_until, outcome
PORT = %d
V = %d
"""


def mp(fake, v, body, timeout=20):
    """Run body (after PRELUDE) in the unix port; return {tag: result}."""
    r = run_mp(PRELUDE % (fake.port, v) + body, timeout=timeout)
    fake.join()
    return reports(r.stdout)


def assert_error(res, cls, *words, code=None):
    """res is an exception of class `cls` (an MQTTException, so an OSError)
    whose message contains every word."""
    assert not res["ok"], "expected %s, the call returned %r" % (cls, res.get("value"))
    assert res["cls"] == cls, res
    assert res["mqtt"] and res["oserror"], res
    assert len(res["args"]) >= 2 and isinstance(res["args"][1], str), res
    msg = res["args"][1].lower()
    for w in words:
        assert w.lower() in msg, "%r not in %r" % (w, res["args"][1])
    if code is not None:
        assert res["args"][0] == code, res


CONNECTED = """
c = MQTTClient("fake", "127.0.0.1", port=PORT, version=V, timeout_ms=3000)
c.connect()
"""


def protocol_error_after_connack(v, raw, how="wait"):
    """CONNACK, then `raw`; the client's next check_msg/wait_msg must raise."""
    fake = FakeBroker([("send", connack(v)), ("send", raw)])
    res = mp(fake, v, CONNECTED + """
report("err", lambda: pump(c, %r))
report("after", lambda: c.check_msg())
emit("state", connected=c.is_connected())
""" % how)
    # The failure is reported once; afterwards the client says it is not
    # connected instead of hanging or raising something odd.
    assert_error(res["after"], "NotConnected", "connect")
    assert res["state"]["connected"] is False
    assert not fake.errors, fake.errors
    return res["err"]


# ---------------------------------------------------------------- framing

@pytest.mark.parametrize("how", ["wait", "check"])
@pytest.mark.parametrize("v", VERSIONS)
def test_remaining_length_of_five_bytes(v, how):
    err = protocol_error_after_connack(v, b"\x30\xff\xff\xff\xff\x7f" + b"x" * 16, how)
    assert_error(err, "ProtocolError", "remaining length", "4 bytes")


@pytest.mark.parametrize("v", VERSIONS)
def test_remaining_length_of_five_bytes_in_connack(v):
    fake = FakeBroker([("send", b"\x20\xff\xff\xff\xff\x7f")])
    res = mp(fake, v, """
c = MQTTClient("fake", "127.0.0.1", port=PORT, version=V, timeout_ms=3000)
report("connect", c.connect)
""")
    assert_error(res["connect"], "ProtocolError", "remaining length")


@pytest.mark.parametrize("v", VERSIONS)
def test_topic_length_beyond_packet(v):
    body = u16(500) + b"a/b" + (b"\x00" if v == 5 else b"") + b"xy"
    err = protocol_error_after_connack(v, pkt(0x30, body))
    assert_error(err, "ProtocolError", "topic length", "beyond")


@pytest.mark.parametrize("v", VERSIONS)
def test_publish_shorter_than_topic_length_field(v):
    err = protocol_error_after_connack(v, pkt(0x30, b"\x00"))
    assert_error(err, "ProtocolError", "PUBLISH")


UNKNOWN_TYPES = {
    "type0": (b"\x00\x00", "0x00"),
    "connect": (pkt(0x10, u16(4) + b"MQTT" + b"\x04\x02" + u16(0) + u16(1) + b"s"), "0x10"),
    "subscribe": (pkt(0x82, u16(3) + u16(3) + b"a/b" + b"\x01"), "0x80"),
    "pingreq": (b"\xc0\x00", "0xc0"),
    "unsubscribe": (pkt(0xA2, u16(3) + u16(1) + b"a"), "0xa0"),
}


@pytest.mark.parametrize("name", sorted(UNKNOWN_TYPES))
@pytest.mark.parametrize("v", VERSIONS)
def test_packet_type_a_broker_never_sends(v, name):
    raw, code = UNKNOWN_TYPES[name]
    if name == "subscribe" and v == 5:
        raw = pkt(0x82, u16(3) + b"\x00" + u16(3) + b"a/b" + b"\x01")
    err = protocol_error_after_connack(v, raw, "check" if v == 4 else "wait")
    assert_error(err, "ProtocolError", code)


def test_auth_packet_in_mqtt_311():
    # AUTH (0xF0) does not exist in MQTT 3.1.1.
    err = protocol_error_after_connack(4, b"\xf0\x00")
    assert_error(err, "ProtocolError", "0xf0")


def test_disconnect_from_server_in_mqtt_311():
    # A 3.1.1 server never sends DISCONNECT.
    err = protocol_error_after_connack(4, b"\xe0\x00")
    assert_error(err, "ProtocolError", "0xe0")


@pytest.mark.parametrize("v", VERSIONS)
def test_second_connack(v):
    err = protocol_error_after_connack(v, connack(v))
    assert_error(err, "ProtocolError", "0x20")


@pytest.mark.parametrize("raw,what", [(b"\x41\x02\x00\x01", "0x40"), (b"\x60\x02\x00\x01", "0x60"),
                                      (b"\xd1\x00", "0xd0"), (b"\x98\x03\x00\x01\x00", "0x90")],
                         ids=["puback-0x41", "pubrel-0x60", "pingresp-0xd1", "suback-0x98"])
@pytest.mark.parametrize("v", VERSIONS)
def test_reserved_flags_wrong(v, raw, what):
    err = protocol_error_after_connack(v, raw)
    assert_error(err, "ProtocolError", "reserved flags", what)


@pytest.mark.parametrize("v", VERSIONS)
def test_qos3_publish(v):
    raw = publish(v, b"a/b", b"x", qos=1, pid=5, first=0x36)
    err = protocol_error_after_connack(v, raw)
    assert_error(err, "ProtocolError", "QoS 3")


@pytest.mark.parametrize("qos", [1, 2])
@pytest.mark.parametrize("v", VERSIONS)
def test_publish_with_packet_id_zero(v, qos):
    err = protocol_error_after_connack(v, publish(v, b"a/b", b"x", qos=qos, pid=0))
    assert_error(err, "ProtocolError", "packet id 0")


@pytest.mark.parametrize("v", VERSIONS)
def test_ack_with_wrong_length(v):
    # A 3.1.1 PUBACK is exactly 2 bytes; any ack needs at least a packet id.
    raw = b"\x40\x03\x00\x01\x00" if v == 4 else b"\x40\x01\x00"
    err = protocol_error_after_connack(v, raw)
    assert_error(err, "ProtocolError", "acknowledgement")


# ---------------------------------------------------------------- acks for ids not in flight

@pytest.mark.parametrize("clean", [True, False], ids=["clean", "persistent"])
@pytest.mark.parametrize("v", VERSIONS)
def test_puback_for_unknown_id_and_session_survives(v, clean):
    """A PUBACK for an id not in flight is a protocol error; the QoS 1
    message that is in flight stays in the session and goes out again, with
    its packet id, on the next connection: with DUP set when the broker
    resumes the session (persistent), as a new PUBLISH when it starts a
    clean one."""
    def bad_ack(got):
        pid = int.from_bytes(got[-1][1][2 + 3:2 + 3 + 2], "big")
        return pkt(0x40, u16(pid + 100))

    fake = FakeBroker(
        [("send", connack(v)), ("recv",), ("reply", bad_ack)],
        [("send", connack(v, sp=0 if clean else 1)), ("recv",),
         ("reply", lambda got: pkt(0x40, got[-1][1][5:7]))],
    )
    res = mp(fake, v, """
c = MQTTClient("fake", "127.0.0.1", port=PORT, version=V, timeout_ms=3000, clean_session=%r)
c.connect()
pid = c.publish("a/b", b"hello", qos=1)
emit("pid", pid=pid, pending=c.pending())
report("err", lambda: pump(c))
emit("after_error", pending=c.pending(), connected=c.is_connected())
report("reconnect", c.connect)
report("acked", lambda: pump_until(c, lambda: c.pending() == 0))
emit("end", pending=c.pending())
""" % clean)
    assert "pid" in res, "publish() failed: see the MicroPython output"
    pid = res["pid"]["pid"]
    assert isinstance(pid, int) and pid > 0 and res["pid"]["pending"] == 1
    assert_error(res["err"], "ProtocolError", "PUBACK", "packet id %d" % (pid + 100), "not")
    assert res["after_error"] == {"tag": "after_error", "pending": 1, "connected": False}
    assert res["reconnect"]["ok"], res["reconnect"]
    assert res["reconnect"]["value"] is (not clean)
    assert res["acked"]["ok"], res["acked"]
    assert res["end"]["pending"] == 0
    assert not fake.errors, fake.errors
    first, second = fake.conns
    assert fake.connect_flags(0) & 0x02 == fake.connect_flags(1) & 0x02 == (2 if clean else 0)
    assert first[1][0] == 0x32                                   # PUBLISH QoS 1
    # MQTT 5: DISCONNECT 0x82 (Protocol Error) before closing (4.13.1);
    # 3.1.1 just closes.
    assert first[2:] == ([(0xE0, b"\x82")] if v == 5 else []), first
    assert second[1][0] == (0x32 if clean else 0x3A)             # again; DUP when resumed
    assert first[1][1][5:7] == second[1][1][5:7] == u16(pid)     # same packet id


@pytest.mark.parametrize("kind", [0x50, 0x70])
@pytest.mark.parametrize("v", VERSIONS)
def test_pubrec_pubcomp_for_unknown_id(v, kind):
    """PUBREC for an id never sent: 3.1.1 has no answer but to close (error);
    MQTT 5 answers PUBREL 0x92 (Packet Identifier not found). A PUBCOMP for
    an unknown id is harmless (a repeated one after a resend)."""
    fake = FakeBroker([("send", connack(v)), ("send", pkt(kind, u16(77))), ("sleep", 0.3),
                       ("send", publish(v, b"still/here", b"ok"))])
    res = mp(fake, v, CONNECTED + """
got = []
c.set_callback(lambda t, m, r, q: got.append(bytes(m)))
report("pump", lambda: pump_until(c, lambda: got))
""")
    if kind == 0x50 and v == 4:
        assert_error(res["pump"], "ProtocolError", "PUBREC", "packet id 77")
    else:
        assert res["pump"]["ok"], res["pump"]
        if kind == 0x50:
            assert fake.conns[0][1] == (0x62, u16(77) + b"\x92")


@pytest.mark.parametrize("v", VERSIONS)
def test_suback_for_wrong_packet_id(v):
    def suback(got):
        sub = got[-1]
        assert sub[0] == 0x82
        pid = int.from_bytes(sub[1][:2], "big")
        return pkt(0x90, u16(pid + 1) + (b"\x00" if v == 5 else b"") + b"\x01")

    fake = FakeBroker([("send", connack(v)), ("recv",), ("reply", suback)])
    res = mp(fake, v, CONNECTED + """
report("sub", lambda: c.subscribe("a/b", 1))
emit("state", connected=c.is_connected())
""")
    assert_error(res["sub"], "ProtocolError", "SUBACK", "packet id")
    assert res["state"]["connected"] is False


@pytest.mark.parametrize("v", VERSIONS)
def test_suback_without_return_code(v):
    fake = FakeBroker([("send", connack(v)), ("recv",),
                       ("reply", lambda got: pkt(0x90, got[-1][1][:2] + (b"\x00" if v == 5 else b"")))])
    res = mp(fake, v, CONNECTED + 'report("sub", lambda: c.subscribe("a/b", 1))\n')
    assert_error(res["sub"], "ProtocolError", "SUBACK")


@pytest.mark.parametrize("v", VERSIONS)
def test_suback_refusal_is_reported(v):
    fake = FakeBroker([("send", connack(v)), ("recv",),
                       ("reply", lambda got: pkt(0x90, got[-1][1][:2] + (b"\x00" if v == 5 else b"") + b"\x80"))])
    res = mp(fake, v, CONNECTED + """
report("sub", lambda: c.subscribe("a/b", 1))
emit("state", connected=c.is_connected())
""")
    assert not res["sub"]["ok"] and res["sub"]["mqtt"], res["sub"]
    assert res["sub"]["args"][0] == 0x80 and "a/b" in res["sub"]["args"][1]
    assert res["state"]["connected"] is True      # a refusal is not a link failure


# ---------------------------------------------------------------- MQTT 5 properties

BAD_PROPS = {
    # property length larger than the packet
    "length-beyond-packet": (vbi(60) + b"\x01\x00", ["property length", "beyond"]),
    # content type (string) whose length runs past the block
    "string-past-block": (props_block(b"\x03" + u16(40) + b"text"), ["property 0x03"]),
    # user property whose second string runs past the block
    "pair-past-block": (props_block(b"\x26" + u16(1) + b"k" + u16(9) + b"v"), ["property"]),
    "unknown-0x7f": (props_block(b"\x7f\x00"), ["unknown property 0x7f"]),
    "unknown-0x04": (props_block(b"\x04\x00"), ["unknown property 0x04"]),
    "u32-cut": (props_block(b"\x02\x00\x00"), ["truncated property 0x02"]),
}


@pytest.mark.parametrize("name", sorted(BAD_PROPS))
def test_v5_bad_properties_in_publish(name):
    block, words = BAD_PROPS[name]
    raw = pkt(0x30, u16(3) + b"a/b" + block)
    err = protocol_error_after_connack(5, raw)
    assert_error(err, "ProtocolError", *words)


@pytest.mark.parametrize("name", sorted(BAD_PROPS))
def test_v5_bad_properties_in_connack(name):
    block, words = BAD_PROPS[name]
    if name == "u32-cut":          # Message Expiry is not a CONNACK property: cut Session Expiry
        block, words = props_block(b"\x11\x00\x00"), ["truncated property 0x11"]
    fake = FakeBroker([("send", pkt(0x20, b"\x00\x00" + block))])
    res = mp(fake, 5, """
c = MQTTClient("fake", "127.0.0.1", port=PORT, version=V, timeout_ms=3000)
report("connect", c.connect)
emit("state", connected=c.is_connected())
""")
    assert_error(res["connect"], "ProtocolError", *words)
    assert res["state"]["connected"] is False


def test_v5_topic_alias_from_broker_refused():
    raw = publish(5, b"a/b", b"x", props=b"\x23" + u16(1))
    err = protocol_error_after_connack(5, raw)
    assert_error(err, "ProtocolError", "topic alias", code=0x94)


def test_v5_topic_alias_with_empty_topic_refused():
    # The second half of an alias exchange: empty topic + alias.
    raw = publish(5, b"", b"x", props=b"\x23" + u16(1))
    err = protocol_error_after_connack(5, raw)
    assert_error(err, "ProtocolError", "topic alias", code=0x94)


# ---------------------------------------------------------------- sizes

OVERSIZE_BODY = """
c = MQTTClient("fake", "127.0.0.1", port=PORT, version=V, timeout_ms=3000, buf_size=256)
box = [0, 0, 0]           # messages delivered, length of the last, PacketTooLarge seen
def cb(t, m, r, q):
    box[0] += 1
    box[1] = len(m)
c.set_callback(cb)
c.connect()
pump_until(c, lambda: box[0] >= 1, HOW)          # a normal message first: warm-up
GO = b"go"
def round_trip(want):
    end = time.ticks_add(time.ticks_ms(), 2500)
    while box[0] < want and time.ticks_diff(end, time.ticks_ms()) > 0:
        try:
            if HOW == "wait":
                c.wait_msg(50)
            else:
                c.check_msg()
                time.sleep_ms(5)
        except PacketTooLarge as e:
            box[2] += 1
            print("E", e.args[0], e.args[1])
        except Exception as e:
            print("X", type(e).__name__, e.args)
            return
for rnd in (1, 2):
    gc.collect()
    m0 = gc.mem_alloc()
    c.publish(GO, GO)                  # tells the fake broker to send the oversize PUBLISH
    round_trip(1 + rnd)            # ... and the normal one behind it
    gc.collect()
    m1 = gc.mem_alloc()
    emit("round%d" % rnd, delivered=box[0], last_len=box[1], too_large=box[2], grew=m1 - m0,
         pending=c.pending(), connected=c.is_connected())
"""


@pytest.mark.parametrize("how", ["check", "wait"])
@pytest.mark.parametrize("v", VERSIONS)
def test_oversize_publish_is_drained_acked_reported_and_connection_survives(v, how):
    """An incoming PUBLISH larger than buf_size (256) is read off the socket
    in pieces, acknowledged (QoS 1 PUBACK), reported as PacketTooLarge from
    check_msg()/wait_msg(), costs no heap (but the code that drains it, loaded
    at the first), and the next message on the same connection is delivered."""
    steps = [("send", connack(v)), ("send", publish(v, b"warm", b"w" * 10))]
    for rnd, (bp, np) in enumerate(((7, 8), (9, 10))):
        steps += [("recv",),                                        # "go"
                  ("send", publish(v, b"big/topic", b"B" * 3000, qos=1, pid=bp)),
                  ("send", publish(v, b"small", b"s" * 20, qos=1, pid=np)),
                  ("recv",), ("recv",)]                             # PUBACK of each
    fake = FakeBroker(steps)
    res = mp(fake, v, ("HOW = %r\n" % how) + OVERSIZE_BODY)
    assert len(fake.conns) == 1, "the client opened a second connection"
    got = fake.conns[0][1:]
    acks = [p for p in got if p[0] == 0x40]
    acked = [int.from_bytes(p[1][:2], "big") for p in acks]
    assert 7 in acked, "the oversize QoS 1 PUBLISH (id 7) was not acknowledged: PUBACKs %r" % acked
    assert acked == [7, 8, 9, 10], "PUBACKs %r" % acked
    if v == 4:
        assert all(len(p[1]) == 2 for p in acks)
    assert not fake.errors, fake.errors
    for rnd in (1, 2):
        r = res["round%d" % rnd]
        assert r["too_large"] == rnd, r            # reported once per oversize message
        assert r["delivered"] == 1 + rnd, r
        assert r["last_len"] == 20, r              # the small message after the big one
        assert r["connected"] is True, r
        # Drained in buf_size pieces, no heap growth; the first also loads
        # oversize.py (1.6 KB on 64 bits; since it holds Link.oversized's
        # checks too, round 1 grew 2,432 B), kept from then on.
        assert r["grew"] < (400 if rnd == 2 else 2600), r


SIZE_BODY = """
c = MQTTClient("fake", "127.0.0.1", port=PORT, version=V, timeout_ms=3000, buf_size=BUF)
got = []
c.set_callback(lambda t, m, r, q: got.append((bytes(t), len(m))))
c.connect()
report("exact", lambda: pump_until(c, lambda: len(got) >= 1, HOW))
report("plus_one", lambda: pump_until(c, lambda: len(got) >= 2, HOW))
report("after", lambda: pump_until(c, lambda: len(got) >= 2, HOW))
emit("got", got=repr(got), connected=c.is_connected())
"""


@pytest.mark.parametrize("how", ["check", "wait"])
@pytest.mark.parametrize("buf", [128, 300])
@pytest.mark.parametrize("v", VERSIONS)
def test_incoming_packet_of_exactly_buf_size_and_one_more(v, buf, how):
    exact, exact_len = publish_of_size(v, buf, qos=0, topic=b"exact")
    plus, _ = publish_of_size(v, buf + 1, qos=0, topic=b"plus1")
    assert len(exact) == buf and len(plus) == buf + 1
    after = publish(v, b"after", b"abc")
    fake = FakeBroker([("send", connack(v)), ("send", exact), ("sleep", 0.1), ("send", plus),
                       ("sleep", 0.1), ("send", after)])
    res = mp(fake, v, ("BUF = %d\nHOW = %r\n" % (buf, how)) + SIZE_BODY)
    assert res["exact"]["ok"], res["exact"]
    assert_error(res["plus_one"], "PacketTooLarge", str(buf + 1), str(buf))
    assert res["after"]["ok"], res["after"]
    assert res["got"]["got"] == repr([(b"exact", exact_len), (b"after", 3)])
    assert res["got"]["connected"] is True


@pytest.mark.parametrize("v", VERSIONS)
def test_oversize_non_publish_packet_refused(v):
    # Only a PUBLISH can be skipped; any other oversize packet ends the link.
    raw = pkt(0x90, u16(1) + b"\x00" * 2000)
    err = protocol_error_after_connack(v, raw)
    assert_error(err, "PacketTooLarge", "0x90")


# ---------------------------------------------------------------- CONNACK

@pytest.mark.parametrize("v,code,text", [(4, 5, "not authorized"), (4, 4, "user name or password"),
                                         (4, 1, "protocol version"), (5, 0x87, "not authorized"),
                                         (5, 0x86, "user name or password"), (5, 0x8A, "banned")])
def test_connack_refusal(v, code, text):
    props = b"\x1f" + u16(12) + b"go away now!" if v == 5 else b""
    fake = FakeBroker([("send", connack(v, code=code, props=props))])
    res = mp(fake, v, """
c = MQTTClient("fake", "127.0.0.1", port=PORT, version=V, timeout_ms=3000)
report("connect", c.connect)
emit("state", connected=c.is_connected())
""")
    assert_error(res["connect"], "ConnectRefused", text, code=code)
    if v == 5:
        assert "go away now!" in res["connect"]["args"][1]
    assert res["state"]["connected"] is False


@pytest.mark.parametrize("v", VERSIONS)
def test_connack_with_reserved_flags(v):
    fake = FakeBroker([("send", pkt(0x20, b"\x02\x00" + (b"\x00" if v == 5 else b"")))])
    res = mp(fake, v, """
c = MQTTClient("fake", "127.0.0.1", port=PORT, version=V, timeout_ms=3000)
report("connect", c.connect)
""")
    assert_error(res["connect"], "ProtocolError", "CONNACK")


@pytest.mark.parametrize("v", VERSIONS)
def test_MQTT_3_2_0_1_a_publish_before_connack_fails_the_connect(v):
    # MQTT-3.2.0-1: the first packet a server sends is CONNACK. A PUBLISH
    # first is a protocol error: connect() fails, nothing is delivered.
    fake = FakeBroker([("send", publish(v, b"a", b"x")), ("send", connack(v))])
    res = mp(fake, v, """
c = MQTTClient("fake", "127.0.0.1", port=PORT, version=V, timeout_ms=3000)
report("connect", c.connect)
""")
    assert_error(res["connect"], "ProtocolError", "CONNACK")


@pytest.mark.parametrize("qos", [0, 1, 2])
@pytest.mark.parametrize("v", VERSIONS)
def test_an_oversize_publish_before_connack_fails_the_connect(v, qos):
    # The first packet a server sends is CONNACK (MQTT-3.2.0-1), and an MQTT
    # 5 one never exceeds the Maximum Packet Size the client announced,
    # buf_size (MQTT-3.1.2-24). A PUBLISH before CONNACK fails connect()
    # (above); one larger than buf_size took the oversize path instead: read,
    # dropped, acknowledged (QoS 1/2: PUBACK / PUBREC went out before the
    # CONNECT was even accepted), and the connection was taken. It is a
    # packet too large, as any other but a PUBLISH after CONNACK: MQTT 5
    # closes with DISCONNECT 0x95, 3.1.1 just closes; nothing is acknowledged.
    big = publish(v, b"big", b"x" * 400, qos=qos, pid=7)
    fake = FakeBroker([("send", big), ("send", connack(v))])
    res = mp(fake, v, """
c = MQTTClient("fake", "127.0.0.1", port=PORT, version=V, timeout_ms=3000, buf_size=256)
report("connect", c.connect)
emit("state", connected=c.is_connected())
""")
    assert_error(res["connect"], "PacketTooLarge", "0x30", "256")
    assert res["state"]["connected"] is False
    assert fake.conns[0][1:] == ([(0xE0, b"\x95")] if v == 5 else []), fake.conns[0]


@pytest.mark.parametrize("v", VERSIONS)
def test_no_connack_times_out(v):
    fake = FakeBroker([])            # reads CONNECT, then only listens
    res = mp(fake, v, """
c = MQTTClient("fake", "127.0.0.1", port=PORT, version=V, timeout_ms=500)
report("connect", c.connect)
emit("state", connected=c.is_connected())
""")
    assert_error(res["connect"], "Timeout", "CONNACK", "500")
    assert 400 <= res["connect"]["ms"] < 1500, res["connect"]
    assert res["state"]["connected"] is False


# ---------------------------------------------------------------- the server closes

@pytest.mark.parametrize("how", ["wait", "check"])
@pytest.mark.parametrize("v", VERSIONS)
def test_server_closes_mid_packet(v, how):
    raw = publish(v, b"a/b", b"x" * 50, qos=1, pid=3)
    fake = FakeBroker([("send", connack(v)), ("send", raw[:9]), ("sleep", 0.2), ("close",)])
    res = mp(fake, v, CONNECTED + """
got = []
c.set_callback(lambda t, m, r, q: got.append(1))
report("err", lambda: pump(c, %r))
emit("state", connected=c.is_connected(), delivered=len(got))
""" % how)
    assert_error(res["err"], "PeerClosed", "closed")
    assert res["state"] == {"tag": "state", "connected": False, "delivered": 0}


@pytest.mark.parametrize("v", VERSIONS)
def test_server_closes_mid_connack(v):
    fake = FakeBroker([("send", b"\x20"), ("sleep", 0.1), ("close",)])
    res = mp(fake, v, """
c = MQTTClient("fake", "127.0.0.1", port=PORT, version=V, timeout_ms=3000)
report("connect", c.connect)
""")
    assert_error(res["connect"], "PeerClosed", "closed")


def test_v5_disconnect_with_reason_string():
    reason = b"maintenance at noon"
    raw = pkt(0xE0, b"\x8b" + props_block(b"\x1f" + u16(len(reason)) + reason))
    err = protocol_error_after_connack(5, raw)
    assert_error(err, "PeerClosed", "DISCONNECT", "server shutting down", reason.decode(), code=0x8B)


def test_v5_disconnect_without_reason():
    err = protocol_error_after_connack(5, b"\xe0\x00")
    assert not err["ok"] and err["cls"] == "PeerClosed" and err["args"][0] == 0, err


@pytest.mark.parametrize("v", VERSIONS)
def test_protocol_error_keeps_unacked_qos1(v):
    """After any protocol error the session survives: messages accepted
    before and while the link is down are still counted."""
    fake = FakeBroker([("send", connack(v)), ("recv",), ("send", b"\x00\x00")])
    res = mp(fake, v, CONNECTED + """
p1 = c.publish("a/b", b"one", qos=1)
report("err", lambda: pump(c))
p2 = c.publish("a/b", b"two", qos=1)
emit("state", p1=p1, p2=p2, pending=c.pending())
""")
    assert_error(res["err"], "ProtocolError", "0x00")
    st = res["state"]
    assert st["pending"] == 2 and st["p1"] > 0 and st["p2"] > 0 and st["p1"] != st["p2"], st


# ---------------------------------------------------------------- bad arguments

BAD_ARGS = """
c = MQTTClient("fake", "127.0.0.1", port=1, buf_size=128)
report("qos3", lambda: c.publish("a/b", b"x", qos=3))
report("qos_neg", lambda: c.publish("a/b", b"x", qos=-1))
report("empty_str", lambda: c.publish("", b"x"))
report("empty_bytes", lambda: c.publish(b"", b"x", qos=1))
report("wild_plus", lambda: c.publish("a/+/b", b"x"))
report("wild_hash", lambda: c.publish("a/#", b"x", qos=1))
report("wild_bytes", lambda: c.publish(b"a/+", b"x", qos=1))
report("too_big_q0", lambda: c.publish("a/b", b"x" * 200))
report("too_big_q1", lambda: c.publish("a/b", bytearray(5000), qos=1))
report("too_big_huge", lambda: c.publish("a/b", memoryview(bytearray(200000)), qos=1))
# whole packet: 2 header + 2 + 3 topic + 2 id + payload
report("exact_out", lambda: c.publish("a/b", b"e" * (128 - 9), qos=1))
report("plus_one_out", lambda: c.publish("a/b", b"e" * (128 - 8), qos=1))
report("version6", lambda: MQTTClient("x", "h", version=6))
report("version3", lambda: MQTTClient("x", "h", version=3))
report("sub_qos5", lambda: c.subscribe("a/b", 5))
report("sub_empty", lambda: c.subscribe("", 1))
report("will_qos", lambda: c.set_last_will("w", "x", qos=3))
c5 = MQTTClient("fake5", "127.0.0.1", port=1, version=5)
# Only the Will Properties of MQTT 5 section 3.1.3.2 go in a will.
report("will_alias", lambda: c5.set_last_will("w", "x", props={"topic_alias": 3}))
report("will_sub_id", lambda: c5.set_last_will("w", "x", props={"subscription_id": 7}))
report("will_session_expiry", lambda: c5.set_last_will("w", "x", props={"session_expiry": 7}))
report("will_not_utf8", lambda: c5.set_last_will("w", b"\\xff", props={"payload_format": 1}))
c5.set_last_will("w", "gone", props={"will_delay": 30, "payload_format": 1, "message_expiry": 60,
                                      "content_type": "text/plain", "response_topic": "r",
                                      "correlation_data": b"\\x01", "user_property": [("k", "v")]})
emit("state", pending=c.pending())
"""


@pytest.fixture(scope="module")
def bad_args():
    """One MicroPython run tries every bad call (no broker needed)."""
    r = run_mp("from fake_report import report, emit\nfrom durable_mqtt import MQTTClient\n" + BAD_ARGS,
               timeout=20)
    return reports(r.stdout)


BAD_CASES = [
    ("qos3", ["qos"], None), ("qos_neg", ["qos"], None),
    ("empty_str", ["empty"], None), ("empty_bytes", ["empty"], None),
    ("wild_plus", ["wildcard"], None), ("wild_hash", ["wildcard"], None),
    ("wild_bytes", ["wildcard"], None),
    ("too_big_q0", ["exceeds"], "PacketTooLarge"), ("too_big_q1", ["exceeds"], "PacketTooLarge"),
    ("too_big_huge", ["exceeds"], "PacketTooLarge"), ("plus_one_out", ["129", "128"], "PacketTooLarge"),
    ("version6", ["version"], None), ("version3", ["version"], None),
    ("sub_qos5", ["qos"], None), ("sub_empty", ["empty"], None), ("will_qos", ["qos"], None),
    ("will_alias", ["topic_alias", "will"], None), ("will_sub_id", ["subscription_id", "will"], None),
    ("will_session_expiry", ["session_expiry", "will"], None), ("will_not_utf8", ["UTF-8"], None)]


@pytest.mark.parametrize("tag,words,cls", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_argument_refused_clearly(bad_args, tag, words, cls):
    """ValueError (or an MQTTException subclass) with a message that names
    the problem; an oversize payload is PacketTooLarge, never MemoryError."""
    d = bad_args[tag]
    assert not d["ok"], "%s was accepted: %r" % (tag, d)
    if cls is None:
        assert d["cls"] == "ValueError" or d["mqtt"], d
    else:
        assert d["cls"] == cls and d["mqtt"] and d["oserror"], d
    msg = " ".join(str(a) for a in d["args"]).lower()
    for w in words:
        assert w.lower() in msg, (w, d)


def test_outgoing_packet_of_exactly_buf_size_accepted_and_refused_ones_not_in_session(bad_args):
    assert bad_args["exact_out"]["ok"] and bad_args["exact_out"]["value"] > 0, bad_args["exact_out"]
    # Only the exact-size message was accepted into the session: every
    # refused QoS 1 publish above left no trace.
    assert bad_args["state"]["pending"] == 1, bad_args["state"]


@pytest.mark.parametrize("v", VERSIONS)
def test_a_malformed_oversize_publish_is_not_reported_again_on_the_next_link(v):
    # An oversize PUBLISH whose Topic Name runs past the packet closes the
    # link (ProtocolError). Its size stayed noted on the link: the first
    # check_msg() of the next connection raised PacketTooLarge for a packet
    # of the connection before, with nothing dropped on this one.
    bad = pkt(0x30, u16(1000) + b"a" * 498)
    fake = FakeBroker([("send", connack(v)), ("send", bad)], [("send", connack(v))])
    res = mp(fake, v, """
c = MQTTClient("fake", "127.0.0.1", port=PORT, version=V, timeout_ms=3000, buf_size=200)
c.connect()
report("err", lambda: pump(c, "wait"))
c.connect()
report("next", lambda: c.check_msg())
emit("stats", oversize_in=c.stats()["oversize_in"])
""")
    assert_error(res["err"], "ProtocolError", "topic")
    assert res["next"]["ok"], res["next"]


@pytest.mark.parametrize("v", VERSIONS)
def test_MQTT_4_3_3_10_an_oversize_duplicate_of_a_delivered_qos2_id_is_no_error(v, tmp_path):
    # A QoS 2 message delivered and recorded (PUBREC 0 sent), then a reboot
    # with a smaller buf_size: the broker resends it (DUP, Session Present)
    # and it no longer fits. It is a duplicate: answered PUBREC 0, not
    # delivered again (MQTT-4.3.3-10), and then released. Nothing was
    # dropped, so the call that read it must not raise PacketTooLarge
    # ("dropped an incoming PUBLISH") nor count it in oversize_in: it is a
    # duplicate (dup_in), handled as one, and the link stays up. (It
    # raised, counted as dropped, although the engine had answered it right.)
    big = publish(v, b"big", b"B" * 600, qos=2, pid=5)
    dup = bytes((big[0] | 0x08,)) + big[1:]
    fake = FakeBroker([("send", connack(v)), ("send", big), ("recv",), ("sleep", 0.3)],
                      [("send", connack(v, sp=1)), ("send", dup), ("recv",), ("send", pkt(0x62, u16(5))),
                       ("recv",), ("sleep", 0.3)])
    res = mp(fake, v, """
PATH = %r
got = []
c = MQTTClient("fake", "127.0.0.1", port=PORT, version=V, timeout_ms=3000, buf_size=1024,
               clean_session=False, session_file=PATH)
c.set_callback(lambda t, m, r, q: got.append(len(m)))
c.connect()
pump_until(c, lambda: got)
c.close()                                        # PUBREC sent; power cut before the PUBREL
c = MQTTClient("fake", "127.0.0.1", port=PORT, version=V, timeout_ms=3000, buf_size=256,
               clean_session=False, session_file=PATH)
c.set_callback(lambda t, m, r, q: got.append(len(m)))
c.connect()
report("read", lambda: pump(c, ms=600))
s = c.stats()
emit("after", got=repr(got), connected=c.is_connected(), dup_in=s["dup_in"], oversize_in=s["oversize_in"])
c.disconnect()
""" % str(tmp_path / "s"))
    assert res["read"] == dict(res["read"], ok=True, value="no error"), res
    assert res["after"] == dict(res["after"], got="[600]", connected=True, dup_in=1, oversize_in=0), res
    acks = [(first, body[:2], body[2:3]) for first, body in fake.conns[1] if first in (0x50, 0x70)]
    assert [a[:2] for a in acks] == [(0x50, u16(5)), (0x70, u16(5))], acks
    assert acks[0][2] in (b"", b"\x00"), acks           # PUBREC 0, not 0x97


# ---------------------------------------------------------------- DISCONNECT with the reason (MQTT 5, 4.13.1)
#
# A client that detects a Malformed Packet or a Protocol Error closes the
# connection; MQTT 5 sends DISCONNECT with the reason code first (0x81 or
# 0x82 unless a more specific one applies, MQTT 5 4.13.1 and 3.14.2.1).
# 3.1.1 has no reason codes and DISCONNECT means a normal close there
# (the will is dropped): it just closes. The fake broker records what the
# client sent after the bad packet.

REFUSED = {
    # name: (packets after CONNACK, MQTT 5 reason code, 3.1.1 too)
    "reserved-flags": (b"\x41\x02\x00\x01", 0x81, True),
    "remaining-length": (b"\x30\xff\xff\xff\xff\x7f" + b"x" * 16, 0x81, True),
    "pingreq-from-broker": (b"\xc0\x00", 0x82, True),
    # A PINGRESP has no body (3.13.1): one is malformed, not an unexpected packet.
    "pingresp-with-body": (b"\xd0\x01\x00", 0x81, True),
    "second-connack": (None, 0x82, True),
    "repeated-property": (publish(5, b"a/b", b"x", props=b"\x01\x00\x01\x00"), 0x82, False),
    "empty-topic-no-alias": (publish(5, b"", b"x"), 0x82, False),
    "topic-alias": (publish(5, b"a/b", b"x", props=b"\x23" + u16(1)), 0x94, False),
    # A packet other than PUBLISH larger than the Maximum Packet Size the
    # client announced (buf_size, MQTT-3.1.2-24).
    "too-large": (pkt(0x40, u16(1) + b"\x00" * 300), 0x95, True),
    # More QoS 2 messages unreleased than the table holds (64 at least):
    # more than twice Receive Maximum (MQTT-3.3.4-9).
    "receive-maximum": (b"".join(publish(5, b"q2", b"m", qos=2, pid=i + 1) for i in range(65)), 0x93, False),
}


def after_error(fake):
    # What the client sent on the first connection after its CONNECT.
    return fake.conns[0][1:]


@pytest.mark.parametrize("how", ["wait", "check"])
@pytest.mark.parametrize("v,name", [(v, name) for v in VERSIONS for name in sorted(REFUSED)
                                    if v == 5 or REFUSED[name][2]])     # (the MQTT 5 packets: 5 only)
def test_MQTT_4_8_0_1_a_bad_packet_closes_the_connection_with_disconnect_and_reason_in_mqtt5_only(v, name, how):
    # 3.1.1 MQTT-4.8.0-1 (5.0 4.13.1): a protocol violation closes the network
    # connection; MQTT 5 sends a DISCONNECT with the reason code first.
    raw, rc, v4_too = REFUSED[name]
    if raw is None:
        raw = connack(v)
    fake = FakeBroker([("send", connack(v)), ("send", raw)])
    res = mp(fake, v, """
c = MQTTClient("fake", "127.0.0.1", port=PORT, version=V, timeout_ms=3000, buf_size=256, receive_max=8)
c.connect()
report("err", lambda: pump(c, %r))
emit("state", connected=c.is_connected())
""" % how)
    assert not res["err"]["ok"], res["err"]
    assert res["err"]["cls"] in ("ProtocolError", "PacketTooLarge"), res["err"]
    assert res["state"]["connected"] is False
    assert not fake.errors, fake.errors
    sent = after_error(fake)
    disconnects = [p for p in sent if p[0] & 0xF0 == 0xE0]
    if v == 5:
        assert disconnects == [(0xE0, bytes((rc,)))], sent[-3:]
        assert sent[-1] == (0xE0, bytes((rc,))), sent[-3:]        # the last packet before closing
    else:
        assert disconnects == [], sent[-3:]


@pytest.mark.parametrize("how", ["wait", "check"])
@pytest.mark.parametrize("v", VERSIONS)
def test_MQTT_4_5_0_2_messages_delivered_before_a_malformed_packet_are_acknowledged_before_the_close(v, how):
    # Two messages, delivered, then a PUBLISH with a wildcard in its Topic
    # Name, all in one write. The client closes the connection over the
    # third (MQTT-4.8.0-1; API.md), but acknowledges the two it took first
    # (MQTT-4.5.0-2), in both versions: MQTT 5 did (they go before its
    # DISCONNECT), 3.1.1 closed with them unsent, and the broker sent the
    # QoS 1 message again on the next connection, a second delivery.
    raw = (publish(v, b"a/1", b"x", qos=1, pid=3) + publish(v, b"a/2", b"y", qos=2, pid=4)
           + publish(v, b"a/+", b"z", qos=1, pid=5))
    fake = FakeBroker([("send", connack(v)), ("send", raw), ("sleep", 0.5)])
    res = mp(fake, v, """
got = []
c = MQTTClient("fake", "127.0.0.1", port=PORT, version=V, timeout_ms=3000)
c.set_callback(lambda t, m, r, q: got.append(bytes(t)))
c.connect()
report("err", lambda: pump(c, %r))
emit("state", connected=c.is_connected(), got=repr(got))
""" % how)
    assert_error(res["err"], "ProtocolError", "wildcard")
    assert res["state"] == {"tag": "state", "connected": False, "got": repr([b"a/1", b"a/2"])}, res
    assert after_error(fake) == [(0x40, u16(3)), (0x50, u16(4))] + ([(0xE0, b"\x81")] if v == 5 else []), \
        after_error(fake)


@pytest.mark.parametrize("v", VERSIONS)
def test_bad_suback_closes_with_disconnect_in_mqtt5(v):
    # The same from subscribe()'s own reads (request.py): a SUBACK with a
    # reason code no SUBACK has is a Protocol Error.
    fake = FakeBroker([("send", connack(v)), ("recv",),
                       ("reply", lambda got: pkt(0x90, got[-1][1][:2] + (b"\x00" if v == 5 else b"") + b"\x05"))])
    res = mp(fake, v, CONNECTED + """
report("sub", lambda: c.subscribe("a/b", 1))
emit("state", connected=c.is_connected())
""")
    assert_error(res["sub"], "ProtocolError", "reason code 0x05")
    assert res["state"]["connected"] is False
    sent = after_error(fake)
    assert sent[0][0] == 0x82                                     # the SUBSCRIBE
    assert sent[1:] == ([(0xE0, b"\x82")] if v == 5 else []), sent


def test_no_disconnect_for_a_link_failure_after_a_refused_argument():
    # The reason code is that of the packet just refused, never one left
    # by an argument refused before (a Topic Name with a wildcard fails the
    # same check as a received one): a PINGRESP that never comes is no
    # protocol error, and the link just closes.
    fake = FakeBroker([("send", connack(5)), ("recv",), ("sleep", 3)])
    res = mp(fake, 5, """
c = MQTTClient("fake", "127.0.0.1", port=PORT, version=V, timeout_ms=3000, keepalive=1)
c.connect()
report("bad", lambda: c.publish("a/#", b"x"))
report("err", lambda: pump(c, "check"))
""")
    assert res["bad"]["cls"] == "ValueError", res["bad"]
    assert res["err"]["cls"] == "Timeout", res["err"]
    sent = after_error(fake)
    assert [p[0] for p in sent] == [0xC0], sent                   # the PINGREQ, no DISCONNECT


FRONT_END = {
    "robust": """
from durable_mqtt.robust import RobustClient
c = RobustClient("fake", "127.0.0.1", port=PORT, version=V, timeout_ms=3000, backoff_ms=(50, 100))
c.connect()
pid = c.publish("a/b", b"hello", qos=1)
t0 = time.ticks_ms()
while time.ticks_diff(time.ticks_ms(), t0) < 5000 and (c.pending() or not c.link_downs):
    c.poll(%d)
emit("end", pending=c.pending(), downs=c.link_downs)
""",
    "aio": """
import asyncio
from durable_mqtt.aio import AsyncClient
async def main():
    c = AsyncClient("fake", "127.0.0.1", port=PORT, version=V, timeout_ms=3000, backoff_ms=(50, 100))
    await c.connect()
    await c.publish("a/b", b"hello", qos=1, timeout_ms=5000)       # acked on the second link
    emit("end", pending=c.pending(), downs=c.client.link_downs)
asyncio.run(main())
""",
}


# RobustClient polled with check_msg() (0) or wait_msg(50); AsyncClient has
# one reader, its background task.
@pytest.mark.parametrize("front,how", [("robust", 0), ("robust", 50), ("aio", 0)],
                         ids=["robust-check", "robust-wait", "aio"])
@pytest.mark.parametrize("v", VERSIONS)
def test_front_ends_send_disconnect_with_reason_and_keep_the_session(v, front, how):
    # RobustClient (poll: check_msg or wait_msg) and AsyncClient (its
    # background task): a malformed packet while a QoS 1 message is in
    # flight; MQTT 5 sends DISCONNECT 0x81 before closing, 3.1.1 nothing.
    # The front end reconnects by itself, the broker resumes the session,
    # and the message goes again (DUP, same id) and is acknowledged.
    fake = FakeBroker(
        [("send", connack(v)), ("recv",), ("send", b"\x41\x02\x00\x01")],
        [("send", connack(v, sp=1)), ("recv",), ("reply", lambda got: pkt(0x40, got[-1][1][5:7]))],
    )
    res = mp(fake, v, FRONT_END[front] % how if front == "robust" else FRONT_END[front])
    assert res["end"]["pending"] == 0 and res["end"]["downs"] == 1, res
    assert not fake.errors, fake.errors
    first, second = fake.conns
    assert first[1][0] == 0x32 and second[1][0] == 0x3A, (first, second)   # PUBLISH QoS 1, then DUP
    assert first[1][1][5:7] == second[1][1][5:7]                          # same packet id
    assert first[2:] == ([(0xE0, b"\x81")] if v == 5 else []), first


@pytest.mark.parametrize("v", VERSIONS)
def test_an_oversize_duplicate_read_after_a_dropped_publish_leaves_its_report(v, tmp_path):
    # One check_msg() reads a new oversize PUBLISH (dropped: PacketTooLarge
    # is owed) and then an oversize duplicate of a QoS 2 id delivered
    # before (no error of its own). The duplicate cleared the report of
    # the drop before it: the call raised nothing, and the application
    # never heard that a message was dropped.
    small = publish(v, b"big", b"B" * 100, qos=2, pid=5)
    dup = publish(v, b"big", b"B" * 600, qos=2, pid=5)
    dup = bytes((dup[0] | 0x08,)) + dup[1:]
    new = publish(v, b"new", b"N" * 600, qos=1, pid=6)
    fake = FakeBroker([("send", connack(v)), ("send", small), ("recv",), ("sleep", 0.3),
                       ("send", new + dup), ("recv",), ("sleep", 0.5)])
    res = mp(fake, v, """
got = []
c = MQTTClient("fake", "127.0.0.1", port=PORT, version=V, timeout_ms=3000, buf_size=256)
c.set_callback(lambda t, m, r, q: got.append(len(m)))
c.connect()
pump_until(c, lambda: got)
report("read", lambda: pump(c, "check", ms=800))
s = c.stats()
emit("after", got=repr(got), connected=c.is_connected(), dup_in=s["dup_in"], oversize_in=s["oversize_in"])
c.disconnect()
""")
    assert_error(res["read"], "PacketTooLarge", "dropped")
    assert res["after"] == dict(res["after"], got="[100]", connected=True, dup_in=1, oversize_in=1), res


def test_an_application_error_in_the_done_callback_sends_no_reason_of_the_brokers():
    # errors.why is the reason code of the last bad packet: fail() sets it,
    # and only leave.refuse() clears it. An earlier error that never reached
    # refuse() left it set (here a publish() to "a/+": the Topic Name check
    # raises through fail(), publish() makes it a ValueError), and a
    # PacketTooLarge that publish() raised for the application's own
    # message, from the done callback inside the read, was then taken for
    # the broker's: DISCONNECT 0x81 (Malformed Packet) although every packet
    # of the broker was sound. An error of the client's own outgoing packet
    # now sets no reason: the link closes as before, without DISCONNECT.
    v = 5
    fake = FakeBroker([("send", connack(v)), ("recv",), ("reply", lambda got: pkt(0x40, got[-1][1][5:7])),
                       ("sleep", 0.3)])
    res = mp(fake, v, """
c = MQTTClient("fake", "127.0.0.1", port=PORT, version=V, timeout_ms=3000, buf_size=256)
c.connect()
report("bad", lambda: c.publish("a/+", b"x"))
def done(pid, r):
    c.publish("big", b"x" * 400)
c.set_done_callback(done)
c.publish("a/b", b"m", qos=1)
report("err", lambda: pump(c))
""")
    assert res["bad"]["cls"] == "ValueError" and "wildcard" in res["bad"]["args"][0], res["bad"]
    assert_error(res["err"], "PacketTooLarge", "PUBLISH")
    assert [p for p in fake.conns[0] if p[0] & 0xF0 == 0xE0] == [], fake.conns[0]


# ---------------------------------------------------------------- a bad CONNACK (MQTT 5, 4.13.1)
#
# A CONNACK that is malformed or breaks the protocol: connect() raises a
# clear error, the stored session is untouched (the next good connection
# resends what was in flight once, and a QoS 2 message delivered before is
# not delivered again), and MQTT 5 tells the broker why before closing, a
# DISCONNECT with 0x81 / 0x82, as for any other packet (4.13.1: "MAY" for
# a CONNACK; sent here, as for every other packet). 3.1.1 sends nothing.

BAD_CONNACK = {
    # name: (version, CONNACK, error class, words, MQTT 5 reason code)
    "unknown-property": (5, connack(5, props=b"\x04\x01"), "ProtocolError", ("unknown property",), 0x81),
    "property-not-in-connack": (5, connack(5, props=b"\x01\x01"), "ProtocolError", ("not allowed",), 0x81),
    "no-property-length": (5, pkt(0x20, b"\x00\x00"), "ProtocolError", (), 0x81),
    "property-length-beyond": (5, pkt(0x20, b"\x00\x00\x05"), "ProtocolError", ("beyond",), 0x81),
    "reserved-ack-flags": (5, pkt(0x20, b"\x02\x00\x00"), "ProtocolError", ("MQTT-3.2.2-1",), 0x81),
    "repeated-property": (5, connack(5, props=b"\x21" + u16(5) + b"\x21" + u16(6)), "ProtocolError",
                          ("repeated",), 0x82),
    "receive-maximum-0": (5, connack(5, props=b"\x21" + u16(0)), "ProtocolError", ("is 0",), 0x82),
    "maximum-qos-2": (5, connack(5, props=b"\x24\x02"), "ProtocolError", ("out of range",), 0x82),
    "refusal-with-session-present": (5, connack(5, code=0x87, sp=1), "ProtocolError",
                                     ("Session Present", "MQTT-3.2.2-6", "0x87"), 0x82),
    "v4-remaining-length": (4, pkt(0x20, b"\x00\x00\x00"), "ProtocolError", ("CONNACK",), None),
    "v4-refusal-with-session-present": (4, connack(4, code=5, sp=1), "ProtocolError",
                                        ("Session Present", "MQTT-3.2.2-4"), None),
}


@pytest.mark.parametrize("name", sorted(BAD_CONNACK))
def test_bad_connack_refused_with_reason_and_the_session_kept(name, tmp_path):
    v, bad, cls, words, rc = BAD_CONNACK[name]
    q2 = publish(v, b"in", b"once", qos=2, pid=9)
    fake = FakeBroker(
        # A QoS 1 message in flight, unacknowledged; a QoS 2 one delivered,
        # its PUBREL still to come; then the link drops.
        [("send", connack(v)), ("recv",), ("send", q2), ("recv",), ("close",)],
        [("send", bad)],
        # The session resumes: the QoS 1 message again (DUP), the QoS 2 one
        # again (DUP: answered, not delivered), then its PUBREL.
        [("send", connack(v, sp=1)), ("recv",), ("reply", lambda got: pkt(0x40, got[-1][1][5:7])),
         ("send", bytes((q2[0] | 0x08,)) + q2[1:]), ("recv",), ("send", pkt(0x62, u16(9))), ("recv",),
         ("sleep", 0.3)],
    )
    res = mp(fake, v, """
PATH = %r
got = []
def client():
    c = MQTTClient("bad", "127.0.0.1", port=PORT, version=V, timeout_ms=3000, clean_session=False,
                   session_file=PATH)
    c.set_callback(lambda t, m, r, q: got.append(bytes(m)))
    return c
c = client()
c.connect()
c.publish("a/b", b"m1", qos=1)
pump_until(c, lambda: got)
report("drop", lambda: pump(c))
report("bad", c.connect)
c.close()
c = client()                       # what flash holds
report("good", c.connect)
pump_until(c, lambda: not c.pending() and not c.engine.rx2_n)
pump(c, ms=300)
emit("end", got=repr(got), pending=c.pending())
c.disconnect()
""" % str(tmp_path / "s"))
    assert_error(res["bad"], cls, *words)
    assert res["good"]["ok"] and res["good"]["value"] is True, res["good"]
    assert res["end"]["got"] == "[b'once']" and res["end"]["pending"] == 0, res
    assert not fake.errors, fake.errors
    sent = fake.conns[1][1:]
    assert sent == ([(0xE0, bytes((rc,)))] if v == 5 else []), sent
    again = [first for first, _ in fake.conns[2][1:]]
    assert again[:3] == [0x3A, 0x50, 0x70], again              # DUP PUBLISH, PUBREC, PUBCOMP


@pytest.mark.parametrize("front", ["robust", "aio"])
def test_front_ends_refuse_a_bad_connack_with_reason_and_reconnect(front):
    # RobustClient's and AsyncClient's own reconnects (AsyncClient's link
    # never blocks: leave.refuse's gentle path): a CONNACK with Receive
    # Maximum 0 gets DISCONNECT 0x82; the next attempt connects and the
    # message is acknowledged.
    v = 5
    fake = FakeBroker(
        [("send", connack(v)), ("recv",), ("close",)],
        [("send", connack(v, props=b"\x21" + u16(0)))],
        [("send", connack(v, sp=1)), ("recv",), ("reply", lambda got: pkt(0x40, got[-1][1][5:7]))],
    )
    res = mp(fake, v, FRONT_END[front] % 50 if front == "robust" else FRONT_END[front])
    assert res["end"]["pending"] == 0 and res["end"]["downs"] == 1, res
    assert not fake.errors, fake.errors
    assert fake.conns[1][1:] == [(0xE0, b"\x82")], fake.conns[1]
    assert fake.conns[2][1][0] == 0x3A, fake.conns[2]


@pytest.mark.parametrize("v", VERSIONS)
def test_session_present_after_a_clean_start_gets_disconnect_in_mqtt5(v):
    # Session Present 1 answering a clean start (MQTT-3.2.2-1 in 3.1.1,
    # MQTT-3.2.2-2 in MQTT 5): a Protocol Error, found after the CONNACK
    # was read (session.connected); MQTT 5 says so (0x82) before closing.
    fake = FakeBroker([("send", connack(v, sp=1))])
    res = mp(fake, v, """
c = MQTTClient("fake", "127.0.0.1", port=PORT, version=V, timeout_ms=3000, clean_session=True)
report("connect", c.connect)
""")
    assert_error(res["connect"], "ProtocolError", "Session Present after a clean start")
    assert fake.conns[0][1:] == ([(0xE0, b"\x82")] if v == 5 else []), fake.conns[0]
