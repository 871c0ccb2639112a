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

// A user with history: JupyterLab restores their saved workspace (notebooks open, perhaps
// asking which kernel one of them should have) instead of showing a launcher. `act` answers
// such a dialog as a user would, and retries `fn` (short timeouts) until `ms` have passed.
async function act(page, what, fn, ms = 60000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const dialog = page.locator('.jp-Dialog .jp-mod-accept:visible');
    if (await dialog.count()) {
      await dialog.first().click();
      continue;
    }
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`${what}: ${err.message}`);
    }
  }
}

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
      await page.locator('#jupyterlab-splash').waitFor({ state: 'detached', timeout: 60000 });
      await act(page, 'open a launcher', async () => {
        await page.locator('.lm-MenuBar-itemLabel', { hasText: /^File$/ }).click({ timeout: 2000 });
        await page.locator('.lm-Menu-itemLabel:visible', { hasText: /^New Launcher$/ })
          .click({ timeout: 2000 });
      });
      await act(page, 'start a notebook', () => page
        .locator('.jp-LauncherCard[data-category="Notebook"]:visible').first()
        .click({ timeout: 2000 }));
      const panel = '.jp-NotebookPanel:visible';
      const cell = page.locator(`${panel} .jp-Cell .cm-content`).first();
      // A cell run before the notebook's kernel is connected is dropped, not queued (the
      // prompt stays "[ ]"): wait until the status bar says the kernel is idle, and run the
      // cell again, as a user would, while JupyterLab dropped it.
      await act(page, 'the new notebook\'s kernel to be idle', () => page
        .locator('.jp-StatusBar-TextItem', { hasText: /\|\s*Idle$/ }).first()
        .waitFor({ state: 'visible', timeout: 2000 }), 90000);
      await cell.click();
      await page.keyboard.type('print(6 * 7)');
      const output = page.locator(`${panel} .jp-OutputArea-output`).first();
      await act(page, 'the cell\'s output', async () => {
        await cell.click();
        await page.keyboard.press('Shift+Enter');
        await output.waitFor({ state: 'visible', timeout: 10000 });
      }, 90000);
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
