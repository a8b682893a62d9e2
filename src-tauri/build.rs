fn main() {
    // Declaring the app's commands makes Tauri check every one of them against
    // capabilities/: a command not granted there cannot be invoked.
    let manifest = tauri_build::AppManifest::new().commands(&["run_drill", "app_info"]);
    tauri_build::try_build(tauri_build::Attributes::new().app_manifest(manifest)).expect("tauri build script");
}
