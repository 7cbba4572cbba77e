//! Opus through libopus: packets decoded for the pipeline (voice notes, the socket's
//! `opus` format), answer audio encoded as 20 ms packets for the socket, or as an Ogg Opus
//! file (RFC 7845) for voice notes. About a tenth of PCM16's bytes either way.

use std::ops::Range;

use opus::{Application, Channels};

use super::resample::resample;

/// Opus always decodes at 48 kHz here (it codes any bandwidth at that rate).
pub const OPUS_RATE: u32 = 48_000;
/// 20 ms at 48 kHz: the frame every voice client sends.
const FRAME: usize = 960;
/// The longest packet libopus decodes: 120 ms at 48 kHz.
const MAX_PACKET_FRAMES: usize = 5_760;

pub struct OpusDecoder {
    /// In a mutex only so that a session holding it is `Sync` (libopus state is not);
    /// reached through `get_mut`, never locked.
    decoder: std::sync::Mutex<opus::Decoder>,
    channels: usize,
    out: Vec<f32>,
}

impl OpusDecoder {
    /// Decodes at [`OPUS_RATE`].
    pub fn new(channels: usize) -> Result<Self, opus::Error> {
        Self::at(OPUS_RATE, channels)
    }

    /// Decodes at `rate`, one of Opus's five (whatever rate the packets were coded at).
    pub fn at(rate: u32, channels: usize) -> Result<Self, opus::Error> {
        let layout = if channels >= 2 { Channels::Stereo } else { Channels::Mono };
        let channels = if channels >= 2 { 2 } else { 1 };
        let decoder = std::sync::Mutex::new(opus::Decoder::new(rate, layout)?);
        Ok(Self { decoder, channels, out: vec![0.0; MAX_PACKET_FRAMES * 2] })
    }

    pub fn channels(&self) -> usize {
        self.channels
    }

    /// One packet's samples, interleaved, at the decoder's rate (valid until the next).
    pub fn decode(&mut self, packet: &[u8]) -> Result<&[f32], String> {
        let decoder = self.decoder.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        let frames = decoder.decode_float(packet, &mut self.out, false).map_err(|e| e.to_string())?;
        Ok(&self.out[..frames * self.channels])
    }

    /// A lost packet of `frames` samples per channel, rebuilt from the in-band FEC data of
    /// `next` (the packet after it); concealed when `next` carries none.
    pub fn recover(&mut self, next: &[u8], frames: usize) -> Result<&[f32], String> {
        self.lost(next, frames)
    }

    /// A lost packet of `frames` samples per channel, concealed (libopus's PLC).
    pub fn conceal(&mut self, frames: usize) -> Result<&[f32], String> {
        self.lost(&[], frames)
    }

    fn lost(&mut self, next: &[u8], frames: usize) -> Result<&[f32], String> {
        let decoder = self.decoder.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        let want = frames.clamp(1, MAX_PACKET_FRAMES) * self.channels;
        let fec = !next.is_empty();
        let frames = decoder.decode_float(next, &mut self.out[..want], fec).map_err(|e| e.to_string())?;
        Ok(&self.out[..frames * self.channels])
    }
}

/// Speech as Opus packets of 20 ms, mono, at one of Opus's rates.
pub struct OpusPackets {
    /// In a mutex only so that its holder is `Sync` (as the decoder's); never locked.
    encoder: std::sync::Mutex<opus::Encoder>,
    frame: usize,
    /// The last, short frame padded with silence.
    padded: Vec<f32>,
}

/// The most one 20 ms packet takes (libopus's own bound for a frame is 1,275 bytes).
const MAX_PACKET_BYTES: usize = 1_500;

impl OpusPackets {
    pub fn new(rate: u32) -> Result<Self, opus::Error> {
        let encoder = std::sync::Mutex::new(opus::Encoder::new(rate, Channels::Mono, Application::Voip)?);
        Ok(Self { encoder, frame: rate as usize / 50, padded: Vec::new() })
    }

    fn encoder(&mut self) -> &mut opus::Encoder {
        self.encoder.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Carries each packet's essentials again in the next (in-band FEC), sized for
    /// `loss_percent` of packets lost: what a lossy network's receiver rebuilds from.
    pub fn protect(&mut self, loss_percent: u8) -> Result<(), opus::Error> {
        self.encoder().set_inband_fec(loss_percent > 0)?;
        self.encoder().set_packet_loss_perc(i32::from(loss_percent.min(100)))
    }

    /// Samples in each packet.
    pub fn frame_samples(&self) -> usize {
        self.frame
    }

    /// Samples the encoder delays its output by (an Ogg file's pre-skip).
    pub fn lookahead(&mut self) -> Result<usize, opus::Error> {
        Ok(usize::try_from(self.encoder().get_lookahead()?).unwrap_or(0))
    }

    /// Appends `samples` to `out` as packets, the last frame padded with silence (a
    /// sentence ends in a pause anyway); returns where each packet lies in `out`.
    pub fn encode(&mut self, samples: &[f32], out: &mut Vec<u8>) -> Result<Vec<Range<usize>>, opus::Error> {
        let mut packets = Vec::with_capacity(samples.len().div_ceil(self.frame));
        let encoder = self.encoder.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        for chunk in samples.chunks(self.frame) {
            let frame = if chunk.len() == self.frame {
                chunk
            } else {
                self.padded.clear();
                self.padded.extend_from_slice(chunk);
                self.padded.resize(self.frame, 0.0);
                &self.padded
            };
            let start = out.len();
            out.resize(start + MAX_PACKET_BYTES, 0);
            let n = encoder.encode_float(frame, &mut out[start..])?;
            out.truncate(start + n);
            packets.push(start..start + n);
        }
        Ok(packets)
    }
}

/// `samples` (mono at `rate`) as an Ogg Opus file.
pub fn ogg_opus(samples: &[f32], rate: u32) -> Result<Vec<u8>, opus::Error> {
    let mut encoder = OpusPackets::new(OPUS_RATE)?;
    let pre_skip = u16::try_from(encoder.lookahead()?).unwrap_or(0);
    let mut bytes = Vec::new();
    let packets = encoder.encode(&resample(samples, rate, OPUS_RATE), &mut bytes)?;
    let mut ogg = OggWriter::new(0x6669_6576); // "fiev"
    ogg.page(&[&opus_head(pre_skip, rate)], 0, PageKind::First);
    ogg.page(&[&opus_tags()], 0, PageKind::Middle);
    // A page of 50 packets (one second) keeps the per-page overhead under 2 %.
    let pages: Vec<&[Range<usize>]> = packets.chunks(50).collect();
    for (page_no, page) in pages.iter().enumerate() {
        let done_frames = (page_no * 50 + page.len()) * FRAME;
        let granule = (done_frames + usize::from(pre_skip)) as u64;
        let kind = if page_no + 1 == pages.len() { PageKind::Last } else { PageKind::Middle };
        let refs: Vec<&[u8]> = page.iter().map(|r| &bytes[r.clone()]).collect();
        ogg.page(&refs, granule, kind);
    }
    Ok(ogg.bytes)
}

fn opus_head(pre_skip: u16, input_rate: u32) -> Vec<u8> {
    let mut head = b"OpusHead".to_vec();
    head.push(1); // version
    head.push(1); // channels
    head.extend_from_slice(&pre_skip.to_le_bytes());
    head.extend_from_slice(&input_rate.to_le_bytes());
    head.extend_from_slice(&0i16.to_le_bytes()); // output gain
    head.push(0); // channel mapping family: mono/stereo
    head
}

fn opus_tags() -> Vec<u8> {
    let vendor = b"fieldvox";
    let mut tags = b"OpusTags".to_vec();
    tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
    tags.extend_from_slice(vendor);
    tags.extend_from_slice(&0u32.to_le_bytes()); // no comments
    tags
}

#[derive(Clone, Copy, PartialEq)]
enum PageKind {
    First,
    Middle,
    Last,
}

/// Ogg pages, each holding whole packets (fewer than 255 lacing values).
struct OggWriter {
    serial: u32,
    sequence: u32,
    bytes: Vec<u8>,
}

impl OggWriter {
    fn new(serial: u32) -> Self {
        Self { serial, sequence: 0, bytes: Vec::new() }
    }

    fn page(&mut self, packets: &[&[u8]], granule: u64, kind: PageKind) {
        let mut lacing = Vec::new();
        for packet in packets {
            lacing.extend(std::iter::repeat_n(255u8, packet.len() / 255));
            lacing.push((packet.len() % 255) as u8);
        }
        let start = self.bytes.len();
        self.bytes.extend_from_slice(b"OggS");
        self.bytes.push(0); // version
        self.bytes.push(match kind {
            PageKind::First => 0x02,
            PageKind::Middle => 0x00,
            PageKind::Last => 0x04,
        });
        self.bytes.extend_from_slice(&granule.to_le_bytes());
        self.bytes.extend_from_slice(&self.serial.to_le_bytes());
        self.bytes.extend_from_slice(&self.sequence.to_le_bytes());
        self.bytes.extend_from_slice(&[0; 4]); // checksum, filled in below
        self.bytes.push(lacing.len() as u8);
        self.bytes.extend_from_slice(&lacing);
        for packet in packets {
            self.bytes.extend_from_slice(packet);
        }
        let crc = ogg_crc(&self.bytes[start..]);
        self.bytes[start + 22..start + 26].copy_from_slice(&crc.to_le_bytes());
        self.sequence += 1;
    }
}

/// Ogg's CRC-32: polynomial 0x04c11db7, no reflection, zero initial value.
fn ogg_crc(data: &[u8]) -> u32 {
    let mut crc = 0u32;
    for &byte in data {
        crc ^= u32::from(byte) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 { (crc << 1) ^ 0x04c1_1db7 } else { crc << 1 };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_are_20_ms_and_decode_back_at_any_rate() {
        let rate = 24_000;
        let tone: Vec<f32> =
            (0..rate / 2).map(|i| (i as f32 * 300.0 * std::f32::consts::TAU / rate as f32).sin() * 0.5).collect();
        let mut encoder = OpusPackets::new(rate as u32).expect("encoder");
        let mut bytes = Vec::new();
        let packets = encoder.encode(&tone, &mut bytes).expect("encodes");
        assert_eq!(packets.len(), 25, "half a second in 20 ms packets");
        assert_eq!(encoder.frame_samples(), 480);
        assert_eq!(packets.last().map(|p| p.end), Some(bytes.len()), "packets lie end to end");
        let bytes_sent = bytes.len();
        assert!(bytes_sent * 5 < tone.len() * 2, "{bytes_sent} bytes: well under a fifth of PCM16");
        // The listener decodes at its own rate.
        let mut decoder = OpusDecoder::at(16_000, 1).expect("decoder");
        let heard: Vec<f32> =
            packets.iter().flat_map(|p| decoder.decode(&bytes[p.clone()]).expect("decodes").to_vec()).collect();
        assert_eq!(heard.len(), 8_000);
        let rms = (heard[1_600..].iter().map(|s| s * s).sum::<f32>() / (heard.len() - 1_600) as f32).sqrt();
        assert!((0.25..0.45).contains(&rms), "a 0.5 sine has rms 0.35: {rms}");
    }

    #[test]
    fn an_answer_encoded_as_ogg_opus_decodes_back_to_the_same_length_and_tone() {
        let rate = 16_000;
        let tone: Vec<f32> =
            (0..rate).map(|i| (i as f32 * 440.0 * std::f32::consts::TAU / rate as f32).sin() * 0.5).collect();
        let file = ogg_opus(&tone, rate as u32).expect("encodes");
        assert_eq!(&file[..4], b"OggS");
        let heard = crate::audio::decode::decode(file, 60).expect("our own file decodes");
        assert_eq!(heard.codec, "opus");
        assert!((heard.seconds() - 1.0).abs() < 0.05, "{} s", heard.seconds());
        let rms = (heard.samples.iter().map(|s| s * s).sum::<f32>() / heard.samples.len() as f32).sqrt();
        assert!((0.25..0.45).contains(&rms), "a 0.5 sine has rms 0.35: {rms}");
    }
}
