"""Tiny models with real (if modest) accuracy, built in seconds without backpropagation.

Random networks predict nearly one class for every image, which makes attack and agreement checks
vacuous; training even a tiny cell network takes minutes on the shared 2-core CPU. So: calibrate the
BatchNorm statistics on real images (forward passes only) and fit the linear classifier in closed
form (ridge regression on the pooled features). The result is a genuine ZooModel whose predictions
vary with the image (roughly 50-60% MNIST test accuracy for C=4, 5 cells).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from arnas_zoo import create_model
from arnas_zoo.images import read_npz_batch
from arnas_zoo.models import ZooModel


def fitted_mnist_model(data_dir: Path, seed: int = 0, n_fit: int = 256) -> ZooModel:
    x, y = read_npz_batch(data_dir / "mnist" / "train.npz", channels=1, n=n_fit)
    torch.manual_seed(seed)
    model = create_model(
        "arnas", in_channels=1, input_size=28, init_channels=4, layers=5, auxiliary=False, threat_model="linf", eps=0.1
    )
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # cumulative average over the calibration batches
            module.reset_running_stats()
    model.train()
    with torch.no_grad():
        for start in range(0, len(x), 128):
            model(x[start : start + 128])
    model.eval()
    features: list[torch.Tensor] = []
    hook = model.classifier.register_forward_hook(lambda _m, inputs, _o: features.append(inputs[0]))
    with torch.no_grad():
        model(x)
    hook.remove()
    design = torch.cat([torch.cat(features), torch.ones(len(x), 1)], dim=1).double()
    targets = F.one_hot(y, 10).double()
    weights = torch.linalg.solve(
        design.T @ design + 1e-2 * torch.eye(design.shape[1], dtype=torch.float64), design.T @ targets
    )
    with torch.no_grad():
        model.classifier.weight.copy_(weights[:-1].T.float())
        model.classifier.bias.copy_(weights[-1].float())
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = 0.1
    return model


def relabelled(model: ZooModel) -> ZooModel:
    """A copy of ``model`` whose classifier rows are rotated by one class: same features, different
    predictions for every image (a cheap "different model" for negative tests)."""
    import copy

    other = copy.deepcopy(model)
    with torch.no_grad():
        other.classifier.weight.copy_(model.classifier.weight.roll(1, dims=0))
        other.classifier.bias.copy_(model.classifier.bias.roll(1, dims=0))
    return other
