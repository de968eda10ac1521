"""Pictures: a cell of any genotype, the layout of cell types through a network, and macro genotypes.

Both use matplotlib's non-interactive Agg backend and write PNG, SVG or PDF depending on the file
suffix. People read a cell faster from a picture than from its edge list.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

from arnas_zoo.config import ModelConfig  # noqa: E402
from arnas_zoo.errors import ConfigError  # noqa: E402
from arnas_zoo.genotype import NUM_CELL_INPUTS, Genotype  # noqa: E402
from arnas_zoo.macro import MacroGenotype  # noqa: E402

SUFFIXES = {".png", ".svg", ".pdf"}
OP_COLORS = {
    "sep_conv_3x3": "#1f77b4",
    "sep_conv_5x5": "#17becf",
    "dil_conv_3x3": "#d62728",
    "dil_conv_5x5": "#ff7f0e",
    "skip_connect": "#7f7f7f",
    "max_pool_3x3": "#2ca02c",
    "avg_pool_3x3": "#98df8a",
    "res_sep_conv_3x3": "#9467bd",
    "none": "#cccccc",
}
CELL_COLORS = {
    "accurate": "#9ecae1",
    "robust": "#fc9272",
    "reduce": "#bdbdbd",
    "normal": "#a1d99b",
}


def _check_suffix(path: Path) -> None:
    if path.suffix.lower() not in SUFFIXES:
        raise ConfigError(
            f"{path}: expected a file ending in one of {sorted(SUFFIXES)}, got {path.suffix or 'no suffix'!r}"
        )


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    _check_suffix(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return path


def draw_cell(genotype: Genotype, cell_name: str, path: str | Path, title: str | None = None) -> Path:
    """Draw cell ``cell_name`` of ``genotype`` as a DAG: inputs left, nodes middle, output right."""
    _check_suffix(Path(path))
    cell = genotype.cell(cell_name)
    n = cell.num_nodes
    # positions: the two inputs stacked at x=0, node k at x=k+1 on a gentle zig-zag, output last
    pos: dict[int | str, tuple[float, float]] = {0: (0.0, 1.0), 1: (0.0, -1.0)}
    for k in range(n):
        pos[k + NUM_CELL_INPUTS] = (k + 1.0, 0.9 if k % 2 == 0 else -0.9)
    pos["out"] = (n + 1.0, 0.0)
    labels = {0: "c$_{k-2}$", 1: "c$_{k-1}$", "out": "c$_{k}$"}
    labels.update({k + NUM_CELL_INPUTS: str(k) for k in range(n)})
    fig, ax = plt.subplots(figsize=(2.0 + 1.6 * n, 3.6))
    used_ops: set[str] = set()
    for target, edge in cell.edges:
        x0, y0 = pos[edge.input]
        x1, y1 = pos[target]
        color = OP_COLORS.get(edge.op, "#000000")
        used_ops.add(edge.op)
        rad = 0.25 if abs(x1 - x0) > 1.5 else 0.1
        ax.add_patch(
            FancyArrowPatch(
                (x0, y0),
                (x1, y1),
                connectionstyle=f"arc3,rad={rad}",
                arrowstyle="-|>",
                mutation_scale=12,
                color=color,
                lw=1.6,
                shrinkA=14,
                shrinkB=14,
                zorder=1,
            )
        )
    for state in cell.concat:
        x0, y0 = pos[state]
        ax.add_patch(
            FancyArrowPatch(
                (x0, y0),
                pos["out"],
                arrowstyle="-|>",
                mutation_scale=10,
                color="#555555",
                lw=0.8,
                linestyle="--",
                shrinkA=14,
                shrinkB=14,
                zorder=1,
            )
        )
    for key, (x, y) in pos.items():
        face = "#fdd49e" if key in (0, 1) else ("#c7e9c0" if key == "out" else "#deebf7")
        ax.add_patch(
            FancyBboxPatch((x - 0.28, y - 0.22), 0.56, 0.44, boxstyle="round,pad=0.02", fc=face, ec="#333333", zorder=2)
        )
        ax.text(x, y, labels[key], ha="center", va="center", fontsize=10, zorder=3)
    handles = [plt.Line2D([0], [0], color=OP_COLORS.get(op, "#000000"), lw=2, label=op) for op in sorted(used_ops)]
    ax.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.02),
        ncol=min(4, len(handles)),
        fontsize=8,
        frameon=False,
    )
    ax.set_xlim(-0.6, n + 1.6)
    ax.set_ylim(-1.6, 1.6)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title or f"{genotype.name or 'genotype'}: {cell_name} cell", fontsize=11)
    return _save(fig, path)


def draw_genotype(genotype: Genotype, path: str | Path) -> Path:
    """All cells of a genotype in one picture (one row per cell type), for model cards."""
    path = Path(path)
    _check_suffix(path)
    names = list(genotype.cells)
    fig, axes = plt.subplots(len(names), 1, figsize=(9, 3.2 * len(names)))
    axes = [axes] if len(names) == 1 else list(axes)
    tmp_images = []
    for ax, name in zip(axes, names):
        tmp = path.with_name(f".{path.stem}-{name}.png")
        draw_cell(genotype, name, tmp)
        tmp_images.append(tmp)
        ax.imshow(plt.imread(tmp))
        ax.axis("off")
    for tmp in tmp_images:
        tmp.unlink(missing_ok=True)
    return _save(fig, path)


def draw_layout(config: ModelConfig, path: str | Path) -> Path:
    """The network's sequence of cell types with their channels and spatial sizes."""
    if config.genotype is None:
        raise ConfigError(f"draw_layout: arch {config.arch!r} is hand-crafted and has no cells to draw")
    types = config.layer_cell_types()
    channels = config.layer_channels()
    reductions = config.reduction_layers()
    spatial = config.input_size
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(types) + 2), 2.4))
    ax.add_patch(FancyBboxPatch((-1.4, -0.4), 1.0, 0.8, boxstyle="round,pad=0.02", fc="#fdd49e", ec="#333333"))
    ax.text(-0.9, 0, "stem", ha="center", va="center", fontsize=8)
    palette = dict(CELL_COLORS)
    extra_colors = ["#c6dbef", "#fdae6b", "#d9d9d9", "#bcbddc", "#fee391", "#c7e9c0"]
    for i, (cell_type, c) in enumerate(zip(types, channels)):
        if cell_type not in palette:
            palette[cell_type] = extra_colors[len(palette) % len(extra_colors)]
        if i in reductions:
            spatial = (spatial + 1) // 2
        ax.add_patch(
            FancyBboxPatch(
                (i * 0.6, -0.4),
                0.5,
                0.8,
                boxstyle="round,pad=0.02",
                fc=palette[cell_type],
                ec="#000000" if i in reductions else "#555555",
                lw=1.8 if i in reductions else 0.8,
            )
        )
        ax.text(i * 0.6 + 0.25, 0.55, str(c), ha="center", va="bottom", fontsize=6, rotation=90)
        ax.text(i * 0.6 + 0.25, -0.55, f"{spatial}", ha="center", va="top", fontsize=6)
    shown = [t for t in dict.fromkeys(types)]
    handles = [FancyBboxPatch((0, 0), 1, 1, fc=palette[t], ec="#555555", label=t) for t in shown[:8]]
    ax.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.25),
        ncol=min(4, len(handles)),
        fontsize=8,
        frameon=False,
    )
    ax.text(-1.4, 1.2, "channels per node (top), spatial size (bottom); bold = reduction", fontsize=7)
    ax.set_xlim(-1.6, len(types) * 0.6 + 0.2)
    ax.set_ylim(-1.2, 1.5)
    ax.axis("off")
    ax.set_title(f"{config.name or 'network'}: {config.layers} cells, C={config.init_channels}", fontsize=10)
    return _save(fig, path)


def _draw_phase(ax: plt.Axes, genotype: MacroGenotype, p: int) -> None:
    n = genotype.nodes
    edges, residual = genotype.connections(p)
    active = sorted({i for e in edges for i in e})
    has_in, has_out = {j for _, j in edges}, {i for i, _ in edges}
    x_of: dict[int | str, float] = {"in": 0.0, **{j: 1.3 * (j + 1) for j in range(n)}, "out": 1.3 * (n + 1)}
    y_of: dict[int | str, float] = {name: 0.0 for name in x_of}
    # node -> node edges arc above the row (longer ones higher); input and output edges arc below
    arrows: list[tuple[int | str, int | str, dict[str, Any]]] = []
    below = {"color": "#555555", "connectionstyle": "arc3,rad=0.3"}
    for j in active:
        if j not in has_in:
            arrows.append(("in", j, below))
        if j not in has_out:
            arrows.append((j, "out", below))
    color = OP_COLORS["sep_conv_3x3"]
    arrows += [(i, j, {"color": color, "connectionstyle": f"arc3,rad={-0.25 - 0.08 * (j - i)}"}) for i, j in edges]
    if residual or not active:
        dashed = {"color": "#d62728" if residual else "#555555", "ls": "--", "connectionstyle": "arc3,rad=0.2"}
        arrows.append(("in", "out", dashed))
    for a, b, style in arrows:
        ax.add_patch(FancyArrowPatch((x_of[a] + 0.35, y_of[a]), (x_of[b] - 0.35, y_of[b]), arrowstyle="-|>",
                                     mutation_scale=9, lw=0.9, **style))  # fmt: skip
    for name in ["in", *range(n), "out"]:
        alive = name in ("in", "out") or name in active
        face = "#fdd49e" if isinstance(name, str) else ("#9ecae1" if alive else "#f0f0f0")
        edge, line = ("#333333", "-") if alive else ("#bbbbbb", ":")
        ax.add_patch(FancyBboxPatch((x_of[name] - 0.32, y_of[name] - 0.2), 0.64, 0.4, boxstyle="round,pad=0.02",
                                    fc=face, ec=edge, ls=line))  # fmt: skip
        label = name if isinstance(name, str) else f"{name + 1}"
        ax.text(x_of[name], y_of[name], label, ha="center", va="center", fontsize=8,
                color="#000000" if alive else "#aaaaaa")  # fmt: skip
    ax.set_xlim(-0.6, x_of["out"] + 0.6)
    ax.set_ylim(-1.9, 1.5)
    ax.axis("off")
    extra = "; then 2x2 max pool, channels x2" if p < len(genotype.phases) - 1 else "; then global pool, linear"
    ax.set_title(f"phase {p + 1}: {genotype.phases[p]} ({len(active)} active nodes, residual "
                 f"{'on' if residual else 'off'}){extra}", fontsize=8)  # fmt: skip


def draw_macro(genotype: MacroGenotype, path: str | Path) -> Path:
    """A macro (NSGA-Net / RoCo-NAS) genotype: one row per phase, its active nodes and connections.

    Each phase reads its input node, runs the active conv nodes along the bit string's edges, sums the
    leaves into its output node (dashed red arc below: the residual bit); greyed nodes are dropped.
    """
    path = Path(path)
    _check_suffix(path)
    fig, axes = plt.subplots(len(genotype.phases), 1, figsize=(1.3 * genotype.nodes + 3, 2.4 * len(genotype.phases)))
    for p, ax in enumerate([axes] if len(genotype.phases) == 1 else list(axes)):
        _draw_phase(ax, genotype, p)
    title = f"{genotype.name}: {len(genotype.phases)} phases x {genotype.nodes} conv3x3-BN-ReLU nodes"
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)
