"""Model cards, generated from a checkpoint folder through ``huggingface_hub``'s card types.

Everything in a card comes from the folder: ``config.json`` (architecture, genotype, threat model),
``metrics.json`` read as a typed :class:`~arnas_zoo.evaluate.EvaluationReport` (each attack's
robust accuracy with its settings, the points it was measured on, the sanity checks; the training
record) and ``onnx.json`` (the ONNX parity check). Nothing is typed in by hand, so a card cannot
disagree with the weights it describes. The metadata header (``model-index``) is built with
:class:`huggingface_hub.ModelCardData` and :class:`huggingface_hub.EvalResult`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from arnas_zoo.checkpoint import read_config, read_metrics
from arnas_zoo.config import ModelConfig
from arnas_zoo.evaluate.report import EvaluationReport
from arnas_zoo.figures import Figures, attack_label, figures_from_metrics, wilson_interval
from arnas_zoo.figures import count as _count
from arnas_zoo.figures import eps_text as _eps_text
from arnas_zoo.figures import percent as _pct
from arnas_zoo.genotype import Genotype

LIBRARY_NAME = "arnas-zoo"
GENOTYPE_PICTURE = "genotype.png"  # written by export.hub_publish.build_hub_folder (arnas_zoo.draw)
LAYOUT_PICTURE = "layout.png"
ZOO_CARD_FILE = "MODEL_CARD.md"


def read_evaluation(metrics: Mapping[str, Any] | None, where: str = "metrics.json") -> EvaluationReport | None:
    """The folder's evaluation report, or None when metrics.json records no evaluation (training only)."""
    if not metrics or "results" not in metrics:
        return None
    return EvaluationReport.from_metrics(dict(metrics), where)


def _flatten(record: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def training_record(metrics: Mapping[str, Any] | None) -> dict[str, Any]:
    """The training record of metrics.json, nested keys flattened to ``parent.child`` (a two-column table)."""
    record = (metrics or {}).get("training")
    return _flatten(record) if isinstance(record, Mapping) else {}


def result_rows(report: EvaluationReport) -> list[dict[str, Any]]:
    """Clean accuracy, each attack and the per-point worst case, each with its settings."""
    n = report.data.get("n")
    rows = [{"name": "clean", "value": report.clean_accuracy, "kind": "accuracy", "settings": {"n": n}}]
    for r in report.results:
        settings = {
            "norm": r.norm,
            "eps": round(r.eps, 6),
            "steps": r.steps,
            "restarts": r.restarts,
            "n": r.n,
            "loss": r.loss,
            "step_size": None if r.step_size is None else round(r.step_size, 6),
            "version": r.version,
            "source": r.source,
        }
        rows.append(
            {
                "name": r.attack,
                "value": r.robust_accuracy,
                "kind": "robust_accuracy",
                "settings": {k: v for k, v in settings.items() if v is not None},
            }
        )
    rows.append(
        {
            "name": "worst case over all attacks (per point)",
            "value": report.worst_case_accuracy,
            "kind": "robust_accuracy",
            "settings": {"n": n},
        }
    )
    return rows


def genotype_mermaid(genotype: Genotype) -> str:
    """One Mermaid flowchart per cell type: inputs c_{k-2}, c_{k-1}, intermediate nodes, output."""
    blocks = []
    for index, (cell_name, cell) in enumerate(genotype.cells.items()):
        prefix = f"c{index}"  # node ids must be unique across cells; names may share prefixes
        lines = ["```mermaid", "flowchart LR", f"  subgraph {prefix}_cell[{cell_name} cell]"]
        lines += [f'    {prefix}_in0(["c_(k-2)"])', f'    {prefix}_in1(["c_(k-1)"])']
        for k, node in enumerate(cell.nodes):
            lines.append(f"    {prefix}_n{k}(({k}))")
            for edge in node:
                source = f"{prefix}_in{edge.input}" if edge.input < 2 else f"{prefix}_n{edge.input - 2}"
                lines.append(f"    {source} -- {edge.op} --> {prefix}_n{k}")
        lines.append(f'    {prefix}_out(["c_(k)"])')
        for state in cell.concat:
            source = f"{prefix}_in{state}" if state < 2 else f"{prefix}_n{state - 2}"
            lines.append(f"    {source} --> {prefix}_out")
        lines += ["  end", "```"]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _percent(value: float) -> str:
    return f"{100 * value:.2f}%"


def _settings_text(settings: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items()) or "-"


def _dataset_of(report: EvaluationReport | None, config: ModelConfig, metrics: Mapping[str, Any] | None) -> str:
    if report is not None and report.data.get("dataset"):
        return str(report.data["dataset"])
    train_data = ((metrics or {}).get("training") or {}).get("train_data") or {}
    return str(dict(config.extra or {}).get("dataset") or train_data.get("dataset") or "unknown")


def card_data(config: ModelConfig, metrics: Mapping[str, Any] | None, model_name: str, license: str = "mit") -> Any:
    """The card's metadata as :class:`huggingface_hub.ModelCardData` (tags, datasets, model-index)."""
    from huggingface_hub import EvalResult, ModelCardData

    report = read_evaluation(metrics)
    dataset = _dataset_of(report, config, metrics)
    tags = ["image-classification", "adversarial-robustness", "adversarial-training", "safetensors", "pytorch"]
    if config.genotype is not None:
        tags += ["neural-architecture-search", f"search-space-{config.genotype.space}"]
    if config.threat_model:
        tags.append(f"threat-model-{config.threat_model}")
    results = []
    for row in result_rows(report) if report is not None else []:
        args = {k: v for k, v in row["settings"].items() if k in ("eps", "norm", "steps", "restarts", "n", "version")}
        results.append(
            EvalResult(
                task_type="image-classification",
                task_name="Image Classification",
                dataset_type=dataset,
                dataset_name=dataset,
                dataset_split=str(report.data.get("split")) if report else None,
                metric_type=row["kind"],
                metric_name=row["name"],
                metric_value=round(100 * row["value"], 2),
                metric_args=args or None,
            )
        )
    return ModelCardData(
        library_name=LIBRARY_NAME,
        license=license,
        pipeline_tag="image-classification",
        tags=tags,
        datasets=[dataset] if dataset != "unknown" else None,
        model_name=model_name,
        eval_results=results or None,
    )


def _architecture_section(folder: Path, config: ModelConfig) -> list[str]:
    from arnas_zoo.introspect import compute_stats

    stats = compute_stats(config)
    body = [
        "## Architecture",
        "",
        "| field | value |",
        "|---|---|",
        f"| architecture | {config.name or config.arch} ({config.arch}) |",
        f"| input | {config.in_channels} x {config.input_size} x {config.input_size}, pixels in [0, 1] |",
        f"| classes | {config.num_classes} |",
        f"| parameters | {stats['params'] / 1e6:.3f} M |",
        f"| MACs per image | {stats['macs'] / 1e6:.1f} M |",
    ]
    if config.genotype is None:
        return body
    body += [
        f"| cells | {config.layers} ({', '.join(config.placement)} stages, {config.init_channels} initial channels) |",
        f"| search space | {config.genotype.space} |",
        "",
        "### Genotype",
        "",
    ]
    if (folder / GENOTYPE_PICTURE).is_file():
        body += [f"![cells of the genotype]({GENOTYPE_PICTURE})", ""]
    else:  # no picture beside the card: a diagram the Hub renders from text
        body += [genotype_mermaid(config.genotype), ""]
    if (folder / LAYOUT_PICTURE).is_file():
        body += [f"![cell types through the network]({LAYOUT_PICTURE})", ""]
    return body + ["```text", config.genotype.pretty(), "```"]


def figures_table(figures: Figures) -> list[str]:
    """The card's figures as a markdown table: one row per evaluation, its settings and 95% interval."""
    lines = [
        "| evaluation | n | eps | steps | restarts | accuracy | 95% interval |",
        "|---|---:|---|---:|---:|---:|---|",
    ]

    def row(name: str, n: int, eps: str, steps: Any, restarts: Any, value: float) -> str:
        low, high = wilson_interval(value, n)
        return (
            f"| {name} | {n} | {eps} | {'-' if steps is None else steps} | {'-' if restarts is None else restarts} "
            f"| {100 * value:.1f}% | {100 * low:.1f}-{100 * high:.1f} |"
        )

    lines.append(row("clean", figures.n, "-", None, None, figures.clean))
    for a in figures.attacks:
        name = attack_label(a.attack)
        lines.append(row(name, a.n, f"{a.norm or ''} {_eps_text(a.eps)}".strip(), a.steps, a.restarts, a.accuracy))
    lines.append(row("worst case over all attacks (per point)", figures.n, "-", None, None, figures.worst_case))
    return lines


def _evaluation_section(report: EvaluationReport | None, metrics: Mapping[str, Any] | None) -> list[str]:
    body = ["", "## Evaluation", ""]
    figures = figures_from_metrics(metrics)
    if report is None or figures is None:
        return body + ["No evaluation is recorded in metrics.json: the robustness of these weights is unknown."]
    body += [
        f"- Data: {figures.data_line}; seed {figures.seed}.",
        f"- Selection: {figures.selection_line}.",
        "- Robust accuracy counts a point only if it is classified correctly on the clean input *and* on the "
        "attack's adversarial input; the interval is the 95% Wilson score interval over the n points.",
        "",
        *figures_table(figures),
    ]
    ran = [c for c in report.checks if c.passed is not None]
    if ran:
        failed = report.failed_checks
        verdict = f"FAILED: {', '.join(failed)}." if failed else "all passed."
        body += ["", f"Sanity checks against gradient masking (Carlini et al., 2019): {len(ran)} run, {verdict}"]
    else:
        body += ["", "No sanity checks against gradient masking were run on these figures."]
    body += [
        "",
        f"Measured on {report.device}; versions {report.environment.get('versions', 'not recorded')}.",
    ]
    return body


def _description(load_name: str | None) -> list[str]:
    from arnas_zoo.pretrained import get_pretrained, is_pretrained

    if not load_name or not is_pretrained(load_name):
        return []
    entry = get_pretrained(load_name)
    superseded = f" Superseded by `{entry.superseded_by}`." if entry.superseded_by else ""
    return [entry.description + superseded, ""]


def _onnx_section(folder: Path) -> list[str]:
    record_path = folder / "onnx.json"
    if not (folder / "model.onnx").is_file() or not record_path.is_file():
        return []
    record = json.loads(record_path.read_text()).get("model.onnx") or {}
    parity = record.get("parity", {})
    return [
        "",
        "## ONNX",
        "",
        f"`model.onnx` (opset {record.get('opset')}, {parity.get('dtype', 'float32')}, dynamic batch) was exported "
        f"with {record.get('exporter')} and checked against PyTorch on {parity.get('n')} real images "
        f"({parity.get('images')}): max |ONNX Runtime - PyTorch| = {parity.get('max_abs_diff', float('nan')):.2e}, "
        f"top-1 agreement {parity.get('top1_agreement', float('nan')):.3f}.",
    ]


def render_card(
    folder: str | Path, repo_id: str | None = None, license: str = "mit", load_name: str | None = None
) -> str:
    """The README.md model card of checkpoint ``folder`` (YAML metadata + body).

    ``load_name`` is the name users load it by (a zoo name) when the folder has no Hub repo; a zoo
    name also brings the registry entry's description into the card.
    """
    from huggingface_hub import ModelCard

    folder = Path(folder)
    config = read_config(folder)
    metrics = read_metrics(folder)
    report = read_evaluation(metrics, str(folder / "metrics.json"))
    model_name = repo_id.split("/")[-1] if repo_id else (config.name or folder.name)
    threat = f"{config.threat_model} (eps = {_eps_text(config.eps)})" if config.threat_model else "not recorded"
    load_id = repo_id or load_name or f"./{folder.name}"
    if load_name and not repo_id:
        model_name = load_name
    body = [
        f"# {model_name}",
        "",
        f"An adversarially trained {'NAS cell network' if config.genotype is not None else config.arch} "
        f"from the arnas-zoo model zoo, trained against the {threat} threat model.",
        "",
        *_description(load_name),
        "```python",
        "import arnas_zoo",
        f'model = arnas_zoo.load("{load_id}")   # eval mode; inputs are [0, 1] NCHW, normalization is inside',
        "logits = model(images)",
        "```",
        "",
    ]
    body += _architecture_section(folder, config)
    recipe = training_record(metrics)
    body += ["", "## Training recipe", ""]
    body += (
        (["| setting | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in recipe.items()])
        if recipe
        else ["The checkpoint's metrics.json does not record the training recipe."]
    )
    body += _evaluation_section(report, metrics) + _onnx_section(folder)
    dataset = _dataset_of(report, config, metrics)
    body += [
        "",
        "## Limitations",
        "",
        f"- Robustness is claimed only for the threat model above ({threat}) on {dataset}; other norms, larger "
        "budgets, corruptions and distribution shift are untested.",
        "- Figures measured on a subset (see *Data* under Evaluation) carry sampling error (a 95% interval of about "
        "+-2 * sqrt(p(1-p)/n)); they are not leaderboard figures on the full test set.",
        "- Robust accuracy under the attacks listed is an upper bound on true robustness; stronger or adaptive "
        "attacks may lower it.",
        "- Inputs must be float images in [0, 1] of the listed size; the model normalizes internally.",
        "",
        "## Citation",
        "",
        "Yuwei Ou, Yuqi Feng, Yanan Sun. *Towards Accurate and Robust Architectures via Neural Architecture "
        "Search*. CVPR 2024 (ARNAS).",
    ]
    data = card_data(config, metrics, model_name, license=license)
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body) + "\n"))


# ---- the zoo's card (MODEL_CARD.md at the repository root) -----------------------------------------
def _overview_row(spec: Any) -> str:
    f = spec.figures()
    worst = "-"
    if f is not None:
        low, high = wilson_interval(f.worst_case, f.n)
        worst = f"{_pct(f.worst_case)} ({_pct(low)}-{_pct(high)})"
    name = f"[`{spec.name}`](#{_anchor(spec.name)})" + (" (superseded)" if spec.superseded_by else "")
    return (
        f"| {name} | {spec.dataset} | {spec.threat_model} {_eps_text(spec.eps)} | {_pct(f and f.clean)} | "
        f"{_pct(f and f.autoattack)} | {worst} | {f.n if f else '-'} | {_count(spec.params)} | {_count(spec.macs)} |"
    )


def _anchor(name: str) -> str:
    """GitHub's heading anchor for a ``### `name` `` heading (dots dropped)."""
    return "".join(ch for ch in name.lower() if ch.isalnum() or ch in "-_")


def _model_section(spec: Any) -> list[str]:
    """One model's section: what it is, where it lives, and its figures with their protocol."""
    lines = [f"### `{spec.name}`", "", spec.description or "(no description)"]
    if spec.superseded_by:
        lines += ["", f"Superseded by [`{spec.superseded_by}`](#{_anchor(spec.superseded_by)})."]
    lines += [
        "",
        f'- Load: `arnas_zoo.load("{spec.name}")`; source {spec.source}; weights sha256 `{spec.sha256[:12]}`.',
    ]
    f = spec.figures()
    if f is None:
        return [*lines, "- No evaluation recorded.", ""]
    lines += [f"- Data: {f.data_line}; seed {f.seed}.", f"- Selection: {f.selection_line}."]
    lines += [f"- Goal: {text}." for text in spec.goal_claims()]
    checks = (
        "none run"
        if not f.checks_run
        else (
            f"{f.checks_run} run, FAILED: {', '.join(f.checks_failed)}"
            if f.checks_failed
            else f"{f.checks_run} run, all passed"
        )
    )
    lines += [f"- Sanity checks against gradient masking: {checks}.", "", *figures_table(f), ""]
    metrics = read_metrics(spec.bundled_path()) if spec.folder is not None else None
    for c in (metrics or {}).get("certification", []):
        d = c.get("data", {})
        lines.append(
            f"- Certified ({c['method']} bounds, {c['norm']} eps {c['eps']:.4g}; {d.get('dataset')} "
            f"{d.get('split')}, n={c['n']}): {_percent(c['certified_accuracy'])}; mean certified radius "
            f"{c['mean_certified_radius']:.3g} (median {c['median_certified_radius']:.3g}; 0 = not certified even "
            f"at {c['radius_search']['eps_min']:.2g})."
        )
    return [*lines, ""] if metrics and metrics.get("certification") else lines


def _overview_order(spec: Any) -> tuple[Any, ...]:
    f = spec.figures()
    return (spec.dataset, bool(spec.superseded_by), -(f.worst_case if f else -1.0), spec.name)


def render_zoo_card(specs: list[Any]) -> str:
    """MODEL_CARD.md: the zoo's card, generated from the pretrained registry (``specs``).

    Kept in step with ``arnas_zoo/pretrained/index.json`` by ``arnas-zoo export zoo-card`` and checked by
    ``tests/test_hub_registry.py``; evaluation figures come from each bundled entry's metrics.json.
    """
    ordered = sorted(specs, key=_overview_order)
    out = [
        "# arnas-zoo model card",
        "",
        "<!-- Generated by `arnas-zoo export zoo-card` from arnas_zoo/pretrained/index.json; do not edit by hand. -->",
        "",
        "The card of the arnas-zoo model zoo: adversarially robust image classifiers whose architectures were found by",
        "neural architecture search (ARNAS, Ou et al., CVPR 2024, and its peers), with one-call loading",
        "(`arnas_zoo.load(name)`) and ONNX deployment. `arnas-zoo pretrained --sort aa` lists the same models from",
        "the command line, and `arnas-zoo site` writes this table as a web page you can sort and filter.",
        "",
        "## Models",
        "",
    ]
    if ordered:
        out += [
            "By dataset, then worst-case accuracy (best first); superseded models last. Accuracy in %; worst case: a",
            "point counts only if it survives every attack, with its 95% interval; n: evaluation points.",
            "",
            "| model | data | threat, eps | clean | AutoAttack | worst case (95% interval) | n | params | MACs |",
            "|---|---|---|---:|---:|---|---:|---:|---:|",
            *(_overview_row(spec) for spec in ordered),
            "",
            "Every entry is pinned: a bundled folder inside the package or a Hub commit, and the sha256 of its",
            "config.json, model.safetensors and metrics.json, checked on every load.",
        ]
    else:
        out += ["No pretrained weights are registered yet."]
    out += [
        "",
        "## Data and evaluation protocol",
        "",
        "The offline data of this project are subsets of the official MNIST, CIFAR-10 and CIFAR-100 files",
        "(unmodified images). MNIST figures are on the official test split. CIFAR-10's test images are held out",
        "here: CIFAR-10 figures are on genuine validation rows carved from the training file, and each model says",
        "whether those rows also chose its epoch. Robust accuracy per attack (FGSM, PGD-k with random start,",
        "AutoAttack from the authors' reference implementation) counts the points correct on the clean input and",
        "on the adversarial input; eps, norm, steps, restarts, the points and the seed are given with each figure.",
        "",
        "## Each model",
        "",
    ]
    for spec in ordered:
        out += _model_section(spec)
    out += [
        "## Limitations",
        "",
        "- Robustness holds only for the threat model and budget a checkpoint was trained and evaluated for; other",
        "  norms, larger budgets, natural corruptions and distribution shift are not covered.",
        "- Figures on data subsets carry sampling error and are not leaderboard figures on the full test sets.",
        "- Attack-based robust accuracy is an upper bound on true robustness; adaptive attacks may lower it.",
        "",
        "## Intended and out-of-scope use",
        "",
        "Intended: research on robust architectures and adversarial training, reproducing the papers' protocols,",
        "benchmarking attacks and deployment (ONNX) of robust models. Out of scope: security-critical decisions on",
        "the strength of these figures alone, inputs unlike the training data, and claims of certified robustness",
        "beyond what `arnas-zoo certify` computes.",
        "",
        "## How to cite",
        "",
        "Yuwei Ou, Yuqi Feng, Yanan Sun. *Towards Accurate and Robust Architectures via Neural Architecture Search*.",
        "CVPR 2024.",
        "",
    ]
    return "\n".join(out)
