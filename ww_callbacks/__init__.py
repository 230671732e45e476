"""ww_callbacks: live, data-free HTSR diagnostics of neural networks while they train.

The framework-free core: weights in, metrics out. ``analyze`` gives WeightWatcher 0.7.7's
per-layer metrics, ``fit_powerlaw`` its power-law fit, ``load_history`` reads back what a watched
training run recorded and ``write_report`` turns it into one HTML file; integrations with
training libraries live in ``ww_callbacks.integrations``.
"""

from .analysis import analyze, columns_for, summarize
from .history import load_history
from .picture_queue import wait_for_pictures
from .powerlaw import PowerLawFit, fit_powerlaw
from .report import write_report

__version__ = "0.1.0"

__all__ = ["PowerLawFit", "analyze", "columns_for", "fit_powerlaw", "load_history", "summarize",
           "wait_for_pictures", "write_report", "__version__"]
