"""Installing durable_mqtt as a user would, and running what was installed:
nothing from lib/ is on the MicroPython path here. Every install command
INSTALL.md gives is one of these (the last test holds the two together).

- package.json / package-core.json / package-mpy.json are what
  tools/gen_package.py makes; one version number everywhere;
- lib/manifest.py, read by MicroPython's own tools/manifestfile.py (vendored
  in tests/vendor), freezes every module and only modules;
- the unix port's own mip installs each unit from the checkout served over
  HTTP, and a client from the install target alone talks to mosquitto;
- `mpremote mip install http://.../package-mpy.json`, the real command line,
  against the unix port behind a PTY;
- `github:<owner>/durable_mqtt[/package-mpy.json][@tag]` resolves to the
  right raw.githubusercontent.com files, through the on-board mip and through
  mpremote's (both offline: the HTTP layer is replaced by one that serves the
  checkout and records URLs); `mpremote mip install package.json` in a
  checkout reads the files from it.
"""
import functools
import http.server
import io
import json
import os
import pathlib
import re
import subprocess
import sys
import threading
import types
import urllib.error

import pytest

from conftest import ROOT
from isolated_mp import run_isolated
from ptyboard import unix_board  # noqa: F401  (a fixture)

sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "tests" / "vendor"))
import build_mpy  # noqa: E402
import gen_package  # noqa: E402
import manifestfile  # noqa: E402

PKG = ROOT / "lib" / "durable_mqtt"
MODULES = sorted(p.name for p in PKG.glob("*.py"))
BYTECODE = build_mpy.bytecode_modules()          # every module but native.py
OWNER = "someone"
RAW = "https://raw.githubusercontent.com/%s/durable_mqtt/" % OWNER
MPREMOTE = str(pathlib.Path(sys.executable).parent / "mpremote")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def http_root():
    """The checkout served over HTTP on 127.0.0.1 (a thread of this process),
    as `python3 -m http.server` in the checkout serves it."""
    handler = functools.partial(_QuietHandler, directory=str(ROOT))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield "http://127.0.0.1:%d" % srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def installed(target):
    return sorted(str(p.relative_to(target)) for p in pathlib.Path(target).rglob("*") if p.is_file())


def mpy_unit_files():
    """What package-mpy.json installs: bytecode .mpy, native.py as source."""
    return sorted("durable_mqtt/" + (m[:-3] + ".mpy" if m in BYTECODE else m) for m in MODULES)


# ---------------------------------------------------------------- package files

def test_package_files_are_up_to_date():
    v = gen_package.version()
    for name, pairs in gen_package.UNITS.items():
        assert (ROOT / name).read_text() == gen_package.render(pairs(), v), \
            "%s is stale: run python3 tools/gen_package.py (make mpy does)" % name
    assert gen_package.problems_with_mpy_set() == []


def test_package_json_lists_every_module():
    pj = json.loads((ROOT / "package.json").read_text())
    assert pj["urls"] == [["durable_mqtt/" + m, "lib/durable_mqtt/" + m] for m in MODULES]
    for dest, src in pj["urls"]:
        assert (ROOT / src).is_file(), src


def test_core_unit_is_package_json_without_the_flash_backends():
    full = json.loads((ROOT / "package.json").read_text())["urls"]
    core = json.loads((ROOT / "package-core.json").read_text())["urls"]
    assert [u for u in full if u not in core] == [
        ["durable_mqtt/dirclear.py", "lib/durable_mqtt/dirclear.py"],
        ["durable_mqtt/dirload.py", "lib/durable_mqtt/dirload.py"],
        ["durable_mqtt/dirstate.py", "lib/durable_mqtt/dirstate.py"],
        ["durable_mqtt/filelog.py", "lib/durable_mqtt/filelog.py"],
        ["durable_mqtt/filestore.py", "lib/durable_mqtt/filestore.py"],
        ["durable_mqtt/ring.py", "lib/durable_mqtt/ring.py"],
        ["durable_mqtt/slotmove.py", "lib/durable_mqtt/slotmove.py"]]


def test_mpy_unit_is_committed_bytecode_and_native_source():
    """package-mpy.json: a bytecode .mpy from mpy/ for every module except
    the one with viper code, which comes as .py (tests/test_mpy.py checks
    the .mpy bytes are current)."""
    urls = json.loads((ROOT / "package-mpy.json").read_text())["urls"]
    assert sorted(u[0] for u in urls) == mpy_unit_files()
    assert [m for m in MODULES if m not in BYTECODE] == ["native.py"]
    for dest, src in urls:
        assert (ROOT / src).is_file(), src
        if src.endswith(".mpy"):
            assert src == "mpy/" + dest and build_mpy.mpy_header(ROOT / src) == (6, 0, None), src
        else:
            assert src == "lib/" + dest


def test_one_version_everywhere():
    """lib/manifest.py is the source; the package files, __version__ (what a
    board reports) and the newest CHANGELOG section agree with it."""
    v = gen_package.manifest_version()
    assert re.fullmatch(r"\d+\.\d+\.\d+", v), v
    for name in gen_package.UNITS:
        assert json.loads((ROOT / name).read_text())["version"] == v, name
    assert gen_package.changelog_versions()[0] == v, "CHANGELOG.md has no [%s] section on top" % v
    assert gen_package.library_version() == v, (
        "lib/durable_mqtt/__init__.py: set __version__ = \"%s\" (lib/manifest.py and CHANGELOG.md say so)" % v)
    stub = (PKG / "__init__.pyi").read_text()
    assert '__version__: str' in stub
    assert gen_package.main(["--check"]) == 0


def _manifest(mode):
    m = manifestfile.ManifestFile(mode, {"MPY_DIR": str(ROOT / "no-micropython"),
                                         "MPY_LIB_DIR": str(ROOT / "no-micropython-lib"),
                                         "PORT_DIR": str(ROOT), "BOARD_DIR": str(ROOT)})
    m.execute(str(ROOT / "lib" / "manifest.py"))
    return m


def test_manifest_freezes_every_module_with_micropythons_tool():
    """What a firmware build does with `include(".../lib/manifest.py")`:
    MicroPython's tools/manifestfile.py in freeze mode takes every module as
    bytecode to freeze (and no stub), with the one version; compile mode (mip
    package builds) agrees."""
    m = _manifest(manifestfile.MODE_FREEZE)
    md = m.metadata()
    assert md.version == gen_package.manifest_version() and md.description and md.license == "MIT"
    files = sorted(m.files(), key=lambda f: f.target_path)
    assert [f.target_path for f in files] == ["durable_mqtt/" + mod for mod in MODULES]
    assert {f.kind for f in files} == {manifestfile.KIND_FREEZE_AS_MPY}
    assert [pathlib.Path(f.full_path) for f in files] == [PKG / mod for mod in MODULES]
    m = _manifest(manifestfile.MODE_COMPILE)
    assert sorted(f.target_path for f in m.files()) == ["durable_mqtt/" + mod for mod in MODULES]
    assert {f.kind for f in m.files()} == {manifestfile.KIND_COMPILE_AS_MPY}


# ---------------------------------------------------------------- install + run

CLIENT = r"""
import sys
import durable_mqtt
from durable_mqtt import MQTTClient, MQTTException
assert durable_mqtt.__file__.startswith(%(target)r), durable_mqtt.__file__
assert not [p for p in sys.path if p.endswith('/lib') and 'durable_mqtt' not in p and p != %(target)r], sys.path
got = []
c = MQTTClient('mip-%(tag)s', '127.0.0.1', %(port)d, keepalive=30%(extra)s)
c.set_callback(lambda t, m, r, q: got.append((bytes(t), bytes(m), q)))
c.connect()
c.subscribe('mip/%(tag)s', 1)
pid = c.publish('mip/%(tag)s', b'installed by mip', qos=1)
assert pid, pid
for _ in range(200):
    if got and not c.pending():
        break
    c.wait_msg(50)
assert got == [(b'mip/%(tag)s', b'installed by mip', 1)], got
%(more)s
c.disconnect()
for name in sorted(sys.modules):
    if name.startswith('durable_mqtt'):
        print('LOADED', name, sys.modules[name].__file__)
print('OK', durable_mqtt.__version__)
"""


def client_code(target, port, tag, extra="", more=""):
    return CLIENT % {"target": str(target), "port": port, "tag": tag, "extra": extra, "more": more}


def loaded(stdout):
    return dict(line.split()[1:] for line in stdout.splitlines() if line.startswith("LOADED "))


def session_run(target, port, tag, tmp_path):
    """A persistent session on a file: the flash backend came with the unit."""
    session = tmp_path / ("%s.dmq" % tag)
    r = run_isolated(client_code(target, port, tag,
                                 extra=", clean_session=False, session_file=%r" % str(session),
                                 more="assert c.stats()['store_checkpoints'] >= 1"),
                     [target], tmp_path, check=True)
    assert "OK " in r.stdout
    assert (tmp_path / ("%s.dmq.d" % tag) / "h").read_bytes()[:4] == b"DMQS"
    return r


def test_mip_install_from_http_then_run_against_mosquitto(broker, http_root, tmp_path):
    target = tmp_path / "lib"
    r = run_isolated("import mip; mip.install(%r, target=%r)" % (http_root + "/package.json", str(target)),
                     [], tmp_path, check=True)
    assert "Done" in r.stdout, r.stdout
    assert installed(target) == ["durable_mqtt/" + m for m in MODULES]
    for m in MODULES:
        assert (target / "durable_mqtt" / m).read_bytes() == (PKG / m).read_bytes(), m
    r = session_run(target, broker.port, "full", tmp_path)
    assert "OK " + gen_package.library_version() in r.stdout


def test_mip_install_core_unit(broker, http_root, tmp_path):
    """The core unit works without a session file (save_session() too) and
    says plainly what is missing when one is asked for."""
    target = tmp_path / "lib"
    run_isolated("import mip; mip.install(%r, target=%r)" % (http_root + "/package-core.json", str(target)),
                 [], tmp_path, check=True)
    for backend in gen_package.FLASH_BACKENDS:
        assert "durable_mqtt/" + backend not in installed(target)
    more = r"""
st = c.save_session()
assert st[:4] == b'DMQS', st
try:
    MQTTClient('x', '127.0.0.1', session_file='s.dmq')
    raise AssertionError('a session file without the flash backends')
except ImportError as e:
    print('ImportError', e)
"""
    r = run_isolated(client_code(target, broker.port, "core", more=more), [target], tmp_path, check=True)
    assert "OK" in r.stdout and "ImportError" in r.stdout


def test_mip_install_mpy_unit_from_http(broker, http_root, tmp_path):
    """package-mpy.json through the unix port's mip: bytecode .mpy files and
    native.py; every module runs from .mpy but native, whose viper CRC is
    compiled at import (crc.py does not fall back to crcpy)."""
    target = tmp_path / "lib"
    run_isolated("import mip; mip.install(%r, target=%r)" % (http_root + "/package-mpy.json", str(target)),
                 [], tmp_path, check=True)
    assert installed(target) == mpy_unit_files()
    for f in mpy_unit_files():
        src = ("mpy/" if f.endswith(".mpy") else "lib/") + f
        assert (target / f).read_bytes() == (ROOT / src).read_bytes(), f
    mods = loaded(session_run(target, broker.port, "mpy", tmp_path).stdout)
    assert mods["durable_mqtt.native"].endswith("/native.py")
    assert "durable_mqtt.crcpy" not in mods
    assert all(f.endswith(".mpy") for name, f in mods.items() if name != "durable_mqtt.native"), mods


def test_mpremote_mip_install_from_http_to_a_board(broker, http_root, tmp_path, unix_board):
    """`mpremote mip install --target ... http://HOST:PORT/package-mpy.json`,
    the command line as typed, writing over the raw REPL to the unix port
    behind a PTY; then the library runs from what it wrote."""
    target = tmp_path / "board" / "lib"
    r = subprocess.run([MPREMOTE, "connect", unix_board, "resume", "mip", "install", "--target", str(target),
                        http_root + "/package-mpy.json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert installed(target) == mpy_unit_files()
    for f in mpy_unit_files():
        src = ("mpy/" if f.endswith(".mpy") else "lib/") + f
        assert (target / f).read_bytes() == (ROOT / src).read_bytes(), f
    r = run_isolated(client_code(target, broker.port, "mpremote"), [target], tmp_path, check=True)
    assert "OK " in r.stdout
    # Before installing the other kind (.py over .mpy): INSTALL.md's clean-up.
    r = subprocess.run([MPREMOTE, "connect", unix_board, "resume", "rm", "-r", ":%s/durable_mqtt" % target],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and installed(target) == [], r.stdout + r.stderr


# A stand-in for the `requests` module that mip imports: serves the
# checkout for raw.githubusercontent.com/OWNER/durable_mqtt/<ref>/ URLs and
# logs every URL asked for. It shadows the frozen requests on MICROPYPATH.
FAKE_REQUESTS = r"""
ROOT = %(root)r
PREFIX = %(prefix)r
log = []

class _Raw:
    def __init__(self, data):
        self.data = data
        self.pos = 0
    def readinto(self, buf):
        n = min(len(buf), len(self.data) - self.pos)
        buf[:n] = self.data[self.pos:self.pos + n]
        self.pos += n
        return n

class Response:
    def __init__(self, code, data):
        self.status_code = code
        self.raw = _Raw(data)
    def json(self):
        import json
        return json.loads(self.raw.data)
    def close(self):
        pass

def get(url, **kw):
    log.append(url)
    if not url.startswith(PREFIX):
        return Response(404, b'')
    path = url[len(PREFIX):]
    path = path[path.index('/') + 1:]          # the branch or tag: the checkout
    try:
        with open(ROOT + '/' + path, 'rb') as f:
            return Response(200, f.read())
    except OSError:
        return Response(404, b'')
"""


def _onboard_github(tmp_path, spec, version=None):
    shim = tmp_path / "shim"
    shim.mkdir(exist_ok=True)
    (shim / "requests.py").write_text(FAKE_REQUESTS % {"root": str(ROOT), "prefix": RAW})
    target = tmp_path / ("lib-%d" % len(list(tmp_path.iterdir())))
    r = run_isolated("import mip, requests\n"
                     "mip.install(%r, target=%r%s)\n"
                     "print('\\n'.join(requests.log))"
                     % (spec, str(target), ", version=%r" % version if version else ""),
                     [shim], tmp_path, check=True)
    return [line for line in r.stdout.splitlines() if line.startswith("https://")], target


def test_onboard_mip_github_url_offline(tmp_path):
    """mip.install('github:OWNER/durable_mqtt') as typed on a board: the
    package file and every module come from raw.githubusercontent.com
    /OWNER/durable_mqtt/HEAD/... (relative URLs need mip with micropython-lib
    PR #975, in firmware since v1.25); version= picks a tag; a path to
    package-mpy.json picks the .mpy unit."""
    urls, target = _onboard_github(tmp_path, "github:%s/durable_mqtt" % OWNER)
    assert urls == [RAW + "HEAD/package.json"] + [RAW + "HEAD/lib/durable_mqtt/" + m for m in MODULES]
    assert installed(target) == ["durable_mqtt/" + m for m in MODULES]
    urls, target = _onboard_github(tmp_path, "github:%s/durable_mqtt/package-mpy.json" % OWNER, "v0.2.0")
    pairs = json.loads((ROOT / "package-mpy.json").read_text())["urls"]
    assert urls == [RAW + "v0.2.0/package-mpy.json"] + [RAW + "v0.2.0/" + src for _, src in pairs]
    assert installed(target) == mpy_unit_files()


class _FakeTransport:
    """What mpremote's mip uses of a transport, writing into a local folder."""

    def __init__(self, root):
        self.root = pathlib.Path(root)

    def _p(self, path):
        return self.root / path.lstrip("/")

    def fs_exists(self, path):
        return self._p(path).exists()

    def fs_mkdir(self, path):
        self._p(path).mkdir()

    def fs_writefile(self, path, data, progress_callback=None):
        self._p(path).write_bytes(data)


class _FakeState:
    """What mpremote's do_mip uses of its session state."""

    def __init__(self, transport):
        self.transport = transport

    def did_action(self):
        pass

    def ensure_raw_repl(self):
        pass


def _mpremote_install(tmp_path, spec):
    """`mpremote mip install SPEC` (SPEC as typed, @version and all) through
    mpremote's own command handler, in process: the board replaced by a
    folder (target /lib, as sys.path gives on a board), urllib by the checkout."""
    from mpremote import mip as mpmip
    asked = []

    def urlopen(url, *a, **kw):
        asked.append(url)
        path = None
        if url.startswith(RAW):
            rest = url[len(RAW):]
            path = ROOT / rest[rest.index("/") + 1:]
        if path is None or not path.is_file():
            raise urllib.error.HTTPError(url, 404, "not found", {}, None)
        return io.BytesIO(path.read_bytes())

    board = tmp_path / ("board-%d" % len(list(tmp_path.iterdir())))
    board.mkdir()
    orig = mpmip.urllib.request.urlopen
    mpmip.urllib.request.urlopen = urlopen
    args = types.SimpleNamespace(command=["install"], packages=[spec], index=None, target="/lib", mpy=None)
    try:
        mpmip.do_mip(_FakeState(_FakeTransport(board)), args)
    finally:
        mpmip.urllib.request.urlopen = orig
    return asked, board


def test_mpremote_mip_github_url_offline(tmp_path, capsys):
    """`mpremote mip install github:OWNER/durable_mqtt[@v0.2.0]` and the .mpy
    unit: mpremote's own installer, urllib answering from the checkout."""
    asked, board = _mpremote_install(tmp_path, "github:%s/durable_mqtt" % OWNER)
    assert asked == [RAW + "HEAD/package.json"] + [RAW + "HEAD/lib/durable_mqtt/" + m for m in MODULES]
    assert installed(board) == ["lib/durable_mqtt/" + m for m in MODULES]
    asked, board = _mpremote_install(tmp_path, "github:%s/durable_mqtt/package-mpy.json@v0.2.0" % OWNER)
    pairs = json.loads((ROOT / "package-mpy.json").read_text())["urls"]
    assert asked == [RAW + "v0.2.0/package-mpy.json"] + [RAW + "v0.2.0/" + src for _, src in pairs]
    assert installed(board) == ["lib/" + f for f in mpy_unit_files()]


def test_mpremote_mip_install_from_a_checkout(tmp_path, monkeypatch, capsys):
    """`mpremote mip install package-mpy.json` run in the checkout: the
    package file and the files it names are read from the disk, no network."""
    monkeypatch.chdir(ROOT)
    asked, board = _mpremote_install(tmp_path, "package-mpy.json")
    assert asked == []
    assert installed(board) == ["lib/" + f for f in mpy_unit_files()]
    for f in mpy_unit_files():
        src = ("mpy/" if f.endswith(".mpy") else "lib/") + f
        assert (board / "lib" / f).read_bytes() == (ROOT / src).read_bytes(), f


# ---------------------------------------------------------------- INSTALL.md

# Each install command INSTALL.md may give, as a pattern, with the test above
# that runs it. <owner>, <host>, <port> and /dev/tty... are the user's.
TESTED = [
    (r"mpremote mip install github:<owner>/durable_mqtt(@v\d+\.\d+\.\d+)?", "test_mpremote_mip_github_url_offline"),
    (r"mpremote mip install github:<owner>/durable_mqtt/package-mpy\.json(@v\d+\.\d+\.\d+)?",
     "test_mpremote_mip_github_url_offline"),
    (r"mpremote mip install package(-mpy|-core)?\.json", "test_mpremote_mip_install_from_a_checkout"),
    (r"mpremote mip install http://<host>:8000/package(-mpy|-core)?\.json",
     "test_mpremote_mip_install_from_http_to_a_board"),
    (r"mpremote rm -r :/lib/durable_mqtt", "test_mpremote_mip_install_from_http_to_a_board"),
    (r'mip\.install\("github:<owner>/durable_mqtt(/package-mpy\.json)?"(, version="v\d+\.\d+\.\d+")?\)',
     "test_onboard_mip_github_url_offline"),
    (r'mip\.install\("http://<host>:8000/package(-mpy|-core)?\.json"\)', "test_mip_install_mpy_unit_from_http"),
    (r"python3 -m http\.server 8000", "test_mip_install_from_http_then_run_against_mosquitto"),
    (r"make deploy PORT=/dev/tty\w+( BOARD=(esp32|rp2040))?( MPY=(xtensawin|armv6m))?"
     r"( DEPLOY_ARGS=--with-secrets)?", "test_deploy.py::test_make_deploy_to_unix_port_then_switch_to_mpy"),
    (r"make deploy DEPLOY_ARGS=--dry-run", "test_deploy.py::test_make_deploy_dry_run_as_typed"),
    (r"make mpy", "test_mpy.py (the build), test_host_targets.py (no broker)"),
    (r'include\("/path/to/durable_mqtt/lib/manifest\.py"\)', "test_manifest_freezes_every_module_with_micropythons_tool"),
    (r"mpremote run tools/mpy_check\.py", "test_mpy_check.py"),
    (r"\.venv/bin/mpremote romfs --no-mpy -o build/(esp32|rp2040)\.romfs build build/mpy/(xtensawin|armv6m)",
     "test_romfs.py::test_install_md_romfs_build_as_typed"),
    (r"git tag -a v\d+\.\d+\.\d+ -m \"durable_mqtt \d+\.\d+\.\d+\"", "test_one_version_everywhere"),
]


def test_install_md_gives_only_tested_commands():
    text = (ROOT / "INSTALL.md").read_text()
    blocks = re.findall(r"```(?:sh|python)?\n(.*?)```", text, re.S)
    commands = [line.split("  #")[0].strip() for b in blocks for line in b.splitlines()
                if re.match(r"\s*((\.venv/bin/)?mpremote |mip\.install|make (deploy|mpy)|include\(|python3 -m http|git tag)",
                            line)]
    assert len(commands) >= 10, commands
    for c in commands:
        assert any(re.fullmatch(p, c) for p, _ in TESTED), "INSTALL.md gives an untested command: " + c
    v = gen_package.manifest_version()
    for c in commands:
        for tag in re.findall(r"v(\d+\.\d+\.\d+)", c):
            assert tag == v, "INSTALL.md names v%s, the version is %s: %s" % (tag, v, c)
    assert os.path.basename(MPREMOTE) == "mpremote"
