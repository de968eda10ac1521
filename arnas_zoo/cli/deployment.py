"""``predict`` and ``check``: running deployed models (PyTorch or ONNX) and checking their robustness."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from arnas_zoo.cli.common import friendly_errors, model_defaults, pick


@click.command("predict")
@click.argument("model_spec", metavar="MODEL_OR_ONNX")
@click.argument("images", nargs=-1, required=True)
@click.option("--top-k", type=click.IntRange(min=1), default=3, show_default=True, help="Classes to show per image.")
@click.option("--device", default="cpu", show_default=True, help="Torch device for PyTorch models (cpu, cuda, auto).")
@click.option("--providers", default="auto", show_default=True, help="ONNX Runtime providers: auto, cpu or cuda.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array instead of a table.")
@click.option("--csv", "csv_out", default=None, metavar="FILE", help="Write CSV rows (- for stdout); streams.")
@click.option("--jsonl", "jsonl_out", default=None, metavar="FILE", help="Write JSON lines (- for stdout); streams.")
@friendly_errors
def predict_command(
    model_spec: str,
    images: tuple[str, ...],
    top_k: int,
    device: str,
    providers: str,
    as_json: bool,
    csv_out: str | None,
    jsonl_out: str | None,
) -> None:
    """Classify IMAGES (PNG/JPEG files, npz batches, folders or quoted globs) with a model or an .onnx file.

    MODEL_OR_ONNX is a pretrained name (see `arnas-zoo pretrained`, e.g. arnas.mnist_linf_cpu_c4l5), a Hub
    id (org/name@v1.0), a checkpoint folder (./runs/mnist/best) or an ONNX file (model.onnx). An .onnx file
    runs on the torch-free runtime (arnas_zoo_runtime). A file that cannot be read is reported in its row
    and the others go on; the exit code is then 1.
    """
    from arnas_zoo_runtime.predict import progress_rows, write_rows

    if csv_out and jsonl_out:
        raise click.UsageError("give --csv or --jsonl, not both")
    if model_spec.lower().endswith(".onnx") and Path(model_spec).is_file():
        from arnas_zoo_runtime.predict import predict_paths
        from arnas_zoo_runtime.session import Predictor

        model = Predictor(model_spec, providers=providers)
        if not as_json:  # the JSON array is the whole of stdout and stderr together
            click.echo(f"# ONNX Runtime provider: {model.provider}", err=True)
        rows = predict_paths(model, images, top_k=top_k)
    else:
        rows = _torch_rows(model_spec, images, top_k, device, providers, say_provider=not as_json)
    out = csv_out or jsonl_out
    if as_json and not out:
        click.echo(json.dumps(list(rows), indent=1))
        failed = 0
    else:
        fmt = "csv" if csv_out else ("json" if jsonl_out else "table")
        handle = sys.stdout if out in (None, "-") else open(out, "w", newline="")  # noqa: SIM115
        try:
            _, failed = write_rows(progress_rows(rows, handle is not sys.stdout), fmt, handle)
        finally:
            if handle is not sys.stdout:
                handle.close()
    if failed:
        click.echo(f"{failed} file(s) could not be predicted (see their rows)", err=True)
        sys.exit(1)


def _torch_rows(
    model_spec: str, images: tuple[str, ...], top_k: int, device: str, providers: str, say_provider: bool
) -> Any:
    """Rows of a PyTorch model (or a folder holding one): files expanded, a bad file as its own row."""
    from arnas_zoo.deploy import load_any, predict_files
    from arnas_zoo.devices import resolve_device
    from arnas_zoo.errors import ArnasZooError
    from arnas_zoo_runtime.images import expand

    dev = resolve_device(device)
    model = load_any(model_spec, device=dev, providers=providers)
    provider = getattr(model, "provider", None)
    if provider is not None and say_provider:
        click.echo(f"# ONNX Runtime provider: {provider}", err=True)
    for path in expand(images):
        try:
            yield from predict_files(model, [path], top_k=top_k, device=dev)
        except ArnasZooError as exc:
            yield {"image": str(path), "error": str(exc).splitlines()[0]}


@click.command("serve")
@click.argument("model_spec", metavar="ONNX_OR_FOLDER")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--max-batch", type=click.IntRange(min=1), default=4, show_default=True, help="Images per run.")
@click.option(
    "--max-wait-ms",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Extra wait for more requests to merge into a run (0: merge what piled up during the last run).",
)
@click.option("--access-log", is_flag=True, help="Log one line per request.")  # fmt: skip
@click.option("--max-body-mb", type=click.FloatRange(min=0.001), default=8.0, show_default=True)
@click.option("--max-images", type=click.IntRange(min=1), default=256, show_default=True, help="Per request.")
@click.option("--providers", default="auto", show_default=True, help="ONNX Runtime providers: auto, cpu or cuda.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="ONNX Runtime CPU threads.")
@friendly_errors
def serve_command(
    model_spec: str,
    host: str,
    port: int,
    max_batch: int,
    max_wait_ms: float,
    max_body_mb: float,
    max_images: int,
    providers: str,
    threads: int | None,
    access_log: bool,
) -> None:
    """Serve an ONNX model over HTTP: POST /predict, GET /health, GET /metadata (see docs/deploy.md).

    ONNX_OR_FOLDER is an .onnx file or a checkpoint folder holding model.onnx (`arnas-zoo export onnx NAME`
    writes one for a pretrained model). Concurrent requests are merged into batches; oversized or
    malformed requests get a 4xx. Stop with Ctrl-C or SIGTERM: requests in flight finish first.
    """
    from arnas_zoo_runtime.serve import Limits, serve

    path = Path(model_spec)
    if path.is_dir():
        path = path / "model.onnx"
    if not (path.is_file() and path.suffix.lower() == ".onnx"):
        raise click.UsageError(
            f"{model_spec}: expected an .onnx file or a folder with model.onnx; for a pretrained model run "
            f"`arnas-zoo export onnx {model_spec}` first"
        )
    limits = Limits(int(max_body_mb * 1024 * 1024), max_images, max_batch, max_wait_ms)
    serve(str(path), host=host, port=port, providers=providers, threads=threads, limits=limits, access_log=access_log)


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
    from arnas_zoo.atomic import atomic_write_json
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
