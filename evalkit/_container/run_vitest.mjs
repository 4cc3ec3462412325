// Sandbox step 2 for vitest: run exactly the listed tests with evalkit's reporter.
//
// vitest is imported from the image's /node_modules and driven through its node API
// with evalkit's reporter passed as an object (and the project's reporters dropped),
// the pinned config file (or none), root /testbed and the forks pool: the code under
// test runs in child processes, never in this one, which holds the channel.
import fs from "node:fs";

import {
  Channel,
  importFromImage,
  resolveFromImage,
  integrityFindings,
  regexEscape,
  relative,
  ROOT,
  SEPARATOR,
  selection,
  start,
} from "./evalkit_node.mjs";

// vite bundles a TypeScript config into /node_modules/.vite-temp, which the image links
// to /tmp (the root filesystem is read-only); without the link, its slower module runner.
function viteTemp() {
  try {
    if (!fs.lstatSync("/node_modules/.vite-temp").isSymbolicLink()) return false;
    fs.mkdirSync("/tmp/.vite-temp", { recursive: true });
    return true;
  } catch {
    return false;
  }
}

const { instructions, args, channel, warm } = await start("vitest", () =>
  importFromImage("vitest", "./node"),
);
const { createVitest } = warm;
const ENTRY = resolveFromImage("vitest", ".");
const SETUP = new URL("./evalkit_vitest_setup.mjs", import.meta.url).pathname;

const wanted = instructions.select || [];
const listed = wanted.length ? new Set(wanted) : null;
const seen = new Map();
let failed = false;

function idOf(testCase) {
  return uniqueId(relative(testCase.module.moduleId) + SEPARATOR + testCase.fullName);
}

function uniqueId(id) {
  const n = (seen.get(id) || 0) + 1;
  seen.set(id, n);
  return n === 1 ? id : `${id} (${n})`; // same name twice in one suite: still two tests
}

class EvalkitReporter {
  onTestCaseResult(testCase) {
    const result = testCase.result();
    const outcome = result.state === "passed" ? "passed" : result.state === "failed" ? "failed" : "skipped";
    const id = idOf(testCase);
    if (outcome === "failed" && (!listed || listed.has(id))) failed = true;
    const duration = testCase.diagnostic()?.duration ?? 0;
    channel.emit({ event: "test", nodeid: id, when: "call", outcome, duration: duration / 1000 });
  }
  onTestModuleEnd(testModule) {
    const errors = testModule.errors();
    if (errors.length || testModule.state() === "failed") {
      failed = true;
      channel.emit({ event: "collect_error", nodeid: relative(testModule.moduleId) });
      const findings = errors
        .map((e) => String(e?.message ?? ""))
        .filter((m) => m.includes("evalkit-integrity:"))
        .map((m) => m.slice(m.indexOf("evalkit-integrity:") + 19).trim() + " in " + relative(testModule.moduleId));
      if (findings.length) channel.emit({ event: "integrity", findings, audit: [] });
    }
  }
  // vitest < 3 has no onTestCaseResult: the finished task tree instead (vitest 3 calls
  // both; the tree is used only when no per-test result came).
  onFinished(files = []) {
    if (seen.size) return;
    const walk = (task, names, file) => {
      if (task.type === "test" || task.type === "custom") {
        const id = uniqueId([relative(file), ...names, task.name].join(SEPARATOR));
        const state = task.result?.state;
        const outcome = state === "pass" ? "passed" : state === "fail" ? "failed" : "skipped";
        if (outcome === "failed" && (!listed || listed.has(id))) failed = true;
        channel.emit({ event: "test", nodeid: id, when: "call", outcome, duration: (task.result?.duration ?? 0) / 1000 });
        return;
      }
      for (const child of task.tasks || []) walk(child, task.type === "suite" && names !== null ? [...names, task.name] : [], file);
    };
    for (const file of files) {
      for (const child of file.tasks || []) walk(child, [], file.filepath);
      const errors = file.result?.errors || [];
      if (file.result?.state === "fail" && errors.length) {
        failed = true;
        channel.emit({ event: "collect_error", nodeid: relative(file.filepath) });
        const findings = errors
          .map((e) => String(e?.message ?? ""))
          .filter((m) => m.includes("evalkit-integrity:"))
          .map((m) => m.slice(m.indexOf("evalkit-integrity:") + 19).trim() + " in " + relative(file.filepath));
        if (findings.length) channel.emit({ event: "integrity", findings, audit: [] });
      }
    }
  }
  onTestRunEnd(testModules, unhandledErrors) {
    if (unhandledErrors.length) {
      failed = true;
      channel.emit({ event: "integrity", findings: [], audit: [`${unhandledErrors.length} unhandled error(s)`] });
    }
  }
}

const files = args.files.map((f) => `${ROOT}/${f}`);
const options = {
  root: process.cwd(), // /testbed, or a monorepo's workspace (evalkit.runners.node)
  config: args.config ?? false,
  configLoader: viteTemp() ? "bundle" : "runner",
  run: true,
  watch: false,
  pool: "forks",
  reporters: [new EvalkitReporter(), "default"],
  outputFile: undefined,
  color: false,
  passWithNoTests: false,
  allowOnly: false,
  bail: 0,
  silent: false,
  globalSetup: [],
  coverage: { enabled: false },
};
if (wanted.length) {
  const alternatives = [];
  for (const [file, names] of selection(wanted)) {
    for (const name of names) alternatives.push(regexEscape(name.split(SEPARATOR).join(" ")));
  }
  // vitest matches the names joined by spaces (after an empty root suite's name); the
  // file filter below keeps other files out, and only listed tests decide the status.
  options.testNamePattern = new RegExp(`^\\s*(?:${alternatives.join("|")})$`);
}

const snapshot = {
  "Channel.emit": [Channel.prototype, "emit", Channel.prototype.emit],
  "process.exit": [process, "exit", process.exit],
  "EvalkitReporter.onTestCaseResult": [
    EvalkitReporter.prototype,
    "onTestCaseResult",
    EvalkitReporter.prototype.onTestCaseResult,
  ],
};
let status = 0;
try {
  // Test files import "vitest" from the image, even if something put a node_modules
  // into the checkout during the run.
  const viteOverrides = {
    resolve: { alias: [{ find: /^vitest$/, replacement: ENTRY }] },
    server: { fs: { strict: false } }, // evalkit's setup file lives outside the root
  };
  // vitest before ~0.20 took no mode argument: createVitest(options, viteOverrides).
  const ctx =
    createVitest.length >= 2
      ? await createVitest("test", options, viteOverrides)
      : await createVitest(options, viteOverrides);
  for (const project of ctx.projects ?? [ctx]) project.config.setupFiles.unshift(SETUP);
  try {
    await ctx.start(files);
  } catch (err) {
    if (err?.name !== "FilesNotFoundError") throw err;
    failed = true;
  }
  if (process.exitCode) failed = true;
  await ctx.close();
} catch (err) {
  console.error("evalkit: vitest failed:", err?.stack || err);
  failed = true;
}
status = failed ? 1 : 0;
channel.emit({ event: "session_finish", exitstatus: status });
channel.emit({ event: "integrity", findings: integrityFindings(snapshot), audit: [] });
channel.emit({ event: "end" });
await channel.close();
process.exit(status);
