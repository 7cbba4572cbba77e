//! End to end over `/v1/realtime` with the real models: spoken and typed questions,
//! grounded answers with citations, and tenant isolation.

mod common;

use common::*;
use serde_json::{Value, json};

const QUESTION: &str = "What torque for the compressor head bolts on the RTU-40?";

fn mentions_38(text: &str) -> bool {
    let t = text.to_lowercase();
    t.contains("38") || t.contains("thirty-eight") || t.contains("thirty eight")
}

#[tokio::test]
async fn spoken_question_gets_a_spoken_cited_answer() {
    let h = harness();
    let mut c = h.connect(TENANT_A).await;
    // A non-16 kHz input rate exercises resampling on the way in, and 24 kHz on the way out.
    c.send_json(json!({"type": "session.update", "session": {
        "input_audio_format": "pcm16", "input_sample_rate": 24000, "output_sample_rate": 24000, "pipeline": "extractive"}}))
        .await;
    let updated = c.next_event().await;
    assert_eq!(updated["type"], "session.updated", "{updated}");
    assert_eq!(updated["session"]["pipeline"], "extractive");

    let mut audio = vec![0.0; 24_000 / 2];
    audio.extend(speak(QUESTION, 24_000));
    audio.extend(vec![0.0; 24_000 * 3 / 2]);
    c.stream_audio(&audio, 24_000).await;

    let events = c.events_until("response.done").await;
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert!(kinds.contains(&"input_audio_buffer.speech_started"), "{kinds:?}");
    assert!(kinds.contains(&"input_audio_buffer.speech_stopped"), "{kinds:?}");

    let transcript = of_type(&events, "conversation.item.input_audio_transcription.completed")[0]["transcript"]
        .as_str()
        .unwrap()
        .to_lowercase();
    assert!(transcript.contains("torque") && transcript.contains("compressor"), "transcript: {transcript}");

    let citations = &of_type(&events, "response.citations")[0]["citations"];
    let done = events.last().unwrap();
    assert_eq!(citations[0]["title"], MANUAL_TITLE, "heard {transcript:?}, answered {}", done["text"]);
    assert_eq!(citations[0]["page"], 3, "the torque is on page 3: {citations}");
    assert_eq!(citations[0]["manual_id"], h.manual_id.as_str());

    let done = events.last().unwrap();
    assert_eq!(done["status"], "completed", "{done}");
    for stage in ["stt_ms", "retrieval_ms", "llm_first_token_ms", "tts_first_audio_ms", "voice_to_voice_ms"] {
        assert!(done["timings"][stage].as_f64().is_some(), "missing {stage}: {done}");
    }

    // The answer audio, transcribed back with the same recogniser, states the torque.
    assert!(c.audio.len() > 24_000 * 2, "at least a second of answer audio, got {} bytes", c.audio.len());
    let answer = fieldvox::audio::resample::resample(&pcm16_to_f32(&c.audio), 24_000, 16_000);
    let pipeline = h.app.pipelines.get(Some("extractive")).unwrap();
    let heard = pipeline.stt.transcribe(answer, String::new()).await.unwrap();
    assert!(mentions_38(&heard), "answer audio says: {heard}");
}

/// Every candidate, no relevance cut: the tenant filter alone must keep A's text from B.
fn wide_open() -> fieldvox::rag::retrieve::RetrievalConfig {
    fieldvox::rag::retrieve::RetrievalConfig { top_k: 20, min_score: -1.0, ..Default::default() }
}

#[tokio::test]
async fn another_tenant_never_sees_the_manual() {
    let h = harness();
    let mut c = h.connect(TENANT_B).await;
    c.send_json(json!({"type": "session.update", "session": {"pipeline": "extractive"}})).await;
    c.next_event().await;
    c.send_json(json!({"type": "conversation.item.create", "item": {"text": QUESTION}})).await;
    let events = c.events_until("response.done").await;
    let citations = of_type(&events, "response.citations")[0]["citations"].as_array().unwrap().clone();
    assert!(citations.iter().all(|c| c["title"] != MANUAL_TITLE), "tenant B got A's manual: {citations:?}");
    let text = events.last().unwrap()["text"].as_str().unwrap().to_string();
    assert!(!text.contains("38") && !text.contains("GK-4471"), "tenant B heard A's facts: {text}");

    // And directly at the retrieval layer: B's search for A's words finds only B's manual.
    let (passages, _) =
        h.app.kb.retrieve(TENANT_B, None, "compressor head bolts torque RTU-40", &wide_open()).await.unwrap();
    assert!(passages.iter().all(|p| !p.text.contains("compressor head bolts")), "{passages:?}");
}

#[tokio::test]
async fn typed_question_gets_a_grounded_local_llm_answer() {
    let h = harness();
    let mut c = h.connect(TENANT_A).await;
    c.send_json(json!({"type": "session.update", "session": {"pipeline": "local-llm", "equipment": "RTU-40"}})).await;
    c.next_event().await;
    c.send_json(
        json!({"type": "conversation.item.create", "item": {"content": [{"type": "input_text", "text": QUESTION}]}}),
    )
    .await;
    let events = c.events_until("response.done").await;
    let deltas: String =
        of_type(&events, "response.output_text.delta").iter().map(|e| e["delta"].as_str().unwrap()).collect();
    let done = events.last().unwrap();
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["text"].as_str().unwrap(), deltas, "done carries the streamed text");
    assert!(mentions_38(&deltas), "local LLM answer: {deltas}");
    assert!(of_type(&events, "response.citations")[0]["citations"][0]["page"] == 3);
    assert!(!c.audio.is_empty(), "the answer is spoken too");
}

#[tokio::test]
async fn equipment_scope_limits_retrieval() {
    let h = harness();
    let mut c = h.connect(TENANT_A).await;
    c.send_json(json!({"type": "session.update", "session": {"pipeline": "extractive", "equipment": "RTU-99"}})).await;
    c.next_event().await;
    c.send_json(json!({"type": "conversation.item.create", "item": {"text": QUESTION}})).await;
    let events = c.events_until("response.done").await;
    assert!(of_type(&events, "response.citations")[0]["citations"].as_array().unwrap().is_empty());
    assert_eq!(events.last().unwrap()["text"], "I could not find that in your manuals.");
}

#[tokio::test]
async fn talking_over_an_answer_still_playing_stops_it() {
    let h = harness();
    let mut c = h.connect(TENANT_A).await;
    c.send_json(json!({"type": "session.update", "session": {"input_sample_rate": 16000}})).await;
    c.next_event().await;
    c.send_json(json!({"type": "conversation.item.create", "item": {"text": QUESTION}})).await;
    let done = c.events_until("response.done").await.pop().expect("done");
    assert_eq!(done["status"], "completed", "{done}");
    // Several seconds of speech, sent faster than real time: the phone is still playing it.
    let answer_secs = c.audio.len() as f64 / 2.0 / 16_000.0;
    assert!(answer_secs > 4.0, "a long enough answer to talk over: {answer_secs:.1} s");

    c.stream_audio(&speak("Wait, which gasket?", 16_000), 16_000).await;
    let events = c.events_until("output_audio_buffer.clear").await;
    let clear = events.last().expect("clear");
    assert_eq!(clear["response_id"], done["response_id"], "the answer being played is stopped: {events:?}");
}

/// A transcription made in the user's pause prepares the turn: the turn's own search on
/// the same words (a follow-up's too, made standalone by its terms) is a cache hit — and a
/// spoken question's turn finds its search done.
#[tokio::test]
async fn a_pause_prepares_the_retrieval_the_turn_reads() {
    use fieldvox::pipeline::speculation::Prepare;
    use fieldvox::session::history::Exchange;

    let h = harness();
    let pipeline = h.app.pipelines.get(Some("field-assistant")).unwrap();
    let retrieval = pipeline.profile.retrieval.clone();
    let prepare = |history| Prepare {
        kb: h.app.kb.clone(),
        pipeline: pipeline.clone(),
        tenant: TENANT_A.into(),
        equipment: None,
        history,
    };
    let asked = "Which torque do the RTU-40 compressor head bolts take when the unit is warm?";
    let unprepared = "Which torque do the RTU-40 compressor head bolts take when the unit is cold?";
    prepare(Vec::new()).run(asked.into()).await;
    let (passages, rt) = h.app.kb.retrieve(TENANT_A, None, asked, &retrieval).await.unwrap();
    assert!(rt.cache_hit && !passages.is_empty(), "{rt:?}");
    let (_, rt) = h.app.kb.retrieve(TENANT_A, None, unprepared, &retrieval).await.unwrap();
    assert!(!rt.cache_hit, "a question nobody prepared is searched");

    let previous = Exchange {
        question_item: "item_q".into(),
        question: asked.into(),
        standalone: asked.into(),
        answer_item: "item_a".into(),
        answer: "38 newton metres.".into(),
        said: "38 newton metres.".into(),
        answer_audio_us: 0,
    };
    let follow_up = "And the gasket part number?";
    let standalone = fieldvox::pipeline::followup::by_terms(follow_up, Some(&previous));
    assert_ne!(standalone, follow_up, "the follow-up carries the first question's terms");
    prepare(vec![previous]).run(follow_up.into()).await;
    let (_, rt) = h.app.kb.retrieve(TENANT_A, None, &standalone, &retrieval).await.unwrap();
    assert!(rt.cache_hit, "the follow-up was prepared as the turn will search it: {standalone:?}");

    // Through a session: the pause before the end of a spoken question (asked nowhere
    // else) searched it, so the turn's own search took no embedding (0 only on a hit).
    let mut c = h.connect(TENANT_A).await;
    c.send_json(json!({"type": "session.update", "session": {"input_sample_rate": 16000}})).await;
    c.next_event().await;
    let mut audio = vec![0.0; 16_000 / 2];
    audio.extend(speak("How often should I clean the condenser coil?", 16_000));
    audio.extend(vec![0.0; 16_000 * 3 / 2]);
    c.stream_audio(&audio, 16_000).await;
    let done = c.events_until("response.done").await.pop().expect("done");
    assert_eq!(done["timings"]["embed_ms"], 0.0, "the turn's search was prepared in the pause: {done}");
}

/// The round trip above with Opus both ways: the phone sends one 20 ms packet per binary
/// frame at 48 kHz, and hears 20 ms packets at 24 kHz.
#[tokio::test]
async fn opus_in_and_out_gets_the_same_spoken_answer() {
    let h = harness();
    let mut c = h.connect(TENANT_A).await;
    c.send_json(json!({"type": "session.update", "session": {
        "input_audio_format": "opus", "input_sample_rate": 48000,
        "output_audio_format": "opus", "output_sample_rate": 24000, "pipeline": "extractive"}}))
        .await;
    let updated = c.next_event().await;
    assert_eq!(updated["type"], "session.updated", "{updated}");
    assert_eq!(updated["session"]["input_audio_format"], "opus", "{updated}");
    assert_eq!(updated["session"]["output_audio_format"], "opus", "{updated}");

    let rate = 48_000;
    let mut audio = vec![0.0; rate / 2];
    // flite: espeak-ng's "head bolts" comes through no better than "had both sounded".
    audio.extend(speak_flite(QUESTION, rate as u32));
    audio.extend(vec![0.0; rate * 3 / 2]);
    let mut coded = Vec::new();
    let packets = fieldvox::audio::opus::OpusPackets::new(rate as u32)
        .expect("encoder")
        .encode(&audio, &mut coded)
        .expect("encodes");
    let sent = coded.len();
    for packet in packets {
        c.send_raw(tokio_tungstenite::tungstenite::Message::binary(coded[packet].to_vec())).await;
    }
    let events = c.events_until("response.done").await;
    let transcript = of_type(&events, "conversation.item.input_audio_transcription.completed")[0]["transcript"]
        .as_str()
        .unwrap()
        .to_lowercase();
    // flite's "torque" is heard as "org"; the rest comes through.
    assert!(transcript.contains("compressor") && transcript.contains("rtu-40"), "transcript: {transcript}");
    let done = events.last().unwrap();
    assert_eq!(done["status"], "completed", "{done}");
    let cited = &of_type(&events, "response.citations")[0]["citations"];
    assert_eq!(cited[0]["page"], 3, "heard {transcript:?}, answered {}", done["text"]);

    // Each binary frame is one packet; decoded and transcribed back, the answer states the torque.
    let mut decoder = fieldvox::audio::opus::OpusDecoder::at(16_000, 1).expect("decoder");
    let answer: Vec<f32> = c.frames.iter().flat_map(|p| decoder.decode(p).expect("an Opus packet").to_vec()).collect();
    assert!(answer.len() > 16_000, "at least a second of answer, got {} samples", answer.len());
    let received: usize = c.frames.iter().map(Vec::len).sum();
    let pcm16_bytes = answer.len() / 16 * 24 * 2;
    assert!(received * 5 < pcm16_bytes, "{received} bytes of Opus against {pcm16_bytes} of PCM16");
    assert!(sent * 5 < audio.len() * 2, "{sent} bytes sent for {} samples", audio.len());
    let pipeline = h.app.pipelines.get(Some("extractive")).unwrap();
    let heard = pipeline.stt.transcribe(answer, String::new()).await.unwrap();
    assert!(mentions_38(&heard), "answer audio says: {heard}");

    // Opus cannot be 22,050 Hz: refused, and nothing of the update applied.
    c.send_json(json!({"type": "session.update", "session": {"output_sample_rate": 22050, "equipment": "HX-220"}}))
        .await;
    let refused = c.next_event().await;
    assert_eq!(refused["error"]["code"], "unsupported_audio_format", "{refused}");
    c.send_json(json!({"type": "session.update", "session": {}})).await;
    let unchanged = c.next_event().await;
    assert_eq!(unchanged["session"]["output_sample_rate"], 24000, "{unchanged}");
    assert_eq!(unchanged["session"]["equipment"], Value::Null, "{unchanged}");
}
