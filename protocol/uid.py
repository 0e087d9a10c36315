# The card UID's text form, defined once (DESIGN.md 3): fixed-width upper-case hex, two
# digits per byte, no separators, so a UID with a leading zero byte keeps it
# (ED0BA996, never EDBA996). ISO 14443-3 UIDs are 4, 7 or 10 bytes (cascade levels 1-3).
import binascii

UID_LENGTHS = (4, 7, 10)


def uid_hex(uid):
    """bytes -> 'ED0BA996'. Raises ValueError for a length ISO 14443-3 does not allow."""
    if len(uid) not in UID_LENGTHS:
        raise ValueError("UID must be 4, 7 or 10 bytes, got %d" % len(uid))
    return binascii.hexlify(bytes(uid)).decode().upper()


def is_uid_text(text):
    """True if text is a UID in its canonical form (upper-case hex of 4, 7 or 10 bytes)."""
    return isinstance(text, str) and len(text) in (8, 14, 20) and \
        not text.strip("0123456789ABCDEF")  # what strip() leaves is not upper-case hex


def uid_bytes(text):
    """'ED0BA996' -> bytes. Accepts only the canonical form; raises ValueError otherwise."""
    if not is_uid_text(text):
        raise ValueError("not a card UID (8, 14 or 20 upper-case hex digits): %r" % (text,))
    return binascii.unhexlify(text)
