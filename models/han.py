"""HAN: Holistic Attention Network (Niu et al., "Single Image Super-Resolution via a Holistic
Attention Network", ECCV 2020).

Layout and numerics follow the authors' code, wwlCape/HAN ``src/model/han.py`` (built on RCAN and
EDSR-PyTorch). The HAN repository carries no licence file, so the card says "unspecified".
HAN is RCAN's backbone (:mod:`zoo.models.rcan`: MeanShift, head, residual groups of RCABs, EDSR
upsampler, on 0-255 values) plus two modules, with the authors' names so that their
``HAN_BIX{2,3,4,8}.pt`` files load unchanged:

- ``la`` (:class:`LAM`, layer attention): the outputs of all ``n_resgroups + 1`` body modules
  (every residual group and the body's last conv) are stacked newest first into (B, N, C, H, W);
  with ``F = x.view(B, N, -1)``, ``energy = F F^T`` (N x N), ``attention = softmax(rowmax(energy)
  - energy)``, ``out = gamma * (attention F) + x`` (``gamma`` learned, initially 0), reshaped to
  (B, N*C, H, W) and fused by ``last_conv`` (3x3, N*C -> C);
- ``csa`` (:class:`CSAM`, channel-spatial attention): a 3x3x3 ``Conv3d(1, 1)`` over (C, H, W) of
  the last body output, ``x * (gamma * sigmoid(conv(x))) + x``;
- ``last`` (3x3, 2C -> C) fuses [CSAM(out), last_conv(LAM(...))], plus the head's output, then
  the tail upsamples.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from zoo.pretrained import PretrainedCfg
from zoo.registry import register_model
from zoo.weights.filters_ca_sr import filter_han

from .rcan import DIV2K_RGB_MEAN, RCAN

__all__ = ["HAN", "LAM", "CSAM"]

_PAPER = "Single Image Super-Resolution via a Holistic Attention Network"
_ARXIV = "2008.08767"
_SOURCE = "https://github.com/wwlCape/HAN"
_LICENSE = "unspecified (no licence file in wwlCape/HAN)"


class LAM(nn.Module):
    """Layer attention module (upstream ``LAM_Module``): (B, N, C, H, W) -> (B, N*C, H, W)."""

    def __init__(self, channels: int | None = None):
        super().__init__()
        self.channels = channels
        self.gamma = nn.Parameter(torch.zeros(1))
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            raise ValueError(f"LAM expects (B, N, C, H, W) features, got shape {tuple(x.shape)}")
        b, n, c, h, w = x.shape
        feats = x.reshape(b, n, -1)
        energy = torch.bmm(feats, feats.transpose(1, 2))
        energy = energy.max(dim=-1, keepdim=True)[0].expand_as(energy) - energy
        out = torch.bmm(self.softmax(energy), feats).view(b, n, c, h, w)
        return (self.gamma * out + x).reshape(b, n * c, h, w)


class CSAM(nn.Module):
    """Channel-spatial attention module (upstream ``CSAM_Module``): a 3-D conv over (C, H, W)."""

    def __init__(self, channels: int | None = None):
        super().__init__()
        self.channels = channels
        self.conv = nn.Conv3d(1, 1, 3, 1, 1)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        attn = self.gamma * self.sigmoid(self.conv(x.unsqueeze(1)))
        return x * attn.view(b, c, h, w) + x


class HAN(RCAN):
    """HAN: RCAN's backbone with layer attention over all body outputs and channel-spatial
    attention on the last one. ``forward_raw`` works on 0-255 values. Args as
    :class:`~zoo.models.rcan.RCAN`, whose modules (names included) HAN shares."""

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
        super().__init__(scale, n_resgroups, n_resblocks, n_feats, reduction, kernel_size, n_colors, rgb_range, rgb_mean)
        self.csa = CSAM(n_feats)
        self.la = LAM(n_feats)
        # upstream hard-codes n_feats * 11, i.e. (10 groups + the body's last conv)
        self.last_conv = nn.Conv2d(n_feats * (n_resgroups + 1), n_feats, 3, 1, 1)
        self.last = nn.Conv2d(n_feats * 2, n_feats, 3, 1, 1)

    def forward_raw(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.sub_mean(x))
        res = x
        outs = []
        for layer in self.body:
            res = layer(res)
            outs.append(res)
        layers = torch.stack(outs[::-1], dim=1)  # newest first, as upstream concatenates them
        out2 = self.last_conv(self.la(layers))
        out1 = self.csa(res)
        res = self.last(torch.cat([out1, out2], dim=1)) + x
        return self.add_mean(self.tail(res))


# ----------------------------------------------------------------------------------- registry

# The authors publish HAN_BIX2/3/4/8.pt and HAN_BDX3.pt in a Google Drive folder (README of
# wwlCape/HAN). A folder cannot be fetched file by file, so the cfg names the file to look for
# locally (``ZOO_WEIGHTS_DIR`` or the zoo cache) and the folder in its description.
_HAN_FOLDER = "https://drive.google.com/drive/folders/17cLcPCDLuBV5_5-ngd0vXIDp6rebIMG1"


def _han_cfg(scale: int) -> PretrainedCfg:
    name = f"HAN_BIX{scale}.pt"
    return PretrainedCfg(
        tag="paper",
        file=name,
        sha256=None,
        verified=False,
        license=_LICENSE,
        filter_fn=filter_han,
        description=(
            f"The authors' BI x{scale} model (ECCV 2020), {name} in their Google Drive folder "
            f"{_HAN_FOLDER} (no per-file link is published): download it into ZOO_WEIGHTS_DIR or the "
            "zoo cache, or pass checkpoint_path=. Not hashed here."
        ),
    )


_COMMON = dict(task="sr", family="han", paper=_PAPER, arxiv=_ARXIV, license=_LICENSE, source=_SOURCE, input_size=(3, 256, 256))


@register_model(**_COMMON, params=16_071_769, gmacs=1075.7317, pretrained_cfgs=[_han_cfg(4)])
def han_x4(**kwargs) -> HAN:
    """HAN, RCAN backbone (10 groups x 20 RCABs, 64 channels) + LAM + CSAM, x4."""
    return HAN(**{"scale": 4, **kwargs})


@register_model(**_COMMON, params=16_108_697, gmacs=1048.3597, pretrained_cfgs=[_han_cfg(3)])
def han_x3(**kwargs) -> HAN:
    """HAN, RCAN backbone (10 groups x 20 RCABs, 64 channels) + LAM + CSAM, x3."""
    return HAN(**{"scale": 3, **kwargs})


@register_model(**_COMMON, params=15_924_057, gmacs=1035.7109, pretrained_cfgs=[_han_cfg(2)])
def han_x2(**kwargs) -> HAN:
    """HAN, RCAN backbone (10 groups x 20 RCABs, 64 channels) + LAM + CSAM, x2."""
    return HAN(**{"scale": 2, **kwargs})
