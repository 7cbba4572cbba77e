//! The run's report: JSON for machines, a table for people.

use std::time::Duration;

use serde::Serialize;

use crate::mic::{LATE_AFTER, MAX_LATE_FRACTION, MicOutcome, NoiseColour};
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

/// What WebRTC sessions sent and received, per session.
#[derive(Debug, Clone, Serialize)]
pub struct MediaRates {
    /// While the microphone sends / while answer audio arrives.
    pub up_flowing_kbps: f64,
    pub down_flowing_kbps: f64,
    /// Over each session's whole time (questions, answers and the pauses between).
    pub up_kbps: f64,
    pub down_kbps: f64,
}

impl MediaRates {
    fn of(outcomes: &[SessionOutcome]) -> Option<Self> {
        let media: Vec<_> = outcomes.iter().filter_map(|o| o.media).collect();
        let seconds: f64 = media.iter().map(|m| m.seconds).sum();
        if seconds <= 0.0 {
            return None;
        }
        let total = |f: fn(&crate::session::MediaBytes) -> u64| media.iter().map(f).sum::<u64>() as f64;
        let kbps = |bytes: f64, secs: f64| if secs > 0.0 { bytes * 8.0 / 1000.0 / secs } else { 0.0 };
        let (sent, received) = (total(|m| m.sent), total(|m| m.received));
        Some(Self {
            up_flowing_kbps: kbps(sent, total(|m| m.sent_packets) * 0.02),
            down_flowing_kbps: kbps(received, total(|m| m.received_packets) * 0.02),
            up_kbps: kbps(sent, seconds),
            down_kbps: kbps(received, seconds),
        })
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: Scenario,
    pub transport: crate::Transport,
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
    /// `mic` only: what the microphones sent and what the server made of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mic: Option<MicSummary>,
    /// Sessions told `session.going_away` that connected again, and of those, the ones
    /// whose next question was answered; turns that failed while their server went away.
    pub moved: usize,
    pub moved_answered: usize,
    pub failed_while_going_away: usize,
    /// WebRTC: the Opus payload each way, kbit/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media: Option<MediaRates>,
    /// `--flood-sessions`: what the flooding tenant did meanwhile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flood: Option<crate::flood::FloodSummary>,
}

/// The `mic` scenario's own figures (see `mic`).
#[derive(Debug, Serialize)]
pub struct MicSummary {
    /// Noise level, dBFS RMS; absent for digital silence.
    pub noise_dbfs: Option<f32>,
    pub noise_colour: NoiseColour,
    /// Gain and delay of the answer heard back; absent without echo.
    pub echo_gain_db: Option<f32>,
    pub echo_delay_ms: Option<u64>,
    /// Audio per microphone message.
    pub frame_ms: u64,
    pub questions_asked: usize,
    pub questions_answered: usize,
    /// Turns the server took that no question or interruption explains.
    pub spurious_turns: usize,
    /// `output_audio_buffer.clear` events: answers cut off.
    pub clears: usize,
    pub server_errors: usize,
    pub first_server_errors: Vec<String>,
    pub frames_sent: u64,
    /// Frames handed to the socket more than one frame behind their schedule.
    pub frames_late: u64,
    pub frames_late_percent: f64,
    pub worst_late_ms: f64,
    /// Late frames within `mic::MAX_LATE_FRACTION`: the server was fed real time, so the
    /// run measures the server. An invalid run measures the load generator.
    pub valid: bool,
    /// The server's `audio_end_ms` − the question's true end in the stream − the
    /// end-of-speech window: its decision lag in stream time, free of any scheduling.
    pub end_of_speech_stream_ms: Percentiles,
    /// Last question frame sent → `speech_stopped` received − the end-of-speech window.
    pub end_of_speech_client_ms: Percentiles,
    /// `--barge-in-after-ms` and `--barge-in-text`; absent without barge-in.
    pub barge_in_after_ms: Option<u64>,
    pub barge_in_text: Option<String>,
    /// Interruptions said over an answer still playing.
    pub barge_ins_attempted: usize,
    /// Of those, answers the server cleared.
    pub barge_ins_confirmed: usize,
    /// Of those, answers that played out with no clear. Attempted − confirmed − missed:
    /// still undecided when the run ended.
    pub barge_ins_missed: usize,
    /// Answers not interrupted: played out or cleared before the barge-in was due, or the
    /// microphone was busy with a question then.
    pub barge_ins_not_attempted: usize,
    /// Per confirmed barge-in: its first frame (speech) sent → the answer's clear received.
    pub barge_in_onset_to_clear_ms: Percentiles,
}

impl MicSummary {
    fn of(args: &Args, outcomes: &[SessionOutcome]) -> Self {
        let mics: Vec<&MicOutcome> = outcomes.iter().filter_map(|o| o.mic.as_ref()).collect();
        let frames_sent: u64 = mics.iter().map(|m| m.frames_sent).sum();
        let frames_late: u64 = mics.iter().map(|m| m.frames_late).sum();
        let late_fraction = if frames_sent == 0 { 0.0 } else { frames_late as f64 / frames_sent as f64 };
        let window = args.end_of_speech_ms;
        let past_window = |lags: Vec<f64>| Percentiles::of(lags.into_iter().map(|ms| ms - window).collect());
        Self {
            noise_dbfs: args.noise_dbfs.is_finite().then_some(args.noise_dbfs),
            noise_colour: args.noise_colour,
            echo_gain_db: args.echo_gain_db,
            echo_delay_ms: args.echo_gain_db.map(|_| args.echo_delay_ms),
            frame_ms: args.frame_ms,
            questions_asked: mics.iter().map(|m| m.questions_asked).sum(),
            questions_answered: outcomes.iter().filter(|o| o.mic.is_some()).map(|o| o.turns.len()).sum(),
            spurious_turns: mics.iter().map(|m| m.spurious_turns).sum(),
            clears: mics.iter().map(|m| m.clears).sum(),
            server_errors: mics.iter().map(|m| m.server_errors).sum(),
            first_server_errors: mics.iter().filter_map(|m| m.first_error.clone()).take(5).collect(),
            frames_sent,
            frames_late,
            frames_late_percent: late_fraction * 100.0,
            worst_late_ms: mics.iter().map(|m| m.worst_late_ms).fold(0.0, f64::max),
            valid: frames_sent > 0 && late_fraction <= MAX_LATE_FRACTION,
            end_of_speech_stream_ms: past_window(
                mics.iter().flat_map(|m| m.end_of_speech_stream_ms.iter().copied()).collect(),
            ),
            end_of_speech_client_ms: past_window(
                mics.iter().flat_map(|m| m.end_of_speech_client_ms.iter().copied()).collect(),
            ),
            barge_in_after_ms: args.barge_in_after_ms,
            barge_in_text: args.barge_in_after_ms.map(|_| args.barge_in_text.clone()),
            barge_ins_attempted: mics.iter().map(|m| m.barge_ins_attempted).sum(),
            barge_ins_confirmed: mics.iter().map(|m| m.barge_ins_confirmed).sum(),
            barge_ins_missed: mics.iter().map(|m| m.barge_ins_missed).sum(),
            barge_ins_not_attempted: mics.iter().map(|m| m.barge_ins_not_attempted).sum(),
            barge_in_onset_to_clear_ms: Percentiles::of(
                mics.iter().flat_map(|m| m.barge_in_onset_to_clear_ms.iter().copied()).collect(),
            ),
        }
    }

    /// First and last in the table when the run is invalid, so it cannot be missed.
    fn banner(&self) -> Option<String> {
        if self.valid {
            return None;
        }
        if self.frames_sent == 0 {
            return Some("!!! INVALID RUN: no microphone frame was sent !!!\n".into());
        }
        Some(format!(
            "!!! INVALID RUN: {} of {} microphone frames ({:.3}%, limit {:.3}%) went out more than {} ms behind \
             schedule: the load generator fell behind real time, so these figures do not measure the server !!!\n",
            self.frames_late,
            self.frames_sent,
            self.frames_late_percent,
            MAX_LATE_FRACTION * 100.0,
            LATE_AFTER.as_millis()
        ))
    }

    fn lines(&self) -> String {
        let noise = match self.noise_dbfs {
            Some(db) => format!("{} noise at {db:.1} dBFS", self.noise_colour.name()),
            None => "digital silence".to_string(),
        };
        let echo = match (self.echo_gain_db, self.echo_delay_ms) {
            (Some(db), Some(ms)) => format!("answers heard back at {db:.1} dB after {ms} ms"),
            _ => "no echo".to_string(),
        };
        let barge_ins = match self.barge_in_after_ms {
            Some(ms) => format!(
                "barge-ins {ms} ms into an answer: {} attempted, {} confirmed (answer cleared), {} missed \
                 (answer played out), {} not attempted (answer over or microphone busy)\n",
                self.barge_ins_attempted, self.barge_ins_confirmed, self.barge_ins_missed, self.barge_ins_not_attempted
            ),
            None => String::new(),
        };
        format!(
            "microphones: {noise}, {echo}, {} ms frames\n\
             questions: {} asked, {} answered; spurious turns {}; answers cleared {}; server errors {}\n\
             {barge_ins}\
             frames: {} sent, {} late (> {} ms behind schedule: {:.3}%, limit {:.3}%), worst {:.0} ms late: {}\n",
            self.frame_ms,
            self.questions_asked,
            self.questions_answered,
            self.spurious_turns,
            self.clears,
            self.server_errors,
            self.frames_sent,
            self.frames_late,
            LATE_AFTER.as_millis(),
            self.frames_late_percent,
            MAX_LATE_FRACTION * 100.0,
            self.worst_late_ms,
            if self.valid { "valid" } else { "INVALID" }
        )
    }
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
        let mic = (args.scenario == Scenario::Mic).then(|| MicSummary::of(args, &outcomes));
        let media = MediaRates::of(&outcomes);
        Self {
            moved: outcomes.iter().map(|o| o.moved).sum(),
            moved_answered: outcomes.iter().map(|o| o.moved_answered).sum(),
            failed_while_going_away: outcomes.iter().map(|o| o.failed_while_going_away).sum(),
            scenario: args.scenario,
            transport: args.transport,
            media,
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
            mic,
            flood: None,
        }
    }

    /// Writes the report to `--report`, if given.
    pub fn write_json(self, args: &Args) -> Self {
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
            "scenario {:?} over {:?}: {} sessions, {} connected, {} connect failures, {} dropped, {} turns ok, {} failed, {:.0} s\n",
            self.scenario,
            self.transport,
            self.sessions,
            self.connected,
            self.connect_failures,
            self.dropped,
            self.turns_completed,
            self.turns_failed,
            self.duration_secs
        );
        if let Some(flood) = &self.flood {
            out.push_str(&flood.line());
        }
        if self.moved > 0 || self.failed_while_going_away > 0 {
            out.push_str(&format!(
                "going away: {} sessions moved to another instance, {} answered there; {} turns failed while \
                 their server went away, {} otherwise\n",
                self.moved,
                self.moved_answered,
                self.failed_while_going_away,
                self.turns_failed - self.failed_while_going_away
            ));
        }
        let banner = self.mic.as_ref().and_then(MicSummary::banner);
        if let Some(banner) = &banner {
            out.insert_str(0, banner);
        }
        out.push_str(&format!(
            "{:<22} {:>7} {:>9} {:>9} {:>9} {:>9}\n",
            "latency (ms)", "n", "p50", "p95", "p99", "max"
        ));
        let mut rows = vec![
            ("connect", &self.connect_ms),
            ("voice-to-voice", &self.voice_to_voice_ms),
            ("server-added", &self.server_added_ms),
            ("server v2v (own clock)", &self.server_voice_to_voice_ms),
            ("endpointing delay", &self.endpointing_ms),
            ("stt", &self.stt_ms),
            ("retrieval", &self.retrieval_ms),
            ("llm first token", &self.llm_first_token_ms),
            ("tts first audio", &self.tts_first_audio_ms),
        ];
        if let Some(mic) = &self.mic {
            rows.push(("end-of-speech (stream)", &mic.end_of_speech_stream_ms));
            rows.push(("end-of-speech (client)", &mic.end_of_speech_client_ms));
            rows.push(("barge-in onset→clear", &mic.barge_in_onset_to_clear_ms));
        }
        for (name, p) in rows {
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
        if let Some(mic) = &self.mic {
            out.push_str(&mic.lines());
        }
        if let Some(m) = &self.media {
            out.push_str(&format!(
                "Opus payload while audio flows: up {:.1} kbit/s, down {:.1} kbit/s (PCM16 at 16 kHz: 256); \
                 over each session's whole time: up {:.1}, down {:.1}\n",
                m.up_flowing_kbps, m.down_flowing_kbps, m.up_kbps, m.down_kbps
            ));
        }
        let mic_errors = self.mic.iter().flat_map(|m| &m.first_server_errors);
        for e in self
            .first_connect_errors
            .iter()
            .chain(&self.first_drop_reasons)
            .chain(&self.first_turn_errors)
            .chain(mic_errors)
        {
            out.push_str(&format!("  e.g. {e}\n"));
        }
        out.push_str(&banner.unwrap_or_default());
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
