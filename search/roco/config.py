"""RoCo-NAS's settings: :class:`RocoConfig` and the named presets (the paper's Table II, and CPU-sized ones)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from arnas_zoo.errors import ConfigError
from arnas_zoo.macro import bits_per_phase
from arnas_zoo.settings import Settings


@dataclass(frozen=True)
class RocoConfig(Settings):
    what = "roco"

    name: str = "roco"
    dataset: str = "cifar10"
    data_dir: str | None = None
    val_rows: int = 1000
    phases: int = 3
    nodes: int = 6
    init_channels: int = 16
    objectives: int = 3  # 3: clean error, transfer error, FLOPs; 2: clean error, FLOPs
    population: int = 40
    generations: int = 20
    mutation_prob: float = 0.02  # per bit on average; an offspring's flips all fall in one phase
    crossover_prob: float = 0.9
    seed: int = 0
    # candidate training (paper: 25 epochs) through arnas_zoo.training, clean ("standard")
    train_epochs: float = 25.0
    train_n: int | None = None
    batch_size: int = 128
    lr: float = 0.025
    # transfer set (paper Table I: l_0 and l_inf thresholds 1, 3, 5, 10)
    source_archs: tuple[str, ...] = ("resnet18", "darts_v2")
    source_epochs: float = 10.0
    source_width: int = 16
    transfer_from: int = 1000  # validation rows attacked
    linf_eps: tuple[float, ...] = (1 / 255, 3 / 255, 5 / 255, 10 / 255)
    l0_pixels: tuple[int, ...] = (1, 3, 5, 10)
    l0_trials: int = 100
    # reporting
    pgd_n: int = 500  # white-box PGD-20 on this many test points for every candidate
    pgd_eps: float = 8 / 255
    top_k: int = 3

    def validate(self) -> None:
        if self.objectives not in (2, 3):
            raise ConfigError(f"objectives: expected 2 or 3, got {self.objectives}")
        if self.population < 2 or self.generations < 1:
            raise ConfigError("population >= 2 and generations >= 1 expected")
        if not 2 <= self.nodes <= 12 or not 1 <= self.phases <= 8:
            raise ConfigError(f"nodes in [2, 12] and phases in [1, 8] expected, got {self.nodes}, {self.phases}")

    @property
    def n_bits(self) -> int:
        return self.phases * bits_per_phase(self.nodes)


PRESETS: dict[str, RocoConfig] = {
    # the paper's Table II: 3 phases x 6 nodes, population 40, 20 generations, 25 training epochs
    "roco": RocoConfig(),
    "roco-2obj": RocoConfig(name="roco-2obj", objectives=2),
    # minutes on 2 CPU cores: the embedded digits (16x16), 3 phases x 4 nodes, population 8, 4 generations
    "roco-tiny": RocoConfig(
        name="roco-tiny",
        dataset="digits",
        val_rows=300,
        nodes=4,
        init_channels=8,
        population=8,
        generations=4,
        mutation_prob=0.05,
        train_epochs=5.0,
        batch_size=64,
        lr=0.05,
        source_archs=("resnet18", "darts_v2"),
        source_epochs=3.0,
        source_width=8,
        transfer_from=300,
        linf_eps=(0.05, 0.1, 0.2, 0.3),
        l0_pixels=(3, 10, 20, 40),
        l0_trials=30,
        pgd_n=297,
        pgd_eps=0.1,
    ),
}
PRESETS["roco-tiny-2obj"] = replace(PRESETS["roco-tiny"], name="roco-tiny-2obj", objectives=2)
