//! The rules a runbook follows, in three passes: the header (name,
//! campaign, event time, audience, fleet, roles, backends, abort plan), each
//! step on its own (id, role, kind, params, gates, times, backup), and the
//! plan as a whole (backups, one arm before one fire, watch after fire).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use toml::Spanned;

use super::raw::{Ctx, ParamReader, RawBackend, RawDynamo, RawRunbook, RawStep, valid_id};
use super::{AudienceSource, Backup, Check, Params, Role, RunbookError, Step, StepKind, TOffset, ZombieWhen};
use crate::audience::{DynamoSource, DynamoUsers, TableSpec};
use crate::fleet::SimConfig;
use crate::spans::line_of;

/// Everything above the steps, checked.
pub(super) struct Header {
    pub(super) name: String,
    pub(super) campaign: PathBuf,
    pub(super) event_time_ms: Option<u64>,
    pub(super) audience: Option<AudienceSource>,
    pub(super) fleet: SimConfig,
    pub(super) roles: BTreeMap<Role, String>,
    pub(super) backend_capacity: BTreeMap<String, f64>,
    pub(super) return_traffic: Vec<crate::plan::BackendInput>,
    pub(super) abort_plan: String,
    pub(super) outage_timeout: Option<Duration>,
    pub(super) arm_approvals: Option<super::ArmApprovals>,
}

/// Checks the header, including that there are steps and that a runbook
/// that fires has an abort plan.
pub(super) fn header(ctx: &Ctx<'_>, raw: &RawRunbook) -> Result<Header, RunbookError> {
    let (path, text) = (ctx.path, ctx.text);

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
            match (a.generate, &a.dir, &a.file, &a.dynamodb) {
                (Some(0), None, None, None) => return Err(ctx.err(span, "`audience.generate` must be at least 1 device")),
                (Some(n), None, None, None) => Some(AudienceSource::Generate { devices: n, seed: a.seed.unwrap_or(1) }),
                (None, Some(p), None, None) | (None, None, Some(p), None) => Some(AudienceSource::Path(base.join(p))),
                (None, None, None, Some(d)) => Some(AudienceSource::DynamoDb(Box::new(dynamo(d, base, |m| ctx.err(span.clone(), m))?))),
                _ => return Err(ctx.err(span, "[audience] takes exactly one of `generate`, `dir`, `file` or `[audience.dynamodb]`")),
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
        let role = Role::parse(k).ok_or_else(|| ctx.err(v.span(), format!("unknown role {k:?}: roles are ops, engineer and marketer")))?;
        roles.insert(role, v.get_ref().clone());
    }
    let mut backend_capacity = BTreeMap::new();
    let mut return_traffic = Vec::new();
    for (k, v) in &raw.backends {
        crate::zombie::check_backend(k).map_err(|e| ctx.err(v.span(), e.to_string()))?;
        let b = v.get_ref();
        if !b.capacity_rps.is_finite() || b.capacity_rps <= 0.0 {
            return Err(ctx.err(v.span(), format!("backend {k}: `capacity_rps` must be positive")));
        }
        backend_capacity.insert(k.clone(), b.capacity_rps);
        return_traffic.push(return_traffic_of(ctx, k, v)?);
    }
    let abort_plan = raw.abort.as_ref().map(|a| a.get_ref().text.trim().to_owned()).unwrap_or_default();
    if raw.steps.is_empty() {
        return Err(ctx.err(0..0, "the runbook has no [[steps]]"));
    }
    if abort_plan.is_empty() && raw.steps.iter().any(|s| s.get_ref().kind.get_ref() == "fire") {
        return Err(ctx.err(0..0, "a runbook that fires needs an [abort] plan with `text`"));
    }
    let outage_timeout = match raw.send.as_ref().map(|s| (s.span(), s.get_ref().outage_timeout.as_deref())) {
        Some((span, Some(t))) => {
            Some(crate::clock::parse_outage_timeout(t).map_err(|e| ctx.err(span, format!("[send] outage_timeout: {e}")))?)
        }
        _ => None,
    };
    let arm_approvals = match &raw.approvals {
        None => None,
        Some(a) => {
            let span = a.span();
            let a = a.get_ref();
            let count = a.arm.unwrap_or(1);
            if !(1..=5).contains(&count) {
                return Err(ctx.err(span, format!("[approvals] arm = {count}: the number of different operators who arm, 1 to 5")));
            }
            let within = match &a.within {
                Some(t) => humantime::parse_duration(t)
                    .ok()
                    .filter(|d| (Duration::from_secs(10)..=Duration::from_secs(24 * 3600)).contains(d))
                    .ok_or_else(|| {
                        ctx.err(span.clone(), format!("[approvals] within = {t:?}: a duration from 10s to 24h, like \"10m\""))
                    })?,
                None => super::DEFAULT_APPROVAL_WINDOW,
            };
            (count > 1).then_some(super::ArmApprovals { count: count as u32, within })
        }
    };
    Ok(Header {
        name,
        campaign,
        event_time_ms,
        audience,
        fleet,
        roles,
        backend_capacity,
        return_traffic,
        abort_plan,
        outage_timeout,
        arm_approvals,
    })
}

/// What the opens of a notification cost backend `name`: requests per open
/// (default 20; the reference team saw 10-50), the share of notified
/// devices that open (default 5%), and the mean delay to the open (default
/// 60 s).
fn return_traffic_of(ctx: &Ctx<'_>, name: &str, v: &Spanned<RawBackend>) -> Result<crate::plan::BackendInput, RunbookError> {
    let b = v.get_ref();
    let requests_per_open = b.requests_per_open.unwrap_or(20.0);
    if !(requests_per_open.is_finite() && (0.0..=10_000.0).contains(&requests_per_open)) {
        return Err(ctx.err(v.span(), format!("backend {name}: `requests_per_open` must be between 0 and 10000")));
    }
    let open_share = b.open_share.unwrap_or(0.05);
    if !(open_share.is_finite() && (0.0..=1.0).contains(&open_share)) {
        return Err(ctx.err(v.span(), format!("backend {name}: `open_share` must be between 0 and 1")));
    }
    let open_delay = match &b.open_delay {
        Some(d) => crate::clock::parse_duration(d, crate::clock::MAX_SETTING)
            .map_err(|e| ctx.err(v.span(), format!("backend {name}: `open_delay` = {e}")))?,
        None => Duration::from_secs(60),
    };
    Ok(crate::plan::BackendInput {
        name: name.to_owned(),
        capacity_rps: b.capacity_rps,
        requests_per_open,
        open_share,
        open_delay_s: open_delay.as_secs_f64(),
    })
}

/// Checks each step in file order; a step may only name earlier steps.
pub(super) fn steps(ctx: &Ctx<'_>, raw: &[Spanned<RawStep>], backend_capacity: &BTreeMap<String, f64>) -> Result<Vec<Step>, RunbookError> {
    // backup step id -> the step it stands in for
    let backups: BTreeMap<String, String> =
        raw.iter().filter_map(|s| Some((s.get_ref().backup.as_ref()?.get_ref().step.clone()?, s.get_ref().id.get_ref().clone()))).collect();
    let mut steps = Vec::with_capacity(raw.len());
    for spanned in raw {
        let step = step(ctx, spanned, &steps, &backups, backend_capacity)?;
        steps.push(step);
    }
    Ok(steps)
}

/// One step, given the steps before it.
fn step(
    ctx: &Ctx<'_>,
    spanned: &Spanned<RawStep>,
    steps: &[Step],
    backups: &BTreeMap<String, String>,
    backend_capacity: &BTreeMap<String, f64>,
) -> Result<Step, RunbookError> {
    let text = ctx.text;
    let span = spanned.span();
    let s = spanned.get_ref();
    let id = s.id.get_ref().clone();
    if !valid_id(&id) {
        return Err(ctx.err(s.id.span(), format!("step id {id:?} must be 1-64 characters of [a-z0-9_-]")));
    }
    if steps.iter().any(|st| st.id == id) {
        return Err(ctx.err(s.id.span(), format!("step id {id:?} is used twice")));
    }
    if s.title.get_ref().trim().is_empty() {
        return Err(ctx.err(s.title.span(), format!("step {id}: `title` is empty")));
    }
    let role = Role::parse(s.role.get_ref())
        .ok_or_else(|| ctx.err(s.role.span(), format!("step {id}: unknown role {:?}: ops, engineer or marketer", s.role.get_ref())))?;
    let kind: StepKind = toml::Value::String(s.kind.get_ref().clone()).try_into().map_err(|_| {
        ctx.err(
            s.kind.span(),
            format!(
                "step {id}: unknown kind {:?}: one of scale-asg, scale-ecs, verify-warm, test-send, confirm, arm, fire, watch, zombie, scale-down, checklist, wait-until, plan",
                s.kind.get_ref()
            ),
        )
    })?;
    let mut p = ParamReader { ctx, step: &id, span: span.clone(), map: s.params.clone() };
    let params = params(&mut p, kind, span.clone(), backend_capacity)?;
    p.finish()?;
    let after = match &s.after {
        Some(list) => {
            let mut out = Vec::new();
            for a in list {
                if !steps.iter().any(|st| &st.id == a.get_ref()) {
                    return Err(ctx.err(a.span(), format!("step {id}: `after` names {:?}, which is not an earlier step", a.get_ref())));
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
                format!("step {id}: unknown check {:?}: all-shards-warm, fleet-at-desired, test-send-confirmed or armed", c.get_ref()),
            )
        })?;
        checks.push(check);
    }
    let offset = |v: &Option<Spanned<String>>, field: &str| -> Result<Option<TOffset>, RunbookError> {
        v.as_ref()
            .map(|v| {
                TOffset::parse(v.get_ref()).ok_or_else(|| {
                    ctx.err(
                        v.span(),
                        format!("step {id}: `{field}` {:?} is not like T-30m, T or T+5m (at most 30 days from T)", v.get_ref()),
                    )
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
    Ok(Step {
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
    })
}

/// A step's `params`, by kind.
fn params(
    p: &mut ParamReader<'_, '_>,
    kind: StepKind,
    span: std::ops::Range<usize>,
    backend_capacity: &BTreeMap<String, f64>,
) -> Result<Params, RunbookError> {
    let (ctx, id) = (p.ctx, p.step);
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
            if retry_after_s == 0 || retry_after_s > crate::zombie::MAX_RETRY_AFTER.as_secs() {
                return Err(ctx.err(span, format!("step {id}: `retry_after` must be 1 to 86400 seconds")));
            }
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
        StepKind::Plan => {
            let fcm_quota_per_minute = match p.take("fcm_quota_per_minute") {
                Some(v) => Some(
                    v.get_ref()
                        .as_integer()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| ctx.err(v.span(), format!("step {id}: `fcm_quota_per_minute` must be a whole number ≥ 1")))?
                        as u64,
                ),
                None => None,
            };
            let per_worker_rate = match p.take("per_worker_rate") {
                Some(v) => Some(
                    v.get_ref()
                        .as_float()
                        .or_else(|| v.get_ref().as_integer().map(|n| n as f64))
                        .filter(|r| r.is_finite() && *r > 0.0)
                        .ok_or_else(|| ctx.err(v.span(), format!("step {id}: `per_worker_rate` must be a positive number")))?,
                ),
                None => None,
            };
            let mut accept = std::collections::BTreeMap::new();
            if let Some(v) = p.take("accept") {
                let gates = crate::plan::GATE_IDS.join(", ");
                let table = v.get_ref().as_table().ok_or_else(|| {
                    ctx.err(v.span(), format!("step {id}: `accept` maps gate ids ({gates}) to the reason each is accepted"))
                })?;
                for (gate, reason) in table {
                    if !crate::plan::GATE_IDS.contains(&gate.as_str()) {
                        return Err(ctx.err(v.span(), format!("step {id}: no plan gate `{gate}` to accept (gates: {gates})")));
                    }
                    let reason =
                        reason.as_str().map(str::trim).filter(|r| !r.is_empty()).ok_or_else(|| {
                            ctx.err(v.span(), format!("step {id}: accepting `{gate}` needs a reason (a non-empty string)"))
                        })?;
                    accept.insert(gate.clone(), reason.to_owned());
                }
            }
            Params::Plan(super::PlanParams { fcm_quota_per_minute, per_worker_rate, accept })
        }
        _ => Params::None,
    };
    Ok(params)
}

/// The rules between steps: backups, at most one arm and one fire, arm after
/// the checks it stands on, watch after fire.
pub(super) fn plan(path: &Path, steps: &[Step]) -> Result<(), RunbookError> {
    let line = |id: &str| steps.iter().find(|s| s.id == id).map_or(1, |s| s.line);
    let invalid = |line: usize, message: String| RunbookError::Invalid { path: path.to_owned(), line, message };
    for s in steps {
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
                return Err(invalid(steps[arm].line, format!("step {}: arm needs a {} step before it", steps[arm].id, needed.as_str())));
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
    Ok(())
}

/// `[audience.dynamodb]`, checked: a table, exactly one of `user_ids` and
/// `scan`, attribute names that are not empty; paths relative to the runbook.
fn dynamo(d: &RawDynamo, base: &Path, err: impl Fn(String) -> RunbookError) -> Result<DynamoSource, RunbookError> {
    let named = |what: &str, v: &Option<String>, default: &str| match v.as_deref() {
        Some("") => Err(err(format!("[audience.dynamodb] `{what}` is empty"))),
        Some(v) => Ok(v.to_owned()),
        None => Ok(default.to_owned()),
    };
    if d.table.is_empty() {
        return Err(err("[audience.dynamodb] `table` is empty".into()));
    }
    let users = match (&d.user_ids, d.scan) {
        (Some(file), false) => {
            if d.segments.is_some() {
                return Err(err("[audience.dynamodb] `segments` goes with `scan = true`, not `user_ids`".into()));
            }
            DynamoUsers::File(base.join(file))
        }
        (None, true) => match d.segments.unwrap_or(8) {
            0 => return Err(err("[audience.dynamodb] `segments` must be at least 1".into())),
            segments => DynamoUsers::Scan { segments },
        },
        _ => return Err(err("[audience.dynamodb] takes exactly one of `user_ids` (a file of user ids) or `scan = true`".into())),
    };
    let a = &d.attributes;
    let spec = TableSpec {
        table: d.table.clone(),
        index: d.index.clone().filter(|i| !i.is_empty()),
        user_id: named("attributes.user_id", &a.user_id, "user_id")?,
        platform: named("attributes.platform", &a.platform, "platform")?,
        token: named("attributes.token", &a.token, "token")?,
        locale: named("attributes.locale", &a.locale, "locale")?,
        market: named("attributes.market", &a.market, "market")?,
    };
    Ok(DynamoSource { spec, users, aws: d.aws.as_ref().map(|p| base.join(p)) })
}
