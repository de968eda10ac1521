"""``predict`` and ``check``: running deployed models (PyTorch or ONNX) and checking their robustness."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from arnas_zoo.cli.common import friendly_errors, model_defaults, pick


@click.command("predict")
@click.argument("model_spec", metavar="MODEL_OR_ONNX")
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--top-k", type=click.IntRange(min=1), default=3, show_default=True, help="Classes to show per image.")
@click.option("--device", default="cpu", show_default=True, help="Torch device for PyTorch models (cpu, cuda, auto).")
@click.option("--providers", default="auto", show_default=True, help="ONNX Runtime providers: auto, cpu or cuda.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@friendly_errors
def predict_command(
    model_spec: str, images: tuple[str, ...], top_k: int, device: str, providers: str, as_json: bool
) -> None:
    """Classify IMAGES (PNG/JPEG files or npz batches) with a model or an .onnx file.

    MODEL_OR_ONNX is a pretrained name (see `arnas-zoo pretrained`, e.g. arnas.mnist_linf_cpu_c4l5), a Hub
    id (org/name@v1.0), a checkpoint folder (./runs/mnist/best) or an ONNX file (model.onnx).
    """
    from arnas_zoo.deploy import load_any, predict_files
    from arnas_zoo.devices import resolve_device

    dev = resolve_device(device)
    model = load_any(model_spec, device=dev, providers=providers)
    rows = predict_files(model, images, top_k=top_k, device=dev)
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    provider = getattr(model, "provider", None)
    if provider is not None:
        click.echo(f"# ONNX Runtime provider: {provider}", err=True)
    for row in rows:
        best = ", ".join(f"{t['name']} {t['probability']:.3f}" for t in row["top"])
        click.echo(f"{row['image']}\t{best}")


@click.command("check")
@click.argument("onnx_file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--dataset",
    default=None,
    help="mnist, cifar10 (offline: the last 1000 train rows), cifar100, digits, or an .npz file [the model's]",
)
@click.option(
    "--n", "n", type=click.IntRange(min=1), default=100, show_default=True, help="Number of points (the first n)."
)
@click.option("--source", default=None, help="The PyTorch twin: checkpoint folder, Hub id or pretrained name.")
@click.option("--eps", default=None, help="Perturbation budget, e.g. 0.3 or 8/255 [the file's trained eps].")
@click.option("--norm", type=click.Choice(["linf", "l2"]), default=None, help="Threat model [the file's].")
@click.option(
    "--queries", type=click.IntRange(min=1), default=1000, show_default=True, help="Square attack query budget."
)
@click.option(
    "--pgd-steps", type=click.IntRange(min=1), default=20, show_default=True, help="PGD steps on the twin (transfer)."
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--probes", is_flag=True, help="Also run the gradient-masking probes on the twin (several PGD-20 runs).")
@click.option("--providers", default="auto", show_default=True, help="ONNX Runtime providers: auto, cpu or cuda.")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder with <dataset>/<split>.npz [~/.cache/arnas_zoo/data, then ../shared/data].",
)
@click.option(
    "--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Also write the figures as JSON."
)
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@friendly_errors
def check_command(
    onnx_file: str,
    dataset: str | None,
    n: int,
    source: str | None,
    eps: str | None,
    norm: str | None,
    queries: int,
    pgd_steps: int,
    seed: int,
    probes: bool,
    providers: str,
    data_dir: str | None,
    json_out: str | None,
    quiet: bool,
) -> None:
    """Attack ONNX_FILE (Square, through ONNX Runtime) and its PyTorch twin; say if they are equally robust.

    Exit code 1 when the ONNX file is not as robust as --source within sampling error or a sanity
    check fails.
    """
    from arnas_zoo.checkpoint import atomic_write_json
    from arnas_zoo.deploy import check_onnx
    from arnas_zoo.evaluate import parse_eps
    from arnas_zoo.onnx import OnnxModel
    from arnas_zoo.progress import Progress

    defaults = model_defaults(OnnxModel(onnx_file, providers="cpu", check_range=False))
    notes: list[str] = []
    dataset = pick(dataset, "dataset", defaults, "digits", notes)
    if notes:
        click.echo("using " + "; ".join(notes), err=True)
    result = check_onnx(
        onnx_file,
        str(dataset),
        n=n,
        source=source,
        eps=parse_eps(eps) if eps is not None else None,
        norm=norm,
        square_queries=queries,
        pgd_steps=pgd_steps,
        seed=seed,
        providers=providers,
        data_dir=data_dir,
        probes=probes,
        progress=Progress(enabled=not quiet),
    )
    click.echo(result.summary())
    if json_out is not None:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(json_out), result.to_dict())
    if result.consistent is False or not all(result.sanity.values()):
        sys.exit(1)
