import { describe, expect, it } from "vitest";
import { range } from "../src/range";

describe("range", () => {
  it("counts up", () => {
    expect(range(0, 3)).toEqual([0, 1, 2]);
  });
  it("takes a step", () => {
    expect(range(0, 10, 5)).toEqual([0, 5]);
  });
});
