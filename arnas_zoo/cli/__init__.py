"""The ``arnas-zoo`` command line: thin click commands over library functions.

Commands are imported only when they run (``--help`` and ``list`` never import torch), and other
installed packages can add commands through the ``arnas_zoo.commands`` entry-point group -- that is
how ``arnas-zoo export`` (the export tooling, whose home is ``export/`` in the repository) plugs in
without this package importing it. Every expected failure prints one line and exits non-zero
(:func:`~arnas_zoo.cli.common.friendly_errors`).
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

import click

from arnas_zoo.cli.common import SuggestingGroup, finish_distributed
from arnas_zoo.threads import apply_thread_policy

# command name -> "module:attribute", imported on first use
COMMANDS = {
    "list": "arnas_zoo.cli.architectures:list_command",
    "info": "arnas_zoo.cli.architectures:info_command",
    "draw": "arnas_zoo.cli.architectures:draw_command",
    "genotype": "arnas_zoo.cli.architectures:genotype_group",
    "pretrained": "arnas_zoo.cli.architectures:pretrained_command",
    "train": "arnas_zoo.cli.training:train_command",
    "quickstart": "arnas_zoo.cli.training:quickstart_command",
    "eval": "arnas_zoo.cli.evaluation:eval_command",
    "transfer": "arnas_zoo.cli.evaluation:transfer_command",
    "compare": "arnas_zoo.cli.reports:compare_command",
    "merge": "arnas_zoo.cli.reports:merge_command",
    "certify": "arnas_zoo.cli.evaluation:certify_command",
    "status": "arnas_zoo.cli.evaluation:status_command",
    "park": "arnas_zoo.cli.parking:park_command",
    "unpark": "arnas_zoo.cli.parking:unpark_command",
    "leaderboard": "arnas_zoo.cli.leaderboard:leaderboard_group",
    "predict": "arnas_zoo.cli.deployment:predict_command",
    "check": "arnas_zoo.cli.deployment:check_command",
    "serve": "arnas_zoo.cli.deployment:serve_command",
    "site": "arnas_zoo.cli.leaderboard:site_command",
}
SHORT_HELP = {
    "list": "List the registered architectures with parameters and FLOPs.",
    "info": "Structure and statistics of an architecture, genotype, config or folder.",
    "draw": "Draw the cells (or the layout) of an architecture.",
    "genotype": "Validate, show and convert genotype JSON files.",
    "pretrained": "List the pretrained checkpoints (pinned by sha256).",
    "train": "Adversarially train a registry architecture (resumable, DDP).",
    "quickstart": "Adversarial vs standard training of a small ARNAS on digits.",
    "eval": "Robust accuracy of a model under attacks, with sanity checks.",
    "transfer": "Transfer matrix between models (black-box).",
    "compare": "Models evaluated on the same points: intervals and paired tests.",
    "merge": "Merge reports of one model on the same points (attacks run apart) into one.",
    "certify": "Certified accuracy and radius (IBP / CROWN bounds).",
    "status": "Where a run folder (or a folder of runs) stands: training, search, or a job set (sharded eval).",
    "park": "Snapshot a folder of runs (verified) to a folder or a private Hub repo, to resume elsewhere.",
    "unpark": "Bring parked runs back into a folder, verified; nothing local is deleted.",
    "leaderboard": "Train and attack every architecture alike; write docs/leaderboard.md.",
    "predict": "Classify images with a model or an ONNX file.",
    "check": "Is a deployed ONNX file as robust as its source?",
    "serve": "Serve an ONNX model over HTTP (micro-batching, bounded requests).",
    "site": "Write the zoo and leaderboards as a static web site (sortable, offline).",
    "export": "Export ONNX, publish to the Hub, register pretrained entries.",
}
PLUGIN_GROUP = "arnas_zoo.commands"


def _plugins() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=PLUGIN_GROUP)}


class LazyGroup(SuggestingGroup):
    """A group whose commands (built-in and plugins) are imported when they are invoked."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *_plugins()})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in COMMANDS:
            module, _, attr = COMMANDS[name].partition(":")
            command: click.Command = getattr(importlib.import_module(module), attr)
            return command
        plugin = _plugins().get(name)
        return plugin.load() if plugin is not None else None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # list without importing: built-in commands have their help here, plugins their entry point
        plugins = _plugins()
        rows = [
            (name, SHORT_HELP[name] if name in SHORT_HELP else f"(plugin {plugins[name].value})")
            for name in sorted({*COMMANDS, *plugins})
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="arnas-zoo")
def main() -> None:
    """arnas-zoo: adversarially robust architectures found by NAS (ARNAS and peers).

    Start with `arnas-zoo quickstart`; `arnas-zoo pretrained` lists the zoo; `arnas-zoo eval MODEL`
    attacks a model. Every command has --help.
    """
    apply_thread_policy()


main.result_callback()(finish_distributed)  # a command that succeeded under torchrun ends its worker


if __name__ == "__main__":  # pragma: no cover
    main()
