// The one client-side model of a run, shared by every view (TensorBoard tab, report): the
// analyses, the stored compact ESDs, the policies' actions and the alerts derived from them.
//
// It is filled with the answers of the HTSR plugin (integrations/tensorboard_plugin.py):
//   table.add(recordsAnswer)    the `records` route's answer: `layers` (names) and `records`,
//                               each {step, epoch, a: alphas, t: traps, n: eigenvalues} aligned
//                               with `layers`; `actions` (the policies' "actions" lines);
//                               `min_evals_for_trust` when the history states it
//   table.addSpectra(answer)    the `spectra` route's answer: `records`, each
//                               {step, layers: {name: compact ESD}} (ww_callbacks/esd.py);
//                               the tab asks for one layer's at a time, whose answer also
//                               says how many analyses have stored ESDs (`stored`)
// The report builds the same answers in Python (slim_records) and passes them in the same way.
// Views read the table and never fetch anything themselves. `version` grows with every change.

/** Alpha values at which the bands change (over-trained < 2 <= well-trained <= 6 < under). */
export const BAND_EDGES = [2, 6];
/** Fewest eigenvalues a fit is trusted on when the history does not say (README). */
export const MIN_EVALS_FOR_TRUST = 50;

/** The band of one alpha: "over-trained", "well-trained", "under-trained" or "no fit". */
export function band(alpha) {
  if (!isFit(alpha)) return "no fit";
  if (alpha < BAND_EDGES[0]) return "over-trained";
  if (alpha > BAND_EDGES[1]) return "under-trained";
  return "well-trained";
}

/** Whether `alpha` is a fitted value (a finite number). */
export function isFit(alpha) {
  return typeof alpha === "number" && Number.isFinite(alpha);
}

/** Two alphas with as many decimals as it takes to tell them apart (at least 3), so that a band
 * change never reads "2.00 -> 2.00". */
export function formatPair(before, after) {
  let digits = 3;
  while (digits < 12 && isFit(before) && isFit(after) &&
         before.toFixed(digits) === after.toFixed(digits) && before !== after) digits++;
  return [fmtAlpha(before, digits), fmtAlpha(after, digits)];
}

/** One alpha as text ("no fit" when there is none). */
export function fmtAlpha(alpha, digits = 3) {
  return isFit(alpha) ? alpha.toFixed(digits) : "no fit";
}

function isCount(value) {
  return typeof value === "number" && Number.isFinite(value);
}

/** The analyses of one run (see the head of this file). */
export class AlphaTable {
  constructor() { this.reset(); }

  /** Forget everything (a history that was rewritten: the plugin answered `reset`). */
  reset() {
    this.layers = [];          // names, in order of first appearance (= layer depth order)
    this.index = new Map();    // name -> row
    this.columns = [];         // {step, epoch, a: [], t: [], n: []}, rows as in `layers`
    this.actions = new Map();  // step -> the policies' actions line
    this.spectra = new Map();  // step -> {layer name: compact ESD}
    this.spectraSteps = [];    // steps of `spectra`, ascending
    this.spectraStored = null; // analyses with stored ESDs as the server counted them (any layer)
    this.alerts = [];          // {column, step, row, kind: "band"|"trap", before, after}
    this.lastTraps = [];       // per row: the traps of the last analysis that counted them
    this.alphaLo = Infinity;   // finite alphas seen: smallest and largest
    this.alphaHi = -Infinity;
    this.statedMinEvals = null;
    this.version = (this.version || 0) + 1;
  }

  /** Fits resting on fewer eigenvalues than this are not trusted (the history's
   * `min_evals_for_trust` where it states one, else MIN_EVALS_FOR_TRUST). */
  get minEvals() {
    return this.statedMinEvals ?? MIN_EVALS_FOR_TRUST;
  }

  /** Whether a fit on `evals` eigenvalues is trusted (unknown counts are). */
  lowEvidence(evals) {
    return isCount(evals) && evals < this.minEvals;
  }

  _row(name) {
    let i = this.index.get(name);
    if (i === undefined) {
      i = this.layers.length;
      this.index.set(name, i);
      this.layers.push(name);
    }
    return i;
  }

  /** Add one answer of the `records` route. Returns the number of new analyses. */
  add(answer) {
    const rows = (answer.layers || []).map((name) => this._row(String(name)));
    const stated = answer.min_evals_for_trust;
    if (isCount(stated) && stated >= 0) this.statedMinEvals = stated;
    for (const rec of answer.records || []) {
      const col = {step: rec.step, epoch: rec.epoch, a: [], t: [], n: []};
      rows.forEach((row, k) => {
        const a = rec.a ? rec.a[k] : null;
        col.a[row] = isFit(a) ? a : null;
        col.t[row] = rec.t ? rec.t[k] : null;
        col.n[row] = rec.n ? rec.n[k] : null;
        if (isFit(a)) {
          if (a < this.alphaLo) this.alphaLo = a;
          if (a > this.alphaHi) this.alphaHi = a;
        }
      });
      this.columns.push(col);
      this._alertsOf(this.columns.length - 1);
    }
    for (const act of answer.actions || []) {
      if (act && Number.isFinite(act.step)) this.actions.set(act.step, act);
    }
    const added = (answer.records || []).length;
    if (added || (answer.actions || []).length || (answer.layers || []).length) this.version++;
    return added;
  }

  /** Band changes of column `c` against the column before, and new traps against the last
   * analysis that counted them (traps are counted every `traps_every` analyses: t is null on
   * the others; new traps also at the first count), appended to `alerts`. */
  _alertsOf(c) {
    const col = this.columns[c];
    const prev = c > 0 ? this.columns[c - 1] : null;
    const rows = this.layers.length;
    for (let r = 0; r < rows; r++) {
      const traps = col.t[r];
      if (isCount(traps)) {
        const before = this.lastTraps[r] ?? 0;
        if (traps > before) {
          this.alerts.push({column: c, step: col.step, row: r, kind: "trap", before,
                            after: traps});
        }
        this.lastTraps[r] = traps;
      }
      if (!prev) continue;
      const a0 = prev.a[r];
      const a1 = col.a[r];
      if (isFit(a0) && isFit(a1) && band(a0) !== band(a1)) {
        this.alerts.push({column: c, step: col.step, row: r, kind: "band", before: a0,
                          after: a1});
      }
    }
  }

  /** How many analyses have stored ESDs: the server's count where it told one (the tab loads
   * one layer's ESDs at a time), else the steps loaded here. */
  get spectraCount() {
    return Math.max(this.spectraStored ?? 0, this.spectraSteps.length);
  }

  /** Forget the stored ESDs only (the sidecar was rewritten: the plugin answered `reset`). */
  resetSpectra() {
    this.spectra = new Map();
    this.spectraSteps = [];
    this.spectraStored = null;
    this.version++;
  }

  /** Add one answer of the `spectra` route. Returns the number of stored analyses added. */
  addSpectra(answer) {
    let added = 0;
    if (isCount(answer.stored) && answer.stored !== this.spectraStored) {
      this.spectraStored = answer.stored;
      this.version++;
    }
    for (const rec of answer.records || []) {
      if (!rec || !Number.isFinite(rec.step) || !rec.layers || typeof rec.layers !== "object") {
        continue;
      }
      if (!this.spectra.has(rec.step)) {
        this.spectraSteps.push(rec.step);
        added++;
      }
      this.spectra.set(rec.step, {...(this.spectra.get(rec.step) || {}), ...rec.layers});
    }
    if (added) {
      this.spectraSteps.sort((x, y) => x - y);
    }
    if (added || (answer.records || []).length) this.version++;
    return added;
  }

  /** What a hover shows of one cell, or null outside the table. */
  cell(row, column) {
    const col = this.columns[column];
    if (!col || row < 0 || row >= this.layers.length) return null;
    return {layer: this.layers[row], row, column, step: col.step, epoch: col.epoch,
            alpha: col.a[row], traps: col.t[row], evals: col.n[row],
            low: this.lowEvidence(col.n[row]), minEvals: this.minEvals};
  }

  /** The column of the analysis whose step is nearest to `step` (-1 for an empty table). */
  columnOfStep(step) {
    const cols = this.columns;
    if (!cols.length) return -1;
    let lo = 0;
    let hi = cols.length - 1;
    while (lo < hi) {  // first column with step >= `step` (steps ascend in a history)
      const mid = (lo + hi) >> 1;
      if (cols[mid].step < step) lo = mid + 1;
      else hi = mid;
    }
    if (lo > 0 && Math.abs(cols[lo - 1].step - step) <= Math.abs(cols[lo].step - step)) lo--;
    return lo;
  }

  /** The alphas of one layer over the analyses (null where none). */
  series(row) {
    return this.columns.map((col) => col.a[row] ?? null);
  }

  /** The stored ESD of `layer` nearest to `step`: {step, esd}, or null when none is stored. */
  esd(layer, step) {
    let best = null;
    for (const s of this.spectraSteps) {  // a few hundred stored analyses at most
      const layers = this.spectra.get(s);
      if (!Object.hasOwn(layers, layer) || !layers[layer]) continue;  // names are data
      const esd = layers[layer];
      if (best === null || Math.abs(s - step) < Math.abs(best.step - step)) best = {step: s, esd};
    }
    return best;
  }

  /** The policies' actions lines in step order. */
  actionLines() {
    return [...this.actions.values()].sort((x, y) => x.step - y.step);
  }

  /** What the policies did, as events in step order: {step, kind: "lr"|"traps"|"stop",
   * layer, before, after, text-ready fields}, each a change against the line before. */
  actionEvents() {
    const out = [];
    const lr = new Map();  // names are data: no plain-object lookups ("constructor")
    const removed = new Map();
    let stop = null;
    const entries = (v) => (v && typeof v === "object" && !Array.isArray(v) ? Object.entries(v)
      : []);
    for (const line of this.actionLines()) {
      for (const [layer, scale] of entries(line.lr_scale)) {
        const before = lr.get(layer) ?? 1;
        if (isCount(scale) && scale !== before) {
          out.push({step: line.step, kind: "lr", layer, before, after: scale});
        }
        if (isCount(scale)) lr.set(layer, scale);
      }
      for (const [layer, total] of entries(line.traps_removed)) {
        const before = removed.get(layer) ?? 0;
        if (isCount(total) && total > before) {
          out.push({step: line.step, kind: "traps", layer, before, after: total});
        }
        if (isCount(total)) removed.set(layer, total);
      }
      const reason = line.stop_reason ?? null;
      if (reason !== null && reason !== stop) {
        out.push({step: line.step, kind: "stop", layer: null, before: stop, after: String(reason)});
      }
      stop = reason;
    }
    return out;
  }
}
