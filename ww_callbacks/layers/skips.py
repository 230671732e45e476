"""A record of a layer that was not analysed, and why (``analyze(...).attrs["skipped"]``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Skip:
    """One layer passed over: where it is and the reason, in words."""

    layer_id: int
    name: str
    longname: str
    reason: str

    def as_dict(self) -> dict:
        """Plain dict, for ``DataFrame.attrs`` and JSON."""
        return asdict(self)
