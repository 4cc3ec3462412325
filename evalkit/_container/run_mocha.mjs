// Sandbox step 2 for mocha: run exactly the listed tests and report each one to the collector.
//
// mocha is loaded from the image's /node_modules; its options come from the pinned
// .mocharc (or none: --no-config --no-package), the listed files only and a grep
// anchored to the listed names. mocha runs the tests in this process, so unlike vitest
// and jest the code under test shares it with the channel (see docs/runners.md).
import { createRequire } from "node:module";

import {
  Channel,
  integrityFindings,
  MODULES,
  regexEscape,
  relative,
  ROOT,
  SEPARATOR,
  selection,
  start,
} from "./evalkit_node.mjs";

const require = createRequire(`${MODULES}/mocha/package.json`);
const { instructions, args, channel, warm } = await start("mocha", async () => ({
  Mocha: require(`${MODULES}/mocha/lib/mocha.js`),
  ...require(`${MODULES}/mocha/lib/cli/options.js`),
  ...require(`${MODULES}/mocha/lib/cli/run-helpers.js`),
}));
const { Mocha, loadOptions, handleRequires } = warm;

const wanted = instructions.select || [];
const listed = wanted.length ? new Set(wanted) : null;
const files = args.files.map((f) => `${ROOT}/${f}`);
const snapshot = { "Channel.emit": [Channel.prototype, "emit", Channel.prototype.emit] };
let failed = false;

function finish() {
  const status = failed ? 1 : 0;
  channel.emit({ event: "session_finish", exitstatus: status });
  channel.emit({ event: "integrity", findings: integrityFindings(snapshot), audit: [] });
  channel.emit({ event: "end" });
  channel.close().then(() => process.exit(status));
}

try {
  const opts = loadOptions(args.config ? ["--config", args.config] : ["--no-config", "--no-package"]);
  const plugins = await handleRequires(opts.require || []);
  const mocha = new Mocha({
    ui: opts.ui,
    timeout: opts.timeout,
    rootHooks: plugins?.rootHooks,
    globalSetup: plugins?.globalSetup,
    globalTeardown: plugins?.globalTeardown,
    reporter: "spec",
    color: false,
    allowUncaught: false,
    bail: false,
    forbidOnly: true,
  });
  for (const file of files) mocha.addFile(file);
  if (listed) {
    const alternatives = [];
    for (const [, names] of selection(wanted)) {
      for (const name of names) alternatives.push(regexEscape(name.split(SEPARATOR).join(" ")));
    }
    mocha.grep(new RegExp(`^(?:${alternatives.join("|")})$`));
  }
  await mocha.loadFilesAsync();
  const seen = new Map();
  const emit = (test, outcome) => {
    let id = [relative(test.file || ""), ...test.titlePath()].join(SEPARATOR);
    const n = (seen.get(id) || 0) + 1;
    seen.set(id, n);
    if (n > 1) id = `${id} (${n})`;
    if (outcome === "failed" && (!listed || listed.has(id))) failed = true;
    channel.emit({ event: "test", nodeid: id, when: "call", outcome, duration: (test.duration ?? 0) / 1000 });
  };
  const runner = mocha.run();
  runner.on("pass", (test) => emit(test, "passed"));
  runner.on("pending", (test) => emit(test, "skipped"));
  runner.on("fail", (test) => {
    if (test.type === "hook") {
      failed = true;
      channel.emit({ event: "collect_error", nodeid: relative(test.file || "") + SEPARATOR + test.title });
    } else emit(test, "failed");
  });
  runner.on("end", finish);
} catch (err) {
  console.error("evalkit: mocha failed:", err?.stack || err);
  failed = true;
  finish();
}
