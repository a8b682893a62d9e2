import { describe, expect, it } from "vitest";
import type { EventView, StepDef } from "./api/types";
import { clock, fireStatus, flagCaption, gateSummary, interruptedText, offsetLabel, stepTimer } from "./steps";

const step = (at: number | null): StepDef => ({ id: "s", title: "S", role: "ops", kind: "checklist", at: at === null ? null : { ms: at }, deadline: null, backup: null, backup_for: null });

describe("timers", () => {
  it("formats offsets and clocks", () => {
    expect(offsetLabel(-30 * 60_000)).toBe("T-30m");
    expect(offsetLabel(0)).toBe("T");
    expect(offsetLabel(90_000)).toBe("T+1m30s");
    expect(clock(61_000)).toBe("01:01");
    expect(clock(3_661_000)).toBe("1:01:01");
  });

  it("counts down to a planned step, then up while it runs", () => {
    const pending = { state: "pending" as const, started_ms: null, finished_ms: null };
    expect(stepTimer(step(-60_000), pending, 100_000, 30_000)).toBe("due in 00:10");
    expect(stepTimer(step(-60_000), pending, 100_000, 50_000)).toBe("late by 00:10");
    expect(stepTimer(step(-60_000), pending, null, 0)).toBe("T-1m");
    expect(stepTimer(step(null), { state: "running", started_ms: 0, finished_ms: null }, null, 5_000)).toBe("running 00:05");
  });
});

describe("gates and the fire panel", () => {
  it("lists closed gates", () => {
    expect(gateSummary([{ what: "armed", open: false, detail: "not armed" }, { what: "step arm done", open: true, detail: "done" }])).toBe("armed: not armed");
    expect(gateSummary([{ what: "x", open: true, detail: "" }])).toBe("all gates open");
  });

  const view = (over: Partial<EventView["state"]>): EventView =>
    ({ state: { campaign_hash: "h", armed: null, fired: null, aborted: null, ...over } }) as unknown as EventView;

  it("is live only when armed for the current campaign", () => {
    expect(fireStatus(null).armed).toBe(false);
    expect(fireStatus(view({})).armed).toBe(false);
    expect(fireStatus(view({ armed: { by: "ana", at_ms: 0, campaign_hash: "h" } })).armed).toBe(true);
    expect(fireStatus(view({ armed: { by: "ana", at_ms: 0, campaign_hash: "old" } })).armed).toBe(false);
    const fired = fireStatus(view({ fired: { by: "mo", at_ms: 0, fire_id: "x" } }));
    expect(fired).toEqual({ armed: false, text: "Fired at 1970-01-01 00:00:00 UTC by mo." });
  });

  it("captions zombie toggles with their timer and owner", () => {
    const flag = { backend: "api", enabled: true, retry_after_s: 120, expires_at_ms: 120_000, set_by: "ana", why: "", set_at_ms: 0, version: 1 };
    expect(flagCaption(flag, 0)).toEqual({ on: true, text: "ZOMBIE for 02:00 more, by ana" });
    expect(flagCaption(flag, 120_000).on).toBe(false);
    expect(flagCaption(undefined, 0)).toEqual({ on: false, text: "off" });
  });
});

describe("an interrupted fire", () => {
  const interrupted = { fire_id: "c", by: "mo", at_ms: 0, why: "its process stopped before the end", answered: 7_000, targeted: 12_000 };

  it("says how far it got and how to resume", () => {
    const text = interruptedText(interrupted);
    expect(text).toContain("INTERRUPTED (its process stopped before the end)");
    expect(text).toContain("7,000 of 12,000 devices have a final answer, 5,000 do not");
    expect(text).toContain("hold Resume");
    expect(interruptedText({ ...interrupted, answered: null, targeted: null })).not.toContain("devices have");
  });

  it("takes the fire panel over, and the fire button stays inert", () => {
    const v = { state: { campaign_hash: "h", armed: null, fired: { by: "mo", at_ms: 0, fire_id: "c" }, aborted: null, interrupted } } as unknown as EventView;
    const fs = fireStatus(v);
    expect(fs.armed).toBe(false);
    expect(fs.text).toContain("INTERRUPTED");
  });
});
