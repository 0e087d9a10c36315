# host-only. The disk's share of the bridge's p99 (issue 5): how long an fdatasync of one
# commit's worth of WAL (13 pages, overwritten in place as SQLite does after a WAL restart)
# takes on this machine at 500 commits a second, with the CPUs idle and then with every
# CPU busy (as the bench's load generator, Mosquitto and bridge keep them), the busy
# processes at normal priority and then at SCHED_IDLE. No SQLite, no MQTT: the floor under
# any bridge on this disk.
#
#   .venv/bin/python bench/fsync_tail.py [--dir DIR] [--n 3000]   # about 30 s
import argparse
import os
import subprocess
import sys
import tempfile
import time

PAGE = 4096 + 24  # a WAL frame: page plus frame header
PAGES = 13        # what one one-swipe commit writes (strace of the bridge)
RATE = 500
RING = 200        # commits' worth of file reused in turn (10 MB), as a restarted WAL is


def _pct(values, p):
    return values[min(len(values) - 1, int(p / 100.0 * len(values)))]


def measure(folder, n):
    """-> sorted fdatasync times in ms, n commits of PAGES frames, paced at RATE a second."""
    chunk = os.urandom(PAGES * PAGE)
    fd, path = tempfile.mkstemp(prefix="fsync-tail-", dir=folder)
    try:
        zeros = b"\0" * len(chunk)
        for _ in range(RING):  # allocate and write every block first: overwrites, as in a WAL
            os.write(fd, zeros)
        os.fsync(fd)
        times = []
        t0 = time.perf_counter()
        for i in range(n):
            delay = t0 + i / RATE - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            os.pwrite(fd, chunk, (i % RING) * len(chunk))
            t = time.perf_counter()
            os.fdatasync(fd)
            times.append((time.perf_counter() - t) * 1000)
        return sorted(times)
    finally:
        os.close(fd)
        os.unlink(path)


def _hogs(count, idle):
    """count busy-looping processes (SCHED_IDLE if idle) until killed."""
    code = "import os\n%swhile True: pass\n" % (
        "os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))\n" if idle else "")
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(count)]


CASES = (("idle", 0, False), ("busy", None, False), ("busy_sched_idle", None, True))


def cases(folder, n):
    """-> [(case, sorted ms)]: CPUs idle, every CPU busy, every CPU busy at SCHED_IDLE."""
    out = []
    for name, count, idle in CASES:
        hogs = _hogs(os.cpu_count() or 1 if count is None else count, idle)
        try:
            out.append((name, measure(folder, n)))
        finally:
            for h in hogs:
                h.kill()
                h.wait()
    return out


def run(folder=None, n=3000):
    """bench/run.py's interface: p99 per case, against the idle case."""
    got = cases(folder or tempfile.gettempdir(), n)
    idle = _pct(got[0][1], 99)
    return [{"name": "fsync.p99_ms_" + name, "value": round(_pct(t, 99), 2), "unit": "ms",
             "baseline": round(idle, 2), "ratio": round(_pct(t, 99) / idle, 2),
             "detail": "fdatasync of %d KB overwritten in place, %d a second, %d times, %s: "
                       "p50 %.2f, p99.9 %.2f, max %.2f ms, %.1f%% over 5 ms; the floor under "
                       "the bridge's p99 on this disk (bridge.p99_ms_at_500)" % (
                           PAGES * PAGE // 1024, RATE, n,
                           {"idle": "CPUs idle", "busy": "every CPU busy",
                            "busy_sched_idle": "every CPU busy at SCHED_IDLE"}[name],
                           _pct(t, 50), _pct(t, 99.9), t[-1],
                           100.0 * sum(1 for x in t if x > 5) / len(t))}
            for name, t in got]


def main():
    ap = argparse.ArgumentParser(description="fdatasync tail of this disk, idle and with busy CPUs")
    ap.add_argument("--dir", default=tempfile.gettempdir(),
                    help="folder on the disk to measure (default: the temp folder)")
    ap.add_argument("--n", type=int, default=3000, help="commits per case")
    args = ap.parse_args()
    print("fdatasync of %d KB overwritten in place, %d a second, %d per case, in %s"
          % (PAGES * PAGE // 1024, RATE, args.n, args.dir))
    print("%-18s %7s %7s %7s %7s %7s" % ("CPUs", "p50", "p99", "p99.9", "max", ">5ms"))
    for name, t in cases(args.dir, args.n):
        print("%-18s %7.2f %7.2f %7.2f %7.2f %6.1f%%" % (
            name, _pct(t, 50), _pct(t, 99), _pct(t, 99.9), t[-1],
            100.0 * sum(1 for x in t if x > 5) / len(t)))
    print("ms; a commit this slow holds back every swipe behind it on the bridge's thread")
    return 0


if __name__ == "__main__":
    sys.exit(main())
