# Benchmark workload for chumicro-mqtt (with chumicro-sockets, -timing,
# -config), used its normal way: a tick loop calling handle(now_ms);
# publish() queues (QoS 1 rides a bounded tx queue; MQTTBackpressureError
# means "tick and retry"); acknowledgements arrive as on_publish callbacks.
# Runs unchanged on the unix port: no shim.
import wlcommon as w

a = w.args()
test = a["test"]
ram = w.Ram() if test == "ram" else None

from chumicro_mqtt import MQTTClient, ProtocolState

imp = ram.now() if test == "ram" else 0

ticks_ms = w.ticks_ms
T = a["topic"]
P = w.payload(a["payload"])
meter = None
cnt = {"acked": 0, "sent": 0, "got": 0}

c = MQTTClient.from_config({"mqtt.broker.host": "127.0.0.1", "mqtt.broker.port": a["port"]},
                           client_id=a["cid"], keep_alive_seconds=a.get("keepalive", 60))


def on_msg(topic, payload):
    if meter is not None:
        meter.on_msg()
    else:
        cnt["got"] += 1


def on_publish(topic, payload):
    cnt["acked"] += 1


c.on_message = on_msg
c.connect()
while c.state != ProtocolState.CONNECTED:
    c.handle(ticks_ms())
    if c.state == ProtocolState.FAILED:
        raise OSError("connect failed: %r" % (c.last_error,))


def tick_until(cond):
    while not cond():
        c.handle(ticks_ms())
        if c.state != ProtocolState.CONNECTED:
            raise OSError("link failed: %r" % (c.last_error,))


if test == "ram":
    w.result(**{"import": imp, "connect": ram.now(), "modules": w.modules()})

elif test in ("pub0", "pub1"):
    qos = 1 if test == "pub1" else 0
    if qos:
        # acks counted through the public callback; left unset for QoS 0,
        # where a callback would add a marker entry per message
        c.on_publish = on_publish

    cap = c._max_tx_queue_size

    def step(i):
        # Tick while the tx queue is full instead of catching
        # MQTTBackpressureError: a try/except in step() would make its frame
        # big enough for the VM to take it from the heap, charged to the
        # client. (Reads two private attributes; the library has no public
        # "room left" query.)
        while len(c._tx_queue) >= cap:
            c.handle(ticks_ms())
        c.publish(T, P, qos=qos)
        cnt["sent"] += 1
        c.handle(ticks_ms())          # one tick per message, as a runner loop does

    def flush():
        if qos:
            tick_until(lambda: cnt["acked"] >= cnt["sent"])
        else:   # until the tx queue is empty (no write interest left)
            tick_until(lambda: not c.io_interest(ticks_ms()) & 2)

    w.result(**w.pub_windows(step, flush, a))

elif test in ("rx0", "rx1"):
    granted = []
    c.subscribe(T, 1 if test == "rx1" else 0, on_subscribe=lambda t, q: granted.append(q))
    tick_until(lambda: granted)
    meter = w.RxMeter(a)
    meter.request_a()
    tick_until(lambda: meter.done_a)
    meter.request_b()
    tick_until(lambda: meter.done_b)
    w.result(**meter.result())

elif test == "idle":
    w.result(**w.idle_window(lambda: c.handle(ticks_ms()), a))

c.disconnect()
for _ in range(5):
    c.handle(ticks_ms())
