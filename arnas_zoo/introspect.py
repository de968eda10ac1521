"""Summaries of architectures for people and for scripts (``arnas-zoo info`` / ``list``)."""

from __future__ import annotations

from typing import Any

from arnas_zoo.network import ModelConfig, build_model
from arnas_zoo.registry import list_archs, resolve_config
from arnas_zoo.stats import model_stats


def summarize_config(config: ModelConfig) -> dict[str, Any]:
    """Structure and statistics of ``config``'s network as one JSON-able object."""
    model = build_model(config)
    stats = model_stats(model, (config.in_channels, config.input_size, config.input_size))
    summary: dict[str, Any] = {
        "name": config.name,
        "arch": config.arch,
        "space": config.genotype.space if config.genotype is not None else "hand-crafted",
        **stats.to_dict(),
        "layers": config.layers,
        "init_channels": config.init_channels,
        "num_classes": config.num_classes,
        "input_shape": [config.in_channels, config.input_size, config.input_size],
    }
    if config.genotype is not None:
        summary.update(
            cell_types=config.layer_cell_types(),
            reduction_layers=list(config.reduction_layers()),
            channels=config.layer_channels(),
            placement=list(config.placement),
            filter_multipliers=list(config.filter_multipliers),
            auxiliary_layer=config.auxiliary_layer if config.auxiliary else None,
            genotype=config.genotype.to_dict(),
        )
    else:
        summary["cell_types"] = []
    return summary


def describe(target: str, **overrides: Any) -> dict[str, Any]:
    return summarize_config(resolve_config(target, **overrides))


def format_summary(summary: dict[str, Any]) -> str:
    lines = [
        f"{summary['name'] or '(unnamed)'}  arch={summary['arch']}  space={summary['space']}",
        f"  input {tuple(summary['input_shape'])}, {summary['num_classes']} classes",
        f"  params {summary['params'] / 1e6:.4f}M (with auxiliary head {summary['params_with_aux'] / 1e6:.4f}M)",
        f"  FLOPs (ARNAS paper convention) {summary['flops_paper'] / 1e6:.2f}M; conv+linear MACs {summary['macs'] / 1e6:.2f}M",
    ]
    if summary.get("genotype"):
        lines.append(
            f"  {summary['layers']} cells, C={summary['init_channels']}, placement {'-'.join(summary['placement'])}, "
            f"filters {'-'.join(map(str, summary['filter_multipliers']))}, reductions at {summary['reduction_layers']}"
        )
        runs: list[str] = []
        start = 0
        types = summary["cell_types"]
        for i in range(1, len(types) + 1):
            if i == len(types) or types[i] != types[start] or summary["channels"][i] != summary["channels"][start]:
                span = f"{start}" if i - 1 == start else f"{start}-{i - 1}"
                runs.append(f"{span}: {types[start]} (C={summary['channels'][start]})")
                start = i
        lines.append("  cells " + "; ".join(runs))
        if summary.get("auxiliary_layer") is not None:
            lines.append(f"  auxiliary head after cell {summary['auxiliary_layer']} (training only)")
    return "\n".join(lines)


def architecture_table() -> list[dict[str, Any]]:
    rows = []
    for spec in list_archs():
        model = build_model(spec.config)
        stats = model_stats(model, (3, 32, 32))
        rows.append({"name": spec.name, "space": spec.space, "paper": spec.paper, **stats.to_dict()})
    return rows
