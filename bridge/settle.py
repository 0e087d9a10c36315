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
import json
import time

from sqlalchemy import and_, func, insert, select, update

from bridge import ledger, localtime, pricing, schema
from bridge.db import BridgeError
from protocol import messages, reasons, signing, topics, utctime


class Outcome:
    """What to do after the commit: publish result (and settlement) and log."""
    __slots__ = ("kiosk", "seq", "result", "settlement", "merchant", "log")

    def __init__(self, kiosk=None, seq=None, result=None, settlement=None, merchant=None,
                 log=None):
        self.kiosk = kiosk
        self.seq = seq
        self.result = result          # bytes for topics.results(kiosk), or None
        self.settlement = settlement  # bytes for topics.settlements(merchant), or None
        self.merchant = merchant
        self.log = log or {}


def _refuse(conn, now, topic, code, kiosk=None, seq=None, field=None):
    conn.execute(insert(schema.refusals).values(
        at=int(now), topic=topic[:200], kiosk_id=kiosk, seq=seq, reason=code, field=field))
    return Outcome(kiosk, seq, log={"event": "refused", "kiosk": kiosk, "seq": seq,
                                    "reason": code, "field": field})


def _counts(conn, resident_id, service, day, month):
    t = schema.transactions
    live = and_(t.c.resident_id == resident_id, t.c.service == service,
                t.c.kind.in_(("swipe", "flagged")), t.c.reversed_by.is_(None))
    n_day = conn.execute(select(func.count()).where(live, t.c.local_day == day)).scalar()
    n_month = conn.execute(select(func.count()).where(live, t.c.local_month == month)).scalar()
    return n_day, n_month


def settle(conn, topic, payload, now=None):
    """Settle one message inside the caller's transaction. Returns an Outcome."""
    now = time.time() if now is None else now
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
    k = schema.kiosks
    kiosk = conn.execute(select(k.c.merchant_id, k.c.service, k.c.key_hex, k.c.seq_base,
                                k.c.high_seq, k.c.enabled)
                         .where(k.c.id == kiosk_id).with_for_update()).first()
    if kiosk is None:
        return _refuse(conn, now, topic, reasons.UNKNOWN_KIOSK, kiosk_id, seq, "kiosk")
    merchant_id, kiosk_service, key_hex, seq_base, high_seq, enabled = kiosk
    key = bytes.fromhex(key_hex)
    if not signing.verify("swipe", msg, key):
        return _refuse(conn, now, topic, reasons.BAD_MAC, kiosk_id, seq, "mac")

    if seq < seq_base:  # signed with the current key, but below its generation's base
        return _declined(kiosk_id, seq, reasons.STALE, key, msg["offline"], store=None)
    s = schema.swipes
    prior = conn.execute(select(s.c.mac, s.c.result, s.c.settlement, s.c.reason, s.c.txn_id)
                         .where(s.c.kiosk_id == kiosk_id, s.c.seq == seq)).first()
    offline = msg["offline"]
    if prior is not None:
        if signing.equal(prior[0], msg["mac"]):
            return Outcome(kiosk_id, seq, prior[1], prior[2], merchant_id,
                           {"event": "duplicate", "kiosk": kiosk_id, "seq": seq,
                            "reason": prior[3], "txn": ledger.txn_name(prior[4])})
        return _declined(kiosk_id, seq, reasons.REPLAY, key, offline, store=None)

    rules = pricing.current(conn)
    tz = rules.tz if rules else None
    when = utctime.parse(msg["ts"]) if offline else int(now)
    day, month = localtime.day_month(when, tz)
    service = msg["service"]
    reason = reasons.OK
    resident_id = None
    price = 0
    split = None
    wallet_code = None
    card = conn.execute(
        select(schema.cards.c.status, schema.residents.c.id, schema.residents.c.birth_date,
               schema.residents.c.flags)
        .join(schema.residents, schema.residents.c.id == schema.cards.c.resident_id)
        .where(schema.cards.c.uid == msg["uid"])).first()
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
            else:
                per_day, per_month = rules.caps(service)
                n_day, n_month = _counts(conn, resident_id, service, day, month)
                wallet_code = ledger.wallet(resident_id)
                if per_day is not None and n_day >= per_day:
                    reason = reasons.DAILY_CAP
                elif per_month is not None and n_month >= per_month:
                    reason = reasons.MONTHLY_CAP
                else:
                    wid = ledger.account_id(conn, wallet_code)
                    bal = ledger.lock(conn, [wid])[wid][0]
                    if bal < split[0]:
                        reason = reasons.INSUFFICIENT_FUNDS

    common = dict(kiosk_id=kiosk_id, seq=seq, card_uid=msg["uid"], resident_id=resident_id,
                  merchant_id=merchant_id, service=service, offline=offline)
    txn_id = None
    resident_pays = subsidy_pays = 0
    funds = []
    flagged = False
    if reason == reasons.OK:
        resident_pays, funds = split
        subsidy_pays = sum(f for _, f in funds)
        legs = [(wallet_code, -resident_pays)] + [(ledger.fund(n), -f) for n, f in funds]
        legs.append((ledger.merchant(merchant_id), price))
        txn_id = ledger.post(conn, legs, "swipe", when, reason, tz=tz, **common)
    elif offline and reason != reasons.KIOSK_DISABLED:
        # Served while the kiosk was offline: the service happened, so it is booked, at
        # full price against suspense, and flagged for an operator (never dropped).
        flagged = True
        legs = [(ledger.SUSPENSE, -price), (ledger.merchant(merchant_id), price)]
        if price:
            txn_id = ledger.post(conn, legs, "flagged", when, reason, tz=tz, flagged=True,
                                 memo="offline swipe the bridge would have declined",
                                 **common)
    balance = ledger.balance(conn, wallet_code or ledger.wallet(resident_id)) \
        if resident_id else None
    txn = ledger.txn_name(txn_id)
    verdict = "approved" if reason == reasons.OK else "declined"
    text = _text(reason, resident_pays, balance, offline, flagged)
    result = messages.encode("result", messages.result(
        kiosk_id, seq, verdict, reason, resident_pays, subsidy_pays, balance, text, key,
        offline=offline, flagged=flagged, txn=txn))
    settlement = None
    if txn_id is not None:
        settlement = json.dumps({
            "v": messages.VERSION, "txn": txn, "kind": "flagged" if flagged else "swipe",
            "kiosk": kiosk_id, "seq": seq, "merchant": merchant_id, "service": service,
            "uid": msg["uid"], "resident": resident_id, "ts": utctime.iso(when),
            "local_day": day, "booked_at": utctime.iso(now), "offline": offline,
            "flagged": flagged, "reason": reason, "price": price,
            "resident_pays": resident_pays,
            "funds": [{"fund": n, "fen": f} for n, f in funds]}).encode()
    conn.execute(insert(s).values(kiosk_id=kiosk_id, seq=seq, mac=msg["mac"], verdict=verdict,
                                  reason=reason, txn_id=txn_id, result=result,
                                  settlement=settlement, decided_at=int(now)))
    if seq > high_seq:
        conn.execute(update(k).where(k.c.id == kiosk_id).values(high_seq=seq))
    return Outcome(kiosk_id, seq, result, settlement, merchant_id, {
        "event": "verdict", "kiosk": kiosk_id, "seq": seq, "verdict": verdict,
        "reason": reason, "txn": txn, "merchant": merchant_id, "service": service,
        "resident_pays": resident_pays, "subsidy_pays": subsidy_pays, "offline": offline,
        "flagged": flagged})


def _declined(kiosk_id, seq, reason, key, offline, store):
    result = messages.encode("result", messages.result(
        kiosk_id, seq, "declined", reason, 0, 0, None, reasons.display(reason), key,
        offline=offline))
    return Outcome(kiosk_id, seq, result, None, None,
                   {"event": "verdict", "kiosk": kiosk_id, "seq": seq, "verdict": "declined",
                    "reason": reason})


def _text(reason, pays, balance, offline, flagged):
    """Short screen text (<= 64 chars): amounts in yuan for people, fen on the wire."""
    if flagged:
        return "Accepted offline; for review"
    if reason == reasons.OK:
        text = "Paid %s" % yuan(pays)
        if balance is not None:
            text += ", left %s" % yuan(balance)
        return text
    return reasons.display(reason)


def yuan(fen):
    sign = "-" if fen < 0 else ""
    fen = abs(fen)
    return "%s%d.%02d" % (sign, fen // 100, fen % 100)


def settle_batch(engine, items, now=None):
    """Settle [(topic, payload), ...] in ONE database transaction (group commit), each in
    its own savepoint so one bad message cannot spoil the rest. Returns the Outcomes, in
    order, after the commit. A conflict with another bridge (same (kiosk, seq) inserted
    concurrently) rolls back and retries the whole batch; the retry finds stored verdicts."""
    for attempt in range(5):
        outcomes = []
        try:
            with engine.begin() as conn:
                for topic, payload in items:
                    try:
                        with conn.begin_nested():
                            outcomes.append(settle(conn, topic, payload, now))
                    except messages.ProtocolError as e:
                        outcomes.append(_refuse(conn, now or time.time(), topic, e.code,
                                                field=e.field))
                    except BridgeError as e:
                        outcomes.append(Outcome(log={"event": "error", "error": str(e)}))
            return outcomes
        except Exception as e:
            if attempt == 4 or not _retryable(e):
                raise
            time.sleep(0.01 * (attempt + 1))


def _retryable(e):
    name = type(e).__name__
    text = str(e).lower()
    return name in ("IntegrityError", "OperationalError") or "deadlock" in text \
        or "serializ" in text or "locked" in text
