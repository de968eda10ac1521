"""``python -m export``: publish checkpoint folders to the Hub, export ONNX, print registry lines."""

from __future__ import annotations

from pathlib import Path

import click

from arnas_zoo.cli import friendly_errors


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
def main() -> None:
    """Publish and deploy arnas-zoo checkpoint folders (config.json + model.safetensors)."""


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
) -> None:
    """Build the Hub-ready folder of FOLDER (with its model card) and publish it to --repo-id."""
    from export.hub_publish import build_hub_folder, publish

    out = out or folder / "hub"
    build_hub_folder(folder, out, repo_id=repo_id, license=license_, include_onnx=not no_onnx)
    click.echo(f"Hub-ready folder: {out} ({', '.join(sorted(p.name for p in out.iterdir()))})")
    if dry_run:
        click.echo("dry run: nothing uploaded")
        return
    result = publish(out, repo_id, tag=tag, private=private, token=token)
    click.echo(f"published {result.url} commit {result.commit}" + (f" tag {result.tag}" if result.tag else ""))
    click.echo(f"load it with: arnas_zoo.load({(repo_id + '@' + (tag or result.commit))!r})")
    click.echo(
        f"pin it in arnas_zoo/pretrained.py: repo_id={repo_id!r}, revision={result.commit!r}, sha256={result.sha256!r}"
    )


@main.command("onnx")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="ONNX file to write [FOLDER/model.onnx].",
)
@click.option("--opset", type=int, default=None, help="ONNX opset [the exporter's default].")
@click.option("--fp16", is_flag=True, help="Export half-precision weights and inputs.")
@click.option(
    "--images",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="npz batch of real images for the parity check [the matching ../shared/data set].",
)
@click.option("-n", "--n", "n", type=int, default=64, show_default=True, help="Images in the parity check.")
@friendly_errors
def onnx_command(folder: Path, output: Path | None, opset: int | None, fp16: bool, images: Path | None, n: int) -> None:
    """Export checkpoint FOLDER to one self-contained ONNX file and check it against PyTorch."""
    from export.onnx_export import ONNX_RECORD, export_folder

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
@click.option("--repo-id", default=None, help="Hub source instead of a bundled folder.")
@click.option("--revision", default=None, help="The 40-hex commit of --repo-id (from `python -m export hub`).")
@friendly_errors
def register_command(folder: Path, name: str, description: str, repo_id: str | None, revision: str | None) -> None:
    """Print the register(PretrainedSpec(...)) line for checkpoint FOLDER (sha256 computed)."""
    from arnas_zoo.pretrained import spec_line

    click.echo(spec_line(folder, name, description=description, repo_id=repo_id, revision=revision))
    if repo_id is None:
        click.echo(
            f"# and copy the folder to arnas_zoo/pretrained/{name}/ (config.json, model.safetensors, metrics.json)"
        )


@main.command("card")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--repo-id", default=None)
@friendly_errors
def card_command(folder: Path, repo_id: str | None) -> None:
    """Print the model card README.md that `hub` would write for FOLDER."""
    from export.card import render_card

    click.echo(render_card(folder, repo_id), nl=False)


@main.command("zoo-card")
@click.option("--check", is_flag=True, help="Exit 1 if MODEL_CARD.md differs from the registry instead of writing it.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write [MODEL_CARD.md at the repository root].",
)
@friendly_errors
def zoo_card_command(check: bool, output: Path | None) -> None:
    """Regenerate MODEL_CARD.md (the zoo's card) from the pretrained registry."""
    import sys

    from arnas_zoo.checkpoint import atomic_write_text
    from arnas_zoo.pretrained import list_pretrained
    from export.card import ZOO_CARD_FILE, render_zoo_card
    from export.onnx_export import REPO

    output = output or REPO / ZOO_CARD_FILE
    text = render_zoo_card(list(list_pretrained()))
    if check:
        if not output.is_file() or output.read_text() != text:
            click.echo(
                f"{output} is out of date with arnas_zoo/pretrained.py: run `python -m export zoo-card`", err=True
            )
            sys.exit(1)
        click.echo(f"{output} is up to date")
        return
    atomic_write_text(output, text)
    click.echo(f"wrote {output}")


if __name__ == "__main__":
    main()
