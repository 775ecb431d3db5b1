# Protocol fuzz client (MicroPython unix port), driven by tests/test_fuzz.py
# through tests/fuzzlib.py. Runs cases FIRST .. FIRST+COUNT-1 against the
# fuzz broker on 127.0.0.1:PORT, one TCP connection per case:
#
#   micropython fuzz_client.py PORT VERSION SEED FIRST COUNT [MEM_EVERY]
#
# Per case it prints "S <case>" just before connecting (the broker serves
# that case on the next connection), then one line "C {json}":
#   i   case number          ms  duration
#   e   [[call, class, args[0], is OSError, is MQTTException], ...]
#   d   [[topic hex, payload hex, qos, retain], ...] every delivered message
#   bs  the client's buf_size      p  the plan (for a person reading a replay)
#   hang 1 when the client still waited at the case deadline
# and every MEM_EVERY chains "M <case> <gc.mem_free()>" with no client alive.
#
# Only the public API: MQTTClient, its constructor arguments, set_callback,
# connect, subscribe, unsubscribe, publish, ping, check_msg, wait_msg,
# disconnect, is_connected. Cases come in chains of CHAIN: even chains make
# a fresh client per case, odd chains reuse one client for all their cases
# (what a reconnect loop does).
import sys
import gc
import json
import random
import time
from binascii import hexlify

from durable_mqtt import MQTTClient, MQTTException

PORT = int(sys.argv[1])
V = int(sys.argv[2])
SEED = int(sys.argv[3])
FIRST = int(sys.argv[4])
COUNT = int(sys.argv[5])
MEM_EVERY = int(sys.argv[6]) if len(sys.argv) > 6 else 4
CHAIN = 6
TIMEOUT_MS = 1500
CASE_MS = 2 * TIMEOUT_MS + 1000      # past this the client is declared hung

got = []
errs = []


def cb(topic, msg, retained, qos, props=None):
    got.append((bytes(topic), bytes(msg), qos, 1 if retained else 0))


def hx(b):
    return hexlify(b).decode()


def plain(x):
    return x if isinstance(x, (int, str)) or x is None else repr(x)


def note(step, e):
    a0 = e.args[0] if e.args else None
    errs.append([step, type(e).__name__, plain(a0), isinstance(e, OSError), isinstance(e, MQTTException)])


def rnd_seed(*parts):
    h = 0x1234567
    for p in parts:
        h = (h * 1000003 + p) & 0x3FFFFFFF
    random.seed(h)


TOPICS = ("fz/1", "a/b", "sensor/17/temp", "caf\u00e9/\u2603", "\u6e29\u5ea6", "fz/\U0001F600", b"raw/bytes", "x" * 90)
FILTERS = ("fz/#", "#", "a/+", "+/+/temp", "caf\u00e9/+", "$share/g/fz/1", "fz/1")


def chain_params(chain):
    rnd_seed(SEED, V, chain, 77)
    kw = {
        "version": V,
        "timeout_ms": TIMEOUT_MS,
        "buf_size": random.choice((256, 512, 1024, 1024)),
        "keepalive": random.choice((0, 0, 5, 60)),
        "max_inflight": random.choice((1, 2, 16)),
        "receive_max": random.choice((1, 2, 8)),
        "outbox_size": random.choice((2, 32)),
        "clean_session": random.choice((True, False)),
    }
    if V == 5 and random.random() < 0.5:
        kw["session_expiry"] = random.choice((0, 30, 0xFFFFFFFF))
    cid = "fz%d" % chain
    if V == 5 and random.random() < 0.15:
        cid = ""
    return cid, kw


def case_plan(i):
    rnd_seed(SEED, V, i, 5)
    r = random.random
    plan = {"clean": random.choice((None, None, True, False)), "pubs": [], "ping": r() < 0.2,
            "wait": r() < 0.6, "wait_ms": random.choice((0, 2, 20, 100)), "props_cb": V == 5 and r() < 0.5}
    if r() < 0.6:
        plan["sub"] = (random.choice(FILTERS), random.randint(0, 2),
                       random.choice((0, 0, 1, 7, 268435455)) if V == 5 else 0)
        plan["unsub"] = r() < 0.1
    for _ in range(random.choice((0, 0, 1, 1, 2, 3))):
        n = random.choice((0, 5, 40, 200, 2000)) if r() < 0.9 else 0
        payload = bytes(random.getrandbits(8) for _ in range(n)) if n < 300 else b"L" * n
        props = None
        if V == 5 and r() < 0.4:
            props = {}
            if r() < 0.5:
                props["content_type"] = "text/plain"
            if r() < 0.5:
                props["user_property"] = [("k", "v\u00e9")]
            if r() < 0.3:
                props["message_expiry"] = 3600
            if r() < 0.3:
                props["correlation_data"] = b"\x01\x02"
        plan["pubs"].append((random.choice(TOPICS), payload, random.randint(0, 2), r() < 0.2, props))
    return plan


def run_case(i, c, kw):
    plan = case_plan(i)
    del got[:]
    del errs[:]
    c.set_callback(cb, props=plan["props_cb"])
    t0 = time.ticks_ms()
    print("S", i)
    hang = 0
    try:
        c.connect(clean_session=plan["clean"])
    except Exception as e:      # noqa: BLE001 - every class is recorded and judged by pytest
        note("connect", e)
    if c.is_connected():
        steps = []
        if "sub" in plan:
            steps.append("subscribe")
            if plan.get("unsub"):
                steps.append("unsubscribe")
        steps += ["publish"] * len(plan["pubs"])
        if plan["ping"]:
            steps.append("ping")
        k = 0
        for step in steps:
            if not c.is_connected():
                break
            try:
                if step == "subscribe":
                    f, q, sid = plan["sub"]
                    if sid:
                        c.subscribe(f, q, sub_id=sid)
                    else:
                        c.subscribe(f, q)
                elif step == "unsubscribe":
                    c.unsubscribe(plan["sub"][0])
                elif step == "publish":
                    t, m, q, r, props = plan["pubs"][k]
                    k += 1
                    c.publish(t, m, r, q, props)
                else:
                    c.ping()
            except Exception as e:  # noqa: BLE001
                note(step, e)
        # Pump until the broker ends the case (or the client raises).
        while c.is_connected() and len(errs) < 30:
            if time.ticks_diff(time.ticks_ms(), t0) > CASE_MS:
                hang = 1
                break
            try:
                if plan["wait"]:
                    c.wait_msg(plan["wait_ms"])
                else:
                    c.check_msg()
                    time.sleep_ms(1)
            except Exception as e:  # noqa: BLE001
                note("wait_msg" if plan["wait"] else "check_msg", e)
        if hang:
            try:
                c.disconnect()
            except Exception as e:  # noqa: BLE001
                note("disconnect", e)
    ms = time.ticks_diff(time.ticks_ms(), t0)
    print("C " + json.dumps({"i": i, "ms": ms, "e": errs, "hang": hang, "bs": kw["buf_size"],
                             "d": [[hx(t), hx(m), q, r] for t, m, q, r in got],
                             "p": "clean=%s sub=%s pubs=%d ping=%d wait=%s/%d" % (
                                 plan["clean"], plan.get("sub", ("-",))[0], len(plan["pubs"]), plan["ping"],
                                 plan["wait"], plan["wait_ms"])}))


def main():
    chains_done = 0
    i = FIRST
    end = FIRST + COUNT
    while i < end:
        chain = i // CHAIN
        cid, kw = chain_params(chain)
        reuse = chain % 2 == 1
        c = None
        while i < end and i // CHAIN == chain:
            if c is None or not reuse:
                c = MQTTClient(cid, "127.0.0.1", port=PORT, **kw)
            run_case(i, c, kw)
            i += 1
        c = None
        chains_done += 1
        if chains_done % MEM_EVERY == 0:
            gc.collect()
            gc.collect()
            print("M", i, gc.mem_free())
    print("END", COUNT)


main()
