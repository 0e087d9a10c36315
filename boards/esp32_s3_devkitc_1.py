# Espressif ESP32-S3-DevKitC-1. Built-in WS2812 RGB LED on GPIO 48 (board v1.0; v1.1 moved
# it to GPIO 38: change "pixel"). RC522 on SPI(1) with the FSPI pins SCK 12, MOSI 11,
# MISO 13, CS 10. GPIO 26-32 are flash/PSRAM on the N8R8/N16R8 modules: not used.
PROFILE = {
    "name": "esp32_s3_devkitc_1",
    "chip": "ESP32-S3",  # as esptool names it: flash.sh refuses another chip
    "spi": {"id": 1, "sck": 12, "mosi": 11, "miso": 13, "baudrate": 4000000},
    "rc522": {"cs": 10, "rst": 9},
    "led": {"pixel": 48},
    "buzzer": 4,
    "i2c": {"id": 0, "scl": 2, "sda": 1, "ssd1306": 0x3C},
}
