"""Per-point outcomes in reports (kept, checked on read) and `arnas-zoo compare`: intervals and paired tests."""

from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner
from eval_helpers import TinyCNN, trained_tiny_cnn

from arnas_zoo.cli import main
from arnas_zoo.data import load_dataset
from arnas_zoo.errors import CheckpointError, ConfigError
from arnas_zoo.evaluate import evaluate
from arnas_zoo.evaluate.compare import compare_reports, holm, mcnemar_exact
from arnas_zoo.evaluate.report import EvaluationReport, fraction, pack_mask, unpack_mask


@pytest.fixture(scope="module")
def reports() -> dict[str, EvaluationReport]:
    data = load_dataset("digits", "test", n=64)
    run = dict(eps=0.1, device="cpu", progress=False, checks=False)
    return {
        "trained": evaluate(trained_tiny_cnn(), data, ["fgsm", "pgd10"], **run),
        "untrained": evaluate(TinyCNN(6).eval(), data, ["fgsm", "pgd10"], **run),
    }


def test_the_exact_mcnemar_test_and_holm_adjustment() -> None:
    assert mcnemar_exact(10, 0) == pytest.approx(2 / 1024)  # ten coin flips, all one way, two-sided
    assert mcnemar_exact(3, 3) == 1.0 and mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(15, 4) == pytest.approx(2 * sum(math.comb(19, k) for k in range(5)) / 2**19)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])  # x3, x1 (kept monotone), x2


def test_per_point_outcomes_survive_the_json_round_trip_and_a_changed_bit_is_refused(reports) -> None:
    report = reports["trained"]
    metrics = json.loads(json.dumps(report.to_metrics()))
    back = EvaluationReport.from_metrics(metrics)
    assert back.clean is not None and torch.equal(back.clean, report.clean)
    for a, b in zip(report.results, back.results):
        assert torch.equal(a.robust, b.robust) and torch.equal(a.correct, b.correct)
    assert "robust_bits" not in metrics["results"][1]  # derived on read: correct AND clean
    mask = unpack_mask(metrics["results"][1]["correct_bits"], 64)
    mask[int((mask & back.clean).int().argmax())] ^= True  # one robust point's outcome changed, figures kept
    metrics["results"][1]["correct_bits"] = pack_mask(mask)
    with pytest.raises(CheckpointError, match="pgd10 robust do not give its figure"):
        EvaluationReport.from_metrics(metrics)
    metrics["results"][1]["correct_bits"] = "AAAA"
    with pytest.raises(CheckpointError, match="bytes of bits for 64 points"):
        EvaluationReport.from_metrics(metrics)


def test_compare_counts_the_discordant_points_of_each_figure(reports) -> None:
    comparison = compare_reports(reports)
    assert comparison.figures == ["clean", "fgsm", "pgd10", "worst case"]
    trained, untrained = reports["trained"], reports["untrained"]
    (clean,) = [p for p in comparison.pairs if p.figure == "clean"]
    assert clean.only_first == int((trained.clean & ~untrained.clean).sum())
    assert clean.only_second == int((untrained.clean & ~trained.clean).sum())
    assert clean.only_first > 20 and clean.verdict == "trained higher"  # a trained model against chance
    assert comparison.accuracy["trained"]["clean"] == trained.clean_accuracy
    assert comparison.accuracy["untrained"]["worst case"] == untrained.worst_case_accuracy
    same = compare_reports({"a": trained, "b": trained})
    assert all(p.only_first == p.only_second == 0 and p.verdict == "no detectable difference" for p in same.pairs)


def test_compare_refuses_other_points_and_reports_without_outcomes(reports) -> None:
    other = evaluate(
        trained_tiny_cnn(), load_dataset("digits", "test", n=32), ["fgsm"], eps=0.1, device="cpu", progress=False,
        checks=False,
    )  # fmt: skip
    with pytest.raises(ConfigError, match="other points"):
        compare_reports({"a": reports["trained"], "b": other})
    bare = EvaluationReport.from_metrics(
        {k: v for k, v in reports["untrained"].to_metrics().items() if k != "clean_bits"}
    )
    with pytest.raises(ConfigError, match="no per-point outcomes"):
        compare_reports({"a": reports["trained"], "b": bare})
    with pytest.raises(ConfigError, match="at least two"):
        compare_reports({"a": reports["trained"]})


def test_compare_cli(reports, tmp_path) -> None:
    paths = []
    for name, report in reports.items():
        paths.append(str(report.save(tmp_path / f"{name}.json")))
    runner = CliRunner()
    out = tmp_path / "comparison.json"
    result = runner.invoke(main, ["compare", *paths, "--names", "T,U", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "paired on the same points" in result.output and "T vs U" in result.output
    saved = json.loads(out.read_text())
    assert saved["names"] == ["T", "U"] and len(saved["pairs"]) == 4
    low, high = saved["accuracy"]["T"]["clean"]["interval95"]
    assert low <= reports["trained"].clean_accuracy <= high
    duplicate = runner.invoke(main, ["compare", *paths, "--names", "T,T"])
    assert duplicate.exit_code != 0 and "distinct labels" in duplicate.output


def test_the_worst_case_is_taken_over_the_attacks_every_report_ran(reports) -> None:
    data = load_dataset("digits", "test", n=64)
    fewer = evaluate(trained_tiny_cnn(), data, ["fgsm"], eps=0.1, device="cpu", progress=False, checks=False)
    comparison = compare_reports({"both": reports["trained"], "fgsm only": fewer})
    assert comparison.figures == ["clean", "fgsm", "worst case"]  # pgd10 is in one report only
    trained = reports["trained"]
    fgsm_only_worst = fraction(trained.clean & trained.result("fgsm").robust)
    assert comparison.accuracy["both"]["worst case"] == fgsm_only_worst  # not the report's own fgsm+pgd10 worst
    assert comparison.accuracy["fgsm only"]["worst case"] == fewer.worst_case_accuracy
