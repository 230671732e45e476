// The ESD of one layer at one step (a view of the shared AlphaTable, ./table.js), from the
// compact ESDs a run stores (ww_callbacks/esd.py: 64 log10 bins, the fit's alpha, xmin, xmax,
// num_pl_spikes; where traps were counted the randomized ESD's bins, its MP bulk edge and the
// trap spikes). Log-log: the eigenvalue density per bin, the fitted power law between xmin and
// xmax, xmin and xmax marked, the randomized ESD, the MP bulk edge and each trap spike.
//
//   const esd = new EsdView(container, table);
//   esd.update();              // after the table gained analyses or stored ESDs
//   esd.selectLayer(name);     // the layer shown (also chosen with the view's own select)
//   new EsdView(container, table, {onLayer(name), pending(name)})
//                              // onLayer: told each time the layer shown changes (the tab then
//                              // fetches that layer's stored ESDs); pending: whether they are
//                              // still on their way (then "loading" is said, not "none stored")
//   esd.setStep(step);         // the stored ESD nearest to `step` is shown
//
// The fit line is `line.ww-esd-fit`; its data-lx1/ly1/lx2/ly2 are its ends in log10 units
// (lx1 = log10 xmin, lx2 = log10 xmax, slope -alpha) and the SVG's data-xlo/xhi/ylo/yhi and
// data-left/right/top/bottom map them to pixels. A fit on fewer than table.minEvals eigenvalues
// says so ("fit on N eigenvalues (few)"). Reads of the table: layers, spectraSteps, esd(),
// spectraCount, minEvals, columns (the step asked for before one is chosen).

import {fmtAlpha, isFit} from "./table.js";
import {padded, scale, svgEl, titled, widthOf} from "./svg.js";

const COLOURS = {esd: "#4a7fb5", rand: "#d62728", fit: "#111", mark: "#555", mp: "#2a9d3a",
                 spike: "#CC79A7"};

function num(v) {
  return typeof v === "number" && Number.isFinite(v) ? v : null;
}

/** Density per log10 bin of `counts` on edges lo..hi (eigenvalues per unit of lambda). */
function densities(counts, lo, hi) {
  const total = counts.reduce((s, c) => s + (c > 0 ? c : 0), 0);
  const k = counts.length;
  return counts.map((c, i) => {
    const e0 = lo + (hi - lo) * i / k;
    const e1 = lo + (hi - lo) * (i + 1) / k;
    return c > 0 && total > 0 ? c / (total * (10 ** e1 - 10 ** e0)) : 0;
  });
}

export class EsdView {
  constructor(container, table, {height = 320, onLayer = null, pending = null} = {}) {
    const doc = container.ownerDocument;
    this.doc = doc;
    this.onLayer = onLayer;
    this.pending = pending;
    this.told = null;
    this.table = table;
    this.height = height;
    this.layer = null;
    this.step = null;
    this.root = doc.createElement("div");
    this.root.className = "ww-esd";
    const bar = doc.createElement("div");
    bar.className = "ww-controls";
    const label = doc.createElement("label");
    label.textContent = "layer ";
    this.select = doc.createElement("select");
    this.select.className = "ww-esd-layer";
    this.select.setAttribute("aria-label", "layer of the ESD");
    label.append(this.select);
    this.info = doc.createElement("span");
    this.info.className = "ww-esd-info";
    bar.append(label, this.info);
    this.svg = svgEl(doc, "svg", {class: "ww-esd-svg", role: "img"});
    this.root.append(bar, this.svg);
    container.append(this.root);
    this.options = 0;
    this.select.addEventListener("change", () => this.selectLayer(this.select.value));
    this.update();
  }

  /** Take in what the table gained (new layers in the select; redraw). */
  update() {
    const t = this.table;
    if (this.options > t.layers.length) {  // the table was reset
      this.select.textContent = "";
      this.options = 0;
    }
    for (; this.options < t.layers.length; this.options++) {
      const option = this.doc.createElement("option");
      option.value = t.layers[this.options];
      option.textContent = t.layers[this.options];
      this.select.append(option);
    }
    if (this.layer === null && t.layers.length) this.layer = t.layers[0];
    if (this.layer !== null) this.select.value = this.layer;
    this._tell();
    this.draw();
  }

  /** Show layer `name`. */
  selectLayer(name) {
    this.layer = name;
    if (this.select.value !== name) this.select.value = name;
    this._tell();
    this.draw();
  }

  _tell() {  // the layer shown changed: onLayer
    if (this.onLayer && this.layer !== null && this.layer !== this.told) {
      this.told = this.layer;
      this.onLayer(this.layer);
    }
  }

  /** Show the stored ESD nearest to `step`. */
  setStep(step) {
    this.step = step;
    this.draw();
  }

  draw() {
    const doc = this.doc;
    const t = this.table;
    const svg = this.svg;
    svg.textContent = "";
    const width = Math.min(widthOf(this.root), 1000);
    const height = this.height;
    svg.setAttribute("width", String(width));
    svg.setAttribute("height", String(height));
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    const cols = t.columns;
    const asked = this.step ?? (cols.length ? cols[cols.length - 1].step
      : t.spectraSteps[t.spectraSteps.length - 1] ?? 0);
    const found = this.layer === null ? null : t.esd(this.layer, asked);
    const data = svg.dataset;
    data.layer = this.layer ?? "";
    data.asked = String(asked);
    if (!found || !Array.isArray(found.esd.counts) || !found.esd.counts.length ||
        num(found.esd.log10_lo) === null || num(found.esd.log10_hi) === null) {
      data.step = "";
      this.info.textContent = found ? `step ${found.step}: no eigenvalue to draw`
        : this.layer !== null && this.pending && this.pending(this.layer)
          ? "loading the stored ESDs of this layer\u2026"
          : `no ESD stored for this layer yet (stored at the first analysis, every few ` +
            `analyses, on a new trap or band change, and at the end)`;
      return;
    }
    const {step, esd} = found;
    data.step = String(step);
    const lo = esd.log10_lo;
    const hi = esd.log10_hi;
    const k = esd.counts.length;
    const dens = densities(esd.counts, lo, hi);
    const rand = Array.isArray(esd.rand_counts) && esd.rand_counts.length === k
      ? densities(esd.rand_counts, lo, hi) : null;
    const alpha = num(esd.alpha);
    const xmin = num(esd.xmin);
    const xmax = num(esd.xmax) ?? (xmin !== null ? 10 ** hi : null);
    const n = num(esd.n);
    const tail = num(esd.num_pl_spikes);
    const total = esd.counts.reduce((s, c) => s + (c > 0 ? c : 0), 0);
    // the fitted power law as a density of the whole ESD: tail fraction x (a-1)/xmin (x/xmin)^-a
    let fit = null;
    if (isFit(alpha) && alpha > 1 && xmin > 0 && xmax > xmin && total > 0) {
      const frac = (tail !== null && tail > 0 ? tail : total) / total;
      const ly1 = Math.log10(frac * (alpha - 1) / xmin);
      fit = {lx1: Math.log10(xmin), lx2: Math.log10(xmax), ly1,
             ly2: ly1 - alpha * (Math.log10(xmax) - Math.log10(xmin))};
    }
    const positive = [...dens, ...(rand || [])].filter((d) => d > 0).map(Math.log10);
    if (!positive.length) {
      data.step = "";
      this.info.textContent = `step ${step}: no eigenvalue to draw`;
      return;
    }
    const yTop = Math.max(...positive, fit ? fit.ly1 : -Infinity);
    let yBottom = Math.min(...positive, fit ? fit.ly2 : Infinity);
    yBottom = Math.max(yBottom, yTop - 10);  // at most 10 decades
    const [ylo, yhi] = padded(yBottom - 0.2, yTop, 0.05);
    const [xlo, xhi] = padded(lo, hi, 0.03);
    const m = {left: 58, right: 16, top: 24, bottom: 40};
    const x = scale(xlo, xhi, m.left, width - m.right);
    const y = scale(ylo, yhi, height - m.bottom, m.top);
    Object.assign(data, {xlo: String(xlo), xhi: String(xhi), ylo: String(ylo), yhi: String(yhi),
                         left: String(m.left), right: String(width - m.right),
                         top: String(m.top), bottom: String(height - m.bottom)});
    const clip = (v) => Math.min(Math.max(v, ylo), yhi);
    // axes: decades
    const axis = svg.appendChild(svgEl(doc, "g", {class: "ww-axis"}));
    axis.append(svgEl(doc, "line", {x1: m.left, x2: width - m.right, y1: height - m.bottom,
                                    y2: height - m.bottom}));
    axis.append(svgEl(doc, "line", {x1: m.left, x2: m.left, y1: m.top, y2: height - m.bottom}));
    for (let d = Math.ceil(xlo); d <= Math.floor(xhi); d++) {
      axis.append(svgEl(doc, "line", {x1: x(d), x2: x(d), y1: height - m.bottom,
                                      y2: height - m.bottom + 4}));
      axis.append(power(doc, x(d), height - m.bottom + 17, d, "middle"));
    }
    const yStep = Math.max(1, Math.ceil((yhi - ylo) / 6));
    for (let d = Math.ceil(ylo); d <= Math.floor(yhi); d += yStep) {
      axis.append(svgEl(doc, "line", {x1: m.left - 4, x2: m.left, y1: y(d), y2: y(d)}));
      axis.append(power(doc, m.left - 6, y(d) + 4, d, "end"));
    }
    axis.append(svgEl(doc, "text", {x: (m.left + width) / 2, y: height - 4,
                                    "text-anchor": "middle"}, "eigenvalue \u03bb (log scale)"));
    axis.append(svgEl(doc, "text", {x: 12, y: (m.top + height - m.bottom) / 2,
                                    "text-anchor": "middle", transform:
                                    `rotate(-90 12 ${(m.top + height - m.bottom) / 2})`},
                      "density"));
    // the ESD's bins, then the randomized ESD as an outline
    const bars = svg.appendChild(svgEl(doc, "g", {class: "ww-esd-bars"}));
    for (let i = 0; i < k; i++) {
      if (!(dens[i] > 0)) continue;
      const x0 = x(lo + (hi - lo) * i / k);
      const x1 = x(lo + (hi - lo) * (i + 1) / k);
      const top = y(clip(Math.log10(dens[i])));
      bars.append(svgEl(doc, "rect", {class: "ww-esd-bar", x: x0, y: top,
                                      width: Math.max(0.5, x1 - x0 - 0.5),
                                      height: Math.max(0, height - m.bottom - top),
                                      fill: COLOURS.esd}));
    }
    if (rand) {
      let d = "";  // a step outline, broken over empty bins
      for (let i = 0; i < k; i++) {
        if (!(rand[i] > 0)) continue;
        const x0 = x(lo + (hi - lo) * i / k);
        const x1 = x(lo + (hi - lo) * (i + 1) / k);
        const py = y(clip(Math.log10(rand[i])));
        d += `${i > 0 && rand[i - 1] > 0 ? "V" : `M${x0.toFixed(1)},`}${py.toFixed(1)}` +
          `H${x1.toFixed(1)}`;
      }
      svg.append(titled(svgEl(doc, "path", {class: "ww-esd-rand", d: d || "M0,0",
                                            stroke: COLOURS.rand, fill: "none",
                                            "stroke-width": 2}), "randomized ESD"));
    }
    const vline = (cls, value, colour, dash, text) => {
      if (!(value > 0)) return;
      const lx = Math.log10(value);
      if (lx < xlo || lx > xhi) return;
      const el = svgEl(doc, "line", {class: cls, x1: x(lx), x2: x(lx), y1: m.top,
                                     y2: height - m.bottom, stroke: colour,
                                     "stroke-dasharray": dash, "data-value": value});
      svg.append(titled(el, text));
    };
    vline("ww-esd-xmin", xmin, COLOURS.mark, "5 3", `xmin = ${xmin}`);
    vline("ww-esd-xmax", xmax, COLOURS.mark, "2 3", `xmax = ${xmax}`);
    const bulk = num(esd.bulk_max);
    vline("ww-esd-mp", bulk, COLOURS.mp, "8 3", `Marchenko-Pastur bulk edge = ${bulk}`);
    for (const spike of Array.isArray(esd.spikes) ? esd.spikes : []) {
      vline("ww-esd-spike", num(spike), COLOURS.spike, null, `trap spike at \u03bb = ${spike}`);
    }
    if (fit) {
      const line = svgEl(doc, "line", {
        class: "ww-esd-fit", x1: x(fit.lx1), y1: y(fit.ly1), x2: x(fit.lx2), y2: y(fit.ly2),
        stroke: COLOURS.fit, "stroke-width": 2.5, "data-alpha": alpha, "data-lx1": fit.lx1,
        "data-ly1": fit.ly1, "data-lx2": fit.lx2, "data-ly2": fit.ly2});
      svg.append(titled(line, `power law fit: alpha ${fmtAlpha(alpha)} between xmin ` +
                               `${xmin} and xmax ${xmax}`));
    }
    // the legend and the caveat
    const notes = [`alpha ${fmtAlpha(alpha)}`];
    if (n !== null) {
      notes.push(`fit on ${n} eigenvalues` + (t.lowEvidence(n) ? ` (few: fewer than ` +
        `${t.minEvals}, not trusted)` : "") + (tail !== null ? `, ${tail} in the tail` : ""));
    }
    if (esd.spikes && esd.spikes.length) notes.push(`${esd.spikes.length} trap spike(s)`);
    const note = svgEl(doc, "text", {class: "ww-esd-note" + (n !== null && t.lowEvidence(n)
      ? " ww-few" : ""), x: m.left + 6, y: 15}, notes.join(" \u2014 "));
    svg.append(note);
    const keys = [["ESD", COLOURS.esd], ["randomized", COLOURS.rand], ["fit", COLOURS.fit],
                  ["xmin/xmax", COLOURS.mark], ["MP edge", COLOURS.mp],
                  ["trap spike", COLOURS.spike]];
    let kx = width - m.right - 6;
    const legendG = svg.appendChild(svgEl(doc, "g", {class: "ww-esd-legend"}));
    for (const [name, colour] of keys.reverse()) {
      const text = svgEl(doc, "text", {x: kx, y: m.top + 14, "text-anchor": "end",
                                       fill: colour}, name);
      legendG.append(text);
      kx -= name.length * 6.5 + 12;
    }
    this.info.textContent = `step ${step}` + (step !== asked ? ` (the stored ESD nearest to ` +
      `step ${asked})` : "") + `; ${t.spectraCount} analyses with stored ESDs`;
  }
}

/** "10" with `exp` as a superscript, at (x, y). */
function power(doc, x, y, exp, anchor) {
  const text = svgEl(doc, "text", {x, y, "text-anchor": anchor});
  text.append(doc.createTextNode("10"));
  text.append(svgEl(doc, "tspan", {dy: -5, "font-size": "80%"}, String(exp)));
  return text;
}
