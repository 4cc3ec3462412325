// What evalkit's JavaScript launchers share: instructions from stdin, the collector
// channel, test ids, and the runner's module resolved from the image, never the checkout.
//
// The instructions (socket path, nonce, the ids to select) arrive as one JSON line on
// stdin, read before any checkout code loads; nothing is in a file or the environment
// the tests can read. The channel is connected and authenticated at once. Test ids are
// "path/to/file.test.ts > describe > test name".
import fs from "node:fs";
import net from "node:net";
import { Worker } from "node:worker_threads";
import path from "node:path";
import { pathToFileURL } from "node:url";

export const ROOT = "/testbed";
export const MODULES = "/node_modules";
export const SEPARATOR = " > ";

export function readInstructions() {
  const bytes = [];
  const one = Buffer.alloc(1);
  for (;;) {
    let n;
    try {
      n = fs.readSync(0, one, 0, 1, null);
    } catch (err) {
      if (err.code === "EAGAIN") {
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5);
        continue;
      }
      throw err;
    }
    if (n !== 1 || one[0] === 10) break;
    bytes.push(one[0]);
  }
  try {
    fs.closeSync(0);
  } catch {}
  return JSON.parse(Buffer.from(bytes).toString("utf8"));
}

export function parseArgs(argv) {
  const out = { config: null, timeout: 0, files: [], extra: [] };
  let rest = false;
  for (let i = 0; i < argv.length; i++) {
    if (rest) out.files.push(argv[i]);
    else if (argv[i] === "--") rest = true;
    else if (argv[i] === "--config") out.config = argv[++i];
    else if (argv[i] === "--timeout") out.timeout = Number(argv[++i]) || 0;
    else out.extra.push(argv[i]);
  }
  if (out.config === "/evalkit/none") out.config = null;
  return out;
}

export class Channel {
  constructor(sock) {
    this.sock = sock;
    this.write = net.Socket.prototype.write;
  }
  static open(socketPath, nonce) {
    return new Promise((resolve, reject) => {
      const sock = net.createConnection(socketPath, () => {
        const channel = new Channel(sock);
        channel.emit({ hello: nonce });
        resolve(channel);
      });
      sock.on("error", reject);
    });
  }
  emit(record) {
    // The write function captured before the checkout loaded: a replaced
    // Socket.prototype.write does not see (or drop) the evidence.
    this.write.call(this.sock, JSON.stringify(record) + "\n");
  }
  // After the end line: wait for the collector's acknowledgement (it has read every
  // line while this process is alive), then close.
  close(timeoutMs = 5000) {
    return new Promise((resolve) => {
      let got = "";
      const done = () => {
        clearTimeout(timer);
        this.sock.end(resolve);
      };
      const timer = setTimeout(done, timeoutMs);
      this.sock.on("data", (chunk) => {
        got += chunk.toString();
        if (got.includes("end\n")) done();
      });
    });
  }
}

export function relative(file) {
  return path.relative(ROOT, file).split(path.sep).join("/");
}

export function testId(file, names) {
  return [relative(file), ...names].join(SEPARATOR);
}

export function regexEscape(text) {
  return text.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}

// The listed ids, per file: {file: Set(names joined by SEPARATOR)}.
export function selection(ids) {
  const byFile = new Map();
  for (const id of ids) {
    const [file, ...names] = id.split(SEPARATOR);
    if (!byFile.has(file)) byFile.set(file, new Set());
    byFile.get(file).add(names.join(SEPARATOR));
  }
  return byFile;
}

// A package's entry point from the image's root-owned /node_modules.
export async function importFromImage(pkg, subpath = ".") {
  return import(pathToFileURL(resolveFromImage(pkg, subpath)).href);
}

export function resolveFromImage(pkg, subpath = ".") {
  const dir = path.join(MODULES, pkg);
  const manifest = JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8"));
  let entry = null;
  const exp = manifest.exports;
  const pick = (value) => {
    if (typeof value === "string") return value;
    if (value && typeof value === "object") {
      for (const key of ["import", "node", "default", "require"]) {
        const found = pick(value[key]);
        if (found) return found;
      }
    }
    return null;
  };
  if (exp && typeof exp === "object" && !Array.isArray(exp) && Object.keys(exp)[0]?.startsWith(".")) {
    entry = pick(exp[subpath]);
  } else if (subpath === ".") {
    entry = pick(exp) || manifest.module || manifest.main || "index.js";
  }
  if (!entry) entry = subpath;
  return path.join(dir, entry);
}

export function version(pkg) {
  try {
    return JSON.parse(fs.readFileSync(path.join(MODULES, pkg, "package.json"), "utf8")).version;
  } catch {
    return null;
  }
}

// Session-end check: the launcher's own machinery is the one it started with.
export function integrityFindings(snapshot) {
  const findings = [];
  for (const [label, [holder, key, value]] of Object.entries(snapshot)) {
    if (holder[key] !== value) findings.push("runner internals replaced: " + label);
  }
  return findings;
}

// The test timeout, kept by a thread of this process: it kills the whole process (as
// `timeout --signal=KILL` would) however busy the main thread is, and it counts from the
// go signal (the instructions), not from this process's start, so a launcher started
// ahead of its turn waits at no cost. Returns the function that starts the clock.
function watchdog(seconds) {
  if (!(seconds > 0)) return () => {};
  const flags = new Int32Array(new SharedArrayBuffer(8));
  const worker = new Worker(
    `const { workerData } = require("node:worker_threads");
     const flags = new Int32Array(workerData.buffer);
     Atomics.wait(flags, 0, 0);
     Atomics.wait(flags, 1, 0, workerData.ms);
     process.kill(process.pid, "SIGKILL");`,
    { eval: true, workerData: { buffer: flags.buffer, ms: seconds * 1000 } },
  );
  worker.unref();
  return () => {
    Atomics.store(flags, 0, 1);
    Atomics.notify(flags, 0);
  };
}

// Every launcher starts alike, before any checkout code loads: ``warmup`` (the runner's
// modules, from the image only) may run before the instructions arrive on stdin, which
// is the go signal; then the channel is opened and told which runner reports.
export async function start(name, warmup = async () => null) {
  const args = parseArgs(process.argv.slice(2));
  const go = watchdog(args.timeout);
  const warm = await warmup();
  const instructions = readInstructions();
  go();
  const channel = await Channel.open(instructions.socket, instructions.nonce);
  channel.emit({ event: "runner", name, version: version(name) });
  return { instructions, args, channel, warm };
}
