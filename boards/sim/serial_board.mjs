#!/usr/bin/env node
// host-only: the virtual board. A TCP server on 127.0.0.1 that makes the MicroPython
// WebAssembly port look like a board on a serial line, for
// `mpremote connect socket://127.0.0.1:PORT ...` (see docs/virtual-board.md).
//
//   node boards/sim/serial_board.mjs --fs DIR [--port 0] [--host 127.0.0.1] [--log]
//
// First line on stdout: `listening 127.0.0.1:PORT`.
//
// What the adapter does itself (the port's event-driven REPL cannot):
// - soft reset (Ctrl-D on an empty line): a fresh interpreter, the same filesystem,
//   `MPY: soft reboot`, /boot.py, then /main.py if the friendly REPL was active;
// - raw-paste mode (Ctrl-E A Ctrl-A in the raw REPL), with window flow control;
// - a persistent filesystem: every file outside /tmp /home /dev /proc is mirrored in DIR.
// Everything else (friendly REPL, raw REPL, execution, tracebacks) is the port's own REPL.

import net from "node:net";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "..", "..");
const MP_MODULE = path.join(
  ROOT, "node_modules", "@micropython", "micropython-webassembly-pyscript", "micropython.mjs");

const CTRL_A = 0x01, CTRL_B = 0x02, CTRL_C = 0x03, CTRL_D = 0x04, CTRL_E = 0x05;
const PYEXEC_FORCED_EXIT = 0x100;
const PASTE_WINDOW = 512;
const SYSTEM_DIRS = new Set(["tmp", "home", "dev", "proc"]);
const SYNC_QUIET_MS = 100;

function parseArgs(argv) {
  const opts = { port: 0, host: "127.0.0.1", fs: null, log: false, boot: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) usage(`missing value for ${a}`);
      return argv[++i];
    };
    if (a === "--port") opts.port = parseInt(val(), 10);
    else if (a === "--host") opts.host = val();
    else if (a === "--fs") opts.fs = val();
    else if (a === "--log") opts.log = true;
    else if (a === "--no-boot") opts.boot = false;
    else if (a === "--help" || a === "-h") usage(null);
    else usage(`unknown argument ${a}`);
  }
  if (!opts.fs) usage("--fs DIR is required (the board's persistent filesystem)");
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) usage("bad --port");
  return opts;
}

function usage(err) {
  const text =
    "usage: node boards/sim/serial_board.mjs --fs DIR [--port N] [--host H] [--log] [--no-boot]\n" +
    "  --fs DIR    host directory holding the board's filesystem (created if missing)\n" +
    "  --port N    TCP port, 0 = any free port (default 0)\n" +
    "  --host H    address to listen on (default 127.0.0.1)\n" +
    "  --log       copy board output to stderr (also when no client is connected)\n" +
    "  --no-boot   do not run /boot.py and /main.py at power-on (soft resets still do)\n" +
    "Prints `listening HOST:PORT` on stdout once ready.\n";
  if (err) {
    process.stderr.write(`serial_board: ${err}\n${text}`);
    process.exit(2);
  }
  process.stdout.write(text);
  process.exit(0);
}

// ---------------------------------------------------------------- filesystem mirror

// Files of the board as a Map path -> Buffer, and its directories as a Set, both
// absolute board paths. `snapshot` is what the host dir holds.
function readHostTree(dir) {
  const files = new Map(), dirs = new Set();
  const walk = (hostDir, boardDir) => {
    for (const ent of fs.readdirSync(hostDir, { withFileTypes: true })) {
      if (ent.name.startsWith(".vb-tmp-")) continue;
      const h = path.join(hostDir, ent.name);
      const b = boardDir === "/" ? "/" + ent.name : boardDir + "/" + ent.name;
      if (boardDir === "/" && SYSTEM_DIRS.has(ent.name)) continue;
      if (ent.isDirectory()) { dirs.add(b); walk(h, b); }
      else if (ent.isFile()) files.set(b, fs.readFileSync(h));
    }
  };
  walk(dir, "/");
  return { files, dirs };
}

function readBoardTree(FS) {
  const files = new Map(), dirs = new Set();
  const walk = (boardDir) => {
    for (const name of FS.readdir(boardDir)) {
      if (name === "." || name === "..") continue;
      if (boardDir === "/" && SYSTEM_DIRS.has(name)) continue;
      const b = boardDir === "/" ? "/" + name : boardDir + "/" + name;
      const st = FS.stat(b);
      if (FS.isDir(st.mode)) { dirs.add(b); walk(b); }
      else if (FS.isFile(st.mode)) files.set(b, Buffer.from(FS.readFile(b)));
    }
  };
  walk("/");
  return { files, dirs };
}

function writeBoardTree(FS, tree) {
  for (const d of [...tree.dirs].sort()) {
    try { FS.mkdir(d); } catch (e) { /* exists */ }
  }
  for (const [p, data] of tree.files) FS.writeFile(p, data);
}

function hostPath(dir, boardPath) {
  return path.join(dir, ...boardPath.split("/").filter(Boolean));
}

// Make the host dir equal to `now`, given that it currently equals `before`.
function writeHostDiff(dir, before, now) {
  for (const d of [...now.dirs].sort()) {
    if (!before.dirs.has(d)) fs.mkdirSync(hostPath(dir, d), { recursive: true });
  }
  for (const [p, data] of now.files) {
    const old = before.files.get(p);
    if (old && old.equals(data)) continue;
    const target = hostPath(dir, p);
    const tmp = path.join(path.dirname(target), `.vb-tmp-${process.pid}-${path.basename(target)}`);
    fs.writeFileSync(tmp, data);
    fs.renameSync(tmp, target); // atomic: a killed server leaves the old or the new file
  }
  for (const p of before.files.keys()) {
    if (!now.files.has(p)) fs.rmSync(hostPath(dir, p), { force: true });
  }
  for (const d of [...before.dirs].sort().reverse()) {
    if (!now.dirs.has(d)) fs.rmSync(hostPath(dir, d), { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- the board

// The port's VFS raises OSError with Emscripten's errno numbers (ENOENT is 44) while its
// `errno` module has MicroPython's (ENOENT is 2, as on a board, and as mpremote expects).
// Wrap the filesystem calls so errors carry the board's numbers.
const SETUP_PY = `
import sys
if '/lib' not in sys.path:
    sys.path.append('/lib')
# No blocking asyncio.run on this port: asyncio.run(coro) starts a task on the JS event
# loop and returns; the adapter then waits for those tasks after /main.py as a board's
# asyncio.run would (Ctrl-C interrupts), and stops the loop when they end.
import asyncio
import asyncio.core as core
tasks = []
def run(coro):
    t = asyncio.create_task(coro)
    tasks.append(t)
    return t
async def wait():
    while tasks:
        await tasks.pop(0)
def stop():
    del tasks[:]
    core._task_queue = core.TaskQueue()
asyncio.run = run
asyncio._vb_wait = wait
asyncio._vb_stop = stop
`;
const ERRNO_FIX = `
import os, builtins
_vb_E = {63: 1, 44: 2, 29: 5, 8: 9, 6: 11, 48: 12, 2: 13, 10: 16, 20: 17, 75: 18, 43: 19,
         54: 20, 31: 21, 28: 22, 33: 24, 51: 28, 70: 29, 69: 30, 37: 36, 55: 39, 138: 95}
def _vb_wrap(f):
    def call(*a, **k):
        try:
            return f(*a, **k)
        except OSError as e:
            n = _vb_E.get(e.errno)
            if n is None:
                raise
            raise OSError(n)
    return call
for _vb_n in ('stat', 'remove', 'unlink', 'rmdir', 'mkdir', 'listdir', 'ilistdir', 'chdir',
              'rename', 'statvfs'):
    if hasattr(os, _vb_n):
        setattr(os, _vb_n, _vb_wrap(getattr(os, _vb_n)))
builtins.open = _vb_wrap(builtins.open)
# As on a board: ilistdir entries carry the size, and / shows only the board's own files.
_vb_ilistdir = os.ilistdir
_vb_stat = os.stat
_vb_hidden = ('tmp', 'home', 'dev', 'proc')
def _vb_ilistdir2(d='.'):
    cwd = os.getcwd()
    a = cwd if d in ('', '.') else (d if d.startswith('/') else cwd.rstrip('/') + '/' + d)
    root = a.rstrip('/') == ''
    for e in _vb_ilistdir(d):
        if root and e[0] in _vb_hidden:
            continue
        if len(e) < 4:
            size = 0
            if e[1] == 0x8000:
                try:
                    p = a.rstrip('/') + '/' + e[0]
                    size = _vb_stat(p)[6]
                except OSError:
                    pass
            e = (e[0], e[1], e[2] if len(e) > 2 else 0, size)
        yield e
def _vb_listdir(d='.'):
    return [e[0] for e in _vb_ilistdir2(d)]
os.ilistdir = _vb_ilistdir2
os.listdir = _vb_listdir
del _vb_n, _vb_wrap
`;

class Board {
  constructor(opts, loadMicroPython) {
    this.opts = opts;
    this.loadMicroPython = loadMicroPython;
    this.mp = null;
    this.client = null;        // the connected socket ("serial line"), or null
    this.inbox = [];           // bytes received, not yet processed
    this.pumping = false;
    this.raw = false;          // raw REPL (true) or friendly REPL (false)
    this.pasteState = 0;       // raw-paste entry: 0 idle, 1 saw Ctrl-E, 2 saw Ctrl-E 'A'
    this.paste = null;         // raw-paste in progress: {chunks, received}
    this.swallow = null;       // output bytes to drop if they come next (the "OK" of raw-paste)
    this.muted = false;
    this.lastOut = 0;
    this.outQueue = [];
    this.busy = false;         // executing Python (Ctrl-C interrupts)
    this.snapshot = readHostTree(opts.fs);
    this.syncTimer = null;
    this.mpLoaded = new Promise((resolve) => { this.onLoaded = resolve; });
  }

  // ---- output, as a board's UART: lone \n becomes \r\n
  onStdout(bytes) {
    if (this.muted) return;
    for (const c of bytes) {
      if (this.swallow && this.swallow.length) {
        if (c === this.swallow[0]) { this.swallow = this.swallow.slice(1); continue; }
        this.swallow = null;
      }
      if (c === 0x0a && this.lastOut !== 0x0d) this.outQueue.push(0x0d);
      this.outQueue.push(c);
      this.lastOut = c;
    }
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  write(str) { this.onStdout(Buffer.from(str, "latin1")); }

  writeRaw(bytes) { // no newline cooking (protocol bytes)
    for (const c of bytes) this.outQueue.push(c);
    this.flush();
  }

  flush() {
    this.flushScheduled = false;
    if (!this.outQueue.length) return;
    const buf = Buffer.from(this.outQueue);
    this.outQueue = [];
    if (this.opts.log) process.stderr.write(buf);
    if (this.client && !this.client.destroyed) this.client.write(buf);
  }

  // ---- interpreter lifecycle
  async newInterpreter() {
    if (this.mp) { // the old interpreter: stop its loop and silence it
      const old = this.mp;
      try { old.runPython("__import__('asyncio')._vb_stop()"); } catch (e) { /* busy or broken */ }
    }
    const box = {};
    const out = (b) => { if (box.mp === this.mp) this.onStdout(b); };
    this.mp = box.mp = await this.loadMicroPython({ stdout: out, stderr: out, linebuffer: false });
    writeBoardTree(this.mp.FS, this.snapshot);
    this.mp.registerJsModule("virtual_board", {
      name: "aixin-virtual-board",
      fs_dir: path.resolve(this.opts.fs),
    });
    // Board setup, in a function so that __main__ stays as clean as on a board.
    const setup = SETUP_PY + ERRNO_FIX;
    this.mp.runPython(
      "def _vb_setup():\n" + setup.split("\n").map((l) => "    " + l).join("\n") +
      "\n_vb_setup()\ndel _vb_setup\n");
  }

  // Run a board file the way the firmware's pyexec_file does: errors print a traceback.
  async runFile(name) {
    const FS = this.mp.FS;
    let src;
    try { src = Buffer.from(FS.readFile("/" + name)).toString("utf8"); } catch (e) { return; }
    this.busy = true;
    const mp = this.mp;
    const interrupted = new Promise((resolve) => { this.interruptMain = resolve; });
    const work = (async () => {
      await mp.runPythonAsync(src);
      await mp.runPythonAsync("await __import__('asyncio')._vb_wait()");
      return "done";
    })();
    work.catch(() => {}); // handled below, or abandoned after Ctrl-C
    try {
      if (await Promise.race([work, interrupted]) === "interrupted") {
        this.write("Traceback (most recent call last):\r\n" +
                   `  File "${name}", in <module>\r\nKeyboardInterrupt: \r\n`);
      }
    } catch (e) {
      if (e && e.name === "PythonError") {
        const msg = String(e.message).replace(/\r?\n/g, "\r\n");
        this.write(msg.endsWith("\r\n") ? msg : msg + "\r\n");
      } else {
        this.write(`virtual board: ${e}\r\n`);
      }
    } finally {
      this.busy = false;
      this.interruptMain = null;
      try { this.mp.runPython("__import__('asyncio')._vb_stop()"); } catch (e) { /* ignore */ }
    }
  }

  // Power-on or soft reset. `raw` says which REPL to come back to.
  async boot({ soft, runScripts }) {
    if (this.mp) this.syncNow();
    if (soft) this.write("MPY: soft reboot\r\n");
    await this.newInterpreter();
    if (this.onLoaded) this.onLoaded();
    if (runScripts) {
      await this.runFile("boot.py");
      if (!this.raw) await this.runFile("main.py");
    }
    // Start the port's REPL; in raw mode, switch it to raw silently and print the raw banner.
    this.muted = this.raw;
    this.mp.replInit();
    if (this.raw) {
      this.mp.replProcessChar(CTRL_A);
      this.muted = false;
      this.write("raw REPL; CTRL-B to exit\r\n>");
    }
    this.muted = false;
    this.flush(); // at power-on nobody listens yet: like a UART, that output is gone
    this.syncNow();
  }

  // ---- filesystem persistence
  syncNow() {
    if (this.syncTimer) { clearTimeout(this.syncTimer); this.syncTimer = null; }
    if (!this.mp) return;
    const now = readBoardTree(this.mp.FS);
    writeHostDiff(this.opts.fs, this.snapshot, now);
    this.snapshot = now;
  }

  scheduleSync() {
    if (this.syncTimer) clearTimeout(this.syncTimer);
    this.syncTimer = setTimeout(() => { this.syncTimer = null; this.syncNow(); }, SYNC_QUIET_MS);
  }

  // ---- input
  attach(sock) {
    if (this.client) this.client.destroy(); // a new opener takes the line
    this.client = sock;
    sock.setNoDelay(true);
    sock.on("data", (data) => this.receive(data));
    sock.on("error", () => {});
    sock.on("close", () => { if (this.client === sock) this.client = null; });
  }

  receive(data) {
    for (const c of data) {
      if (c === CTRL_C && this.interruptMain) {
        // Like a UART IRQ: /main.py (and its asyncio loop) stops, the byte is consumed.
        this.interruptMain("interrupted");
        continue;
      }
      this.inbox.push(c);
    }
    this.pump();
  }

  async pump() {
    if (this.pumping) return;
    this.pumping = true;
    try {
      await this.ready; // power-on boot (its main.py may run until Ctrl-C)
      while (this.inbox.length) {
        const c = this.inbox.shift();
        await this.processByte(c);
      }
    } catch (e) {
      process.stderr.write(`serial_board: internal error: ${e && e.stack || e}\n`);
    } finally {
      this.pumping = false;
      this.flush();
      this.scheduleSync();
    }
  }

  async processByte(c) {
    if (this.paste) return this.pasteByte(c);
    if (this.raw) {
      // raw-paste entry: Ctrl-E 'A' Ctrl-A
      if (this.pasteState === 0 && c === CTRL_E) { this.pasteState = 1; return; }
      if (this.pasteState === 1) {
        if (c === 0x41) { this.pasteState = 2; return; }
        this.pasteState = 0;
        await this.feed(CTRL_E);
      } else if (this.pasteState === 2) {
        this.pasteState = 0;
        if (c === CTRL_A) { return this.startPaste(); }
        await this.feed(CTRL_E);
        await this.feed(0x41);
      }
    }
    return this.feed(c);
  }

  startPaste() {
    this.paste = { chunks: [], received: 0 };
    const hdr = Buffer.from([0x52, 0x01, PASTE_WINDOW & 0xff, PASTE_WINDOW >> 8]); // "R\x01" + window
    this.writeRaw(hdr);
  }

  async pasteByte(c) {
    const p = this.paste;
    if (c === CTRL_D) {
      this.paste = null;
      this.writeRaw(Buffer.from([CTRL_D])); // acknowledge end of data
      // Hand the program to the port's raw REPL, which compiles and runs it and answers
      // exactly as after raw-REPL input, except that raw-paste sends no "OK".
      const code = Buffer.concat(p.chunks.map((a) => Buffer.from(a)));
      for (const b of code) {
        if (b === CTRL_A || b === CTRL_B || b === CTRL_C || b === CTRL_D) continue; // cannot pass through
        this.mp.replProcessChar(b);
      }
      this.swallow = [0x4f, 0x4b]; // "OK"
      return this.feed(CTRL_D);
    }
    if (c === CTRL_C) { // abort: like a board, drop the program
      this.paste = null;
      this.writeRaw(Buffer.from([CTRL_D]));
      this.write(">");
      return;
    }
    if (!p.chunks.length || p.chunks[p.chunks.length - 1].length >= 4096) p.chunks.push([]);
    p.chunks[p.chunks.length - 1].push(c);
    p.received++;
    if (p.received % PASTE_WINDOW === 0) this.writeRaw(Buffer.from([CTRL_A])); // window free again
  }

  async feed(c) {
    // Track which REPL the port is in (its own state is not exported).
    if (this.raw && c === CTRL_B) this.raw = false;
    else if (!this.raw && c === CTRL_A) this.raw = true;
    let ret;
    this.busy = true;
    try {
      ret = await this.mp.replProcessCharWithAsyncify(c);
    } finally {
      this.busy = false;
    }
    this.swallow = null;
    if (ret & PYEXEC_FORCED_EXIT) {
      this.flush();
      await this.boot({ soft: true, runScripts: true });
    }
  }

  shutdown() {
    try { this.syncNow(); } catch (e) { process.stderr.write(`serial_board: sync failed: ${e}\n`); }
  }
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  fs.mkdirSync(opts.fs, { recursive: true });
  const { loadMicroPython } = await import(pathToFileURL(MP_MODULE).href);
  const board = new Board(opts, loadMicroPython);
  // Writes by running firmware (no REPL input) are written back too, at least every second.
  setInterval(() => { try { board.syncNow(); } catch (e) { /* next time */ } }, 1000).unref();
  board.ready = board.boot({ soft: false, runScripts: opts.boot });
  await board.mpLoaded;

  const server = net.createServer((sock) => board.attach(sock));
  server.on("error", (e) => {
    process.stderr.write(`serial_board: ${e.message}\n`);
    process.exit(1);
  });
  server.listen(opts.port, opts.host, () => {
    const a = server.address();
    process.stdout.write(`listening ${a.address}:${a.port}\n`);
  });
  process.on("uncaughtException", (e) => { // e.g. an error escaping a Python task's timer
    process.stderr.write(`serial_board: uncaught: ${e && e.message || e}\n`);
  });
  const stop = () => { board.shutdown(); process.exit(0); };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  process.on("SIGHUP", stop);
}

main().catch((e) => {
  process.stderr.write(`serial_board: ${e && e.stack || e}\n`);
  process.exit(1);
});
