//! Shared set-up: audiences, campaigns, engines, the CLI binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use kickoff_sender::audience::generate::{self, GenerateSpec};
use kickoff_sender::audience::{Audience, Platform};
use kickoff_sender::campaign::{self, Campaign};
use kickoff_sender::fanout::{Engine, EngineConfig, SqliteLedger, Warm};
use kickoff_sender::metrics::MemoryMetrics;
use kickoff_sender::push::{DeliveryTally, DeviceRef, Provider};

/// A generated audience compiled into `dir/audience` and loaded.
pub fn audience(dir: &Path, devices: u64, seed: u64, shards: u32) -> Arc<Audience> {
    let spec = GenerateSpec { devices, ios_share: 0.6, markets: 7, seed };
    let out = dir.join("audience");
    generate::compile_generated(&spec, &out, shards, true, &|_| {}).expect("generate");
    Arc::new(Audience::load(&out).expect("load"))
}

/// The demo campaign, optionally with its TOML text edited.
pub fn campaign(edit: impl FnOnce(String) -> String) -> Arc<Campaign> {
    let text = edit(campaign::DEMO_CAMPAIGN.to_owned());
    Arc::new(Campaign::parse(&text, Path::new("demo.toml")).expect("campaign"))
}

/// A running engine with everything it needs.
pub struct Rig {
    pub dir: tempfile::TempDir,
    pub audience: Arc<Audience>,
    pub tally: Arc<DeliveryTally>,
    pub metrics: Arc<MemoryMetrics>,
    pub engine: Engine,
}

pub async fn rig<P: Provider>(
    devices: u64,
    campaign: Arc<Campaign>,
    provider: impl FnOnce(Arc<DeliveryTally>) -> P,
    config: EngineConfig,
) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let audience = audience(dir.path(), devices, 11, 4);
    let tally = Arc::new(DeliveryTally::for_audience(&audience));
    let metrics = Arc::new(MemoryMetrics::new());
    let ledger = Arc::new(SqliteLedger::open(&dir.path().join("ledger.sqlite")).unwrap());
    let warm = Warm::new(audience.clone(), campaign).unwrap();
    let engine = Engine::start(warm, Arc::new(provider(tally.clone())), ledger, metrics.clone(), config).await.unwrap();
    Rig { dir, audience, tally, metrics, engine }
}

/// Every device of an audience.
pub fn devices(audience: &Audience) -> impl Iterator<Item = DeviceRef> + '_ {
    audience.shards().iter().enumerate().flat_map(|(s, shard)| {
        Platform::ALL
            .into_iter()
            .flat_map(move |platform| (0..shard.len(platform) as u32).map(move |index| DeviceRef { shard: s as u32, platform, index }))
    })
}

/// The `kickoff-sender` binary built for these tests.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kickoff-sender"))
}

/// Runs the CLI and returns its output.
pub fn cli(args: &[&str]) -> Output {
    Command::new(bin()).args(args).env("KICKOFF_DATA_DIR", "/nonexistent-kickoff-test").output().expect("run kickoff-sender")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn small_engine() -> EngineConfig {
    EngineConfig { workers: 2, ..EngineConfig::default() }
}
