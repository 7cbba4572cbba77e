//! `fieldvox-limits-bench`: what one rate-limit decision costs, in this process and in
//! Redis over loopback, in one sitting.
//!
//! Each decision is a real charge of a turn to a user's and their tenant's allowance
//! (two GCRA buckets, all or nothing), over `--users` users in `--tenants` tenants, so
//! that allowed and refused decisions mix as they do under load. Decisions run from
//! `--concurrency` tasks at once; one decision's latency is timed from call to answer.
//! Prints one JSON line per limiter: decisions per second, p50 and p99 (µs).

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use fieldvox::backends::RedisConfig;
use fieldvox::backends::redis::RedisLink;
use fieldvox::limits::local::LocalLimiter;
use fieldvox::limits::redis::RedisLimiter;
use fieldvox::limits::{Bucket, Limiter, Rate};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(about = "Rate-limit decisions per second and p99 of one decision, in-process and on Redis")]
struct Args {
    /// The Redis to measure (`load-tests/limits.sh` starts one on a free port).
    #[arg(long)]
    redis_url: Option<String>,
    /// Decisions per limiter.
    #[arg(long, default_value_t = 200_000)]
    decisions: usize,
    /// Decisions in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    #[arg(long, default_value_t = 1_000)]
    users: usize,
    #[arg(long, default_value_t = 20)]
    tenants: usize,
}

fn buckets(i: usize, args: &Args) -> [Bucket; 2] {
    let user = i % args.users;
    let tenant = user % args.tenants;
    [
        Bucket { key: format!("rl:turns:u:{{t{tenant}}}:u{user}"), rate: Rate::per(20, Duration::from_secs(60)) },
        Bucket { key: format!("rl:turns:t:{{t{tenant}}}"), rate: Rate::per(3000, Duration::from_secs(60)) },
    ]
}

async fn measure(name: &str, limiter: Arc<Limiter>, args: &Arc<Args>) -> anyhow::Result<()> {
    let per_task = args.decisions / args.concurrency;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..args.concurrency {
        let (limiter, args) = (limiter.clone(), args.clone());
        tasks.push(tokio::spawn(async move {
            let mut took = Vec::with_capacity(per_task);
            let mut allowed = 0usize;
            for n in 0..per_task {
                let b = buckets(t * per_task + n, &args);
                let at = Instant::now();
                let decision = limiter.charge(&b, 1).await?;
                took.push(at.elapsed());
                allowed += usize::from(decision.allowed);
            }
            anyhow::Ok((took, allowed))
        }));
    }
    let (mut took, mut allowed) = (Vec::new(), 0);
    for task in tasks {
        let (t, a) = task.await??;
        took.extend(t);
        allowed += a;
    }
    let elapsed = started.elapsed().as_secs_f64();
    took.sort();
    let us = |q: f64| (took[((took.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6 * 10.0).round() / 10.0;
    println!(
        "{}",
        json!({
            "limiter": name, "decisions": took.len(), "allowed": allowed, "concurrency": args.concurrency,
            "decisions_per_sec": (took.len() as f64 / elapsed).round(),
            "p50_us": us(0.5), "p99_us": us(0.99),
        })
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    measure("in_process", Arc::new(Limiter::Local(LocalLimiter::default())), &args).await?;
    if let Some(url) = &args.redis_url {
        let config = RedisConfig { url: url.clone(), timeout_ms: 1_000, retry_ms: 1_000 };
        let link = Arc::new(RedisLink::new(&config)?);
        link.ping().await.map_err(|e| anyhow::anyhow!("redis at {url}: {e}"))?;
        measure("redis", Arc::new(Limiter::Redis(RedisLimiter::new(link))), &args).await?;
    }
    Ok(())
}
