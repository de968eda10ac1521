"""The ``arnas-zoo`` command line: thin click commands over library functions.

Every command has ``--help``; expected failures (bad input, unknown names, missing files) print one
line on stderr and exit with a non-zero code instead of a traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from arnas_zoo.errors import ArnasZooError, ConfigError, GenotypeError

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


# ---- foundation commands: list, info, draw, genotype ----
PLACEMENT_LETTERS = {"A": "accurate", "R": "robust", "N": "normal"}


def parse_placement(text: str) -> tuple[str, ...]:
    """``A-A-R`` -> ("accurate", "accurate", "robust"); full cell names also work (``accurate-accurate-robust``)."""
    parts = [p.strip() for p in text.split("-")]
    if len(parts) != 3 or not all(parts):
        raise ConfigError(f"--placement: expected three stages like A-A-R, got {text!r}")
    return tuple(PLACEMENT_LETTERS.get(p.upper(), p) if len(p) == 1 else p for p in parts)


def parse_filters(text: str) -> tuple[int, ...]:
    """``1-2-2`` -> (1, 2, 2)."""
    try:
        values = tuple(int(p) for p in text.split("-"))
    except ValueError:
        raise ConfigError(f"--filters: expected three integers like 1-2-2, got {text!r}") from None
    if len(values) != 3:
        raise ConfigError(f"--filters: expected three integers like 1-2-2, got {text!r}")
    return values


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
    overrides: dict[str, Any] = {}
    for key in ("layers", "init_channels", "num_classes", "in_channels", "input_size"):
        value = kwargs.pop(key, None)
        if value is not None:
            overrides[key] = value
    placement = kwargs.pop("placement", None)
    if placement:
        overrides["placement"] = parse_placement(placement)
    filters = kwargs.pop("filters", None)
    if filters:
        overrides["filter_multipliers"] = parse_filters(filters)
    return overrides


@main.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list instead of a table.")
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
            f"{row['name']:<18} {row['space']:<13} {row['params'] / 1e6:>8.4f}M {row['flops_paper'] / 1e6:>9.2f}M  {row['paper']}"
        )


@main.command("pretrained")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list instead of a table.")
def pretrained_command(as_json: bool) -> None:
    """List the pretrained checkpoints that arnas_zoo.load(NAME) finds (pinned by sha256)."""
    from dataclasses import asdict

    from arnas_zoo.pretrained import list_pretrained

    specs = list(list_pretrained())
    if as_json:
        click.echo(json.dumps([asdict(spec) for spec in specs], indent=1))
        return
    click.echo(f"{'name':<34} {'data':<8} {'threat':<6} {'eps':>7}  source")
    for spec in specs:
        click.echo(f"{spec.name:<34} {spec.dataset:<8} {spec.threat_model:<6} {spec.eps:>7.4g}  {spec.source}")


@main.command("info")
@click.argument("target")
@macro_options
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object (params, params_with_aux, macs, flops_paper, ...)."
)
@friendly_errors
def info_command(target: str, as_json: bool, **kwargs: Any) -> None:
    """Structure and statistics of TARGET: a registry name, a genotype JSON, a config.json or a checkpoint folder."""
    from arnas_zoo.introspect import describe

    summary = describe(target, **collect_overrides(kwargs))
    if as_json:
        click.echo(json.dumps(summary, indent=1))
        return
    from arnas_zoo.introspect import format_summary

    click.echo(format_summary(summary))


@main.command("draw")
@click.argument("target")
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False), help="Output file (.png, .svg or .pdf)."
)
@click.option("--cell", "cell_name", help="Draw only this cell type (default: every cell type, one file each).")
@click.option("--layout", is_flag=True, help="Draw the network's layout of cell types instead of the cells.")
@macro_options
@friendly_errors
def draw_command(target: str, output: str, cell_name: str | None, layout: bool, **kwargs: Any) -> None:
    """Draw the cells (or the layout) of TARGET: a registry name, a genotype JSON or a checkpoint folder.

    With several cell types and no --cell, writes OUTPUT with the cell name added before the
    suffix (arnas-accurate.png, arnas-robust.png, ...).
    """
    from pathlib import Path

    from arnas_zoo.draw import draw_cell, draw_layout
    from arnas_zoo.registry import resolve_config

    config = resolve_config(target, **collect_overrides(kwargs))
    out = Path(output)
    if layout:
        click.echo(str(draw_layout(config, out)))
        return
    if config.genotype is None:
        raise ConfigError(f"{target}: a hand-crafted network has no cells to draw; try --layout on a cell network")
    names = [cell_name] if cell_name else list(config.genotype.cells)
    for name in names:
        path = out if len(names) == 1 else out.with_name(f"{out.stem}-{name}{out.suffix}")
        click.echo(str(draw_cell(config.genotype, name, path)))


@main.group("genotype")
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


@genotype_group.command("show")
@click.argument("target")
@friendly_errors
def genotype_show(target: str) -> None:
    """Pretty-print the genotype of TARGET (registry name, genotype JSON or checkpoint folder)."""
    from arnas_zoo.registry import resolve_config

    config = resolve_config(target)
    if config.genotype is None:
        raise ConfigError(f"{target}: hand-crafted network ({config.arch}); it has no genotype")
    click.echo(config.genotype.pretty())


@genotype_group.command("export")
@click.argument("target")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write here instead of stdout.")
@friendly_errors
def genotype_export(target: str, output: str | None) -> None:
    """Write the genotype of TARGET (e.g. a registry name) as genotype JSON."""
    from arnas_zoo.registry import resolve_config

    config = resolve_config(target)
    if config.genotype is None:
        raise ConfigError(f"{target}: hand-crafted network ({config.arch}); it has no genotype")
    if output:
        click.echo(str(config.genotype.save(output)))
    else:
        click.echo(config.genotype.to_json())


# ---- training commands (arnas_zoo.training, arnas_zoo.quickstart) ----
def _key_values(pairs: tuple[str, ...], what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint=what)
        key, value = pair.split("=", 1)
        out[key.strip()] = value.strip()
    return out


@main.command("train")
@click.argument("arch")
@click.option(
    "--recipe",
    default="arnas",
    show_default=True,
    help="preset name (arnas, advrush, trades, fast, madry_mnist, cpu_digits, cpu_mnist, cpu_cifar10) or a recipe .json",
)
@click.option(
    "--dataset", default="digits", show_default=True, help="digits (embedded), mnist, cifar10, cifar100, svhn, ..."
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="folder with <dataset>/train.npz or the standard files",
)
@click.option(
    "--val-rows",
    type=int,
    default=1000,
    show_default=True,
    help="the last N training rows are held out to select the best epoch (0: no selection)",
)
@click.option(
    "--set",
    "recipe_sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="override a recipe field, e.g. --set epochs=10 --set eps=8/255",
)
@click.option(
    "--model-set",
    "model_sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="override a model config field, e.g. --model-set init_channels=8",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="run folder (state, logs, best/ and last/)",
)
@click.option("--resume", is_flag=True, help="continue the run in --out exactly where it stopped")
@click.option(
    "--device", default="auto", show_default=True, help="auto picks CUDA when present (LOCAL_RANK under torchrun)"
)
@click.option("--name", default=None, help="name written into config.json (default: the architecture's)")
@click.option(
    "--eval-attacks",
    default="fgsm,pgd20",
    show_default=True,
    help="attacks run on the best checkpoint at the end (comma-separated; 'none' to skip)",
)
@click.option(
    "--eval-n", type=int, default=1000, show_default=True, help="first N test points for the final evaluation"
)
@click.option("--no-progress", is_flag=True, help="hide the progress bars")
@friendly_errors
def train_command(
    arch: str,
    recipe: str,
    dataset: str,
    data_dir: str | None,
    val_rows: int,
    recipe_sets: tuple[str, ...],
    model_sets: tuple[str, ...],
    out_dir: str,
    resume: bool,
    device: str,
    name: str | None,
    eval_attacks: str,
    eval_n: int,
    no_progress: bool,
) -> None:
    """Adversarially train ARCH (a registry name) and write a run folder; works under torchrun (DDP)."""
    import os

    from arnas_zoo.training import run_training

    result = run_training(
        arch,
        recipe,
        dataset,
        data_dir=data_dir,
        val_rows=val_rows,
        recipe_overrides=_key_values(recipe_sets, "--set"),
        model_overrides=_key_values(model_sets, "--model-set"),
        out_dir=out_dir,
        resume=resume,
        device=device,
        progress=not no_progress,
        name=name,
        eval_attacks=[]
        if eval_attacks.strip().lower() == "none"
        else [a.strip() for a in eval_attacks.split(",") if a.strip()],
        eval_n=eval_n,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        last = result.history[-1] if result.history else {}
        summary = {k: last[k] for k in ("epoch", "train_loss", "val_clean_acc", "val_robust_acc") if k in last}
        click.echo(f"finished: {summary}; best {result.best}")
        click.echo(f"checkpoint folders: {result.best_dir} (best), {result.last_dir} (last)")


@main.command("quickstart")
@click.option("--out", "out_dir", default="runs/quickstart", show_default=True, type=click.Path(file_okay=False))
@click.option("--epochs", type=int, default=None, help="override the recipe's 10 epochs")
@click.option("--device", default="auto", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--train-n", type=int, default=None, help="first N training images only (smoke test)")
@click.option("--test-n", type=int, default=None, help="first N test images only (smoke test)")
@click.option("--no-progress", is_flag=True)
@friendly_errors
def quickstart_command(
    out_dir: str, epochs: int | None, device: str, seed: int, train_n: int | None, test_n: int | None, no_progress: bool
) -> None:
    """Train a small ARNAS network with and without adversarial training on digits (offline) and attack both."""
    from arnas_zoo.quickstart import quickstart

    result = quickstart(
        out_dir, epochs=epochs, device=device, progress=not no_progress, seed=seed, train_n=train_n, test_n=test_n
    )
    click.echo(result.table())
    click.echo(
        f"({result.settings['test']}; {result.settings['attacks']}; {result.seconds:.0f} s on "
        f"{result.settings['device']})"
    )
    click.echo(f"report: {result.out_dir / 'report.md'}")


# ---- end of training commands ----


# ---- deploy commands (predict, check) ----
@main.command("predict")
@click.argument("model_spec", metavar="MODEL_OR_ONNX")
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--top-k", type=int, default=3, show_default=True, help="Classes to show per image.")
@click.option("--device", default="cpu", show_default=True, help="Torch device for PyTorch models (cpu, cuda, auto).")
@click.option("--providers", default="auto", show_default=True, help="ONNX Runtime providers: auto, cpu or cuda.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@friendly_errors
def predict_command(
    model_spec: str, images: tuple[str, ...], top_k: int, device: str, providers: str, as_json: bool
) -> None:
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
@click.option(
    "--dataset",
    required=True,
    help="mnist, cifar100 (test split), cifar10 (validation: last 1000 train rows), digits, or an .npz file.",
)
@click.option("--n", "n", type=int, default=100, show_default=True, help="Number of test images (the first n).")
@click.option("--source", default=None, help="The PyTorch twin: checkpoint folder, Hub id or pretrained name.")
@click.option("--eps", type=float, default=None, help="Perturbation budget [the file's trained eps].")
@click.option("--norm", type=click.Choice(["linf", "l2"]), default=None, help="Threat model [the file's].")
@click.option("--queries", type=int, default=1000, show_default=True, help="Square attack query budget.")
@click.option("--pgd-steps", type=int, default=20, show_default=True, help="PGD steps on the twin (transfer).")
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
@friendly_errors
def check_command(
    onnx_file: str,
    dataset: str,
    n: int,
    source: str | None,
    eps: float | None,
    norm: str | None,
    queries: int,
    pgd_steps: int,
    seed: int,
    probes: bool,
    providers: str,
    data_dir: str | None,
    json_out: str | None,
) -> None:
    """Attack ONNX_FILE (Square, through ONNX Runtime) and its PyTorch twin; say if they are equally robust.

    Exit code 1 when the ONNX file is not as robust as --source within sampling error or a sanity
    check fails.
    """
    import json
    from pathlib import Path

    from arnas_zoo.deploy import check_onnx

    result = check_onnx(
        onnx_file,
        dataset,
        n=n,
        source=source,
        eps=eps,
        norm=norm,
        square_queries=queries,
        pgd_steps=pgd_steps,
        seed=seed,
        providers=providers,
        data_dir=data_dir,
        probes=probes,
    )
    click.echo(result.summary())
    if json_out is not None:
        Path(json_out).write_text(json.dumps(result.to_dict(), indent=1) + "\n")
    if result.consistent is False or not all(result.sanity.values()):
        sys.exit(1)


# ---- end of deploy commands ----


# ---- evaluation commands (robust accuracy, transfer matrix) ----
def _load_eval_data(
    dataset: str, split: str, data_dir: str | None, download: bool, val_size: int | None, n: int | None, device: Any
) -> Any:
    from arnas_zoo.data import load_dataset, split_train_val

    data = load_dataset(dataset, split, data_dir=data_dir, device=device, download=download)
    if val_size is not None:
        _, data = split_train_val(data, val_size)
    return data.first(n)


def _resolve_loudly(spec: str, device: Any, dataset: str) -> Any:
    from arnas_zoo.evaluate import resolve_model

    resolved = resolve_model(spec, device, dataset=dataset)
    if not resolved.trained:
        click.echo(
            f"WARNING: {spec!r} is a registry architecture with RANDOM, UNTRAINED weights; its accuracies "
            "mean nothing. Pass a checkpoint folder (config.json + model.safetensors) to evaluate a trained "
            "model.",
            err=True,
        )
    return resolved


_data_options = [
    click.option(
        "--dataset",
        default="digits",
        show_default=True,
        help="digits (embedded), mnist, cifar10, cifar100, svhn, tinyimagenet",
    ),
    click.option("--split", default="test", show_default=True, help="split to read (train/test)"),
    click.option(
        "--data-dir",
        type=click.Path(file_okay=False),
        default=None,
        help="folder with <dataset>/<split>.npz or the torchvision files (default: ~/.cache/arnas_zoo/data, "
        "then ../shared/data)",
    ),
    click.option("--download", is_flag=True, help="download the dataset with torchvision first (needs a network)"),
    click.option(
        "--val-size",
        type=int,
        default=None,
        help="use the LAST K rows of the split (the validation rows held out from training)",
    ),
    click.option("--n", "n", type=int, default=None, help="evaluate the first n points (default: all)"),
    click.option("--eps", default="8/255", show_default=True, help="radius; fractions like 8/255 are accepted"),
    click.option("--norm", type=click.Choice(["linf", "l2"]), default="linf", show_default=True),
    click.option("--batch-size", type=int, default=128, show_default=True),
    click.option("--device", default="auto", show_default=True, help="auto picks CUDA when present"),
    click.option("--seed", type=int, default=0, show_default=True),
    click.option(
        "--json",
        "json_out",
        type=click.Path(dir_okay=False),
        default=None,
        help="write the results as JSON (metrics.json format for eval)",
    ),
    click.option("--quiet", is_flag=True, help="no progress bars"),
]


def _with_data_options(func: F) -> F:
    for option in reversed(_data_options):
        func = option(func)
    return func


@main.command("eval")
@click.argument("model")
@_with_data_options
@click.option(
    "--attacks",
    default="fgsm,pgd20",
    show_default=True,
    help="comma-separated: fgsm, pgd20, pgd100, pgd<K>[-cw][x<R>], apgd-ce, apgd-t, fab-t, square, aa, "
    "aa-plus, aa-rand",
)
@click.option("--no-checks", is_flag=True, help="skip the gradient-masking sanity probes")
@click.option("--check-n", type=int, default=128, show_default=True, help="points used by the sanity probes")
@friendly_errors
def eval_command(
    model: str,
    dataset: str,
    split: str,
    data_dir: str | None,
    download: bool,
    val_size: int | None,
    n: int | None,
    eps: str,
    norm: str,
    batch_size: int,
    device: str,
    seed: int,
    json_out: str | None,
    quiet: bool,
    attacks: str,
    no_checks: bool,
    check_n: int,
) -> None:
    """Robust accuracy of MODEL (folder, Hub id org/name[@rev], pretrained or registry name) under attacks."""
    from arnas_zoo.evaluate import evaluate, parse_eps, pick_device

    dev = pick_device(device)
    resolved = _resolve_loudly(model, dev, dataset)
    data = _load_eval_data(dataset, split, data_dir, download, val_size, n, dev)
    report = evaluate(
        resolved.model,
        data,
        [a for a in attacks.split(",") if a.strip()],
        eps=parse_eps(eps),
        norm=norm,
        batch_size=batch_size,
        device=dev,
        seed=seed,
        checks=not no_checks,
        check_n=check_n,
        progress=not quiet,
        model_info=resolved.info(),
    )
    click.echo(report.format_table())
    if json_out:
        report.save(json_out)
        click.echo(f"wrote {json_out}")


@main.command("transfer")
@click.argument("models", nargs=-1, required=True)
@_with_data_options
@click.option("--attack", default="pgd20", show_default=True, help="attack run on each source model")
@friendly_errors
def transfer_command(
    models: tuple[str, ...],
    dataset: str,
    split: str,
    data_dir: str | None,
    download: bool,
    val_size: int | None,
    n: int | None,
    eps: str,
    norm: str,
    batch_size: int,
    device: str,
    seed: int,
    json_out: str | None,
    quiet: bool,
    attack: str,
) -> None:
    """Transfer matrix: examples crafted on each MODEL (rows) classified by each MODEL (columns)."""
    from arnas_zoo.evaluate import parse_eps, pick_device, transfer_matrix, write_json

    dev = pick_device(device)
    resolved = {}
    for spec in models:
        item = _resolve_loudly(spec, dev, dataset)
        key = item.name if item.name not in resolved else spec
        resolved[key] = item.model
    data = _load_eval_data(dataset, split, data_dir, download, val_size, n, dev)
    report = transfer_matrix(
        resolved,
        data,
        attack=attack,
        eps=parse_eps(eps),
        norm=norm,
        batch_size=batch_size,
        device=dev,
        seed=seed,
        progress=not quiet,
    )
    click.echo(report.format_table())
    if json_out:
        write_json(json_out, report.to_dict())
        click.echo(f"wrote {json_out}")


# ---- end of evaluation commands ----


if __name__ == "__main__":  # pragma: no cover
    main()
