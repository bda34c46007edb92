"""Mask metrics for promptable segmentation: IoU of binary masks and its mean (mIoU).

``mask_iou(pred, target)`` is ``|pred & target| / |pred | target|`` over the last two (H, W)
dimensions, so a batch of masks gives one IoU per mask. Two empty masks agree perfectly: their
IoU is 1 (this only arises in the agreement measure, when a student and its teacher both
predict nothing; reference instance masks are never empty). mIoU is the plain mean over
instances (not over images), the way SAM and MobileSAM report it.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

__all__ = ["mask_iou", "mean_iou", "pairwise_mask_iou"]


def _as_bool_tensor(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a mask tensor or array, got {type(x).__name__}")
    if x.dtype != torch.bool:
        x = x > 0 if not x.is_floating_point() else x > 0.5
    return x


def mask_iou(pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> torch.Tensor:
    """IoU of binary masks ``(..., H, W)`` (bool, or 0/1 numbers) -> float64 ``(...)``.

    The two arguments broadcast against each other; masks of different (H, W) are an error.
    """
    p, t = _as_bool_tensor(pred), _as_bool_tensor(target)
    if p.ndim < 2 or t.ndim < 2:
        raise ValueError(f"masks must be (..., H, W), got shapes {tuple(p.shape)} and {tuple(t.shape)}")
    if p.shape[-2:] != t.shape[-2:]:
        raise ValueError(f"mask sizes differ: {tuple(p.shape[-2:])} vs {tuple(t.shape[-2:])}")
    t = t.to(p.device)
    inter = (p & t).flatten(-2).sum(-1, dtype=torch.int64).double()
    union = (p | t).flatten(-2).sum(-1, dtype=torch.int64).double()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def pairwise_mask_iou(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> torch.Tensor:
    """IoU of every mask in ``a`` (N, H, W) with every mask in ``b`` (M, H, W) -> (N, M)."""
    a, b = _as_bool_tensor(a), _as_bool_tensor(b)
    return mask_iou(a[:, None], b[None, :])


def mean_iou(ious: Iterable[float] | torch.Tensor | np.ndarray) -> float:
    """The mean of per-instance IoUs (NaN for none)."""
    values = torch.as_tensor(ious if isinstance(ious, (torch.Tensor, np.ndarray)) else list(ious), dtype=torch.float64)
    return float(values.mean()) if values.numel() else float("nan")
