"""The old import paths of the watch session (issue 19) keep working: the same objects, with one
DeprecationWarning per moved name, and none for the new paths."""

from __future__ import annotations

import subprocess
import sys
import textwrap

_CHECK = textwrap.dedent("""
    import warnings
    warnings.simplefilter("always")
    with warnings.catch_warnings(record=True) as seen:
        from ww_callbacks.session import WatchSession, read_states, STATES_KEPT, WAIT_TIMEOUT_S
        from ww_callbacks.sinks import Sink
        assert not [w for w in seen if issubclass(w.category, DeprecationWarning)], seen
        from ww_callbacks.watcher import Watcher, WatcherWarning, DEFAULT_MAX_DUTY, Policy
        from ww_callbacks.watcher import Watcher as again
        from ww_callbacks.watcher import Sink as old_sink
        import ww_callbacks.watcher as old
        assert old.Watcher is Watcher
        from ww_callbacks.distributed.session import DistributedSnapshots
        from ww_callbacks.analysis import InitialBase
        from ww_callbacks.layers.composite import FrozenCopies
    from ww_callbacks.distributed.snapshots import DistributedSnapshots as new_snapshots
    from ww_callbacks.faults import WatcherWarning as new_warning
    from ww_callbacks.policies.base import Policy as new_policy
    from ww_callbacks.worker import DEFAULT_MAX_DUTY as new_duty
    assert Watcher is again is WatchSession and old_sink is Sink
    assert (WatcherWarning, Policy, DEFAULT_MAX_DUTY) == (new_warning, new_policy, new_duty)
    assert DistributedSnapshots is new_snapshots
    from ww_callbacks.session.host_copies import InitialBase as new_base
    from ww_callbacks.snapshot import FrozenCopies as new_copies
    assert InitialBase is new_base and FrozenCopies is new_copies
    moved = [str(w.message) for w in seen if issubclass(w.category, DeprecationWarning)]
    assert len(moved) == 8, moved  # Watcher (once), WatcherWarning, DEFAULT_MAX_DUTY, Policy,
    #                                Sink, DistributedSnapshots, InitialBase, FrozenCopies
    assert any("ww_callbacks.watcher.Watcher is deprecated, use "
               "ww_callbacks.session.WatchSession" in m for m in moved), moved
    try:
        old.no_such_name
    except AttributeError:
        pass
    else:
        raise AssertionError("an unknown name must raise AttributeError")
    print("ok")
""")


def test_old_paths_are_the_same_objects_and_warn_once_per_name():
    out = subprocess.run([sys.executable, "-c", _CHECK], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
