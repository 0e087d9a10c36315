"""The live operations page: today's figures from the real ledger, kiosk states from the
real broker's retained state topics, served over HTTP."""
import json
import time
import urllib.request

from bridge import cockpit, reports, settle
from protocol import messages, topics, utctime
from tests.brokers import mosquitto, seed_site


def _swipe(info, kiosk, seq, card):
    msg = messages.swipe(kiosk, seq, utctime.iso(time.time()), info["cards"][card], "uid", "meal", False,
                         info["keys"][kiosk])
    return topics.swipes(kiosk), messages.encode("swipe", msg)


def test_snapshot_matches_the_ledger_and_page_serves_it(tmp_path):
    engine, info = seed_site(tmp_path / "site.db", kiosks=(("K1", "meal"), ("K2", "meal")))
    items = [_swipe(info, "K1", 1, "young"), _swipe(info, "K2", 1, "old"), _swipe(info, "K1", 2, "poor"),
             _swipe(info, "K2", 2, "disabled")]
    outcomes = settle.settle_batch(engine, items)
    assert len(outcomes) == 4
    snap = cockpit.snapshot(engine)
    assert snap["orders"] == 3                      # 'poor' has no money: declined
    assert snap["declines"] == [{"reason": "insufficient_funds", "text": "Not enough money", "count": 1}]
    report = reports.report(engine, "daily", snap["day"])
    assert snap["payers"]["residents"] == sum(fen for *_, payer, _n, fen in report if payer == "resident")
    assert sum(snap["payers"].values()) == snap["fen_total"] == 3 * 1000  # 3 meals at 10 yuan
    assert [k["kiosk"] for k in snap["kiosks"]] == ["K1", "K2"]
    assert {t["resident"] for t in snap["latest"]} == {"young", "old", "disabled"}

    server = cockpit.serve(engine, port=0)
    try:
        base = "http://127.0.0.1:%d" % server.server_address[1]
        page = urllib.request.urlopen(base + "/").read().decode()
        assert "live operations" in page and "api/today" in page
        data = json.loads(urllib.request.urlopen(base + "/api/today").read())
        assert data["orders"] == 3
    finally:
        server.shutdown()


def test_kiosk_states_come_from_the_broker(tmp_path):
    engine, info = seed_site(tmp_path / "site.db", kiosks=(("K1", "meal"), ("K2", "meal")))
    import paho.mqtt.client as mqtt
    with mosquitto(tmp_path) as port:
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        pub.connect("127.0.0.1", port)
        pub.loop_start()
        pub.publish(topics.state("K1"), json.dumps({"v": 1, "kiosk": "K1", "status": "online", "journal": 3}),
                    qos=1, retain=True).wait_for_publish(5)
        pub.publish(topics.state("K2"), json.dumps({"v": 1, "kiosk": "K2", "status": "offline"}),
                    qos=1, retain=True).wait_for_publish(5)
        states = cockpit.KioskStates("mqtt://127.0.0.1:%d" % port)
        try:
            deadline = time.time() + 5
            while len(states.states) < 2 and time.time() < deadline:
                time.sleep(0.05)
            kiosks = {k["kiosk"]: k for k in cockpit.snapshot(engine, states.states)["kiosks"]}
        finally:
            states.stop()
            pub.loop_stop()
    assert kiosks["K1"]["status"] == "online" and kiosks["K1"]["journal"] == 3
    assert kiosks["K2"]["status"] == "offline"
