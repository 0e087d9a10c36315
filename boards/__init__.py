# Board profiles (DESIGN.md 1): one module per supported board with a PROFILE dict of pins
# and parts; firmware.board.Board builds the hardware from it. config.json names the
# profile ("board": "esp32_devkitc"). boards/sim/ is the virtual board (emulated parts).
PROFILES = {
    "esp32_devkitc": "esp32_devkitc",
    "esp32_s3_devkitc_1": "esp32_s3_devkitc_1",
    "m5stack_atom": "m5stack_atom",
    "sim": "sim_profile",
}


def profile(name):
    """The PROFILE dict of a board by its config name. Raises ValueError for unknown names."""
    if name not in PROFILES:
        raise ValueError("unknown board %r; one of: %s" % (name, ", ".join(PROFILES)))
    mod = __import__("boards." + PROFILES[name], None, None, ["PROFILE"])
    return mod.PROFILE
