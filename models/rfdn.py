"""RFDN: Residual Feature Distillation Network for Lightweight Image Super-Resolution (Liu, Tang
and Wu, ECCV 2020 workshops, arXiv 2009.11551); its enhanced version E-RFDN won the AIM 2020
efficient super-resolution challenge.

Layout and numerics follow the authors' code, njulj/RFDN ``RFDN.py`` and ``block.py`` (MIT
License, Copyright (c) 2021 njulj); the code here is our own. Module names mirror the authors'
state dicts (``fea_conv``, ``B1`` .. ``B4`` with ``c{1,2,3}_d`` / ``c{1,2,3}_r`` / ``c4`` /
``c5`` / ``esa.*``, ``c.0``, ``LR_conv``, ``upsampler.0``), so ``trained_model/RFDN_AIM.pth``
(the AIM 2020 entry, x4, 433,448 params) loads unchanged and gives the authors' outputs.

The authors' network works on 0-255 values (their ``uint2tensor4`` divides by 1.0), so
``rgb_range`` is 255 and :class:`~zoo.models.base.SRModel` scales around it. Their ``RFDN``
hard-codes a x4 pixel shuffle; here ``scale`` is honoured (x4 is the only published file).

:class:`ESA` here is the full enhanced spatial attention of RFDN (with ``conv_max`` and
``conv3_``, ``n_feats // 4`` channels); EFDN uses the same module (:mod:`zoo.models.efdn`).
RLFN's reduced ESA lives in :mod:`zoo.models.rlfn`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo.pretrained import PretrainedCfg
from zoo.registry import register_model
from zoo.weights.filters_esr import filter_rfdn

from .base import SRModel
from .layers.conv import conv2d_same_pad
from .layers.upsample import pixelshuffle_block

__all__ = ["RFDN", "RFDB", "ESA"]

_PAPER = "Residual Feature Distillation Network for Lightweight Image Super-Resolution"
_SOURCE = "https://github.com/njulj/RFDN"


class ESA(nn.Module):
    """Enhanced spatial attention (RFDN's form, after RFANet): a strided conv, a 7x7/3 max pool and
    three 3x3 convs build a coarse mask at low resolution, upsampled bilinearly, added to a 1x1
    path and squashed by a sigmoid that gates ``x``."""

    def __init__(self, channels: int, esa_channels: int | None = None):
        super().__init__()
        f = esa_channels or channels // 4
        self.conv1 = nn.Conv2d(channels, f, 1)
        self.conv_f = nn.Conv2d(f, f, 1)
        self.conv_max = nn.Conv2d(f, f, 3, padding=1)
        self.conv2 = nn.Conv2d(f, f, 3, stride=2, padding=0)
        self.conv3 = nn.Conv2d(f, f, 3, padding=1)
        self.conv3_ = nn.Conv2d(f, f, 3, padding=1)
        self.conv4 = nn.Conv2d(f, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1_ = self.conv1(x)
        c1 = self.conv2(c1_)
        v_max = F.max_pool2d(c1, kernel_size=7, stride=3)
        v_range = F.relu(self.conv_max(v_max))
        c3 = F.relu(self.conv3(v_range))
        c3 = self.conv3_(c3)
        c3 = F.interpolate(c3, (x.size(2), x.size(3)), mode="bilinear", align_corners=False)
        m = torch.sigmoid(self.conv4(c3 + self.conv_f(c1_)))
        return x * m


class RFDB(nn.Module):
    """Residual feature distillation block: three shallow residual 3x3 steps, each with a 1x1
    "distillation" branch of half the channels, a last 3x3 conv, concatenation, 1x1 fusion, ESA.
    (No block-level residual: the authors' RFDB returns ``esa(c5(...))``.)"""

    def __init__(self, channels: int):
        super().__init__()
        dc = channels // 2
        rc = channels
        self.c1_d = conv2d_same_pad(channels, dc, 1)
        self.c1_r = conv2d_same_pad(channels, rc, 3)
        self.c2_d = conv2d_same_pad(rc, dc, 1)
        self.c2_r = conv2d_same_pad(rc, rc, 3)
        self.c3_d = conv2d_same_pad(rc, dc, 1)
        self.c3_r = conv2d_same_pad(rc, rc, 3)
        self.c4 = conv2d_same_pad(rc, dc, 3)
        self.act = nn.LeakyReLU(0.05, inplace=True)
        self.c5 = conv2d_same_pad(dc * 4, channels, 1)
        self.esa = ESA(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d1 = self.act(self.c1_d(x))
        r1 = self.act(self.c1_r(x) + x)
        d2 = self.act(self.c2_d(r1))
        r2 = self.act(self.c2_r(r1) + r1)
        d3 = self.act(self.c3_d(r2))
        r3 = self.act(self.c3_r(r2) + r2)
        r4 = self.act(self.c4(r3))
        return self.esa(self.c5(torch.cat([d1, d2, d3, r4], dim=1)))


class RFDN(SRModel):
    """RFDN: 3x3 conv, ``num_modules`` RFDBs concatenated and fused by 1x1 conv + LeakyReLU, a 3x3
    conv with a long skip, and a pixel-shuffle upsampler."""

    rgb_range = 255.0

    def __init__(
        self,
        scale: int = 4,
        channels: int = 50,
        num_modules: int = 4,
        in_channels: int = 3,
        out_channels: int = 3,
    ):
        super().__init__()
        if scale < 1:
            raise ValueError(f"RFDN scale must be a positive integer, got {scale}")
        self.scale = scale
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_modules = num_modules
        self.fea_conv = conv2d_same_pad(in_channels, channels, 3)
        for i in range(num_modules):
            self.add_module(f"B{i + 1}", RFDB(channels))
        self.c = nn.Sequential(nn.Conv2d(channels * num_modules, channels, 1), nn.LeakyReLU(0.05, inplace=True))
        self.LR_conv = conv2d_same_pad(channels, channels, 3)
        self.upsampler = pixelshuffle_block(channels, out_channels, scale)

    def forward_raw(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.fea_conv(x)
        outs = []
        out = feat
        for i in range(self.num_modules):
            out = getattr(self, f"B{i + 1}")(out)
            outs.append(out)
        out = self.LR_conv(self.c(torch.cat(outs, dim=1))) + feat
        return self.upsampler(out)


@register_model(
    task="sr", family="rfdn", paper=_PAPER, arxiv="2009.11551", license="MIT", source=_SOURCE,
    input_size=(3, 256, 256), params=433_448, gmacs=27.0336,
    pretrained_cfgs=[
        PretrainedCfg(
            tag="aim2020",
            url=f"{_SOURCE}/raw/master/trained_model/RFDN_AIM.pth",
            sha256="11af8ec8ebd68689e90ef1e29044f9804c72d3bd9f7573820b7b26035782760c",
            verified=True,
            license="MIT",
            filter_fn=filter_rfdn,
            metrics={"set5_x4_psnr_y": 32.161},
            description="The authors' AIM 2020 efficient-SR winning entry (njulj/RFDN trained_model/RFDN_AIM.pth)",
        )
    ],
)
def rfdn_x4(**kwargs) -> RFDN:
    """RFDN, 50 channels, 4 RFDBs, x4 (AIM 2020 efficient SR winner)."""
    return RFDN(**{"scale": 4, **kwargs})
