import { describe, expect, it } from "vitest";
import { camelCase } from "../src/case";

describe("camelCase", () => {
  it("joins two words", () => {
    expect(camelCase("hello world")).toBe("helloWorld");
  });
  it("lowercases the first word", () => {
    expect(camelCase("Hello World")).toBe("helloWorld");
  });
  describe("separators", () => {
    it("splits on hyphens and underscores", () => {
      expect(camelCase("foo-bar_baz")).toBe("fooBarBaz");
    });
    it("collapses repeated spaces", () => {
      expect(camelCase("a  b")).toBe("aB");
    });
  });
});
