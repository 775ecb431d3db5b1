"""A stand-in MQTT 3.1.1 server for the client-bound receive benchmark.

With mosquitto between the publisher and the client, the receive rate on a
2-CPU machine is the broker's as much as the client's: every client's QoS 1
rate came out between 23,000 and 34,000 messages/s, and the spread of one
client's runs was wider than the gaps between clients (docs/benchmarks.md).
This server answers CONNECT, SUBSCRIBE and PINGREQ, and on the driver's word
(burst()) writes a run of pre-encoded PUBLISH packets to the client in one
sendall(), reading the client's PUBACKs in large pieces on a thread of its
own. It never waits for an acknowledgement (no in-flight window), so the
time a client takes is its own: reading, parsing, calling back, and
writing its PUBACKs.

Only what the benchmark's workloads send is understood: one client at a
time, keepalive pings, no QoS 2 from the client.
"""
import socket
import struct
import threading

from broker import _varint


class ReplayServer:
    def __init__(self):
        self.ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(4)
        self.port = self.ls.getsockname()[1]
        self.conn = None                  # the client connected now
        self.subscribed = threading.Event()
        self.acks = 0                     # PUBACKs read on the current connection
        self.pid = 0
        self.errors = []
        # One writer at a time: a burst's sendall() goes out in parts, and
        # a PINGRESP written between two of them would cut a PUBLISH.
        self.out = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _send(self, s, data):
        with self.out:
            s.sendall(data)

    def _accept(self):
        while True:
            try:
                s, _ = self.ls.accept()
            except OSError:
                return                    # closed
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s):
        # One connection: answers what a client asks, counts PUBACKs.
        buf = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return
                buf += chunk
                off = 0
                while True:
                    got = _packet(buf, off)
                    if got is None:
                        buf = buf[off:]
                        break
                    first, body, off = got
                    kind = first & 0xF0
                    if kind == 0x10:                      # CONNECT
                        self.acks = 0
                        self.subscribed.clear()
                        self.conn = s
                        self._send(s, b"\x20\x02\x00\x00")
                    elif kind == 0x80:                    # SUBSCRIBE: grant what each filter asks
                        granted, i = bytearray(), 2
                        while i + 2 <= len(body):
                            n = struct.unpack("!H", body[i:i + 2])[0]
                            granted.append(body[i + 2 + n] & 3)
                            i += 3 + n
                        ack = body[:2] + bytes(granted)
                        self._send(s, b"\x90" + _varint(len(ack)) + ack)
                        self.subscribed.set()
                    elif kind == 0xA0:                    # UNSUBSCRIBE
                        self._send(s, b"\xb0\x02" + body[:2])
                    elif kind == 0xC0:                    # PINGREQ
                        self._send(s, b"\xd0\x00")
                    elif kind == 0x40:                    # PUBACK
                        self.acks += 1
                    elif kind == 0xE0:                    # DISCONNECT
                        return
                    elif kind == 0x30:                    # a PUBLISH of the client's: acknowledged
                        qos = (first >> 1) & 3
                        if qos:
                            t = struct.unpack("!H", body[:2])[0]
                            pid = body[2 + t:4 + t]
                            self._send(s, (b"\x40\x02" if qos == 1 else b"\x50\x02") + pid)
        except OSError as x:
            self.errors.append(repr(x))
        finally:
            if self.conn is s:
                self.conn = None
            s.close()

    def burst(self, topic, payload, count, qos=1, pause_s=0.0):
        """Write `count` PUBLISH packets at `qos` (0 or 1) to the connected
        client in one sendall(); returns once they are written (the
        workload counts what it received)."""
        s = self.conn
        if s is None:
            raise RuntimeError("replay: no client connected")
        t = struct.pack("!H", len(topic)) + topic
        parts = []
        for _ in range(count):
            if qos:
                self.pid = self.pid % 65535 + 1
                body = t + struct.pack("!H", self.pid) + payload
            else:
                body = t + payload
            parts.append(bytes([0x30 | qos << 1]) + _varint(len(body)) + body)
        self._send(s, b"".join(parts))

    def close(self):
        self.ls.close()


def _packet(buf, off):
    # (first byte, body, the offset after it) of the whole packet at
    # buf[off:], or None. (By offset: a burst's PUBACKs are 4 bytes each,
    # and slicing off the rest for each one copied the buffer every time.)
    rl, i = 0, off + 1
    while True:
        if i >= len(buf) or i > off + 4:
            return None
        rl |= (buf[i] & 0x7F) << 7 * (i - off - 1)
        i += 1
        if not buf[i - 1] & 0x80:
            break
    if len(buf) < i + rl:
        return None
    return buf[off], buf[i:i + rl], i + rl
