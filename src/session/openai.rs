//! fieldvox's server events in the OpenAI Realtime API's current shapes (the OpenAI
//! dialect). One native event may become several: a response's created and done events
//! carry the output item and content part events OpenAI clients track answers by.
//!
//! fieldvox's own extras keep their native form: `response.citations` is an event of its
//! own, and `response.done` carries `timings` next to `response`.

use base64::Engine as _;
use serde_json::{Value, json};

pub use super::protocol::answer_item_id;
use super::protocol::{AudioFormat, ItemRole, ResponseStatus, ServerEvent, SessionInfo};

/// The API's fixed PCM rate, both ways, until the client declares another.
pub const SAMPLE_RATE: u32 = 24_000;

fn event_id() -> String {
    format!("event_{}", uuid::Uuid::new_v4().simple())
}

/// The event `kind` with an `event_id` and the given fields.
fn event(kind: &str, fields: Value) -> String {
    let mut value = json!({ "type": kind, "event_id": event_id() });
    if let (Some(map), Value::Object(fields)) = (value.as_object_mut(), fields) {
        map.extend(fields);
    }
    value.to_string()
}

/// A format as OpenAI's session shape names it.
fn mime(format: AudioFormat) -> &'static str {
    match format {
        AudioFormat::Pcm16 => "audio/pcm",
        AudioFormat::Opus => "audio/opus",
    }
}

fn session(info: &SessionInfo) -> Value {
    json!({
        "type": "realtime",
        "object": "realtime.session",
        "id": info.id,
        "model": info.pipeline,
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                "format": { "type": mime(info.input_audio_format), "rate": info.input_sample_rate },
                "turn_detection": info.turn_detection,
                "transcription": { "model": "fieldvox" },
            },
            "output": { "format": { "type": mime(info.output_audio_format), "rate": info.output_sample_rate } },
        },
        "tenant": info.tenant,
        "equipment": info.equipment,
        "pipeline": info.pipeline,
        "limits": info.limits,
        "resume_token": info.resume_token,
        "resumed": info.resumed,
    })
}

fn status(status: ResponseStatus) -> &'static str {
    match status {
        ResponseStatus::Completed => "completed",
        ResponseStatus::Cancelled => "cancelled",
        ResponseStatus::Failed => "failed",
    }
}

fn answer_item(response_id: &str, status: &str, transcript: &str) -> Value {
    json!({
        "id": answer_item_id(response_id),
        "object": "realtime.item",
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [{ "type": "output_audio", "transcript": transcript }],
    })
}

/// Where an answer's parts sit: the one output item, its one content part.
fn part_of(response_id: &str) -> Value {
    json!({
        "response_id": response_id,
        "item_id": answer_item_id(response_id),
        "output_index": 0,
        "content_index": 0,
    })
}

fn with(mut base: Value, extra: Value) -> Value {
    if let (Some(map), Value::Object(extra)) = (base.as_object_mut(), extra) {
        map.extend(extra);
    }
    base
}

/// `event` as the OpenAI dialect's events, in order.
pub fn encode(native: &ServerEvent) -> Vec<String> {
    match native {
        ServerEvent::SessionCreated { session: info } => {
            vec![event("session.created", json!({ "session": session(info) }))]
        }
        ServerEvent::SessionUpdated { session: info } => {
            vec![event("session.updated", json!({ "session": session(info) }))]
        }
        ServerEvent::SpeechStarted { audio_start_ms } => {
            vec![event("input_audio_buffer.speech_started", json!({ "audio_start_ms": audio_start_ms }))]
        }
        ServerEvent::SpeechStopped { audio_end_ms } => {
            vec![event("input_audio_buffer.speech_stopped", json!({ "audio_end_ms": audio_end_ms }))]
        }
        ServerEvent::Committed { item_id } => {
            vec![event("input_audio_buffer.committed", json!({ "item_id": item_id, "previous_item_id": null }))]
        }
        ServerEvent::AudioCleared => vec![event("input_audio_buffer.cleared", json!({}))],
        ServerEvent::ItemCreated { item } => {
            let value = match item.role {
                ItemRole::User => json!({
                    "id": item.id, "object": "realtime.item", "type": "message", "role": "user",
                    "status": "completed", "content": [{ "type": "input_audio", "transcript": null }],
                }),
                ItemRole::Assistant => answer_item(item.response_id.as_deref().unwrap_or_default(), "in_progress", ""),
            };
            vec![event("conversation.item.created", json!({ "previous_item_id": null, "item": value }))]
        }
        ServerEvent::ItemRetrieved { item } => {
            let (role, content) = match item.role {
                ItemRole::User => ("user", json!([{ "type": "input_audio", "transcript": item.text }])),
                ItemRole::Assistant => ("assistant", json!([{ "type": "output_audio", "transcript": item.text }])),
            };
            vec![event(
                "conversation.item.retrieved",
                json!({ "item": { "id": item.id, "object": "realtime.item", "type": "message", "role": role,
                                  "status": "completed", "content": content } }),
            )]
        }
        ServerEvent::TranscriptionDelta { item_id, delta } => vec![event(
            "conversation.item.input_audio_transcription.delta",
            json!({ "item_id": item_id, "content_index": 0, "delta": delta }),
        )],
        ServerEvent::TranscriptionCompleted { item_id, transcript } => vec![event(
            "conversation.item.input_audio_transcription.completed",
            json!({ "item_id": item_id, "content_index": 0, "transcript": transcript }),
        )],
        ServerEvent::ResponseCreated { response_id } => vec![
            event(
                "response.created",
                json!({ "response": {
                    "id": response_id, "object": "realtime.response", "status": "in_progress",
                    "output": [], "output_modalities": ["audio"],
                }}),
            ),
            event(
                "response.output_item.added",
                json!({ "response_id": response_id, "output_index": 0,
                        "item": answer_item(response_id, "in_progress", "") }),
            ),
            event(
                "response.content_part.added",
                with(part_of(response_id), json!({ "part": { "type": "audio", "transcript": "" } })),
            ),
        ],
        ServerEvent::TextDelta { response_id, delta } => {
            vec![event("response.output_audio_transcript.delta", with(part_of(response_id), json!({ "delta": delta })))]
        }
        // The rate is the session's output rate, which OpenAI clients already know.
        ServerEvent::AudioStarted { .. } => Vec::new(),
        ServerEvent::ResponseDone { response_id, status: s, text, timings, error } => {
            let item_status = if *s == ResponseStatus::Completed { "completed" } else { "incomplete" };
            let item = answer_item(response_id, item_status, text);
            let mut response = json!({
                "id": response_id, "object": "realtime.response", "status": status(*s),
                "output": [item.clone()], "output_modalities": ["audio"],
            });
            if *s != ResponseStatus::Completed {
                response["status_details"] = json!({ "type": status(*s) });
            }
            if let Some(e) = error {
                response["status_details"]["error"] =
                    json!({ "type": "server_error", "code": e.code, "message": e.message });
            }
            vec![
                event("response.output_audio.done", part_of(response_id)),
                event(
                    "response.output_audio_transcript.done",
                    with(part_of(response_id), json!({ "transcript": text })),
                ),
                event(
                    "response.content_part.done",
                    with(part_of(response_id), json!({ "part": { "type": "audio", "transcript": text } })),
                ),
                event(
                    "response.output_item.done",
                    json!({ "response_id": response_id, "output_index": 0, "item": item }),
                ),
                event("response.done", json!({ "response": response, "timings": timings })),
            ]
        }
        ServerEvent::OutputAudioClear { response_id } => {
            vec![event("output_audio_buffer.cleared", json!({ "response_id": response_id }))]
        }
        ServerEvent::Error { error } => {
            let kind = if error.retryable { "server_error" } else { "invalid_request_error" };
            vec![event(
                "error",
                json!({ "error": {
                    "type": kind, "code": error.code, "message": error.message, "param": null,
                    "retryable": error.retryable, "retry_after_ms": error.retry_after_ms, "limit": error.limit,
                }}),
            )]
        }
        // OpenAI's shape (name, limit, remaining, reset_seconds), plus whose allowance.
        ServerEvent::RateLimitsUpdated { .. } => vec![native.to_json()],
        // fieldvox's own events keep their native shape.
        ServerEvent::Citations { .. } | ServerEvent::GoingAway { .. } | ServerEvent::Pong => vec![native.to_json()],
    }
}

/// One frame of answer audio as `response.output_audio.delta`.
pub fn audio_delta(response_id: &str, pcm: &[u8]) -> String {
    let delta = base64::engine::general_purpose::STANDARD.encode(pcm);
    event("response.output_audio.delta", with(part_of(response_id), json!({ "delta": delta })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::session::protocol::{ErrorBody, Timings};

    fn parse(events: Vec<String>) -> Vec<Value> {
        events.iter().map(|e| serde_json::from_str(e).expect("json")).collect()
    }

    #[test]
    fn a_response_carries_its_item_and_part_events() {
        let created = parse(encode(&ServerEvent::ResponseCreated { response_id: "resp_1".into() }));
        let kinds: Vec<&str> = created.iter().map(|e| e["type"].as_str().unwrap_or("")).collect();
        assert_eq!(kinds, ["response.created", "response.output_item.added", "response.content_part.added"]);
        assert_eq!(created[0]["response"]["id"], "resp_1");
        assert!(created.iter().all(|e| e["event_id"].as_str().is_some_and(|id| id.starts_with("event_"))));

        let done = parse(encode(&ServerEvent::ResponseDone {
            response_id: "resp_1".into(),
            status: ResponseStatus::Completed,
            text: "38 newton meters.".into(),
            timings: Timings { total_ms: 12.0, ..Timings::default() },
            error: None,
        }));
        let last = done.last().expect("response.done");
        assert_eq!(last["type"], "response.done");
        assert_eq!(last["response"]["status"], "completed");
        assert_eq!(last["response"]["output"][0]["content"][0]["transcript"], "38 newton meters.");
        assert_eq!(last["response"]["output"][0]["id"], answer_item_id("resp_1"));
        assert_eq!(last["timings"]["total_ms"], 12.0);

        let failed = parse(encode(&ServerEvent::ResponseDone {
            response_id: "resp_2".into(),
            status: ResponseStatus::Failed,
            text: String::new(),
            timings: Timings::default(),
            error: Some(ErrorBody::new(ErrorCode::ModelUnavailable, "answer generation failed")),
        }));
        let last = failed.last().expect("response.done");
        assert_eq!(last["response"]["status"], "failed");
        assert_eq!(last["response"]["status_details"]["error"]["code"], "model_unavailable");
    }

    #[test]
    fn audio_is_a_base64_delta_of_the_answer_item() {
        let delta: Value = serde_json::from_str(&audio_delta("resp_9", &[1, 0, 255, 127])).expect("json");
        assert_eq!(delta["type"], "response.output_audio.delta");
        assert_eq!(delta["item_id"], "item_9");
        let bytes = base64::engine::general_purpose::STANDARD.decode(delta["delta"].as_str().unwrap_or("")).unwrap();
        assert_eq!(bytes, [1, 0, 255, 127]);
    }

    #[test]
    fn errors_name_a_type_and_keep_the_stable_code() {
        let e = parse(encode(&ServerEvent::error(ErrorCode::EmptyQuestion, "nothing said")));
        assert_eq!(e[0]["error"]["type"], "invalid_request_error");
        assert_eq!(e[0]["error"]["code"], "empty_question");
        let e = parse(encode(&ServerEvent::error(ErrorCode::Overloaded, "busy")));
        assert_eq!(e[0]["error"]["type"], "server_error");
    }
}
