"""``dct_pool(x, weight)``: per-channel weighted spatial sum, FcaNet's multi-spectral pooling.

``out[b, c] = sum_{h, w} x[b, c, h, w] * weight[c, h, w]``, i.e. ``(x * weight).sum((2, 3))``
for ``x`` (B, C, H, W) and a per-channel filter bank ``weight`` (C, H, W).

Backends: ``reference`` (plain PyTorch, exactly FcaNet's ``torch.sum(x * weight, dim=[2, 3])``)
and ``triton`` (used for CUDA tensors when triton imports; fp32 accumulation; its backward is
plain PyTorch). ``triton`` is imported only when a CUDA call first asks for it.
"""

from __future__ import annotations

import functools

import torch

from .registry import register_impl, register_op

__all__ = ["dct_pool", "dct_pool_reference", "dct_pool_triton", "triton_available"]

_TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def dct_pool_reference(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``(x * weight).sum(dim=(2, 3))``: x (B, C, H, W), weight (C, H, W) -> (B, C)."""
    return torch.sum(x * weight, dim=[2, 3])


@functools.lru_cache(maxsize=None)
def _triton_module():
    """The kernel module, or None when triton is missing or fails to import."""
    try:
        from . import _triton_dct_pool
    except Exception:  # ImportError, or a broken triton install
        return None
    return _triton_dct_pool


def triton_available(x: torch.Tensor | None = None, weight: torch.Tensor | None = None) -> bool:
    """Whether the triton path can run ``dct_pool(x, weight)``: CUDA tensors of fp16 / bf16 /
    fp32 on one device, shapes (B, C, H, W) and (C, H, W), and an importable triton."""
    if x is None or weight is None:
        return torch.cuda.is_available() and _triton_module() is not None
    if not (isinstance(x, torch.Tensor) and isinstance(weight, torch.Tensor)):
        return False
    if not (x.is_cuda and weight.is_cuda and x.device == weight.device):
        return False
    if x.dtype not in _TRITON_DTYPES or weight.dtype not in _TRITON_DTYPES:
        return False
    if x.dim() != 4 or weight.dim() != 3 or tuple(weight.shape) != tuple(x.shape[1:]):
        return False
    return _triton_module() is not None


class _DctPoolTriton(torch.autograd.Function):
    """Triton forward, PyTorch backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return _triton_module().dct_pool_forward(x, weight)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        g = grad[:, :, None, None]
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = (g * weight).to(x.dtype)
        if ctx.needs_input_grad[1]:
            grad_w = (g * x).sum(0).to(weight.dtype)
        return grad_x, grad_w


def dct_pool_triton(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The triton backend (CUDA only), differentiable in both arguments."""
    if _triton_module() is None:
        raise RuntimeError("dct_pool_triton needs triton, which is not importable here")
    return _DctPoolTriton.apply(x, weight)


_OP = register_op("dct_pool", reference=dct_pool_reference, doc=__doc__)
register_impl("dct_pool", "triton", dct_pool_triton, available=triton_available)


def dct_pool(x: torch.Tensor, weight: torch.Tensor, *, backend: str | None = None) -> torch.Tensor:
    """``(x * weight).sum(dim=(2, 3))`` -> (B, C), dispatched: triton for CUDA tensors when
    available, else the PyTorch reference. ``backend=`` ("reference", "triton", "auto")
    overrides; ``ZOO_OPS_BACKEND=reference`` forces the reference."""
    return _OP(x, weight, backend=backend)
