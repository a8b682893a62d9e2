import { describe, expect, it } from "vitest";
import { bytes, count, rate, seconds } from "./format";

describe("format", () => {
  it("groups thousands", () => {
    expect(count(0)).toBe("0");
    expect(count(999)).toBe("999");
    expect(count(1000)).toBe("1,000");
    expect(count(4_000_000)).toBe("4,000,000");
    expect(count(-12345)).toBe("-12,345");
  });
  it("picks a unit for durations", () => {
    expect(seconds(0.0000425)).toBe("43 µs");
    expect(seconds(0.0421)).toBe("42.1 ms");
    expect(seconds(3.2141)).toBe("3.214 s");
    expect(seconds(125)).toBe("2 min 5 s");
    expect(seconds(Number.NaN)).toBe("–");
  });
  it("formats bytes and rates", () => {
    expect(bytes(454_000_000)).toBe("454.0 MB");
    expect(bytes(7_000_000_000)).toBe("7.00 GB");
    expect(rate(32_100_000)).toBe("32.1 M/s");
    expect(rate(193_019)).toBe("193 k/s");
    expect(rate(950)).toBe("950 /s");
  });
});
