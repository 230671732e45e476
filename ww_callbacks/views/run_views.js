// Every view of one run, linked, over one AlphaTable (./table.js): the page body of the
// TensorBoard tab and of the report.
//
//   const views = new RunViews(container, table);
//   views.update();            // after table.add(...) / table.addSpectra(...)
//   views.setStep(step);       // every view to the analysis nearest to `step`
//   views.selectLayer(name);   // every view to layer `name`
//
// With {defer: true} only the heatmap is built at once and the other views in the next task
// (`views.ready` resolves then; until then `views.flow` etc. are undefined).
// A click on a heatmap cell shows that layer and step in the ESD view, moves the flow (and the
// cursors of the lines and the timeline) to that step and puts the layer's line on top; moving
// the flow's slider moves the others; a click on a legend entry or an event selects its layer
// (and step). Sections: heatmap, correlation flow, alpha per layer over steps, ESD, alerts and
// policy actions (each a <section class="ww-section ww-section-NAME"> with an <h3>).

import {AlertsView} from "./alerts.js";
import {EsdView} from "./esd.js";
import {FlowView} from "./flow.js";
import {Heatmap} from "./heatmap.js";
import {LinesView} from "./lines.js";

export class RunViews {
  constructor(container, table, opts = {}) {
    const doc = container.ownerDocument;
    this.table = table;
    this.root = doc.createElement("div");
    this.root.className = "ww-run-views";
    container.append(this.root);
    const section = (name, title) => {
      const box = doc.createElement("section");
      box.className = `ww-section ww-section-${name}`;
      const h = doc.createElement("h3");
      h.textContent = title;
      box.append(h);
      this.root.append(box);
      return box;
    };
    this.heatmap = new Heatmap(section("heatmap", "Alpha per layer and analysis"), table, {
      ...(opts.heatmap || {}),
      onSelect: (cell) => { this.setStep(cell.step); this.selectLayer(cell.layer); },
    });
    this.views = [this.heatmap];
    const boxes = [section("flow", "Correlation flow: alpha against layer depth"),
                   section("lines", "Alpha per layer over the steps"),
                   section("esd", "Eigenvalue spectrum (ESD) of a layer"),
                   section("alerts", "Alerts and policy actions")];
    const rest = () => {
      this.flow = new FlowView(boxes[0], table, {...(opts.flow || {}),
                                                 onStep: (step) => this._step(step)});
      this.lines = new LinesView(boxes[1], table, {...(opts.lines || {}),
                                                   onSelect: (name) => this.selectLayer(name)});
      this.esd = new EsdView(boxes[2], table, opts.esd || {});
      this.alerts = new AlertsView(boxes[3], table, {
        ...(opts.alerts || {}),
        onStep: (step, layer) => { this.setStep(step); if (layer) this.selectLayer(layer); },
      });
      this.views.push(this.flow, this.lines, this.esd, this.alerts);
      if (this.pending.step !== null) this.setStep(this.pending.step);
      if (this.pending.layer !== null) this.selectLayer(this.pending.layer);
    };
    this.pending = {step: null, layer: null};
    // a narrower or wider window: every view drawn again at its new width (once it settles)
    let resizing = null;
    doc.defaultView.addEventListener("resize", () => {
      if (!this.root.isConnected) return;  // another run's views replaced these
      clearTimeout(resizing);
      resizing = setTimeout(() => this.update(), 200);
    });
    // `defer`: the heatmap is painted first, the other views in the next task (the TensorBoard
    // tab's first paint: 500 layers, building the four others took ~0.3-0.5 s at load 7)
    this.ready = opts.defer ? new Promise((resolve) => {
      let done = false;
      const once = () => {
        if (done) return;
        done = true;
        rest();
        resolve(this);
      };
      // after the next frame is painted; a hidden page gets no frame: at the latest in 0.3 s
      const win = doc.defaultView;
      win.requestAnimationFrame(() => win.setTimeout(once, 0));
      win.setTimeout(once, 300);
    }) : Promise.resolve(this);
    if (!opts.defer) rest();
  }

  /** Redraw after the table changed (each view draws what is new). */
  update() {
    for (const view of this.views) view.update();
    if (this.flow && this.flow.follow && this.flow.step !== null) this._step(this.flow.step);
  }

  /** Every view to the analysis nearest to `step` (the ESD view: the stored ESD nearest). */
  setStep(step) {
    this.pending.step = step;
    if (this.flow) this.flow.setStep(step);
    this._step(step);
  }

  _step(step) {  // the flow is there already
    this.heatmap.setStep(step);
    for (const view of [this.lines, this.esd, this.alerts]) if (view) view.setStep(step);
  }

  /** Every view to layer `name`. */
  selectLayer(name) {
    this.pending.layer = name;
    for (const view of [this.heatmap, this.flow, this.lines, this.esd]) {
      if (view) view.selectLayer(name);
    }
  }
}
