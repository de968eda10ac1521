"""The evolutionary cell search's settings: :class:`EvolveConfig`, the gene layout of a cell, and the named presets."""

from __future__ import annotations

from dataclasses import dataclass, replace

from arnas_zoo.errors import ConfigError
from arnas_zoo.primitives import ARNAS_PRIMITIVES
from arnas_zoo.settings import Settings

NODES = 4
GENES_PER_NODE = 4  # op, input, op, input
CELLS = {"arnas": ("accurate", "robust", "reduce"), "darts": ("normal", "reduce")}
OPS = ARNAS_PRIMITIVES  # the DARTS ops without "none": what a discretized cell may hold
DEFAULT_COMPARE = {"arnas": ("arnas",), "darts": ("darts_v2",)}


@dataclass(frozen=True)
class EvolveConfig(Settings):
    what = "evolve"

    name: str = "evolve-arnas"
    space: str = "arnas"
    dataset: str = "cifar10"
    data_dir: str | None = None
    val_rows: int = 1000
    init_channels: int = 16
    layers: int = 8
    population: int = 20
    generations: int = 10
    mutation_prob: float = 0.05  # per gene
    crossover_prob: float = 0.9
    seed: int = 0
    # short adversarial training of each candidate (arnas_zoo.training, method pgd)
    train_epochs: float = 10.0
    train_n: int | None = None
    batch_size: int = 64
    lr: float = 0.05
    eps: float = 8 / 255
    step_size: float = 2 / 255
    steps: int = 3
    val_steps: int = 10  # the PGD of the robust objective (validation rows, step eps/4)
    val_n: int | None = 500
    # reporting
    pgd_n: int = 500  # white-box PGD-20 on this many evaluation points for every candidate
    top_k: int = 3
    compare: tuple[str, ...] | None = None  # None: the space's published genotype (ARNAS, or DARTS_V2)
    compare_seeds: int = 3  # each compared genotype is trained with seeds seed .. seed + compare_seeds - 1

    def validate(self) -> None:
        if self.space not in CELLS:
            raise ConfigError(f"space: expected one of {sorted(CELLS)}, got {self.space!r}")
        if self.population < 2 or self.generations < 1:
            raise ConfigError("population >= 2 and generations >= 1 expected")
        if not 1 <= self.compare_seeds <= 20:
            raise ConfigError(f"compare_seeds: expected 1 to 20, got {self.compare_seeds}")

    @property
    def n_genes(self) -> int:
        return len(CELLS[self.space]) * NODES * GENES_PER_NODE


PRESETS: dict[str, EvolveConfig] = {
    "evolve-arnas": EvolveConfig(),
    "evolve-darts": EvolveConfig(name="evolve-darts", space="darts"),
    # minutes on 2 CPU cores: the embedded digits (16x16), C=4, 5 cells, population 6, 3 generations
    "evolve-arnas-tiny": EvolveConfig(
        name="evolve-arnas-tiny",
        dataset="digits",
        val_rows=300,
        init_channels=4,
        layers=5,
        population=6,
        generations=3,
        mutation_prob=0.1,
        train_epochs=3.0,
        batch_size=64,
        eps=0.2,
        step_size=0.1,
        steps=3,
        val_steps=5,
        val_n=None,
        pgd_n=297,
        top_k=2,
    ),
}
PRESETS["evolve-darts-tiny"] = replace(PRESETS["evolve-arnas-tiny"], name="evolve-darts-tiny", space="darts")
