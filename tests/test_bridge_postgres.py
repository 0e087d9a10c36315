# host-only. The same bridge on PostgreSQL (DESIGN.md 5: several bridges, one database):
# two settlers working the same swipes at once book each (kiosk, seq) once, and the ledger
# invariants hold. Skipped when no PostgreSQL answers on 127.0.0.1:5432 (db `test`).
import json
import os
import threading
import uuid

import pytest

from bridge import db, ledger, pricing, settle
from protocol import messages, topics, utctime
from tests.brokers import seed_site

PG = os.environ.get("AIXIN_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def pg_url():
    psycopg = pytest.importorskip("psycopg")
    schema = "aixin_test_" + uuid.uuid4().hex[:8]
    dsn = PG.replace("postgresql+psycopg://", "postgresql://")
    try:
        conn = psycopg.connect(dsn, autocommit=True, connect_timeout=3)
    except Exception as e:
        pytest.skip("no PostgreSQL at %s: %s" % (PG, e))
    conn.execute("CREATE SCHEMA " + schema)
    sep = "&" if "?" in PG else "?"
    try:
        yield PG + sep + "options=-csearch_path%3D" + schema
    finally:
        conn.execute("DROP SCHEMA %s CASCADE" % schema)
        conn.close()


UNCAPPED = {"funds": {"civil_affairs": "subsidy"},
            "groups": [{"name": "all", "min_age": 60}],
            "services": {"meal": {"price": 1000, "per_day": 3,
                                  "split": {"all": {"civil_affairs": 300}}}}}


def test_two_settlers_share_one_postgres(pg_url, tmp_path):
    residents = [("r%d" % i, "1950-01-01", [], "D%07d" % i, 100000) for i in range(4)]
    engine, info = seed_site(pg_url, kiosks=[("K1", "meal"), ("K2", "meal")],
                             residents=residents)
    rules = tmp_path / "r.json"
    rules.write_text(json.dumps(UNCAPPED))
    pricing.load(engine, str(rules))
    cards = list(info["cards"].values())
    items = []
    for i in range(40):
        k = "K1" if i % 2 else "K2"
        msg = messages.swipe(k, i + 1, utctime.iso(1763900000), cards[i % 4], "uid", "meal",
                             False, info["keys"][k])
        items.append((topics.swipes(k), json.dumps(msg).encode()))
    other = db.connect(pg_url)  # a second bridge: its own engine and connections
    results = {}

    def work(name, eng, order):
        outs = []
        for start in range(0, len(order), 5):
            outs += settle.settle_batch(eng, order[start:start + 5])
        results[name] = outs

    a = threading.Thread(target=work, args=("a", engine, items))
    b = threading.Thread(target=work, args=("b", other, list(reversed(items))))
    a.start(), b.start()
    a.join(), b.join()
    verdicts = {}
    for outs in results.values():
        for out in outs:
            res = json.loads(out.result)
            verdicts.setdefault((res["kiosk"], res["seq"]), set()).add(out.result)
    assert len(verdicts) == 40
    assert all(len(v) == 1 for v in verdicts.values())  # both got the same bytes
    reasons = [json.loads(next(iter(v)))["reason"] for v in verdicts.values()]
    assert reasons.count("ok") == 12 and reasons.count("daily_cap") == 28  # 4 cards x 3/day
    check = ledger.check(engine)
    assert check["ok"], check["problems"]
    assert check["transactions"] == 4 + 12  # top-ups + meals
    with engine.connect() as conn:
        assert ledger.balance(conn, ledger.merchant("M1")) == 12 * 1000
