//! What the app keeps between commands. Managed by Tauri for the app's life.

use std::path::PathBuf;

use crate::control::OpenEvent;
use crate::settings::Settings;

/// App-wide state.
#[derive(Debug)]
pub struct AppState {
    /// Kickoff's data directory (ledger, recorder files), shared with the CLI.
    pub data_dir: PathBuf,
    /// Held while a drill runs: one drill at a time, so two drills never
    /// compete for the same cores and distort each other's figures.
    pub drill: tokio::sync::Mutex<()>,
    /// The event the window has open.
    pub event: tokio::sync::Mutex<Option<OpenEvent>>,
    /// The settings.
    pub settings: std::sync::Mutex<Settings>,
    /// The window was asked to close while a fire was sending; the control
    /// room asks the operator.
    pub close_asked: std::sync::atomic::AtomicBool,
    /// The operator confirmed: the next close goes through.
    pub close_confirmed: std::sync::atomic::AtomicBool,
}

impl AppState {
    /// State for the default data directory.
    pub fn new() -> Self {
        Self::in_dir(kickoff_sender::sys::data_dir())
    }

    /// State for the data directory `dir`.
    pub fn in_dir(data_dir: PathBuf) -> Self {
        let settings = Settings::load(&data_dir);
        Self {
            data_dir,
            drill: tokio::sync::Mutex::new(()),
            event: tokio::sync::Mutex::new(None),
            settings: std::sync::Mutex::new(settings),
            close_asked: std::sync::atomic::AtomicBool::new(false),
            close_confirmed: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl Default for AppState {
    fn default() -> Self {
        Self::new()
    }
}
