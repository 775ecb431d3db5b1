# Connects through the proxy, says READY, then waits: the test black-holes
# the link; prints how long the client took to declare it dead.
import sys
import time

from durable_mqtt.robust import RobustClient

port, ver, ka = (int(x) for x in sys.argv[1:4])
down_at = []
c = RobustClient("bh%d" % ver, "127.0.0.1", port, keepalive=ka, version=ver,
                 on_down=lambda cl, e: down_at.append(time.ticks_ms()))
c.connect(clean_session=True)
c.wait_msg(300)
print("READY")
t0 = time.ticks_ms()        # the link goes silent from about now
while not down_at and time.ticks_diff(time.ticks_ms(), t0) < 20000:
    c.poll(50)
print("DETECTED_MS", time.ticks_diff(down_at[0], t0) if down_at else -1, repr(c.last_error))
