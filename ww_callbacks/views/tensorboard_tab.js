// The HTSR tab of TensorBoard (loaded by TensorBoard as the plugin's ES module, inside its
// iframe, whose base is data/plugin/htsr/): lists the runs holding a ww_callbacks history, polls
// the selected run's new records every few seconds (only the bytes after the last offset are
// asked for) and draws the live alpha heatmap. No network beyond the TensorBoard server.

import {AlphaTable, Heatmap} from "./heatmap.js";

/** Seconds between two polls. */
export const POLL_S = 2;

async function getJSON(url) {
  const response = await fetch(url, {cache: "no-store"});
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

/** One run's table and where its history was read up to. */
class RunState {
  constructor(name) {
    this.name = name;
    this.table = new AlphaTable();
    this.offset = 0;
  }

  /** Read what the history gained since the last call; returns the number of new analyses. */
  async update() {
    let added = 0;
    for (let i = 0; i < 1000; i++) {  // while the server has more now (a large first load)
      const q = `./records?run=${encodeURIComponent(this.name)}&offset=${this.offset}`;
      const answer = await getJSON(q);
      if (answer.reset) {
        this.table.reset();
        this.offset = 0;
        added = 0;
        if (!answer.more) break;
        continue;
      }
      added += this.table.add(answer);
      this.offset = answer.next;
      if (!answer.more) break;
      if (added && this.onChunk) this.onChunk();  // paint the first chunk at once
    }
    return added;
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
  page.append(bar, view);
  doc.body.append(page);
  const heatmap = new Heatmap(view);
  const runs = new Map();
  let busy = false;

  const show = () => {
    const run = runs.get(select.value);
    if (!run) return;
    heatmap.draw(run.table);
    const t = run.table;
    const last = t.columns.length ? t.columns[t.columns.length - 1].step : "-";
    status.textContent = `${t.columns.length} analyses, ${t.layers.length} layers, ` +
      `last step ${last}`;
    status.dataset.updated = String(Date.now());
  };

  async function refreshRuns() {
    const {runs: names} = await getJSON("./runs");
    for (const name of names) {
      if (!runs.has(name)) {
        const state = new RunState(name);
        state.onChunk = () => { if (select.value === name) show(); };
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
        await run.update();
        show();
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
