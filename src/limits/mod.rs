//! Fair use: how much each user, and each tenant in total, may do per period, decided
//! by GCRA ([`gcra`]) in this process ([`local`]) or in Redis so that every instance
//! agrees ([`redis`]). Limits are set per role and overridden per tenant (`[limits]`).
//!
//! What is limited, and where it is charged:
//! - `sessions`: open at once per user (the session manager, in this process);
//! - `session_opens`: `GET /v1/realtime`, before the upgrade;
//! - `turns`: each answer a session starts;
//! - `audio_seconds`: each utterance, before it is transcribed;
//! - `uploads`: `POST /v1/manuals`; `searches`: `POST /v1/search`;
//! - `connection_attempts`: per source address at accept, before any token is read
//!   (in this process; `http/server.rs`).
//!
//! While Redis is down each limit follows its policy: `open` lets requests through (a
//! warning, and `fieldvox_rate_limit_unenforced{limit}` at 1) or `closed` refuses them
//! with `limiter_unavailable`. Limits apply again as soon as Redis answers.

pub mod gcra;
pub mod local;
pub mod redis;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use self::gcra::Rate;
use self::gcra::Step;
use self::local::LocalLimiter;
use self::redis::RedisLimiter;
use crate::auth::{Claims, Role};
use crate::backends::redis::{RedisDown, RedisLink};
use crate::metrics::Metrics;
use fieldvox_formats::protocol::RateLimitInfo;

/// Everything charged per user and per tenant. The names are stable: configuration
/// keys, `limit` in errors, metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Limit {
    SessionOpens,
    Turns,
    /// Charged in milliseconds, configured and reported in seconds.
    AudioSeconds,
    Uploads,
    Searches,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::SessionOpens => "session_opens",
            Limit::Turns => "turns",
            Limit::AudioSeconds => "audio_seconds",
            Limit::Uploads => "uploads",
            Limit::Searches => "searches",
        }
    }

    /// Units charged per configured unit (audio: milliseconds per second).
    fn scale(self) -> u64 {
        if self == Limit::AudioSeconds { 1000 } else { 1 }
    }
}

/// What a role (or a whole tenant) may do. An absent limit is no limit.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Allowance {
    /// Sessions one user may hold open at once, in one instance (the tenant section
    /// has no such cap). More are refused with 429 `user_session_limit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sessions: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_opens: Option<Rate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub turns: Option<Rate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio_seconds: Option<Rate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uploads: Option<Rate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub searches: Option<Rate>,
}

impl Allowance {
    fn rate(&self, limit: Limit) -> Option<Rate> {
        match limit {
            Limit::SessionOpens => self.session_opens,
            Limit::Turns => self.turns,
            Limit::AudioSeconds => self.audio_seconds,
            Limit::Uploads => self.uploads,
            Limit::Searches => self.searches,
        }
    }

    /// This allowance with `over`'s limits where it sets them.
    fn overlaid(&self, over: Option<&Allowance>) -> Allowance {
        let Some(o) = over else { return self.clone() };
        Allowance {
            sessions: o.sessions.or(self.sessions),
            session_opens: o.session_opens.or(self.session_opens),
            turns: o.turns.or(self.turns),
            audio_seconds: o.audio_seconds.or(self.audio_seconds),
            uploads: o.uploads.or(self.uploads),
            searches: o.searches.or(self.searches),
        }
    }
}

/// One tenant's own limits, each section overriding the defaults field by field.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TenantLimits {
    pub technician: Option<Allowance>,
    pub admin: Option<Allowance>,
    pub ops: Option<Allowance>,
    pub tenant: Option<Allowance>,
}

/// What a limit does while the store that holds it (Redis) is down.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FailPolicy {
    /// Let requests through unlimited (logged, and a gauge at 1).
    #[default]
    Open,
    /// Refuse them with `limiter_unavailable` (503, retryable).
    Closed,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FailPolicies {
    pub session_opens: FailPolicy,
    pub turns: FailPolicy,
    pub audio_seconds: FailPolicy,
    pub uploads: FailPolicy,
    pub searches: FailPolicy,
}

impl Default for FailPolicies {
    /// Talking goes on without Redis; uploads (bulk work) wait for it.
    fn default() -> Self {
        Self {
            session_opens: FailPolicy::Open,
            turns: FailPolicy::Open,
            audio_seconds: FailPolicy::Open,
            uploads: FailPolicy::Closed,
            searches: FailPolicy::Open,
        }
    }
}

impl FailPolicies {
    fn of(&self, limit: Limit) -> FailPolicy {
        match limit {
            Limit::SessionOpens => self.session_opens,
            Limit::Turns => self.turns,
            Limit::AudioSeconds => self.audio_seconds,
            Limit::Uploads => self.uploads,
            Limit::Searches => self.searches,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Per user, by role.
    pub technician: Allowance,
    pub admin: Allowance,
    pub ops: Allowance,
    /// Per tenant, all its users together.
    pub tenant: Allowance,
    /// Overrides by tenant id: `[limits.tenants.acme.technician]`, `[limits.tenants.acme.tenant]`.
    pub tenants: BTreeMap<String, TenantLimits>,
    /// Connections one source address may open, checked at accept before any token
    /// (in this process). Behind a proxy every client shares its address: raise it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_attempts: Option<Rate>,
    /// Per limit, `open` or `closed` while Redis (`backends.limits = "redis"`) is down.
    pub when_redis_down: FailPolicies,
}

fn rate(text: &str) -> Option<Rate> {
    text.parse().ok()
}

impl Default for LimitsConfig {
    /// Roomy for people (a technician asks a few questions a minute), tight for a stuck
    /// app or a script; tenant totals sized for a few hundred technicians.
    fn default() -> Self {
        let person = Allowance {
            sessions: Some(8),
            session_opens: rate("30/min"),
            turns: rate("20/min"),
            audio_seconds: rate("1200/h"),
            uploads: None,
            searches: rate("60/min"),
        };
        Self {
            technician: person.clone(),
            admin: Allowance { uploads: rate("60/h"), searches: rate("120/min"), ..person.clone() },
            ops: person,
            tenant: Allowance {
                sessions: None,
                session_opens: rate("3000/min"),
                turns: rate("3000/min"),
                audio_seconds: rate("360000/h"),
                uploads: rate("600/h"),
                searches: rate("6000/min"),
            },
            tenants: BTreeMap::new(),
            connection_attempts: rate("600/min"),
            when_redis_down: FailPolicies::default(),
        }
    }
}

impl LimitsConfig {
    /// No limits at all: for benchmarks and tests that measure something else.
    pub fn off() -> Self {
        Self {
            technician: Allowance::default(),
            admin: Allowance::default(),
            ops: Allowance::default(),
            tenant: Allowance::default(),
            tenants: BTreeMap::new(),
            connection_attempts: None,
            when_redis_down: FailPolicies::default(),
        }
    }

    /// A user's allowance: their role's, with their tenant's overrides.
    pub fn user(&self, tenant: &str, role: Role) -> Allowance {
        let own = self.tenants.get(tenant);
        let (base, over) = match role {
            Role::Technician => (&self.technician, own.and_then(|t| t.technician.as_ref())),
            Role::Admin => (&self.admin, own.and_then(|t| t.admin.as_ref())),
            Role::Ops => (&self.ops, own.and_then(|t| t.ops.as_ref())),
        };
        base.overlaid(over)
    }

    /// A tenant's total allowance, with its overrides.
    pub fn tenant(&self, tenant: &str) -> Allowance {
        self.tenant.overlaid(self.tenants.get(tenant).and_then(|t| t.tenant.as_ref()))
    }

    pub fn validate(&self) -> Result<(), String> {
        let tenant_wide = std::iter::once(&self.tenant).chain(self.tenants.values().filter_map(|t| t.tenant.as_ref()));
        if tenant_wide.into_iter().any(|a| a.sessions.is_some()) {
            return Err("limits.tenant.sessions: open sessions are capped per user (limits.<role>.sessions), \
                        not per tenant"
                .into());
        }
        Ok(())
    }

    /// Most sessions a user may hold open at once (unlimited: `usize::MAX`).
    pub fn sessions(&self, claims: &Claims) -> usize {
        self.user(&claims.tenant, claims.role).sessions.unwrap_or(usize::MAX)
    }
}

/// One GCRA bucket: where its TAT lives and its rate (in charged units).
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    pub key: String,
    pub rate: Rate,
}

/// One bucket's state after a charge.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketState {
    pub remaining: u64,
    pub retry_after: Duration,
    pub reset_after: Duration,
}

/// The answer for a whole request: allowed only if every bucket allows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    /// The first bucket that refused.
    pub refused_by: Option<usize>,
    pub buckets: Vec<BucketState>,
}

impl Decision {
    fn of(steps: &[Step]) -> Self {
        let buckets: Vec<BucketState> = steps
            .iter()
            .map(|s| BucketState {
                remaining: s.remaining,
                retry_after: Duration::from_micros(s.retry_after_us),
                reset_after: Duration::from_micros(s.reset_after_us),
            })
            .collect();
        let refused_by = steps.iter().position(|s| !s.allowed);
        Self { allowed: refused_by.is_none(), refused_by, buckets }
    }
}

/// Which implementation holds the buckets.
pub enum Limiter {
    Local(LocalLimiter),
    Redis(RedisLimiter),
}

impl Limiter {
    pub async fn charge(&self, buckets: &[Bucket], cost: u64) -> Result<Decision, RedisDown> {
        match self {
            Limiter::Local(l) => Ok(l.charge(buckets, cost)),
            Limiter::Redis(r) => r.charge(buckets, cost).await,
        }
    }
}

/// Whose allowance a bucket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    User,
    Tenant,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::User => "user",
            Scope::Tenant => "tenant",
        }
    }
}

/// A request the limits did not let through.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("over the {scope} allowance of {limit} ({rate}); retry in {:.1} s", retry_after.as_secs_f64(),
        limit = limit.as_str(), scope = scope.as_str())]
    Limited { limit: Limit, scope: Scope, rate: Rate, retry_after: Duration, standing: Vec<RateLimitInfo> },
    #[error("the {} limit cannot be checked (its store is down); retry shortly", limit.as_str())]
    Unavailable { limit: Limit, retry_after: Duration },
}

impl Refusal {
    pub fn limit(&self) -> Limit {
        match self {
            Refusal::Limited { limit, .. } | Refusal::Unavailable { limit, .. } => *limit,
        }
    }

    pub fn retry_after(&self) -> Duration {
        match self {
            Refusal::Limited { retry_after, .. } | Refusal::Unavailable { retry_after, .. } => *retry_after,
        }
    }
}

/// The server's limits: configuration and limiter, with their metrics.
pub struct RateLimits {
    config: LimitsConfig,
    limiter: Limiter,
    metrics: Metrics,
    /// Refusal hint while Redis is down (its retry interval).
    retry: Duration,
}

impl RateLimits {
    /// In Redis when `link` is given, else in this process.
    pub fn new(config: LimitsConfig, link: Option<Arc<RedisLink>>, retry: Duration, metrics: Metrics) -> Self {
        let limiter = match link {
            Some(link) => Limiter::Redis(RedisLimiter::new(link)),
            None => Limiter::Local(LocalLimiter::default()),
        };
        Self { config, limiter, metrics, retry }
    }

    pub fn config(&self) -> &LimitsConfig {
        &self.config
    }

    /// Charges `cost` (in the limit's configured unit; audio in milliseconds) to the
    /// user's and the tenant's allowances. Returns what is left of each, or the refusal.
    pub async fn charge(&self, limit: Limit, claims: &Claims, cost: u64) -> Result<Vec<RateLimitInfo>, Refusal> {
        let rated: Vec<(Scope, Rate)> = [
            (Scope::User, self.config.user(&claims.tenant, claims.role).rate(limit)),
            (Scope::Tenant, self.config.tenant(&claims.tenant).rate(limit)),
        ]
        .into_iter()
        .filter_map(|(scope, rate)| Some((scope, rate?)))
        .collect();
        if rated.is_empty() {
            return Ok(Vec::new());
        }
        let buckets: Vec<Bucket> = rated
            .iter()
            .map(|&(scope, rate)| Bucket { key: key(limit, scope, claims), rate: rate.scaled(limit.scale()) })
            .collect();
        let decision = match self.limiter.charge(&buckets, cost).await {
            Ok(d) => d,
            Err(e) => return self.unavailable(limit, e),
        };
        self.metrics.rate_limit_enforced(limit.as_str(), true);
        let standing: Vec<RateLimitInfo> = rated
            .iter()
            .zip(&decision.buckets)
            .map(|(&(scope, rate), b)| RateLimitInfo {
                name: limit.as_str().into(),
                scope: scope.as_str().into(),
                limit: rate.count,
                remaining: b.remaining / limit.scale(),
                reset_seconds: b.reset_after.as_secs_f64(),
            })
            .collect();
        match decision.refused_by {
            None => {
                self.metrics.rate_limit_decision(limit.as_str(), "allowed");
                Ok(standing)
            }
            Some(i) => {
                self.metrics.rate_limit_decision(limit.as_str(), "limited");
                let (scope, rate) = rated[i];
                let retry_after = decision.buckets[i].retry_after;
                tracing::info!(limit = limit.as_str(), scope = scope.as_str(), %rate,
                    retry_after_ms = retry_after.as_millis() as u64, "rate limited");
                Err(Refusal::Limited { limit, scope, rate, retry_after, standing })
            }
        }
    }

    fn unavailable(&self, limit: Limit, e: RedisDown) -> Result<Vec<RateLimitInfo>, Refusal> {
        match self.config.when_redis_down.of(limit) {
            FailPolicy::Open => {
                if self.metrics.rate_limit_enforced(limit.as_str(), false) {
                    tracing::warn!(limit = limit.as_str(), error = %e,
                        "limit not enforced while redis is down (fail-open)");
                }
                self.metrics.rate_limit_decision(limit.as_str(), "failed_open");
                Ok(Vec::new())
            }
            FailPolicy::Closed => {
                self.metrics.rate_limit_decision(limit.as_str(), "failed_closed");
                tracing::warn!(limit = limit.as_str(), error = %e, "refused: limit cannot be checked (fail-closed)");
                Err(Refusal::Unavailable { limit, retry_after: self.retry })
            }
        }
    }
}

/// `rl:{limit}:u:{tenant}:{user}` / `rl:{limit}:t:{tenant}`. The tenant in braces is a
/// Redis Cluster hash tag: one request's buckets share a slot, as one script needs.
fn key(limit: Limit, scope: Scope, claims: &Claims) -> String {
    match scope {
        Scope::User => format!("rl:{}:u:{{{}}}:{}", limit.as_str(), claims.tenant, claims.sub),
        Scope::Tenant => format!("rl:{}:t:{{{}}}", limit.as_str(), claims.tenant),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(tenant: &str, sub: &str, role: Role) -> Claims {
        Claims { sub: sub.into(), tenant: tenant.into(), role, iat: 0, exp: u64::MAX }
    }

    #[test]
    fn tenant_overrides_apply_field_by_field() {
        let mut config = LimitsConfig::default();
        let own = Allowance { turns: rate("40/min"), ..Allowance::default() };
        config.tenants.insert("acme".into(), TenantLimits { technician: Some(own), ..TenantLimits::default() });
        let acme = config.user("acme", Role::Technician);
        assert_eq!(acme.turns, rate("40/min"));
        assert_eq!(acme.searches, config.technician.searches, "unset fields keep the role's default");
        assert_eq!(config.user("globex", Role::Technician).turns, rate("20/min"));
        assert_eq!(config.user("acme", Role::Admin).turns, rate("20/min"), "another role is untouched");
        assert!(config.user("acme", Role::Technician).uploads.is_none(), "technicians do not upload");
    }

    #[test]
    fn a_tenant_wide_session_cap_is_refused() {
        let mut config = LimitsConfig::default();
        assert!(config.validate().is_ok());
        config.tenant.sessions = Some(3);
        assert!(config.validate().unwrap_err().contains("per user"));
    }

    #[tokio::test]
    async fn users_and_tenants_have_buckets_of_their_own() {
        let mut config = LimitsConfig::off();
        config.technician.turns = rate("2/min");
        config.tenant.turns = rate("3/min");
        let limits = RateLimits::new(config, None, Duration::from_secs(1), Metrics::new());
        let (ann, bob, eve) = (
            claims("acme", "ann", Role::Technician),
            claims("acme", "bob", Role::Technician),
            claims("globex", "ann", Role::Technician),
        );
        let left = limits.charge(Limit::Turns, &ann, 1).await.unwrap();
        assert_eq!(
            left.iter().map(|s| (s.scope.as_str(), s.remaining)).collect::<Vec<_>>(),
            [("user", 1), ("tenant", 2)]
        );
        limits.charge(Limit::Turns, &ann, 1).await.unwrap();
        let Err(Refusal::Limited { scope: Scope::User, retry_after, .. }) = limits.charge(Limit::Turns, &ann, 1).await
        else {
            panic!("ann is over her allowance")
        };
        assert!(retry_after > Duration::from_secs(25) && retry_after <= Duration::from_secs(30), "{retry_after:?}");
        limits.charge(Limit::Turns, &bob, 1).await.expect("bob has his own allowance");
        let refused = limits.charge(Limit::Turns, &bob, 1).await.unwrap_err();
        assert!(matches!(refused, Refusal::Limited { scope: Scope::Tenant, .. }), "acme's total is spent: {refused:?}");
        limits.charge(Limit::Turns, &eve, 1).await.expect("another tenant's ann is another user");
        assert!(limits.charge(Limit::Searches, &ann, 1).await.unwrap().is_empty(), "no limit set: nothing charged");
    }

    #[tokio::test]
    async fn audio_is_charged_in_milliseconds_and_reported_in_seconds() {
        let mut config = LimitsConfig::off();
        config.technician.audio_seconds = rate("10/h");
        let limits = RateLimits::new(config, None, Duration::from_secs(1), Metrics::new());
        let ann = claims("acme", "ann", Role::Technician);
        let left = limits.charge(Limit::AudioSeconds, &ann, 4_500).await.unwrap();
        assert_eq!((left[0].limit, left[0].remaining), (10, 5));
        let refused = limits.charge(Limit::AudioSeconds, &ann, 6_000).await.unwrap_err();
        // 500 ms more of allowance needed, at 10 s an hour: 180 s (less the µs since).
        let wait = refused.retry_after();
        assert!(wait > Duration::from_secs(179) && wait <= Duration::from_secs(180), "{wait:?}");
    }
}
