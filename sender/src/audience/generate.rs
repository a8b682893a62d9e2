//! Synthetic audiences for drills and benchmarks: realistic tokens, markets
//! and locales, deterministic for a seed, unique by construction.
//!
//! Device `i` is a pure function of `(seed, i)`, so a shard can be generated
//! on its own (the drill builds shard after shard in bounded memory) and the
//! same devices come out whether written to a file or compiled directly.
//! Uniqueness: the first 64 bits of every token are a bijection of `i`.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::builder::ShardBuilder;
use super::compile::CompileReport;
use super::input::{self, Format, RejectReason};
use super::store::{AudienceWriter, SourceInfo};
use super::token::BASE64URL;
use super::{AudienceError, Platform};
use crate::rng::{SplitMix64, mix64};

/// A market of the synthetic world: code, locales (first is the main one)
/// and relative size.
#[derive(Debug, Clone, Copy)]
pub struct SyntheticMarket {
    /// Market code.
    pub code: &'static str,
    /// Locales spoken there; the first gets 80% of devices.
    pub locales: &'static [&'static str],
    /// Relative number of devices.
    pub weight: u32,
}

/// The markets `--markets N` draws from, biggest first.
pub const MARKETS: [SyntheticMarket; 12] = [
    SyntheticMarket { code: "US", locales: &["en-US", "es-US"], weight: 30 },
    SyntheticMarket { code: "BR", locales: &["pt-BR"], weight: 14 },
    SyntheticMarket { code: "JP", locales: &["ja-JP"], weight: 12 },
    SyntheticMarket { code: "DE", locales: &["de-DE"], weight: 10 },
    SyntheticMarket { code: "MX", locales: &["es-MX"], weight: 10 },
    SyntheticMarket { code: "FR", locales: &["fr-FR"], weight: 9 },
    SyntheticMarket { code: "GB", locales: &["en-GB"], weight: 8 },
    SyntheticMarket { code: "IN", locales: &["en-IN", "hi-IN"], weight: 7 },
    SyntheticMarket { code: "ES", locales: &["es-ES"], weight: 6 },
    SyntheticMarket { code: "IT", locales: &["it-IT"], weight: 5 },
    SyntheticMarket { code: "KR", locales: &["ko-KR"], weight: 5 },
    SyntheticMarket { code: "CA", locales: &["en-CA", "fr-CA"], weight: 4 },
];

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct GenerateSpec {
    /// Number of devices.
    pub devices: u64,
    /// Share of iOS devices, in `[0, 1]`.
    pub ios_share: f64,
    /// Number of markets, 1 to 12, taken from [`MARKETS`] in order.
    pub markets: usize,
    /// Seed; the same seed gives the same audience.
    pub seed: u64,
}

impl Default for GenerateSpec {
    fn default() -> Self {
        Self { devices: 10_000, ios_share: 0.6, markets: 7, seed: 1 }
    }
}

/// One generated row, as text.
#[derive(Debug, Default)]
pub struct GeneratedRow {
    /// Numeric user id.
    pub user_id: String,
    /// Platform.
    pub platform: Option<Platform>,
    /// Token text.
    pub token: String,
    /// Locale.
    pub locale: &'static str,
    /// Market code.
    pub market: &'static str,
}

impl GenerateSpec {
    /// Checks the parameters.
    pub fn check(&self) -> Result<(), AudienceError> {
        if !(0.0..=1.0).contains(&self.ios_share) {
            return Err(AudienceError::Invalid(format!("the iOS share {} is not between 0 and 1", self.ios_share)));
        }
        if !(1..=MARKETS.len()).contains(&self.markets) {
            return Err(AudienceError::Invalid(format!("{} markets is not between 1 and {}", self.markets, MARKETS.len())));
        }
        Ok(())
    }

    /// The markets in use.
    pub fn markets(&self) -> &'static [SyntheticMarket] {
        &MARKETS[..self.markets.clamp(1, MARKETS.len())]
    }

    /// Fills `row` with device `i`.
    pub fn device(&self, i: u64, row: &mut GeneratedRow) {
        let key = mix64(self.seed ^ 0x6b69_636b_6f66_6600);
        let mut rng = SplitMix64::new(mix64(i ^ key) ^ 0x5851_f42d_4c95_7f2d);
        let markets = self.markets();
        let total: u64 = markets.iter().map(|m| u64::from(m.weight)).sum();
        let mut pick = rng.below(total);
        let market = markets
            .iter()
            .find(|m| {
                let w = u64::from(m.weight);
                if pick < w {
                    true
                } else {
                    pick -= w;
                    false
                }
            })
            .expect("pick is below the total weight");
        row.market = market.code;
        row.locale = if market.locales.len() == 1 || rng.next_f64() < 0.8 {
            market.locales[0]
        } else {
            market.locales[1 + rng.below(market.locales.len() as u64 - 1) as usize]
        };
        row.user_id.clear();
        let _ = write!(row.user_id, "{}", 10_000_000 + i);
        // A bijection of `i`: distinct devices get distinct token prefixes.
        let unique = mix64(i ^ key.rotate_left(17));
        row.token.clear();
        if rng.next_f64() < self.ios_share {
            row.platform = Some(Platform::Ios);
            let _ = write!(row.token, "{unique:016x}{:016x}{:016x}{:016x}", rng.next_u64(), rng.next_u64(), rng.next_u64());
        } else {
            row.platform = Some(Platform::Android);
            // <22-char instance id>:APA91b<134 chars> = 163 characters.
            for k in 0..11 {
                row.token.push(char::from(BASE64URL[((unique >> (k * 6)) & 63) as usize]));
            }
            for _ in 0..11 {
                row.token.push(char::from(BASE64URL[rng.below(64) as usize]));
            }
            row.token.push_str(":APA91b");
            for _ in 0..134 {
                row.token.push(char::from(BASE64URL[rng.below(64) as usize]));
            }
        }
    }

    fn describe(&self) -> String {
        format!("generated: devices={} ios_share={} markets={} seed={}", self.devices, self.ios_share, self.markets, self.seed)
    }
}

/// Writes the audience to `path` as CSV or JSON Lines (by extension).
pub fn write_file(spec: &GenerateSpec, path: &Path) -> Result<(), AudienceError> {
    spec.check()?;
    let io_err = |source| AudienceError::Io { path: path.to_owned(), source };
    let tmp = path.with_extension("tmp-generate");
    let mut out = BufWriter::with_capacity(1 << 20, File::create(&tmp).map_err(io_err)?);
    let format = Format::from_path(path);
    if format == Format::Csv {
        writeln!(out, "{}", input::COLUMNS.join(",")).map_err(io_err)?;
    }
    let mut row = GeneratedRow::default();
    for i in 0..spec.devices {
        spec.device(i, &mut row);
        let platform = row.platform.expect("generated").as_str();
        let r = match format {
            Format::Csv => writeln!(out, "{},{platform},{},{},{}", row.user_id, row.token, row.locale, row.market),
            Format::Jsonl => writeln!(
                out,
                r#"{{"user_id":"{}","platform":"{platform}","token":"{}","locale":"{}","market":"{}"}}"#,
                row.user_id, row.token, row.locale, row.market
            ),
        };
        r.map_err(io_err)?;
    }
    out.into_inner().map_err(|e| io_err(e.into_error()))?.sync_all().map_err(io_err)?;
    std::fs::rename(&tmp, path).map_err(io_err)?;
    Ok(())
}

/// Generates the audience straight into shard snapshots in `out`, one shard
/// at a time per thread, through the same validation as `compile`. Memory
/// stays at a few shards' worth whatever the device count.
pub fn compile_generated(
    spec: &GenerateSpec,
    out: &Path,
    shards: u32,
    force: bool,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<CompileReport, AudienceError> {
    spec.check()?;
    if shards == 0 {
        return Err(AudienceError::Invalid("shard count must be at least 1".into()));
    }
    let writer = AudienceWriter::create(out, force)?;
    let next = AtomicU32::new(0);
    let done = AtomicU64::new(0);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(shards as usize);
    type Rejections = Vec<(RejectReason, String, u64)>;
    let results: Vec<Result<Rejections, AudienceError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut rejected = Vec::new();
                    let mut row = GeneratedRow::default();
                    loop {
                        let shard = next.fetch_add(1, Ordering::Relaxed);
                        if shard >= shards {
                            return Ok(rejected);
                        }
                        let mut builder = ShardBuilder::new(shard, shards);
                        let mut i = u64::from(shard);
                        while i < spec.devices {
                            spec.device(i, &mut row);
                            let platform = row.platform.expect("generated").as_str();
                            let checked = input::validate(
                                Some(row.user_id.as_str().into()),
                                Some(platform.into()),
                                Some(row.token.as_str().into()),
                                Some(row.locale.into()),
                                Some(row.market.into()),
                            )
                            .and_then(|r| builder.push(&r, i + 1));
                            if let Err((reason, detail)) = checked {
                                rejected.push((reason, detail, i + 1));
                            }
                            i += u64::from(shards);
                        }
                        let n = builder.devices() as u64;
                        writer.add(&builder.finish())?;
                        progress(done.fetch_add(n, Ordering::Relaxed) + n);
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("generator thread")).collect()
    });
    let mut report = CompileReport { lines: spec.devices, ..CompileReport::default() };
    for result in results {
        for (reason, _, _) in result? {
            *report.rejected.entry(reason).or_default() += 1;
        }
    }
    // The generator only produces valid, unique devices; a rejection here is a
    // bug in it, and the drill's exactly-once accounting must not start from
    // a silently smaller audience.
    if report.rejected_total() > 0 {
        return Err(AudienceError::Invalid(format!("the generator produced invalid rows: {:?}", report.rejected)));
    }
    report.accepted = spec.devices;
    let source = SourceInfo { path: spec.describe(), lines: spec.devices, accepted: spec.devices, rejected: 0 };
    report.manifest = Some(writer.commit(vec![source], Default::default())?);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_valid_deterministic_and_distributed() {
        let spec = GenerateSpec { devices: 20_000, ios_share: 0.6, markets: 7, seed: 42 };
        let mut row = GeneratedRow::default();
        let mut ios = 0;
        let mut markets = std::collections::BTreeSet::new();
        let mut tokens = std::collections::HashSet::new();
        for i in 0..spec.devices {
            spec.device(i, &mut row);
            let r = input::validate(
                Some(row.user_id.as_str().into()),
                Some(row.platform.unwrap().as_str().into()),
                Some(row.token.as_str().into()),
                Some(row.locale.into()),
                Some(row.market.into()),
            )
            .unwrap();
            if r.platform == Platform::Ios {
                ios += 1;
                assert_eq!(r.token.len(), 64);
            } else {
                assert_eq!(r.token.len(), 163);
            }
            markets.insert(row.market);
            assert!(tokens.insert(row.token.clone()), "duplicate token at {i}");
        }
        assert!((11_400..12_600).contains(&ios), "{ios}");
        assert_eq!(markets.len(), 7);
        let mut again = GeneratedRow::default();
        spec.device(123, &mut row);
        spec.device(123, &mut again);
        assert_eq!(row.token, again.token);
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert!(GenerateSpec { ios_share: 1.5, ..GenerateSpec::default() }.check().is_err());
        assert!(GenerateSpec { markets: 13, ..GenerateSpec::default() }.check().is_err());
    }
}
