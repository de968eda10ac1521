"""ARNAS' commands beside ``run``: many seeds and the op counts of the searched cells (paper Fig. 4)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from arnas_zoo.cli.common import friendly_errors, progress_for, quiet_option

from .config import load_config, parse_overrides


@click.command("sweep")
@click.argument("config", default="paper")
@click.option("--seeds", default="0,1,2,3", show_default=True, help="Comma-separated seeds.")
@click.option(
    "--vary",
    default=None,
    metavar="KEY=V1,V2,...",
    help="Also sweep one config field, e.g. --vary lam=0.01,0.1,1 (the MGDA lambda sweep).",
)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config field (repeatable).")
@click.option("-o", "--out", type=click.Path(file_okay=False), help="Output folder (default runs/sweep-CONFIG).")
@click.option("--device", default="auto", show_default=True)
@quiet_option
@friendly_errors
def sweep_command(
    config: str, seeds: str, vary: str | None, overrides: tuple[str, ...], out: str | None, device: str, quiet: bool
) -> None:
    """Run one search per seed (and value) and count the ops of the Accurate and Robust cells (paper Fig. 4)."""
    from arnas_zoo.errors import ConfigError

    from .sweep import op_table, run_sweep

    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds: expected comma-separated integers, got {seeds[:80]!r}") from None
    varied = None
    if vary is not None:
        key, _, values = vary.partition("=")
        if not key.strip() or not values.strip():
            raise ConfigError(f"--vary: expected KEY=V1,V2,..., got {vary[:80]!r}")
        varied = (key.strip(), [parse_overrides([f"{key}={v}"])[key.strip()] for v in values.split(",") if v.strip()])
    cfg = load_config(config, overrides)
    out_root = Path(out) if out else Path("runs") / f"sweep-{Path(config).stem}"
    summary = run_sweep(cfg, seed_list, out_root, device=device, progress=progress_for(quiet), vary=varied)
    if varied is None:
        click.echo(op_table(summary["op_counts"], summary["primitives"], len(summary["runs"])))
        click.echo(f"written: {out_root / 'op_counts.md'}, {out_root / 'op_counts.png'}")
    else:
        for row in summary["runs"]:
            click.echo(json.dumps(row))
        click.echo(f"written: {out_root / 'sweep.json'}")


@click.command("summarize")
@click.argument("sweep_dir", type=click.Path(exists=True, file_okay=False))
@friendly_errors
def summarize_command(sweep_dir: str) -> None:
    """Recount the op choices of the finished seed*/ runs in SWEEP_DIR."""
    from .sweep import op_table, summarize_sweep

    summary = summarize_sweep(sweep_dir)
    click.echo(op_table(summary["op_counts"], summary["primitives"], len(summary["runs"])))


@click.command("trajectory")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--reference",
    default="arnas",
    show_default=True,
    help="Genotype to measure each epoch's cells against (anything `arnas-zoo genotype show` takes; 'none': skip).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@friendly_errors
def trajectory_command(run_dir: str, reference: str, as_json: bool) -> None:
    """How RUN_DIR's discretised genotype moved from epoch to epoch: edges kept, and likeness to a reference.

    Reads log.jsonl only, so it works on a search that is still running.
    """
    from arnas_zoo.naming import config_of

    from .trajectory import format_trajectory, genotype_trajectory

    ref = None
    if reference.lower() != "none":
        ref = config_of(reference).genotype
        if ref is None:
            raise click.UsageError(f"--reference {reference}: a hand-crafted network has no genotype")
    rows = genotype_trajectory(run_dir, ref)
    click.echo(json.dumps(rows, indent=1) if as_json else format_trajectory(rows, reference if ref else None))
