"""``park`` and ``unpark``: a folder of long runs kept somewhere that outlives the machine."""

from __future__ import annotations

import json

import click

from arnas_zoo.cli.common import friendly_errors


@click.command("park")
@click.argument("root", type=click.Path(exists=True, file_okay=False))
@click.argument("dest")
@click.option("--keep", type=click.IntRange(min=1), default=3, show_default=True, help="folder DEST: snapshots kept")
@click.option("--force", is_flag=True, help="park even when ROOT is behind the last park at DEST")
@click.option("--json", "as_json", is_flag=True, help="print the park as JSON")
@friendly_errors
def park_command(root: str, dest: str, keep: int, force: bool, as_json: bool) -> None:
    """Snapshot the runs under ROOT to DEST, verified, so they can resume on another machine.

    ROOT is a folder of run folders (`scripts/zoo_runs.sh`'s ROOT) or one run folder. DEST is a folder (e.g.
    on a mounted volume) or hf://ORG/NAME, a private Hugging Face Hub repo (HF_TOKEN). Locks, claims,
    temporary files and the kept previous states are left out; every resume state is verified after the
    copy; PARKED.json lists each file's SHA-256 and each run's position. Runs may go on while it copies.
    `arnas-zoo unpark DEST ROOT` brings it back.
    """
    from arnas_zoo.runs.park import park

    parked = park(root, dest, keep=keep, force=force)
    click.echo(json.dumps(parked.__dict__, indent=2, sort_keys=True) if as_json else parked.format())


@click.command("unpark")
@click.argument("source")
@click.argument("root", type=click.Path(file_okay=False))
@click.option("--at", default=None, help="an earlier snapshot: its folder name, or a Hub commit or tag [latest]")
@click.option("--force", is_flag=True, help="take the parked version of files that differ (ROOT's are moved aside)")
@click.option("--dry-run", is_flag=True, help="verify the park and say what it would add and replace; write nothing")
@click.option("--missing-ok", is_flag=True, help="exit 0 when SOURCE holds no park yet (a first start)")
@click.option("--json", "as_json", is_flag=True, help="print what was done as JSON")
@friendly_errors
def unpark_command(
    source: str, root: str, at: str | None, force: bool, dry_run: bool, missing_ok: bool, as_json: bool
) -> None:
    """Bring runs parked at SOURCE back into ROOT; resume them with the same commands as before.

    Every file is checked against PARKED.json and every state's digest before anything is written. Files
    ROOT lacks are added, identical ones skipped; a file that differs is refused unless --force, which moves
    ROOT's version into ROOT/.replaced-<time>/ first. Nothing is deleted.
    """
    from arnas_zoo.runs.park import NothingParkedError, unpark

    try:
        done = unpark(source, root, force=force, at=at, dry_run=dry_run)
    except NothingParkedError as exc:
        if not missing_ok:
            raise
        click.echo(f"nothing to unpark: {exc}")
        return
    click.echo(json.dumps(done.__dict__, indent=2, sort_keys=True) if as_json else done.format())
