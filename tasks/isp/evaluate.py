"""ISP evaluation: PSNR and SSIM of the rendered sRGB against the reference photo.

The convention of the learned-ISP literature (PyNET, MicroISP, the MAI challenges, the unpaired
ISP paper's ``get_inference.py``): the output is clipped to [0, 1] and saved as 8-bit, then PSNR
is computed over all three RGB channels with peak 255, and SSIM (Wang et al. 2004, 11x11
Gaussian window, sigma 1.5, 'valid' filtering, as ``tf.image.ssim``) per channel, averaged over
the channels. Means are over images.

``mode="zurich"``: a Zurich RAW-to-RGB folder (``{split}/huawei_raw`` + ``{split}/canon``).
``mode="simulated"``: a folder of sRGB images, each turned into RAW by the unprocessing
simulator with a fixed seed per image (the same RAW on every run), the original image being the
reference: this scores how well a model inverts the simulator.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from zoo.progress import track

from ..sr.metrics import psnr, ssim, to_uint8_image
from .data import ZURICH_WHITE_LEVEL, SimulatedISPDataset, ZurichDataset

__all__ = ["evaluate_isp", "psnr_ssim_rgb"]


def psnr_ssim_rgb(output: np.ndarray | torch.Tensor, reference: np.ndarray | torch.Tensor) -> tuple[float, float]:
    """PSNR (all RGB channels, peak 255) and SSIM (mean over channels) of uint8-rounded images.

    Both images: uint8 ``(H, W, 3)`` or float in [0, 1] (``(3, H, W)`` tensors too), clamped and
    rounded to uint8 first.
    """
    a = to_uint8_image(output).astype(np.float64)
    b = to_uint8_image(reference).astype(np.float64)
    if a.shape != b.shape:
        raise ValueError(f"output {a.shape[:2]} and reference {b.shape[:2]} differ in size")
    p = psnr(a, b)
    s = float(np.mean([ssim(a[..., c], b[..., c]) for c in range(3)]))
    return p, s


def evaluate_isp(
    model: torch.nn.Module,
    data_root: str | os.PathLike,
    device: str | torch.device = "cpu",
    mode: str = "zurich",
    split: str = "test",
    noise: bool = True,
    seed: int = 0,
    max_size: int | None = None,
    max_images: int | None = None,
    black_level: float = 0.0,
    white_level: float = ZURICH_WHITE_LEVEL,
) -> dict:
    """PSNR and SSIM of an ISP model (packed RGGB RAW -> sRGB) on a folder.

    The model runs in eval mode (restored afterwards) on ``device``, one whole image at a time.

    Args:
        model: an ISP model, ``forward(raw)`` (B, 4, h, w) in [0, 1] -> sRGB (B, 3, 2h, 2w).
        data_root: ``zurich``: the dataset root (or one split folder) with huawei_raw/ and canon/;
            ``simulated``: a folder of sRGB images.
        device: torch device to run on.
        mode: ``zurich`` (real RAW/RGB pairs) or ``simulated`` (RAW made by the unprocessing simulator).
        split: Zurich split folder (``test`` or ``train``).
        noise: simulated mode: add the simulator's shot / read noise.
        seed: simulated mode: seed of the per-image camera metadata and noise.
        max_size: simulated mode: centre-crop images to at most this side (None: whole images).
        max_images: evaluate only the first N images.
        black_level: Zurich RAW black level.
        white_level: Zurich RAW white level (PyNET: 4 * 255).

    Returns:
        ``psnr``, ``ssim`` (means), ``num_images``, ``per_image`` (name, psnr, ssim), ``model``,
        ``mode``, ``data``, ``seconds``.
    """
    if mode == "zurich":
        dataset = ZurichDataset(data_root, split, None, black_level, white_level)
    elif mode == "simulated":
        if not os.path.isdir(data_root):
            raise FileNotFoundError(f"image folder {data_root} does not exist")
        dataset = SimulatedISPDataset(data_root, None, augment=False, noise=noise, seed=seed, max_size=max_size)
    else:
        raise ValueError(f"mode must be 'zurich' or 'simulated', got {mode!r}")
    n = len(dataset) if max_images is None else min(len(dataset), int(max_images))
    if n < 1:
        raise ValueError(f"no images to evaluate in {data_root}")
    device = torch.device(device)
    was_training = model.training
    model.eval().to(device)
    per_image = []
    start = time.perf_counter()
    try:
        with torch.no_grad():
            for i in track(range(n), f"eval isp ({mode}) on {os.fspath(data_root)}", total=n):
                item = dataset[i]
                out = model(item["raw"][None].to(device)).float().cpu()[0]
                if out.shape[-2:] != item["rgb"].shape[-2:]:
                    raise ValueError(f"{item['name']}: model output {tuple(out.shape[-2:])} does not match the reference {tuple(item['rgb'].shape[-2:])}")
                p, s = psnr_ssim_rgb(out, item["rgb"])
                per_image.append({"name": item["name"], "psnr": p, "ssim": s})
    finally:
        model.train(was_training)
    return {
        "model": getattr(model, "zoo_name", type(model).__name__),
        "mode": mode,
        "data": os.fspath(data_root),
        "num_images": len(per_image),
        "psnr": sum(r["psnr"] for r in per_image) / len(per_image),
        "ssim": sum(r["ssim"] for r in per_image) / len(per_image),
        "per_image": per_image,
        "seconds": round(time.perf_counter() - start, 3),
    }
