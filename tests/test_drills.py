"""Fault drills (issue 6, DESIGN.md 7): a whole site on loopback (a private Mosquitto with
the generated accounts and ACL, the bridge as a real process on SQLite, virtual kiosks
running the real firmware on the sim board), broken on purpose while residents tap. After
each: bridge.audit holds every tap against the database: nothing lost, nothing booked twice,
what a kiosk showed is what was booked, every tap showed something, the ledger checks."""
import asyncio
import json
import random
import time

import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import select

from bridge import audit, schema
from bridge.site import mosquitto_binary
from protocol import messages, reasons, signing, topics, utctime
from tests.brokers import wait_until

mosquitto_binary()  # no Mosquitto is a failure here, never a skip: `make test` installs it


@pytest.fixture
def make_site(tmp_path):
    sites = []

    def make(kiosks=4, residents=30, seed=1):
        site, cards = audit.drill_site(str(tmp_path / ("site%d" % len(sites))), kiosks, residents, seed)
        sites.append(site)
        site.start()
        return site, cards
    yield make
    for site in sites:
        site.stop()


def check(result, allow_no_verdict=True):
    print(audit.table(result))
    bad = audit.clean(result, allow_no_verdict)
    assert not bad, bad
    assert result["no_feedback"] == 0 and result["lost"] == 0 and result["double_booked"] == 0
    assert result["ledger_ok"]


def swipe_rows(site, kiosk):
    s = schema.swipes
    with site.engine.connect() as conn:
        return {q: (v, r, t) for q, v, r, t in conn.execute(
            select(s.c.seq, s.c.verdict, s.c.reason, s.c.txn_id).where(s.c.kiosk_id == kiosk))}


@pytest.mark.timeout(120)
def test_kill9_bridge_several_times_during_a_run(make_site):
    site, cards = make_site(kiosks=4)
    rng = random.Random(11)
    kills = []
    script = audit.drill_script(cards, site.kiosk_ids(), 72, 12, seed=11)
    # outages of 3-4.5 s: longer than the kiosk's verdict timeout, so taps in them show
    # "no verdict" and are settled later from the journal / the bridge's MQTT session
    fault = audit.kill_bridge(3, rng, 11, down_s=(3.0, 4.5), log=kills.append)
    fleet, left = asyncio.run(audit.run_fleet(site, script, [fault]))
    result = audit.audit(site.engine, fleet.taps, left)
    print("\n".join(kills))
    check(result)
    assert len(kills) == 3 and site.bridge_starts == 4
    assert result["no_verdict"] > 0, "no tap fell into an outage: the drill did not exercise redelivery"
    assert result["taps"] == 72 and result["booked"] > 0


@pytest.mark.timeout(120)
def test_broker_stopped_and_killed_mid_run(make_site):
    site, cards = make_site(kiosks=4)
    events = []
    script = audit.drill_script(cards, site.kiosk_ids(), 72, 14, seed=12)
    faults = [audit.restart_broker(3.0, down_s=2.0, kill=False, log=events.append),
              audit.restart_broker(9.0, down_s=2.0, kill=True, log=events.append)]
    fleet, left = asyncio.run(audit.run_fleet(site, script, faults))
    result = audit.audit(site.engine, fleet.taps, left)
    print("\n".join(events))
    check(result)
    assert len(events) == 2
    # the kiosks noticed: taps while the broker was down were accepted offline (or declined
    # locally at the offline limit) and booked later at their own time
    assert result["shown"].get("offline", 0) > 0
    assert result["offline_booked"] == result["shown"]["offline"]


@pytest.mark.timeout(90)
def test_power_cut_mid_journal_write(make_site):
    site, cards = make_site(kiosks=3)
    k1, k2 = site.kiosk_ids()[:2]
    cut1, cut2 = {}, {}
    script = audit.drill_script(cards, site.kiosk_ids(), 54, 9, seed=13)
    faults = [audit.power_cut(k1, 3.0, torn_bytes=5, seen=cut1),     # inside the header
              audit.power_cut(k2, 5.0, torn_bytes=60, seen=cut2)]    # inside the payload
    fleet, left = asyncio.run(audit.run_fleet(site, script, faults))
    result = audit.audit(site.engine, fleet.taps, left)
    check(result, allow_no_verdict=False)
    for cut, torn in ((cut1, 5), (cut2, 60)):
        kiosk = cut["kiosk"]
        assert cut["dropped"] == torn, cut          # the torn record was found and dropped
        assert cut["next_seq"] == cut["torn_seq"], cut  # its seq was never published: reused
        rows = swipe_rows(site, kiosk)
        after = [r for r in fleet.taps if r["kiosk"] == kiosk and r["event"] and r["event"].get("seq")
                 and r["event"]["seq"] >= cut["torn_seq"]]
        assert after, "no tap after the reboot at %s" % kiosk
        first = min(after, key=lambda r: r["event"]["seq"])
        assert first["event"]["seq"] == cut["torn_seq"]
        # booked normally (a reused seq would be refused as a replay and missing here)
        assert rows[first["event"]["seq"]][1] != reasons.REPLAY
        assert first["event"]["kind"] in ("approved", "declined")
    s = schema.swipes
    with site.engine.connect() as conn:
        assert conn.execute(select(s.c.seq).where(s.c.mac == "")).first() is None
    with site.engine.connect() as conn:
        t = schema.transactions
        assert conn.execute(select(t.c.id).where(t.c.card_uid == "0A0B0C0D")).first() is None


# --- rogue clients -------------------------------------------------------------------

class Client:
    def __init__(self, port, user, password, client_id):
        self.msgs, self.box = [], {}
        c = self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                 protocol=mqtt.MQTTv5)
        if user is not None:
            c.username_pw_set(user, password)
        c.on_connect = lambda cl, ud, flags, rc, props: self.box.setdefault("rc", rc)
        c.on_message = lambda cl, ud, msg: self.msgs.append((msg.topic, msg.payload))
        c.on_subscribe = lambda cl, ud, mid, rcs, props: self.box.setdefault("suback", rcs)
        c.on_publish = lambda cl, ud, mid, rc, props: self.box.setdefault("puback", []).append(rc)
        c.reconnect_delay_set(30, 60)
        c.connect("127.0.0.1", port)
        c.loop_start()
        wait_until(lambda: "rc" in self.box, 5)
        self.rc = self.box.get("rc")

    @property
    def ok(self):
        return self.rc is not None and not self.rc.is_failure

    def publish(self, topic, payload):
        n = len(self.box.get("puback", []))
        self.c.publish(topic, payload, qos=1)
        wait_until(lambda: len(self.box.get("puback", [])) > n, 3)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def rogue(site, a, b, key_a, key_b):
    """The attacks, against the live site. Returns what they observed."""
    seen = {}
    port = site.port
    sniffer = Client(port, "bridge", site.bridge_password, "drill-sniffer")  # a wire tap
    sniffer.c.subscribe(topics.ALL_SWIPES, qos=1)
    assert wait_until(lambda: any(t == topics.swipes(b) for t, _ in sniffer.msgs), 10), "no swipe of B to capture"
    captured = next(p for t, p in sniffer.msgs if t == topics.swipes(b))
    cap = json.loads(captured)

    # unknown account, no password, a kiosk's name with another kiosk's password
    for label, user, pw in (("unknown", "stranger", "x"), ("no_password", None, None),
                            ("wrong_password", a, signing.broker_password(key_b))):
        c = Client(port, user, pw, "rogue-" + label)
        seen[label] = c.rc
        assert not c.ok, (label, c.rc)
        c.close()

    ra = Client(port, a, signing.broker_password(key_a), "rogue-A")  # A's own account
    assert ra.ok
    ra.c.subscribe([(topics.results(b), 1), (topics.config(b), 1)])
    assert wait_until(lambda: "suback" in ra.box, 3)
    # A publishing as B: a well-formed swipe for B under B's topic, signed with A's key
    forged_b = messages.swipe(b, 900001, utctime.iso(time.time()), cap["uid"], "uid", cap["service"],
                              False, key_a)
    as_b = messages.encode("swipe", forged_b)
    ra.publish(topics.swipes(b), as_b)
    # A replaying B's captured swipe on B's topic (denied) and on its own (topic mismatch)
    ra.publish(topics.swipes(b), captured)
    ra.publish(topics.swipes(a), captured)
    # a forged MAC on A's own topic: a new seq, the MAC of another message
    bad = dict(messages.swipe(a, 900002, utctime.iso(time.time()), cap["uid"], "uid", "meal", False, key_a))
    bad["mac"] = cap["mac"]
    ra.publish(topics.swipes(a), json.dumps(bad).encode())
    # malformed, wrong shape, missing field, wrong type, oversize
    ra.publish(topics.swipes(a), b"{not json")
    ra.publish(topics.swipes(a), b"[1, 2, 3]")
    ra.publish(topics.swipes(a), json.dumps({"v": 1, "kiosk": a}).encode())
    wrong = dict(bad)
    wrong["seq"] = "900003"
    ra.publish(topics.swipes(a), json.dumps(wrong).encode())
    ra.publish(topics.swipes(a), json.dumps(dict(bad, pad="x" * 800)).encode())

    # someone with B's broker password (not its key) replays the captured swipe as B
    rb = Client(port, b, signing.broker_password(key_b), "rogue-B")
    assert rb.ok
    rb.publish(topics.swipes(b), captured)
    rb.publish(topics.swipes(b), captured)
    # ... and tries a new seq with the captured MAC
    rb.publish(topics.swipes(b), json.dumps(dict(cap, seq=cap["seq"] + 100000)).encode())
    time.sleep(1.5)  # results of the replays reach B's topic, never A
    seen["a_got"] = list(ra.msgs)
    seen["sniffed"] = [p for t, p in sniffer.msgs]
    seen["captured"] = cap
    seen["as_b"] = as_b
    for c in (ra, rb, sniffer):
        c.close()
    return seen


@pytest.mark.timeout(120)
def test_rogue_clients_are_refused_with_a_logged_reason(make_site):
    from bridge import registry
    site, cards = make_site(kiosks=2)
    a, b = site.kiosk_ids()
    key_a, key_b = registry.kiosk_key(site.engine, a), registry.kiosk_key(site.engine, b)
    script = audit.drill_script(cards, [a, b], 40, 8, seed=14)
    seen = {}

    async def attack(site_, fleet):
        await asyncio.sleep(1.0)
        seen.update(await asyncio.to_thread(rogue, site_, a, b, key_a, key_b))

    fleet, left = asyncio.run(audit.run_fleet(site, script, [attack]))
    assert site.bridge.poll() is None, "the bridge died"
    result = audit.audit(site.engine, fleet.taps, left)
    check(result, allow_no_verdict=False)  # the site kept serving during the attack

    # broker: A cannot publish as B (not delivered) nor read B's results or config
    assert seen["as_b"] not in seen["sniffed"]
    assert seen["a_got"] == [], seen["a_got"]
    with site.engine.connect() as conn:
        r = schema.refusals
        refused = [(k, q, why, field) for k, q, why, field in conn.execute(
            select(r.c.kiosk_id, r.c.seq, r.c.reason, r.c.field).order_by(r.c.id))]
        s = schema.swipes
        assert conn.execute(select(s.c.seq).where(s.c.seq >= 900000)).first() is None  # nothing booked
    assert not [x for x in refused if x[1] == 900001], "A's swipe as B reached the bridge"
    whys = [x[2] for x in refused]
    print(refused)
    cap = seen["captured"]
    expect = [(a, cap["seq"], reasons.TOPIC_MISMATCH),      # B's swipe replayed on A's topic
              (a, 900002, reasons.BAD_MAC),                 # forged MAC
              (a, None, reasons.MALFORMED_JSON),
              (a, None, reasons.NOT_OBJECT),
              (a, None, reasons.MISSING_FIELD),
              (a, None, reasons.WRONG_TYPE),
              (a, None, reasons.TOO_LARGE),
              (b, cap["seq"] + 100000, reasons.BAD_MAC)]    # captured MAC on a new seq
    for kiosk, seq, why in expect:
        assert any(x[0] == kiosk and x[2] == why and (seq is None or x[1] == seq) for x in refused), \
            (kiosk, seq, why, refused)
    assert len(refused) == len(expect), refused
    assert whys.count(reasons.BAD_MAC) == 2
    # the replays of B's captured swipe: booked once, B's resident charged once
    rows = swipe_rows(site, b)
    assert cap["seq"] in rows
    t = schema.transactions
    with site.engine.connect() as conn:
        n = conn.execute(select(t.c.id).where(t.c.kiosk_id == b, t.c.seq == cap["seq"])).all()
    assert len(n) == (1 if rows[cap["seq"]][2] is not None else 0)
    # every refusal and each replay is in the bridge's log with its reason
    log = open(site.folder + "/bridge.log").read()
    for why in set(whys):
        assert "event=refused" in log and ("reason=%s" % why) in log, why
    assert "event=duplicate kiosk=%s seq=%d" % (b, cap["seq"]) in log
    assert log.count("event=duplicate kiosk=%s seq=%d " % (b, cap["seq"])) >= 2
    # the broker logged the refused logins
    broker_log = open(site.folder + "/mosquitto.log").read()
    assert "not authorised" in broker_log.lower() or "bad user name or password" in broker_log.lower()
