//! The app's settings: who is at the keyboard, embedded or AWS mode, and the
//! AWS profile. Kept as JSON in the data directory. No secret is ever asked
//! for or stored: AWS credentials come from the standard AWS chain, provider
//! keys stay in the files the paths point at.

use std::path::{Path, PathBuf};

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
    /// ECS cluster.
    pub cluster: String,
    /// ECS service of the workers.
    pub service: String,
    /// Auto-scaling group.
    pub asg: String,
    /// FIFO fire queue URL.
    pub fire_queue: String,
    /// Batch queue URL.
    pub batch_queue: String,
    /// S3 bucket for snapshots, campaign, flags and the fire ledger.
    pub bucket: String,
    /// CloudWatch metrics namespace.
    pub namespace: String,
    /// Path of the APNs `.p8` key file (the key stays in the file).
    pub apns_key_file: String,
    /// Path of the FCM service-account JSON file.
    pub fcm_service_account: String,
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
            for (field, value) in [("APNs key file", &a.apns_key_file), ("FCM service account", &a.fcm_service_account)] {
                if !value.is_empty() && !Path::new(value).is_file() {
                    return Err(format!("{field}: {value} is not a file"));
                }
            }
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
