# firmware.rc522 against the register-level emulator on the sim board: UIDs of every
# length, one tap per presentation, auth + block read/write, two cards, a card leaving
# mid-transaction, RF noise, a missing reader. No exception may escape the driver.
from boards.sim import rc522 as sim
from boards.sim.cards import MifareClassic1K, Type2Card, Card, access_bits, with_crc
from firmware import rc522

KEY = b"\xff\xff\xff\xff\xff\xff"
UID4 = b"\xed\x0b\xa9\x96"
UID7 = b"\x04\x0a\x5b\x32\x91\x00\x80"
UID10 = b"\x01\x02\x03\x04\x05\x06\x07\x08\x09\x00"


def _reader(version=0x92, baudrate=4_000_000):
    spi, cs, rst, chip, field = sim.wire(baudrate=baudrate, version=version)
    r = rc522.Reader(spi, cs, rst)
    return r, chip, field


def _ready():
    r, chip, field = _reader()
    assert r.begin() == rc522.OK
    return r, chip, field


def test_begin_accepts_genuine_chips():
    for v in (0x91, 0x92):
        r, chip, field = _reader(v)
        assert r.begin() == rc522.OK
        assert r.version == v and r.warning is None and r.error is None
        assert chip.regs[sim.TxControlReg] & 0x03 == 0x03      # antenna on
        assert chip.regs[sim.TxASKReg] == 0x40                   # Force100ASK
        assert chip.regs[sim.TModeReg] & 0x80                    # TAuto


def test_begin_accepts_clones_with_warning():
    for v in (0x88, 0x12, 0xB2):
        r, chip, field = _reader(v)
        assert r.begin() == rc522.OK
        assert "clone" in r.warning or "counterfeit" in r.warning


def test_no_reader_is_a_clear_error_not_a_crash():
    for float_value in (0x00, 0xFF):
        r, chip, field = _reader()
        chip.miso_float = float_value
        assert r.begin() == rc522.NO_READER
        assert "wiring" in r.error
        spi = r.spi
        n0 = spi.transactions
        for _ in range(250):
            assert r.poll() is None                              # never raises, never spins
        assert spi.transactions - n0 < 40                        # retries begin() now and then
        chip.miso_float = None                                   # reader fixed: it recovers
        field.add(MifareClassic1K(UID4))
        card = None
        for _ in range(200):
            card = card or r.poll()
        assert card is not None and card.uid == UID4


def test_unknown_version_is_an_error():
    r, chip, field = _reader(0x37)
    assert r.begin() == rc522.NO_READER and "0x37" in r.error


def test_no_card_costs_about_a_millisecond():
    r, chip, field = _ready()
    t0 = chip.time.ns
    assert r.poll() is None
    dt = chip.time.ns - t0
    assert 900_000 < dt < 1_500_000, dt
    assert r.last_status == rc522.OK


def test_uid_4_bytes():
    r, chip, field = _ready()
    field.add(MifareClassic1K(UID4))
    card = r.poll()
    assert card.uid == UID4 and card.sak == 0x08 and card.atqa == b"\x04\x00"
    assert card.uid_text == "ED0BA996"                          # leading zero kept


def test_uid_7_bytes_without_cascade_tag():
    r, chip, field = _ready()
    field.add(Type2Card(UID7))
    card = r.poll()
    assert card.uid == UID7 and card.sak == 0x00
    assert card.uid_text == "040A5B32910080"


def test_uid_10_bytes():
    r, chip, field = _ready()
    field.add(Type2Card(UID10))
    card = r.poll()
    assert card.uid == UID10 and len(card.uid) == 10
    assert card.uid_text == "01020304050607080900"


def test_uid_starting_with_cascade_tag_value():
    # A 4-byte UID may not start with 88h (ISO 14443-3), but a 7-byte one's second level may.
    r, chip, field = _ready()
    uid = b"\x04\x88\x88\x88\x88\x88\x88"
    field.add(Type2Card(uid))
    assert r.poll().uid == uid


def test_one_presentation_is_one_tap():
    r, chip, field = _ready()
    c = field.add(MifareClassic1K(UID4))
    assert r.poll().uid == UID4
    for _ in range(5):
        assert r.poll() is None                                  # halted card still seen (WUPA)
        assert r.in_field(UID4)
    field.remove(c)
    assert r.poll() is None
    assert r.poll() is None
    assert not r.in_field(UID4)                                  # removed after gone_after polls
    field.add(c)
    assert r.poll().uid == UID4                                  # a new presentation


def test_read_does_not_cause_a_second_tap():
    r, chip, field = _ready()
    field.add(MifareClassic1K(UID4))
    card = r.poll()
    st, data = r.read_block(card.uid, 1, KEY)
    assert st == rc522.OK
    assert r.poll() is None and r.poll() is None


def test_auth_read_write_with_right_key():
    r, chip, field = _ready()
    c = field.add(MifareClassic1K(UID4))
    card = r.poll()
    st, data = r.read_block(card.uid, 0, KEY)
    assert st == rc522.OK and bytes(data[:4]) == UID4
    payload = bytes(range(0x40, 0x50))
    assert r.write_block(card.uid, 6, payload, KEY) == rc522.OK
    assert bytes(c.blocks[6]) == payload
    st, data = r.read_block(card.uid, 6, KEY, rc522.KEY_A)
    assert st == rc522.OK and bytes(data) == payload
    assert not chip.regs[sim.Status2Reg] & 0x08                  # StopCrypto1 done


def test_wrong_key_is_auth_failure_not_card_gone():
    r, chip, field = _ready()
    c = field.add(MifareClassic1K(UID4))
    card = r.poll()
    st, data = r.read_block(card.uid, 4, b"\x00\x00\x00\x00\x00\x00")
    assert st == rc522.AUTH_FAILED and data is None
    assert r.write_block(card.uid, 4, bytes(16), b"\x01" * 6) == rc522.AUTH_FAILED
    assert bytes(c.blocks[4]) == bytes(16)
    st, data = r.read_block(card.uid, 4, KEY)                    # the card recovers
    assert st == rc522.OK


def test_key_b_and_access_bits():
    r, chip, field = _ready()
    c = field.add(MifareClassic1K(UID4))
    kb = b"\xb0\xb1\xb2\xb3\xb4\xb5"
    # Sector 1: data blocks "100" (read A|B, write B only), trailer "011".
    c.set_trailer(1, KEY, kb, access_bits(0b100, 0b100, 0b100, 0b011) + b"\x69")
    card = r.poll()
    assert r.write_block(card.uid, 5, b"A" * 16, KEY, rc522.KEY_A) == rc522.ACCESS_DENIED
    assert r.write_block(card.uid, 5, b"B" * 16, kb, rc522.KEY_B) == rc522.OK
    st, data = r.read_block(card.uid, 5, KEY, rc522.KEY_A)
    assert st == rc522.OK and bytes(data) == b"B" * 16


def test_seven_byte_classic_auth_uses_last_four_uid_bytes():
    r, chip, field = _ready()
    c = field.add(MifareClassic1K(UID7))
    card = r.poll()
    assert card.uid == UID7 and card.sak == 0x08
    c.blocks[8][:] = b"seven byte uid!!"
    st, data = r.read_block(card.uid, 8, KEY)
    assert st == rc522.OK and bytes(data) == b"seven byte uid!!"


def test_type2_read_and_page_write():
    r, chip, field = _ready()
    c = field.add(Type2Card(UID7))
    card = r.poll()
    st, data = r.read_block(card.uid, 0)
    assert st == rc522.OK and len(data) == 16
    assert bytes(data[0:3]) == UID7[0:3] and bytes(data[4:8]) == UID7[3:7]
    assert r.write_block(card.uid, 5, b"\xde\xad\xbe\xef") == rc522.OK
    assert bytes(c.pages[5]) == b"\xde\xad\xbe\xef"
    assert r.write_block(card.uid, 99, b"\x00\x00\x00\x00") == rc522.NAK


def test_two_cards_in_field_are_two_taps():
    r, chip, field = _ready()
    field.add(MifareClassic1K(b"\x10\x20\x30\x40"))
    field.add(MifareClassic1K(b"\x11\x20\x30\x40"))             # collide in UID0 bit 0
    a = r.poll()
    b = r.poll()
    assert a is not None and b is not None
    assert sorted([a.uid, b.uid]) == [b"\x10\x20\x30\x40", b"\x11\x20\x30\x40"]
    assert r.poll() is None and r.poll() is None
    st, data = r.read_block(a.uid, 0, KEY)                       # select by UID picks the right one
    assert st == rc522.OK and bytes(data[:4]) == a.uid


def test_collisions_deep_in_the_uid_and_mixed_lengths():
    r, chip, field = _ready()
    uids = [b"\x04\x11\x22\x33\x44\x55\x66", b"\x04\x11\x22\x33\x44\x55\x67",
            b"\x04\x11\x23\x33\x44\x55\x66", b"\x5a\x11\x22\x33"]
    for u in uids:
        field.add(Type2Card(u) if len(u) == 7 else MifareClassic1K(u))
    got = []
    for _ in range(8):
        c = r.poll()
        if c is not None:
            got.append(c.uid)
    assert sorted(got) == sorted(uids)


def test_second_card_arriving_later_is_a_new_tap():
    r, chip, field = _ready()
    field.add(MifareClassic1K(UID4))
    assert r.poll().uid == UID4
    field.add(Type2Card(UID7))
    assert r.poll().uid == UID7
    assert r.poll() is None


def test_card_removed_mid_transaction():
    r, chip, field = _ready()
    c = field.add(MifareClassic1K(UID4))
    card = r.poll()
    field.leave_after(c, 2)               # answers WUPA, SELECT, then leaves during MFAuthent
    st, data = r.read_block(card.uid, 4, KEY)
    assert st == rc522.CARD_GONE and data is None
    field.add(c)
    field.leave_after(c, 3)               # leaves after auth, before READ answers
    st, data = r.read_block(card.uid, 4, KEY)
    assert st == rc522.CARD_GONE
    field.add(c)
    field.leave_after(c, 4)               # leaves after WRITE's first ACK, before the data
    assert r.write_block(card.uid, 4, b"x" * 16, KEY) == rc522.CARD_GONE
    assert bytes(c.blocks[4]) == bytes(16)
    assert not chip.regs[sim.Status2Reg] & 0x08


def test_noise_crc_parity_and_drop_are_distinct_and_recoverable():
    r, chip, field = _ready()
    field.add(MifareClassic1K(UID4))
    card = r.poll()
    field.inject_noise("parity")          # hits the WUPA answer: retried by activate
    st, data = r.read_block(card.uid, 1, KEY)
    assert st == rc522.OK
    assert r.activate(card.uid) == rc522.OK
    assert r.authenticate(rc522.KEY_A, 1, KEY, card.uid) == rc522.OK
    buf = bytearray(16)
    field.inject_noise("crc")
    assert r.mifare_read(1, buf) == rc522.CRC_ERROR
    assert r.activate(card.uid) == rc522.OK
    assert r.authenticate(rc522.KEY_A, 1, KEY, card.uid) == rc522.OK
    field.inject_noise("parity")
    assert r.mifare_read(1, buf) == rc522.PARITY_ERROR
    assert r.activate(card.uid) == rc522.OK
    assert r.authenticate(rc522.KEY_A, 1, KEY, card.uid) == rc522.OK
    field.inject_noise("drop")
    assert r.mifare_read(1, buf) == rc522.TIMEOUT
    st, data = r.read_block(card.uid, 1, KEY)
    assert st == rc522.OK


def test_noise_during_polling_does_not_make_extra_taps():
    r, chip, field = _ready()
    field.add(MifareClassic1K(UID4))
    taps = 0
    for i in range(40):
        if i % 3 == 0:
            field.inject_noise(("crc", "parity", "drop")[i % 9 // 3])
        if r.poll() is not None:
            taps += 1
    assert taps == 1


def test_noisy_anticollision_is_bcc_error():
    r, chip, field = _ready()
    field.add(MifareClassic1K(UID4))
    assert r.wakeup() == rc522.OK
    field.inject_noise("crc")             # flips a bit of the UID CLn answer
    assert r.select() == rc522.BCC_ERROR


class _Chatty(Card):
    """A card that answers READ with more than the 64-byte FIFO holds."""

    def command(self, frame, nbytes):
        return with_crc(bytes(70)), 72 * 8


def test_buffer_overflow_is_reported():
    r, chip, field = _ready()
    field.add(_Chatty(b"\x01\x02\x03\x04"))
    card = r.poll()
    st, data = r.read_block(card.uid, 0)
    assert st == rc522.BUFFER_OVERFLOW


def test_calc_crc_with_the_coprocessor():
    r, chip, field = _ready()
    assert r.calc_crc(b"\x50\x00", 2) == (rc522.OK, 0xCD57)
    assert r.calc_crc(b"\x00\x00", 2) == (rc522.OK, 0x1EA0)


def test_halt_then_reqa_does_not_wake_but_wupa_does():
    r, chip, field = _ready()
    field.add(MifareClassic1K(UID4))
    assert r.request() == rc522.OK and r.select() == rc522.OK
    assert r.halt() == rc522.OK
    assert r.request(rc522.PICC_REQA) == rc522.NO_CARD
    assert r.request(rc522.PICC_WUPA) == rc522.OK


def test_read_of_absent_card_is_card_gone():
    r, chip, field = _ready()
    st, data = r.read_block(UID4, 4, KEY)
    assert st == rc522.CARD_GONE
    assert r.read_block(b"\x01\x02", 4, KEY)[0] == rc522.INVALID


def test_statuses_are_distinct_and_named():
    names = rc522.STATUS_NAMES
    assert len(names) == len(set(names)) == 17
    assert rc522.status_name(rc522.CARD_GONE) == "card left the field"
    assert rc522.status_name(99) == "status 99"


class _BrokenSPI:
    def write(self, buf):
        raise OSError(5)

    def write_readinto(self, w, r):
        raise OSError(5)


def test_spi_fault_never_escapes():
    spi, cs, rst, chip, field = sim.wire()
    r = rc522.Reader(_BrokenSPI(), cs, rst)
    assert r.begin() == rc522.NO_READER and "SPI" in r.error
    assert r.poll() is None
    assert r.read_block(UID4, 1, KEY) == (rc522.NO_READER, None)


class _BuggyField:
    """Stands in for a driver bug: the SPI object raises something that is not OSError."""

    def write(self, buf):
        raise ValueError("boom")

    def write_readinto(self, w, r):
        raise ValueError("boom")


def test_unexpected_exception_is_reported_not_raised():
    r, chip, field = _ready()
    r.spi = _BuggyField()
    assert r.poll() is None and r.last_status == rc522.INTERNAL_ERROR and "boom" in r.error
    assert r.read_block(UID4, 1, KEY)[0] == rc522.INTERNAL_ERROR
    assert r.write_block(UID4, 1, bytes(16), KEY) == rc522.INTERNAL_ERROR


def test_antenna_off_means_no_card():
    r, chip, field = _ready()
    field.add(MifareClassic1K(UID4))
    r.antenna_off()
    assert r.request() == rc522.NO_CARD
    r.antenna_on()
    assert r.request() == rc522.OK


def test_poll_path_reuses_buffers():
    r, chip, field = _ready()
    field.add(MifareClassic1K(UID4))
    bufs = (r.rx, r.tx, r.uid, r._tw, r._tr)
    r.poll()
    for _ in range(3):
        r.poll()
    assert (r.rx, r.tx, r.uid, r._tw, r._tr) == bufs
    assert all(a is b for a, b in zip((r.rx, r.tx, r.uid, r._tw, r._tr), bufs))


class _QuietSPI:
    """A reader with nothing in the field, without the emulator's own allocations: every
    register reads 0x01 (ComIrqReg.TimerIRq: the chip timer ran out)."""

    def write(self, buf):
        pass

    def write_readinto(self, w, r):
        for i in range(len(r)):
            r[i] = 0x01


def test_no_card_poll_allocates_nothing():
    import gc
    spi, cs, rst, chip, field = sim.wire()
    r = rc522.Reader(_QuietSPI(), cs, rst)
    r.ready = True
    r.poll()
    if not hasattr(gc, "mem_alloc"):
        return                            # CPython: measured under MicroPython only
    gc.collect()
    before = gc.mem_alloc()
    for _ in range(10):
        assert r.poll() is None
    used = gc.mem_alloc() - before
    assert used == 0, used           # steady state: no heap use at all


def test_read_refused_by_access_bits_is_access_denied():
    r, chip, field = _ready()
    c = field.add(MifareClassic1K(UID4))
    kb = b"\xb0\xb1\xb2\xb3\xb4\xb5"
    c.set_trailer(2, KEY, kb, access_bits(0b011, 0b011, 0b011, 0b011) + b"\x69")   # read: key B
    card = r.poll()
    assert r.read_block(card.uid, 8, KEY, rc522.KEY_A) == (rc522.ACCESS_DENIED, None)
    st, data = r.read_block(card.uid, 8, kb, rc522.KEY_B)
    assert st == rc522.OK
    assert r.poll() is None                                    # still the same presentation
