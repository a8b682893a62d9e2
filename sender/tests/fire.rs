//! Fire: exactly once per device, once per campaign, abort, offsets.

use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use kickoff_sender::fanout::Engine;
use kickoff_sender::fanout::{
    Claim, EngineConfig, EngineError, FireClaim, FireLedger, FireOutcome, FireRecord, FireStatus, LedgerError, SqliteLedger, Warm,
};
use kickoff_sender::metrics::MemoryMetrics;
use kickoff_sender::push::{FailReason, ModelConfig, ModelProvider, NullProvider};

use crate::util::{self, rig, small_engine};

fn started(outcome: FireOutcome) -> kickoff_sender::fanout::FireHandle {
    match outcome {
        FireOutcome::Started(h) => h,
        FireOutcome::AlreadyFired(r) => panic!("unexpected: {r}"),
        other => panic!("not a fire: {other:?}"),
    }
}

#[tokio::test]
async fn fire_delivers_every_device_exactly_once() {
    let r = rig(20_000, util::campaign(|t| t), |t| NullProvider::new(Some(t)), small_engine()).await;
    let handle = started(r.engine.fire("ana").unwrap());
    let report = handle.wait().await;
    assert_eq!(report.targeted, 20_000);
    assert_eq!((report.delivered, report.failed, report.not_sent, report.in_doubt), (20_000, 0, 0, 0));
    let counts: Vec<u8> = util::devices(&r.audience).map(|d| r.tally.count(d)).collect();
    assert_eq!(counts.len(), 20_000);
    assert!(counts.iter().all(|c| *c == 1), "a device got {:?} notifications", counts.iter().find(|c| **c != 1));
    let stats = r.metrics.snapshot(handle.campaign_id());
    assert_eq!(stats.latency.count(), 20_000);
    let ledger = SqliteLedger::open(&r.dir.path().join("ledger.sqlite")).unwrap();
    let record = ledger.get(handle.campaign_id()).unwrap().unwrap();
    assert_eq!((record.status, record.operator.as_str()), (FireStatus::Completed, "ana"));
    let summary: serde_json::Value = serde_json::from_str(record.summary.as_deref().unwrap()).unwrap();
    assert_eq!(summary["delivered"], 20_000);
}

#[tokio::test]
async fn every_device_is_accounted_for_when_the_provider_fails_some() {
    let model = ModelConfig {
        rtt_min: Duration::from_millis(1),
        rtt_max: Duration::from_millis(3),
        errors: vec![(FailReason::Unregistered, 0.05), (FailReason::ServerError, 0.02)],
        seed: 3,
    };
    let config = EngineConfig { workers: 2, in_flight_per_worker: 200, ..EngineConfig::default() };
    let r = rig(10_000, util::campaign(|t| t), |t| ModelProvider::new(model, Some(t)), config).await;
    let report = started(r.engine.fire("ana").unwrap()).wait().await;
    let received = r.tally.summary();
    assert_eq!(received.duplicates, 0);
    assert_eq!(received.delivered, report.delivered, "the receiver and the sender disagree");
    assert_eq!(report.delivered + report.failed, 10_000);
    assert!(report.failed_by_reason["unregistered"] > 300, "{:?}", report.failed_by_reason);
    // Server errors are transient: retried (within the budget) and mostly
    // delivered on the next attempt.
    assert!(report.retries > 100, "{report:?}");
    assert!(report.failed_by_reason.get("server_error").copied().unwrap_or(0) < 20, "{:?}", report.failed_by_reason);
    assert_eq!(report.pruned, report.failed_by_reason["unregistered"]);
    assert_eq!(received.untouched, report.failed);
}

#[tokio::test]
async fn racing_presses_in_one_process_fire_once() {
    let r = rig(5_000, util::campaign(|t| t), |t| NullProvider::new(Some(t)), small_engine()).await;
    let barrier = Barrier::new(8);
    let outcomes: Vec<FireOutcome> = std::thread::scope(|s| {
        let presses: Vec<_> = (0..8)
            .map(|i| {
                let (engine, barrier) = (&r.engine, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    engine.fire(&format!("operator-{i}")).unwrap()
                })
            })
            .collect();
        presses.into_iter().map(|p| p.join().unwrap()).collect()
    });
    let mut winner = None;
    let mut refused = Vec::new();
    for o in outcomes {
        match o {
            FireOutcome::Started(h) => assert!(winner.replace(h).is_none(), "two presses fired"),
            FireOutcome::AlreadyFired(rec) => refused.push(rec),
            other => panic!("not a fire: {other:?}"),
        }
    }
    let report = winner.expect("one press fired").wait().await;
    assert_eq!(refused.len(), 7);
    assert!(refused.iter().all(|rec| rec.operator == report.operator), "every refusal names the winner");
    assert_eq!(r.tally.summary().delivered, 5_000);
    assert_eq!(r.tally.summary().duplicates, 0);
}

#[tokio::test]
async fn a_second_engine_on_the_same_ledger_sends_nothing() {
    let campaign = util::campaign(|t| t);
    let a = rig(3_000, campaign.clone(), |t| NullProvider::new(Some(t)), small_engine()).await;
    started(a.engine.fire("ana").unwrap()).wait().await;
    // A second "app instance": its own engine and tally, the same ledger file.
    let tally = Arc::new(kickoff_sender::push::DeliveryTally::for_audience(&a.audience));
    let ledger = Arc::new(SqliteLedger::open(&a.dir.path().join("ledger.sqlite")).unwrap());
    let warm = Warm::new(a.audience.clone(), campaign).unwrap();
    let b = Engine::start(warm, Arc::new(NullProvider::new(Some(tally.clone()))), ledger, Arc::new(MemoryMetrics::new()), small_engine())
        .await
        .unwrap();
    match b.fire("bo").unwrap() {
        FireOutcome::AlreadyFired(rec) => {
            assert_eq!(rec.operator, "ana");
            assert!(rec.to_string().contains("already fired at"), "{rec}");
        }
        FireOutcome::Started(_) => panic!("fired twice"),
        other => panic!("not a fire: {other:?}"),
    }
    assert_eq!(tally.summary().delivered, 0);
}

/// A ledger that cannot be written.
#[derive(Debug)]
struct BrokenLedger;

impl FireLedger for BrokenLedger {
    fn claim(&self, _: &FireClaim) -> Result<Claim, LedgerError> {
        Err(LedgerError { path: "broken".into(), message: "disk I/O error".into() })
    }
    fn finish(&self, _: &str, _: FireStatus, _: &str) -> Result<(), LedgerError> {
        Ok(())
    }
    fn get(&self, _: &str) -> Result<Option<FireRecord>, LedgerError> {
        Ok(None)
    }
}

#[tokio::test]
async fn no_ledger_answer_means_no_send() {
    let dir = tempfile::tempdir().unwrap();
    let audience = util::audience(dir.path(), 2_000, 5, 2);
    let tally = Arc::new(kickoff_sender::push::DeliveryTally::for_audience(&audience));
    let warm = Warm::new(audience, util::campaign(|t| t)).unwrap();
    let engine = Engine::start(
        warm,
        Arc::new(NullProvider::new(Some(tally.clone()))),
        Arc::new(BrokenLedger),
        Arc::new(MemoryMetrics::new()),
        small_engine(),
    )
    .await
    .unwrap();
    let err = engine.fire("ana").unwrap_err();
    assert!(matches!(err, EngineError::Ledger(_)) && err.to_string().contains("disk I/O error"), "{err}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(tally.summary().delivered, 0);
}

#[tokio::test]
async fn abort_mid_send_stops_and_the_report_matches_the_devices() {
    // 20,000 devices at 50 ms each, 100 in flight: ten seconds of sending.
    let model = ModelConfig { rtt_min: Duration::from_millis(50), rtt_max: Duration::from_millis(50), errors: vec![], seed: 1 };
    let config = EngineConfig { workers: 1, in_flight_per_worker: 100, ..EngineConfig::default() };
    let r = rig(20_000, util::campaign(|t| t), |t| ModelProvider::new(model, Some(t)), config).await;
    let handle = started(r.engine.fire("ana").unwrap());
    while handle.progress().delivered < 1_000 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(handle.abort("carol"));
    assert!(!handle.abort("dave"), "a second abort is a no-op");
    let report = handle.wait().await;
    assert!(report.aborted);
    assert_eq!(report.aborted_by.as_deref(), Some("carol"));
    assert!(report.handed_off < 20_000 && report.handed_off >= 1_000, "{report:?}");
    assert_eq!(report.handed_off + report.not_sent, report.targeted);
    assert_eq!(report.in_doubt, 0, "50 ms answers drain well within the timeout");

    // Per device: exactly the unsent ranges got nothing, everything else once.
    assert_eq!(report.unsent_ranges_total as usize, report.unsent_ranges.len());
    let unsent: HashSet<(u32, u8, u32)> =
        report.unsent_ranges.iter().flat_map(|u| (u.start..u.end).map(move |i| (u.shard, u.platform as u8, i))).collect();
    assert_eq!(unsent.len() as u64, report.not_sent);
    for d in util::devices(&r.audience) {
        let expected = u8::from(!unsent.contains(&(d.shard, d.platform as u8, d.index)));
        assert_eq!(r.tally.count(d), expected, "{d:?}");
    }
    assert_eq!(r.tally.summary().delivered, report.delivered);
}

#[tokio::test]
async fn abandoned_sends_after_an_abort_are_reported_in_doubt() {
    // A provider that never answers within the test.
    let model = ModelConfig { rtt_min: Duration::from_secs(3600), rtt_max: Duration::from_secs(3600), errors: vec![], seed: 1 };
    let config =
        EngineConfig { workers: 1, in_flight_per_worker: 300, drain_timeout: Duration::from_millis(200), ..EngineConfig::default() };
    let r = rig(2_000, util::campaign(|t| t), |t| ModelProvider::new(model, Some(t)), config).await;
    // Each provider has a window of its own: 300 to APNs, 300 to FCM.
    let window = 2 * 300;
    let handle = started(r.engine.fire("ana").unwrap());
    while handle.progress().handed_off < window {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    handle.abort("ana");
    let report = handle.wait().await;
    assert_eq!(report.handed_off, window);
    assert_eq!(report.in_doubt, window);
    assert_eq!(report.delivered, 0);
    assert_eq!(report.not_sent, 2_000 - window);
}

#[tokio::test]
async fn a_market_send_offset_holds_that_market_back() {
    let campaign = util::campaign(|t| t.replacen("code = \"BR\"", "code = \"BR\"\nsend_offset = \"1h\"", 1));
    let r = rig(6_000, campaign, |t| NullProvider::new(Some(t)), small_engine()).await;
    let br: u64 = r.audience.manifest().markets["BR"];
    assert!(br > 0);
    let handle = started(r.engine.fire("ana").unwrap());
    while handle.progress().delivered < 6_000 - br {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(handle.progress().delivered, 6_000 - br, "BR went before its offset");
    handle.abort("ana");
    let report = handle.wait().await;
    assert_eq!(report.not_sent, br);
    for u in &report.unsent_ranges {
        let shard = &r.audience.shards()[u.shard as usize];
        let run = shard.runs().iter().find(|run| run.platform == u.platform && run.start <= u.start && u.end <= run.end).unwrap();
        assert_eq!(shard.markets()[usize::from(run.market)], "BR");
    }
}

#[tokio::test]
async fn devices_outside_the_campaign_markets_are_excluded() {
    let campaign = util::campaign(|t| t.replacen("[[markets]]\ncode = \"JP\"\nlocales = [\"ja-JP\"]\n", "", 1));
    let r = rig(4_000, campaign, |t| NullProvider::new(Some(t)), small_engine()).await;
    let jp = r.audience.manifest().markets["JP"];
    assert_eq!(r.engine.warm().excluded().get("JP"), Some(&jp));
    let report = started(r.engine.fire("ana").unwrap()).wait().await;
    assert_eq!(report.targeted, 4_000 - jp);
    assert_eq!(r.tally.summary().delivered, 4_000 - jp);
}

#[test]
fn an_audience_in_none_of_the_campaign_markets_is_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let audience = util::audience(dir.path(), 500, 3, 1);
    let only_zz = util::campaign(|t| {
        let start = t.find("[[markets]]").unwrap();
        let end = t.find("[messages.").unwrap();
        format!("{}[[markets]]\ncode = \"ZZ\"\nlocales = [\"en-US\"]\n\n{}", &t[..start], &t[end..])
    });
    let err = Warm::new(audience, only_zz).unwrap_err().to_string();
    assert!(err.contains("no device of the audience is in a market") && err.contains("markets are ZZ"), "{err}");
    assert!(err.contains("US") && err.contains("BR"), "the audience's markets are named: {err}");
}
