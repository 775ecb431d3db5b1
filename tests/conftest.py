"""Shared fixtures: the MicroPython unix port as a subprocess, and private
mosquitto brokers on free loopback ports.

Tests drive the library the way a device runs it: a script executed by the
unix port with `lib/` and `tests/mp/` on its path. pytest itself only starts
processes, feeds them scripts and checks what they print.
"""
import json
import os
import pathlib
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
LIB = ROOT / "lib"
MP_HELPERS = ROOT / "tests" / "mp"
# The venv's console script; PATH does not include .venv/bin under make.
MICROPYTHON = str(pathlib.Path(sys.executable).parent / "micropython")
# One broker helper for the tests, tools/sim.py and the benchmark.
sys.path.insert(0, str(ROOT / "tools"))
from testbroker import Broker, free_port, wait_port  # noqa: E402,F401


def mp_env(extra_path=()):
    env = dict(os.environ)
    env["MICROPYPATH"] = ":".join([str(p) for p in extra_path] + [str(LIB), str(MP_HELPERS), ".frozen"])
    return env


def run_mp(code, *, timeout=60, heapsize=None, args=(), cwd=None, check=True, extra_path=()):
    """Run `code` in the unix port; return the CompletedProcess.

    With check=True a non-zero exit fails the test and shows the output (the
    unix port prints uncaught tracebacks to stdout)."""
    cmd = [MICROPYTHON]
    if heapsize:
        cmd += ["-X", "heapsize=%s" % heapsize]
    cmd += ["-c", code, *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                       env=mp_env(extra_path), cwd=cwd)
    if check and r.returncode != 0:
        pytest.fail("micropython exited %d\n--- stdout\n%s\n--- stderr\n%s"
                    % (r.returncode, r.stdout[-6000:], r.stderr[-3000:]))
    return r


def fields(out, key):
    """The words of the first line of `out` that starts with `key`."""
    for line in out.splitlines():
        f = line.split()
        if f and f[0] == key:
            return f
    raise AssertionError("no %s line in\n%s" % (key, out))


def spawn_mp(script_path, *args, heapsize=None, cwd=None, extra_path=(), stdout=subprocess.PIPE):
    cmd = [MICROPYTHON]
    if heapsize:
        cmd += ["-X", "heapsize=%s" % heapsize]
    cmd += [str(script_path), *map(str, args)]
    return subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.STDOUT, text=True,
                            env=mp_env(extra_path), cwd=cwd)


def log_size(broker):
    """Where the broker's log ends now: pass it to wait_subscribed()."""
    try:
        return broker.log.stat().st_size
    except OSError:
        return 0


def wait_subscribed(broker, since, topic, timeout):
    """Poll the broker's log, from byte `since` on, until it has sent the
    SUBACK for a SUBSCRIBE to `topic` (a subscriber such as mosquitto_sub
    started after log_size() is then in place), at most `timeout` s: the
    fixed sleep this replaces. Past it the caller goes on as the sleep
    did. True when the SUBACK was seen."""
    want = ("\t%s (QoS " % topic).encode()
    end = time.monotonic() + timeout
    while True:
        try:
            with open(broker.log, "rb") as f:
                f.seek(since)
                text = f.read()
        except OSError:
            text = b""
        at = text.find(want)
        if at >= 0 and text.find(b"Sending SUBACK to ", at) >= 0:
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(0.005)


DRAINED = "drained-marker"


def wait_drained(port, ver, qos, topic, out_path, timeout):
    """After a stream to `topic` has ended (every message acknowledged to
    its publisher, so routed by the broker), publish DRAINED there at the
    stream's QoS and poll `out_path`, where a mosquitto_sub on that topic
    writes (it flushes each message), until the marker shows: the broker
    delivers a subscriber's messages in order, so all it routed before
    have arrived. At most `timeout` s, the fixed sleep this replaces; past
    it the caller goes on as the sleep did. Callers leave DRAINED out of
    what they judge. True when the marker was seen."""
    end = time.monotonic() + timeout
    try:
        subprocess.run(["mosquitto_pub", "-p", str(port), "-q", str(qos), "-t", topic, "-m", DRAINED,
                        "-V", "mqttv5" if ver == 5 else "mqttv311"],
                       capture_output=True, timeout=max(0.05, end - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    while True:
        if DRAINED in out_path.read_text(errors="replace"):
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(0.005)


def reports(out):
    """The `R {json}` lines tests/mp/fake_report.py printed, by tag."""
    res = {}
    for line in out.splitlines():
        if line.startswith("R "):
            d = json.loads(line[2:])
            res[d["tag"]] = d
    return res


def boot_with_kills(start, rng, kills, *, pause=(0.05, 0.3), budget_s=60, done="DONE"):
    """Boot a device again and again (start(boot) -> Popen, boot = 1, 2,
    ...), SIGKILLing it at a random moment of each of the first `kills`
    boots, as a power cut would stop it; then let it run until its output
    says `done`. Returns (kills made, the last boot's output). A boot that
    fails, or no `done` within budget_s, fails the test."""
    made = boot = 0
    p = None
    deadline = time.monotonic() + budget_s
    try:
        while time.monotonic() < deadline:
            boot += 1
            p = start(boot)
            if made < kills:
                time.sleep(rng.uniform(*pause))
                if p.poll() is None:
                    p.kill()
                    p.wait()
                    made += 1
                    continue
            out, _ = p.communicate(timeout=max(1, deadline - time.monotonic()))
            if done in out:
                return made, out
            assert p.returncode == 0, "device failed:\n" + out
    finally:
        if p is not None and p.poll() is None:
            p.kill()
            p.wait()
    raise AssertionError("device did not finish in %d s" % budget_s)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # Record each phase's outcome on the item so fixtures can keep broker logs
    # of failed tests.
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    """One private broker for the whole test session; its log is printed at
    the end if any test failed."""
    b = Broker(tmp_path_factory.mktemp("broker")).start()
    yield b
    b.stop()


@pytest.fixture
def fresh_broker(tmp_path, request):
    """A broker of the test's own (restartable, persistent) whose log is shown
    when the test fails."""
    brokers = []

    def make(extra_conf="", persistence=False):
        b = Broker(tmp_path / ("broker%d" % len(brokers)), extra_conf, persistence).start()
        brokers.append(b)
        return b

    yield make
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for b in brokers:
        b.stop()
        if failed:
            sys.stderr.write("\n--- mosquitto log (%s)\n%s\n" % (b.dir, b.log_text()[-8000:]))


@pytest.fixture(autouse=True)
def _broker_log_on_failure(request):
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed and "broker" in request.fixturenames:
        b = request.getfixturevalue("broker")
        sys.stderr.write("\n--- mosquitto log tail\n%s\n" % b.log_text()[-6000:])
