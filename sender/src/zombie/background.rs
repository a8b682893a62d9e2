//! A task on a thread of its own (a current-thread tokio runtime), told to
//! stop and joined on drop: the flag server and the simulated clients run
//! this way, whatever runtime (or none) their owner has.

use std::future::Future;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

/// The running task; dropping it stops it and waits for its thread.
#[derive(Debug)]
pub(crate) struct Background {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Background {
    /// Runs `task` on a thread named `name`; `task` gets the receiver that
    /// completes when it is to stop.
    pub(crate) fn spawn<F, Fut>(name: &str, task: F) -> std::io::Result<Self>
    where
        F: FnOnce(oneshot::Receiver<()>) -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        let (tx, rx) = oneshot::channel();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let thread = std::thread::Builder::new().name(name.to_owned()).spawn(move || rt.block_on(task(rx)))?;
        Ok(Self { stop: Some(tx), thread: Some(thread) })
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
