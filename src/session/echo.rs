//! The echo guard. On a speakerphone the answer comes back into the microphone; with a
//! headset, or a phone that cancels its own echo, it does not. Which it is shows at the
//! start of every answer: the user has just asked and is listening, so if the microphone
//! gets louder as the answer starts, that is the answer's echo, and how much quieter it
//! is than the answer is the echo path's loss. While an answer plays, the energy gate
//! then sits just above where its echo would be; without an echo it is not raised at all,
//! so a technician on a headset interrupts as easily as ever.

use std::time::Duration;

/// The part of each answer the guard listens to: after the first audio has had time to
/// reach the phone and come back, before the user is likely to talk over it.
const CALIBRATE_FROM: Duration = Duration::from_millis(150);
pub const CALIBRATE_UNTIL: Duration = Duration::from_millis(750);
/// The microphone must rise this far above its noise floor to count as echo.
const RISE_DB: f32 = 6.0;

#[derive(Debug)]
pub struct EchoGuard {
    /// How far above its expected echo the gate sits (dB).
    margin_db: f32,
    /// The echo path's loss (dB): the echo is the playing answer's level less this.
    /// `None`: no echo was heard at the start of the last answer.
    loss_db: Option<f32>,
    /// The answer being measured and the loudest answer and microphone levels in its
    /// calibration part so far.
    measuring: Option<(u64, f32, f32)>,
    /// The answer whose calibration is done.
    measured: Option<u64>,
}

impl EchoGuard {
    /// `assumed_loss_db`: the loss assumed until an answer has been measured (`None`: no
    /// echo).
    pub fn new(margin_db: f32, assumed_loss_db: Option<f32>) -> Self {
        Self { margin_db, loss_db: assumed_loss_db, measuring: None, measured: None }
    }

    /// Whether the echo path has been measured at the start of `answer`.
    pub fn measured(&self, answer: u64) -> bool {
        self.measured == Some(answer)
    }

    /// Whether the microphone was heard to pick up the answers.
    pub fn hears_echo(&self) -> bool {
        self.loss_db.is_some()
    }

    /// One microphone window at `mic_db`, `into` answer `answer`, while the answer plays
    /// at `playing_db`; `floor_db` is the microphone's noise floor.
    pub fn observe(&mut self, answer: u64, into: Duration, playing_db: Option<f32>, mic_db: f32, floor_db: f32) {
        if self.measured == Some(answer) || into < CALIBRATE_FROM {
            return;
        }
        if into <= CALIBRATE_UNTIL {
            let Some(playing) = playing_db else { return };
            let (_, loudest, mic) = self.measuring.get_or_insert((answer, f32::NEG_INFINITY, f32::NEG_INFINITY));
            *loudest = loudest.max(playing);
            *mic = mic.max(mic_db);
            return;
        }
        self.settle(answer, floor_db);
    }

    /// Ends the measurement of `answer` with what was heard so far.
    pub fn settle(&mut self, answer: u64, floor_db: f32) {
        if self.measured == Some(answer) {
            return;
        }
        self.measured = Some(answer);
        // Nothing heard while the answer started: the client does not stream while it
        // listens, so nothing of the answer comes back through it.
        self.loss_db = match self.measuring.take() {
            Some((id, loudest, mic)) if id == answer && loudest.is_finite() => {
                (mic >= floor_db + RISE_DB).then(|| (loudest - mic).max(0.0))
            }
            _ => None,
        };
        tracing::debug!(loss_db = ?self.loss_db, "echo path measured");
    }

    /// The gate while the answer plays at `playing_db`; `None` when no echo is expected.
    pub fn gate(&self, playing_db: f32) -> Option<f32> {
        self.loss_db.map(|loss| playing_db - loss + self.margin_db)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// One answer at -15 dBFS heard at `mic` during its start, over a -45 dBFS floor.
    fn answer(g: &mut EchoGuard, id: u64, mic: f32) {
        for t in (0..900).step_by(32) {
            g.observe(id, ms(t), Some(-15.0), mic, -45.0);
        }
    }

    #[test]
    fn the_gate_follows_the_echo_heard_at_each_answers_start() {
        assert_eq!(EchoGuard::new(3.0, None).gate(-15.0), None, "nothing assumed");
        let mut g = EchoGuard::new(3.0, Some(6.0));
        assert_eq!(g.gate(-15.0), Some(-18.0), "until measured: the assumed echo");
        answer(&mut g, 1, -25.0); // a speakerphone: the answer back 10 dB down
        assert_eq!(g.gate(-15.0), Some(-22.0), "3 dB above the echo");
        answer(&mut g, 2, -44.0); // a headset: nothing comes back
        assert_eq!(g.gate(-15.0), None, "no echo, no raised gate");
        assert!(!g.hears_echo());
        answer(&mut g, 3, -21.0); // back on speaker, louder
        assert_eq!(g.gate(-12.0), Some(-15.0));
        // Speech later in an answer (a barge-in) does not change the measurement.
        g.observe(3, ms(2_000), Some(-15.0), -5.0, -45.0);
        assert_eq!(g.gate(-12.0), Some(-15.0));
        // A client silent while answer 4 starts, speaking later: it does not stream while
        // it listens, so no echo.
        g.observe(4, ms(1_500), Some(-15.0), -20.0, -45.0);
        assert_eq!(g.gate(-15.0), None);
    }
}
