// The HTSR tab of TensorBoard (loaded by TensorBoard as the plugin's ES module, inside its
// iframe, whose base is data/plugin/htsr/): lists the runs holding a ww_callbacks history, polls
// the selected run's new records and stored ESDs every few seconds (only the bytes after the
// last offsets are asked for) into the run's AlphaTable, and draws every view of it (RunViews:
// heatmap, flow, lines, ESD, alerts), redrawn on each poll that brought something, without a
// reload. The only module here that fetches; no network beyond the TensorBoard server.

import {RunViews} from "./run_views.js";
import {AlphaTable} from "./table.js";

/** Seconds between two polls. */
export const POLL_S = 2;

async function getJSON(url) {
  const response = await fetch(url, {cache: "no-store"});
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

/** One run's table and where its history and its ESD sidecar were read up to. */
class RunState {
  constructor(name) {
    this.name = name;
    this.table = new AlphaTable();
    this.offset = 0;
    this.spectraOffset = 0;
    this.views = null;
  }

  /** Read what a route gained since the last call into the table: `route` "records" or
   * "spectra". Returns the number of answers that brought something. */
  async _read(route, offsetKey, add) {
    let changed = 0;
    for (let i = 0; i < 1000; i++) {  // while the server has more now (a large first load)
      const q = `./${route}?run=${encodeURIComponent(this.name)}&offset=${this[offsetKey]}`;
      const answer = await getJSON(q);
      if (answer.reset) {  // the history was rewritten (a resumed run): read it again
        this.table.reset();
        this.offset = 0;
        this.spectraOffset = 0;
        changed++;
        if (!answer.more) break;
        continue;
      }
      if (add(answer)) changed++;
      this[offsetKey] = answer.next;
      if (!answer.more) break;
      if (changed && this.onChunk) this.onChunk();  // paint the first chunk at once
    }
    return changed;
  }

  /** Read what the history and the sidecar gained; returns whether anything did. */
  async update() {
    const version = this.table.version;
    await this._read("records", "offset", (a) => this.table.add(a) ||
      (a.actions || []).length);
    await this._read("spectra", "spectraOffset", (a) => this.table.addSpectra(a) ||
      (a.records || []).length);
    return this.table.version !== version;
  }
}

export async function render() {
  const doc = document;
  const css = doc.createElement("link");
  css.rel = "stylesheet";
  css.href = "./views.css";
  doc.head.append(css);
  const page = doc.createElement("div");
  page.className = "ww-page";
  const bar = doc.createElement("div");
  bar.className = "ww-bar";
  const title = doc.createElement("span");
  title.className = "ww-title";
  title.textContent = "HTSR: alpha per layer and analysis";
  const select = doc.createElement("select");
  select.id = "ww-run";
  select.setAttribute("aria-label", "run");
  const status = doc.createElement("span");
  status.className = "ww-status";
  bar.append(title, select, status);
  const view = doc.createElement("div");
  view.className = "ww-run";
  page.append(bar, view);
  doc.body.append(page);
  const runs = new Map();
  let shown = null;
  let busy = false;

  // `partial`: a piece of a long first load: only the heatmap gains its columns (the other
  // views redraw everything; 500 layers x 2000 analyses: ~130 ms per full update at load 7)
  const show = (partial = false) => {
    const run = runs.get(select.value);
    if (!run) return;
    if (shown !== run) {  // another run: its own views
      view.textContent = "";
      run.views = new RunViews(view, run.table, {defer: true});  // the heatmap painted first
      shown = run;
    } else if (partial) {
      run.views.heatmap.update();
    } else {
      run.views.update();
    }
    const t = run.table;
    const last = t.columns.length ? t.columns[t.columns.length - 1].step : "-";
    status.textContent = `${t.columns.length} analyses, ${t.layers.length} layers, ` +
      `last step ${last}, ${t.spectraSteps.length} with stored ESDs`;
    status.dataset.updated = String(Date.now());
  };

  async function refreshRuns() {
    const {runs: names} = await getJSON("./runs");
    for (const name of names) {
      if (!runs.has(name)) {
        const state = new RunState(name);
        state.onChunk = () => { if (select.value === name) show(true); };
        runs.set(name, state);
        const option = doc.createElement("option");
        option.value = name;
        option.textContent = name === "." ? "(logdir)" : name;
        select.append(option);
      }
    }
    if (!names.length) status.textContent = "no run under --logdir holds a ww_history.jsonl yet";
  }

  async function tick() {
    if (busy) return;
    busy = true;
    try {
      await refreshRuns();
      const run = runs.get(select.value);
      if (run) {
        const changed = await run.update();
        if (changed || shown !== run) show();
      }
      page.dataset.polls = String(Number(page.dataset.polls || 0) + 1);
    } catch (err) {
      status.textContent = `cannot read the runs: ${err.message}`;
    } finally {
      busy = false;
    }
  }

  select.addEventListener("change", () => { show(); tick(); });
  await tick();
  setInterval(tick, POLL_S * 1000);
}
