// The alpha heatmap of a run (a view of the shared AlphaTable, ./table.js), used by the
// TensorBoard tab and the report.
//
//   const heatmap = new Heatmap(container, table, {onSelect: (cell) => ...});
//   heatmap.update();            // after the table gained analyses: only new columns are drawn
//   heatmap.setStep(step);       // outline the analysis nearest to `step`
//   heatmap.selectLayer(name);   // outline that layer's cell in the outlined analysis
//
// One row per layer (its name elided in the middle, the full name on hover), one column per
// analysis with the steps on an axis below, a continuous alpha colour scale on which the band
// edges 2 and 6 are marked, and a hover that tells layer, step, alpha, traps and eigenvalues.
// Cells whose fit rests on fewer than `table.minEvals` eigenvalues are hatched (legend entry).
// A click on a cell calls `onSelect` with what the hover shows ({layer, row, column, step, ...}).
// Reads of the table: layers, columns[].{step, epoch, a, t, n}, minEvals, lowEvidence().

import {AlphaTable, BAND_EDGES} from "./table.js";

export {AlphaTable, BAND_EDGES};

/** The colour scale's range of alpha (values outside take its end colours). */
export const ALPHA_RANGE = [1, 8];
const STOPS = [
  [1.0, [103, 0, 31]], [2.0, [214, 96, 77]], [2.6, [244, 165, 130]], [3.5, [166, 219, 160]],
  [4.5, [90, 174, 97]], [6.0, [27, 120, 55]], [7.0, [67, 147, 195]], [8.0, [33, 102, 172]],
];
const NO_FIT = "#d9d9d9";
const MISSING = "#ffffff";

/** The colour of one alpha on the continuous scale (grey for no fit). */
export function alphaColour(alpha) {
  if (alpha === null || alpha === undefined || !Number.isFinite(alpha)) return NO_FIT;
  const x = Math.min(Math.max(alpha, ALPHA_RANGE[0]), ALPHA_RANGE[1]);
  for (let i = 1; i < STOPS.length; i++) {
    const [x1, c1] = STOPS[i];
    if (x <= x1) {
      const [x0, c0] = STOPS[i - 1];
      const f = (x - x0) / (x1 - x0);
      const c = c0.map((v, k) => Math.round(v + f * (c1[k] - v)));
      return `rgb(${c[0]},${c[1]},${c[2]})`;
    }
  }
  const c = STOPS[STOPS.length - 1][1];
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

/** `name` shortened to `max` characters by an ellipsis in the middle (both ends kept: the
 * block number and the layer's own name stay readable). */
export function elideMiddle(name, max = 32) {
  const s = String(name);
  if (s.length <= max) return s;
  const keep = max - 1;
  const head = Math.ceil(keep * 0.4);
  return s.slice(0, head) + "\u2026" + s.slice(s.length - (keep - head));
}

function fmt(value, digits) {
  return value === null || value === undefined || !Number.isFinite(value)
    ? "no fit" : value.toFixed(digits);
}

/** One line of text for a hovered cell. */
export function describeCell(info) {
  const evals = info.evals === null || info.evals === undefined ? "?" : String(info.evals);
  const few = info.low ? ` (few: fewer than ${info.minEvals}, not trusted)` : "";
  return `${info.layer} \u2014 step ${info.step}` +
    (info.epoch === null || info.epoch === undefined ? "" : ` (epoch ${info.epoch})`) +
    ` \u2014 alpha ${fmt(info.alpha, 3)} \u2014 traps ${info.traps ?? 0}` +
    ` \u2014 ${evals} eigenvalues${few}`;
}

/** The hatch laid over cells fitted on too few eigenvalues (a pattern of `ctx`). */
function hatch(doc, ctx) {
  const tile = doc.createElement("canvas");
  tile.width = 6;
  tile.height = 6;
  const t = tile.getContext("2d");
  t.fillStyle = "rgba(255,255,255,0.45)";
  t.fillRect(0, 0, 6, 6);
  t.strokeStyle = "rgba(40,40,40,0.75)";
  t.lineWidth = 1.2;
  t.beginPath();
  t.moveTo(-1, 7);
  t.lineTo(7, -1);
  t.moveTo(5, 7);
  t.lineTo(7, 5);
  t.moveTo(-1, 1);
  t.lineTo(1, -1);
  t.stroke();
  return ctx.createPattern(tile, "repeat");
}

/** The colour legend: a bar over ALPHA_RANGE with 2 and 6 marked, and the hatch of the cells
 * fitted on too few eigenvalues. */
export function legend(doc = document, minEvals = 50) {
  const box = doc.createElement("div");
  box.className = "ww-legend";
  const bar = doc.createElement("canvas");
  bar.width = 320;
  bar.height = 34;
  const ctx = bar.getContext("2d");
  const [lo, hi] = ALPHA_RANGE;
  for (let x = 0; x < bar.width; x++) {
    ctx.fillStyle = alphaColour(lo + (hi - lo) * x / (bar.width - 1));
    ctx.fillRect(x, 0, 1, 16);
  }
  ctx.fillStyle = "#222";
  ctx.font = "11px sans-serif";
  ctx.textAlign = "center";
  for (let v = lo; v <= hi; v++) {
    const x = (v - lo) / (hi - lo) * (bar.width - 1);
    const edge = BAND_EDGES.includes(v);
    ctx.fillRect(Math.round(x) - (edge ? 1 : 0), edge ? 0 : 16, edge ? 2 : 1, edge ? 22 : 4);
    ctx.fillText(String(v), Math.min(Math.max(x, 6), bar.width - 6), 32);
  }
  const label = doc.createElement("span");
  label.className = "ww-legend-label";
  label.textContent = "alpha (band edges 2 and 6 marked; grey: no fit; corner mark: traps)";
  const swatch = doc.createElement("canvas");
  swatch.className = "ww-legend-hatch";
  swatch.width = 28;
  swatch.height = 16;
  const s = swatch.getContext("2d");
  s.fillStyle = alphaColour(3.5);
  s.fillRect(0, 0, 28, 16);
  s.fillStyle = hatch(doc, s);
  s.fillRect(0, 0, 28, 16);
  const few = doc.createElement("span");
  few.className = "ww-legend-label ww-legend-few";
  few.textContent = fewText(minEvals);
  box.append(bar, label, swatch, few);
  return box;
}

function fewText(minEvals) {
  return `hatched: fit on fewer than ${minEvals} eigenvalues (not trusted)`;
}

const AXIS_H = 30;

/** The heatmap of an AlphaTable inside `container` (see the head of this file). */
export class Heatmap {
  constructor(container, table = null, opts = {}) {
    if (table !== null && !(table instanceof AlphaTable) && !Array.isArray(table.columns)) {
      opts = table;  // Heatmap(container, opts): the table comes with draw(table)
      table = null;
    }
    const {rowHeight = 18, maxCell = 22, labelChars = 40, onSelect = null} = opts;
    const doc = container.ownerDocument;
    this.doc = doc;
    this.rowHeight = rowHeight;
    this.maxCell = maxCell;
    this.labelChars = labelChars;
    this.onSelect = onSelect;
    this.root = doc.createElement("div");
    this.root.className = "ww-heatmap";
    this.labels = doc.createElement("div");
    this.labels.className = "ww-rows";
    this.scroll = doc.createElement("div");
    this.scroll.className = "ww-cells";
    this.canvas = doc.createElement("canvas");
    this.canvas.className = "ww-heatmap-canvas";
    this.canvas.dataset.columns = "0";
    this.canvas.dataset.rows = "0";
    this.axis = doc.createElement("canvas");
    this.axis.className = "ww-heatmap-axis";
    this.axis.height = AXIS_H;
    this.colMark = doc.createElement("div");
    this.colMark.className = "ww-heat-col";
    this.colMark.hidden = true;
    this.cellMark = doc.createElement("div");
    this.cellMark.className = "ww-heat-cell";
    this.cellMark.hidden = true;
    this.scroll.append(this.canvas, this.axis, this.colMark, this.cellMark);
    this.root.append(this.labels, this.scroll);
    this.tip = doc.createElement("div");
    this.tip.className = "ww-tip";
    this.tip.hidden = true;
    this.legend = legend(doc);
    container.append(this.legend, this.root, this.tip);
    this.table = null;
    this.cellWidth = 0;
    this.drawnColumns = 0;
    this.drawnRows = 0;
    this.lowCells = 0;
    this.step = null;
    this.layer = null;
    this.canvas.addEventListener("mousemove", (e) => this._hover(e));
    this.canvas.addEventListener("mouseleave", () => { this.tip.hidden = true; });
    this.canvas.addEventListener("click", (e) => this._click(e));
    if (table) this.draw(table);
  }

  /** Draw what the table gained since the last call. */
  update() {
    if (this.table) this.draw(this.table);
  }

  /** Draw `table` (only the new columns when the layout did not change). */
  draw(table) {
    const fresh = table !== this.table;
    this.table = table;
    const rows = table.layers.length;
    const cols = table.columns.length;
    const avail = Math.max(200, (this.scroll.clientWidth || 800) - 4);
    const width = Math.max(1, Math.min(this.maxCell, Math.floor(avail / Math.max(cols, 1))));
    const minEvals = table.minEvals;
    const relayout = fresh || width !== this.cellWidth || rows !== this.drawnRows ||
      cols < this.drawnColumns || minEvals !== this.minEvals;
    if (relayout) {
      this.cellWidth = width;
      this.minEvals = minEvals;
      // grow in steps so that a live run does not resize the canvas at every analysis
      const room = Math.max(cols, Math.min(Math.floor(avail / width), cols + 64));
      this.canvas.width = Math.max(1, room * width);
      this.canvas.height = Math.max(1, rows * this.rowHeight);
      this._labels(table);
      this.drawnColumns = 0;
      this.drawnRows = rows;
      this.lowCells = 0;
      this.pattern = null;
      this.legend.querySelector(".ww-legend-few").textContent = fewText(minEvals);
    } else if (cols * width > this.canvas.width) {
      const keep = this.doc.createElement("canvas");  // widen, keeping what is drawn
      keep.width = this.canvas.width;
      keep.height = this.canvas.height;
      keep.getContext("2d").drawImage(this.canvas, 0, 0);
      this.canvas.width = Math.max(cols * width, this.canvas.width * 2);
      this.canvas.getContext("2d").drawImage(keep, 0, 0);
      this.pattern = null;
    }
    const ctx = this.canvas.getContext("2d");
    if (!this.pattern) this.pattern = hatch(this.doc, ctx);
    const h = this.rowHeight;
    const gap = h > 6 ? 1 : 0;
    for (let c = this.drawnColumns; c < cols; c++) {
      const col = table.columns[c];
      for (let r = 0; r < rows; r++) {
        const a = col.a[r];
        ctx.fillStyle = a === undefined ? MISSING : alphaColour(a);
        ctx.fillRect(c * width, r * h, width, h - gap);
        if (a !== undefined && table.lowEvidence(col.n[r])) {
          ctx.fillStyle = this.pattern;
          ctx.fillRect(c * width, r * h, width, h - gap);
          this.lowCells++;
        }
        if (col.t[r] > 0 && width >= 4) {  // traps: a dark corner mark
          ctx.fillStyle = "#000";
          ctx.fillRect(c * width + width - 3, r * h, 3, 3);
        }
      }
    }
    this.drawnColumns = cols;
    this._axis(table);
    const data = this.canvas.dataset;
    data.columns = String(cols);
    data.cellWidth = String(width);
    data.rowHeight = String(h);
    data.rows = String(rows);
    data.lowEvidence = String(this.lowCells);
    data.lastStep = cols ? String(table.columns[cols - 1].step) : "";
    this._marks();
  }

  /** The step axis under the cells: a tick and the step number every few columns. */
  _axis(table) {
    const cols = table.columns.length;
    const w = this.cellWidth || 1;
    if (this.axis.width !== this.canvas.width) this.axis.width = this.canvas.width;
    const ctx = this.axis.getContext("2d");
    ctx.clearRect(0, 0, this.axis.width, AXIS_H);
    ctx.fillStyle = "#333";
    ctx.font = "11px sans-serif";
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    let every = 1;
    for (const m of [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10000]) {
      every = m;
      if (m * w >= 64) break;
    }
    const labels = [];
    for (let c = 0; c < cols; c += every) {
      const x = c * w + w / 2;
      ctx.fillRect(Math.round(x), 0, 1, 5);
      const text = String(table.columns[c].step);
      const half = ctx.measureText(text).width / 2;
      ctx.fillText(text, Math.max(half, Math.min(x, this.axis.width - half)), 7);
      labels.push(text);
    }
    this.axis.dataset.ticks = labels.join(" ");
    this.axis.dataset.every = String(every);
  }

  _labels(table) {
    this.labels.textContent = "";
    for (const name of table.layers) {
      const div = this.doc.createElement("div");
      div.className = "ww-row-label";
      div.style.height = `${this.rowHeight}px`;
      div.textContent = elideMiddle(name, this.labelChars);
      div.title = name;
      this.labels.append(div);
    }
    const axisLabel = this.doc.createElement("div");
    axisLabel.className = "ww-axis-label";
    axisLabel.style.height = `${AXIS_H}px`;
    axisLabel.textContent = "step \u2192";
    this.labels.append(axisLabel);
  }

  /** The cell under canvas coordinates (x, y), or null. */
  cellAt(x, y) {
    if (!this.table || !this.cellWidth) return null;
    return this.table.cell(Math.floor(y / this.rowHeight), Math.floor(x / this.cellWidth));
  }

  /** Outline the analysis nearest to `step`. */
  setStep(step) {
    this.step = step;
    this._marks();
  }

  /** Outline the cell of layer `name` in the outlined analysis. */
  selectLayer(name) {
    this.layer = name;
    this._marks();
  }

  _marks() {
    const t = this.table;
    const column = t && this.step !== null ? t.columnOfStep(this.step) : -1;
    const w = this.cellWidth;
    const h = this.rowHeight;
    this.colMark.hidden = column < 0;
    if (column >= 0) {
      Object.assign(this.colMark.style, {left: `${column * w}px`, width: `${Math.max(w, 2)}px`,
                                         height: `${t.layers.length * h}px`});
      this.colMark.dataset.column = String(column);
    }
    const row = t && this.layer !== null ? t.index.get(this.layer) : undefined;
    this.cellMark.hidden = column < 0 || row === undefined;
    if (!this.cellMark.hidden) {
      Object.assign(this.cellMark.style, {left: `${column * w - 1}px`, top: `${row * h - 1}px`,
                                          width: `${Math.max(w, 2)}px`, height: `${h}px`});
    }
  }

  _event(event) {
    const rect = this.canvas.getBoundingClientRect();
    return this.cellAt(event.clientX - rect.left, event.clientY - rect.top);
  }

  _hover(event) {
    const info = this._event(event);
    if (!info) {
      this.tip.hidden = true;
      return;
    }
    this.tip.textContent = describeCell(info);
    this.tip.hidden = false;
    this.tip.style.left = `${event.clientX + 12}px`;
    this.tip.style.top = `${event.clientY + 12}px`;
  }

  _click(event) {
    const info = this._event(event);
    if (!info) return;
    this.step = info.step;
    this.layer = info.layer;
    this._marks();
    if (this.onSelect) this.onSelect(info);
  }
}
