# MQTT topic names, defined once (DESIGN.md 2). The version is in the topic so v2 can
# run beside v1.
ROOT = "aixin/v1/"
BRIDGE_STATE = ROOT + "bridge/state"
ALL_SWIPES = ROOT + "kiosks/+/swipes"
ALL_STATES = ROOT + "kiosks/+/state"

KINDS = ("swipes", "results", "state", "config")
_MAX_ID = 32
_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def valid_id(name):
    """Kiosk and merchant ids: 1-32 of [A-Za-z0-9_-]; no MQTT wildcards or separators."""
    # strip() leaves exactly what is not allowed (one C call; checked several times a swipe)
    return isinstance(name, str) and 0 < len(name) <= _MAX_ID and not name.strip(_ID_CHARS)


def _check(name):
    if not valid_id(name):
        raise ValueError("bad id for a topic (1-32 of A-Z a-z 0-9 - _): %r" % (name,))
    return name


def kiosk(kiosk_id, kind):
    if kind not in KINDS:
        raise ValueError("unknown kiosk topic kind: %r" % (kind,))
    return ROOT + "kiosks/" + _check(kiosk_id) + "/" + kind


def swipes(kiosk_id):
    return kiosk(kiosk_id, "swipes")


def results(kiosk_id):
    return kiosk(kiosk_id, "results")


def state(kiosk_id):
    return kiosk(kiosk_id, "state")


def config(kiosk_id):
    return kiosk(kiosk_id, "config")


def settlements(merchant_id):
    return ROOT + "settlements/" + _check(merchant_id)


def shared(group, topic_filter):
    """MQTT 5 shared subscription filter, for several bridges sharing the load."""
    return "$share/" + _check(group) + "/" + topic_filter


def parse(topic):
    """'aixin/v1/kiosks/K1/swipes' -> ('swipes', 'K1'); settlements -> ('settlements', M);
    bridge state -> ('bridge', None). Returns None for anything not ours."""
    if not topic.startswith(ROOT):
        return None
    parts = topic[len(ROOT):].split("/")
    if len(parts) == 3 and parts[0] == "kiosks" and parts[2] in KINDS and valid_id(parts[1]):
        return (parts[2], parts[1])
    if len(parts) == 2 and parts[0] == "settlements" and valid_id(parts[1]):
        return ("settlements", parts[1])
    if parts == ["bridge", "state"]:
        return ("bridge", None)
    return None
