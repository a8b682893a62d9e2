//! Accumulates validated rows of one shard in compact columns, drops
//! duplicate tokens, and produces [`ShardData`] with devices sorted by market.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use xxhash_rust::xxh3::xxh3_128_with_seed;

use super::Platform;
use super::input::{RejectReason, Row};
use super::snapshot::{MarketRun, PlatformColumns, ShardData};
use super::token;

/// Hasher for keys that are already uniform 128-bit hashes.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

/// Strings interned to `u16` indices.
#[derive(Debug, Default)]
struct Interner {
    strings: Vec<String>,
    index: HashMap<String, u16>,
}

impl Interner {
    fn get(&mut self, s: &str) -> Option<u16> {
        if let Some(i) = self.index.get(s) {
            return Some(*i);
        }
        let i = u16::try_from(self.strings.len()).ok()?;
        self.strings.push(s.to_owned());
        self.index.insert(s.to_owned(), i);
        Some(i)
    }
}

#[derive(Debug, Default)]
struct Columns {
    /// APNs: 32 bytes per device; FCM: encoded entries.
    tokens: Vec<u8>,
    token_offsets: Vec<u32>,
    locales: Vec<u16>,
    markets: Vec<u16>,
    user_offsets: Vec<u32>,
    user_arena: Vec<u8>,
}

impl Columns {
    fn len(&self) -> usize {
        self.locales.len()
    }
}

/// One shard under construction.
#[derive(Debug)]
pub struct ShardBuilder {
    index: u32,
    count: u32,
    locales: Interner,
    markets: Interner,
    ios: Columns,
    android: Columns,
    /// Hash of (platform, token) -> line of its first occurrence. A 128-bit
    /// hash makes an accidental collision between different tokens
    /// practically impossible, so equal hashes are treated as equal tokens
    /// without keeping the tokens themselves in the map.
    seen: HashMap<u128, u64, BuildHasherDefault<PassThrough>>,
}

impl ShardBuilder {
    /// Starts shard `index` of `count`.
    pub fn new(index: u32, count: u32) -> Self {
        let mut android = Columns::default();
        android.token_offsets.push(0);
        let mut ios = Columns::default();
        ios.user_offsets.push(0);
        android.user_offsets.push(0);
        Self { index, count, locales: Interner::default(), markets: Interner::default(), ios, android, seen: HashMap::default() }
    }

    /// Number of devices accepted so far.
    pub fn devices(&self) -> usize {
        self.ios.len() + self.android.len()
    }

    /// Adds a validated row read from `line`. A token seen before in this
    /// shard is refused with the line of its first occurrence.
    pub fn push(&mut self, row: &Row<'_>, line: u64) -> Result<(), (RejectReason, String)> {
        let apns = match row.platform {
            Platform::Ios => Some(token::parse_apns(&row.token).map_err(|e| (e.into(), e.to_string()))?),
            Platform::Android => None,
        };
        let key = match &apns {
            Some(raw) => xxh3_128_with_seed(raw, 0),
            None => xxh3_128_with_seed(row.token.as_bytes(), 1),
        };
        if let Some(first) = self.seen.get(&key) {
            return Err((RejectReason::DuplicateToken, format!("duplicate token, first seen on line {first}")));
        }
        let too_many = || (RejectReason::InvalidField, "more than 65,535 distinct locales or markets in one shard".to_owned());
        let locale = self.locales.get(&row.locale).ok_or_else(too_many)?;
        let market = self.markets.get(&row.market).ok_or_else(too_many)?;
        self.seen.insert(key, line);

        let cols = match row.platform {
            Platform::Ios => &mut self.ios,
            Platform::Android => &mut self.android,
        };
        match apns {
            Some(raw) => cols.tokens.extend_from_slice(&raw),
            None => {
                token::encode_fcm(&row.token, &mut cols.tokens);
                cols.token_offsets.push(offset(cols.tokens.len()));
            }
        }
        cols.locales.push(locale);
        cols.markets.push(market);
        cols.user_arena.extend_from_slice(row.user_id.as_bytes());
        cols.user_offsets.push(offset(cols.user_arena.len()));
        Ok(())
    }

    /// Sorts each platform's devices by market (keeping input order within a
    /// market) and returns the shard's data, ready to write.
    pub fn finish(self) -> ShardData {
        let Self { index, count, locales, markets, ios, android, .. } = self;
        let mut runs = Vec::new();
        let ios = sort_by_market(Platform::Ios, ios, &markets.strings, &mut runs);
        let android = sort_by_market(Platform::Android, android, &markets.strings, &mut runs);
        ShardData { index, count, locales: locales.strings, markets: markets.strings, runs, ios, android }
    }
}

fn offset(len: usize) -> u32 {
    // A shard is bounded well below 4 GiB by the shard count chosen for it.
    u32::try_from(len).expect("a shard column is under 4 GiB; use more shards")
}

fn sort_by_market(platform: Platform, cols: Columns, names: &[String], runs: &mut Vec<MarketRun>) -> PlatformColumns {
    let n = cols.len();
    let mut order: Vec<u32> = (0..n as u32).collect();
    // Runs in market-name order so shard files are deterministic.
    order.sort_by(|a, b| names[usize::from(cols.markets[*a as usize])].cmp(&names[usize::from(cols.markets[*b as usize])]));
    let mut out = PlatformColumns {
        tokens: Vec::with_capacity(cols.tokens.len()),
        token_offsets: Vec::new(),
        locales: Vec::with_capacity(n),
        user_offsets: Vec::with_capacity(n + 1),
        user_arena: Vec::with_capacity(cols.user_arena.len()),
    };
    if platform == Platform::Android {
        out.token_offsets.reserve(n + 1);
        out.token_offsets.push(0);
    }
    out.user_offsets.push(0);
    for (pos, &i) in order.iter().enumerate() {
        let i = i as usize;
        match platform {
            Platform::Ios => out.tokens.extend_from_slice(&cols.tokens[i * 32..i * 32 + 32]),
            Platform::Android => {
                let range = cols.token_offsets[i] as usize..cols.token_offsets[i + 1] as usize;
                out.tokens.extend_from_slice(&cols.tokens[range]);
                out.token_offsets.push(offset(out.tokens.len()));
            }
        }
        out.locales.push(cols.locales[i]);
        out.user_arena.extend_from_slice(&cols.user_arena[cols.user_offsets[i] as usize..cols.user_offsets[i + 1] as usize]);
        out.user_offsets.push(offset(out.user_arena.len()));
        let market = cols.markets[i];
        match runs.last_mut() {
            Some(run) if run.platform == platform && run.market == market => run.end = pos as u32 + 1,
            _ => runs.push(MarketRun { platform, market, start: pos as u32, end: pos as u32 + 1 }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audience::snapshot::Shard;

    fn row<'a>(user: &'a str, platform: Platform, token: &'a str, locale: &'a str, market: &'a str) -> Row<'a> {
        Row { user_id: user.into(), platform, token: token.into(), locale: locale.into(), market: market.into() }
    }

    #[test]
    fn duplicates_are_refused_with_the_first_line_and_apns_case_is_ignored() {
        let mut b = ShardBuilder::new(0, 1);
        let t = "ab".repeat(32);
        b.push(&row("1", Platform::Ios, &t, "en-US", "US"), 10).unwrap();
        let upper = t.to_uppercase();
        let err = b.push(&row("2", Platform::Ios, &upper, "en-US", "US"), 11).unwrap_err();
        assert_eq!(err.0, RejectReason::DuplicateToken);
        assert!(err.1.contains("line 10"), "{}", err.1);
        // The same text as an FCM token is a different device.
        b.push(&row("3", Platform::Android, &t, "en-US", "US"), 12).unwrap();
        assert_eq!(b.devices(), 2);
    }

    #[test]
    fn written_shard_loads_back_sorted_by_market() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = ShardBuilder::new(3, 8);
        let fcm = |n: u8| format!("tok{n}:APA91b{}", "x".repeat(n as usize));
        let apns = |n: u8| format!("{n:02x}").repeat(32);
        b.push(&row("u1", Platform::Ios, &apns(1), "pt-BR", "BR"), 1).unwrap();
        b.push(&row("u2", Platform::Android, &fcm(2), "en-US", "US"), 2).unwrap();
        b.push(&row("u3", Platform::Ios, &apns(3), "en-US", "US"), 3).unwrap();
        b.push(&row("u4", Platform::Android, &fcm(4), "pt-BR", "BR"), 4).unwrap();
        b.push(&row("u5", Platform::Ios, &apns(5), "es-US", "US"), 5).unwrap();
        let data = b.finish();
        let path = dir.path().join("s.kshard");
        let written = data.write(&path).unwrap();
        let shard = Shard::load(&path).unwrap();
        assert_eq!(shard.checksum(), written.checksum);
        assert_eq!((shard.index(), shard.shard_count()), (3, 8));
        assert_eq!(shard.len(Platform::Ios), 3);
        assert_eq!(shard.len(Platform::Android), 2);
        let markets: Vec<_> =
            shard.runs().iter().map(|r| (r.platform, shard.markets()[usize::from(r.market)].as_str(), r.start, r.end)).collect();
        assert_eq!(
            markets,
            vec![
                (Platform::Ios, "BR", 0, 1),
                (Platform::Ios, "US", 1, 3),
                (Platform::Android, "BR", 0, 1),
                (Platform::Android, "US", 1, 2)
            ]
        );
        let users = shard.user_ids().unwrap();
        let mut buf = Vec::new();
        assert_eq!(users.get(Platform::Ios, 0), "u1");
        assert_eq!(shard.token_text(Platform::Ios, 2, &mut buf), apns(5));
        assert_eq!(users.get(Platform::Ios, 2), "u5");
        assert_eq!(shard.locales()[usize::from(shard.locale(Platform::Ios, 2))], "es-US");
        assert_eq!(shard.token_text(Platform::Android, 0, &mut buf), fcm(4));
        assert_eq!(users.get(Platform::Android, 1), "u2");
    }

    #[test]
    fn a_flipped_byte_is_caught_by_the_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = ShardBuilder::new(0, 1);
        b.push(&row("u1", Platform::Ios, &"cd".repeat(32), "en-US", "US"), 1).unwrap();
        let path = dir.path().join("s.kshard");
        b.finish().write(&path).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[200] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let err = Shard::load(&path).unwrap_err().to_string();
        assert!(err.contains("checksum") && err.contains("s.kshard"), "{err}");
        std::fs::write(&path, b"not a shard at all, just some text that is long enough for a header....").unwrap();
        assert!(Shard::load(&path).unwrap_err().to_string().contains("bad magic"));
    }
}
