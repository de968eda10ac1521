"""CROWN's backward pass over a recorded graph (used by :mod:`arnas_zoo.bounds`, which records it).

:class:`Tape` holds the ops a bounded forward pass went through (:class:`Node`: kind, inputs, IBP bounds, and
for affine ops the op itself); :func:`crown_lower` carries linear functions of the outputs backward to the
input: through affine nodes by their vector-Jacobian product (the op's own autograd), through ReLUs by the
linear relaxation (upper: the chord; lower: slope 1 where ``u > -l``, else 0), concretizing at max-pooling
("box") nodes from their IBP box. Zhang et al., NeurIPS 2018; CNN-Cert, Boopathy et al., AAAI 2019.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["Node", "Tape", "crown_lower"]


@dataclass
class Node:
    """One op of a recorded graph: its kind, its bounded inputs, the affine map and its IBP bounds."""

    kind: str  # "input" | "affine" | "relu" | "box"
    inputs: tuple[int, ...]
    lower: torch.Tensor
    upper: torch.Tensor
    fn: Callable[..., torch.Tensor] | None = None  # affine: the op as a function of its bounded inputs


@dataclass
class Tape:
    nodes: list[Node] = field(default_factory=list)

    def add(self, node: Node) -> int:
        self.nodes.append(node)
        return len(self.nodes) - 1


def _dot(a: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``sum over the node's elements of A * t``: (N, S, ...) x (N, ...) -> (N, S)."""
    return (a * t.unsqueeze(1)).flatten(2).sum(-1)


def crown_lower(tape: Tape, out_node: int, spec: torch.Tensor, x: torch.Tensor, eps: Any, norm: str) -> torch.Tensor:
    """Lower bounds of ``spec @ logits`` by backward linear bound propagation over the recorded graph."""
    n, s = spec.shape[:2]
    coeffs: dict[int, torch.Tensor] = {out_node: spec}
    bound = torch.zeros(n, s, dtype=spec.dtype, device=spec.device)
    for index in range(out_node, -1, -1):
        a = coeffs.pop(index, None)
        if a is None:
            continue
        node = tape.nodes[index]
        if node.kind == "input":
            bound = bound + _concretize_input(a, x, eps, norm, node)
        elif node.kind == "box":
            bound = bound + _dot(a.clamp(min=0), node.lower) + _dot(a.clamp(max=0), node.upper)
        elif node.kind == "relu":
            pre = tape.nodes[node.inputs[0]]
            a_in, offset = _relu_backward(a, pre.lower, pre.upper)
            bound = bound + offset
            _accumulate(coeffs, node.inputs[0], a_in)
        else:
            grads, offset = _affine_backward(a, node, tape)
            bound = bound + offset
            for src, g in zip(node.inputs, grads):
                _accumulate(coeffs, src, g)
    return bound


def _accumulate(coeffs: dict[int, torch.Tensor], index: int, a: torch.Tensor) -> None:
    coeffs[index] = a if index not in coeffs else coeffs[index] + a


def _relu_backward(a: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    active, dead = lo >= 0, hi <= 0
    unstable = ~(active | dead)
    width = (hi - lo).clamp(min=1e-12)
    up_slope = torch.where(active, torch.ones_like(lo), torch.where(unstable, hi / width, torch.zeros_like(lo)))
    up_offset = torch.where(unstable, -lo * hi / width, torch.zeros_like(lo))
    low_slope = torch.where(active | (unstable & (hi > -lo)), torch.ones_like(lo), torch.zeros_like(lo))
    a_pos, a_neg = a.clamp(min=0), a.clamp(max=0)
    a_in = a_pos * low_slope.unsqueeze(1) + a_neg * up_slope.unsqueeze(1)
    return a_in, _dot(a_neg, up_offset)


def _affine_backward(a: torch.Tensor, node: Node, tape: Tape) -> tuple[list[torch.Tensor], torch.Tensor]:
    """``A f(v) = sum_i (A L_i) v_i + A b`` for an affine node: the coefficients of its inputs and ``A b``."""
    assert node.fn is not None
    n, s = a.shape[:2]
    zeros = [
        torch.zeros((n * s, *tape.nodes[i].lower.shape[1:]), dtype=a.dtype, device=a.device, requires_grad=True)
        for i in node.inputs
    ]
    differentiable = torch.is_grad_enabled()  # as an objective, the bound is differentiated further
    with torch.enable_grad():
        out = node.fn(*zeros)  # = b for every row (the op is affine); its autograd is the linear part
        flat = a.reshape(n * s, *out.shape[1:])
        grads = torch.autograd.grad(out, zeros, grad_outputs=flat, create_graph=differentiable)
    offset = (flat * out).flatten(1).sum(-1).view(n, s)
    return [g.view(n, s, *g.shape[1:]) for g in grads], offset


def _concretize_input(a: torch.Tensor, x: torch.Tensor, eps: Any, norm: str, node: Node) -> torch.Tensor:
    if norm == "linf":  # the box within [0, 1], as recorded
        return _dot(a.clamp(min=0), node.lower) + _dot(a.clamp(max=0), node.upper)
    e = eps.view(-1, 1) if isinstance(eps, torch.Tensor) else eps
    return _dot(a, x) - e * a.flatten(2).norm(dim=-1)
