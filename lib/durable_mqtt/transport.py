# The only module that touches sockets, TLS and platform errno values.
# Sockets are non-blocking once connected; every wait is bounded by a
# timeout and done with poll, so nothing here can hang.
import micropython
import errno
import select
import socket
import time
from micropython import const

from .errors import MQTTException, PeerClosed, Timeout, ERR_CLOSED, ERR_TIMEOUT

# "Try again" results that mean no data / no room yet, not a failure. The
# numbers differ by platform: Linux EAGAIN 11 / EINPROGRESS 115; lwIP on
# ESP32 EINPROGRESS 119, EALREADY 120, ETIMEDOUT 116 as a non-blocking
# timeout; rp2 and mbedTLS report -110 (timeout) and the mbedTLS WANT_READ /
# WANT_WRITE codes -0x6900 / -0x6880 while a TLS record is incomplete.
_BUSY = (errno.EAGAIN, errno.EINPROGRESS, 118, 119, 120, -110, -26880, -26752)
# The peer or the network dropped the connection (113 is ECONNABORTED in
# the ESP32's newlib numbering).
# (EPIPE is 32 everywhere; MicroPython's errno module does not name it.)
_DROPPED = (errno.ECONNRESET, errno.ECONNABORTED, 32, errno.ENOTCONN,
            errno.EBADF, 104, 113, 128)

_POLLIN = const(1)
_POLLOUT = const(4)
_POLL_HUP_ERR = const(0x18)   # POLLHUP | POLLERR


def describe(exc):
    """An errno as a sentence (docs/troubleshooting.md lists them)."""
    code = exc.args[0] if exc.args else None
    if code in _DROPPED:
        return "connection dropped by the peer or the network (errno %s)" % code
    if code in (errno.ETIMEDOUT, 116):
        return "network timeout (errno %s)" % code
    if code in (errno.ECONNREFUSED, 111):
        return "connection refused: no broker listening on that port (errno %s)" % code
    if code in (errno.EHOSTUNREACH, -2, -202):
        return "host unreachable or name not resolved (errno %s): is the network up?" % code
    return "socket error %r" % (exc,)


class Transport:
    """One TCP (optionally TLS) connection to the broker."""

    def __init__(self):
        self.sock = None
        self._pin = select.poll()
        self._pout = select.poll()

    def open(self, host, port, ssl_ctx, timeout_ms):
        self.close()
        try:
            ai = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
        except OSError as e:
            raise MQTTException(ERR_CLOSED, "cannot resolve %r: %s" % (host, describe(e)))
        s = socket.socket(ai[0], socket.SOCK_STREAM, ai[2])
        try:
            s.settimeout(timeout_ms / 1000)
            s.connect(ai[-1])
            if ssl_ctx is not None:
                # Verification and SNI use the host name the caller gave.
                s = ssl_ctx.wrap_socket(s, server_hostname=host)
            s.setblocking(False)
        except OSError as e:
            s.close()
            if e.args and e.args[0] in (errno.ETIMEDOUT, 116, -110):
                raise Timeout(ERR_TIMEOUT, "connect to %s:%d timed out after %d ms" % (host, port, timeout_ms))
            raise MQTTException(ERR_CLOSED, "connect to %s:%d failed: %s" % (host, port, describe(e)))
        except ValueError as e:      # mbedTLS reports certificate failures as ValueError
            s.close()
            raise MQTTException(ERR_CLOSED, "TLS handshake with %s:%d failed: %s" % (host, port, str(e).strip()))
        self.sock = s
        self._pin.register(s, _POLLIN)
        self._pout.register(s, _POLLOUT)

    def close(self):
        s = self.sock
        if s is not None:
            self.sock = None
            for p in (self._pin, self._pout):
                try:
                    p.unregister(s)
                except (OSError, KeyError, ValueError):
                    pass
            try:
                s.close()
            except OSError:
                pass

    @micropython.native
    def read_into(self, buf, n):  # noalloc
        """Read up to n bytes into buf without waiting; 0 when none are ready.
        Raises PeerClosed at end of stream."""
        try:
            r = self.sock.readinto(buf, n)
        except OSError as e:
            if e.args[0] in _BUSY:
                return 0
            raise PeerClosed(ERR_CLOSED, describe(e))
        if r is None:
            return 0
        if r == 0:
            raise PeerClosed(ERR_CLOSED, "the broker closed the connection")
        return r

    @micropython.native
    def write(self, buf, off, n, timeout_ms):  # noalloc
        """Write buf[off:off+n] completely, waiting for room at most
        timeout_ms. One packet goes out in as few segments as the stack
        allows: never a header and a body in two writes (the peer's delayed
        ACK would cost ~40 ms a packet)."""
        deadline = time.ticks_add(time.ticks_ms(), timeout_ms)
        s = self.sock
        while n:
            try:
                w = s.write(buf, off, n)
            except OSError as e:
                if e.args[0] not in _BUSY:
                    raise PeerClosed(ERR_CLOSED, describe(e))
                w = 0
            if w:
                off += w
                n -= w
                continue
            left = time.ticks_diff(deadline, time.ticks_ms())
            if left <= 0:
                raise Timeout(ERR_TIMEOUT, "write stalled for %d ms: link congested or dead" % timeout_ms)
            for _, ev in self._pout.ipoll(left):
                if ev & _POLL_HUP_ERR:
                    raise PeerClosed(ERR_CLOSED, "connection dropped while writing")

    def wait_readable(self, timeout_ms):  # noalloc
        """True when data (or a close) is ready within timeout_ms."""
        for _, ev in self._pin.ipoll(timeout_ms):
            return True
        return False
