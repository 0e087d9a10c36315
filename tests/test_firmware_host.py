# The firmware on CPython against a real Mosquitto started here (the host runner,
# boards/sim/kiosk.py): real TCP, the real RC522 driver on the emulator, and a small paho
# client playing the bridge with protocol.messages.result(...).
import asyncio
import os
import subprocess
import sys
import threading

import paho.mqtt.client as paho
import pytest

from boards.sim.kiosk import start_kiosk, start_kiosk_thread
from protocol import messages, reasons, signing, topics
from tests.brokers import REPO, start_mosquitto, stop_process

KEY_HEX = "5a" * 32
KEY = bytes.fromhex(KEY_HEX)


def _cfg(kiosk="H1", **kw):
    cfg = {"kiosk": kiosk, "key": KEY_HEX, "service": "lunch", "verdict_timeout_ms": 1500,
           "poll_ms": 10, "heartbeat_s": 3600, "suppress_s": 0, "keepalive_s": 5,
           "offline": {"max_per_card_per_day": 3, "max_taps": 100}}
    cfg.update(kw)
    return cfg


class PlayBridge:
    """A paho client answering each swipe: approved unless decide() says otherwise. It books
    each (kiosk, seq) once and remembers the order swipes arrived in."""

    def __init__(self, port, decide=None):
        self.order = []
        self.booked = {}
        self.silent = False
        self.decide = decide or (lambda m: ("approved", reasons.OK, 300, 700, 5000, ""))
        self.lock = threading.Lock()
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="playbridge",
                             clean_session=False)
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(topics.ALL_SWIPES, qos=1)
        self.c.on_message = self._on_message
        self.c.reconnect_delay_set(0.05, 0.2)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def _on_message(self, c, u, m):
        msg = messages.decode("swipe", m.payload)
        assert signing.verify("swipe", msg, KEY)
        key = (msg["kiosk"], msg["seq"])
        with self.lock:
            self.order.append(key)
            if self.silent:
                return
            if key not in self.booked:
                self.booked[key] = self.decide(msg) + (msg["offline"],)
            verdict, reason, pays, sub, bal, text, offline = self.booked[key]
        res = messages.result(msg["kiosk"], msg["seq"], verdict, reason, pays, sub, bal, text,
                              KEY, offline=offline)
        c.publish(topics.results(msg["kiosk"]), messages.encode("result", res), qos=1)

    def stop(self):
        self.c.loop_stop()
        self.c.disconnect()


@pytest.fixture
def broker(tmp_path):
    state = {}
    extra = "persistence true\npersistence_location %s/\n" % tmp_path

    def start(port=None):
        state["port"], state["proc"] = start_mosquitto(tmp_path, extra, port=port)
        return state["port"]

    def stop():
        stop_process(state["proc"])

    start()
    state["start"], state["stop"] = start, stop
    yield state
    stop()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_approved_declined_and_no_verdict_through_mosquitto(broker):
    declines = {}
    pb = PlayBridge(broker["port"], lambda m: declines.get(m["uid"], ("approved", reasons.OK, 300, 700, 5000, "")))
    declines["04AABBCCDDEE01"] = ("declined", reasons.INSUFFICIENT_FUNDS, 0, 0, 120, "")

    async def body():
        vk = await start_kiosk(_cfg(), "127.0.0.1", broker["port"])
        assert await vk.wait_connected(5)
        ev = await vk.tap("ED0BA996")
        assert ev["kind"] == "approved" and ev["pays"] == 300 and ev["balance"] == 5000
        assert ev["seq"] == 1 and ev["uid"] == "ED0BA996"
        ev = await vk.tap("04AABBCCDDEE01")
        assert ev["kind"] == "declined" and ev["reason"] == reasons.INSUFFICIENT_FUNDS
        pb.silent = True
        ev = await vk.tap("11223344")
        assert ev["kind"] == "no_verdict"
        assert vk.journal_depth() == 1
        await vk.stop()

    try:
        run(body())
    finally:
        pb.stop()
    assert [s for _, s in pb.order] == [1, 2, 3]


def test_broker_down_taps_offline_then_uploaded_in_order_none_twice(broker):
    pb = PlayBridge(broker["port"])

    async def body():
        vk = await start_kiosk(_cfg(), "127.0.0.1", broker["port"])
        assert await vk.wait_connected(5)
        assert (await vk.tap("ED0BA996"))["kind"] == "approved"
        broker["stop"]()
        for _ in range(100):
            if not vk.connected:
                break
            await asyncio.sleep(0.05)
        assert not vk.connected
        uids = ["0A0B0C%02X" % i for i in range(6)]
        for u in uids:
            ev = await vk.tap(u)
            assert ev["kind"] == "offline", ev
            assert ev["reason"] == reasons.OFFLINE_ACCEPTED
        assert vk.journal_depth() == 6
        broker["start"](broker["port"])
        for _ in range(200):
            if vk.connected and vk.journal_depth() == 0:
                break
            await asyncio.sleep(0.05)
        assert vk.journal_depth() == 0
        ev = await vk.tap("ED0BA996")  # online again: next seq, approved
        assert ev["kind"] == "approved" and ev["seq"] == 8
        await vk.stop()

    try:
        run(body())
    finally:
        pb.stop()
    seqs = [s for _, s in pb.order]
    assert seqs == list(range(1, 9)), seqs  # in order, none twice
    assert all(pb.booked[("H1", s)][-1] for s in range(2, 8))  # uploaded flagged offline


def test_threaded_api_and_reboot_keeps_journal(broker, tmp_path):
    pb = PlayBridge(broker["port"])
    pb.silent = True
    data = str(tmp_path / "k2")
    os.makedirs(data)
    tk = start_kiosk_thread(_cfg("H2", verdict_timeout_ms=300), "127.0.0.1", broker["port"],
                            data_dir=data)
    assert tk.wait_connected(5)
    assert tk.tap("ED0BA996")["kind"] == "no_verdict"
    tk.stop(clean=False)
    pb.silent = False
    tk = start_kiosk_thread(_cfg("H2"), "127.0.0.1", broker["port"], data_dir=data)
    try:
        assert tk.wait_connected(5)
        ev = tk.tap("ED0BA996")
        assert ev["kind"] == "approved" and ev["seq"] == 2
        assert tk.vk.journal_depth() == 0  # seq 1 uploaded after the reboot and settled
    finally:
        tk.stop()
        pb.stop()
    assert sorted(set(s for k, s in pb.order if k == "H2")) == [1, 2]


def test_power_cut_mid_journal_write_then_power_on(broker, tmp_path):
    pb = PlayBridge(broker["port"])
    data = str(tmp_path / "k4")
    os.makedirs(data)

    async def body():
        vk = await start_kiosk(_cfg("H4"), "127.0.0.1", broker["port"], data_dir=data)
        assert await vk.wait_connected(5)
        assert (await vk.tap("ED0BA996"))["seq"] == 1
        await vk.power_cut(torn_bytes=30)
        vk = await start_kiosk(_cfg("H4"), "127.0.0.1", broker["port"], data_dir=data)
        assert vk.kiosk.journal.dropped == 30
        assert await vk.wait_connected(5)
        ev = await vk.tap("ED0BA996")
        assert ev["kind"] == "approved" and ev["seq"] == 2  # the torn seq 2 was never sent
        await vk.stop()

    try:
        run(body())
    finally:
        pb.stop()
    assert [s for k, s in pb.order if k == "H4"] == [1, 2]


def test_command_line_runs_a_script(broker, tmp_path):
    pb = PlayBridge(broker["port"])
    script = tmp_path / "taps.txt"
    script.write_text("# two residents\nwang\nED0BA996\nnot-a-card\n")
    names = tmp_path / "names.json"
    names.write_text('{"Wang": "04112233445566"}')
    try:
        out = subprocess.run(
            [sys.executable, "-m", "boards.sim.kiosk", "--kiosk", "H3", "--key", KEY_HEX,
             "--service", "lunch", "--broker", "mqtt://127.0.0.1:%d" % broker["port"],
             "--script", str(script), "--names", str(names), "--quiet"],
            cwd=REPO, capture_output=True, text=True, timeout=60)
    finally:
        pb.stop()
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(line.startswith("APPROVED") and "04112233445566" in line for line in lines), out.stdout
    assert any(line.startswith("APPROVED") and "ED0BA996" in line for line in lines), out.stdout
    assert any("not a card UID" in line for line in lines)
    assert lines[-1] == "journal depth 0"
