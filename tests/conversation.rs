//! A conversation over `/v1/realtime` with the real models and real (synthesized) audio:
//! interruptions that need evidence, the speakerphone's echo, follow-up questions,
//! partial transcripts, resume after a dropped socket, and failures that end responses.

mod common;

use std::time::{Duration, Instant};

use common::*;
use fieldvox::audio::noise::{self, NoiseColour};
use fieldvox::auth::Role;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const TORQUE_Q: &str = "What torque for the compressor head bolts on the RTU-40?";
const FILTER_Q: &str = "How often do I replace the intake air filter on the RTU-40?";
const STOP: &str = "Stop. What about the oil filter?";

async fn configure(c: &mut Client, pipeline: &str) {
    let session = json!({"input_sample_rate": 16000, "pipeline": pipeline});
    c.send_json(json!({"type": "session.update", "session": session})).await;
    let updated = c.next_event().await;
    assert_eq!(updated["type"], "session.updated", "{updated}");
}

async fn ask(c: &mut Client, text: &str) -> Vec<Value> {
    c.send_json(json!({"type": "conversation.item.create", "item": {"text": text}})).await;
    c.events_until("response.done").await
}

fn done_text(events: &[Value]) -> String {
    events.last().and_then(|e| e["text"].as_str()).unwrap_or_default().to_string()
}

/// `ms` of silence at 16 kHz.
fn silence(ms: usize) -> Vec<f32> {
    vec![0.0; 16 * ms]
}

/// Deterministic pink noise at `dbfs` RMS.
fn pink_noise(ms: usize, dbfs: f32, seed: u64) -> Vec<f32> {
    let mut samples = vec![0.0; 16 * ms];
    noise::at_dbfs(NoiseColour::Pink, seed, dbfs).fill(&mut samples);
    samples
}

/// A 300 ms cough-like burst: noise under a fast attack and decay, loud.
fn cough() -> Vec<f32> {
    let noise = pink_noise(300, -12.0, 7);
    let n = noise.len() as f32;
    noise.iter().enumerate().map(|(i, s)| s * (1.0 - i as f32 / n).powi(2) * 2.0).collect()
}

fn answer_secs(c: &Client, audio_before: usize) -> f64 {
    (c.audio.len() - audio_before) as f64 / 2.0 / 16_000.0
}

/// Reads the conversation's text for an item.
async fn retrieve(c: &mut Client, item_id: &str) -> String {
    c.send_json(json!({"type": "conversation.item.retrieve", "item_id": item_id})).await;
    let events = c.events_until("conversation.item.retrieved").await;
    let item = &events.last().expect("retrieved")["item"];
    assert_eq!(item["id"], item_id, "{item}");
    item["text"].as_str().unwrap_or_default().to_string()
}

fn answer_item(response_id: &Value) -> String {
    format!("item_{}", response_id.as_str().unwrap_or_default().trim_start_matches("resp_"))
}

#[tokio::test]
async fn follow_up_questions_carry_the_topic_on_the_extractive_and_local_profiles() {
    let h = harness();
    for pipeline in ["field-assistant", "local-llm"] {
        let mut c = h.connect(TENANT_A).await;
        configure(&mut c, pipeline).await;
        let first = ask(&mut c, FILTER_Q).await;
        assert!(done_text(&first).contains("500"), "{pipeline}: {first:?}");
        let items: Vec<&Value> = of_type(&first, "conversation.item.created");
        let roles: Vec<&str> = items.iter().filter_map(|e| e["item"]["role"].as_str()).collect();
        assert_eq!(roles, ["user", "assistant"], "{pipeline}: {first:?}");
        let question_item = items[0]["item"]["id"].as_str().expect("id").to_string();

        let second = ask(&mut c, "And what's its part number?").await;
        let text = done_text(&second);
        assert!(text.contains("IF-2040-C"), "{pipeline}: the intake filter's part number: {text}");
        let citations = &of_type(&second, "response.citations")[0]["citations"];
        assert_eq!(citations[0]["page"], 2, "{pipeline}: {citations}");
        // The history holds the first question under its item id.
        assert_eq!(retrieve(&mut c, &question_item).await, FILTER_Q, "{pipeline}");
    }
}

/// A chat-completions endpoint standing in for a language model that can rewrite
/// questions (none that can runs on this machine: SmolLM2-135M cannot). It answers a
/// rewrite request with `rewrite`, anything else with a fixed sentence, and records
/// every request.
#[derive(Default)]
struct ScriptedChat {
    rewrite: std::sync::Mutex<String>,
    requests: std::sync::Mutex<Vec<Value>>,
}

impl ScriptedChat {
    async fn serve(self: std::sync::Arc<Self>) -> std::net::SocketAddr {
        use axum::extract::{Json, State};
        async fn chat(
            State(s): State<std::sync::Arc<ScriptedChat>>,
            Json(body): Json<Value>,
        ) -> impl axum::response::IntoResponse {
            let system = body["messages"][0]["content"].as_str().unwrap_or_default().to_string();
            s.requests.lock().expect("lock").push(body);
            let text = if system.starts_with("Rewrite") {
                s.rewrite.lock().expect("lock").clone()
            } else {
                "The manual gives the value.".to_string()
            };
            let chunk = json!({"choices": [{"delta": {"content": text}}]});
            ([(axum::http::header::CONTENT_TYPE, "text/event-stream")], format!("data: {chunk}\n\ndata: [DONE]\n\n"))
        }
        let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(chat)).with_state(self);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    /// Takes the requests recorded so far: (rewrite requests, answer requests).
    fn take(&self) -> (Vec<Value>, Vec<Value>) {
        let requests = std::mem::take(&mut *self.requests.lock().expect("lock"));
        requests
            .into_iter()
            .partition(|r| r["messages"][0]["content"].as_str().is_some_and(|s| s.starts_with("Rewrite")))
    }
}

/// Every message of a chat request, joined.
fn prompt_text(request: &Value) -> String {
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    messages.iter().filter_map(|m| m["content"].as_str()).collect::<Vec<_>>().join("\n")
}

#[tokio::test]
async fn a_language_model_rewrites_follow_ups_for_retrieval_and_a_bad_rewrite_falls_back_to_the_terms() {
    let chat = std::sync::Arc::new(ScriptedChat::default());
    let chat_addr = chat.clone().serve().await;
    let dir = temp_dir("rewrite");
    let pipelines = dir.join("pipelines");
    std::fs::create_dir_all(&pipelines).expect("dir");
    std::fs::write(
        pipelines.join("rewriting.toml"),
        format!(
            "[conversation]\nrewrite = \"llm\"\n[llm]\nprovider = \"openai\"\n[llm.endpoint]\n\
             base_url = \"http://{chat_addr}/v1\"\nmodel = \"scripted\"\ntimeout_ms = 5000\n"
        ),
    )
    .expect("profile");
    let mut config = test_config(&dir);
    config.pipelines.dir = pipelines;
    config.pipelines.default = "rewriting".into();
    let server = own_server(config).await;
    ingest_rtu40(&server.app, TENANT_A).await;
    let mut c = server.connect(TENANT_A).await;
    configure(&mut c, "rewriting").await;

    let first = ask(&mut c, FILTER_Q).await;
    assert_eq!(first.last().expect("done")["status"], "completed", "{first:?}");
    let (rewrites, _) = chat.take();
    assert!(rewrites.is_empty(), "a first question is searched as asked: {rewrites:?}");

    // The same follow-up, searched as the model rewrote it or with the carried terms: the
    // model is told to say something the terms never would (the head gasket, page 3; the
    // terms carry the intake filter, page 2), so the passage shows which was searched.
    *chat.rewrite.lock().expect("lock") = "What is the part number of the RTU-40 compressor head gasket?".into();
    let second = ask(&mut c, "And what's its part number?").await;
    assert_eq!(second.last().expect("done")["status"], "completed", "{second:?}");
    let (rewrites, answers) = chat.take();
    assert_eq!(rewrites.len(), 1, "one rewrite request: {rewrites:?}");
    let asked = prompt_text(&rewrites[0]);
    assert!(asked.contains(FILTER_Q) && asked.contains("And what's its part number?"), "{asked}");
    let answer_prompt = prompt_text(answers.last().expect("answer request"));
    assert!(answer_prompt.contains("GK-4471-B"), "the rewritten question's passage: {answer_prompt}");
    assert!(!answer_prompt.contains("IF-2040-C"), "not the carried terms' passage: {answer_prompt}");
    assert!(answer_prompt.contains(FILTER_Q), "the language model sees the history: {answer_prompt}");

    // A rewrite that is not one question is ignored: the filter terms are carried instead.
    let mut c = server.connect(TENANT_A).await;
    configure(&mut c, "rewriting").await;
    ask(&mut c, FILTER_Q).await;
    *chat.rewrite.lock().expect("lock") = "Sure! Here is the question:\nWhat is it?".into();
    chat.take();
    let third = ask(&mut c, "And what's its part number?").await;
    assert_eq!(third.last().expect("done")["status"], "completed", "{third:?}");
    let (rewrites, answers) = chat.take();
    assert_eq!(rewrites.len(), 1, "{rewrites:?}");
    let answer_prompt = prompt_text(answers.last().expect("answer request"));
    assert!(answer_prompt.contains("IF-2040-C"), "the carried terms found the filter's page: {answer_prompt}");
    assert!(!answer_prompt.contains("GK-4471-B"), "{answer_prompt}");
    let _ = server.stop.send(());
}

/// Waits for `done`'s response to be interrupted by a clear, checking that no audio of
/// it arrives after the clear; returns the events from the clear to the next answer's end.
async fn interrupted(c: &mut Client, response_id: &Value) -> Vec<Value> {
    let events = c.events_until("output_audio_buffer.clear").await;
    let clear = events.last().expect("clear");
    assert_eq!(&clear["response_id"], response_id, "the answer being played is stopped: {events:?}");
    let audio_at_clear = c.audio.len();
    let mut after = vec![clear.clone()];
    loop {
        let e = c.next_event().await;
        if e["type"] == "response.output_audio.started" {
            assert_eq!(c.audio.len(), audio_at_clear, "no audio of the stopped answer after the clear");
        }
        let done = e["type"] == "response.done" && &e["response_id"] != response_id;
        after.push(e);
        if done {
            return after;
        }
    }
}

#[tokio::test]
async fn coughs_okays_and_noise_do_not_interrupt_an_answer_but_a_question_does() {
    let h = harness();
    let mut c = h.connect(TENANT_A).await;
    configure(&mut c, "field-assistant").await;
    c.send_json(json!({"type": "conversation.item.create", "item": {"text": TORQUE_Q}})).await;
    let events = c.events_until("response.output_audio.started").await;
    let response_id = of_type(&events, "response.created")[0]["response_id"].clone();
    let first_audio = Instant::now();
    let audio_before = c.audio.len();

    let mut noises = cough();
    noises.extend(silence(700));
    noises.extend(speak("okay", 16_000));
    noises.extend(silence(800));
    noises.extend(pink_noise(2_000, -35.0, 3));
    noises.extend(silence(300));
    c.stream_audio(&noises, 16_000).await;
    let done = c.events_until("response.done").await;
    assert!(of_type(&done, "output_audio_buffer.clear").is_empty(), "nothing stopped the answer: {done:?}");
    assert!(of_type(&done, "input_audio_buffer.speech_started").is_empty(), "no turn started: {done:?}");
    assert_eq!(done.last().expect("done")["status"], "completed");
    let full = done_text(&done);

    // Then a real question, while the answer still plays.
    c.stream_audio(&speak_flite(STOP, 16_000), 16_000).await;
    c.stream_audio(&silence(1_000), 16_000).await;
    let played = answer_secs(&c, audio_before);
    assert!(first_audio.elapsed().as_secs_f64() + 1.0 < played, "sent while playing: {played:.1} s of answer");
    let after = interrupted(&mut c, &response_id).await;
    let next = after.last().expect("next answer");
    assert_eq!(next["status"], "completed", "{after:?}");
    assert!(next["text"].as_str().unwrap_or_default().to_lowercase().contains("oil filter"), "{next}");
    // Only the question interrupted: one clear, one new user item, and it is the question.
    assert_eq!(of_type(&after, "output_audio_buffer.clear").len(), 1, "{after:?}");
    let heard: Vec<&Value> = of_type(&after, "conversation.item.input_audio_transcription.completed");
    assert_eq!(heard.len(), 1, "{after:?}");
    assert!(heard[0]["transcript"].as_str().unwrap_or_default().to_lowercase().contains("oil"), "{heard:?}");

    // The history holds what was heard of the stopped answer: its beginning, not all of it.
    let heard = retrieve(&mut c, &answer_item(&response_id)).await;
    assert!(full.starts_with(&heard) && heard.len() < full.len(), "heard {heard:?} of {full:?}");
}

#[tokio::test]
async fn an_answer_is_interrupted_while_written_while_spoken_and_while_still_playing() {
    let h = harness();
    for moment in ["writing", "speaking", "playing"] {
        let mut c = h.connect(TENANT_A).await;
        configure(&mut c, if moment == "playing" { "field-assistant" } else { "local-llm" }).await;
        c.send_json(json!({"type": "conversation.item.create", "item": {"text": TORQUE_Q}})).await;
        let until = match moment {
            "writing" => "response.created",
            "speaking" => "response.output_audio.started",
            _ => "response.done",
        };
        let before = c.events_until(until).await;
        let response_id = of_type(&before, "response.created")[0]["response_id"].clone();
        if moment == "playing" {
            assert_eq!(before.last().expect("done")["status"], "completed");
        }
        let mut speech = speak_flite(STOP, 16_000);
        speech.extend(silence(1_000));
        c.stream_audio(&speech, 16_000).await;
        let after = interrupted(&mut c, &response_id).await;
        if moment != "playing" {
            let stopped: Vec<&Value> =
                of_type(&after, "response.done").into_iter().filter(|d| d["response_id"] == response_id).collect();
            assert_eq!(stopped.len(), 1, "{moment}: one response.done for the stopped answer: {after:?}");
            assert_eq!(stopped[0]["status"], "cancelled", "{moment}");
        }
        let said: String = before
            .iter()
            .chain(after.iter())
            .filter(|e| e["type"] == "response.output_text.delta" && e["response_id"] == response_id)
            .filter_map(|e| e["delta"].as_str())
            .collect();
        let heard = retrieve(&mut c, &answer_item(&response_id)).await;
        assert!(said.starts_with(&heard), "{moment}: the heard part {heard:?} begins what was said {said:?}");
        assert!(heard.len() < said.len() || said.is_empty(), "{moment}: only the heard part is kept: {heard:?}");
        let next = after.last().expect("next answer");
        assert!(next["text"].as_str().unwrap_or_default().to_lowercase().contains("oil filter"), "{moment}: {next}");
    }
}

/// A phone on speaker: streams its microphone in real time — noise at −45 dBFS plus the
/// answer audio it plays, back at `echo_db` — while `speech` (if any) is said into it
/// `speak_after` into the answer. Like a real phone it drops the audio it has not played
/// when told to clear, and plays audio that arrives after a pause as it arrives. Returns
/// the events until the last answer has played out.
async fn on_speakerphone(c: Client, question: &str, echo_db: f32, speech: Option<(&[f32], Duration)>) -> Vec<Value> {
    let (mut sink, mut stream) = c.ws.split();
    let ask = json!({"type": "conversation.item.create", "item": {"text": question}});
    sink.send(Message::text(ask.to_string())).await.expect("ask");
    let gain = 10f32.powf(echo_db / 20.0);
    let noise = pink_noise(1_000, -45.0, 11);
    let echo_delay = 16 * 120; // samples: network, jitter buffer, the room
    let mut answer: Vec<f32> = Vec::new();
    // When the first answer audio arrived (the user's speech is timed from it), and when
    // the speaker would have started `answer` to be playing it now without gaps.
    let mut first_audio: Option<Instant> = None;
    let mut start: Option<Instant> = None;
    let playing_at = |t0: Instant| (t0.elapsed().as_secs_f64() * 16_000.0) as usize;
    let mut events = Vec::new();
    let mut done = false;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut sent = 0usize;
    loop {
        tokio::select! {
            msg = stream.next() => match msg.expect("socket open").expect("frame") {
                Message::Text(t) => {
                    let e: Value = serde_json::from_str(&t).expect("json");
                    match e["type"].as_str() {
                        Some("response.done") => done = true,
                        // A new question is being asked: its answer is still to come.
                        Some("input_audio_buffer.speech_started" | "response.created") => done = false,
                        Some("output_audio_buffer.clear") => {
                            if let Some(t0) = start {
                                answer.truncate(playing_at(t0));
                            }
                        }
                        _ => {}
                    }
                    events.push(e);
                }
                Message::Binary(b) => {
                    let t0 = *start.get_or_insert_with(Instant::now);
                    first_audio.get_or_insert(t0);
                    // The speaker ran dry: the new audio plays from now, not from the past,
                    // and the echo path carries the silence it played meanwhile.
                    let behind = playing_at(t0).saturating_sub(answer.len());
                    if behind > 0 {
                        answer.resize(answer.len() + behind.min(echo_delay), 0.0);
                        let rebased = playing_at(t0).saturating_sub(answer.len());
                        start = Some(t0 + Duration::from_secs_f64(rebased as f64 / 16_000.0));
                    }
                    answer.extend(pcm16_to_f32(&b));
                }
                _ => {}
            },
            _ = tick.tick() => {
                let mut frame: Vec<f32> = (0..320).map(|i| noise[(sent + i) % noise.len()]).collect();
                if let (Some(t0), Some(first)) = (start, first_audio) {
                    let played = playing_at(t0);
                    let echoed = played.saturating_sub(echo_delay);
                    for (i, s) in frame.iter_mut().enumerate() {
                        *s += answer.get(echoed + i).copied().unwrap_or(0.0) * gain;
                    }
                    if let Some((speech, after)) = speech {
                        let into = first.elapsed().saturating_sub(after).as_secs_f64();
                        let at = (into * 16_000.0) as usize;
                        if first.elapsed() >= after {
                            for (i, s) in frame.iter_mut().enumerate() {
                                *s += speech.get(at + i).copied().unwrap_or(0.0);
                            }
                        }
                    }
                    let played_out = played > answer.len() + 16 * 600;
                    if done && played_out {
                        return events;
                    }
                }
                let mut bytes = Vec::new();
                fieldvox::audio::pcm::encode_pcm16(&frame, &mut bytes);
                sink.send(Message::binary(bytes)).await.expect("audio");
                sent += 320;
            }
        }
    }
}

#[tokio::test]
async fn the_speakerphone_echo_never_interrupts_but_a_question_over_it_does() {
    let h = harness();
    let questions = [
        TORQUE_Q,
        FILTER_Q,
        "What is the control transformer fuse rated?",
        "How often do I check the condenser fan belt?",
        "What refrigerant does the unit ship with?",
        "What is the head gasket part number?",
        "What pressure for the leak test?",
        "How often do I change the oil filter?",
        "What size are the return air filters?",
        "What is the oil filter part number?",
    ];
    for (n, question) in questions.iter().enumerate() {
        let mut c = h.connect(TENANT_A).await;
        configure(&mut c, "field-assistant").await;
        let events = on_speakerphone(c, question, -10.0, None).await;
        assert!(of_type(&events, "output_audio_buffer.clear").is_empty(), "answer {n} interrupted itself: {events:?}");
        assert!(of_type(&events, "input_audio_buffer.speech_started").is_empty(), "answer {n}: {events:?}");
        let done = of_type(&events, "response.done");
        assert_eq!(done.len(), 1, "answer {n}: {events:?}");
        assert_eq!(done[0]["status"], "completed", "answer {n}");
    }
    let mut c = h.connect(TENANT_A).await;
    configure(&mut c, "field-assistant").await;
    let stop = speak_flite(STOP, 16_000);
    let events = on_speakerphone(c, TORQUE_Q, -10.0, Some((&stop, Duration::from_millis(1_500)))).await;
    assert_eq!(of_type(&events, "output_audio_buffer.clear").len(), 1, "the real question interrupts: {events:?}");
}

#[tokio::test]
async fn partial_transcripts_arrive_while_the_user_speaks() {
    let h = harness();
    let mut c = h.connect(TENANT_A).await;
    configure(&mut c, "field-assistant").await;
    let mut speech = speak_flite("What torque for the compressor head bolts", 16_000);
    speech.extend(silence(350));
    speech.extend(speak_flite("on the RTU-40?", 16_000));
    speech.extend(silence(1_000));
    // In real time, as a microphone would: the pause's transcription has time to finish.
    for chunk in speech.chunks(320) {
        c.stream_audio(chunk, 16_000).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let events = c.events_until("conversation.item.input_audio_transcription.completed").await;
    let committed = of_type(&events, "input_audio_buffer.committed");
    let item_id = &committed[0]["item_id"];
    let deltas: Vec<&Value> = of_type(&events, "conversation.item.input_audio_transcription.delta");
    assert!(!deltas.is_empty(), "{events:?}");
    assert!(deltas.iter().all(|d| &d["item_id"] == item_id), "deltas of the user item: {deltas:?}");
    let partial: String = deltas.iter().filter_map(|d| d["delta"].as_str()).collect();
    assert!(partial.to_lowercase().contains("torque"), "{partial:?}");
}

#[tokio::test]
async fn a_dropped_session_resumes_with_its_history_within_the_window_only() {
    let mut config = test_config(&temp_dir("resume"));
    config.server.resume_window_ms = 2_000;
    let server = own_server(config).await;
    ingest_rtu40(&server.app, TENANT_A).await;
    let token = server.token(TENANT_A);

    let (mut c, created) = open_with(server.addr, &token, None).await.expect("open");
    let session_id = created["session"]["id"].clone();
    let resume_token = created["session"]["resume_token"].as_str().expect("resume token").to_string();
    configure(&mut c, "field-assistant").await;
    c.send_json(json!({"type": "session.update", "session": {"equipment": "RTU-40"}})).await;
    c.next_event().await;
    // Mid-answer the socket dies (no close frame: the phone lost its network).
    c.send_json(json!({"type": "conversation.item.create", "item": {"text": FILTER_Q}})).await;
    let running = c.events_until("response.created").await;
    let unfinished = running.last().expect("created")["response_id"].clone();
    let question_item =
        of_type(&running, "conversation.item.created")[0]["item"]["id"].as_str().expect("id").to_string();
    drop(c);

    // Another user cannot take it.
    let other = server.mint("tech-2", TENANT_A, Role::Technician);
    let refused = open_with(server.addr, &other, Some(&resume_token)).await.err().expect("refused");
    assert_eq!(refused.0, 403, "{refused:?}");
    assert_eq!(refused.1["error"], "invalid_resume_token");

    let mut resumed = None;
    for _ in 0..50 {
        // The server parks the session once it has seen the socket end.
        match open_with(server.addr, &token, Some(&resume_token)).await {
            Ok(r) => {
                resumed = Some(r);
                break;
            }
            Err((410, _)) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => panic!("resume refused: {e:?}"),
        }
    }
    let (mut c, created) = resumed.expect("resumed within the window");
    assert_eq!(created["session"]["id"], session_id);
    assert_eq!(created["session"]["resumed"], true);
    assert_eq!(created["session"]["pipeline"], "field-assistant");
    assert_eq!(created["session"]["equipment"], "RTU-40");
    let done = c.next_event().await;
    assert_eq!(
        (&done["type"], &done["response_id"], &done["status"]),
        (&json!("response.done"), &unfinished, &json!("cancelled"))
    );
    // The history came back: the question is there, and a follow-up still knows what "its" is.
    assert_eq!(retrieve(&mut c, &question_item).await, FILTER_Q);
    let second = ask(&mut c, "And what's its part number?").await;
    assert!(done_text(&second).contains("IF-2040-C"), "{second:?}");

    // Dropped again, and back too late.
    let resume_token = created["session"]["resume_token"].as_str().expect("resume token").to_string();
    drop(c);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let late = open_with(server.addr, &token, Some(&resume_token)).await.err().expect("refused");
    assert_eq!(late.0, 410, "{late:?}");
    assert_eq!(late.1["error"], "resume_expired");
    let _ = server.stop.send(());
}

#[tokio::test]
async fn a_failing_stage_ends_its_response_with_failed_and_a_code() {
    let dir = temp_dir("failing-voice");
    let pipelines = dir.join("pipelines");
    std::fs::create_dir_all(&pipelines).expect("dir");
    std::fs::copy(repo().join("pipelines/field-assistant.toml"), pipelines.join("field-assistant.toml")).expect("copy");
    // A speech provider that never answers: a port of this test's own, bound and never
    // served, so the request times out.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    std::fs::write(
        pipelines.join("broken-voice.toml"),
        format!(
            "[llm]\nprovider = \"extractive\"\n[tts]\nprovider = \"openai\"\n\
             [tts.endpoint]\nbase_url = \"http://127.0.0.1:{port}/v1\"\nmodel = \"tts-1\"\ntimeout_ms = 2000\n"
        ),
    )
    .expect("profile");
    let mut config = test_config(&dir);
    config.pipelines.dir = pipelines;
    let server = own_server(config).await;
    ingest_rtu40(&server.app, TENANT_A).await;
    let mut c = server.connect(TENANT_A).await;
    configure(&mut c, "broken-voice").await;
    let events = ask(&mut c, TORQUE_Q).await;
    let done = events.last().expect("done");
    assert_eq!(done["status"], "failed", "{events:?}");
    assert_eq!(done["error"]["code"], "model_unavailable", "{done}");
    assert_eq!(of_type(&events, "response.created").len(), 1);
    drop(silent);
    let _ = server.stop.send(());
}
