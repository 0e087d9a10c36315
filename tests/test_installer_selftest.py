"""firmware/selftest.py's network steps (broker login, first heartbeat) as a real board runs
them after Wi-Fi, here on CPython against a real Mosquitto set up by bridge.broker_files
with the site CA over TLS: what an installer sees after a flash, before and after the
broker files are regenerated. (Wi-Fi itself needs a board.)"""
import os
import subprocess

import pytest

from bridge import broker_files
from firmware import config, selftest
from tests.brokers import MOSQUITTO, free_port, stop_process, wait_port

KEY_OLD, KEY_NEW = b"O" * 32, b"N" * 32



@pytest.fixture
def broker(tmp_path):
    port, tls_port = free_port(), free_port()
    folder = str(tmp_path / "broker")
    conf = broker_files.write_broker_files(folder, [("K1", KEY_OLD)], "bridge", "bridge-secret",
                                           port, tls_port=tls_port, persistence=False)
    log = open(tmp_path / "mosquitto.log", "w")
    proc = subprocess.Popen([MOSQUITTO, "-c", conf], stdout=log, stderr=subprocess.STDOUT)
    wait_port(port)
    wait_port(tls_port)
    yield {"port": port, "tls_port": tls_port, "folder": folder, "conf": conf, "proc": proc}
    stop_process(proc)
    log.close()


def cfg_for(key, broker_url, ca=None, tmp_path=None):
    cfg = {"kiosk": "K1", "key": key.hex(), "board": "esp32_devkitc", "seq_base": 1,
           "broker": broker_url, "data_dir": str(tmp_path)}
    if ca:
        cfg["ca"] = ca
    return config.prepare(cfg)


def lines(capsys):
    return [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("SELFTEST")]


@pytest.mark.timeout(60)
def test_login_and_heartbeat_over_tls_with_site_ca(broker, tmp_path, capsys):
    ca = os.path.join(broker["folder"], "ca.crt")
    cfg = cfg_for(KEY_OLD, "mqtts://localhost:%d" % broker["tls_port"], ca, tmp_path)
    assert selftest.check_network(cfg, t_ms=5000) is True
    out = lines(capsys)
    assert out[0] == "SELFTEST broker ok localhost:%d tls=True user=K1" % broker["tls_port"]
    assert out[1] == "SELFTEST heartbeat ok state online published and acknowledged"


@pytest.mark.timeout(60)
def test_reflashed_key_refused_until_broker_files_regenerated(broker, tmp_path, capsys):
    url = "mqtt://127.0.0.1:%d" % broker["port"]
    cfg = cfg_for(KEY_NEW, url, None, tmp_path)
    assert selftest.check_network(cfg, t_ms=3000) is False
    out = lines(capsys)
    assert out[0].startswith("SELFTEST broker fail 127.0.0.1:%d within 3 s: login refused" % broker["port"]), out
    assert out[1] == "SELFTEST heartbeat skip no broker login"
    # what `aixin broker-config` does after the flash, then a reload (SIGHUP)
    broker_files.write_broker_files(broker["folder"], [("K1", KEY_NEW)], "bridge",
                                    "bridge-secret", broker["port"], tls_port=broker["tls_port"],
                                    persistence=False)
    broker["proc"].send_signal(1)
    import time
    time.sleep(0.5)
    assert selftest.check_network(cfg, t_ms=5000) is True
    assert lines(capsys)[1].startswith("SELFTEST heartbeat ok")


@pytest.mark.timeout(60)
def test_broker_unreachable(tmp_path, capsys):
    port = free_port()
    cfg = cfg_for(KEY_OLD, "mqtt://127.0.0.1:%d" % port, None, tmp_path)
    assert selftest.check_network(cfg, t_ms=2000) is False
    out = lines(capsys)
    assert out[0].startswith("SELFTEST broker fail 127.0.0.1:%d within 2 s: " % port), out
