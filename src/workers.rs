//! Bounded inference pools. Each worker is an OS thread that owns one model instance,
//! so blocking inference never runs on the async runtime and memory is bounded by the
//! worker count. Callers wait asynchronously; a full queue is refused, not buffered.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use crate::metrics::{JobOutcome, pool_job};
use crate::models::ModelError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("{0} workers are busy; try again shortly")]
    Overloaded(&'static str),
    #[error("{0} workers have stopped")]
    Stopped(&'static str),
}

type Job<M> = Box<dyn FnOnce(&mut M) -> JobOutcome + Send>;

pub struct WorkerPool<M> {
    name: &'static str,
    tx: SyncSender<Job<M>>,
}

impl<M> Clone for WorkerPool<M> {
    fn clone(&self) -> Self {
        Self { name: self.name, tx: self.tx.clone() }
    }
}

impl<M: 'static> WorkerPool<M> {
    /// Starts `workers` threads, each building its own model with `factory(index)`.
    /// Returns once every model has loaded, or with the first load error.
    pub fn spawn<F>(name: &'static str, workers: usize, queue_depth: usize, factory: F) -> Result<Self, ModelError>
    where
        F: Fn(usize) -> Result<M, ModelError> + Send + Sync + 'static,
    {
        let (tx, rx) = sync_channel::<Job<M>>(queue_depth);
        let rx = Arc::new(Mutex::new(rx));
        let factory = Arc::new(factory);
        let (ready_tx, ready_rx) = sync_channel::<Result<(), ModelError>>(workers);
        for index in 0..workers {
            let (rx, factory, ready) = (rx.clone(), factory.clone(), ready_tx.clone());
            std::thread::Builder::new()
                .name(format!("{name}-{index}"))
                .spawn(move || match factory(index) {
                    Ok(model) => {
                        let _ = ready.send(Ok(()));
                        drop(ready);
                        work(name, model, &rx);
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                    }
                })
                .map_err(|e| ModelError::load(name, e))?;
        }
        drop(ready_tx);
        for _ in 0..workers {
            ready_rx.recv().map_err(|_| ModelError::load(name, "worker exited during load"))??;
        }
        tracing::info!(pool = name, workers, queue_depth, "worker pool ready");
        Ok(Self { name, tx })
    }

    /// Runs `f` on a worker's model and waits for its result without blocking the runtime.
    /// Dropping the returned future before a worker takes the job cancels it: the job is
    /// discarded unrun (`pool_jobs_total{outcome="abandoned"}`).
    pub async fn run<R, F>(&self, f: F) -> Result<R, PoolError>
    where
        R: Send + 'static,
        F: FnOnce(&mut M) -> R + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job<M> = Box::new(move |model| {
            if tx.is_closed() {
                return JobOutcome::Abandoned;
            }
            let _ = tx.send(f(model));
            JobOutcome::Ran
        });
        self.tx.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => PoolError::Overloaded(self.name),
            TrySendError::Disconnected(_) => PoolError::Stopped(self.name),
        })?;
        rx.await.map_err(|_| PoolError::Stopped(self.name))
    }
}

fn work<M>(name: &'static str, mut model: M, rx: &Mutex<Receiver<Job<M>>>) {
    loop {
        // Hold the lock only while taking a job, so idle workers queue up on it.
        let job = match rx.lock() {
            Ok(guard) => guard.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        // A panicking job fails only its own caller (its reply channel drops).
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut model))).unwrap_or_else(|_| {
            tracing::error!(pool = name, "inference job panicked");
            JobOutcome::Panicked
        });
        pool_job(name, outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_and_refuses_when_full() {
        let pool = WorkerPool::spawn("test", 1, 1, |_| Ok(0u32)).unwrap();
        assert_eq!(
            pool.run(|m| {
                *m += 5;
                *m
            })
            .await,
            Ok(5)
        );
        assert_eq!(pool.run(|m| *m).await, Ok(5), "the worker keeps its model between jobs");

        // Block the worker, fill the queue of one, then the next job is refused.
        let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
        let blocker = tokio::spawn({
            let p = pool.clone();
            async move {
                p.run(move |_| {
                    let _ = hold_rx.recv();
                })
                .await
            }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let queued = tokio::spawn({
            let p = pool.clone();
            async move { p.run(|m| *m).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(pool.run(|m| *m).await, Err(PoolError::Overloaded("test")));
        hold_tx.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        assert_eq!(queued.await.unwrap(), Ok(5));
    }

    #[tokio::test]
    async fn a_job_whose_caller_left_never_runs() {
        let pool = WorkerPool::spawn("test-abandon", 1, 4, |_| Ok(())).unwrap();
        let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
        let blocker = tokio::spawn({
            let p = pool.clone();
            async move { p.run(move |_| hold_rx.recv().is_ok()).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let queued = tokio::spawn({
            let (p, ran) = (pool.clone(), ran.clone());
            async move { p.run(move |_| ran.store(true, std::sync::atomic::Ordering::SeqCst)).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        queued.abort(); // the caller goes away while its job waits in the queue
        let _ = queued.await;
        hold_tx.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        // The worker has passed the abandoned job once a later one comes back.
        pool.run(|_| ()).await.unwrap();
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst), "an abandoned job ran");
    }

    #[tokio::test]
    async fn survives_a_panicking_job() {
        let pool = WorkerPool::spawn("test", 1, 4, |_| Ok(1u8)).unwrap();
        assert_eq!(pool.run(|_| -> u8 { panic!("boom") }).await, Err(PoolError::Stopped("test")));
        assert_eq!(pool.run(|m| *m).await, Ok(1));
    }

    #[test]
    fn load_errors_surface() {
        let r =
            WorkerPool::<u8>::spawn("test", 2, 1, |i| if i == 1 { Err(ModelError::load("x", "nope")) } else { Ok(0) });
        assert!(matches!(r, Err(ModelError::Load { .. })));
    }
}
