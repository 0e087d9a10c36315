# host-only. Settlement through a real Mosquitto and a real SQLite file: every verdict
# path of issue 5, duplicates booked once, and the ledger invariants after every test.
import json
import os
import time

import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import func, select

from bridge import cli, ledger, localtime, registry, reports, schema
from bridge.serve import Bridge
from protocol import messages, reasons, signing, topics, utctime

from tests.brokers import Kiosk, seed_site, start_mosquitto, stop_process

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def broker(tmp_path):
    port, proc = start_mosquitto(tmp_path)
    yield port
    stop_process(proc)


@pytest.fixture
def site(tmp_path, broker):
    engine, info = seed_site(tmp_path / "aixin.db")
    bridge = Bridge(engine, "mqtt://127.0.0.1:%d" % broker, poll_s=0.2).start()
    kiosk = Kiosk(broker, "K1", info["keys"]["K1"])
    info.update(engine=engine, bridge=bridge, kiosk=kiosk, port=broker)
    yield info
    kiosk.close()
    bridge.stop()
    check = ledger.check(engine)
    assert check["ok"], check["problems"]


class Listener:
    """Collects messages on a topic filter."""

    def __init__(self, port, topic_filter):
        self.messages = []
        c = self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        c.on_message = lambda cl, ud, m: self.messages.append((m.topic, m.payload, m.retain))
        c.connect("127.0.0.1", port)
        c.subscribe(topic_filter, qos=1)
        c.loop_start()
        time.sleep(0.2)

    def wait(self, n=1, timeout=5):
        deadline = time.time() + timeout
        while time.time() < deadline and len(self.messages) < n:
            time.sleep(0.01)
        return self.messages

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def count(engine, table, *where):
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table).where(*where)).scalar()


def balance(engine, resident_id):
    with engine.connect() as conn:
        return ledger.balance(conn, ledger.wallet(resident_id))


def wait_refusal(engine, reason, timeout=5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if count(engine, schema.refusals, schema.refusals.c.reason == reason):
            return True
        time.sleep(0.02)
    return False


def test_approved_books_split_and_signs_result(site):
    settled = Listener(site["port"], topics.settlements("M1"))
    k = site["kiosk"]
    msg = k.swipe(site["cards"]["young"])
    res = k.wait(msg["seq"])
    assert res is not None
    assert signing.verify("result", res, site["keys"]["K1"])
    messages.validate("result", res)
    assert (res["verdict"], res["reason"]) == ("approved", reasons.OK)
    # default rules: meal 10.00 yuan, age 60-79 get 3.00 from civil affairs
    assert (res["resident_pays"], res["subsidy_pays"], res["balance"]) == (700, 300, 4300)
    assert res["txn"].startswith("T") and not res["flagged"]
    got = settled.wait(1)
    rec = json.loads(got[0][1])
    assert rec["txn"] == res["txn"] and rec["funds"] == [{"fund": "civil_affairs", "fen": 300}]
    with site["engine"].connect() as conn:
        assert ledger.balance(conn, ledger.merchant("M1")) == 1000
        assert ledger.balance(conn, ledger.fund("civil_affairs")) == -300
    settled.close()


def test_group_80_plus_gets_more_subsidy(site):
    k = site["kiosk"]
    res = k.wait(k.swipe(site["cards"]["old"])["seq"])
    assert (res["resident_pays"], res["subsidy_pays"]) == (300, 700)


@pytest.mark.parametrize("who,reason", [("poor", reasons.INSUFFICIENT_FUNDS),
                                        ("blocked", reasons.CARD_BLOCKED),
                                        ("unknown", reasons.UNKNOWN_CARD)])
def test_declines_book_nothing(site, who, reason):
    engine = site["engine"]
    card = {"poor": site["cards"]["poor"], "blocked": site["cards"]["young"],
            "unknown": "DEADBEEF"}[who]
    if who == "blocked":
        registry.set_card_status(engine, card, True)
    before = count(engine, schema.transactions)
    k = site["kiosk"]
    res = k.wait(k.swipe(card)["seq"])
    assert (res["verdict"], res["reason"]) == ("declined", reason)
    assert signing.verify("result", res, site["keys"]["K1"])
    assert res["txn"] is None and res["resident_pays"] == 0
    assert count(engine, schema.transactions) == before


def test_unknown_kiosk_refused_unbooked(site):
    engine = site["engine"]
    ghost = Kiosk(site["port"], "GHOST", os.urandom(32))
    before = count(engine, schema.transactions)
    msg = ghost.swipe(site["cards"]["young"])
    assert wait_refusal(engine, reasons.UNKNOWN_KIOSK)
    assert ghost.wait(msg["seq"], timeout=0.5) is None  # nothing signed for a stranger
    assert count(engine, schema.transactions) == before
    ghost.close()


def test_bad_mac_refused_unbooked(site):
    engine = site["engine"]
    k = site["kiosk"]
    before = count(engine, schema.transactions)
    msg = k.swipe(site["cards"]["young"], key=os.urandom(32))
    assert wait_refusal(engine, reasons.BAD_MAC)
    assert k.wait(msg["seq"], timeout=0.3) is None
    assert count(engine, schema.transactions) == before
    assert balance(engine, "R000001") == 5000
    # the seq is not burnt: the genuine swipe with that seq still settles
    res = k.wait(k.swipe(site["cards"]["young"], seq=msg["seq"])["seq"])
    assert res["reason"] == reasons.OK


def test_malformed_and_mismatched_messages_refused(site):
    engine = site["engine"]
    k = site["kiosk"]
    k.publish(b"{not json")
    assert wait_refusal(engine, reasons.MALFORMED_JSON)
    k.publish(b"x" * 5000)
    assert wait_refusal(engine, reasons.TOO_LARGE)
    msg = k.swipe(site["cards"]["young"], send=False)
    k.publish(msg, topic=topics.swipes("K2"))
    assert wait_refusal(engine, reasons.TOPIC_MISMATCH)
    bad = dict(msg, seq="7")
    k.publish(bad)
    assert wait_refusal(engine, reasons.WRONG_TYPE)
    assert count(engine, schema.transactions, schema.transactions.c.kind == "swipe") == 0


def test_duplicates_get_same_verdict_and_book_once(site):
    engine = site["engine"]
    k = site["kiosk"]
    msg = k.swipe(site["cards"]["young"])
    for _ in range(4):
        k.publish(msg)
    res = k.wait(msg["seq"], count=5)
    assert res is not None
    assert len({json.dumps(r, sort_keys=True) for r in k.results[msg["seq"]]}) == 1
    assert count(engine, schema.transactions, schema.transactions.c.kind == "swipe") == 1
    assert balance(engine, "R000001") == 4300


def test_replay_same_seq_other_content(site):
    engine = site["engine"]
    k = site["kiosk"]
    first = k.swipe(site["cards"]["young"])
    assert k.wait(first["seq"])["reason"] == reasons.OK
    k.swipe(site["cards"]["old"], seq=first["seq"])  # validly signed, same seq, new content
    res = k.wait(first["seq"], count=2)
    assert (res["verdict"], res["reason"]) == ("declined", reasons.REPLAY)
    assert count(engine, schema.transactions, schema.transactions.c.kind == "swipe") == 1
    assert balance(engine, "R000002") == 5000
    # and the original still gets its stored verdict
    k.publish(first)
    assert k.wait(first["seq"], count=3)["reason"] == reasons.OK


def test_daily_cap(site):
    k = site["kiosk"]
    card = site["cards"]["young"]
    got = [k.wait(k.swipe(card)["seq"])["reason"] for _ in range(3)]
    assert got == [reasons.OK, reasons.OK, reasons.DAILY_CAP]  # meal: 2 a day
    assert balance(site["engine"], "R000001") == 5000 - 2 * 700
    # reversing one frees the cap again
    h = reports.history(site["engine"], card)
    ledger.reverse(site["engine"], h["transactions"][0]["txn"])
    assert k.wait(k.swipe(card)["seq"])["reason"] == reasons.OK


def _in_service_since(engine, kiosk_id, seconds_ago):
    """Backdate a kiosk's registration: an offline swipe before it would be impossible."""
    with engine.begin() as conn:
        conn.execute(schema.kiosks.update().where(schema.kiosks.c.id == kiosk_id).values(
            created_at=int(time.time()) - seconds_ago))


def test_offline_swipe_booked_at_its_own_time(site):
    engine = site["engine"]
    k = site["kiosk"]
    _in_service_since(engine, "K1", 30 * 86400)
    when = int(time.time()) - 3 * 86400
    res = k.wait(k.swipe(site["cards"]["young"], ts=utctime.iso(when), offline=True)["seq"])
    assert (res["verdict"], res["reason"], res["offline"], res["flagged"]) == \
        ("approved", reasons.OK, True, False)
    t = schema.transactions
    with engine.connect() as conn:
        row = conn.execute(select(t.c.ts, t.c.offline, t.c.local_day).where(
            t.c.kind == "swipe")).first()
    assert row.ts == when and row.offline


def test_offline_would_decline_is_flagged_not_dropped(site):
    engine = site["engine"]
    card = site["cards"]["young"]
    registry.set_card_status(engine, card, True)
    k = site["kiosk"]
    res = k.wait(k.swipe(card, ts=utctime.iso(time.time() - 600), offline=True)["seq"])
    assert (res["verdict"], res["reason"], res["flagged"], res["offline"]) == \
        ("declined", reasons.CARD_BLOCKED, True, True)
    assert res["txn"] is not None and res["resident_pays"] == 0
    t = schema.transactions
    assert count(engine, t, t.c.kind == "flagged", t.c.flagged.is_(True)) == 1
    with engine.connect() as conn:
        assert ledger.balance(conn, ledger.SUSPENSE) == -1000
        assert ledger.balance(conn, ledger.merchant("M1")) == 1000
    assert balance(engine, "R000001") == 5000  # the wallet is not touched
    # offline unknown card: flagged too
    res = k.wait(k.swipe("0102030405060708090A", offline=True,
                         ts=utctime.iso(time.time() - 60))["seq"])
    assert res["flagged"] and res["reason"] == reasons.UNKNOWN_CARD


def test_offline_swipe_with_an_impossible_time_is_booked_now_and_flagged(site, tmp_path,
                                                                          capsys):
    """A board that lost power offline restarts at 2000-01-01 (no RTC battery): its
    offline swipes must not land on that day, nor one ahead of the bridge's clock."""
    engine = site["engine"]
    k = site["kiosk"]
    card = site["cards"]["young"]
    t = schema.transactions
    cases = [("2000-01-01T00:05:00Z", "unset clock"),
             (utctime.iso(time.time() + 3600), "an hour ahead")]
    for ts, _why in cases:
        before = int(time.time())
        res = k.wait(k.swipe(card, ts=ts, offline=True)["seq"])
        assert (res["verdict"], res["reason"], res["flagged"], res["offline"]) == \
            ("declined", reasons.CLOCK_SKEW, True, True), _why
        assert res["txn"] is not None and res["resident_pays"] == 0
        with engine.connect() as conn:
            row = conn.execute(select(t.c.ts, t.c.kind, t.c.local_day, t.c.memo).where(
                t.c.id == ledger.parse_txn(res["txn"]))).first()
        assert row.kind == "flagged" and before <= row.ts <= int(time.time()), _why
        assert row.local_day == localtime.day_month(row.ts, "Asia/Shanghai")[0], _why
        assert ts in row.memo
    with engine.connect() as conn:  # the merchant is paid from suspense, the wallet untouched
        assert ledger.balance(conn, ledger.SUSPENSE) == -2000
    assert balance(engine, "R000001") == 5000
    # the operator's history shows why, with the kiosk's own time
    capsys.readouterr()
    assert cli.main(["--db", str(tmp_path / "aixin.db"), "history", card]) == 0
    out = capsys.readouterr().out
    assert out.count("FLAGGED:clock_skew") == 2 and "stamped 2000-01-01T00:05:00Z" in out
    # Both count as today's uses (meals: 2 a day), like any flagged swipe. Inside the slack
    # (a kiosk clock a minute off) a swipe is still booked at its own time.
    ts = int(time.time()) + 60
    res = k.wait(k.swipe(site["cards"]["old"], ts=utctime.iso(ts), offline=True)["seq"])
    assert (res["verdict"], res["reason"], res["flagged"]) == ("approved", reasons.OK, False)
    with engine.connect() as conn:
        assert conn.execute(select(t.c.ts).where(
            t.c.id == ledger.parse_txn(res["txn"]))).scalar() == ts


def test_block_republishes_retained_config(site):
    engine = site["engine"]
    k = site["kiosk"]
    deadline = time.time() + 5
    while not k.configs and time.time() < deadline:
        time.sleep(0.02)
    first = k.configs[-1]
    messages.validate("config", first)
    assert first["price"] == 1000 and first["service"] == "meal"
    assert site["cards"]["young"] in first["allow"]
    registry.set_card_status(engine, site["cards"]["young"], True)
    deadline = time.time() + 5
    while time.time() < deadline and site["cards"]["young"] not in k.configs[-1]["deny"]:
        time.sleep(0.02)
    cfg = k.configs[-1]
    assert site["cards"]["young"] in cfg["deny"]
    assert cfg["lists_version"] > first["lists_version"]
    # retained: a kiosk connecting later still gets it
    late = Listener(site["port"], topics.config("K1"))
    got = late.wait(1)
    assert got and got[0][2] and site["cards"]["young"] in json.loads(got[0][1])["deny"]
    late.close()


def test_bridge_state_retained_online(site):
    got = Listener(site["port"], topics.BRIDGE_STATE).wait(1)
    assert got and json.loads(got[0][1])["status"] == "online" and got[0][2]


def test_provision_rotates_key_and_refuses_old_seqs(site):
    engine = site["engine"]
    k = site["kiosk"]
    for _ in range(3):
        k.wait(k.swipe(site["cards"]["old"])["seq"])
    key, seq_base = registry.provision_kiosk(engine, "K1")
    assert seq_base == 4 and key != site["keys"]["K1"]
    assert registry.kiosk_key(engine, "K1") == key
    # the old key no longer verifies
    k.swipe(site["cards"]["old"], seq=10)
    assert wait_refusal(engine, reasons.BAD_MAC)
    # a new-key swipe below seq_base is stale
    k.swipe(site["cards"]["old"], seq=2, key=key)
    assert k.wait(2, count=2)["reason"] == reasons.STALE
    k.key = key
    res = k.wait(k.swipe(site["cards"]["young"], seq=seq_base)["seq"])
    assert res["reason"] == reasons.OK and signing.verify("result", res, key)


def test_reports_per_merchant_service_fund(site):
    engine = site["engine"]
    k = site["kiosk"]
    k.wait(k.swipe(site["cards"]["young"])["seq"])
    k.wait(k.swipe(site["cards"]["old"])["seq"])
    rows = reports.report(engine, "daily")
    by_payer = {r[3]: (r[4], r[5]) for r in rows}
    assert by_payer["resident"] == (2, 700 + 300)
    assert by_payer["fund:civil_affairs"] == (2, 300 + 500)
    assert by_payer["fund:village"] == (1, 200)
    monthly = reports.report(engine, "monthly")
    assert sum(r[5] for r in monthly) == 2000
    assert "period,merchant,service,payer,taps,fen" in reports.to_csv(rows)


class NoAckBridge(Bridge):
    """A bridge that commits and answers but dies before acknowledging to the broker."""

    def __init__(self, *a, **kw):
        Bridge.__init__(self, *a, **kw)
        self._client.ack = lambda mid, qos: None


def test_broker_redelivery_after_crash_books_once(tmp_path, broker):
    engine, info = seed_site(tmp_path / "aixin.db")
    url = "mqtt://127.0.0.1:%d" % broker
    first = NoAckBridge(engine, url, client_id="bridge-x", poll_s=0.2).start()
    k = Kiosk(broker, "K1", info["keys"]["K1"])
    sent = [k.swipe(info["cards"]["young"]), k.swipe(info["cards"]["old"]),
            k.swipe(info["cards"]["poor"])]
    for m in sent:
        assert k.wait(m["seq"]) is not None
    assert first.settled == 3
    # crash: the network thread stops and the socket drops, no DISCONNECT, no acks sent
    first.stopping.set()
    first._client.loop_stop()
    first._client.socket().close()
    time.sleep(0.3)
    second = Bridge(engine, url, client_id="bridge-x", poll_s=0.2).start()
    try:
        for m in sent:  # the broker redelivered all three; each got its stored verdict again
            assert k.wait(m["seq"], count=2) is not None, m["seq"]
            a, b = k.results[m["seq"]][:2]
            assert a == b
        assert second.settled >= 3
        t = schema.transactions
        assert count(engine, t, t.c.kind == "swipe") == 2  # young and old; poor declined
        assert count(engine, schema.swipes) == 3
        check = ledger.check(engine)
        assert check["ok"], check["problems"]
    finally:
        k.close()
        second.stop()


class BrokenAfterCommitBridge(Bridge):
    """A bridge with a bug between the commit and the publishing of the results."""

    def _topic(self, build, ident):
        raise RuntimeError("a bug after the commit")


def test_an_error_after_the_commit_stops_the_bridge_and_loses_nothing(tmp_path, broker):
    engine, info = seed_site(tmp_path / "aixin.db")
    url = "mqtt://127.0.0.1:%d" % broker
    first = BrokenAfterCommitBridge(engine, url, client_id="bridge-y", poll_s=0.2).start()
    k = Kiosk(broker, "K1", info["keys"]["K1"])
    try:
        m = k.swipe(info["cards"]["young"])
        deadline = time.time() + 5
        while not first.failed:
            assert time.time() < deadline, "the bridge did not report its failure"
            time.sleep(0.05)
        first._worker.join(5)
        assert not first._worker.is_alive()  # stopped, not running half-working
        assert k.wait(m["seq"], timeout=0.5) is None
        first.stop()
        second = Bridge(engine, url, client_id="bridge-y", poll_s=0.2).start()
        try:  # the broker delivers the unacknowledged swipe again; the stored verdict answers
            assert k.wait(m["seq"]) is not None
            t = schema.transactions
            assert count(engine, t, t.c.kind == "swipe") == 1
            assert ledger.check(engine)["ok"]
        finally:
            second.stop()
    finally:
        k.close()


def test_aixin_serve_exits_non_zero_with_advice_when_the_bridge_fails(tmp_path, broker,
                                                                      monkeypatch, capsys):
    import gc
    import logging
    import signal
    import threading

    from bridge import cli
    engine, info = seed_site(tmp_path / "aixin.db")
    monkeypatch.setattr(Bridge, "_topic", BrokenAfterCommitBridge._topic)
    k = Kiosk(broker, "K1", info["keys"]["K1"])
    swiper = threading.Timer(1.0, lambda: k.swipe(info["cards"]["young"]))
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    verdicts = logging.getLogger("aixin.verdicts")
    logs = logging.root.handlers[:], verdicts.handlers[:], verdicts.propagate
    swiper.start()
    try:
        code = cli.main(["--db", str(tmp_path / "aixin.db"), "serve", "--broker",
                         "mqtt://127.0.0.1:%d" % broker, "--client-id", "cli-y"])
    finally:
        swiper.cancel()
        signal.signal(signal.SIGTERM, handlers[0])
        signal.signal(signal.SIGINT, handlers[1])
        gc.unfreeze()  # aixin serve froze this test process's objects (tune_gc)
        logging.root.handlers[:], verdicts.handlers[:], verdicts.propagate = logs
        k.close()
    out, err = capsys.readouterr()
    assert code == 1
    assert "start `aixin serve` again" in err and "Traceback" not in err
