# Protocol v1 tests; they run on CPython and under MicroPython (docs/developing.md).
import binascii
import json

from devtest import raises, vector_path
from protocol import messages, reasons, signing, topics, uid, utctime
from protocol.messages import ProtocolError

KEY = b"0123456789abcdef0123456789abcdef"


def _vectors():
    with open(vector_path("signing.json")) as f:
        return json.load(f)


def _swipe(**over):
    msg = messages.swipe("canteen-01", 42, "2026-11-23T03:30:00Z", "ED0BA996", "uid", "meal", False, KEY)
    for name in over:
        msg[name] = over[name]
    return msg


def _result():
    return messages.result("canteen-01", 42, "approved", reasons.OK, 300, 700, 4700, "Paid 3.00", KEY, txn="T9")


# --- signing -----------------------------------------------------------------------

def test_hmac_matches_rfc4231():
    for v in _vectors()["hmac_sha256"]:
        got = signing.hmac_sha256(binascii.unhexlify(v["key"]), binascii.unhexlify(v["msg"]))
        assert binascii.hexlify(got).decode() == v["mac"], v


def test_pure_hmac_matches_rfc4231_on_every_interpreter():
    # On CPython hmac_sha256 is the C one: keep the pure one (the ESP32's) checked here too.
    for v in _vectors()["hmac_sha256"]:
        got = signing.hmac_sha256_pure(binascii.unhexlify(v["key"]), binascii.unhexlify(v["msg"]))
        assert binascii.hexlify(got).decode() == v["mac"], v
    for n in (0, 1, 63, 64, 65, 200):
        key, msg = bytes(range(n % 256)) * 1, bytes((n * 7 + i) % 256 for i in range(n))
        assert signing.hmac_sha256_pure(key, msg) == signing.hmac_sha256(key, msg)


def test_message_macs_match_shared_vectors():
    # The same file on both interpreters: identical canonical strings and MACs.
    for v in _vectors()["messages"]:
        key = binascii.unhexlify(v["key"])
        assert signing.signing_string(v["kind"], v["msg"]).decode() == v["signing_string"]
        assert signing.mac(v["kind"], v["msg"], key) == v["mac"]
        msg = dict(v["msg"])
        msg["mac"] = v["mac"]
        assert signing.verify(v["kind"], msg, key)


def test_one_bit_change_in_any_signed_field_fails():
    for kind, msg in (("swipe", _swipe()), ("result", _result())):
        assert signing.verify(kind, msg, KEY)
        for name in signing.SIGNED_FIELDS[kind]:
            changed = dict(msg)
            value = changed[name]
            if isinstance(value, bool):
                changed[name] = not value
            elif isinstance(value, int):
                changed[name] = value ^ 1
            elif value is None:
                changed[name] = 0
            else:
                changed[name] = value[:-1] + chr(ord(value[-1]) ^ 1)
            assert not signing.verify(kind, changed, KEY), (kind, name)


def test_wrong_key_and_missing_mac_fail():
    msg = _swipe()
    assert not signing.verify("swipe", msg, KEY[:-1] + b"X")
    del msg["mac"]
    assert not signing.verify("swipe", msg, KEY)


def test_result_mac_cannot_pass_as_swipe():
    r = _result()
    assert signing.signing_string("swipe", r) != signing.signing_string("result", r)


def test_separator_in_signed_field_refused():
    raises(ValueError, signing.signing_string, "swipe", {"kiosk": "a|b"})
    raises(ValueError, signing.signing_string, "swipe", {"offline": "|"})  # the last field
    raises(ValueError, signing.signing_string, "result", {"txn": "T1\nT2"})
    raises(ValueError, signing.signing_string, "swipe", {"uid": "\n"})


def test_constant_time_equal():
    assert signing.equal("abc", "abc")
    assert not signing.equal("abc", "abd")
    assert not signing.equal("abc", "abcd")
    assert signing.equal(b"\x00\x01", b"\x00\x01")


# --- encode / decode ---------------------------------------------------------------

def test_swipe_round_trip():
    msg = _swipe()
    data = messages.encode("swipe", msg)
    back = messages.decode("swipe", data)
    assert back == msg
    assert signing.verify("swipe", back, KEY)


def test_result_state_config_round_trip():
    r = _result()
    assert messages.decode("result", messages.encode("result", r)) == r
    s = {"kiosk": "k1", "status": "online", "fw": "1.0.0", "journal": 0, "uptime": 5, "rssi": None,
         "mem_free": 90000, "ts": "2026-11-23T03:30:00Z"}
    assert messages.decode("state", messages.encode("state", s)) == s
    c = {"kiosk": "k1", "merchant": "m1", "service": "meal", "price": 1000, "lists_version": 3,
         "deny": ["ED0BA996"], "allow": ["04A1B2C3D4E5F6"], "clock": "2026-11-23T03:30:00Z",
         "offline": {"max_per_card_per_day": 1}}
    assert messages.decode("config", messages.encode("config", c)) == c


def _code(payload, kind="swipe"):
    return raises(ProtocolError, messages.decode, kind, payload)


def test_each_bad_message_gives_a_distinct_error():
    good = _swipe()
    cases = []
    cases.append((b"{not json", reasons.MALFORMED_JSON, None))
    cases.append((b"\xff\xfe", reasons.MALFORMED_JSON, None))
    cases.append((b"[1, 2]", reasons.NOT_OBJECT, None))
    missing = dict(good)
    del missing["uid"]
    cases.append((json.dumps(missing), reasons.MISSING_FIELD, "uid"))
    cases.append((json.dumps(_swipe(seq="42")), reasons.WRONG_TYPE, "seq"))
    cases.append((json.dumps(_swipe(offline=1)), reasons.WRONG_TYPE, "offline"))
    cases.append((json.dumps(_swipe(seq=True)), reasons.WRONG_TYPE, "seq"))
    cases.append((json.dumps(_swipe(seq=0)), reasons.BAD_VALUE, "seq"))
    cases.append((json.dumps(_swipe(uid="ed0ba996")), reasons.BAD_VALUE, "uid"))
    cases.append((json.dumps(_swipe(ts="2026-11-23 03:30:00")), reasons.BAD_VALUE, "ts"))
    cases.append((json.dumps(_swipe(kiosk="a/b")), reasons.BAD_VALUE, "kiosk"))
    cases.append((json.dumps(_swipe(extra=1)), reasons.BAD_VALUE, "extra"))
    cases.append((json.dumps(_swipe(v=2)), reasons.UNKNOWN_VERSION, "v"))
    cases.append((b"{" + b" " * 600 + b"}", reasons.TOO_LARGE, None))
    for payload, code, field in cases:
        e = _code(payload)
        assert e.code == code, (payload, e.code, code)
        assert e.field == field, (payload, e.field, field)
        assert code in str(e)


def test_every_error_code_is_documented():
    for code in (reasons.MALFORMED_JSON, reasons.NOT_OBJECT, reasons.MISSING_FIELD, reasons.WRONG_TYPE,
                 reasons.BAD_VALUE, reasons.TOO_LARGE, reasons.UNKNOWN_VERSION):
        assert reasons.describe(code) != "unknown reason code"
    for code in reasons.RESULT_REASONS:
        assert code in reasons.TABLE
        assert reasons.display(code)


def test_encode_refuses_invalid_and_float_money():
    r = _result()
    r["resident_pays"] = 3.0
    e = raises(ProtocolError, messages.encode, "result", r)
    assert e.code == reasons.WRONG_TYPE and e.field == "resident_pays"


def test_oversize_config_refused_before_parsing():
    e = _code(b"x" * (messages.MAX_BYTES["config"] + 1), "config")
    assert e.code == reasons.TOO_LARGE


# --- topics, UID, time -------------------------------------------------------------

def test_topics_build_and_parse():
    assert topics.swipes("k1") == "aixin/v1/kiosks/k1/swipes"
    assert topics.parse(topics.results("k1")) == ("results", "k1")
    assert topics.parse(topics.settlements("m-2")) == ("settlements", "m-2")
    assert topics.parse(topics.BRIDGE_STATE) == ("bridge", None)
    assert topics.parse("aixin/v2/kiosks/k1/swipes") is None
    assert topics.parse("aixin/v1/kiosks/+/swipes") is None
    assert topics.shared("bridges", topics.ALL_SWIPES) == "$share/bridges/aixin/v1/kiosks/+/swipes"
    raises(ValueError, topics.swipes, "k/1")
    raises(ValueError, topics.swipes, "#")
    raises(ValueError, topics.swipes, "")


def test_uid_text_keeps_leading_zeros():
    assert uid.uid_hex(b"\xed\x0b\xa9\x96") == "ED0BA996"
    assert uid.uid_hex(b"\x04\x00\x01\x02\x03\x04\x05") == "04000102030405"
    assert uid.uid_bytes("00000000") == b"\x00\x00\x00\x00"
    raises(ValueError, uid.uid_hex, b"\x01\x02\x03")
    raises(ValueError, uid.uid_bytes, "EDBA996")
    raises(ValueError, uid.uid_bytes, "ed0ba996")


def test_utc_time_round_trip():
    assert utctime.iso(0) == "1970-01-01T00:00:00Z"
    assert utctime.iso(951782400) == "2000-02-29T00:00:00Z"
    for t in (0, 86399, 951782400, 1795000000, 4102444799):
        assert utctime.parse(utctime.iso(t)) == t
    raises(ValueError, utctime.parse, "2026-02-30T00:00:00Z")
    raises(ValueError, utctime.parse, "2026-11-23T24:00:00Z")
    raises(ValueError, utctime.parse, "2026-11-23T03:30:00+08:00")


def test_money_text_form():
    from protocol import money
    assert money.yuan(0) == "0.00" and money.yuan(5) == "0.05" and money.yuan(123456) == "1234.56"
    assert money.yuan(-300) == "-3.00"
    for text, fen in (("12.50", 1250), ("12.5", 1250), ("12", 1200), ("0.05", 5), (".5", 50), (" 3 ", 300)):
        assert money.parse_yuan(text) == fen, text
    for bad in ("", "-1", "1.234", "1,5", "abc", "1.", "1e3", "+2"):
        raises(ValueError, money.parse_yuan, bad)
