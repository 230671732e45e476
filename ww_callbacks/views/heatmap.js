// The alpha heatmap of a run, shared by the TensorBoard tab and (later) the report.
//
// AlphaTable holds the analyses as they arrive (the plugin's slim records: per analysis `step`,
// `epoch` and, aligned with the answer's `layers`, `a` alpha, `t` traps, `n` eigenvalues);
// Heatmap draws it on a canvas, one row per layer (its name elided in the middle, the full name
// on hover) and one column per analysis, with a continuous alpha colour scale on which the band
// edges 2 and 6 are marked, and a hover that tells layer, step, alpha, traps and eigenvalues.
// New columns are drawn without redrawing the others while the column width stays the same.

/** Alpha values at which the bands change (over-trained < 2 <= well-trained <= 6 < under). */
export const BAND_EDGES = [2, 6];
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

/** The analyses of one run, fed with the plugin's slim answers. */
export class AlphaTable {
  constructor() { this.reset(); }

  reset() {
    this.layers = [];        // names, in order of first appearance
    this.index = new Map();  // name -> row
    this.columns = [];       // {step, epoch, a: [], t: [], n: []}, rows as in `layers`
    this.actions = new Map();  // step -> the policies' actions line
  }

  /** Add one answer of the plugin's `records` route. Returns the number of new columns. */
  add(answer) {
    const rows = (answer.layers || []).map((name) => {
      let i = this.index.get(name);
      if (i === undefined) {
        i = this.layers.length;
        this.index.set(name, i);
        this.layers.push(name);
      }
      return i;
    });
    for (const rec of answer.records || []) {
      const col = {step: rec.step, epoch: rec.epoch, a: [], t: [], n: []};
      rows.forEach((row, k) => {
        col.a[row] = rec.a[k];
        col.t[row] = rec.t[k];
        col.n[row] = rec.n[k];
      });
      this.columns.push(col);
    }
    for (const act of answer.actions || []) this.actions.set(act.step, act);
    return (answer.records || []).length;
  }

  /** What a hover shows of one cell, or null outside the table. */
  cell(row, column) {
    const col = this.columns[column];
    if (!col || row < 0 || row >= this.layers.length) return null;
    return {layer: this.layers[row], step: col.step, epoch: col.epoch, alpha: col.a[row],
            traps: col.t[row], evals: col.n[row]};
  }
}

function fmt(value, digits) {
  return value === null || value === undefined || !Number.isFinite(value)
    ? "no fit" : value.toFixed(digits);
}

/** One line of text for a hovered cell. */
export function describeCell(info) {
  const evals = info.evals === null || info.evals === undefined ? "?" : String(info.evals);
  return `${info.layer} \u2014 step ${info.step}` +
    (info.epoch === null || info.epoch === undefined ? "" : ` (epoch ${info.epoch})`) +
    ` \u2014 alpha ${fmt(info.alpha, 3)} \u2014 traps ${info.traps ?? 0}` +
    ` \u2014 ${evals} eigenvalues`;
}

/** The colour legend: a bar over ALPHA_RANGE with 2 and 6 marked. */
export function legend(doc = document) {
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
  label.textContent = "alpha (band edges 2 and 6 marked; grey: no fit)";
  box.append(bar, label);
  return box;
}

/** The heatmap of an AlphaTable inside `container`. */
export class Heatmap {
  constructor(container, {rowHeight = 14, maxCell = 14, labelChars = 34} = {}) {
    const doc = container.ownerDocument;
    this.doc = doc;
    this.rowHeight = rowHeight;
    this.maxCell = maxCell;
    this.labelChars = labelChars;
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
    this.scroll.append(this.canvas);
    this.root.append(this.labels, this.scroll);
    this.tip = doc.createElement("div");
    this.tip.className = "ww-tip";
    this.tip.hidden = true;
    container.append(legend(doc), this.root, this.tip);
    this.table = null;
    this.cellWidth = 0;
    this.drawnColumns = 0;
    this.drawnRows = 0;
    this.canvas.addEventListener("mousemove", (e) => this._hover(e));
    this.canvas.addEventListener("mouseleave", () => { this.tip.hidden = true; });
  }

  /** Draw `table` (only the new columns when the layout did not change). */
  draw(table) {
    const fresh = table !== this.table;
    this.table = table;
    const rows = table.layers.length;
    const cols = table.columns.length;
    const avail = Math.max(200, (this.scroll.clientWidth || 800) - 4);
    const width = Math.max(1, Math.min(this.maxCell, Math.floor(avail / Math.max(cols, 1))));
    const relayout = fresh || width !== this.cellWidth || rows !== this.drawnRows ||
      cols < this.drawnColumns;
    if (relayout) {
      this.cellWidth = width;
      // grow in steps so that a live run does not resize the canvas at every analysis
      const room = Math.max(cols, Math.min(Math.floor(avail / width), cols + 64));
      this.canvas.width = Math.max(1, room * width);
      this.canvas.height = Math.max(1, rows * this.rowHeight);
      this._labels(table);
      this.drawnColumns = 0;
      this.drawnRows = rows;
    } else if (cols * width > this.canvas.width) {
      const keep = this.doc.createElement("canvas");  // widen, keeping what is drawn
      keep.width = this.canvas.width;
      keep.height = this.canvas.height;
      keep.getContext("2d").drawImage(this.canvas, 0, 0);
      this.canvas.width = Math.max(cols * width, this.canvas.width * 2);
      this.canvas.getContext("2d").drawImage(keep, 0, 0);
    }
    const ctx = this.canvas.getContext("2d");
    const h = this.rowHeight;
    for (let c = this.drawnColumns; c < cols; c++) {
      const col = table.columns[c];
      for (let r = 0; r < rows; r++) {
        const a = col.a[r];
        ctx.fillStyle = a === undefined ? MISSING : alphaColour(a);
        ctx.fillRect(c * width, r * h, width, h - (h > 6 ? 1 : 0));
        if (col.t[r] > 0 && width >= 4) {  // traps: a dark corner mark
          ctx.fillStyle = "#000";
          ctx.fillRect(c * width + width - 3, r * h, 3, 3);
        }
      }
    }
    this.drawnColumns = cols;
    this.canvas.dataset.columns = String(cols);
    this.canvas.dataset.cellWidth = String(width);
    this.canvas.dataset.rowHeight = String(h);
    this.canvas.dataset.rows = String(rows);
    this.canvas.dataset.lastStep = cols ? String(table.columns[cols - 1].step) : "";
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
  }

  /** The cell under canvas coordinates (x, y), or null. */
  cellAt(x, y) {
    if (!this.table || !this.cellWidth) return null;
    return this.table.cell(Math.floor(y / this.rowHeight), Math.floor(x / this.cellWidth));
  }

  _hover(event) {
    const rect = this.canvas.getBoundingClientRect();
    const info = this.cellAt(event.clientX - rect.left, event.clientY - rect.top);
    if (!info) {
      this.tip.hidden = true;
      return;
    }
    this.tip.textContent = describeCell(info);
    this.tip.hidden = false;
    this.tip.style.left = `${event.clientX + 12}px`;
    this.tip.style.top = `${event.clientY + 12}px`;
  }
}
