# host-only. Bridge benchmark (issue 5, DESIGN.md 7): settled swipes per second and
# verdict latency through a real Mosquitto with durable commits (SQLite WAL,
# synchronous=FULL), next to a raw MQTT QoS 1 echo measured in the same run with the
# same load generator, so the figures read as ratios.
#
#   .venv/bin/python bench/bridge_bench.py            # prints a table; run() returns rows
#
# Both servers run as their own processes (the bridge through `python -m bridge serve`, the
# echo through this file with --echo), so the load generator never shares their GIL.
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import paho.mqtt.client as mqtt  # noqa: E402

from bridge.serve import quiet_client  # noqa: E402
from tests.brokers import (bridge_env, seed_site, start_bridge_process,  # noqa: E402
                           start_mosquitto, stop_process, wait_log)

N_KIOSKS = 20
N_CARDS = 200
BURST = 5000          # swipes for the throughput figure
RATE = 500            # offered load for the latency figure, per second
RATE_SECONDS = 6
LOW_RATE = 200        # a second, lighter load, for the detail line
UNCAPPED = {
    "timezone": "Asia/Shanghai",
    "funds": {"civil_affairs": "subsidy", "village": "village fund"},
    "groups": [{"name": "age_80_plus", "min_age": 80}, {"name": "age_60_79", "min_age": 60}],
    "services": {"meal": {"price": 1000, "split": {
        "age_60_79": {"civil_affairs": 300},
        "age_80_plus": {"civil_affairs": 500, "village": 200}}}},
}


def _nodelay(client, userdata, sock):
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _client(client_id, **kw):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                    protocol=mqtt.MQTTv5, **kw)
    quiet_client(c)  # as the bridge: no reference cycle per message received
    c.on_socket_open = _nodelay
    c.max_inflight_messages_set(50)  # as the bridge: paho's PUBACK handling is O(window)
    c.max_queued_messages_set(0)
    return c


# -- the raw echo: what a bridge that did no work at all would cost --
def echo_server(port):
    """QoS 1 echo shaped like the bridge: swipes in, result out, manual ack after."""
    c = _client("bench-echo", manual_ack=True)

    def on_message(client, userdata, m):
        kiosk = m.topic.split("/")[3]
        client.publish("aixin/v1/kiosks/%s/results" % kiosk, m.payload, qos=1)
        client.ack(m.mid, m.qos)

    c.on_message = on_message
    c.on_connect = lambda cl, ud, fl, rc, pr: cl.subscribe("aixin/v1/kiosks/+/swipes", qos=1)
    c.connect("127.0.0.1", port)
    print("echo ready", flush=True)
    signal.signal(signal.SIGTERM, lambda *a: c.disconnect())
    c.loop_forever()


class Loader:
    """Publishes prepared (kiosk, seq, payload) swipes and times each verdict."""

    def __init__(self, port):
        self.sent = {}
        self.got = {}
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.expect = 0
        c = self.client = _client("bench-loader")
        c.on_message = self._on_message
        c.connect("127.0.0.1", port)
        c.subscribe("aixin/v1/kiosks/+/results", qos=1)
        c.loop_start()
        time.sleep(0.3)

    def _on_message(self, client, userdata, m):
        now = time.perf_counter()
        msg = json.loads(m.payload)
        key = (msg["kiosk"], msg["seq"])
        with self.lock:
            if key not in self.got:
                self.got[key] = now
                if len(self.got) >= self.expect:
                    self.done.set()

    def run(self, items, rate=None, timeout=120):
        """items: [(kiosk, seq, payload bytes)]. rate None: as fast as possible."""
        self.sent, self.got = {}, {}
        self.expect = len(items)
        self.done.clear()
        t0 = time.perf_counter()
        for i, (kiosk, seq, payload) in enumerate(items):
            if rate:  # paced: sleep (never spin: the servers need the CPUs)
                d = t0 + i / rate - time.perf_counter()
                if d > 0:
                    time.sleep(d)
            self.sent[(kiosk, seq)] = time.perf_counter()
            self.client.publish("aixin/v1/kiosks/%s/swipes" % kiosk, payload, qos=1)
        self.done.wait(timeout)
        t_end = max(self.got.values()) if self.got else time.perf_counter()
        lat = sorted((self.got[k] - self.sent[k]) * 1000 for k in self.got)
        return {"n": len(items), "answered": len(self.got), "seconds": t_end - t0,
                "per_s": len(self.got) / (t_end - t0), "p50_ms": _pct(lat, 50),
                "p99_ms": _pct(lat, 99), "max_ms": lat[-1] if lat else None}

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def _cpu_s(pid):
    """CPU seconds (user + system) a process has used so far (Linux /proc)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def _pct(sorted_values, p):
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, int(round(p / 100.0 * (len(sorted_values) - 1))))
    return sorted_values[i]


def _swipes(keys, cards, start_seq, n):
    """n pre-signed swipes round-robin over kiosks and cards, seqs from start_seq."""
    from protocol import messages, utctime
    kiosks = sorted(keys)
    out = []
    ts = utctime.iso(time.time())
    for i in range(n):
        k = kiosks[i % len(kiosks)]
        seq = start_seq + i // len(kiosks)
        msg = messages.swipe(k, seq, ts, cards[i % len(cards)], "uid", "meal", False, keys[k])
        out.append((k, seq, json.dumps(msg).encode()))
    return out


def _echo_items(n, start):
    return [("E%d" % (i % N_KIOSKS), start + i, json.dumps(
        {"kiosk": "E%d" % (i % N_KIOSKS), "seq": start + i, "pad": "x" * 180}).encode())
        for i in range(n)]


def measure(workdir):
    from bridge import pricing
    port, broker = start_mosquitto(workdir)
    procs = []
    try:
        # 1. baseline: raw QoS 1 echo
        echo = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--echo", str(port)],
                                cwd=REPO, env=bridge_env(), stdout=subprocess.PIPE, text=True)
        procs.append(echo)
        echo.stdout.readline()
        loader = Loader(port)
        loader.run(_echo_items(500, 10**6))  # warm-up
        echo_burst = loader.run(_echo_items(BURST, 1))
        cpu0, t0 = _cpu_s(echo.pid), time.perf_counter()
        echo_rate = loader.run(_echo_items(RATE * RATE_SECONDS, 2 * 10**6), rate=RATE)
        echo_rate["cpu"] = (_cpu_s(echo.pid) - cpu0) / (time.perf_counter() - t0)
        stop_process(echo)

        # 2. the bridge, durable SQLite in workdir
        db = os.path.join(workdir, "bench.db")
        residents = [("r%d" % i, "1940-01-01" if i % 3 == 0 else "1955-06-01", [],
                      "B%07d" % i, 10**8) for i in range(N_CARDS)]
        engine, info = seed_site(db, kiosks=[("K%02d" % i, "meal") for i in range(N_KIOSKS)],
                                 residents=residents)
        rules = os.path.join(workdir, "uncapped.json")
        with open(rules, "w") as f:
            json.dump(UNCAPPED, f)
        pricing.load(engine, rules)
        cards = list(info["cards"].values())
        log = os.path.join(workdir, "bridge.log")
        bridge = start_bridge_process(db, port, log)
        procs.append(bridge)
        wait_log(log, "event=connected")
        seq = 1
        warm = _swipes(info["keys"], cards, seq, 500)
        seq += 500 // N_KIOSKS
        loader.run(warm)
        burst = _swipes(info["keys"], cards, seq, BURST)
        seq += BURST // N_KIOSKS
        bridge_burst = loader.run(burst)
        paced = _swipes(info["keys"], cards, seq, RATE * RATE_SECONDS)
        cpu0, t0 = _cpu_s(bridge.pid), time.perf_counter()
        own0, brk0 = time.process_time(), _cpu_s(broker.pid)
        bridge_rate = loader.run(paced, rate=RATE)
        dt = time.perf_counter() - t0
        bridge_rate["cpu"] = (_cpu_s(bridge.pid) - cpu0) / dt
        bridge_rate["loader_cpu"] = (time.process_time() - own0) / dt
        bridge_rate["broker_cpu"] = (_cpu_s(broker.pid) - brk0) / dt
        seq += RATE * RATE_SECONDS // N_KIOSKS
        low = loader.run(_swipes(info["keys"], cards, seq, LOW_RATE * 4), rate=LOW_RATE)
        bridge_rate["low"] = low
        loader.close()
        from bridge import ledger
        check = ledger.check(engine)
        return echo_burst, echo_rate, bridge_burst, bridge_rate, check
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        stop_process(broker)


def run():
    workdir = tempfile.mkdtemp(prefix="aixin-bench-", dir=os.environ.get("BENCH_DIR"))
    try:
        echo_burst, echo_rate, bridge_burst, bridge_rate, check = measure(workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    settle = bridge_burst["per_s"]
    base = echo_burst["per_s"]
    common = "loopback Mosquitto (set_tcp_nodelay), paho MQTT 5 QoS 1, TCP_NODELAY, " \
             "SQLite WAL synchronous=FULL; %d kiosks, %d cards" % (N_KIOSKS, N_CARDS)
    return [
        {"name": "bridge.settle_per_s", "value": round(settle, 1), "unit": "swipes/s",
         "baseline": round(base, 1), "ratio": round(settle / base, 3),
         "detail": "%d swipes as fast as offered, all approved and booked; p50 %.1f ms, p99 "
                   "%.1f ms under that burst; ledger check %s; %s"
                   % (bridge_burst["answered"], bridge_burst["p50_ms"], bridge_burst["p99_ms"],
                      "ok" if check["ok"] else "FAILED", common)},
        {"name": "bridge.echo_baseline_per_s", "value": round(base, 1), "unit": "msgs/s",
         "baseline": None, "ratio": None,
         "detail": "raw QoS 1 echo of %d messages (subscribe, republish, manual ack), same "
                   "load generator; p50 %.1f ms p99 %.1f ms" % (
                       echo_burst["answered"], echo_burst["p50_ms"], echo_burst["p99_ms"])},
        {"name": "bridge.p99_ms_at_500", "value": round(bridge_rate["p99_ms"], 2), "unit": "ms",
         "baseline": round(echo_rate["p99_ms"], 2),
         "ratio": round(bridge_rate["p99_ms"] / echo_rate["p99_ms"], 2),
         "detail": "verdict latency (publish to result received) at %d swipes/s offered for "
                   "%d s: p50 %.2f ms, p99 %.2f ms, max %.1f ms, %d/%d answered, bridge "
                   "process CPU %.0f%% of one core (load generator %.0f%%, Mosquitto %.0f%%); "
                   "baseline is the echo's p99 at the same rate (p50 %.2f ms, echo CPU %.0f%%); "
                   "at %d/s: p50 %.2f ms, p99 %.2f ms; "
                   "%d CPUs" % (
                       RATE, RATE_SECONDS, bridge_rate["p50_ms"], bridge_rate["p99_ms"],
                       bridge_rate["max_ms"], bridge_rate["answered"], bridge_rate["n"],
                       100 * bridge_rate["cpu"], 100 * bridge_rate["loader_cpu"],
                       100 * bridge_rate["broker_cpu"], echo_rate["p50_ms"], 100 * echo_rate["cpu"],
                       LOW_RATE, bridge_rate["low"]["p50_ms"], bridge_rate["low"]["p99_ms"],
                       os.cpu_count())},
    ]


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--echo":
        echo_server(int(sys.argv[2]))
        return 0
    rows = run()
    print("%-28s %12s %-9s %12s %7s" % ("name", "value", "unit", "baseline", "ratio"))
    for r in rows:
        print("%-28s %12s %-9s %12s %7s" % (r["name"], r["value"], r["unit"],
                                            r["baseline"] if r["baseline"] is not None else "-",
                                            r["ratio"] if r["ratio"] is not None else "-"))
    for r in rows:
        print("  %s: %s" % (r["name"], r["detail"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
