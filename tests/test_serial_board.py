"""The virtual board (boards/sim/serial_board.mjs) driven by the real mpremote over TCP."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "boards" / "sim" / "serial_board.mjs"
MPREMOTE = ROOT / ".venv" / "bin" / "mpremote"
if not MPREMOTE.exists():  # e.g. a venv elsewhere: the one running pytest
    MPREMOTE = Path(sys.executable).parent / "mpremote"



class Board:
    """One server process; the filesystem dir outlives it."""

    def __init__(self, fs_dir, extra=()):
        self.fs_dir = fs_dir
        self.proc = subprocess.Popen(
            ["node", str(SERVER), "--port", "0", "--fs", str(fs_dir), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        line = self.proc.stdout.readline()
        m = re.fullmatch(r"listening 127\.0\.0\.1:(\d+)\n", line)
        if not m:
            self.proc.kill()
            raise AssertionError("bad first line %r, stderr %r" % (line, self.proc.stderr.read()))
        self.port = int(m.group(1))
        self.url = "socket://127.0.0.1:%d" % self.port

    def mpremote(self, *args, timeout=30, check=True):
        r = subprocess.run(
            [str(MPREMOTE), "connect", self.url, *args],
            capture_output=True, text=True, timeout=timeout,
        )
        if check and r.returncode != 0:
            raise AssertionError("mpremote %s failed (%d): %s%s" % (args, r.returncode, r.stdout, r.stderr))
        return r

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def boards(tmp_path):
    started = []

    def start(fs_dir=None, extra=()):
        b = Board(fs_dir or tmp_path / "fs", extra)
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop(signal.SIGKILL)


@pytest.fixture
def board(boards):
    return boards()


@pytest.mark.timeout(60)
def test_first_line_and_exec(board):
    r = board.mpremote("exec", "print(1+1)")
    assert r.stdout == "2\n"


@pytest.mark.timeout(60)
def test_fs_cp_roundtrip_and_ls(board, tmp_path):
    data = os.urandom(10 * 1024)
    src = tmp_path / "blob.bin"
    src.write_bytes(data)
    t0 = time.monotonic()
    board.mpremote("fs", "cp", str(src), ":blob.bin")
    t_in = time.monotonic() - t0
    t0 = time.monotonic()
    board.mpremote("fs", "cp", ":blob.bin", str(tmp_path / "back.bin"))
    t_out = time.monotonic() - t0
    assert (tmp_path / "back.bin").read_bytes() == data
    print("fs cp 10 KB: in %.2f s, out %.2f s" % (t_in, t_out))

    board.mpremote("fs", "mkdir", ":lib")
    board.mpremote("fs", "cp", str(src), ":lib/x.bin")
    ls = board.mpremote("fs", "ls").stdout
    assert re.search(r"^\s+10240 blob\.bin$", ls, re.M), ls
    assert re.search(r"^\s+0 lib/$", ls, re.M), ls
    # only the board's files: none of the Emscripten system dirs
    for hidden in ("tmp/", "dev/", "proc/", "home/"):
        assert hidden not in ls
    assert "10240 x.bin" in board.mpremote("fs", "ls", ":lib").stdout


@pytest.mark.timeout(60)
def test_soft_reset_fresh_interpreter_keeps_files(board):
    board.mpremote("exec", "x = 5\nopen('/keep.txt', 'w').write('kept')")
    assert board.mpremote("resume", "exec", "print(x)").stdout == "5\n"  # no reset: same interpreter
    board.mpremote("soft-reset")
    r = board.mpremote("resume", "exec", "print('x' in globals(), open('/keep.txt').read())")
    assert r.stdout == "False kept\n"


@pytest.mark.timeout(60)
def test_file_survives_server_restart(boards, tmp_path):
    fs_dir = tmp_path / "fs"
    b1 = boards(fs_dir)
    b1.mpremote("fs", "mkdir", ":lib")
    b1.mpremote("exec", "open('/lib/cfg.json', 'w').write('{\"kiosk\": \"K1\"}')")
    b1.mpremote("exec", "open('/gone.txt', 'w').write('x')")
    b1.mpremote("fs", "rm", ":gone.txt")
    b1.stop()  # SIGTERM: the server writes the filesystem back before exiting
    assert (fs_dir / "lib" / "cfg.json").read_text() == '{"kiosk": "K1"}'
    assert not (fs_dir / "gone.txt").exists()

    b2 = boards(fs_dir)
    assert b2.mpremote("fs", "cat", ":lib/cfg.json").stdout == '{"kiosk": "K1"}'
    # and a hard kill after the board went quiet loses nothing either (written back on idle)
    b2.mpremote("exec", "open('/late.txt', 'w').write('late')")
    time.sleep(0.5)
    b2.stop(signal.SIGKILL)
    b3 = boards(fs_dir)
    assert b3.mpremote("fs", "cat", ":late.txt").stdout == "late"


@pytest.mark.timeout(60)
def test_run_script_and_lib_imports(board, tmp_path):
    mod = tmp_path / "helper.py"
    mod.write_text("def twice(x):\n    return 2 * x\n")
    board.mpremote("fs", "mkdir", ":lib", "+", "fs", "mkdir", ":lib/pkg")
    board.mpremote("fs", "cp", str(mod), ":lib/pkg/helper.py")
    board.mpremote("fs", "cp", str(mod), ":lib/pkg/__init__.py")
    script = tmp_path / "script.py"
    script.write_text(
        "import sys\n"
        "from pkg import helper\n"
        "print('lib' , '/lib' in sys.path, helper.twice(21))\n"
        "import virtual_board\n"
        "print(virtual_board.name)\n"
        "try:\n    import machine\nexcept ImportError:\n    print('no machine')\n"
    )
    r = board.mpremote("run", str(script))
    assert r.stdout == "lib True 42\naixin-virtual-board\nno machine\n"


@pytest.mark.timeout(60)
def test_python_error_surfaces(board):
    r = board.mpremote("exec", "print('before')\n1/0", check=False)
    assert r.returncode == 1
    assert "before" in r.stdout
    assert "ZeroDivisionError: divide by zero" in r.stdout + r.stderr
    r = board.mpremote("fs", "cat", ":missing.txt", check=False)
    assert r.returncode == 1
    assert "No such file or directory" in r.stdout + r.stderr
    r = board.mpremote("exec", "import os\ntry:\n os.stat('/nope')\nexcept OSError as e:\n"
                               " import errno\n print(e.errno == errno.ENOENT)")
    assert r.stdout == "True\n"


def _talk(port, steps):
    """Raw bytes over the 'serial line': [(bytes to send, bytes to wait for)] -> outputs."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    outs = []
    try:
        for send, until in steps:
            s.sendall(send)
            buf = b""
            deadline = time.monotonic() + 10
            while not buf.endswith(until):
                assert time.monotonic() < deadline, "waited for %r, got %r" % (until, buf)
                buf += s.recv(4096)
            outs.append(buf)
    finally:
        s.close()
    return outs


@pytest.mark.timeout(60)
def test_boot_and_main_on_soft_reset_like_a_board(boards, tmp_path):
    fs_dir = tmp_path / "fs"
    fs_dir.mkdir()
    (fs_dir / "boot.py").write_text("print('boot ran')\n")
    (fs_dir / "main.py").write_text("print('main ran')\n")
    b = boards(fs_dir)
    friendly, raw_enter, raw_reset, raw_exec = _talk(b.port, [
        (b"\x04", b">>> "),  # the line is empty after power-on
        (b"\r\x01", b"raw REPL; CTRL-B to exit\r\n>"),
        (b"\x04", b"raw REPL; CTRL-B to exit\r\n>"),
        (b"print(7)\x04", b"\x04\x04>"),
    ])
    # friendly Ctrl-D: reboot, boot.py, main.py, banner
    assert re.search(rb"MPY: soft reboot\r\nboot ran\r\nmain ran\r\n.*MicroPython v\S+ .*\r\n>>> $",
                     friendly, re.S), friendly
    # raw Ctrl-D: reboot, boot.py only, back in the raw REPL
    assert raw_reset == b"OK\r\nMPY: soft reboot\r\nboot ran\r\nraw REPL; CTRL-B to exit\r\n>"
    assert raw_exec == b"OK7\r\n\x04\x04>"


@pytest.mark.timeout(60)
def test_raw_paste_flow_control(board):
    code = ("x = 0\n" + "x += 1\n" * 400 + "print(x)\n").encode()  # several windows
    s = socket.create_connection(("127.0.0.1", board.port), timeout=10)
    try:
        s.sendall(b"\r\x03\r\x01")
        buf = b""
        while not buf.endswith(b"raw REPL; CTRL-B to exit\r\n>"):
            buf += s.recv(4096)
        s.sendall(b"\x05A\x01")
        hdr = b""
        while len(hdr) < 4:
            hdr += s.recv(4 - len(hdr))
        assert hdr[:2] == b"R\x01"
        window = int.from_bytes(hdr[2:], "little")
        assert window > 0
        remain, i, acks = window, 0, 0
        while i < len(code):
            if remain == 0:
                assert s.recv(1) == b"\x01"
                remain += window
                acks += 1
            n = min(remain, len(code) - i)
            s.sendall(code[i:i + n])
            i += n
            remain -= n
        s.sendall(b"\x04")
        out = b""
        while not out.endswith(b"\x04>"):
            out += s.recv(4096)
        out = out.replace(b"\x01", b"")  # late window increments
        assert out == b"\x04400\r\n\x04\x04>"
        assert acks >= 1
    finally:
        s.close()


@pytest.mark.timeout(60)
def test_firmware_main_with_asyncio_loop_is_interruptible(boards, tmp_path):
    """/main.py running asyncio.run(...) forever: mpremote's Ctrl-C stops it and its tasks."""
    fs_dir = tmp_path / "fs"
    fs_dir.mkdir()
    (fs_dir / "main.py").write_text(
        "import asyncio\n"
        "async def bg():\n"
        "    while True:\n"
        "        print('bg')\n"
        "        await asyncio.sleep_ms(20)\n"
        "async def main():\n"
        "    asyncio.create_task(bg())\n"
        "    while True:\n"
        "        print('tick')\n"
        "        await asyncio.sleep_ms(30)\n"
        "asyncio.run(main())\n"
    )
    b = boards(fs_dir)
    time.sleep(0.3)
    assert b.mpremote("exec", "print('hello')").stdout == "hello\n"
    assert b.mpremote("exec", "print(6*7)").stdout == "42\n"
    # friendly soft reset runs main.py again; Ctrl-C stops it and the line goes quiet
    out = _talk(b.port, [(b"\r\x02", b">>> "), (b"\x04", b"tick\r\n"), (b"\x03", b">>> ")])
    assert b"MPY: soft reboot\r\n" in out[1]
    assert b"KeyboardInterrupt" in out[2]
    s = socket.create_connection(("127.0.0.1", b.port), timeout=10)
    try:
        s.settimeout(0.3)
        with pytest.raises(socket.timeout):
            s.recv(100)
    finally:
        s.close()
