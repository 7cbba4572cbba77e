//! Bounded inference pools. Each worker is an OS thread that owns one model instance,
//! so blocking inference never runs on the async runtime and memory is bounded by the
//! worker count. Callers wait asynchronously; a full queue is refused, not buffered.
//!
//! Two lanes: live work (a technician's turn) and background work (a manual being
//! embedded). A worker always takes live work first, and background jobs wait in a lane
//! of their own, so an upload never makes a talking technician queue behind it for more
//! than the one background job already running.
//!
//! The live lane is shared fairly among tenants ([`fair`]), and admits a job only if the
//! pool's measured pace says it would start within `max_queue_wait_ms`: a backlog too
//! long to be worth waiting for is refused at once with a time to retry, never left to
//! stall. A tenant's flood meets that bound long before anyone else does.
//!
//! The pools share the cores: a worker that has taken a job waits at the process-wide
//! [`gate`] before running it, so another tenant's job in another pool is not slowed by
//! the flood running beside it.

pub mod fair;
pub mod gate;

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use self::fair::FairLane;
use crate::config::WorkersConfig;
use crate::metrics::{JobOutcome, pool_job, pool_queued};
use crate::models::ModelError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("{pool} workers are busy; try again in {:.1} s", retry_after.as_secs_f64())]
    Overloaded { pool: &'static str, retry_after: Duration },
    #[error("{0} workers have stopped")]
    Stopped(&'static str),
}

/// How much live work a pool admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueBounds {
    /// Jobs one tenant may have waiting.
    pub depth: usize,
    /// Longest expected wait before a job starts.
    pub max_wait: Duration,
}

impl QueueBounds {
    /// A bound on depth alone (tools and tests).
    pub fn depth(depth: usize) -> Self {
        Self { depth, max_wait: Duration::MAX }
    }
}

impl From<&WorkersConfig> for QueueBounds {
    fn from(w: &WorkersConfig) -> Self {
        Self { depth: w.queue_depth, max_wait: Duration::from_millis(w.max_queue_wait_ms) }
    }
}

/// A refused job's retry hint is never shorter than this.
pub const MIN_RETRY: Duration = Duration::from_millis(100);

struct Job<M> {
    /// Whom it is for: its place in the [`gate`].
    tenant: Arc<str>,
    run: Box<dyn FnOnce(&mut M) -> JobOutcome + Send>,
}

/// Which lane a job waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// A live turn: taken first; refused when `queue_depth` jobs already wait.
    Live,
    /// Bulk work (ingest): taken only when no live job waits; the caller waits for a
    /// place when `BACKGROUND_DEPTH` jobs already wait, instead of being refused.
    Background,
}

impl Priority {
    /// The lane's name in metrics.
    fn lane(self) -> &'static str {
        match self {
            Priority::Live => "live",
            Priority::Background => "background",
        }
    }
}

/// Background jobs waiting at most, per pool.
pub const BACKGROUND_DEPTH: usize = 2;

/// Live jobs queued or running in every pool of the process. The pools share the cores,
/// so bulk work outside them (an ingest's extraction, its writes, its next batch) waits
/// for a moment when this is 0.
static LIVE_JOBS: AtomicUsize = AtomicUsize::new(0);

/// Live jobs in flight in this process now.
pub fn live_jobs() -> usize {
    LIVE_JOBS.load(Ordering::Relaxed)
}

/// Counts one live job from its submission to its caller's end of waiting.
struct LiveJob;

impl LiveJob {
    fn enter() -> Self {
        LIVE_JOBS.fetch_add(1, Ordering::Relaxed);
        LiveJob
    }
}

impl Drop for LiveJob {
    fn drop(&mut self) {
        LIVE_JOBS.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Lanes<M> {
    live: FairLane<Job<M>>,
    background: VecDeque<Job<M>>,
    /// Workers still running; with none, submissions fail as stopped.
    workers: usize,
    /// Every handle to the pool is gone: workers finish what is queued and exit.
    closed: bool,
}

struct Queue<M> {
    name: &'static str,
    lanes: Mutex<Lanes<M>>,
    /// Signalled when a job arrives (workers wait on it).
    arrived: Condvar,
    bounds: QueueBounds,
    workers: usize,
    /// Moving average of a live job's run time, in µs (0 until one has run).
    pace_us: AtomicU64,
    /// Wakes background submitters waiting for a place.
    room: tokio::sync::Notify,
    /// Model threads one job runs on, as the process's gate counts them; 0: outside it.
    gate_threads: AtomicUsize,
}

pub struct WorkerPool<M> {
    name: &'static str,
    queue: Arc<Queue<M>>,
    /// Dropped with the last handle: closes the queue so the workers exit.
    _closer: Arc<Closer<M>>,
}

struct Closer<M>(Arc<Queue<M>>);

impl<M> Drop for Closer<M> {
    fn drop(&mut self) {
        if let Ok(mut lanes) = self.0.lanes.lock() {
            lanes.closed = true;
        }
        self.0.arrived.notify_all();
    }
}

impl<M> Clone for WorkerPool<M> {
    fn clone(&self) -> Self {
        Self { name: self.name, queue: self.queue.clone(), _closer: self._closer.clone() }
    }
}

impl<M: 'static> WorkerPool<M> {
    /// Starts `workers` threads, each building its own model with `factory(index)`.
    /// Returns once every model has loaded, or with the first load error.
    pub fn spawn<F>(name: &'static str, workers: usize, bounds: QueueBounds, factory: F) -> Result<Self, ModelError>
    where
        F: Fn(usize) -> Result<M, ModelError> + Send + Sync + 'static,
    {
        let queue = Arc::new(Queue {
            name,
            lanes: Mutex::new(Lanes { live: FairLane::default(), background: VecDeque::new(), workers, closed: false }),
            arrived: Condvar::new(),
            bounds,
            workers,
            pace_us: AtomicU64::new(0),
            room: tokio::sync::Notify::new(),
            gate_threads: AtomicUsize::new(0),
        });
        let factory = Arc::new(factory);
        let (ready_tx, ready_rx) = sync_channel::<Result<(), ModelError>>(workers);
        for index in 0..workers {
            let (queue, factory, ready) = (queue.clone(), factory.clone(), ready_tx.clone());
            std::thread::Builder::new()
                .name(format!("{name}-{index}"))
                .spawn(move || match factory(index) {
                    Ok(model) => {
                        let _ = ready.send(Ok(()));
                        drop(ready);
                        work(name, model, &queue);
                    }
                    Err(e) => {
                        queue.stopped();
                        let _ = ready.send(Err(e));
                    }
                })
                .map_err(|e| ModelError::load(name, e))?;
        }
        drop(ready_tx);
        for _ in 0..workers {
            ready_rx.recv().map_err(|_| ModelError::load(name, "worker exited during load"))??;
        }
        tracing::info!(
            pool = name,
            workers,
            depth = bounds.depth,
            max_wait_ms = bounds.max_wait.as_millis() as u64,
            "worker pool ready"
        );
        Ok(Self { name, _closer: Arc::new(Closer(queue.clone())), queue })
    }

    /// Makes each job enter the process's [`gate`] as `threads` model threads before it
    /// runs, sharing the cores with the other gated pools in tenant-fair order.
    pub fn gated(self, threads: usize) -> Self {
        self.queue.gate_threads.store(threads.max(1), Ordering::Relaxed);
        self
    }

    /// Runs `f` on a worker's model (live lane, in the backlog of the tenant the task
    /// works for: [`fair::on_behalf_of`]) and waits for its result without blocking
    /// the runtime. Dropping the returned future before a worker takes the job cancels it:
    /// the job is discarded unrun (`pool_jobs_total{outcome="abandoned"}`).
    pub async fn run<R, F>(&self, f: F) -> Result<R, PoolError>
    where
        R: Send + 'static,
        F: FnOnce(&mut M) -> R + Send + 'static,
    {
        self.run_as(Priority::Live, f).await
    }

    /// Runs `f` in the given lane (see [`Priority`]).
    pub async fn run_as<R, F>(&self, priority: Priority, f: F) -> Result<R, PoolError>
    where
        R: Send + 'static,
        F: FnOnce(&mut M) -> R + Send + 'static,
    {
        let _live = (priority == Priority::Live).then(LiveJob::enter);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let tenant = fair::current();
        let run = Box::new(move |model: &mut M| {
            if tx.is_closed() {
                return JobOutcome::Abandoned;
            }
            let _ = tx.send(f(model));
            JobOutcome::Ran
        });
        let mut job = Some(Job { tenant: tenant.clone(), run });
        loop {
            // Created before the attempt, so a place freed in between is not missed.
            let room = self.queue.room.notified();
            match self.queue.push(priority, &tenant, &mut job) {
                Ok(Admitted::Queued) => break,
                Ok(Admitted::Full { retry_after }) if priority == Priority::Live => {
                    tracing::debug!(pool = self.name, tenant = %tenant, retry_after_ms = retry_after.as_millis() as u64,
                        "live job refused: the backlog would wait too long");
                    return Err(PoolError::Overloaded { pool: self.name, retry_after });
                }
                Ok(Admitted::Full { .. }) => room.await,
                Err(()) => return Err(PoolError::Stopped(self.name)),
            }
        }
        rx.await.map_err(|_| PoolError::Stopped(self.name))
    }
}

/// Whether a job was queued.
enum Admitted {
    Queued,
    /// No room: its lane is at depth, or it would wait past `max_wait` (then retry in
    /// about the time the excess takes to drain).
    Full {
        retry_after: Duration,
    },
}

impl<M> Queue<M> {
    /// Queues the job (taking it) if its lane admits it.
    fn push(&self, priority: Priority, tenant: &Arc<str>, job: &mut Option<Job<M>>) -> Result<Admitted, ()> {
        let mut lanes = self.lanes.lock().map_err(|_| ())?;
        if lanes.workers == 0 {
            return Err(());
        }
        match priority {
            Priority::Live => {
                let place = lanes.live.place(tenant);
                let pace = Duration::from_micros(self.pace_us.load(Ordering::Relaxed));
                let ahead = u32::try_from(place.ahead).unwrap_or(u32::MAX);
                let wait = pace.checked_mul(ahead).unwrap_or(Duration::MAX) / self.workers.max(1) as u32;
                if place.own >= self.bounds.depth || wait > self.bounds.max_wait {
                    let retry_after = wait.saturating_sub(self.bounds.max_wait).max(pace).max(MIN_RETRY);
                    return Ok(Admitted::Full { retry_after });
                }
                if let Some(job) = job.take() {
                    lanes.live.push(tenant.clone(), job);
                    pool_queued(self.name, priority.lane(), 1);
                }
            }
            Priority::Background => {
                if lanes.background.len() >= BACKGROUND_DEPTH {
                    return Ok(Admitted::Full { retry_after: MIN_RETRY });
                }
                if let Some(job) = job.take() {
                    lanes.background.push_back(job);
                    pool_queued(self.name, priority.lane(), 1);
                }
            }
        }
        self.arrived.notify_one();
        Ok(Admitted::Queued)
    }

    /// The next job, live first (and whether it is live); `None` once the queue is gone.
    fn take(&self) -> Option<(Job<M>, bool)> {
        let mut lanes = self.lanes.lock().ok()?;
        loop {
            if let Some(job) = lanes.live.pop() {
                pool_queued(self.name, Priority::Live.lane(), -1);
                return Some((job, true));
            }
            if let Some(job) = lanes.background.pop_front() {
                pool_queued(self.name, Priority::Background.lane(), -1);
                self.room.notify_waiters();
                return Some((job, false));
            }
            if lanes.closed {
                return None;
            }
            lanes = self.arrived.wait(lanes).ok()?;
        }
    }

    fn stopped(&self) {
        if let Ok(mut lanes) = self.lanes.lock() {
            lanes.workers = lanes.workers.saturating_sub(1);
            if lanes.workers == 0 {
                // Callers waiting for these jobs see the pool as stopped.
                pool_queued(self.name, Priority::Live.lane(), -(lanes.live.len() as i64));
                pool_queued(self.name, Priority::Background.lane(), -(lanes.background.len() as i64));
                lanes.live.clear();
                lanes.background.clear();
            }
        }
        self.room.notify_waiters();
    }
}

fn work<M>(name: &'static str, mut model: M, queue: &Queue<M>) {
    loop {
        let Some((job, live)) = queue.take() else {
            queue.stopped();
            return;
        };
        let threads = queue.gate_threads.load(Ordering::Relaxed);
        let _pass = (threads > 0).then(|| gate::global().enter(&job.tenant, live, threads));
        let started = Instant::now();
        // A panicking job fails only its own caller (its reply channel drops).
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| (job.run)(&mut model))).unwrap_or_else(|_| {
            tracing::error!(pool = name, "inference job panicked");
            JobOutcome::Panicked
        });
        if live && outcome == JobOutcome::Ran {
            queue.paced(started.elapsed());
        }
        pool_job(name, outcome);
    }
}

impl<M> Queue<M> {
    /// Folds one live job's run time into the pace (an average over the last ~8 jobs).
    fn paced(&self, took: Duration) {
        let took = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        let _ = self.pace_us.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |pace| {
            Some(if pace == 0 { took } else { (pace * 7 + took) / 8 })
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pace_of<M>(pool: &WorkerPool<M>) -> Duration {
        Duration::from_micros(pool.queue.pace_us.load(Ordering::Relaxed))
    }

    #[tokio::test]
    async fn a_backlog_too_long_to_wait_for_is_refused_and_other_tenants_still_get_in() {
        let bounds = QueueBounds { depth: 100, max_wait: Duration::from_millis(100) };
        let pool = WorkerPool::spawn("test-wait", 1, bounds, |_| Ok(Vec::<&'static str>::new())).unwrap();
        pool.queue.paced(Duration::from_millis(40)); // as if one job had taken 40 ms
        let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
        let blocker = tokio::spawn({
            let p = pool.clone();
            fair::on_behalf_of("a", async move { p.run(move |_| hold_rx.recv().is_ok()).await })
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let submit = |tenant: &'static str| {
            let p = pool.clone();
            tokio::spawn(fair::on_behalf_of(tenant, async move { p.run(move |log| log.push(tenant)).await }))
        };
        // Tenant a queues 3 jobs: 0, 40 and 80 ms of expected wait; a 4th would wait 120 ms.
        let queued: Vec<_> = (0..3).map(|_| submit("a")).collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let refused = fair::on_behalf_of("a", pool.run(|_| ())).await;
        let Err(PoolError::Overloaded { retry_after, .. }) = refused else { panic!("{refused:?}") };
        assert_eq!(retry_after, MIN_RETRY, "the excess (20 ms) and the pace (40 ms) are under the floor");
        // Tenant b's job would be taken next: admitted, and run before a's backlog.
        let b = submit("b");
        tokio::time::sleep(Duration::from_millis(50)).await;
        hold_tx.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        b.await.unwrap().expect("b was admitted");
        for q in queued {
            q.await.unwrap().expect("a's admitted jobs run");
        }
        assert_eq!(pool.run(|log| log.clone()).await.unwrap(), ["b", "a", "a", "a"]);
    }

    #[tokio::test]
    async fn the_queued_gauge_counts_jobs_in_while_they_wait_and_out_when_taken() {
        const NAME: &str = "queued-gauge-test";
        let waiting = || crate::metrics::pool_queued_now(NAME, "live");
        let pool = WorkerPool::spawn(NAME, 1, QueueBounds::depth(8), |_| Ok(())).unwrap();
        let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
        let (taken_tx, taken_rx) = tokio::sync::oneshot::channel::<()>();
        let blocker = tokio::spawn({
            let p = pool.clone();
            async move {
                p.run(move |_| {
                    let _ = taken_tx.send(());
                    let _ = hold_rx.recv();
                })
                .await
            }
        });
        taken_rx.await.unwrap();
        assert_eq!(waiting(), 0, "the job a worker holds no longer waits");
        let queued: Vec<_> = (0..3)
            .map(|_| {
                let p = pool.clone();
                tokio::spawn(async move { p.run(|_| ()).await })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        while waiting() < 3 {
            assert!(Instant::now() < deadline, "three jobs never counted: {}", waiting());
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(waiting(), 3);
        hold_tx.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        for q in queued {
            q.await.unwrap().unwrap();
        }
        assert_eq!(waiting(), 0, "every job taken is counted out");
    }

    #[tokio::test]
    async fn runs_jobs_and_refuses_when_full() {
        let pool = WorkerPool::spawn("test", 1, QueueBounds::depth(1), |_| Ok(0u32)).unwrap();
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
        assert_eq!(
            pool.run(|m| *m).await,
            Err(PoolError::Overloaded { pool: "test", retry_after: MIN_RETRY.max(pace_of(&pool)) })
        );
        hold_tx.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        assert_eq!(queued.await.unwrap(), Ok(5));
    }

    #[tokio::test]
    async fn a_job_whose_caller_left_never_runs() {
        let pool = WorkerPool::spawn("test-abandon", 1, QueueBounds::depth(4), |_| Ok(())).unwrap();
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
    async fn live_jobs_overtake_waiting_background_jobs() {
        let pool =
            WorkerPool::spawn("test-lanes", 1, QueueBounds::depth(8), |_| Ok(Vec::<&'static str>::new())).unwrap();
        let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
        let blocker = tokio::spawn({
            let p = pool.clone();
            async move { p.run_as(Priority::Background, move |_| hold_rx.recv().is_ok()).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        // While the worker is busy: two background jobs wait (the lane's depth), a third
        // waits for a place, then a live job arrives last.
        let background: Vec<_> = (0..3)
            .map(|_| {
                let p = pool.clone();
                tokio::spawn(async move { p.run_as(Priority::Background, |log| log.push("background")).await })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let live = tokio::spawn({
            let p = pool.clone();
            async move { p.run(|log| log.push("live")).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        hold_tx.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        live.await.unwrap().unwrap();
        for b in background {
            b.await.unwrap().unwrap();
        }
        let log = pool.run(|log| log.clone()).await.unwrap();
        assert_eq!(log, vec!["live", "background", "background", "background"], "the live job went first");
    }

    #[tokio::test]
    async fn survives_a_panicking_job() {
        let pool = WorkerPool::spawn("test", 1, QueueBounds::depth(4), |_| Ok(1u8)).unwrap();
        assert_eq!(pool.run(|_| -> u8 { panic!("boom") }).await, Err(PoolError::Stopped("test")));
        assert_eq!(pool.run(|m| *m).await, Ok(1));
    }

    #[test]
    fn load_errors_surface() {
        let r = WorkerPool::<u8>::spawn("test", 2, QueueBounds::depth(1), |i| {
            if i == 1 { Err(ModelError::load("x", "nope")) } else { Ok(0) }
        });
        assert!(matches!(r, Err(ModelError::Load { .. })));
    }
}
