# The MIFARE credential (protocol/credential.py) through the real driver on the emulated
# RC522: enrollment writes it, a kiosk checks it, a UID clone or a copied block fails.
# Runs on CPython and under MicroPython.
from boards.sim import cards
from boards.sim import rc522 as chip
from firmware import rc522
from firmware.reader import CardReader
from protocol import credential

SECRET = credential.card_secret(b"site master key for tests......")
UID4 = b"\xed\x0b\xa9\x96"
UID7 = b"\x04\x11\x22\x33\x44\x55\x66"


def _reader_with(card):
    spi, cs, rst, _chip, field = chip.wire()
    field.add(card)
    reader = CardReader(spi, cs, rst)
    return reader, reader.poll()


def test_block_round_trip_and_binding():
    b = credential.block(SECRET, UID4, 381)
    assert len(b) == 16 and b[:2] == b"AX"
    assert credential.check(SECRET, UID4, b) == 381
    assert credential.check(SECRET, UID7, b) is None           # bound to the UID
    other = credential.card_secret(b"another site's master key.......")
    assert credential.check(other, UID4, b) is None             # bound to the site
    tampered = bytearray(b)
    tampered[7] ^= 1                                            # card number changed
    assert credential.check(SECRET, UID4, tampered) is None
    assert credential.check(SECRET, UID4, None) is None


def test_card_keys_are_per_card():
    assert credential.card_key(SECRET, UID4) != credential.card_key(SECRET, UID7)
    assert len(credential.card_key(SECRET, UID4)) == 6


def test_enrolled_card_passes_for_4_and_7_byte_uids():
    for uid in (UID4, UID7):
        reader, card = _reader_with(cards.personalised(uid, SECRET, 12))
        assert card is not None and card.uid == uid
        assert reader.read_credential(card, SECRET)


def test_uid_clone_fails():
    reader, card = _reader_with(cards.uid_clone(UID4))
    assert card is not None
    assert not reader.read_credential(card, SECRET)


def test_block_copied_to_a_card_with_another_uid_fails():
    # A copier that knows one card's key copies its credential block onto a card with a
    # different UID and that card's right key: the MAC still fails.
    copy = cards.personalised(UID7, SECRET, 12)
    copy.blocks[credential.BLOCK][:] = credential.block(SECRET, UID4, 12)
    reader, card = _reader_with(copy)
    assert not reader.read_credential(card, SECRET)


def test_enrollment_station_personalises_a_blank_card_through_the_driver():
    blank = cards.MifareClassic1K(UID4)
    reader, card = _reader_with(blank)
    assert not reader.read_credential(card, SECRET)
    assert reader.personalise(card, SECRET, 77) == rc522.OK
    assert credential.check(SECRET, UID4, bytes(blank.blocks[credential.BLOCK])) == 77
    assert reader.read_credential(card, SECRET)
    # the transport key no longer opens sector 1
    st, _ = reader.rc.read_block(UID4, credential.BLOCK, credential.DEFAULT_KEY, rc522.KEY_A)
    assert st != rc522.OK
