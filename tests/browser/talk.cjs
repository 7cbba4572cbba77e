#!/usr/bin/env node
// Drives the talk page in headless Chromium: asks one question (a WAV played as the fake
// microphone, or typed) and prints one JSON line with what the page showed.
//
//   node tests/browser/talk.cjs --url 'http://host/#token=…' --screenshot out.png \
//        (--wav question.wav | --ask "typed question") [--transport webrtc] [--timeout-ms 90000]
//
// Needs playwright-core on NODE_PATH and Chromium at $CHROMIUM (default /usr/bin/chromium).
// Exit 0 when a completed answer with audio arrived, 1 otherwise (JSON then has "error").
'use strict';
const { launch } = require('./chromium.cjs');

function parseArgs(argv) {
  const args = { timeoutMs: 90000, transport: 'websocket' };
  const names = {
    '--url': 'url', '--screenshot': 'screenshot', '--wav': 'wav', '--ask': 'ask', '--timeout-ms': 'timeoutMs',
    '--transport': 'transport',
  };
  for (let i = 0; i < argv.length; i += 2) {
    const key = names[argv[i]];
    if (!key || argv[i + 1] === undefined) usage(`unknown or incomplete argument ${argv[i]}`);
    args[key] = key === 'timeoutMs' ? Number(argv[i + 1]) : argv[i + 1];
  }
  if (!args.url || !args.screenshot || !args.wav === !args.ask || !(args.timeoutMs > 0)) usage('missing arguments');
  if (!['websocket', 'webrtc'].includes(args.transport)) usage(`unknown transport ${args.transport}`);
  return args;
}

function usage(why) {
  process.stderr.write(`${why}\nusage: talk.cjs --url URL --screenshot PNG (--wav WAV | --ask TEXT) [--transport websocket|webrtc] [--timeout-ms N]\n`);
  process.exit(2);
}

const log = (msg) => process.stderr.write(`[talk.cjs] ${msg}\n`);

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const deadline = Date.now() + args.timeoutMs;
  const left = () => Math.max(1, deadline - Date.now());
  const browser = await launch([
    '--autoplay-policy=no-user-gesture-required',
    // Host candidates as addresses, not mDNS names this machine cannot resolve.
    '--disable-features=WebRtcHideLocalIpsWithMdns', '--allow-loopback-in-peer-connection',
    ...(args.wav ? ['--use-file-for-fake-audio-capture=' + args.wav] : []),
  ]);
  let page;
  let error = null;
  let step = 'opening the page';
  try {
    const context = await browser.newContext({ viewport: { width: 420, height: 860 } });
    page = await context.newPage();
    page.on('console', (m) => process.stderr.write(`[page ${m.type()}] ${m.text()}\n`));
    page.on('pageerror', (e) => process.stderr.write(`[page error] ${e.message}\n`));
    const waitFor = (fn, arg) => page.waitForFunction(fn, arg, { timeout: left(), polling: 50 });

    // The transport rides the query (?transport=webrtc), ahead of a #token fragment.
    const url = new URL(args.url);
    url.searchParams.set('transport', args.transport);
    await page.goto(url.href, { timeout: left() });
    step = 'connecting';
    await waitFor(() => window.fieldvox && window.fieldvox.state !== 'connecting');
    // The page connects by itself when the URL carries the token; otherwise press Connect.
    if (await page.evaluate(() => window.fieldvox.state === 'closed')) await page.click('#connect');
    await waitFor(() => window.fieldvox.state === 'connected');
    log('connected');
    step = args.wav ? 'the server to hear the question' : 'the question to be sent';

    if (args.wav) {
      await page.check('#handsfree');
      // The fake microphone loops the WAV. Once the server has heard the question, stop
      // sending, or the next loop would barge in and cancel the answer.
      await waitFor(() => ['thinking', 'answering', 'idle'].includes(window.fieldvox.state));
      await page.uncheck('#handsfree');
      log(`question heard (${await page.evaluate(() => window.fieldvox.state)}); hands-free off`);
    } else {
      await page.fill('#question', args.ask);
      await page.click('#ask');
    }
    step = 'a completed answer with audio';
    await waitFor(() => {
      const f = window.fieldvox;
      return f.responsesDone >= 1 && f.lastResponseStatus === 'completed' && f.audioFramesReceived > 0;
    });
    log('answer done');
    // Let the spoken answer finish so the screenshot shows the settled page.
    await page
      .waitForFunction(() => window.fieldvox.state === 'idle', null, { timeout: Math.min(left(), 30000) })
      .catch(() => log('answer audio still playing at screenshot time'));
  } catch (e) {
    error = e.name === 'TimeoutError' || Date.now() >= deadline ? `timed out after ${args.timeoutMs} ms waiting for ${step}` : e.message.split('\n')[0];
  }

  let result = {};
  if (page) {
    result = await page
      .evaluate(() => {
        const f = window.fieldvox || {};
        return {
          transcript: f.transcript, answer: f.answer,
          citations: (f.citations || []).map((c) => ({ title: c.title, page: c.page })),
          timings: f.timings, audioFramesReceived: f.audioFramesReceived, audioBytesReceived: f.audioBytesReceived,
          audioMsReceived: f.audioMsReceived, transport: f.transport,
          state: f.state, responseStatus: f.lastResponseStatus,
          status: document.getElementById('status') && document.getElementById('status').textContent,
          // What a person sees, not only the page's state.
          shown: Object.fromEntries(['transcript', 'answer', 'citations', 'timings', 'received'].map(
            (id) => [id, (document.getElementById(id) || {}).innerText || ''])),
        };
      })
      .catch((e) => ({ evaluateError: e.message }));
    await page.screenshot({ path: args.screenshot, fullPage: true }).catch((e) => log(`screenshot failed: ${e.message}`));
  }
  if (error) result.error = error;
  process.stdout.write(JSON.stringify(result) + '\n');
  await browser.close();
  return error ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    process.stdout.write(JSON.stringify({ error: e.message.split('\n')[0] }) + '\n');
    process.exit(1);
  },
);
