# host-only: modelled cost of the RC522 driver's operations on the sim board.
#
# Runs firmware.rc522 against the register-level emulator (boards/sim/rc522.py) and counts,
# per operation, SPI transactions, SPI bytes and modelled milliseconds (SPI clock + a fixed
# per-transaction overhead, ISO 14443 A frames at 106 kbit/s, the chip's timer) at 1, 4 and
# 10 MHz. The figures are a model, not a measurement: the overhead per transaction
# (OVERHEAD_NS) stands for CS toggling and the host's call cost; on an ESP32 under
# MicroPython each SPI call costs more (tens of us), which mostly adds to the IRQ polling.
#
#   .venv/bin/python bench/rc522_bench.py
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from boards.sim import rc522 as sim  # noqa: E402
from boards.sim.cards import MifareClassic1K, Type2Card  # noqa: E402
from firmware import rc522  # noqa: E402

SPEEDS = (1_000_000, 4_000_000, 10_000_000)
OVERHEAD_NS = 5_000
KEY = b"\xff\xff\xff\xff\xff\xff"
UIDS = {4: b"\xed\x0b\xa9\x96", 7: b"\x04\x0a\x5b\x32\x91\x00\x80",
        10: b"\x01\x02\x03\x04\x05\x06\x07\x08\x09\x00"}


def _measure(baudrate, setup, op):
    spi, cs, rst, chip, field = sim.wire(baudrate=baudrate, overhead_ns=OVERHEAD_NS)
    r = rc522.Reader(spi, cs, rst)
    assert r.begin() == rc522.OK
    ctx = setup(r, field)
    t0, n0, b0 = chip.time.ns, spi.transactions, spi.bytes
    st = op(r, ctx)
    assert st == rc522.OK or st is None, rc522.status_name(st)
    return {"ms": (chip.time.ns - t0) / 1e6, "transactions": spi.transactions - n0,
            "bytes": spi.bytes - b0}


def _card_in_field(n):
    def setup(r, field):
        if n == 7 or n == 10:
            return field.add(Type2Card(UIDS[n]))
        return field.add(MifareClassic1K(UIDS[n]))
    return setup


def _uid_read(r, card):
    # WUPA, ANTICOLLISION/SELECT per cascade level: the UID and SAK.
    st = r.wakeup()
    if st == rc522.OK:
        st = r.select()
    assert bytes(r.uid[:r.uid_len]) == card.uid
    return st


def _poll_new(r, card):
    c = r.poll()
    assert c is not None and c.uid == card.uid
    return rc522.OK


def _empty(r, field):
    return None


def _poll_empty(r, ctx):
    assert r.poll() is None
    return rc522.OK


def _selected_classic(r, field):
    card = field.add(MifareClassic1K(UIDS[4]))
    assert r.activate(card.uid) == rc522.OK
    return card


def _auth_read(r, card):
    st = r.authenticate(rc522.KEY_A, 4, KEY, card.uid)
    if st == rc522.OK:
        st = r.mifare_read(4, bytearray(16))
    return st


def _classic(r, field):
    return field.add(MifareClassic1K(UIDS[4]))


def _read_block(r, card):
    return r.read_block(card.uid, 4, KEY)[0]


def _write_block(r, card):
    return r.write_block(card.uid, 4, bytes(16), KEY)


OPERATIONS = (
    ("rc522.no_card_ms", "poll(), empty field", _empty, _poll_empty),
    ("rc522.uid4_ms", "UID read, 4-byte UID (WUPA + anticollision/SELECT)", _card_in_field(4), _uid_read),
    ("rc522.uid7_ms", "UID read, 7-byte UID (2 cascade levels)", _card_in_field(7), _uid_read),
    ("rc522.uid10_ms", "UID read, 10-byte UID (3 cascade levels)", _card_in_field(10), _uid_read),
    ("rc522.poll_new4_ms", "poll() returning a new 4-byte card (incl. HLTA, REQA for others)",
     _card_in_field(4), _poll_new),
    ("rc522.auth_read_ms", "MFAuthent + READ of one block, card selected", _selected_classic, _auth_read),
    ("rc522.read_block_ms", "read_block(): WUPA, SELECT, auth, READ, HLTA", _classic, _read_block),
    ("rc522.write_block_ms", "write_block(): WUPA, SELECT, auth, WRITE x2, HLTA", _classic, _write_block),
)


def run():
    """Returns [{"name","value","unit","baseline","ratio","detail"}]: value at 4 MHz SPI,
    baseline the same operation at 1 MHz measured in the same run."""
    return measure()[0]


def measure():
    results = []
    table = []
    for name, what, setup, op in OPERATIONS:
        row = {}
        for hz in SPEEDS:
            row[hz] = _measure(hz, setup, op)
        table.append((name, what, row))
        v = row[4_000_000]
        base = row[1_000_000]["ms"]
        results.append({
            "name": name, "value": round(v["ms"], 3), "unit": "ms", "baseline": round(base, 3),
            "ratio": round(v["ms"] / base, 3) if base else None,
            "detail": "%s; modelled at 4 MHz SPI (baseline 1 MHz), %d us/transaction overhead; "
                      "%d SPI transactions, %d bytes; 10 MHz: %.3f ms"
                      % (what, OVERHEAD_NS // 1000, v["transactions"], v["bytes"], row[10_000_000]["ms"]),
        })
    return results, table


def main():
    results, table = measure()
    print("RC522 driver on the emulated MFRC522 (modelled; %d us overhead per SPI transaction)"
          % (OVERHEAD_NS // 1000))
    print("%-22s %8s %28s %28s %28s" % ("operation", "", "1 MHz", "4 MHz", "10 MHz"))
    print("%-22s %8s %28s %28s %28s" % ("", "", "ms / txns / bytes", "ms / txns / bytes", "ms / txns / bytes"))
    for name, _what, row in table:
        cells = ["%8.3f / %5d / %6d" % (row[hz]["ms"], row[hz]["transactions"], row[hz]["bytes"])
                 for hz in SPEEDS]
        print("%-22s %8s %28s %28s %28s" % (name, "", cells[0], cells[1], cells[2]))
    print()
    for r in results:
        print("%-22s %8.3f %s (baseline %.3f, ratio %.3f)" % (r["name"], r["value"], r["unit"],
                                                            r["baseline"], r["ratio"]))
    return results


if __name__ == "__main__":
    main()
