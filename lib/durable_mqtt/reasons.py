# MQTT return and reason codes as words, for exception messages. Loaded on
# the first error that needs one and unloaded after (client.unload), so it
# costs no RAM while all is well.
_V4 = {
    1: "unacceptable protocol version", 2: "identifier rejected", 3: "server unavailable",
    4: "bad user name or password", 5: "not authorized",
}
_V5 = {
    0x04: "disconnect with will message", 0x10: "no matching subscribers", 0x11: "no subscription existed",
    0x80: "unspecified error", 0x81: "malformed packet", 0x82: "protocol error",
    0x83: "implementation specific error", 0x84: "unsupported protocol version",
    0x85: "client identifier not valid", 0x86: "bad user name or password", 0x87: "not authorized",
    0x88: "server unavailable", 0x89: "server busy", 0x8A: "banned", 0x8B: "server shutting down",
    0x8C: "bad authentication method", 0x8D: "keep alive timeout", 0x8E: "session taken over",
    0x8F: "topic filter invalid", 0x90: "topic name invalid", 0x91: "packet identifier in use",
    0x92: "packet identifier not found", 0x93: "receive maximum exceeded", 0x94: "topic alias invalid",
    0x95: "packet too large", 0x96: "message rate too high", 0x97: "quota exceeded",
    0x98: "administrative action", 0x99: "payload format invalid", 0x9A: "retain not supported",
    0x9B: "QoS not supported", 0x9C: "use another server", 0x9D: "server moved",
    0x9E: "shared subscriptions not supported", 0x9F: "connection rate exceeded",
    0xA0: "maximum connect time", 0xA1: "subscription identifiers not supported",
    0xA2: "wildcard subscriptions not supported",
}


def text(code, v5, connack=False, props=None):
    # The code as words (a CONNACK's 3.1.1 return codes when connack), with
    # the broker's MQTT 5 reason string when props hold one.
    if connack and not v5:
        t = _V4.get(code, "return code %d" % code)
    else:
        t = _V5.get(code, "reason code 0x%02x" % code)
    if props and "reason_string" in props:
        t += " (%s)" % props["reason_string"]
    if props and "server_reference" in props:
        t += "; server reference: %s" % props["server_reference"]
    return t
