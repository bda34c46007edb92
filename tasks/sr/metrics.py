"""PSNR and SSIM on the Y channel, computed the way super-resolution papers compute them.

The convention (EDSR / RCAN ``Evaluate_PSNR_SSIM.m``, BasicSR ``calculate_psnr`` /
``calculate_ssim`` with ``test_y_channel=True``):

1. the SR output is clamped to [0, 1] and rounded to uint8 (it is saved as a PNG in the
   authors' pipelines);
2. both images go to the Y channel of ITU-R BT.601 in MATLAB's ``rgb2ycbcr`` convention,
   Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 on 0-255 values (so Y is in [16, 235]),
   kept in floating point (MATLAB's ``rgb2ycbcr(im2double(im))``, not re-rounded);
3. a border of ``scale`` pixels is cropped on every side;
4. PSNR = 10 log10(255^2 / MSE); SSIM is Wang et al. (2004) with an 11x11 Gaussian window,
   sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255, 'valid' filtering, mean of the SSIM map, in
   float64.

Every function takes uint8 H x W x 3 numpy arrays, or tensors / float arrays in [0, 1]
(``(3, H, W)``, ``(1, 3, H, W)`` or ``(H, W, 3)``), which are clamped and rounded to uint8 first.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from scipy.signal import fftconvolve

__all__ = ["to_uint8_image", "rgb_to_y", "crop_border", "psnr", "ssim", "psnr_y", "ssim_y", "psnr_ssim_y"]

# MATLAB rgb2ycbcr, Y row, for values in [0, 1] (output on the 0-255 scale).
_Y_WEIGHTS = np.array([65.481, 128.553, 24.966], dtype=np.float64)


def to_uint8_image(img: np.ndarray | torch.Tensor) -> np.ndarray:
    """Any RGB image to uint8 ``(H, W, 3)``.

    uint8 input is returned as it is (channels moved last if needed); float input is taken to be
    in [0, 1] and clamped, scaled by 255 and rounded (KAIR / BasicSR ``tensor2img``).
    """
    if isinstance(img, torch.Tensor):
        t = img.detach().cpu()
        if t.ndim == 4:
            if t.shape[0] != 1:
                raise ValueError(f"expected one image, got a batch of shape {tuple(t.shape)}")
            t = t[0]
        if t.ndim == 3 and t.shape[0] in (1, 3) and t.shape[-1] not in (1, 3):
            t = t.permute(1, 2, 0)
        elif t.ndim == 3 and t.shape[0] == 3 and t.shape[-1] == 3:
            raise ValueError(f"ambiguous 3x?x3 tensor layout {tuple(t.shape)}; pass (3, H, W) with H, W > 3")
        img = t.float().numpy() if t.is_floating_point() else t.numpy()
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim == 3 and arr.shape[2] == 1:  # grey: the same value in R, G and B
        arr = np.repeat(arr, 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3) or (3, H, W), got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        return np.round(np.clip(arr.astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)
    raise ValueError(f"expected uint8 or float in [0, 1], got dtype {arr.dtype}")


def rgb_to_y(img: np.ndarray | torch.Tensor) -> np.ndarray:
    """BT.601 luma in MATLAB ``rgb2ycbcr`` convention, float64 on the 0-255 scale ([16, 235])."""
    rgb = to_uint8_image(img).astype(np.float64) / 255.0
    return 16.0 + rgb @ _Y_WEIGHTS


def crop_border(img: np.ndarray, border: int) -> np.ndarray:
    if border < 0:
        raise ValueError(f"border must be >= 0, got {border}")
    if border == 0:
        return img
    if img.shape[0] <= 2 * border or img.shape[1] <= 2 * border:
        raise ValueError(f"image of size {img.shape[:2]} is too small to crop a border of {border}")
    return img[border:-border, border:-border, ...]


def _check_same(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"images differ in size: {a.shape} vs {b.shape} (mod-crop the HR image to LR x scale)")


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """PSNR of two same-sized float arrays; ``inf`` when they are equal."""
    _check_same(a, b)
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    if mse == 0:
        return math.inf
    return float(10.0 * np.log10(data_range**2 / mse))


@lru_cache(maxsize=4)
def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    # The same normalised samples as cv2.getGaussianKernel(size, sigma) and scipy's gaussian_filter.
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    g /= g.sum()
    return np.outer(g, g)


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0, win_size: int = 11, sigma: float = 1.5) -> float:
    """SSIM (Wang et al. 2004) of two single-channel arrays, float64, 'valid' Gaussian filtering.

    Identical to the ``_ssim`` of BasicSR / the EDSR evaluation scripts (``cv2.filter2D`` then
    cropping 5 pixels), and to ``skimage.metrics.structural_similarity(gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=255)``.
    """
    _check_same(a, b)
    if a.ndim != 2:
        raise ValueError(f"ssim expects single-channel (H, W) arrays, got shape {a.shape}")
    if min(a.shape) < win_size:
        raise ValueError(f"ssim needs images of at least {win_size}x{win_size}, got {a.shape}")
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    w = _gaussian_window(win_size, sigma)

    def filt(x: np.ndarray) -> np.ndarray:
        return fftconvolve(x, w, mode="valid")  # the window is symmetric: convolution == correlation

    mu1, mu2 = filt(a), filt(b)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    s1 = filt(a * a) - mu1_sq
    s2 = filt(b * b) - mu2_sq
    s12 = filt(a * b) - mu12
    ssim_map = ((2 * mu12 + c1) * (2 * s12 + c2)) / ((mu1_sq + mu2_sq + c1) * (s1 + s2 + c2))
    return float(ssim_map.mean())


def _y_pair(sr, hr, border: int) -> tuple[np.ndarray, np.ndarray]:
    y_sr, y_hr = rgb_to_y(sr), rgb_to_y(hr)
    _check_same(y_sr, y_hr)
    return crop_border(y_sr, border), crop_border(y_hr, border)


def psnr_y(sr: np.ndarray | torch.Tensor, hr: np.ndarray | torch.Tensor, crop: int) -> float:
    """PSNR on Y (MATLAB BT.601) with ``crop`` border pixels removed (use ``crop=scale``)."""
    return psnr(*_y_pair(sr, hr, crop))


def ssim_y(sr: np.ndarray | torch.Tensor, hr: np.ndarray | torch.Tensor, crop: int) -> float:
    """SSIM on Y (MATLAB BT.601) with ``crop`` border pixels removed (use ``crop=scale``)."""
    return ssim(*_y_pair(sr, hr, crop))


def psnr_ssim_y(sr: np.ndarray | torch.Tensor, hr: np.ndarray | torch.Tensor, crop: int) -> tuple[float, float]:
    """Both metrics from one Y conversion."""
    y_sr, y_hr = _y_pair(sr, hr, crop)
    return psnr(y_sr, y_hr), ssim(y_sr, y_hr)
