"""Every bundled pretrained checkpoint loads, is pinned, and its recorded clean accuracy is reproducible."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import arnas_zoo
from arnas_zoo.data import load_npz, split_train_val
from arnas_zoo.pretrained import list_pretrained

SPECS = [spec for spec in list_pretrained() if spec.folder is not None]


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_bundled_checkpoint_loads_and_reproduces_its_clean_accuracy(spec, shared_data: Path) -> None:
    model = arnas_zoo.load(spec.name)  # checks the pinned sha256
    assert not model.training
    assert model.config.eps == pytest.approx(spec.eps) and model.config.threat_model == spec.threat_model
    evaluation = model.metrics["evaluation"]
    recorded = evaluation["clean"]["accuracy"]
    if spec.dataset == "mnist":
        data = load_npz(shared_data / "mnist" / "test.npz").first(2000)
        tolerance = 0.03  # 2000 of the 10000 recorded points: sampling error, not a different model
    else:
        # the recorded CIFAR-10 figures use the last 1000 rows of the train subset as a validation split
        _, data = split_train_val(load_npz(shared_data / "cifar10" / "train.npz"), 1000)
        tolerance = 1e-9  # the very same 1000 points
    with torch.no_grad():
        accuracy = (model(data.x).argmax(1) == data.y).double().mean().item()
    assert accuracy == pytest.approx(recorded, abs=tolerance)
    # a robust figure never exceeds the clean one on the same points
    pgd = evaluation["pgd"]
    assert pgd["robust_accuracy"] <= pgd["clean_accuracy_same_points"]
    assert pgd["n"] == evaluation["data"]["n_total"], "PGD must cover the whole evaluation split"
    aa = evaluation["autoattack"]
    assert aa["n"] > 0 and aa["robust_accuracy"] <= aa["clean_accuracy_same_points"]
    # the per-point worst case of the two attacks is below each of them on the same points
    assert aa["worst_case_pgd_or_aa_same_points"] <= min(aa["robust_accuracy"], aa["pgd_robust_accuracy_same_points"])
