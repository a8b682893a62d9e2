//! The runbook engine: one event's shared state, the gates, and every
//! transition, serialized and written to the audit log.
//!
//! Gates live here, never only in a UI: no arm before the workers are warm
//! with the current campaign and its test-send is confirmed; no fire unless
//! armed with the current campaign; a change to the campaign voids the
//! warm-up, the test-send and the arm. Two operators may act at once: each
//! transition takes the state lock, so of two racing arm (or fire) calls one
//! wins and the other is told who did it and when.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::file::{Check, Params, Role, Runbook, Step, StepKind, ZombieWhen};
use super::services::{Services, WarmReport};
use crate::campaign::Campaign;
use crate::fanout::FireOutcome;
use crate::fleet::{self, Group};
use crate::recorder::replay::EventSummary;
use crate::recorder::{AuditEntry, Point, now_ms};
use crate::testsend::TestSendStatus;
use crate::zombie::{Switch, ZombieFlag};

/// A step's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    /// Waiting for its gates.
    Pending,
    /// Gates open; can run.
    Ready,
    /// Someone is running it.
    Running,
    /// Done.
    Done,
    /// Failed (may be run again, or its backup taken).
    Failed,
    /// Skipped, with a reason.
    Skipped,
    /// A backup step: runs only if the step it backs fails.
    Standby,
}

/// Progress of a long step.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StepProgress {
    /// What is counted.
    pub label: String,
    /// So far.
    pub done: f64,
    /// Out of.
    pub total: f64,
    /// Seconds since the step started.
    pub elapsed_s: f64,
}

/// A step's status.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StepStatus {
    /// Step id.
    pub id: String,
    /// State.
    pub state: StepState,
    /// Who ran (or skipped) it.
    pub by: Option<String>,
    /// Started, ms since the epoch.
    pub started_ms: Option<u64>,
    /// Finished.
    pub finished_ms: Option<u64>,
    /// Result or reason, for people.
    pub note: Option<String>,
    /// Progress while running.
    pub progress: Option<StepProgress>,
    /// The step's result, for UIs.
    pub result: Option<serde_json::Value>,
}

/// One gate of a step and whether it is open.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Gate {
    /// What must hold.
    pub what: String,
    /// It holds.
    pub open: bool,
    /// Why not, or since when.
    pub detail: String,
}

/// The armed state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Armed {
    /// Who armed.
    pub by: String,
    /// When.
    pub at_ms: u64,
    /// The campaign content armed.
    pub campaign_hash: String,
}

/// The fire of this event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FireInfo {
    /// Who pressed fire.
    pub by: String,
    /// When (from the ledger).
    pub at_ms: u64,
    /// Ledger id.
    pub fire_id: String,
}

/// The whole event, as UIs and the recorder see it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EventState {
    /// Event id.
    pub event_id: String,
    /// The runbook's name.
    pub runbook: String,
    /// The campaign's current content hash.
    pub campaign_hash: String,
    /// Steps, in order, with their gates.
    pub steps: Vec<(StepStatus, Vec<Gate>)>,
    /// What the workers hold.
    pub warm: Option<WarmReport>,
    /// Armed.
    pub armed: Option<Armed>,
    /// Fired.
    pub fired: Option<FireInfo>,
    /// Aborted: by whom and why.
    pub aborted: Option<(String, String)>,
    /// The outcome of the send, once watched to its end.
    pub summary: Option<EventSummary>,
}

/// Why an action was refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum ActError {
    /// No such step.
    #[error("no step {0:?} in this runbook")]
    NoStep(String),
    /// The actor lacks the step's role.
    #[error("step {step} is for the {role} role; {actor} acts as {roles}")]
    Role {
        /// Step.
        step: String,
        /// Its role.
        role: String,
        /// Who tried.
        actor: String,
        /// Their roles.
        roles: String,
    },
    /// A gate is closed.
    #[error("step {step} is gated: {reasons}")]
    Gated {
        /// Step.
        step: String,
        /// The closed gates.
        reasons: String,
    },
    /// Someone else is running it.
    #[error("step {step} is running (started by {by})")]
    Busy {
        /// Step.
        step: String,
        /// Who.
        by: String,
    },
    /// It was already done: here is the result.
    #[error("step {step} was already {state} by {by} at {at}")]
    AlreadyDone {
        /// Step.
        step: String,
        /// done / skipped.
        state: String,
        /// Who.
        by: String,
        /// When (RFC 3339).
        at: String,
    },
    /// The campaign was fired already (by this event or, in the ledger, anyone).
    #[error("already fired at {at} by {by}")]
    AlreadyFired {
        /// Who.
        by: String,
        /// When (RFC 3339).
        at: String,
    },
    /// The event was aborted.
    #[error("the event was aborted by {by}: {why}")]
    Aborted {
        /// Who.
        by: String,
        /// Why.
        why: String,
    },
    /// The step ran and failed.
    #[error("step {step} failed: {message}")]
    Failed {
        /// Step.
        step: String,
        /// Why.
        message: String,
    },
    /// Anything else (a bad request).
    #[error("{0}")]
    Invalid(String),
}

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

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Return-traffic model: share of devices that open the app within a
/// few seconds of the notification, and how long they keep calling.
const OPEN_RATE: f64 = 0.2;
const OPEN_WINDOW_S: f64 = 10.0;
/// Under zombie mode, the share of clients that still call (old app versions).
const ZOMBIE_LEAK: f64 = 0.05;

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
            fired: None,
            aborted: None,
            summary: None,
            campaign_hash: campaign.hash().to_owned(),
            peak_rps: BTreeMap::new(),
            zombie_seen: std::collections::BTreeSet::new(),
            opened_ms: now_ms(),
            campaign: campaign.clone(),
            finishing: false,
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
        event.audit("kickoff", "", "", "open", "ok", serde_json::json!({ "event": id, "campaign_hash": event.campaign_hash() }));
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

    fn audit(&self, actor: &str, role: &str, step: &str, action: &str, outcome: &str, payload: serde_json::Value) {
        self.audit_at(now_ms(), actor, role, step, action, outcome, payload);
    }

    #[allow(clippy::too_many_arguments, reason = "one audit row's columns")]
    fn audit_at(&self, t_ms: u64, actor: &str, role: &str, step: &str, action: &str, outcome: &str, payload: serde_json::Value) {
        tracing::info!(actor, role, step, action, outcome, "audit");
        if let Some(r) = &self.services.recorder {
            r.audit(AuditEntry {
                t_ms,
                actor: actor.into(),
                role: role.into(),
                step: step.into(),
                action: action.into(),
                outcome: outcome.into(),
                payload: payload.to_string(),
            });
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
                if matches!(s.kind, StepKind::VerifyWarm | StepKind::TestSend | StepKind::Confirm | StepKind::Arm)
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
                "kickoff",
                "",
                "",
                "void",
                "ok",
                serde_json::json!({ "old_hash": old, "new_hash": campaign.hash(), "voided": voided }),
            );
            if let Some(r) = &self.services.recorder {
                r.meta("campaign_hash", campaign.hash());
            }
        }
        Ok(campaign)
    }

    fn satisfied(&self, inner: &Inner, id: &str) -> bool {
        let i = self.runbook.steps.iter().position(|s| s.id == id).expect("validated");
        match inner.steps[i].state {
            StepState::Done | StepState::Skipped => true,
            // A failed step is covered by its backup, once that is done.
            StepState::Failed => {
                self.runbook.steps[i].backup.as_ref().and_then(|b| b.step.as_ref()).is_some_and(|alt| self.satisfied(inner, alt))
            }
            _ => false,
        }
    }

    fn gates_of(&self, inner: &Inner, step: &Step, fleet_ok: Option<bool>) -> Vec<Gate> {
        let mut gates = Vec::new();
        for a in &step.after {
            let ok = self.satisfied(inner, a);
            gates.push(Gate { what: format!("step {a} done"), open: ok, detail: if ok { "done".into() } else { "not yet".into() } });
        }
        let warm_ok = inner.warm.as_ref().is_some_and(|w| w.campaign_hash == inner.campaign_hash && w.all_shards_warm());
        let confirmed = inner.test_send_hash.as_deref() == Some(inner.campaign_hash.as_str());
        let armed_ok = inner.armed.as_ref().is_some_and(|a| a.campaign_hash == inner.campaign_hash);
        let mut checks = step.checks.clone();
        match step.kind {
            StepKind::Arm => checks.extend([Check::AllShardsWarm, Check::TestSendConfirmed]),
            StepKind::Fire => checks.push(Check::Armed),
            _ => {}
        }
        checks.dedup();
        for c in checks {
            let (open, detail) = match c {
                Check::AllShardsWarm => (
                    warm_ok,
                    match &inner.warm {
                        None => "the workers are not warm (run verify-warm)".into(),
                        Some(w) if w.campaign_hash != inner.campaign_hash => "the workers hold an older campaign".into(),
                        Some(w) => format!("{} workers warm", w.workers.len()),
                    },
                ),
                Check::TestSendConfirmed => (
                    confirmed,
                    if confirmed { "confirmed for this campaign".into() } else { "no confirmed test-send of this campaign".into() },
                ),
                Check::Armed => (
                    armed_ok,
                    match &inner.armed {
                        Some(a) if armed_ok => format!("armed by {}", a.by),
                        Some(_) => "armed for an older campaign".into(),
                        None => "not armed".into(),
                    },
                ),
                Check::FleetAtDesired => match fleet_ok {
                    Some(ok) => (ok, if ok { "fleet at desired".into() } else { "fleet below desired".into() }),
                    None => (true, "checked when the step starts".into()),
                },
            };
            gates.push(Gate { what: c.as_str().into(), open, detail });
        }
        gates
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
                self.audit(&actor.name, role.as_str(), id, "start", "refused", serde_json::json!({ "gates": reasons }));
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
            if step.kind == StepKind::Arm {
                inner.armed = Some(Armed { by: actor.name.clone(), at_ms: now_ms(), campaign_hash: inner.campaign_hash.clone() });
            }
        }
        self.audit(&actor.name, role.as_str(), id, "start", "ok", serde_json::to_value(&step.params).unwrap_or_default());
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
            if step.kind == StepKind::Arm && result.is_ok() && inner.armed.is_none() {
                result = Err("disarmed while arming".into());
            }
            let now = now_ms();
            let (state, note, value) = match &result {
                Ok(Outcome::Done(note, value)) => (StepState::Done, note.clone(), value.clone()),
                Ok(Outcome::Skipped(reason)) => (StepState::Skipped, reason.clone(), serde_json::Value::Null),
                Err(message) => (StepState::Failed, message.clone(), serde_json::Value::Null),
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
            &actor.name,
            role.as_str(),
            id,
            action,
            if status.state == StepState::Failed { "failed" } else { "ok" },
            serde_json::json!({ "note": status.note, "result": status.result }),
        );
        if step.kind == StepKind::Arm && status.state == StepState::Done {
            self.audit(&actor.name, role.as_str(), id, "arm", "ok", serde_json::json!({ "campaign_hash": self.campaign_hash() }));
        }
        self.snapshot_to_recorder();
        match result {
            Err(message) => {
                let backup = step.backup.as_ref().map(|b| format!(" Backup plan: {}", b.text)).unwrap_or_default();
                Err(ActError::Failed { step: id.to_owned(), message: format!("{message}.{backup}") })
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
        self.audit(&actor.name, role.as_str(), id, "skip", "ok", serde_json::json!({ "reason": reason }));
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
            if inner.armed.take().is_none() {
                return Err(ActError::Invalid("not armed".into()));
            }
            if let Some(i) = self.runbook.steps.iter().position(|s| s.kind == StepKind::Arm) {
                inner.steps[i].state = StepState::Pending;
                inner.steps[i].note = Some(format!("disarmed by {}", actor.name));
            }
        }
        self.audit(&actor.name, "", "", "disarm", "ok", serde_json::json!({}));
        self.snapshot_to_recorder();
        Ok(())
    }

    /// Aborts the event: a fire in progress stops handing off, pending steps
    /// are skipped, nothing more can run.
    pub fn abort(&self, actor: &Actor, why: &str) -> Result<(), ActError> {
        {
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
        }
        if let Some(h) = self.services.workers.handle() {
            h.abort(&actor.name);
        }
        self.audit(&actor.name, "", "", "abort", "ok", serde_json::json!({ "why": why, "plan": self.runbook.abort_plan }));
        self.snapshot_to_recorder();
        Ok(())
    }

    /// Switches a zombie flag by hand (also what the zombie step does).
    pub fn switch_zombie(&self, actor: &Actor, switch: &Switch) -> Result<ZombieFlag, ActError> {
        let flag = self.services.flags.switch(switch).map_err(|e| ActError::Invalid(e.to_string()))?;
        self.inner.lock().expect("event lock").zombie_seen.insert((flag.backend.clone(), flag.version));
        self.audit(
            &actor.name,
            "ops",
            "",
            if switch.on { "zombie-on" } else { "zombie-off" },
            "ok",
            serde_json::to_value(&flag).unwrap_or_default(),
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

    async fn execute(self: &Arc<Self>, i: usize, step: &Step, actor: &Actor, role: Role, campaign: Campaign) -> Result<Outcome, String> {
        let started = std::time::Instant::now();
        match (&step.kind, &step.params) {
            (StepKind::ScaleAsg | StepKind::ScaleEcs, Params::Scale { desired, timeout }) => {
                let group = if step.kind == StepKind::ScaleAsg { Group::Asg } else { Group::Service };
                self.scale(i, group, *desired, *timeout).await
            }
            (StepKind::ScaleDown, Params::ScaleDown { asg, ecs }) => {
                let timeout = Duration::from_secs(600);
                let a = self.scale(i, Group::Service, *ecs, timeout).await?;
                let b = self.scale(i, Group::Asg, *asg, timeout).await?;
                match (a, b) {
                    (Outcome::Done(x, _), Outcome::Done(y, _)) => Ok(Outcome::Done(format!("{x}; {y}"), serde_json::Value::Null)),
                    _ => Err("scale-down did not finish".into()),
                }
            }
            (StepKind::VerifyWarm, _) => {
                let tasks = self.services.fleet.status(Group::Service).await.map_err(|e| e.to_string())?.running;
                self.progress(i, StepProgress { label: "loading shards into workers".into(), done: 0.0, total: 1.0, elapsed_s: 0.0 });
                let report = self.services.workers.warm(Arc::new(campaign), tasks).await?;
                if !report.all_shards_warm() {
                    return Err(format!("not every worker holds every shard: {:?}", report.workers));
                }
                let note = format!(
                    "{} workers warm: {} shards each, {} devices, campaign {}",
                    report.workers.len(),
                    report.workers.first().map_or(0, |w| w.shards_total),
                    report.devices,
                    &report.campaign_hash[..12]
                );
                let value = serde_json::to_value(&report).unwrap_or_default();
                let mut inner = self.inner.lock().expect("event lock");
                if report.campaign_hash != inner.campaign_hash {
                    return Err("the campaign changed while warming; verify again".into());
                }
                inner.warm = Some(report);
                Ok(Outcome::Done(note, value))
            }
            (StepKind::TestSend, Params::TestSend { silent }) => {
                let campaign = if *silent && !self.silent { campaign.into_silent() } else { campaign };
                let report = self.services.workers.test_send(&campaign, &actor.name).await?;
                self.services.testsends.record(&report).map_err(|e| e.to_string())?;
                let value = serde_json::to_value(&report).unwrap_or_default();
                if !report.all_accepted() {
                    let errors: Vec<String> =
                        report.results.iter().filter_map(|r| r.error.as_ref().map(|e| format!("{}: {e}", r.name))).collect();
                    return Err(format!("test-send had failures: {}", errors.join("; ")));
                }
                Ok(Outcome::Done(format!("sent to {} test recipients; now confirm they arrived", report.results.len()), value))
            }
            (StepKind::Confirm, _) => {
                // Confirm what was test-sent: the silent rendering if the
                // test-send step sent that.
                let hash = campaign.hash().to_owned();
                let silent_test = self.runbook.steps.iter().any(|s| matches!(s.params, Params::TestSend { silent: true }));
                let campaign = if silent_test && !self.silent { campaign.into_silent() } else { campaign };
                let status = self.services.testsends.confirm(&campaign, &actor.name).map_err(|e| e.to_string())?;
                if !matches!(status, TestSendStatus::Confirmed { .. }) {
                    return Err(format!("not confirmed: {status:?}"));
                }
                self.inner.lock().expect("event lock").test_send_hash = Some(hash);
                Ok(Outcome::Done(format!("{} confirmed the test notifications arrived", actor.name), serde_json::Value::Null))
            }
            (StepKind::Arm, _) => {
                Ok(Outcome::Done(format!("armed by {} for campaign {}", actor.name, &campaign.hash()[..12]), serde_json::Value::Null))
            }
            (StepKind::Fire, _) => self.fire(actor, role).await,
            (StepKind::Watch, Params::Watch { max_missing, timeout }) => self.watch(i, *max_missing, *timeout).await,
            (StepKind::Zombie, Params::Zombie { backend, duration, retry_after_s, when }) => {
                let peak = self.inner.lock().expect("event lock").peak_rps.get(backend).copied().unwrap_or(0.0);
                let capacity = self.runbook.backend_capacity.get(backend).copied();
                if *when == ZombieWhen::OverCapacity
                    && let Some(cap) = capacity
                    && peak <= cap
                {
                    return Ok(Outcome::Skipped(format!(
                        "backend {backend} peaked at {peak:.0} req/s, within its {cap:.0} req/s capacity: zombie mode not needed"
                    )));
                }
                let switch = Switch {
                    backend: backend.clone(),
                    on: true,
                    retry_after: Duration::from_secs(*retry_after_s),
                    duration: *duration,
                    by: actor.name.clone(),
                    why: match capacity {
                        Some(cap) => format!("{} step: load {peak:.0} req/s over capacity {cap:.0} req/s", step.id),
                        None => format!("{} step", step.id),
                    },
                };
                let flag = self.switch_zombie(actor, &switch).map_err(|e| e.to_string())?;
                Ok(Outcome::Done(
                    format!("zombie mode on for {backend} until {}", flag.expires_at_ms.map(rfc3339).unwrap_or_default()),
                    serde_json::to_value(&flag).unwrap_or_default(),
                ))
            }
            (StepKind::Checklist, Params::Checklist { items }) => {
                Ok(Outcome::Done(format!("{} items ticked by {}", items.len(), actor.name), serde_json::json!({ "items": items })))
            }
            (StepKind::WaitUntil, _) => {
                let Some(event) = self.runbook.event_time_ms else {
                    return Ok(Outcome::Skipped("the runbook has no event_time; nothing to wait for".into()));
                };
                let at = step.at.expect("validated").at(event);
                loop {
                    let now = now_ms();
                    if now >= at {
                        break;
                    }
                    self.progress(
                        i,
                        StepProgress {
                            label: format!("waiting until {}", rfc3339(at)),
                            done: started.elapsed().as_secs_f64(),
                            total: started.elapsed().as_secs_f64() + (at - now) as f64 / 1000.0,
                            elapsed_s: started.elapsed().as_secs_f64(),
                        },
                    );
                    tokio::time::sleep(Duration::from_millis((at - now).min(1000))).await;
                }
                Ok(Outcome::Done(format!("reached {}", rfc3339(at)), serde_json::Value::Null))
            }
            (kind, params) => Err(format!("step kind {} with {params:?} is not runnable", kind.as_str())),
        }
    }

    async fn scale(self: &Arc<Self>, i: usize, group: Group, desired: u32, timeout: Duration) -> Result<Outcome, String> {
        let this = self.clone();
        let on_status = move |s: &fleet::GroupStatus, elapsed: Duration| {
            this.progress(
                i,
                StepProgress {
                    label: format!("{} {} running", group.as_str(), group.unit()),
                    done: f64::from(s.running),
                    total: f64::from(desired),
                    elapsed_s: elapsed.as_secs_f64(),
                },
            );
        };
        let report = fleet::scale_and_wait(self.services.fleet.as_ref(), group, desired, timeout, super::services::POLL, &on_status)
            .await
            .map_err(|e| e.to_string())?;
        if report.reached {
            Ok(Outcome::Done(report.describe(), serde_json::to_value(&report).unwrap_or_default()))
        } else {
            Err(format!("timed out after {}: {}", humantime::format_duration(timeout), report.describe()))
        }
    }

    async fn fire(self: &Arc<Self>, actor: &Actor, role: Role) -> Result<Outcome, String> {
        let campaign_hash = self.campaign_hash();
        // The press is decided under the event lock: an abort or a disarm
        // either comes first (and nothing is sent) or finds the fire to stop.
        let fired = {
            let inner = self.inner.lock().expect("event lock");
            if let Some((by, why)) = &inner.aborted {
                return Err(format!("the event was aborted by {by}: {why}"));
            }
            if inner.armed.as_ref().is_none_or(|a| a.campaign_hash != inner.campaign_hash) {
                return Err("not armed (disarmed, or the campaign changed)".into());
            }
            self.services.workers.fire(&actor.name)?
        };
        match fired {
            FireOutcome::AlreadyFired(r) => {
                // Fired elsewhere (another window or process on this event):
                // this event now shows that fire, and sends nothing.
                {
                    let mut inner = self.inner.lock().expect("event lock");
                    inner.fired = Some(FireInfo { by: r.operator.clone(), at_ms: r.fired_at_ms, fire_id: r.campaign_id.clone() });
                    inner.armed = None;
                }
                self.audit(&actor.name, role.as_str(), "", "fire", "already-fired", serde_json::to_value(&r).unwrap_or_default());
                Err(format!("already fired at {} by {}", rfc3339(r.fired_at_ms), r.operator))
            }
            FireOutcome::Started(handle) => {
                let fired_at_ms = now_ms().saturating_sub(handle.progress().elapsed.as_millis() as u64);
                let info = FireInfo { by: actor.name.clone(), at_ms: fired_at_ms, fire_id: handle.campaign_id().to_owned() };
                {
                    let mut inner = self.inner.lock().expect("event lock");
                    inner.fired = Some(info.clone());
                    inner.armed = None;
                }
                self.services.live.begin(handle.campaign_id(), fired_at_ms);
                if let Some(r) = &self.services.recorder {
                    r.meta("fired_at_ms", &fired_at_ms.to_string());
                    r.meta("fire_id", handle.campaign_id());
                    r.meta("targeted", &handle.progress().targeted.to_string());
                }
                self.audit_at(
                    fired_at_ms,
                    &actor.name,
                    role.as_str(),
                    "",
                    "fire",
                    "ok",
                    serde_json::json!({ "campaign_hash": campaign_hash, "fire_id": info.fire_id }),
                );
                Ok(Outcome::Done(
                    format!("fired by {} at {}", actor.name, rfc3339(fired_at_ms)),
                    serde_json::to_value(&info).unwrap_or_default(),
                ))
            }
        }
    }

    async fn watch(self: &Arc<Self>, i: usize, max_missing: u64, timeout: Duration) -> Result<Outcome, String> {
        let started = std::time::Instant::now();
        loop {
            if let Some(s) = self.inner.lock().expect("event lock").summary.clone() {
                let value = serde_json::to_value(&s).unwrap_or_default();
                let note = format!(
                    "{} of {} delivered, {} failed, {} duplicates, {} missing; p95 {:.2} s, p99 {:.2} s",
                    s.delivered, s.devices, s.failed, s.duplicates, s.missing, s.p95_s, s.p99_s
                );
                if s.duplicates > 0 || s.missing > max_missing {
                    return Err(format!("{note} (allowed missing: {max_missing}, duplicates: 0)"));
                }
                return Ok(Outcome::Done(note, value));
            }
            let Some(h) = self.services.workers.handle() else { return Err("nothing was fired".into()) };
            let p = h.progress();
            if p.done {
                // The ticker may not run (a library caller); close the fire here.
                self.tick().await;
                continue;
            }
            self.progress(
                i,
                StepProgress {
                    label: "devices delivered".into(),
                    done: p.delivered as f64,
                    total: p.targeted as f64,
                    elapsed_s: started.elapsed().as_secs_f64(),
                },
            );
            if started.elapsed() >= timeout {
                return Err(format!("the send did not finish within {}", humantime::format_duration(timeout)));
            }
            tokio::select! {
                () = self.finished.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }

    /// Samples the event once: fleet counts, zombie flags, the backends'
    /// modelled load, and (during the fire) the send's metrics; when the
    /// fire has ended, writes the summary. Call it once a second.
    pub async fn tick(self: &Arc<Self>) {
        let now = now_ms();
        let rec = self.services.recorder.clone();
        for g in [Group::Asg, Group::Service] {
            if let Ok(s) = self.services.fleet.status(g).await
                && let Some(r) = &rec
            {
                r.point(Point::new(now, &format!("{}_desired", g.as_str()), &[], f64::from(s.desired)));
                r.point(Point::new(now, &format!("{}_running", g.as_str()), &[], f64::from(s.running)));
                r.point(Point::new(now, &format!("{}_pending", g.as_str()), &[], f64::from(s.pending)));
            }
        }
        let flags = self.services.flags.flags().unwrap_or_default();
        // Switches made elsewhere (the CLI, another app) go to the audit log too.
        let since = self.inner.lock().expect("event lock").opened_ms;
        for f in self.services.flags.history(since).unwrap_or_default() {
            if self.inner.lock().expect("event lock").zombie_seen.insert((f.backend.clone(), f.version)) {
                let action = if f.enabled { "zombie-on" } else { "zombie-off" };
                self.audit_at(f.set_at_ms, &f.set_by, "", "", action, "ok", serde_json::to_value(&f).unwrap_or_default());
            }
        }
        let handle = self.services.workers.handle();
        let mut sample = None;
        if let Some(h) = &handle {
            let done = h.progress().done;
            let already = {
                let mut inner = self.inner.lock().expect("event lock");
                let already = inner.summary.is_some() || inner.finishing;
                if done && !already {
                    inner.finishing = true;
                }
                already
            };
            if !already {
                let s = self.services.live.sample(h.campaign_id(), now, done);
                if done {
                    self.finish(h, &s).await;
                }
                sample = Some(s);
            }
        }
        // Return traffic: a share of the devices delivered in the last few
        // seconds open the app and call each backend, unless it is a zombie.
        let recent = sample.as_ref().map_or(0.0, |s| {
            let secs = s.sent_per_second.len();
            let from = secs.saturating_sub(OPEN_WINDOW_S as usize);
            s.sent_per_second[from..].iter().map(|x| (x[0] + x[1]) as f64).sum::<f64>() / OPEN_WINDOW_S
        });
        for (backend, cap) in &self.runbook.backend_capacity {
            let zombie = flags.iter().any(|f| &f.backend == backend && f.active(now));
            let demand = cap * 0.1 + recent * OPEN_RATE;
            let rps = if zombie { demand * ZOMBIE_LEAK } else { demand };
            let peak = {
                let mut inner = self.inner.lock().expect("event lock");
                let p = inner.peak_rps.entry(backend.clone()).or_default();
                *p = p.max(rps);
                *p
            };
            if let Some(r) = &rec {
                r.point(Point::new(now, "backend_rps", &[("backend", backend)], rps));
                r.point(Point::new(now, "backend_peak_rps", &[("backend", backend)], peak));
            }
        }
        if let Some(r) = &rec {
            for b in &self.runbook.backends {
                let on = flags.iter().any(|f| &f.backend == b && f.active(now));
                r.point(Point::new(now, "zombie", &[("backend", b)], f64::from(u8::from(on))));
            }
        }
        self.bump();
    }

    async fn finish(&self, h: &crate::fanout::FireHandle, last: &crate::recorder::live::Sample) {
        let report = h.wait().await;
        let received = self.services.workers.received(report.delivered);
        // The campaign as the event knows it (its id and file hash, not the
        // fire id the ledger keys on).
        let (fired, campaign_id, campaign_hash) = {
            let inner = self.inner.lock().expect("event lock");
            (inner.fired.clone(), inner.campaign.id.clone(), inner.campaign_hash.clone())
        };
        let summary = EventSummary {
            campaign_id,
            campaign_hash,
            devices: report.targeted,
            delivered: report.delivered,
            failed: report.failed,
            duplicates: received.duplicates,
            missing: report.targeted.saturating_sub(report.delivered + report.failed),
            p50_s: last.p50_s,
            p95_s: last.p95_s,
            p99_s: last.p99_s,
            max_s: self.services.live.snapshot(h.campaign_id()).latency.max().as_secs_f64(),
            failed_by_reason: report.failed_by_reason.clone(),
            fired_by: fired.as_ref().map(|f| f.by.clone()),
            fired_at_ms: fired.as_ref().map(|f| f.at_ms),
        };
        if let Some(r) = &self.services.recorder {
            let now = now_ms();
            r.point(Point::new(now, "receiver_delivered", &[], received.delivered as f64));
            r.point(Point::new(now, "receiver_duplicates", &[], received.duplicates as f64));
            r.meta("summary", &serde_json::to_string(&summary).expect("summary serializes"));
            r.meta("fire_report", &serde_json::to_string(&*report).expect("report serializes"));
            r.meta("measured_at", received.measured_at);
        }
        self.inner.lock().expect("event lock").summary = Some(summary);
        self.audit("kickoff", "", "", "fire-complete", if report.aborted { "aborted" } else { "ok" }, serde_json::json!({
            "delivered": report.delivered, "failed": report.failed, "duplicates": received.duplicates, "measured_at": received.measured_at
        }));
        self.finished.notify_waiters();
        self.snapshot_to_recorder();
    }

    /// Starts the once-a-second sampler on the current runtime; it stops
    /// when the event is dropped.
    pub fn start_ticker(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_secs(1));
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let Some(event) = weak.upgrade() else { return };
                event.tick().await;
            }
        })
    }

    /// Ends the event: a last sample, then the recorder is closed.
    pub async fn close(self: &Arc<Self>) {
        self.tick().await;
        self.audit("kickoff", "", "", "close", "ok", serde_json::json!({}));
        self.snapshot_to_recorder();
        self.services.workers.shutdown();
        if let Some(r) = &self.services.recorder
            && let Err(e) = r.close()
        {
            tracing::error!("{e}");
        }
    }
}

/// How a step's work ended.
#[derive(Debug)]
enum Outcome {
    Done(String, serde_json::Value),
    Skipped(String),
}

fn load_campaign(runbook: &Runbook, silent: bool) -> Result<Campaign, ActError> {
    let c = Campaign::load(&runbook.campaign).map_err(|e| ActError::Invalid(format!("campaign: {e}")))?;
    Ok(if silent { c.into_silent() } else { c })
}
