//! Device reports of a fire as CSV files (`user_id, platform, token, reason,
//! time`): the prune report (dead tokens) and the undelivered report.
//!
//! Tokens and user ids are read back from the shards at the end of the fire
//! (user ids from each shard's cold region), so nothing per device is held
//! while sending but the notes themselves.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use super::run::DeviceNote;
use crate::audience::Audience;

/// Quotes a CSV field when it needs it.
fn field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")).into() } else { s.into() }
}

/// Writes `notes` to `path` (via a temporary file and a rename, so a reader
/// never sees half a report).
pub fn write_device_csv(path: &Path, notes: &[DeviceNote], audience: &Audience) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("csv.tmp");
    let mut out = BufWriter::new(fs::File::create(&tmp)?);
    writeln!(out, "user_id,platform,token,reason,time")?;
    let mut by_shard: BTreeMap<u32, Vec<&DeviceNote>> = BTreeMap::new();
    for n in notes {
        by_shard.entry(n.device.shard).or_default().push(n);
    }
    let mut token = Vec::new();
    for (shard_index, notes) in by_shard {
        let shard = &audience.shards()[shard_index as usize];
        let users = shard.user_ids().map_err(io::Error::other)?;
        for n in notes {
            let d = n.device;
            let t = shard.token_text(d.platform, d.index as usize, &mut token);
            writeln!(
                out,
                "{},{},{},{},{}",
                field(users.get(d.platform, d.index as usize)),
                d.platform,
                t,
                n.reason,
                humantime::format_rfc3339_millis(n.at)
            )?;
        }
    }
    out.into_inner().map_err(io::IntoInnerError::into_error)?.sync_all()?;
    fs::rename(&tmp, path)
}
