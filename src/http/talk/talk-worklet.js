// Runs on the audio thread: turns the microphone's Float32 samples into PCM16 LE and
// hands the main thread ~40 ms chunks, so the socket sends 25 small frames a second
// instead of one per 128-sample render quantum. (Int16Array is little-endian on every
// platform a browser runs on, so its bytes are already PCM16 LE.)
class Pcm16Capture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.size = Math.round(sampleRate * 0.04);
    this.chunk = new Int16Array(this.size);
    this.fill = 0;
  }

  process(inputs) {
    const input = inputs[0];
    const ch = input && input[0];
    if (!ch) return true; // no mic data this quantum (not yet connected); keep running
    for (let i = 0; i < ch.length; i++) {
      const s = Math.max(-1, Math.min(1, ch[i]));
      this.chunk[this.fill++] = s < 0 ? s * 0x8000 : s * 0x7fff;
      if (this.fill === this.size) {
        // Transferred, not copied: the audio thread must never wait on the main thread.
        this.port.postMessage(this.chunk.buffer, [this.chunk.buffer]);
        this.chunk = new Int16Array(this.size);
        this.fill = 0;
      }
    }
    return true;
  }
}

registerProcessor('pcm16-capture', Pcm16Capture);
