"""The example firmware's commands (firmware/main.py, docs/firmware.md) on the
simulated board (boards/unix: flash as a LittleFS image) against mosquitto,
as `make sim` runs it. Found by a review (stop 43):

* a command answered while the outbox was full (an outage just over) raised
  QueueFull out of its callback: poll() raised it and main() ended, the
  telemetry with it;
* interval= took effect only at the old interval's deadline: a day set by
  mistake kept the device silent for a day;
* a retained command came again at every boot (its subscribe): a retained
  "stop" stopped every boot;
* a long command's echo made the reply larger than buf_size (PacketTooLarge)."""
import json
import os
import subprocess
import sys
import time

from conftest import MICROPYTHON, ROOT

sys.path.insert(0, str(ROOT / "tools"))
from faultproxy import FaultProxy  # noqa: E402

ENV = dict(os.environ, MICROPYPATH=":".join(str(ROOT / p) for p in ("lib", "boards/unix", "boards", "firmware"))
           + ":.frozen")


class Device:
    """firmware/main.py on a simulated board; watch(topic) records what the
    broker gets there (mosquitto_sub, one line per message: arrival time and
    payload)."""

    def __init__(self, tmp_path, port, base, interval_ms=100, broker_port=None):
        self.tmp, self.base = tmp_path, base
        self.port = broker_port or port
        (tmp_path / "config.json").write_text(json.dumps({
            "client_id": base.replace("/", "-"), "broker": "127.0.0.1", "port": port, "version": 4,
            "keepalive": 10, "topic_base": base, "interval_ms": interval_ms, "timeout_ms": 1000,
            "sim": {"image": str(tmp_path / "flash.img"), "blocks": 64}}))
        (tmp_path / "nosecrets.json").write_text("{}")
        self.subs = []
        self.proc = None

    def watch(self, leaf):
        out = self.tmp / (leaf + ".txt")
        self.subs.append(subprocess.Popen(["mosquitto_sub", "-p", str(self.port), "-q", "1", "-t",
                                           self.base + "/" + leaf, "-F", "%U %p"], stdout=open(out, "w")))
        time.sleep(0.3)
        return out

    def boot(self):
        self.proc = subprocess.Popen([MICROPYTHON, str(ROOT / "firmware" / "main.py"), "config.json",
                                      "nosecrets.json"], cwd=self.tmp, env=ENV, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        return self

    def command(self, text, retain=False):
        subprocess.run(["mosquitto_pub", "-p", str(self.port), "-q", "1", "-t", self.base + "/cmd", "-m", text]
                       + (["-r"] if retain else []), check=True, timeout=10)

    def stop(self, timeout=30):
        """Sends "stop" and returns the device's output (it must exit 0)."""
        self.command("stop")
        try:
            out = self.proc.communicate(timeout=timeout)[0]
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out = self.proc.communicate(timeout=5)[0] + "\n[still running]"
        for s in self.subs:
            s.terminate()
            s.wait(5)
        assert self.proc.returncode == 0, out
        return out


def lines_after(path, t):
    return [line for line in path.read_text().splitlines() if float(line.split()[0]) > t]


def test_a_shorter_interval_takes_effect_at_once(broker, tmp_path):
    dev = Device(tmp_path, broker.port, "fwc/int")
    tele = dev.watch("tele")
    dev.boot()
    time.sleep(1.5)
    dev.command("interval=10000")
    time.sleep(1)
    dev.command("interval=100")
    t = time.time()
    time.sleep(2)
    n = len(lines_after(tele, t))
    out = dev.stop()
    assert "CMD interval=10000 ok" in out and "CMD interval=100 ok" in out, out
    assert n >= 8, (n, out)            # ~20 at 100 ms; before: 0 until the 10 s deadline


def test_a_retained_command_is_ignored_and_a_long_ones_reply_fits(broker, tmp_path):
    dev = Device(tmp_path, broker.port, "fwc/ret")
    dev.command("stop", retain=True)      # left on the broker by mistake
    try:
        reply = dev.watch("reply")
        dev.boot()
        time.sleep(1.5)
        assert dev.proc.poll() is None, dev.proc.communicate(timeout=5)[0]    # before: stopped at once
        dev.command("interval=" + "0" * 900 + "200")
        time.sleep(0.5)
        out = dev.stop()
    finally:
        dev.command("", retain=True)      # (clears the retained message)
    assert "CMD retained, ignored: b'stop'" in out, out
    assert "PacketTooLarge" not in out and "CMD interval=000" in out, out
    assert "interval=000" in reply.read_text(), reply.read_text()


def test_a_command_answered_while_the_outbox_is_full_keeps_the_device_running(broker, tmp_path):
    # An outage long enough to fill the outbox (40 messages at 20 ms), a
    # command queued at the broker meanwhile: it comes right after the
    # reconnect, while the outbox is still full.
    with FaultProxy(upstream=("127.0.0.1", broker.port)) as p:
        dev = Device(tmp_path, p.port, "fwc/full", interval_ms=20, broker_port=broker.port)
        tele = dev.watch("tele")
        dev.boot()
        time.sleep(1.5)
        p.blackhole()
        p.drop_all()
        time.sleep(2.5)
        dev.command("ping")
        p.resume()
        time.sleep(4)
        assert dev.proc.poll() is None, dev.proc.communicate(timeout=5)[0]    # before: QueueFull ended main()
        t = time.time()
        time.sleep(1)
        out = dev.stop()
    assert "REFUSED" in out and "CMD ping ok" in out, out
    assert lines_after(tele, t), out      # telemetry goes on
