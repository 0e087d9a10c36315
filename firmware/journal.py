# The swipe journal (DESIGN.md 4): an append-only log on flash. A swipe is written here
# before it is published, and retired only when the bridge's verdict for it arrives.
#
# Record: magic 0xA7 | type u8 | length u16 | seq u32 | payload[length] | crc32 u32
# (big-endian; the CRC covers type..payload). Types:
#   SWIPE  payload = the signed swipe exactly as published (so a re-upload is the same bytes)
#   RETIRE payload empty: the verdict for seq arrived
#   MARK   payload empty: seq is a floor for the counter (written first in a compacted file)
#
# Power may be cut at any byte: recovery keeps every complete record (CRC good) and drops
# the torn tail by compacting; a damaged record mid-file is skipped up to the next good one.
# Flash wear: one append per tap and per verdict; the file is rewritten only (a) when
# every swipe is retired and the file passed compact_bytes, and
# (b) at max_bytes, keeping only unsettled swipes. Full (max_pending unsettled swipes, or
# their bytes alone over max_bytes) means taps are refused with reasons.JOURNAL_FULL.
# The seq counter: next = max(every seq in the file, the MARK floor, seq_base) + 1; MARK
# carries it across compaction, so a seq is never reused, even after a torn write.
import binascii
import os
import struct

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

MAGIC = const(0xA7)
SWIPE = const(1)
RETIRE = const(2)
MARK = const(3)
HEADER = const(8)
TRAILER = const(4)
MAX_PAYLOAD = const(512)  # protocol.messages.MAX_BYTES["swipe"]


class JournalFull(Exception):
    pass


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def _read_record(f, off):
    """(type, length, seq) of a complete record with a good CRC at off, else None."""
    f.seek(off)
    hdr = f.read(HEADER)
    if len(hdr) < HEADER or hdr[0] != MAGIC:
        return None
    typ, n, seq = struct.unpack(">BHI", hdr[1:])
    if n > MAX_PAYLOAD or typ not in (SWIPE, RETIRE, MARK):
        return None
    rest = f.read(n + TRAILER)
    if len(rest) < n + TRAILER:
        return None
    crc = binascii.crc32(rest[:n], binascii.crc32(hdr[1:])) & 0xFFFFFFFF
    if struct.unpack(">I", rest[n:])[0] != crc:
        return None
    return typ, n, seq


class Journal:
    def __init__(self, path, max_bytes=65536, max_pending=256, seq_base=0, compact_bytes=4096):
        self.path = path
        self.max_bytes = max_bytes
        self.max_pending = max_pending
        self.compact_bytes = compact_bytes
        self.seq_base = seq_base
        self._buf = bytearray(HEADER + MAX_PAYLOAD + TRAILER)  # one record, reused per write
        self._mv = memoryview(self._buf)
        self._pending = {}  # seq -> (offset of payload, length)
        self._last = 0      # highest seq seen in any record (MARK included)
        self._size = 0
        self._f = None
        self.dropped = 0    # bytes of torn tail dropped at the last recovery
        self.recover()

    # -- boot ---------------------------------------------------------------------------
    def recover(self):
        """Scan the file, keep complete records, drop a torn tail. Returns records kept."""
        self.close()
        tmp = self.path + ".new"
        if _exists(tmp):
            if _exists(self.path):
                _remove(tmp)  # a compaction was cut before its rename: the old file stands
            else:
                os.rename(tmp, self.path)  # cut between remove and rename (ports without replace)
        self._pending = {}
        self._last = 0
        kept = 0
        lost = 0
        total = 0
        if _exists(self.path):
            total = os.stat(self.path)[6]
            with open(self.path, "rb") as f:
                off = 0
                while off < total:
                    rec = _read_record(f, off)
                    if rec is None:
                        # A torn tail (power cut) or a damaged record (flash fault): look for
                        # the next complete record, so damage in the middle loses only itself
                        # and the seqs after it stay known (never reused).
                        nxt = off + 1
                        while nxt < total and _read_record(f, nxt) is None:
                            nxt += 1
                        lost += nxt - off
                        off = nxt
                        continue
                    typ, n, seq = rec
                    self._apply(typ, seq, off + HEADER, n)
                    off += HEADER + n + TRAILER
                    kept += 1
        self._size = total
        self.dropped = lost
        if lost:
            self._compact()  # rewrite without the damaged bytes, so appends follow good data
        return kept

    def _apply(self, typ, seq, offset, n):
        if seq > self._last:
            self._last = seq
        if typ == SWIPE:
            self._pending[seq] = (offset, n)
        elif typ == RETIRE:
            self._pending.pop(seq, None)

    # -- the tap path -------------------------------------------------------------------
    def next_seq(self):
        """The seq the next swipe must carry (not yet used by any record, ever)."""
        return max(self._last, self.seq_base) + 1

    def full(self):
        return len(self._pending) >= self.max_pending

    def append(self, seq, payload):
        """Journal a signed swipe. Raises JournalFull, ValueError or OSError (flash)."""
        if seq != self.next_seq():
            raise ValueError("seq must be next_seq()")
        n = len(payload)
        if n > MAX_PAYLOAD:
            raise ValueError("swipe too large")
        if self.full():
            raise JournalFull()
        if self._size + HEADER + n + TRAILER > self.max_bytes:
            self._compact()
            if self._size + HEADER + n + TRAILER > self.max_bytes:
                raise JournalFull()
        self._write(SWIPE, seq, payload)

    def retire(self, seq):
        """The verdict for seq arrived. True if it was pending (and is now retired)."""
        if seq not in self._pending:
            return False
        if self._size + HEADER + TRAILER > self.max_bytes:
            self._compact()
        self._write(RETIRE, seq, b"")
        if not self._pending and self._size >= self.compact_bytes:
            self._compact()  # all settled: the file shrinks to one MARK record
        return True

    def _write(self, typ, seq, payload):
        n = len(payload)
        buf = self._buf
        struct.pack_into(">BBHI", buf, 0, MAGIC, typ, n, seq)
        buf[HEADER:HEADER + n] = payload
        mv = self._mv
        crc = binascii.crc32(mv[1:HEADER + n]) & 0xFFFFFFFF
        struct.pack_into(">I", buf, HEADER + n, crc)
        f = self._file()
        f.write(mv[:HEADER + n + TRAILER])
        f.flush()
        self._apply(typ, seq, self._size + HEADER, n)
        self._size += HEADER + n + TRAILER

    def _file(self):
        if self._f is None:
            self._f = open(self.path, "ab")
        return self._f

    def close(self):
        if self._f is not None:
            self._f.close()
            self._f = None

    # -- reading back -------------------------------------------------------------------
    def pending(self):
        """Unsettled seqs, oldest first."""
        seqs = list(self._pending)
        seqs.sort()
        return seqs

    def depth(self):
        return len(self._pending)

    def read(self, seq):
        """The signed swipe bytes journalled for seq (None if retired)."""
        where = self._pending.get(seq)
        if where is None:
            return None
        if self._f is not None:
            self._f.flush()
        with open(self.path, "rb") as f:
            f.seek(where[0])
            return f.read(where[1])

    def size(self):
        return self._size

    # -- compaction ---------------------------------------------------------------------
    def _compact(self):
        """Write MARK(last seq) + unsettled swipes to PATH.new, then rename over PATH."""
        seqs = self.pending()
        tmp = self.path + ".new"
        self.close()
        old = {}
        if seqs:
            with open(self.path, "rb") as f:
                for seq in seqs:
                    off, n = self._pending[seq]
                    f.seek(off)
                    old[seq] = f.read(n)
        last = max(self._last, self.seq_base)
        path = self.path
        self.path = tmp
        _remove(tmp)
        self._pending = {}
        self._size = 0
        self._last = 0
        try:
            self._write(MARK, last, b"")
            for seq in seqs:
                self._write(SWIPE, seq, old[seq])
                old[seq] = None
            self.close()
        finally:
            self.path = path
        try:
            os.rename(tmp, path)
        except OSError:  # ports whose rename does not replace
            _remove(path)
            os.rename(tmp, path)
