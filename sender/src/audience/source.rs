//! Where an event's audience comes from: a compiled directory, an audience
//! file compiled on first use, generated devices (demos and rehearsals), or
//! a DynamoDB table read when the event opens. The embedded workers and AWS
//! mode's uploader both start here.
//!
//! This module only names a DynamoDB source; reading it needs AWS, so the
//! session layer (`session`, through `aws::dynamodb`) imports it into the
//! event's work directory and hands the runbook the compiled directory.

use std::path::{Path, PathBuf};

use super::generate::{self, GenerateSpec};
use super::{Audience, AudienceError, CompileOptions, store};

/// An audience as a runbook names it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum AudienceSource {
    /// Generate this many devices.
    Generate {
        /// Devices.
        devices: u64,
        /// Seed.
        seed: u64,
    },
    /// A compiled audience directory, or an audience file to compile.
    Path(PathBuf),
    /// A DynamoDB table, imported when an event opens.
    DynamoDb(Box<DynamoSource>),
}

/// How a DynamoDB table's items map to audience rows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TableSpec {
    /// The table.
    pub table: String,
    /// An index to query instead of the table (its partition key is the
    /// user id).
    pub index: Option<String>,
    /// The attribute holding the user id (the partition key queried).
    pub user_id: String,
    /// The attribute holding `ios` or `android`.
    pub platform: String,
    /// The attribute holding the device token.
    pub token: String,
    /// The attribute holding the locale.
    pub locale: String,
    /// The attribute holding the market.
    pub market: String,
}

/// Which users of a DynamoDB table make the audience.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DynamoUsers {
    /// The users listed in this file, one id per line.
    File(PathBuf),
    /// Every item of the table, read by a parallel Scan in this many segments.
    Scan {
        /// Segments.
        segments: u32,
    },
}

/// An audience a runbook reads from DynamoDB (`[audience.dynamodb]`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DynamoSource {
    /// The table and its attribute names.
    pub spec: TableSpec,
    /// The users.
    pub users: DynamoUsers,
    /// The AWS configuration to read it with; in AWS mode the event's own
    /// when not given.
    pub aws: Option<PathBuf>,
}

/// Reads a user-id file: one id per line, blank lines and `#` comments
/// skipped, repeats dropped (the first kept), in the file's order.
pub fn read_user_ids(path: &Path) -> Result<Vec<String>, AudienceError> {
    let text = std::fs::read_to_string(path).map_err(|source| AudienceError::Io { path: path.to_owned(), source })?;
    let mut seen = std::collections::HashSet::new();
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter(|l| seen.insert(*l))
        .map(str::to_owned)
        .collect())
}

impl Default for AudienceSource {
    /// Without an audience, 10,000 generated devices: enough for a demo walk.
    fn default() -> Self {
        Self::Generate { devices: 10_000, seed: 1 }
    }
}

impl AudienceSource {
    /// The DynamoDB table this audience is read from, if it is.
    pub fn dynamodb_table(&self) -> Option<&str> {
        match self {
            Self::DynamoDb(d) => Some(&d.spec.table),
            _ => None,
        }
    }

    /// The audience as a compiled directory: the directory itself, or
    /// compiled (generated) into `work/audience`. A generated audience is
    /// made once per work directory.
    pub fn prepare(&self, work: &Path) -> Result<PathBuf, AudienceError> {
        match self {
            Self::Path(p) if p.join(store::MANIFEST).is_file() => Ok(p.clone()),
            Self::Path(file) => {
                let out = work.join("audience");
                let opts = CompileOptions { force: true, ..CompileOptions::default() };
                super::compile(std::slice::from_ref(file), &out, &opts, &mut |_| {})?;
                Ok(out)
            }
            Self::DynamoDb(source) => {
                let out = work.join("audience");
                if out.join(store::MANIFEST).is_file() {
                    return Ok(out);
                }
                Err(AudienceError::Invalid(format!(
                    "the audience is read from DynamoDB table {} when an event opens, and no event has imported it into {}: \
                     walk the runbook (or open its event in the app), or import it with `kickoff-sender audience import dynamodb` \
                     and name that directory in [audience] dir",
                    source.spec.table,
                    out.display()
                )))
            }
            Self::Generate { devices, seed } => {
                let out = work.join("audience");
                if out.join(store::MANIFEST).is_file() {
                    return Ok(out);
                }
                let spec = GenerateSpec { devices: *devices, seed: *seed, ..GenerateSpec::default() };
                let shards = devices.div_ceil(10_000).clamp(1, 32) as u32;
                generate::compile_generated(&spec, &out, shards, true, &|_| {})?;
                Ok(out)
            }
        }
    }

    /// Prepares the audience in `work` (created if missing) and loads it.
    /// Blocking: file I/O and, the first time, compiling.
    pub fn load(&self, work: &Path) -> Result<(PathBuf, Audience), AudienceError> {
        std::fs::create_dir_all(work).map_err(|source| AudienceError::Io { path: work.to_owned(), source })?;
        let dir = self.prepare(work)?;
        let audience = Audience::load(&dir)?;
        Ok((dir, audience))
    }
}
