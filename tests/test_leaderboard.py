"""The leaderboard: one recipe for every architecture, resumable through the job layer, a table and a plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arnas_zoo.errors import ConfigError
from arnas_zoo.leaderboard import (
    BOARDS,
    REDUCED_SIZES,
    Board,
    plan_jobs,
    registered,
    rows,
    run_leaderboard,
    signature,
    write_table,
)
from arnas_zoo.registry import list_archs, resolve_config

TINY = Board(
    "digits",
    "train",
    "cpu_digits",
    0.2,
    eval_n=24,
    attacks=("fgsm", "pgd20"),
    recipe_overrides={"epochs": 1, "train_n": 96, "val_n": 32, "batch_size": 32},
)


def test_every_buildable_registry_family_has_a_reduced_size() -> None:
    # the paper-size duplicates (robnet_large_v2, resnet18_imagenet) are the same families at other sizes
    families = {spec.name for spec in list_archs()} - {"robnet_large_v2", "resnet18_imagenet"}
    assert families == set(REDUCED_SIZES)
    for arch, size in REDUCED_SIZES.items():
        config = resolve_config(arch, in_channels=1, input_size=28, num_classes=10, **size)
        assert config.init_channels == size["init_channels"]
    with pytest.raises(ConfigError, match="no reduced size"):
        plan_jobs(BOARDS["mnist"], ["arnas", "not_an_arch"])


def test_one_recipe_and_the_same_points_for_every_architecture() -> None:
    jobs = plan_jobs(BOARDS["mnist"], ["arnas", "resnet18"])
    trains = [j.args for j in jobs if j.kind == "train"]
    evals = [j.args for j in jobs if j.kind == "leaderboard-eval"]
    drop = ("arch", "model_overrides", "out", "name")
    assert {json.dumps({k: v for k, v in t.items() if k not in drop}, sort_keys=True) for t in trains} == {
        json.dumps({k: v for k, v in trains[0].items() if k not in drop}, sort_keys=True)
    }
    assert trains[0]["train_split"] == "train_full" and trains[0]["recipe"] == "cpu_mnist_full"
    assert len({(e["n"], tuple(e["attacks"]), e["eps"], e["seed"]) for e in evals}) == 1


def test_tiny_board_runs_resumes_and_writes_table(tmp_path: Path) -> None:
    table = run_leaderboard(TINY, tmp_path, ["arnas", "resnet18"])
    assert [r["arch"] for r in table] and {r["arch"] for r in table} == {"arnas", "resnet18"}
    for row in table:
        assert 0 <= row["worst_case"] <= row["pgd20"] <= row["clean"] <= 1 and row["n"] == 24
        assert row["worst_case"] <= row["fgsm"] and row["params"] > 0 and row["macs"] > 0
    results = sorted(p for p in (tmp_path / "jobs").glob("*.json") if p.name != "plan.json")
    stamps = {p: p.stat().st_mtime_ns for p in results}
    again = run_leaderboard(TINY, tmp_path, ["arnas", "resnet18"])  # rerun: nothing is redone
    assert again == table and {p: p.stat().st_mtime_ns for p in results} == stamps
    text = write_table(TINY, tmp_path, tmp_path / "docs" / "board.md", tmp_path / "docs" / "img" / "board.png")
    assert (tmp_path / "docs" / "img" / "board.png").stat().st_size > 1000
    assert "ranks may differ" in text and "](img/board.png)" in text
    # rows are tiered by overlapping worst-case intervals (on 24 points, one tier), never numbered 1..N
    import re

    from arnas_zoo.figures import tiers

    shown = [int(t) for t in re.findall(r"^\| (\d+) \| (?:arnas|resnet18) \|", text, re.M)]
    assert shown == tiers([(r["worst_case"], r["n"]) for r in table]) and shown[0] == 1
    assert "| tier | architecture |" in text and "Not finished yet: darts_v2" in text
    assert "| run folder only |" in text
    assert rows(TINY, tmp_path, ["darts_v2"]) == []  # not run: no row, no error


def test_registered_models_give_their_rows_and_are_not_trained_again(tmp_path: Path) -> None:
    from dataclasses import replace

    board = BOARDS["mnist"]
    zoo = registered(board)
    name, metrics = zoo["arnas"]
    assert name == "arnas.mnist_linf_cpu_c4l5_60k"  # the superseded toy of the same arch does not count
    assert metrics["training"]["leaderboard"] == signature(board, "arnas")
    # an empty run folder: the row is the registered report, and nothing is trained or planned
    table = run_leaderboard(board, tmp_path, ["arnas"])
    assert [r["arch"] for r in table] == ["arnas"] and table[0]["weights"] == name
    row = table[0]
    assert row["clean"] == metrics["clean_accuracy"] and row["aa"] == next(
        r["robust_accuracy"] for r in metrics["results"] if r["attack"] == "aa"
    )
    assert row["worst_case"] <= row["aa"] <= row["clean"] and row["params"] > 0 and row["macs"] > 0
    assert not (tmp_path / "jobs").exists()
    # another board's settings (other points, another seed) do not take the registered row
    assert "arnas" not in registered(replace(board, eval_n=1000))
    assert "arnas" not in registered(replace(board, seed=1))
    assert rows(board, tmp_path, ["arnas"], zoo=False) == []
    text = write_table(board, tmp_path, tmp_path / "board.md")
    assert f"`{name}`" in text


def test_a_superseded_model_warns_and_still_loads() -> None:
    import arnas_zoo
    from arnas_zoo.pretrained import get_pretrained

    assert get_pretrained("arnas.mnist_linf_cpu_c4l5").superseded_by == "arnas.mnist_linf_cpu_c4l5_60k"
    with pytest.warns(UserWarning, match="superseded by arnas.mnist_linf_cpu_c4l5_60k"):
        model = arnas_zoo.load("arnas.mnist_linf_cpu_c4l5")
    assert model.config.in_channels == 1


def test_plot_labels_of_nearby_points_are_stacked_apart_and_far_ones_stay_put() -> None:
    from arnas_zoo.leaderboard import spread_labels

    xs = [4.0, 4.05, 4.1, 5.0, 4.02]  # four points close in x (log10 units), one far
    ys = [90.0, 90.0, 90.5, 90.0, 95.0]
    heights = spread_labels(xs, ys, dx=0.25, gap=1.0)
    assert heights[3] == 90.0 and heights[0] == 90.0  # the far point and the lowest keep their height
    assert all(h >= y for h, y in zip(heights, ys, strict=True))  # labels only move up
    near = sorted(heights[i] for i in (0, 1, 2, 4))
    assert all(b - a >= 1.0 - 1e-9 for a, b in zip(near, near[1:], strict=False))  # none within a gap
    assert heights[4] == 95.0  # already clear of the others


def test_plot_of_an_empty_or_one_row_board_is_written(tmp_path: Path) -> None:
    from arnas_zoo.leaderboard import plot_table

    row = {"arch": "arnas", "params": 10_000, "macs": 2e6, "clean": 0.5, "worst_case": 0.2}
    for name, table in (("empty", []), ("one", [row])):
        path = plot_table(table, tmp_path / f"{name}.png", name)
        assert path.stat().st_size > 1000


def test_wilson_interval_matches_known_values() -> None:
    from arnas_zoo.leaderboard import wilson_interval

    low, high = wilson_interval(0.5, 100)
    assert abs(low - 0.4038) < 1e-3 and abs(high - 0.5962) < 1e-3
    low, high = wilson_interval(1.0, 200)  # a perfect score still has an interval below 1
    assert 0.98 < low < 1.0 and high == 1.0


def test_a_run_folder_row_names_its_zoo_entry_whose_auxiliary_head_was_stripped(tmp_path: Path) -> None:
    """Registration strips the auxiliary head, so the run folder's file differs from the zoo's: the
    tensors the zoo keeps decide, and one changed value breaks the match."""
    from safetensors.torch import load_file, save_file

    from arnas_zoo.config import ModelConfig
    from arnas_zoo.leaderboard import _zoo_name_of
    from arnas_zoo.models import build_model
    from arnas_zoo.pretrained import get_pretrained

    name = "arnas.mnist_linf_cpu_c4l5_60k"
    bundled = get_pretrained(name).bundled_path()
    raw = json.loads((bundled / "config.json").read_text())
    assert raw["auxiliary"] is False and raw["extra"]["auxiliary_head_removed"] > 0
    trained = build_model(ModelConfig.from_dict(dict(raw, auxiliary=True))).state_dict()  # a head, as trained
    state = {**trained, **load_file(str(bundled / "model.safetensors"))}
    assert any(k.startswith("auxiliary_head.") for k in state)
    save_file(state, str(tmp_path / "model.safetensors"))
    assert _zoo_name_of(tmp_path, name) == name
    key = next(k for k in state if k.endswith(".weight") and not k.startswith("auxiliary_head."))
    state[key] = state[key] + 1e-3
    save_file(state, str(tmp_path / "model.safetensors"))
    assert _zoo_name_of(tmp_path, name) is None
