//! The campaign file: TOML in, a checked [`Campaign`] out, then the exact
//! payload bytes per locale and platform ([`render`]).
//!
//! Parsing and checking are separate steps: `toml` turns the text into raw
//! structs that keep the source position of each table, and [`Campaign::parse`]
//! then checks every rule, so each error names the file and the line.
//!
//! ```toml
//! id = "superbowl-2027"
//! mode = "alert"                      # or "silent" for rehearsals
//! default_locale = "en-US"
//! # max_rate = 50_000                 # a paced fire: devices per second at most
//! [fallback]                          # explicit: no guessing from language
//! "es-US" = "es-MX"
//! [target]
//! devices = 4_000_000
//! seconds = 5
//! [[markets]]
//! code = "US"
//! locales = ["en-US", "es-US"]
//! send_offset = "0s"
//! [messages."en-US"]
//! title = "Kickoff!"
//! body = "The game is on."
//! deep_link = "app://live"
//! [apns]
//! topic = "com.example.app"
//! [fcm]
//! priority = "high"
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;

use crate::audience::{Platform, input, token};
use crate::spans::line_of;

pub mod render;

pub use render::{Payloads, RenderedPayload};

/// Largest payload APNs and FCM accept, in bytes.
pub const MAX_PAYLOAD_BYTES: usize = 4096;
const MAX_ID_LEN: usize = 80;
const MAX_COLLAPSE_ID: usize = 64;
/// FCM keeps a message at most 28 days.
pub const MAX_FCM_TTL: Duration = Duration::from_secs(28 * 24 * 3600);
/// The longest `apns.expiration` taken: APNs stores a notification for a
/// limited time and does not publish a longer one; 30 days is past any
/// launch.
pub const MAX_APNS_EXPIRATION: Duration = Duration::from_secs(30 * 24 * 3600);
/// The latest a market may be sent after the press.
pub const MAX_SEND_OFFSET: Duration = crate::clock::MAX_SETTING;
/// The highest `max_rate`, devices per second.
pub const MAX_RATE: u64 = 100_000_000;

/// The longest delivery target, in seconds.
pub const MAX_TARGET_SECONDS: f64 = 86_400.0;

/// A campaign file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    /// The file could not be read.
    #[error("{path}: {source}", path = path.display())]
    Io {
        /// The campaign file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or has fields of the wrong type or name.
    #[error("{path}:{line}: {message}", path = path.display())]
    Syntax {
        /// The campaign file.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// The parser's explanation.
        message: String,
    },
    /// A value breaks a rule.
    #[error("{path}:{line}: {message}", path = path.display())]
    Invalid {
        /// The campaign file.
        path: PathBuf,
        /// 1-based line of the offending table or value.
        line: usize,
        /// What rule is broken.
        message: String,
    },
    /// A rendered payload is over the providers' size limit.
    #[error(
        "{path}:{line}: the {platform} payload for locale {locale} is {size} bytes; the limit is {limit} bytes",
        path = path.display()
    )]
    PayloadTooLarge {
        /// The campaign file.
        path: PathBuf,
        /// Line of the locale's message.
        line: usize,
        /// The locale.
        locale: String,
        /// The platform whose payload is too large.
        platform: Platform,
        /// Its size in bytes.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

/// Whether devices show the notification or receive it silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A visible notification.
    #[default]
    Alert,
    /// A rehearsal: APNs background push (priority 5), FCM data-only.
    Silent,
}

/// APNs `apns-push-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PushType {
    /// Visible notification.
    Alert,
    /// Content-available only.
    Background,
}

impl PushType {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alert => "alert",
            Self::Background => "background",
        }
    }
}

/// FCM `android.priority`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AndroidPriority {
    /// Delivered immediately, may wake the device.
    High,
    /// May be delayed to save battery.
    Normal,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCampaign {
    id: Spanned<String>,
    name: Option<String>,
    #[serde(default)]
    mode: Mode,
    default_locale: Option<Spanned<String>>,
    #[serde(default)]
    fallback: BTreeMap<String, Spanned<String>>,
    target: Option<Spanned<RawTarget>>,
    max_rate: Option<Spanned<i64>>,
    markets: Vec<Spanned<RawMarket>>,
    messages: BTreeMap<String, Spanned<RawMessage>>,
    apns: Spanned<RawApns>,
    #[serde(default)]
    fcm: Option<Spanned<RawFcm>>,
    #[serde(default)]
    test_recipients: Vec<Spanned<RawRecipient>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    devices: u64,
    seconds: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMarket {
    code: String,
    locales: Vec<String>,
    send_offset: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMessage {
    title: Option<String>,
    body: Option<String>,
    image_url: Option<String>,
    deep_link: Option<String>,
    #[serde(default)]
    data: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApns {
    topic: String,
    push_type: Option<PushType>,
    priority: Option<u8>,
    collapse_id: Option<String>,
    expiration: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFcm {
    priority: Option<AndroidPriority>,
    ttl: Option<String>,
    collapse_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecipient {
    name: String,
    platform: String,
    token: String,
    locale: String,
}

/// How many devices in how long.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Target {
    /// Devices to reach.
    pub devices: u64,
    /// Seconds to reach them in.
    pub seconds: f64,
}

/// A market and when it is sent to, relative to the fire.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Market {
    /// Market code, matching the audience's `market` column.
    pub code: String,
    /// Locales expected there; each must have a message or a fallback.
    pub locales: Vec<String>,
    /// Delay after the fire before this market is sent.
    #[serde(with = "duration_ms")]
    pub send_offset: Duration,
}

/// The text of one locale.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Message {
    /// Title line.
    pub title: String,
    /// Body text.
    pub body: String,
    /// Optional image (https).
    pub image_url: Option<String>,
    /// Optional link opened on tap.
    pub deep_link: Option<String>,
    /// Custom key/value data delivered with the notification.
    pub data: BTreeMap<String, String>,
    #[serde(skip)]
    line: usize,
}

/// APNs request options.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ApnsOptions {
    /// `apns-topic`: the app's bundle id.
    pub topic: String,
    /// `apns-push-type`.
    pub push_type: PushType,
    /// `apns-priority`: 10 (immediate) or 5 (power-considerate).
    pub priority: u8,
    /// `apns-collapse-id`: a redelivered notification replaces the first.
    /// The campaign id when the file sets none.
    pub collapse_id: Option<String>,
    /// `apns-expiration`, relative to the fire; `None` leaves it to APNs.
    #[serde(with = "opt_duration_ms")]
    pub expiration: Option<Duration>,
}

/// FCM v1 Android options.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FcmOptions {
    /// `android.priority`.
    pub priority: AndroidPriority,
    /// `android.ttl`.
    #[serde(with = "opt_duration_ms")]
    pub ttl: Option<Duration>,
    /// `android.collapse_key`.
    pub collapse_key: Option<String>,
}

/// A device of someone on the team, for the test-send.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TestRecipient {
    /// Who it is ("alice-iphone").
    pub name: String,
    /// Platform.
    pub platform: Platform,
    /// The device token.
    pub token: String,
    /// Locale whose message it gets.
    pub locale: String,
}

/// A checked campaign.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Campaign {
    /// Campaign id: the key of the fire ledger.
    pub id: String,
    /// Display name.
    pub name: Option<String>,
    /// Alert or silent.
    pub mode: Mode,
    /// Target.
    pub target: Option<Target>,
    /// Paced fire: devices handed off per second at most, both platforms
    /// together (the dispatch spaces the batches); `None`: as fast as the
    /// fleet goes.
    pub max_rate: Option<u64>,
    /// Markets sent to.
    pub markets: Vec<Market>,
    /// Messages per locale.
    pub messages: BTreeMap<String, Message>,
    /// Explicit locale fallbacks.
    pub fallback: BTreeMap<String, String>,
    /// Last resort for locales with neither a message nor a fallback.
    pub default_locale: Option<String>,
    /// APNs options.
    pub apns: ApnsOptions,
    /// FCM options.
    pub fcm: FcmOptions,
    /// Test-send recipients.
    pub test_recipients: Vec<TestRecipient>,
    #[serde(skip)]
    source: PathBuf,
    #[serde(skip)]
    hash: String,
}

mod duration_ms {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}

mod opt_duration_ms {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }
}

struct Checker<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Checker<'_> {
    fn err(&self, span: Range<usize>, message: impl Into<String>) -> CampaignError {
        CampaignError::Invalid { path: self.path.to_owned(), line: line_of(self.text, span.start), message: message.into() }
    }

    fn duration(&self, span: Range<usize>, field: &str, value: &str, max: Duration) -> Result<Duration, CampaignError> {
        crate::clock::parse_duration(value, max).map_err(|e| self.err(span, format!("`{field}` = {e}")))
    }
}

fn valid_locale(s: &str) -> bool {
    !s.is_empty() && s.len() <= 35 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl Campaign {
    /// Reads and checks a campaign file.
    pub fn load(path: &Path) -> Result<Self, CampaignError> {
        let text = std::fs::read_to_string(path).map_err(|source| CampaignError::Io { path: path.to_owned(), source })?;
        Self::parse(&text, path)
    }

    /// Checks campaign text; `path` is used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, CampaignError> {
        let raw: RawCampaign = toml::from_str(text).map_err(|e| CampaignError::Syntax {
            path: path.to_owned(),
            line: crate::spans::toml_error_line(text, &e),
            message: e.message().trim().to_owned(),
        })?;
        let c = Checker { path, text };

        let id = raw.id.get_ref().trim().to_owned();
        if id.is_empty() || id.len() > MAX_ID_LEN || !id.chars().all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.')) {
            return Err(c.err(raw.id.span(), format!("`id` must be 1-{MAX_ID_LEN} characters of [A-Za-z0-9._-]")));
        }

        let mut messages = BTreeMap::new();
        for (locale, m) in &raw.messages {
            let span = m.span();
            let m = m.get_ref();
            if !valid_locale(locale) {
                return Err(c.err(span, format!("message locale {locale:?} is not a locale tag like \"pt-BR\"")));
            }
            let title = m.title.clone().unwrap_or_default();
            let body = m.body.clone().unwrap_or_default();
            if raw.mode == Mode::Alert && (title.trim().is_empty() || body.trim().is_empty()) {
                return Err(c.err(span, format!("message {locale:?} needs a non-empty `title` and `body`")));
            }
            if let Some(url) = &m.image_url
                && !url.starts_with("https://")
            {
                return Err(c.err(span, format!("message {locale:?}: `image_url` must be an https:// URL")));
            }
            if m.deep_link.as_deref().is_some_and(|l| l.trim().is_empty()) {
                return Err(c.err(span, format!("message {locale:?}: `deep_link` is empty")));
            }
            for key in m.data.keys() {
                if reserved_data_key(key) {
                    return Err(c.err(span, format!("message {locale:?}: data key {key:?} is reserved by APNs or FCM")));
                }
            }
            messages.insert(
                locale.clone(),
                Message {
                    title,
                    body,
                    image_url: m.image_url.clone(),
                    deep_link: m.deep_link.clone(),
                    data: m.data.clone(),
                    line: line_of(text, span.start),
                },
            );
        }
        if messages.is_empty() {
            return Err(c.err(0..0, "the campaign has no [messages.<locale>] table"));
        }

        let mut fallback = BTreeMap::new();
        for (from, to) in &raw.fallback {
            if !messages.contains_key(to.get_ref()) && !raw.fallback.contains_key(to.get_ref()) {
                return Err(
                    c.err(to.span(), format!("fallback {from:?} -> {:?}: there is no message for {:?}", to.get_ref(), to.get_ref()))
                );
            }
            fallback.insert(from.clone(), to.get_ref().clone());
        }
        let default_locale = match &raw.default_locale {
            Some(d) if !messages.contains_key(d.get_ref()) => {
                return Err(c.err(d.span(), format!("`default_locale` {:?} has no message", d.get_ref())));
            }
            Some(d) => Some(d.get_ref().clone()),
            None => None,
        };

        let apns_span = raw.apns.span();
        let a = raw.apns.get_ref();
        if a.topic.trim().is_empty() {
            return Err(c.err(apns_span, "`apns.topic` (the app's bundle id) is empty"));
        }
        if !a.topic.trim().chars().all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '-' | '_')) {
            return Err(c.err(apns_span, "`apns.topic` must be a bundle id like \"com.example.app\""));
        }
        let push_type = if raw.mode == Mode::Silent { PushType::Background } else { a.push_type.unwrap_or(PushType::Alert) };
        let default_priority = if push_type == PushType::Background { 5 } else { 10 };
        let priority = if raw.mode == Mode::Silent { 5 } else { a.priority.unwrap_or(default_priority) };
        if !matches!(priority, 5 | 10) || (push_type == PushType::Background && priority != 5) {
            return Err(c.err(apns_span, format!("`apns.priority` {priority} is invalid (10 or 5; background pushes must use 5)")));
        }
        if a.collapse_id
            .as_ref()
            .is_some_and(|id| id.is_empty() || id.len() > MAX_COLLAPSE_ID || !id.bytes().all(|b| (0x20..0x7f).contains(&b)))
        {
            return Err(c.err(apns_span, format!("`apns.collapse_id` must be 1-{MAX_COLLAPSE_ID} printable ASCII characters")));
        }
        let expiration =
            a.expiration.as_deref().map(|e| c.duration(apns_span.clone(), "apns.expiration", e, MAX_APNS_EXPIRATION)).transpose()?;
        // A re-sent notification (a resumed fire, an in-doubt request sent
        // again) replaces the first on the device: the collapse id defaults
        // to the campaign id.
        let collapse_id = a.collapse_id.clone().unwrap_or_else(|| id[..id.len().min(MAX_COLLAPSE_ID)].to_owned());
        let apns = ApnsOptions { topic: a.topic.trim().to_owned(), push_type, priority, collapse_id: Some(collapse_id), expiration };

        let (fcm_span, f) = match &raw.fcm {
            Some(f) => (f.span(), f.get_ref()),
            None => (0..0, &RawFcm::default()),
        };
        let ttl = match f.ttl.as_deref().map(|t| crate::clock::parse_duration(t, MAX_FCM_TTL)) {
            None => None,
            Some(Ok(t)) => Some(t),
            Some(Err(crate::clock::DurationError::TooLong { .. })) => {
                return Err(c.err(fcm_span, "`fcm.ttl` is longer than FCM's maximum of 28 days"));
            }
            Some(Err(e)) => return Err(c.err(fcm_span, format!("`fcm.ttl` = {e}"))),
        };
        if f.collapse_key.as_ref().is_some_and(String::is_empty) {
            return Err(c.err(fcm_span, "`fcm.collapse_key` is empty"));
        }
        let fcm = FcmOptions { priority: f.priority.unwrap_or(AndroidPriority::High), ttl, collapse_key: f.collapse_key.clone() };

        let target = match &raw.target {
            Some(t) if t.get_ref().devices == 0 || t.get_ref().seconds.is_nan() || t.get_ref().seconds <= 0.0 => {
                return Err(c.err(t.span(), "`target.devices` and `target.seconds` must be positive"));
            }
            Some(t) if t.get_ref().seconds > MAX_TARGET_SECONDS => {
                return Err(c.err(t.span(), "`target.seconds` is over a day (86400)"));
            }
            Some(t) => Some(Target { devices: t.get_ref().devices, seconds: t.get_ref().seconds }),
            None => None,
        };
        let max_rate = match &raw.max_rate {
            Some(r) if !(1..=MAX_RATE as i64).contains(r.get_ref()) => {
                return Err(c.err(r.span(), format!("`max_rate` = {} must be between 1 and {MAX_RATE} devices per second", r.get_ref())));
            }
            Some(r) => Some(*r.get_ref() as u64),
            None => None,
        };

        let mut campaign = Self {
            id,
            name: raw.name.clone(),
            mode: raw.mode,
            target,
            max_rate,
            markets: Vec::new(),
            messages,
            fallback,
            default_locale,
            apns,
            fcm,
            test_recipients: Vec::new(),
            source: path.to_owned(),
            hash: String::new(),
        };
        // Fallback chains must end at a message; this also catches cycles.
        for from in campaign.fallback.keys() {
            if campaign.follow_fallback(from).is_none() {
                let span = raw.fallback[from].span();
                return Err(c.err(span, format!("fallback chain from {from:?} never reaches a message (a cycle?)")));
            }
        }

        if raw.markets.is_empty() {
            return Err(c.err(0..0, "the campaign has no [[markets]]"));
        }
        let mut codes = BTreeSet::new();
        for m in &raw.markets {
            let span = m.span();
            let m = m.get_ref();
            if m.code.trim().is_empty() || !codes.insert(m.code.clone()) {
                return Err(c.err(span, format!("market code {:?} is empty or listed twice", m.code)));
            }
            if m.locales.is_empty() {
                return Err(c.err(span, format!("market {:?} lists no locales", m.code)));
            }
            for l in &m.locales {
                if campaign.resolve_locale(l).is_none() {
                    return Err(c.err(
                        span,
                        format!("market {:?}: locale {l:?} has no message, no [fallback] entry and there is no default_locale", m.code),
                    ));
                }
            }
            let send_offset = match &m.send_offset {
                Some(o) => c.duration(span.clone(), "send_offset", o, MAX_SEND_OFFSET)?,
                None => Duration::ZERO,
            };
            campaign.markets.push(Market { code: m.code.clone(), locales: m.locales.clone(), send_offset });
        }

        let mut names = BTreeSet::new();
        for r in &raw.test_recipients {
            let span = r.span();
            let r = r.get_ref();
            if r.name.trim().is_empty() || !names.insert(r.name.clone()) {
                return Err(c.err(span, format!("test recipient name {:?} is empty or used twice", r.name)));
            }
            let platform = Platform::parse(&r.platform)
                .ok_or_else(|| c.err(span.clone(), format!("test recipient {:?}: unknown platform {:?}", r.name, r.platform)))?;
            let check = match platform {
                Platform::Ios => token::parse_apns(&r.token).map(drop),
                Platform::Android => token::validate_fcm(&r.token),
            };
            check.map_err(|e| c.err(span.clone(), format!("test recipient {:?}: {e} ({})", r.name, input::token_preview(&r.token))))?;
            if campaign.resolve_locale(&r.locale).is_none() {
                return Err(c.err(span, format!("test recipient {:?}: locale {:?} has no message", r.name, r.locale)));
            }
            campaign.test_recipients.push(TestRecipient {
                name: r.name.clone(),
                platform,
                token: r.token.clone(),
                locale: r.locale.clone(),
            });
        }

        // Render once now so an oversized payload fails at load time, with
        // the locale's line, rather than at warm-up.
        render::Payloads::render(&campaign)?;
        campaign.hash = campaign.compute_hash();
        Ok(campaign)
    }

    /// The file it came from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// SHA-256 of the campaign's canonical content, hex. Any change to what
    /// would be sent, or to whom, changes it; formatting and comments do not.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    fn compute_hash(&self) -> String {
        let canonical = serde_json::to_vec(self).expect("campaign serializes");
        let digest = Sha256::digest(&canonical);
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The same campaign rendered as a silent rehearsal (background APNs
    /// push at priority 5, FCM data-only). Its hash differs.
    pub fn into_silent(mut self) -> Self {
        self.mode = Mode::Silent;
        self.apns.push_type = PushType::Background;
        self.apns.priority = 5;
        self.hash = self.compute_hash();
        self
    }

    /// The same campaign under another id (drills use a fresh id per run).
    pub fn with_id(mut self, id: String) -> Self {
        self.id = id;
        self.hash = self.compute_hash();
        self
    }

    /// The locale whose message a device with `locale` gets: the locale
    /// itself, else its `[fallback]` chain, else `default_locale`. Nothing is
    /// inferred (no "pt-PT" from "pt-BR"): every substitution is written down.
    pub fn resolve_locale<'a>(&'a self, locale: &'a str) -> Option<&'a str> {
        self.follow_fallback(locale).or(self.default_locale.as_deref())
    }

    /// The locale itself or the end of its fallback chain, if that has a
    /// message; `None` for a dead end or a cycle.
    fn follow_fallback<'a>(&'a self, locale: &'a str) -> Option<&'a str> {
        let mut current = locale;
        for _ in 0..=self.fallback.len() {
            if self.messages.contains_key(current) {
                return Some(current);
            }
            current = self.fallback.get(current)?;
        }
        None
    }

    /// The market with this code, if the campaign sends to it.
    pub fn market(&self, code: &str) -> Option<&Market> {
        self.markets.iter().find(|m| m.code == code)
    }

    /// Line of a locale's message in the source file.
    pub fn message_line(&self, locale: &str) -> usize {
        self.messages.get(locale).map_or(0, |m| m.line)
    }
}

fn reserved_data_key(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    matches!(lower.as_str(), "aps" | "from" | "notification" | "message_type" | "collapse_key" | "deep_link" | "image_url")
        || lower.starts_with("google")
        || lower.starts_with("gcm")
}

/// The demo campaign compiled into the binary: covers every market and
/// locale of the synthetic audiences, so a drill needs no files.
pub const DEMO_CAMPAIGN: &str = include_str!("../../../runbooks/campaigns/demo.toml");

/// The demo campaign, parsed.
pub fn demo() -> Campaign {
    Campaign::parse(DEMO_CAMPAIGN, Path::new("runbooks/campaigns/demo.toml")).expect("the built-in demo campaign is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
id = "c-1"
default_locale = "en-US"

[[markets]]
code = "US"
locales = ["en-US"]

[messages."en-US"]
title = "Hi"
body = "There"

[apns]
topic = "com.example"
"#;

    fn parse(text: &str) -> Result<Campaign, CampaignError> {
        Campaign::parse(text, Path::new("c.toml"))
    }

    /// The error for `BASE` with `replace` swapped for `with`.
    fn error_of(replace: &str, with: &str) -> String {
        assert!(BASE.contains(replace), "{replace}");
        parse(&BASE.replacen(replace, with, 1)).expect_err(with).to_string()
    }

    #[test]
    fn the_base_campaign_is_valid_and_the_demo_too() {
        let c = parse(BASE).unwrap();
        assert_eq!(c.apns.priority, 10);
        assert_eq!(c.fcm.priority, AndroidPriority::High);
        demo();
    }

    #[test]
    fn syntax_and_unknown_fields_name_the_line() {
        let e = error_of("body = \"There\"", "body = \"There\"\ntitel = \"x\"");
        assert!(e.starts_with("c.toml:12:") && e.contains("titel"), "{e}");
        let e = error_of("id = \"c-1\"", "id = ");
        assert!(e.starts_with("c.toml:2:"), "{e}");
    }

    #[test]
    fn every_rule_has_a_precise_error() {
        let cases = [
            ("id = \"c-1\"", "id = \"has space\"", "c.toml:2:", "`id`"),
            ("title = \"Hi\"", "title = \"\"", "c.toml:9:", "non-empty `title`"),
            ("body = \"There\"", "body = \"There\"\nimage_url = \"http://x\"", "c.toml:9:", "https://"),
            ("body = \"There\"", "body = \"There\"\ndata = { aps = \"x\" }", "c.toml:9:", "reserved"),
            ("default_locale = \"en-US\"", "default_locale = \"de-DE\"", "c.toml:3:", "default_locale"),
            ("topic = \"com.example\"", "topic = \"com.example\"\npriority = 7", "c.toml:13:", "apns.priority"),
            ("topic = \"com.example\"", "topic = \"com.example\"\npush_type = \"background\"\npriority = 10", "c.toml:13:", "background"),
            ("topic = \"com.example\"", "topic = \"com.example\"\nexpiration = \"soon\"", "c.toml:13:", "duration"),
            ("topic = \"com.example\"", "topic = \"\"", "c.toml:13:", "apns.topic"),
            ("[apns]", "[fcm]\nttl = \"30d\"\n[apns]", "c.toml:13:", "28 days"),
            ("code = \"US\"", "code = \"US\"\nsend_offset = \"later\"", "c.toml:5:", "send_offset"),
            ("code = \"US\"", "code = \"US\"\nsend_offset = \"25h\"", "c.toml:5:", "longer than the 1day allowed"),
            (
                "topic = \"com.example\"",
                "topic = \"com.example\"\nexpiration = \"18446744073709551615s\"",
                "c.toml:13:",
                "longer than the 30days",
            ),
            ("[[markets]]", "[target]\ndevices = 5\nseconds = 1e300\n[[markets]]", "c.toml:5:", "over a day"),
            ("[[markets]]", "[fallback]\n\"a-A\" = \"b-B\"\n\"b-B\" = \"a-A\"\n[[markets]]", "c.toml:6:", "a cycle"),
            ("[[markets]]", "[fallback]\n\"pt-PT\" = \"pt-BR\"\n[[markets]]", "c.toml:6:", "no message for \"pt-BR\""),
            ("[[markets]]", "[target]\ndevices = 0\nseconds = 5\n[[markets]]", "c.toml:5:", "positive"),
            ("[[markets]]", "max_rate = 0\n[[markets]]", "c.toml:5:", "`max_rate` = 0 must be between 1"),
            (
                "[apns]",
                "[[test_recipients]]\nname = \"me\"\nplatform = \"ios\"\ntoken = \"abc\"\nlocale = \"en-US\"\n[apns]",
                "c.toml:13:",
                "64 hexadecimal",
            ),
            (
                "[apns]",
                "[[test_recipients]]\nname = \"me\"\nplatform = \"pager\"\ntoken = \"abc\"\nlocale = \"en-US\"\n[apns]",
                "c.toml:13:",
                "unknown platform",
            ),
        ];
        let mut wrong = Vec::new();
        for (replace, with, at, says) in cases {
            let e = error_of(replace, with);
            if !(e.starts_with(at) && e.contains(says)) {
                wrong.push(format!("{with:?}: expected {at} .. {says}, got {e}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
        let no_default = BASE.replacen("default_locale = \"en-US\"\n", "", 1).replacen("[\"en-US\"]", "[\"en-US\", \"fr-FR\"]", 1);
        let e = parse(&no_default).unwrap_err().to_string();
        assert!(e.starts_with("c.toml:4:") && e.contains("locale \"fr-FR\" has no message"), "{e}");
    }

    #[test]
    fn oversized_payload_names_locale_platform_and_size() {
        let long = "x".repeat(4100);
        let e = error_of("body = \"There\"", &format!("body = \"{long}\""));
        assert!(e.starts_with("c.toml:9:"), "{e}");
        assert!(e.contains("ios payload for locale en-US is 41") && e.contains("limit is 4096 bytes"), "{e}");
        // Just under the limit on APNs: FCM carries more framing and fails first.
        let apns_overhead = parse(BASE).unwrap();
        let p = Payloads::render(&apns_overhead).unwrap();
        let room = MAX_PAYLOAD_BYTES - p.get(Platform::Ios, 0).size;
        let fits = format!("body = \"There{}\"", "y".repeat(room));
        let c = parse(&BASE.replacen("body = \"There\"", &fits, 1));
        match c {
            Err(CampaignError::PayloadTooLarge { platform, size, .. }) => assert!(platform == Platform::Android && size > 4096),
            Ok(c) => assert_eq!(Payloads::render(&c).unwrap().get(Platform::Ios, 0).size, MAX_PAYLOAD_BYTES),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn locale_fallback_is_explicit() {
        let text = BASE.replacen("[[markets]]", "[fallback]\n\"es-US\" = \"es-MX\"\n\"es-MX\" = \"en-US\"\n[[markets]]", 1);
        let c = parse(&text).unwrap();
        assert_eq!(c.resolve_locale("es-US"), Some("en-US"));
        // No guessing from the language: "en-GB" is not "en-US"...
        let no_default = parse(&BASE.replacen("default_locale = \"en-US\"\n", "", 1)).unwrap();
        assert_eq!(no_default.resolve_locale("en-GB"), None);
        // ...unless the default says so.
        assert_eq!(c.resolve_locale("en-GB"), Some("en-US"));
    }

    #[test]
    fn rendered_payloads_carry_the_campaign_options() {
        let text = BASE.replacen(
            "topic = \"com.example\"",
            "topic = \"com.example\"\ncollapse_id = \"sb\"\n[fcm]\npriority = \"normal\"\nttl = \"1h\"\ncollapse_key = \"sb\"",
            1,
        );
        let c = parse(&text).unwrap();
        let p = Payloads::render(&c).unwrap();
        let apns: serde_json::Value = serde_json::from_str(&p.get(Platform::Ios, 0).body_for("")).unwrap();
        assert_eq!(apns["aps"]["alert"]["title"], "Hi");
        let fcm: serde_json::Value = serde_json::from_str(&p.get(Platform::Android, 0).body_for("tok:en")).unwrap();
        assert_eq!(fcm["message"]["token"], "tok:en");
        assert_eq!(fcm["message"]["notification"]["body"], "There");
        assert_eq!(fcm["message"]["android"]["priority"], "NORMAL");
        assert_eq!(fcm["message"]["android"]["ttl"], "3600s");
        assert_eq!(fcm["message"]["android"]["collapse_key"], "sb");

        let silent = c.clone().into_silent();
        assert_ne!(silent.hash(), c.hash());
        assert_eq!((silent.apns.push_type, silent.apns.priority), (PushType::Background, 5));
        let p = Payloads::render(&silent).unwrap();
        let apns: serde_json::Value = serde_json::from_str(&p.get(Platform::Ios, 0).body_for("")).unwrap();
        assert_eq!(apns["aps"], serde_json::json!({ "content-available": 1 }));
        let fcm: serde_json::Value = serde_json::from_str(&p.get(Platform::Android, 0).body_for("t")).unwrap();
        assert!(fcm["message"].get("notification").is_none() && fcm["message"]["data"].is_object(), "{fcm}");
    }

    #[test]
    fn the_hash_follows_content_not_formatting() {
        let a = parse(BASE).unwrap();
        let reformatted = parse(&format!("# a comment\n{}", BASE.replace(" = ", "="))).unwrap();
        assert_eq!(a.hash(), reformatted.hash());
        let changed = parse(&BASE.replacen("There", "There!", 1)).unwrap();
        assert_ne!(a.hash(), changed.hash());
    }

    #[test]
    fn the_demo_campaign_serves_every_synthetic_locale() {
        let c = demo();
        for m in crate::audience::generate::MARKETS {
            let market = c.market(m.code).unwrap_or_else(|| panic!("demo lacks market {}", m.code));
            for l in m.locales {
                assert!(market.locales.iter().any(|x| x == l), "{} lacks {l}", m.code);
                assert!(c.resolve_locale(l).is_some(), "{l}");
            }
        }
    }
}
