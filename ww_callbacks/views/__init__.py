"""The browser views of a run, as real asset files of the package (ES modules and CSS; no
network, no CDN, nothing fetched at run time), shared by the TensorBoard tab
(:mod:`ww_callbacks.integrations.tensorboard_plugin`) and, later, the report.

- ``heatmap.js``: the alpha heatmap (continuous colour scale with 2 and 6 marked, layer names on
  every row elided in the middle with the full name on hover, hover with layer, step, alpha,
  traps and number of eigenvalues) and the table it draws, fed incrementally.
- ``tensorboard_tab.js``: the TensorBoard tab's page (run selector, polling).
- ``views.css``: their style.
"""

from __future__ import annotations

from importlib import resources

#: the asset files of this package
ASSET_FILES = ("heatmap.js", "tensorboard_tab.js", "views.css")


def asset(name: str) -> bytes:
    """The bytes of one asset file (``name`` among :data:`ASSET_FILES`)."""
    if name not in ASSET_FILES:
        raise ValueError(f"no view asset named {name!r}; there are {', '.join(ASSET_FILES)}")
    return resources.files(__package__).joinpath(name).read_bytes()
