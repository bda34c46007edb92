"""Codec evaluation from the real byte stream: bits per pixel of the ``.zic`` bytes, PSNR and
MS-SSIM of the decoded image, and JPEG / WebP (Pillow) at the rate the codec reached on each
image; optionally a rate-distortion plot (PNG) with the JPEG and WebP curves."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..base import TaskConfigError
from ..sr.data import list_images, load_rgb

__all__ = ["evaluate_image_codec", "psnr", "ms_ssim", "pillow_codec", "pillow_at_rate"]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two images in [0, 1], on their uint8 values (as the field reports it)."""
    qa = (a.clamp(0, 1) * 255).round()
    qb = (b.clamp(0, 1) * 255).round()
    mse = float(((qa - qb) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def ms_ssim(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """MS-SSIM (5 scales, Wang et al.'s weights; torchmetrics) on uint8-rounded values; None for
    images too small for 5 scales of an 11-tap window (a side under 176 px)."""
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure as msssim

    if min(a.shape[-2:]) // 16 <= 10:
        return None
    qa = (a.clamp(0, 1) * 255).round() / 255
    qb = (b.clamp(0, 1) * 255).round() / 255
    return float(msssim(qa.double(), qb.double(), data_range=1.0))


def _to_pil(x: torch.Tensor) -> Image.Image:
    return Image.fromarray((x[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())


def pillow_codec(x: torch.Tensor, fmt: str, quality: int) -> tuple[int, torch.Tensor]:
    """Bytes and decoded image of ``x`` through Pillow's JPEG (4:2:0) or WebP at ``quality``."""
    buf = io.BytesIO()
    _to_pil(x).save(buf, format=fmt, quality=int(quality))
    data = buf.getvalue()
    y = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    return len(data), torch.from_numpy(y.copy()).permute(2, 0, 1)[None].float() / 255


def pillow_at_rate(x: torch.Tensor, fmt: str, target_bpp: float) -> dict:
    """The Pillow quality whose rate is closest to ``target_bpp`` (bisection over 1..95)."""
    pixels = x.shape[-2] * x.shape[-1]
    lo, hi, best = 1, 95, None
    while lo <= hi:
        q = (lo + hi) // 2
        n, y = pillow_codec(x, fmt, q)
        bpp = 8 * n / pixels
        if best is None or abs(bpp - target_bpp) < abs(best["bpp"] - target_bpp):
            best = {"quality": q, "bpp": bpp, "psnr": psnr(x, y), "ms_ssim": ms_ssim(x, y)}
        if bpp < target_bpp:
            lo = q + 1
        else:
            hi = q - 1
    assert best is not None
    return best


def _mean(values: list) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _rd_plot(path: str | os.PathLike, codec_points: list[tuple[float, float]], name: str, images: list[torch.Tensor]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
    for fmt in ("JPEG", "WEBP"):
        pts = []
        for q in (5, 10, 20, 30, 40, 50, 60, 70, 80, 90):
            rates, quals = [], []
            for x in images:
                n, y = pillow_codec(x, fmt, q)
                rates.append(8 * n / (x.shape[-2] * x.shape[-1]))
                quals.append(psnr(x, y))
            pts.append((float(np.mean(rates)), float(np.mean(quals))))
        ax.plot(*zip(*pts), marker=".", label=fmt.lower())
    ax.plot(*zip(*codec_points), marker="o", linestyle="none", label=name)
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel("PSNR (dB)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


@torch.no_grad()
def evaluate_image_codec(
    model: torch.nn.Module,
    data_root: str | os.PathLike,
    device: str = "cpu",
    baselines: bool = True,
    rd_plot: str | None = None,
    max_images: int | None = None,
) -> dict:
    """Compress and decompress every image under ``data_root`` and measure what came out.

    ``bpp`` is ``8 * len(bytes) / pixels`` of the real ``.zic`` stream; ``psnr`` / ``ms_ssim`` of
    the decoded image against the original. With ``baselines``, JPEG and WebP (Pillow) are
    tuned per image to the codec's rate and scored the same way.
    """
    if not hasattr(model, "compress_bytes"):
        raise TaskConfigError("this model is not an image codec (it has no compress_bytes); see `zoo list --task image_codec`")
    root = Path(data_root)
    if not root.is_dir():
        raise FileNotFoundError(f"no such folder: {root}")
    files = list_images(root)[:max_images]
    if not files:
        raise TaskConfigError(f"no images found under {root}")
    model = model.eval().to(device)
    rows, images = [], []
    enc_s = dec_s = 0.0
    for f in files:
        arr = np.asarray(load_rgb(f))
        x = torch.from_numpy(arr.copy()).permute(2, 0, 1)[None].float().div(255)
        t0 = time.perf_counter()
        data = model.compress_bytes(x.to(device))
        t1 = time.perf_counter()
        y = model.decompress_bytes(data).cpu()
        t2 = time.perf_counter()
        enc_s += t1 - t0
        dec_s += t2 - t1
        bpp = 8 * len(data) / (x.shape[-2] * x.shape[-1])
        row = {"image": f.name, "bytes": len(data), "bpp": bpp, "psnr": psnr(x, y), "ms_ssim": ms_ssim(x, y)}
        if baselines:
            for fmt in ("jpeg", "webp"):
                for k, v in pillow_at_rate(x, fmt.upper(), bpp).items():
                    row[f"{fmt}_{k}"] = v
        rows.append(row)
        images.append(x)
    result = {
        "images": len(rows),
        "bpp": _mean([r["bpp"] for r in rows]),
        "psnr": _mean([r["psnr"] for r in rows]),
        "ms_ssim": _mean([r["ms_ssim"] for r in rows]),
        "encode_ms": 1000 * enc_s / len(rows),
        "decode_ms": 1000 * dec_s / len(rows),
    }
    if baselines:
        for fmt in ("jpeg", "webp"):
            for k in ("bpp", "psnr", "ms_ssim"):
                result[f"{fmt}_{k}"] = _mean([r[f"{fmt}_{k}"] for r in rows])
    if rd_plot:
        _rd_plot(rd_plot, [(result["bpp"], result["psnr"])], getattr(model, "zoo_name", "codec"), images)
        result["rd_plot"] = str(rd_plot)
    result["per_image"] = rows
    return result
