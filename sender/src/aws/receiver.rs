//! A worker's batch receiver: long-polls the batch queue while the worker
//! has room, and hands what it gets to the serve loop. Messages received and
//! not yet taken are [`Unclaimed`]: the serve loop extends their visibility
//! with the batches it holds, so none reappears for another worker while it
//! waits its turn here (a slow S3 check of the batches ahead of it can take
//! seconds each).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use super::queues::{Queues, Received};
use crate::queue::BatchMsg;

/// Receipt handles of batches received and not yet taken.
#[derive(Debug, Clone, Default)]
pub(super) struct Unclaimed(Arc<Mutex<HashSet<String>>>);

impl Unclaimed {
    fn add(&self, handle: &str) {
        self.0.lock().expect("unclaimed lock").insert(handle.to_owned());
    }

    /// The serve loop took the batch of `handle`.
    pub(super) fn claim(&self, handle: &str) {
        self.0.lock().expect("unclaimed lock").remove(handle);
    }

    /// Every handle waiting.
    pub(super) fn handles(&self) -> Vec<String> {
        self.0.lock().expect("unclaimed lock").iter().cloned().collect()
    }
}

/// Receives batches while there is room, into `tx`. Never cancelled
/// mid-receive by the worker's other events, so no received message waits
/// out its visibility timeout unseen.
pub(super) fn spawn_receiver(
    queues: Queues,
    room: Arc<tokio::sync::Semaphore>,
    cfg: super::WorkerConfig,
    tx: mpsc::Sender<(Received<BatchMsg>, tokio::sync::OwnedSemaphorePermit)>,
    unclaimed: Unclaimed,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok(first) = room.clone().acquire_owned().await else { return };
            let mut permits = vec![first];
            while permits.len() < 10 {
                match room.clone().try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            // Long-poll only when idle; while sending, poll briefly so a
            // freed place is filled promptly.
            let idle = room.available_permits() + permits.len() >= cfg.max_batches;
            let wait = if idle { cfg.wait_time } else { Duration::from_secs(1).min(cfg.wait_time) };
            match queues.receive_batches(permits.len() as i32, wait, cfg.visibility_timeout).await {
                Ok(got) => {
                    for r in &got {
                        unclaimed.add(&r.handle);
                    }
                    for r in got {
                        let permit = permits.pop().expect("no more messages than places");
                        let handle = r.handle.clone();
                        if tx.send((r, permit)).await.is_err() {
                            unclaimed.claim(&handle);
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "receive");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    })
}
