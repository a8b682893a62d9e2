//! `audience import dynamodb` against the AWS API emulator's DynamoDB,
//! through a proxy that throttles: 100,000 users read by key (BatchGetItem,
//! some requests answered ThrottlingException, some with every key
//! unprocessed), the snapshot byte-identical to compiling the same rows from
//! CSV, missing users and bad items named by key; then a table of several
//! devices per user, read by a Query per user and by a parallel Scan; and
//! key schemas that do not fit, refused by name. Then a runbook's
//! `[audience.dynamodb]`, imported when its event opens and fired, counted
//! per token at the gateway; and a table keyed by numbers.
//!
//! (100,000 items are read by key, not by Query or Scan: the emulator sorts
//! the whole table on every Query and Scan page, which at 100,000 items is
//! seconds a call.)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, PutRequest, ScalarAttributeType, WriteRequest,
};

use crate::aws::{Moto, write_config};
use crate::util::{bin, stderr, stdout};

/// An HTTP proxy to `upstream` that answers every `every`-th request with
/// DynamoDB's ThrottlingException and, when `unprocessed`, the BatchGetItem
/// two requests later with every key unprocessed (DynamoDB's partial
/// throttle); one request per connection. `throttled` counts both.
struct Throttler {
    url: String,
    throttled: Arc<AtomicU64>,
}

fn read_request(stream: &mut BufReader<TcpStream>) -> Option<(Vec<u8>, String, Vec<u8>)> {
    let mut head = Vec::new();
    let mut length = 0usize;
    let mut target = String::new();
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().ok()?;
        }
        if let Some(v) = lower.strip_prefix("x-amz-target:") {
            target = v.trim().to_owned();
        }
        if lower.starts_with("connection:") {
            continue;
        }
        if line == "\r\n" {
            head.extend_from_slice(b"Connection: close\r\n\r\n");
            break;
        }
        head.extend_from_slice(line.as_bytes());
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).ok()?;
    Some((head, target, body))
}

fn answer(client: &mut TcpStream, status: &str, body: &str) {
    let _ = write!(
        client,
        "HTTP/1.1 {status}\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

impl Throttler {
    fn start(upstream: &str, every: u64, unprocessed: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let throttled = Arc::new(AtomicU64::new(0));
        let (count, t) = (Arc::new(AtomicU64::new(0)), throttled.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (count, t, upstream) = (count.clone(), t.clone(), upstream.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(client.try_clone().unwrap());
                    let Some((head, target, body)) = read_request(&mut reader) else { return };
                    let mut client = client;
                    let n = count.fetch_add(1, Ordering::Relaxed);
                    if n % every == every - 1 {
                        t.fetch_add(1, Ordering::Relaxed);
                        let body = r#"{"__type":"com.amazon.coral.availability#ThrottlingException","message":"Rate of requests exceeds the allowed throughput."}"#;
                        return answer(&mut client, "400 Bad Request", body);
                    }
                    if unprocessed && n % every == 1 && target.ends_with(".batchgetitem") {
                        t.fetch_add(1, Ordering::Relaxed);
                        let request: serde_json::Value = serde_json::from_slice(&body).unwrap();
                        let body = serde_json::json!({ "Responses": {}, "UnprocessedKeys": request["RequestItems"] });
                        return answer(&mut client, "200 OK", &body.to_string());
                    }
                    let mut up = TcpStream::connect(&upstream).unwrap();
                    up.write_all(&head).unwrap();
                    up.write_all(&body).unwrap();
                    let mut response = Vec::new();
                    let _ = up.read_to_end(&mut response);
                    let _ = client.write_all(&response);
                });
            }
        });
        Self { url, throttled }
    }
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

/// Creates `table`, keyed by the user id (and the token, when `by_token`),
/// and writes `rows` (user id, platform, token, locale, market) into it.
async fn fill(client: &aws_sdk_dynamodb::Client, table: &str, by_token: bool, rows: &[Vec<String>]) {
    let key = |name: &str, kind| KeySchemaElement::builder().attribute_name(name).key_type(kind).build().unwrap();
    let attribute =
        |name: &str| AttributeDefinition::builder().attribute_name(name).attribute_type(ScalarAttributeType::S).build().unwrap();
    let mut create = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key("user_id", KeyType::Hash))
        .attribute_definitions(attribute("user_id"));
    if by_token {
        create = create.key_schema(key("token", KeyType::Range)).attribute_definitions(attribute("token"));
    }
    create.send().await.unwrap();
    let put = |r: &[String]| {
        let item = [("user_id", &r[0]), ("platform", &r[1]), ("token", &r[2]), ("locale", &r[3]), ("market", &r[4])]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), s(v)))
            .collect();
        WriteRequest::builder().put_request(PutRequest::builder().set_item(Some(item)).build().unwrap()).build()
    };
    let chunks: Vec<Vec<WriteRequest>> = rows.chunks(25).map(|c| c.iter().map(|r| put(r)).collect()).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, group) in chunks.chunks(chunks.len().div_ceil(4)).enumerate() {
        let (client, group, table) = (client.clone(), group.to_vec(), table.to_owned());
        tasks.spawn(async move {
            for batch in group {
                let out =
                    client.batch_write_item().request_items(&table, batch).send().await.unwrap_or_else(|e| panic!("writer {i}: {e:?}"));
                assert!(out.unprocessed_items().is_none_or(|u| u.is_empty()), "the emulator does not throttle writes");
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
}

fn shards(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "kshard"))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
        .collect();
    files.sort();
    files
}

/// The import's rows file (JSON Lines) as the same rows in a CSV file.
fn rows_as_csv(rows: &Path, csv: &Path) {
    let mut text = String::from("user_id,platform,token,locale,market\n");
    for line in std::fs::read_to_string(rows).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let field = |k: &str| v[k].as_str().unwrap_or("").to_owned();
        text.push_str(&[field("user_id"), field("platform"), field("token"), field("locale"), field("market")].join(","));
        text.push('\n');
    }
    std::fs::write(csv, text).unwrap();
}

struct Setup {
    dir: tempfile::TempDir,
    direct: std::path::PathBuf,
}

impl Setup {
    /// A copy of the AWS config whose endpoint is a new throttling proxy.
    fn proxied(&self, name: &str, every: u64, unprocessed: bool) -> (Throttler, std::path::PathBuf) {
        let url = moto_url(&self.direct);
        let throttler = Throttler::start(&url, every, unprocessed);
        let d = self.dir.path().join(format!("{name}-config"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(self.dir.path().join("credentials"), d.join("credentials")).unwrap();
        std::fs::write(d.join("aws.toml"), std::fs::read_to_string(&self.direct).unwrap().replace(&url, &throttler.url)).unwrap();
        (throttler, d.join("aws.toml"))
    }

    fn import(
        &self,
        config: &Path,
        table: &str,
        how: &[&str],
        name: &str,
    ) -> (std::process::Output, std::path::PathBuf, std::path::PathBuf) {
        let (out, report) =
            (self.dir.path().join(name), self.dir.path().join(format!("{}.json", name.trim_end_matches('/').replace('/', "-"))));
        let o = tokio::task::block_in_place(|| {
            Command::new(bin())
                .args(["audience", "import", "dynamodb", "--aws", config.to_str().unwrap(), "--table", table])
                .args(how)
                .args(["--out", out.to_str().unwrap(), "--report", report.to_str().unwrap()])
                .output()
                .unwrap()
        });
        (o, out, report)
    }
}

fn report(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_users_from_dynamodb_survive_throttling_and_compile_as_csv_would() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    let direct = write_config(dir.path(), &moto, None, "");
    let setup = Setup { direct, dir };
    let aws = kickoff_sender::aws::Aws::connect(kickoff_sender::aws::AwsConfig::load(&setup.direct).unwrap()).await.unwrap();
    // 100,000 realistic devices, one per user, plus a user on an unknown
    // platform and a user whose platform is a list.
    let csv = setup.dir.path().join("gen.csv");
    let o = Command::new(bin())
        .args(["audience", "generate", "--devices", "100000", "--seed", "7", "--out", csv.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let mut rows: Vec<Vec<String>> =
        std::fs::read_to_string(&csv).unwrap().lines().skip(1).map(|l| l.split(',').map(str::to_owned).collect()).collect();
    assert_eq!(rows.len(), 100_000);
    rows.push(vec!["bad-platform".into(), "windows".into(), "ab".repeat(32), "en-US".into(), "US".into()]);
    fill(&aws.dynamodb, "users", false, &rows).await;
    aws.dynamodb
        .put_item()
        .table_name("users")
        .item("user_id", s("list-token"))
        .item("token", s("t"))
        .item("platform", AttributeValue::L(vec![s("ios")]))
        .send()
        .await
        .unwrap();

    // Every user by id, and three who are not there (one listed twice).
    let users = setup.dir.path().join("users.txt");
    let mut ids: Vec<String> = rows.iter().map(|r| r[0].clone()).collect();
    ids.extend(["list-token", "gone-1", "gone-2", "gone-3", "gone-1"].map(String::from));
    std::fs::write(&users, ids.join("\n")).unwrap();
    let (throttler, config) = setup.proxied("by-key", 5, true);
    // (Into a directory not there yet, named with a trailing slash.)
    let (o, out, path) = setup.import(&config, "users", &["--user-ids", users.to_str().unwrap()], "nested/by-key/");
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("100,002 items read (batch-get), 3 users with no device; 100,000 devices kept, 2 rejected"), "{text}");
    let r = report(&path);
    assert!(throttler.throttled.load(Ordering::Relaxed) >= 300, "the proxy throttled");
    assert_eq!(
        r["throttled"],
        throttler.throttled.load(Ordering::Relaxed),
        "every throttle and every unprocessed key set seen and asked again"
    );
    assert!(r["lowest_concurrency"].as_u64().unwrap() < 16, "{r}");
    assert_eq!(r["missing_users"], serde_json::json!(["gone-1", "gone-2", "gone-3"]), "each once, in the file's order");
    assert_eq!(r["compile"]["accepted"], 100_000);
    let rejected = r["rejected"].as_array().unwrap();
    assert!(
        rejected.iter().any(|x| x["user_id"] == "list-token" && x["reason"].as_str().unwrap().contains("`platform` is a list")),
        "{rejected:?}"
    );
    assert!(
        rejected.iter().any(|x| x["user_id"] == "bad-platform" && x["reason"].as_str().unwrap().contains("unknown_platform")),
        "{rejected:?}"
    );
    assert!(
        text.contains("missing user gone-2") && text.contains("rejected user list-token token t: attribute `platform` is a list"),
        "{text}"
    );

    // The rows came in the user-id file's order: the same rows from CSV give
    // the same shards, byte for byte.
    let rows_file = Path::new(r["rows"].as_str().unwrap());
    assert_eq!(rows_file, setup.dir.path().join("nested/by-key.rows.jsonl"), "the rows beside the audience, not in it");
    let first: Vec<String> = std::fs::read_to_string(rows_file)
        .unwrap()
        .lines()
        .take(3)
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["user_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(first, ids[..3]);
    let csv_rows = setup.dir.path().join("rows.csv");
    rows_as_csv(rows_file, &csv_rows);
    let from_csv = setup.dir.path().join("from-csv");
    let o = Command::new(bin())
        .args(["audience", "compile", csv_rows.to_str().unwrap(), "--out", from_csv.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let (a, b) = (shards(&out), shards(&from_csv));
    assert!(!a.is_empty() && a.len() == b.len(), "{} and {} shards", a.len(), b.len());
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(x == y, "{name} differs between the DynamoDB import and the CSV compile");
    }

    // Several devices per user (the token is the sort key): a Query per
    // user, every 7th request throttled.
    let devices: Vec<Vec<String>> = rows[..3_000]
        .iter()
        .enumerate()
        .map(|(i, r)| vec![format!("owner-{:04}", i / 3), r[1].clone(), r[2].clone(), r[3].clone(), r[4].clone()])
        .collect();
    fill(&aws.dynamodb, "devices", true, &devices).await;
    let owners = setup.dir.path().join("owners.txt");
    let mut wanted: Vec<String> = (0..300).map(|i| format!("owner-{i:04}")).collect();
    wanted.push("owner-9999".into());
    std::fs::write(&owners, wanted.join("\n")).unwrap();
    let (throttler, config) = setup.proxied("query", 7, false);
    let (o, _, path) = setup.import(&config, "devices", &["--user-ids", owners.to_str().unwrap()], "by-query");
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let r = report(&path);
    assert_eq!(r["method"], "query");
    assert!(throttler.throttled.load(Ordering::Relaxed) >= 40, "the proxy throttled");
    assert_eq!(r["throttled"], throttler.throttled.load(Ordering::Relaxed));
    assert_eq!((r["items"].as_u64(), r["compile"]["accepted"].as_u64()), (Some(900), Some(900)));
    assert_eq!(r["missing_users"], serde_json::json!(["owner-9999"]));

    // The whole table in four parallel Scan segments, every 3rd throttled:
    // every device once.
    let (throttler, config) = setup.proxied("scan", 3, false);
    let (o, _, path) = setup.import(&config, "devices", &["--scan", "--segments", "4"], "by-scan");
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let r = report(&path);
    assert_eq!((r["method"].as_str(), r["items"].as_u64(), r["compile"]["accepted"].as_u64()), (Some("scan"), Some(3_000), Some(3_000)));
    assert_eq!(r["throttled"], throttler.throttled.load(Ordering::Relaxed));
    let mut read: Vec<String> = std::fs::read_to_string(r["rows"].as_str().unwrap())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["token"].as_str().unwrap().to_owned())
        .collect();
    let mut written: Vec<String> = devices.iter().map(|d| d[2].clone()).collect();
    read.sort();
    written.sort();
    assert!(read == written, "the scan read every device once");

    // Key schemas that do not fit are refused by name, nothing written.
    let (o, out, _) = setup.import(
        &setup.direct,
        "devices",
        &["--user-ids", owners.to_str().unwrap(), "--attributes", "uid,platform,token,locale,market"],
        "wrong-key",
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("devices's partition key is `user_id`, not the user id attribute `uid`"), "{}", stderr(&o));
    assert!(!out.exists(), "nothing written");
    let (o, _, _) = setup.import(&setup.direct, "devices", &["--user-ids", owners.to_str().unwrap(), "--index", "by-market"], "no-index");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("table devices has no index by-market"), "{}", stderr(&o));
    // An audience already there is refused before anything is read.
    let (o, out, _) = setup.import(&setup.direct, "devices", &["--scan"], "by-query");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("by-query exists") && stderr(&o).contains("pass --force to replace it"), "{}", stderr(&o));
    assert!(shards(&out).len() > 1, "the first import's audience is kept");
}

/// The emulator's URL in an AWS config file.
fn moto_url(config: &Path) -> String {
    let text = std::fs::read_to_string(config).unwrap();
    let line = text.lines().find(|l| l.starts_with("endpoint_url")).unwrap();
    line.split('"').nth(1).unwrap().to_owned()
}

/// A runbook whose `[audience.dynamodb]` names the table reads it when its
/// event opens: `plan` and a walk to the fire import the listed users'
/// devices, every one arrives once at the gateway, the import is kept in the
/// event's work directory; a table that is not there, or no AWS to read it
/// from, stops the walk naming it, and a broken section gets its file and line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runbook_reads_its_audience_from_dynamodb_when_its_event_opens() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    let config = write_config(dir.path(), &moto, None, "");
    let aws = kickoff_sender::aws::Aws::connect(kickoff_sender::aws::AwsConfig::load(&config).unwrap()).await.unwrap();
    let csv = dir.path().join("gen.csv");
    let o = Command::new(bin())
        .args(["audience", "generate", "--devices", "3000", "--seed", "11", "--out", csv.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: Vec<Vec<String>> =
        std::fs::read_to_string(&csv).unwrap().lines().skip(1).map(|l| l.split(',').map(str::to_owned).collect()).collect();
    fill(&aws.dynamodb, "launch-users", false, &rows).await;
    // The campaign's users: 2,000 of the table's 3,000, and one with no device.
    let mut ids: Vec<String> = rows[..2_000].iter().map(|r| r[0].clone()).collect();
    ids.push("nobody".into());
    std::fs::write(dir.path().join("users.txt"), ids.join("\n")).unwrap();
    std::fs::write(dir.path().join("campaign.toml"), kickoff_sender::campaign::DEMO_CAMPAIGN).unwrap();
    let runbook = |name: &str, audience: &str| {
        let path = dir.path().join(format!("{name}.toml"));
        let head = "[fleet]\ninstance_startup = \"100ms\"\ntask_startup = \"50ms\"\ntasks_per_instance = 2\n\
                    [backends.api]\ncapacity_rps = 1000\n[abort]\ntext = \"Stop.\"\n";
        std::fs::write(&path, format!("name = \"{name}\"\ncampaign = \"campaign.toml\"\n{audience}{head}{}", crate::runbook::STEPS))
            .unwrap();
        path
    };
    let good = runbook("launch", "[audience.dynamodb]\ntable = \"launch-users\"\nuser_ids = \"users.txt\"\naws = \"aws.toml\"\n");
    let data = dir.path().join("data");
    let cli =
        |args: &[&str]| tokio::task::block_in_place(|| Command::new(bin()).args(args).env("KICKOFF_DATA_DIR", &data).output().unwrap());

    // The plan reads the table as an event would.
    let plan = cli(&["plan", good.to_str().unwrap(), "--json", "--per-worker-rate", "20000"]);
    let summary: serde_json::Value = serde_json::from_str(stdout(&plan).trim()).unwrap_or_else(|e| panic!("{e}: {}", stderr(&plan)));
    let planned: u64 = summary["platforms"].as_array().unwrap().iter().map(|p| p["devices"].as_u64().unwrap()).sum();
    assert_eq!(planned, 2_000, "{summary}");

    // The walk imports at open and fires: every listed user's device once, at the gateway.
    let walk = cli(&["runbook", "walk", good.to_str().unwrap(), "--yes", "--operator", "ana"]);
    assert!(walk.status.success(), "{}\n{}", stdout(&walk), stderr(&walk));
    assert!(stdout(&walk).contains("2000 of 2000 devices delivered, 0 failed, 0 duplicates, 0 missing"), "{}", stdout(&walk));
    let reports: Vec<_> = std::fs::read_dir(data.join("work"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("audience.import.json"))
        .filter(|p| p.is_file())
        .collect();
    assert_eq!(reports.len(), 1, "one event, one import");
    let r = report(&reports[0]);
    assert_eq!((r["method"].as_str(), r["items"].as_u64()), (Some("batch-get"), Some(2_000)));
    assert_eq!(r["missing_users"], serde_json::json!(["nobody"]));
    let rows_file = reports[0].with_file_name("audience.rows.jsonl");
    assert_eq!(std::fs::read_to_string(&rows_file).unwrap().lines().count(), 2_000, "the rows read are kept beside the audience");
    let leftovers: Vec<_> = std::fs::read_dir(reports[0].parent().unwrap())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("import-"))
        .collect();
    assert!(leftovers.is_empty(), "nothing half-written is left: {leftovers:?}");

    // A table keyed by a number: the ids in the file are sent as numbers.
    aws.dynamodb
        .create_table()
        .table_name("numbered")
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(KeySchemaElement::builder().attribute_name("user_id").key_type(KeyType::Hash).build().unwrap())
        .attribute_definitions(
            AttributeDefinition::builder().attribute_name("user_id").attribute_type(ScalarAttributeType::N).build().unwrap(),
        )
        .send()
        .await
        .unwrap();
    for (i, r) in rows[..5].iter().enumerate() {
        let mut put = aws.dynamodb.put_item().table_name("numbered").item("user_id", AttributeValue::N((i + 1).to_string()));
        for (k, v) in ["platform", "token", "locale", "market"].iter().zip(&r[1..]) {
            put = put.item(*k, s(v));
        }
        put.send().await.unwrap();
    }
    let numbers = dir.path().join("numbers.txt");
    // As people write numbers: a sign, leading zeros, the same user twice.
    std::fs::write(&numbers, "1\n2\n+3\n4\n05\n5\n6\n").unwrap();
    let (out, path) = (dir.path().join("numbered"), dir.path().join("numbered.json"));
    let o = cli(&["audience", "import", "dynamodb", "--aws", config.to_str().unwrap(), "--table", "numbered"]
        .into_iter()
        .chain(["--user-ids", numbers.to_str().unwrap(), "--out", out.to_str().unwrap(), "--report", path.to_str().unwrap()])
        .collect::<Vec<_>>());
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let r = report(&path);
    assert_eq!((r["items"].as_u64(), r["compile"]["accepted"].as_u64()), (Some(5), Some(5)));
    assert_eq!(r["missing_users"], serde_json::json!(["6"]));

    // A table that is not there stops the walk before anything is sent, naming it.
    let missing = runbook("missing", "[audience.dynamodb]\ntable = \"no-such-table\"\nuser_ids = \"users.txt\"\naws = \"aws.toml\"\n");
    let o = cli(&["runbook", "walk", missing.to_str().unwrap(), "--yes", "--new-event"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("the audience from DynamoDB") && stderr(&o).contains("no-such-table"), "{}", stderr(&o));
    // Embedded mode with no AWS configuration to read it with.
    let no_aws = runbook("no-aws", "[audience.dynamodb]\ntable = \"launch-users\"\nscan = true\n");
    let o = cli(&["runbook", "walk", no_aws.to_str().unwrap(), "--yes", "--new-event"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("name an AWS configuration file with `aws = \"aws.toml\"`"), "{}", stderr(&o));
    // A broken section: its file and line.
    let broken = runbook("broken", "[audience.dynamodb]\ntable = \"launch-users\"\nuser_ids = \"users.txt\"\nscan = true\n");
    let o = cli(&["runbook", "check", broken.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains(&format!("{}:3:", broken.display()))
            && stderr(&o).contains("takes exactly one of `user_ids` (a file of user ids) or `scan = true`"),
        "{}",
        stderr(&o)
    );
}
