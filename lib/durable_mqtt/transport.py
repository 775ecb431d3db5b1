# The connection's byte stream: non-blocking reads and bounded writes on a
# socket, and the platform errno values they meet. Opening it (DNS, TCP,
# TLS) is dial.py's and tls.py's, which run only while connecting. Nothing
# here can hang: every wait is bounded and done with poll.
import errno
import select
import time
from micropython import const

from .errors import PeerClosed, Timeout, said

_ERR_TIMEOUT = const(-4)
_ERR_CLOSED = const(-5)
_POLL_HUP_ERR = const(0x18)   # POLLHUP | POLLERR
# "Try again": no data or no room yet, not a failure. Linux EAGAIN 11,
# EINPROGRESS 115; lwIP (ESP32, newlib numbers) EINPROGRESS 119, EALREADY
# 120; rp2 and mbedTLS -110 (timeout), and the mbedTLS WANT_READ /
# WANT_WRITE codes -0x6900 / -0x6880 while a TLS record is partial. (Not
# 118: on an ESP32 that is EHOSTUNREACH, lwIP's send() once Wi-Fi is gone.)
BUSY = (errno.EAGAIN, errno.EINPROGRESS, 119, 120, -110, -26880, -26752)


def _closed(e):
    # Any other errno on an open connection: the peer or the network dropped
    # it (ECONNRESET 104, EPIPE 32, ECONNABORTED 113 / ENOTCONN 128 on an
    # ESP32; docs/troubleshooting.md).
    return PeerClosed(_ERR_CLOSED, said((20, e.args[0])))  # connection dropped (errno %s)


class Transport:
    # One TCP (optionally TLS) connection; `sock` is set by dial.py.

    addr = None                 # the broker's address, dial.address()'s (and addrs: one per broker)

    def __init__(self):
        self.sock = self.buf = None
        self.off = self.n = 0       # _io_in() and _io_out() take their arguments here
        # ticks_ms when the socket last took bytes after it had no room: the
        # broker's TCP acknowledged what went before (the link moves).
        # link.Link.keepalive() counts a PINGRESP late from here, and
        # aio.AsyncClient sets it too (its writes wait for room themselves).
        self.moved = 0
        self._pin = select.poll()
        self._pout = select.poll()
        # A poll object makes the tuple its ipoll() results come in at its
        # first ipoll() call: here, not in the first wait() or room() of a
        # connection, which may run under heap_lock (tests/test_noalloc.py
        # failed 3 runs in 8 when the CONNACK and SUBACK were there at the
        # first read, so that the first wait() came in the locked call).
        self._pin.ipoll(0)
        self._pout.ipoll(0)

    def opened(self, s):
        # Take the connected socket s (dial.py): non-blocking from now on.
        s.setblocking(False)
        self.sock = s
        self._pin.register(s, select.POLLIN)
        self._pout.register(s, select.POLLOUT)

    def close(self):
        s = self.sock
        if s is not None:
            self.sock = self.buf = None
            for p in (self._pin, self._pout):
                try:
                    p.unregister(s)
                except (OSError, KeyError, ValueError):
                    pass
            try:
                s.close()
            except OSError:
                pass

    def read_into(self, buf, n):  # noalloc
        # Up to n bytes into buf without waiting; 0 when none are ready.
        # Raises PeerClosed at the end of the stream.
        if self.sock is None:
            raise PeerClosed(_ERR_CLOSED, said(21))  # the connection is closed
        self.buf = buf
        self.n = n
        r = _io_in(self)
        if r is None:
            return 0
        if r > 0:
            return r
        if r:                           # readinto raised
            return self._read_error(buf, n)
        raise PeerClosed(_ERR_CLOSED, "the broker closed the connection")   # (inline: every disconnect() meets it)

    def _read_error(self, buf, n):
        # readinto raised: once more, with the handler that sees the error.
        # A BUSY code comes again (or the bytes do); a broken connection
        # fails again, or (Linux, which reports a reset once) ends the
        # stream.
        try:
            r = self.sock.readinto(buf, n)
        except OSError as e:
            if e.args[0] in BUSY:
                return 0
            raise _closed(e)
        if r is None:
            return 0
        if not r:
            raise PeerClosed(_ERR_CLOSED, said(23))  # connection dropped (errno unknown)
        return r

    def write(self, buf, off, n, timeout_ms):  # noalloc
        # buf[off:off+n] completely, waiting for room at most timeout_ms at a
        # time: a write that moves is not stalled (a packet larger than the
        # send room, on a slow link, takes as long as the link needs). A
        # packet goes out in one write where the stack allows: a header and a
        # body in two would cost the peer's delayed ACK.
        if self.sock is None:           # closed meanwhile (a callback's disconnect(), a failure)
            raise PeerClosed(_ERR_CLOSED, said(21))  # the connection is closed
        self.buf = buf
        self.off = off
        self.n = n
        w = _io_out(self)
        if w != n:                      # part of it, no room, or an error
            self._stalled(timeout_ms, w)

    def _stalled(self, timeout_ms, w):
        # The rest of write(): w bytes went (None: no room; -1: the write
        # raised, and is made again here, with the handler that sees the
        # error: a broken connection fails again, a BUSY code waits for room).
        buf = self.buf
        off = self.off
        n = self.n
        if w is not None and w > 0:
            off += w
            n -= w
        deadline = None                 # set by a write that finds no room
        s = self.sock
        while n:
            try:
                w = s.write(buf, off, n)
            except OSError as e:
                if e.args[0] not in BUSY:
                    raise _closed(e)
                w = 0
            if w:
                off += w
                n -= w
                if deadline is not None:
                    self.moved = time.ticks_ms()
                deadline = None         # it moved: a stall starts again from here
                continue
            if deadline is None:
                deadline = time.ticks_add(time.ticks_ms(), timeout_ms)
            if not self._room(deadline, timeout_ms):
                raise Timeout(_ERR_TIMEOUT, said((24, timeout_ms)))  # write stalled %d ms: link congested or dead

    def _room(self, deadline, timeout_ms):  # noalloc
        left = time.ticks_diff(deadline, time.ticks_ms())
        for _, ev in self._pout.ipoll(max(0, left)):
            if ev & _POLL_HUP_ERR:
                raise PeerClosed(_ERR_CLOSED, said(25))  # connection dropped while writing
        return left > 0

    def room(self):  # noalloc
        # Does the socket take bytes now? (AsyncClient writes only then.) A
        # dropped connection answers True: the write that follows reports it.
        for _ in self._pout.ipoll(0):
            return True
        return False

    def wait(self, timeout_ms):  # noalloc
        # Until the socket is readable, at most timeout_ms (-1: no limit).
        for _, ev in self._pin.ipoll(timeout_ms):
            return True
        return False


# The socket calls of read_into() and write() on their own, each with a
# handler that does not name the error: 10 words of frame, on the C stack. A
# handler costs 9 words, 13 with "as e" (a heap frame, a call per packet);
# the arguments wait in the Transport, which leaves room for them. -1: the
# call raised (the caller makes it again where the error can be seen).


def _io_in(t):  # noalloc
    try:
        return t.sock.readinto(t.buf, t.n)
    except OSError:
        return -1


def _io_out(t):  # noalloc
    try:
        return t.sock.write(t.buf, t.off, t.n)
    except OSError:
        return -1
