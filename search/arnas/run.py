"""A differentiable search (ARNAS, and DSRNA's objectives) as a run of the shared run machinery.

Output folder (rank 0 writes; everything but the state is regenerated from it after every epoch):

- ``config.json``            the resolved :class:`~search.config.SearchConfig`
- ``search_state.safetensors``  weights, architecture, both optimizers, RNG, per-epoch traces (verified)
- ``log.jsonl``              one JSON object per epoch: genotype, MGDA trace and diagnostics, losses
- ``alphas.npz``             architecture softmax weights per cell type, ``(epochs + 1, edges, ops)``
                              (row 0 is the initialisation), plus ``<cell>_logits`` and ``primitives``
- ``gamma.npy``              the gamma of every architecture step, ``(epochs, steps)``
- ``genotype.json``          the discretised genotype after the last finished epoch; ``eval_config.json``
                              the evaluation network config (paper macro with this search's placement)
- ``plots/``                 architecture weights per cell type, gamma trace, the objectives per step, final cells
- ``summary.json``           written when the run is complete

Every step's batches and attack starts come from ``(seed, epoch, step)`` (:mod:`search.arnas.data`), so a run
killed at any point resumes (``--resume``) to exactly the uninterrupted result on CPU.
"""

from __future__ import annotations

import json
import logging
import math
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from arnas_zoo.atomic import atomic_write_json, atomic_write_text, replacing
from arnas_zoo.attacks import bn_mode, pgd
from arnas_zoo.config import ModelConfig
from arnas_zoo.devices import resolve_device
from arnas_zoo.errors import ConfigError
from arnas_zoo.fastconv import training_routes
from arnas_zoo.progress import Progress
from arnas_zoo.runs import run_task, scheduled_lr
from arnas_zoo.runs.distributed import Dist, all_reduce_mean, all_reduce_sum, convert_dist_batchnorm, init_distributed
from arnas_zoo.runs.faults import write_point
from arnas_zoo.runs.folder import claim_run_folder
from arnas_zoo.runs.lock import lock_if
from arnas_zoo.runs.precision import autocast_for, tune_cudnn
from arnas_zoo.runs.state import (
    load_module,
    load_optimizer,
    optimizer_state,
    prefixed,
    restore_rng,
    rng_state,
    unprefixed,
)

from .bilevel import Architect, weight_step
from .config import SearchConfig
from .data import TRAIN_STREAM, VAL_STREAM, SearchData, StepBatches, load_search_data
from .objectives import make_objective
from .supernet import Supernet

log = logging.getLogger("search")

STATE_FILE = "search_state.safetensors"
STATE_SCHEMA = "arnas-zoo/search-state@2"
#: Evaluation macro of the paper (20 cells); init channels per space (ARNAS 64, DARTS 36).
EVAL_MACRO: dict[str, dict[str, Any]] = {
    "arnas": {"layers": 20, "init_channels": 64},
    "darts": {"layers": 20, "init_channels": 36},
}
_SUMS = (
    "train_loss",
    "train_correct",
    "val_natural_loss",
    "val_natural_correct",
    "val_robust_loss",
    "val_robust_correct",
    "seen",
)


class SearchRun:
    """One differentiable search: the :class:`~arnas_zoo.runs.RunTask` that :func:`run_search` drives."""

    schema = STATE_SCHEMA
    stopped: str | None = None  # a search always runs all its epochs

    def __init__(self, config: SearchConfig, data: SearchData, out_dir: Path, device: torch.device, dist: Dist) -> None:
        self.config, self.data, self.out_dir, self.device, self.dist = config, data, out_dir, device, dist
        c, h, _ = data.image_shape
        space = config.search_space(num_classes=data.num_classes, in_channels=c, input_size=h)
        torch.manual_seed(config.seed)
        arch_gen = torch.Generator().manual_seed(config.seed + 1)
        self.model = Supernet(
            space,
            arch_init_scale=config.arch_init_scale,
            generator=arch_gen,
            recompute=config.recompute,
            recompute_cells=config.recompute_cells,
        ).to(device)
        if dist.world > 1:  # batch statistics of the global batch: N processes compute what one computes
            convert_dist_batchnorm(self.model)
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.sync = (lambda grads: all_reduce_mean(grads, dist)) if dist.world > 1 else (lambda grads: grads)
        self.autocast = autocast_for(device, config.amp, cpu=config.amp_cpu)
        tune_cudnn(device)
        self.w_opt = torch.optim.SGD(
            self.model.weight_parameters(),
            lr=config.w_lr,
            momentum=config.w_momentum,
            weight_decay=config.w_weight_decay,
        )
        self.objective = make_objective(config.robust_objective, config=config, autocast=self.autocast)
        if dist.world > 1:
            self.objective.mean_over_ranks = lambda v: float(
                all_reduce_sum(dist, torch.tensor([v], dtype=torch.float64))[0] / dist.world
            )
        self.architect = Architect(
            self.model,
            self.w_opt,
            self.objective,
            lr=config.a_lr,
            betas=(config.a_beta1, config.a_beta2),
            weight_decay=config.a_weight_decay,
            lam=config.lam,
            order=config.order,
            strategy=config.strategy,
            hvp_r=config.hvp_r,
            sync=self.sync,
            autocast=self.autocast if config.amp_arch else nullcontext,
        )
        shard = (dist.rank, dist.world)
        self.train_batches = StepBatches(
            data.x_train,
            data.y_train,
            config.batch_size,
            config.seed,
            TRAIN_STREAM,
            do_augment=config.augment,
            shard=shard,
        )
        self.val_batches = StepBatches(
            data.x_val, data.y_val, config.batch_size, config.seed, VAL_STREAM, do_augment=config.augment, shard=shard
        )
        most = min(self.train_batches.steps_per_epoch, self.val_batches.steps_per_epoch)
        self.epochs = config.epochs
        self.steps_per_epoch = config.steps_per_epoch or most
        if not 1 <= self.steps_per_epoch <= most:
            raise ConfigError(
                f"steps_per_epoch: {self.steps_per_epoch} steps of batch {config.batch_size} need more "
                f"images than each half holds ({len(data.x_train)}, {len(data.x_val)})"
            )
        self.trace: dict[str, list[float]] = {}  # this epoch's per-step MGDA diagnostics
        self.gamma_trace: list[list[float]] = []
        self.alpha_history: list[dict[str, np.ndarray]] = [self._alpha_logits()]

    def _alpha_logits(self) -> dict[str, np.ndarray]:
        return {k: a.detach().double().cpu().numpy().copy() for k, a in self.model.alphas.items()}

    # ---- RunTask: identity and state ----------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        return {"config": self.config.to_dict()}

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = prefixed("model", self.model.state_dict())
        meta: dict[str, Any] = {"gamma_trace": self.gamma_trace, "trace": self.trace}
        meta["objective"] = self.objective.state()
        for prefix, opt in (("w_opt", self.w_opt), ("a_opt", self.architect.optimizer)):
            opt_tensors, meta[prefix] = optimizer_state(opt, prefix)
            tensors.update(opt_tensors)
        rng_tensors, meta["rng"] = rng_state()
        tensors.update(rng_tensors)
        for name in self.model.arch_names:
            tensors[f"alpha_history/{name}"] = torch.from_numpy(np.stack([h[name] for h in self.alpha_history]))
        return tensors, meta

    def load(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        where = str(self.out_dir / STATE_FILE)
        load_module(self.model, unprefixed("model", tensors), where)
        load_optimizer(self.w_opt, tensors, meta["w_opt"], where)
        load_optimizer(self.architect.optimizer, tensors, meta["a_opt"], where)
        restore_rng(tensors, meta["rng"])
        self.gamma_trace, self.trace = meta["gamma_trace"], meta["trace"]
        self.objective.load_state(meta.get("objective", {}))
        history = {k: tensors[f"alpha_history/{k}"].numpy() for k in self.model.arch_names}
        rows = len(next(iter(history.values())))
        self.alpha_history = [{k: history[k][i] for k in history} for i in range(rows)]

    # ---- RunTask: the work --------------------------------------------------------------------------
    def lr_at(self, epoch: int) -> float:
        """DARTS' per-epoch cosine schedule from ``w_lr`` to ``w_lr_min`` over ``epochs``."""
        cfg = self.config
        return scheduled_lr("cosine", epoch, lr=cfg.w_lr, total=cfg.epochs, lr_min=cfg.w_lr_min)

    @training_routes()
    def step(self, epoch: int, step: int) -> dict[str, Any]:
        """PGD on the training batch, the robust objective's preparation on the validation batch, the
        architecture step (DARTS order: before the weights move), the weight step on the PGD batch.

        All of it takes the training routes (:func:`arnas_zoo.fastconv.training_routes`): the supernet's
        dilated depthwise convolutions, on every edge, get their input gradient as a flipped-kernel forward
        convolution, which oneDNN runs 5-7x faster than its own backward on an AVX2 CPU. The epoch-end
        evaluation stays outside."""
        cfg, model = self.config, self.model
        lr = self.lr_at(epoch)
        for group in self.w_opt.param_groups:
            group["lr"] = lr
        x_tr, y_tr, noise_tr = self.train_batches.batch(epoch, step)
        x_val, y_val, noise_val = self.val_batches.batch(epoch, step)
        if cfg.channels_last:
            x_tr, x_val = (
                x_tr.contiguous(memory_format=torch.channels_last),
                x_val.contiguous(memory_format=torch.channels_last),
            )
        x_adv = x_tr  # DSRNA trains the weights on clean images (weight_attack="none")
        if cfg.weight_attack == "pgd":
            x_adv = pgd(
                model,
                x_tr,
                y_tr,
                eps=cfg.eps,
                step_size=cfg.step_size,
                steps=cfg.pgd_steps,
                start="uniform",
                noise=noise_tr,
                bn=cfg.attack_bn,
                autocast=self.autocast,
                check_inputs=False,
            )
        prepared = self.objective.prepare(model, x_val, y_val, noise_val)
        info = self.architect.step((x_adv, y_tr), (x_val, y_val), prepared, eta=lr)
        loss, correct = weight_step(
            model, self.w_opt, x_adv, y_tr, grad_clip=cfg.grad_clip, sync=self.sync, autocast=self.autocast
        )
        per_step = (
            ("gamma", info.gamma),
            ("cosine", info.cosine),
            ("norm_ratio", info.norm_ratio),
            ("natural_loss", info.natural_loss),
            ("robust_loss", info.robust_loss),
        )
        for key, value in per_step:
            self.trace.setdefault(key, []).append(float(value))
        n = len(y_tr)
        return {
            "train_loss": loss * n,
            "train_correct": correct,
            "val_natural_loss": info.natural_loss * n,
            "val_natural_correct": info.natural_correct,
            "val_robust_loss": info.robust_loss * n,
            "val_robust_correct": info.robust_correct,
            "seen": n,
        }

    def end_epoch(self, epoch: int, sums: dict[str, float], seconds: float) -> dict[str, Any]:
        cfg = self.config
        totals = all_reduce_sum(self.dist, torch.tensor([sums.get(k, 0.0) for k in _SUMS], dtype=torch.float64))
        s = dict(zip(_SUMS, totals.tolist()))
        seen = max(s["seen"], 1.0)
        gammas = self.trace.get("gamma", [])
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "lr": self.lr_at(epoch),
            "steps": len(gammas),
            "seconds": round(seconds, 3),
            "train_adv_loss": s["train_loss"] / seen,
            "train_adv_acc": s["train_correct"] / seen,
            "val_natural_loss": s["val_natural_loss"] / seen,
            "val_natural_acc": s["val_natural_correct"] / seen,
            f"val_{cfg.robust_objective}_loss": s["val_robust_loss"] / seen,
            **mgda_diagnostics(self.trace),
            # the architecture step's objectives at every step (local batch; plots/objectives.png)
            "step_val_natural_loss": self.trace.get("natural_loss", []),
            f"step_val_{cfg.robust_objective}_loss": self.trace.get("robust_loss", []),
            "attack_bn": cfg.attack_bn,
            "weights_trained_on": "PGD examples" if cfg.weight_attack == "pgd" else "clean images",
            "objective": self.objective.describe(),
            "objective_state": self.objective.state(),
        }
        if s["val_robust_correct"] >= 0:
            record[f"val_{cfg.robust_objective}_acc"] = s["val_robust_correct"] / seen
        if cfg.eval_n:  # on every rank: batch-statistics BatchNorm is a collective under torchrun
            record["eval"] = self.evaluate_supernet()
        self.gamma_trace.append(gammas)
        self.trace = {}
        self.alpha_history.append(self._alpha_logits())
        record["genotype"] = self.model.genotype().to_dict()
        return record

    def evaluate_supernet(self) -> dict[str, Any]:
        """Clean and PGD accuracy of the supernet on the first ``eval_n`` architecture-split images.

        Clean accuracy is measured with BN running statistics and with batch statistics: a large gap says
        the running statistics do not describe the supernet (why the search attacks with batch statistics).
        """
        cfg, model = self.config, self.model
        x, y = self.data.x_val[: cfg.eval_n], self.data.y_val[: cfg.eval_n]
        correct = {"eval": 0, "batch": 0, "pgd": 0}
        loss = {"eval": 0.0, "batch": 0.0}
        gen = torch.Generator(device=self.device).manual_seed(cfg.seed)
        for start in range(0, len(x), cfg.batch_size):
            xb, yb = x[start : start + cfg.batch_size], y[start : start + cfg.batch_size]
            for mode in ("eval", "batch"):
                with bn_mode(model, mode), torch.no_grad(), self.autocast():
                    logits = model(xb).float()
                correct[mode] += int((logits.argmax(1) == yb).sum())
                loss[mode] += float(torch.nn.functional.cross_entropy(logits, yb, reduction="sum"))
            x_adv = pgd(
                model,
                xb,
                yb,
                eps=cfg.eps,
                step_size=cfg.step_size,
                steps=cfg.pgd_steps,
                generator=gen,
                bn=cfg.attack_bn,
                autocast=self.autocast,
                check_inputs=False,
            )
            with bn_mode(model, cfg.attack_bn), torch.no_grad(), self.autocast():
                correct["pgd"] += int((model(x_adv).float().argmax(1) == yb).sum())
        n = max(len(x), 1)
        return {
            "n": len(x),
            "natural_acc": correct["eval"] / n,
            "natural_loss": loss["eval"] / n,
            "natural_acc_batch_bn": correct["batch"] / n,
            "natural_loss_batch_bn": loss["batch"] / n,
            f"pgd{cfg.pgd_steps}_acc": correct["pgd"] / n,
            "attack": f"l_inf PGD-{cfg.pgd_steps} eps={cfg.eps:.5f} step={cfg.step_size:.5f} uniform start, "
            f"bn={cfg.attack_bn}",
            "seed": cfg.seed,
        }

    # ---- RunTask: derived outputs -------------------------------------------------------------------
    def write_outputs(self, history: list[dict[str, Any]]) -> None:
        out = self.out_dir
        atomic_write_text(out / "log.jsonl", "".join(json.dumps(r) + "\n" for r in history))
        write_point("log")
        arrays: dict[str, Any] = {"primitives": np.array(self.model.primitives)}
        for name in self.model.arch_names:
            logits = np.stack([h[name] for h in self.alpha_history])
            arrays[f"{name}_logits"] = logits
            arrays[name] = _softmax(logits)
        _atomic_np(out / "alphas.npz", lambda f: np.savez(f, **arrays))
        width = max((len(g) for g in self.gamma_trace), default=0)
        gamma = np.full((len(self.gamma_trace), width), np.nan)
        for i, g in enumerate(self.gamma_trace):
            gamma[i, : len(g)] = g
        _atomic_np(out / "gamma.npy", lambda f: np.save(f, gamma))
        write_point("arrays")
        if history:
            genotype = self.genotype()
            genotype.save(out / "genotype.json")
            space = self.model.space
            eval_config = ModelConfig(
                genotype=genotype, name=genotype.name, **EVAL_MACRO[space.space], **space.model_config_overrides()
            )
            atomic_write_text(out / "eval_config.json", eval_config.to_json() + "\n")
            write_point("genotype")

    def genotype(self, name: str | None = None) -> Any:
        cfg = self.config
        notes = (
            f"python -m search: space {cfg.space} {cfg.placement} {cfg.filters}, {cfg.layers} cells "
            f"C={cfg.init_channels}, {cfg.order}-order, {cfg.strategy}, lambda={cfg.lam}, "
            f"{self.objective.describe()}, {len(self.gamma_trace)} of {cfg.epochs} epochs, batch {cfg.batch_size}, "
            f"seed {cfg.seed}; "
            f"data: {self.data.description}"
        )
        return self.model.genotype(name=name or f"{cfg.space}-search-seed{cfg.seed}", notes=notes)


def mgda_diagnostics(trace: dict[str, list[float]]) -> dict[str, Any]:
    """Per-epoch MGDA figures: the gammas, how often gamma hit 0 or 1, the cosine and norm ratio of t, t_hat."""
    gammas = [g for g in trace.get("gamma", []) if not math.isnan(g)]
    out: dict[str, Any] = {"gamma": trace.get("gamma", [])}
    out["gamma_mean"] = float(np.mean(gammas)) if gammas else float("nan")
    out["gamma_frac_0"] = sum(g == 0.0 for g in gammas) / len(gammas) if gammas else float("nan")
    out["gamma_frac_1"] = sum(g == 1.0 for g in gammas) / len(gammas) if gammas else float("nan")
    for key in ("cosine", "norm_ratio"):
        values = [v for v in trace.get(key, []) if math.isfinite(v)]
        out[f"{key}_mean"] = float(np.mean(values)) if values else float("nan")
    return out


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def _atomic_np(path: Path, write: Any) -> None:
    with replacing(path) as tmp, open(tmp, "wb") as fh:
        write(fh)


def run_search(
    config: SearchConfig,
    out_dir: str | Path,
    *,
    device: str | torch.device = "auto",
    progress: bool | Progress = True,
    plots: bool = True,
    resume: bool = False,
    previous: bool = False,
    stop_after_steps: int | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """Run (or, with ``resume=True``, continue) a search into ``out_dir``; returns the summary.

    A folder that already holds a search needs ``resume=True``; its config must equal ``config``.
    ``stop_after_steps`` (a testing aid) behaves like a SIGTERM after that many steps.
    """
    out_dir = Path(out_dir)
    dist, dev = init_distributed(resolve_device(device))
    if config.batch_size % dist.world:
        raise ConfigError(f"batch_size: expected a multiple of the {dist.world} ranks, got {config.batch_size}")
    data = load_search_data(config.dataset, config.data_dir, config.n_images, config.train_fraction, dev, config.resize)
    run = SearchRun(config, data, out_dir, dev, dist)
    with lock_if(dist.main, out_dir, "search"):  # one writer per run folder
        state_path = out_dir / STATE_FILE
        if dist.main:
            claim_run_folder(out_dir, config.to_dict(), "search", resume or previous, state=STATE_FILE)
        history = run_task(
            run,
            state_path,
            resume=resume,
            previous=previous,
            dist_info=dist,
            progress=progress,
            label="search",
            stop_after_steps=stop_after_steps,
        )
    genotype = run.genotype(name)
    summary: dict[str, Any] = {
        "genotype": genotype.to_dict(),
        "epochs": len(history),
        "seconds_total": round(sum(r["seconds"] for r in history), 3),
        "device": str(dev),
        "world_size": dist.world,
        "data": data.description,
        "gamma_trace": run.gamma_trace,
        "arch_digest": _arch_digest(run.model),
        "mgda": {k: history[-1][k] for k in ("gamma_frac_0", "gamma_frac_1", "cosine_mean", "norm_ratio_mean")}
        if history
        else {},
    }
    if dist.world > 1:
        digests: list[Any] = [None] * dist.world
        torch.distributed.all_gather_object(digests, summary["arch_digest"])
        summary["ranks_consistent"] = len(set(digests)) == 1
    if dist.main:
        genotype.save(out_dir / "genotype.json")
        if plots:
            from .plots import plot_run

            summary["plots"] = [str(p.relative_to(out_dir)) for p in plot_run(out_dir, genotype)]
        atomic_write_json(out_dir / "summary.json", summary)
    return summary


def _arch_digest(model: Supernet) -> str:
    import hashlib

    digest = hashlib.sha256()
    for a in model.arch_parameters():
        digest.update(a.detach().cpu().double().numpy().tobytes())
    return digest.hexdigest()[:16]
