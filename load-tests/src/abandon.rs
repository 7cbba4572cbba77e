//! The ask-and-leave benchmark (`--scenario abandon`): what clients who hang up mid-answer
//! leave behind for everyone else.
//!
//! A probe technician of another tenant (`--probe-tenant`) asks once to warm its caches.
//! Then `--sessions` technicians ask at once and hang up at their first answer text, and
//! the server's inference pools are watched until they go quiet (how long the server
//! stayed busy after the last client left). Then, `--rounds` times: the probe asks alone,
//! the technicians ask and leave again, and the probe asks right after. Every probe answer
//! is timed the same way (last speech frame sent → first answer audio received), and the
//! medians are compared, so the ratio compares like with like on whatever machine runs it.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use fieldvox::auth::{Role, TokenKeys};

use crate::report::Percentiles;
use crate::session::{self, Plan, Turn, Ws};
use crate::{Args, Scenario, Speech};

/// The pools count as quiet once their job counters stay unchanged this long.
const QUIET: Duration = Duration::from_secs(1);

pub struct AbandonReport {
    pub sessions: usize,
    /// The probe's answers alone and right after the leavers, in round order.
    pub alone: Vec<Turn>,
    pub after: Vec<Turn>,
    /// Medians of `alone` and `after` (client-side voice-to-voice).
    pub baseline_ms: f64,
    pub after_ms: f64,
    /// Last client gone → inference pools quiet (the quiet window itself excluded).
    pub busy_after_ms: f64,
    /// Inference jobs of the first round: run, and dropped unrun.
    pub jobs_ran: u64,
    pub jobs_abandoned: u64,
}

impl AbandonReport {
    pub fn ratio(&self) -> f64 {
        self.after_ms / self.baseline_ms.max(1.0)
    }

    pub fn table(&self) -> String {
        let stage = |turns: &[Turn], pick: fn(&Turn) -> Option<f64>| median(turns.iter().filter_map(pick));
        let row = |name: &str, turns: &[Turn]| {
            format!(
                "{name:<28} {:>8.0} ms   stt {:>5.0}  tts first audio {:>5.0}   ({})\n",
                stage(turns, |t| Some(t.client_v2v_ms)),
                stage(turns, |t| t.server.stt_ms),
                stage(turns, |t| t.server.tts_first_audio_ms),
                turns
                    .iter()
                    .map(|t| format!("{:.0}/stt {:.0}", t.client_v2v_ms, t.server.stt_ms.unwrap_or(f64::NAN)))
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        };
        format!(
            "ask-and-leave: {} clients hang up at their first answer text; probe medians of {} rounds\n\
             {}{}\
             ratio (median after / median alone): {:.2}x\n\
             server busy after the last one left: {:.0} ms\n\
             their inference jobs (first round): {} ran, {} dropped unrun",
            self.sessions,
            self.alone.len(),
            row("probe (another tenant) alone", &self.alone),
            row("probe right after they left", &self.after),
            self.ratio(),
            self.busy_after_ms,
            self.jobs_ran,
            self.jobs_abandoned
        )
    }
}

pub async fn run(args: Args) -> anyhow::Result<AbandonReport> {
    let speech = Arc::new(crate::load_question(&args)?);
    let keys = TokenKeys::new(&args.secret);
    let plan = |user: String, tenant: &str| Plan {
        url: args.url.clone(),
        token: keys.mint(&user, tenant, Role::Technician, 3600),
        source: Ipv4Addr::LOCALHOST,
        pipeline: args.pipeline.clone(),
        scenario: Scenario::Abandon,
        transport: crate::Transport::Websocket,
        speech: speech.clone(),
        hold_until: Instant::now(),
        burst_at: Instant::now(),
        interval: Duration::ZERO,
        first_question_offset: Duration::ZERO,
        mic: None,
    };
    let metrics = Gauges::new(&args.url, keys.mint("load-ops", &args.tenant, Role::Ops, 3600))?;

    let mut probe = session::connect(&plan("probe".into(), &args.probe_tenant)).await.map_err(anyhow::Error::msg)?;
    let mut ask = async |what: &str| {
        session::ask(&mut probe, &speech).await.map_err(anyhow::Error::msg).context(what.to_string())
    };
    // Warms the probe tenant's caches, so every timed ask meets the same caches.
    ask("probe warm-up").await?;

    let before = metrics.jobs().await?;
    let left = leave_all(&args, &speech, &plan).await?;
    let busy_after = metrics.quiet_after(left).await?;
    let after_round = metrics.jobs().await?;

    let (mut alone, mut after) = (Vec::new(), Vec::new());
    for _ in 0..args.rounds.max(1) {
        alone.push(ask("probe alone").await?);
        leave_all(&args, &speech, &plan).await?;
        after.push(ask("probe after").await?);
    }
    Ok(AbandonReport {
        sessions: args.sessions,
        baseline_ms: median(alone.iter().map(|t| t.client_v2v_ms)),
        after_ms: median(after.iter().map(|t| t.client_v2v_ms)),
        alone,
        after,
        busy_after_ms: busy_after.as_secs_f64() * 1000.0,
        jobs_ran: after_round.ran - before.ran,
        jobs_abandoned: after_round.abandoned - before.abandoned,
    })
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    Percentiles::of(values.collect()).p50
}

/// Connects `--sessions` technicians, has them all ask, and returns when the last of them
/// has hung up.
async fn leave_all(args: &Args, speech: &Arc<Speech>, plan: &impl Fn(String, &str) -> Plan) -> anyhow::Result<Instant> {
    let mut sockets: Vec<Ws> = Vec::with_capacity(args.sessions);
    for i in 0..args.sessions {
        let ws = session::connect(&plan(format!("load-user-{i}"), &args.tenant)).await.map_err(anyhow::Error::msg)?;
        sockets.push(ws);
    }
    let tasks: Vec<_> = sockets
        .into_iter()
        .map(|ws| {
            let speech = speech.clone();
            tokio::spawn(async move { session::ask_and_leave(ws, &speech).await })
        })
        .collect();
    let mut last = Instant::now();
    for t in tasks {
        last = last.max(t.await.context("client task")?.map_err(anyhow::Error::msg)?);
    }
    Ok(last)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Jobs {
    ran: u64,
    abandoned: u64,
}

/// The server's `/metrics`, read with an ops token.
struct Gauges {
    client: reqwest::Client,
    url: String,
    token: String,
}

impl Gauges {
    fn new(realtime_url: &str, token: String) -> anyhow::Result<Self> {
        let base = realtime_url.replacen("ws://", "http://", 1);
        let url = base.strip_suffix("/v1/realtime").context("--url must end in /v1/realtime")?.to_string() + "/metrics";
        Ok(Self { client: reqwest::Client::new(), url, token })
    }

    async fn jobs(&self) -> anyhow::Result<Jobs> {
        let text = self.client.get(&self.url).bearer_auth(&self.token).send().await?.error_for_status()?.text().await?;
        let sum = |outcome: &str| -> u64 {
            text.lines()
                .filter(|l| l.starts_with("fieldvox_pool_jobs_total{") && l.contains(&format!("outcome=\"{outcome}\"")))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .sum()
        };
        Ok(Jobs { ran: sum("ran"), abandoned: sum("abandoned") })
    }

    /// How long after `since` the job counters last changed.
    async fn quiet_after(&self, since: Instant) -> anyhow::Result<Duration> {
        let mut last = self.jobs().await?;
        let mut changed = since;
        while changed.elapsed() < QUIET {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = self.jobs().await?;
            if now != last {
                last = now;
                changed = Instant::now();
            }
        }
        Ok(changed.saturating_duration_since(since))
    }
}
