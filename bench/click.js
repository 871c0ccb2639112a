// bench/click.py's browser: a person from "Connect" to a notebook cell's output, timed.
//
//   node click.js < JOB_JSON        (NODE_PATH=/opt/sh-jupyter/browser/node_modules)
//
// The job comes on stdin, never in argv (a lab URL carries the token):
//   {"mode": "card" | "lab", "url": ..., "code": "print(6 * 7)", "expect": "42",
//    "timeoutMs": 60000, "screenshot": "/path.png" (optional, taken on failure)}
// mode "card": open the job card at url (not timed), then the clock starts at the click on
// "Connect to JupyterLab" (a form POSTing the password, target _blank: a new tab).
// mode "lab": the clock starts at the navigation to url (the lab URL with its token).
// Then in the lab tab: JupyterLab's shell, its splash gone, the launcher's notebook tile
// clicked, the new notebook's cell editor, its kernel idle (the status bar says so), `code`
// typed and run with Shift+Enter, and an output area showing `expect`.
// Prints one JSON line: {"ok", "marks": {milestone: ms since the clock started}, "requests"
// (requests made after the clock started), "paths" (their methods and paths, no query),
// "error", "waiting" (the milestone it was waiting for when it failed)}. Nothing printed
// carries a URL.
// A fresh browser profile every time (a first visit, as for a new session), removed at the end.
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const { performance } = require('perf_hooks');
const { chromium } = require('playwright-core');

const ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--disable-quic',
];

function readStdin() {
  return new Promise((resolve, reject) => {
    const chunks = [];
    process.stdin.on('data', (c) => chunks.push(c));
    process.stdin.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    process.stdin.on('error', reject);
  });
}

async function run(job, context, out) {
  let t0 = null;
  const mark = (name) => {
    if (t0 !== null && !(name in out.marks)) out.marks[name] = performance.now() - t0;
  };
  const step = (name) => { out.waiting = name; };
  context.on('request', (req) => {
    if (t0 === null) return;
    out.requests += 1;
    // Paths only: the floor's first URL carries the token in its query.
    const where = new URL(req.url()).pathname;
    out.paths.push(`${req.method()} ${where}`);
    if (req.method() === 'POST' && where.endsWith('/login')) mark('login sent');
    if (req.resourceType() === 'document' && where.endsWith('/lab')) mark('lab page requested');
  });
  context.on('response', (resp) => {
    if (t0 === null) return;
    const req = resp.request();
    const where = new URL(resp.url()).pathname;
    if (req.method() === 'POST' && where.endsWith('/login')) mark('login answered');
    if (req.resourceType() === 'document' && where.endsWith('/lab')) mark('lab page answered');
  });
  const wait = { timeout: job.timeoutMs };
  let lab;
  if (job.mode === 'card') {
    const card = context.pages()[0] || await context.newPage();
    await card.goto(job.url);
    const button = card.getByRole('button', { name: 'Connect to JupyterLab' });
    await button.waitFor({ state: 'visible', ...wait });
    t0 = performance.now();
    [lab] = await Promise.all([context.waitForEvent('page', wait), button.click()]);
    mark('tab opened');
  } else {
    lab = context.pages()[0] || await context.newPage();
    t0 = performance.now();
    await lab.goto(job.url, { waitUntil: 'commit', ...wait });
  }
  out.page = lab;
  lab.on('websocket', (ws) => {
    if (new URL(ws.url()).pathname.includes('/api/kernels/')) mark('kernel socket opened');
  });
  step('lab page parsed');
  await lab.waitForLoadState('domcontentloaded', wait);
  mark('lab page parsed');
  step('lab shell visible');
  await lab.locator('#main').waitFor({ state: 'visible', ...wait });
  mark('lab shell visible');
  step('splash gone');
  await lab.locator('#jupyterlab-splash').waitFor({ state: 'detached', ...wait });
  mark('splash gone');
  const tile = lab.locator('.jp-LauncherCard[data-category="Notebook"]').first();
  step('launcher shown');
  await tile.waitFor({ state: 'visible', ...wait });
  mark('launcher shown');
  await tile.click(wait);
  const panel = lab.locator('.jp-NotebookPanel').last();
  const editor = panel.locator('.jp-Cell .cm-content').first();
  step('notebook open');
  await editor.waitFor({ state: 'visible', ...wait });
  mark('notebook open');
  step('kernel idle');
  // The status bar's "Python 3 (ipykernel) | Idle": only once the kernel's socket is connected
  // and the kernel idle (a cell run before that is dropped, not queued: its prompt stays empty).
  await lab.locator('#jp-main-statusbar .jp-StatusBar-TextItem[title^="Change kernel"]')
    .filter({ hasText: /\|\s*Idle$/ }).first().waitFor({ state: 'visible', ...wait });
  mark('kernel idle');
  step('cell run');
  await editor.click(wait);
  await lab.keyboard.type(job.code);
  await lab.keyboard.press('Shift+Enter');
  mark('cell run');
  step('cell output');
  await panel.locator('.jp-OutputArea-output').filter({ hasText: job.expect }).first()
    .waitFor({ state: 'visible', ...wait });
  mark('cell output');
  out.ok = true;
}

async function main() {
  const job = JSON.parse(await readStdin());
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'shj-click-'));
  const out = {
    ok: false, marks: {}, requests: 0, paths: [], error: '', waiting: '', page: null,
  };
  let context = null;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: '/usr/bin/chromium',
      headless: true,
      args: ARGS,
      viewport: { width: 1280, height: 800 },
    });
    await run(job, context, out);
  } catch (err) {
    // The message only: a navigation error's message names the URL (and its token).
    out.error = String(err && err.message ? err.message : err).split('\n')[0];
    if (job.screenshot && out.page) {
      await out.page.screenshot({ path: job.screenshot }).catch(() => {});
    }
  } finally {
    if (context) await context.close().catch(() => {});
    fs.rmSync(profile, { recursive: true, force: true });
  }
  const { page, ...report } = out;
  process.stdout.write(JSON.stringify(report) + '\n');
}

main().catch((err) => {
  process.stderr.write(`${String(err && err.message ? err.message : err).split('\n')[0]}\n`);
  process.exit(1);
});
