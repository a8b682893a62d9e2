//! The flight recorder: one SQLite file per event with every metric point,
//! every operator action (the audit log), runbook snapshots and the
//! campaign hash, so anyone can replay the event afterwards.
//!
//! Recording never blocks sending: callers push rows into an unbounded
//! channel, and a writer thread commits them in batches (every 100 ms or
//! 5,000 rows, whichever comes first). The file is in WAL mode: a reader may
//! open it while it is written, and a crash loses at most the rows not yet
//! committed; [`Recorder::flush`] waits for everything sent so far.
//!
//! - [`live`]: the [`crate::metrics::MetricsSink`] that turns the notifiers'
//!   counts into per-second points.
//! - [`replay`]: reading an event back: summary, playback.
//! - [`report`]: charts (PNG and SVG) and the Markdown / HTML report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, params};

pub mod charts;
pub mod live;
pub mod replay;
pub mod report;

pub use crate::clock::now_ms;

const BATCH_ROWS: usize = 5_000;
const BATCH_TIME: Duration = Duration::from_millis(100);

/// Recorder failures.
#[derive(Debug, thiserror::Error)]
pub enum RecorderError {
    /// The file could not be created, written or read.
    #[error("flight recorder {path}: {message}", path = path.display())]
    File {
        /// The recorder file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The writer thread stopped (its error was logged and is repeated here).
    #[error("flight recorder {path}: the writer stopped: {message}", path = path.display())]
    Writer {
        /// The recorder file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// A metric point.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Point {
    /// When, ms since the epoch.
    pub t_ms: u64,
    /// Metric name (`sent`, `delivered_total`, `asg_running`, ...).
    pub name: String,
    /// Dimensions, `k=v` joined by `,`, sorted (`platform=ios`); may be empty.
    pub dims: String,
    /// The value.
    pub value: f64,
}

impl Point {
    /// A point; `dims` are sorted.
    pub fn new(t_ms: u64, name: &str, dims: &[(&str, &str)], value: f64) -> Self {
        let mut d: Vec<_> = dims.iter().map(|(k, v)| format!("{k}={v}")).collect();
        d.sort();
        Self { t_ms, name: name.to_owned(), dims: d.join(","), value }
    }

    /// The value of dimension `key`.
    pub fn dim(&self, key: &str) -> Option<&str> {
        self.dims.split(',').find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
    }
}

/// An operator action or an engine event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditEntry {
    /// When, ms since the epoch.
    pub t_ms: u64,
    /// Who (an operator, or `kickoff` for the engine itself).
    pub actor: String,
    /// Their role.
    pub role: String,
    /// The runbook step, if any.
    pub step: String,
    /// What was done (`start`, `done`, `fail`, `skip`, `arm`, `fire`, `zombie`, ...).
    pub action: String,
    /// How it ended (`ok`, `refused`, `failed`, ...).
    pub outcome: String,
    /// Inputs and results, JSON.
    pub payload: String,
}

impl AuditEntry {
    /// `actor` did `action`, now, and it ended `outcome`; no role, step or
    /// payload until given.
    pub fn new(actor: &str, action: &str, outcome: &str) -> Self {
        Self {
            t_ms: now_ms(),
            actor: actor.into(),
            role: String::new(),
            step: String::new(),
            action: action.into(),
            outcome: outcome.into(),
            payload: "{}".into(),
        }
    }

    /// The role it was done in.
    pub fn role(mut self, role: &str) -> Self {
        role.clone_into(&mut self.role);
        self
    }

    /// The runbook step.
    pub fn step(mut self, step: &str) -> Self {
        step.clone_into(&mut self.step);
        self
    }

    /// Inputs and results.
    pub fn payload(mut self, payload: &serde_json::Value) -> Self {
        self.payload = payload.to_string();
        self
    }

    /// When, if not now (ms since the epoch).
    pub fn at(mut self, t_ms: u64) -> Self {
        self.t_ms = t_ms;
        self
    }
}

enum Msg {
    Point(Point),
    Audit(AuditEntry),
    Snapshot(u64, String),
    Meta(String, String),
    Flush(mpsc::Sender<()>),
}

/// Writes an event's recorder file.
#[derive(Debug)]
pub struct Recorder {
    path: PathBuf,
    tx: Mutex<Option<mpsc::Sender<Msg>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    failure: Arc<Mutex<Option<String>>>,
}

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS points (t_ms INTEGER NOT NULL, name TEXT NOT NULL, dims TEXT NOT NULL, value REAL NOT NULL);
    CREATE INDEX IF NOT EXISTS points_name_t ON points (name, t_ms);
    CREATE TABLE IF NOT EXISTS audit (
        id INTEGER PRIMARY KEY, t_ms INTEGER NOT NULL, actor TEXT NOT NULL, role TEXT NOT NULL,
        step TEXT NOT NULL, action TEXT NOT NULL, outcome TEXT NOT NULL, payload TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS snapshots (t_ms INTEGER NOT NULL, state TEXT NOT NULL);
";

fn file_err(path: &Path) -> impl Fn(rusqlite::Error) -> RecorderError + '_ {
    move |e| RecorderError::File { path: path.to_owned(), message: e.to_string() }
}

impl Recorder {
    /// Creates a new recorder file at `path` (its directory is created); an
    /// existing file is refused, so an event is never written over.
    pub fn create(path: &Path) -> Result<Self, RecorderError> {
        if path.exists() {
            return Err(RecorderError::File { path: path.to_owned(), message: "already exists; an event file is never reused".into() });
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| RecorderError::File { path: path.to_owned(), message: e.to_string() })?;
        }
        let conn = Connection::open(path).map_err(file_err(path))?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(file_err(path))?;
        // WAL + NORMAL: a committed batch survives a crash of the process;
        // only a power loss may take the last batches.
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(file_err(path))?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(file_err(path))?;
        conn.execute_batch(SCHEMA).map_err(file_err(path))?;
        conn.execute("INSERT INTO meta (key, value) VALUES ('format', '1'), ('created_ms', ?1)", params![now_ms().to_string()])
            .map_err(file_err(path))?;
        let (tx, rx) = mpsc::channel();
        let failure = Arc::new(Mutex::new(None));
        let fail = failure.clone();
        let p = path.to_owned();
        let writer = std::thread::Builder::new()
            .name("kickoff-recorder".into())
            .spawn(move || {
                if let Err(e) = write_loop(&conn, &rx, &fail) {
                    tracing::error!("flight recorder {}: {e}", p.display());
                    // Keep draining so senders never notice, and answer flushes.
                    while let Ok(m) = rx.recv() {
                        if let Msg::Flush(done) = m {
                            let _ = done.send(());
                        }
                    }
                }
            })
            .map_err(|e| RecorderError::File { path: path.to_owned(), message: format!("could not start the writer: {e}") })?;
        Ok(Self { path: path.to_owned(), tx: Mutex::new(Some(tx)), writer: Mutex::new(Some(writer)), failure })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn send(&self, m: Msg) {
        if let Some(tx) = self.tx.lock().expect("recorder lock").as_ref() {
            let _ = tx.send(m);
        }
    }

    /// Records a point (never blocks on the disk).
    pub fn point(&self, p: Point) {
        self.send(Msg::Point(p));
    }

    /// Records an audit entry.
    pub fn audit(&self, e: AuditEntry) {
        self.send(Msg::Audit(e));
    }

    /// Records a runbook snapshot (JSON).
    pub fn snapshot(&self, json: String) {
        self.send(Msg::Snapshot(now_ms(), json));
    }

    /// Sets a metadata key (the latest value wins).
    pub fn meta(&self, key: &str, value: &str) {
        self.send(Msg::Meta(key.to_owned(), value.to_owned()));
    }

    /// Waits until everything recorded so far is committed.
    pub fn flush(&self) -> Result<(), RecorderError> {
        let (tx, rx) = mpsc::channel();
        self.send(Msg::Flush(tx));
        let _ = rx.recv_timeout(Duration::from_secs(30));
        match self.failure.lock().expect("failure lock").clone() {
            Some(message) => Err(RecorderError::Writer { path: self.path.clone(), message }),
            None => Ok(()),
        }
    }

    /// Commits everything and stops the writer.
    pub fn close(&self) -> Result<(), RecorderError> {
        self.meta("closed_ms", &now_ms().to_string());
        let result = self.flush();
        self.tx.lock().expect("recorder lock").take();
        if let Some(w) = self.writer.lock().expect("recorder lock").take() {
            let _ = w.join();
        }
        result
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if self.writer.get_mut().expect("recorder lock").is_some() {
            let _ = self.close();
        }
    }
}

/// Commits batches until the channel closes. On a failure the error is
/// recorded *before* any waiting flush is woken, so `flush` reports it.
fn write_loop(conn: &Connection, rx: &mpsc::Receiver<Msg>, fail: &Mutex<Option<String>>) -> rusqlite::Result<()> {
    let mut batch = Vec::with_capacity(BATCH_ROWS);
    let mut flushes = Vec::new();
    while let Ok(first) = rx.recv() {
        let started = Instant::now();
        batch.push(first);
        while batch.len() < BATCH_ROWS {
            let left = BATCH_TIME.saturating_sub(started.elapsed());
            if left.is_zero() {
                break;
            }
            match rx.recv_timeout(left) {
                Ok(m @ Msg::Flush(_)) => {
                    batch.push(m);
                    break;
                }
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        if let Err(e) = commit(conn, &mut batch, &mut flushes) {
            *fail.lock().expect("failure lock") = Some(e.to_string());
            for done in flushes.drain(..) {
                let _ = done.send(());
            }
            return Err(e);
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
    Ok(())
}

fn commit(conn: &Connection, batch: &mut Vec<Msg>, flushes: &mut Vec<mpsc::Sender<()>>) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    {
        let mut point = tx.prepare_cached("INSERT INTO points (t_ms, name, dims, value) VALUES (?1, ?2, ?3, ?4)")?;
        let mut audit =
            tx.prepare_cached("INSERT INTO audit (t_ms, actor, role, step, action, outcome, payload) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?;
        let mut snap = tx.prepare_cached("INSERT INTO snapshots (t_ms, state) VALUES (?1, ?2)")?;
        let mut meta = tx.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?;
        // Take the flush waiters out first: if a row fails, none of them may
        // wake before the failure is recorded.
        let mut rows = Vec::with_capacity(batch.len());
        for m in batch.drain(..) {
            match m {
                Msg::Flush(done) => flushes.push(done),
                other => rows.push(other),
            }
        }
        for m in rows {
            match m {
                Msg::Point(p) => {
                    point.execute(params![p.t_ms as i64, p.name, p.dims, p.value])?;
                }
                Msg::Audit(e) => {
                    audit.execute(params![e.t_ms as i64, e.actor, e.role, e.step, e.action, e.outcome, e.payload])?;
                }
                Msg::Snapshot(t, s) => {
                    snap.execute(params![t as i64, s])?;
                }
                Msg::Meta(k, v) => {
                    meta.execute(params![k, v])?;
                }
                Msg::Flush(_) => unreachable!("taken out above"),
            }
        }
    }
    tx.commit()
}

/// An event read back from its recorder file.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct EventLog {
    /// Metadata (runbook, campaign id and hash, fire time, live summary...).
    pub meta: BTreeMap<String, String>,
    /// Every point, by time.
    pub points: Vec<Point>,
    /// The audit log, in order.
    pub audit: Vec<AuditEntry>,
    /// Runbook snapshots (time, JSON), in order.
    pub snapshots: Vec<(u64, String)>,
}

impl EventLog {
    /// Reads a recorder file; works while another process writes it.
    pub fn open(path: &Path) -> Result<Self, RecorderError> {
        Self::read(path, false)
    }

    /// Reads only the metadata (runbook, campaign, summary...): enough to
    /// list recordings without loading every point.
    pub fn open_meta(path: &Path) -> Result<Self, RecorderError> {
        Self::read(path, true)
    }

    fn read(path: &Path, meta_only: bool) -> Result<Self, RecorderError> {
        if !path.is_file() {
            return Err(RecorderError::File { path: path.to_owned(), message: "no such file".into() });
        }
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .map_err(file_err(path))?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(file_err(path))?;
        let e = file_err(path);
        let not_recorder = |err: rusqlite::Error| RecorderError::File {
            path: path.to_owned(),
            message: format!("not a Kickoff flight recorder file ({err})"),
        };
        let mut log = EventLog::default();
        let tx = conn.unchecked_transaction().map_err(&e)?;
        {
            let mut stmt = tx.prepare("SELECT key, value FROM meta").map_err(not_recorder)?;
            for row in stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(&e)? {
                let (k, v) = row.map_err(&e)?;
                log.meta.insert(k, v);
            }
        }
        if !meta_only {
            let mut stmt = tx.prepare("SELECT t_ms, name, dims, value FROM points ORDER BY t_ms, rowid").map_err(not_recorder)?;
            for row in stmt
                .query_map([], |r| Ok(Point { t_ms: r.get::<_, i64>(0)? as u64, name: r.get(1)?, dims: r.get(2)?, value: r.get(3)? }))
                .map_err(&e)?
            {
                log.points.push(row.map_err(&e)?);
            }
            let mut stmt =
                tx.prepare("SELECT t_ms, actor, role, step, action, outcome, payload FROM audit ORDER BY id").map_err(not_recorder)?;
            for row in stmt
                .query_map([], |r| {
                    Ok(AuditEntry {
                        t_ms: r.get::<_, i64>(0)? as u64,
                        actor: r.get(1)?,
                        role: r.get(2)?,
                        step: r.get(3)?,
                        action: r.get(4)?,
                        outcome: r.get(5)?,
                        payload: r.get(6)?,
                    })
                })
                .map_err(&e)?
            {
                log.audit.push(row.map_err(&e)?);
            }
            let mut stmt = tx.prepare("SELECT t_ms, state FROM snapshots ORDER BY rowid").map_err(not_recorder)?;
            for row in stmt.query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))).map_err(&e)? {
                log.snapshots.push(row.map_err(&e)?);
            }
        }
        if log.meta.get("format").map(String::as_str) != Some("1") {
            return Err(RecorderError::File { path: path.to_owned(), message: "not a Kickoff flight recorder file (format 1)".into() });
        }
        Ok(log)
    }

    /// Points named `name`, in time order.
    pub fn series<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Point> + 'a {
        self.points.iter().filter(move |p| p.name == name)
    }

    /// The first and last time of anything recorded.
    pub fn span_ms(&self) -> Option<(u64, u64)> {
        let times = self.points.iter().map(|p| p.t_ms).chain(self.audit.iter().map(|a| a.t_ms));
        let (lo, hi) = times.fold((u64::MAX, 0), |(lo, hi), t| (lo.min(t), hi.max(t)));
        (lo <= hi).then_some((lo, hi))
    }
}

/// A new event file in `dir`: `<name>-<UTC time>.kickoff.sqlite`.
/// If that name is taken, `-2`, `-3`... are appended.
pub fn event_path(dir: &Path, name: &str) -> PathBuf {
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string().replace(':', "");
    let safe: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).collect();
    let mut path = dir.join(format!("{safe}-{stamp}.kickoff.sqlite"));
    let mut n = 2;
    while path.exists() {
        path = dir.join(format!("{safe}-{stamp}-{n}.kickoff.sqlite"));
        n += 1;
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_and_files_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.sqlite");
        let r = Recorder::create(&path).unwrap();
        r.meta("campaign_hash", "abc");
        for i in 0..10_000u64 {
            r.point(Point::new(1000 + i, "sent", &[("platform", "ios")], i as f64));
        }
        r.audit(AuditEntry {
            t_ms: 5,
            actor: "ana".into(),
            role: "marketer".into(),
            step: "fire".into(),
            action: "fire".into(),
            outcome: "ok".into(),
            payload: "{}".into(),
        });
        r.snapshot("{\"steps\":[]}".into());
        r.flush().unwrap();
        // Readable while the writer is still open.
        let log = EventLog::open(&path).unwrap();
        assert_eq!(log.points.len(), 10_000);
        assert_eq!(log.points[9_999].value, 9_999.0);
        assert_eq!(log.points[0].dim("platform"), Some("ios"));
        assert_eq!(log.audit[0].actor, "ana");
        assert_eq!(log.meta["campaign_hash"], "abc");
        assert_eq!(log.snapshots.len(), 1);
        r.close().unwrap();
        assert!(EventLog::open(&path).unwrap().meta.contains_key("closed_ms"));
        assert!(Recorder::create(&path).unwrap_err().to_string().contains("never reused"));
        std::fs::write(dir.path().join("x.sqlite"), b"").unwrap();
        assert!(EventLog::open(&dir.path().join("x.sqlite")).unwrap_err().to_string().contains("not a Kickoff flight recorder"));
    }
}
