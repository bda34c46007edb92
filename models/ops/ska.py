"""``ska(x, weight)``: LSNet's small-kernel aggregation, a depth-wise conv whose kernel changes
at every pixel and is shared by a group of channels.

For ``x`` of shape (N, C, H, W) and ``weight`` of shape (N, G, K*K, H, W) (odd ``K``, zero
padding ``(K - 1) // 2``)::

    out[n, c, h, w] = sum_{i, j < K} x[n, c, h + i - K // 2, w + j - K // 2] * weight[n, c % G, i * K + j, h, w]

so channel ``c`` uses the kernels of weight group ``c % G`` (with ``C = 8 G`` in LSNet, channels
``g, g + G, g + 2 G, ...`` share one kernel). Semantics follow the authors' ``SKA`` op
(THU-MIG/lsnet, ``model/ska.py``, "LSNet: See Large, Focus Small", CVPR 2025): the kernel
size is ``sqrt(weight.shape[2])``, the padding ``(K - 1) // 2``, the output has the shape of
``x`` and the dtype ``torch.result_type(x, weight)``.

Backends: ``reference`` (plain PyTorch: ``F.unfold`` of ``x`` weighted by the per-pixel kernels
and summed, differentiable in both arguments, any device / dtype, used under tracing and
export) and ``triton`` (CUDA tensors of fp16 / bf16 / fp32 / fp64 when triton imports: Triton
kernels for the forward and both gradients, fp32 accumulation, fp64 for fp64). ``triton`` is
imported only when a CUDA call first asks for it; ``ZOO_OPS_BACKEND=reference`` forces the
reference.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from .registry import register_impl, register_op

__all__ = ["ska", "ska_kernel_size", "ska_reference", "ska_triton", "ska_triton_available"]

_TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def ska_kernel_size(weight: torch.Tensor) -> int:
    """The (odd) kernel size ``K`` of a (N, G, K*K, H, W) weight; ``ValueError`` otherwise."""
    if weight.dim() != 5:
        raise ValueError(f"ska: weight must be 5-D (N, G, K*K, H, W), got shape {tuple(weight.shape)}")
    kk = int(weight.shape[2])
    k = math.isqrt(kk)
    if k * k != kk or k % 2 == 0:
        raise ValueError(f"ska: weight.shape[2] must be K*K for an odd K, got {kk}")
    return k


def _check(x: torch.Tensor, weight: torch.Tensor) -> int:
    if x.dim() != 4:
        raise ValueError(f"ska: x must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")
    k = ska_kernel_size(weight)
    n, _, h, w = x.shape
    if weight.shape[0] != n or tuple(weight.shape[3:]) != (h, w) or weight.shape[1] < 1:
        raise ValueError(
            f"ska: weight shape {tuple(weight.shape)} does not fit x {tuple(x.shape)} (expected (N, G, K*K, H, W))"
        )
    return k


def ska_reference(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``F.unfold`` the K x K neighbourhoods of ``x`` (zero padded), weight them with the
    per-pixel kernels of each channel's group and sum: (N, C, H, W), (N, G, K*K, H, W) -> (N, C, H, W)."""
    k = _check(x, weight)
    n, c, h, w = x.shape
    g = weight.shape[1]
    cols = F.unfold(x, kernel_size=k, padding=(k - 1) // 2)  # (N, C*K*K, H*W), channel-major
    if c % g == 0:
        # channel c = r * G + (c % G): broadcast the G kernels over the C / G repeats
        cols = cols.reshape(n, c // g, g, k * k, h, w)
        return (cols * weight.unsqueeze(1)).sum(dim=3).reshape(n, c, h, w)
    # C not a multiple of G: pick each channel's kernels explicitly
    per_channel = weight.index_select(1, torch.arange(c, device=weight.device) % g)
    return (cols.reshape(n, c, k * k, h, w) * per_channel).sum(dim=2)


@functools.cache
def _triton_module():
    """The kernel module, or None when triton is missing or fails to import."""
    try:
        from . import _triton_ska
    except Exception:  # ImportError, or a broken triton install
        return None
    return _triton_ska


def ska_triton_available(x: torch.Tensor | None = None, weight: torch.Tensor | None = None) -> bool:
    """Whether the triton path can run ``ska(x, weight)``: CUDA tensors on one device, fp16 /
    bf16 / fp32 / fp64, valid shapes, and an importable triton."""
    if x is None or weight is None:
        return torch.cuda.is_available() and _triton_module() is not None
    if not (isinstance(x, torch.Tensor) and isinstance(weight, torch.Tensor)):
        return False
    if not (x.is_cuda and weight.is_cuda and x.device == weight.device):
        return False
    if x.dtype not in _TRITON_DTYPES or weight.dtype not in _TRITON_DTYPES:
        return False
    try:
        _check(x, weight)
    except ValueError:
        return False
    return _triton_module() is not None


class _SkaTriton(torch.autograd.Function):
    """Triton forward and backward (both gradients)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        weight = weight.contiguous()
        ctx.save_for_backward(x, weight)
        return _triton_module().ska_forward(x, weight)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[:2]
        if not (need_x or need_w):
            return None, None
        grad_x, grad_w = _triton_module().ska_backward(grad, x, weight, need_x, need_w)
        return grad_x, grad_w


def ska_triton(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The triton backend (CUDA, or CPU under ``TRITON_INTERPRET=1``), differentiable in both
    arguments."""
    if _triton_module() is None:
        raise RuntimeError("ska_triton needs triton, which is not importable here")
    _check(x, weight)
    return _SkaTriton.apply(x, weight)


_OP = register_op("ska", reference=ska_reference, doc=__doc__)
register_impl("ska", "triton", ska_triton, available=ska_triton_available)


def ska(x: torch.Tensor, weight: torch.Tensor, *, backend: str | None = None) -> torch.Tensor:
    """LSNet's small-kernel aggregation (see the module docstring), dispatched: triton for CUDA
    tensors when available, else the PyTorch reference. ``backend=`` ("reference", "triton",
    "auto") overrides; ``ZOO_OPS_BACKEND=reference`` forces the reference."""
    return _OP(x, weight, backend=backend)
