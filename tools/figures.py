#!/usr/bin/env python3
"""Figures generated, never typed.

`make bench` (tools/bench/run.py) measures and writes every figure to
docs/figures.json (committed). This tool writes the pages from it:

* docs/benchmarks.md and docs/benchmarks.svg, whole (tools/bench/report.py);
* in README.md, docs/api.md, docs/flash-wear.md and boards/*/README.md, the
  text between a marker pair

      <!-- figures:NAME -->generated text<!-- /figures -->

  (inline, or on lines of their own for a table or a paragraph), which is
  replaced by BLOCKS[NAME](figures). The text outside the markers is the
  page's own and is left alone.

    python3 tools/figures.py            # rewrite the pages (make bench runs it)
    python3 tools/figures.py --check    # exit 1 when a page disagrees with figures.json
    python3 tools/figures.py --lint     # list figures typed outside markers

tests/test_figures.py runs the check and the lint (no broker, no MicroPython).
CPython 3.8+, stdlib only.
"""
import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools" / "bench"))
import report as R   # noqa: E402

FIGURES = ROOT / "docs" / "figures.json"
PAGES = ["README.md", "INSTALL.md", "docs/api.md", "docs/flash-wear.md", "docs/migrating-from-umqtt.md",
         "boards/esp32/README.md", "boards/rp2040/README.md"]
WHOLE = {"docs/benchmarks.md": R.page, "docs/benchmarks.svg": R.svg}
MARK = re.compile(r"<!-- figures:([a-z][\w-]*) -->(.*?)<!-- /figures -->", re.S)
# Blocks every page must keep (the test fails when one goes missing).
REQUIRED = {
    "README.md": ["readme-table", "readme-alloc", "readme-flash", "readme-lifetime", "readme-limit-flash",
                  "readme-limit-ram"],
    "INSTALL.md": ["install-romfs"],
    "docs/api.md": ["api-outbox-bytes"],
    "docs/flash-wear.md": ["wear-method", "wear-stream", "wear-slow", "wear-lifetime", "wear-targets"],
    "docs/migrating-from-umqtt.md": ["migrate-code"],
    "boards/esp32/README.md": ["esp32-quick", "esp32-flash", "esp32-ring-capacity", "esp32-budget", "esp32-ram",
                               "esp32-mpy"],
    "boards/rp2040/README.md": ["rp2040-quick", "rp2040-flash", "rp2040-ring-capacity", "rp2040-budget",
                                "rp2040-ram", "rp2040-mpy"],
}
num, kb, heapk, yfmt = R.num, R.kb, R.heapk, R.yfmt

# ---------------------------------------------------------------- shared pieces


def _b32(fig, label):
    b = fig.get("b32")
    return b and b["durable"].get(label)


def _peer32(fig, c):
    b = fig.get("b32")
    return b and b["clients"].get(c)


def _path(fig, bits, store_label, key, what="garbage"):
    p = (fig.get("paths") or {}).get(bits) or {}
    d = p.get(store_label)
    return d and d.get(key, {}).get(what)


P_NONE = "no session"
P_RING = "raw ring (ESP32, 32-byte programs)"
P_LOG = "log file, FileLog (ESP32 mount)"
P_DIR = "session directory (ESP32 mount)"
P_DIR_RP = "session directory (RP2040 mount)"


def _bits(fig):
    return "32" if (fig.get("paths") or {}).get("32") else "64"


def _e(fig, mount, store, size=86, q="qos1", what="erases"):
    r = R.flash_row(fig, mount, store, size)
    return r and r[q][what]


def _slow(fig, mount, store, what="erases"):
    r = R.slow_row(fig, mount, store)
    return r and r["qos1"][what]


def _life(fig, mount, store, rate=1.0, where="sim"):
    return R.years(_slow(fig, mount, store), rate, R.wear_blocks(fig, mount, store, where))


def _f4(v):
    return "n/a" if v is None else "%.4f" % v


def _f2(v):
    return "n/a" if v is None else "%.2f" % v


# ---------------------------------------------------------------- README.md

def readme_table(fig):
    base = fig["constants"]["baseline"]
    us = R.m64(fig, "durable_mqtt")
    um = R.m64(fig, base)
    sm = _b32(fig, "small + session file")
    df = _b32(fig, "defaults")
    u32 = _peer32(fig, base)
    bits = _bits(fig)
    L = ["Measured by `make bench` (%s), side by side with umqtt.simple, umqtt.robust, micropython-mqtt and "
         "chumicro-mqtt in the same run: [docs/benchmarks.md](docs/benchmarks.md). The 32-bit rows come from "
         "a 32-bit build of the unix port (the word size of an ESP32 or RP2040); the others from the 64-bit "
         "one, where objects are about twice a board's size (allocation counts carry over).%s"
         % (fig["machine"]["date"], " The last run had no 32-bit port: the 32-bit rows are from %s."
            % fig["b32"].get("date", "an earlier run") if fig.get("b32_note") and fig.get("b32") else ""), "",
         "| what | durable_mqtt | umqtt.simple |", "| --- | --- | --- |"]
    a = L.append
    if sm:
        a("| 32-bit: `import` (.mpy) | %s B | %s B |" % (num(sm["import"]), num(u32 and u32["import"])))
        a("| 32-bit: all the code a client with a session file loads and keeps (.mpy) | %s B | |" % num(sm["code"]))
        a("| 32-bit: smallest heap, `buf_size=256, max_inflight=4, receive_max=4`, session file: .mpy / .py source "
          "| %s / %s B | %s / %s B |" % (num(sm["heap_mpy"]), num(sm["heap_py"]), num(u32 and u32["heap_mpy"]),
                                          num(u32 and u32["heap_py"])))
        if sm.get("heap_reboot_mpy"):
            a("| 32-bit: the same, booting with the outbox full (%s messages restored, then sent): .mpy / .py source "
              "| %s / %s B | |" % (sm["reboot_messages"], num(sm["heap_reboot_mpy"]), num(sm.get("heap_reboot_py"))))
        if sm.get("heap_romfs"):
            a("| 32-bit: the same, the library's .mpy in a ROMFS image (firmware with a romfs partition: "
              "bytecode read in place from flash) | %s B | |" % num(sm["heap_romfs"]))
        a("| 32-bit: smallest heap, defaults (`buf_size=1024`), no session: .mpy / .py source | %s / %s B | |"
          % (num(df and df["heap_mpy"]), num(df and df["heap_py"])))
    else:
        a("| 32-bit figures | not measured (%s) | |" % fig.get("b32_note", "skipped"))
    a("| heap garbage per message: QoS 0 / QoS 1 publish, QoS 0 / QoS 1 receive (64-bit) | **%s / %s / %s / %s** "
      "| %s / %s / %s / %s |" % tuple([num(us.get("garbage_" + k), "B/msg") for k in ("pub0", "pub1", "rx0", "rx1")]
                                     + [num(um.get("garbage_" + k), "B/msg") for k in ("pub0", "pub1", "rx0", "rx1")]))
    a("| heap asked for per message, VM frames freed at return included (`mem_total()`): QoS 0 / QoS 1 publish "
      "(%s-bit, no session) | %s / %s | |" % (bits, num(_path(fig, bits, P_NONE, "pub0", "alloc"), "B/msg"),
                                             num(_path(fig, bits, P_NONE, "pub1", "alloc"), "B/msg")))
    a("| heap bytes per second polling an idle connection (64-bit, all / garbage) | %s / %s | %s / %s |" % (
        num(us.get("alloc_idle"), "B/s"), num(us.get("garbage_idle"), "B/s"), num(um.get("alloc_idle"), "B/s"),
        num(um.get("garbage_idle"), "B/s")))
    a("| QoS 0 publishes/s | %s | %s |" % (num(us.get("rate_pub0")), num(um.get("rate_pub0"))))
    a("| QoS 1 publishes/s, all acknowledged | %s (windowed) | %s (one at a time) |" % (
        num(us.get("rate_pub1")), num(um.get("rate_pub1"))))
    a("| QoS 1 messages received/s | %s | %s |" % (num(us.get("rate_rx1")), num(um.get("rate_rx1"))))
    c64 = fig.get("configs64", {})
    if c64:
        a("| a connected client, defaults / `buf_size=256, max_inflight=4, receive_max=4` (64-bit, code included) "
          "| %s / %s B | %s B |" % (num(c64["defaults"]["ram"]), num(c64["small"]["ram"]), num(um.get("connect"))))
    st = fig.get("api", {}).get("state")
    if st:
        a("| session state on flash (`save_session()`): empty / 1 / 16 messages (16 B topic, 64 B payload) "
          "| %s / %s / %s B | none |" % (num(st["0"]), num(st["1"]), num(st["16"])))
    if fig.get("flash"):
        for mount in ("esp32", "rp2040"):
            a("| flash per QoS 1 message (86-byte PUBLISH), session directory on a stock %s mount | %s B "
              "programmed, %s erases | none |" % (R.MOUNT_SHORT[mount], num(_e(fig, mount, "dir", what="programmed")),
                                                  _f4(_e(fig, mount, "dir"))))
        a("| the same, raw ring (16 x 4 KB, 32-byte programs) | %s B programmed, %s erases | none |" % (
            num(_e(fig, "esp32", "ring", what="programmed")), _f4(_e(fig, "esp32", "ring"))))
        a("| the same, 0.1.0's log file (`FileLog`), ESP32 mount | %s B programmed, %s erases | none |" % (
            num(_e(fig, "esp32", "log", what="programmed")), _f4(_e(fig, "esp32", "log"))))
    return "\n".join(L)


def readme_alloc(fig):
    bits = _bits(fig)
    p = (fig.get("paths") or {}).get(bits) or {}
    clean = []
    for label, name in ((P_NONE, "without a session"), (P_RING, "with the raw ring"), (P_LOG, "with the log file")):
        d = p.get(label)
        if d and all(d[k]["garbage"] < R.ZERO for k, _ in R.PATHS):
            clean.append(name)
    dirty = []
    d = p.get(P_LOG)
    if d and not all(d[k]["garbage"] < R.ZERO for k, _ in R.PATHS):
        dirty.append("the log file leaves %s B per QoS 1 message (its checkpoints open a file)"
                     % num(d["pub1"]["garbage"], "B/msg"))
    um = R.m64(fig, fig["constants"]["baseline"])
    g = [um.get("garbage_" + k) for k in ("pub0", "pub1", "rx0", "rx1")]
    g = [x for x in g if x is not None]
    return ("**0 bytes left for the collector** per message on every steady-state path (QoS 0/1/2 publish "
            "and receive, ping, idle poll) %s (`make bench`, %s-bit: `gc.mem_alloc()` with the collector off)%s; "
            "the session directory, the default for a path, leaves LittleFS file objects behind, one per flash "
            "write: %s B per QoS 1 message on the ESP32 mount, %s B on the RP2040 mount (umqtt.simple: %s–%s B "
            "of garbage a message, 64-bit). Heap blocks taken and freed within the call (VM frames of more than "
            "11 words, `mem_total()`) come to %s B per QoS 1 publish;"
            % (", ".join(clean) if clean else "(not measured)", bits,
               ("; " + "; ".join(dirty)) if dirty else "",
               num(_path(fig, bits, P_DIR, "pub1"), "B/msg"), num(_path(fig, bits, P_DIR_RP, "pub1"), "B/msg"),
               num(min(g) if g else None, "B/msg"), num(max(g) if g else None, "B/msg"),
               num(_path(fig, bits, P_NONE, "pub1", "alloc"), "B/msg")))


def readme_flash(fig):
    if not fig.get("flash"):
        return "flash per message: not measured in this run;"
    return ("per QoS 1 message (86-byte PUBLISH, a stream): **%s bytes programmed and %s erases** on the stock "
            "ESP32 LittleFS mount with the session directory (RP2040 mount: %s B, %s), %s B and %s on a raw flash "
            "ring (16 x 4 KB, 32-byte programs), against %s B and %s through 0.1.0's log file "
            "([flash-wear.md](docs/flash-wear.md));"
            % (num(_e(fig, "esp32", "dir", what="programmed")), _f4(_e(fig, "esp32", "dir")),
               num(_e(fig, "rp2040", "dir", what="programmed")), _f4(_e(fig, "rp2040", "dir")),
               num(_e(fig, "esp32", "ring", what="programmed")), _f4(_e(fig, "esp32", "ring")),
               num(_e(fig, "esp32", "log", what="programmed")), _f2(_e(fig, "esp32", "log"))))


def readme_lifetime(fig):
    if not fig.get("flash"):
        return "(not measured)"
    return ("(1 message a second, one at a time: the session directory on a stock ESP32 filesystem half full "
            "%s, on a Pico W's %s; a 64 KB ring on an ESP32 %s)"
            % (yfmt(_life(fig, "esp32", "dir", 1.0, "stock")), yfmt(_life(fig, "rp2040", "dir", 1.0, "stock")),
               yfmt(_life(fig, "esp32", "ring", 1.0))))


def readme_limit_flash(fig):
    if not fig.get("flash"):
        return "Flash wear per store: not measured in this run; see flash-wear.md."
    return ("A message that does not fit LittleFS's inline limit (128 bytes on a stock ESP32 mount, 512 on an "
            "RP2040 mount) costs the session directory about a block erase again: %s erases per QoS 1 message of "
            "300 bytes on the ESP32 mount, %s for 1 KB on the RP2040 mount (86 bytes: %s and %s). 0.1.0's log "
            "file costs at least one erase per commit whatever the size (%s for 86 bytes, %s for 1 KB on ESP32). "
            "Use the raw ring on a dedicated partition for large messages at high rates; see flash-wear.md."
            % (_f2(_e(fig, "esp32", "dir", 300)), _f2(_e(fig, "rp2040", "dir", 1024)),
               _f4(_e(fig, "esp32", "dir")), _f4(_e(fig, "rp2040", "dir")), _f2(_e(fig, "esp32", "log")),
               _f2(_e(fig, "esp32", "log", 1024))))


def readme_limit_ram(fig):
    sm = _b32(fig, "small + session file")
    u32 = _peer32(fig, fig["constants"]["baseline"])
    if not sm:
        return "RAM on 32 bits: not measured in this run (set MICROPY32 for `make bench`)."
    b = fig["b32"]
    return ("On a 32-bit port the import takes %s B (umqtt.simple: %s B); a client with a session file loads and "
            "keeps %s B of code in all, and the smallest heap for connect, subscribe, publish and "
            "receive with `buf_size=256, max_inflight=4, receive_max=4` and a session file is %s B from .mpy, "
            "%s B from .py source (compiled on the board, as `mip install github:` leaves it)%s. Freeze the library "
            "on small boards, or put its .mpy in a ROMFS image (INSTALL.md): then its bytecode stays in flash%s. "
            "Machine code: %s B of .mpy (x86)."
            % (num(sm["import"]), num(u32 and u32["import"]), num(sm["code"]), num(sm["heap_mpy"]),
               num(sm["heap_py"]),
               "; a reboot that restores a full outbox (%s messages) and sends it needs %s / %s B"
               % (sm["reboot_messages"], num(sm["heap_reboot_mpy"]), num(sm.get("heap_reboot_py")))
               if sm.get("heap_reboot_mpy") else "",
               " and the same run needs %s B" % num(sm["heap_romfs"]) if sm.get("heap_romfs") else "",
               num(sum(b["march"].values()))))


def readme_limit_rate(fig):
    us = R.m64(fig, "durable_mqtt")
    r0, r1 = us.get("rate_pub0"), us.get("rate_pub1")
    if not (r0 and r1):
        return "n/a"
    return "%.0f%% of the QoS 0 rate (%s against %s messages/s)" % (100 * r1 / r0, num(r1), num(r0))


# ---------------------------------------------------------------- docs/api.md

def api_outbox_bytes(fig):
    """The sentence after the formula: its values for the defaults and the
    small configuration, as the client computed them (make bench)."""
    api = fig.get("api") or {}

    def places(kw):
        q = kw.get("max_inflight", 16) + kw.get("outbox_size", 32)
        return q + max(4, q // 4)
    d, sm = api.get("defaults") or {}, api.get("small") or {}
    return ("The defaults give S = %s, %s bytes; `buf_size=256, max_inflight=4, receive_max=4` gives S = %s, %s bytes."
            % (places(d.get("kw", {})), num(d.get("outbox_bytes")), places(sm.get("kw", {})),
               num(sm.get("outbox_bytes"))))


# ---------------------------------------------------------------- docs/migrating-from-umqtt.md

def migrate_code(fig):
    """The library's .mpy in all, and what a client with a session file
    loads and keeps (32-bit bench)."""
    sm = _b32(fig, "small + session file")
    if not sm:
        return "The library's code is larger than umqtt's"
    return ("The library's code is larger (%s of `.mpy` in all, of which a client with a session file loads "
            "and keeps %s" % (kb(fig["b32"]["mpy_total"]), kb(sm["code"])))


# ---------------------------------------------------------------- docs/flash-wear.md

def wear_method(fig):
    if not fig.get("flash"):
        return "Not measured in this run."
    return R.flash_method(fig)


def wear_stream(fig):
    if not fig.get("flash"):
        return "Not measured in this run."
    L = []
    for mount in ("esp32", "rp2040"):
        L += ["Stock %s:" % R.MOUNT_NAMES[mount], "", R.flash_stream_table(fig, mount), ""]
    return "\n".join(L).rstrip("\n")


def wear_slow(fig):
    if not fig.get("flash"):
        return "Not measured in this run."
    return ("QoS 1, 86-byte PUBLISH, %d messages, each acknowledged before the next and the client idle "
            "in between:\n\n%s" % (fig["flash"]["slow_n"], R.flash_slow_table(fig)))


def wear_lifetime(fig):
    if not fig.get("flash"):
        return "Not measured in this run."
    return R.lifetime_table(fig) + "\n\n" + R.lifetime_notes(fig)


def wear_targets(fig):
    rows = [t for t in R.targets(fig) if t[0] in ("#11", "ring")]
    L = ["| target | measured | verdict |", "|---|---|---|"]
    for _, t, m, v in rows:
        L.append("| %s | %s | %s |" % (t, m, v))
    return "\n".join(L)


# ---------------------------------------------------------------- boards

GC_ESP32 = 111936       # the ESP32 (no PSRAM) GC heap once grown (micropython#13219)
GC_PICOW = 150 * 1024   # the low end of the Pico W estimate, Wi-Fi up
TLS_RP2 = 40 * 1024     # mbedTLS in the rp2 GC heap: record buffers and the handshake


def _probe(fig, board, v):
    bd = (fig.get("boards") or {}).get(board)
    return bd and bd.get(v)


def board_quick(board):
    def f(fig):
        m, p = _probe(fig, board, "mpy"), _probe(fig, board, "py")
        nr = ((fig.get("boards") or {}).get("reboot_messages") or {}).get(board)
        return ("(with `PROFILE` and a session file the whole run fits a heap of %s from `.py` source, "
                "%s from `.mpy`; a reboot that restores a full outbox (%s messages) and sends it, %s and %s: "
                "size for the larger; %s-bit figures)"
                % (kb(p and p["heap"]), kb(m and m["heap"]), nr or "n/a", kb(p and p.get("heap_reboot")),
                   kb(m and m.get("heap_reboot")), (fig.get("boards") or {}).get("bits", "?")))
    return f


def board_flash(board):
    def f(fig):
        if not fig.get("flash"):
            return "Flash figures: not measured in this run."
        stock_blocks = R.STOCK_FS[board][0]
        rows = ["| `session_file` | store | flash wear at 1 QoS 1 message/s (86-byte PUBLISH) | needs |",
                "|---|---|---|---|"]
        fs = "the %d KB filesystem half full" % (stock_blocks * 4)
        rows.append("| `\"/session.dmq\"` (a path) | session directory on LittleFS | %s erases per message: %s "
                    "for %s; a message over LittleFS's inline limit (%s) costs about one erase | nothing: the default |"
                    % (_f4(_slow(fig, board, "dir")), yfmt(_life(fig, board, "dir", 1.0, "stock")), fs,
                       "128 B on this mount" if board == "esp32" else "512 B on this mount"))
        rows.append("| `FileLog(\"/session.dmq\")` | 0.1.0's log file | %s erases per message: %s for %s | nothing |"
                    % (_f2(_slow(fig, board, "log")), yfmt(_life(fig, board, "log", 1.0, "stock")), fs))
        ring = ("`esp32.Partition` object" if board == "esp32" else "`rp2.Flash(start=..., len=...)`")
        need = ("a partition table with a spare data partition" if board == "esp32"
                else "firmware with a smaller filesystem")
        rows.append("| %s | raw ring | %s erases per message: %s for 64 KB (16 blocks), n/16 times that for n "
                    "blocks | %s |" % (ring, _f4(_slow(fig, board, "ring")), yfmt(_life(fig, board, "ring", 1.0)), need))
        return "\n".join(rows)
    return f


def board_ring_capacity(board):
    def f(fig):
        cap = ((fig.get("boards") or {}).get(board) or {}).get("ring_capacity") or {}
        return ("%s B (%s B at 128 KB, %s B at 256 KB; `RingStore(...).capacity` with `PROFILE`)"
                % (num(cap.get("16")), num(cap.get("32")), num(cap.get("64"))))
    return f


def board_ring_capacity16(board):
    def f(fig):
        cap = ((fig.get("boards") or {}).get(board) or {}).get("ring_capacity") or {}
        return "%s B" % num(cap.get("16"))
    return f


def _native(fig, arch):
    mpy = fig.get("mpy")
    if not mpy:
        return None, []
    mods = mpy["native"][arch]
    return sum(mpy["sizes"][arch][m] for m in mods), mods


def board_budget(board):
    arch = "xtensawin" if board == "esp32" else "armv6m"

    def f(fig):
        m, p = _probe(fig, board, "mpy"), _probe(fig, board, "py")
        bits = (fig.get("boards") or {}).get("bits", "?")
        nat, mods = _native(fig, arch)
        held = m and m["steps"]["steady"] is not None and m["steps"]["steady"] - m["steps"]["profile"]
        imp = m and m["steps"]["import"] is not None and m["steps"]["import"] - m["steps"]["profile"]
        meas = "*(measured, %s-bit unix port, `make bench`)*" % bits
        rows = ["| item | bytes | source |", "|---|---|---|"]
        if board == "esp32":
            gc_heap, tls = GC_ESP32, 0
            rows.append("| GC heap after boot, ESP32 without PSRAM | 57,344 (56 KB) at boot, grown once on demand "
                        "to 111,936, leaving ~40 KB of internal RAM to ESP-IDF for Wi-Fi and one TLS connection "
                        "| *(source)* `MICROPY_GC_INITIAL_HEAP_SIZE` in `ports/esp32/mpconfigport.h`; "
                        "micropython/micropython#13219, #12141 |")
            rows.append("| Wi-Fi | in the ESP-IDF heap, not the GC heap | *(source)* as above |")
            rows.append("| TLS | mbedTLS of ESP-IDF allocates from the ESP-IDF heap, not the GC heap: 16 KB in + 4 KB "
                        "out record buffers per connection, ~15 KB more during the handshake | *(source)* "
                        "`CONFIG_MBEDTLS_DEFAULT_MEM_ALLOC`, `CONFIG_MBEDTLS_ASYMMETRIC_CONTENT_LEN` in "
                        "`ports/esp32/boards/sdkconfig.base`; micropython/micropython#8940 |")
        else:
            gc_heap, tls = GC_PICOW, TLS_RP2
            rows.append("| GC heap after boot, Pico W | all the SRAM (264 KB) the firmware's static data leaves "
                        "(`__GcHeapStart` = end of .bss, `__GcHeapEnd` = end of RAM); ~150–190 KB once Wi-Fi is "
                        "up by one estimate; this budget takes 153,600 (150 KB) | *(source)* "
                        "`ports/rp2/memmap_rp2040/section_extra_post_platform_end.incl`, `ports/rp2/main.c`; "
                        "kevinmcaleer/snakeros#16 (an estimate, not a measurement) |")
            rows.append("| Wi-Fi (CYW43, lwIP) | static buffers outside the GC heap | *(source)* `ports/rp2` "
                        "(`MICROPY_PY_LWIP`, `CYW43_LWIP`) |")
            rows.append("| TLS | mbedTLS allocates from the **GC heap** (`m_tracked_calloc`): 16 KB in + 4 KB out "
                        "record buffers per connection, more during the handshake; this budget reserves 40,960 "
                        "(40 KB) | *(source)* `ports/rp2/mbedtls/mbedtls_config_port.h`, "
                        "`extmod/mbedtls/mbedtls_config_common.h`, `py/malloc.c` |")
        # (The bench's import figure, as README.md and docs/benchmarks.md
        # give it; the probe's own step, below in the RAM figures, holds its
        # bookkeeping too: 13,216 B where this is 12,624 B, 0.2.0.)
        sm = _b32(fig, "small + session file")
        imp = sm["import"] if sm else imp
        rows.append("| `import durable_mqtt` (.mpy; the RAM figures below measure it with the probe's own "
                    "bookkeeping, a few hundred bytes more) | %s | %s |" % (num(imp) if imp else "n/a", meas))
        rows.append("| the library and a `PROFILE` client with a session file, connected, after 20 QoS 1 round "
                    "trips (.mpy; held) | %s | %s |" % (num(held) if held else "n/a", meas))
        rows.append("| machine code (`-march=%s`: %s) | %s of .mpy, %s | `make mpy` |" % (
            arch, ", ".join("`%s`" % x[:-3] for x in mods) or "none", num(nat),
            "copied into executable RAM from the ESP-IDF heap (`MALLOC_CAP_EXEC`)" if board == "esp32"
            else "loaded into the GC heap"))
        nr = ((fig.get("boards") or {}).get("reboot_messages") or {}).get(board)
        rows.append("| smallest heap the whole run fits in, library as .mpy; after a reboot with the outbox full "
                    "(%s messages restored, then sent) | %s; %s | %s |"
                    % (nr or "n/a", num(m and m["heap"]), num(m and m.get("heap_reboot")), meas))
        rows.append("| smallest heap, library as .py source (`mpremote mip install github:...`); after that "
                    "reboot | %s; %s | %s |" % (num(p and p["heap"]), num(p and p.get("heap_reboot")), meas))
        left = []
        for v, d in ((".mpy", m), (".py", p)):
            if d and d["heap"]:
                x = gc_heap - tls - _worst(d)
                left.append("%s: %s" % (v, num(x) if x > 0 else "**does not fit** (%s short)" % num(-x)))
        rows.append("| **left for the application** (GC heap%s less the larger smallest heap) | %s | computed |"
                    % ("" if not tls else " less TLS", "; ".join(left) or "n/a"))
        return "\n".join(rows)
    return f


def _worst(d):
    # The larger smallest heap: a first boot, or a reboot restoring a full outbox.
    return max(d["heap"], d.get("heap_reboot") or 0)


def board_budget_text(board):
    def f(fig):
        m, p = _probe(fig, board, "mpy"), _probe(fig, board, "py")
        if not (m and p and m["heap"] and p["heap"]):
            return "Budget: not measured in this run."
        if board == "esp32":
            lm, lp = GC_ESP32 - _worst(m), GC_ESP32 - _worst(p)
            return ("So on an ESP32 without PSRAM the library from `.mpy` leaves %s of the grown GC heap to the "
                    "application, from `.py` source %s: %s TLS takes no GC heap on this chip."
                    % (kb(lm) if lm > 0 else "nothing", kb(lp) if lp > 0 else "nothing (it does not fit)",
                       "install `.mpy` (`make mpy`) or freeze the library when the application needs more;"
                       if lp < lm else ""))
        lm, lp = GC_PICOW - TLS_RP2 - _worst(m), GC_PICOW - TLS_RP2 - _worst(p)
        return ("So on a Pico W with one TLS connection (in the same heap) the library from `.mpy` leaves %s to "
                "the application, from `.py` source %s. Import the library before opening the TLS connection, so "
                "that compiling `.py` files and the TLS buffers do not need the heap at the same moment."
                % (kb(lm) if lm > 0 else "nothing", kb(lp) if lp > 0 else "nothing (it does not fit)"))
    return f


def board_ram(board):
    def f(fig):
        bd = fig.get("boards")
        if not bd:
            return "RAM figures: not measured in this run."
        return (R.probe_intro(fig) + " Written by `make bench` (`tools/bench/run.py`, part `boards`); "
                "`.venv/bin/pytest -q -s tests/test_boards.py -k ram` runs the same probe on the 64-bit port.\n\n"
                + R.probe_table(fig, board) + "\n\n"
                "* The byte buffers (two of `buf_size`, the outbox arena, the store's) are the same size on every "
                "port; objects and code are made of words, half their 64-bit size here.\n"
                "* The smallest heap includes the transient peak: compiling `.py` source at import.\n"
                "* The session path here is a directory on the host's filesystem; on a board's LittleFS each "
                "flash write also makes a short-lived file object (docs/benchmarks.md, heap per message).\n"
                "* TLS is not in these figures: see the budget above.")
    return f


def board_mpy(board):
    arch = "xtensawin" if board == "esp32" else "armv6m"

    def f(fig):
        if not fig.get("mpy"):
            return "(not measured)"
        nat, _ = _native(fig, arch)
        return ("%s bytes for the whole library, %s without the optional `robust` and `aio` front ends, "
                "%s of them machine code" % (num(R.mpy_total(fig, arch)), num(R.mpy_total(fig, arch, ("robust", "aio"))),
                                             num(nat)))
    return f


def install_romfs(fig):
    sm = _b32(fig, "small + session file")
    if not (sm and sm.get("heap_romfs")):
        return "needs far less heap than the same `.mpy` files on the filesystem (32-bit figures: not measured)"
    return ("needs %s B of heap on the 32-bit unix port, against %s B with the same `.mpy` files on the "
            "filesystem (`buf_size=256, max_inflight=4, receive_max=4`, a session file; `make bench`, the image "
            "not counted: on a board it is flash)" % (num(sm["heap_romfs"]), num(sm["heap_mpy"])))


BLOCKS = {
    "install-romfs": install_romfs,
    "readme-table": readme_table,
    "readme-alloc": readme_alloc,
    "readme-flash": readme_flash,
    "readme-lifetime": readme_lifetime,
    "readme-limit-flash": readme_limit_flash,
    "readme-limit-ram": readme_limit_ram,
    "readme-limit-rate": readme_limit_rate,
    "api-outbox-bytes": api_outbox_bytes,
    "migrate-code": migrate_code,
    "wear-method": wear_method,
    "wear-stream": wear_stream,
    "wear-slow": wear_slow,
    "wear-lifetime": wear_lifetime,
    "wear-targets": wear_targets,
}
for _b in ("esp32", "rp2040"):
    BLOCKS.update({
        _b + "-quick": board_quick(_b),
        _b + "-flash": board_flash(_b),
        _b + "-ring-capacity": board_ring_capacity(_b),
        _b + "-ring-capacity-16": board_ring_capacity16(_b),
        _b + "-budget": board_budget(_b),
        _b + "-budget-text": board_budget_text(_b),
        _b + "-ram": board_ram(_b),
        _b + "-mpy": board_mpy(_b),
    })


# ---------------------------------------------------------------- rewriting and checking

def render(text, fig):
    """The page with every marked block rewritten. A block whose generated
    text has several lines is written on lines of its own."""
    def sub(m):
        name = m.group(1)
        if name not in BLOCKS:
            raise KeyError("unknown figures block %r" % name)
        body = BLOCKS[name](fig)
        if m.group(2).startswith("\n") or "\n" in body:
            # on lines of their own, blank lines around: the markers never
            # become part of a table or a paragraph
            body = "\n\n" + body.strip("\n") + "\n\n"
        return "<!-- figures:%s -->%s<!-- /figures -->" % (name, body)
    return MARK.sub(sub, text)


def blocks(text):
    return [m.group(1) for m in MARK.finditer(text)]


def load(path=FIGURES):
    return json.loads(Path(path).read_text())


def check(fig, root=ROOT):
    """[problem] for every page or block that disagrees with fig."""
    problems = []
    for rel, f in WHOLE.items():
        p = Path(root) / rel
        if not p.exists() or p.read_text() != f(fig):
            problems.append("%s: differs from what tools/figures.py writes from docs/figures.json" % rel)
    for rel in PAGES:
        p = Path(root) / rel
        text = p.read_text()
        try:
            new = render(text, fig)
        except KeyError as e:
            problems.append("%s: %s" % (rel, e.args[0]))
            continue
        if new != text:
            old_b = {m.group(1): m.group(2) for m in MARK.finditer(text)}
            for m in MARK.finditer(new):
                if old_b.get(m.group(1)) != m.group(2):
                    problems.append("%s: block %r disagrees with docs/figures.json" % (rel, m.group(1)))
        for name in REQUIRED.get(rel, ()):
            if name not in blocks(text):
                problems.append("%s: the marked block %r is missing" % (rel, name))
        if text.count("<!-- figures:") != len(blocks(text)) or text.count("<!-- /figures -->") != len(blocks(text)):
            problems.append("%s: an unmatched figures marker" % rel)
    return problems


# Figures that look measured: the lint flags them outside marked blocks.
LINT = [
    (re.compile(r"\d[\d,.]*\s*(erases?|B programmed|bytes programmed)\b"), "flash wear per message"),
    (re.compile(r"\d[\d,.]*\s*(msg/s|messages/s|publishes/s|messages a second)"), "a rate"),
    (re.compile(r"\d+(\.\d+)?\s*(years|months|days)\b"), "a lifetime"),
    (re.compile(r"\d+w?K\b(?! \()|\d+wK"), "a heap size in K"),
    (re.compile(r"~?\d[\d,.]*\s*KB\s+(of\s+)?(heap|RAM|GC heap|machine code)"), "a RAM figure"),
    (re.compile(r"(heap|RAM|import)\b[^|\n.]{0,40}?\*\*\d[\d,.]*\s*(K|KB|B)\*\*"), "a RAM figure"),
    (re.compile(r"\d[\d,]*\s*B\s*/\s*msg|\d[\d,]*\s*bytes (a|per) message"), "heap per message"),
    (re.compile(r"\d+(\.\d+)?×\s*umqtt|about \d+x umqtt"), "a ratio to a peer"),
]
# Lines the lint accepts outside markers: quoted sources and units of
# configuration rather than measurements.
LINT_ALLOW = ["*(source)*", "MICROPY_HW_FLASH_STORAGE_BYTES", "0x10000", "0x40000"]


def lint(root=ROOT, pages=PAGES):
    """[(page, line number, what, line)] of measured-looking figures typed
    outside marked blocks (code blocks and HTML comments excluded)."""
    out = []
    for rel in pages:
        text = Path(root, rel).read_text()
        # blank the marked blocks, keeping line numbers
        text = MARK.sub(lambda m: "\n" * m.group(0).count("\n"), text)
        text = re.sub(r"<!--.*?-->", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
        fence = False
        for i, line in enumerate(text.splitlines(), 1):
            if line.lstrip().startswith("```"):
                fence = not fence
                continue
            if fence or line.startswith("    ") or any(a in line for a in LINT_ALLOW):
                continue
            for rx, what in LINT:
                if rx.search(line):
                    out.append((rel, i, what, line.strip()))
                    break
    return out


def write(fig, root=ROOT):
    changed = []
    for rel, f in WHOLE.items():
        p = Path(root) / rel
        new = f(fig)
        if not p.exists() or p.read_text() != new:
            p.write_text(new)
            changed.append(rel)
    for rel in PAGES:
        p = Path(root) / rel
        text = p.read_text()
        new = render(text, fig)
        if new != text:
            p.write_text(new)
            changed.append(rel)
    return changed


def summary(fig):
    """What `make bench` prints at the end."""
    L = ["", "Targets:", ""]
    for issue, t, m, v in R.targets(fig):
        L.append("  [%s] %-7s %s: %s" % (v.upper() if v != "met" else "met", issue, t, m))
    t = R.b32_table(fig)
    L += ["", "32-bit:", "", t if t else "  skipped: " + fig.get("b32_note", "")]
    L += ["", "64-bit:", "", R.main_table(fig)]
    if fig.get("flash"):
        for mount in ("esp32", "rp2040"):
            L += ["", "Flash, stock %s:" % R.MOUNT_NAMES[mount], "", R.flash_stream_table(fig, mount)]
        L += ["", "Flash, one message at a time:", "", R.flash_slow_table(fig)]
    if fig.get("b32_note"):
        L += ["", "NOTE: " + fig["b32_note"]]
    return "\n".join(L)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--figures", default=str(FIGURES))
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 on a difference")
    ap.add_argument("--lint", action="store_true", help="list figures typed outside markers")
    a = ap.parse_args(argv)
    fig = load(a.figures)
    if a.lint:
        found = lint()
        for rel, i, what, line in found:
            print("%s:%d: %s: %s" % (rel, i, what, line))
        return 1 if found else 0
    if a.check:
        problems = check(fig)
        for p in problems:
            print(p)
        return 1 if problems else 0
    for rel in write(fig):
        sys.stderr.write("figures: wrote %s\n" % rel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
