# Aixin card wire protocol v1: the contract shared by the kiosk firmware (MicroPython)
# and the bridge (CPython). Pure Python that runs unchanged on both. See docs/protocol.md.
VERSION = 1
