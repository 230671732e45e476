"""What the W&B sink costs and when its pictures arrive (issue 20), each figure against its
baseline in the same run:

1. pictures: a WatchSession + ``WandbSink`` (defaults but ``--duty``) on a 3-layer MLP analysed
   every ~0.6 s (5 SGD steps and ``--period`` s of sleep per snapshot) for ``--seconds``; prints
   when each frame was drawn and the analysed steps whose heatmap is in the offline run, read
   back from its ``.wandb`` file;
2. the alpha chart: its logs and bytes over a 2 000-analysis 16-layer run, logged at every
   picture cadence (baseline) and with the sink's growth rule;
3. the table: ``wandb.Table.add_data`` per row (W&B's type check) and the memory an
   ``INCREMENTAL`` table keeps per row when its logged rows are not forgotten;
4. the training thread's time per ``WandbSink.write`` (``--write-times``), made-up results of 16
   layers x 2 000 analyses and of 500 layers x 200 analyses after 1 800 (the alpha chart's
   size of a 2 000-analysis run), ``images_every=5``, a real offline run: the baseline is the
   work the sink did there before (the rows added in ``write``, the chart built in ``write``
   from the whole alpha grid), now the rows are added by ``prepare`` in another thread (the
   analysis thread's role; joined before the write, as the session does) and the chart is
   built in the sink's thread while the next writes go on.

Run: ``python bench/wandb_outputs.py --seconds 150`` (the default picture budget) and
``python bench/wandb_outputs.py --seconds 20 --duty 0.05`` (10x the budget);
``python bench/wandb_outputs.py --write-times`` (4 only). Offline: nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

HERE = Path(__file__).resolve().parent


def offline() -> str:
    """A fresh folder for an offline W&B run (environment set): its path."""
    tmp = tempfile.mkdtemp(prefix="ww_wandb_bench_")
    for key, value in {"WANDB_MODE": "offline", "WANDB_DIR": tmp, "WANDB_SILENT": "true",
                       "WANDB_DISABLE_GIT": "true", "WANDB_DISABLE_CODE": "true",
                       "WANDB_CONSOLE": "off", "WANDB_CACHE_DIR": f"{tmp}/cache",
                       "WANDB_CONFIG_DIR": f"{tmp}/config",
                       "WANDB_DATA_DIR": f"{tmp}/data"}.items():
        os.environ[key] = value
    return tmp


def pictures(seconds: float, duty: float, period: float) -> None:
    tmp = offline()
    sys.path.insert(0, str(HERE.parent / "tests"))
    import test_wandb_sink as readback  # the tests' reader of the .wandb file
    import torch
    import wandb

    from ww_callbacks.integrations.wandb import WandbSink
    from ww_callbacks.session import WatchSession

    torch.set_num_threads(1)
    run = wandb.init(project="ww-bench", dir=tmp)
    sink = WandbSink(run, picture_duty=duty)
    watcher = WatchSession(sinks=[sink])
    model = readback.mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(256, 64, generator=gen), torch.randint(0, 10, (256,), generator=gen)
    start, step, drawn, events = time.monotonic(), 0, 0, []
    while time.monotonic() - start < seconds:
        for _ in range(5):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        time.sleep(period)
        step += 1
        watcher.snapshot(model, step)
        watcher.poll()
        if sink.pictures.frames_drawn != drawn:
            drawn = sink.pictures.frames_drawn
            events.append(f"{time.monotonic() - start:.1f} s")
    elapsed = time.monotonic() - start
    watcher.close()
    run.finish()
    rows = readback.history_rows(readback.wandb_records(readback.run_file(tmp)))
    frames = [r["ww/step"] for r in rows if "ww_plots/alpha_heatmap._type" in r]
    charts = [r["ww/step"] for r in rows if "ww_plots/alpha_by_layer_table._type" in r]
    print(f"pictures: picture_duty={duty}, {elapsed:.0f} s, {sink.dashboard.seen} analyses "
          f"(last step {sink.dashboard.last.step}); mid-run frames drawn at {events}; "
          f"heatmaps in the run at steps {frames}; alpha chart at steps {charts}")


def chart_bytes(analyses: int = 2000, layers: int = 16, every: int = 5) -> None:
    from ww_callbacks.integrations.wandb import CHART_GROWTH

    points = [[s, f"model.layers.{i}.mlp.dense", 2.0 + (s % 97) / 97]
              for i in range(layers) for s in range(625)]
    per_point = len(json.dumps({"columns": ["step", "lineKey", "lineVal"],
                                "data": points})) / len(points)
    cadence = list(range(every, analyses + 1, every))
    grown, last = [], 0
    for seen in cadence:
        if seen >= CHART_GROWTH * last:
            grown.append(seen)
            last = seen

    def total(logs: list[int]) -> float:
        return sum(min(layers * n, 10_000) for n in [*logs, analyses]) * per_point / 1e6

    print(f"alpha chart, {layers} layers x {analyses} analyses at images_every={every}: "
          f"{per_point:.0f} B per point; every cadence (baseline) {len(cadence) + 1} logs "
          f"{total(cadence):.1f} MB; growth {CHART_GROWTH} {len(grown) + 1} logs "
          f"{total(grown):.1f} MB ({total(grown) / total(cadence):.3f}x)")


def table_rows() -> None:
    import wandb

    from ww_callbacks.integrations.wandb_panels import STEP_COLUMN, TABLE_COLUMNS

    row = ["model.layers.3.mlp.dense", 3, "linear", 768, 3072, 2.5, 3.1, 1.2, 0.4, 12.3, 0.01,
           0.05, 40, 3.3, 0, "success", "", 10]
    n = 5000

    def fill() -> None:
        table = wandb.Table(columns=[*TABLE_COLUMNS, STEP_COLUMN], log_mode="INCREMENTAL")
        for i in range(n):
            table.add_data(*row[:5], 2.5 + i * 1e-6, 3.0 + i * 1e-6, *row[7:-1], i)
        tables.append(table)

    tables: list = []
    begin = time.perf_counter()
    fill()
    seconds = time.perf_counter() - begin
    tracemalloc.start()  # (a second table: tracemalloc slows add_data 3x)
    fill()
    kept, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"table: add_data {seconds / n * 1e6:.0f} us per row; kept {kept / n:.0f} B per row "
          f"when logged rows are not forgotten ({kept / n * 1e6 / 1e6:.0f} MB per million rows)")


def _result(step: int, layers: int):
    """A made-up analysis result of ``layers`` layers (the tests' ``synthetic_result``)."""
    import pandas as pd

    from ww_callbacks.results import AnalysisResult

    alphas = [2.0 + ((step * 7 + i * 13) % 97) / 40 for i in range(layers)]
    details = pd.DataFrame({"longname": [f"model.layers.{i}.mlp.dense" for i in range(layers)],
                            "layer_id": list(range(layers)), "N": [768] * layers,
                            "M": [3072] * layers, "alpha": alphas,
                            "alpha_weighted": [a * 1.3 for a in alphas],
                            "status": ["success"] * layers})
    return AnalysisResult(step, None, details, {}, 0.0, 0.0, False)


def _chart_before(wandb, dashboard):
    """The alpha chart as the sink built it before (on the training thread): the whole alpha
    grid, then thinned to ``wandb.Table.MAX_ROWS`` points (``alpha_chart`` as of cf2816a)."""
    import math

    import numpy as np

    layers, steps, alphas, _ = dashboard.heatmap()
    keep = max(2, int(wandb.Table.MAX_ROWS) // len(layers))
    columns = (np.unique(np.linspace(0, len(steps) - 1, keep).round().astype(int))
               if len(steps) > keep else np.arange(len(steps)))
    xs, ys, keys = [], [], []
    for name, row in zip(layers, alphas, strict=True):
        points = [(steps[i], float(row[i])) for i in columns if math.isfinite(row[i])]
        xs.append([p[0] for p in points])
        ys.append([p[1] for p in points])
        keys.append(name)
    return wandb.plot.line_series(xs, ys, keys=keys, title="alpha per layer", xname="step")


def write_times(layers: int, analyses: int, measured: int) -> None:
    """The training thread's seconds per ``write``, before (baseline) and now, same results."""
    import threading

    import numpy as np
    import wandb

    from ww_callbacks.integrations.wandb import WandbSink

    offline()
    results = [_result(step, layers) for step in range(analyses)]
    out = {}
    for mode in ("before", "now"):
        run = wandb.init(project="ww-bench", reinit="create_new")
        sink = WandbSink(run, scalars=False, images_every=5 if mode == "now" else 0)
        sink._render = lambda result, frame, keep=False: None  # no pictures: not measured here
        before = WandbSink(run, images_every=5)  # the dashboard that decides the chart's steps
        for result in results[:analyses - measured]:
            sink.dashboard.update(result)
            before.dashboard.update(result)
        times, chart_s = [], []
        for result in results[analyses - measured:]:
            if mode == "now":  # the analysis thread's part, before the result is delivered
                worker = threading.Thread(target=sink.prepare, args=(result,))
                worker.start()
                worker.join()
            begin = time.perf_counter()
            sink.write(result, {})
            if mode == "before" and before.dashboard.update(result).plots:
                seen = before.dashboard.seen
                if seen >= 1.25 * before._chart_seen:
                    before._chart_seen = seen
                    start = time.perf_counter()
                    run.log({"ww/step": result.step,
                             "ww_plots/alpha_by_layer": _chart_before(wandb, sink.dashboard)})
                    chart_s.append(time.perf_counter() - start)
            times.append(time.perf_counter() - begin)
        begin = time.perf_counter()
        sink.close()
        if mode == "before":  # the final chart, built and logged at close
            run.log({"ww/step": results[-1].step,
                     "ww_plots/alpha_by_layer": _chart_before(wandb, sink.dashboard)})
        closing = time.perf_counter() - begin
        run.finish()
        times_ms = np.array(times) * 1e3
        out[mode] = times_ms
        charts = (f"; {len(chart_s)} chart builds+logs {np.mean(chart_s) * 1e3:.0f} ms each"
                  if chart_s else "")
        print(f"write, {layers} layers, {measured} writes (after {analyses - measured} "
              f"analyses), {mode}: median {np.median(times_ms):.2f} ms, mean "
              f"{times_ms.mean():.2f} ms, max {times_ms.max():.0f} ms, total "
              f"{times_ms.sum() / 1e3:.2f} s{charts}; close {closing * 1e3:.0f} ms "
              f"(load {os.getloadavg()[0]:.1f})", flush=True)
    print(f"write, {layers} layers: now/before mean {out['now'].mean() / out['before'].mean():.3f}"
          f"x, max {out['now'].max() / out['before'].max():.3f}x", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=150.0)
    parser.add_argument("--duty", type=float, default=None, help="picture_duty (default: "
                        "the sink's)")
    parser.add_argument("--period", type=float, default=0.5)
    parser.add_argument("--write-times", action="store_true",
                        help="only the training thread's time per write (4)")
    args = parser.parse_args()
    from ww_callbacks.picture_queue import PICTURE_DUTY

    print(f"uptime: {os.getloadavg()}")
    if args.write_times:
        write_times(16, 2000, 2000)
        write_times(500, 2000, 200)
        return
    chart_bytes()
    table_rows()
    pictures(args.seconds, PICTURE_DUTY if args.duty is None else args.duty, args.period)


if __name__ == "__main__":
    main()
