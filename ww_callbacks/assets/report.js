(function () {
"use strict";
const D = JSON.parse(document.getElementById("ww-data").textContent);
const NS = "http://www.w3.org/2000/svg";
const C = D.bands.colours;
function el(tag, attrs, parent, text) {
  const e = document.createElementNS(NS, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}
function svg(parent, w, h, id) {
  const s = el("svg", {width: w, height: h, viewBox: "0 0 " + w + " " + h, id: id});
  parent.appendChild(s);
  return s;
}
function band(a) {
  if (a === null || a === undefined) return "none";
  return a < D.bands.over ? "over" : a > D.bands.under ? "under" : "well";
}
function colour(a) { return C[band(a)]; }
function shade(a) {
  if (a === null) return 1;
  if (a < D.bands.over) return 0.55 + 0.45 * Math.min(1, (D.bands.over - a) / 1.0);
  if (a > D.bands.under) return 0.55 + 0.45 * Math.min(1, (a - D.bands.under) / 6.0);
  return 0.45 + 0.55 * (1 - Math.abs(a - 4) / 2);
}
function fmt(v, d) { return v === null || v === undefined ? "-" : Number(v).toFixed(d); }
const tip = document.getElementById("tip");
function showTip(ev, text) {
  tip.style.display = "block"; tip.textContent = text;
  tip.style.left = (ev.clientX + 12) + "px"; tip.style.top = (ev.clientY + 12) + "px";
}
function hideTip() { tip.style.display = "none"; }
function note(parent, text) {
  const p = document.createElement("p"); p.className = "note"; p.textContent = text;
  parent.appendChild(p);
}
const T = D.steps.length, L = D.layers.length;
let ymax = 8;
for (const row of D.alpha) for (const a of row) if (a !== null && a > ymax) ymax = a;
ymax = Math.min(ymax, 30) * 1.05;

function axisY(s, y, x0, x1, maxv) {
  for (let v = 0; v <= maxv; v += (maxv > 16 ? 4 : 2)) {
    el("text", {x: x0 - 4, y: y(v) + 4, "text-anchor": "end"}, s, String(v));
    el("line", {x1: x0, x2: x1, y1: y(v), y2: y(v), stroke: "#eee"}, s);
  }
}
function bands(s, y, x0, x1, maxv) {
  el("rect", {x: x0, width: x1 - x0, y: y(D.bands.over), height: y(0) - y(D.bands.over),
              fill: C.over, opacity: 0.1}, s);
  if (maxv > D.bands.under)
    el("rect", {x: x0, width: x1 - x0, y: y(maxv), height: y(D.bands.under) - y(maxv),
                fill: C.under, opacity: 0.1}, s);
}

function drawTitle() {
  document.getElementById("title").textContent = D.title;
  document.getElementById("sources").textContent = "Files read (below the run folder): " +
    D.sources.join(", ");
  document.getElementById("meta").textContent = D.run_dir + " - " + T + " analyses, " + L +
    " layers, steps " + D.steps[0] + " to " + D.steps[T - 1] + " - written " + D.created +
    " by ww_callbacks " + D.version;
  const last = D.alpha[T - 1], counts = {over: 0, well: 0, under: 0, none: 0};
  for (const a of last) counts[band(a)]++;
  const box = document.getElementById("summary");
  note(box, "Last analysis (step " + D.steps[T - 1] + "): ww/alpha_mean " +
    fmt(D.means["ww/alpha_mean"][T - 1], 3) + ", ww/alpha_weighted_mean " +
    fmt(D.means["ww/alpha_weighted_mean"][T - 1], 3) + "; layers over-trained " + counts.over +
    ", well-trained " + counts.well + ", under-trained " + counts.under + ", no fit " +
    counts.none + ".");
  for (const n of D.notes) note(box, n);
}

function drawHeatmap() {
  const box = document.getElementById("heatmap");
  const cw = Math.max(2, Math.min(40, 900 / T)), ch = Math.max(3, Math.min(18, 640 / L));
  const left = 8, topPad = 4, w = left + cw * T + 8, h = topPad + ch * L + 24;
  const s = svg(box, w, h, "heatmap-svg");
  const g = el("g", {}, s);
  for (let t = 0; t < T; t++) {
    const row = D.alpha[t];
    for (let l = 0; l < L; l++) {
      const a = row[l];
      el("rect", {x: (left + t * cw).toFixed(1), y: (topPad + l * ch).toFixed(1),
                  width: cw.toFixed(2), height: ch.toFixed(2), fill: colour(a),
                  "fill-opacity": shade(a).toFixed(2), class: "cell"}, g);
    }
  }
  el("text", {x: left, y: h - 6}, s, "step " + D.steps[0]);
  el("text", {x: w - 8, y: h - 6, "text-anchor": "end"}, s, "step " + D.steps[T - 1]);
  s.addEventListener("mousemove", function (ev) {
    const r = s.getBoundingClientRect();
    const t = Math.floor((ev.clientX - r.left - left) / cw);
    const l = Math.floor((ev.clientY - r.top - topPad) / ch);
    if (t < 0 || t >= T || l < 0 || l >= L) { hideTip(); return; }
    showTip(ev, D.layers[l] + " @ step " + D.steps[t] + ": alpha " + fmt(D.alpha[t][l], 3) +
      " (" + band(D.alpha[t][l]) + ")");
  });
  s.addEventListener("mouseleave", hideTip);
}

function drawFlow() {
  const box = document.getElementById("flow");
  const w = 900, h = 320, x0 = 40, x1 = w - 10, y0 = h - 30, y1 = 10;
  const s = svg(box, w, h, "flow-svg");
  const x = i => x0 + (x1 - x0) * (L > 1 ? i / (L - 1) : 0.5);
  const y = v => y0 - (y0 - y1) * Math.min(v, ymax) / ymax;
  bands(s, y, x0, x1, ymax); axisY(s, y, x0, x1, ymax);
  el("text", {x: (x0 + x1) / 2, y: h - 8, "text-anchor": "middle"}, s, "layer (model order)");
  const first = el("polyline", {fill: "none", stroke: "#bbb", "stroke-width": 1}, s);
  const line = el("polyline", {fill: "none", stroke: "#333", "stroke-width": 1.5,
                               id: "flow-line"}, s);
  const dots = el("g", {}, s);
  const pts = row => row.map((a, i) => a === null ? null : x(i).toFixed(1) + "," +
                                y(a).toFixed(1)).filter(p => p !== null).join(" ");
  first.setAttribute("points", pts(D.alpha[0]));
  const slider = document.getElementById("flow-step"), label = document.getElementById(
    "flow-label");
  slider.max = T - 1;
  function show(t) {
    line.setAttribute("points", pts(D.alpha[t]));
    while (dots.firstChild) dots.removeChild(dots.firstChild);
    D.alpha[t].forEach((a, i) => {
      if (a === null) return;
      const c = el("circle", {cx: x(i), cy: y(a), r: 3, fill: colour(a)}, dots);
      el("title", {}, c, D.layers[i] + ": " + fmt(a, 3));
    });
    label.textContent = "step " + D.steps[t] + (D.epochs[t] === null ? "" : ", epoch " +
      D.epochs[t]) + " (" + (t + 1) + "/" + T + ")";
    s.setAttribute("data-step", D.steps[t]);
  }
  slider.addEventListener("input", () => show(Number(slider.value)));
  slider.value = T - 1;
  show(T - 1);
}

function drawCurves() {
  const box = document.getElementById("curves");
  const w = 180, h = 70, x0 = 4, x1 = w - 4, y0 = h - 4, y1 = 4;
  const s0 = D.steps[0], s1 = D.steps[T - 1];
  const x = st => x0 + (x1 - x0) * (s1 > s0 ? (st - s0) / (s1 - s0) : 0.5);
  const y = v => y0 - (y0 - y1) * Math.min(v, ymax) / ymax;
  D.layers.forEach((name, l) => {
    const fig = document.createElement("figure");
    const cap = document.createElement("figcaption");
    const lastA = D.alpha[T - 1][l];
    cap.textContent = name + " (" + fmt(lastA, 2) + ")"; cap.title = name;
    fig.appendChild(cap); box.appendChild(fig);
    const s = svg(fig, w, h);
    s.setAttribute("class", "curve");
    bands(s, y, x0, x1, ymax);
    const pts = [];
    for (let t = 0; t < T; t++) { const a = D.alpha[t][l];
      if (a !== null) pts.push(x(D.steps[t]).toFixed(1) + "," + y(a).toFixed(1)); }
    el("polyline", {points: pts.join(" "), fill: "none", stroke: colour(lastA),
                    "stroke-width": 1.5, class: "curve-line"}, s);
    el("rect", {x: x0, y: y1, width: x1 - x0, height: y0 - y1, fill: "none", stroke: "#ccc"}, s);
  });
}

function drawTraps() {
  const box = document.getElementById("traps");
  const rand = [];
  D.traps.forEach((row, t) => { if (row !== null) rand.push(t); });
  if (!rand.length) { note(box, "No analysis of this run was randomised, so traps were not " +
    "looked for (the watcher's traps_every)."); return; }
  let total = 0;
  const ch = Math.max(3, Math.min(14, 480 / L)), cw = Math.max(6, Math.min(30, 860 / rand.length));
  const w = Math.max(520, 40 + cw * rand.length + 10), h = ch * L + 30;
  const s = svg(box, w, h, "traps-svg");
  rand.forEach((t, k) => {
    D.traps[t].forEach((n, l) => {
      if (n === null || n <= 0) return;
      total += n;
      const c = el("circle", {cx: 40 + (k + 0.5) * cw, cy: (l + 0.5) * ch,
        r: Math.min(ch, cw) / 2 * Math.min(1, 0.4 + 0.2 * Math.sqrt(n)), fill: C.trap,
        class: "trap"}, s);
      el("title", {}, c, D.layers[l] + " @ step " + D.steps[t] + ": " + n + " trap(s)");
    });
  });
  el("text", {x: 40, y: h - 8}, s, "randomised analyses: step " + D.steps[rand[0]] + " to " +
     D.steps[rand[rand.length - 1]]);
  note(box, rand.length + " randomised analyses, " + total + " trap(s) found in all (dots: " +
       "layer x analysis, larger = more traps).");
}

function drawEsd() {
  const box = document.getElementById("esd");
  const names = Object.keys(D.esd);
  if (!names.length) { note(box, "This run kept no spectra (neither in its history nor as " +
    "TensorBoard ww_esd/ histograms)."); return; }
  const sel = document.createElement("select"); sel.id = "esd-layer";
  // each option's value is its index in names, not its text: an option's value read from its
  // text is whitespace-collapsed ("  a  b" reads "a b"), which lost layers with such names
  names.forEach((n, i) => { const o = document.createElement("option"); o.value = String(i);
    o.textContent = n; sel.appendChild(o); });
  box.appendChild(sel);
  const w = 900, h = 260, x0 = 40, x1 = w - 10, y0 = h - 30, y1 = 10;
  const s = svg(box, w, h, "esd-svg");
  function show() {
    while (s.firstChild) s.removeChild(s.firstChild);
    const hs = D.esd[names[Number(sel.value)]];
    let lo = Infinity, hi = -Infinity, cmax = 1;
    for (const e of hs) { lo = Math.min(lo, e.edges[0]); hi = Math.max(hi, e.edges[
      e.edges.length - 1]); for (const c of e.counts) cmax = Math.max(cmax, c); }
    const x = v => x0 + (x1 - x0) * (hi > lo ? (v - lo) / (hi - lo) : 0.5);
    const y = c => y0 - (y0 - y1) * Math.log10(1 + c) / Math.log10(1 + cmax);
    hs.forEach((e, k) => {
      const grey = Math.round(200 - 200 * (hs.length > 1 ? k / (hs.length - 1) : 1));
      const stroke = k === hs.length - 1 ? "#000" : "rgb(" + grey + "," + grey + "," + grey + ")";
      const pts = [];
      e.counts.forEach((c, i) => { pts.push(x(e.edges[i]).toFixed(1) + "," + y(c).toFixed(1));
        pts.push(x(e.edges[i + 1]).toFixed(1) + "," + y(c).toFixed(1)); });
      const p = el("polyline", {points: pts.join(" "), fill: "none", stroke: stroke,
                                class: "esd-line"}, s);
      el("title", {}, p, "step " + e.step);
    });
    el("text", {x: (x0 + x1) / 2, y: h - 8, "text-anchor": "middle"}, s,
       "log10 eigenvalue (histogram, log counts); darker = later: steps " +
       hs.map(e => e.step).join(", "));
    el("line", {x1: x0, x2: x1, y1: y0, y2: y0, stroke: "#333"}, s);
    for (let k = 0; k <= 4; k++) { const v = lo + (hi - lo) * k / 4;
      el("text", {x: x(v), y: y0 + 12, "text-anchor": "middle"}, s, v.toFixed(2)); }
  }
  sel.addEventListener("change", show);
  show();
}

function drawPolicies() {
  const box = document.getElementById("policies");
  if (!D.policies.length) { note(box, "No policy action found (policies log ww_lr_scale/, " +
    "ww_traps_removed/ and ww/stop_reason to the run's TensorBoard events)."); return; }
  const table = document.createElement("table"); table.id = "policy-table";
  const head = document.createElement("tr");
  for (const h of ["step", "what", "from", "to"]) {
    const th = document.createElement("th"); th.textContent = h; head.appendChild(th); }
  table.appendChild(head);
  for (const e of D.policies) {
    const tr = document.createElement("tr");
    for (const v of [e.step, e.tag, e.from === null ? "" : e.from, e.value]) {
      const td = document.createElement("td"); td.textContent = String(v); tr.appendChild(td); }
    table.appendChild(tr);
  }
  box.appendChild(table);
}

function drawMetrics() {
  const box = document.getElementById("metrics");
  const w = 900, h = 240, x0 = 40, x1 = w - 60, y0 = h - 30, y1 = 10;
  const s = svg(box, w, h, "means-svg");
  const s0 = D.steps[0], s1 = D.steps[T - 1];
  const x = st => x0 + (x1 - x0) * (s1 > s0 ? (st - s0) / (s1 - s0) : 0.5);
  const series = [["ww/alpha_mean", "#000"], ["ww/alpha_weighted_mean", "#E69F00"]];
  let lo = Infinity, hi = -Infinity;
  for (const [k] of series) for (const v of D.means[k]) if (v !== null) {
    lo = Math.min(lo, v); hi = Math.max(hi, v); }
  if (!(hi > lo)) { lo -= 1; hi += 1; }
  const y = v => y0 - (y0 - y1) * (v - lo) / (hi - lo);
  series.forEach(([k, c], i) => {
    const pts = [];
    D.means[k].forEach((v, t) => { if (v !== null) pts.push(x(D.steps[t]).toFixed(1) + "," +
      y(v).toFixed(1)); });
    el("polyline", {points: pts.join(" "), fill: "none", stroke: c, "stroke-width": 1.5,
                    class: "mean-line"}, s);
    el("text", {x: x0 + 4, y: y1 + 12 + 13 * i, fill: c}, s, k + " (" + fmt(lo, 2) + " to " +
       fmt(hi, 2) + ")");
  });
  for (const e of D.policies) {
    const l = el("line", {x1: x(e.step), x2: x(e.step), y1: y1, y2: y0, stroke: C.trap,
                          "stroke-dasharray": "3,3"}, s);
    el("title", {}, l, "step " + e.step + ": " + e.tag + " -> " + e.value);
  }
  const colours = ["#0072B2", "#009E73", "#D55E00", "#CC79A7", "#56B4E9"];
  D.metrics.forEach((m, i) => {
    let a = Infinity, b = -Infinity;
    for (const v of m.y) if (v !== null) { a = Math.min(a, v); b = Math.max(b, v); }
    if (!(b > a)) { a -= 1; b += 1; }
    const xs = m.by === "epoch" ? m.x.map(e => { const t = D.epochs.lastIndexOf(e);
      return t < 0 ? null : D.steps[t]; }) : m.x;
    const pts = [];
    m.y.forEach((v, k) => { if (v !== null && xs[k] !== null) pts.push(x(xs[k]).toFixed(1) +
      "," + (y0 - (y0 - y1) * (v - a) / (b - a)).toFixed(1)); });
    const c = colours[i % colours.length];
    el("polyline", {points: pts.join(" "), fill: "none", stroke: c, "stroke-dasharray": "5,2",
                    class: "metric-line"}, s);
    note(box, m.name + " (" + m.source + ", dashed, own scale " + fmt(a, 3) + " to " +
      fmt(b, 3) + "): Spearman rank correlation with ww/alpha_mean " + fmt(m.rho_alpha, 3) +
      ", with ww/alpha_weighted_mean " + fmt(m.rho_weighted, 3) + " (n = " + m.n +
      " analyses paired with a " + m.name + " value)");
  });
  if (!D.metrics.length) note(box, "No validation metric found in this folder (TensorBoard " +
    "events, Lightning metrics.csv, Hugging Face trainer_state.json, Keras CSVLogger).");
}

const parts = [["title", drawTitle], ["heatmap", drawHeatmap], ["flow", drawFlow],
               ["curves", drawCurves], ["traps", drawTraps], ["esd", drawEsd],
               ["policies", drawPolicies], ["metrics", drawMetrics]];
const drawn = [];
for (const [name, fn] of parts) { fn(); drawn.push(name); }
document.body.setAttribute("data-drawn", drawn.join(" "));
})();
