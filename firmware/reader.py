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

    def read_credential(self, card, secret):
        """True if the card authenticates sector 1 with its per-card key and holds a
        credential block whose MAC binds its UID (protocol/credential.py). A card that only
        copies the UID fails here."""
        from firmware import rc522
        from protocol import credential
        st, data = self.rc.read_block(card.uid, credential.BLOCK, credential.card_key(secret, card.uid),
                                      rc522.KEY_A)
        return st == rc522.OK and credential.check(secret, card.uid, data) is not None

    def personalise(self, card, secret, card_no, old_key=None):
        """Enrollment station: write the credential and the per-card keys to a blank card
        (transport key FFFFFFFFFFFF unless old_key). Returns an rc522 status (OK = done).
        The trailer goes last: until it is written the card still opens with old_key, so a
        card pulled away mid-way can simply be personalised again."""
        from firmware import rc522
        from protocol import credential
        key = old_key or credential.DEFAULT_KEY
        st = self.rc.write_block(card.uid, credential.BLOCK, credential.block(secret, card.uid, card_no),
                                 key, rc522.KEY_A)
        if st != rc522.OK:
            return st
        return self.rc.write_block(card.uid, credential.TRAILER, credential.trailer(secret, card.uid),
                                   key, rc522.KEY_A)
