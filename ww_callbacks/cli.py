"""``ww-callbacks``: the command line (argparse and dispatch only; the work lives in
:mod:`ww_callbacks.checkpoints`, :mod:`ww_callbacks.compare` and :mod:`ww_callbacks.report`).

Subcommands: ``analyze`` (checkpoints -> per-layer table), ``compare`` (two checkpoints or runs,
layer by layer), ``report`` (a run's history -> one self-contained HTML file). Exit status: 0 ok,
1 the analysis found a problem asked about with ``--fail-on``, 2 a usage or input error (one
line on stderr saying what was expected; the traceback only with ``--debug``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

EXIT_OK = 0
EXIT_FOUND = 1
EXIT_INPUT = 2

#: Columns of the ``table`` format (csv and json carry every column).
TABLE_COLUMNS = ["layer_id", "longname", "layer_type", "N", "M", "alpha", "alpha_weighted",
                 "log_norm", "num_traps", "band", "status"]
FAIL_ON = ("over-trained", "under-trained", "traps")


class InputError(Exception):
    """A usage or input problem reported as one line, exit status 2."""


# ----------------------------------------------------------------------------- output


def _plain(value: Any) -> Any:
    """JSON-ready value: numpy scalars to Python, NaN/inf to None."""
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def json_ready(value: Any) -> Any:
    """``value`` with every nested number made a JSON one (NaN and infinities become None)."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return _plain(value)


def json_text(value: Any) -> str:
    """Strict JSON of ``value`` (``null`` for NaN: a JSON reader refuses ``NaN`` literals)."""
    return json.dumps(json_ready(value), indent=1, allow_nan=False, default=str)


def records(df: pd.DataFrame) -> list[dict]:
    """The rows of ``df`` as JSON-ready dicts."""
    return [{k: _plain(v) for k, v in row.items()} for row in df.to_dict(orient="records")]


def with_band(details: pd.DataFrame) -> pd.DataFrame:
    """``details`` with a ``band`` column (over-/well-/under-trained, no fit)."""
    from .compare import layer_band

    out = details.copy()
    out["band"] = [layer_band(a, s) for a, s in zip(out["alpha"], out["status"], strict=True)]
    return out


def say(line: str) -> None:
    """One line on stderr, its control characters escaped (names from a model or a file can
    hold terminal escape sequences: :func:`ww_callbacks.names.terminal`)."""
    from .names import terminal

    print(terminal(line), file=sys.stderr)


def format_table(df: pd.DataFrame, columns: Sequence[str]) -> str:
    """A plain text table of the given columns that ``df`` has (floats with 4 decimals; text
    cells with their control characters escaped, so a name cannot drive the terminal)."""
    from .names import terminal

    cols = [c for c in columns if c in df.columns]
    if df.empty:
        return "(no layers)"
    table = df[cols].copy()
    for col in table.columns:
        if table[col].dtype == object or pd.api.types.is_string_dtype(table[col]):
            table[col] = table[col].map(lambda v: terminal(v) if isinstance(v, str) else v)
    return table.to_string(index=False, float_format=lambda x: f"{x:.4f}")


def _write_output(text: str, out: str | None) -> None:
    if out is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    try:
        Path(out).write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    except OSError as err:
        raise InputError(f"cannot write {out}: {err.strerror or err}") from None


# ----------------------------------------------------------------------------- analyze


def _layers_spec(items: list[str] | None) -> list[int | str] | None:
    if not items:
        return None
    out: list[int | str] = []
    for item in items:
        for part in item.split(","):
            part = part.strip()
            if part:
                out.append(int(part) if part.lstrip("-").isdigit() else part)
    return out


def analyze_weights(weights: Any, label: str, args: argparse.Namespace) -> pd.DataFrame:
    """``ww_callbacks.analyze`` on a ``name -> tensor`` mapping with the command line's
    options; ``label`` names the input in messages."""
    import warnings

    from .checkpoints import CheckpointError
    from .front_door import analyze

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no layer to analyse" is reported below instead
        try:
            details = analyze(weights, layers=_layers_spec(args.layers),
                              randomize=getattr(args, "randomize", False),
                              mp_fit=getattr(args, "mp_fit", False),
                              device=getattr(args, "device", None), progress=None,
                              keep_spectra=bool(getattr(args, "plots", None)
                                                or getattr(args, "history", None)))
        except CheckpointError:
            raise
        except (TypeError, ValueError) as err:
            raise InputError(f"{label}: {err}") from None
    if details.empty:
        details.attrs["no_layer"] = no_layer_reason(weights, details)
        say(f"ww-callbacks: {label}: {details.attrs['no_layer']}")
    return details


def no_layer_reason(weights: Any, details: pd.DataFrame) -> str:
    """Why no layer was analysed, with what the input holds instead."""
    skipped = details.attrs.get("skipped", [])
    reasons: dict[str, int] = {}
    for skip in skipped:
        reasons[skip["reason"]] = reasons.get(skip["reason"], 0) + 1
    common = "; ".join(f"{n} x {r}" for r, n in sorted(reasons.items(), key=lambda x: -x[1])[:3])
    text = (f"no layer to analyse (no 2-D or convolution weights within the size limits): "
            f"{len(weights)} tensors" + (f", passed over: {common}" if common else ""))
    contents = getattr(weights, "contents", "")
    return f"{text}; {contents}" if contents else text


class _CliHistory:
    """``analyze --history DIR``: one history record per checkpoint, in the order given (step 0,
    1, ...), with every layer's compact ESD in the spectra sidecar, so that the HTSR tab of
    TensorBoard, ``report`` and ``compare`` read several checkpoints as one run."""

    def __init__(self, folder: str, args: argparse.Namespace):
        from .history import HistoryWriter
        from .history_reader import HISTORY_FILE

        path = Path(folder)
        if path.exists() and not path.is_dir():
            raise InputError(f"--history {folder}: not a folder")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise InputError(f"--history {folder}: {err.strerror or err}") from None
        self.writer = HistoryWriter(path / HISTORY_FILE)
        self.randomize = bool(args.randomize)
        self.step = 0

    def add(self, details: pd.DataFrame, duration_s: float) -> None:
        """Write the analysis of the next checkpoint (its eigenvalues, kept for this, are
        dropped from ``details`` here)."""
        from .esd import compact_spectra
        from .options import MIN_EVALS_FOR_TRUST
        from .results import AnalysisResult
        from .scalars import model_summary

        spectra = details.attrs.pop("spectra", {})
        result = AnalysisResult(self.step, None, details.copy(), {}, time.time(), duration_s,
                                self.randomize, spectra,
                                min_evals_for_trust=MIN_EVALS_FOR_TRUST)
        result.summary = model_summary(result.details, MIN_EVALS_FOR_TRUST)
        try:
            self.writer.append(result)
            stored = compact_spectra(result)
            if stored:
                self.writer.append_spectra(result.step, stored)
        except OSError as err:
            raise InputError(f"--history: cannot write {self.writer.path}: "
                             f"{err.strerror or err}") from None
        self.step += 1

    def close(self) -> Path:
        """Release the folder; the history's path."""
        self.writer.close()
        return self.writer.path


def analyze_checkpoint(path: str, args: argparse.Namespace) -> pd.DataFrame:
    """``ww_callbacks.analyze`` on the checkpoint at ``path`` with the command line's options;
    says on stderr where in the file the weights were found when it is not a bare state dict."""
    from .checkpoints import open_checkpoint

    weights = open_checkpoint(path, allow_hparams_types=getattr(args, "allow_hparams_types",
                                                                False))
    if getattr(weights, "note", None):
        say(f"ww-callbacks: {path}: {weights.note}")
    return analyze_weights(weights, path, args)


def unreadable(details: pd.DataFrame) -> pd.DataFrame:
    """The rows of layers whose weights could not be read (failed rows; ``warning`` says why)."""
    from .analysis import UNREADABLE

    if details.empty or "warning" not in details.columns:
        return details.iloc[0:0]
    return details[details["warning"].astype(str).str.startswith(UNREADABLE)]


def _table_view(details: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """``details`` and the table's columns, with a ``reason`` column (the failed rows'
    ``warning``) when a layer's fit failed or its weights could not be read."""
    from .powerlaw import FAILED

    columns = list(TABLE_COLUMNS)
    if "status" in details.columns and (details["status"] == FAILED).any():
        details = details.assign(reason=[w if s == FAILED else "" for w, s in
                                         zip(details["warning"], details["status"],
                                             strict=True)])
        columns.append("reason")
    return details, columns


def _problems(details: pd.DataFrame, fail_on: list[str]) -> list[str]:
    """One line per problem ``--fail-on`` asks about."""
    from .powerlaw import OVER_TRAINED_ALPHA, SUCCESS, UNDER_TRAINED_ALPHA

    if details.empty and fail_on:  # nothing analysed cannot pass a check
        return ["no layer was analysed, so --fail-on cannot pass"]
    ok = details[details["status"] == SUCCESS]
    found = []
    if "over-trained" in fail_on:
        bad = ok[ok["alpha"] < OVER_TRAINED_ALPHA]
        if len(bad):
            found.append(f"{len(bad)} over-trained layer(s) (alpha < {OVER_TRAINED_ALPHA:g}): "
                         + ", ".join(bad["longname"].astype(str)))
    if "under-trained" in fail_on:
        bad = ok[ok["alpha"] > UNDER_TRAINED_ALPHA]
        if len(bad):
            found.append(f"{len(bad)} under-trained layer(s) (alpha > {UNDER_TRAINED_ALPHA:g}): "
                         + ", ".join(bad["longname"].astype(str)))
    if "traps" in fail_on and "num_traps" in details.columns:
        bad = details[details["num_traps"] > 0]
        if len(bad):
            found.append(f"{len(bad)} layer(s) with correlation traps: "
                         + ", ".join(f"{n} ({int(t)})" for n, t in
                                     zip(bad["longname"], bad["num_traps"], strict=True)))
    if fail_on:  # a layer that could not be read cannot be shown to pass any check
        bad = unreadable(details)
        if len(bad):
            found.append(f"{len(bad)} layer(s) whose weights could not be read: "
                         + ", ".join(bad["longname"].astype(str)))
    return found


def _save_plots(details: pd.DataFrame, out_dir: Path) -> list[Path]:
    try:
        from .figures import save_analysis_figures
    except ImportError as err:
        raise InputError(f"--plots needs ww_callbacks.figures and matplotlib "
                         f"(pip install 'ww_callbacks[plot]'): {err}") from None
    out_dir.mkdir(parents=True, exist_ok=True)
    return list(save_analysis_figures(details, out_dir,
                                      spectra=details.attrs.get("spectra")))


def cmd_analyze(args: argparse.Namespace) -> int:
    """``ww-callbacks analyze``."""
    from .analysis import summarize

    fail_on = args.fail_on or []
    if "traps" in fail_on:
        args.randomize = True  # traps are found by the randomised spectrum
    from .names import terminal

    results = []
    history = _CliHistory(args.history, args) if args.history else None
    for path in args.paths:
        start = time.perf_counter()
        analysed = analyze_checkpoint(path, args)
        if history is not None:
            history.add(analysed, time.perf_counter() - start)
        details = with_band(analysed)
        results.append((path, details))
        bad = unreadable(details)
        for name, reason in zip(bad["longname"], bad["warning"], strict=True):
            say(f"ww-callbacks: {path}: layer {name}: {reason}")
    if args.format == "json":
        text = json_text([{"path": str(path), "summary": summarize(d),
                           "skipped": d.attrs.get("skipped", []), "layers": records(d)}
                          for path, d in results])
    elif args.format == "csv":
        frames = [d.assign(checkpoint=str(p)) if len(results) > 1 else d for p, d in results]
        text = pd.concat(frames, ignore_index=True).to_csv(index=False)
    else:
        parts = []
        for path, d in results:
            summary = summarize(d)
            shown, columns = _table_view(d)
            parts.append(f"== {terminal(path)}: {len(d)} layers, alpha mean "
                         f"{summary.get('alpha', math.nan):.4f}, alpha_weighted mean "
                         f"{summary.get('alpha_weighted', math.nan):.4f}\n"
                         + format_table(shown, columns))
        text = "\n\n".join(parts)
    _write_output(text, args.out)  # the table first: nothing the pictures meet can lose it
    if history is not None:
        say(f"ww-callbacks: wrote {history.close()} ({len(results)} analyses, steps 0 to "
            f"{len(results) - 1} in the order given)")
    if args.plots:
        from .names import file_stem

        stems: set[str] = set()
        for path, details in results:
            out_dir = Path(args.plots)
            if len(args.paths) > 1:
                out_dir = out_dir / file_stem(Path(path).name.replace(".", "_"), stems)
            for written in _save_plots(details, out_dir):
                say(f"ww-callbacks: wrote {written}")
    problems = [f"{path}: {p}" for path, d in results for p in _problems(d, fail_on)]
    for line in problems:
        say(f"ww-callbacks: {line}")
    return EXIT_FOUND if problems else EXIT_OK


# ----------------------------------------------------------------------------- compare / report


def cmd_compare(args: argparse.Namespace) -> int:
    """``ww-callbacks compare``."""
    from .compare import compare, write_compare_html

    notes: list[str] = []
    table = compare(args.a, args.b, delta=args.delta,
                    analyze_path=lambda p: analyze_checkpoint(p, args),
                    analyze_delta=lambda w: analyze_weights(w, "B - A", args),
                    runs=args.run, notes=notes)
    for line in notes:
        say(f"ww-callbacks compare: note: {line}")
    if args.format == "json":
        text = json_text(records(table))
    elif args.format == "csv":
        text = table.to_csv(index=False)
    else:
        from .names import terminal

        crossed = int(table["crossed"].sum())
        text = (f"== A = {terminal(args.a)}\n== B = {terminal(args.b)}\n{len(table)} layers in "
                f"common, {crossed} crossed a band\n" + format_table(table, list(table.columns)))
    _write_output(text, None)
    if args.out:
        written = write_compare_html(table, args.out, a=args.a, b=args.b, notes=notes)
        say(f"ww-callbacks: wrote {written}")
    return EXIT_OK


def _tensorboard_without_tensorflow() -> None:
    """Let TensorBoard's event reader use its TensorFlow stub in this process: importing
    TensorFlow only to read event files took ~20 s of a ~23 s report here (2 shared cores).
    ``tensorboard.compat.notf`` is TensorBoard's own switch for that (an importable module of
    that name). Only the command line does this; a Python caller's process is left alone."""
    import types

    if "tensorflow" not in sys.modules and "tensorboard.compat.notf" not in sys.modules:
        sys.modules["tensorboard.compat.notf"] = types.ModuleType("tensorboard.compat.notf")


def cmd_report(args: argparse.Namespace) -> int:
    """``ww-callbacks report``."""
    from .report import report_data, report_page

    _tensorboard_without_tensorflow()

    data = report_data(args.run_dir, run=args.run, embed_path=args.embed_path)
    for line in data["notes"]:
        say(f"ww-callbacks report: note: {line}")
    written = Path(args.output)
    try:
        written.parent.mkdir(parents=True, exist_ok=True)
        written.write_text(report_page(data), encoding="utf-8")
    except OSError as err:
        raise InputError(f"cannot write {written}: {err.strerror or err}") from None
    say(f"ww-callbacks: wrote {written} ({written.stat().st_size / 1e6:.2f} MB)")
    return EXIT_OK


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """The ``ww-callbacks`` argument parser."""
    from ._version import __version__

    parser = argparse.ArgumentParser(
        prog="ww-callbacks",
        description="Data-free HTSR (WeightWatcher) diagnostics of checkpoints and training runs.",
        epilog="Exit status: 0 ok, 1 --fail-on found a problem, 2 usage or input error.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    an = sub.add_parser(
        "analyze", parents=[common], help="analyse checkpoints layer by layer",
        description="Analyse each layer of one or more checkpoints: a .safetensors file, a "
                    "sharded safetensors folder (model.safetensors.index.json), a torch or "
                    "Lightning checkpoint (weights-only loading) or a Hugging Face model folder. "
                    "Weights are read one tensor at a time.")
    an.add_argument("paths", nargs="+", metavar="PATH", help="checkpoint file or folder")
    an.add_argument("--randomize", action="store_true",
                    help="also the randomised spectra: correlation traps (num_traps)")
    an.add_argument("--mp-fit", action="store_true", help="also the Marchenko-Pastur fit")
    an.add_argument("--layers", nargs="+", metavar="SPEC",
                    help="layers to analyse: ids (negative ids drop), type names (dense, "
                         "conv2d, ...), names, '-name' drops; comma or space separated "
                         "(a first '-name' needs --layers=-name or a comma list)")
    an.add_argument("--device", help="compute spectra with torch on this device (cuda, cpu)")
    an.add_argument("--format", choices=("table", "csv", "json"), default="table",
                    help="output format (default: table)")
    an.add_argument("--out", metavar="FILE", help="write the output to FILE instead of stdout")
    an.add_argument("--plots", metavar="DIR", help="write the figures (PNG) into DIR")
    an.add_argument("--history", metavar="DIR",
                    help="also write DIR/ww_history.jsonl: one record per checkpoint in the "
                         "order given (steps 0, 1, ...) with every layer's compact ESD beside "
                         "it, read as one run by TensorBoard's HTSR tab (tensorboard --logdir "
                         "DIR), 'ww-callbacks report DIR' and 'compare'")
    an.add_argument("--fail-on", nargs="+", choices=FAIL_ON, metavar="PROBLEM",
                    help=f"exit with status 1 when a layer is {', '.join(FAIL_ON)} "
                         "(traps turns --randomize on), or when no layer was analysed; with any "
                         "PROBLEM, a layer whose weights could not be read (a dtype such as FP8 "
                         "that is not decoded) counts too. "
                         "Such a layer is always a failed row with its reason in the table and "
                         "on stderr; a file that breaks its format (a bad safetensors header: "
                         "unknown dtype, shape not matching its bytes, overlapping offsets) is "
                         "an input error, exit status 2")
    an.add_argument("--allow-hparams-types", action="store_true",
                    help="also load torch/Lightning checkpoints whose hyperparameters hold "
                         "pathlib paths or argparse.Namespace (added to torch's weights-only "
                         "allowlist) or objects of your own classes (an Enum, a dataclass: "
                         "loaded as inert placeholders, their code never imported or run); off "
                         "by default")
    an.set_defaults(func=cmd_analyze)

    cp = sub.add_parser(
        "compare", parents=[common], help="compare two checkpoints or runs layer by layer",
        description="Compare A and B (checkpoints, or run folders / ww_history.jsonl files whose "
                    "last analysis is used) layer by layer: alpha of each, the difference, and "
                    "which layers crossed a band.")
    cp.add_argument("a", metavar="A", help="checkpoint, run folder or history file")
    cp.add_argument("b", metavar="B", help="checkpoint, run folder or history file")
    cp.add_argument("--delta", action="store_true",
                    help="also analyse B - A (the fine-tuning update; checkpoints only)")
    cp.add_argument("--layers", nargs="+", metavar="SPEC", help="as for analyze")
    cp.add_argument("--device", help="compute spectra with torch on this device")
    cp.add_argument("--format", choices=("table", "csv", "json"), default="table")
    cp.add_argument("--out", metavar="FILE.html",
                    help="also write an HTML page: both correlation flows on one chart")
    cp.add_argument("--run", action="append", metavar="RUN_ID",
                    help="for a history holding several runs (a rerun into the same folder): "
                         "the run to compare (a writer's run id or a unique prefix; repeat for "
                         "A and B); default: each history's newest run")
    cp.set_defaults(func=cmd_compare)

    rp = sub.add_parser(
        "report", parents=[common], help="one self-contained HTML report of a training run",
        description="Write one offline HTML file (no network; data and scripts inline) of a "
                    "run's history: alpha heatmap, correlation flow, alpha over time, traps, "
                    "ESDs, policy actions and the run's own validation metrics.")
    rp.add_argument("run_dir", metavar="RUN_DIR",
                    help="the run's log folder (holding ww_history.jsonl) or the history file")
    rp.add_argument("-o", "--output", default="ww_report.html", metavar="FILE",
                    help="where to write the report (default: ww_report.html)")
    rp.add_argument("--run", metavar="RUN_ID",
                    help="for a history holding several runs (a rerun into the same folder): "
                         "the run to draw (a writer's run id or a unique prefix); default: the "
                         "newest")
    rp.add_argument("--embed-path", action="store_true",
                    help="show the run folder's absolute path on the page (default: its name)")
    rp.set_defaults(func=cmd_report)
    return parser


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 400 else text[:397] + "..."


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from .checkpoints import CheckpointError
    from .report import ReportError

    try:
        return args.func(args)
    except (InputError, CheckpointError, ReportError, OSError) as err:
        if args.debug:
            raise
        say(f"ww-callbacks {args.command}: error: {_one_line(err)}")
        return EXIT_INPUT
    except KeyboardInterrupt:
        say("ww-callbacks: interrupted")
        return 130
    except Exception as err:  # an unexpected failure: still one line, the rest with --debug
        if args.debug:
            raise
        say(f"ww-callbacks {args.command}: error: {type(err).__name__}: {_one_line(err)} "
            "(run with --debug for the traceback)")
        return EXIT_INPUT


__all__ = ["EXIT_FOUND", "EXIT_INPUT", "EXIT_OK", "InputError", "build_parser", "main"]
