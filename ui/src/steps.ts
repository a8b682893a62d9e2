// Pure helpers of the control room: labels, timers, gate and fire status.
import type { EventView, Gate, Interrupted, StepDef, StepStateName, ZombieFlag } from "./api/types";
import { count } from "./format";

/** `T-30m`, `T`, `T+1m30s` from an offset in ms. */
export function offsetLabel(ms: number): string {
  if (ms === 0) return "T";
  const sign = ms < 0 ? "-" : "+";
  let s = Math.round(Math.abs(ms) / 1000);
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  return `T${sign}${h ? `${h}h` : ""}${m ? `${m}m` : ""}${s || (!h && !m) ? `${s}s` : ""}`;
}

/** `mm:ss` (or `h:mm:ss`) of a duration in ms. */
export function clock(ms: number): string {
  const total = Math.max(0, Math.round(ms / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  const mm = String(m).padStart(2, "0");
  const ss = String(s).padStart(2, "0");
  return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

/** The step's timer: time to its planned start (with an event time), or its elapsed time. */
export function stepTimer(step: StepDef, status: { state: StepStateName; started_ms: number | null; finished_ms: number | null }, eventMs: number | null, now: number): string {
  if (status.started_ms !== null) {
    const end = status.finished_ms ?? now;
    return `${status.state === "running" ? "running" : "took"} ${clock(end - status.started_ms)}`;
  }
  if (step.at === null) return "";
  if (eventMs === null) return offsetLabel(step.at.ms);
  const due = eventMs + step.at.ms;
  return due >= now ? `due in ${clock(due - now)}` : `late by ${clock(now - due)}`;
}

const LABELS: Record<StepStateName, string> = {
  pending: "waiting",
  ready: "ready",
  running: "running",
  done: "done",
  failed: "failed",
  skipped: "skipped",
  standby: "backup",
};

export function stateLabel(s: StepStateName): string {
  return LABELS[s];
}

/** "all gates open" or the closed ones. */
export function gateSummary(gates: Gate[]): string {
  const closed = gates.filter((g) => !g.open);
  if (gates.length === 0) return "no gates";
  if (closed.length === 0) return "all gates open";
  return closed.map((g) => `${g.what}: ${g.detail}`).join("; ");
}

function time(ms: number): string {
  return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

/** What an interrupted fire's panel says. */
export function interruptedText(i: Interrupted): string {
  const standing =
    i.answered !== null && i.targeted !== null
      ? `: ${count(i.answered)} of ${count(i.targeted)} devices have a final answer, ${count(Math.max(0, i.targeted - i.answered))} do not`
      : "";
  return `INTERRUPTED (${i.why})${standing}. An engineer can resume it: hold Resume for one second to send exactly the devices without a final answer.`;
}

/** What the fire panel says, and whether the button is live. */
export function fireStatus(view: EventView | null): { armed: boolean; text: string } {
  if (view === null) return { armed: false, text: "Open a runbook to begin." };
  const s = view.state;
  if (s.interrupted) return { armed: false, text: interruptedText(s.interrupted) };
  if (s.fired) return { armed: false, text: `Fired at ${time(s.fired.at_ms)} by ${s.fired.by}.` };
  if (s.aborted) return { armed: false, text: `Aborted by ${s.aborted[0]}: ${s.aborted[1]}` };
  if (s.armed && s.armed.campaign_hash === s.campaign_hash) return { armed: true, text: `ARMED by ${s.armed.by} at ${time(s.armed.at_ms)}. Hold the button for one second to fire.` };
  return { armed: false, text: "Not armed: the fire button is inert until the arm step is done." };
}

/** A zombie toggle's caption. */
export function flagCaption(flag: ZombieFlag | undefined, now: number): { on: boolean; text: string } {
  if (!flag) return { on: false, text: "off" };
  const active = flag.enabled && (flag.expires_at_ms === null || now < flag.expires_at_ms);
  if (active) {
    const left = flag.expires_at_ms === null ? "" : ` for ${clock(flag.expires_at_ms - now)} more`;
    return { on: true, text: `ZOMBIE${left}, by ${flag.set_by}` };
  }
  return { on: false, text: flag.enabled ? `off (expired), last by ${flag.set_by}` : `off, by ${flag.set_by}` };
}
