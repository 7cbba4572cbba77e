//! One reconnecting Redis connection shared by the cache and parked sessions.
//!
//! Redis is a helper, never a dependency of a turn: every command is bounded by
//! `redis.timeout_ms`, and once a command fails the link reports Redis down (one
//! warning, the `fieldvox_backend_up` gauge at 0) and skips it for `redis.retry_ms`
//! before trying again, so callers fall back at once instead of waiting on a dead server.
//! The first command that succeeds again brings it back, without a restart.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, FromRedisValue, RedisResult, ScriptInvocation};

use super::RedisConfig;
use crate::metrics;

/// Why a command did not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedisDown {
    #[error("redis is unavailable (retrying soon)")]
    Skipped,
    #[error("redis failed: {0}")]
    Failed(String),
}

pub struct RedisLink {
    manager: ConnectionManager,
    timeout: Duration,
    retry: Duration,
    /// `Some(t)`: down, skipped until `t`.
    down_until: Mutex<Option<Instant>>,
}

impl RedisLink {
    /// Parses the URL; connects on first use (a Redis that is down at start is not fatal).
    pub fn new(config: &RedisConfig) -> anyhow::Result<Self> {
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| anyhow::anyhow!("backends.redis.url {:?} is not a Redis URL: {e}", config.url))?;
        let timeout = Duration::from_millis(config.timeout_ms.max(1));
        let manager_config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(timeout))
            .set_connection_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(config.retry_ms.max(1)));
        let manager = ConnectionManager::new_lazy_with_config(client, manager_config)
            .map_err(|e| anyhow::anyhow!("redis connection: {e}"))?;
        metrics::backend_up("redis", true);
        Ok(Self { manager, timeout, retry: Duration::from_millis(config.retry_ms), down_until: Mutex::new(None) })
    }

    /// Runs one command, unless Redis is known to be down.
    pub async fn run<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, RedisDown> {
        if self.is_skipped() {
            return Err(RedisDown::Skipped);
        }
        self.exec(cmd).await
    }

    /// Runs a Lua script (EVALSHA, loading it on first use), unless Redis is known to be down.
    pub async fn invoke<T: FromRedisValue>(&self, script: &ScriptInvocation<'_>) -> Result<T, RedisDown> {
        if self.is_skipped() {
            return Err(RedisDown::Skipped);
        }
        let mut conn = self.manager.clone();
        self.bounded(script.invoke_async(&mut conn)).await
    }

    fn is_skipped(&self) -> bool {
        self.down_until.lock().map(|d| d.is_some_and(|t| Instant::now() < t)).unwrap_or(false)
    }

    /// A PING, whatever the down window says: readiness always asks Redis itself.
    pub async fn ping(&self) -> Result<Duration, RedisDown> {
        let started = Instant::now();
        let _: String = self.exec(&redis::cmd("PING")).await?;
        Ok(started.elapsed())
    }

    async fn exec<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, RedisDown> {
        let mut conn = self.manager.clone();
        self.bounded(cmd.query_async::<T>(&mut conn)).await
    }

    /// Waits `timeout` at most for one command, and follows whether Redis answers.
    async fn bounded<T>(&self, command: impl Future<Output = RedisResult<T>>) -> Result<T, RedisDown> {
        let started = Instant::now();
        let result = match tokio::time::timeout(self.timeout, command).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(RedisDown::Failed(e.to_string())),
            Err(_) => Err(RedisDown::Failed(format!("no answer within {} ms", self.timeout.as_millis()))),
        };
        match &result {
            Ok(_) => {
                metrics::backend_round_trip("redis", started.elapsed());
                self.mark_up();
            }
            Err(e) => self.mark_down(e),
        }
        result
    }

    fn mark_up(&self) {
        let Ok(mut down) = self.down_until.lock() else { return };
        if down.take().is_some() {
            tracing::info!("redis is back; the shared cache, session store and limits are in use again");
            metrics::backend_up("redis", true);
        }
    }

    fn mark_down(&self, e: &RedisDown) {
        let Ok(mut down) = self.down_until.lock() else { return };
        if down.is_none() {
            tracing::warn!(error = %e, retry_ms = self.retry.as_millis() as u64,
                "redis unavailable; bypassing the shared cache until it answers again");
            metrics::backend_up("redis", false);
        }
        *down = Some(Instant::now() + self.retry);
    }
}
