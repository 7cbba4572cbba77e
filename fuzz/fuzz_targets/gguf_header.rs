//! A GGUF file's header and metadata (the local LLM): read by candle's GGUF reader, then the
//! tokenizer fieldvox rebuilds from the metadata; encoding and decoding through it never
//! panic. (That literal encoding never yields a control token holds for real vocabularies,
//! whose control tokens are not BPE pieces, and is tested on SmolLM2's in the server crate.)
#![no_main]

use std::io::Cursor;

use candle_core::quantized::gguf_file::Content;
use fieldvox_formats::gguf_tokenizer::GgufTokenizer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(content) = Content::read(&mut Cursor::new(data)) else { return };
    let Ok(tokenizer) = GgufTokenizer::from_gguf(&content) else { return };
    // `tokenizers` keeps each BPE's encoding cache in a thread-local map that outlives the
    // BPE (harmless for the server's few long-lived tokenizers; a leak across millions of
    // fuzz inputs), so encoding runs on a thread of its own. A panic there still fails.
    std::thread::scope(|s| {
        s.spawn(|| {
            for text in ["<|im_start|>user\ntorque 38 Nm?<|im_end|>", "ab ba 4471", ""] {
                if let Ok(ids) = tokenizer.encode_literal(text) {
                    let _ = tokenizer.decode(&ids);
                }
                let _ = tokenizer.encode(text);
            }
            let _ = tokenizer.control_id("<|im_end|>");
        });
    });
});
