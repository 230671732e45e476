// Every view of one run, linked, over one AlphaTable (./table.js): the page body of the
// TensorBoard tab and of the report.
//
//   const views = new RunViews(container, table);
//   views.update();            // after table.add(...) / table.addSpectra(...)
//   views.setStep(step);       // every view to the analysis nearest to `step`
//   views.selectLayer(name);   // every view to layer `name`
//
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
    this.flow = new FlowView(section("flow", "Correlation flow: alpha against layer depth"),
                             table, {...(opts.flow || {}), onStep: (step) => this._step(step)});
    this.lines = new LinesView(section("lines", "Alpha per layer over the steps"), table, {
      ...(opts.lines || {}), onSelect: (name) => this.selectLayer(name)});
    this.esd = new EsdView(section("esd", "Eigenvalue spectrum (ESD) of a layer"), table,
                           opts.esd || {});
    this.alerts = new AlertsView(section("alerts", "Alerts and policy actions"), table, {
      ...(opts.alerts || {}),
      onStep: (step, layer) => { this.setStep(step); if (layer) this.selectLayer(layer); },
    });
    this.views = [this.heatmap, this.flow, this.lines, this.esd, this.alerts];
  }

  /** Redraw after the table changed (each view draws what is new). */
  update() {
    for (const view of this.views) view.update();
    if (this.flow.follow && this.flow.step !== null) this._step(this.flow.step);
  }

  /** Every view to the analysis nearest to `step` (the ESD view: the stored ESD nearest). */
  setStep(step) {
    this.flow.setStep(step);
    this._step(step);
  }

  _step(step) {  // the flow is there already
    this.heatmap.setStep(step);
    this.lines.setStep(step);
    this.esd.setStep(step);
    this.alerts.setStep(step);
  }

  /** Every view to layer `name`. */
  selectLayer(name) {
    this.heatmap.selectLayer(name);
    this.flow.selectLayer(name);
    this.lines.selectLayer(name);
    this.esd.selectLayer(name);
  }
}
