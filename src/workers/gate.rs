//! The cores, shared by every pool. Each pool queues its own jobs fairly, but the pools
//! run side by side on the same cores: with one tenant flooding speech, the speech worker
//! (two ONNX threads) kept both cores busy and another tenant's transcription ran at a
//! third of its speed beside it. A worker holding a job therefore also enters this gate,
//! which lets model threads run at once only up to the machine's cores, and admits the
//! waiting workers in tenant-fair order ([`FairLane`]): the other tenant's transcription
//! waits for the one job running, not for the flood, and then runs at full speed.
//!
//! Live jobs go before background ones, as in each pool. Pools whose jobs hold a worker
//! for a whole answer (the local language model, while its sentences are spoken) stay
//! outside: gating them would make the speech wait for the whole answer.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex};

use super::fair::FairLane;

static GATE: LazyLock<Gate> = LazyLock::new(|| Gate::new(cores()));

/// Threads the machine runs at once.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The process's gate.
pub fn global() -> &'static Gate {
    &GATE
}

pub struct Gate {
    state: Mutex<State>,
    changed: Condvar,
    /// Model threads that may run at once.
    capacity: AtomicUsize,
}

struct State {
    busy: usize,
    live: FairLane<u64>,
    background: VecDeque<u64>,
    tickets: u64,
}

/// Leave to run `threads` model threads; they count as busy until it is dropped.
#[must_use = "the job runs while the pass is held"]
pub struct Pass<'g> {
    gate: &'g Gate,
    threads: usize,
}

impl Gate {
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State { busy: 0, live: FairLane::default(), background: VecDeque::new(), tickets: 0 }),
            changed: Condvar::new(),
            capacity: AtomicUsize::new(capacity.max(1)),
        }
    }

    /// Sets the model threads that may run at once (`workers.inference_threads`).
    pub fn set_capacity(&self, threads: usize) {
        self.capacity.store(threads.max(1), Ordering::Relaxed);
        self.changed.notify_all();
    }

    fn capacity(&self) -> usize {
        self.capacity.load(Ordering::Relaxed)
    }

    /// Blocks the calling worker until a job of `tenant` using `threads` threads may run:
    /// when it is the next waiter (fair order, live before background) and its threads
    /// fit. A job wanting more than the whole gate runs alone.
    pub fn enter(&self, tenant: &Arc<str>, live: bool, threads: usize) -> Pass<'_> {
        let Ok(mut state) = self.state.lock() else {
            // A poisoned gate admits everyone rather than stalling every pool.
            return Pass { gate: self, threads: 0 };
        };
        let ticket = state.tickets;
        state.tickets += 1;
        if live {
            state.live.push(tenant.clone(), ticket);
        } else {
            state.background.push_back(ticket);
        }
        loop {
            let capacity = self.capacity();
            let threads = threads.clamp(1, capacity);
            let next = state.live.peek().or(state.background.front()).copied();
            if next == Some(ticket) && state.busy + threads <= capacity {
                if live {
                    state.live.pop();
                } else {
                    state.background.pop_front();
                }
                state.busy += threads;
                // The next waiter may fit beside this job.
                self.changed.notify_all();
                return Pass { gate: self, threads };
            }
            state = match self.changed.wait(state) {
                Ok(state) => state,
                Err(_) => return Pass { gate: self, threads: 0 },
            };
        }
    }

    /// Model threads running now.
    #[cfg(test)]
    fn busy(&self) -> usize {
        self.state.lock().map_or(0, |s| s.busy)
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        if self.threads == 0 {
            return;
        }
        if let Ok(mut state) = self.gate.state.lock() {
            state.busy -= self.threads;
        }
        self.gate.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Enters on a thread of its own and reports `name` once admitted; holds the pass
    /// until told to leave.
    fn worker(
        gate: &'static Gate,
        tenant: &str,
        live: bool,
        threads: usize,
        name: &'static str,
        admitted: mpsc::Sender<&'static str>,
    ) -> mpsc::Sender<()> {
        let (leave, left) = mpsc::channel::<()>();
        let tenant: Arc<str> = Arc::from(tenant);
        std::thread::spawn(move || {
            let _pass = gate.enter(&tenant, live, threads);
            admitted.send(name).unwrap();
            let _ = left.recv();
        });
        leave
    }

    fn wait_for_waiters(gate: &Gate, n: usize) {
        while gate.state.lock().map(|s| s.live.len() + s.background.len()).unwrap() < n {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_waiting_tenant_goes_before_the_flood_and_background_goes_last() {
        let gate: &'static Gate = Box::leak(Box::new(Gate::new(2)));
        let (tx, admitted) = mpsc::channel();
        // A's speech job holds both threads.
        let running = worker(gate, "a", true, 2, "a-speech", tx.clone());
        assert_eq!(admitted.recv().unwrap(), "a-speech");
        let mut leave = vec![worker(gate, "", false, 1, "ingest", tx.clone())];
        wait_for_waiters(gate, 1);
        leave.push(worker(gate, "a", true, 2, "a-next", tx.clone()));
        wait_for_waiters(gate, 2);
        leave.push(worker(gate, "b", true, 2, "b-stt", tx.clone()));
        wait_for_waiters(gate, 3);
        assert_eq!(gate.busy(), 2);
        drop(running);
        let mut order = Vec::new();
        for _ in 0..3 {
            order.push(admitted.recv().unwrap());
            // Each holds the whole gate: let it go so the next one enters.
            let i = ["ingest", "a-next", "b-stt"].iter().position(|n| Some(n) == order.last()).unwrap();
            leave[i].send(()).unwrap();
        }
        assert_eq!(order, ["b-stt", "a-next", "ingest"]);
    }

    #[test]
    fn jobs_that_fit_side_by_side_run_together() {
        let gate: &'static Gate = Box::leak(Box::new(Gate::new(2)));
        let (tx, admitted) = mpsc::channel();
        let one = worker(gate, "a", true, 1, "one", tx.clone());
        let two = worker(gate, "b", true, 1, "two", tx.clone());
        let mut both = [admitted.recv().unwrap(), admitted.recv().unwrap()];
        both.sort();
        assert_eq!(both, ["one", "two"]);
        assert_eq!(gate.busy(), 2);
        // A job wanting more threads than the gate has runs alone once it is free.
        let _big = worker(gate, "c", true, 8, "big", tx.clone());
        wait_for_waiters(gate, 1);
        drop(one);
        drop(two);
        assert_eq!(admitted.recv().unwrap(), "big");
        assert_eq!(gate.busy(), 2);
    }
}
