"""Bad arguments are refused at the call, with a clear error, and nothing
accepted before is lost (the brief: "bad input gets a clear error and
loses nothing"). These are the cases a review found taken: strings a
broker closes the connection over (control characters, non-characters),
properties silently rewritten, lengths the session's records cannot hold,
and arguments checked only later, deep in a connect or a PUBACK."""
import pytest

from conftest import run_mp
from fakebroker import FakeBroker, connack, publish

CALLS = r"""
from durable_mqtt import MQTTClient
from durable_mqtt.robust import RobustClient    # (its subscribe() while down checks the filter now)
def call(tag, f):
    try:
        print(tag, "OK", repr(f()))
    except Exception as x:
        print(tag, type(x).__name__, x.args[-1] if x.args else "")
"""


def outcomes(out):
    """{tag: (outcome, message)} of CALLS' lines."""
    res = {}
    for line in out.splitlines():
        tag, _, rest = line.partition(" ")
        what, _, msg = rest.partition(" ")
        res[tag] = (what, msg)
    return res


BAD_STRINGS = {           # (each between "a" and "b")
    "tab": b"\t", "c01": b"\x01", "del": b"\x7f", "c1_85": b"\xc2\x85", "c1_9f": b"\xc2\x9f",
    "fdd0": b"\xef\xb7\x90", "fdef": b"\xef\xb7\xaf", "fffe": b"\xef\xbf\xbe", "ffff": b"\xef\xbf\xbf",
    "1fffe": b"\xf0\x9f\xbf\xbe", "10ffff": b"\xf4\x8f\xbf\xbf",
}
GOOD_STRINGS = {"degree": b"\xc2\xb0C", "u_a0": b"\xc2\xa0", "fdcf": b"\xef\xb7\x8f", "fdf0": b"\xef\xb7\xb0",
                "fffd": b"\xef\xbf\xbd", "emoji": b"\xf0\x9f\x98\x80", "1fffd": b"\xf0\x9f\xbf\xbd"}


@pytest.mark.parametrize("v", [4, 5])
def test_a_control_character_or_non_character_is_refused_in_whatever_the_client_sends(v, tmp_path):
    """MQTT 3.1.1 section 1.5.3 and 5.0 section 1.5.4: a receiver may close
    the connection over U+0001..U+001F, U+007F..U+009F or a non-character,
    and mosquitto does. They were taken in a topic, a filter, a client id,
    a user name, a will topic and MQTT 5 string properties: a QoS 1 message
    with such a topic was stored and refused at every reconnect for good.
    Now each is a ValueError at the call; the outbox keeps what it held, and
    the characters next to them (U+00A0, U+FDCF, U+FFFD, ...) still go."""
    body = CALLS + r"""
c = RobustClient("args", "127.0.0.1", 1, version=%d, clean_session=False, session_file=%r)
call("kept", lambda: c.publish("ok/1", b"kept", qos=1))
""" % (v, str(tmp_path / "s"))
    for tag, s in BAD_STRINGS.items():
        body += 'call("pub:%s", lambda: c.publish(b"a%sb", b"x", qos=1))\n' % (tag, s)
        body += 'call("sub:%s", lambda: c.subscribe(b"a%sb/#"))\n' % (tag, s)
        body += 'call("will:%s", lambda: c.set_last_will(b"a%sb", b"x"))\n' % (tag, s)
        body += ('call("cid:%s", lambda: MQTTClient(b"a%sb", "127.0.0.1", 1, version=%d))\n'
                 % (tag, s, v))
        body += ('call("user:%s", lambda: MQTTClient("u", "127.0.0.1", 1, user=b"a%sb", version=%d))\n'
                 % (tag, s, v))
        if v == 5:
            for prop in ("content_type", "response_topic"):
                body += ('call("%s:%s", lambda: c.publish("ok/p", b"x", props={"%s": b"a%sb"}))\n'
                         % (prop, tag, prop, s))
            body += ('call("user_property:%s", lambda: c.publish("ok/p", b"x", props={"user_property": '
                     '[("k", b"a%sb")]}))\n' % (tag, s))
    for tag, s in GOOD_STRINGS.items():
        body += 'call("good:%s", lambda: c.publish(b"a%sb", b"x", qos=0))\n' % (tag, s)
        body += 'call("goodsub:%s", lambda: c.subscribe(b"a%sb/#"))\n' % (tag, s)
    body += 'call("pending", c.pending)\n'
    body += 'call("waiting", lambda: len(c.pending_subs))\n'
    res = outcomes(run_mp(body).stdout)
    assert res["kept"] == ("OK", "1"), res["kept"]
    bad = [t for t in res if t.partition(":")[2] in BAD_STRINGS]
    assert len(bad) == len(BAD_STRINGS) * (8 if v == 5 else 5), bad
    for t in bad:
        assert res[t][0] == "ValueError" and "control character or non-character" in res[t][1], (t, res[t])
    for t in res:
        if t.startswith("good"):
            assert res[t][0] == "OK", (t, res[t])
    assert res["waiting"] == ("OK", str(len(GOOD_STRINGS))), res["waiting"]     # only the good filters wait
    assert res["pending"] == ("OK", "1"), res["pending"]


@pytest.mark.parametrize("v", [4, 5])
def test_a_control_character_received_is_taken(v):
    """Received, such a topic is the broker's business: a receiver MAY close
    over it, and the client takes it (API.md names what is malformed)."""
    fb = FakeBroker([("send", connack(v)), ("send", publish(v, b"a\tb\x7fc\xc2\x85", b"m", qos=1, pid=3)),
                     ("recv",), ("sleep", 0.3)])
    r = run_mp(r"""
from durable_mqtt import MQTTClient
got = []
c = MQTTClient("rx-ctl", "127.0.0.1", %d, version=%d, timeout_ms=2000)
c.set_callback(lambda t, m, r, q: got.append(bytes(t)))
c.connect()
for _ in range(10):
    c.wait_msg(50)
print("GOT", got, c.is_connected())
c.disconnect()
""" % (fb.port, v))
    fb.join()
    assert "GOT [b'a\\tb\\x7fc\\xc2\\x85'] True" in r.stdout, r.stdout
    assert [f for f, _ in fb.conns[0][1:] if f == 0x40], fb.conns


def test_mqtt5_user_properties_of_another_shape_are_refused_not_rewritten():
    """user_property is a list of (name, value) pairs (or one pair). A dict
    went as one pair of its keys ({"sensor": "x", "unit": "C"} as
    ("unit", "sensor"): both values lost), a str "ab" as ("a", "b"), a list
    ["kv"] as ("k", "v"); for the will too. Each is a ValueError now."""
    r = run_mp(CALLS + r"""
c = MQTTClient("up", "127.0.0.1", 1, version=5)
for tag, up in (("dict", {"sensor": "x", "unit": "C"}), ("str", "ab"), ("list_str", ["kv"]),
                ("triple", [("a", "b", "c")]), ("pair", ("k", "v")), ("pairs", [("k", "v"), ("k", "w")])):
    call("pub_" + tag, lambda: c.publish("t", b"x", props={"user_property": up}))
    call("will_" + tag, lambda: c.set_last_will("w", b"x", props={"user_property": up}))
""").stdout
    res = outcomes(r)
    for tag in ("dict", "str", "list_str", "triple"):
        for call in ("pub_", "will_"):
            assert res[call + tag][0] == "ValueError" and "user_property" in res[call + tag][1], (tag, res)
    for tag in ("pair", "pairs"):
        assert res["pub_" + tag][0] == "OK" and res["will_" + tag][0] == "OK", (tag, res)


def test_lengths_the_session_records_cannot_hold_are_refused_at_the_call(tmp_path):
    """The session's header record holds a client id of 65521 bytes at most,
    a SUB record a filter of 65530 (16-bit lengths, with their fields): a
    longer one was taken (MQTT allows 65535), and the state it made no boot
    could read (the messages were lost with it) or the subscription was
    gone after the next boot."""
    r = run_mp(CALLS + r"""
call("cid_65521", lambda: MQTTClient(b"c" * 65521, "127.0.0.1", 1, clean_session=False,
                                     session_file=%r).pending())
call("cid_65522", lambda: MQTTClient(b"c" * 65522, "127.0.0.1", 1))
c = RobustClient("f", "127.0.0.1", 1, buf_size=70000)
call("filter_65530", lambda: c.subscribe(b"f" * 65530))
call("filter_65531", lambda: c.subscribe(b"f" * 65531))
""" % str(tmp_path / "s"), heapsize="8M").stdout
    res = outcomes(r)
    assert res["cid_65521"] == ("OK", "0") and res["filter_65530"] == ("OK", "None"), res
    assert res["cid_65522"][0] == "ValueError" and "65521 at most" in res["cid_65522"][1], res
    assert res["filter_65531"][0] == "ValueError" and "65530 at most" in res["filter_65531"][1], res


@pytest.mark.parametrize("v", [4, 5])
def test_arguments_checked_only_later_are_refused_at_the_call(v):
    """Each was taken and failed later, far from its cause: RobustClient's
    unsubscribe() while down of a bad filter (ValueError out of every
    reconnect's poll() after it), a done callback
    that is no callable (a TypeError at every PUBACK), a server that is no
    str (TypeError "can't convert 'NoneType' object to str" at connect), a
    negative connect timeout (read as "socket error (errno 33)"), the filter
    "$share" alone (mosquitto closes the connection over it), a will retain
    flag of 2 or "no" (a retained will), a will message None (publish()
    takes None), pre-encoded will properties (refused as "a dict or encoded
    bytes, not bytes")."""
    r = run_mp(CALLS + r"""
c = RobustClient("later", "127.0.0.1", 1, version=%d)
call("done_5", lambda: c.set_done_callback(5))
call("done_none", lambda: c.set_done_callback(None))
call("server_none", lambda: MQTTClient("s", None))
call("server_int", lambda: MQTTClient("s", 5))
call("timeout_neg", lambda: c.connect(timeout_ms=-1))
call("unsub_bad", lambda: c.unsubscribe("a/#/b"))     # (while down: checked now, not at a reconnect)
call("share", lambda: c.subscribe("$share"))
call("shares", lambda: c.subscribe("$shares/x"))
call("retain_2", lambda: c.set_last_will("w", b"x", retain=2))
call("retain_no", lambda: c.set_last_will("w", b"x", retain="no"))
call("will_none", lambda: c.set_last_will("w", None))
call("will_bytes", lambda: c.set_last_will("w", b"x", props=b"\x02\x00\x00\x00\x05"))
""" % v).stdout
    res = outcomes(r)
    assert res["done_5"][0] == "TypeError" and res["done_none"][0] == "OK", res
    assert res["server_none"][0] == "TypeError" and "server" in res["server_none"][1], res
    assert res["server_int"][0] == "TypeError", res
    assert res["timeout_neg"][0] == "ValueError" and "timeout_ms" in res["timeout_neg"][1], res
    assert res["unsub_bad"][0] == "ValueError" and "a/#/b" in res["unsub_bad"][1], res
    assert res["share"][0] == "ValueError" and "$share/{name}/{filter}" in res["share"][1], res
    assert res["shares"] == ("OK", "None"), res        # (waits for the next connect)
    assert res["retain_2"][0] == "ValueError" and res["retain_no"][0] == "ValueError", res
    assert res["will_none"][0] == "OK" and res["will_bytes"][0] == "OK", res
