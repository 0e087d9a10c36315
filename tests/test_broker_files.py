"""The generated Mosquitto set-up, against a real Mosquitto: logins, ACL, TLS, hashing."""
import base64
import hashlib
import os
import shutil
import ssl
import subprocess
import time

import paho.mqtt.client as mqtt
import pytest

from bridge import broker_files
from protocol import signing, topics
from tests.brokers import MOSQUITTO, free_port, stop_process, wait_port, wait_until

KEY_A, KEY_B = b"A" * 32, b"B" * 32


@pytest.fixture
def broker(tmp_path):
    port, tls_port = free_port(), free_port()
    conf = broker_files.write_broker_files(str(tmp_path / "broker"), [("kioskA", KEY_A), ("kioskB", KEY_B)],
                                           "bridge", "bridge-secret", port, tls_port=tls_port, persistence=False)
    log = open(tmp_path / "mosquitto.log", "w")
    proc = subprocess.Popen([MOSQUITTO, "-c", conf], stdout=log, stderr=subprocess.STDOUT)
    wait_port(port)
    wait_port(tls_port)
    yield {"port": port, "tls_port": tls_port, "folder": str(tmp_path / "broker"), "log": tmp_path / "mosquitto.log"}
    stop_process(proc)


def connect(port, user, password, tls_ca=None):
    """Returns (client, reason_code) with the network loop running."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    if user is not None:
        c.username_pw_set(user, password)
    if tls_ca:
        c.tls_set(ca_certs=tls_ca, cert_reqs=ssl.CERT_REQUIRED)
    box = {}
    c.on_connect = lambda cl, ud, flags, rc, props: box.setdefault("rc", rc)
    c.on_message = lambda cl, ud, msg: box.setdefault("msgs", []).append((msg.topic, msg.payload))
    c.on_subscribe = lambda cl, ud, mid, rcs, props: box.setdefault("suback", rcs)
    c.on_publish = lambda cl, ud, mid, rc, props: box.setdefault("puback", []).append(rc)
    c.connect("127.0.0.1", port)
    c.loop_start()
    deadline = time.time() + 5
    while "rc" not in box and time.time() < deadline:
        time.sleep(0.01)
    c.box = box
    return c, box.get("rc")


def test_password_line_matches_mosquitto_passwd_format():
    salt = bytes(range(12))
    line = broker_files.password_line("k1", "pw", salt)
    user, rest = line.split(":", 1)
    _, kind, iters, salt_b64, hash_b64 = rest.split("$")
    assert (user, kind, iters) == ("k1", "7", "101")
    assert base64.b64decode(salt_b64) == salt
    assert base64.b64decode(hash_b64) == hashlib.pbkdf2_hmac("sha512", b"pw", salt, 101)


def test_kiosk_logs_in_with_its_derived_password_and_others_are_refused(broker):
    ok, rc = connect(broker["port"], "kioskA", signing.broker_password(KEY_A))
    assert not rc.is_failure
    ok.disconnect()
    for user, pw in (("kioskA", signing.broker_password(KEY_B)), ("stranger", "x"), (None, None)):
        c, rc = connect(broker["port"], user, pw)
        assert rc is None or rc.is_failure, (user, rc)
        c.loop_stop()


def test_acl_kiosk_can_only_use_its_own_topics(broker):
    bridge, _ = connect(broker["port"], "bridge", "bridge-secret")
    bridge.subscribe(topics.ALL_SWIPES, qos=1)
    assert wait_until(lambda: "suback" in bridge.box)
    a, _ = connect(broker["port"], "kioskA", signing.broker_password(KEY_A))
    a.publish(topics.swipes("kioskA"), b"own", qos=1)
    a.publish(topics.swipes("kioskB"), b"impersonated", qos=1)
    assert wait_until(lambda: len(a.box.get("puback", [])) == 2)
    assert wait_until(lambda: bridge.box.get("msgs"))
    time.sleep(0.3)
    assert bridge.box["msgs"] == [(topics.swipes("kioskA"), b"own")]
    # Mosquitto grants the subscription but its read ACL withholds B's results from A
    a.subscribe([(topics.results("kioskB"), 1), (topics.results("kioskA"), 1)])
    assert wait_until(lambda: "suback" in a.box)
    bridge.publish(topics.results("kioskB"), b"for B", qos=1)
    bridge.publish(topics.results("kioskA"), b"for A", qos=1)
    assert wait_until(lambda: a.box.get("msgs"))
    time.sleep(0.3)
    assert a.box["msgs"] == [(topics.results("kioskA"), b"for A")]
    for c in (a, bridge):
        c.disconnect()
        c.loop_stop()


def test_tls_listener_with_site_ca(broker):
    ca = os.path.join(broker["folder"], "ca.crt")
    c, rc = connect(broker["tls_port"], "kioskB", signing.broker_password(KEY_B), tls_ca=ca)
    assert rc is not None and not rc.is_failure
    c.disconnect()
    c.loop_stop()


def test_secrets_are_not_world_readable_and_not_in_config(broker):
    folder = broker["folder"]
    for name in ("passwd", "ca.key", "server.key"):
        assert os.stat(os.path.join(folder, name)).st_mode & 0o077 == 0, name
    text = open(os.path.join(folder, "passwd")).read() + open(os.path.join(folder, "mosquitto.conf")).read()
    assert "bridge-secret" not in text and signing.broker_password(KEY_A) not in text


def test_mosquitto_passwd_accepts_our_file(tmp_path):
    tool = shutil.which("mosquitto_passwd")
    if not tool:
        pytest.skip("mosquitto_passwd not installed")
    path = tmp_path / "passwd"
    path.write_text(broker_files.password_line("k1", "pw") + "\n")
    # mosquitto_passwd rewrites the file; it must keep our entry untouched and parse it.
    subprocess.run([tool, "-b", str(path), "k2", "pw2"], check=True, capture_output=True)
    lines = path.read_text().splitlines()
    assert lines[0].startswith("k1:$7$101$") and lines[1].startswith("k2:$7$")


def test_broker_config_command_follows_the_registry(tmp_path):
    """`aixin broker-config` gives enabled kiosks a login; disabling one takes it away."""
    from bridge import cli, db, registry
    dbfile = str(tmp_path / "site.db")
    engine = db.connect(dbfile)
    registry.add_merchant(engine, "m1", "Canteen")
    key1 = registry.add_kiosk(engine, "k1", "m1", "meal")
    registry.add_kiosk(engine, "k2", "m1", "meal")
    folder = tmp_path / "broker"
    port = free_port()
    assert cli.main(["--db", dbfile, "broker-config", str(folder), "--port", str(port)]) == 0
    passwd = (folder / "passwd").read_text()
    assert [line.split(":")[0] for line in passwd.splitlines()] == ["bridge", "k1", "k2"]
    proc = subprocess.Popen([MOSQUITTO, "-c", str(folder / "mosquitto.conf")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        c, rc = connect(port, "k1", signing.broker_password(key1))
        assert not rc.is_failure
        c.disconnect()
        c.loop_stop()
        bridge_pw = (folder / "bridge.password").read_text().strip()
        c, rc = connect(port, "bridge", bridge_pw)
        assert not rc.is_failure
        c.disconnect()
        c.loop_stop()
    finally:
        stop_process(proc)
    registry.set_kiosk_enabled(engine, "k1", False)
    assert cli.main(["--db", dbfile, "broker-config", str(folder), "--port", str(port)]) == 0
    assert "k1:" not in (folder / "passwd").read_text()
    assert (folder / "bridge.password").read_text().strip() == bridge_pw  # stable across runs
