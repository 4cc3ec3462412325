// evalkit's setup file, run in every vitest worker before the test file (and so before
// any module under test) is imported: it snapshots the assertion machinery and, after
// the file's tests, fails the file with an "evalkit-integrity:" error if code replaced
// it. The launcher's reporter turns that error into an integrity finding, so a run in
// which the code under test rewrote `expect` is never resolved.
import { afterAll, expect } from "vitest";

const watched = [];
const assertion = Object.getPrototypeOf(expect(0));
for (let proto = assertion; proto && proto !== Object.prototype; proto = Object.getPrototypeOf(proto)) {
  for (const name of Object.getOwnPropertyNames(proto)) {
    const d = Object.getOwnPropertyDescriptor(proto, name);
    watched.push([proto, name, d.value ?? d.get]);
  }
}
for (const name of ["exit", "reallyExit", "abort", "kill", "send"]) watched.push([process, name, process[name]]);
watched.push([globalThis, "expect", globalThis.expect]);
const extend = expect.extend;

afterAll(() => {
  const changed = [];
  for (const [holder, name, value] of watched) {
    const d = Object.getOwnPropertyDescriptor(holder, name);
    if ((d ? (d.value ?? d.get) : undefined) !== value) changed.push(name);
  }
  if (expect.extend !== extend) changed.push("expect.extend");
  if (changed.length) {
    throw new Error("evalkit-integrity: assertion machinery replaced: " + changed.slice(0, 5).join(", "));
  }
});
