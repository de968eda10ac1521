"""``train`` and ``quickstart``."""

from __future__ import annotations

import os

import click

from arnas_zoo.cli.common import friendly_errors, key_values, progress_for, quiet_option


@click.command("train")
@click.argument("arch")
@click.option(
    "--recipe",
    default="arnas",
    show_default=True,
    help="preset (arnas, advrush, trades, fast, madry_mnist, cpu_digits, cpu_mnist, cpu_cifar10) or a recipe .json",
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
    "--train-split",
    default="train",
    show_default=True,
    help="rows to train on: train, or mnist train_full (60k), cifar10 train_extended / train_mix (50k, part JPEG)",
)
@click.option(
    "--val-rows",
    type=click.IntRange(min=0),
    default=1000,
    show_default=True,
    help="the last N training rows are held out: they select the best epoch, or with --selection-rows they are "
    "the reporting rows the final evaluation reads (0: none)",
)
@click.option(
    "--selection-rows",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="hold out N more rows before the --val-rows rows to select the epoch and stop early, so that the "
    "reported figures come from rows no decision read (cifar10 train_mix: genuine rows)",
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
@click.option(
    "--init-from",
    default=None,
    metavar="MODEL",
    help="start from these weights (registry name, checkpoint folder or Hub repo of the same architecture) "
    "with a fresh optimizer and schedule: a warm restart",
)
@click.option("--resume", is_flag=True, help="continue the run in --out exactly where it stopped")
@click.option(
    "--resume-previous",
    is_flag=True,
    help="continue from the state saved before the latest one (when the latest is damaged)",
)
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
    "--eval-n",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="first N test points for the final evaluation",
)
@quiet_option
@friendly_errors
def train_command(
    arch: str,
    recipe: str,
    dataset: str,
    data_dir: str | None,
    train_split: str,
    val_rows: int,
    selection_rows: int,
    recipe_sets: tuple[str, ...],
    model_sets: tuple[str, ...],
    out_dir: str,
    init_from: str | None,
    resume: bool,
    resume_previous: bool,
    device: str,
    name: str | None,
    eval_attacks: str,
    eval_n: int,
    quiet: bool,
) -> None:
    """Adversarially train ARCH (a registry name, a genotype JSON from a search, or a config.json) and write
    a run folder; works under torchrun (DDP).

    One line per epoch (a bar on a terminal); SIGTERM/Ctrl-C save the state: rerun with --resume.
    """
    from arnas_zoo.evaluate import parse_attacks
    from arnas_zoo.training import run_training

    attacks = [] if eval_attacks.strip().lower() == "none" else parse_attacks(eval_attacks)
    result = run_training(
        arch,
        recipe,
        dataset,
        data_dir=data_dir,
        train_split=train_split,
        val_rows=val_rows,
        selection_rows=selection_rows,
        recipe_overrides=key_values(recipe_sets, "--set"),
        model_overrides=key_values(model_sets, "--model-set"),
        out_dir=out_dir,
        resume=resume,
        previous=resume_previous,
        device=device,
        progress=progress_for(quiet),
        name=name,
        eval_attacks=attacks,
        eval_n=eval_n,
        init_from=init_from,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        last = result.history[-1] if result.history else {}
        summary = {k: last[k] for k in ("epoch", "train_loss", "val_clean_acc", "val_robust_acc") if k in last}
        best = {k: v for k, v in result.best.items() if k != "training"}
        click.echo(f"finished: {summary}; best {best}")
        click.echo(f"checkpoint folders: {result.best_dir} (best), {result.last_dir} (last)")


@click.command("quickstart")
@click.option("--out", "out_dir", default="runs/quickstart", show_default=True, type=click.Path(file_okay=False))
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="override the recipe's 10 epochs")
@click.option("--device", default="auto", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--train-n", type=click.IntRange(min=1), default=None, help="first N training images only (smoke test)")
@click.option("--test-n", type=click.IntRange(min=1), default=None, help="first N test images only (smoke test)")
@click.option("--no-checks", is_flag=True, help="skip the sanity checks against gradient masking")
@quiet_option
@friendly_errors
def quickstart_command(
    out_dir: str,
    epochs: int | None,
    device: str,
    seed: int,
    train_n: int | None,
    test_n: int | None,
    no_checks: bool,
    quiet: bool,
) -> None:
    """Train a small ARNAS network with and without adversarial training on digits (offline) and attack both."""
    from arnas_zoo.quickstart import quickstart

    result = quickstart(
        out_dir,
        epochs=epochs,
        device=device,
        progress=progress_for(quiet),
        seed=seed,
        train_n=train_n,
        test_n=test_n,
        checks=not no_checks,
    )
    click.echo(result.table())
    click.echo(f"({result.settings['test']}; {result.settings['attacks']})")
    click.echo(result.expected())
    phases = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in result.phases.items())
    click.echo(f"time: {result.seconds:.0f} s on {result.settings['device']} ({phases})")
    click.echo(f"report: {result.out_dir / 'report.md'}; curves: {result.out_dir / 'adversarial' / 'curves.png'}")
    click.echo("next:")
    for line in result.next_commands():
        click.echo(f"  {line}")
