"""``sinks=["csv"]``: every analysis's ``ww/`` scalars appended to a CSV file, one row per value
(``step,epoch,tag,value``), so that a spreadsheet or ``pandas.read_csv`` reads a run without
TensorBoard. The worked example of a sink added by name: this file plus one
``register_sink_factory`` line in :mod:`ww_callbacks.sinks`.

Options (``("csv", {...})``): ``path`` (default ``<log_dir>/ww_scalars.csv``), ``per_layer``
(default True; False keeps the model-level ``ww/`` values only). It writes on the main process
only (rank 0 of a multi-process run).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .results import AnalysisResult
from .scalars import MODEL_PREFIX

#: The file name in ``log_dir`` when no ``path`` is given.
CSV_FILE = "ww_scalars.csv"
COLUMNS = ("step", "epoch", "tag", "value")


class CSVSink:
    """Appends ``step,epoch,tag,value`` rows to ``path`` (a header first when the file is new)
    and flushes after each analysis."""

    main_process_only = True  # rank 0 writes the one file
    in_worker = False  # written on the training thread, like the loggers

    def __init__(self, path: str | os.PathLike, *, per_layer: bool = True):
        self.path = Path(path)
        self.per_layer = per_layer
        self._file: Any = None

    def _open(self) -> Any:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            new = not self.path.exists() or self.path.stat().st_size == 0
            self._file = open(self.path, "a", newline="", encoding="utf-8")  # noqa: SIM115
            if new:
                csv.writer(self._file).writerow(COLUMNS)
        return self._file

    def write(self, result: AnalysisResult, scalars: dict[str, float]) -> None:
        """One row per scalar of ``result`` (NaN and None left out)."""
        rows = [(int(result.step), "" if result.epoch is None else int(result.epoch), tag,
                 float(value)) for tag, value in scalars.items()
                if value is not None and (self.per_layer or tag.startswith(MODEL_PREFIX))
                and not math.isnan(float(value))]
        out = self._open()
        csv.writer(out).writerows(rows)
        out.flush()

    def reopen(self) -> None:
        """After a failed write: open the file again at the next one."""
        self.close()

    def close(self) -> None:
        """Close the file (a later write opens it again, appending)."""
        if self._file is not None:
            try:
                self._file.close()
            finally:
                self._file = None


def csv_sink(value: Any, log_dir: str | os.PathLike | None,
             options: Mapping[str, Any]) -> CSVSink | None:
    """The factory of ``"csv"``: a :class:`CSVSink` at ``options["path"]``, else in ``log_dir``
    (None: no folder and no path, nothing to write to)."""
    options = dict(options)
    path = options.pop("path", None)
    if path is None:
        if log_dir is None:
            return None
        path = Path(log_dir) / CSV_FILE
    return CSVSink(path, **options)
