//! The gates of a step: the steps it waits for, and the checks (warm
//! workers, a confirmed test-send, the plan, the arm) it stands on.

use super::{Event, Gate, Inner, StepState, StepStatus};
use crate::runbook::file::{Check, Step, StepKind};

impl Event {
    pub(super) fn satisfied(&self, inner: &Inner, id: &str) -> bool {
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

    pub(super) fn gates_of(&self, inner: &Inner, step: &Step, fleet_ok: Option<bool>) -> Vec<Gate> {
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
            StepKind::Arm => {
                checks.extend([Check::AllShardsWarm, Check::TestSendConfirmed, Check::ProvidersHealthy]);
                if self.runbook.steps.iter().any(|s| s.kind == StepKind::Plan) {
                    checks.push(Check::PlanPassed);
                }
            }
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
                Check::PlanPassed => {
                    let plans: Vec<(&Step, &StepStatus)> =
                        self.runbook.steps.iter().zip(&inner.steps).filter(|(s, _)| s.kind == StepKind::Plan).collect();
                    match plans.iter().find(|(_, st)| matches!(st.state, StepState::Done | StepState::Skipped)) {
                        Some((s, st)) if st.state == StepState::Skipped => {
                            (true, format!("{} skipped: {}", s.id, st.note.as_deref().unwrap_or("no reason")))
                        }
                        Some((s, _)) => (true, format!("{} passed", s.id)),
                        None => (
                            false,
                            format!(
                                "{} has not passed (run it; a failing gate is accepted only with a reason)",
                                plans.first().map_or("the plan", |(s, _)| s.id.as_str())
                            ),
                        ),
                    }
                }
                Check::ProvidersHealthy => match self.services.testsends.latest() {
                    // The latest test-send from any window or walk of this
                    // state database proves the providers' tokens.
                    Ok(last) => {
                        let proof = last.as_ref().map(crate::runbook::health::ProviderProof::of);
                        crate::runbook::health::check(proof.as_ref(), &self.services.provider, crate::recorder::now_ms())
                    }
                    Err(e) => (false, e.to_string()),
                },
                Check::FleetAtDesired => match fleet_ok {
                    Some(ok) => (ok, if ok { "fleet at desired".into() } else { "fleet below desired".into() }),
                    None => (true, "checked when the step starts".into()),
                },
            };
            gates.push(Gate { what: c.as_str().into(), open, detail });
        }
        gates
    }
}
