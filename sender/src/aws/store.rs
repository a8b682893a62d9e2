//! The S3 layout (under the configured prefix):
//!
//! ```text
//! audience/manifest.json, audience/shard-NNNN.kshard   the compiled snapshot, checksummed per shard
//! campaign/campaign.toml, campaign/warm.json           what the workers warm, and its hash
//! flags.json                                           zombie flags, as client apps read them
//! fires/<fire id>/claim.json                           the durable ledger: If-None-Match: *
//! fires/<fire id>/result.json                          the final report
//! fires/<fire id>/dispatch/<market>.json               a market's batches, once queued
//! fires/<fire id>/done/<shard>-<platform>-<start>.json a finished batch (first writer wins)
//! fires/<fire id>/abort.json                           an abort, seen by every worker
//! workers/<worker id>.json                             each worker's warm status
//! ```

use std::path::Path;
use std::time::SystemTime;

use aws_sdk_s3::primitives::ByteStream;

use super::AwsError;
use crate::audience::store::MANIFEST;
use crate::fanout::{BatchDone, Claim, FireClaim, FireRecord, FireStatus};
use crate::queue::BatchMsg;

/// What the workers warm: written by the app's verify-warm step.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WarmSpec {
    /// The fire's key in the ledger (`fanout::FireScope::key`: the campaign id for a launch).
    pub fire_id: String,
    /// The campaign's content hash (as the runbook shows it).
    pub campaign_hash: String,
    /// Sent as a silent rehearsal.
    pub silent: bool,
    /// The audience checksum (manifest) the campaign was checked against.
    pub audience_checksum: String,
    /// The runbook's `[send] outage_timeout`, in seconds (unset: the
    /// worker's own setting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outage_timeout_s: Option<u64>,
}

/// A worker's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Fire queue to batch queue.
    Dispatch,
    /// Batch queue to the providers.
    Notify,
}

/// Where a worker stands, as its status object says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    /// Loading the warm spec's audience and campaign.
    Loading,
    /// Nothing to warm yet: no warm spec in S3.
    Waiting,
    /// Holds the spec's audience and campaign, verified.
    Warm,
    /// Could not warm (see its `error`).
    Error,
    /// Shut down.
    Stopped,
}

/// A worker's state, written at start, when warm, and every heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WorkerStatus {
    /// Worker id.
    pub worker: String,
    /// Roles.
    pub roles: Vec<Role>,
    /// Where it stands.
    pub state: WorkerState,
    /// The fire id it holds.
    pub fire_id: String,
    /// The campaign hash it holds.
    pub campaign_hash: String,
    /// Shards loaded and verified.
    pub shards: u32,
    /// Shards of the audience.
    pub shards_total: u32,
    /// What went wrong, in `error`.
    pub error: Option<String>,
    /// When written (ms since the epoch).
    pub at_ms: u64,
    /// Where it sends: `apns+fcm` (and the like) through the credentials of
    /// its `push_config`, or `null` (nowhere: asked for explicitly).
    #[serde(default)]
    pub provider: String,
    /// The batches it holds, as of `at_ms`.
    #[serde(default)]
    pub holding: Holding,
}

/// The batches a worker holds: received and not yet finished.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Holding {
    /// Batches held.
    pub batches: u32,
    /// Devices in them.
    pub devices: u64,
    /// Of those, handed to a provider so far.
    pub handed_off: u64,
}

impl Holding {
    /// Devices in the held batches not handed off yet: what the worker gives
    /// back if it is stopped now.
    pub fn left(&self) -> u64 {
        self.devices.saturating_sub(self.handed_off)
    }
}

/// A market's dispatch, written once all its batches are queued.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Dispatched {
    /// The market.
    pub market: String,
    /// Batch messages queued.
    pub batches: u64,
    /// Devices in them.
    pub devices: u64,
    /// The worker that dispatched.
    pub worker: String,
}

/// An abort.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AbortMark {
    /// Who.
    pub by: String,
    /// Why.
    #[serde(default)]
    pub why: String,
    /// When (ms since the epoch).
    pub at_ms: u64,
}

impl AbortMark {
    /// "who (why)", as reports name an abort.
    pub fn by_and_why(&self) -> String {
        if self.why.is_empty() { self.by.clone() } else { format!("{} ({})", self.by, self.why) }
    }
}

/// A finished batch, with the worker that sent it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DoneRecord {
    /// What happened to it.
    #[serde(flatten)]
    pub done: BatchDone,
    /// Who sent it.
    pub worker: String,
    /// A worker stopping (SIGTERM) sent part of the batch and queued the
    /// rest as this batch of its own: its devices are not "not sent", and
    /// the fire has one more batch to wait for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requeued: Option<BatchMsg>,
}

/// Who took a delivery of a batch first.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TakenMark {
    /// The worker.
    pub worker: String,
    /// When (ms since the epoch).
    pub at_ms: u64,
}

/// Kickoff's objects in one bucket and prefix.
#[derive(Debug, Clone)]
pub struct Store {
    s3: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
}

fn status_of<E>(e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

impl Store {
    /// The layout under `prefix` of `bucket`.
    pub fn new(s3: aws_sdk_s3::Client, bucket: String, prefix: String) -> Self {
        Self { s3, bucket, prefix }
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    fn key(&self, rel: &str) -> String {
        if self.prefix.is_empty() { rel.to_owned() } else { format!("{}/{rel}", self.prefix) }
    }

    /// `s3://bucket/key` of `rel`, for messages.
    pub fn url(&self, rel: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.key(rel))
    }

    /// Writes an object.
    pub async fn put(&self, rel: &str, body: Vec<u8>) -> Result<(), AwsError> {
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(self.key(rel))
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| AwsError::call("S3", "PutObject", e))?;
        Ok(())
    }

    /// Writes an object only if none exists (`If-None-Match: *`). Returns
    /// false if one did: the first writer wins, everyone else learns it.
    pub async fn put_new(&self, rel: &str, body: Vec<u8>) -> Result<bool, AwsError> {
        loop {
            let r = self
                .s3
                .put_object()
                .bucket(&self.bucket)
                .key(self.key(rel))
                .if_none_match("*")
                .body(ByteStream::from(body.clone()))
                .send()
                .await;
            match r {
                Ok(_) => return Ok(true),
                Err(e) if status_of(&e) == Some(412) => return Ok(false),
                // A concurrent conditional write to the same key: try again,
                // one of them has won by now.
                Err(e) if status_of(&e) == Some(409) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
                Err(e) => return Err(AwsError::call("S3", "PutObject", e)),
            }
        }
    }

    /// Reads an object; `None` if it does not exist.
    pub async fn get(&self, rel: &str) -> Result<Option<Vec<u8>>, AwsError> {
        match self.s3.get_object().bucket(&self.bucket).key(self.key(rel)).send().await {
            Ok(o) => {
                let body = o.body.collect().await.map_err(|e| AwsError::call("S3", "GetObject", e))?;
                Ok(Some(body.to_vec()))
            }
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(AwsError::call("S3", "GetObject", e)),
        }
    }

    /// Reads a JSON object.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, rel: &str) -> Result<Option<T>, AwsError> {
        match self.get(rel).await? {
            Some(b) => serde_json::from_slice(&b).map(Some).map_err(|e| AwsError::Data(format!("{}: {e}", self.url(rel)))),
            None => Ok(None),
        }
    }

    /// Keys under `rel_prefix`, relative to it.
    pub async fn list(&self, rel_prefix: &str) -> Result<Vec<String>, AwsError> {
        let full = self.key(rel_prefix);
        let mut out = Vec::new();
        let mut pages = self.s3.list_objects_v2().bucket(&self.bucket).prefix(&full).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::call("S3", "ListObjectsV2", e))?;
            for o in page.contents() {
                if let Some(k) = o.key() {
                    out.push(k.strip_prefix(&full).unwrap_or(k).to_owned());
                }
            }
        }
        Ok(out)
    }

    /// Uploads a compiled audience directory: every shard, then the
    /// manifest (a reader that finds the manifest finds every shard).
    pub async fn upload_audience(&self, dir: &Path) -> Result<u64, AwsError> {
        let manifest = dir.join(MANIFEST);
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| AwsError::Data(format!("{}: {e}", dir.display())))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "kshard"))
            .collect();
        files.sort();
        files.push(manifest);
        let mut bytes = 0;
        for f in files {
            let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
            let body = ByteStream::from_path(&f).await.map_err(|e| AwsError::Data(format!("{}: {e}", f.display())))?;
            bytes += f.metadata().map_or(0, |m| m.len());
            self.s3
                .put_object()
                .bucket(&self.bucket)
                .key(self.key(&format!("audience/{name}")))
                .body(body)
                .send()
                .await
                .map_err(|e| AwsError::call("S3", "PutObject", e))?;
        }
        Ok(bytes)
    }

    /// Downloads the audience into `dir` (replacing what is there). The
    /// shards are checked against the manifest when loaded.
    pub async fn download_audience(&self, dir: &Path) -> Result<u32, AwsError> {
        let io = |e: std::io::Error| AwsError::Data(format!("{}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(io)?;
        let names = self.list("audience/").await?;
        if !names.iter().any(|n| n == MANIFEST) {
            return Err(AwsError::Data(format!("no audience at {}: run the verify-warm step", self.url("audience/"))));
        }
        let mut shards = 0;
        for name in &names {
            if name.contains('/') {
                continue;
            }
            let body =
                self.get(&format!("audience/{name}")).await?.ok_or_else(|| AwsError::Data(format!("{} vanished", self.url(name))))?;
            let tmp = dir.join(format!(".{name}.part"));
            std::fs::write(&tmp, body).map_err(io)?;
            std::fs::rename(&tmp, dir.join(name)).map_err(io)?;
            shards += u32::from(name.ends_with(".kshard"));
        }
        Ok(shards)
    }

    /// Publishes what the workers warm: the campaign text, then the spec.
    pub async fn put_warm(&self, spec: &WarmSpec, campaign_text: &str) -> Result<(), AwsError> {
        self.put("campaign/campaign.toml", campaign_text.as_bytes().to_vec()).await?;
        self.put("campaign/warm.json", serde_json::to_vec_pretty(spec).expect("spec serializes")).await
    }

    /// What the workers should warm (the spec alone: one small read).
    pub async fn warm_spec(&self) -> Result<Option<WarmSpec>, AwsError> {
        self.get_json("campaign/warm.json").await
    }

    /// What the workers should warm, with the campaign text.
    pub async fn warm(&self) -> Result<Option<(WarmSpec, String)>, AwsError> {
        let Some(spec) = self.warm_spec().await? else { return Ok(None) };
        let text = self
            .get("campaign/campaign.toml")
            .await?
            .ok_or_else(|| AwsError::Data(format!("{} is missing", self.url("campaign/campaign.toml"))))?;
        let text = String::from_utf8(text).map_err(|e| AwsError::Data(format!("{}: {e}", self.url("campaign/campaign.toml"))))?;
        Ok(Some((spec, text)))
    }

    /// Claims the fire of `claim.campaign_id`: a conditional put that only
    /// the first caller, in any process, wins. After the FIFO queue's
    /// 5-minute deduplication window, this is what refuses a second fire.
    pub async fn claim(&self, claim: &FireClaim) -> Result<Claim, AwsError> {
        let record = FireRecord {
            campaign_id: claim.campaign_id.clone(),
            campaign_hash: claim.campaign_hash.clone(),
            operator: claim.operator.clone(),
            fired_at_ms: crate::fanout::ledger::ms(claim.at),
            host: crate::fanout::ledger::host_name(),
            pid: std::process::id(),
            status: FireStatus::Fired,
            finished_at_ms: None,
            summary: None,
            heartbeat_ms: None,
            warm_checksum: claim.warm_checksum.clone(),
        };
        let rel = fire_key(&claim.campaign_id, "claim.json");
        if self.put_new(&rel, serde_json::to_vec_pretty(&record).expect("record serializes")).await? {
            return Ok(Claim::Won(record));
        }
        let first = self
            .fire_record(&claim.campaign_id)
            .await?
            .ok_or_else(|| AwsError::Data(format!("{} refused the claim but cannot be read", self.url(&rel))))?;
        Ok(Claim::AlreadyFired(first))
    }

    /// The ledger's record of a fire, with its end if it ended.
    pub async fn fire_record(&self, fire_id: &str) -> Result<Option<FireRecord>, AwsError> {
        let Some(mut record) = self.get_json::<FireRecord>(&fire_key(fire_id, "claim.json")).await? else { return Ok(None) };
        if let Some(end) = self.get_json::<FireRecord>(&fire_key(fire_id, "result.json")).await? {
            record.status = end.status;
            record.finished_at_ms = end.finished_at_ms;
            record.summary = end.summary;
        }
        Ok(Some(record))
    }

    /// Records how a fire ended.
    pub async fn finish(&self, record: &FireRecord, status: FireStatus, summary_json: &str) -> Result<(), AwsError> {
        let mut end = record.clone();
        end.status = status;
        end.finished_at_ms = Some(crate::fanout::ledger::ms(SystemTime::now()));
        end.summary = Some(summary_json.to_owned());
        self.put(&fire_key(&record.campaign_id, "result.json"), serde_json::to_vec_pretty(&end).expect("record serializes")).await
    }

    /// A market's dispatch record.
    pub async fn dispatched(&self, fire_id: &str, market: &str) -> Result<Option<Dispatched>, AwsError> {
        self.get_json(&fire_key(fire_id, &format!("dispatch/{market}.json"))).await
    }

    /// Records a market's dispatch.
    pub async fn put_dispatched(&self, fire_id: &str, d: &Dispatched) -> Result<(), AwsError> {
        self.put(&fire_key(fire_id, &format!("dispatch/{}.json", d.market)), serde_json::to_vec(d).expect("serializes")).await
    }

    /// Records that every market's fire message was queued.
    pub async fn put_queued(&self, fire_id: &str, markets: &[&str]) -> Result<(), AwsError> {
        self.put(&fire_key(fire_id, "queued.json"), serde_json::to_vec(markets).expect("serializes")).await
    }

    /// True once every market's fire message was queued.
    pub async fn is_queued(&self, fire_id: &str) -> Result<bool, AwsError> {
        Ok(self.get_json::<Vec<String>>(&fire_key(fire_id, "queued.json")).await?.is_some())
    }

    /// Every market's dispatch record of a fire.
    pub async fn all_dispatched(&self, fire_id: &str) -> Result<Vec<Dispatched>, AwsError> {
        let mut out = Vec::new();
        for name in self.list(&fire_key(fire_id, "dispatch/")).await? {
            if let Some(d) = self.get_json(&fire_key(fire_id, &format!("dispatch/{name}"))).await? {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Records a finished batch; false if it was recorded before (a
    /// redelivered batch: the first record stays).
    pub async fn put_done(&self, fire_id: &str, done: &DoneRecord) -> Result<bool, AwsError> {
        self.put_new(&fire_key(fire_id, &format!("done/{}", batch_name(&done.done.msg))), serde_json::to_vec(done).expect("serializes"))
            .await
    }

    /// Marks a delivery of `msg` taken by `worker` (first writer wins):
    /// `None` when this worker has it, else the mark of the worker that
    /// took it first. SQS may hand a message to two receivers at once
    /// (standard queues deliver at least once); only the first sends it.
    pub async fn take(&self, fire_id: &str, msg: &BatchMsg, worker: &str) -> Result<Option<TakenMark>, AwsError> {
        let rel = fire_key(fire_id, &format!("taken/{}", batch_name(msg)));
        let mark = TakenMark { worker: worker.to_owned(), at_ms: crate::fanout::ledger::ms(SystemTime::now()) };
        if self.put_new(&rel, serde_json::to_vec(&mark).expect("serializes")).await? {
            return Ok(None);
        }
        Ok(self.get_json::<TakenMark>(&rel).await?.filter(|m| m.worker != worker))
    }

    /// Takes `msg` over from a worker that is gone.
    pub async fn retake(&self, fire_id: &str, msg: &BatchMsg, worker: &str) -> Result<(), AwsError> {
        let mark = TakenMark { worker: worker.to_owned(), at_ms: crate::fanout::ledger::ms(SystemTime::now()) };
        self.put(&fire_key(fire_id, &format!("taken/{}", batch_name(msg))), serde_json::to_vec(&mark).expect("serializes")).await
    }

    /// Gives a taken batch up (it goes back to the queue unfinished): the
    /// next worker takes it at once.
    pub async fn untake(&self, fire_id: &str, batch: &str) -> Result<(), AwsError> {
        let key = self.key(&fire_key(fire_id, &format!("taken/{batch}")));
        self.s3.delete_object().bucket(&self.bucket).key(key).send().await.map_err(|e| AwsError::call("S3", "DeleteObject", e))?;
        Ok(())
    }

    /// One worker's last status.
    pub async fn worker_status(&self, worker: &str) -> Result<Option<WorkerStatus>, AwsError> {
        self.get_json(&format!("workers/{worker}.json")).await
    }

    /// True if the batch was finished before.
    pub async fn is_done(&self, fire_id: &str, msg: &BatchMsg) -> Result<bool, AwsError> {
        let r =
            self.s3.head_object().bucket(&self.bucket).key(self.key(&fire_key(fire_id, &format!("done/{}", batch_name(msg))))).send().await;
        match r {
            Ok(_) => Ok(true),
            Err(e) if status_of(&e) == Some(404) => Ok(false),
            Err(e) => Err(AwsError::call("S3", "HeadObject", e)),
        }
    }

    /// Names of the finished batches of a fire.
    pub async fn done_names(&self, fire_id: &str) -> Result<Vec<String>, AwsError> {
        self.list(&fire_key(fire_id, "done/")).await
    }

    /// One finished batch.
    pub async fn done(&self, fire_id: &str, name: &str) -> Result<Option<DoneRecord>, AwsError> {
        self.get_json(&fire_key(fire_id, &format!("done/{name}"))).await
    }

    /// Records an abort (the first one stays).
    /// Records the abort of a fire, once: true if this call recorded it,
    /// false if an abort was recorded before (it stands).
    pub async fn put_abort(&self, fire_id: &str, by: &str, why: &str) -> Result<bool, AwsError> {
        let mark = AbortMark { by: by.to_owned(), why: why.to_owned(), at_ms: crate::fanout::ledger::ms(SystemTime::now()) };
        self.put_new(&fire_key(fire_id, "abort.json"), serde_json::to_vec(&mark).expect("serializes")).await
    }

    /// The abort of a fire, if any.
    pub async fn abort_mark(&self, fire_id: &str) -> Result<Option<AbortMark>, AwsError> {
        self.get_json(&fire_key(fire_id, "abort.json")).await
    }

    /// Writes a worker's status.
    pub async fn put_worker(&self, s: &WorkerStatus) -> Result<(), AwsError> {
        self.put(&format!("workers/{}.json", s.worker), serde_json::to_vec(s).expect("serializes")).await
    }

    /// Every worker's last status.
    pub async fn workers(&self) -> Result<Vec<WorkerStatus>, AwsError> {
        let mut out = Vec::new();
        for name in self.list("workers/").await? {
            if let Some(s) = self.get_json::<WorkerStatus>(&format!("workers/{name}")).await? {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// Writes the flags document client apps read.
    pub async fn put_flags(&self, doc: &crate::zombie::FlagsDocument) -> Result<(), AwsError> {
        self.put("flags.json", serde_json::to_vec_pretty(doc).expect("serializes")).await
    }

    /// The flags document, if written.
    pub async fn flags(&self) -> Result<Option<crate::zombie::FlagsDocument>, AwsError> {
        self.get_json("flags.json").await
    }
}

impl WarmSpec {
    /// The campaign of `text` as the workers send it: silent if the spec
    /// says so, checked against the spec's hash, under the fire id.
    pub fn campaign(&self, text: &str, source: &Path) -> Result<crate::campaign::Campaign, AwsError> {
        let mut campaign = crate::campaign::Campaign::parse(text, source).map_err(|e| AwsError::Data(e.to_string()))?;
        if self.silent {
            campaign = campaign.into_silent();
        }
        if campaign.hash() != self.campaign_hash {
            return Err(AwsError::Data(format!(
                "the campaign in {} has hash {}, the warm spec expects {}: verify-warm again",
                source.display(),
                &campaign.hash()[..12],
                &self.campaign_hash[..12.min(self.campaign_hash.len())]
            )));
        }
        Ok(campaign.with_id(self.fire_id.clone()))
    }
}

/// The key of a fire's object. Fire ids are campaign ids and event ids:
/// letters, digits, `-_.@`, checked by the campaign parser.
fn fire_key(fire_id: &str, rel: &str) -> String {
    format!("fires/{fire_id}/{rel}")
}

/// A batch's object name: unique per range of a shard.
pub fn batch_name(m: &BatchMsg) -> String {
    format!("{:05}-{}-{:010}.json", m.shard, m.platform.as_str(), m.start)
}
