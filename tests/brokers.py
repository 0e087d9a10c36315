# host-only. Shared helpers for host tests and benches that need a real broker, a bridge
# database or a bridge process. Plain functions and context managers (no pytest fixtures),
# so the end-to-end tests and bench/ can import them too.
import contextlib
import os
import socket
import subprocess
import sys
import time

from bridge.db import BridgeError
from bridge.site import free_port, mosquitto_binary, stop_process, wait_port  # noqa: F401  (re-exported)

try:
    MOSQUITTO = mosquitto_binary()
except BridgeError:  # tests then fail saying the binary is missing: `make test` installs it
    MOSQUITTO = "/usr/sbin/mosquitto"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_mosquitto(tmp_path, config_extra="", port=None):
    """Start a real Mosquitto on a free loopback port with a temp config (anonymous,
    TCP_NODELAY, generous inflight/queue limits as DESIGN.md 6a asks). Returns (port, proc);
    stop it with stop_process(proc). Its log is tmp_path/mosquitto.log."""
    port = port or free_port()
    tmp_path = str(tmp_path)
    conf = os.path.join(tmp_path, "mosquitto-%d.conf" % port)
    with open(conf, "w") as f:
        f.write("listener %d 127.0.0.1\n" % port)
        f.write("allow_anonymous true\n")
        f.write("set_tcp_nodelay true\n")
        f.write("max_inflight_messages 1000\n")
        f.write("max_queued_messages 100000\n")
        f.write("persistence false\n")
        f.write("log_dest file %s\n" % os.path.join(tmp_path, "mosquitto.log"))
        f.write(config_extra)
        if config_extra and not config_extra.endswith("\n"):
            f.write("\n")
    proc = subprocess.Popen([MOSQUITTO, "-c", conf], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc=proc, what="Mosquitto")
    except BridgeError:
        proc.kill()
        raise
    return port, proc


@contextlib.contextmanager
def mosquitto(tmp_path, config_extra=""):
    """with mosquitto(tmp_path) as port: ..."""
    port, proc = start_mosquitto(tmp_path, config_extra)
    try:
        yield port
    finally:
        stop_process(proc)


def bridge_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


def start_bridge_process(db, port, log_path, extra=()):
    """Run `aixin --db DB serve --broker mqtt://127.0.0.1:PORT` as a subprocess (through
    `python -m bridge`, so no install is needed). Returns the Popen; its log goes to
    log_path. Wait for it with wait_log(log_path, 'event=connected')."""
    out = open(log_path, "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "bridge", "--db", str(db), "serve", "--broker",
         "mqtt://127.0.0.1:%d" % port] + list(extra),
        cwd=REPO, env=bridge_env(), stdout=out, stderr=subprocess.STDOUT)


def wait_until(pred, timeout=3.0):
    """Poll pred() until it is true (True) or timeout seconds pass (False)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return False


def wait_log(log_path, needle, timeout=15.0, count=1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with open(log_path, "rb") as f:
                if f.read().decode(errors="replace").count(needle) >= count:
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError("%r not in %s after %.0f s" % (needle, log_path, timeout))


class Kiosk:
    """A scripted kiosk for host tests: a paho MQTT 5 client that signs swipes with the
    kiosk's key, collects results by seq and can re-send unanswered swipes (as a real
    kiosk does from its journal)."""

    def __init__(self, port, kiosk_id, key, service="meal", seq=1):
        import paho.mqtt.client as mqtt
        from protocol import topics
        self.kiosk_id, self.key, self.service, self.seq = kiosk_id, key, service, seq
        self.results = {}
        self.sent = {}
        self.configs = []
        self._topics = topics
        c = self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                      client_id="kiosk-" + kiosk_id, protocol=mqtt.MQTTv5)
        c.max_inflight_messages_set(50)
        c.on_socket_open = lambda cl, ud, sock: sock.setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.on_message = self._on_message
        c.on_connect = lambda cl, ud, fl, rc, pr: (
            cl.subscribe(topics.results(kiosk_id), qos=1),
            cl.subscribe(topics.config(kiosk_id), qos=1))
        c.connect("127.0.0.1", port)
        c.loop_start()
        deadline = time.time() + 5
        while not c.is_connected() and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)  # subscriptions

    def _on_message(self, client, userdata, m):
        import json
        if m.topic.endswith("/results"):
            msg = json.loads(m.payload)
            self.results.setdefault(msg["seq"], []).append(msg)
        else:
            self.configs.append(json.loads(m.payload))

    def swipe(self, card_uid, ts=None, offline=False, service=None, seq=None, key=None,
              send=True):
        """Build, sign and publish a swipe; returns the message dict."""
        from protocol import messages, utctime
        if seq is None:
            seq = self.seq
            self.seq += 1
        msg = messages.swipe(self.kiosk_id, seq, ts or utctime.iso(time.time()), card_uid,
                             "uid", service or self.service, offline, key or self.key)
        if send:
            self.publish(msg)
        self.sent[seq] = msg
        return msg

    def publish(self, msg_or_bytes, topic=None):
        import json
        data = msg_or_bytes if isinstance(msg_or_bytes, (bytes, str)) \
            else json.dumps(msg_or_bytes).encode()
        return self.client.publish(topic or self._topics.swipes(self.kiosk_id), data, qos=1)

    def wait(self, seq, timeout=5.0, count=1):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if len(self.results.get(seq, ())) >= count:
                return self.results[seq][-1]
            time.sleep(0.005)
        return None

    def resend_unanswered(self):
        n = 0
        for seq, msg in sorted(self.sent.items()):
            if seq not in self.results:
                self.publish(msg)
                n += 1
        return n

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def seed_site(db_path, kiosks=(("K1", "meal"),), merchant="M1", residents=None):
    """A small site in a fresh database: default rules, one merchant, kiosks, residents with
    cards and money. Returns (engine, info) where info has 'keys' {kiosk: key bytes} and
    'cards' {name: uid}. residents: [(name, birth_date, flags, card_uid, topup_fen)]."""
    from bridge import db, ledger, pricing, registry
    engine = db.connect(str(db_path))
    pricing.load(engine, pricing.DEFAULT_RULES)
    registry.add_merchant(engine, merchant, "Test canteen")
    keys = {}
    for kiosk_id, service in kiosks:
        keys[kiosk_id] = registry.add_kiosk(engine, kiosk_id, merchant, service)
    if residents is None:
        residents = [("young", "1956-05-01", [], "A1000001", 5000),     # 60-79
                     ("old", "1940-01-01", [], "A1000002", 5000),       # 80+
                     ("poor", "1958-01-01", [], "A1000003", 0),         # no money
                     ("disabled", "1960-01-01", ["disabled"], "A1000004AABBCC", 5000)]
    cards = {}
    for name, born, flags, card_uid, fen in residents:
        rid = registry.add_resident(engine, name, born, flags)
        registry.enroll_card(engine, card_uid, rid)
        if fen:
            ledger.topup(engine, rid, fen)
        cards[name] = card_uid
    return engine, {"keys": keys, "cards": cards, "merchant": merchant}
