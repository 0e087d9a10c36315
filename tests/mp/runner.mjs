// Runs device-side Python under the real MicroPython (the official WebAssembly port) in Node.
// Used by tests/mp/harness.py (pytest plugin and benchmarks); not for people to call directly.
//
//   node tests/mp/runner.mjs --root REPO --tests tests/device/test_x.py
//       loads the device packages into MicroPython's filesystem, runs every module-level
//       test_* function (awaiting async ones), prints one JSON line per test:
//       {"test": name, "ok": bool, "output": text, "ms": n}
//   node tests/mp/runner.mjs --root REPO --code FILE
//       runs FILE's Python (top-level await allowed) and passes its output through.
//
// A fresh interpreter per invocation. Files load into /lib/<package>/..., tests/device/*.py
// into /lib, tests/vectors/* into /tests/vectors/ (see docs/developing.md).
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

const args = process.argv.slice(2);
const opt = (name) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : undefined; };
const root = path.resolve(opt("--root") || ".");
const require = createRequire(import.meta.url);  // the port installed beside this repo
const mpPath = require.resolve("@micropython/micropython-webassembly-pyscript/micropython.mjs");
const { loadMicroPython } = await import(mpPath);

const PACKAGES = ["protocol", "firmware", "boards"];

function copyTree(mp, hostDir, mpDir, keep) {
  if (!fs.existsSync(hostDir)) return;
  try { mp.FS.mkdir(mpDir); } catch (e) { /* exists */ }
  for (const entry of fs.readdirSync(hostDir, { withFileTypes: true })) {
    const host = path.join(hostDir, entry.name);
    const inside = mpDir + "/" + entry.name;
    if (entry.isDirectory()) {
      if (entry.name !== "__pycache__" && entry.name !== "node_modules") copyTree(mp, host, inside, keep);
    } else if (keep(entry.name)) {
      mp.FS.writeFile(inside, fs.readFileSync(host));
    }
  }
}

// With linebuffer false the port hands over one byte at a time (a Uint8Array): decode as UTF-8.
const decoder = new TextDecoder();
let out = "";
const sink = (b) => { out += typeof b === "string" ? b : decoder.decode(Uint8Array.from(typeof b === "number" ? [b] : b), { stream: true }); };
const mp = await loadMicroPython({ stdout: sink, stderr: sink, linebuffer: false });
try { mp.FS.mkdir("/lib"); } catch (e) { /* exists */ }
for (const pkg of PACKAGES) copyTree(mp, path.join(root, pkg), "/lib/" + pkg, (n) => n.endsWith(".py") || n.endsWith(".mpy"));
copyTree(mp, path.join(root, "tests", "device"), "/lib", (n) => n.endsWith(".py"));
try { mp.FS.mkdir("/tests"); } catch (e) { /* exists */ }
copyTree(mp, path.join(root, "tests", "vectors"), "/tests/vectors", () => true);
// This port freezes micropython-lib modules that the ESP32 firmware does not carry
// (hmac, abc, logging, datetime, ...). Shadow them so device code that leans on one fails
// here as it would on a board, instead of passing in tests and crashing in the field.
const NOT_ON_ESP32 = ["abc", "base64", "copy", "dataclasses", "datetime", "enum", "fnmatch",
  "functools", "gzip", "hmac", "html", "inspect", "itertools", "locale", "logging", "operator",
  "pathlib", "platform", "stat", "string", "tarfile", "types", "typing", "unittest", "uu"];
mp.FS.mkdir("/absent");
for (const name of NOT_ON_ESP32) {
  mp.FS.writeFile(`/absent/${name}.py`,
    `raise ImportError("no module named '${name}' (the ESP32 MicroPython port does not have it)")\n`);
}
mp.runPython("import sys\nsys.path.insert(0, '/lib')\nsys.path.insert(0, '/absent')\n");

const codeFile = opt("--code");
if (codeFile) {
  try {
    await mp.runPythonAsync(fs.readFileSync(codeFile, "utf8"));
    process.stdout.write(out);
  } catch (e) {
    process.stdout.write(out);
    process.stderr.write(String(e.message || e) + "\n");
    process.exit(1);
  }
  process.exit(0);
}

const testFile = opt("--tests");
const modName = path.basename(testFile, ".py");
// Import the module; a failure here (syntax, missing module) fails every test in it.
let names;
try {
  out = "";
  mp.runPython(`import ${modName}, json\nprint(json.dumps([n for n in dir(${modName}) if n.startswith('test_') and callable(getattr(${modName}, n))]))\n`);
  names = JSON.parse(out.trim().split("\n").pop() || "null");
  if (!Array.isArray(names)) throw new Error("could not list tests; output was: " + JSON.stringify(out));
} catch (e) {
  console.log(JSON.stringify({ test: "<import>", ok: false, output: out + String(e.message || e), ms: 0 }));
  process.exit(0);
}
for (const name of names) {
  out = "";
  const t0 = Date.now();
  let ok = true;
  try {
    await mp.runPythonAsync(
      `import gc\ngc.collect()\n_mp_r = ${modName}.${name}()\nif hasattr(_mp_r, 'send'):\n    await _mp_r\n_mp_r = None\n`);
  } catch (e) {
    ok = false;
    out += String(e.message || e);
  }
  console.log(JSON.stringify({ test: name, ok, output: out, ms: Date.now() - t0 }));
}
