"""Triton kernel for ``dct_pool``: ``out[b, c] = sum_{h,w} x[b, c, h, w] * weight[c, h, w]``.

Imported lazily by :mod:`zoo.models.ops.dct_pool` (this module imports ``triton`` at the top).
One program per (batch, channel block); it walks H*W in ``BLOCK_HW`` chunks and accumulates
in fp32 whatever the input dtypes (fp16 / bf16 / fp32), then stores in the output dtype.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["dct_pool_forward"]


@triton.jit
def _dct_pool_kernel(
    x_ptr,
    w_ptr,
    out_ptr,
    C,
    HW,
    BLOCK_C: tl.constexpr,
    BLOCK_HW: tl.constexpr,
):
    pid_b = tl.program_id(0)
    pid_c = tl.program_id(1)

    chan = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    chan_ok = chan < C
    pos = tl.arange(0, BLOCK_HW)

    # x is (B, C, HW) contiguous, weight is (C, HW) contiguous; int64 offsets for big tensors
    x_rows = x_ptr + (pid_b.to(tl.int64) * C + chan.to(tl.int64))[:, None] * HW
    w_rows = w_ptr + chan.to(tl.int64)[:, None] * HW

    acc = tl.zeros((BLOCK_C, BLOCK_HW), dtype=tl.float32)
    for start in range(0, HW, BLOCK_HW):
        cols = start + pos
        mask = chan_ok[:, None] & (cols < HW)[None, :]
        xv = tl.load(x_rows + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        wv = tl.load(w_rows + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        acc += xv * wv

    total = tl.sum(acc, axis=1)
    tl.store(out_ptr + pid_b.to(tl.int64) * C + chan, total.to(out_ptr.dtype.element_ty), mask=chan_ok)


def _blocks(C: int, HW: int) -> tuple[int, int]:
    """Tile sizes: about 4K elements per step, HW tile up to 256, channel tile at least 1."""
    block_hw = min(256, triton.next_power_of_2(max(HW, 1)))
    block_c = max(1, min(triton.next_power_of_2(max(C, 1)), 4096 // block_hw, 64))
    return block_c, block_hw


def dct_pool_forward(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Launch the kernel: ``x`` (B, C, H, W), ``weight`` (C, H, W) -> (B, C), no autograd."""
    B, C, H, W = x.shape
    if tuple(weight.shape) != (C, H, W):
        raise ValueError(f"dct_pool: weight shape {tuple(weight.shape)} does not match x {tuple(x.shape)}")
    out_dtype = torch.result_type(x, weight)
    x = x.contiguous()
    weight = weight.contiguous()
    out = torch.empty((B, C), device=x.device, dtype=out_dtype)
    if out.numel() == 0:
        return out
    HW = H * W
    if HW == 0:
        return out.zero_()
    block_c, block_hw = _blocks(C, HW)
    grid = (B, triton.cdiv(C, block_c))
    _dct_pool_kernel[grid](x, weight, out, C, HW, BLOCK_C=block_c, BLOCK_HW=block_hw)
    return out
