# host-only. Paired A/B of two versions of the bridge (two source trees), for changes too
# small to see through this machine's noise in bridge_bench.py. Each side gets its own
# Mosquitto, database, bridge process and load generator; rounds alternate A, B, B, A, ...
# so a slow minute hits both. Prints each round and the medians.
#
#   git worktree add /tmp/before HEAD~1
#   .venv/bin/python bench/bridge_ab.py /tmp/before .              # bursts, 6 rounds
#   .venv/bin/python bench/bridge_ab.py /tmp/before . --rate 500   # latency at 500/s
#   options: --rounds N, --n SWIPES per round, --grow BURSTS first (a grown database)
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import bridge_bench as bb  # noqa: E402
from tests.brokers import bridge_env, start_mosquitto, stop_process, wait_log  # noqa: E402


class Side:
    def __init__(self, name, tree):
        self.name, self.tree = name, os.path.abspath(tree)
        self.dir = tempfile.mkdtemp(prefix="aixin-ab-")
        self.port, self.broker = start_mosquitto(self.dir)
        db, _engine, self.info = bb._site(self.dir)
        log = os.path.join(self.dir, "bridge.log")
        env = bridge_env()
        env["PYTHONPATH"] = self.tree  # this side's code
        self.bridge = subprocess.Popen(
            [sys.executable, "-m", "bridge", "--db", db, "serve", "--broker",
             "mqtt://127.0.0.1:%d" % self.port], cwd=self.tree, env=env,
            stdout=open(log, "ab"), stderr=subprocess.STDOUT)
        wait_log(log, "event=connected")
        self.loader = bb.Loader(self.port)
        self.seq = 1
        self.rounds = []

    def run(self, n, rate=None):
        items = bb._swipes(self.info["keys"], list(self.info["cards"].values()), self.seq, n)
        self.seq += -(-n // bb.N_KIOSKS)
        cpu0 = bb._cpu_s(self.bridge.pid)
        r = self.loader.run(items, rate=rate)
        r["us"] = 1e6 * (bb._cpu_s(self.bridge.pid) - cpu0) / n
        return r

    def close(self):
        self.loader.close()
        bb._stop(self.bridge)
        stop_process(self.broker)
        shutil.rmtree(self.dir, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description="Paired A/B of two bridge source trees.")
    ap.add_argument("tree_a")
    ap.add_argument("tree_b")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--rate", type=int, default=None, help="swipes/s; default: bursts")
    ap.add_argument("--grow", type=int, default=0, help="unmeasured bursts first")
    args = ap.parse_args()
    sides = []
    try:
        for name, tree in (("A", args.tree_a), ("B", args.tree_b)):
            sides.append(Side(name, tree))
        for s in sides:
            s.run(500)
            for _ in range(args.grow):
                s.run(bb.BURST)
        for k in range(args.rounds):
            for s in (sides if k % 2 == 0 else sides[::-1]):
                s.rounds.append(s.run(args.n, args.rate))
            a, b = sides[0].rounds[-1], sides[1].rounds[-1]
            print("round %d: " % k + " | ".join(
                "%s %.0f/s %.0f us/swipe p50 %.1f p99 %.1f ms" % (
                    s.name, r["per_s"], r["us"], r["p50_ms"], r["p99_ms"])
                for s, r in ((sides[0], a), (sides[1], b))), flush=True)
        for s in sides:
            med = [statistics.median(r[k] for r in s.rounds)
                   for k in ("per_s", "us", "p50_ms", "p99_ms")]
            print("%s (%s): median %.0f swipes/s, %.0f us of bridge CPU per swipe, p50 %.1f, "
                  "p99 %.1f ms" % tuple([s.name, s.tree] + med))
    finally:
        for s in sides:
            s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
