//! A fire survives its process: `kill -9` of a CLI fire against the gateway
//! as its own process, then `fire --resume`, counted per token at the
//! gateway.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::util::{self, GatewayProc, bin, stderr, stdout};

const DEVICES: u32 = 12_000;

/// A compiled audience and an alert campaign (a collapse id by default).
fn audience(dir: &Path) -> (String, String) {
    let file = dir.join("a.csv");
    let out = dir.join("aud");
    let o = util::cli(&["audience", "generate", "--devices", &DEVICES.to_string(), "--seed", "9", "--out", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = util::cli(&["audience", "compile", file.to_str().unwrap(), "--out", out.to_str().unwrap(), "--shards", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let campaign = dir.join("campaign.toml");
    std::fs::write(&campaign, kickoff_sender::campaign::DEMO_CAMPAIGN).unwrap();
    (out.to_str().unwrap().to_owned(), campaign.to_str().unwrap().to_owned())
}

fn fire_args<'a>(aud: &'a str, campaign: &'a str, gw: &'a GatewayProc, ledger: &'a str, reports: &'a str) -> Vec<&'a str> {
    vec![
        "fire",
        "--audience",
        aud,
        "--campaign",
        campaign,
        "--ledger",
        ledger,
        "--reports",
        reports,
        "--provider",
        "http",
        "--config",
        gw.config.to_str().unwrap(),
        "--workers",
        "1",
        "--connections",
        "1",
        "--json",
    ]
}

/// Batches the journal holds for the fire.
fn journaled(ledger: &Path) -> i64 {
    let Ok(db) = rusqlite::Connection::open_with_flags(ledger, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY) else { return 0 };
    db.query_row("SELECT count(*) FROM fire_journal", [], |r| r.get(0)).unwrap_or(0)
}

fn spawn(args: &[&str]) -> Child {
    Command::new(bin()).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

fn run(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().unwrap()
}

/// Kills a fire once the journal holds `at` of its batches (early, middle,
/// late), then resumes it: every device arrives, duplicates only from the
/// batches in flight at the kill, each with a collapse id. `engine`: the
/// HTTP/2 send engine (`--engine`).
fn killed_and_resumed(at: f64, engine: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (aud, campaign) = audience(dir.path());
    let keys = dir.path().join("keys");
    // 40 streams answering in 20 ms: about 2,000 devices a second, so the
    // fire lasts seconds and the kill lands where it is meant to.
    let mut gw = GatewayProc::start(&keys, &["--gateway-latency-ms", "20", "--gateway-streams", "40", "--expect", &aud]);
    let ledger = dir.path().join("ledger.sqlite");
    let (ledger_s, reports) = (ledger.to_str().unwrap(), dir.path().join("reports"));
    let mut args = fire_args(&aud, &campaign, &gw, ledger_s, reports.to_str().unwrap());
    // Before the trailing --json, which some checks drop.
    args.splice(args.len() - 1..args.len() - 1, ["--engine", engine]);
    // About 12,000 / 375 (500 iOS, 250 Android a batch) batches in all.
    let batches = f64::from(DEVICES) / 375.0;
    let target = ((batches * at) as i64).max(1);
    let mut fire = spawn(&args);
    let deadline = Instant::now() + Duration::from_secs(60);
    while journaled(&ledger) < target {
        assert!(Instant::now() < deadline, "the fire journaled {} of {target} batches in a minute", journaled(&ledger));
        assert!(fire.try_wait().unwrap().is_none(), "the fire ended before the kill: {:?}", fire.wait_with_output());
        std::thread::sleep(Duration::from_millis(20));
    }
    fire.kill().unwrap();
    fire.wait().unwrap();

    // A plain fire now says the fire was interrupted, and sends nothing.
    let plain = run(&args);
    assert_eq!(plain.status.code(), Some(3), "{}", stderr(&plain));
    let j: serde_json::Value = serde_json::from_str(stdout(&plain).trim()).unwrap();
    assert_eq!(j["status"], "interrupted", "{j}");
    let answered = j["standing"]["answered"].as_u64().unwrap();
    assert!(answered > 0 && answered < u64::from(DEVICES), "{j}");
    let text = run(&args[..args.len() - 1]);
    assert!(stdout(&text).contains("INTERRUPTED") && stdout(&text).contains("--resume"), "{}", stdout(&text));

    // Resume: exactly the devices without a final answer.
    let mut resume_args = args.clone();
    resume_args.push("--resume");
    let resumed = run(&resume_args);
    assert!(resumed.status.success(), "{}\n{}", stdout(&resumed), stderr(&resumed));
    let r: serde_json::Value = serde_json::from_str(stdout(&resumed).trim()).unwrap();
    let report = &r["report"];
    assert_eq!(report["targeted"].as_u64().unwrap(), u64::from(DEVICES) - answered, "{report}");
    assert_eq!(report["resumed"]["answered"].as_u64().unwrap(), answered, "{report}");
    // A second resume finds nothing interrupted.
    let again = run(&resume_args);
    assert_eq!(again.status.code(), Some(3), "{}", stdout(&again));

    let out = gw.finish();
    let (stats, check) = (&out[0], &out[1]);
    assert_eq!(check["missing"], 0, "every device arrived: {check}");
    assert_eq!(check["unexpected"], 0, "{check}");
    assert_eq!(stats["without_collapse_id"], 0, "every copy carried a collapse id: {stats}");
    // Duplicates come only from batches answered but not yet journaled at
    // the kill: at most the in-flight window plus what ~100 ms of journal
    // lag lets through, far below a fifth of the audience.
    let dup = check["duplicates"].as_u64().unwrap();
    assert!(dup < u64::from(DEVICES) / 5, "{dup} duplicates: {check}");
}

#[test]
fn a_fire_killed_early_resumes_with_nothing_missing() {
    killed_and_resumed(0.05, "nghttp2");
}

#[test]
fn a_fire_killed_midway_resumes_with_nothing_missing() {
    killed_and_resumed(0.5, "nghttp2");
}

#[test]
fn a_fire_killed_midway_on_the_h2_engine_resumes_with_nothing_missing() {
    killed_and_resumed(0.5, "h2");
}

#[test]
fn a_fire_killed_late_resumes_with_nothing_missing() {
    killed_and_resumed(0.9, "nghttp2");
}

#[test]
fn an_abort_from_another_process_stops_the_fire_and_it_exits_4() {
    let dir = tempfile::tempdir().unwrap();
    let (aud, campaign) = audience(dir.path());
    let keys = dir.path().join("keys");
    let mut gw = GatewayProc::start(&keys, &["--gateway-latency-ms", "20", "--gateway-streams", "40"]);
    let ledger = dir.path().join("ledger.sqlite");
    let (ledger_s, reports) = (ledger.to_str().unwrap(), dir.path().join("reports"));
    let args = fire_args(&aud, &campaign, &gw, ledger_s, reports.to_str().unwrap());
    let fire = spawn(&args);
    let deadline = Instant::now() + Duration::from_secs(60);
    while journaled(&ledger) < 2 {
        assert!(Instant::now() < deadline, "the fire did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let id = kickoff_sender::campaign::Campaign::load(Path::new(&campaign)).unwrap().id;
    let no_why = run(&["abort", "--campaign", &id, "--ledger", ledger_s, "--why", " "]);
    assert!(!no_why.status.success() && stderr(&no_why).contains("--why"), "{}", stderr(&no_why));
    let abort = run(&["abort", "--campaign", &id, "--ledger", ledger_s, "--why", "backend drowning", "--operator", "bo"]);
    assert!(abort.status.success(), "{}\n{}", stdout(&abort), stderr(&abort));
    assert!(stdout(&abort).contains("the fire stopped: aborted"), "{}", stdout(&abort));
    let out = fire.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(4), "the firing process exits 4: {}", stderr(&out));
    let j: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let report = &j["report"];
    assert_eq!(report["aborted"], true, "{report}");
    assert!(report["aborted_by"].as_str().unwrap().contains("bo (backend drowning)"), "{report}");
    let stats = gw.stats();
    let arrived = stats["deliveries"].as_u64().unwrap();
    assert!(arrived < u64::from(DEVICES), "the send stopped: {arrived} of {DEVICES} arrived");
    assert_eq!(arrived, report["delivered"].as_u64().unwrap(), "the gateway counted what the report says: {report}");
    // The ledger holds who aborted; a second abort is told of the first.
    let again = run(&["abort", "--campaign", &id, "--ledger", ledger_s, "--why", "again"]);
    assert_eq!(again.status.code(), Some(3), "{}", stdout(&again));
}

/// Stops the gateway process mid-fire for `outage`, then starts it again on
/// the same address: the fire pauses, reconnects and ends with every device
/// delivered, no retry budget spent.
fn provider_outage(outage: Duration, engine: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (aud, campaign) = audience(dir.path());
    let keys = dir.path().join("keys");
    let counts = dir.path().join("gateway-counts.txt");
    let flags = ["--gateway-latency-ms", "20", "--gateway-streams", "40", "--counts", counts.to_str().unwrap()];
    let mut gw = GatewayProc::start(&keys, &flags);
    let ledger = dir.path().join("ledger.sqlite");
    let (ledger_s, reports) = (ledger.to_str().unwrap(), dir.path().join("reports"));
    let mut args = fire_args(&aud, &campaign, &gw, ledger_s, reports.to_str().unwrap());
    // Before the trailing --json, which some checks drop.
    args.splice(args.len() - 1..args.len() - 1, ["--engine", engine]);
    let mut fire = spawn(&args);
    let deadline = Instant::now() + Duration::from_secs(60);
    while journaled(&ledger) < 6 {
        assert!(Instant::now() < deadline, "the fire did not start");
        assert!(fire.try_wait().unwrap().is_none(), "the fire ended before the outage");
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = gw.stats();
    std::thread::sleep(outage);
    assert!(fire.try_wait().unwrap().is_none(), "the fire waits for the provider instead of failing");
    let mut gw = GatewayProc::start(&keys, &[&flags[..], &["--expect", &aud]].concat());
    let out = fire.wait_with_output().unwrap();
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let j: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let report = &j["report"];
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(report["retries"], 0, "refused connections cost no retry budget: {report}");
    assert_eq!(report["unanswered"], serde_json::Value::Null, "{report}");
    assert_eq!(j["unanswered"], 0, "{j}");
    let log = stderr(&out);
    let paused = log.matches("hand-offs paused").count();
    assert!((1..=3).contains(&paused), "one log line per state change (outage, FCM re-authentication), not per attempt: {log}");
    let out = gw.finish();
    let (stats, check) = (&out[0], &out[1]);
    assert!(before["deliveries"].as_u64().unwrap() > 0, "the outage came mid-fire: {before}");
    assert_eq!(check["missing"], 0, "every device arrived, counted over both gateway runs: {check}");
    assert_eq!(stats["without_collapse_id"], 0, "re-sent requests carry the collapse id: {stats}");
}

#[test]
fn a_two_second_provider_outage_pauses_the_fire_and_loses_nothing() {
    provider_outage(Duration::from_secs(2), "nghttp2");
}

#[test]
fn a_two_second_provider_outage_on_the_h2_engine_pauses_the_fire_and_loses_nothing() {
    provider_outage(Duration::from_secs(2), "h2");
}

#[test]
fn a_ten_second_provider_outage_pauses_the_fire_and_loses_nothing() {
    provider_outage(Duration::from_secs(10), "nghttp2");
}

/// Devices of `platform` the journal holds a final answer for.
fn journaled_devices(ledger: &Path, platform: u8) -> i64 {
    let Ok(db) = rusqlite::Connection::open_with_flags(ledger, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY) else { return 0 };
    db.query_row(
        "SELECT coalesce(sum(end_ - start - coalesce(length(unanswered), 0) / 4), 0) FROM fire_journal WHERE platform = ?1",
        [platform],
        |r| r.get(0),
    )
    .unwrap_or(0)
}

#[test]
fn a_storm_of_429s_on_half_the_requests_for_ten_seconds_slows_the_fire_and_loses_nothing() {
    storm_of_429s("nghttp2");
}

#[test]
fn a_storm_of_429s_on_the_h2_engine_slows_the_fire_and_loses_nothing() {
    storm_of_429s("h2");
}

/// Half the requests answered 429 for ten seconds, on `engine`.
fn storm_of_429s(engine: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (aud, campaign) = audience(dir.path());
    let keys = dir.path().join("keys");
    let storm =
        ["--gateway-latency-ms", "20", "--gateway-streams", "40", "--gateway-429", "0.5", "--gateway-faults-for", "10", "--expect", &aud];
    let mut gw = GatewayProc::start(&keys, &storm);
    let ledger = dir.path().join("ledger.sqlite");
    let (ledger_s, reports) = (ledger.to_str().unwrap(), dir.path().join("reports"));
    let mut args = fire_args(&aud, &campaign, &gw, ledger_s, reports.to_str().unwrap());
    // Before the trailing --json, which some checks drop.
    args.splice(args.len() - 1..args.len() - 1, ["--engine", engine]);
    let out = run(&args);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let j: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let report = &j["report"];
    assert_eq!(j["unanswered"], 0, "{j}");
    assert!(report["throttled"].as_u64().unwrap() > 0, "the storm was met: {report}");
    assert!(report["retries"].as_u64().unwrap() <= report["retry_budget"].as_u64().unwrap(), "{report}");
    assert_eq!(report["budget_exhausted"], 0, "{report}");
    let log = stderr(&out);
    assert!(log.contains("is throttling (429)"), "one line when the throttling starts: {log}");
    let out = gw.finish();
    let (stats, check) = (&out[0], &out[1]);
    assert_eq!(check["missing"], 0, "every device arrived: {check}");
    assert_eq!(check["duplicates"], 0, "a 429 is not a delivery: nothing arrived twice: {check}");
    assert!(stats["statuses"]["429"].as_u64().unwrap() > 0, "{stats}");
}

/// The sender's configuration for APNs at one gateway and FCM at another.
fn split_config(dir: &Path, apns: &GatewayProc, fcm: &GatewayProc) -> std::path::PathBuf {
    let table = |g: &GatewayProc| -> toml::Table { std::fs::read_to_string(&g.config).unwrap().parse().unwrap() };
    let (a, f) = (table(apns), table(fcm));
    let (a_dir, f_dir) = (apns.config.parent().unwrap(), fcm.config.parent().unwrap());
    let s = |t: &toml::Table, section: &str, key: &str| t[section][key].as_str().unwrap().to_owned();
    let text = format!(
        "[apns]\nkey_file = {:?}\nkey_id = {:?}\nteam_id = {:?}\nurl = {:?}\n[fcm]\nservice_account = {:?}\nurl = {:?}\n",
        a_dir.join(s(&a, "apns", "key_file")),
        s(&a, "apns", "key_id"),
        s(&a, "apns", "team_id"),
        s(&a, "apns", "url"),
        f_dir.join(s(&f, "fcm", "service_account")),
        s(&f, "fcm", "url"),
    );
    let path = dir.join("split.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn fcm_down_does_not_stop_apns_and_the_fire_finishes_once_fcm_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let (aud, campaign) = audience(dir.path());
    let loaded = kickoff_sender::audience::Audience::load(Path::new(&aud)).unwrap();
    let count = |p| loaded.shards().iter().map(|s| s.len(p) as u64).sum::<u64>();
    let (ios, android) = (count(kickoff_sender::audience::Platform::Ios), count(kickoff_sender::audience::Platform::Android));
    let slow = ["--gateway-latency-ms", "20", "--gateway-streams", "40"];
    let mut apns = GatewayProc::start(&dir.path().join("keys-apns"), &slow);
    let counts = dir.path().join("fcm-counts.txt");
    let fcm_flags = [&slow[..], &["--counts", counts.to_str().unwrap()]].concat();
    let fcm_keys = dir.path().join("keys-fcm");
    let mut fcm = GatewayProc::start(&fcm_keys, &fcm_flags);
    let config = split_config(dir.path(), &apns, &fcm);
    let ledger = dir.path().join("ledger.sqlite");
    let reports = dir.path().join("reports");
    let mut args = fire_args(&aud, &campaign, &apns, ledger.to_str().unwrap(), reports.to_str().unwrap());
    let at = args.iter().position(|a| *a == "--config").unwrap() + 1;
    args[at] = config.to_str().unwrap();
    let mut fire = spawn(&args);
    let deadline = Instant::now() + Duration::from_secs(60);
    while journaled_devices(&ledger, 1) < 500 {
        assert!(Instant::now() < deadline, "FCM sends did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // FCM goes away; APNs goes on to the last iOS device meanwhile.
    fcm.finish();
    while journaled_devices(&ledger, 0) < ios as i64 {
        assert!(Instant::now() < deadline, "APNs stalled with FCM: {} of {ios} iOS devices answered", journaled_devices(&ledger, 0));
        assert!(fire.try_wait().unwrap().is_none(), "the fire waits for FCM instead of ending");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(journaled_devices(&ledger, 1) < android as i64, "FCM was down meanwhile");
    let mut fcm = GatewayProc::start(&fcm_keys, &fcm_flags);
    let out = fire.wait_with_output().unwrap();
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let log = stderr(&out);
    assert!(log.contains("FCM unreachable since"), "the fire's status names the provider: {log}");
    assert!(!log.contains("APNs unreachable"), "{log}");
    let a = apns.stats();
    assert_eq!((a["unique_tokens"].as_u64().unwrap(), a["duplicates"].as_u64().unwrap()), (ios, 0), "{a}");
    let f = fcm.stats();
    assert_eq!(f["unique_tokens"].as_u64().unwrap(), android, "every Android device, over both FCM runs: {f}");
    assert_eq!(f["without_collapse_id"], 0, "{f}");
}

/// A runbook walking the audience `aud` to a fire and its watch.
fn walk_runbook(dir: &Path, aud: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("campaign.toml"), kickoff_sender::campaign::DEMO_CAMPAIGN).unwrap();
    let mut text = format!(
        "name = \"Resume\"\ncampaign = \"campaign.toml\"\n[audience]\ndir = {aud:?}\n[fleet]\ninstance_startup = \"50ms\"\ntask_startup = \"50ms\"\n[abort]\ntext = \"Stop.\"\n"
    );
    for (id, role, kind) in [
        ("scale-asg", "ops", "scale-asg"),
        ("scale-ecs", "ops", "scale-ecs"),
        ("verify-warm", "engineer", "verify-warm"),
        ("test-send", "engineer", "test-send"),
        ("confirm", "marketer", "confirm"),
        ("arm", "engineer", "arm"),
        ("fire", "marketer", "fire"),
        ("watch", "ops", "watch"),
    ] {
        let params = if kind.starts_with("scale") { "params = { desired = 1, timeout = \"30s\" }\n" } else { "" };
        text.push_str(&format!("[[steps]]\nid = \"{id}\"\ntitle = \"{id}\"\nrole = \"{role}\"\nkind = \"{kind}\"\n{params}"));
    }
    let path = dir.join("resume.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn walk(dir: &Path, rb: &Path, gw: &GatewayProc, extra: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.args(["runbook", "walk", rb.to_str().unwrap(), "--provider", "http", "--config", gw.config.to_str().unwrap()])
        .args(["--workers", "1", "--connections", "1"])
        .args(extra)
        .env("KICKOFF_DATA_DIR", dir.join("data"));
    c
}

#[test]
fn a_walk_killed_mid_fire_is_resumed_by_the_next_walk_with_nothing_missing() {
    let dir = tempfile::tempdir().unwrap();
    let (aud, _) = audience(dir.path());
    let rb = walk_runbook(dir.path(), &aud);
    let mut gw = GatewayProc::start(&dir.path().join("keys"), &["--gateway-latency-ms", "20", "--gateway-streams", "40", "--expect", &aud]);
    let ledger = dir.path().join("data").join("kickoff.sqlite");
    let mut first = walk(dir.path(), &rb, &gw, &["--yes"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while journaled(&ledger) < 12 {
        assert!(Instant::now() < deadline, "the walk's fire did not start");
        assert!(first.try_wait().unwrap().is_none(), "the walk ended before the kill");
        std::thread::sleep(Duration::from_millis(20));
    }
    first.kill().unwrap();
    first.wait().unwrap();
    // The next walk finds the launch interrupted and, told yes to
    // everything, resumes it.
    let second = walk(dir.path(), &rb, &gw, &["--yes"]).output().unwrap();
    assert!(second.status.success(), "{}\n{}", stdout(&second), stderr(&second));
    assert!(stdout(&second).contains("0 missing"), "{}", stdout(&second));
    let out = gw.finish();
    let (stats, check) = (&out[0], &out[1]);
    assert_eq!(check["missing"], 0, "every device arrived over both walks: {check}");
    assert_eq!(stats["without_collapse_id"], 0, "{stats}");
    assert!(check["duplicates"].as_u64().unwrap() < u64::from(DEVICES) / 5, "{check}");
}

#[test]
fn an_abort_from_a_joined_walk_stops_the_walk_that_fired() {
    let dir = tempfile::tempdir().unwrap();
    let (aud, _) = audience(dir.path());
    let rb = walk_runbook(dir.path(), &aud);
    let mut gw = GatewayProc::start(&dir.path().join("keys"), &["--gateway-latency-ms", "20", "--gateway-streams", "40"]);
    let ledger = dir.path().join("data").join("kickoff.sqlite");
    let firing = walk(dir.path(), &rb, &gw, &["--yes", "--operator", "ana"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while journaled(&ledger) < 4 {
        assert!(Instant::now() < deadline, "the walk's fire did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let script = dir.path().join("abort.script");
    std::fs::write(&script, "abort backend drowning\n").unwrap();
    let joined = walk(dir.path(), &rb, &gw, &["--script", script.to_str().unwrap(), "--operator", "bo"]).output().unwrap();
    assert!(stdout(&joined).contains("Joining the open event"), "{}", stdout(&joined));
    assert_eq!(joined.status.code(), Some(4), "{}", stderr(&joined));
    let out = firing.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(4), "the walk that fired stops and exits 4: {}", stderr(&out));
    let stats = gw.stats();
    assert!(stats["deliveries"].as_u64().unwrap() < u64::from(DEVICES), "the send stopped: {stats}");
}
