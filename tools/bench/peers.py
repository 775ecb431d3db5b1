"""Peer MQTT clients for `make bench`, installed from PyPI at run time into a
temporary folder (never committed, never cached in the repository).

Every distribution is pinned by version and sha256. Two ways in:

* wheels (chumicro-*): `pip download --no-deps` into the temporary folder;
* the micropython-* sdists, which were published for upip, MicroPython's
  original PyPI client: two of the three hold no setup.py, so pip cannot
  prepare them ("neither 'setup.py' nor 'pyproject.toml' found"). Like upip,
  we take the file PyPI's simple index (PEP 503, the API pip itself uses)
  lists for that version, check its sha256 and unpack its .py files.

PyPI holds older releases than the projects' repositories: umqtt.simple
1.3.4 (2017; micropython-lib has moved on since), umqtt.robust 1.0 (2016),
and `micropython-mqtt` 0.7b4 (2020), which is Thorsten von Eicken's
`mqtt_async`, an asyncio client derived from Peter Hinch's mqtt_as; Peter
Hinch's own mqtt_as is not on PyPI.
"""
import hashlib
import re
import shutil
import subprocess
import sys
import tarfile
import urllib.request
import zipfile
from pathlib import Path

INDEX = "https://pypi.org/simple/"

# name shown in the table -> what to install and run
PEERS = {
    "umqtt.simple": {
        "workload": "umqtt_wl.py",
        "module": "umqtt.simple",
        "dists": [
            ("micropython-umqtt.simple", "1.3.4", "micropython-umqtt.simple-1.3.4.tar.gz",
             "b6a2520239e3992c63a7de9370ee9b3d9d27819a90359c521f1c0f7ccab8d12f", ["umqtt/simple.py"]),
        ],
    },
    "umqtt.robust": {
        "workload": "umqtt_wl.py",
        "module": "umqtt.robust",
        "dists": [
            ("micropython-umqtt.simple", "1.3.4", "micropython-umqtt.simple-1.3.4.tar.gz",
             "b6a2520239e3992c63a7de9370ee9b3d9d27819a90359c521f1c0f7ccab8d12f", ["umqtt/simple.py"]),
            # its sdist also lists umqtt/simple.py, as a symlink: not taken
            ("micropython-umqtt.robust", "1.0", "micropython-umqtt.robust-1.0.tar.gz",
             "22a1b8c8e1128281efb13b3020927d07e33c5b747869da2cd77d37983a9ea002", ["umqtt/robust.py"]),
        ],
    },
    "micropython-mqtt": {
        "workload": "mqtt_async_wl.py",
        "module": "mqtt_async",
        "shims": True,
        "dists": [
            ("micropython-mqtt", "0.7b4", "micropython-mqtt-0.7b4.tar.gz",
             "254a0af13d37cb92372538b6ded44c5f26e2e77c0d8b9b4e2d73c4f26f43e042", ["mqtt_async.py"]),
        ],
    },
    "chumicro-mqtt": {
        "workload": "chumicro_wl.py",
        "module": "chumicro_mqtt",
        "dists": [
            ("chumicro-mqtt", "0.30.3", "chumicro_mqtt-0.30.3-py3-none-any.whl",
             "9752586bb10e29389e5f5c443594ce0b5f2f1343ba9aefb3fc9909e33d234482", ["chumicro_mqtt/"]),
            ("chumicro-sockets", "0.21.3", "chumicro_sockets-0.21.3-py3-none-any.whl",
             "ade59b6045db5bdb03b7992748a8b1111efdda482c165d09bd6e7eb25b34f3b6", ["chumicro_sockets/"]),
            ("chumicro-timing", "0.8.4", "chumicro_timing-0.8.4-py3-none-any.whl",
             "f637c0331a30659a77d98828cf3fb9608402204059934e73c916b0f82b33703c", ["chumicro_timing/"]),
            ("chumicro-config", "0.7.7", "chumicro_config-0.7.7-py3-none-any.whl",
             "869ee0d7947b4a0f584c6e02dcff82b891b0c96a00cc112aa82e344029b9a3f1", ["chumicro_config/"]),
            ("chumicro-msgpack", "0.2.7", "chumicro_msgpack-0.2.7-py3-none-any.whl",
             "da2daa6110ffcc5bfb1f21918d285c85e69335f3a2ea093b424dd307d5e7f790", ["chumicro_msgpack/"]),
        ],
    },
}


def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _normalise(project):
    return re.sub(r"[-_.]+", "-", project).lower()


def _fetch_from_index(project, filename, dest):
    """The file `filename` as PyPI's simple index links it (what upip did)."""
    url = INDEX + _normalise(project) + "/"
    with urllib.request.urlopen(url, timeout=60) as r:
        page = r.read().decode()
    m = re.search(r'href="([^"#]+/%s)(#[^"]*)?"' % re.escape(filename), page)
    if not m:
        raise RuntimeError("%s is not listed in %s" % (filename, url))
    link = m.group(1)
    if link.startswith("/"):
        link = "https://pypi.org" + link
    target = dest / filename
    with urllib.request.urlopen(link, timeout=120) as r, open(target, "wb") as f:
        shutil.copyfileobj(r, f)
    return target


def _download(pip, project, version, filename, sha256, dest):
    target = dest / filename
    if not target.exists():
        if filename.endswith(".whl"):
            r = subprocess.run([str(pip), "download", "--no-deps", "--ignore-requires-python",
                                "--disable-pip-version-check", "-q", "-d", str(dest),
                                "%s==%s" % (project, version)],
                               capture_output=True, text=True)
            if r.returncode != 0 or not target.exists():
                raise RuntimeError("pip download %s==%s failed:\n%s" % (project, version, r.stdout + r.stderr))
        else:
            _fetch_from_index(project, filename, dest)
    got = _sha256(target)
    if got != sha256:
        raise RuntimeError("%s: sha256 %s, pinned %s" % (filename, got, sha256))
    return target


def _members(archive):
    """(path inside the distribution, bytes) of its regular .py files."""
    if archive.name.endswith(".whl"):
        with zipfile.ZipFile(archive) as z:
            for n in z.namelist():
                if n.endswith(".py"):
                    yield n, z.read(n)
    else:
        with tarfile.open(archive) as t:
            for m in t.getmembers():
                if m.isfile() and m.name.endswith(".py"):
                    # drop the sdist's top folder (name-version/)
                    yield m.name.split("/", 1)[1], t.extractfile(m).read()


def install(tmp, pip):
    """Download and unpack every peer under tmp/src/<name>/. Returns
    {name: {"src": Path, "versions": [(project, version, how)]}}."""
    dl = Path(tmp) / "dl"
    dl.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, spec in PEERS.items():
        src = Path(tmp) / "src" / name
        src.mkdir(parents=True, exist_ok=True)
        versions = []
        for project, version, filename, sha, take in spec["dists"]:
            archive = _download(pip, project, version, filename, sha, dl)
            versions.append((project, version, "pip download" if filename.endswith(".whl") else "PyPI simple index"))
            n = 0
            for path, data in _members(archive):
                if any(path == t or (t.endswith("/") and path.startswith(t)) for t in take):
                    f = src / path
                    f.parent.mkdir(parents=True, exist_ok=True)
                    f.write_bytes(data)
                    n += 1
            if not n:
                raise RuntimeError("%s: none of %s found" % (filename, take))
        out[name] = {"src": src, "versions": versions}
    return out


if __name__ == "__main__":     # manual check: python tools/bench/peers.py /tmp/x
    import tempfile
    d = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp())
    pip = Path(sys.executable).parent / "pip"
    for k, v in install(d, pip).items():
        print(k, v["versions"], sorted(str(p.relative_to(v["src"])) for p in v["src"].rglob("*.py")))
