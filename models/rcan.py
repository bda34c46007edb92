"""RCAN: Residual Channel Attention Networks (Zhang et al., "Image Super-Resolution Using Very Deep
Residual Channel Attention Networks", ECCV 2018).

Layout and numerics follow the authors' code, yulunzhang/RCAN ``RCAN_TestCode/code/model/rcan.py``
and ``model/common.py`` (built on thstkdgus35/EDSR-PyTorch, MIT). The RCAN repository carries no
licence file, so the card says "unspecified"; the published weights come with no licence either.
Module names are the authors' (``sub_mean``, ``head.0``, ``body.G.body.B.body.{0,2}``,
``body.G.body.B.body.3.conv_du.{0,2}``, ``body.G.body.20``, ``body.10``, ``tail.0.*``, ``tail.1``,
``add_mean``), so their ``RCAN_BIX{2,3,4}.pt`` files load unchanged.

Numerics, as upstream:

- the network works on 0-255 values (``rgb_range`` 255); :class:`~zoo.models.base.SRModel`
  scales [0, 1] in and out around it;
- ``sub_mean`` / ``add_mean`` are EDSR's ``MeanShift``: a 1x1 conv (identity weight, bias
  -/+ 255 x the DIV2K RGB mean (0.4488, 0.4371, 0.4040)). They are parameters in the state dict
  (15,592,379 params at x4 counts them) and the file's values are used. Upstream meant them to be
  frozen (``self.requires_grad = False`` on the module, a no-op that EDSR-PyTorch later fixed);
  here they are frozen for real (``requires_grad=False``), which changes nothing at inference;
- channel attention (CA): global average pool -> 1x1 conv (C -> C/16, bias) -> ReLU -> 1x1 conv
  (C/16 -> C, bias) -> sigmoid -> rescale. timm's ``SEModule`` computes the same function
  (with ``rd_channels`` given) but names its convs ``fc1`` / ``fc2`` and would round the reduced
  width up to a multiple of 8 by default, so the authors' ``conv_du.{0,2}`` keys could not load
  as they are: RCAN keeps its own :class:`CALayer`;
- the upsampler is EDSR's ``Upsampler`` (:class:`~zoo.models.layers.PixelShuffleUpsample`: log2(s)
  x (conv 3x3 C -> 4C, PixelShuffle(2)), or conv C -> 9C, PixelShuffle(3) at x3).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from zoo.pretrained import PretrainedCfg
from zoo.registry import register_model
from zoo.weights.filters_ca_sr import filter_rcan

from .base import SRModel
from .layers.upsample import PixelShuffleUpsample

__all__ = ["RCAN", "RCAB", "ResidualGroup", "CALayer", "MeanShift", "DIV2K_RGB_MEAN", "default_conv"]

_PAPER = "Image Super-Resolution Using Very Deep Residual Channel Attention Networks"
_ARXIV = "1807.02758"
_SOURCE = "https://github.com/yulunzhang/RCAN"
_LICENSE = "unspecified (no licence file in yulunzhang/RCAN)"

DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)  # RGB mean of DIV2K 1-800, as in EDSR / RCAN / HAN


def default_conv(in_channels: int, out_channels: int, kernel_size: int, bias: bool = True) -> nn.Conv2d:
    """EDSR's ``default_conv``: stride 1, padding ``kernel_size // 2``."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)


class MeanShift(nn.Conv2d):
    """EDSR's mean shift: a frozen 1x1 conv computing ``(x + sign * rgb_range * mean) / std``.

    ``weight`` and ``bias`` stay in the state dict (the authors' files carry them)."""

    def __init__(
        self,
        rgb_range: float,
        rgb_mean: Sequence[float] = DIV2K_RGB_MEAN,
        rgb_std: Sequence[float] = (1.0, 1.0, 1.0),
        sign: int = -1,
    ):
        super().__init__(3, 3, kernel_size=1)
        std = torch.tensor(rgb_std, dtype=torch.float32)
        with torch.no_grad():
            self.weight.copy_(torch.eye(3).view(3, 3, 1, 1) / std.view(3, 1, 1, 1))
            self.bias.copy_(sign * rgb_range * torch.tensor(rgb_mean, dtype=torch.float32) / std)
        self.weight.requires_grad_(False)
        self.bias.requires_grad_(False)


class CALayer(nn.Module):
    """RCAN's channel attention: ``x * sigmoid(conv(relu(conv(avgpool(x)))))`` (see the module
    docstring for why this is not timm's ``SEModule``)."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        if channels // reduction < 1:
            raise ValueError(f"channels // reduction must be >= 1, got {channels} // {reduction}")
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1, padding=0, bias=True),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // reduction, channels, 1, padding=0, bias=True),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(self.avg_pool(x))


class RCAB(nn.Module):
    """Residual channel attention block: conv -> ReLU -> conv -> CA, plus the input
    (``body.{0,1,2,3}``)."""

    def __init__(self, channels: int, kernel_size: int = 3, reduction: int = 16):
        super().__init__()
        self.body = nn.Sequential(
            default_conv(channels, channels, kernel_size),
            nn.ReLU(inplace=True),
            default_conv(channels, channels, kernel_size),
            CALayer(channels, reduction),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class ResidualGroup(nn.Module):
    """``num_blocks`` RCABs and a conv (``body.0`` ... ``body.N``), with a short skip."""

    def __init__(self, channels: int, num_blocks: int, kernel_size: int = 3, reduction: int = 16):
        super().__init__()
        blocks: list[nn.Module] = [RCAB(channels, kernel_size, reduction) for _ in range(num_blocks)]
        blocks.append(default_conv(channels, channels, kernel_size))
        self.body = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


def _check_scale(scale: int, name: str) -> None:
    if not isinstance(scale, int) or scale < 2 or (scale & (scale - 1) and scale != 3):
        raise ValueError(f"{name} scale must be a power of two (2, 4, 8) or 3, got {scale!r}")


class RCAN(SRModel):
    """RCAN: MeanShift, conv head, ``n_resgroups`` residual groups + conv with a long skip,
    EDSR upsampler + conv, MeanShift back. ``forward_raw`` works on 0-255 values.

    Args:
        scale: upscale factor (2, 3, 4 or 8).
        n_resgroups: residual groups (10 in the paper).
        n_resblocks: RCABs per group (20).
        n_feats: channels (64).
        reduction: channel-attention reduction (16).
        kernel_size: conv kernel size (3).
        n_colors: image channels (3).
        rgb_range: value range the network works in (255).
        rgb_mean: MeanShift mean (DIV2K's; the file's values replace it on load).
    """

    def __init__(
        self,
        scale: int = 4,
        n_resgroups: int = 10,
        n_resblocks: int = 20,
        n_feats: int = 64,
        reduction: int = 16,
        kernel_size: int = 3,
        n_colors: int = 3,
        rgb_range: float = 255.0,
        rgb_mean: Sequence[float] = DIV2K_RGB_MEAN,
    ):
        super().__init__()
        _check_scale(scale, type(self).__name__)
        if n_resgroups < 1 or n_resblocks < 1:
            raise ValueError(f"n_resgroups and n_resblocks must be >= 1, got {n_resgroups}, {n_resblocks}")
        self.scale = scale
        self.rgb_range = float(rgb_range)
        self.in_channels = n_colors
        self.n_resgroups, self.n_resblocks, self.n_feats = n_resgroups, n_resblocks, n_feats
        # registration order follows the authors' __init__ (state-dict order as in their files)
        self.sub_mean = MeanShift(rgb_range, rgb_mean, sign=-1)
        self.add_mean = MeanShift(rgb_range, rgb_mean, sign=1)
        self.head = nn.Sequential(default_conv(n_colors, n_feats, kernel_size))
        body: list[nn.Module] = [ResidualGroup(n_feats, n_resblocks, kernel_size, reduction) for _ in range(n_resgroups)]
        body.append(default_conv(n_feats, n_feats, kernel_size))
        self.body = nn.Sequential(*body)
        self.tail = nn.Sequential(PixelShuffleUpsample(n_feats, scale), default_conv(n_feats, n_colors, kernel_size))

    def forward_raw(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.sub_mean(x))
        res = self.body(x) + x
        return self.add_mean(self.tail(res))


# ----------------------------------------------------------------------------------- registry

# The authors publish every RCAN model (BI x2/x3/x4/x8, BD x3) in one zip archive
# (models_ECCV2018RCAN.zip, also on Google Drive id 10bEK-NxVtOS9-XSeyOZyaRmxUTX3iIRa and BaiduYun).
_RCAN_ZIP = "https://www.dropbox.com/s/qm9vc0p0w9i4s0n/models_ECCV2018RCAN.zip?dl=1"

# Set5 PSNR-Y / SSIM-Y of the authors' own outputs, from RCAN_TestCode/PSNR_SSIM_Results_BI_model.txt
# (the paper's Table 3 figures, 38.27 / 34.74 / 32.63 dB).
_RCAN_SET5 = {
    2: {"set5_x2_psnr_y": 38.274, "set5_x2_ssim_y": 0.9614},
    3: {"set5_x3_psnr_y": 34.742, "set5_x3_ssim_y": 0.9299},
    4: {"set5_x4_psnr_y": 32.634, "set5_x4_ssim_y": 0.9002},
}


def _rcan_cfg(scale: int) -> PretrainedCfg:
    member = f"models_ECCV2018RCAN/RCAN_BIX{scale}.pt"
    return PretrainedCfg(
        tag="paper",
        url=_RCAN_ZIP,
        archive_member=member,
        filename=f"RCAN_BIX{scale}.pt",  # the extracted member, looked up in the zoo cache
        sha256=None,
        verified=False,
        license=_LICENSE,
        filter_fn=filter_rcan,
        metrics=dict(_RCAN_SET5[scale]),
        description=(
            f"The authors' BI x{scale} model (ECCV 2018). Published only inside the zip archive "
            f"models_ECCV2018RCAN.zip (Dropbox / Google Drive / BaiduYun links in yulunzhang/RCAN's "
            f"README) as {member}: pretrained=True downloads the archive once and extracts that "
            f"member into the zoo cache (checkpoints/RCAN_BIX{scale}.pt); checkpoint_path= takes the "
            "extracted file. Not hashed here."
        ),
    )


_COMMON = dict(task="sr", family="rcan", paper=_PAPER, arxiv=_ARXIV, license=_LICENSE, source=_SOURCE, input_size=(3, 256, 256))


@register_model(**_COMMON, params=15_592_379, gmacs=1043.1964, pretrained_cfgs=[_rcan_cfg(4)])
def rcan_x4(**kwargs) -> RCAN:
    """RCAN, 10 residual groups x 20 RCABs, 64 channels, x4."""
    return RCAN(**{"scale": 4, **kwargs})


@register_model(**_COMMON, params=15_629_307, gmacs=1015.8245, pretrained_cfgs=[_rcan_cfg(3)])
def rcan_x3(**kwargs) -> RCAN:
    """RCAN, 10 residual groups x 20 RCABs, 64 channels, x3."""
    return RCAN(**{"scale": 3, **kwargs})


@register_model(**_COMMON, params=15_444_667, gmacs=1003.1757, pretrained_cfgs=[_rcan_cfg(2)])
def rcan_x2(**kwargs) -> RCAN:
    """RCAN, 10 residual groups x 20 RCABs, 64 channels, x2."""
    return RCAN(**{"scale": 2, **kwargs})
