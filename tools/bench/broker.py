"""A private mosquitto for the benchmark, and the CPython publisher that
feeds the receive benchmarks.

The publisher is a few lines of raw MQTT 3.1.1 over a socket (no client
library): it builds a whole burst of QoS 1 (or 2) PUBLISH packets in memory, sends
it with one sendall() and then reads the PUBACKs. mosquitto takes the burst
at once and hands it to the subscriber as fast as the subscriber reads and
acknowledges, so the receive rate measured in the workload is the client's
(and the broker's), not the publisher's. The delivery QoS is the lower of the
publisher's and the subscription's.
"""
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from testbroker import MOSQUITTO, Broker as _Broker  # noqa: E402


def mosquitto_version():
    try:
        r = subprocess.run([MOSQUITTO, "-h"], capture_output=True, text=True, timeout=5)
        first = (r.stdout or r.stderr).splitlines()[0]
        return first.replace("mosquitto version", "").strip()
    except (OSError, IndexError, subprocess.SubprocessError):
        return "unknown"


class Broker(_Broker):
    """tools/testbroker.py's broker, tuned for measuring clients."""

    def __init__(self, directory):
        super().__init__(directory, log_types=("error", "warning"), extra_conf=(
            # no Nagle on the broker's side: the receive benchmarks measure the
            # client, not 40 ms stalls between the broker's small writes and
            # the receiving host's delayed ACKs (client-side Nagle stays: it
            # is the client's own doing)
            "set_tcp_nodelay true\n"))

    def start(self):
        super().start()
        pin(self.proc.pid, BROKER_CPU)
        return self


# With two CPUs or more, the broker runs on one and every measured client on
# another (pin()). Left to the scheduler, the two were sometimes put on one
# CPU and sometimes not: a client's QoS 1 publish rate came out near 27,000/s
# in some runs and near 40,000/s in others (measured for durable_mqtt and
# chumicro-mqtt alike, 20,000 messages a run), more than any difference
# between the clients.
BROKER_CPU, CLIENT_CPU = 0, 1


def pinning():
    """True when pin() takes effect here (Linux, two CPUs or more)."""
    return hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2


class CpuWatch:
    """How much of the two pinned CPUs went to other work while a workload
    ran: the busy time of BROKER_CPU and CLIENT_CPU (/proc/stat, steal
    included) less the broker's, the workload's and this driver's own CPU
    time. Only the broker and the client are meant to run there; other work
    there is measured instead of the client (with another program busy on
    the broker's CPU, a windowed client's QoS 1 rate fell to half, the
    broker answering late). Linux only: elsewhere other_ms() is None."""

    HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def __init__(self, broker_pid):
        self.pid = broker_pid
        self.t0 = time.monotonic()
        self.s0 = self._snap()

    def _snap(self):
        import resource
        try:
            busy = 0
            with open("/proc/stat") as f:
                for line in f:
                    p = line.split()
                    if p[0] in ("cpu%d" % BROKER_CPU, "cpu%d" % CLIENT_CPU):
                        v = [int(x) for x in p[1:9]]
                        busy += v[0] + v[1] + v[2] + v[5] + v[6] + v[7]   # user nice system irq softirq steal
            with open("/proc/%d/stat" % self.pid) as f:
                b = f.read().rsplit(")", 1)[1].split()
            ours = (int(b[11]) + int(b[12])) / self.HZ
        except (OSError, IndexError, ValueError):
            return None
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        ours += me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
        return busy / self.HZ, ours

    def other_ms(self):
        """(ms of other work on the two CPUs, the run's wall time in ms), or None."""
        s1 = self._snap()
        if self.s0 is None or s1 is None:
            return None
        return (max(0.0, (s1[0] - self.s0[0]) - (s1[1] - self.s0[1])) * 1000,
                (time.monotonic() - self.t0) * 1000)


def pin(pid, cpu):
    if pinning():
        try:
            os.sched_setaffinity(pid, {cpu})
        except OSError:
            pass          # the process has ended already


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(b):
    return struct.pack("!H", len(b)) + b


def _recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("broker closed the publisher's connection")
        buf += chunk
    return bytes(buf)


_QOS2_CHUNK = 16


class Publisher:
    """Raw MQTT 3.1.1 publisher (QoS 1 or 2) on its own connection."""

    def __init__(self, port, client_id=b"bench-publisher"):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        body = _str(b"MQTT") + bytes([4, 0x02]) + struct.pack("!H", 0) + _str(client_id)
        self.s.sendall(b"\x10" + _varint(len(body)) + body)
        ack = _recv_exact(self.s, 4)
        if ack[0] != 0x20 or ack[3] != 0:
            raise RuntimeError("publisher CONNECT refused: %r" % ack)
        self.pid = 0
        self.rest = b""

    def burst(self, topic, payload, count, qos=1, pause_s=0.0):
        """Publish `count` messages at QoS 0, 1 or 2 in one write; return once
        all are acknowledged by the broker (PUBACK; for QoS 2 PUBREC, our
        PUBREL, PUBCOMP)."""
        if qos == 2 and count > _QOS2_CHUNK:
            # mosquitto 2.0 takes at most max_inflight_messages (20) unreleased
            # QoS 2 messages from a 3.1.1 client at once and silently drops
            # the others' deliveries: a long burst goes in chunks.
            # pause_s between chunks lets a slow receiver keep up: mosquitto
            # counts a QoS 2 message in flight only until its PUBREC.
            while count > 0:
                self.burst(topic, payload, min(count, _QOS2_CHUNK), 2)
                count -= _QOS2_CHUNK
                if count > 0 and pause_s:
                    time.sleep(pause_s)
            return
        t = _str(topic)
        parts = []
        for _ in range(count):
            body = t + payload
            if qos:
                self.pid = self.pid % 65535 + 1
                body = t + struct.pack("!H", self.pid) + payload
            parts.append(bytes([0x30 | qos << 1]) + _varint(len(body)) + body)
        self.s.sendall(b"".join(parts))
        if not qos:                       # nothing to wait for: a ping marks the end
            self.s.sendall(b"\xc0\x00")
            if _recv_exact(self.s, 2)[0] != 0xD0:
                raise RuntimeError("publisher expected PINGRESP")
            return
        # The acknowledgements read in large pieces. Read with two recv()
        # calls each, 10,000 of them kept this driver busy through a
        # client's whole receive run, on a CPU the broker or the client
        # needed (the driver is not pinned): durable_mqtt's QoS 1 receive
        # runs of one bench came out at 45,779, 28,172, 26,955, 44,692 and
        # 28,772/s.
        left = count
        buf = self.rest
        while left:
            chunk = self.s.recv(65536)
            if not chunk:
                raise ConnectionError("broker closed the publisher's connection")
            buf += chunk
            off = 0
            rel = []
            while left and len(buf) - off >= 2 and len(buf) - off >= 2 + buf[off + 1]:
                kind, n = buf[off], buf[off + 1]     # (acknowledgements: Remaining Length < 128)
                body = buf[off + 2:off + 2 + n]
                off += 2 + n
                if qos == 2 and kind == 0x50:        # PUBREC: release it
                    rel.append(b"\x62\x02" + body[:2])
                    continue
                if kind != (0x70 if qos == 2 else 0x40):
                    raise RuntimeError("publisher expected %s, got 0x%02x" % ("PUBCOMP" if qos == 2 else "PUBACK", kind))
                left -= 1
            if rel:
                self.s.sendall(b"".join(rel))
            buf = buf[off:]
        self.rest = buf                   # (nothing, unless the broker sent more)

    def close(self):
        try:
            self.s.sendall(b"\xe0\x00")
        except OSError:
            pass
        self.s.close()
