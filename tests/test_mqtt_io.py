# bridge/mqtt_io.Client against a real Mosquitto: reads from memory, held writes, its own
# QoS 1 window; and db.Checkpointer against a real SQLite file. Each test counts the
# socket calls paho makes underneath, so it fails if the overrides stop taking effect
# (a paho upgrade renaming _sock_recv/_sock_send, say).
import contextlib
import os
import time
from types import SimpleNamespace

import paho.mqtt.client as mqtt
import pytest

from bridge import db, mqtt_io
from tests.brokers import mosquitto

TOPIC = "aixin/v1/test/io"


def _plain(port, client_id):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                    protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def _io(port, client_id, on_message=None):
    c = mqtt_io.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                       protocol=mqtt.MQTTv5)
    state = SimpleNamespace(connected=False)

    def on_connect(client, userdata, flags, reason_code, properties):
        client.window_from(properties)
        state.connected = True
    c.on_connect = on_connect
    if on_message:
        c.on_message = on_message
    c.connect("127.0.0.1", port)
    _pump_until(c, lambda: state.connected)
    return c


def _pump_until(c, done, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        c.pump(0.05)


@contextlib.contextmanager
def _publisher_and_listener(tmp_path):
    """A broker, an mqtt_io client to publish on TOPIC, and the numbers a plain paho client
    listening there received, in order."""
    with mosquitto(tmp_path) as port:
        got = []
        listener = _plain(port, "io-listen")
        listener.on_message = lambda cl, ud, m: got.append(int(m.payload[:6]))
        listener.subscribe(TOPIC, qos=1)
        time.sleep(0.3)
        c = _io(port, "io-pub")
        try:
            yield c, got
        finally:
            c.disconnect()
            listener.disconnect()
            listener.loop_stop()


@pytest.fixture
def counted(monkeypatch):
    """Count paho's own socket calls made for mqtt_io clients (what the subclass calls
    underneath); the plain paho clients of a test are not counted."""
    calls = {"recv": 0, "send": 0}
    assert "_sock_recv" in vars(mqtt.Client) and "_sock_send" in vars(mqtt.Client), \
        "paho renamed its socket methods: see bridge/mqtt_io.py"
    recv, send = mqtt.Client._sock_recv, mqtt.Client._sock_send

    def counting_recv(self, bufsize):
        if isinstance(self, mqtt_io.Client):
            calls["recv"] += 1
        return recv(self, bufsize)

    def counting_send(self, buf):
        if isinstance(self, mqtt_io.Client):
            calls["send"] += 1
        return send(self, buf)
    monkeypatch.setattr(mqtt.Client, "_sock_recv", counting_recv)
    monkeypatch.setattr(mqtt.Client, "_sock_send", counting_send)
    return calls


def test_reads_many_packets_per_recv_in_order(tmp_path, counted):
    with mosquitto(tmp_path) as port:
        got = []
        sub = _io(port, "io-sub", lambda cl, ud, m: got.append(int(m.payload)))
        sub.subscribe(TOPIC, qos=1)
        _pump_until(sub, lambda: sub._inflight == set() and not sub.want_write())
        sub.pump(0.2)  # SUBACK
        pub = _plain(port, "io-pub")
        for i in range(300):
            pub.publish(TOPIC, str(i).encode(), qos=1)
        time.sleep(0.5)  # let them pile up in the socket
        counted["recv"] = 0
        _pump_until(sub, lambda: len(got) == 300)
        assert got == list(range(300))
        # paho alone: three recv() per packet (command, length, body), 900 here
        assert counted["recv"] < 100, counted
        pub.disconnect()
        pub.loop_stop()
        sub.disconnect()


def test_held_writes_leave_on_release_in_order(tmp_path, counted):
    with _publisher_and_listener(tmp_path) as (c, got):
        counted["send"] = 0
        with c.held():
            for i in range(200):
                c.queue(TOPIC, str(i).encode())
            assert counted["send"] == 0  # nothing left while held
        assert counted["send"] <= 3  # one send() for the lot, unless the socket was full
        _pump_until(c, lambda: len(got) == 200 and not c._inflight)
        assert got == list(range(200))


def test_held_writes_larger_than_the_socket_buffer_all_arrive(tmp_path):
    with _publisher_and_listener(tmp_path) as (c, got):
        pad = b"x" * 20000
        with c.held():
            for i in range(400):  # 8 MB: far more than one send() takes
                c.queue(TOPIC, b"%06d" % i + pad)
        _pump_until(c, lambda: len(got) == 400, timeout=30)
        assert got == list(range(400))


def test_an_error_while_held_still_sends_and_stops_holding(tmp_path):
    with _publisher_and_listener(tmp_path) as (c, got):
        with pytest.raises(RuntimeError):
            with c.held():
                c.queue(TOPIC, b"1")
                raise RuntimeError("a bug while publishing a batch")
        c.queue(TOPIC, b"2")  # not held any more
        _pump_until(c, lambda: got == [1, 2])


def test_window_never_exceeds_the_brokers_receive_maximum(tmp_path):
    with _publisher_and_listener(tmp_path) as (c, got):
        c.window_from(SimpleNamespace(ReceiveMaximum=5))
        most = []
        for i in range(60):
            c.queue(TOPIC, str(i).encode())
            most.append(len(c._inflight))
        while len(got) < 60:
            c.pump(0.05)
            most.append(len(c._inflight))
        assert max(most) == 5
        assert got == list(range(60))


def test_paho_loops_are_refused():
    c = mqtt_io.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    with pytest.raises(TypeError):
        c.loop_start()
    with pytest.raises(TypeError):
        c.loop_forever()


def test_checkpoints_leave_the_writer_for_their_own_thread(tmp_path):
    path = str(tmp_path / "cp.db")
    engine = db.connect(path)
    cp = db.Checkpointer(engine, every_s=0.05)
    conn = cp.hot_connection(engine.connect())
    with conn.begin():
        conn.exec_driver_sql("CREATE TABLE blobs (x BLOB)")
    for _ in range(30):  # ~1800 pages of WAL in 30 commits
        with conn.begin():
            for _ in range(60):
                conn.exec_driver_sql("INSERT INTO blobs VALUES (?)", (os.urandom(4000),))
    # SQLite's default would have checkpointed at 1000 pages and restarted the WAL there;
    # here the pages are all still in the WAL, none copied into the database file yet.
    assert os.path.getsize(path + "-wal") > 1500 * 4096
    assert os.path.getsize(path) < 1000 * 4096
    cp.start()
    deadline = time.monotonic() + 10
    while os.path.getsize(path) < 1500 * 4096:
        assert time.monotonic() < deadline, "the checkpoint thread did not copy the WAL back"
        time.sleep(0.05)
    cp.stop()
    assert cp.runs >= 1
    with conn.begin():
        assert conn.exec_driver_sql("SELECT count(*) FROM blobs").scalar() == 1800
    conn.close()
