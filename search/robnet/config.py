"""RobNets' settings: :class:`RobNetConfig` and the named presets (the paper's, and CPU-sized ones)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from arnas_zoo.errors import ConfigError
from arnas_zoo.settings import Settings

from .model import BUDGETS


@dataclass(frozen=True)
class RobNetConfig(Settings):
    what = "robnet"

    name: str = "robnet"
    dataset: str = "cifar10"
    data_dir: str | None = None
    n_images: int | None = None  # first rows of the train split (None: all)
    resize: int | None = None
    holdout: int = 1000  # the last rows: never trained on; scores every architecture
    cell_free: bool = False
    init_channels: int = 16
    layers: int = 8
    seed: int = 0
    # supernet training (paper Sec. 3.3: PGD-7, step 0.01, eps 8/255)
    epochs: int = 50
    steps_per_epoch: int | None = None
    batch_size: int = 128
    lr: float = 0.1
    lr_min: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 5e-4
    grad_clip: float = 5.0
    eps: float = 8 / 255
    step_size: float = 0.01
    pgd_steps: int = 7
    attack_bn: str = "batch"
    # sampling, scoring, finetuning
    samples: int = 1000
    budget: str = "any"
    fsp_keep: float = 1.0  # the fraction with the lowest FSP score that is finetuned
    finetune_epochs: float = 3.0  # passes over the training rows (paper: 3 epochs)
    finetune_lr: float = 0.01
    eval_n: int = 500
    eval_steps: int = 20  # PGD steps when scoring (eps and step size as in training)
    fsp_n: int = 64
    top_k: int = 5

    def validate(self) -> None:
        if self.budget not in BUDGETS:
            raise ConfigError(f"budget: expected one of {sorted(BUDGETS)}, got {self.budget!r}")
        if not 0.0 < self.fsp_keep <= 1.0:
            raise ConfigError(f"fsp_keep: expected 0 < fsp_keep <= 1, got {self.fsp_keep}")
        for key in ("samples", "epochs", "batch_size", "layers", "init_channels", "eval_n", "holdout"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"{key}: expected >= 1, got {getattr(self, key)}")
        if self.layers < 3:
            raise ConfigError(f"layers: the macro has two reduction cells; expected >= 3, got {self.layers}")


PRESETS: dict[str, RobNetConfig] = {
    # The paper's analysis setting (Sec. 3.3): CIFAR-10, PGD-7 (step 0.01, eps 8/255) supernet training,
    # 1000 sampled architectures finetuned for 3 epochs. Width and depth of the supernet are not stated.
    "robnet": RobNetConfig(name="robnet"),
    "robnet-free": RobNetConfig(name="robnet-free", cell_free=True, samples=50),
    # minutes on 2 CPU cores: 16x16 CIFAR-10, 5 cells of C=8, PGD-3 at eps 4/255 (8/255 leaves a network
    # this small at about 0% PGD accuracy, and nothing to correlate), tens of architectures
    "robnet-tiny": RobNetConfig(
        name="robnet-tiny",
        n_images=2304,
        resize=16,
        holdout=256,
        init_channels=8,
        layers=5,
        epochs=12,
        steps_per_epoch=32,
        batch_size=64,
        lr=0.05,
        eps=4 / 255,
        pgd_steps=3,
        step_size=2 / 255,
        samples=40,
        finetune_epochs=0.25,
        finetune_lr=0.01,
        eval_n=256,
        eval_steps=7,
        fsp_n=64,
        top_k=3,
    ),
}
PRESETS["robnet-free-tiny"] = replace(PRESETS["robnet-tiny"], name="robnet-free-tiny", cell_free=True)
