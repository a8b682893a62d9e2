//! Argument groups several commands share: the provider and its
//! credentials, the in-process gateway's faults, a generated audience.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};

use kickoff_sender::audience::generate::GenerateSpec;
use kickoff_sender::fanout::EngineConfig;
use kickoff_sender::gateway::GatewayConfig;
use kickoff_sender::provider::ProviderChoice;
use kickoff_sender::push::config::{ApnsConfig, FcmConfig, PoolConfig, TlsConfig};
use kickoff_sender::push::h2client::SendEngine;
use kickoff_sender::push::{FailReason, ModelConfig, PushConfig};

#[derive(Debug, Args, Clone)]
pub(crate) struct GenerateArgs {
    /// Number of devices.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) devices: u64,
    /// Share of iOS devices.
    #[arg(long, default_value_t = 0.6)]
    ios_share: f64,
    /// Number of markets (1-12).
    #[arg(long, default_value_t = 7)]
    markets: usize,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

impl GenerateArgs {
    pub(crate) fn spec(&self) -> GenerateSpec {
        GenerateSpec { devices: self.devices, ios_share: self.ios_share, markets: self.markets, seed: self.seed }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ProviderKind {
    /// The loopback gateway, started in-process: real HTTP/2 in the APNs and
    /// FCM protocols, deliveries counted per token.
    Gateway,
    /// APNs and FCM as configured by --config and the --apns-*/--fcm-* flags
    /// (the real services or any compatible endpoint).
    Http,
    /// Accept everything at once: measures the engine alone.
    Null,
    /// In-process latency and error model.
    Model,
}

/// Provider credentials and endpoints; override the config file key by key.
#[derive(Debug, Args, Clone, Default)]
pub(crate) struct PushFlags {
    /// Config file with [apns], [fcm], [tls], [pool] (default:
    /// kickoff.toml in Kickoff's data directory, if present).
    #[arg(long)]
    config: Option<PathBuf>,
    /// APNs token key (.p8).
    #[arg(long)]
    apns_key_file: Option<PathBuf>,
    /// APNs key id.
    #[arg(long)]
    apns_key_id: Option<String>,
    /// APNs team id.
    #[arg(long)]
    apns_team_id: Option<String>,
    /// Overrides the campaign's apns-topic.
    #[arg(long)]
    apns_topic: Option<String>,
    /// production, sandbox, or a URL.
    #[arg(long)]
    apns_url: Option<String>,
    /// FCM service-account JSON key file.
    #[arg(long)]
    fcm_service_account: Option<PathBuf>,
    /// Firebase project id (default: the service account's).
    #[arg(long)]
    fcm_project: Option<String>,
    /// FCM base URL.
    #[arg(long)]
    fcm_url: Option<String>,
    /// An extra CA certificate (PEM) to trust.
    #[arg(long)]
    ca_file: Option<PathBuf>,
}

/// `path`, else kickoff.toml in Kickoff's data directory if present, else
/// the defaults.
pub(crate) fn config_file(path: Option<&Path>) -> anyhow::Result<PushConfig> {
    let default = kickoff_sender::sys::data_dir().join("kickoff.toml");
    Ok(match path {
        Some(path) => PushConfig::load(path)?,
        None if default.is_file() => PushConfig::load(&default)?,
        None => PushConfig::default(),
    })
}

impl PushFlags {
    /// The config file merged with the flags.
    pub(crate) fn config(&self, pool: PoolConfig) -> anyhow::Result<PushConfig> {
        let file = config_file(self.config.as_deref())?;
        let flags = PushConfig {
            apns: ApnsConfig {
                key_file: self.apns_key_file.clone(),
                key_id: self.apns_key_id.clone(),
                team_id: self.apns_team_id.clone(),
                topic: self.apns_topic.clone(),
                url: self.apns_url.clone(),
                refresh_minutes: None,
            },
            fcm: FcmConfig {
                service_account: self.fcm_service_account.clone(),
                project: self.fcm_project.clone(),
                url: self.fcm_url.clone(),
                quota_per_minute: None,
            },
            tls: TlsConfig { ca_file: self.ca_file.clone() },
            pool,
            send: Default::default(),
        };
        Ok(file.merged(flags))
    }
}

/// What the in-process gateway injects.
#[derive(Debug, Args, Clone)]
pub(crate) struct GatewayFlags {
    /// Cleartext HTTP/2 (h2c) instead of TLS.
    #[arg(long)]
    pub(crate) h2c: bool,
    /// Gateway response latency in ms: "5" or "2-8" [default: 0].
    #[arg(long)]
    gateway_latency_ms: Option<String>,
    /// Share of tokens the gateway reports unregistered (410) [default: 0].
    #[arg(long)]
    gateway_unregistered: Option<f64>,
    /// Share of requests answered 429 [default: 0].
    #[arg(long)]
    gateway_429: Option<f64>,
    /// Share of requests answered 500 [default: 0].
    #[arg(long)]
    gateway_500: Option<f64>,
    /// Share of requests answered 503 [default: 0].
    #[arg(long)]
    gateway_503: Option<f64>,
    /// retry-after seconds on 429/503.
    #[arg(long)]
    gateway_retry_after: Option<u64>,
    /// Inject the 429/500/503 answers only during the first SECS seconds
    /// after the first request (a storm that passes) [default: always].
    #[arg(long, value_name = "SECS")]
    gateway_faults_for: Option<f64>,
    /// SETTINGS_MAX_CONCURRENT_STREAMS of the gateway [default: 1000].
    #[arg(long)]
    gateway_streams: Option<u32>,
    /// Gateway threads [default: 1].
    #[arg(long)]
    gateway_threads: Option<usize>,
}

impl GatewayFlags {
    pub(crate) fn config(&self) -> anyhow::Result<GatewayConfig> {
        let (lo, hi) = ms_range("--gateway-latency-ms", self.gateway_latency_ms.as_deref().unwrap_or("0"))?;
        let rate = |name: &str, rate: Option<f64>| -> anyhow::Result<f64> {
            let rate = rate.unwrap_or(0.0);
            if !(0.0..=1.0).contains(&rate) {
                bail!("{name} {rate} is not between 0 and 1");
            }
            Ok(rate)
        };
        Ok(GatewayConfig {
            threads: self.gateway_threads.unwrap_or(1).max(1),
            max_concurrent_streams: self.gateway_streams.unwrap_or(1000).max(1),
            latency: (lo, hi),
            unregistered_rate: rate("--gateway-unregistered", self.gateway_unregistered)?,
            rate_429: rate("--gateway-429", self.gateway_429)?,
            rate_500: rate("--gateway-500", self.gateway_500)?,
            rate_503: rate("--gateway-503", self.gateway_503)?,
            retry_after: self.gateway_retry_after,
            faults_for: match self.gateway_faults_for {
                Some(s) if !(0.0..=86_400.0).contains(&s) => bail!("--gateway-faults-for {s} is not between 0 and 86400 seconds"),
                Some(s) => Some(Duration::from_secs_f64(s)),
                None => None,
            },
            ..GatewayConfig::default()
        })
    }

    /// The gateway flags given on the command line.
    fn given(&self) -> Vec<&'static str> {
        given(&[
            ("--h2c", self.h2c),
            ("--gateway-latency-ms", self.gateway_latency_ms.is_some()),
            ("--gateway-unregistered", self.gateway_unregistered.is_some()),
            ("--gateway-429", self.gateway_429.is_some()),
            ("--gateway-500", self.gateway_500.is_some()),
            ("--gateway-503", self.gateway_503.is_some()),
            ("--gateway-retry-after", self.gateway_retry_after.is_some()),
            ("--gateway-faults-for", self.gateway_faults_for.is_some()),
            ("--gateway-streams", self.gateway_streams.is_some()),
            ("--gateway-threads", self.gateway_threads.is_some()),
        ])
    }
}

/// The names of the flags marked given.
fn given(flags: &[(&'static str, bool)]) -> Vec<&'static str> {
    flags.iter().filter_map(|&(name, given)| given.then_some(name)).collect()
}

pub(crate) fn ms_range(flag: &str, text: &str) -> anyhow::Result<(Duration, Duration)> {
    let ms = |s: &str| -> anyhow::Result<Duration> {
        let v: f64 = s.trim().parse().with_context(|| format!("{flag}: {s:?} is not a number of milliseconds"))?;
        if !(0.0..=60_000.0).contains(&v) {
            bail!("{flag}: {s:?} is not between 0 and 60000 ms");
        }
        Ok(Duration::from_secs_f64(v / 1000.0))
    };
    let (lo, hi) = match text.split_once('-') {
        Some((a, b)) => (ms(a)?, ms(b)?),
        None => (ms(text)?, ms(text)?),
    };
    if hi < lo {
        bail!("{flag}: the range {text:?} ends before it starts");
    }
    Ok((lo, hi))
}

#[derive(Debug, Args, Clone)]
pub(crate) struct ProviderArgs {
    /// The push provider.
    #[arg(long, value_enum, default_value = "gateway")]
    provider: ProviderKind,
    #[command(flatten)]
    push: PushFlags,
    #[command(flatten)]
    gateway: GatewayFlags,
    /// Model round trip in milliseconds: "40" or a uniform range "20-60" [default: 20-60].
    #[arg(long)]
    rtt_ms: Option<String>,
    /// Model error rates, e.g. "unregistered=0.01,server_error=0.001".
    #[arg(long)]
    errors: Option<String>,
    /// Notifier workers (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Connections per worker and provider (in-flight window = connections
    /// x streams) [default: 4].
    #[arg(long)]
    connections: Option<usize>,
    /// Concurrent streams per connection [default: 1000].
    #[arg(long)]
    streams: Option<usize>,
    /// The HTTP/2 engine (overrides `[pool] engine`) [default: nghttp2].
    #[arg(long, value_enum)]
    engine: Option<SendEngine>,
    /// Model seed [default: 7].
    #[arg(long = "model-seed")]
    model_seed: Option<u64>,
    /// How long hand-offs wait for an unreachable provider before the fire
    /// stops as interrupted (resume it with --resume) [default: 120s, at most 1h].
    #[arg(long, value_parser = outage_timeout)]
    outage_timeout: Option<std::time::Duration>,
}

fn outage_timeout(s: &str) -> Result<std::time::Duration, String> {
    kickoff_sender::clock::parse_outage_timeout(s)
}

impl ProviderArgs {
    /// The engine's settings: the flags, else (for `--provider http`) the
    /// `[send]` table of the provider configuration, else the defaults.
    pub(crate) fn engine(&self) -> anyhow::Result<EngineConfig> {
        let mut config = EngineConfig::default();
        if self.provider == ProviderKind::Http
            && let Some(t) = self.push.config(PoolConfig::default())?.send.outage_timeout
        {
            config.outage_timeout = t;
        }
        if let Some(w) = self.workers {
            config.workers = w.max(1);
        }
        let connections = self.connections.unwrap_or(kickoff_sender::push::config::DEFAULT_CONNECTIONS);
        config.in_flight_per_worker = connections.saturating_mul(self.streams.unwrap_or(1000)).max(1);
        if let Some(t) = self.outage_timeout {
            config.outage_timeout = t;
        }
        Ok(config)
    }

    /// Flags given on the command line that the chosen provider would
    /// ignore: an error, so a mistyped provider never runs a different test
    /// than the one asked for.
    fn ignored(&self) -> Vec<&'static str> {
        let push = given(&[
            ("--config", self.push.config.is_some()),
            ("--apns-key-file", self.push.apns_key_file.is_some()),
            ("--apns-key-id", self.push.apns_key_id.is_some()),
            ("--apns-team-id", self.push.apns_team_id.is_some()),
            ("--apns-topic", self.push.apns_topic.is_some()),
            ("--apns-url", self.push.apns_url.is_some()),
            ("--fcm-service-account", self.push.fcm_service_account.is_some()),
            ("--fcm-project", self.push.fcm_project.is_some()),
            ("--fcm-url", self.push.fcm_url.is_some()),
            ("--ca-file", self.push.ca_file.is_some()),
        ]);
        let model =
            given(&[("--rtt-ms", self.rtt_ms.is_some()), ("--errors", self.errors.is_some()), ("--model-seed", self.model_seed.is_some())]);
        let gateway = self.gateway.given();
        match self.provider {
            ProviderKind::Gateway => [push, model].concat(),
            ProviderKind::Http => [gateway, model].concat(),
            ProviderKind::Model => [push, gateway, given(&[("--engine", self.engine.is_some())])].concat(),
            ProviderKind::Null => {
                let pool = given(&[
                    ("--connections", self.connections.is_some()),
                    ("--streams", self.streams.is_some()),
                    ("--engine", self.engine.is_some()),
                ]);
                [push, gateway, model, pool].concat()
            }
        }
    }

    pub(crate) fn choice(&self) -> anyhow::Result<ProviderChoice> {
        let ignored = self.ignored();
        if !ignored.is_empty() {
            let name = clap::ValueEnum::to_possible_value(&self.provider).map_or_else(String::new, |v| v.get_name().to_owned());
            bail!("--provider {name} does not use {}: drop them, or choose the provider that does", ignored.join(", "));
        }
        Ok(match self.provider {
            ProviderKind::Gateway => ProviderChoice::Gateway {
                config: self.gateway.config()?,
                tls: !self.gateway.h2c,
                connections: self.pool_connections().unwrap_or(kickoff_sender::push::config::DEFAULT_CONNECTIONS),
                engine: self.engine.unwrap_or_default(),
            },
            ProviderKind::Http => {
                let config = self.push.config(PoolConfig { connections: self.connections, engine: self.engine })?;
                if config.is_empty() {
                    bail!(
                        "--provider http needs credentials: --config FILE, or --apns-key-file/--apns-key-id/--apns-team-id and/or --fcm-service-account"
                    );
                }
                ProviderChoice::Http(config)
            }
            ProviderKind::Null => ProviderChoice::Null,
            ProviderKind::Model => ProviderChoice::Model(self.model()?),
        })
    }

    /// Connections per worker for HTTP/2 providers, when set explicitly
    /// (unset: the config file's, else the default).
    pub(crate) fn pool_connections(&self) -> Option<usize> {
        self.connections
    }

    pub(crate) fn model(&self) -> anyhow::Result<ModelConfig> {
        let (rtt_min, rtt_max) = ms_range("--rtt-ms", self.rtt_ms.as_deref().unwrap_or("20-60"))?;
        let mut errors = Vec::new();
        for part in self.errors.as_deref().unwrap_or("").split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, rate) = part.split_once('=').with_context(|| format!("--errors: {part:?} is not reason=rate"))?;
            let reason = FailReason::parse(name.trim()).with_context(|| {
                let names: Vec<_> = FailReason::ALL.iter().map(|r| r.as_str()).collect();
                format!("--errors: unknown reason {name:?}; reasons: {}", names.join(", "))
            })?;
            let rate: f64 = rate.trim().parse().with_context(|| format!("--errors: {rate:?} is not a rate"))?;
            errors.push((reason, rate));
        }
        let config = ModelConfig { rtt_min, rtt_max, errors, seed: self.model_seed.unwrap_or(7) };
        config.check().map_err(|e| anyhow::anyhow!("model: {e}"))?;
        Ok(config)
    }
}
