"""RoCo-NAS's command beside ``run``: a front against a baseline's at matched FLOPs (paper Table V)."""

from __future__ import annotations

import json

import click

from arnas_zoo.cli.common import friendly_errors


@click.command("compare")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.argument("baseline", type=click.Path(exists=True, file_okay=False))
@friendly_errors
def compare_command(run: str, baseline: str) -> None:
    """Front of RUN against BASELINE's at matched FLOPs (paper Table V): PGD-20 and clean differences."""
    from .run import matched_flops

    result = matched_flops(run, baseline)
    for p in result["pairs"]:
        click.echo(
            f"{p['key']} ({p['flops']} MACs) vs {p['baseline_key']} ({p['baseline_flops']}): "
            f"PGD-20 {100 * p['pgd20_difference']:+.1f}, clean {100 * p['clean_difference']:+.1f} points"
        )
    click.echo(
        f"mean PGD-20 difference {100 * (result['mean_pgd20_difference'] or 0):+.1f} points; "
        f"{result['pairs_better']} better, {result['pairs_worse']} worse"
    )
    click.echo(json.dumps(result))
