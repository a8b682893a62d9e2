//! What the process can learn about itself and where it keeps its data.

use std::path::PathBuf;

/// Peak resident set size of this process in bytes (`VmHWM`), where the
/// platform reports it (Linux); `None` elsewhere.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Kickoff's data directory, shared by the CLI and the desktop app:
/// `$KICKOFF_DATA_DIR`, else `$XDG_DATA_HOME/kickoff`, else
/// `~/.local/share/kickoff`.
pub fn data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KICKOFF_DATA_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("kickoff");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local/share/kickoff")
}

/// The state database in the data directory: the fire ledger and the
/// test-sends, shared by the CLI and the app.
pub fn state_db() -> PathBuf {
    state_db_in(&data_dir())
}

/// The state database of the data directory `dir`.
pub fn state_db_in(dir: &std::path::Path) -> PathBuf {
    dir.join("kickoff.sqlite")
}

/// The shared state database could not be opened. The cause only: callers
/// name the file in their own error.
#[derive(Debug, thiserror::Error)]
pub enum StateDbError {
    /// Its directory could not be created.
    #[error("creating its directory: {0}")]
    Dir(#[source] std::io::Error),
    /// SQLite could not open it, take its lock, or create the tables.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

/// Opens a table set in the shared state database at `path` (fire ledger,
/// test-sends, zombie flags, event registry): creates its directory, waits up
/// to 30 s for another process's lock, uses WAL, and runs `schema`.
pub fn open_state_db(path: &std::path::Path, schema: &str) -> Result<rusqlite::Connection, StateDbError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(StateDbError::Dir)?;
    }
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    // Two processes creating the same file at once (two presses of fire):
    // switching to WAL and creating the schema can answer "database is
    // locked" at once, without the busy handler (a lock upgrade SQLite will
    // not wait on). Both are idempotent, so they are tried again.
    let mut tries = 0;
    loop {
        let result = conn.pragma_update(None, "journal_mode", "WAL").and_then(|()| conn.execute_batch(schema));
        match result {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) && tries < 100 =>
            {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => break other?,
        }
    }
    Ok(conn)
}

/// A short description of this machine for benchmark reports.
pub fn machine_description() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|s| s.trim().to_owned()))
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{cpu}, {cores} cores")
}

/// User + system CPU time of this process, all threads, from
/// `/proc/self/stat` (Linux; `None` elsewhere). The kernel reports it in
/// USER_HZ ticks, which the Linux ABI fixes at 100 per second: 10 ms
/// resolution, fine for runs of seconds.
pub fn cpu_time() -> Option<std::time::Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) start at ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(std::time::Duration::from_millis(ticks * 10))
}
