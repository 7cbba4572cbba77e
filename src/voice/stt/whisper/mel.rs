//! Whisper's log-mel features: the mel filterbank (librosa `filters.mel`, Slaney scale and
//! Slaney area normalisation) and the short-time transform that feeds it.
//!
//! The transform follows OpenAI's reference (`torch.stft(center=True)`, reflect padding,
//! periodic Hann window, power spectrum, `log10` clamped to 8 decades below the peak, then
//! `(x + 4) / 4`). It runs as two matmuls (frames × DFT basis, power × filterbank) over only
//! the frames that contain audio: every later frame of the 30 s window is silence, whose value
//! is known. That keeps it a few milliseconds instead of a full 3000-frame FFT pass.

use candle_core::{Device, Tensor};

/// Hz → mel on the Slaney scale: linear (200/3 Hz per mel) below 1 kHz, logarithmic above.
fn hz_to_mel(hz: f64) -> f64 {
    const F_SP: f64 = 200.0 / 3.0;
    const MIN_LOG_HZ: f64 = 1000.0;
    let min_log_mel = MIN_LOG_HZ / F_SP;
    let logstep = 6.4f64.ln() / 27.0;
    if hz >= MIN_LOG_HZ { min_log_mel + (hz / MIN_LOG_HZ).ln() / logstep } else { hz / F_SP }
}

fn mel_to_hz(mel: f64) -> f64 {
    const F_SP: f64 = 200.0 / 3.0;
    const MIN_LOG_HZ: f64 = 1000.0;
    let min_log_mel = MIN_LOG_HZ / F_SP;
    let logstep = 6.4f64.ln() / 27.0;
    if mel >= min_log_mel { MIN_LOG_HZ * (logstep * (mel - min_log_mel)).exp() } else { mel * F_SP }
}

/// Row-major `n_mels × (n_fft/2 + 1)` triangular filters spanning 0 Hz to Nyquist.
/// Each triangle is scaled by `2 / (upper − lower edge in Hz)`, so its area in Hz is ~1.
pub fn mel_filters(sample_rate: u32, n_fft: usize, n_mels: usize) -> Vec<f32> {
    let n_freqs = n_fft / 2 + 1;
    let nyquist = f64::from(sample_rate) / 2.0;
    let fft_freqs: Vec<f64> = (0..n_freqs).map(|j| j as f64 * nyquist / (n_freqs - 1) as f64).collect();

    // n_mels + 2 edges equally spaced in mel between 0 Hz and Nyquist.
    let (mel_lo, mel_hi) = (hz_to_mel(0.0), hz_to_mel(nyquist));
    let edges: Vec<f64> =
        (0..n_mels + 2).map(|i| mel_to_hz(mel_lo + (mel_hi - mel_lo) * i as f64 / (n_mels + 1) as f64)).collect();

    let mut filters = vec![0f32; n_mels * n_freqs];
    for m in 0..n_mels {
        let (lo, centre, hi) = (edges[m], edges[m + 1], edges[m + 2]);
        let norm = 2.0 / (hi - lo);
        for (j, &f) in fft_freqs.iter().enumerate() {
            let rising = (f - lo) / (centre - lo);
            let falling = (hi - f) / (hi - centre);
            let w = rising.min(falling).max(0.0);
            filters[m * n_freqs + j] = (w * norm) as f32;
        }
    }
    filters
}

/// Power below this is treated as silence (`log10` floor of −10, as in Whisper).
const POWER_FLOOR: f32 = 1e-10;

/// Precomputed window, DFT basis and filterbank for one (n_fft, hop, n_mels) setting.
pub struct LogMel {
    n_fft: usize,
    hop: usize,
    n_mels: usize,
    window: Vec<f32>,
    /// `n_fft × 2·n_freqs`: cosines then negated sines, so one matmul gives re and im.
    dft: Tensor,
    /// `n_freqs × n_mels`, the filterbank transposed for `power · filters`.
    filters_t: Tensor,
}

impl LogMel {
    pub fn new(
        sample_rate: u32,
        n_fft: usize,
        hop: usize,
        n_mels: usize,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let n_freqs = n_fft / 2 + 1;
        let tau = std::f64::consts::TAU;
        // Periodic Hann, as torch.hann_window(n_fft).
        let window = (0..n_fft).map(|i| (0.5 - 0.5 * (tau * i as f64 / n_fft as f64).cos()) as f32).collect();
        let mut basis = vec![0f32; n_fft * 2 * n_freqs];
        for t in 0..n_fft {
            for k in 0..n_freqs {
                // Reduce k·t mod n_fft first so the angle stays small and exact.
                let angle = tau * ((k * t) % n_fft) as f64 / n_fft as f64;
                basis[t * 2 * n_freqs + k] = angle.cos() as f32;
                basis[t * 2 * n_freqs + n_freqs + k] = -angle.sin() as f32;
            }
        }
        let dft = Tensor::from_vec(basis, (n_fft, 2 * n_freqs), device)?;
        let filters = mel_filters(sample_rate, n_fft, n_mels);
        let filters_t = Tensor::from_vec(filters, (n_mels, n_freqs), device)?.t()?.contiguous()?;
        Ok(Self { n_fft, hop, n_mels, window, dft, filters_t })
    }

    /// Frame `i` is centred on sample `i·hop`; the start is reflect-padded and everything after
    /// the audio is zero (the 30 s window's padding). Returns the windowed frame samples.
    fn frames(&self, pcm: &[f32], count: usize) -> Vec<f32> {
        let half = (self.n_fft / 2) as isize;
        let len = pcm.len() as isize;
        let mut out = Vec::with_capacity(count * self.n_fft);
        for i in 0..count {
            let start = (i * self.hop) as isize - half;
            for (k, w) in self.window.iter().enumerate() {
                let idx = start + k as isize;
                // Reflect without repeating the edge sample, like numpy's "reflect".
                let src = if idx < 0 { -idx } else { idx };
                let sample = if src < len { pcm[src as usize] } else { 0.0 };
                out.push(sample * w);
            }
        }
        out
    }

    /// Normalised log-mel features `(1, n_mels, frames)` of `pcm` zero-padded to `frames`.
    pub fn compute(&self, pcm: &[f32], frames: usize, device: &Device) -> candle_core::Result<Tensor> {
        let n_freqs = self.n_fft / 2 + 1;
        // Frames whose window reaches any audio sample; later ones are all zeros.
        let audio_frames = (pcm.len() + self.n_fft / 2).div_ceil(self.hop).min(frames);
        let silent_log = POWER_FLOOR.log10();
        let mut log_mel = vec![silent_log; self.n_mels * frames];
        if audio_frames > 0 {
            let framed = Tensor::from_vec(self.frames(pcm, audio_frames), (audio_frames, self.n_fft), device)?;
            let spectrum = framed.matmul(&self.dft)?;
            let power = (spectrum.narrow(1, 0, n_freqs)?.sqr()? + spectrum.narrow(1, n_freqs, n_freqs)?.sqr()?)?;
            let mel = power.matmul(&self.filters_t)?.maximum(POWER_FLOOR)?;
            let mel = (mel.log()? / std::f64::consts::LN_10)?;
            // (n_mels, audio_frames) rows go into the first columns of each mel row.
            let mel = mel.t()?.contiguous()?.to_vec2::<f32>()?;
            for (row, values) in mel.iter().enumerate() {
                log_mel[row * frames..row * frames + audio_frames].copy_from_slice(values);
            }
        }
        let peak = log_mel.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for v in log_mel.iter_mut() {
            *v = (v.max(peak - 8.0) + 4.0) / 4.0;
        }
        Tensor::from_vec(log_mel, (1, self.n_mels, frames), device)
    }
}
