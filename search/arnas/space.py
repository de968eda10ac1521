"""Search spaces: which cell types sit where, how wide each stage is, and which ops an edge may take.

The ARNAS space (paper Sec. 3.2.3, PROTOCOLS.md "ARNAS search") has three cell types: *accurate*
cells before the second reduction, *robust* cells after it, and *reduce* cells at one and two thirds
of the depth; filters double at the first reduction and are kept at the second (1-2-2). The Table 4
ablations move the accurate/robust cells (``R-A-A``, ``A-R-A``, ``A-A-A``) or change the filters
(``1-2-3``, ``1-2-4``). The plain DARTS space (normal/reduce, 1-2-4, ``none`` among the ops) is here
for baselines. The layout rules (reductions at ``L//3`` and ``2L//3``, a reduction cell takes the
width of the stage it opens) are those of :class:`arnas_zoo.config.ModelConfig`, so that a
discretised genotype builds with the same macro it was searched in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from arnas_zoo.config import parse_filters
from arnas_zoo.errors import ConfigError
from arnas_zoo.primitives import ARNAS_PRIMITIVES, DARTS_PRIMITIVES

#: Stage placements of Table 4, written as in the paper (A = accurate, R = robust).
PLACEMENT_LETTERS = {"A": "accurate", "R": "robust", "N": "normal"}
SPACE_NAMES = ("arnas", "darts")
REDUCE = "reduce"


def parse_placement(text: str) -> tuple[str, str, str]:
    """``"A-A-R"`` -> ``("accurate", "accurate", "robust")``; ``"N-N-N"`` for DARTS' normal cells."""
    parts = [p.strip().upper() for p in str(text).split("-")]
    if len(parts) != 3 or any(p not in PLACEMENT_LETTERS for p in parts):
        raise ConfigError(
            f"placement: expected three stage letters from {sorted(PLACEMENT_LETTERS)} like 'A-A-R', got {text!r}"
        )
    return tuple(PLACEMENT_LETTERS[p] for p in parts)  # type: ignore[return-value]


@dataclass(frozen=True)
class SearchSpace:
    """The supernet's macro structure and op vocabulary (everything but the weights).

    ``space="arnas"`` searches the 7 ARNAS ops (no ``none``) over accurate/robust/reduce cells;
    ``space="darts"`` searches the 8 DARTS ops over normal/reduce cells.
    """

    space: str = "arnas"
    placement: str = "A-A-R"
    filters: str = "1-2-2"
    layers: int = 8
    init_channels: int = 24
    stem_multiplier: int = 3
    nodes: int = 4
    num_classes: int = 10
    in_channels: int = 3
    input_size: int = 32

    def __post_init__(self) -> None:
        if self.space not in SPACE_NAMES:
            raise ConfigError(f"space: expected one of {list(SPACE_NAMES)}, got {self.space!r}")
        stages = parse_placement(self.placement)
        parse_filters(self.filters)
        allowed = {"normal"} if self.space == "darts" else {"accurate", "robust"}
        if not set(stages) <= allowed:
            raise ConfigError(
                f"placement: space {self.space!r} has cell types {sorted(allowed)}, got {self.placement!r}"
                + ("; use 'N-N-N' for DARTS" if self.space == "darts" else "")
            )
        for key in ("layers", "init_channels", "stem_multiplier", "nodes", "num_classes", "in_channels", "input_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{key}: expected a positive integer, got {value!r}")
        if self.layers < 3:
            raise ConfigError(f"layers: expected at least 3 (two reduction cells), got {self.layers}")

    @classmethod
    def darts(cls, **kw: Any) -> SearchSpace:
        """The DARTS space (normal/reduce, 1-2-4, C=16 as in DARTS' search)."""
        base: dict[str, Any] = dict(space="darts", placement="N-N-N", filters="1-2-4", init_channels=16)
        base.update(kw)
        return cls(**base)

    # ---- derived layout --------------------------------------------------------------------------
    @property
    def primitives(self) -> tuple[str, ...]:
        return ARNAS_PRIMITIVES if self.space == "arnas" else DARTS_PRIMITIVES

    @property
    def stage_types(self) -> tuple[str, str, str]:
        return parse_placement(self.placement)

    @property
    def filter_multipliers(self) -> tuple[int, int, int]:
        return parse_filters(self.filters)

    @property
    def num_edges(self) -> int:
        """Edges per cell: node k reads the two cell inputs and the k earlier nodes (14 for 4 nodes)."""
        return sum(2 + k for k in range(self.nodes))

    def reduction_layers(self) -> tuple[int, int]:
        return (self.layers // 3, 2 * self.layers // 3)

    def layer_cell_types(self) -> list[str]:
        first, second = self.reduction_layers()
        stages = self.stage_types
        out = []
        for i in range(self.layers):
            if i in (first, second):
                out.append(REDUCE)
            else:
                out.append(stages[0 if i < first else (1 if i < second else 2)])
        return out

    def layer_channels(self) -> list[int]:
        first, second = self.reduction_layers()
        mult = self.filter_multipliers
        return [self.init_channels * mult[0 if i < first else (1 if i < second else 2)] for i in range(self.layers)]

    @property
    def cell_types(self) -> tuple[str, ...]:
        """Cell types present in this supernet, each with its own architecture tensor, in a fixed order."""
        present = set(self.layer_cell_types())
        order = ("accurate", "robust", "normal", REDUCE)
        return tuple(c for c in order if c in present)

    def model_config_overrides(self) -> dict[str, Any]:
        """Macro fields for :class:`arnas_zoo.config.ModelConfig` so the evaluation network keeps this layout."""
        return {"placement": self.stage_types, "filter_multipliers": self.filter_multipliers, "reduction_cell": REDUCE}

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}
