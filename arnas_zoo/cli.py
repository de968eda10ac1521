"""The ``arnas-zoo`` command line: thin click commands over library functions.

Every command has ``--help``; expected failures (bad input, unknown names, missing files) print one
line on stderr and exit with a non-zero code instead of a traceback.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from arnas_zoo.errors import ArnasZooError

F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(func: F) -> F:
    """Turn the package's typed errors (and missing files) into a one-line message and exit 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (ArnasZooError, FileNotFoundError, PermissionError) as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            click.echo(f"error: {message}", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="arnas-zoo")
def main() -> None:
    """arnas-zoo: adversarially robust architectures found by NAS (ARNAS and peers)."""


# ---- deploy commands (predict, check) ----
@main.command("predict")
@click.argument("model_spec", metavar="MODEL_OR_ONNX")
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--top-k", type=int, default=3, show_default=True, help="Classes to show per image.")
@click.option("--device", default="cpu", show_default=True, help="Torch device for PyTorch models (cpu, cuda, auto).")
@click.option("--providers", default="auto", show_default=True, help="ONNX Runtime providers: auto, cpu or cuda.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@friendly_errors
def predict_command(model_spec: str, images: tuple[str, ...], top_k: int, device: str, providers: str, as_json: bool) -> None:
    """Classify IMAGES (PNG/JPEG files or npz batches) with a model or an .onnx file.

    MODEL_OR_ONNX is a pretrained name (arnas.mnist_linf), a Hub id (org/name@v1.0), a checkpoint
    folder (./runs/mnist) or an ONNX file (model.onnx).
    """
    import json

    from arnas_zoo.deploy import load_any, predict_files

    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_any(model_spec, device=device, providers=providers)
    rows = predict_files(model, images, top_k=top_k, device=device)
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    for row in rows:
        best = ", ".join(f"{t['name']} {t['probability']:.3f}" for t in row["top"])
        click.echo(f"{row['image']}\t{best}")


@main.command("check")
@click.argument("onnx_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--dataset", required=True, help="mnist, cifar10, cifar100 (from --data-dir) or an .npz file.")
@click.option("--n", "n", type=int, default=100, show_default=True, help="Number of test images (the first n).")
@click.option("--source", default=None, help="The PyTorch twin: checkpoint folder, Hub id or pretrained name.")
@click.option("--eps", type=float, default=None, help="Perturbation budget [the file's trained eps].")
@click.option("--norm", type=click.Choice(["Linf", "L2"]), default=None, help="Threat model [the file's].")
@click.option("--queries", type=int, default=1000, show_default=True, help="Square attack query budget.")
@click.option("--pgd-steps", type=int, default=20, show_default=True, help="PGD steps on the twin (transfer).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--providers", default="auto", show_default=True, help="ONNX Runtime providers: auto, cpu or cuda.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, envvar="ARNAS_ZOO_SHARED_DATA",
              help="Folder of the npz data sets [$ARNAS_ZOO_SHARED_DATA].")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Also write the figures as JSON.")
@friendly_errors
def check_command(
    onnx_file: str, dataset: str, n: int, source: str | None, eps: float | None, norm: str | None, queries: int,
    pgd_steps: int, seed: int, providers: str, data_dir: str | None, json_out: str | None,
) -> None:
    """Attack ONNX_FILE (Square, through ONNX Runtime) and its PyTorch twin; say if they are equally robust.

    Exit code 1 when the ONNX file is not as robust as --source within sampling error or a sanity
    check fails.
    """
    import json
    from pathlib import Path

    from arnas_zoo.deploy import check_onnx

    result = check_onnx(onnx_file, dataset, n=n, source=source, eps=eps, norm=norm, square_queries=queries,
                        pgd_steps=pgd_steps, seed=seed, providers=providers, data_dir=data_dir)
    click.echo(result.summary())
    if json_out is not None:
        Path(json_out).write_text(json.dumps(result.to_dict(), indent=1) + "\n")
    if result.consistent is False or not all(result.sanity.values()):
        sys.exit(1)
# ---- end of deploy commands ----


if __name__ == "__main__":  # pragma: no cover
    main()
