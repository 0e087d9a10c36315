"""Run device-side Python under real MicroPython (the WebAssembly port in Node).

host-only. Used by the pytest plugin in tests/conftest.py and by benchmarks:
- run_tests(test_file) -> [{"test", "ok", "output", "ms"}], one per test_* function;
- run_code(source) -> stdout of a script run under MicroPython (top-level await allowed).
"""
import json
import os
import shutil
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUNNER = os.path.join(ROOT, "tests", "mp", "runner.mjs")
PORT_PACKAGE = os.path.join(ROOT, "node_modules", "@micropython", "micropython-webassembly-pyscript")


class MicroPythonUnavailable(RuntimeError):
    pass


def _node():
    node = shutil.which("node")
    if not node:
        raise MicroPythonUnavailable("node is not installed: run `make test` (it installs it) or apt-get install nodejs")
    if not os.path.isdir(PORT_PACKAGE):
        raise MicroPythonUnavailable("the MicroPython WebAssembly port is missing: run `npm ci` in " + ROOT)
    return node


def run_tests(test_file, root=ROOT, timeout=300):
    """Run one device test module under MicroPython; returns its per-test results."""
    cmd = [_node(), RUNNER, "--root", root, "--tests", test_file]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=root)
    results = []
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            results.append(json.loads(line))
    if proc.returncode != 0 or not results:
        results.append({"test": "<runner>", "ok": False, "ms": 0,
                        "output": "runner exited %d\n%s\n%s" % (proc.returncode, proc.stdout, proc.stderr)})
    return results


def run_code(source, root=ROOT, timeout=300):
    """Run Python source under MicroPython with the device packages on its path; returns stdout.
    Raises RuntimeError with MicroPython's traceback if the code fails."""
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(source)
    try:
        proc = subprocess.run([_node(), RUNNER, "--root", root, "--code", f.name],
                              capture_output=True, text=True, timeout=timeout, cwd=root)
    finally:
        os.unlink(f.name)
    if proc.returncode != 0:
        raise RuntimeError("MicroPython failed:\n" + proc.stdout + proc.stderr)
    return proc.stdout
