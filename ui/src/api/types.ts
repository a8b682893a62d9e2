// Types mirrored from the Rust side (kickoff-sender). Field names follow the
// JSON that serde produces there.

/** `kickoff_sender::drill::DrillSummary`. */
export interface DrillSummary {
  devices: number;
  delivered: number;
  duplicates: number;
  missing: number;
  failed: number;
  elapsed_s: number;
  rate_per_s: number;
  p50_s: number;
  p95_s: number;
  p99_s: number;
  max_s: number;
  peak_rss_bytes: number;
  in_flight_limit?: number;
  mean_rtt_s?: number;
  littles_law_s?: number;
  failed_by_reason: Record<string, number>;
  sender_delivered: number;
  handoff_s: number;
  prepare_s: number;
  load_s: number;
  audience_bytes: number;
  excluded: number;
  provider: string;
  workers: number;
  campaign_id: string;
  warm_checksum: string;
  measured_at: "receiver" | "sender";
  retries: number;
  pruned: number;
  prune_report?: string | null;
  alerts: string[];
}

/** `kickoff_sender::fanout::Progress`. */
export interface Progress {
  targeted: number;
  handed_off: number;
  delivered: number;
  failed: number;
  elapsed: number;
  done: boolean;
  aborted: boolean;
}

/** `kickoff_sender::drill::DrillEvent`. */
export type DrillEvent =
  | { stage: "generating"; done: number; total: number }
  | { stage: "compiling"; path: string }
  | { stage: "loading" }
  | { stage: "warm"; devices: number; workers: number }
  | ({ stage: "sending" } & Progress);

/** What the app asks for: a small drill in embedded mode. */
export interface DrillRequest {
  devices: number;
  provider: "gateway" | "null" | "model";
  silent: boolean;
}

/** The app's description of itself. */
export interface AppInfo {
  version: string;
  mode: "embedded";
  data_dir: string;
  cores: number;
}

/** Every command error: a stable code and a message for people. */
export interface CommandError {
  code: string;
  message: string;
}

export function isCommandError(e: unknown): e is CommandError {
  return typeof e === "object" && e !== null && "code" in e && "message" in e;
}
