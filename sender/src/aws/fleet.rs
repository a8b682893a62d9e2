//! The fleet on AWS: the auto-scaling group's instances and the ECS
//! service's tasks, behind [`Fleet`].

use futures_util::future::BoxFuture;

use super::Aws;
use crate::fleet::{Fleet, FleetError, Group, GroupStatus};

/// The ASG and ECS service named in the configuration.
#[derive(Debug, Clone)]
pub struct AwsFleet {
    asg: aws_sdk_autoscaling::Client,
    ecs: aws_sdk_ecs::Client,
    group: String,
    cluster: String,
    service: String,
}

impl AwsFleet {
    /// The fleet of `aws`'s configuration.
    pub fn new(aws: &Aws) -> Self {
        Self {
            asg: aws.asg.clone(),
            ecs: aws.ecs.clone(),
            group: aws.config.asg.clone(),
            cluster: aws.config.cluster.clone(),
            service: aws.config.service.clone(),
        }
    }
}

fn platform<E: std::error::Error>(group: Group, operation: &str, e: E) -> FleetError {
    FleetError::Platform { group, message: format!("{operation}: {}", super::chain(&e)) }
}

fn count(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

impl Fleet for AwsFleet {
    fn set_desired(&self, group: Group, desired: u32) -> BoxFuture<'_, Result<(), FleetError>> {
        Box::pin(async move {
            let n = i32::try_from(desired).map_err(|_| FleetError::Invalid(format!("{desired} {} is too many", group.unit())))?;
            match group {
                Group::Asg => {
                    self.asg
                        .set_desired_capacity()
                        .auto_scaling_group_name(&self.group)
                        .desired_capacity(n)
                        .honor_cooldown(false)
                        .send()
                        .await
                        .map_err(|e| platform(group, "SetDesiredCapacity", e))?;
                }
                Group::Service => {
                    self.ecs
                        .update_service()
                        .cluster(&self.cluster)
                        .service(&self.service)
                        .desired_count(n)
                        .send()
                        .await
                        .map_err(|e| platform(group, "UpdateService", e))?;
                }
            }
            Ok(())
        })
    }

    fn status(&self, group: Group) -> BoxFuture<'_, Result<GroupStatus, FleetError>> {
        Box::pin(async move {
            match group {
                Group::Asg => {
                    let out = self
                        .asg
                        .describe_auto_scaling_groups()
                        .auto_scaling_group_names(&self.group)
                        .send()
                        .await
                        .map_err(|e| platform(group, "DescribeAutoScalingGroups", e))?;
                    let g = out
                        .auto_scaling_groups()
                        .first()
                        .ok_or_else(|| FleetError::Platform { group, message: format!("no auto-scaling group named {}", self.group) })?;
                    let mut status = GroupStatus {
                        desired: count(g.desired_capacity().unwrap_or(0)),
                        max: g.max_size().map(count),
                        ..GroupStatus::default()
                    };
                    for i in g.instances() {
                        let state = i.lifecycle_state().map(|s| s.as_str().to_owned()).unwrap_or_default();
                        let healthy = i.health_status().is_none_or(|h| h.eq_ignore_ascii_case("healthy"));
                        if state == "InService" && healthy {
                            status.running += 1;
                        } else if state.starts_with("Pending") {
                            status.pending += 1;
                        }
                    }
                    status.message = g.status().map(str::to_owned);
                    Ok(status)
                }
                Group::Service => {
                    let out = self
                        .ecs
                        .describe_services()
                        .cluster(&self.cluster)
                        .services(&self.service)
                        .send()
                        .await
                        .map_err(|e| platform(group, "DescribeServices", e))?;
                    if let Some(f) = out.failures().first() {
                        return Err(FleetError::Platform {
                            group,
                            message: format!("{}: {}", f.arn().unwrap_or(&self.service), f.reason().unwrap_or("not found")),
                        });
                    }
                    let s = out.services().first().ok_or_else(|| FleetError::Platform {
                        group,
                        message: format!("no ECS service {} in {}", self.service, self.cluster),
                    })?;
                    Ok(GroupStatus {
                        desired: count(s.desired_count()),
                        pending: count(s.pending_count()),
                        running: count(s.running_count()),
                        message: s.events().first().and_then(|e| e.message()).map(str::to_owned),
                        max: None,
                    })
                }
            }
        })
    }

    fn describe(&self) -> String {
        format!("AWS: auto-scaling group {}, ECS service {}/{}", self.group, self.cluster, self.service)
    }
}
