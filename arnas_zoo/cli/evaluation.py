"""``eval`` and ``transfer``: robust accuracy of models under attacks."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import click

from arnas_zoo.cli.common import EXIT_CHECK_FAILED, F, friendly_errors, model_defaults, pick, progress_for, quiet_option


@dataclass
class LoadedModel:
    """A model ready to evaluate, and what it is (for reports and warnings)."""

    model: Any
    name: str
    kind: str  # a sources.Source kind: folder | hub | pretrained | arch (random weights)
    location: str

    @property
    def trained(self) -> bool:
        return self.kind != "arch"

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.kind, "trained": self.trained, "path": self.location}


def load_for_eval(spec: str, device: Any, dataset: str | None) -> LoadedModel:
    """Resolve ``spec`` (folder, Hub id, pretrained name, or a registry architecture with RANDOM weights)."""
    from arnas_zoo.hub import load_source
    from arnas_zoo.sources import resolve

    source = resolve(spec, allow_arch=True)
    if source.kind == "arch":
        from arnas_zoo.data import dataset_info
        from arnas_zoo.registry import create_model

        info = dataset_info(dataset or "digits")
        model = (
            create_model(spec, in_channels=info.in_channels, input_size=info.input_size, num_classes=info.num_classes)
            .to(device)
            .eval()
        )
        click.echo(
            f"WARNING: {spec!r} is a registry architecture with RANDOM, UNTRAINED weights; its accuracies "
            "mean nothing. Pass a checkpoint folder, Hub id or pretrained name to evaluate a trained model.",
            err=True,
        )
        return LoadedModel(model, spec, "arch", spec)
    model = load_source(source, device=device)
    name = getattr(model.config, "name", None) or source.location
    return LoadedModel(model, str(name), source.kind, source.location)


_data_options = [
    click.option(
        "--dataset",
        default=None,
        help="digits, mnist, cifar10, cifar100, svhn, tinyimagenet or an .npz file [the model's training data]",
    ),
    click.option(
        "--split",
        default="test",
        show_default=True,
        help="split to read (train/test); CIFAR-10 offline: the last 1000 train rows",
    ),
    click.option(
        "--data-dir",
        type=click.Path(file_okay=False),
        default=None,
        help="folder with <dataset>/<split>.npz or the torchvision files "
        "[~/.cache/arnas_zoo/data, then ../shared/data]",
    ),
    click.option("--download", is_flag=True, help="download the dataset with torchvision first (needs a network)"),
    click.option(
        "--val-size",
        type=click.IntRange(min=1),
        default=None,
        help="use the LAST K rows of the split (the validation rows held out from training)",
    ),
    click.option("--n", "n", type=click.IntRange(min=1), default=None, help="evaluate the first n points [all]"),
    click.option("--eps", default=None, help="radius, e.g. 0.3 or 8/255 [the eps the model was trained for]"),
    click.option("--norm", type=click.Choice(["linf", "l2"]), default=None, help="threat model [the model's]"),
    click.option("--batch-size", type=click.IntRange(min=1, max=100_000), default=128, show_default=True),
    click.option("--device", default="auto", show_default=True, help="auto picks CUDA when present"),
    click.option("--seed", type=int, default=0, show_default=True),
    click.option(
        "--json",
        "json_out",
        type=click.Path(dir_okay=False),
        default=None,
        help="write the results as JSON (metrics.json format for eval)",
    ),
    quiet_option,
]


def data_options(func: F) -> F:
    for option in reversed(_data_options):
        func = option(func)
    return func


def threat_settings(
    models: list[Any], dataset: str | None, eps: str | None, norm: str | None
) -> tuple[str, float, str]:
    """Dataset, eps and norm: as given, else what the (first) model was trained for; said on stderr."""
    from arnas_zoo.evaluate import parse_eps

    defaults = model_defaults(models[0]) if models else {}
    notes: list[str] = []
    dataset = pick(dataset, "dataset", defaults, "digits", notes)
    eps_value = parse_eps(eps) if eps is not None else float(pick(None, "eps", defaults, 8 / 255, notes))
    norm = pick(norm, "norm", defaults, "linf", notes)
    if notes:
        click.echo("using " + "; ".join(notes), err=True)
    return str(dataset), eps_value, str(norm)


@click.command("eval")
@click.argument("model")
@data_options
@click.option(
    "--attacks",
    default="fgsm,pgd20",
    show_default=True,
    help="comma-separated: fgsm, pgd20, pgd100, pgd<K>[-cw][x<R>], apgd-ce, apgd-t, fab-t, square, aa, "
    "aa-plus, aa-rand",
)
@click.option("--no-checks", is_flag=True, help="skip the gradient-masking sanity checks and probes")
@click.option("--check-n", type=click.IntRange(min=1), default=128, show_default=True, help="points used by the probes")
@click.option(
    "--shard-size",
    type=click.IntRange(min=1),
    default=None,
    help="split the points into jobs of this many (whole batches); the merged report equals an unsharded run",
)
@click.option(
    "--backend",
    type=click.Choice(["local", "ray"]),
    default=None,
    help="run the shards in this process (local) or on a Ray cluster (pip install 'arnas-zoo[ray]') [local]",
)
@click.option("--address", default=None, help="Ray cluster to join: auto, HOST:PORT [a new local cluster]")
@click.option("--max-parallel", type=click.IntRange(min=1), default=None, help="shards running at once [all]")
@click.option(
    "--run-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="where shard results live (a rerun skips finished shards) [runs/eval-jobs]",
)
@click.option(
    "--join",
    is_flag=True,
    help="help the sharded evaluation another process runs with these same options in --run-dir: run the "
    "shards nobody has finished or holds, then exit (that run writes the report)",
)
@click.option(
    "--strict",
    is_flag=True,
    help=f"exit {EXIT_CHECK_FAILED} when a sanity check fails (for scripts and CI; the report is still written)",
)
@friendly_errors
def eval_command(
    model: str,
    dataset: str | None,
    split: str,
    data_dir: str | None,
    download: bool,
    val_size: int | None,
    n: int | None,
    eps: str | None,
    norm: str | None,
    batch_size: int,
    device: str,
    seed: int,
    json_out: str | None,
    quiet: bool,
    attacks: str,
    no_checks: bool,
    check_n: int,
    shard_size: int | None,
    backend: str | None,
    address: str | None,
    max_parallel: int | None,
    run_dir: str | None,
    join: bool,
    strict: bool,
) -> None:
    """Robust accuracy of MODEL (folder, Hub id org/name[@rev], pretrained or registry name) under attacks.

    Dataset, eps and norm default to what the model was trained for (read from its files). With
    --shard-size or --backend the points are split into jobs (one line per finished job; resumable:
    `arnas-zoo status RUN_DIR` shows them) and the shards' per-point outcomes merged into one report.
    """
    from arnas_zoo.data import evaluation_data
    from arnas_zoo.devices import resolve_device
    from arnas_zoo.evaluate import evaluate, parse_attacks

    names = parse_attacks(attacks)
    dev = resolve_device(device)
    loaded = load_for_eval(model, dev, dataset)
    dataset, eps_value, norm = threat_settings([loaded.model], dataset, eps, norm)
    common = dict(
        eps=eps_value,
        norm=norm,
        batch_size=batch_size,
        seed=seed,
        checks=not no_checks,
        check_n=check_n,
        progress=progress_for(quiet),
    )
    if join or shard_size is not None or backend is not None or address is not None or run_dir is not None:
        if loaded.kind == "arch":
            raise click.UsageError("sharded evaluation needs a trained model (folder, Hub id or pretrained name)")
        if download:
            evaluation_data(dataset, split=split, data_dir=data_dir, n=1, val_size=val_size, download=True)
        report = _eval_sharded(
            model,
            loaded,
            dataset=dataset,
            attacks=names,
            run_dir=run_dir or "runs/eval-jobs",
            n=n,
            split=split,
            data_dir=data_dir,
            val_size=val_size,
            shard_size=shard_size,
            backend=backend or "local",
            address=address,
            max_parallel=max_parallel,
            device=device,
            join=join,
            **common,
        )
        if report is None:  # --join: the run it helped writes the report
            return
    else:
        data = evaluation_data(
            dataset, split=split, data_dir=data_dir, n=n, val_size=val_size, device=dev, download=download
        )
        report = evaluate(loaded.model, data, names, device=dev, model_info=loaded.info(), **common)
    _show_report(report, json_out, strict)


def _show_report(report: Any, json_out: str | None, strict: bool) -> None:
    """The table, the JSON file when asked, and with ``--strict`` a failing exit on failed sanity checks."""
    click.echo(report.format_table())
    if json_out:
        report.save(json_out)
        click.echo(f"wrote {json_out}")
    if strict and report.failed_checks:
        click.echo(f"error: sanity checks failed: {', '.join(report.failed_checks)} (--strict)", err=True)
        sys.exit(EXIT_CHECK_FAILED)


def _eval_sharded(model: str, loaded: LoadedModel, join: bool, **kwargs: Any) -> Any:
    """The points split into jobs (arnas_zoo.evaluate.shards), merged into one report; with ``join``, only
    the shards another process's run of the same options has not finished or taken (None: no report)."""
    from arnas_zoo.evaluate.shards import evaluate_sharded, help_sharded

    if not join:
        return evaluate_sharded(model, model_info=loaded.info(), **kwargs)
    if kwargs["backend"] != "local":
        raise click.UsageError("--join helps a run of the local backend (on this machine)")
    ran, total = help_sharded(model, **kwargs)
    click.echo(f"helped {kwargs['run_dir']}: ran {ran} of its {total} shards; the run it helps writes the report")
    return None


@click.command("transfer")
@click.argument("models", nargs=-1, required=True)
@data_options
@click.option("--attack", default="pgd20", show_default=True, help="attack run on each source model")
@friendly_errors
def transfer_command(
    models: tuple[str, ...],
    dataset: str | None,
    split: str,
    data_dir: str | None,
    download: bool,
    val_size: int | None,
    n: int | None,
    eps: str | None,
    norm: str | None,
    batch_size: int,
    device: str,
    seed: int,
    json_out: str | None,
    quiet: bool,
    attack: str,
) -> None:
    """Transfer matrix: examples crafted on each MODEL (rows) classified by each MODEL (columns)."""
    from arnas_zoo.atomic import atomic_write_json
    from arnas_zoo.data import evaluation_data
    from arnas_zoo.devices import resolve_device
    from arnas_zoo.evaluate import make_attack, transfer_matrix

    make_attack(attack)
    dev = resolve_device(device)
    loaded: dict[str, Any] = {}
    for spec in models:
        item = load_for_eval(spec, dev, dataset)
        loaded[item.name if item.name not in loaded else spec] = item.model
    dataset, eps_value, norm = threat_settings(list(loaded.values()), dataset, eps, norm)
    data = evaluation_data(
        dataset, split=split, data_dir=data_dir, n=n, val_size=val_size, device=dev, download=download
    )
    report = transfer_matrix(
        loaded,
        data,
        attack=attack,
        eps=eps_value,
        norm=norm,
        batch_size=batch_size,
        device=dev,
        seed=seed,
        progress=progress_for(quiet),
    )
    click.echo(report.format_table())
    if json_out:
        from pathlib import Path

        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(json_out), report.to_dict())
        click.echo(f"wrote {json_out}")


@click.command("certify")
@click.argument("model")
@data_options
@click.option(
    "--method",
    type=click.Choice(["ibp", "crown"]),
    default="crown",
    show_default=True,
    help="interval bounds, or CROWN backward linear bounds (never looser than IBP)",
)
@click.option(
    "--radius-max",
    default=None,
    help="upper end of the per-point radius bisection, e.g. 0.3 or 8/255 [4 x eps, at least 1/255]",
)
@click.option(
    "--radius-steps", type=click.IntRange(min=1, max=40), default=16, show_default=True, help="bisection steps"
)
@friendly_errors
def certify_command(
    model: str,
    dataset: str | None,
    split: str,
    data_dir: str | None,
    download: bool,
    val_size: int | None,
    n: int | None,
    eps: str | None,
    norm: str | None,
    batch_size: int,
    device: str,
    seed: int,
    json_out: str | None,
    quiet: bool,
    method: str,
    radius_max: str | None,
    radius_steps: int,
) -> None:
    """Certified accuracy of MODEL at eps and its mean certified radius (IBP or CROWN bounds).

    A certified point keeps its label for EVERY input within eps, whatever the attack. Dataset, eps and
    norm default to what the model was trained for. Works for any network the zoo builds; a model with
    an op the bounds do not cover (or an ONNX file) is refused with the op's name.
    """
    from arnas_zoo.data import evaluation_data
    from arnas_zoo.devices import resolve_device
    from arnas_zoo.evaluate import parse_eps
    from arnas_zoo.evaluate.certify import certify

    dev = resolve_device(device)
    if str(model).endswith(".onnx"):
        raise click.UsageError("certify needs the PyTorch model (a folder, Hub id or pretrained name), not ONNX")
    loaded = load_for_eval(model, dev, dataset)
    dataset, eps_value, norm = threat_settings([loaded.model], dataset, eps, norm)
    data = evaluation_data(
        dataset, split=split, data_dir=data_dir, n=n, val_size=val_size, device=dev, download=download
    )
    report = certify(
        loaded.model,
        data,
        eps=eps_value,
        norm=norm,
        method=method,
        batch_size=min(batch_size, 32),
        radius_max=parse_eps(radius_max) if radius_max is not None else None,
        radius_steps=radius_steps,
        progress=progress_for(quiet),
        model_info=loaded.info(),
    )
    click.echo(report.format_table())
    if json_out:
        report.save(json_out)
        click.echo(f"wrote {json_out}")


@click.command("status")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="print the status as JSON")
@friendly_errors
def status_command(run_dir: str, as_json: bool) -> None:
    """Where RUN_DIR stands: a training or search run (epoch, step, validation figures per epoch, hours run
    and left), or a job set such as a sharded eval (done / running / failed / pending, one line each).
    A folder of such runs (e.g. the ROOT of scripts/zoo_runs.sh) gets a short summary of each."""
    import json
    from pathlib import Path

    from arnas_zoo.errors import ArnasZooError, ConfigError
    from arnas_zoo.job_status import status
    from arnas_zoo.jobs import plan
    from arnas_zoo.run_status import RunPosition, is_run_folder, run_position

    if not (Path(run_dir) / "jobs").is_dir():
        if not is_run_folder(run_dir):
            runs = sorted(p for p in Path(run_dir).glob("*/") if is_run_folder(p) or (p / "jobs").is_dir())
            if not runs:
                raise ConfigError(
                    f"{run_dir}: neither a training or search run (no train_state or search_state file) "
                    "nor a job set (no jobs/ folder), nor a folder of them"
                )
            # a folder of runs (e.g. scripts/zoo_runs.sh's ROOT): one summary per run, in name order
            # (a run that cannot be read is said on its line; the others are still listed)
            rows: dict[str, Any] = {}
            for folder in runs:
                try:
                    rows[str(folder)] = run_position(folder) if is_run_folder(folder) else status(folder)
                except ArnasZooError as exc:
                    rows[str(folder)] = exc
            if as_json:
                listing = {k: {"error": str(v)} if isinstance(v, Exception) else v.to_dict() for k, v in rows.items()}
                click.echo(json.dumps(listing, indent=1))
                return
            for name, row in rows.items():
                if isinstance(row, RunPosition):
                    click.echo("\n".join(row.format().splitlines()[:2]))
                else:
                    click.echo(f"{name}: {row}" if isinstance(row, Exception) else f"{name}: {row.summary()}")
            return
        position = run_position(run_dir)
        click.echo(json.dumps(position.to_dict(), indent=1) if as_json else position.format())
        return
    st = status(run_dir)
    if as_json:
        click.echo(json.dumps(st.to_dict(), indent=1))
        return
    planned = plan(run_dir)
    jobs = Path(run_dir) / "jobs"
    click.echo(f"{run_dir}: {st.summary()}")
    for state, keys in (("done", st.done), ("running", st.running), ("failed", st.failed), ("pending", st.pending)):
        for key in keys:
            label = planned.get(key, {}).get("label", "")
            extra = ""
            if state == "done" and (jobs / f"{key}.meta.json").is_file():
                meta = _side_record(jobs / f"{key}.meta.json")
                extra = f"{meta.get('seconds', 0):.1f}s on {meta.get('host', '?')}" if meta else "(unreadable meta)"
            elif state == "failed":
                record = _side_record(jobs / f"{key}.failed.json")
                extra = f"after {record.get('attempts')} attempts: {str(record.get('error', ''))[:120]}"
            click.echo(f"  {state:<8} {key}  {label:<28} {extra}".rstrip())


def _side_record(path: Any) -> dict[str, Any]:
    """A job's meta or failure record for display; an unreadable one is shown as empty, never a crash."""
    from arnas_zoo.errors import UntrustedFileError
    from arnas_zoo.safe_json import read_json

    try:
        record = read_json(path, max_bytes=1024 * 1024, what="job record")
    except (OSError, UntrustedFileError):
        return {}
    return record if isinstance(record, dict) else {}
