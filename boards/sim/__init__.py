# The sim board: emulated peripherals (MFRC522 reader, cards) and machine-compatible pins.
