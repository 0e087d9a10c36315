# Message signing (DESIGN.md 2): HMAC-SHA256 (RFC 2104) written over hashlib.sha256,
# because MicroPython has no hmac module. The signed bytes are a canonical field string
# built here and nowhere else, so neither side depends on JSON key order (MicroPython's
# json.dumps cannot sort keys) or number formatting.
import binascii
import hashlib

_BLOCK = 64  # SHA-256 block size in bytes (RFC 2104 "B")
_IPAD = bytes(0x36 for _ in range(_BLOCK))
_OPAD = bytes(0x5C for _ in range(_BLOCK))


def _xor(key, pad):
    out = bytearray(_BLOCK)
    for i in range(_BLOCK):
        out[i] = key[i] ^ pad[i]
    return out


def hmac_sha256_pure(key, msg):
    """HMAC-SHA256 of msg (bytes) under key (bytes) -> 32-byte digest, over hashlib only."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = bytes(key) + bytes(_BLOCK - len(key))
    inner = hashlib.sha256(_xor(key, _IPAD))
    inner.update(msg)
    outer = hashlib.sha256(_xor(key, _OPAD))
    outer.update(inner.digest())
    return outer.digest()


# The bridge checks two MACs per swipe: on CPython use the C implementation. MicroPython on
# the ESP32 has no hmac module, so the kiosk uses the pure version above; the shared test
# vectors hold both to the same answers.
try:
    import hmac as _native  # type: ignore[import-not-found]

    def hmac_sha256(key, msg):
        """HMAC-SHA256 of msg (bytes) under key (bytes) -> 32-byte digest."""
        return _native.digest(bytes(key), bytes(msg), "sha256")  # one C call
    _compare = _native.compare_digest
except ImportError:
    hmac_sha256 = hmac_sha256_pure
    _compare = None


def equal(a, b):
    """Constant-time comparison of two byte or str values (no early exit on a mismatch)."""
    if isinstance(a, str):
        a = a.encode()
    if isinstance(b, str):
        b = b.encode()
    if _compare is not None:
        return _compare(a, b)
    diff = len(a) ^ len(b)
    for i in range(min(len(a), len(b))):
        diff |= a[i] ^ b[i]
    return diff == 0


def _field(value):
    if value is None:
        return "-"
    if value is True:
        return "1"
    if value is False:
        return "0"
    return str(value)


# The signed fields of each message type, in order. The type name is signed too, so a
# result can never pass for a swipe.
SIGNED_FIELDS = {
    "swipe": ("kiosk", "seq", "ts", "uid", "auth", "service", "offline"),
    "result": ("kiosk", "seq", "verdict", "reason", "resident_pays", "subsidy_pays",
               "balance", "offline", "flagged", "txn"),
}


def signing_string(kind, msg):
    """Canonical bytes for a message dict: 'aixin1|swipe|K1|42|...'. Raises ValueError if
    a field holds '|' or a newline (two fields could then pass for others)."""
    names = SIGNED_FIELDS[kind]
    text = "aixin1|" + kind + "|" + "|".join([_field(msg.get(name)) for name in names])
    # One scan of the whole string, not two per field: a '|' inside a field shows up as
    # one separator too many.
    if text.count("|") != len(names) + 1 or "\n" in text:
        raise ValueError("a signed field may not contain '|' or a newline")
    return text.encode()


def mac(kind, msg, key):
    """Hex MAC (64 lower-case digits) for a message dict."""
    return binascii.hexlify(hmac_sha256(key, signing_string(kind, msg))).decode()


def sign(kind, msg, key):
    """Set msg['mac'] and return msg."""
    msg["mac"] = mac(kind, msg, key)
    return msg


def verify(kind, msg, key):
    """True if msg['mac'] is the right MAC for msg under key."""
    given = msg.get("mac")
    if not isinstance(given, str):
        return False
    return equal(given, mac(kind, msg, key))


def broker_password(key):
    """The kiosk's MQTT password, derived from its device key so a kiosk holds one secret and
    a key rotation (reflash) rotates the broker login with it. 32 hex digits."""
    return binascii.hexlify(hmac_sha256(key, b"aixin1|broker-password")).decode()[:32]
