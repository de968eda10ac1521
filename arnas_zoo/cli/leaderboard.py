"""``leaderboard run`` and ``leaderboard table``: the robust-architecture leaderboard (:mod:`arnas_zoo.leaderboard`)."""

from __future__ import annotations

import click

from arnas_zoo.cli.common import SuggestingGroup, friendly_errors

_BOARD = click.argument("board", type=click.Choice(["mnist", "cifar10"]))
_RUN_DIR = click.option(
    "--run-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="jobs and trained models [runs/leaderboard-BOARD]",
)


@click.group("leaderboard", cls=SuggestingGroup)
def leaderboard_group() -> None:
    """Train every registry architecture at one reduced size by one recipe, attack all on the same points."""


@leaderboard_group.command("run")
@_BOARD
@_RUN_DIR
@click.option("--arch", "archs", multiple=True, help="only these architectures (repeatable) [all]")
@click.option("--eval-n", type=click.IntRange(min=1), default=None, help="evaluation points [the board's: 200]")
@click.option("--backend", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option("--address", default=None, help="Ray cluster to join: auto, HOST:PORT [a new local cluster]")
@click.option("--max-parallel", type=click.IntRange(min=1), default=None, help="jobs running at once [all]")
@click.option("--table", "table_out", type=click.Path(dir_okay=False), default=None, help="also write the markdown")
@click.option(
    "--retrain-registered",
    is_flag=True,
    help="also train architectures whose row a registered zoo model of this board already gives",
)
@friendly_errors
def run_command(
    board: str,
    run_dir: str | None,
    archs: tuple[str, ...],
    eval_n: int | None,
    backend: str,
    address: str | None,
    max_parallel: int | None,
    table_out: str | None,
    retrain_registered: bool,
) -> None:
    """Train and evaluate; rerun the same command to continue where the last run stopped.

    Architectures with a registered zoo model of this board are not trained again (their row comes from
    the zoo) unless --retrain-registered.
    """
    from dataclasses import replace

    from arnas_zoo.leaderboard import BOARDS, run_leaderboard, write_table

    the_board = BOARDS[board] if eval_n is None else replace(BOARDS[board], eval_n=eval_n)
    folder = run_dir or f"runs/leaderboard-{board}"
    table = run_leaderboard(
        the_board,
        folder,
        archs or None,
        retrain_registered=retrain_registered,
        backend=backend,
        address=address,
        max_parallel=max_parallel,
    )
    for row in table:
        click.echo(f"{row['arch']:14s} clean {100 * row['clean']:5.1f}  worst case {100 * row['worst_case']:5.1f}")
    if table_out:
        write_table(the_board, folder, table_out, _plot_beside(table_out, board))


def _plot_beside(table_out: str, board: str) -> str:
    from pathlib import Path

    return str(Path(table_out).parent / "img" / f"leaderboard_{board}.png")


@leaderboard_group.command("table")
@_BOARD
@_RUN_DIR
@click.option("--eval-n", type=click.IntRange(min=1), default=None, help="as given to run [the board's: 200]")
@click.option("--out", "table_out", type=click.Path(dir_okay=False), default="docs/leaderboard.md", show_default=True)
@friendly_errors
def table_command(board: str, run_dir: str | None, eval_n: int | None, table_out: str) -> None:
    """Write the markdown table and plot of the finished rows (docs/img/leaderboard_BOARD.png beside it)."""
    from dataclasses import replace

    from arnas_zoo.leaderboard import BOARDS, write_table

    the_board = BOARDS[board] if eval_n is None else replace(BOARDS[board], eval_n=eval_n)
    click.echo(
        write_table(the_board, run_dir or f"runs/leaderboard-{board}", table_out, _plot_beside(table_out, board))
    )


@click.command("site")
@click.option("-o", "--out", type=click.Path(file_okay=False), default="site", show_default=True, help="Output folder.")
@click.option(
    "--runs",
    "run_root",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder holding the leaderboard run folders (leaderboard-BOARD) [none: board rows from the zoo].",
)
@friendly_errors
def site_command(out: str, run_root: str | None) -> None:
    """Write the zoo and the leaderboards as a static web site (sortable, filterable, offline; open index.html)."""
    from arnas_zoo.site import build_site

    index = build_site(out, run_root)
    click.echo(f"wrote {index} (open it in a browser; no server needed)")
