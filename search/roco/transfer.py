"""RoCo-NAS's transfer set (stage 1 of :mod:`search.roco.run`): adversarial examples crafted on source models
trained here, kept only when they fool their source, split by a seeded permutation into a search half and a
held-out half, and signed so a candidate job trusts only the set this run built."""

from __future__ import annotations

import hmac
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from arnas_zoo.atomic import atomic_write_json, replacing
from arnas_zoo.checkpoint import sha256_file
from arnas_zoo.errors import UntrustedFileError
from arnas_zoo.safe_json import read_json_object

from .config import RocoConfig

log = logging.getLogger(__name__)


def _train(
    arch: str, overrides: dict[str, Any], config: RocoConfig, out: Path, epochs: float, checkpoint: str = "best"
) -> Any:
    from arnas_zoo.hub import load
    from arnas_zoo.training import run_training

    recipe = {
        "method": "standard",
        "epochs": max(1, int(round(epochs))),
        "batch_size": config.batch_size,
        "lr": config.lr,
        "schedule": "cosine",
        "weight_decay": 5e-4,
        "select_by": "clean",
        "val_steps": 1,  # candidates train clean; the validation attack is not used
        "cutout": 0,
        "flip": config.dataset != "digits" and config.dataset != "mnist",
        "crop_padding": 1 if config.dataset in ("digits", "mnist") else 4,
    }
    if config.train_n:
        recipe["train_n"] = config.train_n
    resume = (out / "train_state.safetensors").is_file()
    result = run_training(
        arch,
        "cpu_digits",
        config.dataset,
        out_dir=out,
        data_dir=config.data_dir,
        val_rows=config.val_rows,
        recipe_overrides=recipe,
        model_overrides=overrides,
        resume=resume,
        device="cpu" if not torch.cuda.is_available() else "auto",
        progress=False,
        eval_attacks=None,
        eval_n=None,
    )
    return load(str(result.best_dir if checkpoint == "best" else result.last_dir), device="cpu"), result


def _validation_rows(config: RocoConfig) -> tuple[torch.Tensor, torch.Tensor]:
    from arnas_zoo.data import load_dataset, split_train_val

    data = load_dataset(config.dataset, "train", data_dir=config.data_dir)
    _, val = split_train_val(data, config.val_rows)
    return val.x[: config.transfer_from], val.y[: config.transfer_from]


def l0_random_search(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, pixels: int, trials: int, gen: torch.Generator
) -> torch.Tensor:
    """Per image: up to ``trials`` random sets of ``pixels`` pixels set to 0 or 1 (all channels); the first
    that fools ``model`` is kept, else the image is returned unchanged."""
    model.eval()
    n, c, h, w = x.shape
    out = x.clone()
    fooled = torch.zeros(n, dtype=torch.bool)
    with torch.no_grad():
        for _ in range(trials):
            todo = (~fooled).nonzero().flatten()
            if len(todo) == 0:
                break
            cand = x[todo].clone()
            for row in range(len(todo)):
                where = torch.randperm(h * w, generator=gen)[:pixels]
                values = torch.randint(0, 2, (pixels,), generator=gen).float()
                flat = cand[row].view(c, h * w)
                flat[:, where] = values
            hit = model(cand).argmax(1) != y[todo]
            out[todo[hit]] = cand[hit]
            fooled[todo[hit]] = True
    return out


def build_transfer_set(config: RocoConfig, out: Path) -> dict[str, Any]:
    """Train the source models, craft and keep the successful examples, split in halves; idempotent."""
    from arnas_zoo.attacks import pgd

    npz, meta_path = out / "transfer_set.npz", out / "transfer_set.json"
    if npz.is_file() and meta_path.is_file():
        reason = _transfer_set_problem(npz, meta_path)
        if reason is None:
            meta: dict[str, Any] = read_json_object(meta_path, what="transfer set record")
            return meta
        log.warning("%s: %s; building the transfer set again", out, reason)
    x, y = _validation_rows(config)
    xs, ys, tags, provenance = [], [], [], []
    for s, arch in enumerate(config.source_archs):
        overrides: dict[str, Any] = {"init_channels": config.source_width}
        if arch != "resnet18":
            overrides.update(layers=5, auxiliary=False)
        model, result = _train(arch, overrides, config, out / "sources" / arch, config.source_epochs)
        model.eval()
        clean_acc = float((model(x).argmax(1) == y).double().mean())
        for eps in config.linf_eps:
            gen = torch.Generator().manual_seed(config.seed * 1000 + s * 100 + int(eps * 1000))
            adv = pgd(model, x, y, eps=eps, step_size=eps / 4, steps=10, generator=gen)
            hit = model(adv).argmax(1) != y
            xs.append(adv[hit])
            ys.append(y[hit])
            tags += [f"{arch}/linf-pgd10/{eps:.4g}"] * int(hit.sum())
            provenance.append({"source": arch, "attack": "pgd10", "norm": "linf", "eps": eps, "kept": int(hit.sum())})
        for k in config.l0_pixels:
            gen = torch.Generator().manual_seed(config.seed * 1000 + s * 100 + 50 + k)
            adv = l0_random_search(model, x, y, k, config.l0_trials, gen)
            hit = model(adv).argmax(1) != y
            xs.append(adv[hit])
            ys.append(y[hit])
            tags += [f"{arch}/l0-random/{k}"] * int(hit.sum())
            provenance.append(
                {
                    "source": arch,
                    "attack": "l0 random search",
                    "pixels": k,
                    "trials": config.l0_trials,
                    "kept": int(hit.sum()),
                }
            )
        provenance.append(
            {
                "source": arch,
                "clean_accuracy_on_attacked_rows": clean_acc,
                "trained": str(result.best_dir.relative_to(out)),
            }
        )
    x_all, y_all = torch.cat(xs), torch.cat(ys)
    perm = torch.randperm(len(x_all), generator=torch.Generator().manual_seed(config.seed + 7))
    half = np.zeros(len(x_all), dtype=np.uint8)
    half[perm[len(x_all) // 2 :].numpy()] = 1  # 0: search half, 1: held out
    with replacing(npz) as tmp:
        np.savez_compressed(tmp, x=x_all.numpy(), y=y_all.numpy(), half=half, tag=np.array(tags))
    digest = sha256_file(npz)
    meta = {
        "sha256": digest,
        "signature": _sign(digest),
        "n": len(x_all),
        "search_half": int((half == 0).sum()),
        "held_out_half": int((half == 1).sum()),
        "attacked": f"{config.dataset} validation rows (last {config.val_rows} train rows), first {len(x)}",
        "seed": config.seed,
        "provenance": provenance,
    }
    atomic_write_json(meta_path, meta)
    return meta


def _transfer_set_problem(npz: Path, meta_path: Path) -> str | None:
    """Why a saved transfer set cannot be reused (unreadable record, or an npz other than the one recorded)."""
    try:
        meta = read_json_object(meta_path, max_bytes=16 * 1024 * 1024, what="transfer set record")
    except UntrustedFileError as exc:
        return str(exc).split(": ", 1)[-1]
    digest = sha256_file(npz)
    if meta.get("sha256") != digest:
        return "transfer_set.npz is not the file its record names (changed, corrupted, or from an older version)"
    if not isinstance(meta.get("signature"), str) or not hmac.compare_digest(meta["signature"], _sign(digest)):
        return "its record is not signed with this user's job key (edited together with the npz?)"
    return None


def _sign(digest: str) -> str:
    """The transfer set's sha256 signed with the job layer's key (as job results are)."""
    from arnas_zoo.jobs import signing_key

    return hmac.new(signing_key(), f"transfer-set:{digest}".encode(), "sha256").hexdigest()


def transfer_inputs(args: dict[str, Any], run_dir: Path) -> list[Path]:
    """A candidate's result depends on the transfer set it was scored on."""
    return [Path(run_dir) / "transfer_set.npz"]


def _transfer(out: Path) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    with np.load(out / "transfer_set.npz") as data:
        return torch.from_numpy(data["x"]), torch.from_numpy(data["y"]), data["half"]
