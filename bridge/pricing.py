# host-only. Prices and subsidy rules are data (DESIGN.md 5): a TOML or JSON file, loaded
# with `aixin rules load FILE`, stored as a numbered version; the highest is in force.
# See bridge/default_rules.toml for the format, with comments.
import json
import os
import time
import tomllib

from sqlalchemy import func, insert, select

from bridge import localtime, schema
from bridge.db import BridgeError, bump
from protocol import topics

FLAGS = ("disabled", "dementia", "preferential")
DEFAULT_RULES = os.path.join(os.path.dirname(__file__), "default_rules.toml")


class Rules:
    """Parsed, validated rules. Pure data plus lookups; no database access."""

    def __init__(self, body, version=0):
        self.body = body
        self.version = version
        self.tz = body.get("timezone", localtime.DEFAULT_TZ)
        self.funds = body.get("funds", {})
        self.groups = body.get("groups", [])
        self.services = body.get("services", {})
        self.prices = body.get("prices", {})
        self.offline = body.get("offline", {})

    def group_of(self, birth_date, flags, day):
        """The first group (in file order) the resident matches, or None."""
        age = localtime.age_on(birth_date, day)
        for g in self.groups:
            if "min_age" in g and age < g["min_age"]:
                continue
            if "max_age" in g and age > g["max_age"]:
                continue
            if g.get("flags") and not set(g["flags"]) & set(flags):
                continue
            return g["name"]
        return None

    def price(self, merchant_id, service):
        """Price in fen of a service at a merchant, or None if not offered."""
        if service not in self.services:
            return None
        override = self.prices.get(merchant_id, {})
        if service in override:
            return override[service]
        return self.services[service].get("price")

    def split(self, service, group, price):
        """(resident fen, [(fund, fen), ...]) or None if the group is not eligible. Funds
        take their share in file order, never more than what is left of the price."""
        shares = self.services[service].get("split", {})
        share = shares.get(group) if group is not None else None
        if share is None:
            share = shares.get("default")
        if share is None:
            return None
        left = price
        funds = []
        for name, amount in share.items():
            fen = price * int(amount[:-1]) // 100 if isinstance(amount, str) else amount
            fen = min(fen, left)
            if fen:
                funds.append((name, fen))
                left -= fen
        return left, funds

    def caps(self, service):
        s = self.services.get(service, {})
        return s.get("per_day"), s.get("per_month")


def _err(where, what):
    raise BridgeError("rules: %s: %s" % (where, what))


def validate(body):
    """Check a parsed rules file; raise BridgeError naming the place at fault."""
    if not isinstance(body, dict):
        _err("file", "must be a table/object")
    known = {"timezone", "funds", "groups", "services", "prices", "offline", "name", "note"}
    for k in body:
        if k not in known:
            _err(k, "unknown key (known: %s)" % ", ".join(sorted(known)))
    try:
        localtime.zone(body.get("timezone"))
    except Exception:
        _err("timezone", "unknown time zone %r (e.g. Asia/Shanghai)" % body.get("timezone"))
    funds = body.get("funds", {})
    if not isinstance(funds, dict) or not funds:
        _err("funds", "list at least one fund, e.g. civil_affairs = \"Civil affairs subsidy\"")
    groups = body.get("groups", [])
    names = set()
    for i, g in enumerate(groups):
        where = "groups[%d]" % i
        if not isinstance(g, dict) or not topics.valid_id(g.get("name", "")):
            _err(where, "each group needs a name of A-Z a-z 0-9 - _")
        names.add(g["name"])
        for k in g:
            if k not in ("name", "min_age", "max_age", "flags", "note"):
                _err(where, "unknown key %r" % k)
        for f in g.get("flags", []):
            if f not in FLAGS:
                _err(where, "flag %r is not one of %s" % (f, ", ".join(FLAGS)))
    services = body.get("services", {})
    if not services:
        _err("services", "define at least one service")
    for sname, s in services.items():
        where = "services.%s" % sname
        if not topics.valid_id(sname):
            _err(where, "service names are 1-32 of A-Z a-z 0-9 - _")
        for k in s:
            if k not in ("price", "per_day", "per_month", "split", "note"):
                _err(where, "unknown key %r" % k)
        for k in ("price", "per_day", "per_month"):
            if k in s and (not isinstance(s[k], int) or isinstance(s[k], bool) or s[k] < 0):
                _err(where + "." + k, "must be a whole number >= 0 (money in fen)")
        for gname, share in s.get("split", {}).items():
            if gname != "default" and gname not in names:
                _err(where + ".split." + gname, "no such group")
            for fname, amount in share.items():
                if fname not in funds:
                    _err(where + ".split.%s.%s" % (gname, fname), "no such fund")
                ok = (isinstance(amount, int) and not isinstance(amount, bool) and amount >= 0) \
                    or (isinstance(amount, str) and amount.endswith("%")
                        and amount[:-1].isdigit() and int(amount[:-1]) <= 100)
                if not ok:
                    _err(where + ".split.%s.%s" % (gname, fname),
                         "a share is fen (whole number) or a percentage like \"50%\"")
    for mid, table in body.get("prices", {}).items():
        for sname, fen in table.items():
            if sname not in services:
                _err("prices.%s.%s" % (mid, sname), "no such service")
            if not isinstance(fen, int) or isinstance(fen, bool) or fen < 0:
                _err("prices.%s.%s" % (mid, sname), "must be a whole number of fen")
    for k, v in body.get("offline", {}).items():
        if k not in ("max_per_card_per_day", "max_taps") or not isinstance(v, int):
            _err("offline." + k, "known: max_per_card_per_day, max_taps (whole numbers)")
    return body


def parse_file(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise BridgeError("cannot read rules file %s: %s" % (path, e.strerror))
    try:
        if path.endswith(".json"):
            body = json.loads(data)
        else:
            body = tomllib.loads(data.decode())
    except (ValueError, UnicodeError) as e:
        raise BridgeError("rules file %s does not parse: %s" % (path, e))
    return validate(body)


def load(engine, path):
    """Load a rules file as the new version in force. Returns the version number."""
    body = parse_file(path)
    with engine.begin() as conn:
        v = (conn.execute(select(func.max(schema.rules.c.version))).scalar() or 0) + 1
        conn.execute(insert(schema.rules).values(version=v, loaded_at=int(time.time()),
                                                 source=os.path.abspath(path),
                                                 body=json.dumps(body)))
        bump(conn, "registry_version")  # kiosks' configs carry prices: republish
    return v


_cache = {}  # engine url -> Rules


def current(conn):
    """The Rules in force (cached per version), or None if none loaded."""
    r = schema.rules
    v = conn.execute(select(func.max(r.c.version))).scalar()
    if v is None:
        return None
    key = str(conn.engine.url)
    cached = _cache.get(key)
    if cached is not None and cached.version == v:
        return cached
    body = conn.execute(select(r.c.body).where(r.c.version == v)).scalar()
    rules = _cache[key] = Rules(json.loads(body), v)
    return rules
