"""Small models shared by the evaluation tests: trained once per process on the embedded digits.

Kept tiny so that every attack test runs in seconds on a 2-core CPU.
"""

from __future__ import annotations

import copy
import functools

import torch
import torch.nn.functional as F
from torch import nn

from arnas_zoo.data import ImageData, load_dataset


class TinyCNN(nn.Module):
    """Two conv layers and a linear head for 1x16x16 digits (about 6k parameters)."""

    def __init__(self, channels: int = 8, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(channels, 2 * channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(2 * channels * 16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def train(model: nn.Module, data: ImageData, epochs: int, lr: float = 3e-3, seed: int = 0) -> nn.Module:
    """Plain (non-adversarial) Adam training; returns the model in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(data), generator=generator)
        for start in range(0, len(data), 64):
            rows = order[start : start + 64]
            out = model(data.x[rows])
            logits = out[0] if isinstance(out, tuple) else out
            loss = F.cross_entropy(logits, data.y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    for p in model.parameters():
        p.grad = None
    return model.eval()


@functools.cache
def _trained_tiny_cnn() -> TinyCNN:
    torch.manual_seed(0)
    return train(TinyCNN(6), load_dataset("digits", "train"), epochs=3, lr=5e-3)  # type: ignore[return-value]


def trained_tiny_cnn() -> TinyCNN:
    """The trained tiny CNN, a fresh copy per call: trained once per process, and no test's mode switch or
    wrapper on it reaches another test (a shared instance left in train mode made later tests order-dependent)."""
    return copy.deepcopy(_trained_tiny_cnn()).eval()


class QuantizedInput(nn.Module):
    """A gradient-masking 'defense': rounds its input to 2 levels with a zero-gradient straight step.

    The rounding is not differentiable (torch.round has zero gradient almost everywhere), so gradient
    attacks see no signal while the model itself stays easy to fool: exactly the failure the
    sanity checks must flag.
    """

    def __init__(self, model: nn.Module, levels: int = 2):
        super().__init__()
        self.model = model
        self.levels = levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(x * (self.levels - 1)) / (self.levels - 1))


class NoisyInput(nn.Module):
    """A randomized 'defense': strong Gaussian noise on every call (the predictions change run to run)."""

    def __init__(self, model: nn.Module, sigma: float = 0.6):
        super().__init__()
        self.model = model
        self.sigma = sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x + self.sigma * torch.randn_like(x))


class _FlipGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return -grad


class ReversedGradient(nn.Module):
    """Obfuscated gradients: the forward is the plain model, the backward points the wrong way."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(_FlipGradient.apply(x))


def train_zoo_checkpoint(folder, data: ImageData, seed: int = 0, epochs: int = 2):  # type: ignore[no-untyped-def]
    """A tiny ResNet-18 (width 4) from the registry, trained briefly on ``data`` and saved as a folder."""
    from arnas_zoo.checkpoint import save_folder
    from arnas_zoo.registry import create_model

    torch.manual_seed(seed)
    c, h, _ = data.shape
    model = create_model("resnet18", in_channels=c, input_size=h, num_classes=data.num_classes, init_channels=4)
    train(model, data, epochs=epochs, lr=1e-2, seed=seed)
    return save_folder(model, folder)
