# Time for the kiosk on both interpreters: monotonic ticks for timeouts, wall-clock UTC
# seconds for swipes. MicroPython has time.ticks_ms/ticks_diff and asyncio.sleep_ms;
# CPython has neither, so shared code calls these helpers (docs/developing.md).
import time

try:
    import asyncio
except ImportError:  # older MicroPython
    import uasyncio as asyncio

if hasattr(time, "ticks_ms"):
    ticks_ms = time.ticks_ms
    ticks_diff = time.ticks_diff
    ticks_add = time.ticks_add
else:
    def ticks_ms():
        return int(time.monotonic() * 1000)  # type: ignore[attr-defined]  # CPython

    def ticks_diff(a, b):
        return a - b

    def ticks_add(a, delta):
        return a + delta

if hasattr(asyncio, "sleep_ms"):
    sleep_ms = asyncio.sleep_ms
else:
    def sleep_ms(ms):
        return asyncio.sleep(ms / 1000)

if hasattr(asyncio, "wait_for_ms"):
    wait_for_ms = asyncio.wait_for_ms
else:
    def wait_for_ms(aw, ms):
        return asyncio.wait_for(aw, ms / 1000)

TimeoutError = asyncio.TimeoutError

# Some MicroPython ports count from 2000-01-01; the wire speaks Unix seconds (UTC).
_EPOCH = 946684800 if time.gmtime(0)[0] == 2000 else 0
_offset = 0
_started = ticks_ms()
# Where the wall clock came from: None (unset: the board's RTC after power-up is wrong),
# "ntp", "config" (the retained config topic's clock, a fallback) or "host" (sim, CPython).
source = None


def now():
    """Unix seconds, UTC."""
    return int(time.time()) + _EPOCH + _offset


def set_now(epoch_s, how):
    """Correct the wall clock to epoch_s (from NTP's RTC set, the config topic or the host)."""
    global _offset, source
    _offset = int(epoch_s) - (int(time.time()) + _EPOCH)
    source = how


def uptime_s():
    return ticks_diff(ticks_ms(), _started) // 1000
