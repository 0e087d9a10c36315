# The sim board's profile ("board": "sim"): pin numbers as boards/sim/rc522.wire() uses
# them (CS 5, RST 22) and an SPI bus at 4 MHz; feedback is recorded, not driven
# (firmware.board.SimBoard), and the display is a list of text lines.
PROFILE = {
    "name": "sim",
    "chip": None,  # no chip: the virtual board
    "spi": {"id": 1, "sck": 18, "mosi": 23, "miso": 19, "baudrate": 4000000},
    "rc522": {"cs": 5, "rst": 22},
    "led": {"green": 25, "red": 26, "blue": 33},
    "buzzer": 32,
    "i2c": {"id": 0, "scl": 22, "sda": 21, "ssd1306": 0x3C},
}
