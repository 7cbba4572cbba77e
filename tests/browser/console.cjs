#!/usr/bin/env node
// Drives the console at /console in headless Chromium and prints one JSON line:
//  - ops: signs in with an ops token, reads the live session gauge, opens the talk page as
//    a technician in a second page and waits for the gauge to rise, closes it and waits for
//    it to fall;
//  - admin: signs in with an admin token, uploads a PDF and waits for the progress bar to
//    reach 100 % and the manual to be listed.
// A screenshot of each view is written to --shots DIR (ops.png, admin.png).
//
//   node tests/browser/console.cjs --base http://host:port --ops-token T --admin-token T \
//        --tech-token T --pdf manual.pdf --equipment BX-9 --title "BX-9 Service Manual" --shots DIR
//
// Needs playwright-core on NODE_PATH and Chromium at $CHROMIUM (default /usr/bin/chromium).
// Exit 0 when every step passed, 1 otherwise (the JSON then has "error").
'use strict';
const path = require('path');
const { launch } = require('./chromium.cjs');

const NAMES = {
  '--base': 'base', '--ops-token': 'opsToken', '--admin-token': 'adminToken', '--tech-token': 'techToken',
  '--pdf': 'pdf', '--equipment': 'equipment', '--title': 'title', '--shots': 'shots', '--timeout-ms': 'timeoutMs',
};

function parseArgs(argv) {
  const args = { timeoutMs: 120000 };
  for (let i = 0; i < argv.length; i += 2) {
    const key = NAMES[argv[i]];
    if (!key || argv[i + 1] === undefined) usage(`unknown or incomplete argument ${argv[i]}`);
    args[key] = key === 'timeoutMs' ? Number(argv[i + 1]) : argv[i + 1];
  }
  for (const key of Object.values(NAMES)) if (args[key] === undefined) usage(`missing ${key}`);
  return args;
}

function usage(why) {
  process.stderr.write(`${why}\nusage: console.cjs ${Object.keys(NAMES).map((n) => n + ' V').join(' ')}\n`);
  process.exit(2);
}

const log = (msg) => process.stderr.write(`[console.cjs] ${msg}\n`);

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const deadline = Date.now() + args.timeoutMs;
  const left = () => Math.max(1, deadline - Date.now());
  const browser = await launch();
  const result = { ops: {}, admin: {} };
  let step = 'opening the console';
  try {
    const open = async () => {
      const context = await browser.newContext({ viewport: { width: 1100, height: 1000 } });
      const page = await context.newPage();
      page.on('pageerror', (e) => process.stderr.write(`[page error] ${e.message}\n`));
      await page.goto(`${args.base}/console`, { timeout: left() });
      return page;
    };
    const signIn = async (page, token) => {
      await page.fill('#token', token);
      await page.click('#sign-in');
      await page.waitForFunction(() => window.fieldvoxConsole.liveEvents >= 2, null, { timeout: left(), polling: 100 });
    };
    const sessions = (page) => page.evaluate(() => window.fieldvoxConsole.live.sessions.total);

    // Ops: the gauge follows a technician who connects and leaves.
    step = 'the ops sign-in';
    const ops = await open();
    await signIn(ops, args.opsToken);
    result.ops.before = await sessions(ops);
    step = 'a technician connecting';
    const talk = await (await browser.newContext()).newPage();
    await talk.goto(`${args.base}/#token=${args.techToken}`, { timeout: left() });
    await talk.waitForFunction(() => window.fieldvox && window.fieldvox.state === 'connected', null, { timeout: left() });
    step = 'the session gauge to rise';
    await ops.waitForFunction((n) => window.fieldvoxConsole.live.sessions.total > n, result.ops.before,
      { timeout: left(), polling: 100 });
    result.ops.risen = await sessions(ops);
    result.ops.shownRisen = await ops.textContent('#sessions-total');
    await ops.screenshot({ path: path.join(args.shots, 'ops.png'), fullPage: true });
    step = 'the session gauge to fall';
    await talk.close();
    await ops.waitForFunction((n) => window.fieldvoxConsole.live.sessions.total <= n, result.ops.before,
      { timeout: left(), polling: 100 });
    result.ops.fell = await sessions(ops);
    result.ops.byTransport = await ops.evaluate(() => window.fieldvoxConsole.live.sessions.by_transport);
    log(`ops gauge ${result.ops.before} → ${result.ops.risen} → ${result.ops.fell}`);

    // Admin: an upload followed to 100 %, and the manual listed.
    step = 'the admin sign-in';
    const admin = await open();
    await signIn(admin, args.adminToken);
    await admin.click('#tab-admin');
    step = 'the upload';
    await admin.setInputFiles('#upload-file', args.pdf);
    await admin.fill('#upload-equipment', args.equipment);
    await admin.fill('#upload-title', args.title);
    // Every value the bar shows on the way, sampled in the page.
    await admin.evaluate(() => {
      window.progressSeen = [];
      new MutationObserver(() => window.progressSeen.push(document.getElementById('upload-progress').value))
        .observe(document.getElementById('upload-state'), { childList: true, characterData: true, subtree: true });
    });
    await admin.click('#upload');
    step = 'the progress bar to reach 100 %';
    await admin.waitForFunction(() => window.fieldvoxConsole.upload.state.startsWith('done'), null,
      { timeout: left(), polling: 100 });
    step = 'the manual to be listed';
    await admin.waitForFunction((t) => window.fieldvoxConsole.manuals.some((m) => m.title === t), args.title,
      { timeout: left(), polling: 100 });
    result.admin = await admin.evaluate(() => ({
      percent: document.getElementById('upload-progress').value,
      state: document.getElementById('upload-state').textContent,
      progressSeen: window.progressSeen,
      listed: [...document.querySelectorAll('#manuals tbody tr')].map((r) => r.cells[0].textContent),
    }));
    await admin.screenshot({ path: path.join(args.shots, 'admin.png'), fullPage: true });
    log(`upload ${result.admin.state}`);
  } catch (e) {
    result.error = e.name === 'TimeoutError' || Date.now() >= deadline
      ? `timed out after ${args.timeoutMs} ms waiting for ${step}` : `${step}: ${e.message.split('\n')[0]}`;
  }
  process.stdout.write(JSON.stringify(result) + '\n');
  await browser.close();
  return result.error ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    process.stdout.write(JSON.stringify({ error: e.message.split('\n')[0] }) + '\n');
    process.exit(1);
  },
);
