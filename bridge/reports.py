# host-only. What operators read: a card's history and daily/monthly figures per
# merchant, service and payer (the resident, or each fund), for fund supervision.
import csv
import io

from sqlalchemy import and_, case, func, select

from bridge import ledger, schema
from bridge.db import BridgeError
from protocol import utctime


def history(engine, card_uid, limit=100):
    """The card's transactions, newest first, as dicts (fen amounts)."""
    from bridge.registry import canonical_uid
    card_uid = canonical_uid(card_uid)
    t, e, a = schema.transactions, schema.entries, schema.accounts
    with engine.connect() as conn:
        card = conn.execute(select(schema.cards).where(schema.cards.c.uid == card_uid)).mappings().first()
        if card is None:
            raise BridgeError("card %s is not enrolled" % card_uid)
        resident = card["resident_id"]
        wallet = ledger.wallet(resident)
        wallet_delta = (select(func.coalesce(func.sum(e.c.amount), 0))
                        .join(a, a.c.id == e.c.account_id)
                        .where(e.c.txn_id == t.c.id, a.c.code == wallet).scalar_subquery())
        rows = conn.execute(
            select(t.c.id, t.c.kind, t.c.ts, t.c.local_day, t.c.kiosk_id, t.c.seq,
                   t.c.merchant_id, t.c.service, t.c.amount, t.c.offline, t.c.flagged,
                   t.c.reason, t.c.reverses, t.c.reversed_by, t.c.memo,
                   wallet_delta.label("wallet"))
            .where((t.c.card_uid == card_uid) | and_(t.c.resident_id == resident,
                                                     t.c.kind == "topup"))
            .order_by(t.c.id.desc()).limit(limit)).mappings().all()
        out = []
        for r in rows:
            d = dict(r)
            d["txn"] = ledger.txn_name(d.pop("id"))
            d["ts"] = utctime.iso(d["ts"])
            out.append(d)
        return {"card": card_uid, "resident": resident, "status": card["status"],
                "balance": ledger.balance(conn, wallet) or 0, "transactions": out}


REPORT_COLUMNS = ("period", "merchant", "service", "payer", "taps", "fen")


def report(engine, period="daily", day=None):
    """Rows (period, merchant, service, payer, taps, fen): what each payer (resident or
    fund:<name>, or suspense for flagged offline swipes) paid each merchant for each
    service, per local day or month. Reversals count in their own period, negatively.
    day: limit to one period ('2026-11-23' or '2026-11')."""
    if period not in ("daily", "monthly"):
        raise BridgeError("period must be daily or monthly")
    t, e, a = schema.transactions, schema.entries, schema.accounts
    col = t.c.local_day if period == "daily" else t.c.local_month
    q = (select(col, t.c.merchant_id, t.c.service, a.c.code,
                func.sum(case((t.c.kind == "reversal", -1), else_=1)), func.sum(-e.c.amount))
         .join(e, e.c.txn_id == t.c.id).join(a, a.c.id == e.c.account_id)
         .where(t.c.kind.in_(("swipe", "flagged", "reversal")), t.c.merchant_id.is_not(None),
                a.c.kind.in_(("wallet", "fund", "suspense")))
         .group_by(col, t.c.merchant_id, t.c.service, a.c.code)
         .order_by(col, t.c.merchant_id, t.c.service, a.c.code))
    if day:
        q = q.where(col == day)
    rows = []
    with engine.connect() as conn:
        for p, m, s, code, taps, fen in conn.execute(q):
            payer = "resident" if code.startswith("wallet:") else code
            rows.append((p, m, s, payer, taps, fen))
    merged = {}
    for p, m, s, payer, taps, fen in rows:  # residents: one line, not one per wallet
        key = (p, m, s, payer)
        old = merged.get(key, (0, 0))
        merged[key] = (old[0] + taps, old[1] + fen)
    return [k + v for k, v in sorted(merged.items())]


def to_csv(rows, columns=REPORT_COLUMNS):
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(columns)
    w.writerows(rows)
    return buf.getvalue()
