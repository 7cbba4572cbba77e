// fieldvox talk page: ask the manuals by voice (push-to-talk or hands-free) or by text, over
// the realtime WebSocket or WebRTC, and play the spoken answer. Protocol:
// src/session/protocol.rs; WebRTC signaling: src/http/rtc.rs.
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const JITTER = 0.08;          // s of lead when playback (re)starts, so late frames don't gap
  const PTT_TAIL_MS = 120;      // keep sending after release: the mic path lags the finger
  const EMPTY_GRACE_MS = 3000;  // empty_question this soon after our commit is expected
  const PING_MS = 25000;        // keeps idle proxies from dropping the socket
  const STATS_MS = 250;         // WebRTC: how often received answer audio is counted
  const RTC_QUIET_MS = 400;     // WebRTC: no answer packet this long = the answer played out
  const TIMING_LABELS = {
    stt_ms: 'speech-to-text', embed_ms: 'embed', retrieval_ms: 'search', llm_first_token_ms: 'first token',
    tts_first_audio_ms: 'first audio', voice_to_voice_ms: 'voice-to-voice', total_ms: 'total',
  };

  // Everything the tests (and a curious developer) need, kept current as events arrive.
  const fv = window.fieldvox = {
    state: 'closed', transcript: '', answer: '', citations: [], timings: {},
    transport: 'websocket', audioFramesReceived: 0, audioBytesReceived: 0, audioMsReceived: 0, responsesDone: 0,
    lastResponseStatus: null, lastTruncate: null, session: null,
  };

  let ws = null, pinger = null, ready = false, ctx = null, micPromise = null;
  let ptt = false, tailTimer = null, lastCommit = -Infinity, serverEnded = false;
  let currentId = null;  // response whose text is on screen
  let playing = null;    // answer audio: {id, rate, chunks: [{src, start, dur}], end}
  let next = 0, idleTimer = null;  // next: context time where the next answer frame starts
  // WebRTC: the peer, its events channel, the microphone track, where to DELETE it.
  let rtc = null, channel = null, micTrack = null, rtcLocation = null, statsTimer = null;
  let rtcAttempt = 0, connecting = false; // a newer attempt (or a disconnect) supersedes an older one
  let lastPacketAt = 0, idleWhenQuiet = false;

  function showStatus(text, kind) { $('status').textContent = text; $('status').dataset.kind = kind || ''; }
  function setState(s, text, kind) { fv.state = document.body.dataset.state = s; if (text) showStatus(text, kind); }
  const readyText = () => ($('handsfree').checked ? 'Ready (hands-free): just speak' : 'Ready: hold the button and speak');
  function send(obj) {
    if (channel && channel.readyState === 'open') channel.send(JSON.stringify(obj));
    else if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(obj));
  }
  const connected = () => ws !== null || rtc !== null || connecting;
  const usingRtc = () => fv.transport === 'webrtc';

  // One context for mic and speaker; browsers only let it run after a user gesture.
  function audioCtx() {
    if (!ctx) ctx = new AudioContext({ latencyHint: 'interactive' });
    if (ctx.state === 'suspended') ctx.resume().catch(() => {});
    return ctx;
  }

  // ---- connection ----

  function connect() {
    const token = $('token').value.trim();
    if (!token) { showStatus('Paste an access token first.', 'error'); $('token').focus(); return; }
    sessionStorage.setItem('fieldvox.token', token);
    audioCtx();
    disconnect();
    fv.transport = $('transport').value;
    // ?server= lets the page talk to another origin (development); else the page's own host.
    const server = new URLSearchParams(location.search).get('server');
    if (usingRtc()) { connectRtc(token, server ? server.replace(/\/+$/, '') : location.origin); return; }
    const base = server ? server.replace(/^http/, 'ws').replace(/\/+$/, '')
      : (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host;
    // Browsers cannot set headers on a WebSocket, so the token rides as a subprotocol.
    const sock = ws = new WebSocket(base + '/v1/realtime', ['fieldvox.v1', 'bearer.' + token]);
    sock.binaryType = 'arraybuffer';
    let opened = false;
    setState('connecting', 'Connecting…');
    updateControls();
    sock.onopen = () => { opened = true; pinger = setInterval(() => send({ type: 'ping' }), PING_MS); };
    sock.onmessage = (e) => { if (sock === ws) onMessage(e.data); };
    sock.onclose = (e) => {
      if (sock !== ws) return;
      closed();
      // The browser hides why a handshake failed; a bad token is the usual reason.
      if (!opened) showStatus('Could not connect: check the token and the server address.', 'error');
      else showStatus(`Disconnected${e.reason ? ': ' + e.reason : ''} (${e.code}). Press Connect to resume.`, 'warn');
    };
  }

  // WebRTC: the microphone and answer audio ride the peer connection (the browser's own
  // jitter buffer, echo cancellation and loss concealment), events the data channel.
  async function connectRtc(token, base) {
    const attempt = ++rtcAttempt;
    connecting = true;
    setState('connecting', 'Connecting…');
    updateControls();
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: true, noiseSuppression: false, autoGainControl: false },
      });
    } catch (e) {
      if (attempt !== rtcAttempt) return;
      closed();
      showStatus(`WebRTC needs the microphone: ${e.message || e.name}`, 'error');
      return;
    }
    if (attempt !== rtcAttempt) { stream.getTracks().forEach((t) => t.stop()); return; }
    connecting = false;
    fv.audioFramesReceived = fv.audioBytesReceived = fv.audioMsReceived = 0;
    const pc = rtc = new RTCPeerConnection();
    micTrack = stream.getAudioTracks()[0];
    micTrack.enabled = false; // silence until the button is held or hands-free is on
    pc.addTransceiver(micTrack, { direction: 'sendrecv', streams: [stream] });
    const dc = channel = pc.createDataChannel('events');
    dc.onmessage = (e) => { if (pc === rtc) onMessage(e.data); };
    dc.onclose = () => { if (pc === rtc) { closed(); showStatus('Disconnected. Press Connect to start again.', 'warn'); } };
    pc.ontrack = (e) => {
      const player = $('answer-audio');
      player.srcObject = e.streams[0] || new MediaStream([e.track]);
      player.play().catch(() => {});
    };
    pc.onconnectionstatechange = () => {
      if (pc === rtc && pc.connectionState === 'failed') { closed(); showStatus('The WebRTC connection failed.', 'error'); }
    };
    try {
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc);
      const res = await fetch(base + '/v1/rtc', {
        method: 'POST', body: pc.localDescription.sdp,
        headers: { Authorization: 'Bearer ' + token, 'Content-Type': 'application/sdp' },
      });
      if (res.status !== 201) {
        const body = await res.json().catch(() => ({}));
        throw new Error(`${body.message || 'HTTP ' + res.status}${body.error ? ' (' + body.error + ')' : ''}`);
      }
      const where = new URL(res.headers.get('Location'), base).href;
      if (pc !== rtc) { hangUp(where, token); return; } // disconnected meanwhile
      rtcLocation = where;
      await pc.setRemoteDescription({ type: 'answer', sdp: await res.text() });
      statsTimer = setInterval(countReceived, STATS_MS);
    } catch (e) {
      if (pc !== rtc) return;
      closed();
      showStatus(`Could not connect: ${e.message}`, 'error');
    }
  }

  // Every candidate in the offer (WHIP has no trickle), or what came within 2 s.
  function gathered(pc) {
    if (pc.iceGatheringState === 'complete') return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => { if (pc.iceGatheringState === 'complete') resolve(); };
      pc.addEventListener('icegatheringstatechange', done);
      setTimeout(resolve, 2000);
    });
  }

  // Answer audio received over WebRTC, from the peer's statistics.
  async function countReceived() {
    if (!rtc) return;
    const stats = await rtc.getStats().catch(() => null);
    if (!stats) return;
    stats.forEach((s) => {
      if (s.type !== 'inbound-rtp' || s.kind !== 'audio') return;
      if (s.packetsReceived > fv.audioFramesReceived) lastPacketAt = performance.now();
      fv.audioFramesReceived = s.packetsReceived;
      fv.audioBytesReceived = s.bytesReceived;
      fv.audioMsReceived = s.packetsReceived * 20; // the server sends 20 ms packets
      $('received').textContent = `answer audio received: ${(fv.audioMsReceived / 1000).toFixed(1)} s`;
    });
    if (idleWhenQuiet && performance.now() - lastPacketAt > RTC_QUIET_MS) {
      idleWhenQuiet = false;
      if (fv.state === 'answering') setState('idle', readyText());
    }
  }

  // The microphone is heard while the button is held (and its tail), or hands-free.
  function updateMic() { if (micTrack) micTrack.enabled = ready && (ptt || tailTimer !== null || $('handsfree').checked); }

  function hangUp(where, token) {
    fetch(where, { method: 'DELETE', keepalive: true, headers: { Authorization: 'Bearer ' + token } }).catch(() => {});
  }

  function disconnect() {
    if (rtc || connecting) {
      if (rtcLocation) hangUp(rtcLocation, $('token').value.trim());
      closed();
      showStatus('Disconnected');
      return;
    }
    if (ws) { ws.close(1000, 'user disconnected'); closed(); showStatus('Disconnected'); }
  }

  function closed() {
    ws = null;
    rtcAttempt++;
    connecting = idleWhenQuiet = false;
    if (rtc) { const pc = rtc; rtc = null; pc.close(); }
    if (micTrack) { micTrack.stop(); micTrack = null; }
    channel = rtcLocation = null;
    clearInterval(statsTimer);
    clearInterval(pinger);
    ready = ptt = false;
    stopPlayback();
    setState('closed');
    updateControls();
    $('connection').open = true;
  }

  function updateControls() {
    for (const id of ['talk', 'handsfree', 'question', 'ask']) $(id).disabled = !ready;
    $('connect').textContent = connected() ? 'Disconnect' : 'Connect';
    $('transport').disabled = connected();
    $('talk').setAttribute('aria-pressed', String(ptt));
    $('talk').textContent = ptt ? 'Release to ask' : 'Hold to talk';
  }

  function sessionUpdate() {
    const equipment = $('equipment').value.trim(); // empty = all equipment
    // Over WebRTC the audio formats are the SDP's (Opus, 48 kHz).
    if (usingRtc()) { send({ type: 'session.update', session: { equipment } }); return; }
    const rate = audioCtx().sampleRate; // the server resamples both ways
    send({ type: 'session.update', session: {
      input_audio_format: 'pcm16', input_sample_rate: rate, output_audio_format: 'pcm16', output_sample_rate: rate,
      equipment,
    } });
  }

  // ---- server events ----

  function onMessage(data) {
    if (data instanceof ArrayBuffer) return onAudio(data);
    let ev;
    try { ev = JSON.parse(data); } catch (_) { return; }
    switch (ev.type) {
      case 'session.created': sessionUpdate(); break;
      case 'session.updated':
        fv.session = ev.session;
        if (ready) break;
        ready = true;
        updateMic(); // hands-free may still be on from before
        setState('connected', readyText());
        updateControls();
        $('connection').open = false; // the token box is noise once connected
        break;
      case 'input_audio_buffer.speech_started': interrupt(); setState('listening', 'Listening…'); break;
      case 'input_audio_buffer.speech_stopped': serverEnded = true; setState('thinking', 'Thinking…'); break;
      case 'conversation.item.input_audio_transcription.completed':
        fv.transcript = $('transcript').textContent = ev.transcript;
        if (!ev.transcript.trim()) setState('idle', "Didn't catch a question. Try again.", 'warn');
        break;
      case 'response.created': startResponse(ev.response_id); break;
      case 'response.output_text.delta':
        if (ev.response_id === currentId) $('answer').textContent = fv.answer += ev.delta;
        break;
      case 'response.output_audio.started':
        stopPlayback();
        playing = { id: ev.response_id, rate: ev.sample_rate, chunks: [], end: 0 };
        break;
      case 'response.citations': if (ev.response_id === currentId) showCitations(ev.citations); break;
      case 'response.done': onDone(ev); break;
      case 'output_audio_buffer.clear': {
        // The server cancelled this answer (barge-in): silence it now, say how much was heard.
        const heard = stopPlayback();
        if (usingRtc()) break; // the server stopped sending; its clock knows what played
        fv.lastTruncate = { item_id: ev.response_id, audio_end_ms: heard && heard.id === ev.response_id ? heard.ms : 0 };
        send({ type: 'conversation.item.truncate', ...fv.lastTruncate });
        clearTimeout(idleTimer);
        if (fv.state === 'answering') setState('idle', 'Stopped. ' + readyText());
        break;
      }
      case 'error': onError(ev.error || {}); break;
      case 'session.going_away':
        showStatus(`Server going away (${ev.reason}); reconnect in ${Math.ceil(ev.drain_ms / 1000)} s.`, 'warn');
        break;
      default: // pong, and events newer than this page
    }
  }

  function startResponse(id) {
    interrupt();
    clearTimeout(idleTimer); // the previous answer's "heard to the end" timer
    currentId = id;
    idleWhenQuiet = false;
    fv.answer = $('answer').textContent = '';
    showCitations([]);
    showTimings({});
    setState('answering', 'Answering…');
  }

  function onDone(ev) {
    fv.responsesDone++;
    fv.lastResponseStatus = ev.status;
    if (ev.response_id !== currentId) return; // a superseded answer finishing late
    if (ev.text) fv.answer = $('answer').textContent = ev.text;
    showTimings(ev.timings || {});
    if (ev.status === 'failed') { setState('idle'); return; } // its error is already shown
    // Audio arrives faster than real time: stay "answering" until it has been heard.
    clearTimeout(idleTimer);
    if (usingRtc()) { idleWhenQuiet = true; return; } // it arrives in real time: until it stops
    const left = playing && ctx ? Math.max(0, playing.end - ctx.currentTime) : 0;
    idleTimer = setTimeout(() => {
      if (fv.state !== 'answering') return;
      setState('idle', (ev.status === 'cancelled' ? 'Stopped. ' : '') + readyText());
    }, left * 1000);
  }

  function onError(err) {
    // With push-to-talk the server's VAD may end the question before the button is released;
    // the commit then finds nothing left, which is not a failure.
    if (err.code === 'empty_question' && performance.now() - lastCommit < EMPTY_GRACE_MS) {
      lastCommit = -Infinity;
      if (!serverEnded) setState('idle', "Didn't hear a question: hold the button while you speak.", 'warn');
      return;
    }
    showStatus(`${err.message || 'Error'} (${err.code || 'unknown'})`, 'error');
    if (fv.state === 'thinking' || fv.state === 'listening') setState('idle');
  }

  function showCitations(list) {
    fv.citations = list;
    // Several passages of one page read as one source.
    const texts = [...new Set(list.map((c) => `${c.title}, page ${c.page}`))];
    $('citations').replaceChildren(...texts.map((t) => Object.assign(document.createElement('li'), { textContent: t })));
  }

  function showTimings(t) {
    fv.timings = {};
    const spans = [];
    for (const [key, label] of Object.entries(TIMING_LABELS)) {
      if (typeof t[key] !== 'number') continue;
      fv.timings[key] = Math.round(t[key]);
      spans.push(Object.assign(document.createElement('span'), { textContent: `${label} ${fv.timings[key]} ms` }));
    }
    $('timings').replaceChildren(...spans);
  }

  // ---- answer audio ----

  function onAudio(buf) {
    fv.audioFramesReceived++;
    fv.audioBytesReceived += buf.byteLength;
    const pcm = new Int16Array(buf, 0, buf.byteLength >> 1);
    if (!playing || !ctx || !pcm.length) return; // e.g. audio of a cleared answer still in flight
    const ab = ctx.createBuffer(1, pcm.length, playing.rate);
    const out = ab.getChannelData(0);
    for (let i = 0; i < pcm.length; i++) out[i] = pcm[i] / 32768;
    const src = ctx.createBufferSource();
    src.buffer = ab;
    src.connect(ctx.destination);
    // Back-to-back while the queue holds audio; a fresh lead only after it ran dry.
    if (next < ctx.currentTime + 0.005) next = ctx.currentTime + JITTER;
    src.start(next);
    playing.chunks.push({ src, start: next, dur: ab.duration });
    playing.end = next += ab.duration;
  }

  // Stops all scheduled answer audio; returns how much of it had been heard.
  function stopPlayback() {
    const p = playing;
    playing = null;
    next = 0;
    if (!p || !ctx) return null;
    const now = ctx.currentTime - (ctx.outputLatency || 0);
    let heard = 0;
    for (const c of p.chunks) {
      heard += Math.min(Math.max(now - c.start, 0), c.dur);
      try { c.src.stop(); } catch (_) { /* already ended */ }
    }
    return { id: p.id, ms: Math.round(heard * 1000), unfinished: ctx.currentTime < p.end };
  }

  // The user starts a new question over an answer that is still playing.
  function interrupt() {
    if (usingRtc()) return; // the server cuts its audio at the next packet
    const heard = stopPlayback();
    if (!heard || !heard.unfinished) return;
    fv.lastTruncate = { item_id: heard.id, audio_end_ms: heard.ms };
    send({ type: 'conversation.item.truncate', ...fv.lastTruncate });
  }

  // ---- microphone ----

  // Opened on first use and kept: reopening on every press would clip the first word.
  function ensureMic() {
    if (usingRtc()) return micTrack ? Promise.resolve() : Promise.reject(new Error('not connected'));
    if (!micPromise) micPromise = openMic().catch((e) => { micPromise = null; throw e; });
    return micPromise;
  }

  async function openMic() {
    if (!window.isSecureContext || !navigator.mediaDevices || !window.AudioWorkletNode) {
      throw new Error('the microphone needs HTTPS (typed questions still work)');
    }
    const c = audioCtx();
    // Whisper misheard more often with the browser's noise suppression and gain control on
    // (tests/browser/talk.cjs); echo cancellation stays so hands-free doesn't hear its answer.
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: false, autoGainControl: false },
    });
    await c.audioWorklet.addModule('talk-worklet.js');
    // No outputs: the graph still pulls the node, and nothing reaches the speaker.
    const node = new AudioWorkletNode(c, 'pcm16-capture', {
      numberOfInputs: 1, numberOfOutputs: 0, channelCount: 1, channelCountMode: 'explicit',
    });
    node.port.onmessage = (e) => { if (ready && (ptt || tailTimer !== null || $('handsfree').checked)) ws.send(e.data); };
    c.createMediaStreamSource(stream).connect(node);
  }

  function micFailed(e) {
    ptt = $('handsfree').checked = false;
    updateControls();
    setState('idle', `Microphone unavailable: ${e.message || e.name}`, 'error');
  }

  function startTalking() {
    if (!ready || ptt) return;
    audioCtx();
    interrupt();
    // Over WebRTC the answer plays in the browser's own player: pressing to talk stops it.
    if (usingRtc() && fv.state === 'answering') send({ type: 'response.cancel' });
    clearTimeout(tailTimer);
    tailTimer = null;
    ptt = true;
    serverEnded = false;
    updateControls();
    updateMic();
    setState('listening', 'Listening… release to ask');
    ensureMic().catch(micFailed);
  }

  function stopTalking() {
    if (!ptt) return;
    ptt = false;
    updateControls();
    if (!serverEnded) setState('thinking', 'Thinking…');
    tailTimer = setTimeout(() => {
      tailTimer = null;
      updateMic();
      lastCommit = performance.now();
      send({ type: 'input_audio_buffer.commit' });
    }, PTT_TAIL_MS);
  }

  // ---- wiring ----

  const talk = $('talk');
  talk.addEventListener('pointerdown', (e) => {
    if (e.button !== 0) return;
    e.preventDefault();
    talk.setPointerCapture(e.pointerId); // releasing off the button still ends the question
    startTalking();
  });
  for (const type of ['pointerup', 'pointercancel', 'lostpointercapture']) talk.addEventListener(type, stopTalking);
  talk.addEventListener('contextmenu', (e) => e.preventDefault()); // long press on phones

  // Space talks, unless the user is typing or another control has focus.
  const elsewhere = (e) => e.code !== 'Space' || (e.target.closest && e.target.closest('input, summary, button:not(#talk)'));
  document.addEventListener('keydown', (e) => { if (!elsewhere(e)) { e.preventDefault(); if (!e.repeat) startTalking(); } });
  document.addEventListener('keyup', (e) => { if (!elsewhere(e)) { e.preventDefault(); stopTalking(); } });
  // Any gesture may be the first one that lets audio play.
  document.addEventListener('pointerdown', () => { if (ctx) audioCtx(); }, true);

  $('handsfree').addEventListener('change', (e) => {
    updateMic();
    const quiet = fv.state !== 'thinking' && fv.state !== 'answering';
    if (!e.target.checked) { if (quiet) setState(fv.state === 'listening' ? 'idle' : fv.state, readyText()); return; }
    audioCtx();
    ensureMic().then(() => { if (quiet) showStatus(readyText()); }, micFailed);
  });

  $('ask-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const text = $('question').value.trim();
    if (!text || !ready) return;
    audioCtx();
    interrupt();
    send({ type: 'conversation.item.create', item: { text } });
    fv.transcript = $('transcript').textContent = text;
    $('question').value = '';
    setState('thinking', 'Thinking…');
  });

  $('connect-form').addEventListener('submit', (e) => { e.preventDefault(); if (connected()) disconnect(); else connect(); });
  $('transport').addEventListener('change', () => localStorage.setItem('fieldvox.transport', $('transport').value));
  $('equipment').addEventListener('change', () => {
    localStorage.setItem('fieldvox.equipment', $('equipment').value.trim());
    if (ready) sessionUpdate();
  });

  // A token in the link (#token= or ?token=) connects at once; it is then taken out of the
  // address bar and kept for this tab only.
  const query = new URLSearchParams(location.search);
  const linked = new URLSearchParams(location.hash.slice(1)).get('token') || query.get('token');
  if (linked) {
    query.delete('token');
    history.replaceState(null, '', location.pathname + (query.toString() ? '?' + query : ''));
  }
  $('token').value = linked || sessionStorage.getItem('fieldvox.token') || '';
  $('equipment').value = localStorage.getItem('fieldvox.equipment') || '';
  // ?transport=webrtc (or the last choice) picks the transport.
  const transport = query.get('transport') || localStorage.getItem('fieldvox.transport');
  if (transport === 'webrtc' || transport === 'websocket') $('transport').value = transport;
  setState('closed');
  updateControls();
  if ($('token').value) connect();
})();
