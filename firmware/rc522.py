"""NXP MFRC522 reader driver over SPI (ISO/IEC 14443 A, MIFARE Classic, type 2 tags).

Runs on MicroPython (machine.SPI + machine.Pin) and on CPython against the sim board
(boards.sim.machine / boards.sim.rc522). Integer-only; no allocation on the poll path
except the Card object returned for a new tap.

Public API
----------
    r = Reader(spi, cs, rst=None, gain=RX_GAIN_43DB, gone_after=2)
        spi: object with write(buf) and write_readinto(wbuf, rbuf) (machine.SPI, mode 0,
             MSB first, up to 10 MHz); cs, rst: Pin-like objects with value(v).
    r.begin() -> status            OK, or NO_READER (r.error says why: no answer 0x00/0xFF,
                                   unknown VersionReg). r.version, r.warning ("clone chip")
    r.poll() -> Card | None        a Card only when a card newly enters the field (one
                                   presentation = one tap); None while nothing is there or
                                   the same card stays. Never raises; retries begin() every
                                   `retry_polls` polls when the reader is absent.
    r.in_field(uid) -> bool        the card was seen by the last polls (not yet "removed";
                                   a card counts as removed after `gone_after` polls
                                   without an answer, so one missed poll is no new tap)
    r.activate(uid) -> status      WUPA + SELECT of that card (OK, NO_CARD, ...); the
                                   helpers below call it themselves and HLTA afterwards
    r.read_block(uid, block, key=None, key_type=KEY_A, out=None) -> (status, data|None)
        16 bytes of a MIFARE Classic block (key: 6 bytes, authenticates the block's sector)
        or of a type 2 tag (key None: READ returns pages block..block+3).
    r.write_block(uid, block, data, key=None, key_type=KEY_A) -> status
        16 bytes to a Classic block (two-step WRITE, ACK/NAK), or, with key None, the
        first 4 bytes to a type 2 page (WRITE 0xA2).
    Card: .uid (bytes, 4/7/10), .sak, .atqa (bytes), .uid_text (protocol.uid.uid_hex form)

    Status codes (module constants; status_name(st) gives the text):
    OK 0, NO_CARD 1, TIMEOUT 2, CRC_ERROR 3, PARITY_ERROR 4, COLLISION 5,
    BUFFER_OVERFLOW 6, AUTH_FAILED 7, CARD_GONE 8, PROTOCOL_ERROR 9, NAK 10,
    BCC_ERROR 11, NO_READER 12, INVALID 13, CHIP_TIMEOUT 14, ACCESS_DENIED 15 (NAK 0x4:
    the access bits forbid it), INTERNAL_ERROR 16 (an exception inside the driver, text
    in r.error). NAK 10 is any other NAK (0x0/0x1/0x5). TIMEOUT means the card stopped
    answering but still answers WUPA; CARD_GONE means nothing with that UID answers.
    r.last_status holds the status of the last poll/read/write.

Lower level (class MFRC522, each ISO 14443 step a method returning a status):
    init(), version_check(), antenna_on(), antenna_off(), set_gain(g), set_timeout_us(us),
    calc_crc(data, n) -> (status, crc16), transceive(data, n, valid_bits, rx_align,
    tx_crc, rx_crc) (answer in .rx / .rx_len / .rx_last_bits), request(cmd), select()
    (anticollision, fills .uid/.uid_len/.sak), select_uid(uid), halt(), authenticate(
    key_type, block, key, uid), mifare_read(block, out), mifare_write(block, data),
    type2_write(page, data), stop_crypto1().

Hardware facts used (datasheet rev. 3.9): SPI address byte (addr << 1) & 0x7E, bit 7 set
to read (8.1.2.3); the timer ticks at 13.56 MHz / (2 * TPrescaler + 1) and, with
TModeReg.TAuto, starts at the end of each transmission and stops on reception (9.3.3.10);
the FIFO holds 64 bytes.
"""

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

# --- MFRC522 registers (datasheet table 20) ---
CommandReg = const(0x01)
ComIEnReg = const(0x02)
DivIEnReg = const(0x03)
ComIrqReg = const(0x04)
DivIrqReg = const(0x05)
ErrorReg = const(0x06)
Status1Reg = const(0x07)
Status2Reg = const(0x08)
FIFODataReg = const(0x09)
FIFOLevelReg = const(0x0A)
WaterLevelReg = const(0x0B)
ControlReg = const(0x0C)
BitFramingReg = const(0x0D)
CollReg = const(0x0E)
ModeReg = const(0x11)
TxModeReg = const(0x12)
RxModeReg = const(0x13)
TxControlReg = const(0x14)
TxASKReg = const(0x15)
CRCResultRegH = const(0x21)
CRCResultRegL = const(0x22)
RFCfgReg = const(0x26)
TModeReg = const(0x2A)
TPrescalerReg = const(0x2B)
TReloadRegH = const(0x2C)
TReloadRegL = const(0x2D)
VersionReg = const(0x37)

# --- MFRC522 commands (CommandReg[3:0], datasheet table 149) ---
PCD_Idle = const(0x00)
PCD_Mem = const(0x01)
PCD_CalcCRC = const(0x03)
PCD_Transmit = const(0x04)
PCD_Transceive = const(0x0C)
PCD_MFAuthent = const(0x0E)
PCD_SoftReset = const(0x0F)

# --- register bits ---
_PowerDown = const(0x10)      # CommandReg
_TimerIRq = const(0x01)       # ComIrqReg: TimerIRq, ErrIRq, IdleIRq, RxIRq
_ErrIRq = const(0x02)
_IdleIRq = const(0x10)
_RxIRq = const(0x20)
_CRCIRq = const(0x04)         # DivIrqReg
_FlushBuffer = const(0x80)    # FIFOLevelReg
_StartSend = const(0x80)      # BitFramingReg
_MFCrypto1On = const(0x08)    # Status2Reg
_CollPosNotValid = const(0x20)  # CollReg
_BufferOvfl = const(0x10)     # ErrorReg
_CollErr = const(0x08)
_CRCErr = const(0x04)
_ParityErr = const(0x02)
_ProtocolErr = const(0x01)

# RFCfgReg RxGain[2:0] (bits 6..4): 18, 23, 18, 23, 33, 38, 43, 48 dB
RX_GAIN_18DB = const(0x00)
RX_GAIN_23DB = const(0x01)
RX_GAIN_33DB = const(0x04)
RX_GAIN_38DB = const(0x05)
RX_GAIN_43DB = const(0x06)
RX_GAIN_48DB = const(0x07)

# --- PICC commands (ISO/IEC 14443-3, MIFARE) ---
PICC_REQA = const(0x26)       # 7-bit short frame
PICC_WUPA = const(0x52)       # 7-bit short frame, also wakes HALTed cards
PICC_CT = const(0x88)         # cascade tag
PICC_SEL_CL1 = const(0x93)
PICC_SEL_CL2 = const(0x95)
PICC_SEL_CL3 = const(0x97)
PICC_HLTA = const(0x50)
PICC_MF_AUTH_KEY_A = const(0x60)
PICC_MF_AUTH_KEY_B = const(0x61)
PICC_MF_READ = const(0x30)
PICC_MF_WRITE = const(0xA0)
PICC_UL_WRITE = const(0xA2)
MF_ACK = const(0x0A)

KEY_A = PICC_MF_AUTH_KEY_A
KEY_B = PICC_MF_AUTH_KEY_B

# --- status codes ---
OK = const(0)
NO_CARD = const(1)
TIMEOUT = const(2)
CRC_ERROR = const(3)
PARITY_ERROR = const(4)
COLLISION = const(5)
BUFFER_OVERFLOW = const(6)
AUTH_FAILED = const(7)
CARD_GONE = const(8)
PROTOCOL_ERROR = const(9)
NAK = const(10)
BCC_ERROR = const(11)
NO_READER = const(12)
INVALID = const(13)
CHIP_TIMEOUT = const(14)
ACCESS_DENIED = const(15)
INTERNAL_ERROR = const(16)
STATUS_NAMES = ("OK", "no card", "timeout", "CRC error", "parity error", "collision",
                "buffer overflow", "authentication failed", "card left the field",
                "protocol error", "NAK", "BCC error", "no reader (check wiring)",
                "invalid argument", "reader not responding", "access denied (NAK)",
                "driver error (see Reader.error)")

VERSIONS = {0x91: "MFRC522 v1.0", 0x92: "MFRC522 v2.0"}
CLONE_VERSIONS = {0x88: "FM17522 clone", 0x12: "counterfeit MFRC522", 0xB2: "FM17522 clone"}

# Timer: TPrescaler = 67 gives 13.56 MHz / 135 = 100.4 kHz, a 9.96 us tick (TModeReg.TAuto).
_PRESCALER = const(67)
SHORT_TIMEOUT_US = const(1000)    # REQA/WUPA/ANTICOLLISION/SELECT/HLTA: "no card" costs ~1 ms
LONG_TIMEOUT_US = const(10000)    # MFAuthent, READ, WRITE (EEPROM programming takes ms)
_MAX_POLLS = const(3000)          # backstop if the chip never raises an IRQ (dead bus)
MAX_CARDS = const(4)              # cards singulated per poll


def status_name(st):
    return STATUS_NAMES[st] if 0 <= st < len(STATUS_NAMES) else "status %d" % st


class MFRC522:
    def __init__(self, spi, cs, rst=None, gain=RX_GAIN_43DB):
        self.spi = spi
        self.cs = cs
        self.rst = rst
        self.gain = gain
        self.version = 0
        self.warning = None
        self.error = None
        self._t2 = bytearray(2)
        self._r2 = bytearray(2)
        self._tw = bytearray(65)          # address byte + up to 64 FIFO bytes
        self._tr = bytearray(65)
        self._views = [None] * 66         # memoryview slices per length, made once each
        self._st_tx = bytearray((0x80 | (ErrorReg << 1), 0x80 | (FIFOLevelReg << 1),
                                 0x80 | (ControlReg << 1), 0))
        self._st_rx = bytearray(4)
        self.rx = bytearray(64)
        self.rx_len = 0
        self.rx_last_bits = 0
        self.tx = bytearray(18)
        self.uid = bytearray(10)
        self.uid_len = 0
        self.sak = 0
        self.atqa = bytearray(2)
        self._cl = bytearray(5)
        self._timeout_us = -1
        self._txmode = -1
        self._rxmode = -1
        cs.value(1)

    # --- SPI register access (datasheet 8.1.2) ---
    def write_reg(self, reg, val):
        t = self._t2
        t[0] = (reg << 1) & 0x7E
        t[1] = val
        self.cs.value(0)
        self.spi.write(t)
        self.cs.value(1)

    def read_reg(self, reg):
        t = self._t2
        t[0] = 0x80 | ((reg << 1) & 0x7E)
        t[1] = 0
        self.cs.value(0)
        self.spi.write_readinto(t, self._r2)
        self.cs.value(1)
        return self._r2[1]

    def set_bits(self, reg, mask):
        self.write_reg(reg, self.read_reg(reg) | mask)

    def clear_bits(self, reg, mask):
        self.write_reg(reg, self.read_reg(reg) & (~mask & 0xFF))

    def _view(self, n):
        # (tx, rx) views of length n over the preallocated buffers: no allocation once made.
        v = self._views[n]
        if v is None:
            v = self._views[n] = (memoryview(self._tw)[:n], memoryview(self._tr)[:n])
        return v

    def write_fifo(self, data, n):
        w = self._tw
        w[0] = (FIFODataReg << 1) & 0x7E
        for i in range(n):
            w[i + 1] = data[i]
        self.cs.value(0)
        self.spi.write(self._view(n + 1)[0])
        self.cs.value(1)

    def read_fifo(self, n):
        """Burst read n FIFO bytes into self._tr[1..n]."""
        w = self._tw
        a = 0x80 | (FIFODataReg << 1)
        for i in range(n):
            w[i] = a
        w[n] = 0
        v = self._view(n + 1)
        self.cs.value(0)
        self.spi.write_readinto(v[0], v[1])
        self.cs.value(1)

    # --- set-up ---
    def reset(self):
        """SoftReset (10.3.1.10); waits (bounded) for CommandReg.PowerDown to clear."""
        self.write_reg(CommandReg, PCD_SoftReset)
        for _ in range(100):
            if not self.read_reg(CommandReg) & _PowerDown:
                break
        self._timeout_us = self._txmode = self._rxmode = -1

    def version_check(self):
        v = self.read_reg(VersionReg)
        self.version = v
        self.warning = None
        self.error = None
        if v in VERSIONS:
            return OK
        if v in CLONE_VERSIONS:
            self.warning = "VersionReg 0x%02X: %s, accepted" % (v, CLONE_VERSIONS[v])
            return OK
        if v in (0x00, 0xFF):
            self.error = ("no MFRC522 answers (VersionReg reads 0x%02X): check power, SPI "
                          "wiring (SCK/MOSI/MISO), CS and RST pins" % v)
        else:
            self.error = "unknown VersionReg 0x%02X: not an MFRC522, or SPI mode/wiring wrong" % v
        return NO_READER

    def init(self):
        """Hard reset (NRSTPD high), soft reset, version check, timer, modulation, antenna."""
        if self.rst is not None:
            self.rst.value(1)
        st = self.version_check()            # VersionReg first: a dead bus costs one read
        if st != OK:
            return st
        self.reset()
        self.write_reg(TModeReg, 0x80 | (_PRESCALER >> 8))   # TAuto, TPrescaler_Hi
        self.write_reg(TPrescalerReg, _PRESCALER & 0xFF)
        self.set_timeout_us(SHORT_TIMEOUT_US)
        self.write_reg(TxASKReg, 0x40)       # Force100ASK: ISO 14443 A needs 100 % ASK
        self.write_reg(ModeReg, 0x3D)        # TxWaitRF, PolMFin, CRC preset 6363h (CRC_A)
        self._set_crc(0, 0)
        self.set_gain(self.gain)
        self.antenna_on()
        return OK

    def antenna_on(self):
        v = self.read_reg(TxControlReg)
        if v & 0x03 != 0x03:
            self.write_reg(TxControlReg, v | 0x03)   # Tx1RFEn, Tx2RFEn

    def antenna_off(self):
        self.clear_bits(TxControlReg, 0x03)

    def set_gain(self, g):
        """RFCfgReg.RxGain (0..7; see RX_GAIN_*)."""
        self.gain = g & 0x07
        self.write_reg(RFCfgReg, self.gain << 4)

    def set_timeout_us(self, us):
        if us == self._timeout_us:
            return
        ticks = us * 1356 // 13500           # 13.56 MHz / 135 per us
        if ticks < 2:
            ticks = 2
        if ticks > 0xFFFF:
            ticks = 0xFFFF
        self.write_reg(TReloadRegH, ticks >> 8)
        self.write_reg(TReloadRegL, ticks & 0xFF)
        self._timeout_us = us

    def _set_crc(self, tx, rx):
        # TxModeReg.TxCRCEn / RxModeReg.RxCRCEn: the chip appends and checks CRC_A itself.
        if tx != self._txmode:
            self.write_reg(TxModeReg, 0x80 if tx else 0x00)
            self._txmode = tx
        if rx != self._rxmode:
            self.write_reg(RxModeReg, 0x80 if rx else 0x00)
            self._rxmode = rx

    # --- coprocessor ---
    def calc_crc(self, data, n):
        """CRC_A of data[:n] by the CalcCRC command. Returns (status, crc16); the low byte
        (CRCResultRegL) is sent first on the air."""
        self.write_reg(CommandReg, PCD_Idle)
        self.write_reg(DivIrqReg, _CRCIRq)   # clear CRCIRq
        self.write_reg(FIFOLevelReg, _FlushBuffer)
        self.write_fifo(data, n)
        self.write_reg(CommandReg, PCD_CalcCRC)
        for _ in range(_MAX_POLLS):
            if self.read_reg(DivIrqReg) & _CRCIRq:
                self.write_reg(CommandReg, PCD_Idle)
                return OK, self.read_reg(CRCResultRegH) << 8 | self.read_reg(CRCResultRegL)
        return CHIP_TIMEOUT, 0

    # --- the one exchange every ISO step goes through ---
    def _command(self, cmd, data, n, valid_bits=0, rx_align=0, wait=0x31):
        self.write_reg(CommandReg, PCD_Idle)
        self.write_reg(ComIrqReg, 0x7F)      # clear all ComIrqReg bits (Set1 = 0)
        self.write_reg(FIFOLevelReg, _FlushBuffer)
        self.write_fifo(data, n)
        framing = (rx_align << 4) | valid_bits
        self.write_reg(BitFramingReg, framing)
        self.write_reg(CommandReg, cmd)
        if cmd == PCD_Transceive:
            self.write_reg(BitFramingReg, framing | _StartSend)
        for _ in range(_MAX_POLLS):
            irq = self.read_reg(ComIrqReg)
            if irq & wait & 0x30:            # RxIRq or IdleIRq: done
                return OK
            if irq & _TimerIRq:              # chip timer ran out: nobody answered
                return TIMEOUT
        return CHIP_TIMEOUT

    def transceive(self, data, n, valid_bits=0, rx_align=0, tx_crc=0, rx_crc=0):
        """Send data[:n] (last byte valid_bits long if non-zero), receive into self.rx."""
        self._set_crc(tx_crc, rx_crc)
        st = self._command(PCD_Transceive, data, n, valid_bits, rx_align)
        self.rx_len = 0
        if st != OK:
            return st
        # One burst read: ErrorReg, FIFOLevelReg, ControlReg.
        self.cs.value(0)
        self.spi.write_readinto(self._st_tx, self._st_rx)
        self.cs.value(1)
        err = self._st_rx[1]
        level = self._st_rx[2] & 0x7F
        self.rx_last_bits = self._st_rx[3] & 0x07
        if err & _BufferOvfl or level > 64:
            return BUFFER_OVERFLOW
        if level:
            self.read_fifo(level)
            r = self.rx
            t = self._tr
            for i in range(level):
                r[i] = t[i + 1]
        self.rx_len = level
        if err & _CollErr:
            return COLLISION
        if err & _ParityErr:
            return PARITY_ERROR
        if err & _ProtocolErr:
            return PROTOCOL_ERROR
        if err & _CRCErr and rx_crc:
            return CRC_ERROR
        return OK

    # --- ISO 14443-3 steps ---
    def request(self, cmd=PICC_REQA):
        """REQA or WUPA (7-bit short frame). OK with self.atqa, NO_CARD if nobody answers."""
        self.set_timeout_us(SHORT_TIMEOUT_US)
        self.tx[0] = cmd
        st = self.transceive(self.tx, 1, 7)
        if st == TIMEOUT:
            return NO_CARD
        if st == COLLISION:
            return OK                        # several cards answered: ATQAs differ, cards present
        if st != OK:
            return st
        if self.rx_len != 2 or self.rx_last_bits:
            return PROTOCOL_ERROR
        self.atqa[0] = self.rx[0]
        self.atqa[1] = self.rx[1]
        return OK

    def wakeup(self):
        return self.request(PICC_WUPA)

    def _select_cl(self, level):
        """SELECT for cascade level `level` with self._cl (4 bytes + BCC). SAK in self.sak."""
        t = self.tx
        t[0] = PICC_SEL_CL1 + 2 * level
        t[1] = 0x70
        for i in range(5):
            t[2 + i] = self._cl[i]
        st = self.transceive(t, 7, 0, 0, 1, 1)
        if st != OK:
            return st
        if self.rx_len != 1:
            return PROTOCOL_ERROR
        self.sak = self.rx[0]
        return OK

    def select(self):
        """ANTICOLLISION + SELECT through cascade levels 1-3 (ISO 14443-3 6.5.3). The card(s)
        must be READY (after request()). Fills self.uid[:self.uid_len] (cascade tags removed)
        and self.sak. With several cards the one with the 1 bit at each collision wins."""
        self.set_timeout_us(SHORT_TIMEOUT_US)
        self.uid_len = 0
        cl = self._cl
        t = self.tx
        for level in range(3):
            known = 0
            for i in range(5):
                cl[i] = 0
            for _ in range(33):
                if known >= 40:
                    break
                nbytes = known >> 3
                bits = known & 7
                t[0] = PICC_SEL_CL1 + 2 * level
                t[1] = ((2 + nbytes) << 4) | bits      # NVB
                for i in range(nbytes + (1 if bits else 0)):
                    t[2 + i] = cl[i]
                st = self.transceive(t, 2 + nbytes + (1 if bits else 0), bits, bits)
                if st != OK and st != COLLISION:
                    return st
                # Merge the answer: its first byte holds bits from RxAlign = known % 8 on.
                r = self.rx
                for i in range(self.rx_len):
                    j = nbytes + i
                    if j >= 5:
                        break
                    if i == 0 and bits:
                        mask = (0xFF << bits) & 0xFF
                        cl[j] = (cl[j] & ~mask & 0xFF) | (r[0] & mask)
                    else:
                        cl[j] = r[i]
                if st == OK:
                    known = 40
                    break
                coll = self.read_reg(CollReg)
                if coll & _CollPosNotValid:
                    return COLLISION
                pos = coll & 0x1F
                if pos == 0:
                    pos = 32
                c = nbytes * 8 + pos - 1             # collided bit, counted in UID CLn
                if c < known or c >= 40:
                    return PROTOCOL_ERROR
                cl[c >> 3] = (cl[c >> 3] & ((1 << (c & 7)) - 1)) | (1 << (c & 7))   # take the 1 branch
                for i in range((c >> 3) + 1, 5):
                    cl[i] = 0
                known = c + 1
            if known < 40:
                return COLLISION
            if cl[0] ^ cl[1] ^ cl[2] ^ cl[3] != cl[4]:
                return BCC_ERROR
            st = self._select_cl(level)
            if st != OK:
                return st
            if self.sak & 0x04:                      # cascade bit: UID not complete
                if cl[0] != PICC_CT or level == 2:
                    return PROTOCOL_ERROR
                for i in range(3):
                    self.uid[self.uid_len + i] = cl[1 + i]
                self.uid_len += 3
            else:
                for i in range(4):
                    self.uid[self.uid_len + i] = cl[i]
                self.uid_len += 4
                return OK
        return PROTOCOL_ERROR

    def select_uid(self, uid):
        """SELECT a known card (4/7/10-byte UID) without anticollision; cards must be READY."""
        n = len(uid)
        if n not in (4, 7, 10):
            return INVALID
        self.set_timeout_us(SHORT_TIMEOUT_US)
        cl = self._cl
        pos = 0
        for level in range(3):
            last = n - pos == 4
            if last:
                for i in range(4):
                    cl[i] = uid[pos + i]
            else:
                cl[0] = PICC_CT
                for i in range(3):
                    cl[1 + i] = uid[pos + i]
            cl[4] = cl[0] ^ cl[1] ^ cl[2] ^ cl[3]
            st = self._select_cl(level)
            if st != OK:
                return st
            if last:
                if self.sak & 0x04:
                    return PROTOCOL_ERROR
                for i in range(n):
                    self.uid[i] = uid[i]
                self.uid_len = n
                return OK
            if not self.sak & 0x04:
                return PROTOCOL_ERROR
            pos += 3
        return PROTOCOL_ERROR

    def halt(self):
        """HLTA (50 00 + CRC_A). A card never answers HLTA: silence within the timeout is OK."""
        self.set_timeout_us(SHORT_TIMEOUT_US)
        t = self.tx
        t[0] = PICC_HLTA
        t[1] = 0
        st = self.transceive(t, 2, 0, 0, 1, 0)
        if st == TIMEOUT:
            return OK
        return st if st != OK else PROTOCOL_ERROR

    def authenticate(self, key_type, block, key, uid):
        """MFAuthent (10.3.1.9) with key A (0x60) or B (0x61) for `block`'s sector. The card
        must be selected. Crypto1 is fed 4 UID bytes: the UID for 4-byte cards, its last four
        bytes for 7-byte cards (NXP AN10927), the first four otherwise."""
        if key_type not in (KEY_A, KEY_B) or len(key) != 6 or len(uid) not in (4, 7, 10):
            return INVALID
        self.set_timeout_us(LONG_TIMEOUT_US)
        t = self.tx
        t[0] = key_type
        t[1] = block
        for i in range(6):
            t[2 + i] = key[i]
        off = 3 if len(uid) == 7 else 0
        for i in range(4):
            t[8 + i] = uid[off + i]
        st = self._command(PCD_MFAuthent, t, 12, 0, 0, 0x11)
        if st == CHIP_TIMEOUT:
            return st
        if st == TIMEOUT or not self.read_reg(Status2Reg) & _MFCrypto1On:
            return AUTH_FAILED
        return OK

    def stop_crypto1(self):
        """Clear Status2Reg.MFCrypto1On so the next frames go out in plain text."""
        v = self.read_reg(Status2Reg)
        if v & _MFCrypto1On:
            self.write_reg(Status2Reg, v & ~_MFCrypto1On & 0xFF)

    def _ack(self):
        # A 4-bit answer: ACK (0xA) or NAK (0x0/0x1 invalid, 0x4 not allowed, 0x5 transmission).
        if self.rx_len != 1 or self.rx_last_bits != 4:
            return PROTOCOL_ERROR
        v = self.rx[0] & 0x0F
        if v == MF_ACK:
            return OK
        return ACCESS_DENIED if v == 0x04 else NAK

    def mifare_read(self, block, out):
        """READ (0x30): 16 bytes into out (CRC_A checked by the chip: RxModeReg.RxCRCEn)."""
        self.set_timeout_us(LONG_TIMEOUT_US)
        t = self.tx
        t[0] = PICC_MF_READ
        t[1] = block
        st = self.transceive(t, 2, 0, 0, 1, 1)
        if st == CRC_ERROR and self.rx_len == 1 and self.rx_last_bits == 4:
            return self._ack()               # a 4-bit NAK (no CRC) came back
        if st != OK:
            return st
        if self.rx_len != 16:
            return PROTOCOL_ERROR
        for i in range(16):
            out[i] = self.rx[i]
        return OK

    def mifare_write(self, block, data):
        """WRITE (0xA0 block, ACK, then 16 bytes, ACK)."""
        self.set_timeout_us(LONG_TIMEOUT_US)
        t = self.tx
        t[0] = PICC_MF_WRITE
        t[1] = block
        st = self.transceive(t, 2, 0, 0, 1, 0)
        if st != OK:
            return st
        st = self._ack()
        if st != OK:
            return st
        st = self.transceive(data, 16, 0, 0, 1, 0)
        if st != OK:
            return st
        return self._ack()

    def type2_write(self, page, data):
        """Type 2 WRITE (0xA2 page + 4 bytes, ACK)."""
        self.set_timeout_us(LONG_TIMEOUT_US)
        t = self.tx
        t[0] = PICC_UL_WRITE
        t[1] = page
        for i in range(4):
            t[2 + i] = data[i]
        st = self.transceive(t, 6, 0, 0, 1, 0)
        if st != OK:
            return st
        return self._ack()


class Card:
    """One card presentation (a tap)."""

    def __init__(self, uid, sak, atqa):
        self.uid = uid
        self.sak = sak
        self.atqa = atqa

    @property
    def uid_text(self):
        from protocol.uid import uid_hex
        return uid_hex(self.uid)

    def __repr__(self):
        return "Card(%s, sak=0x%02X)" % (self.uid_text, self.sak)


class Reader(MFRC522):
    """The kiosk's view: poll() for taps, read_block()/write_block() on a presented card."""

    def __init__(self, spi, cs, rst=None, gain=RX_GAIN_43DB, gone_after=2, retry_polls=100):
        MFRC522.__init__(self, spi, cs, rst, gain)
        self.ready = False
        self.gone_after = gone_after
        self.retry_polls = retry_polls
        self._retry = 0
        self._seen = []        # [uid bytes, misses] for cards currently in the field
        self._queue = []       # new cards found together, handed out one per poll
        self.last_status = OK
        self._block = bytearray(16)

    def begin(self):
        try:
            st = self.init()
        except OSError as e:
            self.error = "SPI error: %s" % (e,)
            st = NO_READER
        self.ready = st == OK
        return st

    def _same(self, stored):
        n = self.uid_len
        if len(stored) != n:
            return False
        u = self.uid
        for i in range(n):
            if stored[i] != u[i]:
                return False
        return True

    def in_field(self, uid):
        for e in self._seen:
            if e[0] == uid:
                return True
        return False

    def poll(self):
        """One poll of the field. Returns a Card for a new tap, else None. Never raises."""
        try:
            return self._poll()
        except Exception as e:   # a driver bug or bus fault must not stop the kiosk loop
            self.error = "poll failed: %r" % (e,)
            self.last_status = INTERNAL_ERROR
            return None

    def _poll(self):
        if not self.ready:
            self._retry -= 1
            if self._retry > 0:
                return None
            self._retry = self.retry_polls
            if self.begin() != OK:
                return None
        if self._queue:
            return self._queue.pop(0)
        self.stop_crypto1()
        seen = self._seen
        found = 0              # bitmask over seen: answered this poll
        unsure = 0             # bitmask over seen: noise, no verdict this poll
        empty = False
        # 1. Cards already presented: we left them HALTed. WUPA wakes them, SELECT by UID
        #    asks each one by name (only that card answers), HLTA puts it back to sleep.
        for i in range(len(seen)):
            st = self._wupa2()
            if st == NO_CARD:
                empty = i == 0     # nothing at all answers WUPA: the field is empty
                break
            if st == OK:
                st = self.select_uid(seen[i][0])
            if st == OK:
                found |= 1 << i
                self.halt()
            elif st != TIMEOUT:
                unsure |= 1 << i
                self.last_status = st
        # 2. New cards: REQA wakes only IDLE cards, so the HALTed known ones stay quiet.
        #    With nothing known, WUPA (also wakes cards some earlier session left HALTed).
        new = None
        cmd = PICC_REQA if seen else PICC_WUPA
        for _ in range(0 if empty else MAX_CARDS):
            st = self.request(cmd)
            cmd = PICC_REQA
            if st == NO_CARD:
                break
            if st == OK:
                st = self.select()
            if st != OK:
                if st == CHIP_TIMEOUT:
                    self.ready = False
                    self.error = "reader stopped answering"
                self.last_status = st
                break
            self.halt()
            idx = -1
            for i in range(len(seen)):
                if self._same(seen[i][0]):
                    idx = i
                    break
            if idx >= 0:
                found |= 1 << idx
            else:
                card = Card(bytes(self.uid[:self.uid_len]), self.sak, bytes(self.atqa))
                seen.append([card.uid, 0])
                found |= 1 << (len(seen) - 1)
                if new is None:
                    new = card
                else:
                    self._queue.append(card)   # several new cards: one tap per poll
        for i in range(len(seen) - 1, -1, -1):
            if found & (1 << i):
                seen[i][1] = 0
            elif not unsure & (1 << i):
                seen[i][1] += 1
                if seen[i][1] >= self.gone_after:
                    seen.pop(i)
        if new is not None:
            self.last_status = OK
        return new

    def activate(self, uid):
        """WUPA + SELECT of a known UID, retried after noise. NO_CARD if it is not there."""
        self.stop_crypto1()
        st = NO_CARD
        for _ in range(3):
            st = self._wupa2()
            if st == NO_CARD:
                return NO_CARD
            if st == OK:
                st = self.select_uid(uid)
                if st == OK:
                    return OK
                if st == TIMEOUT:
                    return NO_CARD       # others answered WUPA, this UID did not
            if st == CHIP_TIMEOUT:
                return st
        return st

    def _wupa2(self):
        # A card left ACTIVE by a lost frame treats the first WUPA as an error and drops to
        # IDLE without answering (ISO 14443-3 state machine): a second WUPA wakes it.
        st = self.wakeup()
        if st == NO_CARD:
            st = self.wakeup()
        return st

    def _finish(self, st):
        # HLTA while Crypto1 is still on (the card expects encrypted frames), then stop it.
        self.halt()
        self.stop_crypto1()
        if st in (TIMEOUT, AUTH_FAILED, PROTOCOL_ERROR, CRC_ERROR, PARITY_ERROR):
            # Did the card leave the field? Probe with WUPA (wakes it from HALT/IDLE).
            probe = self.wakeup()
            if probe == NO_CARD:
                st = CARD_GONE
            elif probe == OK:
                self.halt()
        self.last_status = st
        return st

    def read_block(self, uid, block, key=None, key_type=KEY_A, out=None):
        """Read 16 bytes. Returns (status, data or None)."""
        if len(uid) not in (4, 7, 10):
            return INVALID, None
        if out is None:
            out = bytearray(16)
        try:
            st = self.activate(uid)
            if st == NO_CARD:
                self.last_status = CARD_GONE
                return CARD_GONE, None
            if st != OK:
                return self._finish(st), None
            if key is not None:
                st = self.authenticate(key_type, block, key, uid)
                if st != OK:
                    return self._finish(st), None
            st = self.mifare_read(block, out)
            return self._finish(st), (out if st == OK else None)
        except OSError as e:
            self.error = "SPI error: %s" % (e,)
            return NO_READER, None
        except Exception as e:   # never let a driver bug stop the kiosk loop
            self.error = "read_block failed: %r" % (e,)
            return INTERNAL_ERROR, None

    def write_block(self, uid, block, data, key=None, key_type=KEY_A):
        """Write 16 bytes (Classic) or 4 bytes to a type 2 page (key None). Returns status."""
        if len(data) < (16 if key is not None else 4) or len(uid) not in (4, 7, 10):
            return INVALID
        try:
            st = self.activate(uid)
            if st == NO_CARD:
                self.last_status = CARD_GONE
                return CARD_GONE
            if st != OK:
                return self._finish(st)
            if key is not None:
                st = self.authenticate(key_type, block, key, uid)
                if st != OK:
                    return self._finish(st)
                st = self.mifare_write(block, data)
            else:
                st = self.type2_write(block, data)
            return self._finish(st)
        except OSError as e:
            self.error = "SPI error: %s" % (e,)
            return NO_READER
        except Exception as e:
            self.error = "write_block failed: %r" % (e,)
            return INTERNAL_ERROR
