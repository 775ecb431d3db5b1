# A device that publishes or receives a numbered stream with its session on
# flash, meant to be SIGKILLed at random and started again. SESSION is a
# path (host file system), ring:IMG (the raw ring on a NOR image) or
# lfs:PROG:IMG (a path on LittleFS mounted on a NOR image).
#
#   micropython device_stream.py pub PORT VER QOS N SESSION PROGRESS BOOT
#   micropython device_stream.py sub PORT VER QOS N SESSION DELIVERED BOOT
#
# pub: publishes "k:BOOT" for k from the last recorded progress to N-1. The
#      progress file is written after publish() accepted k, so a kill between
#      the two makes the next boot publish k again under its own BOOT tag
#      (an application-level repeat, told apart from a library duplicate).
# sub: appends every delivered payload to DELIVERED (flushed at once).
import sys
import time

from durable_mqtt import MQTTClient

mode, port, ver, qos, n, session, aux, boot = sys.argv[1:9]
port, ver, qos, n = int(port), int(ver), int(qos), int(n)
KIND = session.split(":")[0] if ":" in session else "file"
if KIND == "ring":
    # The raw ring on a file-backed NOR flash image (survives SIGKILL).
    from norflash import NorFlash
    session = NorFlash(4096, 16, prog_size=32, path=session[5:])
elif KIND == "lfs":
    # The session directory on LittleFS in a file-backed NOR flash image,
    # mounted as the board mounts it: lfs:32:IMG like ESP32, lfs:256:IMG like
    # RP2040. First boot formats the image (again if a kill cut the format).
    import vfs
    from norflash import NorFlash
    _, prog, image = session.split(":", 2)
    prog = int(prog)
    KIND = "lfs%d" % prog
    dev = NorFlash(4096, 64, prog_size=prog, path=image)
    try:
        vfs.mount(vfs.VfsLfs2(dev, progsize=prog), "/fl")
    except OSError:
        vfs.VfsLfs2.mkfs(dev, progsize=prog)
        vfs.mount(vfs.VfsLfs2(dev, progsize=prog), "/fl")
    session = "/fl/session"
TOPIC = "stream/%d/%d" % (ver, qos)


def connect(c):
    while True:
        try:
            return c.connect()
        except OSError as e:
            print("connect failed", e)
            time.sleep_ms(50)


def last_progress():
    try:
        with open(aux) as f:
            lines = f.read().split()
        return int(lines[-1]) if lines else 0
    except (OSError, ValueError):
        return 0


if mode == "pub":
    c = MQTTClient("dev-pub-%d-%d-%s" % (ver, qos, KIND), "127.0.0.1", port, version=ver, keepalive=10,
                   clean_session=False, session_file=session, max_inflight=8, outbox_size=16,
                   ring_prog_size=32)
    print("restored", c.pending())
    start = last_progress()
    prog = open(aux, "a")
    connect(c)
    for k in range(start, n):
        c.publish(TOPIC, "%d:%s" % (k, boot), qos=qos)
        prog.write("%d\n" % (k + 1))
        prog.flush()
        c.check_msg()
        while c.pending() >= 8:
            c.wait_msg(20)
        time.sleep_ms(8)
    while c.pending():
        c.wait_msg(50)
    c.disconnect()
    print("DONE")
else:
    log = open(aux, "a")
    count = [0]

    def cb(topic, msg, retained, q):
        log.write(bytes(msg) + b"\n")
        log.flush()
        count[0] += 1

    c = MQTTClient("dev-sub-%d-%d-%s" % (ver, qos, KIND), "127.0.0.1", port, version=ver, keepalive=10,
                   clean_session=False, session_file=session, receive_max=8, ring_prog_size=32)
    c.set_callback(cb)
    t0 = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), t0) < 30000:
        try:
            if not c.is_connected():
                connect(c)
                c.subscribe(TOPIC, qos)       # (again after a restart: replaces the same subscription)
                print("subscribed")
            c.wait_msg(100)
        except OSError as e:
            # The link closed, as MQTTClient reports it: connect again, as
            # an application does. mosquitto 2.0.11 sends a backlog past
            # Receive Maximum after a reconnect, and the client closes the
            # link for it (0x93) once its table of QoS 2 ids is full
            # (tests/test_qos2_backlog.py).
            print("link closed", e)
            continue
        try:
            with open(aux) as f:
                got = set(line.split(":")[0] for line in f.read().split())
            if len(got) >= n:
                break
        except OSError:
            pass
    c.disconnect()
    print("DONE")
