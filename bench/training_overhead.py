"""What watching costs training: wall time with and without the callback, measured in one run.

CPU (any machine):
    python bench/training_overhead.py --only cpu-lightning
Lightning trains a 64-512-512-10 MLP on scikit-learn's digits for 100 epochs (~0.1 s each on 2
cores; ``--epochs`` to change) with the default callback: a snapshot every epoch, plus start and
end; traps on; ``max_duty="auto"`` (the worker's CPU time held to half a core, first analysis
exempt); every snapshot analysed unless the analysis cannot keep up. Fits alternate without/with
the callback after a warm-up; prints the median wall times, their ratio (target <= 1.05), the
training-thread time of the callback's hooks per snapshot, and how many of the requested
snapshots were analysed (the cadence honoured).

``--variants process,thread,process:none`` (default ``process,thread``): the fits with the
callback alternate between where the analysis runs (``analysis_in``, set through
``WW_CALLBACKS_ANALYSIS_IN``) and, after a colon, ``max_duty`` (auto, none or a number).

A CNN with long epochs (CPU):
    python bench/training_overhead.py --only cpu-cnn --epochs 3 --batches 60 --repeats 2
A plain torch loop: three 3x3 convolutions (64, 128, 256 channels) and two linear layers on
generated 32x32 RGB batches of 64, the torch ``Watcher`` snapshotting every epoch (no
TensorBoard); fits without the watcher, with the analysis in a child process and in a thread,
interleaved. Prints the medians, the ratios (target <= 1.03) and the analysed snapshots.

Dashboards (CPU):
    python bench/training_overhead.py --only cpu-dashboards
The same Lightning fits, alternating three variants: without the callback, with the callback but
no pictures or alerts (``TensorBoardSink(images_every=0, alerts=False)``), and with the default
dashboards (pictures every 5th analysis, on a new trap or band change, as the picture thread's
CPU budget ``picture_duty`` allows, and at the final analysis, drawn after ``fit`` returns;
alerts). Prints the medians, the extra wall time of the dashboards relative to the fit without the
callback (target <= 1%), the frames drawn during and after the fit with their CPU time, and how
long after ``fit`` returned the last pictures were written (``wait_for_pictures``, not part of
the fit's time). ``--picture-duty none`` draws every frame the cadence asks for (the old way).

The drawing alone (CPU, seconds; for machines too loaded to time fits to 1%):
    python bench/training_overhead.py --only cpu-drawing
The analysis-thread CPU time (``time.thread_time``) of one full dashboard frame (heatmap,
correlation flow, histogram, and the ESD of each of the 3 layers with its randomized ESD) of the
same MLP, and of writing it to an event file; median of 5.

GPU (one H100; skipped without CUDA):
    python bench/training_overhead.py --only gpu-gpt2
A GPT-2-small-sized transformer (12 layers, d=768, 12 heads, vocab 50257, context 256) trained
for 320 steps on random tokens, with and without the plain-torch ``Watcher`` analysing every 50
steps; prints the median step time of each (steady state), their ratio (target <= 1.02) and the
training-thread cost per snapshot (target <= 2 ms).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from _paired import paired_line

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))


# ----------------------------------------------------------------------------- CPU: Lightning


def _lightning_fit(epochs: int, with_callback: bool, root: str,
                   max_duty: float | str | None = "auto") -> tuple[float, float, int, int]:
    """One fit; returns (wall seconds, hook seconds on the training thread, snapshots,
    analyses)."""
    import lightning.pytorch as L
    from lightning_digits import DigitsMLP, digits_loader

    from ww_callbacks.integrations.lightning import WeightWatcherCallback

    hook_time = [0.0]

    class Timed(WeightWatcherCallback):
        """The callback, timing its own training-thread hooks."""

    for name in ("on_train_start", "on_train_batch_end", "on_before_optimizer_step",
                 "on_train_epoch_end", "on_train_end"):
        def timed(self, *args, _name=name, **kwargs):
            start = time.perf_counter()
            try:
                return getattr(WeightWatcherCallback, _name)(self, *args, **kwargs)
            finally:
                hook_time[0] += time.perf_counter() - start
        setattr(Timed, name, timed)

    torch.manual_seed(0)
    callbacks = [Timed(max_duty=max_duty)] if with_callback else []
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=L.loggers.TensorBoardLogger(
        root), callbacks=callbacks, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False)
    start = time.perf_counter()
    trainer.fit(DigitsMLP(hidden=512), digits_loader())
    wall = time.perf_counter() - start
    snaps = analysed = 0
    if with_callback and callbacks[0].watcher is not None:
        snaps = callbacks[0].watcher.snapshots_taken
        analysed = callbacks[0].watcher.results_delivered
    return wall, hook_time[0], snaps, analysed


def _variants(spec: str) -> list[tuple[str, str, float | str | None]]:
    """``--variants``: comma-separated ``where[:max_duty]`` (where: process or thread;
    max_duty: auto, none or a number)."""
    out = []
    for item in spec.split(","):
        where, _, duty = item.partition(":")
        duty = duty or "auto"
        out.append((item, where, None if duty == "none" else duty if duty == "auto"
                    else float(duty)))
    return out


def cpu_lightning(epochs: int, repeats: int, variants: str = "process,thread") -> None:
    """The digits MLP fits, without the callback and with each variant, interleaved."""
    import logging

    from ww_callbacks.worker import ANALYSIS_IN_ENV

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    print(f"== cpu-lightning: DigitsMLP(hidden=512), {epochs} epochs, {repeats} repeats, "
          f"torch threads {torch.get_num_threads()}; load {_load()}")
    chosen = _variants(variants)
    with tempfile.TemporaryDirectory() as root:
        _lightning_fit(1, False, root)
        for _, where, duty in chosen:  # warm-up
            os.environ[ANALYSIS_IN_ENV] = where
            _lightning_fit(1, True, root, duty)
        without: list[float] = []
        runs = {name: ([], [0.0], [0], [0]) for name, _, _ in chosen}
        for _ in range(repeats):
            without.append(_lightning_fit(epochs, False, root)[0])
            for name, where, duty in chosen:
                os.environ[ANALYSIS_IN_ENV] = where
                wall, hook, n, done = _lightning_fit(epochs, True, root, duty)
                walls, hooks, snaps, analysed = runs[name]
                walls.append(wall)
                hooks[0] += hook
                snaps[0] += n
                analysed[0] += done
        os.environ.pop(ANALYSIS_IN_ENV, None)
    base = statistics.median(without)
    print(f"without callback: median {base:.2f} s  runs {[round(t, 2) for t in without]}")
    for name, (walls, hooks, snaps, analysed) in runs.items():
        ours = statistics.median(walls)
        print(f"with callback, {name:14s}: median {ours:.2f} s ratio {ours / base:.3f}  runs "
              f"{[round(t, 2) for t in walls]}; hooks {hooks[0] / max(snaps[0], 1) * 1e3:.2f} "
              f"ms per snapshot; analysed {analysed[0]} of {snaps[0]} requested")
        print(paired_line(name, walls, without))
    print(f"load after {_load()}")



def _load() -> str:
    try:
        return open("/proc/loadavg").read().split(" 1/")[0].strip()[:14]
    except OSError:
        return "?"


# ----------------------------------------------------------------------------- CPU: CNN


def _cnn_fit(epochs: int, batches: int, where: str | None) -> tuple[float, int, int]:
    """A plain torch loop: a CNN on generated 32x32 RGB images, ``batches`` batches of 64 per
    epoch, the torch ``Watcher`` snapshotting every epoch (``where``: analysis_in; None: no
    watcher). Returns (wall seconds, snapshots requested, analysed)."""
    import torch.nn as nn

    from ww_callbacks.integrations.torch import Watcher

    gen = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(128, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(256 * 4 * 4, 512), nn.ReLU(),
                          nn.Linear(512, 10))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    data = torch.randn(8, 64, 3, 32, 32, generator=gen)
    labels = torch.randint(0, 10, (8, 64), generator=gen)
    opt = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    watcher = None
    if where is not None:
        watcher = Watcher(model, log_dir=None, tensorboard=False, every_n_steps=None,
                          every_n_epochs=1, analysis_in=where)
        watcher.__enter__()
    start = time.perf_counter()
    for epoch in range(epochs):
        for i in range(batches):
            opt.zero_grad()
            loss_fn(model(data[i % 8]), labels[i % 8]).backward()
            opt.step()
            if watcher is not None:
                watcher.step(epoch=epoch)
        if watcher is not None:
            watcher.epoch_end(epoch)
    wall = time.perf_counter() - start
    if watcher is None:
        return wall, 0, 0
    watcher.close()
    return wall, watcher.snapshots_taken, watcher.results_delivered


def cpu_cnn(epochs: int, batches: int, repeats: int) -> None:
    """The CNN fits without the watcher, with the analysis in a process and in a thread,
    interleaved; medians and ratios."""
    print(f"== cpu-cnn: {epochs} epochs of {batches} batches, {repeats} repeats, torch threads "
          f"{torch.get_num_threads()}; load {_load()}")
    _cnn_fit(1, 5, None)
    _cnn_fit(1, 5, "process")  # warm-up (the analysis process starts once)
    walls: dict[str, list[float]] = {"none": [], "process": [], "thread": []}
    counts: dict[str, list[int]] = {"process": [0, 0], "thread": [0, 0]}
    for _ in range(repeats):
        for where in ("none", "process", "thread"):
            wall, snaps, done = _cnn_fit(epochs, batches, None if where == "none" else where)
            walls[where].append(wall)
            if where != "none":
                counts[where][0] += snaps
                counts[where][1] += done
    base = statistics.median(walls["none"])
    print(f"without watcher: median {base:.2f} s ({base / epochs:.1f} s per epoch) runs "
          f"{[round(t, 2) for t in walls['none']]}")
    for where in ("process", "thread"):
        ours = statistics.median(walls[where])
        print(f"analysis in a {where:7s}: median {ours:.2f} s ratio {ours / base:.3f} (target "
              f"<= 1.03) runs {[round(t, 2) for t in walls[where]]}; analysed "
              f"{counts[where][1]} of {counts[where][0]} requested")
    print(f"load after {_load()}")


# ----------------------------------------------------------------------------- CPU: dashboards


def cpu_dashboards(epochs: int, repeats: int, picture_duty: float | None) -> None:
    """Lightning fits without the callback, with it minus the pictures, and with it."""
    import logging
    import threading

    import ww_callbacks.integrations.tensorboard as tb  # where Lightning's sink factory looks
    from ww_callbacks.dashboard import Dashboard
    from ww_callbacks.picture_queue import wait_for_pictures

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    default_sink = tb.TensorBoardSink

    class NoPictures(default_sink):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "images_every": 0, "alerts": False})

    class Dashboards(default_sink):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "picture_duty": picture_duty})

    drawing: dict = {"cpu": 0.0, "frames": 0, "threads": set(), "during": 0, "cpu_during": 0.0}
    render = Dashboard.render

    def timed_render(self, result, frame):
        start = time.thread_time()  # this thread's CPU time: the worker's
        try:
            return render(self, result, frame)
        finally:
            drawing["cpu"] += time.thread_time() - start
            drawing["frames"] += 1
            drawing["threads"].add(threading.current_thread().name)

    Dashboard.render = timed_render
    print(f"== cpu-dashboards: DigitsMLP(hidden=512), {epochs} epochs, {repeats} repeats, "
          f"torch threads {torch.get_num_threads()}, picture_duty {picture_duty}")
    runs: dict[str, list[float]] = {"without": [], "no pictures": [], "dashboards": []}
    analysed, after = 0, []
    with tempfile.TemporaryDirectory() as root:
        _lightning_fit(1, False, root)
        _lightning_fit(1, True, root)  # warm-up (imports, matplotlib's font cache)
        wait_for_pictures()
        drawing.update(cpu=0.0, frames=0, threads=set())
        for _ in range(repeats):
            runs["without"].append(_lightning_fit(epochs, False, root)[0])
            tb.TensorBoardSink = NoPictures
            try:
                runs["no pictures"].append(_lightning_fit(epochs, True, root)[0])
            finally:
                tb.TensorBoardSink = default_sink
            wait_for_pictures()
            tb.TensorBoardSink = Dashboards
            frames, cpu = drawing["frames"], drawing["cpu"]
            try:
                wall, _, _, done = _lightning_fit(epochs, True, root)
            finally:
                tb.TensorBoardSink = default_sink
            drawing["during"] += drawing["frames"] - frames
            drawing["cpu_during"] += drawing["cpu"] - cpu
            start = time.perf_counter()
            wait_for_pictures()  # the final frame, drawn after fit returned: not the fit's time
            after.append(time.perf_counter() - start)
            runs["dashboards"].append(wall)
            analysed += done
    Dashboard.render = render
    medians = {name: statistics.median(times) for name, times in runs.items()}
    for name, times in runs.items():
        print(f"{name:12s}: median {medians[name]:.2f} s  runs {[round(t, 2) for t in times]}")
    extra = (medians["dashboards"] - medians["no pictures"]) / medians["without"]
    print(f"dashboards' extra wall time: {extra * 100:+.2f}% of the fit without the callback "
          f"(target <= 1%); callback with dashboards / without: "
          f"{medians['dashboards'] / medians['without']:.3f}")
    per_fit = drawing["cpu"] / repeats
    during = drawing["cpu_during"] / repeats
    print(f"drawing: {drawing['frames'] / repeats:.1f} frames per fit, "
          f"{drawing['during'] / repeats:.1f} of them while fit ran, {during:.2f} s CPU then = "
          f"{during / medians['without'] * 100:.2f}% of the fit's wall time; {per_fit:.2f} s CPU "
          f"in all ({analysed / repeats:.1f} analyses per fit; drawn in the threads "
          f"{sorted(drawing['threads'])})")
    print(f"last pictures written {statistics.median(after):.2f} s (median) after fit returned "
          f"{[round(t, 2) for t in after]}")


def cpu_drawing(repeats: int = 5) -> None:
    """CPU time of one dashboard frame of DigitsMLP(hidden=512), drawn and written."""
    from lightning_digits import DigitsMLP

    from ww_callbacks.dashboard import Dashboard
    from ww_callbacks.integrations.tensorboard_events import EventWriter
    from ww_callbacks.session import WatchSession as Watcher

    class Keep:
        results: list = []

        def write(self, result, scalars):
            self.results.append(result)

        def close(self):
            pass

    torch.manual_seed(0)
    model = DigitsMLP(hidden=512)
    keep = Keep()
    with Watcher(sinks=[keep]) as watcher:  # traps on: the randomized ESDs are drawn too
        watcher.snapshot(model, 0)
    (result,) = keep.results
    dashboard = Dashboard(images_every=1)
    frame = dashboard.update(result)
    dashboard.render(result, frame)  # warm-up: imports, font cache
    draw, write = [], []
    with tempfile.TemporaryDirectory() as tmp:
        writer = EventWriter(tmp)
        for _ in range(repeats):
            start = time.thread_time()
            images = dashboard.render(result, frame)
            draw.append(time.thread_time() - start)
            start = time.thread_time()
            for tag, image in images.items():
                writer.add_image(tag, image, global_step=0)
            writer.flush()
            write.append(time.thread_time() - start)
        writer.close()
    print(f"== cpu-drawing: DigitsMLP(hidden=512), {len(images)} pictures per frame "
          f"({', '.join(sorted(images))})")
    print(f"drawing: median {statistics.median(draw):.3f} s CPU per frame {sorted(draw)}")
    print(f"PNG + event file: median {statistics.median(write):.3f} s CPU per frame")


# ----------------------------------------------------------------------------- GPU: GPT-2 small


def _gpt2_small(device: str) -> torch.nn.Module:
    import torch.nn as nn

    class Block(nn.Module):
        def __init__(self, d: int = 768, heads: int = 12):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
            self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

        def forward(self, x, mask):
            h = self.ln1(x)
            x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
            return x + self.mlp(self.ln2(x))

    class GPT(nn.Module):
        def __init__(self, vocab: int = 50257, ctx: int = 256, d: int = 768, layers: int = 12):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(ctx, d)
            self.blocks = nn.ModuleList(Block(d) for _ in range(layers))
            self.ln = nn.LayerNorm(d)
            self.head = nn.Linear(d, vocab, bias=False)

        def forward(self, idx):
            t = idx.shape[1]
            mask = torch.triu(torch.full((t, t), float("-inf"), device=idx.device), 1)
            x = self.wte(idx) + self.wpe(torch.arange(t, device=idx.device))
            for block in self.blocks:
                x = block(x, mask)
            return self.head(self.ln(x))

    return GPT().to(device)


def _gpt2_run(steps: int, every: int | None, log_dir: str) -> tuple[list[float], list[float]]:
    """Train; returns per-step times (s) and training-thread times of watcher.step (s)."""
    from ww_callbacks.integrations.torch import Watcher

    torch.manual_seed(0)
    model = _gpt2_small("cuda")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    gen = torch.Generator(device="cuda").manual_seed(0)
    watcher = Watcher(model, log_dir=log_dir, every_n_steps=every, optimizer=opt,
                      tensorboard=False) if every else None
    step_times, hook_times = [], []
    for _ in range(steps):
        idx = torch.randint(0, 50257, (16, 256), device="cuda", generator=gen)
        torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(idx[:, :-1]).flatten(0, 1),
                                                     idx[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if watcher is not None:
            t0 = time.perf_counter()
            watcher.step()
            hook_times.append(time.perf_counter() - t0)
        torch.cuda.synchronize()
        step_times.append(time.perf_counter() - start)
    if watcher is not None:
        watcher.close()
    return step_times, hook_times


def gpu_gpt2(steps: int) -> None:
    if not torch.cuda.is_available():
        print("== gpu-gpt2: skipped: no CUDA device")
        return
    print(f"== gpu-gpt2: {torch.cuda.get_device_name()}, {steps} steps, analysis every 50")
    with tempfile.TemporaryDirectory() as tmp:
        _gpt2_run(20, None, tmp)  # warm-up
        base, _ = _gpt2_run(steps, None, tmp)
        ours, hooks = _gpt2_run(steps, 50, os.path.join(tmp, "ww"))
    b, o = statistics.median(base[20:]), statistics.median(ours[20:])
    snapshot_costs = sorted(hooks)[-(steps // 50 + 1):]  # the calls that took a snapshot
    print(f"step time without: median {b * 1e3:.1f} ms; with: median {o * 1e3:.1f} ms; "
          f"ratio {o / b:.3f} (target <= 1.02)")
    print(f"mean step time without {statistics.mean(base[20:]) * 1e3:.1f} ms, with "
          f"{statistics.mean(ours[20:]) * 1e3:.1f} ms (ratio "
          f"{statistics.mean(ours[20:]) / statistics.mean(base[20:]):.3f})")
    print(f"training-thread cost per snapshot: median {statistics.median(snapshot_costs) * 1e3:.2f}"
          f" ms, max {max(snapshot_costs) * 1e3:.2f} ms (target <= 2 ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="cpu-lightning,gpu-gpt2")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=320)
    parser.add_argument("--variants", default="process,thread",
                        help="cpu-lightning: where[:max_duty],... (e.g. process:none)")
    parser.add_argument("--batches", type=int, default=60, help="cpu-cnn: batches per epoch")
    parser.add_argument("--picture-duty", default="0.005",
                        help="cpu-dashboards: the sinks' picture_duty ('none': no budget)")
    args = parser.parse_args()
    sections = args.only.split(",")
    if "cpu-lightning" in sections:
        cpu_lightning(args.epochs, args.repeats, args.variants)
    if "cpu-cnn" in sections:
        cpu_cnn(args.epochs, args.batches, args.repeats)
    if "cpu-drawing" in sections:
        cpu_drawing()
    if "cpu-dashboards" in sections:
        duty = None if args.picture_duty == "none" else float(args.picture_duty)
        cpu_dashboards(args.epochs, args.repeats, duty)
    if "gpu-gpt2" in sections:
        gpu_gpt2(args.steps)


if __name__ == "__main__":
    main()
