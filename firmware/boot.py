# Copied to the board's /boot.py by the installer (docs/firmware.md). Runs before main.py on
# every reset: keep it tiny, so a bad firmware update cannot stop the REPL from coming up.
import gc

gc.collect()
try:
    gc.threshold(gc.mem_free() // 4 + gc.mem_alloc())  # collect early: fewer long pauses
except (AttributeError, ValueError):
    pass
