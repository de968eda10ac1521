"""Adversarial training as a run of the shared run machinery (:mod:`arnas_zoo.runs`).

:func:`train` writes a run folder::

    <out>/recipe.json               the recipe, exactly as run
    <out>/train_state.safetensors   everything needed to resume (verified; the previous one kept beside it)
    <out>/log.jsonl                 one JSON object per epoch (rewritten whole from the state)
    <out>/curves.png                accuracy (selected epoch marked), loss and learning rate per epoch
    <out>/last/  <out>/best/        checkpoint folders (config.json + model.safetensors + metrics.json)

Everything after the state is derived from it and regenerated on resume. All randomness of a batch
(shuffle, crop, flip, cutout, attack start) comes from generators seeded by ``(seed, epoch, step)``;
under ``torchrun`` every process draws the same global batch and its randomness, keeps its
contiguous shard, synchronises BatchNorm statistics and averages gradients, so N processes compute
what one process computes on the same global batch. Model selection is by robust (or clean)
validation accuracy, since robust overfitting is real for these networks.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from arnas_zoo.atomic import atomic_write_text
from arnas_zoo.attacks import attack_mode, draw_noise, pgd
from arnas_zoo.checkpoint import save_folder
from arnas_zoo.config import ModelConfig
from arnas_zoo.devices import resolve_device
from arnas_zoo.errors import ConfigError
from arnas_zoo.models import ZooModel, build_model
from arnas_zoo.progress import Progress
from arnas_zoo.runs import augment, generator, run_task, scheduled_lr, seed_for
from arnas_zoo.runs.distributed import Dist, all_reduce_sum, convert_dist_batchnorm, init_distributed
from arnas_zoo.runs.faults import write_point
from arnas_zoo.runs.folder import claim_run_folder
from arnas_zoo.runs.lock import lock_if
from arnas_zoo.runs.loop import RunInterrupted, resave_state
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
from arnas_zoo.training.compiled import compiled_models, graphs_compiled, warn_near_limit
from arnas_zoo.training.plots import plot_curves
from arnas_zoo.training.recipe import Recipe, stop_reason
from arnas_zoo.training.step import StepModels, train_step

log = logging.getLogger(__name__)

STATE_FILE = "train_state.safetensors"
STATE_SCHEMA = "arnas-zoo/train-state@2"
TrainingInterrupted = RunInterrupted  # the name callers of train() know


class Data(Protocol):
    """Training or validation data: ``x`` float NCHW in [0, 1], ``y`` int64 labels."""

    @property
    def x(self) -> torch.Tensor: ...

    @property
    def y(self) -> torch.Tensor: ...


@dataclass
class TrainResult:
    """Where a run's outputs are, and its per-epoch history."""

    out_dir: Path
    best_dir: Path
    last_dir: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=dict)


def _describe(data: Any) -> dict[str, Any]:
    return data.describe() if hasattr(data, "describe") else {"n": int(data.x.shape[0])}


def protocol_record(val_data: Data | None, val_n: int | None, test_data: Any) -> dict[str, Any]:
    """Which rows chose the checkpoint (``selection``: the validation rows the recipe reads) and which rows
    its figures are reported on (``reporting``), and whether the two share an image (``disjoint``: None
    when the rows carry no official indices).
    """
    selection: Any = None
    if val_data is not None:
        n = val_data.x.shape[0] if val_n is None else min(val_n, val_data.x.shape[0])
        selection = val_data.first(n) if hasattr(val_data, "first") else val_data
    record: dict[str, Any] = {
        "selection": None if selection is None else _describe(selection),
        "reporting": _describe(test_data),
        "disjoint": None,
    }
    if selection is None:
        record["disjoint"] = True  # nothing was selected on
    elif getattr(selection, "indices", None) is not None and getattr(test_data, "indices", None) is not None:
        shared = set(selection.indices.tolist()) & set(test_data.indices.tolist())
        # official indices name images of one official split: a test row and a train row never are one image
        record["disjoint"] = not shared or _official_split(selection) != _official_split(test_data)
    return record


def _official_split(data: Any) -> str:
    return "test" if str(getattr(data, "split", "")).startswith("test") else "train"


class TrainingRun:
    """One adversarial-training run: the :class:`~arnas_zoo.runs.RunTask` that :func:`train` drives."""

    schema = STATE_SCHEMA

    def __init__(
        self,
        net: ZooModel,
        recipe: Recipe,
        train_data: Data,
        val_data: Data | None,
        out_dir: Path,
        device: torch.device,
        dist: Dist,
        run_name: str | None,
    ) -> None:
        self.net, self.recipe, self.out_dir, self.device, self.dist = net, recipe, out_dir, device, dist
        self.config: ModelConfig = net.config
        self.run_name = run_name or self.config.name
        self.autocast = autocast_for(device, recipe.bf16, cpu=recipe.bf16_cpu)
        tune_cudnn(device)
        self.memory_format = torch.channels_last if recipe.channels_last else torch.contiguous_format
        # one parameter group: the authors' recipes decay every parameter, BN and biases included
        self.optimizer = torch.optim.SGD(
            net.parameters(),
            lr=recipe.lr,
            momentum=recipe.momentum,
            nesterov=recipe.nesterov,
            weight_decay=recipe.weight_decay,
        )
        aux_weight = self.config.auxiliary_weight if recipe.auxiliary_weight is None else recipe.auxiliary_weight
        use_aux = getattr(net, "auxiliary_head", None) is not None and aux_weight > 0
        self.models = (
            compiled_models(net, use_aux, aux_weight, dist)
            if recipe.compile
            else StepModels(net, net, use_aux, aux_weight, dist)
        )
        # dynamo counts graphs per process: this run's are those compiled after this point (an evaluation's
        # compiled AutoAttack earlier in the process is not the training's)
        self.graphs_before = graphs_compiled() if recipe.compile else 0
        self.x_train = train_data.x[: recipe.train_n].to(device).contiguous(memory_format=self.memory_format)
        self.y_train = train_data.y[: recipe.train_n].to(device)
        self.train_description = _describe(train_data)
        self.epochs = recipe.epochs
        self.steps_per_epoch = self.x_train.shape[0] // recipe.batch_size
        if self.steps_per_epoch < 1:
            raise ConfigError(
                f"recipe.batch_size: {recipe.batch_size} is larger than the training set ({self.x_train.shape[0]})"
            )
        self.val: tuple[torch.Tensor, torch.Tensor] | None = None
        if val_data is not None:
            n_val = val_data.x.shape[0] if recipe.val_n is None else min(recipe.val_n, val_data.x.shape[0])
            self.val = (
                val_data.x[:n_val].to(device).contiguous(memory_format=self.memory_format),
                val_data.y[:n_val].to(device),
            )
        self.global_step = 0
        self.best: dict[str, Any] = {}
        self.guard: dict[str, Any] = {"best_robust": 0.0, "stopped": None}
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.final_metrics: dict[str, Any] | None = None
        self._perm: tuple[int, torch.Tensor] | None = None

    # ---- RunTask: identity and state ------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        return {"recipe": self.recipe.to_dict(), "config": self.config.to_dict()}

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = prefixed("model", self.net.state_dict())
        opt_tensors, opt_meta = optimizer_state(self.optimizer, "optim")
        rng_tensors, rng_meta = rng_state()
        tensors.update(opt_tensors)
        tensors.update(rng_tensors)
        if self.best_weights is not None:
            tensors.update(prefixed("best", self.best_weights))
        meta = {
            "optimizer": opt_meta,
            "rng": rng_meta,
            "best": self.best,
            "global_step": self.global_step,
            "final_metrics": self.final_metrics,
            "guard": self.guard,
        }
        return tensors, meta

    def load(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        where = str(self.out_dir / STATE_FILE)
        load_module(self.net, unprefixed("model", tensors), where)
        load_optimizer(self.optimizer, tensors, meta["optimizer"], where)
        restore_rng(tensors, meta["rng"])
        best = unprefixed("best", tensors)
        self.best_weights = best or None
        self.best, self.global_step, self.final_metrics = meta["best"], meta["global_step"], meta["final_metrics"]
        self.guard = dict(meta.get("guard", self.guard))

    # ---- RunTask: the work --------------------------------------------------------------------------
    def _permutation(self, epoch: int) -> torch.Tensor:
        if self._perm is None or self._perm[0] != epoch:
            gen = generator(self.device, seed_for(self.recipe.seed, epoch, -1))
            self._perm = (epoch, torch.randperm(self.x_train.shape[0], generator=gen, device=self.device))
        return self._perm[1]

    def step(self, epoch: int, step: int) -> dict[str, Any]:
        recipe, bs = self.recipe, self.recipe.batch_size
        t = epoch + step / self.steps_per_epoch
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(t)
        gen = generator(self.device, seed_for(recipe.seed, epoch, step))
        idx = self._permutation(epoch)[step * bs : (step + 1) * bs]
        xb = augment(self.x_train[idx], gen, crop_padding=recipe.crop_padding, flip=recipe.flip, cutout=recipe.cutout)
        yb = self.y_train[idx]
        noise = None
        if recipe.method != "standard" and recipe.start != "none":
            noise = draw_noise(xb.shape, recipe.start, gen, xb.device, xb.dtype)
        per_rank = bs // self.dist.world
        shard = slice(self.dist.rank * per_rank, (self.dist.rank + 1) * per_rank)
        xb, yb = xb[shard].contiguous(memory_format=self.memory_format), yb[shard]
        noise = None if noise is None else noise[shard]
        self.net.train()
        loss, correct = train_step(self.models, self.optimizer, recipe, xb, yb, noise, recipe.eps_at(t), self.autocast)
        self.global_step += 1
        n = yb.shape[0]
        return {"loss": loss * n, "correct": correct, "n": n}

    def lr_at(self, t: float) -> float:
        r = self.recipe
        return scheduled_lr(
            r.schedule,
            t,
            lr=r.lr,
            total=r.epochs,
            lr_min=r.lr_min,
            milestones=r.milestones,
            gamma=r.gamma,
            warmup=r.warmup_epochs,
        )

    def end_epoch(self, epoch: int, sums: dict[str, float], seconds: float) -> dict[str, Any]:
        r = self.recipe
        totals = all_reduce_sum(
            self.dist, torch.tensor([sums["loss"], sums["correct"], sums["n"]], dtype=torch.float64)
        )
        loss_sum, correct_sum, count = (float(v) for v in totals)
        end = epoch + 1 - 1e-9
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "global_step": self.global_step,
            "lr": self.lr_at(end),
            "train_loss": loss_sum / max(count, 1),
            "train_acc": correct_sum / max(count, 1),
            "train_acc_on": "clean" if r.method == "standard" else "training adversarial examples",
            "eps": r.eps_at(end),
            "seconds": seconds,
            "images_per_s": count / max(seconds, 1e-9),
        }
        if self.val is not None and self.dist.main and ((epoch + 1) % r.val_every == 0 or epoch + 1 == r.epochs):
            record.update(self._validate())
        if r.compile:
            record["compiled_graphs"] = graphs_compiled() - self.graphs_before
            warn_near_limit(record["compiled_graphs"])
        self._select(record)
        self.guard["best_robust"] = max(self.guard["best_robust"], float(record.get("val_robust_acc", 0.0)))
        reason = stop_reason(r, record, int(self.best.get("epoch", record["epoch"])), self.guard["best_robust"])
        if reason is not None:
            record["stopped"] = self.guard["stopped"] = reason
        return record

    @property
    def stopped(self) -> str | None:
        """Why the run stopped before its last epoch (early stopping, the overfitting guard), or None."""
        return self.guard["stopped"]

    def _validate(self) -> dict[str, Any]:
        assert self.val is not None
        r, (x, y) = self.recipe, self.val
        # full precision (model selection must not turn on bf16 rounding), batches of the training shape
        # (a compiled model reuses its graphs)
        batch = r.batch_size // self.dist.world
        gen = generator(self.device, seed_for(r.seed, -2, 0))
        clean = robust = 0
        for start in range(0, x.shape[0], batch):
            # clone: a slice's storage offset is a guard of a compiled graph (one graph per offset otherwise)
            xb, yb = x[start : start + batch].clone(), y[start : start + batch]
            with attack_mode(self.net), torch.no_grad():
                right = self.models.attack_net(xb).argmax(1) == yb
            clean += int(right.sum())
            x_adv = pgd(
                self.models.attack_net,
                xb,
                yb,
                eps=r.eps,
                step_size=r.validation_step_size,
                steps=r.val_steps,
                start="uniform",
                generator=gen,
                check_inputs=False,
            )
            with attack_mode(self.net), torch.no_grad():
                # robust means right on the clean point and on its attack, as in evaluation: a clean error
                # the attack happens to flip back is no robustness
                robust += int((right & (self.models.attack_net(x_adv).argmax(1) == yb)).sum())
        n = max(1, x.shape[0])
        return {
            "val_clean_acc": clean / n,
            "val_robust_acc": robust / n,
            "val_n": int(x.shape[0]),
            "val_attack": f"PGD-{r.val_steps} linf eps {r.eps:.4g} step {r.validation_step_size:.4g} uniform start",
        }

    def _select(self, record: dict[str, Any]) -> None:
        key = "val_robust_acc" if self.recipe.select_by == "robust" else "val_clean_acc"
        improved = key in record and (not self.best or record[key] > self.best.get("value", -1.0))
        if improved or not self.best:  # no validation yet: the first epoch stands in until one comes
            self.best = {
                "epoch": record["epoch"],
                "metric": key,
                "value": record.get(key, -1.0),
                "training": self._training_record(record),
            }
            self.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in self.net.state_dict().items()}

    def _training_record(self, record: dict[str, Any]) -> dict[str, Any]:
        return {
            "run": self.run_name,
            "recipe": self.recipe.name,
            "epoch": record["epoch"],
            "selection": {k: v for k, v in record.items() if k.startswith("val_")},
            "train_data": self.train_description,
            "train_points_used": f"first {self.x_train.shape[0]}",
        }

    # ---- RunTask: derived outputs -----------------------------------------------------------------
    def write_outputs(self, history: list[dict[str, Any]]) -> None:
        out = self.out_dir
        atomic_write_text(out / "log.jsonl", "".join(json.dumps(r) + "\n" for r in history))
        write_point("log")
        if history:
            save_folder(
                self.net, out / "last", metrics={"training": self._training_record(history[-1])}, config=self.config
            )
            write_point("last")
        if self.best_weights is not None:
            best_net = build_model(self.config)
            best_net.load_state_dict(self.best_weights)
            metrics = dict(self.final_metrics or {})
            metrics["training"] = self.best.get("training", {})
            save_folder(best_net, out / "best", metrics=metrics, config=self.config)
            write_point("best")
        if history:
            title = f"{self.run_name}: recipe {self.recipe.name}, seed {self.recipe.seed}"
            plot_curves(history, out / "curves.png", title=title, best=self.best)
            write_point("plot")


def train(
    model: ZooModel | ModelConfig,
    recipe: Recipe,
    train_data: Data,
    val_data: Data | None,
    out_dir: str | Path,
    *,
    resume: bool = False,
    previous: bool = False,
    device: str | torch.device = "auto",
    progress: bool | Progress = True,
    run_name: str | None = None,
    stop_after_steps: int | None = None,
    test_data: Any | None = None,
    eval_attacks: tuple[str, ...] | list[str] = ("fgsm", "pgd20"),
) -> TrainResult:
    """Train ``model`` adversarially with ``recipe`` and write the run folder ``out_dir``.

    ``train_data``/``val_data`` have ``.x`` (float NCHW in [0, 1]) and ``.y`` (int64); they are moved to
    the device once. ``val_data`` (None: no selection, ``best`` = the first epoch's weights until
    validation says otherwise) picks the best epoch by ``recipe.select_by``. With ``resume=True`` the
    run continues exactly where it stopped (``previous=True``: from the state kept before the latest);
    a recipe or model that differs from the saved one raises :class:`~arnas_zoo.errors.CheckpointError`.
    With ``test_data`` the best checkpoint is evaluated at the end (``eval_attacks`` at the recipe's eps)
    and the report becomes its ``metrics.json``. ``stop_after_steps`` (testing aid) behaves like a
    SIGTERM after that many steps. Under ``torchrun`` the same call trains data-parallel.
    Raises :class:`TrainingInterrupted` after saving when SIGTERM/SIGINT arrive.
    """
    dist, dev = init_distributed(resolve_device(device))
    if recipe.batch_size % dist.world:
        raise ConfigError(
            f"recipe.batch_size: the global batch ({recipe.batch_size}) must divide evenly over {dist.world} processes"
        )
    out_dir = Path(out_dir)
    config = model if isinstance(model, ModelConfig) else model.config
    net: ZooModel = build_model(config) if isinstance(model, ModelConfig) else model
    net.config = config.replace(threat_model="linf", eps=recipe.eps, name=run_name or config.name)
    net.to(dev)
    if dist.world > 1:
        convert_dist_batchnorm(net)
    if recipe.channels_last:
        net.to(memory_format=torch.channels_last)
    run = TrainingRun(net, recipe, train_data, val_data, out_dir, dev, dist, run_name)
    with lock_if(dist.main, out_dir, "training"):  # one writer per run folder
        if dist.main:
            claim_run_folder(
                out_dir, recipe.to_dict(), "training", resume or previous, state=STATE_FILE, file="recipe.json"
            )
        state_path = out_dir / STATE_FILE
        history = run_task(
            run,
            state_path,
            resume=resume,
            previous=previous,
            dist_info=dist,
            progress=progress,
            label=run.run_name or "train",
            stop_after_steps=stop_after_steps,
        )
        if dist.main and test_data is not None and run.final_metrics is None and run.best_weights is not None:
            from arnas_zoo.evaluate import evaluate

            best_net = build_model(run.config)
            best_net.load_state_dict(run.best_weights)
            report = evaluate(
                best_net,
                test_data,
                attacks=list(eval_attacks),
                eps=recipe.eps,
                device=dev,
                seed=recipe.seed,
                checks=False,
                progress=progress,
                model_info={"name": run.config.name, "source": str(out_dir / "best")},
            )
            run.final_metrics = report.to_metrics()
            run.final_metrics["protocol"] = protocol_record(val_data, recipe.val_n, test_data)
            resave_state(run, state_path)  # the state first, then the folders derived from it
            run.write_outputs(history)
    return TrainResult(out_dir, out_dir / "best", out_dir / "last", history, run.best)
