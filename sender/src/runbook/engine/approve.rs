//! The arm of a runbook with `[approvals] arm = N`: the operator who arms
//! waits for N different identities to approve, from any window, instance
//! or `kickoff-sender runbook approve`.

use std::sync::Arc;

use super::steps::{Outcome, StepError};
use super::{ActError, Actor, Event};
use crate::campaign::Campaign;
use crate::clock::rfc3339_s as rfc3339;
use crate::recorder::{AuditEntry, now_ms};
use crate::runbook::StepProgress;
use crate::runbook::approvals::{self, Approval, ApprovalKey};
use crate::runbook::file::{ArmApprovals, StepKind};

impl Event {
    /// The key approvals of this event's fire of `campaign` are kept under.
    fn approval_key(&self, campaign: &Campaign) -> ApprovalKey {
        ApprovalKey {
            event_id: self.id.clone(),
            fire_key: self.services.fire_scope.key(&campaign.id),
            action: "arm".into(),
            campaign_hash: campaign.hash().to_owned(),
        }
    }

    /// Records `actor`'s approval of the arm of `campaign`, in the audit log
    /// too; returns the identity it was recorded as, and the key.
    async fn approve_as(&self, actor: &Actor, campaign: &Campaign, step: &str) -> Result<(String, ApprovalKey), ActError> {
        let key = self.approval_key(campaign);
        let approvals = &self.services.approvals;
        let identity = approvals.identity(&actor.name).await.map_err(|e| ActError::Invalid(e.to_string()))?;
        // Never dated before the last disarm's cut-off, even within the
        // disarm's own millisecond: it was given after it.
        let since = self.inner.lock().expect("event lock").approvals_since_ms;
        let approval = Approval {
            identity: identity.clone(),
            operator: actor.name.clone(),
            campaign_hash: key.campaign_hash.clone(),
            at_ms: now_ms().max(since),
        };
        approvals.approve(&key, &approval).await.map_err(|e| ActError::Invalid(e.to_string()))?;
        self.audit(
            AuditEntry::new(&actor.name, "approve", "ok")
                .step(step)
                .payload(&serde_json::json!({ "identity": identity, "fire": key.fire_key, "campaign_hash": key.campaign_hash })),
        );
        Ok((identity, key))
    }

    /// Approves the arm of the current campaign as `actor` (who must hold the
    /// arm step's role), for a runbook whose arm needs more than one
    /// operator. Says how many of how many have approved.
    pub async fn approve(&self, actor: &Actor) -> Result<String, ActError> {
        let Some(rule) = self.runbook.arm_approvals else {
            return Err(ActError::Invalid(format!("{}: the arm needs no approvals (no [approvals] arm = N)", self.runbook.path.display())));
        };
        let step = self
            .runbook
            .steps
            .iter()
            .find(|s| s.kind == StepKind::Arm)
            .ok_or_else(|| ActError::Invalid("the runbook has no arm step".into()))?;
        actor.role_for(step)?;
        let campaign = {
            let mut inner = self.inner.lock().expect("event lock");
            if let Some((by, why)) = &inner.aborted {
                return Err(ActError::Aborted { by: by.clone(), why: why.clone() });
            }
            if let Some(f) = &inner.fired {
                return Err(ActError::AlreadyFired { by: f.by.clone(), at: rfc3339(f.at_ms) });
            }
            self.check_campaign(&mut inner)?
        };
        let (_, key) = self.approve_as(actor, &campaign, &step.id).await?;
        self.snapshot_to_recorder();
        let list = self.services.approvals.list(&key).await.map_err(|e| ActError::Invalid(e.to_string()))?;
        let within_ms = u64::try_from(rule.within.as_millis()).unwrap_or(u64::MAX);
        let counted = crate::runbook::approvals::counting(&list, now_ms(), within_ms);
        let names: Vec<&str> = counted.iter().map(|a| a.operator.as_str()).collect();
        Ok(format!(
            "{} approved the arm of campaign {} ({} of {}: {})",
            actor.name,
            &key.campaign_hash[..12.min(key.campaign_hash.len())],
            counted.len(),
            rule.count,
            names.join(", ")
        ))
    }

    /// The arm of a runbook with `[approvals] arm = N`: records this
    /// operator's approval, then waits until N different identities have
    /// approved this fire and campaign content within the window (from
    /// other windows, instances or `kickoff-sender runbook approve`).
    pub(super) async fn arm_with_approvals(
        self: &Arc<Self>,
        i: usize,
        actor: &Actor,
        campaign: &Campaign,
        rule: ArmApprovals,
    ) -> Result<Outcome, StepError> {
        let step_id = self.runbook.steps[i].id.clone();
        let disarms = self.inner.lock().expect("event lock").disarms;
        let (me, key) = self.approve_as(actor, campaign, &step_id).await?;
        let started = std::time::Instant::now();
        let within_ms = u64::try_from(rule.within.as_millis()).unwrap_or(u64::MAX);
        loop {
            let since = {
                let inner = self.inner.lock().expect("event lock");
                if let Some((by, why)) = inner.aborted.clone() {
                    return Err(super::ActError::Aborted { by, why }.into());
                }
                if inner.disarms != disarms {
                    return Err("disarmed while waiting for approvals".into());
                }
                inner.approvals_since_ms
            };
            let mut list = self.services.approvals.list(&key).await.map_err(|e| e.to_string())?;
            list.retain(|a| a.at_ms >= since);
            let counted = approvals::counting(&list, now_ms(), within_ms);
            let names: Vec<String> = counted.iter().map(|a| a.operator.clone()).collect();
            if counted.len() >= rule.count as usize {
                let others: Vec<&str> = counted.iter().filter(|a| a.identity != me).map(|a| a.operator.as_str()).collect();
                return Ok(Outcome::Done(
                    format!("armed by {}, approved by {} ({} of {})", actor.name, others.join(", "), counted.len(), rule.count),
                    serde_json::json!({ "approvals": counted }),
                ));
            }
            if started.elapsed() >= rule.within {
                // Named from every approval of the wait: this operator's own
                // is as old as the window by now.
                let mut all: Vec<&str> = list.iter().map(|a| a.operator.as_str()).collect();
                all.dedup();
                return Err(format!(
                    "only {} approved within {}: the arm needs {} different operators",
                    all.join(", "),
                    humantime::format_duration(rule.within),
                    rule.count
                )
                .into());
            }
            self.progress(
                i,
                StepProgress {
                    label: format!(
                        "waiting for approvals: {} of {} ({}); another operator approves with Approve arm in their window (or yours, under their name in Settings) or `kickoff-sender runbook approve {} --operator NAME`",
                        counted.len(),
                        rule.count,
                        names.join(", "),
                        self.runbook.path.display()
                    ),
                    done: counted.len() as f64,
                    total: f64::from(rule.count),
                    elapsed_s: started.elapsed().as_secs_f64(),
                },
            );
            tokio::time::sleep(crate::runbook::services::POLL).await;
        }
    }
}
