//! A turn's cancellation, seen two ways: code on model threads polls a flag between steps
//! (tokens, sentences), and async code races a signal, so a stage still waiting in a
//! worker queue is dropped at once — its job then never runs (`WorkerPool::run`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;

#[derive(Clone, Default)]
pub struct Cancel {
    flag: Arc<AtomicBool>,
    signal: CancellationToken,
}

impl Cancel {
    pub fn cancel(&self) {
        self.flag.store(true, Ordering::Release);
        self.signal.cancel();
    }

    pub fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// The flag, for code running on model threads.
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.flag.clone()
    }

    /// `work`'s output, or `None` (with `work` dropped) if the turn is cancelled first.
    pub async fn unless_cancelled<F: Future>(&self, work: F) -> Option<F::Output> {
        tokio::select! {
            biased;
            _ = self.signal.cancelled() => None,
            out = work => Some(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cancelling_drops_the_waiting_work() {
        let cancel = Cancel::default();
        assert_eq!(cancel.unless_cancelled(async { 7 }).await, Some(7));
        let waiting = tokio::spawn({
            let cancel = cancel.clone();
            async move { cancel.unless_cancelled(std::future::pending::<()>()).await }
        });
        cancel.cancel();
        assert_eq!(waiting.await.ok(), Some(None));
        assert!(cancel.is_cancelled() && cancel.flag().load(Ordering::Acquire));
    }
}
