"""Evaluation networks: the ARNAS layout, every registry entry, ablation variants, input sizes."""

from __future__ import annotations

import copy

import pytest
import torch

from arnas_zoo.checkpoint import load_folder, save_folder
from arnas_zoo.config import ModelConfig
from arnas_zoo.errors import CheckpointError, ConfigError, DuplicateNameError, UnknownModelError
from arnas_zoo.models import Cell, CellNetwork, build_model
from arnas_zoo.registry import ArchSpec, create_model, get_config, get_spec, list_archs, register, resolve_config

ARCH_NAMES = [spec.name for spec in list_archs()]


def tiny_overrides(name: str, **extra) -> dict:
    """Small widths and depths that keep each family's structure (tests run on 2 CPU cores)."""
    config = get_config(name)
    if config.arch == "cell":
        layers = 20 if config.cell_types is not None else 5
        return {"init_channels": 4, "layers": layers, **extra}
    if config.arch == "wrn34_10":
        return {"init_channels": 8, "layers": 10, **extra}
    if config.arch == "resnet18":
        return {"init_channels": 4, **extra}
    return extra


def test_arnas_layout_matches_the_paper() -> None:
    config = get_config("arnas")
    types = config.layer_cell_types()
    assert config.reduction_layers() == (6, 13)
    assert [i for i, t in enumerate(types) if t == "reduce"] == [6, 13]
    assert set(types[:13]) - {"reduce"} == {"accurate"}
    assert set(types[14:]) == {"robust"}
    model = build_model(config)
    assert isinstance(model, CellNetwork)
    assert model.stem[0].out_channels == 192
    cells = list(model.cells)
    assert isinstance(cells[0], Cell)
    per_node = [
        cell.preprocess1.op[1].out_channels if hasattr(cell.preprocess1, "op") else cell.preprocess1[1].out_channels
        for cell in cells
    ]
    assert per_node[:6] == [64] * 6 and per_node[6:13] == [128] * 7 and per_node[13:] == [128] * 7
    assert model.classifier.in_features == 512
    assert model.auxiliary_head is not None and model.config.auxiliary_layer == 13


def test_reduction_cells_halve_and_nodes_keep_shapes() -> None:
    model = create_model("arnas", init_channels=4, layers=8).eval()
    x = torch.rand(2, 3, 32, 32)
    sizes = []
    s0 = s1 = model.stem(x)
    for cell in model.cells:
        s0, s1 = s1, cell(s0, s1)
        sizes.append(s1.shape[-1])
    # reductions at 8 // 3 = 2 and 2 * 8 // 3 = 5
    assert sizes == [32, 32, 16, 16, 16, 8, 8, 8]


@pytest.mark.parametrize("name", ARCH_NAMES)
@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28)], ids=["cifar", "mnist"])
def test_every_registry_entry_runs_forward_and_backward(name: str, shape) -> None:
    c, h, _ = shape
    model = create_model(name, **tiny_overrides(name, in_channels=c, input_size=h, num_classes=7))
    model.train()
    x = torch.rand(2, *shape)
    logits, aux = model.forward_train(x)
    assert logits.shape == (2, 7)
    loss = logits.logsumexp(1).mean() + (aux.logsumexp(1).mean() if aux is not None else 0)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads if g is not None)
    assert any(g.abs().sum() > 0 for g in grads if g is not None)
    assert (aux is not None) == (model.config.auxiliary and model.config.arch == "cell")
    model.eval()
    assert model.forward_train(x)[1] is None  # the auxiliary head is training-only


@pytest.mark.parametrize("placement", ["A-A-R", "R-A-A", "A-R-A", "A-A-A"])
@pytest.mark.parametrize("filters", [(1, 2, 2), (1, 2, 3), (1, 2, 4)])
def test_table4_ablation_variants(placement: str, filters) -> None:
    letters = {"A": "accurate", "R": "robust"}
    stages = tuple(letters[p] for p in placement.split("-"))
    model = create_model("arnas", init_channels=4, layers=6, placement=stages, filter_multipliers=filters).eval()
    types = model.config.layer_cell_types()
    assert types == [stages[0], stages[0], "reduce", stages[1], "reduce", stages[2]]
    assert model.config.layer_channels() == [4, 4, 4 * filters[1], 4 * filters[1], 4 * filters[2], 4 * filters[2]]
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, 10)


def test_tiny_imagenet_input_size() -> None:
    model = create_model("arnas", init_channels=4, layers=5, input_size=64, num_classes=200).train()
    logits, aux = model.forward_train(torch.rand(2, 3, 64, 64))
    assert logits.shape == (2, 200) and aux.shape == (2, 200)


def test_normalization_lives_inside_the_model() -> None:
    base = create_model("darts_v2", init_channels=4, layers=5).eval()
    normed = create_model("darts_v2", init_channels=4, layers=5, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)).eval()
    normed.load_state_dict(base.state_dict(), strict=False)
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(normed(x), base((x - 0.5) / 0.25), atol=1e-5)


def test_drop_path_only_in_training() -> None:
    model = create_model("arnas", init_channels=4, layers=5, drop_path_prob=0.5)
    x = torch.rand(4, 3, 32, 32)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    torch.manual_seed(1)
    a = model(x)
    torch.manual_seed(2)
    b = model(x)
    assert not torch.allclose(a, b)


def test_config_round_trip_rebuilds_the_same_network(tmp_path) -> None:
    config = get_config("robnet_free").replace(init_channels=4)
    assert ModelConfig.from_json(config.to_json()) == config
    model = build_model(config).eval()
    save_folder(model, tmp_path / "ck")
    loaded = load_folder(tmp_path / "ck")
    x = torch.rand(2, 3, 32, 32)
    assert not loaded.training
    assert torch.equal(model(x), loaded(x))
    assert resolve_config(str(tmp_path / "ck")) == config


def test_weights_that_do_not_fit_are_rejected(tmp_path) -> None:
    save_folder(create_model("darts_v2", init_channels=4, layers=5), tmp_path / "a")
    other = get_config("darts_v2").replace(init_channels=6, layers=5)
    (tmp_path / "a" / "config.json").write_text(other.to_json())
    with pytest.raises(CheckpointError, match="do not fit the config"):
        load_folder(tmp_path / "a")
    (tmp_path / "a" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_folder(tmp_path / "a")


@pytest.mark.parametrize(
    "changes,fragment",
    [
        ({"placement": ("accurate", "robust")}, "one entry per stage"),
        ({"placement": ("accurate", "accurate", "fancy")}, "cell type 'fancy' is not in the genotype"),
        ({"layers": 2}, "at least 3 layers"),
        ({"num_classes": 1}, "at least 2"),
        ({"mean": (0.5,), "std": (0.2,)}, "expected 3 values"),
        ({"drop_path_prob": 1.5}, "drop_path_prob"),
        ({"arch": "vgg"}, "arch: expected one of"),
        ({"cell_types": ("accurate",)}, "expected 20 entries"),
    ],
)
def test_bad_configs_raise_config_error(changes, fragment) -> None:
    # field rules fail when the config is made; an unknown family when it is built (before allocating)
    with pytest.raises(ConfigError, match=fragment):
        build_model(get_config("arnas").replace(**changes))


def test_unknown_config_key_is_rejected() -> None:
    data = get_config("arnas").to_dict()
    data["colour"] = "red"
    with pytest.raises(ConfigError, match="config.colour: unknown key"):
        ModelConfig.from_dict(data)


def test_registry_names_and_errors() -> None:
    assert get_spec("ARNAS") is get_spec("arnas") and get_spec("darts-v2").name == "darts_v2"
    with pytest.raises(UnknownModelError, match="did you mean darts_v2"):
        get_spec("darts_v3")
    with pytest.raises(KeyError):
        get_spec("nothing-like-it")
    with pytest.raises(DuplicateNameError):
        register(ArchSpec("arnas", get_config("arnas"), paper="again"))


def _train_and_attack_passes(model: CellNetwork, shared: str, monkeypatch: pytest.MonkeyPatch) -> tuple:
    from arnas_zoo.attacks.batchnorm import folded_batchnorm

    monkeypatch.setenv("ARNAS_ZOO_SHARED_RELU", shared)
    x = torch.rand(3, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    model.train().zero_grad()
    torch.manual_seed(1)  # the same drop-path masks for both
    logits, aux = model.forward_train(x)
    assert aux is not None
    (logits.square().sum() + aux.logsumexp(1).sum()).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.eval()
    xi = x.clone().requires_grad_()
    with folded_batchnorm(model):  # the attack's pass: eval mode, BatchNorm folded into the convolutions
        out = model(xi)
    (input_grad,) = torch.autograd.grad(out.logsumexp(1).sum(), xi)
    return logits.detach(), grads, out.detach(), input_grad


@pytest.mark.parametrize("arch", ["arnas", "darts_v2"])
def test_cells_sharing_one_relu_per_state_compute_the_same_function(arch: str, monkeypatch) -> None:
    # in float64, so that only a changed function (not the order of float sums) could show
    torch.manual_seed(0)
    model = create_model(arch, init_channels=4, layers=6, drop_path_prob=0.2).double()
    assert isinstance(model, CellNetwork)
    # a copy each: the training pass moves BatchNorm's running statistics, which the eval pass reads
    plain = _train_and_attack_passes(copy.deepcopy(model), "0", monkeypatch)
    shared = _train_and_attack_passes(copy.deepcopy(model), "1", monkeypatch)
    torch.testing.assert_close(shared[0], plain[0], rtol=0, atol=0)  # the same values, bit for bit
    torch.testing.assert_close(shared[2], plain[2], rtol=0, atol=0)
    for a, b in zip(shared[1], plain[1]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(shared[3], plain[3], rtol=1e-10, atol=1e-14)


def test_shared_relu_computes_each_relu_once_and_the_switch_is_checked(monkeypatch) -> None:
    model = create_model("arnas", init_channels=4, layers=6).eval()
    assert model.config.layer_cell_types() == ["accurate", "accurate", "reduce", "accurate", "reduce", "robust"]
    x = torch.rand(1, 3, 32, 32)
    calls = {"n": 0}
    real = torch.relu

    def counting(t: torch.Tensor) -> torch.Tensor:  # nn.ReLU calls torch.relu too
        calls["n"] += 1
        return real(t)

    counts = {}
    monkeypatch.setattr(torch, "relu", counting)
    for shared in ("0", "1"):
        monkeypatch.setenv("ARNAS_ZOO_SHARED_RELU", shared)
        calls["n"] = 0
        with torch.no_grad():
            model(x)
        counts[shared] = calls["n"]
    # per op: each cell's two preprocessings, plus 10 in an accurate cell (5 separable convs of 2 blocks),
    # 5 in a reduction cell (5 dilated convs; its pools have none), 8 in a robust cell (8 dilated convs):
    # 12 + 12 + 7 + 12 + 7 + 10 = 60. Shared: one for the stem and each cell output read by later cells (6),
    # one per state read by a ReLU-first op (accurate 4, reduction 3, robust 5), and the second block of
    # each separable conv keeps its own (5 per accurate cell): 6 + 9 + 9 + 3 + 9 + 3 + 5 = 44.
    assert counts == {"0": 60, "1": 44}, counts
    from arnas_zoo.ops import relu_per_op

    calls["n"] = 0
    with torch.no_grad(), relu_per_op():  # what the paper's FLOP convention counts (arnas_zoo.stats)
        model(x)
    assert calls["n"] == 60
    monkeypatch.setenv("ARNAS_ZOO_SHARED_RELU", "yes")
    with pytest.raises(ConfigError, match="ARNAS_ZOO_SHARED_RELU"):
        model(x)
