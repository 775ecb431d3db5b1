# Session-store fuzzer (MicroPython unix port), driven by tests/test_fuzz.py
# through tests/fuzzlib.py.
#
#   micropython fuzz_store.py gen DIR PORT
#       Writes valid session images with the library itself, four lineages
#       (file4, file5: a session file; ring4, ring5: a NorFlash ring), a
#       snapshot after every step: offline QoS 1/2 publishes, a connect that
#       sends them (the fake broker acks some, PUBRECs the QoS 2 ones), a
#       subscription, an incoming QoS 2 message, online publishes, a
#       DISCONNECT, more offline publishes, a reboot. DIR/meta.json lists the
#       snapshots and every message ever published (pid, qos, retain, topic,
#       payload, properties).
#
#   micropython fuzz_store.py run DIR PORT RECIPES BACKEND
#       First "B {...}" per unmutated snapshot (the baseline), then per
#       recipe (one JSON line: base snapshot + mutation ops) builds the
#       mutated image, boots a client from it, boots a second client from
#       what the first left, and (when the recipe says so) connects to the
#       fake broker, which answers Session Present 0 or 1 and records what
#       the restored client sends. One line "C {...}" per case.
#
# Only the public API: MQTTClient(..., session_file=, clean_session=False),
# pending(), last_event, connect(), publish(), subscribe(), wait_msg(),
# disconnect().
import sys
import os
import json
from binascii import hexlify

from durable_mqtt import MQTTClient
from durable_mqtt.filelog import FileLog
from norflash import NorFlash

GEOM = (4096, 8, 32)       # fuzzlib.RING_GEOM


def hx(b):
    return hexlify(b).decode()


def rm(p):
    try:
        os.remove(p)
    except OSError:
        pass


def exists(p):
    try:
        return os.stat(p)[6] >= 0
    except OSError:
        return False


def read(p):
    try:
        with open(p, "rb") as f:
            return f.read()
    except OSError:
        return b""


def write(p, data):
    with open(p, "wb") as f:
        f.write(data)


def plain(x):
    return x if isinstance(x, (int, str)) or x is None else repr(x)


def exc(e):
    return [type(e).__name__ + ": " + str(plain(e.args[0] if e.args else None)), isinstance(e, OSError)]


# ------------------------------------------------------------------ gen

def gen(d, port):
    meta = {"lineages": {}}
    for name in ("file4", "file5", "ring4", "ring5"):
        v = int(name[-1])
        snaps, written, pend = [], [], []
        if name.startswith("file"):
            path = d + "/" + name + ".dmq"
            for p in (path, path + ".bad", path + ".tmp"):
                rm(p)
            sf = FileLog(path)          # the log layout: one byte stream to mutate
            image = lambda: read(path)  # noqa: E731
        else:
            nf = NorFlash(GEOM[0], GEOM[1], prog_size=GEOM[2])
            sf = nf
            image = nf.snapshot
        kw = dict(port=port, user="gen", version=v, clean_session=False, session_file=sf,
                  timeout_ms=3000, buf_size=512)
        box = {}

        def snap():
            fn = "%s_%02d.bin" % (name, len(snaps))
            write(d + "/" + fn, image())
            snaps.append(fn)
            pend.append(box["c"].pending())

        def pub(topic, payload, qos, retain=False, props=b""):
            pid = box["c"].publish(topic, payload, retain, qos, props if v == 5 and props else None)
            t = topic.encode() if isinstance(topic, str) else topic
            written.append([pid, qos, 1 if retain else 0, hx(t), hx(payload), hx(props if v == 5 else b"")])
            snap()

        def pump(n):
            for _ in range(n):
                box["c"].wait_msg(20)

        ct = b"\x03\x00\x0atext/plain"                     # content type
        up = b"\x26\x00\x01k\x00\x03v\xc3\xa9"               # user property k=vé
        box["c"] = MQTTClient("fzs%d" % v, "127.0.0.1", **kw)
        snap()
        pub("fz/a", b"one", 1)
        pub("fz/b", b"two", 2, props=ct)
        pub("caf\u00e9/\u2603", b"three" * 6, 1, retain=True, props=up)
        pub("fz/d", b"", 2)
        box["c"].connect()                                 # sends all four; acks for some
        pump(5)
        snap()
        box["c"].subscribe("fz/in/#", 1)                   # SUBACK, then an incoming QoS 2
        pump(5)
        snap()
        pub("fz/e", b"five", 1)
        pump(3)
        snap()
        pub("fz/f", bytes(range(40)), 2, props=ct + up)
        pump(3)
        snap()
        box["c"].disconnect()
        snap()
        pub("fz/g", b"seven", 1)
        pub("fz/h", b"eight", 2)
        box["c"] = None
        box["c"] = MQTTClient("fzs%d" % v, "127.0.0.1", **kw)   # a reboot: restore and rewrite
        snap()
        pub("fz/i", b"nine" * 20, 1)
        pub("fz/j", b"ten", 2, props=up)
        box["c"] = None
        meta["lineages"][name] = {"snaps": snaps, "written": written, "subs": [hx(b"fz/in/#")],
                                  "rel": [w[0] for w in written if w[1] == 2], "version": v, "pending": pend}
        if not name.startswith("file"):
            nf.close()
    write(d + "/meta.json", json.dumps(meta).encode())
    print("GEN OK")


# ------------------------------------------------------------------ run

def apply_ops(b, ops, lin, snapcache):
    for op in ops:
        o = op[0]
        if o == "flip":
            if op[1] < len(b):
                b[op[1]] ^= op[2]
        elif o == "trunc":
            b = b[:op[1]]
        elif o == "splice":
            b = b[:op[2]] + bytearray(snap_bytes(lin, op[1], snapcache)[op[3]:])
        elif o == "app":
            b = b + bytearray(bytes.fromhex(op[1]))
        elif o == "fill":
            for i in range(op[1], min(len(b), op[1] + op[2])):
                b[i] = op[3]
        elif o == "ins":
            b = b[:op[1]] + bytearray(bytes.fromhex(op[2])) + b[op[1]:]
        elif o == "del":
            b = b[:op[1]] + b[op[1] + op[2]:]
        elif o == "copy":
            src = snap_bytes(lin, op[1], snapcache)
            b[op[2]:op[2] + op[3]] = src[op[2]:op[2] + op[3]]
        elif o == "set":
            data = bytes.fromhex(op[2])
            b[op[1]:op[1] + len(data)] = data
    return b


def snap_bytes(lin, k, cache):
    key = (lin["name"], k)
    if key not in cache:
        if len(cache) > 4:
            cache.clear()
        cache[key] = read(lin["dir"] + "/" + lin["snaps"][k])
    return cache[key]


EVENTS = []


def boot(cid, port, v, sf, user, small):
    # The constructor's events go to EVENTS; last() is its last one but
    # outbox_grown (a small client holding a larger state: reported beside).
    EVENTS.clear()
    kw = dict(port=port, user=user, version=v, clean_session=False, session_file=sf, timeout_ms=2000, buf_size=512,
              event_callback=lambda e, i: EVENTS.append(e))
    if small:
        kw["max_inflight"] = 1
        kw["outbox_size"] = 0
    return MQTTClient(cid, "127.0.0.1", **kw)


def last():
    ev = [e for e in EVENTS if e != "outbox_grown"]
    return ev[-1] if ev else None


def run(d, port, recipes, backend):
    meta = json.loads(read(d + "/meta.json"))
    lins = meta["lineages"]
    for name in lins:
        lins[name]["name"] = name
        lins[name]["dir"] = d
    cache = {}
    path = d + "/case-%s.dmq" % backend

    def medium(lin, img):
        if backend == "file":
            for p in (path, path + ".bad", path + ".tmp"):
                rm(p)
            write(path, img)
            return FileLog(path)
        nf = NorFlash(GEOM[0], GEOM[1], prog_size=GEOM[2])
        if len(img) == nf.size:
            nf.restore(img)
        return nf

    # Baseline: every unmutated snapshot once.
    for name in sorted(lins):
        if not name.startswith(backend):
            continue
        lin = lins[name]
        for k in range(len(lin["snaps"])):
            sf = medium(lin, bytearray(snap_bytes(lin, k, cache)))
            r = {"lin": name, "k": k}
            try:
                c = boot("fzs%d" % lin["version"], port, lin["version"], sf, "base", 0)
                r["p"] = c.pending()
                r["ev"] = last()
            except Exception as e:      # noqa: BLE001 - reported, judged by pytest
                r["x"] = exc(e)
            c = None
            print("B " + json.dumps(r))
    with open(recipes) as f:
        for line in f:
            rc = json.loads(line)
            lin = lins[rc["lin"]]
            v = lin["version"]
            cid = "fzs%d" % v
            img = apply_ops(bytearray(snap_bytes(lin, rc["base"], cache)), rc["ops"], lin, cache)
            sf = medium(lin, img)
            user = "%s%d:%d" % ("c" if backend == "file" else "r", rc["i"], rc["sp"])
            r = {"i": rc["i"], "seed": rc.get("seed"), "small": rc["small"], "size": len(img)}
            c = None
            try:
                c = boot(cid, port, v, sf, user, rc["small"])
                r["p1"] = c.pending()
                r["ev1"] = last()
                r["grown1"] = "outbox_grown" in EVENTS
            except Exception as e:      # noqa: BLE001
                r["x1"] = exc(e)
            c = None
            if backend == "file":
                r["path_exists"] = exists(path)
                r["bad_exists"] = exists(path + ".bad")
            try:
                c = boot(cid, port, v, sf, user, rc["small"])
                r["p2"] = c.pending()
                r["ev2"] = last()
            except Exception as e:      # noqa: BLE001
                r["x2"] = exc(e)
                c = None
            if c is not None and rc["conn"]:
                r["connected"] = 1
                try:
                    r["sp"] = c.connect()
                except Exception as e:  # noqa: BLE001
                    r["cx"] = exc(e)
                try:
                    c.disconnect()
                except Exception as e:  # noqa: BLE001
                    r["dx"] = exc(e)
            c = None
            print("C " + json.dumps(r))
    print("END")


if sys.argv[1] == "gen":
    gen(sys.argv[2], int(sys.argv[3]))
else:
    run(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])
