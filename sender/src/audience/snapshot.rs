//! The shard snapshot: a versioned, checksummed binary file per shard, and
//! its in-memory form.
//!
//! A shard file has two regions. The *hot* region holds what sending needs
//! (tokens, locale per device, market runs) and is loaded into one buffer by
//! one read; devices are then addressed by index into that buffer, so there
//! is no heap object per device. The *cold* region holds the user ids, which
//! only the prune report needs; it stays on disk until asked for. Each region
//! ends with an xxh3-64 checksum of its bytes.
//!
//! Layout (little-endian):
//!
//! ```text
//! header   64 bytes: magic "KOSHARD\0", version u32, shard index u32,
//!          shard count u32, n_ios u32, n_android u32, reserved u32,
//!          hot_len u64, cold_len u64, reserved [u8; 16]
//! hot      sections: LOCALES, MARKETS, RUNS, IOS_TOKENS, IOS_LOCALES,
//!          FCM_OFFSETS, FCM_ARENA, FCM_LOCALES; then checksum u64
//! cold     sections: IOS_USER_OFFSETS, IOS_USER_ARENA, FCM_USER_OFFSETS,
//!          FCM_USER_ARENA; then checksum u64
//! section  tag u32, reserved u32, len u64, bytes, zero padding to 8
//! ```
//!
//! Devices of a platform are sorted by market inside a shard, so a market is
//! a contiguous run and a batch is just `(shard, platform, start..end)`.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::xxh3_64;

use super::Platform;
use super::token;

/// File magic.
pub const MAGIC: &[u8; 8] = b"KOSHARD\0";
/// Current format version. Readers refuse other versions.
pub const VERSION: u32 = 1;
const HEADER_LEN: usize = 64;

const LOCALES: u32 = 1;
const MARKETS: u32 = 2;
const RUNS: u32 = 3;
const IOS_TOKENS: u32 = 4;
const IOS_LOCALES: u32 = 5;
const FCM_OFFSETS: u32 = 6;
const FCM_ARENA: u32 = 7;
const FCM_LOCALES: u32 = 8;
const IOS_USER_OFFSETS: u32 = 16;
const IOS_USER_ARENA: u32 = 17;
const FCM_USER_OFFSETS: u32 = 18;
const FCM_USER_ARENA: u32 = 19;

/// A failure to read a shard file: the path and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The file could not be read or written.
    #[error("{path}: {source}", path = path.display())]
    Io {
        /// The shard file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The file is not a shard snapshot this version of Kickoff can read, or
    /// its bytes do not match its checksum.
    #[error("{path}: {message}", path = path.display())]
    Corrupt {
        /// The shard file.
        path: PathBuf,
        /// What check failed.
        message: String,
    },
}

/// A contiguous range of one platform's devices in one market.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarketRun {
    /// The platform section the range is in.
    pub platform: Platform,
    /// Index into the shard's market table.
    pub market: u16,
    /// First device index.
    pub start: u32,
    /// One past the last device index.
    pub end: u32,
}

/// Columns of one platform, in device order, ready to be written.
#[derive(Debug, Default)]
pub struct PlatformColumns {
    /// APNs: 32 bytes per device. FCM: the encoded token arena.
    pub tokens: Vec<u8>,
    /// FCM only: `n + 1` offsets into `tokens`.
    pub token_offsets: Vec<u32>,
    /// Index into the shard's locale table, per device.
    pub locales: Vec<u16>,
    /// `n + 1` offsets into `user_arena`.
    pub user_offsets: Vec<u32>,
    /// User ids, concatenated.
    pub user_arena: Vec<u8>,
}

/// Everything a shard file holds, in memory, as produced by the builder.
#[derive(Debug, Default)]
pub struct ShardData {
    /// Position of this shard in the audience.
    pub index: u32,
    /// Number of shards in the audience.
    pub count: u32,
    /// Locale strings; devices refer to them by index.
    pub locales: Vec<String>,
    /// Market codes; runs refer to them by index.
    pub markets: Vec<String>,
    /// Market runs of both platforms.
    pub runs: Vec<MarketRun>,
    /// iOS devices.
    pub ios: PlatformColumns,
    /// Android devices.
    pub android: PlatformColumns,
}

impl ShardData {
    /// Number of devices of a platform.
    pub fn len(&self, platform: Platform) -> usize {
        match platform {
            Platform::Ios => self.ios.locales.len(),
            Platform::Android => self.android.locales.len(),
        }
    }

    /// Writes the shard to `path` (created or truncated), synced to disk, and
    /// returns the checksums of its hot and cold regions and its size.
    pub fn write(&self, path: &Path) -> Result<WrittenShard, SnapshotError> {
        let io_err = |source| SnapshotError::Io { path: path.to_owned(), source };
        let mut hot = Vec::with_capacity(HEADER_LEN + self.ios.tokens.len() + self.android.tokens.len() + 4096);
        hot.resize(HEADER_LEN, 0);
        section(&mut hot, LOCALES, &string_table(&self.locales));
        section(&mut hot, MARKETS, &string_table(&self.markets));
        let mut runs = Vec::with_capacity(4 + self.runs.len() * 12);
        runs.extend_from_slice(&(self.runs.len() as u32).to_le_bytes());
        for r in &self.runs {
            runs.push(r.platform as u8);
            runs.push(0);
            runs.extend_from_slice(&r.market.to_le_bytes());
            runs.extend_from_slice(&r.start.to_le_bytes());
            runs.extend_from_slice(&r.end.to_le_bytes());
        }
        section(&mut hot, RUNS, &runs);
        section(&mut hot, IOS_TOKENS, &self.ios.tokens);
        section(&mut hot, IOS_LOCALES, &u16_bytes(&self.ios.locales));
        section(&mut hot, FCM_OFFSETS, &u32_bytes(&self.android.token_offsets));
        section(&mut hot, FCM_ARENA, &self.android.tokens);
        section(&mut hot, FCM_LOCALES, &u16_bytes(&self.android.locales));
        let hot_len = hot.len() + 8;

        let mut cold = Vec::new();
        section(&mut cold, IOS_USER_OFFSETS, &u32_bytes(&self.ios.user_offsets));
        section(&mut cold, IOS_USER_ARENA, &self.ios.user_arena);
        section(&mut cold, FCM_USER_OFFSETS, &u32_bytes(&self.android.user_offsets));
        section(&mut cold, FCM_USER_ARENA, &self.android.user_arena);
        let cold_len = cold.len() + 8;

        let header = &mut hot[..HEADER_LEN];
        header[..8].copy_from_slice(MAGIC);
        header[8..12].copy_from_slice(&VERSION.to_le_bytes());
        header[12..16].copy_from_slice(&self.index.to_le_bytes());
        header[16..20].copy_from_slice(&self.count.to_le_bytes());
        header[20..24].copy_from_slice(&(self.ios.locales.len() as u32).to_le_bytes());
        header[24..28].copy_from_slice(&(self.android.locales.len() as u32).to_le_bytes());
        header[32..40].copy_from_slice(&(hot_len as u64).to_le_bytes());
        header[40..48].copy_from_slice(&(cold_len as u64).to_le_bytes());
        let hot_sum = xxh3_64(&hot);
        hot.extend_from_slice(&hot_sum.to_le_bytes());
        let cold_sum = xxh3_64(&cold);
        cold.extend_from_slice(&cold_sum.to_le_bytes());

        let mut file = File::create(path).map_err(io_err)?;
        file.write_all(&hot).map_err(io_err)?;
        file.write_all(&cold).map_err(io_err)?;
        file.sync_all().map_err(io_err)?;
        Ok(WrittenShard { checksum: hot_sum, cold_checksum: cold_sum, bytes: (hot_len + cold_len) as u64 })
    }
}

/// What writing a shard produced.
#[derive(Debug, Clone, Copy)]
pub struct WrittenShard {
    /// Checksum of the hot region: identifies what this shard sends.
    pub checksum: u64,
    /// Checksum of the cold region.
    pub cold_checksum: u64,
    /// File size.
    pub bytes: u64,
}

fn section(out: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(bytes);
    out.resize(out.len().next_multiple_of(8), 0);
}

fn string_table(strings: &[String]) -> Vec<u8> {
    let mut out = (strings.len() as u32).to_le_bytes().to_vec();
    for s in strings {
        out.extend_from_slice(&(s.len() as u16).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    out
}

fn u16_bytes(v: &[u16]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn u32_bytes(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A shard loaded for sending: one buffer, addressed by device index.
#[derive(Debug)]
pub struct Shard {
    path: PathBuf,
    index: u32,
    count: u32,
    buf: Box<[u8]>,
    locales: Vec<String>,
    markets: Vec<String>,
    runs: Vec<MarketRun>,
    ios_tokens: Range<usize>,
    ios_locales: Range<usize>,
    fcm_offsets: Range<usize>,
    fcm_arena: Range<usize>,
    fcm_locales: Range<usize>,
    n_ios: u32,
    n_android: u32,
    checksum: u64,
    hot_len: u64,
    cold_len: u64,
}

/// Reads sections one after another, checking every bound.
struct Cursor<'a> {
    path: &'a Path,
    buf: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn section(&mut self, tag: u32) -> Result<Range<usize>, SnapshotError> {
        let head = self.buf.get(self.pos..self.pos + 16).ok_or_else(|| corrupt(self.path, "truncated section header"))?;
        let found = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
        if found != tag {
            return Err(corrupt(self.path, format!("expected section {tag}, found {found}")));
        }
        let len = usize::try_from(u64::from_le_bytes(head[8..16].try_into().expect("8 bytes")))
            .map_err(|_| corrupt(self.path, "section too large"))?;
        let start = self.pos + 16;
        let end = start.checked_add(len).filter(|e| *e <= self.buf.len()).ok_or_else(|| corrupt(self.path, "section runs past the end"))?;
        self.pos = end.next_multiple_of(8);
        Ok(start..end)
    }
}

fn corrupt(path: &Path, message: impl Into<String>) -> SnapshotError {
    SnapshotError::Corrupt { path: path.to_owned(), message: message.into() }
}

fn read_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn parse_strings(path: &Path, bytes: &[u8]) -> Result<Vec<String>, SnapshotError> {
    let bad = || corrupt(path, "bad string table");
    let count = bytes.get(..4).map(|b| u32::from_le_bytes(b.try_into().expect("4"))).ok_or_else(bad)? as usize;
    let mut pos = 4;
    let mut out = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let len = bytes.get(pos..pos + 2).map(|b| u16::from_le_bytes([b[0], b[1]])).ok_or_else(bad)? as usize;
        let s = bytes.get(pos + 2..pos + 2 + len).ok_or_else(bad)?;
        out.push(String::from_utf8(s.to_vec()).map_err(|_| bad())?);
        pos += 2 + len;
    }
    Ok(out)
}

impl Shard {
    /// Loads and verifies a shard file's hot region.
    pub fn load(path: &Path) -> Result<Self, SnapshotError> {
        let io_err = |source| SnapshotError::Io { path: path.to_owned(), source };
        let mut file = File::open(path).map_err(io_err)?;
        let mut header = [0u8; HEADER_LEN];
        file.read_exact(&mut header).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => corrupt(path, "shorter than a shard header"),
            _ => io_err(e),
        })?;
        if &header[..8] != MAGIC {
            return Err(corrupt(path, "not a Kickoff shard snapshot (bad magic)"));
        }
        let version = read_u32(&header, 8);
        if version != VERSION {
            return Err(corrupt(path, format!("snapshot format version {version}; this build reads version {VERSION}")));
        }
        let hot_len = u64::from_le_bytes(header[32..40].try_into().expect("8"));
        let cold_len = u64::from_le_bytes(header[40..48].try_into().expect("8"));
        let file_len = file.metadata().map_err(io_err)?.len();
        if hot_len < (HEADER_LEN + 8) as u64 || hot_len.checked_add(cold_len) != Some(file_len) {
            return Err(corrupt(path, format!("region sizes {hot_len}+{cold_len} do not match the file size {file_len}")));
        }
        let hot_len_usize = usize::try_from(hot_len).map_err(|_| corrupt(path, "too large"))?;
        let mut buf = vec![0u8; hot_len_usize].into_boxed_slice();
        buf[..HEADER_LEN].copy_from_slice(&header);
        file.read_exact(&mut buf[HEADER_LEN..]).map_err(io_err)?;
        let body_len = hot_len_usize - 8;
        let stored = u64::from_le_bytes(buf[body_len..].try_into().expect("8"));
        let checksum = xxh3_64(&buf[..body_len]);
        if stored != checksum {
            return Err(corrupt(path, format!("hot region checksum {checksum:016x} does not match the stored {stored:016x}")));
        }

        let n_ios = read_u32(&buf, 20);
        let n_android = read_u32(&buf, 24);
        let mut cur = Cursor { path, buf: &buf[..body_len], pos: HEADER_LEN };
        let locales = parse_strings(path, &buf[cur.section(LOCALES)?])?;
        let markets = parse_strings(path, &buf[cur.section(MARKETS)?])?;
        let runs_range = cur.section(RUNS)?;
        let ios_tokens = cur.section(IOS_TOKENS)?;
        let ios_locales = cur.section(IOS_LOCALES)?;
        let fcm_offsets = cur.section(FCM_OFFSETS)?;
        let fcm_arena = cur.section(FCM_ARENA)?;
        let fcm_locales = cur.section(FCM_LOCALES)?;

        let runs = parse_runs(path, &buf[runs_range])?;
        let shard = Self {
            path: path.to_owned(),
            index: read_u32(&buf, 12),
            count: read_u32(&buf, 16),
            locales,
            markets,
            runs,
            ios_tokens,
            ios_locales,
            fcm_offsets,
            fcm_arena,
            fcm_locales,
            n_ios,
            n_android,
            checksum,
            hot_len,
            cold_len,
            buf,
        };
        shard.check_structure()?;
        Ok(shard)
    }

    /// Checks every length, offset and index, so that later accesses by
    /// device index cannot go out of bounds even for a file written by a
    /// buggy tool that still carries a valid checksum.
    fn check_structure(&self) -> Result<(), SnapshotError> {
        let p = &self.path;
        let (ni, na) = (self.n_ios as usize, self.n_android as usize);
        if self.ios_tokens.len() != ni * 32 || self.ios_locales.len() != ni * 2 {
            return Err(corrupt(p, "iOS section sizes do not match the device count"));
        }
        if self.fcm_offsets.len() != (na + 1) * 4 || self.fcm_locales.len() != na * 2 {
            return Err(corrupt(p, "Android section sizes do not match the device count"));
        }
        let arena_len = self.fcm_arena.len();
        let mut prev = self.fcm_offset(0) as usize;
        if prev != 0 {
            return Err(corrupt(p, "FCM offsets do not start at 0"));
        }
        let arena = &self.buf[self.fcm_arena.clone()];
        for i in 0..na {
            let next = self.fcm_offset(i + 1) as usize;
            if next < prev + token::FCM_HEADER_LEN || next > arena_len || token::fcm_encoded_len(&arena[prev..]) != next - prev {
                return Err(corrupt(p, format!("FCM token {i} has a bad offset or length")));
            }
            prev = next;
        }
        if prev != arena_len {
            return Err(corrupt(p, "FCM arena has trailing bytes"));
        }
        let n_locales = self.locales.len();
        for platform in Platform::ALL {
            for i in 0..self.len(platform) {
                if usize::from(self.locale(platform, i)) >= n_locales {
                    return Err(corrupt(p, format!("{platform} device {i} has a locale index out of range")));
                }
            }
            let mut next = 0;
            for r in self.runs.iter().filter(|r| r.platform == platform) {
                if r.start != next || r.end < r.start || usize::from(r.market) >= self.markets.len() {
                    return Err(corrupt(p, "market runs do not tile the devices"));
                }
                next = r.end;
            }
            if next as usize != self.len(platform) {
                return Err(corrupt(p, "market runs do not cover every device"));
            }
        }
        Ok(())
    }

    #[inline]
    fn fcm_offset(&self, i: usize) -> u32 {
        read_u32(&self.buf, self.fcm_offsets.start + i * 4)
    }

    /// The file this shard came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Position of this shard in its audience.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Number of shards in the audience this shard belongs to.
    pub fn shard_count(&self) -> u32 {
        self.count
    }

    /// Checksum of the hot region (what this shard sends).
    pub fn checksum(&self) -> u64 {
        self.checksum
    }

    /// Bytes held in memory for this shard.
    pub fn resident_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Number of devices of a platform.
    #[inline]
    pub fn len(&self, platform: Platform) -> usize {
        match platform {
            Platform::Ios => self.n_ios as usize,
            Platform::Android => self.n_android as usize,
        }
    }

    /// Number of devices of both platforms.
    pub fn devices(&self) -> usize {
        self.n_ios as usize + self.n_android as usize
    }

    /// The locale table.
    pub fn locales(&self) -> &[String] {
        &self.locales
    }

    /// The market table.
    pub fn markets(&self) -> &[String] {
        &self.markets
    }

    /// Market runs, per platform in device order.
    pub fn runs(&self) -> &[MarketRun] {
        &self.runs
    }

    /// The raw APNs token of iOS device `i`.
    #[inline]
    pub fn ios_token(&self, i: usize) -> &[u8; 32] {
        let at = self.ios_tokens.start + i * 32;
        self.buf[at..at + 32].try_into().expect("32 bytes")
    }

    /// The encoded FCM token of Android device `i` (see [`token::decode_fcm`]).
    #[inline]
    pub fn fcm_entry(&self, i: usize) -> &[u8] {
        let start = self.fcm_arena.start + self.fcm_offset(i) as usize;
        let end = self.fcm_arena.start + self.fcm_offset(i + 1) as usize;
        &self.buf[start..end]
    }

    /// Writes device `i`'s token as text into `out` and returns it.
    pub fn token_text<'a>(&self, platform: Platform, i: usize, out: &'a mut Vec<u8>) -> &'a str {
        match platform {
            Platform::Ios => {
                let mut hex = [0u8; 64];
                token::apns_hex(self.ios_token(i), &mut hex);
                out.clear();
                out.extend_from_slice(&hex);
                std::str::from_utf8(out).expect("hex is ASCII")
            }
            Platform::Android => token::decode_fcm(self.fcm_entry(i), out),
        }
    }

    /// Locale index of device `i`.
    #[inline]
    pub fn locale(&self, platform: Platform, i: usize) -> u16 {
        let range = match platform {
            Platform::Ios => &self.ios_locales,
            Platform::Android => &self.fcm_locales,
        };
        let at = range.start + i * 2;
        u16::from_le_bytes([self.buf[at], self.buf[at + 1]])
    }

    /// Reads and verifies the cold region: the user ids.
    pub fn user_ids(&self) -> Result<UserIds, SnapshotError> {
        let io_err = |source| SnapshotError::Io { path: self.path.clone(), source };
        let mut file = File::open(&self.path).map_err(io_err)?;
        file.seek(SeekFrom::Start(self.hot_len)).map_err(io_err)?;
        let len = usize::try_from(self.cold_len).map_err(|_| corrupt(&self.path, "too large"))?;
        let mut buf = vec![0u8; len];
        file.read_exact(&mut buf).map_err(io_err)?;
        let body = len.checked_sub(8).ok_or_else(|| corrupt(&self.path, "cold region too short"))?;
        if xxh3_64(&buf[..body]) != u64::from_le_bytes(buf[body..].try_into().expect("8")) {
            return Err(corrupt(&self.path, "cold region (user ids) checksum mismatch"));
        }
        let mut cur = Cursor { path: &self.path, buf: &buf[..body], pos: 0 };
        let ios = (cur.section(IOS_USER_OFFSETS)?, cur.section(IOS_USER_ARENA)?);
        let fcm = (cur.section(FCM_USER_OFFSETS)?, cur.section(FCM_USER_ARENA)?);
        let column = |(offsets, arena): (Range<usize>, Range<usize>), n: usize| -> Result<StrColumn, SnapshotError> {
            let offsets: Vec<u32> = buf[offsets].chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().expect("4"))).collect();
            let arena = buf[arena].to_vec();
            let sorted = offsets.windows(2).all(|w| w[0] <= w[1]);
            if offsets.len() != n + 1 || !sorted || offsets.last().is_some_and(|l| *l as usize != arena.len()) {
                return Err(corrupt(&self.path, "bad user id column"));
            }
            std::str::from_utf8(&arena).map_err(|_| corrupt(&self.path, "user ids are not UTF-8"))?;
            Ok(StrColumn { offsets, arena })
        };
        Ok(UserIds { ios: column(ios, self.n_ios as usize)?, android: column(fcm, self.n_android as usize)? })
    }
}

fn parse_runs(path: &Path, bytes: &[u8]) -> Result<Vec<MarketRun>, SnapshotError> {
    let bad = || corrupt(path, "bad market run table");
    let count = bytes.get(..4).map(|b| u32::from_le_bytes(b.try_into().expect("4"))).ok_or_else(bad)? as usize;
    if bytes.len() != 4 + count * 12 {
        return Err(bad());
    }
    bytes[4..]
        .chunks_exact(12)
        .map(|r| {
            let platform = Platform::from_u8(r[0]).ok_or_else(bad)?;
            Ok(MarketRun { platform, market: u16::from_le_bytes([r[2], r[3]]), start: read_u32(r, 4), end: read_u32(r, 8) })
        })
        .collect()
}

/// Strings addressed by index.
#[derive(Debug)]
pub struct StrColumn {
    offsets: Vec<u32>,
    arena: Vec<u8>,
}

impl StrColumn {
    /// String `i`.
    pub fn get(&self, i: usize) -> &str {
        let bytes = &self.arena[self.offsets[i] as usize..self.offsets[i + 1] as usize];
        // Checked as a whole when loaded; offsets are only produced at char boundaries.
        std::str::from_utf8(bytes).unwrap_or("")
    }
}

/// The user ids of a shard, per platform, by device index.
#[derive(Debug)]
pub struct UserIds {
    ios: StrColumn,
    android: StrColumn,
}

impl UserIds {
    /// User id of a device.
    pub fn get(&self, platform: Platform, i: usize) -> &str {
        match platform {
            Platform::Ios => self.ios.get(i),
            Platform::Android => self.android.get(i),
        }
    }
}
