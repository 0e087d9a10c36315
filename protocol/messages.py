# Encode, decode and validate the four v1 messages (DESIGN.md 2). Decoding never trusts
# input: every failure raises ProtocolError with a reason code from protocol.reasons and
# the field at fault, so a bad message is refused with a clear, distinct reason.
import json

from protocol import reasons, signing, topics, uid, utctime

VERSION = 1
MAX_SEQ = 0x7FFFFFFF  # seq lives in flash as a 31-bit counter (a small int on every port)
MAX_FEN = 100000000   # one million yuan: larger is a bug or an attack, not a meal
MAX_BYTES = {"swipe": 512, "result": 512, "state": 512, "config": 32768, "settlement": 2048}
AUTH_MODES = ("uid", "mifare")
VERDICTS = ("approved", "declined")
SETTLEMENT_KINDS = ("sale", "reversal", "offline_exception")
STATUSES = ("online", "offline")


class ProtocolError(ValueError):
    """A message that must be refused. code: a protocol.reasons code; field: where."""

    def __init__(self, code, field=None, detail=""):
        self.code = code
        self.field = field
        self.detail = detail
        where = (" (field %s)" % field) if field else ""
        super().__init__("%s%s: %s" % (code, where, detail or reasons.describe(code)))


# Value checks: each takes the value and returns None if fine, or a detail string.
def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _int_range(lo, hi):
    def check(v):
        if not _is_int(v):
            return "wrong_type"
        if not lo <= v <= hi:
            return "must be %d..%d" % (lo, hi)
        return None
    return check


def _text(maxlen):
    def check(v):
        if not isinstance(v, str):
            return "wrong_type"
        if len(v) > maxlen:
            return "longer than %d" % maxlen
        return None
    return check


def _one_of(choices):
    def check(v):
        if not isinstance(v, str):
            return "wrong_type"
        if v not in choices:
            return "must be one of " + ", ".join(choices)
        return None
    return check


def _bool(v):
    return None if isinstance(v, bool) else "wrong_type"


def _ident(v):
    if not isinstance(v, str):
        return "wrong_type"
    return None if topics.valid_id(v) else "1-32 of A-Z a-z 0-9 - _"


def _time(v):
    if not isinstance(v, str):
        return "wrong_type"
    try:
        utctime.parse(v)
    except ValueError:
        return "UTC time as YYYY-MM-DDTHH:MM:SSZ"
    return None


def _uid(v):
    if not isinstance(v, str):
        return "wrong_type"
    return None if uid.is_uid_text(v) else "8, 14 or 20 upper-case hex digits"


def _mac(v):
    if not isinstance(v, str):
        return "wrong_type"
    if len(v) != 64 or v.strip("0123456789abcdef"):
        return "64 lower-case hex digits"
    return None


def _reason(v):
    if not isinstance(v, str):
        return "wrong_type"
    return None if v in reasons.TABLE else "unknown reason code"


def _nullable(check):
    def nullable(v):
        return None if v is None else check(v)
    return nullable


def _uid_list(v):
    if not isinstance(v, list):
        return "wrong_type"
    for item in v:
        if _uid(item):
            return "list of card UIDs"
    return None


def _fund_shares(v):
    if not isinstance(v, list):
        return "wrong_type"
    for item in v:
        if not isinstance(item, dict) or _ident(item.get("fund")) or _int_range(-MAX_FEN, MAX_FEN)(item.get("fen")):
            return "list of {fund: id, fen: integer}"
    return None


def _offline_limits(v):
    if not isinstance(v, dict):
        return "wrong_type"
    for name in ("max_per_card_per_day", "max_taps"):
        if name in v and _int_range(0, 100000)(v[name]):
            return name + " must be an integer 0..100000"
    return None


# name -> (check, required). "v" is checked before the rest for every message.
SCHEMAS = {
    "swipe": {
        "kiosk": (_ident, True),
        "seq": (_int_range(1, MAX_SEQ), True),
        "ts": (_time, True),
        "uid": (_uid, True),
        "auth": (_one_of(AUTH_MODES), True),
        "service": (_ident, True),
        "offline": (_bool, True),
        "mac": (_mac, True),
    },
    "result": {
        "kiosk": (_ident, True),
        "seq": (_int_range(1, MAX_SEQ), True),
        "verdict": (_one_of(VERDICTS), True),
        "reason": (_reason, True),
        "resident_pays": (_int_range(0, MAX_FEN), True),
        "subsidy_pays": (_int_range(0, MAX_FEN), True),
        "balance": (_nullable(_int_range(-MAX_FEN, MAX_FEN)), True),
        "text": (_text(64), True),
        "offline": (_bool, True),
        "flagged": (_bool, True),
        "txn": (_nullable(_text(40)), True),
        "mac": (_mac, True),
    },
    "state": {
        "kiosk": (_ident, True),
        "status": (_one_of(STATUSES), True),
        "fw": (_text(32), False),
        "journal": (_int_range(0, MAX_SEQ), False),
        "uptime": (_int_range(0, MAX_SEQ), False),
        "rssi": (_nullable(_int_range(-200, 0)), False),
        "mem_free": (_nullable(_int_range(0, MAX_SEQ)), False),
        "ts": (_nullable(_time), False),
    },
    "config": {
        "kiosk": (_ident, True),
        "merchant": (_ident, True),
        "service": (_ident, True),
        "price": (_int_range(0, MAX_FEN), True),
        "lists_version": (_int_range(0, MAX_SEQ), True),
        "deny": (_uid_list, True),
        "allow": (_uid_list, True),
        "clock": (_time, True),
        "offline": (_offline_limits, True),
        "suppress_s": (_int_range(0, 3600), False),
        "mifare": (_bool, False),
    },
    # Bridge -> backends: one booked transaction (host side only; kiosks never see it).
    "settlement": {
        "txn": (_text(40), True),
        "kind": (_one_of(SETTLEMENT_KINDS), True),
        "kiosk": (_ident, True),
        "seq": (_int_range(1, MAX_SEQ), True),
        "merchant": (_ident, True),
        "service": (_ident, True),
        "uid": (_uid, True),
        "resident": (_text(40), True),
        "group": (_text(40), True),
        "ts": (_time, True),
        "booked_at": (_time, True),
        "price": (_int_range(0, MAX_FEN), True),
        "resident_pays": (_int_range(-MAX_FEN, MAX_FEN), True),
        "subsidy_pays": (_int_range(-MAX_FEN, MAX_FEN), True),
        "funds": (_fund_shares, True),
        "offline": (_bool, True),
        "flagged": (_bool, True),
        "reason": (_reason, True),
        "reverses": (_nullable(_text(40)), False),
    },
}


def validate(kind, msg):
    """Check a decoded message dict against its schema; raise ProtocolError or return msg."""
    if not isinstance(msg, dict):
        raise ProtocolError(reasons.NOT_OBJECT, None, "%s must be a JSON object" % kind)
    if "v" not in msg:
        raise ProtocolError(reasons.MISSING_FIELD, "v")
    if msg["v"] != VERSION or not _is_int(msg["v"]):
        raise ProtocolError(reasons.UNKNOWN_VERSION, "v", "this side speaks v%d" % VERSION)
    schema = SCHEMAS[kind]
    for name in schema:
        check, required = schema[name]
        if name not in msg:
            if required:
                raise ProtocolError(reasons.MISSING_FIELD, name)
            continue
        problem = check(msg[name])
        if problem == "wrong_type":
            raise ProtocolError(reasons.WRONG_TYPE, name)
        if problem:
            raise ProtocolError(reasons.BAD_VALUE, name, problem)
    for name in msg:
        if name != "v" and name not in schema:
            raise ProtocolError(reasons.BAD_VALUE, name, "unknown field")
    return msg


def decode(kind, payload):
    """bytes or str from MQTT -> validated dict. Raises ProtocolError (size first, so a huge
    payload is never parsed)."""
    if kind not in SCHEMAS:
        raise ValueError("unknown message kind: %r" % (kind,))
    if len(payload) > MAX_BYTES[kind]:
        raise ProtocolError(reasons.TOO_LARGE, None, "%d bytes, limit %d" % (len(payload), MAX_BYTES[kind]))
    try:
        if isinstance(payload, (bytes, bytearray, memoryview)):
            payload = bytes(payload).decode()
        msg = json.loads(payload)
    except (ValueError, UnicodeError):
        raise ProtocolError(reasons.MALFORMED_JSON)
    return validate(kind, msg)


def encode(kind, msg, check=True):
    """Validated dict -> compact JSON bytes. Raises ProtocolError if msg breaks its schema.
    check=False skips the schema walk, for a message just made by a builder below from
    values the caller computed (the bridge's results: receivers validate on decode)."""
    msg["v"] = VERSION
    if check:
        validate(kind, msg)
    data = json.dumps(msg).encode()
    if len(data) > MAX_BYTES[kind]:
        raise ProtocolError(reasons.TOO_LARGE, None, "%d bytes, limit %d" % (len(data), MAX_BYTES[kind]))
    return data


# Builders for the two signed messages, so both sides fill them the same way.
def swipe(kiosk, seq, ts, card_uid, auth, service, offline, key):
    msg = {"v": VERSION, "kiosk": kiosk, "seq": seq, "ts": ts, "uid": card_uid,
           "auth": auth, "service": service, "offline": bool(offline)}
    return signing.sign("swipe", msg, key)


def result(kiosk, seq, verdict, reason, resident_pays, subsidy_pays, balance, text,
           key, offline=False, flagged=False, txn=None):
    msg = {"v": VERSION, "kiosk": kiosk, "seq": seq, "verdict": verdict, "reason": reason,
           "resident_pays": resident_pays, "subsidy_pays": subsidy_pays, "balance": balance,
           "text": text, "offline": offline, "flagged": flagged, "txn": txn}
    return signing.sign("result", msg, key)
