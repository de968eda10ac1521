"""RobNets' analyses (paper Sec. 3.3-3.5) over the sampled architectures, and the genotype export."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from arnas_zoo.atomic import atomic_write_json, replacing

from .config import RobNetConfig
from .model import EDGE_LIST, EDGES, code_from_strings, code_genotype


# ---- stage 3: analyses ------------------------------------------------------------------------------
def _spearman(a: list[float], b: list[float]) -> dict[str, Any]:
    from scipy.stats import spearmanr

    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None and np.isfinite(x) and np.isfinite(y)]
    if len(pairs) < 3 or len({p[0] for p in pairs}) < 2 or len({p[1] for p in pairs}) < 2:
        return {"rho": None, "p": None, "n": len(pairs)}
    result = spearmanr([p[0] for p in pairs], [p[1] for p in pairs])
    return {"rho": float(result.statistic), "p": float(result.pvalue), "n": len(pairs)}


def _edge_classifier(rows: list[dict[str, Any]], codes: np.ndarray, fraction: float = 0.3) -> dict[str, Any]:
    """Logistic regression on the codes of the top vs the bottom ``fraction`` by PGD accuracy (paper Fig. 4b)."""
    from sklearn.linear_model import LogisticRegression

    scored = [r for r in rows if r["pgd"] is not None]
    if len(scored) < 6:
        return {"n": len(scored), "weights": None}
    scored.sort(key=lambda r: r["pgd"])
    k = max(2, int(len(scored) * fraction))
    bottom, top = scored[:k], scored[-k:]
    features = np.stack([codes[r["index"]].reshape(-1) for r in bottom + top]).astype(np.float64)
    labels = np.array([0] * k + [1] * k)
    clf = LogisticRegression(max_iter=2000).fit(features, labels)
    weights = clf.coef_[0]
    return {
        "n": 2 * k,
        "train_accuracy": float(clf.score(features, labels)),
        "weights": weights.round(4).tolist(),
        "positive_share": float((weights > 0).mean()),
    }


def analyze(rows: list[dict[str, Any]], out: Path, config: RobNetConfig, *, plots: bool = True) -> dict[str, Any]:
    """The paper's Sec. 3.3-3.5 statistics over the sampled architectures; writes the table and plots."""

    codes = np.stack([code_from_strings([list(_split(c)) for c in r["code"]]) for r in rows])
    done = [r for r in rows if r["pgd"] is not None]
    pgd_acc = [r["pgd"] for r in done]
    stats: dict[str, Any] = {
        "n_sampled": len(rows),
        "n_finetuned": len(done),
        "density_vs_pgd": _spearman([r["density"] for r in done], pgd_acc),
        "convs_vs_pgd": _spearman([r["convs"] for r in done], pgd_acc),
        "direct_convs_vs_pgd": _spearman([r["direct_convs"] for r in done], pgd_acc),
        "skip_convs_vs_pgd": _spearman([r["skip_convs"] for r in done], pgd_acc),
        "supernet_vs_finetuned_pgd": _spearman([r["supernet_pgd"] for r in done], pgd_acc),
        "fsp_vs_supernet_gap": _spearman([r["fsp_score"] for r in rows], [r["supernet_gap"] for r in rows]),
        "fsp_per_cell_vs_supernet_gap": [
            _spearman([r["fsp"][c] for r in rows], [r["supernet_gap"] for r in rows])
            for c in range(len(rows[0]["fsp"]) if rows else 0)
        ],
        "budgets": {},
        "classifier": _edge_classifier(rows, codes),
    }
    for name in ("small", "medium", "large"):
        group = [r for r in done if r["budget"] == name]
        stats["budgets"][name] = {
            "n": len(group),
            "mean_pgd": float(np.mean([r["pgd"] for r in group])) if group else None,
            "direct_share_vs_pgd": _spearman([r["direct_share"] for r in group], [r["pgd"] for r in group]),
        }
    best = sorted(done, key=lambda r: -r["pgd"])[: config.top_k]
    stats["top"] = [{k: r[k] for k in ("index", "code", "clean", "pgd", "density", "convs")} for r in best]
    atomic_write_json(out / "architectures.json", rows)
    _write_csv(out / "architectures.csv", rows)
    atomic_write_json(out / "analysis.json", stats)
    if plots:
        _plots(rows, stats, out)
    return stats


def _split(cell: str) -> list[str]:
    return [cell[i : i + 2] for i in range(0, len(cell), 2)]


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    columns = [
        "index",
        "budget",
        "density",
        "convs",
        "direct_convs",
        "skip_convs",
        "direct_share",
        "supernet_clean",
        "supernet_pgd",
        "supernet_gap",
        "fsp_score",
        "finetuned",
        "clean",
        "pgd",
        "code",
    ]
    with replacing(path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for r in rows:
            writer.writerow([" ".join(r[c]) if c == "code" else r[c] for c in columns])


def _plots(rows: list[dict[str, Any]], stats: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = out / "plots"
    folder.mkdir(exist_ok=True)
    done = [r for r in rows if r["pgd"] is not None]

    def label(key: str) -> str:
        s = stats[key]
        return "n/a" if s["rho"] is None else f"Spearman {s['rho']:.2f} (p={s['p']:.2g}, n={s['n']})"

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    axes[0].scatter([r["density"] for r in done], [100 * r["pgd"] for r in done], s=12)
    axes[0].set(
        xlabel="architecture density D (Eq. 2)",
        ylabel="PGD accuracy after finetuning (%)",
        title=f"density: {label('density_vs_pgd')}",
    )
    axes[1].scatter([r["direct_convs"] for r in done], [100 * r["pgd"] for r in done], s=12, label="direct edges")
    axes[1].scatter(
        [r["skip_convs"] for r in done], [100 * r["pgd"] for r in done], s=12, label="skip edges", marker="x"
    )
    axes[1].set(
        xlabel="convolutions per cell",
        ylabel="PGD accuracy (%)",
        title=f"direct {label('direct_convs_vs_pgd')}\nskip {label('skip_convs_vs_pgd')}",
    )
    axes[1].legend()
    axes[2].scatter([r["fsp_score"] for r in rows], [100 * r["supernet_gap"] for r in rows], s=12)
    axes[2].set(
        xlabel="FSP distance (deeper normal cells)",
        ylabel="clean - PGD accuracy on the supernet (%)",
        title=f"FSP: {label('fsp_vs_supernet_gap')}",
    )
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    for ext in ("png", "svg"):
        fig.savefig(folder / f"analysis.{ext}", dpi=120)
    plt.close(fig)
    weights = stats["classifier"].get("weights")
    if weights:
        w = np.asarray(weights).reshape(-1, EDGES, 2)[0]
        fig, ax = plt.subplots(figsize=(8, 3))
        idx = np.arange(EDGES)
        ax.bar(idx - 0.2, w[:, 0], 0.4, label="sep_conv_3x3 bit")
        ax.bar(idx + 0.2, w[:, 1], 0.4, label="identity bit")
        ax.set(xlabel="edge (RobNet order)", ylabel="weight", title="linear classifier: top vs bottom architectures")
        ax.set_xticks(idx, [f"{s}>{n}" for s, n in EDGE_LIST], rotation=60, fontsize=7)
        ax.legend()
        fig.tight_layout()
        fig.savefig(folder / "classifier.png", dpi=120)
        plt.close(fig)


# ---- stage 4: export --------------------------------------------------------------------------------
def export_top(rows: list[dict[str, Any]], codes: list[np.ndarray], out: Path, config: RobNetConfig) -> list[str]:
    """The ``top_k`` finetuned architectures by PGD accuracy as genotype JSON (``genotypes/``)."""
    folder = out / "genotypes"
    folder.mkdir(exist_ok=True)
    done = sorted((r for r in rows if r["pgd"] is not None), key=lambda r: -r["pgd"])[: config.top_k]
    written = []
    for rank, r in enumerate(done, 1):
        name = f"{config.name}-seed{config.seed}-top{rank}"
        notes = (
            f"python -m search robnet {config.name}: sample {r['index']} of {config.samples} "
            f"({'cell-free' if config.cell_free else 'cell-based'}, budget {config.budget}); "
            f"after finetuning on {config.dataset}: clean {r['clean']:.4f}, PGD-{config.eval_steps} "
            f"{r['pgd']:.4f} on {config.eval_n} held-out rows (eps {config.eps:.4g}), seed {config.seed}"
        )
        path = code_genotype(codes[r["index"]], name, notes).save(folder / f"top{rank}.json")
        written.append(str(path.relative_to(out)))
    return written
