# Register-level emulator of the NXP MFRC522 (datasheet rev. 3.9, "MFRC522 Standard
# performance MIFARE and NTAG frontend"), driven through its SPI byte protocol (section
# 8.1.2): the first byte of a transaction is the address byte, bit 7 = 1 for read, bits
# 6..1 = register address, bit 0 = 0. In a read, every following MOSI byte is the next
# address to read and MISO carries the value of the previous one (send 0x00 last); in a
# write every following byte is data for the same address (burst FIFO writes).
#
# It follows the datasheet, not any driver: registers and bits keep their datasheet names;
# commands Idle, Mem, GenerateRandomID, CalcCRC, Transmit, Receive, Transceive, MFAuthent,
# SoftReset; the 64-byte FIFO and FIFOLevelReg; ComIrqReg/DivIrqReg set/clear semantics;
# ErrorReg; BitFramingReg (StartSend, RxAlign, TxLastBits); CollReg; Status1/Status2Reg;
# the timer (TModeReg.TAuto, TPrescalerReg, TReloadReg, TCounterValReg).
#
# Timing model (modelled nanoseconds, kept in SimTime): every SPI transaction costs its
# bits at the bus clock plus a fixed per-transaction overhead; RF frames at 106 kbit/s cost
# 128/fc per bit (fc = 13.56 MHz) with 9 bits per byte (8 data + parity) plus start and end
# of frame; a card answers after the ISO 14443-3 frame delay time (n = 9: 1236/fc); the
# timer counts at 13.56 MHz / (2 * TPrescaler + 1) and raises TimerIRq after TReload + 1 ticks.

from boards.sim.cards import Field, crc_a

FC_HZ = 13_560_000
BIT_NS = 128 * 1_000_000_000 // FC_HZ         # one bit at 106 kbit/s, ~9440 ns
FDT_NS = 1236 * 1_000_000_000 // FC_HZ        # ISO 14443-3 frame delay, n = 9
AUTH_TURNAROUND_NS = FDT_NS                   # chip's own turnaround inside MFAuthent (model)

# Registers (datasheet table 20)
CommandReg = 0x01
ComIEnReg = 0x02
DivIEnReg = 0x03
ComIrqReg = 0x04
DivIrqReg = 0x05
ErrorReg = 0x06
Status1Reg = 0x07
Status2Reg = 0x08
FIFODataReg = 0x09
FIFOLevelReg = 0x0A
WaterLevelReg = 0x0B
ControlReg = 0x0C
BitFramingReg = 0x0D
CollReg = 0x0E
ModeReg = 0x11
TxModeReg = 0x12
RxModeReg = 0x13
TxControlReg = 0x14
TxASKReg = 0x15
TxSelReg = 0x16
RxSelReg = 0x17
RxThresholdReg = 0x18
DemodReg = 0x19
MfTxReg = 0x1C
MfRxReg = 0x1D
SerialSpeedReg = 0x1F
CRCResultRegH = 0x21
CRCResultRegL = 0x22
ModWidthReg = 0x24
RFCfgReg = 0x26
GsNReg = 0x27
CWGsPReg = 0x28
ModGsPReg = 0x29
TModeReg = 0x2A
TPrescalerReg = 0x2B
TReloadRegH = 0x2C
TReloadRegL = 0x2D
TCounterValRegH = 0x2E
TCounterValRegL = 0x2F
AutoTestReg = 0x36
VersionReg = 0x37

# Commands (datasheet table 149)
Idle = 0x0
Mem = 0x1
GenerateRandomID = 0x2
CalcCRC = 0x3
Transmit = 0x4
NoCmdChange = 0x7
Receive = 0x8
Transceive = 0xC
MFAuthent = 0xE
SoftReset = 0xF

# ComIrqReg bits
Set1 = 0x80
TxIRq = 0x40
RxIRq = 0x20
IdleIRq = 0x10
HiAlertIRq = 0x08
LoAlertIRq = 0x04
ErrIRq = 0x02
TimerIRq = 0x01
# DivIrqReg bits
CRCIRq = 0x04
# ErrorReg bits
WrErr = 0x80
BufferOvfl = 0x10
CollErr = 0x08
CRCErr = 0x04
ParityErr = 0x02
ProtocolErr = 0x01

# Reset values (datasheet section 9.3); registers not listed reset to 00h.
RESET = {
    CommandReg: 0x20, ComIEnReg: 0x80, ComIrqReg: 0x14, WaterLevelReg: 0x08, ControlReg: 0x10,
    CollReg: 0xA0, ModeReg: 0x3F, TxControlReg: 0x80, TxSelReg: 0x10, RxSelReg: 0x84,
    RxThresholdReg: 0x84, DemodReg: 0x4D, MfTxReg: 0x62, SerialSpeedReg: 0xEB,
    CRCResultRegH: 0xFF, CRCResultRegL: 0xFF, ModWidthReg: 0x26, RFCfgReg: 0x48,
    GsNReg: 0x88, CWGsPReg: 0x20, ModGsPReg: 0x20, AutoTestReg: 0x40,
}
CRC_PRESETS = (0x0000, 0x6363, 0xA671, 0xFFFF)   # ModeReg.CRCPreset[1:0]


class SimTime:
    """Modelled time in nanoseconds, advanced by the SPI bus and by waiting."""

    def __init__(self):
        self.ns = 0

    def advance(self, ns):
        self.ns += ns


def frame_ns(nbits):
    """Air time of a frame of nbits data bits: parity per full byte, SOF and EOF."""
    return (nbits + (nbits >> 3) + 2) * BIT_NS


def _bits_of(buf, nbits):
    return [(buf[i >> 3] >> (i & 7)) & 1 for i in range(nbits)]


class MFRC522:
    """The chip. Connect it to a sim SPI bus with `attach(spi, cs, rst)` (see wire())."""

    def __init__(self, field=None, version=0x92, time=None):
        self.field = field if field is not None else Field()
        self.version = version
        self.time = time if time is not None else SimTime()
        self.powered = True      # NRSTPD high
        self.miso_float = None   # a miswired/dead reader: every MISO byte reads this value
        self.internal = bytearray(25)   # Mem command buffer, survives SoftReset
        self.counts = {"transactions": 0, "bytes": 0}
        self._in_tx = False
        self._reset()

    # -- reset / power --
    def _reset(self):
        self.regs = bytearray(64)
        for k in RESET:
            self.regs[k] = RESET[k]
        self.regs[VersionReg] = self.version
        self.fifo = bytearray()
        self.cmd = Idle
        self.crc = 0
        self._rx_at = None       # (time_ns, payload) of a pending reception
        self._idle_at = None     # MFAuthent success time
        self._timer_start = None
        self._timer_end = None
        self._tx_end = None
        self._waiting_send = False
        self._apply_field()

    def _apply_field(self):
        # TxControlReg Tx1RFEn/Tx2RFEn drive the antenna: no field, no card power.
        self.field.set_power(self.powered and (self.regs[TxControlReg] & 0x03) != 0)

    def set_nrstpd(self, level):
        if level and not self.powered:
            self.powered = True
            self._reset()        # rising edge of NRSTPD: hard reset
        elif not level:
            self.powered = False
            self.field.set_power(False)

    # -- SPI --
    def cs_edge(self, level):
        self._in_tx = not level
        self._first = True
        self._addr = None

    def spi_byte(self, mosi):
        """One byte of a transaction (CS low); returns the MISO byte."""
        self.counts["bytes"] += 1
        if self.miso_float is not None:
            return self.miso_float
        if not self.powered:
            return 0x00
        if self._first:
            self._first = False
            self.counts["transactions"] += 1
            self._sync()
            self._addr = mosi
            return 0x00
        a = self._addr
        if a & 0x80:
            out = self.read_reg((a >> 1) & 0x3F)
            self._addr = mosi
            return out
        self.write_reg((a >> 1) & 0x3F, mosi)
        return 0x00

    # -- time --
    def _sync(self):
        now = self.time.ns
        while True:
            due = []
            if self._timer_end is not None:
                due.append((self._timer_end, 0))
            if self._rx_at is not None:
                due.append((self._rx_at[0], 1))
            if self._idle_at is not None:
                due.append((self._idle_at, 2))
            if self._tx_end is not None:
                due.append((self._tx_end, 3))
            if not due:
                return
            due.sort()
            t, kind = due[0]
            if t > now:
                return
            if kind == 0:
                self._timer_end = None
                self._timer_start = None
                self.regs[ComIrqReg] |= TimerIRq
            elif kind == 1:
                payload = self._rx_at[1]
                self._rx_at = None
                self._deliver(payload)
            elif kind == 2:
                self._idle_at = None
                if self.cmd == MFAuthent:
                    self.regs[Status2Reg] |= 0x08  # MFCrypto1On
                self._terminate()
            else:
                self._tx_end = None
                self.regs[ComIrqReg] |= TxIRq      # last bit of the frame sent

    def _timer_period_ns(self):
        pre = (self.regs[TModeReg] & 0x0F) << 8 | self.regs[TPrescalerReg]
        reload = self.regs[TReloadRegH] << 8 | self.regs[TReloadRegL]
        return (2 * pre + 1) * (reload + 1) * 1_000_000_000 // FC_HZ

    def _start_timer(self, at):
        self._timer_start = at
        self._timer_end = at + self._timer_period_ns()

    def _terminate(self):
        # A command that ends by itself: CommandReg back to Idle, IdleIRq set.
        self.cmd = Idle
        self.regs[ComIrqReg] |= IdleIRq

    # -- registers --
    def read_reg(self, r):
        if r == FIFODataReg:
            if self.fifo:
                v = self.fifo[0]
                self.fifo = self.fifo[1:]
                return v
            return 0x00
        if r == FIFOLevelReg:
            return len(self.fifo)
        if r == CommandReg:
            return (self.regs[CommandReg] & 0x30) | self.cmd
        if r == Status1Reg:
            v = 0
            lvl = len(self.fifo)
            wl = self.regs[WaterLevelReg] & 0x3F
            if lvl <= wl:
                v |= 0x01                          # LoAlert
            if 64 - lvl <= wl:
                v |= 0x02                          # HiAlert
            if self._timer_end is not None:
                v |= 0x08                          # TRunning
            if (self.regs[ComIrqReg] & self.regs[ComIEnReg] & 0x7F) or (self.regs[DivIrqReg] & self.regs[DivIEnReg] & 0x14):
                v |= 0x10                          # IRq
            if self.cmd == CalcCRC:
                v |= 0x20                          # CRCReady (all FIFO data processed)
                if self.crc == 0:
                    v |= 0x40                      # CRCOk: CRC result is zero
            return v
        if r == Status2Reg:
            modem = 0
            if self.cmd == Transceive:
                modem = 0x01 if self._waiting_send else (0x06 if self._rx_at is not None else 0x02)
            return (self.regs[Status2Reg] & 0xC8) | modem
        if r in (TCounterValRegH, TCounterValRegL):
            v = 0
            if self._timer_end is not None:
                pre = (self.regs[TModeReg] & 0x0F) << 8 | self.regs[TPrescalerReg]
                left = (self._timer_end - self.time.ns) * FC_HZ // ((2 * pre + 1) * 1_000_000_000)
                v = max(0, left)
            return (v >> 8) & 0xFF if r == TCounterValRegH else v & 0xFF
        return self.regs[r]

    def _fifo_push(self, v):
        if len(self.fifo) >= 64:
            self.regs[ErrorReg] |= BufferOvfl
            self.regs[ComIrqReg] |= ErrIRq
            return
        self.fifo.append(v)

    def write_reg(self, r, v):
        if r == FIFODataReg:
            if self.cmd == MFAuthent:
                self.regs[ErrorReg] |= WrErr
            self._fifo_push(v)
            if self.cmd == CalcCRC:
                self._crc_feed()
            return
        if r == FIFOLevelReg:
            if v & 0x80:                           # FlushBuffer
                self.fifo = bytearray()
                self.regs[ErrorReg] &= ~BufferOvfl & 0xFF
            return
        if r == CommandReg:
            self.regs[CommandReg] = v & 0x30
            self._command(v & 0x0F)
            return
        if r == ComIrqReg:
            if v & Set1:
                self.regs[ComIrqReg] |= v & 0x7F
            else:
                self.regs[ComIrqReg] &= ~v & 0x7F
            return
        if r == DivIrqReg:
            if v & 0x80:
                self.regs[DivIrqReg] |= v & 0x14
            else:
                self.regs[DivIrqReg] &= ~v & 0x14
            return
        if r in (ErrorReg, Status1Reg, VersionReg, CRCResultRegH, CRCResultRegL,
                 TCounterValRegH, TCounterValRegL):
            return                                 # read-only
        if r == Status2Reg:
            # Only MFCrypto1On can be cleared by software (never set); bits 7..6 are R/W.
            keep = self.regs[Status2Reg] & 0x08 & v
            self.regs[Status2Reg] = (v & 0xC0) | keep
            return
        if r == ControlReg:
            if v & 0x80:                           # TStopNow
                self._timer_end = None
            if v & 0x40:                           # TStartNow
                self._start_timer(self.time.ns)
            return
        if r == CollReg:
            self.regs[CollReg] = (self.regs[CollReg] & 0x7F) | (v & 0x80)
            return
        if r == BitFramingReg:
            self.regs[BitFramingReg] = v
            if v & 0x80 and self.cmd == Transceive and self._waiting_send:
                self._transmit()
            return
        self.regs[r] = v
        if r == TxControlReg:
            self._apply_field()

    # -- commands --
    def _command(self, c):
        # Any command written cancels the running one (writing Idle does not set IdleIRq).
        self._rx_at = None
        self._idle_at = None
        self._tx_end = None
        self._waiting_send = False
        if c == Idle or c == NoCmdChange and self.cmd == Idle:
            self.cmd = Idle
            return
        if c == NoCmdChange:
            return
        if c == SoftReset:
            self._reset()
            return
        self.cmd = c
        if c == CalcCRC:
            self.crc = CRC_PRESETS[self.regs[ModeReg] & 0x03]
            self._crc_feed()
        elif c == Mem:
            if self.fifo:
                self.internal[:] = (bytes(self.fifo) + bytes(25))[:25]
                self.fifo = self.fifo[25:]
            else:
                self.fifo = bytearray(self.internal)
            self._terminate()
        elif c == GenerateRandomID:
            for i in range(10):
                self.internal[i] = (self.time.ns >> (i % 4 * 8)) & 0xFF
            self._terminate()
        elif c == Transceive:
            self._waiting_send = True
            if self.regs[BitFramingReg] & 0x80:
                self._transmit()
        elif c == Transmit:
            self._transmit()
        elif c == MFAuthent:
            self._authenticate()
        elif c == Receive:
            if self.regs[TModeReg] & 0x80:
                self._start_timer(self.time.ns)
        else:
            self._terminate()                      # unknown command: back to Idle, IdleIRq

    def _crc_feed(self):
        data = bytes(self.fifo)
        self.fifo = bytearray()
        self.crc = crc_a(data, len(data), self.crc)
        self.regs[CRCResultRegH] = self.crc >> 8
        self.regs[CRCResultRegL] = self.crc & 0xFF
        self.regs[DivIrqReg] |= CRCIRq

    def _transmit(self):
        """Send the FIFO: BitFramingReg.TxLastBits, TxModeReg.TxCRCEn apply."""
        self._waiting_send = False
        data = bytes(self.fifo)
        self.fifo = bytearray()
        last = self.regs[BitFramingReg] & 0x07
        nbits = len(data) * 8 if last == 0 else (len(data) - 1) * 8 + last
        if nbits < 0:
            nbits = 0
        if self.regs[TxModeReg] & 0x80 and last == 0:   # TxCRCEn: the chip appends CRC_A
            c = crc_a(data, len(data), CRC_PRESETS[self.regs[ModeReg] & 0x03])
            data = data + bytes((c & 0xFF, c >> 8))
            nbits += 16
        # Receiver start-up clears the reception error bits and the collision position.
        self.regs[ErrorReg] &= ~(CollErr | CRCErr | ParityErr | ProtocolErr) & 0xFF
        self.regs[CollReg] = (self.regs[CollReg] & 0x80) | 0x20
        self.regs[ControlReg] &= 0xF8
        tx_end = self.time.ns + frame_ns(nbits)
        self._tx_end = tx_end
        crypto = bool(self.regs[Status2Reg] & 0x08)
        answers = self.field.exchange(data, nbits, crypto)
        if self.cmd == Transmit:
            self._idle_at = tx_end                 # Transmit ends by itself after the frame
            return
        if self.regs[TModeReg] & 0x80:             # TAuto: timer starts at end of transmission
            self._start_timer(tx_end)
        if not answers:
            return
        noise = self.field.noise.pop(0) if self.field.noise else None
        if noise == "drop":
            return
        nb = max(a[2] for a in answers)
        proc = max(a[3] for a in answers)
        rx_start = tx_end + FDT_NS + proc
        # TAuto without RxMultiple: the timer stops after the 5th received bit.
        if self._timer_end is not None and self._timer_end > rx_start + 5 * BIT_NS:
            self._timer_end = None
        self._rx_at = (rx_start + frame_ns(nb), (answers, nb, noise))

    def _deliver(self, payload):
        answers, nb, noise = payload
        rx_align = (self.regs[BitFramingReg] >> 4) & 0x07
        values_after_coll = self.regs[CollReg] & 0x80
        coll = None
        bits = []
        lists = [_bits_of(a[1], a[2]) + [None] * (nb - a[2]) for a in answers]
        for i in range(nb):
            vals = [bits[i] for bits in lists if bits[i] is not None]
            v = vals[0]
            if coll is None and any(x != v for x in vals):
                coll = i
            if coll is not None and i >= coll and not values_after_coll:
                v = 0   # CollReg.ValuesAfterColl = 0: received bits after a collision are cleared
            bits.append(v)
        err = 0
        if noise == "crc":
            bits[nb // 2] ^= 1
        elif noise == "parity":
            err |= ParityErr
        if coll is not None:
            err |= CollErr
            pos = rx_align + coll + 1              # bit position in the FIFO layout, 1..32
            if pos <= 32:
                self.regs[CollReg] = (self.regs[CollReg] & 0x80) | (pos & 0x1F)
            else:
                self.regs[CollReg] = (self.regs[CollReg] & 0x80) | 0x20   # CollPosNotValid
        # Pack the bits into bytes from RxAlign on.
        total = rx_align + nb
        out = bytearray((total + 7) >> 3)
        for i in range(nb):
            p = rx_align + i
            if bits[i]:
                out[p >> 3] |= 1 << (p & 7)
        if self.regs[RxModeReg] & 0x80:            # RxCRCEn: check and strip CRC_A
            if total % 8 or len(out) < 3 or crc_a(out, len(out), CRC_PRESETS[self.regs[ModeReg] & 0x03]) != 0:
                err |= CRCErr
            else:
                out = out[:-2]
        for b in out:
            self._fifo_push(b)
        self.regs[ControlReg] = (self.regs[ControlReg] & 0xF8) | (total & 7)
        if err:
            self.regs[ErrorReg] |= err
            self.regs[ComIrqReg] |= ErrIRq
        self.regs[ComIrqReg] |= RxIRq
        self._waiting_send = True                   # Transceive: back to waiting for StartSend

    def _authenticate(self):
        """MFAuthent (10.3.1.9): FIFO = auth command, block address, 6 key bytes, 4 UID bytes."""
        data = bytes(self.fifo)
        self.fifo = bytearray()
        self.regs[ErrorReg] &= ~(CollErr | CRCErr | ParityErr | ProtocolErr) & 0xFF
        if len(data) < 12:
            self.regs[ErrorReg] |= ProtocolErr
            self.regs[ComIrqReg] |= ErrIRq
            self._terminate()
            return
        t = self.time.ns
        first_tx_end = t + frame_ns(32)
        ok = self.field.authenticate(data[0], data[1], data[2:8], data[8:12])
        if ok is None:
            # Nobody answered the auth command: the command never ends; only the timer does.
            if self.regs[TModeReg] & 0x80:
                self._start_timer(first_tx_end)
            return
        # Card sent nT (4 bytes), chip sent nR+aR (8 bytes), card answers aT (4 bytes) if it
        # accepted the key.
        second_tx_end = first_tx_end + FDT_NS + frame_ns(32) + AUTH_TURNAROUND_NS + frame_ns(64)
        if ok:
            self._idle_at = second_tx_end + FDT_NS + frame_ns(32)
            self._timer_end = None
        elif self.regs[TModeReg] & 0x80:
            self._start_timer(second_tx_end)


def wire(baudrate=4_000_000, version=0x92, field=None, overhead_ns=5_000):
    """Build a sim board with one MFRC522: returns (spi, cs, rst, chip, field)."""
    from boards.sim import machine
    time = SimTime()
    chip = MFRC522(field, version=version, time=time)
    spi = machine.SPI(1, baudrate=baudrate, time=time, overhead_ns=overhead_ns)
    cs = machine.Pin(5, machine.Pin.OUT, value=1)
    rst = machine.Pin(22, machine.Pin.OUT, value=1)
    spi.attach(chip, cs)
    rst.on_change(chip.set_nrstpd)
    return spi, cs, rst, chip, chip.field
