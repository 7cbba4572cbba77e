//! The run's report: JSON for machines, a table for people.

use std::time::Duration;

use serde::Serialize;

use crate::proc_stats::Sample;
use crate::session::SessionOutcome;
use crate::{Args, Scenario};

#[derive(Debug, Default, Serialize)]
pub struct Percentiles {
    pub count: usize,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(mut values: Vec<f64>) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        values.sort_by(|a, b| a.total_cmp(b));
        let at = |q: f64| values[((values.len() as f64 - 1.0) * q).round() as usize];
        Self { count: values.len(), p50: at(0.50), p95: at(0.95), p99: at(0.99), max: at(1.0) }
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: Scenario,
    pub sessions: usize,
    pub connected: usize,
    pub connect_failures: usize,
    pub first_connect_errors: Vec<String>,
    pub dropped: usize,
    pub first_drop_reasons: Vec<String>,
    pub turns_completed: usize,
    pub turns_failed: usize,
    pub first_turn_errors: Vec<String>,
    pub connect_ms: Percentiles,
    /// Last speech frame sent → first answer audio frame received, at the client.
    pub voice_to_voice_ms: Percentiles,
    /// voice_to_voice − end-of-speech window − the reference providers' fixed latencies
    /// that were on the path (transcription only as far as it was not hidden in the pause).
    pub server_added_ms: Percentiles,
    /// Server's own clock: end of utterance detected → first answer audio frame sent.
    pub server_voice_to_voice_ms: Percentiles,
    /// How late the utterance end was detected past the silence window, plus transport:
    /// client voice-to-voice − server voice-to-voice − end-of-speech window.
    pub endpointing_ms: Percentiles,
    pub stt_ms: Percentiles,
    pub retrieval_ms: Percentiles,
    pub llm_first_token_ms: Percentiles,
    pub tts_first_audio_ms: Percentiles,
    pub server_rss_baseline_kb: Option<u64>,
    pub server_rss_steady_kb: Option<u64>,
    pub server_rss_peak_kb: u64,
    /// (steady − baseline) / connected sessions.
    pub server_rss_per_session_kb: Option<f64>,
    pub server_cpu_avg_percent: Option<f64>,
    pub server_cpu_max_percent: Option<f64>,
    pub duration_secs: f64,
}

impl Report {
    pub fn build(
        args: &Args,
        outcomes: Vec<SessionOutcome>,
        baseline: Option<Sample>,
        steady: Option<Sample>,
        peak_rss_kb: u64,
        cpu: Vec<f64>,
        elapsed: Duration,
    ) -> Self {
        let connected = outcomes.iter().filter(|o| o.connected).count();
        let turns: Vec<_> = outcomes.iter().flat_map(|o| o.turns.iter()).collect();
        let stage = |f: &dyn Fn(&crate::session::ServerTimings) -> Option<f64>| {
            Percentiles::of(turns.iter().filter_map(|t| f(&t.server)).collect())
        };
        let first = |it: &mut dyn Iterator<Item = String>| it.take(5).collect::<Vec<_>>();
        let fixed = |t: &crate::session::Turn| {
            let stt_on_path = t.server.stt_ms.unwrap_or(args.reference_stt_ms).min(args.reference_stt_ms);
            args.end_of_speech_ms + args.reference_ms - args.reference_stt_ms + stt_on_path
        };
        let per_session = match (baseline, steady) {
            (Some(b), Some(s)) if connected > 0 => Some((s.rss_kb as f64 - b.rss_kb as f64) / connected as f64),
            _ => None,
        };
        let cpu_avg = (!cpu.is_empty()).then(|| cpu.iter().sum::<f64>() / cpu.len() as f64);
        Self {
            scenario: args.scenario,
            sessions: outcomes.len(),
            connected,
            connect_failures: outcomes.len() - connected,
            first_connect_errors: first(&mut outcomes.iter().filter_map(|o| o.connect_error.clone())),
            dropped: outcomes.iter().filter(|o| o.dropped.is_some()).count(),
            first_drop_reasons: first(&mut outcomes.iter().filter_map(|o| o.dropped.clone())),
            turns_completed: turns.len(),
            turns_failed: outcomes.iter().map(|o| o.failed_turns.len()).sum(),
            first_turn_errors: first(&mut outcomes.iter().flat_map(|o| o.failed_turns.iter().cloned())),
            connect_ms: Percentiles::of(outcomes.iter().filter(|o| o.connected).map(|o| o.connect_ms).collect()),
            voice_to_voice_ms: Percentiles::of(turns.iter().map(|t| t.client_v2v_ms).collect()),
            server_added_ms: Percentiles::of(turns.iter().map(|t| t.client_v2v_ms - fixed(t)).collect()),
            server_voice_to_voice_ms: stage(&|s| s.voice_to_voice_ms),
            endpointing_ms: Percentiles::of(
                turns
                    .iter()
                    .filter_map(|t| t.server.voice_to_voice_ms.map(|v| t.client_v2v_ms - v - args.end_of_speech_ms))
                    .collect(),
            ),
            stt_ms: stage(&|s| s.stt_ms),
            retrieval_ms: stage(&|s| s.retrieval_ms),
            llm_first_token_ms: stage(&|s| s.llm_first_token_ms),
            tts_first_audio_ms: stage(&|s| s.tts_first_audio_ms),
            server_rss_baseline_kb: baseline.map(|s| s.rss_kb),
            server_rss_steady_kb: steady.map(|s| s.rss_kb),
            server_rss_peak_kb: peak_rss_kb,
            server_rss_per_session_kb: per_session,
            server_cpu_avg_percent: cpu_avg,
            server_cpu_max_percent: cpu.iter().copied().reduce(f64::max),
            duration_secs: elapsed.as_secs_f64(),
        }
        .write_json(args)
    }

    fn write_json(self, args: &Args) -> Self {
        if let Some(path) = &args.report {
            match serde_json::to_vec_pretty(&self) {
                Ok(bytes) => {
                    if let Err(e) = std::fs::write(path, bytes) {
                        eprintln!("cannot write report {}: {e}", path.display());
                    }
                }
                Err(e) => eprintln!("cannot encode report: {e}"),
            }
        }
        self
    }

    pub fn table(&self) -> String {
        let mut out = format!(
            "scenario {:?}: {} sessions, {} connected, {} connect failures, {} dropped, {} turns ok, {} failed, {:.0} s\n",
            self.scenario,
            self.sessions,
            self.connected,
            self.connect_failures,
            self.dropped,
            self.turns_completed,
            self.turns_failed,
            self.duration_secs
        );
        out.push_str(&format!(
            "{:<22} {:>7} {:>9} {:>9} {:>9} {:>9}\n",
            "latency (ms)", "n", "p50", "p95", "p99", "max"
        ));
        for (name, p) in [
            ("connect", &self.connect_ms),
            ("voice-to-voice", &self.voice_to_voice_ms),
            ("server-added", &self.server_added_ms),
            ("server v2v (own clock)", &self.server_voice_to_voice_ms),
            ("endpointing delay", &self.endpointing_ms),
            ("stt", &self.stt_ms),
            ("retrieval", &self.retrieval_ms),
            ("llm first token", &self.llm_first_token_ms),
            ("tts first audio", &self.tts_first_audio_ms),
        ] {
            if p.count > 0 {
                out.push_str(&format!(
                    "{name:<22} {:>7} {:>9.1} {:>9.1} {:>9.1} {:>9.1}\n",
                    p.count, p.p50, p.p95, p.p99, p.max
                ));
            }
        }
        if let Some(rss) = self.server_rss_steady_kb {
            out.push_str(&format!(
                "server RSS: baseline {} KB, steady {} KB, peak {} KB, per session {:.1} KB\n",
                self.server_rss_baseline_kb.unwrap_or(0),
                rss,
                self.server_rss_peak_kb,
                self.server_rss_per_session_kb.unwrap_or(0.0)
            ));
        }
        if let Some(avg) = self.server_cpu_avg_percent {
            out.push_str(&format!(
                "server CPU: avg {avg:.0}%, max {:.0}% (100% = one core)\n",
                self.server_cpu_max_percent.unwrap_or(0.0)
            ));
        }
        for e in self.first_connect_errors.iter().chain(&self.first_drop_reasons).chain(&self.first_turn_errors) {
            out.push_str(&format!("  e.g. {e}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let p = Percentiles::of((1..=100).map(f64::from).collect());
        assert_eq!((p.count, p.p50, p.p99, p.max), (100, 51.0, 99.0, 100.0));
        assert_eq!(Percentiles::of(vec![]).count, 0);
    }
}
