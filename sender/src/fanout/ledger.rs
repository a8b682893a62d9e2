//! The fire ledger: the durable record that a campaign was fired, written
//! *before* anything is sent. Whoever inserts the row fires; everyone else,
//! in any thread or process, now or after a restart, reads "already fired at
//! T by X" and sends nothing.
//!
//! The embedded ledger is a SQLite file (WAL, `synchronous=FULL`): the insert
//! and the read that follows run in one `BEGIN IMMEDIATE` transaction, so two
//! processes racing on the same file serialize on SQLite's lock.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

pub use super::journal::{Answered, Journal};
use super::warm::Warm;

/// A request to fire.
#[derive(Debug, Clone)]
pub struct FireClaim {
    /// The campaign.
    pub campaign_id: String,
    /// Its content hash.
    pub campaign_hash: String,
    /// Who pressed fire.
    pub operator: String,
    /// When.
    pub at: SystemTime,
    /// What the sending workers hold ([`Warm::checksum`]: the audience and
    /// the campaign), so a resume can refuse different ones.
    pub warm_checksum: Option<String>,
}

/// Where a fired campaign stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FireStatus {
    /// Claimed; sending started (or the process died while sending).
    Fired,
    /// Every batch was handled.
    Completed,
    /// Stopped by an abort.
    Aborted,
    /// The process sending it died (or stopped it after a provider outage)
    /// before every device had an answer: `fire --resume` sends the rest.
    Interrupted,
}

impl FireStatus {
    /// The status as stored and shown (`fired`, `completed`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fired => "fired",
            Self::Completed => "completed",
            Self::Aborted => "aborted",
            Self::Interrupted => "interrupted",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "completed" => Self::Completed,
            "aborted" => Self::Aborted,
            "interrupted" => Self::Interrupted,
            _ => Self::Fired,
        }
    }
}

/// A ledger row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FireRecord {
    /// The campaign.
    pub campaign_id: String,
    /// Content hash at fire time.
    pub campaign_hash: String,
    /// Who fired.
    pub operator: String,
    /// When, ms since the UNIX epoch.
    pub fired_at_ms: u64,
    /// Host that fired.
    pub host: String,
    /// Process that fired.
    pub pid: u32,
    /// Status.
    pub status: FireStatus,
    /// When it finished, ms since the UNIX epoch.
    pub finished_at_ms: Option<u64>,
    /// The final report, JSON.
    pub summary: Option<String>,
    /// The last heartbeat of the sending process, ms since the UNIX epoch
    /// (embedded ledger).
    #[serde(default)]
    pub heartbeat_ms: Option<u64>,
    /// What the fire was sent from ([`Warm::checksum`]), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_checksum: Option<String>,
}

impl FireRecord {
    /// The fire time.
    pub fn fired_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.fired_at_ms)
    }
}

impl fmt::Display for FireRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "campaign {} already fired at {} by {} ({})",
            self.campaign_id,
            humantime::format_rfc3339_millis(self.fired_at()),
            self.operator,
            self.status.as_str()
        )
    }
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This caller fires.
    Won(FireRecord),
    /// Somebody fired first; send nothing.
    AlreadyFired(FireRecord),
}

/// A failure of the ledger's storage. When the ledger cannot answer, the
/// fire does not happen: refusing is safe, sending twice is not.
#[derive(Debug, thiserror::Error)]
#[error("fire ledger {path}: {message}", path = path.display())]
pub struct LedgerError {
    /// The ledger file or location.
    pub path: PathBuf,
    /// What failed.
    pub message: String,
}

/// The answer to a resume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TakeOver {
    /// The fire was interrupted; this caller now sends the rest.
    Resumed(FireRecord),
    /// The fire is not interrupted (still sending somewhere, or ended).
    NotInterrupted(FireRecord),
    /// The campaign was never fired.
    NeverFired,
    /// The fire was interrupted, but from another audience or campaign than
    /// the one given now: resuming would send the wrong devices (journal
    /// rows are positions in the audience). Nothing was taken over.
    Mismatch {
        /// The fire.
        record: FireRecord,
        /// What the resume holds.
        now: String,
    },
}

/// A durable record of fires.
pub trait FireLedger: Send + Sync + fmt::Debug {
    /// Records the fire if the campaign was never fired.
    fn claim(&self, claim: &FireClaim) -> Result<Claim, LedgerError>;
    /// Records how a fire ended.
    fn finish(&self, campaign_id: &str, status: FireStatus, summary_json: &str) -> Result<(), LedgerError>;
    /// The record of a campaign, if fired.
    fn get(&self, campaign_id: &str) -> Result<Option<FireRecord>, LedgerError>;
    /// The journal of this ledger's fires, if it keeps one.
    fn journal(&self) -> Result<Option<Journal>, LedgerError> {
        Ok(None)
    }
    /// Which devices of fire `key` have a final answer (ledgers with a journal).
    fn answered(&self, _key: &str, _warm: &Warm) -> Result<Option<Answered>, LedgerError> {
        Ok(None)
    }
    /// Takes over an interrupted fire sent from `warm_checksum`, once: of
    /// two callers racing, one resumes. An abort recorded for the fire
    /// (while its process was dying) ends it aborted instead.
    fn take_over(&self, key: &str, _warm_checksum: &str) -> Result<TakeOver, LedgerError> {
        Err(LedgerError { path: PathBuf::from(key), message: "this ledger cannot resume a fire".into() })
    }
    /// Records a request to abort fire `key`, for whichever process sends
    /// it (the engine polls [`FireLedger::abort_request`]). An interrupted
    /// fire is marked aborted at once, so it is never resumed.
    fn request_abort(&self, key: &str, _request: &AbortRequest) -> Result<AbortAnswer, LedgerError> {
        Err(LedgerError { path: PathBuf::from(key), message: "this ledger cannot carry an abort".into() })
    }
    /// The abort requested for fire `key`, if any.
    fn abort_request(&self, _key: &str) -> Result<Option<AbortRequest>, LedgerError> {
        Ok(None)
    }
}

/// A request to abort a fire, from any process.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AbortRequest {
    /// Who asked.
    pub by: String,
    /// Why.
    pub why: String,
    /// When, ms since the UNIX epoch.
    pub at_ms: u64,
}

/// The answer to an abort request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AbortAnswer {
    /// Recorded; the sending process stops within a second. For an
    /// interrupted fire: marked aborted, it will not be resumed.
    Requested(FireRecord),
    /// Somebody asked first (their request stands).
    AlreadyRequested(AbortRequest),
    /// The fire already ended (completed or aborted).
    Ended(FireRecord),
    /// No such fire.
    NeverFired,
}

/// A `fired` row reads as interrupted once its process is gone: on this
/// host, no process has its pid; elsewhere (or if the pid was reused), its
/// heartbeat is older than this.
pub const STALE_HEARTBEAT: Duration = Duration::from_secs(60);

/// Even on this host, a `fired` row reads as interrupted only once its
/// heartbeat (beaten every second) is this old: `/proc` can hide a live
/// process (another PID namespace, `hidepid`, two machines both called
/// "localhost").
pub const QUIET_HEARTBEAT: Duration = Duration::from_secs(3);

fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // A zombie (killed, not yet reaped) is gone.
        Ok(stat) => stat.rsplit_once(')').is_none_or(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => !Path::new("/proc/self").exists(),
    }
}

impl FireRecord {
    /// A `fired` row whose process is gone from this host while its
    /// heartbeat is still fresh: it reads as interrupted within the
    /// returned time. `None` otherwise.
    pub fn dying(&self) -> Option<Duration> {
        if self.status != FireStatus::Fired || self.host != host_name() || self.pid == std::process::id() || pid_alive(self.pid) {
            return None;
        }
        let beat = UNIX_EPOCH + Duration::from_millis(self.heartbeat_ms.unwrap_or(self.fired_at_ms));
        let age = SystemTime::now().duration_since(beat).unwrap_or_default();
        Some(QUIET_HEARTBEAT.saturating_sub(age) + Duration::from_millis(50))
    }

    /// Sent by a process that is gone, before it finished.
    fn looks_interrupted(&self, now: SystemTime) -> bool {
        if self.status != FireStatus::Fired {
            return self.status == FireStatus::Interrupted;
        }
        let beat = UNIX_EPOCH + Duration::from_millis(self.heartbeat_ms.unwrap_or(self.fired_at_ms));
        let age = now.duration_since(beat).unwrap_or_default();
        let dead_here = self.host == host_name() && self.pid != std::process::id() && !pid_alive(self.pid) && age > QUIET_HEARTBEAT;
        dead_here || age > STALE_HEARTBEAT
    }
}

/// The embedded ledger: a SQLite file.
#[derive(Debug)]
pub struct SqliteLedger {
    path: PathBuf,
    conn: Mutex<Connection>,
}

pub(crate) use crate::clock::ms;

pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

impl SqliteLedger {
    /// Opens (creating if needed) the ledger at `path`.
    pub fn open(path: &Path) -> Result<Self, LedgerError> {
        let err = |e: rusqlite::Error| LedgerError { path: path.to_owned(), message: e.to_string() };
        let conn = crate::sys::open_state_db(
            path,
            "CREATE TABLE IF NOT EXISTS fires (
                campaign_id    TEXT PRIMARY KEY,
                campaign_hash  TEXT NOT NULL,
                operator       TEXT NOT NULL,
                fired_at_ms    INTEGER NOT NULL,
                host           TEXT NOT NULL,
                pid            INTEGER NOT NULL,
                status         TEXT NOT NULL,
                finished_at_ms INTEGER,
                summary        TEXT,
                heartbeat_ms   INTEGER,
                warm_checksum  TEXT
            );",
        )
        .map_err(|e| LedgerError { path: path.to_owned(), message: e.to_string() })?;
        conn.execute_batch(super::journal::SCHEMA).map_err(err)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS fire_aborts (
                fire_key TEXT PRIMARY KEY,
                by       TEXT NOT NULL,
                why      TEXT NOT NULL,
                at_ms    INTEGER NOT NULL
            );",
        )
        .map_err(err)?;
        // Ledgers written before heartbeats and checksums.
        for (column, ty) in [("heartbeat_ms", "INTEGER"), ("warm_checksum", "TEXT")] {
            if conn.prepare(&format!("SELECT {column} FROM fires LIMIT 0")).is_err() {
                match conn.execute_batch(&format!("ALTER TABLE fires ADD COLUMN {column} {ty}")) {
                    Err(e) if !e.to_string().contains("duplicate column") => return Err(err(e)),
                    _ => {}
                }
            }
        }
        conn.pragma_update(None, "synchronous", "FULL").map_err(err)?;
        Ok(Self { path: path.to_owned(), conn: Mutex::new(conn) })
    }

    /// The ledger file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: rusqlite::Error) -> LedgerError {
        LedgerError { path: self.path.clone(), message: e.to_string() }
    }
}

fn read_record(conn: &Connection, campaign_id: &str) -> rusqlite::Result<Option<FireRecord>> {
    conn.query_row(
        "SELECT campaign_id, campaign_hash, operator, fired_at_ms, host, pid, status, finished_at_ms, summary, heartbeat_ms,
                warm_checksum
         FROM fires WHERE campaign_id = ?1",
        params![campaign_id],
        |r| {
            Ok(FireRecord {
                campaign_id: r.get(0)?,
                campaign_hash: r.get(1)?,
                operator: r.get(2)?,
                fired_at_ms: r.get::<_, i64>(3)? as u64,
                host: r.get(4)?,
                pid: r.get::<_, i64>(5)? as u32,
                status: FireStatus::parse(&r.get::<_, String>(6)?),
                finished_at_ms: r.get::<_, Option<i64>>(7)?.map(|v| v as u64),
                summary: r.get(8)?,
                heartbeat_ms: r.get::<_, Option<i64>>(9)?.map(|v| v as u64),
                warm_checksum: r.get(10)?,
            })
        },
    )
    .optional()
    .map(|record| {
        record.map(|mut r| {
            if r.looks_interrupted(SystemTime::now()) {
                r.status = FireStatus::Interrupted;
            }
            r
        })
    })
}

impl FireLedger for SqliteLedger {
    fn claim(&self, claim: &FireClaim) -> Result<Claim, LedgerError> {
        let mut conn = self.conn.lock().expect("ledger lock");
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(|e| self.err(e))?;
        let inserted = tx
            .execute(
                "INSERT INTO fires (campaign_id, campaign_hash, operator, fired_at_ms, host, pid, status, heartbeat_ms, warm_checksum)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'fired', ?4, ?7) ON CONFLICT(campaign_id) DO NOTHING",
                params![
                    claim.campaign_id,
                    claim.campaign_hash,
                    claim.operator,
                    ms(claim.at) as i64,
                    host_name(),
                    std::process::id(),
                    claim.warm_checksum
                ],
            )
            .map_err(|e| self.err(e))?;
        let record = read_record(&tx, &claim.campaign_id)
            .map_err(|e| self.err(e))?
            .ok_or_else(|| LedgerError { path: self.path.clone(), message: "the fire row vanished".into() })?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(if inserted == 1 { Claim::Won(record) } else { Claim::AlreadyFired(record) })
    }

    fn finish(&self, campaign_id: &str, status: FireStatus, summary_json: &str) -> Result<(), LedgerError> {
        let conn = self.conn.lock().expect("ledger lock");
        // Only while the row is this process's: a fire taken over by a
        // resume elsewhere is that process's to end.
        conn.execute(
            "UPDATE fires SET status = ?2, finished_at_ms = ?3, summary = ?4 WHERE campaign_id = ?1 AND host = ?5 AND pid = ?6",
            params![campaign_id, status.as_str(), ms(SystemTime::now()) as i64, summary_json, host_name(), std::process::id()],
        )
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn get(&self, campaign_id: &str) -> Result<Option<FireRecord>, LedgerError> {
        read_record(&self.conn.lock().expect("ledger lock"), campaign_id).map_err(|e| self.err(e))
    }

    fn journal(&self) -> Result<Option<Journal>, LedgerError> {
        Journal::open(&self.path).map(Some)
    }

    fn answered(&self, key: &str, warm: &Warm) -> Result<Option<Answered>, LedgerError> {
        Answered::read(&self.conn.lock().expect("ledger lock"), key, warm).map(Some).map_err(|e| self.err(e))
    }

    fn take_over(&self, key: &str, warm_checksum: &str) -> Result<TakeOver, LedgerError> {
        let mut conn = self.conn.lock().expect("ledger lock");
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(|e| self.err(e))?;
        let Some(record) = read_record(&tx, key).map_err(|e| self.err(e))? else { return Ok(TakeOver::NeverFired) };
        if record.status != FireStatus::Interrupted {
            return Ok(TakeOver::NotInterrupted(record));
        }
        if let Some(abort) = read_abort(&tx, key).map_err(|e| self.err(e))? {
            // Aborted while its process was dying: the abort stands.
            end_aborted(&tx, key, &abort).map_err(|e| self.err(e))?;
            let record = read_record(&tx, key).map_err(|e| self.err(e))?.expect("the row is there");
            tx.commit().map_err(|e| self.err(e))?;
            return Ok(TakeOver::NotInterrupted(record));
        }
        if record.warm_checksum.as_deref().is_some_and(|fired| fired != warm_checksum) {
            return Ok(TakeOver::Mismatch { record, now: warm_checksum.to_owned() });
        }
        let now = ms(SystemTime::now()) as i64;
        tx.execute(
            "UPDATE fires SET status = 'fired', host = ?2, pid = ?3, heartbeat_ms = ?4, finished_at_ms = NULL WHERE campaign_id = ?1",
            params![key, host_name(), std::process::id(), now],
        )
        .map_err(|e| self.err(e))?;
        let record = read_record(&tx, key).map_err(|e| self.err(e))?.expect("the row is there");
        tx.commit().map_err(|e| self.err(e))?;
        Ok(TakeOver::Resumed(record))
    }

    fn request_abort(&self, key: &str, request: &AbortRequest) -> Result<AbortAnswer, LedgerError> {
        let mut conn = self.conn.lock().expect("ledger lock");
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(|e| self.err(e))?;
        let Some(record) = read_record(&tx, key).map_err(|e| self.err(e))? else { return Ok(AbortAnswer::NeverFired) };
        if matches!(record.status, FireStatus::Completed | FireStatus::Aborted) {
            return Ok(AbortAnswer::Ended(record));
        }
        if let Some(first) = read_abort(&tx, key).map_err(|e| self.err(e))? {
            return Ok(AbortAnswer::AlreadyRequested(first));
        }
        tx.execute(
            "INSERT INTO fire_aborts (fire_key, by, why, at_ms) VALUES (?1, ?2, ?3, ?4)",
            params![key, request.by, request.why, request.at_ms as i64],
        )
        .map_err(|e| self.err(e))?;
        if record.status == FireStatus::Interrupted {
            end_aborted(&tx, key, request).map_err(|e| self.err(e))?;
        }
        let record = read_record(&tx, key).map_err(|e| self.err(e))?.expect("the row is there");
        tx.commit().map_err(|e| self.err(e))?;
        Ok(AbortAnswer::Requested(record))
    }

    fn abort_request(&self, key: &str) -> Result<Option<AbortRequest>, LedgerError> {
        read_abort(&self.conn.lock().expect("ledger lock"), key).map_err(|e| self.err(e))
    }
}

/// Ends an interrupted fire as aborted: it is never resumed.
fn end_aborted(conn: &Connection, key: &str, request: &AbortRequest) -> rusqlite::Result<()> {
    let summary = serde_json::json!({ "aborted_by": request.by, "why": request.why, "interrupted": true }).to_string();
    conn.execute(
        "UPDATE fires SET status = 'aborted', finished_at_ms = ?2, summary = ?3 WHERE campaign_id = ?1",
        params![key, request.at_ms as i64, summary],
    )?;
    Ok(())
}

fn read_abort(conn: &Connection, key: &str) -> rusqlite::Result<Option<AbortRequest>> {
    conn.query_row("SELECT by, why, at_ms FROM fire_aborts WHERE fire_key = ?1", params![key], |r| {
        Ok(AbortRequest { by: r.get(0)?, why: r.get(1)?, at_ms: r.get::<_, i64>(2)? as u64 })
    })
    .optional()
}

/// What a fire is for; it decides the fire's key in the ledger, the same
/// way on every path (CLI `fire`, walks, the app, AWS mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FireScope {
    /// The launch: keyed by the campaign id alone, so a campaign launches
    /// once, ever, whoever presses and from wherever.
    Launch,
    /// A silent rehearsal in this event: keyed apart from the launch, so a
    /// rehearsal never uses it up, and once per rehearsal event.
    Rehearsal(String),
    /// An event the operator asked for explicitly as new (walking a demo
    /// again): keyed by the campaign and that event.
    NewEvent(String),
}

impl FireScope {
    /// The scope of a fire of `event`: silent campaigns and runbooks
    /// rehearse; `new_event` is the operator's explicit choice.
    pub fn of(silent: bool, new_event: bool, event: &str) -> Self {
        match (silent, new_event) {
            (true, _) => Self::Rehearsal(event.to_owned()),
            (false, true) => Self::NewEvent(event.to_owned()),
            (false, false) => Self::Launch,
        }
    }

    /// The ledger key of a fire of `campaign_id` in this scope.
    pub fn key(&self, campaign_id: &str) -> String {
        match self {
            Self::Launch => campaign_id.to_owned(),
            Self::Rehearsal(event) => format!("{campaign_id}~rehearsal@{event}"),
            Self::NewEvent(event) => format!("{campaign_id}@{event}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    fn claim(op: &str) -> FireClaim {
        FireClaim { campaign_id: "c1".into(), campaign_hash: "h".into(), operator: op.into(), at: SystemTime::now(), warm_checksum: None }
    }

    #[test]
    fn first_claim_wins_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        let ledger = SqliteLedger::open(&path).unwrap();
        assert!(matches!(ledger.claim(&claim("ana")).unwrap(), Claim::Won(_)));
        drop(ledger);
        let again = SqliteLedger::open(&path).unwrap();
        match again.claim(&claim("bo")).unwrap() {
            Claim::AlreadyFired(r) => {
                assert_eq!(r.operator, "ana");
                assert!(r.to_string().contains("already fired at") && r.to_string().contains("by ana"), "{r}");
            }
            other => panic!("{other:?}"),
        }
        again.finish("c1", FireStatus::Completed, "{}").unwrap();
        assert_eq!(again.get("c1").unwrap().unwrap().status, FireStatus::Completed);
    }

    /// A `fired` row of a process that is gone, its heartbeat `beat_age` old.
    fn orphan(ledger: &SqliteLedger, key: &str, checksum: &str, beat_age: Duration) {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let beat = ms(SystemTime::now() - beat_age) as i64;
        ledger
            .conn
            .lock()
            .unwrap()
            .execute(
                "INSERT INTO fires (campaign_id, campaign_hash, operator, fired_at_ms, host, pid, status, heartbeat_ms, warm_checksum)
                 VALUES (?1, 'h', 'ana', ?2, ?3, ?4, 'fired', ?2, ?5)",
                params![key, beat, host_name(), pid, checksum],
            )
            .unwrap();
    }

    #[test]
    fn a_dead_process_reads_as_interrupted_once_its_heartbeat_is_quiet() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = SqliteLedger::open(&dir.path().join("l.sqlite")).unwrap();
        orphan(&ledger, "fresh", "w", Duration::ZERO);
        let r = ledger.get("fresh").unwrap().unwrap();
        assert_eq!(r.status, FireStatus::Fired, "a fresh heartbeat is not trusted to /proc alone");
        assert!(r.dying().is_some_and(|d| d <= QUIET_HEARTBEAT + Duration::from_millis(50)));
        orphan(&ledger, "quiet", "w", QUIET_HEARTBEAT + Duration::from_secs(1));
        assert_eq!(ledger.get("quiet").unwrap().unwrap().status, FireStatus::Interrupted);
    }

    #[test]
    fn a_resume_from_other_files_is_refused_and_an_abort_recorded_while_dying_stands() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = SqliteLedger::open(&dir.path().join("l.sqlite")).unwrap();
        orphan(&ledger, "c", "audience-a", Duration::from_secs(600));
        match ledger.take_over("c", "audience-b").unwrap() {
            TakeOver::Mismatch { record, now } => {
                assert_eq!((record.warm_checksum.as_deref(), now.as_str()), (Some("audience-a"), "audience-b"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(ledger.get("c").unwrap().unwrap().status, FireStatus::Interrupted, "nothing was taken over");
        // An abort recorded while the fire was still `fired` (its process
        // then died): a resume must not send it.
        orphan(&ledger, "d", "w", Duration::from_secs(600));
        let request = AbortRequest { by: "bo".into(), why: "drowning".into(), at_ms: 1 };
        ledger
            .conn
            .lock()
            .unwrap()
            .execute("INSERT INTO fire_aborts (fire_key, by, why, at_ms) VALUES ('d', 'bo', 'drowning', 1)", [])
            .unwrap();
        match ledger.take_over("d", "w").unwrap() {
            TakeOver::NotInterrupted(r) => assert_eq!(r.status, FireStatus::Aborted),
            other => panic!("{other:?}"),
        }
        assert!(matches!(ledger.request_abort("d", &request).unwrap(), AbortAnswer::Ended(_)));
        // The same files resume, once.
        assert!(matches!(ledger.take_over("c", "audience-a").unwrap(), TakeOver::Resumed(_)));
        assert!(matches!(ledger.take_over("c", "audience-a").unwrap(), TakeOver::NotInterrupted(_)));
    }

    #[test]
    fn only_the_process_that_owns_a_fire_ends_it() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = SqliteLedger::open(&dir.path().join("l.sqlite")).unwrap();
        orphan(&ledger, "c", "w", Duration::from_secs(600));
        // The dead process's engine (were it alive) cannot end a row it
        // no longer owns...
        ledger.finish("c", FireStatus::Completed, "{}").unwrap();
        assert_eq!(ledger.get("c").unwrap().unwrap().status, FireStatus::Interrupted);
        // ...the process that took it over can.
        assert!(matches!(ledger.take_over("c", "w").unwrap(), TakeOver::Resumed(_)));
        ledger.finish("c", FireStatus::Completed, "{}").unwrap();
        assert_eq!(ledger.get("c").unwrap().unwrap().status, FireStatus::Completed);
    }

    #[test]
    fn racing_threads_on_separate_connections_fire_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        SqliteLedger::open(&path).unwrap();
        let barrier = Arc::new(Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let (path, barrier) = (path.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let ledger = SqliteLedger::open(&path).unwrap();
                    barrier.wait();
                    usize::from(matches!(ledger.claim(&claim(&format!("op{i}"))).unwrap(), Claim::Won(_)))
                })
            })
            .collect();
        let winners: usize = threads.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(winners, 1);
    }
}
