//! What the user's pause prepares: a transcription started 200 ms into the silence goes
//! on to everything a turn on it would read first — the search, the evidence and a local
//! model's prompt — through the same functions the turn uses, so the turn finds them in
//! their caches if the user stays silent.

use std::sync::Arc;

use super::Pipeline;
use super::turn::{answer_request, as_printed, search, standalone_by_terms};
use crate::rag::KnowledgeBase;
use crate::session::history::Exchange;

/// A session's state a prepared turn depends on, taken when the pause began.
pub struct Prepare {
    pub kb: KnowledgeBase,
    pub pipeline: Arc<Pipeline>,
    pub tenant: String,
    pub equipment: Option<String>,
    /// The conversation so far, oldest first.
    pub history: Vec<Exchange>,
}

impl Prepare {
    /// Reads what a turn on `heard` would read (the query embedding, the retrieval, the
    /// evidence sentences' embeddings, a local model's prompt) into their caches. Nothing
    /// is sent; if the user speaks on, it was a guess that cost one search and one prompt
    /// read. A follow-up the profile's model would rewrite is left to the turn.
    pub async fn run(self, heard: String) {
        let question = as_printed(&self.kb, &self.tenant, heard).await;
        if question.trim().is_empty() {
            return;
        }
        let Some(standalone) = standalone_by_terms(&self.pipeline, &question, &self.history) else { return };
        let profile = &self.pipeline.profile;
        let found = search(&self.kb, &self.tenant, self.equipment.as_deref(), &standalone, profile).await;
        let (passages, evidence) = match found {
            Ok((passages, evidence, _)) => (passages, evidence),
            Err(e) => return tracing::debug!(error = %e, "speculative search failed"),
        };
        let req = answer_request(profile, &question, &passages, evidence, &self.history);
        if !req.evidence.is_empty()
            && let Err(e) = self.pipeline.llm.read_ahead(&req).await
        {
            tracing::debug!(error = %e, "speculative prompt read failed");
        }
    }
}
