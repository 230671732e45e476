"""The old import paths of the watch session (issue 19) keep working: the same objects, with one
DeprecationWarning per moved name, and none for the new paths."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

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


def test_one_wait_api_the_old_wait_for_result_warns_once():
    """``wait_idle`` is the session's one way to wait; ``wait_for_result`` (the first result
    only) still works and warns once, as moved names do."""
    from ww_callbacks import _moved
    from ww_callbacks.session import WatchSession

    _moved._warned_methods.discard("wait_for_result")  # as in a fresh process
    session = WatchSession(analysis_in="thread")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert session.wait_for_result(timeout=0.1) is False  # nothing asked for
            session.wait_for_result(timeout=0.1)
        deprecations = [w for w in caught if issubclass(w.category, DeprecationWarning)]
        assert len(deprecations) == 1  # once per process
        assert "wait_idle" in str(deprecations[0].message)
        assert session.wait_idle(1.0)
    finally:
        session.close(final=False)
