"""Architecture search: one interface (:mod:`search.strategy`), one folder per strategy.

- :mod:`search.arnas`: ARNAS (Ou et al., CVPR 2024), with DSRNA's robustness objectives (Hosseini et al.)
- :mod:`search.robnet`: RobNets (Guo et al., CVPR 2020)
- :mod:`search.roco`: RoCo-NAS (Geraeinejad et al., 2021)
- :mod:`search.evolve`: NSGA-II over ARNAS/DARTS cells (this project)

Shared: :mod:`search.nsga` (the NSGA-II loop of roco and evolve).
Run any preset with ``python -m search run PRESET``; ``python -m search presets`` lists them (docs/search.md).
Installed, the package is ``arnas_zoo_search`` and ``arnas-zoo search`` is its command line.
"""

from .strategy import Outcome, RunOptions, Strategy, get_strategy, register_strategy, strategies, strategy_for

__all__ = ["Outcome", "RunOptions", "Strategy", "get_strategy", "register_strategy", "strategies", "strategy_for"]
