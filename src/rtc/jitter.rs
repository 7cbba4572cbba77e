//! The inbound jitter buffer: RTP packets back in sequence order, and for each one that
//! never came a decision — recover it from the next packet's in-band FEC, or let the
//! decoder conceal it. A packet past a gap is held at most `delay` for the gap to fill.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// What the decoder plays next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Play {
    /// The packet itself.
    Packet(Bytes),
    /// A lost packet, rebuilt from the redundancy carried in this (its next) packet.
    Fec(Bytes),
    /// A lost packet with nothing to rebuild it from: the decoder's concealment.
    Conceal,
}

/// What became of inbound packets, for the metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub played: u64,
    pub recovered: u64,
    pub concealed: u64,
    /// Arrived after their turn was played (or concealed), or twice.
    pub late: u64,
}

/// Packets that confirm a stream moved on past a long gap (a pause, a restarted sender).
const RESYNC: usize = 3;
/// A lone packet far ahead waits this many `delay`s for company, then is dropped as a stray.
const STRAY_WAITS: u32 = 4;
/// Packets held at most: far more than any real gap wait (a second of 20 ms packets).
const MAX_HELD: usize = 50;

pub struct JitterBuffer {
    delay: Duration,
    /// Gaps longer than this are skipped, not concealed: the sender paused or restarted.
    max_conceal: u64,
    /// Extended sequence number of the packet to play next; none before the first.
    next: Option<u64>,
    held: BTreeMap<u64, (Instant, Bytes)>,
    tally: Tally,
}

impl JitterBuffer {
    pub fn new(delay: Duration, max_conceal: u64) -> Self {
        Self { delay, max_conceal, next: None, held: BTreeMap::new(), tally: Tally::default() }
    }

    pub fn tally(&self) -> Tally {
        self.tally
    }

    /// Takes a packet with its 16-bit RTP sequence number, arrived at `now`.
    pub fn push(&mut self, seq: u16, payload: Bytes, now: Instant) {
        let seq = match self.next {
            None => {
                self.next = Some(u64::from(seq));
                u64::from(seq)
            }
            Some(next) => extend(next, seq),
        };
        if self.next.is_some_and(|next| seq < next) || self.held.contains_key(&seq) {
            self.tally.late += 1;
            return;
        }
        self.held.insert(seq, (now, payload));
        // A stray far from the stream (a restarted sender's) must not pile up.
        if self.held.len() > MAX_HELD {
            self.held.pop_last();
        }
    }

    /// The next thing to play, if it is due at `now`.
    pub fn pop(&mut self, now: Instant) -> Option<Play> {
        let next = self.next?;
        if let Some((_, payload)) = self.held.remove(&next) {
            self.next = Some(next + 1);
            self.tally.played += 1;
            return Some(Play::Packet(payload));
        }
        // A gap: wait for it until the packet after it has waited `delay`.
        let (&first, &(arrived, _)) = self.held.iter().next()?;
        if now < arrived + self.delay {
            return None;
        }
        if first - next > self.max_conceal {
            // Not loss to hide but a pause in the stream: carry on from what came, once a
            // few packets show the stream really is there now. A lone stray (a packet from
            // another stream, a corrupt sequence number) must not move it.
            if self.held.len() >= RESYNC {
                self.next = Some(first);
                return self.pop(now);
            }
            if now < arrived + self.delay * STRAY_WAITS {
                return None;
            }
            self.held.remove(&first);
            self.tally.late += 1;
            return self.pop(now);
        }
        self.next = Some(next + 1);
        match self.held.get(&(next + 1)) {
            Some((_, after)) => {
                self.tally.recovered += 1;
                Some(Play::Fec(after.clone()))
            }
            None => {
                self.tally.concealed += 1;
                Some(Play::Conceal)
            }
        }
    }

    /// When [`pop`](Self::pop) gives up waiting for the gap now open, if one is.
    pub fn deadline(&self) -> Option<Instant> {
        let (&first, &(arrived, _)) = self.held.iter().next()?;
        let far = self.next.is_some_and(|next| first - next > self.max_conceal) && self.held.len() < RESYNC;
        Some(arrived + if far { self.delay * STRAY_WAITS } else { self.delay })
    }
}

/// The 64-bit sequence number nearest `next` whose low 16 bits are `seq` (RTP's counter wraps).
fn extend(next: u64, seq: u16) -> u64 {
    let base = next & !0xffff;
    let candidates = [base.wrapping_sub(0x1_0000), base, base + 0x1_0000];
    candidates
        .into_iter()
        .map(|c| c | u64::from(seq))
        .filter(|c| *c < u64::MAX / 2)
        .min_by_key(|c| c.abs_diff(next))
        .unwrap_or(u64::from(seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: u8) -> Bytes {
        Bytes::from(vec![n])
    }

    fn drain(jb: &mut JitterBuffer, at: Instant) -> Vec<Play> {
        std::iter::from_fn(|| jb.pop(at)).collect()
    }

    #[test]
    fn puts_reordered_packets_back_in_order() {
        let t = Instant::now();
        let mut jb = JitterBuffer::new(Duration::from_millis(60), 5);
        jb.push(10, p(10), t);
        jb.push(12, p(12), t);
        assert_eq!(drain(&mut jb, t), vec![Play::Packet(p(10))], "12 waits for 11");
        jb.push(11, p(11), t);
        assert_eq!(drain(&mut jb, t), vec![Play::Packet(p(11)), Play::Packet(p(12))]);
        jb.push(11, p(11), t);
        assert_eq!(jb.tally().late, 1, "a packet after its turn is dropped");
        assert_eq!(jb.tally().played, 3);
    }

    #[test]
    fn a_lost_packet_is_rebuilt_from_the_next_or_concealed() {
        let t = Instant::now();
        let mut jb = JitterBuffer::new(Duration::from_millis(60), 5);
        jb.push(1, p(1), t);
        jb.push(3, p(3), t);
        jb.push(6, p(6), t);
        assert_eq!(drain(&mut jb, t), vec![Play::Packet(p(1))]);
        assert_eq!(jb.deadline(), Some(t + Duration::from_millis(60)));
        let later = t + Duration::from_millis(60);
        // 2 from 3's FEC; 4 has no 5 after it, so it and 5 are concealed.
        assert_eq!(
            drain(&mut jb, later),
            vec![Play::Fec(p(3)), Play::Packet(p(3)), Play::Conceal, Play::Fec(p(6)), Play::Packet(p(6))]
        );
        let tally = jb.tally();
        assert_eq!((tally.played, tally.recovered, tally.concealed), (3, 2, 1));
    }

    #[test]
    fn a_long_gap_is_skipped_not_concealed() {
        let t = Instant::now();
        let mut jb = JitterBuffer::new(Duration::from_millis(60), 5);
        jb.push(1, p(1), t);
        for n in 100..103 {
            jb.push(n, p(n as u8), t);
        }
        let later = t + Duration::from_millis(60);
        let played = vec![Play::Packet(p(1)), Play::Packet(p(100)), Play::Packet(p(101)), Play::Packet(p(102))];
        assert_eq!(drain(&mut jb, later), played);
        assert_eq!(jb.tally().concealed, 0);
    }

    #[test]
    fn a_lone_stray_far_ahead_does_not_move_the_stream() {
        let t = Instant::now();
        let mut jb = JitterBuffer::new(Duration::from_millis(60), 5);
        jb.push(1, p(1), t);
        jb.push(30_000, p(9), t);
        assert_eq!(drain(&mut jb, t + Duration::from_millis(60)), vec![Play::Packet(p(1))], "it waits for company");
        assert_eq!(jb.deadline(), Some(t + Duration::from_millis(240)));
        assert_eq!(drain(&mut jb, t + Duration::from_millis(240)), vec![], "then it is dropped");
        assert_eq!(jb.tally().late, 1);
        jb.push(2, p(2), t + Duration::from_millis(250));
        assert_eq!(drain(&mut jb, t + Duration::from_millis(250)), vec![Play::Packet(p(2))], "the stream goes on");
    }

    #[test]
    fn the_sequence_number_wraps() {
        let t = Instant::now();
        let mut jb = JitterBuffer::new(Duration::from_millis(60), 5);
        jb.push(65_534, p(1), t);
        jb.push(0, p(3), t);
        jb.push(65_535, p(2), t);
        assert_eq!(drain(&mut jb, t), vec![Play::Packet(p(1)), Play::Packet(p(2)), Play::Packet(p(3))]);
        assert_eq!(extend(5, 65_535), 65_535, "an early packet near the start is not negative");
    }
}
