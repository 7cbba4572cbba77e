// Headless Debian Chromium for the browser tests, launched by Playwright with the flags
// every test needs; each test adds its own (a fake microphone file, WebRTC settings).
'use strict';
const { chromium } = require('playwright-core');

const FLAGS = [
  '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync',
  // A microphone without a prompt: Chromium's fake device (or --use-file-for-fake-audio-capture).
  '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
];

/** Chromium at $CHROMIUM (default /usr/bin/chromium) with FLAGS and `extra`. */
exports.launch = (extra = []) => chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [...FLAGS, ...extra],
});
