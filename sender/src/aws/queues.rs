//! The two SQS queues.
//!
//! - The **fire queue** is FIFO: one message per campaign market, in the
//!   campaign's message group, deduplicated by campaign and market. Two
//!   presses within SQS's 5-minute window become one message; after it, the
//!   S3 ledger refuses the second press before anything is queued.
//! - The **batch queue** is a standard queue of [`BatchMsg`] ranges, sent ten
//!   to a call, received with long polling. A received batch stays invisible
//!   while its worker sends it (the worker extends the timeout); a worker
//!   that dies lets its batches reappear to the others, and a batch received
//!   too often moves to the dead-letter queue (the queue's redrive policy).

use std::time::{Duration, SystemTime};

use aws_sdk_sqs::types::{ChangeMessageVisibilityBatchRequestEntry, MessageSystemAttributeName, SendMessageBatchRequestEntry};
use sha2::Digest;

use super::{Aws, AwsError};
use crate::queue::{BatchMsg, FireMsg};

/// SQS's longest message delay.
pub const MAX_DELAY: Duration = Duration::from_secs(900);

/// A received message.
#[derive(Debug, Clone)]
pub struct Received<T> {
    /// The message.
    pub msg: T,
    /// To delete it or change its visibility.
    pub handle: String,
    /// How many times SQS has handed it out (1 the first time).
    pub receives: u32,
    /// When the receive that got it was asked for: its visibility timeout
    /// runs from no earlier.
    pub at: std::time::Instant,
}

/// The fire and batch queues.
#[derive(Debug, Clone)]
pub struct Queues {
    sqs: aws_sdk_sqs::Client,
    /// The FIFO fire queue's URL.
    pub fire_url: String,
    /// The batch queue's URL.
    pub batch_url: String,
}

/// SQS ids (group, deduplication): up to 128 characters of ASCII
/// punctuation and alphanumerics; longer ones are hashed.
fn sqs_id(s: &str) -> String {
    let clean: String = s.chars().map(|c| if c.is_ascii_graphic() { c } else { '_' }).collect();
    if clean.len() <= 128 {
        return clean;
    }
    let digest = sha2::Sha256::digest(s.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl Queues {
    /// Looks both queues up by name.
    pub async fn open(aws: &Aws) -> Result<Self, AwsError> {
        let url = |name: String| {
            let sqs = aws.sqs.clone();
            async move {
                let out = sqs.get_queue_url().queue_name(&name).send().await.map_err(|e| AwsError::call("SQS", "GetQueueUrl", e))?;
                out.queue_url().map(str::to_owned).ok_or_else(|| AwsError::Data(format!("SQS has no URL for queue {name}")))
            }
        };
        Ok(Self {
            sqs: aws.sqs.clone(),
            fire_url: url(aws.config.fire_queue.clone()).await?,
            batch_url: url(aws.config.batch_queue.clone()).await?,
        })
    }

    /// Queues one market's fire message.
    pub async fn send_fire(&self, msg: &FireMsg) -> Result<(), AwsError> {
        let market = msg.market.as_deref().unwrap_or("*");
        self.sqs
            .send_message()
            .queue_url(&self.fire_url)
            .message_group_id(sqs_id(&msg.campaign_id))
            .message_deduplication_id(sqs_id(&format!("{}/{market}", msg.campaign_id)))
            .message_body(serde_json::to_string(msg).expect("fire message serializes"))
            .send()
            .await
            .map_err(|e| AwsError::call("SQS", "SendMessage", e))?;
        Ok(())
    }

    /// Receives fire messages (long polling up to `wait`).
    pub async fn receive_fires(&self, wait: Duration, visibility: Duration) -> Result<Vec<Received<FireMsg>>, AwsError> {
        self.receive(&self.fire_url, 1, wait, visibility).await
    }

    /// Receives up to `max` (at most 10) batch messages.
    pub async fn receive_batches(&self, max: i32, wait: Duration, visibility: Duration) -> Result<Vec<Received<BatchMsg>>, AwsError> {
        self.receive(&self.batch_url, max.clamp(1, 10), wait, visibility).await
    }

    async fn receive<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        max: i32,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<Received<T>>, AwsError> {
        let at = std::time::Instant::now();
        let out = self
            .sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(max)
            .wait_time_seconds(wait.as_secs().min(20) as i32)
            .visibility_timeout(visibility.as_secs().max(1) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| AwsError::call("SQS", "ReceiveMessage", e))?;
        let mut got = Vec::new();
        for m in out.messages() {
            let (Some(body), Some(handle)) = (m.body(), m.receipt_handle()) else { continue };
            let receives = m
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            match serde_json::from_str(body) {
                Ok(msg) => got.push(Received { msg, handle: handle.to_owned(), receives, at }),
                // Left in the queue: after the redrive policy's receives it
                // moves to the dead-letter queue, where it can be read.
                Err(e) => {
                    tracing::error!(queue = url, message_id = m.message_id().unwrap_or("?"), error = %e, "a message Kickoff cannot read; left for the dead-letter queue");
                }
            }
        }
        Ok(got)
    }

    /// Queues a fire's batches, ten to a call. A batch due `offset` after the
    /// fire is delayed by what remains of it; one due later than the queue
    /// can delay (`max_delay`, SQS: 15 minutes) carries its time
    /// (`not_before_ms`) and is queued again by the notifier that receives
    /// it early. Returns the number queued.
    pub async fn send_batches(&self, batches: &[(Duration, BatchMsg)], fired_at: SystemTime, max_delay: Duration) -> Result<u64, AwsError> {
        let since_fire = SystemTime::now().duration_since(fired_at).unwrap_or_default();
        let fired_ms = crate::clock::ms(fired_at);
        let mut sent = 0u64;
        for chunk in batches.chunks(10) {
            let mut entries: Vec<SendMessageBatchRequestEntry> = chunk
                .iter()
                .enumerate()
                .map(|(i, (offset, b))| {
                    let wait = offset.saturating_sub(since_fire);
                    let mut b = b.clone();
                    if wait > max_delay {
                        b.not_before_ms = Some(fired_ms.saturating_add(offset.as_millis() as u64));
                    }
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(serde_json::to_string(&b).expect("batch serializes"))
                        // Whole seconds, rounded up: a batch never comes
                        // before its offset.
                        .delay_seconds(wait.as_secs_f64().ceil().min(max_delay.as_secs() as f64) as i32)
                        .build()
                        .expect("id and body are set")
                })
                .collect();
            // Entries SQS refuses for a transient reason are sent again; a
            // sender fault (a bug) fails the dispatch.
            for attempt in 0.. {
                let out = self
                    .sqs
                    .send_message_batch()
                    .queue_url(&self.batch_url)
                    .set_entries(Some(entries.clone()))
                    .send()
                    .await
                    .map_err(|e| AwsError::call("SQS", "SendMessageBatch", e))?;
                sent += out.successful().len() as u64;
                let failed = out.failed();
                if failed.is_empty() {
                    break;
                }
                if let Some(f) = failed.iter().find(|f| f.sender_fault()) {
                    return Err(AwsError::Data(format!(
                        "SQS SendMessageBatch refused a batch: {} {}",
                        f.code(),
                        f.message().unwrap_or("")
                    )));
                }
                if attempt >= 8 {
                    return Err(AwsError::Data(format!("SQS SendMessageBatch: {} entries still failing after retries", failed.len())));
                }
                let retry: Vec<&str> = failed.iter().map(|f| f.id()).collect();
                entries.retain(|e| retry.contains(&e.id()));
                tokio::time::sleep(Duration::from_millis(50 << attempt.min(5))).await;
            }
        }
        Ok(sent)
    }

    /// Keeps received batches invisible for another `visibility`.
    pub async fn extend(&self, handles: &[String], visibility: Duration) -> Result<(), AwsError> {
        let mut failed = Vec::new();
        for chunk in handles.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(h)
                        .visibility_timeout(visibility.as_secs() as i32)
                        .build()
                        .expect("fields are set")
                })
                .collect();
            let out = self
                .sqs
                .change_message_visibility_batch()
                .queue_url(&self.batch_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| AwsError::call("SQS", "ChangeMessageVisibilityBatch", e))?;
            // Every chunk is tried; the failures are reported together.
            if let Some(f) = out.failed().first() {
                failed.push(format!("{} of {} ({}: {})", out.failed().len(), chunk.len(), f.code(), f.message().unwrap_or_default()));
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(AwsError::Data(format!("SQS ChangeMessageVisibilityBatch: not extended: {}", failed.join("; "))))
        }
    }

    /// Keeps a fire message invisible for another `visibility` (the
    /// dispatcher, while it dispatches the market).
    pub async fn extend_fire(&self, handle: &str, visibility: Duration) -> Result<(), AwsError> {
        self.sqs
            .change_message_visibility()
            .queue_url(&self.fire_url)
            .receipt_handle(handle)
            .visibility_timeout(visibility.as_secs() as i32)
            .send()
            .await
            .map_err(|e| AwsError::call("SQS", "ChangeMessageVisibility", e))?;
        Ok(())
    }

    /// Lets a batch go back to the queue at once (a worker shutting down).
    pub async fn release(&self, handle: &str) -> Result<(), AwsError> {
        self.sqs
            .change_message_visibility()
            .queue_url(&self.batch_url)
            .receipt_handle(handle)
            .visibility_timeout(0)
            .send()
            .await
            .map_err(|e| AwsError::call("SQS", "ChangeMessageVisibility", e))?;
        Ok(())
    }

    /// Deletes a handled batch.
    pub async fn delete_batch(&self, handle: &str) -> Result<(), AwsError> {
        self.delete(&self.batch_url, handle).await
    }

    /// Deletes a handled fire message.
    pub async fn delete_fire(&self, handle: &str) -> Result<(), AwsError> {
        self.delete(&self.fire_url, handle).await
    }

    async fn delete(&self, url: &str, handle: &str) -> Result<(), AwsError> {
        self.sqs
            .delete_message()
            .queue_url(url)
            .receipt_handle(handle)
            .send()
            .await
            .map_err(|e| AwsError::call("SQS", "DeleteMessage", e))?;
        Ok(())
    }

    /// Messages in the batch queue now: visible, in flight and delayed
    /// (SQS's approximate counts).
    pub async fn batch_backlog(&self) -> Result<u64, AwsError> {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.batch_url)
            .attribute_names(A::ApproximateNumberOfMessages)
            .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(A::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(|e| AwsError::call("SQS", "GetQueueAttributes", e))?;
        let attributes = out.attributes();
        let count = |a: A| -> Result<u64, AwsError> {
            attributes.and_then(|m| m.get(&a)).map_or(Ok(0), |v| {
                v.parse().map_err(|_| AwsError::Data(format!("SQS GetQueueAttributes: {} is {v:?}, not a count", a.as_str())))
            })
        };
        Ok(count(A::ApproximateNumberOfMessages)?
            + count(A::ApproximateNumberOfMessagesNotVisible)?
            + count(A::ApproximateNumberOfMessagesDelayed)?)
    }
}
