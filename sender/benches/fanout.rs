//! `make bench`: the fan-out engine's speed, memory and latency figures.
//!
//! Prints a Markdown table (copied into BENCHMARKS.md) and writes the same
//! figures as JSON to `bench-out/fanout.json`. Sizes can be lowered for a
//! quick look with `KICKOFF_BENCH_SCALE=0.1`.

#![allow(clippy::print_stdout, clippy::print_stderr, reason = "a benchmark prints its results")]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kickoff_sender::audience::generate::{self, GenerateSpec};
use kickoff_sender::audience::{Audience, Platform};
use kickoff_sender::campaign::{self, Payloads};
use kickoff_sender::fanout::{Engine, EngineConfig, FireOutcome, FireReport, SqliteLedger, Warm};
use kickoff_sender::metrics::MemoryMetrics;
use kickoff_sender::push::{ModelConfig, ModelProvider, NullProvider, Provider};

struct Row {
    name: String,
    value: String,
    goal: String,
    note: String,
}

fn scale() -> f64 {
    std::env::var("KICKOFF_BENCH_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1.0)
}

fn scaled(n: u64) -> u64 {
    ((n as f64 * scale()) as u64).max(1000)
}

fn audience(dir: &Path, devices: u64) -> Arc<Audience> {
    let out = dir.join(format!("aud-{devices}"));
    let spec = GenerateSpec { devices, ios_share: 0.6, markets: 7, seed: 1 };
    generate::compile_generated(&spec, &out, 32, true, &|_| {}).expect("generate");
    Arc::new(Audience::load(&out).expect("load"))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The floor: one thread walks the arena and builds each request's path and
/// body, nothing else (no tiers, no accounting, no provider).
fn floor_loop(a: &Audience, payloads: &Payloads) -> [Duration; 2] {
    let mut token = Vec::with_capacity(256);
    let mut path = Vec::with_capacity(128);
    let mut body = Vec::with_capacity(1024);
    let mut took = [Duration::ZERO; 2];
    for platform in Platform::ALL {
        let start = Instant::now();
        for shard in a.shards() {
            for i in 0..shard.len(platform) {
                let t = shard.token_text(platform, i, &mut token);
                let p = payloads.get(platform, usize::from(shard.locale(platform, i)) % payloads.locales().len());
                match platform {
                    Platform::Ios => {
                        path.clear();
                        path.extend_from_slice(b"/3/device/");
                        path.extend_from_slice(t.as_bytes());
                    }
                    Platform::Android => p.write_body(t, &mut body),
                }
                std::hint::black_box((&path, &body));
            }
        }
        took[platform as usize] = start.elapsed();
    }
    took
}

async fn fire<P: Provider>(
    a: &Arc<Audience>,
    id: &str,
    provider: P,
    config: EngineConfig,
    abort_after: Option<Duration>,
) -> Arc<FireReport> {
    let dir = tempfile::tempdir().unwrap();
    let campaign = Arc::new(campaign::demo().with_id(id.to_owned()));
    let warm = Warm::new(a.clone(), campaign).unwrap();
    let ledger = Arc::new(SqliteLedger::open(&dir.path().join("l.sqlite")).unwrap());
    let engine = Engine::start(warm, Arc::new(provider), ledger, Arc::new(MemoryMetrics::new()), config).await.unwrap();
    let FireOutcome::Started(handle) = engine.fire("bench").unwrap() else { panic!("fresh ledger") };
    if let Some(after) = abort_after {
        tokio::time::sleep(after).await;
        handle.abort("bench");
    }
    let report = handle.wait().await;
    engine.shutdown();
    report
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_time().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let config = EngineConfig { workers: cores, ..EngineConfig::default() };
    let mut rows = Vec::new();

    // 1. Null fan-out of 4M devices, fire to last hand-off.
    let n = scaled(4_000_000);
    eprintln!("generating {n} devices...");
    let a4 = audience(dir.path(), n);
    let payloads = Payloads::render(&campaign::demo()).unwrap();
    let floors: Vec<[Duration; 2]> = (0..3).map(|_| floor_loop(&a4, &payloads)).collect();
    let ios = median(floors.iter().map(|f| f[0].as_secs_f64()).collect());
    let android = median(floors.iter().map(|f| f[1].as_secs_f64()).collect());
    let floor = ios + android;
    let (n_ios, n_android) = (
        a4.shards().iter().map(|s| s.len(Platform::Ios)).sum::<usize>() as f64,
        a4.shards().iter().map(|s| s.len(Platform::Android)).sum::<usize>() as f64,
    );
    rows.push(Row {
        name: format!("floor: walk arena + build path/body, {n} devices, 1 thread"),
        value: format!("{floor:.3} s ({:.1} M/s)", n as f64 / floor / 1e6),
        goal: "reference".into(),
        note: format!(
            "iOS {:.1} ns/device (hex + path), Android {:.1} ns/device (6-bit decode + {}-byte body)",
            ios / n_ios * 1e9,
            android / n_android * 1e9,
            payloads.get(Platform::Android, 0).head.len() + payloads.get(Platform::Android, 0).tail.len() + 163
        ),
    });
    let mut handoff = Vec::new();
    let mut complete = Vec::new();
    for i in 0..5 {
        let r = rt.block_on(fire(&a4, &format!("null-{i}"), NullProvider::new(None), config.clone(), None));
        assert_eq!(r.delivered, n);
        handoff.push(r.last_handoff_s);
        complete.push(r.elapsed_s);
    }
    let (h, c) = (median(handoff), median(complete));
    rows.push(Row {
        name: format!("fan-out to null provider, {n} devices, {cores} workers (median of 5)"),
        value: format!("{h:.3} s to last hand-off ({:.1} M/s)", n as f64 / h / 1e6),
        goal: "≤ 0.2 s (≥ 20 M/s); ≤ 5x floor".into(),
        note: format!("{:.1}x the 1-thread floor; {:.1}x per core", h / floor, h * cores as f64 / floor),
    });
    let _ = c;

    // 2. Abort latency during a null fan-out.
    let r = rt.block_on(fire(&a4, "abort-null", NullProvider::new(None), config.clone(), Some(Duration::from_millis(30))));
    rows.push(Row {
        name: "abort during null fan-out: abort -> last hand-off".into(),
        value: format!("{:.3} ms", r.abort_to_last_handoff_s.unwrap_or(0.0) * 1000.0),
        goal: "≤ 100 ms".into(),
        note: format!("{} of {} handed off", r.handed_off, r.targeted),
    });
    drop(a4);

    // 3. Snapshot load of 6M devices (page cache warm).
    let n6 = scaled(6_000_000);
    eprintln!("generating {n6} devices...");
    let out6 = dir.path().join(format!("aud-{n6}"));
    generate::compile_generated(&GenerateSpec { devices: n6, ..GenerateSpec::default() }, &out6, 32, true, &|_| {}).unwrap();
    let loads: Vec<f64> = (0..3)
        .map(|_| {
            let t = Instant::now();
            let a = Audience::load(&out6).unwrap();
            let s = t.elapsed().as_secs_f64();
            std::hint::black_box(a.devices());
            s
        })
        .collect();
    let load = median(loads);
    let bytes = Audience::load(&out6).unwrap().resident_bytes();
    rows.push(Row {
        name: format!("snapshot load, {n6} devices, 32 shards (median of 3)"),
        value: format!("{load:.3} s, {:.0} MB in memory ({:.1} B/device)", bytes as f64 / 1e6, bytes as f64 / n6 as f64),
        goal: "≤ 1 s".into(),
        note: "one read per shard, checksums verified".into(),
    });

    // 4. Peak RSS of a whole 6M drill, in its own process.
    let exe = env!("CARGO_BIN_EXE_kickoff-sender");
    // The sender alone (null provider): the in-process gateway would add its
    // own per-token records, which are the receiver's memory, not the sender's.
    let drill =
        Command::new(exe).args(["drill", "--devices", &n6.to_string(), "--json", "--provider", "null"]).output().expect("run the drill");
    assert!(drill.status.success(), "{}", String::from_utf8_lossy(&drill.stderr));
    let j: serde_json::Value = serde_json::from_slice(&drill.stdout).unwrap();
    rows.push(Row {
        name: format!("drill peak RSS, {n6} devices (60% iOS, 163-char FCM tokens), null provider"),
        value: format!("{:.0} MB", j["peak_rss_bytes"].as_f64().unwrap() / 1e6),
        goal: "≤ 600 MB (reference: 7 GB per task)".into(),
        note: format!(
            "delivered {} dup {} missing {}, {:.3} s",
            j["delivered"],
            j["duplicates"],
            j["missing"],
            j["elapsed_s"].as_f64().unwrap()
        ),
    });

    // 4b. A paced fire (campaign `max_rate`) holds its rate.
    let np = scaled(400_000);
    let max_rate = (np / 4).max(1);
    let paced = dir.path().join("paced.toml");
    std::fs::write(&paced, format!("max_rate = {max_rate}\n{}", campaign::DEMO_CAMPAIGN)).unwrap();
    let drill = Command::new(exe)
        .args(["drill", "--devices", &np.to_string(), "--json", "--provider", "null", "--campaign", paced.to_str().unwrap()])
        .output()
        .expect("run the paced drill");
    assert!(drill.status.success(), "{}", String::from_utf8_lossy(&drill.stderr));
    let j: serde_json::Value = serde_json::from_slice(&drill.stdout).unwrap();
    let rate = j["delivered"].as_f64().unwrap() / j["handoff_s"].as_f64().unwrap();
    rows.push(Row {
        name: format!("paced fire, {np} devices at max_rate {max_rate}/s, null provider"),
        value: format!("{rate:.0}/s ({:+.1}% of max_rate)", (rate / max_rate as f64 - 1.0) * 100.0),
        goal: "within 5% of max_rate".into(),
        note: format!("last hand-off at {:.3} s; delivered {} missing {}", j["handoff_s"].as_f64().unwrap(), j["delivered"], j["missing"]),
    });

    // 5. The latency model against Little's law: each provider has its own
    // window, so the bound is the larger provider share's.
    let nm = scaled(4_000_000);
    let am = audience(dir.path(), nm);
    let model = ModelConfig::default();
    let limit = cores * config.in_flight_per_worker;
    let largest = Platform::ALL.map(|p| am.shards().iter().map(|s| s.len(p) as u64).sum::<u64>()).into_iter().max().unwrap();
    let bound = largest as f64 * model.mean_rtt().as_secs_f64() / limit as f64;
    let metrics = Arc::new(MemoryMetrics::new());
    let r = rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let campaign = Arc::new(campaign::demo().with_id("model".into()));
        let warm = Warm::new(am.clone(), campaign).unwrap();
        let ledger = Arc::new(SqliteLedger::open(&dir.path().join("l.sqlite")).unwrap());
        let engine =
            Engine::start(warm, Arc::new(ModelProvider::new(model.clone(), None)), ledger, metrics.clone(), config.clone()).await.unwrap();
        let FireOutcome::Started(h) = engine.fire("bench").unwrap() else { panic!() };
        let r = h.wait().await;
        engine.shutdown();
        r
    });
    let stats = metrics.snapshot("model");
    rows.push(Row {
        name: format!("latency model, {nm} devices (60% iOS), RTT uniform 20-60 ms, {limit} in flight per provider"),
        value: format!(
            "{:.3} s; p50 {:.2} s, p95 {:.2} s, p99 {:.2} s",
            r.elapsed_s,
            stats.latency.quantile(0.5).as_secs_f64(),
            stats.latency.quantile(0.95).as_secs_f64(),
            stats.latency.quantile(0.99).as_secs_f64()
        ),
        goal: format!("within 15% of Little's law for the larger provider share, {bound:.3} s"),
        note: format!("{:+.1}% of the bound", (r.elapsed_s / bound - 1.0) * 100.0),
    });
    // The plan's expected times for the same send, against the measured ones.
    let counts = Platform::ALL.map(|p| am.shards().iter().map(|s| s.len(p) as u64).sum::<u64>());
    let planned = kickoff_sender::plan::plan(kickoff_sender::plan::PlanInput {
        devices: counts,
        markets: Vec::new(),
        target_s: None,
        fcm_quota_per_minute: u64::MAX / 2,
        workers: 1,
        // The engine's own rate on this machine, from row 1.
        per_worker_rate: n as f64 / h,
        window_per_provider: limit as u32,
        rtt_ms: kickoff_sender::plan::DEFAULT_RTT_MS,
        tasks_per_instance: 1,
        max_rate: None,
        backends: Vec::new(),
        apns_environment: None,
        aws: None,
    });
    let measured = [0.5, 0.95, 0.99].map(|q| stats.latency.quantile(q).as_secs_f64());
    let worst = [planned.p50_s, planned.p95_s, planned.p99_s].iter().zip(measured).map(|(p, m)| (p / m - 1.0).abs()).fold(0.0, f64::max);
    rows.push(Row {
        name: format!("plan vs measured, the latency model above ({nm} devices)"),
        value: format!(
            "planned p50 {:.2} s, p95 {:.2} s, p99 {:.2} s; worst {:.0}% off",
            planned.p50_s,
            planned.p95_s,
            planned.p99_s,
            worst * 100.0
        ),
        goal: "within 25% of the measured percentiles".into(),
        note: "the plan's model: windows over the mean round trip, the engine's measured CPU rate".into(),
    });
    let r = rt.block_on(fire(&am, "abort-model", ModelProvider::new(model, None), config, Some(Duration::from_millis(500))));
    rows.push(Row {
        name: "abort during model send: abort -> last hand-off".into(),
        value: format!("{:.3} ms", r.abort_to_last_handoff_s.unwrap_or(0.0) * 1000.0),
        goal: "≤ 100 ms".into(),
        note: format!("in-flight answers drained in {:.0} ms, {} in doubt", (r.elapsed_s - r.last_handoff_s) * 1000.0, r.in_doubt),
    });

    println!("\nMachine: {}\n", kickoff_sender::sys::machine_description());
    println!("| benchmark | result | goal | note |\n|---|---|---|---|");
    for r in &rows {
        println!("| {} | {} | {} | {} |", r.name, r.value, r.goal, r.note);
    }
    let json: Vec<_> = rows.iter().map(|r| serde_json::json!({"name": r.name, "value": r.value, "goal": r.goal, "note": r.note})).collect();
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench-out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("fanout.json"), serde_json::to_vec_pretty(&json).unwrap()).unwrap();
}
