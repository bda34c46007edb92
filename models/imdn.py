"""IMDN: Lightweight Image Super-Resolution with Information Multi-distillation Network (Hui, Gao,
Yang and Wang, ACM MM 2019, arXiv 1909.11856); its simplified version won the AIM 2019
constrained SR challenge.

Layout and numerics follow the authors' code, Zheng222/IMDN ``model/architecture.py`` (``IMDN``)
and ``model/block.py`` (``IMDModule``, ``CCALayer``, ``conv_layer``, ``conv_block``,
``pixelshuffle_block``); the code here is our own. Module names mirror the authors' state dicts
(``fea_conv``, ``IMDB1`` .. ``IMDB6`` with ``c1`` .. ``c5`` and ``cca.conv_du.{0,2}``, ``c.0``,
``LR_conv``, ``upsampler.0``), so their ``checkpoints/IMDN_x{2,3,4}.pth`` load unchanged (the
loader strips DataParallel's ``module.``). Licence: the repository carries no licence file; the
authors' weights and code are published for research use (cite the paper).

The authors' network works on [0, 1] images (``test_IMDN.py`` feeds ``img / 255``), so
``rgb_range`` is 1. Parameter counts equal ``sum(p.numel() for p in IMDN(upscale=s).parameters())``
of the authors' code: 715,176 (x4), 703,059 (x3), 694,404 (x2).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from zoo.pretrained import PretrainedCfg
from zoo.registry import register_model
from zoo.weights.filters_esr import filter_imdn

from .base import SRModel
from .layers.conv import conv2d_same_pad
from .layers.upsample import pixelshuffle_block

__all__ = ["IMDN", "IMDModule", "CCALayer", "contrast_channels"]

_PAPER = "Lightweight Image Super-Resolution with Information Multi-distillation Network"
_SOURCE = "https://github.com/Zheng222/IMDN"
_LICENSE = "unspecified (no licence file in Zheng222/IMDN; research use, cite the paper)"


def contrast_channels(x: torch.Tensor) -> torch.Tensor:
    """Per-channel standard deviation over H and W, (B, C, 1, 1): IMDN's "contrast" statistic.

    Summed over W then H and divided by H*W, as the authors' ``stdv_channels`` does."""
    hw = x.shape[2] * x.shape[3]
    mean = x.sum(3, keepdim=True).sum(2, keepdim=True) / hw
    var = (x - mean).pow(2).sum(3, keepdim=True).sum(2, keepdim=True) / hw
    return var.pow(0.5)


class CCALayer(nn.Module):
    """Contrast-aware channel attention: ``x * sigmoid(W2 relu(W1 (std(x) + mean(x))))``."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // reduction, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(contrast_channels(x) + self.avg_pool(x))


class IMDModule(nn.Module):
    """Information multi-distillation block: three 3x3 conv steps that each split off a quarter
    of the channels (the distilled part) and refine the rest, a fourth 3x3 conv, concatenation,
    CCA, 1x1 fusion and a residual."""

    def __init__(self, channels: int, distillation_rate: float = 0.25):
        super().__init__()
        self.distilled = int(channels * distillation_rate)
        self.remaining = int(channels - self.distilled)
        self.c1 = conv2d_same_pad(channels, channels, 3)
        self.c2 = conv2d_same_pad(self.remaining, channels, 3)
        self.c3 = conv2d_same_pad(self.remaining, channels, 3)
        self.c4 = conv2d_same_pad(self.remaining, self.distilled, 3)
        self.act = nn.LeakyReLU(0.05, inplace=True)
        self.c5 = conv2d_same_pad(self.distilled * 4, channels, 1)
        self.cca = CCALayer(self.distilled * 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        split = (self.distilled, self.remaining)
        d1, r1 = torch.split(self.act(self.c1(x)), split, dim=1)
        d2, r2 = torch.split(self.act(self.c2(r1)), split, dim=1)
        d3, r3 = torch.split(self.act(self.c3(r2)), split, dim=1)
        out = torch.cat([d1, d2, d3, self.c4(r3)], dim=1)
        return self.c5(self.cca(out)) + x


class IMDN(SRModel):
    """IMDN: 3x3 conv, ``num_modules`` IMDBs whose outputs are concatenated and fused by a 1x1 conv
    + LeakyReLU, a 3x3 conv with a long skip, and a pixel-shuffle upsampler."""

    rgb_range = 1.0

    def __init__(
        self,
        scale: int = 4,
        channels: int = 64,
        num_modules: int = 6,
        in_channels: int = 3,
        out_channels: int = 3,
    ):
        super().__init__()
        if scale < 1:
            raise ValueError(f"IMDN scale must be a positive integer, got {scale}")
        self.scale = scale
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_modules = num_modules
        self.fea_conv = conv2d_same_pad(in_channels, channels, 3)
        for i in range(num_modules):
            self.add_module(f"IMDB{i + 1}", IMDModule(channels))
        self.c = nn.Sequential(nn.Conv2d(channels * num_modules, channels, 1), nn.LeakyReLU(0.05, inplace=True))
        self.LR_conv = conv2d_same_pad(channels, channels, 3)
        self.upsampler = pixelshuffle_block(channels, out_channels, scale)

    def forward_raw(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.fea_conv(x)
        outs = []
        out = feat
        for i in range(self.num_modules):
            out = getattr(self, f"IMDB{i + 1}")(out)
            outs.append(out)
        out = self.LR_conv(self.c(torch.cat(outs, dim=1))) + feat
        return self.upsampler(out)


def _cfg(scale: int) -> PretrainedCfg:
    return PretrainedCfg(
        tag="paper",
        url=f"{_SOURCE}/raw/master/checkpoints/IMDN_x{scale}.pth",
        sha256=None,
        verified=False,
        license=_LICENSE,
        filter_fn=filter_imdn,
        description=f"The authors' x{scale} checkpoint (Zheng222/IMDN checkpoints/IMDN_x{scale}.pth, DIV2K)",
    )


_COMMON = dict(task="sr", family="imdn", paper=_PAPER, arxiv="1909.11856", license=_LICENSE, source=_SOURCE, input_size=(3, 256, 256))


@register_model(**_COMMON, params=715_176, gmacs=46.519, pretrained_cfgs=[_cfg(4)])
def imdn_x4(**kwargs) -> IMDN:
    """IMDN, 64 channels, 6 IMDBs, x4."""
    return IMDN(**{"scale": 4, **kwargs})


@register_model(**_COMMON, params=703_059, gmacs=45.7263, pretrained_cfgs=[_cfg(3)])
def imdn_x3(**kwargs) -> IMDN:
    """IMDN, 64 channels, 6 IMDBs, x3."""
    return IMDN(**{"scale": 3, **kwargs})


@register_model(**_COMMON, params=694_404, gmacs=45.1601, pretrained_cfgs=[_cfg(2)])
def imdn_x2(**kwargs) -> IMDN:
    """IMDN, 64 channels, 6 IMDBs, x2."""
    return IMDN(**{"scale": 2, **kwargs})
