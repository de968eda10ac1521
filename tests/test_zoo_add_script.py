"""scripts/zoo_add.py with --reports and --hub-folder: a large model's evaluations, run apart, become its
Hub folder (merged metrics, model card), verified against the run's checkpoint; nothing is bundled."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from test_training_cli import TINY

from arnas_zoo.checkpoint import load_folder
from arnas_zoo.cli import main

REPO = Path(__file__).resolve().parents[1]
EVAL = ["--dataset", "digits", "--n", "32", "--eps", "0.1", "--batch-size", "16", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    """A tiny ARNAS training run on digits, and two reports of its best checkpoint run apart."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("zoo_add")
    out = root / "run"
    args = ["train", "arnas", "--recipe", "cpu_digits", "--dataset", "digits", "--val-rows", "100"]
    final = ["--eval-attacks", "fgsm", "--eval-n", "16"]  # the final evaluation records the selection rows
    trained = CliRunner().invoke(main, [*args, "--out", str(out), *final, *TINY])
    assert trained.exit_code == 0, trained.output
    for name, attacks, extra in (("pgd", "fgsm,pgd5", ["--check-n", "8"]), ("apgd", "apgd-ce", ["--no-checks"])):
        result = CliRunner().invoke(
            main, ["eval", str(out / "best"), *EVAL, "--attacks", attacks, *extra, "--json", str(out / f"{name}.json")]
        )
        assert result.exit_code == 0, result.output
    return out


def _zoo_add(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    script = REPO / "scripts" / "zoo_add.py"
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, env=env, timeout=300)


def test_reports_become_a_verified_hub_folder_with_merged_metrics_and_nothing_is_bundled(run, tmp_path) -> None:
    index = REPO / "arnas_zoo" / "pretrained" / "index.json"
    before = index.read_bytes()
    folder = tmp_path / "zoo"
    done = _zoo_add(
        str(run), "arnas.digits_linf_test", "--description", "a test model", "--reports", str(run / "pgd.json"),
        str(run / "apgd.json"), "--hub-folder", str(folder), "--repo-id", "org/arnas-digits",
        "--goals", "clean=0.9,autoattack=0.5",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    written = {p.name for p in (folder / "hub").iterdir()}
    assert {"README.md", "config.json", "metrics.json", "model.safetensors"} <= written, written
    metrics = json.loads((folder / "metrics.json").read_text())
    assert [r["attack"] for r in metrics["results"]] == ["fgsm", "pgd5", "apgd-ce"]
    assert metrics["model"] == {"name": "arnas.digits_linf_test", "source": "registry:arnas.digits_linf_test"}
    assert [s["report"] for s in metrics["merged_from"]] == ["pgd.json", "apgd.json"]
    assert "recipe_settings" in metrics["training"]
    status = {c["name"]: c["passed"] for c in metrics["sanity_checks"]}
    assert status["autoattack_le_pgd"] is not None  # judged across the two reports
    model = load_folder(folder)
    assert model.auxiliary_head is None  # stripped, as for every zoo entry
    assert (folder / "hub" / "metrics.json").read_bytes() == (folder / "metrics.json").read_bytes()
    card = (folder / "hub" / "README.md").read_text()
    assert "apgd-ce" in card and "the reported rows were not used for selection" in card
    assert metrics["protocol"]["disjoint"] is True  # selected on digits train rows, reported on digits test
    assert metrics["protocol"]["selection"]["split"].startswith("train")
    assert (
        "--repo-id org/arnas-digits --reuse --tag v1.0" in done.stdout
        and "export register" in done.stdout
        and "--revision COMMIT" in done.stdout
    )
    assert "--goals clean=0.9,autoattack=0.5 --index" in done.stdout  # the entry will state them
    assert index.read_bytes() == before  # a Hub entry is registered only once its commit exists


def test_a_report_of_other_weights_is_refused_before_anything_is_written(run, tmp_path) -> None:
    other = tmp_path / "other.json"
    metrics = json.loads((run / "apgd.json").read_text())
    from arnas_zoo.evaluate.report import pack_mask, unpack_mask

    clean = unpack_mask(metrics["clean_bits"], 32)
    clean[0] ^= True  # one point's clean outcome differs: not this checkpoint's report
    metrics["clean_bits"] = pack_mask(clean)
    metrics["clean_accuracy"] = int(clean.sum()) / 32
    for r in metrics["results"]:
        correct = unpack_mask(r["correct_bits"], 32)
        r["robust_accuracy"] = int((correct & clean).sum()) / 32
    metrics["worst_case_accuracy"] = min(r["robust_accuracy"] for r in metrics["results"])
    other.write_text(json.dumps(metrics))
    folder = tmp_path / "zoo"
    refused = _zoo_add(
        str(run), "arnas.digits_linf_test", "--description", "x", "--reports", str(other),
        "--hub-folder", str(folder), "--repo-id", "org/arnas-digits",
    )  # fmt: skip
    assert refused.returncode != 0 and "the report is not of these weights" in refused.stderr
    assert not folder.exists()
    missing = _zoo_add(str(run), "arnas.digits_linf_test", "--description", "x", "--hub-folder", str(folder))
    assert missing.returncode == 2 and "--hub-folder needs --reports" in missing.stderr
    goals = _zoo_add(str(run), "arnas.digits_linf_test", "--description", "x", "--goals", "clean=75")
    assert goals.returncode == 2 and "expected FIGURE=LINE" in goals.stderr and not folder.exists()


def test_the_hub_folder_rehearses_its_publish_and_a_card_the_weights_do_not_give_fails(run, tmp_path) -> None:
    """scripts/rehearse_hub_publish.py: publish on the loopback Hub, register, load by name online and
    offline, re-run the card's attacks on its points; a per-point outcome the weights do not give fails."""
    pytest.importorskip("olah", reason="olah (the local Hub mirror) is a dev dependency: pip install -e '.[dev]'")
    folder = tmp_path / "zoo"
    args = [str(run), "arnas.digits_linf_rehearsed", "--description", "a test model", "--reports"]
    done = _zoo_add(*args, str(run / "pgd.json"), "--hub-folder", str(folder), "--repo-id", "org/rehearsed")
    assert done.returncode == 0, done.stderr
    script = REPO / "scripts" / "rehearse_hub_publish.py"
    rehearse = [sys.executable, str(script), str(folder), "--repo-id", "org/rehearsed"]
    rehearse += ["--name", "arnas.digits_linf_rehearsed"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}  # restored offline; servers are local
    ok = subprocess.run(rehearse, capture_output=True, text=True, env=env, timeout=300)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "offline, from the cache: weights equal to the folder's" in ok.stdout
    assert "fgsm: " in ok.stdout and "pgd5: " in ok.stdout and "rehearsal: every check held" in ok.stdout

    metrics = json.loads((folder / "metrics.json").read_text())
    (pgd,) = [r for r in metrics["results"] if r["attack"] == "pgd5"]
    bits = bytearray(base64.b64decode(pgd["correct_bits"]))
    bits[0] ^= 1  # the card now claims another outcome on the first point
    pgd["correct_bits"] = base64.b64encode(bytes(bits)).decode()
    for path in (folder / "metrics.json", folder / "hub" / "metrics.json"):  # a consistent, wrong card
        path.write_text(json.dumps(metrics))
    bad = subprocess.run(rehearse, capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "FAILED: pgd5: per-point outcomes differ" in bad.stdout and "FAILED: fgsm" not in bad.stdout


def test_reports_become_a_bundled_entry_with_goals_in_the_index_given(run, tmp_path) -> None:
    """The bundled path (the zoo's cell networks): the entry's folder beside the index, every file pinned,
    the goal lines recorded, the card regenerated; the package's own index and card untouched."""
    from arnas_zoo.checkpoint import sha256_file
    from arnas_zoo.pretrained import read_index

    package_index, card = REPO / "arnas_zoo" / "pretrained" / "index.json", REPO / "MODEL_CARD.md"
    before = package_index.read_bytes(), card.read_bytes()
    index = tmp_path / "pretrained" / "index.json"
    index.parent.mkdir()
    shutil.copyfile(package_index, index)
    name = "arnas.digits_linf_bundled"
    args = [str(run), name, "--description", "a test model", "--reports", str(run / "pgd.json"), str(run / "apgd.json")]
    done = _zoo_add(*args, "--goals", "clean=0.9,autoattack=0.5", "--index", str(index))
    assert done.returncode == 0, done.stderr
    (entry,) = [e for e in read_index(index) if e.name == name]
    folder = index.parent / name
    assert entry.folder == name and dict(entry.goals or ()) == {"clean": 0.9, "autoattack": 0.5}
    assert all(sha256_file(folder / f) == digest for f, digest in entry.pins().items())
    assert load_folder(folder).auxiliary_head is None
    metrics = json.loads((folder / "metrics.json").read_text())
    assert [r["attack"] for r in metrics["results"]] == ["fgsm", "pgd5", "apgd-ce"] and metrics["protocol"]["disjoint"]
    assert len(read_index(index)) == len(read_index(package_index)) + 1
    assert name in (index.parent / "MODEL_CARD.md").read_text()
    assert (package_index.read_bytes(), card.read_bytes()) == before
    refused = _zoo_add(str(run), "arnas.digits_linf_x", "--description", "x", "--index", str(index))
    assert refused.returncode == 2 and "needs --reports" in refused.stderr
