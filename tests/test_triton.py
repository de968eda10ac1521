"""Scale-out on Triton Inference Server: an exported .onnx file as a model repository, checked with Triton's
own config schema (tritonclient's ModelConfig protobuf, text format) against the ONNX graph."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from arnas_zoo import create_model
from arnas_zoo.onnx import FORMAT, META_CONFIG, META_FORMAT

pytest.importorskip("onnxruntime")
pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] (the dev extra) holds Triton's config schema")

from arnas_zoo_runtime.__main__ import main as runtime_main  # noqa: E402
from arnas_zoo_runtime.session import InputError, ModelFileError  # noqa: E402
from arnas_zoo_runtime.triton import BatchingPolicy, RepositoryError, check_repository, export_repository  # noqa: E402


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from export.onnx_export import export_onnx

    torch.manual_seed(0)
    model = create_model("resnet18", init_channels=4, in_channels=1, input_size=16, num_classes=10).eval()
    config = model.config.replace(extra={"class_names": [f"digit {i}" for i in range(10)]})
    meta = {META_FORMAT: FORMAT, META_CONFIG: config.to_json()}
    path = tmp_path_factory.mktemp("triton") / "digits-net.onnx"
    return export_onnx(model, path, torch.rand(2, 1, 16, 16), metadata=meta)


def test_the_repository_holds_what_triton_loads_and_its_config_parses_with_tritons_schema(
    onnx_file: Path, tmp_path: Path
) -> None:
    policy = BatchingPolicy(max_batch=16, preferred=(4, 8), max_queue_delay_us=1500, instances=2)
    folder = export_repository(onnx_file, tmp_path / "repo", policy=policy)
    assert folder == tmp_path / "repo" / "digits-net"
    assert (folder / "1" / "model.onnx").read_bytes() == onnx_file.read_bytes()
    assert (folder / "labels.txt").read_text().splitlines() == [f"digit {i}" for i in range(10)]
    config = check_repository(tmp_path / "repo")["digits-net"]
    assert config["platform"] == "onnxruntime_onnx" and config["max_batch_size"] == 16
    assert config["input"] == [{"name": "images", "data_type": "TYPE_FP32", "dims": ["1", "16", "16"]}]
    assert config["output"][0]["dims"] == ["10"] and config["output"][0]["label_filename"] == "labels.txt"
    assert config["dynamic_batching"] == {"preferred_batch_size": [4, 8], "max_queue_delay_microseconds": "1500"}
    assert config["instance_group"] == [{"count": 2, "kind": "KIND_CPU"}]
    with pytest.raises(InputError, match="already exists"):
        export_repository(onnx_file, tmp_path / "repo", policy=policy)  # nothing overwritten


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda t: t.replace('name: "images"', 'name: "input"'), "the model's input is 'images'"),
        (
            lambda t: t.replace("dims: [ 1, 16, 16 ]", "dims: [ 3, 32, 32 ]"),
            "dims [3, 32, 32], the model has [1, 16, 16]",
        ),
        (lambda t: t.replace("TYPE_FP32", "TYPE_FP16", 1), "TYPE_FP16, the model has TYPE_FP32"),
        (lambda t: t.replace("preferred_batch_size: [ 4, 8 ]", "preferred_batch_size: [ 64 ]"), "outside 1..32"),
        (lambda t: t.replace('name: "digits-net"', 'name: "other"'), "not the folder's name"),
        (lambda t: t.replace("max_batch_size", "max_batch"), "max_batch"),  # a misspelt field: Triton's parser
        (lambda t: t.replace("count: 1", 'count: "one"'), "count"),  # a wrong type: Triton's parser
    ],
)
def test_a_config_triton_would_refuse_is_refused_with_the_reason(
    onnx_file: Path, tmp_path: Path, edit: object, words: str
) -> None:
    folder = export_repository(onnx_file, tmp_path / "repo")
    config = folder / "config.pbtxt"
    config.write_text(edit(config.read_text()))  # type: ignore[operator]
    with pytest.raises(RepositoryError, match=None) as caught:
        check_repository(tmp_path / "repo")
    assert words in str(caught.value)


def test_missing_versions_labels_and_fixed_batches_are_caught(onnx_file: Path, tmp_path: Path) -> None:
    folder = export_repository(onnx_file, tmp_path / "repo")
    (folder / "labels.txt").write_text("only\ntwo\n")
    with pytest.raises(RepositoryError, match="2 labels for 10 classes"):
        check_repository(tmp_path / "repo")
    shutil.rmtree(folder / "1")
    with pytest.raises(RepositoryError, match="no version folder"):
        check_repository(tmp_path / "repo")
    with pytest.raises(InputError, match="preferred batch sizes"):
        export_repository(onnx_file, tmp_path / "r2", policy=BatchingPolicy(max_batch=4, preferred=(8,)))
    with pytest.raises(ModelFileError, match="no such ONNX file"):
        export_repository(tmp_path / "none.onnx", tmp_path / "r3")
    with pytest.raises(RepositoryError, match="no such model repository folder"):
        check_repository(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RepositoryError, match="no model folders"):
        check_repository(tmp_path / "empty")
    with pytest.raises(RepositoryError, match="no model folder named 'other'"):
        check_repository(tmp_path / "repo", only="other")


def test_the_runtime_command_exports_and_checks(
    onnx_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo"
    args = ["triton", str(onnx_file), str(repo), "--name", "m", "--max-batch", "8", "--preferred", "2,4", "--gpu"]
    assert runtime_main(args) == 0
    assert "tritonserver --model-repository" in capsys.readouterr().out
    assert runtime_main(["triton-check", str(repo)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("m: ok") and '"kind":"KIND_GPU"' in out
    assert runtime_main(["triton", str(onnx_file), str(repo), "--preferred", "x"]) == 2
    assert runtime_main(["triton-check", str(tmp_path / "nowhere")]) == 2  # one line, no traceback
