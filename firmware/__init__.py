# The kiosk application (DESIGN.md 4): tap loop, journal, MQTT client, feedback.
# Runs on MicroPython (the board) and CPython (the sim board, tests). See docs/firmware.md.
VERSION = "1.0.0"
