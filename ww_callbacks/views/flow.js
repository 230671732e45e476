// The correlation flow of a run (a view of the shared AlphaTable, ./table.js): alpha of every
// layer against its depth (the layers' order) at one analysis, with a step slider that works for
// thousands of analyses (arrow keys, PageUp/PageDown, Home/End on the slider; a step box).
//
//   const flow = new FlowView(container, table, {onStep: (step) => ...});
//   flow.update();             // after the table gained analyses (a slider at the last analysis
//                              // follows the new ones)
//   flow.setStep(step);        // show the analysis nearest to `step`
//   flow.selectLayer(name);    // ring that layer's point
//
// Drawn in SVG: band lines at 2 and 6, points coloured on the heatmap's scale (hollow: fit on
// fewer than table.minEvals eigenvalues; a red ring: traps), the first analysis as a faint line,
// layer names on the x axis (elided in the middle; the full name in each label's title).
// Each point carries data-layer, data-alpha and a title. Reads of the table: layers, columns[].
// {step, epoch, a, t, n}, alphaLo/alphaHi, minEvals, columnOfStep().

import {alphaColour, elideMiddle} from "./heatmap.js";
import {BAND_EDGES, fmtAlpha, isFit} from "./table.js";
import {padded, scale, svgEl, tickText, ticks, titled, widthOf} from "./svg.js";

const TRAP = "#CC79A7";

export class FlowView {
  constructor(container, table, {height = 340, onStep = null, labelChars = 26} = {}) {
    const doc = container.ownerDocument;
    this.doc = doc;
    this.table = table;
    this.height = height;
    this.onStep = onStep;
    this.labelChars = labelChars;
    this.column = -1;
    this.follow = true;  // at the last analysis: stay at the last as new ones arrive
    this.layer = null;
    this.root = doc.createElement("div");
    this.root.className = "ww-flow";
    const bar = doc.createElement("div");
    bar.className = "ww-controls";
    const label = doc.createElement("label");
    label.textContent = "analysis ";
    this.slider = doc.createElement("input");
    this.slider.type = "range";
    this.slider.className = "ww-flow-slider";
    this.slider.min = "0";
    this.slider.max = "0";
    this.slider.step = "1";
    this.slider.value = "0";
    this.slider.setAttribute("aria-label", "analysis (arrow keys, PageUp/PageDown, Home/End)");
    label.append(this.slider);
    const boxLabel = doc.createElement("label");
    boxLabel.textContent = "step ";
    this.box = doc.createElement("input");
    this.box.type = "number";
    this.box.className = "ww-flow-stepbox";
    this.box.setAttribute("aria-label", "step");
    boxLabel.append(this.box);
    this.info = doc.createElement("span");
    this.info.className = "ww-flow-info";
    bar.append(label, boxLabel, this.info);
    this.svg = svgEl(doc, "svg", {class: "ww-flow-svg", role: "img"});
    this.root.append(bar, this.svg);
    container.append(this.root);
    this.slider.addEventListener("input", () => this._toColumn(Number(this.slider.value), true));
    const fromBox = () => {
      if (this.box.value !== "" && Number.isFinite(Number(this.box.value))) {
        this.setStep(Number(this.box.value), true);
      }
    };
    this.box.addEventListener("change", fromBox);
    this.box.addEventListener("keydown", (e) => { if (e.key === "Enter") fromBox(); });
    this.update();
  }

  /** The step shown (null for an empty table). */
  get step() {
    const col = this.table.columns[this.column];
    return col ? col.step : null;
  }

  /** Take in what the table gained. */
  update() {
    const n = this.table.columns.length;
    this.slider.max = String(Math.max(0, n - 1));
    this.slider.disabled = n === 0;
    let column = this.column;
    if (this.follow || column < 0 || column >= n) column = n - 1;
    this._toColumn(column, false);
  }

  /** Show the analysis nearest to `step`. */
  setStep(step, fromUser = false) {
    this._toColumn(this.table.columnOfStep(step), fromUser);
  }

  /** Ring the point of layer `name`. */
  selectLayer(name) {
    this.layer = name;
    this.draw();
  }

  _toColumn(column, fromUser) {
    const n = this.table.columns.length;
    const c = Math.max(Math.min(column, n - 1), n ? 0 : -1);
    const changed = c !== this.column;
    this.column = c;
    this.follow = c === n - 1;
    this.slider.value = String(Math.max(c, 0));
    this.draw();
    if (fromUser && changed && this.onStep && this.step !== null) this.onStep(this.step);
  }

  /** Draw the analysis of the current column. */
  draw() {
    const doc = this.doc;
    const t = this.table;
    const svg = this.svg;
    svg.textContent = "";
    const col = t.columns[this.column];
    const width = widthOf(this.root);
    const rows = t.layers.length;
    const longest = Math.min(this.labelChars, Math.max(4, ...t.layers.map((s) => s.length)));
    const m = {left: 48, right: 16, top: 14, bottom: Math.min(170, 18 + longest * 5.6)};
    const height = this.height + m.bottom;
    svg.setAttribute("width", String(width));
    svg.setAttribute("height", String(height));
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    if (!col) {
      this.info.textContent = "no analysis yet";
      svg.dataset.step = "";
      return;
    }
    if (doc.activeElement !== this.box) this.box.value = String(col.step);
    this.info.textContent = `analysis ${this.column + 1} of ${t.columns.length}, step ` +
      `${col.step}` + (col.epoch === null || col.epoch === undefined ? "" : `, epoch ${col.epoch}`);
    svg.dataset.step = String(col.step);
    svg.dataset.column = String(this.column);
    const lo = Math.min(isFinite(t.alphaLo) ? t.alphaLo : 2, BAND_EDGES[0] - 0.5);
    const hi = Math.max(isFinite(t.alphaHi) ? t.alphaHi : 6, BAND_EDGES[1] + 0.5);
    const [y0, y1] = padded(lo, hi, 0.04);
    const plotBottom = this.height - 4;
    const x = scale(-0.5, Math.max(rows, 1) - 0.5, m.left, width - m.right);
    const y = scale(y0, y1, plotBottom, m.top);
    svg.dataset.ylo = String(y0);
    svg.dataset.yhi = String(y1);
    const g = (cls) => svg.appendChild(svgEl(doc, "g", {class: cls}));
    // bands: shaded outside 2-6, lines at 2 and 6
    const bands = g("ww-flow-bands");
    bands.append(svgEl(doc, "rect", {x: m.left, y: y(BAND_EDGES[0]), width: width - m.left -
      m.right, height: Math.max(0, plotBottom - y(BAND_EDGES[0])), fill: "#fbe3d6"}));
    bands.append(svgEl(doc, "rect", {x: m.left, y: m.top, width: width - m.left - m.right,
                                     height: Math.max(0, y(BAND_EDGES[1]) - m.top),
                                     fill: "#dde9f5"}));
    for (const edge of BAND_EDGES) {
      bands.append(svgEl(doc, "line", {class: "ww-band-line", x1: m.left, x2: width - m.right,
                                       y1: y(edge), y2: y(edge), "data-alpha": edge}));
    }
    // y axis
    const axis = g("ww-axis");
    for (const v of ticks(y0, y1, 6)) {
      axis.append(svgEl(doc, "line", {x1: m.left - 4, x2: m.left, y1: y(v), y2: y(v)}));
      axis.append(svgEl(doc, "text", {x: m.left - 6, y: y(v) + 4, "text-anchor": "end"},
                        tickText(v)));
    }
    axis.append(svgEl(doc, "text", {x: 12, y: (m.top + plotBottom) / 2, "text-anchor": "middle",
                                    transform: `rotate(-90 12 ${(m.top + plotBottom) / 2})`},
                      "alpha"));
    axis.append(svgEl(doc, "line", {x1: m.left, x2: m.left, y1: m.top, y2: plotBottom}));
    axis.append(svgEl(doc, "line", {x1: m.left, x2: width - m.right, y1: plotBottom,
                                    y2: plotBottom}));
    // layer names on the x axis: every one that fits (13 px apart)
    const names = g("ww-flow-names");
    const every = Math.max(1, Math.ceil(13 / Math.max(1e-9, x(1) - x(0))));
    for (let r = 0; r < rows; r += every) {
      const px = x(r);
      const text = svgEl(doc, "text", {class: "ww-flow-name", x: px, y: plotBottom + 10,
                                       "text-anchor": "end", "data-layer": t.layers[r],
                                       transform: `rotate(-60 ${px} ${plotBottom + 10})`},
                         elideMiddle(t.layers[r], this.labelChars));
      names.append(titled(text, t.layers[r]));
    }
    // the first analysis, faint
    const first = t.columns[0];
    if (first !== col) {
      svg.append(svgEl(doc, "path", {class: "ww-flow-first", d: path(first.a, x, y)}));
    }
    svg.append(svgEl(doc, "path", {class: "ww-flow-line", d: path(col.a, x, y)}));
    const points = g("ww-flow-points");
    let drawn = 0;
    for (let r = 0; r < rows; r++) {
      const a = col.a[r];
      if (!isFit(a)) continue;
      const low = t.lowEvidence(col.n[r]);
      const traps = col.t[r] || 0;
      const px = x(r);
      const py = y(a);
      if (traps > 0) {
        points.append(svgEl(doc, "circle", {cx: px, cy: py, r: 7, fill: "none", stroke: TRAP,
                                            "stroke-width": 2}));
      }
      const dot = svgEl(doc, "circle", {
        class: "ww-flow-point" + (low ? " ww-low" : "") +
          (t.layers[r] === this.layer ? " ww-selected" : ""),
        cx: px, cy: py, r: rows > 200 ? 3 : 4.5,
        fill: low ? "#fff" : alphaColour(a), stroke: "#333",
        "data-layer": t.layers[r], "data-alpha": a, "data-traps": traps});
      points.append(titled(dot, `${t.layers[r]}: alpha ${fmtAlpha(a)}, traps ${traps}, ` +
        `${col.n[r] ?? "?"} eigenvalues${low ? " (few: not trusted)" : ""}`));
      drawn++;
    }
    svg.dataset.points = String(drawn);
  }
}

/** An SVG path through the fitted alphas, broken where a layer has none. */
function path(alphas, x, y) {
  let d = "";
  let pen = false;
  for (let r = 0; r < alphas.length; r++) {
    const a = alphas[r];
    if (!isFit(a)) {
      pen = false;
      continue;
    }
    d += `${pen ? "L" : "M"}${x(r).toFixed(1)},${y(a).toFixed(1)}`;
    pen = true;
  }
  return d || "M0,0";
}
