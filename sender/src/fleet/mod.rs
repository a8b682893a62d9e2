//! The worker fleet: an auto-scaling group of instances and the ECS service
//! of notifier tasks that runs on them.
//!
//! [`Fleet`] is what the runbook's scale steps drive. The embedded mode uses
//! [`SimFleet`]: desired / pending / running with start-up delays, tasks that
//! only start where an instance has room, and failure injection (capacity
//! that stops short of the request) so backup plans can be rehearsed. The
//! AWS mode implements the same trait with ASG and ECS calls.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

/// The two scalable groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Group {
    /// The auto-scaling group (instances).
    Asg,
    /// The ECS service (notifier tasks).
    Service,
}

impl Group {
    /// `asg` or `ecs`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Asg => "asg",
            Self::Service => "ecs",
        }
    }

    /// What it counts.
    pub fn unit(self) -> &'static str {
        match self {
            Self::Asg => "instances",
            Self::Service => "tasks",
        }
    }
}

/// A group's counts.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct GroupStatus {
    /// Asked for.
    pub desired: u32,
    /// Starting.
    pub pending: u32,
    /// Running and healthy.
    pub running: u32,
    /// Why pending ones are not starting, if the platform says.
    pub message: Option<String>,
    /// The most it can be scaled to, where the platform sets a limit (an
    /// auto-scaling group's maximum size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
}

/// Fleet failures.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// A bad request.
    #[error("{0}")]
    Invalid(String),
    /// The platform refused or failed.
    #[error("{group}: {message}", group = group.as_str())]
    Platform {
        /// Which group.
        group: Group,
        /// What happened.
        message: String,
    },
    /// The fleet failed the check an event opens with (credentials,
    /// endpoint, the ASG or the ECS service).
    #[error("{fleet}: {source}")]
    Unreachable {
        /// The fleet, as [`Fleet::describe`] says.
        fleet: String,
        /// What its status call said.
        #[source]
        source: Box<FleetError>,
    },
    /// The fleet did not answer the check in time.
    #[error("{fleet}: no answer in {} s", after.as_secs())]
    Timeout {
        /// The fleet, as [`Fleet::describe`] says.
        fleet: String,
        /// How long it was given.
        after: Duration,
    },
}

/// Where the workers run.
pub trait Fleet: Send + Sync + std::fmt::Debug {
    /// Asks for `desired` members of `group`.
    fn set_desired(&self, group: Group, desired: u32) -> BoxFuture<'_, Result<(), FleetError>>;
    /// The group's counts now.
    fn status(&self, group: Group) -> BoxFuture<'_, Result<GroupStatus, FleetError>>;
    /// A short description for logs and the UI.
    fn describe(&self) -> String;
}

/// Settings of the simulated fleet.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    /// Time from launch to a running instance.
    #[serde(with = "crate::clock::duration")]
    pub instance_startup: Duration,
    /// Time from placement to a running task.
    #[serde(with = "crate::clock::duration")]
    pub task_startup: Duration,
    /// Tasks that fit on one instance.
    pub tasks_per_instance: u32,
    /// Share of a scale-up request the platform can meet (1.0: all). At 0.8,
    /// a request for 10 instances stops at 8, the rest pending with
    /// `InsufficientInstanceCapacity`.
    pub capacity: f64,
    /// Instances and tasks running before anyone scales.
    pub baseline_instances: u32,
    /// Tasks running before anyone scales.
    pub baseline_tasks: u32,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            instance_startup: Duration::from_secs(3),
            task_startup: Duration::from_secs(1),
            tasks_per_instance: 2,
            capacity: 1.0,
            baseline_instances: 1,
            baseline_tasks: 2,
        }
    }
}

impl SimConfig {
    /// Checks the settings.
    pub fn check(&self) -> Result<(), FleetError> {
        if !(self.capacity > 0.0 && self.capacity <= 1.0) {
            return Err(FleetError::Invalid(format!("fleet capacity {} must be in (0, 1]", self.capacity)));
        }
        if self.tasks_per_instance == 0 {
            return Err(FleetError::Invalid("tasks_per_instance must be at least 1".into()));
        }
        if self.baseline_tasks > self.baseline_instances * self.tasks_per_instance {
            return Err(FleetError::Invalid("baseline_tasks do not fit on baseline_instances".into()));
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Member {
    ready_at: Instant,
}

#[derive(Debug, Default)]
struct SimGroup {
    desired: u32,
    /// Launched (pending until `ready_at`), oldest first.
    members: Vec<Member>,
    /// Members the platform could not place.
    stuck: u32,
}

#[derive(Debug)]
struct SimState {
    asg: SimGroup,
    service: SimGroup,
}

/// The embedded fleet: a model of an ASG and an ECS service in real time.
#[derive(Debug)]
pub struct SimFleet {
    config: SimConfig,
    state: Mutex<SimState>,
}

impl SimFleet {
    /// A fleet at its baseline.
    pub fn new(config: SimConfig) -> Result<Self, FleetError> {
        config.check()?;
        let now = Instant::now();
        let at_baseline = |n| SimGroup { desired: n, members: (0..n).map(|_| Member { ready_at: now }).collect(), stuck: 0 };
        let state = SimState { asg: at_baseline(config.baseline_instances), service: at_baseline(config.baseline_tasks) };
        Ok(Self { config, state: Mutex::new(state) })
    }

    /// Its settings.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    fn running(g: &SimGroup, now: Instant) -> u32 {
        g.members.iter().filter(|m| m.ready_at <= now).count() as u32
    }

    /// Advances placement: tasks start only where running instances have room.
    fn settle(&self, s: &mut SimState, now: Instant) {
        let room = Self::running(&s.asg, now) * self.config.tasks_per_instance;
        let placed = s.service.members.len() as u32;
        let want = s.service.desired;
        if placed < want {
            let can = room.saturating_sub(placed).min(want - placed);
            for _ in 0..can {
                s.service.members.push(Member { ready_at: now + self.config.task_startup });
            }
            s.service.stuck = want - placed - can;
        } else {
            s.service.stuck = 0;
        }
    }

    fn status_now(&self, group: Group) -> GroupStatus {
        let now = Instant::now();
        let mut s = self.state.lock().expect("fleet lock");
        self.settle(&mut s, now);
        let g = match group {
            Group::Asg => &s.asg,
            Group::Service => &s.service,
        };
        let running = Self::running(g, now);
        let pending = g.members.len() as u32 - running + g.stuck;
        let message = (g.stuck > 0).then(|| match group {
            Group::Asg => format!("{} instances cannot launch: InsufficientInstanceCapacity", g.stuck),
            Group::Service => format!("{} tasks cannot be placed: no container instance has room (RESOURCE:CPU)", g.stuck),
        });
        GroupStatus { desired: g.desired, pending, running, message, max: None }
    }

    fn set_now(&self, group: Group, desired: u32) {
        let now = Instant::now();
        let mut s = self.state.lock().expect("fleet lock");
        match group {
            Group::Asg => {
                let g = &mut s.asg;
                g.desired = desired;
                let have = g.members.len() as u32;
                if desired < have {
                    g.members.truncate(desired as usize);
                    g.stuck = 0;
                } else {
                    // The platform meets `capacity` of the request (at least
                    // what is already there).
                    let can = ((f64::from(desired) * self.config.capacity).floor() as u32).max(have.min(desired));
                    for _ in have..can {
                        g.members.push(Member { ready_at: now + self.config.instance_startup });
                    }
                    g.stuck = desired - can;
                }
            }
            Group::Service => {
                let g = &mut s.service;
                g.desired = desired;
                if (desired as usize) < g.members.len() {
                    g.members.truncate(desired as usize);
                }
            }
        }
        // Instances going away take their tasks with them.
        let cap = s.asg.members.len() as u32 * self.config.tasks_per_instance;
        if (s.service.members.len() as u32) > cap {
            s.service.members.truncate(cap as usize);
        }
        self.settle(&mut s, now);
    }
}

impl Fleet for SimFleet {
    fn set_desired(&self, group: Group, desired: u32) -> BoxFuture<'_, Result<(), FleetError>> {
        Box::pin(async move {
            if desired > 10_000 {
                return Err(FleetError::Invalid(format!("{} desired {desired} is over the limit of 10000", group.as_str())));
            }
            self.set_now(group, desired);
            Ok(())
        })
    }

    fn status(&self, group: Group) -> BoxFuture<'_, Result<GroupStatus, FleetError>> {
        Box::pin(async move { Ok(self.status_now(group)) })
    }

    fn describe(&self) -> String {
        format!(
            "embedded fleet (instances start in {}, tasks in {}, {} tasks per instance, capacity {:.0}%)",
            humantime::format_duration(self.config.instance_startup),
            humantime::format_duration(self.config.task_startup),
            self.config.tasks_per_instance,
            self.config.capacity * 100.0
        )
    }
}

/// How a scale operation ended.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ScaleReport {
    /// Which group.
    pub group: Group,
    /// The target.
    pub desired: u32,
    /// Counts at the end.
    pub status: GroupStatus,
    /// How long it took (or waited).
    pub elapsed_s: f64,
    /// The target was reached.
    pub reached: bool,
}

impl ScaleReport {
    /// One line for operators: "asg: 8 of 10 instances running (80%) after 5.0 s; ...".
    pub fn describe(&self) -> String {
        let pct = if self.desired == 0 { 100.0 } else { f64::from(self.status.running) * 100.0 / f64::from(self.desired) };
        let mut s = format!(
            "{}: {} of {} {} running ({pct:.0}%) after {:.1} s",
            self.group.as_str(),
            self.status.running,
            self.desired,
            self.group.unit(),
            self.elapsed_s
        );
        if let Some(m) = &self.status.message {
            s.push_str("; ");
            s.push_str(m);
        }
        s
    }
}

/// Checks that `fleet` answers for both groups (in AWS mode: the
/// credentials, the endpoint, the ASG and the ECS service), so a wrong
/// profile fails when an event opens, not at its first step.
pub async fn check(fleet: &dyn Fleet) -> Result<(), FleetError> {
    let after = Duration::from_secs(20);
    for group in [Group::Asg, Group::Service] {
        match tokio::time::timeout(after, fleet.status(group)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(FleetError::Unreachable { fleet: fleet.describe(), source: Box::new(e) }),
            Err(_) => return Err(FleetError::Timeout { fleet: fleet.describe(), after }),
        }
    }
    Ok(())
}

/// Sets `group` to `desired` and waits until that many are running (scaling
/// up) or no more than that remain (scaling down), up to `timeout`,
/// reporting the counts every `poll`.
pub async fn scale_and_wait(
    fleet: &dyn Fleet,
    group: Group,
    desired: u32,
    timeout: Duration,
    poll: Duration,
    on_status: &(dyn Fn(&GroupStatus, Duration) + Send + Sync),
) -> Result<ScaleReport, FleetError> {
    let start = Instant::now();
    fleet.set_desired(group, desired).await?;
    loop {
        let status = fleet.status(group).await?;
        let elapsed = start.elapsed();
        on_status(&status, elapsed);
        let reached = status.running == desired && status.pending == 0;
        if reached || elapsed >= timeout {
            return Ok(ScaleReport { group, desired, status, elapsed_s: elapsed.as_secs_f64(), reached });
        }
        tokio::time::sleep(poll.min(timeout - elapsed)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick(capacity: f64) -> SimFleet {
        SimFleet::new(SimConfig {
            instance_startup: Duration::from_millis(30),
            task_startup: Duration::from_millis(10),
            tasks_per_instance: 2,
            capacity,
            baseline_instances: 1,
            baseline_tasks: 1,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn instances_start_after_their_delay_and_tasks_need_room() {
        let f = quick(1.0);
        f.set_desired(Group::Service, 6).await.unwrap();
        let s = f.status(Group::Service).await.unwrap();
        assert_eq!((s.running, s.pending), (1, 5), "only one instance: room for 2 tasks");
        assert!(s.message.unwrap().contains("no container instance has room"));
        f.set_desired(Group::Asg, 3).await.unwrap();
        let s = f.status(Group::Asg).await.unwrap();
        assert_eq!((s.desired, s.running, s.pending), (3, 1, 2));
        let nop = |_: &GroupStatus, _: Duration| {};
        let r = scale_and_wait(&f, Group::Asg, 3, Duration::from_secs(5), Duration::from_millis(5), &nop).await.unwrap();
        assert!(r.reached);
        let r = scale_and_wait(&f, Group::Service, 6, Duration::from_secs(5), Duration::from_millis(5), &nop).await.unwrap();
        assert!(r.reached, "{}", r.describe());
        // Scaling the ASG down takes the tasks on its instances with it.
        f.set_desired(Group::Asg, 1).await.unwrap();
        assert_eq!(f.status(Group::Service).await.unwrap().running, 2);
    }

    #[tokio::test]
    async fn capacity_stops_short_and_the_report_says_why() {
        let f = quick(0.8);
        let nop = |_: &GroupStatus, _: Duration| {};
        let r = scale_and_wait(&f, Group::Asg, 10, Duration::from_millis(200), Duration::from_millis(10), &nop).await.unwrap();
        assert!(!r.reached);
        assert_eq!((r.status.running, r.status.pending), (8, 2));
        let text = r.describe();
        assert!(text.contains("8 of 10 instances running (80%)") && text.contains("InsufficientInstanceCapacity"), "{text}");
    }
}
