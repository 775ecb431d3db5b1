# Model-based random tester for durable_mqtt.session.Session (sans-IO engine).
# Usage: MICROPYPATH=lib:tests/mp micropython -X heapsize=64M tests/mp/fuzz_engine.py FIRST_SEED COUNT [STEPS] [flags]
# (tests/test_engine.py runs it; its first run found three defects, fixed in 0.2.0.)
#   flags: q0=0 (do not flag QoS 0 dropped while its room is empty),
#          min=1 (minimize failures), cov=1 (coverage counters),
#          huge=1 (clock above 2**31, as ticks_ms() on the 64-bit unix port after 24.8 days)
# Written for this review; the model below is derived from the MQTT
# statements in session.py's header and docs/sessions.md, not from the code.
import sys
from time import ticks_add, ticks_diff
from durable_mqtt.session import Session
from durable_mqtt.errors import ProtocolError, SessionError, QueueFull, MQTTException
from durable_mqtt.store import state_bytes
from durable_mqtt import restore, stream, subs

STRICT_Q0 = True
CFG_OVERRIDE = {}    # replay: fixed sizes (v5, nslots, qos12, buf, arena_n, rx2cap, maxinf)
HUGE_TICKS = False      # start the clock above 2**31 (unix port after 24.8 days up)


COV = {}


def cov(k):
    COV[k] = COV.get(k, 0) + 1


class Fail(Exception):
    pass


def need(c, *msg):
    if not c:
        raise Fail(" ".join(str(x) for x in msg))


class Rng:
    def __init__(self, seed):
        self.s = ((seed + 1) * 2654435761 + 0x9E3779B9) & 0xFFFFFFFF or 1
        for _ in range(8):
            self.next()

    def next(self):
        x = self.s
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.s = x
        return x

    def below(self, n):
        return self.next() % n

    def rng(self, a, b):
        return a + self.below(b - a + 1)

    def pick(self, seq):
        return seq[self.below(len(seq))]

    def chance(self, pct):
        return self.below(100) < pct


def vbi(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def encode(qos, retain, topic, pid, props, payload, v5):
    # A PUBLISH per MQTT 3.1.1 / 5.0 section 3.3 (DUP 0).
    body = bytearray()
    body += bytes((len(topic) >> 8, len(topic) & 0xFF))
    body += topic
    if qos:
        body += bytes((pid >> 8, pid & 0xFF))
    if v5:
        body += vbi(len(props))
        body += props
    body += payload
    return bytes((0x30 | qos << 1 | retain,)) + vbi(len(body)) + bytes(body)


def pkt_size(tlen, plen, qos, prl, v5):
    rl = 2 + tlen + plen + (2 if qos else 0) + ((len(vbi(prl)) + prl) if v5 else 0)
    return 1 + len(vbi(rl)) + rl


class Msg:
    def __init__(self, serial, qos, retain, topic, props, payload, ttl, t0):
        self.serial = serial
        self.qos = qos
        self.retain = retain
        self.topic = topic
        self.props = props
        self.payload = payload
        self.pid = 0
        self.pkt = None
        self.n = 0
        self.dl = t0 + ttl * 1000 if 0 < ttl < 500000 else None   # elapsed-ms deadline
        self.state = "queued"   # queued / sent / rel / gone
        self.dup = False
        self.outcome = None
        self.reports = 0
        self.pubs = 0
        self.recd = False

    def __repr__(self):
        return "M(#%d q%d pid %d %s)" % (self.serial, self.qos, self.pid, self.state)


class Harness:
    def __init__(self, seed, rng):
        self.seed = seed
        r = rng
        self.v5 = r.chance(60)
        self.nslots = r.rng(2, 9) if r.chance(80) else r.rng(10, 20)
        self.qos12 = r.rng(1, self.nslots)
        self.buf = r.rng(24, 90)
        self.arena_n = r.rng(self.buf + 8, self.buf * 5)
        self.rx2cap = r.rng(1, 4)
        self.maxinf = r.rng(1, self.qos12 + 1)
        for k, v in CFG_OVERRIDE.items():
            setattr(self, k, v)
        self.e = self.fresh()
        if r.chance(30):
            self.e.last_pid = 65535 - r.rng(0, 6)     # ids wrap round 65535 -> 1
        if "last_pid" in CFG_OVERRIDE:
            self.e.last_pid = CFG_OVERRIDE["last_pid"]
        self.tx = bytearray(64)
        # model
        self.ring = []          # [kind 'pub'/'rel', Msg, handled, due]
        self.msgs = []          # every accepted message
        self.inflight = 0
        self.window = self.maxinf
        self.max_out = self.buf
        self.max_qos = 2
        self.retain_ok = 1
        self.rx2 = []
        self.has_state = False
        self.req = None         # (pid, kind) of the SUBSCRIBE/UNSUBSCRIBE awaiting its ack
        self.stale = 0
        self.connected = False
        self.restored_ever = False
        self.serial = 0
        self.t0 = (2 ** 31 + 1000 * r.rng(0, 5000)) if HUGE_TICKS else 2 * r.rng(0, 500000)
        self.el = 0             # elapsed ms (even)
        self.steps = 0
        self.log = []

    def cfg(self):
        return "v5=%s slots=%d qos12=%d arena=%d rx2=%d window=%d max_out=%d" % (
            self.v5, self.nslots, self.qos12, self.arena_n, self.rx2cap, self.maxinf, self.buf)

    def fresh(self):
        return Session(self.v5, b"dev", self.nslots, self.qos12, self.arena_n, self.rx2cap, self.maxinf, self.buf)

    def now(self):
        return ticks_add(self.t0, self.el)

    # ------------------------------------------------------------ model helpers
    def held(self):
        return sum(1 for k, m, h, d in self.ring if m.qos)

    def q0count(self):
        return sum(1 for k, m, h, d in self.ring if not m.qos)

    def find_ent(self, pid, kind=None):
        for j in range(len(self.ring)):
            ent = self.ring[j]
            if ent[1].qos and ent[1].pid == pid and (kind is None or ent[0] == kind):
                return j
        return -1

    def m_limit(self, m):
        if m.n > self.max_out:
            return 0x95
        if m.qos > self.max_qos:
            return 0x9B
        if m.retain and not self.retain_ok:
            return 0x9A
        return 0

    def finish(self, m, how, reason):
        m.state = "gone"
        m.outcome = how
        m.reason = reason

    def m_next(self):
        # What the engine must do at next_out() now, per the model.
        ring = self.ring
        j = 0
        while j < len(ring):
            ent = ring[j]
            if ent[2]:
                j += 1
                continue
            m = ent[1]
            if ent[0] == "pub":
                if m.qos and self.inflight >= self.window:
                    for ent2 in ring[j + 1:]:
                        if ent2[0] == "rel" and ent2[3]:
                            cov("pubrel past a full window")
                            ent2[3] = False
                            return ("rel", ent2[1], 0)
                    return None
                ent[2] = True
                if m.dl is not None and self.el > m.dl:
                    ring.pop(j)
                    cov("expired q%d" % m.qos)
                    if m.qos:
                        self.finish(m, "expired", -1)
                        return ("left", m, -1)
                    self.finish(m, "expired0", -1)      # reported too (done_pid 0): counted as expired
                    return ("left", m, -1)
                r = self.m_limit(m)
                if r:
                    cov("refused q%d 0x%x" % (m.qos, r))
                    ring.pop(j)
                    self.finish(m, "refused" if m.qos else "refused0", r)
                    return ("left", m, r)
                if m.dl is not None:
                    # MQTT 5 3.3.2.3.3: the expiry goes out as the whole
                    # seconds left (the deadline holds through m.dl), at
                    # least 1; its 4 bytes end where the payload begins.
                    left = max(1, (m.dl + 1 - self.el) // 1000)
                    k = len(m.pkt) - len(m.payload) - 4
                    m.pkt = m.pkt[:k] + left.to_bytes(4, "big") + m.pkt[k + 4:]
                    cov("expiry sent as the time left")
                m.dl = None
                dup = m.dup
                cov("PUBLISH q%d dup %d" % (m.qos, dup))
                if m.qos:
                    m.state = "sent"
                    self.inflight += 1
                else:
                    ring.pop(j)
                    self.finish(m, "sent0", 0)
                return ("pub", m, dup)
            ent[2] = True
            if ent[3]:
                ent[3] = False
                cov("PUBREL resent in order")
                return ("rel", m, 0)
            j += 1
        return None

    # ------------------------------------------------------------ structural check
    def check(self, where):
        e = self.e
        need(0 <= e.count <= e.nslots and 0 <= e.send <= e.count and 0 <= e.first < e.nslots,
             where, "ring counters", e.first, e.count, e.send)
        live = []
        pids = []
        nb = nb0 = 0
        for k in range(e.count):
            i = e.index(k)
            s = e.st[i] & 0x0F
            if not s:
                continue
            pid = e.pid[i]
            if pid:
                need(pid not in pids, where, "packet id %d held twice" % pid)
                pids.append(pid)
                nb += e.len[i]
            else:
                nb0 += e.len[i]
            live.append((s, pid, e.off[i], e.len[i], i))
        held = self.held()
        need(e.held == len(pids) == held, where, "held: engine %d, slots %d, model %d" % (e.held, len(pids), held))
        need(e.nbytes == nb and e.nbytes0 == nb0, where, "byte counts", e.nbytes, nb, e.nbytes0, nb0)
        need(len(live) == len(self.ring), where, "live slots %d, model %d" % (len(live), len(self.ring)),
             [(s, p) for s, p, o, l, i in live], [(k, m) for k, m, h, d in self.ring])
        ranges = []
        for x in range(len(live)):
            s, pid, off, ln, i = live[x]
            kind, m = self.ring[x][0], self.ring[x][1]
            if kind == "rel":
                need(s == 3 and pid == m.pid and ln == 0, where, "slot %d: want PUBREL owed for %d, got st %d pid %d len %d"
                     % (x, m.pid, s, pid, ln))
                continue
            want = 2 if m.state == "sent" else 1
            need(s == want and pid == m.pid and ln == m.n, where, "slot %d: want %r, got st %d pid %d len %d"
                 % (x, m, s, pid, ln))
            need(off + ln <= len(e.arena), where, "packet past the arena end")
            got = bytearray(e.arena[off:off + ln])
            got[0] &= 0xF7
            need(bytes(got) == m.pkt, where, "arena bytes of %r changed" % m, bytes(got), m.pkt)
            ranges.append((off, ln))
        # packets do not overlap and lie in the arena's occupied region
        rs = sorted(ranges)
        for a in range(1, len(rs)):
            need(rs[a - 1][0] + rs[a - 1][1] <= rs[a][0], where, "packets overlap", rs)
        if ranges:
            h, t = e.a_head, e.a_tail
            need(h == ranges[0][0], where, "a_head %d is not the oldest packet's offset %d" % (h, ranges[0][0]))
            for off, ln in ranges:
                if t > h:
                    ok = h <= off and off + ln <= t
                else:
                    ok = off >= h or off + ln <= t
                need(ok, where, "packet at %d+%d outside the occupied region %d..%d" % (off, ln, h, t))
        need(e.inflight == self.inflight, where, "inflight engine %d model %d" % (e.inflight, self.inflight))
        need([e.rx2[k] for k in range(e.rx2_n)] == self.rx2, where, "rx2", [e.rx2[k] for k in range(e.rx2_n)], self.rx2)

    def fifo_fits(self, n):
        # Could a FIFO arena (no packet wraps round the end) take n more
        # bytes, judged generously (one byte of slack each side)?
        e = self.e
        A = len(e.arena)
        if not (e.nbytes or e.nbytes0):
            return n <= A
        h, t = e.a_head, e.a_tail
        if t > h:
            return t + n <= A or n + 1 < h
        return t + n + 1 < h

    # ------------------------------------------------------------ operations
    def op(self, o):
        self.log.append(o)
        self.steps += 1
        e = self.e
        e.done_pid = 0
        e.done_reason = 0
        e.rec = 0
        k = o[0]
        getattr(self, "op_" + k)(*o[1:])
        self.check(o)

    def op_acc(self, qos, retain, plen, ttl, then_unaccept=False):
        e = self.e
        self.serial += 1
        s = self.serial
        topic = b"t/%d" % (s % 10)
        props = (b"\x02" + ttl.to_bytes(4, "big")) if (self.v5 and ttl) else (b"" if self.v5 else None)
        payload = (b"%05d" % s + b"x" * plen)[:max(plen, 5)]
        m = Msg(s, qos, retain, topic, props or b"", payload, ttl, self.el)
        n = pkt_size(len(topic), len(payload), qos, len(props) if props else 0, self.v5)
        held0 = e.held
        nb0 = e.nbytes0
        q0 = self.q0count()
        fits = self.fifo_fits(n)
        count0 = e.count
        try:
            pid = e.accept(topic, payload, qos, retain, props, self.now(), ttl)
        except QueueFull as x:
            need(qos, "QueueFull for QoS 0", x)
            cov("QueueFull held" if held0 >= self.qos12 else "QueueFull bytes")
            if held0 >= self.qos12:
                return
            need(not fits, "QueueFull although the outbox has the room: held %d/%d, n %d, head %d tail %d nbytes %d+%d count %d"
                 % (held0, self.qos12, n, e.a_head, e.a_tail, e.nbytes, e.nbytes0, e.count), x)
            return
        need(not (qos and held0 >= self.qos12), "QoS %d accepted with %d held of %d" % (qos, held0, self.qos12))
        if pid >= 0 and e.count and e.off[e.index(e.count - 1)] == 0 and (e.nbytes + e.nbytes0) > n:
            cov("accept wrapped to arena start")
        if pid >= 0 and self.ring and len(self.ring) + 1 <= e.count and count0 >= self.nslots:
            cov("accept compacted a full ring")
        if qos == 0 and pid == -1:
            cov("QoS 0 dropped")
            ok = q0 >= self.nslots - self.qos12 or nb0 + n > self.arena_n // 5 or not fits
            need(ok or not STRICT_Q0, "QoS 0 dropped with its room empty: %d QoS 0 queued of %d places, %d+%d bytes of %d"
                 % (q0, self.nslots - self.qos12, nb0, n, self.arena_n // 5), "count", e.count, "held", e.held)
            return
        if qos:
            need(0 < pid <= 65535, "bad pid", pid)
            for k2, m2, h2, d2 in self.ring:
                need(not (m2.qos and m2.pid == pid), "new packet id %d still held by %r" % (pid, m2))
            need(not (self.req and self.req[0] == pid), "new packet id %d is the pending request's" % pid)
            need(pid != self.stale, "new packet id %d is an abandoned request's, its answer still due" % pid)
            need(e.rec == 2 and e.pid[e.rec_slot] == pid, "rec after accept", e.rec, e.rec_slot)
            e.rec = 0
        else:
            need(pid == 0, "QoS 0 accept returned", pid)
        m.pid = pid
        m.pkt = encode(qos, retain, topic, pid, props or b"", payload, self.v5)
        m.n = len(m.pkt)
        need(m.n == n, "size calc")
        self.ring.append(["pub", m, False, False])
        if then_unaccept and qos:
            e.unaccept()
            self.ring.pop()
            return
        self.msgs.append(m)
        if self.connected and qos:
            self.op_drain()

    def emit(self, got):
        # Compare one next_out() result with the model.
        e = self.e
        want = self.m_next()
        if got == 0:
            need(want is None, "next_out gave nothing, model wants", want)
            return False
        need(want is not None, "next_out gave %d, model wants nothing" % got,
             bytes(e.src[e.src_off:e.src_off + max(got, 0)]) if got > 0 else (e.done_pid, e.done_reason))
        kind, m, extra = want
        if got < 0:
            need(kind == "left", "next_out -1, model wants", want, "done", e.done_pid, e.done_reason)
            need(e.done_pid == m.pid and e.done_reason == extra, "left: done %d/%d, want %r reason %d"
                 % (e.done_pid, e.done_reason, m, extra))
            if m.qos:
                m.reports += 1
            e.done_pid = 0
            return True
        b = bytes(e.src[e.src_off:e.src_off + got])
        if kind == "rel":
            need(b == bytes((0x62, 2, m.pid >> 8, m.pid & 0xFF)), "want PUBREL %d, got" % m.pid, b)
            return True
        need(kind == "pub", "got %r, model wants" % b, want)
        exp = bytearray(m.pkt)
        if extra:
            exp[0] |= 0x08
        need(b == bytes(exp), "want PUBLISH %r dup %s, got" % (m, extra), b, bytes(exp))
        if m.recd:
            raise Fail("PUBLISH of QoS 2 %r again after its PUBREC" % m)
        need(m.qos == 0 or self.inflight <= self.window, "PUBLISH beyond the window", self.inflight, self.window)
        m.pubs += 1
        return True

    def op_drain(self):
        if not self.connected:
            return
        e = self.e
        for _ in range(200):
            po = e.pending_out()
            got = e.next_out(self.now(), self.tx)
            need(po or got == 0, "pending_out() False but next_out gave", got)
            if not self.emit(got):
                return
        raise Fail("next_out never ends")

    def op_one(self):
        if self.connected:
            self.emit(self.e.next_out(self.now(), self.tx))

    def expect_raise(self, exc, f, *a):
        try:
            f(*a)
        except exc as x:
            return x
        raise Fail("%s expected from %s%r" % (exc.__name__, f.__name__ if hasattr(f, "__name__") else f, a))

    def op_puback(self, pid, reason):
        if not self.connected:
            return
        e = self.e
        j = self.find_ent(pid, "pub")
        m = self.ring[j][1] if j >= 0 else None
        if m is not None and m.state == "sent" and m.qos == 1:
            e.puback(pid, reason)
            self.ring.pop(j)
            self.inflight -= 1
            reason = reason if reason >= 0x80 else 0     # (0x10 No matching subscribers: acknowledged, 0)
            self.finish(m, "refused" if reason else "acked", reason)
            need(e.done_pid == pid and e.done_reason == reason, "puback done", e.done_pid, e.done_reason)
            m.reports += 1
            return
        self.expect_raise(ProtocolError, e.puback, pid, reason)
        need(e.done_pid == 0, "done_pid after a refused puback")
        self.connected = False

    def op_pubrec(self, pid, reason):
        if not self.connected:
            return
        e = self.e
        tx = self.tx
        j = self.find_ent(pid, "pub")
        m = self.ring[j][1] if j >= 0 else None
        if m is not None and m.state == "sent" and m.qos == 2:
            cov("pubrec with full ring" if e.count >= self.nslots else "pubrec")
            n = e.pubrec(pid, reason, tx)
            if reason >= 0x80:
                need(n == 0 and e.done_pid == pid and e.done_reason == reason and e.rec == 0, "pubrec failure", n, e.done_pid)
                self.ring.pop(j)
                self.inflight -= 1
                self.finish(m, "refused", reason)
                m.reports += 1
                return
            need(bytes(tx[:n]) == bytes((0x62, 2, pid >> 8, pid & 0xFF)), "PUBREL after PUBREC", bytes(tx[:n]))
            need(e.rec == 4 and e.rec_pid == pid and e.done_pid == 0, "pubrec rec", e.rec, e.rec_pid)
            e.rec = 0
            self.ring.pop(j)
            handled = all(x[2] for x in self.ring)
            self.ring.append(["rel", m, handled, False])
            m.state = "rel"
            m.recd = True
            return
        if self.find_ent(pid, "rel") >= 0:
            n = e.pubrec(pid, reason, tx)
            need(bytes(tx[:n]) == bytes((0x62, 2, pid >> 8, pid & 0xFF)) and e.rec == 0 and e.done_pid == 0,
                 "repeated PUBREC", bytes(tx[:n]))
            return
        if self.v5:
            n = e.pubrec(pid, reason, tx)
            need(bytes(tx[:n]) == bytes((0x62, 3, pid >> 8, pid & 0xFF, 0x92)) and e.rec == 0 and e.done_pid == 0,
                 "unknown PUBREC (v5)", bytes(tx[:n]))
            return
        self.expect_raise(ProtocolError, e.pubrec, pid, reason, tx)
        self.connected = False

    def op_pubcomp(self, pid):
        if not self.connected:
            return
        e = self.e
        j = self.find_ent(pid, "rel")
        e.pubcomp(pid)
        if j >= 0:
            m = self.ring.pop(j)[1]
            self.inflight -= 1
            self.finish(m, "acked", 0)
            need(e.done_pid == pid and e.done_reason == 0, "pubcomp done", e.done_pid)
            m.reports += 1
        else:
            need(e.done_pid == 0, "pubcomp of unknown id reported", e.done_pid)

    def op_in(self, qos, pid, skip_incoming, reason):
        if not self.connected:
            return
        e = self.e
        tx = self.tx
        full_err = ProtocolError if self.v5 else MQTTException
        if not skip_incoming:
            blocked = qos == 2 and pid not in self.rx2 and len(self.rx2) >= self.rx2cap
            if blocked:
                cov("rx2 full")
                x = self.expect_raise(full_err, e.incoming, qos, pid)
                need(x.args[0] == (0x93 if self.v5 else -7), "table full code", x.args)
                self.connected = False
                return
            r = e.incoming(qos, pid)
            need(r == (qos == 1 or pid not in self.rx2), "incoming(%d, %d) gave %r" % (qos, pid, r))
            reason = 0
        if qos == 2 and not reason and pid not in self.rx2 and len(self.rx2) >= self.rx2cap:
            x = self.expect_raise(full_err, e.ack_incoming, qos, pid, reason, tx)
            need(x.args[0] == (0x93 if self.v5 else -7), "table full code", x.args)
            self.connected = False
            return
        n = e.ack_incoming(qos, pid, reason, tx)
        kind = 0x40 if qos == 1 else 0x50
        # A QoS 2 duplicate awaiting its PUBREL is acknowledged as one, PUBREC
        # 0, even when refused now (oversize): a PUBREC >= 0x80 would end it
        # at the broker, which then never releases the id (MQTT-4.3.3-9, -10).
        rc = 0 if qos == 2 and pid in self.rx2 else reason
        want = bytes((kind, 3 if rc else 2, pid >> 8, pid & 0xFF)) + (bytes((rc,)) if rc else b"")
        need(bytes(tx[:n]) == want, "ack of incoming", bytes(tx[:n]), want)
        if qos == 2 and not reason and pid not in self.rx2:
            self.rx2.append(pid)
            need(e.rec == 5 and e.rec_pid == pid, "rec IN_QOS2", e.rec)
        else:
            need(e.rec == 0, "rec after incoming", e.rec)
        e.rec = 0

    def op_pubrel(self, pid):
        if not self.connected:
            return
        e = self.e
        n = e.pubrel(pid, self.tx)
        b = bytes(self.tx[:n])
        if pid in self.rx2:
            self.rx2.remove(pid)
            need(b == bytes((0x70, 2, pid >> 8, pid & 0xFF)) and e.rec == 6 and e.rec_pid == pid, "pubrel", b, e.rec)
        else:
            want = bytes((0x70, 3, pid >> 8, pid & 0xFF, 0x92)) if self.v5 else bytes((0x70, 2, pid >> 8, pid & 0xFF))
            need(b == want and e.rec == 0, "pubrel unknown", b)
        e.rec = 0

    def op_req(self, kind):
        if not self.connected or self.req:
            return
        pid = subs.request(self.e, kind)
        need(0 < pid <= 65535, "request pid", pid)
        for k2, m2, h2, d2 in self.ring:
            need(not (m2.qos and m2.pid == pid), "request packet id %d held by %r" % (pid, m2))
        need(pid != self.stale, "request packet id %d is an abandoned request's, its answer still due" % pid)
        self.req = (pid, kind)

    def op_answer(self, how):
        if not self.connected:
            return
        e = self.e
        if how == 0 and self.req:
            need(subs.answer(e, self.req[1], self.req[0]) is True, "answer")
            self.req = None
        elif how == 1 and self.req:
            subs.abandon(e)
            self.stale = self.req[0]
            self.req = None
        elif how == 2 and self.stale:
            need(subs.answer(e, 0x90, self.stale) is False, "late answer")
            self.stale = 0

    def op_limits(self, rm, mp, mq, ra):
        # limits changed on a live connection (as test_engine does)
        if not self.v5:
            return
        self.e.limits(rm, mp, mq, ra)
        self.window = min(self.maxinf, rm) if rm else self.maxinf
        self.max_out = min(self.buf, mp) if mp else self.buf
        self.max_qos = mq
        self.retain_ok = ra

    def op_down(self):
        self.connected = False

    def op_time(self, dt):
        self.el += dt

    def op_conn(self, sp, clean, rm, mp, mq, ra):
        e = self.e
        self.connected = False
        if not self.v5:
            rm, mp, mq, ra = 0, 0, 2, 1
        e.limits(rm, mp, mq, ra)
        self.window = min(self.maxinf, rm) if rm else self.maxinf
        self.max_out = min(self.buf, mp) if mp else self.buf
        self.max_qos = mq
        self.retain_ok = ra
        need(e.window == self.window and e.max_out == self.max_out, "limits", e.window, e.max_out)
        cov("connect sp%d clean%d" % (sp, clean))
        if sp and clean:
            self.expect_raise(ProtocolError, e.connected, sp, clean)
            return
        if sp and self.v5 and not self.has_state:
            self.expect_raise(SessionError, e.connected, sp, clean)
            return
        want = "resumed" if sp else "lost" if self.has_state and not clean else "new"
        ev = e.connected(sp, clean)
        need(ev == want, "event", ev, want)
        self.stale = 0          # no late answer of an earlier connection comes: its id is free
        if sp:
            self.inflight = 0
            for ent in self.ring:
                ent[2] = False
                m = ent[1]
                if ent[0] == "rel":
                    ent[3] = True
                    self.inflight += 1
                elif m.state == "sent":
                    m.state = "queued"
                    m.dup = True
        else:
            dropped = 0
            keep = []
            for ent in self.ring:
                m = ent[1]
                if ent[0] == "rel":
                    dropped += 1
                    self.finish(m, "dropped", 0)
                    continue
                ent[2] = False
                m.state = "queued"
                m.dup = False
                keep.append(ent)
            self.ring = keep
            self.inflight = 0
            self.rx2 = []
            need(e.dropped == dropped, "dropped", e.dropped, dropped)
        need(e.done_pid == 0, "connected() reported", e.done_pid)
        self.has_state = True
        self.connected = True
        self.check(("conn-pre-drain",))
        self.op_drain()

    def op_save(self):
        e = self.e
        st = stream.parse(state_bytes(e))
        need(not st.torn, "torn")
        want = [(m.pid, None if k == "rel" else m.pkt) for k, m, h, d in self.ring if m.qos]
        got = [(p, None if pk is None else (bytes(pk[:1]) and bytes((pk[0] & 0xF7,)) + bytes(pk[1:]))) for p, pk in st.out]
        need(got == want, "saved state", got, want)
        need(st.rx2 == self.rx2, "saved rx2", st.rx2, self.rx2)

    def op_restore(self, fresh):
        self.connected = False
        e = self.e
        data = state_bytes(e)
        st = stream.parse(data)
        need(not st.torn, "torn")
        if fresh:
            self.req = None
            self.stale = 0
            e = self.e = self.fresh()
            self.window = self.maxinf
            self.max_out = self.buf
            self.max_qos = 2
            self.retain_ok = 1
        restore.restore(e, st, 0)
        cov("restore fresh %d, %d held" % (fresh, min(e.held, 3)))
        keep = []
        for ent in self.ring:
            m = ent[1]
            if not m.qos:
                self.finish(m, "lost0", 0)
                continue
            ent[2] = False
            if ent[0] == "rel":
                ent[3] = True
            else:
                m.state = "queued"
                m.dup = True
                m.dl = None
            keep.append(ent)
        self.ring = keep
        self.inflight = 0
        # (self.has_state as saved: a state that held no session restores
        # as none, header flag 0x08.)
        self.restored_ever = True

    # ------------------------------------------------------------ the end
    def final(self):
        e = self.e
        for rnd in range(60):
            if not self.ring:
                break
            if not self.connected:
                sp = 1 if (self.has_state or not self.v5) else 0
                self.op(("conn", sp, 0, 0, 0, 2, 1))
            self.op(("drain",))
            for k, m, h, d in list(self.ring):
                if not self.connected:
                    break
                if k == "rel":
                    self.op(("pubcomp", m.pid))
                elif m.state == "sent":
                    if m.qos == 1:
                        self.op(("puback", m.pid, 0))
                    else:
                        self.op(("pubrec", m.pid, 0))
                        self.op(("pubcomp", m.pid))
        need(not self.ring, "outbox not empty after the final drain", self.ring)
        need(e.count == 0 and e.held == 0 and e.inflight == 0 and e.nbytes == 0 and e.nbytes0 == 0,
             "leak after everything acknowledged: count %d held %d inflight %d nbytes %d/%d"
             % (e.count, e.held, e.inflight, e.nbytes, e.nbytes0))
        for m in self.msgs:
            if not m.qos:
                continue
            need(m.outcome in ("acked", "refused", "expired", "dropped"), "message without outcome", m, m.outcome)
            need(m.reports == (0 if m.outcome == "dropped" else 1), "%r (%s) reported %d times" % (m, m.outcome, m.reports))
            if m.outcome == "acked":
                need(m.pubs >= 1, "%r acknowledged but never published" % m)
        # the arena takes a full outbox again
        if not self.connected:
            self.op(("conn", 1 if (self.has_state or not self.v5) else 0, 0, 0, 0, 2, 1))
        per = min(self.buf, self.arena_n // self.qos12)
        if per >= pkt_size(3, 5, 1, 0, self.v5):
            plen = 5
            while pkt_size(3, plen + 1, 1, 0, self.v5) <= per:
                plen += 1
            for q in range(self.qos12):
                before = len(self.msgs)
                self.op(("acc", 1, 0, plen, 0, False))
                need(len(self.msgs) == before + 1, "full outbox: message %d of %d (%d bytes each, arena %d) refused"
                     % (q + 1, self.qos12, per, self.arena_n), "head", e.a_head, "tail", e.a_tail, "count", e.count)
            self.op(("drain",))
            for rnd in range(self.qos12 + 2):
                for k, m, h, d in list(self.ring):
                    if m.state == "sent":
                        self.op(("puback", m.pid, 0))
                self.op(("drain",))
            need(not self.ring and e.count == 0, "full outbox did not complete", self.ring)


def gen(h, r):
    # One random operation, drawn against the model state.
    w = r.below(100)
    ring = h.ring
    if w < 28:
        qos = r.pick((0, 1, 1, 2, 2))
        big = r.chance(15)
        plen = r.rng(h.buf - 20, h.buf + 4) if big else r.rng(0, 12)
        plen = max(plen, 0)
        # keep it within buf_size (the client refuses more): the engine
        # may still meet it against a smaller broker Maximum Packet Size
        while plen > 0 and pkt_size(3, max(plen, 5), qos, 5 if h.v5 else 0, h.v5) > h.buf:
            plen -= 1
        ttl = r.pick((0, 0, 0, 1, 2, 5, 600000)) if h.v5 else 0
        return ("acc", qos, 1 if r.chance(15) else 0, plen, ttl, r.chance(5))
    if w < 40:
        return ("drain",)
    if w < 44:
        return ("one",)
    if w < 64:
        inflight = [m for k, m, hh, d in ring if m.qos and (k == "rel" or m.state == "sent")]
        if inflight and r.chance(85):
            m = r.pick(inflight)
            pid = m.pid
            if r.chance(85):
                kind = "pubcomp" if m.state == "rel" else ("puback" if m.qos == 1 else "pubrec")
            else:
                kind = r.pick(("puback", "pubrec", "pubcomp"))
        else:
            pid = r.rng(1, 12)
            kind = r.pick(("puback", "pubrec", "pubcomp"))
        if kind == "pubcomp":
            return ("pubcomp", pid)
        reason = 0
        if h.v5 and r.chance(20):
            reason = r.pick((0x10, 0x80, 0x87, 0x97))
        return (kind, pid, reason)
    if w < 74:
        qos = r.pick((1, 2, 2))
        pid = r.rng(1, 6)
        skip = r.chance(10)
        reason = (0x97 if h.v5 else 0) if skip else 0
        return ("in", qos, pid, skip, reason)
    if w < 79:
        pid = r.pick(h.rx2) if h.rx2 and r.chance(75) else r.rng(1, 6)
        return ("pubrel", pid)
    if w < 83:
        return ("down",)
    if w < 91:
        if r.chance(10):
            return ("limits", r.pick((0, 1, 2, 9)), 0 if r.chance(70) else r.rng(20, h.buf + 10),
                    2 if r.chance(70) else r.pick((0, 1)), 1 if r.chance(80) else 0)
        clean = r.chance(20)
        sp = 0 if clean and r.chance(95) else (1 if (clean or r.chance(70)) else 0)
        rm = r.pick((0, 0, 1, 2, 3, 9))
        mp = 0 if r.chance(70) else r.rng(20, h.buf + 10)
        mq = 2 if r.chance(70) else r.pick((0, 1))
        ra = 1 if r.chance(80) else 0
        return ("conn", sp, 1 if clean else 0, rm, mp, mq, ra)
    if w < 93:
        return ("time", 250 * r.rng(0, 12))
    if w < 95:
        return ("req", r.pick((0x90, 0xB0))) if r.chance(50) else ("answer", r.rng(0, 2))
    if w < 97:
        return ("save",)
    return ("restore", r.chance(60))


def run_ops(seed, ops, verbose=False):
    r = Rng(seed)
    h = Harness(seed, r)
    try:
        for o in ops:
            if verbose:
                print("  ", o)
            h.op(o)
        h.final()
    except Fail as x:
        return h, "FAIL " + str(x)
    except Exception as x:
        return h, "EXC %s %r" % (type(x).__name__, x.args)
    return h, None


def run_seed(seed, steps):
    r = Rng(seed)
    h = Harness(seed, r)
    ops = []
    try:
        for _ in range(steps):
            o = gen(h, r)
            ops.append(o)
            h.op(o)
        h.final()
    except Fail as x:
        return h, ops, "FAIL " + str(x)
    except Exception as x:
        import io
        buf = io.StringIO()
        sys.print_exception(x, buf)
        return h, ops, "EXC %s %r\n%s" % (type(x).__name__, x.args, buf.getvalue())
    return h, ops, None


def key(msg):
    # The failure class: its first words.
    return " ".join(msg.split()[:5]) if msg else None


def minimize(seed, ops, msg):
    k = key(msg)
    cur = list(ops)
    n = 2
    while len(cur) >= 1:
        chunk = max(1, len(cur) // n)
        removed = False
        i = 0
        while i < len(cur):
            trial = cur[:i] + cur[i + chunk:]
            h, m = run_ops(seed, trial)
            if m and key(m) == k:
                cur = trial
                removed = True
            else:
                i += chunk
        if not removed:
            if chunk == 1:
                break
            n *= 2
    return cur


def main(a=None):
    global STRICT_Q0, HUGE_TICKS
    a = sys.argv[1:] if a is None else a
    first = int(a[0]) if a else 0
    count = int(a[1]) if len(a) > 1 else 100
    steps = int(a[2]) if len(a) > 2 else 200
    flags = dict(x.split("=") for x in a[3:])
    STRICT_Q0 = flags.get("q0", "1") == "1"
    HUGE_TICKS = flags.get("huge", "0") == "1"
    do_min = flags.get("min", "0") == "1"
    maxfail = int(flags.get("maxfail", "10"))
    fails = {}
    total_steps = 0
    nfail = 0
    for seed in range(first, first + count):
        h, ops, msg = run_seed(seed, steps)
        total_steps += h.steps
        if msg:
            nfail += 1
            k = key(msg)
            fails[k] = fails.get(k, 0) + 1
            if fails[k] <= 2:
                print("seed %d [%s] after %d ops: %s" % (seed, h.cfg(), len(ops), msg[:600]))
                if do_min:
                    mo = minimize(seed, ops, msg)
                    h2, m2 = run_ops(seed, mo)
                    print("  minimized to %d ops: %s" % (len(mo), m2[:300] if m2 else m2))
                    for o in mo:
                        print("    ", o)
            if nfail >= maxfail and flags.get("stop", "0") == "1":
                break
    if flags.get("cov", "0") == "1":
        for k in sorted(COV):
            print("  cov %-40s %d" % (k, COV[k]))
    print("SUMMARY seeds %d..%d steps %d failing %d classes %r" % (first, first + count - 1, total_steps, nfail, fails))


if __name__ == "__main__":
    main()
