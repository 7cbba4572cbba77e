//! A text frame from a client: parsed into an event, or refused with a stable code; a
//! `session.update` that parses yields settings within the protocol's bounds.
#![no_main]

use fieldvox_formats::protocol::{ClientEvent, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, ServerEvent};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match ClientEvent::parse(&text) {
        Ok(ClientEvent::SessionUpdate(update)) => {
            if let Ok(changes) = update.changes() {
                for rate in [changes.input_rate, changes.output_rate].into_iter().flatten() {
                    assert!((MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&rate), "rate {rate} accepted");
                }
                if let Some(vad) = changes.turn_detection.as_ref().and_then(|t| t.server_vad()) {
                    assert!(vad.threshold.is_none_or(|t| (0.05..=0.95).contains(&t)));
                    assert!(vad.silence_duration_ms.is_none_or(|ms| (100..=5_000).contains(&ms)));
                    assert!(vad.prefix_padding_ms.is_none_or(|ms| ms <= 2_000));
                }
            }
        }
        Ok(ClientEvent::ItemCreate(create)) => {
            let _ = create.item.text();
        }
        Ok(_) => {}
        Err(e) => {
            // The refusal the client gets is itself valid JSON.
            let reply = ServerEvent::error(e.code(), e.message()).to_json();
            assert!(serde_json::from_str::<serde_json::Value>(&reply).is_ok());
        }
    }
});
