//! Creates Kickoff's resources: the bucket, the queues (with their
//! dead-letter queues), the ECS cluster, task definition and service, and
//! the auto-scaling group. For the AWS API emulator and sandbox accounts;
//! production stacks come from `deploy/cloudformation.yaml`, which also
//! holds the IAM roles, log group and alarms. Creating what exists is not an
//! error: provisioning twice leaves one of each.

use std::collections::HashMap;

use aws_sdk_sqs::types::QueueAttributeName;

use super::{Aws, AwsError};

/// What to provision with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionOptions {
    /// The worker's container image.
    pub image: String,
    /// The instances' machine image.
    pub ami: String,
    /// The instance type.
    pub instance_type: String,
    /// Most instances the group may scale to.
    pub max_instances: u32,
    /// Receives of a batch before it moves to the dead-letter queue.
    pub max_receive_count: u32,
}

impl Default for ProvisionOptions {
    fn default() -> Self {
        Self {
            image: "kickoff-sender:latest".into(),
            ami: "ami-03cf127a".into(),
            instance_type: "c7g.xlarge".into(),
            max_instances: 100,
            max_receive_count: 5,
        }
    }
}

/// What was provisioned.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Provisioned {
    /// The bucket.
    pub bucket: String,
    /// Fire queue URL.
    pub fire_queue: String,
    /// Batch queue URL.
    pub batch_queue: String,
    /// Batch dead-letter queue URL.
    pub batch_dlq: String,
    /// ECS service.
    pub service: String,
    /// Auto-scaling group.
    pub asg: String,
}

async fn queue(aws: &Aws, name: &str, attrs: HashMap<QueueAttributeName, String>) -> Result<(String, String), AwsError> {
    let out = aws
        .sqs
        .create_queue()
        .queue_name(name)
        .set_attributes(Some(attrs))
        .send()
        .await
        .map_err(|e| AwsError::call("SQS", "CreateQueue", e))?;
    let url = out.queue_url().unwrap_or_default().to_owned();
    let a = aws
        .sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| AwsError::call("SQS", "GetQueueAttributes", e))?;
    let arn = a.attributes().and_then(|m| m.get(&QueueAttributeName::QueueArn)).cloned().unwrap_or_default();
    Ok((url, arn))
}

/// Creates what does not exist yet.
pub async fn provision(aws: &Aws, opts: &ProvisionOptions) -> Result<Provisioned, AwsError> {
    let c = &aws.config;
    // The bucket.
    let mut create = aws.s3.create_bucket().bucket(&c.bucket);
    if c.region != "us-east-1" {
        create = create.create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(c.region.as_str()))
                .build(),
        );
    }
    if let Err(e) = create.send().await {
        let owned =
            e.as_service_error().is_some_and(aws_sdk_s3::operation::create_bucket::CreateBucketError::is_bucket_already_owned_by_you);
        if !owned {
            return Err(AwsError::call("S3", "CreateBucket", e));
        }
    }
    // The queues: a FIFO fire queue and a standard batch queue, each with
    // its dead-letter queue.
    let visibility = c.worker.visibility_timeout.as_secs().to_string();
    let redrive = |arn: &str| format!(r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":"{}"}}"#, opts.max_receive_count);
    let fire_base = c.fire_queue.trim_end_matches(".fifo");
    let fifo = |extra: Vec<(QueueAttributeName, String)>| {
        let mut m: HashMap<_, _> =
            [(QueueAttributeName::FifoQueue, "true".to_owned()), (QueueAttributeName::ContentBasedDeduplication, "false".to_owned())]
                .into();
        m.extend(extra);
        m
    };
    let (_, fire_dlq_arn) = queue(aws, &format!("{fire_base}-dlq.fifo"), fifo(vec![])).await?;
    let (fire_url, _) = queue(
        aws,
        &c.fire_queue,
        fifo(vec![(QueueAttributeName::VisibilityTimeout, "60".into()), (QueueAttributeName::RedrivePolicy, redrive(&fire_dlq_arn))]),
    )
    .await?;
    let (dlq_url, dlq_arn) =
        queue(aws, &format!("{}-dlq", c.batch_queue), [(QueueAttributeName::MessageRetentionPeriod, "1209600".to_owned())].into()).await?;
    let (batch_url, _) = queue(
        aws,
        &c.batch_queue,
        [
            (QueueAttributeName::VisibilityTimeout, visibility),
            (QueueAttributeName::ReceiveMessageWaitTimeSeconds, c.worker.wait_time.as_secs().to_string()),
            (QueueAttributeName::RedrivePolicy, redrive(&dlq_arn)),
        ]
        .into(),
    )
    .await?;
    // ECS: cluster, task definition, service (no task until a scale step).
    aws.ecs.create_cluster().cluster_name(&c.cluster).send().await.map_err(|e| AwsError::call("ECS", "CreateCluster", e))?;
    let container = aws_sdk_ecs::types::ContainerDefinition::builder()
        .name("worker")
        .image(&opts.image)
        .essential(true)
        .memory(1024)
        .command("worker")
        .command("--config")
        .command("/etc/kickoff/aws.toml")
        .stop_timeout(30)
        .build();
    let td = aws
        .ecs
        .register_task_definition()
        .family(format!("{}-worker", c.service))
        .container_definitions(container)
        .send()
        .await
        .map_err(|e| AwsError::call("ECS", "RegisterTaskDefinition", e))?;
    let td_arn = td.task_definition().and_then(|t| t.task_definition_arn()).unwrap_or_default().to_owned();
    let existing = aws
        .ecs
        .describe_services()
        .cluster(&c.cluster)
        .services(&c.service)
        .send()
        .await
        .map_err(|e| AwsError::call("ECS", "DescribeServices", e))?;
    if !existing.services().iter().any(|s| s.status() == Some("ACTIVE")) {
        aws.ecs
            .create_service()
            .cluster(&c.cluster)
            .service_name(&c.service)
            .task_definition(&td_arn)
            .desired_count(0)
            .send()
            .await
            .map_err(|e| AwsError::call("ECS", "CreateService", e))?;
    }
    // The auto-scaling group (empty until a scale step).
    let lc = format!("{}-lc", c.asg);
    let have_lc = aws
        .asg
        .describe_launch_configurations()
        .launch_configuration_names(&lc)
        .send()
        .await
        .map_err(|e| AwsError::call("AutoScaling", "DescribeLaunchConfigurations", e))?;
    if have_lc.launch_configurations().is_empty() {
        aws.asg
            .create_launch_configuration()
            .launch_configuration_name(&lc)
            .image_id(&opts.ami)
            .instance_type(&opts.instance_type)
            .send()
            .await
            .map_err(|e| AwsError::call("AutoScaling", "CreateLaunchConfiguration", e))?;
    }
    let have = aws
        .asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(&c.asg)
        .send()
        .await
        .map_err(|e| AwsError::call("AutoScaling", "DescribeAutoScalingGroups", e))?;
    if have.auto_scaling_groups().is_empty() {
        aws.asg
            .create_auto_scaling_group()
            .auto_scaling_group_name(&c.asg)
            .launch_configuration_name(&lc)
            .min_size(0)
            .max_size(i32::try_from(opts.max_instances).unwrap_or(i32::MAX))
            .desired_capacity(0)
            .availability_zones(format!("{}a", c.region))
            .send()
            .await
            .map_err(|e| AwsError::call("AutoScaling", "CreateAutoScalingGroup", e))?;
    }
    Ok(Provisioned {
        bucket: c.bucket.clone(),
        fire_queue: fire_url,
        batch_queue: batch_url,
        batch_dlq: dlq_url,
        service: format!("{}/{}", c.cluster, c.service),
        asg: c.asg.clone(),
    })
}
