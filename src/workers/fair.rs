//! Tenants share a pool fairly: start-time fair queuing. Each tenant's jobs wait in a
//! backlog of their own, tagged with a virtual start time one step after the tenant's
//! previous job; the worker takes the smallest tag. A tenant that floods tags its jobs
//! far into the future and waits behind itself, while a tenant arriving with one job
//! is tagged "now" and goes next; of equal tags the shorter backlog goes first, so a
//! turn's second sentence does not wait behind the flood either. With equal backlogs
//! this is round-robin.
//!
//! Which tenant a job is for travels with the task that submits it ([`on_behalf_of`],
//! [`spawn`]), so the pipeline's code never passes it along by hand.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio::task::JoinHandle;

tokio::task_local! {
    static TENANT: Arc<str>;
}

/// Runs `work` on behalf of `tenant`: the pool jobs it submits wait in that tenant's backlog.
pub async fn on_behalf_of<F: Future>(tenant: &str, work: F) -> F::Output {
    TENANT.scope(Arc::from(tenant), work).await
}

/// The tenant the current task works for; jobs of no tenant (ingest, tools) share "".
pub fn current() -> Arc<str> {
    TENANT.try_with(Arc::clone).unwrap_or_else(|_| Arc::from(""))
}

/// `tokio::spawn`, keeping the tenant the current task works for.
pub fn spawn<F>(work: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match TENANT.try_with(Arc::clone) {
        Ok(tenant) => tokio::spawn(TENANT.scope(tenant, work)),
        Err(_) => tokio::spawn(work),
    }
}

struct Tagged<J> {
    start: u64,
    /// Breaks ties between equal tags: first come, first served.
    arrival: u64,
    job: J,
}

struct Backlog<J> {
    jobs: VecDeque<Tagged<J>>,
    /// The tag after this tenant's last queued job.
    finish: u64,
}

/// The live lane of a pool: per-tenant backlogs, taken in start-tag order.
pub struct FairLane<J> {
    backlogs: HashMap<Arc<str>, Backlog<J>>,
    /// Virtual time: the tag of the job taken last.
    now: u64,
    arrivals: u64,
    len: usize,
}

impl<J> Default for FairLane<J> {
    fn default() -> Self {
        Self { backlogs: HashMap::new(), now: 0, arrivals: 0, len: 0 }
    }
}

/// Where a new job of one tenant would wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// That tenant's jobs already waiting.
    pub own: usize,
    /// Jobs, of every tenant, that would be taken before it.
    pub ahead: usize,
}

impl<J> FairLane<J> {
    fn start_for(&self, tenant: &str) -> u64 {
        self.backlogs.get(tenant).map_or(self.now, |b| b.finish.max(self.now))
    }

    /// Where a job of `tenant` submitted now would wait.
    pub fn place(&self, tenant: &str) -> Place {
        let start = self.start_for(tenant);
        Place {
            own: self.backlogs.get(tenant).map_or(0, |b| b.jobs.len()),
            ahead: self.backlogs.values().map(|b| b.jobs.partition_point(|t| t.start <= start)).sum(),
        }
    }

    pub fn push(&mut self, tenant: Arc<str>, job: J) {
        let start = self.start_for(&tenant);
        let backlog = self.backlogs.entry(tenant).or_insert_with(|| Backlog { jobs: VecDeque::new(), finish: start });
        backlog.finish = start + 1;
        backlog.jobs.push_back(Tagged { start, arrival: self.arrivals, job });
        self.arrivals += 1;
        self.len += 1;
    }

    /// The tenant whose job is next: the smallest tag; of equal tags, the shorter backlog
    /// (a tenant asking little goes before one asking much), then the first to arrive.
    fn next_tenant(&self) -> Option<&Arc<str>> {
        self.backlogs
            .iter()
            .filter_map(|(tenant, b)| b.jobs.front().map(|t| ((t.start, b.jobs.len(), t.arrival), tenant)))
            .min_by_key(|(tag, _)| *tag)
            .map(|(_, tenant)| tenant)
    }

    /// The job [`pop`](Self::pop) would take, left in place.
    pub fn peek(&self) -> Option<&J> {
        let tenant = self.next_tenant()?;
        self.backlogs.get(tenant)?.jobs.front().map(|t| &t.job)
    }

    /// Takes the next job (see [`next_tenant`](Self::next_tenant)).
    pub fn pop(&mut self) -> Option<J> {
        let tenant = self.next_tenant()?.clone();
        let taken = self.backlogs.get_mut(&tenant)?.jobs.pop_front()?;
        self.now = taken.start;
        self.len -= 1;
        // An emptied backlog's finish tag still counts until virtual time reaches it: a
        // tenant that just had a turn does not come back level with one still waiting.
        let now = self.now;
        self.backlogs.retain(|_, b| !b.jobs.is_empty() || b.finish > now);
        Some(taken.job)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Tenants with a backlog or a finish tag still ahead (for tests).
    #[cfg(test)]
    fn tenants(&self) -> usize {
        self.backlogs.len()
    }

    pub fn clear(&mut self) {
        self.backlogs.clear();
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(lane: &mut FairLane<&'static str>) -> Vec<&'static str> {
        std::iter::from_fn(|| lane.pop()).collect()
    }

    #[test]
    fn a_flooding_tenant_waits_behind_itself() {
        let mut lane = FairLane::default();
        let flood: Arc<str> = Arc::from("a");
        for _ in 0..5 {
            lane.push(flood.clone(), "a");
        }
        assert_eq!(lane.pop(), Some("a"), "one of the flood is taken");
        assert_eq!(lane.place("a"), Place { own: 4, ahead: 4 });
        assert_eq!(lane.place("b"), Place { own: 0, ahead: 0 }, "b would not wait for the flood");
        lane.push(Arc::from("b"), "b");
        assert_eq!(drain(&mut lane), ["b", "a", "a", "a", "a"]);
        assert!(lane.is_empty());
        assert_eq!(lane.tenants(), 1, "a's finish tag is one past the last job taken");
        lane.push(Arc::from("b"), "b");
        lane.push(Arc::from("a"), "a");
        assert_eq!(drain(&mut lane), ["b", "a"], "a, served last, does not come back level with b");
        assert_eq!(lane.tenants(), 1, "b's emptied backlog is dropped once virtual time passes it");
    }

    #[test]
    fn equal_backlogs_take_turns_in_arrival_order() {
        let mut lane = FairLane::default();
        for (tenant, job) in [("a", "a1"), ("a", "a2"), ("a", "a3"), ("b", "b1"), ("b", "b2"), ("c", "c1")] {
            lane.push(Arc::from(tenant), job);
        }
        assert_eq!(lane.place("a"), Place { own: 3, ahead: 6 });
        assert_eq!(lane.place("c"), Place { own: 1, ahead: 5 }, "c's next job would follow a2 and b2");
        assert_eq!(drain(&mut lane), ["c1", "b1", "a1", "b2", "a2", "a3"], "shorter backlogs first on a tie");
    }

    #[test]
    fn a_light_tenants_next_job_goes_before_the_floods_next() {
        let mut lane = FairLane::default();
        for _ in 0..6 {
            lane.push(Arc::from("a"), "a");
        }
        lane.pop(); // a's first job is in service
        lane.push(Arc::from("b"), "b1");
        lane.push(Arc::from("b"), "b2"); // tied with a's next job
        assert_eq!(drain(&mut lane), ["b1", "b2", "a", "a", "a", "a", "a"]);
    }

    #[tokio::test]
    async fn the_tenant_travels_with_spawned_work() {
        assert_eq!(&*current(), "");
        let seen = on_behalf_of("acme", async { spawn(async { current() }).await.unwrap() }).await;
        assert_eq!(&*seen, "acme");
    }
}
