// A person working in JupyterLab near the end of their session's walltime: open a notebook,
// edit its cell, and leave it unsaved, idle. Waits for the walltime guard's notice with the
// time left, then for its save shortly before the end; screenshots of both.
//
//   node walltime.js NOTEBOOK_URL TYPED_TEXT SHOT_PREFIX TIMEOUT_S
//
// Prints one JSON line: the notice's text and when it was seen (epoch seconds), whether the
// notebook's tab was dirty after typing, and the save notice's text and time.
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

// Dialogs JupyterLab shows on opening notebooks (the kernel choice, one per notebook without a
// running kernel, a restored workspace's included): accept each until none comes for 3 s.
async function acceptDialogs(lab) {
  const accept = lab.locator('.jp-Dialog .jp-mod-accept').first();
  for (let i = 0; i < 20; i += 1) {
    try {
      await accept.waitFor({ state: 'visible', timeout: 3000 });
    } catch (err) {
      return;
    }
    await accept.click();
    await accept.waitFor({ state: 'detached', timeout: 10000 }).catch(() => {});
  }
}

async function main(url, typed, shots, timeoutS) {
  const timeout = Number(timeoutS) * 1000;
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'shj-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium', headless: true, args: ARGS,
    viewport: { width: 1280, height: 800 },
  });
  const out = { tab: '', dirty: false, notice: '', noticeAt: 0, saved: '', savedAt: 0 };
  const lab = await context.newPage();
  try {
    await lab.goto(url);
    await lab.locator('#main').waitFor({ state: 'visible', timeout: 60000 });
    await lab.locator('#jupyterlab-splash').waitFor({ state: 'detached', timeout: 60000 });
    // The notebook's own panel: a user with history has other notebooks restored in tabs of
    // the main area. Its tab is made current, and its editor is the one the browser really
    // shows: hidden panels may keep their boxes (content-visibility, a scale of 0), so a
    // locator's "visible" does not tell them apart; what is on top at the editor's centre does.
    const name = decodeURIComponent(new URL(url).pathname.split('/').pop());
    const ours = lab.locator('#jp-main-dock-panel .lm-TabBar-tab', { hasText: name }).first();
    await ours.waitFor({ state: 'visible', timeout: 60000 });
    await acceptDialogs(lab);  // restored notebooks may each ask for a kernel first
    await ours.click();
    await acceptDialogs(lab);  // ours may ask too
    const shown = () => [...document.querySelectorAll('.jp-Notebook .jp-Cell .cm-content')]
      .find((e) => {
        const box = e.getBoundingClientRect();
        if (box.width < 1 || box.height < 1 || !e.checkVisibility({ contentVisibilityAuto: true,
          visibilityProperty: true, opacityProperty: true })) {
          return false;
        }
        const top = document.elementFromPoint(box.x + box.width / 2, box.y + box.height / 2);
        return !!top && e.contains(top);
      }) || null;
    const editor = (await lab.waitForFunction(shown, null, { timeout: 60000 })).asElement();
    await editor.click();
    await lab.keyboard.press('End');
    await lab.keyboard.type(typed);
    const tab = lab.locator('#jp-main-dock-panel .lm-TabBar-tab.jp-mod-current');
    out.tab = (await tab.innerText()).trim();
    await lab.waitForFunction(
      () => !!document.querySelector('.lm-TabBar-tab.jp-mod-current.jp-mod-dirty'),
      null, { timeout: 10000 });
    out.dirty = (await tab.getAttribute('class')).includes('jp-mod-dirty');
    // From here on the user does nothing.
    const notice = lab.locator('.Toastify__toast', { hasText: 'This session ends in' }).first();
    await notice.waitFor({ state: 'visible', timeout });
    out.noticeAt = Date.now() / 1000;
    out.notice = (await notice.innerText()).trim();
    await lab.screenshot({ path: `${shots}-notice.png` });
    const saved = lab.locator('.Toastify__toast', { hasText: 'Saved before the session ends' })
      .first();
    await saved.waitFor({ state: 'visible', timeout });
    out.savedAt = Date.now() / 1000;
    out.saved = (await saved.innerText()).trim();
    await lab.screenshot({ path: `${shots}-saved.png` });
  } catch (err) {
    await lab.screenshot({ path: `${shots}-failed.png` }).catch(() => {});
    throw err;
  } finally {
    process.stdout.write(JSON.stringify(out) + '\n');
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

main(...process.argv.slice(2)).catch((err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(1);
});
