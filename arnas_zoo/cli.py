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
@click.option("--recipe", default="arnas", show_default=True,
              help="preset name (arnas, advrush, trades, fast, madry_mnist, cpu_digits, cpu_mnist, cpu_cifar10) or a recipe .json")
@click.option("--dataset", default="digits", show_default=True, help="digits (embedded), mnist, cifar10, cifar100, svhn, ...")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="folder with <dataset>/train.npz or the standard files")
@click.option("--val-rows", type=int, default=1000, show_default=True,
              help="the last N training rows are held out to select the best epoch (0: no selection)")
@click.option("--set", "recipe_sets", multiple=True, metavar="KEY=VALUE", help="override a recipe field, e.g. --set epochs=10 --set eps=8/255")
@click.option("--model-set", "model_sets", multiple=True, metavar="KEY=VALUE", help="override a model config field, e.g. --model-set init_channels=8")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="run folder (state, logs, best/ and last/)")
@click.option("--resume", is_flag=True, help="continue the run in --out exactly where it stopped")
@click.option("--device", default="auto", show_default=True, help="auto picks CUDA when present (LOCAL_RANK under torchrun)")
@click.option("--name", default=None, help="name written into config.json (default: the architecture's)")
@click.option("--eval-attacks", default="fgsm,pgd20", show_default=True,
              help="attacks run on the best checkpoint at the end (comma-separated; 'none' to skip)")
@click.option("--eval-n", type=int, default=1000, show_default=True, help="first N test points for the final evaluation")
@click.option("--no-progress", is_flag=True, help="hide the progress bars")
@friendly_errors
def train_command(arch: str, recipe: str, dataset: str, data_dir: str | None, val_rows: int, recipe_sets: tuple[str, ...],
                  model_sets: tuple[str, ...], out_dir: str, resume: bool, device: str, name: str | None,
                  eval_attacks: str, eval_n: int, no_progress: bool) -> None:
    """Adversarially train ARCH (a registry name) and write a run folder; works under torchrun (DDP)."""
    import os

    from arnas_zoo.training import run_training

    result = run_training(arch, recipe, dataset, data_dir=data_dir, val_rows=val_rows,
                          recipe_overrides=_key_values(recipe_sets, "--set"),
                          model_overrides=_key_values(model_sets, "--model-set"), out_dir=out_dir, resume=resume,
                          device=device, progress=not no_progress, name=name,
                          eval_attacks=[] if eval_attacks.strip().lower() == "none" else
                          [a.strip() for a in eval_attacks.split(",") if a.strip()], eval_n=eval_n)
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
def quickstart_command(out_dir: str, epochs: int | None, device: str, seed: int, train_n: int | None,
                       test_n: int | None, no_progress: bool) -> None:
    """Train a small ARNAS network with and without adversarial training on digits (offline) and attack both."""
    from arnas_zoo.quickstart import quickstart

    result = quickstart(out_dir, epochs=epochs, device=device, progress=not no_progress, seed=seed,
                        train_n=train_n, test_n=test_n)
    click.echo(result.table())
    click.echo(f"({result.settings['test']}; {result.settings['attacks']}; {result.seconds:.0f} s on "
               f"{result.settings['device']})")
    click.echo(f"report: {result.out_dir / 'report.md'}")

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
