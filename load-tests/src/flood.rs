//! `--flood-sessions N`: one tenant floods while the scenario's sessions talk. N sessions
//! of `--flood-tenant` (one user each) ask `--question` as typed text back to back: each
//! its next as soon as the last is answered, or, refused, after the `retry_after_ms` it
//! was given. Run the same scenario with and without it, in one sitting, to see what a
//! flooding tenant costs the well-behaved ones (README, "Benchmarks").

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fieldvox::auth::{Role, TokenKeys};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::session::{self, Plan, Ws};
use crate::{Args, Speech};

/// What the flood did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct FloodSummary {
    pub tenant: String,
    pub sessions: usize,
    pub answered: usize,
    /// Refused by a pool with `overloaded` (its backlog would wait too long).
    pub overloaded: usize,
    /// Refused by the turn limits.
    pub rate_limited: usize,
    pub failed: usize,
}

impl FloodSummary {
    pub fn line(&self) -> String {
        format!(
            "flood: {} sessions of tenant {}: {} answered, {} overloaded, {} rate limited, {} failed\n",
            self.sessions, self.tenant, self.answered, self.overloaded, self.rate_limited, self.failed
        )
    }
}

/// Starts the flood's sessions; they stop at `until`.
pub fn start(
    args: &Args,
    keys: &TokenKeys,
    source: Ipv4Addr,
    speech: Arc<Speech>,
    until: Instant,
) -> Vec<JoinHandle<FloodSummary>> {
    (0..args.flood_sessions)
        .map(|i| {
            let plan = Plan {
                url: args.url.clone(),
                token: keys.mint(&format!("flood-user-{i}"), &args.flood_tenant, Role::Technician, 3600),
                source,
                pipeline: args.pipeline.clone(),
                scenario: args.scenario,
                transport: crate::Transport::Websocket,
                speech: speech.clone(),
                hold_until: until,
                burst_at: until,
                interval: Duration::ZERO,
                first_question_offset: Duration::ZERO,
                mic: None,
            };
            tokio::spawn(flood(plan, args.question.clone(), args.flood_tenant.clone()))
        })
        .collect()
}

/// Adds up the sessions' counts.
pub async fn finish(tasks: Vec<JoinHandle<FloodSummary>>) -> Option<FloodSummary> {
    let mut total: Option<FloodSummary> = None;
    for task in tasks {
        let Ok(s) = task.await else { continue };
        let t = total.get_or_insert_with(|| FloodSummary { tenant: s.tenant.clone(), ..FloodSummary::default() });
        t.sessions += s.sessions;
        t.answered += s.answered;
        t.overloaded += s.overloaded;
        t.rate_limited += s.rate_limited;
        t.failed += s.failed;
    }
    total
}

async fn flood(plan: Plan, question: String, tenant: String) -> FloodSummary {
    let mut summary = FloodSummary { tenant, sessions: 1, ..FloodSummary::default() };
    let Ok(mut ws) = session::connect(&plan).await else {
        summary.failed += 1;
        return summary;
    };
    let ask = json!({"type": "conversation.item.create", "item": {"text": question}}).to_string();
    while Instant::now() < plan.hold_until {
        if ws.send(Message::text(ask.clone())).await.is_err() {
            summary.failed += 1;
            break;
        }
        let wait = match outcome(&mut ws, plan.hold_until).await {
            Some(Outcome::Answered) => {
                summary.answered += 1;
                None
            }
            Some(Outcome::Refused { overloaded, retry_after }) => {
                if overloaded {
                    summary.overloaded += 1
                } else {
                    summary.rate_limited += 1
                }
                Some(retry_after)
            }
            Some(Outcome::Failed) => {
                summary.failed += 1;
                Some(Duration::from_millis(100))
            }
            None => break,
        };
        if let Some(wait) = wait {
            tokio::time::sleep(wait.min(plan.hold_until.saturating_duration_since(Instant::now()))).await;
        }
    }
    let _ = ws.close(None).await;
    summary
}

enum Outcome {
    Answered,
    Refused { overloaded: bool, retry_after: Duration },
    Failed,
}

/// How the question just asked ended; `None` when the connection did or time ran out.
async fn outcome(ws: &mut Ws, until: Instant) -> Option<Outcome> {
    let retry = |e: &Value| Duration::from_millis(e["retry_after_ms"].as_u64().unwrap_or(1000));
    loop {
        let msg = tokio::time::timeout(until.saturating_duration_since(Instant::now()), ws.next()).await.ok()??;
        let Ok(Message::Text(text)) = msg else {
            if msg.is_err() {
                return None;
            }
            continue;
        };
        let Ok(event) = serde_json::from_str::<Value>(&text) else { continue };
        match event["type"].as_str() {
            Some("error") if event["error"]["code"] == "rate_limited" => {
                return Some(Outcome::Refused { overloaded: false, retry_after: retry(&event["error"]) });
            }
            // An earlier question's answer, cut off by this one.
            Some("response.done") if event["status"] == "cancelled" => {}
            Some("response.done") if event["status"] == "completed" => return Some(Outcome::Answered),
            Some("response.done") => {
                let error = &event["error"];
                return Some(if error["code"] == "overloaded" {
                    Outcome::Refused { overloaded: true, retry_after: retry(error) }
                } else {
                    Outcome::Failed
                });
            }
            _ => {}
        }
    }
}
