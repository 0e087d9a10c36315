# host-only. What the bridge's hot path relies on for its speed (docs/bridge.md,
# "Performance"): statements run straight on the driver behave as SQLAlchemy's would, and
# settling leaves no reference cycles for the garbage collector to pause the bridge on.
import gc
import json
import time

import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import exc, insert, select

from bridge import db, ledger, mqtt_io, schema, settle
from protocol import messages, utctime

from tests.brokers import seed_site


def _swipe(info, kiosk, seq, who):
    msg = messages.swipe(kiosk, seq, utctime.iso(time.time()), info["cards"][who], "uid",
                         "meal", False, info["keys"][kiosk])
    return ("aixin/v1/kiosks/%s/swipes" % kiosk, json.dumps(msg).encode())


def test_settling_leaves_no_reference_cycles(tmp_path):
    engine, info = seed_site(tmp_path / "a.db")
    def batch(seq):
        return [_swipe(info, "K1", seq, "young"), _swipe(info, "K1", seq, "young"),  # dup
                _swipe(info, "K1", seq + 1, "poor"),      # declined: no money
                ("aixin/v1/kiosks/K1/swipes", b"{")]      # refused: malformed

    with engine.connect() as conn:
        # The first batch of a shape builds and caches its statements (once per shape).
        settle.settle_batch(conn, batch(1))
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            outcomes = settle.settle_batch(conn, batch(3))
            del outcomes
            gc.collect()
            garbage = [type(o).__name__ for o in gc.garbage]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
    assert garbage == [], "settling left reference cycles: %s" % sorted(set(garbage))
    assert ledger.check(engine)["ok"]


def test_paho_client_gets_a_matcher_without_cycles():
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    assert hasattr(c, "_on_message_filtered"), "paho renamed its matcher: see mqtt_io._Matcher"
    mqtt_io.quiet_client(c)
    assert list(c._on_message_filtered.iter_match("aixin/v1/kiosks/K1/swipes")) == []
    seen = []
    c.message_callback_add("aixin/v1/kiosks/+/swipes", seen.append)  # still works if used
    assert list(c._on_message_filtered.iter_match("aixin/v1/kiosks/K1/swipes")) == \
        [seen.append]


def test_prepared_statements_behave_as_core(tmp_path):
    engine, info = seed_site(tmp_path / "a.db")
    k = schema.kiosks
    by_core = select(k.c.id, k.c.service, k.c.enabled).where(k.c.merchant_id == "M1")
    prepared = db.Prepared(by_core)
    with engine.begin() as conn:
        assert [tuple(r) for r in conn.execute(by_core)] == \
            [(kid, svc, bool(on)) for kid, svc, on in prepared.rows(conn)]
        # A literal in the statement is a bind with a fixed value.
        lit = db.Prepared(select(k.c.id).where(k.c.service == "meal"))
        assert lit.scalar(conn) == "K1"
        # Driver errors come back as SQLAlchemy's (settle_batch retries on their names).
        ins = db.Prepared(insert(schema.merchants))
        with pytest.raises(exc.IntegrityError):
            ins.many(conn, [{"id": "M1", "name": "again", "created_at": 0}])
    # Lists go through InQuery; a list in a Prepared is refused, not silently wrong.
    with engine.connect() as conn:
        with pytest.raises(TypeError):
            db.Prepared(select(k.c.id).where(k.c.id.in_(["K1", "K2"]))).rows(conn)
        assert [r[0] for r in settle._KIOSKS_MANY.rows(conn, kids=["K1"])] == ["K1"]


def test_insert_returning_in_power_of_two_chunks(tmp_path):
    engine, _ = seed_site(tmp_path / "a.db")
    t = schema.transactions
    rows = [dict(kind="topup", ts=0, local_day="2026-01-01", local_month="2026-01",
                 booked_at=0, amount=1, offline=False, flagged=False, reason="ok", memo="",
                 kiosk_id="X", seq=i) for i in range(37)]  # 32 + 4 + 1
    with engine.begin() as conn:
        got = db.InsertReturning(t, t.c.id, t.c.seq).rows(conn, rows)
        assert sorted(s for _, s in got) == list(range(37))
        assert len({i for i, _ in got}) == 37
        stored = dict(conn.execute(select(t.c.id, t.c.seq).where(t.c.kiosk_id == "X")).all())
    assert stored == dict(got)


def test_monthly_cap_counts_the_local_month_by_its_days(tmp_path):
    engine, info = seed_site(tmp_path / "a.db", kiosks=(("B1", "bath"),))
    key = info["keys"]["B1"]
    ledger.topup(engine, "R000002", 20000)  # "old": six baths' worth

    def bath(seq, when):  # online: booked at the bridge's time, `when`
        msg = messages.swipe("B1", seq, utctime.iso(when), info["cards"]["old"], "uid", "bath",
                             False, key)
        out, = settle.settle_batch(engine, [("aixin/v1/kiosks/B1/swipes",
                                             json.dumps(msg).encode())], now=when)
        return json.loads(out.result)["reason"]

    noon = utctime.parse("2026-11-02T04:00:00Z")  # 12:00 in Asia/Shanghai
    day = 86400
    # 4 a month (default rules); November 1 in Shanghai is still October 31 in UTC at 20:00
    got = [bath(1, utctime.parse("2026-10-31T20:00:00Z"))] + \
        [bath(2 + i, noon + i * day) for i in range(3)] + [bath(5, noon + 27 * day)]
    assert got == ["ok"] * 4 + ["monthly_cap"]
    assert bath(6, utctime.parse("2026-11-30T16:30:00Z")) == "ok"  # Dec 1, 00:30 local
    assert ledger.check(engine)["ok"]


def test_migration_3_drops_the_month_index_and_caps_use_ix_txn_caps(tmp_path):
    path = str(tmp_path / "old.db")
    engine = db.connect(path)
    with engine.begin() as conn:  # a database as version 2 left it
        conn.exec_driver_sql("CREATE INDEX ix_txn_month ON transactions "
                             "(resident_id, service, local_month)")
        conn.exec_driver_sql("DELETE FROM schema_version WHERE version = 3")
    engine.dispose()
    engine = db.connect(path)
    with engine.connect() as conn:
        assert schema.current_version(conn) == 3
        names = {r[0] for r in conn.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert "ix_txn_month" not in names and "ix_txn_caps" in names
        sql, order, procs, fixed = settle._COUNTS_ONE._compile(conn)
        args = db.Prepared._bind(order, procs, fixed, dict(settle._month_days("2026-11"),
                                                           rid="R000001", service="bath"))
        plan = " ".join(str(r) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql,
                                                               tuple(args)))
        assert "ix_txn_caps" in plan, plan
