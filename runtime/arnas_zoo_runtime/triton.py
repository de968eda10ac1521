"""Scale out on NVIDIA Triton Inference Server: an .onnx file as a Triton model repository, and its check.

``export_repository`` writes the layout Triton's ONNX Runtime backend loads unchanged::

    REPOSITORY/NAME/config.pbtxt      platform onnxruntime_onnx, max_batch_size, the input and output with
                                      their dims (without the batch dim), dynamic batching, instance groups
    REPOSITORY/NAME/1/model.onnx      the file, copied byte for byte (its sha256 is checked after the copy)
    REPOSITORY/NAME/labels.txt        class names, one per line, when the file's metadata names them
                                      (Triton's classification extension: ``label_filename``)

``check_repository`` reads each config.pbtxt with Triton's own schema (the ``ModelConfig`` protobuf that
ships in ``tritonclient``, parsed by protobuf's text format as the server parses it, so a misspelt field
or a wrong type fails here as it would there) and holds it against the ONNX graph the way the server does
when it loads the model: names, data types and dims of the input and output, a batch dimension that is
free when ``max_batch_size > 0``, preferred batch sizes within the maximum, a numeric version folder, the
label file's length. Run the server on the repository with
``tritonserver --model-repository REPOSITORY`` (docs/deploy.md).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arnas_zoo_runtime.session import InputError, ModelFileError, RuntimeFault

#: ONNX Runtime's type names -> Triton's data types
TRITON_TYPES = {"tensor(float)": "TYPE_FP32", "tensor(float16)": "TYPE_FP16", "tensor(double)": "TYPE_FP64"}
PLATFORM = "onnxruntime_onnx"


class RepositoryError(RuntimeFault, ValueError):
    """A model repository Triton would refuse (one line per problem)."""


@dataclass(frozen=True)
class BatchingPolicy:
    """Triton's dynamic batcher and model instances (``instances`` copies of the session per device)."""

    max_batch: int = 32
    preferred: tuple[int, ...] = (4, 8)
    max_queue_delay_us: int = 2000
    instances: int = 1
    gpu: bool = False

    def check(self) -> None:
        if not 1 <= self.max_batch <= 4096:
            raise InputError(f"max_batch: expected 1 to 4096, got {self.max_batch}")
        if any(not 1 <= p <= self.max_batch for p in self.preferred):
            raise InputError(f"preferred batch sizes must lie in 1..max_batch={self.max_batch}, got {self.preferred}")
        if not 0 <= self.max_queue_delay_us <= 10_000_000 or not 1 <= self.instances <= 64:
            raise InputError("max_queue_delay_us in 0..1e7 and instances in 1..64 expected")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _graph(model: Path) -> dict[str, Any]:
    """The ONNX file's one input and first output: name, Triton type, dims (the batch dim first)."""
    from arnas_zoo_runtime.session import Predictor

    predictor = Predictor(model, providers="cpu", micro_batch=None, threads=1)
    inputs, outputs = predictor.session.get_inputs(), predictor.session.get_outputs()

    def tensor(node: Any) -> dict[str, Any]:
        if node.type not in TRITON_TYPES:
            raise ModelFileError(f"{model}: {node.name} is {node.type}; Triton export supports {sorted(TRITON_TYPES)}")
        return {
            "name": node.name,
            "type": TRITON_TYPES[node.type],
            "dims": [d if isinstance(d, int) else -1 for d in node.shape],
        }

    return {"input": tensor(inputs[0]), "output": tensor(outputs[0]), "class_names": predictor.class_names}


def _dims(dims: Sequence[int]) -> str:
    return "[ " + ", ".join(str(d) for d in dims) + " ]"


def config_text(name: str, graph: dict[str, Any], policy: BatchingPolicy, labels: bool) -> str:
    """config.pbtxt (protobuf text format of Triton's ModelConfig) for the graph and policy."""
    tensor_in, tensor_out = graph["input"], graph["output"]
    label = '\n    label_filename: "labels.txt"' if labels else ""
    preferred = f"\n  preferred_batch_size: {_dims(policy.preferred)}" if policy.preferred else ""
    return f"""name: "{name}"
platform: "{PLATFORM}"
max_batch_size: {policy.max_batch}
input [
  {{
    name: "{tensor_in["name"]}"
    data_type: {tensor_in["type"]}
    dims: {_dims(tensor_in["dims"][1:])}
  }}
]
output [
  {{
    name: "{tensor_out["name"]}"
    data_type: {tensor_out["type"]}
    dims: {_dims(tensor_out["dims"][1:])}{label}
  }}
]
dynamic_batching {{{preferred}
  max_queue_delay_microseconds: {policy.max_queue_delay_us}
}}
instance_group [
  {{
    count: {policy.instances}
    kind: {"KIND_GPU" if policy.gpu else "KIND_CPU"}
  }}
]
"""


def export_repository(
    model: str | os.PathLike[str],
    repository: str | os.PathLike[str],
    *,
    name: str | None = None,
    policy: BatchingPolicy = BatchingPolicy(),
    version: int = 1,
) -> Path:
    """Write ``model`` (an .onnx file) into ``repository`` as Triton model ``name``; returns the model folder.

    An existing model folder of that name is refused (nothing is overwritten); the copy is verified by sha256.
    """
    source = Path(model)
    if not source.is_file():
        raise ModelFileError(f"{source}: no such ONNX file")
    policy.check()
    name = name or source.stem
    if not name.replace("-", "").replace("_", "").replace(".", "").isalnum() or name.startswith("."):
        raise InputError(f"model name {name!r}: letters, digits, '-', '_' and '.' only")
    if version < 1:
        raise InputError(f"version: expected a positive integer, got {version}")
    graph = _graph(source)
    if graph["input"]["dims"][0] != -1:
        raise ModelFileError(f"{source}: the batch dimension is fixed ({graph['input']['dims'][0]}); Triton's "
                             "dynamic batching needs it free (arnas-zoo export onnx exports it free)")  # fmt: skip
    folder = Path(repository) / name
    if folder.exists():
        raise InputError(f"{folder}: already exists; choose another --name or repository")
    (folder / str(version)).mkdir(parents=True)
    target = folder / str(version) / "model.onnx"
    shutil.copyfile(source, target)
    if _sha256(target) != _sha256(source):
        raise ModelFileError(f"{target}: the copy differs from {source}")
    names = graph["class_names"]
    labels = bool(names) and len(names) == graph["output"]["dims"][-1]
    if labels:
        (folder / "labels.txt").write_text("".join(f"{n}\n" for n in names))
    (folder / "config.pbtxt").write_text(config_text(name, graph, policy, labels))
    check_repository(Path(repository), only=name)
    return folder


def _model_config() -> Any:
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError as exc:
        raise RepositoryError(f"checking a Triton repository needs tritonclient[grpc] ({exc}); "
                              "pip install 'arnas-zoo-runtime[triton]'") from None  # fmt: skip
    return text_format, model_config_pb2


def check_repository(repository: str | os.PathLike[str], *, only: str | None = None) -> dict[str, Any]:
    """Check every model folder of ``repository`` (or the one named ``only``) as Triton loads it; returns
    ``{name: the parsed config as a dict}``; raises :class:`RepositoryError` listing every problem."""
    text_format, pb = _model_config()
    from google.protobuf.json_format import MessageToDict

    root = Path(repository)
    if not root.is_dir():
        raise RepositoryError(f"{root}: no such model repository folder")
    folders = [root / only] if only else sorted(p for p in root.iterdir() if p.is_dir())
    if not folders or not folders[0].is_dir():
        raise RepositoryError(f"{root}: no model folder{f' named {only!r}' if only else 's'}")
    problems: list[str] = []
    parsed: dict[str, Any] = {}
    for folder in folders:
        config = pb.ModelConfig()
        try:
            text_format.Parse((folder / "config.pbtxt").read_text(), config)
        except (OSError, text_format.ParseError) as exc:
            problems.append(f"{folder.name}/config.pbtxt: {exc}")
            continue
        problems += [f"{folder.name}: {p}" for p in _problems(folder, config, pb)]
        parsed[folder.name] = MessageToDict(config, preserving_proto_field_name=True)
    if problems:
        raise RepositoryError("; ".join(problems))
    return parsed


def _problems(folder: Path, config: Any, pb: Any) -> list[str]:
    found = []
    if config.name != folder.name:
        found.append(f"name {config.name!r} is not the folder's name")
    if config.platform != PLATFORM and config.backend != "onnxruntime":
        found.append(f"platform {config.platform!r}: expected {PLATFORM!r}")
    versions = sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) > 0)
    if not versions:
        return [*found, "no version folder (1/, 2/, ...)"]
    model = folder / str(versions[-1]) / (config.default_model_filename or "model.onnx")
    if not model.is_file():
        return [*found, f"{model.relative_to(folder)}: missing"]
    graph = _graph(model)
    batched = config.max_batch_size > 0
    if batched and graph["input"]["dims"][0] != -1:
        found.append("max_batch_size > 0 but the model's batch dimension is fixed")
    for role, declared, actual in (("input", config.input, graph["input"]), ("output", config.output, graph["output"])):
        if len(declared) != 1:
            found.append(f"expected one {role}, the config declares {len(declared)}")
            continue
        entry = declared[0]
        want = actual["dims"][1:] if batched else actual["dims"]
        if entry.name != actual["name"]:
            found.append(f"{role} {entry.name!r}: the model's {role} is {actual['name']!r}")
        if pb.DataType.Name(entry.data_type) != actual["type"]:
            found.append(f"{role} {entry.name}: {pb.DataType.Name(entry.data_type)}, the model has {actual['type']}")
        if list(entry.dims) != want:
            found.append(f"{role} {entry.name}: dims {list(entry.dims)}, the model has {want}")
        if role == "output" and entry.label_filename:
            labels = folder / entry.label_filename
            count = len(labels.read_text().splitlines()) if labels.is_file() else None
            if count != actual["dims"][-1]:
                found.append(f"{entry.label_filename}: {count} labels for {actual['dims'][-1]} classes")
    if config.HasField("dynamic_batching"):
        if not batched:
            found.append("dynamic_batching needs max_batch_size > 0")
        wrong = [p for p in config.dynamic_batching.preferred_batch_size if not 1 <= p <= config.max_batch_size]
        if wrong:
            found.append(f"preferred_batch_size {wrong} outside 1..{config.max_batch_size}")
    return found
