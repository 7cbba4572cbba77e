#!/usr/bin/env python3
"""Asks fieldvox questions through the official `openai` package's realtime client.

Used by tests/openai_sdk.rs; also a working example of connecting an OpenAI Realtime
client to fieldvox: point `websocket_base_url` at the server's `/v1` and pass a fieldvox
token as the API key.

Usage: openai_realtime.py --url ws://HOST:PORT/v1 --token JWT
                          [--wav question-24k.wav] [--ask "typed question"]
Prints one JSON object: per question, the transcript, the answer, the citations, the
number of answer audio bytes and the event types seen.
"""
import argparse
import asyncio
import base64
import json
import wave

from openai import AsyncOpenAI

CHUNK_MS = 100
# A missing response.done fails the test instead of hanging it.
ANSWER_TIMEOUT_S = 120


async def answer(conn) -> dict:
    """Collects events until response.done."""
    result = {"transcript": None, "answer": "", "citations": [], "audio_bytes": 0, "events": []}
    async for event in conn:
        result["events"].append(event.type)
        if event.type == "conversation.item.input_audio_transcription.completed":
            result["transcript"] = event.transcript
        elif event.type == "response.output_audio.delta":
            result["audio_bytes"] += len(base64.b64decode(event.delta))
        elif event.type == "response.citations":
            result["citations"] = [{"title": c["title"], "page": c["page"]} for c in event.citations]
        elif event.type == "error":
            result.setdefault("errors", []).append(event.error.code)
        elif event.type == "response.done":
            result["status"] = event.response.status
            result["answer"] = event.response.output[0].content[0].transcript
            return result
    raise RuntimeError("connection closed before response.done")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="WebSocket base URL, e.g. ws://127.0.0.1:8080/v1")
    parser.add_argument("--token", required=True, help="fieldvox bearer token")
    parser.add_argument("--wav", help="spoken question: mono PCM16 WAV at 24 kHz")
    parser.add_argument("--ask", help="typed question")
    args = parser.parse_args()

    client = AsyncOpenAI(api_key=args.token, websocket_base_url=args.url)
    out = {}
    async with client.realtime.connect(model="field-assistant") as conn:
        created = await conn.recv()
        out["session"] = created.session.model_dump() if created.type == "session.created" else created.type
        # The current session shape; turn detection off, so the client commits and asks for
        # the response itself.
        await conn.session.update(session={
            "type": "realtime",
            "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}, "turn_detection": None}},
        })
        updated = await conn.recv()
        out["updated"] = updated.type
        if args.wav:
            with wave.open(args.wav, "rb") as w:
                assert w.getframerate() == 24000 and w.getnchannels() == 1 and w.getsampwidth() == 2
                pcm = w.readframes(w.getnframes())
            step = 24000 * 2 * CHUNK_MS // 1000
            for i in range(0, len(pcm), step):
                await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[i:i + step]).decode())
            await conn.input_audio_buffer.commit()
            await conn.response.create()
            out["spoken"] = await asyncio.wait_for(answer(conn), ANSWER_TIMEOUT_S)
        if args.ask:
            await conn.conversation.item.create(item={
                "type": "message", "role": "user", "content": [{"type": "input_text", "text": args.ask}],
            })
            await conn.response.create()
            out["typed"] = await asyncio.wait_for(answer(conn), ANSWER_TIMEOUT_S)
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
