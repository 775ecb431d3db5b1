"""Golden bytes for every packet the client sends, both protocol versions,
hand-checked against the MQTT 3.1.1 and 5.0 specifications (sections named
beside each vector), and decoder round trips. Runs in the unix port."""
from conftest import run_mp

PRELUDE = r"""
from durable_mqtt import codec, props, connect, request
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
n = connect.connect_packet(B, b"a", False, 60, True, None, None, None, b"")
eq("connect v4", hx(n), "10 0d 0004 4d515454 04 02 003c 0001 61")
""")


def test_connect_v4_will_user_password():
    # Flags: user 0x80, password 0x40, will retain 0x20, will QoS 1 0x08, will 0x04; clean 0.
    # Payload order (3.1.3): client id, will topic, will message, user name, password.
    check("""
n = connect.connect_packet(B, b"id", False, 10, False, b"u", b"pw", (b"w", b"bye", True, 1, b""), b"")
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
n = connect.connect_packet(B, b"a", True, 60, True, None, None, None, p)
eq("connect v5", hx(n), "10 16 0004 4d515454 05 02 003c 08 210008 2700000400 0001 61")
n = connect.connect_packet(B, b"a", True, 0, False, None, None, (b"w", b"", False, 0, b""), b"")
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
n = request.subscribe_packet(B, 1, b"a/#", 1, None)
eq("subscribe v4", hx(n), "82 08 0001 0003 612f23 01")
n = request.subscribe_packet(B, 1, b"a", 0x05, b"")
eq("subscribe v5 no-local", hx(n), "82 07 0001 00 0001 61 05")
p = props.encode({"subscription_id": 300})
n = request.subscribe_packet(B, 2, b"a", 2, p)
eq("subscribe v5 sub id", hx(n), "82 0a 0002 03 0bac02 0001 61 02")
n = request.subscribe_packet(B, 2, b"a/#", -1, None)
eq("unsubscribe v4", hx(n), "a2 07 0002 0003 612f23")
n = request.subscribe_packet(B, 2, b"a", -1, b"")
eq("unsubscribe v5", hx(n), "a2 06 0002 00 0001 61")
# DISCONNECT as link.disconnect() writes it, through a stand-in transport.
from durable_mqtt import MQTTClient
class Net:
    sock = None
    def write(self, buf, off, n, timeout_ms):
        wire.append(binascii.hexlify(bytes(buf[off:off + n])).decode())
    def close(self):
        pass
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


def test_topic_names_the_codec_refuses():
    # MQTT-4.7.3-1 (empty), MQTT-3.3.2-2 (wildcards), MQTT-1.5.3-1 (ill-formed
    # UTF-8: overlong, surrogate, past U+10FFFF, stray continuation, cut
    # short), MQTT-1.5.3-2 (U+0000). Well-formed multi-byte names pass.
    check(r'''
from durable_mqtt import ProtocolError
ok = ["a", "a/b/c", "\u00e9t\u00e9", "\u20ac/\U0001F600", "x" * 300]
bad = [b"", b"a/+", b"#", b"a\x00b", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
       b"\x80", b"a\xbf", b"\xe2\x82", b"\xf8\x88\x80\x80\x80", b"\xc3"]
for t in ok:
    t = t.encode()
    codec.check_utf8(t, 0, len(t), True)
for t in bad:
    try:
        codec.check_utf8(t, 0, len(t), True)
        raise AssertionError("accepted %r" % t)
    except ProtocolError:
        pass
print("ok topics", len(ok), len(bad))
''')
