"""The HTSR tab's cost on a large run: first load and one refresh for 500 layers x 2000 analyses.

Writes a history of ``--layers`` x ``--analyses`` (rows with every column of a real analysis row
with traps, alphas drawn from a private generator), then asks the plugin's ``records`` route
(TensorBoard's own WSGI wrappers, in this process) for it as the page does: from offset 0 while
``more``, then once more after one analysis is appended. Prints, for the first answer, the whole
first load and the refresh: server time, bytes sent, and the history's bytes for comparison.
With ``--spectra N`` (default 400: every 5th of 2000 analyses) an ESD sidecar of N stored
analyses x ``--layers`` compact ESDs (``ww_callbacks.esd.compact_esd`` of random spectra) is
written too, and the ``spectra`` route is measured as the page used it (every layer's, the whole
sidecar on opening) against the per-layer form it uses now (``layer=``: the first layer on
opening, another layer selected, a poll, one more stored analysis).
With ``--chromium``, the page itself (the tab's ES modules, served with the plugin's routes by a
local werkzeug server that counts the bytes it sends per route) is opened in headless Chromium
and the time to the first painted column, to the whole heatmap, to the ESD drawn, to every view
drawn at the last analysis, to another layer's ESD drawn after it is chosen, and from one more
analysis written to its column painted is measured.

    python bench/tensorboard_tab.py [--layers 500] [--analyses 2000] [--spectra 400] [--chromium]

Goals (issue 20): first paint <= 2 s, a refresh <= 200 ms server time, only new records sent.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from tensorboard.plugins import base_plugin
from werkzeug.test import Client

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ww_callbacks.esd import SPECTRA_FILE, compact_esd  # noqa: E402
from ww_callbacks.history import HISTORY_FILE  # noqa: E402
from ww_callbacks.integrations.tensorboard_plugin import HtsrPlugin  # noqa: E402

#: one row of a real analysis with traps (bench/history_size.py's model, layer 0), its values
#: replaced per layer and step
ROW = {"layer_id": 0, "name": "Linear", "longname": "", "layer_type": "dense", "N": 128, "M": 64,
       "Q": 2.0, "rf": 1, "num_evals": 64, "has_esd": True, "lambda_max": 2.8415,
       "alpha": 3.0, "alpha_weighted": 1.3620, "D": 0.0612, "sigma": 0.2114, "xmin": 1.0893,
       "xmax": 2.8415, "num_pl_spikes": 23, "status": "success", "warning": "",
       "log_norm": 1.7071, "log_spectral_norm": 0.4535, "log_alpha_norm": 1.4412,
       "spectral_norm": 2.8415, "norm": 50.947, "stable_rank": 17.929, "entropy": 0.9633,
       "mp_softrank": 0.3519, "rand_num_spikes": 0, "rand_bulk_max": 2.7996,
       "rand_lambda_max": 2.8105, "rand_sigma_mp": 1.0, "rand_distance": 0.0031}


def write_history(path: Path, layers: int, analyses: int) -> None:
    rng = np.random.default_rng(0)
    names = [f"model.encoder.layer.{i // 6}.block.{['q', 'k', 'v', 'o', 'up', 'down'][i % 6]}"
             for i in range(layers)]
    with open(path, "w", encoding="utf-8") as fh:
        for step in range(analyses):
            fh.write(json.dumps(record(step, names, rng)) + "\n")


def record(step: int, names: list[str], rng: np.random.Generator) -> dict:
    alphas = rng.uniform(1.5, 7.0, len(names))
    rows = [{**ROW, "layer_id": i, "longname": n, "alpha": float(a)}
            for i, (n, a) in enumerate(zip(names, alphas, strict=True))]
    return {"format": 1, "step": step * 10, "epoch": step, "wall_time": 1.7e9 + step,
            "duration_s": 0.5, "randomized": True, "summary": {"ww/alpha_mean": 3.0},
            "layers": rows, "writer": {"run_id": "bench", "pid": 1, "host": "bench"}}


def write_sidecar(path: Path, names: list[str], stored: int, analyses: int) -> None:
    """``stored`` lines of every layer's compact ESD (a real one per layer: random
    eigenvalues of a 128 x 64 layer with traps; its alpha varied per step), as the history's
    writer writes them."""
    rng = np.random.default_rng(2)
    every = max(1, analyses // max(stored, 1))
    templates = []
    for _ in names:
        evals = rng.pareto(2.5, 64) + 0.05
        rand = rng.uniform(0.05, 2.8, 64)
        templates.append(compact_esd(evals, {**ROW, "rand_num_spikes": 2}, rand))
    with open(path, "w", encoding="utf-8") as fh:
        for k in range(stored):
            noise = rng.integers(0, 3, (len(names), len(templates[0]["counts"])))
            alphas = rng.uniform(1.5, 7.0, len(names))
            layers = {n: {**t, "alpha": round(float(a), 6),  # the bins move a little too
                          "counts": [c + int(e) for c, e in zip(t["counts"], z, strict=True)]}
                      for n, t, a, z in zip(names, templates, alphas, noise, strict=True)}
            fh.write(json.dumps({"step": k * every * 10, "layers": layers,
                                 "writer": {"run_id": "bench", "pid": 1, "host": "bench"}})
                     + "\n")


def ask_spectra(app, run: str, offset: int, layer: str | None) -> tuple[dict, int, float]:
    query = {"run": run, "offset": str(offset), **({} if layer is None else {"layer": layer})}
    start = time.perf_counter()
    response = Client(app).get("/spectra", query_string=query)
    body = response.get_data()
    elapsed = time.perf_counter() - start
    assert response.status_code == 200, body[:200]
    return json.loads(body), len(body), elapsed


def read_all_spectra(app, run: str, layer: str | None, offset: int = 0) -> tuple[int, int, float,
                                                                              int, int]:
    """Ask from ``offset`` while ``more``: (records, bytes sent, server time, calls, next)."""
    records, sent, spent, calls = 0, 0, 0.0, 0
    while True:
        answer, nbytes, elapsed = ask_spectra(app, run, offset, layer)
        records += len(answer["records"])
        sent, spent, calls, offset = sent + nbytes, spent + elapsed, calls + 1, answer["next"]
        if not answer["more"]:
            return records, sent, spent, calls, offset


def spectra_bench(logdir: Path, names: list[str], stored: int, analyses: int) -> None:
    """The ``spectra`` route: the whole sidecar (the page before) against one layer's."""
    sidecar = logdir / "run" / SPECTRA_FILE
    t0 = time.perf_counter()
    write_sidecar(sidecar, names, stored, analyses)
    size = sidecar.stat().st_size
    print(f"ESD sidecar: {stored} stored analyses x {len(names)} layers, {size / 1e6:.1f} MB "
          f"({size / stored / len(names):.0f} B per layer per stored ESD), written in "
          f"{time.perf_counter() - t0:.0f} s")
    app = HtsrPlugin(base_plugin.TBContext(logdir=str(logdir))).get_plugin_apps()["/spectra"]
    n, sent, spent, calls, _ = read_all_spectra(app, "run", None)
    print(f"before (every layer's, as the page asked on opening): {n} records, "
          f"{sent / 1e6:.1f} MB sent in {calls} answers, {spent:.2f} s server time")
    plugin = HtsrPlugin(base_plugin.TBContext(logdir=str(logdir)))  # a fresh server: no index
    app = plugin.get_plugin_apps()["/spectra"]
    n, sent, spent, calls, nxt = read_all_spectra(app, "run", names[0])
    assert n == stored, n
    print(f"now, opening (the first layer's, index built on the way): {n} ESDs, "
          f"{sent / 1e3:.1f} KB sent in {calls} answers, {spent:.2f} s server time")
    other = names[len(names) // 2]
    n, sent, spent, calls, _ = read_all_spectra(app, "run", other)
    print(f"now, another layer chosen: {n} ESDs, {sent / 1e3:.1f} KB sent, "
          f"{spent * 1e3:.0f} ms server time")
    answer, nbytes, elapsed = ask_spectra(app, "run", nxt, names[0])
    print(f"now, a poll with nothing new: {nbytes} B, {elapsed * 1e3:.1f} ms server time")
    rng = np.random.default_rng(3)
    with open(sidecar, "a", encoding="utf-8") as fh:
        line = json.dumps({"step": stored * 10 ** 6, "layers": {
            n: compact_esd(rng.pareto(2.5, 64) + 0.05, ROW) for n in names}}) + "\n"
        fh.write(line)
    answer, nbytes, elapsed = ask_spectra(app, "run", nxt, names[0])
    assert len(answer["records"]) == 1 and answer["stored"] == stored + 1, answer["stored"]
    print(f"now, a poll after one more stored analysis ({len(line) / 1e3:.0f} KB line): 1 ESD, "
          f"{nbytes} B sent, {elapsed * 1e3:.1f} ms server time")


def ask(app, run: str, offset: int) -> tuple[dict, int, float]:
    start = time.perf_counter()
    response = Client(app).get("/records", query_string=f"run={run}&offset={offset}")
    body = response.get_data()
    elapsed = time.perf_counter() - start
    assert response.status_code == 200, body[:200]
    return json.loads(body), len(body), elapsed


def chromium_paint(logdir: Path, run: str, expect: int, append, other: str | None = None
                   ) -> dict:
    """Seconds from navigation to the first painted column, to ``expect`` columns, to the ESD
    drawn, to every view drawn at the last analysis (the flow's step), to layer ``other``'s
    ESD drawn after it is chosen in the ESD view's select, and from ``append()`` (one more
    analysis written) to its column painted (the page polls every 2 s); ``sent``: bytes the
    server sent per route until every view was drawn, and for the other layer's choice."""
    from werkzeug.serving import make_server
    from werkzeug.wrappers import Request, Response

    from tests.chromium_pipe import Browser

    plugin = HtsrPlugin(base_plugin.TBContext(logdir=str(logdir)))
    apps = plugin.get_plugin_apps()
    page = ('<!doctype html><meta charset="utf-8"><body><script type="module">'
            'import {render} from "./index.js"; render();</script></body>')

    sent: dict[str, int] = {}

    @Request.application
    def app(request: Request):
        prefix = "/data/plugin/htsr"
        if request.path == f"{prefix}/page.html":
            return Response(page, content_type="text/html")
        route = request.path[len(prefix):]
        if request.path.startswith(prefix) and route in apps:
            response = Response.from_app(apps[route], request.environ)
            sent[route] = sent.get(route, 0) + len(response.get_data())
            return response
        return Response("not found", status=404)

    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    browser = Browser("/usr/bin/chromium", Path(tempfile.mkdtemp()) / "profile",
                      width=1400, height=1000)
    try:
        start = time.monotonic()
        browser.open(f"http://127.0.0.1:{server.server_port}/data/plugin/htsr/page.html",
                     wait=False)
        out = {"first": None, "full": None, "esd": None, "views": None, "other": None,
               "refresh": None, "sent": {}, "sent_other": {}}
        probe = ("(() => { const c = document.querySelector('canvas.ww-heatmap-canvas');"
                 " const f = document.querySelector('svg.ww-flow-svg');"
                 " const e = document.querySelector('svg.ww-esd-svg');"
                 " return JSON.stringify([c ? Number(c.dataset.columns) : 0,"
                 " f ? f.dataset.step : '', e ? e.dataset.layer || '' : '',"
                 " e ? e.dataset.step || '' : '']); })()")

        def state() -> tuple[int, str]:
            columns, step, layer, esd = json.loads(browser.call(
                "Runtime.evaluate", {"expression": probe, "returnByValue": True}, page=True,
                timeout=600)["result"]["value"])
            state.esd = (layer, esd)
            return columns, step

        while time.monotonic() - start < 600:
            columns, step = state()
            now = time.monotonic() - start
            if columns and out["first"] is None:
                out["first"] = now
            if state.esd[1] and out["esd"] is None:
                out["esd"] = now
            if columns >= expect and out["full"] is None:
                out["full"] = now
            if columns >= expect and step == str((expect - 1) * 10):
                out["views"] = now
                break
            time.sleep(0.05)
        else:
            return out
        while out["esd"] is None and time.monotonic() - start < 600:
            state()
            if state.esd[1]:
                out["esd"] = time.monotonic() - start
            time.sleep(0.02)
        out["sent"] = dict(sent)
        if other is not None:
            before = dict(sent)
            chosen = time.monotonic()
            browser.call("Runtime.evaluate", {"expression": (
                "(() => { const s = document.querySelector('select.ww-esd-layer');"
                f" s.value = {json.dumps(other)}; s.dispatchEvent(new Event('change')); }})()")},
                page=True, timeout=600)
            while time.monotonic() - chosen < 120:
                state()
                if state.esd == (other, state.esd[1]) and state.esd[1]:
                    out["other"] = time.monotonic() - chosen
                    break
                time.sleep(0.02)
            out["sent_other"] = {k: v - before.get(k, 0) for k, v in sent.items()
                                 if v != before.get(k, 0)}
        written = time.monotonic()
        append()
        while time.monotonic() - written < 60:
            if state()[0] > expect:
                out["refresh"] = time.monotonic() - written
                break
            time.sleep(0.05)
        return out
    finally:
        browser.close()
        server.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=500)
    parser.add_argument("--analyses", type=int, default=2000)
    parser.add_argument("--spectra", type=int, default=400,
                        help="stored analyses in the ESD sidecar (0: none)")
    parser.add_argument("--chromium", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        logdir = Path(tmp)
        run = logdir / "run"
        run.mkdir()
        path = run / HISTORY_FILE
        t0 = time.perf_counter()
        write_history(path, args.layers, args.analyses)
        size = path.stat().st_size
        print(f"history: {args.layers} layers x {args.analyses} analyses, {size / 1e6:.0f} MB "
              f"({size / args.analyses / 1e3:.0f} KB per analysis), written in "
              f"{time.perf_counter() - t0:.0f} s")
        plugin = HtsrPlugin(base_plugin.TBContext(logdir=str(logdir)))
        app = plugin.get_plugin_apps()["/records"]
        offset, sent, spent, calls, records, first = 0, 0, 0.0, 0, 0, None
        while True:
            answer, nbytes, elapsed = ask(app, "run", offset)
            calls += 1
            sent += nbytes
            spent += elapsed
            records += len(answer["records"])
            if first is None:
                first = (len(answer["records"]), nbytes, elapsed)
            offset = answer["next"]
            if not answer["more"]:
                break
        assert records == args.analyses, records
        print(f"first answer: {first[0]} analyses, {first[1] / 1e3:.0f} KB sent, "
              f"{first[2] * 1e3:.0f} ms server time")
        print(f"first load (all {calls} answers): {records} analyses, {sent / 1e6:.1f} MB sent "
              f"({sent / size:.3f} of the history's bytes), {spent:.2f} s server time")
        start, offset2, more = time.perf_counter(), 0, True
        while more:  # a reload or a second viewer: full chunks come from the plugin's cache
            again, _, _ = ask(app, "run", offset2)
            offset2, more = again["next"], again["more"]
        print(f"second first load (page reloaded): {time.perf_counter() - start:.2f} s "
              f"server time")
        rng = np.random.default_rng(1)
        names = [r["longname"] for r in json.loads(path.open().readline())["layers"]]
        with open(path, "a", encoding="utf-8") as fh:
            line = json.dumps(record(args.analyses, names, rng)) + "\n"
            fh.write(line)
        answer, nbytes, elapsed = ask(app, "run", offset)
        assert [r["step"] for r in answer["records"]] == [args.analyses * 10]
        print(f"refresh after one new analysis: {len(answer['records'])} analysis, "
              f"{nbytes / 1e3:.1f} KB sent (its history line: {len(line) / 1e3:.0f} KB), "
              f"{elapsed * 1e3:.0f} ms server time (goal 200 ms)")
        answer, nbytes, elapsed = ask(app, "run", answer["next"])
        print(f"refresh with nothing new: {nbytes} B sent, {elapsed * 1e3:.1f} ms server time")
        if args.spectra:
            spectra_bench(logdir, names, args.spectra, args.analyses)
        if args.chromium:
            def append() -> None:
                with open(path, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(record(args.analyses + 1, names, rng)) + "\n")

            got = chromium_paint(logdir, "run", args.analyses + 1, append,
                                 names[len(names) // 2] if args.spectra else None)
            when = {k: "not within 600 s" if v is None else f"after {v:.1f} s"
                    for k, v in got.items() if not k.startswith("sent")}
            print(f"Chromium: first column painted {got['first'] or float('nan'):.2f} s after "
                  f"navigation (goal 2 s); all {args.analyses + 1} columns {when['full']}; "
                  f"every view (heatmap, flow, lines, ESD, alerts) at the last analysis "
                  f"{when['views']}; one more analysis written: its column painted "
                  f"{when['refresh']} (polls every 2 s)")
            kb = {k: f"{v / 1e3:.1f} KB" for k, v in got["sent"].items() if k != "/index.js"
                  and not k.endswith((".js", ".css"))}
            print(f"Chromium: the ESD (first layer) drawn {when['esd']}; bytes sent (on the "
                  f"wire: TensorBoard's answers are gzipped for a browser) until every view "
                  f"and the ESD were drawn: {kb}")
            if args.spectra:
                print(f"Chromium: another layer chosen in the ESD view's select: its ESD drawn "
                      f"{when['other']}, sent {got['sent_other']} B (gzipped)")


if __name__ == "__main__":
    main()
