"""A whole site on this machine: registry database, a private Mosquitto with the generated
accounts and ACL, and the bridge as its own process. The demo, the fault drills and the
end-to-end tests run sites; so can a developer (`python -m bridge.site DIR`).

Everything listens on free loopback ports and lives in one folder; stop() ends what it
started. The bridge is a real subprocess (`aixin serve`) so drills can kill -9 it.
"""
import os
import signal
import socket
import subprocess
import sys
import time

from sqlalchemy import select

from bridge import broker_files, card_keys, db, ledger, pricing, registry, schema
from bridge.db import BridgeError

MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/usr/bin/mosquitto")
BRIDGE_USER = broker_files.BRIDGE_USER


def mosquitto_binary():
    found = os.environ.get("MOSQUITTO")
    for path in ((found,) if found else ()) + MOSQUITTO_PATHS:
        if path and os.access(path, os.X_OK):
            return path
    raise BridgeError("Mosquitto is not installed: run `make demo` as root (it installs it) "
                      "or `sudo apt-get install mosquitto`")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10.0, proc=None, what="server"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BridgeError("%s exited at start (code %s)" % (what, proc.returncode))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise BridgeError("%s is not listening on 127.0.0.1:%d after %.0f s" % (what, port, timeout))


def stop_process(proc, kill=False, timeout=10):
    if proc is None or proc.poll() is not None:
        return
    if kill:
        proc.send_signal(signal.SIGKILL)
    else:
        proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Site:
    """site = Site(folder); site.add_merchant(...) ...; site.start(); ...; site.stop()"""

    def __init__(self, folder, rules=None):
        self.folder = os.path.abspath(folder)
        os.makedirs(self.folder, exist_ok=True)
        self.db_path = os.path.join(self.folder, "aixin.db")
        self.engine = db.connect(self.db_path)
        with self.engine.connect() as conn:
            has_rules = pricing.current(conn) is not None
        if not has_rules:  # outside the read: every transaction here takes the write lock
            pricing.load(self.engine, rules or pricing.DEFAULT_RULES)
        self.broker_dir = os.path.join(self.folder, "broker")
        self.port = free_port()
        self.bridge_password = broker_files.bridge_password(self.broker_dir)
        self.broker = None
        self.bridge = None
        self.bridge_starts = 0

    # --- registry -----------------------------------------------------------------
    def add_merchant(self, merchant_id, name):
        registry.add_merchant(self.engine, merchant_id, name)

    def add_kiosk(self, kiosk_id, merchant_id, service):
        return registry.add_kiosk(self.engine, kiosk_id, merchant_id, service)

    def add_resident(self, name, birth_date, card_uid, topup_fen=0, flags=(), resident_id=None):
        rid = registry.add_resident(self.engine, name, birth_date, flags, resident_id=resident_id)
        registry.enroll_card(self.engine, card_uid, rid)
        if topup_fen:
            ledger.topup(self.engine, rid, topup_fen, memo="opening balance")
        return rid

    def kiosk_config(self, kiosk_id, mifare=False):
        """The config.json a virtual (or real) kiosk needs to join this site. mifare: check
        each card's MIFARE credential (DESIGN.md 3.2) at this service point."""
        with self.engine.connect() as conn:
            row = next(k for k in registry.list_kiosks(conn) if k["id"] == kiosk_id)
        return {"kiosk": kiosk_id, "key": registry.kiosk_key(self.engine, kiosk_id).hex(),
                "service": row["service"], "seq_base": row["seq_base"], "board": "sim",
                "broker": "mqtt://127.0.0.1:%d" % self.port, "mifare": mifare,
                "card_secret": card_keys.card_secret(self.engine).hex()}

    def card_maker(self):
        """uid text -> a virtual card personalised as enrollment leaves it."""
        from boards.sim import cards
        from protocol import uid as uidtext
        secret = card_keys.card_secret(self.engine)
        numbers = {}
        with self.engine.connect() as conn:
            for uid, rid in conn.execute(select(schema.cards.c.uid, schema.cards.c.resident_id)):
                numbers[uid] = card_keys.card_number(rid)
        return lambda uid: cards.personalised(uidtext.uid_bytes(uid), secret, numbers.get(uid, 0))

    def kiosk_ids(self):
        with self.engine.connect() as conn:
            return [k["id"] for k in registry.list_kiosks(conn)]

    # --- processes ----------------------------------------------------------------
    def write_broker_files(self):
        return broker_files.write_for_registry(self.engine, self.broker_dir, self.port)[0]

    def start_broker(self):
        conf = self.write_broker_files()
        log = open(os.path.join(self.folder, "mosquitto.log"), "a")
        self.broker = subprocess.Popen([mosquitto_binary(), "-c", conf], stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)  # Ctrl-C reaches us; we stop it in order
        log.close()
        wait_port(self.port, proc=self.broker, what="Mosquitto")

    def stop_broker(self, kill=False):
        stop_process(self.broker, kill=kill)
        self.broker = None

    def start_bridge(self, extra_args=()):
        env = dict(os.environ, AIXIN_BROKER_PASSWORD=self.bridge_password, PYTHONUNBUFFERED="1")
        log = open(os.path.join(self.folder, "bridge.log"), "a")
        cmd = [sys.executable, "-m", "bridge", "--db", self.db_path, "serve",
               "--broker", "mqtt://127.0.0.1:%d" % self.port, "--user", BRIDGE_USER] + list(extra_args)
        self.bridge = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        log.close()
        self.bridge_starts += 1
        self.wait_bridge_online()

    def wait_bridge_online(self, timeout=20):
        """Until the bridge log says it serves (it has subscribed with its session)."""
        path = os.path.join(self.folder, "bridge.log")
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.bridge.poll() is not None:
                raise BridgeError("the bridge exited at start; see %s" % path)
            with open(path) as f:
                if f.read().count("bridge serving") >= self.bridge_starts:
                    return
            time.sleep(0.05)
        raise BridgeError("the bridge did not come up in %d s; see %s" % (timeout, path))

    def stop_bridge(self, kill=False):
        stop_process(self.bridge, kill=kill)
        self.bridge = None

    def start(self):
        self.start_broker()
        self.start_bridge()

    def stop(self):
        self.stop_bridge()
        self.stop_broker()
        self.engine.dispose()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
