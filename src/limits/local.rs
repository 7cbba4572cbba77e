//! The in-process limiter: every bucket's TAT in one map, charged under one lock (a
//! decision is a few hash lookups, so the lock is never held long). Buckets whose TAT
//! has passed are whole again and are swept as the map grows.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use super::gcra::{Step, step};
use super::{Bucket, Decision};

pub struct LocalLimiter {
    epoch: Instant,
    buckets: Mutex<Buckets>,
}

struct Buckets {
    tat: HashMap<String, u64>,
    /// Sweep expired buckets when the map reaches this size.
    sweep_at: usize,
}

const FIRST_SWEEP: usize = 4096;

impl Default for LocalLimiter {
    fn default() -> Self {
        Self { epoch: Instant::now(), buckets: Mutex::new(Buckets { tat: HashMap::new(), sweep_at: FIRST_SWEEP }) }
    }
}

impl LocalLimiter {
    /// Charges `cost` to every bucket, or to none: one refusal refuses the request.
    pub fn charge(&self, buckets: &[Bucket], cost: u64) -> Decision {
        let now = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        // A poisoned lock only means another charge panicked; the map is still whole.
        let mut held = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let steps: Vec<Step> = buckets.iter().map(|b| step(held.tat.get(&b.key).copied(), now, b.rate, cost)).collect();
        if steps.iter().all(|s| s.allowed) {
            for (bucket, s) in buckets.iter().zip(&steps) {
                held.tat.insert(bucket.key.clone(), s.tat);
            }
            if held.tat.len() >= held.sweep_at {
                held.tat.retain(|_, tat| *tat > now);
                held.sweep_at = (held.tat.len() * 2).max(FIRST_SWEEP);
            }
        }
        Decision::of(&steps)
    }

    /// Buckets held now (for tests of the sweep).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.lock().map(|b| b.tat.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::limits::gcra::Rate;

    fn bucket(key: &str, count: u64) -> Bucket {
        Bucket { key: key.into(), rate: Rate::per(count, Duration::from_secs(3600)) }
    }

    #[test]
    fn one_refused_bucket_charges_none() {
        let limiter = LocalLimiter::default();
        let (user, tenant) = (bucket("u", 5), bucket("t", 2));
        assert!(limiter.charge(&[user.clone(), tenant.clone()], 1).allowed);
        assert!(limiter.charge(&[user.clone(), tenant.clone()], 1).allowed);
        let refused = limiter.charge(&[user.clone(), tenant.clone()], 1);
        assert!(!refused.allowed);
        assert_eq!(refused.refused_by, Some(1), "the tenant's bucket refused");
        // The user's bucket was not charged by the refusal: 3 of 5 are left.
        assert_eq!(limiter.charge(&[user], 1).buckets[0].remaining, 2);
    }

    #[test]
    fn expired_buckets_are_swept() {
        let limiter = LocalLimiter::default();
        let short = |i: usize| Bucket { key: format!("k{i}"), rate: Rate::per(1_000_000, Duration::from_secs(1)) };
        for i in 0..FIRST_SWEEP - 1 {
            limiter.charge(&[short(i)], 1);
        }
        std::thread::sleep(Duration::from_millis(5));
        limiter.charge(&[short(FIRST_SWEEP)], 1);
        assert!(limiter.len() < 10, "{} buckets left", limiter.len());
    }
}
