//! Shared set-up: audiences, campaigns, engines, the CLI binary.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
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

/// The loopback gateway as its own process (h2c), with its keys and
/// `kickoff.toml` in `dir`.
pub struct GatewayProc {
    child: Child,
    /// Its `kickoff.toml`: `--provider http --config` points a sender at it.
    pub config: PathBuf,
}

/// A test that fails before `stats` must not leave the gateway running: it
/// holds the test's output pipe open.
impl Drop for GatewayProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl GatewayProc {
    pub fn start(dir: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(bin())
            .args(["gateway", "--keys", dir.to_str().unwrap(), "--listen", "127.0.0.1:0", "--h2c"])
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
        assert!(line.contains("listening on"), "{line}");
        Self { child, config: dir.join("kickoff.toml") }
    }

    /// Stops it and returns what it counted.
    pub fn stats(&mut self) -> serde_json::Value {
        self.finish().remove(0)
    }

    /// Stops it and returns what it printed: its stats, then (started with
    /// `--expect AUDIENCE`) the per-token check of that audience.
    pub fn finish(&mut self) -> Vec<serde_json::Value> {
        let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        let mut rest = String::new();
        std::io::Read::read_to_string(self.child.stdout.as_mut().unwrap(), &mut rest).unwrap();
        self.child.wait().unwrap();
        let out: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&rest)
            .into_iter()
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("gateway output {rest:?}: {e}"));
        assert!(!out.is_empty(), "the gateway printed nothing");
        out
    }
}

/// `GET path` from `127.0.0.1:port` (HTTP/1.1, one request): the status
/// line and the body.
pub fn http_get(port: u16, path: &str) -> std::io::Result<(String, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Ok((head.lines().next().unwrap_or_default().to_owned(), body.to_owned()))
}

/// A port free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The sum of a Prometheus page's samples of `name` (every label set).
pub fn prom_sum(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
