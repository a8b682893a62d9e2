//! Runbook files: TOML in, a checked [`Runbook`] out; every error names the
//! file and line.
//!
//! ```toml
//! name = "Launch day"
//! campaign = "campaigns/demo.toml"        # relative to this file
//! event_time = "2026-11-26T20:00:00Z"     # optional; T-offsets count from it
//! [audience]
//! generate = 200_000                      # or dir = "..." / file = "..."
//! [fleet]                                 # the embedded fleet simulation
//! instance_startup = "2s"
//! [[steps]]
//! id = "scale-asg"
//! title = "Scale the ASG"
//! role = "ops"
//! kind = "scale-asg"
//! at = "T-30m"
//! deadline = "T-20m"
//! params = { desired = 8, timeout = "2m" }
//! backup = { text = "Take what we got", step = "accept-partial" }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use toml::Spanned;

pub use crate::audience::AudienceSource;
use crate::fleet::SimConfig;
use crate::spans::line_of;

/// A runbook file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RunbookError {
    /// The file could not be read.
    #[error("{path}: {source}", path = path.display())]
    Io {
        /// The runbook file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A syntax or rule error at a line.
    #[error("{path}:{line}: {message}", path = path.display())]
    Invalid {
        /// The runbook file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The campaign the runbook names is invalid.
    #[error("{path}:{line}: campaign: {source}", path = path.display())]
    Campaign {
        /// The runbook file.
        path: PathBuf,
        /// Line of `campaign = ...`.
        line: usize,
        /// The campaign's own error (with its file and line).
        #[source]
        source: crate::campaign::CampaignError,
    },
}

/// Who does a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Scales the fleet, watches the backends, switches zombie mode.
    Ops,
    /// Verifies the workers, test-sends, arms.
    Engineer,
    /// Confirms the message and presses fire.
    Marketer,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 3] = [Role::Ops, Role::Engineer, Role::Marketer];

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ops => "ops",
            Self::Engineer => "engineer",
            Self::Marketer => "marketer",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepKind {
    /// Set the ASG's desired capacity and wait for the instances.
    ScaleAsg,
    /// Set the ECS service's desired count and wait for the tasks.
    ScaleEcs,
    /// Load the audience and campaign into every worker and verify them.
    VerifyWarm,
    /// Send the campaign to its test recipients.
    TestSend,
    /// Confirm the test notifications arrived.
    Confirm,
    /// Arm the fire button.
    Arm,
    /// Fire.
    Fire,
    /// Watch the send to its end and check the outcome.
    Watch,
    /// Switch zombie mode for a backend (on a condition).
    Zombie,
    /// Scale the fleet back down.
    ScaleDown,
    /// A list to tick off by hand.
    Checklist,
    /// Wait until the step's `at` time.
    WaitUntil,
}

impl StepKind {
    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ScaleAsg => "scale-asg",
            Self::ScaleEcs => "scale-ecs",
            Self::VerifyWarm => "verify-warm",
            Self::TestSend => "test-send",
            Self::Confirm => "confirm",
            Self::Arm => "arm",
            Self::Fire => "fire",
            Self::Watch => "watch",
            Self::Zombie => "zombie",
            Self::ScaleDown => "scale-down",
            Self::Checklist => "checklist",
            Self::WaitUntil => "wait-until",
        }
    }
}

/// When to switch zombie mode on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ZombieWhen {
    /// Only if the backend's load is over its capacity.
    OverCapacity,
    /// Always.
    Always,
}

/// A step's checked parameters.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Params {
    /// scale-asg / scale-ecs.
    Scale {
        /// Target count.
        desired: u32,
        /// Give up (and fail) after this long.
        #[serde(with = "crate::clock::duration")]
        timeout: Duration,
    },
    /// scale-down.
    ScaleDown {
        /// Instances to keep.
        asg: u32,
        /// Tasks to keep.
        ecs: u32,
    },
    /// test-send.
    TestSend {
        /// Send the silent rendering.
        silent: bool,
    },
    /// watch.
    Watch {
        /// Devices that may go missing before the step fails.
        max_missing: u64,
        /// Give up after this long.
        #[serde(with = "crate::clock::duration")]
        timeout: Duration,
    },
    /// zombie.
    Zombie {
        /// The backend.
        backend: String,
        /// How long zombie mode lasts.
        #[serde(with = "crate::clock::duration")]
        duration: Duration,
        /// What clients are told to wait.
        retry_after_s: u64,
        /// The condition.
        when: ZombieWhen,
    },
    /// checklist.
    Checklist {
        /// Items to tick.
        items: Vec<String>,
    },
    /// Steps without parameters.
    None,
}

/// A time relative to the event: `T-30m`, `T`, `T+5m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct TOffset {
    /// Signed milliseconds from the event time.
    pub ms: i64,
}

impl TOffset {
    /// Parses `T`, `T-30m`, `T+1h 30m`.
    pub fn parse(s: &str) -> Option<Self> {
        let rest = s.trim().strip_prefix('T')?;
        if rest.is_empty() {
            return Some(Self { ms: 0 });
        }
        let (sign, d) = match rest.as_bytes()[0] {
            b'-' => (-1, &rest[1..]),
            b'+' => (1, &rest[1..]),
            _ => return None,
        };
        let d = humantime::parse_duration(d.trim()).ok()?;
        Some(Self { ms: sign * d.as_millis() as i64 })
    }

    /// `T-30m`.
    pub fn display(self) -> String {
        if self.ms == 0 {
            return "T".into();
        }
        let sign = if self.ms < 0 { '-' } else { '+' };
        format!("T{sign}{}", humantime::format_duration(Duration::from_millis(self.ms.unsigned_abs())))
    }

    /// The absolute time, given the event time.
    pub fn at(self, event_ms: u64) -> u64 {
        (event_ms as i64 + self.ms).max(0) as u64
    }
}

/// What to do when a step fails.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Backup {
    /// What to do, for people.
    pub text: String,
    /// An alternative step that stands in for this one.
    pub step: Option<String>,
}

/// A checked step.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Step {
    /// Unique id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Who does it.
    pub role: Role,
    /// What it does.
    pub kind: StepKind,
    /// Parameters.
    pub params: Params,
    /// Steps that must be done first.
    pub after: Vec<String>,
    /// Named checks that must pass first.
    pub checks: Vec<Check>,
    /// Planned time.
    pub at: Option<TOffset>,
    /// Latest acceptable completion.
    pub deadline: Option<TOffset>,
    /// The backup plan.
    pub backup: Option<Backup>,
    /// Another step's backup: it runs only if that step fails.
    pub backup_for: Option<String>,
    /// Line in the file.
    pub line: usize,
    /// Line of the backup plan.
    #[serde(skip)]
    pub backup_line: usize,
}

/// Checks a step may require.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    /// Every worker holds every shard of the audience, checksums verified.
    AllShardsWarm,
    /// The ASG and the ECS service run what they were asked for.
    FleetAtDesired,
    /// The test-send of the current campaign was confirmed.
    TestSendConfirmed,
    /// The fire button is armed.
    Armed,
}

impl Check {
    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AllShardsWarm => "all-shards-warm",
            Self::FleetAtDesired => "fleet-at-desired",
            Self::TestSendConfirmed => "test-send-confirmed",
            Self::Armed => "armed",
        }
    }
}

/// A checked runbook.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Runbook {
    /// Name.
    pub name: String,
    /// The file it came from.
    pub path: PathBuf,
    /// The campaign file (absolute or relative to the working directory).
    pub campaign: PathBuf,
    /// The event (T), ms since the epoch, if set.
    pub event_time_ms: Option<u64>,
    /// Send the campaign as a silent rehearsal (APNs background, FCM data-only).
    pub silent: bool,
    /// The audience in embedded mode.
    pub audience: Option<AudienceSource>,
    /// The embedded fleet simulation.
    pub fleet: SimConfig,
    /// Backends with zombie flags.
    pub backends: Vec<String>,
    /// Modelled capacity of each backend (requests/s), for the return-traffic model.
    pub backend_capacity: BTreeMap<String, f64>,
    /// What each role does (for people).
    pub roles: BTreeMap<Role, String>,
    /// The abort plan.
    pub abort_plan: String,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRunbook {
    name: Spanned<String>,
    campaign: Spanned<String>,
    event_time: Option<Spanned<String>>,
    #[serde(default)]
    silent: bool,
    audience: Option<Spanned<RawAudience>>,
    #[serde(default)]
    fleet: Option<Spanned<toml::Table>>,
    #[serde(default)]
    roles: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    backends: BTreeMap<String, Spanned<RawBackend>>,
    abort: Option<Spanned<RawAbort>>,
    #[serde(default)]
    steps: Vec<Spanned<RawStep>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudience {
    generate: Option<u64>,
    seed: Option<u64>,
    dir: Option<String>,
    file: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    capacity_rps: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAbort {
    text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    id: Spanned<String>,
    title: Spanned<String>,
    role: Spanned<String>,
    kind: Spanned<String>,
    #[serde(default)]
    params: BTreeMap<String, Spanned<toml::Value>>,
    after: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    checks: Vec<Spanned<String>>,
    at: Option<Spanned<String>>,
    deadline: Option<Spanned<String>>,
    backup: Option<Spanned<RawBackup>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackup {
    text: String,
    step: Option<String>,
}

struct Ctx<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Ctx<'_> {
    fn err(&self, span: Range<usize>, message: impl Into<String>) -> RunbookError {
        RunbookError::Invalid { path: self.path.to_owned(), line: line_of(self.text, span.start), message: message.into() }
    }
}

fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// A step's params, each used at most once; leftovers are errors.
struct ParamReader<'a, 'c> {
    ctx: &'a Ctx<'c>,
    step: &'a str,
    span: Range<usize>,
    map: BTreeMap<String, Spanned<toml::Value>>,
}

impl ParamReader<'_, '_> {
    fn take(&mut self, key: &str) -> Option<Spanned<toml::Value>> {
        self.map.remove(key)
    }

    fn u64(&mut self, key: &str, default: Option<u64>) -> Result<u64, RunbookError> {
        match self.take(key) {
            Some(v) => match v.get_ref().as_integer() {
                Some(n) if n >= 0 => Ok(n as u64),
                _ => Err(self.ctx.err(v.span(), format!("step {}: `{key}` must be a whole number ≥ 0", self.step))),
            },
            None => default.ok_or_else(|| self.ctx.err(self.span.clone(), format!("step {}: `params.{key}` is required", self.step))),
        }
    }

    fn u32(&mut self, key: &str, default: Option<u32>) -> Result<u32, RunbookError> {
        let span = self.map.get(key).map_or(self.span.clone(), Spanned::span);
        let n = self.u64(key, default.map(u64::from))?;
        u32::try_from(n)
            .ok()
            .filter(|n| *n <= 10_000)
            .ok_or_else(|| self.ctx.err(span, format!("step {}: `{key}` = {n} is over 10000", self.step)))
    }

    fn duration(&mut self, key: &str, default: Duration) -> Result<Duration, RunbookError> {
        match self.take(key) {
            Some(v) => {
                v.get_ref().as_str().and_then(|s| humantime::parse_duration(s).ok()).filter(|d| !d.is_zero()).ok_or_else(|| {
                    self.ctx.err(v.span(), format!("step {}: `{key}` must be a duration like \"90s\" or \"10m\"", self.step))
                })
            }
            None => Ok(default),
        }
    }

    fn string(&mut self, key: &str) -> Result<(String, Range<usize>), RunbookError> {
        match self.take(key) {
            Some(v) => match v.get_ref().as_str() {
                Some(s) if !s.trim().is_empty() => Ok((s.trim().to_owned(), v.span())),
                _ => Err(self.ctx.err(v.span(), format!("step {}: `{key}` must be a non-empty string", self.step))),
            },
            None => Err(self.ctx.err(self.span.clone(), format!("step {}: `params.{key}` is required", self.step))),
        }
    }

    fn bool(&mut self, key: &str) -> Result<bool, RunbookError> {
        match self.take(key) {
            Some(v) => {
                v.get_ref().as_bool().ok_or_else(|| self.ctx.err(v.span(), format!("step {}: `{key}` must be true or false", self.step)))
            }
            None => Ok(false),
        }
    }

    fn finish(self) -> Result<(), RunbookError> {
        match self.map.into_iter().next() {
            Some((k, v)) => Err(self.ctx.err(v.span(), format!("step {}: unknown parameter `{k}`", self.step))),
            None => Ok(()),
        }
    }
}

impl Runbook {
    /// Reads and checks a runbook file, and the campaign it names.
    pub fn load(path: &Path) -> Result<Self, RunbookError> {
        let text = std::fs::read_to_string(path).map_err(|source| RunbookError::Io { path: path.to_owned(), source })?;
        Self::parse(&text, path)
    }

    /// Checks runbook text; `path` is used in messages and to resolve
    /// relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Self, RunbookError> {
        let ctx = Ctx { path, text };
        let raw: RawRunbook = toml::from_str(text).map_err(|e| RunbookError::Invalid {
            path: path.to_owned(),
            line: crate::spans::toml_error_line(text, &e),
            message: e.message().trim().to_owned(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let name = raw.name.get_ref().trim().to_owned();
        if name.is_empty() {
            return Err(ctx.err(raw.name.span(), "`name` is empty"));
        }
        let campaign = base.join(raw.campaign.get_ref());
        crate::campaign::Campaign::load(&campaign).map_err(|source| RunbookError::Campaign {
            path: path.to_owned(),
            line: line_of(text, raw.campaign.span().start),
            source,
        })?;
        let event_time_ms = match &raw.event_time {
            Some(t) => Some(
                humantime::parse_rfc3339_weak(t.get_ref())
                    .map_err(|e| ctx.err(t.span(), format!("`event_time` {:?} is not an RFC 3339 time: {e}", t.get_ref())))?
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
            ),
            None => None,
        };
        let audience = match &raw.audience {
            None => None,
            Some(a) => {
                let span = a.span();
                let a = a.get_ref();
                match (a.generate, &a.dir, &a.file) {
                    (Some(0), None, None) => return Err(ctx.err(span, "`audience.generate` must be at least 1 device")),
                    (Some(n), None, None) => Some(AudienceSource::Generate { devices: n, seed: a.seed.unwrap_or(1) }),
                    (None, Some(p), None) | (None, None, Some(p)) => Some(AudienceSource::Path(base.join(p))),
                    _ => return Err(ctx.err(span, "[audience] takes exactly one of `generate`, `dir` or `file`")),
                }
            }
        };
        let fleet = match &raw.fleet {
            None => SimConfig::default(),
            Some(t) => {
                let cfg: SimConfig = toml::Value::Table(t.get_ref().clone())
                    .try_into()
                    .map_err(|e: toml::de::Error| ctx.err(t.span(), format!("[fleet]: {}", e.message().trim())))?;
                cfg.check().map_err(|e| ctx.err(t.span(), format!("[fleet]: {e}")))?;
                cfg
            }
        };
        let mut roles = BTreeMap::new();
        for (k, v) in &raw.roles {
            let role =
                Role::parse(k).ok_or_else(|| ctx.err(v.span(), format!("unknown role {k:?}: roles are ops, engineer and marketer")))?;
            roles.insert(role, v.get_ref().clone());
        }
        let mut backend_capacity = BTreeMap::new();
        for (k, v) in &raw.backends {
            crate::zombie::check_backend(k).map_err(|e| ctx.err(v.span(), e.to_string()))?;
            if !v.get_ref().capacity_rps.is_finite() || v.get_ref().capacity_rps <= 0.0 {
                return Err(ctx.err(v.span(), format!("backend {k}: `capacity_rps` must be positive")));
            }
            backend_capacity.insert(k.clone(), v.get_ref().capacity_rps);
        }
        let abort_plan = raw.abort.as_ref().map(|a| a.get_ref().text.trim().to_owned()).unwrap_or_default();
        if raw.steps.is_empty() {
            return Err(ctx.err(0..0, "the runbook has no [[steps]]"));
        }
        if abort_plan.is_empty() && raw.steps.iter().any(|s| s.get_ref().kind.get_ref() == "fire") {
            return Err(ctx.err(0..0, "a runbook that fires needs an [abort] plan with `text`"));
        }

        let mut steps: Vec<Step> = Vec::new();
        let mut ids = BTreeSet::new();
        let backups: BTreeMap<String, String> = raw
            .steps
            .iter()
            .filter_map(|s| Some((s.get_ref().backup.as_ref()?.get_ref().step.clone()?, s.get_ref().id.get_ref().clone())))
            .collect();
        for spanned in &raw.steps {
            let span = spanned.span();
            let s = spanned.get_ref();
            let id = s.id.get_ref().clone();
            if !valid_id(&id) {
                return Err(ctx.err(s.id.span(), format!("step id {id:?} must be 1-64 characters of [a-z0-9_-]")));
            }
            if !ids.insert(id.clone()) {
                return Err(ctx.err(s.id.span(), format!("step id {id:?} is used twice")));
            }
            if s.title.get_ref().trim().is_empty() {
                return Err(ctx.err(s.title.span(), format!("step {id}: `title` is empty")));
            }
            let role = Role::parse(s.role.get_ref()).ok_or_else(|| {
                ctx.err(s.role.span(), format!("step {id}: unknown role {:?}: ops, engineer or marketer", s.role.get_ref()))
            })?;
            let kind: StepKind = toml::Value::String(s.kind.get_ref().clone()).try_into().map_err(|_| {
                ctx.err(
                    s.kind.span(),
                    format!(
                        "step {id}: unknown kind {:?}: one of scale-asg, scale-ecs, verify-warm, test-send, confirm, arm, fire, watch, zombie, scale-down, checklist, wait-until",
                        s.kind.get_ref()
                    ),
                )
            })?;
            let mut p = ParamReader { ctx: &ctx, step: &id, span: span.clone(), map: s.params.clone() };
            let params = match kind {
                StepKind::ScaleAsg | StepKind::ScaleEcs => {
                    Params::Scale { desired: p.u32("desired", None)?, timeout: p.duration("timeout", Duration::from_secs(600))? }
                }
                StepKind::ScaleDown => Params::ScaleDown { asg: p.u32("asg", None)?, ecs: p.u32("ecs", None)? },
                StepKind::TestSend => Params::TestSend { silent: p.bool("silent")? },
                StepKind::Watch => {
                    Params::Watch { max_missing: p.u64("max_missing", Some(0))?, timeout: p.duration("timeout", Duration::from_secs(600))? }
                }
                StepKind::Zombie => {
                    let (backend, bspan) = p.string("backend")?;
                    crate::zombie::check_backend(&backend).map_err(|e| ctx.err(bspan.clone(), format!("step {id}: {e}")))?;
                    if !backend_capacity.is_empty() && !backend_capacity.contains_key(&backend) {
                        return Err(ctx.err(bspan, format!("step {id}: backend {backend:?} is not listed under [backends]")));
                    }
                    let duration = p.duration("for", crate::zombie::DEFAULT_DURATION)?;
                    if duration > crate::zombie::MAX_DURATION {
                        return Err(ctx.err(span, format!("step {id}: zombie mode lasts at most 24h")));
                    }
                    let retry_after_s = p.u64("retry_after", Some(crate::zombie::DEFAULT_RETRY_AFTER.as_secs()))?;
                    let when = match p.take("when") {
                        None => ZombieWhen::Always,
                        Some(v) => v
                            .get_ref()
                            .clone()
                            .try_into()
                            .map_err(|_| ctx.err(v.span(), format!("step {id}: `when` must be \"over-capacity\" or \"always\"")))?,
                    };
                    if when == ZombieWhen::OverCapacity && !backend_capacity.contains_key(&backend) {
                        return Err(ctx.err(span, format!("step {id}: `when = \"over-capacity\"` needs [backends.{backend}] capacity_rps")));
                    }
                    Params::Zombie { backend, duration, retry_after_s, when }
                }
                StepKind::Checklist => {
                    let items = match p.take("items") {
                        Some(v) => v
                            .get_ref()
                            .as_array()
                            .and_then(|a| a.iter().map(|i| i.as_str().map(str::to_owned)).collect::<Option<Vec<_>>>())
                            .filter(|a| !a.is_empty())
                            .ok_or_else(|| ctx.err(v.span(), format!("step {id}: `items` must be a non-empty list of strings")))?,
                        None => return Err(ctx.err(span, format!("step {id}: a checklist needs `params.items`"))),
                    };
                    Params::Checklist { items }
                }
                _ => Params::None,
            };
            p.finish()?;
            let after = match &s.after {
                Some(list) => {
                    let mut out = Vec::new();
                    for a in list {
                        if !steps.iter().any(|st| &st.id == a.get_ref()) {
                            return Err(
                                ctx.err(a.span(), format!("step {id}: `after` names {:?}, which is not an earlier step", a.get_ref()))
                            );
                        }
                        out.push(a.get_ref().clone());
                    }
                    out
                }
                // A backup step has the gates of the step it stands in for;
                // any other step follows the previous main step.
                None => match backups.get(&id).and_then(|primary| steps.iter().find(|st| &st.id == primary)) {
                    Some(primary) => primary.after.clone(),
                    None => steps.iter().rev().find(|st| st.backup_for.is_none()).map(|st| vec![st.id.clone()]).unwrap_or_default(),
                },
            };
            let mut checks = Vec::new();
            for c in &s.checks {
                let check: Check = toml::Value::String(c.get_ref().clone()).try_into().map_err(|_| {
                    ctx.err(
                        c.span(),
                        format!(
                            "step {id}: unknown check {:?}: all-shards-warm, fleet-at-desired, test-send-confirmed or armed",
                            c.get_ref()
                        ),
                    )
                })?;
                checks.push(check);
            }
            let offset = |v: &Option<Spanned<String>>, field: &str| -> Result<Option<TOffset>, RunbookError> {
                v.as_ref()
                    .map(|v| {
                        TOffset::parse(v.get_ref()).ok_or_else(|| {
                            ctx.err(v.span(), format!("step {id}: `{field}` {:?} is not like T-30m, T or T+5m", v.get_ref()))
                        })
                    })
                    .transpose()
            };
            let at = offset(&s.at, "at")?;
            let deadline = offset(&s.deadline, "deadline")?;
            if let (Some(a), Some(d)) = (at, deadline)
                && d < a
            {
                return Err(ctx.err(span, format!("step {id}: `deadline` {} is before `at` {}", d.display(), a.display())));
            }
            if kind == StepKind::WaitUntil && at.is_none() {
                return Err(ctx.err(span, format!("step {id}: wait-until needs `at`")));
            }
            let backup = s.backup.as_ref().map(|b| Backup { text: b.get_ref().text.trim().to_owned(), step: b.get_ref().step.clone() });
            if let Some(b) = &s.backup
                && b.get_ref().text.trim().is_empty()
            {
                return Err(ctx.err(b.span(), format!("step {id}: `backup.text` is empty")));
            }
            steps.push(Step {
                id: id.clone(),
                title: s.title.get_ref().trim().to_owned(),
                role,
                kind,
                params,
                after,
                checks,
                at,
                deadline,
                backup,
                backup_for: backups.get(&id).cloned(),
                line: line_of(text, s.id.span().start),
                backup_line: s.backup.as_ref().map_or(0, |b| line_of(text, b.span().start)),
            });
        }
        // Cross-step rules.
        let line = |id: &str| steps.iter().find(|s| s.id == id).map_or(1, |s| s.line);
        let invalid = |line: usize, message: String| RunbookError::Invalid { path: path.to_owned(), line, message };
        for s in &steps {
            if let Some(b) = s.backup.as_ref().and_then(|b| b.step.as_ref()) {
                let Some(alt) = steps.iter().find(|x| &x.id == b) else {
                    return Err(invalid(s.backup_line, format!("step {}: backup step {b:?} does not exist", s.id)));
                };
                if alt.id == s.id {
                    return Err(invalid(s.backup_line, format!("step {}: a step cannot be its own backup", s.id)));
                }
                if alt.backup.as_ref().is_some_and(|x| x.step.is_some()) {
                    return Err(invalid(alt.line, format!("step {}: a backup step cannot name a backup step of its own", alt.id)));
                }
                if steps.iter().filter(|x| x.backup.as_ref().and_then(|bk| bk.step.as_ref()) == Some(b)).count() > 1 {
                    return Err(invalid(s.backup_line, format!("step {}: step {b} is already the backup of another step", s.id)));
                }
                if matches!(alt.kind, StepKind::Fire | StepKind::Arm) {
                    return Err(invalid(alt.line, format!("step {}: arm and fire cannot be backup steps", alt.id)));
                }
            }
        }
        let position = |k: StepKind| steps.iter().position(|s| s.kind == k);
        let count = |k: StepKind| steps.iter().filter(|s| s.kind == k).count();
        for k in [StepKind::Arm, StepKind::Fire] {
            if count(k) > 1 {
                let second = steps.iter().filter(|s| s.kind == k).nth(1).expect("two");
                return Err(invalid(second.line, format!("step {}: a runbook has at most one {} step", second.id, k.as_str())));
            }
        }
        if let Some(fire) = position(StepKind::Fire) {
            match position(StepKind::Arm) {
                Some(arm) if arm < fire => {}
                _ => return Err(invalid(steps[fire].line, format!("step {}: fire needs an arm step before it", steps[fire].id))),
            }
        }
        if let Some(arm) = position(StepKind::Arm) {
            for needed in [StepKind::VerifyWarm, StepKind::TestSend, StepKind::Confirm] {
                if !steps[..arm].iter().any(|s| s.kind == needed) {
                    return Err(invalid(
                        steps[arm].line,
                        format!("step {}: arm needs a {} step before it", steps[arm].id, needed.as_str()),
                    ));
                }
            }
        }
        if let (Some(w), Some(f)) = (position(StepKind::Watch), position(StepKind::Fire))
            && w < f
        {
            return Err(invalid(line(&steps[w].id), format!("step {}: watch must come after fire", steps[w].id)));
        }
        if let Some(c) = position(StepKind::Confirm)
            && !steps[..c].iter().any(|s| s.kind == StepKind::TestSend)
        {
            return Err(invalid(steps[c].line, format!("step {}: confirm needs a test-send step before it", steps[c].id)));
        }
        let zombie_backends: BTreeSet<String> = steps
            .iter()
            .filter_map(|s| match &s.params {
                Params::Zombie { backend, .. } => Some(backend.clone()),
                _ => None,
            })
            .chain(backend_capacity.keys().cloned())
            .collect();
        Ok(Runbook {
            name,
            path: path.to_owned(),
            campaign,
            event_time_ms,
            silent: raw.silent,
            audience,
            fleet,
            backends: zombie_backends.into_iter().collect(),
            backend_capacity,
            roles,
            abort_plan,
            steps,
        })
    }

    /// The step `id`.
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.id == id)
    }

    /// The plan as recorded in the flight recorder (`meta.runbook_plan`).
    pub fn plan_json(&self) -> String {
        let plan: Vec<serde_json::Value> = self
            .steps
            .iter()
            .map(|s| {
                serde_json::json!({
                    "id": s.id,
                    "title": s.title,
                    "at": s.at.map(TOffset::display),
                    "at_ms": s.at.zip(self.event_time_ms).map(|(a, e)| a.at(e)),
                })
            })
            .collect();
        serde_json::to_string(&plan).expect("the plan serializes")
    }
}
