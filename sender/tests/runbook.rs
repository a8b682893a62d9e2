//! Runbooks, the engine's gates, the flight recorder, replay and zombie flags.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kickoff_sender::campaign;
use kickoff_sender::provider::ProviderChoice;
use kickoff_sender::recorder::replay;
use kickoff_sender::recorder::{EventLog, report};
use kickoff_sender::runbook::engine::{ActError, Actor, StepState};
use kickoff_sender::runbook::walk::{self, WalkObserver};
use kickoff_sender::runbook::{Event, Role, Runbook, ServiceOptions, Services};
use kickoff_sender::zombie::server::FlagServer;
use kickoff_sender::zombie::{FlagStore, FlagsDocument, SqliteFlagStore, Switch, now_ms};

use crate::util::{bin, stderr, stdout};

pub(crate) const STEPS: &str = r#"
[[steps]]
id = "scale-asg"
title = "Scale the ASG"
role = "ops"
kind = "scale-asg"
params = { desired = 3, timeout = "3s" }
backup = { text = "Take what we got", step = "accept" }

[[steps]]
id = "accept"
title = "Accept a partial ASG"
role = "ops"
kind = "checklist"
params = { items = ["2 of 3 is enough"] }

[[steps]]
id = "scale-ecs"
title = "Scale the service"
role = "ops"
kind = "scale-ecs"
params = { desired = 4, timeout = "3s" }

[[steps]]
id = "verify-warm"
title = "Verify warm"
role = "engineer"
kind = "verify-warm"

[[steps]]
id = "test-send"
title = "Test-send"
role = "engineer"
kind = "test-send"

[[steps]]
id = "confirm"
title = "Confirm"
role = "marketer"
kind = "confirm"

[[steps]]
id = "arm"
title = "Arm"
role = "engineer"
kind = "arm"

[[steps]]
id = "fire"
title = "Fire"
role = "marketer"
kind = "fire"

[[steps]]
id = "watch"
title = "Watch"
role = "ops"
kind = "watch"
params = { timeout = "2m" }

[[steps]]
id = "zombie-api"
title = "Zombie for the API"
role = "ops"
kind = "zombie"
params = { backend = "api", for = "1m", when = "always" }
"#;

/// A runbook file and its campaign in `dir`; `capacity` of the fleet.
fn write_runbook(dir: &Path, devices: u64, capacity: f64) -> PathBuf {
    std::fs::write(dir.join("campaign.toml"), campaign::DEMO_CAMPAIGN).unwrap();
    let text = format!(
        r#"name = "Test event"
campaign = "campaign.toml"
[audience]
generate = {devices}
[fleet]
instance_startup = "100ms"
task_startup = "50ms"
tasks_per_instance = 2
capacity = {capacity}
[backends.api]
capacity_rps = 1000
[abort]
text = "Stop."
{STEPS}"#
    );
    let path = dir.join("event.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn open_event(dir: &Path, runbook: &Path, record: bool) -> Arc<Event> {
    open_event_serving(dir, runbook, record, None)
}

fn open_event_serving(dir: &Path, runbook: &Path, record: bool, flag_server: Option<std::net::SocketAddr>) -> Arc<Event> {
    let rb = Runbook::load(runbook).unwrap();
    let opts = ServiceOptions {
        state_db: dir.join("state.sqlite"),
        work_dir: dir.join("work"),
        recorder: record.then(|| dir.join("event.kickoff.sqlite")),
        provider: ProviderChoice::gateway(),
        flag_server,
        fire_scope: kickoff_sender::fanout::FireScope::NewEvent(format!("test@{}", now_ms())),
    };
    let services = Services::embedded(&rb, &opts).unwrap();
    Event::new("test-event", rb, services).unwrap()
}

fn ana() -> Actor {
    Actor::all_roles("ana")
}

async fn run(event: &Arc<Event>, steps: &[&str]) {
    for s in steps {
        event.run_step(s, &ana()).await.unwrap_or_else(|e| panic!("{s}: {e}"));
    }
}

fn state_of(event: &Event, id: &str) -> StepState {
    event.state().steps.into_iter().find(|(s, _)| s.id == id).unwrap().0.state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gates_hold_until_their_steps_and_checks_pass() {
    let dir = tempfile::tempdir().unwrap();
    let event = open_event(dir.path(), &write_runbook(dir.path(), 2_000, 1.0), false);
    let gated = |r: Result<_, ActError>, needle: &str| match r {
        Err(ActError::Gated { reasons, .. }) => assert!(reasons.contains(needle), "{reasons}"),
        other => panic!("expected gated by {needle}, got {other:?}"),
    };
    // Roles are enforced by the engine.
    let marketer = Actor { name: "mo".into(), roles: vec![Role::Marketer] };
    assert!(matches!(event.run_step("scale-asg", &marketer).await, Err(ActError::Role { .. })));
    // Order: a step waits for the one before it.
    gated(event.run_step("scale-ecs", &ana()).await, "step scale-asg done");
    run(&event, &["scale-asg", "scale-ecs"]).await;
    assert_eq!(state_of(&event, "accept"), StepState::Skipped, "the backup is not needed");
    // Arm needs warm workers and a confirmed test-send, whatever the order says.
    event.skip("verify-warm", &ana(), "trying to cut a corner").unwrap();
    event.skip("test-send", &ana(), "trying to cut a corner").unwrap();
    event.skip("confirm", &ana(), "trying to cut a corner").unwrap();
    gated(event.run_step("arm", &ana()).await, "all-shards-warm");
    gated(event.run_step("arm", &ana()).await, "test-send-confirmed");
    gated(event.run_step("fire", &ana()).await, "armed");
    assert!(event.skip("arm", &ana(), "").is_err(), "a skip needs a reason");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flag_servers_metrics_count_what_the_embedded_engine_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let rb = write_runbook(dir.path(), 2_000, 1.0);
    let event = open_event_serving(dir.path(), &rb, false, Some(([127, 0, 0, 1], 0).into()));
    let url = event.services().flag_url.clone().expect("a flag server");
    let port: u16 = url.trim_start_matches("http://127.0.0.1:").split('/').next().unwrap().parse().unwrap();
    let scrape = || tokio::task::block_in_place(|| crate::util::http_get(port, "/metrics").unwrap());
    let (status, before) = scrape();
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(crate::util::prom_sum(&before, "kickoff_delivered_total"), 0.0);
    run(&event, &["scale-asg", "scale-ecs", "verify-warm", "test-send", "confirm", "arm", "fire", "watch"]).await;
    let summary = event.state().summary.unwrap();
    assert_eq!(summary.delivered, 2_000, "counted at the gateway");
    let mut page = String::new();
    for _ in 0..50 {
        page = scrape().1;
        if crate::util::prom_sum(&page, "kickoff_delivered_total") == 2_000.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(crate::util::prom_sum(&page, "kickoff_delivered_total"), 2_000.0, "{page}");
    assert_eq!(crate::util::prom_sum(&page, "kickoff_handed_off_total"), 2_000.0);
    assert_eq!(crate::util::prom_sum(&page, "kickoff_delivery_seconds_count"), 2_000.0);
    assert!(page.contains("# TYPE kickoff_flag_polls_total counter"), "{page}");
    // Every series the shipped Grafana dashboard queries is on the page.
    let dashboard = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana-dashboard.json")).unwrap();
    let queried: std::collections::BTreeSet<&str> =
        dashboard.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("kickoff_")).collect();
    assert!(queried.len() >= 8, "{queried:?}");
    for name in queried {
        let typed = format!("# TYPE {name} ");
        assert!(
            page.lines().any(|l| l.starts_with(name) || l.starts_with(&typed)),
            "the dashboard queries {name}, which /metrics does not serve"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_change_voids_warm_test_send_and_arm() {
    let dir = tempfile::tempdir().unwrap();
    let rb = write_runbook(dir.path(), 2_000, 1.0);
    let event = open_event(dir.path(), &rb, false);
    // Confirm before any test-send is refused by the test-send store.
    run(&event, &["scale-asg", "scale-ecs", "verify-warm"]).await;
    run(&event, &["test-send", "confirm", "arm"]).await;
    assert!(event.state().armed.is_some());
    // Disarm closes the fire gate until someone arms again.
    event.disarm(&ana()).unwrap();
    match event.run_step("fire", &ana()).await {
        Err(ActError::Gated { reasons, .. }) => assert!(reasons.contains("not armed"), "{reasons}"),
        other => panic!("fire after disarm must be refused: {other:?}"),
    }
    run(&event, &["arm"]).await;
    // Someone edits the campaign after the arm.
    let c = dir.path().join("campaign.toml");
    let text = std::fs::read_to_string(&c).unwrap().replace("The game is on", "The game is ON");
    assert_ne!(text, campaign::DEMO_CAMPAIGN, "the edit must change the campaign");
    std::fs::write(&c, text).unwrap();
    match event.run_step("fire", &ana()).await {
        Err(ActError::Gated { reasons, .. }) => assert!(reasons.contains("armed"), "{reasons}"),
        other => panic!("fire after a campaign change must be refused: {other:?}"),
    }
    let state = event.state();
    assert!(state.armed.is_none() && state.warm.is_none());
    for id in ["verify-warm", "test-send", "confirm", "arm"] {
        let (s, _) = state.steps.iter().find(|(s, _)| s.id == id).unwrap();
        assert!(matches!(s.state, StepState::Pending | StepState::Ready), "{id}: {:?}", s.state);
        assert!(s.note.as_deref().unwrap_or("").contains("voided"), "{id}: {:?}", s.note);
    }
    // The whole chain again, for the new content, then fire works.
    run(&event, &["verify-warm", "test-send", "confirm", "arm", "fire", "watch"]).await;
    let summary = event.state().summary.unwrap();
    assert_eq!((summary.delivered, summary.duplicates, summary.missing), (summary.devices, 0, 0));
    assert_eq!(summary.campaign_hash, event.campaign_hash());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_arms_and_fires_one_wins_and_the_other_sees_it() {
    let dir = tempfile::tempdir().unwrap();
    let event = open_event(dir.path(), &write_runbook(dir.path(), 5_000, 1.0), false);
    run(&event, &["scale-asg", "scale-ecs", "verify-warm", "test-send", "confirm"]).await;
    let (a, b) = (Actor::all_roles("ana"), Actor::all_roles("bo"));
    let (ra, rb) = tokio::join!(event.run_step("arm", &a), event.run_step("arm", &b));
    let (won, lost) = match (&ra, &rb) {
        (Ok(_), Err(e)) => ("ana", e),
        (Err(e), Ok(_)) => ("bo", e),
        other => panic!("exactly one arm must win: {other:?}"),
    };
    assert!(lost.to_string().contains(won), "the loser is told who armed: {lost}");
    assert_eq!(event.state().armed.unwrap().by, won);
    let (fa, fb) = tokio::join!(event.run_step("fire", &a), event.run_step("fire", &b));
    let errors: Vec<String> = [fa, fb].into_iter().filter_map(Result::err).map(|e| e.to_string()).collect();
    assert_eq!(errors.len(), 1, "exactly one fire wins: {errors:?}");
    let fired_by = event.state().fired.unwrap().by;
    assert!(errors[0].contains(&fired_by), "{}", errors[0]);
    // Later presses see the result.
    let again = event.run_step("fire", &a).await.unwrap_err().to_string();
    assert!(again.contains("already fired") && again.contains(&fired_by), "{again}");
    run(&event, &["watch"]).await;
    let s = event.state().summary.unwrap();
    assert_eq!((s.delivered, s.duplicates, s.missing), (s.devices, 0, 0), "one send, counted at the gateway");
}

struct Quiet;
impl WalkObserver for Quiet {
    fn step_starting(&self, _: &Event, _: &str) {}
    fn step_ended(&self, _: &Event, _: &str, _: &Result<kickoff_sender::runbook::StepStatus, ActError>) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scale_failure_leads_to_the_backup_plan_and_replay_reproduces_the_run() {
    let dir = tempfile::tempdir().unwrap();
    // Capacity stops at 70%: 2 of 3 instances.
    let event = open_event(dir.path(), &write_runbook(dir.path(), 20_000, 0.7), true);
    let ticker = event.start_ticker();
    match event.run_step("scale-asg", &ana()).await {
        Err(ActError::Failed { message, .. }) => {
            assert!(message.contains("2 of 3 instances") && message.contains("InsufficientInstanceCapacity"), "{message}");
            assert!(message.contains("Backup plan: Take what we got"), "{message}");
        }
        other => panic!("the scale must fail: {other:?}"),
    }
    assert_eq!(state_of(&event, "accept"), StepState::Ready, "the backup step takes over");
    assert!(matches!(event.run_step("scale-ecs", &ana()).await, Err(ActError::Gated { .. })), "not before the backup is done");
    // A switch from elsewhere (the CLI) lands in this event's audit log.
    SqliteFlagStore::open(&dir.path().join("state.sqlite"))
        .unwrap()
        .switch(&Switch::on("feed", Duration::from_secs(30), "dora", "cli"))
        .unwrap();
    walk::auto(&event, &ana(), &Quiet).await.unwrap();
    assert_eq!(state_of(&event, "accept"), StepState::Done);
    assert_eq!(state_of(&event, "zombie-api"), StepState::Done);
    let live = event.state().summary.unwrap();
    assert_eq!((live.delivered, live.duplicates, live.missing), (live.devices, 0, 0));
    event.close().await;
    ticker.abort();

    let path = dir.path().join("event.kickoff.sqlite");
    let log = EventLog::open(&path).unwrap();
    assert_eq!(replay::live_summary(&log).unwrap(), live);
    assert_eq!(replay::summarize(&log), live, "the replay's summary, from the points, is the live one");
    let audit: Vec<(String, String)> = log.audit.iter().map(|a| (a.step.clone(), a.action.clone())).collect();
    assert!(log.audit.iter().any(|a| a.actor == "dora" && a.action == "zombie-on"), "outside switches are audited");
    assert_eq!(log.audit.iter().filter(|a| a.action == "zombie-on").count(), 2, "each switch once");
    for want in [("scale-asg", "fail"), ("accept", "done"), ("", "fire"), ("", "zombie-on")] {
        assert!(audit.contains(&(want.0.into(), want.1.into())), "{want:?} missing from {audit:?}");
    }
    let frames = replay::frames(&log, None, None);
    assert_eq!(frames.last().unwrap().delivered, live.delivered);
    assert!(frames.iter().any(|f| f.zombies.contains(&"api".to_owned())), "the zombie period is recorded");
    let steps = replay::step_timings(&log);
    assert_eq!(steps.iter().find(|s| s.id == "scale-asg").unwrap().outcome, "fail");

    // The report: PNGs that decode and are not blank, SVGs, Markdown, HTML.
    let out = dir.path().join("report");
    let files = report::write(&log, &path, &out).unwrap();
    assert_eq!(files.summary, live);
    for stem in ["throughput", "delivered", "errors", "latency", "zombie", "fleet"] {
        let png = std::fs::File::open(out.join(format!("{stem}.png"))).unwrap();
        let mut reader = png::Decoder::new(std::io::BufReader::new(png)).read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        let px = &buf[..info.buffer_size()];
        let non_white = px.chunks(3).filter(|p| p.iter().any(|&c| c < 200)).count();
        assert!(non_white > 2_000, "{stem}.png looks blank ({non_white} dark pixels)");
        let svg = std::fs::read_to_string(out.join(format!("{stem}.svg"))).unwrap();
        assert!(svg.starts_with("<svg"));
    }
    let colored = |stem: &str, rgb: (u8, u8, u8)| {
        let png = std::fs::File::open(out.join(format!("{stem}.png"))).unwrap();
        let mut reader = png::Decoder::new(std::io::BufReader::new(png)).read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        let near = |a: u8, b: u8| a.abs_diff(b) < 40;
        buf[..info.buffer_size()].chunks(3).filter(|p| near(p[0], rgb.0) && near(p[1], rgb.1) && near(p[2], rgb.2)).count()
    };
    assert!(colored("throughput", (0, 113, 227)) > 30, "the iOS series is drawn");
    assert!(colored("zombie", (255, 200, 120)) > 1_000 || colored("zombie", (255, 234, 212)) > 1_000, "the zombie period is shaded");
    let md = std::fs::read_to_string(&files.markdown).unwrap();
    assert!(
        md.contains(&format!("| Delivered | {} |", live.delivered))
            && md.contains("| Fired | ana at ")
            && md.contains("| scale-asg | Scale the ASG |"),
        "{md}"
    );
    assert!(std::fs::read_to_string(&files.html).unwrap().contains("<svg"));
}

#[test]
fn broken_runbooks_get_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(write_runbook(dir.path(), 100, 1.0)).unwrap();
    let line_of = |text: &str, needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let cases: Vec<(String, &str, &str)> = vec![
        (good.replace("kind = \"scale-ecs\"", "kind = \"scale-rds\""), "scale-rds", "unknown kind \"scale-rds\""),
        (good.replace("role = \"marketer\"\nkind = \"confirm\"", "role = \"intern\"\nkind = \"confirm\""), "intern", "unknown role"),
        (good.replace("id = \"accept\"\n", "id = \"scale-asg\" # again\n"), "# again", "used twice"),
        (good.replace("desired = 4", "desired = -4"), "desired = -4", "`desired` must be a whole number"),
        (good.replace("timeout = \"3s\" }\nbackup", "timeout = \"soon\" }\nbackup"), "timeout = \"soon\"", "must be a duration"),
        (good.replace("params = { desired = 4,", "params = { desird = 4, desired = 4,"), "desird", "unknown parameter `desird`"),
        (good.replace("step = \"accept\"", "step = \"nowhere\""), "nowhere", "backup step \"nowhere\" does not exist"),
        (good.replace("campaign = \"campaign.toml\"", "campaign = \"missing.toml\""), "missing.toml", "campaign: "),
        (good.replace("[abort]\ntext = \"Stop.\"\n", ""), "name = ", "needs an [abort] plan"),
        (good.replace("kind = \"arm\"", "kind = \"checklist\"\nparams = { items = [\"x\"] }"), "id = \"fire\"", "fire needs an arm step"),
        (good.replace("title = \"Watch\"", "title = \"Watch\"\nat = \"T minus 5\""), "T minus 5", "is not like T-30m"),
        (good.replace("title = \"Watch\"", "title = \"Watch\"\nat = \"T+9999999999999d\""), "T+9999999999999d", "at most 30 days"),
        (
            good.replace("timeout = \"3s\" }\nbackup", "timeout = \"18446744073709551615s\" }\nbackup"),
            "timeout = \"1844",
            "longer than the 1day allowed",
        ),
        (good.replace("name = \"Test event\"", "name = \"Test event"), "name = ", ""),
        (
            good.replace(
                "params = { items = [\"2 of 3 is enough\"] }",
                "params = { items = [\"2 of 3 is enough\"] }\nbackup = { text = \"loop\", step = \"scale-asg\" }",
            ),
            "id = \"accept\"",
            "cannot name a backup step of its own",
        ),
    ];
    for (text, needle, message) in cases {
        let path = dir.path().join("broken.toml");
        std::fs::write(&path, &text).unwrap();
        let err = Runbook::load(&path).unwrap_err().to_string();
        let line = line_of(&text, needle.lines().next().unwrap());
        assert!(err.starts_with(&format!("{}:{line}: ", path.display())), "expected line {line} for {needle:?}: {err}");
        assert!(err.contains(message), "{err}");
    }
    // The CLI says the same and fails.
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, good.replace("kind = \"scale-ecs\"", "kind = \"scale-rds\"")).unwrap();
    let out = std::process::Command::new(bin()).args(["runbook", "check"]).arg(&path).output().unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("unknown kind \"scale-rds\""), "{}", stderr(&out));
    // The shipped runbooks are valid.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../runbooks");
    for f in ["launch-day.toml", "rehearsal.toml", "cloud-scale-test.toml"] {
        Runbook::load(&root.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    }
}

#[test]
fn zombie_flags_expire_serialize_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.sqlite");
    let store = SqliteFlagStore::open(&db).unwrap();
    let on = store
        .switch(&Switch { retry_after: Duration::from_secs(30), ..Switch::on("api", Duration::from_secs(1), "ana", "drowning") })
        .unwrap();
    assert!(on.active(now_ms()));
    let (doc, max_age) = FlagsDocument::at(&store.flags().unwrap(), now_ms());
    assert!(doc.backends["api"].zombie && doc.backends["api"].retry_after == 30);
    assert!(max_age <= Duration::from_secs(1), "never cached past the expiry");
    std::thread::sleep(Duration::from_millis(1_100));
    assert!(!store.flags().unwrap()[0].active(now_ms()), "expired on its own");

    // Concurrent switches from two processes' worth of connections: every
    // one recorded, versions in order, the last one wins.
    let stores: Vec<Arc<SqliteFlagStore>> = (0..2).map(|_| Arc::new(SqliteFlagStore::open(&db).unwrap())).collect();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let s = stores[i % 2].clone();
            std::thread::spawn(move || {
                let by = format!("op{i}");
                let sw =
                    if i % 2 == 0 { Switch::on("feed", Duration::from_secs(600), &by, "load") } else { Switch::off("feed", &by, "ok") };
                s.switch(&sw).unwrap()
            })
        })
        .collect();
    let mut results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    results.sort_by_key(|f| f.version);
    assert_eq!(results.iter().map(|f| f.version).collect::<Vec<_>>(), (1..=8).collect::<Vec<u64>>());
    drop(stores);
    drop(store);
    // Reopen: the state and the history are still there.
    let store = SqliteFlagStore::open(&db).unwrap();
    let feed = store.flags().unwrap().into_iter().find(|f| f.backend == "feed").unwrap();
    assert_eq!(feed, *results.last().unwrap());
    assert_eq!(store.history(0).unwrap().len(), 9);
}

#[test]
fn the_flag_server_serves_json_with_cache_headers() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteFlagStore::open(&dir.path().join("s.sqlite")).unwrap());
    store.switch(&Switch::on("api", Duration::from_secs(120), "ana", "drowning")).unwrap();
    let server = FlagServer::start(store.clone(), "127.0.0.1:0".parse().unwrap(), None).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // reqwest is built without a default TLS provider; this plain-HTTP client still needs one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    rt.block_on(async {
        let client = reqwest::Client::builder().build().unwrap();
        let r = client.get(server.url()).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let cache = r.headers()["cache-control"].to_str().unwrap().to_owned();
        assert!(cache.contains("max-age=5"), "{cache}");
        let etag = r.headers()["etag"].to_str().unwrap().to_owned();
        let doc: serde_json::Value = r.json().await.unwrap();
        assert_eq!(doc["backends"]["api"]["zombie"], true);
        assert_eq!(doc["backends"]["api"]["retry_after"], 120);
        let again = client.get(server.url()).header("if-none-match", &etag).send().await.unwrap();
        assert_eq!(again.status(), 304);
        store.switch(&Switch::off("api", "bo", "recovered")).unwrap();
        let changed = client.get(server.url()).header("if-none-match", &etag).send().await.unwrap();
        assert_eq!(changed.status(), 200, "a switch changes the ETag");
        let doc: serde_json::Value = changed.json().await.unwrap();
        assert_eq!(doc["backends"]["api"]["zombie"], false);
        let missing = client.get(format!("http://{}/v2", server.addr())).send().await.unwrap();
        assert_eq!(missing.status(), 404);
        let post = client.post(server.url()).send().await.unwrap();
        assert_eq!(post.status(), 405);
        // Prometheus: the three GETs of the flags, none naming a backend.
        let polled = client.get(format!("{}?backend=api", server.url())).header("x-kickoff-clients", "40").send().await.unwrap();
        assert_eq!(polled.status(), 200);
        let metrics = client.get(format!("http://{}/metrics", server.addr())).send().await.unwrap();
        assert!(metrics.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
        let page = metrics.text().await.unwrap();
        assert!(page.contains("kickoff_flag_polls_total{backend=\"*\"} 3\n"), "{page}");
        assert!(page.contains("kickoff_flag_polls_total{backend=\"api\"} 40\n"), "{page}");
        assert!(!page.contains("kickoff_delivered_total"), "no engine behind a standalone flag server");
    });
}

#[test]
fn the_cli_switches_zombie_mode_and_walks_and_replays_a_runbook() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cli = |args: &[&str]| std::process::Command::new(bin()).args(args).env("KICKOFF_DATA_DIR", &data).output().unwrap();
    let out = cli(&["zombie", "on", "api", "--for", "90s", "--why", "drowning", "--operator", "ana"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let status = cli(&["zombie", "status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&status)).unwrap();
    assert_eq!(v["document"]["backends"]["api"]["zombie"], true);
    assert_eq!(v["flags"][0]["set_by"], "ana");
    assert!(cli(&["zombie", "off", "api"]).status.success());
    let bad = cli(&["zombie", "on", "api", "--for", "48h"]);
    assert!(!bad.status.success() && stderr(&bad).contains("24 h"), "{}", stderr(&bad));

    let rb = write_runbook(dir.path(), 3_000, 1.0);
    let record = dir.path().join("walk.kickoff.sqlite");
    let walk = cli(&["runbook", "walk", rb.to_str().unwrap(), "--yes", "--record", record.to_str().unwrap(), "--operator", "cleo"]);
    assert!(walk.status.success(), "{}\n{}", stdout(&walk), stderr(&walk));
    assert!(stdout(&walk).contains("3000 of 3000 devices delivered, 0 failed, 0 duplicates, 0 missing"), "{}", stdout(&walk));
    assert!(!stdout(&walk).contains("Joining the open event"), "the first walk opens a new event");
    // The fire was the campaign's launch: walking again does not send again
    // (issue 12: one key rule on every path)...
    let record2 = dir.path().join("walk2.kickoff.sqlite");
    let again = cli(&["runbook", "walk", rb.to_str().unwrap(), "--yes", "--record", record2.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(5), "{}\n{}", stdout(&again), stderr(&again));
    assert!(stderr(&again).contains("already fired") && stderr(&again).contains("by cleo"), "{}", stderr(&again));
    // ...unless it is walked, explicitly, as a new event, with a fire of its own.
    let record3 = dir.path().join("walk3.kickoff.sqlite");
    let new = cli(&["runbook", "walk", rb.to_str().unwrap(), "--yes", "--new-event", "--record", record3.to_str().unwrap()]);
    assert!(new.status.success(), "{}\n{}", stdout(&new), stderr(&new));
    assert!(stdout(&new).contains("3000 of 3000 devices delivered"), "{}", stdout(&new));
    let replay = cli(&["replay", record.to_str().unwrap(), "--speed", "0", "--json"]);
    assert!(replay.status.success(), "{}", stderr(&replay));
    let last: serde_json::Value = serde_json::from_str(stdout(&replay).lines().last().unwrap()).unwrap();
    assert_eq!(last["summary"]["delivered"], 3000);
    assert_eq!(last["summary"]["fired_by"], "cleo");
    let frames = stdout(&replay).lines().filter(|l| l.starts_with("{\"frame\"")).count();
    assert!(frames >= 1);
    let out = dir.path().join("report");
    let rep = cli(&["replay", "report", record.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(rep.status.success() && out.join("report.html").is_file(), "{}", stderr(&rep));
    // Scripts with a bad line name the file and line.
    let script = dir.path().join("bad.script");
    std::fs::write(&script, "run scale-asg\nlaunch now\n").unwrap();
    let bad = cli(&["runbook", "walk", rb.to_str().unwrap(), "--script", script.to_str().unwrap()]);
    assert!(!bad.status.success() && stderr(&bad).contains(&format!("{}:2:", script.display())), "{}", stderr(&bad));
}

/// A silent rehearsal of a campaign never uses up its launch: the rehearsal
/// fires (keyed by campaign and event), the launch of the same campaign in
/// the same data directory still fires once, and a second launch is refused
/// while a second rehearsal, a new event, fires again.
#[test]
fn a_silent_rehearsal_leaves_the_launch_unfired() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cli = |args: &[&str]| std::process::Command::new(bin()).args(args).env("KICKOFF_DATA_DIR", &data).output().unwrap();
    let launch = write_runbook(dir.path(), 1_000, 1.0);
    let rehearsal = dir.path().join("rehearsal.toml");
    let text = std::fs::read_to_string(&launch).unwrap().replacen(
        "campaign = \"campaign.toml\"\n",
        "campaign = \"campaign.toml\"\nsilent = true\n",
        1,
    );
    assert!(text.contains("silent = true"));
    std::fs::write(&rehearsal, text.replace("name = \"Test event\"", "name = \"Test rehearsal\"")).unwrap();
    let delivered = "1000 of 1000 devices delivered, 0 failed, 0 duplicates, 0 missing";
    let walk = |rb: &Path| cli(&["runbook", "walk", rb.to_str().unwrap(), "--yes", "--operator", "ana"]);
    let o = walk(&rehearsal);
    assert!(o.status.success() && stdout(&o).contains(delivered), "{}\n{}", stdout(&o), stderr(&o));
    let o = walk(&launch);
    assert!(o.status.success() && stdout(&o).contains(delivered), "the rehearsal used up the launch:\n{}\n{}", stdout(&o), stderr(&o));
    let o = walk(&launch);
    assert_eq!(o.status.code(), Some(5), "a campaign launches once:\n{}\n{}", stdout(&o), stderr(&o));
    let o = walk(&rehearsal);
    assert!(o.status.success() && stdout(&o).contains(delivered), "{}\n{}", stdout(&o), stderr(&o));
}

#[test]
fn a_killed_walk_keeps_everything_recorded_before_the_kill() {
    let dir = tempfile::tempdir().unwrap();
    let rb = write_runbook(dir.path(), 100, 1.0);
    // Instances that take a minute to start: the walk sits in scale-asg,
    // recording the fleet every second.
    let text = std::fs::read_to_string(&rb)
        .unwrap()
        .replace("instance_startup = \"100ms\"", "instance_startup = \"60s\"")
        .replace("timeout = \"3s\" }\nbackup", "timeout = \"5m\" }\nbackup");
    std::fs::write(&rb, text).unwrap();
    let record = dir.path().join("killed.kickoff.sqlite");
    let mut child = std::process::Command::new(bin())
        .args(["runbook", "walk", rb.to_str().unwrap(), "--yes", "--record", record.to_str().unwrap()])
        .env("KICKOFF_DATA_DIR", dir.path().join("data"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Read the file while it is written, until some seconds are in.
    let mut seen = None;
    for _ in 0..300 {
        std::thread::sleep(Duration::from_millis(100));
        if let Ok(log) = EventLog::open(&record)
            && log.series("asg_running").count() >= 3
        {
            seen = Some(log);
            break;
        }
    }
    let seen = seen.expect("the recorder is readable while written");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let after = EventLog::open(&record).unwrap();
    assert!(after.points.len() >= seen.points.len() && after.audit.len() >= seen.audit.len());
    assert_eq!(&after.points[..seen.points.len()], &seen.points[..], "nothing read before the kill is lost");
    assert_eq!(&after.audit[..seen.audit.len()], &seen.audit[..]);
    assert!(after.audit.iter().any(|a| a.step == "scale-asg" && a.action == "start"));
    let conn = rusqlite::Connection::open(&record).unwrap();
    let ok: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(ok, "ok");
}

#[test]
fn ctrl_c_in_a_walk_aborts_the_event_with_its_report_and_exit_4() {
    let dir = tempfile::tempdir().unwrap();
    let rb = write_runbook(dir.path(), 100, 1.0);
    // Instances that take a minute to start: the walk sits in scale-asg.
    let text = std::fs::read_to_string(&rb).unwrap().replace("instance_startup = \"100ms\"", "instance_startup = \"60s\"");
    std::fs::write(&rb, text).unwrap();
    let record = dir.path().join("interrupted.kickoff.sqlite");
    let child = std::process::Command::new(bin())
        .args(["runbook", "walk", rb.to_str().unwrap(), "--yes", "--record", record.to_str().unwrap(), "--operator", "dee"])
        .env("KICKOFF_DATA_DIR", dir.path().join("data"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..300 {
        std::thread::sleep(Duration::from_millis(100));
        if EventLog::open(&record).is_ok_and(|log| log.audit.iter().any(|a| a.step == "scale-asg" && a.action == "start")) {
            break;
        }
    }
    let status = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("aborted by dee: Ctrl-C in the terminal"), "{err}");
    let log = EventLog::open(&record).unwrap();
    assert!(log.audit.iter().any(|a| a.action == "abort" && a.actor == "dee"), "the abort is in the audit log");
}

/// The runbook of `write_runbook` with a `plan` step before the arm.
fn with_plan_step(dir: &Path, params: &str) -> PathBuf {
    let path = write_runbook(dir, 2_000, 1.0);
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "[[steps]]\nid = \"arm\"",
        &format!(
            "[[steps]]\nid = \"plan\"\ntitle = \"Plan\"\nrole = \"engineer\"\nkind = \"plan\"\nparams = {params}\n\n[[steps]]\nid = \"arm\""
        ),
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arm_waits_for_the_plan_and_a_failing_gate_passes_only_with_a_recorded_reason() {
    let dir = tempfile::tempdir().unwrap();
    // One FCM message a minute: the provider-quota gate fails.
    let event = open_event(dir.path(), &with_plan_step(dir.path(), "{ fcm_quota_per_minute = 1, per_worker_rate = 1_000_000 }"), false);
    run(&event, &["scale-asg", "scale-ecs", "verify-warm", "test-send", "confirm"]).await;
    let gated = |r: Result<_, ActError>| match r {
        Err(ActError::Gated { reasons, .. }) => assert!(reasons.contains("plan-passed"), "{reasons}"),
        other => panic!("the arm must wait for the plan: {other:?}"),
    };
    gated(event.run_step("arm", &ana()).await);
    let failed = event.run_step("plan", &ana()).await;
    assert!(format!("{failed:?}").contains("provider-quota"), "{failed:?}");
    assert_eq!(state_of(&event, "plan"), StepState::Failed);
    gated(event.run_step("arm", &ana()).await);
    // Accepting the failure takes a reason, and the reason is what the arm
    // gate shows.
    assert!(event.skip("plan", &ana(), " ").is_err(), "a skip needs a reason");
    event.skip("plan", &ana(), "Google raised our quota by phone; ticket 4711").unwrap();
    let (_, gates) = event.state().steps.into_iter().find(|(s, _)| s.id == "arm").unwrap();
    let plan_gate = gates.iter().find(|g| g.what == "plan-passed").expect("the arm has a plan gate");
    assert!(plan_gate.open && plan_gate.detail.contains("ticket 4711"), "{plan_gate:?}");
    run(&event, &["arm"]).await;

    // A runbook can accept a gate with its reason: the step passes and
    // records what it accepted.
    let dir = tempfile::tempdir().unwrap();
    let params = "{ fcm_quota_per_minute = 1, per_worker_rate = 1_000_000, accept = { provider-quota = \"quota raised by phone\" } }";
    let event = open_event(dir.path(), &with_plan_step(dir.path(), params), false);
    run(&event, &["scale-asg", "scale-ecs", "verify-warm", "test-send", "confirm", "plan", "arm"]).await;
    let (plan, _) = event.state().steps.into_iter().find(|(s, _)| s.id == "plan").unwrap();
    assert_eq!(plan.state, StepState::Done);
    let result = plan.result.expect("the plan is recorded");
    let gate = result["gates"].as_array().unwrap().iter().find(|g| g["id"] == "provider-quota").unwrap().clone();
    assert_eq!((gate["ok"].as_bool(), gate["accepted"].as_str()), (Some(false), Some("quota raised by phone")), "{result}");

    // An accepted gate that does not exist is refused with the file's line.
    let dir = tempfile::tempdir().unwrap();
    let path = with_plan_step(dir.path(), "{ accept = { provider-quotas = \"typo\" } }");
    let e = Runbook::load(&path).unwrap_err().to_string();
    assert!(e.contains("event.toml:") && e.contains("provider-quotas") && e.contains("backend-load"), "{e}");
}

#[test]
fn a_two_person_arm_needs_a_second_different_operator_from_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let rb = write_runbook(dir.path(), 500, 1.0);
    let text = std::fs::read_to_string(&rb).unwrap().replace("[abort]", "[approvals]\narm = 2\nwithin = \"60s\"\n\n[abort]");
    std::fs::write(&rb, text).unwrap();
    let rb = rb.to_str().unwrap().to_owned();
    let cli = |args: &[&str]| std::process::Command::new(bin()).args(args).env("KICKOFF_DATA_DIR", &data).output().unwrap();
    // Nobody is arming yet: there is no event to approve.
    let early = cli(&["runbook", "approve", &rb, "--operator", "bo"]);
    assert_eq!(early.status.code(), Some(5), "{}", stderr(&early));
    assert!(stderr(&early).contains("no event"), "{}", stderr(&early));
    // Ana walks to the arm and arms: her walk waits for a second operator.
    let script = dir.path().join("arm.script");
    std::fs::write(&script, "run scale-asg\nrun scale-ecs\nrun verify-warm\nrun test-send\nrun confirm\nrun arm\n").unwrap();
    let record = dir.path().join("arm.kickoff.sqlite");
    let walk = std::process::Command::new(bin())
        .args(["runbook", "walk", &rb, "--script", script.to_str().unwrap(), "--operator", "ana", "--record", record.to_str().unwrap()])
        .env("KICKOFF_DATA_DIR", &data)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the arm step is running (its approval is in).
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let state_db = data.join("kickoff.sqlite");
    loop {
        assert!(std::time::Instant::now() < deadline, "the arm never started waiting");
        let n: i64 = rusqlite::Connection::open(&state_db)
            .and_then(|c| c.query_row("SELECT count(*) FROM approvals WHERE operator = 'ana'", [], |r| r.get(0)))
            .unwrap_or(0);
        if n > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Ana approving again from another process is still one person.
    let same = cli(&["runbook", "approve", &rb, "--operator", "ana"]);
    assert!(same.status.success() && stdout(&same).contains("1 of 2"), "{}{}", stdout(&same), stderr(&same));
    // Bo without the engineer role cannot approve the engineer's arm.
    let no_role = cli(&["runbook", "approve", &rb, "--operator", "bo", "--roles", "marketer"]);
    assert_eq!(no_role.status.code(), Some(5), "{}", stderr(&no_role));
    assert!(stderr(&no_role).contains("engineer"), "{}", stderr(&no_role));
    // Bo, an engineer, approves: the arm completes in Ana's walk.
    let bo = cli(&["runbook", "approve", &rb, "--operator", "bo"]);
    assert!(bo.status.success() && stdout(&bo).contains("2 of 2"), "{}{}", stdout(&bo), stderr(&bo));
    let out = walk.wait_with_output().unwrap();
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("armed by ana, approved by bo (2 of 2)"), "{}", stdout(&out));
    // Both approvals are in the walk's flight recording.
    let conn = rusqlite::Connection::open(&record).unwrap();
    let approvals: Vec<String> = conn
        .prepare("SELECT actor FROM audit WHERE action = 'approve' ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(approvals.contains(&"ana".to_owned()), "{approvals:?}");

    // Alone, the arm fails when the window closes, and nothing is armed.
    let dir = tempfile::tempdir().unwrap();
    let rb = write_runbook(dir.path(), 500, 1.0);
    let text = std::fs::read_to_string(&rb).unwrap().replace("[abort]", "[approvals]\narm = 2\nwithin = \"10s\"\n\n[abort]");
    std::fs::write(&rb, text).unwrap();
    std::fs::write(&script, "run scale-asg\nrun scale-ecs\nrun verify-warm\nrun test-send\nrun confirm\nrun arm\n").unwrap();
    let alone = std::process::Command::new(bin())
        .args(["runbook", "walk", rb.to_str().unwrap(), "--script", script.to_str().unwrap(), "--operator", "ana"])
        .env("KICKOFF_DATA_DIR", dir.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(alone.status.code(), Some(5), "{}\n{}", stdout(&alone), stderr(&alone));
    let all = format!("{}{}", stdout(&alone), stderr(&alone));
    assert!(all.contains("only ana approved within 10s") && all.contains("2 different operators"), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disarm_calls_off_a_waiting_two_person_arm_and_voids_the_approvals_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let rb = write_runbook(dir.path(), 500, 1.0);
    let text = std::fs::read_to_string(&rb).unwrap().replace("[abort]", "[approvals]\narm = 2\nwithin = \"60s\"\n\n[abort]");
    std::fs::write(&rb, text).unwrap();
    let event = open_event(dir.path(), &rb, false);
    run(&event, &["scale-asg", "scale-ecs", "verify-warm", "test-send", "confirm"]).await;
    let bo = Actor::all_roles("bo");
    let waiting = |event: &Arc<Event>| {
        let event = event.clone();
        async move {
            for _ in 0..100 {
                if state_of(&event, "arm") == StepState::Running && event.state().armed.is_none() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("the arm is not waiting for approvals");
        }
    };
    // Ana arms, Bo approves: armed.
    let arm = tokio::spawn({
        let event = event.clone();
        async move { event.run_step("arm", &ana()).await }
    });
    waiting(&event).await;
    assert!(event.run_step("fire", &ana()).await.is_err(), "the fire stays closed while the arm waits");
    assert!(event.approve(&bo).await.unwrap().contains("2 of 2"));
    let status = arm.await.unwrap().unwrap();
    assert!(status.note.as_deref().unwrap_or("").contains("approved by bo"), "{status:?}");
    assert_eq!(event.state().armed.unwrap().by, "ana");
    // Disarmed, the arm needs Bo again: his earlier approval does not count.
    event.disarm(&ana()).unwrap();
    let arm = tokio::spawn({
        let event = event.clone();
        async move { event.run_step("arm", &ana()).await }
    });
    waiting(&event).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(event.state().armed.is_none(), "an approval from before the disarm armed it");
    // A disarm calls the waiting arm off.
    event.disarm(&ana()).unwrap();
    let e = arm.await.unwrap().unwrap_err().to_string();
    assert!(e.contains("disarmed while waiting for approvals"), "{e}");
    assert!(event.state().armed.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_arm_needs_the_providers_proven_and_their_key_files_readable() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    // Real APNs and FCM protocols: the loopback gateway as its own process,
    // reached with the key files it wrote (a .p8 token key, a service account).
    let _gateway = crate::util::GatewayProc::start(&keys, &[]);
    let rb_path = write_runbook(dir.path(), 500, 1.0);
    let rb = Runbook::load(&rb_path).unwrap();
    let config = kickoff_sender::push::PushConfig::load(&_gateway.config).unwrap();
    let opts = ServiceOptions {
        state_db: dir.path().join("state.sqlite"),
        work_dir: dir.path().join("work"),
        recorder: None,
        provider: ProviderChoice::Http(config),
        flag_server: None,
        fire_scope: kickoff_sender::fanout::FireScope::NewEvent(format!("test@{}", now_ms())),
    };
    let event = Event::new("health", rb, Services::embedded(&Runbook::load(&rb_path).unwrap(), &opts).unwrap()).unwrap();
    let health = |event: &Event| {
        let (_, gates) = event.state().steps.into_iter().find(|(s, _)| s.id == "arm").unwrap();
        gates.into_iter().find(|g| g.what == "providers-healthy").expect("the arm has a providers-healthy gate")
    };
    // Before any test-send, nothing is proven.
    let g = health(&event);
    assert!(!g.open && g.detail.contains("no test-send yet"), "{g:?}");
    run(&event, &["scale-asg", "scale-ecs", "verify-warm", "test-send", "confirm"]).await;
    let g = health(&event);
    assert!(g.open, "{g:?}");
    assert!(g.detail.contains("APNs provider token accepted") && g.detail.contains("FCM OAuth token obtained"), "{g:?}");
    assert!(g.detail.contains("APNs environment: http://127.0.0.1:"), "the gateway's URL stands in for APNs: {g:?}");
    // The service account goes missing (a redeploy, a permissions change):
    // the arm refuses and names the file.
    let sa = keys.join(kickoff_sender::gateway::keys::SERVICE_ACCOUNT_FILE);
    let moved = keys.join("moved.json");
    std::fs::rename(&sa, &moved).unwrap();
    match event.run_step("arm", &ana()).await {
        Err(ActError::Gated { reasons, .. }) => {
            assert!(
                reasons.contains("providers-healthy") && reasons.contains(&format!("FCM service account {}", sa.display())),
                "{reasons}"
            );
        }
        other => panic!("the arm went on without its service account: {other:?}"),
    }
    assert!(event.state().armed.is_none());
    // Back in place: the arm goes through.
    std::fs::rename(&moved, &sa).unwrap();
    run(&event, &["arm"]).await;
    assert!(event.state().armed.is_some());
}

#[test]
fn the_return_traffic_is_measured_at_the_flag_server_and_zombie_mode_brings_it_under_capacity() {
    let dir = tempfile::tempdir().unwrap();
    let rb = write_runbook(dir.path(), 20_000, 1.0);
    // Half the notified devices open within about 10 s, 20 requests each:
    // far over the API's 2,000 req/s right after the fire.
    let text = std::fs::read_to_string(&rb).unwrap().replace(
        "[backends.api]\ncapacity_rps = 1000",
        "[backends.api]\ncapacity_rps = 2000\nrequests_per_open = 20\nopen_share = 0.5\nopen_delay = \"10s\"",
    );
    std::fs::write(&rb, text).unwrap();
    let script = dir.path().join("walk.script");
    std::fs::write(
        &script,
        "run scale-asg\nrun scale-ecs\nrun verify-warm\nrun test-send\nrun confirm\nrun arm\nrun fire\nwait 3s\nzombie on api 15s\nwait 8s\nzombie off api\nwait 2s\n",
    )
    .unwrap();
    let record = dir.path().join("walk.kickoff.sqlite");
    let out = std::process::Command::new(bin())
        .args([
            "runbook",
            "walk",
            rb.to_str().unwrap(),
            "--script",
            script.to_str().unwrap(),
            "--operator",
            "ana",
            "--record",
            record.to_str().unwrap(),
        ])
        .env("KICKOFF_DATA_DIR", dir.path().join("data"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let log = EventLog::open(&record).unwrap();
    assert!(log.meta.get("backend_load").is_some_and(|s| s.starts_with("measured")), "{:?}", log.meta.get("backend_load"));
    let at =
        |action: &str| log.audit.iter().find(|a| a.action == action && a.outcome == "ok").unwrap_or_else(|| panic!("no {action}")).t_ms;
    let (fired, on, off) = (at("fire"), at("zombie-on"), at("zombie-off"));
    let load: Vec<(u64, f64)> = log.series("backend_rps").filter(|p| p.dim("backend") == Some("api")).map(|p| (p.t_ms, p.value)).collect();
    // Before zombie mode: the opens drive the API over its capacity.
    let before = load.iter().filter(|(t, _)| *t > fired && *t <= on).map(|p| p.1).fold(0.0, f64::max);
    assert!(before > 2000.0, "the measured peak before zombie mode: {before:.0} req/s; {load:?}");
    // Under zombie mode (from a second after the switch, each point covering
    // the second before it): only the clients that ignore the flag call.
    let during: Vec<f64> = load.iter().filter(|(t, _)| *t > on + 1500 && *t < off).map(|p| p.1).collect();
    assert!(during.len() >= 4, "{load:?}");
    assert!(during.iter().all(|v| *v < 2000.0), "zombie mode keeps the API under capacity: {during:?}");
    // The clients did ask the flag server meanwhile (and were told to back off).
    let polls: f64 = log.series("flag_polls").filter(|p| p.t_ms > on + 1500 && p.t_ms < off).map(|p| p.value).sum();
    assert!(polls > 0.0, "opening clients poll the flags");
    // The report charts the measured load.
    let summary = replay::summarize(&log);
    let charts = report::charts(&log, &summary);
    let zombie = &charts.iter().find(|c| c.0 == "zombie").unwrap().1;
    assert!(zombie.title.contains("measured") && zombie.series.iter().any(|s| s.name == "measured api"), "{zombie:?}");
}

#[test]
fn runbook_print_writes_a_checklist_of_every_step_and_escapes_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../runbooks");
    let out = dir.path().join("launch-day.html");
    let o = std::process::Command::new(bin())
        .args(["runbook", "print"])
        .arg(root.join("launch-day.toml"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let html = std::fs::read_to_string(&out).unwrap();
    let rb = Runbook::load(&root.join("launch-day.toml")).unwrap();
    for s in &rb.steps {
        assert!(html.contains(&format!("<tr id=\"step-{}\"><td class=\"box\">☐</td>", s.id)), "step {} has its row", s.id);
    }
    assert!(html.contains("Two-person arm:</strong> the arm needs 2 different operators"), "{html}");
    assert!(html.contains("T-30m") && html.contains("FCM quota 2000000/min"), "times and the plan's params are printed");
    // Text from the file is escaped, never markup.
    let text = std::fs::read_to_string(root.join("launch-day.toml")).unwrap().replacen("name = \"", "name = \"<script>x</script>", 1);
    let hostile = dir.path().join("hostile.toml");
    std::fs::write(&hostile, text.replace("campaign = \"campaigns/", &format!("campaign = \"{}/campaigns/", root.display()))).unwrap();
    let o = std::process::Command::new(bin()).args(["runbook", "print"]).arg(&hostile).arg("--out").arg(&out).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let html = std::fs::read_to_string(&out).unwrap();
    assert!(html.contains("&lt;script&gt;x&lt;/script&gt;") && !html.contains("<script>"), "escaped");
    // A broken runbook names its file and line, and nothing is written.
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "name = \"B\"\ncampaign = 3\n").unwrap();
    let none = dir.path().join("none.html");
    let o = std::process::Command::new(bin()).args(["runbook", "print"]).arg(&broken).arg("--out").arg(&none).output().unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("broken.toml") && stderr(&o).contains('2'), "{}", stderr(&o));
    assert!(!none.exists(), "nothing half-written");
}
