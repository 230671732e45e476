"""ww_callbacks: live, data-free HTSR diagnostics of neural networks while they train.

The framework-free core: weights in, metrics out. ``analyze`` gives WeightWatcher 0.7.7's
per-layer metrics, ``fit_powerlaw`` its power-law fit, ``load_history`` reads back what a watched
training run recorded and ``write_report`` turns it into one HTML file; integrations with
training libraries live in ``ww_callbacks.integrations``.

The public names are imported when first used (module ``__getattr__``), so that importing one
submodule (``ww_callbacks.powerlaw``) loads neither the report, the picture queue nor pandas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:  # what the lazy names are, for type checkers and IDEs
    from .analysis import columns_for, summarize
    from .front_door import analyze
    from .history import load_history
    from .picture_queue import wait_for_pictures
    from .powerlaw import PowerLawFit, fit_powerlaw
    from .report import write_report

__all__ = ["PowerLawFit", "analyze", "columns_for", "fit_powerlaw", "load_history", "summarize",
           "wait_for_pictures", "write_report", "__version__"]


def __getattr__(name: str) -> Any:
    """The public functions, each imported from its module on first use."""
    if name == "analyze":
        from .front_door import analyze as value
    elif name in ("columns_for", "summarize"):
        from . import analysis as module

        value = getattr(module, name)
    elif name == "load_history":
        from .history import load_history as value
    elif name == "wait_for_pictures":
        from .picture_queue import wait_for_pictures as value
    elif name in ("PowerLawFit", "fit_powerlaw"):
        from . import powerlaw as module

        value = getattr(module, name)
    elif name == "write_report":
        from .report import write_report as value
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
