"""SAFMN: Spatially-Adaptive Feature Modulation Network (Sun et al., "Spatially-Adaptive Feature
Modulation for Efficient Image Super-Resolution", ICCV 2023).

Layout and numerics follow the authors' code, sunny2109/SAFMN ``basicsr/archs/safmn_arch.py``
(built on BasicSR, Apache-2.0; the SAFMN repository itself carries no licence file, so the card
says "unspecified"). Module names are the authors' (``to_feat``, ``feats.N.norm{1,2}``,
``feats.N.safm.mfr.K``, ``feats.N.safm.aggr``, ``feats.N.ccm.ccm.{0,2}``, ``to_img.0``), so their
``SAFMN_DF2K_x{2,3,4}.pth`` files load unchanged. The network works on [0, 1] values.

- ``norm1`` / ``norm2``: channels-first LayerNorm, eps 1e-6 (timm's ``LayerNorm2d``: the same
  function as the authors' hand-written one, same ``weight`` / ``bias`` names);
- SAFM: the features are split into 4 channel chunks; chunk 0 goes through a depthwise 3x3 conv,
  chunk i > 0 is adaptively max-pooled to (H / 2^i, W / 2^i) (floor), depthwise-convolved and
  nearest-upsampled back; a 1x1 conv aggregates them, and GELU of that modulates the input;
- CCM: 3x3 conv to ``ffn_scale * dim`` channels, GELU, 1x1 conv back;
- each block: ``x = SAFM(norm1(x)) + x; x = CCM(norm2(x)) + x``; a long skip around the blocks;
  a 3x3 conv to ``3 * scale^2`` channels and PixelShuffle.

Inputs need sides of at least 8 (the coarsest SAFM level pools by 8); the authors test on sides
that are multiples of 8, where the adaptive pooling is exact.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import LayerNorm2d

from zoo.pretrained import PretrainedCfg
from zoo.registry import register_model
from zoo.validate import check_image
from zoo.weights.filters_ca_sr import filter_safmn

from .base import SRModel
from .layers.upsample import pixelshuffle_block

__all__ = ["SAFMN", "SAFM", "CCM", "AttBlock"]

_PAPER = "Spatially-Adaptive Feature Modulation for Efficient Image Super-Resolution"
_ARXIV = "2302.13800"
_SOURCE = "https://github.com/sunny2109/SAFMN"
_LICENSE = "unspecified (no licence file in sunny2109/SAFMN)"


class SAFM(nn.Module):
    """Spatially-adaptive feature modulation over ``n_levels`` channel chunks."""

    def __init__(self, dim: int, n_levels: int = 4):
        super().__init__()
        if dim % n_levels:
            raise ValueError(f"SAFM: dim ({dim}) must be a multiple of n_levels ({n_levels})")
        self.n_levels = n_levels
        chunk = dim // n_levels
        self.mfr = nn.ModuleList([nn.Conv2d(chunk, chunk, 3, 1, 1, groups=chunk) for _ in range(n_levels)])
        self.aggr = nn.Conv2d(dim, dim, 1, 1, 0)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        chunks = x.chunk(self.n_levels, dim=1)
        out = [self.mfr[0](chunks[0])]
        for i in range(1, self.n_levels):
            s = F.adaptive_max_pool2d(chunks[i], (h // 2**i, w // 2**i))
            s = F.interpolate(self.mfr[i](s), size=(h, w), mode="nearest")
            out.append(s)
        return self.act(self.aggr(torch.cat(out, dim=1))) * x


class CCM(nn.Module):
    """Convolutional channel mixer: 3x3 conv (dim -> hidden), GELU, 1x1 conv (hidden -> dim)."""

    def __init__(self, dim: int, growth_rate: float = 2.0):
        super().__init__()
        hidden = int(dim * growth_rate)
        self.ccm = nn.Sequential(nn.Conv2d(dim, hidden, 3, 1, 1), nn.GELU(), nn.Conv2d(hidden, dim, 1, 1, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ccm(x)


class AttBlock(nn.Module):
    """Feature mixing module: pre-norm SAFM and pre-norm CCM, each with a residual."""

    def __init__(self, dim: int, ffn_scale: float = 2.0):
        super().__init__()
        self.norm1 = LayerNorm2d(dim, eps=1e-6)
        self.norm2 = LayerNorm2d(dim, eps=1e-6)
        self.safm = SAFM(dim)
        self.ccm = CCM(dim, ffn_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.safm(self.norm1(x)) + x
        return self.ccm(self.norm2(x)) + x


class SAFMN(SRModel):
    """SAFMN: conv, ``n_blocks`` feature mixing modules with a long skip, conv + PixelShuffle.

    Args:
        scale: upscale factor (``upscaling_factor`` upstream).
        dim: channels (36 for the efficient model, 128 for SAFMN-L).
        n_blocks: feature mixing modules (8; 16 for SAFMN-L).
        ffn_scale: CCM expansion (2.0).
    """

    rgb_range = 1.0
    n_levels = 4

    def __init__(self, scale: int = 4, dim: int = 36, n_blocks: int = 8, ffn_scale: float = 2.0):
        super().__init__()
        if not isinstance(scale, int) or scale < 1:
            raise ValueError(f"SAFMN scale must be a positive integer, got {scale!r}")
        self.scale = scale
        self.dim, self.n_blocks, self.ffn_scale = dim, n_blocks, ffn_scale
        self.hidden_dim = int(dim * ffn_scale)
        self.to_feat = nn.Conv2d(3, dim, 3, 1, 1)
        self.feats = nn.Sequential(*[AttBlock(dim, ffn_scale) for _ in range(n_blocks)])
        self.to_img = pixelshuffle_block(dim, 3, scale, kernel_size=3)

    @property
    def min_size(self) -> int:
        return 2 ** (self.n_levels - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image(x, channels=3, name="SAFMN input (low-resolution RGB)", min_size=self.min_size)
        return self.forward_raw(x)

    def forward_raw(self, x: torch.Tensor) -> torch.Tensor:
        x = self.to_feat(x)
        x = self.feats(x) + x
        return self.to_img(x)


# ----------------------------------------------------------------------------------- registry

# The authors' README points to their Hugging Face repo (Meloo/SAFMN) and a Google Drive folder
# (12O_xgwfgc76DsYbiClYnl6ErCDrsi_S9). The Drive file ids below are those of the files of that
# folder (as spandrel's tests fetch them); the direct-download form works for these ~1 MB files.
_DRIVE_IDS = {
    2: "1TCcCJBlI88vG18292LL_iG5pBAR84Zaw",
    3: "1lEMemKXUvDYLOU69gvlJQZKB_x0GccFh",
    4: "1OG1ihKt0Ka_h7VKZVjmOCBVmG_68w-hP",
}


def _safmn_cfg(scale: int) -> PretrainedCfg:
    name = f"SAFMN_DF2K_x{scale}.pth"
    return PretrainedCfg(
        tag="df2k",
        hf_hub_id="Meloo/SAFMN",
        hf_filename=name,
        url=f"https://drive.google.com/uc?export=download&id={_DRIVE_IDS[scale]}",
        filename=name,
        sha256=None,
        verified=False,
        license=_LICENSE,
        filter_fn=filter_safmn,
        description=(
            f"The authors' efficient-SR model (dim 36, 8 blocks) trained on DF2K, {name}, from their "
            "Hugging Face repo Meloo/SAFMN or their Google Drive model zoo. Not hashed here."
        ),
    )


_COMMON = dict(task="sr", family="safmn", paper=_PAPER, arxiv=_ARXIV, license=_LICENSE, source=_SOURCE, input_size=(3, 256, 256))


@register_model(**_COMMON, params=239_520, gmacs=15.4083, pretrained_cfgs=[_safmn_cfg(4)])
def safmn_x4(**kwargs) -> SAFMN:
    """SAFMN, 36 channels, 8 feature mixing modules, x4."""
    return SAFMN(**{"scale": 4, **kwargs})


@register_model(**_COMMON, params=232_695, gmacs=14.9624, pretrained_cfgs=[_safmn_cfg(3)])
def safmn_x3(**kwargs) -> SAFMN:
    """SAFMN, 36 channels, 8 feature mixing modules, x3."""
    return SAFMN(**{"scale": 3, **kwargs})


@register_model(**_COMMON, params=227_820, gmacs=14.6439, pretrained_cfgs=[_safmn_cfg(2)])
def safmn_x2(**kwargs) -> SAFMN:
    """SAFMN, 36 channels, 8 feature mixing modules, x2."""
    return SAFMN(**{"scale": 2, **kwargs})
