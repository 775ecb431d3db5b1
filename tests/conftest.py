"""Shared fixtures: the MicroPython unix port as a subprocess, and private
mosquitto brokers on free loopback ports.

Tests drive the library the way a device runs it: a script executed by the
unix port with `lib/` and `tests/mp/` on its path. pytest itself only starts
processes, feeds them scripts and checks what they print.
"""
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
LIB = ROOT / "lib"
MP_HELPERS = ROOT / "tests" / "mp"
# The venv's console script; PATH does not include .venv/bin under make.
MICROPYTHON = str(pathlib.Path(sys.executable).parent / "micropython")
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


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


def spawn_mp(script_path, *args, heapsize=None, cwd=None, extra_path=(), stdout=subprocess.PIPE):
    cmd = [MICROPYTHON]
    if heapsize:
        cmd += ["-X", "heapsize=%s" % heapsize]
    cmd += [str(script_path), *map(str, args)]
    return subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.STDOUT, text=True,
                            env=mp_env(extra_path), cwd=cwd)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.01)
    raise RuntimeError("broker did not open port %d" % port)


class Broker:
    """A private mosquitto on 127.0.0.1 with its own config, log and db."""

    def __init__(self, directory, extra_conf="", persistence=False, port=None):
        self.dir = pathlib.Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.conf = self.dir / "mosquitto.conf"
        self.log = self.dir / "mosquitto.log"
        self.conf.write_text(
            "listener %d 127.0.0.1\n" % self.port
            + "allow_anonymous true\n"
            # As root mosquitto otherwise drops to user 'mosquitto' and cannot
            # write its log or db under a test's temporary directory.
            + "user root\n"
            + "persistence %s\npersistence_location %s/\n" % ("true" if persistence else "false", self.dir)
            + "log_dest file %s\nlog_type all\nconnection_messages true\n" % self.log
            + "max_queued_messages 10000\n"
            + extra_conf)
        self.proc = None

    def start(self):
        with open(self.dir / "mosquitto.stderr", "ab") as err:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                         stderr=err)
        try:
            wait_port(self.port)
        except RuntimeError:
            self.stop("kill")
            raise RuntimeError("mosquitto failed to start:\n" + self.log_text())
        return self

    def stop(self, how="term"):
        if self.proc and self.proc.poll() is None:
            (self.proc.terminate if how == "term" else self.proc.kill)()
            self.proc.wait(5)

    def restart(self):
        self.stop()
        self.start()

    def log_text(self):
        parts = []
        for p in (self.log, self.dir / "mosquitto.stderr"):
            if p.exists():
                parts.append(p.read_text(errors="replace"))
        return "\n".join(parts)


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
