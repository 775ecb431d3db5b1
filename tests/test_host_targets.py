"""The Makefile's set-up split: host-only jobs (`make mpy`, `make deploy`,
`make package`, the session inspector) run no broker set-up and need no
root; `make test` still sets up everything the tests use (mosquitto and
its clients, openssl and socat through ensure_mosquitto.sh, then ejabberd)
before pytest; `make soak` runs the fuzzers and the slot-store power cuts
with SOAK=1 as well. `make -n` prints the recipes make would run, in order."""
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

ENSURE = ("ensure_mosquitto.sh", "ensure_ejabberd.sh")


def recipe(*args):
    r = subprocess.run(["make", "-n", "--no-print-directory", *args], capture_output=True, text=True,
                       cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


@pytest.mark.parametrize("target", [["mpy"], ["deploy"], ["deploy", "MPY=xtensawin"],
                                    ["deploy", "DEPLOY_ARGS=--dry-run"], ["package"], ["venv"]])
def test_host_only_targets_set_up_no_broker(target):
    out = recipe(*target)
    for script in ENSURE:
        assert script not in out, (target, out)
    assert "apt-get" not in out and "sudo" not in out


def test_make_test_sets_up_both_brokers_before_pytest():
    out = recipe("test")
    lines = out.splitlines()
    at = {k: next(i for i, x in enumerate(lines) if k in x) for k in ENSURE + ("pytest",)}
    assert at["ensure_mosquitto.sh"] < at["ensure_ejabberd.sh"] < at["pytest"], out
    # ensure_mosquitto.sh is what installs the broker's clients, openssl and socat.
    script = (ROOT / "tools" / "ensure_mosquitto.sh").read_text()
    for need in ("mosquitto", "mosquitto_sub", "openssl", "socat"):
        assert "have %s" % need in script, need


def test_ci_runs_make_test():
    ci = (ROOT / ".ci" / "run").read_text()
    assert [x.strip() for x in ci.splitlines() if x.strip() and not x.startswith("#")][-1] == "make test"


def test_soak_runs_the_long_variants():
    out = recipe("soak")
    line = [x for x in out.replace("\\\n", " ").splitlines() if "pytest" in x][0]
    assert line.startswith("SOAK=1 ")
    for t in ("test_resilience.py", "test_kill_restart.py", "test_fuzz.py", "test_slotstore.py"):
        assert "tests/" + t in line, t
    assert "ensure_mosquitto.sh" in out and "tools/sim.py --cuts 20" in out


@pytest.mark.parametrize("target", ["sim", "bench"])
def test_broker_jobs_set_up_mosquitto(target):
    assert "ensure_mosquitto.sh" in recipe(target)


def test_session_inspector_needs_only_python3(tmp_path):
    """`python3 tools/session_inspect.py` with the system python3, no venv,
    no broker on PATH (CPython stdlib only)."""
    python3 = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or sys.executable
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LANG": os.environ.get("LANG", "C.UTF-8")}
    r = subprocess.run([python3, str(ROOT / "tools" / "session_inspect.py"), "--help"], capture_output=True,
                       text=True, env=env, cwd=tmp_path, timeout=30)
    assert r.returncode == 0 and "session" in r.stdout, r.stdout + r.stderr
