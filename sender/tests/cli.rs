//! The CLI as users run it: several processes, one ledger.

use std::process::{Command, Stdio};

use crate::util::{bin, cli, stderr, stdout};

fn compiled_audience(dir: &std::path::Path, devices: u32) -> (String, String) {
    let file = dir.join("a.csv");
    let out = dir.join("aud");
    let o = cli(&["audience", "generate", "--devices", &devices.to_string(), "--seed", "4", "--out", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = cli(&["audience", "compile", file.to_str().unwrap(), "--out", out.to_str().unwrap(), "--shards", "3", "--strict"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with(&format!("wrote {}", out.display())), "{}", stdout(&o));
    let campaign = dir.join("campaign.toml");
    std::fs::write(&campaign, kickoff_sender::campaign::DEMO_CAMPAIGN).unwrap();
    (out.to_str().unwrap().to_owned(), campaign.to_str().unwrap().to_owned())
}

#[test]
fn two_processes_pressing_fire_send_once() {
    let dir = tempfile::tempdir().unwrap();
    let (aud, campaign) = compiled_audience(dir.path(), 4_000);
    let ledger = dir.path().join("ledger.sqlite");
    let presses: Vec<_> = ["ana", "bo"]
        .iter()
        .map(|op| {
            Command::new(bin())
                .args([
                    "fire",
                    "--audience",
                    &aud,
                    "--campaign",
                    &campaign,
                    "--operator",
                    op,
                    "--json",
                    "--ledger",
                    ledger.to_str().unwrap(),
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<_> = presses.into_iter().map(|p| p.wait_with_output().unwrap()).collect();
    let mut codes: Vec<i32> = outputs.iter().map(|o| o.status.code().unwrap()).collect();
    codes.sort_unstable();
    assert_eq!(codes, vec![0, 3], "{}\n{}", stderr(&outputs[0]), stderr(&outputs[1]));
    let json: Vec<serde_json::Value> = outputs.iter().map(|o| serde_json::from_str(stdout(o).trim()).unwrap()).collect();
    let fired = json.iter().find(|j| j["status"] == "fired").unwrap();
    let refused = json.iter().find(|j| j["status"] == "already_fired").unwrap();
    assert_eq!(fired["report"]["delivered"], 4_000);
    assert_eq!(fired["report"]["not_sent"], 0);
    assert_eq!(refused["record"]["operator"], fired["report"]["operator"]);

    // After both processes are gone ("a restart"), a third press is refused too.
    let o = cli(&["fire", "--audience", &aud, "--campaign", &campaign, "--operator", "carol", "--ledger", ledger.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3));
    let text = stdout(&o);
    let winner = fired["report"]["operator"].as_str().unwrap();
    assert!(text.contains("already fired at") && text.contains(&format!("by {winner}")) && text.contains("nothing was sent"), "{text}");
}

#[test]
fn drill_json_carries_the_documented_fields_and_measures_zero_loss() {
    let o = cli(&["drill", "--devices", "3000", "--json", "--shards", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    for key in [
        "devices",
        "delivered",
        "duplicates",
        "missing",
        "failed",
        "elapsed_s",
        "rate_per_s",
        "p50_s",
        "p95_s",
        "p99_s",
        "max_s",
        "peak_rss_bytes",
    ] {
        assert!(j.get(key).is_some(), "missing {key} in {j}");
    }
    assert_eq!((j["devices"].as_u64(), j["delivered"].as_u64()), (Some(3000), Some(3000)));
    assert_eq!((j["duplicates"].as_u64(), j["missing"].as_u64()), (Some(0), Some(0)));
    assert!(j["peak_rss_bytes"].as_u64().unwrap() > 1_000_000);
    assert!(j.get("in_flight_limit").is_none());

    let o = cli(&[
        "drill",
        "--devices",
        "2000",
        "--json",
        "--provider",
        "model",
        "--rtt-ms",
        "1-3",
        "--workers",
        "2",
        "--connections",
        "2",
        "--streams",
        "50",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(j["in_flight_limit"], 200);
    assert_eq!(j["mean_rtt_s"], 0.002);
    assert_eq!((j["delivered"].as_u64(), j["missing"].as_u64()), (Some(2000), Some(0)));
}

#[test]
fn bad_inputs_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let campaign = dir.path().join("big.toml");
    let text = kickoff_sender::campaign::DEMO_CAMPAIGN.replacen("title = \"Anpfiff!\"", &format!("title = \"{}\"", "A".repeat(4200)), 1);
    std::fs::write(&campaign, text).unwrap();
    let o = cli(&["campaign", "check", campaign.to_str().unwrap()]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("big.toml:") && e.contains("payload for locale de-DE is") && e.contains("limit is 4096 bytes"), "{e}");

    let o = cli(&["drill", "--devices", "100", "--provider", "model", "--errors", "gone=0.1"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("unknown reason \"gone\""), "{}", stderr(&o));

    let o = cli(&["audience", "inspect", dir.path().to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("manifest.json"), "{}", stderr(&o));
}

#[test]
fn ctrl_c_during_a_fire_aborts_it_and_reports_what_was_not_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (aud, campaign) = compiled_audience(dir.path(), 20_000);
    let ledger = dir.path().join("ledger.sqlite");
    // 20,000 devices at 50 ms with 50 in flight: twenty seconds unless interrupted.
    let child = Command::new(bin())
        .args(["fire", "--audience", &aud, "--campaign", &campaign, "--ledger", ledger.to_str().unwrap(), "--json"])
        .args(["--provider", "model", "--rtt-ms", "50", "--workers", "1", "--connections", "1", "--streams", "50"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let j: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let r = &j["report"];
    assert_eq!(r["aborted"], true);
    let (handed, not_sent) = (r["handed_off"].as_u64().unwrap(), r["not_sent"].as_u64().unwrap());
    assert!(not_sent > 0 && handed > 0, "{r}");
    assert_eq!(handed + not_sent, 20_000);
    assert_eq!(r["delivered"].as_u64().unwrap() + r["in_doubt"].as_u64().unwrap(), handed);
}

#[test]
fn a_library_error_whose_fix_is_a_flag_gets_a_hint_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (aud, _) = compiled_audience(dir.path(), 50);
    let csv = dir.path().join("a.csv");
    let o = cli(&["audience", "compile", csv.to_str().unwrap(), "--out", &aud]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains(&format!("error: {aud} exists")) && err.contains("hint: pass --force"), "{err}");
    let o = cli(&["audience", "compile", csv.to_str().unwrap(), "--out", &aud, "--force"]);
    assert!(o.status.success() && !stderr(&o).contains("hint:"), "{}", stderr(&o));
}

/// `fire` of `aud` with `campaign`, its ledger and data directory in `dir`,
/// printing JSON, with `extra` flags.
fn fire_in(dir: &std::path::Path, aud: &str, campaign: &str, extra: &[&str]) -> std::process::Output {
    let ledger = dir.join("ledger.sqlite");
    Command::new(bin())
        .args(["fire", "--audience", aud, "--campaign", campaign, "--ledger", ledger.to_str().unwrap(), "--json"])
        .args(extra)
        .env("KICKOFF_DATA_DIR", dir)
        .output()
        .unwrap()
}

#[test]
fn a_fire_that_leaves_devices_without_a_final_answer_exits_6() {
    let dir = tempfile::tempdir().unwrap();
    let (aud, campaign) = compiled_audience(dir.path(), 300);
    // Every request answered 503: each device is retried, then given up.
    let o = fire_in(dir.path(), &aud, &campaign, &["--gateway-503", "1", "--workers", "1"]);
    assert_eq!(o.status.code(), Some(6), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(j["unanswered"], 300, "{j}");
    assert_eq!(j["received"][0], 0, "the gateway delivered nothing: {j}");
    assert!(stderr(&o).contains("300 devices were left without a final answer"), "{}", stderr(&o));
}

#[test]
fn an_absurd_retry_after_is_capped_and_the_fire_ends_with_exit_6() {
    let dir = tempfile::tempdir().unwrap();
    let (aud, campaign) = compiled_audience(dir.path(), 20);
    // A provider that throttles everything, forever: the lane paces itself
    // (its pauses capped at the policy's 30 s, whatever retry-after says)
    // and, throttled past the outage timeout, the fire stops interrupted.
    let started = std::time::Instant::now();
    let o = fire_in(
        dir.path(),
        &aud,
        &campaign,
        &["--gateway-429", "1", "--gateway-retry-after", "18446744073709551615", "--workers", "1", "--outage-timeout", "40s"],
    );
    assert_eq!(o.status.code(), Some(6), "no panic, an honest exit code: {}", stderr(&o));
    assert!(started.elapsed() < std::time::Duration::from_secs(120), "the fire ends within two minutes");
    let j: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let r = &j["report"];
    assert!(r["interrupted"].as_str().unwrap().contains("throttled every request"), "{r}");
    assert_eq!(j["unanswered"], 20, "every device is left for a resume: {j}");
    assert_eq!(r["delivered"], 0, "{r}");
    assert!(r["throttled"].as_u64().unwrap() >= 20, "{r}");
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
}

#[test]
fn flags_the_chosen_provider_ignores_are_an_error() {
    for (args, message) in [
        (&["--provider", "null", "--rtt-ms", "5"][..], "--provider null does not use --rtt-ms"),
        (&["--provider", "model", "--gateway-429", "0.5"][..], "--provider model does not use --gateway-429"),
        (&["--apns-key-id", "ABC"][..], "--provider gateway does not use --apns-key-id"),
    ] {
        let o = cli(&[&["drill", "--devices", "10"][..], args].concat());
        assert!(!o.status.success(), "{args:?}");
        assert!(stderr(&o).contains(message), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn a_cli_fire_and_a_walk_share_one_key_and_a_new_event_is_explicit() {
    let dir = tempfile::tempdir().unwrap();
    let (aud, campaign) = compiled_audience(dir.path(), 200);
    let fire = |extra: &[&str]| fire_in(dir.path(), &aud, &campaign, extra);
    let first = fire(&[]);
    assert!(first.status.success(), "{}", stderr(&first));
    let j: serde_json::Value = serde_json::from_str(stdout(&first).trim()).unwrap();
    let id = kickoff_sender::campaign::Campaign::load(std::path::Path::new(&campaign)).unwrap().id;
    assert_eq!(j["report"]["campaign_id"], id, "the launch is keyed by the campaign id alone");
    assert_eq!(fire(&[]).status.code(), Some(3), "the launch fires once");
    let demo = fire(&["--new-event", "demo-2"]);
    assert!(demo.status.success(), "{}", stderr(&demo));
    let j: serde_json::Value = serde_json::from_str(stdout(&demo).trim()).unwrap();
    assert_eq!(j["report"]["campaign_id"], format!("{id}@demo-2"));
    assert_eq!(j["received"][0], 200, "the new event sends to every device: {j}");
}

#[test]
fn completions_and_man_pages_come_from_the_command_definitions() {
    let run = |args: &[&str]| std::process::Command::new(bin()).args(args).output().unwrap();
    for (shell, marker) in
        [("bash", "complete -F _kickoff__sender"), ("zsh", "#compdef kickoff-sender"), ("fish", "complete -c kickoff-sender")]
    {
        let o = run(&["completions", shell]);
        assert!(o.status.success(), "{shell}: {}", stderr(&o));
        let text = stdout(&o);
        // The commands and their flags are in it: generated, not written by hand.
        assert!(text.contains(marker) && text.contains("runbook") && text.contains("fcm-quota-per-minute"), "{shell}: {text}");
    }
    assert!(!run(&["completions", "tcsh"]).status.success(), "an unknown shell is refused");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man");
    let o = run(&["man", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let top = std::fs::read_to_string(out.join("kickoff-sender.1")).unwrap();
    assert!(top.starts_with(".ie") || top.contains(".TH kickoff-sender"), "{top}");
    let walk = std::fs::read_to_string(out.join("kickoff-sender-runbook-walk.1")).expect("a page per subcommand");
    assert!(walk.contains(".TH kickoff-sender-runbook-walk") && walk.contains("new\\-event"), "{walk}");
    assert!(out.join("kickoff-sender-plan.1").is_file() && out.join("kickoff-sender-aws-abort.1").is_file());
    let version = run(&["--version"]);
    assert_eq!(stdout(&version).trim(), format!("kickoff-sender {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn json_logs_are_one_object_per_line() {
    let o = std::process::Command::new(bin())
        .args(["drill", "--devices", "2000", "--json"])
        .env("KICKOFF_LOG", "debug")
        .env("KICKOFF_LOG_FORMAT", "json")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let logs: Vec<serde_json::Value> =
        stderr(&o).lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    assert!(!logs.is_empty(), "debug logs of a drill (its HTTP/2 connections): {}", stderr(&o));
    for l in &logs {
        assert!(l["timestamp"].is_string() && l["level"].is_string() && l.get("message").is_some(), "{l}");
    }
    // The human format is the default: the same run logs no JSON.
    let o = std::process::Command::new(bin()).args(["drill", "--devices", "2000", "--json"]).env("KICKOFF_LOG", "debug").output().unwrap();
    assert!(stderr(&o).lines().any(|l| l.contains("DEBUG")) && !stderr(&o).lines().any(|l| l.starts_with('{')), "{}", stderr(&o));
}
