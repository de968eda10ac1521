"""What every NSGA-II search here shares: pymoo's ask/tell loop over job-evaluated candidates, and operators.

The searches (:mod:`search.roco.run` over macro genotypes, :mod:`search.evolve.run` over cell genotypes) differ
in encoding and in what a candidate job measures; the loop is the same: ask pymoo for a population, run
one job per member (content-keyed, so a resumed run replays the generations from the seed with the
stored results and trains nothing twice), tell pymoo the objectives, and write each generation's
population and front as plain arrays (``generations/gen_XXX.npz``; no pickle).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def block_crossover(blocks: int, per_block: int, prob: float) -> Any:
    """A pymoo crossover: each child takes every block of ``per_block`` genes whole from one of two parents.

    RoCo-NAS's blocks are phases; the cell search's are nodes (an op and an input for each of two edges).
    """
    from pymoo.core.crossover import Crossover

    class BlockCrossover(Crossover):
        def __init__(self) -> None:
            super().__init__(2, 2, prob=prob)

        def _do(self, _problem: Any, X: np.ndarray, random_state: Any = None, **kwargs: Any) -> np.ndarray:
            _, n_matings, _ = X.shape
            take = random_state.random((n_matings, blocks)) < 0.5
            mask = np.repeat(take, per_block, axis=1)
            out = np.copy(X)
            out[0][mask], out[1][mask] = X[1][mask], X[0][mask]
            return out

    return BlockCrossover()


def block_mutation(blocks: int, per_block: int, prob_var: float) -> Any:
    """A pymoo bit-flip mutation that changes one block at a time (RoCo-NAS Sec. III: "only one
    computational block is allowed to be mutated at a time").

    Each offspring draws one block uniformly and flips each of its bits with probability
    ``min(1, prob_var * blocks)``: the expected number of flipped bits per offspring is that of a plain
    bit-flip mutation at ``prob_var`` per bit over the whole genome, and every flip lands in one block.
    """
    from pymoo.core.mutation import Mutation

    within = min(1.0, prob_var * blocks)

    class BlockMutation(Mutation):
        def __init__(self) -> None:
            super().__init__(prob=1.0, prob_var=prob_var)

        def _do(self, _problem: Any, X: np.ndarray, random_state: Any = None, **kwargs: Any) -> np.ndarray:
            X = np.copy(X)
            chosen = random_state.integers(0, blocks, size=len(X))
            in_block = (np.arange(blocks * per_block)[None, :] // per_block) == chosen[:, None]
            flip = in_block & (random_state.random(X.shape) < within)
            X[flip] = ~X[flip].astype(bool)
            return X

    return BlockMutation()


def reset_mutation(prob_var: float) -> Any:
    """A pymoo mutation for integer genes: each gene is redrawn uniformly in [xl, xu] with ``prob_var``."""
    from pymoo.core.mutation import Mutation

    class ResetMutation(Mutation):
        def __init__(self) -> None:
            super().__init__(prob=1.0, prob_var=prob_var)

        def _do(self, problem: Any, X: np.ndarray, random_state: Any = None, **kwargs: Any) -> np.ndarray:
            X = np.copy(X)
            low, high = np.asarray(problem.xl, dtype=np.int64), np.asarray(problem.xu, dtype=np.int64)
            redraw = random_state.random(X.shape) < prob_var
            fresh = random_state.integers(low, high + 1, size=X.shape)
            X[redraw] = fresh[redraw]
            return X

    return ResetMutation()


def knee(F: np.ndarray) -> int:
    """The front member closest to the ideal point after min-max normalisation of each objective."""
    low, high = F.min(0), F.max(0)
    scaled = (F - low) / np.where(high > low, high - low, 1.0)
    return int(np.argmin(np.linalg.norm(scaled, axis=1)))


def evolve(
    algorithm: Any,
    out: Path,
    *,
    job_for: Callable[[np.ndarray, int], Any],
    objectives: Callable[[dict[str, Any]], list[float]],
    generations: int,
    report: Any,
    backend: str = "local",
    address: str | None = None,
    max_parallel: int | None = None,
    stop_after_generations: int | None = None,
) -> dict[str, dict[str, Any]] | None:
    """Run ``algorithm`` (set up, ask/tell) to the end; returns every evaluated candidate by job key.

    ``job_for(x, generation)`` is the :class:`arnas_zoo.jobs.Job` that evaluates genes ``x``; its result
    row gives ``objectives(row)``. ``stop_after_generations`` (a testing aid) returns None after that
    many generations, as a kill would.
    """
    from arnas_zoo.jobs import run_jobs

    evaluated: dict[str, dict[str, Any]] = {}
    (out / "generations").mkdir(exist_ok=True)
    generation = 0
    while algorithm.has_next():
        if stop_after_generations is not None and generation >= stop_after_generations:
            return None
        pop = algorithm.ask()
        X = pop.get("X").astype(np.int64)
        jobs = [job_for(x, generation) for x in X]
        done = run_jobs(jobs, out, backend=backend, address=address, max_parallel=max_parallel, progress=report)
        rows = [done.results[j.key] for j in jobs]
        F = np.array([objectives(r) for r in rows], dtype=np.float64)
        pop.set("F", F)
        algorithm.tell(infills=pop)
        for j, r in zip(jobs, rows):
            name = j.args["key"]
            evaluated[name] = {**r, "generation": evaluated.get(name, {}).get("generation", generation)}
        opt = algorithm.opt
        np.savez(
            out / "generations" / f"gen_{generation:03d}.npz",
            X=X,
            F=F,
            front_X=opt.get("X").astype(np.int64),
            front_F=opt.get("F"),
        )
        report.write(f"generation {generation + 1}/{generations}: {len(X)} evaluated, front {len(opt)}")
        generation += 1
    return evaluated
