"""The ``python -m search`` command line, generated from the strategy registry (:mod:`search.strategy`).

``run PRESET`` runs whichever strategy owns the preset; each strategy also has a group of its own
(``arnas``, ``robnet``, ``roco``, ``evolve``) with ``run`` and its further commands; ``presets`` lists every
preset, grouped by strategy. Installed, ``arnas-zoo search ...`` reaches the same commands.
"""

from __future__ import annotations

import json
import logging
import textwrap
from pathlib import Path
from typing import Any

import click

from arnas_zoo.cli.common import SuggestingGroup, finish_distributed, friendly_errors, progress_for, quiet_option
from arnas_zoo.threads import apply_thread_policy

from .strategy import RunOptions, Strategy, refusal, strategies, strategy_for

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


@click.group(cls=SuggestingGroup, context_settings=CONTEXT)
@click.option("-v", "--verbose", is_flag=True, help="Log more.")
def main(verbose: bool) -> None:
    """Architecture search: ARNAS (MGDA bi-level, DSRNA's objectives) and the peers' strategies, writing genotype
    JSON. ``run PRESET`` runs any strategy's preset; ``presets`` lists them."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")
    apply_thread_policy()


main.result_callback()(finish_distributed)  # a command that succeeded under torchrun ends its worker

_RUN_OPTIONS = [
    click.option(
        "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config field (repeatable)."
    ),
    click.option("-o", "--out", type=click.Path(file_okay=False), help="Output folder [runs/PRESET-seedN]."),
    click.option("--resume", is_flag=True, help="Continue the run in --out where it stopped (nothing done twice)."),
    click.option("--resume-previous", "previous", is_flag=True, help="ARNAS: from the state before the latest one."),
    click.option("--device", default="auto", show_default=True, help="ARNAS, RobNets: auto, cpu, cuda or cuda:N."),
    click.option("--name", help="ARNAS: the genotype's name [<space>-search-seed<N>]."),
    click.option(
        "--backend",
        type=click.Choice(["local", "ray"]),
        default="local",
        show_default=True,
        help="Job layer backend of the strategies that train many candidates.",
    ),  # fmt: skip
    click.option("--address", default=None, help="Ray cluster to join (auto, HOST:PORT) [a new local cluster]."),
    click.option("--max-parallel", type=click.IntRange(min=1), default=None, help="Candidates in flight at once."),
    click.option("--no-plots", is_flag=True, help="Skip the pictures at the end."),
    quiet_option,
    friendly_errors,
]


def run_command(strategy: Strategy | None) -> click.Command:
    """The ``run`` command of one strategy's group, or (``None``) the wing's, which finds the strategy by preset."""

    def run(
        config: str, overrides: tuple[str, ...], out: str | None, quiet: bool, no_plots: bool, **given: Any
    ) -> None:
        chosen = strategy or strategy_for(config)
        if strategy is not None and config not in strategy.presets() and not Path(config).is_file():
            raise click.BadParameter(
                f"expected one of {sorted(strategy.presets())} or a JSON file", param_hint="PRESET"
            )
        options = RunOptions(**given, progress=progress_for(quiet), plots=not no_plots)
        refused = chosen.refused(options)
        if refused:
            raise click.UsageError(f"{config}: {refusal(chosen, refused)}")
        cfg = chosen.load(config, overrides)
        outcome = chosen.start(cfg, Path(out) if out else chosen.default_out(config, cfg), options)
        for line in outcome.lines:
            click.echo(line)

    if strategy is None:
        doc = """Run (or resume) a search. CONFIG is any strategy's preset (see ``presets``) or a JSON file of ARNAS
        config fields.

        One line per epoch or generation (a bar on a terminal); SIGTERM/Ctrl-C save the state: rerun with
        --resume. Under torchrun the ARNAS search runs data-parallel (gloo on CPU, NCCL on CUDA)."""
        default = "paper"
    else:
        doc = f"""Run (or resume) a {strategy.title} search ({strategy.papers}).

        PRESET: one of {", ".join(strategy.presets())}, or a JSON file of config fields. Code: {strategy.home}"""
        default = strategy.default_preset
    run.__doc__ = doc
    command: Any = run
    for option in reversed(_RUN_OPTIONS):
        command = option(command)
    return click.command("run")(click.argument("config", metavar="PRESET", default=default)(command))


main.add_command(run_command(None))


@main.command("presets")
@click.option("--json", "as_json", is_flag=True, help="Print {strategy: {preset: settings}} as JSON.")
def presets_command(as_json: bool) -> None:
    """List every strategy's presets, with the settings each changes from its strategy's defaults."""
    found = strategies()
    if as_json:
        click.echo(json.dumps({name: dict(s.presets()) for name, s in found.items()}, indent=1))
        return
    for name, strategy in found.items():
        click.echo(f"{name}: {strategy.papers} [{strategy.home}]")
        for preset, settings in strategy.presets().items():
            text = ", ".join(f"{key}={json.dumps(value)}" for key, value in settings.items()) or "(the defaults)"
            click.echo(textwrap.fill(text, 110, initial_indent=f"  {preset:22s} ", subsequent_indent=" " * 25))


def _group(strategy: Strategy) -> click.Group:
    group = click.Group(strategy.name, help=f"{strategy.papers}. Code: {strategy.home}", context_settings=CONTEXT)
    group.add_command(run_command(strategy))
    for command in strategy.commands() if strategy.commands else ():
        group.add_command(command)
    return group


for _strategy in strategies().values():
    main.add_command(_group(_strategy))
    if _strategy.name == "arnas":  # the sweep commands, as before, also at the top: `python -m search sweep`
        for _command in _strategy.commands() if _strategy.commands else ():
            main.add_command(_command)
