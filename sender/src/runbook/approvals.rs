//! Approvals: a guarded action (the arm) that needs more than one person.
//!
//! `[approvals] arm = 2` in a runbook: the arm step, started by one
//! operator, waits until enough *different* identities have approved the
//! same event and campaign content within a time limit. Approvals live where
//! every window, instance and `kickoff-sender runbook approve` of the event
//! sees them: the state database (the identity is the operator's name) in
//! embedded mode; in AWS mode S3, keyed by the fire, with the caller's AWS
//! principal as the identity (`aws::approvals`).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use futures_util::future::BoxFuture;
use rusqlite::{Connection, params};

/// One approval.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Approval {
    /// Who, as the store knows them: the operator's name (embedded) or an
    /// AWS principal's ARN.
    pub identity: String,
    /// The operator's name as given.
    pub operator: String,
    /// The campaign content approved.
    pub campaign_hash: String,
    /// When (ms since the epoch).
    pub at_ms: u64,
}

/// What an approval is for: an action of one fire, for one campaign content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalKey {
    /// The event (shared by the windows and walks that join it): how the
    /// state database keys approvals.
    pub event_id: String,
    /// The fire's ledger key (campaign id and scope), the same on every
    /// machine: how S3 keys them.
    pub fire_key: String,
    /// The action: `arm`.
    pub action: String,
    /// The campaign content.
    pub campaign_hash: String,
}

/// Approvals could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    /// The state database.
    #[error("approvals in {path}: {message}")]
    Store {
        /// The database.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// AWS (STS or S3).
    #[error("approvals in AWS: {0}")]
    Aws(String),
}

/// Where approvals are kept.
pub trait Approvals: Send + Sync + std::fmt::Debug {
    /// The identity `operator` acts as.
    fn identity<'a>(&'a self, operator: &'a str) -> BoxFuture<'a, Result<String, ApprovalError>>;
    /// Records `approval` of `key` (again: its time is renewed).
    fn approve<'a>(&'a self, key: &'a ApprovalKey, approval: &'a Approval) -> BoxFuture<'a, Result<(), ApprovalError>>;
    /// The approvals of `key`, one per identity, the latest of each.
    fn list<'a>(&'a self, key: &'a ApprovalKey) -> BoxFuture<'a, Result<Vec<Approval>, ApprovalError>>;
}

/// The approvals of `list` that count at `now_ms`: given within `within_ms`,
/// one per identity.
pub fn counting(list: &[Approval], now_ms: u64, within_ms: u64) -> Vec<&Approval> {
    let mut seen = std::collections::BTreeSet::new();
    list.iter().filter(|a| now_ms.saturating_sub(a.at_ms) <= within_ms && seen.insert(a.identity.as_str())).collect()
}

/// Approvals in the state database: the identity is the operator's name.
#[derive(Debug)]
pub struct SqliteApprovals {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl SqliteApprovals {
    /// Opens (creating if needed) the table in the state database at `path`.
    pub fn open(path: &Path) -> Result<Self, ApprovalError> {
        let conn = crate::sys::open_state_db(
            path,
            "CREATE TABLE IF NOT EXISTS approvals (
                event_id      TEXT NOT NULL,
                action        TEXT NOT NULL,
                campaign_hash TEXT NOT NULL,
                identity      TEXT NOT NULL,
                operator      TEXT NOT NULL,
                at_ms         INTEGER NOT NULL,
                PRIMARY KEY (event_id, action, campaign_hash, identity)
            );",
        )
        .map_err(|e| ApprovalError::Store { path: path.to_owned(), message: e.to_string() })?;
        Ok(Self { path: path.to_owned(), conn: Mutex::new(conn) })
    }

    fn err(&self, e: rusqlite::Error) -> ApprovalError {
        ApprovalError::Store { path: self.path.clone(), message: e.to_string() }
    }

    fn approve_now(&self, key: &ApprovalKey, a: &Approval) -> Result<(), ApprovalError> {
        self.conn
            .lock()
            .expect("approvals lock")
            .execute(
                "INSERT OR REPLACE INTO approvals (event_id, action, campaign_hash, identity, operator, at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![key.event_id, key.action, key.campaign_hash, a.identity, a.operator, a.at_ms as i64],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn list_now(&self, key: &ApprovalKey) -> Result<Vec<Approval>, ApprovalError> {
        let conn = self.conn.lock().expect("approvals lock");
        let mut stmt = conn
            .prepare(
                "SELECT identity, operator, campaign_hash, at_ms FROM approvals
                 WHERE event_id = ?1 AND action = ?2 AND campaign_hash = ?3 ORDER BY at_ms",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![key.event_id, key.action, key.campaign_hash], |r| {
                Ok(Approval { identity: r.get(0)?, operator: r.get(1)?, campaign_hash: r.get(2)?, at_ms: r.get::<_, i64>(3)? as u64 })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }
}

impl Approvals for SqliteApprovals {
    fn identity<'a>(&'a self, operator: &'a str) -> BoxFuture<'a, Result<String, ApprovalError>> {
        Box::pin(async move { Ok(operator.trim().to_owned()) })
    }

    fn approve<'a>(&'a self, key: &'a ApprovalKey, approval: &'a Approval) -> BoxFuture<'a, Result<(), ApprovalError>> {
        Box::pin(async move { self.approve_now(key, approval) })
    }

    fn list<'a>(&'a self, key: &'a ApprovalKey) -> BoxFuture<'a, Result<Vec<Approval>, ApprovalError>> {
        Box::pin(async move { self.list_now(key) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approval(identity: &str, at_ms: u64) -> Approval {
        Approval { identity: identity.into(), operator: identity.into(), campaign_hash: "h".into(), at_ms }
    }

    #[test]
    fn only_recent_approvals_count_once_per_identity() {
        let list = [approval("ana", 1_000), approval("ana", 5_000), approval("bo", 2_000), approval("cy", 9_000)];
        let ids = |v: Vec<&Approval>| v.into_iter().map(|a| a.identity.clone()).collect::<Vec<_>>();
        assert_eq!(ids(counting(&list, 10_000, 8_000)), ["ana", "bo", "cy"]);
        assert_eq!(ids(counting(&list, 10_000, 5_000)), ["ana", "cy"]);
    }

    #[tokio::test]
    async fn the_store_keeps_one_approval_per_identity_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteApprovals::open(&dir.path().join("state.sqlite")).unwrap();
        let key = ApprovalKey { event_id: "e".into(), fire_key: "c@e".into(), action: "arm".into(), campaign_hash: "h".into() };
        store.approve(&key, &approval("ana", 1)).await.unwrap();
        store.approve(&key, &approval("ana", 2)).await.unwrap();
        let other = ApprovalKey { campaign_hash: "h2".into(), ..key.clone() };
        store.approve(&other, &approval("bo", 3)).await.unwrap();
        assert_eq!(store.list(&key).await.unwrap(), [approval("ana", 2)]);
        // Another handle on the same file (another process) sees it.
        let again = SqliteApprovals::open(&dir.path().join("state.sqlite")).unwrap();
        assert_eq!(again.list(&other).await.unwrap().len(), 1);
    }
}
