import { describe, expect, it } from "vitest";
import { parseQuery } from "../src/query";

describe("parseQuery", () => {
  it("splits pairs", () => {
    expect(parseQuery("a=1&b=2")).toEqual({ a: "1", b: "2" });
  });
  it("ignores a leading question mark", () => {
    expect(parseQuery("?a=1")).toEqual({ a: "1" });
  });
});
