# The only module that touches sockets, TLS and platform errno values.
# Sockets are non-blocking once connected; every wait is bounded and done
# with poll, so nothing here can hang. docs/troubleshooting.md explains each
# error a user sees.
import errno
import select
import socket
import time
from micropython import const

from .errors import MQTTException, PeerClosed, Timeout, ERR_CLOSED, ERR_TIMEOUT

# "Try again": no data or no room yet, not a failure. Linux EAGAIN 11,
# EINPROGRESS 115; lwIP (ESP32) EINPROGRESS 119, EALREADY 120, ETIMEDOUT 116
# from a non-blocking call; rp2 and mbedTLS -110 (timeout), and the mbedTLS
# WANT_READ / WANT_WRITE codes -0x6900 / -0x6880 while a TLS record is partial.
_BUSY = (errno.EAGAIN, errno.EINPROGRESS, 118, 119, 120, -110, -26880, -26752)
# The peer or the network dropped the connection (EPIPE 32; 113 and 128 are
# ECONNABORTED and ENOTCONN in the ESP32's numbering).
_DROPPED = (errno.ECONNRESET, errno.ECONNABORTED, 32, errno.ENOTCONN, errno.EBADF, 104, 113, 128)
_TIMEOUTS = (errno.ETIMEDOUT, 116, -110)
_CERT_REQUIRED = const(2)     # ssl.CERT_REQUIRED (MBEDTLS_SSL_VERIFY_REQUIRED)

_POLLIN = const(1)
_POLLOUT = const(4)
_POLL_HUP_ERR = const(0x18)   # POLLHUP | POLLERR


def describe(exc):
    """An errno as a sentence."""
    code = exc.args[0] if exc.args else None
    if code in _DROPPED:
        return "connection dropped (errno %s)" % code
    if code in _TIMEOUTS:
        return "network timeout (errno %s)" % code
    if code in (errno.ECONNREFUSED, 111):
        return "connection refused: no broker on that port (errno %s)" % code
    if code in (errno.EHOSTUNREACH, -2, -202):
        return "host unreachable or name not resolved (errno %s)" % code
    return "socket error %r" % (exc,)


class Transport:
    """One TCP (optionally TLS) connection to the broker."""

    def __init__(self):
        self.sock = None
        self._pin = select.poll()
        self._pout = select.poll()

    def open(self, host, port, timeout_ms, wait=True):
        """TCP connect. wait=False starts it and returns at once: the caller
        waits for the socket to become writable, then calls secure()."""
        self.close()
        try:
            ai = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
        except OSError as e:
            raise MQTTException(ERR_CLOSED, "cannot resolve %r: %s" % (host, describe(e)))
        s = socket.socket(ai[0], socket.SOCK_STREAM, ai[2])
        self.sock = s
        try:
            if wait:
                s.settimeout(timeout_ms / 1000)
            else:
                s.setblocking(False)
            s.connect(ai[-1])
        except OSError as e:
            if wait or e.args[0] not in _BUSY:
                self._failed(e, host, port, timeout_ms)

    def secure(self, host, port, ctx, verify, timeout_ms):
        """Finish the connect: TLS when ctx is given (a blocking handshake,
        bounded by timeout_ms), then non-blocking."""
        s = self.sock
        try:
            if ctx is not None:
                # MicroPython's ssl.SSLContext starts with CERT_NONE; the
                # broker is always verified unless the application opted out.
                if verify and getattr(ctx, "verify_mode", _CERT_REQUIRED) != _CERT_REQUIRED:
                    ctx.verify_mode = _CERT_REQUIRED
                s.settimeout(timeout_ms / 1000)
                s = self.sock = ctx.wrap_socket(s, server_hostname=host)
            s.setblocking(False)
        except (OSError, ValueError) as e:
            self._failed(e, host, port, timeout_ms, ctx)
        self._pin.register(s, _POLLIN)
        self._pout.register(s, _POLLOUT)

    def _failed(self, e, host, port, timeout_ms, tls=None):
        self.close()
        if isinstance(e, OSError) and e.args and e.args[0] in _TIMEOUTS:
            raise Timeout(ERR_TIMEOUT, "connect to %s:%d: no answer in %d ms" % (host, port, timeout_ms))
        if tls is not None:
            # mbedTLS reports a certificate it cannot verify as ValueError or
            # OSError(-0x2700); with no CA loaded, every broker fails so.
            raise MQTTException(ERR_CLOSED, "TLS handshake with %s:%d failed (%s): is the broker's CA "
                                "loaded in the ssl context?" % (host, port, str(e).strip() or repr(e)))
        raise MQTTException(ERR_CLOSED, "connect to %s:%d failed: %s" % (host, port, describe(e)))

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

    def read_into(self, buf, n):  # noalloc
        """Read up to n bytes into buf without waiting; 0 when none are
        ready. Raises PeerClosed at the end of the stream."""
        try:
            r = self.sock.readinto(buf, n)
        except OSError as e:
            if e.args[0] in _BUSY:
                return 0
            raise PeerClosed(ERR_CLOSED, describe(e))
        if r is None:
            return 0
        if not r:
            raise PeerClosed(ERR_CLOSED, "the broker closed the connection")
        return r

    def write(self, buf, off, n, timeout_ms):  # noalloc
        """Write buf[off:off+n] completely, waiting for room at most
        timeout_ms. A packet goes out in one write where the stack allows:
        a header and a body in two would cost the peer's delayed ACK."""
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
                raise Timeout(ERR_TIMEOUT, "write stalled %d ms: link congested or dead" % timeout_ms)
            for _, ev in self._pout.ipoll(left):
                if ev & _POLL_HUP_ERR:
                    raise PeerClosed(ERR_CLOSED, "connection dropped while writing")

    def wait(self, timeout_ms, out=False):  # noalloc
        """Until the socket is readable (or writable, out=True), at most
        timeout_ms; True when it is."""
        for _, ev in (self._pout if out else self._pin).ipoll(timeout_ms):
            return True
        return False
