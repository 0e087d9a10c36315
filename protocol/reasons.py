# Reason codes, defined once (DESIGN.md 2, 6). Every verdict carries one; every refused
# message is logged with one. Codes are stable wire strings: add new ones, never rename.
# Each entry: code -> (short display text for an elderly user, description for operators).

OK = "ok"

# Declines decided by the bridge about the card, the resident or the money.
UNKNOWN_CARD = "unknown_card"
CARD_BLOCKED = "card_blocked"
CARD_AUTH_FAILED = "card_auth_failed"
INSUFFICIENT_FUNDS = "insufficient_funds"
DAILY_CAP = "daily_cap"
MONTHLY_CAP = "monthly_cap"
NOT_ELIGIBLE = "not_eligible"
SERVICE_NOT_OFFERED = "service_not_offered"

# Refusals about the message or the device (never booked).
UNKNOWN_KIOSK = "unknown_kiosk"
KIOSK_DISABLED = "kiosk_disabled"
BAD_MAC = "bad_mac"
REPLAY = "replay"
STALE = "stale"
TOPIC_MISMATCH = "topic_mismatch"
CLOCK_SKEW = "clock_skew"

# Message format errors (protocol.messages.ProtocolError.code).
MALFORMED_JSON = "malformed_json"
NOT_OBJECT = "not_object"
MISSING_FIELD = "missing_field"
WRONG_TYPE = "wrong_type"
BAD_VALUE = "bad_value"
TOO_LARGE = "too_large"
UNKNOWN_VERSION = "unknown_version"

# Outcomes decided on the kiosk itself.
OFFLINE_ACCEPTED = "offline_accepted"
OFFLINE_LIMIT = "offline_limit"
NO_VERDICT = "no_verdict"
READER_FAULT = "reader_fault"
JOURNAL_FULL = "journal_full"

TABLE = {
    OK: ("Paid", "approved and booked"),
    UNKNOWN_CARD: ("Card not known", "the card UID is not enrolled"),
    CARD_BLOCKED: ("Card blocked", "the card was reported lost or blocked by an operator"),
    CARD_AUTH_FAILED: ("Card not valid", "the card failed MIFARE authentication or its credential MAC (possible clone)"),
    INSUFFICIENT_FUNDS: ("Not enough money", "the resident's wallet cannot pay the resident share"),
    DAILY_CAP: ("Used up today", "the resident reached today's limit for this service"),
    MONTHLY_CAP: ("Used up this month", "the resident reached this month's limit for this service"),
    NOT_ELIGIBLE: ("Not eligible", "the resident's group has no price for this service"),
    SERVICE_NOT_OFFERED: ("Service not here", "the kiosk's merchant does not offer this service"),
    UNKNOWN_KIOSK: ("Reader not registered", "the kiosk id is not in the registry"),
    KIOSK_DISABLED: ("Reader disabled", "the kiosk was revoked by an operator"),
    BAD_MAC: ("Reader error", "the message MAC does not verify with the kiosk's key (forged or wrong key)"),
    REPLAY: ("Reader error", "this (kiosk, seq) was already used by a different message"),
    STALE: ("Reader error", "seq is older than the kiosk's accepted window (old key generation or replay)"),
    TOPIC_MISMATCH: ("Reader error", "the kiosk in the message differs from the kiosk in the topic"),
    CLOCK_SKEW: ("Reader error", "an offline swipe's time is impossible (before its kiosk existed, "
                                 "or ahead of the bridge): booked at the bridge's time, flagged"),
    MALFORMED_JSON: ("Reader error", "payload is not valid UTF-8 JSON"),
    NOT_OBJECT: ("Reader error", "payload is JSON but not an object"),
    MISSING_FIELD: ("Reader error", "a required field is missing"),
    WRONG_TYPE: ("Reader error", "a field has the wrong JSON type"),
    BAD_VALUE: ("Reader error", "a field has the right type but a value out of range or form"),
    TOO_LARGE: ("Reader error", "payload exceeds the size limit for its message type"),
    UNKNOWN_VERSION: ("Reader error", "protocol version is not 1"),
    OFFLINE_ACCEPTED: ("Accepted offline", "kiosk offline; accepted from cached lists, to be settled on upload"),
    OFFLINE_LIMIT: ("Limit reached", "kiosk offline and the card reached the offline limit"),
    NO_VERDICT: ("Please wait / try again", "no verdict from the bridge in time; the swipe stays journalled"),
    READER_FAULT: ("Reader fault", "the card reader did not answer (wiring or hardware)"),
    JOURNAL_FULL: ("Reader full, call staff", "kiosk journal is full of unsettled swipes; taps refused until it drains"),
}

# Verdict reasons the bridge can put in a result (a subset of TABLE).
RESULT_REASONS = (
    OK, UNKNOWN_CARD, CARD_BLOCKED, CARD_AUTH_FAILED, INSUFFICIENT_FUNDS, DAILY_CAP,
    MONTHLY_CAP, NOT_ELIGIBLE, SERVICE_NOT_OFFERED, KIOSK_DISABLED, REPLAY, STALE, CLOCK_SKEW,
)


def display(code):
    """Short text for the kiosk screen; unknown codes still say something useful."""
    entry = TABLE.get(code)
    return entry[0] if entry else "Declined"


def describe(code):
    entry = TABLE.get(code)
    return entry[1] if entry else "unknown reason code"
