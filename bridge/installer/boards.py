# host-only. What the installer needs to know about each board profile (boards/*.py): its
# chip (to refuse a wrong board), where MicroPython's image goes, and the RC522 wiring.
import boards

# Where MicroPython's image goes on each chip (the chip itself is in the board profile).
OFFSETS = {"ESP32": 0x1000, "ESP32-S3": 0x0}


def names():
    return list(boards.PROFILES)


def module(name):
    return boards.PROFILES[name]


def chip(name):
    return boards.profile(name).get("chip") or "ESP32"


def offset(name):
    return OFFSETS[chip(name)]


def offset_text(name):
    return "0x%X (%s)" % (offset(name), chip(name))


def for_chip(chip_name):
    return [n for n in names() if boards.profile(n).get("chip") == chip_name]


def wiring(name):
    """[(RC522 pin, GPIO or board pin)] for the profile, in the order of the RC522 header."""
    p = boards.profile(name)
    s, r = p["spi"], p["rc522"]
    return [("SDA", "%d (chip select)" % r["cs"]), ("SCK", s["sck"]), ("MOSI", s["mosi"]),
            ("MISO", s["miso"]), ("IRQ", "not connected"), ("GND", "GND"),
            ("RST", r["rst"]), ("3.3V", "3V3")]
