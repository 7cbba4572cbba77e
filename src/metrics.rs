//! Every gauge, counter and histogram fieldvox exports, recorded through typed
//! methods so metric names and labels live in one place.

use std::sync::LazyLock;

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

/// What became of one inference job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    Ran,
    /// Its caller was gone before a worker took it (a cancelled turn, a closed session),
    /// so it was dropped without running.
    Abandoned,
    Panicked,
}

impl JobOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            JobOutcome::Ran => "ran",
            JobOutcome::Abandoned => "abandoned",
            JobOutcome::Panicked => "panicked",
        }
    }
}

/// Jobs by worker pool and outcome. Process-wide, because pools are built before (and
/// shared beyond) any one `Metrics`; every registry exports it.
static POOL_JOBS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    IntCounterVec::new(Opts::new("pool_jobs_total", "Inference jobs by pool and outcome"), &["pool", "outcome"])
        .expect("valid metric")
});

/// Records what became of a job of `pool`.
pub fn pool_job(pool: &str, outcome: JobOutcome) {
    POOL_JOBS.with_label_values(&[pool, outcome.as_str()]).inc();
}

/// Pipeline stages whose latency is measured per turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Stt,
    Embed,
    Retrieval,
    LlmFirstToken,
    TtsFirstAudio,
    VoiceToVoice,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Stt => "stt",
            Stage::Embed => "embed",
            Stage::Retrieval => "retrieval",
            Stage::LlmFirstToken => "llm_first_token",
            Stage::TtsFirstAudio => "tts_first_audio",
            Stage::VoiceToVoice => "voice_to_voice",
        }
    }
}

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    sessions_active: IntGaugeVec,
    sessions_opened: IntCounterVec,
    turns: IntCounterVec,
    stage_seconds: HistogramVec,
    errors: IntCounterVec,
    answers: IntCounterVec,
    reaped: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("fieldvox".into()), None).expect("valid prefix");
        let sessions_active =
            IntGaugeVec::new(Opts::new("sessions_active", "Sessions currently open, by transport"), &["transport"])
                .expect("valid metric");
        let sessions_opened =
            IntCounterVec::new(Opts::new("sessions_opened_total", "Sessions opened, by transport"), &["transport"])
                .expect("valid metric");
        let turns =
            IntCounterVec::new(Opts::new("turns_total", "Voice or text turns finished, by status"), &["status"])
                .expect("valid metric");
        let stage_seconds = HistogramVec::new(
            HistogramOpts::new("stage_latency_seconds", "Per-turn latency of each pipeline stage")
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0]),
            &["stage"],
        )
        .expect("valid metric");
        let errors =
            IntCounterVec::new(Opts::new("errors_total", "Errors reported to clients, by stable code"), &["code"])
                .expect("valid metric");
        let answers = IntCounterVec::new(
            Opts::new(
                "answers_total",
                "Answers by how they were made: extractive, generated, fallback (a generated sentence failed \
                 the grounding check), not_found",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let reaped = IntCounterVec::new(
            Opts::new(
                "connections_reaped_total",
                "Connections the server closed itself, by reason: handshake_timeout, keep_alive_timeout, \
                 header_read_timeout, per_ip_cap, shutdown",
            ),
            &["reason"],
        )
        .expect("valid metric");
        for c in [
            Box::new(answers.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(reaped.clone()),
            Box::new(sessions_active.clone()),
            Box::new(sessions_opened.clone()),
            Box::new(turns.clone()),
            Box::new(stage_seconds.clone()),
            Box::new(errors.clone()),
            Box::new(POOL_JOBS.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        Self { registry, sessions_active, sessions_opened, turns, stage_seconds, errors, answers, reaped }
    }

    pub fn session_opened(&self, transport: &str) {
        self.sessions_active.with_label_values(&[transport]).inc();
        self.sessions_opened.with_label_values(&[transport]).inc();
    }

    pub fn session_closed(&self, transport: &str) {
        self.sessions_active.with_label_values(&[transport]).dec();
    }

    pub fn turn_finished(&self, status: &str) {
        self.turns.with_label_values(&[status]).inc();
    }

    pub fn stage(&self, stage: Stage, ms: f64) {
        self.stage_seconds.with_label_values(&[stage.as_str()]).observe(ms / 1000.0);
    }

    pub fn answer(&self, kind: &str) {
        self.answers.with_label_values(&[kind]).inc();
    }

    pub fn error(&self, code: &str) {
        self.errors.with_label_values(&[code]).inc();
    }

    pub fn connection_reaped(&self, reason: &str) {
        self.reaped.with_label_values(&[reason]).inc();
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_recorded_values() {
        let m = Metrics::new();
        m.session_opened("websocket");
        m.session_opened("websocket");
        m.session_closed("websocket");
        m.turn_finished("completed");
        m.stage(Stage::Stt, 120.0);
        m.error("invalid_json");
        let text = m.render();
        assert!(text.contains("fieldvox_sessions_active{transport=\"websocket\"} 1"), "{text}");
        assert!(text.contains("fieldvox_turns_total{status=\"completed\"} 1"));
        assert!(text.contains("fieldvox_stage_latency_seconds_count{stage=\"stt\"} 1"));
        assert!(text.contains("fieldvox_errors_total{code=\"invalid_json\"} 1"));
    }
}
