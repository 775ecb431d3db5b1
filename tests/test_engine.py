"""The session engine (lib/durable_mqtt/session.py) on its own: no broker,
no socket, no store, no clock. Each test feeds it the events a broker
would cause and checks what it returns: bytes to send, records to keep,
messages that left, deliveries. One test per MQTT 3.1.1 / 5.0 statement
about the client that the engine implements, named after it.

The engine runs in the MicroPython unix port, as on a board."""

import os

import pytest

from conftest import run_mp

PRELUDE = r"""
from durable_mqtt.session import Session
from durable_mqtt import subs
from durable_mqtt.errors import ProtocolError, SessionError, QueueFull
tx = bytearray(64)
PUBACK, PUBREC, PUBREL, PUBCOMP = 0x40, 0x50, 0x62, 0x70

def engine(v5=False, slots=12, qos12=8, arena=2048, rx2=4, window=4, max_out=256):
    return Session(v5, b"dev", slots, qos12, arena, rx2, window, max_out)

def pub(e, qos, payload=b"m", topic=b"t", now=0, ttl=0, retain=0):
    pid = e.accept(topic, payload, qos, retain, b"" if e.v5 else None, now, ttl)
    e.rec = 0
    return pid

def out(e, now=0):
    # Everything the engine lets out now, as (first byte, pid or None, dup).
    sent = []
    while True:
        n = e.next_out(now, tx)
        if n == 0:
            return sent
        if n < 0:
            sent.append(("left", e.done_pid, e.done_reason))
            e.done_pid = 0
            continue
        b = e.src
        o = e.src_off
        first = b[o]
        if first & 0xF0 == 0x30:
            tl = (b[o + 2] << 8) | b[o + 3]
            pid = (b[o + 4 + tl] << 8) | b[o + 5 + tl] if first & 6 else None
            sent.append(("PUBLISH", pid, bool(first & 8)))
        else:
            sent.append((hex(first), (b[o + 2] << 8) | b[o + 3], None))

def raises(exc, f, *a):
    try:
        f(*a)
    except exc as x:
        return x
    raise AssertionError("no %s" % exc.__name__)
"""


def run(body):
    r = run_mp(PRELUDE + body + '\nprint("OK")\n')
    assert r.stdout.strip().endswith("OK"), r.stdout


# ---------------------------------------------------------------- packet ids

def test_MQTT_2_2_1_3_new_packet_id_nonzero_unused_and_wraps():
    # 3.1.1 MQTT-2.2.1-3 / 5.0 MQTT-2.2.1-3: a new SUBSCRIBE, UNSUBSCRIBE or
    # QoS>0 PUBLISH gets a non-zero id currently unused; 65535 wraps to 1.
    run(r"""
e = engine()
e.last_pid = 65533
ids = [pub(e, 1) for _ in range(4)]
assert ids == [65534, 65535, 1, 2], ids
out(e)
e.puback(65535, 0)                 # 65534, 1, 2 still held
e.last_pid = 65533
assert pub(e, 1) == 65535          # freed: usable again
assert pub(e, 1) == 3              # 65534 (held) and 1, 2 (held) skipped
assert subs.request(e, 0x90) == 4        # SUBSCRIBE ids come from the same pool
assert pub(e, 2) == 5              # ... and are in use until their ack
""")


def test_MQTT_2_2_1_3_restored_ids_are_skipped_all_the_way_round():
    # Ids read back from flash (a PUBLISH and a PUBREL owed) stay in use:
    # fresh ids step over them now and after going round all 65535.
    run(r"""
from durable_mqtt.codec import put_publish
pkt = bytearray(9)
put_publish(pkt, 0, 0x32, 7, b"t", 7, None)
pkt[7:9] = b"hi"
e = engine(window=8)
e.stored(7, pkt)
e.stored(9, None)
e.last_pid = 5
assert [pub(e, 1) for _ in range(4)] == [6, 8, 10, 11]
sent = [x[1] for x in out(e)]
assert sent == [7, 9, 6, 8, 10, 11], sent     # in order: the restored ones first
for pid in (7, 6, 8, 10, 11):
    e.puback(pid, 0)               # the PUBREL for 9 stays owed
seen = 0
for _ in range(65540):
    pid = pub(e, 1)
    assert pid and pid != 9, pid
    out(e)
    e.puback(pid, 0)
    seen += pid == 7
assert seen == 1, seen             # round once: 7, free again, came back; 9 never
""")


def test_MQTT_2_2_1_3_an_abandoned_requests_id_stays_in_use_until_its_answer():
    # 5.0 MQTT-2.2.1-3 (3.1.1 MQTT-2.3.1-2, -3): an id is free again once
    # the acknowledgement is processed; a SUBSCRIBE sent whose wait was
    # abandoned (a timeout, a cancelled task) may still get its SUBACK, so
    # its id is not handed out again, even after the ids went round, until
    # that answer came or the connection ended. Before, a new SUBSCRIBE
    # could get the id and take the old one's late SUBACK for its own.
    run(r"""
e = engine()
a = subs.request(e, 0x90)
subs.abandon(e)                              # sent: its SUBACK may still come
e.last_pid = a - 1                       # as after 65535 more ids
b = subs.request(e, 0x90)
assert b != a, (a, b)
e.last_pid = a - 1
p = pub(e, 1)
assert p not in (a, b), (a, b, p)
assert subs.answer(e, 0x90, a) == (a, None, 0, 0)   # the late answer: not awaited, and a is free
assert subs.answer(e, 0x90, b) is True
e.last_pid = a - 1
assert pub(e, 1) == a
c = subs.request(e, 0xB0)
subs.abandon(e)
e.connected(True, False)                 # a new connection: no late answer comes
e.last_pid = c - 1
assert subs.request(e, 0x90) == c
subs.abandon(e, False)                         # never sent: free at once
e.last_pid = c - 1
assert subs.request(e, 0x90) == c
""")


def test_MQTT_2_2_1_3_a_publish_the_store_refused_takes_no_packet_id():
    # A QoS 1/2 publish whose record could not be stored (unaccept(): the
    # flash refused it) is not sent, so it assigned no id: the counter is
    # left exactly where it was, and the next id is the one the refused
    # publish never had taken. unaccept() set it to the refused id less 1:
    # where that id had skipped ids in use, the counter moved past them,
    # and an id freed there meanwhile was passed over (and a checkpoint
    # stored the moved counter).
    run(r"""
e = engine()
a = pub(e, 1)
b = pub(e, 1)
assert (a, b) == (1, 2)
e.last_pid = 65535                 # as after going round: 1 and 2 are still held
c = pub(e, 1)
assert c not in (a, b), c          # 1, 2 skipped
e.unaccept()
assert e.last_pid == 65535, e.last_pid
out(e)
e.puback(a, 0)                     # 1 free again
assert pub(e, 1) == 1              # the next id, as if the refused publish had never been
e.last_pid = 7                     # no id skipped: the counter back to 7 as well
d = pub(e, 1)
e.unaccept()
assert d == 8 and e.last_pid == 7 and pub(e, 1) == 8, (d, e.last_pid)
""")


def test_MQTT_2_2_1_2_qos0_publish_has_no_packet_id():
    # 5.0 MQTT-2.2.1-2 (3.1.1 MQTT-2.3.1-5): a QoS 0 PUBLISH carries no
    # packet id: topic "t", payload "m" is 2 + 3 + 1 bytes (3.1.1), with an
    # empty property block 2 + 4 + 1 (5.0). (MQTT-2.3.1-1 in 3.1.1 is the
    # non-zero id of the other packets: test_MQTT_2_2_1_3.)
    run(r"""
for v5, want in ((False, b"\x30\x04\x00\x01tm"), (True, b"\x30\x05\x00\x01t\x00m")):
    e = engine(v5=v5)
    assert pub(e, 0) == 0 and e.held == 0
    n = e.next_out(0, tx)
    assert bytes(e.src[e.src_off:e.src_off + n]) == want, bytes(e.src[e.src_off:e.src_off + n])
""")


# ---------------------------------------------------------------- sending QoS 1 / 2

def test_MQTT_4_3_2_1_qos1_held_until_puback():
    # The PUBLISH is unacknowledged until its PUBACK; then it leaves.
    run(r"""
e = engine()
pid = pub(e, 1)
assert e.rec == 0 and e.held == 1
assert out(e) == [("PUBLISH", pid, False)]
assert e.held == 1 and e.inflight == 1
e.puback(pid, 0)
assert e.done_pid == pid and e.done_reason == 0 and e.held == 0 and e.inflight == 0
""")


def test_accepting_a_qos12_message_asks_for_its_record_first():
    # Durability: accept() asks the front end to store OUT_PUB (type 2)
    # before anything is sent; QoS 0 asks for nothing.
    run(r"""
e = engine()
e.accept(b"t", b"x", 1, 0, None, 0, 0)
assert e.rec == 2 and e.pid[e.rec_slot] == 1
e.rec = 0
e.accept(b"t", b"x", 0, 0, None, 0, 0)
assert e.rec == 0
""")


def test_MQTT_4_3_3_1_qos2_sender_flow():
    # 3.1.1 MQTT-4.3.3-1 / 5.0 MQTT-4.3.3-1..-5: unacknowledged until PUBREC;
    # then PUBREL (stored first: OUT_REL, type 4), unacknowledged until PUBCOMP.
    run(r"""
e = engine()
pid = pub(e, 2)
assert out(e) == [("PUBLISH", pid, False)]
n = e.pubrec(pid, 0, tx)
assert e.rec == 4 and e.rec_pid == pid and tx[:n] == bytes((0x62, 2, 0, pid))
e.rec = 0
assert e.held == 1 and e.done_pid == 0
e.pubcomp(pid)
assert e.done_pid == pid and e.held == 0 and e.inflight == 0
""")


def test_MQTT_4_3_3_6_never_resend_publish_after_pubrel():
    # 5.0 MQTT-4.3.3-6 (3.1.1 MQTT-4.3.3-1): once the PUBREL was sent, the
    # PUBLISH is never sent again: a resume owes only the PUBREL.
    run(r"""
e = engine()
pid = pub(e, 2)
out(e)
e.pubrec(pid, 0, tx)
e.rec = 0
assert e.connected(True, False) == "resumed"
assert out(e) == [("0x62", pid, None)]
""")


def test_MQTT_3_3_1_1_dup_only_when_a_publish_goes_again():
    # 3.1.1 and 5.0 MQTT-3.3.1-1: DUP is 1 when the client attempts to
    # re-deliver a PUBLISH, 0 on the first attempt. A message re-queued
    # after the broker lost the session is a new PUBLISH: DUP 0 again.
    run(r"""
e = engine(window=8)
e.has_state = True
a = pub(e, 1)
b = pub(e, 2)
assert out(e) == [("PUBLISH", a, False), ("PUBLISH", b, False)]
assert e.connected(True, False) == "resumed"
assert out(e) == [("PUBLISH", a, True), ("PUBLISH", b, True)]
assert e.connected(True, False) == "resumed"           # a second resume: DUP still 1
assert out(e) == [("PUBLISH", a, True), ("PUBLISH", b, True)]
assert e.connected(False, False) == "lost"
assert out(e) == [("PUBLISH", a, False), ("PUBLISH", b, False)]
""")


def test_MQTT_3_3_1_2_qos0_is_never_sent_again_nor_with_dup():
    # MQTT-3.3.1-2: DUP is 0 in every QoS 0 PUBLISH. A QoS 0 message leaves
    # the outbox when written, so a resume has nothing of it to resend.
    run(r"""
e = engine()
e.has_state = True
pub(e, 0)
a = pub(e, 1)
pub(e, 0)
assert out(e) == [("PUBLISH", None, False), ("PUBLISH", a, False), ("PUBLISH", None, False)]
e.connected(True, False)
assert out(e) == [("PUBLISH", a, True)]
""")


def test_MQTT_4_4_0_1_resend_with_original_ids():
    # On resume (Session Present 1): every unacknowledged PUBLISH again with
    # DUP=1 (MQTT-3.3.1-1) and its original id, and the PUBRELs owed, in
    # the original order (MQTT-4.6.0-1).
    run(r"""
e = engine(window=8)
e.has_state = True
a = pub(e, 1, b"a")
b = pub(e, 2, b"b")
c = pub(e, 2, b"c")
d = pub(e, 1, b"d")
out(e)
e.pubrec(b, 0, tx)
e.rec = 0
assert e.connected(True, False) == "resumed"
got = out(e)
assert got == [("PUBLISH", a, True), ("PUBLISH", c, True), ("PUBLISH", d, True), ("0x62", b, None)], got
""")


def test_MQTT_4_6_0_4_pubrels_go_out_again_in_the_order_of_their_pubrecs():
    # MQTT-4.6.0-4: PUBRELs are sent in the order the PUBRECs came, after a
    # reconnect too: PUBREC c, then a, then b. (The PUBLISH resent keep
    # their own order, MQTT-4.6.0-1.) A full ring is compacted to make the
    # room a PUBREL moves into.
    run(r"""
e = engine(window=8)
e.has_state = True
a, b, c, q = pub(e, 2, b"a"), pub(e, 2, b"b"), pub(e, 2, b"c"), pub(e, 1, b"q")
out(e)
for r in (c, a, b):
    assert e.pubrec(r, 0, tx) == 4 and tx[:4] == bytes((0x62, 2, 0, r))   # at once, in this order
    e.rec = 0
assert e.connected(True, False) == "resumed"
got = out(e)
assert got == [("PUBLISH", q, True), ("0x62", c, None), ("0x62", a, None), ("0x62", b, None)], got
for r in (c, a, b):
    e.pubcomp(r)
    e.done_pid = 0
assert e.held == 1
f = engine(slots=3, qos12=3, window=3)
x, y, z = pub(f, 2), pub(f, 2), pub(f, 1)
out(f)
f.pubrec(y, 0, tx)
f.rec = 0
f.pubrec(x, 0, tx)
f.rec = 0
assert f.held == 3 and f.count == 3
f.connected(True, False)
got = out(f)
assert got == [("PUBLISH", z, True), ("0x62", y, None), ("0x62", x, None)], got
""")


def test_MQTT_4_4_0_1_no_resend_at_any_other_time():
    # 5.0: clients MUST NOT resend at any other time: sent messages stay sent
    # whatever else happens on the connection.
    run(r"""
e = engine()
a = pub(e, 1)
assert out(e) == [("PUBLISH", a, False)]
b = pub(e, 1)
assert out(e) == [("PUBLISH", b, False)]      # only the new one
e.puback(b, 0)
e.done_pid = 0
assert out(e) == []
""")


def test_MQTT_4_6_0_1_resend_order_is_the_original_order():
    run(r"""
e = engine(window=8)
e.has_state = True
ids = [pub(e, 1, bytes([65 + i])) for i in range(6)]
out(e)
e.puback(ids[2], 0)                 # acknowledged out of order: a hole
e.done_pid = 0
e.connected(True, False)
assert [p for _, p, _ in out(e)] == [ids[0], ids[1], ids[3], ids[4], ids[5]]
""")


def test_MQTT_4_6_0_4_pubrel_in_the_order_of_pubrec():
    run(r"""
e = engine(window=8)
a, b = pub(e, 2), pub(e, 2)
out(e)
assert e.pubrec(a, 0, tx) and tx[3] == a
assert e.pubrec(b, 0, tx) and tx[3] == b
""")


def test_MQTT_4_4_0_2_reason_0x80_or_more_ends_the_message():
    # 5.0: PUBACK or PUBREC with a reason >= 0x80: acknowledged, never resent.
    run(r"""
e = engine(v5=True)
e.has_state = True
a, b = pub(e, 1), pub(e, 2)
out(e)
e.puback(a, 0x87)
assert e.done_pid == a and e.done_reason == 0x87
e.done_pid = 0
assert e.pubrec(b, 0x97, tx) == 0 and e.done_pid == b and e.done_reason == 0x97 and e.rec == 0
assert e.held == 0 and e.inflight == 0
e.connected(True, False)
assert out(e) == []
""")


# ---------------------------------------------------------------- flow control

def test_MQTT_3_3_4_7_no_more_than_receive_maximum_in_flight():
    # 5.0 MQTT-3.3.4-7 / MQTT-4.9.0-2: at most Receive Maximum (or
    # max_inflight) unacknowledged QoS 1/2 PUBLISH; the rest wait in order.
    run(r"""
e = engine(v5=True, window=4)
e.limits(2, 0, 2, 1)                   # the broker's Receive Maximum
ids = [pub(e, 1) for _ in range(5)]
assert [p for _, p, _ in out(e)] == ids[:2]
e.puback(ids[0], 0)
e.done_pid = 0
assert [p for _, p, _ in out(e)] == ids[2:3]
e.limits(0, 0, 2, 1)                   # none given: max_inflight
e.puback(ids[1], 0)
e.done_pid = 0
assert [p for _, p, _ in out(e)] == ids[3:]
""")


def test_pending_out_says_whether_next_out_has_anything_to_look_at():
    # The link asks pending_out() before next_out() (which takes more
    # frame); it must be true whenever next_out() could return a packet.
    run(r"""
e = engine(window=1)
assert not e.pending_out()
a, b = pub(e, 1), pub(e, 2)
assert e.pending_out()
assert out(e) == [("PUBLISH", a, False)]
assert e.pending_out()                  # b waits behind the full window
e.puback(a, 0)
e.done_pid = 0
assert out(e) == [("PUBLISH", b, False)] and not e.pending_out()
e.pubrec(b, 0, tx)                      # the PUBREL goes back at once, in tx
e.rec = 0
assert not e.pending_out()
e.connected(True, False)                # a reconnect owes the PUBREL again
got = out(e)
assert got == [("0x62", b, None)] and not e.pending_out(), got
""")


def test_MQTT_3_3_4_8_pubrel_not_delayed_by_a_full_window():
    # 5.0 MQTT-3.3.4-8: only PUBLISH waits for quota; a PUBREL owed after a
    # reconnect goes out even when the window is full of PUBLISH.
    run(r"""
e = engine(v5=True, window=2)
e.has_state = True
a, b, r = pub(e, 1), pub(e, 1), pub(e, 2)
out(e)
e.puback(a, 0)
e.done_pid = 0
assert [p for _, p, _ in out(e)] == [r]
e.pubrec(r, 0, tx)
e.rec = 0
e.connected(True, False)
e.limits(1, 0, 2, 1)                   # the new connection allows one in flight
# r awaits its PUBCOMP and holds the one place: b waits, the PUBREL does not.
assert out(e) == [("0x62", r, None)]
e.pubcomp(r)
e.done_pid = 0
assert out(e) == [("PUBLISH", b, True)]
""")


def test_MQTT_4_9_0_3_everything_but_publish_goes_on_with_no_send_quota_left():
    # 5.0 MQTT-4.9.0-3: with the send quota at zero the client still
    # processes and answers every other packet: PUBREC gets its PUBREL,
    # PUBACK and PUBCOMP free quota, incoming QoS 1/2 PUBLISH and PUBREL are
    # acknowledged. Only the next QoS 1/2 PUBLISH waits (MQTT-4.9.0-2); a
    # QoS 0 one queued behind it waits with it, in order (the spec allows
    # either).
    run(r"""
e = engine(v5=True, window=4)
e.limits(2, 0, 2, 1)                     # Receive Maximum 2: the initial quota
a, b = pub(e, 1), pub(e, 2)
c = pub(e, 1)
pub(e, 0)
assert out(e) == [("PUBLISH", a, False), ("PUBLISH", b, False)]
assert e.inflight == e.window == 2 and out(e) == []      # quota 0: c waits
assert e.incoming(1, 40)
n = e.ack_incoming(1, 40, 0, tx)
assert tx[:n] == bytes((0x40, 2, 0, 40))
assert e.incoming(2, 41)
n = e.ack_incoming(2, 41, 0, tx)
assert tx[:n] == bytes((0x50, 2, 0, 41))
e.rec = 0
n = e.pubrel(41, tx)
assert tx[:n] == bytes((0x70, 2, 0, 41))
e.rec = 0
n = e.pubrec(b, 0, tx)                   # PUBREL at once, quota still 0
assert tx[:n] == bytes((0x62, 2, 0, b)) and e.inflight == 2
e.rec = 0
assert out(e) == []
e.pubcomp(b)                             # PUBCOMP gives one back
assert e.done_pid == b
e.done_pid = 0
assert out(e) == [("PUBLISH", c, False), ("PUBLISH", None, False)]
e.puback(a, 0)
e.puback(c, 0)
assert e.inflight == 0 and e.held == 0
""")


def test_MQTT_3_2_2_15_queued_message_over_maximum_packet_size_is_refused():
    # 5.0: never send a packet larger than the broker's Maximum Packet Size;
    # one queued before the limit was known leaves as refused (0x95).
    run(r"""
e = engine(v5=True)
big = pub(e, 1, b"x" * 100)
small = pub(e, 1, b"y")
e.limits(0, 50, 2, 1)
assert out(e) == [("left", big, 0x95), ("PUBLISH", small, False)]
""")


def test_MQTT_3_2_2_11_queued_message_above_maximum_qos_is_refused():
    run(r"""
e = engine(v5=True)
q2 = pub(e, 2)
q1 = pub(e, 1)
e.limits(0, 0, 1, 1)
assert out(e) == [("left", q2, 0x9B), ("PUBLISH", q1, False)]
""")


def test_MQTT_3_2_2_14_retained_message_refused_when_retain_unavailable():
    # 5.0: after Retain Available 0 the client sends no PUBLISH with RETAIN
    # 1; one queued before it was known leaves refused (0x9A).
    run(r"""
e = engine(v5=True)
r = pub(e, 1, retain=1)
n = pub(e, 1)
e.limits(0, 0, 2, 0)
assert out(e) == [("left", r, 0x9A), ("PUBLISH", n, False)]
""")


def test_MQTT_4_3_3_7_expiry_only_before_the_first_send():
    # 5.0 Message Expiry: a message that waited past it unsent is dropped
    # (reason -1); once a PUBLISH was sent, expiry no longer applies
    # (MQTT-4.3.3-7): a resume resends it whatever the time.
    run(r"""
e = engine(v5=True, window=1)
e.has_state = True
a = pub(e, 1, now=0, ttl=1)
b = pub(e, 1, now=0, ttl=1)
assert out(e, now=10) == [("PUBLISH", a, False)]
e.connected(True, False)
assert out(e, now=5000) == [("PUBLISH", a, True)]      # sent before: never expires
e.puback(a, 0)
e.done_pid = 0
assert out(e, now=5000) == [("left", b, -1)]           # waited 5 s > 1 s, never sent
""")


def test_MQTT_3_3_2_5_expired_message_is_dropped_unsent():
    # 5.0 MQTT-3.3.2-5 (applied to the client's own outbox): a message that
    # waited past its Message Expiry Interval before it could be sent is not
    # sent; a QoS 1/2 one leaves the session with reason -1 (reported), a
    # QoS 0 one too, with done_pid 0 (the front end counts it in
    # dropped_expired). One without expiry waits as long as it takes.
    run(r"""
e = engine(v5=True)
pub(e, 0, now=0, ttl=2)
a = pub(e, 1, now=0, ttl=2)
b = pub(e, 2, now=0, ttl=0)
c = pub(e, 1, now=0, ttl=3)
assert out(e, now=2500) == [("left", 0, -1), ("left", a, -1), ("PUBLISH", b, False), ("PUBLISH", c, False)]
assert e.held == 2
d = pub(e, 1, now=5000, ttl=2)
assert out(e, now=6999) == [("PUBLISH", d, False)]      # 1 ms before its expiry: sent
""")


def test_MQTT_3_3_2_3_3_the_expiry_sent_is_the_time_left():
    # 5.0 3.3.2.3.3: the Message Expiry Interval is the message's lifetime
    # (a broker forwards "the received value minus the time that the
    # message has been waiting", MQTT-3.3.2-6). The client sent the value
    # asked at publish() however long the message had waited in the
    # outbox: 60 s after 50 s queued, so it lived almost twice its
    # lifetime (a review found it). It now sends the whole seconds left,
    # at least 1, wherever the property sits in the block; QoS 0 too.
    run(r"""
from durable_mqtt import props
def sent_expiry(e, now):
    n = e.next_out(now, tx)
    assert n > 0, n
    b = bytes(e.src[e.src_off:e.src_off + n])
    blk = b[2 + 2 + b[3] + (2 if b[0] & 6 else 0):]
    return props.decode(blk, 0, len(blk), props.PUBLISH)["message_expiry"]
e = engine(v5=True)
for qos in (1, 0, 2):
    blk = props.encode({"content_type": "text/plain", "message_expiry": 60,
                        "user_property": [("k", "v")]})
    e.accept(b"t", b"m", qos, 0, blk, 1000, 60)
    e.rec = 0
    assert sent_expiry(e, 51000) == 10, qos               # 50 s in the outbox: 10 s left
e.accept(b"t", b"m", 1, 0, props.encode({"message_expiry": 2}), 0, 2)
e.rec = 0
assert sent_expiry(e, 1999) == 1                          # 1 ms left: 1 s, never 0
""")


# A board's tick arithmetic on the unix port: ticks_ms wraps at 2**30 ms and
# ticks_diff holds +-2**29 ms (6.2 days); session.py and props.py are
# imported again over it.
BOARD_TICKS = r"""
import sys
import time as _t
class T:
    P = 1 << 30
    def ticks_add(self, a, b):
        return (a + b) & (self.P - 1)
    def ticks_diff(self, a, b):
        return ((a - b + (self.P >> 1)) & (self.P - 1)) - (self.P >> 1)
t = T()
for k in ("ticks_ms", "sleep_ms", "time"):
    setattr(t, k, getattr(_t, k))
sys.modules["time"] = t
for m in ("durable_mqtt.session", "durable_mqtt.props"):
    sys.modules.pop(m, None)
from durable_mqtt.session import Session
from durable_mqtt import props
"""


def test_MQTT_3_3_2_5_expiry_is_found_after_a_week_offline_on_a_board():
    # A board's ticks_ms wraps at 2**30 ms, and ticks_diff holds +-2**29 ms
    # (6.2 days): a message with a 60 s expiry queued while the link was
    # down for 7 days looked unexpired and was sent (a review found it).
    # While down, the front ends call props.tick() (RobustClient.offline(), every
    # connect attempt): a passed deadline moves to now, so next_out() still
    # finds it passed days later. The board's tick arithmetic is emulated.
    run(BOARD_TICKS + r"""
def week(aged):
    e = Session(True, b"dev", 12, 8, 2048, 4, 4, 256)
    a = e.accept(b"t", b"a", 1, 0, b"", 0, 60)
    b = e.accept(b"t", b"b", 1, 0, b"", 0, 0)            # no expiry: waits as long as it takes
    e.rec = 0
    day = 86400 * 1000
    if aged:
        for d in range(1, 8):                            # the front end, while down
            props.tick(e, t.ticks_add(0, d * day))
    now = t.ticks_add(0, 7 * day)
    got = []
    while True:
        n = e.next_out(now, tx)
        if not n:
            return got
        got.append((e.done_pid, e.done_reason) if n < 0 else "sent")
        e.done_pid = 0
assert week(True) == [(1, -1), "sent"], week(True)
assert week(False) == ["sent", "sent"]                   # (without props.tick(): the wrap)
""")


def test_MQTT_3_3_2_5_a_message_sent_past_the_wrap_never_carries_more_than_its_interval():
    # The case test above leaves to the documentation: an MQTTClient left
    # without a call (no props.tick()) for longer than ticks_diff holds
    # (2**29 ms on a board) may send a message it should have dropped. Its
    # passed deadline then reads as one days ahead, and props.expiry()
    # wrote that into the PUBLISH: a 60 s message went out 7 days on with a
    # Message Expiry Interval of about 469,000 s, a lifetime 7,800 times
    # the one the application gave it (MQTT 5 3.3.2.3.3: the interval is
    # the message's lifetime). The time left is at most the interval it
    # carries. The board's tick arithmetic is emulated, as above.
    run(BOARD_TICKS + r"""
day = 86400 * 1000
for qos in (0, 1):
    for later, want in ((1000, 59), (7 * day, 60)):
        e = Session(True, b"dev", 12, 8, 2048, 4, 4, 256)
        e.accept(b"t", b"a", qos, 0, props.encode({"message_expiry": 60}), 0, 60)
        e.rec = 0
        n = e.next_out(t.ticks_add(0, later), tx)
        assert n > 0, n
        b = bytes(e.src[e.src_off:e.src_off + n])
        blk = b[2 + 2 + b[3] + (2 if qos else 0):]
        got = props.decode(blk, 0, len(blk), props.PUBLISH)["message_expiry"]
        assert got <= 60 and (got == want or later > day), (qos, later, got)
""")


# ---------------------------------------------------------------- Session Present

def test_MQTT_3_2_2_1_session_present_after_clean_start_is_an_error():
    # 3.1.1 MQTT-3.2.2-1 / 5.0 MQTT-3.2.2-2: a broker must answer a clean
    # start with Session Present 0; 1 is a protocol error.
    run(r"""
e = engine()
x = raises(ProtocolError, e.connected, True, True)
assert "MQTT-3.2.2-1" in x.args[1]
""")


def test_MQTT_3_2_2_4_session_present_without_local_state_closes():
    # 5.0: a client without Session State that gets Session Present 1 MUST
    # close the connection (SessionError); 3.1.1 has no such rule.
    run(r"""
e = engine(v5=True)
x = raises(SessionError, e.connected, True, False)
assert "MQTT-3.2.2-4" in x.args[1]
assert engine(v5=False).connected(True, False) == "resumed"
""")


def test_MQTT_3_2_2_5_session_present_0_discards_session_state():
    # 5.0 MQTT-3.2.2-5 (3.1.1 MQTT-3.1.2-6 on the broker's side): the old
    # session's state is not reused: incoming QoS 2 ids are dropped; a QoS 2
    # past PUBREC is gone with the broker's session; accepted messages keep
    # their ids and go out as new PUBLISH with DUP 0 (API.md).
    run(r"""
e = engine(window=8)
e.has_state = True
a, r = pub(e, 1), pub(e, 2)
out(e)
e.pubrec(r, 0, tx)
e.rec = 0
assert e.incoming(2, 70)
e.ack_incoming(2, 70, 0, tx)
e.rec = 0
assert e.connected(False, False) == "lost"
assert e.dropped == 1 and e.rx2_n == 0 and e.held == 1
assert out(e) == [("PUBLISH", a, False)]
""")


def test_MQTT_3_1_2_6_clean_start_reuses_no_state():
    # 3.1.1 MQTT-3.1.2-6 / 5.0 MQTT-3.1.2-4: a clean start begins a new
    # session; accepted messages are kept and sent as new ones.
    run(r"""
e = engine()
e.has_state = True
a = pub(e, 1)
out(e)
assert e.connected(False, True) == "new"
assert out(e) == [("PUBLISH", a, False)]
""")


# ---------------------------------------------------------------- receiving

def test_MQTT_4_3_2_2_qos1_receiver_acknowledges_with_puback():
    run(r"""
e = engine()
assert e.incoming(1, 9)
n = e.ack_incoming(1, 9, 0, tx)
assert tx[:n] == bytes((0x40, 2, 0, 9)) and e.rec == 0
""")


def test_MQTT_4_3_3_10_qos2_delivered_once_until_pubrel():
    # 5.0 MQTT-4.3.3-8..-11 (3.1.1 MQTT-4.3.3-2): PUBREC after delivery, the
    # id stored first (IN_QOS2, type 5); the same PUBLISH again is
    # acknowledged, not delivered; PUBREL releases it (IN_REL, type 6) and
    # gets PUBCOMP; after that the id is a new message.
    run(r"""
e = engine()
assert e.incoming(2, 7) is True
n = e.ack_incoming(2, 7, 0, tx)
assert e.rec == 5 and e.rec_pid == 7 and tx[:n] == bytes((0x50, 2, 0, 7))
e.rec = 0
assert e.incoming(2, 7) is False                  # a duplicate: not delivered
n = e.ack_incoming(2, 7, 0, tx)
assert e.rec == 0 and tx[:n] == bytes((0x50, 2, 0, 7))
n = e.pubrel(7, tx)
assert e.rec == 6 and tx[:n] == bytes((0x70, 2, 0, 7))
e.rec = 0
assert e.incoming(2, 7) is True                   # released: a new message
""")


def test_MQTT_4_3_3_10_qos2_ids_survive_a_resume():
    # The ids awaiting PUBREL are session state: kept across a resume, so a
    # broker's resend after a reconnect is not delivered again.
    run(r"""
e = engine()
e.has_state = True
e.incoming(2, 3)
e.ack_incoming(2, 3, 0, tx)
e.rec = 0
e.connected(True, False)
assert e.incoming(2, 3) is False
""")


def test_MQTT_4_3_2_5_after_its_puback_the_same_id_is_a_new_message():
    # 5.0 MQTT-4.3.2-5 (3.1.1 MQTT-4.3.2-2): once the PUBACK is sent, a
    # PUBLISH with the same id is a new message, DUP or not: delivered and
    # acknowledged again. QoS 1 keeps no state: nothing to store.
    run(r"""
e = engine()
for _ in range(3):
    assert e.incoming(1, 9) is True
    n = e.ack_incoming(1, 9, 0, tx)
    assert tx[:n] == bytes((0x40, 2, 0, 9)) and e.rec == 0 and e.rx2_n == 0
""")


def test_MQTT_4_3_3_9_after_a_pubrec_0x80_or_more_the_same_id_is_a_new_message():
    # 5.0 MQTT-4.3.3-9: a receiver that sent PUBREC with a reason >= 0x80
    # treats the next PUBLISH with that id as a new message. The refused
    # message is not recorded (no IN_QOS2 record), so the next one with its
    # id is delivered.
    run(r"""
e = engine(v5=True)
assert e.incoming(2, 5) is True
n = e.ack_incoming(2, 5, 0x97, tx)       # refused (an oversize PUBLISH: link.drain_big)
assert tx[:n] == bytes((0x50, 3, 0, 5, 0x97)) and e.rec == 0 and e.rx2_n == 0
assert e.incoming(2, 5) is True          # a new message
n = e.ack_incoming(2, 5, 0, tx)
assert tx[:n] == bytes((0x50, 2, 0, 5)) and e.rec == 5 and e.rx2_n == 1
""")


def test_MQTT_4_3_3_9_and_10_a_delivered_id_is_never_refused_before_its_pubrel():
    # A QoS 2 message delivered (its id recorded, PUBREC 0 sent, lost with
    # the link) comes again after a reconnect and is now refused (buf_size
    # made smaller by a reboot: link.drain_big answers 0x97). It is a
    # duplicate (5.0 MQTT-4.3.3-10): acknowledged with PUBREC, and PUBREC 0,
    # not 0x97. A PUBREC 0x97 ends the message at the broker, which then
    # sends no PUBREL for the id; with the id still recorded, the broker's
    # next message with that id would be taken for a duplicate and never
    # delivered, against MQTT-4.3.3-9 (it is a new message after 0x97).
    run(r"""
e = engine(v5=True)
e.has_state = True
assert e.incoming(2, 5) is True
e.ack_incoming(2, 5, 0, tx)
e.rec = 0
e.connected(True, False)
n = e.ack_incoming(2, 5, 0x97, tx)       # the duplicate, oversize now
assert tx[:n] == bytes((0x50, 2, 0, 5)), bytes(tx[:n])
assert e.rec == 0 and e.rx2_n == 1       # still awaiting its PUBREL, not recorded twice
n = e.pubrel(5, tx)
assert tx[:n] == bytes((0x70, 2, 0, 5)) and e.rec == 6
e.rec = 0
assert e.incoming(2, 5) is True          # released: the next one with id 5 is new
""")


def test_MQTT_4_3_3_12_after_its_pubcomp_the_same_id_is_a_new_message():
    # 5.0 MQTT-4.3.3-12 (3.1.1 MQTT-4.3.3-2): once PUBCOMP is sent, a
    # PUBLISH with that id is a new message, after a resume too; the
    # release reached flash first (IN_REL), so a reboot does not hold the
    # id either (the store replays the records).
    run(r"""
e = engine()
e.has_state = True
e.incoming(2, 8)
e.ack_incoming(2, 8, 0, tx)
e.rec = 0
n = e.pubrel(8, tx)
assert tx[:n] == bytes((0x70, 2, 0, 8)) and e.rec == 6 and e.rec_pid == 8 and e.rx2_n == 0
e.rec = 0
e.connected(True, False)
assert e.incoming(2, 8) is True
n = e.ack_incoming(2, 8, 0, tx)
assert tx[:n] == bytes((0x50, 2, 0, 8)) and e.rec == 5
""")


def test_MQTT_3_4_2_1_to_3_7_2_1_acknowledgements_use_only_their_own_reason_codes():
    # 5.0 MQTT-3.4.2-1, 3.5.2-1, 3.6.2-1, 3.7.2-1: what the client sends in
    # PUBACK / PUBREC is 0 or the link's refusal 0x97 (Quota exceeded, an
    # oversize PUBLISH), both defined for them; in PUBREL / PUBCOMP it is 0
    # or 0x92 (Packet Identifier not found), the only other code they
    # have. 3.1.1 acknowledgements carry no reason byte at all.
    run(r"""
PUB_CODES = (0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99)
REL_CODES = (0x00, 0x92)
def code(n):
    return tx[4] if n == 5 else 0
e = engine(v5=True)
for qos in (1, 2):
    for rc in (0, 0x97):
        n = e.ack_incoming(qos, 30 + qos + rc, rc, tx)
        assert tx[0] == (0x40 if qos == 1 else 0x50) and code(n) == rc and rc in PUB_CODES
        e.rec = 0
n = e.pubrel(77, tx)                     # unknown id
assert tx[0] == 0x70 and code(n) in REL_CODES and code(n) == 0x92
n = e.pubrel(32, tx)                     # known (recorded above, rc 0)
assert tx[0] == 0x70 and n == 4
n = e.pubrec(78, 0, tx)                  # unknown id: PUBREL 0x92
assert tx[0] == 0x62 and code(n) == 0x92
r = pub(e, 2)
out(e)
n = e.pubrec(r, 0, tx)
assert tx[0] == 0x62 and n == 4
e = engine(v5=False)
e.incoming(2, 5)
assert e.ack_incoming(1, 4, 0, tx) == 4 and e.ack_incoming(2, 5, 0, tx) == 4
assert e.pubrel(5, tx) == 4 and e.pubrel(99, tx) == 4 and tx[1] == 2
""")


def test_MQTT_2_2_1_5_acknowledgements_carry_the_publishs_packet_id():
    # 5.0 MQTT-2.2.1-5 (3.1.1 MQTT-2.3.1-6): PUBACK, PUBREC, PUBREL and
    # PUBCOMP carry the packet id of the PUBLISH they acknowledge, whichever
    # way it went; ids above 255 show both bytes.
    run(r"""
for v5 in (False, True):
    e = engine(v5=v5)
    e.last_pid = 0x1233
    p = pub(e, 2)
    assert p == 0x1234
    out(e)
    n = e.pubrec(p, 0, tx)
    assert tx[:n] == bytes((0x62, 2, 0x12, 0x34)), bytes(tx[:n])    # PUBREL
    e.rec = 0
    n = e.ack_incoming(1, 0xABCD, 0, tx)
    assert tx[:n] == bytes((0x40, 2, 0xAB, 0xCD)), bytes(tx[:n])    # PUBACK
    n = e.ack_incoming(2, 0x0102, 0, tx)
    assert tx[:n] == bytes((0x50, 2, 0x01, 0x02)), bytes(tx[:n])    # PUBREC
    e.rec = 0
    n = e.pubrel(0x0102, tx)
    assert tx[:n] == bytes((0x70, 2, 0x01, 0x02)), bytes(tx[:n])    # PUBCOMP
""")


def test_pubrel_for_an_unknown_id_is_completed():
    # 3.1.1: PUBCOMP anyway (the id may have been released before a power
    # cut); 5.0: PUBCOMP with 0x92 Packet Identifier not found.
    run(r"""
for v5, want in ((False, bytes((0x70, 2, 0, 9))), (True, bytes((0x70, 3, 0, 9, 0x92)))):
    e = engine(v5=v5)
    n = e.pubrel(9, tx)
    assert tx[:n] == want and e.rec == 0
""")


def test_MQTT_3_6_1_1_pubrel_fixed_header_flags_are_0010():
    # MQTT-3.6.1-1: PUBREL's fixed header is 0x62, on the first send, on a
    # resume, for a repeated PUBREC and (5.0) for an unknown one (0x92).
    run(r"""
e = engine(v5=True, window=8)
e.has_state = True
r = pub(e, 2)
out(e)
n = e.pubrec(r, 0, tx)
assert tx[:n] == bytes((0x62, 2, 0, r)), bytes(tx[:n])
e.rec = 0
n = e.pubrec(r, 0, tx)
assert tx[:n] == bytes((0x62, 2, 0, r)), bytes(tx[:n])
e.connected(True, False)
assert out(e) == [("0x62", r, None)]
n = e.pubrec(99, 0, tx)
assert tx[:n] == bytes((0x62, 3, 0, 99, 0x92)), bytes(tx[:n])
""")


def test_MQTT_3_3_4_9_more_qos2_than_receive_maximum_is_0x93():
    # 5.0 MQTT-3.3.4-9 (broker side) seen from here: more QoS 2 messages
    # unreleased than the table holds is 0x93 Receive Maximum exceeded.
    run(r"""
e = engine(v5=True, rx2=2)
for pid in (1, 2):
    e.incoming(2, pid)
    e.ack_incoming(2, pid, 0, tx)
assert e.floods == 0
x = raises(ProtocolError, e.incoming, 2, 3)
assert x.args[0] == 0x93
assert e.floods == 1          # (the front ends' sign that the close was this one)
""")


def test_MQTT_4_3_3_2_a_full_qos2_table_never_forgets_an_id():
    # 3.1.1 has no Receive Maximum: a broker may have more QoS 2 messages
    # unreleased than the table holds. Until its PUBREL an id must stay
    # (MQTT-4.3.3-2: a resent PUBLISH is acknowledged, never delivered
    # again), so a full table takes no new message: an error closes the
    # connection (the broker resends the message later); the ids held stay
    # deduplicated, and one released makes room again.
    run(r"""
from durable_mqtt.errors import MQTTException
e = engine(rx2=3)
for pid in (1, 2, 3):
    assert e.incoming(2, pid)
    e.ack_incoming(2, pid, 0, tx)
    e.rec = 0
x = raises(MQTTException, e.incoming, 2, 4)
assert x.args[0] == -7 and "unreleased" in x.args[1], x.args
raises(MQTTException, e.ack_incoming, 2, 4, 0, tx)      # (an oversize PUBLISH skips incoming())
assert e.floods == 2
assert [e.rx2[k] for k in range(e.rx2_n)] == [1, 2, 3] and e.rec == 0
assert not e.incoming(2, 1)                 # still deduplicated, the oldest too
e.pubrel(2, tx)                             # removal keeps the arrival order
assert [e.rx2[k] for k in range(e.rx2_n)] == [1, 3]
assert e.incoming(2, 4)
e.ack_incoming(2, 4, 0, tx)
assert [e.rx2[k] for k in range(e.rx2_n)] == [1, 3, 4]
""")


def test_acks_for_ids_not_awaiting_one_are_errors_or_answered():
    # A PUBACK for an id not in flight is a protocol error; a repeated PUBREC
    # gets its PUBREL again; an unknown PUBREC: 5.0 PUBREL 0x92, 3.1.1 error.
    run(r"""
e = engine()
raises(ProtocolError, e.puback, 5, 0)
r = pub(e, 2)
out(e)
e.pubrec(r, 0, tx)
e.rec = 0
n = e.pubrec(r, 0, tx)
assert tx[:n] == bytes((0x62, 2, 0, r)) and e.rec == 0
raises(ProtocolError, e.pubrec, 99, 0, tx)
v = engine(v5=True)
n = v.pubrec(99, 0, tx)
assert tx[:n] == bytes((0x62, 3, 0, 99, 0x92))
q1 = pub(e, 1)
out(e)
raises(ProtocolError, e.pubrec, q1, 0, tx)       # a QoS 1 message gets no PUBREC
""")


# ---------------------------------------------------------------- subscriptions

def test_MQTT_2_2_1_6_a_suback_or_unsuback_answers_the_request_by_its_id():
    # 5.0 MQTT-2.2.1-6 (3.1.1 MQTT-2.3.1-7): a SUBACK / UNSUBACK carries the
    # id of its SUBSCRIBE / UNSUBSCRIBE; one that does not answer the
    # request awaited is a protocol error, except the late answer of a
    # request whose wait was abandoned.
    run(r"""
e = engine()
pid = subs.request(e, 0x90)
raises(ProtocolError, subs.answer, e, 0x90, pid + 1)
raises(ProtocolError, subs.answer, e, 0xB0, pid)
assert subs.answer(e, 0x90, pid) is True
pid = subs.request(e, 0xB0)
subs.abandon(e, True, b"x/y", -1, 0)      # the wait ended (cancelled): an UNSUBSCRIBE of x/y
assert subs.answer(e, 0xB0, pid) == (pid, b"x/y", -1, 0)   # its late answer: not a protocol error,
                                           # and what was asked, for the caller to record
pid = subs.request(e, 0x90)
subs.abandon(e)                            # asked unknown
assert subs.answer(e, 0x90, pid) == (pid, None, 0, 0)
# With abandoned requests kept: an answer no kept request had the id of, or
# of the other kind, is still a protocol error, and frees no id (a load
# review: it was taken for the oldest one's, whose id was then free again
# while its own answer could still come).
a = subs.request(e, 0x90)
subs.abandon(e, True, b"a/#", 1, 0)
b = subs.request(e, 0x90)
subs.abandon(e, True, b"b/#", 1, 0)
c = subs.request(e, 0x90)
raises(ProtocolError, subs.answer, e, 0x90, 777)
raises(ProtocolError, subs.answer, e, 0xB0, b)       # an UNSUBACK for a SUBSCRIBE
assert e.stale_n == 2
assert subs.answer(e, 0x90, b) == (b, b"b/#", 1, 0)  # out of order: by its id
assert subs.answer(e, 0x90, a) == (a, b"a/#", 1, 0)
assert subs.answer(e, 0x90, c) is True and e.stale_n == 0
# More abandoned than kept (4): an unknown id may be one of those not kept.
for k in range(5):
    subs.request(e, 0x90)
    subs.abandon(e, True, b"z", 1, 0)
assert subs.answer(e, 0x90, 4242) is None and e.stale_n == 4
raises(ProtocolError, subs.answer, e, 0x90, 4243)
""")


def test_MQTT_3_8_4_3_a_subscription_to_the_same_filter_replaces_the_one_held():
    # MQTT-3.8.4-3: a SUBSCRIBE whose filter is identical to one the session
    # holds replaces it (its options, and in MQTT 5 its identifier): the
    # subscriptions the client keeps to make again after a lost session
    # (MQTT-3.2.2-5) hold one entry per filter, the last granted. Filters
    # are compared byte for byte: "a/#" and "a/+" are two.
    run(r"""
e = engine(v5=True)
subs.subscribed(e, b"a/#", 1, 0)
subs.subscribed(e, b"a/+", 0, 0)
subs.subscribed(e, b"a/#", 2, 7)           # the same filter again: replaced, options and identifier
subs.subscribed(e, b"b", 0, 0)
assert e.subs == [(b"a/+", 0, 0), (b"a/#", 2, 7), (b"b", 0, 0)], e.subs
subs.unsubscribed(e, b"a/#")
assert e.subs == [(b"a/+", 0, 0), (b"b", 0, 0)], e.subs
subs.unsubscribed(e, b"x")                 # one never held: nothing changes
assert e.subs == [(b"a/+", 0, 0), (b"b", 0, 0)], e.subs
""")


# ---------------------------------------------------------------- the outbox

def test_outbox_admission_and_qos0_room_of_its_own():
    # QoS 1/2: accepted until qos12 are held, then QueueFull (not accepted,
    # nothing changed). QoS 0 waits only in room of its own and is dropped
    # (-1) when that is full: it never takes a place QoS 1/2 was promised.
    run(r"""
e = engine(slots=6, qos12=4)
ids = [pub(e, 1) for _ in range(4)]
x = raises(QueueFull, pub, e, 1)
assert e.held == 4 and x.args[0] == -7
assert pub(e, 0) == 0 and pub(e, 0) == 0
assert pub(e, 0) == -1                   # its two places are taken
""")


def test_outbox_bytes_and_holes_are_reused():
    # Acknowledged messages free their bytes and places even when an older
    # one is still held (a QoS 2 awaiting PUBCOMP); the arena wraps round.
    run(r"""
e = engine(slots=6, qos12=5, arena=400, window=5)
q2 = pub(e, 2, b"x" * 40)
out(e)
e.pubrec(q2, 0, tx)
e.rec = 0
for i in range(40):
    p = pub(e, 1, b"%d" % i * 20)
    assert [q for _, q, _ in out(e)] == [p]
    e.puback(p, 0)
    e.done_pid = 0
assert e.held == 1
raises(QueueFull, pub, e, 1, b"z" * 500)   # larger than the arena
""")


def test_unaccept_takes_back_a_message_whose_record_failed():
    run(r"""
e = engine()
a = pub(e, 1)
b = pub(e, 1, b"long" * 10)
e.unaccept()
assert e.held == 1 and e.find(b, 0) < 0 and e.find(a, 0) >= 0
c = pub(e, 1)
assert out(e) == [("PUBLISH", a, False), ("PUBLISH", c, False)]
""")


def test_engine_paths_allocate_nothing():
    # The per-message calls: accept, next_out, acks, incoming.
    run(r"""
from testlib import assert_no_alloc
e = engine(v5=True, window=8)
T = b"tele/x"
P = b"p" * 40
def cycle():
    for q in (1, 2):
        pid = e.accept(T, P, q, 0, b"", 0, 0)
        e.rec = 0
        while e.next_out(0, tx):
            pass
        if q == 1:
            e.puback(pid, 0)
        else:
            e.pubrec(pid, 0, tx)
            e.rec = 0
            e.pubcomp(pid)
        e.done_pid = 0
    e.incoming(2, 11)
    e.ack_incoming(2, 11, 0, tx)
    e.pubrel(11, tx)
    e.rec = 0
assert_no_alloc("engine cycle", cycle)
""")


# ---------------------------------------------------------------- a model of it all

SOAK = bool(os.environ.get("SOAK"))


@pytest.mark.parametrize("clock", ["board", "unix64"])
def test_the_engine_against_an_independent_model(clock):
    # tests/mp/fuzz_engine.py: random sequences on small rings (so they
    # wrap and compact) and ids about to wrap: accept QoS 0/1/2 (retain,
    # near the size limit, with expiry), next_out, acknowledgements right
    # and wrong (MQTT 5 reasons), incoming QoS 1/2 and PUBREL, link loss,
    # Session Present 0/1, CONNACK limits, save and restore. A model written
    # from the statements, not the code, predicts every packet byte for
    # byte (DUP, order, window, expiry, refusals) and every report; each
    # sequence ends drained: every message acknowledged, refused, expired
    # or dropped, reported once, nothing leaked. clock "unix64": ticks_ms
    # above 2**31, as on the 64-bit unix port after 24.8 days.
    seeds = 2000 if SOAK else 150
    flags = ["huge=1"] if clock == "unix64" else []
    r = run_mp("import fuzz_engine\nfuzz_engine.main(%r)\n" % (["0", str(seeds), "200"] + flags),
               heapsize="64M", timeout=600)
    assert "failing 0 classes {}" in r.stdout, r.stdout[-3000:]


EXPIRY_SEND = r"""
import gc, micropython
from durable_mqtt.session import Session
from durable_mqtt import props
tx = bytearray(64)
blk = props.encode({"message_expiry": 60})

def first_pid(e, n):
    o = e.src_off
    tl = (e.src[o + 2] << 8) | e.src[o + 3]
    return (e.src[o + 4 + tl] << 8) | e.src[o + 5 + tl]

# garbage per QoS 0 send, with and without the property
for b, ttl in ((b"", 0), (blk, 60)):
    e = Session(True, b"dev", 12, 8, 2048, 4, 4, 256)
    for k in range(3):
        e.accept(b"t", b"m", 0, 0, b, 0, ttl); e.rec = 0
        gc.collect(); gc.disable(); m0 = gc.mem_alloc()
        e.next_out(1000, tx)
        d = gc.mem_alloc() - m0; gc.enable()
    print("ALLOC", ttl, d)

# heap exhausted at the first send: QoS 1 A then B, both with an expiry
e = Session(True, b"dev", 12, 8, 2048, 4, 4, 256)
a = e.accept(b"t", b"A", 1, 0, blk, 0, 60); e.rec = 0
b = e.accept(b"t", b"B", 1, 0, blk, 0, 60); e.rec = 0
micropython.heap_lock()
try:
    e.next_out(1000, tx)
    r = "sent"
except MemoryError:
    r = "MemoryError"
micropython.heap_unlock()
n = e.next_out(1000, tx)
print("FIRST", r, "THEN pid", first_pid(e, n), "of", (a, b))
"""


def test_MQTT_3_3_2_3_3_the_time_left_allocates_nothing_and_keeps_the_order():
    """Rewriting the Message Expiry Interval at the first send imported the
    props module in each call: 32 bytes of garbage per message, and under
    heap_lock() a MemoryError after the message had been counted as sent,
    so the next one went first (a review found it). The module is loaded
    with the engine; the rewrite comes before anything changes."""
    r = run_mp(EXPIRY_SEND)
    print(r.stdout)
    assert "ALLOC 60 0" in r.stdout, r.stdout
    assert "FIRST sent" in r.stdout, r.stdout


# ---------------------------------------------------------------- restore

def test_restore_grows_an_outbox_smaller_than_the_stored_state():
    # A stored state with more messages (or bytes) than this engine's
    # outbox: a firmware update lowered max_inflight / outbox_size /
    # outbox_bytes while they waited. restore() grows the outbox to hold
    # them, in their order, a PUBREL owed kept as one (MQTT-4.3.3-6), and
    # takes no new message until one leaves. Setting the state aside would
    # mean messages accepted and never sent.
    run(r"""
from durable_mqtt.store import state_bytes
from durable_mqtt.stream import parse
from durable_mqtt.restore import restore
big = engine(slots=24, qos12=20, arena=4096)
ids = [pub(big, 2 if i % 4 == 3 else 1, b"p%02d" % i) for i in range(10)]
out(big)
assert big.pubrec(ids[3], 0, tx)         # PUBREC: only its PUBREL is owed now
big.rec = 0
data = state_bytes(big)
small = engine(slots=3, qos12=2, arena=200, window=1)
ev = []
restore(small, parse(data), 0, lambda *a: ev.append(a))
assert ev == [("outbox_grown", {"messages": 10, "bytes": 9 * 10})], ev     # 9 PUBLISH of 10 bytes, 1 PUBREL owed
assert small.qos12 == 10 and small.nslots >= 14 and small.held == 10, (small.qos12, small.nslots, small.held)
for a in (small.pid, small.off, small.len, small.dl, small.st):
    assert len(a) == small.nslots
raises(QueueFull, pub, small, 1)          # full: grown to the state, no more
small.connected(True, False)              # resumed: all owed again, in order, DUP 1
sent = out(small)
assert sent == [("0x62", ids[3], None)], sent      # window 1, taken by the QoS 2 until PUBCOMP
small.pubcomp(ids[3])
sent = out(small)
assert sent == [("PUBLISH", ids[0], True)], sent
small.puback(ids[0], 0)
assert pub(small, 1) > 0                  # a place freed: taken again
small2 = engine(slots=3, qos12=2, arena=200, window=1)
restore(small2, parse(state_bytes(engine())), 0, lambda *a: ev.append(a))
assert len(ev) == 1                       # an empty state fits: no growth
assert small2.qos12 == 2 and len(small2.arena) == 200
""")


# ---------------------------------------------------------------- figures

def test_stats_queued_counts_messages_waiting_not_freed_places():
    # stats() "queued" is what waits to be sent, "inflight" what was sent
    # and is unacknowledged (docs/api.md). A QoS 2 awaiting PUBCOMP stays
    # at the front of the outbox while later QoS 1 are acknowledged: their
    # places stay counted (holes, squeezed out only when the outbox is full),
    # and were reported as queued messages although none waited.
    run(r"""
from durable_mqtt.stats import stats
class C:
    pass
c = C()
c.counts = [0] * 10
c.journal = None
c.engine = e = engine(window=8)
a = pub(e, 2)
out(e)
e.pubrec(a, 0, tx); e.rec = 0              # a: awaiting PUBCOMP
ids = [pub(e, 1) for _ in range(4)]
out(e)
for p in ids[:3]:
    e.puback(p, 0); e.done_pid = 0         # three places behind a freed, not trimmed
d = stats(c)
assert (d["pending"], d["inflight"], d["queued"]) == (2, 2, 0), d
pub(e, 1); pub(e, 0)                       # one QoS 1 and one QoS 0 wait now
d = stats(c)
assert (d["pending"], d["inflight"], d["queued"]) == (3, 2, 1 + 1), d
""")
