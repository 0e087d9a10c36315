# Espressif ESP32-DevKitC (ESP32-WROOM-32). RC522 on VSPI (machine.SPI(2)): its default
# pins SCK 18, MOSI 23, MISO 19. GPIO 21/22 are the usual I2C pair (SSD1306). Discrete
# LEDs through 330 ohm resistors; a passive piezo buzzer driven by PWM. Avoid strapping
# pins 0, 2, 12, 15 and flash pins 6-11.
PROFILE = {
    "name": "esp32_devkitc",
    "chip": "ESP32",  # as esptool names it: flash.sh refuses another chip
    "spi": {"id": 2, "sck": 18, "mosi": 23, "miso": 19, "baudrate": 4000000},
    "rc522": {"cs": 5, "rst": 27},
    "led": {"green": 25, "red": 26, "blue": 33},
    "buzzer": 32,
    "i2c": {"id": 0, "scl": 22, "sda": 21, "ssd1306": 0x3C},
}
