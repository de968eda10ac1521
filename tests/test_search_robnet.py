"""RobNets in search/: path sampling, code <-> genotype <-> registry, weight inheritance, resume, end to end."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from arnas_zoo.errors import ConfigError, GenotypeError
from arnas_zoo.genotype import Genotype
from arnas_zoo.registry import get_config
from search.robnet.config import PRESETS
from search.robnet.model import (
    DIRECT,
    EDGES,
    RobNetSupernet,
    build_sampled,
    code_features,
    code_from_strings,
    code_genotype,
    code_strings,
    fsp_distances,
    fsp_matrix,
    genotype_code,
    macro_config,
    sample_code,
    sampled_config,
)
from search.robnet.run import run_robnet

MICRO = replace(
    PRESETS["robnet-tiny"],
    name="robnet-micro",
    dataset="digits",
    n_images=400,
    resize=None,
    holdout=96,
    init_channels=4,
    layers=3,
    epochs=1,
    steps_per_epoch=2,
    batch_size=32,
    pgd_steps=1,
    eps=0.1,
    step_size=0.05,
    samples=6,
    finetune_epochs=0.1,
    eval_n=32,
    eval_steps=2,
    fsp_n=16,
    top_k=2,
)


def _supernet(layers: int = 3, channels: int = 4) -> RobNetSupernet:
    torch.manual_seed(0)
    net = RobNetSupernet(
        macro_config(init_channels=channels, layers=layers, in_channels=1, input_size=16, num_classes=10)
    )
    net.train()
    with torch.no_grad():  # BatchNorm running statistics of something, under the full code
        for _ in range(3):
            net(torch.rand(16, 1, 16, 16))
    return net.eval()


def test_path_sampling_runs_only_the_sampled_ops() -> None:
    net = _supernet()
    code = sample_code(torch.Generator().manual_seed(4), 1)
    code[0, 0] = (1, 0)  # edge 0: conv only
    code[0, 1] = (0, 0)  # edge 1: nothing
    net.set_code(code)
    net.train()
    net(torch.rand(4, 1, 16, 16)).sum().backward()
    for i, cell in enumerate(net.cells):
        for e, edge in enumerate(cell.edges):
            conv_grads = [p.grad for p in edge.conv.parameters()]
            used = bool(code[0, e, 0])
            assert all((g is not None and g.abs().sum() > 0) if used else g is None for g in conv_grads), (i, e)
            for p in edge.shortcut.parameters():  # FactorizedReduce on reduction cells' input edges
                assert (p.grad is not None) == bool(code[0, e, 1]), (i, e)


def test_codes_round_trip_and_build_the_registrys_robnets() -> None:
    for name in ("robnet_large", "robnet_free"):
        config = get_config(name)
        assert config.genotype is not None
        code = genotype_code(config.genotype)
        assert code.shape == ((1 if name == "robnet_large" else 20), EDGES, 2)
        again = Genotype.from_json(code_genotype(code, config.genotype.name).to_json())
        assert again.to_dict()["cells"] == config.genotype.to_dict()["cells"]
        assert np.array_equal(code_from_strings(code_strings(code)), code)
        ours = sampled_config(
            macro_config(init_channels=36, layers=20, in_channels=3, input_size=32, num_classes=10),
            code,
            config.genotype.name,
        )
        from arnas_zoo.models import build_model

        a, b = build_model(ours), build_model(config)
        assert [(k, v.shape) for k, v in a.state_dict().items()] == [(k, v.shape) for k, v in b.state_dict().items()]
    with pytest.raises(GenotypeError):
        code_from_strings([["01"] * 13])
    with pytest.raises(GenotypeError):
        code_from_strings([["01"] * 13 + ["2"]])


def test_direct_edges_and_density() -> None:
    assert int(DIRECT.sum()) == 4  # s1->n0, n0->n1, n1->n2, n2->n3
    full = np.ones((1, EDGES, 2), dtype=np.uint8)
    assert code_features(full) == {
        "density": 1.0,
        "convs": 14.0,
        "direct_convs": 4.0,
        "skip_convs": 10.0,
        "direct_share": 4 / 14,
    }
    gen = torch.Generator().manual_seed(0)
    for budget, (low, high) in (("small", (0, 7)), ("medium", (8, 10)), ("large", (11, 14))):
        for _ in range(20):
            assert low <= code_features(sample_code(gen, 2, budget))["convs"] <= high


@pytest.mark.parametrize("cells", [1, 3])
def test_inherited_network_is_the_supernet_under_that_code(cells: int) -> None:
    net = _supernet()
    code = sample_code(torch.Generator().manual_seed(cells), cells)
    code[0, 3] = 0
    code[0, 0:2] = 0  # node 0 of the first cell row has no edge at all: an explicit zero node
    net.set_code(code)
    child = build_sampled(net, code).eval()
    for key, value in child.state_dict().items():  # every tensor is one of the supernet's
        assert any(torch.equal(value, v) for v in net.state_dict().values()), key
    x = torch.rand(8, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(net(x), child(x), atol=1e-5)


def test_fsp_is_zero_for_identical_inputs_and_matches_its_definition() -> None:
    net = _supernet()
    net.set_code(np.ones((1, EDGES, 2), dtype=np.uint8))
    x = torch.rand(4, 1, 16, 16)
    assert all(d == 0.0 for d in fsp_distances(net, x, x))
    assert len(fsp_distances(net, x, (x + 0.1).clamp(0, 1))) == 1  # one normal cell of three
    a, b = torch.rand(2, 3, 4, 5), torch.rand(2, 6, 4, 5)
    manual = sum(a[0, :, s, t][:, None] * b[0, :, s, t][None, :] for s in range(4) for t in range(5)) / 20
    assert torch.allclose(fsp_matrix(a, b)[0], manual, atol=1e-6)


def test_run_end_to_end_resumes_without_recomputing_and_exports_genotypes(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    out = tmp_path / "run"
    summary = run_robnet(MICRO, out, device="cpu", progress=False)
    rows = json.loads((out / "architectures.json").read_text())
    assert len(rows) == 6 and all(r["finetuned"] and 0.0 <= r["pgd"] <= r["clean"] <= 1.0 for r in rows)
    assert (out / "architectures.csv").read_text().count("\n") == 7
    assert (out / "plots" / "analysis.png").is_file() and (out / "plots" / "analysis.svg").is_file()
    assert summary["density_vs_pgd"]["n"] == 6 and len(summary["exported"]) == 2
    genotype = Genotype.load(out / summary["exported"][0])
    from arnas_zoo.registry import config_for_genotype

    assert config_for_genotype(genotype).init_channels == 36 and config_for_genotype(genotype).layers == 20
    meta = sorted((out / "jobs").glob("*.meta.json"))
    assert len(meta) == 12  # 6 scores + 6 finetunes
    stamps = {p.name: p.stat().st_mtime_ns for p in meta}
    with pytest.raises(ConfigError, match="--resume"):
        run_robnet(MICRO, out, device="cpu", progress=False)
    with pytest.raises(ConfigError, match="different config"):
        run_robnet(replace(MICRO, samples=8), out, device="cpu", progress=False, resume=True)
    (out / "jobs" / meta[0].name.replace(".meta", "")).unlink()  # one architecture's result lost
    again = run_robnet(MICRO, out, device="cpu", progress=False, resume=True)
    assert again["density_vs_pgd"] == summary["density_vs_pgd"]
    changed = [p.name for p in sorted((out / "jobs").glob("*.meta.json")) if p.stat().st_mtime_ns != stamps[p.name]]
    assert changed == [meta[0].name]  # only the lost one was recomputed


def test_fsp_filter_finetunes_the_lowest_fraction(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    cfg = replace(MICRO, fsp_keep=0.5, cell_free=True)
    run_robnet(cfg, tmp_path, device="cpu", progress=False, plots=False)
    rows = json.loads((tmp_path / "architectures.json").read_text())
    kept = [r for r in rows if r["finetuned"]]
    assert len(kept) == 3 and len(rows[0]["code"]) == 3  # cell-free: one code per cell
    assert max(r["fsp_score"] for r in kept) <= min(r["fsp_score"] for r in rows if not r["finetuned"])
