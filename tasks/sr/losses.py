"""Extra super-resolution training losses: EFDN's edge-enhanced gradient-variance (EG) loss.

EFDN (Yan Wang, "Edge-enhanced Feature Distillation Network for Efficient Super-Resolution",
CVPR 2022 workshops, arXiv 2204.08759) trains with L1 plus an *edge-enhanced gradient-variance*
loss: the gradient-variance (GV) loss of Abrahamyan et al. ("Gradient Variance Loss for
Structure-Enhanced Image Super-Resolution", ICASSP 2022, arXiv 2202.00997), whose Sobel-x and
Sobel-y terms EFDN extends with a Laplacian term -- the three fixed filters of its EDBB edge
branches (the loss "calibrates" those re-parameterised paths).

What was followed, and what could not be checked:

- the GV part follows the GV authors' code, lusinlu/gradient-variance-loss
  ``gradient_variance_loss.py`` (no licence file in that repository; the code here is our own):
  RGB -> grey with weights (0.2989, 0.5870, 0.1140); 3x3 Sobel filters, zero padding 1; the
  gradient maps cut into non-overlapping ``patch_size`` x ``patch_size`` patches (``nn.Unfold``,
  stride = patch: a remainder at the right / bottom border is dropped); the *unbiased* variance
  of each patch (divisor n^2 - 1); per direction the mean squared difference between the
  variance maps of output and target (over batch and patches); the directions summed.
  Their ``train.py`` defaults: ``patch_size`` 8, weight 0.01 next to an MSE loss.
- EFDN's authors did not release training code (icandle/EFDN holds the deploy model, test and
  validation scripts only; its README says PAN's framework trained EFDN), and the paper's loss
  section could not be read here. The Laplacian is taken as EFDN's EDBB mask
  ((0, 1, 0), (1, -4, 1), (0, 1, 0)) (:data:`zoo.models.efdn.EDGE_MASKS`; a filter's sign does not
  change a variance), and L_EG = lambda_x L_x + lambda_y L_y + lambda_l L_l with per-term weights
  left as arguments (default 1, the GV code's unit sum). The weights and patch size EFDN used are
  unverified.

For every filter f in (Sobel-x, Sobel-y, Laplacian), with G = grey image:

    v_f(I)[b, p] = var_unbiased(patch p of conv2d(G(I), k_f, padding=1))
    L_f          = mean_{b, p} (v_f(SR) - v_f(HR))^2
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["EG_KERNELS", "GREY_WEIGHTS", "eg_loss", "eg_loss_terms", "gradient_variance_maps"]

# RGB -> grey, as the GV authors' code (close to, not exactly, BT.601's 0.299 / 0.587 / 0.114).
GREY_WEIGHTS = (0.2989, 0.5870, 0.1140)

# Sobel-x, Sobel-y (the GV code's kernels) and the Laplacian of EFDN's EDBB, in that order.
EG_KERNELS: tuple[tuple[tuple[float, ...], ...], ...] = (
    ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0)),
    ((1.0, 2.0, 1.0), (0.0, 0.0, 0.0), (-1.0, -2.0, -1.0)),
    ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0)),
)


def _grey(img: torch.Tensor) -> torch.Tensor:
    if img.ndim != 4 or img.shape[1] not in (1, 3):
        raise ValueError(f"expected (B, 3, H, W) RGB or (B, 1, H, W) grey images, got {tuple(img.shape)}")
    if img.shape[1] == 1:
        return img
    w = img.new_tensor(GREY_WEIGHTS).view(1, 3, 1, 1)
    return (img * w).sum(1, keepdim=True)


def gradient_variance_maps(img: torch.Tensor, patch_size: int = 8) -> torch.Tensor:
    """(B, 3, P): the unbiased variance of the Sobel-x, Sobel-y and Laplacian responses of the
    grey image in each of its P non-overlapping ``patch_size`` x ``patch_size`` patches."""
    if patch_size < 2:
        raise ValueError(f"patch_size must be >= 2 (a variance needs two samples), got {patch_size}")
    if img.shape[-2] < patch_size or img.shape[-1] < patch_size:
        raise ValueError(f"images of {tuple(img.shape[-2:])} are smaller than one {patch_size}x{patch_size} patch")
    if img.dtype in (torch.float16, torch.bfloat16):
        img = img.float()  # variances of small differences: not in half precision
    grey = _grey(img)
    kernels = grey.new_tensor(EG_KERNELS).unsqueeze(1)  # (3, 1, 3, 3)
    grads = F.conv2d(grey, kernels, padding=1)  # (B, 3, H, W)
    b = grads.shape[0]
    patches = F.unfold(grads, kernel_size=patch_size, stride=patch_size)  # (B, 3 * n * n, P)
    patches = patches.view(b, 3, patch_size * patch_size, -1)
    return patches.var(dim=2, unbiased=True)


def eg_loss_terms(sr: torch.Tensor, hr: torch.Tensor, patch_size: int = 8) -> torch.Tensor:
    """(3,): L_x, L_y, L_l -- the mean squared differences of the gradient-variance maps."""
    if sr.shape != hr.shape:
        raise ValueError(f"output and target differ in shape: {tuple(sr.shape)} vs {tuple(hr.shape)}")
    with torch.autocast(sr.device.type, enabled=False):  # under mixed precision too: full precision
        v_sr = gradient_variance_maps(sr, patch_size)
        v_hr = gradient_variance_maps(hr.to(v_sr.dtype), patch_size)
        return (v_sr - v_hr).pow(2).mean(dim=(0, 2))


def eg_loss(
    sr: torch.Tensor,
    hr: torch.Tensor,
    patch_size: int = 8,
    weights: Sequence[float] = (1.0, 1.0, 1.0),
) -> torch.Tensor:
    """EFDN's edge-enhanced gradient-variance loss ``lambda_x L_x + lambda_y L_y + lambda_l L_l``
    between an SR output and its target (both (B, 3, H, W), any value range; the recipes use [0, 1])."""
    if len(weights) != 3:
        raise ValueError(f"weights must be (lambda_x, lambda_y, lambda_l), got {tuple(weights)}")
    terms = eg_loss_terms(sr, hr, patch_size)
    return (terms * terms.new_tensor(tuple(float(w) for w in weights))).sum()
