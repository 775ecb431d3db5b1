"""The reason this project exists: a device killed (SIGKILL, as a power cut
would stop it) at random points of a QoS 1 or QoS 2 stream and restarted
from its session file loses nothing, and at QoS 2 duplicates nothing.

Publishing side: a real subscriber (mosquitto_sub) sees every message; at
QoS 2 no message that the library accepted arrives twice. Receiving side:
a publisher sends a numbered stream while the device keeps dying; the
broker queues for the offline session and the device gets every message
after its restarts, at QoS 2 once (the only exception being a kill between
delivery and the flash write, see docs/sessions.md; counted below).

The session lives on the host file system, on the raw ring in a NOR flash
image, or in a LittleFS file system on a NOR flash image mounted as an ESP32
(32-byte programs) or an RP2040 (256-byte programs) mounts it; the image is
a file, so it survives each kill as a board's flash survives a power cut."""
import random
import subprocess

import pytest

from conftest import DRAINED, MP_HELPERS, boot_with_kills, log_size, spawn_mp, wait_drained, wait_subscribed

DEVICE = MP_HELPERS / "device_stream.py"
N = 300


def session_arg(tmp_path, backend):
    """Where the device keeps its session: a host file, the raw ring on a NOR
    image, or LittleFS on a NOR image (lfs32: ESP32's 32-byte programs,
    lfs256: RP2040's 256)."""
    if backend == "file":
        return tmp_path / "session.bin"
    if backend == "ring":
        return "ring:%s" % (tmp_path / "flash.img")
    return "lfs:%s:%s" % (backend[3:], tmp_path / "flash.img")


def subscriber(port, ver, topic, out_path):
    # Into a file, which wait_drained() polls (mosquitto_sub flushes each
    # message).
    with open(out_path, "w") as out:
        return subprocess.Popen(["mosquitto_sub", "-p", str(port), "-q", "2", "-t", topic,
                                 "-V", "mqttv5" if ver == 5 else "mqttv311"], stdout=out)


@pytest.mark.parametrize("ver,qos,backend", [(4, 1, "file"), (4, 2, "file"), (5, 1, "file"), (5, 2, "file"),
                                             (4, 2, "ring"), (5, 1, "ring"),
                                             (4, 2, "lfs32"), (5, 1, "lfs32"), (5, 2, "lfs256"), (4, 1, "lfs256")])
def test_publisher_killed_at_random_loses_nothing(broker, tmp_path, ver, qos, backend):
    rng = random.Random(1000 * ver + qos)
    topic = "stream/%d/%d" % (ver, qos)
    since = log_size(broker)
    sub_out = tmp_path / "sub.out"
    sub = subscriber(broker.port, ver, topic, sub_out)
    wait_subscribed(broker, since, topic, 0.3)
    session = session_arg(tmp_path, backend)
    progress = tmp_path / "progress"
    # Each boot publishes from the last recorded progress under its own tag.
    kills, _ = boot_with_kills(lambda boot: spawn_mp(DEVICE, "pub", broker.port, ver, qos, N, session, progress, boot),
                               rng, 15, budget_s=90)
    wait_drained(broker.port, ver, qos, topic, sub_out, 0.5)
    sub.terminate()
    sub.wait(5)
    received = [x for x in sub_out.read_text().split() if x != DRAINED]
    numbers = [int(x.split(":")[0]) for x in received]
    missing = set(range(N)) - set(numbers)
    assert kills >= 10, "the stream ended before enough kills (%d)" % kills
    assert not missing, "lost %d messages: %s" % (len(missing), sorted(missing)[:20])
    if qos == 2:
        # A payload is (number, boot): the same one twice would be a library duplicate.
        dups = [x for x in set(received) if received.count(x) > 1]
        assert not dups, "QoS 2 delivered twice: %s" % dups[:10]
    print("kills=%d received=%d app-repeats=%d" % (kills, len(received), len(received) - N))


@pytest.mark.parametrize("ver,qos,backend", [(4, 1, "file"), (4, 2, "file"), (5, 1, "file"), (5, 2, "file"),
                                             (5, 2, "ring"), (5, 2, "lfs32"), (4, 2, "lfs256")])
def test_receiver_killed_at_random_gets_everything(broker, tmp_path, ver, qos, backend):
    rng = random.Random(7 * ver + qos)
    session = session_arg(tmp_path, backend)
    delivered = tmp_path / "delivered"
    # First boot subscribes; the session (and the subscription) then persists.
    first = spawn_mp(DEVICE, "sub", broker.port, ver, qos, 0, session, delivered, 0)
    out, _ = first.communicate(timeout=30)
    assert "DONE" in out, out
    topic = "stream/%d/%d" % (ver, qos)
    pub = subprocess.Popen(["sh", "-c", "for i in $(seq 0 %d); do echo $i:x; sleep 0.008; done | "
                            "mosquitto_pub -p %d -q %d -t %s -l -V %s"
                            % (N - 1, broker.port, qos, topic, "mqttv5" if ver == 5 else "mqttv311")])
    kills, out = boot_with_kills(lambda boot: spawn_mp(DEVICE, "sub", broker.port, ver, qos, N, session, delivered, 1),
                                 rng, 12, pause=(0.05, 0.35))
    pub.wait(30)
    lines = delivered.read_text().split()
    numbers = [int(x.split(":")[0]) for x in lines]
    missing = set(range(N)) - set(numbers)
    assert not missing, "lost %d: %s" % (len(missing), sorted(missing)[:20])
    if qos == 2:
        dups = len(numbers) - len(set(numbers))
        # Only a kill between delivery and the flash write can repeat one.
        assert dups <= kills, (dups, kills)
        print("kills=%d duplicates=%d (window allows up to %d)" % (kills, dups, kills))
    assert kills >= 8
