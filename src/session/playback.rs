//! What the client can have played of an answer. Answer audio is sent faster than real
//! time; the client plays it in real time from the first frame, so an answer is still
//! being heard long after its turn finished sending, and its echo can reach the
//! microphone until then.

use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One answer's audio clock: how much was sent, from when, and how loud each frame is.
#[derive(Debug, Default)]
pub struct Playback {
    first_audio: OnceLock<Instant>,
    audio_us: AtomicU64,
    /// Level (dBFS) of each frame sent, with the frame's length in microseconds.
    frames: Mutex<Vec<(u64, f32)>>,
}

impl Playback {
    /// Records a frame of `micros` microseconds at `level_dbfs` as sent now.
    pub fn sent(&self, micros: u64, level_dbfs: f32) {
        self.first_audio.get_or_init(Instant::now);
        self.audio_us.fetch_add(micros, Ordering::AcqRel);
        if let Ok(mut frames) = self.frames.lock() {
            frames.push((micros, level_dbfs));
        }
    }

    /// When the first frame was sent (the client starts playing about then).
    pub fn first_audio(&self) -> Option<Instant> {
        self.first_audio.get().copied()
    }

    /// When the client will have played all audio sent so far; `None` before any.
    pub fn playing_until(&self) -> Option<Instant> {
        let micros = self.audio_us.load(Ordering::Acquire);
        self.first_audio.get().map(|t| *t + Duration::from_micros(micros))
    }

    /// Microseconds of audio sent.
    pub fn sent_us(&self) -> u64 {
        self.audio_us.load(Ordering::Acquire)
    }

    /// Microseconds the client can have played by `at` (all of it once it has played out).
    pub fn heard_us(&self, at: Instant) -> u64 {
        match self.first_audio.get() {
            Some(first) => (at.saturating_duration_since(*first).as_micros() as u64).min(self.sent_us()),
            None => 0,
        }
    }

    /// The loudest frame the client plays at any time in `[from, to]`; `None` if none plays.
    pub fn level_between(&self, from: Instant, to: Instant) -> Option<f32> {
        let first = *self.first_audio.get()?;
        let (from, to) = (micros_after(first, from), micros_after(first, to));
        // Played out: asked on every microphone window, so answered without the lock.
        if from > self.sent_us() {
            return None;
        }
        let frames = self.frames.lock().ok()?;
        let mut start = 0u64;
        let mut loudest: Option<f32> = None;
        for &(len, level) in frames.iter() {
            let end = start + len;
            if end >= from && start <= to {
                loudest = Some(loudest.map_or(level, |l| l.max(level)));
            }
            if start > to {
                break;
            }
            start = end;
        }
        loudest
    }
}

fn micros_after(first: Instant, t: Instant) -> u64 {
    t.saturating_duration_since(first).as_micros() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_level_is_that_of_the_frames_playing_then() {
        let p = Playback::default();
        assert_eq!(p.level_between(Instant::now(), Instant::now()), None);
        p.sent(100_000, -20.0);
        p.sent(100_000, -40.0);
        p.sent(100_000, -30.0);
        let first = *p.first_audio.get().unwrap();
        let at = |ms: u64| first + Duration::from_millis(ms);
        assert_eq!(p.level_between(at(0), at(50)), Some(-20.0));
        assert_eq!(p.level_between(at(120), at(180)), Some(-40.0));
        assert_eq!(p.level_between(at(150), at(250)), Some(-30.0));
        assert_eq!(p.level_between(at(400), at(500)), None, "played out");
        assert_eq!(p.heard_us(at(150)), 150_000);
        assert_eq!(p.heard_us(at(900)), 300_000, "never more than was sent");
        assert_eq!(p.playing_until(), Some(at(300)));
    }
}
