//! The queues between the tiers: fire messages to the dispatcher, batch
//! messages to the notifiers.
//!
//! Messages are plain data (serializable), never pointers into memory, so the
//! same tiers run over in-process channels here and over SQS in AWS mode. A
//! batch message references a range of a shard; tokens are never copied into
//! it.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

use crate::audience::Platform;

/// "Send this campaign now", from the fire button to the dispatch tier.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FireMsg {
    /// The campaign.
    pub campaign_id: String,
    /// The campaign content the fire was armed with.
    pub campaign_hash: String,
    /// Who pressed fire.
    pub operator: String,
    /// When, in milliseconds since the UNIX epoch.
    pub fired_at_ms: u64,
    /// One market of the campaign (AWS mode: one fire message per market,
    /// deduplicated per campaign and market); `None`: every market.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub market: Option<String>,
}

/// A range of one shard's devices of one platform and market.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BatchMsg {
    /// The campaign.
    pub campaign_id: String,
    /// Shard index.
    pub shard: u32,
    /// Platform section.
    pub platform: Platform,
    /// Market index in the shard's market table.
    pub market: u16,
    /// First device.
    pub start: u32,
    /// One past the last device.
    pub end: u32,
    /// Not to be sent before this time (ms since the epoch): a market's
    /// send offset beyond what the queue can delay a message (SQS: 15
    /// minutes). A notifier that receives it early queues it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before_ms: Option<u64>,
}

impl BatchMsg {
    /// Number of devices.
    pub fn len(&self) -> u32 {
        self.end - self.start
    }

    /// True for an empty range.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// An in-process multi-producer, multi-consumer queue. Receiving is
/// cancel-safe: a receive abandoned in a `select!` takes nothing.
#[derive(Debug)]
pub struct EmbeddedQueue<T> {
    items: Mutex<VecDeque<T>>,
    ready: Notify,
    closed: AtomicBool,
}

impl<T> Default for EmbeddedQueue<T> {
    fn default() -> Self {
        Self { items: Mutex::new(VecDeque::new()), ready: Notify::new(), closed: AtomicBool::new(false) }
    }
}

impl<T> EmbeddedQueue<T> {
    /// An empty, open queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends messages and wakes receivers.
    pub fn send_all(&self, msgs: impl IntoIterator<Item = T>) {
        let mut items = self.items.lock().expect("queue lock");
        let before = items.len();
        items.extend(msgs);
        let added = items.len() - before;
        drop(items);
        if added == 1 {
            self.ready.notify_one();
        } else if added > 1 {
            self.ready.notify_waiters();
            // notify_waiters wakes only current waiters; leave a permit for
            // a receiver that is about to wait.
            self.ready.notify_one();
        }
    }

    /// Takes a message if one is waiting.
    pub fn try_recv(&self) -> Option<T> {
        self.items.lock().expect("queue lock").pop_front()
    }

    /// Waits for a message; `None` once the queue is closed and empty.
    pub async fn recv(&self) -> Option<T> {
        loop {
            let notified = self.ready.notified();
            if let Some(m) = self.try_recv() {
                return Some(m);
            }
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            notified.await;
        }
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.items.lock().expect("queue lock").len()
    }

    /// True when no message waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes the queue: receivers drain what is left, then get `None`.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.ready.notify_waiters();
        self.ready.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_message_is_received_once_by_competing_receivers() {
        let q = Arc::new(EmbeddedQueue::new());
        let receivers: Vec<_> = (0..4)
            .map(|_| {
                let q = q.clone();
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    while let Some(m) = q.recv().await {
                        got.push(m);
                    }
                    got
                })
            })
            .collect();
        for chunk in (0..10_000u32).collect::<Vec<_>>().chunks(7) {
            q.send_all(chunk.iter().copied());
            tokio::task::yield_now().await;
        }
        q.close();
        let mut all = Vec::new();
        for r in receivers {
            all.extend(r.await.unwrap());
        }
        all.sort_unstable();
        assert_eq!(all, (0..10_000).collect::<Vec<_>>());
    }
}
