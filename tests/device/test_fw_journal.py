# The swipe journal (firmware/journal.py): power cut at every byte of a record write,
# retire and compaction, bounded size, and a seq counter that never repeats.
import os

from devtest import is_micropython, raises
from firmware.journal import Journal, JournalFull, HEADER, TRAILER


def _path(name):
    if is_micropython():
        return "/" + name
    import tempfile
    return os.path.join(tempfile.gettempdir(), "fwj-%d-%s" % (os.getpid(), name))


def _fresh(name, **kw):
    p = _path(name)
    for q in (p, p + ".new"):
        try:
            os.remove(q)
        except OSError:
            pass
    return Journal(p, **kw)


def _swipe(seq):
    return ('{"seq":%d,"pad":"%s"}' % (seq, "x" * (seq % 7))).encode()


def _bytes(path):
    with open(path, "rb") as f:
        return f.read()


def _put(path, data):
    with open(path, "wb") as f:
        f.write(data)


def test_append_read_retire_and_reboot():
    j = _fresh("j1")
    for _ in range(3):
        s = j.next_seq()
        j.append(s, _swipe(s))
    assert j.pending() == [1, 2, 3]
    assert j.retire(2)
    assert not j.retire(2)
    assert j.read(3) == _swipe(3)
    j.close()
    j = Journal(j.path)
    assert j.pending() == [1, 3]
    assert j.read(1) == _swipe(1)
    assert j.next_seq() == 4
    j.close()


def test_power_cut_at_every_byte_of_a_swipe_write():
    j = _fresh("j2")
    for _ in range(3):
        s = j.next_seq()
        j.append(s, _swipe(s))
    j.retire(1)
    j.close()
    before = _bytes(j.path)
    j = Journal(j.path)
    j.append(4, _swipe(4))
    j.close()
    after = _bytes(j.path)
    record = after[len(before):]
    assert len(record) == HEADER + len(_swipe(4)) + TRAILER
    for cut in range(len(record)):
        _put(j.path, before + record[:cut])
        k = Journal(j.path)
        assert k.pending() == [2, 3], (cut, k.pending())
        assert k.dropped == cut
        assert k.read(3) == _swipe(3)
        nxt = k.next_seq()
        assert nxt == 4  # 4 was never complete, so never published: unused
        k.append(nxt, _swipe(nxt))  # and the journal takes appends after the torn tail
        k.close()
        k = Journal(j.path)
        assert k.pending() == [2, 3, 4] and k.read(4) == _swipe(4) and k.dropped == 0
        k.close()
    _put(j.path, after)
    k = Journal(j.path)
    assert k.pending() == [2, 3, 4] and k.dropped == 0
    k.close()


def test_power_cut_at_every_byte_of_a_retire_write():
    j = _fresh("j3")
    for s in (1, 2):
        j.append(s, _swipe(s))
    j.close()
    before = _bytes(j.path)
    j = Journal(j.path)
    j.retire(1)
    j.close()
    record = _bytes(j.path)[len(before):]
    assert len(record) == HEADER + TRAILER
    for cut in range(len(record)):
        _put(j.path, before + record[:cut])
        k = Journal(j.path)
        assert k.pending() == [1, 2]  # the verdict is not on flash: 1 is uploaded again
        assert k.next_seq() == 3
        k.close()


def test_damaged_record_mid_file_loses_only_itself():
    j = _fresh("j4")
    for s in (1, 2, 3):
        j.append(s, _swipe(s))
    j.close()
    data = bytearray(_bytes(j.path))
    second = HEADER + len(_swipe(1)) + TRAILER
    data[second + HEADER + 2] ^= 0x40  # flip a bit inside record 2's payload (flash fault)
    _put(j.path, data)
    k = Journal(j.path)
    assert k.pending() == [1, 3]
    assert k.dropped == HEADER + len(_swipe(2)) + TRAILER
    assert k.next_seq() == 4  # 3 survived, so no seq is reused
    k.close()
    k = Journal(j.path)  # compacted: clean now
    assert k.pending() == [1, 3] and k.dropped == 0
    k.close()


def test_compaction_when_all_retired_keeps_the_counter():
    j = _fresh("j5", compact_bytes=200)
    for _ in range(20):
        s = j.next_seq()
        j.append(s, _swipe(s))
        j.retire(s)
    assert j.size() < 200  # compacted at least once: one MARK and a short tail
    assert j.depth() == 0
    j.close()
    j = Journal(j.path)
    assert j.next_seq() == 21
    j.close()


def test_full_refuses_then_drains():
    j = _fresh("j6", max_pending=3)
    for s in (1, 2, 3):
        j.append(s, _swipe(s))
    assert j.full()
    raises(JournalFull, j.append, 4, _swipe(4))
    j.retire(1)
    assert not j.full()
    j.append(4, _swipe(4))
    assert j.pending() == [2, 3, 4]
    j.close()


def test_byte_cap_compacts_live_records_then_refuses():
    j = _fresh("j7", max_bytes=400, max_pending=100)
    seq = 0
    for _ in range(30):  # retire as we go: byte cap forces compaction, never refuses
        seq = j.next_seq()
        j.append(seq, _swipe(seq))
        j.retire(seq)
    assert j.size() <= 400
    refused = False
    for _ in range(30):  # now keep them: eventually the unsettled swipes alone fill it
        seq = j.next_seq()
        try:
            j.append(seq, _swipe(seq))
        except JournalFull:
            refused = True
            break
    assert refused
    kept = j.pending()
    j.close()
    j = Journal(j.path, max_bytes=400)
    assert j.pending() == kept
    assert j.next_seq() == kept[-1] + 1
    j.close()


def test_seq_never_repeats_across_reboots_compaction_and_seq_base():
    j = _fresh("j8", compact_bytes=64)
    used = []
    for _boot in range(5):
        for _ in range(4):
            s = j.next_seq()
            j.append(s, _swipe(s))
            used.append(s)
            if s % 2:
                j.retire(s)
        for s in j.pending():
            j.retire(s)  # all settled: compacts down to the MARK
        j.close()
        j = Journal(j.path, compact_bytes=64)
    assert used == list(range(1, 21))
    assert j.next_seq() == 21
    j.close()
    j = Journal(j.path, seq_base=1000)  # a re-flashed kiosk told where the bridge is
    assert j.next_seq() == 1001
    j.append(1001, _swipe(1001))
    j.close()
    j = Journal(j.path, seq_base=0)
    assert j.next_seq() == 1002
    raises(ValueError, j.append, 5, _swipe(5))
    j.close()


def test_compaction_cut_before_rename_keeps_the_old_file():
    j = _fresh("j9")
    for s in (1, 2):
        j.append(s, _swipe(s))
    j.close()
    _put(j.path + ".new", b"\xa7\x03")  # a torn compaction output
    k = Journal(j.path)
    assert k.pending() == [1, 2]
    try:
        os.stat(j.path + ".new")
        raise AssertionError("leftover .new not removed")
    except OSError:
        pass
    k.close()
