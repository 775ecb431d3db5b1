"""tools/deploy.py (`make deploy PORT=...`): the mpremote command it prints
with --dry-run (paths, secrets left out, the .mpy variant taken from the
build), and one real run against the unix port behind a socat PTY."""
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import MICROPYTHON, ROOT

sys.path.insert(0, str(ROOT / "tools"))
import build_mpy  # noqa: E402
import deploy  # noqa: E402

TOOL = ROOT / "tools" / "deploy.py"
MODULES = sorted(p.stem for p in (ROOT / "lib" / "durable_mqtt").glob("*.py"))


def run_tool(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def parse(listing):
    """The printed command -> (mpremote head, [step argument lists])."""
    words = shlex.split(listing.replace(" \\\n", " "))
    cut = words.index("connect") + 2
    head, rest = words[:cut], words[cut:]
    if rest and rest[0] == "resume":
        head.append(rest.pop(0))
    out, cur = [], []
    for w in rest:
        if w == "+":
            out.append(cur)
            cur = []
        else:
            cur.append(w)
    out.append(cur)
    return head, out


@pytest.fixture
def app(tmp_path):
    d = tmp_path / "firmware"
    d.mkdir()
    for name, text in (("boot.py", "print('boot')\n"), ("main.py", "print('main')\n"),
                       ("config.json", '{"broker": "10.0.0.2"}\n'),
                       ("secrets.json", '{"wifi_password": "hunter2"}\n'),
                       ("README.md", "not for the board\n")):
        (d / name).write_text(text)
    return d


def copies(step_list):
    return [(s[1], s[2]) for s in step_list if s[0] == "cp"]


def test_help():
    r = run_tool("--help")
    assert r.returncode == 0
    for opt in ("--port", "--dry-run", "--mpy", "--with-secrets", "--no-reset"):
        assert opt in r.stdout


def test_dry_run_lists_library_and_app_without_secrets(app):
    r = run_tool("--dry-run", "--port", "/dev/ttyUSB0", "--firmware", str(app))
    assert r.returncode == 0, r.stderr
    head, st = parse(r.stdout)
    assert head[0].endswith("mpremote") and head[1:] == ["connect", "/dev/ttyUSB0"]
    assert st[0][0] == "exec"
    prepare = st[0][1]
    assert 'os.mkdir(d)' in prepare and '"/lib", "/lib/durable_mqtt"' in prepare
    for m in MODULES:
        assert '"%s.py"' % m in prepare
    assert ".mpy" not in prepare
    assert copies(st) == (
        [("lib/durable_mqtt/%s.py" % m, ":/lib/durable_mqtt/%s.py" % m) for m in MODULES]
        + [(str(app / n), ":/" + n) for n in ("boot.py", "config.json", "main.py")])
    assert st[-1] == ["reset"]
    assert "secrets" not in r.stdout and "README" not in r.stdout
    # The printed command is the one main() runs.
    assert parse(deploy.show("mpremote", "/dev/ttyUSB0", deploy.steps(firmware_dir=app)))[1] == st


def test_secrets_only_when_asked(app):
    r = run_tool("--dry-run", "--firmware", str(app), "--with-secrets")
    assert r.returncode == 0
    assert (str(app / "secrets.json"), ":/secrets.json") in copies(parse(r.stdout)[1])


def test_mpy_variant_copies_the_build_output(app, tmp_path):
    build = tmp_path / "build"
    build_mpy.build(["armv6m"], build)
    r = run_tool("--dry-run", "--firmware", str(app), "--mpy", "rp2040", "--build-dir", str(build),
                 "--port", "/dev/ttyACM0")
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    head, st = parse(r.stdout)
    lib = [c for c in copies(st) if c[1].startswith(":/lib/")]
    assert lib == [(str(build / "armv6m" / "durable_mqtt" / (m + ".mpy")), ":/lib/durable_mqtt/%s.mpy" % m)
                   for m in MODULES]
    prepare = st[0][1]
    assert '"client.mpy"' in prepare and '"client.py"' not in prepare   # old .py files get removed
    # App files stay .py (boot.py and main.py must be source).
    assert (str(app / "main.py"), ":/main.py") in copies(st)


def test_mpy_variant_refuses_a_missing_or_stale_build(app, tmp_path):
    build = tmp_path / "build"
    r = run_tool("--firmware", str(app), "--mpy", "xtensawin", "--build-dir", str(build), "--port", "/nonexistent")
    assert r.returncode == 2 and "make mpy" in r.stderr
    build_mpy.build(["xtensawin"], build)
    old = build / "xtensawin" / "durable_mqtt" / "client.mpy"
    os.utime(old, (0, 0))
    r = run_tool("--firmware", str(app), "--mpy", "esp32", "--build-dir", str(build), "--port", "/nonexistent")
    assert r.returncode == 2 and "older than" in r.stderr


@pytest.fixture
def unix_board(tmp_path):
    """The unix port on a PTY, as mpremote sees a board (TOOLCHAIN §5)."""
    socat = shutil.which("socat")
    if not socat:
        pytest.skip("socat is not installed (apt-get install socat)")
    link = tmp_path / "tty"
    p = subprocess.Popen([socat, "PTY,link=%s,raw,echo=0" % link,
                          "EXEC:%s,pty,raw,echo=0,stderr,setsid,ctty" % MICROPYTHON],
                         cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    for _ in range(200):
        if link.exists():
            break
        time.sleep(0.01)
    yield str(link)
    try:
        os.killpg(p.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    p.wait(5)


def test_deploy_to_unix_port_then_switch_to_mpy(app, tmp_path, unix_board):
    """A real mpremote session: .py first (an old module on the board goes),
    then the x64 .mpy build over it (every .py goes, so none shadows a .mpy);
    then the deployed library imports from the board's /lib alone."""
    board = tmp_path / "board"
    (board / "lib" / "durable_mqtt").mkdir(parents=True)
    (board / "lib" / "durable_mqtt" / "old_module.py").write_text("gone = False\n")
    common = ["--port", unix_board, "--resume", "--no-reset", "--remote-root", str(board),
              "--firmware", str(app)]
    r = run_tool(*common)
    assert r.returncode == 0, r.stdout + r.stderr
    pkg = board / "lib" / "durable_mqtt"
    assert sorted(p.name for p in pkg.iterdir()) == [m + ".py" for m in MODULES]
    assert sorted(p.name for p in board.iterdir()) == ["boot.py", "config.json", "lib", "main.py"]

    build = tmp_path / "build"
    build_mpy.build(["x64"], build)
    r = run_tool(*common, "--mpy", "x64", "--build-dir", str(build))
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(p.name for p in pkg.iterdir()) == [m + ".mpy" for m in MODULES]

    env = dict(os.environ, MICROPYPATH="%s:.frozen" % (board / "lib"), HOME=str(tmp_path))
    r = subprocess.run([MICROPYTHON, "-c", "from durable_mqtt import MQTTClient, client\nprint(client.__file__)"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == str(pkg / "client.mpy"), r.stdout
