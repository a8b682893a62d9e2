//! Tauri's build step: the app manifest of commands the capabilities grant.

fn main() {
    // Declaring the app's commands makes Tauri check every one of them against
    // capabilities/: a command not granted there cannot be invoked.
    let manifest = tauri_build::AppManifest::new().commands(&[
        "run_drill",
        "app_info",
        "list_runbooks",
        "open_event",
        "event_view",
        "watch_event",
        "run_step",
        "skip_step",
        "fire",
        "resume",
        "disarm",
        "approve",
        "abort",
        "switch_zombie",
        "campaign_preview",
        "list_recordings",
        "open_recording",
        "export_report",
        "get_settings",
        "save_settings",
        "confirm_close",
    ]);
    tauri_build::try_build(tauri_build::Attributes::new().app_manifest(manifest)).expect("tauri build script");
}
