import { describe, expect, it } from "vitest";
import { camelCase } from "../src/case";

describe("camelCase", () => {
  it("joins two words", () => {
    expect(camelCase("hello world")).toBe("helloWorld");
  });
  it("lowercases the first word", () => {
    expect(camelCase("Hello World")).toBe("helloWorld");
  });
});
