//! `audience compile`: audience files in, shard snapshots out, with a report
//! of every rejected line.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::builder::ShardBuilder;
use super::input::{CsvHeader, Format, Line, LineReader, RejectReason, Row, json_row};
use super::store::{AudienceWriter, Manifest, SourceInfo};
use super::{AudienceError, Platform, token};

/// Default number of shards of a compiled audience.
pub const DEFAULT_SHARDS: u32 = 32;
/// How many rejected lines a report lists by default.
pub const DEFAULT_LISTED: usize = 20;

/// Settings of a compile.
#[derive(Debug, Clone)]
pub struct CompileOptions {
    /// Number of shards to split the audience into.
    pub shards: u32,
    /// Fail, writing nothing, if any line is rejected.
    pub strict: bool,
    /// Replace an existing output directory.
    pub force: bool,
    /// How many rejected lines to keep in the report.
    pub max_listed: usize,
}

impl Default for CompileOptions {
    fn default() -> Self {
        Self { shards: DEFAULT_SHARDS, strict: false, force: false, max_listed: DEFAULT_LISTED }
    }
}

/// A rejected line, with its file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ListedRejection {
    /// The input file.
    pub path: PathBuf,
    /// 1-based line number.
    pub line: u64,
    /// Reason, for counting.
    pub reason: RejectReason,
    /// What is wrong.
    pub detail: String,
}

impl fmt::Display for ListedRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}: {}", self.path.display(), self.line, self.reason.as_str(), self.detail)
    }
}

/// What a compile read, kept and refused.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CompileReport {
    /// Lines read, headers and blank lines included.
    pub lines: u64,
    /// Rows kept.
    pub accepted: u64,
    /// Rows refused, per reason.
    pub rejected: BTreeMap<RejectReason, u64>,
    /// The first refused lines.
    pub first_rejections: Vec<ListedRejection>,
    /// The written audience's manifest (absent when nothing was written).
    pub manifest: Option<Manifest>,
}

impl CompileReport {
    /// Total rejected rows.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    fn reject(&mut self, path: &Path, line: u64, reason: RejectReason, detail: String, max_listed: usize) {
        *self.rejected.entry(reason).or_default() += 1;
        if self.first_rejections.len() < max_listed {
            self.first_rejections.push(ListedRejection { path: path.to_owned(), line, reason, detail });
        }
    }

    fn rejected_by_name(&self) -> BTreeMap<String, u64> {
        self.rejected.iter().map(|(r, n)| (r.as_str().to_owned(), *n)).collect()
    }
}

impl fmt::Display for CompileReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "lines read: {}, devices kept: {}, rows rejected: {}", self.lines, self.accepted, self.rejected_total())?;
        for (reason, n) in &self.rejected {
            writeln!(f, "  {:<20} {n}", reason.as_str())?;
        }
        if !self.first_rejections.is_empty() {
            writeln!(f, "first rejected lines:")?;
            for r in &self.first_rejections {
                writeln!(f, "  {r}")?;
            }
        }
        Ok(())
    }
}

/// Progress of a long compile.
#[derive(Debug, Clone, Copy)]
pub struct CompileProgress {
    /// Bytes read across all inputs.
    pub bytes_read: u64,
    /// Total input bytes.
    pub bytes_total: u64,
    /// Rows kept so far.
    pub accepted: u64,
}

struct Counting<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// Which shard a token belongs to. APNs tokens are hashed as raw bytes so a
/// token written in upper and lower case lands in one shard (and is caught as
/// a duplicate there).
fn shard_of(row: &Row<'_>, shards: u32) -> u32 {
    let h = match row.platform {
        Platform::Ios => token::parse_apns(&row.token).map_or(0, |raw| xxh3_64_with_seed(&raw, 0)),
        Platform::Android => xxh3_64_with_seed(row.token.as_bytes(), 1),
    };
    (h % u64::from(shards)) as u32
}

/// Reads every input, validates each line, and writes the accepted rows as an
/// audience in `out`. Input files are only read.
pub fn compile(
    inputs: &[PathBuf],
    out: &Path,
    opts: &CompileOptions,
    progress: &mut dyn FnMut(CompileProgress),
) -> Result<CompileReport, AudienceError> {
    if opts.shards == 0 {
        return Err(AudienceError::Invalid("the audience needs at least 1 shard".into()));
    }
    let mut builders: Vec<ShardBuilder> = (0..opts.shards).map(|i| ShardBuilder::new(i, opts.shards)).collect();
    let mut report = CompileReport::default();
    let mut sources = Vec::new();
    let bytes_total = inputs.iter().filter_map(|p| p.metadata().ok()).map(|m| m.len()).sum();
    let mut bytes_before = 0;
    for path in inputs {
        let io_err = |source| AudienceError::Io { path: path.clone(), source };
        let file = File::open(path).map_err(io_err)?;
        let mut reader = LineReader::new(BufReader::with_capacity(1 << 20, Counting { inner: file, count: 0 }));
        let format = Format::from_path(path);
        let mut header: Option<CsvHeader> = None;
        let (lines_before, accepted_before, rejected_before) = (report.lines, report.accepted, report.rejected_total());
        while let Some((line_no, line)) = reader.next_line().map_err(io_err)? {
            report.lines += 1;
            let text = match line {
                Line::TooLong => {
                    report.reject(
                        path,
                        line_no,
                        RejectReason::LineTooLong,
                        format!("line is longer than {} bytes", super::input::MAX_LINE_BYTES),
                        opts.max_listed,
                    );
                    continue;
                }
                Line::Text(bytes) => match std::str::from_utf8(bytes) {
                    Ok(t) => t,
                    Err(e) => {
                        report.reject(
                            path,
                            line_no,
                            RejectReason::InvalidUtf8,
                            format!("invalid UTF-8 at byte {}", e.valid_up_to()),
                            opts.max_listed,
                        );
                        continue;
                    }
                },
            };
            if text.trim().is_empty() {
                continue;
            }
            let row = match format {
                Format::Jsonl => json_row(text),
                Format::Csv => match &header {
                    Some(h) => h.row(text),
                    None => {
                        let parsed = CsvHeader::parse(text).map_err(|message| AudienceError::Header {
                            path: path.clone(),
                            line: line_no,
                            message,
                        })?;
                        header = Some(parsed);
                        continue;
                    }
                },
            };
            let pushed = row.and_then(|row| {
                let shard = shard_of(&row, opts.shards) as usize;
                builders[shard].push(&row, line_no)
            });
            match pushed {
                Ok(()) => report.accepted += 1,
                Err((reason, detail)) => report.reject(path, line_no, reason, detail, opts.max_listed),
            }
            if report.lines % 65_536 == 0 {
                let bytes_read = bytes_before + reader_count(&reader);
                progress(CompileProgress { bytes_read, bytes_total, accepted: report.accepted });
            }
        }
        bytes_before += reader_count(&reader);
        sources.push(SourceInfo {
            path: path.display().to_string(),
            lines: report.lines - lines_before,
            accepted: report.accepted - accepted_before,
            rejected: report.rejected_total() - rejected_before,
        });
    }
    progress(CompileProgress { bytes_read: bytes_before, bytes_total, accepted: report.accepted });
    if opts.strict && report.rejected_total() > 0 {
        return Err(AudienceError::Strict { report: Box::new(report) });
    }
    if report.accepted == 0 {
        return Err(AudienceError::NoDevices { report: Box::new(report) });
    }
    let writer = AudienceWriter::create(out, opts.force)?;
    for builder in builders {
        writer.add(&builder.finish())?;
    }
    let rejected = report.rejected_by_name();
    report.manifest = Some(writer.commit(sources, rejected)?);
    Ok(report)
}

fn reader_count<R: Read>(reader: &LineReader<BufReader<Counting<R>>>) -> u64 {
    reader.get_ref().get_ref().count
}
