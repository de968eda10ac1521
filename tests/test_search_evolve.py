"""NSGA-II over ARNAS/DARTS cell genotypes (search.evolve.run): encoding, operators, a resumable tiny run."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from arnas_zoo.errors import ConfigError

pytest.importorskip("pymoo", reason="pymoo is not installed (pip install 'arnas-zoo[search]')")


@pytest.mark.parametrize("space", ["arnas", "darts"])
def test_every_repaired_gene_vector_is_a_buildable_genotype(space: str) -> None:
    from arnas_zoo.models import build_model
    from arnas_zoo.registry import config_for_genotype
    from search.evolve.config import CELLS
    from search.evolve.run import gene_bounds, repair, to_genotype

    low, high = gene_bounds(space)
    rng = np.random.default_rng(0)
    X = repair(rng.integers(low, high + 1, size=(200, len(low))), space)
    assert ((X >= low) & (X <= high)).all()
    for x in X[:40]:
        genotype = to_genotype(x, space)
        assert set(genotype.cells) == set(CELLS[space])
        for cell in genotype.cells.values():
            assert all(node[0].input != node[1].input for node in cell.nodes)  # distinct inputs per node
    net = build_model(config_for_genotype(to_genotype(X[0], space), init_channels=4, layers=5, input_size=16,
                                          in_channels=1, num_classes=10))  # fmt: skip
    assert net(torch.rand(2, 1, 16, 16)).shape == (2, 10)
    with pytest.raises(ConfigError, match="op index"):
        to_genotype(np.where(np.arange(len(low)) == 0, 7, X[0]), space)
    with pytest.raises(ConfigError, match="genes: expected"):
        to_genotype(X[0][:-1], space)


def test_repair_only_touches_duplicate_inputs() -> None:
    from search.evolve.run import repair

    genes = np.zeros(48, dtype=np.int64)  # every node: op 0 from input 0 twice
    fixed = repair(genes, "arnas")
    assert (fixed.reshape(-1, 4)[:, 3] == 1).all() and (fixed.reshape(-1, 4)[:, :3] == 0).all()
    distinct = fixed.copy()
    assert np.array_equal(repair(distinct, "arnas"), distinct)


def test_operators_keep_nodes_whole_and_genes_in_bounds() -> None:
    from pymoo.core.problem import Problem

    from search.evolve.run import gene_bounds
    from search.nsga import block_crossover, reset_mutation

    X = np.zeros((2, 50, 32), dtype=np.int64)
    X[1] = 5
    out = block_crossover(8, 4, 1.0)._do(None, X, random_state=np.random.default_rng(0))
    for child in out.reshape(-1, 8, 4):
        assert all(len(set(node.tolist())) == 1 for node in child)
    low, high = gene_bounds("darts")
    problem = Problem(n_var=32, n_obj=3, xl=low, xu=high, vtype=int)
    mutated = reset_mutation(0.5)._do(problem, np.tile(high, (100, 1)), random_state=np.random.default_rng(0))
    assert ((mutated >= low) & (mutated <= high)).all() and (mutated != high).any()


def _micro():  # type: ignore[no-untyped-def]
    from search.evolve.config import PRESETS

    return replace(PRESETS["evolve-darts-tiny"], population=4, generations=2, train_epochs=1.0, train_n=64,
                   val_n=48, pgd_n=24, compare=("darts_v2",), compare_seeds=2)  # fmt: skip


def test_evolve_resumes_after_a_kill_and_reproduces_the_uninterrupted_front(tmp_path: Path) -> None:
    from arnas_zoo.genotype import Genotype
    from search.evolve.run import run_evolve

    torch.set_num_threads(1)
    cfg = _micro()
    whole = run_evolve(cfg, tmp_path / "whole", progress=False)
    rows = json.loads((tmp_path / "whole" / "candidates.json").read_text())
    assert whole["evaluated"] >= 4 and len(rows) == whole["evaluated"] + 2  # + DARTS_V2 at 2 seeds
    assert (tmp_path / "whole" / "plots" / "front_3d.png").is_file()
    for path in whole["genotypes"]:
        assert Genotype.load(tmp_path / "whole" / path).space == "darts"
    ref = whole["compare"]["ref-darts_v2"]
    assert ref["seeds"] == 2 and len(ref["test_pgd20_accuracy"]) == 2 and ref["macs"] > 0
    assert ref["mean_test_pgd20_accuracy"] == pytest.approx(sum(ref["test_pgd20_accuracy"]) / 2)
    assert 0 <= ref["dominated_by_front_members_heldout"] <= len(whole["front"])
    assert "test" in whole["rows"]["reported"] and "validation" in whole["rows"]["objectives"]
    cut = replace(cfg, compare=())
    assert run_evolve(cut, tmp_path / "cut", progress=False, stop_after_generations=1) == {
        "stopped_after_generations": 1
    }
    before = finished_results(tmp_path / "cut")
    resumed = run_evolve(cut, tmp_path / "cut", progress=False, resume=True)
    after = finished_results(tmp_path / "cut")
    assert before and all(after[name] == before[name] for name in before)  # no finished candidate trained twice
    assert len(after) > len(before)  # and the later generations did run

    def figures(front: list[dict]) -> list[dict]:  # everything but the wall-clock seconds
        return [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in front]

    assert figures(resumed["front"]) == figures(whole["front"])
    with pytest.raises(ConfigError, match="darts genotype"):
        run_evolve(replace(cfg, space="arnas"), tmp_path / "mismatch", progress=False)


def finished_results(run: Path) -> dict[str, tuple[int, bytes]]:
    """Each finished job's result file with its modification time: unchanged means not trained again."""
    results = [p for p in (run / "jobs").glob("*.json") if len(p.stem) == 20 and set(p.stem) <= set("0123456789abcdef")]
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in results}


def test_a_second_search_into_a_busy_run_folder_is_refused_before_it_writes(tmp_path: Path) -> None:
    """The config check and write happen under the run folder's lock: a second process never swaps config.json."""
    import subprocess
    import sys

    from arnas_zoo.errors import RunFolderBusyError
    from search.evolve.run import run_evolve

    out = tmp_path / "busy"
    out.mkdir()
    (out / "config.json").write_text('{"theirs": true}')
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from arnas_zoo.runs.lock import RunFolderLock\n"
         f"with RunFolderLock({str(out)!r}, 'other search'):\n    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(RunFolderBusyError, match="other search"):
            run_evolve(replace(_micro(), compare=()), out, progress=False, resume=True)
        assert (out / "config.json").read_text() == '{"theirs": true}'  # untouched
    finally:
        holder.kill()
        holder.wait()
