// A person at JupyterHub: log in, let the hub start the server, land in JupyterLab at
// /user/NAME/lab, open a notebook and run a cell (its kernel talks over a WebSocket through
// the hub's proxy).
//
//   HUB_PASSWORD=... node hub.js HUB_URL USER SCREENSHOT_PNG   (the password not in argv)
//
// Prints one JSON line: the progress messages the spawn page showed, where the tab landed,
// whether JupyterLab's shell appeared, the cell's output, and the WebSockets opened (and their
// errors). Drives Debian's Chromium through playwright-core, like connect.js.
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

async function main(hubUrl, user, screenshot) {
  const password = process.env.HUB_PASSWORD || '';
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'shj-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ARGS,
    viewport: { width: 1280, height: 800 },
  });
  const out = {
    progress: [], landed: '', url: '', title: '', shell: false, output: '', sockets: [],
    socketErrors: [],
  };
  try {
    const page = await context.newPage();
    page.on('websocket', (ws) => {
      out.sockets.push(new URL(ws.url()).pathname);
      ws.on('socketerror', (err) => out.socketErrors.push(`${new URL(ws.url()).pathname}: ${err}`));
    });
    await page.goto(`${hubUrl}/hub/login`);
    await page.fill('#username_input', user);
    await page.fill('#password_input', password);
    await page.click('#login_submit');
    // The spawn page shows the spawner's progress events until it reloads into the server.
    const lab = new RegExp(`/user/${user}/lab`);
    const deadline = Date.now() + 180000;
    while (!lab.test(page.url()) && Date.now() < deadline) {
      if (page.url().includes('/spawn-pending/')) {
        const seen = await page.locator('#progress-log .progress-log-event').allTextContents()
          .catch(() => []);
        for (const text of seen) {
          if (!out.progress.includes(text)) out.progress.push(text);
        }
      }
      await page.waitForTimeout(100);
    }
    out.landed = page.url();
    try {
      await page.locator('#main').waitFor({ state: 'visible', timeout: 60000 });
      out.shell = true;
      await page.locator('.jp-LauncherCard[data-category="Notebook"]').first().click();
      const cell = page.locator('.jp-Notebook .jp-Cell .cm-content').first();
      await cell.waitFor({ state: 'visible', timeout: 60000 });
      // A cell run before the notebook's kernel is connected is dropped, not queued: wait
      // until the kernel says idle (the toolbar's indicator, or the status bar's text).
      await page.waitForFunction(() => {
        const ind = document.querySelector('.jp-Notebook-ExecutionIndicator');
        if (ind && ind.getAttribute('data-status') === 'idle') return true;
        return [...document.querySelectorAll('.jp-StatusBar-TextItem')]
          .some((e) => /\|\s*Idle$/.test(e.textContent.trim()));
      }, null, { timeout: 90000 });
      await cell.click();
      await page.keyboard.type('print(6 * 7)');
      await page.keyboard.press('Shift+Enter');
      const output = page.locator('.jp-OutputArea-output').first();
      await output.waitFor({ state: 'visible', timeout: 90000 });
      out.output = (await output.textContent()).trim();
    } finally {
      out.url = page.url();
      out.title = await page.title();
      await page.screenshot({ path: screenshot });
    }
    process.stdout.write(JSON.stringify(out) + '\n');
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

main(...process.argv.slice(2)).catch((err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(1);
});
