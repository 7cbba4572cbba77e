//! The connection manager: a registry of live sessions, the session cap, and the
//! drain signal sent to every session on shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::sync::watch;
use uuid::Uuid;

use crate::error::AppError;
use crate::metrics::Metrics;

/// What the registry keeps per session: a few dozen bytes.
#[derive(Debug, Clone)]
pub struct SessionEntry {
    pub tenant: String,
    pub user: String,
    pub transport: &'static str,
    pub opened_at: Instant,
}

#[derive(Clone)]
pub struct SessionManager {
    inner: Arc<Inner>,
}

struct Inner {
    sessions: DashMap<Uuid, SessionEntry>,
    count: AtomicUsize,
    max: usize,
    /// Open sessions per (tenant, user), for the per-user cap; absent means none.
    per_user: DashMap<(String, String), usize>,
    metrics: Metrics,
    drain: watch::Sender<bool>,
}

/// Who opens a session, and how many that user may hold at once (`limits.<role>.sessions`).
#[derive(Debug, Clone, Copy)]
pub struct Holder<'a> {
    pub tenant: &'a str,
    pub user: &'a str,
    pub max_per_user: usize,
}

/// Registration of one session; unregisters when dropped, however the session ends.
pub struct SessionGuard {
    pub id: Uuid,
    transport: &'static str,
    inner: Arc<Inner>,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if let Some((_, entry)) = self.inner.sessions.remove(&self.id) {
            self.inner.per_user.remove_if_mut(&(entry.tenant, entry.user), |_, n| {
                *n = n.saturating_sub(1);
                *n == 0
            });
        }
        self.inner.count.fetch_sub(1, Ordering::AcqRel);
        self.inner.metrics.session_closed(self.transport);
    }
}

impl SessionManager {
    pub fn new(max: usize, metrics: Metrics) -> Self {
        metrics.session_cap(max);
        let (drain, _) = watch::channel(false);
        let inner = Inner {
            sessions: DashMap::new(),
            count: AtomicUsize::new(0),
            max,
            per_user: DashMap::new(),
            metrics,
            drain,
        };
        Self { inner: Arc::new(inner) }
    }

    /// Reserves a slot, or refuses when the server is draining, full, or the user
    /// already holds `max_per_user` sessions (one user cannot take every slot).
    pub fn register(&self, who: Holder<'_>, transport: &'static str) -> Result<SessionGuard, AppError> {
        self.register_as(Uuid::new_v4(), who, transport)
    }

    /// [`register`](Self::register) under a known id (a resumed session keeps its own).
    pub fn register_as(&self, id: Uuid, who: Holder<'_>, transport: &'static str) -> Result<SessionGuard, AppError> {
        let Holder { tenant, user, max_per_user } = who;
        if self.is_draining() {
            return Err(AppError::Draining);
        }
        let inner = &self.inner;
        if inner.count.fetch_add(1, Ordering::AcqRel) >= inner.max {
            inner.count.fetch_sub(1, Ordering::AcqRel);
            return Err(AppError::SessionLimit(inner.max));
        }
        {
            let mut open = inner.per_user.entry((tenant.to_string(), user.to_string())).or_insert(0);
            if *open >= max_per_user {
                drop(open);
                inner.count.fetch_sub(1, Ordering::AcqRel);
                return Err(AppError::UserSessionLimit(max_per_user));
            }
            *open += 1;
        }
        let entry = SessionEntry { tenant: tenant.into(), user: user.into(), transport, opened_at: Instant::now() };
        inner.sessions.insert(id, entry);
        inner.metrics.session_opened(transport);
        Ok(SessionGuard { id, transport, inner: inner.clone() })
    }

    pub fn count(&self) -> usize {
        self.inner.count.load(Ordering::Acquire)
    }

    /// Open sessions by (tenant, transport).
    pub fn census(&self) -> std::collections::BTreeMap<(String, &'static str), usize> {
        let mut out = std::collections::BTreeMap::new();
        for entry in self.inner.sessions.iter() {
            *out.entry((entry.tenant.clone(), entry.transport)).or_default() += 1;
        }
        out
    }

    pub fn get(&self, id: &Uuid) -> Option<SessionEntry> {
        self.inner.sessions.get(id).map(|e| e.clone())
    }

    /// Sessions watch this; it turns true when the server starts draining.
    pub fn drain_signal(&self) -> watch::Receiver<bool> {
        self.inner.drain.subscribe()
    }

    pub fn is_draining(&self) -> bool {
        *self.inner.drain.borrow()
    }

    /// Tells every session to go away, then waits up to `grace` for them to finish.
    /// Returns how many were still open when the grace period ended.
    pub async fn drain(&self, grace: Duration) -> usize {
        self.inner.drain.send_replace(true);
        tracing::info!(sessions = self.count(), grace_ms = grace.as_millis() as u64, "draining sessions");
        let deadline = Instant::now() + grace;
        while self.count() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn enforces_the_cap_and_unregisters_on_drop() {
        let m = SessionManager::new(2, Metrics::new());
        let u = Holder { tenant: "t", user: "u", max_per_user: 8 };
        let a = m.register(u, "websocket").unwrap();
        let _b = m.register(u, "websocket").unwrap();
        assert!(matches!(m.register(u, "websocket"), Err(AppError::SessionLimit(2))));
        assert_eq!(m.get(&a.id).unwrap().tenant, "t");
        let id = a.id;
        drop(a);
        assert!(m.get(&id).is_none());
        assert_eq!(m.count(), 1);
        let _c = m.register(u, "websocket").unwrap();

        let mut signal = m.drain_signal();
        let remaining = m.drain(Duration::from_millis(100)).await;
        assert_eq!(remaining, 2);
        assert!(*signal.borrow_and_update());
        assert!(matches!(m.register(u, "websocket"), Err(AppError::Draining)), "no new sessions while draining");
    }

    #[test]
    fn one_user_cannot_take_every_slot() {
        let m = SessionManager::new(10, Metrics::new());
        let tech = Holder { tenant: "acme", user: "tech-1", max_per_user: 2 };
        let a = m.register(tech, "websocket").unwrap();
        let _b = m.register(tech, "websocket").unwrap();
        assert!(matches!(m.register(tech, "websocket"), Err(AppError::UserSessionLimit(2))));
        // The same user name in another tenant is another user.
        let _c = m.register(Holder { tenant: "globex", ..tech }, "websocket").unwrap();
        assert_eq!(m.count(), 3, "a refused session holds no slot");
        drop(a);
        let _d = m.register(tech, "websocket").unwrap();
    }
}
