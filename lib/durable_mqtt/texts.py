# The words of the exceptions the resident modules raise (client.py,
# codec.py, inbound.py, link.py, session.py, transport.py): a number there,
# its sentence here, looked up only when one is raised (errors.fail(),
# errors.said()) and dropped again at once, so that a device does not hold
# them while all is well. Each call site names its sentence in a comment;
# the order is the numbering.
TEXTS = (
    'bad variable byte integer',                                   # 0
    'variable byte integer not minimal (MQTT-1.5.5-1)',            # 1
    'remaining length longer than 4 bytes',                        # 2
    'ill-formed UTF-8 (MQTT-1.5.3-1)',                             # 3
    'empty topic name (MQTT-4.7.3-1)',                             # 4
    'U+0000 in a string (MQTT-1.5.3-2)',                           # 5
    'a wildcard in a Topic Name (MQTT-3.3.2-2)',                   # 6
    'PUBLISH with QoS 3, or DUP on QoS 0 (MQTT-3.3.1-4, -2)',      # 7
    'PUBLISH topic length beyond packet',                          # 8
    'PUBLISH with packet id 0 (MQTT-2.3.1-1)',                     # 9
    'PUBLISH property length beyond packet',                       # 10
    'acknowledgement of %d bytes, packet id %d',                   # 11
    'reserved flags 0x%x in packet type 0x%02x',                   # 12
    'packet type 0x%02x %s CONNACK',                               # 13
    'PINGRESP with a %d-byte body',                                # 14
    'unexpected packet type 0x%02x',                               # 15
    'PUBACK for packet id %d, not awaiting one',                   # 16
    'PUBREC for packet id %d, not awaiting one',                   # 17
    '%sACK for packet id %d, not awaiting one',                    # 18
    'reason code 0x%02x not allowed here',                         # 19
    'connection dropped (errno %s)',                               # 20
    'the connection is closed',                                    # 21
    'the callback must be callable, not %s',                       # 22
    'connection dropped (errno unknown)',                          # 23
    'write stalled %d ms: link congested or dead',                 # 24
    'connection dropped while writing',                            # 25
    'no PINGRESP in %d ms: link dead',                             # 26
    'outbox full: %d messages',                                    # 27
    'outbox full: no room for %d bytes (outbox_bytes)',            # 28
    'no packet id free',                                           # 29
    'str or bytes-like expected, not %s',                          # 30
    'topic of %d bytes: 65535 at most (MQTT-4.7.3-3)',             # 31
    'topic must be str or bytes-like',                             # 32
    'the first byte, 0x%02x, is no CONNACK: is there an MQTT broker on that port?',   # 33
    'a control character or non-character (3.1.1 1.5.3, 5.0 1.5.4)',                 # 34
)
