"""A private mosquitto on 127.0.0.1 with its own config, log and db: used by
the tests (tests/conftest.py), the simulation (tools/sim.py) and the
benchmark (tools/bench). CPython, stdlib only.

    b = Broker(tmpdir, extra_conf="max_inflight_messages 20\\n").start()
    ... b.port ...
    b.restart(); b.stop(); print(b.log_text())
"""
import pathlib
import shutil
import socket
import subprocess
import time

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


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
    def __init__(self, directory, extra_conf="", persistence=False, port=None, log_types=("all",)):
        self.dir = pathlib.Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.conf = self.dir / "mosquitto.conf"
        self.log = self.dir / "mosquitto.log"
        self.conf.write_text(
            "listener %d 127.0.0.1\n" % self.port
            + "allow_anonymous true\n"
            # As root mosquitto otherwise drops to user 'mosquitto' and cannot
            # write its log or db under a temporary directory.
            + "user root\n"
            + "persistence %s\npersistence_location %s/\n" % ("true" if persistence else "false", self.dir)
            + "log_dest file %s\n" % self.log
            + "".join("log_type %s\n" % t for t in log_types)
            + "connection_messages true\n"
            + "max_queued_messages 100000\n"
            + extra_conf)
        self.proc = None

    def start(self):
        if not shutil.which(MOSQUITTO) and not pathlib.Path(MOSQUITTO).exists():
            raise RuntimeError("mosquitto not found (Debian: apt-get install mosquitto; `make test` installs it)")
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
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
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
