//! Zombie mode: per-backend flags that tell client apps to stop calling a
//! backend that is drowning, and for how long to back off.
//!
//! A flag has an owner and a reason, a `retry_after` for clients and an
//! expiry: every flag switched on turns itself off, so a forgotten switch
//! cannot keep an app dark. Flags live behind [`FlagStore`]: SQLite in the
//! state database in embedded mode ([`SqliteFlagStore`]); the AWS mode writes
//! the same [`FlagsDocument`] to S3. Client apps read the document at
//! `GET /v1/zombie` ([`server`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

mod background;
pub mod clients;
pub mod server;

/// Longest a flag may stay on before it expires.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
/// Expiry of a flag switched on without one.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(15 * 60);
/// `retry_after` of a flag switched on without one.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(120);
/// Longest `retry_after` (one day).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

pub use crate::clock::now_ms;

/// One backend's flag, as last switched.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ZombieFlag {
    /// The backend service (`api`, `feed`, ...).
    pub backend: String,
    /// Switched on (it may have expired since: see [`ZombieFlag::active`]).
    pub enabled: bool,
    /// Seconds clients wait before calling the backend again.
    pub retry_after_s: u64,
    /// When the flag turns itself off, ms since the epoch.
    pub expires_at_ms: Option<u64>,
    /// Who switched it.
    pub set_by: String,
    /// Why.
    pub why: String,
    /// When, ms since the epoch.
    pub set_at_ms: u64,
    /// Switches of this backend so far (1 for the first).
    pub version: u64,
}

impl ZombieFlag {
    /// On and not expired at `now_ms`.
    pub fn active(&self, now_ms: u64) -> bool {
        self.enabled && self.expires_at_ms.is_none_or(|e| now_ms < e)
    }
}

/// A request to switch a backend's flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switch {
    /// The backend.
    pub backend: String,
    /// On or off.
    pub on: bool,
    /// How long clients back off (on only).
    pub retry_after: Duration,
    /// How long until the flag turns itself off (on only).
    pub duration: Duration,
    /// Who.
    pub by: String,
    /// Why.
    pub why: String,
}

impl Switch {
    /// Switch `backend` on for `duration` with the default `retry_after`.
    pub fn on(backend: &str, duration: Duration, by: &str, why: &str) -> Self {
        Self { backend: backend.to_owned(), on: true, retry_after: DEFAULT_RETRY_AFTER, duration, by: by.to_owned(), why: why.to_owned() }
    }

    /// Switch `backend` off.
    pub fn off(backend: &str, by: &str, why: &str) -> Self {
        Self {
            backend: backend.to_owned(),
            on: false,
            retry_after: Duration::ZERO,
            duration: Duration::ZERO,
            by: by.to_owned(),
            why: why.to_owned(),
        }
    }

    /// Checks the request.
    pub fn check(&self) -> Result<(), FlagError> {
        check_backend(&self.backend)?;
        if self.by.trim().is_empty() {
            return Err(FlagError::Invalid("a switch needs an operator name".into()));
        }
        if self.on {
            if self.duration.is_zero() || self.duration > MAX_DURATION {
                return Err(FlagError::Invalid(format!(
                    "zombie mode for {} must expire after 1 s to 24 h, not {}",
                    self.backend,
                    humantime::format_duration(self.duration)
                )));
            }
            if self.retry_after.as_secs() == 0 || self.retry_after > MAX_RETRY_AFTER {
                return Err(FlagError::Invalid(format!("retry_after for {} must be 1 s to 24 h", self.backend)));
            }
        }
        Ok(())
    }
}

/// Backend names: 1-64 of `[a-z0-9._-]`.
pub fn check_backend(name: &str) -> Result<(), FlagError> {
    if name.is_empty()
        || name.len() > 64
        || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(FlagError::Invalid(format!("backend name {name:?} must be 1-64 characters of [a-z0-9._-]")));
    }
    Ok(())
}

/// Flag store failures.
#[derive(Debug, thiserror::Error)]
pub enum FlagError {
    /// A bad request.
    #[error("{0}")]
    Invalid(String),
    /// The store failed; the switch did not happen.
    #[error("zombie flags {path}: {message}", path = path.display())]
    Store {
        /// Where.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

/// Where flags live. Every switch is kept in the history.
pub trait FlagStore: Send + Sync + std::fmt::Debug {
    /// Switches a flag; concurrent switches are serialized and each gets the
    /// next version. Returns the flag as stored.
    fn switch(&self, switch: &Switch) -> Result<ZombieFlag, FlagError>;
    /// Every backend's flag as last switched (expired ones included).
    fn flags(&self) -> Result<Vec<ZombieFlag>, FlagError>;
    /// Every switch since `since_ms`, oldest first.
    fn history(&self, since_ms: u64) -> Result<Vec<ZombieFlag>, FlagError>;
}

/// What a client app sees for one backend.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClientFlag {
    /// Stop calling the backend.
    pub zombie: bool,
    /// Seconds to wait before calling it again.
    pub retry_after: u64,
    /// When zombie mode ends (RFC 3339).
    pub expires_at: Option<String>,
}

/// The document served to client apps (and written to S3 in AWS mode).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FlagsDocument {
    /// Flags by backend; backends never switched are absent (not zombie).
    pub backends: BTreeMap<String, ClientFlag>,
}

/// Longest time a client may cache the document.
pub const MAX_CACHE: Duration = Duration::from_secs(5);

impl FlagsDocument {
    /// The document at `now_ms`, and how long clients may cache it: never
    /// past the next expiry.
    pub fn at(flags: &[ZombieFlag], now_ms: u64) -> (Self, Duration) {
        let mut max_age = MAX_CACHE;
        let mut backends = BTreeMap::new();
        for f in flags {
            let active = f.active(now_ms);
            if active && let Some(e) = f.expires_at_ms {
                max_age = max_age.min(Duration::from_millis(e - now_ms));
            }
            backends.insert(
                f.backend.clone(),
                ClientFlag {
                    zombie: active,
                    retry_after: if active { f.retry_after_s } else { 0 },
                    expires_at: f
                        .expires_at_ms
                        .filter(|_| active)
                        .map(|e| humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(e)).to_string()),
                },
            );
        }
        (Self { backends }, Duration::from_secs(max_age.as_secs()))
    }
}

/// Flags in a SQLite database (the state database, by default).
#[derive(Debug)]
pub struct SqliteFlagStore {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl SqliteFlagStore {
    /// Opens (creating if needed) the flag tables in `path`.
    pub fn open(path: &Path) -> Result<Self, FlagError> {
        let err = |message: String| FlagError::Store { path: path.to_owned(), message };
        let conn = crate::sys::open_state_db(
            path,
            "CREATE TABLE IF NOT EXISTS zombie_switches (
                id            INTEGER PRIMARY KEY,
                backend       TEXT NOT NULL,
                version       INTEGER NOT NULL,
                enabled       INTEGER NOT NULL,
                retry_after_s INTEGER NOT NULL,
                expires_at_ms INTEGER,
                set_by        TEXT NOT NULL,
                why           TEXT NOT NULL,
                set_at_ms     INTEGER NOT NULL,
                UNIQUE (backend, version)
            );",
        )
        .map_err(|e| err(e.to_string()))?;
        Ok(Self { path: path.to_owned(), conn: Mutex::new(conn) })
    }

    fn err(&self, e: rusqlite::Error) -> FlagError {
        FlagError::Store { path: self.path.clone(), message: e.to_string() }
    }

    fn query(&self, sql: &str, args: impl rusqlite::Params) -> Result<Vec<ZombieFlag>, FlagError> {
        let conn = self.conn.lock().expect("flag store lock");
        let mut stmt = conn.prepare_cached(sql).map_err(|e| self.err(e))?;
        let rows = stmt.query_map(args, row_to_flag).map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }
}

const COLUMNS: &str = "backend, enabled, retry_after_s, expires_at_ms, set_by, why, set_at_ms, version";

fn row_to_flag(r: &rusqlite::Row<'_>) -> rusqlite::Result<ZombieFlag> {
    Ok(ZombieFlag {
        backend: r.get(0)?,
        enabled: r.get(1)?,
        retry_after_s: r.get::<_, i64>(2)? as u64,
        expires_at_ms: r.get::<_, Option<i64>>(3)?.map(|v| v as u64),
        set_by: r.get(4)?,
        why: r.get(5)?,
        set_at_ms: r.get::<_, i64>(6)? as u64,
        version: r.get::<_, i64>(7)? as u64,
    })
}

impl FlagStore for SqliteFlagStore {
    fn switch(&self, s: &Switch) -> Result<ZombieFlag, FlagError> {
        s.check()?;
        let mut conn = self.conn.lock().expect("flag store lock");
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(|e| self.err(e))?;
        let version: u64 = tx
            .query_row("SELECT MAX(version) FROM zombie_switches WHERE backend = ?1", params![s.backend], |r| r.get::<_, Option<i64>>(0))
            .optional()
            .map_err(|e| self.err(e))?
            .flatten()
            .map_or(0, |v| v as u64)
            + 1;
        let at = now_ms();
        let flag = ZombieFlag {
            backend: s.backend.clone(),
            enabled: s.on,
            retry_after_s: if s.on { s.retry_after.as_secs() } else { 0 },
            expires_at_ms: s.on.then(|| at + s.duration.as_millis() as u64),
            set_by: s.by.clone(),
            why: s.why.clone(),
            set_at_ms: at,
            version,
        };
        tx.execute(
            &format!("INSERT INTO zombie_switches ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
            params![
                flag.backend,
                flag.enabled,
                flag.retry_after_s as i64,
                flag.expires_at_ms.map(|v| v as i64),
                flag.set_by,
                flag.why,
                flag.set_at_ms as i64,
                flag.version as i64
            ],
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(flag)
    }

    fn flags(&self) -> Result<Vec<ZombieFlag>, FlagError> {
        self.query(
            &format!(
                "SELECT {COLUMNS} FROM zombie_switches s
                 WHERE version = (SELECT MAX(version) FROM zombie_switches WHERE backend = s.backend) ORDER BY backend"
            ),
            [],
        )
    }

    fn history(&self, since_ms: u64) -> Result<Vec<ZombieFlag>, FlagError> {
        self.query(&format!("SELECT {COLUMNS} FROM zombie_switches WHERE set_at_ms >= ?1 ORDER BY id"), params![since_ms as i64])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_hides_expired_flags_and_caps_caching_at_the_next_expiry() {
        let on = |backend: &str, expires| ZombieFlag {
            backend: backend.into(),
            enabled: true,
            retry_after_s: 90,
            expires_at_ms: Some(expires),
            set_by: "ana".into(),
            why: "drowning".into(),
            set_at_ms: 0,
            version: 1,
        };
        let (doc, max_age) = FlagsDocument::at(&[on("api", 3_000), on("feed", 500)], 1_000);
        assert!(doc.backends["api"].zombie);
        assert_eq!(doc.backends["api"].retry_after, 90);
        assert_eq!(doc.backends["api"].expires_at.as_deref(), Some("1970-01-01T00:00:03Z"));
        assert!(!doc.backends["feed"].zombie, "expired");
        assert_eq!(doc.backends["feed"].retry_after, 0);
        assert_eq!(max_age, Duration::from_secs(2));
    }

    #[test]
    fn switches_are_checked() {
        assert!(Switch::on("API", Duration::from_secs(1), "a", "").check().is_err());
        assert!(Switch::on("api", Duration::ZERO, "a", "").check().is_err());
        assert!(Switch::on("api", Duration::from_secs(25 * 3600), "a", "").check().unwrap_err().to_string().contains("24 h"));
        assert!(Switch::on("api", Duration::from_secs(60), "", "").check().is_err());
        Switch::on("api", Duration::from_secs(60), "a", "").check().unwrap();
        Switch::off("api", "a", "").check().unwrap();
    }
}
