// sh-jupyter's walltime guard. The Slurm job running this JupyterLab ends at a fixed time
// (its walltime); this extension warns before it and saves every open document with unsaved
// changes shortly before it, so the end of the job loses no edit made in this browser.
//
// The supervisor gives the job's end (epoch seconds) and the site's settings through
// JupyterLab's page config (a labconfig/page_config.json it mounts read-only): strings
// shJupyterJobEnd, shJupyterWalltimeWarnings ("600,120") and shJupyterWalltimeSave ("60").
// Nothing here reaches the network beyond this server; the browser's clock is corrected by the
// server's Date header, so a browser whose clock is off still counts the job's own time.
import { PageConfig, URLExt } from '@jupyterlab/coreutils';
import { Notification } from '@jupyterlab/apputils';
import { IDocumentManager } from '@jupyterlab/docmanager';

const TICK_MS = 5000;

function words(seconds) {
  const s = Math.max(0, Math.round(seconds));
  const m = Math.floor(s / 60);
  const rest = s % 60;
  if (m === 0) {
    return `${rest} s`;
  }
  return rest ? `${m} min ${rest} s` : `${m} min`;
}

async function serverOffset() {
  // Server time minus browser time (ms), from the Date header of an unauthenticated GET.
  try {
    const t0 = Date.now();
    const reply = await fetch(URLExt.join(PageConfig.getBaseUrl(), 'api'), { cache: 'no-store' });
    const date = Date.parse(reply.headers.get('Date') || '');
    return Number.isNaN(date) ? 0 : date + 500 - (t0 + Date.now()) / 2;
  } catch (err) {
    return 0;
  }
}

async function saveDirty(app, docManager) {
  // Every document open in the main area whose model has unsaved changes, saved once each.
  const contexts = new Set();
  for (const widget of app.shell.widgets('main')) {
    const context = docManager.contextForWidget(widget);
    if (context && context.model && context.model.dirty && !context.model.readOnly) {
      contexts.add(context);
    }
  }
  const saved = [];
  for (const context of contexts) {
    try {
      await context.save();
      saved.push(context.path);
    } catch (err) {
      console.error(`sh-jupyter walltime guard: could not save ${context.path}`, err);
    }
  }
  return saved;
}

const plugin = {
  id: '@sh-jupyter/walltime-guard:plugin',
  description: 'Warns before the Slurm job ends and saves open documents just before it.',
  autoStart: true,
  requires: [IDocumentManager],
  activate: (app, docManager) => {
    const end = Number(PageConfig.getOption('shJupyterJobEnd')) * 1000;
    if (!end) {
      return; // not a session with a known end (no Slurm job, or Slurm did not say)
    }
    const warnings = (PageConfig.getOption('shJupyterWalltimeWarnings') || '')
      .split(',').map(Number).filter((w) => w > 0).sort((a, b) => b - a);
    const saveBefore = Number(PageConfig.getOption('shJupyterWalltimeSave')) || 0;
    let offset = 0;
    const shown = new Set();
    let saved = false;
    const tick = async () => {
      const left = (end - (Date.now() + offset)) / 1000;
      if (left <= 0) {
        return;
      }
      const due = warnings.filter((w) => left <= w && !shown.has(w));
      if (due.length) {
        due.forEach((w) => shown.add(w));
        const save = saveBefore
          ? ` Open documents with unsaved changes are saved ${words(saveBefore)} before the end.`
          : '';
        Notification.warning(
          `This session ends in ${words(left)}, when its Slurm job's time runs out.${save}`,
          { autoClose: false }
        );
      }
      if (saveBefore && !saved && left <= saveBefore) {
        saved = true;
        const paths = await saveDirty(app, docManager);
        if (paths.length) {
          Notification.info(
            `Saved before the session ends: ${paths.join(', ')}`, { autoClose: false }
          );
        }
      }
    };
    serverOffset().then((o) => {
      offset = o;
      tick();
      window.setInterval(tick, TICK_MS);
    });
  }
};

export default plugin;
