// The control room's backend calls: the only place the UI invokes them.
import { Channel, invoke } from "@tauri-apps/api/core";
import type { EventUpdate, EventView, FireInfo, Preview, Recording, ReplayView, RunbookInfo, Settings, StepStatus, ZombieFlag } from "./types";

export const listRunbooks = (): Promise<RunbookInfo[]> => invoke("list_runbooks");
export const openEvent = (runbook: string): Promise<EventView> => invoke("open_event", { runbook });
export const eventView = (): Promise<EventView> => invoke("event_view");
export const runStep = (step: string): Promise<StepStatus> => invoke("run_step", { step });
export const skipStep = (step: string, reason: string): Promise<StepStatus> => invoke("skip_step", { step, reason });
export const fire = (): Promise<StepStatus> => invoke("fire");
export const resume = (): Promise<FireInfo> => invoke("resume");
export const confirmClose = (close: boolean): Promise<void> => invoke("confirm_close", { close });
export const disarm = (): Promise<void> => invoke("disarm");
/** Approves the arm as this window's operator; says how many of how many have. */
export const approve = (): Promise<string> => invoke("approve");
export const abort = (reason: string): Promise<void> => invoke("abort", { reason });
export const switchZombie = (backend: string, on: boolean, minutes: number, why: string): Promise<ZombieFlag> =>
  invoke("switch_zombie", { backend, on, minutes, why });
export const campaignPreview = (): Promise<Preview[]> => invoke("campaign_preview");
export const listRecordings = (): Promise<Recording[]> => invoke("list_recordings");
export const openRecording = (file: string): Promise<ReplayView> => invoke("open_recording", { file });
export const exportReport = (file: string): Promise<string> => invoke("export_report", { file });
export const getSettings = (): Promise<Settings> => invoke("get_settings");
export const saveSettings = (settings: Settings): Promise<Settings> => invoke("save_settings", { settings });

/** Streams the open event's updates until the promise settles. */
export function watchEvent(onUpdate: (u: EventUpdate) => void): Promise<void> {
  const channel = new Channel<EventUpdate>();
  channel.onmessage = onUpdate;
  return invoke("watch_event", { onUpdate: channel });
}
