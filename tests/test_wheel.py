"""What users get is the built wheel, not this checkout: build it, install it with its extras into
a fresh virtual environment (torch from the local cache, as ``.ci/run`` does), import every public
module from the installed copy and train for two epochs with the Lightning callback and a policy.

Slow (a fresh venv, about a minute with a warm pip cache); CI runs it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXTRAS = "lightning,keras,transformers,tensorboard,wandb,plot,safetensors"

SCRIPT = textwrap.dedent('''
    import importlib, os, pkgutil, sys
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import ww_callbacks, ww_callbacks.integrations
    site = sys.argv[1]
    assert ww_callbacks.__file__.startswith(site), ww_callbacks.__file__
    modules = []
    for package in (ww_callbacks, ww_callbacks.integrations):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if info.name.rsplit(".", 1)[-1].startswith("_"):
                continue
            module = importlib.import_module(info.name)
            assert module.__file__.startswith(site), module.__file__
            modules.append(info.name)
    print("imported", len(modules), "modules")
    from importlib.metadata import entry_points
    plugins = {e.name: e for e in entry_points(group="tensorboard_plugins")}
    assert "htsr" in plugins and plugins["htsr"].load().plugin_name == "htsr", plugins
    from ww_callbacks.views import ASSET_FILES, asset
    assert all(asset(name) for name in ASSET_FILES)

    import lightning as L
    import torch
    import torch.nn as nn
    from ww_callbacks.integrations.lightning import WeightWatcherCallback
    from ww_callbacks.policies import HTSREarlyStopping

    class MLP(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    generator = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(256, 64, generator=generator),
                                          torch.randint(0, 10, (256,), generator=generator))
    callback = WeightWatcherCallback(policies=[HTSREarlyStopping(patience=2)], wait="epoch")
    trainer = L.Trainer(max_epochs=2, callbacks=[callback], enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=".")
    trainer.fit(MLP(), torch.utils.data.DataLoader(data, batch_size=32))
    rows = ww_callbacks.load_history(os.path.dirname(callback.history_path))
    print("steps", sorted(set(rows["step"])))
    assert sorted(set(rows["step"])) == [0, 8, 16], sorted(set(rows["step"]))
    assert set(rows["longname"]) == {"net.0", "net.2"}
    # the report's page assets (ww_callbacks/assets/*.html, *.css, *.js) ship in the wheel
    from ww_callbacks.report import write_report
    page = write_report(os.path.dirname(callback.history_path)).read_text()
    assert 'id="ww-data"' in page and "data-drawn" in page and "'sha256-" in page, page[:2000]
    print("WHEEL OK")
''')


def _run(args: list[str], cwd: Path, timeout: float = 900) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-4000:]}\n" \
                                 f"{done.stderr[-4000:]}"
    return done.stdout


@pytest.mark.slow
def test_wheel_in_fresh_venv_imports_everything_and_trains(tmp_path):
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(REPO), "-w", str(dist)],
         tmp_path)
    wheels = list(dist.glob("ww_callbacks-*.whl"))
    assert len(wheels) == 1, wheels
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    python = venv / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "-q", "torch==2.13.0"], tmp_path)
    _run([str(python), "-m", "pip", "install", "-q", f"{wheels[0]}[{EXTRAS}]"], tmp_path)
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                tmp_path).strip()
    work = tmp_path / "work"  # not the checkout: nothing of it is importable from here
    work.mkdir()
    (work / "check.py").write_text(SCRIPT)
    out = _run([str(python), "-P", "check.py", site], work)
    assert "WHEEL OK" in out, out


@pytest.mark.slow
def test_wheel_ships_the_htsr_tab(tmp_path):
    """The TensorBoard plugin's entry point and the views' asset files are in the wheel."""
    import zipfile

    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
          str(REPO), "-w", str(dist)], tmp_path)
    (wheel,) = dist.glob("ww_callbacks-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        text = zf.read(entry).decode()
    assert "[tensorboard_plugins]" in text
    assert "htsr = ww_callbacks.integrations.tensorboard_plugin:HtsrPlugin" in text
    from ww_callbacks.views import ASSET_FILES

    for asset in (*ASSET_FILES, "__init__.py"):
        assert f"ww_callbacks/views/{asset}" in names, asset
    assert "ww_callbacks/integrations/tensorboard_plugin.py" in names
