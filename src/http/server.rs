//! Accepting connections: HTTP/1 with a deadline on every phase before a client is
//! authenticated, a rate of connection attempts and a cap on unauthenticated connections
//! per source address, and a shutdown that always ends within the grace period.
//!
//! `axum::serve` gives hyper no timer, so a socket that sends half a request, nothing, or
//! idles after a response would hold its file descriptor forever. Here each connection is
//! its own task that races hyper's connection future against:
//! - the **handshake** deadline: from accept until the first response (for a WebSocket,
//!   the `101` after the token was checked), whatever the client does meanwhile;
//! - the **keep-alive** deadline: idle time between requests;
//! - hyper's own **header read** timeout, for later requests on a kept-alive connection;
//! - the **shutdown** signal: idle connections close at once, a half-sent request gets a
//!   moment, requests in flight get the grace period.
//!
//! Upgraded WebSockets leave this loop (hyper hands their socket to the session task);
//! the session manager drains them.

use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use dashmap::DashMap;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep};
use tower_service::Service as _;

use crate::config::ServerConfig;
use crate::error::retry_after_secs;
use crate::limits::local::LocalLimiter;
use crate::limits::{Bucket, LimitsConfig, Rate};
use crate::metrics::Metrics;

/// A request still sending its head when shutdown starts gets this long to finish.
const HALF_OPEN_DRAIN: Duration = Duration::from_millis(500);
/// Largest request head accepted (hyper's minimum buffer is 8 KiB).
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Why the server closed a connection itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaped {
    /// No complete first response within `handshake_timeout_ms` (silent, slow headers,
    /// or a stalled upgrade).
    Handshake,
    /// Idle between requests longer than `keep_alive_timeout_ms`.
    KeepAlive,
    /// A later request's head took longer than `header_read_timeout_ms`.
    HeaderRead,
    /// The source address already had `max_unauthenticated_per_ip` connections.
    PerIpCap,
    /// The source address is over `limits.connection_attempts` (answered 429).
    AttemptRate,
    /// Still open when shutdown's grace period ended.
    Shutdown,
}

impl Reaped {
    pub fn as_str(self) -> &'static str {
        match self {
            Reaped::Handshake => "handshake_timeout",
            Reaped::KeepAlive => "keep_alive_timeout",
            Reaped::HeaderRead => "header_read_timeout",
            Reaped::PerIpCap => "per_ip_cap",
            Reaped::AttemptRate => "connection_attempts",
            Reaped::Shutdown => "shutdown",
        }
    }
}

/// The deadlines and caps of [`ServerConfig`], as durations.
#[derive(Debug, Clone)]
pub struct Limits {
    pub handshake: Duration,
    pub header_read: Duration,
    pub keep_alive: Duration,
    pub max_unauthenticated_per_ip: usize,
    /// Connections one address may open per period, before any token is read.
    pub connection_attempts: Option<Rate>,
    pub grace: Duration,
}

impl Limits {
    pub fn from_config(server: &ServerConfig, limits: &LimitsConfig) -> Self {
        Self {
            handshake: Duration::from_millis(server.handshake_timeout_ms),
            header_read: Duration::from_millis(server.header_read_timeout_ms),
            keep_alive: Duration::from_millis(server.keep_alive_timeout_ms),
            max_unauthenticated_per_ip: server.max_unauthenticated_per_ip,
            connection_attempts: limits.connection_attempts,
            grace: Duration::from_millis(server.shutdown_grace_ms),
        }
    }
}

/// Unauthenticated connections per source address.
struct Unauthenticated {
    by_ip: DashMap<IpAddr, usize>,
    max: usize,
}

/// One unauthenticated connection's place in the count; released when the client
/// authenticates or the connection ends.
struct Permit {
    table: Arc<Unauthenticated>,
    ip: IpAddr,
}

impl Unauthenticated {
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Permit> {
        let mut open = self.by_ip.entry(ip).or_insert(0);
        if *open >= self.max {
            return None;
        }
        *open += 1;
        Some(Permit { table: self.clone(), ip })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.table.by_ip.remove_if_mut(&self.ip, |_, n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
    }
}

/// What a request handler can see of its connection (a request extension).
pub struct Connection {
    permit: Mutex<Option<Permit>>,
    authenticated: AtomicBool,
    in_flight: AtomicUsize,
    responses: AtomicUsize,
    /// When the last response finished, for the keep-alive deadline.
    idle_since: Mutex<Instant>,
}

impl Connection {
    /// The client proved who it is: the connection no longer counts against its address's
    /// unauthenticated cap, and the handshake deadline no longer applies.
    pub fn authenticated(&self) {
        self.authenticated.store(true, Ordering::Release);
        if let Ok(mut permit) = self.permit.lock() {
            permit.take();
        }
    }

    fn past_handshake(&self) -> bool {
        self.authenticated.load(Ordering::Acquire) || self.responses.load(Ordering::Acquire) > 0
    }

    fn idle_since(&self) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        self.idle_since.lock().ok().map(|t| *t)
    }
}

/// Counts a request in flight; its end restarts the keep-alive clock.
struct InFlight(Arc<Connection>);

impl InFlight {
    fn start(conn: Arc<Connection>) -> Self {
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(conn)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut t) = self.0.idle_since.lock() {
            *t = Instant::now();
        }
        self.0.responses.fetch_add(1, Ordering::AcqRel);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Accepts connections until `shutdown` resolves, then closes them: idle ones at once,
/// the rest by the grace period. Returns when every connection task has ended.
pub async fn accept(
    router: Router,
    listener: TcpListener,
    limits: Limits,
    metrics: Metrics,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_read).max_buf_size(MAX_HEAD_BYTES);
    let unauthenticated = Arc::new(Unauthenticated { by_ip: DashMap::new(), max: limits.max_unauthenticated_per_ip });
    let attempts = LocalLimiter::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let limits = Arc::new(limits);
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors, mostly: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if let Some(retry_after) = limits.connection_attempts.and_then(|rate| attempted(&attempts, peer.ip(), rate)) {
                    metrics.connection_reaped(Reaped::AttemptRate.as_str());
                    metrics.rate_limit_decision(Reaped::AttemptRate.as_str(), "limited");
                    tracing::debug!(%peer, "too many connection attempts from this address");
                    refuse_attempt(&stream, retry_after);
                    continue;
                }
                let Some(permit) = unauthenticated.admit(peer.ip().to_canonical()) else {
                    metrics.connection_reaped(Reaped::PerIpCap.as_str());
                    tracing::debug!(%peer, "too many unauthenticated connections from this address");
                    continue; // dropping the stream closes it
                };
                let _ = stream.set_nodelay(true);
                let task = serve_connection(
                    http.clone(), router.clone(), stream, peer, permit, stop_rx.clone(), limits.clone(), metrics.clone(),
                );
                connections.spawn(task);
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let deadline = Instant::now() + limits.grace;
    let closed = tokio::time::timeout_at(deadline, async { while connections.join_next().await.is_some() {} }).await;
    if closed.is_err() {
        for _ in 0..connections.len() {
            metrics.connection_reaped(Reaped::Shutdown.as_str());
        }
        tracing::warn!(connections = connections.len(), "grace period over; closing remaining connections");
        connections.shutdown().await;
    }
}

/// Charges one connection attempt to `ip`; when it is over its rate, how long until not.
fn attempted(attempts: &LocalLimiter, ip: IpAddr, rate: Rate) -> Option<Duration> {
    let bucket = Bucket { key: ip.to_canonical().to_string(), rate };
    let decision = attempts.charge(std::slice::from_ref(&bucket), 1);
    decision.refused_by.map(|_| decision.buckets[0].retry_after)
}

/// Answers an attempt over the rate with a bare 429 (no request is read, nothing is
/// waited for: a write that would block is skipped) and closes it.
fn refuse_attempt(stream: &TcpStream, retry_after: Duration) {
    let body = r#"{"error":"rate_limited","limit":"connection_attempts","retryable":true}"#;
    let response = format!(
        "HTTP/1.1 429 Too Many Requests\r\nRetry-After: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        retry_after_secs(retry_after),
        body.len()
    );
    let _ = stream.try_write(response.as_bytes());
}

#[allow(clippy::too_many_arguments)]
async fn serve_connection(
    http: http1::Builder,
    router: Router,
    stream: TcpStream,
    peer: SocketAddr,
    permit: Permit,
    mut stop: watch::Receiver<bool>,
    limits: Arc<Limits>,
    metrics: Metrics,
) {
    let conn = Arc::new(Connection {
        permit: Mutex::new(Some(permit)),
        authenticated: AtomicBool::new(false),
        in_flight: AtomicUsize::new(0),
        responses: AtomicUsize::new(0),
        idle_since: Mutex::new(Instant::now()),
    });
    let service = {
        let conn = conn.clone();
        service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            req.extensions_mut().insert(conn.clone());
            let in_flight = InFlight::start(conn.clone());
            let response = router.clone().call(req);
            async move {
                let response = response.await;
                drop(in_flight);
                response
            }
        })
    };
    let mut http_conn = pin!(http.serve_connection(TokioIo::new(stream), service).with_upgrades());
    let handshake = sleep(limits.handshake);
    let mut handshake = pin!(handshake);
    let keep_alive = sleep(limits.keep_alive);
    let mut keep_alive = pin!(keep_alive);
    let drain = sleep(Duration::MAX / 4);
    let mut drain = pin!(drain);
    let mut stopping = false;
    let mut handshake_over = false;
    let reaped = loop {
        tokio::select! {
            done = http_conn.as_mut() => match done {
                Err(e) if e.is_timeout() => break Some(Reaped::HeaderRead),
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "connection error");
                    break None;
                }
                Ok(()) => break None,
            },
            // (Conditions are checked in the arms: a `select!` precondition is only
            // re-evaluated when some arm completes, not when a response is sent.)
            _ = &mut handshake, if !handshake_over => {
                if !conn.past_handshake() {
                    break Some(Reaped::Handshake);
                }
                handshake_over = true;
            }
            _ = &mut keep_alive => match conn.idle_since() {
                Some(since) if conn.past_handshake() && since.elapsed() >= limits.keep_alive => {
                    break Some(Reaped::KeepAlive)
                }
                Some(since) if conn.past_handshake() => keep_alive.as_mut().reset(since + limits.keep_alive),
                _ => keep_alive.as_mut().reset(Instant::now() + limits.keep_alive),
            },
            _ = stop.changed(), if !stopping => {
                stopping = true;
                // Closes an idle connection now; one mid-request finishes its response first.
                http_conn.as_mut().graceful_shutdown();
                let busy = conn.in_flight.load(Ordering::Acquire) > 0;
                drain.as_mut().reset(Instant::now() + if busy { limits.grace } else { HALF_OPEN_DRAIN });
            }
            _ = &mut drain, if stopping => break Some(Reaped::Shutdown),
        }
    };
    if let Some(reason) = reaped {
        metrics.connection_reaped(reason.as_str());
        tracing::debug!(%peer, reason = reason.as_str(), "connection closed by the server");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unauthenticated_connections_are_capped_per_address() {
        let table = Arc::new(Unauthenticated { by_ip: DashMap::new(), max: 2 });
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let first = table.admit(a).expect("first");
        let _second = table.admit(a).expect("second");
        assert!(table.admit(a).is_none(), "a third from the same address is refused");
        assert!(table.admit(b).is_some(), "other addresses are not affected");
        drop(first);
        assert!(table.admit(a).is_some(), "a closed or authenticated connection frees its place");
    }
}
