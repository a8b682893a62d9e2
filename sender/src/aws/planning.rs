//! What a plan reads from AWS before the fire: the ECS service and the
//! auto-scaling group as they stand, the batch queue's backlog, one SQS
//! call's round trip, and the workers' settings. [`crate::plan`] checks
//! them against SQS's limits and the group's size.

use std::time::{Duration, Instant};

use super::fleet::AwsFleet;
use super::queues::Queues;
use super::store::Role;
use super::{Aws, AwsError};
use crate::fleet::{Fleet, Group};
use crate::plan::aws::AwsFacts;

/// SQS calls timed for the round trip (the median is kept).
const RTT_SAMPLES: usize = 5;

/// Reads the facts of `aws`'s deployment.
pub async fn plan_facts(aws: &Aws) -> Result<AwsFacts, AwsError> {
    let fleet = AwsFleet::new(aws);
    let service = fleet.status(Group::Service).await?;
    let asg = fleet.status(Group::Asg).await?;
    let queues = Queues::open(aws).await?;
    let mut rtts = Vec::with_capacity(RTT_SAMPLES);
    let mut backlog = 0;
    for _ in 0..RTT_SAMPLES {
        let started = Instant::now();
        backlog = queues.batch_backlog().await?;
        rtts.push(started.elapsed());
    }
    rtts.sort();
    let c = &aws.config;
    Ok(AwsFacts {
        service: format!("{}/{}", c.cluster, c.service),
        service_desired: service.desired,
        service_running: service.running,
        asg: c.asg.clone(),
        asg_desired: asg.desired,
        asg_max: asg.max.unwrap_or(u32::MAX),
        max_batches: u32::try_from(c.worker.max_batches).unwrap_or(u32::MAX),
        dispatch_role: c.worker.roles.contains(&Role::Dispatch),
        sqs_rtt_ms: rtts.get(RTT_SAMPLES / 2).copied().unwrap_or(Duration::ZERO).as_secs_f64() * 1000.0,
        backlog,
    })
}
