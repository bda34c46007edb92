"""Benchmark evaluation of a super-resolution model: PSNR-Y / SSIM-Y on a paired folder."""

from __future__ import annotations

import os
import time

import torch

from zoo.progress import track

from .data import SRPairedDataset
from .metrics import psnr_ssim_y, to_uint8_image

__all__ = ["evaluate_sr", "upscale_tiled", "upscale"]


@torch.no_grad()
def upscale_tiled(
    model: torch.nn.Module, lr: torch.Tensor, tile: int, overlap: int = 16, to_uint8: bool = False
) -> torch.Tensor:
    """Run ``model`` on overlapping ``tile`` x ``tile`` LR tiles and blend the outputs.

    Memory is bounded by one tile (plus the full-size output). Each tile is padded by up to
    ``overlap`` LR pixels of real context on every side; only its central part is kept, so
    the result equals untiled inference wherever the model's receptive field fits in the
    overlap. (Models with a global-ish receptive field, e.g. RLFN's ESA pooling, differ slightly.)
    With ``to_uint8`` the output is assembled as uint8 on the CPU (values clamped to [0, 1] and
    rounded), a quarter of the float32 size: what a 4K input upscaled x4 needs.
    """
    if lr.ndim != 4:
        raise ValueError(f"expected (B, C, H, W), got shape {tuple(lr.shape)}")
    if tile < 1 or overlap < 0:
        raise ValueError(f"tile must be >= 1 and overlap >= 0, got tile={tile}, overlap={overlap}")
    scale = int(model.scale)
    b, _, h, w = lr.shape

    def starts(n: int) -> list[int]:
        # Full-size tiles only: the last one is shifted back to end at the border.
        return sorted(set(list(range(0, max(n - tile, 0), tile)) + [max(n - tile, 0)]))

    out: torch.Tensor | None = None
    for y0 in starts(h):
        for x0 in starts(w):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            # The tile with its context, clipped at the image border.
            cy0, cx0 = max(y0 - overlap, 0), max(x0 - overlap, 0)
            cy1, cx1 = min(y1 + overlap, h), min(x1 + overlap, w)
            sr = model(lr[:, :, cy0:cy1, cx0:cx1])
            if to_uint8:
                sr = sr.clamp(0, 1).mul(255).round().to("cpu", torch.uint8)
            if out is None:
                out = sr.new_empty(b, sr.shape[1], h * scale, w * scale)
            oy, ox = (y0 - cy0) * scale, (x0 - cx0) * scale
            out[:, :, y0 * scale : y1 * scale, x0 * scale : x1 * scale] = sr[
                :, :, oy : oy + (y1 - y0) * scale, ox : ox + (x1 - x0) * scale
            ]
    assert out is not None
    return out


@torch.no_grad()
def upscale(model: torch.nn.Module, lr: torch.Tensor, tile: int | None = None, overlap: int = 16) -> torch.Tensor:
    """``model(lr)``, tiled when ``tile`` is given."""
    if tile:
        return upscale_tiled(model, lr, tile, overlap)
    return model(lr)


def evaluate_sr(
    model: torch.nn.Module,
    data_root: str | os.PathLike,
    scale: int,
    device: str | torch.device = "cpu",
    tile: int | None = None,
    tile_overlap: int = 16,
) -> dict:
    """PSNR-Y and SSIM-Y of ``model`` on ``data_root/LR/x{scale}`` -> ``data_root/HR/x{scale}``.

    The field's convention (see :mod:`.metrics`): output clamped and rounded to uint8, Y of
    BT.601 (MATLAB), ``scale`` border pixels cropped, mean over images. The model is put in
    eval mode (its mode is restored afterwards) and moved to ``device``.

    Args:
        model: an SR model, ``forward(lr)`` RGB [0, 1] -> RGB [0, 1].
        data_root: benchmark folder with HR/x{scale} and LR/x{scale}.
        scale: upscale factor; must match the model's.
        device: torch device to run on.
        tile: LR tile size for tiled inference (bounded memory); none = whole images.
        tile_overlap: LR pixels of context around each tile.

    Returns:
        ``psnr_y``, ``ssim_y`` (means), ``num_images``, ``per_image`` (name, psnr_y, ssim_y),
        ``model``, ``scale``, ``data``, ``seconds``.
    """
    model_scale = getattr(model, "scale", None)
    if model_scale is not None and int(model_scale) != int(scale):
        raise ValueError(f"model upscales x{model_scale} but --scale is {scale}")
    dataset = SRPairedDataset(data_root, scale)
    device = torch.device(device)
    was_training = model.training
    model.eval().to(device)
    per_image = []
    start = time.perf_counter()
    try:
        with torch.no_grad():
            for i in track(range(len(dataset)), f"eval x{scale} on {os.fspath(data_root)}", total=len(dataset)):
                lr, hr, name = dataset.read_pair(i)
                x = torch.from_numpy(lr).permute(2, 0, 1)[None].float().div(255.0).to(device)
                sr = upscale(model, x, tile, tile_overlap)
                if sr.shape[-2:] != (hr.shape[0], hr.shape[1]):
                    raise ValueError(f"{name}: model output {tuple(sr.shape[-2:])} does not match HR {hr.shape[:2]}")
                p, s = psnr_ssim_y(to_uint8_image(sr[0].float().cpu()), hr, scale)
                per_image.append({"name": name, "psnr_y": p, "ssim_y": s})
    finally:
        model.train(was_training)
    n = len(per_image)
    return {
        "model": getattr(model, "zoo_name", type(model).__name__),
        "scale": int(scale),
        "data": os.fspath(data_root),
        "num_images": n,
        "psnr_y": sum(r["psnr_y"] for r in per_image) / n,
        "ssim_y": sum(r["ssim_y"] for r in per_image) / n,
        "per_image": per_image,
        "seconds": round(time.perf_counter() - start, 3),
    }
