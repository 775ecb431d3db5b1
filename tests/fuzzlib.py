"""Seeded mutation fuzzing of durable_mqtt: the CPython half.

Two fuzzers share this module (tests/test_fuzz.py drives both):

A. Protocol. `FuzzBroker` is a fake broker on a loopback port that serves
   one *case* per TCP connection: a seeded-random, valid stream a broker may
   send after CONNECT (CONNACK, PUBLISH, acks, SUBACK, PINGRESP, DISCONNECT),
   usually mutated (`Case`, `mutate_packet`). It also reads what the client sends and
   answers it (SUBACK, PUBACK/PUBREC/PUBCOMP, PINGRESP), itself sometimes
   mutated. tests/mp/fuzz_client.py (MicroPython) runs thousands of cases in
   one process and reports, per case, every exception and every delivered
   message. `judge_protocol_case` checks them against `Reading`, a strict
   reference reading of exactly the bytes the broker sent (written from the
   MQTT 3.1.1 and 5.0 specifications; each problem names its clause).

B. Session store. tests/mp/fuzz_store.py writes valid session images (file
   and raw flash ring) with the library, then loads thousands of mutated
   copies (`store_recipes`) through the public constructor; `StoreBroker`
   records what a restored client resends, `judge_store_case` checks it.

Replay one case (prints every frame, its reading and the verdict). The
scripted stream of a case is a function of its seed; where the broker's
answers to the client land between the scripted chunks depends on timing, so
a replay may interleave them a little differently (the printed reading is
always of the bytes actually sent in that run). A case in a reuse chain is
replayed from the chain's first case.

    .venv/bin/python tests/fuzzlib.py replay 4:1:1234      # protocol, version:seed:case
    .venv/bin/python tests/fuzzlib.py store-replay 1:ring:57

Failure kinds are named after the problem the reference reader found, with
a tier: "malformed" (the packet does not decode exactly: ill-formed or
forbidden Topic Names, property blocks, lengths, flags; what API.md's rule
on malformed packets covers) or "protocol" (it decodes, but breaks a MUST of
the specification: DUP on QoS 0, a non-minimal variable byte integer, a
Topic Alias the client never allowed, CONNACK values, limits the CONNACK set
for the client). "after-TYPE/problem" is a message delivered after a TYPE
packet with that problem, on which the client had to close the connection.
FUZZ_IGNORE=kind,kind (environment) treats those kinds as acceptable.

Everything here is stdlib only. Never imported by MicroPython.
"""
import json
import os
import pathlib
import queue
import random
import select
import socket
import struct
import subprocess
import sys
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
# FUZZ_LIB=/some/dir/lib fuzzes another copy of the library (e.g. a `git
# archive` of an older commit) instead of this checkout's lib/.
LIB = pathlib.Path(os.environ.get("FUZZ_LIB") or ROOT / "lib")
MP_DIR = HERE / "mp"
CLIENT_SCRIPT = MP_DIR / "fuzz_client.py"
STORE_SCRIPT = MP_DIR / "fuzz_store.py"


def micropython_binary():
    cand = pathlib.Path(sys.executable).parent / "micropython"
    if cand.exists():
        return str(cand)
    return str(ROOT / ".venv" / "bin" / "micropython")


def mp_env():
    env = dict(os.environ)
    env["MICROPYPATH"] = ":".join([str(LIB), str(MP_DIR), ".frozen"])
    return env


# Must match tests/mp/fuzz_client.py.
CHAIN = 6                      # cases per client object in a reuse chain
CLIENT_TIMEOUT_MS = 1500       # the client's timeout_ms
# A case may legitimately wait timeout_ms twice (CONNACK, then SUBACK); the
# fake broker itself closes every case within ~0.3 s. Slack on top for a
# loaded 2-core machine.
CASE_BOUND_MS = 2 * CLIENT_TIMEOUT_MS + 1500


# ====================================================================== encoding

from fakebroker import pkt, vbi  # noqa: E402  (the same packet framing as the scripted tests)

def u16(n):
    return struct.pack(">H", n & 0xFFFF)


def u32(n):
    return struct.pack(">I", n & 0xFFFFFFFF)


def lstr(b):
    return u16(len(b)) + b


# MQTT 5 properties (section 2.2.2.2): id -> (name, data type).
PROPS = {
    0x01: ("payload_format", "byte"), 0x02: ("message_expiry", "u32"),
    0x03: ("content_type", "str"), 0x08: ("response_topic", "str"),
    0x09: ("correlation_data", "bin"), 0x0B: ("subscription_id", "vbi"),
    0x11: ("session_expiry", "u32"), 0x12: ("assigned_client_id", "str"),
    0x13: ("server_keep_alive", "u16"), 0x15: ("auth_method", "str"),
    0x16: ("auth_data", "bin"), 0x17: ("request_problem_info", "byte"),
    0x18: ("will_delay", "u32"), 0x19: ("request_response_info", "byte"),
    0x1A: ("response_info", "str"), 0x1C: ("server_reference", "str"),
    0x1F: ("reason_string", "str"), 0x21: ("receive_maximum", "u16"),
    0x22: ("topic_alias_maximum", "u16"), 0x23: ("topic_alias", "u16"),
    0x24: ("maximum_qos", "byte"), 0x25: ("retain_available", "byte"),
    0x26: ("user_property", "pair"), 0x27: ("maximum_packet_size", "u32"),
    0x28: ("wildcard_sub_available", "byte"), 0x29: ("sub_id_available", "byte"),
    0x2A: ("shared_sub_available", "byte"),
}
# Which properties each packet a server sends may carry (the table in 2.2.2.2).
ALLOWED = {
    "CONNACK": {0x11, 0x21, 0x24, 0x25, 0x27, 0x12, 0x22, 0x1F, 0x26, 0x28, 0x29, 0x2A,
                0x13, 0x1A, 0x1C, 0x15, 0x16},
    "PUBLISH": {0x01, 0x02, 0x23, 0x08, 0x09, 0x26, 0x0B, 0x03},
    "ACK": {0x1F, 0x26},            # PUBACK, PUBREC, PUBREL, PUBCOMP
    "SUBACK": {0x1F, 0x26},
    "UNSUBACK": {0x1F, 0x26},
    "DISCONNECT": {0x11, 0x1F, 0x26, 0x1C},
    "AUTH": {0x15, 0x16, 0x1F, 0x26},
    "CONNECT": {0x11, 0x21, 0x27, 0x22, 0x19, 0x17, 0x26, 0x15, 0x16},
    "WILL": {0x18, 0x01, 0x02, 0x03, 0x08, 0x09, 0x26},
    "SUBSCRIBE": {0x0B, 0x26},
    "UNSUBSCRIBE": {0x26},
}


def enc_prop(pid, value):
    kind = PROPS[pid][1]
    if kind == "byte":
        v = bytes((value,))
    elif kind == "u16":
        v = u16(value)
    elif kind == "u32":
        v = u32(value)
    elif kind == "vbi":
        v = vbi(value)
    elif kind in ("str", "bin"):
        v = lstr(value)
    else:
        v = lstr(value[0]) + lstr(value[1])
    return bytes((pid,)) + v


def enc_props(props):
    """[(id, value)] -> the property block with its length prefix."""
    data = b"".join(enc_prop(i, v) for i, v in props)
    return vbi(len(data)) + data


NAMES = {0x20: "CONNACK", 0x30: "PUBLISH", 0x40: "PUBACK", 0x50: "PUBREC", 0x60: "PUBREL",
         0x70: "PUBCOMP", 0x90: "SUBACK", 0xB0: "UNSUBACK", 0xD0: "PINGRESP", 0xE0: "DISCONNECT",
         0xF0: "AUTH", 0x00: "type 0", 0x10: "CONNECT", 0x80: "SUBSCRIBE", 0xA0: "UNSUBSCRIBE",
         0xC0: "PINGREQ"}


class P:
    """One packet of a case, kept as fields so that structure-aware
    mutations can change one field and re-encode with exact lengths.
    `raw` (bytes) overrides everything once a byte-level mutation hit it;
    `props_raw` replaces the property block (length prefix included)."""

    def __init__(self, kind, **f):
        self.kind = kind
        self.f = f
        self.raw = None
        self.props_raw = None

    def copy(self):
        p = P(self.kind, **dict(self.f))
        p.raw = self.raw
        p.props_raw = self.props_raw
        return p

    def _block(self, version):
        if version != 5:
            return b""
        if self.props_raw is not None:
            return self.props_raw
        return enc_props(self.f.get("props") or [])

    def encode(self, v):
        if self.raw is not None:
            return self.raw
        f = self.f
        k = self.kind
        if k == "CONNACK":
            return pkt(0x20, bytes((f["sp"], f["code"])) + self._block(v))
        if k == "PUBLISH":
            first = 0x30 | (f.get("dup", 0) << 3) | (f["qos"] << 1) | f.get("retain", 0)
            body = lstr(f["topic"]) + (u16(f["pid"]) if f["qos"] else b"")
            return pkt(first, body + self._block(v) + f["payload"])
        if k == "ACK":
            body = u16(f["pid"])
            if v == 5:
                has_props = self.props_raw is not None or f.get("props") is not None
                if f.get("reason") is not None or has_props:
                    body += bytes((f.get("reason") or 0,))
                if has_props:
                    body += self._block(v)
            return pkt(f["type"], body)
        if k in ("SUBACK", "UNSUBACK"):
            first = 0x90 if k == "SUBACK" else 0xB0
            if v == 4 and k == "UNSUBACK":
                return pkt(first, u16(f["pid"]))
            return pkt(first, u16(f["pid"]) + self._block(v) + bytes(f["codes"]))
        if k == "PINGRESP":
            return b"\xd0\x00"
        if k == "DISCONNECT":
            body = b""
            if f.get("reason") is not None or f.get("props") is not None or self.props_raw is not None:
                body = bytes((f.get("reason") or 0,))
                if f.get("props") is not None or self.props_raw is not None:
                    body += self._block(v)
            return pkt(0xE0, body)
        raise ValueError(k)


# ====================================================================== UTF-8, topics

def utf8_problem(b):
    """None when `b` is well-formed UTF-8 (Unicode table 3-7, RFC 3629)
    without U+0000; else ("nul" | "utf8", text)."""
    i, n = 0, len(b)
    while i < n:
        c = b[i]
        if c == 0:
            return "nul", "U+0000 at byte %d (MQTT-1.5.4-2; 3.1.1: MQTT-1.5.3-2)" % i
        if c < 0x80:
            i += 1
            continue
        if 0xC2 <= c <= 0xDF:
            need, lo, hi = 1, 0x80, 0xBF
        elif c == 0xE0:
            need, lo, hi = 2, 0xA0, 0xBF
        elif 0xE1 <= c <= 0xEC or 0xEE <= c <= 0xEF:
            need, lo, hi = 2, 0x80, 0xBF
        elif c == 0xED:
            need, lo, hi = 2, 0x80, 0x9F
        elif c == 0xF0:
            need, lo, hi = 3, 0x90, 0xBF
        elif 0xF1 <= c <= 0xF3:
            need, lo, hi = 3, 0x80, 0xBF
        elif c == 0xF4:
            need, lo, hi = 3, 0x80, 0x8F
        else:
            if 0x80 <= c <= 0xBF:
                what = "lone continuation byte"
            elif c in (0xC0, 0xC1):
                what = "overlong 2-byte lead"
            elif 0xF5 <= c <= 0xF7:
                what = "lead byte of a code point above U+10FFFF"
            elif 0xF8 <= c <= 0xFB:
                what = "5-byte sequence lead"
            elif c in (0xFC, 0xFD):
                what = "6-byte sequence lead"
            else:
                what = "byte never valid in UTF-8"
            return "utf8", "ill-formed UTF-8: %s 0x%02x at byte %d (MQTT-1.5.4-1; 3.1.1: MQTT-1.5.3-1)" % (what, c, i)
        for k in range(1, need + 1):
            if i + k >= n:
                return "utf8", "ill-formed UTF-8: truncated sequence at byte %d (MQTT-1.5.4-1; 3.1.1: MQTT-1.5.3-1)" % i
            d = b[i + k]
            a, z = (lo, hi) if k == 1 else (0x80, 0xBF)
            if not a <= d <= z:
                if k == 1 and c == 0xED and d >= 0xA0:
                    what = "UTF-16 surrogate encoded"
                elif k == 1 and c in (0xE0, 0xF0) and d < lo:
                    what = "overlong encoding"
                elif k == 1 and c == 0xF4 and d > 0x8F:
                    what = "code point above U+10FFFF"
                else:
                    what = "bad continuation byte 0x%02x" % d
                return "utf8", "ill-formed UTF-8: %s at byte %d (MQTT-1.5.4-1; 3.1.1: MQTT-1.5.3-1)" % (what, i)
        i += need + 1
    return None


VALID_TOPICS = [
    b"a/b", b"fz/1", b"fz/x/y", b"sensor/17/temperature", "café/☃".encode(),
    "温度/東京".encode(), "emoji/😀/ok".encode(), b"/", b"a//b", b" ", b"$SYS/broker/load",
    "\u0080\u00ff\u0100\u07ff\u0800\ud7ff\ue000\ufffd\U00010000\U0010ffff".encode(),
    b"t" * 120, "ü".encode() * 40, b"a/b/c/d/e/f/g/h", b"UPPER/lower/123", "Ω/€/𝄞".encode(),
]

# Ill-formed Topic Names (MQTT-1.5.4-1/-2, MQTT-3.3.2-2, MQTT-4.7.3-1).
BAD_FRAGMENTS = [
    b"+", b"#", b"a/+", b"a/#", b"+/b", b"a/+/c", b"\x00", b"a\x00b",
    b"\xc0\xaf", b"\xc1\xbf", b"\xe0\x80\xaf", b"\xe0\x9f\xbf", b"\xf0\x80\x80\xaf", b"\xf0\x8f\xbf\xbf",
    b"\xc0\x80",                                   # overlong U+0000 (modified UTF-8)
    b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xed\xb2\x80", b"\xed\xa0\xbd\xed\xb8\x80",   # surrogates (CESU-8)
    b"\x80", b"\xbf", b"\x80\x80", b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98",          # lone / truncated
    b"\xf8\x88\x80\x80\x80", b"\xfb\xbf\xbf\xbf\xbf", b"\xfc\x84\x80\x80\x80\x80",  # 5- and 6-byte forms
    b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xf7\xbf\xbf\xbf",                  # above U+10FFFF
    b"\xfe", b"\xff", b"\xc3\x28", b"\xe2\x28\xa1",
]


def bad_topic(rng):
    frag = rng.choice(BAD_FRAGMENTS)
    how = rng.random()
    if how < 0.08:
        return b""
    if how < 0.4:
        return frag
    if how < 0.7:
        return rng.choice(VALID_TOPICS)[:20] + frag
    return rng.choice([b"a/", b"x", "é/".encode()]) + frag + rng.choice([b"", b"/z", "ß".encode()])


def valid_string(rng, maxlen=24):
    choice = rng.random()
    if choice < 0.4:
        return bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz0123456789-_/. ") for _ in range(rng.randint(0, maxlen)))
    if choice < 0.7:
        return rng.choice(["text/plain", "application/json", "ü", "温度", "k", "😀", "", "a=b; c"]).encode()
    chars = [chr(rng.choice([rng.randint(0x20, 0x7E), rng.randint(0xA0, 0x7FF), rng.randint(0x800, 0xD7FF),
                             rng.randint(0xE000, 0xFFFD), rng.randint(0x10000, 0x10FFFF)]))
             for _ in range(rng.randint(0, 6))]
    return "".join(chars).encode()


def valid_topic(rng):
    if rng.random() < 0.7:
        return rng.choice(VALID_TOPICS)
    return b"fz/" + valid_string(rng).replace(b"+", b"p").replace(b"#", b"h")


# ====================================================================== reference reading

class Problem:
    __slots__ = ("kind", "tier", "text")

    def __init__(self, kind, tier, text):
        self.kind = kind
        self.tier = tier       # "malformed": does not decode exactly; "protocol": decodes, but a MUST is broken
        self.text = text

    def __repr__(self):
        return "%s: %s" % (self.kind, self.text)


def read_vbi(b, off, end):
    """(value, bytes used, minimal) or None when truncated / longer than 4 bytes."""
    v = 0
    for k in range(4):
        if off + k >= end:
            return None
        c = b[off + k]
        v |= (c & 0x7F) << (7 * k)
        if not c & 0x80:
            n = k + 1
            return v, n, n == len(vbi(v))
    return None


def parse_props(b, off, end, ptype, version, probs, where):
    """Strict reading of a property block at b[off:]. Returns (list of
    (id, value), offset after the block), or None when the block cannot be
    walked (a problem is recorded)."""
    r = read_vbi(b, off, end)
    if r is None:
        probs.append(Problem("props-length", "malformed", "%s property length is not a valid variable byte integer" % where))
        return None
    ln, used, minimal = r
    if not minimal:
        probs.append(Problem("vbi-non-minimal", "protocol", "%s property length %d is not minimally encoded (MQTT-1.5.5-1)" % (where, ln)))
    p = off + used
    stop = p + ln
    if stop > end:
        probs.append(Problem("props-length", "malformed", "%s property length %d runs %d bytes past the packet" % (where, ln, stop - end)))
        return None
    seen = set()
    out = []
    while p < stop:
        r = read_vbi(b, p, stop)
        if r is None:
            probs.append(Problem("props-truncated", "malformed", "%s: property identifier cut off" % where))
            return None
        pid, used, _ = r
        p += used
        if pid not in PROPS or used != 1:
            probs.append(Problem("props-unknown-id", "malformed", "%s: unknown property identifier 0x%02x (MQTT 5 2.2.2.2)" % (where, pid)))
            return None
        name, kind = PROPS[pid]
        if pid not in ALLOWED[ptype]:
            probs.append(Problem("props-not-allowed", "malformed",
                                 "%s: property 0x%02x %s is not allowed in %s (2.2.2.2)" % (where, pid, name, ptype)))
        size = {"byte": 1, "u16": 2, "u32": 4}.get(kind)
        if size:
            if p + size > stop:
                probs.append(Problem("props-truncated", "malformed", "%s: property 0x%02x %s cut off by the block end" % (where, pid, name)))
                return None
            val = int.from_bytes(b[p:p + size], "big")
            p += size
        elif kind == "vbi":
            r = read_vbi(b, p, stop)
            if r is None:
                probs.append(Problem("props-truncated", "malformed", "%s: property 0x%02x %s is not a valid variable byte integer" % (where, pid, name)))
                return None
            val, used, minimal = r
            if not minimal:
                probs.append(Problem("vbi-non-minimal", "protocol", "%s: property 0x%02x value not minimally encoded (MQTT-1.5.5-1)" % (where, pid)))
            p += used
        else:
            parts = []
            for _ in range(2 if kind == "pair" else 1):
                if p + 2 > stop or p + 2 + int.from_bytes(b[p:p + 2], "big") > stop:
                    probs.append(Problem("props-truncated", "malformed", "%s: property 0x%02x %s runs past the block end" % (where, pid, name)))
                    return None
                n = int.from_bytes(b[p:p + 2], "big")
                s = bytes(b[p + 2:p + 2 + n])
                p += 2 + n
                if kind != "bin":
                    bad = utf8_problem(s)
                    if bad:
                        probs.append(Problem("props-" + bad[0], "malformed", "%s: property 0x%02x %s: %s" % (where, pid, name, bad[1])))
                parts.append(s)
            val = tuple(parts) if kind == "pair" else parts[0]
        multi = pid == 0x26 or (pid == 0x0B and ptype == "PUBLISH")
        if pid in seen and not multi:
            probs.append(Problem("props-duplicate", "protocol", "%s: property 0x%02x %s more than once" % (where, pid, name)))
        seen.add(pid)
        out.append((pid, val))
    return out, stop


def topic_problems(topic, version, probs, where="Topic Name"):
    if not topic:
        probs.append(Problem("topic-empty", "malformed",
                             "%s is empty (MQTT-4.7.3-1%s)" % (where, "; 5.0 allows it only with a Topic Alias, and the client allows none" if version == 5 else "")))
        return
    bad = utf8_problem(topic)
    if bad:
        probs.append(Problem("topic-" + bad[0], "malformed", "%s %s" % (where, bad[1])))
    if b"+" in topic or b"#" in topic:
        probs.append(Problem("topic-wildcard", "malformed", "%s contains a wildcard '+' or '#' (MQTT-3.3.2-2)" % where))


class Msg:
    __slots__ = ("topic", "payload", "qos", "retain", "pid", "dup", "props")

    def __init__(self, topic, payload, qos, retain, pid, dup, props):
        self.topic, self.payload, self.qos, self.retain = topic, payload, qos, retain
        self.pid, self.dup, self.props = pid, dup, props

    def key(self):
        return (self.topic, self.payload, self.qos, self.retain)


def check_publish(first, body, version, probs, from_server=True):
    """Strict reading of a PUBLISH. Returns its Msg when the fields can be
    read at all (maybe with problems recorded), else None."""
    qos = (first >> 1) & 3
    dup = (first >> 3) & 1
    retain = first & 1
    if qos == 3:
        probs.append(Problem("publish-qos3", "malformed", "PUBLISH with both QoS bits set (MQTT-3.3.1-4)"))
        return None
    if dup and qos == 0:
        probs.append(Problem("publish-dup-qos0", "protocol", "PUBLISH QoS 0 with DUP 1 (MQTT-3.3.1-2)"))
    n = len(body)
    if n < 2:
        probs.append(Problem("publish-short", "malformed", "PUBLISH of %d bytes has no Topic Name length" % n))
        return None
    tl = int.from_bytes(body[0:2], "big")
    off = 2 + tl
    if off + (2 if qos else 0) > n:
        probs.append(Problem("publish-topic-length", "malformed", "Topic Name length %d runs past the %d-byte packet" % (tl, n)))
        return None
    topic = bytes(body[2:off])
    pid = 0
    if qos:
        pid = int.from_bytes(body[off:off + 2], "big")
        off += 2
        if pid == 0:
            probs.append(Problem("publish-pid0", "protocol", "PUBLISH QoS %d with Packet Identifier 0 (3.1.1: MQTT-2.3.1-1; 5.0: MQTT-2.2.1-4)" % qos))
    props = []
    if version == 5:
        r = parse_props(body, off, n, "PUBLISH", 5, probs, "PUBLISH")
        if r is None:
            return None
        props, off = r
        for pid_, val in props:
            if pid_ == 0x23:
                probs.append(Problem("topic-alias", "protocol", "PUBLISH with Topic Alias %d: the client announced no Topic Alias Maximum, i.e. 0 (MQTT-3.3.2-11; 3.3.2.3.4)" % val))
            elif pid_ == 0x0B:
                if val == 0:
                    probs.append(Problem("props-value", "protocol", "Subscription Identifier 0; its range is 1 to 268,435,455 (3.3.2.3.8)"))
                if not from_server:
                    probs.append(Problem("props-not-allowed", "protocol", "client PUBLISH with a Subscription Identifier (MQTT-3.3.4-6)"))
            elif pid_ == 0x08 and (b"+" in val or b"#" in val):
                probs.append(Problem("props-value", "protocol", "Response Topic with a wildcard (MQTT-3.3.2-14)"))
    topic_problems(topic, version, probs)
    return Msg(topic, bytes(body[off:]), qos, retain, pid, dup, props)


def loose_publish(first, body, version):
    """The fields a lenient reader would take from a PUBLISH (for naming
    which frame a bad delivery came from), or None."""
    try:
        qos = (first >> 1) & 3
        tl = int.from_bytes(body[0:2], "big")
        if len(body) < 2 or 2 + tl > len(body):
            return None
        topic = bytes(body[2:2 + tl])
        off = 2 + tl + (2 if qos else 0)
        if version == 5:
            r = read_vbi(body, off, len(body))
            if r is None:
                return None
            off += r[1] + r[0]
        if off > len(body):
            return None
        return (topic, bytes(body[off:]), qos, first & 1)
    except Exception:
        return None


ACK_TYPES = {0x40: "PUBACK", 0x50: "PUBREC", 0x60: "PUBREL", 0x70: "PUBCOMP"}


def check_server_packet(first, body, version, probs, connect_clean=None, is_first=False):
    """Strict reading of one complete packet a server sent. Returns a dict
    of what it means to the reference (type name, Msg for a PUBLISH, pid,
    refusal, ...). Problems go to probs."""
    t = first & 0xF0
    flags = first & 0x0F
    name = NAMES.get(t, "type 0x%02x" % t)
    info = {"type": name}
    n = len(body)
    if t != 0x30:
        want = 2 if t == 0x60 else 0
        if flags != want and t in (0x20, 0x40, 0x50, 0x60, 0x70, 0x90, 0xB0, 0xD0, 0xE0, 0xF0):
            probs.append(Problem("reserved-flags", "malformed", "%s with flags 0x%x, must be 0x%x (2.1.3; 3.1.1: MQTT-2.2.2-2)" % (name, flags, want)))
    if is_first and t != 0x20:
        probs.append(Problem("no-connack", "protocol", "first packet is %s, not CONNACK (MQTT-3.2.0-1)" % name))
    if t == 0x20:
        if not is_first:
            probs.append(Problem("second-connack", "protocol", "a second CONNACK on one connection (5.0: MQTT-3.2.0-2; 3.1.1: a protocol violation, 4.8)"))
            return info
        if version == 4:
            if n != 2:
                probs.append(Problem("connack-length", "malformed", "3.1.1 CONNACK of %d bytes, must be 2" % n))
                return info
        elif n < 3:
            probs.append(Problem("connack-length", "malformed", "5.0 CONNACK of %d bytes: no property length" % n))
            return info
        sp, code = body[0] & 1, body[1]
        info["code"] = code
        info["sp"] = sp
        if body[0] & 0xFE:
            probs.append(Problem("connack-flags", "malformed", "CONNACK acknowledge flags 0x%02x: bits 7-1 are reserved (3.2.2.1; 5.0: MQTT-3.2.2-1)" % body[0]))
        if sp and code:
            probs.append(Problem("connack-session-present", "protocol", "CONNACK refusal 0x%02x with Session Present 1 (%s)" % (code, "MQTT-3.2.2-4" if version == 4 else "MQTT-3.2.2-6")))
        elif sp and connect_clean:
            probs.append(Problem("connack-session-present", "protocol", "Session Present 1 answering Clean %s 1 (%s)"
                                 % (("Session", "MQTT-3.2.2-1") if version == 4 else ("Start", "MQTT-3.2.2-2"))))
        if version == 5:
            r = parse_props(body, 2, n, "CONNACK", 5, probs, "CONNACK")
            if r is not None:
                props, end = r
                info["props"] = dict(props)
                if end != n:
                    probs.append(Problem("trailing-bytes", "malformed", "CONNACK has %d bytes after its properties" % (n - end)))
                for pid, val in props:
                    if (pid == 0x21 and val == 0) or (pid == 0x27 and val == 0) \
                            or (pid in (0x24, 0x25, 0x28, 0x29, 0x2A) and val > 1):
                        probs.append(Problem("connack-value", "protocol", "CONNACK property 0x%02x %s = %d is a Protocol Error (3.2.2.3)"
                                             % (pid, PROPS[pid][0], val)))
                    if pid in (0x15, 0x16):
                        probs.append(Problem("connack-auth", "protocol", "CONNACK with %s though the CONNECT had no Authentication Method (MQTT-4.12.0-6)" % PROPS[pid][0]))
        info["refused"] = (1 <= code <= 5) if version == 4 else code >= 0x80
        return info
    if t == 0x30:
        info["msg"] = check_publish(first, body, version, probs)
        return info
    if t in ACK_TYPES:
        info["type"] = name = ACK_TYPES[t]
        if n < 2 or (version == 4 and n != 2):
            probs.append(Problem("ack-length", "malformed", "%s of %d bytes (%s)" % (name, n, "must be 2" if version == 4 else "needs a packet id")))
            if n < 2:
                return info
        pid = int.from_bytes(body[0:2], "big")
        info["pid"] = pid
        info["reason"] = body[2] if version == 5 and n > 2 else 0
        if pid == 0:
            probs.append(Problem("ack-pid0", "protocol", "%s with Packet Identifier 0: it must echo a non-zero id (2.2.1; 3.1.1: 2.3.1)" % name))
        if version == 5 and n >= 4:
            r = parse_props(body, 3, n, "ACK", 5, probs, name)
            if r is not None and r[1] != n:
                probs.append(Problem("trailing-bytes", "malformed", "%s has %d bytes after its properties" % (name, n - r[1])))
        return info
    if t in (0x90, 0xB0):
        if version == 4 and t == 0xB0:
            if n != 2:
                probs.append(Problem("unsuback-length", "malformed", "3.1.1 UNSUBACK of %d bytes, must be 2" % n))
            return info
        if n < 2:
            probs.append(Problem("suback-length", "malformed", "%s of %d bytes" % (name, n)))
            return info
        info["pid"] = int.from_bytes(body[0:2], "big")
        if info["pid"] == 0:
            probs.append(Problem("ack-pid0", "protocol", "%s with Packet Identifier 0: it must echo a non-zero id (2.2.1; 3.1.1: 2.3.1)" % name))
        off = 2
        if version == 5:
            r = parse_props(body, 2, n, name, 5, probs, name)
            if r is None:
                return info
            off = r[1]
        if off >= n:
            probs.append(Problem("suback-length", "malformed" if t == 0x90 else "protocol", "%s without a return code (3.9.3 / 3.11.3)" % name))
        if version == 4:
            for c in body[off:]:
                if c not in (0, 1, 2, 0x80):
                    probs.append(Problem("suback-code", "protocol", "SUBACK return code 0x%02x is reserved (MQTT-3.9.3-2)" % c))
                    break
        return info
    if t == 0xD0:
        if n:
            probs.append(Problem("pingresp-length", "malformed", "PINGRESP with %d body bytes" % n))
        return info
    if t == 0xE0:
        if version == 4:
            probs.append(Problem("unexpected-type", "protocol", "DISCONNECT from a 3.1.1 server (the packet is client to server only)"))
            return info
        info["disconnect"] = True
        if n >= 2:
            r = parse_props(body, 1, n, "DISCONNECT", 5, probs, "DISCONNECT")
            if r is not None:
                if r[1] != n:
                    probs.append(Problem("trailing-bytes", "malformed", "DISCONNECT has %d bytes after its properties" % (n - r[1])))
                if any(pid == 0x11 for pid, _ in r[0]):
                    probs.append(Problem("disconnect-session-expiry", "protocol", "server DISCONNECT with a Session Expiry Interval (MQTT-3.14.2-2)"))
        return info
    if t == 0x00 or (t == 0xF0 and version == 4):
        probs.append(Problem("reserved-type", "malformed", "packet type %d is reserved" % (t >> 4)))
        return info
    if t == 0xF0:
        probs.append(Problem("unexpected-auth", "protocol", "AUTH though the client sent no Authentication Method (MQTT-4.12.0-6)"))
        return info
    probs.append(Problem("unexpected-type", "protocol", "%s is a client-to-server packet" % name))
    return info


class Frame:
    __slots__ = ("index", "off", "first", "body", "hlen", "complete", "rl_ok", "rl_minimal", "rl")

    def __init__(self, index, off):
        self.index = index
        self.off = off
        self.first = None
        self.body = b""
        self.hlen = 0
        self.complete = False
        self.rl_ok = True
        self.rl_minimal = True
        self.rl = 0

    @property
    def total(self):
        return self.hlen + self.rl

    def raw(self, data):
        return bytes(data[self.off:self.off + self.hlen + len(self.body)])


def split_frames(data):
    """Frames of a byte stream exactly as a receiver reads them: first byte,
    Remaining Length (at most 4 bytes), body. The last frame may be
    incomplete; framing stops at a Remaining Length longer than 4 bytes."""
    frames = []
    off = 0
    n = len(data)
    while off < n:
        f = Frame(len(frames), off)
        frames.append(f)
        f.first = data[off]
        r = read_vbi(data, off + 1, n)
        if r is None:
            if n - (off + 1) >= 4:
                f.rl_ok = False          # a 5th length byte: nothing after this can be framed
            f.hlen = n - off
            return frames
        f.rl, used, f.rl_minimal = r
        f.hlen = 1 + used
        end = off + f.hlen + f.rl
        f.body = bytes(data[off + f.hlen:min(end, n)])
        if end > n:
            return frames
        f.complete = True
        off = end
    return frames


class Reading:
    """The reference reading of everything a broker sent on one connection.
    Per frame: `status` is one of
      "deliverable"  a well-formed PUBLISH the client may deliver
      "dup"          a well-formed QoS 2 PUBLISH whose packet id awaits PUBREL: must not be delivered again
      "neutral"      anything else the client may accept or refuse (acks, pings, oversize packets)
      "bad"          malformed or a protocol error: the client must close here; nothing from here on may be delivered
      "closing"      CONNACK refusal or DISCONNECT: the connection ends here
      "after"        after a bad/closing frame
      "partial"      incomplete at the end of the stream
    """

    def __init__(self, data, version, buf_size, connect_clean, ignore=()):
        self.data = data
        self.frames = split_frames(data)
        self.status = []
        self.problems = []
        self.info = []
        self.cut = None          # (frame index, kind, text) where the client had to stop
        rx2 = set()
        for f in self.frames:
            probs = []
            info = {}
            st = None
            if not f.rl_ok:
                probs.append(Problem("rl-too-long", "malformed", "Remaining Length longer than 4 bytes (1.5.5)"))
                st = "bad"
            elif not f.complete:
                st = "partial"
            elif f.total > buf_size:
                # Larger than the client's buffer: an oversize PUBLISH is
                # drained and refused, anything else ends the link (the API's
                # rule). Neither may be delivered; neither is judged further.
                st = "neutral"
                info = {"type": NAMES.get(f.first & 0xF0, "?"), "oversize": True}
                if f.index == 0:
                    st = "closing"
            else:
                if version == 5 and not f.rl_minimal:
                    probs.append(Problem("vbi-non-minimal", "protocol", "Remaining Length not minimally encoded (MQTT-1.5.5-1)"))
                info = check_server_packet(f.first, f.body, version, probs, connect_clean, f.index == 0)
            eff = [p for p in probs if p.kind not in ignore]
            if st is None:
                if eff:
                    st = "bad"
                elif f.index == 0 and info.get("refused"):
                    st = "closing"
                elif info.get("disconnect"):
                    st = "closing"
                elif "msg" in info and info["msg"] is not None:
                    m = info["msg"]
                    if m.qos == 2 and m.pid in rx2:
                        st = "dup"
                    else:
                        st = "deliverable"
                        if m.qos == 2:
                            rx2.add(m.pid)
                else:
                    st = "neutral"
                    if info.get("type") == "PUBREL" and "pid" in info:
                        rx2.discard(info["pid"])
            if self.cut is not None and st not in ("partial",):
                st = "after"
            elif st in ("bad", "closing") and self.cut is None:
                tier = "closing"
                if st == "bad":
                    kind = eff[0].kind if eff else "rl-too-long"
                    tier = eff[0].tier if eff else "malformed"
                    text = "; ".join(p.text for p in eff) or "Remaining Length longer than 4 bytes"
                else:
                    kind = "disconnect" if info.get("disconnect") else "connack-refused" if info.get("refused") else "connack-unreadable"
                    text = kind
                self.cut = (f.index, kind, text, info.get("type", "?"), tier)
            self.status.append(st)
            self.problems.append(probs)
            self.info.append(info)

    def msg(self, i):
        return self.info[i].get("msg")


def _short(b, n=48):
    b = bytes(b)
    s = repr(b[:n])
    return s + ("...(%d bytes)" % len(b) if len(b) > n else "")


def hexdump(b, n=160):
    b = bytes(b)
    s = b[:n].hex(" ")
    return s + (" ... (%d bytes)" % len(b) if len(b) > n else "")


def match_deliveries(reading, deliveries, version):
    """Every delivered message must be a subsequence of the deliverable
    frames, in order. Returns a list of failures (dicts)."""
    fails = []
    frames = reading.frames
    j = 0
    for di, d in enumerate(deliveries):
        k = j
        found = None
        while k < len(frames):
            if reading.status[k] == "deliverable" and reading.msg(k).key() == d:
                found = k
                break
            k += 1
        if found is not None:
            j = found + 1
            continue
        # Name the frame it came from: a later frame carrying the same
        # fields, read leniently. Several may: "qos2-duplicate" is claimed
        # only when no other frame explains the delivery.
        cands = [k for k in range(j, len(frames))
                 if frames[k].first is not None and frames[k].first & 0xF0 == 0x30 and frames[k].body
                 and loose_publish(frames[k].first, frames[k].body, version) == d]
        earlier = not cands
        if earlier:
            cands = [k for k in range(0, j)
                     if frames[k].first is not None and frames[k].first & 0xF0 == 0x30 and frames[k].body
                     and loose_publish(frames[k].first, frames[k].body, version) == d]
        src = None
        if cands:
            if earlier:
                # Every frame with these fields was passed already: a
                # second delivery. Of a QoS 2 duplicate, if one is among them.
                dups = [k for k in cands if reading.status[k] == "dup"]
                src = (dups or cands)[-1]
            else:
                others = [k for k in cands if reading.status[k] != "dup"]
                src = (others or cands)[0]
                j = cands[0] + 1     # deliveries are in stream order
        topic, payload, qos, retain = d
        fail = {"delivery": di, "topic": topic, "payload": payload, "qos": qos, "retain": retain}
        if src is None:
            fail.update(kind="unknown-delivery", text="no PUBLISH with these fields was sent on this connection (after the ones already matched)")
        else:
            st = reading.status[src]
            if earlier and st != "dup":
                st = "earlier"
            f = frames[src]
            fail["frame"] = src
            if len(cands) > 1:
                fail["also"] = ["frame %d (%s)" % (k, reading.status[k]) for k in cands if k != src][:4]
            fail["hex"] = hexdump(f.raw(reading.data))
            if st == "bad":
                p = [p for p in reading.problems[src]]
                fail.update(kind=p[0].kind if p else "bad", tier=p[0].tier if p else "malformed",
                            text="; ".join(x.text for x in p))
            elif st == "dup":
                fail.update(kind="qos2-duplicate", tier="protocol", text="QoS 2 packet id %d delivered again before its PUBREL (MQTT-4.3.3-10)" % reading.msg(src).pid)
            elif st == "after":
                ci, ckind, ctext, ctype, ctier = reading.cut
                fail.update(kind="after-%s/%s" % (ctype, ckind), cause_frame=ci, cause_type=ctype, tier=ctier,
                            cause_hex=hexdump(frames[ci].raw(reading.data)),
                            text="delivered from frame %d, after frame %d (%s) where the client had to close: %s"
                                 % (src, ci, ctype, ctext))
            elif st == "partial":
                fail.update(kind="delivered-partial", text="delivered from an incomplete packet")
            elif st == "neutral":
                fail.update(kind="delivered-oversize" if reading.info[src].get("oversize") else "delivered-neutral",
                            text="delivered from frame %d that must not be delivered (%s)" % (src, reading.info[src]))
            elif st == "closing":
                fail.update(kind="delivered-closing", text="delivered from a closing frame")
            else:
                fail.update(kind="out-of-order", text="the only matching frames (%s) were already passed: delivered out of order or twice" % cands)
        fails.append(fail)
    return fails


# ---------------------------------------------------------------- client packets

def check_client_stream(data, version):
    """Light checks on what the client sent: framing, packet types and
    flags, PUBLISH well-formed, acks of the right shape. Returns problems."""
    probs = []
    frames = split_frames(data)
    allowed = {0x10: 0, 0x30: None, 0x40: 0, 0x50: 0, 0x60: 2, 0x70: 0, 0x80: 2, 0xA0: 2, 0xC0: 0, 0xE0: 0}
    for f in frames:
        if not f.complete:
            # The client may be cut off mid-write only by its own close; a
            # partial tail is what the broker read before closing.
            continue
        t = f.first & 0xF0
        name = NAMES.get(t, "?")
        if t not in allowed:
            probs.append(Problem("client-type", "malformed", "client sent packet type 0x%02x" % f.first))
            continue
        if allowed[t] is not None and f.first & 0x0F != allowed[t]:
            probs.append(Problem("client-flags", "malformed", "client %s with flags 0x%x" % (name, f.first & 0xF)))
        if version == 5 and not f.rl_minimal:
            probs.append(Problem("client-vbi", "protocol", "client %s Remaining Length not minimal" % name))
        if t == 0x30:
            sub = []
            check_publish(f.first, f.body, version, sub, from_server=False)
            for p in sub:
                probs.append(Problem("client-" + p.kind, p.tier, "client PUBLISH: " + p.text))
        elif t in (0x40, 0x50, 0x60, 0x70):
            n = len(f.body)
            if n < 2 or (version == 4 and n != 2) or int.from_bytes(f.body[:2], "big") == 0:
                probs.append(Problem("client-ack", "malformed", "client %s body %s" % (ACK_TYPES[t], f.body.hex())))
            elif version == 5 and n >= 3:
                ok = {0x40: (0, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99), 0x50: (0, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99),
                      0x60: (0, 0x92), 0x70: (0, 0x92)}[t]
                if f.body[2] not in ok:
                    probs.append(Problem("client-ack-reason", "protocol", "client %s reason 0x%02x" % (ACK_TYPES[t], f.body[2])))
        elif t == 0x80:
            if len(f.body) < 5 or int.from_bytes(f.body[:2], "big") == 0:
                probs.append(Problem("client-subscribe", "malformed", "client SUBSCRIBE body %s" % f.body.hex()))
        elif t == 0xC0 and f.body:
            probs.append(Problem("client-pingreq", "malformed", "PINGREQ with a body"))
    if frames and frames[0].complete and frames[0].first != 0x10:
        probs.append(Problem("client-first", "protocol", "first client packet is 0x%02x, not CONNECT" % frames[0].first))
    return probs


def check_client_limits(rec, reading):
    """MQTT 5: what a successful CONNACK announces binds the client's later
    packets. Acks count only when the broker had sent them before the
    client's packet arrived, so the count of unacknowledged messages is
    never above the client's own (no false positives). Assumes, as the API
    says, that connect() waits for CONNACK before anything else is sent."""
    probs = []
    if not reading.frames or reading.status[0] != "neutral" or reading.info[0].get("type") != "CONNACK" \
            or reading.info[0].get("code") != 0:
        return probs
    props = reading.info[0].get("props", {})
    maxp = props.get(0x27)
    maxq = props.get(0x24, 2)
    retain_ok = props.get(0x25, 1)
    rmax = props.get(0x21, 65535)
    # Every frame a client could take for a completing ack counts, even a
    # malformed one or one after a packet the client should have closed on:
    # a lenient client may have honoured it, and the count must never be
    # above the client's own.
    acks = []                        # (end offset in the sent stream, pid)
    for f in reading.frames:
        if not f.complete or len(f.body) < 2:
            continue
        t = f.first & 0xF0
        if t in (0x40, 0x70) or (t == 0x50 and len(f.body) > 2 and f.body[2] >= 0x80):
            acks.append((f.off + f.total, int.from_bytes(f.body[0:2], "big")))
    cframes = [f for f in split_frames(rec["client_raw"]) if f.complete]
    pos = rec.get("client_pos") or []
    outstanding = set()
    a = 0
    for k, f in enumerate(cframes):
        if k == 0:
            continue                 # the CONNECT
        at = pos[k] if k < len(pos) else len(rec["sent"])
        while a < len(acks) and acks[a][0] <= at:
            outstanding.discard(acks[a][1])
            a += 1
        name = NAMES.get(f.first & 0xF0, "?")
        if maxp and f.total > maxp:
            probs.append(Problem("client-over-maximum-packet-size", "protocol",
                                 "client %s of %d bytes; CONNACK Maximum Packet Size %d (MQTT-3.2.2-15)" % (name, f.total, maxp)))
        if f.first & 0xF0 == 0x30 and len(f.body) >= 2:
            qos = (f.first >> 1) & 3
            if qos > maxq:
                probs.append(Problem("client-over-maximum-qos", "protocol",
                                     "client PUBLISH QoS %d; CONNACK Maximum QoS %d (MQTT-3.2.2-11)" % (qos, maxq)))
            if f.first & 1 and not retain_ok:
                probs.append(Problem("client-retain-unavailable", "protocol",
                                     "client PUBLISH with RETAIN 1; CONNACK Retain Available 0 (MQTT-3.2.2-14)"))
            if qos:
                tl = int.from_bytes(f.body[0:2], "big")
                if 2 + tl + 2 <= len(f.body):
                    outstanding.add(int.from_bytes(f.body[2 + tl:4 + tl], "big"))
                    if len(outstanding) > rmax:
                        probs.append(Problem("client-over-receive-maximum", "protocol",
                                             "client has %d QoS 1/2 PUBLISH unacknowledged; CONNACK Receive Maximum %d (MQTT-3.3.4-7)"
                                             % (len(outstanding), rmax)))
    return probs


def parse_connect(body):
    """What the fake broker needs from a CONNECT: version, flags, client id."""
    n = int.from_bytes(body[0:2], "big")
    off = 2 + n
    level = body[off]
    flags = body[off + 1]
    off += 4
    if level == 5:
        r = read_vbi(body, off, len(body))
        off += r[1] + r[0]
    cl = int.from_bytes(body[off:off + 2], "big")
    cid = bytes(body[off + 2:off + 2 + cl])
    return {"level": level, "clean": bool(flags & 2), "client_id": cid}


# ====================================================================== case generation

def case_seed(version, base, idx):
    return "%d:%d:%d" % (version, base, idx)


def gen_publish(rng, version, qos=None, pid=None, topic=None, payload=None):
    if qos is None:
        qos = rng.choice((0, 0, 1, 1, 2, 2))
    if pid is None:
        pid = rng.randint(1, 65535) if rng.random() < 0.7 else rng.randint(1, 6)
    if topic is None:
        topic = valid_topic(rng)
    if payload is None:
        r = rng.random()
        if r < 0.1:
            n = 0
        elif r < 0.8:
            n = rng.randint(1, 48)
        elif r < 0.96:
            n = rng.randint(49, 400)
        else:
            n = rng.randint(600, 1400)     # beyond some clients' buf_size
        payload = rng.randbytes(n) if rng.random() < 0.5 else (b"m%d " % rng.randint(0, 999999)) * (n // 8 + 1)
        payload = payload[:n]
    props = []
    if version == 5 and rng.random() < 0.6:
        if rng.random() < 0.3:
            fmt = rng.randint(0, 1)
            props.append((0x01, fmt))
            if fmt:
                payload = valid_string(rng, 40)
        if rng.random() < 0.3:
            props.append((0x02, rng.choice((1, 60, 3600, 0xFFFFFFFF))))
        if rng.random() < 0.3:
            props.append((0x03, valid_string(rng)))
        if rng.random() < 0.2:
            props.append((0x08, valid_topic(rng)))
        if rng.random() < 0.2:
            props.append((0x09, rng.randbytes(rng.randint(0, 16))))
        for _ in range(rng.randint(0, 3) if rng.random() < 0.4 else 0):
            props.append((0x26, (valid_string(rng, 8), valid_string(rng, 12))))
        for _ in range(rng.randint(1, 2) if rng.random() < 0.3 else 0):
            props.append((0x0B, rng.choice((1, 2, 127, 128, 16383, 16384, 268435455, rng.randint(1, 1000)))))
        rng.shuffle(props)
    return P("PUBLISH", qos=qos, pid=pid, topic=topic, payload=payload,
             retain=1 if rng.random() < 0.15 else 0, dup=1 if qos and rng.random() < 0.1 else 0, props=props)


def ack_props(rng):
    props = []
    if rng.random() < 0.5:
        props.append((0x1F, valid_string(rng)))
    for _ in range(rng.randint(0, 2)):
        props.append((0x26, (valid_string(rng, 6), valid_string(rng, 8))))
    return props


def gen_ack(rng, version, typ, pid):
    reason = None
    props = None
    if version == 5:
        if rng.random() < 0.4:
            reason = 0 if rng.random() < 0.7 else rng.choice(
                (0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99) if typ in (0x40, 0x50) else (0x92,))
        if rng.random() < 0.35:
            props = ack_props(rng)
    return P("ACK", type=typ, pid=pid, reason=reason, props=props)


def gen_connack(rng, version, connect):
    clean = connect.get("clean", True) if connect else True
    sp = 0 if clean else (1 if rng.random() < 0.3 else 0)
    code = 0
    if rng.random() < 0.03:
        sp = 0
        code = rng.randint(1, 5) if version == 4 else rng.choice((0x80, 0x81, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x95, 0x9C, 0x9F))
    props = []
    if version == 5:
        cid = connect.get("client_id", b"x") if connect else b"x"
        if not cid or rng.random() < 0.03:
            props.append((0x12, b"fz-assigned-" + valid_string(rng, 8).replace(b"+", b"").replace(b"#", b"")))
        r = rng.random
        if r() < 0.3:
            props.append((0x21, rng.choice((1, 2, 3, 10, 65535))))
        if r() < 0.2:
            props.append((0x27, rng.choice((128, 256, 600, 2000, 65535, 268435455))))
        if r() < 0.3:
            props.append((0x22, rng.choice((0, 1, 10, 65535))))
        if r() < 0.1:
            props.append((0x24, rng.randint(0, 1)))
        if r() < 0.2:
            props.append((0x25, rng.randint(0, 1)))
        if r() < 0.2:
            props.append((0x11, rng.choice((0, 30, 3600, 0xFFFFFFFF))))
        if r() < 0.15:
            props.append((0x13, rng.choice((0, 5, 60, 600))))
        if r() < 0.3:
            props.append((0x1F, valid_string(rng)))
        for _ in range(rng.randint(0, 3) if r() < 0.3 else 0):
            props.append((0x26, (valid_string(rng, 6), valid_string(rng, 10))))
        for pid in (0x28, 0x29, 0x2A):
            if r() < 0.1:
                props.append((pid, rng.randint(0, 1)))
        if r() < 0.05:
            props.append((0x1A, valid_string(rng)))
        if r() < 0.05:
            props.append((0x1C, b"other.example:1883"))
        rng.shuffle(props)
    return P("CONNACK", sp=sp, code=code, props=props)


def gen_body(rng, version):
    """The valid packets a broker sends after CONNACK in one case."""
    out = []
    q2 = []          # pids of QoS 2 PUBLISH sent, not yet released
    n = rng.randint(1, 12)
    for _ in range(n):
        r = rng.random()
        if r < 0.62:
            p = gen_publish(rng, version)
            out.append(p)
            if p.f["qos"] == 2:
                q2.append(p)
        elif r < 0.8 and q2:
            p = q2.pop(rng.randrange(len(q2)))
            if rng.random() < 0.3:               # retransmission before PUBREL
                d = p.copy()
                d.f = dict(p.f, dup=1)
                out.append(d)
            out.append(gen_ack(rng, version, 0x62, p.f["pid"]))
            if rng.random() < 0.2:               # the id reused for a new message
                np_ = gen_publish(rng, version, qos=2, pid=p.f["pid"])
                out.append(np_)
                q2.append(np_)
        elif r < 0.85:
            out.append(gen_ack(rng, version, rng.choice((0x40, 0x50, 0x70)), rng.randint(1, 65535)))
        elif r < 0.88:
            out.append(P("PINGRESP"))
        elif r < 0.9:
            out.append(P("SUBACK", pid=rng.randint(1, 65535), codes=[rng.choice((0, 1, 2, 0x80))],
                         props=ack_props(rng) if version == 5 else []))
        else:
            p = gen_publish(rng, version, qos=2)
            out.append(p)
            q2.append(p)
    for p in q2:
        if rng.random() < 0.7:
            out.append(gen_ack(rng, version, 0x62, p.f["pid"]))
    if version == 5 and rng.random() < 0.15:
        reason = rng.choice((0x00, 0x80, 0x81, 0x82, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x93, 0x94, 0x95, 0x97, 0x98, 0x9C, 0x9D))
        props = []
        if rng.random() < 0.5:
            props.append((0x1F, valid_string(rng)))
        if reason in (0x9C, 0x9D):
            props.append((0x1C, b"elsewhere:1883"))
        if rng.random() < 0.2:
            props.append((0x26, (b"k", valid_string(rng, 6))))
        out.append(P("DISCONNECT", reason=reason, props=props if props or rng.random() < 0.5 else None))
    return out


# ---------------------------------------------------------------- mutation

def mangled_props(rng, ptype):
    """A property block (length prefix included) that is wrong in one way."""
    def block(data, delta=0):
        return vbi(max(0, len(data) + delta)) + data

    ok = b"".join(enc_prop(i, v) for i, v in ([(0x1F, b"fine")] if rng.random() < 0.5 else []))
    forbidden = {"PUBLISH": (0x11, 0x21, 0x1F, 0x12, 0x17, 0x27), "ACK": (0x02, 0x03, 0x23, 0x0B, 0x11, 0x12, 0x24),
                 "SUBACK": (0x0B, 0x02, 0x23), "UNSUBACK": (0x0B, 0x03), "DISCONNECT": (0x02, 0x23, 0x12),
                 "CONNACK": (0x02, 0x23, 0x0B, 0x17, 0x18, 0x01)}[ptype]
    strs = {"PUBLISH": (0x03, 0x08), "ACK": (0x1F,), "SUBACK": (0x1F,), "UNSUBACK": (0x1F,), "DISCONNECT": (0x1F, 0x1C),
            "CONNACK": (0x1F, 0x12, 0x1A)}[ptype]
    single = {"PUBLISH": (0x01, 0x02, 0x03, 0x08, 0x09), "ACK": (0x1F,), "SUBACK": (0x1F,), "UNSUBACK": (0x1F,),
              "DISCONNECT": (0x1F, 0x1C), "CONNACK": (0x21, 0x27, 0x1F, 0x24, 0x13)}[ptype]
    what = rng.randrange(12)
    if what == 0:                                                  # unknown id
        pid = rng.choice((0x00, 0x04, 0x05, 0x06, 0x07, 0x0A, 0x0C, 0x10, 0x14, 0x1B, 0x1D, 0x1E, 0x20, 0x2B, 0x40, 0x7F))
        return block(ok + bytes((pid,)) + rng.randbytes(rng.randint(0, 4)))
    if what == 1:                                                  # id as a 2-byte VBI
        return block(ok + b"\x9f\x00" + lstr(b"x"))
    if what == 2:                                                  # allowed elsewhere, not here
        pid = rng.choice(forbidden)
        kind = PROPS[pid][1]
        val = {"byte": 1, "u16": 7, "u32": 9, "vbi": 5, "str": b"s", "bin": b"b", "pair": (b"k", b"v")}[kind]
        return block(ok + enc_prop(pid, val))
    if what == 3:                                                  # a single-valued one twice
        pid = rng.choice(single)
        kind = PROPS[pid][1]
        val = {"byte": 1, "u16": 7, "u32": 9, "vbi": 5, "str": b"s", "bin": b"b"}[kind]
        return block(enc_prop(pid, val) + ok + enc_prop(pid, val))
    if what == 4:                                                  # value cut by the block end
        data = ok + enc_prop(rng.choice(strs), b"truncated value")
        return block(data[:-rng.randint(1, 8)])
    if what == 5:                                                  # length beyond the packet
        data = ok + enc_prop(0x26, (b"k", b"v"))
        return vbi(len(data) + rng.randint(1, 300)) + data
    if what == 6:                                                  # length too short: the rest becomes body
        data = enc_prop(0x26, (b"key", b"value")) + ok
        return vbi(rng.randint(1, len(data) - 1)) + data
    if what == 7:                                                  # ill-formed UTF-8 in a string
        pid = rng.choice(strs + (0x26,))
        bad = rng.choice(BAD_FRAGMENTS[8:])
        val = (b"k" + bad, b"v") if pid == 0x26 and rng.random() < 0.5 else (b"k", b"v" + bad) if pid == 0x26 else b"x" + bad
        return block(ok + enc_prop(pid, val))
    if what == 8:                                                  # U+0000 in a string
        pid = rng.choice(strs + (0x26,))
        val = (b"k\x00", b"v") if pid == 0x26 else b"a\x00b"
        return block(ok + enc_prop(pid, val))
    if what == 9:                                                  # non-minimal / too long length VBI
        data = ok + enc_prop(0x26, (b"k", b"v"))
        if rng.random() < 0.5:
            return bytes((0x80 | len(data), 0x00)) + data
        return b"\xff\xff\xff\xff\x7f" + data
    if what == 10:                                                 # string length past the block
        return block(ok + bytes((rng.choice(strs),)) + u16(200) + b"short")
    # value-level: a topic alias / sub id 0 / bad connack value
    if ptype == "PUBLISH":
        return block(ok + rng.choice((enc_prop(0x23, rng.randint(0, 3)), enc_prop(0x0B, 0), enc_prop(0x08, b"r/+"),
                                      bytes((0x0B, 0x80, 0x80, 0x80, 0x80, 0x01)))))
    if ptype == "CONNACK":
        return block(ok + rng.choice((enc_prop(0x21, 0), enc_prop(0x27, 0), enc_prop(0x24, 2), enc_prop(0x25, 7),
                                      enc_prop(0x15, b"SCRAM"), enc_prop(0x28, 3))))
    if ptype == "DISCONNECT":
        return block(ok + enc_prop(0x11, 60))
    return block(ok + enc_prop(0x26, (b"k", b"v")) + b"\x01")        # trailing junk id 0x01 without a value


def _raw_body(p, version):
    b = p.encode(version)
    r = read_vbi(b, 1, len(b))
    if r is None:                      # already mangled beyond framing
        return b[0], b[1:]
    return b[0], b[1 + r[1]:]


def mutate_packet(rng, p, version, allow_props=True):
    """One mutation of one packet (in place). Returns a short description."""
    b = p.encode(version)
    if len(b) < 2:
        p.raw = b + rng.randbytes(1)
        return "grow"
    first, body = _raw_body(p, version)
    choices = ["flip", "flip", "rl", "ins", "del", "trunc", "type", "flags"]
    if p.kind == "PUBLISH":
        choices += ["topic"] * 6 + ["qos3", "pid0", "dupq0"]
        if version == 5:
            choices += ["alias"]
    if version == 5 and allow_props and p.kind in ("PUBLISH", "ACK", "SUBACK", "UNSUBACK", "DISCONNECT", "CONNACK"):
        choices += ["props"] * 6
    if version == 4 and p.kind == "ACK":
        choices += ["v4-ackprops"] * 2
    if p.kind in ("ACK", "SUBACK", "UNSUBACK"):
        choices += ["pid0"]
    m = rng.choice(choices)
    if m == "topic":
        p.f = dict(p.f, topic=bad_topic(rng))
        return "topic=%r" % p.f["topic"]
    if m == "alias":
        props = list(p.f.get("props") or [])
        props.insert(rng.randint(0, len(props)), (0x23, rng.randint(1, 5)))
        p.f = dict(p.f, props=props, topic=b"" if rng.random() < 0.4 else p.f["topic"])
        return "topic-alias"
    if m == "props":
        ptype = {"ACK": "ACK"}.get(p.kind, p.kind)
        p.props_raw = mangled_props(rng, ptype)
        if p.kind in ("ACK", "DISCONNECT") and p.f.get("reason") is None:
            p.f = dict(p.f, reason=0)
        return "props=%s" % p.props_raw.hex()
    if m == "qos3":
        p.raw = bytes((first | 0x06,)) + b[1:]
        return "qos3"
    if m == "pid0":
        if p.kind == "PUBLISH":
            if not p.f["qos"]:
                p.f = dict(p.f, qos=1)
            p.f = dict(p.f, pid=0)
        else:
            p.f = dict(p.f, pid=0)
        return "pid0"
    if m == "dupq0":
        p.f = dict(p.f, qos=0, dup=1)
        return "dup-qos0"
    if m == "v4-ackprops":
        extra = rng.choice((b"\x00", b"\x00\x00", b"\x80\x00", rng.randbytes(rng.randint(1, 6))))
        p.raw = pkt(first, body + extra)
        return "v4-ack+%s" % extra.hex()
    raw = bytearray(b)
    if m == "flip":
        i = rng.randrange(len(raw))
        raw[i] ^= 1 << rng.randrange(8)
        p.raw = bytes(raw)
        return "flip@%d" % i
    if m == "rl":
        rl = len(body)
        new = rng.choice((rl + 1, rl - 1, rl + rng.randint(2, 40), max(0, rl - rng.randint(2, 40)), 0,
                          rng.randint(0, 127), 268435455, "nonmin", "5byte"))
        if new == "nonmin":
            # The same value in one byte more than needed (MQTT-1.5.5-1).
            enc = bytearray(vbi(rl))
            enc[-1] |= 0x80
            enc = bytes(enc) + b"\x00" if len(enc) < 4 else vbi(rl)
        elif new == "5byte":
            enc = b"\xff\xff\xff\xff\x7f"
        else:
            enc = vbi(max(0, new))
        p.raw = bytes((first,)) + enc + body
        return "rl=%s" % enc.hex()
    hl = len(b) - len(body)
    if m == "ins":
        extra = rng.randbytes(rng.randint(1, 3))
        if rng.random() < 0.5:      # inside the body, Remaining Length fixed: framing kept
            i = rng.randint(0, len(body))
            p.raw = pkt(first, body[:i] + extra + body[i:])
        else:                       # anywhere, length not fixed: framing lost
            i = rng.randint(1, len(raw))
            raw[i:i] = extra
            p.raw = bytes(raw)
        return "ins@%d" % i
    if m == "del":
        if body and rng.random() < 0.5:
            i = rng.randrange(len(body))
            p.raw = pkt(first, body[:i] + body[i + 1:])
        else:
            i = rng.randrange(1, len(raw)) if len(raw) > 1 else 0
            del raw[i]
            p.raw = bytes(raw)
        return "del@%d" % i
    if m == "trunc":
        k = rng.randint(0, len(body))
        p.raw = pkt(first, body[:k]) if rng.random() < 0.6 else b[:hl + k]
        return "trunc=%d/%d" % (k, len(body))
    if m == "type":
        t = rng.choice((0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x62, 0x70, 0x82, 0x90, 0xA2, 0xB0, 0xC0, 0xD0, 0xE0, 0xF0))
        p.raw = bytes((t | (first & 0x0F if t in (0x30,) else t & 0x0F),)) + b[1:]
        return "type=0x%02x" % p.raw[0]
    if m == "flags":
        p.raw = bytes(((first & 0xF0) | rng.randrange(16),)) + b[1:]
        return "flags=0x%02x" % p.raw[0]
    raise AssertionError(m)


class Case:
    """One case: the CONNACK, the body packets, how they are cut into
    chunks, and the broker's behaviour when answering the client."""

    def __init__(self, version, base, idx, connect):
        self.version = version
        self.seed = case_seed(version, base, idx)
        self.idx = idx
        rng = random.Random(self.seed)
        self.rng_reply = random.Random(self.seed + ":reply")
        self.connack = gen_connack(rng, version, connect)
        self.body = gen_body(rng, version)
        self.mutations = []
        self.mutated = rng.random() >= 0.25          # a quarter stay valid: the happy path
        self.truncate = None
        self.rst = False
        self.p_reply_mut = 0.0
        self.p_ack = rng.choice((1.0, 0.9, 0.6))
        self.p_rel = 0.4
        if self.mutated:
            self.p_reply_mut = rng.choice((0.0, 0.1, 0.3))
            for _ in range(rng.choice((1, 1, 1, 2, 2, 3))):
                self._mutate(rng)
        stream = [self.connack.encode(version)] + [p.encode(version) for p in self.body]
        self.connack_bytes = stream[0]
        body = b"".join(stream[1:])
        self.boundaries = set()      # offsets in body_bytes between two scripted packets
        pos = 0
        for b in stream[1:]:
            self.boundaries.add(pos)
            pos += len(b)
        self.boundaries.add(pos)
        if self.truncate is not None:
            body = body[:int(len(body) * self.truncate)]
        self.body_bytes = body
        # Chunks: mostly at packet boundaries, sometimes mid-packet.
        cuts = set()
        pos = 0
        for s in stream[1:]:
            pos += len(s)
            if rng.random() < 0.35:
                cuts.add(pos)
        for _ in range(rng.randint(0, 2)):
            if body:
                cuts.add(rng.randrange(1, len(body) + 1))
        cuts = sorted(c for c in cuts if 0 < c < len(body))
        self.chunks = []
        prev = 0
        for c in cuts + [len(body)]:
            if c > prev:
                self.chunks.append(body[prev:c])
            prev = c
        self.gaps = [rng.choice((0, 0, 0, 0.001, 0.003)) for _ in self.chunks]

    def _mutate(self, rng):
        v = self.version
        r = rng.random()
        body = self.body
        if r < 0.05:
            self.mutations.append("connack:" + mutate_packet(rng, self.connack, v))
            return
        if r < 0.08:
            self.truncate = rng.random()
            self.mutations.append("truncate-stream@%.2f" % self.truncate)
            return
        if r < 0.10:
            self.rst = True
            self.mutations.append("rst")
            return
        if not body:
            return
        if r < 0.16:
            i = rng.randrange(len(body))
            j = rng.randint(i, len(body))
            body.insert(j, body[i].copy())
            self.mutations.append("dup %d->%d" % (i, j))
            return
        if r < 0.21:
            i, j = rng.randrange(len(body)), rng.randrange(len(body))
            body[i], body[j] = body[j], body[i]
            self.mutations.append("swap %d,%d" % (i, j))
            return
        if r < 0.24:
            i = rng.randrange(len(body))
            del body[i]
            self.mutations.append("drop %d" % i)
            return
        if r < 0.28:
            p = P("PINGRESP")
            p.raw = rng.randbytes(rng.randint(1, 8))
            i = rng.randint(0, len(body))
            body.insert(i, p)
            self.mutations.append("garbage@%d=%s" % (i, p.raw.hex()))
            return
        if r < 0.36:
            body.append(gen_publish(rng, v))
            self.mutations.append("append-publish")
        # A packet-level mutation; acks and PUBLISH are favoured.
        weights = [4 if p.kind == "PUBLISH" else 3 if p.kind in ("ACK", "SUBACK", "UNSUBACK", "DISCONNECT") else 1 for p in body]
        i = rng.choices(range(len(body)), weights)[0]
        d = mutate_packet(rng, body[i], v)
        self.mutations.append("pkt%d(%s):%s" % (i, body[i].kind, d))
        if rng.random() < 0.5:
            # Something well-formed after it, so that a client that does not
            # close on the damage is caught delivering it.
            body.insert(i + 1 + rng.randint(0, max(0, len(body) - i - 1)) if rng.random() < 0.3 else i + 1,
                        gen_publish(rng, v, qos=rng.choice((0, 1))))

    # ------------------------------------------------------------ replies

    def reply(self, first, body, conn_state):
        """Packets answering one client packet (list of bytes)."""
        rng = self.rng_reply
        v = self.version
        t = first & 0xF0
        out = []
        if t == 0x30:
            qos = (first >> 1) & 3
            if qos and len(body) >= 2:
                tl = int.from_bytes(body[0:2], "big")
                pid = int.from_bytes(body[2 + tl:4 + tl], "big")
                if rng.random() < self.p_ack:
                    out.append(gen_ack(rng, v, 0x40 if qos == 1 else 0x50, pid))
        elif t == 0x60 and len(body) >= 2:
            out.append(gen_ack(rng, v, 0x70, int.from_bytes(body[0:2], "big")))
        elif t == 0x50 and len(body) >= 2:
            if rng.random() < self.p_rel:
                out.append(gen_ack(rng, v, 0x62, int.from_bytes(body[0:2], "big")))
        elif t == 0x80 and len(body) >= 2:
            pid = int.from_bytes(body[0:2], "big")
            off = 2
            if v == 5:
                r = read_vbi(body, 2, len(body))
                off += r[1] + r[0] if r else 0
            codes = []
            while off + 2 < len(body):
                fl = int.from_bytes(body[off:off + 2], "big")
                off += 2 + fl
                if off < len(body):
                    q = body[off] & 3
                    codes.append(q if rng.random() < 0.9 else (0x80 if v == 4 else rng.choice((0x80, 0x87, 0x8F, 0x97, 0xA1))))
                off += 1
            if rng.random() < 0.95:
                out.append(P("SUBACK", pid=pid, codes=codes or [0], props=ack_props(rng) if v == 5 and rng.random() < 0.3 else []))
        elif t == 0xA0 and len(body) >= 2:
            pid = int.from_bytes(body[0:2], "big")
            out.append(P("UNSUBACK", pid=pid, codes=[rng.choice((0, 0, 0x11))], props=[]))
        elif t == 0xC0:
            out.append(P("PINGRESP"))
        res = []
        for p in out:
            if rng.random() < self.p_reply_mut:
                d = mutate_packet(rng, p, v)
                conn_state.setdefault("reply_mutations", []).append("%s:%s" % (p.kind, d))
            res.append(p.encode(v))
        return res


# ====================================================================== the broker

class CaseConn:
    """One case's TCP connection on the broker side."""

    def __init__(self, sock):
        self.sock = sock
        self.sent = bytearray()
        self.rbuf = bytearray()
        self.client_raw = bytearray()
        self.client_closed = False
        self.packets = []          # (first, body) the client sent
        self.pos = []              # per packet: len(self.sent) when it arrived

    def send(self, data):
        if self.client_closed or not data:
            return
        view = memoryview(data)
        self.sock.settimeout(1.0)
        try:
            while view:
                n = self.sock.send(view)
                self.sent += view[:n]
                view = view[n:]
        except OSError:
            self.client_closed = True

    def pump(self, timeout):
        """Read what the client sent within `timeout` s; returns the new
        complete packets."""
        if self.client_closed:
            return []
        try:
            r, _, _ = select.select([self.sock], [], [], timeout)
        except (OSError, ValueError):
            self.client_closed = True
            return []
        if not r:
            return []
        try:
            self.sock.settimeout(0)
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError:
            self.client_closed = True
            return []
        if not data:
            self.client_closed = True
            return []
        self.rbuf += data
        self.client_raw += data
        out = []
        while True:
            if len(self.rbuf) < 2:
                break
            r = read_vbi(self.rbuf, 1, len(self.rbuf))
            if r is None:
                if len(self.rbuf) >= 5:          # garbage from the client: stop parsing
                    self.rbuf = bytearray()
                break
            end = 1 + r[1] + r[0]
            if len(self.rbuf) < end:
                break
            out.append((self.rbuf[0], bytes(self.rbuf[1 + r[1]:end])))
            self.pos.append(len(self.sent))
            del self.rbuf[:end]
        self.packets += out
        return out


class FuzzBroker:
    """Serves protocol cases on a loopback port. The client announces each
    case on its stdout ("S <idx>") before it connects; `announce(idx)` feeds
    that in, and each accepted connection serves the latest announced case.
    `on_case(record)` receives each finished case."""

    QUIET = 0.004          # final phase: close after this long without client data
    FINAL_MAX = 0.25

    def __init__(self, version, base, on_case, verbose=False):
        self.version = version
        self.base = base
        self.on_case = on_case
        self.verbose = verbose
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=8)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.announced = queue.Queue()
        self.stopping = False
        self.errors = []
        self.thread = threading.Thread(target=self._run, daemon=True, name="fuzzbroker%d" % version)
        self.thread.start()

    def announce(self, idx):
        self.announced.put(idx)

    def stop(self):
        self.stopping = True
        self.thread.join(5)
        self.listener.close()

    def _take_case(self):
        try:
            idx = self.announced.get(timeout=3)
        except queue.Empty:
            return None
        while True:
            try:
                idx = self.announced.get_nowait()
            except queue.Empty:
                return idx

    def _run(self):
        while not self.stopping:
            try:
                sock, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError as e:
                if not self.stopping:
                    self.errors.append("accept: %r" % e)
                return
            idx = self._take_case()
            try:
                if idx is None:
                    self.errors.append("a connection came without an announced case")
                    sock.close()
                    continue
                rec = self.serve(sock, idx)
            except Exception:  # noqa: BLE001 - a harness bug must be visible, not kill the thread
                import traceback
                self.errors.append("case %s: broker error %s" % (idx, traceback.format_exc()))
                try:
                    sock.close()
                except OSError:
                    pass
                continue
            self.on_case(rec)

    def serve(self, sock, idx):
        t0 = time.monotonic()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c = CaseConn(sock)
        state = {}
        # The CONNECT.
        deadline = t0 + 1.5
        while not c.packets and not c.client_closed and time.monotonic() < deadline:
            c.pump(0.05)
        connect = None
        if c.packets and c.packets[0][0] == 0x10:
            try:
                connect = parse_connect(c.packets[0][1])
            except Exception:  # noqa: BLE001
                connect = None
        case = Case(self.version, self.base, idx, connect)
        handled = 1
        if connect is not None:
            c.send(case.connack_bytes)

            held = []                # answers wait for a packet boundary of the script

            def serve_for(t, at_boundary=True):
                nonlocal handled
                c.pump(t)
                while handled < len(c.packets):
                    first, body = c.packets[handled]
                    handled += 1
                    if first & 0xF0 == 0xE0:
                        continue
                    held.extend(case.reply(first, body, state))
                if at_boundary:
                    # A broker never puts a packet inside another one: answers
                    # go out only between scripted packets.
                    for out in held:
                        c.send(out)
                    del held[:]

            serve_for(0.003)
            sent_body = 0
            for chunk, gap in zip(case.chunks, case.gaps):
                c.send(chunk)
                sent_body += len(chunk)
                serve_for(gap, sent_body in case.boundaries)
            if case.truncate is None:
                end = time.monotonic() + self.FINAL_MAX
                last = len(c.packets)
                while not c.client_closed and time.monotonic() < end:
                    serve_for(self.QUIET)
                    if len(c.packets) == last:
                        break
                    last = len(c.packets)
        try:
            if case.rst:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        except OSError:
            pass
        return {"idx": idx, "seed": case.seed, "sent": bytes(c.sent), "client_raw": bytes(c.client_raw),
                "client_pos": c.pos,
                "connect": connect, "mutated": case.mutated, "mutations": case.mutations,
                "reply_mutations": state.get("reply_mutations", []), "ms": (time.monotonic() - t0) * 1000}


# ====================================================================== judging a protocol case

def judge_protocol_case(version, rec, res, ignore=(), stats=None):
    """All failures of one case: rec from the broker, res the client's report.
    `stats` (a dict) collects what the reference reading saw."""
    fails = []
    for e in res.get("e", []):
        step, cls, arg0, is_os = e[:4]
        if not is_os:
            fails.append({"verdict": "exception", "kind": "non-oserror:" + cls,
                          "text": "%s raised %s(%r...) from %s(), not an OSError" % (step, cls, arg0, step)})
    if res.get("ms", 0) > CASE_BOUND_MS:
        fails.append({"verdict": "time", "kind": "slow-case",
                      "text": "case took %d ms (bound %d)" % (res["ms"], CASE_BOUND_MS)})
    if res.get("hang"):
        fails.append({"verdict": "time", "kind": "hang",
                      "text": "the client still waited %d ms after the case began (the broker closed long before)" % res["ms"]})
    if rec is None:
        if res.get("d"):
            fails.append({"verdict": "harness", "kind": "no-broker-record", "text": "deliveries without a broker record"})
        return fails
    buf = res.get("bs", 1024)
    clean = rec["connect"]["clean"] if rec["connect"] else None
    reading = Reading(rec["sent"], version, buf, clean, ignore)
    if stats is not None:
        for st in reading.status:
            stats["frames"][st] = stats["frames"].get(st, 0) + 1
        if reading.cut is not None:
            k = "%s/%s" % (reading.cut[3], reading.cut[1])
            stats["cuts"][k] = stats["cuts"].get(k, 0) + 1
    dels = [(bytes.fromhex(t), bytes.fromhex(p), q, r) for t, p, q, r in res.get("d", [])]
    for f in match_deliveries(reading, dels, version):
        if f["kind"] in ignore:
            continue
        f["verdict"] = "delivery"
        fails.append(f)
    client_probs = check_client_stream(rec["client_raw"], version)
    if version == 5:
        client_probs += check_client_limits(rec, reading)
    for p in client_probs:
        if p.kind in ignore:
            continue
        fails.append({"verdict": "client-packet", "kind": p.kind, "tier": p.tier, "text": p.text})
    return fails


def describe_case(version, rec, res, buf_size=1024, ignore=()):
    """Human-readable account of one case: every frame, its reading."""
    out = []
    out.append("case %s  mutated=%s  mutations=%s  reply mutations=%s" % (rec["seed"], rec["mutated"], rec["mutations"],
                                                                          rec["reply_mutations"]))
    out.append("CONNECT: %s" % rec["connect"])
    clean = rec["connect"]["clean"] if rec["connect"] else None
    reading = Reading(rec["sent"], version, buf_size, clean, ignore)
    for i, f in enumerate(reading.frames):
        m = reading.info[i].get("msg")
        what = reading.info[i].get("type", "?")
        if m is not None:
            what += " q%d r%d pid %d topic=%s payload=%s" % (m.qos, m.retain, m.pid, _short(m.topic), _short(m.payload, 24))
        out.append("  frame %2d @%-5d %-11s %-8s %s" % (i, f.off, reading.status[i], what,
                                                        "; ".join(p.text for p in reading.problems[i])))
        out.append("           %s" % hexdump(f.raw(reading.data), 96))
    out.append("client sent: " + ", ".join("%s(%d)" % (NAMES.get(f.first & 0xF0, "?"), len(f.body))
                                           for f in split_frames(rec["client_raw"])))
    if res is not None:
        out.append("client report: ms=%s errors=%s bs=%s plan=%s" % (res.get("ms"), res.get("e"), res.get("bs"), res.get("p")))
        for t, p, q, r in res.get("d", []):
            out.append("  delivered q%d r%d topic=%s payload=%s" % (q, r, _short(bytes.fromhex(t)), _short(bytes.fromhex(p), 24)))
    return "\n".join(out)


# ====================================================================== protocol run

class ProtocolRun:
    """One MicroPython process running cases [first, first + count) of one
    protocol version against a FuzzBroker; verdicts as the cases finish."""

    STALL_S = max(20.0, 3 * CASE_BOUND_MS / 1000)

    def __init__(self, version, base, first, count, ignore=(), keep_records=None, mem_every=4):
        self.version = version
        self.base = base
        self.first = first
        self.count = count
        self.ignore = set(ignore)
        self.keep = set(keep_records or ())
        self.mem_every = mem_every
        self.lock = threading.Lock()
        self.recs = {}
        self.results = {}
        self.kept = {}
        self.failures = []        # (idx, seed, failure dict)
        self.mem = []             # (idx, mem_free)
        self.stats = {"cases": 0, "mutated": 0, "deliveries": 0, "exceptions": {}, "max_ms": 0,
                      "cases_with_delivery": 0, "sent_bytes": 0, "frames": {}, "cuts": {}, "harness": []}
        self.lines_other = []
        self.elapsed = 0.0
        self.returncode = None
        self.done_marker = False

    # -- pairing broker records with client reports
    def _on_case(self, rec):
        with self.lock:
            self.recs[rec["idx"]] = rec
            self._try(rec["idx"])

    def _on_result(self, res):
        with self.lock:
            self.results[res["i"]] = res
            self._try(res["i"])

    def _try(self, idx):
        rec = self.recs.get(idx)
        res = self.results.get(idx)
        if res is None or (rec is None and res.get("conn", 1)):
            return
        self._judge(idx, rec, res)

    def _judge(self, idx, rec, res):
        self.recs.pop(idx, None)
        self.results.pop(idx, None)
        if idx in self.keep:
            self.kept[idx] = (rec, res)
        st = self.stats
        st["cases"] += 1
        if rec:
            st["mutated"] += rec["mutated"]
            st["sent_bytes"] += len(rec["sent"])
        st["deliveries"] += len(res.get("d", []))
        st["cases_with_delivery"] += bool(res.get("d"))
        st["max_ms"] = max(st["max_ms"], res.get("ms", 0))
        for e in res.get("e", []):
            k = e[1]
            st["exceptions"][k] = st["exceptions"].get(k, 0) + 1
        if rec is not None and not rec["mutated"]:
            st["unmutated"] = st.get("unmutated", 0) + 1
            r = Reading(rec["sent"], self.version, 1 << 28, rec["connect"]["clean"] if rec["connect"] else None)
            if "bad" in r.status:
                st["harness"].append("unmutated case %s sent a stream with a problem: %s" % (rec["seed"], r.cut))
        for f in judge_protocol_case(self.version, rec, res, self.ignore, st):
            f.setdefault("seed", rec["seed"] if rec else case_seed(self.version, self.base, idx))
            if rec is not None and f.get("verdict") == "delivery" and len(self.failures) < 20000:
                f["mutations"] = rec["mutations"]
            self.failures.append((idx, f))

    def run(self, timeout):
        self.broker = FuzzBroker(self.version, self.base, self._on_case)
        cmd = [micropython_binary(), str(CLIENT_SCRIPT), str(self.broker.port), str(self.version),
               str(self.base), str(self.first), str(self.count), str(self.mem_every)]
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=mp_env(), bufsize=1)
        last_started = [None]

        def reader():
            for line in proc.stdout:
                if line.startswith("S "):
                    idx = int(line[2:])
                    last_started[0] = idx
                    self.broker.announce(idx)
                elif line.startswith("C "):
                    try:
                        self._on_result(json.loads(line[2:]))
                    except ValueError:
                        self.lines_other.append(line)
                elif line.startswith("M "):
                    _, i, free = line.split()
                    self.mem.append((int(i), int(free)))
                elif line.startswith("END"):
                    self.done_marker = True
                else:
                    if len(self.lines_other) < 200:
                        self.lines_other.append(line.rstrip())

        th = threading.Thread(target=reader, daemon=True)
        th.start()
        # Watchdog: every case ends within CASE_BOUND_MS; no new case for
        # STALL_S means the client hangs inside a library call.
        seen = [None, time.monotonic()]
        while True:
            try:
                proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if last_started[0] != seen[0]:
                seen[:] = [last_started[0], now]
            stalled = now - seen[1] > self.STALL_S
            if stalled or now - t0 > timeout:
                proc.kill()
                proc.wait()
                self.stats["harness"].append("the MicroPython process was killed %s; last case started: %s (%s)"
                                             % ("after %.0f s without progress" % self.STALL_S if stalled else
                                                "after %d s in all" % timeout, last_started[0],
                                                self.replay_command(last_started[0]) if last_started[0] is not None else "-"))
                if stalled and last_started[0] is not None:
                    self.failures.append((last_started[0], {"verdict": "time", "kind": "process-hang",
                                                            "seed": case_seed(self.version, self.base, last_started[0]),
                                                            "text": "no progress for %.0f s inside case %d" % (self.STALL_S, last_started[0])}))
                break
        th.join(10)
        self.returncode = proc.returncode
        time.sleep(0.05)
        self.broker.stop()
        self.elapsed = time.monotonic() - t0
        with self.lock:
            # Client reports whose broker record never came (no connection).
            for idx in list(self.results):
                self._judge(idx, self.recs.get(idx), self.results[idx])
            if self.recs:
                self.stats["harness"].append("%d broker records without a client report (first: %s)"
                                             % (len(self.recs), sorted(self.recs)[:5]))
        self.stats["harness"] += self.broker.errors
        if not self.done_marker:
            self.stats["harness"].append("the client did not finish (exit %s); its other output:\n%s"
                                         % (self.returncode, "\n".join(self.lines_other[-40:])))
        return self

    # -- reports
    def replay_command(self, idx):
        return ".venv/bin/python tests/fuzzlib.py replay %s" % case_seed(self.version, self.base, idx)

    def by_verdict(self, verdict):
        return [(i, f) for i, f in self.failures if f["verdict"] == verdict]

    def summary(self, fails=None, examples=3):
        fails = self.failures if fails is None else fails
        kinds = {}
        for i, f in fails:
            kinds.setdefault(f["kind"], []).append((i, f))
        lines = []
        for k in sorted(kinds, key=lambda k: -len(kinds[k])):
            lst = kinds[k]
            cases = sorted(set(i for i, _ in lst))
            tier = lst[0][1].get("tier", "")
            lines.append("  %-40s %-9s %5d in %4d cases, e.g. %s" % (k, tier, len(lst), len(cases),
                                                                    ", ".join(case_seed(self.version, self.base, i) for i in cases[:examples])))
        return "\n".join(lines)

    def explain(self, idx, f):
        s = ["FAIL v%d case %d (seed %s) [%s/%s%s]: %s" % (self.version, idx, f["seed"], f["verdict"], f["kind"],
                                                         ", " + f["tier"] if f.get("tier") else "", f["text"])]
        if "topic" in f:
            s.append("    delivered: topic=%s payload=%s qos=%d retain=%d" % (_short(f["topic"]), _short(f["payload"], 24), f["qos"], f["retain"]))
        if "hex" in f:
            s.append("    frame %s: %s" % (f.get("frame"), f["hex"]))
        if f.get("also"):
            s.append("    (the same fields are also in %s)" % ", ".join(f["also"]))
        if "cause_hex" in f:
            s.append("    cause frame %s (%s): %s" % (f["cause_frame"], f["cause_type"], f["cause_hex"]))
        if f.get("mutations"):
            s.append("    mutations: %s" % f["mutations"])
        s.append("    replay: %s" % self.replay_command(idx))
        return "\n".join(s)


def memory_verdict(samples, warm_cases, tolerance):
    """(ok, text). `samples` are (case, gc.mem_free() after two
    gc.collect()) taken between chains, when no client object is alive.

    MicroPython's collector is conservative: a stale word on the C stack or
    in a register can keep a dead client (a few KB of buffers) alive at one
    sample and not the next, so single samples scatter by ~10 KB with no
    trend. The highest value of a window of samples is the heap with no
    such pinned garbage; a leak lowers it as surely as it lowers every
    sample. So: after the warm-up (first imports, reason tables, caches
    that fill once) the best sample of the last third may sit at most
    `tolerance` bytes below the best of the first third. The slope of a
    least-squares line through all samples is reported alongside."""
    s = [(i, f) for i, f in samples if i >= warm_cases]
    if len(s) < 9:
        return True, "only %d memory samples after the warm-up: not judged" % len(s)
    k = len(s) // 3
    first, last = max(f for _, f in s[:k]), max(f for _, f in s[-k:])
    xs = [i for i, _ in s]
    ys = [f for _, f in s]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs) or 1
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den
    text = ("gc.mem_free() after warm-up (case %d on, %d samples): best of first third %d, best of last third %d "
            "(%+d bytes; tolerance %d); all samples %d..%d; trend %+.2f bytes/case"
            % (warm_cases, len(s), first, last, last - first, tolerance, min(ys), max(ys), slope))
    return first - last <= tolerance, text


# ====================================================================== store fuzzer

STORE_LINEAGES = ("file4", "file5", "ring4", "ring5")
RING_GEOM = (4096, 8, 32)          # block size, blocks, prog size (tests/mp/fuzz_store.py)


class StoreBroker:
    """Fake broker for the store fuzzer. The user name says what to answer:
    "gen" (writing the lineages: PUBACK even ids, PUBREC every QoS 2, SUBACK,
    then one incoming QoS 2 PUBLISH) or "c<case>:<sp>" (CONNACK with Session
    Present sp, SUBACK to any SUBSCRIBE, nothing else). Records every packet
    per user name."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=16)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.conns = {}
        self.errors = []
        self.stopping = False
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def stop(self):
        self.stopping = True
        self.thread.join(5)
        self.listener.close()

    def _run(self):
        while not self.stopping:
            try:
                s, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                self._serve(s)
            except Exception as e:  # noqa: BLE001
                self.errors.append("store broker: %r" % e)
            finally:
                try:
                    s.close()
                except OSError:
                    pass

    def _serve(self, s):
        c = CaseConn(s)
        end = time.monotonic() + 3
        while not c.packets and not c.client_closed and time.monotonic() < end:
            c.pump(0.05)
        if not c.packets or c.packets[0][0] != 0x10:
            return
        body = c.packets[0][1]
        info = parse_connect(body)
        user = _connect_user(body)
        v = info["level"]
        gen = user == "gen"
        sp = 0 if gen else int(user.split(":")[1])
        c.send(pkt(0x20, bytes((sp, 0)) + (b"\x00" if v == 5 else b"")))
        handled = 1
        sent_q2 = False
        end = time.monotonic() + (30 if gen else 3)
        while not c.client_closed and time.monotonic() < end:
            c.pump(0.05)
            while handled < len(c.packets):
                first, b = c.packets[handled]
                handled += 1
                t = first & 0xF0
                if t == 0x80:
                    c.send(pkt(0x90, b[0:2] + (b"\x00" if v == 5 else b"") + b"\x01"))
                    if gen and not sent_q2:
                        sent_q2 = True
                        c.send(pkt(0x34, lstr(b"fz/in") + u16(77) + (b"\x00" if v == 5 else b"") + b"incoming"))
                elif gen and t == 0x30 and (first >> 1) & 3:
                    tl = int.from_bytes(b[0:2], "big")
                    pid = int.from_bytes(b[2 + tl:4 + tl], "big")
                    if (first >> 1) & 3 == 2:
                        c.send(pkt(0x50, u16(pid)))
                    elif pid % 2 == 0:
                        c.send(pkt(0x40, u16(pid)))
                elif t == 0xE0:
                    c.client_closed = True
        with self.lock:
            self.conns[user] = list(c.packets)


def _connect_user(body):
    n = int.from_bytes(body[0:2], "big")
    off = 2 + n
    level, flags = body[off], body[off + 1]
    off += 4
    if level == 5:
        r = read_vbi(body, off, len(body))
        off += r[1] + r[0]

    def take(o):
        ln = int.from_bytes(body[o:o + 2], "big")
        return body[o + 2:o + 2 + ln], o + 2 + ln

    _, off = take(off)                      # client id
    if flags & 0x04:
        if level == 5:
            r = read_vbi(body, off, len(body))
            off += r[1] + r[0]
        _, off = take(off)
        _, off = take(off)
    if flags & 0x80:
        u, off = take(off)
        return u.decode()
    return ""


def encode_publish(version, topic, payload, qos, pid, retain, props_block):
    first = 0x30 | (qos << 1) | retain
    body = lstr(topic) + (u16(pid) if qos else b"") + ((vbi(len(props_block)) + props_block) if version == 5 else b"") + payload
    return pkt(first, body)


def store_recipes(rng, lineages, n, first_idx=0):
    """Mutation recipes for the store fuzzer. `lineages`: name ->
    {"snaps": [bytes...], "diffs": [(lo, hi) of the bytes that changed from
    the previous snapshot, or None]}."""
    out = []
    names = [k for k in STORE_LINEAGES if k in lineages]
    for i in range(first_idx, first_idx + n):
        lin = names[i % len(names)]
        L = lineages[lin]
        snaps = L["snaps"]
        k = rng.randrange(len(snaps))
        img = snaps[k]
        ring = lin.startswith("ring")
        ops = []
        r = rng.random()
        kind = "control"
        if r < 0.06:
            kind = "control"
        elif not ring:
            kind = rng.choice(("flip", "flip", "trunc", "splice", "append", "zero", "insert", "delete", "dup-range", "multi"))
        else:
            kind = rng.choice(("flip", "flip", "erase-block", "tear", "tear", "splice-block", "scribble-erased", "zero", "multi"))
        kinds = [kind] if kind != "multi" else [rng.choice(("flip", "trunc", "zero") if not ring else ("flip", "erase-block", "tear"))
                                                for _ in range(rng.randint(2, 3))]
        size = len(img)
        for kd in kinds:
            if kd == "control":
                pass
            elif kd == "flip":
                for _ in range(rng.choice((1, 1, 1, 2, 3, 8))):
                    if ring:
                        prog = L["programmed"][k]
                        off = rng.choice(prog) if prog and rng.random() < 0.9 else rng.randrange(size)
                    else:
                        off = rng.randrange(max(1, size))
                    ops.append(["flip", off, 1 << rng.randrange(8)])
            elif kd == "trunc":
                ops.append(["trunc", rng.randrange(size + 1)])
            elif kd == "splice":
                j = rng.randrange(len(snaps))
                a = rng.randrange(size + 1)
                b = rng.randrange(len(snaps[j]) + 1)
                ops.append(["splice", j, a, b])
            elif kd == "append":
                ops.append(["app", rng.randbytes(rng.randint(1, 40)).hex()])
                kind = "append"
            elif kd == "zero":
                off = rng.randrange(max(1, size))
                ops.append(["fill", off, rng.randint(1, 64 if not ring else 512), 0 if rng.random() < 0.7 else 0xFF])
            elif kd == "insert":
                ops.append(["ins", rng.randrange(size + 1), rng.randbytes(rng.randint(1, 12)).hex()])
            elif kd == "delete":
                ops.append(["del", rng.randrange(max(1, size)), rng.randint(1, 12)])
            elif kd == "dup-range":
                a = rng.randrange(max(1, size))
                ops.append(["ins", rng.randrange(size + 1), img[a:a + rng.randint(1, 60)].hex()])
            elif kd == "erase-block":
                bs = RING_GEOM[0]
                ops.append(["fill", rng.randrange(RING_GEOM[1]) * bs, bs, 0xFF])
            elif kd == "tear":
                d = L["diffs"][k]
                if d is None:
                    ops.append(["flip", rng.randrange(size), 1])
                else:
                    lo, hi = d
                    cut = rng.randint(lo, hi - 1)
                    # Revert the end of the last write to the previous image:
                    # a program cut short; sometimes with noise in between.
                    ops.append(["copy", k - 1, cut, hi - cut])
                    if rng.random() < 0.3:
                        ops.append(["flip", cut, 1 << rng.randrange(8)])
            elif kd == "splice-block":
                j = rng.randrange(len(snaps))
                bs = RING_GEOM[0]
                ops.append(["copy", j, rng.randrange(RING_GEOM[1]) * bs, bs])
            elif kd == "scribble-erased":
                blank = L["blank"][k]
                if not blank:
                    ops.append(["flip", rng.randrange(size), 1])
                else:
                    b = rng.choice(blank)
                    bs = RING_GEOM[0]
                    off = b * bs + rng.randrange(bs - 64)
                    ops.append(["set", off, rng.randbytes(rng.randint(1, 64)).hex()])
                    kind = "scribble-erased"
        out.append({"i": i, "lin": lin, "base": k, "ops": ops, "kind": kind,
                    "sp": rng.choice((0, 1, 1)), "conn": 1 if rng.random() < 0.8 else 0,
                    "small": 1 if rng.random() < 0.05 else 0})
    return out


def apply_ops(img, ops, snaps):
    """CPython twin of tests/mp/fuzz_store.py apply_ops (for reports)."""
    b = bytearray(img)
    for op in ops:
        o = op[0]
        if o == "flip":
            if op[1] < len(b):
                b[op[1]] ^= op[2]
        elif o == "trunc":
            del b[op[1]:]
        elif o == "splice":
            b = b[:op[2]] + bytearray(snaps[op[1]][op[3]:])
        elif o == "app":
            b += bytes.fromhex(op[1])
        elif o == "fill":
            for i in range(op[1], min(len(b), op[1] + op[2])):
                b[i] = op[3]
        elif o == "ins":
            b[op[1]:op[1]] = bytes.fromhex(op[2])
        elif o == "del":
            del b[op[1]:op[1] + op[2]]
        elif o == "copy":
            src = snaps[op[1]]
            b[op[2]:op[2] + op[3]] = src[op[2]:op[2] + op[3]]
        elif o == "set":
            data = bytes.fromhex(op[2])
            b[op[1]:op[1] + len(data)] = data
    return bytes(b)


def load_lineages(d, meta):
    """Snapshots written by fuzz_store.py gen, plus what the recipes need."""
    lins = {}
    for lin, info in meta["lineages"].items():
        snaps = [pathlib.Path(d, p).read_bytes() for p in info["snaps"]]
        diffs = [None]
        for a, b in zip(snaps, snaps[1:]):
            if len(a) != len(b):
                diffs.append(None)
                continue
            idx = [i for i in range(len(a)) if a[i] != b[i]]
            diffs.append((idx[0], idx[-1] + 1) if idx else None)
        programmed, blank = [], []
        if lin.startswith("ring"):
            bs, nb = RING_GEOM[0], RING_GEOM[1]
            for s in snaps:
                programmed.append([i for i in range(len(s)) if s[i] != 0xFF][::7])
                blank.append([k for k in range(nb) if s[k * bs:(k + 1) * bs].count(0xFF) == bs])
        else:
            programmed = blank = [[] for _ in snaps]
        lins[lin] = {"snaps": snaps, "diffs": diffs, "programmed": programmed, "blank": blank,
                     "written": info["written"], "subs": info["subs"], "rel": info["rel"],
                     "version": info["version"], "pending": info["pending"]}
    return lins


def ref_session_reading(data, client_id, version):
    """What docs/session-format.md ("Reading: damaged, unknown and foreign
    data") and docs/sessions.md ("Unusable state") say a boot makes of a
    session file: ("empty" | "discarded" | "restored", pending, damaged,
    why). Written from the documents, not from the code."""
    import zlib
    n = len(data)
    if n == 0:
        return "empty", 0, False, "no file content"
    if n < 5 or data[0:4] != b"DMQS":
        return "discarded", 0, False, "no magic"
    if data[4] == 0 or data[4] > 1:
        return "discarded", 0, False, "format byte %d" % data[4]
    p = 5
    records = 0
    out = []                  # [pid, has packet]
    cid = None
    flags = 0
    ver = None
    damaged = False
    while p < n:
        if p + 3 > n:
            if not records:
                return "discarded", 0, False, "header truncated"
            break
        kind = data[p]
        ln = int.from_bytes(data[p + 1:p + 3], "big")
        end = p + 3 + ln
        if end + 4 > n or zlib.crc32(data[p:end]) != int.from_bytes(data[end:end + 4], "big"):
            if not records:
                return "discarded", 0, False, "header damaged"
            # The stream ends here; "damaged" when an intact record follows.
            q = p + 1
            while q + 7 <= n:
                l2 = int.from_bytes(data[q + 1:q + 3], "big")
                if 1 <= data[q] <= 7 and q + l2 + 7 <= n and \
                        zlib.crc32(data[q:q + 3 + l2]) == int.from_bytes(data[q + 3 + l2:q + 7 + l2], "big"):
                    damaged = True
                    break
                q += 1
            break
        b = data[p + 3:end]
        if records == 0 and kind != 1:
            return "discarded", 0, False, "first record is not a HEADER"
        if kind == 1:
            if records or ln < 14:
                return "discarded", 0, False, "second or short HEADER"
            idl = int.from_bytes(b[12:14], "big")
            if 14 + idl != ln:
                return "discarded", 0, False, "HEADER length"
            ver, flags, cid = b[0], b[1], bytes(b[14:14 + idl])
            if ver not in (4, 5):
                return "discarded", 0, False, "protocol level %d" % ver
        elif kind == 2:
            pid = int.from_bytes(b[0:2], "big")
            out = [e for e in out if e[0] != pid] + [[pid, True]]
        elif kind == 3:
            gone = set(int.from_bytes(b[k:k + 2], "big") for k in range(0, ln - 1, 2))
            out = [e for e in out if e[0] not in gone]
        elif kind == 4:
            pid = int.from_bytes(b[0:2], "big")
            hit = [e for e in out if e[0] == pid]
            if hit:
                hit[0][1] = False
            else:
                out.append([pid, False])
        records += 1
        p = end + 4
    if not records:
        return "discarded", 0, False, "no record"
    if not (flags & 1) and cid != client_id:
        return "discarded", 0, False, "client id %r" % cid
    if ver != version:
        return "discarded", 0, False, "protocol level %d" % ver
    return "restored", len(out), damaged, ""


def judge_store_case(rec, res, lin, conn_packets, baseline):
    """Failures of one store case. `res` the MicroPython report, `lin` the
    lineage (what was ever written), `conn_packets` what the restored
    client sent to the fake broker, `baseline` pending() of the same
    snapshot loaded unmutated."""
    fails = []
    v = lin["version"]

    def fail(kind, text):
        fails.append({"kind": kind, "text": text})

    if res.get("x1"):
        fail("construct-raised", "MQTTClient(..., session_file=) raised %s on a damaged store" % res["x1"])
    if res.get("x2"):
        fail("reconstruct-raised", "the second construction (after the first boot) raised %s" % res["x2"])
    ev1, ev2 = res.get("ev1"), res.get("ev2")
    if ev1 not in (None, "damaged", "discarded", "expired"):
        fail("undocumented-event", "last_event %r after construction" % ev1)
    if res.get("x1"):
        return fails
    p1, p2 = res.get("p1"), res.get("p2")
    if ev1 == "discarded":
        if p1:
            fail("discarded-but-restored", "event 'discarded' yet pending() = %d" % p1)
        if rec["lin"].startswith("file"):
            if res.get("path_exists") and not res.get("bad_exists"):
                fail("discarded-not-set-aside", "event 'discarded' but the file is still there and no .bad")
    if not res.get("x2"):
        if ev2 is not None:
            fail("reboot-unstable", "second boot reports event %r (first boot: %r): the first boot did not rewrite a clean state" % (ev2, ev1))
        if p2 != p1 and ev1 != "expired":
            fail("reboot-unstable", "pending() %s at the first boot, %s at the second" % (p1, p2))
    if rec["kind"] in ("append", "scribble-erased") and baseline is not None and ev1 != "expired":
        if p1 != baseline:
            fail("lossy-benign-damage", "garbage %s lost messages: pending() %s, unmutated %s"
                 % ("appended" if rec["kind"] == "append" else "in an erased block", p1, baseline))
    if res.get("small") and p1 is not None and (p1 > 1) != bool(res.get("grown1")):
        fail("over-capacity-restore", "restored %d messages into a client with max_inflight + outbox_size = 1, "
             "event outbox_grown %s: docs/sessions.md says the outbox grows to hold more, with that event"
             % (p1, "given" if res.get("grown1") else "missing"))
    if rec["lin"].startswith("file") and res.get("image") is not None:
        what, pend, damaged, why = ref_session_reading(res["image"], b"fzs%d" % v, v)
        if what == "discarded" and ev1 != "discarded":
            fail("file-reading", "the documented reading sets this file aside (%s); the client: pending() %s, event %r" % (why, p1, ev1))
        elif what != "discarded" and ev1 == "discarded":
            fail("file-reading", "the client set aside a file the documented reading restores (%d messages)" % pend)
        elif what == "restored" and ev1 != "expired" and (p1 != pend or (ev1 == "damaged") != damaged):
            fail("file-reading", "documented reading: %d messages%s; the client: pending() %s, event %r"
                 % (pend, ", event 'damaged'" if damaged else "", p1, ev1))
    if rec["kind"] == "control" and baseline is not None and (p1 != baseline or ev1 is not None):
        fail("control", "unmutated image: pending() %s event %r, baseline %s" % (p1, ev1, baseline))
    # What the restored client sent.
    if conn_packets is not None:
        written = {}
        for w in lin["written"]:
            pid, qos, retain, topic, payload, props = w
            written[(pid, encode_publish(v, bytes.fromhex(topic), bytes.fromhex(payload), qos, pid, retain, bytes.fromhex(props)))] = w
        subs = set(bytes.fromhex(s) for s in lin["subs"])
        rels = set(lin["rel"]) | set(w[0] for w in lin["written"] if w[1] == 2)
        n_pub = n_rel = 0
        for first, body in conn_packets[1:]:
            t = first & 0xF0
            if t == 0x30:
                n_pub += 1
                probs = []
                m = check_publish(first, body, v, probs, from_server=False)
                if probs or m is None:
                    fail("resent-malformed", "restored PUBLISH is malformed: %s (%s)" % (probs, hexdump(pkt(first, body))))
                    continue
                raw = pkt(first & ~0x08, body)
                if (m.pid, raw) not in written:
                    fail("restored-never-written", "resent PUBLISH pid %d topic=%s payload=%s was never published in this lineage: %s"
                         % (m.pid, _short(m.topic), _short(m.payload, 24), hexdump(pkt(first, body))))
                want_dup = 1 if res.get("sp") else 0
                if m.dup != want_dup:
                    fail("resent-dup-flag", "resent PUBLISH pid %d with DUP %d after Session Present %d" % (m.pid, m.dup, res.get("sp")))
            elif t == 0x60:
                n_rel += 1
                pid = int.from_bytes(body[0:2], "big")
                if pid not in rels:
                    fail("restored-never-written", "resent PUBREL for pid %d, never a QoS 2 message of this lineage" % pid)
                if not res.get("sp"):
                    fail("pubrel-after-lost-session", "PUBREL %d sent after Session Present 0 (the broker has no state)" % pid)
            elif t == 0x80:
                off = 2
                if v == 5:
                    r = read_vbi(body, 2, len(body))
                    off += r[1] + r[0]
                fl = int.from_bytes(body[off:off + 2], "big")
                f = body[off + 2:off + 2 + fl]
                if f not in subs:
                    fail("restored-never-written", "re-subscribed to %r, never a subscription of this lineage" % f)
        if res.get("sp") and res.get("cx") is None and not res.get("small") and p2 is not None and p2 <= 16 \
                and n_pub + n_rel != p2:
            fail("resend-count", "pending() = %d after restore but %d PUBLISH + %d PUBREL resent on Session Present 1" % (p2, n_pub, n_rel))
    for e in (res.get("cx"),):
        if e and not e[1]:
            fail("non-oserror", "connect() after restore raised %s, not an OSError" % e[0])
    return fails


class StoreRun:
    def __init__(self, workdir, base, counts, ignore=(), only=None):
        self.only = only              # run just these case numbers (replay)
        self.dir = pathlib.Path(workdir)
        self.base = base
        self.counts = counts          # backend ("file"/"ring") -> number of cases
        self.ignore = set(ignore)
        self.failures = []            # (backend, case, seed, fail)
        self.stats = {}
        self.harness = []
        self.elapsed = {}

    def generate(self, broker):
        cmd = [micropython_binary(), str(STORE_SCRIPT), "gen", str(self.dir), str(broker.port)]
        r = subprocess.run(cmd, capture_output=True, text=True, env=mp_env(), timeout=120)
        if r.returncode != 0 or not (self.dir / "meta.json").exists():
            raise RuntimeError("fuzz_store.py gen failed (exit %d):\n%s\n%s" % (r.returncode, r.stdout[-4000:], r.stderr[-2000:]))
        self.meta = json.loads((self.dir / "meta.json").read_text())
        self.lineages = load_lineages(self.dir, self.meta)

    def run(self, timeout):
        broker = StoreBroker()
        try:
            t0 = time.monotonic()
            self.generate(broker)
            self.elapsed["gen"] = time.monotonic() - t0
            procs = {}
            for backend, n in self.counts.items():
                rng = random.Random("store:%d:%s" % (self.base, backend))
                lins = {k: v for k, v in self.lineages.items() if k.startswith(backend)}
                recipes = store_recipes(rng, lins, n)
                path = self.dir / ("recipes-%s.jsonl" % backend)
                with open(path, "w") as f:
                    for rc in recipes:
                        rc["seed"] = "%d:%s:%d" % (self.base, backend, rc["i"])
                        if self.only is None or rc["i"] in self.only:
                            f.write(json.dumps(rc) + "\n")
                self.recipes = getattr(self, "recipes", {})
                self.recipes[backend] = {rc["i"]: rc for rc in recipes}
                cmd = [micropython_binary(), str(STORE_SCRIPT), "run", str(self.dir), str(broker.port), str(path), backend]
                # Output to a file, not a pipe: the backends' processes run
                # at once, and one whose pipe filled (64 KB, ~1,000 cases)
                # while we waited on the other stood still until then.
                log = open(self.dir / ("out-%s.txt" % backend), "w+")
                procs[backend] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, env=mp_env()),
                                  time.monotonic(), log)
            outs = {}
            for backend, (p, t1, log) in procs.items():
                try:
                    p.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
                    self.harness.append("%s store fuzzer killed after %d s" % (backend, timeout))
                log.seek(0)
                outs[backend] = (log.read(), p.returncode)
                log.close()
                self.elapsed[backend] = time.monotonic() - t1
            time.sleep(0.1)
        finally:
            broker.stop()
        self.harness += broker.errors
        self.conns = broker.conns
        self.results = {}
        for backend, (out, rc) in outs.items():
            self._judge(backend, out, rc, broker)
        return self

    def _judge(self, backend, out, rc, broker):
        results = []
        baselines = {}
        other = []
        for line in out.splitlines():
            if line.startswith("B "):
                d = json.loads(line[2:])
                baselines[(d["lin"], d["k"])] = d
            elif line.startswith("C "):
                results.append(json.loads(line[2:]))
            elif not line.startswith("END"):
                other.append(line)
        if "END" not in out:
            self.harness.append("%s store fuzzer did not finish (exit %s):\n%s" % (backend, rc, "\n".join(other[-30:])))
        st = {"cases": 0, "events": {}, "restored_msgs": 0, "resent": 0, "connects": 0}
        for (lin, k), b in baselines.items():
            if b.get("x") or b.get("ev") is not None:
                self.failures.append((backend, -1, "baseline", {"kind": "baseline", "text": "unmutated %s snapshot %d: %s" % (lin, k, b)}))
        self.results[backend] = {res["i"]: res for res in results}
        for res in results:
            rc_ = self.recipes[backend][res["i"]]
            lin = self.lineages[rc_["lin"]]
            conn = broker.conns.get("c%d:%d" % (res["i"], rc_["sp"]) if backend == "file" else "r%d:%d" % (res["i"], rc_["sp"]))
            b = baselines.get((rc_["lin"], rc_["base"]))
            st["cases"] += 1
            st["events"][str(res.get("ev1"))] = st["events"].get(str(res.get("ev1")), 0) + 1
            st["restored_msgs"] += res.get("p1") or 0
            if conn:
                st["connects"] += 1
                st["resent"] += sum(1 for f, _ in conn[1:] if f & 0xF0 in (0x30, 0x60))
            res["sp"] = rc_["sp"]
            if backend == "file":
                res["image"] = apply_ops(lin["snaps"][rc_["base"]], rc_["ops"], lin["snaps"])
            for f in judge_store_case(rc_, res, lin, conn if res.get("connected") else None,
                                      b["p"] if b and not b.get("small") else None):
                if f["kind"] in self.ignore:
                    continue
                self.failures.append((backend, res["i"], rc_["seed"], f))
        self.stats[backend] = st

    def explain(self, backend, i, seed, f):
        s = "FAIL store %s case %d (seed %s) [%s]: %s" % (backend, i, seed, f["kind"], f["text"])
        rc = self.recipes.get(backend, {}).get(i)
        if rc:
            s += "\n    recipe: lineage %s snapshot %d, %s ops %s" % (rc["lin"], rc["base"], rc["kind"], json.dumps(rc["ops"])[:300])
        s += "\n    replay: .venv/bin/python tests/fuzzlib.py store-replay %s" % seed
        return s


# ====================================================================== CLI

def _replay_protocol(seed_s, ignore):
    v, base, idx = (int(x) for x in seed_s.split(":"))
    start = idx - idx % CHAIN if (idx // CHAIN) % 2 else idx
    run = ProtocolRun(v, base, start, idx - start + 1, ignore=ignore, keep_records=range(start, idx + 1))
    run.run(timeout=60 + 5 * (idx - start + 1))
    for i in range(start, idx + 1):
        rec, res = run.kept.get(i, (None, None))
        print("=" * 100)
        if rec is None:
            print("case %d: no broker record; client report: %s" % (i, res))
            continue
        print(describe_case(v, rec, res, res.get("bs", 1024) if res else 1024, ignore))
    print("=" * 100)
    fails = [(i, f) for i, f in run.failures]
    for i, f in fails:
        print(run.explain(i, f))
    if run.stats["harness"]:
        print("harness:", run.stats["harness"])
    print("%d failure(s)" % len(fails))
    return 1 if fails else 0


def _replay_store(seed_s):
    base, backend, idx = seed_s.split(":")
    base, idx = int(base), int(idx)
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        run = StoreRun(d, base, {backend: idx + 1}, only={idx})
        run.run(timeout=600)
        rc = run.recipes[backend][idx]
        lin = run.lineages[rc["lin"]]
        img = apply_ops(lin["snaps"][rc["base"]], rc["ops"], lin["snaps"])
        print("recipe:", json.dumps(rc))
        print("mutated image: %d bytes (base snapshot %d bytes)" % (len(img), len(lin["snaps"][rc["base"]])))
        fails = [x for x in run.failures if x[1] == idx]
        for b, i, s, f in fails:
            print(run.explain(b, i, s, f))
        print("client report:", json.dumps({k: v for k, v in run.results.get(backend, {}).get(idx, {}).items() if k != "image"}))
        conn = run.conns.get("%s%d:%d" % ("c" if backend == "file" else "r", idx, rc["sp"]))
        for first, body in (conn or [])[1:]:
            print("  resent %s %s" % (NAMES.get(first & 0xF0, "?"), hexdump(pkt(first, body), 80)))
        if backend == "file":
            print("documented reading:", ref_session_reading(img, b"fzs%d" % lin["version"], lin["version"]))
        print("%d failure(s)" % len(fails))
        return 1 if fails else 0


def main(argv):
    ignore = set(filter(None, os.environ.get("FUZZ_IGNORE", "").split(",")))
    if len(argv) >= 2 and argv[0] == "replay":
        return _replay_protocol(argv[1], ignore)
    if len(argv) >= 2 and argv[0] == "store-replay":
        return _replay_store(argv[1])
    if len(argv) >= 3 and argv[0] == "run":
        v, n = int(argv[1]), int(argv[2])
        base = int(argv[3]) if len(argv) > 3 else 1
        run = ProtocolRun(v, base, 0, n, ignore=ignore).run(timeout=60 + n)
        print("v%d: %d cases in %.1f s, %s" % (v, run.stats["cases"], run.elapsed, run.stats))
        print(run.summary())
        return 0
    print(__doc__)
    print("usage: fuzzlib.py replay V:SEED:CASE | store-replay SEED:BACKEND:CASE | run V N [SEED]")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
