"""Installing durable_mqtt with mip, as a user would, and running what was
installed: nothing from lib/ is on the MicroPython path here.

- package.json / package-core.json are what tools/gen_package.py makes, and
  every version number in the project agrees;
- lib/manifest.py freezes every module;
- the unix port's own mip installs from the checkout served over HTTP, and a
  client from the install target alone talks to mosquitto;
- `github:OWNER/durable_mqtt` resolves to the right raw.githubusercontent.com
  files, through the on-board mip and through mpremote's (both offline: the
  HTTP layer is replaced by one that serves the checkout and records URLs).
"""
import functools
import http.server
import io
import json
import pathlib
import re
import sys
import threading
import urllib.error

import pytest

from conftest import ROOT
from isolated_mp import run_isolated

sys.path.insert(0, str(ROOT / "tools"))
import gen_package  # noqa: E402

PKG = ROOT / "lib" / "durable_mqtt"
MODULES = sorted(p.name for p in PKG.glob("*.py"))
OWNER = "someone"
RAW = "https://raw.githubusercontent.com/%s/durable_mqtt/" % OWNER


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def http_root():
    """The checkout served over HTTP on 127.0.0.1 (a thread of this process)."""
    handler = functools.partial(_QuietHandler, directory=str(ROOT))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield "http://127.0.0.1:%d" % srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def installed(target):
    return sorted(str(p.relative_to(target)) for p in pathlib.Path(target).rglob("*") if p.is_file())


# ---------------------------------------------------------------- package files

def test_package_json_lists_every_module_and_is_up_to_date():
    assert gen_package.main(["--check"]) == 0, "run: python3 tools/gen_package.py"
    pj = json.loads((ROOT / "package.json").read_text())
    assert pj["urls"] == [["durable_mqtt/" + m, "lib/durable_mqtt/" + m] for m in MODULES]
    for dest, src in pj["urls"]:
        assert (ROOT / src).is_file(), src


def test_core_unit_is_package_json_without_the_flash_backends():
    full = json.loads((ROOT / "package.json").read_text())["urls"]
    core = json.loads((ROOT / "package-core.json").read_text())["urls"]
    assert [u for u in full if u not in core] == [
        ["durable_mqtt/filestore.py", "lib/durable_mqtt/filestore.py"],
        ["durable_mqtt/ring.py", "lib/durable_mqtt/ring.py"]]


def test_one_version_everywhere():
    v = re.search(r'^__version__ = "([^"]+)"', (PKG / "__init__.py").read_text(), re.M).group(1)
    assert json.loads((ROOT / "package.json").read_text())["version"] == v
    assert json.loads((ROOT / "package-core.json").read_text())["version"] == v
    assert gen_package.manifest_version() == v
    assert re.search(r"^## \[?%s\]?" % re.escape(v), (ROOT / "CHANGELOG.md").read_text(), re.M), \
        "CHANGELOG.md has no section for %s" % v
    stub = (PKG / "__init__.pyi").read_text()
    assert '__version__: str' in stub


def test_manifest_freezes_every_module():
    """Evaluate lib/manifest.py the way MicroPython's manifestfile.py does:
    exec with the manifest functions, paths relative to the manifest's
    directory, package() taking every .py file under base_path/package."""
    calls = {"metadata": [], "files": []}
    mdir = ROOT / "lib"

    def metadata(**kw):
        calls["metadata"].append(kw)

    def package(package_path, files=None, base_path=".", opt=None):
        base = (mdir / base_path).resolve()
        found = files or [str(p.relative_to(base / package_path))
                          for p in (base / package_path).rglob("*.py")]
        calls["files"] += sorted("%s/%s" % (package_path, f) for f in found)

    def module(module_path, base_path=".", opt=None):
        calls["files"].append(module_path)

    g = {"metadata": metadata, "package": package, "module": module,
         "include": None, "require": None, "options": None}
    exec(compile((mdir / "manifest.py").read_text(), "manifest.py", "exec"), g)
    assert len(calls["metadata"]) == 1
    md = calls["metadata"][0]
    assert md["version"] == gen_package.library_version() and md.get("description")
    assert sorted(calls["files"]) == ["durable_mqtt/" + m for m in MODULES]


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
print('OK', durable_mqtt.__version__)
"""


def client_code(target, port, tag, extra="", more=""):
    return CLIENT % {"target": str(target), "port": port, "tag": tag, "extra": extra, "more": more}


def test_mip_install_from_http_then_run_against_mosquitto(broker, http_root, tmp_path):
    target = tmp_path / "lib"
    r = run_isolated("import mip; mip.install(%r, target=%r)" % (http_root + "/package.json", str(target)),
                     [], tmp_path, check=True)
    assert "Done" in r.stdout, r.stdout
    assert installed(target) == ["durable_mqtt/" + m for m in MODULES]
    for m in MODULES:
        assert (target / "durable_mqtt" / m).read_bytes() == (PKG / m).read_bytes(), m
    # A persistent session on a file: the FileStore backend came with it.
    session = tmp_path / "s.dmq"
    r = run_isolated(client_code(target, broker.port, "full",
                                 extra=", clean_session=False, session_file=%r" % str(session),
                                 more="assert c.stats()['store_checkpoints'] >= 1"),
                     [target], tmp_path, check=True)
    assert "OK " + gen_package.library_version() in r.stdout
    assert session.read_bytes()[:4] == b"DMQS"


def test_mip_install_core_unit(broker, http_root, tmp_path):
    """The core unit works without a session file (save_session() too) and
    says plainly what is missing when one is asked for."""
    target = tmp_path / "lib"
    run_isolated("import mip; mip.install(%r, target=%r)" % (http_root + "/package-core.json", str(target)),
                 [], tmp_path, check=True)
    assert "durable_mqtt/ring.py" not in installed(target)
    assert "durable_mqtt/filestore.py" not in installed(target)
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


# A stand-in for the `requests` module that mip imports: serves the
# checkout for raw.githubusercontent.com/OWNER/durable_mqtt/HEAD/ URLs and
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
    try:
        with open(ROOT + '/' + url[len(PREFIX):], 'rb') as f:
            return Response(200, f.read())
    except OSError:
        return Response(404, b'')
"""


def test_onboard_mip_github_url_offline(tmp_path):
    """mip.install('github:OWNER/durable_mqtt') as typed on a board: the
    package file and every module come from raw.githubusercontent.com
    /OWNER/durable_mqtt/HEAD/... (relative URLs need mip with micropython-lib
    PR #975, in firmware since v1.25)."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "requests.py").write_text(FAKE_REQUESTS % {"root": str(ROOT), "prefix": RAW + "HEAD/"})
    target = tmp_path / "lib"
    r = run_isolated("import mip, requests\n"
                     "mip.install('github:%s/durable_mqtt', target=%r)\n"
                     "print('\\n'.join(requests.log))" % (OWNER, str(target)), [shim], tmp_path, check=True)
    urls = [line for line in r.stdout.splitlines() if line.startswith("https://")]
    assert urls == [RAW + "HEAD/package.json"] + [RAW + "HEAD/lib/durable_mqtt/" + m for m in MODULES]
    assert installed(target) == ["durable_mqtt/" + m for m in MODULES]
    # A tag or branch: mip.install('github:OWNER/durable_mqtt', version='v0.1.0')
    r = run_isolated("import mip, requests\n"
                     "try:\n mip.install('github:%s/durable_mqtt', target=%r, version='v0.1.0')\n"
                     "except Exception as e: print('failed', e)\n"
                     "print(requests.log[0])" % (OWNER, str(tmp_path / "lib2")), [shim], tmp_path)
    assert RAW + "v0.1.0/package.json" in r.stdout


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


def test_mpremote_mip_github_url_offline(tmp_path, monkeypatch, capsys):
    """`mpremote mip install github:OWNER/durable_mqtt`: mpremote's own
    installer, with urllib answering from the checkout."""
    from mpremote import mip as mpmip
    asked = []

    def urlopen(url, *a, **kw):
        asked.append(url)
        prefix = RAW + "HEAD/"
        path = ROOT / url[len(prefix):] if url.startswith(prefix) else None
        if path is None or not path.is_file():
            raise urllib.error.HTTPError(url, 404, "not found", {}, None)
        return io.BytesIO(path.read_bytes())

    monkeypatch.setattr(mpmip.urllib.request, "urlopen", urlopen)
    board = tmp_path / "board"
    board.mkdir()
    mpmip._install_package(_FakeTransport(board), "github:%s/durable_mqtt" % OWNER,
                           mpmip._PACKAGE_INDEX, "/lib", None, True)
    assert asked == [RAW + "HEAD/package.json"] + [RAW + "HEAD/lib/durable_mqtt/" + m for m in MODULES]
    assert installed(board) == ["lib/durable_mqtt/" + m for m in MODULES]
