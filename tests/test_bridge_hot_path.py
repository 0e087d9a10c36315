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
