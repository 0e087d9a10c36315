# host-only. kill -9 of the bridge process in the middle of a stream of swipes, then a
# restart (issue 5): every swipe is booked exactly once and every kiosk gets its verdict.
# The bridge runs as a subprocess through the CLI (`python -m bridge serve`), as in a site.
import json
import os
import signal
import threading
import time

import pytest
from sqlalchemy import func, select

from bridge import ledger, pricing, schema
from tests.brokers import (Kiosk, seed_site, start_bridge_process, start_mosquitto,
                           stop_process, wait_log)

UNCAPPED = {
    "timezone": "Asia/Shanghai",
    "funds": {"civil_affairs": "subsidy"},
    "groups": [{"name": "age_60_plus", "min_age": 60}],
    "services": {"meal": {"price": 1000, "split": {"age_60_plus": {"civil_affairs": 300}}}},
}


@pytest.mark.timeout(90)
def test_kill_9_mid_stream_books_each_swipe_once(tmp_path):
    port, broker = start_mosquitto(tmp_path)
    kiosks_ids = ("K1", "K2", "K3")
    residents = [("r%d" % i, "1950-01-01", [], "C%07d" % i, 1000000) for i in range(6)]
    engine, info = seed_site(tmp_path / "aixin.db", kiosks=[(k, "meal") for k in kiosks_ids],
                             residents=residents)
    rules = tmp_path / "uncapped.json"
    rules.write_text(json.dumps(UNCAPPED))
    pricing.load(engine, str(rules))
    log = tmp_path / "bridge.log"
    bridge = start_bridge_process(tmp_path / "aixin.db", port, log)
    kiosks = []
    try:
        wait_log(log, "event=connected")
        kiosks = [Kiosk(port, k, info["keys"][k]) for k in kiosks_ids]
        cards = list(info["cards"].values())
        per_kiosk = 200

        def stream(k, i0):
            for i in range(per_kiosk):
                k.swipe(cards[(i0 + i) % len(cards)])
                time.sleep(0.002)

        threads = [threading.Thread(target=stream, args=(k, n)) for n, k in enumerate(kiosks)]
        for t in threads:
            t.start()
        # kill -9 once a good part of the stream is settled, while swipes keep coming
        deadline = time.time() + 20
        while sum(len(k.results) for k in kiosks) < 150 and time.time() < deadline:
            time.sleep(0.005)
        os.kill(bridge.pid, signal.SIGKILL)
        bridge.wait()
        answered_at_kill = sum(len(k.results) for k in kiosks)
        for t in threads:
            t.join()
        time.sleep(0.3)
        bridge = start_bridge_process(tmp_path / "aixin.db", port, log)
        wait_log(log, "event=connected", count=2)
        total = per_kiosk * len(kiosks)
        # the broker redelivers the dead bridge's unacknowledged swipes and everything queued
        # for its session; a kiosk re-sends from its journal whatever still has no verdict.
        deadline = time.time() + 30
        resent = 0
        while time.time() < deadline:
            if sum(len(k.results) for k in kiosks) >= total:
                break
            time.sleep(1.0)
            if sum(len(k.results) for k in kiosks) < total:
                resent += sum(k.resend_unanswered() for k in kiosks)
        for k in kiosks:
            missing = [s for s in k.sent if s not in k.results]
            assert not missing, "%s: no verdict for %d swipes" % (k.kiosk_id, len(missing))
            for _seq, got in k.results.items():
                assert got[0]["reason"] == "ok", got[0]
                assert len({r["txn"] for r in got}) == 1  # a repeated verdict is the same
        t = schema.transactions
        with engine.connect() as conn:
            n_swipes = conn.execute(select(func.count()).select_from(t).where(
                t.c.kind == "swipe")).scalar()
            n_keys = conn.execute(select(func.count(func.distinct(
                t.c.kiosk_id + ":" + func.cast(t.c.seq, schema.String)))).where(
                t.c.kind == "swipe")).scalar()
            n_decided = conn.execute(select(func.count()).select_from(schema.swipes)).scalar()
            paid = sum(1000000 - ledger.balance(conn, ledger.wallet(r)) for r in
                       [row[0] for row in conn.execute(select(schema.residents.c.id))])
        assert (n_swipes, n_keys, n_decided) == (total, total, total)
        assert paid == total * 700
        check = ledger.check(engine)
        assert check["ok"], check["problems"]
        print("answered at kill %d/%d, kiosk re-sends %d" % (answered_at_kill, total, resent))
    finally:
        for k in kiosks:
            k.close()
        if bridge.poll() is None:
            bridge.send_signal(signal.SIGTERM)
            try:
                bridge.wait(10)
            except Exception:
                bridge.kill()
        stop_process(broker)
