# The card reader as the tap loop sees it: poll() -> card (.uid bytes, .sak) or None, and
# OSError while the reader does not answer (wiring or hardware), so the kiosk shows a
# reader fault instead of silently ignoring taps. Wraps firmware.rc522.Reader.


class CardReader:
    def __init__(self, spi, cs, rst):
        from firmware import rc522
        self.rc = rc522.Reader(spi, cs, rst, retry_polls=1)
        self.rc.begin()

    def poll(self):
        card = self.rc.poll()
        if card is None and not self.rc.ready:
            raise OSError(getattr(self.rc, "error", None) or "no reader")
        return card

    def read_credential(self, card):
        # The MIFARE credential check (DESIGN.md 3.2) needs the enrollment layout (sector,
        # key diversification, MAC) that the card-enrollment work defines; until it lands a
        # kiosk configured with "mifare": true declines every card with card_auth_failed.
        return False
