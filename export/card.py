"""Model cards (README.md with YAML metadata) generated from a checkpoint folder.

Everything in the card comes from the folder: config.json (architecture, genotype, threat model),
metrics.json (clean and robust accuracy with every attack's settings, the data the figures were
measured on, the training recipe when training recorded it) and onnx.json (the ONNX parity check).
Nothing is typed in by hand, so the card cannot disagree with the weights it describes.

The genotype picture is a Mermaid flowchart per cell type, which the Hub renders inline.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from arnas_zoo.checkpoint import read_config, read_metrics
from arnas_zoo.genotype import Genotype
from arnas_zoo.network import ModelConfig
from arnas_zoo.stats import model_stats

LIBRARY_NAME = "arnas-zoo"
GENOTYPE_PICTURE = "genotype.png"  # written by export.hub_publish.build_hub_folder (arnas_zoo.draw)
LAYOUT_PICTURE = "layout.png"
_ACCURACY_KEYS = ("robust_accuracy", "accuracy", "clean_accuracy")
_ARGS = ("eps", "norm", "steps", "restarts", "n", "version")  # attack settings kept in model-index
_DATA_KEYS = ("data", "dataset", "test_data", "evaluation_data")
_RECIPE_KEYS = ("training", "train", "recipe", "training_recipe")


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))  # a JSON string is a valid YAML double-quoted scalar


def _yaml(value: Any, indent: int = 0) -> list[str]:
    """A tiny YAML emitter for dicts/lists/scalars (no PyYAML dependency for the library)."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(item, (Mapping, list)) and item:
                lines.append(f"{pad}{key}:")
                lines.extend(_yaml(item, indent + 2))
            else:
                lines.append(f"{pad}{key}: {_yaml_scalar(item) if not isinstance(item, (Mapping, list)) else '[]'}")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, (Mapping, list)):
                sub = _yaml(item, indent + 2)
                lines.append(f"{pad}- {sub[0].strip()}")
                lines.extend(sub[1:])
            else:
                lines.append(f"{pad}- {_yaml_scalar(item)}")
    else:
        lines.append(f"{pad}{_yaml_scalar(value)}")
    return lines


_NOT_SETTINGS = {
    "name",
    "attack",
    "seconds",
    "forward_passes_per_image",
    "backward_passes_per_image",
    "max_perturbation",
    "out_of_box",
    "correct",
}


def _row(node: Mapping[str, Any], key: str, default_name: str) -> dict[str, Any]:
    settings = {
        k: v
        for k, v in node.items()
        if k not in _ACCURACY_KEYS and k not in _NOT_SETTINGS and isinstance(v, (str, int, float, bool))
    }
    name = str(node.get("attack") or node.get("name") or default_name)
    attacked = str(node.get("attack", "none")).lower() not in ("none", "clean", "")
    kind = "robust" if key == "robust_accuracy" or attacked else "clean"
    return {"name": name, "value": float(node[key]), "kind": kind, "settings": settings}


def iter_results(metrics: Mapping[str, Any] | None) -> Iterator[dict[str, Any]]:
    """Every evaluation row in metrics.json: clean accuracy and each attack, with its settings.

    Reads the evaluation report's layout (``clean_accuracy``, ``results: [{attack, norm, eps, steps,
    restarts, n, robust_accuracy, ...}]``, ``worst_case_accuracy``) and, tolerantly, other layouts
    (a dict of attacks, a list under ``attacks``, nested groups). Each row has ``name``, ``value``
    (fraction in [0, 1]), ``kind`` (clean or robust) and ``settings`` (eps, norm, steps, restarts,
    step size, n, seed, ...; bookkeeping such as timings is left out).
    """
    if not metrics:
        return
    n = (metrics.get("data") or {}).get("n") if isinstance(metrics.get("data"), Mapping) else None
    if isinstance(metrics.get("clean_accuracy"), (int, float)):
        yield {
            "name": "clean",
            "value": float(metrics["clean_accuracy"]),
            "kind": "clean",
            "settings": {"n": n} if n is not None else {},
        }

    def walk(node: Any, name: str) -> Iterator[dict[str, Any]]:
        if isinstance(node, Mapping):
            key = next((k for k in _ACCURACY_KEYS if isinstance(node.get(k), (int, float))), None)
            if key is not None:
                yield _row(node, key, name or key)
                return
            for sub_key, item in node.items():
                if sub_key in _DATA_KEYS or sub_key in _RECIPE_KEYS:
                    continue
                grouping = sub_key in ("attacks", "results")
                yield from walk(item, name if grouping else (f"{name}.{sub_key}" if name else sub_key))
        elif isinstance(node, list):
            for item in node:
                yield from walk(item, name)

    for key, value in metrics.items():
        if key in _DATA_KEYS or key in _RECIPE_KEYS or key in ("model", "threat_model", "sanity_checks"):
            continue
        if isinstance(value, (Mapping, list)):
            yield from walk(value, "" if key in ("attacks", "results") else key)
    if isinstance(metrics.get("worst_case_accuracy"), (int, float)):
        yield {
            "name": "worst case over all attacks (per image)",
            "value": float(metrics["worst_case_accuracy"]),
            "kind": "robust",
            "settings": {"n": n} if n is not None else {},
        }


def data_info(metrics: Mapping[str, Any] | None, config: ModelConfig) -> dict[str, Any]:
    """Where the reported figures were measured (dataset, split, subset, n), from metrics.json."""
    info: dict[str, Any] = {}
    for key in _DATA_KEYS:
        value = (metrics or {}).get(key)
        if isinstance(value, Mapping):
            info.update(value)
        elif isinstance(value, str):
            info.setdefault("dataset", value)
    extra = dict(config.extra or {})
    if "dataset" not in info and isinstance(extra.get("dataset"), str):
        info["dataset"] = extra["dataset"]
    return info


def recipe_info(metrics: Mapping[str, Any] | None, config: ModelConfig) -> dict[str, Any]:
    """The training record (metrics.json ``training``, or config.json ``extra``), nested keys flattened
    to ``parent.child`` so the card's table stays two columns."""

    def flatten(record: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
        flat: dict[str, Any] = {}
        for key, value in record.items():
            if isinstance(value, Mapping):
                flat.update(flatten(value, f"{prefix}{key}."))
            else:
                flat[f"{prefix}{key}"] = value
        return flat

    for source in (metrics or {}, dict(config.extra or {})):
        for key in _RECIPE_KEYS:
            if isinstance(source.get(key), Mapping):
                return flatten(source[key])
    return {}


def genotype_mermaid(genotype: Genotype) -> str:
    """One Mermaid flowchart per cell type: inputs c_{k-2}, c_{k-1}, intermediate nodes, output."""
    blocks = []
    for index, (cell_name, cell) in enumerate(genotype.cells.items()):
        prefix = f"c{index}"  # node ids must be unique across cells; names may share prefixes
        lines = ["```mermaid", "flowchart LR", f"  subgraph {prefix}_cell[{cell_name} cell]"]
        lines.append(f'    {prefix}_in0(["c_(k-2)"])')
        lines.append(f'    {prefix}_in1(["c_(k-1)"])')
        for k, node in enumerate(cell.nodes):
            lines.append(f"    {prefix}_n{k}(({k}))")
            for edge in node:
                source = f"{prefix}_in{edge.input}" if edge.input < 2 else f"{prefix}_n{edge.input - 2}"
                lines.append(f"    {source} -- {edge.op} --> {prefix}_n{k}")
        lines.append(f'    {prefix}_out(["c_(k)"])')
        for state in cell.concat:
            source = f"{prefix}_in{state}" if state < 2 else f"{prefix}_n{state - 2}"
            lines.append(f"    {source} --> {prefix}_out")
        lines.extend(["  end", "```"])
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _percent(value: float) -> str:
    return f"{100 * value:.2f}%"


def _settings_text(settings: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items() if k not in ("name",)) or "-"


def card_metadata(
    config: ModelConfig, metrics: Mapping[str, Any] | None, model_name: str, license: str = "mit"
) -> dict[str, Any]:
    """The YAML header: library_name, tags, datasets, license and model-index results."""
    data = data_info(metrics, config)
    dataset = str(data.get("dataset", "unknown"))
    tags = ["image-classification", "adversarial-robustness", "adversarial-training", "safetensors", "pytorch"]
    if config.genotype is not None:
        tags += ["neural-architecture-search", f"search-space-{config.genotype.space}"]
    if config.threat_model:
        tags.append(f"threat-model-{config.threat_model}")
    metadata: dict[str, Any] = {
        "library_name": LIBRARY_NAME,
        "license": license,
        "pipeline_tag": "image-classification",
        "tags": tags,
        "datasets": [dataset] if dataset != "unknown" else [],
    }
    rows = list(iter_results(metrics))
    if rows:
        split = data.get("split")
        dataset_entry: dict[str, Any] = {"name": dataset, "type": dataset}
        if split:
            dataset_entry["split"] = str(split)
        metadata["model-index"] = [
            {
                "name": model_name,
                "results": [
                    {
                        "task": {"type": "image-classification", "name": "Image Classification"},
                        "dataset": dataset_entry,
                        "metrics": [
                            {
                                "type": "robust_accuracy" if row["kind"] == "robust" else "accuracy",
                                "name": row["name"] if row["kind"] == "robust" else "clean accuracy",
                                "value": round(100 * row["value"], 2),
                                "args": {k: v for k, v in row["settings"].items() if k in _ARGS} or None,
                            }
                            for row in rows
                        ],
                    }
                ],
            }
        ]
        for metric in metadata["model-index"][0]["results"][0]["metrics"]:
            if metric["args"] is None:
                del metric["args"]
    return metadata


def render_card(folder: str | Path, repo_id: str | None = None, license: str = "mit") -> str:
    """The README.md model card of checkpoint ``folder`` (YAML metadata + body)."""
    folder = Path(folder)
    config = read_config(folder)
    metrics = read_metrics(folder)
    onnx_record_path = folder / "onnx.json"
    onnx_records = json.loads(onnx_record_path.read_text()) if onnx_record_path.is_file() else {}
    onnx_record = onnx_records.get("model.onnx") if (folder / "model.onnx").is_file() else None
    model_name = repo_id.split("/")[-1] if repo_id else (config.name or folder.name)
    header = card_metadata(config, metrics, model_name, license=license)
    data = data_info(metrics, config)
    recipe = recipe_info(metrics, config)
    rows = list(iter_results(metrics))
    from arnas_zoo.network import build_model  # stats need the module itself

    stats = model_stats(build_model(config), (config.in_channels, config.input_size, config.input_size))
    load_id = repo_id or f"./{folder.name}"
    threat = f"{config.threat_model} (eps = {config.eps})" if config.threat_model else "not recorded"
    body = [
        f"# {model_name}",
        "",
        f"An adversarially trained {'NAS cell network' if config.genotype is not None else config.arch} "
        f"from the arnas-zoo model zoo, trained against the {threat} threat model.",
        "",
        "```python",
        "import arnas_zoo",
        f'model = arnas_zoo.load("{load_id}")   # eval mode; inputs are [0, 1] NCHW, normalization is inside',
        "logits = model(images)",
        "```",
        "",
        "## Architecture",
        "",
        "| field | value |",
        "|---|---|",
        f"| architecture | {config.name or config.arch} ({config.arch}) |",
        f"| input | {config.in_channels} x {config.input_size} x {config.input_size}, pixels in [0, 1] |",
        f"| classes | {config.num_classes} |",
        f"| parameters | {stats.params / 1e6:.3f} M |",
        f"| MACs per image | {stats.macs / 1e6:.1f} M |",
    ]
    if config.genotype is not None:
        body += [
            f"| cells | {config.layers} ({', '.join(config.placement)} stages, {config.init_channels} initial channels) |",
            f"| search space | {config.genotype.space} |",
            "",
            "### Genotype",
            "",
        ]
        if (folder / GENOTYPE_PICTURE).is_file():
            body += [f"![cells of the genotype]({GENOTYPE_PICTURE})", ""]
        else:  # no picture file beside the card: a diagram the Hub renders from text
            body += [genotype_mermaid(config.genotype), ""]
        if (folder / LAYOUT_PICTURE).is_file():
            body += [f"![cell types through the network]({LAYOUT_PICTURE})", ""]
        body += [
            "```text",
            config.genotype.pretty(),
            "```",
        ]
    body += ["", "## Training recipe", ""]
    if recipe:
        body += ["| setting | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in recipe.items()]
    else:
        body += ["The checkpoint's metrics.json does not record the training recipe."]
    body += ["", "## Evaluation", ""]
    if data:
        body += ["Measured on: " + ", ".join(f"{k} = {v}" for k, v in data.items()) + ".", ""]
    if rows:
        body += ["| evaluation | accuracy | settings |", "|---|---|---|"]
        body += [f"| {row['name']} | {_percent(row['value'])} | {_settings_text(row['settings'])} |" for row in rows]
    else:
        body += ["No evaluation results are recorded in metrics.json: the robustness of these weights is unknown."]
    checks = (metrics or {}).get("sanity_checks")
    if isinstance(checks, list) and checks:
        failed = [c.get("name") for c in checks if isinstance(c, Mapping) and c.get("passed") is False]
        ran = [c for c in checks if isinstance(c, Mapping) and c.get("passed") is not None]
        body += [
            "",
            f"Sanity checks against gradient masking (Carlini et al., 2019): {len(ran)} run, "
            + (f"FAILED: {', '.join(map(str, failed))}." if failed else "all passed."),
        ]
    if onnx_record is not None:
        parity = onnx_record.get("parity", {})
        body += [
            "",
            "## ONNX",
            "",
            f"`model.onnx` (opset {onnx_record.get('opset')}, {parity.get('dtype', 'float32')}, dynamic batch) was exported "
            f"with {onnx_record.get('exporter')} and checked against PyTorch on {parity.get('n')} real images "
            f"({parity.get('images')}): max |ONNX Runtime - PyTorch| = {parity.get('max_abs_diff', float('nan')):.2e}, "
            f"top-1 agreement {parity.get('top1_agreement', float('nan')):.3f}.",
        ]
    dataset = data.get("dataset", "its training data")
    body += [
        "",
        "## Limitations",
        "",
        f"- Robustness is claimed only for the threat model above ({threat}) on {dataset}; other norms, larger "
        "budgets, corruptions and distribution shift are untested.",
        "- Figures measured on a subset (see *Measured on*) carry sampling error (a 95% interval of about "
        "+-2 * sqrt(p(1-p)/n)); they are not leaderboard figures on the full test set.",
        "- Robust accuracy under the attacks listed is an upper bound on true robustness; stronger or adaptive attacks "
        "may lower it.",
        "- Inputs must be float images in [0, 1] of the listed size; the model normalizes internally.",
        "",
        "## Citation",
        "",
        "Yuwei Ou, Yuqi Feng, Yanan Sun. *Towards Accurate and Robust Architectures via Neural Architecture Search*. "
        "CVPR 2024 (ARNAS).",
    ]
    yaml_lines = _yaml(header)
    return "---\n" + "\n".join(yaml_lines) + "\n---\n\n" + "\n".join(body) + "\n"


# ---- the zoo's card (MODEL_CARD.md at the repository root) -----------------------------------------
ZOO_CARD_FILE = "MODEL_CARD.md"


def _entry_rows(spec: Any) -> tuple[str, list[str]]:
    """Registry table row and evaluation lines of one pretrained entry (metrics read when bundled)."""
    metrics = None
    if spec.folder is not None and spec.bundled_path().is_dir():
        metrics = read_metrics(spec.bundled_path())
    row = (
        f"| `{spec.name}` | {spec.arch} | {spec.dataset} | {spec.threat_model} | {spec.eps:.4g} | "
        f"{spec.source} | `{spec.sha256[:12]}` | {spec.description} |"
    )
    lines = [
        f"- `{spec.name}`: {result['name']} {_percent(result['value'])} ({_settings_text(result['settings'])})"
        for result in iter_results(metrics)
    ]
    return row, lines


def render_zoo_card(specs: list[Any]) -> str:
    """MODEL_CARD.md: the zoo's card, generated from the pretrained registry (``specs``).

    Kept in step with :mod:`arnas_zoo.pretrained` by ``python -m export zoo-card`` and checked by
    ``tests/test_hub_registry.py``; evaluation figures come from each bundled entry's metrics.json.
    """
    rows = [_entry_rows(spec) for spec in specs]
    out = [
        "# arnas-zoo model card",
        "",
        "<!-- Generated by `python -m export zoo-card` from arnas_zoo/pretrained.py; do not edit by hand. -->",
        "",
        "The card of the arnas-zoo model zoo: adversarially robust image classifiers whose architectures were found by",
        "neural architecture search (ARNAS, Ou et al., CVPR 2024, and its peers), with one-call loading",
        "(`arnas_zoo.load(name)`) and ONNX deployment. Each published checkpoint also has its own card (README.md on the",
        "Hub), generated from its config.json and metrics.json by `python -m export hub`.",
        "",
        "## Models",
        "",
    ]
    if rows:
        out += [
            "| name | architecture | data | threat model | eps | source | sha256 | description |",
            "|---|---|---|---|---|---|---|---|",
        ] + [row for row, _ in rows]
    else:
        out += [
            "No pretrained weights are registered yet: `arnas_zoo.load` works with your own checkpoint folders and Hub",
            "repositories, and `arnas_zoo.create_model(arch)` builds every registered architecture with random weights.",
        ]
    out += [
        "",
        "Every entry is pinned: a bundled folder inside the package or a Hub commit, and the sha256 of its",
        "model.safetensors, checked on every load.",
        "",
        "## Data",
        "",
        "Checkpoints name their training data and subset in their own card. The offline data of this project are",
        "subsets of the official MNIST, CIFAR-10 and CIFAR-100 files (unmodified images; see `../shared/data/README.md`).",
        "CIFAR-10 test images are held out; CIFAR-10 figures are measured on a validation split carved from the training",
        "subset, and every figure states which.",
        "",
        "## Training",
        "",
        "Adversarial training (PGD) with the recipe recorded in each checkpoint's metrics.json; the ARNAS paper's recipe",
        "is SGD (lr 0.1, momentum 0.9, weight decay 1e-4), PGD-7 training attack at eps 8/255 on CIFAR-10.",
        "",
        "## Evaluation protocol and results",
        "",
        "Robust accuracy per attack (FGSM, PGD-k with random start, AutoAttack from the authors' reference",
        "implementation), with eps, norm, steps, restarts, the number and identity of the test points, seed and device",
        "recorded next to each figure. The deployed ONNX file of a model is checked separately: parity with PyTorch on",
        "real images at export, and `arnas-zoo check` (Square against ONNX Runtime, transfer from the PyTorch twin).",
        "",
    ]
    results = [line for _, lines in rows for line in lines]
    out += results if results else ["No evaluated checkpoint is registered yet."]
    out += [
        "",
        "## Limitations",
        "",
        "- Robustness holds only for the threat model and budget a checkpoint was trained and evaluated for; other norms,",
        "  larger budgets, natural corruptions and distribution shift are not covered.",
        "- Figures on data subsets carry sampling error and are not leaderboard figures on the full test sets.",
        "- Attack-based robust accuracy is an upper bound on true robustness; adaptive attacks may lower it.",
        "",
        "## Intended and out-of-scope use",
        "",
        "Intended: research on robust architectures and adversarial training, reproducing the papers' protocols,",
        "benchmarking attacks and deployment (ONNX) of robust models. Out of scope: security-critical decisions on the",
        "strength of these figures alone, inputs unlike the training data (other resolutions, domains), and any claim of",
        "certified robustness.",
        "",
        "## How to cite",
        "",
        "Yuwei Ou, Yuqi Feng, Yanan Sun. Towards Accurate and Robust Architectures via Neural Architecture Search.",
        "CVPR 2024.",
        "",
    ]
    return "\n".join(out)
