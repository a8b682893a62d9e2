//! The app's settings: who is at the keyboard, embedded or AWS mode, and the
//! AWS profile. Kept as JSON in the data directory. No secret is ever asked
//! for or stored: AWS credentials come from the standard AWS chain, provider
//! keys stay in the files the paths point at.

use std::path::{Path, PathBuf};

use kickoff_sender::aws::{AwsConfig, WorkerConfig};
use kickoff_sender::provider::ProviderChoice;
use kickoff_sender::push::PushConfig;
use kickoff_sender::runbook::Role;

/// Where the sender runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Everything in the app, no credentials, no network.
    #[default]
    Embedded,
    /// SQS, ECS, ASG, S3 and CloudWatch.
    Aws,
}

/// An AWS profile: names of the resources, never credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct AwsProfile {
    /// Named profile of the standard AWS configuration (`~/.aws/config`).
    pub profile: String,
    /// Region.
    pub region: String,
    /// An endpoint for every service (an emulator, a VPC endpoint); empty:
    /// AWS's own, or `AWS_ENDPOINT_URL`.
    pub endpoint_url: String,
    /// ECS cluster.
    pub cluster: String,
    /// ECS service of the workers.
    pub service: String,
    /// Auto-scaling group.
    pub asg: String,
    /// FIFO fire queue (name or URL).
    pub fire_queue: String,
    /// Batch queue (name or URL).
    pub batch_queue: String,
    /// S3 bucket for snapshots, campaign, flags and the fire ledger.
    pub bucket: String,
    /// Key prefix in the bucket (one per environment); empty: `kickoff`.
    pub prefix: String,
    /// CloudWatch metrics namespace; empty: `Kickoff`.
    pub namespace: String,
    /// Provider credentials for test-sends: a `kickoff.toml` with `[apns]`
    /// (the `.p8` key file's path and ids) and `[fcm]` (the service-account
    /// file's path). Empty: test-sends go to the loopback gateway.
    pub push_config: String,
}

/// A queue's name from its name or URL.
fn queue_name(q: &str) -> String {
    q.trim().trim_end_matches('/').rsplit('/').next().unwrap_or_default().to_owned()
}

impl AwsProfile {
    /// The configuration the CLI and the workers read from a file, built
    /// from these settings; errors name `source` (the settings file).
    pub fn config(&self, source: &Path) -> Result<AwsConfig, String> {
        let text = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        let config = AwsConfig {
            region: self.region.trim().to_owned(),
            profile: text(&self.profile),
            credentials_file: None,
            endpoint_url: text(&self.endpoint_url),
            bucket: self.bucket.trim().to_owned(),
            prefix: text(&self.prefix).unwrap_or_else(|| "kickoff".into()),
            fire_queue: queue_name(&self.fire_queue),
            batch_queue: queue_name(&self.batch_queue),
            cluster: self.cluster.trim().to_owned(),
            service: self.service.trim().to_owned(),
            asg: self.asg.trim().to_owned(),
            namespace: text(&self.namespace).unwrap_or_else(|| "Kickoff".into()),
            worker: WorkerConfig::default(),
            source: source.to_owned(),
        };
        config.checked(source).map_err(|e| e.to_string())
    }

    /// How test-sends reach the providers.
    pub fn provider(&self) -> Result<ProviderChoice, String> {
        if self.push_config.trim().is_empty() {
            return Ok(ProviderChoice::gateway());
        }
        PushConfig::load(Path::new(self.push_config.trim())).map(ProviderChoice::Http).map_err(|e| e.to_string())
    }
}

/// The settings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Who acts (recorded in the audit log).
    pub operator: String,
    /// Roles taken.
    pub roles: Vec<Role>,
    /// Embedded or AWS.
    pub mode: Mode,
    /// The AWS profile.
    pub aws: AwsProfile,
}

impl Default for Settings {
    fn default() -> Self {
        let operator = std::env::var("USER").or_else(|_| std::env::var("USERNAME")).unwrap_or_else(|_| "operator".into());
        Self { operator, roles: Role::ALL.to_vec(), mode: Mode::Embedded, aws: AwsProfile::default() }
    }
}

fn file(dir: &Path) -> PathBuf {
    dir.join("settings.json")
}

impl Settings {
    /// Loads the saved settings, or the defaults.
    pub fn load(dir: &Path) -> Self {
        std::fs::read_to_string(file(dir)).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default()
    }

    /// Checks them.
    pub fn check(&self) -> Result<(), String> {
        let name = self.operator.trim();
        if name.is_empty() || name.len() > 64 {
            return Err("the operator name must be 1-64 characters".into());
        }
        if self.roles.is_empty() {
            return Err("take at least one role".into());
        }
        if self.mode == Mode::Aws {
            let a = &self.aws;
            for (field, value) in
                [("region", &a.region), ("cluster", &a.cluster), ("service", &a.service), ("asg", &a.asg), ("bucket", &a.bucket)]
            {
                if value.trim().is_empty() {
                    return Err(format!("AWS mode needs the {field}"));
                }
            }
            a.config(Path::new("settings"))?;
            a.provider().map_err(|e| format!("provider credentials: {e}"))?;
        }
        Ok(())
    }

    /// Saves them (write, then rename: never half-written).
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join("settings.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
        std::fs::rename(tmp, file(dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> AwsProfile {
        AwsProfile {
            region: "eu-west-1".into(),
            cluster: "kickoff".into(),
            service: "notifier".into(),
            asg: "workers".into(),
            fire_queue: "https://sqs.eu-west-1.amazonaws.com/123456789012/kickoff-fire.fifo".into(),
            batch_queue: "kickoff-batches".into(),
            bucket: "launch".into(),
            ..AwsProfile::default()
        }
    }

    #[test]
    fn the_aws_profile_becomes_the_config_the_cli_and_workers_read() {
        let c = profile().config(Path::new("settings.json")).unwrap();
        assert_eq!(c.fire_queue, "kickoff-fire.fifo", "a queue URL gives its name");
        assert_eq!((c.prefix.as_str(), c.namespace.as_str()), ("kickoff", "Kickoff"), "empty fields take the defaults");
        assert_eq!(c.endpoint_url, None);
        let mut p = profile();
        p.fire_queue = "kickoff-fire".into();
        let e = p.config(Path::new("settings.json")).unwrap_err();
        assert!(e.contains("settings.json") && e.contains("FIFO"), "{e}");
        p = profile();
        p.push_config = "/nonexistent/kickoff.toml".into();
        assert!(p.provider().unwrap_err().contains("/nonexistent/kickoff.toml"));
        let s = Settings { mode: Mode::Aws, aws: p, ..Settings::default() };
        assert!(s.check().is_err(), "a missing provider credentials file is refused when saving");
    }
}
