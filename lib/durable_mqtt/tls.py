# TLS over a connect's TCP socket (dial.py): the context's wrap, and the
# handshake driven on the non-blocking socket inside the CONNECT's first
# write. A module of its own: a client made without ssl never loads it, and
# dial.py is in the heap at the peak of a connect. Unloaded with it
# (client.unload).
import select
import time
from micropython import const

from .errors import Timeout
from .transport import BUSY

_ERR_TIMEOUT = const(-4)
_CERT_REQUIRED = const(2)     # ssl.CERT_REQUIRED (MBEDTLS_SSL_VERIFY_REQUIRED)


def opening(c, s, host, port, timeout_ms, n):
    # Client c's TCP socket s to host:port made TLS (c.ssl), and the
    # n-byte CONNECT at c.tx sent: a generator, as dial.opening(), whose
    # last steps these are.
    k = c.conn
    s, shake = secure(s, host, port, c.ssl, c.tls_verify, timeout_ms)
    k.net.opened(s)
    if not shake:
        k.send(c.tx, 0, n)
        return
    # The TLS handshake on the non-blocking socket: mbedTLS shakes hands
    # inside the CONNECT's first write, which says "try again" until it is
    # done; MicroPython's TLS socket polls the direction the handshake
    # needs. timeout_ms bounds the whole, however slowly the broker answers
    # (the CONNACK has a timeout_ms of its own). AsyncClient awaits the
    # socket (the yield); the blocking clients poll it here.
    deadline = time.ticks_add(time.ticks_ms(), timeout_ms)
    p = None
    if not c.async_connect:
        p = select.poll()
        p.register(s, select.POLLOUT)
    view = memoryview(c.tx)
    off = 0
    while off < n:
        try:
            w = s.write(view[off:n])
        except (OSError, ValueError) as e:
            if e.args[0] not in BUSY:     # (ValueError: a certificate refused)
                from .reasons import failed
                failed(s, e, host, port, timeout_ms, c.ssl)
            w = 0
        if w:
            off += w
            continue
        left = time.ticks_diff(deadline, time.ticks_ms())
        if left <= 0:
            s.close()
            raise Timeout(_ERR_TIMEOUT, "TLS handshake with %s:%d: not done in %d ms" % (host, port, timeout_ms))
        if p:
            p.poll(left)
        else:
            yield -left
    k.last_tx = time.ticks_ms()


def secure(s, host, port, context, verify, timeout_ms):
    # TLS over s with the context; returns the socket to use and whether
    # its handshake is still to come (opening() drives it then, not
    # blocking). A context whose wrap_socket() takes no
    # do_handshake_on_connect (an application's own wrapper, tls_verify=False),
    # or takes it and shakes hands all the same, does so here, blocking:
    # timeout_ms bounds each of its reads (a blocking handshake on a
    # non-blocking socket would spin for ever against a silent server).
    try:
        # MicroPython's ssl.SSLContext starts with verify_mode CERT_NONE: the
        # broker is verified unless the application opted out (tls_verify).
        if verify and context.verify_mode != _CERT_REQUIRED:
            context.verify_mode = _CERT_REQUIRED
        s.settimeout(timeout_ms / 1000)
        try:
            return context.wrap_socket(s, server_hostname=host, do_handshake_on_connect=False), True
        except TypeError:
            return context.wrap_socket(s, server_hostname=host), False
    except (OSError, ValueError) as e:
        from .reasons import failed
        failed(s, e, host, port, timeout_ms, context)
    except BaseException:
        s.close()                    # (a MemoryError: the socket is not the link's yet)
        raise
