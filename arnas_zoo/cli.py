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
@click.option("--no-progress", is_flag=True, help="hide the progress bars")
@friendly_errors
def train_command(arch: str, recipe: str, dataset: str, data_dir: str | None, val_rows: int, recipe_sets: tuple[str, ...],
                  model_sets: tuple[str, ...], out_dir: str, resume: bool, device: str, name: str | None,
                  no_progress: bool) -> None:
    """Adversarially train ARCH (a registry name) and write a run folder; works under torchrun (DDP)."""
    import os

    from arnas_zoo.training import run_training

    result = run_training(arch, recipe, dataset, data_dir=data_dir, val_rows=val_rows,
                          recipe_overrides=_key_values(recipe_sets, "--set"),
                          model_overrides=_key_values(model_sets, "--model-set"), out_dir=out_dir, resume=resume,
                          device=device, progress=not no_progress, name=name)
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


if __name__ == "__main__":  # pragma: no cover
    main()
