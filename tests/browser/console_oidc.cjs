#!/usr/bin/env node
// Signs in to the console through the company's OpenID provider in headless Chromium:
// "Sign in with your company account", the provider's login and consent screens, back to
// /console with a code the page exchanges (PKCE) for an id_token, then the live view.
// Prints one JSON line with who the console says is signed in; screenshot to --screenshot.
//
//   node tests/browser/console_oidc.cjs --base http://host:port --user alice --screenshot out.png
'use strict';
const { launch } = require('./chromium.cjs');

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
for (const key of ['base', 'user', 'screenshot']) {
  if (!args[key]) { process.stderr.write(`missing --${key}\n`); process.exit(2); }
}

async function main() {
  const browser = await launch();
  const result = {};
  let step = 'opening the console';
  try {
    const page = await (await browser.newContext()).newPage();
    page.on('pageerror', (e) => process.stderr.write(`[page error] ${e.message}\n`));
    await page.goto(`${args.base}/console`, { timeout: 30000 });
    step = 'the sign-in button';
    await page.click('#oidc-sign-in', { timeout: 30000 });
    step = "the provider's login screen";
    await page.waitForSelector('input[name=login]', { timeout: 30000 });
    await page.fill('input[name=login]', args.user);
    await page.fill('input[name=password]', 'any');
    await page.click('button[type=submit]');
    step = "the provider's consent screen, then back to the console";
    for (let i = 0; i < 5 && !page.url().startsWith(`${args.base}/console`); i++) {
      await page.waitForLoadState('load');
      if (page.url().startsWith(`${args.base}/console`)) break;
      const button = await page.$('button[type=submit], button[autofocus]');
      if (button) await Promise.all([page.waitForNavigation({ timeout: 30000 }), button.click()]);
    }
    step = 'the live view after sign-in';
    await page.waitForFunction(() => window.fieldvoxConsole && window.fieldvoxConsole.liveEvents >= 2, null,
      { timeout: 30000, polling: 100 });
    Object.assign(result, await page.evaluate(() => ({
      role: window.fieldvoxConsole.role, tenant: window.fieldvoxConsole.tenant,
      who: document.getElementById('who').textContent, url: location.href,
      sessions: window.fieldvoxConsole.live.sessions.total,
    })));
    await page.screenshot({ path: args.screenshot, fullPage: true });
  } catch (e) {
    result.error = `${step}: ${e.message.split('\n')[0]}`;
    const page = browser.contexts()[0] && browser.contexts()[0].pages()[0];
    if (page) {
      result.url = page.url();
      result.status = await page.textContent('#status').catch(() => null);
    }
  }
  process.stdout.write(JSON.stringify(result) + '\n');
  await browser.close();
  return result.error ? 1 : 0;
}

main().then((code) => process.exit(code), (e) => {
  process.stdout.write(JSON.stringify({ error: e.message.split('\n')[0] }) + '\n');
  process.exit(1);
});
