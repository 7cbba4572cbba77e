//! Resident memory and CPU of a local process, from /proc.

use std::time::Instant;

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Sample {
    pub rss_kb: u64,
    /// CPU since the previous sample, in percent of one core.
    pub cpu_percent: f64,
}

pub struct Sampler {
    pid: u32,
    last: Option<(Instant, u64)>,
    ticks_per_sec: f64,
}

impl Sampler {
    pub fn new(pid: u32) -> Self {
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Self { pid, last: None, ticks_per_sec: if ticks > 0 { ticks as f64 } else { 100.0 } }
    }

    pub fn sample(&mut self) -> Option<Sample> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let rss_kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())?;
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        // Fields after the parenthesised command name; utime and stime are 14th and 15th overall.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        let now = Instant::now();
        let cpu_percent = match self.last {
            Some((t, prev)) => {
                let secs = now.duration_since(t).as_secs_f64().max(1e-3);
                (ticks.saturating_sub(prev) as f64 / self.ticks_per_sec) / secs * 100.0
            }
            None => 0.0,
        };
        self.last = Some((now, ticks));
        Some(Sample { rss_kb, cpu_percent })
    }
}
