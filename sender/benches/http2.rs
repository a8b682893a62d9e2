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

use kickoff_sender::audience::generate::{self, GenerateSpec};
use kickoff_sender::audience::{Audience, Platform};
use kickoff_sender::campaign;
use kickoff_sender::drill::{self, DrillOptions};
use kickoff_sender::fanout::{Engine, EngineConfig, FireOutcome, SqliteLedger, Warm};
use kickoff_sender::metrics::MemoryMetrics;
use kickoff_sender::provider::{ProviderChoice, Setup};
use kickoff_sender::push::PushConfig;
use kickoff_sender::push::h2client::SendEngine;

const ENGINES: [SendEngine; 2] = [SendEngine::H2, SendEngine::Nghttp2];

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

/// nghttpd (Debian's nghttp2-server), a fast single-threaded C server,
/// answering every POST with its own body (`--echo-upload`, status 200).
struct Nghttpd(Child);

impl Drop for Nghttpd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn on_path(program: &str) -> bool {
    Command::new(program).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

fn start_nghttpd(keys: &Path) -> (Nghttpd, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("nghttpd")
        .args(["--echo-upload", "--max-concurrent-streams=1000", "--address=127.0.0.1", &port.to_string()])
        .arg(keys.join("server-key.pem"))
        .arg(keys.join("server.pem"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start nghttpd");
    let server = Nghttpd(child);
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return (server, port);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("nghttpd did not listen on {port}");
}

/// CPU (user + sys) of one `h2load` run: `n` APNs-shaped POSTs on 8
/// connections (the sender's 2 workers x 4), 250 streams each.
/// With `uris`, each request's path comes from that file (one device path
/// per line, as the sender's are) instead of one path repeated.
fn h2load_cpu(port: u16, n: u64, body: &Path, uris: Option<&Path>) -> Duration {
    let bearer = format!("bearer {}", "e".repeat(200));
    let target = match uris {
        Some(file) => format!("-i {}", file.display()),
        None => format!("https://127.0.0.1:{port}/3/device/{}", "ab".repeat(32)),
    };
    let script = format!(
        "h2load -n {n} -c 8 -m 250 -d {body} -H 'apns-topic: com.example.app' -H 'apns-push-type: alert' \
         -H 'apns-priority: 10' -H 'authorization: {bearer}' {target} >/dev/null && times",
        body = body.display(),
    );
    let out = Command::new("bash").args(["-c", &script]).output().expect("run h2load");
    assert!(out.status.success(), "h2load: {}", String::from_utf8_lossy(&out.stderr));
    // `times`: this shell's user and sys, then its children's.
    let text = String::from_utf8_lossy(&out.stdout);
    let children = text.lines().last().expect("times printed");
    children
        .split_whitespace()
        .map(|t| {
            let (m, s) = t.trim_end_matches('s').split_once('m').expect("0m1.234s");
            Duration::from_secs_f64(m.parse::<f64>().unwrap() * 60.0 + s.parse::<f64>().unwrap())
        })
        .sum()
}

/// Kickoff's sender and h2load against the same nghttpd, alternating three
/// times: CPU per request, side by side (issue 15's measure). iOS devices
/// only, so every request has the APNs shape h2load repeats. `None` when
/// nghttpd or h2load is not installed (`make bench` installs them).
fn against_nghttpd(rt: &tokio::runtime::Runtime, n: u64) -> Option<(String, String, String)> {
    if !(on_path("nghttpd") && on_path("h2load")) {
        eprintln!("nghttpd or h2load is not installed (Debian: nghttp2-server, nghttp2-client): skipping the side-by-side row");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("aud-ios");
    generate::compile_generated(&GenerateSpec { devices: n, ios_share: 1.0, ..GenerateSpec::default() }, &out, 8, true, &|_| {}).unwrap();
    let audience = Arc::new(Audience::load(&out).unwrap());
    let body = dir.path().join("body.json");
    std::fs::write(&body, br#"{"aps":{"alert":{"title":"The big game is on","body":"Open the app now: the offer ends at the final whistle"},"sound":"default"},"deep_link":"app://offer/kickoff"}"#).unwrap();
    // A gateway process for its keys, its certificate (nghttpd's too) and
    // FCM's token endpoint; the APNs requests go to nghttpd.
    let keys = dir.path().join("keys");
    let _gateway = start_gateway(&keys, false);
    let (_server, port) = start_nghttpd(&keys);
    let mut config = PushConfig::load(&keys.join("kickoff.toml")).unwrap();
    config.apns.url = Some(format!("https://127.0.0.1:{port}"));
    // Every device's own path, as the sender sends them (h2load then
    // Huffman-codes a new :path per request, as the sender does).
    let uris = dir.path().join("uris.txt");
    let mut buf = Vec::new();
    let lines: Vec<String> = audience
        .shards()
        .iter()
        .flat_map(|s| {
            (0..s.len(Platform::Ios))
                .map(|i| format!("https://127.0.0.1:{port}/3/device/{}", s.token_text(Platform::Ios, i, &mut buf)))
                .collect::<Vec<_>>()
        })
        .collect();
    std::fs::write(&uris, lines.join("\n")).unwrap();
    let (mut ours, mut theirs, mut unique) = ([Vec::new(), Vec::new()], Vec::new(), Vec::new());
    for i in 0..3 {
        for (e, engine) in ENGINES.into_iter().enumerate() {
            config.pool.engine = Some(engine);
            let m = measure(rt, &audience, config.clone(), &format!("bench-nghttpd-{}-{i}", engine.as_str()));
            assert_eq!(m.delivered, m.devices, "nghttpd echoed every request with 200");
            ours[e].push(m.cpu.as_secs_f64() / m.delivered as f64 * 1e6);
        }
        theirs.push(h2load_cpu(port, n, &body, None).as_secs_f64() / n as f64 * 1e6);
        unique.push(h2load_cpu(port, n, &body, Some(&uris)).as_secs_f64() / n as f64 * 1e6);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[1]
    };
    let runs = |v: &[f64]| v.iter().map(|r| format!("{r:.1}")).collect::<Vec<_>>().join(", ");
    let b = median(&mut theirs);
    let u = median(&mut unique);
    let engines: Vec<String> = ENGINES
        .into_iter()
        .zip(ours.iter_mut())
        .map(|(engine, v)| {
            let a = median(v);
            format!("{} {a:.1} µs (**{:.2}x**, {:.2}x the unique-path h2load; runs {})", engine.as_str(), a / b, a / u, runs(v))
        })
        .collect();
    Some((
        format!("sender vs h2load → nghttpd over TLS, {n} APNs requests each (median of 3, alternating)"),
        format!(
            "sender CPU per request: {}; h2load {b:.1} µs (runs {}); h2load with each device's own path {u:.1} µs (runs {})",
            engines.join("; "),
            runs(&theirs),
            runs(&unique)
        ),
        "≤ 1.2x h2load".to_owned(),
    ))
}

/// Four million devices through the nghttp2 engine to a gateway process
/// over TLS: the launch-day shape on this machine (the 4M drill of issue
/// 15). Scaled by KICKOFF_BENCH_SCALE.
fn four_million(rt: &tokio::runtime::Runtime, dir: &Path) -> (String, String, String) {
    let n = ((4_000_000.0 * scale()) as u64).max(1000);
    let out = dir.join("aud-4m");
    generate::compile_generated(&GenerateSpec { devices: n, ..GenerateSpec::default() }, &out, 32, true, &|_| {}).unwrap();
    let audience = Arc::new(Audience::load(&out).unwrap());
    let keys = dir.join("keys-4m");
    let _gateway = start_gateway(&keys, false);
    let mut config = PushConfig::load(&keys.join("kickoff.toml")).unwrap();
    config.pool.engine = Some(SendEngine::Nghttp2);
    let m = measure(rt, &audience, config, "bench-4m");
    assert_eq!(m.delivered, m.devices, "every device delivered");
    (
        format!("{n} devices → gateway process over TLS, nghttp2 engine (one fire)"),
        format!(
            "{:.0}/s, all sent in {:.1} s; sender CPU {:.1} µs per notification",
            m.delivered as f64 / m.elapsed,
            m.elapsed,
            m.cpu.as_secs_f64() / m.delivered as f64 * 1e6
        ),
        "the reference: 4M in 5.7 s (99%) on a fleet".to_owned(),
    )
}

/// Whether to run the rows named `part`: all of them, or only those listed
/// in KICKOFF_BENCH_ONLY (comma-separated: gateway, nghttpd, 4m, drill).
fn runs(part: &str) -> bool {
    std::env::var("KICKOFF_BENCH_ONLY").map_or(true, |only| only.split(',').any(|p| p.trim() == part))
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
    for ((h2c, label), engine) in [(true, "h2c"), (false, "TLS")].into_iter().flat_map(|l| ENGINES.map(|e| (l, e))) {
        if !runs("gateway") {
            break;
        }
        let keys = dir.path().join(format!("keys-{label}-{}", engine.as_str()));
        let _gateway = start_gateway(&keys, h2c);
        let mut config = PushConfig::load(&keys.join("kickoff.toml")).unwrap();
        config.pool.connections = std::env::var("KICKOFF_BENCH_CONNECTIONS").ok().and_then(|c| c.parse().ok());
        config.pool.engine = Some(engine);
        // Three fires; the median, since two processes share two cores and
        // their scheduling moves single runs by ±10%.
        let mut runs: Vec<(f64, f64)> = (0..3)
            .map(|i| {
                let m = measure(&rt, &audience, config.clone(), &format!("bench-{label}-{}-{i}", engine.as_str()));
                assert_eq!(m.delivered, m.devices, "every device delivered");
                (m.cpu.as_secs_f64() / m.delivered as f64 * 1e6, m.delivered as f64 / m.elapsed)
            })
            .collect();
        runs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (per, rate) = runs[1];
        rows.push((
            format!("sender ({}) → gateway process over {label}, {n} devices (median of 3)", engine.as_str()),
            format!(
                "{rate:.0}/s; sender CPU {per:.1} µs per notification (runs: {})",
                runs.iter().map(|r| format!("{:.1}", r.0)).collect::<Vec<_>>().join(", ")
            ),
            if label == "TLS" { "≤ 6 µs CPU per notification (stretch 3 µs)" } else { "reference" }.to_owned(),
        ));
    }
    if runs("nghttpd")
        && let Some(row) = against_nghttpd(&rt, n)
    {
        rows.push(row);
    }
    if runs("4m") {
        rows.push(four_million(&rt, dir.path()));
    }
    for ((tls, label), engine) in [(false, "h2c"), (true, "TLS")].into_iter().flat_map(|l| ENGINES.map(|e| (l, e))) {
        if !runs("drill") {
            break;
        }
        let opts = DrillOptions {
            devices: n,
            provider: ProviderChoice::Gateway { config: Default::default(), tls, connections: 4, engine },
            ..DrillOptions::default()
        };
        let s = drill::run_blocking(&opts, &|_| {}).unwrap();
        assert_eq!((s.delivered, s.duplicates, s.missing), (n, 0, 0));
        rows.push((
            format!("sender ({}) + in-process gateway on the same 2 cores, {label}, {n} devices", engine.as_str()),
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
