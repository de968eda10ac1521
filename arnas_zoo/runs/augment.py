"""Batched data augmentation on the device: random crop with zero padding, horizontal flip, cutout.

One implementation for training and every search. Every sample draws its own offsets, flip and
cutout centre from ``generator`` (in that order, so a run's draws do not depend on the device), with
no per-sample Python loop and no host transfer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _draw(kind: str, n: int, generator: torch.Generator, device: torch.device, high: int = 0) -> torch.Tensor:
    gen_device = generator.device
    if kind == "int":
        out = torch.randint(0, high, (n,), generator=generator, device=gen_device)
    else:
        out = torch.rand(n, generator=generator, device=gen_device)
    return out.to(device)


def augment(
    x: torch.Tensor, generator: torch.Generator, *, crop_padding: int = 4, flip: bool = True, cutout: int = 0
) -> torch.Tensor:
    """Random crop (``crop_padding`` zero pixels each side), horizontal flip and cutout of side ``cutout``.

    The cutout square may extend past the border, as in DeVries & Taylor's reference.
    """
    n, _, h, w = x.shape
    device = x.device
    if crop_padding > 0:
        p = crop_padding
        padded = F.pad(x, (p, p, p, p))
        dy = _draw("int", n, generator, device, 2 * p + 1)
        dx = _draw("int", n, generator, device, 2 * p + 1)
        rows = (dy[:, None] + torch.arange(h, device=device))[:, None, :, None]  # n,1,h,1
        cols = (dx[:, None] + torch.arange(w, device=device))[:, None, None, :]  # n,1,1,w
        batch = torch.arange(n, device=device)[:, None, None, None]
        chans = torch.arange(x.shape[1], device=device)[None, :, None, None]
        x = padded[batch, chans, rows, cols]
    if flip:
        flips = _draw("float", n, generator, device) < 0.5
        x = torch.where(flips[:, None, None, None], x.flip(3), x)
    if cutout > 0:
        cy = _draw("int", n, generator, device, h)
        cx = _draw("int", n, generator, device, w)
        half = cutout // 2
        ys = torch.arange(h, device=device)[None, :]
        xs = torch.arange(w, device=device)[None, :]
        in_rows = (ys >= (cy[:, None] - half)) & (ys < (cy[:, None] - half + cutout))
        in_cols = (xs >= (cx[:, None] - half)) & (xs < (cx[:, None] - half + cutout))
        hole = in_rows[:, :, None] & in_cols[:, None, :]
        x = x * (~hole)[:, None, :, :].to(x.dtype)
    return x
