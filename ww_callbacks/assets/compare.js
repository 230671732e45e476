// The compare page's own script: the shared views (ww_callbacks/views/*.js, inlined before this
// script by ww_callbacks.views.page_script) over the compared sides, one analysis per side.
import {AlphaTable} from "./table.js";
import {Heatmap} from "./heatmap.js";
import {FlowView} from "./flow.js";

const D = JSON.parse(document.getElementById("ww-data").textContent);
const table = new AlphaTable();
table.add(D.table);
const heatmap = new Heatmap(document.getElementById("heatmap"), table);
heatmap.update();
const flow = new FlowView(document.getElementById("flow"), table);
flow.update();
document.body.setAttribute("data-drawn", "heatmap flow");
