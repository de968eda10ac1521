"""Search configuration: one flat, frozen, JSON-able dataclass with named presets.

``paper`` is ARNAS' search (PROTOCOLS.md "ARNAS search"; paper Sec. 4.3): 8 cells, C=24, A-A-R,
1-2-2, the CIFAR-10 train split halved into weight/architecture data, batch 32, 50 epochs, SGD 0.025
cosine to 0.001 (momentum 0.9, wd 3e-4) on PGD-7 examples, Adam 3e-4 (0.5, 0.999) wd 1e-3 for the
architecture, lambda 0.1, second order, MGDA. ``cpu`` is the largest that this project's 2-core CPU
finishes in hours (the zoo's own genotype); ``tiny`` is a seconds-long CPU smoke version.
Overrides come as ``key=value`` strings (``--set epochs=5``), parsed by :func:`arnas_zoo.settings.parse_overrides`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from arnas_zoo.errors import ConfigError
from arnas_zoo.settings import Settings, parse_overrides

from .mgda import STRATEGIES
from .space import SearchSpace

ORDERS = ("first", "second")
ATTACK_BN_MODES = ("eval", "batch")


@dataclass(frozen=True)
class SearchConfig(Settings):
    """Every setting of a search run (written to ``config.json`` in the output folder); checked on construction."""

    what = "search"

    # search space (see search.space.SearchSpace)
    space: str = "arnas"
    placement: str = "A-A-R"
    filters: str = "1-2-2"
    layers: int = 8
    init_channels: int = 24
    stem_multiplier: int = 3
    nodes: int = 4
    arch_init_scale: float = 1e-3
    # data: `train_fraction` of the first `n_images` rows train the weights, the rest the architecture
    dataset: str = "cifar10"
    data_dir: str | None = None
    n_images: int | None = None
    train_fraction: float = 0.5
    augment: bool = True
    resize: int | None = None
    # schedule
    epochs: int = 50
    batch_size: int = 32
    steps_per_epoch: int | None = None
    # weights (lower level)
    w_lr: float = 0.025
    w_lr_min: float = 0.001
    w_momentum: float = 0.9
    w_weight_decay: float = 3e-4
    grad_clip: float = 5.0
    # architecture (upper level)
    a_lr: float = 3e-4
    a_beta1: float = 0.5
    a_beta2: float = 0.999
    a_weight_decay: float = 1e-3
    order: str = "second"
    strategy: str = "mgda"
    lam: float = 0.1
    hvp_r: float = 0.01
    robust_objective: str = "pgd_ce"
    # PGD used for weight training and for the robust objective (l_inf, [0, 1] images)
    eps: float = 8 / 255
    step_size: float = 2 / 255
    pgd_steps: int = 7
    attack_bn: str = "batch"  # PGD with batch statistics (the function both levels train); "eval": running statistics
    weight_attack: str = "pgd"  # the weights train on PGD examples (ARNAS) or on clean images ("none": DSRNA)
    # DSRNA's robustness metrics (robust_objective jacobian | certified | combined); threat norm of both
    threat_norm: str = "linf"
    jacobian_estimator: str = "exact"  # exact: all K rows of the input Jacobian; projection: Hoffman et al.
    jacobian_projections: int = 1
    cert_method: str = "ibp"  # ibp | crown (search/arnas/objectives.py: what the certified objective bounds with)
    cert_eps_init: float = 0.03  # DSRNA: eps starts at 0.03 and moves with the gap between the bounds
    cert_gap_target: float = 1.0  # target mean gap (logits) between the margins' upper and lower bounds
    cert_eps_factor: float = 1.1  # eps *= target/gap, clipped to [1/8, factor] (search/arnas/objectives.py)
    # end-of-epoch evaluation on the first `eval_n` architecture-split images (0 disables)
    eval_n: int = 256
    # reproducibility and hardware
    seed: int = 0
    amp: bool = True  # bf16 autocast on CUDA
    amp_cpu: bool = False  # bf16 autocast on CPU too (opt-in: pays only on CPUs with native bf16)
    # bf16 also in the architecture gradients (unroll, t, t_hat; never the finite differences); false:
    # only the PGD crafting and the weight step, the cheaper half of the numerics (docs/search.md)
    amp_arch: bool = True
    channels_last: bool = True
    recompute: bool = False  # activation recomputation per cell: less memory, about one more forward per backward
    # recompute only the first k cells (the highest resolution): at the paper's size k=1 saves 1.2 GB of
    # the step's 6.8 for about 5% more time (docs/performance.md); 0 turns it off
    recompute_cells: int = 1

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for f in fields(self):
            value, default = getattr(self, f.name), f.default
            if isinstance(default, (int, float)) and not isinstance(default, bool):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ConfigError(f"{f.name}: expected a number, got {value!r:.40}")
        self.search_space()  # validates the space fields
        if self.order not in ORDERS:
            raise ConfigError(f"order: expected one of {list(ORDERS)}, got {self.order!r}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"strategy: expected one of {list(STRATEGIES)}, got {self.strategy!r}")
        if self.attack_bn not in ATTACK_BN_MODES:
            raise ConfigError(f"attack_bn: expected one of {list(ATTACK_BN_MODES)}, got {self.attack_bn!r}")
        choices = {
            "weight_attack": ("pgd", "none"),
            "threat_norm": ("linf", "l2"),
            "jacobian_estimator": ("exact", "projection"),
            "cert_method": ("ibp", "crown"),
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{key}: expected one of {list(allowed)}, got {getattr(self, key)!r:.40}")
        if _bad_int(self.jacobian_projections, minimum=1):
            raise ConfigError(f"jacobian_projections: expected a positive integer, got {self.jacobian_projections!r}")
        if not (self.cert_eps_factor > 1 and self.cert_gap_target > 0 and 0 < self.cert_eps_init <= 1):
            raise ConfigError(
                "cert_eps_factor > 1, cert_gap_target > 0 and 0 < cert_eps_init <= 1 expected, got "
                f"{self.cert_eps_factor}, {self.cert_gap_target}, {self.cert_eps_init}"
            )
        for key in ("epochs", "batch_size"):
            if _bad_int(getattr(self, key), minimum=1):
                raise ConfigError(f"{key}: expected a positive integer, got {getattr(self, key)!r}")
        for key in ("pgd_steps", "eval_n", "seed", "recompute_cells"):
            if _bad_int(getattr(self, key), minimum=0):
                raise ConfigError(f"{key}: expected a non-negative integer, got {getattr(self, key)!r}")
        for key in ("n_images", "steps_per_epoch", "resize"):
            value = getattr(self, key)
            if value is not None and _bad_int(value, minimum=1):
                raise ConfigError(f"{key}: expected a positive integer or null, got {value!r}")
        if not 0.0 < self.train_fraction < 1.0:
            raise ConfigError(f"train_fraction: expected a value in (0, 1), got {self.train_fraction}")
        for key in ("w_lr", "a_lr", "hvp_r"):
            if not float(getattr(self, key)) > 0:
                raise ConfigError(f"{key}: expected a positive number, got {getattr(self, key)!r}")
        if not 0 <= self.w_lr_min <= self.w_lr:
            raise ConfigError(f"w_lr_min: expected 0 <= w_lr_min <= w_lr ({self.w_lr}), got {self.w_lr_min}")
        self._check_numbers_and_strings()

    def _check_numbers_and_strings(self) -> None:
        """Finite non-negative numbers and string fields (called by ``__post_init__``)."""
        for key in (
            "lam",
            "eps",
            "step_size",
            "w_lr",
            "a_lr",
            "hvp_r",
            "w_lr_min",
            "w_momentum",
            "w_weight_decay",
            "a_weight_decay",
            "grad_clip",
            "arch_init_scale",
            "a_beta1",
            "a_beta2",
            "train_fraction",
            "cert_eps_init",
            "cert_gap_target",
            "cert_eps_factor",
        ):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"{key}: expected a finite non-negative number, got {value!r:.40}")
        if self.eps > 1:
            raise ConfigError(f"eps: expected a radius in [0, 1] pixel units (8/255 = 0.0314), got {self.eps}")
        for key in (
            "space",
            "placement",
            "filters",
            "dataset",
            "order",
            "strategy",
            "robust_objective",
            "attack_bn",
            "weight_attack",
        ):
            if not isinstance(getattr(self, key), str):
                raise ConfigError(f"{key}: expected a string, got {getattr(self, key)!r:.40}")

    def search_space(self, num_classes: int = 10, in_channels: int = 3, input_size: int = 32) -> SearchSpace:
        return SearchSpace(
            space=self.space,
            placement=self.placement,
            filters=self.filters,
            layers=self.layers,
            init_channels=self.init_channels,
            stem_multiplier=self.stem_multiplier,
            nodes=self.nodes,
            num_classes=num_classes,
            in_channels=in_channels,
            input_size=input_size,
        )


def _bad_int(value: Any, minimum: int) -> bool:
    return not isinstance(value, int) or isinstance(value, bool) or value < minimum or value > 2**40


_DSRNA: dict[str, Any] = {
    "space": "darts",
    "placement": "N-N-N",
    "filters": "1-2-4",
    "layers": 8,
    "init_channels": 16,
    "epochs": 50,
    "order": "first",
    "strategy": "weighted_sum",
    "lam": 0.01,
    "weight_attack": "none",
    "eval_n": 0,
}
#: DSRNA-CB's optimisers (Sec. 4.1): SGD 0.1, batch 256; Adam 6e-4, weight decay 3e-4
_DSRNA_CB_OPT: dict[str, Any] = {"w_lr": 0.1, "batch_size": 256, "a_lr": 6e-4, "a_weight_decay": 3e-4}
#: DSRNA-Jacobian's: SGD 0.025, batch 128; Adam 3e-4, weight decay 1e-3
_DSRNA_JACOBIAN_OPT: dict[str, Any] = {"w_lr": 0.025, "batch_size": 128, "a_lr": 3e-4, "a_weight_decay": 1e-3}
_DSRNA_TINY: dict[str, Any] = {
    "dataset": "mnist",
    "resize": 14,
    "layers": 4,
    "init_channels": 4,
    "n_images": 512,
    "batch_size": 16,
    "epochs": 3,
    "steps_per_epoch": 4,
    "eps": 0.1,
    "cert_eps_init": 0.01,
    "eval_n": 64,
}

# a CPU smoke run (a few minutes on 2 busy cores): 5 cells at C=8 on 16x16 (area-downsampled)
# CIFAR images, 256+256 images, 3 epochs of 4 steps of batch 16, PGD-3, second order, MGDA
_TINY: dict[str, Any] = {
    "layers": 5,
    "init_channels": 8,
    "resize": 16,
    "n_images": 512,
    "batch_size": 16,
    "epochs": 3,
    "steps_per_epoch": 4,
    "pgd_steps": 3,
    "eval_n": 64,
}

#: Named presets; `paper` is the default.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    # the DARTS space with ARNAS' optimisation, for baselines (C=16 as in DARTS' own search)
    "darts": {"space": "darts", "placement": "N-N-N", "filters": "1-2-4", "init_channels": 16},
    # the tiny run below with MGDA over gradients scaled to unit norm (search.mgda.mgda_normalized), for
    # comparing with plain MGDA; sweep the robust objective's lambda with
    # `python -m search sweep tiny --vary lam=0.01,0.1,1`
    "tiny-mgda-normalized": {"strategy": "mgda_normalized", **_TINY},
    "tiny": _TINY,  # the CPU smoke run above
    # the largest ARNAS search this 2-core CPU finishes in an afternoon (the zoo's own genotype): the paper's
    # space, placement and filters at 5 cells, C=8, on full-size 32x32 CIFAR-10; 2048 + 2048 images, 10
    # epochs of 64 steps of batch 32, PGD-3 at step 3/255 (the zoo's training attack), first order, MGDA.
    # About 13 s a step at one thread (2026-12-06, Xeon with AMX, other jobs paused): ~2.5 h with the
    # end-of-epoch evaluations
    "cpu": {
        "layers": 5,
        "init_channels": 8,
        "n_images": 4096,
        "batch_size": 32,
        "epochs": 10,
        "pgd_steps": 3,
        "step_size": 3 / 255,
        "order": "first",
        "eval_n": 256,
    },
    # DSRNA (Hosseini, Yang & Xie, CVPR 2021; Sec. 4.1): the DARTS space with 'none' (the paper uses
    # PC-DARTS; its partial channels are not implemented here), 8 cells, C=16, 50 epochs, clean weight
    # training, first order, L_val - gamma * R with gamma = 0.01 (Eq. 16: strategy weighted_sum)
    "dsrna-jacobian": {**_DSRNA, **_DSRNA_JACOBIAN_OPT, "robust_objective": "jacobian"},
    "dsrna-cb": {**_DSRNA, **_DSRNA_CB_OPT, "robust_objective": "certified"},
    "dsrna-combined": {**_DSRNA, **_DSRNA_CB_OPT, "robust_objective": "combined"},
    # minutes on 2 CPU cores: MNIST at 14x14 (area-downsampled), 4 cells, C=4, 3 epochs of 4 steps
    "dsrna-jacobian-tiny": {**_DSRNA, **_DSRNA_JACOBIAN_OPT, **_DSRNA_TINY, "robust_objective": "jacobian"},
    "dsrna-cb-tiny": {**_DSRNA, **_DSRNA_CB_OPT, **_DSRNA_TINY, "robust_objective": "certified"},
    "dsrna-combined-tiny": {**_DSRNA, **_DSRNA_CB_OPT, **_DSRNA_TINY, "robust_objective": "combined"},
}


def load_config(source: str | None = None, overrides: Iterable[str] = ()) -> SearchConfig:
    """A preset name (``paper``, ``darts``, ``tiny``) or a JSON file, then ``key=value`` overrides."""
    source = source or "paper"
    if source in PRESETS:
        base: dict[str, Any] = dict(PRESETS[source])
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"config: {source[:80]!r} is neither a preset ({', '.join(PRESETS)}) nor a JSON file")
        from arnas_zoo.genotype import parse_json

        try:
            base = parse_json(path.read_bytes())
        except (ValueError, OSError) as exc:
            raise ConfigError(f"config {path}: {str(exc).removeprefix('$: ')}") from None
        if not isinstance(base, dict):
            raise ConfigError(f"config {path}: expected a JSON object, got {type(base).__name__}")
    base.update(parse_overrides(overrides))
    return SearchConfig.from_dict(base)
