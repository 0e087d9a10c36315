# host-only. The running bridge (DESIGN.md 5, 6a): MQTT in, settle, MQTT out.
#
# One thread does the network and the settling, in turn (paho's external-loop API:
# socket(), loop_read, loop_write, loop_misc): it reads everything the socket has, settles
# those swipes as one database transaction (group commit), commits, then publishes results
# and settlement records, then acknowledges each swipe to the broker (manual_ack). No
# hand-off between threads, so no GIL convoy per message. A crash before the commit means
# redelivery; after it, a redelivery finds the stored verdict. MQTT gives at-least-once;
# (kiosk, seq) gives exactly-once booking. A batch takes milliseconds (at most batch_max
# swipes), far inside the 30 s keepalive; while the database is down the loop keeps the
# connection alive between retries.
import gc
import json
import logging
import socket
import threading
import time
import urllib.parse

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bridge import VERSION, config, db as dbmod, mqtt_io, settle as settlemod
from bridge.db import BridgeError
from protocol import topics, utctime

log = logging.getLogger("aixin.bridge")
# One line per verdict, written once per batch (one write, not one per line): each line
# carries its own time stamp, so give this logger a plain "%(message)s" format.
verdict_log = logging.getLogger("aixin.verdicts")


def parse_broker(url):
    """'mqtt://host:port' -> (host, port). mqtts is not handled here (put TLS in front)."""
    u = urllib.parse.urlparse(url if "://" in url else "mqtt://" + url)
    if u.scheme not in ("mqtt", "tcp"):
        raise BridgeError("broker %r: use mqtt://HOST:PORT" % url)
    return u.hostname or "127.0.0.1", u.port or 1883


def log_line(fields):
    """One line per event, key=value, stable order. Never given a key or MAC."""
    return " ".join("%s=%s" % (k, v) for k, v in fields.items() if v is not None)


def tune_gc():
    """For the bridge's own process (aixin serve), once it has started. Everything loaded
    by then (SQLAlchemy, paho, the schema) lives as long as the process: out of the
    collector's sight (gc.freeze), a full collection scans only what the loop makes. And
    as no cycles are made per swipe (tests/test_bridge_hot_path.py), what reaches the
    oldest generation is long-lived, not garbage: scan it every 1000 middle-generation
    collections instead of every 10. Before: pauses of 35-90 ms, then 5-12 ms about once a
    second under load, each one a p99 at 500 swipes/s."""
    gc.freeze()
    gc.set_threshold(700, 10, 1000)


class Bridge:
    """One bridge process. engine: from bridge.db.connect(). share_group: join an MQTT 5
    shared subscription so several bridges split the swipes (use PostgreSQL then)."""

    def __init__(self, engine, broker="mqtt://127.0.0.1:1883", username=None, password=None,
                 client_id="aixin-bridge", share_group=None, session_expiry=86400,
                 batch_max=500, poll_s=1.0):
        self.engine = engine
        self.host, self.port = parse_broker(broker)
        self.share_group = share_group
        self.batch_max = batch_max
        self.poll_s = poll_s
        self.session_expiry = session_expiry
        self._inbox = []  # (topic, payload, mid, qos, generation, t) read, not settled
        self._reconnect_delay = 1.0
        self.generation = 0  # bumped per connection: an ack is only valid on its own one
        self.connected = threading.Event()
        self.stopping = threading.Event()
        self.settled = 0
        self.failed = False  # the loop stopped on an unexpected error (see _run)
        self._versions = None
        self._versions_checked = 0.0
        self._topics = {}
        self._conn = None
        self.checkpointer = dbmod.Checkpointer(engine)
        self._client = c = mqtt_io.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                       protocol=mqtt.MQTTv5, manual_ack=True)
        if username:
            c.username_pw_set(username, password)
        c.reconnect_delay_set(min_delay=1, max_delay=30)
        c.will_set(topics.BRIDGE_STATE, self._state("offline"), qos=1, retain=True)
        c.on_socket_open = self._on_socket_open
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        self._worker = threading.Thread(target=self._run, name="aixin-bridge", daemon=True)

    @property
    def client(self):
        return self._client

    def _state(self, status):
        return json.dumps({"status": status, "version": VERSION,
                           "ts": utctime.iso(time.time())}).encode()

    # -- paho callbacks (network thread: keep them short) --
    def _on_socket_open(self, client, userdata, sock):
        # DESIGN.md 7 latency note: without TCP_NODELAY a QoS 1 round trip costs ~40 ms.
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.warning(log_line({"event": "connect_failed", "reason": str(reason_code)}))
            return
        self.generation += 1
        client.window_from(properties)
        filt = topics.ALL_SWIPES
        if self.share_group:
            filt = topics.shared(self.share_group, filt)
        client.subscribe(filt, qos=1)
        client.publish(topics.BRIDGE_STATE, self._state("online"), qos=1, retain=True)
        self._versions = None  # republish every config on (re)connect
        self.connected.set()
        log.info(log_line({"event": "connected", "broker": "%s:%d" % (self.host, self.port),
                           "session_present": flags.session_present}))

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.connected.clear()
        if not self.stopping.is_set():
            log.warning(log_line({"event": "disconnected", "reason": str(reason_code)}))

    def _on_message(self, client, userdata, message):
        # Dispatch here, not with message_callback_add (it ignores $share filters, 6a).
        self._inbox.append((message.topic, message.payload, message.mid, message.qos,
                            self.generation, time.perf_counter()))

    def publish(self, topic, payload, qos=1, retain=False):
        """QoS 1 publish through the client's window (config.publish_all uses it too)."""
        self._client.queue(topic, payload, retain)

    # -- the one thread: network and settlement --
    def _run(self):
        try:
            self._loop()
        except Exception:
            # A bug, most likely after a commit: what was booked stays booked, and what was
            # not acknowledged the broker delivers again to the next bridge (the stored
            # verdicts answer it). Stop rather than run half-working: `aixin serve` exits
            # non-zero so its service manager starts it again.
            log.exception(log_line({"event": "bridge_failed"}))
            self.failed = True
            self.stopping.set()

    def _loop(self):
        """Read what the socket has (paho's external-loop API), settle it as one batch,
        publish and acknowledge, repeat. One thread, so no GIL hand-off per message."""
        inbox = self._inbox
        while not self.stopping.is_set():
            try:
                if self._client.socket() is None:
                    self._reconnect()
                    continue
                self._pump(0 if inbox else self.poll_s)
            except Exception as e:  # a socket closed under us (stop, tests): go on or leave
                if self.stopping.is_set():
                    return
                log.error(log_line({"event": "loop_error", "error": str(e)[:200]}))
                self.stopping.wait(0.1)
                continue
            if inbox:
                batch = inbox[:self.batch_max]
                del inbox[:len(batch)]
                if not self._settle(batch):
                    return
            self._maybe_publish_configs()

    def _pump(self, timeout):
        """One round of network I/O (mqtt_io.Client.pump): read what the socket has, up
        to batch_max swipes queued; publish what waits for a window slot; keepalive."""
        self._client.pump(timeout, self._room)

    def _room(self):
        return len(self._inbox) < self.batch_max

    def _reconnect(self):
        if self.stopping.wait(self._reconnect_delay):
            return
        try:
            self._client.reconnect()
            self._reconnect_delay = 1.0
        except OSError as e:
            log.warning(log_line({"event": "reconnect_failed", "error": str(e)[:200]}))
            self._reconnect_delay = min(self._reconnect_delay * 2, 30.0)

    def _settle(self, batch):
        """Settle, commit, publish, acknowledge. False if stopping before a commit."""
        outcomes = None
        delay = 0.1
        while outcomes is None:
            try:
                if self._conn is None:  # kept open: no pool round trip per batch
                    self._conn = self.checkpointer.hot_connection(self.engine.connect())
                outcomes = settlemod.settle_batch(self._conn, [(b[0], b[1]) for b in batch])
            except Exception as e:
                if self._conn is not None:
                    try:
                        self._conn.close()
                    except Exception:
                        pass
                    self._conn = None
                # Nothing committed, nothing acknowledged: retry the same batch (the
                # database may be restarting), keeping the connection alive meanwhile.
                # Stopping leaves it to redelivery.
                log.error(log_line({"event": "batch_failed", "n": len(batch),
                                    "error": str(e).splitlines()[0][:200]}))
                deadline = time.monotonic() + delay
                while not self.stopping.is_set() and time.monotonic() < deadline:
                    try:
                        if self._client.socket() is not None:
                            self._pump(min(0.2, max(0.0, deadline - time.monotonic())))
                        else:
                            self.stopping.wait(0.2)
                    except Exception:
                        self.stopping.wait(0.2)
                if self.stopping.is_set():
                    return False
                delay = min(delay * 2, 10)
        done = time.perf_counter()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        logging_on = verdict_log.isEnabledFor(logging.INFO)
        lines = []
        queue = self._client.queue
        with self._client.held():  # results, records and acks leave in few send()s
            for item, out in zip(batch, outcomes):
                if out.result is not None:
                    queue(self._topic(topics.results, out.kiosk), out.result)
                if out.settlement is not None:
                    queue(self._topic(topics.settlements, out.merchant), out.settlement)
                if logging_on:
                    fields = dict(out.log)
                    fields["ms"] = "%.1f" % ((done - item[5]) * 1000)
                    lines.append("%s INFO %s" % (stamp, log_line(fields)))
            gen = self.generation
            for item in batch:
                if item[3] > 0 and item[4] == gen:
                    self._client.ack(item[2], item[3])
        if lines:
            verdict_log.info("\n".join(lines))
        self.settled += len(batch)
        return True

    def _topic(self, build, ident):
        key = (build, ident)
        t = self._topics.get(key)
        if t is None:
            t = self._topics[key] = build(ident)
        return t

    def _maybe_publish_configs(self):
        """Republish every kiosk's retained config when the lists, rules or registry
        changed (the CLI bumps counters in the database; several bridges may share it)."""
        if not self.connected.is_set():
            return
        if self._versions is not None and time.monotonic() - self._versions_checked < self.poll_s:
            return
        self._versions_checked = time.monotonic()
        try:
            with self.engine.connect() as conn:
                v = (dbmod.counter(conn, "lists_version"), dbmod.counter(conn, "registry_version"))
            if v != self._versions:
                n = config.publish_all(self, self.engine)
                self._versions = v
                log.info(log_line({"event": "configs_published", "kiosks": n,
                                   "lists_version": v[0]}))
        except Exception as e:
            log.error(log_line({"event": "config_failed", "error": str(e).splitlines()[0][:200]}))

    # -- lifecycle --
    def start(self, timeout=10):
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.session_expiry
        props.ReceiveMaximum = 1000
        try:
            self._client.connect(self.host, self.port, keepalive=30, clean_start=False,
                                 properties=props)
        except OSError as e:
            raise BridgeError("cannot reach the broker at %s:%d (%s): is mosquitto running? "
                              "check --broker" % (self.host, self.port, e.strerror or e))
        self._worker.start()
        self.checkpointer.start()
        if timeout and not self.connected.wait(timeout):
            self.stop()
            raise BridgeError("broker at %s:%d did not accept the connection: check --user/"
                              "--password and the broker's log" % (self.host, self.port))
        return self

    def stop(self):
        """Finish the current batch, publish offline state, disconnect."""
        self.stopping.set()
        if self._worker.is_alive():
            self._worker.join(timeout=10)
        self.checkpointer.stop()
        if self._worker.is_alive():
            return  # stuck in the database: leave it to the broker (will message)
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        try:
            if self.connected.is_set() and self._client.socket() is not None:
                info = self._client.publish(topics.BRIDGE_STATE, self._state("offline"),
                                            qos=1, retain=True)
                deadline = time.monotonic() + 2
                while not info.is_published() and time.monotonic() < deadline and \
                        self._client.socket() is not None:
                    self._pump(0.1)
            self._client.disconnect()
        except Exception:
            pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
