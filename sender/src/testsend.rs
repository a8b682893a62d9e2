//! Test-send to self: the exact rendered payload of each test recipient's
//! locale, sent through the same providers as the blast, with each
//! provider's answer; and the operator's confirmation that it arrived, tied
//! to the campaign's content hash so that any change to the campaign voids it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};

use crate::audience::Platform;
use crate::campaign::{Campaign, Payloads};
use crate::provider::AnyProvider;
use crate::push::{ApnsHeaders, DeviceRef, Provider, PushRequest, Session};

/// What one test recipient got.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecipientResult {
    /// Who.
    pub name: String,
    /// Platform.
    pub platform: Platform,
    /// The recipient's locale.
    pub locale: String,
    /// The message locale it resolved to.
    pub message_locale: String,
    /// The body sent, exactly.
    pub payload: String,
    /// HTTP status of the provider's answer (0 if none).
    pub status: u16,
    /// `apns-id` or the FCM message name.
    pub response_id: Option<String>,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// A test-send.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TestSendReport {
    /// The campaign.
    pub campaign_id: String,
    /// The content it was sent with.
    pub campaign_hash: String,
    /// Who sent it.
    pub operator: String,
    /// When (ms since the epoch).
    pub sent_at_ms: u64,
    /// Per recipient.
    pub results: Vec<RecipientResult>,
}

impl TestSendReport {
    /// True when every provider accepted its message.
    pub fn all_accepted(&self) -> bool {
        !self.results.is_empty() && self.results.iter().all(|r| r.status == 200 && r.error.is_none())
    }
}

/// Test-send failures.
#[derive(Debug, thiserror::Error)]
pub enum TestSendError {
    /// The campaign lists no test recipients.
    #[error("campaign {0} lists no [[test_recipients]]")]
    NoRecipients(String),
    /// The provider cannot do a test-send (null, model).
    #[error("test-send needs the gateway or real providers, not {0}")]
    Provider(&'static str),
    /// A provider session could not be opened.
    #[error(transparent)]
    Session(#[from] crate::push::ProviderError),
    /// The state database failed.
    #[error("{path}: {message}", path = path.display())]
    Store {
        /// The database.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// Nothing to confirm for this version of the campaign.
    #[error("{0}")]
    Confirm(String),
}

use crate::clock::now_ms;

/// Sends each test recipient its message through `provider`.
pub async fn send(campaign: &Campaign, provider: &AnyProvider, operator: &str) -> Result<TestSendReport, TestSendError> {
    if campaign.test_recipients.is_empty() {
        return Err(TestSendError::NoRecipients(campaign.id.clone()));
    }
    let AnyProvider::Push(_) = provider else { return Err(TestSendError::Provider(provider.name())) };
    let payloads = Payloads::render(campaign).expect("a loaded campaign renders");
    let apns = ApnsHeaders::for_fire(&campaign.apns, SystemTime::now());
    let crate::provider::AnySession::Push(mut session) = provider.session() else { unreachable!("checked above") };
    let session = &mut *session;
    session.warm().await?;
    let mut results = Vec::new();
    for (i, r) in campaign.test_recipients.iter().enumerate() {
        let message_locale = campaign.resolve_locale(&r.locale).expect("validated when loaded").to_owned();
        let payload = payloads.get(r.platform, payloads.index_of(&message_locale).expect("every message is rendered"));
        let req = PushRequest {
            device: DeviceRef { shard: u32::MAX, platform: r.platform, index: i as u32 },
            token: &r.token,
            payload,
            apns: &apns,
        };
        let mut result = RecipientResult {
            name: r.name.clone(),
            platform: r.platform,
            locale: r.locale.clone(),
            message_locale,
            payload: payload.body_for(&r.token),
            status: 0,
            response_id: None,
            error: None,
        };
        match tokio::time::timeout(Duration::from_secs(30), session.send_detailed(&req)).await {
            Err(_) => result.error = Some("no answer within 30 s".into()),
            Ok(Err(e)) => result.error = Some(e.to_string()),
            Ok(Ok(raw)) => {
                result.status = raw.status;
                match r.platform {
                    Platform::Ios => {
                        result.response_id = raw.apns_id.as_ref().and_then(|v| v.to_str().ok()).map(str::to_owned);
                        if raw.status != 200 {
                            result.error = Some(format!("{} {}", raw.status, crate::push::apns::reason(&raw)));
                        }
                    }
                    Platform::Android => {
                        if raw.status == 200 {
                            let v: serde_json::Value = serde_json::from_slice(&raw.body).unwrap_or_default();
                            result.response_id = v["name"].as_str().map(str::to_owned);
                        } else {
                            let (status, code, message) = crate::push::fcm::error_of(&raw);
                            result.error = Some(format!("{} {status} {code} {message}", raw.status).trim().to_owned());
                        }
                    }
                }
            }
        }
        results.push(result);
    }
    Ok(TestSendReport {
        campaign_id: campaign.id.clone(),
        campaign_hash: campaign.hash().to_owned(),
        operator: operator.to_owned(),
        sent_at_ms: now_ms(),
        results,
    })
}

/// Where a campaign stands with its test-send.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TestSendStatus {
    /// Never test-sent.
    None,
    /// Sent for this exact content; waiting for the operator to confirm.
    Sent {
        /// When.
        sent_at_ms: u64,
        /// By whom.
        operator: String,
        /// Every provider accepted it.
        all_accepted: bool,
    },
    /// Sent and confirmed received, for this exact content.
    Confirmed {
        /// When it was confirmed.
        confirmed_at_ms: u64,
        /// Who confirmed.
        confirmed_by: String,
    },
    /// Sent (and maybe confirmed) for other content: the campaign changed.
    Voided {
        /// The hash the test-send was for.
        sent_hash: String,
        /// When it was sent.
        sent_at_ms: u64,
    },
}

/// Durable test-sends and confirmations (a SQLite table beside the ledger).
#[derive(Debug)]
pub struct TestSendStore {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl TestSendStore {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, TestSendError> {
        let conn = crate::sys::open_state_db(
            path,
            "CREATE TABLE IF NOT EXISTS test_sends (
                id              INTEGER PRIMARY KEY,
                campaign_id     TEXT NOT NULL,
                campaign_hash   TEXT NOT NULL,
                operator        TEXT NOT NULL,
                sent_at_ms      INTEGER NOT NULL,
                all_accepted    INTEGER NOT NULL,
                report          TEXT NOT NULL,
                confirmed_by    TEXT,
                confirmed_at_ms INTEGER
            );
            CREATE INDEX IF NOT EXISTS test_sends_campaign ON test_sends (campaign_id, id);",
        )
        .map_err(|e| TestSendError::Store { path: path.to_owned(), message: e.to_string() })?;
        Ok(Self { path: path.to_owned(), conn: Mutex::new(conn) })
    }

    fn err(&self, e: rusqlite::Error) -> TestSendError {
        TestSendError::Store { path: self.path.clone(), message: e.to_string() }
    }

    /// Records a test-send.
    pub fn record(&self, report: &TestSendReport) -> Result<(), TestSendError> {
        let json = serde_json::to_string(report).expect("report serializes");
        self.conn
            .lock()
            .expect("store lock")
            .execute(
                "INSERT INTO test_sends (campaign_id, campaign_hash, operator, sent_at_ms, all_accepted, report) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![report.campaign_id, report.campaign_hash, report.operator, report.sent_at_ms as i64, report.all_accepted(), json],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Records that `operator` saw the test notifications arrive. Only the
    /// latest test-send of the campaign counts, and only if it was for the
    /// campaign's current content and every provider accepted it.
    pub fn confirm(&self, campaign: &Campaign, operator: &str) -> Result<TestSendStatus, TestSendError> {
        let conn = self.conn.lock().expect("store lock");
        let latest = conn
            .query_row(
                "SELECT id, campaign_hash, sent_at_ms, all_accepted FROM test_sends WHERE campaign_id = ?1 ORDER BY id DESC LIMIT 1",
                params![campaign.id],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get::<_, bool>(3)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let Some((id, hash, sent_at, accepted)) = latest else {
            return Err(TestSendError::Confirm(format!("campaign {} has not been test-sent; run test-send first", campaign.id)));
        };
        if hash != campaign.hash() {
            return Err(TestSendError::Confirm(format!(
                "campaign {} changed since its test-send at {}: test-send again",
                campaign.id,
                humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(sent_at as u64))
            )));
        }
        if !accepted {
            return Err(TestSendError::Confirm(format!(
                "the last test-send of {} had failures; fix them and test-send again",
                campaign.id
            )));
        }
        let at = now_ms();
        conn.execute("UPDATE test_sends SET confirmed_by = ?2, confirmed_at_ms = ?3 WHERE id = ?1", params![id, operator, at as i64])
            .map_err(|e| self.err(e))?;
        Ok(TestSendStatus::Confirmed { confirmed_at_ms: at, confirmed_by: operator.to_owned() })
    }

    /// The latest test-send of any campaign: what the providers last proved
    /// (their tokens are the same whatever the campaign).
    pub fn latest(&self) -> Result<Option<TestSendReport>, TestSendError> {
        let conn = self.conn.lock().expect("store lock");
        let json: Option<String> = conn
            .query_row("SELECT report FROM test_sends ORDER BY id DESC LIMIT 1", [], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))?;
        json.map(|j| {
            serde_json::from_str(&j)
                .map_err(|e| TestSendError::Store { path: self.path.clone(), message: format!("a test-send report: {e}") })
        })
        .transpose()
    }

    /// The campaign's test-send status for its current content.
    pub fn status(&self, campaign: &Campaign) -> Result<TestSendStatus, TestSendError> {
        let conn = self.conn.lock().expect("store lock");
        let latest = conn
            .query_row(
                "SELECT campaign_hash, sent_at_ms, operator, all_accepted, confirmed_by, confirmed_at_ms FROM test_sends
                 WHERE campaign_id = ?1 ORDER BY id DESC LIMIT 1",
                params![campaign.id],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)? as u64,
                        r.get::<_, String>(2)?,
                        r.get::<_, bool>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, Option<i64>>(5)?,
                    ))
                },
            )
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(match latest {
            None => TestSendStatus::None,
            Some((hash, sent_at_ms, _, _, _, _)) if hash != campaign.hash() => TestSendStatus::Voided { sent_hash: hash, sent_at_ms },
            Some((_, _, _, _, Some(by), Some(at))) => TestSendStatus::Confirmed { confirmed_at_ms: at as u64, confirmed_by: by },
            Some((_, sent_at_ms, operator, all_accepted, _, _)) => TestSendStatus::Sent { sent_at_ms, operator, all_accepted },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(c: &Campaign, ok: bool) -> TestSendReport {
        TestSendReport {
            campaign_id: c.id.clone(),
            campaign_hash: c.hash().to_owned(),
            operator: "ana".into(),
            sent_at_ms: now_ms(),
            results: vec![RecipientResult {
                name: "me".into(),
                platform: Platform::Ios,
                locale: "en-US".into(),
                message_locale: "en-US".into(),
                payload: "{}".into(),
                status: if ok { 200 } else { 410 },
                response_id: None,
                error: (!ok).then(|| "410 Unregistered".into()),
            }],
        }
    }

    #[test]
    fn confirmation_is_tied_to_the_content_and_voided_by_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let store = TestSendStore::open(&dir.path().join("k.sqlite")).unwrap();
        let c = crate::campaign::demo();
        assert_eq!(store.status(&c).unwrap(), TestSendStatus::None);
        assert!(store.confirm(&c, "bo").unwrap_err().to_string().contains("has not been test-sent"));
        store.record(&report(&c, false)).unwrap();
        assert!(store.confirm(&c, "bo").unwrap_err().to_string().contains("had failures"));
        store.record(&report(&c, true)).unwrap();
        assert!(matches!(store.status(&c).unwrap(), TestSendStatus::Sent { all_accepted: true, .. }));
        assert!(matches!(store.confirm(&c, "bo").unwrap(), TestSendStatus::Confirmed { .. }));
        match store.status(&c).unwrap() {
            TestSendStatus::Confirmed { confirmed_by, .. } => assert_eq!(confirmed_by, "bo"),
            other => panic!("{other:?}"),
        }
        // Any change to the content voids it.
        let changed = c.into_silent();
        assert!(matches!(store.status(&changed).unwrap(), TestSendStatus::Voided { .. }));
        assert!(store.confirm(&changed, "bo").unwrap_err().to_string().contains("changed since its test-send"));
    }
}
