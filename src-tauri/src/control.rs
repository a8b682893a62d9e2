//! The control room's commands: open a runbook's event, walk its steps, arm,
//! fire, zombie mode, live updates, replay. Each is a few lines over the
//! `kickoff-sender` library; the engine enforces every gate.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kickoff_sender::aws::AwsError;
use kickoff_sender::aws::dynamodb::ImportError;
use kickoff_sender::recorder::charts::Chart;
use kickoff_sender::recorder::replay::{self, EventSummary, Frame};
use kickoff_sender::recorder::{AuditEntry, EventLog, report};
use kickoff_sender::runbook::engine::{ActError, Actor};
use kickoff_sender::runbook::{self, Event, EventState, FailureCause, Runbook, Step, StepStatus};
use kickoff_sender::session::{Session, SessionError, SessionOptions};
use kickoff_sender::zombie::{Switch, ZombieFlag};
use tauri::State;
use tauri::ipc::Channel;

use crate::settings::{Mode, Settings};
use crate::{AppState, CommandError};

/// The event the app has open: a [`Session`] of the library, the same one
/// a CLI walk opens.
pub type OpenEvent = Session;

/// A runbook the app can open.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunbookInfo {
    /// File.
    pub file: String,
    /// Name, or the error that makes it unusable.
    pub name: Result<String, String>,
}

/// Everything the control room shows about the open event.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EventView {
    /// Steps' states and gates, warm, armed, fired, summary.
    pub state: EventState,
    /// Step definitions, in order.
    pub steps: Vec<Step>,
    /// The abort plan.
    pub abort_plan: String,
    /// Different operators the arm needs (`[approvals] arm`; 1 without).
    pub arm_approvals: u32,
    /// Every backend's zombie flag.
    pub flags: Vec<ZombieFlag>,
    /// Backends with a toggle.
    pub backends: Vec<String>,
    /// The recorder file.
    pub record: String,
    /// Joined an event another window or process opened.
    pub joined: bool,
    /// The event time (T), if the runbook has one.
    pub event_time_ms: Option<u64>,
    /// Now, by the backend's clock.
    pub now_ms: u64,
    /// Where client apps read the flags.
    pub flag_url: Option<String>,
}

/// A chart rendered as SVG.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChartSvg {
    /// `throughput`, `delivered`, `errors`, `latency`, `zombie`, `fleet`.
    pub name: &'static str,
    /// Its title.
    pub title: String,
    /// The SVG document.
    pub svg: String,
}

/// What `watch_event` pushes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EventUpdate {
    /// The event.
    pub view: EventView,
    /// Live charts (about once a second).
    pub charts: Option<Vec<ChartSvg>>,
    /// The audit log so far.
    pub log: Option<Vec<AuditEntry>>,
    /// The window was asked to close while the fire sends: ask the
    /// operator, then call `confirm_close`.
    pub close_asked: bool,
}

fn view(open: &OpenEvent) -> EventView {
    let e = open.event();
    let rb = e.runbook();
    EventView {
        state: e.state(),
        steps: rb.steps.clone(),
        abort_plan: rb.abort_plan.clone(),
        arm_approvals: rb.arm_approvals.map_or(1, |a| a.count),
        flags: e.services().flags.flags().unwrap_or_default(),
        backends: rb.backends.clone(),
        record: open.record().display().to_string(),
        joined: open.joined(),
        event_time_ms: rb.event_time_ms,
        now_ms: kickoff_sender::recorder::now_ms(),
        flag_url: e.services().flag_url.clone(),
    }
}

/// Charts of a recorder file: the same ones, live and in replay.
fn charts_of(log: &EventLog) -> Vec<ChartSvg> {
    let summary = replay::summarize(log);
    report::charts(log, &summary)
        .into_iter()
        .filter_map(|(name, c): (&'static str, Chart)| Some(ChartSvg { name, title: c.title.clone(), svg: c.svg(720, 300).ok()? }))
        .collect()
}

fn actor(settings: &Settings) -> Actor {
    Actor { name: settings.operator.clone(), roles: settings.roles.clone() }
}

fn act_error(e: ActError) -> CommandError {
    let code = match &e {
        ActError::AlreadyFired { .. } | ActError::Failed { cause: FailureCause::AlreadyFired, .. } => "already_fired",
        ActError::Gated { .. } => "gated",
        ActError::Role { .. } => "role",
        ActError::Busy { .. } | ActError::AlreadyDone { .. } => "busy",
        ActError::Aborted { .. } => "aborted",
        ActError::Failed { cause: FailureCause::Unavailable, .. } => "unavailable",
        ActError::Failed { cause: FailureCause::Capacity, .. } => "capacity",
        ActError::Failed { cause: FailureCause::Credentials, .. } => "credentials",
        ActError::Failed { cause: FailureCause::Internal, .. } => "internal",
        ActError::Failed { cause: FailureCause::Step, .. } => "step_failed",
        ActError::NoStep(_) | ActError::Invalid(_) => "invalid",
    };
    CommandError { code, message: e.to_string() }
}

fn session_error(e: SessionError) -> CommandError {
    let code = match &e {
        SessionError::Aws(AwsError::Config { .. }) | SessionError::Audience { source: ImportError::Aws(AwsError::Config { .. }), .. } => {
            "invalid"
        }
        SessionError::Aws(_) | SessionError::Fleet(_) | SessionError::Audience { source: ImportError::Aws(_), .. } => "unavailable",
        SessionError::Audience { .. } => "invalid",
        SessionError::Event(_) => "campaign",
        SessionError::Registry(_) | SessionError::Services(_) => "internal",
    };
    CommandError { code, message: e.to_string() }
}

async fn current(state: &AppState) -> Result<Arc<Event>, CommandError> {
    state
        .event
        .lock()
        .await
        .as_ref()
        .map(|o| o.event().clone())
        .ok_or_else(|| CommandError::invalid("no event is open: open a runbook first"))
}

/// The runbooks in the data directory (the shipped ones are installed there).
#[tauri::command]
pub fn list_runbooks(state: State<'_, AppState>) -> Result<Vec<RunbookInfo>, CommandError> {
    let files = runbook::install_shipped(&state.data_dir.join("runbooks")).map_err(CommandError::internal)?;
    Ok(files
        .into_iter()
        .map(|f| RunbookInfo { file: f.display().to_string(), name: Runbook::load(&f).map(|r| r.name).map_err(|e| e.to_string()) })
        .collect())
}

/// Opens `runbook` (a file in the data directory's `runbooks/`), joining
/// the event another window or process has open for it.
#[tauri::command]
pub async fn open_event(state: State<'_, AppState>, runbook: String) -> Result<EventView, CommandError> {
    let settings = state.settings.lock().expect("settings lock").clone();
    let dir = std::fs::canonicalize(state.data_dir.join("runbooks")).map_err(CommandError::internal)?;
    let path = std::fs::canonicalize(&runbook).map_err(|e| CommandError::invalid(format!("{runbook}: {e}")))?;
    if !path.starts_with(&dir) {
        return Err(CommandError::invalid(format!("runbooks open from {} only", dir.display())));
    }
    let rb = Runbook::load(&path).map_err(|e| CommandError { code: "runbook", message: e.to_string() })?;
    let mut opts = SessionOptions::embedded(state.data_dir.clone());
    if settings.mode == Mode::Aws {
        opts.aws = Some(settings.aws.config(&state.data_dir.join("settings.json")).map_err(CommandError::invalid)?);
        opts.provider = settings.aws.provider().map_err(CommandError::invalid)?;
    }
    let mut slot = state.event.lock().await;
    if slot.as_ref().is_some_and(Session::sending) {
        return Err(CommandError::busy("a send is in progress; watch it to the end (or abort) before opening another event"));
    }
    // The old event closes first: reopening the same runbook then opens a
    // new event instead of joining the one being closed.
    if let Some(old) = slot.take() {
        old.close().await;
    }
    let session = Session::open(rb, opts).await.map_err(session_error)?;
    let v = view(&session);
    *slot = Some(session);
    Ok(v)
}

/// The open event.
#[tauri::command]
pub async fn event_view(state: State<'_, AppState>) -> Result<EventView, CommandError> {
    state.event.lock().await.as_ref().map(view).ok_or_else(|| CommandError::invalid("no event is open"))
}

/// Pushes the event on every change, and charts and the log once a second,
/// until the window goes away or another event is opened.
#[tauri::command]
pub async fn watch_event(state: State<'_, AppState>, on_update: Channel<EventUpdate>) -> Result<(), CommandError> {
    let event = current(&state).await?;
    let mut rx = event.subscribe();
    let mut last_charts = std::time::Instant::now() - Duration::from_secs(2);
    loop {
        let (v, record) = {
            let slot = state.event.lock().await;
            match slot.as_ref() {
                Some(o) if Arc::ptr_eq(o.event(), &event) => (view(o), o.record().to_owned()),
                _ => return Ok(()),
            }
        };
        let (charts, log) = if last_charts.elapsed() >= Duration::from_secs(1) {
            last_charts = std::time::Instant::now();
            match EventLog::open(&record) {
                Ok(l) => (Some(charts_of(&l)), Some(l.audit)),
                Err(_) => (None, None),
            }
        } else {
            (None, None)
        };
        let close_asked = state.close_asked.load(std::sync::atomic::Ordering::Acquire);
        if on_update.send(EventUpdate { view: v, charts, log, close_asked }).is_err() {
            return Ok(());
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return Ok(()) },
            () = tokio::time::sleep(Duration::from_millis(if close_asked { 150 } else { 1000 })) => {}
        }
        // Coalesce bursts of progress updates.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Runs a step as the operator in Settings.
#[tauri::command]
pub async fn run_step(state: State<'_, AppState>, step: String) -> Result<StepStatus, CommandError> {
    let who = actor(&state.settings.lock().expect("settings lock"));
    current(&state).await?.run_step(&step, &who).await.map_err(act_error)
}

/// Skips a step, with a reason.
#[tauri::command]
pub async fn skip_step(state: State<'_, AppState>, step: String, reason: String) -> Result<StepStatus, CommandError> {
    let who = actor(&state.settings.lock().expect("settings lock"));
    current(&state).await?.skip(&step, &who, &reason).map_err(act_error)
}

/// Presses fire: runs the runbook's fire step. Idempotent: every press
/// after the first answers `already_fired` with who and when.
#[tauri::command]
pub async fn fire(state: State<'_, AppState>) -> Result<StepStatus, CommandError> {
    let who = actor(&state.settings.lock().expect("settings lock"));
    let event = current(&state).await?;
    let step = event.runbook().steps.iter().find(|s| s.kind == runbook::StepKind::Fire).map(|s| s.id.clone());
    let step = step.ok_or_else(|| CommandError::invalid("this runbook has no fire step"))?;
    event.run_step(&step, &who).await.map_err(act_error)
}

/// Resumes the event's interrupted fire (press and hold, an engineer):
/// sends exactly the devices without a final answer.
#[tauri::command]
pub async fn resume(state: State<'_, AppState>) -> Result<runbook::engine::FireInfo, CommandError> {
    let who = actor(&state.settings.lock().expect("settings lock"));
    current(&state).await?.resume(&who).map_err(act_error)
}

/// The operator's answer to "a fire is sending: close anyway?". Closing
/// stops the send in this window's process; the fire then reads as
/// interrupted and can be resumed.
#[tauri::command]
pub fn confirm_close<R: tauri::Runtime>(state: State<'_, AppState>, window: tauri::Window<R>, close: bool) -> Result<(), CommandError> {
    use std::sync::atomic::Ordering;
    state.close_asked.store(false, Ordering::Release);
    if close {
        state.close_confirmed.store(true, Ordering::Release);
        window.close().map_err(CommandError::internal)?;
    }
    Ok(())
}

/// Closing the window while this window's process sends a fire asks first
/// (through the control room); otherwise the window closes.
pub fn on_window_event<R: tauri::Runtime>(window: &tauri::Window<R>, event: &tauri::WindowEvent) {
    use std::sync::atomic::Ordering;
    use tauri::Manager as _;
    let tauri::WindowEvent::CloseRequested { api, .. } = event else { return };
    let state = window.state::<AppState>();
    if state.close_confirmed.load(Ordering::Acquire) {
        return;
    }
    // A busy lock means a command is acting on the event right now: ask.
    let sending = state.event.try_lock().map_or(true, |slot| slot.as_ref().is_some_and(|s| s.sending() && !s.joined()));
    if sending {
        api.prevent_close();
        state.close_asked.store(true, Ordering::Release);
    }
}

/// Disarms.
#[tauri::command]
pub async fn disarm(state: State<'_, AppState>) -> Result<(), CommandError> {
    let who = actor(&state.settings.lock().expect("settings lock"));
    current(&state).await?.disarm(&who).map_err(act_error)
}

/// Approves the arm as this window's operator (a two-person arm:
/// `[approvals] arm = N`); says how many of how many have approved.
#[tauri::command]
pub async fn approve(state: State<'_, AppState>) -> Result<String, CommandError> {
    let who = actor(&state.settings.lock().expect("settings lock"));
    current(&state).await?.approve(&who).await.map_err(act_error)
}

/// Aborts the event (and a fire in progress).
#[tauri::command]
pub async fn abort(state: State<'_, AppState>, reason: String) -> Result<(), CommandError> {
    let who = actor(&state.settings.lock().expect("settings lock"));
    current(&state).await?.abort(&who, &reason).map_err(act_error)
}

/// Switches a backend's zombie flag.
#[tauri::command]
pub async fn switch_zombie(
    state: State<'_, AppState>,
    backend: String,
    on: bool,
    minutes: u64,
    why: String,
) -> Result<ZombieFlag, CommandError> {
    let who = actor(&state.settings.lock().expect("settings lock"));
    let seconds = minutes.checked_mul(60).ok_or_else(|| CommandError::invalid("zombie mode lasts at most 24 h"))?;
    let switch =
        if on { Switch::on(&backend, Duration::from_secs(seconds), &who.name, &why) } else { Switch::off(&backend, &who.name, &why) };
    current(&state).await?.switch_zombie(&who, &switch).map_err(act_error)
}

/// The notification as each locale's devices will show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Preview {
    /// Message locale.
    pub locale: String,
    /// Title.
    pub title: String,
    /// Body.
    pub body: String,
    /// The exact APNs payload.
    pub apns: String,
    /// The exact FCM message body.
    pub fcm: String,
}

/// Previews of the open event's campaign, per locale and platform.
#[tauri::command]
pub async fn campaign_preview(state: State<'_, AppState>) -> Result<Vec<Preview>, CommandError> {
    let event = current(&state).await?;
    let c = kickoff_sender::campaign::Campaign::load(&event.runbook().campaign)
        .map_err(|e| CommandError { code: "campaign", message: e.to_string() })?;
    let c = if event.runbook().silent { c.into_silent() } else { c };
    let payloads = kickoff_sender::campaign::Payloads::render(&c).map_err(|e| CommandError { code: "campaign", message: e.to_string() })?;
    let token = "0".repeat(64);
    Ok(c.messages
        .iter()
        .filter_map(|(locale, m)| {
            let i = payloads.index_of(locale)?;
            Some(Preview {
                locale: locale.clone(),
                title: m.title.clone(),
                body: m.body.clone(),
                apns: payloads.get(kickoff_sender::audience::Platform::Ios, i).body_for(&token),
                fcm: payloads.get(kickoff_sender::audience::Platform::Android, i).body_for("TOKEN"),
            })
        })
        .collect())
}

/// A recorded event.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Recording {
    /// File.
    pub file: String,
    /// Runbook name.
    pub runbook: String,
    /// When it was created (ms since the epoch).
    pub created_ms: u64,
}

/// Recorded events in the data directory, newest first.
#[tauri::command]
pub fn list_recordings(state: State<'_, AppState>) -> Result<Vec<Recording>, CommandError> {
    let dir = state.data_dir.join("events");
    let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(Vec::new()) };
    let mut out: Vec<Recording> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".kickoff.sqlite"))
        .filter_map(|p| {
            let log = EventLog::open_meta(&p).ok()?;
            Some(Recording {
                file: p.display().to_string(),
                runbook: log.meta.get("runbook").cloned().unwrap_or_default(),
                created_ms: log.meta.get("created_ms").and_then(|v| v.parse().ok()).unwrap_or(0),
            })
        })
        .collect();
    out.sort_by_key(|r| std::cmp::Reverse(r.created_ms));
    Ok(out)
}

/// A recorded event, ready to play.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReplayView {
    /// Runbook name.
    pub runbook: String,
    /// Summary from the points.
    pub summary: EventSummary,
    /// One frame per second.
    pub frames: Vec<Frame>,
    /// The charts of the whole event.
    pub charts: Vec<ChartSvg>,
    /// Steps: planned and actual.
    pub steps: Vec<replay::StepTiming>,
}

fn recording_path(state: &AppState, file: &str) -> Result<PathBuf, CommandError> {
    let dir = std::fs::canonicalize(state.data_dir.join("events")).map_err(|_| CommandError::invalid("nothing has been recorded yet"))?;
    let path = std::fs::canonicalize(file).map_err(|e| CommandError::invalid(format!("{file}: {e}")))?;
    if !path.starts_with(&dir) {
        return Err(CommandError::invalid(format!("recordings open from {} only", dir.display())));
    }
    Ok(path)
}

/// Opens a recorded event for replay.
#[tauri::command]
pub async fn open_recording(state: State<'_, AppState>, file: String) -> Result<ReplayView, CommandError> {
    let path = recording_path(&state, &file)?;
    tauri::async_runtime::spawn_blocking(move || {
        let log = EventLog::open(&path).map_err(|e| CommandError { code: "recording", message: e.to_string() })?;
        Ok(ReplayView {
            runbook: log.meta.get("runbook").cloned().unwrap_or_default(),
            summary: replay::summarize(&log),
            frames: replay::frames(&log, None, None),
            charts: charts_of(&log),
            steps: replay::step_timings(&log),
        })
    })
    .await
    .map_err(CommandError::internal)?
}

/// Writes a recorded event's report (charts, Markdown, HTML) next to it.
#[tauri::command]
pub async fn export_report(state: State<'_, AppState>, file: String) -> Result<String, CommandError> {
    let path = recording_path(&state, &file)?;
    let out = state.data_dir.join("reports").join(path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default());
    tauri::async_runtime::spawn_blocking(move || {
        let log = EventLog::open(&path).map_err(|e| CommandError { code: "recording", message: e.to_string() })?;
        let files = report::write(&log, &path, &out).map_err(CommandError::internal)?;
        Ok(files.html.display().to_string())
    })
    .await
    .map_err(CommandError::internal)?
}

/// The settings.
#[tauri::command]
pub fn get_settings(state: State<'_, AppState>) -> Settings {
    state.settings.lock().expect("settings lock").clone()
}

/// Checks and saves the settings.
#[tauri::command]
pub fn save_settings(state: State<'_, AppState>, settings: Settings) -> Result<Settings, CommandError> {
    settings.check().map_err(CommandError::invalid)?;
    settings.save(&state.data_dir).map_err(CommandError::internal)?;
    *state.settings.lock().expect("settings lock") = settings.clone();
    Ok(settings)
}
