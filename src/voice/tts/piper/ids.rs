//! Phonemes to model ids, framed the way Piper trains its voices:
//! BOS, PAD, then every phoneme followed by PAD, then EOS.

use std::collections::HashMap;

use unicode_normalization::UnicodeNormalization;

use super::config::{BOS, EOS, PAD, VoiceConfig};

pub(super) struct PhonemeIds {
    map: HashMap<String, Vec<i64>>,
    /// Multi-codepoint phonemes the voice was trained with, longest first.
    clusters: Vec<Vec<char>>,
    bos: Vec<i64>,
    pad: Vec<i64>,
    eos: Vec<i64>,
}

/// The ids of one sentence, and how many phonemes had no id (and were left out).
pub(super) struct Encoded {
    pub ids: Vec<i64>,
    pub skipped: usize,
}

impl PhonemeIds {
    /// `config` has been validated, so the framing symbols are present.
    pub fn new(config: &VoiceConfig) -> Self {
        let map = config.phoneme_id_map.clone();
        let framing = |symbol: &str| map.get(symbol).cloned().unwrap_or_default();
        let (bos, pad, eos) = (framing(BOS), framing(PAD), framing(EOS));
        let mut clusters: Vec<Vec<char>> = config
            .vowel_clusters
            .iter()
            .map(|cluster| cluster.concat().nfd().collect::<Vec<char>>())
            .filter(|chars| chars.len() > 1)
            .collect();
        clusters.sort_by_key(|chars| std::cmp::Reverse(chars.len()));
        Self { map, clusters, bos, pad, eos }
    }

    #[cfg(test)]
    pub fn contains(&self, phoneme: char) -> bool {
        self.map.contains_key(phoneme.encode_utf8(&mut [0; 4]) as &str)
    }

    /// Ids for one sentence of IPA. Precomposed characters are decomposed first (NFD), as
    /// piper-phonemize does, so "ç" becomes "c" plus a combining cedilla.
    pub fn encode(&self, phonemes: &str) -> Encoded {
        let chars: Vec<char> = phonemes.nfd().collect();
        let mut ids = Vec::with_capacity(2 * chars.len() + 3);
        ids.extend_from_slice(&self.bos);
        ids.extend_from_slice(&self.pad);
        let mut skipped = 0;
        let mut i = 0;
        while i < chars.len() {
            let width = self.clusters.iter().find(|cluster| chars[i..].starts_with(cluster)).map_or(1, Vec::len);
            let phoneme: String = chars[i..i + width].iter().collect();
            i += width;
            match self.map.get(&phoneme) {
                Some(phoneme_ids) => {
                    ids.extend_from_slice(phoneme_ids);
                    ids.extend_from_slice(&self.pad);
                }
                None => {
                    skipped += 1;
                    tracing::debug!(phoneme = %phoneme.escape_unicode(), "phoneme missing from id map, skipped");
                }
            }
        }
        ids.extend_from_slice(&self.eos);
        Encoded { ids, skipped }
    }

    /// Whether `ids` holds nothing but framing (BOS, PADs, EOS): nothing to speak.
    pub fn is_empty_utterance(&self, encoded: &Encoded) -> bool {
        encoded.ids.len() <= self.bos.len() + self.pad.len() + self.eos.len()
    }
}
