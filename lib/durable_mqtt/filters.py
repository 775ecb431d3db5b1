# A subscribe()'s or unsubscribe()'s arguments, checked before the request
# has a packet id: the topic filter, the subscription options, the
# packet's size, what the broker's CONNACK said it does not take. Loaded
# for the call and unloaded before request.py loads (client.requesting):
# the checkpoint after the answer then loads dirstate.py beside
# request.py alone, the peak of a subscribe. RobustClient.subscribe()
# checks a subscription made while down here too.
from .codec import as_bytes, check_utf8, fail, too_large, varint_size
from .errors import ConnectRefused, ProtocolError


def subscription(c, topic, qos, no_local, retain_as_published, retain_handling, sub_id):
    # (filter, options byte, subscription id) for client.requesting(),
    # which unloads this module; one refused here unloads it now.
    try:
        if qos not in (0, 1, 2) or not isinstance(qos, int):     # (1.0 == 1)
            raise ValueError("qos must be 0, 1 or 2")
        if not isinstance(sub_id, int) or not isinstance(retain_handling, int):
            raise TypeError("sub_id and retain_handling must be ints")
        f = as_bytes(topic)
        if not f:
            raise ValueError("empty topic filter")
        if c.v5:
            if retain_handling not in (0, 1, 2):
                # 3 is a protocol error (MQTT 5, 3.8.3.1): the broker closes the link
                raise ValueError("retain_handling must be 0, 1 or 2")
            if no_local and f.startswith(b"$share/"):
                raise ValueError("no_local on a shared subscription (MQTT-3.8.3-4)")
            qos |= (4 if no_local else 0) | (8 if retain_as_published else 0) | (retain_handling << 4)
        elif no_local or retain_as_published or retain_handling or sub_id:
            raise ValueError("subscription options need MQTT 5")
        if sub_id and not 0 < sub_id < 268435456:
            raise ValueError("sub_id 1..268435455 (a Variable Byte Integer)")
        return f, qos, sub_id
    except BaseException:
        from .client import unload
        unload()
        raise


def _available(sub_avail, f, sid):
    # MQTT 5: a subscription using what the broker's CONNACK said it does
    # not support raises ConnectRefused with the code the broker would
    # close the connection with, before anything is sent.
    if not sub_avail & 1 and (b"+" in f or b"#" in f):
        code = 0xA2
    elif not sub_avail & 2 and sid:
        code = 0xA1
    elif not sub_avail & 4 and f.startswith(b"$share/"):
        code = 0x9E
    else:
        return
    raise ConnectRefused(code, "the broker takes no %s (its CONNACK)" % (
        "wildcard subscriptions" if code == 0xA2 else "subscription identifiers" if code == 0xA1
        else "shared subscriptions"))


def check(c, f, opts, sid, k=None):
    # What a SUBSCRIBE to f with the options byte opts (opts < 0: an
    # UNSUBSCRIBE) is refused for before it has an id: a bad filter
    # (ValueError), a packet larger than buf_size or the broker's Maximum
    # Packet Size, the last CONNACK's (PacketTooLarge; the size as
    # request.subscribe_packet() encodes it); with the link k, MQTT 5, what
    # its CONNACK said the broker does not take (ConnectRefused). Returns
    # its properties (MQTT 5) or None.
    check_filter(f, c.v5)
    props = None
    if c.v5:
        props = c.props.encode({"subscription_id": sid}) if sid else b""
    rl = 4 + len(f) + (opts >= 0) + (varint_size(len(props)) + len(props) if props is not None else 0)
    n = min(len(c.tx), c.engine.max_out)
    if 1 + varint_size(rl) + rl > n:
        too_large("SUBSCRIBE" if opts >= 0 else "UNSUBSCRIBE", 1 + varint_size(rl) + rl, n, 0)
    if k is not None and c.v5 and opts >= 0:
        _available(k.sub_avail, f, sid)
    return props


def check_filter(f, v5=False):
    # A Topic Filter, or ValueError: a broker closes the connection over a
    # bad one. Well-formed UTF-8 without U+0000 (MQTT-1.5.3-1, -2), at least
    # one character (MQTT-4.7.3-1), "#" alone or after "/" and last
    # (MQTT-4.7.1-2), "+" a whole level (MQTT-4.7.1-3). MQTT 5: a shared
    # one is "$share/", a ShareName of one character or more without "/",
    # "+" or "#", then "/" and a Topic Filter (MQTT-4.8.2-1, -2). At most
    # 65535 bytes (MQTT-4.7.3-3).
    n = len(f)
    if n > 65530:
        # (65535, MQTT-4.7.3-3; 65530: what the session's SUB record holds,
        # records.sub. Made, a longer one was lost at the next boot.)
        raise ValueError("topic filter of %d bytes: 65530 at most (65535, MQTT-4.7.3-3; the session's record 65530)" % n)
    if f == b"$share":
        # (Not a shared subscription, and brokers close the connection
        # over it: mosquitto does, in both versions.)
        raise ValueError("$share alone: a shared subscription is $share/{name}/{filter}")
    try:
        check_utf8(f, 0, n, 2)               # (sent: no control character either)
        if not n:
            fail("empty (MQTT-4.7.3-1)")
    except ProtocolError as x:
        raise ValueError("topic filter %r: %s" % (bytes(f), x.args[1]))
    for i in range(n):
        w = f[i]
        if w == 0x23 and (i < n - 1 or i and f[i - 1] != 0x2F) or \
                w == 0x2B and (i and f[i - 1] != 0x2F or i < n - 1 and f[i + 1] != 0x2F):
            raise ValueError("topic filter %r: a wildcard fills a whole level, and # comes last "
                             "(MQTT-4.7.1-2, -3)" % bytes(f))
    if v5 and f.startswith(b"$share/"):
        i = f.find(b"/", 7)
        if i < 8 or i + 1 == n or b"+" in f[7:i] or b"#" in f[7:i]:
            raise ValueError("topic filter %r: a shared subscription is $share/<ShareName>/<filter>, "
                             "a ShareName without + or # (MQTT-4.8.2-1, -2)" % bytes(f))
