# host-only. What the installer needs to know about each board profile (boards/*.py): its
# chip (to refuse a wrong board), where MicroPython's image goes, and the RC522 wiring.
import boards

# The chip each profile is for, as esptool names it, and the image offset on that chip.
CHIPS = {
    "esp32_devkitc": "ESP32",
    "esp32_s3_devkitc_1": "ESP32-S3",
    "m5stack_atom": "ESP32",
    "sim": None,
}
OFFSETS = {"ESP32": 0x1000, "ESP32-S3": 0x0}


def names():
    return list(boards.PROFILES)


def module(name):
    return boards.PROFILES[name]


def chip(name):
    return CHIPS.get(name) or "ESP32"


def offset(name):
    return OFFSETS[chip(name)]


def offset_text(name):
    return "0x%X (%s)" % (offset(name), chip(name))


def for_chip(chip_name):
    return [n for n, c in CHIPS.items() if c == chip_name]


def wiring(name):
    """[(RC522 pin, GPIO or board pin)] for the profile, in the order of the RC522 header."""
    p = boards.profile(name)
    s, r = p["spi"], p["rc522"]
    return [("SDA", "%d (chip select)" % r["cs"]), ("SCK", s["sck"]), ("MOSI", s["mosi"]),
            ("MISO", s["miso"]), ("IRQ", "not connected"), ("GND", "GND"),
            ("RST", r["rst"]), ("3.3V", "3V3")]
