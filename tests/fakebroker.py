"""A scripted fake MQTT broker for tests that need a broker to misbehave or
answer what mosquitto cannot be made to answer (CONNACK properties, protocol
errors, exact replies). Raw packet builders beside it."""
import socket
import threading
import time


# ---------------------------------------------------------------- packets


def listener(serve):
    """A TCP listener on a free loopback port that speaks no MQTT at all:
    serve(conn) runs for each connection, in a thread. Close the returned
    socket to stop it."""
    s = socket.create_server(("127.0.0.1", 0))

    def run():
        while True:
            try:
                c, _ = s.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(c,), daemon=True).start()
    threading.Thread(target=run, daemon=True).start()
    return s


def vbi(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def u16(n):
    return bytes((n >> 8, n & 0xFF))


def pkt(first, body=b""):
    return bytes((first,)) + vbi(len(body)) + body


def next_packet(buf):
    """The first whole packet in buf, read as a broker reads a stream:
    (first byte, body, the bytes after it), or None until one is whole."""
    rl, i = 0, 1
    while i < len(buf) and i < 5:
        rl |= (buf[i] & 0x7F) << 7 * (i - 1)
        i += 1
        if not buf[i - 1] & 0x80:
            break
    else:
        return None
    if len(buf) < i + rl:
        return None
    return buf[0], buf[i:i + rl], buf[i + rl:]


def packets(conn, chunk, pause=0.0):
    """The packets a broker reads from conn, `chunk` bytes at a time and
    `pause` s apart (a slow link): (first byte, body) each, until EOF."""
    buf = b""
    while True:
        d = conn.recv(chunk)
        if not d:
            return
        buf += d
        while True:
            p = next_packet(buf)
            if p is None:
                break
            first, body, buf = p
            yield first, body
        time.sleep(pause)


def props_block(props):
    return vbi(len(props)) + props


def connack(v, code=0, sp=0, props=b""):
    return pkt(0x20, bytes((sp, code)) + (props_block(props) if v == 5 else b""))


def publish(v, topic, payload, qos=0, pid=0, props=b"", first=None):
    body = u16(len(topic)) + topic + (u16(pid) if qos else b"")
    if v == 5:
        body += props_block(props)
    return pkt(0x30 | (qos << 1) if first is None else first, body + payload)


def publish_of_size(v, total, qos=0, pid=1, topic=b"big"):
    """(PUBLISH whose whole packet, fixed header included, is `total`
    bytes, its payload length)."""
    fixed = 2 + len(topic) + (2 if qos else 0) + (1 if v == 5 else 0)
    for hdr in (2, 3, 4):
        payload = total - hdr - fixed
        p = publish(v, topic, b"p" * payload, qos, pid)
        if len(p) == total:
            return p, payload
    raise AssertionError("no PUBLISH of %d bytes" % total)


# ---------------------------------------------------------------- fake broker


def stalling_broker(v, stall_s, then, io_timeout=20):
    """A broker that answers CONNECT, reads nothing for stall_s seconds, then
    runs then(conn). Its receive buffer is small, so the client's socket
    fills quickly. Returns (port, thread)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    s.settimeout(10)

    def serve():
        conn, _ = s.accept()
        conn.settimeout(io_timeout)
        try:
            if FakeBroker._read(FakeBroker, conn)[0] != 0x10:
                return
            conn.sendall(connack(v))
            time.sleep(stall_s)
            then(conn)
        except OSError as x:
            t.error = x         # for a test's message: why the broker closed
        finally:
            conn.close()
            s.close()
    t = threading.Thread(target=serve, daemon=True)
    t.error = None
    t.start()
    return s.getsockname()[1], t


class FakeBroker:
    """Accepts one TCP connection per script in `sessions`. For each: read
    the CONNECT, then run the steps:
      ("send", bytes)        write raw bytes
      ("recv",)              read one packet from the client (recorded)
      ("reply", f)           write f(received_packets_of_this_connection)
      ("sleep", seconds)
      ("close",)             close at once
    then record whatever the client still sends until it closes or sends
    DISCONNECT (then the broker closes, as mosquitto does)."""

    def __init__(self, *sessions, io_timeout=10):
        self.sessions = sessions
        self.io_timeout = io_timeout
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.done = False        # set once the client process has ended
        self.port = self.listener.getsockname()[1]
        self.conns = []          # per connection: list of (first_byte, body)
        self.accepted = []       # per connection: time.monotonic() of its accept
        self.errors = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @staticmethod
    def _exact(conn, n):
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def _read(self, conn):
        first = self._exact(conn, 1)
        if first is None:
            return None
        rl, shift = 0, 0
        while True:
            b = self._exact(conn, 1)
            if b is None:
                return None
            rl |= (b[0] & 0x7F) << shift
            shift += 7
            if not b[0] & 0x80:
                break
        body = self._exact(conn, rl) if rl else b""
        if body is None:
            return None
        return first[0], body

    def _run(self):
        for steps in self.sessions:
            deadline = time.monotonic() + self.io_timeout
            conn = None
            while conn is None:
                try:
                    conn, _ = self.listener.accept()
                except socket.timeout:
                    if self.done or time.monotonic() > deadline:
                        return            # the client never came (back)
                except OSError as e:
                    self.errors.append("accept: %r" % e)
                    return
            got = []
            self.conns.append(got)
            self.accepted.append(time.monotonic())
            conn.settimeout(self.io_timeout)
            try:
                p = self._read(conn)
                if p is None or p[0] != 0x10:
                    self.errors.append("first packet was not CONNECT: %r" % (p,))
                    conn.close()
                    continue
                got.append(p)
                closed = False
                for step in steps:
                    op = step[0]
                    if op == "send":
                        conn.sendall(step[1])
                    elif op == "reply":
                        conn.sendall(step[1](got))
                    elif op == "recv":
                        p = self._read(conn)
                        if p is None:
                            self.errors.append("client closed before an expected packet")
                            break
                        got.append(p)
                    elif op == "sleep":
                        time.sleep(step[1])
                    elif op == "close":
                        closed = True
                        break
                if not closed:
                    while True:
                        p = self._read(conn)
                        if p is None:
                            break
                        got.append(p)
                        if p[0] == 0xE0:
                            break        # a DISCONNECT: the broker closes, as mosquitto does
            except OSError:
                pass
            finally:
                conn.close()

    def join(self):
        self.done = True
        self.thread.join(self.io_timeout + 5)
        self.listener.close()

    def connect_flags(self, i=0):
        return self.conns[i][0][1][7]
