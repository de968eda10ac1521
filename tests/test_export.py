"""export package: model cards (YAML parsed by huggingface_hub itself), Hub-ready folders, fp16 ONNX export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from arnas_zoo import create_model
from arnas_zoo.checkpoint import save_folder
from arnas_zoo.errors import CheckpointError, ConfigError
from arnas_zoo.figures import wilson_interval


def _metrics() -> dict:
    """A real evaluation report (arnas_zoo.evaluate) of the tiny model on 16 fixed images, plus a training record."""
    from arnas_zoo.data import ImageData
    from arnas_zoo.evaluate import evaluate

    g = torch.Generator().manual_seed(0)
    data = ImageData(
        x=torch.rand(16, 1, 28, 28, generator=g),
        y=torch.randint(0, 10, (16,), generator=g),
        name="mnist",
        split="test",
        indices=torch.arange(16),
        num_classes=10,
    )
    report = evaluate(_mnist_tiny().eval(), data, ["fgsm", "pgd3"], eps=0.1, device="cpu", progress=False, checks=False)
    metrics = report.to_metrics()
    metrics["training"] = {"epochs": 10, "optimizer": "sgd", "lr": 0.1, "attack": "pgd-7"}
    return metrics


def _mnist_tiny(**kw: object) -> torch.nn.Module:
    return create_model(
        "arnas", in_channels=1, input_size=28, init_channels=4, layers=5, threat_model="linf", eps=0.1, **kw
    )


def test_model_card_metadata_is_valid_for_huggingface_hub(tmp_path: Path) -> None:
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    from export.card import render_card

    metrics = _metrics()
    folder = save_folder(_mnist_tiny(), tmp_path / "ck", metrics=metrics)
    text = render_card(folder, repo_id="zoo/arnas-mnist")
    card = ModelCard(text)  # huggingface_hub's own parser
    data = card.data.to_dict()
    assert data["library_name"] == "arnas-zoo" and data["datasets"] == ["mnist"] and data["license"] == "mit"
    assert "threat-model-linf" in data["tags"] and "search-space-arnas" in data["tags"]
    name, results = model_index_to_eval_results(data["model-index"])
    assert name == "arnas-mnist"
    by_name = {r.metric_name: r for r in results}
    pgd = next(r for r in metrics["results"] if r["attack"] == "pgd3")
    assert by_name["clean"].metric_value == round(100 * metrics["clean_accuracy"], 2)
    assert by_name["pgd3"].metric_value == round(100 * pgd["robust_accuracy"], 2)
    assert by_name["pgd3"].metric_args["steps"] == 3 and by_name["pgd3"].metric_type == "robust_accuracy"
    assert by_name["pgd3"].dataset_split == "test"
    body = card.text
    # every attack's settings in the evaluation table; recipe; genotype picture; limitations
    low, high = (100 * b for b in wilson_interval(pgd["robust_accuracy"], 16))
    row = f"| pgd3 | 16 | linf 0.1 | 3 | 1 | {100 * pgd['robust_accuracy']:.1f}% | {low:.1f}-{high:.1f} |"
    assert row in body
    assert "| optimizer | sgd |" in body and "```mermaid" in body and "-- dil_conv_3x3 -->" in body
    assert "- Data: mnist test, n = 16, official indices 0-15" in body and "clean input *and*" in body
    assert "- Selection: " in body and "issue" not in body.lower()
    assert "No sanity checks against gradient masking were run" in body
    assert "## Limitations" in body and 'arnas_zoo.load("zoo/arnas-mnist")' in body


def test_card_without_metrics_says_so(tmp_path: Path) -> None:
    from export.card import render_card

    folder = save_folder(create_model("resnet18", init_channels=8), tmp_path / "ck")
    text = render_card(folder)
    assert "model-index" not in text and "the robustness of these weights is unknown" in text
    assert "```mermaid" not in text  # no genotype for a hand-crafted network


def test_hub_folder_refuses_bad_inputs(tmp_path: Path) -> None:
    from export.hub_publish import build_hub_folder

    folder = save_folder(_mnist_tiny(), tmp_path / "ck", metrics=_metrics())
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        build_hub_folder(folder, tmp_path / "busy")
    (folder / "model.onnx").write_bytes(b"stale")  # an ONNX file without a parity record
    with pytest.raises(CheckpointError, match="no passing parity record"):
        build_hub_folder(folder, tmp_path / "out")
    out = build_hub_folder(folder, tmp_path / "out2", include_onnx=False)
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "config.json",
        "genotype.png",
        "layout.png",
        "metrics.json",
        "model.safetensors",
    ]


def test_fp16_export_parity_and_hub_folder(tmp_path: Path, shared_data: Path) -> None:
    from arnas_zoo.onnx import OnnxModel
    from export.cli import main
    from export.hub_publish import build_hub_folder

    folder = save_folder(_mnist_tiny(), tmp_path / "ck", metrics=_metrics())
    result = CliRunner().invoke(
        main, ["onnx", str(folder), "--fp16", "-n", "32"], env={"ARNAS_ZOO_SHARED_DATA": str(shared_data)}
    )
    assert result.exit_code == 0, result.output
    record = json.loads((folder / "onnx.json").read_text())["model.onnx"]
    assert record["fp16"] and record["parity"]["dtype"] == "float16" and record["parity"]["passed"]
    session = OnnxModel(folder / "model.onnx", providers="cpu")
    assert session.input_dtype.__name__ == "float16"
    out = session(torch.rand(3, 1, 28, 28))
    assert out.dtype == torch.float32 and out.shape == (3, 10)  # fp16 inside, fp32 logits out
    hub = build_hub_folder(folder, tmp_path / "hub", repo_id="zoo/arnas-mnist")
    assert (hub / "model.onnx").read_bytes() == (folder / "model.onnx").read_bytes()
    readme = (hub / "README.md").read_text()
    assert "## ONNX" in readme and "float16" in readme
    assert "![cells of the genotype](genotype.png)" in readme and (hub / "genotype.png").stat().st_size > 1000


def test_export_cli_errors_are_one_line(tmp_path: Path) -> None:
    from export.cli import main

    folder = save_folder(create_model("arnas", init_channels=4, layers=5, input_size=16), tmp_path / "ck")
    result = CliRunner().invoke(main, ["onnx", str(folder)], env={"ARNAS_ZOO_SHARED_DATA": str(tmp_path / "none")})
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1


def test_card_reports_the_sanity_checks(tmp_path: Path) -> None:
    from export.card import read_evaluation, render_card

    metrics = _metrics()
    metrics["sanity_checks"] = [
        {"name": "in_ball", "passed": True, "detail": "ok"},
        {"name": "black_box", "passed": False, "detail": "below"},
    ]
    report = read_evaluation(metrics)
    assert report is not None and report.failed_checks == ["black_box"]
    folder = save_folder(_mnist_tiny(), tmp_path / "ck", metrics=metrics)
    assert "Sanity checks against gradient masking (Carlini et al., 2019): 2 run, FAILED: black_box." in render_card(
        folder
    )


def test_card_refuses_metrics_that_are_not_a_report(tmp_path: Path) -> None:
    from export.card import render_card

    folder = save_folder(_mnist_tiny(), tmp_path / "ck", metrics={"schema": "something/else@9", "results": []})
    with pytest.raises(CheckpointError, match="expected schema"):
        render_card(folder)
