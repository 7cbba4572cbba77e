//! GCRA, the generic cell rate algorithm: a bucket is one timestamp, its theoretical
//! arrival time (TAT). Each unit used pushes it one emission interval (period / count)
//! later; a request passes while the TAT stays within one period of now, so a whole
//! period's allowance can be used at once and refills evenly. The Lua script in
//! [`super::redis`] is this same arithmetic, run inside Redis.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `count` units per `period`, all usable at once. Written `"20/min"`, `"1800/h"`,
/// `"3/10s"` in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u64,
    pub period: Duration,
}

impl Rate {
    pub fn per(count: u64, period: Duration) -> Self {
        Self { count, period }
    }

    /// The same allowance in `scale` times smaller units (seconds → milliseconds).
    pub fn scaled(self, scale: u64) -> Self {
        Self { count: self.count.saturating_mul(scale), period: self.period }
    }

    /// Microseconds between units: how fast the allowance refills.
    pub fn interval_us(self) -> u64 {
        (self.period_us() / self.count.max(1)).max(1)
    }

    /// The period in microseconds: how far ahead the TAT may run.
    pub fn period_us(self) -> u64 {
        u64::try_from(self.period.as_micros()).unwrap_or(u64::MAX)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.period.as_secs() {
            60 => write!(f, "{}/min", self.count),
            3600 => write!(f, "{}/h", self.count),
            86_400 => write!(f, "{}/day", self.count),
            secs => write!(f, "{}/{secs}s", self.count),
        }
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a rate like \"20/min\", \"1800/h\" or \"3/10s\"");
        let (count, period) = text.split_once('/').ok_or_else(bad)?;
        let count: u64 = count.trim().parse().map_err(|_| bad())?;
        let period = period.trim();
        let unit_at = period.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let times: u64 = if unit_at == 0 { 1 } else { period[..unit_at].parse().map_err(|_| bad())? };
        let unit = match &period[unit_at..] {
            "s" | "sec" | "second" => 1,
            "m" | "min" | "minute" => 60,
            "h" | "hour" => 3600,
            "d" | "day" => 86_400,
            _ => return Err(bad()),
        };
        if count == 0 || times == 0 {
            return Err(format!("{text:?}: a rate needs a count and a period above zero (omit it for no limit)"));
        }
        Ok(Rate { count, period: Duration::from_secs(times * unit) })
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// One bucket's answer to a charge, times in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub allowed: bool,
    /// The bucket's TAT after the charge (unchanged when refused).
    pub tat: u64,
    /// Units left after it.
    pub remaining: u64,
    /// Refused: until the charge would pass.
    pub retry_after_us: u64,
    /// Until the whole allowance is back.
    pub reset_after_us: u64,
}

/// Charges `cost` units to a bucket whose TAT is `stored` (none: never used, or expired)
/// at time `now`. A cost above the whole allowance is charged as the whole allowance, or
/// it could never pass.
pub fn step(stored: Option<u64>, now: u64, rate: Rate, cost: u64) -> Step {
    let interval = rate.interval_us();
    let period = rate.period_us();
    let cost = cost.min(rate.count);
    let tat = stored.unwrap_or(now).max(now);
    let next = tat.saturating_add(interval.saturating_mul(cost));
    let allow_at = next.saturating_sub(period);
    let left = |tat: u64| (now + period).saturating_sub(tat) / interval;
    if allow_at > now {
        Step { allowed: false, tat, remaining: left(tat), retry_after_us: allow_at - now, reset_after_us: tat - now }
    } else {
        Step { allowed: true, tat: next, remaining: left(next), retry_after_us: 0, reset_after_us: next - now }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000;

    #[test]
    fn rates_parse_and_print() {
        assert_eq!("20/min".parse(), Ok(Rate::per(20, Duration::from_secs(60))));
        assert_eq!("1800/h".parse(), Ok(Rate::per(1800, Duration::from_secs(3600))));
        assert_eq!(" 3 / 10s".parse(), Ok(Rate::per(3, Duration::from_secs(10))));
        assert_eq!("5/day".parse::<Rate>().map(|r| r.to_string()), Ok("5/day".into()));
        assert_eq!(Rate::per(3, Duration::from_secs(10)).to_string(), "3/10s");
        for bad in ["20", "x/min", "20/fortnight", "0/min", "20/0s", "/min"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn a_whole_allowance_passes_at_once_then_refills_evenly() {
        let rate = Rate::per(3, Duration::from_secs(3)); // one unit a second
        let mut tat = None;
        for left in [2, 1, 0] {
            let s = step(tat, 0, rate, 1);
            assert!(s.allowed);
            assert_eq!(s.remaining, left);
            tat = Some(s.tat);
        }
        let refused = step(tat, 0, rate, 1);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_us, SEC, "the next unit comes back in one interval");
        assert_eq!(refused.reset_after_us, 3 * SEC);
        assert_eq!(refused.tat, tat.unwrap(), "a refusal charges nothing");
        assert!(!step(tat, SEC - 1, rate, 1).allowed, "not a moment early");
        let back = step(tat, SEC, rate, 1);
        assert!(back.allowed && back.remaining == 0, "{back:?}");
    }

    #[test]
    fn costs_weigh_and_never_exceed_the_allowance() {
        let rate = Rate::per(10, Duration::from_secs(10));
        let s = step(None, 0, rate, 7);
        assert_eq!((s.allowed, s.remaining), (true, 3));
        let over = step(Some(s.tat), 0, rate, 4);
        assert_eq!((over.allowed, over.retry_after_us), (false, SEC), "one more unit must refill first");
        let huge = step(None, 0, rate, 1_000);
        assert!(huge.allowed, "charged as the whole allowance");
        assert_eq!(huge.remaining, 0);
        // A bucket idle past its period is whole again, not overdrawn into the future.
        assert_eq!(step(Some(5 * SEC), 100 * SEC, rate, 1).remaining, 9);
    }
}
