"""Seeded mutation fuzzing of the client (tests/fuzzlib.py has the machinery,
tests/mp/fuzz_client.py and tests/mp/fuzz_store.py the MicroPython halves).

Protocol, MQTT 3.1.1 and 5.0 (one MicroPython process per version, both at
once): a fake broker serves one case per connection, a valid broker stream
after CONNECT, three quarters of them mutated. Verdicts:
  1. only OSError subclasses escape the library's calls;
  2. every case ends within its bound, and the process never stalls;
  3. gc.mem_free() after gc.collect() stays flat across the run;
  4. every delivered message is a well-formed PUBLISH the broker sent before
     anything the client had to close the connection on, in order, and no
     QoS 2 packet id twice before its PUBREL;
  plus: what the client sends is well-formed.
Session store (file and raw ring): mutated valid images through the public
constructor. Verdicts: the constructor never raises; the outcome is a
documented one (restored, or set aside with an event; the file's reading
matches docs/session-format.md); a second boot finds what the first left;
what the restored client resends was once published.

Sizes: `make test` 3,000 protocol cases per version and 3,000 store cases
per backend; SOAK=1 50,000 and 30,000. FUZZ_CASES / FUZZ_STORE_CASES /
FUZZ_SEED override; FUZZ_IGNORE=kind,kind leaves failure kinds out of the
verdicts (they are still listed); FUZZ_LIB=/dir/lib fuzzes another copy of
the library. Every failure prints its seed and a one-line replay command;
the full list is written to a file named in the failure message.
"""
import os
import random
import threading
import time

import pytest

import fuzzlib

SOAK = os.environ.get("SOAK") == "1"
CASES = int(os.environ.get("FUZZ_CASES") or (50000 if SOAK else 3000))
STORE_CASES = int(os.environ.get("FUZZ_STORE_CASES") or (30000 if SOAK else 3000))
SEED = int(os.environ.get("FUZZ_SEED") or (int(time.time()) % 1000000 if SOAK else 1))
IGNORE = frozenset(filter(None, os.environ.get("FUZZ_IGNORE", "").split(",")))
VERSIONS = (4, 5)
BACKENDS = ("file", "ring")
# Memory: see fuzzlib.memory_verdict. 4 KB is well above the ~2 KB the best
# sample of a window moves between windows on a healthy run, and far below
# what a leak of even 2 bytes a case adds up to over 3,000 cases.
MEM_TOLERANCE = 4096
WARM_CASES = max(300, CASES // 10)
SHOW = 12


def _report_file(tmp_root, name, lines):
    path = tmp_root / name
    path.write_text("\n".join(lines) + "\n")
    return path


def _fail_with(run, fails, what, tmp_root, name, legend="by kind (tier, failures, cases, example seeds):"):
    lines = [run.explain(i, f) for i, f in fails]
    path = _report_file(tmp_root, name, lines)
    msg = ["%s: %d failure(s) in %d case(s) of %d (MQTT %s, seed %d, library %s)"
           % (what, len(fails), len(set(i for i, _ in fails)), run.stats["cases"],
              "3.1.1" if run.version == 4 else "5.0", run.base, fuzzlib.LIB),
           legend, run.summary(fails), "",
           "first failures:"]
    seen = set()
    for i, f in fails:
        if len(seen) >= SHOW:
            break
        if (f["kind"], i) in seen or f["kind"] in {k for k, _ in seen}:
            continue
        seen.add((f["kind"], i))
        msg.append(run.explain(i, f))
    msg.append("")
    msg.append("all %d failures: %s" % (len(fails), path))
    pytest.fail("\n".join(msg), pytrace=False)


# ---------------------------------------------------------------- the reference reader itself

def test_reference_utf8_reader_agrees_with_cpython():
    """fuzzlib.utf8_problem (written from Unicode table 3-7) against
    CPython's strict UTF-8 decoder, on the catalogue and on random bytes
    biased towards multi-byte sequences."""
    rng = random.Random(7)
    samples = list(fuzzlib.BAD_FRAGMENTS) + list(fuzzlib.VALID_TOPICS)
    for _ in range(30000):
        n = rng.randint(0, 8)
        samples.append(bytes(rng.choice((rng.randint(0, 0x7F), rng.randint(0x80, 0xBF), rng.randint(0xC0, 0xFF),
                                         0xED, 0xE0, 0xF0, 0xF4)) for _ in range(n)))
    for cp in list(range(0, 0x110000, 97)) + [0xD7FF, 0xD800, 0xDFFF, 0xE000, 0xFFFF, 0x10000, 0x10FFFF]:
        samples.append(chr(cp).encode("utf-8", "surrogatepass"))
    for b in samples:
        try:
            ok = b"\x00" not in b and b.decode("utf-8") is not None
        except UnicodeDecodeError:
            ok = False
        assert (fuzzlib.utf8_problem(b) is None) == ok, b


@pytest.mark.parametrize("v", VERSIONS)
def test_reference_reader_accepts_every_unmutated_case(v):
    """No false positives by construction: the generator's valid streams
    (CONNACK, body, and the broker's replies) read without a problem."""
    for idx in range(3000):
        connect = {"clean": idx % 3 == 0, "client_id": b"" if idx % 7 == 0 else b"fz"}
        case = fuzzlib.Case(v, 99, idx, connect)
        if case.mutated:
            continue
        data = case.connack_bytes + case.body_bytes
        reading = fuzzlib.Reading(data, v, 1 << 20, connect["clean"])
        for i, f in enumerate(reading.frames):
            assert not reading.problems[i], (case.seed, i, reading.problems[i], fuzzlib.hexdump(f.raw(data)))
            assert reading.status[i] in ("deliverable", "neutral", "closing", "dup", "after"), (case.seed, i, reading.status[i])
        z = b"\x00" if v == 5 else b""
        client = {0x32: fuzzlib.lstr(b"a/b") + fuzzlib.u16(5) + z + b"x",
                  0x34: fuzzlib.lstr(b"a/b") + fuzzlib.u16(6) + z + b"x",
                  0x50: fuzzlib.u16(7), 0x62: fuzzlib.u16(8), 0xC0: b"",
                  0x82: fuzzlib.u16(9) + z + fuzzlib.lstr(b"fz/#") + b"\x01",
                  0xA2: fuzzlib.u16(10) + z + fuzzlib.lstr(b"fz/#")}
        for first, body in client.items():
            for p in case.reply(first, body, {}):
                probs = []
                fr = fuzzlib.split_frames(p)
                assert len(fr) == 1 and fr[0].complete, p.hex()
                fuzzlib.check_server_packet(p[0], fr[0].body, v, probs)
                assert not probs, (case.seed, p.hex(), probs)


BAD = [
    # (version, packet bytes after a valid CONNACK, problem kind)
    (4, fuzzlib.pkt(0x30, fuzzlib.lstr(b"a\x00b") + b"x"), "topic-nul"),
    (4, fuzzlib.pkt(0x30, fuzzlib.lstr(b"a/\xed\xa0\x80") + b"x"), "topic-utf8"),
    (4, fuzzlib.pkt(0x30, fuzzlib.lstr(b"\xc0\xaf") + b"x"), "topic-utf8"),
    (4, fuzzlib.pkt(0x30, fuzzlib.lstr(b"\xf8\x88\x80\x80\x80") + b"x"), "topic-utf8"),
    (4, fuzzlib.pkt(0x30, fuzzlib.lstr(b"\x80") + b"x"), "topic-utf8"),
    (4, fuzzlib.pkt(0x30, fuzzlib.lstr(b"\xf4\x90\x80\x80") + b"x"), "topic-utf8"),
    (4, fuzzlib.pkt(0x30, fuzzlib.lstr(b"") + b"x"), "topic-empty"),
    (4, fuzzlib.pkt(0x30, fuzzlib.lstr(b"a/+") + b"x"), "topic-wildcard"),
    (4, fuzzlib.pkt(0x32, fuzzlib.lstr(b"a") + b"\x00\x00x"), "publish-pid0"),
    (4, fuzzlib.pkt(0x36, fuzzlib.lstr(b"a") + b"\x00\x01x"), "publish-qos3"),
    (4, fuzzlib.pkt(0x38, fuzzlib.lstr(b"a") + b"x"), "publish-dup-qos0"),
    (4, fuzzlib.pkt(0x30, fuzzlib.u16(9) + b"a"), "publish-topic-length"),
    (4, b"\x40\x03\x00\x01\x00", "ack-length"),
    (4, b"\x62\x02\x00\x00", "ack-pid0"),
    (4, b"\x60\x02\x00\x01", "reserved-flags"),
    (4, b"\xd0\x01\x00", "pingresp-length"),
    (4, b"\xe0\x00", "unexpected-type"),
    (5, fuzzlib.pkt(0x30, fuzzlib.lstr(b"") + b"\x03\x23\x00\x01" + b"x"), "topic-empty"),
    (5, fuzzlib.pkt(0x30, fuzzlib.lstr(b"a") + b"\x03\x23\x00\x01" + b"x"), "topic-alias"),
    (5, fuzzlib.pkt(0x30, fuzzlib.lstr(b"a") + b"\x02\x11\x00" + b"x"), "props-truncated"),
    (5, fuzzlib.pkt(0x30, fuzzlib.lstr(b"a") + b"\x05\x11\x00\x00\x00\x01" + b"x"), "props-not-allowed"),
    (5, fuzzlib.pkt(0x30, fuzzlib.lstr(b"a") + b"\x04\x01\x00\x01\x01" + b"x"), "props-duplicate"),
    (5, fuzzlib.pkt(0x30, fuzzlib.lstr(b"a") + b"\x05\x03\x00\x02\xc3\x28" + b"x"), "props-utf8"),
    (5, fuzzlib.pkt(0x30, fuzzlib.lstr(b"a") + b"\x02\x04\x00" + b"x"), "props-unknown-id"),
    (5, fuzzlib.pkt(0x30, fuzzlib.lstr(b"a") + b"\x40" + b"x"), "props-length"),
    (5, b"\x40\x04\x00\x01\x00\x05", "props-length"),
    (5, b"\x40\x06\x00\x01\x00\x02\x02\x00", "props-not-allowed"),
    (5, b"\x50\x08\x00\x01\x00\x04\x1f\x00\x01\xff", "props-utf8"),
    (5, b"\x62\x09\x00\x01\x00\x05\x26\x00\x01k\x00", "props-truncated"),
    (5, b"\x70\x0a\x00\x01\x00\x06\x1f\x00\x00\x1f\x00\x00", "props-duplicate"),
    (5, b"\x40\x06\x00\x01\x00\x00\x00\x00", "trailing-bytes"),
    (5, b"\x30\x85\x00" + fuzzlib.lstr(b"a") + b"\x00x", "vbi-non-minimal"),
    (5, b"\xe0\x07\x00\x05\x11\x00\x00\x00\x01", "disconnect-session-expiry"),
    (5, b"\xf0\x00", "unexpected-auth"),
]


@pytest.mark.parametrize("v,raw,kind", BAD, ids=["%d-%s-%d" % (b[0], b[2], i) for i, b in enumerate(BAD)])
def test_reference_reader_flags_known_bad_packets(v, raw, kind):
    """The strict reader names each known malformed packet, and a
    well-formed PUBLISH after it is no longer deliverable."""
    after = fuzzlib.pkt(0x30, fuzzlib.lstr(b"ok") + (b"\x00" if v == 5 else b"") + b"fine")
    data = fuzzlib.pkt(0x20, b"\x00\x00" + (b"\x00" if v == 5 else b"")) + raw + after
    r = fuzzlib.Reading(data, v, 1024, True)
    assert r.status[1] == "bad", (r.status, r.problems)
    assert kind in [p.kind for p in r.problems[1]], r.problems[1]
    assert r.status[2] == "after"
    fails = fuzzlib.match_deliveries(r, [(b"ok", b"fine", 0, 0)], v)
    assert fails and fails[0]["kind"] == "after-%s/%s" % (r.cut[3], r.cut[1])


def test_reference_matching_qos2_duplicate_and_order():
    v = 4
    con = fuzzlib.pkt(0x20, b"\x00\x00")
    q2 = fuzzlib.pkt(0x34, fuzzlib.lstr(b"t") + fuzzlib.u16(9) + b"A")
    rel = fuzzlib.pkt(0x62, fuzzlib.u16(9))
    q2b = fuzzlib.pkt(0x34, fuzzlib.lstr(b"t") + fuzzlib.u16(9) + b"B")
    r = fuzzlib.Reading(con + q2 + q2b + rel + q2b, v, 1024, True)
    assert r.status == ["neutral", "deliverable", "dup", "neutral", "deliverable"]
    A, B = (b"t", b"A", 2, 0), (b"t", b"B", 2, 0)
    assert not fuzzlib.match_deliveries(r, [A, B], v)          # B after the PUBREL: fine
    assert [f["kind"] for f in fuzzlib.match_deliveries(r, [A, B, B], v)] == ["qos2-duplicate"]
    assert [f["kind"] for f in fuzzlib.match_deliveries(r, [B, A], v)] == ["out-of-order"]
    # Cut short: a PUBLISH delivered before the stream ended is fine.
    r = fuzzlib.Reading(con + q2 + rel[:2], v, 1024, True)
    assert not fuzzlib.match_deliveries(r, [A], v)


# ---------------------------------------------------------------- protocol fuzzing

@pytest.fixture(scope="module")
def protocol(tmp_path_factory):
    runs = {}
    t0 = time.monotonic()

    def go(v):
        runs[v] = fuzzlib.ProtocolRun(v, SEED, 0, CASES, ignore=IGNORE).run(timeout=120 + CASES * 0.05)

    threads = [threading.Thread(target=go, args=(v,)) for v in VERSIONS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for v in VERSIONS:
        r = runs[v]
        print("\nfuzz protocol v%d: %d cases (seed %d) in %.1f s (both versions: %.1f s); %d mutated, "
              "%d deliveries in %d cases, exceptions %s, slowest case %d ms, %d failures"
              % (v, r.stats["cases"], SEED, r.elapsed, time.monotonic() - t0, r.stats["mutated"],
                 r.stats["deliveries"], r.stats["cases_with_delivery"], r.stats["exceptions"],
                 r.stats["max_ms"], len(r.failures)))
        cuts = sorted(r.stats["cuts"].items(), key=lambda kv: -kv[1])
        print("  frames sent, by reading: %s; %d cases had a packet the client must close on (%d kinds; most: %s)"
              % (r.stats["frames"], sum(r.stats["cuts"].values()), len(cuts), ", ".join("%s %d" % kv for kv in cuts[:6])))
    runs["tmp"] = tmp_path_factory.mktemp("fuzz")
    return runs


@pytest.mark.parametrize("v", VERSIONS)
def test_protocol_harness_ran_every_case(protocol, v):
    """The broker served, and the client reported, every case; the cases
    went deep (messages delivered, mutated and valid cases both)."""
    r = protocol[v]
    assert not r.stats["harness"], "\n".join(r.stats["harness"])
    assert r.stats["cases"] == CASES, r.stats
    assert 0.6 * CASES < r.stats["mutated"] < 0.9 * CASES, r.stats
    assert r.stats["cases_with_delivery"] > 0.3 * CASES, r.stats


@pytest.mark.parametrize("v", VERSIONS)
def test_protocol_only_oserror_escapes(protocol, v):
    """Verdict 1: every exception out of connect/subscribe/unsubscribe/
    publish/ping/check_msg/wait_msg is an OSError (MQTTException included);
    never TypeError, IndexError, UnicodeError, MemoryError, ValueError..."""
    r = protocol[v]
    fails = r.by_verdict("exception")
    if fails:
        _fail_with(r, fails, "exceptions other than OSError", protocol["tmp"], "fuzz-exceptions-v%d.txt" % v)


@pytest.mark.parametrize("v", VERSIONS)
def test_protocol_cases_end_in_time(protocol, v):
    """Verdict 2: no case takes longer than 2 x timeout_ms + 1.5 s (a case
    may wait for CONNACK and then for SUBACK); the process never stalls."""
    r = protocol[v]
    fails = r.by_verdict("time")
    if fails:
        _fail_with(r, fails, "slow or hung cases (bound %d ms)" % fuzzlib.CASE_BOUND_MS, protocol["tmp"],
                   "fuzz-time-v%d.txt" % v)


@pytest.mark.parametrize("v", VERSIONS)
def test_protocol_memory_flat(protocol, v):
    """Verdict 3: gc.mem_free() after gc.collect(), sampled every 4 chains
    (24 cases) with no client alive, does not fall across the run."""
    r = protocol[v]
    ok, text = fuzzlib.memory_verdict(r.mem, WARM_CASES, MEM_TOLERANCE)
    print("\nv%d %s" % (v, text))
    assert ok, text


@pytest.mark.parametrize("v", VERSIONS)
def test_protocol_deliveries_are_wellformed_publishes(protocol, v):
    """Verdict 4: every delivered message equals (topic, payload, qos,
    retain) of a PUBLISH the broker sent in that case that the strict
    reference reader accepts, sent before any packet the client had to
    close the connection on, delivered in order, and no QoS 2 packet id
    twice before its PUBREL."""
    r = protocol[v]
    fails = r.by_verdict("delivery")
    if fails:
        _fail_with(r, fails, "deliveries of messages that are not well-formed PUBLISH packets of the case",
                   protocol["tmp"], "fuzz-deliveries-v%d.txt" % v,
                   legend="by kind (\"after-TYPE/problem\": delivered after a TYPE packet with that problem, on which the "
                          "client had to close the connection; otherwise the delivered packet's own problem. Tier "
                          "'malformed': does not decode exactly; 'protocol': breaks a MUST of the specification):")


@pytest.mark.parametrize("v", VERSIONS)
def test_protocol_client_packets_wellformed(protocol, v):
    """What the client sends under fire is still well-formed MQTT."""
    r = protocol[v]
    fails = r.by_verdict("client-packet")
    if fails:
        _fail_with(r, fails, "malformed packets from the client", protocol["tmp"], "fuzz-client-packets-v%d.txt" % v)


# ---------------------------------------------------------------- store fuzzing

@pytest.fixture(scope="module")
def store(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzzstore")
    t0 = time.monotonic()
    run = fuzzlib.StoreRun(d, SEED, {b: STORE_CASES for b in BACKENDS}, ignore=IGNORE).run(timeout=60 + STORE_CASES * 0.05)
    print("\nfuzz store: %s cases per backend (seed %d) in %.1f s (%s): %s, %d failures"
          % (STORE_CASES, SEED, time.monotonic() - t0, {k: round(v, 1) for k, v in run.elapsed.items()},
             run.stats, len(run.failures)))
    run.tmp = d
    return run


def _store_fail(run, backend, kinds, what, exclude=False):
    fails = [x for x in run.failures if x[0] == backend and ((x[3]["kind"] in kinds) != exclude)]
    if not fails:
        return
    lines = [run.explain(*x) for x in fails]
    path = _report_file(run.tmp, "fuzz-store-%s-%s.txt" % (backend, what.split()[0]), lines)
    by = {}
    for x in fails:
        by.setdefault(x[3]["kind"], []).append(x)
    msg = ["store %s: %s: %d failure(s) in %d cases (seed %d, library %s)" % (backend, what, len(fails),
                                                                            run.stats[backend]["cases"], run.base, fuzzlib.LIB)]
    for k, lst in sorted(by.items(), key=lambda kv: -len(kv[1])):
        msg.append("  %-26s %5d   e.g. %s" % (k, len(lst), ", ".join(x[2] for x in lst[:3])))
        for x in lst[:2]:
            msg.append("    " + run.explain(*x).replace("\n", "\n    "))
    msg.append("all failures: %s" % path)
    pytest.fail("\n".join(msg), pytrace=False)


def test_store_harness(store):
    assert not store.harness, "\n".join(store.harness)
    for b in BACKENDS:
        st = store.stats[b]
        assert st["cases"] == STORE_CASES, st
        assert st["restored_msgs"] > STORE_CASES // 2 and st["resent"] > STORE_CASES // 4, st
    base = [x for x in store.failures if x[3]["kind"] == "baseline"]
    assert not base, [x[3]["text"] for x in base[:5]]


@pytest.mark.parametrize("backend", BACKENDS)
def test_store_constructor_never_raises(store, backend):
    """A damaged, truncated, spliced or foreign store never makes
    MQTTClient(..., session_file=...) raise, at the first boot or the next."""
    _store_fail(store, backend, {"construct-raised", "reconstruct-raised"}, "construction raised")


@pytest.mark.parametrize("backend", BACKENDS)
def test_store_outcome_is_documented(store, backend):
    """Each boot restores, or sets the state aside with event 'discarded'
    (file renamed to .bad); events are the documented ones; the file's
    reading is the one docs/session-format.md describes (pending() and
    'damaged'); a state with more messages than max_inflight + outbox_size
    makes the outbox grow (event outbox_grown), nothing set aside; garbage after the data or in erased flash loses nothing;
    the second boot finds exactly what the first left, with no event."""
    _store_fail(store, backend, {"undocumented-event", "discarded-but-restored", "discarded-not-set-aside",
                                 "reboot-unstable", "lossy-benign-damage", "control", "file-reading",
                                 "over-capacity-restore"}, "outcome not documented")


@pytest.mark.parametrize("backend", BACKENDS)
def test_store_restores_only_what_was_written(store, backend):
    """Every PUBLISH a restored client resends (Session Present 1: DUP 1;
    0: DUP 0) is byte for byte one that was published in that lineage,
    every PUBREL is for one of its QoS 2 ids (and never after Session
    Present 0), every re-subscription one it made; on Session Present 1
    it resends exactly pending() packets; connect() raises only OSError."""
    _store_fail(store, backend, {"restored-never-written", "resent-malformed", "resent-dup-flag",
                                 "pubrel-after-lost-session", "resend-count", "non-oserror"}, "restored or resent wrongly")
