//! `fieldvox-opus-bench`: what Opus costs the server per talking session, against PCM16.
//!
//! A spoken question (flite) is coded as a phone would send it (20 ms packets at
//! `--input-rate`), then timed as the server handles it: the packets decoded for the
//! pipeline, and the same seconds of answer speech encoded as 20 ms packets at
//! `--output-rate`. Prints one JSON line: the CPU time per second of audio each way (and
//! as a share of one core), and the bytes per second each way, beside PCM16's.

use std::process::Command;
use std::time::Instant;

use clap::Parser;
use fieldvox::audio::opus::{OpusDecoder, OpusPackets};
use fieldvox::audio::resample::resample;
use serde_json::json;

#[derive(Parser, Debug)]
#[command(about = "Opus encode and decode cost per session-second, and bytes per second each way")]
struct Args {
    /// The rate the phone codes its microphone at.
    #[arg(long, default_value_t = 48_000)]
    input_rate: u32,
    /// The rate the answer is coded at (`output_sample_rate`).
    #[arg(long, default_value_t = 24_000)]
    output_rate: u32,
    /// Times the spoken question is run through, for a steady figure.
    #[arg(long, default_value_t = 50)]
    rounds: usize,
}

/// flite's `slt` voice saying a question, mono at `rate`.
fn question(rate: u32) -> anyhow::Result<Vec<f32>> {
    let path = std::env::temp_dir().join(format!("fieldvox-opus-bench-{}.wav", std::process::id()));
    let text = "What torque for the compressor head bolts on the RTU-40? And what is the part number of the gasket?";
    let status = Command::new("flite").args(["-voice", "slt", "-t", text, "-o"]).arg(&path).status()?;
    anyhow::ensure!(status.success(), "flite failed (scripts/setup.sh installs it)");
    let (samples, from) = fieldvox::audio::wav::read_mono(&path)?;
    let _ = std::fs::remove_file(&path);
    Ok(resample(&samples, from, rate))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let heard = question(args.input_rate)?;
    let said = question(args.output_rate)?;
    let seconds = heard.len() as f64 / f64::from(args.input_rate);
    let mut inbound = Vec::new();
    let inbound_packets = OpusPackets::new(args.input_rate)?.encode(&heard, &mut inbound)?;

    let started = Instant::now();
    for _ in 0..args.rounds {
        let mut decoder = OpusDecoder::at(args.input_rate, 1)?;
        for packet in &inbound_packets {
            std::hint::black_box(decoder.decode(&inbound[packet.clone()]).map_err(anyhow::Error::msg)?);
        }
    }
    let decode_us = started.elapsed().as_secs_f64() * 1e6 / (seconds * args.rounds as f64);

    let started = Instant::now();
    let mut outbound = Vec::new();
    for _ in 0..args.rounds {
        outbound.clear();
        OpusPackets::new(args.output_rate)?.encode(&said, &mut outbound)?;
    }
    let said_seconds = said.len() as f64 / f64::from(args.output_rate);
    let encode_us = started.elapsed().as_secs_f64() * 1e6 / (said_seconds * args.rounds as f64);

    let bytes = |packets: &[u8], secs: f64| packets.len() as f64 / secs;
    let line = json!({
        "audio_seconds": (seconds * 100.0).round() / 100.0,
        "input_rate": args.input_rate,
        "output_rate": args.output_rate,
        "decode_us_per_second_in": decode_us.round(),
        "encode_us_per_second_out": encode_us.round(),
        "core_share_pct_talking_both_ways": ((decode_us + encode_us) / 1e4 * 100.0).round() / 100.0,
        "bytes_per_second_in": bytes(&inbound, seconds).round(),
        "bytes_per_second_out": bytes(&outbound, said_seconds).round(),
        "pcm16_bytes_per_second_in": args.input_rate * 2,
        "pcm16_bytes_per_second_out": args.output_rate * 2,
    });
    println!("{line}");
    Ok(())
}
