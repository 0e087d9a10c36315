# M5Stack Atom Lite (ESP32-PICO-D4): built-in SK6812 RGB LED on GPIO 27, button on 39.
# The RC522 hangs off the header pins (SCK 23, MOSI 19, MISO 33, CS 22, RST 21); a piezo
# buzzer on the Grove port's GPIO 26. No display: colour and tone carry the verdict.
PROFILE = {
    "name": "m5stack_atom",
    "chip": "ESP32",  # as esptool names it: flash.sh refuses another chip
    "spi": {"id": 1, "sck": 23, "mosi": 19, "miso": 33, "baudrate": 4000000},
    "rc522": {"cs": 22, "rst": 21},
    "led": {"pixel": 27},
    "buzzer": 26,
    "i2c": None,
}
