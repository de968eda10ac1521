"""RoCo-NAS (Geraeinejad et al., 2021): NSGA-II (pymoo) over NSGA-Net macro genotypes with three objectives,
clean error, error on a transfer set of adversarial examples from other networks, and FLOPs.

- :mod:`~search.roco.config`: settings and presets (the paper's Table II); :mod:`~search.roco.transfer`: the
  transfer set; :mod:`~search.roco.run`: the search on the job layer, its front and the matched-FLOPs
  comparison (Table V)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..strategy import Outcome, RunOptions, Strategy, load_from, register_strategy, settings_of
from .config import PRESETS, RocoConfig


def _run(config: RocoConfig, out: Path, options: RunOptions) -> Outcome:
    from .run import run_roco

    summary = run_roco(config, out, resume=options.resume, backend=options.backend, address=options.address,
                       max_parallel=options.max_parallel, progress=options.progress, plots=options.plots)  # fmt: skip
    lines = [
        f"candidates: {out / 'candidates.csv'}; front: {out / 'front.json'}",
        f"{summary['evaluated']} evaluated, {len(summary['front'])} on the front; knee {summary['knee']}; "
        f"top-{config.top_k} held-out transfer accuracy {summary['top_k_mean_heldout_transfer_accuracy']:.3f}, "
        f"PGD-20 accuracy {summary['top_k_mean_test_pgd20_accuracy']:.3f}",
        *(f"genotype: {out / path}" for path in summary["genotypes"]),
    ]
    return Outcome([out / path for path in summary["genotypes"]], summary, lines)


def _commands() -> list[Any]:
    from .cli import compare_command

    return [compare_command]


STRATEGY = register_strategy(
    Strategy(
        name="roco",
        title="RoCo-NAS",
        papers="RoCo-NAS (Geraeinejad et al., 2021): NSGA-II over macro genotypes, clean/transfer error and FLOPs",
        home="search/roco/",
        presets=settings_of(PRESETS, RocoConfig),
        load=load_from(PRESETS, RocoConfig, "roco"),
        run=_run,
        default_preset="roco-tiny",
        takes=frozenset({"backend", "address", "max_parallel"}),
        commands=_commands,
    )
)

__all__ = ["PRESETS", "STRATEGY", "RocoConfig"]
