"""The site drill (issue 6, "Done when"): a whole site on this machine (private Mosquitto
with the generated accounts and ACL, the bridge as its own process on SQLite), 10 virtual
kiosks running the real firmware, 2,000 taps spread over them, and faults injected during
the run: the bridge killed with SIGKILL 3 times, the broker restarted once, one kiosk's
power cut in the middle of a journal write. Then the audit (bridge/audit.py): taps made,
booked, declined by reason, lost, double-booked, and the wall time.

    .venv/bin/python bench/drill.py [--kiosks 10 --taps 2000] [--dir var/drill]

run() returns rows {"name", "value", "unit", "baseline", "ratio", "detail"} (DESIGN.md 7).
"""
import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bridge import audit  # noqa: E402

HOLD_S = 0.3  # boards.sim.fleet.HOLD_S: the card leaves the reader after each tap


def schedule(seconds, rng, say):
    """The faults, one after another over the run, so each outage is its own."""
    async def faults(site, fleet):
        steps = [(0.12, "kill"), (0.30, "power"), (0.42, "kill"), (0.58, "broker"), (0.75, "kill")]
        t = 0.0
        for frac, what in steps:
            at = seconds * frac + rng.uniform(-0.03, 0.03) * seconds
            await asyncio.sleep(max(0.0, at - t))
            t0 = time.time()
            if what == "kill":
                depth = fleet.depth()
                await asyncio.to_thread(site.stop_bridge, True)
                down = rng.uniform(3.0, 5.0)
                say("%6.1f s  kill -9 the bridge (%d swipes journalled at the kiosks); back in %.1f s"
                    % (at, depth, down))
                await asyncio.sleep(down)
                await asyncio.to_thread(site.start_bridge)
            elif what == "broker":
                await asyncio.to_thread(site.stop_broker)
                say("%6.1f s  stop Mosquitto; start it again in 2 s" % at)
                await asyncio.sleep(2.0)
                await asyncio.to_thread(site.start_broker)
            else:
                kiosk = rng.choice(sorted(fleet.kiosks))
                torn = rng.randrange(1, 120)
                vk = await fleet.power_cycle(kiosk, torn, off_s=1.0)
                say("%6.1f s  power cut at %s %d bytes into journalling seq %d; rebooted, dropped %d "
                    "torn bytes, next seq %d" % (at, kiosk, torn, vk.cut_seq, vk.kiosk.journal.dropped,
                                                 vk.kiosk.journal.next_seq()))
            t = at + (time.time() - t0)
    return faults


def drill(kiosks=10, taps=2000, folder=None, seconds=None, seed=6, say=print):
    """Run the drill; returns (audit result, wall seconds, scripted seconds)."""
    rng = random.Random(seed)
    own = folder is None
    folder = folder or tempfile.mkdtemp(prefix="aixin-drill-")
    shutil.rmtree(folder, ignore_errors=True)
    per_kiosk = taps / kiosks
    seconds = seconds or max(10.0, per_kiosk * 0.15)  # the residents' own pace, holds not counted
    site, cards = audit.drill_site(folder, kiosks=kiosks, residents=max(40, taps // 6), seed=seed)
    script = audit.drill_script(cards, site.kiosk_ids(), taps, seconds, seed=seed)
    scripted = max(sum(d for d, _, _ in steps) + len(steps) * HOLD_S for steps in script.values())
    say("site %s: %d kiosks, %d residents, %d taps over about %.0f s (Mosquitto on 127.0.0.1:%d)"
        % (folder, kiosks, len(cards), taps, scripted, site.port))
    try:
        site.start()
        t0 = time.time()
        fleet, left = asyncio.run(audit.run_fleet(site, script, [schedule(scripted, rng, say)], drain_s=120))
        wall = time.time() - t0
        result = audit.audit(site.engine, fleet.taps, left)
    finally:
        site.stop()
        if own:
            shutil.rmtree(folder, ignore_errors=True)
    return result, wall, scripted


def rows(result, wall, scripted, kiosks):
    n = result["taps"]
    declined = sum(result["declined"].values())
    by = ", ".join("%s %d" % (k, v) for k, v in sorted(result["declined"].items()))
    return [
        {"name": "drill.taps", "value": n, "unit": "taps", "baseline": None, "ratio": None,
         "detail": "%d virtual kiosks; faults: bridge kill -9 x3, broker restart x1, power cut mid-write x1"
                   % kiosks},
        {"name": "drill.booked", "value": result["booked"], "unit": "taps", "baseline": n,
         "ratio": round(result["booked"] / n, 3) if n else None,
         "detail": "offline booked %d, flagged %d" % (result["offline_booked"], result["flagged"])},
        {"name": "drill.declined", "value": declined, "unit": "taps", "baseline": n,
         "ratio": round(declined / n, 3) if n else None, "detail": by},
        {"name": "drill.no_verdict", "value": result["no_verdict"], "unit": "taps", "baseline": n,
         "ratio": round(result["no_verdict"] / n, 3) if n else None,
         "detail": "showed 'no verdict' during an outage; each booked once later"},
        {"name": "drill.lost", "value": result["lost"], "unit": "taps", "baseline": 0, "ratio": None,
         "detail": "must be 0; journal left %d, nothing shown %d" % (result["journal_left"], result["no_feedback"])},
        {"name": "drill.double_booked", "value": result["double_booked"], "unit": "taps", "baseline": 0,
         "ratio": None, "detail": "must be 0; kiosk/DB disagree %d, phantom %d; ledger %s"
                                  % (result["disagree"], result["phantom"], "ok" if result["ledger_ok"] else "FAILED")},
        {"name": "drill.wall_s", "value": round(wall, 1), "unit": "s", "baseline": round(scripted, 1),
         "ratio": round(wall / scripted, 3),
         "detail": "baseline: the script's own duration (resident pace + card holds), no faults, no latency"},
        {"name": "drill.taps_per_s", "value": round(n / wall, 1), "unit": "taps/s",
         "baseline": round(n / scripted, 1), "ratio": round(scripted / wall, 3),
         "detail": "whole site on one machine, loopback"},
    ]


def run(kiosks=10, taps=2000, folder=None, say=lambda s: None):
    result, wall, scripted = drill(kiosks, taps, folder, say=say)
    return rows(result, wall, scripted, kiosks)


def main(argv=None):
    p = argparse.ArgumentParser(prog="bench/drill.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--kiosks", type=int, default=10)
    p.add_argument("--taps", type=int, default=2000)
    p.add_argument("--dir", help="site folder (kept); default a temporary one, removed")
    p.add_argument("--seed", type=int, default=6)
    args = p.parse_args(argv)
    result, wall, scripted = drill(args.kiosks, args.taps, args.dir, seed=args.seed)
    print()
    print(audit.table(result, extra=[("wall time", "%.1f s (script alone %.1f s)" % (wall, scripted)),
                                     ("taps per second", "%.1f" % (result["taps"] / wall))]))
    bad = audit.clean(result)
    print()
    print("%-20s %10s %-7s %10s %7s" % ("name", "value", "unit", "baseline", "ratio"))
    for r in rows(result, wall, scripted, args.kiosks):
        print("%-20s %10s %-7s %10s %7s" % (r["name"], r["value"], r["unit"],
                                            "-" if r["baseline"] is None else r["baseline"],
                                            "-" if r["ratio"] is None else r["ratio"]))
    if bad:
        print("\nDRILL FAILED: " + "; ".join(str(b) for b in bad[:10]))
        return 1
    print("\ndrill passed: nothing lost, nothing booked twice, ledger ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
