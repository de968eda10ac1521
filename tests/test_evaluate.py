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
from arnas_zoo.evaluate import AttackSpec, evaluate, make_attack, parse_eps, transfer_matrix

CHECKS = {
    "in_ball",
    "robust_le_clean",
    "eps_zero",
    "more_steps",
    "large_eps",
    "black_box",
    "monotone_eps",
    "autoattack_le_pgd",
    "probe_agrees",
}


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
    unjudged = ("autoattack_le_pgd", "probe_agrees")  # no AutoAttack, and no PGD of >= 20 steps, in this report
    assert all(v is True for k, v in status.items() if k not in unjudged), report.format_table()
    assert status["autoattack_le_pgd"] is None and status["probe_agrees"] is None
    assert not report.possible_gradient_masking and "WARNING" not in report.format_table()
    metrics = json.loads(json.dumps(report.to_metrics()))  # JSON-able
    for key in (
        "clean_accuracy",
        "worst_case_accuracy",
        "data",
        "results",
        "seed",
        "versions",
        "device",
        "robust_accuracy_definition",
    ):
        assert key in metrics
    assert {"torch", "numpy", "python", "arnas_zoo"} <= set(metrics["versions"])
    assert metrics["data"] == {
        "dataset": "digits",
        "split": "test",
        "n": 48,
        "indices": "1500-1547",
        "source": "sklearn.datasets.load_digits (embedded)",
    }
    for result in metrics["results"]:
        assert {"attack", "norm", "eps", "steps", "restarts", "n", "robust_accuracy", "adversarial_accuracy"} <= set(
            result
        )
    pgd10 = report.result("pgd10")
    assert pgd10.steps == 10 and pgd10.forward_passes_per_image == 10 and pgd10.backward_passes_per_image == 10
    assert abs(pgd10.step_size - 0.025) < 1e-12
    # the worst case is per sample: at most every single attack, and exactly the AND of their flags
    assert report.worst_case_accuracy <= min(r.robust_accuracy for r in report.results)
    flags = torch.stack([r.robust for r in report.results]).all(0)
    assert report.worst_case_accuracy == int(flags.sum()) / len(flags)  # an exact fraction of counts
    # the recorded PGD-10 figure is the one pgd() gives for the same seed
    from arnas_zoo.evaluate.runner import batch_generator

    again = pgd(
        model,
        digits.x,
        digits.y,
        eps=0.1,
        step_size=0.025,
        steps=10,
        generator=batch_generator(torch.device("cpu"), 0, 0),
    )  # the 48 points are one batch
    with torch.no_grad():
        adversarial = model(again).argmax(1) == digits.y
        clean = model(digits.x).argmax(1) == digits.y
    assert pgd10.adversarial_accuracy == int(adversarial.sum()) / len(digits.y)
    assert pgd10.robust_accuracy == int((adversarial & clean).sum()) / len(digits.y)  # the headline: AND


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
    # all 297 test points: the checks flag significant differences only, and 48 points are too few for more_steps
    every = load_dataset("digits", "test")
    report = evaluate(
        ReversedGradient(weak), every, ["fgsm", "pgd10"], eps=0.06, device="cpu", progress=False, check_n=len(every)
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


def test_load_for_eval_registry_and_checkpoint(tmp_path: Path) -> None:
    from arnas_zoo.cli.evaluation import load_for_eval

    resolved = load_for_eval("resnet18", "cpu", dataset="digits")
    assert not resolved.trained and resolved.model.config.in_channels == 1 and resolved.model.config.input_size == 16
    folder = train_zoo_checkpoint(tmp_path / "ck", load_dataset("digits", "train").first(64), epochs=1)
    loaded = load_for_eval(str(folder), "cpu", None)
    assert loaded.trained and loaded.kind == "folder" and not loaded.model.training
    with pytest.raises(UnknownModelError, match="checkpoint folder"):
        load_for_eval("resnet19", "cpu", None)


def test_fgsm_cannot_make_a_misclassified_point_robust(digits) -> None:  # type: ignore[no-untyped-def]
    """The headline counts a point only when clean AND adversarial predictions are right."""

    def repair(model, x, y, *, eps, norm, generator, counter, seed):  # type: ignore[no-untyped-def]
        return x  # no perturbation: the adversarial prediction equals the clean one ...

    class Flipper(torch.nn.Module):  # ... except that this model is right on perturbed-free inputs only half the time
        def __init__(self, model):  # type: ignore[no-untyped-def]
            super().__init__()
            self.model, self.calls = model, 0

        def forward(self, x):  # type: ignore[no-untyped-def]
            self.calls += 1
            logits = self.model(x)
            return logits if self.calls > 1 else -logits  # the first (clean) pass is wrong everywhere

    report = evaluate(
        Flipper(trained_tiny_cnn()),
        digits,
        [AttackSpec("repairing", repair)],
        eps=0.1,
        device="cpu",
        progress=False,
        checks=False,
    )
    result = report.result("repairing")
    assert report.clean_accuracy < 0.1 and result.adversarial_accuracy > 0.5
    assert result.robust_accuracy <= report.clean_accuracy and report.worst_case_accuracy <= report.clean_accuracy


def test_transfer_weaker_than_clean_error_raises_no_flag_and_weak_autoattack_does(digits) -> None:  # type: ignore[no-untyped-def]
    model = trained_tiny_cnn()

    def no_attack(model, x, y, *, eps, norm, generator, counter, seed):  # type: ignore[no-untyped-def]
        return x

    weak_aa = AttackSpec("aa", no_attack, steps=100, version="standard", family="autoattack")
    report = evaluate(
        model,
        digits,
        ["pgd10", weak_aa],
        eps=0.1,
        device="cpu",
        progress=False,
        check_n=48,
        transfer_sources={"random": TinyCNN(6)},
    )
    status = _status(report)
    assert status["robust_le_clean"] is True and status["black_box"] is True
    assert status["autoattack_le_pgd"] is False and "aa" in report.format_table()


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
    assert apgd.family == "autoattack" and sq.family == "square"


def test_a_figure_the_probe_cannot_reproduce_fails_probe_agrees(digits) -> None:  # type: ignore[no-untyped-def]
    """A reported PGD-20 the checks' own probe does not reproduce (a forged or stale figure) fails the checks."""
    import dataclasses

    from arnas_zoo.evaluate.checks import sanity_checks

    model = trained_tiny_cnn()
    report = evaluate(model, digits, ["pgd20"], eps=0.3, device="cpu", progress=False, check_n=48)
    honest = _status(report)
    assert honest["probe_agrees"] is True, report.format_table()
    real = report.results[0]
    with torch.no_grad():
        clean = model(digits.x).argmax(1) == digits.y
    forged = dataclasses.replace(real, robust=clean.clone(), correct=clean.clone())  # "every clean point survived"
    assert forged.robust.float().mean() > real.robust.float().mean() + 0.2
    found = sanity_checks(model, digits, clean, [forged], eps=0.3, norm="linf", batch_size=48, seed=0, check_n=48)
    checks = {c.name: c for c in found}
    assert checks["probe_agrees"].passed is False and "not reproduced: pgd20" in checks["probe_agrees"].detail


def test_reports_record_the_compute_paths_and_keep_them_on_reread(digits, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The switches that change kernels and rounding (e.g. composed separable blocks) are part of a figure's record."""
    from arnas_zoo.evaluate.report import EvaluationReport

    monkeypatch.setenv("ARNAS_ZOO_SEPCONV", "plain")
    monkeypatch.setenv("ARNAS_ZOO_JOB_KEY", "secret")  # not a compute switch: never recorded
    monkeypatch.delenv("ARNAS_ZOO_DILATED", raising=False)
    report = evaluate(TinyCNN(6), digits, ["fgsm"], eps=0.1, device="cpu", progress=False, checks=False)
    metrics = json.loads(json.dumps(report.to_metrics()))
    compute = metrics["compute"]
    assert compute["switches"]["ARNAS_ZOO_SEPCONV"] == "plain"
    assert "ARNAS_ZOO_JOB_KEY" not in compute["switches"] and "ARNAS_ZOO_DILATED" not in compute["switches"]
    assert isinstance(compute["amx_bf16"], bool)
    assert compute["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert EvaluationReport.from_metrics(metrics).to_metrics()["compute"] == compute
