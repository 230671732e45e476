"""How many bytes does the history take per analysis, with and without the stored spectra?

A 16-layer MLP (widths 64..512, seeded weights, no training: the sizes depend on the layer count
and the spectra's length, not on their shape) is analysed once with the traps (``randomize``)
and its eigenvalues kept, as the watch session does; the analysis is written with
:class:`~ww_callbacks.history.HistoryWriter`: the history line, an ``"actions"`` line (two
policies: LR scales of 16 layers, a stop reason) and the compact ESDs in ``ww_spectra.jsonl``.
Prints bytes per analysis and per layer for each, and the ratio of the sidecar line to the
history line (what storing the ESDs at every analysis would add to the main file).

    python bench/history_size.py [--layers 16]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ww_callbacks import analyze
from ww_callbacks.esd import compact_spectra
from ww_callbacks.history import HISTORY_FILE, HistoryWriter
from ww_callbacks.results import AnalysisResult
from ww_callbacks.scalars import model_summary


def model(n_layers: int) -> nn.Module:
    gen = torch.Generator().manual_seed(0)
    widths = [64 * (1 + i % 8) for i in range(n_layers + 1)]
    layers = []
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        lin = nn.Linear(a, b)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(b, a, generator=gen) / a ** 0.5)
        layers += [lin, nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=16)
    args = parser.parse_args()
    details = analyze(model(args.layers), randomize=True, keep_spectra=True)
    spectra = details.attrs.pop("spectra")
    result = AnalysisResult(100, 1, details, model_summary(details), 0.0, 0.1, True, spectra)
    with tempfile.TemporaryDirectory() as tmp:
        writer = HistoryWriter(Path(tmp) / HISTORY_FILE)
        writer.append(result)
        record_bytes = writer.path.stat().st_size
        names = list(spectra)
        writer.append_actions(100, {"lr_scale": {n: 1.0 + i / 100 for i, n in enumerate(names)},
                                    "stop_reason": None})
        actions_bytes = writer.path.stat().st_size - record_bytes
        compact = compact_spectra(result)
        writer.append_spectra(100, compact)
        spectra_bytes = writer.spectra_path.stat().st_size
        writer.close()
    n = len(names)
    evals = int(np.sum([np.size(v) for v in spectra.values()]))
    print(f"model: {n} layers analysed, {evals} eigenvalues in all (randomize=True)")
    print(f"history line (analysis record): {record_bytes} B per analysis, "
          f"{record_bytes / n:.0f} B per layer")
    print(f"actions line (16 LR scales, stop reason): {actions_bytes} B per analysis")
    print(f"stored ESDs (ww_spectra.jsonl line): {spectra_bytes} B per stored analysis, "
          f"{spectra_bytes / n:.0f} B per layer per stored ESD")
    print(f"history bytes per analysis: {record_bytes + actions_bytes} without spectra, "
          f"{record_bytes + actions_bytes + spectra_bytes} with spectra at that analysis "
          f"(x{(record_bytes + actions_bytes + spectra_bytes) / (record_bytes + actions_bytes):.2f}"
          f"); at the default esd_every=5: "
          f"{record_bytes + actions_bytes + spectra_bytes / 5:.0f} B per analysis on average")


if __name__ == "__main__":
    main()
