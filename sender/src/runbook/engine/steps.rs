//! One executor per step kind: scaling, warming, test-sending, confirming,
//! arming, firing, watching, zombie switches, checklists and waits. The
//! engine (`super`) decides whether a step may run; these do its work.

use std::sync::Arc;
use std::time::Duration;

use super::{Actor, Event, FailureCause, FireInfo, Interrupted};
use crate::campaign::Campaign;
use crate::clock::rfc3339_s as rfc3339;
use crate::fanout::FireOutcome;
use crate::fleet::{self, FleetError, Group};
use crate::recorder::{AuditEntry, now_ms};
use crate::runbook::StepProgress;
use crate::runbook::file::{Params, Role, Step, StepKind, ZombieWhen};
use crate::runbook::workers::WorkersError;
use crate::testsend::{TestSendError, TestSendStatus};
use crate::zombie::Switch;

/// How a step's work ended.
#[derive(Debug)]
pub(super) enum Outcome {
    /// Done, with a note and a result for the audit log.
    Done(String, serde_json::Value),
    /// Nothing to do, and why.
    Skipped(String),
}

/// Why a step's work failed. The engine reports it as
/// [`super::ActError::Failed`] with its [`FailureCause`].
#[derive(Debug, thiserror::Error)]
pub(super) enum StepError {
    /// The fleet refused or did not answer.
    #[error(transparent)]
    Fleet(#[from] FleetError),
    /// The fleet did not reach the size asked for in time.
    #[error("timed out after {}: {report}", humantime::format_duration(*after))]
    Capacity {
        /// How long it waited.
        after: Duration,
        /// Where the group stood.
        report: String,
    },
    /// The workers failed.
    #[error(transparent)]
    Workers(#[from] WorkersError),
    /// The test-send store failed.
    #[error(transparent)]
    TestSend(#[from] TestSendError),
    /// A zombie switch was refused.
    #[error(transparent)]
    Act(#[from] super::ActError),
    /// Someone fired first (another window or process).
    #[error("already fired at {at} by {by}")]
    AlreadyFired {
        /// Who.
        by: String,
        /// When (RFC 3339).
        at: String,
    },
    /// The fire was interrupted (its process stopped before every device
    /// had an answer): resume it rather than fire again.
    #[error(
        "the fire of {fire_id} (at {at} by {by}) was interrupted before every device had an answer: an engineer can resume it (Resume in the app, `resume` in a walk, or kickoff-sender fire … --resume with the fire's arguments)"
    )]
    Interrupted {
        /// The fire key.
        fire_id: String,
        /// Who fired.
        by: String,
        /// When (RFC 3339).
        at: String,
    },
    /// The step ran and its result says no.
    #[error("{0}")]
    Refused(String),
}

impl From<String> for StepError {
    fn from(message: String) -> Self {
        Self::Refused(message)
    }
}

impl From<&str> for StepError {
    fn from(message: &str) -> Self {
        Self::Refused(message.to_owned())
    }
}

impl StepError {
    /// What kind of failure it is, for the faces to act on.
    pub(super) fn cause(&self) -> FailureCause {
        use crate::provider::SetupError;
        match self {
            Self::Fleet(FleetError::Invalid(_)) => FailureCause::Step,
            Self::Fleet(_) | Self::Workers(WorkersError::Platform(_)) => FailureCause::Unavailable,
            Self::Capacity { .. } | Self::Workers(WorkersError::NoTasks | WorkersError::WarmTimeout { .. }) => FailureCause::Capacity,
            Self::Workers(WorkersError::Provider(SetupError::Push(_) | SetupError::Unserved { .. })) => FailureCause::Credentials,
            Self::AlreadyFired { .. } | Self::Interrupted { .. } => FailureCause::AlreadyFired,
            Self::Workers(WorkersError::Internal(_)) => FailureCause::Internal,
            _ => FailureCause::Step,
        }
    }
}

impl Event {
    pub(super) async fn execute(
        self: &Arc<Self>,
        i: usize,
        step: &Step,
        actor: &Actor,
        role: Role,
        campaign: Campaign,
    ) -> Result<Outcome, StepError> {
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
                let tasks = self.services.fleet.status(Group::Service).await?.running;
                self.progress(i, StepProgress { label: "loading shards into workers".into(), done: 0.0, total: 1.0, elapsed_s: 0.0 });
                let report = self.services.workers.warm(Arc::new(campaign), tasks).await?;
                if !report.all_shards_warm() {
                    return Err(format!("not every worker holds every shard: {:?}", report.workers).into());
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
                self.services.testsends.record(&report)?;
                let value = serde_json::to_value(&report).unwrap_or_default();
                if !report.all_accepted() {
                    let errors: Vec<String> =
                        report.results.iter().filter_map(|r| r.error.as_ref().map(|e| format!("{}: {e}", r.name))).collect();
                    return Err(format!("test-send had failures: {}", errors.join("; ")).into());
                }
                Ok(Outcome::Done(format!("sent to {} test recipients; now confirm they arrived", report.results.len()), value))
            }
            (StepKind::Confirm, _) => {
                // Confirm what was test-sent: the silent rendering if the
                // test-send step sent that.
                let hash = campaign.hash().to_owned();
                let silent_test = self.runbook.steps.iter().any(|s| matches!(s.params, Params::TestSend { silent: true }));
                let campaign = if silent_test && !self.silent { campaign.into_silent() } else { campaign };
                let status = self.services.testsends.confirm(&campaign, &actor.name)?;
                if !matches!(status, TestSendStatus::Confirmed { .. }) {
                    return Err(format!("not confirmed: {status:?}").into());
                }
                self.inner.lock().expect("event lock").test_send_hash = Some(hash);
                Ok(Outcome::Done(format!("{} confirmed the test notifications arrived", actor.name), serde_json::Value::Null))
            }
            (StepKind::Arm, _) => match self.runbook.arm_approvals {
                Some(rule) => self.arm_with_approvals(i, actor, &campaign, rule).await,
                None => {
                    Ok(Outcome::Done(format!("armed by {} for campaign {}", actor.name, &campaign.hash()[..12]), serde_json::Value::Null))
                }
            },
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
                let flag = self.switch_zombie(actor, &switch)?;
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
            (StepKind::Plan, Params::Plan(_)) => {
                self.progress(i, StepProgress { label: "measuring and planning".into(), done: 0.0, total: 1.0, elapsed_s: 0.0 });
                let work = tempfile::tempdir().map_err(|e| format!("plan: a work directory: {e}"))?;
                let mut opts = crate::runbook::planning::PlanOptions::new(work.path().to_owned());
                opts.step = Some(step.id.clone());
                opts.apns_environment = Some(self.services.provider.apns_environment.clone());
                opts.aws = self.services.workers.plan_facts().await.map_err(|e| format!("plan: reading the deployment: {e}"))?;
                let plan = crate::runbook::planning::plan_runbook(&self.runbook, &opts).await.map_err(|e| format!("plan: {e}"))?;
                let value = plan.summary();
                let (accepted, failed): (Vec<_>, Vec<_>) = plan.gates.iter().filter(|g| !g.ok).partition(|g| g.accepted.is_some());
                if !failed.is_empty() {
                    let gates = if failed.len() == 1 { "a gate fails" } else { "gates fail" };
                    let failed: Vec<String> = failed.iter().map(|g| format!("{}: {}", g.id, g.detail)).collect();
                    return Err(format!(
                        "{gates} (accept it in the step's params with a reason, or skip this step with one): {}",
                        failed.join("; ")
                    )
                    .into());
                }
                let accepted: Vec<String> = accepted
                    .iter()
                    .map(|g| format!("{} accepted ({}): {}", g.id, g.accepted.as_deref().unwrap_or_default(), g.detail))
                    .collect();
                let gates = if accepted.is_empty() {
                    "every gate passes".to_owned()
                } else {
                    format!("gates pass or are accepted: {}", accepted.join("; "))
                };
                let queue = plan.input.aws.as_ref().map_or_else(String::new, |a| {
                    format!(
                        "; SQS: {} batch messages over {} markets, {} ms a call",
                        a.batch_messages,
                        a.markets,
                        a.facts.sqs_rtt_ms.round()
                    )
                });
                Ok(Outcome::Done(
                    format!(
                        "{gates}; expected 50% by {:.1} s, 95% by {:.1} s, 99% by {:.1} s; APNs environment: {}{queue}",
                        plan.p50_s, plan.p95_s, plan.p99_s, self.services.provider.apns_environment
                    ),
                    value,
                ))
            }
            (kind, params) => Err(format!("step kind {} with {params:?} is not runnable", kind.as_str()).into()),
        }
    }

    pub(super) async fn scale(self: &Arc<Self>, i: usize, group: Group, desired: u32, timeout: Duration) -> Result<Outcome, StepError> {
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
        let report =
            fleet::scale_and_wait(self.services.fleet.as_ref(), group, desired, timeout, crate::runbook::services::POLL, &on_status)
                .await?;
        if report.reached {
            Ok(Outcome::Done(report.describe(), serde_json::to_value(&report).unwrap_or_default()))
        } else {
            Err(StepError::Capacity { after: timeout, report: report.describe() })
        }
    }

    pub(super) async fn fire(self: &Arc<Self>, actor: &Actor, role: Role) -> Result<Outcome, StepError> {
        let campaign_hash = self.campaign_hash();
        // The press is decided under the event lock: an abort or a disarm
        // either comes first (and nothing is sent) or finds the fire to stop.
        let fired = {
            let inner = self.inner.lock().expect("event lock");
            if let Some((by, why)) = &inner.aborted {
                return Err(format!("the event was aborted by {by}: {why}").into());
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
                self.audit(
                    AuditEntry::new(&actor.name, "fire", "already-fired")
                        .role(role.as_str())
                        .payload(&serde_json::to_value(&r).unwrap_or_default()),
                );
                if r.status == crate::fanout::FireStatus::Interrupted {
                    let standing = self.services.workers.standing().ok().flatten();
                    self.inner.lock().expect("event lock").interrupted = Some(Interrupted {
                        fire_id: r.campaign_id.clone(),
                        by: r.operator.clone(),
                        at_ms: r.fired_at_ms,
                        why: "its process stopped before the end".into(),
                        answered: standing.map(|s| s.answered),
                        targeted: standing.map(|s| s.targeted),
                    });
                    return Err(StepError::Interrupted {
                        fire_id: r.campaign_id.clone(),
                        by: r.operator.clone(),
                        at: rfc3339(r.fired_at_ms),
                    });
                }
                Err(StepError::AlreadyFired { by: r.operator.clone(), at: rfc3339(r.fired_at_ms) })
            }
            FireOutcome::NeverFired | FireOutcome::Mismatch { .. } => {
                Err("the workers answered a fire as if it were a resume; nothing was sent".into())
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
                self.audit(
                    AuditEntry::new(&actor.name, "fire", "ok")
                        .role(role.as_str())
                        .payload(&serde_json::json!({ "campaign_hash": campaign_hash, "fire_id": info.fire_id }))
                        .at(fired_at_ms),
                );
                Ok(Outcome::Done(
                    format!("fired by {} at {}", actor.name, rfc3339(fired_at_ms)),
                    serde_json::to_value(&info).unwrap_or_default(),
                ))
            }
        }
    }

    pub(super) async fn watch(self: &Arc<Self>, i: usize, max_missing: u64, timeout: Duration) -> Result<Outcome, StepError> {
        let started = std::time::Instant::now();
        loop {
            if let Some(s) = self.inner.lock().expect("event lock").summary.clone() {
                let value = serde_json::to_value(&s).unwrap_or_default();
                let note = format!(
                    "{} of {} delivered, {} failed, {} duplicates, {} missing; p95 {:.2} s, p99 {:.2} s",
                    s.delivered, s.devices, s.failed, s.duplicates, s.missing, s.p95_s, s.p99_s
                );
                if s.duplicates > 0 || s.missing > max_missing {
                    return Err(format!("{note} (allowed missing: {max_missing}, duplicates: 0)").into());
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
                    // "FCM unreachable since T, paused" while a provider is.
                    label: p.paused_line().unwrap_or_else(|| "devices delivered".into()),
                    done: p.delivered as f64,
                    total: p.targeted as f64,
                    elapsed_s: started.elapsed().as_secs_f64(),
                },
            );
            if started.elapsed() >= timeout {
                return Err(format!("the send did not finish within {}", humantime::format_duration(timeout)).into());
            }
            tokio::select! {
                () = self.finished.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }
}
