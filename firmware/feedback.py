# What the resident sees and hears (DESIGN.md 4, DOMAIN "how it is used at the counter"):
# one unmistakable answer per tap, in colour, in a distinct tone pattern and, where a
# display is fitted, in large text with the amount paid and the balance left.
# The board object does the hardware (firmware/board.py); this module decides what to show.
from protocol.money import yuan
from firmware import clock
from protocol import reasons

try:
    import asyncio
except ImportError:
    import uasyncio as asyncio

# kind -> (LED colour, tone pattern: (Hz, ms) pairs, 0 Hz = silence, headline)
# Patterns differ in rhythm and pitch, not only pitch, for residents with poor hearing.
KINDS = {
    "reading":  ("blue",  ((2000, 30),), "..."),
    "approved": ("green", ((1800, 90), (0, 40), (2400, 160)), "PAID"),
    "declined": ("red",   ((400, 700),), "NO"),
    "offline":  ("amber", ((1800, 90), (0, 60), (1800, 90), (0, 60), (1800, 90)), "OK (OFFLINE)"),
    "no_verdict": ("amber", ((900, 250), (0, 120), (600, 250)), "WAIT"),
    "fault":    ("red",   ((300, 300), (0, 200), (300, 300), (0, 200), (300, 300)), "FAULT"),
    "idle":     ("off",   (), ""),
}


class Feedback:
    def __init__(self, board):
        self.board = board
        self._tone = None
        self.last = None

    def show(self, kind, reason=None, text=None, pays=None, balance=None, uid=None, seq=None):
        """Show one outcome now; the tone plays beside the tap loop, never blocking it."""
        colour, pattern, headline = KINDS[kind]
        lines = [headline]
        if text is None and reason is not None and reason != reasons.OK:
            text = reasons.display(reason)
        if text:
            lines.append(text)
        if pays is not None:
            lines.append("Paid " + yuan(pays))
        if balance is not None:
            lines.append("Left " + yuan(balance))
        event = {"kind": kind, "reason": reason, "text": text, "pays": pays,
                 "balance": balance, "colour": colour, "lines": lines, "uid": uid, "seq": seq}
        self.last = event
        self.board.led(colour)
        self.board.display(lines)
        self.board.record(event)
        if self._tone is not None:
            self._tone.cancel()
            self._tone = None
            self.board.tone(0)
        if pattern:
            self._tone = asyncio.create_task(self._play(pattern))
        return event

    def stop(self):
        if self._tone is not None:
            self._tone.cancel()
            self._tone = None
        self.board.tone(0)

    async def _play(self, pattern):
        try:
            for hz, ms in pattern:
                self.board.tone(hz)
                await clock.sleep_ms(ms)
        finally:
            self.board.tone(0)
