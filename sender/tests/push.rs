//! APNs and FCM over real HTTP/2 against the loopback gateway: its rules,
//! the providers, retries, pruning, and secrets.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};
use kickoff_sender::audience::Platform;
use kickoff_sender::fanout::{EngineConfig, FireOutcome, SqliteLedger, Warm};
use kickoff_sender::gateway::{Gateway, GatewayConfig};
use kickoff_sender::metrics::MemoryMetrics;
use kickoff_sender::provider::{ProviderChoice, Setup};
use kickoff_sender::push::auth::{ApnsKey, ServiceAccount, unix_now};
use kickoff_sender::push::h2client::{Endpoint, Outgoing, Pool, RawResponse, SendEngine, client_tls};
use kickoff_sender::push::{PushConfig, Session};

use crate::util;

const TOPIC: &str = "dev.kickoff.demo";

/// A raw HTTP/2 client to the gateway, for sending requests by hand.
struct Raw {
    pool: Pool,
}

impl Raw {
    async fn connect(gw: &Gateway, engine: SendEngine) -> Self {
        let ca = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(ca.path(), &gw.keys().ca_pem).unwrap();
        let tls = client_tls(Some(ca.path())).unwrap();
        let endpoint = Arc::new(Endpoint::parse(&gw.url(), &tls).unwrap().with_engine(engine));
        Self { pool: Pool::open(endpoint, 1).await.unwrap() }
    }

    async fn send(&mut self, method: Method, path: &str, headers: &[(&str, String)], body: &[u8]) -> RawResponse {
        let fields: Vec<(HeaderName, HeaderValue)> =
            headers.iter().map(|(k, v)| (HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap())).collect();
        let fields: Vec<(&HeaderName, &HeaderValue)> = fields.iter().map(|(k, v)| (k, v)).collect();
        let outgoing = Outgoing { method: &method, path, headers: &fields };
        let call = self.pool.send(&outgoing, Bytes::copy_from_slice(body), true).expect("a live connection");
        call.await.expect("an answer")
    }
}

fn reason(r: &RawResponse) -> String {
    serde_json::from_slice::<serde_json::Value>(&r.body).map(|v| v["reason"].as_str().unwrap_or("").to_owned()).unwrap_or_default()
}

fn apns_headers(key: &ApnsKey) -> Vec<(&'static str, String)> {
    vec![("authorization", format!("bearer {}", key.sign(unix_now()))), ("apns-topic", TOPIC.into()), ("apns-push-type", "alert".into())]
}

fn with(mut h: Vec<(&'static str, String)>, name: &'static str, value: &str) -> Vec<(&'static str, String)> {
    h.retain(|(k, _)| *k != name);
    h.push((name, value.to_owned()));
    h
}

fn without(mut h: Vec<(&'static str, String)>, name: &str) -> Vec<(&'static str, String)> {
    h.retain(|(k, _)| *k != name);
    h
}

const BODY: &[u8] = br#"{"aps":{"alert":{"title":"t","body":"b"}}}"#;

async fn the_gateway_enforces_every_apns_rule_with_apple_s_answers(engine: SendEngine) {
    let mut config = GatewayConfig::default();
    let dead = "d".repeat(64);
    config.unregistered.insert(dead.clone());
    let gw = Gateway::start_local(config, true, TOPIC).unwrap();
    let key = gw.keys().apns.clone();
    let token = "ab".repeat(32);
    let path = format!("/3/device/{token}");
    let ok = apns_headers(&key);
    let mut raw = Raw::connect(&gw, engine).await;

    let r = raw.send(Method::POST, &path, &with(ok.clone(), "apns-id", "123e4567-e89b-12d3-a456-426614174000"), BODY).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.apns_id.as_ref().unwrap(), "123e4567-e89b-12d3-a456-426614174000", "the apns-id is echoed");

    let big = format!(r#"{{"aps":{{"alert":"{}"}}}}"#, "x".repeat(4100));
    type Case = (Method, String, Vec<(&'static str, String)>, Vec<u8>, u16, &'static str);
    let cases: Vec<Case> = vec![
        (Method::GET, path.clone(), ok.clone(), BODY.to_vec(), 405, "MethodNotAllowed"),
        (Method::POST, "/3/other".into(), ok.clone(), BODY.to_vec(), 404, "BadPath"),
        (Method::POST, "/3/device/".into(), ok.clone(), BODY.to_vec(), 400, "MissingDeviceToken"),
        (Method::POST, "/3/device/abc".into(), ok.clone(), BODY.to_vec(), 400, "BadDeviceToken"),
        (Method::POST, path.clone(), without(ok.clone(), "apns-topic"), BODY.to_vec(), 400, "MissingTopic"),
        (Method::POST, path.clone(), with(ok.clone(), "apns-topic", "com.other.app"), BODY.to_vec(), 400, "TopicDisallowed"),
        (Method::POST, path.clone(), with(ok.clone(), "apns-push-type", "fax"), BODY.to_vec(), 400, "InvalidPushType"),
        (Method::POST, path.clone(), with(ok.clone(), "apns-priority", "7"), BODY.to_vec(), 400, "BadPriority"),
        (
            Method::POST,
            path.clone(),
            with(with(ok.clone(), "apns-push-type", "background"), "apns-priority", "10"),
            BODY.to_vec(),
            400,
            "BadPriority",
        ),
        (Method::POST, path.clone(), with(ok.clone(), "apns-expiration", "soon"), BODY.to_vec(), 400, "BadExpirationDate"),
        (Method::POST, path.clone(), with(ok.clone(), "apns-id", "not-a-uuid"), BODY.to_vec(), 400, "BadMessageId"),
        (Method::POST, path.clone(), with(ok.clone(), "apns-collapse-id", &"c".repeat(65)), BODY.to_vec(), 400, "BadCollapseId"),
        (Method::POST, path.clone(), ok.clone(), Vec::new(), 400, "PayloadEmpty"),
        (Method::POST, path.clone(), ok.clone(), big.into_bytes(), 413, "PayloadTooLarge"),
        (Method::POST, path.clone(), ok.clone(), br#"{"alert":"no aps"}"#.to_vec(), 400, "BadPayload"),
        (Method::POST, path.clone(), ok.clone(), br#"{"aps":"not an object"}"#.to_vec(), 400, "BadPayload"),
        (Method::POST, format!("/3/device/{dead}"), ok.clone(), BODY.to_vec(), 410, "Unregistered"),
    ];
    let mut wrong = Vec::new();
    for (method, p, headers, body, status, expected) in cases {
        let r = raw.send(method.clone(), &p, &headers, &body).await;
        if (r.status, reason(&r).as_str()) != (status, expected) {
            wrong.push(format!("{method} {p}: expected {status} {expected}, got {} {}", r.status, reason(&r)));
        }
        if status == 410 {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert!(v["timestamp"].as_u64().is_some(), "410 carries a timestamp: {v}");
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(gw.records().count(Platform::Ios, &token), 1, "only the accepted request counts as a delivery");
}
both_engines!(the_gateway_enforces_every_apns_rule_with_apple_s_answers);

async fn provider_tokens_are_checked_for_signature_key_age_and_switch_rate(engine: SendEngine) {
    let gw = Gateway::start_local(GatewayConfig::default(), false, TOPIC).unwrap();
    let key = gw.keys().apns.clone();
    let path = format!("/3/device/{}", "ab".repeat(32));
    let mut raw = Raw::connect(&gw, engine).await;
    async fn send_with(raw: &mut Raw, key: &ApnsKey, path: &str, auth: Option<String>) -> RawResponse {
        let mut h = without(apns_headers(key), "authorization");
        if let Some(a) = auth {
            h.push(("authorization", a));
        }
        raw.send(Method::POST, path, &h, BODY).await
    }
    let r = send_with(&mut raw, &key, &path, None).await;
    assert_eq!((r.status, reason(&r).as_str()), (403, "MissingProviderToken"));
    let stranger = ApnsKey::generate(&key.key_id, &key.team_id);
    let r = send_with(&mut raw, &key, &path, Some(format!("bearer {}", stranger.sign(unix_now())))).await;
    assert_eq!((r.status, reason(&r).as_str()), (403, "InvalidProviderToken"), "signed by another key");
    let other_team = ApnsKey::from_pem(&key.to_p8_pem(), &key.key_id, "OTHERTEAM1").unwrap();
    let r = send_with(&mut raw, &key, &path, Some(format!("bearer {}", other_team.sign(unix_now())))).await;
    assert_eq!((r.status, reason(&r).as_str()), (403, "InvalidProviderToken"), "wrong team");
    let r = send_with(&mut raw, &key, &path, Some(format!("bearer {}", key.sign(unix_now() - 3700)))).await;
    assert_eq!((r.status, reason(&r).as_str()), (403, "ExpiredProviderToken"));
    let first = format!("bearer {}", key.sign(unix_now() - 10));
    assert_eq!(send_with(&mut raw, &key, &path, Some(first.clone())).await.status, 200);
    assert_eq!(send_with(&mut raw, &key, &path, Some(first)).await.status, 200, "the same token again is fine");
    let newer = format!("bearer {}", key.sign(unix_now()));
    let r = send_with(&mut raw, &key, &path, Some(newer.clone())).await;
    assert_eq!((r.status, reason(&r).as_str()), (429, "TooManyProviderTokenUpdates"), "a new token within 20 minutes");
    // A new connection may start with any valid token.
    let mut fresh = Raw::connect(&gw, engine).await;
    assert_eq!(send_with(&mut fresh, &key, &path, Some(newer)).await.status, 200);
}
both_engines!(provider_tokens_are_checked_for_signature_key_age_and_switch_rate);

async fn the_gateway_enforces_fcm_and_oauth_rules_with_google_s_answers(engine: SendEngine) {
    let mut config = GatewayConfig::default();
    let dead = format!("dead:{}", "Z".repeat(150));
    config.unregistered.insert(dead.clone());
    let gw = Gateway::start_local(config, true, TOPIC).unwrap();
    let sa = gw.keys().service_account.clone();
    let mut raw = Raw::connect(&gw, engine).await;
    let form = |grant: &str, assertion: &str| format!("grant_type={}&assertion={assertion}", grant.replace(':', "%3A"));
    async fn token_call(raw: &mut Raw, body: String) -> RawResponse {
        let h = vec![("content-type", "application/x-www-form-urlencoded".to_owned())];
        raw.send(Method::POST, "/token", &h, body.as_bytes()).await
    }
    let error = |r: &RawResponse| serde_json::from_slice::<serde_json::Value>(&r.body).unwrap();

    let r = token_call(&mut raw, form("password", &sa.assertion(kickoff_sender::push::auth::FCM_SCOPE, unix_now()))).await;
    assert_eq!((r.status, error(&r)["error"].as_str()), (400, Some("unsupported_grant_type")));
    let stranger = ServiceAccount::generate(&sa.project_id, &sa.token_uri);
    let r = token_call(
        &mut raw,
        form(kickoff_sender::push::auth::JWT_BEARER_GRANT, &stranger.assertion(kickoff_sender::push::auth::FCM_SCOPE, unix_now())),
    )
    .await;
    assert_eq!((r.status, error(&r)["error_description"].as_str()), (400, Some("Invalid JWT Signature.")));
    let r = token_call(
        &mut raw,
        form(kickoff_sender::push::auth::JWT_BEARER_GRANT, &sa.assertion("https://www.googleapis.com/auth/drive", unix_now())),
    )
    .await;
    assert_eq!((r.status, error(&r)["error"].as_str()), (400, Some("invalid_scope")));
    let r = token_call(
        &mut raw,
        form(kickoff_sender::push::auth::JWT_BEARER_GRANT, &sa.assertion(kickoff_sender::push::auth::FCM_SCOPE, unix_now() - 7200)),
    )
    .await;
    assert_eq!((r.status, error(&r)["error"].as_str()), (400, Some("invalid_grant")), "an expired assertion");
    let r = token_call(
        &mut raw,
        form(kickoff_sender::push::auth::JWT_BEARER_GRANT, &sa.assertion(kickoff_sender::push::auth::FCM_SCOPE, unix_now())),
    )
    .await;
    assert_eq!(r.status, 200);
    let access = error(&r)["access_token"].as_str().unwrap().to_owned();
    assert_eq!(error(&r)["token_type"], "Bearer");

    let auth = vec![("authorization", format!("Bearer {access}")), ("content-type", "application/json".into())];
    let path = format!("/v1/projects/{}/messages:send", sa.project_id);
    let good = format!("c0ffee:APA91b{}", "x".repeat(140));
    let msg = |token: &str, extra: &str| format!(r#"{{"message":{{"token":"{token}","notification":{{"title":"t"}}{extra}}}}}"#);
    let code = |r: &RawResponse| {
        let v = error(r);
        (v["error"]["status"].as_str().unwrap_or("").to_owned(), v["error"]["details"][0]["errorCode"].as_str().unwrap_or("").to_owned())
    };
    let r = raw.send(Method::POST, &path, &auth, msg(&good, "").as_bytes()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(error(&r)["name"].as_str().unwrap().starts_with(&format!("projects/{}/messages/", sa.project_id)));

    let r = raw.send(Method::POST, &path, &without(auth.clone(), "authorization"), msg(&good, "").as_bytes()).await;
    assert_eq!((r.status, code(&r).0.as_str()), (401, "UNAUTHENTICATED"));
    let r = raw.send(Method::POST, &path, &with(auth.clone(), "authorization", "Bearer ya29.forged"), msg(&good, "").as_bytes()).await;
    assert_eq!(r.status, 401);
    let r = raw.send(Method::POST, "/v1/projects/someone-else/messages:send", &auth, msg(&good, "").as_bytes()).await;
    assert_eq!((r.status, code(&r).1.as_str()), (403, "SENDER_ID_MISMATCH"));
    let cases = [
        (msg("bad token!", ""), 400, "INVALID_ARGUMENT", "registration token"),
        (msg(&good, r#","data":{"n":12}"#), 400, "INVALID_ARGUMENT", "TYPE_STRING"),
        (msg(&good, r#","android":{"priority":"URGENT"}"#), 400, "INVALID_ARGUMENT", "android.priority"),
        (msg(&good, r#","android":{"ttl":"1h"}"#), 400, "INVALID_ARGUMENT", "android.ttl"),
        (msg(&good, &format!(r#","data":{{"x":"{}"}}"#, "y".repeat(4200))), 400, "INVALID_ARGUMENT", "too big"),
        ("{not json".to_owned(), 400, "INVALID_ARGUMENT", "Invalid JSON"),
        (msg(&dead, ""), 404, "NOT_FOUND", "not found"),
    ];
    for (body, status, grpc, says) in cases {
        let r = raw.send(Method::POST, &path, &auth, body.as_bytes()).await;
        let v = error(&r);
        assert_eq!((r.status, v["error"]["status"].as_str().unwrap_or("")), (status, grpc), "{body:.80}");
        assert!(v["error"]["message"].as_str().unwrap_or("").contains(says), "{v}");
    }
    let r = raw.send(Method::POST, &path, &auth, msg(&dead, "").as_bytes()).await;
    assert_eq!(code(&r).1, "UNREGISTERED");
}
both_engines!(the_gateway_enforces_fcm_and_oauth_rules_with_google_s_answers);

/// Starts the engine with `choice` on a generated audience, fires, and
/// returns the report with what the setup measured.
async fn fire(
    devices: u64,
    choice: &ProviderChoice,
    config: EngineConfig,
) -> (Arc<kickoff_sender::fanout::FireReport>, Setup, Arc<kickoff_sender::audience::Audience>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let audience = util::audience(dir.path(), devices, 21, 4);
    let campaign = util::campaign(|t| t);
    let setup = Setup::start(choice, &audience, &campaign.apns.topic).await.unwrap();
    let ledger = Arc::new(SqliteLedger::open(&dir.path().join("k.sqlite")).unwrap());
    let config = EngineConfig { reports_dir: Some(dir.path().join("reports")), ..config };
    let engine = kickoff_sender::fanout::Engine::start(
        Warm::new(audience.clone(), campaign).unwrap(),
        setup.provider.clone(),
        ledger,
        Arc::new(MemoryMetrics::new()),
        config,
    )
    .await
    .unwrap();
    let FireOutcome::Started(handle) = engine.fire("ana").unwrap() else { panic!("fresh ledger") };
    let report = handle.wait().await;
    engine.shutdown();
    (report, setup, audience, dir)
}

fn gateway(config: GatewayConfig, engine: SendEngine) -> ProviderChoice {
    ProviderChoice::Gateway { config, tls: true, connections: 2, engine }
}

async fn ten_thousand_devices_over_http2_exactly_once_with_dead_tokens_pruned(engine: SendEngine) {
    let config = GatewayConfig { unregistered_rate: 0.01, ..GatewayConfig::default() };
    let (report, setup, audience, _dir) =
        fire(10_000, &gateway(config, engine), EngineConfig { workers: 2, ..EngineConfig::default() }).await;
    let received = setup.received(&audience, report.delivered);
    assert_eq!(received.measured_at, "receiver");
    assert_eq!(received.duplicates, 0);
    assert_eq!(received.delivered, report.delivered);
    let dead = report.failed_by_reason.get("unregistered").copied().unwrap_or(0);
    assert!(dead > 40 && dead < 200, "about 1% of tokens are dead: {dead}");
    assert_eq!(received.delivered + dead, 10_000, "0 missing");
    assert_eq!(report.retries, 0, "dead tokens are never retried");
    // The prune report lists exactly the dead tokens, with their user ids.
    let csv = std::fs::read_to_string(report.prune_report.as_ref().expect("a prune report")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("user_id,platform,token,reason,time"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len() as u64, dead);
    let gw = setup.gateway.as_ref().unwrap();
    for row in &rows {
        let platform = Platform::parse(row[1]).unwrap();
        assert_eq!(row[3], "unregistered");
        assert!(row[0].starts_with('1'), "a user id: {row:?}");
        assert_eq!(gw.records().count(platform, row[2]), 0, "a pruned token was not delivered");
    }
}
both_engines!(ten_thousand_devices_over_http2_exactly_once_with_dead_tokens_pruned);

async fn throttling_with_retry_after_is_waited_out_and_everything_arrives(engine: SendEngine) {
    // Within the budget (100 + 10% of sends): about 7% of first attempts fail.
    let config = GatewayConfig { rate_429: 0.05, rate_503: 0.02, retry_after: Some(1), ..GatewayConfig::default() };
    // With 4 attempts, 2,000 devices x 0.07^4 would lose a device in about
    // one run in twenty; 8 attempts make "everything arrives" a certainty.
    let retry = kickoff_sender::fanout::RetryPolicy { max_attempts: 8, ..Default::default() };
    let started = std::time::Instant::now();
    let (report, setup, audience, _dir) =
        fire(2_000, &gateway(config, engine), EngineConfig { workers: 2, retry, ..EngineConfig::default() }).await;
    // 429s are paced (the lane slows to the provider's pace) and sent again
    // at no cost to the budget; 503s are budgeted retries.
    assert!(report.retries + report.throttled > 70, "{report:?}");
    assert!(report.throttled > 0 && report.retries > 0, "{report:?}");
    assert_eq!(report.budget_exhausted, 0, "{report:?}");
    assert_eq!(report.delivered, 2_000, "{:?}", report.failed_by_reason);
    let received = setup.received(&audience, report.delivered);
    assert_eq!((received.delivered, received.duplicates), (2_000, 0));
    // Never sooner than the provider asked: a lower bound, not a timing test.
    assert!(started.elapsed() >= Duration::from_secs(1));
}
both_engines!(throttling_with_retry_after_is_waited_out_and_everything_arrives);

async fn a_provider_outage_cannot_multiply_traffic_and_the_budget_is_reported(engine: SendEngine) {
    let config = GatewayConfig { rate_500: 1.0, ..GatewayConfig::default() };
    let (report, setup, _audience, _dir) =
        fire(3_000, &gateway(config, engine), EngineConfig { workers: 2, ..EngineConfig::default() }).await;
    assert_eq!(report.delivered, 0);
    assert_eq!(report.failed, 3_000);
    assert_eq!(report.retry_budget, 100 + 300, "a floor of 100 plus 10% of 3,000 sends");
    assert_eq!(report.retries, report.retry_budget, "the whole budget, no more");
    assert!(report.budget_exhausted >= 3_000 - report.retries - 100, "{report:?}");
    let requests = setup.gateway.as_ref().unwrap().records().stats().statuses[&500];
    assert_eq!(requests, 3_000 + report.retries, "first attempts plus the budgeted retries, nothing else");
    let csv = std::fs::read_to_string(report.undelivered_report.as_ref().expect("an undelivered report")).unwrap();
    assert_eq!(csv.lines().count() as u64, 1 + report.undelivered);
    assert_eq!(report.undelivered, 3_000);
}
both_engines!(a_provider_outage_cannot_multiply_traffic_and_the_budget_is_reported);

async fn an_authentication_failure_stops_the_provider_without_a_retry_loop(engine: SendEngine) {
    // Credentials for the gateway, but with a different APNs key than it trusts.
    let gw = Gateway::start_local(GatewayConfig::default(), true, TOPIC).unwrap();
    let dir = tempfile::tempdir().unwrap();
    gw.keys().write(dir.path()).unwrap();
    let impostor = ApnsKey::generate(&gw.keys().apns.key_id, &gw.keys().apns.team_id);
    std::fs::write(dir.path().join("apns-key.p8"), impostor.to_p8_pem()).unwrap();
    let mut config = PushConfig::load(&dir.path().join("kickoff.toml")).unwrap();
    config.pool.engine = Some(engine);
    let (report, _setup, audience, _d) =
        fire(2_000, &ProviderChoice::Http(config), EngineConfig { workers: 2, in_flight_per_worker: 50, ..EngineConfig::default() }).await;
    let ios: u64 = audience.shards().iter().map(|s| s.len(Platform::Ios) as u64).sum();
    let refused = gw.records().stats().statuses.get(&403).copied().unwrap_or(0);
    assert!((1..=2 * 50).contains(&refused), "only what was in flight hit the 403: {refused}");
    assert_eq!(report.failed_by_reason["auth"] + report.failed_by_reason["provider_stopped"], ios);
    assert_eq!(report.delivered, 2_000 - ios, "FCM carried on");
    assert_eq!(report.retries, 0);
    assert!(
        report.alerts.iter().any(|a| a.contains("APNs answered 403 InvalidProviderToken") && a.contains("stopped")),
        "{:?}",
        report.alerts
    );
}
both_engines!(an_authentication_failure_stops_the_provider_without_a_retry_loop);

async fn fcm_access_tokens_are_refreshed_before_they_expire(engine: SendEngine) {
    let config = GatewayConfig { token_lifetime: Duration::from_secs(2), ..GatewayConfig::default() };
    let gw = Gateway::start_local(config, false, TOPIC).unwrap();
    let providers = gw.providers(1, engine).await.unwrap();
    let mut session = kickoff_sender::push::Provider::session(&providers);
    session.warm().await.unwrap();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let campaign = util::campaign(|t| t);
    let payloads = kickoff_sender::campaign::Payloads::render(&campaign).unwrap();
    let apns = kickoff_sender::push::ApnsHeaders::for_fire(&campaign.apns, std::time::SystemTime::now());
    let token = format!("refresh:APA91b{}", "r".repeat(120));
    let req = kickoff_sender::push::PushRequest {
        device: kickoff_sender::push::DeviceRef { shard: 0, platform: Platform::Android, index: 0 },
        token: &token,
        payload: payloads.get(Platform::Android, 0),
        apns: &apns,
    };
    let answer = session.send_detailed(&req).await.unwrap();
    assert_eq!(
        answer.status,
        200,
        "the first token expired after 2 s; a refreshed one was used: {}",
        String::from_utf8_lossy(&answer.body)
    );
}
both_engines!(fcm_access_tokens_are_refreshed_before_they_expire);

async fn tls_needs_the_generated_ca(engine: SendEngine) {
    let gw = Gateway::start_local(GatewayConfig::default(), true, TOPIC).unwrap();
    let without_ca = client_tls(None).unwrap();
    let endpoint = Endpoint::parse(&gw.url(), &without_ca).unwrap().with_engine(engine);
    let err = Pool::open(Arc::new(endpoint), 1).await.unwrap_err().to_string();
    assert!(err.contains("TLS") && err.to_lowercase().contains("certificate"), "{err}");
    let raw = Raw::connect(&gw, engine).await;
    assert!(raw.pool.capacity() >= 1000, "the pool sees the gateway's stream limit");
}
both_engines!(tls_needs_the_generated_ca);

#[test]
fn secrets_never_reach_logs_errors_reports_or_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let o = util::cli(&["gateway", "keys", "--out", keys.to_str().unwrap(), "--listen", "127.0.0.1:1"]);
    assert!(o.status.success(), "{}", util::stderr(&o));
    // Secret material: key bodies (base64 lines of the PEM files).
    let mut secrets: Vec<String> = Vec::new();
    for file in ["apns-key.p8", "fcm-service-account.json"] {
        let text = std::fs::read_to_string(keys.join(file)).unwrap().replace("\\n", "\n");
        secrets.extend(
            text.lines().filter(|l| l.len() >= 40 && !l.contains("BEGIN") && !l.contains("END") && !l.contains('"')).map(str::to_owned),
        );
    }
    assert!(secrets.len() >= 5);
    // A whole fire over the real providers against a gateway, logging at trace.
    let aud_file = dir.path().join("a.csv");
    let aud = dir.path().join("aud");
    assert!(util::cli(&["audience", "generate", "--devices", "300", "--out", aud_file.to_str().unwrap()]).status.success());
    assert!(util::cli(&["audience", "compile", aud_file.to_str().unwrap(), "--out", aud.to_str().unwrap()]).status.success());
    let campaign = dir.path().join("c.toml");
    std::fs::write(&campaign, kickoff_sender::campaign::DEMO_CAMPAIGN).unwrap();
    let state = dir.path().join("k.sqlite");
    let reports = dir.path().join("reports");
    let out = std::process::Command::new(util::bin())
        .args(["fire", "--audience", aud.to_str().unwrap(), "--campaign", campaign.to_str().unwrap(), "--json"])
        .args(["--ledger", state.to_str().unwrap(), "--reports", reports.to_str().unwrap(), "--gateway-unregistered", "0.05"])
        .env("KICKOFF_LOG", "trace")
        .env("KICKOFF_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", util::stderr(&out));
    let mut seen = util::stdout(&out) + &util::stderr(&out);
    // A failing setup's error, too.
    let bad = util::cli(&["drill", "--devices", "10", "--provider", "http", "--config", keys.join("kickoff.toml").to_str().unwrap()]);
    seen += &util::stderr(&bad);
    // Everything written to disk: ledger, reports.
    let ledger = SqliteLedger::open(&state).unwrap();
    seen += &format!("{:?}", kickoff_sender::fanout::FireLedger::get(&ledger, "demo-kickoff").unwrap());
    for entry in walk(&reports) {
        seen += &std::fs::read_to_string(entry).unwrap();
    }
    for s in &secrets {
        assert!(!seen.contains(s.as_str()), "key material leaked: {s}");
    }
    assert!(!seen.contains("eyJ"), "a JWT (base64 JSON header) leaked");
    assert!(!seen.contains("ya29."), "an OAuth access token leaked");
    assert!(seen.contains("pruned.csv") || seen.contains("\"pruned\""), "the run was real: {seen:.400}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn gateway_keys_and_a_separate_gateway_process_serve_a_drill_through_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let mut gw = std::process::Command::new(util::bin())
        .args(["gateway", "--keys", keys.to_str().unwrap(), "--listen", "127.0.0.1:0", "--h2c"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(gw.stdout.as_mut().unwrap()), &mut line).unwrap();
    assert!(line.contains("listening on http://127.0.0.1:"), "{line}");
    let o =
        util::cli(&["drill", "--devices", "2000", "--json", "--provider", "http", "--config", keys.join("kickoff.toml").to_str().unwrap()]);
    let _ = std::process::Command::new("kill").args(["-INT", &gw.id().to_string()]).status();
    let stats = {
        let mut rest = String::new();
        std::io::Read::read_to_string(gw.stdout.as_mut().unwrap(), &mut rest).unwrap();
        gw.wait().unwrap();
        rest
    };
    assert!(o.status.success(), "{}", util::stderr(&o));
    let j: serde_json::Value = serde_json::from_str(util::stdout(&o).trim()).unwrap();
    assert_eq!((j["delivered"].as_u64(), j["measured_at"].as_str()), (Some(2000), Some("sender")));
    let s: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(s["deliveries"], 2000, "the gateway counted them");
    assert_eq!(s["duplicates"], 0);
    let unique: HashSet<u64> = [s["unique_tokens"].as_u64().unwrap()].into_iter().collect();
    assert!(unique.contains(&2000));
}

/// nghttpd (Debian's nghttp2-server, the reference implementation's server)
/// over TLS, answering each POST with its body.
struct Nghttpd {
    child: std::process::Child,
    log: std::thread::JoinHandle<String>,
    port: u16,
}

impl Nghttpd {
    fn start(keys: &std::path::Path) -> Self {
        use std::io::Read as _;
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut child = std::process::Command::new("nghttpd")
            .args(["--verbose", "--echo-upload", "--max-concurrent-streams=100", "--address=127.0.0.1", &port.to_string()])
            .arg(keys.join("server-key.pem"))
            .arg(keys.join("server.pem"))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("nghttpd (Debian's nghttp2-server; `make test` installs it)");
        let mut stdout = child.stdout.take().unwrap();
        let log = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text);
            text
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "nghttpd did not listen on {port}");
            std::thread::sleep(Duration::from_millis(25));
        }
        Self { child, log, port }
    }

    /// Stops it and counts the APNs requests its frame log shows, by token.
    fn requests(mut self) -> std::collections::HashMap<String, u32> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let log = self.log.join().unwrap();
        let mut counts = std::collections::HashMap::new();
        for line in log.lines().filter(|l| l.contains("recv (stream_id=")) {
            if let Some((_, token)) = line.split_once(":path: /3/device/") {
                *counts.entry(token.trim().to_owned()).or_default() += 1;
            }
        }
        counts
    }
}

/// Interop with the field's reference server: every iOS device's request
/// reaches nghttpd exactly once (counted from nghttpd's own frame log),
/// Android's reach the gateway.
async fn nghttpd_receives_every_apns_request_exactly_once(engine: SendEngine) {
    let gw = Gateway::start_local(GatewayConfig::default(), true, TOPIC).unwrap();
    let keys = tempfile::tempdir().unwrap();
    gw.keys().write(keys.path()).unwrap();
    let nghttpd = Nghttpd::start(keys.path());
    let mut config = PushConfig::load(&keys.path().join("kickoff.toml")).unwrap();
    config.apns.url = Some(format!("https://127.0.0.1:{}", nghttpd.port));
    config.pool.engine = Some(engine);
    let (report, _setup, audience, _dir) = fire(1_000, &ProviderChoice::Http(config), EngineConfig::default()).await;
    assert_eq!(report.delivered, 1_000, "{report:?}");
    let requests = nghttpd.requests();
    let mut buf = Vec::new();
    let mut ios = 0;
    for shard in audience.shards() {
        for i in 0..shard.len(Platform::Ios) {
            let token = shard.token_text(Platform::Ios, i, &mut buf);
            assert_eq!(requests.get(token), Some(&1), "token {token} reached nghttpd once");
            ios += 1;
        }
    }
    assert_eq!(requests.len(), ios, "nothing else reached nghttpd");
    let android: usize = audience.shards().iter().map(|s| s.len(Platform::Android)).sum();
    assert_eq!(gw.records().stats().deliveries as usize, android, "Android went to the gateway");
}
both_engines!(nghttpd_receives_every_apns_request_exactly_once);

/// A request with the values that differ by design between two fires
/// replaced by their shape: the gateway's address, the credentials (a fresh
/// JWT signature, a fresh OAuth token), the per-session `apns-id` and the
/// absolute expiration.
fn normalised(mut c: kickoff_sender::gateway::Captured) -> kickoff_sender::gateway::Captured {
    let uri: http::Uri = c.uri.parse().unwrap();
    c.uri = format!("{}://<gateway>{}", uri.scheme_str().unwrap(), uri.path_and_query().unwrap());
    for (name, value) in &mut c.headers {
        let text = String::from_utf8(value.clone()).unwrap();
        let shape = match name.as_str() {
            "authorization" => {
                assert!(text.starts_with("bearer ") || text.starts_with("Bearer "), "{text}");
                format!("{}<credential>", &text[..7])
            }
            "apns-id" => {
                assert_eq!((text.len(), text.matches('-').count()), (36, 4), "a UUID: {text}");
                "<uuid>".to_owned()
            }
            "apns-expiration" => {
                assert!(text.parse::<u64>().is_ok(), "{text}");
                "<unix time>".to_owned()
            }
            _ => continue,
        };
        *value = shape.into_bytes();
    }
    c.headers.sort();
    c
}

/// The differential test: the same fire through each engine reaches the
/// gateway as the same requests (method, URI, header list, body), decoded
/// by the gateway's own HTTP/2 stack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_engines_put_the_same_requests_on_the_wire() {
    let mut seen = Vec::new();
    for engine in [SendEngine::H2, SendEngine::Nghttp2] {
        let config = GatewayConfig { capture: 10_000, ..GatewayConfig::default() };
        let (report, setup, _audience, _dir) =
            fire(400, &gateway(config, engine), EngineConfig { workers: 1, ..EngineConfig::default() }).await;
        assert_eq!(report.delivered, 400, "{report:?}");
        let captured = setup.gateway.as_ref().unwrap().records().captured();
        let mut sends: Vec<_> = captured.into_iter().filter(|c| !c.uri.ends_with("/token")).map(normalised).collect();
        sends.sort();
        seen.push(sends);
    }
    assert_eq!(seen[0].len(), 400, "one request per device");
    assert!(seen[0].iter().any(|c| c.uri.contains("/3/device/")) && seen[0].iter().any(|c| c.uri.contains("/messages:send")));
    for (h2, ng) in seen[0].iter().zip(&seen[1]) {
        assert_eq!(h2, ng, "the same request through h2 and nghttp2");
    }
    assert_eq!(seen[0], seen[1]);
}
