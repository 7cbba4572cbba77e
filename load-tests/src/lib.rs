//! fieldvox-load: opens many authenticated sessions against a fieldvox server on this
//! machine and runs a scenario (idle, talk, burst, mic), then reports connection outcomes,
//! latency percentiles and the server's memory and CPU. Also home of the load-test
//! reference provider server (`reference`).
//!
//! Loopback only, bounded in sessions and time.

pub mod abandon;
pub mod eval;
pub mod flood;
pub mod mic;
pub mod proc_stats;
pub mod reference;
pub mod report;
pub mod rtc;
pub mod session;

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use fieldvox::auth::{Role, TokenKeys};

use crate::report::Report;
use crate::session::{Plan, SessionOutcome};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Connect, configure, then only keep-alives.
    Idle,
    /// Each session asks the spoken question once per interval, in real time.
    Talk,
    /// Every session asks at the same instant, once.
    Burst,
    /// Sessions ask and hang up at their first answer text; a probe of another tenant is
    /// timed before and right after (see `abandon`).
    Abandon,
    /// Every session streams a live microphone for the whole run: noise, the question once
    /// per interval, optionally the answer heard back as echo and the user interrupting it
    /// (barge-in); counts spurious turns and frames sent late (see `mic`).
    Mic,
}

/// How sessions reach the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// `/v1/realtime`, PCM16 both ways.
    Websocket,
    /// `POST /v1/rtc`: one WebRTC peer per session, Opus RTP both ways (talk only).
    Webrtc,
}

#[derive(Parser, Debug)]
#[command(about = "Load generator for fieldvox: many sessions, real audio, latency and resource report")]
pub struct Args {
    /// Realtime endpoint (loopback only).
    #[arg(long, default_value = "ws://127.0.0.1:8080/v1/realtime")]
    pub url: String,
    #[arg(long, value_enum)]
    pub scenario: Scenario,
    /// How the sessions connect; `webrtc` runs the talk scenario only.
    #[arg(long, value_enum, default_value_t = Transport::Websocket)]
    pub transport: Transport,
    /// Concurrent sessions.
    #[arg(long, default_value_t = 100)]
    pub sessions: usize,
    /// Sessions opened per second during the ramp.
    #[arg(long, default_value_t = 1000.0)]
    pub ramp: f64,
    /// How long to hold all sessions after the ramp (idle, talk, mic).
    #[arg(long, default_value_t = 30)]
    pub hold_secs: u64,
    /// Talk, mic: seconds between one session's questions.
    #[arg(long, default_value_t = 30.0)]
    pub interval_secs: f64,
    /// Spoken question (WAV). Default: synthesized once with espeak-ng.
    #[arg(long)]
    pub wav: Option<PathBuf>,
    /// Question text when synthesizing.
    #[arg(long, default_value = "What torque for the compressor head bolts on the RTU-40?")]
    pub question: String,
    /// Pipeline profile the sessions ask for.
    #[arg(long, default_value = "load-reference")]
    pub pipeline: String,
    #[arg(long, default_value = "acme")]
    pub tenant: String,
    /// `abandon`: the probe technician's tenant (another company with the same manual).
    #[arg(long, default_value = "globex")]
    pub probe_tenant: String,
    /// `abandon`: probe answers timed each way (alone, right after the leavers); the
    /// report compares their medians.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// `mic`: background noise in every microphone, dBFS RMS; `off` for digital silence.
    #[arg(long, default_value = "-45", allow_negative_numbers = true, value_parser = mic::parse_noise_dbfs)]
    pub noise_dbfs: f32,
    /// `mic`: the noise's spectrum.
    #[arg(long, value_enum, default_value_t = mic::NoiseColour::Pink)]
    pub noise_colour: mic::NoiseColour,
    /// `mic`: each answer is heard back by the microphone at this gain, dB (e.g. -6), as on
    /// a speakerphone without echo cancellation. No echo when absent.
    #[arg(long, allow_negative_numbers = true)]
    pub echo_gain_db: Option<f32>,
    /// `mic`: loudspeaker-to-microphone delay of the echo.
    #[arg(long, default_value_t = 60)]
    pub echo_delay_ms: u64,
    /// `mic`: milliseconds of audio per microphone frame (one WebSocket message each).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(10..=200))]
    pub frame_ms: u64,
    /// `mic`: barge-in. This long after an answer's first audio, while it still plays, the
    /// session speaks `--barge-in-text` over it (once per answer, never over the
    /// interruption's own answer) and times the server's `output_audio_buffer.clear`.
    /// No barge-in when absent.
    #[arg(long)]
    pub barge_in_after_ms: Option<u64>,
    /// `mic`: what the barge-in says; synthesized once with espeak-ng, as the question is,
    /// and mixed in at the question's level.
    #[arg(long, default_value = "Stop. What about the oil filter?")]
    pub barge_in_text: String,
    /// The server's `auth.jwt_secret`, to mint one token per simulated user.
    #[arg(long, env = "FIELDVOX__AUTH__JWT_SECRET", default_value = fieldvox::auth::DEV_SECRET)]
    pub secret: String,
    /// Loopback source addresses to spread connections over (127.0.0.1 + N-1 more);
    /// one address runs out of ports near 28k connections.
    #[arg(long, default_value_t = 1)]
    pub source_ips: u8,
    /// Server process to sample RSS and CPU from (/proc).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// The reference providers' fixed latencies on the voice-to-voice path, ms (see
    /// `fieldvox-reference --help`; the default matches its defaults), subtracted to get
    /// server-added latency. 0 when running real models.
    #[arg(long, default_value_t = crate::reference::DEFAULT_PATH_MS)]
    pub reference_ms: f64,
    /// The reference's transcription latency (part of `--reference-ms`). fieldvox may
    /// hide it inside the silence window (speculative transcription): per turn, only the
    /// part still visible in `response.done` is subtracted.
    #[arg(long, default_value_t = 100.0)]
    pub reference_stt_ms: f64,
    /// The pipeline's end-of-speech silence window, ms, also subtracted.
    #[arg(long, default_value_t = 480.0)]
    pub end_of_speech_ms: f64,
    /// Talk, mic: this many sessions of `--flood-tenant` ask `--question` as typed text
    /// back to back for the whole run (see `flood`). 0: no flood.
    #[arg(long, default_value_t = 0)]
    pub flood_sessions: usize,
    #[arg(long, default_value = "globex")]
    pub flood_tenant: String,
    /// Write the JSON report here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Hard limit on the whole run.
    #[arg(long, default_value_t = 900)]
    pub max_secs: u64,
}

/// Checks the arguments, then runs the scenario to its report.
pub async fn run(args: Args) -> anyhow::Result<Report> {
    if args.sessions == 0 || args.sessions > 100_000 {
        bail!("--sessions must be between 1 and 100000");
    }
    let host = args.url.split("://").nth(1).and_then(|r| r.split(['/', ':']).next()).unwrap_or_default();
    let loopback = host == "localhost" || host.parse::<IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false);
    if !loopback {
        bail!("--url must point at a loopback address, got {host:?}");
    }
    if args.transport == Transport::Webrtc && args.scenario != Scenario::Talk {
        bail!("--transport webrtc runs --scenario talk only");
    }
    run_checked(args).await
}

async fn run_checked(args: Args) -> anyhow::Result<Report> {
    let speech = Arc::new(load_question(&args)?);
    let microphone = match args.scenario {
        Scenario::Mic => {
            mic::check(&args, &speech)?;
            let interruption = match args.barge_in_after_ms {
                Some(_) => Some(load_interruption(&args, &speech)?),
                None => None,
            };
            Some(mic::MicSetup::from_args(&args, interruption.as_ref()))
        }
        _ if args.barge_in_after_ms.is_some() => bail!("--barge-in-after-ms is for --scenario mic"),
        _ => None,
    };
    let keys = TokenKeys::new(&args.secret);
    let sources: Vec<Ipv4Addr> = (0..args.source_ips.max(1)).map(|i| Ipv4Addr::new(127, 0, 0, 1 + i)).collect();
    let mut sampler = args.server_pid.map(proc_stats::Sampler::new);
    let baseline = sampler.as_mut().and_then(|s| s.sample());

    let deadline = Instant::now() + Duration::from_secs(args.max_secs);
    let ramp_secs = args.sessions as f64 / args.ramp.max(1.0);
    let hold_until = Instant::now() + Duration::from_secs_f64(ramp_secs) + Duration::from_secs(args.hold_secs);
    // Burst: everyone asks at once, a moment after the last session connected.
    let burst_at = Instant::now() + Duration::from_secs_f64(ramp_secs + 2.0);
    let started = Instant::now();

    let flood = flood::start(&args, &keys, sources[0], speech.clone(), hold_until.min(deadline));
    let mut tasks = Vec::with_capacity(args.sessions);
    let gap = Duration::from_secs_f64(1.0 / args.ramp.max(1.0));
    let mut next = tokio::time::Instant::now();
    for i in 0..args.sessions {
        tokio::time::sleep_until(next).await;
        next += gap;
        let plan = Plan {
            url: args.url.clone(),
            token: keys.mint(&format!("load-user-{i}"), &args.tenant, Role::Technician, 3600),
            source: sources[i % sources.len()],
            pipeline: args.pipeline.clone(),
            scenario: args.scenario,
            transport: args.transport,
            speech: speech.clone(),
            hold_until: hold_until.min(deadline),
            burst_at,
            interval: Duration::from_secs_f64(args.interval_secs),
            first_question_offset: Duration::from_secs_f64(args.interval_secs * (i as f64 / args.sessions as f64)),
            mic: microphone.as_ref().map(|m| m.for_session(i)),
        };
        tasks.push(tokio::spawn(session::run(plan)));
        if i % 1000 == 999 {
            eprintln!("ramp: {} sessions opened", i + 1);
        }
    }
    eprintln!("ramp done in {:.1} s; holding", started.elapsed().as_secs_f64());

    // Sample the server while sessions are held.
    let mut steady = None;
    let mut peak_rss = 0;
    let mut cpu = Vec::new();
    while Instant::now() < hold_until.min(deadline) && tasks.iter().any(|t| !t.is_finished()) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Some(s) = sampler.as_mut().and_then(|s| s.sample()) {
            peak_rss = peak_rss.max(s.rss_kb);
            cpu.push(s.cpu_percent);
            steady = Some(s);
        }
    }
    let mut outcomes: Vec<SessionOutcome> = Vec::with_capacity(tasks.len());
    for t in tasks {
        outcomes.push(t.await.context("session task")?);
    }
    let flood = flood::finish(flood).await;
    let report = Report::build(&args, outcomes, baseline, steady, peak_rss, cpu, started.elapsed());
    Ok(Report { flood, ..report }.write_json(&args))
}

/// Speech as 16 kHz mono samples: the question, or the barge-in of `mic`.
pub struct Speech {
    pub samples: Vec<f32>,
    pub rate: u32,
}

/// Speech is found in 10 ms blocks (at 16 kHz) louder than this.
const VOICED_BLOCK: usize = 160;
const VOICED_DBFS: f32 = -50.0;

/// The question, ending where its speech ends.
pub(crate) fn load_question(args: &Args) -> anyhow::Result<Speech> {
    let mut samples = speech_samples(args.wav.as_deref(), &args.question, "the question (or pass --wav)")?;
    // End of speech is the last 10 ms block above -50 dBFS, not the end of the file: the
    // trailing silence is streamed as silence frames, and latency counts from the speech.
    let end = voiced(&samples).end;
    samples.truncate(end);
    if samples.is_empty() {
        bail!("the question audio is silent");
    }
    Ok(Speech { samples, rate: 16_000 })
}

/// `mic --barge-in-after-ms`: `--barge-in-text` synthesized as the question is, from its
/// first voiced block to its last (so its first frame is speech: the onset the clear is
/// timed from), scaled to the question's speech level.
pub(crate) fn load_interruption(args: &Args, question: &Speech) -> anyhow::Result<Speech> {
    if args.barge_in_text.trim().is_empty() {
        bail!("--barge-in-text must say something");
    }
    let samples = speech_samples(None, &args.barge_in_text, "the barge-in")?;
    let voiced = voiced(&samples);
    if voiced.is_empty() {
        bail!("the barge-in audio is silent");
    }
    let mut samples = samples[voiced].to_vec();
    let gain = speech_rms(&question.samples) / speech_rms(&samples);
    if gain.is_finite() && gain > 0.0 {
        for s in &mut samples {
            *s *= gain;
        }
    }
    Ok(Speech { samples, rate: 16_000 })
}

/// The WAV at `wav`, or `text` synthesized once with espeak-ng, as 16 kHz mono samples.
fn speech_samples(wav: Option<&std::path::Path>, text: &str, what: &str) -> anyhow::Result<Vec<f32>> {
    // A file of this call's own: tests in one process synthesize questions at once.
    let synthesized;
    let path = match wav {
        Some(p) => p.to_path_buf(),
        None => {
            synthesized = tempfile::Builder::new().prefix("fieldvox-load-speech-").suffix(".wav").tempfile()?;
            let status = std::process::Command::new("espeak-ng")
                .args(["-v", "en-us", "-s", "150", "-w"])
                .arg(synthesized.path())
                .arg(text)
                .status()
                .with_context(|| format!("running espeak-ng to synthesize {what}"))?;
            if !status.success() {
                bail!("espeak-ng failed");
            }
            synthesized.path().to_path_buf()
        }
    };
    let (samples, rate) = fieldvox::audio::wav::read_mono(&path)?;
    Ok(fieldvox::audio::resample::resample(&samples, rate, 16_000))
}

/// From the first 10 ms block above -50 dBFS to the end of the last (16 kHz samples);
/// empty when there is none.
fn voiced(samples: &[f32]) -> std::ops::Range<usize> {
    let loud = |b: &[f32]| fieldvox::audio::pcm::rms_dbfs(b) > VOICED_DBFS;
    let Some(first) = samples.chunks(VOICED_BLOCK).position(loud) else {
        return 0..0;
    };
    let last = samples.chunks(VOICED_BLOCK).rposition(loud).unwrap_or(first);
    first * VOICED_BLOCK..((last + 1) * VOICED_BLOCK).min(samples.len())
}

/// RMS of the voiced blocks: the level of the speech, not of its pauses.
fn speech_rms(samples: &[f32]) -> f32 {
    let (mut sum, mut n) = (0.0f64, 0usize);
    for block in samples.chunks(VOICED_BLOCK).filter(|b| fieldvox::audio::pcm::rms_dbfs(b) > VOICED_DBFS) {
        sum += block.iter().map(|&s| f64::from(s) * f64::from(s)).sum::<f64>();
        n += block.len();
    }
    if n == 0 { 0.0 } else { (sum / n as f64).sqrt() as f32 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speech_is_found_between_its_first_and_last_loud_block() {
        let mut samples = vec![0.0f32; 160 * 10 + 50];
        samples[160 * 3 + 20..160 * 7 + 5].fill(0.1);
        assert_eq!(voiced(&samples), 160 * 3..160 * 8);
        assert_eq!(voiced(&[0.0f32; 1000]), 0..0);
        // A loud last block shorter than a block ends the range at the end.
        let mut tail = vec![0.0f32; 170];
        tail[165] = 1.0;
        assert_eq!(voiced(&tail), 160..170);
        // The level is the speech's, pauses left out.
        assert!((speech_rms(&samples) - 0.1).abs() < 0.03, "{}", speech_rms(&samples));
        assert_eq!(speech_rms(&[0.0; 320]), 0.0);
    }
}
