//! The extractive answerer: no language model. It reads out the best evidence sentence,
//! chosen by meaning and by the words and codes it shares with the question, followed by
//! its source. Every fact it speaks is printed in the manual it cites.

use super::AnswerRequest;
use super::prompt::source_sentence;

/// The best evidence sentence and its source, or `None` without evidence.
pub fn answer(req: &AnswerRequest) -> Option<String> {
    let best = req.evidence.first()?;
    let passage = req.passages.get(best.passage)?;
    Some(format!("{} {}", best.sentence, source_sentence(passage)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rag::evidence::Evidence;
    use crate::rag::retrieve::Passage;
    use uuid::Uuid;

    #[test]
    fn reads_the_best_evidence_with_its_source() {
        let p = Passage {
            chunk_id: Uuid::nil(),
            manual_id: Uuid::nil(),
            title: "RTU-40 Service Manual".into(),
            page: 12,
            text: "Check the belt. The compressor head bolts are tightened to 38 N·m. Use a star pattern.".into(),
            score: 0.8,
        };
        let mut req = AnswerRequest {
            system_prompt: String::new(),
            question: "What torque for the compressor head bolts?".into(),
            passages: vec![p],
            evidence: vec![Evidence {
                passage: 0,
                sentence: "The compressor head bolts are tightened to 38 N·m.".into(),
                score: 1.0,
            }],
            max_tokens: 10,
            history: Vec::new(),
        };
        assert_eq!(
            answer(&req).unwrap(),
            "The compressor head bolts are tightened to 38 N·m. From the RTU-40 Service Manual, page 12."
        );
        req.evidence.clear();
        assert_eq!(answer(&req), None);
    }
}
