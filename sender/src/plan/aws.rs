//! The plan's AWS part: what the queues and the fleet's groups allow.
//!
//! Facts the limits come from (Amazon SQS developer guide, quotas):
//! - a standard queue holds about 120,000 messages in flight (received,
//!   not yet deleted); over it, ReceiveMessage answers OverLimit;
//! - a FIFO queue takes 300 API calls per second (3,000 messages with
//!   batching) without high-throughput mode;
//! - SendMessageBatch carries at most 10 messages.
//!
//! A fire's way through AWS: one fire message per market on the FIFO fire
//! queue, sent one after the other; a dispatcher takes a market and queues
//! its batch messages (one per at most 500 iOS or 250 Android devices of a
//! shard and market) ten to a SendMessageBatch call, one call after the
//! other; notifiers hold up to `[worker] max_batches` batches each.

use serde::{Deserialize, Serialize};

use super::{Gate, PlanInput, group};

/// Messages a standard queue holds in flight.
pub const SQS_IN_FLIGHT_LIMIT: u64 = 120_000;
/// API calls per second a FIFO queue takes.
pub const FIFO_CALLS_PER_S: f64 = 300.0;
/// Messages one SendMessageBatch carries.
pub const SEND_BATCH_MAX: u64 = 10;
/// FIFO calls per market: the fire message's send, receive and delete.
const FIFO_CALLS_PER_MARKET: f64 = 3.0;

/// What was read from AWS, at plan time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AwsFacts {
    /// The ECS service of the workers.
    pub service: String,
    /// Its desired tasks now.
    pub service_desired: u32,
    /// Its running tasks now.
    pub service_running: u32,
    /// The auto-scaling group the tasks run on.
    pub asg: String,
    /// Its desired instances now.
    pub asg_desired: u32,
    /// Its maximum size: the most instances a scale step can ask for.
    pub asg_max: u32,
    /// Batches one worker holds at once (`[worker] max_batches`).
    pub max_batches: u32,
    /// Whether the workers dispatch (`[worker] roles` has `dispatch`).
    pub dispatch_role: bool,
    /// One SQS API call's round trip, measured, ms.
    pub sqs_rtt_ms: f64,
    /// Messages in the batch queue now (visible, in flight and delayed):
    /// the workers take them before the fire's.
    pub backlog: u64,
}

/// The AWS part of a plan's input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AwsInput {
    /// Read from AWS.
    pub facts: AwsFacts,
    /// The fire's batch messages, all markets.
    pub batch_messages: u64,
    /// The batch messages of the largest market (one dispatcher queues it).
    pub largest_market_messages: u64,
    /// The campaign's markets (fire messages).
    pub markets: u32,
    /// Instances the runbook's scale-asg steps ask for (the largest).
    pub asg_planned: Option<u32>,
}

impl AwsInput {
    /// Seconds until the fire messages are queued: one call per market, one
    /// after the other, within the FIFO queue's call rate.
    pub fn fifo_s(&self) -> f64 {
        let calls = f64::from(self.markets) * FIFO_CALLS_PER_MARKET;
        (f64::from(self.markets) * self.rtt_s()).max(calls / FIFO_CALLS_PER_S)
    }

    /// Seconds until every batch message is queued, with `workers`
    /// dispatching: a market is one dispatcher's, ten messages a call.
    pub fn dispatch_s(&self, workers: u32) -> f64 {
        let dispatchers = u64::from(workers.min(self.markets).max(1));
        let messages = self.largest_market_messages.max(self.batch_messages.div_ceil(dispatchers));
        messages.div_ceil(SEND_BATCH_MAX) as f64 * self.rtt_s()
    }

    /// Messages in flight when every worker holds all it may.
    pub fn in_flight(&self, workers: u32) -> u64 {
        u64::from(workers) * u64::from(self.facts.max_batches)
    }

    fn rtt_s(&self) -> f64 {
        self.facts.sqs_rtt_ms.max(0.0) / 1000.0
    }
}

/// Devices per second the queues let through to `input`'s workers: the
/// dispatch's rate (the fire's devices over the time to queue them); none
/// without AWS.
pub(super) fn queue_rate(input: &PlanInput) -> f64 {
    let Some(aws) = &input.aws else { return f64::INFINITY };
    let seconds = aws.fifo_s() + aws.dispatch_s(input.workers);
    let devices = (input.devices[0] + input.devices[1]) as f64;
    if seconds <= 0.0 { f64::INFINITY } else { devices / seconds }
}

/// The gates of AWS mode: `queue-limits` and `aws-capacity`.
pub(super) fn gates(input: &PlanInput) -> Vec<Gate> {
    let Some(aws) = &input.aws else { return Vec::new() };
    vec![queue_limits(input, aws), capacity(input, aws)]
}

fn queue_limits(input: &PlanInput, aws: &AwsInput) -> Gate {
    let f = &aws.facts;
    let mut problems = Vec::new();
    let in_flight = aws.in_flight(input.workers);
    let in_flight_note = format!(
        "{} workers holding {} batches each: {} in flight of SQS's {}",
        input.workers,
        f.max_batches,
        group(in_flight),
        group(SQS_IN_FLIGHT_LIMIT)
    );
    if in_flight > SQS_IN_FLIGHT_LIMIT {
        problems.push(format!(
            "{in_flight_note}; set [worker] max_batches to at most {}",
            SQS_IN_FLIGHT_LIMIT / u64::from(input.workers.max(1))
        ));
    }
    if !f.dispatch_role {
        problems.push("no worker has the dispatch role ([worker] roles): nothing would queue the batches".to_owned());
    }
    let (fifo_s, dispatch_s) = (aws.fifo_s(), aws.dispatch_s(input.workers));
    let queue_note = format!(
        "{} markets on the FIFO fire queue in {fifo_s:.2} s; {} batch messages ({} in the largest market) in {} SendMessageBatch calls, {dispatch_s:.1} s at {:.0} ms a call",
        aws.markets,
        group(aws.batch_messages),
        group(aws.largest_market_messages),
        group(aws.batch_messages.div_ceil(SEND_BATCH_MAX)),
        f.sqs_rtt_ms
    );
    if let Some(t) = input.target_s.filter(|t| fifo_s + dispatch_s > *t) {
        problems.push(format!(
            "{queue_note}: over the {t:.0} s target; split the largest market (each market is queued by its own dispatcher) or run more dispatching workers"
        ));
    }
    if f.backlog > 0 {
        problems.push(format!(
            "{} messages are already in the batch queue: the workers take them before this fire's (purge it, or let them finish)",
            group(f.backlog)
        ));
    }
    match problems.is_empty() {
        true => Gate { id: "queue-limits", ok: true, accepted: None, detail: format!("{queue_note}; {in_flight_note}") },
        false => Gate { id: "queue-limits", ok: false, accepted: None, detail: problems.join("; ") },
    }
}

fn capacity(input: &PlanInput, aws: &AwsInput) -> Gate {
    let f = &aws.facts;
    let per_instance = input.tasks_per_instance.max(1);
    let needed = input.workers.div_ceil(per_instance);
    let planned = aws.asg_planned.unwrap_or(f.asg_desired);
    let now = format!(
        "service {}: {} of {} tasks running now; ASG {}: {} instances desired, at most {}",
        f.service, f.service_running, f.service_desired, f.asg, f.asg_desired, f.asg_max
    );
    let mut problems = Vec::new();
    if needed > f.asg_max {
        problems.push(format!(
            "{} workers at {per_instance} per instance need {needed} instances, over the ASG's maximum of {}: raise its MaxSize",
            input.workers, f.asg_max
        ));
    }
    if planned > f.asg_max {
        problems.push(format!("the runbook scales the ASG to {planned} instances, over its maximum of {}", f.asg_max));
    }
    if planned < needed {
        problems.push(format!(
            "the runbook scales the ASG to {planned} instances, but {} workers at {per_instance} per instance need {needed}",
            input.workers
        ));
    }
    match problems.is_empty() {
        true => Gate {
            id: "aws-capacity",
            ok: true,
            accepted: None,
            detail: format!("{now}; {} workers need {needed} instances, the runbook scales to {planned}", input.workers),
        },
        false => Gate { id: "aws-capacity", ok: false, accepted: None, detail: format!("{}; {now}", problems.join("; ")) },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::{plan, tests::input};
    use super::*;

    /// AWS facts for tests: a 4-instance group, 16 batches per worker, 20 ms calls.
    pub(crate) fn aws(batch_messages: u64, markets: u32) -> AwsInput {
        AwsInput {
            facts: AwsFacts {
                service: "kickoff".into(),
                service_desired: 2,
                service_running: 2,
                asg: "kickoff-asg".into(),
                asg_desired: 1,
                asg_max: 4,
                max_batches: 16,
                dispatch_role: true,
                sqs_rtt_ms: 20.0,
                backlog: 0,
            },
            batch_messages,
            largest_market_messages: batch_messages.div_ceil(u64::from(markets)),
            markets,
            asg_planned: Some(1),
        }
    }

    fn gate<'a>(p: &'a super::super::Plan, id: &str) -> &'a Gate {
        p.gates.iter().find(|g| g.id == id).unwrap_or_else(|| panic!("no gate {id} in {:?}", p.gates))
    }

    #[test]
    fn without_aws_there_are_no_aws_gates_and_no_queue_bound() {
        let p = plan(input(600, 400));
        assert!(p.gates.iter().all(|g| g.id != "queue-limits" && g.id != "aws-capacity"), "{:?}", p.gates);
        assert!(p.platforms.iter().all(|p| p.bound != "queue"));
    }

    #[test]
    fn one_big_market_is_queued_by_one_dispatcher_and_bounds_the_send() {
        // 1M devices in 2,800 messages of one market: 280 calls x 20 ms = 5.6 s.
        let one = PlanInput {
            aws: Some(aws(2_800, 1)),
            per_worker_rate: 1e9,
            window_per_provider: 1_000_000,
            fcm_quota_per_minute: u64::MAX / 2,
            ..input(600_000, 400_000)
        };
        let p = plan(one.clone());
        let g = gate(&p, "queue-limits");
        assert!(!g.ok && g.detail.contains("5.6 s") && g.detail.contains("split the largest market"), "{g:?}");
        assert!(p.platforms.iter().all(|p| p.bound == "queue"), "{:?}", p.platforms);
        // Four markets over two workers: half of it each.
        let four = PlanInput { aws: Some(aws(2_800, 4)), ..one };
        let p = plan(four);
        assert!(gate(&p, "queue-limits").ok, "{:?}", p.gates);
        // 140 calls x 20 ms after 4 fire messages: 2.88 s for the million.
        assert!((p.p99_s - 2.88 * 0.99 - 0.04).abs() < 0.05, "{}", p.p99_s);
    }

    #[test]
    fn too_many_batches_in_flight_or_a_backlog_fail_the_queue_gate() {
        let mut big = aws(100, 4);
        big.facts.max_batches = 20_000;
        let p = plan(PlanInput { aws: Some(big), workers: 8, ..input(600, 400) });
        let g = gate(&p, "queue-limits");
        assert!(!g.ok && g.detail.contains("160,000 in flight") && g.detail.contains("at most 15000"), "{g:?}");
        let mut stale = aws(100, 4);
        stale.facts.backlog = 37;
        let g = plan(PlanInput { aws: Some(stale), ..input(600, 400) }).gates.into_iter().find(|g| g.id == "queue-limits").unwrap();
        assert!(!g.ok && g.detail.contains("37 messages are already"), "{g:?}");
    }

    #[test]
    fn the_asg_must_hold_the_workers_the_runbook_asks_for() {
        // 2 workers at 2 per instance: 1 instance, and the runbook asks 1.
        let p = plan(PlanInput { aws: Some(aws(100, 1)), ..input(600, 400) });
        assert!(gate(&p, "aws-capacity").ok, "{:?}", p.gates);
        // 10 workers need 5 instances: over the maximum of 4, and over the 1 the runbook asks.
        let p = plan(PlanInput { aws: Some(aws(100, 1)), workers: 10, ..input(600, 400) });
        let g = gate(&p, "aws-capacity");
        assert!(!g.ok && g.detail.contains("need 5 instances, over the ASG's maximum of 4"), "{g:?}");
        assert!(g.detail.contains("scales the ASG to 1 instances, but 10 workers"), "{g:?}");
    }
}
