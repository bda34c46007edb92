"""PAN: Efficient Image Super-Resolution Using Pixel Attention (Zhao, Kong, He, Qiao and Dong,
ECCV 2020 workshops / AIM 2020 efficient SR, arXiv 2010.01073): 272K parameters at x4.

Layout and numerics follow the authors' code, zhaohengyuan1/PAN
``codes/models/archs/PAN_arch.py`` (``PA``, ``PAConv``, ``SCPA``, ``PAN``) with the network
options of ``codes/options/{train,test}/*_PANx{2,3,4}.yml`` (``nf=40, unf=24, nb=16``); the code
here is our own. Module names mirror the authors' state dicts (``conv_first``,
``SCPA_trunk.N.{conv1_a,conv1_b,k1.0,PAConv.{k2,k3,k4},conv3}``, ``trunk_conv``, ``upconv1``,
``att1.conv``, ``HRconv1``, ``upconv2`` / ``att2`` / ``HRconv2`` at x4, ``conv_last``), so
``experiments/pretrained_models/PANx{2,3,4}_DF2K.pth`` load unchanged. Licence: the repository
carries no licence file (its training code is built on open-mmlab/mmsr, Apache-2.0).

The network works on [0, 1] images (mmsr), upsamples with nearest-neighbour interpolation + conv +
pixel attention (two x2 stages at x4, one stage of the full factor at x2 / x3) and adds the
bilinearly upsampled input. Parameter counts equal ``sum(p.numel() for p in PAN(3, 3, 40, 24, 16,
scale).parameters())`` of the authors' code: 272,419 (x4), 261,403 (x2 and x3: the same layers).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo.pretrained import PretrainedCfg
from zoo.registry import register_model
from zoo.weights.filters_esr import filter_pan

from .base import SRModel

__all__ = ["PAN", "SCPA", "PAConv", "PA"]

_PAPER = "Efficient Image Super-Resolution Using Pixel Attention"
_SOURCE = "https://github.com/zhaohengyuan1/PAN"
_LICENSE = "unspecified (no licence file in zhaohengyuan1/PAN; built on open-mmlab/mmsr, Apache-2.0)"


class PA(nn.Module):
    """Pixel attention: ``x * sigmoid(conv1x1(x))`` (a 3-D attention map, one value per pixel and channel)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv(x))


class PAConv(nn.Module):
    """Pixel-attention convolution: ``k4(k3(x) * sigmoid(k2(x)))`` (k2 1x1 with bias, k3 / k4
    ``kernel_size`` convs without)."""

    def __init__(self, channels: int, kernel_size: int = 3):
        super().__init__()
        pad = (kernel_size - 1) // 2
        self.k2 = nn.Conv2d(channels, channels, 1)
        self.k3 = nn.Conv2d(channels, channels, kernel_size, padding=pad, bias=False)
        self.k4 = nn.Conv2d(channels, channels, kernel_size, padding=pad, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.k4(self.k3(x) * torch.sigmoid(self.k2(x)))


class SCPA(nn.Module):
    """Self-calibrated block with pixel attention (after SCNet): two 1x1 halves, one through a
    plain 3x3 conv, the other through :class:`PAConv`, concatenated, 1x1 back, plus the input."""

    def __init__(self, channels: int, reduction: int = 2, stride: int = 1, dilation: int = 1):
        super().__init__()
        gw = channels // reduction
        self.conv1_a = nn.Conv2d(channels, gw, 1, bias=False)
        self.conv1_b = nn.Conv2d(channels, gw, 1, bias=False)
        self.k1 = nn.Sequential(nn.Conv2d(gw, gw, 3, stride=stride, padding=dilation, dilation=dilation, bias=False))
        self.PAConv = PAConv(gw)
        self.conv3 = nn.Conv2d(gw * reduction, channels, 1, bias=False)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.lrelu(self.conv1_a(x))
        b = self.lrelu(self.conv1_b(x))
        a = self.lrelu(self.k1(a))
        b = self.lrelu(self.PAConv(b))
        return self.conv3(torch.cat([a, b], dim=1)) + x


class PAN(SRModel):
    """PAN: conv, ``num_blocks`` SCPA blocks + conv with a long skip, then upsampling stages of
    nearest interpolation -> conv -> PA -> LeakyReLU -> conv -> LeakyReLU, a last conv, and the
    bilinearly upsampled input added."""

    rgb_range = 1.0

    def __init__(
        self,
        scale: int = 4,
        channels: int = 40,
        up_channels: int = 24,
        num_blocks: int = 16,
        in_channels: int = 3,
        out_channels: int = 3,
    ):
        super().__init__()
        if scale not in (2, 3, 4):
            raise ValueError(f"PAN scale must be 2, 3 or 4, got {scale}")
        self.scale = scale
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.conv_first = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.SCPA_trunk = nn.Sequential(*[SCPA(channels, reduction=2) for _ in range(num_blocks)])
        self.trunk_conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.upconv1 = nn.Conv2d(channels, up_channels, 3, padding=1)
        self.att1 = PA(up_channels)
        self.HRconv1 = nn.Conv2d(up_channels, up_channels, 3, padding=1)
        if scale == 4:
            self.upconv2 = nn.Conv2d(up_channels, up_channels, 3, padding=1)
            self.att2 = PA(up_channels)
            self.HRconv2 = nn.Conv2d(up_channels, up_channels, 3, padding=1)
        self.conv_last = nn.Conv2d(up_channels, out_channels, 3, padding=1)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)

    def _up(self, fea: torch.Tensor, factor: int, upconv: nn.Module, att: nn.Module, hrconv: nn.Module) -> torch.Tensor:
        fea = upconv(F.interpolate(fea, scale_factor=factor, mode="nearest"))
        fea = self.lrelu(att(fea))
        return self.lrelu(hrconv(fea))

    def forward_raw(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.conv_first(x)
        fea = fea + self.trunk_conv(self.SCPA_trunk(fea))
        if self.scale == 4:
            fea = self._up(fea, 2, self.upconv1, self.att1, self.HRconv1)
            fea = self._up(fea, 2, self.upconv2, self.att2, self.HRconv2)
        else:
            fea = self._up(fea, self.scale, self.upconv1, self.att1, self.HRconv1)
        out = self.conv_last(fea)
        return out + F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)


def _cfg(scale: int) -> PretrainedCfg:
    return PretrainedCfg(
        tag="df2k",
        url=f"{_SOURCE}/raw/master/experiments/pretrained_models/PANx{scale}_DF2K.pth",
        sha256=None,
        verified=False,
        license=_LICENSE,
        filter_fn=filter_pan,
        description=f"The authors' x{scale} model trained on DF2K (zhaohengyuan1/PAN experiments/pretrained_models)",
    )


_COMMON = dict(task="sr", family="pan", paper=_PAPER, arxiv="2010.01073", license=_LICENSE, source=_SOURCE, input_size=(3, 256, 256))


@register_model(**_COMMON, params=272_419, gmacs=32.044, pretrained_cfgs=[_cfg(4)])
def pan_x4(**kwargs) -> PAN:
    """PAN, 40 channels, 16 SCPA blocks, 24-channel upsampler, x4."""
    return PAN(**{"scale": 4, **kwargs})


@register_model(**_COMMON, params=261_403, gmacs=24.9897, pretrained_cfgs=[_cfg(3)])
def pan_x3(**kwargs) -> PAN:
    """PAN, 40 channels, 16 SCPA blocks, 24-channel upsampler, x3."""
    return PAN(**{"scale": 3, **kwargs})


@register_model(**_COMMON, params=261_403, gmacs=20.0587, pretrained_cfgs=[_cfg(2)])
def pan_x2(**kwargs) -> PAN:
    """PAN, 40 channels, 16 SCPA blocks, 24-channel upsampler, x2."""
    return PAN(**{"scale": 2, **kwargs})
