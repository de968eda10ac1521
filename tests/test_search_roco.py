"""RoCo-NAS: the macro space and builder, pymoo's NSGA-II machinery against brute force, resume, outputs."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from arnas_zoo.errors import GenotypeError
from arnas_zoo.macro import MacroGenotype, bits_per_phase, macro_config
from arnas_zoo.models import build_model

pytest.importorskip("pymoo", reason="pymoo is not installed (pip install 'arnas-zoo[search]')")


def _conv(c_in: int, c_out: int) -> int:
    return 9 * c_in * c_out + 2 * c_out  # 3x3 conv without bias + BatchNorm's weight and bias


def test_macro_parameter_count_matches_a_hand_count() -> None:
    # 3 phases of 4 nodes: 6 connection bits (0-1, 0-2, 1-2, 0-3, 1-3, 2-3) + the residual bit
    phases = ("1000000", "0000001", "1111110")
    # phase 0: only edge 0->1: nodes 0 and 1 active; phase 1: no edge: no node; phase 2: all four nodes
    g = MacroGenotype(phases, nodes=4, name="hand")
    model = build_model(macro_config(g, in_channels=3, input_size=16, init_channels=4, num_classes=10))
    hand = _conv(3, 4) + 2 * _conv(4, 4) + _conv(4, 4)  # phase 0: input, nodes 0 and 1, output
    hand += _conv(4, 8) + _conv(8, 8)  # phase 1: input and output only
    hand += _conv(8, 16) + 4 * _conv(16, 16) + _conv(16, 16)  # phase 2
    hand += 16 * 10 + 10  # classifier
    assert sum(p.numel() for p in model.parameters()) == hand
    assert model(torch.rand(2, 3, 16, 16)).shape == (2, 10)


def test_residual_bit_adds_the_input_node() -> None:
    torch.manual_seed(0)
    a = build_model(macro_config(MacroGenotype(("1000000",), nodes=4), in_channels=1, input_size=8)).eval()
    b = build_model(macro_config(MacroGenotype(("1000001",), nodes=4), in_channels=1, input_size=8)).eval()
    b.load_state_dict(a.state_dict())
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        phase_a, phase_b = a.phases[0], b.phases[0]
        h = phase_a.input_node(x)
        node1 = phase_a.nodes["1"](phase_a.nodes["0"](h))
        assert torch.allclose(phase_a(x), phase_a.output_node(node1))
        assert torch.allclose(phase_b(x), phase_b.output_node(node1 + h))


def test_every_random_bit_string_builds_or_raises_the_genotype_error() -> None:
    gen = np.random.default_rng(0)
    for _ in range(200):
        nodes = int(gen.integers(2, 7))
        length = 3 * bits_per_phase(nodes) + int(gen.choice([0, 0, 0, -1, 1]))
        bits = gen.integers(0, 2, length).tolist()
        if gen.random() < 0.1:
            bits[0] = 2
        try:
            g = MacroGenotype.from_bits(bits, 3, nodes)
        except GenotypeError:
            assert length != 3 * bits_per_phase(nodes) or 2 in bits
            continue
        assert MacroGenotype.from_dict(json.loads(g.to_json())) == g
        model = build_model(macro_config(g, in_channels=1, input_size=8, init_channels=2))
        assert model(torch.rand(1, 1, 8, 8)).shape == (1, 10)
    with pytest.raises(GenotypeError):
        MacroGenotype(("10",), nodes=4)
    with pytest.raises(GenotypeError):
        MacroGenotype.from_dict({"schema": "arnas-zoo/macro-genotype@1", "phases": ["1x00000"], "nodes": 4})


def _dominates(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all(a <= b) and np.any(a < b))


def _brute_fronts(F: np.ndarray) -> list[int]:
    rank = [-1] * len(F)
    left, r = set(range(len(F))), 0
    while left:
        front = {i for i in left if not any(_dominates(F[j], F[i]) for j in left if j != i)}
        for i in front:
            rank[i] = r
        left -= front
        r += 1
    return rank


def _brute_crowding(F: np.ndarray) -> np.ndarray:
    n, m = F.shape
    d = np.zeros(n)
    for k in range(m):
        order = np.argsort(F[:, k], kind="stable")
        span = F[order[-1], k] - F[order[0], k]
        d[order[0]] = d[order[-1]] = np.inf
        for a in range(1, n - 1):
            if span > 0:
                d[order[a]] += (F[order[a + 1], k] - F[order[a - 1], k]) / span
    return d


def test_pymoo_sorting_and_crowding_agree_with_brute_force() -> None:
    from pymoo.operators.survival.rank_and_crowding.metrics import calc_crowding_distance
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    gen = np.random.default_rng(1)
    for trial in range(30):
        F = gen.random((int(gen.integers(5, 25)), int(gen.integers(2, 4))))
        if trial % 3 == 0:
            F = np.round(F * 4) / 4  # ties
        fronts = NonDominatedSorting().do(F)
        rank = np.empty(len(F), dtype=int)
        for r, front in enumerate(fronts):
            rank[front] = r
        assert rank.tolist() == _brute_fronts(F)
        unique = np.unique(F, axis=0)  # crowding is defined on distinct points
        if len(unique) >= 3:
            ours = _brute_crowding(unique)
            theirs = calc_crowding_distance(unique)
            finite = np.isfinite(ours) & np.isfinite(theirs)
            assert np.array_equal(np.isinf(ours), np.isinf(theirs))
            # Deb et al. sum the normalised gaps over objectives; pymoo averages them (same order)
            assert np.allclose(ours[finite] / F.shape[1], theirs[finite])


def test_phase_crossover_inherits_whole_phases() -> None:
    from search.roco.run import phase_crossover

    per = bits_per_phase(4)
    X = np.zeros((2, 50, 3 * per), dtype=bool)
    X[1] = True
    out = phase_crossover(3, per, 1.0)._do(None, X, random_state=np.random.default_rng(0))
    for child in out.reshape(-1, 3, per):
        assert all(len(set(phase.tolist())) == 1 for phase in child)  # each phase is one parent's


def test_mutation_changes_one_phase_at_a_time_at_the_configured_rate() -> None:
    from search.roco.config import PRESETS
    from search.roco.run import _algorithm

    config = PRESETS["roco"]  # 3 phases x 6 nodes (the paper's Table II), 0.02 per bit
    per, n = bits_per_phase(config.nodes), 20000
    X = np.random.default_rng(1).random((n, config.n_bits)) < 0.5
    mutation = _algorithm(config).mating.mutation
    out = mutation._do(None, X, random_state=np.random.default_rng(2))
    changed = (out != X).reshape(n, config.phases, per)
    phases_changed = changed.any(axis=2).sum(axis=1)
    assert phases_changed.max() == 1  # a plain bit-flip at 0.02 over 48 bits changes 2+ phases in ~19%
    assert abs(changed.sum() / n - config.n_bits * config.mutation_prob) < 0.05  # expected flips kept: 0.96
    assert all(changed[:, k].any() for k in range(config.phases))  # every phase can be the one
    assert out.dtype == X.dtype


def _micro():  # type: ignore[no-untyped-def]
    from search.roco.config import PRESETS

    return replace(
        PRESETS["roco-tiny"],
        population=4,
        generations=2,
        source_archs=("resnet18",),
        source_epochs=1.0,
        source_width=4,
        linf_eps=(0.2,),
        l0_pixels=(10,),
        l0_trials=3,
        transfer_from=60,
        train_epochs=1.0,
        init_channels=2,
        pgd_n=20,
    )


def test_roco_resumes_after_a_kill_and_reproduces_the_uninterrupted_front(tmp_path: Path) -> None:
    from arnas_zoo.errors import ConfigError
    from search.roco.run import run_roco

    torch.set_num_threads(1)
    cfg = _micro()
    whole = run_roco(cfg, tmp_path / "whole", progress=False)
    assert (tmp_path / "whole" / "plots" / "front_2d.png").is_file()
    assert (tmp_path / "whole" / "plots" / "front_3d.png").is_file()
    rows = json.loads((tmp_path / "whole" / "candidates.json").read_text())
    assert whole["evaluated"] == len(rows) >= 4
    for path in whole["genotypes"]:
        MacroGenotype.load(tmp_path / "whole" / path)
    meta = json.loads((tmp_path / "whole" / "transfer_set.json").read_text())
    assert meta["search_half"] + meta["held_out_half"] == meta["n"] > 0
    assert run_roco(cfg, tmp_path / "cut", progress=False, stop_after_generations=1) == {"stopped_after_generations": 1}
    with pytest.raises(ConfigError, match="--resume"):
        run_roco(cfg, tmp_path / "cut", progress=False)
    before = finished_results(tmp_path / "cut")
    resumed = run_roco(cfg, tmp_path / "cut", progress=False, resume=True)
    after = finished_results(tmp_path / "cut")
    assert before and all(after[name] == before[name] for name in before)  # no finished candidate trained twice
    assert len(after) > len(before)
    assert [r["key"] for r in resumed["front"]] == [r["key"] for r in whole["front"]]

    def figures(front: list[dict]) -> list[dict]:  # everything but the wall-clock seconds
        return [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in front]

    assert figures(resumed["front"]) == figures(whole["front"])
    for g in (0, 1):
        a = np.load(tmp_path / "whole" / "generations" / f"gen_{g:03d}.npz")
        b = np.load(tmp_path / "cut" / "generations" / f"gen_{g:03d}.npz")
        assert np.array_equal(a["X"], b["X"]) and np.array_equal(a["F"], b["F"])


def test_cli_refuses_bad_presets_and_keys_in_one_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from search.cli import main

    runner = CliRunner()
    for group, preset in (("roco", "roco-tiny"), ("robnet", "robnet-tiny")):
        bad = runner.invoke(main, [group, "run", "nonsense", "-o", str(tmp_path / group)])
        assert bad.exit_code == 2 and "expected one of" in bad.output and "Traceback" not in bad.output
        key = runner.invoke(main, [group, "run", preset, "--set", "no_such_key=1", "-o", str(tmp_path / group)])
        assert key.exit_code != 0 and "no_such_key" in key.output and "Traceback" not in key.output
    bits = runner.invoke(main, ["roco", "run", "roco-tiny", "--set", "objectives=4", "-o", str(tmp_path / "o")])
    assert bits.exit_code != 0 and "objectives" in bits.output and "Traceback" not in bits.output


def test_claim_run_folder_names_the_changed_keys_and_accepts_tuples_as_lists(tmp_path: Path) -> None:
    from arnas_zoo.errors import ConfigError
    from arnas_zoo.runs.folder import claim_run_folder

    claim_run_folder(tmp_path, {"a": (1, 2), "b": 3}, "search", resume=False)
    claim_run_folder(tmp_path, {"a": [1, 2], "b": 3}, "search", resume=True)  # JSON has no tuples
    with pytest.raises(ConfigError, match="already there"):
        claim_run_folder(tmp_path, {"a": [1, 2], "b": 3}, "search", resume=False)
    with pytest.raises(ConfigError, match=r"changed: \['b'\]"):
        claim_run_folder(tmp_path, {"a": [1, 2], "b": 4}, "search", resume=True)


def test_matched_flops_pairs_each_front_member_with_the_nearest_baseline(tmp_path: Path) -> None:
    from arnas_zoo.errors import ConfigError
    from search.roco.run import matched_flops

    def run(name: str, rows: list[tuple[str, int, float, bool]]) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        table = [{"key": k, "flops": f, "test_pgd20_accuracy": a, "test_clean_accuracy": 0.9, "on_front": front}
                 for k, f, a, front in rows]  # fmt: skip
        (folder / "candidates.json").write_text(json.dumps(table))
        return folder

    ours = run("a", [("a1", 100, 0.5, True), ("a2", 300, 0.2, True), ("a3", 200, 0.9, False)])
    base = run("b", [("b1", 110, 0.3, True), ("b2", 250, 0.4, True), ("b3", 300, 0.99, False)])
    result = matched_flops(ours, base)
    assert [(p["key"], p["baseline_key"]) for p in result["pairs"]] == [("a1", "b1"), ("a2", "b2")]
    assert result["pairs_better"] == 1 and result["pairs_worse"] == 1
    assert abs(result["mean_pgd20_difference"] - 0.0) < 1e-12
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    with pytest.raises(ConfigError, match="no candidates.json"):
        matched_flops(unfinished, base)
    with pytest.raises(ConfigError, match="no front member"):
        matched_flops(ours, run("c", [("c1", 100, 0.5, False)]))


def test_search_run_dispatches_the_peers_presets(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from search.cli import main

    runner = CliRunner()
    cases = [
        ("roco-tiny", "objectives=4", "objectives"),
        ("evolve-darts-tiny", "space=xx", "space"),
        ("robnet-tiny", "no_key=1", "no_key"),
    ]
    for preset, key, message in cases:
        result = runner.invoke(main, ["run", preset, "--set", key, "-o", str(tmp_path / preset)])
        assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output
    wrong = runner.invoke(main, ["run", "roco-tiny", "--device", "cpu", "-o", str(tmp_path / "x")])
    assert wrong.exit_code == 2 and "for the ARNAS search" in wrong.output


def finished_results(run: Path) -> dict[str, tuple[int, bytes]]:
    """Each finished job's result file with its modification time: unchanged means not trained again."""
    results = [p for p in (run / "jobs").glob("*.json") if len(p.stem) == 20 and set(p.stem) <= set("0123456789abcdef")]
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in results}
