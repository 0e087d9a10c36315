# host-only. The double-entry ledger (DESIGN.md 5). Invariants, stated before the code:
#   - post() writes a transaction's entries and the account balances in the caller's
#     database transaction, and refuses entries that do not sum to zero;
#   - a balance changes only through post(), by exactly the sum of its new entries;
#   - an account with a floor (every wallet: 0) never goes below it;
#   - nothing is deleted: a mistake is undone by reverse(), which posts opposite entries.
# Sign convention: an entry's amount is signed fen; money flows from negative to positive.
# Funds and the cash source run negative (what they have paid out); merchant payables run
# positive (what the site owes the merchant).
import time

from sqlalchemy import bindparam, func, insert, select, update

from bridge import schema
from bridge.db import BridgeError, InQuery, InsertReturning, Prepared
from bridge import localtime

CASH = "cash"
SUSPENSE = "suspense"

_ids = {}  # (engine url, code) -> account id; ids never change once created


def wallet(resident_id):
    return "wallet:" + resident_id


def fund(name):
    return "fund:" + name


def merchant(merchant_id):
    return "merchant:" + merchant_id


def _kind(code):
    return code.split(":", 1)[0]


def account_id(conn, code, create=True):
    key = (conn.engine, code)
    if key in _ids:
        return _ids[key]
    a = schema.accounts
    row = conn.execute(select(a.c.id).where(a.c.code == code)).first()
    if row is None:
        if not create:
            return None
        kind = _kind(code)
        floor = 0 if kind == "wallet" else None
        # A nested savepoint so a concurrent creator (another bridge) does not spoil the
        # caller's transaction; then read back whichever insert won.
        try:
            with conn.begin_nested():
                conn.execute(insert(a).values(code=code, kind=kind, balance=0, floor=floor,
                                              created_at=int(time.time())))
        except Exception:
            pass
        # Not cached: the caller's transaction may still roll the new row back.
        return conn.execute(select(a.c.id).where(a.c.code == code)).scalar()
    _ids[key] = row[0]
    return row[0]


_a, _t = schema.accounts, schema.transactions
# Statements built once: on a hot path SQLAlchemy's per-call construction and cache-key
# work costs more than SQLite itself.
_LOCK = InQuery(lambda ids: select(_a.c.id, _a.c.balance, _a.c.floor)
               .where(_a.c.id.in_(ids)).order_by(_a.c.id).with_for_update(), ids=_a.c.id)
_BALANCE = select(_a.c.balance).where(_a.c.code == bindparam("code"))
_INS_TXN = insert(_t)
_INS_TXN_KEYED = InsertReturning(_t, _t.c.id, _t.c.kiosk_id, _t.c.seq)
_INS_ENTRY = Prepared(insert(schema.entries))
_UPD_BAL = Prepared(update(_a).where(_a.c.id == bindparam("aid")).values(
    balance=_a.c.balance + bindparam("delta")))
_TXN_DEFAULTS = {"kiosk_id": None, "seq": None, "card_uid": None, "resident_id": None,
                 "merchant_id": None, "service": None, "offline": False, "flagged": False,
                 "reverses": None, "reversed_by": None}


def lock(conn, ids):
    """Lock account rows in id order (PostgreSQL: SELECT ... FOR UPDATE; SQLite's single
    writer already serialises) and return {id: (balance, floor)}. Serialising per account
    is what keeps two bridges from spending one wallet twice (DESIGN.md 6a)."""
    if not ids:
        return {}
    rows = _LOCK.rows(conn, ids=sorted(ids))
    return {r[0]: (r[1], r[2]) for r in rows}


def balance(conn, code):
    return conn.execute(_BALANCE, {"code": code}).scalar()


class Pending:
    """Group commit inside one database transaction: accounts are locked once per batch
    and their running balances kept here. With defer=True the transactions, entries and
    balance updates are all written in bulk by flush() (transaction ids come back from
    one INSERT ... RETURNING); post() then returns a Deferred in place of the id, whose
    .id is set by flush(). The invariants hold at commit, the only point another reader
    can see, and checks made in the batch (floors) use the running balances here."""

    def __init__(self, defer=False):
        self.defer = defer
        self.held = {}      # account id -> [balance, floor], running
        self.deltas = {}    # account id -> sum of this batch's entries
        self.entries = []   # (Deferred or id, account id, amount)
        self.txns = []      # (Deferred, values) not yet inserted

    def lock(self, conn, ids):
        missing = [i for i in ids if i not in self.held]
        if missing:
            for aid, (bal, floor) in lock(conn, missing).items():
                self.held[aid] = [bal, floor]
        return self.held

    def flush(self, conn):
        if self.txns:
            keyed = {(v["kiosk_id"], v["seq"]): ref for ref, v in self.txns}
            if None not in keyed and len(keyed) == len(self.txns):
                # One multi-row INSERT; RETURNING order is not guaranteed, so rows are
                # matched back by (kiosk, seq), unique per booked swipe.
                for tid, kiosk_id, seq in _INS_TXN_KEYED.rows(conn, [v for _, v in self.txns]):
                    keyed[(kiosk_id, seq)].id = tid
            else:
                for ref, v in self.txns:
                    ref.id = conn.execute(_INS_TXN, v).inserted_primary_key[0]
        if self.entries:
            _INS_ENTRY.many(conn, [
                {"txn_id": t.id if isinstance(t, Deferred) else t, "account_id": aid,
                 "amount": amount} for t, aid, amount in self.entries])
            _UPD_BAL.many(conn, [{"aid": aid, "delta": d} for aid, d in
                                 sorted(self.deltas.items()) if d])
        self.entries, self.deltas, self.txns = [], {}, []


class Deferred:
    """A transaction id known after Pending.flush()."""
    __slots__ = ("id",)

    def __init__(self):
        self.id = None


def post(conn, legs, kind, ts, reason="ok", memo="", tz=None, pending=None, **fields):
    """Book one transaction. legs: [(account code, signed fen), ...] summing to zero.
    Returns (transaction id, {code: new balance}). Raises BridgeError, booking nothing, if
    the entries do not sum to zero or a floor would be crossed. pending: a Pending for
    group commit (the caller flushes it); without it everything is written now."""
    if sum(amount for _, amount in legs) != 0:
        raise BridgeError("entries do not sum to zero: %r" % (legs,))
    merged = {}
    codes = {}
    for code, amount in legs:
        if amount:
            aid = account_id(conn, code)
            codes[aid] = code
            merged[aid] = merged.get(aid, 0) + amount
    own = pending is None
    if own:
        pending = Pending()
    held = pending.lock(conn, merged)
    for aid, delta in merged.items():
        bal, floor = held[aid]
        if floor is not None and delta < 0 and bal + delta < floor:
            raise BridgeError("account would go below its floor")
    day, month = localtime.day_month(ts, tz)
    values = dict(_TXN_DEFAULTS)
    values.update(kind=kind, ts=int(ts), local_day=day, local_month=month,
                  booked_at=int(time.time()), amount=sum(a for a in merged.values() if a > 0),
                  reason=reason, memo=memo)
    values.update(fields)
    if pending.defer:
        txn_id = Deferred()
        pending.txns.append((txn_id, values))
    else:
        txn_id = conn.execute(_INS_TXN, values).inserted_primary_key[0]
    for aid, amount in merged.items():
        pending.entries.append((txn_id, aid, amount))
        pending.deltas[aid] = pending.deltas.get(aid, 0) + amount
        held[aid][0] += amount
    if own:
        pending.flush(conn)
    return txn_id, {codes[aid]: held[aid][0] for aid in merged}


def txn_name(txn_id):
    return None if txn_id is None else "T%d" % txn_id


def parse_txn(text):
    text = str(text).strip()
    if text[:1] in ("T", "t"):
        text = text[1:]
    if not text.isdigit():
        raise BridgeError("%r is not a transaction id (like T42): see `aixin history CARD`"
                          % (text,))
    return int(text)


def topup(engine, resident_id, fen, memo="", now=None):
    """Cash in: the wallet gains fen, the cash source pays it. Returns 'T<id>'."""
    if not isinstance(fen, int) or fen <= 0:
        raise BridgeError("a top-up must be a positive whole number of fen (1 yuan = 100 fen)")
    with engine.begin() as conn:
        r = conn.execute(select(schema.residents.c.id).where(
            schema.residents.c.id == resident_id)).first()
        if r is None:
            raise BridgeError("no resident %s: add them first with `aixin resident add`"
                              % resident_id)
        now = time.time() if now is None else now
        tid, _ = post(conn, [(CASH, -fen), (wallet(resident_id), fen)], "topup", now,
                   memo=memo, resident_id=resident_id, tz=site_tz(conn))
        return txn_name(tid)


def site_tz(conn):
    """The time zone of the rules in force (days for caps and reports), or None."""
    from bridge import pricing
    r = pricing.current(conn)
    return r.tz if r else None


def reverse(engine, txn, memo="", now=None):
    """Undo a transaction with opposite entries (never by deletion). Returns 'T<id>' of
    the reversal. A reversed transaction no longer counts towards caps."""
    txn_id = parse_txn(txn)
    t, e = schema.transactions, schema.entries
    with engine.begin() as conn:
        row = conn.execute(select(t).where(t.c.id == txn_id).with_for_update()).mappings().first()
        if row is None:
            raise BridgeError("no transaction T%d: see `aixin history CARD` for ids" % txn_id)
        if row["kind"] == "reversal":
            raise BridgeError("T%d is itself a reversal; to undo it, book a new top-up or "
                              "charge instead" % txn_id)
        if row["reversed_by"] is not None:
            raise BridgeError("T%d was already reversed by T%d" % (txn_id, row["reversed_by"]))
        legs = [(code, -amount) for code, amount in conn.execute(
            select(schema.accounts.c.code, e.c.amount)
            .join(schema.accounts, schema.accounts.c.id == e.c.account_id)
            .where(e.c.txn_id == txn_id)).all()]
        now = time.time() if now is None else now
        try:
            rid, _ = post(conn, legs, "reversal", now, memo=memo or "reversal of T%d" % txn_id,
                       tz=site_tz(conn), reverses=txn_id, kiosk_id=row["kiosk_id"],
                       card_uid=row["card_uid"], resident_id=row["resident_id"],
                       merchant_id=row["merchant_id"], service=row["service"],
                       flagged=row["flagged"], offline=row["offline"])
        except BridgeError:
            raise BridgeError("reversing T%d would take the wallet below zero (the money "
                              "was spent since): top up first" % txn_id)
        conn.execute(update(t).where(t.c.id == txn_id).values(reversed_by=rid))
        return txn_name(rid)


def check(engine):
    """Prove the invariants. Returns a dict: ok, transactions, accounts, problems (list of
    strings)."""
    t, e, a = schema.transactions, schema.entries, schema.accounts
    problems = []
    with engine.connect() as conn:
        n_txn = conn.execute(select(func.count()).select_from(t)).scalar()
        n_acc = conn.execute(select(func.count()).select_from(a)).scalar()
        for txn_id, total in conn.execute(
                select(e.c.txn_id, func.sum(e.c.amount)).group_by(e.c.txn_id)
                .having(func.sum(e.c.amount) != 0)):
            problems.append("T%d: entries sum to %d, not 0" % (txn_id, total))
        for txn_id, in conn.execute(
                select(t.c.id).where(~t.c.id.in_(select(e.c.txn_id)))):
            problems.append("T%d: has no entries" % txn_id)
        sums = dict(conn.execute(select(e.c.account_id, func.sum(e.c.amount))
                                 .group_by(e.c.account_id)).all())
        for aid, code, bal, floor in conn.execute(select(a.c.id, a.c.code, a.c.balance, a.c.floor)):
            if bal != (sums.get(aid) or 0):
                problems.append("%s: balance %d but entries sum to %d"
                                % (code, bal, sums.get(aid) or 0))
            if floor is not None and bal < floor:
                problems.append("%s: balance %d below floor %d" % (code, bal, floor))
        s = schema.swipes
        for k, q in conn.execute(select(s.c.kiosk_id, s.c.seq).where(
                s.c.txn_id.is_not(None) & ~s.c.txn_id.in_(select(t.c.id)))):
            problems.append("swipe %s/%d points at a missing transaction" % (k, q))
        for k, q, n in conn.execute(
                select(t.c.kiosk_id, t.c.seq, func.count()).where(
                    t.c.kind.in_(("swipe", "flagged"))).group_by(t.c.kiosk_id, t.c.seq)
                .having(func.count() > 1)):
            problems.append("swipe %s/%d booked %d times" % (k, q, n))
    return {"ok": not problems, "transactions": n_txn, "accounts": n_acc,
            "problems": problems}
