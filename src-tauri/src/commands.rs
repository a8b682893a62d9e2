//! Tauri commands: each translates its arguments into one `kickoff-sender`
//! call and its errors into [`CommandError`].

use kickoff_sender::drill::{self, DrillEvent, DrillOptions, DrillSummary, ProviderChoice};
use kickoff_sender::push::ModelConfig;
use tauri::State;
use tauri::ipc::Channel;

use crate::{AppState, CommandError};

/// Largest drill the app runs (the CLI has no such limit).
pub const MAX_APP_DRILL: u64 = 10_000_000;

/// Which provider a drill from the app sends to.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderName {
    /// The loopback gateway: real HTTP/2, APNs and FCM protocols.
    Gateway,
    /// Accept at once.
    Null,
    /// 20-60 ms round trips.
    Model,
}

/// A drill as the UI asks for it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct DrillRequest {
    /// Devices to generate.
    pub devices: u64,
    /// Provider.
    pub provider: ProviderName,
    /// Silent rehearsal payloads.
    #[serde(default)]
    pub silent: bool,
}

impl DrillRequest {
    fn options(&self) -> Result<DrillOptions, CommandError> {
        if !(1..=MAX_APP_DRILL).contains(&self.devices) {
            return Err(CommandError::invalid(format!("devices must be between 1 and {MAX_APP_DRILL}")));
        }
        let provider = match self.provider {
            ProviderName::Gateway => ProviderChoice::gateway(),
            ProviderName::Null => ProviderChoice::Null,
            ProviderName::Model => ProviderChoice::Model(ModelConfig::default()),
        };
        Ok(DrillOptions { devices: self.devices, provider, silent: self.silent, operator: "desktop".into(), ..DrillOptions::default() })
    }
}

/// Runs a drill in embedded mode, streaming its stages to `on_event`.
#[tauri::command]
#[tracing::instrument(skip(state, on_event), err)]
pub async fn run_drill(
    state: State<'_, AppState>,
    request: DrillRequest,
    on_event: Channel<DrillEvent>,
) -> Result<DrillSummary, CommandError> {
    let _one_at_a_time = state.drill.try_lock().map_err(|_| CommandError::busy("a drill is already running"))?;
    let opts = request.options()?;
    let summary = tauri::async_runtime::spawn_blocking(move || {
        drill::run_blocking(&opts, &|event| {
            // A closed window only stops the progress display, not the drill.
            let _ = on_event.send(event.clone());
        })
    })
    .await
    .map_err(CommandError::internal)??;
    Ok(summary)
}

/// The app's version, mode and data directory.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AppInfo {
    /// Version of the app.
    pub version: &'static str,
    /// `embedded` or `aws`, from the settings.
    pub mode: &'static str,
    /// Where the ledger and recordings live.
    pub data_dir: String,
    /// CPU cores (one notifier worker each).
    pub cores: usize,
}

/// Describes the running app.
#[tauri::command]
pub fn app_info(state: State<'_, AppState>) -> AppInfo {
    AppInfo {
        version: env!("CARGO_PKG_VERSION"),
        mode: match state.settings.lock().expect("settings lock").mode {
            crate::settings::Mode::Embedded => "embedded",
            crate::settings::Mode::Aws => "aws",
        },
        data_dir: state.data_dir.display().to_string(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}
