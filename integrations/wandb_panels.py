"""What the W&B sink builds besides the scalars and pictures: the one per-layer table across the
run (:class:`LayerTable`), the per-layer alpha chart (:func:`alpha_chart`) and the ESD
histograms (:func:`esd_histograms`). Each takes the ``wandb`` module as an argument, so that
importing this module imports no W&B.

Why an ``INCREMENTAL`` table: a ``wandb.Table`` logged in the default ``IMMUTABLE`` mode cannot be
logged again once mutated, so one table across steps means either a new table per log (what the
sink did: one 3-row table per logged analysis, 7 of them for a 30-analysis run) or the cumulative
table logged again and again (every row rewritten at every log: quadratic bytes). W&B 0.19+ (the
installed 0.31 here, ``wandb/sdk/data_types/table.py``) has ``log_mode="INCREMENTAL"``: each
``run.log`` of the same table writes only the rows added since its previous log as one
"increment" (``media/table/<key>_*.table.json`` plus an artifact entry) and the run's workspace
joins them into one table. Two limits of that mode, read in the same source, shape the
schedule: a logged increment holds at most ``wandb.Table.MAX_ROWS`` (10 000) rows (``bind_to_run``
truncates silently beyond), and "only the latest 100 increments will be visualized in the run
workspace" (``table_decorators.py``). So the rows are added at every analysis and logged at the
first analysis, then every ``table_every`` analyses, the interval doubling every
:data:`DOUBLE_EVERY` increments (a run of 3 100 analyses at ``table_every=5`` fits in 100
increments), earlier whenever the next analysis' rows could overflow an increment, and at the
end. W&B keeps every increment's rows in the table object (``Table.data``, 289 B per row
measured: 289 MB for 500 layers x 2 000 analyses) although only the new ones are written again;
:meth:`LayerTable.logged` forgets the rows once W&B marked them logged (its ``_last_logged_idx``,
checked before anything is dropped), so the sink's memory is one interval's rows, not the whole
run's. The cost is W&B's own per-row type check in ``Table.add_data``: 0.27-0.45 ms per row
measured (2 shared cores at load 7; ``bench/wandb_outputs.py``), about 5 ms per analysis of a
16-layer model and 150 ms for 500 layers. So the rows are added in the analysis thread
(:meth:`~.wandb.WandbSink.prepare`, before the result reaches the training thread) under
:attr:`LayerTable.lock`, which the training thread holds while it logs the table: W&B reads
``Table.data`` and moves ``_last_logged_idx`` inside ``run.log``, so no row may be added
meanwhile.

Building W&B objects off the training thread is safe (read in the installed W&B 0.31 source):
``wandb.Table`` (``sdk/data_types/table.py``: ``__init__`` / ``add_data`` only type-check and
append to ``data``; the run is touched only by ``bind_to_run`` / ``to_json``, inside
``run.log``) and ``wandb.plot.line_series`` (``plot/line_series.py`` -> ``plot_table`` in
``plot/custom_chart.py``: a ``Table`` and a ``CustomChart`` dataclass, no run) are plain data
until the training thread logs them; the thread that built one never touches it again.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections import deque
from typing import Any

import numpy as np

from ww_callbacks.dashboard import Dashboard, thinned
from ww_callbacks.results import AnalysisResult
from ww_callbacks.scalars import layer_tag
from ww_callbacks.tags import ESD_HISTOGRAM, ESD_RAND_HISTOGRAM, PLOTS

#: The per-layer table's key (bound to the step metric by the ``ww/*`` glob).
TABLE_KEY = "ww/layers"

#: The table's columns from the analysis, in order (``layer_id``: the layer's index in model
#: order; ``xmin``, ``D``, ``num_pl_spikes``, ``lambda_max``: the quality of the fit;
#: ``num_traps``: empty (None) in the rows of analyses that did not count traps).
#: :data:`STEP_COLUMN` follows them. One table across the run: every row has every column.
TABLE_COLUMNS = ("longname", "layer_id", "layer_type", "N", "M", "alpha", "alpha_weighted",
                 "log_norm", "log_spectral_norm", "stable_rank", "xmin", "D", "num_pl_spikes",
                 "lambda_max", "num_traps", "status", "warning")
#: The last column: the analysed step of every row.
STEP_COLUMN = "step"

#: The per-layer alpha chart's key (``wandb.plot.line_series``; W&B stores its data under
#: ``<key>_table``), bound to the step metric by the ``ww_plots/*`` glob.
CHART_KEY = f"{PLOTS}/alpha_by_layer"

#: Increments between two doublings of the table's logging interval (see the module docstring).
DOUBLE_EVERY = 20

_INT_COLUMNS = frozenset({"N", "M", "num_traps", "layer_id", "num_pl_spikes", STEP_COLUMN})
_STR_COLUMNS = frozenset({"longname", "layer_type", "status", "warning"})


def _cell(column: str, value: Any) -> Any:
    """A plain Python value for a table cell (W&B infers column types from them)."""
    if column in _STR_COLUMNS:
        return "" if value is None or (isinstance(value, float) and math.isnan(value)) \
            else str(value)
    try:
        if column in _INT_COLUMNS:
            return int(value)
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def table_rows(result: AnalysisResult) -> list[list]:
    """The rows of one analysis: one per layer, :data:`TABLE_COLUMNS` then its step; a column
    the analysis does not have (``num_traps`` when no traps were counted) is None."""
    details = result.details
    if details is None or details.empty:
        return []
    present = [c for c in TABLE_COLUMNS if c in details.columns]
    step = int(result.step)
    rows = []
    for values in details[present].itertuples(index=False, name=None):
        cells = dict(zip(present, values, strict=True))
        rows.append([_cell(c, cells[c]) if c in cells else None for c in TABLE_COLUMNS] + [step])
    return rows


#: Results whose rows :class:`LayerTable` remembers having added (a result is written a few
#: analyses after its rows were added at most: the analysis thread is one snapshot ahead).
REMEMBERED = 64


class LayerTable:
    """The one ``ww/layers`` table of a run: rows added at every analysis (:meth:`add`), logged
    as an increment when :meth:`due` (the schedule of the module docstring). :meth:`add` and
    the log of :attr:`table` (with :meth:`logged`) are made while holding :attr:`lock`."""

    def __init__(self, wandb: Any, every: int):
        self._wandb = wandb
        columns = [*TABLE_COLUMNS, STEP_COLUMN]
        try:
            self.table = wandb.Table(columns=columns, log_mode="INCREMENTAL")
            #: False with a W&B older than the ``INCREMENTAL`` mode (``setup.cfg`` allows 0.17):
            #: each log is then a table of its own rows under the same key, as before.
            self.incremental = True
        except (TypeError, AssertionError):  # no log_mode argument / not a known mode
            self.table = wandb.Table(columns=columns)
            self.incremental = False
        self.every = every
        self.max_rows = int(wandb.Table.MAX_ROWS)
        self.increments = 0  # logged so far
        self.pending = 0  # rows added since the last log
        self.since = 0  # analyses added since the last log
        self.last_rows = 0  # rows of the latest analysis
        self.rows_added = 0
        self.rows_left_out = 0  # beyond max_rows in one analysis (W&B would truncate them)
        #: Held while rows are added and while the table is logged (see the module docstring).
        self.lock = threading.Lock()
        self._added: deque[weakref.ref] = deque(maxlen=REMEMBERED)

    def has(self, result: AnalysisResult) -> bool:
        """True when the rows of ``result`` were added already."""
        return any(ref() is result for ref in self._added)

    def add(self, result: AnalysisResult) -> None:
        """Add the rows of ``result`` (once: a retried write, or the write of a result whose
        rows the analysis thread added, adds nothing). Hold :attr:`lock`."""
        if self.has(result):
            return
        self._added.append(weakref.ref(result))
        rows = table_rows(result)
        if len(rows) > self.max_rows:
            self.rows_left_out += len(rows) - self.max_rows
            rows = rows[:self.max_rows]
        for row in rows:
            self.table.add_data(*row)
        self.pending += len(rows)
        self.rows_added += len(rows)
        self.last_rows = len(rows)
        self.since += 1

    @property
    def interval(self) -> int:
        """Analyses between two logs now: ``every``, doubled every :data:`DOUBLE_EVERY`
        increments."""
        return self.every * 2 ** (self.increments // DOUBLE_EVERY)

    def due(self) -> bool:
        """True when the rows added since the last log are to be logged now."""
        if not self.pending:
            return False
        return (self.increments == 0 or self.since >= self.interval
                or self.pending + self.last_rows > self.max_rows)

    def logged(self) -> None:
        """The table was just logged (``run.log`` returned): its pending rows are an increment of
        the run. Forgets them when W&B marked them logged (see the module docstring)."""
        self.increments += 1
        self.pending = self.since = 0
        table = self.table
        if not self.incremental:
            self.table = self._wandb.Table(columns=list(table.columns))
        elif getattr(table, "_last_logged_idx", None) == len(table.data) - 1:
            table.data.clear()
            table._last_logged_idx = -1  # the next increment starts at row 0 of what is kept


def alpha_chart(wandb: Any, dashboard: Dashboard, max_points: int | None = None,
                until_step: int | None = None) -> Any:
    """Every layer's alpha over the analysed steps as one W&B line chart
    (``wandb.plot.line_series``: a colour per layer, a legend), from what ``dashboard`` saw.
    The chart's data is one W&B table of (step, layer, alpha) rows, which W&B truncates at
    ``wandb.Table.MAX_ROWS``: beyond ``max_points`` (default: that limit) points, the steps are
    thinned evenly (the first and the latest kept); the per-layer scalars ``ww_alpha/*`` keep
    every step. Failed fits are left out (gaps). ``until_step``: the analyses up to that step
    only. None when there is nothing to draw. Thread-safe (the sink builds it in a thread of
    its own: 236 ms for 16 layers x 2 000 analyses on the training thread before, RESULTS.md
    14)."""
    limit = int(max_points if max_points is not None else wandb.Table.MAX_ROWS)
    keep = max(2, limit // max(1, len(dashboard.layers)))
    layers, steps, alphas, _ = dashboard.heatmap(until_step, max_columns=keep)
    if not layers or not steps:
        return None
    keep = max(2, limit // len(layers))  # (layers seen after the count above)
    columns = thinned(len(steps), keep)
    xs, ys, keys = [], [], []
    for name, row in zip(layers, alphas, strict=True):
        points = [(steps[i], float(row[i])) for i in columns if math.isfinite(row[i])]
        if points:
            xs.append([p[0] for p in points])
            ys.append([p[1] for p in points])
            keys.append(name or "root")
    if not keys:
        return None
    return wandb.plot.line_series(xs, ys, keys=keys, title="alpha per layer", xname="step")


def esd_histograms(wandb: Any, esd: dict[str, dict]) -> dict[str, Any]:
    """The compact ESDs of one analysis (``result.esd``, :mod:`ww_callbacks.esd`) as
    ``wandb.Histogram`` of log10 eigenvalues on their stored bins: ``ww_esd/<layer>``, and
    ``ww_esd_rand/<layer>`` for the randomized ESD where traps were counted. A layer with an
    empty histogram (a degenerate spectrum) is left out."""
    out: dict[str, Any] = {}
    for name, compact in esd.items():
        counts = compact.get("counts") or []
        lo, hi = compact.get("log10_lo"), compact.get("log10_hi")
        if not counts or lo is None or hi is None:
            continue
        edges = np.linspace(float(lo), float(hi), len(counts) + 1)
        out[layer_tag(ESD_HISTOGRAM, name)] = wandb.Histogram(
            np_histogram=(np.asarray(counts, dtype=np.int64), edges))
        rand = compact.get("rand_counts")
        if rand and len(rand) == len(counts):
            out[layer_tag(ESD_RAND_HISTOGRAM, name)] = wandb.Histogram(
                np_histogram=(np.asarray(rand, dtype=np.int64), edges))
    return out


__all__ = ["CHART_KEY", "DOUBLE_EVERY", "REMEMBERED", "STEP_COLUMN", "TABLE_COLUMNS", "TABLE_KEY",
           "LayerTable", "alpha_chart", "esd_histograms", "table_rows"]
