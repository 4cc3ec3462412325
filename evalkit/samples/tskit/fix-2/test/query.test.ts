import { describe, expect, it } from "vitest";
import { parseQuery } from "../src/query";

describe("parseQuery", () => {
  it("splits pairs", () => {
    expect(parseQuery("a=1&b=2")).toEqual({ a: "1", b: "2" });
  });
  it("ignores a leading question mark", () => {
    expect(parseQuery("?a=1")).toEqual({ a: "1" });
  });
  it("decodes escapes and plus signs", () => {
    expect(parseQuery("q=a%20b+c")).toEqual({ q: "a b c" });
  });
  it("keeps equals signs inside values", () => {
    expect(parseQuery("t=a=b")).toEqual({ t: "a=b" });
  });
});
