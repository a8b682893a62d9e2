//! AWS mode against a real AWS API emulator (moto server on 127.0.0.1,
//! installed by `make test`), the loopback push gateway as a separate
//! process, and `kickoff-sender worker` processes.
//!
//! The emulator's gaps, and how these tests stay honest about them:
//! - FIFO deduplication only covers messages still in the queue (SQS keeps
//!   ids for 5 minutes): the dedup test sends both copies while the first is
//!   queued, and the "after the window" test deletes the first message so
//!   SQS would accept a copy; the S3 ledger must refuse it.
//! - ECS reaches running == desired at once: the scaling test checks the
//!   counts and the calls, not the wait.
//! - GetMetricData does not filter by namespace: each test has its own
//!   emulator, so only its own points exist.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use kickoff_sender::audience::AudienceSource;
use kickoff_sender::aws::control::{AwsWorkers, AwsWorkersOptions};
use kickoff_sender::aws::fleet::AwsFleet;
use kickoff_sender::aws::provision::{ProvisionOptions, provision};
use kickoff_sender::aws::queues::Queues;
use kickoff_sender::aws::{Aws, AwsConfig};
use kickoff_sender::campaign::{self, Campaign};
use kickoff_sender::fanout::{Claim, FireClaim, FireOutcome};
use kickoff_sender::fleet::{Fleet, Group};
use kickoff_sender::provider::ProviderChoice;
use kickoff_sender::queue::FireMsg;
use kickoff_sender::recorder::live::LiveMetrics;
use kickoff_sender::runbook::workers::Workers;

use super::util::{self, GatewayProc};

/// A moto server on a free loopback port, stopped on drop.
pub(crate) struct Moto {
    child: Child,
    url: String,
}

fn moto_server() -> PathBuf {
    if let Some(p) = std::env::var_os("KICKOFF_MOTO_SERVER") {
        return p.into();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/moto-venv/bin/moto_server")
}

impl Moto {
    pub(crate) fn start() -> Self {
        let bin = moto_server();
        assert!(bin.is_file(), "the AWS API emulator is not installed at {}: run `make deps-moto` (make test does)", bin.display());
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto server did not start on port {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { child, url: format!("http://127.0.0.1:{port}") }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes the AWS configuration (and a credentials file) for `moto`.
pub(crate) fn write_config(dir: &Path, moto: &Moto, push: Option<&Path>, worker: &str) -> PathBuf {
    std::fs::write(dir.join("credentials"), "[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n").unwrap();
    let push = push.map(|p| format!("push_config = {:?}\n", p.to_str().unwrap())).unwrap_or_default();
    let text = format!(
        r#"region = "us-east-1"
credentials_file = "credentials"
endpoint_url = "{url}"
bucket = "kickoff-test"
prefix = "env/test"
fire_queue = "kickoff-fire.fifo"
batch_queue = "kickoff-batches"
cluster = "kickoff"
service = "kickoff-notifier"
asg = "kickoff-workers"

[worker]
wait_time = "1s"
heartbeat = "300ms"
{push}{worker}
"#,
        url = moto.url
    );
    let path = dir.join("aws.toml");
    std::fs::write(&path, text).unwrap();
    path
}

pub(crate) async fn connect(config: &Path) -> Aws {
    let aws = Aws::connect(AwsConfig::load(config).unwrap()).await.unwrap();
    provision(&aws, &ProvisionOptions::default()).await.unwrap();
    aws
}

/// A worker process, killed on drop if still running.
struct WorkerProc(Child);

impl WorkerProc {
    fn start(config: &Path, log: &Path) -> Self {
        let log = std::fs::File::create(log).unwrap();
        Self(
            Command::new(util::bin())
                .args(["worker", "--config", config.to_str().unwrap()])
                .env("KICKOFF_LOG", "info")
                .stderr(log)
                .spawn()
                .unwrap(),
        )
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        self.0.wait().unwrap()
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn demo_campaign(dir: &Path) -> Arc<Campaign> {
    let path = dir.join("demo.toml");
    std::fs::write(&path, campaign::DEMO_CAMPAIGN).unwrap();
    Arc::new(Campaign::load(&path).unwrap())
}

fn workers(aws: &Aws, dir: &Path, event: &str) -> AwsWorkers {
    let opts = AwsWorkersOptions {
        source: AudienceSource::Path(dir.join("audience")),
        work_dir: dir.join("work"),
        scope: kickoff_sender::fanout::FireScope::NewEvent(event.to_owned()),
        provider: ProviderChoice::Null,
        warm_timeout: Duration::from_secs(90),
        outage_timeout: None,
    };
    AwsWorkers::new(aws.clone(), opts, Arc::new(LiveMetrics::new(None)))
}

/// Waits until every dispatched batch of `fire_id` has its record.
async fn wait_all_done(aws: &Aws, fire_id: &str, markets: usize, timeout: Duration) -> (u64, usize) {
    let store = aws.store();
    let deadline = Instant::now() + timeout;
    loop {
        let dispatched = store.all_dispatched(fire_id).await.unwrap();
        let done = store.done_names(fire_id).await.unwrap().len();
        let batches: u64 = dispatched.iter().map(|d| d.batches).sum();
        if dispatched.len() == markets && done as u64 == batches {
            return (batches, done);
        }
        assert!(Instant::now() < deadline, "{done} of {batches} batches done, {} of {markets} markets dispatched", dispatched.len());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_worker_processes_deliver_100k_devices_once_and_a_concurrent_second_press_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    util::audience(dir.path(), 100_000, 5, 8);
    let mut gateway = GatewayProc::start(&dir.path().join("keys"), &[]);
    let config = write_config(dir.path(), &moto, Some(&gateway.config), "notifiers = 1\nmax_batches = 8\n");
    let aws = connect(&config).await;
    // Each worker answers Prometheus on its own port ([worker] metrics_listen).
    let ports: Vec<u16> = (0..3).map(|_| util::free_port()).collect();
    let procs: Vec<WorkerProc> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let own = dir.path().join(format!("worker-{i}"));
            std::fs::create_dir_all(&own).unwrap();
            std::fs::copy(dir.path().join("credentials"), own.join("credentials")).unwrap();
            let text = std::fs::read_to_string(&config).unwrap() + &format!("metrics_listen = \"127.0.0.1:{port}\"\n");
            std::fs::write(own.join("aws.toml"), text).unwrap();
            WorkerProc::start(&own.join("aws.toml"), &dir.path().join(format!("worker-{i}.log")))
        })
        .collect();
    let campaign = demo_campaign(dir.path());
    let w = workers(&aws, dir.path(), "e1");
    let warm = w.warm(campaign.clone(), 3).await.unwrap();
    assert_eq!(warm.workers.len(), 3, "{warm:?}");
    assert!(warm.all_shards_warm(), "every worker loaded every shard from S3: {warm:?}");
    assert_eq!(warm.workers[0].shards_total, 8);
    let targeted = warm.devices;
    assert!(targeted > 50_000, "{targeted}");

    // Two presses from two processes at the same moment.
    let press = |who: &str| {
        Command::new(util::bin()).args(["aws", "fire", "--config", config.to_str().unwrap(), "--operator", who]).output().unwrap()
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| press("alice"));
        let b = s.spawn(|| press("bob"));
        (a.join().unwrap(), b.join().unwrap())
    });
    let outcomes: Vec<String> = [&a, &b]
        .iter()
        .map(|o| {
            let j: serde_json::Value = serde_json::from_str(util::stdout(o).trim()).unwrap_or_else(|e| panic!("{e}: {}", util::stderr(o)));
            j["outcome"].as_str().unwrap().to_owned()
        })
        .collect();
    let mut sorted = outcomes.clone();
    sorted.sort();
    assert_eq!(sorted, ["already_fired", "fired"], "exactly one press fires");
    let loser = if outcomes[0] == "fired" { &b } else { &a };
    assert_eq!(loser.status.code(), Some(3), "the second press exits 'already fired'");

    let fire_id = format!("{}@e1", campaign.id);
    let (batches, done) = wait_all_done(&aws, &fire_id, campaign.markets.len(), Duration::from_secs(240)).await;
    assert_eq!(done as u64, batches);
    // A batch record per batch, and every worker took part.
    let store = aws.store();
    let mut by_worker = std::collections::BTreeMap::<String, u64>::new();
    let mut delivered = 0u64;
    for name in store.done_names(&fire_id).await.unwrap() {
        let r = store.done(&fire_id, &name).await.unwrap().unwrap();
        delivered += u64::from(r.done.delivered);
        *by_worker.entry(r.worker).or_default() += 1;
    }
    assert_eq!(delivered, targeted, "the batch records add up to the audience");
    assert_eq!(by_worker.len(), 3, "all three workers sent: {by_worker:?}");
    // Their /metrics pages add up to the audience too (each flushes every
    // ~100 ms): handed off, delivered, answered, none failed.
    let scrape = |name: &str| -> f64 {
        ports
            .iter()
            .map(|port| {
                let (status, page) = util::http_get(*port, "/metrics").unwrap();
                assert!(status.contains(" 200 "), "{status}");
                util::prom_sum(&page, name)
            })
            .sum()
    };
    for _ in 0..50 {
        if scrape("kickoff_delivered_total") == targeted as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(scrape("kickoff_delivered_total"), targeted as f64, "the workers' /metrics count every delivery once");
    assert_eq!(scrape("kickoff_handed_off_total"), targeted as f64);
    assert_eq!(scrape("kickoff_delivery_seconds_count"), targeted as f64);
    assert_eq!((scrape("kickoff_failed_total"), scrape("kickoff_outstanding")), (0.0, 0.0));
    assert!(util::http_get(ports[0], "/").unwrap().0.contains(" 404 "), "only /metrics is served");

    for p in procs {
        assert!(p.terminate().success(), "a worker exits cleanly on SIGTERM");
    }
    let stats = gateway.stats();
    assert_eq!(stats["unique_tokens"], targeted, "0 missing, counted per token at the gateway: {stats}");
    assert_eq!(stats["duplicates"], 0, "{stats}");
    assert_eq!(stats["deliveries"], targeted);
    // CloudWatch: the workers' 1-second points, read back once they have
    // stopped (each flushes on exit), so no PutMetricData races the reads.
    // Seen once under load with reads during the puts: 100,037 of 100,000.
    // Whether that was a duplicate send or the emulator (not safe for
    // concurrent puts and reads), this order tells: the gateway is counted
    // first.
    let mut series = kickoff_sender::aws::metrics::Series::default();
    for _ in 0..40 {
        let from = SystemTime::now() - Duration::from_secs(600);
        series = kickoff_sender::aws::metrics::read_delivered(
            &aws.cloudwatch,
            &aws.config.namespace,
            &fire_id,
            from,
            SystemTime::now() + Duration::from_secs(60),
        )
        .await
        .unwrap();
        if series.total() == targeted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(series.total(), targeted, "CloudWatch holds every delivery, per second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notifier_killed_mid_send_loses_nothing_and_duplicates_only_its_held_batches_with_the_collapse_id() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    util::audience(dir.path(), 30_000, 9, 4);
    // Slow answers and few streams, so the fire lasts long enough to kill a worker in it.
    let mut gateway = GatewayProc::start(&dir.path().join("keys"), &["--gateway-latency-ms", "150-250", "--gateway-streams", "40"]);
    let max_batches = 3u64;
    let config = write_config(
        dir.path(),
        &moto,
        Some(&gateway.config),
        &format!("notifiers = 1\nmax_batches = {max_batches}\nvisibility_timeout = \"4s\"\n"),
    );
    let aws = connect(&config).await;
    let mut procs: Vec<WorkerProc> = (0..3).map(|i| WorkerProc::start(&config, &dir.path().join(format!("worker-{i}.log")))).collect();
    let campaign = demo_campaign(dir.path());
    let w = workers(&aws, dir.path(), "e2");
    let warm = w.warm(campaign.clone(), 3).await.unwrap();
    let targeted = warm.devices;
    let handle = match w.fire("carol").unwrap() {
        FireOutcome::Started(h) => h,
        FireOutcome::AlreadyFired(r) => panic!("{r}"),
        other => panic!("not a fire: {other:?}"),
    };
    // Kill one worker once sending is under way.
    let store = aws.store();
    let fire_id = handle.campaign_id().to_owned();
    let deadline = Instant::now() + Duration::from_secs(120);
    while store.done_names(&fire_id).await.unwrap().len() < 3 {
        assert!(Instant::now() < deadline, "no batch finished");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let victim = procs.remove(0);
    let _ = Command::new("kill").args(["-KILL", &victim.0.id().to_string()]).status();
    drop(victim);
    let report = tokio::time::timeout(Duration::from_secs(300), handle.wait()).await.expect("the fire completes");
    assert_eq!(report.delivered, targeted, "the app's report, from the batch records: {report:?}");
    assert_eq!(report.not_sent, 0);
    let (batches, done) = wait_all_done(&aws, &fire_id, campaign.markets.len(), Duration::from_secs(10)).await;
    assert_eq!(done as u64, batches, "one record per batch");
    let record = store.fire_record(&fire_id).await.unwrap().unwrap();
    assert_eq!(record.status, kickoff_sender::fanout::FireStatus::Completed, "the end is in the S3 ledger");
    for p in procs {
        assert!(p.terminate().success());
    }
    let stats = gateway.stats();
    assert_eq!(stats["unique_tokens"], targeted, "0 missing after kill -9: {stats}");
    let dups = stats["duplicates"].as_u64().unwrap();
    assert!(dups <= max_batches * 500, "duplicates only from the killed worker's held batches (at most {max_batches} x 500): {dups}");
    assert_eq!(stats["without_collapse_id"], 0, "every copy carried the campaign's collapse id: {stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fifo_queue_deduplicates_presses_and_the_s3_ledger_refuses_a_fire_after_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    let config = write_config(dir.path(), &moto, None, "");
    let aws = connect(&config).await;
    let queues = Queues::open(&aws).await.unwrap();
    let msg =
        FireMsg { campaign_id: "c@e".into(), campaign_hash: "h".into(), operator: "a".into(), fired_at_ms: 1, market: Some("US".into()) };
    queues.send_fire(&msg).await.unwrap();
    queues.send_fire(&FireMsg { operator: "b".into(), ..msg.clone() }).await.unwrap();
    queues.send_fire(&FireMsg { market: Some("CA".into()), ..msg.clone() }).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..5 {
        for r in queues.receive_fires(Duration::from_secs(1), Duration::from_secs(30)).await.unwrap() {
            queues.delete_fire(&r.handle).await.unwrap();
            got.push((r.msg.operator, r.msg.market.unwrap()));
        }
    }
    got.sort();
    assert_eq!(
        got,
        [("a".to_owned(), "CA".to_owned()), ("a".to_owned(), "US".to_owned())],
        "one message per market; the second press was deduplicated"
    );

    // After the window (here: the first message is gone, so SQS would take a
    // copy), the ledger is what refuses.
    let campaign = Campaign::clone(&demo_campaign(dir.path())).with_id("late@e".into());
    let first = kickoff_sender::aws::control::fire(&aws, &campaign, "alice").await.unwrap();
    assert!(matches!(first.claim, Claim::Won(_)));
    // One message per market, handed out one at a time (one message group).
    let mut markets = Vec::new();
    loop {
        let got = queues.receive_fires(Duration::from_secs(1), Duration::from_secs(30)).await.unwrap();
        if got.is_empty() {
            break;
        }
        for r in got {
            queues.delete_fire(&r.handle).await.unwrap();
            markets.push(r.msg.market.unwrap());
        }
    }
    let mut expected: Vec<String> = campaign.markets.iter().map(|m| m.code.clone()).collect();
    markets.sort();
    expected.sort();
    assert_eq!(markets, expected);
    match kickoff_sender::aws::control::fire(&aws, &campaign, "bob").await.unwrap().claim {
        Claim::AlreadyFired(r) => assert_eq!(r.operator, "alice"),
        Claim::Won(_) => panic!("a second fire was claimed"),
    }
    for _ in 0..3 {
        assert!(
            queues.receive_fires(Duration::from_secs(1), Duration::from_secs(30)).await.unwrap().is_empty(),
            "nothing was queued by the refused press"
        );
    }
    // The claim is a conditional put: racing claims, one winner.
    let claim = FireClaim {
        campaign_id: "race@e".into(),
        campaign_hash: "h".into(),
        operator: String::new(),
        at: SystemTime::now(),
        warm_checksum: None,
    };
    let store = aws.store();
    let results = futures_util::future::join_all((0..8).map(|i| {
        let (store, claim) = (store.clone(), FireClaim { operator: format!("op{i}"), ..claim.clone() });
        async move { store.claim(&claim).await.unwrap() }
    }))
    .await;
    assert_eq!(results.iter().filter(|c| matches!(c, Claim::Won(_))).count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_steps_drive_the_auto_scaling_group_and_the_ecs_service() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    let config = write_config(dir.path(), &moto, None, "");
    let aws = connect(&config).await;
    let fleet = AwsFleet::new(&aws);
    assert_eq!(fleet.status(Group::Asg).await.unwrap().desired, 0);
    let report =
        kickoff_sender::fleet::scale_and_wait(&fleet, Group::Asg, 3, Duration::from_secs(30), Duration::from_millis(100), &|_, _| {})
            .await
            .unwrap();
    assert!(report.reached, "{report:?}");
    let asg = fleet.status(Group::Asg).await.unwrap();
    assert_eq!((asg.desired, asg.running), (3, 3));
    fleet.set_desired(Group::Service, 4).await.unwrap();
    let svc = fleet.status(Group::Service).await.unwrap();
    assert_eq!(svc.desired, 4, "UpdateService reached the service: {svc:?}");
    // A group that does not exist is an error naming it.
    let mut cfg = aws.config.clone();
    cfg.asg = "nope".into();
    let other = AwsFleet::new(&Aws::connect(cfg).await.unwrap());
    let e = other.status(Group::Asg).await.unwrap_err().to_string();
    assert!(e.contains("nope"), "{e}");
}

#[test]
fn a_broken_aws_config_names_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aws.toml");
    std::fs::write(&path, "region = \"us-east-1\"\nbucket = 3\n").unwrap();
    let e = AwsConfig::load(&path).unwrap_err().to_string();
    assert!(e.contains("aws.toml") && e.contains("line 2"), "{e}");
    std::fs::write(
        &path,
        "region = \"r\"\nbucket = \"b\"\nfire_queue = \"f\"\nbatch_queue = \"q\"\ncluster = \"c\"\nservice = \"s\"\nasg = \"a\"\n",
    )
    .unwrap();
    let e = AwsConfig::load(&path).unwrap_err().to_string();
    assert!(e.contains("FIFO"), "{e}");
}

/// The workers' logs, for a failure's message.
fn worker_logs(dir: &Path) -> String {
    (0..3).filter_map(|i| std::fs::read_to_string(dir.join(format!("worker-{i}.log"))).ok()).collect::<Vec<_>>().join("\n---\n")
}

/// The AWS-mode rehearsal (shared with the app's end-to-end test), with the
/// demo campaign beside it.
fn aws_runbook(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("campaigns")).unwrap();
    std::fs::write(dir.join("campaigns/demo.toml"), campaign::DEMO_CAMPAIGN).unwrap();
    let path = dir.join("aws-rehearsal.toml");
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/aws-rehearsal.toml"), &path).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runbook_walked_in_aws_mode_scales_warms_fires_once_and_charts_from_cloudwatch() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    let mut gateway = GatewayProc::start(&dir.path().join("keys"), &[]);
    let config = write_config(dir.path(), &moto, Some(&gateway.config), "notifiers = 1\nmax_batches = 8\n");
    let aws = connect(&config).await;
    let procs: Vec<WorkerProc> = (0..2).map(|i| WorkerProc::start(&config, &dir.path().join(format!("worker-{i}.log")))).collect();
    let runbook = aws_runbook(dir.path());
    let script = dir.path().join("walk.txt");
    std::fs::write(&script, "zombie on api 2m\nauto\n").unwrap();
    let record = dir.path().join("walk.kickoff.sqlite");
    let walk = |record: &Path| {
        Command::new(util::bin())
            .args(["runbook", "walk", runbook.to_str().unwrap(), "--script", script.to_str().unwrap(), "--operator", "dana"])
            .args(["--aws", config.to_str().unwrap(), "--record", record.to_str().unwrap()])
            .args(["--state", dir.path().join("state.sqlite").to_str().unwrap()])
            .env("KICKOFF_DATA_DIR", dir.path().join("data"))
            .output()
            .unwrap()
    };
    let out = walk(&record);
    assert!(out.status.success(), "walk: {}\n{}", util::stdout(&out), util::stderr(&out));
    let text = util::stdout(&out);
    assert!(text.contains("AWS: auto-scaling group kickoff-workers"), "{text}");
    assert!(text.contains("2 workers warm"), "verify-warm read the workers' status from S3: {text}");
    assert!(text.contains("every gate passes") && text.contains("batch messages over"), "the plan read the queues: {text}");

    // The fleet: scaled up, then back down, through the ASG and ECS APIs.
    let fleet = AwsFleet::new(&aws);
    assert_eq!(fleet.status(Group::Asg).await.unwrap().desired, 1);
    assert_eq!(fleet.status(Group::Service).await.unwrap().desired, 1);

    // Zombie mode was published to S3 for client apps.
    let flags = aws.store().flags().await.unwrap().expect("flags.json in S3");
    let doc = serde_json::to_value(&flags).unwrap();
    assert!(doc.to_string().contains("\"api\""), "{doc}");

    // The ledger holds one completed fire of the campaign id.
    let campaign = demo_campaign(dir.path());
    let record_s3 = aws.store().fire_record(&campaign.id).await.unwrap().expect("the fire is in the S3 ledger");
    assert_eq!(record_s3.operator, "dana");
    assert_eq!(record_s3.status, kickoff_sender::fanout::FireStatus::Completed, "{record_s3:?}");

    // The recorder's points came from CloudWatch: the replay adds up to the audience.
    let replay = Command::new(util::bin()).args(["replay", record.to_str().unwrap(), "--speed", "0", "--json"]).output().unwrap();
    let last: serde_json::Value = serde_json::from_str(util::stdout(&replay).trim().lines().last().unwrap()).unwrap();
    let targeted = last["summary"]["devices"].as_u64().unwrap();
    assert!(targeted > 10_000, "{last}");
    assert_eq!(last["summary"]["delivered"], targeted, "the charted points add up: {}\n{}", last["summary"], worker_logs(dir.path()));

    // A second walk of the same campaign, later and elsewhere (a new event,
    // a new recorder): the S3 ledger refuses it and nothing more is sent.
    let again = walk(&dir.path().join("again.kickoff.sqlite"));
    let again_text = format!("{}{}", util::stdout(&again), util::stderr(&again));
    assert!(again_text.contains("already fired") && again_text.contains("dana"), "{again_text}");

    for p in procs {
        assert!(p.terminate().success());
    }
    let stats = gateway.stats();
    assert_eq!(stats["unique_tokens"], targeted, "0 missing, counted per token at the gateway: {stats}");
    assert_eq!(stats["duplicates"], 0, "{stats}");
}

/// A worker process with extra arguments.
fn worker_with(config: &Path, log: &Path, extra: &[&str]) -> WorkerProc {
    let log = std::fs::File::create(log).unwrap();
    WorkerProc(
        Command::new(util::bin())
            .args(["worker", "--config", config.to_str().unwrap()])
            .args(extra)
            .env("KICKOFF_LOG", "info")
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_credentials_refuses_to_start_before_touching_aws_unless_null_is_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    let config = write_config(dir.path(), &moto, None, "");
    let aws = connect(&config).await;
    let o = Command::new(util::bin()).args(["worker", "--config", config.to_str().unwrap()]).output().unwrap();
    assert!(!o.status.success());
    let err = util::stderr(&o);
    assert!(err.contains("push_config") && err.contains("--provider null") && err.contains("aws.toml"), "{err}");
    assert!(aws.store().workers().await.unwrap().is_empty(), "it wrote nothing to S3");
    // Asked for explicitly, the null provider runs, and says so.
    let null = worker_with(&config, &dir.path().join("null.log"), &["--provider", "null"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = aws.store().workers().await.unwrap().into_iter().next() {
            break s;
        }
        assert!(Instant::now() < deadline, "the null worker wrote no status");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status.provider, "null", "{status:?}");
    assert!(null.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fire_claimed_but_not_fully_queued_is_completed_by_the_next_press_and_sends_each_device_once() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    util::audience(dir.path(), 20_000, 3, 4);
    let mut gateway = GatewayProc::start(&dir.path().join("keys"), &[]);
    let config = write_config(dir.path(), &moto, Some(&gateway.config), "notifiers = 1\n");
    let aws = connect(&config).await;
    let procs: Vec<WorkerProc> = (0..2).map(|i| WorkerProc::start(&config, &dir.path().join(format!("worker-{i}.log")))).collect();
    let campaign = demo_campaign(dir.path());
    let w = workers(&aws, dir.path(), "repair");
    let targeted = w.warm(campaign.clone(), 2).await.unwrap().devices;
    // The press that claimed the fire died after queueing one market.
    let (_, warmed) = kickoff_sender::aws::control::warmed_campaign(&aws).await.unwrap();
    let store = aws.store();
    let claim = FireClaim {
        campaign_id: warmed.id.clone(),
        campaign_hash: warmed.hash().to_owned(),
        operator: "alice".into(),
        at: SystemTime::now(),
        warm_checksum: None,
    };
    let Claim::Won(record) = store.claim(&claim).await.unwrap() else { panic!("the claim was won") };
    let first = warmed.markets[0].code.clone();
    Queues::open(&aws)
        .await
        .unwrap()
        .send_fire(&FireMsg {
            campaign_id: warmed.id.clone(),
            campaign_hash: record.campaign_hash.clone(),
            operator: "alice".into(),
            fired_at_ms: record.fired_at_ms,
            market: Some(first.clone()),
        })
        .await
        .unwrap();
    // The workers dispatch that market; then the next press comes.
    let deadline = Instant::now() + Duration::from_secs(120);
    while store.dispatched(&warmed.id, &first).await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "the queued market was never dispatched: {}", worker_logs(dir.path()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let o = Command::new(util::bin()).args(["aws", "fire", "--config", config.to_str().unwrap(), "--operator", "bob"]).output().unwrap();
    assert_eq!(o.status.code(), Some(3), "still 'already fired': {}", util::stderr(&o));
    let j: serde_json::Value = serde_json::from_str(util::stdout(&o).trim()).unwrap();
    let requeued: Vec<String> = serde_json::from_value(j["requeued"].clone()).unwrap();
    let mut expected: Vec<String> = warmed.markets.iter().map(|m| m.code.clone()).filter(|m| *m != first).collect();
    expected.sort();
    let mut got = requeued.clone();
    got.sort();
    assert_eq!(got, expected, "the markets the dead press never queued: {j}");
    let (batches, done) = wait_all_done(&aws, &warmed.id, warmed.markets.len(), Duration::from_secs(120)).await;
    assert_eq!(done as u64, batches);
    // A third press finds every market queued, and queues nothing.
    let o = Command::new(util::bin()).args(["aws", "fire", "--config", config.to_str().unwrap(), "--operator", "carol"]).output().unwrap();
    let j: serde_json::Value = serde_json::from_str(util::stdout(&o).trim()).unwrap();
    assert_eq!(j["requeued"], serde_json::json!([]), "{j}");
    for p in procs {
        assert!(p.terminate().success());
    }
    let stats = gateway.stats();
    assert_eq!(
        (stats["unique_tokens"].as_u64().unwrap(), stats["duplicates"].as_u64().unwrap()),
        (targeted, 0),
        "{stats}\n{}",
        worker_logs(dir.path())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatcher_stopped_mid_market_finishes_that_market_and_no_market_is_dispatched_twice() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    util::audience(dir.path(), 120_000, 8, 4);
    let mut gateway = GatewayProc::start(&dir.path().join("keys"), &[]);
    let dispatch_only = write_config(dir.path(), &moto, Some(&gateway.config), "notifiers = 1\nroles = [\"dispatch\"]\n");
    let aws = connect(&dispatch_only).await;
    let queues = Queues::open(&aws).await.unwrap();
    let dispatcher = WorkerProc::start(&dispatch_only, &dir.path().join("dispatcher.log"));
    let campaign = demo_campaign(dir.path());
    let w = workers(&aws, dir.path(), "sigterm");
    let targeted = w.warm(campaign.clone(), 1).await.unwrap().devices;
    let handle = match w.fire("ana").unwrap() {
        FireOutcome::Started(h) => h,
        other => panic!("not a fire: {other:?}"),
    };
    let fire_id = handle.campaign_id().to_owned();
    let store = aws.store();
    let deadline = Instant::now() + Duration::from_secs(60);
    while queues.batch_backlog().await.unwrap() == 0 {
        assert!(Instant::now() < deadline, "the dispatcher did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let markets_then = store.all_dispatched(&fire_id).await.unwrap().len();
    assert!(dispatcher.terminate().success(), "the dispatcher exits cleanly on SIGTERM");
    assert!(markets_then < campaign.markets.len(), "the stop came mid-fire");
    // Every market it recorded is queued whole: the queue holds exactly the
    // recorded batches (nothing sends them yet).
    let recorded: u64 = store.all_dispatched(&fire_id).await.unwrap().iter().map(|d| d.batches).sum();
    assert!(recorded > 0, "it finished the market it was dispatching");
    assert_eq!(queues.batch_backlog().await.unwrap(), recorded, "no partial market in the queue");
    // Workers with both roles take over the rest.
    let both = write_config(dir.path(), &moto, Some(&gateway.config), "notifiers = 1\n");
    let procs: Vec<WorkerProc> = (0..2).map(|i| WorkerProc::start(&both, &dir.path().join(format!("worker-{i}.log")))).collect();
    let (batches, done) = wait_all_done(&aws, &fire_id, campaign.markets.len(), Duration::from_secs(400)).await;
    assert_eq!(done as u64, batches);
    let report = tokio::time::timeout(Duration::from_secs(120), handle.wait()).await.expect("the fire completes");
    assert_eq!(report.delivered, targeted, "{report:?}");
    for p in procs {
        assert!(p.terminate().success());
    }
    let stats = gateway.stats();
    assert_eq!((stats["unique_tokens"].as_u64().unwrap(), stats["duplicates"].as_u64().unwrap()), (targeted, 0), "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_offset_beyond_the_queues_longest_delay_is_honoured_by_queueing_again() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    let audience = util::audience(dir.path(), 6_000, 4, 2);
    let mut gateway = GatewayProc::start(&dir.path().join("keys"), &[]);
    // The queue delays at most 1 s here (SQS: 15 minutes); US goes 8 s late.
    let config = write_config(dir.path(), &moto, Some(&gateway.config), "notifiers = 1\nmax_delay = \"1s\"\n");
    let aws = connect(&config).await;
    let procs: Vec<WorkerProc> = (0..2).map(|i| WorkerProc::start(&config, &dir.path().join(format!("worker-{i}.log")))).collect();
    let path = dir.path().join("late-us.toml");
    std::fs::write(&path, campaign::DEMO_CAMPAIGN.replacen("code = \"US\"", "code = \"US\"\nsend_offset = \"8s\"", 1)).unwrap();
    let campaign = Arc::new(Campaign::load(&path).unwrap());
    let w = workers(&aws, dir.path(), "late");
    let targeted = w.warm(campaign.clone(), 2).await.unwrap().devices;
    let pressed = Instant::now();
    let handle = match w.fire("ana").unwrap() {
        FireOutcome::Started(h) => h,
        other => panic!("not a fire: {other:?}"),
    };
    let fire_id = handle.campaign_id().to_owned();
    let store = aws.store();
    let is_us = |r: &kickoff_sender::aws::store::DoneRecord| {
        audience.shards()[r.done.msg.shard as usize].markets()[usize::from(r.done.msg.market)] == "US"
    };
    // Well past the 1 s the queue can delay, well before the 8 s: other
    // markets are sent, US is not.
    let mut others = 0;
    while pressed.elapsed() < Duration::from_secs(4) {
        for name in store.done_names(&fire_id).await.unwrap() {
            let r = store.done(&fire_id, &name).await.unwrap().unwrap();
            assert!(!is_us(&r) || pressed.elapsed() >= Duration::from_secs(8), "a US batch went before its offset: {name}");
            others += 1;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(others > 0, "the other markets went at once");
    let report = tokio::time::timeout(Duration::from_secs(120), handle.wait()).await.expect("the fire completes");
    assert!(pressed.elapsed() >= Duration::from_secs(8), "never sooner than the offset");
    assert_eq!(report.delivered, targeted, "{report:?}");
    for p in procs {
        assert!(p.terminate().success());
    }
    let stats = gateway.stats();
    assert_eq!((stats["unique_tokens"].as_u64().unwrap(), stats["duplicates"].as_u64().unwrap()), (targeted, 0), "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_abort_from_another_process_stops_the_workers_and_the_window_following_the_fire_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    util::audience(dir.path(), 30_000, 6, 4);
    let mut gateway = GatewayProc::start(&dir.path().join("keys"), &["--gateway-latency-ms", "150-250", "--gateway-streams", "40"]);
    let config = write_config(dir.path(), &moto, Some(&gateway.config), "notifiers = 1\nmax_batches = 4\n");
    let aws = connect(&config).await;
    let procs: Vec<WorkerProc> = (0..2).map(|i| WorkerProc::start(&config, &dir.path().join(format!("worker-{i}.log")))).collect();
    let campaign = demo_campaign(dir.path());
    let w = workers(&aws, dir.path(), "abort");
    let targeted = w.warm(campaign.clone(), 2).await.unwrap().devices;
    let handle = match w.fire("ana").unwrap() {
        FireOutcome::Started(h) => h,
        other => panic!("not a fire: {other:?}"),
    };
    let fire_id = handle.campaign_id().to_owned();
    let store = aws.store();
    let deadline = Instant::now() + Duration::from_secs(120);
    while store.done_names(&fire_id).await.unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "no batch finished");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let abort = |why: &str| {
        Command::new(util::bin())
            .args(["aws", "abort", "--config", config.to_str().unwrap(), "--why", why, "--operator", "bo"])
            .output()
            .unwrap()
    };
    let no_why = abort(" ");
    assert!(!no_why.status.success() && util::stderr(&no_why).contains("--why"), "{}", util::stderr(&no_why));
    let o = abort("backend drowning");
    assert!(o.status.success(), "{}", util::stderr(&o));
    let j: serde_json::Value = serde_json::from_str(util::stdout(&o).trim()).unwrap();
    assert_eq!(j["outcome"], "aborted", "{j}");
    let again = abort("twice");
    assert_eq!(again.status.code(), Some(3), "{}", util::stdout(&again));
    let report = tokio::time::timeout(Duration::from_secs(120), handle.wait()).await.expect("the fire ends");
    assert!(report.aborted, "{report:?}");
    assert_eq!(report.aborted_by.as_deref(), Some("bo (backend drowning)"), "{report:?}");
    assert!(report.delivered < targeted, "the send stopped: {report:?}");
    for p in procs {
        assert!(p.terminate().success());
    }
    let stats = gateway.stats();
    assert_eq!(stats["unique_tokens"].as_u64().unwrap(), report.delivered, "the gateway counted what the batch records say: {stats}");
    assert_eq!(stats["duplicates"], 0, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_mid_send_gives_back_exactly_what_it_did_not_send() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    util::audience(dir.path(), 2_500, 7, 1);
    // Slow answers on two connections of 4 streams: a worker hands off at
    // most 80 devices a second (8 streams, answers after 100 ms or more),
    // one batch at a time, so a batch of hundreds takes seconds.
    let mut gateway = GatewayProc::start(&dir.path().join("keys"), &["--gateway-latency-ms", "100-150", "--gateway-streams", "4"]);
    let mut push = std::fs::read_to_string(&gateway.config).unwrap();
    push.push_str("\n[pool]\nconnections = 2\n");
    std::fs::write(&gateway.config, push).unwrap();
    let config = write_config(dir.path(), &moto, Some(&gateway.config), "notifiers = 1\nmax_batches = 1\ngrace = \"1s\"\n");
    let aws = connect(&config).await;
    let mut procs: Vec<WorkerProc> = (0..2).map(|i| WorkerProc::start(&config, &dir.path().join(format!("worker-{i}.log")))).collect();
    let campaign = demo_campaign(dir.path());
    let w = workers(&aws, dir.path(), "drain");
    let targeted = w.warm(campaign.clone(), 2).await.unwrap().devices;
    let handle = match w.fire("ana").unwrap() {
        FireOutcome::Started(h) => h,
        other => panic!("not a fire: {other:?}"),
    };
    let fire_id = handle.campaign_id().to_owned();
    let store = aws.store();
    let deadline = Instant::now() + Duration::from_secs(120);
    // Stop a worker whose status, at most 0.5 s old, shows it sending a
    // batch with at least 200 devices still to hand off: more than the 136
    // it can hand off at 80 a second in that half second, the 1 s grace and
    // the stop's own 0.2 s (plus 8 in flight), so the stop comes mid-batch.
    let busy = loop {
        assert!(Instant::now() < deadline, "no worker was seen mid-batch");
        let statuses = store.workers().await.unwrap();
        // Aged from when they are read: the stop follows at once.
        let now = kickoff_sender::clock::now_ms();
        let sending =
            statuses.into_iter().find(|s| s.holding.handed_off > 0 && s.holding.left() >= 200 && now.saturating_sub(s.at_ms) <= 500);
        if let Some(s) = sending {
            break s.worker;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let index = procs.iter().position(|p| busy.ends_with(&format!("-{}", p.0.id()))).expect("the busy worker is one of ours");
    assert!(procs.remove(index).terminate().success(), "SIGTERM: a clean exit");
    // Another worker joins and the fire goes on.
    procs.push(WorkerProc::start(&config, &dir.path().join("worker-late.log")));
    let report = tokio::time::timeout(Duration::from_secs(500), handle.wait()).await.expect("the fire completes");
    assert_eq!((report.delivered, report.not_sent), (targeted, 0), "{report:?}");
    let mut split = 0;
    for name in store.done_names(&fire_id).await.unwrap() {
        split += usize::from(store.done(&fire_id, &name).await.unwrap().unwrap().requeued.is_some());
    }
    assert_eq!(split, 1, "the stopped worker split the one batch it had started");
    for p in procs {
        assert!(p.terminate().success());
    }
    let stats = gateway.stats();
    assert_eq!(
        (stats["unique_tokens"].as_u64().unwrap(), stats["duplicates"].as_u64().unwrap()),
        (targeted, 0),
        "nothing sent by both the stopped worker and the one that took its batches: {stats}"
    );
}

/// Creates IAM users in the emulator, each with an access key: the
/// principals two operators call AWS as. Returns (key id, secret) per user.
fn iam_users(moto: &Moto, names: &[&str]) -> Vec<(String, String)> {
    let python = moto_server().with_file_name("python");
    let script = r#"
import json, sys, boto3
iam = boto3.client("iam", region_name="us-east-1", endpoint_url=sys.argv[1], aws_access_key_id="testing", aws_secret_access_key="testing")
keys = []
for name in sys.argv[2:]:
    iam.create_user(UserName=name)
    k = iam.create_access_key(UserName=name)["AccessKey"]
    keys.append([k["AccessKeyId"], k["SecretAccessKey"]])
print(json.dumps(keys))
"#;
    let out = Command::new(&python).args(["-c", script, &moto.url]).args(names).output().unwrap();
    assert!(out.status.success(), "creating IAM users with {}: {}", python.display(), util::stderr(&out));
    serde_json::from_str(util::stdout(&out).trim()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_person_arm_in_aws_mode_needs_two_aws_principals_and_keeps_their_approvals_with_the_fire() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    let _gateway = GatewayProc::start(&dir.path().join("keys"), &[]);
    let config = write_config(dir.path(), &moto, Some(&_gateway.config), "notifiers = 1\nmax_batches = 8\n");
    let aws = connect(&config).await;
    let _procs: Vec<WorkerProc> = (0..2).map(|i| WorkerProc::start(&config, &dir.path().join(format!("worker-{i}.log")))).collect();
    let keys = iam_users(&moto, &["ana", "bo"]);
    let runbook = aws_runbook(dir.path());
    let text = std::fs::read_to_string(&runbook).unwrap().replace("[abort]", "[approvals]\narm = 2\nwithin = \"2m\"\n\n[abort]");
    std::fs::write(&runbook, text).unwrap();
    let script = dir.path().join("arm.txt");
    std::fs::write(&script, "run scale-asg\nrun scale-ecs\nrun verify-warm\nrun test-send\nrun confirm\nrun plan\nrun arm\n").unwrap();
    // Each person on a machine of their own: their own state and data.
    let as_user = |cmd: &mut Command, who: usize, machine: &str| {
        cmd.env("AWS_ACCESS_KEY_ID", &keys[who].0)
            .env("AWS_SECRET_ACCESS_KEY", &keys[who].1)
            .env("KICKOFF_DATA_DIR", dir.path().join(machine))
            .args(["--aws", config.to_str().unwrap(), "--state", dir.path().join(format!("{machine}.sqlite")).to_str().unwrap()]);
    };
    let mut walk = Command::new(util::bin());
    walk.args(["runbook", "walk", runbook.to_str().unwrap(), "--script", script.to_str().unwrap(), "--operator", "ana"])
        .args(["--record", dir.path().join("arm.kickoff.sqlite").to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    as_user(&mut walk, 0, "ana-laptop");
    let walk = walk.spawn().unwrap();
    // Wait for Ana's approval in S3: her arm is waiting for a second principal.
    let deadline = Instant::now() + Duration::from_secs(180);
    let approvals = loop {
        let names: Vec<String> = aws.store().list("fires/").await.unwrap().into_iter().filter(|k| k.contains("/approvals/arm/")).collect();
        if !names.is_empty() {
            break names;
        }
        assert!(Instant::now() < deadline, "the arm never started waiting: {}", worker_logs(dir.path()));
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(approvals.len(), 1, "{approvals:?}");
    let approve = |who: usize, operator: &str, machine: &str| {
        let mut c = Command::new(util::bin());
        c.args(["runbook", "approve", runbook.to_str().unwrap(), "--operator", operator]);
        as_user(&mut c, who, machine);
        c.output().unwrap()
    };
    // Ana's principal under another name, from another machine: still one person.
    let same = approve(0, "ana-on-the-desktop", "ana-desktop");
    assert!(same.status.success() && util::stdout(&same).contains("1 of 2"), "{}{}", util::stdout(&same), util::stderr(&same));
    // Bo, another principal, on a machine with no event open: the arm completes.
    let bo = approve(1, "bo", "bo-laptop");
    assert!(bo.status.success() && util::stdout(&bo).contains("2 of 2"), "{}{}", util::stdout(&bo), util::stderr(&bo));
    let out = walk.wait_with_output().unwrap();
    assert!(out.status.success(), "{}\n{}", util::stdout(&out), util::stderr(&out));
    assert!(util::stdout(&out).contains("armed by ana, approved by bo (2 of 2)"), "{}", util::stdout(&out));
    // The approvals are kept with the fire, one per principal, named by ARN.
    let campaign = demo_campaign(dir.path());
    let kept: Vec<String> = aws.store().list(&format!("fires/{}/approvals/arm/", campaign.id)).await.unwrap();
    assert_eq!(kept.len(), 2, "{kept:?}");
    let mut arns = Vec::new();
    for k in &kept {
        let body: serde_json::Value = aws.store().get_json(&format!("fires/{}/approvals/arm/{k}", campaign.id)).await.unwrap().unwrap();
        arns.push(body["identity"].as_str().unwrap().to_owned());
    }
    arns.sort();
    assert_eq!(arns, ["arn:aws:iam::123456789012:user/ana", "arn:aws:iam::123456789012:user/bo"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_delivered_twice_at_once_is_sent_by_the_first_worker_to_mark_it_taken() {
    // Standard SQS queues deliver at least once, and the emulator hands one
    // message to two concurrent receivers under load (its receive checks
    // and marks a message without a lock): the S3 mark decides.
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let aws = connect(&write_config(dir.path(), &moto, None, "")).await;
    let store = aws.store();
    let msg = kickoff_sender::queue::BatchMsg {
        campaign_id: "launch".into(),
        shard: 0,
        platform: kickoff_sender::audience::Platform::Ios,
        market: 0,
        start: 0,
        end: 250,
        not_before_ms: None,
    };
    // Two workers take the same delivery at once: exactly one wins.
    let (a, b) = tokio::join!(store.take("launch", &msg, "worker-a"), store.take("launch", &msg, "worker-b"));
    let (a, b) = (a.unwrap(), b.unwrap());
    let (winner, loser, mark) = match (a, b) {
        (None, Some(mark)) => ("worker-a", "worker-b", mark),
        (Some(mark), None) => ("worker-b", "worker-a", mark),
        other => panic!("exactly one takes it: {other:?}"),
    };
    assert_eq!(mark.worker, winner, "the loser is told who has it");
    // The winner's own second delivery is still its own.
    assert!(store.take("launch", &msg, winner).await.unwrap().is_none());
    assert_eq!(store.take("launch", &msg, loser).await.unwrap().map(|m| m.worker), Some(winner.to_owned()));
    // Given back unfinished (a stop), the next worker takes it at once.
    store.untake("launch", &kickoff_sender::aws::store::batch_name(&msg)).await.unwrap();
    assert!(store.take("launch", &msg, loser).await.unwrap().is_none());
    // Taken over from a worker that is gone.
    store.retake("launch", &msg, "worker-c").await.unwrap();
    assert_eq!(store.take("launch", &msg, winner).await.unwrap().map(|m| m.worker), Some("worker-c".to_owned()));
}
