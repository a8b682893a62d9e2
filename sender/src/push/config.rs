//! Provider configuration: the `[apns]`, `[fcm]`, `[tls]` and `[pool]`
//! tables of `kickoff.toml` (the file the app uses too), overridden key by
//! key by the CLI flags `--apns-key-file --apns-key-id --apns-team-id
//! --apns-topic --apns-url --fcm-service-account --fcm-project --fcm-url
//! --ca-file --connections --engine`.
//!
//! ```toml
//! [apns]
//! key_file = "AuthKey_ABC123DEFG.p8"   # relative to this file
//! key_id = "ABC123DEFG"
//! team_id = "TEAM123456"
//! url = "production"                   # production | sandbox | https://...
//! # topic = "com.example.app"          # overrides the campaign's apns.topic
//! [fcm]
//! service_account = "service-account.json"
//! # project = "my-project"             # default: the account's project_id
//! [tls]
//! # ca_file = "ca.pem"                 # an extra CA (a test gateway's)
//! [pool]
//! connections = 4                      # per worker and provider
//! engine = "nghttp2"                   # the HTTP/2 engine: nghttp2 | h2
//! [send]
//! outage_timeout = "2m"                # 1 s to 1 h: how long a fire waits for
//!                                      # an unreachable or throttling provider
//! ```
//!
//! The file names key files; it never holds key material itself.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::apns::{self, ApnsProvider, ApnsSettings};
use super::auth::{ApnsKey, ApnsRefresh, AuthError, ServiceAccount};
use super::fcm::{FCM_URL, FcmError, FcmProvider, FcmSettings};
use super::h2client::{self, ConnectError, SendEngine};
use super::providers::PushProviders;

/// Default connections per worker and provider.
pub const DEFAULT_CONNECTIONS: usize = 4;

/// Provider configuration; every field optional so files and flags merge.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushConfig {
    /// APNs.
    #[serde(default)]
    pub apns: ApnsConfig,
    /// FCM.
    #[serde(default)]
    pub fcm: FcmConfig,
    /// TLS.
    #[serde(default)]
    pub tls: TlsConfig,
    /// Connection pool.
    #[serde(default)]
    pub pool: PoolConfig,
    /// How fires behave.
    #[serde(default)]
    pub send: SendConfig,
}

/// `[send]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendConfig {
    /// How long hand-offs wait for an unreachable (or throttling) provider
    /// before the fire stops as interrupted, resumable.
    #[serde(default, deserialize_with = "outage_timeout")]
    pub outage_timeout: Option<Duration>,
}

fn outage_timeout<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = <String as serde::Deserialize>::deserialize(d)?;
    crate::clock::parse_outage_timeout(&text).map(Some).map_err(serde::de::Error::custom)
}

/// `[apns]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApnsConfig {
    /// The `.p8` token key.
    pub key_file: Option<PathBuf>,
    /// Its key id.
    pub key_id: Option<String>,
    /// The team id.
    pub team_id: Option<String>,
    /// Overrides the campaign's `apns-topic`.
    pub topic: Option<String>,
    /// `production`, `sandbox` or a URL.
    pub url: Option<String>,
    /// Provider-token refresh age in minutes, 20-59 (default 50).
    pub refresh_minutes: Option<u64>,
}

/// `[fcm]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcmConfig {
    /// The service-account JSON key file.
    pub service_account: Option<PathBuf>,
    /// The Firebase project (default: the account's `project_id`).
    pub project: Option<String>,
    /// The FCM base URL (default `https://fcm.googleapis.com`).
    pub url: Option<String>,
    /// The project's quota, messages per minute (FCM's default 600,000),
    /// for the plan before the fire.
    pub quota_per_minute: Option<u64>,
}

/// `[tls]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// An extra CA certificate (PEM) to trust, besides the system's.
    pub ca_file: Option<PathBuf>,
}

/// `[pool]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Connections per worker and provider.
    pub connections: Option<usize>,
    /// The HTTP/2 engine: `nghttp2` (default) or `h2`.
    pub engine: Option<SendEngine>,
}

/// The providers could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PushSetupError {
    /// The configuration is incomplete or malformed.
    #[error("{0}")]
    Config(String),
    /// A key or service account could not be loaded.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// A URL or the CA file is unusable.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// FCM could not start (its first access token, typically).
    #[error(transparent)]
    Fcm(#[from] FcmError),
}

fn resolve(base: &Path, p: &mut Option<PathBuf>) {
    if let Some(path) = p
        && path.is_relative()
    {
        *path = base.join(&*path);
    }
}

impl PushConfig {
    /// Reads a config file; relative key paths are taken from its directory.
    pub fn load(path: &Path) -> Result<Self, PushSetupError> {
        let text = std::fs::read_to_string(path).map_err(|e| PushSetupError::Config(format!("{}: {e}", path.display())))?;
        Self::parse(&text, path)
    }

    /// Parses config text; `path` is used for messages and relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Self, PushSetupError> {
        let mut config: Self = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(1, |s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            PushSetupError::Config(format!("{}:{line}: {}", path.display(), e.message().trim()))
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        resolve(base, &mut config.apns.key_file);
        resolve(base, &mut config.fcm.service_account);
        resolve(base, &mut config.tls.ca_file);
        Ok(config)
    }

    /// This configuration with every value set in `over` taking its place.
    pub fn merged(mut self, over: Self) -> Self {
        fn take<T>(a: &mut Option<T>, b: Option<T>) {
            if b.is_some() {
                *a = b;
            }
        }
        take(&mut self.apns.key_file, over.apns.key_file);
        take(&mut self.apns.key_id, over.apns.key_id);
        take(&mut self.apns.team_id, over.apns.team_id);
        take(&mut self.apns.topic, over.apns.topic);
        take(&mut self.apns.url, over.apns.url);
        take(&mut self.apns.refresh_minutes, over.apns.refresh_minutes);
        take(&mut self.fcm.service_account, over.fcm.service_account);
        take(&mut self.fcm.project, over.fcm.project);
        take(&mut self.fcm.url, over.fcm.url);
        take(&mut self.fcm.quota_per_minute, over.fcm.quota_per_minute);
        take(&mut self.tls.ca_file, over.tls.ca_file);
        take(&mut self.pool.connections, over.pool.connections);
        take(&mut self.pool.engine, over.pool.engine);
        take(&mut self.send.outage_timeout, over.send.outage_timeout);
        self
    }

    /// The APNs environment sends go to: `production`, `sandbox`, or the
    /// URL of a compatible endpoint.
    pub fn apns_environment(&self) -> String {
        match apns::endpoint_url(self.apns.url.as_deref().unwrap_or("production")) {
            apns::PRODUCTION => "production".into(),
            apns::SANDBOX => "sandbox".into(),
            url => url.to_owned(),
        }
    }

    /// The key files a send reads, with what each is.
    pub fn key_files(&self) -> Vec<(&'static str, PathBuf)> {
        let mut out = Vec::new();
        if let Some(k) = &self.apns.key_file {
            out.push(("APNs token key", k.clone()));
        }
        if let Some(sa) = &self.fcm.service_account {
            out.push(("FCM service account", sa.clone()));
        }
        out
    }

    /// True if neither provider is configured.
    pub fn is_empty(&self) -> bool {
        self.apns.key_file.is_none() && self.apns.key_id.is_none() && self.fcm.service_account.is_none()
    }

    /// Loads the credentials and starts the configured providers on the
    /// current tokio runtime. FCM obtains its first access token here, so bad
    /// credentials fail before any fire.
    pub async fn providers(&self) -> Result<PushProviders, PushSetupError> {
        let tls = h2client::client_tls(self.tls.ca_file.as_deref())?;
        let connections = self.pool.connections.unwrap_or(DEFAULT_CONNECTIONS);
        if connections == 0 || connections > 64 {
            return Err(PushSetupError::Config(format!("connections must be between 1 and 64, not {connections}")));
        }
        let a = &self.apns;
        let apns = if a.key_file.is_some() || a.key_id.is_some() || a.team_id.is_some() {
            let missing: Vec<&str> =
                [("apns.key_file", a.key_file.is_none()), ("apns.key_id", a.key_id.is_none()), ("apns.team_id", a.team_id.is_none())]
                    .into_iter()
                    .filter(|(_, m)| *m)
                    .map(|(n, _)| n)
                    .collect();
            if !missing.is_empty() {
                return Err(PushSetupError::Config(format!("APNs needs a key file, key id and team id; missing {}", missing.join(", "))));
            }
            let (Some(file), Some(key_id), Some(team_id)) = (&a.key_file, &a.key_id, &a.team_id) else { unreachable!("checked") };
            let refresh = match a.refresh_minutes {
                Some(m) => ApnsRefresh::new(Duration::from_secs(m * 60))
                    .ok_or_else(|| PushSetupError::Config(format!("apns.refresh_minutes must be 20-59, not {m}")))?,
                None => ApnsRefresh::default(),
            };
            let settings = ApnsSettings {
                key: Arc::new(ApnsKey::load(file, key_id, team_id)?),
                url: apns::endpoint_url(a.url.as_deref().unwrap_or("production")).to_owned(),
                topic: a.topic.clone(),
                connections,
                refresh,
                engine: self.pool.engine.unwrap_or_default(),
            };
            Some(ApnsProvider::new(&settings, &tls)?)
        } else {
            None
        };
        let fcm = match &self.fcm.service_account {
            Some(file) => {
                let account = Arc::new(ServiceAccount::load(file)?);
                let settings = FcmSettings {
                    project: self.fcm.project.clone().unwrap_or_else(|| account.project_id.clone()),
                    account,
                    url: self.fcm.url.clone().unwrap_or_else(|| FCM_URL.to_owned()),
                    connections,
                    engine: self.pool.engine.unwrap_or_default(),
                };
                Some(FcmProvider::start(&settings, &tls).await?)
            }
            None if self.fcm.project.is_some() || self.fcm.url.is_some() => {
                return Err(PushSetupError::Config("FCM needs a service account (fcm.service_account)".into()));
            }
            None => None,
        };
        Ok(PushProviders { apns, fcm })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_parse_resolve_paths_and_merge_with_flags() {
        let text = "[apns]\nkey_file = \"k.p8\"\nkey_id = \"K\"\nteam_id = \"T\"\n[fcm]\nservice_account = \"/abs/sa.json\"\n[pool]\nconnections = 2\n";
        let c = PushConfig::parse(text, Path::new("/etc/kickoff/kickoff.toml")).unwrap();
        assert_eq!(c.apns.key_file.as_deref(), Some(Path::new("/etc/kickoff/k.p8")));
        assert_eq!(c.fcm.service_account.as_deref(), Some(Path::new("/abs/sa.json")));
        let flags = PushConfig { apns: ApnsConfig { key_id: Some("OTHER".into()), ..Default::default() }, ..Default::default() };
        let m = c.merged(flags);
        assert_eq!(m.apns.key_id.as_deref(), Some("OTHER"));
        assert_eq!(m.apns.team_id.as_deref(), Some("T"));
        assert_eq!(m.pool.connections, Some(2));
    }

    #[test]
    fn the_outage_timeout_is_read_and_bounded_with_its_line() {
        let c = PushConfig::parse("[send]\noutage_timeout = \"5m\"\n", Path::new("k.toml")).unwrap();
        assert_eq!(c.send.outage_timeout, Some(Duration::from_secs(300)));
        let e = PushConfig::parse("[pool]\n\n[send]\noutage_timeout = \"2h\"\n", Path::new("k.toml")).unwrap_err().to_string();
        assert!(e.starts_with("k.toml:4:") && e.contains("2h"), "{e}");
        let e = PushConfig::parse("[send]\noutage_timeout = \"0s\"\n", Path::new("k.toml")).unwrap_err().to_string();
        assert!(e.contains("shorter than 1 s"), "{e}");
    }

    #[test]
    fn mistakes_name_the_line() {
        let e = PushConfig::parse("[apns]\nkey_id = \"K\"\nkeyfile = \"x\"\n", Path::new("k.toml")).unwrap_err().to_string();
        assert!(e.starts_with("k.toml:3:") && e.contains("keyfile"), "{e}");
    }

    #[tokio::test]
    async fn an_incomplete_apns_setup_says_what_is_missing() {
        let c = PushConfig { apns: ApnsConfig { key_id: Some("K".into()), ..Default::default() }, ..Default::default() };
        let e = c.providers().await.unwrap_err().to_string();
        assert!(e.contains("apns.key_file") && e.contains("team_id"), "{e}");
    }
}
