# `machine`-compatible Pin and SPI for the sim board, so device code written for
# MicroPython's machine module (ESP32 port) runs unchanged against emulated peripherals.
# The SPI bus drives the devices attached to it (e.g. the MFRC522 emulator in
# boards/sim/rc522.py) byte by byte while their chip-select pin is low, and advances the
# modelled time: bits at `baudrate` plus a fixed per-transaction overhead (CS set-up and
# the host's call cost).


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 2
    PULL_DOWN = 1
    IRQ_RISING = 1
    IRQ_FALLING = 2

    def __init__(self, id, mode=-1, pull=-1, value=None):
        self.id = id
        self.mode = mode
        self._value = 1 if value is None else (1 if value else 0)
        self._listeners = []

    def init(self, mode=-1, pull=-1, value=None):
        if value is not None:
            self.value(value)

    def on_change(self, fn):
        """Sim only: call fn(level) on every level change (wires the pin to a device)."""
        self._listeners.append(fn)

    def value(self, v=None):
        if v is None:
            return self._value
        v = 1 if v else 0
        if v != self._value:
            self._value = v
            for fn in self._listeners:
                fn(v)

    def __call__(self, v=None):
        return self.value(v)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def irq(self, handler=None, trigger=3):
        return None


class SPI:
    MSB = 0
    LSB = 1

    def __init__(self, id=1, baudrate=1_000_000, polarity=0, phase=0, bits=8, firstbit=0,
                 sck=None, mosi=None, miso=None, time=None, overhead_ns=5_000):
        self.id = id
        self.time = time
        self.overhead_ns = overhead_ns
        self._devices = []
        self.transactions = 0
        self.bytes = 0
        self.init(baudrate=baudrate, polarity=polarity, phase=phase)

    def init(self, baudrate=None, polarity=0, phase=0, bits=8, firstbit=0, sck=None, mosi=None, miso=None):
        if baudrate is not None:
            self.baudrate = baudrate

    def deinit(self):
        pass

    def attach(self, device, cs):
        """Sim only: device has cs_edge(level) and spi_byte(mosi) -> miso."""
        self._devices.append((device, cs))
        cs.on_change(device.cs_edge)

    def _selected(self):
        for dev, cs in self._devices:
            if cs.value() == 0:
                return dev
        return None

    def _clock(self, n):
        self.transactions += 1
        self.bytes += n
        if self.time is not None:
            self.time.advance(self.overhead_ns + n * 8 * 1_000_000_000 // self.baudrate)

    def _xfer(self, wbuf, rbuf, n, fill=0):
        dev = self._selected()
        for i in range(n):
            w = wbuf[i] if wbuf is not None else fill
            r = dev.spi_byte(w) if dev is not None else 0xFF
            if rbuf is not None:
                rbuf[i] = r
        self._clock(n)

    def write(self, buf):
        self._xfer(buf, None, len(buf))

    def read(self, n, write=0):
        buf = bytearray(n)
        self._xfer(None, buf, n, write)
        return bytes(buf)

    def readinto(self, buf, write=0):
        self._xfer(None, buf, len(buf), write)

    def write_readinto(self, wbuf, rbuf):
        self._xfer(wbuf, rbuf, len(wbuf))
