"""The frozen compiled inference path of the query-heavy attacks: same logits, eager where gradients are needed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from arnas_zoo.attacks import attack_mode, inference
from arnas_zoo.attacks.inference import CompiledInference, maybe_compiled, wanted


def _small_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU()),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )
    with torch.no_grad():  # running statistics away from (0, 1), so that folding them matters
        bn = net[0][1]
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    return net.eval()


def test_compiled_answers_match_eager_for_every_batch_size_in_one_graph_and_gradients_stay_eager() -> None:
    inference._GRAPHS.clear()  # no graph of an equal model from another test
    net = _small_net()
    fast = CompiledInference(net)
    x = torch.rand(70, 3, 16, 16)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    with attack_mode(net), torch.no_grad():
        expected = net(x)
        # 5 < MIN_BATCH runs eagerly. The others share one graph: the first batch, 16 images of 16x16, would tie
        # the batch dimension to the image size under dynamo's duck sizing, and 23 and 70 would then recompile
        for n in (5, 16, 23, 70):
            got = fast(x[:n])
            assert got.shape == (n, 10)
            torch.testing.assert_close(got, expected[:n], rtol=1e-5, atol=1e-6)
        calls = fast.compiled_calls
        assert calls == 3
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs == 1
    with attack_mode(net):
        xa = x[:16].clone().requires_grad_(True)
        out = fast(xa)  # gradients enabled: the model itself, and the gradient reaches the input
        (grad,) = torch.autograd.grad(out.sum(), xa)
    assert fast.compiled_calls == calls and grad.abs().sum() > 0


def test_the_compiled_copy_keeps_its_batchnorms_folded() -> None:
    from arnas_zoo.attacks.batchnorm import _foldable_pairs

    net = _small_net()
    fast = CompiledInference(net)
    with attack_mode(net), torch.no_grad():
        fast(torch.rand(16, 3, 8, 8))
    assert fast._frozen is not None
    assert not _foldable_pairs(fast._frozen)  # folded once, and not unfolded when the fold context was collected
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast._frozen.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())  # the model itself is untouched


def test_wrappers_of_equal_models_share_one_graph_and_a_changed_weight_gets_its_own(monkeypatch) -> None:
    """A sharded evaluation wraps a freshly loaded model per shard: those must not compile again (with frozen
    weights each new copy did, and past dynamo's recompile limit the class ran eagerly for the process)."""
    import copy

    inference._GRAPHS.clear()
    monkeypatch.setattr(inference, "CACHED_MODELS", 2)
    net = _small_net()
    x = torch.rand(16, 3, 8, 8)
    counters = torch._dynamo.utils.counters["stats"]
    graphs = counters["unique_graphs"]
    with torch.no_grad():
        expected = net(x)
        for _ in range(3):  # three shards, three loads of one checkpoint
            shard_model = copy.deepcopy(net)
            fast = CompiledInference(shard_model)
            torch.testing.assert_close(fast(x), expected, rtol=1e-5, atol=1e-6)
            assert fast.compiled_calls == 1
        assert counters["unique_graphs"] - graphs == 1
        assert len(inference._GRAPHS) == 1
        changed = copy.deepcopy(net)
        changed[3].bias.add_(1.0)  # another checkpoint: its own copy and graph, never the first one's answers
        got = CompiledInference(changed)(x)
        torch.testing.assert_close(got, expected + 1.0, rtol=1e-5, atol=1e-5)
        assert len(inference._GRAPHS) == 2
        third = copy.deepcopy(net)
        third[3].bias.sub_(1.0)
        CompiledInference(third)(x)
    assert len(inference._GRAPHS) == 2  # bounded: the least recently used model's copy is dropped
    assert inference.model_digest(net) not in inference._GRAPHS


def test_one_channel_inputs_with_either_contiguous_stride_run_the_graph() -> None:
    """MNIST: a 1-channel batch as attacks hand it over (NHWC strides) made the fused convolution's layout differ
    from inductor's shape function, and every call fell back to the eager model with a warning."""
    import warnings

    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
    net = nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)).eval()
    x = torch.rand(16, 1, 8, 8)
    nhwc = torch.empty_strided(x.shape, (64, 1, 8, 1)).copy_(x)
    assert nhwc.is_contiguous() and nhwc.stride() != x.stride()
    fast = CompiledInference(net)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback warning fails the test
        for batch in (nhwc, x, nhwc):
            torch.testing.assert_close(fast(batch), net(x), rtol=1e-5, atol=1e-6)
    assert fast.compiled_calls == 3


def test_a_spent_recompile_limit_is_said_and_the_model_answers_eagerly() -> None:
    """Each distinct model of one class compiles one graph of the class's forward; past dynamo's limit it runs
    the model without one, which would otherwise pass silently for the compiled path."""
    import copy

    torch._dynamo.reset()
    inference._GRAPHS.clear()
    first, second = _small_net(), copy.deepcopy(_small_net())
    second[3].bias.data.add_(1.0)
    x = torch.rand(16, 3, 8, 8)
    with torch.no_grad(), torch._dynamo.config.patch(recompile_limit=1):
        fast = CompiledInference(first)
        torch.testing.assert_close(fast(x), first(x), rtol=1e-5, atol=1e-6)
        assert fast.compiled_calls == 1
        slow = CompiledInference(second)
        with pytest.warns(RuntimeWarning, match="compiled inference unavailable.*recompile limit"):
            out = slow(x)
        torch.testing.assert_close(out, second(x))
        slow(x)  # eager from now on, without a second warning
    assert slow.compiled_calls == 0
    assert inference.model_digest(second) not in inference._GRAPHS
    torch._dynamo.reset()
    inference._GRAPHS.clear()


def test_a_failed_compilation_warns_once_and_answers_eagerly(monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler here")

    monkeypatch.setattr(torch, "compile", broken)
    net = _small_net()
    fast = CompiledInference(net)
    x = torch.rand(16, 3, 8, 8)
    with torch.no_grad():
        with pytest.warns(RuntimeWarning, match="compiled inference unavailable.*no C\\+\\+ compiler"):
            out = fast(x)
        torch.testing.assert_close(out, net(x))
        fast(x)  # no second attempt, no second warning
    assert fast.compiled_calls == 0


def test_when_the_compiled_path_is_wanted(monkeypatch) -> None:
    net = _small_net()
    x = torch.rand(2, 3, 8, 8)
    monkeypatch.setenv("ARNAS_ZOO_COMPILED_INFERENCE", "auto")
    assert not wanted(net, x)  # a few thousand multiply-adds: compiling would not pay
    monkeypatch.setattr(inference, "MIN_MACS", 1)
    assert wanted(net, x)
    # ~1.4e4 multiply-adds per image: 10 forwards cannot repay a compilation, 1e9 can
    assert not wanted(net, x, forwards=10) and wanted(net, x, forwards=1e9)
    assert not wanted(net, x.double())
    monkeypatch.setenv("ARNAS_ZOO_COMPILED_INFERENCE", "0")
    assert maybe_compiled(net, x) is net
    monkeypatch.setenv("ARNAS_ZOO_COMPILED_INFERENCE", "1")
    monkeypatch.setattr(inference, "MIN_MACS", 10**12)
    assert isinstance(maybe_compiled(net, x), CompiledInference)


def test_square_through_the_runner_finds_the_same_with_and_without_the_compiled_path(monkeypatch) -> None:
    pytest.importorskip("pyautoattack")
    from arnas_zoo.data import ImageData
    from arnas_zoo.evaluate.runner import correct_mask, run_attack
    from arnas_zoo.evaluate.specs import make_attack
    from arnas_zoo.progress import Progress

    net = _small_net()
    torch.manual_seed(1)
    x = torch.rand(24, 3, 8, 8)
    with torch.no_grad():
        y = net(x).argmax(1)  # every point starts correct, so every point is attacked
    data = ImageData(x=x, y=y, name="synthetic", split="test", indices=torch.arange(24), num_classes=10)
    clean = correct_mask(net, x, y, 24)
    spec = make_attack("square200")
    made: list[nn.Module] = []

    def recording(model, example, forwards=None):
        made.append(maybe_compiled(model, example, forwards))
        return made[-1]

    monkeypatch.setattr(inference, "maybe_compiled", recording)
    results = {}
    for value in ("0", "1"):
        monkeypatch.setenv("ARNAS_ZOO_COMPILED_INFERENCE", value)
        results[value] = run_attack(
            net, data, spec, clean, eps=0.1, norm="linf", batch_size=24, seed=0, progress=Progress(enabled=False)
        )
    assert made[0] is net  # "0": the model itself
    assert isinstance(made[1], CompiledInference) and made[1].compiled_calls > 0  # "1": Square's queries compiled
    assert torch.equal(results["0"].correct, results["1"].correct)
    assert results["0"].forward_passes_per_image == results["1"].forward_passes_per_image
