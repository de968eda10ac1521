"""RobNets' stages (see :mod:`search.robnet.model`): configuration and presets, data, the supernet's training
(a RunTask), scoring and finetuning as jobs, and the pipeline that chains them.

Why ~530 lines in one module: the stages share RobNetConfig, the data cache and the run folder's layout.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from arnas_zoo.atomic import atomic_write_json
from arnas_zoo.attacks import pgd
from arnas_zoo.errors import ConfigError
from arnas_zoo.runs import generator, seed_for

from .analysis import analyze, export_top
from .config import RobNetConfig
from .model import (
    CODE_STREAM,
    EDGES,
    FINETUNE_STREAM,
    SAMPLE_STREAM,
    STATE_SCHEMA,
    RobNetSupernet,
    budget_of,
    build_sampled,
    code_features,
    code_strings,
    fsp_distances,
    fsp_score,
    macro_config,
    sample_code,
)

# ---- data -----------------------------------------------------------------------------------------
_DATA_CACHE: dict[str, Any] = {}


def load_data(config: RobNetConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """(x_train, y_train, x_holdout, y_holdout, classes): the last ``holdout`` rows are held out."""
    from arnas_zoo.data import load_dataset

    key = json.dumps([config.dataset, config.data_dir, config.n_images, config.resize, config.holdout])
    if key not in _DATA_CACHE:
        data = load_dataset(config.dataset, "train", data_dir=config.data_dir, n=config.n_images)
        x = data.x
        if config.resize and config.resize != x.shape[-1]:
            x = F.interpolate(x, size=(config.resize, config.resize), mode="area").clamp_(0.0, 1.0)
        if config.holdout >= len(x):
            raise ConfigError(f"holdout: {config.holdout} rows leave nothing to train on ({len(x)} images)")
        cut = len(x) - config.holdout
        classes = int(data.y.max()) + 1
        _DATA_CACHE[key] = (x[:cut], data.y[:cut], x[cut:], data.y[cut:], classes)
    return _DATA_CACHE[key]


def supernet_for(config: RobNetConfig, classes: int, shape: tuple[int, ...]) -> RobNetSupernet:
    torch.manual_seed(config.seed)
    return RobNetSupernet(
        macro_config(
            init_channels=config.init_channels,
            layers=config.layers,
            in_channels=int(shape[0]),
            input_size=int(shape[-1]),
            num_classes=classes,
        )
    )


def _cells_in_code(config: RobNetConfig) -> int:
    return config.layers if config.cell_free else 1


def _batch(x: torch.Tensor, y: torch.Tensor, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    from arnas_zoo.runs import augment

    gen = generator(x.device, seed)
    idx = torch.randperm(len(x), generator=gen, device=x.device)[:size]
    return augment(x[idx], gen, crop_padding=max(1, x.shape[-1] // 8)), y[idx]


# ---- stage 1: the supernet (a RunTask: resumable, SIGTERM-safe) ---------------------------------------
class SupernetTraining:
    """Adversarial training of the supernet with one sampled code per step (path sampling)."""

    schema = STATE_SCHEMA
    stopped: str | None = None  # the supernet always trains all its epochs

    def __init__(self, config: RobNetConfig, out_dir: Path, device: torch.device):
        self.config, self.out_dir, self.device = config, out_dir, device
        x, y, xh, yh, classes = load_data(config)
        self.x, self.y = x.to(device), y.to(device)
        self.xh, self.yh = xh.to(device), yh.to(device)
        self.model = supernet_for(config, classes, tuple(x.shape[1:])).to(device)
        self.opt = torch.optim.SGD(
            self.model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
        self.epochs = config.epochs
        most = len(x) // config.batch_size
        self.steps_per_epoch = config.steps_per_epoch or most
        if not 1 <= self.steps_per_epoch <= max(most, 1):
            raise ConfigError(f"steps_per_epoch: {self.steps_per_epoch} batches of {config.batch_size} exceed the data")

    def settings(self) -> dict[str, Any]:
        keys = ["dataset", "data_dir", "n_images", "resize", "holdout", "cell_free", "init_channels", "layers"]
        keys += ["seed", "epochs", "steps_per_epoch", "batch_size", "lr", "lr_min", "momentum", "weight_decay"]
        keys += ["grad_clip", "eps", "step_size", "pgd_steps", "attack_bn"]
        return {k: getattr(self.config, k) for k in keys}

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        from arnas_zoo.runs.state import optimizer_state, prefixed, rng_state

        tensors = prefixed("model", self.model.state_dict())
        opt_tensors, opt_meta = optimizer_state(self.opt, "opt")
        rng_tensors, rng_meta = rng_state()
        return {**tensors, **opt_tensors, **rng_tensors}, {"opt": opt_meta, "rng": rng_meta}

    def load(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        from arnas_zoo.runs.state import load_module, load_optimizer, restore_rng, unprefixed

        where = str(self.out_dir / SUPERNET_STATE)
        load_module(self.model, unprefixed("model", tensors), where)
        load_optimizer(self.opt, tensors, meta["opt"], where)
        restore_rng(tensors, meta["rng"])

    def step(self, epoch: int, step: int) -> dict[str, Any]:
        from arnas_zoo.runs import scheduled_lr

        cfg, model = self.config, self.model
        lr = scheduled_lr("cosine", epoch, lr=cfg.lr, total=cfg.epochs, lr_min=cfg.lr_min)
        for group in self.opt.param_groups:
            group["lr"] = lr
        code_gen = torch.Generator().manual_seed(seed_for(cfg.seed, epoch, step, CODE_STREAM))
        model.set_code(sample_code(code_gen, _cells_in_code(cfg)))
        x, y = _batch(self.x, self.y, cfg.batch_size, seed_for(cfg.seed, epoch, step, SAMPLE_STREAM))
        noise_gen = generator(self.device, seed_for(cfg.seed, epoch, step, FINETUNE_STREAM))
        x_adv = pgd(
            model,
            x,
            y,
            eps=cfg.eps,
            step_size=cfg.step_size,
            steps=cfg.pgd_steps,
            bn=cfg.attack_bn,
            generator=noise_gen,
            check_inputs=False,
        )
        model.train()
        logits = model(x_adv)
        loss = F.cross_entropy(logits, y)
        if not bool(torch.isfinite(loss)):
            from arnas_zoo.errors import NonFiniteError

            raise NonFiniteError(f"supernet step {epoch}/{step}: loss {float(loss)}; lower lr")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        self.opt.step()
        n = len(y)
        return {"loss": float(loss.detach()) * n, "correct": int((logits.argmax(1) == y).sum()), "seen": n}

    def end_epoch(self, epoch: int, sums: dict[str, float], seconds: float) -> dict[str, Any]:
        seen = max(sums.get("seen", 0.0), 1.0)
        import copy

        probe = copy.deepcopy(self.model)  # the full code, BatchNorm recalibrated: a diagnostic only
        probe.set_code(np.ones((_cells_in_code(self.config), EDGES, 2), dtype=np.uint8))
        recalibrate_bn(probe, self.x, seed_for(self.config.seed, epoch, -1, 24))
        n = min(256, len(self.xh))
        full = float(_accuracy(probe, self.xh[:n], self.yh[:n]).double().mean())
        return {
            "epoch": epoch + 1,
            "train_adv_loss": sums.get("loss", 0.0) / seen,
            "train_adv_acc": sums.get("correct", 0.0) / seen,
            "holdout_clean_acc_full_code": full,
            "seconds": round(seconds, 2),
            "images_per_s": round(seen / max(seconds, 1e-9), 1),
        }

    def write_outputs(self, history: list[dict[str, Any]]) -> None:

        atomic_write_json(self.out_dir / "supernet_log.json", history)


SUPERNET_STATE = "supernet_state.safetensors"


# ---- stage 2: scoring and finetuning (jobs) -----------------------------------------------------------
def _job_setup(args: dict[str, Any], run_dir: Path) -> tuple[RobNetConfig, RobNetSupernet, torch.device]:
    from arnas_zoo.devices import resolve_device
    from arnas_zoo.runs.state import load_module, read_state, unprefixed

    config = RobNetConfig.from_dict(args["config"])
    device = resolve_device(args.get("device", "cpu"))
    x, _, _, _, classes = load_data(config)
    supernet = supernet_for(config, classes, tuple(x.shape[1:]))
    tensors, meta = read_state(run_dir / SUPERNET_STATE)  # digest-checked
    if int(meta.get("epoch", 0)) < config.epochs:
        raise ConfigError(f"{run_dir / SUPERNET_STATE}: the supernet has not finished training")
    load_module(supernet, unprefixed("model", tensors), str(run_dir / SUPERNET_STATE))
    return config, supernet.to(device), device


@torch.no_grad()
def recalibrate_bn(model: nn.Module, x: torch.Tensor, seed: int, batches: int = 4, batch_size: int = 64) -> None:
    """BatchNorm running statistics of the current code (the supernet's are a mixture over codes):
    reset, then a cumulative average over ``batches`` training batches (no augmentation, no gradient)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    gen = generator(x.device, seed)
    order = torch.randperm(len(x), generator=gen, device=x.device)
    for b in range(batches):
        model(x[order[b * batch_size : (b + 1) * batch_size]])
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    model.eval()


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 256) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i : i + batch]).argmax(1) == y[i : i + batch] for i in range(0, len(x), batch)])


def _robust(
    model: nn.Module, config: RobNetConfig, x: torch.Tensor, y: torch.Tensor, seed: int
) -> tuple[float, float, torch.Tensor]:
    """Clean accuracy, PGD robust accuracy (correct on clean AND adversarial), and the adversarial batch."""
    model.eval()
    clean = _accuracy(model, x, y)
    x_adv = pgd(
        model,
        x,
        y,
        eps=config.eps,
        step_size=config.eps / 4,
        steps=config.eval_steps,
        generator=generator(x.device, seed),
        check_inputs=False,
    )
    adv = _accuracy(model, x_adv, y)
    return float(clean.double().mean()), float((clean & adv).double().mean()), x_adv


def score_job(args: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Job kind ``robnet-score``: one code on the supernet, no finetuning: accuracies and FSP distances."""
    config, supernet, device = _job_setup(args, Path(run_dir))
    code = np.asarray(args["code"], dtype=np.uint8)
    supernet.set_code(code)
    x, _, xh, yh, _ = load_data(config)
    recalibrate_bn(supernet, x.to(device), seed_for(config.seed, -1, int(args["index"]), 24))
    xh, yh = xh[: config.eval_n].to(device), yh[: config.eval_n].to(device)
    clean, robust, x_adv = _robust(supernet, config, xh, yh, seed_for(config.seed, 0, int(args["index"]), 21))
    n = min(config.fsp_n, len(xh))
    distances = fsp_distances(supernet, xh[:n], x_adv[:n])
    return {"index": args["index"], "clean": clean, "pgd": robust, "fsp": distances, "fsp_score": fsp_score(distances)}


def finetune_job(args: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Job kind ``robnet-finetune``: inherit the supernet's weights, adversarial finetuning, score."""
    config, supernet, device = _job_setup(args, Path(run_dir))
    code = np.asarray(args["code"], dtype=np.uint8)
    model = build_sampled(supernet, code).to(device)
    x, y, xh, yh, _ = load_data(config)
    x, y = x.to(device), y.to(device)
    steps = max(1, int(math.ceil(config.finetune_epochs * len(x) / config.batch_size)))
    opt = torch.optim.SGD(
        model.parameters(), lr=config.finetune_lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    index = int(args["index"])
    for step in range(steps):
        for group in opt.param_groups:  # cosine over the finetuning steps
            group["lr"] = config.finetune_lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        xb, yb = _batch(x, y, config.batch_size, seed_for(config.seed, index, step, FINETUNE_STREAM))
        x_adv = pgd(
            model,
            xb,
            yb,
            eps=config.eps,
            step_size=config.step_size,
            steps=config.pgd_steps,
            bn=config.attack_bn,
            generator=generator(device, seed_for(config.seed, index, step, 22)),
            check_inputs=False,
        )
        model.train()
        loss = F.cross_entropy(model(x_adv), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
    xh, yh = xh[: config.eval_n].to(device), yh[: config.eval_n].to(device)
    clean, robust, _ = _robust(model, config, xh, yh, seed_for(config.seed, 0, index, 23))
    return {"index": index, "clean": clean, "pgd": robust, "finetune_steps": steps}


def _register() -> None:
    from arnas_zoo.jobs import register_kind

    register_kind("robnet-score", f"{__name__}:score_job")
    register_kind("robnet-finetune", f"{__name__}:finetune_job")


def sampled_codes(config: RobNetConfig) -> list[np.ndarray]:
    """The run's ``samples`` codes: a pure function of (seed, budget, cells)."""
    gen = torch.Generator().manual_seed(seed_for(config.seed, -1, -1, CODE_STREAM))
    return [sample_code(gen, _cells_in_code(config), config.budget) for _ in range(config.samples)]


# ---- the pipeline -----------------------------------------------------------------------------------
def run_robnet(
    config: RobNetConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    device: str = "auto",
    backend: str = "local",
    address: str | None = None,
    max_parallel: int | None = None,
    progress: Any = True,
    plots: bool = True,
) -> dict[str, Any]:
    """Supernet -> score every sampled code -> FSP filter -> finetune -> analyse -> export genotypes."""
    from arnas_zoo.devices import resolve_device
    from arnas_zoo.jobs import Job, run_jobs
    from arnas_zoo.progress import Progress
    from arnas_zoo.runs import run_task
    from arnas_zoo.runs.folder import claim_run_folder
    from arnas_zoo.runs.lock import RunFolderLock

    config.validate()
    with RunFolderLock(out_dir, "RobNet search"):  # one writer, from the config check to the last result
        out = claim_run_folder(out_dir, config.to_dict(), "RobNet search", resume)
        dev = resolve_device(device)
        report = Progress.of(progress)
        task = SupernetTraining(config, out, dev)
        state = out / SUPERNET_STATE
        trained = _supernet_done(state, config)
        if not trained:
            run_task(task, state, resume=state.is_file(), progress=report, label="supernet")
        _register()
        codes = sampled_codes(config)
        job_device = "cuda" if dev.type == "cuda" else "cpu"
        base = {"config": config.to_dict(), "device": job_device}
        gpus = 1.0 if dev.type == "cuda" else 0.0
        scores = run_jobs(
            [
                Job("robnet-score", {**base, "index": i, "code": c.tolist()}, gpus=gpus, label=f"score {i}")
                for i, c in enumerate(codes)
            ],
            out,
            backend=backend,
            address=address,
            max_parallel=max_parallel,
            progress=report,
        )
        score_rows = [
            scores.results[Job("robnet-score", {**base, "index": i, "code": c.tolist()}).key]
            for i, c in enumerate(codes)
        ]
        order = sorted(range(len(codes)), key=lambda i: score_rows[i]["fsp_score"])
        keep = sorted(order[: max(1, int(round(config.fsp_keep * len(codes))))])
        ft_jobs = {
            i: Job("robnet-finetune", {**base, "index": i, "code": codes[i].tolist()}, gpus=gpus, label=f"finetune {i}")
            for i in keep
        }
        finetuned = run_jobs(
            list(ft_jobs.values()), out, backend=backend, address=address, max_parallel=max_parallel, progress=report
        )
        rows = _rows(codes, score_rows, ft_jobs, finetuned.results)
        summary = analyze(rows, out, config, plots=plots)
        summary["exported"] = export_top(rows, codes, out, config)
        atomic_write_json(out / "summary.json", summary)
        return summary


def _rows(
    codes: list[np.ndarray], scores: list[dict[str, Any]], ft_jobs: dict[int, Any], finetuned: dict[str, Any]
) -> list[dict[str, Any]]:
    """One table row per sampled code: its features, supernet scores and (when finetuned) its accuracies."""
    rows = []
    for i, code in enumerate(codes):
        row: dict[str, Any] = {"index": i, "code": ["".join(r) for r in code_strings(code)], "budget": budget_of(code)}
        row.update(code_features(code))
        s = scores[i]
        row.update(
            supernet_clean=s["clean"],
            supernet_pgd=s["pgd"],
            supernet_gap=s["clean"] - s["pgd"],
            fsp_score=s["fsp_score"],
            fsp=s["fsp"],
        )
        f = finetuned.get(ft_jobs[i].key) if i in ft_jobs else None
        row.update(finetuned=f is not None, clean=f["clean"] if f else None, pgd=f["pgd"] if f else None)
        rows.append(row)
    return rows


def _supernet_done(state: Path, config: RobNetConfig) -> bool:
    from arnas_zoo.runs.state import read_state

    if not state.is_file():
        return False
    _, header = read_state(state)
    return int(header.get("epoch", 0)) >= config.epochs
