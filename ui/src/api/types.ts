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

/** What to show people for a failed call: the command's message, or the error itself. */
export function errorText(e: unknown): string {
  return isCommandError(e) ? e.message : String(e);
}

/** An operator role of a runbook step. */
export type Role = "ops" | "engineer" | "marketer";
export type StepStateName = "pending" | "ready" | "running" | "done" | "failed" | "skipped" | "standby";

/** `kickoff_sender::runbook::engine::StepStatus`. */
export interface StepStatus {
  id: string;
  state: StepStateName;
  by: string | null;
  started_ms: number | null;
  finished_ms: number | null;
  note: string | null;
  progress: { label: string; done: number; total: number; elapsed_s: number } | null;
  result: unknown;
}

/** A gate of a step. */
export interface Gate {
  what: string;
  open: boolean;
  detail: string;
}

/** `kickoff_sender::runbook::file::Step` (the parts the UI uses). */
export interface StepDef {
  id: string;
  title: string;
  role: Role;
  kind: string;
  at: { ms: number } | null;
  deadline: { ms: number } | null;
  backup: { text: string; step: string | null } | null;
  backup_for: string | null;
}

/** `kickoff_sender::runbook::engine::EventState`. */
export interface EventState {
  event_id: string;
  runbook: string;
  campaign_hash: string;
  steps: [StepStatus, Gate[]][];
  warm: { campaign_hash: string; devices: number; workers: { worker: string; shards: number; shards_total: number }[] } | null;
  armed: { by: string; at_ms: number; campaign_hash: string } | null;
  fired: FireInfo | null;
  aborted: [string, string] | null;
  summary: EventSummary | null;
  interrupted: Interrupted | null;
}

/** `kickoff_sender::runbook::engine::FireInfo`. */
export interface FireInfo {
  by: string;
  at_ms: number;
  fire_id: string;
}

/** `kickoff_sender::runbook::engine::Interrupted`: a fire to resume. */
export interface Interrupted {
  fire_id: string;
  by: string;
  at_ms: number;
  why: string;
  answered: number | null;
  targeted: number | null;
}

/** `kickoff_sender::recorder::replay::EventSummary`. */
export interface EventSummary {
  campaign_id: string;
  campaign_hash: string;
  devices: number;
  delivered: number;
  failed: number;
  duplicates: number;
  missing: number;
  p50_s: number;
  p95_s: number;
  p99_s: number;
  max_s: number;
  failed_by_reason: Record<string, number>;
  fired_by: string | null;
  fired_at_ms: number | null;
}

/** `kickoff_sender::zombie::ZombieFlag`. */
export interface ZombieFlag {
  backend: string;
  enabled: boolean;
  retry_after_s: number;
  expires_at_ms: number | null;
  set_by: string;
  why: string;
  set_at_ms: number;
  version: number;
}

/** The control room's view of the open event. */
export interface EventView {
  state: EventState;
  steps: StepDef[];
  abort_plan: string;
  /** Different operators the arm needs (`[approvals] arm`; 1 without). */
  arm_approvals: number;
  flags: ZombieFlag[];
  backends: string[];
  record: string;
  joined: boolean;
  event_time_ms: number | null;
  now_ms: number;
  flag_url: string | null;
}

/** A chart as SVG. */
export interface ChartSvg {
  name: string;
  title: string;
  svg: string;
}

/** An audit entry. */
export interface AuditEntry {
  t_ms: number;
  actor: string;
  role: string;
  step: string;
  action: string;
  outcome: string;
  payload: string;
}

/** What `watch_event` pushes. */
export interface EventUpdate {
  view: EventView;
  charts: ChartSvg[] | null;
  log: AuditEntry[] | null;
  /** The window was asked to close while the fire sends. */
  close_asked: boolean;
}

/** A runbook in the data directory. */
export interface RunbookInfo {
  file: string;
  name: { Ok: string } | { Err: string };
}

/** A notification preview. */
export interface Preview {
  locale: string;
  title: string;
  body: string;
  apns: string;
  fcm: string;
}

/** A recorded event. */
export interface Recording {
  file: string;
  runbook: string;
  created_ms: number;
}

/** One second of a replay. */
export interface Frame {
  t_ms: number;
  offset_s: number;
  sent: [number, number];
  delivered: number;
  delivered_pct: number;
  failed: number;
  fleet: Record<string, number>;
  zombies: string[];
  actions: AuditEntry[];
}

/** A recorded event, ready to play. */
export interface ReplayView {
  runbook: string;
  summary: EventSummary;
  frames: Frame[];
  charts: ChartSvg[];
  steps: { id: string; title: string; planned: string | null; started_ms: number | null; finished_ms: number | null; outcome: string; by: string | null }[];
}

/** App settings. */
export interface Settings {
  operator: string;
  roles: Role[];
  mode: "embedded" | "aws";
  aws: Record<string, string>;
}
