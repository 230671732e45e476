// The alerts of a run and what its policies did, on one timeline and in one list (a view of the
// shared AlphaTable, ./table.js). Alerts are the table's: a layer changing band (alpha shown
// with as many decimals as it takes to tell the two values apart) and new correlation traps.
// Actions are the history's "actions" lines as changes: a layer's learning-rate scale, trap
// components removed, the stop reason.
//
//   const alerts = new AlertsView(container, table, {onStep: (step, layer) => ...});
//   alerts.update();           // after the table gained analyses or actions lines
//   alerts.setStep(step);      // a cursor on the timeline
//
// The timeline is SVG (one mark per pixel and lane, its title counting what it stands for; a
// click calls onStep(step, layer)); the list (.ww-event items, newest first, at most `max`) is
// DOM text only.
// The root's data-alerts / data-actions count them. Reads of the table: layers, columns[].step,
// alerts, actionEvents(), lowEvidence(), columns[].n.

import {elideMiddle} from "./heatmap.js";
import {formatPair} from "./table.js";
import {scale, svgEl, titled, widthOf} from "./svg.js";

const LANES = [["alert", "alerts", "#D55E00"], ["lr", "lr scale", "#0072B2"],
               ["traps", "traps removed", "#CC79A7"], ["stop", "stop", "#111"]];

/** One line of text for an alert of the table. */
export function describeAlert(table, alert) {
  const name = table.layers[alert.row];
  const evals = table.columns[alert.column]?.n[alert.row];
  const few = table.lowEvidence(evals)
    ? ` (fit on ${evals} eigenvalues: fewer than ${table.minEvals}, not trusted)` : "";
  if (alert.kind === "trap") {
    return `step ${alert.step}: correlation trap${alert.after - alert.before > 1 ? "s" : ""} ` +
      `appeared in ${name} (${alert.before} -> ${alert.after})${few}`;
  }
  const [a, b] = formatPair(alert.before, alert.after);
  const into = alert.after < 2 ? "over-trained" : alert.after > 6 ? "under-trained"
    : "well-trained";
  return `step ${alert.step}: ${name} crossed into ${into} (alpha ${a} -> ${b})${few}`;
}

/** One line of text for an action event of the table. */
export function describeAction(event) {
  if (event.kind === "lr") {
    return `step ${event.step}: learning-rate scale of ${event.layer} ` +
      `${fmtScale(event.before)} -> ${fmtScale(event.after)}`;
  }
  if (event.kind === "traps") {
    const k = event.after - event.before;
    return `step ${event.step}: ${k} trap component${k > 1 ? "s" : ""} removed from ` +
      `${event.layer} (${event.after} so far)`;
  }
  return `step ${event.step}: training stopped: ${event.after}`;
}

function fmtScale(v) {
  return Number(v).toPrecision(3);
}

export class AlertsView {
  constructor(container, table, {onStep = null, max = 200} = {}) {
    const doc = container.ownerDocument;
    this.doc = doc;
    this.table = table;
    this.onStep = onStep;
    this.max = max;
    this.step = null;
    this.root = doc.createElement("div");
    this.root.className = "ww-alerts";
    this.svg = svgEl(doc, "svg", {class: "ww-timeline", role: "img"});
    this.summary = doc.createElement("div");
    this.summary.className = "ww-alerts-summary";
    this.list = doc.createElement("ol");
    this.list.className = "ww-events";
    this.root.append(this.svg, this.summary, this.list);
    container.append(this.root);
    this.update();
  }

  /** The newest `max` events, newest first: {step, lane, layer, alert | action}. */
  newest(max = this.max) {
    const t = this.table;
    const alerts = t.alerts.slice(-max).map((a) => ({step: a.step, lane: "alert",
                                                     layer: t.layers[a.row], alert: a}));
    const actions = t.actionEvents().slice(-max).map((e) => ({step: e.step, lane: e.kind,
                                                              layer: e.layer, action: e}));
    return alerts.concat(actions).sort((x, y) => x.step - y.step).slice(-max).reverse();
  }

  update() {
    const t = this.table;
    const actions = t.actionEvents();
    this.root.dataset.alerts = String(t.alerts.length);
    this.root.dataset.actions = String(actions.length);
    const total = t.alerts.length + actions.length;
    this.summary.textContent = `${t.alerts.length} alert(s) (band changes, new traps), ` +
      `${actions.length} policy action(s)` + (total > this.max
      ? `; the newest ${this.max} listed` : "");
    this.list.textContent = "";
    for (const e of this.newest()) {
      const li = this.doc.createElement("li");
      li.className = `ww-event ww-event-${e.lane}`;
      li.dataset.step = String(e.step);
      if (e.layer !== null && e.layer !== undefined) li.dataset.layer = e.layer;
      li.textContent = e.alert ? describeAlert(t, e.alert) : describeAction(e.action);
      li.addEventListener("click", () => { if (this.onStep) this.onStep(e.step, e.layer); });
      this.list.append(li);
    }
    this._timeline(actions);
  }

  /** A cursor on the timeline at `step`. */
  setStep(step) {
    this.step = step;
    this._cursor();
  }

  _timeline(actions) {
    const doc = this.doc;
    const t = this.table;
    const svg = this.svg;
    svg.textContent = "";
    const width = widthOf(this.root);
    const laneH = 16;
    const m = {left: 96, right: 12, top: 6, bottom: 22};
    const height = m.top + LANES.length * laneH + m.bottom;
    svg.setAttribute("width", String(width));
    svg.setAttribute("height", String(height));
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    this.cursorLine = null;
    const cols = t.columns;
    const ends = [cols.length ? cols[0].step : Infinity, cols.length ? cols[cols.length - 1].step
      : -Infinity];
    for (const e of actions) {
      ends[0] = Math.min(ends[0], e.step);
      ends[1] = Math.max(ends[1], e.step);
    }
    if (!(ends[1] >= ends[0])) {
      this.x = null;
      return;
    }
    const [s0, s1] = ends;
    const x = scale(s0, s1 === s0 ? s0 + 1 : s1, m.left + 4, width - m.right - 4);
    this.x = x;
    // one mark per pixel and lane: {first, last, count, names}
    const buckets = new Map(LANES.map(([lane]) => [lane, new Map()]));
    const put = (lane, step, layer) => {
      const px = Math.round(x(step));
      const lanes = buckets.get(lane);
      let b = lanes.get(px);
      if (!b) lanes.set(px, b = {first: step, last: step, count: 0, names: new Set()});
      b.first = Math.min(b.first, step);
      b.last = Math.max(b.last, step);
      b.count++;
      if (layer !== null && layer !== undefined && b.names.size < 6) b.names.add(layer);
    };
    for (const a of t.alerts) put("alert", a.step, t.layers[a.row]);
    for (const e of actions) put(e.kind, e.step, e.layer);
    LANES.forEach(([lane, label, colour], i) => {
      const y = m.top + i * laneH;
      svg.append(svgEl(doc, "text", {x: m.left - 6, y: y + 12, "text-anchor": "end",
                                     fill: colour}, label));
      svg.append(svgEl(doc, "line", {x1: m.left, x2: width - m.right, y1: y + laneH / 2,
                                     y2: y + laneH / 2, stroke: "#e3e3e3"}));
      for (const [px, b] of buckets.get(lane)) {
        const names = [...b.names];
        const text = `step ${b.first}${b.last !== b.first ? `-${b.last}` : ""}: ${b.count} ` +
          `${label}` + (names.length ? ` (${names.slice(0, 5).map((n) => elideMiddle(n, 40))
            .join(", ")}${names.length > 5 ? ", ..." : ""})` : "");
        const mark = svgEl(doc, "rect", {class: `ww-mark ww-mark-${lane}`, x: px - 1.5,
                                         y: y + 2, width: 3, height: laneH - 4, fill: colour,
                                         "data-step": b.first, "data-count": b.count});
        mark.addEventListener("click", () => {
          if (this.onStep) this.onStep(b.first, names.length === 1 ? names[0] : null);
        });
        svg.append(titled(mark, text));
      }
    });
    const axisY = m.top + LANES.length * laneH + 14;
    svg.append(svgEl(doc, "text", {x: m.left, y: axisY, "text-anchor": "start"},
                     `step ${s0}`));
    svg.append(svgEl(doc, "text", {x: width - m.right, y: axisY, "text-anchor": "end"},
                     `step ${s1}`));
    this.cursorLine = svg.appendChild(svgEl(doc, "line", {class: "ww-timeline-cursor",
                                                          y1: m.top, y2: axisY - 10}));
    this._cursor();
  }

  _cursor() {
    if (!this.cursorLine) return;
    const show = this.step !== null && this.x;
    this.cursorLine.setAttribute("visibility", show ? "visible" : "hidden");
    if (show) {
      this.cursorLine.setAttribute("x1", String(this.x(this.step)));
      this.cursorLine.setAttribute("x2", String(this.x(this.step)));
    }
  }
}
