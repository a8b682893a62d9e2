//! The file as TOML gives it: the `Raw*` shapes serde reads, and the helpers
//! that turn a span into a file:line error and read a step's `params`.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::RunbookError;
use crate::spans::line_of;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRunbook {
    pub(super) name: Spanned<String>,
    pub(super) campaign: Spanned<String>,
    pub(super) event_time: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) silent: bool,
    pub(super) audience: Option<Spanned<RawAudience>>,
    #[serde(default)]
    pub(super) fleet: Option<Spanned<toml::Table>>,
    #[serde(default)]
    pub(super) roles: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub(super) backends: BTreeMap<String, Spanned<RawBackend>>,
    pub(super) abort: Option<Spanned<RawAbort>>,
    pub(super) send: Option<Spanned<RawSend>>,
    pub(super) approvals: Option<Spanned<RawApprovals>>,
    #[serde(default)]
    pub(super) steps: Vec<Spanned<RawStep>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApprovals {
    pub(super) arm: Option<i64>,
    pub(super) within: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSend {
    pub(super) outage_timeout: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudience {
    pub(super) generate: Option<u64>,
    pub(super) seed: Option<u64>,
    pub(super) dir: Option<String>,
    pub(super) file: Option<String>,
    pub(super) dynamodb: Option<RawDynamo>,
}

/// `[audience.dynamodb]`: the audience read from a table when an event opens.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDynamo {
    pub(super) table: String,
    pub(super) user_ids: Option<String>,
    #[serde(default)]
    pub(super) scan: bool,
    pub(super) segments: Option<u32>,
    pub(super) index: Option<String>,
    pub(super) aws: Option<String>,
    #[serde(default)]
    pub(super) attributes: RawAttributes,
}

/// The item attributes holding the audience's columns.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAttributes {
    pub(super) user_id: Option<String>,
    pub(super) platform: Option<String>,
    pub(super) token: Option<String>,
    pub(super) locale: Option<String>,
    pub(super) market: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackend {
    pub(super) capacity_rps: f64,
    pub(super) requests_per_open: Option<f64>,
    pub(super) open_share: Option<f64>,
    pub(super) open_delay: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAbort {
    pub(super) text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStep {
    pub(super) id: Spanned<String>,
    pub(super) title: Spanned<String>,
    pub(super) role: Spanned<String>,
    pub(super) kind: Spanned<String>,
    #[serde(default)]
    pub(super) params: BTreeMap<String, Spanned<toml::Value>>,
    pub(super) after: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub(super) checks: Vec<Spanned<String>>,
    pub(super) at: Option<Spanned<String>>,
    pub(super) deadline: Option<Spanned<String>>,
    pub(super) backup: Option<Spanned<RawBackup>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackup {
    pub(super) text: String,
    pub(super) step: Option<String>,
}

pub(super) struct Ctx<'a> {
    pub(super) path: &'a Path,
    pub(super) text: &'a str,
}

impl Ctx<'_> {
    pub(super) fn err(&self, span: Range<usize>, message: impl Into<String>) -> RunbookError {
        RunbookError::Invalid { path: self.path.to_owned(), line: line_of(self.text, span.start), message: message.into() }
    }
}

pub(super) fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// A step's params, each used at most once; leftovers are errors.
pub(super) struct ParamReader<'a, 'c> {
    pub(super) ctx: &'a Ctx<'c>,
    pub(super) step: &'a str,
    pub(super) span: Range<usize>,
    pub(super) map: BTreeMap<String, Spanned<toml::Value>>,
}

impl ParamReader<'_, '_> {
    pub(super) fn take(&mut self, key: &str) -> Option<Spanned<toml::Value>> {
        self.map.remove(key)
    }

    pub(super) fn u64(&mut self, key: &str, default: Option<u64>) -> Result<u64, RunbookError> {
        match self.take(key) {
            Some(v) => match v.get_ref().as_integer() {
                Some(n) if n >= 0 => Ok(n as u64),
                _ => Err(self.ctx.err(v.span(), format!("step {}: `{key}` must be a whole number ≥ 0", self.step))),
            },
            None => default.ok_or_else(|| self.ctx.err(self.span.clone(), format!("step {}: `params.{key}` is required", self.step))),
        }
    }

    pub(super) fn u32(&mut self, key: &str, default: Option<u32>) -> Result<u32, RunbookError> {
        let span = self.map.get(key).map_or(self.span.clone(), Spanned::span);
        let n = self.u64(key, default.map(u64::from))?;
        u32::try_from(n)
            .ok()
            .filter(|n| *n <= 10_000)
            .ok_or_else(|| self.ctx.err(span, format!("step {}: `{key}` = {n} is over 10000", self.step)))
    }

    pub(super) fn duration(&mut self, key: &str, default: Duration) -> Result<Duration, RunbookError> {
        match self.take(key) {
            Some(v) => match v.get_ref().as_str().map(|s| crate::clock::parse_duration(s, crate::clock::MAX_SETTING)) {
                Some(Ok(d)) if !d.is_zero() => Ok(d),
                Some(Err(e @ crate::clock::DurationError::TooLong { .. })) => {
                    Err(self.ctx.err(v.span(), format!("step {}: `{key}` = {e}", self.step)))
                }
                _ => Err(self.ctx.err(v.span(), format!("step {}: `{key}` must be a duration like \"90s\" or \"10m\"", self.step))),
            },
            None => Ok(default),
        }
    }

    pub(super) fn string(&mut self, key: &str) -> Result<(String, Range<usize>), RunbookError> {
        match self.take(key) {
            Some(v) => match v.get_ref().as_str() {
                Some(s) if !s.trim().is_empty() => Ok((s.trim().to_owned(), v.span())),
                _ => Err(self.ctx.err(v.span(), format!("step {}: `{key}` must be a non-empty string", self.step))),
            },
            None => Err(self.ctx.err(self.span.clone(), format!("step {}: `params.{key}` is required", self.step))),
        }
    }

    pub(super) fn bool(&mut self, key: &str) -> Result<bool, RunbookError> {
        match self.take(key) {
            Some(v) => {
                v.get_ref().as_bool().ok_or_else(|| self.ctx.err(v.span(), format!("step {}: `{key}` must be true or false", self.step)))
            }
            None => Ok(false),
        }
    }

    pub(super) fn finish(self) -> Result<(), RunbookError> {
        match self.map.into_iter().next() {
            Some((k, v)) => Err(self.ctx.err(v.span(), format!("step {}: unknown parameter `{k}`", self.step))),
            None => Ok(()),
        }
    }
}
