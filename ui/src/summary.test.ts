import { describe, expect, it } from "vitest";
import { progressOf, summaryRows } from "./summary";
import type { DrillSummary } from "./api/types";

const base: DrillSummary = {
  devices: 200_000,
  delivered: 200_000,
  duplicates: 0,
  missing: 0,
  failed: 0,
  elapsed_s: 0.012,
  rate_per_s: 16_600_000,
  p50_s: 0.004,
  p95_s: 0.011,
  p99_s: 0.012,
  max_s: 0.012,
  peak_rss_bytes: 40_000_000,
  failed_by_reason: {},
  sender_delivered: 200_000,
  handoff_s: 0.012,
  prepare_s: 0.2,
  load_s: 0.01,
  audience_bytes: 14_000_000,
  excluded: 0,
  provider: "null",
  workers: 2,
  campaign_id: "demo-kickoff-drill-1",
  warm_checksum: "x",
  measured_at: "receiver",
  retries: 0,
  pruned: 0,
  alerts: [],
};

const row = (s: DrillSummary, id: string) => summaryRows(s).find((r) => r.testid === id);

describe("summaryRows", () => {
  it("shows a clean drill as good", () => {
    expect(row(base, "summary-delivered")).toMatchObject({ value: "200,000", tone: "good" });
    expect(row(base, "summary-duplicates")?.tone).toBe("good");
    expect(row(base, "summary-missing")?.tone).toBe("good");
    expect(row(base, "summary-model")).toBeUndefined();
  });
  it("flags loss and duplicates", () => {
    const lossy = { ...base, delivered: 199_990, missing: 10, duplicates: 3 };
    expect(row(lossy, "summary-delivered")?.tone).toBe("bad");
    expect(row(lossy, "summary-missing")).toMatchObject({ value: "10", tone: "bad" });
    expect(row(lossy, "summary-duplicates")).toMatchObject({ value: "3", tone: "bad" });
  });
  it("lists failures by reason and accepts them as accounted for", () => {
    const failing = { ...base, delivered: 199_000, failed: 1_000, failed_by_reason: { unregistered: 900, server_error: 100 } };
    expect(row(failing, "summary-failed")?.value).toBe("1,000 (server_error 100, unregistered 900)");
    expect(row(failing, "summary-delivered")?.tone).toBe("good");
  });
  it("compares a model run with Little's law", () => {
    const model = { ...base, elapsed_s: 5.184, littles_law_s: 5, in_flight_limit: 8000, mean_rtt_s: 0.04 };
    expect(row(model, "summary-model")).toMatchObject({ value: "5.000 s with 8,000 in flight (+3.7%)", tone: "good" });
    expect(row({ ...model, elapsed_s: 6 }, "summary-model")?.tone).toBe("bad");
  });
});

describe("what the drill could and could not measure", () => {
  it("says where deliveries were counted and raises alerts", () => {
    expect(row(base, "summary-counted")?.value).toBe("the receiving end (null)");
    const remote = { ...base, provider: "http", measured_at: "sender" as const, alerts: ["APNs answered 403 InvalidProviderToken"] };
    expect(row(remote, "summary-counted")?.value).toBe("the sender only (http cannot be asked)");
    expect(row(remote, "summary-alert-0")).toMatchObject({ value: "APNs answered 403 InvalidProviderToken", tone: "bad" });
    expect(row(base, "summary-retries")).toBeUndefined();
    expect(row({ ...base, retries: 12, pruned: 3 }, "summary-retries")?.value).toBe("12 / 3");
  });
});

describe("progressOf", () => {
  it("measures sending by answers", () => {
    const p = progressOf({
      stage: "sending",
      targeted: 1000,
      handed_off: 800,
      delivered: 450,
      failed: 50,
      elapsed: 0.5,
      done: false,
      aborted: false,
    });
    expect(p.fraction).toBe(0.5);
    expect(p.caption).toBe("Sending: 500 of 1,000 answered, 500.0 ms");
  });
  it("measures generation and survives an empty total", () => {
    expect(progressOf({ stage: "generating", done: 25, total: 100 }).fraction).toBe(0.25);
    expect(progressOf({ stage: "generating", done: 0, total: 0 }).fraction).toBe(0);
  });
});
