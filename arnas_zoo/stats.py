"""Model statistics: parameters, conv+linear MACs, and FLOPs under the ARNAS paper's convention.

The ARNAS paper's Table 1 counts FLOPs with module hooks (``PROTOCOLS.md``): a convolution is its
multiply-adds plus bias, BatchNorm its output elements (twice when affine), ReLU its elements,
max/avg pooling its input elements, Linear ``in*out`` plus bias; global average pooling, additions
and concatenations are free, and the auxiliary head (training only) is not run. Parameters are
reported with and without the auxiliary head.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from arnas_zoo.ops import modules_per_op


@dataclass(frozen=True)
class ModelStats:
    params: int
    params_with_aux: int
    macs: int
    flops_paper: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def count_parameters(model: nn.Module, include_aux: bool = False) -> int:
    total = 0
    for name, p in model.named_parameters():
        if not include_aux and name.startswith("auxiliary_head."):
            continue
        total += p.numel()
    return total


def _conv_macs(module: nn.Conv2d, out: torch.Tensor) -> int:
    per_output = (module.in_channels // module.groups) * module.kernel_size[0] * module.kernel_size[1]
    return out[0].numel() * per_output


def count_ops(model: nn.Module, input_shape: tuple[int, int, int]) -> tuple[int, int]:
    """``(macs, flops_paper)`` of one forward pass on one image of ``input_shape`` (C, H, W)."""
    macs = 0
    flops = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal macs, flops
        if isinstance(module, nn.Conv2d):
            m = _conv_macs(module, out)
            macs += m
            flops += m + (out[0].numel() if module.bias is not None else 0)
        elif isinstance(module, nn.Linear):
            m = module.in_features * module.out_features
            macs += m
            flops += m + (module.out_features if module.bias is not None else 0)
        elif isinstance(module, nn.BatchNorm2d):
            flops += out[0].numel() * (2 if module.affine else 1)
        elif isinstance(module, nn.ReLU):
            flops += out[0].numel()
        elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
            flops += inputs[0][0].numel()

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    was_training = model.training
    model.eval()  # the auxiliary head only runs in training mode
    try:
        param = next(model.parameters())
        x = torch.rand(1, *input_shape, device=param.device, dtype=param.dtype)
        # every module runs and is seen by its hook, as in the authors' networks: each op's ReLU (cells otherwise
        # share one per state) and both convolutions of a separable block (bf16 may otherwise compose them)
        with torch.no_grad(), modules_per_op():
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return macs, flops


def model_stats(model: nn.Module, input_shape: tuple[int, int, int]) -> ModelStats:
    macs, flops = count_ops(model, input_shape)
    return ModelStats(
        params=count_parameters(model, include_aux=False),
        params_with_aux=count_parameters(model, include_aux=True),
        macs=macs,
        flops_paper=flops,
    )
