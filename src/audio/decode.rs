//! Recorded audio in any common container, as the pipeline hears it: 16 kHz mono. The
//! container is sniffed from the bytes (a phone's file name or content type is not
//! trusted): WAV, MP3, M4A/AAC, FLAC, Ogg Vorbis by Symphonia, Ogg Opus by libopus.

use std::io::Cursor;

use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{CODEC_TYPE_NULL, CODEC_TYPE_OPUS, Decoder, DecoderOptions};
use symphonia::core::errors::Error as MediaError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

use super::opus::OpusDecoder;
use super::resample::resample;

/// The rate the pipeline hears at.
pub const PIPELINE_RATE: u32 = 16_000;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// Not audio in a container we read (an image, a document, an unknown format).
    #[error("not a recording in a supported format (WAV, MP3, M4A/AAC, FLAC, Ogg Vorbis or Opus)")]
    Unrecognised,
    /// A known container whose audio cannot be read (cut short, damaged).
    #[error("the recording cannot be decoded: {0}")]
    Corrupt(String),
    /// Nothing audible in it.
    #[error("the recording holds no audio")]
    Empty,
    #[error("the recording is longer than {max_seconds} s")]
    TooLong { max_seconds: u32 },
}

/// A decoded recording.
#[derive(Debug, Clone)]
pub struct Recording {
    /// Mono at [`PIPELINE_RATE`].
    pub samples: Vec<f32>,
    /// What the bytes turned out to be ("wav", "mp3", "aac", "flac", "vorbis", "opus").
    pub codec: &'static str,
}

impl Recording {
    pub fn seconds(&self) -> f64 {
        self.samples.len() as f64 / f64::from(PIPELINE_RATE)
    }
}

enum Codec {
    Media(Box<dyn Decoder>),
    Opus(OpusDecoder),
}

/// A file whose header promises more audio than it holds is cut short, not a short
/// question: below this share of the promised frames it is refused.
const WHOLE: f64 = 0.95;

/// Decodes `bytes`, refusing more than `max_seconds` of audio as soon as it is seen.
pub fn decode(bytes: Vec<u8>, max_seconds: u32) -> Result<Recording, DecodeError> {
    let source = MediaSourceStream::new(Box::new(Cursor::new(bytes)), Default::default());
    let probed = symphonia::default::get_probe()
        .format(&Hint::new(), source, &FormatOptions::default(), &MetadataOptions::default())
        .map_err(|_| DecodeError::Unrecognised)?;
    let mut format = probed.format;
    let track =
        format.tracks().iter().find(|t| t.codec_params.codec != CODEC_TYPE_NULL).ok_or(DecodeError::Unrecognised)?;
    let (track_id, params) = (track.id, track.codec_params.clone());
    let (mut codec, rate, name) = if params.codec == CODEC_TYPE_OPUS {
        let channels = params.channels.map_or(1, |c| c.count());
        let decoder = OpusDecoder::new(channels).map_err(|e| DecodeError::Corrupt(e.to_string()))?;
        (Codec::Opus(decoder), super::opus::OPUS_RATE, "opus")
    } else {
        let codecs = symphonia::default::get_codecs();
        let decoder = codecs.make(&params, &DecoderOptions::default()).map_err(|_| DecodeError::Unrecognised)?;
        let rate = params.sample_rate.ok_or_else(|| DecodeError::Corrupt("no sample rate".into()))?;
        let name = codecs.get_codec(params.codec).map_or("audio", |d| d.short_name);
        (Codec::Media(decoder), rate, codec_name(name))
    };
    let max_frames = u64::from(max_seconds) * u64::from(rate);
    // Opus in Ogg counts its frames at 48 kHz whatever the header's input rate says.
    let promised = params.n_frames.filter(|_| name != "opus");
    if promised.is_some_and(|n| n > max_frames) {
        return Err(DecodeError::TooLong { max_seconds });
    }
    let mut mono: Vec<f32> = Vec::new();
    let mut damaged = 0usize;
    loop {
        let packet = match format.next_packet() {
            Ok(packet) => packet,
            // The end of the stream (a file cut short ends here too, with what it had).
            Err(MediaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(MediaError::ResetRequired) => break,
            Err(e) => return Err(DecodeError::Corrupt(e.to_string())),
        };
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = match &mut codec {
            Codec::Opus(decoder) => {
                let channels = decoder.channels();
                decoder.decode(&packet.data).map(|pcm| downmix_into(pcm, channels, &mut mono))
            }
            Codec::Media(decoder) => match decoder.decode(&packet) {
                Ok(buffer) => {
                    let channels = buffer.spec().channels.count().max(1);
                    let mut interleaved = SampleBuffer::<f32>::new(buffer.capacity() as u64, *buffer.spec());
                    interleaved.copy_interleaved_ref(buffer);
                    downmix_into(interleaved.samples(), channels, &mut mono);
                    Ok(())
                }
                Err(MediaError::DecodeError(e)) => Err(e.to_string()),
                Err(e) => return Err(DecodeError::Corrupt(e.to_string())),
            },
        };
        // One damaged frame is skipped, as a player would; a stream of them is not audio.
        if let Err(e) = decoded {
            damaged += 1;
            if damaged > 8 {
                return Err(DecodeError::Corrupt(e));
            }
        }
        if mono.len() as u64 > max_frames {
            return Err(DecodeError::TooLong { max_seconds });
        }
    }
    if mono.is_empty() {
        return Err(if damaged > 0 {
            DecodeError::Corrupt("no frame could be decoded".into())
        } else {
            DecodeError::Empty
        });
    }
    if let Some(promised) = promised
        && (mono.len() as f64) < promised as f64 * WHOLE
    {
        let secs = |frames: f64| frames / f64::from(rate);
        return Err(DecodeError::Corrupt(format!(
            "cut short: {:.1} s of the {:.1} s its header announces",
            secs(mono.len() as f64),
            secs(promised as f64)
        )));
    }
    Ok(Recording { samples: resample(&mono, rate, PIPELINE_RATE), codec: name })
}

fn codec_name(short: &str) -> &'static str {
    match short {
        s if s.starts_with("pcm") => "wav",
        "mp3" | "mp2" | "mp1" => "mp3",
        "aac" => "aac",
        "flac" => "flac",
        "vorbis" => "vorbis",
        _ => "audio",
    }
}

/// Appends interleaved frames of `channels` to `out` as mono (the channels averaged).
pub(super) fn downmix_into(interleaved: &[f32], channels: usize, out: &mut Vec<f32>) {
    if channels == 1 {
        out.extend_from_slice(interleaved);
        return;
    }
    out.extend(interleaved.chunks_exact(channels).map(|frame| frame.iter().sum::<f32>() / channels as f32));
}
