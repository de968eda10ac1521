"""Running a search: the epoch loop, outputs, atomic checkpoints, exact resume and data parallelism.

Output folder (rank 0 writes):

- ``config.json``      the resolved :class:`~search.config.SearchConfig`
- ``checkpoint.pt``    weights, architecture, both optimizers, RNG states and the history; written
                        atomically after every epoch and the single source of the files below
- ``log.jsonl``        one JSON object per epoch: genotype, MGDA gamma trace, losses and accuracies
- ``alphas.npz``       architecture softmax weights per cell type, ``(epochs + 1, edges, ops)`` (row 0
                        is the initialisation), plus ``<cell>_logits`` and ``primitives``
- ``gamma.npy``        the gamma of every architecture step, ``(epochs, steps)``
- ``genotype.json``    the final discretised genotype; ``eval_config.json`` the evaluation network
                        config (paper macro with this search's placement and filters)
- ``plots/``           architecture weights per cell type over epochs, gamma trace, final cells
- ``summary.json``     written last: the run is complete

Each epoch reseeds every RNG from (seed, epoch, rank), so killing a run at any point and starting it
again on the same folder repeats the interrupted epoch bit for bit (CPU) from the last checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from arnas_zoo.checkpoint import atomic_write_json, atomic_write_text
from arnas_zoo.distributed import Dist, init_distributed, resolve_device
from arnas_zoo.errors import CheckpointError, ConfigError
from arnas_zoo.network import ModelConfig
from search.attack import bn_mode, pgd_linf
from search.bilevel import Architect, ArchStepInfo, no_sync, weight_step
from search.config import SearchConfig
from search.data import SearchData, batches, load_search_data
from search.objectives import make_objective
from search.supernet import Supernet

log = logging.getLogger("search")

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = "arnas-zoo/search-checkpoint@1"
#: Evaluation macro of the paper (20 cells); init channels per space (ARNAS 64, DARTS 36).
EVAL_MACRO = {"arnas": {"layers": 20, "init_channels": 64}, "darts": {"layers": 20, "init_channels": 36}}

StepCallback = Callable[[int, int], None]


# ---- device, distributed and precision helpers -------------------------------------------------
def all_reduce_mean(grads: list[torch.Tensor], world: int) -> list[torch.Tensor]:
    """Average gradients over ranks with one all-reduce of a flat buffer."""
    if world <= 1 or not grads:
        return grads
    buffer = torch.cat([g.reshape(-1).float() for g in grads])
    dist.all_reduce(buffer)
    buffer /= world
    out, offset = [], 0
    for g in grads:
        out.append(buffer[offset : offset + g.numel()].view_as(g).to(g.dtype))
        offset += g.numel()
    return out


def autocast_factory(config: SearchConfig, device: torch.device) -> Callable[[], AbstractContextManager[Any]]:
    if config.amp and device.type == "cuda":
        return partial(torch.autocast, device_type="cuda", dtype=torch.bfloat16)
    return nullcontext


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    return (seed * 1_000_003 + epoch * 7919 + rank * 104_729) % (2**63 - 1)


def cosine_lr(config: SearchConfig, epoch: int) -> float:
    """DARTS' per-epoch cosine schedule from ``w_lr`` to ``w_lr_min`` over ``epochs``."""
    return config.w_lr_min + 0.5 * (config.w_lr - config.w_lr_min) * (1 + math.cos(math.pi * epoch / config.epochs))


# ---- the search state ------------------------------------------------------------------------------
class SearchState:
    """Model, optimizers, data and history of one run; ``state_dict``/``load_state_dict`` for resume."""

    def __init__(self, config: SearchConfig, data: SearchData, device: torch.device, ddp: Dist):
        self.config, self.data, self.device, self.ddp = config, data, device, ddp
        c, h, _ = data.image_shape
        space = config.search_space(num_classes=data.num_classes, in_channels=c, input_size=h)
        torch.manual_seed(config.seed)
        arch_gen = torch.Generator().manual_seed(config.seed + 1)
        self.model = Supernet(space, arch_init_scale=config.arch_init_scale, generator=arch_gen).to(device)
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.sync = partial(all_reduce_mean, world=ddp.world) if ddp.world > 1 else no_sync
        self.autocast = autocast_factory(config, device)
        self.w_opt = torch.optim.SGD(
            self.model.weight_parameters(),
            lr=config.w_lr,
            momentum=config.w_momentum,
            weight_decay=config.w_weight_decay,
        )
        self.objective = make_objective(config.robust_objective, config=config, autocast=self.autocast)
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
            autocast=self.autocast,
        )
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self.gamma_trace: list[list[float]] = []
        self.alpha_history: list[dict[str, np.ndarray]] = [self._alpha_logits()]

    def _alpha_logits(self) -> dict[str, np.ndarray]:
        return {k: a.detach().double().cpu().numpy().copy() for k, a in self.model.alphas.items()}

    @property
    def steps_per_epoch(self) -> int:
        full = max(1, len(self.data.x_train) // self.config.batch_size)
        return min(full, self.config.steps_per_epoch) if self.config.steps_per_epoch else full

    def state_dict(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.to_dict(),
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "w_opt": self.w_opt.state_dict(),
            "a_opt": self.architect.optimizer.state_dict(),
            "rng": rng,
            "history": json.dumps(self.history),
            "gamma_trace": json.dumps(self.gamma_trace),
            "alpha_history": {
                k: torch.from_numpy(np.stack([h[k] for h in self.alpha_history])) for k in self.model.arch_names
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"checkpoint: expected format {CHECKPOINT_FORMAT!r}, got {state.get('format')!r}")
        self.model.load_state_dict(state["model"], strict=True)
        self.w_opt.load_state_dict(state["w_opt"])
        self.architect.optimizer.load_state_dict(state["a_opt"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        self.epoch = int(state["epoch"])
        self.history = json.loads(state["history"])
        self.gamma_trace = json.loads(state["gamma_trace"])
        hist = {k: v.numpy() for k, v in state["alpha_history"].items()}
        self.alpha_history = [{k: hist[k][i] for k in hist} for i in range(len(next(iter(hist.values()))))]


# ---- one epoch -------------------------------------------------------------------------------------
def _prepare_input(x: torch.Tensor, config: SearchConfig) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if config.channels_last else x


def search_step(
    state: SearchState, x_tr: torch.Tensor, y_tr: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor, lr: float
) -> tuple[ArchStepInfo, float, int]:
    """One search step: PGD on the training batch, the robust objective's preparation on the validation
    batch, the architecture step (DARTS order: before the weights move), the weight step on the PGD
    training batch. Returns (architecture step info, training loss, #correct)."""
    cfg, model = state.config, state.model
    x_tr_adv = pgd_linf(
        model,
        x_tr,
        y_tr,
        eps=cfg.eps,
        step_size=cfg.step_size,
        steps=cfg.pgd_steps,
        bn=cfg.attack_bn,
        autocast=state.autocast,
    )
    robust_prepared = state.objective.prepare(model, x_val, y_val)
    info = state.architect.step((x_tr_adv, y_tr), (x_val, y_val), robust_prepared, eta=lr)
    loss, correct = weight_step(
        model, state.w_opt, x_tr_adv, y_tr, grad_clip=cfg.grad_clip, sync=state.sync, autocast=state.autocast
    )
    return info, loss, correct


def run_epoch(state: SearchState, progress: bool = True, on_step: StepCallback | None = None) -> dict[str, Any]:
    """Train weights and architecture for one epoch; returns the epoch record (also appended to history)."""
    cfg, model, epoch, ddp = state.config, state.model, state.epoch, state.ddp
    torch.manual_seed(epoch_seed(cfg.seed, epoch, ddp.rank))
    lr = cosine_lr(cfg, epoch)
    for group in state.w_opt.param_groups:
        group["lr"] = lr
    gen_device = state.device if state.device.type == "cuda" else torch.device("cpu")
    train_gen = torch.Generator(gen_device).manual_seed(epoch_seed(cfg.seed, epoch, 0) + 1)
    val_gen = torch.Generator(gen_device).manual_seed(epoch_seed(cfg.seed, epoch, 0) + 2)
    shard = (ddp.rank, ddp.world)
    train_stream = batches(
        state.data.x_train, state.data.y_train, cfg.batch_size, train_gen, do_augment=cfg.augment, shard=shard
    )
    val_stream = batches(
        state.data.x_val, state.data.y_val, cfg.batch_size, val_gen, do_augment=cfg.augment, shard=shard
    )
    sums = dict.fromkeys(
        (
            "train_loss",
            "train_correct",
            "val_natural_loss",
            "val_natural_correct",
            "val_robust_loss",
            "val_robust_correct",
            "seen",
        ),
        0.0,
    )
    gammas: list[float] = []
    cosines: list[float] = []
    steps = state.steps_per_epoch
    started = time.perf_counter()
    bar = _progress(steps, f"epoch {epoch + 1}/{cfg.epochs}", progress and ddp.main)
    for step in range(steps):
        x_tr, y_tr = next(train_stream)
        x_val, y_val = next(val_stream)
        x_tr, x_val = _prepare_input(x_tr, cfg), _prepare_input(x_val, cfg)
        info, loss, correct = search_step(state, x_tr, y_tr, x_val, y_val, lr)
        n = len(y_tr)
        sums["train_loss"] += loss * n
        sums["train_correct"] += correct
        sums["val_natural_loss"] += info.natural_loss * n
        sums["val_natural_correct"] += info.natural_correct
        sums["val_robust_loss"] += info.robust_loss * n
        sums["val_robust_correct"] += info.robust_correct
        sums["seen"] += n
        gammas.append(info.gamma)
        cosines.append(info.cosine)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", gamma=f"{info.gamma:.3f}")
        if on_step is not None:
            on_step(epoch, step)
    if bar is not None:
        bar.close()
    totals = torch.tensor([sums[k] for k in sums], dtype=torch.float64)
    if ddp.world > 1:
        dist.all_reduce(totals)
        _average_buffers(model, ddp.world)
    s = dict(zip(sums, totals.tolist()))
    seen = max(s["seen"], 1.0)
    record: dict[str, Any] = {
        "epoch": epoch + 1,
        "lr": lr,
        "steps": steps,
        "seconds": round(time.perf_counter() - started, 3),
        "train_adv_loss": s["train_loss"] / seen,
        "train_adv_acc": s["train_correct"] / seen,
        "val_natural_loss": s["val_natural_loss"] / seen,
        "val_natural_acc": s["val_natural_correct"] / seen,
        f"val_{cfg.robust_objective}_loss": s["val_robust_loss"] / seen,
        "gamma": gammas,
        "gamma_mean": float(np.nanmean(gammas)) if gammas and not all(math.isnan(g) for g in gammas) else float("nan"),
        "cosine_t_t_hat_mean": float(np.mean(cosines)) if cosines else float("nan"),
    }
    if s["val_robust_correct"] >= 0:
        record[f"val_{cfg.robust_objective}_acc"] = s["val_robust_correct"] / seen
    if cfg.eval_n:
        record["eval"] = evaluate_supernet(state)
    state.epoch += 1
    state.gamma_trace.append(gammas)
    state.alpha_history.append(state._alpha_logits())
    record["genotype"] = state.model.genotype().to_dict()
    state.history.append(record)
    return record


def _average_buffers(model: torch.nn.Module, world: int) -> None:
    """Keep BN running statistics identical on every rank (each rank saw only its shard)."""
    with torch.no_grad():
        for b in model.buffers():
            if b.dtype.is_floating_point:
                dist.all_reduce(b)
                b /= world
            else:
                dist.broadcast(b, 0)


def evaluate_supernet(state: SearchState) -> dict[str, Any]:
    """Clean and PGD accuracy of the supernet on the first ``eval_n`` architecture-split images.

    Clean accuracy is measured twice, with BN running statistics (eval mode, what the PGD of the
    search uses by default) and with batch statistics: a large gap says the running statistics do not
    describe the supernet and ``attack_bn=batch`` should be used.
    """
    cfg, model = state.config, state.model
    x, y = state.data.x_val[: cfg.eval_n], state.data.y_val[: cfg.eval_n]
    correct = {"eval_bn": 0, "batch_bn": 0, "pgd": 0}
    loss = {"eval_bn": 0.0, "batch_bn": 0.0}
    with torch.random.fork_rng(devices=[state.device] if state.device.type == "cuda" else []):
        torch.manual_seed(cfg.seed)
        for start in range(0, len(x), cfg.batch_size):
            xb, yb = _prepare_input(x[start : start + cfg.batch_size], cfg), y[start : start + cfg.batch_size]
            for mode in ("eval", "batch"):
                with bn_mode(model, mode), torch.no_grad(), state.autocast():
                    logits = model(xb).float()
                key = f"{mode}_bn"
                correct[key] += int((logits.argmax(1) == yb).sum())
                loss[key] += float(torch.nn.functional.cross_entropy(logits, yb, reduction="sum"))
            x_adv = pgd_linf(
                model,
                xb,
                yb,
                eps=cfg.eps,
                step_size=cfg.step_size,
                steps=cfg.pgd_steps,
                bn=cfg.attack_bn,
                autocast=state.autocast,
            )
            with bn_mode(model, cfg.attack_bn), torch.no_grad(), state.autocast():
                correct["pgd"] += int((model(x_adv).float().argmax(1) == yb).sum())
    n = len(x)
    return {
        "n": n,
        "natural_acc": correct["eval_bn"] / n,
        "natural_loss": loss["eval_bn"] / n,
        "natural_acc_batch_bn": correct["batch_bn"] / n,
        "natural_loss_batch_bn": loss["batch_bn"] / n,
        f"pgd{cfg.pgd_steps}_acc": correct["pgd"] / n,
        "attack": f"l_inf PGD-{cfg.pgd_steps} eps={cfg.eps:.5f} step={cfg.step_size:.5f} random start, bn={cfg.attack_bn}",
        "seed": cfg.seed,
    }


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, disable=None)


# ---- files ------------------------------------------------------------------------------------------
def save_checkpoint(state: SearchState, out_dir: Path) -> None:
    tmp = out_dir / f".{CHECKPOINT}.tmp-{os.getpid()}"
    torch.save(state.state_dict(), tmp)
    os.replace(tmp, out_dir / CHECKPOINT)


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read the search checkpoint ({exc}); delete it to start over") from None


def write_outputs(state: SearchState, out_dir: Path) -> None:
    """Rewrite log.jsonl, alphas.npz and gamma.npy from the state (the checkpoint is the source)."""
    lines = "".join(json.dumps(r) + "\n" for r in state.history)
    atomic_write_text(out_dir / "log.jsonl", lines)
    arrays: dict[str, np.ndarray] = {"primitives": np.array(state.model.primitives)}
    for name in state.model.arch_names:
        logits = np.stack([h[name] for h in state.alpha_history])
        arrays[f"{name}_logits"] = logits
        arrays[name] = _softmax(logits)
    _atomic_np(out_dir / "alphas.npz", lambda f: np.savez(f, **arrays))
    width = max((len(g) for g in state.gamma_trace), default=0)
    gamma = np.full((len(state.gamma_trace), width), np.nan)
    for i, g in enumerate(state.gamma_trace):
        gamma[i, : len(g)] = g
    _atomic_np(out_dir / "gamma.npy", lambda f: np.save(f, gamma))


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def _atomic_np(path: Path, write: Callable[[Any], None]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        write(fh)
    os.replace(tmp, path)


def genotype_notes(config: SearchConfig, data: SearchData) -> str:
    return (
        f"python -m search: space {config.space} {config.placement} {config.filters}, {config.layers} cells C={config.init_channels}, "
        f"{config.order}-order, {config.strategy}, lambda={config.lam}, {config.robust_objective} "
        f"(PGD-{config.pgd_steps} eps={config.eps:.4f}), {config.epochs} epochs x {config.batch_size}, seed {config.seed}; "
        f"data: {data.description}"
    )


# ---- the run -------------------------------------------------------------------------------------
def run_search(
    config: SearchConfig,
    out_dir: str | Path,
    *,
    device: str | torch.device = "auto",
    progress: bool = True,
    plots: bool = True,
    on_step: StepCallback | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """Run (or resume) a search into ``out_dir``; returns the summary (also ``summary.json``).

    An existing ``checkpoint.pt`` in ``out_dir`` is resumed when its config equals ``config``
    (a different config is an error: pick another folder). ``on_step(epoch, step)`` is called after
    every step (tests use it to interrupt a run).
    """
    out_dir = Path(out_dir)
    ddp, dev = init_distributed(resolve_device(device))
    if config.batch_size % ddp.world:
        raise ConfigError(f"batch_size: expected a multiple of the {ddp.world} ranks, got {config.batch_size}")
    data = load_search_data(config.dataset, config.data_dir, config.n_images, config.train_fraction, dev, config.resize)
    state = SearchState(config, data, dev, ddp)
    ckpt_path = out_dir / CHECKPOINT
    if ckpt_path.is_file():
        saved = load_checkpoint(ckpt_path)
        if saved.get("config") != config.to_dict():
            diff = sorted(k for k, v in config.to_dict().items() if saved.get("config", {}).get(k) != v)
            raise ConfigError(
                f"{out_dir}: holds a search with a different config (differs in {diff}); "
                "use another output folder or delete it"
            )
        state.load_state_dict(saved)
        log.info("resuming %s after epoch %d", out_dir, state.epoch)
    if ddp.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out_dir / "config.json", config.to_dict())
    started = time.perf_counter()
    while state.epoch < config.epochs:
        record = run_epoch(state, progress=progress, on_step=on_step)
        if ddp.main:
            save_checkpoint(state, out_dir)
            write_outputs(state, out_dir)
            log.info(
                "epoch %d: train adv acc %.3f, val natural acc %.3f, gamma mean %.3f",
                record["epoch"],
                record["train_adv_acc"],
                record["val_natural_acc"],
                record["gamma_mean"],
            )
    genotype = state.model.genotype(
        name=name or f"{config.space}-search-seed{config.seed}", notes=genotype_notes(config, data)
    )
    summary: dict[str, Any] = {
        "genotype": genotype.to_dict(),
        "epochs": state.epoch,
        "seconds_this_session": round(time.perf_counter() - started, 3),
        "seconds_total": round(sum(r["seconds"] for r in state.history), 3),
        "device": str(dev),
        "world_size": ddp.world,
        "data": data.description,
        "gamma_trace": state.gamma_trace,
        "arch_digest": _arch_digest(state.model),
    }
    if ddp.world > 1:
        digests: list[Any] = [None] * ddp.world
        dist.all_gather_object(digests, summary["arch_digest"])
        summary["ranks_consistent"] = len(set(digests)) == 1
    if ddp.main:
        genotype.save(out_dir / "genotype.json")
        space = state.model.space
        eval_config = ModelConfig(
            genotype=genotype, name=genotype.name, **EVAL_MACRO[space.space], **space.model_config_overrides()
        )
        atomic_write_text(out_dir / "eval_config.json", eval_config.to_json() + "\n")
        if plots:
            from search.plots import plot_run

            summary["plots"] = [str(p.relative_to(out_dir)) for p in plot_run(out_dir, genotype)]
        atomic_write_json(out_dir / "summary.json", summary)
    return summary


def _arch_digest(model: Supernet) -> str:
    import hashlib

    digest = hashlib.sha256()
    for a in model.arch_parameters():
        digest.update(a.detach().cpu().double().numpy().tobytes())
    return digest.hexdigest()[:16]
