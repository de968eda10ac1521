"""The ``python -m search`` command line: thin click commands over :mod:`search.run` and :mod:`search.sweep`."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import click

from arnas_zoo.cli.common import SuggestingGroup, finish_distributed, friendly_errors, progress_for, quiet_option
from arnas_zoo.threads import apply_thread_policy
from search.config import PRESETS, load_config, parse_overrides


def _out_default(config_source: str, seed: int) -> Path:
    stem = Path(config_source).stem if config_source not in PRESETS else config_source
    return Path("runs") / f"search-{stem}-seed{seed}"


@click.group(cls=SuggestingGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("-v", "--verbose", is_flag=True, help="Log more.")
def main(verbose: bool) -> None:
    """Architecture search: ARNAS (MGDA bi-level) and the peers' strategies, writing genotype JSON."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")
    apply_thread_policy()


main.result_callback()(finish_distributed)  # a command that succeeded under torchrun ends its worker


def _peer_command(preset: str) -> Any:
    """The peers' run command whose preset ``preset`` is (RoCo-NAS, RobNets, the cell NSGA-II), or None."""
    if preset.startswith("roco"):
        from search.roco_config import PRESETS as table

        command = roco_run_command
    elif preset.startswith("robnet"):
        from search.robnet_config import PRESETS as table  # type: ignore[assignment]

        command = robnet_run_command
    elif preset.startswith("evolve"):
        from search.evolve import PRESETS as table  # type: ignore[assignment]

        command = evolve_run_command
    else:
        return None
    return command if preset in table else None


@main.command("run")
@click.argument("config", default="paper")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config field (repeatable).")
@click.option("-o", "--out", type=click.Path(file_okay=False), help="Output folder (default runs/search-CONFIG-seedN).")
@click.option("--resume", is_flag=True, help="Continue the search in --out where it stopped.")
@click.option("--resume-previous", is_flag=True, help="Continue from the state saved before the latest one.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--name", help="Genotype name (default <space>-search-seed<N>).")
@click.option("--no-plots", is_flag=True, help="Skip the pictures at the end.")
@quiet_option
@friendly_errors
def run_command(
    config: str,
    overrides: tuple[str, ...],
    out: str | None,
    resume: bool,
    resume_previous: bool,
    device: str,
    name: str | None,
    no_plots: bool,
    quiet: bool,
) -> None:
    """Run (or resume) a search. CONFIG is a preset (paper, darts, tiny, ...) or a JSON file of config fields.

    One line per epoch (a bar on a terminal); SIGTERM/Ctrl-C save the state: rerun with --resume. Under
    torchrun it runs data-parallel (gloo on CPU, NCCL on CUDA). The peers' presets run here too
    (``run roco-tiny`` is ``roco run roco-tiny``; likewise robnet-* and evolve-*).
    """
    from search.run import run_search

    peer = _peer_command(config)
    if peer is not None:
        if resume_previous or device != "auto" or name:
            raise click.UsageError(f"{config}: --resume-previous, --device and --name are for the ARNAS search")
        click.get_current_context().invoke(peer, preset=config, overrides=overrides, out=out, resume=resume,
                                           no_plots=no_plots, quiet=quiet)  # fmt: skip
        return

    cfg = load_config(config, overrides)
    out_dir = Path(out) if out else _out_default(config, cfg.seed)
    summary = run_search(
        cfg,
        out_dir,
        device=device,
        progress=progress_for(quiet),
        plots=not no_plots,
        resume=resume,
        previous=resume_previous,
        name=name,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        click.echo(f"genotype: {out_dir / 'genotype.json'}")
        click.echo(
            f"gamma per epoch (mean): {[round(sum(g) / len(g), 4) if g else None for g in summary['gamma_trace']]}"
        )
        click.echo(f"MGDA (last epoch): {summary['mgda']}")
        click.echo(f"search time: {summary['seconds_total']:.1f} s on {summary['device']} x{summary['world_size']}")


@main.command("sweep")
@click.argument("config", default="paper")
@click.option("--seeds", default="0,1,2,3", show_default=True, help="Comma-separated seeds.")
@click.option(
    "--vary",
    default=None,
    metavar="KEY=V1,V2,...",
    help="Also sweep one config field, e.g. --vary lam=0.01,0.1,1 (the MGDA lambda sweep).",
)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config field (repeatable).")
@click.option("-o", "--out", type=click.Path(file_okay=False), help="Output folder (default runs/sweep-CONFIG).")
@click.option("--device", default="auto", show_default=True)
@quiet_option
@friendly_errors
def sweep_command(
    config: str, seeds: str, vary: str | None, overrides: tuple[str, ...], out: str | None, device: str, quiet: bool
) -> None:
    """Run one search per seed (and value) and count the ops of the Accurate and Robust cells (paper Fig. 4)."""
    from arnas_zoo.errors import ConfigError
    from search.sweep import op_table, run_sweep

    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds: expected comma-separated integers, got {seeds[:80]!r}") from None
    varied = None
    if vary is not None:
        key, _, values = vary.partition("=")
        if not key.strip() or not values.strip():
            raise ConfigError(f"--vary: expected KEY=V1,V2,..., got {vary[:80]!r}")
        varied = (key.strip(), [parse_overrides([f"{key}={v}"])[key.strip()] for v in values.split(",") if v.strip()])
    cfg = load_config(config, overrides)
    out_root = Path(out) if out else Path("runs") / f"sweep-{Path(config).stem}"
    summary = run_sweep(cfg, seed_list, out_root, device=device, progress=progress_for(quiet), vary=varied)
    if varied is None:
        click.echo(op_table(summary["op_counts"], summary["primitives"], len(summary["runs"])))
        click.echo(f"written: {out_root / 'op_counts.md'}, {out_root / 'op_counts.png'}")
    else:
        for row in summary["runs"]:
            click.echo(json.dumps(row))
        click.echo(f"written: {out_root / 'sweep.json'}")


@main.command("summarize")
@click.argument("sweep_dir", type=click.Path(exists=True, file_okay=False))
@friendly_errors
def summarize_command(sweep_dir: str) -> None:
    """Recount the op choices of the finished seed*/ runs in SWEEP_DIR."""
    from search.sweep import op_table, summarize_sweep

    summary = summarize_sweep(sweep_dir)
    click.echo(op_table(summary["op_counts"], summary["primitives"], len(summary["runs"])))


@main.command("presets")
def presets_command() -> None:
    """Print the named presets (differences from the paper settings)."""
    click.echo(json.dumps(PRESETS, indent=1))


@main.group("robnet")
def robnet_group() -> None:
    """RobNets: one-shot adversarial supernet, sampled and finetuned architectures, analyses, FSP filter."""


@robnet_group.command("run")
@click.argument("preset", default="robnet-tiny")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config field (repeatable).")
@click.option("-o", "--out", type=click.Path(file_okay=False), help="Output folder (default runs/PRESET-seedN).")
@click.option("--resume", is_flag=True, help="Continue the run in --out: finished stages and architectures are kept.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--backend", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option("--address", default=None, help="Ray cluster to join (auto, HOST:PORT) [a new local cluster].")
@click.option("--max-parallel", type=click.IntRange(min=1), default=None, help="Architectures in flight at once.")
@click.option("--no-plots", is_flag=True, help="Skip the pictures.")
@quiet_option
@friendly_errors
def robnet_run_command(
    preset: str,
    overrides: tuple[str, ...],
    out: str | None,
    resume: bool,
    device: str,
    backend: str,
    address: str | None,
    max_parallel: int | None,
    no_plots: bool,
    quiet: bool,
) -> None:
    """Train the supernet, score and finetune the sampled architectures, analyse, export genotypes.

    PRESET: robnet (the paper's analysis setting), robnet-free (cell-free, FSP), robnet-tiny and
    robnet-free-tiny (minutes on 2 CPU cores). Every stage resumes: `arnas-zoo status OUT` lists the
    architectures' jobs.
    """
    from search.robnet_config import PRESETS as ROBNET_PRESETS
    from search.robnet_run import run_robnet

    cfg, out_dir = _preset_and_folder(ROBNET_PRESETS, preset, overrides, out)
    summary = run_robnet(
        cfg,
        out_dir,
        resume=resume,
        device=device,
        backend=backend,
        address=address,
        max_parallel=max_parallel,
        progress=progress_for(quiet),
        plots=not no_plots,
    )

    def corr(key: str) -> str:
        s = summary[key]
        return "n/a" if s["rho"] is None else f"{s['rho']:+.2f} (p={s['p']:.2g}, n={s['n']})"

    click.echo(f"architectures: {out_dir / 'architectures.csv'}; analysis: {out_dir / 'analysis.json'}")
    click.echo(f"Spearman density vs PGD accuracy: {corr('density_vs_pgd')}")
    click.echo(f"Spearman direct-edge convolutions vs PGD accuracy: {corr('direct_convs_vs_pgd')}")
    click.echo(f"Spearman FSP distance vs clean-PGD gap (supernet): {corr('fsp_vs_supernet_gap')}")
    for path in summary["exported"]:
        click.echo(f"genotype: {out_dir / path}")


@main.group("roco")
def roco_group() -> None:
    """RoCo-NAS: NSGA-II (pymoo) over NSGA-Net macro genotypes: clean error, transfer-set error, FLOPs."""


def _preset_and_folder(presets: dict[str, Any], preset: str, overrides: tuple[str, ...], out: str | None) -> Any:
    """A peer search's preset with ``--set`` applied, and its output folder (``runs/PRESET-seedN`` by default)."""
    if preset not in presets:
        raise click.BadParameter(f"expected one of {sorted(presets)}", param_hint="PRESET")
    cfg = presets[preset].with_overrides(list(overrides))
    return cfg, (Path(out) if out else Path("runs") / f"{preset}-seed{cfg.seed}")


def _nsga_options(command: Any) -> Any:
    """The options every NSGA-II search command takes (RoCo-NAS, the evolutionary cell search)."""
    options = [
        click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config field."),
        click.option("-o", "--out", type=click.Path(file_okay=False), help="Output folder [runs/PRESET-seedN]."),
        click.option("--resume", is_flag=True, help="Continue: finished candidates are replayed from their results."),
        click.option("--backend", type=click.Choice(["local", "ray"]), default="local", show_default=True),
        click.option("--address", default=None, help="Ray cluster to join (auto, HOST:PORT) [a new local cluster]."),
        click.option("--max-parallel", type=click.IntRange(min=1), default=None, help="Candidates trained at once."),
        click.option("--no-plots", is_flag=True, help="Skip the pictures."),
        quiet_option,
        friendly_errors,
    ]
    for option in reversed(options):
        command = option(command)
    return command


@roco_group.command("run")
@click.argument("preset", default="roco-tiny")
@_nsga_options
def roco_run_command(
    preset: str,
    overrides: tuple[str, ...],
    out: str | None,
    resume: bool,
    backend: str,
    address: str | None,
    max_parallel: int | None,
    no_plots: bool,
    quiet: bool,
) -> None:
    """Build the transfer set, run NSGA-II, write the front, its genotypes and plots.

    PRESET: roco (the paper's Table II), roco-2obj (clean error and FLOPs only), roco-tiny and
    roco-tiny-2obj (minutes on 2 CPU cores, the embedded digits).
    """
    from search.roco import run_roco
    from search.roco_config import PRESETS as ROCO_PRESETS

    cfg, out_dir = _preset_and_folder(ROCO_PRESETS, preset, overrides, out)
    summary = run_roco(
        cfg,
        out_dir,
        resume=resume,
        backend=backend,
        address=address,
        max_parallel=max_parallel,
        progress=progress_for(quiet),
        plots=not no_plots,
    )
    click.echo(f"candidates: {out_dir / 'candidates.csv'}; front: {out_dir / 'front.json'}")
    click.echo(
        f"{summary['evaluated']} evaluated, {len(summary['front'])} on the front; knee {summary['knee']}; "
        f"top-{cfg.top_k} held-out transfer accuracy {summary['top_k_mean_heldout_transfer_accuracy']:.3f}, "
        f"PGD-20 accuracy {summary['top_k_mean_test_pgd20_accuracy']:.3f}"
    )
    for path in summary["genotypes"]:
        click.echo(f"genotype: {out_dir / path}")


@roco_group.command("compare")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.argument("baseline", type=click.Path(exists=True, file_okay=False))
@friendly_errors
def roco_compare_command(run: str, baseline: str) -> None:
    """Front of RUN against BASELINE's at matched FLOPs (paper Table V): PGD-20 and clean differences."""
    from search.roco import matched_flops

    result = matched_flops(run, baseline)
    for p in result["pairs"]:
        click.echo(
            f"{p['key']} ({p['flops']} MACs) vs {p['baseline_key']} ({p['baseline_flops']}): "
            f"PGD-20 {100 * p['pgd20_difference']:+.1f}, clean {100 * p['clean_difference']:+.1f} points"
        )
    click.echo(
        f"mean PGD-20 difference {100 * (result['mean_pgd20_difference'] or 0):+.1f} points; "
        f"{result['pairs_better']} better, {result['pairs_worse']} worse"
    )
    click.echo(json.dumps(result))


@main.group("evolve")
def evolve_group() -> None:
    """NSGA-II (pymoo) over ARNAS or DARTS cell genotypes: clean error, PGD error, MACs."""


@evolve_group.command("run")
@click.argument("preset", default="evolve-arnas-tiny")
@_nsga_options
def evolve_run_command(
    preset: str,
    overrides: tuple[str, ...],
    out: str | None,
    resume: bool,
    backend: str,
    address: str | None,
    max_parallel: int | None,
    no_plots: bool,
    quiet: bool,
) -> None:
    """Evolve cell genotypes, then train --set compare=[...] genotypes alike (default: ARNAS or DARTS_V2).

    PRESET: evolve-arnas, evolve-darts (CIFAR-10, C=16, 8 cells, population 20, 10 generations) and
    evolve-arnas-tiny, evolve-darts-tiny (minutes on 2 CPU cores, the embedded digits).
    """
    from search.evolve import PRESETS as EVOLVE_PRESETS
    from search.evolve import run_evolve

    cfg, out_dir = _preset_and_folder(EVOLVE_PRESETS, preset, overrides, out)
    summary = run_evolve(cfg, out_dir, resume=resume, backend=backend, address=address, max_parallel=max_parallel,
                         progress=progress_for(quiet), plots=not no_plots)  # fmt: skip
    click.echo(f"candidates: {out_dir / 'candidates.csv'}; front: {out_dir / 'front.json'}")
    click.echo(f"{summary['evaluated']} evaluated, {len(summary['front'])} on the front; knee {summary['knee']}")
    for name, row in summary["compare"].items():
        click.echo(
            f"{name} ({row['seeds']} seeds, test rows): clean {row['mean_test_clean_accuracy']:.3f}, PGD-20 "
            f"{row['mean_test_pgd20_accuracy']:.3f}, {row['macs']} MACs; dominated on held-out figures by "
            f"{row['dominated_by_front_members_heldout']} of {row['front_members']} front members"
        )
    for path in summary["genotypes"]:
        click.echo(f"genotype: {out_dir / path}")
