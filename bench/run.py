"""`make bench`: every benchmark, one table, and bench/results.json (DESIGN.md 7).

Each benchmark module has run() -> [{"name", "value", "unit", "baseline", "ratio", "detail"}]
and runs alone too (`.venv/bin/python bench/NAME.py`). Baselines are measured in the same
run, so figures read as ratios on a noisy machine. Pick some with: bench/run.py rc522 bridge
"""
import importlib
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

BENCHES = ["rc522_bench", "firmware_bench", "bridge_bench", "fsync_tail", "drill"]


def main(argv):
    chosen = [b for b in BENCHES if not argv or any(a in b for a in argv)]
    rows = []
    for name in chosen:
        t0 = time.time()
        print("running %s ..." % name, flush=True)
        try:
            got = importlib.import_module(name).run()
        except Exception as e:  # one broken bench must not hide the others' figures
            got = [{"name": name + ".error", "value": None, "unit": "", "baseline": None, "ratio": None,
                    "detail": "%s: %s" % (type(e).__name__, e)}]
        for r in got:
            r.setdefault("detail", "")
            r["detail"] = (r["detail"] + " " if r["detail"] else "") + "[%s, %.0f s]" % (name, time.time() - t0)
        rows += got
    print()
    print("%-28s %12s %-10s %12s %8s" % ("name", "value", "unit", "baseline", "ratio"))
    for r in rows:
        fmt = lambda v: "-" if v is None else ("%.3g" % v if isinstance(v, float) else str(v))
        print("%-28s %12s %-10s %12s %8s" % (r["name"], fmt(r["value"]), r["unit"], fmt(r.get("baseline")),
                                           fmt(r.get("ratio"))))
    path = os.path.join(HERE, "results.json")
    with open(path, "w") as f:
        json.dump(rows, f, indent=1)
    print("\nwrote %s" % path)
    return 1 if any(r["name"].endswith(".error") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
