"""Evaluation reports: metrics keys, worst case, every sanity check firing on a model built to fool it
and staying quiet on an honest one, transfer matrix, model resolution, and `arnas-zoo eval` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from eval_helpers import (
    NoisyInput,
    QuantizedInput,
    ReversedGradient,
    TinyCNN,
    train,
    train_zoo_checkpoint,
    trained_tiny_cnn,
)

from arnas_zoo.attacks import pgd
from arnas_zoo.cli import main
from arnas_zoo.data import load_dataset
from arnas_zoo.errors import ConfigError, UnknownModelError
from arnas_zoo.evaluate import (
    AttackSpec,
    evaluate,
    make_attack,
    parse_eps,
    resolve_model,
    transfer_matrix,
)

CHECKS = {"in_ball", "robust_le_clean", "eps_zero", "more_steps", "large_eps", "black_box", "monotone_eps"}


@pytest.fixture(scope="module")
def digits() -> object:
    return load_dataset("digits", "test", n=48)


def _status(report) -> dict[str, bool | None]:  # type: ignore[no-untyped-def]
    return {c.name: c.passed for c in report.checks}


def test_honest_model_report_passes_every_check(digits) -> None:  # type: ignore[no-untyped-def]
    model = trained_tiny_cnn()
    report = evaluate(
        model,
        digits,
        ["fgsm", "pgd10", "pgd10x2"],
        eps=0.1,
        device="cpu",
        progress=False,
        check_n=48,
        transfer_sources={"independent": TinyCNN(6)},
    )
    status = _status(report)
    assert set(status) == CHECKS
    assert all(status.values()), report.format_table()
    assert not report.possible_gradient_masking and "WARNING" not in report.format_table()
    metrics = json.loads(json.dumps(report.to_metrics()))  # JSON-able
    for key in ("clean_accuracy", "worst_case_accuracy", "data", "results", "seed", "package_version", "device"):
        assert key in metrics
    assert metrics["data"] == {
        "dataset": "digits",
        "split": "test",
        "n": 48,
        "indices": "1500-1547",
        "source": "sklearn.datasets.load_digits (embedded)",
    }
    for result in metrics["results"]:
        assert {"attack", "norm", "eps", "steps", "restarts", "n", "robust_accuracy"} <= set(result)
    pgd10 = report.result("pgd10")
    assert pgd10.steps == 10 and pgd10.forward_passes_per_image == 10 and pgd10.backward_passes_per_image == 10
    assert abs(pgd10.step_size - 0.025) < 1e-12
    # the worst case is per sample: at most every single attack, and exactly the AND of their flags
    assert report.worst_case_accuracy <= min(r.robust_accuracy for r in report.results)
    flags = torch.stack([r.correct for r in report.results]).all(0)
    assert report.worst_case_accuracy == pytest.approx(flags.float().mean().item())
    # the recorded PGD-10 figure is the one pgd() gives for the same seed
    again = pgd(
        model, digits.x, digits.y, eps=0.1, step_size=0.025, steps=10, generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        direct = (model(again).argmax(1) == digits.y).float().mean().item()
    assert pgd10.robust_accuracy == pytest.approx(direct)


def test_quantized_input_masks_gradients_and_is_flagged(digits) -> None:  # type: ignore[no-untyped-def]
    honest = trained_tiny_cnn()
    masked = QuantizedInput(honest)
    # examples crafted on the differentiable twin transfer: black-box beats white-box
    report = evaluate(
        masked,
        digits,
        ["fgsm", "pgd10"],
        eps=0.1,
        device="cpu",
        progress=False,
        check_n=48,
        transfer_sources={"twin": honest},
    )
    status = _status(report)
    assert status["black_box"] is False and status["large_eps"] is False
    assert report.possible_gradient_masking and "possible gradient masking" in report.format_table()
    assert report.to_metrics()["failed_checks"] == report.failed_checks


def test_randomized_model_fails_eps_zero(digits) -> None:  # type: ignore[no-untyped-def]
    report = evaluate(
        NoisyInput(trained_tiny_cnn()), digits, ["fgsm"], eps=0.1, device="cpu", progress=False, check_n=48
    )
    assert _status(report)["eps_zero"] is False


def test_reversed_gradients_fail_the_ordering_checks(digits) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    weak = train(TinyCNN(6), load_dataset("digits", "train").first(150), epochs=1, lr=5e-3)
    report = evaluate(
        ReversedGradient(weak), digits, ["fgsm", "pgd10"], eps=0.06, device="cpu", progress=False, check_n=48
    )
    status = _status(report)
    for name in ("robust_le_clean", "more_steps", "large_eps", "monotone_eps"):
        assert status[name] is False, report.format_table()


def test_an_attack_leaving_the_ball_fails_in_ball(digits) -> None:  # type: ignore[no-untyped-def]
    def too_far(model, x, y, *, eps, norm, generator, counter, seed):  # type: ignore[no-untyped-def]
        return (x + 2 * eps).clamp(0, 1)

    report = evaluate(
        trained_tiny_cnn(),
        digits,
        [AttackSpec("broken", too_far)],
        eps=0.1,
        device="cpu",
        progress=False,
        checks=True,
        check_n=16,
    )
    assert _status(report)["in_ball"] is False and "broken" in report.format_table()


def test_transfer_matrix_diagonal_is_white_box(digits) -> None:  # type: ignore[no-untyped-def]
    a, b = trained_tiny_cnn(), TinyCNN(6)
    report = transfer_matrix({"a": a, "b": b}, digits, attack="pgd10", eps=0.1, device="cpu", progress=False)
    assert report.names == ["a", "b"] and len(report.accuracy) == 2 and len(report.accuracy[0]) == 2
    white = evaluate(a, digits, ["pgd10"], eps=0.1, device="cpu", progress=False, checks=False)
    assert report.accuracy[0][0] == pytest.approx(white.result("pgd10").robust_accuracy)
    assert report.accuracy[1][0] >= report.accuracy[0][0]  # a random network's examples hardly transfer
    assert "source \\ target" in report.format_table()


def test_names_and_eps_parsing() -> None:
    assert parse_eps("8/255") == pytest.approx(8 / 255) and parse_eps("0.5") == 0.5
    for bad in ("8/0", "-1", "abc", "1/2/3"):
        with pytest.raises(ConfigError):
            parse_eps(bad)
    spec = make_attack("pgd50-cwx3")
    assert (spec.steps, spec.restarts, spec.loss) == (50, 3, "cw")
    assert make_attack("pgd20").step_size_ratio == 0.25 and make_attack("fgsm").random_start is False
    assert make_attack("square").black_box and make_attack("aa").version == "standard"
    with pytest.raises(UnknownModelError, match="unknown attack"):
        make_attack("deepfool")
    with pytest.raises(ConfigError):
        evaluate(TinyCNN(), load_dataset("digits", n=4), ["fgsm", "fgsm"], progress=False)


def test_resolve_model_registry_and_checkpoint(tmp_path: Path) -> None:
    resolved = resolve_model("resnet18", "cpu", dataset="digits", init_channels=4)
    assert not resolved.trained and resolved.model.config.in_channels == 1 and resolved.model.config.input_size == 16
    folder = train_zoo_checkpoint(tmp_path / "ck", load_dataset("digits", "train").first(64), epochs=1)
    loaded = resolve_model(str(folder), "cpu")
    assert loaded.trained and loaded.source == "checkpoint" and not loaded.model.training
    with pytest.raises(UnknownModelError, match="checkpoint folder"):
        resolve_model("resnet19", "cpu")


@pytest.fixture(scope="module")
def digits_checkpoint(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    return train_zoo_checkpoint(
        tmp_path_factory.mktemp("ck") / "digits", load_dataset("digits", "train").first(600), epochs=2
    )


def test_cli_eval_on_digits_writes_metrics(digits_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "metrics.json"
    result = CliRunner().invoke(
        main,
        [
            "eval",
            str(digits_checkpoint),
            "--n",
            "32",
            "--attacks",
            "fgsm,pgd5",
            "--eps",
            "8/255",
            "--device",
            "cpu",
            "--check-n",
            "8",
            "--quiet",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "pgd5" in result.output and "sanity checks" in result.output
    metrics = json.loads(out.read_text())
    assert metrics["clean_accuracy"] > 0.5, "the digits checkpoint did not train"
    assert metrics["data"]["n"] == 32 and metrics["threat_model"]["eps"] == pytest.approx(8 / 255)
    assert [r["attack"] for r in metrics["results"]] == ["fgsm", "pgd5"]
    assert metrics["worst_case_accuracy"] <= metrics["results"][1]["robust_accuracy"]


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_cli_eval_on_shared_data(dataset: str, shared_data: Path, tmp_path: Path) -> None:
    train_rows = load_dataset(dataset, "train", data_dir=shared_data).first(256)
    folder = train_zoo_checkpoint(tmp_path / dataset, train_rows, epochs=1)
    out = tmp_path / "metrics.json"
    result = CliRunner().invoke(
        main,
        [
            "eval",
            str(folder),
            "--dataset",
            dataset,
            "--split",
            "train",
            "--val-size",
            "1000",
            "--data-dir",
            str(shared_data),
            "--n",
            "16",
            "--attacks",
            "fgsm,pgd3",
            "--device",
            "cpu",
            "--no-checks",
            "--quiet",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    total = len(load_dataset(dataset, "train", data_dir=shared_data))
    assert metrics["data"]["split"] == f"train[{total - 1000}:{total}]" and metrics["data"]["n"] == 16
    assert {"clean_accuracy", "worst_case_accuracy", "results"} <= set(metrics)


def test_cli_warns_about_untrained_registry_models_and_fails_cleanly(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        main, ["eval", "resnet18", "--n", "2", "--attacks", "fgsm", "--no-checks", "--quiet", "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    assert "UNTRAINED" in result.output
    missing = runner.invoke(
        main, ["eval", "resnet18", "--dataset", "cifar100", "--data-dir", str(tmp_path), "--device", "cpu"]
    )
    assert missing.exit_code == 2 and "--download" in missing.output and "Traceback" not in missing.output
    unknown = runner.invoke(main, ["eval", "resnet18", "--attacks", "deepfool", "--n", "2", "--device", "cpu"])
    assert unknown.exit_code == 2 and "unknown attack" in unknown.output


def test_cli_transfer_prints_the_matrix(digits_checkpoint: Path, tmp_path: Path) -> None:
    other = train_zoo_checkpoint(tmp_path / "other", load_dataset("digits", "train").first(64), seed=1, epochs=1)
    out = tmp_path / "transfer.json"
    result = CliRunner().invoke(
        main,
        [
            "transfer",
            str(digits_checkpoint),
            str(other),
            "--n",
            "16",
            "--attack",
            "pgd3",
            "--device",
            "cpu",
            "--quiet",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "source \\ target" in result.output
    payload = json.loads(out.read_text())
    assert len(payload["accuracy"]) == 2 and all(len(row) == 2 for row in payload["accuracy"])
    assert payload["names"][0] != payload["names"][1]


def test_reference_attacks_run_through_evaluate(digits) -> None:  # type: ignore[no-untyped-def]
    small = digits.first(8)
    report = evaluate(
        trained_tiny_cnn(), small, ["apgd-ce", "square20"], eps=0.1, device="cpu", progress=False, checks=False
    )
    apgd, sq = report.result("apgd-ce"), report.result("square20")
    assert apgd.backward_passes_per_image > 0 and not apgd.black_box
    assert sq.black_box and sq.backward_passes_per_image == 0
    assert apgd.robust_accuracy <= report.clean_accuracy and sq.max_perturbation <= 0.1 + 1e-6
