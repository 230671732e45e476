"""A record of a layer or parameter that was not analysed, and why
(``analyze(...).attrs["skipped"]``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Skip:
    """One layer (or parameter) passed over: where it is and the reason, in words. ``params``:
    the names of the model's parameters it covers (empty when unknown, e.g. Keras layers)."""

    layer_id: int
    name: str
    longname: str
    reason: str
    params: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        """Plain dict, for ``DataFrame.attrs`` and JSON."""
        out = asdict(self)
        out["params"] = list(self.params)
        return out
