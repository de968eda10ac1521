"""`arnas-zoo merge`: reports of one model on the same points, run apart, merged into the report one run gives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from eval_helpers import train_zoo_checkpoint
from safetensors.torch import load_file, save_file

from arnas_zoo.cli import main
from arnas_zoo.data import load_dataset
from arnas_zoo.errors import ConfigError
from arnas_zoo.evaluate.merge import merge_reports
from arnas_zoo.evaluate.report import read_report

EVAL = ["--dataset", "digits", "--n", "48", "--eps", "0.1", "--batch-size", "16", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    """A trained checkpoint, its PGD rows and its APGD row run apart, and all three in one run."""
    root = tmp_path_factory.mktemp("merge")
    folder = train_zoo_checkpoint(root / "ck", load_dataset("digits", "train").first(600), epochs=2)
    paths = {"folder": folder}
    for name, attacks, extra in (
        ("pgd", "fgsm,pgd10", ["--check-n", "16"]),
        ("apgd", "apgd-ce", ["--no-checks"]),
        ("one_run", "fgsm,pgd10,apgd-ce", ["--check-n", "16"]),
        ("seed1", "apgd-ce", ["--no-checks", "--seed", "1"]),
    ):
        paths[name] = root / f"{name}.json"
        result = CliRunner().invoke(
            main, ["eval", str(folder), *EVAL, "--attacks", attacks, *extra, "--json", str(paths[name])]
        )
        assert result.exit_code == 0, result.output
    return paths


def test_merged_reports_equal_one_run_of_all_attacks_and_judge_the_cross_attack_checks(runs, tmp_path) -> None:
    out = tmp_path / "merged.json"
    result = CliRunner().invoke(
        main, ["merge", str(runs["pgd"]), str(runs["apgd"]), "--model", str(runs["folder"]), "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "clean outcomes on the 48 points match" in result.output
    merged, single = read_report(out), read_report(runs["one_run"])
    assert [r.attack for r in merged.results] == ["fgsm", "pgd10", "apgd-ce"]
    assert merged.clean_accuracy == single.clean_accuracy and torch.equal(merged.clean, single.clean)
    for a, b in zip(merged.results, single.results):  # per-batch seeds: the same examples either way
        assert a.robust_accuracy == b.robust_accuracy and torch.equal(a.correct, b.correct)
    assert merged.worst_case_accuracy == single.worst_case_accuracy
    every = merged.clean.clone()
    for r in merged.results:
        every &= r.robust
    assert merged.worst_case_accuracy == int(every.sum()) / len(every)  # over the attacks of both sources
    checks = {c.name: c for c in merged.checks}
    # neither source could judge AutoAttack against PGD; the merge can
    assert {c.name: c.passed for c in read_report(runs["pgd"]).checks}["autoattack_le_pgd"] is None
    assert checks["autoattack_le_pgd"].passed is True
    assert checks["eps_zero"].passed is True and checks["eps_zero"].detail.startswith("pgd.json: ")  # carried
    sources = json.loads(out.read_text())["merged_from"]
    assert [s["attacks"] for s in sources] == [["fgsm", "pgd10"], ["apgd-ce"]]
    assert [s["report"] for s in sources] == ["pgd.json", "apgd.json"]
    assert read_report(out).environment["merged_from"] == sources  # kept on reread


def test_a_failed_check_in_a_source_stays_failed(runs) -> None:
    pgd, apgd = read_report(runs["pgd"]), read_report(runs["apgd"])
    (eps_zero,) = [c for c in pgd.checks if c.name == "eps_zero"]
    eps_zero.passed, eps_zero.detail = False, "PGD at eps=0 changed 40% of 16 clean predictions"
    merged = merge_reports([pgd, apgd], ["a", "b"])
    assert {c.name: c.passed for c in merged.checks}["eps_zero"] is False
    assert merged.possible_gradient_masking is True and "eps_zero" in merged.failed_checks


def test_merging_refuses_other_points_seeds_models_duplicates_and_reports_without_outcomes(runs, tmp_path) -> None:
    pgd, apgd = read_report(runs["pgd"]), read_report(runs["apgd"])
    with pytest.raises(ConfigError, match="fgsm is in a and in b"):
        merge_reports([pgd, read_report(runs["pgd"])], ["a", "b"])
    with pytest.raises(ConfigError, match="seed 1"):
        merge_reports([pgd, read_report(runs["seed1"])], ["a", "b"])
    metrics = json.loads(runs["apgd"].read_text())
    metrics["data"]["indices"] = "1-48"
    (tmp_path / "moved.json").write_text(json.dumps(metrics))
    with pytest.raises(ConfigError, match="other points"):
        merge_reports([pgd, read_report(tmp_path / "moved.json")], ["a", "b"])
    flipped = read_report(runs["apgd"])
    flipped.clean = ~apgd.clean  # type: ignore[operator]
    with pytest.raises(ConfigError, match="clean outcomes differ .* on 48 of 48 points: another model"):
        merge_reports([pgd, flipped], ["a", "b"])
    metrics = json.loads(runs["apgd"].read_text())
    del metrics["clean_bits"]
    (tmp_path / "old.json").write_text(json.dumps(metrics))
    with pytest.raises(ConfigError, match="old: no per-point outcomes"):
        merge_reports([pgd, read_report(tmp_path / "old.json")], ["pgd", "old"])
    with pytest.raises(ConfigError, match="no reports"):
        merge_reports([])


def test_merge_refuses_reports_of_other_weights(runs, tmp_path) -> None:
    changed = tmp_path / "changed"
    changed.mkdir()
    for name in ("config.json", "metrics.json"):
        if (runs["folder"] / name).exists():
            (changed / name).write_bytes((runs["folder"] / name).read_bytes())
    weights = load_file(str(runs["folder"] / "model.safetensors"))
    last = [k for k in weights if k.endswith("bias")][-1]  # the classifier's bias: one class wins everywhere
    weights[last] = torch.zeros_like(weights[last])
    weights[last][0] = 1e4
    save_file(weights, str(changed / "model.safetensors"))
    result = CliRunner().invoke(
        main,
        ["merge", str(runs["pgd"]), str(runs["apgd"]), "--model", str(changed), "--json", str(tmp_path / "m.json")],
    )
    assert result.exit_code != 0 and "the report is not of these weights" in result.output
    assert not (tmp_path / "m.json").exists()
    unverified = CliRunner().invoke(main, ["merge", str(runs["pgd"]), "--json", str(tmp_path / "u.json")])
    assert unverified.exit_code == 0 and "not verified against a checkpoint" in unverified.output
    arch = CliRunner().invoke(
        main, ["merge", str(runs["pgd"]), "--model", "resnet18", "--json", str(tmp_path / "a.json")]
    )
    assert arch.exit_code == 2 and "not an architecture" in arch.output and not (tmp_path / "a.json").exists()
