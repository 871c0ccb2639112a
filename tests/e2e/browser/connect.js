// A person at the Open OnDemand job card: open the card, click "Connect to JupyterLab", and
// wait in the tab it opens until JupyterLab's shell is up and has restored the user's
// workspace (the launcher for a new user; whatever they left open for a user with history).
//
//   node connect.js CARD_URL SCREENSHOT_PNG [PROFILE_DIR]
//
// PROFILE_DIR (optional, must not exist) keeps the browser profile for the caller to inspect
// (its History database); without it a temporary profile is removed at the end.
// Prints one JSON line: every request the browser made (method and URL), where the tab
// landed, whether JupyterLab's shell (#main) came up and finished starting (its splash gone),
// the titles of the main area's tabs, whether a login form was shown, and the WebSockets
// JupyterLab opened (and their errors). Drives Debian's Chromium through playwright-core
// (NODE_PATH=/opt/sh-jupyter/browser/node_modules, testbed/steps/70-browser.sh).
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');

const ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--disable-quic',
];

async function main(cardUrl, screenshot, keep) {
  const profile = keep || fs.mkdtempSync(path.join(os.tmpdir(), 'shj-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ARGS,
    viewport: { width: 1280, height: 800 },
  });
  const requested = [];
  context.on('request', (req) => requested.push(`${req.method()} ${req.url()}`));
  try {
    const card = await context.newPage();
    await card.goto(cardUrl);
    // The card's Connect: a form's button (a POST of the password) or, in older apps, a link.
    const button = card.getByRole('button', { name: 'Connect to JupyterLab' })
      .or(card.getByRole('link', { name: 'Connect to JupyterLab' }));
    const [lab] = await Promise.all([context.waitForEvent('page'), button.click()]);
    const sockets = [];
    const socketErrors = [];
    lab.on('websocket', (ws) => {
      sockets.push(new URL(ws.url()).pathname);
      ws.on('socketerror', (err) => socketErrors.push(`${new URL(ws.url()).pathname}: ${err}`));
    });
    await lab.waitForLoadState('domcontentloaded');
    const landed = lab.url();
    const out = {
      landed, url: '', title: '', shell: false, started: false, tabs: [], loginForm: 0,
      sockets, socketErrors, requested,
    };
    try {
      await lab.locator('#main').waitFor({ state: 'visible', timeout: 60000 });
      out.shell = true;
      await lab.locator('#jupyterlab-splash').waitFor({ state: 'detached', timeout: 60000 });
      const tab = lab.locator('#jp-main-dock-panel .lm-TabBar-tab .lm-TabBar-tabLabel');
      await tab.first().waitFor({ state: 'visible', timeout: 60000 });
      out.started = true;
      out.tabs = await tab.allTextContents();
    } finally {
      out.url = lab.url();
      out.title = await lab.title();
      out.loginForm = await lab.locator('input[type="password"], form[action*="login"]').count();
      await lab.screenshot({ path: screenshot });
    }
    process.stdout.write(JSON.stringify(out) + '\n');
  } finally {
    await context.close();
    if (!keep) fs.rmSync(profile, { recursive: true, force: true });
  }
}

main(process.argv[2], process.argv[3], process.argv[4]).catch((err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(1);
});
