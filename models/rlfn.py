"""RLFN: Residual Local Feature Network for Efficient Super-Resolution (Kong et al., CVPRW 2022).

Layout and numerics follow the authors' code, bytedance/RLFN (Apache-2.0, Copyright 2022
ByteDance): module names (``conv_1``, ``block_N.c{1,2,3}_r``, ``c5``, ``esa.*``, ``conv_2``,
``upsampler.0``) match their state dicts, so their ``model_zoo/*.pth`` files load unchanged.
The authors' network works on 0-255 values; :class:`~zoo.models.base.SRModel` scales around it.

:class:`RLFNPrune` is the authors' NTIRE 2022 efficient-SR entry, ``RLFN_Prune`` in
``model/rlfn_ntire.py``: four RLFBs of 46 feature / 48 inner channels (317,218 params, the
README's 0.317M), same blocks, same names (``conv_1``, ``block_1..4``, ``conv_2``,
``upsampler.0``), published as ``model_zoo/rlfn_ntire_x4.pth``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo.pretrained import PretrainedCfg
from zoo.registry import register_model
from zoo.weights.filters import filter_rlfn
from zoo.weights.filters_esr import filter_rlfn_ntire

from .base import SRModel
from .layers.upsample import pixelshuffle_block

__all__ = ["RLFN", "RLFB", "ESA", "RLFNPrune"]

_PAPER = "Residual Local Feature Network for Efficient Super-Resolution"
_ARXIV = "2205.07514"
_SOURCE = "https://github.com/bytedance/RLFN"


def _conv(cin: int, cout: int, k: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=(k - 1) // 2)


class ESA(nn.Module):
    """Enhanced spatial attention in RLFN's reduced form (no ``conv_max`` / ``conv3_``)."""

    def __init__(self, esa_channels: int, channels: int):
        super().__init__()
        f = esa_channels
        self.conv1 = nn.Conv2d(channels, f, 1)
        self.conv_f = nn.Conv2d(f, f, 1)
        self.conv2 = nn.Conv2d(f, f, 3, stride=2, padding=0)
        self.conv3 = nn.Conv2d(f, f, 3, padding=1)
        self.conv4 = nn.Conv2d(f, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1_ = self.conv1(x)
        c1 = self.conv2(c1_)
        v_max = F.max_pool2d(c1, kernel_size=7, stride=3)
        c3 = self.conv3(v_max)
        c3 = F.interpolate(c3, (x.size(2), x.size(3)), mode="bilinear", align_corners=False)
        cf = self.conv_f(c1_)
        m = torch.sigmoid(self.conv4(c3 + cf))
        return x * m


class RLFB(nn.Module):
    """Residual local feature block: three 3x3 conv + LeakyReLU(0.05), a residual, 1x1, ESA."""

    def __init__(self, channels: int, mid_channels: int | None = None, esa_channels: int = 16):
        super().__init__()
        mid = mid_channels or channels
        self.c1_r = _conv(channels, mid, 3)
        self.c2_r = _conv(mid, mid, 3)
        self.c3_r = _conv(mid, channels, 3)
        self.c5 = _conv(channels, channels, 1)
        self.esa = ESA(esa_channels, channels)
        self.act = nn.LeakyReLU(0.05, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.c1_r(x))
        out = self.act(self.c2_r(out))
        out = self.act(self.c3_r(out))
        return self.esa(self.c5(out + x))


class RLFN(SRModel):
    """RLFN: conv, six RLFBs, conv + long skip, pixel-shuffle upsampler."""

    rgb_range = 255.0

    def __init__(self, scale: int = 4, channels: int = 52, num_blocks: int = 6, esa_channels: int = 16, in_channels: int = 3, out_channels: int = 3):
        super().__init__()
        if scale not in (2, 3, 4):
            raise ValueError(f"RLFN scale must be 2, 3 or 4, got {scale}")
        self.scale = scale
        self.in_channels = in_channels
        self.conv_1 = _conv(in_channels, channels, 3)
        for i in range(num_blocks):
            self.add_module(f"block_{i + 1}", RLFB(channels, esa_channels=esa_channels))
        self.num_blocks = num_blocks
        self.conv_2 = _conv(channels, channels, 3)
        self.upsampler = pixelshuffle_block(channels, out_channels, scale)

    def forward_raw(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv_1(x)
        out = feat
        for i in range(self.num_blocks):
            out = getattr(self, f"block_{i + 1}")(out)
        return self.upsampler(self.conv_2(out) + feat)


class RLFNPrune(RLFN):
    """RLFN_Prune (NTIRE 2022 entry): conv, ``num_blocks`` RLFBs whose three 3x3 convs have
    ``mid_channels`` inner channels, conv + long skip, pixel shuffle (RLFN's forward)."""

    def __init__(
        self,
        scale: int = 4,
        channels: int = 46,
        mid_channels: int = 48,
        num_blocks: int = 4,
        esa_channels: int = 16,
        in_channels: int = 3,
        out_channels: int = 3,
    ):
        SRModel.__init__(self)
        if scale not in (2, 3, 4):
            raise ValueError(f"RLFN scale must be 2, 3 or 4, got {scale}")
        self.scale = scale
        self.in_channels = in_channels
        self.conv_1 = _conv(in_channels, channels, 3)
        for i in range(num_blocks):
            self.add_module(f"block_{i + 1}", RLFB(channels, mid_channels, esa_channels=esa_channels))
        self.num_blocks = num_blocks
        self.conv_2 = _conv(channels, channels, 3)
        self.upsampler = pixelshuffle_block(channels, out_channels, scale)


def _cfg(name: str, sha256: str | None = None, metrics: dict | None = None) -> PretrainedCfg:
    return PretrainedCfg(
        tag="paper",
        url=f"{_SOURCE}/raw/main/model_zoo/{name}.pth",
        sha256=sha256,
        verified=sha256 is not None,
        license="Apache-2.0",
        filter_fn=filter_rlfn,
        metrics=metrics or {},
        description="The weights the authors published with the paper (bytedance/RLFN model_zoo)",
    )


_COMMON = dict(task="sr", family="rlfn", paper=_PAPER, arxiv=_ARXIV, license="Apache-2.0", source=_SOURCE)


@register_model(
    **_COMMON, input_size=(3, 256, 256), params=543_740, gmacs=33.9314,
    pretrained_cfgs=[_cfg("rlfn_x4", "8c7edb57dfc89048bafba29d591d4c27d4099964b4a9e22df23d6dc257a637c0", {"set5_x4_psnr_y": 32.240})],
)
def rlfn_x4(**kwargs) -> RLFN:
    """RLFN, 52 channels, x4."""
    return RLFN(**{"scale": 4, "channels": 52, **kwargs})


@register_model(
    **_COMMON, input_size=(3, 256, 256), params=470_208, gmacs=29.1208,
    pretrained_cfgs=[_cfg("rlfn_s_x4", "f769c5a88433786b2db0c2b24da6ca6c92a24c62344b9354a390f8a74388e89d", {"set5_x4_psnr_y": 32.241})],
)
def rlfn_s_x4(**kwargs) -> RLFN:
    """RLFN-S (small), 48 channels, x4."""
    return RLFN(**{"scale": 4, "channels": 48, **kwargs})


@register_model(**_COMMON, input_size=(3, 256, 256), params=526_856, gmacs=32.8273, pretrained_cfgs=[_cfg("rlfn_x2")])
def rlfn_x2(**kwargs) -> RLFN:
    """RLFN, 52 channels, x2."""
    return RLFN(**{"scale": 2, "channels": 52, **kwargs})


@register_model(**_COMMON, input_size=(3, 256, 256), params=454_620, gmacs=28.1016, pretrained_cfgs=[_cfg("rlfn_s_x2")])
def rlfn_s_x2(**kwargs) -> RLFN:
    """RLFN-S (small), 48 channels, x2."""
    return RLFN(**{"scale": 2, "channels": 48, **kwargs})


@register_model(
    task="sr", family="rlfn", paper=f"{_PAPER} (NTIRE 2022 efficient SR entry, pruned)", arxiv=_ARXIV,
    license="Apache-2.0", source=f"{_SOURCE} (model/rlfn_ntire.py, RLFN_Prune)",
    input_size=(3, 256, 256), params=317_218, gmacs=19.6581,
    pretrained_cfgs=[
        PretrainedCfg(
            tag="ntire22",
            url=f"{_SOURCE}/raw/main/model_zoo/rlfn_ntire_x4.pth",
            sha256=None,
            verified=False,
            license="Apache-2.0",
            filter_fn=filter_rlfn_ntire,
            description="The authors' NTIRE 2022 efficient-SR entry (ByteESR, bytedance/RLFN model_zoo/rlfn_ntire_x4.pth)",
        )
    ],
)
def rlfn_ntire_x4(**kwargs) -> RLFNPrune:
    """RLFN pruned for the NTIRE 2022 efficient SR challenge: 46 channels (48 inside), 4 blocks, x4."""
    return RLFNPrune(**{"scale": 4, **kwargs})
