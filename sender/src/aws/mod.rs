//! AWS mode: the same traits as the embedded mode, backed by AWS's engines.
//!
//! ```text
//! app / CLI                    S3 (bucket/prefix)                 workers (ECS service)
//!  warm  ── audience, campaign ─▶ audience/*, campaign/*  ◀── load, verify ── status ─▶ workers/<id>.json
//!  fire  ── conditional put ────▶ fires/<id>/claim.json   (If-None-Match: *: once, ever)
//!        ── one message/market ─▶ SQS FIFO fire queue ──▶ dispatch role: plan ─▶ SQS batch queue
//!                                                                  notify role: send ─▶ APNs / FCM
//!        ◀── progress ─────────── fires/<id>/dispatch/*, done/*    ◀── one object per finished batch
//!  charts ◀─ GetMetricData ────── CloudWatch (1-second points)     ◀── PutMetricData, batched
//! ```
//!
//! - [`AwsConfig`]: the AWS profile file (TOML) the CLI, the worker and the
//!   app read; credentials come from the standard chain, never from it.
//! - [`Aws`]: the SDK clients, one HTTPS stack (rustls on ring).
//! - [`store`]: the S3 layout, the durable fire ledger and the flags.
//! - [`queues`]: the FIFO fire queue and the batch queue.
//! - [`fleet`]: the ASG and the ECS service behind [`crate::fleet::Fleet`].
//! - [`metrics`]: CloudWatch points written by workers, read by the app.
//! - [`worker`]: `kickoff-sender worker`, the dispatch and notify roles.
//! - [`control`]: the app's side: warm, fire, follow.
//! - [`dynamodb`]: the audience read from a DynamoDB table; [`audience`]:
//!   a runbook's `[audience.dynamodb]`, imported when its event opens.
//! - [`provision`]: creates the resources (for the emulator and for trying
//!   Kickoff in a sandbox account; production uses the CloudFormation template).

use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod approvals;
pub mod audience;
pub mod control;
mod dispatcher;
pub mod dynamodb;
pub mod fleet;
pub mod metrics;
pub mod planning;
pub mod provision;
pub mod queues;
mod receiver;
pub mod store;
mod user_ids;
pub mod worker;

/// An AWS call failed, or the configuration is wrong.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    /// The configuration file.
    #[error("{path}: {message}", path = path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A service call.
    #[error("{service} {operation}: {message}")]
    Call {
        /// S3, SQS, ECS, ...
        service: &'static str,
        /// The API call.
        operation: &'static str,
        /// What the service or the connection said.
        message: String,
    },
    /// Data read from AWS that is not what Kickoff wrote.
    #[error("{0}")]
    Data(String),
    /// Nothing is warm: verify-warm has not published a warm spec.
    #[error("nothing is warm: no {url}")]
    NotWarm {
        /// Where the warm spec would be.
        url: String,
    },
    /// The runtime for AWS calls made apart could not start.
    #[error("starting a runtime for AWS calls: {0}")]
    Runtime(#[source] std::io::Error),
    /// An AWS call made apart panicked (a bug).
    #[error("an AWS call panicked")]
    Panicked,
    /// Reading the fleet's groups failed.
    #[error(transparent)]
    Fleet(#[from] crate::fleet::FleetError),
}

impl AwsError {
    /// Wraps an SDK error with the call it came from. The SDK's `Display`
    /// of a service error is terse; the debug form names the code.
    pub(crate) fn call<E: std::error::Error>(service: &'static str, operation: &'static str, e: E) -> Self {
        Self::Call { service, operation, message: chain(&e) }
    }
}

/// An error and its sources, `: `-separated (the SDK's own `Display` is terse).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

/// The worker's part of the configuration.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// `dispatch`, `notify`, or both.
    pub roles: Vec<store::Role>,
    /// Notifier threads (default: one per core).
    pub notifiers: usize,
    /// Batches held at once (received, not yet finished).
    pub max_batches: usize,
    /// Visibility timeout of a received batch; extended while it is sent.
    #[serde(with = "crate::clock::duration")]
    pub visibility_timeout: Duration,
    /// Long-poll wait of a receive (at most 20 s).
    #[serde(with = "crate::clock::duration")]
    pub wait_time: Duration,
    /// How often status is written and aborts are checked.
    #[serde(with = "crate::clock::duration")]
    pub heartbeat: Duration,
    /// Where shards are downloaded (default: a directory under the system's temp dir).
    pub cache_dir: Option<PathBuf>,
    /// Provider credentials (`kickoff.toml`: `[apns]`, `[fcm]`), relative to
    /// this file. Unset: the embedded loopback gateway.
    pub push_config: Option<PathBuf>,
    /// This worker's id (default: host name and process id).
    pub id: Option<String>,
    /// The longest delay the batch queue gives a message: SQS's 15
    /// minutes. A batch due later is queued again when it arrives early.
    /// (Lower it only to test that.)
    #[serde(with = "crate::clock::duration")]
    pub max_delay: Duration,
    /// How long the dispatcher keeps a fire message invisible at a time; it
    /// extends that while it dispatches the market.
    #[serde(with = "crate::clock::duration")]
    pub fire_visibility_timeout: Duration,
    /// On SIGTERM, how long the worker finishes what it holds before it
    /// stops its hand-offs and gives the rest back to the queue.
    #[serde(with = "crate::clock::duration")]
    pub grace: Duration,
    /// Where to answer Prometheus' `GET /metrics` (`0.0.0.0:9464` in a
    /// task); unset: no endpoint.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            roles: vec![store::Role::Dispatch, store::Role::Notify],
            notifiers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            max_batches: 16,
            visibility_timeout: Duration::from_secs(30),
            wait_time: Duration::from_secs(20),
            heartbeat: Duration::from_secs(1),
            cache_dir: None,
            push_config: None,
            id: None,
            max_delay: queues::MAX_DELAY,
            fire_visibility_timeout: Duration::from_secs(60),
            grace: Duration::from_secs(20),
            metrics_listen: None,
        }
    }
}

/// Where Kickoff's AWS resources are. Names only: credentials come from the
/// standard chain (environment, profile files, ECS task role, instance
/// profile), never from this file.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    /// The region.
    pub region: String,
    /// A named profile of the AWS config and credentials files.
    #[serde(default)]
    pub profile: Option<String>,
    /// An extra AWS credentials file (profile format), relative to this file.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// An endpoint for every service (an emulator). `AWS_ENDPOINT_URL` is
    /// honoured too.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// The bucket of audience snapshots, campaigns, flags and the ledger.
    pub bucket: String,
    /// Key prefix inside the bucket (one per environment).
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// The FIFO fire queue (name).
    pub fire_queue: String,
    /// The batch queue (name).
    pub batch_queue: String,
    /// The ECS cluster.
    pub cluster: String,
    /// The ECS service of the workers.
    pub service: String,
    /// The auto-scaling group of the instances.
    pub asg: String,
    /// CloudWatch namespace.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// The worker's settings.
    #[serde(default)]
    pub worker: WorkerConfig,
    /// The file it was read from (for relative paths and errors).
    #[serde(skip)]
    pub source: PathBuf,
}

fn default_prefix() -> String {
    "kickoff".into()
}

fn default_namespace() -> String {
    "Kickoff".into()
}

impl AwsConfig {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self, AwsError> {
        let text = std::fs::read_to_string(path).map_err(|e| AwsError::Config { path: path.to_owned(), message: e.to_string() })?;
        Self::parse(&text, path)
    }

    /// Parses and checks a configuration; errors name the file and line.
    pub fn parse(text: &str, path: &Path) -> Result<Self, AwsError> {
        let err = |message: String| AwsError::Config { path: path.to_owned(), message };
        let mut cfg: Self = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| crate::spans::line_of(text, s.start));
            err(match line {
                Some(l) => format!("line {l}: {}", e.message()),
                None => e.message().to_owned(),
            })
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [&mut cfg.credentials_file, &mut cfg.worker.push_config, &mut cfg.worker.cache_dir].into_iter().flatten() {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        cfg.checked(path)
    }

    /// Checks a configuration built in code (the app's settings); errors
    /// name `path`.
    pub fn checked(self, path: &Path) -> Result<Self, AwsError> {
        let err = |message: String| AwsError::Config { path: path.to_owned(), message };
        let mut cfg = self;
        cfg.source = path.to_owned();
        for (name, value) in [
            ("region", &cfg.region),
            ("bucket", &cfg.bucket),
            ("fire_queue", &cfg.fire_queue),
            ("batch_queue", &cfg.batch_queue),
            ("cluster", &cfg.cluster),
            ("service", &cfg.service),
            ("asg", &cfg.asg),
            ("namespace", &cfg.namespace),
        ] {
            if value.trim().is_empty() {
                return Err(err(format!("`{name}` must not be empty")));
            }
        }
        if !cfg.fire_queue.ends_with(".fifo") {
            return Err(err(format!("fire_queue {:?} must be a FIFO queue (a name ending in .fifo)", cfg.fire_queue)));
        }
        if cfg.batch_queue.ends_with(".fifo") {
            return Err(err(format!("batch_queue {:?} must be a standard queue, not FIFO", cfg.batch_queue)));
        }
        if cfg.worker.max_delay < Duration::from_secs(1) || cfg.worker.max_delay > queues::MAX_DELAY {
            return Err(err("worker.max_delay is between 1s and 15m (SQS's longest delay)".into()));
        }
        if cfg.worker.fire_visibility_timeout < Duration::from_secs(2) || cfg.worker.fire_visibility_timeout > Duration::from_secs(3600) {
            return Err(err("worker.fire_visibility_timeout is between 2s and 1h".into()));
        }
        if cfg.worker.grace > Duration::from_secs(3600) {
            return Err(err("worker.grace is at most 1h".into()));
        }
        if cfg.worker.wait_time > Duration::from_secs(20) {
            return Err(err("worker.wait_time is at most 20s (the SQS long-poll limit)".into()));
        }
        if cfg.worker.visibility_timeout < Duration::from_secs(2) || cfg.worker.visibility_timeout > Duration::from_secs(12 * 3600) {
            return Err(err("worker.visibility_timeout must be between 2s and 12h".into()));
        }
        if cfg.worker.roles.is_empty() {
            return Err(err("worker.roles must name `dispatch`, `notify` or both".into()));
        }
        if cfg.worker.max_batches == 0 || cfg.worker.notifiers == 0 {
            return Err(err("worker.max_batches and worker.notifiers must be at least 1".into()));
        }
        cfg.prefix = cfg.prefix.trim_matches('/').to_owned();
        Ok(cfg)
    }
}

/// The SDK clients.
#[derive(Debug, Clone)]
pub struct Aws {
    /// S3.
    pub s3: aws_sdk_s3::Client,
    /// SQS.
    pub sqs: aws_sdk_sqs::Client,
    /// ECS.
    pub ecs: aws_sdk_ecs::Client,
    /// Auto Scaling.
    pub asg: aws_sdk_autoscaling::Client,
    /// CloudWatch.
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    /// STS (who the caller is).
    pub sts: aws_sdk_sts::Client,
    /// DynamoDB (the audience's source), without the SDK's retries: the
    /// importer sees and paces every throttle itself.
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// The configuration.
    pub config: AwsConfig,
}

impl Aws {
    /// Builds the clients: region and endpoint from `config` (or the
    /// environment), credentials from the standard chain.
    pub async fn connect(config: AwsConfig) -> Result<Self, AwsError> {
        use aws_runtime::env_config::file::{EnvConfigFileKind, EnvConfigFiles};
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring))
            .build_https();
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http)
            .region(aws_config::Region::new(config.region.clone()));
        if let Some(p) = &config.profile {
            loader = loader.profile_name(p);
        }
        if let Some(f) = &config.credentials_file {
            if !f.is_file() {
                return Err(AwsError::Config {
                    path: config.source.clone(),
                    message: format!("credentials_file {} does not exist", f.display()),
                });
            }
            let files = EnvConfigFiles::builder()
                .include_default_credentials_file(true)
                .include_default_config_file(true)
                .with_file(EnvConfigFileKind::Credentials, f)
                .build();
            loader = loader.profile_files(files);
        }
        if let Some(url) = &config.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let sdk = loader.load().await;
        let emulated = sdk.endpoint_url().is_some();
        // Path-style addressing when an endpoint is given: an emulator on
        // 127.0.0.1 has no per-bucket host names.
        let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&sdk).force_path_style(emulated).build());
        Ok(Self {
            s3,
            sqs: aws_sdk_sqs::Client::new(&sdk),
            ecs: aws_sdk_ecs::Client::new(&sdk),
            asg: aws_sdk_autoscaling::Client::new(&sdk),
            cloudwatch: aws_sdk_cloudwatch::Client::new(&sdk),
            sts: aws_sdk_sts::Client::new(&sdk),
            dynamodb: aws_sdk_dynamodb::Client::from_conf(
                aws_sdk_dynamodb::config::Builder::from(&sdk).retry_config(aws_config::retry::RetryConfig::disabled()).build(),
            ),
            config,
        })
    }

    /// The S3 layout of this configuration.
    pub fn store(&self) -> store::Store {
        store::Store::new(self.s3.clone(), self.config.bucket.clone(), self.config.prefix.clone())
    }
}
