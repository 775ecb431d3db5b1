# Benchmark workload for umqtt.simple and umqtt.robust (micropython-lib),
# used their normal, blocking way: publish(qos=1) returns after the PUBACK,
# wait_msg() blocks for the next packet, check_msg() polls.
# Argument: JSON, see wlcommon.py and tools/bench/run.py.
import wlcommon as w

a = w.args()
test = a["test"]
ram = w.Ram() if test == "ram" else None

if a["module"] == "umqtt.robust":
    from umqtt.robust import MQTTClient
else:
    from umqtt.simple import MQTTClient

if test == "ram":
    imp = ram.now()

T = a["topic"].encode()
P = w.payload(a["payload"])
c = MQTTClient(a["cid"].encode(), "127.0.0.1", a["port"], keepalive=a.get("keepalive", 0))


def on_msg(topic, msg):
    meter.on_msg()


meter = None
c.set_callback(on_msg)
c.connect()

if test == "ram":
    w.result(**{"import": imp, "connect": ram.now(), "modules": w.modules()})

elif test in ("pub0", "pub1"):
    qos = 1 if test == "pub1" else 0

    def step(i):
        c.publish(T, P, False, qos)      # QoS 1: blocks until its PUBACK

    def flush():
        pass

    w.result(**w.pub_windows(step, flush, a))

elif test in ("rx0", "rx1"):
    meter = w.RxMeter(a)
    c.subscribe(T, 1 if test == "rx1" else 0)
    meter.request_a()
    while not meter.done_a:
        c.wait_msg()
    meter.request_b()
    while not meter.done_b:
        c.wait_msg()
    w.result(**meter.result())

elif test == "idle":
    w.result(**w.idle_window(c.check_msg, a))

c.disconnect()
