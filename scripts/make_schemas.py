"""Write protocol/schemas/*.schema.json from the protocol's own constants.

host-only. Run `.venv/bin/python scripts/make_schemas.py` after changing protocol/; the test
suite runs it with --check so schemas, decoder and reason codes cannot drift apart.
"""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from protocol import messages, reasons  # noqa: E402

ID = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,32}$"}
TIME = {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$",
        "description": "UTC, YYYY-MM-DDTHH:MM:SSZ"}
UID = {"type": "string", "pattern": "^([0-9A-F]{8}|[0-9A-F]{14}|[0-9A-F]{20})$",
       "description": "card UID, upper-case hex of 4, 7 or 10 bytes, leading zeros kept"}
SEQ = {"type": "integer", "minimum": 1, "maximum": messages.MAX_SEQ}
FEN = {"type": "integer", "minimum": 0, "maximum": messages.MAX_FEN, "description": "money in fen (1/100 yuan)"}
SIGNED_FEN = {"type": "integer", "minimum": -messages.MAX_FEN, "maximum": messages.MAX_FEN}
MAC = {"type": "string", "pattern": "^[0-9a-f]{64}$", "description": "HMAC-SHA256, see docs/protocol.md Signing"}
REASON = {"type": "string", "enum": sorted(reasons.TABLE)}
LIMIT = {"type": "integer", "minimum": 0, "maximum": 100000}


def schema(name, title, props, required):
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "https://aixin.example/schemas/v1/%s.schema.json" % name,
            "title": title, "type": "object", "additionalProperties": False,
            "maxBytes": messages.MAX_BYTES[name],
            "required": ["v"] + required, "properties": dict({"v": {"const": messages.VERSION}}, **props)}


SCHEMAS = {
    "swipe": schema("swipe", "Swipe: one tap at a kiosk (kiosk -> bridge, aixin/v1/kiosks/{kiosk}/swipes, QoS 1)", {
        "kiosk": ID,
        "seq": dict(SEQ, description="per-kiosk, strictly increasing; (kiosk, seq) is the idempotency key"),
        "ts": TIME, "uid": UID,
        "auth": {"enum": list(messages.AUTH_MODES),
                 "description": "uid: UID only; mifare: sector auth and credential MAC checked on the kiosk"},
        "service": ID,
        "offline": {"type": "boolean", "description": "decided on the kiosk while offline, uploaded later"},
        "mac": MAC}, ["kiosk", "seq", "ts", "uid", "auth", "service", "offline", "mac"]),
    "result": schema("result", "Result: the bridge's verdict for one swipe (bridge -> kiosk, "
                     "aixin/v1/kiosks/{kiosk}/results, QoS 1)", {
        "kiosk": ID, "seq": SEQ, "verdict": {"enum": list(messages.VERDICTS)}, "reason": REASON,
        "resident_pays": FEN, "subsidy_pays": FEN,
        "balance": {"type": ["integer", "null"], "minimum": -messages.MAX_FEN, "maximum": messages.MAX_FEN,
                    "description": "wallet balance after, fen; null if unknown"},
        "text": {"type": "string", "maxLength": 64, "description": "short text for the kiosk screen"},
        "offline": {"type": "boolean"},
        "flagged": {"type": "boolean", "description": "offline swipe booked as an exception for review"},
        "txn": {"type": ["string", "null"], "maxLength": 40}, "mac": MAC},
        ["kiosk", "seq", "verdict", "reason", "resident_pays", "subsidy_pays", "balance", "text", "offline",
         "flagged", "txn", "mac"]),
    "state": schema("state", "State: kiosk heartbeat, retained; the offline form is the MQTT will "
                    "(kiosk -> all, aixin/v1/kiosks/{kiosk}/state)", {
        "kiosk": ID, "status": {"enum": list(messages.STATUSES)}, "fw": {"type": "string", "maxLength": 32},
        "journal": {"type": "integer", "minimum": 0, "maximum": messages.MAX_SEQ, "description": "swipes awaiting a verdict"},
        "uptime": {"type": "integer", "minimum": 0, "maximum": messages.MAX_SEQ, "description": "seconds"},
        "rssi": {"type": ["integer", "null"], "minimum": -200, "maximum": 0},
        "mem_free": {"type": ["integer", "null"], "minimum": 0, "maximum": messages.MAX_SEQ},
        "ts": {"anyOf": [TIME, {"type": "null"}]}}, ["kiosk", "status"]),
    "config": schema("config", "Config: what a kiosk needs to serve, retained (bridge -> kiosk, "
                     "aixin/v1/kiosks/{kiosk}/config)", {
        "kiosk": ID, "merchant": ID, "service": ID, "price": FEN,
        "lists_version": {"type": "integer", "minimum": 0, "maximum": messages.MAX_SEQ},
        "deny": {"type": "array", "items": UID, "description": "blocked or lost cards"},
        "allow": {"type": "array", "items": UID, "description": "active cards, for offline decisions"},
        "clock": TIME,
        "offline": {"type": "object", "additionalProperties": True,
                    "properties": {"max_per_card_per_day": LIMIT, "max_taps": LIMIT}},
        "suppress_s": {"type": "integer", "minimum": 0, "maximum": 3600},
        "mifare": {"type": "boolean", "description": "require MIFARE sector auth and credential"}},
        ["kiosk", "merchant", "service", "price", "lists_version", "deny", "allow", "clock", "offline"]),
    "settlement": schema("settlement", "Settlement: one booked transaction (bridge -> backends, "
                         "aixin/v1/settlements/{merchant}, QoS 1). Amounts are negative in a reversal.", {
        "txn": {"type": "string", "maxLength": 40, "description": "transaction id in the ledger"},
        "kind": {"enum": list(messages.SETTLEMENT_KINDS)},
        "kiosk": ID, "seq": SEQ, "merchant": ID, "service": ID, "uid": UID,
        "resident": {"type": "string", "maxLength": 40}, "group": {"type": "string", "maxLength": 40},
        "ts": dict(TIME, description="when the card was tapped (UTC)"),
        "booked_at": dict(TIME, description="when the bridge committed it (UTC)"),
        "price": FEN, "resident_pays": SIGNED_FEN, "subsidy_pays": SIGNED_FEN,
        "funds": {"type": "array", "description": "subsidy split by funding source",
                  "items": {"type": "object", "required": ["fund", "fen"],
                            "properties": {"fund": ID, "fen": SIGNED_FEN}}},
        "offline": {"type": "boolean"},
        "flagged": {"type": "boolean", "description": "offline swipe the bridge would have declined: review it"},
        "reason": REASON, "reverses": {"type": ["string", "null"], "maxLength": 40}},
        ["txn", "kind", "kiosk", "seq", "merchant", "service", "uid", "resident", "group", "ts", "booked_at",
         "price", "resident_pays", "subsidy_pays", "funds", "offline", "flagged", "reason"]),
}


def render(name):
    return json.dumps(SCHEMAS[name], indent=2) + "\n"


def main(argv):
    stale = []
    for name in SCHEMAS:
        path = os.path.join(ROOT, "protocol", "schemas", name + ".schema.json")
        text = render(name)
        current = open(path).read() if os.path.exists(path) else None
        if current != text:
            stale.append(path)
            if "--check" not in argv:
                with open(path, "w") as f:
                    f.write(text)
    if "--check" in argv and stale:
        print("schemas out of date (run scripts/make_schemas.py):", *stale)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
