// fieldvox console: the ops view (GET /v1/ops/live, one aggregate a second) and the admin
// view (manuals API, job events, turns API). No framework, no chart library: charts are SVG.
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const HISTORY = 300; // points kept per chart: five minutes at one a second

  // What the browser tests (and a curious developer) read.
  const cv = window.fieldvoxConsole = {
    view: 'login', role: null, tenant: null, live: null, liveEvents: 0,
    upload: { percent: 0, state: '' }, manuals: [], turns: [],
  };
  let token = '';
  let liveAbort = null;
  const trend = { p50: [], p95: [], p99: [], sessions: [] };
  // The stages charted by their p95, in the order a turn passes them.
  const STAGES = ['stt', 'retrieval', 'llm_first_token', 'tts_first_audio'];
  const stageTrend = Object.fromEntries(STAGES.map((s) => [s, []]));
  const COLOURS = ['#0b63ce', '#16794a', '#c27c0e', '#b42318'];

  function showStatus(text, kind) { $('status').textContent = text || ''; $('status').dataset.kind = kind || ''; }
  const headers = (extra) => Object.assign({ Authorization: 'Bearer ' + token }, extra || {});

  // The token's claims, to choose views; the server checks every request anyway.
  function claims(t) {
    try {
      const part = t.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      return JSON.parse(atob(part + '='.repeat((4 - part.length % 4) % 4)));
    } catch (_) { return null; }
  }

  async function api(path, options) {
    const res = await fetch(path, Object.assign({}, options, { headers: headers((options || {}).headers) }));
    if (!res.ok) {
      const body = await res.json().catch(() => ({}));
      throw new Error(`${body.message || 'HTTP ' + res.status}${body.error ? ' (' + body.error + ')' : ''}`);
    }
    return res.status === 204 ? null : res.json();
  }

  // Server-sent events over fetch (EventSource cannot send the Authorization header).
  async function events(path, onEvent, signal) {
    const res = await fetch(path, { headers: headers({ Accept: 'text/event-stream' }), signal });
    if (!res.ok) {
      const body = await res.json().catch(() => ({}));
      throw new Error(`${body.message || 'HTTP ' + res.status}${body.error ? ' (' + body.error + ')' : ''}`);
    }
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let name = 'message', data = '';
        for (const line of block.split('\n')) {
          if (line.startsWith('event:')) name = line.slice(6).trim();
          else if (line.startsWith('data:')) data += line.slice(5).trim();
        }
        if (data) onEvent(name, JSON.parse(data));
      }
    }
  }

  // ---- sign in, views ----

  function signIn(t) {
    const c = claims(t);
    if (!c || !['ops', 'admin'].includes(c.role)) {
      showStatus(c ? `A ${c.role} token cannot use the console: use an ops or admin token.` : 'That is not a token.', 'error');
      return;
    }
    token = t;
    sessionStorage.setItem('fieldvox.console.token', t);
    cv.role = c.role;
    cv.tenant = c.tenant;
    $('who').textContent = `${c.sub} · ${c.role}${c.role === 'admin' ? ' · ' + c.tenant : ''}`;
    $('tab-admin').hidden = c.role !== 'admin';
    $('tabs').hidden = false;
    show('ops');
    startLive();
  }

  function signOut() {
    token = '';
    sessionStorage.removeItem('fieldvox.console.token');
    if (liveAbort) liveAbort.abort();
    $('tabs').hidden = true;
    show('login');
    showStatus('Signed out.');
  }

  function show(view) {
    cv.view = document.body.dataset.view = view;
    for (const id of ['login', 'ops', 'admin']) $(id).hidden = id !== view;
    for (const b of document.querySelectorAll('nav button[data-view]')) b.setAttribute('aria-current', String(b.dataset.view === view));
    if (view === 'admin') { loadManuals(); loadTurns(); }
  }

  // ---- ops: the live aggregate ----

  function startLive() {
    if (liveAbort) liveAbort.abort();
    const abort = liveAbort = new AbortController();
    showStatus('Connecting to the live view…');
    events('/v1/ops/live', (name, data) => { if (name === 'live') onLive(data); }, abort.signal)
      .then(() => { if (!abort.signal.aborted) retryLive('The live view ended; reconnecting…'); })
      .catch((e) => { if (!abort.signal.aborted) retryLive(`Live view: ${e.message}`); });
  }

  function retryLive(text) {
    showStatus(text, 'error');
    setTimeout(() => { if (token) startLive(); }, 2000);
  }

  function onLive(v) {
    cv.live = v;
    cv.liveEvents++;
    showStatus(`Live · updated ${new Date().toLocaleTimeString()}`);
    $('sessions-total').textContent = v.sessions.total;
    $('sessions-max').textContent = `of ${v.sessions.max}${v.sessions.draining ? ' · draining' : ''}`;
    $('turns-in-flight').textContent = v.turns_in_flight;
    const v2v = v.latency_ms.voice_to_voice || {};
    $('v2v-p95').textContent = v2v.count ? Math.round(v2v.p95) : '–';
    $('backends').textContent = Object.entries(v.backends_up).map(([b, up]) => `${b} ${up ? 'up' : 'DOWN'}`).join(' · ') || 'embedded';
    rows('by-transport', Object.entries(v.sessions.by_transport));
    rows('by-tenant', Object.entries(v.sessions.by_tenant));
    rows('stages', Object.entries(v.latency_ms).filter(([, l]) => l.count > 0)
      .map(([s, l]) => [s, `${Math.round(l.p50)} / ${Math.round(l.p95)} / ${Math.round(l.p99)}`]), ['stage', 'p50 / p95 / p99']);
    rows('errors', Object.entries(v.errors));
    rows('rate-limited', Object.entries(v.rate_limited));
    rows('cache', Object.entries(v.cache).map(([layer, [hits, misses]]) =>
      [layer, hits + misses ? `${Math.round(100 * hits / (hits + misses))} % of ${hits + misses}` : '–']));
    rows('pools', Object.entries(v.pool_queued));
    for (const q of ['p50', 'p95', 'p99']) push(trend[q], v2v.count ? v2v[q] : null);
    push(trend.sessions, v.sessions.total);
    for (const s of STAGES) {
      const l = v.latency_ms[s] || {};
      push(stageTrend[s], l.count ? l.p95 : null);
    }
    chart($('chart-stages'), STAGES.map((s) => stageTrend[s]), COLOURS);
    chart($('chart-v2v'), [trend.p50, trend.p95, trend.p99], ['#16794a', '#c27c0e', '#b42318']);
    chart($('chart-sessions'), [trend.sessions], ['#0b63ce']);
  }

  function push(list, value) { list.push(value); if (list.length > HISTORY) list.shift(); }

  function rows(id, entries, head) {
    const table = $(id);
    const tr = (cells, tag) => {
      const row = document.createElement('tr');
      cells.forEach((c, i) => {
        const cell = document.createElement(tag);
        cell.textContent = c;
        if (i > 0 && tag === 'td') cell.className = 'num';
        row.append(cell);
      });
      return row;
    };
    const body = entries.length ? entries.map((e) => tr(e, 'td')) : [tr(['none', ''], 'td')];
    table.replaceChildren(...(head ? [tr(head, 'th')] : []), ...body);
  }

  // Lines over the last HISTORY points, scaled to the largest value shown.
  function chart(svg, series, colours) {
    const [w, h] = [600, svg.viewBox.baseVal.height];
    const max = Math.max(1, ...series.flat().filter((x) => x !== null));
    const ns = 'http://www.w3.org/2000/svg';
    const nodes = series.map((points, i) => {
      const line = document.createElementNS(ns, 'polyline');
      // The newest point at the right edge, one second per step to the left.
      const x = (j) => w - ((points.length - 1 - j) * w) / (HISTORY - 1);
      const xy = points.map((p, j) => (p === null ? null : `${x(j)},${h - 4 - ((h - 16) * p) / max}`));
      line.setAttribute('points', xy.filter(Boolean).join(' '));
      line.setAttribute('fill', 'none');
      line.setAttribute('stroke', colours[i]);
      line.setAttribute('stroke-width', '2');
      return line;
    });
    const label = document.createElementNS(ns, 'text');
    label.setAttribute('x', '4');
    label.setAttribute('y', '11');
    label.textContent = `max ${Math.round(max)}`;
    svg.replaceChildren(label, ...nodes);
  }

  // ---- admin: manuals, uploads, pages, turns ----

  async function loadManuals() {
    try {
      const page = await api('/v1/manuals?limit=200');
      cv.manuals = page.manuals;
      const body = $('manuals').tBodies[0];
      body.replaceChildren(...page.manuals.map((m) => {
        const row = document.createElement('tr');
        for (const text of [m.title, m.equipment, `v${m.version}`, m.pages, m.uploaded_by]) {
          const cell = document.createElement('td');
          cell.textContent = text;
          row.append(cell);
        }
        const actions = document.createElement('td');
        const read = Object.assign(document.createElement('button'), { type: 'button', textContent: 'Pages' });
        read.onclick = () => openPage(m, 1);
        const del = Object.assign(document.createElement('button'), { type: 'button', textContent: 'Delete' });
        del.onclick = () => deleteManual(m);
        actions.append(read, ' ', del);
        row.append(actions);
        row.dataset.manualId = m.id;
        return row;
      }));
    } catch (e) { showStatus(`Manuals: ${e.message}`, 'error'); }
  }

  async function deleteManual(m) {
    if (!confirm(`Delete ${m.title} v${m.version}? Answers stop citing it at once.`)) return;
    try { await api(`/v1/manuals/${m.id}`, { method: 'DELETE' }); showStatus(`Deleted ${m.title}.`); } catch (e) { showStatus(e.message, 'error'); }
    $('page-view').hidden = true;
    loadManuals();
  }

  async function openPage(m, n) {
    try {
      const p = await api(`/v1/manuals/${m.id}/pages/${n}`);
      $('page-view').hidden = false;
      $('page-title').textContent = `${m.title} v${m.version}`;
      $('page-no').textContent = ` page ${n} of ${m.pages} `;
      $('page-text').textContent = p.blank ? '(no text on this page: a scan without a text layer)' : p.text;
      $('page-prev').onclick = () => n > 1 && openPage(m, n - 1);
      $('page-next').onclick = () => n < m.pages && openPage(m, n + 1);
    } catch (e) { showStatus(`Page: ${e.message}`, 'error'); }
  }

  async function loadTurns() {
    try {
      const page = await api('/v1/turns?limit=50');
      cv.turns = page.turns;
      $('turns').tBodies[0].replaceChildren(...page.turns.map((t) => {
        const row = document.createElement('tr');
        const sources = [...new Set((t.citations || []).map((c) => `${c.title} p.${c.page}`))].join('; ');
        const v2v = t.timings && t.timings.voice_to_voice_ms;
        for (const text of [new Date(t.at * 1000).toLocaleString(), t.user, t.transcript, t.answer, sources,
          typeof v2v === 'number' ? `${Math.round(v2v)} ms` : t.status]) {
          const cell = document.createElement('td');
          cell.textContent = text;
          row.append(cell);
        }
        return row;
      }));
    } catch (e) { showStatus(`Turns: ${e.message}`, 'error'); }
  }

  function setProgress(percent, state) {
    cv.upload = { percent, state };
    $('upload-progress').value = percent;
    $('upload-state').textContent = state;
  }

  // The file goes up with its byte progress, then the ingest job's events take over.
  function upload(file, equipment, title) {
    const form = new FormData();
    form.append('equipment', equipment);
    if (title) form.append('title', title);
    form.append('file', file);
    const xhr = new XMLHttpRequest();
    xhr.open('POST', '/v1/manuals');
    xhr.setRequestHeader('Authorization', 'Bearer ' + token);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) setProgress(0, `uploading ${Math.round((100 * e.loaded) / e.total)} %`); };
    xhr.onerror = () => setProgress(0, 'upload failed: the server could not be reached');
    xhr.onload = () => {
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
      if (xhr.status === 200) { setProgress(100, 'already uploaded: the same file is live'); loadManuals(); return; }
      if (xhr.status !== 202) { setProgress(0, `refused: ${body.message || xhr.status} (${body.error || ''})`); return; }
      setProgress(0, 'ingesting…');
      events(`/v1/jobs/${body.job_id}/events`, (name, job) => {
        const pct = job.chunks_total ? Math.round((100 * job.chunks_done) / job.chunks_total) : 0;
        if (name === 'done') { setProgress(100, `done: ${job.pages} pages`); loadManuals(); }
        else if (name === 'failed') setProgress(pct, `failed: ${job.message || job.error}`);
        else setProgress(pct, `ingesting ${pct} % (${job.chunks_done} of ${job.chunks_total} passages)`);
      }).catch((e) => setProgress(0, `progress lost: ${e.message}`));
    };
    setProgress(0, 'uploading…');
    xhr.send(form);
  }

  // ---- sign-in through the company's OpenID provider (authorization code + PKCE) ----

  const OIDC_PENDING = 'fieldvox.console.oidc';
  const b64url = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes)))
    .replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  const randomText = (n) => b64url(crypto.getRandomValues(new Uint8Array(n)));
  const redirectUri = () => location.origin + '/console';

  async function oidcMetadata(oidc) {
    const res = await fetch(`${oidc.issuer}/.well-known/openid-configuration`);
    if (!res.ok) throw new Error(`the identity provider's discovery answered HTTP ${res.status}`);
    return res.json();
  }

  async function oidcStart(oidc) {
    try {
      const meta = await oidcMetadata(oidc);
      const verifier = randomText(32);
      const challenge = b64url(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier)));
      const state = randomText(16);
      sessionStorage.setItem(OIDC_PENDING, JSON.stringify({ verifier, state }));
      const query = new URLSearchParams({
        response_type: 'code', client_id: oidc.client_id, redirect_uri: redirectUri(), scope: oidc.scope,
        state, code_challenge: challenge, code_challenge_method: 'S256',
      });
      location.assign(`${meta.authorization_endpoint}?${query}`);
    } catch (e) { showStatus(`Sign-in: ${e.message}`, 'error'); }
  }

  // Back from the provider with ?code=&state=: the code becomes an id_token, the token.
  async function oidcFinish(oidc, params) {
    const pending = JSON.parse(sessionStorage.getItem(OIDC_PENDING) || 'null');
    sessionStorage.removeItem(OIDC_PENDING);
    window.history.replaceState(null, '', '/console');
    if (params.get('error')) throw new Error(params.get('error_description') || params.get('error'));
    if (!pending || pending.state !== params.get('state')) throw new Error('the sign-in answer does not match this browser\'s request');
    const meta = await oidcMetadata(oidc);
    const res = await fetch(meta.token_endpoint, {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: 'authorization_code', code: params.get('code'), redirect_uri: redirectUri(),
        client_id: oidc.client_id, code_verifier: pending.verifier,
      }),
    });
    const body = await res.json().catch(() => ({}));
    if (!res.ok || !body.id_token) throw new Error(body.error_description || body.error || `HTTP ${res.status}`);
    signIn(body.id_token);
  }

  async function offerOidc() {
    const config = await fetch('/console/config').then((r) => r.json()).catch(() => ({}));
    cv.oidc = Boolean(config.oidc);
    if (!config.oidc) return false;
    $('oidc').hidden = false;
    $('oidc-sign-in').onclick = () => oidcStart(config.oidc);
    const params = new URLSearchParams(location.search);
    if (!params.has('code') && !params.has('error')) return false;
    await oidcFinish(config.oidc, params).catch((e) => showStatus(`Sign-in: ${e.message}`, 'error'));
    return true;
  }

  // ---- wiring ----

  $('login-form').addEventListener('submit', (e) => { e.preventDefault(); signIn($('token').value.trim()); });
  $('sign-out').addEventListener('click', signOut);
  for (const b of document.querySelectorAll('nav button[data-view]')) b.addEventListener('click', () => show(b.dataset.view));
  $('upload-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const file = $('upload-file').files[0];
    if (file) upload(file, $('upload-equipment').value.trim(), $('upload-title').value.trim());
  });
  offerOidc().then((handled) => {
    const saved = sessionStorage.getItem('fieldvox.console.token');
    if (!handled && saved) signIn(saved);
  });
})();
