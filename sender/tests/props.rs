//! Property tests over everything Kickoff reads from outside: audience lines,
//! campaign, runbook and `aws.toml` files, providers' answers and recorder
//! files. The property is always the same: no input panics; a bad one is an
//! error, a good one works downstream.
//!
//! `make test` runs a short pass (a few hundred cases each). `make fuzz`
//! runs every harness for `KICKOFF_FUZZ_SECS` seconds (default 60) in a
//! release build. proptest rather than cargo-fuzz: fuzzing with coverage
//! needs a nightly toolchain this machine cannot install.

use std::borrow::Cow;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use kickoff_sender::audience::input::{CsvHeader, json_row};
use kickoff_sender::audience::{CompileOptions, compile};
use kickoff_sender::campaign::{Campaign, DEMO_CAMPAIGN, Payloads};
use kickoff_sender::fanout::RetryPolicy;
use kickoff_sender::push::ApnsHeaders;
use kickoff_sender::push::h2client::{RawResponse, parse_retry_after};
use kickoff_sender::recorder::{EventLog, replay};
use kickoff_sender::rng::SplitMix64;
use kickoff_sender::runbook::Runbook;

/// Runs `test` over `strategy`: `cases` cases, or for `KICKOFF_FUZZ_SECS`
/// seconds when that is set. A panic inside `test` is a failure, shrunk
/// to a small input and printed.
fn check<S: Strategy>(name: &str, cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let budget = std::env::var("KICKOFF_FUZZ_SECS").ok().and_then(|s| s.parse::<u64>().ok()).map(Duration::from_secs);
    let config = Config { cases: if budget.is_some() { 2_000 } else { cases }, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new(config);
    let start = Instant::now();
    let mut rounds = 0u64;
    loop {
        if let Err(e) = runner.run(&strategy, &test) {
            panic!("{name}: {e}");
        }
        rounds += 1;
        match budget {
            Some(b) if start.elapsed() < b => {}
            _ => break,
        }
    }
    if budget.is_some() {
        report(&format!("{name}: {rounds} rounds in {:.0?}", start.elapsed()));
    }
}

#[allow(clippy::print_stderr, reason = "make fuzz reports how much each harness tried")]
fn report(line: &str) {
    eprintln!("{line}");
}

/// A value as it might appear on the right of `key = ` in a TOML file:
/// numbers at their edges, durations and T-offsets of any size, strings of
/// anything, and a few shapes that are not TOML at all.
fn toml_value() -> impl Strategy<Value = String> {
    let units = prop::sample::select(vec!["ns", "ms", "s", "m", "h", "d", "w", "y", ""]);
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        prop::sample::select(vec!["0", "-1", "1", "18446744073709551615", "nan", "inf", "-inf", "1e300", "-0.0", "true", "[]", "{}"])
            .prop_map(str::to_owned),
        (any::<u64>(), units.clone()).prop_map(|(n, u)| format!("\"{n}{u}\"")),
        (prop::sample::select(vec!["+", "-", ""]), any::<u64>(), units).prop_map(|(s, n, u)| format!("\"T{s}{n}{u}\"")),
        ".{0,40}".prop_map(|s| toml::Value::String(s).to_string()),
        prop::collection::vec(".{0,12}", 0..4)
            .prop_map(|v| toml::Value::Array(v.into_iter().map(toml::Value::String).collect()).to_string()),
        ".{0,20}",
    ]
}

/// `base` with one line's value replaced, or a line inserted, or a line
/// dropped: files that are nearly right, where the interesting bugs are.
fn mutated(base: &'static str, keys: &'static [&'static str]) -> impl Strategy<Value = String> {
    let lines = base.lines().count();
    (0..lines, 0..3u8, prop::sample::select(keys.to_vec()), toml_value()).prop_map(move |(at, how, key, value)| {
        let mut out: Vec<String> = base.lines().map(str::to_owned).collect();
        match how {
            0 => match out[at].split_once(" = ") {
                Some((k, _)) => out[at] = format!("{k} = {value}"),
                None => out.insert(at, format!("{key} = {value}")),
            },
            1 => out.insert(at, format!("{key} = {value}")),
            _ => {
                out.remove(at);
            }
        }
        out.join("\n")
    })
}

const CAMPAIGN_KEYS: &[&str] = &[
    "id",
    "mode",
    "default_locale",
    "devices",
    "seconds",
    "code",
    "locales",
    "send_offset",
    "title",
    "body",
    "deep_link",
    "image_url",
    "topic",
    "priority",
    "push_type",
    "collapse_id",
    "expiration",
    "ttl",
    "collapse_key",
];

#[test]
fn campaign_files_never_panic() {
    let fired_at = SystemTime::now();
    check("campaign", 300, mutated(DEMO_CAMPAIGN, CAMPAIGN_KEYS), |text| {
        if let Ok(c) = Campaign::parse(&text, Path::new("c.toml")) {
            let payloads = Payloads::render(&c);
            if let Ok(p) = payloads {
                for locale in p.locales().to_vec() {
                    let i = p.index_of(&locale).expect("a rendered locale has an index");
                    for platform in [kickoff_sender::audience::Platform::Ios, kickoff_sender::audience::Platform::Android] {
                        prop_assert!(p.get(platform, i).body_for("a1b2").len() <= kickoff_sender::campaign::MAX_PAYLOAD_BYTES + 200);
                    }
                }
            }
            let _ = ApnsHeaders::for_fire(&c.apns, fired_at);
        }
        Ok(())
    });
}

const RUNBOOK_KEYS: &[&str] = &[
    "name",
    "event_time",
    "silent",
    "generate",
    "seed",
    "instance_startup",
    "task_startup",
    "capacity",
    "id",
    "kind",
    "role",
    "at",
    "deadline",
    "after",
    "checks",
    "params",
    "backup",
    "capacity_rps",
    "text",
];

#[test]
fn runbook_files_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("campaigns")).unwrap();
    std::fs::write(dir.path().join("campaigns/demo.toml"), DEMO_CAMPAIGN).unwrap();
    let path = dir.path().join("launch-day.toml");
    let base = kickoff_sender::runbook::SHIPPED.iter().find(|(n, _)| *n == "launch-day.toml").expect("shipped").1;
    check("runbook", 300, mutated(base, RUNBOOK_KEYS), |text| {
        if let Ok(r) = Runbook::parse(&text, &path) {
            let _ = r.plan_json();
            for s in &r.steps {
                if let (Some(at), Some(event)) = (s.at, r.event_time_ms) {
                    let _ = at.at(event);
                }
            }
            let _ = kickoff_sender::runbook::event_id(&r);
        }
        Ok(())
    });
}

const AWS_TOML: &str = r#"region = "us-east-1"
endpoint_url = "http://127.0.0.1:5000"
bucket = "kickoff-prod-123456789012"
prefix = "kickoff"
fire_queue = "kickoff-prod-fire.fifo"
batch_queue = "kickoff-prod-batches"
cluster = "kickoff-prod"
service = "kickoff-prod-notifier"
asg = "kickoff-prod-workers"
namespace = "Kickoff"
[worker]
roles = ["dispatch", "notify"]
notifiers = 4
max_batches = 16
visibility_timeout = "30s"
wait_time = "20s"
heartbeat = "1s"
"#;

const AWS_KEYS: &[&str] =
    &["region", "bucket", "prefix", "notifiers", "max_batches", "visibility_timeout", "wait_time", "heartbeat", "roles"];

#[test]
fn aws_config_files_never_panic() {
    assert!(kickoff_sender::aws::AwsConfig::parse(AWS_TOML, Path::new("aws.toml")).is_ok(), "the base file is valid");
    check("aws.toml", 300, mutated(AWS_TOML, AWS_KEYS), |text| {
        let _ = kickoff_sender::aws::AwsConfig::parse(&text, Path::new("aws.toml"));
        Ok(())
    });
}

/// A CSV or JSON Lines row as a device list might hold it, right or wrong.
fn audience_line() -> impl Strategy<Value = String> {
    let field = prop_oneof![
        "[0-9a-f]{0,200}",
        prop::sample::select(vec!["ios", "android", "IOS", "pager", "", "en-US", "US", "xx"]).prop_map(str::to_owned),
        ".{0,30}",
        "\"[^\"]{0,20}\"",
        "\"[^\"]{0,10}\"\"[^\"]{0,10}\"",
    ];
    prop_oneof![
        prop::collection::vec(field.clone(), 0..8).prop_map(|f| f.join(",")),
        prop::collection::vec(field, 0..6).prop_map(|f| {
            let keys = ["user_id", "platform", "token", "locale", "market", "extra"];
            let body: Vec<String> = f.iter().zip(keys).map(|(v, k)| format!("\"{k}\":{}", serde_json::Value::String(v.clone()))).collect();
            format!("{{{}}}", body.join(","))
        }),
        ".{0,120}",
    ]
}

#[test]
fn audience_lines_never_panic() {
    let header = CsvHeader::parse("user_id,platform,token,locale,market").unwrap();
    check("audience line", 2_000, audience_line(), |line| {
        let csv = header.row(&line);
        let json = json_row(&line);
        for row in [csv, json].into_iter().flatten() {
            prop_assert!(!row.token.is_empty(), "an accepted row has a token");
        }
        let mut fields: Vec<Cow<'_, str>> = Vec::new();
        let _ = kickoff_sender::audience::input::split_csv(&line, &mut fields);
        Ok(())
    });
}

#[test]
fn audience_files_compile_or_refuse_whole() {
    let dir = tempfile::tempdir().unwrap();
    let lines = prop::collection::vec(audience_line(), 0..30);
    check("audience file", 60, (lines, any::<bool>()), |(lines, jsonl)| {
        let input = dir.path().join(if jsonl { "a.jsonl" } else { "a.csv" });
        let head = if jsonl { String::new() } else { "user_id,platform,token,locale,market\n".to_owned() };
        std::fs::write(&input, head + &lines.join("\n")).unwrap();
        let out = dir.path().join("out");
        let opts = CompileOptions { force: true, ..CompileOptions::default() };
        match compile(&[input], &out, &opts, &mut |_| {}) {
            Ok(r) => {
                let m = r.manifest.as_ref().expect("a compiled audience has a manifest");
                prop_assert!(m.devices as usize <= lines.len());
                prop_assert!(kickoff_sender::audience::Audience::load(&out).is_ok(), "what compile wrote loads");
            }
            Err(_) => prop_assert!(!out.join("manifest.json").exists() || out.exists(), "a refusal leaves no half-written audience"),
        }
        Ok(())
    });
}

#[test]
fn provider_answers_never_panic_or_park_a_device_past_the_policy() {
    let policy = RetryPolicy::default();
    let answer = (
        any::<u16>(),
        prop_oneof![".{0,24}", any::<u64>().prop_map(|n| n.to_string()), Just("18446744073709551615".to_owned())],
        prop_oneof![".{0,200}".prop_map(String::into_bytes), prop::collection::vec(any::<u8>(), 0..200)],
        any::<u8>(),
        any::<u64>(),
    );
    check("provider answer", 2_000, answer, |(status, retry_after, body, attempt, seed)| {
        let header = http::HeaderValue::from_str(&retry_after).ok();
        let raw = RawResponse { status, retry_after: header.as_ref().and_then(parse_retry_after), apns_id: None, body };
        let outcomes = [kickoff_sender::push::apns::classify(&raw), kickoff_sender::push::fcm::classify(&raw)];
        let _ = (kickoff_sender::push::apns::reason(&raw), kickoff_sender::push::fcm::error_of(&raw));
        for outcome in outcomes {
            if let kickoff_sender::push::Outcome::Retry { after, .. } = outcome {
                let delay = policy.delay(attempt, after, &mut SplitMix64::new(seed));
                prop_assert!(delay <= policy.max + policy.base, "{delay:?}");
                prop_assert!(Instant::now().checked_add(delay).is_some());
            }
        }
        Ok(())
    });
}

/// Recorder files as a crash, a full disk or a hand edit might leave them:
/// the right tables with values of any kind in them.
#[test]
fn recorder_files_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let text = prop_oneof![".{0,30}", Just("{\"sent\":1}".to_owned()), Just("[1,2".to_owned()), any::<i64>().prop_map(|n| n.to_string())];
    let point = (any::<i64>(), prop::sample::select(vec!["sent", "delivered", "failed", "in_flight", "backend_rps", "x"]), any::<f64>());
    let audit = (
        any::<i64>(),
        prop::sample::select(vec!["fire", "abort", "start", "done", "fail", "skip", "arm", "zombie", "x"]),
        prop::sample::select(vec!["ok", "refused", "x"]),
        text.clone(),
    );
    let meta =
        (prop::sample::select(vec!["format", "runbook", "runbook_plan", "summary", "targeted", "campaign_id", "campaign_hash"]), text);
    let file = (prop::collection::vec(point, 0..20), prop::collection::vec(audit, 0..10), prop::collection::vec(meta, 0..6), any::<bool>());
    let n = std::sync::atomic::AtomicU64::new(0);
    check("recorder file", 150, file, |(points, audit, meta, garbage)| {
        let path = dir.path().join(format!("e{}.sqlite", n.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
        if garbage {
            std::fs::write(&path, format!("{points:?}{audit:?}")).unwrap();
        } else {
            let db = rusqlite::Connection::open(&path).unwrap();
            db.execute_batch(
                "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 CREATE TABLE points (t_ms INTEGER NOT NULL, name TEXT NOT NULL, dims TEXT NOT NULL, value REAL NOT NULL);
                 CREATE TABLE audit (id INTEGER PRIMARY KEY, t_ms INTEGER NOT NULL, actor TEXT NOT NULL, role TEXT NOT NULL,
                     step TEXT NOT NULL, action TEXT NOT NULL, outcome TEXT NOT NULL, payload TEXT NOT NULL);
                 CREATE TABLE snapshots (t_ms INTEGER NOT NULL, state TEXT NOT NULL);
                 INSERT INTO meta VALUES ('format', '1');",
            )
            .unwrap();
            for (t, name, v) in &points {
                db.execute("INSERT INTO points VALUES (?1, ?2, '', ?3)", rusqlite::params![t, name, v]).unwrap();
            }
            for (t, action, outcome, payload) in &audit {
                db.execute(
                    "INSERT INTO audit (t_ms, actor, role, step, action, outcome, payload) VALUES (?1, 'a', 'ops', 'fire', ?2, ?3, ?4)",
                    rusqlite::params![t, action, outcome, payload],
                )
                .unwrap();
            }
            for (k, v) in &meta {
                db.execute("INSERT OR REPLACE INTO meta VALUES (?1, ?2)", rusqlite::params![k, v]).unwrap();
            }
        }
        if let Ok(log) = EventLog::open(&path) {
            let summary = replay::summarize(&log);
            let _ = replay::live_summary(&log);
            let _ = replay::step_timings(&log);
            let frames = replay::frames(&log, None, None);
            prop_assert!(frames.len() as i64 <= replay::MAX_REPLAY_FRAMES, "{} frames", frames.len());
            let _ = replay::frames(&log, Some(u64::MAX), None);
            for f in frames.iter().take(50) {
                let _ = replay::format_offset(f.offset_s);
            }
            let _ = replay::parse_time("T+30s", &log);
            for (_, chart) in kickoff_sender::recorder::report::charts(&log, &summary) {
                let _ = chart.svg(400, 200);
            }
        }
        Ok(())
    });
}
