//! The fire journal: which devices of a fire have a final answer, kept
//! beside the fire ledger (the same SQLite file) so that a fire whose
//! process died can be resumed, sending exactly the devices still without
//! an answer.
//!
//! Every notifier tells the journal of each batch it closes; one writer
//! thread stores them, one transaction per ~100 ms, off the hot path. A row
//! covers devices `start..end` of one shard's platform section: all of them
//! have a final answer (delivered, a dead token, a refused notification)
//! except those listed in `unanswered`. A row is written only once every
//! device in it has its answer, so it never claims more than happened:
//! after a crash, the batches answered in the last ~100 ms and those in
//! flight are sent again, whole, with the campaign's collapse id.
//!
//! The writer also beats the heartbeat of every fire this process sends,
//! once a second: a `fired` row whose process is gone (or whose heartbeat
//! stopped) reads as interrupted.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use rusqlite::{Connection, params};

use super::ledger::{LedgerError, ms};
use super::warm::Warm;
use crate::audience::Platform;
use crate::queue::BatchMsg;

const WRITE_EVERY: Duration = Duration::from_millis(100);
const BEAT_EVERY: Duration = Duration::from_secs(1);
/// A write this large goes at once, whatever the time.
const MAX_PENDING: usize = 4096;

/// The journal's table, created with the ledger's.
pub(crate) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS fire_journal (
    fire_key   TEXT NOT NULL,
    shard      INTEGER NOT NULL,
    platform   INTEGER NOT NULL,
    start      INTEGER NOT NULL,
    end_       INTEGER NOT NULL,
    unanswered BLOB
);
CREATE INDEX IF NOT EXISTS fire_journal_by_key ON fire_journal (fire_key);";

/// Devices of one batch with a final answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// The shard.
    pub shard: u32,
    /// Its platform section.
    pub platform: Platform,
    /// First device covered.
    pub start: u32,
    /// One past the last device covered (devices of the batch past it were
    /// never handed off).
    pub end: u32,
    /// Devices in `start..end` without a final answer (in doubt, failed
    /// after a transient error, refused for the sender's credentials).
    pub unanswered: Vec<u32>,
}

enum Msg {
    Entry(String, JournalEntry),
    Live(String, bool),
    Flush(mpsc::SyncSender<()>),
}

/// The writer side: cheap to call from a notifier thread.
#[derive(Debug)]
pub struct Journal {
    tx: mpsc::Sender<Msg>,
    thread: Option<JoinHandle<()>>,
    /// Fires whose heartbeat another process took over (a resume elsewhere
    /// while this one was thought dead): this process must stop sending.
    lost: Arc<Mutex<HashSet<String>>>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("journal message")
    }
}

impl Journal {
    /// Starts the writer on the ledger file `path`.
    pub fn open(path: &Path) -> Result<Self, LedgerError> {
        let err = |message: String| LedgerError { path: path.to_owned(), message };
        let conn = crate::sys::open_state_db(path, SCHEMA).map_err(|e| err(e.to_string()))?;
        // A process killed mid-fire loses nothing already committed; only a
        // crash of the machine could, and the fire would then be sent again
        // (never skipped).
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(|e| err(e.to_string()))?;
        let (tx, rx) = mpsc::channel();
        let owned = path.to_owned();
        let lost = Arc::new(Mutex::new(HashSet::new()));
        let writer = Writer {
            conn,
            path: owned,
            pending: Vec::new(),
            live: HashSet::new(),
            failing: false,
            lost: lost.clone(),
            host: super::ledger::host_name(),
        };
        let thread = std::thread::Builder::new()
            .name("kickoff-journal".into())
            .spawn(move || writer.run(&rx))
            .map_err(|e| err(format!("could not start the journal thread: {e}")))?;
        Ok(Self { tx, thread: Some(thread), lost })
    }

    /// True once fire `key`'s row belongs to another process (it took the
    /// fire over): this process stops its sends.
    pub fn is_lost(&self, key: &str) -> bool {
        self.lost.lock().expect("lost lock").contains(key)
    }

    /// Records a closed batch of fire `key`.
    pub fn record(&self, key: &str, entry: JournalEntry) {
        let _ = self.tx.send(Msg::Entry(key.to_owned(), entry));
    }

    /// Starts or stops beating the heartbeat of fire `key`.
    pub fn live(&self, key: &str, live: bool) {
        let _ = self.tx.send(Msg::Live(key.to_owned(), live));
    }

    /// Waits until everything recorded so far is written.
    pub fn flush(&self) {
        let (ack, done) = mpsc::sync_channel(1);
        if self.tx.send(Msg::Flush(ack)).is_ok() {
            let _ = done.recv();
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.flush();
        let (tx, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.tx, tx));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Writer {
    conn: Connection,
    path: PathBuf,
    pending: Vec<(String, JournalEntry)>,
    live: HashSet<String>,
    /// The last write failed (logged once until one succeeds).
    failing: bool,
    /// Fires whose row another process took over.
    lost: Arc<Mutex<HashSet<String>>>,
    /// This host, as the ledger records it.
    host: String,
}

impl Writer {
    fn run(mut self, rx: &mpsc::Receiver<Msg>) {
        let (mut last_write, mut last_beat) = (Instant::now(), Instant::now());
        loop {
            let wait = if self.pending.is_empty() { BEAT_EVERY } else { WRITE_EVERY.saturating_sub(last_write.elapsed()) };
            match rx.recv_timeout(wait) {
                Ok(Msg::Entry(key, entry)) => self.pending.push((key, entry)),
                Ok(Msg::Live(key, true)) => {
                    self.lost.lock().expect("lost lock").remove(&key);
                    self.live.insert(key);
                    self.beat();
                    last_beat = Instant::now();
                }
                Ok(Msg::Live(key, false)) => {
                    self.live.remove(&key);
                }
                Ok(Msg::Flush(ack)) => {
                    self.write();
                    last_write = Instant::now();
                    let _ = ack.send(());
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.write();
                    return;
                }
            }
            if !self.pending.is_empty() && (last_write.elapsed() >= WRITE_EVERY || self.pending.len() >= MAX_PENDING) {
                self.write();
                last_write = Instant::now();
            }
            if !self.live.is_empty() && last_beat.elapsed() >= BEAT_EVERY {
                self.beat();
                last_beat = Instant::now();
            }
        }
    }

    fn write(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        coalesce(&mut self.pending);
        let result = (|| -> rusqlite::Result<()> {
            let tx = self.conn.transaction()?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO fire_journal (fire_key, shard, platform, start, end_, unanswered) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?;
                for (key, e) in &self.pending {
                    let unanswered: Option<Vec<u8>> =
                        (!e.unanswered.is_empty()).then(|| e.unanswered.iter().flat_map(|i| i.to_le_bytes()).collect());
                    insert.execute(params![key, e.shard, e.platform as u8, e.start, e.end, unanswered])?;
                }
            }
            tx.commit()
        })();
        match result {
            Ok(()) => {
                self.pending.clear();
                self.failing = false;
            }
            Err(e) => {
                // Kept and tried again: a fire resumed meanwhile sends these
                // batches again, which is safe; losing them is not.
                if !self.failing {
                    tracing::error!(ledger = %self.path.display(), error = %e, "could not write the fire journal; retrying");
                }
                self.failing = true;
            }
        }
    }

    /// Beats the heartbeat of every live fire whose row is still this
    /// process's; a row another process took over is reported lost.
    fn beat(&mut self) {
        let now = ms(SystemTime::now()) as i64;
        let mut lost = Vec::new();
        for key in &self.live {
            match self.conn.execute(
                "UPDATE fires SET heartbeat_ms = ?2 WHERE campaign_id = ?1 AND status = 'fired' AND host = ?3 AND pid = ?4",
                params![key, now, self.host, std::process::id()],
            ) {
                Ok(0) => {
                    // Ended (the run completes on its own) or taken over.
                    let taken = self
                        .conn
                        .query_row(
                            "SELECT count(*) FROM fires WHERE campaign_id = ?1 AND status = 'fired' AND NOT (host = ?2 AND pid = ?3)",
                            params![key, self.host, std::process::id()],
                            |r| r.get::<_, i64>(0),
                        )
                        .unwrap_or(0);
                    if taken > 0 {
                        tracing::error!(fire = %key, "another process took this fire over (its heartbeat looked stale): stopping here");
                        lost.push(key.clone());
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(ledger = %self.path.display(), error = %e, "could not beat the fire's heartbeat"),
            }
        }
        for key in lost {
            self.live.remove(&key);
            self.lost.lock().expect("lost lock").insert(key);
        }
    }
}

/// Joins entries whose ranges meet end to start (batches of one section
/// answered in turn) into one row each: a 4M-device fire writes a few
/// hundred rows instead of thousands. Rows are read back in order, so
/// entries that overlap (a device answered twice) are left as they are.
fn coalesce(pending: &mut Vec<(String, JournalEntry)>) {
    let mut sorted = pending.clone();
    sorted.sort_by(|(ka, a), (kb, b)| (ka, a.shard, a.platform as u8, a.start).cmp(&(kb, b.shard, b.platform as u8, b.start)));
    let same_section =
        |(ka, a): &(String, JournalEntry), (kb, b): &(String, JournalEntry)| ka == kb && a.shard == b.shard && a.platform == b.platform;
    if sorted.windows(2).any(|w| same_section(&w[0], &w[1]) && w[1].1.start < w[0].1.end) {
        return;
    }
    let mut out: Vec<(String, JournalEntry)> = Vec::with_capacity(sorted.len());
    for next in sorted {
        match out.last_mut() {
            Some(last) if same_section(last, &next) && last.1.end == next.1.start => {
                last.1.end = next.1.end;
                last.1.unanswered.extend_from_slice(&next.1.unanswered);
            }
            _ => out.push(next),
        }
    }
    *pending = out;
}

/// Which devices of a fire have a final answer, read back from the journal.
#[derive(Debug, Clone, Default)]
pub struct Answered {
    /// Per shard, per platform: one bit per device.
    bits: Vec<[Vec<u64>; 2]>,
}

impl Answered {
    /// Reads the journal of fire `key` for the audience `warm` holds.
    pub fn read(conn: &Connection, key: &str, warm: &Warm) -> rusqlite::Result<Self> {
        let mut bits: Vec<[Vec<u64>; 2]> = warm
            .audience
            .shards()
            .iter()
            .map(|shard| {
                let len = |p: Platform| shard.runs().iter().filter(|r| r.platform == p).map(|r| r.end).max().unwrap_or(0);
                Platform::ALL.map(|p| vec![0u64; (len(p) as usize).div_ceil(64)])
            })
            .collect();
        let mut rows =
            conn.prepare("SELECT shard, platform, start, end_, unanswered FROM fire_journal WHERE fire_key = ?1 ORDER BY rowid")?;
        let mut rows = rows.query(params![key])?;
        while let Some(r) = rows.next()? {
            let (shard, platform, start, end): (u32, u8, u32, u32) = (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
            let unanswered: Option<Vec<u8>> = r.get(4)?;
            let Some(section) = bits.get_mut(shard as usize).and_then(|s| s.get_mut(usize::from(platform))) else { continue };
            let len = (section.len() * 64) as u32;
            for i in start.min(len)..end.min(len) {
                section[(i / 64) as usize] |= 1 << (i % 64);
            }
            for chunk in unanswered.unwrap_or_default().chunks_exact(4) {
                let i = u32::from_le_bytes(chunk.try_into().expect("4 bytes"));
                if i < len {
                    section[(i / 64) as usize] &= !(1 << (i % 64));
                }
            }
        }
        Ok(Self { bits })
    }

    fn is_answered(&self, shard: u32, platform: Platform, i: u32) -> bool {
        self.bits.get(shard as usize).and_then(|s| s[platform as usize].get((i / 64) as usize)).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// `planned` (every batch of the fire) narrowed to the devices without
    /// an answer: whole batches where none has one, runs of devices where
    /// some have.
    pub fn remaining(&self, planned: super::dispatch::Plan) -> super::dispatch::Plan {
        let mut out = Vec::new();
        for (offset, b) in planned {
            let mut i = b.start;
            while i < b.end {
                if self.is_answered(b.shard, b.platform, i) {
                    i += 1;
                    continue;
                }
                let start = i;
                while i < b.end && !self.is_answered(b.shard, b.platform, i) {
                    i += 1;
                }
                out.push((offset, BatchMsg { start, end: i, ..b.clone() }));
            }
        }
        out
    }
}

/// How far an interrupted fire got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Standing {
    /// Devices the fire targets.
    pub targeted: u64,
    /// Devices with a final answer.
    pub answered: u64,
}

impl Standing {
    /// Devices without a final answer: what a resume sends.
    pub fn unanswered(&self) -> u64 {
        self.targeted.saturating_sub(self.answered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, shard: u32, start: u32, end: u32, unanswered: &[u32]) -> (String, JournalEntry) {
        (key.to_owned(), JournalEntry { shard, platform: Platform::Ios, start, end, unanswered: unanswered.to_vec() })
    }

    #[test]
    fn coalesce_joins_ranges_that_meet_and_keeps_the_rest() {
        let mut pending = vec![
            entry("a", 0, 100, 200, &[150]),
            entry("a", 1, 0, 100, &[]),
            entry("a", 0, 0, 100, &[3]),
            entry("b", 0, 200, 300, &[]),
            entry("a", 0, 250, 300, &[]),
        ];
        coalesce(&mut pending);
        assert_eq!(
            pending,
            vec![entry("a", 0, 0, 200, &[3, 150]), entry("a", 0, 250, 300, &[]), entry("a", 1, 0, 100, &[]), entry("b", 0, 200, 300, &[])]
        );
        // A device answered twice: the order of the rows decides, so
        // nothing moves.
        let overlapping = vec![entry("a", 0, 0, 100, &[]), entry("a", 0, 50, 60, &[55])];
        let mut pending = overlapping.clone();
        coalesce(&mut pending);
        assert_eq!(pending, overlapping);
    }

    fn msg(start: u32, end: u32) -> BatchMsg {
        BatchMsg { campaign_id: "c".into(), shard: 0, platform: Platform::Ios, market: 0, start, end, not_before_ms: None }
    }

    #[test]
    fn remaining_keeps_whole_batches_and_splits_partial_ones() {
        let mut a = Answered { bits: vec![[vec![0; 2], vec![0; 2]]] };
        for i in 0..10 {
            a.bits[0][0][0] |= 1 << i;
        }
        a.bits[0][0][0] &= !(1 << 4);
        let left = a.remaining(vec![(Duration::ZERO, msg(0, 10)), (Duration::ZERO, msg(10, 20))]);
        let ranges: Vec<(u32, u32)> = left.iter().map(|(_, b)| (b.start, b.end)).collect();
        assert_eq!(ranges, [(4, 5), (10, 20)]);
    }
}
