//! Which event is open for a runbook, shared by every process on this
//! machine through the state database. A second app window or instance that
//! opens the same runbook joins the open event, so both share one fire
//! ledger key: of two presses, in two windows or two processes, one sends.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::Runbook;
use crate::recorder::now_ms;

/// An event left open longer than this (a window closed without closing
/// it) is not joined: the next open starts a new event.
pub const JOIN_WINDOW_MS: u64 = 12 * 3600 * 1000;

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
            );",
        )
        .map_err(|source| RegistryError { path: path.to_owned(), source })?;
        Ok(Self { path: path.to_owned(), conn: Mutex::new(conn) })
    }

    fn key(runbook: &Runbook) -> String {
        std::fs::canonicalize(&runbook.path).unwrap_or_else(|_| runbook.path.clone()).display().to_string()
    }

    /// The open event of `runbook`, or a new one. Returns the event id and
    /// whether it was joined.
    pub fn join_or_open(&self, runbook: &Runbook) -> Result<(String, bool), RegistryError> {
        let err = |e: rusqlite::Error| self.error(e);
        let key = Self::key(runbook);
        let mut conn = self.conn.lock().expect("registry lock");
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        let open: Option<String> = tx
            .query_row(
                "SELECT event_id FROM events WHERE runbook = ?1 AND closed_ms IS NULL AND opened_ms > ?2 ORDER BY opened_ms DESC LIMIT 1",
                params![key, now_ms().saturating_sub(JOIN_WINDOW_MS) as i64],
                |r| r.get(0),
            )
            .optional()
            .map_err(err)?;
        let result = match open {
            Some(id) => (id, true),
            None => {
                let id = super::event_id(runbook);
                tx.execute(
                    "INSERT OR IGNORE INTO events (event_id, runbook, opened_ms) VALUES (?1, ?2, ?3)",
                    params![id, key, now_ms() as i64],
                )
                .map_err(err)?;
                (id, false)
            }
        };
        tx.commit().map_err(err)?;
        Ok(result)
    }

    /// A new event of `runbook`, whatever is open: `<file stem>@<now>`.
    pub fn open_new(&self, runbook: &Runbook) -> Result<String, RegistryError> {
        let stem = runbook.path.file_stem().and_then(|s| s.to_str()).unwrap_or("event");
        let id = format!("{stem}@{}", crate::clock::rfc3339_ms(now_ms()).replace(':', ""));
        self.conn
            .lock()
            .expect("registry lock")
            .execute(
                "INSERT INTO events (event_id, runbook, opened_ms) VALUES (?1, ?2, ?3)",
                params![id, Self::key(runbook), now_ms() as i64],
            )
            .map_err(|e| self.error(e))?;
        Ok(id)
    }

    /// Marks an event closed: the next open of its runbook starts a new one.
    pub fn close(&self, event_id: &str) -> Result<(), RegistryError> {
        self.conn
            .lock()
            .expect("registry lock")
            .execute("UPDATE events SET closed_ms = ?2 WHERE event_id = ?1", params![event_id, now_ms() as i64])
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    fn error(&self, e: rusqlite::Error) -> RegistryError {
        RegistryError { path: self.path.clone(), source: e.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_opener_joins_until_the_event_is_closed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("c.toml"), crate::campaign::DEMO_CAMPAIGN).unwrap();
        let text = "name = \"x\"\ncampaign = \"c.toml\"\n[[steps]]\nid = \"a\"\ntitle = \"A\"\nrole = \"ops\"\nkind = \"checklist\"\nparams = { items = [\"x\"] }\n";
        std::fs::write(dir.path().join("r.toml"), text).unwrap();
        let rb = Runbook::load(&dir.path().join("r.toml")).unwrap();
        let db = dir.path().join("s.sqlite");
        let (a, b) = (EventRegistry::open(&db).unwrap(), EventRegistry::open(&db).unwrap());
        let (id, joined) = a.join_or_open(&rb).unwrap();
        assert!(!joined);
        assert_eq!(b.join_or_open(&rb).unwrap(), (id.clone(), true));
        b.close(&id).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let (next, joined) = a.join_or_open(&rb).unwrap();
        assert!(!joined && next != id);
    }
}
