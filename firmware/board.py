# The kiosk's hardware, built from a board profile (boards/<name>.py): SPI bus and RC522
# pins for the reader, status LED (discrete pins or one RGB pixel), buzzer (PWM), and an
# optional SSD1306 display on I2C. SimBoard is the same surface with no hardware: it
# records every feedback event so tests can assert them and the host runner can print them.

# LED colour -> (r, g, b) for RGB pixels, and which discrete LEDs light.
COLOURS = {
    "off": (0, 0, 0), "green": (0, 160, 0), "red": (200, 0, 0),
    "amber": (180, 90, 0), "blue": (0, 0, 160),
}
_DISCRETE = {"off": (), "green": ("green",), "red": ("red",), "amber": ("red", "green"),
             "blue": ("blue",)}


class SimBoard:
    """No hardware: LED, tone and screen are state; events are kept (bounded) and passed to
    on_event (e.g. the host runner prints them)."""

    def __init__(self, profile=None, keep=64):
        self.profile = profile or {}
        self.colour = "off"
        self.hz = 0
        self.lines = []
        self.events = []
        self.keep = keep
        self.on_event = None
        self.tones = 0

    def led(self, colour):
        self.colour = colour

    def tone(self, hz):
        self.hz = hz
        if hz:
            self.tones += 1

    def display(self, lines):
        self.lines = lines

    def record(self, event):
        self.events.append(event)
        if len(self.events) > self.keep:
            self.events.pop(0)
        if self.on_event:
            self.on_event(event)

    def feed_watchdog(self):
        pass


class Board:
    """A real board from its profile (MicroPython only: imports machine)."""

    def __init__(self, profile):
        import machine
        self.profile = profile
        self.machine = machine
        self._leds = {}
        self._pixel = None
        self._buzzer = None
        self._oled = None
        self._wdt = None
        led = profile.get("led") or {}
        if "pixel" in led:
            import neopixel
            self._pixel = neopixel.NeoPixel(machine.Pin(led["pixel"], machine.Pin.OUT), 1)
        for name in ("red", "green", "blue"):
            if led.get(name) is not None:
                self._leds[name] = machine.Pin(led[name], machine.Pin.OUT, value=0)
        if profile.get("buzzer") is not None:
            self._buzzer = machine.PWM(machine.Pin(profile["buzzer"]), freq=2000, duty_u16=0)
        i2c = profile.get("i2c")
        if i2c and i2c.get("ssd1306"):
            try:
                import ssd1306  # type: ignore[import-not-found]  # micropython-lib
                bus = machine.I2C(i2c.get("id", 0), scl=machine.Pin(i2c["scl"]),
                                  sda=machine.Pin(i2c["sda"]), freq=400000)
                self._oled = ssd1306.SSD1306_I2C(128, 64, bus, addr=i2c["ssd1306"])
            except Exception as e:  # noqa: BLE001 - no display fitted: LED and tone still work
                print("board: no SSD1306:", e)
                self._oled = None

    def spi(self):
        s = self.profile["spi"]
        m = self.machine
        return m.SPI(s["id"], baudrate=s["baudrate"], polarity=0, phase=0,
                     sck=m.Pin(s["sck"]), mosi=m.Pin(s["mosi"]), miso=m.Pin(s["miso"]))

    def rc522_pins(self):
        r = self.profile["rc522"]
        m = self.machine
        return m.Pin(r["cs"], m.Pin.OUT, value=1), m.Pin(r["rst"], m.Pin.OUT, value=1)

    def led(self, colour):
        if self._pixel is not None:
            self._pixel[0] = COLOURS.get(colour, (0, 0, 0))
            self._pixel.write()
        on = _DISCRETE.get(colour, ())
        for name in self._leds:
            self._leds[name].value(1 if name in on else 0)

    def tone(self, hz):
        if self._buzzer is None:
            return
        if hz:
            self._buzzer.freq(hz)
            self._buzzer.duty_u16(32768)
        else:
            self._buzzer.duty_u16(0)

    def display(self, lines):
        o = self._oled
        if o is None:
            return
        o.fill(0)
        y = 0
        for i, line in enumerate(lines[:4]):
            if i == 0:
                _big(o, line[:8], 0, 0)  # headline at 2x: 16 px high, 8 characters
                y = 20
            else:
                o.text(line[:16], 0, y)
                y += 12
        o.show()

    def record(self, event):
        print("kiosk:", event["kind"], event.get("reason") or "", " / ".join(event["lines"]))

    def watchdog(self, timeout_ms):
        if timeout_ms:
            self._wdt = self.machine.WDT(timeout=timeout_ms)

    def feed_watchdog(self):
        if self._wdt is not None:
            self._wdt.feed()


_glyph = None


def _big(oled, text, x, y):
    """Draw text at twice the built-in 8x8 font size (large text for poor sight)."""
    global _glyph
    import framebuf
    if _glyph is None:
        _glyph = framebuf.FrameBuffer(bytearray(8), 8, 8, framebuf.MONO_HLSB)
    for ch in text:
        _glyph.fill(0)
        _glyph.text(ch, 0, 0, 1)
        for gy in range(8):
            for gx in range(8):
                if _glyph.pixel(gx, gy):
                    oled.fill_rect(x + 2 * gx, y + 2 * gy, 2, 2, 1)
        x += 16
