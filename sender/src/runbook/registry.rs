//! Which event is open for a runbook, shared by every process on this
//! machine through the state database. A second app window or instance that
//! opens the same runbook joins the open event, so both share one fire
//! ledger key: of two presses, in two windows or two processes, one sends.
//!
//! An event stays joinable while anyone has it open: each window or walk
//! holds it (a row beaten every few seconds) and the last one to leave
//! closes it. A holder whose process died stops beating and no longer
//! counts.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::Runbook;
use crate::recorder::now_ms;

/// A holder (a window or walk with the event open) beats at least this
/// often; one silent for [`HOLDER_STALE`] is gone (its process died).
pub const HOLDER_BEAT: std::time::Duration = std::time::Duration::from_secs(5);
/// See [`HOLDER_BEAT`].
pub const HOLDER_STALE: std::time::Duration = std::time::Duration::from_secs(30);

/// One window's or walk's hold on an event: released by
/// [`EventRegistry::leave`]; the last one out closes the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// The event.
    pub event_id: String,
    /// This holder (host, process and a counter).
    pub holder: String,
    /// It joined an event somebody else opened.
    pub joined: bool,
}

/// The registry's table in the state database could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("event registry {path}: {source}", path = path.display())]
pub struct RegistryError {
    /// The state database.
    pub path: PathBuf,
    /// What SQLite (or the file system) said.
    #[source]
    pub source: crate::sys::StateDbError,
}

/// Open events, by runbook file.
#[derive(Debug)]
pub struct EventRegistry {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl EventRegistry {
    /// Opens (creating if needed) the registry table in `path`.
    pub fn open(path: &Path) -> Result<Self, RegistryError> {
        let conn = crate::sys::open_state_db(
            path,
            "CREATE TABLE IF NOT EXISTS events (
                event_id   TEXT PRIMARY KEY,
                runbook    TEXT NOT NULL,
                opened_ms  INTEGER NOT NULL,
                closed_ms  INTEGER
            );
            CREATE TABLE IF NOT EXISTS event_holders (
                event_id TEXT NOT NULL,
                holder   TEXT NOT NULL,
                beat_ms  INTEGER NOT NULL,
                PRIMARY KEY (event_id, holder)
            );",
        )
        .map_err(|source| RegistryError { path: path.to_owned(), source })?;
        Ok(Self { path: path.to_owned(), conn: Mutex::new(conn) })
    }

    fn key(runbook: &Runbook) -> String {
        std::fs::canonicalize(&runbook.path).unwrap_or_else(|_| runbook.path.clone()).display().to_string()
    }

    /// A name for a new holder in this process.
    fn holder() -> String {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{}:{}:{n}", crate::fanout::ledger::host_name(), std::process::id())
    }

    fn hold(tx: &Connection, event_id: &str, joined: bool) -> rusqlite::Result<Hold> {
        let holder = Self::holder();
        tx.execute(
            "INSERT OR REPLACE INTO event_holders (event_id, holder, beat_ms) VALUES (?1, ?2, ?3)",
            params![event_id, holder, now_ms() as i64],
        )?;
        Ok(Hold { event_id: event_id.to_owned(), holder, joined })
    }

    /// Holds the event of `runbook` somebody has open (the newest), or opens
    /// a new one.
    pub fn join_or_open(&self, runbook: &Runbook) -> Result<Hold, RegistryError> {
        let err = |e: rusqlite::Error| self.error(e);
        let key = Self::key(runbook);
        let mut conn = self.conn.lock().expect("registry lock");
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        let open: Option<String> = tx
            .query_row(
                "SELECT e.event_id FROM events e WHERE e.runbook = ?1 AND e.closed_ms IS NULL AND EXISTS (
                    SELECT 1 FROM event_holders h WHERE h.event_id = e.event_id AND h.beat_ms > ?2
                 ) ORDER BY e.opened_ms DESC LIMIT 1",
                params![key, now_ms().saturating_sub(HOLDER_STALE.as_millis() as u64) as i64],
                |r| r.get(0),
            )
            .optional()
            .map_err(err)?;
        let hold = match open {
            Some(id) => Self::hold(&tx, &id, true).map_err(err)?,
            None => {
                let id = super::event_id(runbook);
                tx.execute(
                    "INSERT OR REPLACE INTO events (event_id, runbook, opened_ms, closed_ms) VALUES (?1, ?2, ?3, NULL)",
                    params![id, key, now_ms() as i64],
                )
                .map_err(err)?;
                Self::hold(&tx, &id, false).map_err(err)?
            }
        };
        tx.commit().map_err(err)?;
        Ok(hold)
    }

    /// A new event of `runbook`, whatever is open: `<file stem>@<now>`.
    pub fn open_new(&self, runbook: &Runbook) -> Result<Hold, RegistryError> {
        let err = |e: rusqlite::Error| self.error(e);
        let stem = runbook.path.file_stem().and_then(|s| s.to_str()).unwrap_or("event");
        let id = format!("{stem}@{}", crate::clock::rfc3339_ms(now_ms()).replace(':', ""));
        let mut conn = self.conn.lock().expect("registry lock");
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        tx.execute(
            "INSERT INTO events (event_id, runbook, opened_ms) VALUES (?1, ?2, ?3)",
            params![id, Self::key(runbook), now_ms() as i64],
        )
        .map_err(err)?;
        let hold = Self::hold(&tx, &id, false).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(hold)
    }

    /// Holds event `event_id` by name (it counts as joined).
    pub fn join(&self, event_id: &str) -> Result<Hold, RegistryError> {
        Self::hold(&self.conn.lock().expect("registry lock"), event_id, true).map_err(|e| self.error(e))
    }

    /// Tells the registry the holder still has the event open.
    pub fn beat(&self, hold: &Hold) -> Result<(), RegistryError> {
        self.conn
            .lock()
            .expect("registry lock")
            .execute(
                "INSERT OR REPLACE INTO event_holders (event_id, holder, beat_ms) VALUES (?1, ?2, ?3)",
                params![hold.event_id, hold.holder, now_ms() as i64],
            )
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Lets the event go; the last live holder to leave closes it (the next
    /// open of its runbook starts a new one). Returns true if it closed.
    pub fn leave(&self, hold: &Hold) -> Result<bool, RegistryError> {
        let err = |e: rusqlite::Error| self.error(e);
        let mut conn = self.conn.lock().expect("registry lock");
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        tx.execute("DELETE FROM event_holders WHERE event_id = ?1 AND holder = ?2", params![hold.event_id, hold.holder]).map_err(err)?;
        let stale = now_ms().saturating_sub(HOLDER_STALE.as_millis() as u64) as i64;
        let others: i64 = tx
            .query_row("SELECT count(*) FROM event_holders WHERE event_id = ?1 AND beat_ms > ?2", params![hold.event_id, stale], |r| {
                r.get(0)
            })
            .map_err(err)?;
        if others == 0 {
            tx.execute("UPDATE events SET closed_ms = ?2 WHERE event_id = ?1", params![hold.event_id, now_ms() as i64]).map_err(err)?;
            tx.execute("DELETE FROM event_holders WHERE event_id = ?1", params![hold.event_id]).map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(others == 0)
    }

    fn error(&self, e: rusqlite::Error) -> RegistryError {
        RegistryError { path: self.path.clone(), source: e.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_stays_joinable_while_anyone_has_it_open_and_the_last_one_out_closes_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("c.toml"), crate::campaign::DEMO_CAMPAIGN).unwrap();
        let text = "name = \"x\"\ncampaign = \"c.toml\"\n[[steps]]\nid = \"a\"\ntitle = \"A\"\nrole = \"ops\"\nkind = \"checklist\"\nparams = { items = [\"x\"] }\n";
        std::fs::write(dir.path().join("r.toml"), text).unwrap();
        let rb = Runbook::load(&dir.path().join("r.toml")).unwrap();
        let db = dir.path().join("s.sqlite");
        let (a, b) = (EventRegistry::open(&db).unwrap(), EventRegistry::open(&db).unwrap());
        let first = a.join_or_open(&rb).unwrap();
        assert!(!first.joined);
        let second = b.join_or_open(&rb).unwrap();
        assert_eq!((second.event_id.as_str(), second.joined), (first.event_id.as_str(), true));
        // The opener leaves; the joiner still has it open: still joinable.
        assert!(!a.leave(&first).unwrap());
        let third = a.join_or_open(&rb).unwrap();
        assert_eq!((third.event_id.as_str(), third.joined), (first.event_id.as_str(), true));
        assert!(!b.leave(&second).unwrap());
        assert!(a.leave(&third).unwrap(), "the last one out closes it");
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let next = a.join_or_open(&rb).unwrap();
        assert!(!next.joined && next.event_id != first.event_id);
        // A holder that stopped beating (its process died) does not count.
        let stale = now_ms().saturating_sub(HOLDER_STALE.as_millis() as u64 + 1) as i64;
        a.conn.lock().unwrap().execute("UPDATE event_holders SET beat_ms = ?1", params![stale]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let after_crash = b.join_or_open(&rb).unwrap();
        assert!(!after_crash.joined && after_crash.event_id != next.event_id, "{after_crash:?}");
    }
}
