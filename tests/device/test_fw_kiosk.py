# The tap end to end on the device side (DESIGN.md 4), under CPython and MicroPython:
# tap -> signed swipe -> result -> feedback, for approved, every decline reason and a
# timeout; offline acceptance and upload in order; config persistence. The broker is the
# in-memory one from test_fw_broker; a few lines here play the bridge.
import binascii
import os

from devtest import is_micropython
from firmware import clock, config
from firmware.board import SimBoard
from firmware.journal import Journal
from firmware.kiosk import Kiosk
from firmware.mqtt import MQTTClient
from protocol import messages, reasons, signing, topics, utctime
from test_fw_broker import FakeBroker, in_task_test, settle, stop_tasks

KEY_HEX = "6b" * 32
KEY = bytes([0x6B] * 32)
KIOSK = "K1"
UID_A = b"\xed\x0b\xa9\x96"
UID_B = b"\x04\x11\x22\x33\x44\x55\x66"


class Card:
    def __init__(self, uid, sak=0x08):
        self.uid = uid
        self.sak = sak


class FakeReader:
    def __init__(self):
        self.cards = []
        self.fault = False

    def poll(self):
        if self.fault:
            raise OSError("no answer from the reader")
        return self.cards.pop(0) if self.cards else None


class Bridge:
    """Plays the bridge on the fake broker: verifies each swipe, answers with decide()."""

    def __init__(self, broker):
        self.broker = broker
        self.swipes = []
        self.decide = lambda m: ("approved", reasons.OK, 350, 650, 1200, "")
        self.silent = False
        self.forge = False
        broker.hooks.append(self._on_publish)

    def _on_publish(self, topic, payload, flags):
        if topics.parse(topic) != ("swipes", KIOSK):
            return
        msg = messages.decode("swipe", payload)
        assert signing.verify("swipe", msg, KEY)
        self.swipes.append(msg)
        if self.silent:
            return
        verdict, reason, pays, sub, bal, text = self.decide(msg)
        res = messages.result(KIOSK, msg["seq"], verdict, reason, pays, sub, bal, text,
                              b"wrong key" if self.forge else KEY, offline=msg["offline"])
        self.broker.publish(topics.results(KIOSK), messages.encode("result", res))


def _dir(name):
    if is_micropython():
        d = "/" + name
    else:
        import tempfile
        d = os.path.join(tempfile.gettempdir(), "fwk-%d-%s" % (os.getpid(), name))
    try:
        os.mkdir(d)
    except OSError:
        pass
    for f in ("journal.bin", "journal.bin.new", "remote_config.json"):
        try:
            os.remove(d + "/" + f)
        except OSError:
            pass
    return d


def make(name, broker, **extra):
    cfg = {"kiosk": KIOSK, "key": KEY_HEX, "service": "lunch", "verdict_timeout_ms": 300,
           "upload_ms": 20, "poll_ms": 5, "heartbeat_s": 3600, "suppress_s": 2,
           "offline": {"max_per_card_per_day": 1, "max_taps": 50}}
    for k in extra:
        cfg[k] = extra[k]
    config.prepare(cfg)
    d = _dir(name)
    clock.source = "host"
    board = SimBoard()
    reader = FakeReader()
    journal = Journal(d + "/journal.bin")
    mqtt = MQTTClient(KIOSK, broker.open_stream, backoff_min_ms=10, backoff_max_ms=50,
                      log=lambda t: None)
    k = Kiosk(cfg, board, reader, journal, mqtt, config.Store(d), log=lambda t: None)
    return k, board, reader


async def started(k):
    tasks = k.start()
    assert await k.mqtt.wait_connected(1000)
    await settle(20)
    return tasks


async def finish(k, tasks):
    k.stop()
    await stop_tasks(tasks)


@in_task_test
async def test_approved_shows_paid_amount_and_balance():
    b = FakeBroker()
    br = Bridge(b)
    k, board, _ = make("a", b)
    tasks = await started(k)
    ev = await k.tap(Card(UID_A))
    assert ev["kind"] == "approved" and ev["colour"] == "green"
    assert ev["reason"] == reasons.OK and ev["pays"] == 350 and ev["balance"] == 1200
    assert "Paid 3.50" in ev["lines"] and "Left 12.00" in ev["lines"]
    sw = br.swipes[0]
    assert sw["uid"] == "ED0BA996" and sw["seq"] == 1 and sw["service"] == "lunch"
    assert sw["offline"] is False and sw["auth"] == "uid"
    assert k.journal.depth() == 0  # retired on the verdict
    assert [e["kind"] for e in board.events] == ["reading", "approved"]
    await finish(k, tasks)


@in_task_test
async def test_every_decline_reason_is_shown_red_with_its_text():
    b = FakeBroker()
    br = Bridge(b)
    k, board, _ = make("d", b, suppress_s=0)
    tasks = await started(k)
    for code in reasons.RESULT_REASONS:
        if code == reasons.OK:
            continue
        br.decide = lambda m, code=code: ("declined", code, 0, 0, 80, "")
        ev = await k.tap(Card(UID_A))
        assert ev["kind"] == "declined", code
        assert ev["reason"] == code and ev["colour"] == "red"
        assert ev["text"] == reasons.display(code)
        assert ev["pays"] is None and ev["balance"] == 80
    assert k.journal.depth() == 0
    seqs = [m["seq"] for m in br.swipes]
    assert seqs == list(range(1, len(seqs) + 1))
    await finish(k, tasks)


@in_task_test
async def test_no_verdict_in_time_keeps_the_swipe_and_settles_later():
    b = FakeBroker()
    br = Bridge(b)
    br.silent = True
    k, board, _ = make("t", b, resend_ms=100)
    tasks = await started(k)
    t0 = clock.ticks_ms()
    ev = await k.tap(Card(UID_A))
    assert clock.ticks_diff(clock.ticks_ms(), t0) >= 290
    assert ev["kind"] == "no_verdict" and ev["reason"] == reasons.NO_VERDICT
    assert k.journal.pending() == [1]
    br.silent = False
    await settle(300)  # resend_ms passed: the uploader sends it again, the verdict retires it
    assert k.journal.depth() == 0
    assert [m["seq"] for m in br.swipes][:2] == [1, 1]
    await finish(k, tasks)


@in_task_test
async def test_forged_result_is_ignored():
    b = FakeBroker()
    br = Bridge(b)
    br.forge = True
    k, board, _ = make("f", b)
    tasks = await started(k)
    ev = await k.tap(Card(UID_A))
    assert ev["kind"] == "no_verdict"
    assert k.bad_results == 1 and k.journal.pending() == [1]
    await finish(k, tasks)


@in_task_test
async def test_same_card_suppressed_within_window():
    b = FakeBroker()
    br = Bridge(b)
    k, board, _ = make("s", b)
    tasks = await started(k)
    assert (await k.tap(Card(UID_A)))["kind"] == "approved"
    assert await k.tap(Card(UID_A)) is None
    assert (await k.tap(Card(UID_B)))["kind"] == "approved"
    assert len(br.swipes) == 2
    await finish(k, tasks)


@in_task_test
async def test_tap_loop_polls_reader_and_reports_a_fault():
    b = FakeBroker()
    Bridge(b)
    k, board, reader = make("r", b)
    tasks = await started(k)
    reader.cards.append(Card(UID_A))
    await settle(100)
    assert board.events[-1]["kind"] == "approved"
    reader.fault = True
    await settle(50)
    assert board.events[-1]["kind"] == "fault"
    assert board.events[-1]["reason"] == reasons.READER_FAULT
    await finish(k, tasks)


@in_task_test
async def test_offline_accepts_from_lists_and_limits_then_uploads_in_order():
    b = FakeBroker()
    br = Bridge(b)
    k, board, _ = make("o", b, suppress_s=0)
    tasks = await started(k)
    deny = "04AABBCCDDEEFF"
    cfgmsg = {"kiosk": KIOSK, "merchant": "M1", "service": "lunch", "price": 1000,
              "lists_version": 3, "deny": [deny], "allow": [], "clock": utctime.iso(clock.now()),
              "offline": {"max_per_card_per_day": 2, "max_taps": 100}}
    b.publish(topics.config(KIOSK), messages.encode("config", cfgmsg), retain=True)
    await settle()
    assert k.remote["lists_version"] == 3
    b.up = False
    b.kill()
    await settle()
    assert not k.mqtt.connected
    uids = [bytes([4, 1, 2, 3, i]) + b"\x00\x00" for i in range(5)]
    for u in uids:
        ev = await k.tap(Card(u))
        assert ev["kind"] == "offline" and ev["reason"] == reasons.OFFLINE_ACCEPTED
    assert (await k.tap(Card(uids[0])))["kind"] == "offline"  # 2 a day allowed
    ev = await k.tap(Card(uids[0]))
    assert ev["kind"] == "declined" and ev["reason"] == reasons.OFFLINE_LIMIT
    ev = await k.tap(Card(binascii.unhexlify(deny)))
    assert ev["kind"] == "declined" and ev["reason"] == reasons.CARD_BLOCKED
    assert k.journal.pending() == [1, 2, 3, 4, 5, 6]
    assert br.swipes == []
    b.up = True
    await settle(300)
    assert k.mqtt.connected
    assert [m["seq"] for m in br.swipes] == [1, 2, 3, 4, 5, 6]  # in order, none twice
    assert all(m["offline"] for m in br.swipes)
    assert k.journal.depth() == 0
    # The retained config survived on flash: a reboot with no broker still has the lists.
    k2 = Kiosk(k.cfg, SimBoard(), FakeReader(), Journal(k.journal.path),
               MQTTClient(KIOSK, b.open_stream), config.Store(k.store.path.rsplit("/", 1)[0]),
               log=lambda t: None)
    assert k2.remote["lists_version"] == 3 and deny in k2._deny
    k2.journal.close()
    await finish(k, tasks)


@in_task_test
async def test_state_heartbeat_and_will():
    b = FakeBroker()
    Bridge(b)
    k, board, _ = make("h", b)
    tasks = await started(k)
    st = messages.decode("state", b.retained[topics.state(KIOSK)])
    assert st["status"] == "online" and st["journal"] == 0 and "fw" in st
    b.up = False
    b.kill()
    await settle()
    st = messages.decode("state", b.retained[topics.state(KIOSK)])
    assert st["status"] == "offline"
    await finish(k, tasks)


@in_task_test
async def test_reboot_uploads_unsettled_swipes_and_continues_the_seq():
    b = FakeBroker()
    br = Bridge(b)
    br.silent = True
    k, board, _ = make("b", b, suppress_s=0)
    tasks = await started(k)
    await k.tap(Card(UID_A))
    await k.tap(Card(UID_B))
    await finish(k, tasks)  # power off with two unsettled swipes
    br.silent = False
    n = len(br.swipes)
    k = Kiosk(k.cfg, SimBoard(), FakeReader(), Journal(k.journal.path),
              MQTTClient(KIOSK, b.open_stream, backoff_min_ms=10), None, log=lambda t: None)
    tasks = await started(k)
    await settle(100)
    assert [m["seq"] for m in br.swipes[n:]] == [1, 2]
    assert k.journal.depth() == 0
    ev = await k.tap(Card(UID_A))
    assert ev["kind"] == "approved" and br.swipes[-1]["seq"] == 3
    await finish(k, tasks)


@in_task_test
async def test_bad_input_on_results_and_config_is_refused_and_harmless():
    b = FakeBroker()
    Bridge(b)
    k, board, _ = make("x", b)
    tasks = await started(k)
    b.publish(topics.results(KIOSK), b"{not json")
    b.publish(topics.results(KIOSK), b"x" * 5000)  # over the result size limit
    other = messages.result("K2", 1, "approved", reasons.OK, 1, 1, 1, "", KEY)
    b.publish(topics.results(KIOSK), messages.encode("result", other))  # another kiosk's
    cfgmsg = {"kiosk": "K2", "merchant": "M1", "service": "lunch", "price": 1,
              "lists_version": 9, "deny": [], "allow": [], "clock": utctime.iso(clock.now()),
              "offline": {}}
    b.publish(topics.config(KIOSK), messages.encode("config", cfgmsg))
    await settle()
    assert k.bad_results == 3
    assert k.remote is None  # the config for K2 was refused
    assert k.mqtt.connected
    ev = await k.tap(Card(UID_A))
    assert ev["kind"] == "approved"
    await finish(k, tasks)
