# host-only. The device and people registry: merchants, kiosks (with their device keys),
# residents and cards. Each function is what one CLI subcommand does.
import os
import re
import time

from sqlalchemy import func, insert, select, update

from bridge import ledger, schema
from bridge.db import BridgeError, bump
from protocol import topics, uid as uidtext

DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _id(kind, value):
    if not topics.valid_id(value):
        raise BridgeError("%s id %r: use 1-32 of A-Z a-z 0-9 - _ (it is part of MQTT topics)"
                          % (kind, value))
    return value


def add_merchant(engine, merchant_id, name=""):
    _id("merchant", merchant_id)
    with engine.begin() as conn:
        if conn.execute(select(schema.merchants.c.id).where(
                schema.merchants.c.id == merchant_id)).first():
            raise BridgeError("merchant %s already exists" % merchant_id)
        conn.execute(insert(schema.merchants).values(id=merchant_id, name=name or merchant_id,
                                                     created_at=int(time.time())))
        ledger.account_id(conn, ledger.merchant(merchant_id))
        bump(conn, "registry_version")
    return merchant_id


def _new_key():
    return os.urandom(32)


def add_kiosk(engine, kiosk_id, merchant_id, service):
    """Register a kiosk at a merchant for one service. Returns the device key (bytes):
    shown once to the installer, who writes it to the kiosk."""
    _id("kiosk", kiosk_id)
    with engine.begin() as conn:
        if conn.execute(select(schema.merchants.c.id).where(
                schema.merchants.c.id == merchant_id)).first() is None:
            raise BridgeError("no merchant %s: add it first with `aixin merchant add %s NAME`"
                              % (merchant_id, merchant_id))
        if conn.execute(select(schema.kiosks.c.id).where(
                schema.kiosks.c.id == kiosk_id)).first():
            raise BridgeError("kiosk %s already exists; to give it a new key use "
                              "provisioning (reflash)" % kiosk_id)
        from bridge import pricing
        rules = pricing.current(conn)
        if rules is not None and service not in rules.services:
            raise BridgeError("service %r is not in the rules in force (known: %s)"
                              % (service, ", ".join(sorted(rules.services))))
        key = _new_key()
        conn.execute(insert(schema.kiosks).values(
            id=kiosk_id, merchant_id=merchant_id, service=service, key_hex=key.hex(),
            key_gen=1, seq_base=1, high_seq=0, enabled=True, created_at=int(time.time())))
        bump(conn, "registry_version")
    return key


def provision_kiosk(engine, kiosk_id):
    """Rotate a kiosk's device key for a reflash. Returns (key bytes, seq_base): the
    kiosk must start counting at seq_base, one past the highest seq ever seen from it, so
    nothing signed under the old key can be replayed (older seqs are refused as stale)."""
    k = schema.kiosks
    with engine.begin() as conn:
        row = conn.execute(select(k).where(k.c.id == kiosk_id).with_for_update()).mappings().first()
        if row is None:
            raise BridgeError("no kiosk %s: register it with `aixin kiosk add`" % kiosk_id)
        seen = conn.execute(select(func.max(schema.swipes.c.seq)).where(
            schema.swipes.c.kiosk_id == kiosk_id)).scalar() or 0
        seq_base = max(seen, row["high_seq"], row["seq_base"] - 1) + 1
        key = _new_key()
        conn.execute(update(k).where(k.c.id == kiosk_id).values(
            key_hex=key.hex(), key_gen=row["key_gen"] + 1, seq_base=seq_base,
            high_seq=max(row["high_seq"], seen)))
        bump(conn, "registry_version")
    return key, seq_base


def kiosk_key(engine, kiosk_id):
    """The kiosk's current device key (bytes). For installers and tests; never log it."""
    with engine.connect() as conn:
        h = conn.execute(select(schema.kiosks.c.key_hex).where(
            schema.kiosks.c.id == kiosk_id)).scalar()
    if h is None:
        raise BridgeError("no kiosk %s" % kiosk_id)
    return bytes.fromhex(h)


def set_kiosk_enabled(engine, kiosk_id, enabled):
    with engine.begin() as conn:
        n = conn.execute(update(schema.kiosks).where(schema.kiosks.c.id == kiosk_id)
                         .values(enabled=enabled)).rowcount
        if not n:
            raise BridgeError("no kiosk %s" % kiosk_id)
        bump(conn, "registry_version")


def list_kiosks(conn):
    """Kiosks without their keys. high_seq: the highest seq ever decided for the kiosk
    (the swipes table is the record; the column keeps it across key rotations)."""
    k, s = schema.kiosks, schema.swipes
    seen = (select(func.max(s.c.seq)).where(s.c.kiosk_id == k.c.id).scalar_subquery())
    rows = conn.execute(
        select(k.c.id, k.c.merchant_id, k.c.service, k.c.key_gen, k.c.seq_base, k.c.high_seq,
               seen.label("seen"), k.c.enabled).order_by(k.c.id)).mappings()
    out = []
    for r in rows:
        d = dict(r)
        d["high_seq"] = max(d["high_seq"], d.pop("seen") or 0)
        out.append(d)
    return out


def add_resident(engine, name, birth_date, flags=(), resident_id=None):
    """Enroll a resident. birth_date 'YYYY-MM-DD'; flags from disabled, dementia,
    preferential. Returns the resident id (generated as R000001... if not given)."""
    from bridge.pricing import FLAGS
    if not DATE.match(birth_date or ""):
        raise BridgeError("birth date %r: write it as YYYY-MM-DD" % (birth_date,))
    flags = [f.strip() for f in flags if f.strip()]
    for f in flags:
        if f not in FLAGS:
            raise BridgeError("flag %r: use %s" % (f, ", ".join(FLAGS)))
    r = schema.residents
    with engine.begin() as conn:
        if resident_id is None:
            n = conn.execute(select(func.count()).select_from(r)).scalar()
            while True:
                n += 1
                resident_id = "R%06d" % n
                if conn.execute(select(r.c.id).where(r.c.id == resident_id)).first() is None:
                    break
        _id("resident", resident_id)
        if conn.execute(select(r.c.id).where(r.c.id == resident_id)).first():
            raise BridgeError("resident %s already exists" % resident_id)
        conn.execute(insert(r).values(id=resident_id, name=name, birth_date=birth_date,
                                      flags=",".join(flags), created_at=int(time.time())))
        ledger.account_id(conn, ledger.wallet(resident_id))
    return resident_id


def canonical_uid(text):
    text = (text or "").strip().replace(":", "").replace(" ", "").upper()
    if not uidtext.is_uid_text(text):
        raise BridgeError("card UID %r: give 8, 14 or 20 hex digits as the reader shows it "
                          "(e.g. ED0BA996)" % (text,))
    return text


def enroll_card(engine, card_uid, resident_id):
    card_uid = canonical_uid(card_uid)
    c = schema.cards
    with engine.begin() as conn:
        if conn.execute(select(schema.residents.c.id).where(
                schema.residents.c.id == resident_id)).first() is None:
            raise BridgeError("no resident %s: add them first with `aixin resident add`"
                              % resident_id)
        row = conn.execute(select(c).where(c.c.uid == card_uid)).mappings().first()
        if row is not None:
            raise BridgeError("card %s is already enrolled to %s" % (card_uid, row["resident_id"]))
        now = int(time.time())
        conn.execute(insert(c).values(uid=card_uid, resident_id=resident_id, status="active",
                                      enrolled_at=now, changed_at=now, note=""))
        bump(conn, "lists_version")
    return card_uid


def set_card_status(engine, card_uid, blocked, note=""):
    """Block (lost/stolen) or unblock a card. Kiosks learn it through their config topic
    (the running bridge republishes when lists_version changes). Returns lists_version."""
    card_uid = canonical_uid(card_uid)
    c = schema.cards
    with engine.begin() as conn:
        n = conn.execute(update(c).where(c.c.uid == card_uid).values(
            status="blocked" if blocked else "active", changed_at=int(time.time()),
            note=note)).rowcount
        if not n:
            raise BridgeError("card %s is not enrolled: check the UID with `aixin history`"
                              % card_uid)
        return bump(conn, "lists_version")


def card_lists(conn):
    """(deny, allow): blocked and active card UIDs."""
    c = schema.cards
    deny, allow = [], []
    for u, status in conn.execute(select(c.c.uid, c.c.status).order_by(c.c.uid)):
        (deny if status == "blocked" else allow).append(u)
    return deny, allow
