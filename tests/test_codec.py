"""Golden bytes for every packet the client sends, both protocol versions,
hand-checked against the MQTT 3.1.1 and 5.0 specifications (sections named
beside each vector), and decoder round trips. Runs in the unix port."""
from conftest import run_mp

PRELUDE = r"""
from durable_mqtt import codec
import binascii
B = bytearray(300000)
def hx(n, start=0):
    return binascii.hexlify(B[start:n]).decode()
def eq(name, got, want):
    want = want.replace(" ", "")
    if got != want:
        raise AssertionError("%s:\n got  %s\n want %s" % (name, got, want))
    print("ok", name)
"""


def check(body):
    r = run_mp(PRELUDE + body)
    assert "ok" in r.stdout


def test_connect_v4_minimal():
    # 3.1.2: protocol name "MQTT", level 4, flags CleanSession (0x02), keepalive 60.
    check("""
n = codec.encode_connect(B, b"a", version=4, keepalive=60, clean=True)
eq("connect v4", hx(n), "10 0d 0004 4d515454 04 02 003c 0001 61")
""")


def test_connect_v4_will_user_password():
    # Flags: user 0x80, password 0x40, will retain 0x20, will QoS 1 0x08, will 0x04; clean 0.
    # Payload order (3.1.3): client id, will topic, will message, user name, password.
    check("""
n = codec.encode_connect(B, b"id", version=4, keepalive=10, clean=False, user=b"u", password=b"pw",
                         will_topic=b"w", will_msg=b"bye", will_qos=1, will_retain=True)
eq("connect v4 full", hx(n),
   "10 1d 0004 4d515454 04 ec 000a 0002 6964 0001 77 0003 627965 0001 75 0002 7077")
""")


def test_connect_v5_with_properties():
    # 3.1.2.11: property length 8: Receive Maximum (0x21) 8, Maximum Packet Size (0x27) 1024.
    # Will properties (3.1.3.2) come before the will topic; empty here.
    check("""
props = bytes.fromhex("210008" "2700000400")
n = codec.encode_connect(B, b"a", version=5, keepalive=60, clean=True, props=props)
eq("connect v5", hx(n), "10 16 0004 4d515454 05 02 003c 08 210008 2700000400 0001 61")
n = codec.encode_connect(B, b"a", version=5, keepalive=0, clean=False, will_topic=b"w", will_msg=b"",
                         props=b"")
eq("connect v5 will", hx(n), "10 14 0004 4d515454 05 04 0000 00 0001 61 00 0001 77 0000")
""")


def test_publish_v4():
    # 3.3.1: first byte 0x30 | DUP 0x08 | QoS<<1 | RETAIN; 3.3.2: topic, packet id (QoS>0).
    check("""
n = codec.encode_publish(B, 0, b"a/b", 3, b"hi", 2, 0, False, 0, 0, None, 0, 4)
eq("publish q0", hx(n), "30 07 0003 612f62 6869")
n = codec.encode_publish(B, 0, "a/b", 3, "hi", 2, 1, True, 1, 10, None, 0, 4)
eq("publish q1 dup retain (str args)", hx(n), "3b 09 0003 612f62 000a 6869")
n = codec.encode_publish(B, 0, b"t", 1, b"", 0, 2, False, 0, 65535, None, 0, 4)
eq("publish q2 empty payload", hx(n), "34 05 0001 74 ffff")
""")


def test_publish_v5():
    # 3.3.2.3: property length after the packet id; Message Expiry (0x02) 60 s.
    check("""
n = codec.encode_publish(B, 0, b"a", 1, b"x", 1, 1, False, 0, 1, None, 0, 5)
eq("publish v5 no props", hx(n), "32 07 0001 61 0001 00 78")
p = codec.encode_props({"message_expiry": 60})
eq("props", binascii.hexlify(p).decode(), "020000003c")
n = codec.encode_publish(B, 0, b"a", 1, b"x", 1, 0, False, 0, 0, p, len(p), 5)
eq("publish v5 expiry", hx(n), "30 0a 0001 61 05 020000003c 78")
""")


def test_remaining_length_boundaries():
    # 2.2.3: 127 -> 7f; 128 -> 80 01; 16383 -> ff 7f; 16384 -> 80 80 01; 2097152 -> 80 80 80 01.
    check("""
for rl, want in ((127, "7f"), (128, "8001"), (16383, "ff7f"), (16384, "808001"),
                 (2097151, "ffff7f"), (2097152, "80808001"), (268435455, "ffffff7f")):
    n = codec.put_varint(B, 0, rl)
    eq("varint %d" % rl, hx(n), want)
    assert codec.varint_size(rl) == n
# A PUBLISH whose remaining length is exactly 127 and 128.
for rl, hdr in ((127, "307f"), (128, "308001")):
    pl = rl - 2 - 1
    n = codec.encode_publish(B, 0, b"t", 1, bytes(pl), pl, 0, False, 0, 0, None, 0, 4)
    eq("publish rl %d header" % rl, hx(len(hdr) // 2), hdr)
    assert n == len(hdr) // 2 + rl
""")


def test_acks_both_versions():
    # 3.4-3.7: PUBACK 40, PUBREC 50, PUBREL 62 (flags 0010), PUBCOMP 70. MQTT 5 may
    # omit reason code 0 (3.4.2.1) and adds it otherwise.
    check("""
for kind, first in ((codec.PUBACK, "40"), (codec.PUBREC, "50"), (codec.PUBREL, "62"), (codec.PUBCOMP, "70")):
    n = codec.encode_ack(B, 0, kind, 0x1234, 0, 4)
    eq("ack v4 %s" % first, hx(n), first + "02 1234")
    n = codec.encode_ack(B, 0, kind, 0x1234, 0, 5)
    eq("ack v5 %s" % first, hx(n), first + "02 1234")
n = codec.encode_ack(B, 0, codec.PUBREL, 7, 0x92, 5)
eq("pubrel v5 not found", hx(n), "62 03 0007 92")
""")


def test_subscribe_unsubscribe_ping_disconnect():
    # 3.8: SUBSCRIBE 82, pid, [props], filter, options. 3.10: UNSUBSCRIBE a2.
    # 3.12 PINGREQ c0 00. 3.14 DISCONNECT e0 00; v5 with reason 0 and
    # Session Expiry (0x11) property.
    check("""
n = codec.encode_subscribe(B, 1, [(b"a/#", 1)], 4)
eq("subscribe v4", hx(n), "82 08 0001 0003 612f23 01")
n = codec.encode_subscribe(B, 1, [(b"a", 0x05)], 5)
eq("subscribe v5 no-local", hx(n), "82 07 0001 00 0001 61 05")
p = codec.encode_props({codec.P_SUBSCRIPTION_ID: 300})
n = codec.encode_subscribe(B, 2, [(b"a", 2)], 5, p)
eq("subscribe v5 sub id", hx(n), "82 0a 0002 03 0bac02 0001 61 02")
n = codec.encode_unsubscribe(B, 2, [b"a/#"], 4)
eq("unsubscribe v4", hx(n), "a2 07 0002 0003 612f23")
n = codec.encode_unsubscribe(B, 2, [b"a"], 5)
eq("unsubscribe v5", hx(n), "a2 06 0002 00 0001 61")
n = codec.encode_pingreq(B, 0)
eq("pingreq", hx(n), "c0 00")
n = codec.encode_disconnect(B, 4)
eq("disconnect v4", hx(n), "e0 00")
n = codec.encode_disconnect(B, 5, 0, 0)
eq("disconnect v5 expiry 0", hx(n), "e0 07 00 05 1100000000")
""")


def test_decoders():
    check("""
sp, code, props = codec.parse_connack(bytes.fromhex("0100"), 2, 4)
assert sp is True and code == 0 and props is None
sp, code, props = codec.parse_connack(bytes.fromhex("0005"), 2, 4)
assert not sp and code == 5
body = bytes.fromhex("0000" "0b" "210004" "2401" "1200036162 63".replace(" ", ""))
sp, code, props = codec.parse_connack(body, len(body), 5)
assert props == {"receive_maximum": 4, "maximum_qos": 1, "assigned_client_id": "abc"}, props
inc = codec.Incoming()
body = bytes.fromhex("0003612f62" "0009" "05" "020000003c" "6869")
codec.parse_publish(body, len(body), 0x02 | 0x08, 5, inc)
assert (inc.qos, inc.dup, inc.pid, inc.topic_len, inc.payload_off, inc.payload_len) == (1, 1, 9, 3, 13, 2)
d, end = codec.decode_props(body, inc.props_off, inc.payload_off)
assert d == {"message_expiry": 60} and end == 13
# User properties repeat and keep their order.
p = codec.encode_props({"user_property": [("k", "v"), ("k", "w")]})
d, _ = codec.decode_props(bytes((len(p),)) + p, 0, len(p) + 1)
assert d["user_property"] == [(b"k", b"v"), (b"k", b"w")], d
print("ok decoders")
""")
