"""``torch.compile`` for training (``recipe.compile``): what is compiled, and how often it recompiled.

Two compiled callables of one network: its ``forward`` for the attack and the validation, and its
``forward_train`` for the training forward passes (the optimizer updates the same parameters). Each
sees a fixed set of guard combinations, so a run compiles a handful of graphs and then reuses them:

- training forward: train mode, gradients on (one graph of ``forward_train`` where the auxiliary
  head's logits are used, one of ``forward`` where they are not);
- attack: BatchNorm in the recipe's attack mode, input gradients on (one graph);
- validation: eval mode without gradients, on batches of the training batch size (one graph);
- the last partial validation batch makes the batch dimension dynamic: one more graph each for the
  validation forward and its attack, once. Six graphs in all for a recipe with an auxiliary head
  (``tests/test_training.py`` counts them), and none after the first epoch.

Attack examples come back in the layout of the clean batch (channels_last in training), so a layout
change never triggers a recompile. ``graphs_compiled()`` is recorded in every epoch of the log;
a count near torch's recompile limit (8 per function) means eager fallback and is warned about.
``ARNAS_ZOO_COMPILE_BACKEND`` picks the backend (``inductor`` by default; ``eager`` runs dynamo's
capture only, which the tests use to count recompiles without a C compiler's time). An error while
compiling falls back to eager with a warning instead of stopping the run.
"""

from __future__ import annotations

import logging
import os

from torch import nn

from arnas_zoo.runs.distributed import Dist
from arnas_zoo.training.step import StepModels

BACKEND_ENV = "ARNAS_ZOO_COMPILE_BACKEND"
log = logging.getLogger("arnas_zoo.training")


def compiled_models(net: nn.Module, use_aux: bool, aux_weight: float, dist: Dist) -> StepModels:
    """The step's views of ``net`` with compiled forward passes."""
    import torch._dynamo

    backend = os.environ.get(BACKEND_ENV, "inductor")
    torch._dynamo.config.suppress_errors = True  # a graph that fails to compile runs eagerly
    attack_net = torch.compile(net, backend=backend)
    train_forward = torch.compile(net.forward_train, backend=backend)  # type: ignore[arg-type]
    return StepModels(net, attack_net, use_aux, aux_weight, dist, compiled_train=train_forward)  # type: ignore[arg-type]


def graphs_compiled() -> int:
    """How many graphs dynamo has compiled in this process so far."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def warn_near_limit(graphs: int) -> None:
    """Log a warning when the compiled graphs approach the per-function recompile limit."""
    import torch._dynamo

    limit = int(getattr(torch._dynamo.config, "recompile_limit", 8))
    if graphs >= 2 * limit - 2:  # two compiled functions share the count
        log.warning(
            "torch.compile: %d graphs compiled (limit %d recompiles per function): past it, torch runs eagerly",
            graphs,
            limit,
        )
