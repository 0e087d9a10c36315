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

from bridge import mqtt_io  # noqa: E402
from bridge.mqtt_io import quiet_client  # noqa: E402
from tests.brokers import (bridge_env, seed_site, start_bridge_process,  # noqa: E402
                           start_mosquitto, stop_process, wait_log)

N_KIOSKS = 20
N_CARDS = 200
BURST = 5000          # swipes for the throughput figure
RATE = 500            # offered load for the latency figure, per second
RATE_SECONDS = 6
LOW_RATE = 200        # a second, lighter load, for the detail line
ROUNDS = 3            # echo and bridge measured in turns, ROUNDS times each; medians kept
SHM = "/dev/shm"      # tmpfs, for the diagnostic run with the database in memory
# The echo has topics of its own (same length as the kiosks'), so the echo and the bridge
# both stay up and warm and are measured in alternation: a slow minute on this shared
# machine then hits both sides of a ratio, not one.
ECHO_TOPIC = "aixin/v1/echo_k/%s/%s"
SWIPE_TOPIC = "aixin/v1/kiosks/%s/swipes"
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
    """QoS 1 echo shaped like the bridge: the same client class and loop (mqtt_io: reads
    from memory, held writes), swipes in, result out, manual ack after; no settling."""
    c = mqtt_io.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-echo",
                       protocol=mqtt.MQTTv5, manual_ack=True)
    c.on_socket_open = _nodelay
    inbox = []
    c.on_message = lambda client, userdata, m: inbox.append(m)

    def on_connect(client, userdata, flags, reason_code, properties):
        client.window_from(properties)
        client.subscribe(ECHO_TOPIC % ("+", "swipes"), qos=1)
    c.on_connect = on_connect
    c.connect("127.0.0.1", port)
    print("echo ready", flush=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    while not stop and c.pump(0 if inbox else 1.0, lambda: len(inbox) < 500):
        if inbox:
            with c.held():
                for m in inbox:
                    c.queue(ECHO_TOPIC % (m.topic.split("/")[3], "results"), m.payload)
                    c.ack(m.mid, m.qos)
            del inbox[:]
    c.disconnect()


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
        c.subscribe([("aixin/v1/kiosks/+/results", 1), (ECHO_TOPIC % ("+", "results"), 1)])
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

    def run(self, items, rate=None, timeout=120, topic=SWIPE_TOPIC):
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
            self.client.publish(topic % kiosk, payload, qos=1)
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


def _median(values):
    values = sorted(values)
    return values[len(values) // 2]


def _site(folder):
    """A seeded bench site in folder: 20 kiosks, 200 residents with money, no caps."""
    from bridge import pricing
    db = os.path.join(folder, "bench.db")
    residents = [("r%d" % i, "1940-01-01" if i % 3 == 0 else "1955-06-01", [],
                  "B%07d" % i, 10**8) for i in range(N_CARDS)]
    engine, info = seed_site(db, kiosks=[("K%02d" % i, "meal") for i in range(N_KIOSKS)],
                             residents=residents)
    rules = os.path.join(folder, "uncapped.json")
    with open(rules, "w") as f:
        json.dump(UNCAPPED, f)
    pricing.load(engine, rules)
    return db, engine, info


def _stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def measure(workdir):
    """-> dict of lists, one entry per round: echo_burst, bridge_burst, echo_rate,
    bridge_rate, tmpfs_rate; plus low (the bridge at LOW_RATE) and check (ledger check)."""
    from bridge import ledger
    port, broker = start_mosquitto(workdir)
    procs = []
    out = {"echo_burst": [], "bridge_burst": [], "echo_rate": [], "bridge_rate": [],
           "tmpfs_rate": []}
    try:
        echo = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--echo", str(port)],
                                cwd=REPO, env=bridge_env(), stdout=subprocess.PIPE, text=True)
        procs.append(echo)
        echo.stdout.readline()

        db, engine, info = _site(workdir)
        log = os.path.join(workdir, "bridge.log")
        bridge = start_bridge_process(db, port, log)
        procs.append(bridge)
        wait_log(log, "event=connected")

        loader = Loader(port)
        seq = [1, 1]  # next bridge seq, next echo seq

        def bridge_items(n, site=info):
            items = _swipes(site["keys"], list(site["cards"].values()), seq[0], n)
            seq[0] += -(-n // N_KIOSKS)
            return items

        def echo_items(n):
            items = _echo_items(n, seq[1])
            seq[1] += n
            return items

        def timed(proc, items, rate, topic):
            cpu0, t0 = _cpu_s(proc.pid), time.perf_counter()
            own0, brk0 = time.process_time(), _cpu_s(broker.pid)
            r = loader.run(items, rate=rate, topic=topic)
            dt = time.perf_counter() - t0
            used = {"cpu": _cpu_s(proc.pid) - cpu0, "loader_cpu": time.process_time() - own0,
                    "broker_cpu": _cpu_s(broker.pid) - brk0}
            for k, v in used.items():
                r[k] = v / dt                       # share of one CPU
                r[k + "_us"] = 1e6 * v / len(items)  # CPU microseconds per message
            return r

        echo_topic = ECHO_TOPIC % ("%s", "swipes")
        loader.run(echo_items(500), topic=echo_topic)  # warm-up, both sides
        loader.run(bridge_items(500))
        for _ in range(ROUNDS):
            out["echo_burst"].append(timed(echo, echo_items(BURST), None, echo_topic))
            out["bridge_burst"].append(timed(bridge, bridge_items(BURST), None, SWIPE_TOPIC))
        for _ in range(ROUNDS):
            out["echo_rate"].append(timed(echo, echo_items(RATE * RATE_SECONDS), RATE,
                                          echo_topic))
            out["bridge_rate"].append(timed(bridge, bridge_items(RATE * RATE_SECONDS), RATE,
                                            SWIPE_TOPIC))
        out["low"] = loader.run(bridge_items(LOW_RATE * 4), rate=LOW_RATE)
        out["check"] = ledger.check(engine)
        # Diagnostic, not a target: the same bridge with its database in memory (tmpfs,
        # not durable), so what the disk's fdatasync adds to the tail can be read off.
        if os.path.isdir(SHM):
            _stop(bridge)
            shm = tempfile.mkdtemp(prefix="aixin-bench-", dir=SHM)
            try:
                db2, engine2, info2 = _site(shm)
                log2 = os.path.join(workdir, "bridge-tmpfs.log")
                bridge2 = start_bridge_process(db2, port, log2)
                procs.append(bridge2)
                wait_log(log2, "event=connected")
                for _ in range(ROUNDS):  # unmeasured: a database as grown as the other's
                    loader.run(bridge_items(BURST, info2))
                for _ in range(ROUNDS):
                    out["tmpfs_rate"].append(timed(bridge2, bridge_items(
                        RATE * RATE_SECONDS, info2), RATE, SWIPE_TOPIC))
                _stop(bridge2)
                engine2.dispose()
            finally:
                shutil.rmtree(shm, ignore_errors=True)
        loader.close()
        return out
    finally:
        for p in procs:
            _stop(p)
        stop_process(broker)


def run():
    workdir = tempfile.mkdtemp(prefix="aixin-bench-", dir=os.environ.get("BENCH_DIR"))
    try:
        m = measure(workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    eb, bb, er, br = m["echo_burst"], m["bridge_burst"], m["echo_rate"], m["bridge_rate"]
    ratios = [b["per_s"] / e["per_s"] for e, b in zip(eb, bb)]
    settle, base, ratio = _median([b["per_s"] for b in bb]), _median([e["per_s"] for e in eb]), \
        _median(ratios)
    p99, echo_p99 = _median([b["p99_ms"] for b in br]), _median([e["p99_ms"] for e in er])
    mid = sorted(br, key=lambda b: b["p99_ms"])[len(br) // 2]  # the median round, for detail
    low = m["low"]
    tm = m["tmpfs_rate"]
    common = "loopback Mosquitto (set_tcp_nodelay), paho MQTT 5 QoS 1, TCP_NODELAY, " \
             "SQLite WAL synchronous=FULL; %d kiosks, %d cards; medians of %d rounds, echo " \
             "and bridge in turns" % (N_KIOSKS, N_CARDS, ROUNDS)
    rounds = lambda xs, k, f="%.0f": "/".join(f % x[k] for x in xs)  # noqa: E731
    return [
        {"name": "bridge.settle_per_s", "value": round(settle, 1), "unit": "swipes/s",
         "baseline": round(base, 1), "ratio": round(ratio, 3),
         "detail": "%d swipes per round as fast as offered, all approved and booked; rounds "
                   "%s swipes/s against echo %s msgs/s, ratios %s; ledger check %s; %s"
                   % (BURST, rounds(bb, "per_s"), rounds(eb, "per_s"),
                      "/".join("%.2f" % r for r in ratios),
                      "ok" if m["check"]["ok"] else "FAILED", common)},
        {"name": "bridge.echo_baseline_per_s", "value": round(base, 1), "unit": "msgs/s",
         "baseline": None, "ratio": None,
         "detail": "raw QoS 1 echo of %d messages per round (subscribe, republish, manual "
                   "ack), same load generator; rounds %s msgs/s" % (BURST, rounds(eb, "per_s"))},
        {"name": "bridge.p99_ms_at_500", "value": round(p99, 2), "unit": "ms",
         "baseline": round(echo_p99, 2), "ratio": round(p99 / echo_p99, 2),
         "detail": "verdict latency (publish to result received) at %d swipes/s offered for "
                   "%d s per round: p99 rounds %s ms, p50 rounds %s ms; median round: max %.1f "
                   "ms, %d/%d answered, bridge process CPU %.0f%% of one core (load generator "
                   "%.0f%%, Mosquitto %.0f%%); baseline is the echo's median p99 at the same "
                   "rate (rounds %s ms, echo CPU %.0f%%); at %d/s: p50 %.2f ms, p99 %.2f ms; "
                   "%d CPUs" % (
                       RATE, RATE_SECONDS, rounds(br, "p99_ms", "%.1f"),
                       rounds(br, "p50_ms", "%.1f"), mid["max_ms"], mid["answered"], mid["n"],
                       100 * mid["cpu"], 100 * mid["loader_cpu"], 100 * mid["broker_cpu"],
                       rounds(er, "p99_ms", "%.1f"), 100 * _median([e["cpu"] for e in er]),
                       LOW_RATE, low["p50_ms"], low["p99_ms"], os.cpu_count())},
        _ceiling(bb, eb, base),
    ] + ([
        {"name": "bridge.p99_ms_at_500_tmpfs", "value": round(_median([b["p99_ms"] for b in tm]), 2),
         "unit": "ms", "baseline": round(p99, 2),
         "ratio": round(_median([b["p99_ms"] for b in tm]) / p99, 2),
         "detail": "diagnostic, not durable: the same bridge and load with its SQLite file "
                   "on tmpfs (%s, grown by the same bursts first), so the commit's fdatasync "
                   "costs nothing; p99 rounds %s ms, "
                   "p50 rounds %s ms, bridge CPU %s%%; baseline is bridge.p99_ms_at_500 (on "
                   "disk): the difference is what the disk adds" % (
                       SHM, rounds(tm, "p99_ms", "%.1f"), rounds(tm, "p50_ms", "%.1f"),
                       "/".join("%.0f" % (100 * b["cpu"]) for b in tm))},
    ] if tm else [])


def _ceiling(bb, eb, echo_rate, target=0.6):
    """What this machine's CPUs allow, from the CPU each process spent per message in the
    burst rounds (medians): the bridge is one thread, so it settles at most 1/u_bridge a
    second, and bridge, load generator and Mosquitto together at most ncpu/(sum) a second.
    Also the bridge's own cost per swipe that `target` times the echo would need."""
    ncpu = os.cpu_count() or 1
    med = lambda rs, k: _median([r[k] for r in rs])  # noqa: E731
    ub, ul, um = med(bb, "cpu_us"), med(bb, "loader_cpu_us"), med(bb, "broker_cpu_us")
    es, el, em = med(eb, "cpu_us"), med(eb, "loader_cpu_us"), med(eb, "broker_cpu_us")
    most = min(1e6 / ub, ncpu * 1e6 / (ub + ul + um))
    want = target * echo_rate
    need = min(1e6 / want, ncpu * 1e6 / want - ul - um)
    return {"name": "bridge.cpu_us_per_swipe", "value": round(ub), "unit": "us",
            "baseline": round(es), "ratio": round(ub / es, 2),
            "detail": "CPU per message in the burst rounds (medians): bridge %.0f us, load "
                      "generator %.0f, Mosquitto %.0f; echo %.0f us, load generator %.0f, "
                      "Mosquitto %.0f. With %d CPUs and these costs the bridge can settle at "
                      "most %.0f swipes/s (%.2f of the echo's median) even using every idle "
                      "cycle; %.1f of the echo needs the bridge at or below %.0f us a swipe"
                      % (ub, ul, um, es, el, em, ncpu, most, most / echo_rate, target, need)}


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
