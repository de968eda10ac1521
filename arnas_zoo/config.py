"""The model configuration: everything needed to rebuild a network exactly (``config.json``).

:class:`ModelConfig` is a frozen dataclass; ``arch`` names the builder family (``"cell"`` for
genotype-built cell networks, ``"resnet18"``, ``"wrn34_10"``, ...; see :mod:`arnas_zoo.models`).
Layout of a cell network with ``L`` layers: a 3x3 conv + BN stem with ``stem_multiplier * C``
channels, then ``L`` cells; cells ``L//3`` and ``2L//3`` reduce. Stage ``s`` (before the first
reduction, between the two, after the second) runs ``placement[s]`` cells with
``C * filter_multipliers[s]`` channels per node. ARNAS is ``placement=("accurate", "accurate",
"robust")``, ``filter_multipliers=(1, 2, 2)``; DARTS is ``("normal",) * 3`` with ``(1, 2, 4)``.

A config is untrusted input when it comes from a file: every size is bounded (:data:`LIMITS`) and
checked before anything is allocated, so a ``config.json`` asking for 10**9 channels fails in
microseconds with the limit in the message instead of trying to allocate a petabyte.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from arnas_zoo.errors import ConfigError, GenotypeError
from arnas_zoo.genotype import NUM_CELL_INPUTS, Genotype
from arnas_zoo.settings import Settings

CELL_ARCH = "cell"
CONFIG_SCHEMA = "arnas-zoo/model-config@1"

#: Upper bounds of every size a config may ask for (inclusive). Generous for research use; a
#: deliberate larger network can raise ``max_params`` through ``ARNAS_ZOO_MAX_PARAMS``.
LIMITS: dict[str, int] = {
    "num_classes": 100_000,
    "in_channels": 64,
    "input_size": 4096,
    "layers": 1000,
    "init_channels": 4096,
    "stem_multiplier": 64,
    "filter_multiplier": 64,
}
#: Default ceiling of the (estimated) parameter count of a network a config may describe.
DEFAULT_MAX_PARAMS = 2_000_000_000


def max_params() -> int:
    """The parameter ceiling in effect: ``$ARNAS_ZOO_MAX_PARAMS`` or :data:`DEFAULT_MAX_PARAMS`."""
    raw = os.environ.get("ARNAS_ZOO_MAX_PARAMS")
    if raw is None:
        return DEFAULT_MAX_PARAMS
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"ARNAS_ZOO_MAX_PARAMS: expected an integer, got {raw!r}") from None


PLACEMENT_LETTERS = {"A": "accurate", "R": "robust", "N": "normal"}


def parse_placement(text: str) -> tuple[str, str, str]:
    """``"A-A-R"`` -> ``("accurate", "accurate", "robust")``; full cell names work too.

    ``accurate-accurate-robust`` is the same as ``A-A-R``.
    """
    parts = [p.strip() for p in str(text).split("-")]
    if len(parts) != 3 or not all(parts):
        raise ConfigError(
            f"placement: expected three stages like A-A-R (A accurate, R robust, N normal), got {text!r:.60}"
        )
    return tuple(PLACEMENT_LETTERS.get(p.upper(), p) if len(p) == 1 else p for p in parts)  # type: ignore[return-value]


def parse_filters(text: str) -> tuple[int, int, int]:
    """``"1-2-2"`` -> ``(1, 2, 2)``: the filter multipliers of the three stages."""
    try:
        values = tuple(int(p) for p in str(text).split("-"))
    except ValueError:
        values = ()
    if len(values) != 3 or any(v < 1 for v in values):
        raise ConfigError(f"filters: expected three positive integers like 1-2-2, got {text!r:.60}")
    return (values[0], values[1], values[2])


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class ModelConfig(Settings):
    """Everything needed to rebuild a network exactly; serialised as ``config.json``."""

    what = "config"
    schema = CONFIG_SCHEMA

    arch: str = CELL_ARCH
    genotype: Genotype | None = None
    num_classes: int = 10
    in_channels: int = 3
    input_size: int = 32
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    # cell-network macro
    layers: int = 20
    init_channels: int = 36
    stem_multiplier: int = 3
    placement: tuple[str, ...] = ("normal", "normal", "normal")
    filter_multipliers: tuple[int, ...] = (1, 2, 4)
    reduction_cell: str = "reduce"
    cell_types: tuple[str, ...] | None = None
    affine: bool = True
    auxiliary: bool = True
    auxiliary_weight: float = 0.4
    drop_path_prob: float = 0.0
    # what the weights were trained for (informational; filled in by training)
    threat_model: str | None = None
    eps: float | None = None
    name: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    # ---- validation -----------------------------------------------------------------------------
    def validate(self) -> None:
        """Check every field's type and bounds; the family-specific rules live with the builder."""
        if not isinstance(self.arch, str) or not self.arch:
            raise ConfigError(f"arch: expected a builder name, got {self.arch!r}")
        for key in ("num_classes", "in_channels", "input_size", "layers", "init_channels", "stem_multiplier"):
            value = getattr(self, key)
            if not _is_int(value) or value < 1:
                raise ConfigError(f"{key}: expected a positive integer, got {value!r:.60}")
            if value > LIMITS[key]:
                raise ConfigError(f"{key}: {value} exceeds the limit {LIMITS[key]}")
        if self.num_classes < 2:
            raise ConfigError(f"num_classes: expected at least 2, got {self.num_classes}")
        self._validate_normalization()
        if not _is_number(self.drop_path_prob) or not 0.0 <= self.drop_path_prob < 1.0:
            raise ConfigError(f"drop_path_prob: expected a value in [0, 1), got {self.drop_path_prob!r}")
        if not _is_number(self.auxiliary_weight) or not 0.0 <= self.auxiliary_weight <= 100.0:
            raise ConfigError(f"auxiliary_weight: expected a value in [0, 100], got {self.auxiliary_weight!r}")
        for key in ("affine", "auxiliary"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"{key}: expected true or false, got {getattr(self, key)!r}")
        if self.threat_model is not None and self.threat_model not in ("linf", "l2", "l1", "none"):
            raise ConfigError(f"threat_model: expected linf, l2, l1, none or null, got {self.threat_model!r:.40}")
        if self.eps is not None and (not _is_number(self.eps) or not 0.0 <= self.eps <= 1000.0):
            raise ConfigError(f"eps: expected a number >= 0 on the [0, 1] pixel scale, got {self.eps!r:.40}")
        if self.name is not None and (not isinstance(self.name, str) or len(self.name) > 200):
            raise ConfigError(f"name: expected a string of at most 200 characters, got {self.name!r:.60}")
        if not isinstance(self.extra, Mapping):
            raise ConfigError(f"extra: expected an object, got {type(self.extra).__name__}")
        for key in ("placement", "filter_multipliers"):
            if not isinstance(getattr(self, key), tuple):
                raise ConfigError(f"{key}: expected a list, got {type(getattr(self, key)).__name__}")
        if len(self.placement) != 3 or len(self.filter_multipliers) != 3:
            raise ConfigError(
                "placement/filter_multipliers: expected one entry per stage (3 each), got "
                f"{list(self.placement)[:5]} and {list(self.filter_multipliers)[:5]}"
            )
        if any(not isinstance(p, str) for p in self.placement) or not isinstance(self.reduction_cell, str):
            raise ConfigError(f"placement/reduction_cell: expected cell type names, got {list(self.placement)}")
        limit = LIMITS["filter_multiplier"]
        if any(not _is_int(m) or not 1 <= m <= limit for m in self.filter_multipliers):
            raise ConfigError(
                f"filter_multipliers: expected integers in 1..{limit}, got {list(self.filter_multipliers)}"
            )
        if self.cell_types is not None and (
            not isinstance(self.cell_types, tuple) or any(not isinstance(c, str) for c in self.cell_types)
        ):
            raise ConfigError("cell_types: expected a list of cell type names or null")
        if self.genotype is not None and not isinstance(self.genotype, Genotype):
            raise ConfigError(f"genotype: expected a Genotype, got {type(self.genotype).__name__}")
        if self.arch == CELL_ARCH:
            self._validate_cells()

    def _validate_normalization(self) -> None:
        for key in ("mean", "std"):
            value = getattr(self, key)
            if value is None:
                continue
            if not isinstance(value, tuple) or any(not _is_number(v) or not math.isfinite(v) for v in value):
                raise ConfigError(f"{key}: expected a list of finite numbers, got {value!r:.80}")
            if len(value) != self.in_channels:
                raise ConfigError(
                    f"{key}: expected {self.in_channels} values (one per input channel), got {len(value)}"
                )
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ConfigError(f"std: expected positive values, got {list(self.std)}")
        if (self.mean is None) != (self.std is None):
            raise ConfigError("mean/std: give both or neither")

    def _validate_cells(self) -> None:
        if self.genotype is None:
            raise ConfigError("genotype: a cell network needs a genotype")
        if self.layers < 3:
            raise ConfigError(f"layers: a cell network needs at least 3 layers (two reductions), got {self.layers}")
        if self.cell_types is not None and len(self.cell_types) != self.layers:
            raise ConfigError(f"cell_types: expected {self.layers} entries (one per layer), got {len(self.cell_types)}")
        reductions = self.reduction_layers()
        for i, cell_name in enumerate(self.layer_cell_types()):
            if cell_name not in self.genotype.cells:
                raise ConfigError(
                    f"layer {i}: cell type {cell_name!r:.60} is not in the genotype; "
                    f"it has {sorted(self.genotype.cells)}"
                )
            if i in reductions:
                bad = [c for c in self.genotype.cells[cell_name].concat if c < NUM_CELL_INPUTS]
                if bad:
                    raise ConfigError(
                        f"layer {i}: reduction cell {cell_name!r} concatenates cell inputs {bad}, which are "
                        "not reduced; expected only intermediate nodes"
                    )

    # ---- layout ---------------------------------------------------------------------------------
    def reduction_layers(self) -> tuple[int, int]:
        return (self.layers // 3, 2 * self.layers // 3)

    def stage_of(self, layer: int) -> int:
        first, second = self.reduction_layers()
        return 0 if layer < first else (1 if layer < second else 2)

    def layer_cell_types(self) -> list[str]:
        if self.cell_types is not None:
            return list(self.cell_types)
        reductions = self.reduction_layers()
        return [
            self.reduction_cell if i in reductions else self.placement[self.stage_of(i)] for i in range(self.layers)
        ]

    def layer_channels(self) -> list[int]:
        """Channels per node of each cell (the cell outputs ``len(concat)`` times this)."""
        return [self.init_channels * self.filter_multipliers[self.stage_of(i)] for i in range(self.layers)]

    @property
    def auxiliary_layer(self) -> int:
        return 2 * self.layers // 3

    # ---- (de)serialisation (arnas_zoo.settings.Settings; the genotype as its JSON) ----------------
    def encode(self, key: str, value: Any) -> Any:
        if key == "genotype":
            return None if value is None else value.to_dict()
        return super().encode(key, value)

    @classmethod
    def decode(cls, key: str, value: Any) -> Any:
        if key == "genotype" and value is not None and not isinstance(value, Genotype):
            try:
                return Genotype.from_dict(value)
            except GenotypeError as exc:
                raise ConfigError(f"genotype: {exc}") from None
        return super().decode(key, value)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str | bytes) -> ModelConfig:
        from arnas_zoo.genotype import parse_json

        try:
            data = parse_json(text)
        except GenotypeError as exc:
            raise ConfigError(f"config: {str(exc).removeprefix('$: ')}") from None
        return cls.from_dict(data)
