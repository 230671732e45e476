// Small drawing helpers shared by the SVG views (flow, ESD, timeline). Every text is set with
// textContent: names are untrusted data and never become markup.

export const SVG_NS = "http://www.w3.org/2000/svg";

/** A new SVG element `tag` with attributes `attrs` (values set as strings, not parsed). */
export function svgEl(doc, tag, attrs = {}, text = null) {
  const el = doc.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== null && v !== undefined) el.setAttribute(k, String(v));
  }
  if (text !== null) el.textContent = String(text);
  return el;
}

/** A <title> child (the hover text of an SVG element). */
export function titled(el, text) {
  el.append(svgEl(el.ownerDocument, "title", {}, text));
  return el;
}

/** The linear map from [d0, d1] onto [r0, r1]. */
export function scale(d0, d1, r0, r1) {
  const k = d1 === d0 ? 0 : (r1 - r0) / (d1 - d0);
  const f = (v) => r0 + (v - d0) * k;
  f.invert = (p) => (k === 0 ? d0 : d0 + (p - r0) / k);
  return f;
}

/** About `count` round tick values covering [lo, hi]. */
export function ticks(lo, hi, count = 6) {
  if (!(hi > lo)) return Number.isFinite(lo) ? [lo] : [];
  const raw = (hi - lo) / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || 10 * mag;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
    out.push(Math.abs(v) < step * 1e-9 ? 0 : Number(v.toPrecision(12)));
  }
  return out;
}

/** [lo, hi] widened by `pad` of its span (a span of 0 gets +-0.5). */
export function padded(lo, hi, pad = 0.06) {
  if (!(hi > lo)) return [lo - 0.5, hi + 0.5];
  const d = (hi - lo) * pad;
  return [lo - d, hi + d];
}

/** Tick labels of a number: short, no float noise. */
export function tickText(v) {
  if (Number.isInteger(v)) return String(v);
  return String(Number(v.toPrecision(4)));
}

/** The width a view has to draw in (its container's, or `fallback` while it is not laid out). */
export function widthOf(el, fallback = 900) {
  const w = el.clientWidth || (el.getBoundingClientRect ? el.getBoundingClientRect().width : 0);
  return Math.max(360, Math.floor(w || fallback));
}

/** A distinct colour per layer (golden-angle hues; neighbours differ strongly). */
export function layerColour(i) {
  const hue = (i * 137.508) % 360;
  const light = [42, 55, 34][i % 3];
  return `hsl(${hue.toFixed(1)},70%,${light}%)`;
}
