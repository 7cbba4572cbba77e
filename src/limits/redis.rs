//! The shared limiter: GCRA in one Lua script, so every instance charging the same
//! bucket sees one TAT and their decisions agree. The script reads Redis's clock, not
//! the instances', and charges all of a request's buckets (user and tenant) or none.

use std::sync::{Arc, LazyLock};

use redis::Script;

use super::{Bucket, Decision};
use crate::backends::redis::{RedisDown, RedisLink};
use crate::limits::gcra::Step;

/// KEYS: the buckets. ARGV[1]: the cost; then per bucket its count, interval and period
/// (µs). Returns {allowed, then per bucket: remaining, retry_after_us, reset_after_us}.
/// Numbers are written with %.0f: Lua's default %.14g would round a µs timestamp.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cost = tonumber(ARGV[1])
local out = {1}
local next_tat = {}
for i, key in ipairs(KEYS) do
  local count = tonumber(ARGV[3 * i - 1])
  local interval = tonumber(ARGV[3 * i])
  local period = tonumber(ARGV[3 * i + 1])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local next = tat + interval * math.min(cost, count)
  local allow_at = next - period
  if allow_at > now then
    out[1] = 0
    table.insert(out, math.floor((now + period - tat) / interval))
    table.insert(out, allow_at - now)
    table.insert(out, tat - now)
  else
    next_tat[i] = next
    table.insert(out, math.floor((now + period - next) / interval))
    table.insert(out, 0)
    table.insert(out, next - now)
  end
end
if out[1] == 1 then
  for i, key in ipairs(KEYS) do
    local ttl = math.max(1, math.ceil((next_tat[i] - now) / 1000))
    redis.call('SET', key, string.format('%.0f', next_tat[i]), 'PX', ttl)
  end
end
return out
"#;

static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(GCRA));

pub struct RedisLimiter {
    link: Arc<RedisLink>,
}

impl RedisLimiter {
    pub fn new(link: Arc<RedisLink>) -> Self {
        Self { link }
    }

    /// Charges `cost` to every bucket, or to none, in one round trip.
    pub async fn charge(&self, buckets: &[Bucket], cost: u64) -> Result<Decision, RedisDown> {
        let mut invocation = SCRIPT.prepare_invoke();
        invocation.arg(cost);
        for b in buckets {
            invocation.key(&b.key).arg(b.rate.count).arg(b.rate.interval_us()).arg(b.rate.period_us());
        }
        let out: Vec<i64> = self.link.invoke(&invocation).await?;
        let allowed = out.first().copied() == Some(1);
        let at = |i: usize| u64::try_from(out.get(i).copied().unwrap_or(0)).unwrap_or(0);
        if out.len() != 1 + 3 * buckets.len() {
            return Err(RedisDown::Failed(format!("the limiter script returned {} values", out.len())));
        }
        let steps: Vec<Step> = (0..buckets.len())
            .map(|i| {
                let retry = at(2 + 3 * i);
                Step {
                    allowed: allowed || retry == 0,
                    tat: 0,
                    remaining: at(1 + 3 * i),
                    retry_after_us: retry,
                    reset_after_us: at(3 + 3 * i),
                }
            })
            .collect();
        Ok(Decision::of(&steps))
    }
}
