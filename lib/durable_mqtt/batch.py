# Batched mode (persist_batch_ms): how long a wait of the client may last
# before the records batched in RAM are due on flash. Loaded only in that
# mode: a journal made with a batch keeps due() (MQTTClient.due calls it).
import time


def due(j, wait):
    # wait (ms; -1: none) cut to when journal j's batched records are due,
    # so that no wait holds them past it (a quiet link's wait_msg(3000), an
    # offline poll(1000), a connect); with none open, to persist_batch_ms
    # (AsyncClient: a publish while the task waits opens one). Due now:
    # written, unless that fails: then the call's end (after(), offline())
    # writes it and raises the error, outside the handling of link
    # failures. (What a power cut may lose: docs/sessions.md.)
    d = j.batch_ms
    if j.nbatch:
        d -= time.ticks_diff(time.ticks_ms(), j.batch_t0)
        if d <= 0:
            d = j.batch_ms
            try:
                j.tick(time.ticks_ms())
            except OSError:
                pass
    return d if wait < 0 or d < wait else wait
