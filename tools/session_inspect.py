#!/usr/bin/env python3
"""session_inspect: decode a durable_mqtt session state on a host computer.

Reads one of:

  * a session directory (the layout a path session_file gets since 0.2.0:
    PATH.d/ with "h", "i0", "i1" and slot files; docs/session-format.md) -- given
    as the directory or as the session_file path it belongs to;
  * a session file of the log layout (0.1.0's FileStore, filelog.FileLog:
    the latest checkpoint followed by every record appended after it), or
    the bytes returned by `MQTTClient.save_session()`;
  * a raw flash ring image (`RingStore`, a dump of the flash region or the
    image file of tests/mp/norflash.py) -- with --ring. The ring framing
    (block headers, commits, checkpoints) is decoded as docs/ring-format.md
    describes; the state is the latest complete checkpoint plus the appends
    after it, exactly what RingStore.load() would return.

and prints the header (client id, protocol, flags, session expiry, when it was
saved, packet id counter), the subscriptions, the outgoing messages (packet
id, state, QoS/retain/DUP, topic, payload), the incoming QoS 2 ids awaiting
PUBREL, and diagnostics: a torn tail, a bad CRC (and whether intact records
follow it), unknown record types skipped, foreign or future-version data.

The byte format is docs/session-format.md. This decoder is written from that
document and is independent of the MicroPython package (stdlib only, CPython
3.11+); CRC-32 is zlib.crc32.

Exit status: 0 the state is valid (warnings such as a torn tail may have been
printed: the library loads such a state, minus the torn record); 1 the input
is unreadable, holds no session, or is foreign/corrupt (the library would set
it aside and start clean); 2 usage error.
"""
import argparse
import datetime
import json
import math
import struct
import sys
import zlib

# ---------------------------------------------------------------- session format

MAGIC = b"DMQS"
FORMAT = 1
MAGIC_LEN = 5

R_HEADER = 0x01
R_OUT_PUB = 0x02
R_OUT_ACKED = 0x03
R_OUT_REL = 0x04
R_IN_QOS2 = 0x05
R_IN_REL = 0x06
R_SUB = 0x07
R_IN_LIST = 0x08
RECORD_NAMES = {R_HEADER: "HEADER", R_OUT_PUB: "OUT_PUB", R_OUT_ACKED: "OUT_ACKED",
                R_OUT_REL: "OUT_REL", R_IN_QOS2: "IN_QOS2", R_IN_REL: "IN_REL", R_SUB: "SUB",
                R_IN_LIST: "IN_LIST"}
MIN_BODY = {R_OUT_PUB: 4, R_OUT_REL: 2, R_IN_QOS2: 2, R_SUB: 6}
HF_ASSIGNED_ID = 0x01
HF_OFFLINE = 0x02
HF_RESUB = 0x04       # the subscriptions are owed to the broker (a lost session's, not all made again)
HF_NO_SESSION = 0x08  # no session held (before the first CONNACK, after one ended): messages for the next one
HF_KNOWN = HF_ASSIGNED_ID | HF_OFFLINE | HF_RESUB | HF_NO_SESSION
NEVER = 0xFFFFFFFF
EPOCH_2000 = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
PROTOCOLS = {4: "MQTT 3.1.1", 5: "MQTT 5.0"}

# ---------------------------------------------------------------- ring format

RING_MAGIC = b"DMQR"
RING_FORMAT = 2       # 2: a commit's CRC covers its place first (docs/ring-format.md)
RING_BHDR = 12
RING_HDR = 8
RING_OVH = 12
RING_SEQ_MASK = 0x3FFFFFFF
K_APPEND = 0xC0
K_PART = 0xC1
K_BEGIN = 0x02
K_END = 0x04


class Unreadable(Exception):
    """The input holds no usable session state (exit status 1)."""


class _Done(Exception):
    """The report is built (a directory: no single byte stream)."""


def u16(b, i):
    return (b[i] << 8) | b[i + 1]


def u32(b, i):
    return (b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]


# A session directory's sequence numbers count modulo 2**29 (u32 on flash,
# the top two bits 0); readers compare them as serial numbers, by distance.
SEQ_MASK = 0x1FFFFFFF
SEQ_HALF = 0x10000000


def seq_number(b):
    return u32(b, 0) & SEQ_MASK


def crc_ok(b, off, n):
    """True when b[off+n:off+n+4] holds CRC-32(b[off:off+n]) big-endian."""
    return zlib.crc32(b[off:off + n]) == u32(b, off + n)


class Diag:
    def __init__(self):
        self.items = []

    def add(self, level, kind, message, offset=None, **extra):
        d = {"level": level, "kind": kind, "message": message}
        if offset is not None:
            d["offset"] = offset
        d.update(extra)
        self.items.append(d)


# ---------------------------------------------------------------- PUBLISH decoding

PROP_KINDS = {  # id: (name, kind)
    0x01: ("payload_format", "byte"), 0x02: ("message_expiry", "u32"),
    0x03: ("content_type", "str"), 0x08: ("response_topic", "str"),
    0x09: ("correlation_data", "bin"), 0x0B: ("subscription_id", "varint"),
    0x23: ("topic_alias", "u16"), 0x26: ("user_property", "pair"),
}


def varint(b, off, end):
    """(value, next offset) of an MQTT Variable Byte Integer; ValueError if bad."""
    v = 0
    for k in range(4):
        if off >= end:
            raise ValueError("truncated variable byte integer")
        c = b[off]
        off += 1
        v |= (c & 0x7F) << (7 * k)
        if not c & 0x80:
            return v, off
    raise ValueError("variable byte integer longer than 4 bytes")


def decode_props(b, off, end):
    props = []
    while off < end:
        pid = b[off]
        off += 1
        name, kind = PROP_KINDS.get(pid, ("0x%02x" % pid, None))
        if kind == "byte":
            val, off = b[off], off + 1
        elif kind == "u16":
            val, off = u16(b, off), off + 2
        elif kind == "u32":
            val, off = u32(b, off), off + 4
        elif kind == "varint":
            val, off = varint(b, off, end)
        elif kind in ("str", "bin"):
            n = u16(b, off)
            raw = bytes(b[off + 2:off + 2 + n])
            val = raw.decode("utf-8", "backslashreplace") if kind == "str" else raw.hex()
            off += 2 + n
        elif kind == "pair":
            n = u16(b, off)
            k = bytes(b[off + 2:off + 2 + n]).decode("utf-8", "backslashreplace")
            off += 2 + n
            m = u16(b, off)
            v = bytes(b[off + 2:off + 2 + m]).decode("utf-8", "backslashreplace")
            off += 2 + m
            val = [k, v]
        else:
            raise ValueError("unknown property id 0x%02x in a PUBLISH" % pid)
        if off > end:
            raise ValueError("property block overruns the packet")
        props.append([name, val])
    return props


def decode_publish(pkt, version):
    """A stored PUBLISH packet -> dict (raises ValueError when malformed)."""
    if len(pkt) < 2:
        raise ValueError("packet shorter than 2 bytes")
    first = pkt[0]
    if first & 0xF0 != 0x30:
        raise ValueError("first byte 0x%02x is not a PUBLISH" % first)
    qos = (first >> 1) & 3
    rl, off = varint(pkt, 1, len(pkt))
    if off + rl != len(pkt):
        raise ValueError("remaining length %d does not match the %d stored bytes" % (rl, len(pkt) - off))
    end = len(pkt)
    tl = u16(pkt, off)
    topic = bytes(pkt[off + 2:off + 2 + tl])
    off += 2 + tl
    pid = None
    if qos:
        pid = u16(pkt, off)
        off += 2
    props = []
    if version == 5:
        pl, off = varint(pkt, off, end)
        props = decode_props(pkt, off, off + pl)
        off += pl
    if off > end:
        raise ValueError("packet fields overrun its length")
    return {"qos": qos, "retain": bool(first & 1), "dup": bool(first & 8), "topic": topic,
            "packet_pid": pid, "properties": props, "payload": bytes(pkt[off:])}


def publish_ok(pkt, pid):
    """Is pkt a QoS 1/2 PUBLISH carrying packet id pid, as a held message
    must be? The library's rule (stream.publish_ok, docs/session-format.md):
    else the record is damage, skipped, and never resent."""
    if not pid or len(pkt) < 6 or pkt[0] & 0xF0 != 0x30 or not 0 < (pkt[0] >> 1) & 3 < 3:
        return False
    try:
        rl, off = varint(pkt, 1, min(len(pkt), 5))
    except (ValueError, IndexError):
        return False
    if off + rl != len(pkt) or off + 2 > len(pkt):
        return False
    t = off + 2 + u16(pkt, off)
    return t + 2 <= len(pkt) and u16(pkt, t) == pid


def sub_ok(opts, sid, version):
    """Options and identifier a SUBSCRIBE of this protocol level may carry
    (MQTT-3.8.3-4; MQTT 5, 3.8.3.1, 3.8.2.1.2): else the SUB record is
    damage, skipped (the library's rule, docs/session-format.md)."""
    if opts & 3 == 3:
        return False
    if version == 5:
        return not (opts & 0x30 == 0x30 or opts & 0xC0 or sid > 268435455)
    return not (opts & 0xFC or sid)


def _damaged(s, diag, p, what):
    diag.add("warning", "damaged_record", "%s at offset %d, though its CRC is good: the library skips it and "
             "reports the event `damaged` (not listed below)" % (what, p), p)
    s.damaged += 1


# ---------------------------------------------------------------- session decoding

class Session:
    def __init__(self):
        self.format = None
        self.header = None
        self.subs = []          # [filter bytes, options, sub_id]
        self.out = []           # [pid, packet bytes or None]
        self.in_qos2 = []
        self.records = []       # record map: offset, type, length
        self.last_pid = 0
        self.torn = False
        self.valid_bytes = 0
        self.damaged = 0        # records with a good CRC the library skips as damage


def _scan_records(data, p):
    """How many records parse with good CRCs from p to the end, and whether
    they reach it exactly (used to tell a torn tail from damage mid-stream)."""
    n = len(data)
    count = 0
    while p + 3 <= n:
        ln = u16(data, p + 1)
        end = p + 3 + ln
        if end + 4 > n or not crc_ok(data, p, ln + 3):
            return count, False
        count += 1
        p = end + 4
    return count, p == n


def parse_session(data, diag):
    """Decode a session stream the way store.parse_state() does; raises
    Unreadable where the library raises FormatError."""
    n = len(data)
    s = Session()
    if n == 0:
        raise Unreadable("empty input: no session state")
    if n < MAGIC_LEN or data[0:4] != MAGIC:
        head = data[0:4]
        hint = ""
        if head == RING_MAGIC:
            hint = " (this looks like a raw flash ring image: use --ring)"
        diag.add("error", "foreign_magic", "foreign data: starts with %s, not the session magic 44 4d 51 53 ('DMQS')%s"
                 % (head.hex(" ") or "nothing", hint), 0)
        raise Unreadable("not a durable_mqtt session state (no magic)")
    s.format = data[4]
    if data[4] == 0 or data[4] > FORMAT:
        diag.add("error", "future_format", "session format version %d; this inspector (and library) reads version %d"
                 % (data[4], FORMAT), 4)
        raise Unreadable("session format version %d is not readable here" % data[4])
    p = MAGIC_LEN
    out_index = {}
    while p < n:
        if p + 3 > n:
            _torn(s, diag, p, n, "truncated record header (%d of 3 bytes) at offset %d: torn append" % (n - p, p))
            break
        kind = data[p]
        ln = u16(data, p + 1)
        end = p + 3 + ln
        if end + 4 > n:
            if not s.records:
                diag.add("error", "bad_header", "the header record at offset %d runs past the end of the data" % p, p)
                raise Unreadable("session header damaged")
            _torn(s, diag, p, n, "record at offset %d (type 0x%02x, length %d) runs %d bytes past the end of the data: "
                  "torn append" % (p, kind, ln, end + 4 - n))
            break
        if not crc_ok(data, p, ln + 3):
            if not s.records:
                diag.add("error", "bad_header", "bad CRC on the header record at offset %d" % p, p)
                raise Unreadable("session header damaged")
            later, exact = _scan_records(data, end + 4)
            if later and exact:
                msg = ("bad CRC at offset %d (type 0x%02x, length %d): the stream ends there; %d intact record(s) "
                       "after it (%d bytes) are ignored by the library -- damage in the middle, not a torn append"
                       % (p, kind, ln, later, n - end - 4))
            else:
                msg = "bad CRC at offset %d (type 0x%02x, length %d): the stream ends there (torn append)" % (p, kind, ln)
            diag.add("warning", "bad_crc", msg, p, ignored_bytes=n - p, intact_after=later if exact else 0)
            s.torn = True
            break
        b = p + 3
        name = RECORD_NAMES.get(kind, "UNKNOWN")
        s.records.append({"offset": p, "type": kind, "name": name, "length": ln, "size": ln + 7})
        if ln < MIN_BODY.get(kind, 0) or (kind in (R_OUT_ACKED, R_IN_REL) and ln % 2):
            diag.add("warning", "malformed_record", "%s record at offset %d has a body of %d bytes (the library "
                     "reads it anyway: its content is not to be trusted)" % (name, p, ln), p)
        if not s.header and kind != R_HEADER:
            diag.add("error", "bad_header", "the first record (offset %d) is type 0x%02x, not a HEADER" % (p, kind), p)
            raise Unreadable("session state does not start with a header")
        if kind == R_HEADER:
            if s.header:
                diag.add("error", "bad_header", "a second HEADER record at offset %d (the library rejects the state)" % p, p)
                raise Unreadable("bad session header")
            if ln < 14:
                diag.add("error", "bad_header", "header record of %d bytes, at least 14 expected" % ln, p)
                raise Unreadable("bad session header")
            idl = u16(data, b + 12)
            if 14 + idl != ln:
                diag.add("error", "bad_header", "header length %d does not match its client id length %d" % (ln, idl), p)
                raise Unreadable("bad session header length")
            h = {"protocol": data[b], "flags": data[b + 1], "session_expiry": u32(data, b + 2),
                 "saved_min": u32(data, b + 6), "next_pid": u16(data, b + 10),
                 "client_id": bytes(data[b + 14:b + 14 + idl])}
            if h["protocol"] not in PROTOCOLS:
                diag.add("error", "bad_header", "protocol level %d in the header (4 or 5 expected)" % h["protocol"], b)
                raise Unreadable("bad protocol version %d in session header" % h["protocol"])
            s.header = h
            s.last_pid = h["next_pid"]
        elif kind == R_SUB and ln < 5:
            _damaged(s, diag, p, "a SUB of %d bytes (no options byte)" % ln)
        elif kind == R_SUB and not sub_ok(data[b + 4], u32(data, b), s.header["protocol"]):
            _damaged(s, diag, p, "a SUB whose options 0x%02x or identifier %d no SUBSCRIBE of MQTT %s may carry"
                     % (data[b + 4], u32(data, b), PROTOCOLS[s.header["protocol"]]))
        elif kind == R_OUT_PUB and (ln < 2 or not publish_ok(data[b + 2:end], u16(data, b))):
            _damaged(s, diag, p, "an OUT_PUB (packet id %d) that is not a QoS 1/2 PUBLISH of its packet id"
                     % u16(data, b))
        elif kind == R_OUT_REL and (ln != 2 or not u16(data, b)):
            _damaged(s, diag, p, "an OUT_REL with no packet id (%d bytes, or id 0)" % ln)
        elif kind == R_SUB:
            f = bytes(data[b + 5:end])
            s.subs = [x for x in s.subs if x[0] != f]
            s.subs.append([f, data[b + 4], u32(data, b)])
        elif kind == R_OUT_PUB:
            pid = u16(data, b)
            ent = [pid, bytes(data[b + 2:end])]
            _drop(s.out, out_index, pid)
            s.out.append(ent)
            out_index[pid] = ent
            s.last_pid = pid
        elif kind == R_OUT_ACKED:
            for q in range(b, end - 1, 2):
                pid = u16(data, q)
                if pid not in out_index:
                    diag.add("info", "ack_unknown", "OUT_ACKED at offset %d names packet id %d, which is not held" % (p, pid), p)
                _drop(s.out, out_index, pid)
        elif kind == R_OUT_REL:
            # the PUBREL owed goes to the end: PUBRELs in PUBREC order (MQTT-4.6.0-4)
            pid = u16(data, b)
            _drop(s.out, out_index, pid)
            ent = [pid, None]
            s.out.append(ent)
            out_index[pid] = ent
        elif kind == R_IN_QOS2:
            pid = u16(data, b)
            if pid not in s.in_qos2:
                s.in_qos2.append(pid)
        elif kind == R_IN_REL:
            for q in range(b, end - 1, 2):
                pid = u16(data, q)
                if pid in s.in_qos2:
                    s.in_qos2.remove(pid)
        else:
            diag.add("warning", "unknown_record", "unknown record type 0x%02x at offset %d (%d bytes) skipped: "
                     "written by a newer version" % (kind, p, ln + 7), p, type=kind)
        p = end + 4
        s.valid_bytes = p
    if not s.header:
        diag.add("error", "empty", "the state has the magic but no records", MAGIC_LEN)
        raise Unreadable("empty session state")
    return s


def dir_header(path, diag=None):
    """The header stream of session directory `path` as load.py finds it:
    "h", or without it a whole "h.tmp"; b"" when there is none."""
    import os
    try:
        with open(os.path.join(path, "h"), "rb") as f:
            head = f.read()
    except OSError:
        head = b""
    if not head:
        # A whole h.tmp without "h": a checkpoint cut between removing the
        # old "h" and naming the new one (FAT's rename); the library reads it.
        try:
            with open(os.path.join(path, "h.tmp"), "rb") as f:
                tmp = f.read()
            if tmp and not parse_session(tmp, Diag()).torn:
                head = tmp
                if diag is not None:
                    diag.add("info", "header_in_tmp", "no \"h\" but a whole \"h.tmp\" (a checkpoint cut before "
                             "its rename completed): the library renames it to \"h\" and reads it")
        except (OSError, Unreadable):
            pass
    return head


def log_file_beside(d):
    """The session file PATH of the older log layout beside directory
    d = PATH.d, when d holds no header: a boot then restores PATH (load.py,
    a move into the directory cut before its header was written)."""
    import os
    if not d.endswith(".d") or not os.path.isfile(d[:-2]) or dir_header(d):
        return None
    with open(d[:-2], "rb") as f:
        if f.read(6) == TAG:
            return None               # the session file's tag: no log
    return d[:-2]


TAG = b"DMQS\x00"                    # the session file PATH of a session directory (format 0)


def check_tag(d, diag):
    """The session file PATH beside directory d = PATH.d: the tag, else
    what a boot does instead (dirstate.tag, load.py)."""
    import os
    path = d[:-2] if d.endswith(".d") else None
    try:
        with open(path, "rb") as f:
            data = f.read(64)
    except (OSError, TypeError):
        try:
            with open(os.path.join(d, "m"), "rb") as f:
                cut = f.read(6) == TAG
        except OSError:
            cut = False
        if cut:
            diag.add("info", "tag_in_directory", "no session file %s, but %s/m holds its tag (a rename cut "
                     "short): a boot renames it into place" % (path, d))
        else:
            diag.add("warning", "no_session_file", "no session file %s beside the directory: a boot forgets the "
                     "directory's session (a session file removed takes its session with it)" % path)
        return
    if data[:5] == b"DMQS\x01":
        diag.add("info", "log_file_at_path", "%s is a session file of the older log layout: a boot moves it "
                 "into the directory (whose own header, if it has one, counts) and writes the tag over "
                 "it" % path)
    elif data != TAG:
        diag.add("warning", "not_a_session_file", "%s is not the session file's tag (b'DMQS\\x00'): a boot sets "
                 "it aside (PATH.bad, event discarded) and keeps the directory's session" % path)


def read_dir(path, diag, info):
    """A session directory (filestore.py) read as load.py reads it: "h" is
    the header and subscriptions (a record stream); "i0" and "i1" each a
    sequence number (u32) and one IN_LIST record, the newer intact one
    counting; each slot file a sequence number and one OUT_PUB or OUT_REL
    record, CRCs covering the number too. The messages in sequence order (an
    OUT_REL wins over the OUT_PUB of the same number); empty slots are free;
    a damaged slot, or an older copy of a packet id, is reported (the library
    empties such slots at boot)."""
    import os
    names = sorted(os.listdir(path))
    info.update(path=path, files=names, slots=[])
    head = dir_header(path, diag)
    if not head:
        diag.add("error", "no_header", "no header file \"h\" (or it is empty): the directory holds no session; "
                 "the library empties its slots at boot")
        raise Unreadable("no session in %s" % path)
    s = parse_session(head, diag)
    best = -1
    for iname in ("i0", "i1"):
        try:
            with open(os.path.join(path, iname), "rb") as f:
                ids = f.read()
        except OSError:
            continue
        n = len(ids)
        if n >= 11 and ids[4] == R_IN_LIST and u16(ids, 5) == n - 11 and crc_ok(ids, 0, n - 4):
            # the newer: serial numbers (modulo 2**29, they wrap), compared by distance
            if best < 0 or 0 < (seq_number(ids) - best) & SEQ_MASK < SEQ_HALF:
                best = seq_number(ids)
                s.in_qos2 = [u16(ids, 7 + 2 * k) for k in range(u16(ids, 5) // 2)]
        elif n:
            diag.add("warning", "bad_ids", "the incoming QoS 2 file %r does not hold a sequence number and one "
                     "good IN_LIST record (the library uses the other one)" % iname)
    found = []
    for name in names:
        if name in ("h", "i0", "i1") or name == "h.tmp" and "h" not in names:
            continue
        if not name.isdigit():
            diag.add("info", "stray_file", "%r is not the library's (removed at boot)" % name)
            continue
        try:
            with open(os.path.join(path, name), "rb") as f:
                data = f.read()
        except OSError as x:           # e.g. a folder where a slot file belongs
            info["slots"].append({"slot": int(name), "bytes": 0, "state": "unreadable"})
            diag.add("error", "unreadable_slot", "slot %s cannot be read (%s): the library cannot write "
                     "that slot either; remove it" % (name, x.strerror or x))
            continue
        n = len(data)
        slot = {"slot": int(name), "bytes": n}
        if not n:
            slot["state"] = "free"
        elif (n >= 13 and u16(data, 5) == n - 11 and crc_ok(data, 0, n - 4)
              and (data[4] == R_OUT_REL and n == 13 and u16(data, 7)
                   or data[4] == R_OUT_PUB and publish_ok(data[9:n - 4], u16(data, 7)))):
            # (the library's rule, dirload.py: an OUT_REL of its id alone, an
            # OUT_PUB holding a QoS 1/2 PUBLISH of its id; else damage)
            slot.update(state="message", seq=seq_number(data), pid=u16(data, 7), record=RECORD_NAMES[data[4]])
            rel = data[4] == R_OUT_REL
            found.append((seq_number(data), rel, int(name), u16(data, 7), None if rel else bytes(data[9:n - 4])))
        else:
            slot["state"] = "damaged"
            diag.add("warning", "damaged_slot", "slot %s (%d bytes) holds no good record: its message is lost "
                     "(the library reports the event `damaged`)" % (name, n))
        info["slots"].append(slot)
    # By seq, as serial numbers (they wrap modulo 2**29: by distance from one
    # of them); an OUT_REL after the OUT_PUB of the same seq.
    ref = found[0][0] if found else 0

    def age(seq):
        return (seq - ref + SEQ_HALF) & SEQ_MASK
    found.sort(key=lambda f: (age(f[0]), f[1]))
    newest = {}
    for seq, rel, k, pid, pkt in found:
        if pid in newest:
            diag.add("info", "older_copy", "slot %d holds an older copy of packet id %d (seq %d): the %s wins"
                     % (newest[pid][1], pid, newest[pid][0], "OUT_REL" if rel and seq == newest[pid][0] else "newer"))
        newest[pid] = (seq, k, pid, pkt)
    live = sorted(newest.values(), key=lambda v: age(v[0]))
    s.out = [[pid, pkt] for _, _, pid, pkt in live]
    pubs = [pid for _, _, pid, pkt in live if pkt is not None]
    if pubs:
        s.last_pid = pubs[-1]      # the newest PUBLISH's id (an OUT_REL's seq is its PUBREC's)
    return s


def _torn(s, diag, p, n, msg):
    diag.add("warning", "torn_tail", msg, p, ignored_bytes=n - p)
    s.torn = True


def _drop(lst, index, pid):
    ent = index.pop(pid, None)
    if ent is not None:
        lst.remove(ent)


# ---------------------------------------------------------------- ring decoding

def _log2(x):
    return x.bit_length() - 1


def _valid_kind(k):
    return k == K_APPEND or (k & 0xF9) == K_PART


def _kind_name(k):
    if k == K_APPEND:
        return "append"
    parts = ["part"]
    if k & K_BEGIN:
        parts.append("BEGIN")
    if k & K_END:
        parts.append("END")
    return " ".join(parts)


def read_ring(img, block_size, prog_size, first_block, num_blocks, diag, info):
    """The session bytes held by a RingStore region in `img` (what
    RingStore.load() returns). Fills `info` with a description of the ring
    as far as it got."""
    B = block_size
    if not img:
        raise Unreadable("the image is empty")
    misplaced = []
    i = img.find(RING_MAGIC + bytes([RING_FORMAT]))
    while i >= 0 and len(misplaced) < 4:
        if i % B and i + RING_BHDR + 4 <= len(img) and crc_ok(img, i, RING_BHDR):
            misplaced.append(i)
        i = img.find(RING_MAGIC + bytes([RING_FORMAT]), i + 1)
    if misplaced:
        diag.add("warning", "block_size_hint", "ring block headers at offsets %s are not on %d-byte block boundaries: "
                 "wrong --block-size?" % (misplaced, B))
    if B <= 0 or len(img) % B:
        raise Unreadable("image of %d bytes is not a whole number of %d-byte blocks (--block-size?)" % (len(img), B))
    total = len(img) // B
    N = total - first_block if num_blocks is None else num_blocks
    if first_block < 0 or N < 1 or first_block + N > total:
        raise Unreadable("blocks %d..%d are outside the image (%d blocks)" % (first_block, first_block + N - 1, total))

    def blk(i):
        a = (first_block + i) * B
        return img[a:a + B]

    # Block headers. Without --prog-size, take log2(P) from the valid headers.
    cand = {}
    other = {}                  # version: its newest block's number
    for i in range(N):
        h = blk(i)
        if h[0:4] == RING_MAGIC and h[4] == RING_FORMAT and crc_ok(h, 0, RING_BHDR):
            cand[h[5]] = cand.get(h[5], 0) + 1
        elif h[0:4] == RING_MAGIC and crc_ok(h, 0, RING_BHDR) and u32(h, 8) <= RING_SEQ_MASK:
            other[h[4]] = max(other.get(h[4], -1), u32(h, 8))   # (past 2**30: the library skips it)
    if other and not cand:
        v = max(other, key=lambda k: other[k])      # the newest block's, as the library names it
        diag.add("error", "future_format" if v > RING_FORMAT else "old_format",
                 "ring blocks of format version %s; this inspector (and library) reads "
                 "version %d" % (", ".join(map(str, sorted(other))), RING_FORMAT))
        raise Unreadable("flash ring format %d is %s than this inspector reads (%d): the library discards it"
                         % (v, "newer" if v > RING_FORMAT else "older", RING_FORMAT))
    if prog_size is None:
        if not cand:
            _hint_block_size(img, B, diag)
            raise Unreadable("no formatted ring block (magic 'DMQR', version %d, good CRC) in %d blocks of %d bytes"
                             % (RING_FORMAT, N, B))
        lp = max(cand, key=lambda k: cand[k])
        if len(cand) > 1:
            diag.add("warning", "mixed_prog_size", "block headers name several program sizes %s; using %d"
                     % (sorted(1 << k for k in cand), 1 << lp))
        P = 1 << lp
    else:
        P = prog_size
    H = max(P, 32)              # the block header: a whole number of units
    if P < 16 or P > 4096 or P & (P - 1) or B % P or B < 4 * H:
        raise Unreadable("program size %d does not suit block size %d" % (P, B))
    seqs = [-1] * N
    why = None                  # a ring found here that is not this one (RingStore._rescan's rule)
    other_max = -1
    for i in range(N):
        h = blk(i)
        if h[0:4] != RING_MAGIC or not crc_ok(h, 0, RING_BHDR) or u32(h, 8) > RING_SEQ_MASK:
            continue
        n = (h[6] << 8) | h[7]
        s = u32(h, 8)
        # its format and P, its size, and block i numbered i mod N
        if h[4] == RING_FORMAT and h[5] == _log2(P) and (n == 0xFFFF or n == N) and s % N == i:
            seqs[i] = s
            continue
        # Another ring's block (every format keeps header bytes 0..15 where
        # they are). The newest names the reason: it makes this ring stale.
        if s < other_max:
            continue
        other_max = s
        if h[4] != RING_FORMAT:
            why = "format %d is %s than this inspector reads (%d)" % (
                h[4], "newer" if h[4] > RING_FORMAT else "older", RING_FORMAT)
        elif h[5] != _log2(P):
            why = "written with program size %d, read with %d (--prog-size?)" % (1 << h[5], P)
        elif n not in (0xFFFF, N):
            why = "written over %d blocks, read over %d (--num-blocks?)" % (n, N)
        else:
            why = "written over a region that starts at another block (--first-block?)"
    info.update(block_size=B, prog_size=P, blocks=N, first_block=first_block,
                formatted_blocks=sum(1 for x in seqs if x >= 0))
    newest = max(seqs)
    if why and (newest < 0 or other_max > newest):
        diag.add("error", "foreign_ring", "ring blocks " + why)
        raise Unreadable("flash ring " + why + ": the library discards it")
    if info["formatted_blocks"] == 0:
        if cand:
            diag.add("error", "foreign_ring", "ring blocks were written with program size(s) %s, not %d"
                     % (sorted(1 << k for k in cand), P))
        else:
            _hint_block_size(img, B, diag)
        raise Unreadable("no formatted ring block for program size %d" % P)
    head = -1
    for i in range(N):
        if seqs[i] >= 0 and (head < 0 or seqs[i] > seqs[head]):
            head = i
    oldest, count = head, 1
    while count < N:
        j = (oldest - 1) % N
        if seqs[j] < 0 or seqs[j] != seqs[oldest] - 1:
            break
        oldest, count = j, count + 1
    chain = [(oldest + c) % N for c in range(count)]
    info.update(head=head, head_seq=seqs[head], oldest=oldest, chain_blocks=count)
    outside = [i for i in range(N) if i not in chain]
    if outside:
        stale = [i for i in outside if seqs[i] >= 0]
        blank = [i for i in outside if seqs[i] < 0 and blk(i) == b"\xff" * B]
        other = [i for i in outside if seqs[i] < 0 and i not in blank]
        info.update(stale_blocks=stale, erased_blocks=blank, unformatted_blocks=other)

    # Walk every valid commit in chain order (the scan of RingStore._walk).
    def commit_size(buf, pos, bseq):
        # A commit's CRC covers its place (block number, offset: u32 each)
        # and then its header and payload.
        if not _valid_kind(buf[pos]) or buf[pos + 1] != 0:
            return 0
        n = u16(buf, pos + 2)
        size = -(-(RING_OVH + n) // P) * P
        end = pos + RING_HDR + n
        if pos + size > B or zlib.crc32(buf[pos:end], zlib.crc32(struct.pack(">II", bseq, pos))) != u32(buf, end):
            return 0
        return size

    def used(buf, pos):
        # The first P-unit at or after pos that is not erased; B if none.
        for j in range(pos, B):
            if buf[j] != 0xFF:
                return j - j % P
        return B

    def room_of(h):
        # The largest commit of the block's writers (header bytes 16..19,
        # with their complement); unknown: the rest of the block.
        if h[16] ^ h[18] == 0xFF and h[17] ^ h[19] == 0xFF and (h[16] or h[17]):
            return min(((h[16] << 8) | h[17]) * P, B - H)
        return B - H

    commits = []
    write_at = None
    last = None
    for c, i in enumerate(chain):
        buf = blk(i)
        room = room_of(buf)
        pos = H
        torn = False
        last = None                 # the next number is checked within a block only (RingStore._walk)
        w = B
        while pos + RING_OVH <= B:
            size = commit_size(buf, pos, seqs[i])
            if size and (not torn or last is None or u32(buf, pos + 4) == (last + 1) & RING_SEQ_MASK):
                n = u16(buf, pos + 2)
                last = u32(buf, pos + 4)
                commits.append({"chain": c, "block": i, "offset": pos, "kind": buf[pos], "length": n,
                                "seq": last, "payload": bytes(buf[pos + RING_HDR:pos + RING_HDR + n])})
                pos += size
                torn = False
                continue
            # Erased to the end, or a commit a power cut tore: nothing within
            # the block's largest commit of its first unit not erased is a
            # commit; the log goes on at the first commit after that.
            u = used(buf, pos)
            if u == B:
                break
            diag.add("warning" if i == head else "info", "ring_torn_commit",
                     "block %d (seq %d): a torn or corrupt commit at offset %d; nothing up to offset %d is read%s"
                     % (i, seqs[i], u, min(u + room, B), "" if u + room < B else " (the rest of the block)"),
                     block=i, block_offset=u)
            torn = True
            w = u + room
            pos = used(buf, w) if w < B else B
        if not torn:
            w = pos
        if w + P > B or used(buf, w) < B:
            w = B
        write_at = w if w < B else None
    info["write_offset"] = write_at
    info["commit_room"] = room_of(blk(head))

    # Pick the latest complete checkpoint (the rules of RingStore._rescan).
    chosen = cand_i = -1
    abandoned = 0
    last_seq = None
    for idx, cm in enumerate(commits):
        if last_seq is not None and cm["seq"] not in ((last_seq + 1) & RING_SEQ_MASK, last_seq):
            diag.add("info", "ring_seq_gap", "commit sequence gap before block %d offset %d (%d -> %d): what came "
                     "before is stale and dropped" % (cm["block"], cm["offset"], last_seq, cm["seq"]),
                     block=cm["block"], block_offset=cm["offset"])
            chosen = cand_i = -1
        last_seq = cm["seq"]
        k = cm["kind"]
        if k == K_APPEND:
            if cand_i >= 0:
                abandoned += 1
            cand_i = -1
            continue
        if k & K_BEGIN:
            if cand_i >= 0:
                abandoned += 1
            cand_i = idx
        if cand_i < 0:
            continue
        if k & K_END:
            chosen = cand_i
            cand_i = -1
    if cand_i >= 0:
        abandoned += 1
    info["commits"] = len(commits)
    if abandoned:
        diag.add("info", "ring_abandoned_checkpoint", "%d checkpoint(s) cut short by a power cut (no END part): ignored"
                 % abandoned)
    info["commit_list"] = [{k: v for k, v in cm.items() if k != "payload"} for cm in commits]
    if chosen < 0:
        raise Unreadable("the ring holds no complete checkpoint (blank, foreign or cut off): no session")
    out = bytearray()
    done = False
    parts = appends = app_bytes = 0
    for cm in commits[chosen:]:
        if done:
            if cm["kind"] != K_APPEND:
                continue                      # parts of a later, abandoned checkpoint
            appends += 1
            app_bytes += cm["length"]
        else:
            parts += 1
            if cm["kind"] & K_END:
                done = True
        out += cm["payload"]
    ck = commits[chosen]
    info["checkpoint"] = {"block": ck["block"], "block_seq": seqs[ck["block"]], "offset": ck["offset"],
                          "commit_seq": ck["seq"], "parts": parts, "bytes": len(out) - app_bytes}
    info["appends"] = {"count": appends, "bytes": app_bytes}
    if not out:
        raise Unreadable("the live checkpoint is empty: the session was erased (clean session, or set aside)")
    return bytes(out)


def _hint_block_size(img, B, diag):
    offs = []
    i = img.find(RING_MAGIC)
    while i >= 0 and len(offs) < 64:
        offs.append(i)
        i = img.find(RING_MAGIC, i + 1)
    if not offs:
        diag.add("error", "foreign_ring", "no ring block header (magic 'DMQR') anywhere in the image")
        return
    g = 0
    for o in offs:
        g = math.gcd(g, o)
    if g and g != B:
        diag.add("info", "block_size_hint", "ring block headers found at offsets %s: is the block size %d?"
                 % (offs[:4], g))


# ---------------------------------------------------------------- report

def _text(b):
    return b.decode("utf-8", "backslashreplace")


def _preview(payload, width):
    try:
        t = payload.decode("utf-8")
        if all(c.isprintable() for c in t):
            s = repr(t[:width]) + ("..." if len(t) > width else "")
            return s
    except UnicodeDecodeError:
        pass
    h = payload[:width // 2].hex(" ")
    return "hex " + h + (" ..." if len(payload) > width // 2 else "")


def _duration(s):
    if s == NEVER:
        return "never (0xFFFFFFFF)"
    if s == 0:
        return "0 (the session ends with the connection)"
    parts = []
    for unit, k in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if s >= k:
            parts.append("%d %s" % (s // k, unit))
            s %= k
    return " ".join(parts)


def build_report(s, diag):
    h = s.header
    saved = None
    if h["saved_min"]:
        try:
            saved = (EPOCH_2000 + datetime.timedelta(minutes=h["saved_min"])).isoformat().replace("+00:00", "Z")
        except OverflowError:       # past the year 9999: a board's clock set wrong
            diag.add("warning", "saved_at_out_of_range", "saved at %d minutes after 2000, past the year 9999 "
                     "(a board's clock set wrong): no date, and no expiry judged" % h["saved_min"])
    version = h["protocol"]
    rep = {
        "format": s.format,
        "header": {
            "client_id": _text(h["client_id"]), "client_id_hex": h["client_id"].hex(),
            "protocol": version, "protocol_name": PROTOCOLS[version], "flags": h["flags"],
            "assigned_client_id": bool(h["flags"] & HF_ASSIGNED_ID),
            "saved_at_disconnect": bool(h["flags"] & HF_OFFLINE),
            "subscriptions_owed": bool(h["flags"] & HF_RESUB),
            "no_session": bool(h["flags"] & HF_NO_SESSION),
            "session_expiry": h["session_expiry"], "session_expiry_never": h["session_expiry"] == NEVER,
            "saved_min": h["saved_min"], "saved_at": saved,
            "next_pid_field": h["next_pid"], "last_pid": s.last_pid,
            "next_new_pid": s.last_pid % 65535 + 1,
        },
        "subscriptions": [],
        "outgoing": [],
        "incoming_qos2": list(s.in_qos2),
        "records": s.records,
        "valid_bytes": s.valid_bytes,
        "torn": s.torn,
    }
    if h["flags"] & ~HF_KNOWN:
        diag.add("info", "header_flags", "unknown header flag bits 0x%02x (ignored)" % (h["flags"] & ~HF_KNOWN))
    exp = None
    if saved and h["session_expiry"] != NEVER and not h["flags"] & HF_NO_SESSION:   # (no session: none to expire)
        try:
            exp = EPOCH_2000 + datetime.timedelta(minutes=h["saved_min"], seconds=h["session_expiry"] + 59)
        except OverflowError:
            diag.add("warning", "expiry_out_of_range", "the session expires past the year 9999")
    if exp is not None:
        rep["header"]["expires_at"] = exp.isoformat().replace("+00:00", "Z")
        if datetime.datetime.now(datetime.timezone.utc) > exp:
            diag.add("info", "expired", "the session expired at %s: a board with its clock set discards it at boot"
                     % rep["header"]["expires_at"])
    for f, opts, sid in s.subs:
        rep["subscriptions"].append({
            "filter": _text(f), "options": opts, "qos": opts & 3, "no_local": bool(opts & 4),
            "retain_as_published": bool(opts & 8), "retain_handling": (opts >> 4) & 3, "sub_id": sid})
    for pid, pkt in s.out:
        m = {"pid": pid, "packet_hex": pkt.hex() if pkt is not None else None}
        if pkt is None:
            m.update(state="pubrel", state_text="PUBREL owed", qos=2, packet_len=0)
        else:
            m.update(state="publish", state_text="PUBLISH owed", packet_len=len(pkt))
            try:
                d = decode_publish(pkt, version)
            except (ValueError, IndexError) as e:
                m["error"] = str(e)
                diag.add("warning", "bad_publish", "stored PUBLISH for packet id %d does not decode: %s" % (pid, e))
            else:
                m.update(qos=d["qos"], retain=d["retain"], dup=d["dup"], topic=_text(d["topic"]),
                         topic_hex=d["topic"].hex(), payload_len=len(d["payload"]),
                         payload_hex=d["payload"].hex(), properties=d["properties"])
                try:
                    m["payload_text"] = d["payload"].decode("utf-8")
                except UnicodeDecodeError:
                    m["payload_text"] = None
                if d["qos"] == 0:
                    diag.add("warning", "qos0_stored", "packet id %d holds a QoS 0 PUBLISH (never session state)" % pid)
                elif d["packet_pid"] != pid:
                    diag.add("warning", "pid_mismatch", "record packet id %d but the PUBLISH carries %d"
                             % (pid, d["packet_pid"]))
                if any(p[0] == "topic_alias" for p in d["properties"]):
                    diag.add("warning", "topic_alias_stored", "packet id %d: the stored PUBLISH carries a Topic "
                             "Alias, which belongs to one connection (MQTT-3.3.2-7)" % pid)
        rep["outgoing"].append(m)
    return rep


def print_text(rep, diag, src, session_bytes, show_hex, out):
    w = out.write
    if src["mode"] == "directory":
        dd = src["directory"]
        w("%s: session directory, %d file(s)\n" % (dd.get("path", src["path"]), len(dd.get("files", ()))))
        for sl in dd.get("slots", ()):
            w("  slot %-3d %4d bytes  %s\n" % (sl["slot"], sl["bytes"], sl["state"] if sl["state"] != "message"
              else "%s packet id %d, seq %d" % (sl["record"], sl["pid"], sl["seq"])))
    else:
        w("%s: %s, %d bytes\n" % (src["path"], "raw flash ring image" if src["mode"] == "ring" else "session file",
                                  src["bytes"]))
    ring = src.get("ring")
    if ring and "formatted_blocks" in ring:
        w("ring          %d blocks of %d bytes (from block %d), prog_size %d, %d formatted\n"
          % (ring["blocks"], ring["block_size"], ring["first_block"], ring["prog_size"], ring["formatted_blocks"]))
        if "head" not in ring:
            ring = {}
    if ring and "head" in ring:
        w("              head block %d (seq %d), chain of %d block(s) from block %d, %d valid commit(s)\n"
          % (ring["head"], ring["head_seq"], ring["chain_blocks"], ring["oldest"], ring.get("commits", 0)))
        if "checkpoint" in ring:
            ck, ap = ring["checkpoint"], ring["appends"]
            w("              live checkpoint: block %d offset %d, commit seq %d, %d part(s), %d bytes; "
              "%d append(s) after it, %d bytes\n" % (ck["block"], ck["offset"], ck["commit_seq"], ck["parts"],
                                                    ck["bytes"], ap["count"], ap["bytes"]))
        if show_hex and "commit_list" in ring:
            w("\ncommits (chain order)\n")
            for cm in ring["commit_list"]:
                w("  block %2d offset %5d  seq %-6d %-14s %5d bytes\n"
                  % (cm["block"], cm["offset"], cm["seq"], _kind_name(cm["kind"]), cm["length"]))
    if rep is None:
        _print_diags(diag, w, True)
        return
    h = rep["header"]
    if src["mode"] == "directory":
        w("header file   %d record(s), format version %d\n" % (len(rep["records"]), rep["format"]))
    else:
        w("session       %d bytes, %d record(s), format version %d\n" % (len(session_bytes), len(rep["records"]),
                                                                        rep["format"]))
    w("client id     %r%s\n" % (h["client_id"], " (assigned by the broker)" if h["assigned_client_id"] else ""))
    w("protocol      %s (level %d)\n" % (h["protocol_name"], h["protocol"]))
    w("flags         0x%02x%s%s%s%s\n" % (h["flags"], " assigned-id" if h["flags"] & HF_ASSIGNED_ID else "",
                                          " saved-at-disconnect" if h["flags"] & HF_OFFLINE else "",
                                          " subscriptions-owed" if h["flags"] & HF_RESUB else "",
                                          " no-session" if h["flags"] & HF_NO_SESSION else ""))
    w("expiry        %s%s\n" % (_duration(h["session_expiry"]) if not h["session_expiry_never"] else "never (0xFFFFFFFF)",
                                 " (no session: a boot keeps its configured expiry)" if h["no_session"] else ""))
    w("saved at      %s\n" % (h["saved_at"] or ("unknown (the board clock was not set)" if h["flags"] & HF_OFFLINE
                                                  else "not recorded (only disconnect() records it)")))
    if "expires_at" in h:
        w("expires at    %s\n" % h["expires_at"])
    w("packet ids    last issued %d (header field %d); next new id tried: %d\n"
      % (h["last_pid"], h["next_pid_field"], h["next_new_pid"]))

    w("\nsubscriptions (%d)\n" % len(rep["subscriptions"]))
    for sub in rep["subscriptions"]:
        extra = []
        if sub["no_local"]:
            extra.append("no local")
        if sub["retain_as_published"]:
            extra.append("retain as published")
        if sub["retain_handling"]:
            extra.append("retain handling %d" % sub["retain_handling"])
        if sub["sub_id"]:
            extra.append("sub id %d" % sub["sub_id"])
        w("  %-32s QoS %d%s\n" % (sub["filter"], sub["qos"], ("  " + ", ".join(extra)) if extra else ""))

    w("\noutgoing messages (%d)\n" % len(rep["outgoing"]))
    if rep["outgoing"]:
        w("  %5s  %-12s %3s %1s %1s %5s  %-24s %s\n" % ("pid", "state", "QoS", "R", "D", "size", "topic", "payload"))
    for m in rep["outgoing"]:
        if m["state"] == "pubrel":
            w("  %5d  %-12s %3d %1s %1s %5s  %-24s %s\n" % (m["pid"], m["state_text"], 2, "-", "-", "-", "-",
                                                          "(released: PUBREC received, awaiting PUBCOMP)"))
        elif "error" in m:
            w("  %5d  %-12s  undecodable PUBLISH (%s), %d bytes\n" % (m["pid"], m["state_text"], m["error"],
                                                                     m["packet_len"]))
        else:
            pay = bytes.fromhex(m["payload_hex"])
            w("  %5d  %-12s %3d %1d %1d %5d  %-24s %s (%d byte%s)\n"
              % (m["pid"], m["state_text"], m["qos"], m["retain"], m["dup"], m["packet_len"], m["topic"],
                 _preview(pay, 32), len(pay), "s" * (len(pay) != 1)))
            if m["properties"]:
                w("         properties: %s\n" % ", ".join("%s=%s" % (k, v) for k, v in m["properties"]))

    ids = rep["incoming_qos2"]
    w("\nincoming QoS 2 awaiting PUBREL (%d)%s\n" % (len(ids), (": " + " ".join(map(str, ids))) if ids else ""))

    if show_hex:
        w("\nrecords\n")
        w("  %6s  %s\n" % (0, "magic+format  " + session_bytes[:MAGIC_LEN].hex(" ")))
        for r in rep["records"]:
            o, ln = r["offset"], r["length"]
            rb = session_bytes[o:o + ln + 7]
            w("  %6d  %-10s type %02x | len %s | body %s | crc %s\n"
              % (o, r["name"], rb[0], rb[1:3].hex(" "), _hexcut(rb[3:3 + ln]), rb[3 + ln:].hex(" ")))
        if rep["torn"]:
            tail = max((r["offset"] + r["size"] for r in rep["records"]), default=MAGIC_LEN)
            w("  %6d  (ignored)  %s\n" % (tail, _hexcut(session_bytes[tail:])))
    _print_diags(diag, w)


def _hexcut(b, limit=48):
    if len(b) <= limit:
        return b.hex(" ")
    return b[:limit].hex(" ") + " ... (%d bytes)" % len(b)


def _print_diags(diag, w, unreadable=False):
    w("\ndiagnostics\n")
    if not diag.items and not unreadable:
        w("  ok: every record has a good CRC, no unknown records\n")
    for d in diag.items:
        w("  %s: %s\n" % (d["level"], d["message"]))


# ---------------------------------------------------------------- command line

HELP_DESCRIPTION = """\
Decode a durable_mqtt session state and print what it holds: the header
(client id, protocol, flags, session expiry, saved-at time, packet id
counter), subscriptions, outgoing messages (packet id, state, QoS/retain/DUP,
topic, payload preview, size), incoming QoS 2 ids awaiting PUBREL, and
diagnostics (torn tail, bad CRC at an offset, unknown records skipped,
foreign magic, future format version; for a ring also torn commits, sequence
gaps and abandoned checkpoints).

FILE is the session_file path of a device (its directory PATH.d is read),
the directory itself, a session file of the log layout, or bytes saved from
save_session(); with --ring it is a raw image of a flash ring region
(RingStore), whose latest complete checkpoint and the appends after it are
found first. Formats: docs/session-format.md, docs/ring-format.md."""

HELP_EPILOG = """\
exit status:
  0  a valid state (warnings, such as a torn tail, may have been printed: the
     library loads such a state without the damaged record and what follows)
  1  unreadable, empty, foreign or corrupt: no usable session (the library
     would set a session file aside as <path>.bad and start clean)
  2  usage error

examples:
  python3 tools/session_inspect.py /flash/session.dmq     # reads /flash/session.dmq.d/
  python3 tools/session_inspect.py --hex session.dat
  python3 tools/session_inspect.py --ring --block-size 4096 flash.img
  python3 tools/session_inspect.py --ring --prog-size 256 --json pico.img | jq .outgoing"""

def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="session_inspect.py",
        description=HELP_DESCRIPTION,
        epilog=HELP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file", help="session file, save_session() dump, or (with --ring) flash image")
    ap.add_argument("--ring", action="store_true", help="FILE is a raw flash image holding a RingStore region")
    ap.add_argument("--block-size", type=int, default=4096, metavar="B",
                    help="erase block size of the ring (default 4096)")
    ap.add_argument("--prog-size", type=int, default=None, metavar="N",
                    help="the ring's prog_size (16..4096); default: read from the block headers")
    ap.add_argument("--first-block", type=int, default=0, metavar="K",
                    help="first block of the ring region in the image (default 0)")
    ap.add_argument("--num-blocks", type=int, default=None, metavar="N",
                    help="blocks in the ring region (default: the rest of the image)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    ap.add_argument("--hex", action="store_true",
                    help="also list every record (and, for a ring, every commit) with its bytes")
    a = ap.parse_args(argv)
    if not a.ring and (a.prog_size is not None or a.first_block or a.num_blocks is not None):
        ap.error("--prog-size, --first-block and --num-blocks need --ring")
    if a.block_size <= 0:
        ap.error("--block-size must be positive")
    if a.first_block < 0:
        ap.error("--first-block must be 0 or more")
    if a.num_blocks is not None and a.num_blocks < 3:
        ap.error("--num-blocks must be 3 or more (a ring needs at least 3 blocks)")
    if a.prog_size is not None and (a.prog_size < 16 or a.prog_size > 4096 or a.prog_size & (a.prog_size - 1)):
        ap.error("--prog-size must be a power of two from 16 to 4096")

    diag = Diag()
    src = {"path": a.file, "mode": "ring" if a.ring else "file", "bytes": 0}
    rep = None
    session_bytes = b""
    status = 0
    error = None
    try:
        import os
        d = a.file if os.path.isdir(a.file) else a.file + ".d" if os.path.isdir(a.file + ".d") else None
        old = log_file_beside(os.path.normpath(d)) if d and not a.ring else None
        if old:
            diag.add("info", "log_file_beside", "%s holds no session header, and beside it is %s, a session file "
                     "of the older log layout: a boot restores that file (and moves it into the directory); "
                     "it is read here" % (d, old))
            src["path"] = a.file = old
            d = None
        if d and not a.ring:
            src["mode"] = "directory"
            src["directory"] = {}
            check_tag(os.path.normpath(d), diag)
            if os.path.isfile(os.path.join(d + ".d", "h")):
                # slotmove.replace(): a restore_session() whose rename was
                # cut or refused; a boot moves PATH.d.d into place.
                diag.add("info", "restored_beside", "%s.d holds a whole session (a restore_session() whose "
                         "rename did not complete): a boot moves it into place of %s; it is read here" % (d, d))
                d += ".d"
            s = read_dir(d, diag, src["directory"])
            rep = build_report(s, diag)
            bad = [str(x["slot"]) for x in src["directory"]["slots"] if x["state"] == "unreadable"]
            if bad:
                raise Unreadable("slot file(s) %s in %s cannot be read: the library fails writing them"
                                 % (", ".join(bad), d))
            raise _Done()
        try:
            with open(a.file, "rb") as f:
                raw = f.read()
        except OSError as e:
            raise Unreadable("cannot read %s: %s" % (a.file, e.strerror or e))
        src["bytes"] = len(raw)
        if a.ring:
            src["ring"] = {}
            session_bytes = read_ring(raw, a.block_size, a.prog_size, a.first_block, a.num_blocks, diag,
                                      src["ring"])
        else:
            session_bytes = raw
        s = parse_session(session_bytes, diag)
        rep = build_report(s, diag)
    except _Done:
        pass
    except Unreadable as e:
        status = 1
        error = str(e)
    if a.json:
        doc = {"source": src, "valid": status == 0, "error": error, "session_bytes": len(session_bytes),
               "diagnostics": diag.items}
        if rep is not None:
            doc.update(rep)
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_text(rep, diag, src, session_bytes, a.hex, sys.stdout)
        if error:
            sys.stdout.write("\nresult: UNUSABLE: %s\n" % error)
        else:
            nw = sum(1 for d in diag.items if d["level"] == "warning")
            sys.stdout.write("\nresult: valid%s\n" % (" (%d warning%s)" % (nw, "s" * (nw != 1)) if nw else ""))
    return status


if __name__ == "__main__":
    sys.exit(main())
