"""Top-k accuracy, the way ImageNet papers count it: an image is correct at k when its label is
among the k highest logits (ties broken by ``torch.topk``). With fewer than k classes every image is
correct at k (k is capped at the number of classes)."""

from __future__ import annotations

import torch

__all__ = ["topk_correct"]


def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[torch.Tensor]:
    """One bool tensor ``(B,)`` per ``k``: whether ``target`` is among the top-``k`` of ``logits``
    ``(B, C)``. ``target`` is class indices ``(B,)``."""
    if logits.ndim != 2:
        raise ValueError(f"expected logits (B, C), got shape {tuple(logits.shape)}")
    if target.ndim != 1 or target.shape[0] != logits.shape[0]:
        raise ValueError(f"expected class indices ({logits.shape[0]},), got shape {tuple(target.shape)}")
    c = logits.shape[1]
    kmax = min(max(ks), c)
    top = logits.topk(kmax, dim=1).indices  # (B, kmax), best first
    hit = top.eq(target.view(-1, 1))
    return [hit[:, : min(k, c)].any(dim=1) for k in ks]
