//! `make bench` (second part): notifications per second over HTTP/2 to the
//! loopback gateway, h2c and TLS, and the sender's own CPU time per
//! notification (user + sys of this process only; the gateway runs as a
//! separate `kickoff-sender gateway` process).
//!
//! Prints a Markdown table and writes `bench-out/http2.json`.
//! `KICKOFF_BENCH_SCALE=0.1` for a quick look.

#![allow(clippy::print_stdout, clippy::print_stderr, reason = "a benchmark prints its results")]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use kickoff_sender::audience::Audience;
use kickoff_sender::audience::generate::{self, GenerateSpec};
use kickoff_sender::campaign;
use kickoff_sender::drill::{self, DrillOptions};
use kickoff_sender::fanout::{Engine, EngineConfig, FireOutcome, SqliteLedger, Warm};
use kickoff_sender::metrics::MemoryMetrics;
use kickoff_sender::provider::{ProviderChoice, Setup};
use kickoff_sender::push::PushConfig;

fn scale() -> f64 {
    std::env::var("KICKOFF_BENCH_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1.0)
}

fn cpu_time() -> Duration {
    kickoff_sender::sys::cpu_time().expect("/proc/self/stat")
}

struct GatewayProcess(Child);

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-INT", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }
}

fn start_gateway(dir: &Path, h2c: bool) -> GatewayProcess {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kickoff-sender"));
    cmd.args(["gateway", "--keys", dir.to_str().unwrap(), "--listen", "127.0.0.1:0", "--gateway-streams", "1000"]);
    if h2c {
        cmd.arg("--h2c");
    }
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("start the gateway");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.contains("listening on"), "gateway said {line:?}");
    GatewayProcess(child)
}

struct Measured {
    devices: u64,
    delivered: u64,
    elapsed: f64,
    cpu: Duration,
}

fn measure(rt: &tokio::runtime::Runtime, audience: &Arc<Audience>, config: PushConfig, id: &str) -> Measured {
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let campaign = Arc::new(campaign::demo().with_id(id.to_owned()));
        let warm = Warm::new(audience.clone(), campaign.clone()).unwrap();
        let setup = Setup::start(&ProviderChoice::Http(config), audience, &campaign.apns.topic).await.unwrap();
        let ledger = Arc::new(SqliteLedger::open(&dir.path().join("l.sqlite")).unwrap());
        let engine =
            Engine::start(warm, setup.provider.clone(), ledger, Arc::new(MemoryMetrics::new()), EngineConfig::default()).await.unwrap();
        let before = cpu_time();
        let FireOutcome::Started(handle) = engine.fire("bench").unwrap() else { panic!("fresh ledger") };
        let report = handle.wait().await;
        let cpu = cpu_time() - before;
        engine.shutdown();
        Measured { devices: report.targeted, delivered: report.delivered, elapsed: report.elapsed_s, cpu }
    })
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = ((300_000.0 * scale()) as u64).max(1000);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("aud");
    generate::compile_generated(&GenerateSpec { devices: n, ..GenerateSpec::default() }, &out, 8, true, &|_| {}).unwrap();
    let audience = Arc::new(Audience::load(&out).unwrap());
    let mut rows = Vec::new();
    for (h2c, label) in [(true, "h2c"), (false, "TLS")] {
        let keys = dir.path().join(format!("keys-{label}"));
        let _gateway = start_gateway(&keys, h2c);
        let mut config = PushConfig::load(&keys.join("kickoff.toml")).unwrap();
        config.pool.connections = std::env::var("KICKOFF_BENCH_CONNECTIONS").ok().and_then(|c| c.parse().ok());
        // Three fires; the median, since two processes share two cores and
        // their scheduling moves single runs by ±10%.
        let mut runs: Vec<(f64, f64)> = (0..3)
            .map(|i| {
                let m = measure(&rt, &audience, config.clone(), &format!("bench-{label}-{i}"));
                assert_eq!(m.delivered, m.devices, "every device delivered");
                (m.cpu.as_secs_f64() / m.delivered as f64 * 1e6, m.delivered as f64 / m.elapsed)
            })
            .collect();
        runs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (per, rate) = runs[1];
        rows.push((
            format!("sender → gateway process over {label}, {n} devices (median of 3)"),
            format!(
                "{rate:.0}/s; sender CPU {per:.1} µs per notification (runs: {})",
                runs.iter().map(|r| format!("{:.1}", r.0)).collect::<Vec<_>>().join(", ")
            ),
            if label == "TLS" { "≤ 6 µs CPU per notification (stretch 3 µs)" } else { "reference" }.to_owned(),
        ));
    }
    for (tls, label) in [(false, "h2c"), (true, "TLS")] {
        let opts = DrillOptions {
            devices: n,
            provider: ProviderChoice::Gateway { config: Default::default(), tls, connections: 4 },
            ..DrillOptions::default()
        };
        let s = drill::run_blocking(&opts, &|_| {}).unwrap();
        assert_eq!((s.delivered, s.duplicates, s.missing), (n, 0, 0));
        rows.push((
            format!("sender + in-process gateway on the same 2 cores, {label}, {n} devices"),
            format!("{:.0}/s (p99 delivery {:.2} s)", s.rate_per_s, s.p99_s),
            "≥ 150,000/s".to_owned(),
        ));
    }
    println!("\nMachine: {}\n", kickoff_sender::sys::machine_description());
    println!("| benchmark | result | goal |\n|---|---|---|");
    for (name, value, goal) in &rows {
        println!("| {name} | {value} | {goal} |");
    }
    let json: Vec<_> = rows.iter().map(|(n, v, g)| serde_json::json!({"name": n, "value": v, "goal": g})).collect();
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench-out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("http2.json"), serde_json::to_vec_pretty(&json).unwrap()).unwrap();
}
