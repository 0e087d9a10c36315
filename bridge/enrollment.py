# host-only. Enrolling many residents and cards at once from a CSV file (the district's
# list of card holders), for `aixin resident import FILE.csv`.
#
# All or nothing: every row is checked first and every problem is reported with its line
# number; only a clean file is written, in ONE database transaction, so a crash or Ctrl-C
# half-way leaves the registry as it was and the same command can simply be run again.
import csv
import time

from sqlalchemy import func, insert, select

from bridge import ledger, registry, schema
from bridge.db import BridgeError, bump
from protocol import money

COLUMNS = ("name", "born", "flags", "card", "topup")
REQUIRED = ("name", "born", "card")
EXAMPLE = "name,born,flags,card,topup\nWang Xiulan,1936-05-02,disabled,ED0BA996,50\n"


def read(path):
    """Parse and check a CSV file. Returns the list of row dicts (card canonical, topup in
    fen, flags a list). Raises BridgeError listing every problem found, by line."""
    from bridge.pricing import FLAGS
    try:
        f = open(path, newline="", encoding="utf-8-sig")  # Excel writes a BOM
    except OSError as e:
        raise BridgeError("cannot read %s: %s" % (path, e.strerror))
    with f:
        reader = csv.DictReader(f)
        header = [h.strip().lower() for h in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise BridgeError("%s: the first line must name the columns; missing %s. Example:\n%s"
                              % (path, ", ".join(missing), EXAMPLE))
        reader.fieldnames = header
        rows, problems, seen = [], [], {}
        for line, raw in enumerate(reader, start=2):
            row = {k: (raw.get(k) or "").strip() for k in COLUMNS}
            where = "line %d" % line
            try:
                if not row["name"]:
                    raise BridgeError("name is empty")
                if not registry.DATE.match(row["born"]):
                    raise BridgeError("born %r: write it as YYYY-MM-DD" % row["born"])
                flags = [x.strip() for x in row["flags"].replace(";", ",").split(",") if x.strip()]
                for flag in flags:
                    if flag not in FLAGS:
                        raise BridgeError("flag %r: use %s (separate several with ;)" % (flag, ", ".join(FLAGS)))
                card = registry.canonical_uid(row["card"])
                if card in seen:
                    raise BridgeError("card %s is also on line %d" % (card, seen[card]))
                seen[card] = line
                try:
                    topup = money.parse_yuan(row["topup"]) if row["topup"] else 0
                except ValueError as e:
                    raise BridgeError(str(e))
            except BridgeError as e:
                problems.append("%s: %s" % (where, e))
                continue
            rows.append({"line": line, "name": row["name"], "born": row["born"], "flags": flags,
                         "card": card, "topup": topup})
    if problems:
        more = "" if len(problems) <= 20 else "\n... and %d more" % (len(problems) - 20)
        raise BridgeError("%s has %d problem(s); nothing was imported:\n%s%s"
                          % (path, len(problems), "\n".join(problems[:20]), more))
    if not rows:
        raise BridgeError("%s has no rows under its header line; nothing to import" % path)
    return rows


def import_rows(engine, rows, progress=None, every=1000):
    """Enroll residents, their cards and opening balances in one transaction. Returns the
    number of residents added. Raises BridgeError (nothing written) if a card is already
    enrolled. progress(done, total) is called every `every` rows and at the end."""
    r, c = schema.residents, schema.cards
    now = time.time()
    with engine.begin() as conn:
        cards = [row["card"] for row in rows]
        taken = set()
        for i in range(0, len(cards), 500):
            taken.update(u for (u,) in conn.execute(select(c.c.uid).where(c.c.uid.in_(cards[i:i + 500]))))
        if taken:
            clash = [row for row in rows if row["card"] in taken]
            raise BridgeError("%d card(s) are already enrolled (first: line %d, %s); nothing was imported. "
                              "Remove those lines or see `aixin history CARD`"
                              % (len(clash), clash[0]["line"], clash[0]["card"]))
        n = conn.execute(select(func.count()).select_from(r)).scalar()
        tz = ledger.site_tz(conn)
        for done, row in enumerate(rows, start=1):
            while True:  # next free R-number (ids given by hand may sit in the sequence)
                n += 1
                rid = "R%06d" % n
                if conn.execute(select(r.c.id).where(r.c.id == rid)).first() is None:
                    break
            conn.execute(insert(r).values(id=rid, name=row["name"], birth_date=row["born"],
                                          flags=",".join(row["flags"]), created_at=int(now)))
            ledger.account_id(conn, ledger.wallet(rid))
            conn.execute(insert(c).values(uid=row["card"], resident_id=rid, status="active",
                                          enrolled_at=int(now), changed_at=int(now), note="imported"))
            if row["topup"]:
                ledger.post(conn, [(ledger.CASH, -row["topup"]), (ledger.wallet(rid), row["topup"])], "topup",
                            now, memo="opening balance (import)", resident_id=rid, tz=tz)
            if progress and (done % every == 0 or done == len(rows)):
                progress(done, len(rows))
        bump(conn, "lists_version")
    return len(rows)
