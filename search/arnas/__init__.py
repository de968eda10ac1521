"""ARNAS (Ou et al., CVPR 2024): a supernet of Accurate, Robust and Reduction cells, bi-level DARTS
optimisation with PGD adversarial training of the weights and an MGDA two-objective architecture step.

DSRNA's robustness metrics (Hosseini et al., 2021) are objectives of this strategy, not a strategy of their
own: ``robust_objective=jacobian`` or ``certified`` (:mod:`search.arnas.objectives`), presets ``dsrna-*``.

- :mod:`~search.arnas.space`, :mod:`~search.arnas.supernet`: the search space and the mixed-op supernet
- :mod:`~search.arnas.mgda`, :mod:`~search.arnas.bilevel`: the MGDA weight and the bi-level steps
- :mod:`~search.arnas.objectives`: the robustness objectives (PGD cross-entropy; DSRNA's Jacobian and bound)
- :mod:`~search.arnas.config`: :class:`SearchConfig` and the presets; :mod:`~search.arnas.run`: the search on
  the run machinery; :mod:`~search.arnas.sweep`: many seeds and the op counts (paper Fig. 4)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..strategy import Outcome, RunOptions, Strategy, register_strategy
from .config import PRESETS, SearchConfig, load_config


def _run(config: SearchConfig, out: Path, options: RunOptions) -> Outcome:
    from .run import run_search

    summary = run_search(config, out, device=options.device, progress=options.progress, plots=options.plots,
                         resume=options.resume, previous=options.previous, name=options.name)  # fmt: skip
    lines = []
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one worker reports
        gammas = [round(sum(g) / len(g), 4) if g else None for g in summary["gamma_trace"]]
        lines = [
            f"genotype: {out / 'genotype.json'}",
            f"gamma per epoch (mean): {gammas}",
            f"MGDA (last epoch): {summary['mgda']}",
            f"search time: {summary['seconds_total']:.1f} s on {summary['device']} x{summary['world_size']}",
        ]
    return Outcome([out / "genotype.json"], summary, lines)


def _load(source: str, overrides: Sequence[str]) -> SearchConfig:
    return load_config(source, overrides)


def _commands() -> list[Any]:
    from .cli import summarize_command, sweep_command, trajectory_command

    return [sweep_command, summarize_command, trajectory_command]


STRATEGY = register_strategy(
    Strategy(
        name="arnas",
        title="ARNAS",
        papers="ARNAS (Ou et al., CVPR 2024); DSRNA's robustness objectives (Hosseini et al., 2021)",
        home="search/arnas/",
        presets=lambda: PRESETS,
        load=_load,
        run=_run,
        default_preset="paper",
        takes=frozenset({"previous", "device", "name"}),
        folder_prefix="search-",
        commands=_commands,
    )
)

__all__ = ["PRESETS", "STRATEGY", "SearchConfig", "load_config"]
