"""The evolutionary cell search (this project's, "beyond the paper"): NSGA-II (pymoo) over the cell genotypes
of the ARNAS and DARTS spaces, with clean error, PGD error and multiply-adds as objectives, and a held-out
comparison against the published cell trained alike.

- :mod:`~search.evolve.config`: settings, the gene layout and presets; :mod:`~search.evolve.run`: genes to
  genotypes, the candidate job, the search on the job layer and its front
"""

from __future__ import annotations

from pathlib import Path

from ..strategy import Outcome, RunOptions, Strategy, load_from, register_strategy, settings_of
from .config import PRESETS, EvolveConfig


def _run(config: EvolveConfig, out: Path, options: RunOptions) -> Outcome:
    from .run import run_evolve

    summary = run_evolve(config, out, resume=options.resume, backend=options.backend, address=options.address,
                         max_parallel=options.max_parallel, progress=options.progress, plots=options.plots)  # fmt: skip
    lines = [
        f"candidates: {out / 'candidates.csv'}; front: {out / 'front.json'}",
        f"{summary['evaluated']} evaluated, {len(summary['front'])} on the front; knee {summary['knee']}",
    ]
    for name, row in summary["compare"].items():
        lines.append(
            f"{name} ({row['seeds']} seeds, test rows): clean {row['mean_test_clean_accuracy']:.3f}, PGD-20 "
            f"{row['mean_test_pgd20_accuracy']:.3f}, {row['macs']} MACs; dominated on held-out figures by "
            f"{row['dominated_by_front_members_heldout']} of {row['front_members']} front members"
        )
    lines += [f"genotype: {out / path}" for path in summary["genotypes"]]
    return Outcome([out / path for path in summary["genotypes"]], summary, lines)


STRATEGY = register_strategy(
    Strategy(
        name="evolve",
        title="evolutionary cell",
        papers="NSGA-II over ARNAS/DARTS cell genotypes (this project): clean error, PGD error, MACs",
        home="search/evolve/",
        presets=settings_of(PRESETS, EvolveConfig),
        load=load_from(PRESETS, EvolveConfig, "evolve"),
        run=_run,
        default_preset="evolve-arnas-tiny",
        takes=frozenset({"backend", "address", "max_parallel"}),
    )
)

__all__ = ["PRESETS", "STRATEGY", "EvolveConfig"]
