"""End-to-end search runs on the shared CIFAR-10 npz: outputs, exact resume, CLI, config errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from arnas_zoo.errors import ConfigError
from arnas_zoo.genotype import Genotype
from arnas_zoo.registry import create_model
from search.cli import main as search_main
from search.config import SearchConfig, load_config, parse_overrides
from search.runner import CHECKPOINT, load_checkpoint, run_search

REPO = Path(__file__).resolve().parents[1]
# smaller than the `tiny` preset: 8x8 images, 64+64 of them, 2 epochs of 2 steps of 8, PGD-1
MICRO = dict(init_channels=4, resize=8, n_images=128, batch_size=8, epochs=2, steps_per_epoch=2, pgd_steps=1, eval_n=8)


def micro_config(shared_data: Path, **kw) -> SearchConfig:
    return load_config("tiny").replace(data_dir=str(shared_data), **{**MICRO, **kw})


def test_config_presets_and_overrides() -> None:
    paper = load_config("paper")
    assert (paper.layers, paper.init_channels, paper.placement, paper.filters) == (8, 24, "A-A-R", "1-2-2")
    assert (paper.batch_size, paper.epochs, paper.order, paper.strategy, paper.lam) == (32, 50, "second", "mgda", 0.1)
    assert paper.pgd_steps == 7 and abs(paper.eps - 8 / 255) < 1e-12 and abs(paper.step_size - 2 / 255) < 1e-12
    cfg = load_config("tiny", ["epochs=5", "order=first", "placement=R-A-A"])
    assert (cfg.epochs, cfg.order, cfg.placement) == (5, "first", "R-A-A")
    assert parse_overrides(["n_images=null", "lam=0.5"]) == {"n_images": None, "lam": 0.5}
    with pytest.raises(ConfigError, match="unknown key 'epoch'"):
        load_config("tiny", ["epoch=5"])
    with pytest.raises(ConfigError, match="order"):
        load_config("tiny", ["order=third"])
    with pytest.raises(ConfigError, match="neither a preset"):
        load_config("no_such_preset")


def test_search_writes_valid_outputs(shared_data: Path, tmp_path: Path) -> None:
    cfg = micro_config(shared_data)
    summary = run_search(cfg, tmp_path, progress=False)
    g = Genotype.load(tmp_path / "genotype.json")
    assert g.space == "arnas" and set(g.cells) == {"accurate", "robust", "reduce"}
    assert g.to_dict() == summary["genotype"]
    model = create_model("arnas", genotype=g, init_channels=4, layers=5).eval()
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, 10)
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    for r in lines:
        assert len(r["gamma"]) == 2 and all(0.0 <= x <= 1.0 for x in r["gamma"])
        assert Genotype.from_dict(r["genotype"]).space == "arnas"
        assert {"train_adv_loss", "val_natural_acc", "val_pgd_ce_loss", "eval"} <= set(r)
    with np.load(tmp_path / "alphas.npz") as npz:
        assert npz["accurate"].shape == (3, 14, 7)  # initialisation + 2 epochs
        assert np.allclose(npz["robust"].sum(-1), 1.0)
        assert not np.allclose(npz["accurate_logits"][0], npz["accurate_logits"][-1])
        assert list(npz["primitives"]) == list(
            create_model.__globals__["get_config"]("arnas").genotype.cells
            and __import__("arnas_zoo.ops", fromlist=["x"]).ARNAS_PRIMITIVES
        )
    assert np.load(tmp_path / "gamma.npy").shape == (2, 2)
    assert json.loads((tmp_path / "eval_config.json").read_text())["placement"] == ["accurate", "accurate", "robust"]
    for name in ("alphas_accurate", "alphas_robust", "alphas_reduce", "gamma", "cell_accurate", "cell_robust"):
        assert (tmp_path / "plots" / f"{name}.png").stat().st_size > 1000
    # the same folder with another config is refused
    with pytest.raises(ConfigError, match="different config"):
        run_search(cfg.replace(lam=0.5), tmp_path, progress=False)


class Kill(Exception):
    pass


def test_resume_after_kill_equals_uninterrupted_run(shared_data: Path, tmp_path: Path) -> None:
    cfg = micro_config(shared_data)
    full = run_search(cfg, tmp_path / "full", progress=False, plots=False)

    def kill_in_second_epoch(epoch: int, step: int) -> None:
        if epoch == 1 and step == 0:
            raise Kill

    with pytest.raises(Kill):
        run_search(cfg, tmp_path / "killed", progress=False, plots=False, on_step=kill_in_second_epoch)
    assert load_checkpoint(tmp_path / "killed" / CHECKPOINT)["epoch"] == 1
    torch.manual_seed(12345)  # a resumed process starts with unrelated global RNG state
    resumed = run_search(cfg, tmp_path / "killed", progress=False, plots=False)
    a = load_checkpoint(tmp_path / "full" / CHECKPOINT)
    b = load_checkpoint(tmp_path / "killed" / CHECKPOINT)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert resumed["gamma_trace"] == full["gamma_trace"]
    assert resumed["genotype"] == full["genotype"]
    assert (tmp_path / "full" / "log.jsonl").read_text().count("\n") == (
        tmp_path / "killed" / "log.jsonl"
    ).read_text().count("\n")


def test_first_order_weighted_sum_and_darts_space(shared_data: Path, tmp_path: Path) -> None:
    cfg = micro_config(shared_data, epochs=1, steps_per_epoch=1, order="first", strategy="weighted_sum", eval_n=0)
    summary = run_search(cfg, tmp_path / "ws", progress=False, plots=False)
    assert all(np.isnan(g) for g in summary["gamma_trace"][0])
    darts = micro_config(
        shared_data, epochs=1, steps_per_epoch=1, space="darts", placement="N-N-N", filters="1-2-4", eval_n=0
    )
    summary = run_search(darts, tmp_path / "darts", progress=False, plots=False)
    g = Genotype.from_dict(summary["genotype"])
    assert g.space == "darts" and set(g.cells) == {"normal", "reduce"}
    assert create_model("darts_v2", genotype=g, init_channels=4, layers=5)(torch.rand(1, 3, 32, 32)).shape == (1, 10)


def test_cli_run_and_errors(shared_data: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    sets = [f"--set={k}={json.dumps(v)}" for k, v in {**MICRO, "epochs": 1, "steps_per_epoch": 1, "eval_n": 0}.items()]
    result = runner.invoke(
        search_main,
        [
            "run",
            "tiny",
            *sets,
            f"--set=data_dir={shared_data}",
            "-o",
            str(tmp_path / "r"),
            "--no-progress",
            "--no-plots",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "genotype:" in result.output and (tmp_path / "r" / "genotype.json").is_file()
    result = runner.invoke(search_main, ["run", "tiny", "--set", "epoch=3", "-o", str(tmp_path / "bad")])
    assert result.exit_code == 2 and "unknown key 'epoch'" in result.output
    result = runner.invoke(
        search_main, ["run", "tiny", "--set", "data_dir=/nonexistent", "-o", str(tmp_path / "nodata")]
    )
    assert result.exit_code == 2 and "not found" in result.output


@pytest.mark.slow
def test_sweep_counts_ops(shared_data: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    sets = [f"--set={k}={json.dumps(v)}" for k, v in {**MICRO, "epochs": 1, "steps_per_epoch": 1, "eval_n": 0}.items()]
    result = runner.invoke(
        search_main,
        [
            "sweep",
            "tiny",
            "--seeds",
            "0,1",
            *sets,
            f"--set=data_dir={shared_data}",
            "-o",
            str(tmp_path),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "op_counts.json").read_text())
    assert summary["runs"] == ["seed0", "seed1"]
    for cell in ("accurate", "robust", "reduce"):
        assert sum(summary["op_counts"][cell].values()) == 2 * 8  # 8 kept edges per cell and run
    assert (tmp_path / "op_counts.png").stat().st_size > 1000
    assert "| op | accurate | robust | reduce |" in (tmp_path / "op_counts.md").read_text()
    # the two seeds give different architectures (different init and data order)
    g0, g1 = (Genotype.load(tmp_path / f"seed{s}" / "genotype.json") for s in (0, 1))
    assert g0.cells != g1.cells


def test_torchrun_two_processes_gloo(shared_data: Path, tmp_path: Path) -> None:
    """2 CPU processes (gloo): gradients are averaged before MGDA, so both ranks end identical."""
    sets = []
    for k, v in {**MICRO, "epochs": 1, "steps_per_epoch": 2, "eval_n": 0, "data_dir": str(shared_data)}.items():
        sets += ["--set", f"{k}={json.dumps(v) if not isinstance(v, str) else v}"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
        "-m",
        "search",
        "run",
        "tiny",
        *sets,
        "-o",
        str(tmp_path),
        "--no-progress",
        "--no-plots",
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["ranks_consistent"] is True
    Genotype.load(tmp_path / "genotype.json")
