"""``list``, ``info``, ``draw``, ``genotype``, ``pretrained``: the architectures and the zoo, without training."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from arnas_zoo.cli.common import F, SuggestingGroup, friendly_errors
from arnas_zoo.config import parse_filters, parse_placement
from arnas_zoo.errors import ConfigError, GenotypeError

_MACRO_INTS = ("layers", "init_channels", "num_classes", "in_channels", "input_size")


def macro_options(func: F) -> F:
    """Options that override the macro of a registry entry or genotype."""
    options = [
        click.option("--layers", type=int, help="Number of cells (default: the paper's)."),
        click.option("--init-channels", "-C", type=int, help="Initial channels C."),
        click.option("--num-classes", type=int, help="Output classes."),
        click.option("--in-channels", type=int, help="Input channels (1 for MNIST)."),
        click.option("--input-size", type=int, help="Input height/width (28 MNIST, 32 CIFAR, 64 Tiny-ImageNet)."),
        click.option("--placement", help="Cell type per stage, e.g. A-A-R, R-A-A, A-R-A, A-A-A."),
        click.option("--filters", help="Filter multipliers per stage, e.g. 1-2-2, 1-2-3, 1-2-4."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def collect_overrides(kwargs: dict[str, Any]) -> dict[str, Any]:
    overrides: dict[str, Any] = {key: kwargs.pop(key) for key in _MACRO_INTS if kwargs.get(key) is not None}
    for key in _MACRO_INTS:
        kwargs.pop(key, None)
    placement = kwargs.pop("placement", None)
    if placement:
        overrides["placement"] = parse_placement(placement)
    filters = kwargs.pop("filters", None)
    if filters:
        overrides["filter_multipliers"] = parse_filters(filters)
    return overrides


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list instead of a table.")
@friendly_errors
def list_command(as_json: bool) -> None:
    """List the registered architectures with parameters and paper-convention FLOPs (32x32x3, 10 classes)."""
    from arnas_zoo.introspect import architecture_table

    rows = architecture_table()
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    click.echo(f"{'name':<18} {'space':<13} {'params':>9} {'FLOPs':>10}  paper")
    for row in rows:
        click.echo(
            f"{row['name']:<18} {row['space']:<13} {row['params'] / 1e6:>8.4f}M {row['flops_paper'] / 1e6:>9.2f}M  "
            f"{row['paper']}"
        )


def _check_choice(value: str | None, key: str, option: str) -> None:
    """A --dataset/--threat/--arch value the registry has, else one line with close matches (exit 2)."""
    import difflib

    from arnas_zoo.pretrained import pretrained_values

    known = pretrained_values(key)
    if value is None or value.lower() in known:
        return
    close = difflib.get_close_matches(value.lower(), known, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise click.BadParameter(f"no pretrained model has {value!r}{hint} (known: {', '.join(known)})", param_hint=option)


@click.command("pretrained")
@click.argument("pattern", required=False)
@click.option("--dataset", help="Only models trained on this dataset (mnist, cifar10, ...).")
@click.option("--threat", "threat_model", help="Only this threat model (linf, l2, ...).")
@click.option("--arch", help="Only this architecture (arnas, darts_v2, resnet18, ...).")
@click.option(
    "--sort",
    type=click.Choice(["clean", "aa", "worst", "params", "macs", "name"]),
    help="Sort: accuracies best first, sizes smallest first [index order].",
)
@click.option("--all", "show_all", is_flag=True, help="Also list superseded models.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list (entries with their figures).")
@friendly_errors
def pretrained_command(
    pattern: str | None,
    dataset: str | None,
    threat_model: str | None,
    arch: str | None,
    sort: str | None,
    show_all: bool,
    as_json: bool,
) -> None:
    """List the pretrained models that arnas_zoo.load(NAME) finds, with their figures.

    PATTERN filters names, shell-style ('*resnet*', 'arnas.cifar10*'; without a wildcard it matches
    anywhere). Figures come from each model's pinned metrics.json: clean, AutoAttack and worst-case
    accuracy (a point counts only if it survives every attack) on n evaluation points at eps.
    """
    from arnas_zoo.figures import count as _count
    from arnas_zoo.figures import percent as _pct
    from arnas_zoo.pretrained import list_pretrained

    _check_choice(dataset, "dataset", "--dataset")
    _check_choice(threat_model, "threat_model", "--threat")
    _check_choice(arch, "arch", "--arch")
    specs = list_pretrained(
        pattern, dataset=dataset, threat_model=threat_model, arch=arch, sort=sort, include_superseded=show_all
    )
    if as_json:
        out = []
        for spec in specs:
            figures = spec.figures()
            out.append({**spec.to_dict(), "figures": None if figures is None else figures.to_dict()})
        click.echo(json.dumps(out, indent=1))
        return
    if not specs:
        click.echo("no pretrained model matches" + ("" if show_all else " (superseded ones hidden: --all)"), err=True)
        sys.exit(1)
    click.echo(
        f"{'name':<38} {'data':<8} {'threat':<6} {'eps':>7} {'clean':>6} {'AA':>6} {'worst':>6} {'n':>5} "
        f"{'params':>7} {'MACs':>7}"
    )
    for spec in specs:
        f = spec.figures()
        note = f"  (superseded by {spec.superseded_by})" if spec.superseded_by else ""
        shown = (
            f"{_pct(f.clean):>6} {_pct(f.autoattack):>6} {_pct(f.worst_case):>6} {f.n:>5}"
            if f is not None
            else f"{'-':>6} {'-':>6} {'-':>6} {'-':>5}"
        )
        click.echo(
            f"{spec.name:<38} {spec.dataset:<8} {spec.threat_model:<6} {spec.eps:>7.4g} {shown} "
            f"{_count(spec.params):>7} {_count(spec.macs):>7}{note}"
        )
    if not show_all:
        click.echo("(accuracy in %; superseded models hidden, --all shows them; arnas-zoo export card NAME: the card)")


@click.command("info")
@click.argument("target")
@macro_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (params, macs, flops_paper, ...).")
@friendly_errors
def info_command(target: str, as_json: bool, **kwargs: Any) -> None:
    """Structure and statistics of TARGET: an architecture, a zoo name, a Hub spec, a genotype JSON, a config.json or a
    checkpoint folder."""
    from arnas_zoo.introspect import describe, format_summary, summarize_config
    from arnas_zoo.naming import config_of
    from arnas_zoo.registry import is_registered

    overrides = collect_overrides(kwargs)
    # an architecture answers from the stored counts; every other form is resolved (and counted) here
    summary = (
        describe(target, **overrides) if is_registered(target) else summarize_config(config_of(target, **overrides))
    )
    click.echo(json.dumps(summary, indent=1) if as_json else format_summary(summary))


@click.command("draw")
@click.argument("target")
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False), help="Output file (.png, .svg or .pdf)."
)
@click.option("--cell", "cell_name", help="Draw only this cell type (default: every cell type, one file each).")
@click.option("--layout", is_flag=True, help="Draw the network's layout of cell types instead of the cells.")
@macro_options
@friendly_errors
def draw_command(target: str, output: str, cell_name: str | None, layout: bool, **kwargs: Any) -> None:
    """Draw the cells (or the layout) of TARGET: an architecture, a zoo name, a Hub spec, a genotype JSON or a folder.

    With several cell types and no --cell, writes OUTPUT with the cell name added before the
    suffix (arnas-accurate.png, arnas-robust.png, ...).
    """
    from arnas_zoo.draw import draw_cell, draw_layout
    from arnas_zoo.naming import config_of

    config = config_of(target, **collect_overrides(kwargs))
    out = Path(output)
    if layout:
        click.echo(str(draw_layout(config, out)))
        return
    if config.arch == "macro":  # an NSGA-Net / RoCo-NAS macro genotype: its phases in one picture
        from arnas_zoo.draw import draw_macro
        from arnas_zoo.models.macro import genotype_of

        click.echo(str(draw_macro(genotype_of(config), out)))
        return
    if config.genotype is None:
        raise ConfigError(f"{target}: a hand-crafted network has no cells to draw; try --layout on a cell network")
    names = [cell_name] if cell_name else list(config.genotype.cells)
    for name in names:
        path = out if len(names) == 1 else out.with_name(f"{out.stem}-{name}{out.suffix}")
        click.echo(str(draw_cell(config.genotype, name, path)))


@click.group("genotype", cls=SuggestingGroup)
def genotype_group() -> None:
    """Validate, show and convert genotype JSON files."""


@genotype_group.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@friendly_errors
def genotype_validate(files: tuple[str, ...]) -> None:
    """Check FILES against the genotype schema; print OK or the first error with its JSON path."""
    from arnas_zoo.genotype import Genotype

    failed = 0
    for file in files:
        try:
            g = Genotype.load(file)
        except GenotypeError as exc:
            click.echo(f"error: {exc}", err=True)
            failed += 1
        else:
            click.echo(f"OK {file}: space={g.space}, cells={list(g.cells)}")
    if failed:
        sys.exit(1)


def _genotype_of(target: str) -> Any:
    from arnas_zoo.naming import config_of

    config = config_of(target)
    if config.genotype is None:
        raise ConfigError(f"{target}: hand-crafted network ({config.arch}); it has no genotype")
    return config.genotype


@genotype_group.command("show")
@click.argument("target")
@friendly_errors
def genotype_show(target: str) -> None:
    """Pretty-print the genotype of TARGET (architecture, zoo name, Hub spec, genotype JSON or checkpoint folder)."""
    click.echo(_genotype_of(target).pretty())


@genotype_group.command("export")
@click.argument("target")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write here instead of stdout.")
@friendly_errors
def genotype_export(target: str, output: str | None) -> None:
    """Write the genotype of TARGET (an architecture, a zoo name, ...) as genotype JSON."""
    genotype = _genotype_of(target)
    click.echo(str(genotype.save(output)) if output else genotype.to_json())


@genotype_group.command("compare")
@click.argument("target_a")
@click.argument("target_b")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@click.option(
    "--chance",
    type=click.IntRange(0, 100_000),
    default=1000,
    show_default=True,
    help="Random cells shaped like A to compare with B too, for the overlap chance gives (0: none).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random cells.")
@friendly_errors
def genotype_compare(target_a: str, target_b: str, as_json: bool, chance: int, seed: int) -> None:
    """Compare the cells of two genotypes: op counts, shared ops and edges, parameter-free share.

    TARGET_A and TARGET_B are anything `genotype show` takes. Beside them, the overlap that random cells
    shaped like A reach with B, so that "38% of the ops agree" can be read against chance. The figures
    say how alike two cells are, not which is better.
    """
    import json

    from arnas_zoo.genotype import chance_overlap, compare, format_comparison

    a, b = _genotype_of(target_a), _genotype_of(target_b)
    result = compare(a, b)
    if chance:
        result["chance"] = chance_overlap(a, b, samples=chance, seed=seed)
    click.echo(json.dumps(result, indent=1) if as_json else format_comparison(result))
