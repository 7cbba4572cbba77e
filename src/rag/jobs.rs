//! Live progress of running ingest jobs, for `GET /v1/jobs/{id}` and its event stream.
//! Finished jobs are read from the metadata store; a running one is seen here as soon as
//! it moves, without a store round trip per watcher.

use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::watch;
use uuid::Uuid;

use crate::store::Job;

#[derive(Clone, Default)]
pub struct JobBoard {
    running: Arc<DashMap<Uuid, watch::Sender<Job>>>,
}

impl JobBoard {
    /// Posts a job that has just been accepted.
    pub fn start(&self, job: &Job) {
        self.running.insert(job.id, watch::Sender::new(job.clone()));
    }

    /// Posts a job's progress; a finished job leaves the board (its watchers see the
    /// final state, then the end of the stream).
    pub fn update(&self, job: &Job) {
        if let Some(tx) = self.running.get(&job.id) {
            tx.send_replace(job.clone());
        }
        if job.state.is_final() {
            self.running.remove(&job.id);
        }
    }

    /// The running job, if it is the tenant's.
    pub fn get(&self, tenant: &str, id: Uuid) -> Option<Job> {
        let tx = self.running.get(&id)?;
        let job = tx.borrow().clone();
        (job.tenant == tenant).then_some(job)
    }

    /// Follows the running job, if it is the tenant's.
    pub fn watch(&self, tenant: &str, id: Uuid) -> Option<watch::Receiver<Job>> {
        let tx = self.running.get(&id)?;
        (tx.borrow().tenant == tenant).then(|| tx.subscribe())
    }
}
