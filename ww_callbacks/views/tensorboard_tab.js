// The HTSR tab of TensorBoard (loaded by TensorBoard as the plugin's ES module, inside its
// iframe, whose base is data/plugin/htsr/): lists the runs holding a ww_callbacks history, polls
// the selected run's new records every few seconds (only the bytes after the last offset are
// asked for) into the run's AlphaTable, and draws every view of it (RunViews: heatmap, flow,
// lines, ESD, alerts), redrawn on each poll that brought something, without a reload.
// Stored ESDs are loaded per layer, on demand: those of the layer the ESD view shows, asked for
// when it is chosen (a heatmap click, the select; the first layer at first) and then that
// layer's new ones at each poll (a layer seen before goes on from where it was read up to); the
// whole sidecar is never sent (500 layers x 80 stored analyses: 24.5 MB, bench RESULTS 12).
// The only module here that fetches; no network beyond the TensorBoard server.

import {RunViews} from "./run_views.js";
import {AlphaTable} from "./table.js";

/** Seconds between two polls. */
export const POLL_S = 2;

async function getJSON(url) {
  const response = await fetch(url, {cache: "no-store"});
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

/** One run's table, where its history was read up to, the layer whose stored ESDs are
 * wanted and where each layer's were read up to (byte offsets of the sidecar). */
class RunState {
  constructor(name) {
    this.name = name;
    this.table = new AlphaTable();
    this.offset = 0;
    this.layer = null;
    this.layerOffsets = new Map();  // layer name -> sidecar offset (names are data: a Map)
    this.views = null;
  }

  /** Read what the history gained since the last call into the table. */
  async _readRecords() {
    let changed = 0;
    for (let i = 0; i < 1000; i++) {  // while the server has more now (a large first load)
      const answer = await getJSON(
        `./records?run=${encodeURIComponent(this.name)}&offset=${this.offset}`);
      if (answer.reset) {  // the history was rewritten (a resumed run): read it again
        this.table.reset();
        this.offset = 0;
        this.layerOffsets.clear();
        changed++;
        if (!answer.more) break;
        continue;
      }
      if (this.table.add(answer) || (answer.actions || []).length) changed++;
      this.offset = answer.next;
      if (!answer.more) break;
      if (changed && this.onChunk) this.onChunk();  // paint the first chunk at once
    }
    return changed;
  }

  /** Read the stored ESDs of the wanted layer that the sidecar gained since they were last
   * read (all of them the first time). */
  async _readSpectra() {
    const layer = this.layer;
    if (layer === null) return false;
    const first = !this.layerOffsets.has(layer);  // the view says "loading" until then
    for (let i = 0; i < 1000; i++) {
      const offset = this.layerOffsets.get(layer) ?? 0;
      const answer = await getJSON(`./spectra?run=${encodeURIComponent(this.name)}` +
        `&layer=${encodeURIComponent(layer)}&offset=${offset}`);
      if (answer.reset) {  // the sidecar was rewritten (a resumed run): read it again
        this.table.resetSpectra();
        this.layerOffsets.clear();
        if (!answer.more) break;
        continue;
      }
      this.table.addSpectra(answer);
      this.layerOffsets.set(layer, answer.next);
      if (!answer.more) break;
    }
    return first;
  }

  /** Read the wanted layer's new stored ESDs, one reader at a time (a layer chosen while a
   * read runs is read after it); returns whether the table changed. Runs beside a long first
   * load of the history: a layer's ESDs do not wait for it. A layer read for the first time
   * counts as a change (its view stops saying "loading", even when none are stored). */
  async readSpectra() {
    if (this.spectraBusy) {
      this.spectraAgain = true;
      return false;
    }
    this.spectraBusy = true;
    const version = this.table.version;
    let first = false;
    try {
      do {
        this.spectraAgain = false;
        if (await this._readSpectra()) first = true;
      } while (this.spectraAgain);
    } finally {
      this.spectraBusy = false;
    }
    return first || this.table.version !== version;
  }

  /** Read what the history and the wanted layer's stored ESDs gained; returns whether anything
   * did. */
  async update() {
    const version = this.table.version;
    await this._readRecords();
    const spectra = await this.readSpectra();
    return spectra || this.table.version !== version;
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
      // the heatmap painted first; the ESD view says which layer's stored ESDs to fetch
      run.views = new RunViews(view, run.table, {defer: true, esd: {
        onLayer: (name) => {
          run.layer = name;
          run.readSpectra().then((changed) => { if (changed) showEsd(run); })
            .catch((err) => { status.textContent = `cannot read the ESDs: ${err.message}`; });
        },
        pending: (name) => !run.layerOffsets.has(name),
      }});
      shown = run;
    } else if (partial) {
      run.views.heatmap.update();
    } else {
      run.views.update();
    }
    tell(run);
  };

  // a layer's stored ESDs arrived: the ESD view and the status (not the other views)
  const showEsd = (run) => {
    if (runs.get(select.value) !== run || shown !== run || !run.views.esd) return;
    run.views.esd.update();
    tell(run);
  };

  const tell = (run) => {
    const t = run.table;
    const last = t.columns.length ? t.columns[t.columns.length - 1].step : "-";
    status.textContent = `${t.columns.length} analyses, ${t.layers.length} layers, ` +
      `last step ${last}, ${t.spectraCount} with stored ESDs`;
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
