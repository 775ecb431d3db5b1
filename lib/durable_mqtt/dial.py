# Opening the connection to a broker: name lookup, TCP (TLS over it is
# tls.py's), the CONNECT packet, and the errors a user meets there as
# sentences (docs/troubleshooting.md); also the link's buffers and state,
# made at a client's first connect (connection()). Used only while
# connecting (connect.py), and unloaded before the CONNACK comes
# (connack.py: not both in the heap).
import errno
import select
import socket
import time
from micropython import const

from .codec import Box, put_str, put_block, put_u16, put_varint, varint_size, too_large
from .errors import MQTTException, Timeout

_ERR_TIMEOUT = const(-4)
_ERR_CLOSED = const(-5)
_DIALS = const(3)             # dials on a looked-up address before the name is looked up again
_KEPT = const(4)              # brokers whose looked-up address is kept, at least (address())
_CONNECT = const(0x10)
_HDR = const(16)             # link.py's: bytes read for a fixed header
_ACKS = const(64)            # link.py's: bytes of acknowledgements sent in one write


def opening(c, host, port, timeout_ms, clean):
    # Client c's connection to host:port (TCP, then TLS when c.ssl is set:
    # tls.py), and its CONNECT (clean: Clean Session / Clean Start) sent. A
    # generator, as connect.py's: it yields how long it may wait for the
    # socket (negative: writable).
    n = connect(c, clean)            # (first: one too large for buf_size opens no socket)
    k = c.conn
    wait = not c.async_connect
    if wait:
        # A blocking client: address(), which may look the broker's name
        # up (a call nothing interrupts, up to 26 s: firmware/watchdog.py),
        # is a step of its own, a yield (no wait) right before it and one
        # right after, so that what run() does between steps (a watchdog's
        # feed: firmware/main.py) comes right before the lookup and right
        # after it, not a Wi-Fi join and a TCP connect apart. (Not for
        # AsyncClient: its steps await the socket, and there is none yet.)
        yield 0
    addr = address(k.net, host, port, getattr(c, "servers", ()))
    if wait:
        yield 0
    s = start(addr, host, port, timeout_ms, wait)
    if c.async_connect:
        k.net.sock = s
        yield -timeout_ms            # writable: connected (or failed: the write says)
        # Or timeout_ms passed with no answer (a SYN lost, a host down):
        # said now. The CONNECT's write waited for room a timeout_ms more,
        # holding the event loop, and reported "write stalled".
        p = select.poll()
        p.register(s, select.POLLOUT)
        r = p.poll(0)
        if not r:
            raise Timeout(_ERR_TIMEOUT, "connect to %s:%d: no answer in %d ms" % (host, port, timeout_ms))
        if r[0][1] & (select.POLLERR | select.POLLHUP):
            # Failed (refused, unreachable): a failed connect is writable
            # too. The socket's error comes from a read; the CONNECT written
            # instead met EPIPE ("connection dropped (errno 32)").
            try:
                s.recv(1)
            except OSError as e:
                _failed(s, e, host, port, timeout_ms, None)
    if c.ssl is not None:
        from . import tls            # (TLS: a module of its own, which a client without never loads)
        yield from tls.opening(c, s, host, port, timeout_ms, n)
        return
    k.net.opened(s)
    k.send(c.tx, 0, n)


def address(net, host, port, servers=()):
    # host:port's address (getaddrinfo's entry). A reconnect dials the one
    # the last lookup gave: MicroPython's getaddrinfo() blocks, every task
    # of an AsyncClient with it, and for seconds when the Wi-Fi is up and
    # the internet is not (up to 26 s on an ESP32: firmware/watchdog.py).
    # After _DIALS dials on it without a CONNACK (connect.py counts them
    # from 0 again) the name is looked up again: the broker may have
    # moved. A lookup that fails keeps the address for _DIALS more.
    # (net.addr: [host, port, entry, dials], the entry of the last dial;
    # the Transport outlives this module.)
    a = net.addr
    if a is None or a[0] != host or a[1] != port:
        # Another broker: RobustClient's `servers` take turns. Each keeps
        # its own entry (net.addrs, up to _KEPT, or one per broker of
        # `servers` when there are more: brokers), so a turn on one costs
        # the other nothing: a broker on the LAN stays reachable by its
        # kept address while the DNS server, out on the internet, is not.
        # (Searched when net.addr is None too: a failed lookup of a broker
        # never resolved leaves it so, and the next broker's kept entry
        # was skipped, looked up again, and kept twice.)
        a = None
        for e in getattr(net, "addrs", ()):
            if e[0] == host and e[1] == port:
                a = e
        net.addr = a
    if a is not None and a[3] < _DIALS:
        a[3] += 1
        return a[2]
    try:
        addr = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
    except OSError as e:
        if a is not None:
            a[3] = 0
        raise MQTTException(_ERR_CLOSED, "cannot resolve %r (errno %s): is the network up?" % (host, e.args[0]))
    if a is None:
        a = [host, port, addr, 1]
        # (With _KEPT for all, a fifth broker's lookup dropped the first
        # one's entry, and the turns went round dropping each in turn: with
        # the DNS gone, no broker came up again.)
        net.addrs = [a] + getattr(net, "addrs", [])[:max(_KEPT, len(servers)) - 1]
    else:
        a[2] = addr
        a[3] = 1
    net.addr = a
    return addr


def start(addr, host, port, timeout_ms, wait):
    # A TCP socket connected to addr (address()), or (wait=False) connecting:
    # the caller waits for it to become writable, then calls secure().
    s = socket.socket(addr[0], socket.SOCK_STREAM, addr[2])
    try:
        # Every write is a whole packet: Nagle's algorithm would only hold a
        # small one back until the broker ACKs the previous, and a broker
        # with nothing to answer delays its ACK (40 ms on Linux): a QoS 0
        # PUBLISH then a PINGREQ took 45 ms instead of 0.1 (tools/nodelay.py).
        # The unix port has no names for it: Linux and BSD use 6 and 1.
        s.setsockopt(getattr(socket, "IPPROTO_TCP", 6), getattr(socket, "TCP_NODELAY", 1), 1)
    except (OSError, TypeError):
        pass                          # a port without the option
    try:
        if wait:
            s.settimeout(timeout_ms / 1000)
        else:
            s.setblocking(False)
        s.connect(addr[-1])
    except OSError as e:
        if wait or e.args[0] not in (errno.EINPROGRESS, 119, 115):
            _failed(s, e, host, port, timeout_ms, None)
    return s


def _failed(s, e, host, port, timeout_ms, tls):
    # s failed with e: closed, and the error raised as a sentence
    # (reasons.py: only a failed connect loads those).
    from .reasons import failed
    failed(s, e, host, port, timeout_ms, tls)


def connect(c, clean):
    # CONNECT at tx[0]; returns its length.
    props = b""
    if c.v5:
        d = {"receive_maximum": c.receive_max, "maximum_packet_size": c.buf_size}
        if c.engine.expiry:
            d["session_expiry"] = c.engine.expiry
        props = c.props.encode(d)
    return connect_packet(c.tx, c.engine.cid, c.v5, c.keepalive, clean, c.user, c.pswd, c.will, props)


def connect_packet(buf, cid, v5, keepalive, clean, user, pswd, will, props):
    # CONNECT at buf[0]; returns its length. Strings are bytes; will is
    # (topic, msg, retain, qos, props block) or None; props: the CONNECT
    # properties, encoded (MQTT 5).
    rl = 12 + len(cid) + (varint_size(len(props)) + len(props) if v5 else 0)
    flags = 0x02 if clean else 0
    if will:
        flags |= 0x04 | (will[3] << 3) | (0x20 if will[2] else 0)
        rl += 4 + len(will[0]) + len(will[1]) + (varint_size(len(will[4])) + len(will[4]) if v5 else 0)
    if user is not None:
        flags |= 0x80
        rl += 2 + len(user)
    if pswd is not None:
        flags |= 0x40
        rl += 2 + len(pswd)
    if 1 + varint_size(rl) + rl > len(buf):
        too_large("CONNECT (client id, user name, password and will: a larger buf_size holds it)",
                  1 + varint_size(rl) + rl, len(buf), 0)
    buf[0] = _CONNECT
    off = put_str(buf, put_varint(buf, 1, rl), b"MQTT")
    buf[off] = 5 if v5 else 4
    buf[off + 1] = flags
    off = put_u16(buf, off + 2, keepalive)
    if v5:
        off = put_block(buf, off, props)
    off = put_str(buf, off, cid)
    if will:
        if v5:
            off = put_block(buf, off, will[4])
        off = put_str(buf, put_str(buf, off, will[0]), will[1])
    if user is not None:
        off = put_str(buf, off, user)
    if pswd is not None:
        off = put_str(buf, off, pswd)
    return off


def connection(self, c):
    # Link self of client c (link.py), made at its first connect: the
    # receive buffers and the link's state. The attributes in this order:
    # the instance dict of the per-packet path (link.py's class defaults
    # keep it as small).
    self.c = c
    self.engine = c.engine      # the client's, fixed for its lifetime: one lookup, not two
    self.tx = c.tx
    self.counts = c.counts
    from .transport import Transport    # (loaded with link.py)
    self.net = Transport()
    self.rx = bytearray(c.buf_size)
    self.box = Box()
    self.hdr = bytearray(_HDR)
    self.acks = bytearray(_ACKS)
    self.hdrv = [memoryview(self.hdr)[i:] for i in range(5)]   # where a read into hdr starts
    self.views = {}
    self.connected = self.in_connect = self.due = False
    self.connack = self.failure = None   # failure: kept for the next call (client.need_link)
    self.result = -1                     # the code of the SUBACK / UNSUBACK awaited
    self.ka_ms = c.keepalive * 1000
    self.last_tx = self.last_rx = 0
    self.oversize = 0
    if c.async_connect:
        self.gentle = True
    self.drop()
