# The MIFARE Classic card credential (DESIGN.md 3.2), defined once for the kiosk (which
# checks it), the enrollment station (which writes it) and the virtual cards.
#
# Sector 1 of a MIFARE Classic 1K card holds it:
#   block 4 (credential): "AX" | version 1 | 0 | card number (4 bytes, big-endian) |
#                         MAC (8 bytes) = HMAC-SHA256(mac key, "aixin1|credential|UID|NO")[:8]
#   block 7 (trailer):    key A = per-card key, transport access bits, key B = per-card key
# Per-card key = HMAC-SHA256(card secret, "aixin1|card-key|" + UID text)[:6], so one card's
# key says nothing about another's. A copy of the UID alone cannot authenticate sector 1,
# and a block copied from another card fails the MAC, which binds UID and card number.
#
# Keys: the site master key never leaves the bridge; kiosks and the enrollment station get
# the *card secret* derived from it (docs/security.md has the threat model: Crypto1 is
# broken, so this raises the cost of a clone; it does not make one impossible).
import binascii
import struct

from protocol import signing
from protocol.uid import uid_hex

SECTOR = 1
BLOCK = 4          # first data block of sector 1
TRAILER = 7        # sector 1's trailer
MAGIC = b"AX"
VERSION = 1
TRANSPORT_ACCESS = b"\xff\x07\x80\x69"  # NXP transport configuration: keys A/B read+write
DEFAULT_KEY = b"\xff\xff\xff\xff\xff\xff"  # a blank card's key A and B


def card_secret(site_master):
    """What kiosks hold (32 bytes), derived from the site master key (bridge only)."""
    return signing.hmac_sha256(site_master, b"aixin1|card-secret")


def card_key(secret, uid):
    """The 6-byte MIFARE key of sector 1 on the card with this UID (bytes)."""
    return signing.hmac_sha256(secret, b"aixin1|card-key|" + uid_hex(uid).encode())[:6]


def _mac(secret, uid, card_no):
    text = "aixin1|credential|%s|%d" % (uid_hex(uid), card_no)
    return signing.hmac_sha256(signing.hmac_sha256(secret, b"aixin1|mac-key"), text.encode())[:8]


def block(secret, uid, card_no):
    """The 16-byte credential block for a card."""
    if not 0 <= card_no <= 0xFFFFFFFF:
        raise ValueError("card number must fit in 32 bits")
    out = bytearray(16)
    out[0:2] = MAGIC
    out[2] = VERSION
    struct.pack_into(">I", out, 4, card_no)
    out[8:16] = _mac(secret, uid, card_no)
    return bytes(out)


def trailer(secret, uid):
    """The 16-byte sector trailer that enrollment writes to block 7."""
    k = card_key(secret, uid)
    return k + TRANSPORT_ACCESS + k


def check(secret, uid, data):
    """The card number if data is a valid credential block for this UID, else None."""
    if data is None or len(data) < 16 or bytes(data[0:2]) != MAGIC or data[2] != VERSION:
        return None
    card_no = struct.unpack_from(">I", bytes(data[:16]), 4)[0]
    if not signing.equal(bytes(data[8:16]), _mac(secret, uid, card_no)):
        return None
    return card_no


def secret_from_hex(text):
    return binascii.unhexlify(text)
