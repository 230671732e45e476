"""A shared log folder where someone planted symlinks (issue 21.7): the history's temporary files
(a resume's rewrite, the owner file) are created with ``mkstemp`` in the folder and never written
through a link under a predictable ``.tmp`` name; a link planted as the history itself is
refused, not followed; the report's folder walk stops at its bound."""

from __future__ import annotations

import os
import warnings

import pytest

from ww_callbacks.faults import WatcherWarning
from ww_callbacks.history import HISTORY_FILE, OWNER_SUFFIX
from ww_callbacks.run_folder import walk
from ww_callbacks.session import WatchSession as Watcher


def _model():
    """A small torch MLP (the walk test needs no torch: skipped only where a model is)."""
    nn = pytest.importorskip("torch.nn")
    return nn.Sequential(nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 16))


def test_temp_files_are_never_written_through_planted_links(tmp_path):
    run = tmp_path / "shared"
    run.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    with Watcher(log_dir=run, traps_every=0) as watcher:
        for step in (0, 10, 20):
            watcher.snapshot(_model(), step)
            watcher.wait_idle()
    # every name the old code wrote its temporary files under, pointing at the victim
    planted = [HISTORY_FILE + ".tmp", HISTORY_FILE + OWNER_SUFFIX + ".tmp",
               f"{HISTORY_FILE}{OWNER_SUFFIX}.{os.getpid()}.tmp"]
    for name in planted:
        (run / name).symlink_to(victim)
    resumed = Watcher(log_dir=run, traps_every=0)  # claims the folder: writes its owner file
    resumed.resume_from(10)  # rewrites the history without step 20
    with resumed:
        resumed.snapshot(_model(), 20)
    assert victim.read_text() == "precious\n"
    assert all((run / name).is_symlink() for name in planted)  # left alone
    leftovers = [p.name for p in run.iterdir() if p.name.endswith(".tmp")
                 and p.name not in planted]
    assert leftovers == []  # mkstemp's files were renamed into place or removed
    from ww_callbacks.history import read_records

    assert [r["step"] for r in read_records(run)] == [0, 10, 20]


def test_a_link_planted_as_the_history_is_refused(tmp_path):
    run = tmp_path / "shared"
    run.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (run / HISTORY_FILE).symlink_to(victim)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Watcher(log_dir=run, traps_every=0) as watcher:
            watcher.snapshot(_model(), 0)
            watcher.wait_idle()
            watcher.poll()
    assert victim.read_text() == "precious\n"
    messages = [str(c.message) for c in caught if issubclass(c.category, WatcherWarning)]
    assert any("history" in m and "Too many levels of symbolic links" in m for m in messages)


def test_the_folder_walk_is_bounded_and_skips_links(tmp_path):
    root = tmp_path / "run"
    deep = root
    for i in range(8):
        deep = deep / f"d{i}"
        deep.mkdir(parents=True)
        (deep / "f.txt").write_text("x")
    for i in range(40):  # the 40 "." links: each one a loop
        (root / f"dot{i}").symlink_to(".", target_is_directory=True)
    files, truncated = walk(root, max_depth=4)
    assert not truncated
    assert [rel for rel, _ in files] == ["d0/f.txt", "d0/d1/f.txt", "d0/d1/d2/f.txt",
                                         "d0/d1/d2/d3/f.txt"]
    files, truncated = walk(root, max_depth=4, max_entries=10)
    assert truncated and len(files) <= 10
