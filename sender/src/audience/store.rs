//! An audience on disk: a directory of shard files plus `manifest.json`,
//! written atomically, and its loaded form held by the workers.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use xxhash_rust::xxh3::Xxh3;

use super::snapshot::{Shard, ShardData};
use super::{AudienceError, Platform};

/// Name of the manifest file inside an audience directory.
pub const MANIFEST: &str = "manifest.json";
const FORMAT: &str = "kickoff-audience";

/// One shard as listed in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShardInfo {
    /// File name inside the audience directory.
    pub file: String,
    /// iOS devices.
    pub ios: u64,
    /// Android devices.
    pub android: u64,
    /// Hot-region checksum, hex.
    pub checksum: String,
    /// Cold-region (user ids) checksum, hex.
    pub cold_checksum: String,
    /// File size in bytes.
    pub bytes: u64,
}

/// Where the devices came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SourceInfo {
    /// The input file, or a description of the generator.
    pub path: String,
    /// Lines read (header included).
    pub lines: u64,
    /// Rows kept.
    pub accepted: u64,
    /// Rows rejected.
    pub rejected: u64,
}

/// `manifest.json`: what an audience directory holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// Always `kickoff-audience`.
    pub format: String,
    /// Shard format version.
    pub version: u32,
    /// When it was compiled (RFC 3339).
    pub created_at: String,
    /// Inputs.
    pub sources: Vec<SourceInfo>,
    /// All devices.
    pub devices: u64,
    /// iOS devices.
    pub ios: u64,
    /// Android devices.
    pub android: u64,
    /// Devices per market.
    pub markets: BTreeMap<String, u64>,
    /// Devices per locale.
    pub locales: BTreeMap<String, u64>,
    /// Rejected rows per reason.
    pub rejected: BTreeMap<String, u64>,
    /// The shards, in index order.
    pub shards: Vec<ShardInfo>,
    /// Checksum over the shards' checksums: identifies the audience.
    pub checksum: String,
}

impl Manifest {
    /// Reads and checks `dir/manifest.json`.
    pub fn read(dir: &Path) -> Result<Self, AudienceError> {
        let path = dir.join(MANIFEST);
        let text = fs::read_to_string(&path).map_err(|source| AudienceError::Io { path: path.clone(), source })?;
        let manifest: Self =
            serde_json::from_str(&text).map_err(|e| AudienceError::Manifest { path: path.clone(), message: e.to_string() })?;
        if manifest.format != FORMAT || manifest.version != super::snapshot::VERSION {
            return Err(AudienceError::Manifest {
                path,
                message: format!("format {} v{} is not {FORMAT} v{}", manifest.format, manifest.version, super::snapshot::VERSION),
            });
        }
        Ok(manifest)
    }
}

/// Collects shards into a temporary directory next to the destination and
/// renames it into place at the end, so a reader never sees half an audience
/// and a failure leaves the previous one untouched.
#[derive(Debug)]
pub struct AudienceWriter {
    dest: PathBuf,
    tmp: PathBuf,
    force: bool,
    tally: Mutex<Tally>,
    committed: bool,
}

/// What the written shards add up to, filled in as shards arrive (possibly
/// from several threads, in any order).
#[derive(Debug, Default)]
struct Tally {
    shards: BTreeMap<u32, ShardInfo>,
    count: Option<u32>,
    markets: BTreeMap<String, u64>,
    locales: BTreeMap<String, u64>,
}

impl AudienceWriter {
    /// Prepares to write an audience to `dest`. Fails if `dest` exists and
    /// `force` is not set.
    pub fn create(dest: &Path, force: bool) -> Result<Self, AudienceError> {
        if dest.exists() && !force {
            return Err(AudienceError::OutputExists { path: dest.to_owned() });
        }
        let parent = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        fs::create_dir_all(parent).map_err(|source| AudienceError::Io { path: parent.to_owned(), source })?;
        let name = dest.file_name().map_or_else(|| "audience".into(), |n| n.to_string_lossy().into_owned());
        let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir(&tmp).map_err(|source| AudienceError::Io { path: tmp.clone(), source })?;
        Ok(Self { dest: dest.to_owned(), tmp, force, tally: Mutex::default(), committed: false })
    }

    /// Writes one shard. Shards may be added from several threads at once,
    /// in any order; [`commit`](Self::commit) checks that none is missing.
    pub fn add(&self, data: &ShardData) -> Result<(), AudienceError> {
        let file = format!("shard-{:04}.kshard", data.index);
        let written = data.write(&self.tmp.join(&file))?;
        let mut tally = self.tally.lock().expect("audience writer lock");
        tally.count = Some(data.count);
        for run in &data.runs {
            *tally.markets.entry(data.markets[usize::from(run.market)].clone()).or_default() += u64::from(run.end - run.start);
        }
        for cols in [&data.ios, &data.android] {
            for l in &cols.locales {
                *tally.locales.entry(data.locales[usize::from(*l)].clone()).or_default() += 1;
            }
        }
        let info = ShardInfo {
            file,
            ios: data.len(Platform::Ios) as u64,
            android: data.len(Platform::Android) as u64,
            checksum: format!("{:016x}", written.checksum),
            cold_checksum: format!("{:016x}", written.cold_checksum),
            bytes: written.bytes,
        };
        tally.shards.insert(data.index, info);
        Ok(())
    }

    /// Writes the manifest and moves the directory into place.
    pub fn commit(mut self, sources: Vec<SourceInfo>, rejected: BTreeMap<String, u64>) -> Result<Manifest, AudienceError> {
        let tally = std::mem::take(self.tally.get_mut().expect("audience writer lock"));
        let complete = tally.count.is_some_and(|n| tally.shards.keys().copied().eq(0..n));
        if !complete {
            return Err(AudienceError::Invalid(format!("internal: shards {:?} of {:?} were written", tally.shards.keys(), tally.count)));
        }
        let shards: Vec<ShardInfo> = tally.shards.into_values().collect();
        let mut sum = Xxh3::new();
        for s in &shards {
            sum.update(s.checksum.as_bytes());
        }
        let ios = shards.iter().map(|s| s.ios).sum();
        let android = shards.iter().map(|s| s.android).sum();
        let manifest = Manifest {
            format: FORMAT.to_owned(),
            version: super::snapshot::VERSION,
            created_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            sources,
            devices: ios + android,
            ios,
            android,
            markets: tally.markets,
            locales: tally.locales,
            rejected,
            shards,
            checksum: format!("{:016x}", sum.digest()),
        };
        let path = self.tmp.join(MANIFEST);
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| AudienceError::Io { path, source }
        };
        let json = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
        fs::write(&path, json).map_err(io(&path))?;
        fs::File::open(&path).and_then(|f| f.sync_all()).map_err(io(&path))?;
        if self.dest.exists() {
            if !self.force {
                return Err(AudienceError::OutputExists { path: self.dest.clone() });
            }
            let old = self.tmp.with_extension("old");
            fs::rename(&self.dest, &old).map_err(io(&self.dest))?;
            fs::rename(&self.tmp, &self.dest).map_err(io(&self.dest))?;
            let _ = fs::remove_dir_all(&old);
        } else {
            fs::rename(&self.tmp, &self.dest).map_err(io(&self.dest))?;
        }
        if let Some(parent) = self.dest.parent() {
            // Make the rename itself durable; not all filesystems allow it.
            let _ = fs::File::open(parent).and_then(|d| d.sync_all());
        }
        self.committed = true;
        Ok(manifest)
    }
}

impl Drop for AudienceWriter {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.tmp);
        }
    }
}

/// An audience loaded for sending: every shard in memory.
#[derive(Debug)]
pub struct Audience {
    dir: PathBuf,
    manifest: Manifest,
    shards: Vec<Shard>,
    checksum: u64,
}

impl Audience {
    /// Loads every shard of the audience in `dir`, in parallel, and checks
    /// each against the manifest.
    pub fn load(dir: &Path) -> Result<Self, AudienceError> {
        let manifest = Manifest::read(dir)?;
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(manifest.shards.len().max(1));
        let mut slots: Vec<Option<Result<Shard, AudienceError>>> = (0..manifest.shards.len()).map(|_| None).collect();
        std::thread::scope(|scope| {
            let chunk = manifest.shards.len().div_ceil(threads).max(1);
            for (infos, out) in manifest.shards.chunks(chunk).zip(slots.chunks_mut(chunk)) {
                scope.spawn(move || {
                    for (info, slot) in infos.iter().zip(out) {
                        *slot = Some(load_checked(dir, info));
                    }
                });
            }
        });
        let shards = slots.into_iter().map(|s| s.expect("every slot filled")).collect::<Result<Vec<_>, _>>()?;
        for (i, shard) in shards.iter().enumerate() {
            if shard.index() as usize != i || shard.shard_count() as usize != shards.len() {
                return Err(AudienceError::Manifest {
                    path: dir.join(MANIFEST),
                    message: format!(
                        "{} is shard {}/{}, listed as {i}/{}",
                        shard.path().display(),
                        shard.index(),
                        shard.shard_count(),
                        shards.len()
                    ),
                });
            }
        }
        let checksum = u64::from_str_radix(&manifest.checksum, 16)
            .map_err(|_| AudienceError::Manifest { path: dir.join(MANIFEST), message: "bad checksum".into() })?;
        Ok(Self { dir: dir.to_owned(), manifest, shards, checksum })
    }

    /// The directory it was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The loaded shards, in index order.
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// All devices.
    pub fn devices(&self) -> u64 {
        self.manifest.devices
    }

    /// The audience checksum (over the shard checksums).
    pub fn checksum(&self) -> u64 {
        self.checksum
    }

    /// Bytes of shard data held in memory.
    pub fn resident_bytes(&self) -> usize {
        self.shards.iter().map(Shard::resident_bytes).sum()
    }
}

fn load_checked(dir: &Path, info: &ShardInfo) -> Result<Shard, AudienceError> {
    let path = dir.join(&info.file);
    let shard = Shard::load(&path)?;
    let listed = u64::from_str_radix(&info.checksum, 16).ok();
    if listed != Some(shard.checksum())
        || shard.len(Platform::Ios) as u64 != info.ios
        || shard.len(Platform::Android) as u64 != info.android
    {
        return Err(AudienceError::Manifest {
            path: dir.join(MANIFEST),
            message: format!(
                "{} does not match its manifest entry (checksum {:016x}, listed {})",
                info.file,
                shard.checksum(),
                info.checksum
            ),
        });
    }
    Ok(shard)
}
