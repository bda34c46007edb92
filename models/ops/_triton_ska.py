"""Triton kernels for ``ska`` (LSNet's small-kernel aggregation) and its two gradients.

Imported lazily by :mod:`zoo.models.ops.ska` (this module imports ``triton`` at the top).

``out[n, c, p] = sum_k x[n, c, p + d_k] * w[n, c % G, k, p]`` over the K*K offsets ``d_k`` of a
zero-padded window. All three kernels share one tiling: a program owns one (sample ``n``,
weight group ``g``) pair and a block of ``BLOCK_HW`` pixels, and handles every channel of that
group (``g, g + G, g + 2 G, ...``) as the rows of a (``BLOCK_R``, ``BLOCK_HW``) tile, so each
per-pixel kernel value is read once for all the channels that share it:

- forward: for each offset, one row of ``w`` and a shifted tile of ``x``; accumulate.
- grad x: ``gx[n, c, q] = sum_k go[n, c, q - d_k] * w[n, g, k, q - d_k]`` (the adjoint: shifted
  ``go`` tile times the shifted ``w`` row).
- grad w: ``gw[n, g, k, p] = sum_{c in g} go[n, c, p] * x[n, c, p + d_k]``: the ``go`` tile is
  loaded once, each offset's shifted ``x`` tile is multiplied in and reduced over the rows.

Accumulation is fp32 for fp16 / bf16 / fp32 inputs and fp64 for fp64; results are stored in
the output tensor's dtype. Offsets are int64. Written for this project; the authors' kernels
(THU-MIG/lsnet ``model/ska.py``) use one program element per output value instead.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

__all__ = ["ska_backward", "ska_forward"]


@triton.jit
def _ska_fwd_kernel(
    x_ptr,
    w_ptr,
    out_ptr,
    C,
    G,
    H,
    W,
    R,
    KS: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_HW: tl.constexpr,
    ACC: tl.constexpr,
):
    pid_ng = tl.program_id(0)  # n * G + g
    pid_hw = tl.program_id(1)
    n = pid_ng // G
    g = pid_ng % G
    HW = H * W
    PAD: tl.constexpr = (KS - 1) // 2

    p = pid_hw * BLOCK_HW + tl.arange(0, BLOCK_HW)
    p_ok = p < HW
    ph = p // W
    pw = p % W
    w_row = w_ptr + pid_ng.to(tl.int64) * (KS * KS) * HW  # w[n, g, 0, 0, 0]

    for r0 in range(0, R, BLOCK_R):
        rows = r0 + tl.arange(0, BLOCK_R)
        chan = g + rows * G
        chan_ok = (rows < R) & (chan < C)
        plane = (n.to(tl.int64) * C + chan.to(tl.int64)) * HW  # start of x[n, chan]
        acc = tl.zeros((BLOCK_R, BLOCK_HW), dtype=ACC)
        for kh in tl.static_range(KS):
            for kw in tl.static_range(KS):
                sh = ph + (kh - PAD)
                sw = pw + (kw - PAD)
                ok = p_ok & (sh >= 0) & (sh < H) & (sw >= 0) & (sw < W)
                src = tl.where(ok, sh * W + sw, 0)
                wv = tl.load(w_row + (kh * KS + kw) * HW + p, mask=p_ok, other=0.0).to(ACC)
                xv = tl.load(
                    x_ptr + plane[:, None] + src[None, :], mask=chan_ok[:, None] & ok[None, :], other=0.0
                ).to(ACC)
                acc += xv * wv[None, :]
        tl.store(
            out_ptr + plane[:, None] + p[None, :],
            acc.to(out_ptr.dtype.element_ty),
            mask=chan_ok[:, None] & p_ok[None, :],
        )


@triton.jit
def _ska_grad_x_kernel(
    go_ptr,
    w_ptr,
    gx_ptr,
    C,
    G,
    H,
    W,
    R,
    KS: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_HW: tl.constexpr,
    ACC: tl.constexpr,
):
    pid_ng = tl.program_id(0)
    pid_hw = tl.program_id(1)
    n = pid_ng // G
    g = pid_ng % G
    HW = H * W
    PAD: tl.constexpr = (KS - 1) // 2

    q = pid_hw * BLOCK_HW + tl.arange(0, BLOCK_HW)  # the input pixels this program owns
    q_ok = q < HW
    qh = q // W
    qw = q % W
    w_row = w_ptr + pid_ng.to(tl.int64) * (KS * KS) * HW

    for r0 in range(0, R, BLOCK_R):
        rows = r0 + tl.arange(0, BLOCK_R)
        chan = g + rows * G
        chan_ok = (rows < R) & (chan < C)
        plane = (n.to(tl.int64) * C + chan.to(tl.int64)) * HW
        acc = tl.zeros((BLOCK_R, BLOCK_HW), dtype=ACC)
        for kh in tl.static_range(KS):
            for kw in tl.static_range(KS):
                # output pixel o that read q through offset (kh, kw): o + d = q
                oh = qh - (kh - PAD)
                ow = qw - (kw - PAD)
                ok = q_ok & (oh >= 0) & (oh < H) & (ow >= 0) & (ow < W)
                o = tl.where(ok, oh * W + ow, 0)
                wv = tl.load(w_row + (kh * KS + kw) * HW + o, mask=ok, other=0.0).to(ACC)
                gv = tl.load(
                    go_ptr + plane[:, None] + o[None, :], mask=chan_ok[:, None] & ok[None, :], other=0.0
                ).to(ACC)
                acc += gv * wv[None, :]
        tl.store(
            gx_ptr + plane[:, None] + q[None, :],
            acc.to(gx_ptr.dtype.element_ty),
            mask=chan_ok[:, None] & q_ok[None, :],
        )


@triton.jit
def _ska_grad_w_kernel(
    go_ptr,
    x_ptr,
    gw_ptr,
    C,
    G,
    H,
    W,
    R,
    KS: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_HW: tl.constexpr,
    ACC: tl.constexpr,
):
    pid_ng = tl.program_id(0)
    pid_hw = tl.program_id(1)
    n = pid_ng // G
    g = pid_ng % G
    HW = H * W
    PAD: tl.constexpr = (KS - 1) // 2

    p = pid_hw * BLOCK_HW + tl.arange(0, BLOCK_HW)
    p_ok = p < HW
    ph = p // W
    pw = p % W
    gw_row = gw_ptr + pid_ng.to(tl.int64) * (KS * KS) * HW

    for kh in tl.static_range(KS):
        for kw in tl.static_range(KS):
            sh = ph + (kh - PAD)
            sw = pw + (kw - PAD)
            ok = p_ok & (sh >= 0) & (sh < H) & (sw >= 0) & (sw < W)
            src = tl.where(ok, sh * W + sw, 0)
            total = tl.zeros((BLOCK_HW,), dtype=ACC)
            for r0 in range(0, R, BLOCK_R):
                rows = r0 + tl.arange(0, BLOCK_R)
                chan = g + rows * G
                chan_ok = (rows < R) & (chan < C)
                plane = (n.to(tl.int64) * C + chan.to(tl.int64)) * HW
                gv = tl.load(
                    go_ptr + plane[:, None] + p[None, :], mask=chan_ok[:, None] & p_ok[None, :], other=0.0
                ).to(ACC)
                xv = tl.load(
                    x_ptr + plane[:, None] + src[None, :], mask=chan_ok[:, None] & ok[None, :], other=0.0
                ).to(ACC)
                total += tl.sum(gv * xv, axis=0)
            tl.store(gw_row + (kh * KS + kw) * HW + p, total.to(gw_ptr.dtype.element_ty), mask=p_ok)


def _kernel_size(weight: torch.Tensor) -> int:
    kk = int(weight.shape[2])
    k = math.isqrt(kk)
    if k * k != kk or k % 2 == 0:
        raise ValueError(f"ska: weight.shape[2] must be K*K for an odd K, got {kk}")
    return k


def _launch_cfg(x: torch.Tensor, weight: torch.Tensor) -> tuple[tuple[int, int], dict]:
    """Grid and meta-parameters shared by the three kernels."""
    n, c, h, w = x.shape
    g = weight.shape[1]
    hw = h * w
    rows = max(1, -(-c // g))  # channels per weight group (the last groups may have one fewer)
    block_r = min(triton.next_power_of_2(rows), 16)
    block_hw = max(16, min(triton.next_power_of_2(hw), 2048 // block_r, 512))
    fp64 = torch.float64 in (x.dtype, weight.dtype)
    meta = dict(KS=_kernel_size(weight), BLOCK_R=block_r, BLOCK_HW=block_hw, ACC=tl.float64 if fp64 else tl.float32)
    grid = (n * g, triton.cdiv(hw, block_hw))
    return grid, dict(C=c, G=g, H=h, W=w, R=rows, **meta)


def _check(x: torch.Tensor, weight: torch.Tensor) -> None:
    if x.dim() != 4 or weight.dim() != 5:
        raise ValueError(f"ska: expected x (N, C, H, W) and weight (N, G, K*K, H, W), got {tuple(x.shape)} and {tuple(weight.shape)}")
    if weight.shape[0] != x.shape[0] or tuple(weight.shape[3:]) != tuple(x.shape[2:]) or weight.shape[1] < 1:
        raise ValueError(f"ska: weight shape {tuple(weight.shape)} does not fit x {tuple(x.shape)}")


def ska_forward(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``ska(x, weight)`` -> (N, C, H, W) in ``torch.result_type(x, weight)``; no autograd."""
    _check(x, weight)
    x = x.contiguous()
    weight = weight.contiguous()
    out = torch.empty(x.shape, device=x.device, dtype=torch.result_type(x, weight))
    if out.numel() == 0:
        return out
    grid, args = _launch_cfg(x, weight)
    _ska_fwd_kernel[grid](x, weight, out, **args)
    return out


def ska_backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    need_x: bool = True,
    need_w: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Gradients of ``sum(grad * ska(x, weight))`` w.r.t. ``x`` (dtype of ``x``) and ``weight``
    (dtype of ``weight``); ``None`` for the ones not asked for."""
    _check(x, weight)
    x = x.contiguous()
    weight = weight.contiguous()
    grad = grad.contiguous()
    grad_x = torch.empty_like(x) if need_x else None
    grad_w = torch.empty_like(weight) if need_w else None
    if x.numel() == 0:
        if grad_w is not None:
            grad_w.zero_()
        return grad_x, grad_w
    grid, args = _launch_cfg(x, weight)
    if grad_x is not None:
        _ska_grad_x_kernel[grid](grad, weight, grad_x, **args)
    if grad_w is not None:
        _ska_grad_w_kernel[grid](grad, x, grad_w, **args)
    return grad_x, grad_w
