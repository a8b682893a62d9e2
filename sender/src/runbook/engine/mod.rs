//! The runbook engine: one event's shared state, the gates, and every
//! transition, serialized and written to the audit log.
//!
//! Gates live here, never only in a UI: no arm before the workers are warm
//! with the current campaign and its test-send is confirmed; no fire unless
//! armed with the current campaign; a change to the campaign voids the
//! warm-up, the test-send and the arm. Two operators may act at once: each
//! transition takes the state lock, so of two racing arm (or fire) calls one
//! wins and the other is told who did it and when.
//!
//! - [`state`]: what an event shows (steps, gates, arm, fire) and
//!   [`ActError`], why an action was refused.
//! - `steps`: one executor per step kind.
//! - `ticker`: the once-a-second sampler, the return-traffic model and the
//!   end-of-fire summary.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::file::{Check, Role, Runbook, Step, StepKind};
use super::services::Services;
use super::workers::WarmReport;
use crate::campaign::Campaign;
use crate::clock::rfc3339_s as rfc3339;
use crate::fleet::Group;
use crate::recorder::replay::EventSummary;
use crate::recorder::{AuditEntry, now_ms};
use crate::zombie::{Switch, ZombieFlag};

mod approve;
mod gates;
pub mod state;
mod steps;
mod ticker;

pub use state::{ActError, Armed, EventState, FailureCause, FireInfo, Gate, Interrupted, StepProgress, StepState, StepStatus};
use steps::Outcome;

/// Who acts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Name.
    pub name: String,
    /// Roles taken.
    pub roles: Vec<Role>,
}

impl Actor {
    /// An operator with every role.
    pub fn all_roles(name: &str) -> Self {
        Self { name: name.to_owned(), roles: Role::ALL.to_vec() }
    }

    fn role_for(&self, step: &Step) -> Result<Role, ActError> {
        if self.roles.contains(&step.role) {
            Ok(step.role)
        } else {
            Err(ActError::Role {
                step: step.id.clone(),
                role: step.role.as_str().into(),
                actor: self.name.clone(),
                roles: self.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", "),
            })
        }
    }
}

#[derive(Debug)]
struct Inner {
    steps: Vec<StepStatus>,
    warm: Option<WarmReport>,
    test_send_hash: Option<String>,
    armed: Option<Armed>,
    /// Bumped by a disarm: an arm waiting for approvals gives up.
    disarms: u64,
    /// Approvals count from here on (the last disarm, ms since the epoch).
    approvals_since_ms: u64,
    fired: Option<FireInfo>,
    aborted: Option<(String, String)>,
    summary: Option<EventSummary>,
    campaign_hash: String,
    /// Peak modelled load per backend since the fire.
    peak_rps: BTreeMap<String, f64>,
    /// Zombie switches already in the audit log, by (backend, version).
    zombie_seen: std::collections::BTreeSet<(String, u64)>,
    /// When the event opened (ms since the epoch).
    opened_ms: u64,
    /// The campaign as last loaded (kept after the fire: a half-saved file
    /// must not block the steps that follow).
    campaign: Campaign,
    /// The fire's completion is being recorded (by the ticker or watch).
    finishing: bool,
    /// The fire stopped short: resumable.
    interrupted: Option<Interrupted>,
}

/// One event: a runbook being walked.
#[derive(Debug)]
pub struct Event {
    id: String,
    runbook: Runbook,
    silent: bool,
    services: Services,
    inner: Mutex<Inner>,
    changed: tokio::sync::watch::Sender<u64>,
    /// Wakes `watch` when the send's outcome is known.
    finished: tokio::sync::Notify,
}

impl Event {
    /// Opens an event for `runbook` on `services`.
    pub fn new(id: &str, runbook: Runbook, services: Services) -> Result<Arc<Self>, ActError> {
        let silent = runbook.silent;
        let steps = runbook
            .steps
            .iter()
            .map(|s| StepStatus {
                id: s.id.clone(),
                state: if s.backup_for.is_some() { StepState::Standby } else { StepState::Pending },
                by: None,
                started_ms: None,
                finished_ms: None,
                note: s.backup_for.as_ref().map(|f| format!("backup for {f}: runs only if it fails")),
                progress: None,
                result: None,
            })
            .collect();
        let campaign = load_campaign(&runbook, silent)?;
        let inner = Inner {
            steps,
            warm: None,
            test_send_hash: None,
            armed: None,
            disarms: 0,
            approvals_since_ms: 0,
            fired: None,
            aborted: None,
            summary: None,
            campaign_hash: campaign.hash().to_owned(),
            peak_rps: BTreeMap::new(),
            zombie_seen: std::collections::BTreeSet::new(),
            opened_ms: now_ms(),
            campaign: campaign.clone(),
            finishing: false,
            interrupted: None,
        };
        if let Some(r) = &services.recorder {
            r.meta("event_id", id);
            r.meta("runbook", &runbook.name);
            r.meta("runbook_file", &runbook.path.display().to_string());
            r.meta("runbook_plan", &runbook.plan_json());
            r.meta("campaign_id", &campaign.id);
            r.meta("campaign_hash", campaign.hash());
            if let Some(t) = runbook.event_time_ms {
                r.meta("event_time_ms", &t.to_string());
            }
        }
        let (changed, _) = tokio::sync::watch::channel(0);
        let event = Arc::new(Self {
            id: id.to_owned(),
            runbook,
            silent,
            services,
            inner: Mutex::new(inner),
            changed,
            finished: tokio::sync::Notify::new(),
        });
        event.audit(
            AuditEntry::new("kickoff", "open", "ok").payload(&serde_json::json!({ "event": id, "campaign_hash": event.campaign_hash() })),
        );
        event.snapshot_to_recorder();
        Ok(event)
    }

    /// The event id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The runbook.
    pub fn runbook(&self) -> &Runbook {
        &self.runbook
    }

    /// The services.
    pub fn services(&self) -> &Services {
        &self.services
    }

    /// The campaign's content hash when last checked.
    pub fn campaign_hash(&self) -> String {
        self.inner.lock().expect("event lock").campaign_hash.clone()
    }

    /// A receiver that changes on every transition and progress update.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    fn audit(&self, entry: AuditEntry) {
        tracing::info!(actor = entry.actor, role = entry.role, step = entry.step, action = entry.action, outcome = entry.outcome, "audit");
        if let Some(r) = &self.services.recorder {
            r.audit(entry);
        }
    }

    fn snapshot_to_recorder(&self) {
        if let Some(r) = &self.services.recorder {
            r.snapshot(serde_json::to_string(&self.state()).expect("state serializes"));
        }
        self.bump();
    }

    fn index(&self, id: &str) -> Result<usize, ActError> {
        self.runbook.steps.iter().position(|s| s.id == id).ok_or_else(|| ActError::NoStep(id.to_owned()))
    }

    /// Re-reads the campaign; if its content changed, voids the warm-up,
    /// the test-send and the arm (before the fire only).
    fn check_campaign(&self, inner: &mut Inner) -> Result<Campaign, ActError> {
        if inner.fired.is_some() {
            return Ok(inner.campaign.clone());
        }
        let campaign = load_campaign(&self.runbook, self.silent)?;
        inner.campaign = campaign.clone();
        if campaign.hash() != inner.campaign_hash && inner.fired.is_none() {
            let old = std::mem::replace(&mut inner.campaign_hash, campaign.hash().to_owned());
            let mut voided = Vec::new();
            for (i, s) in self.runbook.steps.iter().enumerate() {
                let st = &mut inner.steps[i];
                if matches!(s.kind, StepKind::VerifyWarm | StepKind::TestSend | StepKind::Confirm | StepKind::Plan | StepKind::Arm)
                    && st.state == StepState::Done
                {
                    st.state = StepState::Pending;
                    st.note = Some(format!("voided: the campaign changed (was {})", &old[..12.min(old.len())]));
                    st.result = None;
                    voided.push(s.id.clone());
                }
            }
            inner.warm = None;
            inner.test_send_hash = None;
            inner.armed = None;
            self.audit(
                AuditEntry::new("kickoff", "void", "ok")
                    .payload(&serde_json::json!({ "old_hash": old, "new_hash": campaign.hash(), "voided": voided })),
            );
            if let Some(r) = &self.services.recorder {
                r.meta("campaign_hash", campaign.hash());
            }
        }
        Ok(campaign)
    }

    /// The event now.
    pub fn state(&self) -> EventState {
        let inner = self.inner.lock().expect("event lock");
        let steps = self
            .runbook
            .steps
            .iter()
            .zip(&inner.steps)
            .map(|(s, st)| {
                let gates = self.gates_of(&inner, s, None);
                let mut st = st.clone();
                if st.state == StepState::Pending && inner.aborted.is_none() && gates.iter().all(|g| g.open) {
                    st.state = StepState::Ready;
                }
                (st, gates)
            })
            .collect();
        EventState {
            event_id: self.id.clone(),
            runbook: self.runbook.name.clone(),
            campaign_hash: inner.campaign_hash.clone(),
            steps,
            warm: inner.warm.clone(),
            armed: inner.armed.clone(),
            fired: inner.fired.clone(),
            aborted: inner.aborted.clone(),
            summary: inner.summary.clone(),
            interrupted: inner.interrupted.clone(),
        }
    }

    /// The next step to act on: the first one ready (or failed, to retry or
    /// back up), in order.
    pub fn next_step(&self) -> Option<String> {
        let state = self.state();
        state
            .steps
            .iter()
            .find(|(s, _)| matches!(s.state, StepState::Ready | StepState::Failed | StepState::Running))
            .map(|(s, _)| s.id.clone())
    }

    /// Runs step `id` as `actor`. Long steps (scaling, watching) report
    /// progress through [`Event::subscribe`] and [`Event::state`].
    pub async fn run_step(self: &Arc<Self>, id: &str, actor: &Actor) -> Result<StepStatus, ActError> {
        let i = self.index(id)?;
        let step = self.runbook.steps[i].clone();
        let role = actor.role_for(&step)?;
        let needs_fleet = step.checks.contains(&Check::FleetAtDesired);
        let fleet_ok = if needs_fleet { Some(self.fleet_at_desired().await) } else { None };
        let campaign;
        let started_hash;
        {
            let mut inner = self.inner.lock().expect("event lock");
            if let Some((by, why)) = &inner.aborted {
                return Err(ActError::Aborted { by: by.clone(), why: why.clone() });
            }
            campaign = self.check_campaign(&mut inner)?;
            started_hash = inner.campaign_hash.clone();
            if step.kind == StepKind::Fire
                && let Some(f) = &inner.fired
            {
                return Err(ActError::AlreadyFired { by: f.by.clone(), at: rfc3339(f.at_ms) });
            }
            let st = &inner.steps[i];
            match st.state {
                StepState::Running => return Err(ActError::Busy { step: step.id.clone(), by: st.by.clone().unwrap_or_default() }),
                StepState::Done | StepState::Skipped => {
                    if step.kind == StepKind::Fire
                        && let Some(f) = &inner.fired
                    {
                        return Err(ActError::AlreadyFired { by: f.by.clone(), at: rfc3339(f.at_ms) });
                    }
                    return Err(ActError::AlreadyDone {
                        step: step.id.clone(),
                        state: if st.state == StepState::Done { "done".into() } else { "skipped".into() },
                        by: st.by.clone().unwrap_or_default(),
                        at: st.finished_ms.map(rfc3339).unwrap_or_default(),
                    });
                }
                StepState::Standby => {
                    return Err(ActError::Gated { step: step.id.clone(), reasons: st.note.clone().unwrap_or_default() });
                }
                _ => {}
            }
            let closed: Vec<String> = self
                .gates_of(&inner, &step, fleet_ok)
                .into_iter()
                .filter(|g| !g.open)
                .map(|g| format!("{} ({})", g.what, g.detail))
                .collect();
            if !closed.is_empty() {
                let reasons = closed.join("; ");
                self.audit(
                    AuditEntry::new(&actor.name, "start", "refused")
                        .role(role.as_str())
                        .step(id)
                        .payload(&serde_json::json!({ "gates": reasons })),
                );
                return Err(ActError::Gated { step: step.id.clone(), reasons });
            }
            let st = &mut inner.steps[i];
            st.state = StepState::Running;
            st.by = Some(actor.name.clone());
            st.started_ms = Some(now_ms());
            st.finished_ms = None;
            st.progress = None;
            st.note = None;
            // Arm is decided under the lock: of two racing arms, one wins.
            // An arm that needs approvals is armed once they are in.
            if step.kind == StepKind::Arm && self.runbook.arm_approvals.is_none() {
                inner.armed = Some(Armed { by: actor.name.clone(), at_ms: now_ms(), campaign_hash: inner.campaign_hash.clone() });
            }
        }
        self.audit(
            AuditEntry::new(&actor.name, "start", "ok")
                .role(role.as_str())
                .step(id)
                .payload(&serde_json::to_value(&step.params).unwrap_or_default()),
        );
        self.snapshot_to_recorder();

        let mut result = self.execute(i, &step, actor, role, campaign).await;

        let status = {
            let mut inner = self.inner.lock().expect("event lock");
            // A step bound to the campaign's content that ran while the
            // content changed proves nothing about the new content.
            let bound = matches!(step.kind, StepKind::VerifyWarm | StepKind::TestSend | StepKind::Confirm | StepKind::Arm);
            if bound && result.is_ok() && inner.campaign_hash != started_hash {
                result = Err("the campaign changed while this step ran; run it again".into());
            }
            if step.kind == StepKind::Arm && result.is_ok() {
                if let Some((by, why)) = inner.aborted.clone() {
                    result = Err(steps::StepError::from(ActError::Aborted { by, why }));
                } else if self.runbook.arm_approvals.is_some() {
                    inner.armed = Some(Armed { by: actor.name.clone(), at_ms: now_ms(), campaign_hash: inner.campaign_hash.clone() });
                } else if inner.armed.is_none() {
                    result = Err("disarmed while arming".into());
                }
            }
            let now = now_ms();
            let (state, note, value) = match &result {
                Ok(Outcome::Done(note, value)) => (StepState::Done, note.clone(), value.clone()),
                Ok(Outcome::Skipped(reason)) => (StepState::Skipped, reason.clone(), serde_json::Value::Null),
                Err(e) => (StepState::Failed, e.to_string(), serde_json::Value::Null),
            };
            let st = &mut inner.steps[i];
            st.state = state;
            st.finished_ms = Some(now);
            st.note = Some(note);
            st.result = (!value.is_null()).then_some(value);
            let status = st.clone();
            // The backup plan: a failed step wakes its alternative; a done
            // step puts it back to sleep.
            if let Some(alt) = step.backup.as_ref().and_then(|b| b.step.as_ref())
                && let Some(j) = self.runbook.steps.iter().position(|s| &s.id == alt)
            {
                let a = &mut inner.steps[j];
                match state {
                    StepState::Failed if a.state == StepState::Standby => {
                        a.state = StepState::Pending;
                        a.note = Some(format!("backup for {id}, which failed"));
                    }
                    StepState::Done | StepState::Skipped if a.state == StepState::Standby => {
                        a.state = StepState::Skipped;
                        a.note = Some(format!("not needed: {id} {}", if state == StepState::Done { "done" } else { "skipped" }));
                    }
                    _ => {}
                }
            }
            if step.kind == StepKind::Arm && state != StepState::Done {
                inner.armed = None;
            }
            status
        };
        let action = match status.state {
            StepState::Done => "done",
            StepState::Skipped => "skip",
            _ => "fail",
        };
        self.audit(
            AuditEntry::new(&actor.name, action, if status.state == StepState::Failed { "failed" } else { "ok" })
                .role(role.as_str())
                .step(id)
                .payload(&serde_json::json!({ "note": status.note, "result": status.result })),
        );
        if step.kind == StepKind::Arm && status.state == StepState::Done {
            self.audit(
                AuditEntry::new(&actor.name, "arm", "ok")
                    .role(role.as_str())
                    .step(id)
                    .payload(&serde_json::json!({ "campaign_hash": self.campaign_hash() })),
            );
        }
        self.snapshot_to_recorder();
        match result {
            Err(e) => {
                let backup = step.backup.as_ref().map(|b| format!(" Backup plan: {}", b.text)).unwrap_or_default();
                Err(ActError::Failed { step: id.to_owned(), message: format!("{e}.{backup}"), cause: e.cause() })
            }
            Ok(_) => Ok(status),
        }
    }

    /// Skips step `id` with a reason. Arm and fire cannot be skipped into
    /// "done": skipping them only means the event will not fire.
    pub fn skip(&self, id: &str, actor: &Actor, reason: &str) -> Result<StepStatus, ActError> {
        let i = self.index(id)?;
        let step = &self.runbook.steps[i];
        let role = actor.role_for(step)?;
        if reason.trim().is_empty() {
            return Err(ActError::Invalid(format!("skipping {id} needs a reason")));
        }
        let status = {
            let mut inner = self.inner.lock().expect("event lock");
            let st = &mut inner.steps[i];
            if matches!(st.state, StepState::Running | StepState::Done | StepState::Skipped) {
                return Err(ActError::Invalid(format!("step {id} is {:?} and cannot be skipped", st.state).to_lowercase()));
            }
            st.state = StepState::Skipped;
            st.by = Some(actor.name.clone());
            st.finished_ms = Some(now_ms());
            st.note = Some(reason.to_owned());
            st.clone()
        };
        self.audit(
            AuditEntry::new(&actor.name, "skip", "ok").role(role.as_str()).step(id).payload(&serde_json::json!({ "reason": reason })),
        );
        self.snapshot_to_recorder();
        Ok(status)
    }

    /// Disarms (before the fire).
    pub fn disarm(&self, actor: &Actor) -> Result<(), ActError> {
        {
            let mut inner = self.inner.lock().expect("event lock");
            if let Some(f) = &inner.fired {
                return Err(ActError::AlreadyFired { by: f.by.clone(), at: rfc3339(f.at_ms) });
            }
            let arm = self.runbook.steps.iter().position(|s| s.kind == StepKind::Arm);
            // An arm waiting for approvals is called off too.
            let waiting = arm.is_some_and(|i| inner.steps[i].state == StepState::Running) && self.runbook.arm_approvals.is_some();
            if inner.armed.take().is_none() && !waiting {
                return Err(ActError::Invalid("not armed".into()));
            }
            // Approvals given before a disarm never arm again, nor those of
            // its own millisecond (an approval a moment before the disarm
            // can carry the same time); later ones are dated from the next
            // millisecond on (`approve_as`).
            inner.disarms += 1;
            inner.approvals_since_ms = now_ms() + 1;
            if let Some(i) = arm.filter(|_| !waiting) {
                inner.steps[i].state = StepState::Pending;
                inner.steps[i].note = Some(format!("disarmed by {}", actor.name));
            }
        }
        self.audit(AuditEntry::new(&actor.name, "disarm", "ok"));
        self.snapshot_to_recorder();
        Ok(())
    }

    /// Aborts the event: a fire in progress stops handing off, pending steps
    /// are skipped, nothing more can run.
    pub fn abort(&self, actor: &Actor, why: &str) -> Result<(), ActError> {
        let campaign_id = {
            let mut inner = self.inner.lock().expect("event lock");
            if let Some((by, why)) = &inner.aborted {
                return Err(ActError::Aborted { by: by.clone(), why: why.clone() });
            }
            inner.aborted = Some((actor.name.clone(), why.to_owned()));
            inner.armed = None;
            for st in &mut inner.steps {
                if matches!(st.state, StepState::Pending | StepState::Ready | StepState::Standby | StepState::Failed) {
                    st.state = StepState::Skipped;
                    st.note = Some(format!("aborted by {}: {why}", actor.name));
                }
            }
            inner.campaign.id.clone()
        };
        if let Some(h) = self.services.workers.handle() {
            h.abort(&actor.name);
        }
        // The fire may be sending in another process (this window or walk
        // joined the event): the ledger carries the abort to it.
        if let Err(e) = self.services.workers.request_abort(&campaign_id, &actor.name, why) {
            tracing::error!(error = %e, "could not record the abort in the ledger");
            self.audit(AuditEntry::new(&actor.name, "abort", "error").payload(&serde_json::json!({ "why": why, "error": e.to_string() })));
        }
        self.audit(
            AuditEntry::new(&actor.name, "abort", "ok").payload(&serde_json::json!({ "why": why, "plan": self.runbook.abort_plan })),
        );
        self.snapshot_to_recorder();
        Ok(())
    }

    /// Resumes this event's interrupted fire: sends exactly the devices
    /// without a final answer (an engineer's act; the workers must be warm
    /// with the campaign). The fire step shows it done again, and the steps
    /// after it that failed (the watch) can run again.
    pub fn resume(&self, actor: &Actor) -> Result<FireInfo, ActError> {
        if !actor.roles.contains(&Role::Engineer) {
            return Err(ActError::Role {
                step: "resume".into(),
                role: Role::Engineer.as_str().into(),
                actor: actor.name.clone(),
                roles: actor.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", "),
            });
        }
        let interrupted = {
            let inner = self.inner.lock().expect("event lock");
            if let Some((by, why)) = &inner.aborted {
                return Err(ActError::Aborted { by: by.clone(), why: why.clone() });
            }
            let Some(i) = inner.interrupted.clone() else {
                return Err(ActError::Invalid("nothing to resume: this event's fire is not interrupted".into()));
            };
            let warm = inner.warm.as_ref().is_some_and(|w| w.campaign_hash == inner.campaign_hash && w.all_shards_warm());
            if !warm {
                return Err(ActError::Gated {
                    step: "resume".into(),
                    reasons: "the workers are not warm with this campaign (run verify-warm)".into(),
                });
            }
            i
        };
        let failed = |message: String, cause| ActError::Failed { step: "resume".into(), message, cause };
        let outcome = self.services.workers.resume(&actor.name).map_err(|e| {
            let e = steps::StepError::from(e);
            failed(e.to_string(), e.cause())
        })?;
        let handle = match outcome {
            crate::fanout::FireOutcome::Started(h) => h,
            crate::fanout::FireOutcome::AlreadyFired(r) => {
                // Resumed elsewhere, or still sending somewhere.
                return Err(ActError::AlreadyFired { by: r.operator, at: rfc3339(r.fired_at_ms) });
            }
            crate::fanout::FireOutcome::NeverFired => return Err(ActError::Invalid("the fire is not in the ledger".into())),
            crate::fanout::FireOutcome::Mismatch { record, now } => {
                return Err(ActError::Invalid(format!(
                    "the fire was sent from {} but the workers hold {now}: verify-warm the audience and campaign it was fired with",
                    record.warm_checksum.unwrap_or_default()
                )));
            }
        };
        let info = FireInfo { by: interrupted.by.clone(), at_ms: interrupted.at_ms, fire_id: handle.campaign_id().to_owned() };
        {
            let mut inner = self.inner.lock().expect("event lock");
            inner.interrupted = None;
            inner.summary = None;
            inner.finishing = false;
            inner.fired = Some(info.clone());
            let fire = self.runbook.steps.iter().position(|s| s.kind == StepKind::Fire);
            for (i, s) in self.runbook.steps.iter().enumerate() {
                let st = &mut inner.steps[i];
                if s.kind == StepKind::Fire {
                    st.state = StepState::Done;
                    st.note = Some(format!("resumed by {} at {}", actor.name, rfc3339(now_ms())));
                } else if fire.is_some_and(|f| i > f) && st.state == StepState::Failed {
                    st.state = StepState::Pending;
                    st.note = Some("the fire was resumed: run it again".into());
                }
            }
        }
        self.services.live.begin(handle.campaign_id(), interrupted.at_ms);
        self.audit(AuditEntry::new(&actor.name, "resume", "ok").role(Role::Engineer.as_str()).payload(&serde_json::json!({
            "fire_id": info.fire_id, "answered": interrupted.answered, "targeted": interrupted.targeted, "sending": handle.progress().targeted
        })));
        self.snapshot_to_recorder();
        Ok(info)
    }

    /// Switches a zombie flag by hand (also what the zombie step does).
    pub fn switch_zombie(&self, actor: &Actor, switch: &Switch) -> Result<ZombieFlag, ActError> {
        let flag = self.services.flags.switch(switch).map_err(|e| ActError::Invalid(e.to_string()))?;
        self.inner.lock().expect("event lock").zombie_seen.insert((flag.backend.clone(), flag.version));
        self.audit(
            AuditEntry::new(&actor.name, if switch.on { "zombie-on" } else { "zombie-off" }, "ok")
                .role("ops")
                .payload(&serde_json::to_value(&flag).unwrap_or_default()),
        );
        self.bump();
        Ok(flag)
    }

    async fn fleet_at_desired(&self) -> bool {
        let mut ok = true;
        for g in [Group::Asg, Group::Service] {
            match self.services.fleet.status(g).await {
                Ok(s) => ok &= s.running >= s.desired && s.pending == 0,
                Err(_) => ok = false,
            }
        }
        ok
    }

    fn progress(&self, i: usize, p: StepProgress) {
        self.inner.lock().expect("event lock").steps[i].progress = Some(p);
        self.bump();
    }
}

fn load_campaign(runbook: &Runbook, silent: bool) -> Result<Campaign, ActError> {
    let c = Campaign::load(&runbook.campaign).map_err(|e| ActError::Invalid(format!("campaign: {e}")))?;
    Ok(if silent { c.into_silent() } else { c })
}
