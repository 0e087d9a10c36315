# host-only. Settling one swipe (DESIGN.md 5, 6): check it, decide, book, and build the
# signed result. The order of checks, and what each failure does:
#   topic/kiosk match, format  -> refused (logged, kept in `refusals`, no result: we cannot
#   unknown kiosk, bad MAC        sign a verdict the sender could trust), never booked;
#   seq below the kiosk's base  -> declined `stale` (older key generation), not stored;
#   same (kiosk, seq), same MAC -> the stored verdict, byte for byte; nothing new booked;
#   same (kiosk, seq), new MAC  -> declined `replay`, not stored, nothing booked;
#   kiosk disabled, card unknown or blocked, service not offered, not eligible, caps,
#   wallet short               -> declined with that reason; stored so it stays the answer;
#   all good                    -> approved, booked: wallet and funds pay the merchant.
# An offline swipe is booked at its own time; one that would be declined is booked as a
# flagged exception (merchant paid from `suspense`, for review) and its result is flagged.
# An offline swipe whose time cannot be right (before its kiosk was registered, or ahead of
# the bridge's clock) is booked at the bridge's time as such an exception, `clock_skew`.
import json
import time

from sqlalchemy import bindparam, func, insert, or_, select

from bridge import ledger, localtime, pricing, schema
from bridge.db import InQuery, Prepared
from protocol import messages, money, reasons, signing, topics, utctime


class Outcome:
    """What to do after the commit: publish result (and settlement) and log."""
    __slots__ = ("kiosk", "seq", "result", "settlement", "merchant", "log", "finish")

    def __init__(self, kiosk=None, seq=None, result=None, settlement=None, merchant=None,
                 log=None):
        self.kiosk = kiosk
        self.seq = seq
        self.result = result          # bytes for topics.results(kiosk), or None
        self.settlement = settlement  # bytes for topics.settlements(merchant), or None
        self.merchant = merchant
        self.log = log or {}
        self.finish = None  # set while the outcome waits for its transaction id


def _refuse(conn, now, topic, code, kiosk=None, seq=None, field=None):
    _INS_REFUSAL.many(conn, [dict(at=int(now), topic=topic[:200], kiosk_id=kiosk, seq=seq,
                                  reason=code, field=field)])
    return Outcome(kiosk, seq, log={"event": "refused", "kiosk": kiosk, "seq": seq,
                                    "reason": code, "field": field})


CLOCK_SLACK_S = 300  # how far an offline swipe's time may lie outside what is possible

_k, _s, _t = schema.kiosks, schema.swipes, schema.transactions
_c, _r = schema.cards, schema.residents
# Statements built once (see ledger.py): the hot path only binds values.
_KIOSK = Prepared(select(_k.c.merchant_id, _k.c.service, _k.c.key_hex, _k.c.seq_base,
                         _k.c.high_seq, _k.c.enabled, _k.c.created_at)
                  .where(_k.c.id == bindparam("kid")).with_for_update())
_KIOSKS_MANY = InQuery(lambda kids: select(
    _k.c.id, _k.c.merchant_id, _k.c.service, _k.c.key_hex, _k.c.seq_base, _k.c.high_seq,
    _k.c.enabled, _k.c.created_at
).where(_k.c.id.in_(kids)).order_by(_k.c.id).with_for_update(), kids=_k.c.id)
_PRIOR = Prepared(select(_s.c.mac, _s.c.result, _s.c.settlement, _s.c.reason, _s.c.txn_id)
                  .where(_s.c.kiosk_id == bindparam("kid"), _s.c.seq == bindparam("seq")))
_CARD = Prepared(select(_c.c.status, _r.c.id, _r.c.birth_date, _r.c.flags)
                 .join(_r, _r.c.id == _c.c.resident_id).where(_c.c.uid == bindparam("uid")))
# Two INs rather than a row-value IN: SQLite plans the latter as a full scan; this one is
# index lookups on the primary key (the few extra cross-product rows are dropped in Python).
_PRIOR_MANY = InQuery(lambda kiosks, seqs: select(
    _s.c.kiosk_id, _s.c.seq, _s.c.mac, _s.c.result, _s.c.settlement, _s.c.reason, _s.c.txn_id
).where(_s.c.kiosk_id.in_(kiosks), _s.c.seq.in_(seqs)), kiosks=_s.c.kiosk_id, seqs=_s.c.seq)
_CARDS_MANY = InQuery(lambda uids: select(_c.c.uid, _c.c.status, _r.c.id, _r.c.birth_date,
                                          _r.c.flags)
                      .join(_r, _r.c.id == _c.c.resident_id).where(_c.c.uid.in_(uids)),
                      uids=_c.c.uid)
# Uses of a service per local day of a month: booked swipes and flagged ones, not reversed.
# The month as a range of days, so the count is a range scan of ix_txn_caps.
_LIVE = (or_(_t.c.kind == "swipe", _t.c.kind == "flagged"), _t.c.reversed_by.is_(None),
         _t.c.local_day >= bindparam("first_day"), _t.c.local_day <= bindparam("last_day"))


def _month_days(month):
    """'2026-11' -> the binds of _LIVE: every 'YYYY-MM-DD' of that month lies between."""
    return {"first_day": month + "-01", "last_day": month + "-31"}
_COUNTS_ONE = Prepared(select(_t.c.local_day, func.count()).where(
    _t.c.resident_id == bindparam("rid"), _t.c.service == bindparam("service"), *_LIVE
).group_by(_t.c.local_day))
_COUNTS_MANY = InQuery(lambda rids: select(
    _t.c.resident_id, _t.c.service, _t.c.local_day, func.count()
).where(_t.c.resident_id.in_(rids), *_LIVE).group_by(
    _t.c.resident_id, _t.c.service, _t.c.local_day), rids=_t.c.resident_id)
_INS_SWIPE = Prepared(insert(_s))
_INS_REFUSAL = Prepared(insert(schema.refusals))
_RULES_VERSION = Prepared(select(func.max(schema.rules.c.version)))
_rules_seen = {}  # engine -> the Rules pricing.current returned last


def _rules(conn):
    """pricing.current(conn), with its per-batch version check as one prebuilt statement
    (building and cache-keying that select each batch was ~10% of a small batch's time);
    the rules body is read only when a new version was loaded."""
    rules = _rules_seen.get(conn.engine)
    if rules is not None and _RULES_VERSION.scalar(conn) == rules.version:
        return rules
    rules = pricing.current(conn)
    if rules is not None:
        _rules_seen[conn.engine] = rules
    return rules


class Batch:
    """Per-transaction state for group commit: the rules in force, kiosks already locked,
    account balances (ledger.Pending), and decided swipes not yet written."""

    def __init__(self, rules):
        self.rules = rules
        self.kiosks = {}
        self.pending = ledger.Pending(defer=True)
        self.swipes = {}  # (kiosk, seq) -> row for _INS_SWIPE (or the Outcome, unfinished)
        self.unfinished = []
        self.prior = None  # (kiosk, seq) -> prior row, for the prefetched keys
        self.cards = {}    # uid -> card row or None, prefetched
        self.counts = {}   # (resident, service, month) -> {local day: uses}

    def prefetch(self, conn, payloads, now):
        """Read what the batch will need in three queries instead of three per swipe:
        stored verdicts, cards, and this month's uses. Best effort: anything not found
        here is looked up one by one."""
        keys, uids = set(), set()
        for payload in payloads:
            try:
                m = json.loads(payload)
                keys.add((str(m["kiosk"]), int(m["seq"])))
                uids.add(str(m["uid"]))
            except Exception:
                continue
        if not keys:
            return
        merchants = set()
        for row in _KIOSKS_MANY.rows(conn, kids=sorted({k for k, _ in keys})):
            self.kiosks[row[0]] = row[1:]
            merchants.add(row[1])
        self.prior = {}
        for row in _PRIOR_MANY.rows(conn, kiosks=sorted({k for k, _ in keys}),
                                    seqs=sorted({q for _, q in keys})):
            if (row[0], row[1]) in keys:
                self.prior[(row[0], row[1])] = row[2:]
        for k in keys:
            self.prior.setdefault(k, None)
        self.cards = {u: None for u in uids}
        for row in _CARDS_MANY.rows(conn, uids=sorted(uids)) if uids else ():
            self.cards[row[0]] = row[1:]
        residents = sorted({c[1] for c in self.cards.values() if c is not None})
        codes = [ledger.wallet(r) for r in residents] + \
            [ledger.fund(f) for f in (self.rules.funds if self.rules else ())] + \
            [ledger.merchant(m) for m in merchants]
        self.pending.lock(conn, [ledger.account_id(conn, c) for c in codes])
        capped = self.rules is not None and any(
            sv.get("per_day") is not None or sv.get("per_month") is not None
            for sv in self.rules.services.values())
        if residents and capped:
            month = localtime.day_month(now, self.rules.tz if self.rules else None)[1]
            services = self.rules.services if self.rules else {}
            for rid in residents:
                for service in services:
                    self.counts[(rid, service, month)] = {}
            for rid, service, day, n in _COUNTS_MANY.rows(conn, rids=residents,
                                                          **_month_days(month)):
                self.counts.setdefault((rid, service, month), {})[day] = n

    def uses(self, conn, resident_id, service, day, month):
        """(uses this month, uses today), counting what this batch booked."""
        key = (resident_id, service, month)
        days = self.counts.get(key)
        if days is None:
            days = self.counts[key] = {}
            for d, n in _COUNTS_ONE.rows(conn, dict(_month_days(month), rid=resident_id,
                                                    service=service)):
                days[d] = n
        return sum(days.values()), days.get(day, 0)

    def used(self, conn, resident_id, service, day, month):
        if self.rules is None or self.rules.caps(service) == (None, None):
            return  # nothing to count against
        self.uses(conn, resident_id, service, day, month)  # loaded before counting on
        days = self.counts[(resident_id, service, month)]
        days[day] = days.get(day, 0) + 1

    def flush(self, conn):
        """Write the batch: transactions (ids back), then the verdicts that carry those
        ids, then entries, balances and the idempotency rows."""
        self.pending.flush(conn)
        for out in self.unfinished:
            out.finish()
            out.finish = None  # the closure refers back to out: no cycle left for the GC
        self.unfinished = []
        if self.swipes:
            _INS_SWIPE.many(conn, list(self.swipes.values()))
        self.swipes = {}


def settle(conn, topic, payload, now=None, rules=None, batch=None):
    """Settle one message inside the caller's transaction. Returns an Outcome. rules: the
    pricing.Rules in force (looked up if not given). batch: a Batch for group commit (the
    caller flushes it before the commit); without it everything is written now."""
    now = time.time() if now is None else now
    own = batch is None
    if own:
        batch = Batch(rules if rules is not None else pricing.current(conn))
    out = _settle(conn, topic, payload, now, batch)
    if own:
        batch.flush(conn)
    return out


def _settle(conn, topic, payload, now, batch):
    parsed = topics.parse(topic)
    if parsed is None or parsed[0] != "swipes":
        return _refuse(conn, now, topic, reasons.TOPIC_MISMATCH, field="topic")
    topic_kiosk = parsed[1]
    try:
        msg = messages.decode("swipe", payload)
    except messages.ProtocolError as e:
        return _refuse(conn, now, topic, e.code, kiosk=topic_kiosk, field=e.field)
    kiosk_id, seq = msg["kiosk"], msg["seq"]
    if kiosk_id != topic_kiosk:
        return _refuse(conn, now, topic, reasons.TOPIC_MISMATCH, topic_kiosk, seq, "kiosk")
    kiosk = batch.kiosks.get(kiosk_id)
    if kiosk is None:
        kiosk = batch.kiosks[kiosk_id] = _KIOSK.first(conn, {"kid": kiosk_id})
    if kiosk is None:
        return _refuse(conn, now, topic, reasons.UNKNOWN_KIOSK, kiosk_id, seq, "kiosk")
    merchant_id, kiosk_service, key_hex, seq_base, _, enabled, created_at = kiosk
    key = bytes.fromhex(key_hex)
    if not signing.verify("swipe", msg, key):
        return _refuse(conn, now, topic, reasons.BAD_MAC, kiosk_id, seq, "mac")

    if seq < seq_base:  # signed with the current key, but below its generation's base
        return _declined(kiosk_id, seq, reasons.STALE, key, msg["offline"], store=None)
    row = batch.swipes.get((kiosk_id, seq))
    if isinstance(row, Outcome):  # decided earlier in this batch, id not known yet
        if not signing.equal(row.log["mac"], msg["mac"]):
            return _declined(kiosk_id, seq, reasons.REPLAY, key, msg["offline"], store=None)
        dup = Outcome(kiosk_id, seq, None, None, merchant_id, {})

        def copy(dup=dup, orig=row):
            dup.result, dup.settlement = orig.result, orig.settlement
            dup.log = {"event": "duplicate", "kiosk": kiosk_id, "seq": seq,
                       "reason": orig.log["reason"], "txn": orig.log["txn"]}
        dup.finish = copy
        batch.unfinished.append(dup)
        return dup
    if row is not None:
        prior = (row["mac"], row["result"], row["settlement"], row["reason"], row["txn_id"])
    elif batch.prior is not None and (kiosk_id, seq) in batch.prior:
        prior = batch.prior[(kiosk_id, seq)]
    else:
        prior = _PRIOR.first(conn, {"kid": kiosk_id, "seq": seq})
    offline = msg["offline"]
    if prior is not None:
        if signing.equal(prior[0], msg["mac"]):
            return Outcome(kiosk_id, seq, prior[1], prior[2], merchant_id,
                           {"event": "duplicate", "kiosk": kiosk_id, "seq": seq,
                            "reason": prior[3], "txn": ledger.txn_name(prior[4])})
        return _declined(kiosk_id, seq, reasons.REPLAY, key, offline, store=None)

    rules = batch.rules
    tz = rules.tz if rules else None
    when, skewed = int(now), False
    if offline:
        when = utctime.parse(msg["ts"])
        # A board that lost power while offline restarts with its clock at 2000-01-01 (no
        # RTC battery, no NTP yet): such a time would book the swipe on a wrong day and
        # count it against the wrong day's caps. Book it now, for an operator to review.
        if when < created_at - CLOCK_SLACK_S or when > now + CLOCK_SLACK_S:
            when, skewed = int(now), True
    day, month = localtime.day_month(when, tz)
    service = msg["service"]
    reason = reasons.OK
    resident_id = None
    price = 0
    split = None
    wallet_code = None
    if msg["uid"] in batch.cards:
        card = batch.cards[msg["uid"]]
    else:
        card = _CARD.first(conn, {"uid": msg["uid"]})
    if rules is not None and service in rules.services:
        price = rules.price(merchant_id, service) or 0
    if not enabled:
        reason = reasons.KIOSK_DISABLED
    elif card is None:
        reason = reasons.UNKNOWN_CARD
    else:
        status, resident_id, birth_date, flags = card
        if status != "active":
            reason = reasons.CARD_BLOCKED
        elif rules is None or service != kiosk_service or rules.price(merchant_id, service) is None:
            reason = reasons.SERVICE_NOT_OFFERED
        else:
            group = rules.group_of(birth_date, flags.split(",") if flags else [], day)
            split = rules.split(service, group, price)
            if split is None:
                reason = reasons.NOT_ELIGIBLE
            elif skewed:  # caps count days, and the day is not known: an operator decides
                reason = reasons.CLOCK_SKEW
            else:
                per_day, per_month = rules.caps(service)
                n_month, n_day = (0, 0) if per_day is None and per_month is None else \
                    batch.uses(conn, resident_id, service, day, month)
                wallet_code = ledger.wallet(resident_id)
                if per_day is not None and n_day >= per_day:
                    reason = reasons.DAILY_CAP
                elif per_month is not None and n_month >= per_month:
                    reason = reasons.MONTHLY_CAP
                else:
                    # Lock every account this booking touches, in id order, before deciding
                    # (one lock round; post() re-reads them under the same lock).
                    codes = [wallet_code, ledger.merchant(merchant_id)] + \
                        [ledger.fund(n) for n, _ in split[1]]
                    held = batch.pending.lock(conn, [ledger.account_id(conn, c) for c in codes])
                    bal = held[ledger.account_id(conn, wallet_code)][0]
                    if bal < split[0]:
                        reason = reasons.INSUFFICIENT_FUNDS

    common = dict(kiosk_id=kiosk_id, seq=seq, card_uid=msg["uid"], resident_id=resident_id,
                  merchant_id=merchant_id, service=service, offline=offline)
    txn_id = None
    resident_pays = subsidy_pays = 0
    funds = []
    flagged = False
    balance = None
    if reason == reasons.OK:
        resident_pays, funds = split
        subsidy_pays = sum(f for _, f in funds)
        legs = [(wallet_code, -resident_pays)] + [(ledger.fund(n), -f) for n, f in funds]
        legs.append((ledger.merchant(merchant_id), price))
        txn_id, after = ledger.post(conn, legs, "swipe", when, reason, tz=tz,
                                    pending=batch.pending, **common)
        balance = after.get(wallet_code, bal)
        batch.used(conn, resident_id, service, day, month)
    elif offline and reason != reasons.KIOSK_DISABLED:
        # Served while the kiosk was offline: the service happened, so it is booked, at
        # full price against suspense, and flagged for an operator (never dropped).
        flagged = True
        legs = [(ledger.SUSPENSE, -price), (ledger.merchant(merchant_id), price)]
        memo = "offline swipe the bridge would have declined"
        if skewed:
            memo = "offline swipe stamped %s by the kiosk's clock; booked at the bridge's " \
                "time" % msg["ts"]
        if price:
            txn_id, _ = ledger.post(conn, legs, "flagged", when, reason, tz=tz, flagged=True,
                                    pending=batch.pending, memo=memo, **common)
            if resident_id is not None:
                batch.used(conn, resident_id, service, day, month)
    if balance is None and resident_id is not None:
        wid = ledger.account_id(conn, ledger.wallet(resident_id))
        balance = batch.pending.lock(conn, [wid])[wid][0]
    verdict = "approved" if reason == reasons.OK else "declined"
    out = Outcome(kiosk_id, seq, None, None, merchant_id, {
        "event": "verdict", "kiosk": kiosk_id, "seq": seq, "verdict": verdict,
        "reason": reason, "txn": None, "merchant": merchant_id, "service": service,
        "resident_pays": resident_pays, "subsidy_pays": subsidy_pays, "offline": offline,
        "flagged": flagged, "mac": msg["mac"]})

    def finish():
        # Runs once the transaction id is known (after the batch's bulk insert).
        tid = txn_id.id if isinstance(txn_id, ledger.Deferred) else txn_id
        txn = ledger.txn_name(tid)
        text = _text(reason, resident_pays, balance, offline, flagged)
        out.result = messages.encode("result", messages.result(
            kiosk_id, seq, verdict, reason, resident_pays, subsidy_pays, balance, text, key,
            offline=offline, flagged=flagged, txn=txn), check=False)  # built from our own values
        if tid is not None:
            out.settlement = json.dumps({
                "v": messages.VERSION, "txn": txn, "kind": "flagged" if flagged else "swipe",
                "kiosk": kiosk_id, "seq": seq, "merchant": merchant_id, "service": service,
                "uid": msg["uid"], "resident": resident_id, "ts": utctime.iso(when),
                "local_day": day, "booked_at": utctime.iso(now), "offline": offline,
                "flagged": flagged, "reason": reason, "price": price,
                "resident_pays": resident_pays,
                "funds": [{"fund": n, "fen": f} for n, f in funds]}).encode()
        out.log["txn"] = txn
        del out.log["mac"]  # a MAC is never logged
        batch.swipes[(kiosk_id, seq)] = {
            "kiosk_id": kiosk_id, "seq": seq, "mac": msg["mac"], "verdict": verdict,
            "reason": reason, "txn_id": tid, "result": out.result,
            "settlement": out.settlement, "decided_at": int(now)}

    out.finish = finish
    batch.swipes[(kiosk_id, seq)] = out
    batch.unfinished.append(out)
    return out


def _declined(kiosk_id, seq, reason, key, offline, store):
    result = messages.encode("result", messages.result(
        kiosk_id, seq, "declined", reason, 0, 0, None, reasons.display(reason), key,
        offline=offline), check=False)
    return Outcome(kiosk_id, seq, result, None, None,
                   {"event": "verdict", "kiosk": kiosk_id, "seq": seq, "verdict": "declined",
                    "reason": reason})


def _text(reason, pays, balance, offline, flagged):
    """Short screen text (<= 64 chars): amounts in yuan for people, fen on the wire."""
    if flagged:
        return "Accepted offline; for review"
    if reason == reasons.OK:
        text = "Paid %s" % money.yuan(pays)
        if balance is not None:
            text += ", left %s" % money.yuan(balance)
        return text
    return reasons.display(reason)


def settle_batch(engine, items, now=None):
    """Settle [(topic, payload), ...] in ONE database transaction (group commit). engine:
    an Engine, or a Connection the caller keeps open across batches (no pool round trip
    per batch; it must not be inside a transaction). Returns
    the Outcomes, in order, after the commit. If one message hits an unexpected error the
    batch is rolled back and redone with a savepoint per message, so that one message is
    reported and the rest still settle. A conflict with another bridge (the same (kiosk,
    seq) inserted concurrently) rolls back and retries; the retry finds stored verdicts."""
    careful = False
    for attempt in range(6):
        outcomes = []
        try:
            with engine.begin() as tx:
                conn = tx if hasattr(tx, "execute") else engine
                batch = Batch(_rules(conn))
                if not careful and len(items) > 1:  # one swipe: its own lookups are cheaper
                    batch.prefetch(conn, [p for _, p in items], now or time.time())
                for topic, payload in items:
                    if not careful:
                        outcomes.append(settle(conn, topic, payload, now, batch=batch))
                        continue
                    try:
                        # careful mode: each message settles and writes on its own
                        with conn.begin_nested():
                            outcomes.append(settle(conn, topic, payload, now, batch.rules))
                    except Exception as e:
                        if _retryable(e):
                            raise
                        outcomes.append(Outcome(log={"event": "error", "topic": topic[:80],
                                                     "error": str(e).splitlines()[0][:200]}))
                batch.flush(conn)
            return outcomes
        except Exception as e:
            if attempt == 5:
                raise
            if not _retryable(e):
                if careful:
                    raise
                careful = True
                continue
            time.sleep(0.01 * (attempt + 1))


def _retryable(e):
    name = type(e).__name__
    text = str(e).lower()
    return name in ("IntegrityError", "OperationalError") or "deadlock" in text \
        or "serializ" in text or "locked" in text
