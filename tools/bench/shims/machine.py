# Minimal `machine` shim for micropython-mqtt (mqtt_async) on the unix
# port. The unix port's built-in `machine` lacks unique_id(), which the
# library calls at import time for its default client id. `machine` is an
# extensible built-in, so this file on MICROPYPATH is found first; the
# workload then passes an explicit client id anyway. Used by `make bench`
# only.


def unique_id():
    return b"\xbe\x4c\x00\x00\x00\x01"
