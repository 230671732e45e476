// Alpha of each layer over the steps (a view of the shared AlphaTable, ./table.js): one colour
// per layer with a legend, a name filter, lines at alpha 2 and 6, the y range fitted to the
// drawn data (no clipping of the first analyses, no 0-11 range flattening 2-3).
//
//   const lines = new LinesView(container, table, {onSelect: (name) => ...});
//   lines.update();            // after the table gained analyses
//   lines.setFilter(text);     // layers whose name contains `text` (case-insensitive)
//   lines.selectLayer(name);   // draw that layer's line on top, the others faded
//   lines.setStep(step);       // a cursor at `step`
//
// Lines are drawn on a canvas (thousands of analyses x hundreds of layers); the legend is DOM
// (.ww-lines-item, the name as textContent, hidden when filtered out; a click selects the
// layer). The canvas' data-drawn says how many layers are drawn, data-ylo/data-yhi its range,
// data-selected the layer on top (none while the selected one is filtered out).
// Reads of the table: layers, columns[].{step, a}, columnOfStep().

import {elideMiddle} from "./heatmap.js";
import {BAND_EDGES, fmtAlpha, isFit} from "./table.js";
import {layerColour, padded, scale, tickText, ticks, widthOf} from "./svg.js";

export class LinesView {
  constructor(container, table, {height = 320, onSelect = null} = {}) {
    const doc = container.ownerDocument;
    this.doc = doc;
    this.table = table;
    this.height = height;
    this.onSelect = onSelect;
    this.filter = "";
    this.layer = null;
    this.step = null;
    this.items = [];  // legend entries, rows as in table.layers
    this.root = doc.createElement("div");
    this.root.className = "ww-lines";
    const bar = doc.createElement("div");
    bar.className = "ww-controls";
    this.input = doc.createElement("input");
    this.input.type = "search";
    this.input.className = "ww-lines-filter";
    this.input.placeholder = "filter layers by name";
    this.input.setAttribute("aria-label", "filter layers by name");
    this.count = doc.createElement("span");
    this.count.className = "ww-lines-count";
    bar.append(this.input, this.count);
    const body = doc.createElement("div");
    body.className = "ww-lines-body";
    const plot = doc.createElement("div");
    plot.className = "ww-lines-plot";
    this.canvas = doc.createElement("canvas");
    this.canvas.className = "ww-lines-canvas";
    this.cursor = doc.createElement("div");
    this.cursor.className = "ww-lines-cursor";
    this.cursor.hidden = true;
    plot.append(this.canvas, this.cursor);
    this.legend = doc.createElement("div");
    this.legend.className = "ww-lines-legend";
    body.append(plot, this.legend);
    this.root.append(bar, body);
    this.tip = doc.createElement("div");
    this.tip.className = "ww-tip ww-lines-tip";
    this.tip.hidden = true;
    container.append(this.root, this.tip);
    this.input.addEventListener("input", () => this.setFilter(this.input.value));
    this.canvas.addEventListener("mousemove", (e) => this._hover(e));
    this.canvas.addEventListener("mouseleave", () => { this.tip.hidden = true; });
    this.update();
  }

  /** Take in what the table gained (new legend entries, lines redrawn). */
  update() {
    const t = this.table;
    if (this.items.length > t.layers.length) {  // the table was reset
      this.legend.textContent = "";
      this.items = [];
    }
    for (let r = this.items.length; r < t.layers.length; r++) {
      const name = t.layers[r];
      const item = this.doc.createElement("div");
      item.className = "ww-lines-item";
      item.dataset.layer = name;
      item.title = name;
      const swatch = this.doc.createElement("span");
      swatch.className = "ww-swatch";
      swatch.style.background = layerColour(r);
      const label = this.doc.createElement("span");
      label.textContent = elideMiddle(name, 40);
      item.append(swatch, label);
      item.addEventListener("click", () => {
        this.selectLayer(this.layer === name ? null : name);
        if (this.onSelect && this.layer !== null) this.onSelect(name);
      });
      this.items.push(item);
      this.legend.append(item);
    }
    this._applyFilter();
    this.draw();
  }

  /** Show only the layers whose name contains `text` (case-insensitive; "" for all). */
  setFilter(text) {
    this.filter = String(text || "");
    if (this.input.value !== this.filter) this.input.value = this.filter;
    this._applyFilter();
    this.draw();
  }

  /** Put layer `name`'s line on top (the others faded); null for none. */
  selectLayer(name) {
    this.layer = name;
    for (const item of this.items) {
      item.classList.toggle("ww-selected", item.dataset.layer === name);
    }
    this.draw();
  }

  /** A cursor at the analysis nearest to `step`. */
  setStep(step) {
    this.step = step;
    this._cursor();
  }

  _applyFilter() {
    const needle = this.filter.toLowerCase();
    this.shown = [];
    this.items.forEach((item, r) => {
      const keep = !needle || this.table.layers[r].toLowerCase().includes(needle);
      item.hidden = !keep;
      if (keep) this.shown.push(r);
    });
    this.count.textContent = `${this.shown.length} of ${this.table.layers.length} layers`;
    this.root.dataset.shown = String(this.shown.length);
  }

  /** Redraw the lines of the layers shown. */
  draw() {
    const t = this.table;
    const cols = t.columns;
    const width = widthOf(this.root) - 260;  // the legend beside
    const canvas = this.canvas;
    canvas.width = Math.max(300, width);
    canvas.height = this.height;
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const m = {left: 48, right: 12, top: 10, bottom: 34};
    let lo = Infinity;
    let hi = -Infinity;
    for (const r of this.shown) {
      for (const col of cols) {
        const a = col.a[r];
        if (isFit(a)) {
          if (a < lo) lo = a;
          if (a > hi) hi = a;
        }
      }
    }
    const data = canvas.dataset;
    if (!Number.isFinite(lo) || !cols.length) {
      data.drawn = "0";
      data.ylo = data.yhi = "";
      ctx.fillStyle = "#666";
      ctx.font = "13px sans-serif";
      ctx.fillText(cols.length ? "no fitted alpha among the layers shown" : "no analysis yet",
                   m.left + 10, 40);
      this.xScale = null;
      this._cursor();
      return;
    }
    const [y0, y1] = padded(lo, hi, 0.06);
    const s0 = cols[0].step;
    const s1 = cols[cols.length - 1].step;
    const x = scale(s0, s1 === s0 ? s0 + 1 : s1, m.left, canvas.width - m.right);
    const y = scale(y0, y1, canvas.height - m.bottom, m.top);
    this.xScale = x;
    this.yScale = y;
    data.ylo = String(y0);
    data.yhi = String(y1);
    // axes and the band lines
    ctx.font = "11px sans-serif";
    ctx.fillStyle = "#333";
    ctx.strokeStyle = "#999";
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (const v of ticks(y0, y1, 6)) {
      ctx.fillText(tickText(v), m.left - 6, y(v));
      ctx.fillRect(m.left - 4, Math.round(y(v)), 4, 1);
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (const v of ticks(s0, s1, 8)) {
      if (!Number.isInteger(v)) continue;
      ctx.fillText(String(v), x(v), canvas.height - m.bottom + 6);
      ctx.fillRect(Math.round(x(v)), canvas.height - m.bottom, 1, 4);
    }
    ctx.fillText("step", (m.left + canvas.width) / 2, canvas.height - 14);
    ctx.fillRect(m.left, m.top, 1, canvas.height - m.top - m.bottom);
    ctx.fillRect(m.left, canvas.height - m.bottom, canvas.width - m.left - m.right, 1);
    const bands = [];
    for (const edge of BAND_EDGES) {
      if (edge < y0 || edge > y1) continue;
      ctx.strokeStyle = "#555";
      ctx.setLineDash([5, 4]);
      ctx.beginPath();
      ctx.moveTo(m.left, y(edge));
      ctx.lineTo(canvas.width - m.right, y(edge));
      ctx.stroke();
      ctx.setLineDash([]);
      ctx.textAlign = "left";
      ctx.textBaseline = "bottom";
      ctx.fillText(`alpha ${edge}`, m.left + 4, y(edge) - 2);
      bands.push(edge);
    }
    data.bands = bands.join(" ");
    // the lines: every analysis, or about one per pixel when there are more (and the last)
    const stride = Math.max(1, Math.ceil(cols.length / (canvas.width - m.left - m.right)));
    let selected = this.layer === null ? -1 : (t.index.get(this.layer) ?? -1);
    if (!this.shown.includes(selected)) selected = -1;  // filtered out: nothing faded
    const order = this.shown.filter((r) => r !== selected);
    if (selected >= 0) order.push(selected);
    const picks = [];
    for (let c = 0; c < cols.length; c += stride) picks.push(c);
    if (picks[picks.length - 1] !== cols.length - 1) picks.push(cols.length - 1);
    // width 1: Skia's hairline path (software raster, no GPU); 1.4-px lines with round joins
    // took 13.8 s to raster for 500 layers x 600 analyses of random alphas, hairlines 0.2 s
    for (const r of order) {
      ctx.strokeStyle = layerColour(r);
      ctx.globalAlpha = selected < 0 || r === selected ? 1 : 0.25;
      ctx.lineWidth = r === selected ? 2.5 : 1;
      ctx.beginPath();
      let pen = false;
      for (const c of picks) {
        const a = cols[c].a[r];
        if (!isFit(a)) {
          pen = false;
          continue;
        }
        if (pen) ctx.lineTo(x(cols[c].step), y(a));
        else ctx.moveTo(x(cols[c].step), y(a));
        pen = true;
      }
      if (cols.length === 1 && isFit(cols[0].a[r])) {  // one analysis: a dot
        ctx.arc(x(cols[0].step), y(cols[0].a[r]), 2, 0, 2 * Math.PI);
      }
      ctx.stroke();
    }
    ctx.globalAlpha = 1;
    data.drawn = String(this.shown.length);
    data.selected = selected >= 0 ? t.layers[selected] : "";
    data.layers = this.shown.length <= 50 ? this.shown.map((r) => t.layers[r]).join("\n") : "";
    this._cursor();
  }

  _cursor() {
    const t = this.table;
    if (this.step === null || !this.xScale || !t.columns.length) {
      this.cursor.hidden = true;
      return;
    }
    const c = t.columnOfStep(this.step);
    this.cursor.hidden = false;
    this.cursor.style.left = `${this.xScale(t.columns[c].step)}px`;
    this.cursor.style.height = `${this.height - 44}px`;
    this.cursor.style.top = "10px";
  }

  _hover(event) {
    const t = this.table;
    if (!this.xScale || !t.columns.length) return;
    const rect = this.canvas.getBoundingClientRect();
    const px = event.clientX - rect.left;
    const py = event.clientY - rect.top;
    const c = t.columnOfStep(this.xScale.invert(px));
    const col = t.columns[c];
    let best = -1;
    let dist = 12;  // pixels
    for (const r of this.shown) {
      const a = col.a[r];
      if (isFit(a) && Math.abs(this.yScale(a) - py) < dist) {
        dist = Math.abs(this.yScale(a) - py);
        best = r;
      }
    }
    if (best < 0) {
      this.tip.hidden = true;
      return;
    }
    this.tip.textContent = `${t.layers[best]} \u2014 step ${col.step} \u2014 alpha ` +
      fmtAlpha(col.a[best]);
    this.tip.hidden = false;
    this.tip.style.left = `${event.clientX + 12}px`;
    this.tip.style.top = `${event.clientY + 12}px`;
  }
}
