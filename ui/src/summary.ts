// What the drill panel shows, computed from backend data without the DOM.
import { bytes, count, rate, seconds } from "./format";
import type { DrillEvent, DrillSummary } from "./api/types";

export type Tone = "good" | "bad" | "plain";

export interface SummaryRow {
  testid: string;
  label: string;
  value: string;
  tone: Tone;
}

/** The rows of the summary table. Loss and duplicates are flagged, never hidden. */
export function summaryRows(s: DrillSummary): SummaryRow[] {
  const zeroIsGood = (n: number): Tone => (n === 0 ? "good" : "bad");
  const rows: SummaryRow[] = [
    { testid: "summary-devices", label: "Devices", value: count(s.devices), tone: "plain" },
    {
      testid: "summary-delivered",
      label: "Delivered",
      value: count(s.delivered),
      tone: s.delivered + s.failed === s.devices ? "good" : "bad",
    },
    { testid: "summary-duplicates", label: "Duplicates", value: count(s.duplicates), tone: zeroIsGood(s.duplicates) },
    { testid: "summary-missing", label: "Missing", value: count(s.missing), tone: zeroIsGood(s.missing) },
    { testid: "summary-failed", label: "Failed", value: failedText(s), tone: s.failed === 0 ? "good" : "plain" },
    {
      testid: "summary-elapsed",
      label: "Elapsed",
      value: `${seconds(s.elapsed_s)} (${rate(s.rate_per_s)})`,
      tone: "plain",
    },
    {
      testid: "summary-latency",
      label: "Delivery p50 / p95 / p99 / max",
      value: [s.p50_s, s.p95_s, s.p99_s, s.max_s].map(seconds).join(" / "),
      tone: "plain",
    },
    { testid: "summary-memory", label: "Peak memory", value: bytes(s.peak_rss_bytes), tone: "plain" },
    {
      testid: "summary-counted",
      label: "Counted at",
      value: s.measured_at === "receiver" ? `the receiving end (${s.provider})` : `the sender only (${s.provider} cannot be asked)`,
      tone: "plain",
    },
  ];
  if (s.retries > 0 || s.pruned > 0) {
    rows.push({ testid: "summary-retries", label: "Retries / pruned tokens", value: `${count(s.retries)} / ${count(s.pruned)}`, tone: "plain" });
  }
  for (const [i, alert] of s.alerts.entries()) {
    rows.push({ testid: `summary-alert-${i}`, label: "Alert", value: alert, tone: "bad" });
  }
  if (s.littles_law_s !== undefined && s.in_flight_limit !== undefined) {
    const off = (s.elapsed_s / s.littles_law_s - 1) * 100;
    rows.push({
      testid: "summary-model",
      label: "Little's law bound",
      value: `${seconds(s.littles_law_s)} with ${count(s.in_flight_limit)} in flight (${off >= 0 ? "+" : ""}${off.toFixed(1)}%)`,
      tone: Math.abs(off) <= 10 ? "good" : "bad",
    });
  }
  return rows;
}

function failedText(s: DrillSummary): string {
  const reasons = Object.entries(s.failed_by_reason)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([reason, n]) => `${reason} ${count(n)}`);
  return reasons.length ? `${count(s.failed)} (${reasons.join(", ")})` : count(s.failed);
}

/** A progress bar's fraction and caption for a drill event. */
export function progressOf(e: DrillEvent): { fraction: number; caption: string } {
  switch (e.stage) {
    case "generating":
      return { fraction: e.total ? e.done / e.total : 0, caption: `Generating audience: ${count(e.done)} of ${count(e.total)}` };
    case "compiling":
      return { fraction: 0, caption: `Compiling ${e.path}` };
    case "loading":
      return { fraction: 0, caption: "Loading shard snapshots" };
    case "warm":
      return { fraction: 0, caption: `Workers warm (${e.workers}); firing at ${count(e.devices)} devices` };
    case "sending": {
      const answered = e.delivered + e.failed;
      return {
        fraction: e.targeted ? answered / e.targeted : 0,
        caption: `Sending: ${count(answered)} of ${count(e.targeted)} answered, ${seconds(e.elapsed)}`,
      };
    }
  }
}
