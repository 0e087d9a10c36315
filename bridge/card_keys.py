# host-only. The site's MIFARE card keys (DESIGN.md 3.2, protocol/credential.py).
#
# The site master key is made once, kept in the registry database (table site_secrets) and
# never leaves the bridge side: kiosks and the enrollment station are given the card secret
# derived from it. Neither is ever printed, logged or published.
import os
import time

from sqlalchemy import insert, select

from bridge import schema
from protocol import credential

MASTER = "card_master"


def site_master(engine):
    """The site master key (32 bytes), created on first use."""
    t = schema.site_secrets
    with engine.begin() as conn:
        value = conn.execute(select(t.c.value_hex).where(t.c.name == MASTER)).scalar()
        if value is None:
            value = os.urandom(32).hex()
            conn.execute(insert(t).values(name=MASTER, value_hex=value, created_at=int(time.time())))
    return bytes.fromhex(value)


def card_secret(engine):
    """What kiosks hold to check credentials (installed into config.json as card_secret)."""
    return credential.card_secret(site_master(engine))


def card_number(resident_id):
    """The number a card's credential binds to its UID: the resident's number (R000381 ->
    381), so a credential copied onto another resident's card fails."""
    digits = "".join(ch for ch in resident_id if ch.isdigit())
    return int(digits or "0") % (1 << 32)
