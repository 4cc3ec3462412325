// Sandbox step 2 for jest: run exactly the listed tests and report each one to the collector.
//
// jest is imported from the image's /node_modules and driven through runCLI with the
// pinned config (the base's jest.config.*, its package.json "jest" key, or none), the
// listed files only (runTestsByPath) and a name pattern built from the listed ids.
// Results are taken from runCLI's aggregated result in this process, which the code
// under test (in jest's workers) cannot reach; the project's reporters are replaced by
// jest's default one, whose summary the grader checks against this report.
import {
  Channel,
  importFromImage,
  integrityFindings,
  regexEscape,
  relative,
  ROOT,
  SEPARATOR,
  selection,
  start,
} from "./evalkit_node.mjs";

const { instructions, args, channel, warm: jest } = await start("jest", () =>
  importFromImage("jest", "."),
);
const runCLI = jest.runCLI ?? jest.default?.runCLI;

const wanted = instructions.select || [];
const listed = wanted.length ? new Set(wanted) : null;
const argv = {
  _: args.files.map((f) => `${ROOT}/${f}`),
  $0: "jest",
  config: args.config ?? JSON.stringify({ rootDir: process.cwd() }),
  rootDir: process.cwd(), // /testbed, or a monorepo's workspace (evalkit.runners.node)
  runTestsByPath: true,
  reporters: ["default"],
  ci: true,
  color: false,
  cache: false,
  watch: false,
  watchAll: false,
  coverage: false,
  passWithNoTests: false,
  bail: 0,
};
if (listed) {
  const alternatives = [];
  for (const [, names] of selection(wanted)) {
    for (const name of names) alternatives.push(regexEscape(name.split(SEPARATOR).join(" ")));
  }
  argv.testNamePattern = `^(?:${alternatives.join("|")})$`;
}

const snapshot = { "Channel.emit": [Channel.prototype, "emit", Channel.prototype.emit] };
let failed = false;
try {
  const { results } = await runCLI(argv, [process.cwd()]);
  const seen = new Map();
  for (const file of results.testResults) {
    const rel = relative(file.testFilePath);
    if (file.testExecError || (file.failureMessage && !file.testResults.length)) {
      failed = true;
      channel.emit({ event: "collect_error", nodeid: rel });
    }
    for (const test of file.testResults) {
      let id = [rel, ...test.ancestorTitles, test.title].join(SEPARATOR);
      const n = (seen.get(id) || 0) + 1;
      seen.set(id, n);
      if (n > 1) id = `${id} (${n})`;
      const outcome = test.status === "passed" ? "passed" : test.status === "failed" ? "failed" : "skipped";
      if (outcome === "failed" && (!listed || listed.has(id))) failed = true;
      channel.emit({ event: "test", nodeid: id, when: "call", outcome, duration: (test.duration ?? 0) / 1000 });
    }
  }
  if (results.numRuntimeErrorTestSuites) failed = true;
} catch (err) {
  console.error("evalkit: jest failed:", err?.stack || err);
  failed = true;
}
const status = failed ? 1 : 0;
channel.emit({ event: "session_finish", exitstatus: status });
channel.emit({ event: "integrity", findings: integrityFindings(snapshot), audit: [] });
channel.emit({ event: "end" });
await channel.close();
process.exit(status);
