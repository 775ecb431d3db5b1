# Session store backend: a log-structured ring on a raw flash region.
#
# The region is a block device with MicroPython's extended block protocol
# (esp32.Partition, rp2.Flash): readblocks(n, buf, off), writeblocks(n, buf,
# off) programs without erasing, ioctl(4) block count, ioctl(5) block size,
# ioctl(6, n) erases block n. Records ("commits") are programmed into erased
# space, one writeblocks call each; a block is erased only when the write
# position wraps onto it and nothing live is left in it. The byte layout, the
# power-cut analysis and measured wear figures are in docs/ring-format.md.
#
# Rules this file keeps:
# - Never program a byte that is not erased. Every commit starts on a
#   prog_size boundary and is padded with 0xFF to a multiple of prog_size.
# - A commit never spans blocks. The first prog_size bytes of every block
#   (32 with a prog_size of 16) hold a block header with a block sequence
#   number, so the log order is known after a reboot.
# - A commit's CRC covers its place (block number and offset) as well as its
#   bytes: the image of a commit anywhere else (a held message's payload
#   carrying one) is never valid.
# - After a torn or corrupt commit, nothing within the block's commit bound
#   (its header records its writer's largest commit) is read or programmed:
#   the next commit goes that far past the torn one's first unit, or to a
#   fresh block, and the reader goes on there only at the next number.
# - The block holding the start of the live checkpoint is never erased for an
#   append or a checkpoint (StoreFull instead). Only erase() may wipe it, and
#   then the loader finds no complete checkpoint: empty, which is what erase()
#   promises anyway.
# - append(), the checkpoint calls and erase() allocate nothing: one staging
#   buffer and one memoryview per commit length are made in __init__.
from micropython import const

from . import crc
from .crc import copy
from .errors import StoreFull, ERR_FULL

FORMAT = const(2)       # 2: commit CRCs cover the place (1: unreleased, refused)
_MAGIC0 = const(0x44)   # b"DMQR": block header magic
_MAGIC1 = const(0x4D)
_MAGIC2 = const(0x51)
_MAGIC3 = const(0x52)
_BHDR = const(12)       # block header bytes before its CRC
_HDR = const(8)         # commit header: kind u8, 0x00, length u16, seq u32
_OVH = const(12)        # commit header + CRC-32
_SEQ_MASK = const(0x3FFFFFFF)   # sequence numbers stay small ints on 32-bit boards

# Commit kind byte: 0b11000 in the high bits (so never 0xFF or 0x00), then
# flags. An append is 0xC0; a checkpoint part is 0xC1 plus BEGIN (first part)
# and/or END (last part): 0xC1 0xC3 0xC5 0xC7.
K_APPEND = const(0xC0)
K_PART = const(0xC1)
_K_BEGIN = const(0x02)
_K_END = const(0x04)


def _valid_kind(k):
    return k == K_APPEND or (k & 0xF9) == K_PART


def _u32(b, i):
    return (b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]


_place = bytearray(8)   # a commit's place, which its CRC covers first
_reg = bytearray(4)     # the CRC register


def _put32(b, i, v):  # noalloc
    b[i] = v >> 24
    b[i + 1] = (v >> 16) & 0xFF
    b[i + 2] = (v >> 8) & 0xFF
    b[i + 3] = v & 0xFF


def _sum(bseq, at, buf, off, n):  # noalloc
    # The CRC register over the place of a commit at offset `at` of the
    # block numbered bseq (both u32, big-endian), then over buf[off:off+n].
    _put32(_place, 0, bseq)
    _put32(_place, 4, at)
    crc.start(_reg)
    crc.add(_reg, _place, 0, 8)
    crc.add(_reg, buf, off, n)


def _commit(buf, pos, B, P, bseq):
    # The size of the valid commit at buf[pos:] of the block numbered bseq
    # (kind, reserved byte, fits in the block, CRC), else 0.
    if not _valid_kind(buf[pos]) or buf[pos + 1] != 0:
        return 0
    n = (buf[pos + 2] << 8) | buf[pos + 3]
    size = ((_OVH + n + P - 1) // P) * P
    if pos + size > B:
        return 0
    _sum(bseq, pos, buf, pos, _HDR + n)
    p = pos + _HDR + n
    for k in range(4):
        if buf[p + k] != _reg[3 - k] ^ 0xFF:
            return 0
    return size


def _used(buf, pos, B, P):
    # The first P-unit at or after pos that holds a byte not erased; B if
    # none.
    for i in range(pos, B):
        if buf[i] != 0xFF:
            return i - i % P
    return B


def _blank(b):
    # b holds only erased bytes (None: it could not be read).
    if b is None:
        return False
    for x in b:
        if x != 0xFF:
            return False
    return True


def _after(s):  # noalloc
    # The commit sequence number after s, modulo 2**30, without computing
    # 2**30: from there an int is a big integer (an allocation) on a board.
    return 0 if s == _SEQ_MASK else s + 1


class RingStore:
    _fresh = -1             # a block _advance() erased whose header is not written yet

    # Session backend on a raw flash region of `num_blocks` erase blocks
    # starting at block `first_block` of `bdev`.
    #
    # prog_size: program granularity; every commit is a multiple of it at an
    # aligned offset. 32 (default) suits ESP32 (16 is its minimum with flash
    # encryption); use 256 on RP2040, whose rp2.Flash programs whole 256-byte
    # pages. max_append: the largest payload one append() takes (and the size
    # of the staging buffer, rounded up to prog_size with 12 bytes of framing).
    #

    def __init__(self, bdev, prog_size=None, first_block=0, num_blocks=None, max_append=1012):
        P = 32 if prog_size is None else prog_size
        if P < 16 or P > 4096 or P & (P - 1):
            raise ValueError("prog_size must be a power of two from 16 to 4096")
        B = bdev.ioctl(5, 0)
        total = bdev.ioctl(4, 0)
        if num_blocks is None:
            num_blocks = total - first_block
        N = num_blocks
        if N < 3:
            raise ValueError("a ring needs at least 3 erase blocks, got %d" % N)
        if first_block < 0 or first_block + N > total:
            raise ValueError("blocks %d..%d are outside the device (%d blocks)"
                             % (first_block, first_block + N - 1, total))
        H = P if P > 32 else 32      # the block header: a whole number of units, 20 bytes used
        if B % P or B < 4 * H:
            raise ValueError("block size %d does not suit prog_size %d" % (B, P))
        if max_append < 1 or max_append > 0xFFFF:
            raise ValueError("max_append out of range")
        cmax = min(((_OVH + max_append + P - 1) // P) * P, B - H)
        self._bdev = bdev
        self._first = first_block
        self._n = N
        self._bs = B
        self._p = P
        self._h = H
        self.prog_size = P
        self.max_append = cmax - _OVH
        self._stage = bytearray(cmax)
        mv = memoryview(self._stage)
        # One view per commit length (a multiple of P): writeblocks takes the
        # length from the buffer, and slicing at run time would allocate.
        self._views = [mv[0:k * P] for k in range(1, cmax // P + 1)]
        self._ones = b"\xff" * P             # padding source
        self._hdr = bytearray(b"\xff" * H)
        h = self._hdr
        h[0] = _MAGIC0
        h[1] = _MAGIC1
        h[2] = _MAGIC2
        h[3] = _MAGIC3
        h[4] = FORMAT
        h[5] = _log2(P)
        if N < 0xFFFF:               # the region's size: another one reads as foreign
            h[6] = N >> 8
            h[7] = N & 0xFF
        # The largest commit this writer makes, in units of P, and its
        # complement: a boot after a torn commit reads and writes on only
        # that far past it (_walk), so its bytes are never read as a commit
        # nor programmed again.
        u = cmax // P
        h[16] = u >> 8
        h[17] = u & 0xFF
        h[18] = h[16] ^ 0xFF
        h[19] = h[17] ^ 0xFF

        # Sizing (docs/ring-format.md, "Capacity"). A checkpoint of S payload
        # bytes spans at most W(S) = S + (S // qf + 2) * d + P bytes of log
        # (d: the framing in one full block, qf: its payload). It fits when
        # the live span at its start plus W(S) is at most (N - 1) * B.
        # needs_checkpoint() turns True when the live span passes
        # wmax = W(capacity). Besides the old and the new checkpoint the ring
        # keeps room for a checkpoint cut short by a power cut (its dead
        # parts stay inside the live span until the next one completes) and
        # for `slack`: appends made after needs_checkpoint() turned True plus
        # the rest of a block closed by a power cut. So 3 * wmax + slack
        # <= (N - 1) * B.
        d = H + _OVH * ((B - H + cmax - 1) // cmax)
        qf = B - d
        slack = B + cmax
        wmax = ((N - 1) * B - slack) // 3
        budget = wmax - P - 2 * d
        if budget < P:
            # (The room a ring keeps grows with its largest append, which
            # load.py sizes from buf_size: the same region may fit a
            # smaller buf_size.)
            raise ValueError("ring too small: %d blocks of %d bytes hold no checkpoint beside appends of up to "
                             "%d bytes (a larger region, or a smaller buf_size)" % (N, B, cmax - _OVH))
        self.capacity = (budget // B) * qf + min(budget % B, qf - 1)
        self._threshold = wmax

        self.bytes_written = 0     # every byte handed to writeblocks, modulo 2**29 (docs/api.md#stats)
        self.erases = 0
        self.appends = 0
        self.checkpoints = 0

        # Write position: block index (0..N-1 in the region), its sequence
        # number, offset of the next commit. Tail: where the live checkpoint
        # starts; -1 when the region holds no complete checkpoint (blank or
        # foreign), in which case the first write formats it.
        self._head = N - 1
        self._head_seq = -1
        self._pos = B
        self._tail = -1
        self._tail_seq = 0
        self._tail_off = 0
        self._seq = 0
        # Open checkpoint: staged payload bytes, payload limit of the commit
        # being filled (0 = not placed yet), first commit not yet written,
        # where its BEGIN commit went, bytes so far.
        self._ck_open = False
        self._ck_fill = 0
        self._ck_lim = 0
        self._ck_first = False
        self._ck_blk = 0
        self._ck_bseq = 0
        self._ck_off = 0
        self._ck_total = 0
        self._fill = 0               # bytes staged for the next append
        self._scan = None
        self._why = None             # a ring found that is not ours, none of ours: why (load() raises it)
        self._rescan()

    @property
    def bytes_programmed(self):
        return self.bytes_written

    # ------------------------------------------------------------ boot

    def _read_block(self, i, buf):
        self._bdev.readblocks(self._first + i, buf, 0)

    def _walk(self, start_c, start_off, visit):
        # Call visit(c, pos, kind, n, seq, buf) for every valid commit in
        # chain order from chain index start_c, offset start_off. Returns
        # the offset in the last block where the next commit can go (B: the
        # block must be left).
        sc = self._scan
        B = self._bs
        P = self._p
        buf = sc["buf"]
        w = B
        for c in range(start_c, sc["count"]):
            i = (sc["oldest"] + c) % self._n
            self._read_block(i, buf)
            room = sc["rooms"][i]
            bseq = sc["seqs"][i]
            pos = start_off if c == start_c else self._h
            torn = False
            w = B
            # The next number is checked within a block only: the block
            # before may be a half-erased stale one whose last commits are
            # gone (the gap rule in visit() judges what crosses blocks).
            last = -1                      # the last valid commit's number here (-1: none yet)
            while pos + _OVH <= B:
                size = _commit(buf, pos, B, P, bseq)
                if size and (not torn or last < 0 or _u32(buf, pos + 4) == _after(last)):
                    last = _u32(buf, pos + 4)
                    visit(c, pos, buf[pos], (buf[pos + 2] << 8) | buf[pos + 3], last, buf)
                    pos += size
                    torn = False
                    continue
                # Erased to the end of the block, or a commit a power cut
                # tore (or other bytes). From the first unit of it that is
                # not erased, nothing within the block's largest commit is
                # read or programmed: bits a cut program half set may read
                # as erased, and its payload may hold a commit's image. The
                # boot after the cut wrote on from there with the number the
                # torn commit had; the block's log goes on at that commit.
                u = _used(buf, pos, B, P)
                if u == B:
                    break
                torn = True
                w = u + room
                pos = _used(buf, w, B, P) if w < B else B
            if not torn:
                w = pos
            if w + P > B or _used(buf, w, B, P) < B:
                w = B
        return w

    def _rescan(self):
        # Find the chain of blocks, the latest complete checkpoint and the
        # write position. Boot only: allocates a block buffer.
        N = self._n
        B = self._bs
        P = self._p
        H = self._h
        hb = bytearray(_BHDR + 8)
        seqs = [-1] * N
        rooms = [B - H] * N              # the largest commit of each block's writers
        why = None                       # why a ring found here is not ours (load() raises it)
        span = 0                         # the largest ring of those (its blocks are numbered in a row)
        other_max = -1                   # the newest block of a ring that is not ours
        for i in range(N):
            self._bdev.readblocks(self._first + i, hb, 0)
            if not (hb[0] == _MAGIC0 and hb[1] == _MAGIC1 and hb[2] == _MAGIC2 and hb[3] == _MAGIC3
                    and crc.check(hb, 0, _BHDR)):
                continue
            n = (hb[6] << 8) | hb[7]
            s = _u32(hb, 8)
            if s > _SEQ_MASK:
                continue
            # Ours: our format and prog_size, our size, and at its place: a
            # ring's block i is numbered i modulo N (_format), so a region
            # that starts elsewhere sees its blocks out of place.
            if hb[4] == FORMAT and hb[5] == self._hdr[5] and (n == 0xFFFF or n == N) and s % N == i:
                seqs[i] = s
                if hb[16] ^ hb[18] == 0xFF and hb[17] ^ hb[19] == 0xFF:
                    u = (hb[16] << 8) | hb[17]
                    if u:                       # (0: corrupt; a walk would not move)
                        rooms[i] = min(u * P, B - H)
                continue
            # Another ring's block: its chain, read over this region, would
            # yield an older checkpoint, or a misparsed one. (Every format
            # keeps header bytes 0..15 where they are.) The newest one names
            # the reason: it is the one that makes ours stale.
            n = N if n == 0xFFFF else n
            if n > span:
                span = n
            if s < other_max:
                continue
            other_max = s
            if hb[4] != FORMAT:
                # A later library's ring (a downgrade), or format 1, which
                # development builds wrote: not read, reported.
                why = "flash ring format %d is %s than this library's" % (
                    hb[4], "newer" if hb[4] > FORMAT else "older")
            elif hb[5] != self._hdr[5]:
                why = "flash ring written with prog_size %d, opened with %d" % (1 << hb[5], P)
            elif n != N:
                why = "flash ring written over %d blocks, opened over %d" % (n, N)
            else:
                why = "flash ring written over a region with another first block"
        head = -1
        for i in range(N):
            if seqs[i] >= 0 and (head < 0 or seqs[i] > seqs[head]):
                head = i
        # A ring formats itself numbered above every block it finds of
        # another ring (another format, size, prog_size or first block), and that
        # ring's blocks are numbered in a row (n of them): so its blocks
        # outrank all of that ring's, including those outside this region.
        # A block of another ring newer than our head is then a ring written since ours (a resize
        # and back, a region lent to another firmware): ours is stale, and
        # loading it would resend what was acknowledged long ago.
        self._floor = other_max + span if other_max >= 0 else -1
        if head >= 0 and other_max > seqs[head]:
            head = -1
        self._ck_open = False
        self._scan = None
        self._why = why if head < 0 else None
        if head < 0:                       # blank or foreign: nothing to load
            self._head = N - 1
            self._head_seq = -1
            self._pos = B
            self._tail = -1
            self._seq = 0
            return
        oldest = head
        count = 1
        while count < N:
            j = (oldest - 1) % N
            if seqs[j] < 0 or seqs[j] != seqs[oldest] - 1:
                break
            oldest = j
            count += 1
        sc = {"buf": bytearray(B), "oldest": oldest, "count": count, "rooms": rooms, "seqs": seqs,
              "chosen": -1, "chosen_off": 0, "chosen_len": 0, "app_len": 0,
              "cand": -1, "cand_off": 0, "cand_len": 0, "prev": -1}
        self._scan = sc

        def visit(c, pos, k, n, seq, buf):
            if sc["prev"] >= 0 and seq != _after(sc["prev"]) and seq != sc["prev"]:
                # A gap: what came before is stale (a half-erased oldest
                # block); the live checkpoint is always after it. (The same
                # number again is no gap: a commit that landed although its
                # program reported an error and its read-back failed too,
                # _program(), whose number the next commit took again.)
                sc["chosen"] = sc["cand"] = -1
                sc["app_len"] = 0
            sc["prev"] = seq
            if k == K_APPEND:
                sc["cand"] = -1
                sc["app_len"] += n
                return
            if k & _K_BEGIN:
                sc["cand"] = c
                sc["cand_off"] = pos
                sc["cand_len"] = 0
            if sc["cand"] < 0:
                return                     # part of an abandoned checkpoint
            sc["cand_len"] += n
            if k & _K_END:
                sc["chosen"] = sc["cand"]
                sc["chosen_off"] = sc["cand_off"]
                sc["chosen_len"] = sc["cand_len"]
                sc["app_len"] = 0
                sc["cand"] = -1

        self._head = head
        self._head_seq = seqs[head]
        self._pos = self._walk(0, H, visit)
        if sc["rooms"][head] < len(self._stage):
            self._pos = B                  # commits larger than its bound: the next block
        self._seq = _after(sc["prev"])
        if sc["chosen"] < 0:
            self._tail = -1                # no complete checkpoint: empty
        else:
            self._tail = (oldest + sc["chosen"]) % N
            self._tail_seq = seqs[oldest] + sc["chosen"]
            self._tail_off = sc["chosen_off"]

    def load(self, again=True):
        # The latest complete checkpoint followed by every append after it
        # (a bytearray, which stream.parse() reads without a copy); b"" for
        # a blank, foreign or erased region. Boot only.
        # ValueError: the region holds a ring of another size (the first
        # write formats it), or reads that disagree twice.
        if not again:
            self._scan = None              # (a second try: scanned afresh)
        if self._scan is None:
            self._rescan()
        if self._why:
            raise ValueError(self._why)
        sc = self._scan
        if sc is None or sc["chosen"] < 0:
            self._scan = None
            return b""
        n = sc["chosen_len"] + sc["app_len"]
        try:
            out = bytearray(n)
        except MemoryError:
            # (A device with more RAM wrote it.) Raised, the MemoryError
            # would stop every boot the same way: the state is unusable
            # here, as one whose outbox this heap cannot hold (restore.py).
            self._scan = None
            raise ValueError("the session on flash (%d bytes) is larger than this heap can read" % n)
        st = [0, 0]                        # bytes copied, checkpoint complete

        def visit(c, pos, k, n, seq, buf):
            if st[1]:
                if k != K_APPEND:
                    return                 # an abandoned later checkpoint
            elif k & _K_END:
                st[1] = 1
            if st[0] + n <= len(out):      # (copy() is viper: it checks no bounds)
                copy(out, st[0], buf, pos + _HDR, n)
            st[0] += n

        self._walk(sc["chosen"], sc["chosen_off"], visit)
        self._scan = None                  # frees the block buffer
        if st[0] != n:
            # This walk read other commits than the scan that sized out:
            # flash written since (another RingStore on the device) or a
            # read that disagrees with the first. Never a copy past out:
            # read again from a fresh scan, once, else refused as unusable.
            if again:
                return self.load(False)
            raise ValueError("flash ring reads differ between two passes (%d bytes, then %d)" % (n, st[0]))
        return out

    # ------------------------------------------------------------ writing

    def _program(self, size):  # noalloc
        # One writeblocks call for the staged commit of `size` bytes.
        try:
            self._bdev.writeblocks(self._first + self._head, self._views[size // self._p - 1], self._pos)
        except BaseException as e:
            # A driver may program the commit whole and still report an
            # error (a verify or timeout error, an interrupt): read back, the
            # commit on flash counts, and with its sequence number (were the
            # next commit to reuse it, the boot would read a gap and drop
            # everything before it as stale). An error is an error only if
            # flash does not hold the commit; then, or for an interrupt, the
            # state on flash is unknown: nothing more goes into this block.
            # A program that left its range erased (the driver refused it
            # before writing) leaves the block open: the retry goes to the
            # same place, where a closed block took a new block, and an
            # erase, at every retry while flash refused writes.
            landed = self._landed(size)
            if landed <= 0 or not isinstance(e, Exception):
                if landed > 0:
                    self._seq = _after(self._seq)
                if landed or not isinstance(e, Exception):
                    self._pos = self._bs
                self._ck_open = False
                raise e
        self._pos += size
        self.bytes_written = (self.bytes_written + size) & 0x1FFFFFFF
        self._seq = _after(self._seq)
        self._scan = None

    def _landed(self, size):
        # After a failed program: 1 flash holds the staged commit whole, 0
        # nothing of it (still erased), -1 unknown (part of it, or no
        # read). (The error path: it allocates.)
        b = self._read(self._head, self._pos, size)
        if b is None:
            return -1
        if b == bytes(self._views[size // self._p - 1]):
            return 1
        return 0 if _blank(b) else -1

    def _read(self, blk, off, size):
        # size bytes of block blk at off, or None if the read fails.
        try:
            b = bytearray(size)
            self._bdev.readblocks(self._first + blk, b, off)
            return b
        except Exception:
            return None

    def _advance(self, force):  # noalloc
        # Erase the next block and write its header. force=True may wipe the
        # block holding the live checkpoint (erase() only).
        nb = self._head + 1
        if nb == self._n:
            nb = 0
        if nb == self._tail and not force:
            raise StoreFull(ERR_FULL, "flash ring full: the live session fills it")
        self._pos = self._bs               # until the header is on flash
        self._scan = None
        # Erased already by the last call, whose header write failed, and
        # still blank: not erased again (each retry while flash refused
        # writes erased the same block, 59 times a second in a poll loop).
        if nb != self._fresh or not _blank(self._read(nb, 0, self._h)):
            self._bdev.ioctl(6, self._first + nb)
            self.erases += 1
        self._fresh = nb
        if nb == self._tail:
            self._tail = -1
        s = self._head_seq + 1
        h = self._hdr
        _put32(h, 8, s)
        crc.seal(h, 0, _BHDR)
        # If this fails the head stays where it was (closed), so the next
        # attempt erases the same block again and the chain has no gap.
        self._bdev.writeblocks(self._first + nb, h, 0)
        self._fresh = -1
        self._head = nb
        self._head_seq = s
        self._pos = self._h
        self.bytes_written = (self.bytes_written + self._h) & 0x1FFFFFFF

    def _frame(self, kind, n):  # noalloc
        # Frame the n payload bytes already at stage[8:]; returns the size.
        # Its place is known: the caller moved to the next block first if
        # it had to.
        st = self._stage
        st[0] = kind
        st[1] = 0
        st[2] = n >> 8
        st[3] = n & 0xFF
        _put32(st, 4, self._seq)
        _sum(self._head_seq, self._pos, st, 0, _HDR + n)
        crc.put(_reg, st, _HDR + n)
        P = self._p
        size = ((_OVH + n + P - 1) // P) * P
        copy(st, _OVH + n, self._ones, 0, size - _OVH - n)
        return size

    def _format(self):  # noalloc
        # First write to a blank/foreign region: a fresh block with an empty
        # checkpoint, so there is always a complete checkpoint to start from.
        self._pos = self._bs
        self._why = None
        if self._head_seq < self._floor:
            # Numbered above every ring found here (_rescan), and block i
            # of the region numbered i modulo N.
            self._head_seq = self._floor + (self._head - self._floor) % self._n
        self._empty_checkpoint(True)

    def _empty_checkpoint(self, force):  # noalloc
        size = self._p
        if self._pos + size > self._bs:
            self._advance(force)
        blk = self._head
        bseq = self._head_seq
        off = self._pos
        self._program(self._frame(K_PART | _K_BEGIN | _K_END, 0))
        self._tail = blk
        self._tail_seq = bseq
        self._tail_off = off

    def write(self, buf, off, n):  # noalloc
        # Add buf[off:off+n] to the open checkpoint (any size), or else to
        # the append that sync() commits (at most max_append bytes in all).
        if self._ck_open:
            self._ck_write(buf, off, n)
            return
        f = self._fill
        if f + n > self.max_append:
            self._fill = 0
            raise ValueError("append larger than max_append")
        if self._tail < 0:
            self._format()           # first write to a blank region (before staging:
        copy(self._stage, _HDR + f, buf, off, n)   # it frames its commit in the stage)
        self._fill = f + n

    def sync(self):  # noalloc
        # Program what write() gathered as one commit (a record batch).
        if self._ck_open:
            raise ValueError("sync inside a checkpoint")
        n = self._fill
        self._fill = 0
        P = self._p
        size = ((_OVH + n + P - 1) // P) * P
        if self._pos + size > self._bs:
            self._advance(False)
        self._program(self._frame(K_APPEND, n))
        self.appends = (self.appends + 1) & 0x1FFFFFFF     # (a small int on a board: docs/api.md#stats)

    def needs_checkpoint(self):  # noalloc
        if self._tail < 0:
            return False
        live = (self._head_seq - self._tail_seq) * self._bs + self._pos - self._tail_off
        return live > self._threshold

    def begin(self):  # noalloc
        # Start a checkpoint: the whole state follows through write().
        self._fill = 0
        if self._tail < 0:
            self._format()
        self._ck_open = True
        self._ck_fill = 0
        self._ck_lim = 0
        self._ck_first = True
        self._ck_total = 0

    def _ck_place(self):  # noalloc
        # Choose where the next checkpoint commit goes and how much it holds.
        room = self._bs - self._pos - _OVH
        if room < 1:
            self._advance(False)
            room = self._bs - self._pos - _OVH
        self._ck_lim = min(room, self.max_append)
        self._ck_fill = 0

    def _ck_flush(self, kind):  # noalloc
        if self._ck_first:
            kind |= _K_BEGIN
            self._ck_blk = self._head
            self._ck_bseq = self._head_seq
            self._ck_off = self._pos
        self._program(self._frame(kind, self._ck_fill))
        self._ck_first = False
        self._ck_lim = 0

    def _ck_write(self, buf, off, n):  # noalloc
        if self._ck_total + n > self.capacity:
            self._ck_open = False
            raise StoreFull(ERR_FULL, "session state exceeds the flash ring")
        i = 0
        try:
            while i < n:
                if self._ck_lim == 0:
                    self._ck_place()
                if self._ck_fill == self._ck_lim:
                    # Full, and more is coming: this commit is not the last.
                    self._ck_flush(K_PART)
                    continue
                k = min(n - i, self._ck_lim - self._ck_fill)
                copy(self._stage, _HDR + self._ck_fill, buf, off + i, k)
                self._ck_fill += k
                i += k
        except BaseException as e:
            self._ck_open = False
            raise e
        self._ck_total += n

    def end(self):  # noalloc
        # Write the END commit; from then on load() yields the checkpoint.
        if not self._ck_open:
            raise ValueError("end without begin")
        self._ck_open = False
        if self._ck_lim == 0:
            self._ck_place()
        self._ck_flush(K_PART | _K_END)
        self._tail = self._ck_blk
        self._tail_seq = self._ck_bseq
        self._tail_off = self._ck_off
        self.checkpoints += 1

    def erase(self):  # noalloc
        # Forget the session: an empty checkpoint. Never raises StoreFull;
        # the old bytes stay on flash until the ring wraps over them.
        self._ck_open = False
        self._fill = 0
        if self._tail < 0:
            self._format()
        else:
            self._empty_checkpoint(True)

    def close(self):
        self._ck_open = False

    def stats(self):
        live = 0
        if self._tail >= 0:
            live = (self._head_seq - self._tail_seq) * self._bs + self._pos - self._tail_off
        return {"bytes_programmed": self.bytes_programmed, "erases": self.erases,
                "appends": self.appends, "checkpoints": self.checkpoints,
                "live_bytes": live, "threshold": self._threshold,
                "capacity": self.capacity, "blocks": self._n, "block_size": self._bs,
                "prog_size": self._p, "head": self._head, "tail": self._tail}


def _log2(x):
    n = 0
    while x > 1:
        x >>= 1
        n += 1
    return n
