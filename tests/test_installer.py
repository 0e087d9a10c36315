"""The installer (./flash.sh -> bridge.installer) against the virtual board
(boards/sim/serial_board.mjs) through the real mpremote, and each error message an installer
can act on. Errors that need hardware (wrong chip, permission as non-root) are checked at
the function that produces them, with the outside world faked: see each test's docstring."""

import errno
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bridge import db as dbmod, registry, schema
from bridge.installer import boards as boardinfo, flash

ROOT = Path(__file__).resolve().parent.parent
FLASH = ROOT / "flash.sh"
SERVER = ROOT / "boards" / "sim" / "serial_board.mjs"
PY = ROOT / ".venv" / "bin" / "python"
if not PY.exists():
    PY = Path(sys.executable)

def needs_node(fn):
    """Kept as a marker of the tests that run the virtual board; node missing fails them
    (`make test` installs it), it never skips them."""
    return fn


class VirtualBoard:
    def __init__(self, fs_dir):
        self.fs_dir = fs_dir
        self.proc = subprocess.Popen(["node", str(SERVER), "--port", "0", "--fs", str(fs_dir)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        m = re.fullmatch(r"listening 127\.0\.0\.1:(\d+)\n", line)
        if not m:
            self.proc.kill()
            raise AssertionError("virtual board did not start: %r %r" % (line, self.proc.stderr.read()))
        self.url = "socket://127.0.0.1:%s" % m.group(1)

    def mpremote(self, *args):
        r = subprocess.run([str(PY), "-m", "mpremote", "connect", self.url, *args],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def vboard(tmp_path):
    b = VirtualBoard(tmp_path / "fs")
    yield b
    b.stop()


@pytest.fixture
def dbpath(tmp_path):
    path = tmp_path / "aixin.db"
    engine = dbmod.connect(str(path))
    registry.add_merchant(engine, "M1", "Dongxiao canteen")
    registry.add_kiosk(engine, "K1", "M1", "meal")
    engine.dispose()
    return path


def engine_for(path):
    return dbmod.connect(str(path))


def flash_sh(*args, timeout=110):
    r = subprocess.run([str(FLASH), *args], capture_output=True, text=True, timeout=timeout,
                       cwd=str(ROOT))
    return r.returncode, r.stdout, r.stderr


def kiosk(path):
    e = engine_for(path)
    with e.connect() as conn:
        row = [r for r in registry.list_kiosks(conn) if r["id"] == "K1"][0]
    key = registry.kiosk_key(e, "K1")
    e.dispose()
    return row, key


def board_files(fs_dir):
    out = {}
    for p in sorted(Path(fs_dir).rglob("*")):
        if p.is_file():
            out[str(p.relative_to(fs_dir))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# ---------------------------------------------------------------- end to end

@needs_node
@pytest.mark.timeout(120)
def test_flash_virtual_board_end_to_end_and_reflash(vboard, dbpath):
    row0, key0 = kiosk(dbpath)
    rc, out, err = flash_sh("--board", "sim", "--port", vboard.url, "--kiosk", "K1",
                            "--db", str(dbpath))
    print(out, err)
    assert rc == 0, out + err
    assert re.search(r"^  \S+ reader: version=0x92 emulated SPI$", out, re.M), out
    assert re.search(r"^  - wifi: not available on the virtual board$", out, re.M), out
    assert "self-test passed" in out
    assert "broker-config" in out  # the operator is told to regenerate the broker files
    assert "Traceback" not in out + err

    # provisioning: a new key, seq_base from the registry, both in config.json
    row1, key1 = kiosk(dbpath)
    assert key1 != key0 and row1["key_gen"] == row0["key_gen"] + 1

    # read back with mpremote
    cfg = json.loads(vboard.mpremote("fs", "cat", ":config.json"))
    assert cfg["kiosk"] == "K1" and cfg["board"] == "sim" and cfg["service"] == "meal"
    assert cfg["key"] == key1.hex()
    assert cfg["seq_base"] == row1["seq_base"]
    assert vboard.mpremote("fs", "cat", ":main.py") == flash.MAIN_PY
    assert vboard.mpremote("fs", "cat", ":boot.py") == (ROOT / "firmware" / "boot.py").read_text()
    ls = vboard.mpremote("fs", "ls", ":lib/firmware")
    for name in ("main.mpy", "rc522.mpy", "selftest.mpy", "config.mpy"):
        assert name in ls, ls
    assert "sim_profile.mpy" in vboard.mpremote("fs", "ls", ":lib/boards")
    assert "rc522.mpy" in vboard.mpremote("fs", "ls", ":lib/boards/sim")
    assert ".py" not in ls.replace(".mpy", "")  # compiled, no stale sources

    # the firmware runs from the copied files, and its self-test's reader check is real:
    # the driver's VersionReg read over the emulated SPI, inside the board
    r = vboard.mpremote("exec", "import firmware.selftest as s\nprint(s.__file__)\ns.run()")
    assert "/lib/firmware/selftest.mpy" in r, r
    assert "SELFTEST reader ok version=0x92 emulated SPI" in r, r
    assert "SELFTEST done ok" in r, r

    # reflash: the kiosk was seen up to seq 41 -> new key, seq_base 42, replays refused
    e = engine_for(dbpath)
    with e.begin() as conn:
        conn.execute(schema.kiosks.update().where(schema.kiosks.c.id == "K1").values(high_seq=41))
    e.dispose()
    vboard.mpremote("exec", "open('/lib/firmware/stale.py', 'w').write('x = 1')")
    rc, out, err = flash_sh("--board", "sim", "--port", vboard.url, "--kiosk", "K1",
                            "--db", str(dbpath))
    assert rc == 0, out + err
    assert "seq_base 42" in out
    row2, key2 = kiosk(dbpath)
    assert key2 not in (key0, key1) and row2["seq_base"] == 42
    cfg2 = json.loads(vboard.mpremote("fs", "cat", ":config.json"))
    assert cfg2["key"] == key2.hex() and cfg2["seq_base"] == 42
    assert "stale.py" not in vboard.mpremote("fs", "ls", ":lib/firmware")
    m = re.search(r"copied (\d+) files to the board \((\d+) were already up to date\)", out)
    assert m and int(m.group(2)) > 20, out  # idempotent: unchanged modules are not resent

    # --check: the self-test again, no new key
    rc, out, err = flash_sh("--board", "sim", "--port", vboard.url, "--kiosk", "K1",
                            "--db", str(dbpath), "--check")
    assert rc == 0 and "self-test passed" in out, out + err
    assert kiosk(dbpath) == (row2, key2)


@needs_node
@pytest.mark.timeout(120)
def test_dry_run_changes_nothing(vboard, dbpath):
    row0, key0 = kiosk(dbpath)
    db_before = dbpath.read_bytes()
    fs_before = board_files(vboard.fs_dir)
    rc, out, err = flash_sh("--board", "sim", "--port", vboard.url, "--kiosk", "K1",
                            "--db", str(dbpath), "--dry-run")
    assert rc == 0, out + err
    assert "Steps:" in out and "provision kiosk K1" in out and "self-test" in out
    assert "Dry run: no board, port or registry was touched." in out
    row1, key1 = kiosk(dbpath)
    assert (row1, key1) == (row0, key0)
    assert dbpath.read_bytes() == db_before
    assert board_files(vboard.fs_dir) == fs_before


# ---------------------------------------------------------------- errors, end to end

@pytest.mark.timeout(60)
def test_no_board_on_serial_path(dbpath):
    rc, out, err = flash_sh("--board", "esp32_devkitc", "--port", "/dev/ttyUSB-aixin-none",
                            "--kiosk", "K1", "--db", str(dbpath))
    assert rc == 1
    assert "no board on /dev/ttyUSB-aixin-none: is it plugged in" in err
    assert "dialout group" in err and "Traceback" not in out + err


@pytest.mark.timeout(60)
def test_no_board_on_socket(dbpath):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    rc, out, err = flash_sh("--board", "sim", "--port", "socket://127.0.0.1:%d" % port,
                            "--kiosk", "K1", "--db", str(dbpath))
    assert rc == 1
    assert "no board at socket://127.0.0.1:%d: nothing answers there" % port in err
    assert "serial_board.mjs" in err and "Traceback" not in out + err


@pytest.mark.timeout(60)
def test_port_busy(dbpath):
    """A pseudo-terminal held open with an exclusive lock, as mpremote, screen or another
    flash.sh hold a real /dev/ttyUSB0."""
    import serial
    master, slave = os.openpty()
    name = os.ttyname(slave)
    holder = serial.Serial(name, exclusive=True)
    try:
        rc, out, err = flash_sh("--board", "esp32_devkitc", "--port", name, "--kiosk", "K1",
                                "--db", str(dbpath))
    finally:
        holder.close()
        os.close(master)
        os.close(slave)
    assert rc == 1, out + err
    assert "port %s is busy: another program has it open" % name in err
    assert "Traceback" not in out + err


@pytest.mark.timeout(60)
def test_unknown_profile(dbpath):
    rc, out, err = flash_sh("--board", "esp32_c3_mini", "--port", "/dev/ttyUSB0", "--kiosk",
                            "K1", "--db", str(dbpath))
    assert rc == 1
    assert "unknown board profile 'esp32_c3_mini'. Known profiles: esp32_devkitc, " \
           "esp32_s3_devkitc_1, m5stack_atom, sim" in err


@pytest.mark.timeout(60)
def test_kiosk_not_registered(dbpath):
    rc, out, err = flash_sh("--board", "sim", "--port", "socket://127.0.0.1:9", "--kiosk",
                            "K9", "--db", str(dbpath))
    assert rc == 1
    assert "kiosk K9 is not registered. Register it first:" in err
    assert "aixin --db %s kiosk add K9 --merchant MERCHANT_ID --service meal" % dbpath in err


@pytest.mark.timeout(60)
def test_no_database(tmp_path):
    missing = tmp_path / "nope.db"
    rc, out, err = flash_sh("--board", "sim", "--port", "socket://127.0.0.1:9", "--kiosk",
                            "K1", "--db", str(missing))
    assert rc == 1
    assert "no bridge database at %s" % missing in err
    assert not missing.exists()


@pytest.mark.timeout(60)
def test_erase_needs_firmware(dbpath):
    rc, out, err = flash_sh("--board", "esp32_devkitc", "--port", "/dev/ttyUSB0", "--kiosk",
                            "K1", "--db", str(dbpath), "--erase")
    assert rc == 1 and "--erase also erases MicroPython itself: give --firmware" in err


@pytest.mark.timeout(60)
def test_usage_errors_are_messages():
    rc, out, err = flash_sh("--help")
    assert rc == 0 and "--board PROFILE" in out and "docs/installing.md" in out
    rc, out, err = flash_sh("--board", "sim")
    assert rc == 2 and "required" in err


# ---------------------------------------------------------------- errors needing hardware

def test_permission_denied_message(monkeypatch, tmp_path):
    """Tests run as root here, so a tty without permission cannot be made for real: the
    check is driven with os.access saying no (what a user outside dialout sees), and with
    pyserial failing EACCES (the open itself refused)."""
    tty = tmp_path / "ttyUSB0"
    tty.write_text("")
    monkeypatch.setattr(flash.os, "access", lambda p, m: False)
    with pytest.raises(flash.InstallError) as e:
        flash.check_port(str(tty))
    assert str(e.value).startswith("permission denied on %s: add yourself to the dialout "
                                   "group (`sudo usermod -aG dialout $USER`)" % tty)
    monkeypatch.setattr(flash.os, "access", lambda p, m: True)
    import serial

    def refuse(*a, **k):
        raise serial.SerialException(errno.EACCES, "could not open port: Permission denied")
    monkeypatch.setattr(serial, "Serial", refuse)
    with pytest.raises(flash.InstallError) as e:
        flash.check_port(str(tty))
    assert "permission denied on %s" % tty in str(e.value)


def test_wrong_chip_message(monkeypatch, dbpath, capsys):
    """Needs an ESP32 on the port to happen for real; here esptool's answer is faked (an
    ESP32 where the profile wants an ESP32-S3) and the port check skipped."""
    monkeypatch.setattr(flash, "check_port", lambda port: None)
    monkeypatch.setattr(flash, "detect_chip", lambda port: "ESP32")
    rc = flash.main(["--board", "esp32_s3_devkitc_1", "--port", "/dev/ttyUSB0", "--kiosk",
                     "K1", "--db", str(dbpath)])
    err = capsys.readouterr().err
    assert rc == 1
    assert ("wrong chip for the profile: the board on /dev/ttyUSB0 is an ESP32, but profile "
            "esp32_s3_devkitc_1 is for an ESP32-S3") in err
    assert "esp32_devkitc, m5stack_atom" in err
    row, _ = kiosk(dbpath)
    assert row["key_gen"] == 1  # nothing provisioned


class FakeBoard:
    def __init__(self, text):
        self.text = text

    def exec(self, code, timeout=None, check=True):
        return subprocess.CompletedProcess([], 0, self.text, "")


def _args(board="esp32_devkitc"):
    return flash.parse_args(["--board", board, "--port", "/dev/ttyUSB0", "--kiosk", "K1"])


def test_reader_not_found_prints_profile_wiring(capsys):
    """A board's self-test output when no RC522 answers (needs a board with the reader
    unplugged to happen for real): the installer shows the cross and the profile's pins."""
    text = ("SELFTEST config ok kiosk=K1 board=esp32_devkitc seq_base=1\r\n"
            "SELFTEST reader fail version=0x00 SCK=18 MOSI=23 MISO=19 CS=5 RST=27 (no MFRC522 "
            "answers (VersionReg reads 0x00): check power, SPI wiring)\r\n"
            "SELFTEST wifi ok ssid=canteen ip=192.168.1.40 rssi=-60\r\n"
            "SELFTEST broker ok bridge.local:8883 tls=True user=K1\r\n"
            "SELFTEST heartbeat ok state online published and acknowledged\r\n"
            "SELFTEST done fail\r\n")
    out = flash.Out()
    assert flash.selftest(FakeBoard(text), _args(), out) is False
    o = capsys.readouterr().out
    assert "reader not found: check the wiring" in o
    for pin, gpio in (("SDA", "5 (chip select)"), ("SCK", 18), ("MOSI", 23), ("MISO", 19),
                      ("RST", 27)):
        assert "RC522 %-4s -> GPIO %s" % (pin, gpio) in o
    assert "self-test failed" in o


def test_wifi_refused_message(capsys):
    text = ("SELFTEST config ok kiosk=K1 board=m5stack_atom seq_base=1\n"
            "SELFTEST reader ok version=0x92 SCK=23 MOSI=19 MISO=33 CS=22 RST=21\n"
            "SELFTEST wifi fail refused: wrong password ssid=canteen\n"
            "SELFTEST broker skip no Wi-Fi\nSELFTEST heartbeat skip no Wi-Fi\nSELFTEST done fail\n")
    assert flash.selftest(FakeBoard(text), _args("m5stack_atom"), flash.Out()) is False
    o = capsys.readouterr().out
    assert "wifi: refused: wrong password ssid=canteen" in o
    assert "check the network name and password" in o and "2.4 GHz" in o


def test_selftest_runs_on_cpython_sim(tmp_path, capsys):
    """firmware/selftest.py itself (device code) on CPython with the sim reader."""
    from firmware import selftest
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"kiosk": "K1", "key": "00" * 32, "board": "sim", "seq_base": 7}))
    assert selftest.run(str(cfg)) is True
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "SELFTEST config ok kiosk=K1 board=sim seq_base=7"
    assert lines[1] == "SELFTEST reader ok version=0x92 emulated SPI"
    assert lines[-1] == "SELFTEST done ok"
    assert [s for s, _, _ in flash.parse_selftest("\n".join(lines))] == \
        ["config", "reader", "wifi", "broker", "heartbeat", "done"]
    assert selftest.run(str(tmp_path / "missing.json")) is False
    assert "SELFTEST config fail" in capsys.readouterr().out


def test_profiles_have_chip_and_wiring():
    import boards
    for name in boardinfo.names():
        assert "chip" in boards.profile(name)
        assert name == "sim" or boardinfo.chip(name) in boardinfo.OFFSETS
        pins = dict(boardinfo.wiring(name))
        assert set(pins) == {"SDA", "SCK", "MOSI", "MISO", "IRQ", "GND", "RST", "3.3V"}
    assert boardinfo.offset("esp32_devkitc") == 0x1000
    assert boardinfo.offset("esp32_s3_devkitc_1") == 0x0


def test_device_files_compile_for_esp32(tmp_path):
    """mpy-cross -march=xtensawin accepts every file a real board gets."""
    _, _, cross = flash.tools()
    files = flash.compile_tree("esp32_devkitc", cross, str(tmp_path))
    assert "lib/firmware/selftest.mpy" in files and "lib/boards/esp32_devkitc.mpy" in files
    assert not any(f.startswith("lib/boards/sim") for f in files)
    assert (tmp_path / "main.py").read_text() == flash.MAIN_PY


def test_old_micropython_on_the_board_is_refused():
    """A board whose MicroPython reads another .mpy sub-version (e.g. v1.22: 6.2) cannot
    load -march=xtensawin files: said before anything is copied."""
    _, _, cross = flash.tools()
    v = subprocess.run([cross, "--version"], capture_output=True, text=True).stdout
    major, sub = map(int, re.search(r"mpy v(\d+)\.(\d+)", v).groups())
    other = (sub + 1) % 4
    flash.check_mpy((major | sub << 8, "MicroPython same"), cross, True)  # same: fine
    flash.check_mpy((major | other << 8, "MicroPython old"), cross, False)  # bytecode only
    with pytest.raises(flash.InstallError) as e:
        flash.check_mpy((major | other << 8, "MicroPython old"), cross, True)
    assert "MicroPython on the board (MicroPython old) loads .mpy v%d.%d" % (major, other) \
        in str(e.value)
    assert "--firmware FILE.bin" in str(e.value)
