"""ONNX export (python -m export onnx), the OnnxModel session, `arnas-zoo predict` and `arnas-zoo check`.

One tiny MNIST cell network (BatchNorm calibrated and classifier fitted in closed form on real
images, see tests/tiny_models.py) is exported once per module through the CLI; the tests then
check the file, the recorded parity, the session's torch-like interface and the two commands.
Only the CPU provider exists here: the CUDA paths of arnas_zoo.onnx are not exercised.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from arnas_zoo.checkpoint import load_folder, save_folder, sha256_file
from arnas_zoo.cli import main as zoo_cli
from arnas_zoo.errors import CheckpointError, ConfigError, InputRangeError
from arnas_zoo.images import read_npz_batch
from arnas_zoo.onnx import CPU, META_CONFIG, OnnxModel, ProviderError, read_onnx_metadata, resolve_providers
from tests.tiny_models import fitted_mnist_model, relabelled

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def fitted(shared_data: Path) -> torch.nn.Module:
    return fitted_mnist_model(shared_data)


@pytest.fixture(scope="module")
def exported(fitted: torch.nn.Module, shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fitted tiny MNIST checkpoint folder, exported with `python -m export onnx FOLDER`."""
    from export.cli import main as export_cli

    folder = save_folder(
        fitted,
        tmp_path_factory.mktemp("onnx") / "mnist-tiny",
        metrics={"data": {"dataset": "mnist", "split": "test", "n": 0}},
    )
    result = CliRunner().invoke(
        export_cli, ["onnx", str(folder), "-n", "64"], env={"ARNAS_ZOO_SHARED_DATA": str(shared_data)}
    )
    assert result.exit_code == 0, result.output
    assert "onnx.checker full check passed" in result.output
    yield folder


def test_export_record_and_file(exported: Path) -> None:
    path = exported / "model.onnx"
    onnx.checker.check_model(str(path), full_check=True)
    assert not list(exported.glob("*.data"))  # one self-contained file, no external data
    record = json.loads((exported / "onnx.json").read_text())["model.onnx"]
    parity = record["parity"]
    assert record["sha256"] == sha256_file(path)
    assert record["source_sha256"] == sha256_file(exported / "model.safetensors")
    assert record["exporter"] == "torch.onnx.export(dynamo=True)" and record["dynamic_batch"]
    assert parity["passed"] and parity["n"] == 64 and parity["dtype"] == "float32"
    assert parity["max_abs_diff"] <= 1e-4 and parity["top1_agreement"] == 1.0
    assert parity["images"] == "mnist test (official indices 0-63)"
    proto = onnx.load(str(path))
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch dimension
    assert record["opset"] == next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    meta = read_onnx_metadata(path)
    assert json.loads(meta[META_CONFIG]) == json.loads(load_folder(exported).config.to_json())


def test_session_matches_torch_at_any_batch_size(exported: Path, shared_data: Path) -> None:
    model = load_folder(exported)
    session = OnnxModel(exported / "model.onnx", providers="auto")
    assert session.provider == CPU and session.providers == [CPU]  # this machine has no CUDA provider
    assert session.config == model.config and session.parity["passed"]
    x, _ = read_npz_batch(shared_data / "mnist" / "test.npz", channels=1, n=7, offset=100)
    for batch in (x[:1], x):
        out = session(batch)
        assert isinstance(out, torch.Tensor) and out.shape == (len(batch), 10)
        with torch.no_grad():
            assert (out - model(batch)).abs().max() <= 1e-4
    as_numpy = session(x.numpy())
    assert isinstance(as_numpy, np.ndarray) and np.allclose(as_numpy, out.numpy(), atol=1e-6)
    assert session.eval() is session


def test_split_batches_equal_one_run(exported: Path, shared_data: Path) -> None:
    """Chunks run concurrently on the single-threaded session give the one-run logits, in order."""
    x, _ = read_npz_batch(shared_data / "mnist" / "test.npz", channels=1, n=11, offset=200)
    whole = OnnxModel(exported / "model.onnx", providers="cpu", micro_batch=None)
    split = OnnxModel(exported / "model.onnx", providers="cpu", threads=2, micro_batch=3)
    reference = whole(x)
    out = split(x)  # chunks of 3, 3, 3, 2 on two threads
    assert split._chunk_session is not None and whole._chunk_session is None
    assert out.shape == reference.shape and (out - reference).abs().max() <= 1e-5
    assert torch.equal(out.argmax(1), reference.argmax(1))
    assert np.allclose(split(x.numpy()), reference.numpy(), atol=1e-5)
    assert (split(x[:2]) - reference[:2]).abs().max() <= 1e-5  # at most micro_batch: one run
    with pytest.raises(ConfigError, match="micro_batch"):
        OnnxModel(exported / "model.onnx", providers="cpu", micro_batch=0)
    with pytest.raises(ConfigError, match="threads"):
        OnnxModel(exported / "model.onnx", providers="cpu", threads=0)


def test_session_rejects_bad_inputs(exported: Path) -> None:
    session = OnnxModel(exported / "model.onnx", providers="cpu")
    with pytest.raises(InputRangeError, match=r"pixel values in \[0, 1\]"):
        session(torch.full((1, 1, 28, 28), 255.0))
    with pytest.raises(InputRangeError, match="integer"):
        session(np.zeros((1, 1, 28, 28), dtype=np.uint8))
    with pytest.raises(InputRangeError, match=r"shape \(N, 1, 28, 28\)"):
        session(torch.rand(1, 3, 28, 28))
    with pytest.raises(InputRangeError, match="4 dimensions"):
        session(torch.rand(28, 28))


def test_providers(exported: Path, tmp_path: Path) -> None:
    assert resolve_providers("cpu") == [CPU]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert resolve_providers("auto") == [CPU]
        with pytest.raises(ProviderError, match="no CUDA provider"):
            OnnxModel(exported / "model.onnx", providers="cuda")
    with pytest.raises(ProviderError, match="not in this onnxruntime build"):
        resolve_providers(["NoSuchExecutionProvider"])
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx file")
    with pytest.raises(CheckpointError, match="ONNX Runtime cannot load it"):
        OnnxModel(broken)


def test_parity_check_catches_a_different_model(exported: Path, fitted: torch.nn.Module, shared_data: Path) -> None:
    from export.onnx_export import check_parity

    x, _ = read_npz_batch(shared_data / "mnist" / "test.npz", channels=1, n=64)
    assert check_parity(fitted, exported / "model.onnx", x, "mnist test 0..63").passed
    report = check_parity(relabelled(fitted), exported / "model.onnx", x, "mnist test 0..63")
    assert not report.passed and report.max_abs_diff > 1e-2 and report.top1_agreement < 1.0


def test_predict_cli_png_npz_onnx_and_folder(exported: Path, shared_data: Path, tmp_path: Path) -> None:
    from PIL import Image

    x, _ = read_npz_batch(shared_data / "mnist" / "test.npz", channels=1, n=3)
    pngs = []
    for i in range(2):
        path = tmp_path / f"digit{i}.png"
        Image.fromarray((x[i, 0].numpy() * 255).round().astype(np.uint8), mode="L").save(path)
        pngs.append(str(path))
    batch = tmp_path / "batch.npz"
    np.savez(batch, x=(x.numpy().transpose(0, 2, 3, 1) * 255).round().astype(np.uint8))
    runner = CliRunner()
    outputs = {}
    for spec in (str(exported / "model.onnx"), str(exported)):
        result = runner.invoke(zoo_cli, ["predict", spec, *pngs, str(batch), "--json", "--top-k", "2"])
        assert result.exit_code == 0, result.output
        outputs[spec] = json.loads(result.output)
    onnx_rows, torch_rows = outputs.values()
    assert [r["image"] for r in onnx_rows] == [
        "digit0.png",
        "digit1.png",
        "batch.npz[0]",
        "batch.npz[1]",
        "batch.npz[2]",
    ]
    assert [r["top"][0]["class"] for r in onnx_rows] == [r["top"][0]["class"] for r in torch_rows]
    # a PNG and the same image inside the npz batch get the same answer
    assert onnx_rows[0]["top"][0]["class"] == onnx_rows[2]["top"][0]["class"]
    with torch.no_grad():
        expected = load_folder(exported)(x).softmax(1).max(1).values
    assert [r["top"][0]["probability"] for r in onnx_rows[2:]] == pytest.approx(expected.tolist(), abs=1e-4)
    table = runner.invoke(zoo_cli, ["predict", str(exported / "model.onnx"), pngs[0]])
    assert table.exit_code == 0 and table.stdout.startswith("digit0.png\t")
    assert "ONNX Runtime provider: CPUExecutionProvider" in table.stderr
    bad = runner.invoke(zoo_cli, ["predict", "arnas.no_such_model", pngs[0]])
    assert bad.exit_code == 2 and bad.output.startswith("error: unknown model")


def test_check_cli_agrees_with_its_source_and_flags_another(
    exported: Path, fitted: torch.nn.Module, shared_data: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    # Tiny budgets: the point is the plumbing and the verdict logic, not a robustness figure.
    args = [
        "check",
        str(exported / "model.onnx"),
        "--dataset",
        "mnist",
        "--n",
        "12",
        "--queries",
        "10",
        "--pgd-steps",
        "1",
        "--data-dir",
        str(shared_data),
    ]
    report = tmp_path / "check.json"
    same = runner.invoke(zoo_cli, [*args, "--source", str(exported), "--json", str(report)])
    assert same.exit_code == 0, same.output
    assert "is as robust as its source" in same.output
    figures = json.loads(report.read_text())
    assert figures["clean_onnx"] == figures["clean_torch"] > 0.3  # a fitted model, not a constant one
    assert figures["square_onnx"] == pytest.approx(figures["square_torch"], abs=figures["margin"])
    assert figures["transfer_onnx"] == figures["pgd_torch"] and figures["pgd_torch"] <= figures["clean_torch"]
    assert figures["eps"] == pytest.approx(0.1) and figures["norm"] == "linf"  # from the file's config
    assert figures["data"] == "mnist test (official indices 0-11)"
    assert all(figures["sanity"].values())
    other = save_folder(relabelled(fitted), tmp_path / "other")
    differs = runner.invoke(zoo_cli, [*args, "--source", str(other)])
    assert differs.exit_code == 1
    assert "FAILED: clean_predictions_identical" in differs.output


def test_auto_providers_warn_when_cuda_does_not_load(exported: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # emulates an onnxruntime-gpu build that lists CUDA but cannot load it (CUDA/cuDNN mismatch with torch):
    # ONNX Runtime then runs on the CPU without an error, and the user must hear about it
    import arnas_zoo.onnx as zoo_onnx

    real = ort.InferenceSession
    seen: list[object] = []

    class Session:  # asks for CUDA with the heuristic cuDNN search, gets only the CPU provider
        def __init__(self, path: str, sess_options: object = None, providers: list[object] | None = None) -> None:
            seen.extend(providers or [])
            self._inner = real(path, sess_options=sess_options, providers=[CPU])

        def __getattr__(self, name: str) -> object:
            return getattr(self._inner, name)

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", CPU])
    monkeypatch.setattr(ort, "InferenceSession", Session)
    with pytest.warns(zoo_onnx.ProviderFallbackWarning, match="CUDA provider did not load"):
        session = OnnxModel(exported / "model.onnx", providers="auto")
    assert session.provider == CPU
    cuda = next(p for p in seen if isinstance(p, tuple))
    assert cuda[0] == "CUDAExecutionProvider" and cuda[1]["cudnn_conv_algo_search"] == "HEURISTIC"
    with pytest.raises(ProviderError, match="did not load"):
        OnnxModel(exported / "model.onnx", providers="cuda")
