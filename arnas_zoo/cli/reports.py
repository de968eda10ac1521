"""``compare`` and ``merge``: what can be read from evaluation reports (their per-point outcomes)."""

from __future__ import annotations

import click

from arnas_zoo.cli.common import friendly_errors
from arnas_zoo.cli.evaluation import load_for_eval


@click.command("compare")
@click.argument("reports", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--names", default=None, help="comma-separated labels, one per report [each report's model name]")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="write the comparison as JSON")
@friendly_errors
def compare_command(reports: tuple[str, ...], names: str | None, json_out: str | None) -> None:
    """Compare models evaluated on the same points: accuracy with 95% intervals, and per pair a paired test.

    REPORTS are `arnas-zoo eval --json` files of two or more models on the same points and threat model.
    Pairs are tested point by point (McNemar exact, Holm-adjusted per figure): "no detectable difference"
    unless the discordant points say otherwise at the 5% level.
    """
    from arnas_zoo.atomic import atomic_write_json
    from arnas_zoo.errors import ConfigError
    from arnas_zoo.evaluate.compare import compare_reports
    from arnas_zoo.evaluate.report import read_report

    loaded = [read_report(path) for path in reports]
    labels = (
        [n.strip() for n in names.split(",")]
        if names
        else [str(r.model.get("name") or p) for r, p in zip(loaded, reports)]
    )
    if len(labels) != len(loaded) or len(set(labels)) != len(labels):
        raise ConfigError(f"--names: expected {len(loaded)} distinct labels, got {labels}")
    comparison = compare_reports(dict(zip(labels, loaded)))
    click.echo(comparison.format_table())
    if json_out:
        atomic_write_json(json_out, comparison.to_dict())
        click.echo(f"wrote {json_out}")


@click.command("merge")
@click.argument("reports", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--json", "json_out", type=click.Path(dir_okay=False), required=True, help="where to write the merged report"
)
@click.option(
    "--model",
    default=None,
    help="the checkpoint the reports are of (folder, Hub id, pretrained name): its clean outcomes on the reports' "
    "points are recomputed and must match",
)
@click.option("--split", default="test", show_default=True, help="with --model: the split the reports were run on")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="with --model: where the data are")
@click.option("--val-size", type=click.IntRange(min=1), default=None, help="with --model: as the reports' eval had")
@click.option("--device", default="cpu", show_default=True)
@friendly_errors
def merge_command(
    reports: tuple[str, ...],
    json_out: str,
    model: str | None,
    split: str,
    data_dir: str | None,
    val_size: int | None,
    device: str,
) -> None:
    """Merge REPORTS (`arnas-zoo eval --json` files of one model on the same points) into one report.

    For attacks run apart, e.g. the PGD rows and a sharded AutoAttack: the worst case is recomputed per
    point, the checks that compare attacks are judged again on all of them, the probe checks are carried
    from the reports that ran them, and each source is recorded. Reports on other points, with another
    threat model or seed, with different clean outcomes, or without per-point outcomes are refused.
    """
    from arnas_zoo.evaluate.merge import merge_files

    if model is None:
        merged = merge_files(reports)
        click.echo("not verified against a checkpoint (pass --model to recompute the clean outcomes)", err=True)
    else:
        from arnas_zoo.devices import resolve_device

        dev = resolve_device(device)
        loaded = load_for_eval(model, dev, None)
        if not loaded.trained:
            raise click.UsageError("--model: a trained model (folder, Hub id or pretrained name), not an architecture")
        merged = merge_files(reports, loaded.model, split=split, data_dir=data_dir, val_size=val_size, device=dev)
        merged.model = loaded.info()
        click.echo(f"verified: {model}'s clean outcomes on the {merged.data['n']} points match the reports'")
    click.echo(merged.format_table())
    merged.save(json_out)
    click.echo(f"wrote {json_out}")
