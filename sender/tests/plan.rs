//! `kickoff-sender plan`: the capacity, quota and backend-load plan of a
//! runbook, through the real binary.

use std::path::Path;
use std::process::{Command, Output};

use crate::util;

fn runbook(dir: &Path, devices: u64, backend: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("campaign.toml"), kickoff_sender::campaign::DEMO_CAMPAIGN).unwrap();
    let text = format!(
        r#"name = "Plan"
campaign = "campaign.toml"

[audience]
generate = {devices}

[backends.api]
{backend}

[[steps]]
id = "scale-ecs"
title = "Scale the notifier service"
role = "ops"
kind = "scale-ecs"
params = {{ desired = 100, timeout = "2m" }}
"#
    );
    let path = dir.join("plan.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn plan(runbook: &Path, work: &Path, extra: &[&str]) -> (Output, serde_json::Value) {
    let o = Command::new(util::bin())
        .args(["plan", runbook.to_str().unwrap(), "--json", "--work-dir", work.to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap();
    let json = serde_json::from_str(util::stdout(&o).trim()).unwrap_or_else(|e| panic!("{e}: {} {}", util::stdout(&o), util::stderr(&o)));
    (o, json)
}

fn gate<'a>(plan: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    plan["gates"].as_array().unwrap().iter().find(|g| g["id"] == id).unwrap_or_else(|| panic!("no gate {id}: {plan}"))
}

#[test]
fn four_million_devices_in_five_seconds_fail_the_default_fcm_quota_and_pass_a_raised_one() {
    let dir = tempfile::tempdir().unwrap();
    // The demo campaign targets 4M devices in 5 s; 40% of them are Android.
    let rb = runbook(dir.path(), 4_000_000, "capacity_rps = 1_000_000");
    let work = dir.path().join("work");
    let (o, p) = plan(&rb, &work, &["--per-worker-rate", "60000"]);
    assert_eq!(o.status.code(), Some(2), "a failing gate exits 2: {p}");
    let quota = gate(&p, "provider-quota");
    assert_eq!(quota["ok"], false, "{quota}");
    let detail = quota["detail"].as_str().unwrap();
    assert!(detail.contains("about 160 s") && detail.contains("600,000/min"), "{detail}");
    let android = p["platforms"].as_array().unwrap().iter().find(|x| x["platform"] == "android").unwrap();
    let devices = android["devices"].as_u64().unwrap();
    assert!((1_550_000..1_650_000).contains(&devices), "40% of 4M: {android}");
    assert_eq!(android["bound"], "quota", "{android}");
    assert_eq!(gate(&p, "fleet-size")["ok"], true, "100 workers at 60k/s: {p}");

    // The flag raises it...
    let (o, p) = plan(&rb, &work, &["--per-worker-rate", "60000", "--fcm-quota-per-minute", "100000000"]);
    assert_eq!(gate(&p, "provider-quota")["ok"], true, "{p}");
    assert!(o.status.success(), "every gate passes: {p}");
    assert!(p["p99_s"].as_f64().unwrap() < 5.0, "{p}");
    // Without provider settings the plan states the embedded gateway...
    assert!(p["input"]["apns_environment"].as_str().unwrap().contains("loopback gateway"), "{p}");
    // ...and kickoff.toml's [fcm] quota_per_minute raises it too; its
    // [apns] url is the environment the plan states.
    let config = dir.path().join("kickoff.toml");
    std::fs::write(
        &config,
        "[apns]\nkey_file = \"AuthKey.p8\"\nkey_id = \"K\"\nteam_id = \"T\"\nurl = \"sandbox\"\n[fcm]\nquota_per_minute = 100_000_000\n",
    )
    .unwrap();
    let (_, p) = plan(&rb, &work, &["--per-worker-rate", "60000", "--config", config.to_str().unwrap()]);
    assert_eq!(gate(&p, "provider-quota")["ok"], true, "{p}");
    assert_eq!(p["input"]["fcm_quota_per_minute"], 100_000_000u64, "{p}");
    assert_eq!(p["input"]["apns_environment"], "sandbox", "{p}");

    // Too few workers: the fleet gate says how many would do.
    let (o, p) = plan(&rb, &work, &["--per-worker-rate", "1000", "--fcm-quota-per-minute", "100000000"]);
    assert_eq!(o.status.code(), Some(2));
    let fleet = gate(&p, "fleet-size");
    assert_eq!(fleet["ok"], false, "{fleet}");
    assert!(fleet["detail"].as_str().unwrap().contains("800 workers"), "4M / 5 s / 1,000 per worker: {fleet}");
}

#[test]
fn the_send_rate_is_measured_and_the_backend_forecast_names_its_remedies() {
    let dir = tempfile::tempdir().unwrap();
    let rb = runbook(dir.path(), 20_000, "capacity_rps = 100\nrequests_per_open = 40\nopen_share = 0.1\nopen_delay = \"30s\"");
    let charts = dir.path().join("charts");
    let (o, p) = plan(&rb, &dir.path().join("work"), &["--calibration-devices", "3000", "--charts", charts.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "the backend is too small: {p}");
    for stem in ["plan-delivery", "plan-load"] {
        let svg = std::fs::read_to_string(charts.join(format!("{stem}.svg"))).unwrap();
        assert!(svg.starts_with("<svg"), "{stem}.svg");
        assert!(std::fs::metadata(charts.join(format!("{stem}.png"))).unwrap().len() > 1000, "{stem}.png");
    }
    let load_svg = std::fs::read_to_string(charts.join("plan-load.svg")).unwrap();
    assert!(load_svg.contains("api capacity") && load_svg.contains("zombie api"), "the load chart names the capacity and the remedy");
    let rate = p["input"]["per_worker_rate"].as_f64().unwrap();
    assert!(rate > 0.0 && rate.is_finite(), "measured through the loopback gateway: {p}");
    let api = &p["backends"][0];
    // 20,000 x 10% x 40 requests over about 30 s: far over 100 req/s.
    assert!(api["peak_rps"].as_f64().unwrap() > 1000.0, "{api}");
    assert!(api["zombie_for_s"].as_f64().unwrap() >= api["over_capacity_s"].as_f64().unwrap(), "{api}");
    let paced = api["paced_rate_per_s"].as_f64().unwrap();
    assert!(paced > 0.0 && paced < 100.0, "rate x 10% x 40 under 100 req/s: {api}");
    let load = gate(&p, "backend-load");
    assert_eq!(load["ok"], false);
    assert!(load["detail"].as_str().unwrap().contains("zombie mode for"), "{load}");
}

#[test]
fn a_bad_return_traffic_setting_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let rb = runbook(dir.path(), 1000, "capacity_rps = 100\nopen_share = 2");
    let o = Command::new(util::bin()).args(["plan", rb.to_str().unwrap(), "--per-worker-rate", "1000"]).output().unwrap();
    assert!(!o.status.success());
    let err = util::stderr(&o);
    assert!(err.contains("plan.toml:7") && err.contains("open_share"), "{err}");
    let rb = runbook(dir.path(), 1000, "capacity_rps = 100");
    let o = Command::new(util::bin()).args(["plan", rb.to_str().unwrap(), "--rtt-ms", "60-20"]).output().unwrap();
    assert!(!o.status.success());
    assert!(util::stderr(&o).contains("round trip"), "{}", util::stderr(&o));
}

#[test]
fn the_plan_of_a_1m_latency_model_drill_agrees_with_the_drills_littles_law_bound() {
    use kickoff_sender::plan::{PlanInput, plan};
    // The drill's counts and windows; its own bound is N x mean RTT / window
    // for the larger provider share. How long the drill took depends on the
    // machine (`make bench` compares the plan with the measured times).
    let o = Command::new(util::bin()).args(["drill", "--devices", "1000000", "--provider", "model", "--json"]).output().unwrap();
    assert!(o.status.success(), "{}", util::stderr(&o));
    let drill: serde_json::Value = serde_json::from_str(util::stdout(&o).trim()).unwrap();
    assert_eq!(drill["apns_in_flight_limit"], drill["fcm_in_flight_limit"]);
    let p = plan(PlanInput {
        devices: [drill["ios"].as_u64().unwrap(), drill["android"].as_u64().unwrap()],
        markets: Vec::new(),
        target_s: None,
        fcm_quota_per_minute: u64::MAX / 2,
        workers: 1,
        // The model costs the sender next to nothing: the windows bound it.
        per_worker_rate: 1e12,
        window_per_provider: drill["apns_in_flight_limit"].as_u64().unwrap() as u32,
        rtt_ms: (20.0, 60.0),
        tasks_per_instance: 1,
        max_rate: None,
        backends: Vec::new(),
        apns_environment: None,
        aws: None,
    });
    let bound = drill["littles_law_s"].as_f64().unwrap();
    assert!((p.p99_s - bound).abs() <= 0.25 * bound, "planned p99 {:.2} s, the drill's bound {bound:.2} s", p.p99_s);
    assert!(p.platforms.iter().all(|x| x.bound == "window"), "{:?}", p.platforms);
}

#[test]
fn a_paced_fire_sends_no_faster_than_its_max_rate_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let campaign = dir.path().join("paced.toml");
    std::fs::write(&campaign, format!("max_rate = 10_000\n{}", kickoff_sender::campaign::DEMO_CAMPAIGN)).unwrap();
    let o = Command::new(util::bin())
        .args(["drill", "--devices", "20000", "--provider", "null", "--json", "--campaign", campaign.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", util::stderr(&o));
    let j: serde_json::Value = serde_json::from_str(util::stdout(&o).trim()).unwrap();
    assert_eq!((j["delivered"].as_u64(), j["missing"].as_u64(), j["duplicates"].as_u64()), (Some(20_000), Some(0), Some(0)), "{j}");
    // 20,000 devices at 10,000/s: the last batch goes about 2 s after the
    // press (a lower bound: a busy machine only makes it later).
    let last = j["handoff_s"].as_f64().unwrap();
    assert!(last >= 1.9, "paced: the last hand-off at {last:.3} s: {j}");
}

#[test]
fn a_plan_step_passes_or_fails_the_walk_on_its_gates() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("campaign.toml"), kickoff_sender::campaign::DEMO_CAMPAIGN).unwrap();
    let walk = |quota: u64| {
        let text = format!(
            r#"name = "Plan step"
campaign = "campaign.toml"

[audience]
generate = 2000

[[steps]]
id = "plan"
title = "Check the plan"
role = "engineer"
kind = "plan"
params = {{ fcm_quota_per_minute = {quota}, per_worker_rate = 1_000_000 }}

[[steps]]
id = "go"
title = "Go"
role = "ops"
kind = "checklist"
params = {{ items = ["ready"] }}
"#
        );
        let rb = dir.path().join(format!("plan-{quota}.toml"));
        std::fs::write(&rb, text).unwrap();
        Command::new(util::bin())
            .args([
                "runbook",
                "walk",
                rb.to_str().unwrap(),
                "--yes",
                "--record",
                dir.path().join(format!("{quota}.sqlite")).to_str().unwrap(),
            ])
            .env("KICKOFF_DATA_DIR", dir.path().join("data"))
            .output()
            .unwrap()
    };
    let ok = walk(600_000);
    assert!(ok.status.success(), "{}\n{}", util::stdout(&ok), util::stderr(&ok));
    assert!(util::stdout(&ok).contains("every gate passes"), "{}", util::stdout(&ok));
    // 800 Android devices at one message a minute: far over the 5 s target.
    let bad = walk(1);
    assert_eq!(bad.status.code(), Some(5), "{}\n{}", util::stdout(&bad), util::stderr(&bad));
    let out = format!("{}{}", util::stdout(&bad), util::stderr(&bad));
    assert!(out.contains("provider-quota"), "{out}");
}

/// `plan --aws`: the deployment is read from the AWS API emulator, and the
/// fire's messages are checked against SQS's limits and the group's size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_plan_reads_the_service_the_group_and_the_queue_and_checks_sqs_limits() {
    use kickoff_sender::fleet::{Fleet, Group};
    let dir = tempfile::tempdir().unwrap();
    let moto = crate::aws::Moto::start();
    // 100 workers holding 20,000 batches each: far over SQS's 120,000 in flight.
    let config = crate::aws::write_config(dir.path(), &moto, None, "max_batches = 20000\n");
    let aws = crate::aws::connect(&config).await;
    let fleet = kickoff_sender::aws::fleet::AwsFleet::new(&aws);
    fleet.set_desired(Group::Service, 3).await.unwrap();
    // A message left in the batch queue from before.
    let queues = kickoff_sender::aws::queues::Queues::open(&aws).await.unwrap();
    aws.sqs.send_message().queue_url(&queues.batch_url).message_body("{}").send().await.unwrap();
    let rb = runbook(dir.path(), 20_000, "capacity_rps = 1_000_000");
    let work = dir.path().join("work");
    let aws_plan = |rb: &Path| {
        let (o, p) = plan(rb, &work, &["--per-worker-rate", "60000", "--aws", config.to_str().unwrap()]);
        (o.status.code(), p)
    };
    let (code, p) = tokio::task::block_in_place(|| aws_plan(&rb));
    assert_eq!(code, Some(2), "{p}");
    let facts = &p["input"]["aws"]["facts"];
    assert_eq!(facts["service_desired"], 3, "read from ECS: {p}");
    assert_eq!(facts["asg_max"], 100, "read from the auto-scaling group: {p}");
    assert_eq!(facts["backlog"], 1, "{p}");
    let messages = p["input"]["aws"]["batch_messages"].as_u64().unwrap();
    let devices: u64 = p["platforms"].as_array().unwrap().iter().map(|x| x["devices"].as_u64().unwrap()).sum();
    // At most 500 iOS or 250 Android devices a message.
    assert!(messages >= devices / 500 && messages <= devices, "{messages} messages for {devices} devices");
    let queue = gate(&p, "queue-limits");
    let detail = queue["detail"].as_str().unwrap();
    assert_eq!(queue["ok"], false, "{queue}");
    assert!(detail.contains("2,000,000 in flight") && detail.contains("max_batches to at most 1200"), "{detail}");
    assert!(detail.contains("1 messages are already in the batch queue"), "{detail}");
    let capacity = gate(&p, "aws-capacity");
    assert_eq!(capacity["ok"], false, "{capacity}");
    assert!(
        capacity["detail"].as_str().unwrap().contains("scales the ASG to 0 instances, but 100 workers at 2 per instance need 50"),
        "{capacity}"
    );

    // Fixed: the queue drained, a sane max_batches, the runbook scales the ASG.
    aws.sqs.purge_queue().queue_url(&queues.batch_url).send().await.unwrap();
    crate::aws::write_config(dir.path(), &moto, None, "max_batches = 16\n");
    let text = std::fs::read_to_string(&rb).unwrap()
        + "\n[[steps]]\nid = \"scale-asg\"\ntitle = \"Scale the ASG\"\nrole = \"ops\"\nkind = \"scale-asg\"\nparams = { desired = 50, timeout = \"2m\" }\n";
    let fixed = dir.path().join("fixed.toml");
    std::fs::write(&fixed, text).unwrap();
    let (code, p) = tokio::task::block_in_place(|| aws_plan(&fixed));
    for id in ["queue-limits", "aws-capacity"] {
        assert_eq!(gate(&p, id)["ok"], true, "{id}: {p}");
    }
    assert_eq!(code, Some(0), "{p}");
    assert!(gate(&p, "queue-limits")["detail"].as_str().unwrap().contains("1,600 in flight"), "{p}");
    // The embedded plan has neither gate.
    let (_, p) = plan(&fixed, &work, &["--per-worker-rate", "60000"]);
    assert!(p["gates"].as_array().unwrap().iter().all(|g| g["id"] != "queue-limits" && g["id"] != "aws-capacity"), "{p}");
}

/// The shipped launch-day runbook's forecast: the opens after its fire load
/// the API past its capacity, which its zombie step is there for (issue 13).
#[test]
fn the_launch_day_forecast_exceeds_the_apis_capacity() {
    let dir = tempfile::tempdir().unwrap();
    let runbook = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../runbooks/launch-day.toml");
    let o = std::process::Command::new(crate::util::bin())
        .args(["plan", runbook.to_str().unwrap(), "--json", "--per-worker-rate", "20000"])
        .env("KICKOFF_DATA_DIR", dir.path())
        .output()
        .unwrap();
    let plan: serde_json::Value =
        serde_json::from_str(crate::util::stdout(&o).trim()).unwrap_or_else(|e| panic!("{e}: {}", crate::util::stderr(&o)));
    let api = plan["backends"].as_array().unwrap().iter().find(|b| b["name"] == "api").expect("the api backend");
    let (peak, capacity) = (api["peak_rps"].as_f64().unwrap(), api["capacity_rps"].as_f64().unwrap());
    assert!(peak > capacity, "forecast peak {peak} req/s within capacity {capacity}: {plan}");
    assert!(api["zombie_for_s"].as_f64().unwrap() > 0.0, "zombie mode is the remedy: {api}");
    let gate = plan["gates"].as_array().unwrap().iter().find(|g| g["id"] == "backend-load").expect("backend-load gate");
    assert_eq!(gate["ok"], false, "{gate}");
    // The audience per market, each platform adding up to its total.
    let markets = plan["input"]["markets"].as_array().expect("markets in the plan");
    let campaign = kickoff_sender::campaign::Campaign::load(&runbook.parent().unwrap().join("campaigns/demo.toml")).unwrap();
    let codes: Vec<&str> = markets.iter().map(|m| m["market"].as_str().unwrap()).collect();
    assert_eq!(codes, campaign.markets.iter().map(|m| m.code.as_str()).collect::<Vec<_>>());
    for p in 0..2 {
        let sum: u64 = markets.iter().map(|m| m["devices"][p].as_u64().unwrap()).sum();
        assert_eq!(sum, plan["input"]["devices"][p].as_u64().unwrap(), "platform {p}: {markets:?}");
    }
}
