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


# ---- evaluation commands (robust accuracy, transfer matrix) ----
def _load_eval_data(dataset: str, split: str, data_dir: str | None, download: bool, val_size: int | None,
                    n: int | None, device: Any) -> Any:
    from arnas_zoo.data import load_dataset, split_train_val

    data = load_dataset(dataset, split, data_dir=data_dir, device=device, download=download)
    if val_size is not None:
        _, data = split_train_val(data, val_size)
    return data.first(n)


def _resolve_loudly(spec: str, device: Any, dataset: str) -> Any:
    from arnas_zoo.evaluate import resolve_model

    resolved = resolve_model(spec, device, dataset=dataset)
    if not resolved.trained:
        click.echo(f"WARNING: {spec!r} is a registry architecture with RANDOM, UNTRAINED weights; its accuracies "
                   "mean nothing. Pass a checkpoint folder (config.json + model.safetensors) to evaluate a trained "
                   "model.", err=True)
    return resolved


_data_options = [
    click.option("--dataset", default="digits", show_default=True,
                 help="digits (embedded), mnist, cifar10, cifar100, svhn, tinyimagenet"),
    click.option("--split", default="test", show_default=True, help="split to read (train/test)"),
    click.option("--data-dir", type=click.Path(file_okay=False), default=None,
                 help="folder with <dataset>/<split>.npz or the torchvision files (default: ~/.cache/arnas_zoo/data, "
                      "then ../shared/data)"),
    click.option("--download", is_flag=True, help="download the dataset with torchvision first (needs a network)"),
    click.option("--val-size", type=int, default=None,
                 help="use the LAST K rows of the split (the validation rows held out from training)"),
    click.option("--n", "n", type=int, default=None, help="evaluate the first n points (default: all)"),
    click.option("--eps", default="8/255", show_default=True, help="radius; fractions like 8/255 are accepted"),
    click.option("--norm", type=click.Choice(["linf", "l2"]), default="linf", show_default=True),
    click.option("--batch-size", type=int, default=128, show_default=True),
    click.option("--device", default="auto", show_default=True, help="auto picks CUDA when present"),
    click.option("--seed", type=int, default=0, show_default=True),
    click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
                 help="write the results as JSON (metrics.json format for eval)"),
    click.option("--quiet", is_flag=True, help="no progress bars"),
]


def _with_data_options(func: F) -> F:
    for option in reversed(_data_options):
        func = option(func)
    return func


@main.command("eval")
@click.argument("model")
@_with_data_options
@click.option("--attacks", default="fgsm,pgd20", show_default=True,
              help="comma-separated: fgsm, pgd20, pgd100, pgd<K>[-cw][x<R>], apgd-ce, apgd-t, fab-t, square, aa, "
                   "aa-plus, aa-rand")
@click.option("--no-checks", is_flag=True, help="skip the gradient-masking sanity probes")
@click.option("--check-n", type=int, default=128, show_default=True, help="points used by the sanity probes")
@friendly_errors
def eval_command(model: str, dataset: str, split: str, data_dir: str | None, download: bool, val_size: int | None,
                 n: int | None, eps: str, norm: str, batch_size: int, device: str, seed: int, json_out: str | None,
                 quiet: bool, attacks: str, no_checks: bool, check_n: int) -> None:
    """Robust accuracy of MODEL (a checkpoint folder or a registry name) under a list of attacks."""
    from arnas_zoo.evaluate import evaluate, parse_eps, pick_device

    dev = pick_device(device)
    resolved = _resolve_loudly(model, dev, dataset)
    data = _load_eval_data(dataset, split, data_dir, download, val_size, n, dev)
    report = evaluate(resolved.model, data, [a for a in attacks.split(",") if a.strip()], eps=parse_eps(eps),
                      norm=norm, batch_size=batch_size, device=dev, seed=seed, checks=not no_checks, check_n=check_n,
                      progress=not quiet, model_info=resolved.info())
    click.echo(report.format_table())
    if json_out:
        report.save(json_out)
        click.echo(f"wrote {json_out}")


@main.command("transfer")
@click.argument("models", nargs=-1, required=True)
@_with_data_options
@click.option("--attack", default="pgd20", show_default=True, help="attack run on each source model")
@friendly_errors
def transfer_command(models: tuple[str, ...], dataset: str, split: str, data_dir: str | None, download: bool,
                     val_size: int | None, n: int | None, eps: str, norm: str, batch_size: int, device: str, seed: int,
                     json_out: str | None, quiet: bool, attack: str) -> None:
    """Transfer matrix: examples crafted on each MODEL (rows) classified by each MODEL (columns)."""
    from arnas_zoo.evaluate import parse_eps, pick_device, transfer_matrix, write_json

    dev = pick_device(device)
    resolved = {}
    for spec in models:
        item = _resolve_loudly(spec, dev, dataset)
        key = item.name if item.name not in resolved else spec
        resolved[key] = item.model
    data = _load_eval_data(dataset, split, data_dir, download, val_size, n, dev)
    report = transfer_matrix(resolved, data, attack=attack, eps=parse_eps(eps), norm=norm, batch_size=batch_size,
                             device=dev, seed=seed, progress=not quiet)
    click.echo(report.format_table())
    if json_out:
        write_json(json_out, report.to_dict())
        click.echo(f"wrote {json_out}")


if __name__ == "__main__":  # pragma: no cover
    main()
