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
