"""The ``python -m search`` command line: thin click commands over :mod:`search.runner` and :mod:`search.sweep`."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from arnas_zoo.cli import friendly_errors
from search.config import PRESETS, load_config


def _out_default(config_source: str, seed: int) -> Path:
    stem = Path(config_source).stem if config_source not in PRESETS else config_source
    return Path("runs") / f"search-{stem}-seed{seed}"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("-v", "--verbose", is_flag=True, help="Log every epoch.")
def main(verbose: bool) -> None:
    """ARNAS architecture search: supernet, MGDA bi-level optimisation, genotype JSON."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")


@main.command("run")
@click.argument("config", default="paper")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config field (repeatable).")
@click.option("-o", "--out", type=click.Path(file_okay=False), help="Output folder (default runs/search-CONFIG-seedN).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--name", help="Genotype name (default <space>-search-seed<N>).")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
@click.option("--no-plots", is_flag=True, help="Skip the pictures at the end.")
@friendly_errors
def run_command(
    config: str,
    overrides: tuple[str, ...],
    out: str | None,
    device: str,
    name: str | None,
    no_progress: bool,
    no_plots: bool,
) -> None:
    """Run (or resume) a search. CONFIG is a preset (paper, darts, tiny) or a JSON file of config fields.

    Runs again on the same folder resume after the last finished epoch. Under torchrun it runs
    data-parallel (gloo on CPU, NCCL on CUDA).
    """
    from search.runner import run_search

    cfg = load_config(config, overrides)
    out_dir = Path(out) if out else _out_default(config, cfg.seed)
    summary = run_search(cfg, out_dir, device=device, progress=not no_progress, plots=not no_plots, name=name)
    if summary.get("world_size", 1) == 1 or int(__import__("os").environ.get("RANK", "0")) == 0:
        click.echo(f"genotype: {out_dir / 'genotype.json'}")
        click.echo(
            f"gamma per epoch (mean): {[round(sum(g) / len(g), 4) if g else None for g in summary['gamma_trace']]}"
        )
        click.echo(f"search time: {summary['seconds_total']:.1f} s on {summary['device']} x{summary['world_size']}")


@main.command("sweep")
@click.argument("config", default="paper")
@click.option("--seeds", default="0,1,2,3", show_default=True, help="Comma-separated seeds.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config field (repeatable).")
@click.option("-o", "--out", type=click.Path(file_okay=False), help="Output folder (default runs/sweep-CONFIG).")
@click.option("--device", default="auto", show_default=True)
@click.option("--no-progress", is_flag=True)
@friendly_errors
def sweep_command(
    config: str, seeds: str, overrides: tuple[str, ...], out: str | None, device: str, no_progress: bool
) -> None:
    """Run one search per seed and count the ops of the Accurate and Robust cells (paper Fig. 4)."""
    from arnas_zoo.errors import ConfigError
    from search.sweep import op_table, run_sweep

    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds: expected comma-separated integers, got {seeds!r}") from None
    cfg = load_config(config, overrides)
    out_root = Path(out) if out else Path("runs") / f"sweep-{Path(config).stem}"
    summary = run_sweep(cfg, seed_list, out_root, device=device, progress=not no_progress)
    click.echo(op_table(summary["op_counts"], summary["primitives"], len(summary["runs"])))
    click.echo(f"written: {out_root / 'op_counts.md'}, {out_root / 'op_counts.png'}")


@main.command("summarize")
@click.argument("sweep_dir", type=click.Path(exists=True, file_okay=False))
@friendly_errors
def summarize_command(sweep_dir: str) -> None:
    """Recount the op choices of the finished seed*/ runs in SWEEP_DIR."""
    from search.sweep import op_table, summarize_sweep

    summary = summarize_sweep(sweep_dir)
    click.echo(op_table(summary["op_counts"], summary["primitives"], len(summary["runs"])))


@main.command("presets")
def presets_command() -> None:
    """Print the named presets (differences from the paper settings)."""
    click.echo(json.dumps(PRESETS, indent=1))
