# The constructor's work (MQTTClient.__init__): checks the arguments, sizes
# the session engine and its buffers. Runs once per client, then unloaded
# (client.unload); load.py then opens the session file. Also the checks of
# set_last_will()'s arguments (will()).
from array import array
from micropython import const

from .codec import as_bytes, check_utf8, topic_name
from .errors import ProtocolError
from .session import Session

_NEVER = const(0xFFFFFFFF)


def configure(self, client_id, server, port=0, user=None, password=None, keepalive=0,
              ssl=None, *, version=4, clean_session=True, session_expiry=None,
              session_file=None, buf_size=1024, max_inflight=16, receive_max=8,
              outbox_size=32, outbox_bytes=None, timeout_ms=10000, resubscribe=True,
              ring_prog_size=None, persist_batch_ms=0, persist_batch_bytes=None, tls_verify=True,
              event_callback=None):
    # MQTTClient(...) (docs/api.md lists the arguments).
    for k, v in (("port", port), ("keepalive", keepalive), ("buf_size", buf_size),
                 ("max_inflight", max_inflight), ("receive_max", receive_max), ("outbox_size", outbox_size),
                 ("outbox_bytes", outbox_bytes or 0), ("timeout_ms", timeout_ms),
                 ("session_expiry", session_expiry or 0), ("ring_prog_size", ring_prog_size or 0),
                 ("persist_batch_ms", persist_batch_ms), ("persist_batch_bytes", persist_batch_bytes or 0)):
        if type(v) is not int:           # (a float or str fails later, deep inside, or not at all)
            raise TypeError("%s must be an int, not %s" % (k, type(v).__name__))
    # (timeout_ms 0 made every socket wait fail at once: a connect with a
    # raw "errno 115"; connect(timeout_ms=0) means the constructor's.)
    if not (0 <= port < 65536 and 0 < timeout_ms and 0 <= persist_batch_ms and 0 <= (outbox_bytes or 0)):
        raise ValueError("port 0..65535; timeout_ms > 0; persist_batch_ms, outbox_bytes >= 0")
    if event_callback is not None and not callable(event_callback):
        raise TypeError("event_callback must be callable: f(event, info)")
    if not (version in (4, 5) and 63 < buf_size < 268435461 and 0 < max_inflight < 65536
            and 0 < receive_max < 65536 and outbox_size >= 0 and 0 <= keepalive < 65536
            and (session_expiry is None or 0 <= session_expiry <= _NEVER)):
        raise ValueError("version 4 or 5; buf_size >= 64; max_inflight, receive_max 1..65535; "
                         "outbox_size >= 0; keepalive 0..65535; session_expiry 0..0xFFFFFFFF")
    if ssl is not None and not (hasattr(ssl, "wrap_socket") and (hasattr(ssl, "verify_mode") or not tls_verify)):
        # (The ssl module itself has a wrap_socket() that verifies nothing:
        # an object without verify_mode cannot be made to verify.)
        raise TypeError("ssl must be an ssl.SSLContext")
    if ssl is not None and tls_verify and ssl.verify_mode != 2:
        # The broker is always verified (API.md): MicroPython's context
        # starts at CERT_NONE. Switched as the client takes it, and again
        # at each connect (tls.secure), should the application reset it.
        ssl.verify_mode = 2              # ssl.CERT_REQUIRED
    if not client_id and version == 4 and not clean_session:
        raise ValueError("an empty client id needs clean_session=True in MQTT 3.1.1 (MQTT-3.1.3-7)")
    if password is not None and user is None and version == 4:
        raise ValueError("a password needs a user name in MQTT 3.1.1 (MQTT-3.1.2-22)")
    if not isinstance(server, str):
        # (None or a number went through, and connect() raised "can't
        # convert 'NoneType' object to str implicitly".)
        raise TypeError("server: a host name or address as a str, not %s" % type(server).__name__)
    self.server = server
    self.port = port or (8883 if ssl else 1883)
    self.user = None if user is None else as_bytes(user)
    cid = as_bytes(client_id)
    self.pswd = None if password is None else as_bytes(password)
    # Each has a 16-bit length (MQTT-1.5.3): a longer one would wrap, at
    # every CONNECT. The Client Identifier (MQTT-3.1.3-4) and the User Name
    # (MQTT 5: 3.1.3-12; 3.1.1: 3.1.3-11) are UTF-8 strings: well formed,
    # without U+0000 (MQTT-1.5.4-1, -2). A broker closes the connection over
    # a CONNECT with another, at every reconnect.
    for what, v in (("client id", cid), ("user name", self.user), ("password", self.pswd)):
        if v is None:
            continue
        if len(v) > (65521 if what == "client id" else 65535):
            # (65535, MQTT-1.5.3; a client id 65521: what the session's
            # header record holds with it, records.header. A longer one
            # made a state no boot could read.)
            raise ValueError("%s of %d bytes: %d at most (an MQTT string holds 65535, MQTT-1.5.3%s)"
                             % (what, len(v), 65521 if what == "client id" else 65535,
                                "; the session's record 65521" if what == "client id" else ""))
        try:
            if what != "password":       # (binary data)
                check_utf8(v, 0, len(v), 2)      # (sent: no control character either)
        except ProtocolError as x:
            raise ValueError("%s %r: %s" % (what, v, x.args[1]))
    self.keepalive = keepalive
    self.ssl = ssl
    self.tls_verify = tls_verify
    self.clean_session = self.clean = clean_session      # clean: the last connect's
    self.buf_size = buf_size
    self.receive_max = receive_max
    self.timeout_ms = timeout_ms
    self.resubscribe = resubscribe
    self.session_present = False
    self.async_connect = False       # aio: the TCP connect yields
    self.last_event = None
    self.v5 = version == 5
    self.props = None
    if self.v5:
        from . import props          # MQTT 5 only: 3.1.1 never loads it
        self.props = props
    self.expiry_arg = session_expiry if self.v5 else None   # ignored for 3.1.1 (API.md)
    # QoS 1/2 get max_inflight + outbox_size places; QoS 0 queued while
    # the link is down a quarter of that on top (and a fifth of the
    # bytes). The arena: 96 bytes a place (an 86-byte PUBLISH: 16-byte
    # topic, 64-byte payload), two full packets at least. Incoming QoS 2
    # ids: twice receive_max and 64 at least, in both versions: after a
    # reconnect that resends PUBRELs, mosquitto 2.0.11 sends its offline
    # queue beside them, past Receive Maximum (session.py, _rx2_full);
    # 3.1.1 has no Receive Maximum at all.
    q = max_inflight + outbox_size
    s = q + max(4, q // 4)
    self.engine = e = Session(self.v5, cid, s, q, outbox_bytes or max(96 * s, 2 * buf_size + 64),
                              max(2 * receive_max, 64), max_inflight, buf_size)
    e.expiry = self.expiry_for(clean_session)
    self.sent_expiry = e.expiry      # the Session Expiry of the last CONNECT
    self.tx = bytearray(buf_size)
    self.conn = None                 # link.Link, made at the first connect
    self.counts = array("I", bytes(40))   # counters, numbered in link.py
    self.topics = {}
    self.cb = self.on_done = self.will = None
    self.cb_props = False
    self.on_event = event_callback
    self.early = []                  # the constructor's events, replayed to a callback set later
    self.persist = False
    self.journal = None
    # The session file is opened by load.open_session once this module is
    # gone (client.py): the two are the constructor's largest transients.
    return None if session_file is None else (session_file, ring_prog_size, (persist_batch_ms, persist_batch_bytes),
                                            clean_session)


def will(self, topic, msg, retain, qos, props):
    # set_last_will()'s arguments, checked, as the will client self sends.
    # (qos 1.0 == 1 passed, and failed in every CONNECT)
    if not topic or qos not in (0, 1, 2) or not isinstance(qos, int):
        raise ValueError("a will needs a topic and QoS 0..2")
    if not isinstance(retain, (int, bool)) or retain not in (0, 1):
        raise ValueError("retain must be True or False, not %r" % (retain,))
    t = as_bytes(topic)
    topic_name(t)                    # the Will Topic is a Topic Name (MQTT-3.1.3-11)
    msg = as_bytes(msg if msg is not None else b"")     # (None, as publish() takes it)
    if len(msg) > 65535:             # a 16-bit length: it would wrap, at every CONNECT
        raise ValueError("a will message holds 65535 bytes at most")
    return t, msg, retain, qos, self.props.will(props, msg) if props and self.v5 else b""
