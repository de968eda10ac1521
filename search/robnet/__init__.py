"""RobNets (Guo et al., CVPR 2020): a one-shot adversarially trained supernet, sampled architectures scored
and finetuned, the paper's analyses (density, direct-edge convolutions, the FSP filter) and genotype export.

- :mod:`~search.robnet.model`: the RobNet space and its supernet; :mod:`~search.robnet.config`: settings
  and presets; :mod:`~search.robnet.run`: the stages on the job layer; :mod:`~search.robnet.analysis`
"""

from __future__ import annotations

from pathlib import Path

from ..strategy import Outcome, RunOptions, Strategy, load_from, register_strategy, settings_of
from .config import PRESETS, RobNetConfig


def _run(config: RobNetConfig, out: Path, options: RunOptions) -> Outcome:
    from .run import run_robnet

    summary = run_robnet(config, out, resume=options.resume, device=options.device, backend=options.backend,
                         address=options.address, max_parallel=options.max_parallel, progress=options.progress,
                         plots=options.plots)  # fmt: skip

    def corr(key: str) -> str:
        s = summary[key]
        return "n/a" if s["rho"] is None else f"{s['rho']:+.2f} (p={s['p']:.2g}, n={s['n']})"

    lines = [
        f"architectures: {out / 'architectures.csv'}; analysis: {out / 'analysis.json'}",
        f"Spearman density vs PGD accuracy: {corr('density_vs_pgd')}",
        f"Spearman direct-edge convolutions vs PGD accuracy: {corr('direct_convs_vs_pgd')}",
        f"Spearman FSP distance vs clean-PGD gap (supernet): {corr('fsp_vs_supernet_gap')}",
        *(f"genotype: {out / path}" for path in summary["exported"]),
    ]
    return Outcome([out / path for path in summary["exported"]], summary, lines)


STRATEGY = register_strategy(
    Strategy(
        name="robnet",
        title="RobNets",
        papers="RobNets (Guo et al., CVPR 2020): one-shot adversarial supernet, sampled and finetuned architectures",
        home="search/robnet/",
        presets=settings_of(PRESETS, RobNetConfig),
        load=load_from(PRESETS, RobNetConfig, "robnet"),
        run=_run,
        default_preset="robnet-tiny",
        takes=frozenset({"device", "backend", "address", "max_parallel"}),
    )
)

__all__ = ["PRESETS", "STRATEGY", "RobNetConfig"]
