"""End-to-end search runs on the shared CIFAR-10 npz: outputs, exact resume, MGDA diagnostics, CLI, DDP."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from arnas_zoo.errors import CheckpointError, ConfigError
from arnas_zoo.genotype import Genotype
from arnas_zoo.primitives import ARNAS_PRIMITIVES
from arnas_zoo.registry import create_model
from arnas_zoo.runs import RunInterrupted, read_state
from search.arnas.config import SearchConfig, load_config, parse_overrides
from search.arnas.run import STATE_FILE, run_search
from search.cli import main as search_main

REPO = Path(__file__).resolve().parents[1]
# smaller than the `tiny` preset: 4 cells (A, reduce, reduce, R) of 2 nodes, 8x8 images, 64+64 of them,
# 2 epochs of 2 steps of 8, PGD-1
MICRO = {
    "layers": 4,
    "nodes": 2,
    "init_channels": 4,
    "resize": 8,
    "n_images": 128,
    "batch_size": 8,
    "epochs": 2,
    "steps_per_epoch": 2,
    "pgd_steps": 1,
    "eval_n": 8,
}


def micro_config(shared_data: Path, **kw) -> SearchConfig:
    return load_config("tiny").replace(data_dir=str(shared_data), **{**MICRO, **kw})


def test_config_presets_and_overrides() -> None:
    paper = load_config("paper")
    assert (paper.layers, paper.init_channels, paper.placement, paper.filters) == (8, 24, "A-A-R", "1-2-2")
    assert (paper.batch_size, paper.epochs, paper.order, paper.strategy, paper.lam) == (32, 50, "second", "mgda", 0.1)
    assert paper.pgd_steps == 7 and abs(paper.eps - 8 / 255) < 1e-12 and abs(paper.step_size - 2 / 255) < 1e-12
    assert paper.attack_bn == "batch"  # PGD on the function both levels train (the authors craft in train mode)
    cfg = load_config("tiny", ["epochs=5", "order=first", "placement=R-A-A"])
    assert (cfg.epochs, cfg.order, cfg.placement) == (5, "first", "R-A-A")
    assert parse_overrides(["n_images=null", "lam=0.5"]) == {"n_images": None, "lam": 0.5}
    for overrides, fragment in (
        (["epoch=5"], "unknown key 'epoch'"),
        (["order=third"], "order"),
        (["eps=NaN"], "eps"),
        (["eps=1/0"], "eps"),
        (["lam=[[[[1]]]]"], "lam"),
        (["epochs=1e400"], "epochs"),
        (["seed=" + "9" * 30], "seed"),
        (["recompute_cells=-1"], "recompute_cells"),
        (["recompute_cells=1.5"], "recompute_cells"),
    ):
        with pytest.raises(ConfigError, match=fragment):
            load_config("tiny", overrides)
    with pytest.raises(ConfigError, match="neither a preset"):
        load_config("no_such_preset")


def test_search_writes_valid_outputs_and_mgda_diagnostics(shared_data: Path, tmp_path: Path) -> None:
    cfg = micro_config(shared_data, layers=5, nodes=4)  # the paper's cell: 4 nodes, 14 edges
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
        assert {"train_adv_loss", "val_natural_acc", "val_pgd_ce_loss", "eval", "attack_bn", "objective"} <= set(r)
        # MGDA diagnostics: how often gamma hit 0 or 1, the cosine and ||t_hat|| / ||t||
        assert 0 <= r["gamma_frac_0"] <= 1 and 0 <= r["gamma_frac_1"] <= 1
        assert -1 <= r["cosine_mean"] <= 1 and r["norm_ratio_mean"] > 0
        assert r["attack_bn"] == "batch"
        # the architecture step's objectives, one value per step
        assert len(r["step_val_natural_loss"]) == len(r["step_val_pgd_ce_loss"]) == r["steps"]
        assert all(math.isfinite(v) and v > 0 for v in r["step_val_pgd_ce_loss"])
    assert set(summary["mgda"]) == {"gamma_frac_0", "gamma_frac_1", "cosine_mean", "norm_ratio_mean"}
    with np.load(tmp_path / "alphas.npz") as npz:
        assert npz["accurate"].shape == (3, 14, 7)  # initialisation + 2 epochs
        assert np.allclose(npz["robust"].sum(-1), 1.0)
        assert not np.allclose(npz["accurate_logits"][0], npz["accurate_logits"][-1])
        assert list(npz["primitives"]) == list(ARNAS_PRIMITIVES)
    assert np.load(tmp_path / "gamma.npy").shape == (2, 2)
    assert json.loads((tmp_path / "eval_config.json").read_text())["placement"] == ["accurate", "accurate", "robust"]
    for name in (
        "alphas_accurate",
        "alphas_robust",
        "alphas_reduce",
        "gamma",
        "objectives",
        "cell_accurate",
        "cell_robust",
    ):
        assert (tmp_path / "plots" / f"{name}.png").stat().st_size > 1000
    with pytest.raises(CheckpointError, match="already exists"):
        run_search(cfg, tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="different settings"):
        run_search(cfg.replace(lam=0.5), tmp_path, progress=False, resume=True)


def test_resume_mid_epoch_equals_uninterrupted_run(shared_data: Path, tmp_path: Path) -> None:
    cfg = micro_config(shared_data)
    full = run_search(cfg, tmp_path / "full", progress=False, plots=False)
    with pytest.raises(RunInterrupted):
        run_search(cfg, tmp_path / "killed", progress=False, plots=False, stop_after_steps=3)  # epoch 2, step 1
    _, header = read_state(tmp_path / "killed" / STATE_FILE)
    assert (header["epoch"], header["step"]) == (1, 1)
    torch.manual_seed(12345)  # a resumed process starts with unrelated global RNG state
    resumed = run_search(cfg, tmp_path / "killed", progress=False, plots=False, resume=True)
    a, _ = read_state(tmp_path / "full" / STATE_FILE)
    b, _ = read_state(tmp_path / "killed" / STATE_FILE)
    for key in a:
        if key.startswith(("model/", "a_opt/", "w_opt/")):
            assert torch.equal(a[key], b[key]), key
    assert resumed["gamma_trace"] == full["gamma_trace"] and resumed["genotype"] == full["genotype"]

    def strip(path: Path) -> list[dict]:
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in path.read_text().splitlines()]

    assert strip(tmp_path / "full" / "log.jsonl") == strip(tmp_path / "killed" / "log.jsonl")


@pytest.mark.parametrize("point", ["state:1", "log:1", "arrays:1", "genotype:1"])
def test_a_kill_after_any_write_resumes_with_fresh_outputs(shared_data: Path, tmp_path: Path, point: str) -> None:
    """SIGKILL right after a write point of epoch 1: the resumed search regenerates every derived file."""
    cfg = micro_config(shared_data, epochs=2, eval_n=0)
    sets = []
    for k, v in cfg.to_dict().items():
        sets += ["--set", f"{k}={json.dumps(v)}"]
    cmd = [sys.executable, "-m", "search", "run", "tiny", *sets, "-o", str(tmp_path / "run"), "--quiet", "--no-plots"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    killed = subprocess.run(cmd, cwd=REPO, env={**env, "ARNAS_ZOO_KILL_AFTER": point}, capture_output=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    resumed = subprocess.run([*cmd, "--resume"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    full = run_search(cfg, tmp_path / "full", progress=False, plots=False)
    assert [json.loads(line)["epoch"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()] == [1, 2]
    assert Genotype.load(tmp_path / "run" / "genotype.json").cells == Genotype.from_dict(full["genotype"]).cells
    assert np.array_equal(np.load(tmp_path / "run" / "gamma.npy"), np.load(tmp_path / "full" / "gamma.npy"))


def test_tampered_search_state_is_refused(shared_data: Path, tmp_path: Path) -> None:
    cfg = micro_config(shared_data, epochs=1, eval_n=0)
    run_search(cfg, tmp_path, progress=False, plots=False)
    state = tmp_path / STATE_FILE
    data = bytearray(state.read_bytes())
    data[-50] ^= 0x01  # one bit of the last tensor (the architecture history)
    state.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="digest mismatch"):
        run_search(cfg, tmp_path, progress=False, plots=False, resume=True)
    assert not list(tmp_path.glob("*.pt"))  # no pickle anywhere


def test_first_order_weighted_sum_normalized_mgda_and_darts_space(shared_data: Path, tmp_path: Path) -> None:
    cfg = micro_config(shared_data, epochs=1, steps_per_epoch=1, order="first", strategy="weighted_sum", eval_n=0)
    summary = run_search(cfg, tmp_path / "ws", progress=False, plots=False)
    assert all(np.isnan(g) for g in summary["gamma_trace"][0])
    normalized = run_search(cfg.replace(strategy="mgda_normalized"), tmp_path / "mn", progress=False, plots=False)
    assert all(0 <= g <= 1 for g in normalized["gamma_trace"][0])
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
    args = ["run", "tiny", *sets, f"--set=data_dir={shared_data}", "-o", str(tmp_path / "r"), "--quiet", "--no-plots"]
    result = runner.invoke(search_main, args)
    assert result.exit_code == 0, result.output
    assert "genotype:" in result.output and "MGDA" in result.output and (tmp_path / "r" / "genotype.json").is_file()
    again = runner.invoke(search_main, args)
    assert again.exit_code == 2 and "--resume" in again.output
    assert runner.invoke(search_main, [*args, "--resume"]).exit_code == 0  # finished: nothing left to do
    for bad, fragment in (
        (["--set", "epoch=3"], "unknown key 'epoch'"),
        (["--set", "eps=1/0"], "eps"),
        (["--set", "data_dir=/nonexistent"], "not found"),
        (["--device", "tpu"], "device"),
    ):
        result = runner.invoke(search_main, ["run", "tiny", *bad, "-o", str(tmp_path / "bad")])
        assert result.exit_code == 2 and fragment in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_sweep_counts_ops_and_varies_lambda(shared_data: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    sets = [f"--set={k}={json.dumps(v)}" for k, v in {**MICRO, "epochs": 1, "steps_per_epoch": 1, "eval_n": 0}.items()]
    result = runner.invoke(
        search_main,
        ["sweep", "tiny", "--seeds", "0,1", *sets, f"--set=data_dir={shared_data}", "-o", str(tmp_path), "--quiet"],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "op_counts.json").read_text())
    assert summary["runs"] == ["seed0", "seed1"]
    for cell in ("accurate", "robust", "reduce"):
        assert sum(summary["op_counts"][cell].values()) == 2 * 8  # 8 kept edges per cell and run
    assert "| op | accurate | robust | reduce |" in (tmp_path / "op_counts.md").read_text()
    lam = runner.invoke(
        search_main,
        [
            "sweep",
            "tiny",
            "--seeds",
            "0",
            "--vary",
            "lam=0.1,1.0",
            *sets,
            f"--set=data_dir={shared_data}",
            "-o",
            str(tmp_path / "lam"),
            "--quiet",
        ],
    )
    assert lam.exit_code == 0, lam.output
    rows = json.loads((tmp_path / "lam" / "sweep.json").read_text())["runs"]
    assert [r["lam"] for r in rows] == [0.1, 1.0]


def _torchrun_search(shared_data: Path, out: Path, nproc: int) -> dict:
    sets = []
    for k, v in {**MICRO, "epochs": 1, "steps_per_epoch": 2, "eval_n": 0, "data_dir": str(shared_data)}.items():
        sets += ["--set", f"{k}={json.dumps(v) if not isinstance(v, str) else v}"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    if nproc == 1:
        cmd = [sys.executable, "-m", "search", "run", "tiny", *sets, "-o", str(out), "--quiet", "--no-plots"]
    else:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(nproc),
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(port),
            "-m",
            "search",
            "run",
            "tiny",
            *sets,
            "-o",
            str(out),
            "--quiet",
            "--no-plots",
        ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "summary.json").read_text())


def test_two_gloo_processes_equal_one(shared_data: Path, tmp_path: Path) -> None:
    """Synchronised BatchNorm + averaged gradients + globally drawn batches: 2 processes compute what 1 computes."""
    one = _torchrun_search(shared_data, tmp_path / "one", 1)
    two = _torchrun_search(shared_data, tmp_path / "two", 2)
    assert two["world_size"] == 2 and two["ranks_consistent"] is True
    a, _ = read_state(tmp_path / "one" / STATE_FILE)
    b, _ = read_state(tmp_path / "two" / STATE_FILE)
    for key in (k for k in a if k.startswith("model/alphas.")):
        assert torch.allclose(a[key], b[key], atol=1e-5), key
    assert np.allclose(np.array(one["gamma_trace"]), np.array(two["gamma_trace"]), atol=1e-4)
    assert one["genotype"]["cells"] == two["genotype"]["cells"]


def _write_log(folder: Path, genotypes: list[dict], junk: str | None = None) -> None:
    records = [
        {"epoch": i + 1, "gamma_mean": 0.0, "eval": {"n": 8, "natural_acc": 0.5, "pgd3_acc": 0.25}, "genotype": g}
        for i, g in enumerate(genotypes)
    ]
    lines = [json.dumps(r) for r in records] + ([junk] if junk else [])
    (folder / "log.jsonl").write_text("\n".join(lines) + "\n")


def test_trajectory_counts_kept_edges_and_likeness_to_the_reference(tmp_path: Path) -> None:
    from arnas_zoo.registry import bundled_genotype
    from search.arnas.trajectory import format_trajectory, genotype_trajectory

    arnas = bundled_genotype("arnas").to_dict()
    changed = json.loads(json.dumps(arnas))
    changed["cells"]["robust"]["nodes"][0][0][0] = "sep_conv_3x3"  # one of the robust cell's 8 edges
    _write_log(tmp_path, [changed, arnas])
    rows = genotype_trajectory(tmp_path, bundled_genotype("arnas"))
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[0]["cells"]["robust"] == {"kept": None, "ref_edges": 7 / 8, "ref_ops": 7 / 8}
    assert rows[1]["cells"]["robust"]["kept"] == 7 / 8 and rows[1]["cells"]["accurate"]["kept"] == 1.0
    assert rows[1]["cells"]["robust"]["ref_edges"] == 1.0
    assert rows[1]["robust"] == ("pgd3", 0.25)
    text = format_trajectory(rows, "arnas")
    assert "88%" in text and "pgd3" in text


def test_trajectory_cli_and_its_errors(tmp_path: Path) -> None:
    from arnas_zoo.registry import bundled_genotype

    runner = CliRunner()
    missing = runner.invoke(search_main, ["arnas", "trajectory", str(tmp_path)])
    assert missing.exit_code != 0 and "no log.jsonl" in missing.output
    _write_log(tmp_path, [bundled_genotype("arnas").to_dict()], junk='{"epoch": 2}')
    broken = runner.invoke(search_main, ["arnas", "trajectory", str(tmp_path)])
    assert broken.exit_code != 0 and "log.jsonl:2" in broken.output
    _write_log(tmp_path, [bundled_genotype("arnas").to_dict()])
    ok = runner.invoke(search_main, ["arnas", "trajectory", str(tmp_path), "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)[0]["cells"]["accurate"]["ref_edges"] == 1.0
    refused = runner.invoke(search_main, ["arnas", "trajectory", str(tmp_path), "--reference", "resnet18"])
    assert refused.exit_code != 0 and "no genotype" in refused.output


def test_search_steps_take_the_training_routes(shared_data: Path, tmp_path: Path, monkeypatch, flip_spy) -> None:  # type: ignore[no-untyped-def]
    """A search step's attack, architecture step and weight step run with the dilated flip on (as the zoo's
    training step does); outside the step, and with ``ARNAS_ZOO_DWGRAD=native``, it is off."""
    import search.arnas.run as run_module
    from arnas_zoo.fastconv import flip_enabled

    monkeypatch.setattr(run_module, "pgd", flip_spy.spy)
    monkeypatch.delenv("ARNAS_ZOO_DWGRAD", raising=False)
    for env, expected in ((None, True), ("native", False)):
        if env:
            monkeypatch.setenv("ARNAS_ZOO_DWGRAD", env)
        with pytest.raises(flip_spy.Stop):
            run_search(micro_config(shared_data), tmp_path / str(env), progress=False)
        assert flip_spy.seen[-1] is expected
    monkeypatch.delenv("ARNAS_ZOO_DWGRAD")
    assert not flip_enabled(2)  # the context is left on the way out
