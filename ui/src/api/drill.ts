// The drill area of the backend: the only place the UI calls Tauri for it.
import { Channel, invoke } from "@tauri-apps/api/core";
import type { AppInfo, DrillEvent, DrillRequest, DrillSummary } from "./types";

/** Runs a drill in embedded mode; `onEvent` receives its stages and progress. */
export function runDrill(request: DrillRequest, onEvent: (e: DrillEvent) => void): Promise<DrillSummary> {
  const channel = new Channel<DrillEvent>();
  channel.onmessage = onEvent;
  return invoke<DrillSummary>("run_drill", { request, onEvent: channel });
}

/** Version, mode and data directory. */
export function appInfo(): Promise<AppInfo> {
  return invoke<AppInfo>("app_info");
}
