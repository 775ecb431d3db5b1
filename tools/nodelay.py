"""Does TCP_NODELAY on the client's socket matter? Measures, on the unix
port against a private mosquitto, a QoS 0 PUBLISH followed at once by a
PINGREQ, until the PINGRESP: with Nagle's algorithm on, the PINGREQ waits
for the broker's ACK of the PUBLISH, which the broker delays (it has
nothing to answer). The library sets TCP_NODELAY (lib/durable_mqtt/dial.py);
this turns it off again for the "Nagle" row.

    .venv/bin/python tools/nodelay.py [--micropython PATH] [-n 40]
"""
import argparse
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent

DEVICE = r"""
import sys, time
from durable_mqtt import MQTTClient
port, n, nagle = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
c = MQTTClient("nodelay%d" % nagle, "127.0.0.1", port, keepalive=60)
c.connect()
if nagle:
    c.socket().setsockopt(6, 1, 0)       # TCP_NODELAY off again (Linux numbers)
times = []
for i in range(n):
    t0 = time.ticks_us()
    c.publish("nodelay/x", b"x" * 20)    # the broker answers nothing: its ACK is delayed
    c.ping()                             # a second small write right after it
    while c.wait_msg(1000) != 0xD0:
        pass
    times.append(time.ticks_diff(time.ticks_us(), t0))
c.disconnect()
times.sort()
print("RESULT %.2f %.2f" % (times[len(times) // 2] / 1000, times[-1] / 1000))
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--micropython", default=str(ROOT / ".venv" / "bin" / "micropython"))
    ap.add_argument("-n", type=int, default=40)
    a = ap.parse_args()
    port = free_port()
    d = tempfile.mkdtemp()
    conf = os.path.join(d, "m.conf")
    with open(conf, "w") as f:
        f.write("listener %d 127.0.0.1\nallow_anonymous true\n" % port)
    broker = subprocess.Popen(["mosquitto", "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        script = os.path.join(d, "device.py")
        with open(script, "w") as f:
            f.write(DEVICE)
        env = dict(os.environ, MICROPYPATH=str(ROOT / "lib"))
        print("QoS 0 PUBLISH then PINGREQ, until PINGRESP (%d rounds, unix port, loopback mosquitto)" % a.n)
        print("| socket | median ms | worst ms |\n|---|---:|---:|")
        for label, nagle in (("TCP_NODELAY (the library's default)", "0"), ("Nagle's algorithm on", "1")):
            out = subprocess.run([a.micropython, script, str(port), str(a.n), nagle], env=env,
                                 capture_output=True, text=True, timeout=120).stdout
            med, worst = out.split("RESULT")[1].split()
            print("| %s | %s | %s |" % (label, med, worst))
    finally:
        broker.terminate()
        broker.wait()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
