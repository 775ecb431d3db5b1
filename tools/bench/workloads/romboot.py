# The smallest-heap run of durable_mqtt (min_durable.py) with the library in
# a ROMFS image, as on firmware with a romfs partition: the .mpy files are
# read in place from memory-mapped flash, their bytecode is not copied into
# the heap (py/persistentcode.c, mp_reader_try_read_rom).
#
#     micropython romboot.py ARGS.json IMAGE         the run; prints {"ok": 1}
#     micropython romboot.py ARGS.json IMAGE alloc   {"result": {"rom_alloc": N}}
#
# The unix port has no flash to map, so the image is read into one
# bytearray, before anything else; that block is in flash on a board, and
# tools/bench/run.py adds its size (the "alloc" run) to each -X heapsize it
# tries and reports the rest. It is mounted at /rom like a board's
# partition (sys.path: "/rom" first); only this helper and min_durable come
# from MICROPYPATH.
import gc
import os
import sys
import vfs

gc.collect()
before = gc.mem_alloc()
img = bytearray(os.stat(sys.argv[2])[6])
rom_alloc = gc.mem_alloc() - before
with open(sys.argv[2], "rb") as f:
    f.readinto(img)
vfs.mount(vfs.VfsRom(img), "/rom")
sys.path.insert(0, "/rom")
if sys.argv[3:] == ["alloc"]:
    print('{"result": {"rom_alloc": %d}}' % rom_alloc)
else:
    import min_durable  # noqa: F401
