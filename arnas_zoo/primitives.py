"""The names of the op vocabulary, by search space (no torch here: genotype validation needs only names).

The factories that build each op live in :mod:`arnas_zoo.ops`.
"""

from __future__ import annotations

#: The DARTS candidate ops, in the order of the DARTS search space (``none`` first).
DARTS_PRIMITIVES: tuple[str, ...] = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
#: ARNAS searches the DARTS ops without ``none`` (PROTOCOLS.md, "ARNAS search").
ARNAS_PRIMITIVES: tuple[str, ...] = DARTS_PRIMITIVES[1:]
#: RobNet's edge ops (codes '00', '01', '10', '11').
ROBNET_PRIMITIVES: tuple[str, ...] = ("none", "sep_conv_3x3", "skip_connect", "res_sep_conv_3x3")

#: Which ops a genotype of each space may use.
SPACE_OPS: dict[str, frozenset[str]] = {
    "darts": frozenset(DARTS_PRIMITIVES),
    "arnas": frozenset(DARTS_PRIMITIVES),
    "robnet": frozenset(ROBNET_PRIMITIVES),
}

POOLING_OPS = frozenset({"max_pool_3x3", "avg_pool_3x3"})
PARAMETER_FREE_OPS = frozenset({"none", "skip_connect", "max_pool_3x3", "avg_pool_3x3"})
