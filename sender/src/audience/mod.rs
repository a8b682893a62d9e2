//! The audience: input files validated row by row, compiled into compact
//! shard snapshots, and loaded into memory for sending.
//!
//! - [`input`]: reading CSV / JSON Lines, one line at a time, and the row rules.
//! - [`token`]: APNs and FCM token validation and their compact encodings.
//! - [`builder`]: one shard under construction (dedup, market order).
//! - [`snapshot`]: the shard file format and a loaded [`Shard`].
//! - [`store`]: an audience directory (manifest + shards), written atomically,
//!   and a loaded [`Audience`].
//! - [`compile`]: files in, audience out, with a rejection report.
//! - [`generate`]: synthetic audiences for drills and benchmarks.

use std::fmt;
use std::path::PathBuf;

pub mod builder;
pub mod compile;
pub mod generate;
pub mod input;
pub mod snapshot;
pub mod source;
pub mod store;
pub mod token;

pub use compile::{CompileOptions, CompileReport, compile};
pub use snapshot::{MarketRun, Shard, SnapshotError};
pub use source::{AudienceSource, DynamoSource, DynamoUsers, TableSpec};
pub use store::{Audience, Manifest};

/// A push platform. The discriminants are stored in shard files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum Platform {
    /// Apple devices, through APNs.
    Ios = 0,
    /// Android devices, through FCM.
    Android = 1,
}

impl Platform {
    /// Both platforms.
    pub const ALL: [Self; 2] = [Self::Ios, Self::Android];

    /// Parses `ios` or `android`, ignoring case.
    pub fn parse(s: &str) -> Option<Self> {
        if s.eq_ignore_ascii_case("ios") {
            Some(Self::Ios)
        } else if s.eq_ignore_ascii_case("android") {
            Some(Self::Android)
        } else {
            None
        }
    }

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ios => "ios",
            Self::Android => "android",
        }
    }

    /// The push provider that serves it: `APNs` or `FCM`.
    pub fn provider(self) -> &'static str {
        match self {
            Self::Ios => "APNs",
            Self::Android => "FCM",
        }
    }

    /// The platform stored as `v`.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Ios),
            1 => Some(Self::Android),
            _ => None,
        }
    }

    /// Devices per batch message: APNs takes one device per request but
    /// batches of 500 keep queue traffic small; FCM v1 batches are smaller
    /// because its requests carry more bytes.
    pub fn batch_size(self) -> u32 {
        match self {
            Self::Ios => 500,
            Self::Android => 250,
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure to compile, write or load an audience.
#[derive(Debug, thiserror::Error)]
pub enum AudienceError {
    /// A file could not be read or written.
    #[error("{path}: {source}", path = path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The CSV header is missing or does not name the required columns.
    #[error("{path}:{line}: {message}", path = path.display())]
    Header {
        /// The input file.
        path: PathBuf,
        /// The header's line.
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// Strict mode is on and some lines were rejected; nothing was written.
    #[error("{} rows rejected in strict mode; nothing was written\n{report}", report.rejected_total())]
    Strict {
        /// What was read and rejected.
        report: Box<CompileReport>,
    },
    /// No row was valid; nothing was written.
    #[error("no valid rows; nothing was written\n{report}")]
    NoDevices {
        /// What was read and rejected.
        report: Box<CompileReport>,
    },
    /// The output directory exists already.
    #[error("{path} exists; compile with `force` to replace it", path = path.display())]
    OutputExists {
        /// The output directory.
        path: PathBuf,
    },
    /// A shard file is unreadable or damaged.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The manifest is missing, malformed or disagrees with the shards.
    #[error("{path}: {message}", path = path.display())]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// An invalid parameter.
    #[error("{0}")]
    Invalid(String),
}
