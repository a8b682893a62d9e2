//! Providers healthy before the arm: within the last [`PROVEN_WITHIN`], an
//! APNs provider token was accepted and an FCM OAuth token obtained (the
//! test-send proves both: a 200 from APNs means it took the provider token,
//! a 200 from FCM means the service account got a token it accepted), the
//! key files a send reads are readable now, and the APNs environment is
//! stated. A failure names the file or the provider's answer.

use std::time::Duration;

use crate::audience::Platform;
use crate::provider::ProviderFacts;
use crate::testsend::TestSendReport;

/// How recent the providers' proof must be at the arm.
pub const PROVEN_WITHIN: Duration = Duration::from_secs(10 * 60);

/// What a test-send proved about the providers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderProof {
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// Who sent it.
    pub by: String,
    /// Per platform reached: the provider's answer (`None`: accepted).
    pub answers: Vec<(Platform, Option<String>)>,
}

impl ProviderProof {
    /// What `report` proved.
    pub fn of(report: &TestSendReport) -> Self {
        let mut answers: Vec<(Platform, Option<String>)> = Vec::new();
        for r in &report.results {
            let error = (r.status != 200 || r.error.is_some())
                .then(|| format!("{}: {}", r.name, r.error.clone().unwrap_or_else(|| format!("HTTP {}", r.status))));
            match answers.iter_mut().find(|(p, _)| *p == r.platform) {
                Some((_, e)) => {
                    if e.is_none() {
                        *e = error;
                    }
                }
                None => answers.push((r.platform, error)),
            }
        }
        Self { at_ms: report.sent_at_ms, by: report.operator.clone(), answers }
    }
}

fn ago(ms: u64) -> String {
    let s = ms / 1000;
    if s < 120 { format!("{s} s ago") } else { format!("{} min ago", s / 60) }
}

/// Whether the providers are healthy for an arm at `now_ms`, and why.
pub fn check(proof: Option<&ProviderProof>, facts: &ProviderFacts, now_ms: u64) -> (bool, String) {
    let mut problems = Vec::new();
    let mut readable = Vec::new();
    for (what, path) in &facts.key_files {
        match std::fs::File::open(path) {
            Ok(_) => readable.push(path.display().to_string()),
            Err(e) => problems.push(format!("{what} {}: {e}", path.display())),
        }
    }
    let environment = format!("APNs environment: {}", facts.apns_environment);
    if matches!(facts.name, "null" | "model") {
        return (true, format!("the {} provider sends nothing: no tokens to prove; {environment}", facts.name));
    }
    let within_ms = PROVEN_WITHIN.as_millis() as u64;
    match proof {
        None => {
            problems.push("no test-send yet: run test-send (a 200 from APNs proves its provider token, from FCM its OAuth token)".into());
        }
        Some(p) if now_ms.saturating_sub(p.at_ms) > within_ms => problems.push(format!(
            "the providers were last proven by the test-send {} (by {}); the arm needs it within {} min: run test-send again",
            ago(now_ms.saturating_sub(p.at_ms)),
            p.by,
            within_ms / 60_000
        )),
        Some(p) => {
            for (platform, error) in &p.answers {
                if let Some(e) = error {
                    problems.push(format!("{} answered the test-send with {e}", provider_of(*platform)));
                }
            }
        }
    }
    if !problems.is_empty() {
        return (false, format!("{}; {environment}", problems.join("; ")));
    }
    let p = proof.expect("checked");
    let proven: Vec<&str> = p
        .answers
        .iter()
        .map(|(platform, _)| match platform {
            Platform::Ios => "APNs provider token accepted",
            Platform::Android => "FCM OAuth token obtained and accepted",
        })
        .collect();
    let keys = if readable.is_empty() { String::new() } else { format!("; key files readable: {}", readable.join(", ")) };
    (true, format!("{} by the test-send {}{keys}; {environment}", proven.join(", "), ago(now_ms.saturating_sub(p.at_ms))))
}

fn provider_of(p: Platform) -> &'static str {
    match p {
        Platform::Ios => "APNs",
        Platform::Android => "FCM",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testsend::RecipientResult;

    fn facts(key_files: Vec<(&'static str, std::path::PathBuf)>) -> ProviderFacts {
        ProviderFacts { name: "http", apns_environment: "production".into(), key_files }
    }

    fn report(android_status: u16) -> TestSendReport {
        let r = |name: &str, platform, status| RecipientResult {
            name: name.into(),
            platform,
            locale: "en".into(),
            message_locale: "en".into(),
            payload: "{}".into(),
            status,
            response_id: None,
            error: (status != 200).then(|| format!("{status} UNAUTHENTICATED")),
        };
        TestSendReport {
            campaign_id: "c".into(),
            campaign_hash: "h".into(),
            operator: "ana".into(),
            sent_at_ms: 1_000_000,
            results: vec![r("ana's iPhone", Platform::Ios, 200), r("ana's Pixel", Platform::Android, android_status)],
        }
    }

    #[test]
    fn a_fresh_accepted_test_send_with_readable_keys_passes_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("AuthKey.p8");
        std::fs::write(&key, "k").unwrap();
        let proof = ProviderProof::of(&report(200));
        let (ok, detail) = check(Some(&proof), &facts(vec![("APNs token key", key.clone())]), 1_000_000 + 90_000);
        assert!(ok, "{detail}");
        assert!(
            detail.contains("APNs provider token accepted, FCM OAuth token obtained and accepted by the test-send 90 s ago"),
            "{detail}"
        );
        assert!(detail.contains(&key.display().to_string()) && detail.contains("APNs environment: production"), "{detail}");
    }

    #[test]
    fn a_stale_proof_a_refused_token_or_an_unreadable_key_fails_naming_it() {
        let proof = ProviderProof::of(&report(200));
        let (ok, detail) = check(Some(&proof), &facts(Vec::new()), 1_000_000 + 11 * 60_000);
        assert!(!ok && detail.contains("11 min ago") && detail.contains("run test-send again"), "{detail}");
        let refused = ProviderProof::of(&report(401));
        let (ok, detail) = check(Some(&refused), &facts(Vec::new()), 1_000_001);
        assert!(!ok && detail.contains("FCM answered the test-send with ana's Pixel: 401 UNAUTHENTICATED"), "{detail}");
        let (ok, detail) = check(Some(&proof), &facts(vec![("FCM service account", "/nonexistent/sa.json".into())]), 1_000_001);
        assert!(!ok && detail.contains("FCM service account /nonexistent/sa.json: No such file"), "{detail}");
        let (ok, detail) = check(None, &facts(Vec::new()), 1_000_001);
        assert!(!ok && detail.contains("no test-send"), "{detail}");
    }
}
