//! What the app keeps between commands. Managed by Tauri for the app's life.

use std::path::PathBuf;

/// App-wide state.
#[derive(Debug)]
pub struct AppState {
    /// Kickoff's data directory (ledger, recorder files), shared with the CLI.
    pub data_dir: PathBuf,
    /// Held while a drill runs: one drill at a time, so two drills never
    /// compete for the same cores and distort each other's figures.
    pub drill: tokio::sync::Mutex<()>,
}

impl AppState {
    /// State for the default data directory.
    pub fn new() -> Self {
        Self { data_dir: kickoff_sender::sys::data_dir(), drill: tokio::sync::Mutex::new(()) }
    }
}

impl Default for AppState {
    fn default() -> Self {
        Self::new()
    }
}
