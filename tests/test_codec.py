"""Golden bytes for every packet the client sends, both protocol versions,
hand-checked against the MQTT 3.1.1 and 5.0 specifications (sections named
beside each vector), and decoder round trips. Runs in the unix port."""
from conftest import run_mp

PRELUDE = r"""
from durable_mqtt import codec, props, dial, filters, request
import binascii
B = bytearray(300000)
def hx(n, start=0):
    return binascii.hexlify(B[start:n]).decode()
def eq(name, got, want):
    want = want.replace(" ", "")
    if got != want:
        raise AssertionError("%s:\n got  %s\n want %s" % (name, got, want))
    print("ok", name)
def publish(topic, payload, qos, retain, pid, pr, v5):
    # What the client does: the packet up to its payload, then the payload.
    rl = codec.publish_size(len(topic), len(payload), qos, len(pr or b""), v5)
    p = codec.put_publish(B, 0, 0x30 | qos << 1 | retain, rl, topic, pid, pr)
    B[p:p + len(payload)] = payload
    return p + len(payload)
"""


def check(body):
    r = run_mp(PRELUDE + body)
    assert "ok" in r.stdout


def test_connect_v4_minimal():
    # 3.1.2: protocol name "MQTT", level 4, flags CleanSession (0x02), keepalive 60.
    check("""
n = dial.connect_packet(B, b"a", False, 60, True, None, None, None, b"")
eq("connect v4", hx(n), "10 0d 0004 4d515454 04 02 003c 0001 61")
""")


def test_connect_v4_will_user_password():
    # Flags: user 0x80, password 0x40, will retain 0x20, will QoS 1 0x08, will 0x04; clean 0.
    # Payload order (3.1.3): client id, will topic, will message, user name, password.
    check("""
n = dial.connect_packet(B, b"id", False, 10, False, b"u", b"pw", (b"w", b"bye", True, 1, b""), b"")
eq("connect v4 full", hx(n),
   "10 1d 0004 4d515454 04 ec 000a 0002 6964 0001 77 0003 627965 0001 75 0002 7077")
""")


def test_connect_v5_with_properties():
    # 3.1.2.11: property length 8: Receive Maximum (0x21) 8, Maximum Packet Size (0x27) 1024.
    # Will properties (3.1.3.2) come before the will topic; empty here.
    check("""
p = props.encode({"receive_maximum": 8, "maximum_packet_size": 1024})
# (a dict's order is the port's: compare decoded)
d = props.decode(bytes((len(p),)) + p, 0, len(p) + 1, props.CONNACK)
assert d == {"receive_maximum": 8, "maximum_packet_size": 1024}, d
p = bytes.fromhex("210008" "2700000400")
n = dial.connect_packet(B, b"a", True, 60, True, None, None, None, p)
eq("connect v5", hx(n), "10 16 0004 4d515454 05 02 003c 08 210008 2700000400 0001 61")
n = dial.connect_packet(B, b"a", True, 0, False, None, None, (b"w", b"", False, 0, b""), b"")
eq("connect v5 will", hx(n), "10 14 0004 4d515454 05 04 0000 00 0001 61 00 0001 77 0000")
""")


def test_publish_v4():
    # 3.3.1: first byte 0x30 | DUP 0x08 | QoS<<1 | RETAIN; 3.3.2: topic, packet id (QoS>0).
    check("""
n = publish(b"a/b", b"hi", 0, 0, 0, None, False)
eq("publish q0", hx(n), "30 07 0003 612f62 6869")
n = publish(b"a/b", b"hi", 1, 1, 10, None, False)
eq("publish q1 retain", hx(n), "33 09 0003 612f62 000a 6869")
n = publish(b"t", b"", 2, 0, 65535, None, False)
eq("publish q2 empty payload", hx(n), "34 05 0001 74 ffff")
""")


def test_publish_v5():
    # 3.3.2.3: property length after the packet id; Message Expiry (0x02) 60 s.
    check("""
n = publish(b"a", b"x", 1, 0, 1, b"", True)
eq("publish v5 no props", hx(n), "32 07 0001 61 0001 00 78")
p = props.encode({"message_expiry": 60})
eq("props", binascii.hexlify(p).decode(), "020000003c")
n = publish(b"a", b"x", 0, 0, 0, p, True)
eq("publish v5 expiry", hx(n), "30 0a 0001 61 05 020000003c 78")
""")


def test_remaining_length_boundaries():
    # 2.2.3: 127 -> 7f; 128 -> 80 01; 16383 -> ff 7f; 16384 -> 80 80 01; 2097152 -> 80 80 80 01.
    check("""
box = codec.Box()
for rl, want in ((127, "7f"), (128, "8001"), (16383, "ff7f"), (16384, "808001"),
                 (2097151, "ffff7f"), (2097152, "80808001"), (268435455, "ffffff7f")):
    n = codec.put_varint(B, 0, rl)
    eq("varint %d" % rl, hx(n), want)
    assert codec.varint_size(rl) == n
    assert codec.get_varint(B, 0, n, box) == n and box.value == rl
    # The reader's way: a fixed header delimited by header_length(), then decoded.
    B[0] = 0x30
    codec.put_varint(B, 1, rl)
    assert codec.header_length(B, 0, n + 1) == n + 1
    assert codec.remaining_length(B, 0, n + 1) == rl
# 1.5.5: the fewest bytes (MQTT-1.5.5-1): 80 00 is 0 in two bytes, refused.
B[0:3] = bytes((0x30, 0x80, 0))
assert codec.header_length(B, 0, 3) == 3
try:
    codec.remaining_length(B, 0, 3)
    raise AssertionError("a non-minimal remaining length was taken")
except codec.ProtocolError as x:
    assert "MQTT-1.5.5-1" in str(x), x
# A PUBLISH whose remaining length is exactly 127 and 128.
for rl, hdr in ((127, "307f"), (128, "308001")):
    pl = rl - 2 - 1
    n = publish(b"t", bytes(pl), 0, 0, 0, None, False)
    eq("publish rl %d header" % rl, hx(len(hdr) // 2), hdr)
    assert n == len(hdr) // 2 + rl
    assert codec.header_length(B, 0, 5) == len(hdr) // 2
""")


def test_acks_both_versions():
    # 3.4-3.7: PUBACK 40, PUBREC 50, PUBREL 62 (flags 0010), PUBCOMP 70. MQTT 5 may
    # omit reason code 0 (3.4.2.1) and adds it otherwise.
    check("""
for first in ("40", "50", "62", "70"):
    n = codec.put_ack(B, int(first, 16), 0x1234, 0)
    eq("ack %s" % first, hx(n), first + "02 1234")
n = codec.put_ack(B, 0x62, 7, 0x92)
eq("pubrel v5 not found", hx(n), "62 03 0007 92")
""")


def test_subscribe_unsubscribe_disconnect():
    # 3.8: SUBSCRIBE 82, pid, [props], filter, options. 3.10: UNSUBSCRIBE a2.
    # 3.14 DISCONNECT e0 00; v5 with reason 0 and Session Expiry (0x11).
    check("""
n = request.subscribe_packet(B, 1, b"a/#", 1, None, len(B))
eq("subscribe v4", hx(n), "82 08 0001 0003 612f23 01")
n = request.subscribe_packet(B, 1, b"a", 0x05, b"", len(B))
eq("subscribe v5 no-local", hx(n), "82 07 0001 00 0001 61 05")
p = props.encode({"subscription_id": 300})
n = request.subscribe_packet(B, 2, b"a", 2, p, len(B))
eq("subscribe v5 sub id", hx(n), "82 0a 0002 03 0bac02 0001 61 02")
n = request.subscribe_packet(B, 2, b"a/#", -1, None, len(B))
eq("unsubscribe v4", hx(n), "a2 07 0002 0003 612f23")
n = request.subscribe_packet(B, 2, b"a", -1, b"", len(B))
eq("unsubscribe v5", hx(n), "a2 06 0002 00 0001 61")
# DISCONNECT as link.disconnect() writes it, through a stand-in transport.
from durable_mqtt import MQTTClient
class Net:
    sock = None
    def write(self, buf, off, n, timeout_ms):
        wire.append(binascii.hexlify(bytes(buf[off:off + n])).decode())
    def close(self):
        pass
    def wait(self, ms):                     # after DISCONNECT the broker closes its side
        return True
    def read_into(self, buf, n):
        raise OSError(-5, "the broker closed the connection")
for v, expiry, want in ((4, None, "e000"), (5, None, "e000"), (5, 0, "e0070005" "1100000000")):
    wire = []
    c = MQTTClient("a", "h", version=v, clean_session=False)
    k = c.connection()
    k.net = Net()
    k.connected = True
    c.disconnect(expiry)
    eq("disconnect v%d %s" % (v, expiry), wire[0], want)
""")


def test_decoders():
    check("""
box = codec.Box()
body = bytes.fromhex("0b" "210004" "2401" "1200036162 63".replace(" ", ""))
d = props.decode(body, 0, len(body), props.CONNACK)
assert d == {"receive_maximum": 4, "maximum_qos": 1, "assigned_client_id": "abc"}, d
body = bytes.fromhex("0003612f62" "0009" "05" "020000003c" "6869")
codec.parse_publish(body, len(body), 0x02 | 0x08, True, box)
assert (box.qos, box.pid, box.topic_len, box.payload_off, box.payload_len) == (1, 9, 3, 13, 2)
assert props.check(body, box.props_off, len(body), props.PUBLISH, box) == 13 and box.expiry == 60
assert props.decode(body, box.props_off, box.payload_off, props.PUBLISH) == {"message_expiry": 60}
# User properties repeat and keep their order.
p = props.encode({"user_property": [("k", "v"), ("k", "w")]})
d = props.decode(bytes((len(p),)) + p, 0, len(p) + 1, props.ACK)
assert d["user_property"] == [("k", "v"), ("k", "w")], d
print("ok decoders")
""")


# ---------------------------------------------------------------- statements
# One test per MQTT 3.1.1 / 5.0 statement the codec (and the argument checks
# beside it) implements, named after it; no broker.

REFUSED = r"""
from durable_mqtt import ProtocolError, MQTTClient
def refused(f, *a):
    try:
        f(*a)
    except (ProtocolError, ValueError) as x:
        return x
    raise AssertionError("accepted %r" % (a,))
def name(t):
    return codec.check_utf8(t, 0, len(t), True)
def incoming(topic, v5=False, flags=0):
    # A PUBLISH body as a broker sends it (QoS 0; MQTT 5: no properties).
    body = bytes((len(topic) >> 8, len(topic) & 255)) + topic + (b"\x00" if v5 else b"") + b"m"
    codec.parse_publish(body, len(body), flags, v5, codec.Box())
def block(*props):
    # A property block with its length, from (identifier, value bytes).
    b = b"".join(bytes((i,)) + v for i, v in props)
    return bytes((len(b),)) + b
def s16(x):
    return bytes((len(x) >> 8, len(x) & 255)) + x
def props_ok(where, *items):
    # A property block of (identifier, value bytes) that props.check() takes whole.
    b = block(*items)
    assert props.check(b, 0, len(b), where, codec.Box()) == len(b), items
def props_refused(where, *items):
    b = block(*items)
    return refused(props.check, b, 0, len(b), where, codec.Box())
offline = MQTTClient("a", "h")
"""


def test_MQTT_4_7_3_1_topic_name_has_at_least_one_character():
    # MQTT-4.7.3-1: a Topic Name is at least one character long: refused
    # in an incoming PUBLISH (3.1.1; 5.0 allows it only with a Topic Alias,
    # which this client never allows) and by publish().
    check(REFUSED + r"""
refused(name, b"")
refused(incoming, b"")
refused(offline.publish, "", b"m")
refused(offline.publish, b"", b"m")
name(b"a")
print("ok")
""")


def test_MQTT_4_7_3_3_topic_names_and_filters_are_65535_bytes_at_most():
    # MQTT-4.7.3-3 (3.1.1 and 5.0): a Topic Name or Topic Filter encodes to
    # 65535 bytes at most, its two-byte length's range. A longer one went
    # out with its length cut to 16 bits (65536 bytes as 0): a malformed
    # packet, and a QoS 1/2 one stored and resent, refused, at every
    # connect. publish(), the will, subscribe() and unsubscribe() refuse it
    # with ValueError, whatever buf_size allows.
    check(REFUSED + r"""
ok = b"a" * 65535
long = b"a" * 65536
codec.topic_name(ok)
filters.check_filter(ok[:65530])     # (a filter: what the session's SUB record holds, 65530)
for f in (codec.topic_name, filters.check_filter):
    x = refused(f, long)
    assert isinstance(x, ValueError) and "MQTT-4.7.3-3" in str(x), x
x = refused(filters.check_filter, ok[:65531])
assert isinstance(x, ValueError) and "65530 at most" in str(x), x
big = MQTTClient("a", "h", buf_size=70000, outbox_bytes=140000)
for q in (0, 1):
    x = refused(big.publish, long, b"m", False, q)
    assert isinstance(x, ValueError) and "MQTT-4.7.3-3" in str(x), x
assert big.engine.held == 0 and big.engine.count == 0       # nothing queued
print("ok")
""")


def test_MQTT_3_3_2_2_no_wildcards_in_a_topic_name():
    # MQTT-3.3.2-2: the Topic Name in a PUBLISH has no wildcard characters:
    # refused coming in, and by publish() whatever the topic's type.
    check(REFUSED + r"""
for t in (b"a/+", b"#", b"a/#", b"+/b"):
    refused(name, t)
    refused(incoming, t)
    refused(incoming, t, True)
    for arg in (t.decode(), t, bytearray(t), memoryview(t)):
        x = refused(offline.publish, arg, b"m")
        assert "MQTT-3.3.2-2" in str(x), x
assert offline.publish(memoryview(b"a/b"), b"m") is None     # QoS 0 offline: queued
print("ok")
""")


def test_MQTT_1_5_3_1_ill_formed_utf8_is_refused():
    # MQTT-1.5.3-1: ill-formed UTF-8 (overlong forms, UTF-16 surrogates,
    # code points past U+10FFFF, stray continuation bytes, a sequence cut
    # short) is a malformed packet. Well-formed multi-byte text passes.
    check(REFUSED + r"""
ok = ["a", "a/b/c", "\u00e9t\u00e9", "\u20ac/\U0001F600", "x" * 300]
bad = [b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80", b"a\xbf",
       b"\xe2\x82", b"\xf8\x88\x80\x80\x80", b"\xc3"]
for t in ok:
    name(t.encode())
    incoming(t.encode())
for t in bad:
    refused(name, t)
    refused(incoming, t)
    refused(codec.check_utf8, t, 0, len(t), False)     # any UTF-8 string, not only names
    for arg in (t, bytearray(t), memoryview(t)):         # going out
        x = refused(offline.publish, arg, b"m", False, 1)
        assert isinstance(x, ValueError) and "MQTT-1.5.3-1" in str(x), x
    assert isinstance(refused(filters.check_filter, t), ValueError)
x = refused(offline.publish, "\ud800", b"m", False, 1)    # a surrogate in a str
assert isinstance(x, ValueError), x
assert offline.pending() == 0
for t in ok:
    assert offline.publish(t, b"m", False, 1) and offline.publish(t.encode(), b"m", False, 1)
print("ok", len(ok), len(bad))
""")


def test_MQTT_1_5_3_2_no_null_character():
    # MQTT-1.5.3-2: a UTF-8 string holds no U+0000, in a Topic Name or any
    # other string field.
    check(REFUSED + r"""
for t in (b"a\x00b", b"\x00"):
    refused(name, t)
    refused(incoming, t)
    refused(codec.check_utf8, t, 0, len(t), False)
    # going out: publish() whatever the topic's type, the will, a filter
    # (a broker closes the connection over it, and a stored message with
    # such a topic would be refused at every connect)
    for arg in (t.decode(), t, bytearray(t), memoryview(t)):
        x = refused(offline.publish, arg, b"m", False, 1)
        assert isinstance(x, ValueError) and "MQTT-1.5.3-2" in str(x), x
        assert isinstance(refused(offline.set_last_will, arg, b"m"), ValueError)
        assert isinstance(refused(filters.check_filter, t), ValueError)
assert offline.pending() == 0
print("ok")
""")


def test_MQTT_3_1_3_11_will_topic_is_a_topic_name():
    # MQTT-3.1.3-11: the Will Topic is a UTF-8 string; as the broker
    # publishes it, a Topic Name: no wildcards, not empty.
    check(REFUSED + r"""
for t in ("a/+", "#", b"a\xff", "a\x00"):
    assert isinstance(refused(offline.set_last_will, t, b"gone"), ValueError), t
offline.set_last_will("dev/1/status", b"gone")
print("ok")
""")


def test_MQTT_4_7_1_2_and_4_7_1_3_wildcards_fill_whole_levels_in_a_filter():
    # MQTT-4.7.1-2: "#" alone or after "/", and last; MQTT-4.7.1-3: "+"
    # fills a whole level. subscribe() and unsubscribe() refuse other
    # filters with ValueError before anything is sent.
    check(REFUSED + r"""
for f in (b"#", b"a/#", b"+", b"+/b", b"a/+", b"a/+/c", b"+/+/#", b"/#", b"$share/g/a/+", b"a/b"):
    filters.check_filter(f)
for f in (b"a#", b"a/#/b", b"#/", b"a+", b"+a", b"a/b+", b"a/++", b"", b"##"):
    x = refused(filters.check_filter, f)
    assert isinstance(x, ValueError), (f, x)
print("ok")
""")


def test_MQTT_1_5_4_1_ill_formed_string_in_a_property_is_malformed():
    # 5.0 MQTT-1.5.4-1 (UTF-8 strings in properties): a Content Type or a
    # Reason String that is not well-formed UTF-8 is a malformed packet.
    check(REFUSED + r"""
for bad in (b"\xc0\xaf", b"a\x00"):
    props_refused(props.PUBLISH, (0x03, s16(bad)))
    props_refused(props.ACK, (0x1F, s16(bad)))
props_ok(props.PUBLISH, (0x03, s16(b"text/plain")))
print("ok")
""")


def test_MQTT_1_5_5_1_variable_byte_integer_is_minimal():
    # MQTT-1.5.5-1: a Variable Byte Integer uses the fewest bytes: 0x80 0x00
    # for 0 is malformed as a Remaining Length and as a property length.
    check(REFUSED + r"""
refused(codec.remaining_length, b"\x30\x80\x00", 0, 3)
assert codec.remaining_length(b"\x30\x80\x01", 0, 3) == 128
box = codec.Box()
refused(codec.get_varint, b"\x80\x00", 0, 2, box)
assert codec.get_varint(b"\x80\x01", 0, 2, box) == 2 and box.value == 128
body = b"\x00\x01t\x80\x00m"                  # MQTT 5 PUBLISH, property length 0 in 2 bytes
refused(codec.parse_publish, body, len(body), 0, True, box)
print("ok")
""")


def test_MQTT_3_3_1_4_publish_with_qos_3_is_malformed():
    # MQTT-3.3.1-4: a PUBLISH with both QoS bits set is malformed; so is an
    # incoming QoS 0 PUBLISH with DUP set (MQTT-3.3.1-2).
    check(REFUSED + r"""
for flags in (0x06, 0x07, 0x0E, 0x08, 0x09):
    x = refused(incoming, b"t", False, flags)
    assert "MQTT-3.3.1-" in str(x), x
incoming(b"t", False, 0x01)                         # retained QoS 0: fine
print("ok")
""")


def test_MQTT_2_3_1_1_an_incoming_qos12_publish_with_packet_id_0_is_malformed():
    # 3.1.1 MQTT-2.3.1-1 (5.0 MQTT-2.2.1-3): a QoS 1/2 PUBLISH carries a
    # non-zero packet id. One with id 0 is refused before anything of it is
    # used; id 1 and id 65535 are taken, and both protocol versions agree.
    check(REFUSED + r"""
for v5 in (False, True):
    for qos in (1, 2):
        def body(pid):
            return b"\x00\x01t" + bytes((pid >> 8, pid & 255)) + (b"\x00" if v5 else b"") + b"m"
        b = body(0)
        x = refused(codec.parse_publish, b, len(b), qos << 1, v5, codec.Box())
        assert "MQTT-2.3.1-1" in str(x), x
        for pid in (1, 65535):
            box = codec.Box()
            b = body(pid)
            codec.parse_publish(b, len(b), qos << 1, v5, box)
            assert (box.pid, box.qos, box.payload_len) == (pid, qos, 1), (pid, box.pid, box.qos)
print("ok")
""")


def test_MQTT_3_8_1_1_and_3_10_1_1_subscribe_and_unsubscribe_flags_are_0010():
    # MQTT-3.8.1-1 / 3.10.1-1: SUBSCRIBE and UNSUBSCRIBE carry the fixed
    # header flags 0,0,1,0 (first bytes 0x82 and 0xA2), both versions.
    check(r"""
for pr in (None, b""):
    request.subscribe_packet(B, 1, b"a", 1, pr, len(B))
    assert B[0] == 0x82, B[0]
    request.subscribe_packet(B, 1, b"a", -1, pr, len(B))
    assert B[0] == 0xA2, B[0]
print("ok")
""")


def test_MQTT_3_3_2_14_response_topic_is_a_topic_name():
    # 5.0 MQTT-3.3.2-14: a Response Topic is a Topic Name: no wildcards.
    check(REFUSED + r"""
for bad in (b"a/+", b"#"):
    props_refused(props.PUBLISH, (0x08, s16(bad)))
props_ok(props.PUBLISH, (0x08, s16(b"reply/to/me")))
print("ok")
""")


def test_MQTT_3_14_2_2_session_expiry_in_a_broker_disconnect_is_malformed():
    # 5.0 MQTT-3.14.2-2: the Server must not send a Session Expiry Interval
    # in DISCONNECT: one that does sent a malformed packet. CONNACK may.
    check(REFUSED + r"""
expiry = (0x11, b"\x00\x00\x00\x3c")
props_refused(props.DISCONNECT, expiry)
b = block(expiry)
assert props.decode(b, 0, len(b), props.CONNACK) == {"session_expiry": 60}
props_ok(props.DISCONNECT, (0x1F, s16(b"bye")))
print("ok")
""")


def test_MQTT_3_3_2_7_no_topic_alias_in_publish_props():
    # 5.0 MQTT-3.3.2-7: a Topic Alias belongs to one network connection; an
    # accepted message outlives it (it is resent on the next), so publish()
    # refuses props with a Topic Alias.
    check(REFUSED + r"""
c = MQTTClient("a", "h", version=5)
x = refused(c.publish, "t", b"m", False, 1, {"topic_alias": 1})
assert "alias" in str(x), x
assert c.pending() == 0
assert c.publish("t", b"m", False, 1, {"message_expiry": 5}) == 1
print("ok")
""")


def test_MQTT_3_1_2_22_password_needs_a_user_name_in_3_1_1():
    # 3.1.1 MQTT-3.1.2-22: no Password without a User Name; 5.0 allows it.
    check(REFUSED + r"""
x = refused(MQTTClient, "a", "h", 0, None, "secret")
assert "MQTT-3.1.2-22" in str(x), x
MQTTClient("a", "h", 0, None, "secret", version=5)
MQTTClient("a", "h", 0, "user", "secret")
print("ok")
""")


def test_session_expiry_0_of_the_connect_is_not_extended_on_disconnect():
    # MQTT 5, 3.14.2.2.2: a session connected with Session Expiry 0 cannot be
    # given one on DISCONNECT (the CONNECT's value counts, whatever the
    # CONNACK said): disconnect(expiry) refuses before sending; so does a
    # value out of range, or a disconnect(expiry) without the connection
    # (the broker, told nothing, would keep its half).
    check(REFUSED + r"""
wire = []
class Net:
    sock = None
    def write(self, buf, off, n, timeout_ms):
        wire.append(bytes(buf[off:off + n]))
    def close(self):
        pass
    def wait(self, ms):                     # after DISCONNECT the broker closes its side
        return True
    def read_into(self, buf, n):
        raise OSError(-5, "the broker closed the connection")
c = MQTTClient("a", "h", version=5)          # clean, no session_expiry: expiry 0
k = c.connection()
k.net = Net()
k.connected = True
x = refused(c.disconnect, 60)
assert "3.14.2.2.2" in str(x) and wire == [], (x, wire)
c.sent_expiry = 3600                         # CONNECT 3600, CONNACK 0: extending is legal
c.engine.expiry = 0
for bad in (-5, 2 ** 32):
    refused(c.disconnect, bad)
assert wire == [], wire
c.disconnect(0)                              # 0: allowed
assert wire[0][0] == 0xE0, wire
print("ok")
""")


def test_MQTT_3_1_3_7_an_empty_client_id_needs_a_clean_session_in_3_1_1():
    # 3.1.1 MQTT-3.1.3-7: a zero-length ClientId needs CleanSession 1 (the
    # broker would refuse it); MQTT 5 allows it, the broker assigns one.
    check(REFUSED + r'''
assert isinstance(refused(lambda: MQTTClient("", "h", clean_session=False)), ValueError)
c = MQTTClient("", "h")
# ... and so does connect(clean_session=False) or connect_fresh() (its
# second leg), before anything is sent (the CONNECT went out, refused).
assert isinstance(refused(c.connect, False), ValueError)
assert isinstance(refused(c.connect_fresh), ValueError)
MQTTClient("", "h", version=5, clean_session=False, session_expiry=60)
print("ok")
''')


def test_MQTT_3_3_4_6_no_subscription_identifier_in_a_publish_and_utf8_payloads():
    # 5.0 MQTT-3.3.4-6: a client's PUBLISH carries no Subscription
    # Identifier; Payload Format Indicator 1 says the payload is well-formed
    # UTF-8 (3.3.2.3.2): both refused by publish() with ValueError, nothing
    # queued. A sub_id out of the Variable Byte Integer's range is refused.
    check(REFUSED + r'''
c = MQTTClient("a", "h", version=5)
assert isinstance(refused(c.publish, "t", b"m", False, 1, {"subscription_id": 7}), ValueError)
assert isinstance(refused(c.publish, "t", b"\xff\xfe", False, 1, {"payload_format": 1}), ValueError)
assert c.pending() == 0
assert c.publish("t", "h\u00e9llo\x00".encode(), False, 1, {"payload_format": 1}) == 1
for bad in (-1, 2 ** 28):
    assert isinstance(refused(lambda: c.subscription("t", 1, sub_id=bad)), ValueError)
print("ok")
''')
