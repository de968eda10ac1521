"""Every bundled pretrained checkpoint loads with all its files pinned, its metrics.json is an evaluation
report whose figures are consistent, and its recorded clean accuracy is reproducible on the same points."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import arnas_zoo
from arnas_zoo.checkpoint import sha256_file
from arnas_zoo.data import evaluation_data
from arnas_zoo.evaluate import EvaluationReport
from arnas_zoo.pretrained import list_pretrained

SPECS = [spec for spec in list_pretrained() if spec.folder is not None]
# superseded entries are checked like the others; their load-time warning is tested in test_leaderboard.py
pytestmark = pytest.mark.filterwarnings("ignore:.* is superseded by")


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_pins_hold_and_the_report_is_consistent(spec) -> None:  # type: ignore[no-untyped-def]
    folder = spec.bundled_path()
    for file, digest in spec.pins().items():
        assert sha256_file(folder / file) == digest, file
    model = arnas_zoo.load(spec.name)
    assert not model.training
    assert model.config.eps == pytest.approx(spec.eps) and model.config.threat_model == spec.threat_model
    report = EvaluationReport.from_metrics(model.metrics, spec.name)
    assert report.eps == pytest.approx(spec.eps) and report.data["dataset"] == spec.dataset
    by_attack = {r.attack: r for r in report.results}
    for r in report.results:  # the headline counts points correct on clean AND adversarial inputs
        assert r.n == report.data["n"] and r.robust_accuracy <= report.clean_accuracy
        assert report.worst_case_accuracy <= r.robust_accuracy
    for aa in (r for r in report.results if r.family == "autoattack"):
        for pgd in (r for r in report.results if r.family == "pgd" and r.random_start):
            # AutoAttack is not weaker than PGD on the same points (within the sampling noise of n points)
            assert aa.robust_accuracy <= pgd.robust_accuracy + 2 / report.data["n"] ** 0.5, (aa.attack, pgd.attack)
    assert not report.failed_checks, report.failed_checks
    assert "pgd20" in by_attack and len(by_attack) >= 2  # at least PGD-20 and a second, stronger or weaker, attack


REPORTS = sorted((Path(__file__).resolve().parents[1] / "docs" / "reports").glob("*.json"))


@pytest.mark.parametrize("path", REPORTS, ids=[p.name for p in REPORTS])
def test_larger_reports_are_of_registered_models_and_consistent(path: Path) -> None:
    import json

    from arnas_zoo.pretrained import get_pretrained

    metrics = json.loads(path.read_text())
    spec = get_pretrained(metrics["model"]["path"])  # the registry name it was loaded by; unknown: raises
    assert path.name.startswith(spec.name + ".")
    if "weights_sha256" in metrics["model"]:  # evaluated as its run folder before registration: the same bytes
        assert metrics["model"]["weights_sha256"] == spec.sha256
    report = EvaluationReport.from_metrics(metrics, spec.name)
    assert report.eps == pytest.approx(spec.eps) and report.data["dataset"] == spec.dataset
    first, last = (int(i) for i in report.data["indices"].split("-"))
    assert last - first + 1 == report.data["n"]
    for r in report.results:
        assert r.n == report.data["n"] and report.worst_case_accuracy <= r.robust_accuracy <= report.clean_accuracy
    assert not report.failed_checks


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_recorded_clean_accuracy_is_reproduced_on_the_same_points(spec, shared_data: Path) -> None:  # type: ignore[no-untyped-def]
    model = arnas_zoo.load(spec.name)
    report = EvaluationReport.from_metrics(model.metrics, spec.name)
    data = evaluation_data(spec.dataset, n=report.data["n"], data_dir=shared_data)
    assert data.describe()["indices"] == report.data["indices"]
    with torch.no_grad():
        correct = int((model(data.x).argmax(1) == data.y).sum())
    assert correct / len(data) == report.clean_accuracy


@pytest.mark.slow
@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_recorded_pgd20_is_reproduced_on_the_same_points(spec, shared_data: Path) -> None:  # type: ignore[no-untyped-def]
    from arnas_zoo.evaluate import evaluate

    model = arnas_zoo.load(spec.name)
    recorded = EvaluationReport.from_metrics(model.metrics, spec.name)
    data = evaluation_data(spec.dataset, n=recorded.data["n"], data_dir=shared_data)
    again = evaluate(model, data, ["pgd20"], eps=spec.eps, seed=recorded.seed, progress=False, checks=False)
    (before,) = (r for r in recorded.results if r.attack == "pgd20")
    assert again.results[0].robust_accuracy == before.robust_accuracy


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_bundled_weights_are_small_and_carry_no_training_only_head(spec) -> None:  # type: ignore[no-untyped-def]
    from safetensors import safe_open

    weights = spec.bundled_path() / "model.safetensors"
    assert weights.stat().st_size <= 4 << 20, "bundled weights above 4 MiB: publish them as a Hub folder instead"
    with safe_open(str(weights), framework="pt") as fh:
        assert not [k for k in fh.keys() if k.startswith("auxiliary_head.")]  # noqa: SIM118


def test_all_bundled_weights_keep_the_wheel_light() -> None:
    total = sum((spec.bundled_path() / "model.safetensors").stat().st_size for spec in SPECS)
    assert total <= 12 << 20, f"{total / 2**20:.1f} MiB of bundled weights: move the larger ones to Hub folders"


def test_stripping_the_auxiliary_head_keeps_the_function(tmp_path: Path) -> None:
    from arnas_zoo.checkpoint import load_folder, save_folder, strip_auxiliary_head
    from arnas_zoo.registry import create_model
    from arnas_zoo.stats import count_parameters

    torch.manual_seed(0)
    model = create_model("arnas", in_channels=1, input_size=16, num_classes=10, init_channels=4, layers=5).eval()
    assert model.config.auxiliary and model.auxiliary_head is not None
    head = count_parameters(model, include_aux=True) - count_parameters(model)
    folder = save_folder(model, tmp_path / "m")
    before = (folder / "model.safetensors").stat().st_size
    assert strip_auxiliary_head(folder) == head > 0
    assert strip_auxiliary_head(folder) == 0  # idempotent
    stripped = load_folder(folder)
    assert stripped.auxiliary_head is None and not stripped.config.auxiliary
    assert stripped.config.extra["auxiliary_head_removed"] == head
    assert (folder / "model.safetensors").stat().st_size < before / 4
    x = torch.rand(3, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(stripped(x), model(x))
