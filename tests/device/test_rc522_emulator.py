# The MFRC522 emulator checked against the datasheet, through raw SPI bytes only (no
# driver): address byte (addr << 1) & 0x7E with bit 7 for reads, burst FIFO access, reset
# values, FIFO level/flush/overflow, CalcCRC results for known CRC_A vectors, short frames,
# bit-oriented anticollision frames and collisions, the timer, MFAuthent and Status2Reg.
from boards.sim import rc522 as sim
from boards.sim.cards import (MifareClassic1K, Type2Card, access_bits, decode_access,
                              value_block, parse_value_block, crc_a, with_crc)

KEY = b"\xff\xff\xff\xff\xff\xff"


def _board(**kw):
    spi, cs, rst, chip, field = sim.wire(**kw)
    return spi, cs, chip, field


def _rd(spi, cs, reg):
    buf = bytearray(2)
    cs.value(0)
    spi.write_readinto(bytes((0x80 | ((reg << 1) & 0x7E), 0)), buf)
    cs.value(1)
    return buf[1]


def _wr(spi, cs, reg, *vals):
    cs.value(0)
    spi.write(bytes(((reg << 1) & 0x7E,) + vals))
    cs.value(1)


def _rd_fifo(spi, cs, n):
    a = 0x80 | (sim.FIFODataReg << 1)
    tx = bytes([a] * n + [0])
    rx = bytearray(n + 1)
    cs.value(0)
    spi.write_readinto(tx, rx)
    cs.value(1)
    return bytes(rx[1:])


def _antenna(spi, cs):
    _wr(spi, cs, sim.TModeReg, 0x80)        # TAuto, prescaler 0x0A9 -> 25 us ticks
    _wr(spi, cs, sim.TPrescalerReg, 0xA9)
    _wr(spi, cs, sim.TReloadRegH, 0x00)
    _wr(spi, cs, sim.TReloadRegL, 40)       # 41 ticks, ~1 ms
    _wr(spi, cs, sim.ModeReg, 0x3D)         # CRCPreset 01: 6363h, as CRC_A needs
    _wr(spi, cs, sim.TxControlReg, 0x83)


def _transceive(spi, cs, chip, data, last_bits=0, rx_align=0):
    _wr(spi, cs, sim.CommandReg, sim.Idle)
    _wr(spi, cs, sim.ComIrqReg, 0x7F)
    _wr(spi, cs, sim.FIFOLevelReg, 0x80)
    _wr(spi, cs, sim.FIFODataReg, *data)
    _wr(spi, cs, sim.BitFramingReg, (rx_align << 4) | last_bits)
    _wr(spi, cs, sim.CommandReg, sim.Transceive)
    _wr(spi, cs, sim.BitFramingReg, 0x80 | (rx_align << 4) | last_bits)
    for _ in range(10000):
        irq = _rd(spi, cs, sim.ComIrqReg)
        if irq & 0x21:
            return irq
    raise AssertionError("no IRQ")


def test_version_and_reset_values():
    spi, cs, chip, field = _board(version=0x91)
    assert _rd(spi, cs, sim.VersionReg) == 0x91
    assert _rd(spi, cs, sim.CommandReg) == 0x20
    assert _rd(spi, cs, sim.ComIrqReg) == 0x14
    assert _rd(spi, cs, sim.ModeReg) == 0x3F
    assert _rd(spi, cs, sim.TxControlReg) == 0x80
    assert _rd(spi, cs, sim.RFCfgReg) == 0x48
    assert _rd(spi, cs, sim.WaterLevelReg) == 0x08


def test_read_only_version_and_soft_reset():
    spi, cs, chip, field = _board()
    _wr(spi, cs, sim.VersionReg, 0x00)
    assert _rd(spi, cs, sim.VersionReg) == 0x92
    _wr(spi, cs, sim.ModeReg, 0x3D)
    _wr(spi, cs, sim.RFCfgReg, 0x70)
    _wr(spi, cs, sim.CommandReg, sim.SoftReset)
    assert _rd(spi, cs, sim.ModeReg) == 0x3F
    assert _rd(spi, cs, sim.RFCfgReg) == 0x48


def test_burst_read_of_several_registers():
    spi, cs, chip, field = _board()
    tx = bytes((0x80 | (sim.VersionReg << 1), 0x80 | (sim.ModeReg << 1), 0x80 | (sim.RFCfgReg << 1), 0))
    rx = bytearray(4)
    cs.value(0)
    spi.write_readinto(tx, rx)
    cs.value(1)
    assert rx[1:] == bytearray((0x92, 0x3F, 0x48))


def test_fifo_level_burst_and_flush():
    spi, cs, chip, field = _board()
    _wr(spi, cs, sim.FIFODataReg, 1, 2, 3, 4, 5)
    assert _rd(spi, cs, sim.FIFOLevelReg) == 5
    assert _rd_fifo(spi, cs, 2) == b"\x01\x02"
    assert _rd(spi, cs, sim.FIFOLevelReg) == 3
    _wr(spi, cs, sim.FIFOLevelReg, 0x80)     # FlushBuffer
    assert _rd(spi, cs, sim.FIFOLevelReg) == 0


def test_fifo_overflow_sets_bufferovfl_and_flush_clears_it():
    spi, cs, chip, field = _board()
    _wr(spi, cs, sim.FIFODataReg, *range(70))
    assert _rd(spi, cs, sim.FIFOLevelReg) == 64
    assert _rd(spi, cs, sim.ErrorReg) & 0x10
    assert _rd(spi, cs, sim.ComIrqReg) & 0x02    # ErrIRq
    _wr(spi, cs, sim.FIFOLevelReg, 0x80)
    assert _rd(spi, cs, sim.ErrorReg) & 0x10 == 0


def test_status1_alerts_follow_water_level():
    spi, cs, chip, field = _board()
    assert _rd(spi, cs, sim.Status1Reg) & 0x01       # LoAlert: empty FIFO <= WaterLevel 8
    _wr(spi, cs, sim.FIFODataReg, *range(60))
    s = _rd(spi, cs, sim.Status1Reg)
    assert s & 0x02 and not s & 0x01                 # HiAlert: 4 free <= 8


def test_comirq_set1_semantics():
    spi, cs, chip, field = _board()
    _wr(spi, cs, sim.ComIrqReg, 0x7F)        # Set1 = 0: clear the marked bits
    assert _rd(spi, cs, sim.ComIrqReg) == 0
    _wr(spi, cs, sim.ComIrqReg, 0x80 | 0x21)  # Set1 = 1: set the marked bits
    assert _rd(spi, cs, sim.ComIrqReg) == 0x21


def _calc_crc(spi, cs, data, preset_bits=0x01):
    _wr(spi, cs, sim.ModeReg, 0x3C | preset_bits)
    _wr(spi, cs, sim.DivIrqReg, 0x04)
    _wr(spi, cs, sim.FIFODataReg, *data)
    _wr(spi, cs, sim.CommandReg, sim.CalcCRC)
    assert _rd(spi, cs, sim.DivIrqReg) & 0x04            # CRCIRq
    h = _rd(spi, cs, sim.CRCResultRegH)
    lo = _rd(spi, cs, sim.CRCResultRegL)
    _wr(spi, cs, sim.CommandReg, sim.Idle)
    return h, lo


def test_calccrc_known_vectors():
    spi, cs, chip, field = _board()
    # ISO/IEC 14443-3 annex B: CRC_A(00 00) = 1EA0h (sent A0 1E); HLTA 50 00 -> 57 CD;
    # READ block 0 (30 00) -> 02 A8.
    assert _calc_crc(spi, cs, (0x00, 0x00)) == (0x1E, 0xA0)
    assert _calc_crc(spi, cs, (0x50, 0x00)) == (0xCD, 0x57)
    assert _calc_crc(spi, cs, (0x30, 0x00)) == (0xA8, 0x02)
    assert _rd(spi, cs, sim.FIFOLevelReg) == 0           # the coprocessor consumed the FIFO
    assert crc_a(b"\x00\x00") == 0x1EA0


def test_calccrc_preset_from_modereg():
    spi, cs, chip, field = _board()
    assert _calc_crc(spi, cs, (), 0x00) == (0x00, 0x00)   # CRCPreset 00: 0000h
    assert _calc_crc(spi, cs, (), 0x03) == (0xFF, 0xFF)   # CRCPreset 11: FFFFh


def test_short_frame_reqa_gets_atqa():
    spi, cs, chip, field = _board()
    field.add(MifareClassic1K(b"\x01\x02\x03\x04"))
    _antenna(spi, cs)
    irq = _transceive(spi, cs, chip, (0x26,), last_bits=7)
    assert irq & 0x20 and not irq & 0x01
    assert _rd(spi, cs, sim.FIFOLevelReg) == 2
    assert _rd_fifo(spi, cs, 2) == b"\x04\x00"
    assert _rd(spi, cs, sim.ControlReg) & 0x07 == 0      # RxLastBits: whole bytes


def test_reqa_as_full_byte_is_not_a_short_frame():
    spi, cs, chip, field = _board()
    field.add(MifareClassic1K(b"\x01\x02\x03\x04"))
    _antenna(spi, cs)
    irq = _transceive(spi, cs, chip, (0x26,), last_bits=0)
    assert irq & 0x01 and not irq & 0x20                 # TimerIRq, nothing received


def test_no_antenna_no_answer_and_timer_period():
    spi, cs, chip, field = _board()
    field.add(MifareClassic1K(b"\x01\x02\x03\x04"))
    _antenna(spi, cs)
    _wr(spi, cs, sim.TxControlReg, 0x80)                 # antenna off
    t0 = chip.time.ns
    irq = _transceive(spi, cs, chip, (0x26,), last_bits=7)
    assert irq & 0x01 and not irq & 0x20
    # (2 * 169 + 1) * (40 + 1) / 13.56 MHz = 1025 us after the end of the 9-bit frame.
    dt = chip.time.ns - t0
    assert 1_025_000 < dt < 1_200_000


def test_anticollision_two_cards_reports_collision_position():
    spi, cs, chip, field = _board()
    field.add(MifareClassic1K(b"\x10\x00\x00\x00"))
    field.add(MifareClassic1K(b"\x00\x00\x00\x00"))     # first difference: UID0 bit 4
    _antenna(spi, cs)
    _transceive(spi, cs, chip, (0x52,), last_bits=7)
    _wr(spi, cs, sim.CollReg, 0x00)                       # ValuesAfterColl = 0
    irq = _transceive(spi, cs, chip, (0x93, 0x20))
    assert irq & 0x20
    assert _rd(spi, cs, sim.ErrorReg) & 0x08              # CollErr
    coll = _rd(spi, cs, sim.CollReg)
    assert not coll & 0x20 and coll & 0x1F == 5           # 5th bit (1-based)
    # Bit-oriented frame: SEL, NVB 0x25 and the first 5 bits (bit 4 = 1) -> only card 1.
    irq = _transceive(spi, cs, chip, (0x93, 0x25, 0x10), last_bits=5, rx_align=5)
    assert irq & 0x20 and not _rd(spi, cs, sim.ErrorReg) & 0x08
    assert _rd(spi, cs, sim.ControlReg) & 0x07 == 0       # 5 + 35 bits = 5 whole bytes
    got = _rd_fifo(spi, cs, _rd(spi, cs, sim.FIFOLevelReg))
    assert got[0] & 0xE0 == 0x00 and got[1:] == b"\x00\x00\x00\x10"   # rest of UID0, UID1-3, BCC


def test_tx_crc_select_and_rx_crc_strip():
    spi, cs, chip, field = _board()
    card = field.add(MifareClassic1K(b"\x01\x02\x03\x04"))
    _antenna(spi, cs)
    _transceive(spi, cs, chip, (0x52,), last_bits=7)
    _wr(spi, cs, sim.TxModeReg, 0x80)                     # TxCRCEn
    _wr(spi, cs, sim.RxModeReg, 0x80)                     # RxCRCEn
    irq = _transceive(spi, cs, chip, (0x93, 0x70, 1, 2, 3, 4, 1 ^ 2 ^ 3 ^ 4))
    assert irq & 0x20
    assert _rd(spi, cs, sim.FIFOLevelReg) == 1            # SAK only, CRC stripped
    assert _rd_fifo(spi, cs, 1) == b"\x08"
    assert card.state == 2                                # ACTIVE


def test_crc_preset_ffff_breaks_select():
    spi, cs, chip, field = _board()
    field.add(MifareClassic1K(b"\x01\x02\x03\x04"))
    _antenna(spi, cs)
    _wr(spi, cs, sim.ModeReg, 0x3F)                       # reset value: CRC preset FFFFh
    irq = _select(spi, cs, chip, b"\x01\x02\x03\x04")
    assert irq & 0x01 and not irq & 0x20                  # card drops the bad CRC_A


def test_select_without_crc_is_ignored():
    spi, cs, chip, field = _board()
    field.add(MifareClassic1K(b"\x01\x02\x03\x04"))
    _antenna(spi, cs)
    _transceive(spi, cs, chip, (0x52,), last_bits=7)
    irq = _transceive(spi, cs, chip, (0x93, 0x70, 1, 2, 3, 4, 4))
    assert irq & 0x01 and not irq & 0x20


def _select(spi, cs, chip, uid4):
    _transceive(spi, cs, chip, (0x52,), last_bits=7)
    _wr(spi, cs, sim.TxModeReg, 0x80)
    _wr(spi, cs, sim.RxModeReg, 0x80)
    b = uid4[0] ^ uid4[1] ^ uid4[2] ^ uid4[3]
    return _transceive(spi, cs, chip, (0x93, 0x70) + tuple(uid4) + (b,))


def _mfauthent(spi, cs, chip, cmd, block, key, uid4):
    _wr(spi, cs, sim.CommandReg, sim.Idle)
    _wr(spi, cs, sim.ComIrqReg, 0x7F)
    _wr(spi, cs, sim.FIFOLevelReg, 0x80)
    _wr(spi, cs, sim.FIFODataReg, *((cmd, block) + tuple(key) + tuple(uid4)))
    _wr(spi, cs, sim.CommandReg, sim.MFAuthent)
    for _ in range(10000):
        irq = _rd(spi, cs, sim.ComIrqReg)
        if irq & 0x11:
            return irq
    raise AssertionError("no IRQ")


def test_mfauthent_sets_crypto1on_and_software_clears_it():
    spi, cs, chip, field = _board()
    field.add(MifareClassic1K(b"\x01\x02\x03\x04"))
    _antenna(spi, cs)
    _select(spi, cs, chip, b"\x01\x02\x03\x04")
    irq = _mfauthent(spi, cs, chip, 0x60, 4, KEY, b"\x01\x02\x03\x04")
    assert irq & 0x10                                     # IdleIRq: command terminated
    assert _rd(spi, cs, sim.Status2Reg) & 0x08           # MFCrypto1On
    assert _rd(spi, cs, sim.CommandReg) & 0x0F == sim.Idle
    _wr(spi, cs, sim.Status2Reg, 0x00)
    assert not _rd(spi, cs, sim.Status2Reg) & 0x08
    _wr(spi, cs, sim.Status2Reg, 0x08)                    # software cannot set it
    assert not _rd(spi, cs, sim.Status2Reg) & 0x08


def test_mfauthent_wrong_key_times_out():
    spi, cs, chip, field = _board()
    field.add(MifareClassic1K(b"\x01\x02\x03\x04"))
    _antenna(spi, cs)
    _select(spi, cs, chip, b"\x01\x02\x03\x04")
    irq = _mfauthent(spi, cs, chip, 0x60, 4, b"\x00" * 6, b"\x01\x02\x03\x04")
    assert irq & 0x01 and not irq & 0x10
    assert not _rd(spi, cs, sim.Status2Reg) & 0x08


def test_seven_byte_classic_authenticates_with_last_four_uid_bytes():
    card = MifareClassic1K(b"\x04\x11\x22\x33\x44\x55\x66")
    assert card.auth_uid() == b"\x33\x44\x55\x66"
    card.state = 2
    assert not card.authenticate(0x60, 4, KEY, b"\x04\x11\x22\x33")
    card.state = 2
    assert card.authenticate(0x60, 4, KEY, b"\x33\x44\x55\x66")


def test_classic_read_after_auth_and_plain_text_is_garbage():
    spi, cs, chip, field = _board()
    card = field.add(MifareClassic1K(b"\x01\x02\x03\x04"))
    card.blocks[5][:] = bytes(range(16))
    _antenna(spi, cs)
    _select(spi, cs, chip, b"\x01\x02\x03\x04")
    _mfauthent(spi, cs, chip, 0x60, 4, KEY, b"\x01\x02\x03\x04")
    irq = _transceive(spi, cs, chip, (0x30, 5))
    assert irq & 0x20
    assert _rd_fifo(spi, cs, _rd(spi, cs, sim.FIFOLevelReg)) == bytes(range(16))
    _wr(spi, cs, sim.Status2Reg, 0x00)                    # StopCrypto1, card still in session
    irq = _transceive(spi, cs, chip, (0x30, 5))
    assert irq & 0x01 and not irq & 0x20


def test_access_bits_and_value_blocks():
    assert access_bits(0, 0, 0, 1) == b"\xff\x07\x80"      # transport configuration
    assert decode_access(0xFF, 0x07, 0x80) == [0, 0, 0, 1]
    assert decode_access(0xFF, 0x07, 0x81) is None
    v = value_block(-5, 4)
    assert parse_value_block(v) == -5 and v[12:] == b"\x04\xfb\x04\xfb"


def test_classic_trailer_hides_key_a_and_write_needs_key_b():
    card = MifareClassic1K(b"\x01\x02\x03\x04")
    card.set_trailer(1, KEY, b"\xb0" * 6, access_bits(0b100, 0, 0, 0b011) + b"\x00")
    card.state = 2
    assert card.authenticate(0x60, 4, KEY, card.uid)
    data, n = card.receive(with_crc(b"\x30\x07"), 32)
    assert data[:6] == bytes(6)                            # key A never readable
    r = card.receive(with_crc(b"\xa0\x04"), 32)
    assert r == (b"\x04", 4)                               # NAK: write needs key B


def test_classic_value_block_increment_transfer():
    card = MifareClassic1K(b"\x01\x02\x03\x04")
    card.blocks[4][:] = value_block(100, 4)
    card.state = 2
    assert card.authenticate(0x60, 4, KEY, card.uid)
    assert card.receive(with_crc(b"\xc1\x04"), 32) == (b"\x0a", 4)
    assert card.receive(with_crc(b"\x07\x00\x00\x00"), 48) is None
    assert card.receive(with_crc(b"\xb0\x04"), 32) == (b"\x0a", 4)
    assert parse_value_block(card.blocks[4]) == 107


def test_type2_read_returns_16_bytes_and_rolls_over():
    card = Type2Card(b"\x04\x01\x02\x03\x04\x05\x06")
    card.state = 2
    data, n = card.receive(with_crc(b"\x30\x0e"), 32)
    assert n == 144 and len(data) == 18
    assert data[8:12] == bytes(card.pages[0])             # page 15 then 0


def test_rst_low_powers_down():
    spi, cs, rst, chip, field = sim.wire()
    rst.value(0)
    assert _rd(spi, cs, sim.VersionReg) == 0x00
    rst.value(1)
    assert _rd(spi, cs, sim.VersionReg) == 0x92


def test_spi_timing_model():
    spi, cs, chip, field = _board(baudrate=1_000_000, overhead_ns=0)
    t0 = chip.time.ns
    _rd(spi, cs, sim.VersionReg)                          # 2 bytes = 16 bits at 1 MHz
    assert chip.time.ns - t0 == 16_000


class _PublicStyleDriver:
    """A second, independent driver written the way the popular public MicroPython MFRC522
    drivers are: one SPI transaction per register, read-modify-write of the IRQ flags, CRC
    computed with CalcCRC and appended by software (TxCRCEn/RxCRCEn left at their reset 0),
    a long 0.5 ms-tick timer. The emulator must serve it unchanged."""

    def __init__(self, spi, cs):
        self.spi = spi
        self.cs = cs

    def w(self, reg, val):
        _wr(self.spi, self.cs, reg, val)

    def r(self, reg):
        return _rd(self.spi, self.cs, reg)

    def sflags(self, reg, mask):
        self.w(reg, self.r(reg) | mask)

    def cflags(self, reg, mask):
        self.w(reg, self.r(reg) & (~mask & 0xFF))

    def init(self):
        self.w(0x01, 0x0F)
        self.w(0x2A, 0x8D)
        self.w(0x2B, 0x3E)
        self.w(0x2D, 30)
        self.w(0x2C, 0)
        self.w(0x15, 0x40)
        self.w(0x11, 0x3D)
        if ~(self.r(0x14) & 0x03):
            self.sflags(0x14, 0x03)

    def tocard(self, cmd, send):
        irq_en, wait_irq = (0x12, 0x10) if cmd == 0x0E else (0x77, 0x30)
        self.w(0x02, irq_en | 0x80)
        self.cflags(0x04, 0x80)
        self.sflags(0x0A, 0x80)
        self.w(0x01, 0x00)
        for c in send:
            self.w(0x09, c)
        self.w(0x01, cmd)
        if cmd == 0x0C:
            self.sflags(0x0D, 0x80)
        for _ in range(2000):
            n = self.r(0x04)
            if n & 0x01 or n & wait_irq:
                break
        self.cflags(0x0D, 0x80)
        if self.r(0x06) & 0x1B:
            return "ERR", [], 0
        if n & irq_en & 0x01 and not n & wait_irq:
            return "NOTAG", [], 0
        data = []
        bits = 0
        if cmd == 0x0C:
            n = self.r(0x0A)
            lbits = self.r(0x0C) & 0x07
            bits = (n - 1) * 8 + lbits if lbits else n * 8
            data = [self.r(0x09) for _ in range(n)]
        return "OK", data, bits

    def crc(self, data):
        self.cflags(0x05, 0x04)
        self.sflags(0x0A, 0x80)
        for c in data:
            self.w(0x09, c)
        self.w(0x01, 0x03)
        for _ in range(255):
            if self.r(0x05) & 0x04:
                break
        return [self.r(0x22), self.r(0x21)]


def test_public_style_driver_reads_uid_authenticates_reads_and_writes():
    spi, cs, chip, field = _board()
    card = field.add(MifareClassic1K(b"\x0d\x0e\x0a\x0d"))
    d = _PublicStyleDriver(spi, cs)
    d.init()
    d.w(0x0D, 0x07)
    st, data, bits = d.tocard(0x0C, [0x26])                 # REQA
    assert st == "OK" and bits == 0x10
    d.w(0x0D, 0x00)
    st, ser, bits = d.tocard(0x0C, [0x93, 0x20])            # ANTICOLLISION CL1
    assert st == "OK" and ser == [0x0D, 0x0E, 0x0A, 0x0D, 0x0D ^ 0x0E ^ 0x0A ^ 0x0D]
    buf = [0x93, 0x70] + ser
    st, data, bits = d.tocard(0x0C, buf + d.crc(buf))       # SELECT
    assert st == "OK" and bits == 0x18 and data[0] == 0x08
    st, data, bits = d.tocard(0x0E, [0x60, 8] + [0xFF] * 6 + ser[:4])
    assert st == "OK" and d.r(0x08) & 0x08
    buf = [0xA0, 8]
    st, data, bits = d.tocard(0x0C, buf + d.crc(buf))       # WRITE: 4-bit ACK
    assert st == "OK" and bits == 4 and data[0] & 0x0F == 0x0A
    payload = list(range(16))
    st, data, bits = d.tocard(0x0C, payload + d.crc(payload))
    assert st == "OK" and bits == 4 and data[0] & 0x0F == 0x0A
    buf = [0x30, 8]
    st, data, bits = d.tocard(0x0C, buf + d.crc(buf))       # READ: 16 bytes + CRC_A
    assert st == "OK" and data[:16] == payload and len(data) == 18
    d.cflags(0x08, 0x08)                                    # StopCrypto1
    assert bytes(card.blocks[8]) == bytes(payload)


def test_public_style_driver_no_card_is_notag():
    spi, cs, chip, field = _board()
    d = _PublicStyleDriver(spi, cs)
    d.init()
    d.w(0x0D, 0x07)
    t0 = chip.time.ns
    assert d.tocard(0x0C, [0x26])[0] == "NOTAG"
    assert chip.time.ns - t0 > 15_000_000     # its 31 x 0.5 ms timer: the tens of ms we avoid


def test_transmit_command_ends_by_itself_with_txirq():
    spi, cs, chip, field = _board()
    _antenna(spi, cs)
    _wr(spi, cs, sim.ComIrqReg, 0x7F)
    _wr(spi, cs, sim.FIFODataReg, 0x50, 0x00, 0x57, 0xCD)   # HLTA with its CRC_A
    _wr(spi, cs, sim.CommandReg, sim.Transmit)
    for _ in range(1000):
        irq = _rd(spi, cs, sim.ComIrqReg)
        if irq & 0x10:
            break
    assert irq & 0x50 == 0x50                                # TxIRq and IdleIRq
    assert _rd(spi, cs, sim.CommandReg) & 0x0F == sim.Idle
