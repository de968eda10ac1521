"""``arnas-zoo export ...`` (and ``python -m export ...`` in a checkout): publish, export ONNX, register.

Installed with the package as ``arnas_zoo_export`` and plugged into the ``arnas-zoo`` command line
through the ``arnas_zoo.commands`` entry point, so a user who ran ``pip install 'arnas-zoo[onnx]'``
can export and publish without the repository.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from arnas_zoo.cli.common import SuggestingGroup, friendly_errors


@click.group(
    "export", cls=SuggestingGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110}
)
def main() -> None:
    """Export ONNX, publish to the Hugging Face Hub, register pretrained entries, render model cards."""


@main.command("hub")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--repo-id", required=True, help="Hub repository, 'org/name'.")
@click.option("--tag", default=None, help="Tag the uploaded commit (e.g. v1.0).")
@click.option("--private", is_flag=True, help="Create the repository as private.")
@click.option("--dry-run", is_flag=True, help="Write the Hub-ready folder only; upload nothing.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Hub-ready folder [FOLDER/hub].")
@click.option("--license", "license_", default="mit", show_default=True, help="License id for the card metadata.")
@click.option("--no-onnx", is_flag=True, help="Leave model.onnx out even when the folder has one.")
@click.option("--token", default=None, envvar="HF_TOKEN", help="Hub token [$HF_TOKEN or the saved login].")
@click.option(
    "--reuse",
    is_flag=True,
    help="Publish the Hub-ready folder already at --out (built for this --repo-id from FOLDER's very files).",
)
@friendly_errors
def hub_command(
    folder: Path,
    repo_id: str,
    tag: str | None,
    private: bool,
    dry_run: bool,
    out: Path | None,
    license_: str,
    no_onnx: bool,
    token: str | None,
    reuse: bool,
) -> None:
    """Build the Hub-ready folder of FOLDER (with its model card) and publish it to --repo-id."""
    from .hub_publish import build_hub_folder, check_hub_folder, publish

    out = out or folder / "hub"
    if reuse:
        check_hub_folder(folder, out, repo_id)
    else:
        build_hub_folder(folder, out, repo_id=repo_id, license=license_, include_onnx=not no_onnx)
    click.echo(f"Hub-ready folder: {out} ({', '.join(sorted(p.name for p in out.iterdir()))})")
    if dry_run:
        click.echo("dry run: nothing uploaded")
        return
    result = publish(out, repo_id, tag=tag, private=private, token=token)
    click.echo(f"published {result.url} commit {result.commit}" + (f" tag {result.tag}" if result.tag else ""))
    click.echo(f"load it with: arnas_zoo.load({(repo_id + '@' + (tag or result.commit))!r})")
    click.echo(
        f"register it with: arnas-zoo export register {folder} --name ARCH.VARIANT --repo-id {repo_id} "
        f"--revision {result.commit}"
    )


@main.command("onnx")
@click.argument("model")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="ONNX file to write [FOLDER/model.onnx; for a zoo name or Hub spec ./NAME/model.onnx].",
)
@click.option("--opset", type=click.IntRange(min=7, max=30), default=None, help="ONNX opset [the exporter's default].")
@click.option("--fp16", is_flag=True, help="Export half-precision weights and inputs.")
@click.option(
    "--images",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="npz batch of real images for the parity check [the model's evaluation data].",
)
@click.option(
    "-n", "--n", "n", type=click.IntRange(min=1), default=64, show_default=True, help="Images in the parity check."
)
@friendly_errors
def onnx_command(model: str, output: Path | None, opset: int | None, fp16: bool, images: Path | None, n: int) -> None:
    """Export MODEL to one self-contained ONNX file and check it against PyTorch.

    MODEL is a checkpoint folder, a zoo name (arnas.cifar10_linf_cpu_c4l5_mix) or a Hub spec
    (org/name[@rev]). A zoo or Hub checkpoint is first copied (sha256-checked) into the output's folder,
    which then holds everything a deployment needs: config.json, model.safetensors, metrics.json,
    model.onnx and its parity record onnx.json.
    """
    from arnas_zoo.naming import copy_checkpoint, folder_name, is_model_name

    from .onnx_export import ONNX_RECORD, export_folder

    if is_model_name(model):
        folder = output.parent if output is not None else Path(folder_name(model))
        copy_checkpoint(model, folder)
        click.echo(f"copied {model} into {folder}/")
    else:
        folder = Path(model)
        if not folder.is_dir():
            from arnas_zoo.sources import unknown_spec

            raise unknown_spec(model)
    path, report = export_folder(folder, output, opset=opset, fp16=fp16, images=images, n=n)
    click.echo(
        f"wrote {path}: onnx.checker full check passed; parity on {report.n} images ({report.images}): "
        f"max |diff| {report.max_abs_diff:.2e} <= {report.tolerance:.0e}, top-1 agreement {report.top1_agreement:.3f}"
    )
    click.echo(f"recorded in {folder / ONNX_RECORD}")


@main.command("register")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--name", required=True, help="Registry name, '<arch>.<variant>' (e.g. arnas.mnist_linf).")
@click.option("--description", default="", help="One or two sentences for the registry entry.")
@click.option("--data", default="", help="The exact training data mix and split.")
@click.option("--repo-id", default=None, help="Hub source instead of a bundled folder.")
@click.option("--revision", default=None, help="The 40-hex commit of --repo-id (from `arnas-zoo export hub`).")
@click.option(
    "--goals", default=None, help="Goal lines the card states the figures against: clean=0.75,autoattack=0.4."
)
@click.option(
    "--index",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Add the entry to this index.json (a repository's arnas_zoo/pretrained/index.json).",
)
@friendly_errors
def register_command(
    folder: Path,
    name: str,
    description: str,
    data: str,
    repo_id: str | None,
    revision: str | None,
    goals: str | None,
    index: Path | None,
) -> None:
    """Print (or add to --index) the registry entry of checkpoint FOLDER, every file's sha256 pinned."""
    import json
    from dataclasses import replace

    from arnas_zoo.errors import DuplicateNameError
    from arnas_zoo.pretrained import index_entry, parse_goals, read_index, write_index

    entry = index_entry(folder, name, description=description, data=data, repo_id=repo_id, revision=revision)
    if goals:
        entry = replace(entry, goals=parse_goals(goals))  # type: ignore[arg-type]  # validated and stored as pairs
    if index is None:
        click.echo(json.dumps(entry.to_dict(), indent=1))
        if repo_id is None:
            click.echo(
                f"# copy the folder to arnas_zoo/pretrained/{name}/ (config.json, model.safetensors, metrics.json)"
            )
        return
    entries = read_index(index) if index.is_file() else []
    if any(e.name == entry.name for e in entries):
        raise DuplicateNameError(f"{index}: {entry.name!r} is already registered; pick another name")
    write_index(index, [*entries, entry])
    click.echo(f"added {entry.name} to {index}")


@main.command("card")
@click.argument("model")
@click.option("--repo-id", default=None, help="The Hub repo the card is for (its load line and title).")
@friendly_errors
def card_command(model: str, repo_id: str | None) -> None:
    """Print the model card of MODEL (a checkpoint folder, a zoo name or a Hub spec): the README.md `hub` writes."""
    from arnas_zoo.naming import checkpoint_folder, is_model_name

    from .card import render_card

    name = model if is_model_name(model) else None
    click.echo(render_card(checkpoint_folder(model), repo_id, load_name=name), nl=False)


@main.command("zoo-card")
@click.option("--check", is_flag=True, help="Exit 1 if the file differs from the registry instead of writing it.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("MODEL_CARD.md"),
    show_default=True,
    help="Where to write (the repository root's MODEL_CARD.md).",
)
@friendly_errors
def zoo_card_command(check: bool, output: Path) -> None:
    """Regenerate MODEL_CARD.md (the zoo's card) from the pretrained registry."""
    from arnas_zoo.atomic import atomic_write_text
    from arnas_zoo.pretrained import list_pretrained

    from .card import render_zoo_card

    text = render_zoo_card(list(list_pretrained()))
    if check:
        if not output.is_file() or output.read_text() != text:
            click.echo(f"{output} is out of date with the registry: run `arnas-zoo export zoo-card`", err=True)
            sys.exit(1)
        click.echo(f"{output} is up to date")
        return
    atomic_write_text(output, text)
    click.echo(f"wrote {output}")
