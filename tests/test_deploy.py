"""tools/deploy.py and `make deploy`: the mpremote command it prints with
--dry-run (library, the board's profile.py and wlan.py, the app; secrets
left out; the .mpy variant taken from the build), one real mpremote run
against the unix port behind a socat PTY, and the deployed file list booted:

The boot test lays out exactly the files a deploy for a board copies (the
real esp32 and rp2040 lists, .py and .mpy) as a directory, makes that
directory the filesystem root of a unix port process (tests/mp/board_rom.py:
VfsPosix rooted there at "/", a board's sys.path, boot.py then main.py as
after a reset) and runs firmware/main.py from it against mosquitto. Nothing
from the checkout is on the path, so a file the deploy forgot is an
ImportError as on a board. The only stand-ins are modules the firmware has
built in and the unix port lacks: `network` (a station that associates at
once) and, for the esp32, `esp32` (a stock partition table). The profiles
and wlan.py run unchanged; no degraded code path exists only for the test.
"""
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import MICROPYTHON, MP_HELPERS, ROOT, log_size, wait_subscribed
from ptyboard import unix_board  # noqa: F401  (a fixture)

sys.path.insert(0, str(ROOT / "tools"))
import build_mpy  # noqa: E402
import deploy  # noqa: E402

TOOL = ROOT / "tools" / "deploy.py"
MODULES = sorted(p.stem for p in (ROOT / "lib" / "durable_mqtt").glob("*.py"))
BOARDS = ("esp32", "rp2040", "unix")
BOARD_FILES = ["profile.py", "wlan.py"]


def run_tool(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def run_make(*args, timeout=120):
    return subprocess.run(["make", "-s", "--no-print-directory", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


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
    for name, text in (("boot.py", "print('boot')\n"), ("main.py", "import profile, wlan\nprint('main')\n"),
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
    for opt in ("--port", "--board", "--dry-run", "--mpy", "--with-secrets", "--no-reset"):
        assert opt in r.stdout


def test_dry_run_lists_library_board_files_and_app_without_secrets(app):
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
        + [("boards/esp32/profile.py", ":/profile.py"), ("boards/wlan.py", ":/wlan.py")]
        + [(str(app / n), ":/" + n) for n in ("boot.py", "config.json", "main.py")])
    assert st[-1] == ["reset"]
    assert "secrets" not in r.stdout and "README" not in r.stdout
    assert "warning" not in r.stderr
    # The printed command is the one main() runs.
    assert parse(deploy.show("mpremote", "/dev/ttyUSB0", deploy.steps(firmware_dir=app)))[1] == st


@pytest.mark.parametrize("board", BOARDS)
def test_every_import_of_the_firmware_is_deployed_or_built_in(board):
    """firmware/*.py, profile.py and wlan.py import nothing the deploy leaves
    out (the 0.1.0 deploy left out profile.py and wlan.py: shown below)."""
    for arch in (None, deploy.BOARD_ARCHES[board][0]):
        lib = [n for _, n in deploy.library_files(arch, ROOT / "build" / "mpy")]
        files = deploy.root_files(board)
        assert [n for _, n in files][:2] == BOARD_FILES
        assert deploy.unresolved_imports(files, lib) == []
        # What 0.1.0 shipped: the app without the board's files.
        missing = deploy.unresolved_imports(files[2:], lib)
        assert ("main.py", "profile") in missing and ("main.py", "wlan") in missing, missing
    r = run_tool("--dry-run", "--board", board)
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    assert ("boards/%s/profile.py" % board, ":/profile.py") in copies(parse(r.stdout)[1])
    # The Wi-Fi boards read their credentials from secrets.json: said when it is not copied.
    assert ("--with-secrets" in r.stderr) == (board != "unix"), r.stderr


def test_an_import_nobody_provides_is_reported(app):
    (app / "main.py").write_text("import profile\nfrom durable_mqtt import MQTTClient, nothere\n"
                                 "import sensorlib\n")
    r = run_tool("--dry-run", "--firmware", str(app))
    assert r.returncode == 0
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2, r.stderr
    assert "main.py imports durable_mqtt.nothere" in warnings[0]
    assert "main.py imports sensorlib" in warnings[1]


def test_secrets_only_when_asked(app):
    r = run_tool("--dry-run", "--firmware", str(app), "--with-secrets")
    assert r.returncode == 0
    assert (str(app / "secrets.json"), ":/secrets.json") in copies(parse(r.stdout)[1])
    assert "note:" not in r.stderr


def test_secrets_asked_for_and_missing_stop_the_deploy(app):
    """--with-secrets with no secrets.json only warned and deployed: the
    board then booted with no Wi-Fi or broker credentials. It stops, and
    says which file to copy."""
    (app / "secrets.json").unlink()
    r = run_tool("--dry-run", "--firmware", str(app), "--with-secrets")
    assert r.returncode == 2 and not r.stdout, (r.stdout, r.stderr)
    assert "secrets.example.json" in r.stderr and "fill it in" in r.stderr, r.stderr


def test_mpy_variant_copies_the_build_output(app, tmp_path):
    build = tmp_path / "build"
    build_mpy.build(["armv6m"], build)
    r = run_tool("--dry-run", "--firmware", str(app), "--board", "rp2040", "--mpy", "rp2040",
                 "--build-dir", str(build), "--port", "/dev/ttyACM0")
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    head, st = parse(r.stdout)
    lib = [c for c in copies(st) if c[1].startswith(":/lib/")]
    assert lib == [(str(build / "armv6m" / "durable_mqtt" / (m + ".mpy")), ":/lib/durable_mqtt/%s.mpy" % m)
                   for m in MODULES]
    prepare = st[0][1]
    assert '"client.mpy"' in prepare and '"client.py"' not in prepare   # old .py files get removed
    # The board's files and the app stay .py (boot.py and main.py must be source).
    assert ("boards/rp2040/profile.py", ":/profile.py") in copies(st)
    assert ("boards/wlan.py", ":/wlan.py") in copies(st)
    assert (str(app / "main.py"), ":/main.py") in copies(st)
    # Without --board (as docs/getting-started-pico-w.md types it): the board
    # whose arch --mpy names.
    r2 = run_tool("--dry-run", "--port", "/dev/ttyACM0", "--mpy", "armv6m", "--firmware", str(app),
                  "--build-dir", str(build))
    assert r2.returncode == 0 and r2.stdout == r.stdout, r2.stderr


def test_mpy_variant_refuses_a_missing_stale_or_foreign_build(app, tmp_path):
    build = tmp_path / "build"
    r = run_tool("--firmware", str(app), "--mpy", "xtensawin", "--build-dir", str(build), "--port", "/nonexistent")
    assert r.returncode == 2 and "make mpy" in r.stderr
    build_mpy.build(["xtensawin", "armv6m"], build)
    native = build / "xtensawin" / "durable_mqtt" / "native.mpy"
    good = native.read_bytes()
    native.write_bytes((build / "armv6m" / "durable_mqtt" / "native.mpy").read_bytes())
    r = run_tool("--firmware", str(app), "--mpy", "xtensawin", "--build-dir", str(build), "--port", "/nonexistent")
    assert r.returncode == 2 and "holds armv6m machine code, not xtensawin" in r.stderr, r.stderr
    native.write_bytes(good)
    old = build / "xtensawin" / "durable_mqtt" / "client.mpy"
    os.utime(old, (0, 0))
    r = run_tool("--firmware", str(app), "--mpy", "esp32", "--build-dir", str(build), "--port", "/nonexistent")
    assert r.returncode == 2 and "older than" in r.stderr
    # An .mpy build for another board than --board.
    r = run_tool("--firmware", str(app), "--board", "esp32", "--mpy", "armv6m", "--build-dir", str(build))
    assert r.returncode == 2 and "not the arch of --board esp32" in r.stderr


def test_make_deploy_dry_run_as_typed(tmp_path):
    """`make deploy DEPLOY_ARGS=--dry-run` prints what tools/deploy.py does for
    the defaults (ESP32 on /dev/ttyUSB0); with BOARD= and MPY= it builds
    that arch first (into MPY_OUT) and lists the .mpy files."""
    r = run_make("deploy", "DEPLOY_ARGS=--dry-run")
    assert r.returncode == 0, r.stdout + r.stderr
    want = run_tool("--dry-run", "--port", "/dev/ttyUSB0", "--board", "esp32")
    assert r.stdout == want.stdout
    out = tmp_path / "mpy"
    r = run_make("deploy", "BOARD=rp2040", "MPY=armv6m", "PORT=/dev/ttyACM0", "MPY_OUT=%s" % out,
                 "DEPLOY_ARGS=--dry-run")
    assert r.returncode == 0, r.stdout + r.stderr
    listing = r.stdout[r.stdout.index(str(ROOT / ".venv" / "bin" / "mpremote")):]
    head, st = parse(listing)
    assert head[1:] == ["connect", "/dev/ttyACM0"]
    assert [c[1] for c in copies(st)][:len(MODULES)] == [":/lib/durable_mqtt/%s.mpy" % m for m in MODULES]
    assert ("boards/rp2040/profile.py", ":/profile.py") in copies(st)
    assert build_mpy.mpy_arch(out / "armv6m" / "durable_mqtt" / "native.mpy") == "armv6m"
    assert "warning" not in r.stderr


# ---------------------------------------------------------------- real mpremote

def _seed(src_dir, dst_dir, names):
    """Copies on the board that equal the deploy's: mpremote finds the same
    hash and skips them, which keeps the transfer (and the test) short; the
    rest go over the PTY for real."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    for n in names:
        shutil.copyfile(src_dir / n, dst_dir / n)


def test_make_deploy_to_unix_port_then_switch_to_mpy(app, tmp_path, unix_board):
    """A real mpremote session started by `make deploy`: .py first (an old
    module on the board goes), then the .mpy build over it (every .py goes,
    so none shadows a .mpy); then the deployed library imports from the
    board's /lib alone."""
    board = tmp_path / "board"
    pkg = board / "lib" / "durable_mqtt"
    lib = ROOT / "lib" / "durable_mqtt"
    sent = ["client.py", "errors.py"]             # these two really go over the PTY
    _seed(lib, pkg, [m + ".py" for m in MODULES if m + ".py" not in sent])
    (pkg / "old_module.py").write_text("gone = False\n")
    args = "--resume --no-reset --remote-root %s --firmware %s" % (board, app)
    r = run_make("deploy", "PORT=" + unix_board, "DEPLOY_ARGS=" + args)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(p.name for p in pkg.iterdir()) == [m + ".py" for m in MODULES]
    for m in MODULES:
        assert (pkg / (m + ".py")).read_bytes() == (lib / (m + ".py")).read_bytes()
    assert sorted(p.name for p in board.iterdir()) == ["boot.py", "config.json", "lib", "main.py",
                                                       "profile.py", "wlan.py"]
    assert (board / "profile.py").read_bytes() == (ROOT / "boards" / "esp32" / "profile.py").read_bytes()

    build = tmp_path / "build"
    build_mpy.build(["x64"], build)
    _seed(build / "x64" / "durable_mqtt", pkg, [m + ".mpy" for m in MODULES if m + ".py" not in sent])
    r = run_make("deploy", "PORT=" + unix_board, "BOARD=unix", "MPY=x64", "MPY_OUT=%s" % build,
                 "DEPLOY_ARGS=" + args)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(p.name for p in pkg.iterdir()) == [m + ".mpy" for m in MODULES]
    assert (board / "profile.py").read_bytes() == (ROOT / "boards" / "unix" / "profile.py").read_bytes()

    env = dict(os.environ, MICROPYPATH="%s:.frozen" % (board / "lib"), HOME=str(tmp_path))
    r = subprocess.run([MICROPYTHON, "-c", "from durable_mqtt import MQTTClient, client\nprint(client.__file__)"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == str(pkg / "client.mpy"), r.stdout


# ---------------------------------------------------------------- the deploy boots

# Built-in modules of the board's firmware that the unix port lacks.
STAND_INS = {"esp32": ["network=fw_network", "esp32=fw_esp32"], "rp2040": ["network=fw_network"], "unix": []}
# The unix port has no machine.WDT (nor Timer), and no real watchdog exists
# here: tests/mp/fw_machine.py stands in for it in the watchdog tests only,
# measuring the time between feeds where a board would count it down.
WATCHED = ["machine=fw_machine"]


@pytest.fixture(scope="module")
def board_builds(tmp_path_factory):
    out = tmp_path_factory.mktemp("mpy")
    build_mpy.build(["xtensawin", "armv6m"], out)
    return out


def lay_out(board, arch, build, dest):
    """The board's filesystem after `make deploy BOARD=board [MPY=arch]`."""
    files = deploy.layout(deploy.steps(arch, board=board, build_dir=build, reset=False))
    for rel, src in files.items():
        target = dest / rel
        assert not rel.startswith("/") and dest in target.parents, rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src if src.is_absolute() else ROOT / src, target)
    return sorted(files)


def power_on(board_dir, board, tmp_path, extra=(), env=None, stdout=subprocess.PIPE):
    env = dict(os.environ, MICROPYPATH="%s:.frozen" % MP_HELPERS, HOME=str(tmp_path), **(env or {}))
    return subprocess.Popen([MICROPYTHON, str(MP_HELPERS / "board_rom.py"), str(board_dir)] + STAND_INS[board]
                            + list(extra),
                            stdout=stdout, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)


def wait_for(path, needle, proc, timeout=20):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if needle in path.read_text():
            return
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    if proc.poll() is None:
        proc.kill()
    pytest.fail("%r never seen; device output:\n%s" % (needle, proc.communicate(timeout=5)[0]))


@pytest.mark.parametrize("board,arch", [("esp32", None), ("esp32", "xtensawin"), ("rp2040", None),
                                        ("rp2040", "armv6m"), ("unix", None)])
def test_deployed_files_boot_firmware_main(board, arch, board_builds, broker, tmp_path):
    """Boot 1: Wi-Fi up from secrets.json, telemetry reaches a subscriber,
    the "stop" command ends the run cleanly. Boot 2 (a reset): the boot
    counter and the session survived on the board's flash, and a command
    queued while the device was off arrives."""
    root = tmp_path / "board"
    listed = lay_out(board, arch, board_builds, root)
    assert "profile.py" in listed and "wlan.py" in listed and "main.py" in listed
    # What a user edits before deploying: the broker, and the credentials.
    base = "boot/%s-%s" % (board, arch or "py")
    cfg = json.loads((root / "config.json").read_text())
    cfg.update(broker="127.0.0.1", port=broker.port, client_id=base.replace("/", "-"), topic_base=base,
               interval_ms=50, keepalive=10)
    (root / "config.json").write_text(json.dumps(cfg))
    (root / "secrets.json").write_text(json.dumps({"wifi_ssid": "test-ssid", "wifi_password": "pw"}))

    seen = tmp_path / "seen.txt"
    since = log_size(broker)
    watcher = subprocess.Popen(["mosquitto_sub", "-p", str(broker.port), "-q", "1", "-v", "-t", base + "/#"],
                               stdout=open(seen, "w"))
    try:
        wait_subscribed(broker, since, base + "/#", 0.3)
        dev = power_on(root, board, tmp_path)
        wait_for(seen, base + "/tele", dev)
        # The subscription went before the first telemetry (checked in the
        # broker's log below); its SUBACK line may follow in the log.
        assert wait_subscribed(broker, since, base + "/cmd", 20), "the device never subscribed"
        # A malformed command gets a reply and the firmware runs on (it
        # ended main() with a ValueError, the command already acknowledged).
        subprocess.run(["mosquitto_pub", "-p", str(broker.port), "-q", "1", "-t", base + "/cmd",
                        "-m", "interval=abc"], check=True, timeout=10)
        wait_for(seen, base + "/reply boot 1: b'interval=abc' bad command", dev)
        # ping: its reply, with the boot count (docs/firmware.md)
        subprocess.run(["mosquitto_pub", "-p", str(broker.port), "-q", "1", "-t", base + "/cmd",
                        "-m", "ping"], check=True, timeout=10)
        wait_for(seen, base + "/reply boot 1: ping ok", dev)
        # One too large for ticks_add() (OverflowError in the main loop): a day at most.
        subprocess.run(["mosquitto_pub", "-p", str(broker.port), "-q", "1", "-t", base + "/cmd",
                        "-m", "interval=100000000000000000000"], check=True, timeout=10)
        wait_for(seen, base + "/reply boot 1: interval=100000000000000000000 ok", dev)
        time.sleep(0.2)                     # the main loop's next telemetry takes the interval
        subprocess.run(["mosquitto_pub", "-p", str(broker.port), "-q", "1", "-t", base + "/cmd", "-m", "stop"],
                       check=True, timeout=10)
        out = dev.communicate(timeout=30)[0]
        assert dev.returncode == 0, out
        # Boot 2, with a command queued for the session while the device was off.
        subprocess.run(["mosquitto_pub", "-p", str(broker.port), "-q", "1", "-t", base + "/cmd", "-m", "stop"],
                       check=True, timeout=10)
        dev = power_on(root, board, tmp_path)
        out2 = dev.communicate(timeout=30)[0]
        assert dev.returncode == 0, out2
        time.sleep(0.2)
    finally:
        watcher.terminate()
        watcher.wait(5)
    # A first boot subscribes after its first connect: before the telemetry
    # queued until then goes out (robust.py), so a command sent on seeing
    # the device's first message finds the subscription (the CI run of
    # ed38879 lost one sent in between).
    with open(broker.log, "rb") as f:
        f.seek(since)
        log = f.read()
    cid = base.replace("/", "-").encode()
    assert 0 <= log.find(b"Received SUBSCRIBE from " + cid) < log.find(b"Received PUBLISH from " + cid), log[-3000:]
    lines = out.splitlines()
    assert [x for x in lines if x.startswith("BOOT ")] == ["BOOT 1 restored 0 event None"], out
    assert ("WLAN connect test-ssid" in lines) == (board != "unix"), out
    assert "CMD stop ok" in lines and "STOPPED" in lines[lines.index("CMD stop ok"):], out
    assert [x for x in out2.splitlines() if x.startswith("BOOT ")][0].startswith("BOOT 2 "), out2
    assert "CMD stop ok" in out2 and "STOPPED" in out2, out2
    got = seen.read_text()
    assert base + '/tele {"boot":1,"seq":0,' in got and base + "/reply boot 1: stop ok" in got, got
    assert base + "/reply boot 2: stop ok" in got, got
    # Every library module came from the deploy: .py, or .mpy with MPY=.
    loaded = dict(x.split()[1:] for x in lines if x.startswith("LOADED "))
    assert loaded and all(f.startswith("/lib/durable_mqtt/") for f in loaded.values()), loaded
    suffix = ".mpy" if arch else ".py"
    assert all(f.endswith(suffix) for f in loaded.values()), loaded
    # The board's viper CRC (native.mpy for xtensawin/armv6m) cannot run on
    # the unix port: crc.py falls back to its bytecode twin, as designed.
    assert ("durable_mqtt.crcpy" in loaded) == bool(arch), loaded


def test_deployed_firmware_waits_for_a_broker_that_is_not_up_yet(tmp_path):
    """Power-on before the broker is reachable (a router still booting): the
    firmware retries with backoff, connects once the broker is up, and its
    telemetry gets through. (It crashed with an AttributeError, link.drop()
    on the Wi-Fi link, in robust.py as of b141efd.)"""
    from testbroker import Broker, free_port
    root = tmp_path / "board"
    lay_out("esp32", None, None, root)
    port = free_port()
    base = "boot/late-broker"
    cfg = json.loads((root / "config.json").read_text())
    cfg.update(broker="127.0.0.1", port=port, client_id="late-broker", topic_base=base, interval_ms=50,
               timeout_ms=1000)
    (root / "config.json").write_text(json.dumps(cfg))
    (root / "secrets.json").write_text(json.dumps({"wifi_ssid": "test-ssid", "wifi_password": "pw"}))
    dev = power_on(root, "esp32", tmp_path)
    broker = None
    try:
        time.sleep(1.5)
        assert dev.poll() is None, dev.communicate(timeout=5)[0]
        broker = Broker(tmp_path / "broker", port=port).start()
        seen = tmp_path / "seen.txt"
        watcher = subprocess.Popen(["mosquitto_sub", "-p", str(port), "-q", "1", "-v", "-t", base + "/#"],
                                   stdout=open(seen, "w"))
        try:
            wait_for(seen, base + "/tele", dev, timeout=30)
            assert wait_subscribed(broker, 0, base + "/cmd", 20), "the device never subscribed"
            subprocess.run(["mosquitto_pub", "-p", str(port), "-q", "1", "-t", base + "/cmd", "-m", "stop"],
                           check=True, timeout=10)
            out = dev.communicate(timeout=30)[0]
        finally:
            watcher.terminate()
            watcher.wait(5)
        assert dev.returncode == 0 and "STOPPED" in out, out
    finally:
        if dev.poll() is None:
            dev.kill()
            dev.wait(5)
        if broker:
            broker.stop()


def _boot_with(tmp_path, name, config, secrets, board="esp32", timeout=10):
    """The deployed firmware booted once with this config.json and
    secrets.json on the board (a dict is written as JSON, a str as is,
    None: no such file); returns (exit status, output)."""
    root = tmp_path / name
    lay_out(board, None, None, root)
    for fname, content in (("config.json", config), ("secrets.json", secrets)):
        path = root / fname
        if content is None:
            if path.exists():
                path.unlink()
        else:
            path.write_text(content if isinstance(content, str) else json.dumps(content))
    dev = power_on(root, board, tmp_path)
    try:
        out = dev.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        dev.kill()
        out = dev.communicate(timeout=5)[0] + "\n[still running]"
    return dev.returncode, out


def test_firmware_says_which_config_file_is_wrong_and_how(tmp_path):
    """config.json or secrets.json missing, malformed, or of the wrong
    shape: main.py stops at once with a sentence naming the file and the
    fault. It said "OSError: [Errno 2] ENOENT" or "syntax error in JSON"
    (no file named), died in `cfg.update` on a JSON list, took a
    malformed secrets.json for none at all ("no wifi_ssid: put
    secrets.json ... beside main.py", with the file right there; on the
    unix board it ran on without the broker credentials), and an
    interval_ms of "1000" passed the boot and killed the main loop with
    "can't convert str to int"."""
    cfg = json.loads((ROOT / "firmware" / "config.json").read_text())
    cfg.update(broker="127.0.0.1", port=1, timeout_ms=300)
    good = {"wifi_ssid": "test-ssid", "wifi_password": "pw"}
    cases = [
        ("no-config", None, good, "config.json", "not found"),
        ("bad-config", '{"broker": "10.0.0.2",', good, "config.json", "not valid JSON"),
        ("list-config", "[1, 2]", good, "config.json", "a JSON object"),
        ("bad-secrets", json.dumps(cfg), '{"wifi_ssid": "test-ssid", "wifi_password": "pw"', "secrets.json",
         "not valid JSON"),
        ("list-secrets", json.dumps(cfg), "[]", "secrets.json", "a JSON object"),
        ("str-interval", dict(cfg, interval_ms="1000"), good, "interval_ms", "whole number"),
        ("no-broker", {k: v for k, v in cfg.items() if k != "broker"}, good, "broker", "missing"),
        ("str-wdt", dict(cfg, wdt_ms="8000"), good, "wdt_ms", "whole number"),
        ("short-wdt", dict(cfg, wdt_ms=500), good, "wdt_ms", "from 2000"),
        ("wdt-under-timeouts", dict(cfg, wdt_ms=2000, timeout_ms=1500), good, "wdt_ms 2000", "timeout_ms 1000"),
        # a name: its DNS lookup may block longer than the watchdog waits (watchdog.LOOKUP_MS)
        ("wdt-under-lookup", dict(cfg, broker="broker.lan", wdt_ms=10000), good,
         "config.json: broker 'broker.lan' is a name", "wdt_ms must be 27000 or more"),
        # timeout_ms not a whole number: with wdt_ms set a bare "TypeError:
        # unsupported types for __gt__" from watchdog.timeout() (boot.py's
        # note too), and without it the client's "timeout_ms must be an int"
        # (no file named) after the Wi-Fi link was made.
        ("str-timeout-wdt", dict(cfg, wdt_ms=10000, timeout_ms="5000"), good, "config.json: timeout_ms",
         "whole number"),
        ("null-timeout-wdt", dict(cfg, wdt_ms=10000, timeout_ms=None), good, "config.json: timeout_ms",
         "whole number"),
        ("float-timeout-wdt", dict(cfg, wdt_ms=10000, timeout_ms=2.5), good, "config.json: timeout_ms",
         "whole number"),
        ("str-timeout", dict(cfg, timeout_ms="5000"), good, "config.json: timeout_ms", "whole number"),
    ]
    for name, config, secrets, what, fault in cases:
        rc, out = _boot_with(tmp_path, name, config, secrets, timeout=10)
        last = out.strip().splitlines()[-1] if out.strip() else ""
        assert rc != 0 and what in last and fault in last, (name, out)
        assert "BOOT " not in out, (name, out)         # before the boot counter and the client
    # secrets.json absent stays the clear message it was.
    rc, out = _boot_with(tmp_path, "no-secrets", json.dumps(cfg), None)
    assert rc != 0 and "no wifi_ssid" in out and "secrets.example.json" in out, out
    # The unix board needs no Wi-Fi, but a malformed secrets.json is still one.
    rc, out = _boot_with(tmp_path, "unix-bad-secrets", json.dumps(dict(cfg, sim={"image": "/flash.img"})),
                         '{"mqtt_user": "u",', board="unix")
    assert rc != 0 and "secrets.json" in out and "not valid JSON" in out, out


def test_firmware_says_why_the_broker_is_not_reached_and_backs_off(tmp_path):
    """A broker that refuses the credentials: the firmware says so (it
    printed STATS lines whose connect_failures grew, never the refusal,
    so a wrong password looked like a network fault), and retries with a
    growing delay instead of hammering the broker."""
    from testbroker import Broker
    broker = Broker(tmp_path / "broker", extra_conf="password_file %s\n" % (tmp_path / "passwd"))
    (tmp_path / "passwd").write_text("")                 # no user: every login refused
    broker.conf.write_text(broker.conf.read_text().replace("allow_anonymous true", "allow_anonymous false"))
    broker.start()
    try:
        cfg = json.loads((ROOT / "firmware" / "config.json").read_text())
        cfg.update(broker="127.0.0.1", port=broker.port, client_id="bad-login", topic_base="boot/bad-login",
                   interval_ms=200, timeout_ms=1000)
        secrets = {"wifi_ssid": "test-ssid", "wifi_password": "pw", "mqtt_user": "dev", "mqtt_password": "wrong"}
        rc, out = _boot_with(tmp_path, "board", json.dumps(cfg), secrets, timeout=6)
        log = broker.log_text()
    finally:
        broker.stop()
    assert "[still running]" in out, out                # it keeps publishing into the outbox meanwhile
    errors = [x for x in out.splitlines() if x.startswith("ERROR ")]
    assert errors and all("not authorized" in x for x in errors), out
    # 250 ms doubling: 0, 0.25, 0.75, 1.75, 3.75 s in 6 s (jittered down to half).
    attempts = log.count("New connection from")
    assert 3 <= attempts <= 8, log


def test_pico_w_firmware_turns_wifi_power_saving_off(tmp_path):
    """The Pico W page and board README bring Wi-Fi up with
    pm=network.WLAN.PM_NONE (power saving delays replies: "no PINGRESP"
    timeouts); the deployed firmware left the CYW43's power saving on, as
    WLANLink does without pm=. The rp2040 profile names the setting and
    main.py hands it to WLANLink; the ESP32's stays as it was."""
    cfg = json.loads((ROOT / "firmware" / "config.json").read_text())
    cfg.update(broker="127.0.0.1", port=1, timeout_ms=300)
    secrets = {"wifi_ssid": "test-ssid", "wifi_password": "pw"}
    for board, want in (("rp2040", ["WLAN config pm=0xa11140"]), ("esp32", [])):
        rc, out = _boot_with(tmp_path, board, json.dumps(cfg), secrets, board=board, timeout=3)
        assert "WLAN connect test-ssid" in out, out
        assert [x for x in out.splitlines() if x.startswith("WLAN config")] == want, (board, out)


# ---------------------------------------------------------------- the watchdog

def _slow_broker(base, delay):
    """A broker that answers CONNECT and SUBSCRIBE each `delay` s late, then
    sends the "stop" command; acknowledges every QoS 1 PUBLISH. Returns the
    listener and the list of (packet type, time answered)."""
    from fakebroker import connack, listener, next_packet, pkt, publish, u16
    answered = []

    def serve(conn):
        buf = b""
        with conn:
            while True:
                p = next_packet(buf)
                if p is None:
                    data = conn.recv(4096)
                    if not data:
                        return
                    buf += data
                    continue
                first, body, buf = p
                kind = first & 0xF0
                if kind == 0x10:
                    time.sleep(delay)
                    conn.sendall(connack(4))
                elif kind == 0x80:
                    time.sleep(delay)
                    conn.sendall(pkt(0x90, body[:2] + b"\x01"))
                    conn.sendall(publish(4, (base + "/cmd").encode(), b"stop"))
                elif kind == 0x30 and first & 6:
                    tl = int.from_bytes(body[:2], "big")
                    conn.sendall(pkt(0x40, body[2 + tl:4 + tl]))
                elif kind == 0xC0:
                    conn.sendall(pkt(0xD0))
                elif kind == 0xE0:
                    return
                answered.append((kind, time.monotonic()))
    return listener(serve), answered


def _watched(out):
    """(feeds, longest time between two feeds in ms) from fw_machine's WDT."""
    line = [x for x in out.splitlines() if x.startswith("WDT feeds ")][-1].split()
    return int(line[2]), int(line[4])


def test_firmware_feeds_the_watchdog_through_a_slow_connect(tmp_path):
    """wdt_ms set: boot.py starts machine.WDT and a timer feeds it until
    main.py takes over; main.py feeds it at each loop iteration and at each
    step of a connect attempt. A broker that answers CONNECT and SUBSCRIBE
    0.8 s late each makes one attempt (one poll()) of 1.6 s and more: fed
    only between loop iterations, the watchdog went that long unfed; fed
    per step, never longer than one network wait (timeout_ms at most). After
    "stop" the timer feeds it again (the board stays at the REPL)."""
    root = tmp_path / "board"
    lay_out("esp32", None, None, root)
    base = "boot/wdt"
    s, answered = _slow_broker(base, 0.8)
    try:
        cfg = json.loads((root / "config.json").read_text())
        cfg.update(broker="127.0.0.1", port=s.getsockname()[1], client_id="wdt", topic_base=base,
                   interval_ms=50, timeout_ms=1000, wdt_ms=2000)
        (root / "config.json").write_text(json.dumps(cfg))
        (root / "secrets.json").write_text(json.dumps({"wifi_ssid": "test-ssid", "wifi_password": "pw"}))
        dev = power_on(root, "esp32", tmp_path, WATCHED)
        out = dev.communicate(timeout=30)[0]
    finally:
        s.close()
    assert dev.returncode == 0 and "STOPPED" in out, out
    lines = out.splitlines()
    # boot.py: started and held by the timer; main.py: took it over before anything else.
    assert lines[:4] == ["WDT start 2000", "TIMER feeds every 500", "WDT start 2000", "TIMER stop"], out
    assert lines.index("TIMER stop") < lines.index("BOOT 1 restored 0 event None"), out
    assert lines[lines.index("STOPPED"):][:2] == ["STOPPED", "TIMER feeds every 500"], out
    assert "WDT EXPIRED" not in out, out
    acks = [(k, t) for k, t in answered if k in (0x10, 0x80)]
    assert [k for k, _ in acks] == [0x10, 0x80], answered   # one attempt: CONNACK, then SUBACK, each 0.8 s late
    assert acks[1][1] - acks[0][1] >= 0.8, answered
    feeds, gap = _watched(out)
    assert feeds > 5 and 700 <= gap < 1200, (feeds, gap, out)


def test_wdt_ms_outlasts_a_dns_lookup_unless_the_broker_is_an_address():
    """watchdog.timeout(): a broker given by name needs wdt_ms of
    LOOKUP_MS (27 s: lwIP's worst case on an ESP32, watchdog.py says how it
    adds up) or more; an IPv4 or IPv6 address is never looked up and keeps
    the bounds it had. A name with a port, or three numbers, is a name."""
    r = subprocess.run([MICROPYTHON, "-c", r"""
import watchdog
for b, w in (("192.168.1.10", 10000), ("::1", 10000), ("fe80::1", 2000), ("broker.lan", 27000),
             ("broker.lan", 0), ("broker.lan", 26999), ("broker.lan:1883", 10000), ("10.0.1", 10000),
             ("localhost", 10000)):
    try:
        print(b, w, "ok", watchdog.timeout({"broker": b, "wdt_ms": w, "timeout_ms": 1000}))
    except ValueError as e:
        print(b, w, "refused", "27000 or more" in str(e))
print("LOOKUP_MS", watchdog.LOOKUP_MS)
"""], capture_output=True, text=True, timeout=30, env=dict(os.environ, MICROPYPATH=str(ROOT / "firmware")))
    assert r.stdout.splitlines() == [
        "192.168.1.10 10000 ok 10000", "::1 10000 ok 10000", "fe80::1 2000 ok 2000",
        "broker.lan 27000 ok 27000", "broker.lan 0 ok 0", "broker.lan 26999 refused True",
        "broker.lan:1883 10000 refused True", "10.0.1 10000 refused True", "localhost 10000 refused True",
        "LOOKUP_MS 27000"], r.stdout + r.stderr


def test_firmware_feeds_the_watchdog_right_before_and_after_a_dns_lookup(tmp_path):
    """A broker given by name: the connect looks it up first, and the lookup
    blocks where nothing can feed the watchdog (for seconds on a board whose
    Wi-Fi is up and whose DNS servers do not answer). main.py feeds right
    before it and right after, so the longest time unfed is the lookup
    alone: here a resolver that stalls 2 s (tests/mp/fw_dns.py), then a TCP
    connect that gets no answer (timeout_ms 1000). The lookup and the
    connect were one step of the connect attempt: the watchdog went 3 s
    unfed, the two added."""
    from test_slow_link import syn_hole
    root = tmp_path / "board"
    lay_out("esp32", None, None, root)
    s, fill = syn_hole()
    log = tmp_path / "out.txt"
    try:
        cfg = json.loads((root / "config.json").read_text())
        cfg.update(broker="broker.invalid", port=s.getsockname()[1], client_id="wdt-dns", topic_base="boot/dns",
                   timeout_ms=1000, wdt_ms=27000)
        (root / "config.json").write_text(json.dumps(cfg))
        (root / "secrets.json").write_text(json.dumps({"wifi_ssid": "test-ssid", "wifi_password": "pw"}))
        with open(log, "w") as f:
            dev = power_on(root, "esp32", tmp_path, WATCHED + ["socket=fw_dns"], {"FW_DNS_STALL_MS": "2000"}, f)
            try:
                wait_for(log, "no answer in 1000 ms", dev)     # the first attempt is over
            finally:
                dev.send_signal(signal.SIGINT)               # Ctrl-C at the console
                dev.wait(10)
    finally:
        for c in fill:
            c.close()
        s.close()
    out = log.read_text()
    assert "KeyboardInterrupt" in out and "WDT EXPIRED" not in out, out
    lookups = [x.split() for x in out.splitlines() if x.startswith("DNS ")]
    assert [x[1] for x in lookups] == ["broker.invalid"], out      # once: the kept address is dialled again
    assert int(lookups[0][3]) < 100, out                           # fed right before
    feeds, gap = _watched(out)
    assert 1900 <= gap < 2600, (feeds, gap, out)                   # was 3,000: fed right after too


def test_firmware_left_unfed_by_a_config_fault_resets_the_board(tmp_path):
    """wdt_ms set in a good config.json, and a fault main.py finds before
    it takes the watchdog over (a malformed secrets.json, a client_id
    missing): main.py ends with the sentence naming the file, and stops
    boot.py's timer on the way out, so the board resets wdt_ms later and
    tries again, as after any other exception that ends main.py
    (docs/firmware.md). It left the timer feeding: the board sat at the
    REPL for good, as after "stop". Such a reset loop writes nothing to
    flash: the board's files are as they were (a value only the client
    refuses, a port of "1883", included: the boot counter is written after
    the client is made)."""
    cfg = json.loads((ROOT / "firmware" / "config.json").read_text())
    cfg.update(broker="127.0.0.1", port=1, timeout_ms=1000, wdt_ms=2000)
    good = {"wifi_ssid": "test-ssid", "wifi_password": "pw"}
    cases = [("bad-secrets", cfg, '{"wifi_ssid": "test-ssid",', "secrets.json: not valid JSON"),
             ("no-client-id", {k: v for k, v in cfg.items() if k != "client_id"}, good,
              'config.json: "client_id" missing'),
             # refused by the client, not main.py: it wrote the boot counter
             # first (a write at each reset of the loop)
             ("str-port", dict(cfg, port="1883"), good, "port must be an int")]
    for name, config, secrets, said in cases:
        root = tmp_path / name
        lay_out("esp32", None, None, root)
        (root / "config.json").write_text(json.dumps(config))
        (root / "secrets.json").write_text(secrets if isinstance(secrets, str) else json.dumps(secrets))
        files = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
        dev = power_on(root, "esp32", tmp_path, WATCHED)
        out = dev.communicate(timeout=10)[0]
        assert dev.returncode != 0 and said in out, (name, out)
        timers = [x for x in out.splitlines() if x.startswith("TIMER ")]
        assert timers == ["TIMER feeds every 500", "TIMER stop"], (name, out)   # boot.py's, then stopped
        assert "WDT EXPIRED" not in out, (name, out)
        assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == files, name


def test_firmware_runs_without_a_watchdog_where_the_port_has_none(tmp_path):
    """The unix port has no machine.WDT: with wdt_ms set the firmware says
    so once and runs on (boot.py and main.py each)."""
    cfg = json.loads((ROOT / "firmware" / "config.json").read_text())
    cfg.update(broker="127.0.0.1", port=1, timeout_ms=300, wdt_ms=2000)
    rc, out = _boot_with(tmp_path, "nowdt", json.dumps(cfg), {"wifi_ssid": "test-ssid", "wifi_password": "pw"},
                         timeout=3)
    assert "[still running]" in out and "BOOT 1 " in out, out
    note = "WDT: this port has no machine.WDT: running without a watchdog"
    assert out.splitlines().count(note) == 2, out
