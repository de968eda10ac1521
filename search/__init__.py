"""ARNAS architecture search (Ou et al., CVPR 2024): supernet, MGDA bi-level optimisation, genotype JSON.

Run it with ``python -m search run CONFIG`` (see ``docs/search.md``). Public pieces:

- :class:`~search.space.SearchSpace`, :class:`~search.supernet.Supernet` (``arch_parameters()`` /
  ``weight_parameters()``, ``genotype()``)
- :func:`~search.mgda.mgda_weight`, :func:`~search.mgda.combine`
- :class:`~search.bilevel.Architect`, :func:`~search.bilevel.weight_step`
- :class:`~search.objectives.RobustnessObjective`, :func:`~search.objectives.register_objective`
- :func:`~search.discretize.discretize`
- :class:`~search.config.SearchConfig`, :func:`~search.config.load_config`,
  :func:`~search.run.run_search` (on the shared run machinery, :mod:`arnas_zoo.runs`), :func:`~search.sweep.run_sweep`
"""

from search.bilevel import Architect, weight_step
from search.config import SearchConfig, load_config
from search.discretize import discretize
from search.mgda import combine, mgda_weight
from search.objectives import RobustnessObjective, register_objective
from search.space import SearchSpace
from search.supernet import Supernet

__all__ = [
    "Architect",
    "RobustnessObjective",
    "SearchConfig",
    "SearchSpace",
    "Supernet",
    "combine",
    "discretize",
    "load_config",
    "mgda_weight",
    "register_objective",
    "weight_step",
]
