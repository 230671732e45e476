// The report page's own script. The views are the shared ones (ww_callbacks/views/*.js, the
// modules the TensorBoard tab loads; ww_callbacks.views.page_script inlines them before this
// script, so the imports below name those modules): one AlphaTable filled with the same answers
// the tab is served (D.table: the run's slim records and actions lines; D.spectra: its stored
// ESDs) and RunViews over it (heatmap, flow with its slider, alpha lines, ESD, alerts and policy
// actions). This script only adds what the report alone has: the title and summary, the run's
// distinct trap count and the layers with traps, the validation metrics and their correlation.
import {AlphaTable} from "./table.js";
import {RunViews} from "./run_views.js";
import {elideMiddle} from "./heatmap.js";
import {svgEl, titled} from "./svg.js";

const D = JSON.parse(document.getElementById("ww-data").textContent);
const table = new AlphaTable();
table.add(D.table);
table.addSpectra(D.spectra);
const T = table.columns.length, L = table.layers.length;
const stepAt = (t) => table.columns[t].step;
const doc = document;

function fmt(v, d) { return v === null || v === undefined ? "-" : Number(v).toFixed(d); }
function note(parent, text, cls) {
  const p = doc.createElement("p"); p.className = cls || "note"; p.textContent = text;
  parent.append(p);
  return p;
}
function band(a) {
  if (a === null || a === undefined) return "none";
  return a < D.bands.over ? "over" : a > D.bands.under ? "under" : "well";
}

function trapText() {
  const s = D.traps;
  if (!s) return "Correlation traps: not looked for (no analysis of this run was randomised: " +
    "the watcher's traps_every).";
  return s.distinct + " correlation trap(s) in this run (distinct traps: each layer counted at " +
    "its largest number of traps over the " + s.randomized + " randomised analyses, summed " +
    "over layers; " + s.layers + " layer(s) had one); " + s.latest + " at the last randomised " +
    "analysis (step " + s.latest_step + ").";
}

function drawTitle() {
  doc.getElementById("title").textContent = D.title;
  doc.getElementById("sources").textContent = "Files read (below the run folder): " +
    D.sources.join(", ");
  doc.getElementById("meta").textContent = D.run_dir + " - " + T + " analyses, " + L +
    " layers, steps " + stepAt(0) + " to " + stepAt(T - 1) + " - written " + D.created +
    " by ww_callbacks " + D.version;
  const counts = {over: 0, well: 0, under: 0, none: 0};
  for (let l = 0; l < L; l++) counts[band(table.columns[T - 1].a[l])]++;
  const box = doc.getElementById("summary");
  note(box, "Last analysis (step " + stepAt(T - 1) + "): ww/alpha_mean " +
    fmt(D.means["ww/alpha_mean"][T - 1], 3) + ", ww/alpha_weighted_mean " +
    fmt(D.means["ww/alpha_weighted_mean"][T - 1], 3) + "; layers over-trained " + counts.over +
    ", well-trained " + counts.well + ", under-trained " + counts.under + ", no fit " +
    counts.none + ".");
  note(box, trapText(), "note trap-count");
  note(box, "ESDs: " + D.spectra.note, "note esd-note");
  const actions = table.actionLines().length;
  note(box, actions ? "Policies: " + actions + " actions line(s) in the history (the alerts " +
    "and policy actions below)." : "Policies: no actions stored (no policy ran, or an older " +
    "version wrote the history).");
  for (const n of D.notes) note(box, n);
}

let views = null;
function drawViews() {
  views = new RunViews(doc.getElementById("views"), table);
  views.update();
}

function drawTraps() {
  const box = doc.getElementById("traps");
  note(box, trapText(), "note trap-count");
  const rows = [];
  for (let l = 0; l < L; l++) {
    let peak = 0, first = null, last = null;
    for (const col of table.columns) {
      const n = col.t[l];
      if (n > 0) { peak = Math.max(peak, n); if (first === null) first = col.step;
        last = col.step; }
    }
    if (peak > 0) rows.push([l, peak, first, last]);
  }
  if (!rows.length) return;
  const tbl = doc.createElement("table"); tbl.id = "trap-table";
  const head = doc.createElement("tr");
  for (const h of ["layer", "most traps at once", "first seen (step)", "last seen (step)"]) {
    const th = doc.createElement("th"); th.textContent = h; head.append(th); }
  tbl.append(head);
  for (const [l, peak, first, last] of rows) {
    const tr = doc.createElement("tr");
    const name = doc.createElement("td");
    name.className = "trap-layer";
    name.textContent = elideMiddle(table.layers[l], 48);
    name.title = table.layers[l];
    const cell = (v) => { const td = doc.createElement("td"); td.textContent = String(v);
      return td; };
    name.addEventListener("click", () => { views.selectLayer(table.layers[l]);
      views.setStep(last); });
    tr.append(name, cell(peak), cell(first), cell(last));
    tbl.append(tr);
  }
  box.append(tbl);
}

function drawMetrics() {
  const box = doc.getElementById("metrics");
  const w = Math.max(360, Math.min(box.clientWidth || 900, 1000));
  const h = 240, x0 = 40, x1 = w - 20, y0 = h - 30, y1 = 10;
  const s = svgEl(doc, "svg", {id: "means-svg", width: w, height: h, viewBox: `0 0 ${w} ${h}`});
  box.append(s);
  const s0 = stepAt(0), s1 = stepAt(T - 1);
  const x = (st) => x0 + (x1 - x0) * (s1 > s0 ? (st - s0) / (s1 - s0) : 0.5);
  const series = [["ww/alpha_mean", "#000"], ["ww/alpha_weighted_mean", "#E69F00"]];
  let lo = Infinity, hi = -Infinity;
  for (const [k] of series) for (const v of D.means[k]) if (v !== null) {
    lo = Math.min(lo, v); hi = Math.max(hi, v); }
  if (!(hi > lo)) { lo -= 1; hi += 1; }
  const y = (v) => y0 - (y0 - y1) * (v - lo) / (hi - lo);
  series.forEach(([k, c], i) => {
    const pts = [];
    D.means[k].forEach((v, t) => { if (v !== null) pts.push(x(stepAt(t)).toFixed(1) + "," +
      y(v).toFixed(1)); });
    s.append(svgEl(doc, "polyline", {points: pts.join(" "), fill: "none", stroke: c,
                                     "stroke-width": 1.5, class: "mean-line"}));
    s.append(svgEl(doc, "text", {x: x0 + 4, y: y1 + 12 + 13 * i, fill: c}, k + " (" +
      fmt(lo, 2) + " to " + fmt(hi, 2) + ")"));
  });
  for (const e of table.actionEvents()) {  // what the policies did, where
    s.append(titled(svgEl(doc, "line", {x1: x(e.step), x2: x(e.step), y1: y1, y2: y0,
      stroke: "#CC79A7", "stroke-dasharray": "3,3"}), "step " + e.step + ": " + e.kind +
      (e.layer === null ? "" : " " + e.layer) + " -> " + e.after));
  }
  const colours = ["#0072B2", "#009E73", "#D55E00", "#CC79A7", "#56B4E9"];
  const epochs = table.columns.map((c) => c.epoch);
  D.metrics.forEach((m, i) => {
    let a = Infinity, b = -Infinity;
    for (const v of m.y) if (v !== null) { a = Math.min(a, v); b = Math.max(b, v); }
    if (!(b > a)) { a -= 1; b += 1; }
    const xs = m.by === "epoch" ? m.x.map((e) => { const t = epochs.lastIndexOf(e);
      return t < 0 ? null : stepAt(t); }) : m.x;
    const pts = [];
    m.y.forEach((v, k) => { if (v !== null && xs[k] !== null) pts.push(x(xs[k]).toFixed(1) +
      "," + (y0 - (y0 - y1) * (v - a) / (b - a)).toFixed(1)); });
    const c = colours[i % colours.length];
    s.append(svgEl(doc, "polyline", {points: pts.join(" "), fill: "none", stroke: c,
                                     "stroke-dasharray": "5,2", class: "metric-line"}));
    const rho = m.rho_alpha === null && m.rho_weighted === null
      ? "no rank correlation shown: " + m.n + " paired point(s), fewer than " + m.min_pairs
      : "Spearman rank correlation with ww/alpha_mean " + fmt(m.rho_alpha, 3) +
        ", with ww/alpha_weighted_mean " + fmt(m.rho_weighted, 3);
    note(box, m.name + " (" + m.source + ", dashed, own scale " + fmt(a, 3) + " to " +
      fmt(b, 3) + "): " + rho + " (n = " + m.n + " analyses paired with a " + m.name +
      " value)", "note metric");
  });
  if (!D.metrics.length) note(box, "No validation metric found in this folder (val*/eval* " +
    "losses and accuracies in TensorBoard events, Lightning metrics.csv, Hugging Face " +
    "trainer_state.json, Keras CSVLogger).");
}

// what is drawn, by the names the page's parts had before the views were shared
const parts = [["title", drawTitle], ["heatmap flow curves esd policies", drawViews],
               ["traps", drawTraps], ["metrics", drawMetrics]];
const drawn = [];
for (const [names, fn] of parts) { fn(); drawn.push(...names.split(" ")); }
const order = ["title", "heatmap", "flow", "curves", "traps", "esd", "policies", "metrics"];
doc.body.setAttribute("data-drawn", order.filter((n) => drawn.includes(n)).join(" "));
