#!/usr/bin/env python3
"""Writes the small seed corpus of each fuzz target into fuzz/corpus/<target>/ (kept in git)."""
import base64, json, os, struct, sys

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def put(target, name, data):
    os.makedirs(os.path.join(root, target), exist_ok=True)
    with open(os.path.join(root, target, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


# client_event: one of each event, both dialects' session.update shapes.
events = {
    "update_flat": {"type": "session.update", "session": {"input_audio_format": "pcm16", "input_sample_rate": 24000,
                    "equipment": "RTU-40", "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}},
    "update_ga": {"type": "session.update", "session": {"type": "realtime", "audio": {"input": {"format":
                  {"type": "audio/pcm", "rate": 24000}, "turn_detection": None}, "output": {"voice": "alloy"}}}},
    "append": {"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\x00\x01" * 8).decode()},
    "commit": {"type": "input_audio_buffer.commit"},
    "item": {"type": "conversation.item.create", "item": {"type": "message", "role": "user",
             "content": [{"type": "input_text", "text": "what torque for the head bolts?"}]}},
    "truncate": {"type": "conversation.item.truncate", "item_id": "item_1", "content_index": 0, "audio_end_ms": 1200},
    "response": {"type": "response.create"},
}
for name, event in events.items():
    put("client_event", name, json.dumps(event))

# pcm_frames: rate pick, frame cut, then PCM16 (a ramp and a clipped square).
put("pcm_frames", "ramp", bytes([0, 160]) + b"".join(struct.pack("<h", i * 37 % 65536 - 32768) for i in range(800)))
put("pcm_frames", "square", bytes([7, 3]) + b"".join(struct.pack("<h", 32767 if i % 40 < 20 else -32768) for i in range(640)))

# token: a raw token, and header + claims for the target to sign.
put("token", "raw", b"\x00eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2ln")
put("token", "signed", b"\x01" + json.dumps({"alg": "HS256", "typ": "JWT"}).encode() + b"\n"
    + json.dumps({"sub": "tech-1", "tenant": "acme", "role": "technician", "iat": 1, "exp": 99999999999}).encode())


def pdf(pages):
    objs = ["<< /Type /Catalog /Pages 2 0 R >>",
            "<< /Type /Pages /Kids [%s] /Count %d >>" % (" ".join("%d 0 R" % (4 + 2 * i) for i in range(len(pages))), len(pages)),
            "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"]
    for i, text in enumerate(pages):
        stream = "BT /F1 12 Tf 72 720 Td (%s) Tj ET" % text
        objs.append("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % (5 + 2 * i))
        objs.append("<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
    out, offsets = "%PDF-1.4\n", []
    for n, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += "%d 0 obj\n%s\nendobj\n" % (n, body)
    xref = len(out)
    out += "xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1) + "".join("%010d 00000 n \n" % o for o in offsets)
    out += "trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return out.encode("latin-1")


put("document", "pdf", b"\x00" + pdf(["Head bolts: 38 N m.", "Filter every 800 hours."]))
put("document", "text", b"\x01Torque the head bolts to 38 N m.\fPage two.\n\nNew paragraph.")
put("document", "markdown", b"\x02# RTU-40\n\n* Belt deflection: 12 mm\n\n| code | meaning |\n|---|---|\n| E47 | low oil |")


def ct2_string(s):
    b = s.encode() + b"\0"
    return struct.pack("<H", len(b)) + b


def ct2_var(name, shape, dtype, data):
    return ct2_string(name) + bytes([len(shape)]) + b"".join(struct.pack("<I", d) for d in shape) + bytes([dtype]) \
        + struct.pack("<I", len(data)) + data


ct2 = struct.pack("<I", 6) + ct2_string("WhisperSpec") + struct.pack("<II", 3, 3)
ct2 += ct2_var("num_heads", [], 3, struct.pack("<i", 6))
ct2 += ct2_var("w", [2, 2], 4, struct.pack("<4e", 0.5, -1.0, 2.0, 0.0))
ct2 += ct2_var("b", [2], 0, struct.pack("<2f", 1.0, -2.0))
ct2 += struct.pack("<I", 1) + ct2_string("alias") + ct2_string("w")
put("ct2_model", "tiny", ct2)


def gguf_str(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gguf_kv(key, vtype, payload):
    return gguf_str(key) + struct.pack("<I", vtype) + payload


def gguf_array(item_type, items):
    return struct.pack("<IQ", item_type, len(items)) + b"".join(items)


tokens = ["a", "b", "ab", "Ġ", "4", "<|im_start|>", "<|im_end|>"]
kvs = [
    gguf_kv("tokenizer.ggml.model", 8, gguf_str("gpt2")),
    gguf_kv("tokenizer.ggml.tokens", 9, gguf_array(8, [gguf_str(t) for t in tokens])),
    gguf_kv("tokenizer.ggml.merges", 9, gguf_array(8, [gguf_str("a b")])),
    gguf_kv("tokenizer.ggml.token_type", 9, gguf_array(5, [struct.pack("<i", 3 if t.startswith("<|") else 1) for t in tokens])),
    gguf_kv("tokenizer.ggml.eos_token_id", 4, struct.pack("<I", 6)),
]
put("gguf_header", "tokenizer", b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs))
sys.exit(0)
