"""Channel attention: timm's modules through one factory, plus FcaNet's multi-spectral attention.

``create_attn("se" | "eca" | "cbam" | ..., channels)`` returns timm's module (``timm.layers``);
``create_attn("fca", channels, dct_size=14)`` returns :class:`MultiSpectralAttention`.

:class:`MultiSpectralAttention` follows FcaNet (Qin et al., "FcaNet: Frequency Channel Attention
Networks", ICCV 2021), code at cfzd/FcaNet ``model/layer.py`` (MIT License, Copyright (c) 2021
cfzd): same module / buffer names (``dct_layer.weight``, ``fc.0.weight``, ``fc.2.weight``), the
same frequency tables and the same DCT filter values, so the authors' checkpoints load unchanged
and give the same outputs. The weighted spatial sum runs through :func:`zoo.models.ops.dct_pool`
(Triton on CUDA when available, else plain PyTorch).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import get_attn as _timm_get_attn

from zoo.models.ops import dct_pool

__all__ = [
    "FCANET_DCT_SIZES",
    "FREQ_SEL_METHODS",
    "MultiSpectralAttention",
    "MultiSpectralAttentionLayer",
    "MultiSpectralDCTLayer",
    "build_dct_filter",
    "create_attn",
    "get_attn",
    "get_freq_indices",
    "list_attn",
]

# FcaNet's ResNet: DCT size per bottleneck ``planes`` (the feature size at 224x224 input).
FCANET_DCT_SIZES: dict[int, int] = {64: 56, 128: 28, 256: 14, 512: 7}

# Frequency (u, v) indices in a 7x7 DCT space, ordered as in the paper's selection study:
# "top" = best single-frequency accuracy first, "low" = zig-zag from DC, "bot" = worst first.
_FREQ_TABLES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "top": (
        (0, 0, 6, 0, 0, 1, 1, 4, 5, 1, 3, 0, 0, 0, 3, 2, 4, 6, 3, 5, 5, 2, 6, 5, 5, 3, 3, 4, 2, 2, 6, 1),
        (0, 1, 0, 5, 2, 0, 2, 0, 0, 6, 0, 4, 6, 3, 5, 2, 6, 3, 3, 3, 5, 1, 1, 2, 4, 2, 1, 1, 3, 0, 5, 3),
    ),
    "low": (
        (0, 0, 1, 1, 0, 2, 2, 1, 2, 0, 3, 4, 0, 1, 3, 0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5, 6, 1, 2, 3, 4),
        (0, 1, 0, 1, 2, 0, 1, 2, 2, 3, 0, 0, 4, 3, 1, 5, 4, 3, 2, 1, 0, 6, 5, 4, 3, 2, 1, 0, 6, 5, 4, 3),
    ),
    "bot": (
        (6, 1, 3, 3, 2, 4, 1, 2, 4, 4, 5, 1, 4, 6, 2, 5, 6, 1, 6, 2, 2, 4, 3, 3, 5, 5, 6, 2, 5, 5, 3, 6),
        (6, 4, 4, 6, 6, 3, 1, 4, 4, 5, 6, 5, 2, 2, 5, 1, 4, 3, 5, 0, 3, 1, 1, 2, 4, 2, 1, 1, 5, 3, 3, 3),
    ),
}
FREQ_SEL_METHODS: tuple[str, ...] = tuple(f"{k}{n}" for k in ("top", "low", "bot") for n in (1, 2, 4, 8, 16, 32))


def get_freq_indices(method: str) -> tuple[list[int], list[int]]:
    """The (x, y) frequency indices in 7x7 DCT space for ``method`` (e.g. ``"top16"``)."""
    if method not in FREQ_SEL_METHODS:
        raise ValueError(f"freq_sel_method must be one of {', '.join(FREQ_SEL_METHODS)}, got {method!r}")
    num = int(method[3:])
    xs, ys = _FREQ_TABLES[method[:3]]
    return list(xs[:num]), list(ys[:num])


def _dct_basis_1d(freq: int, size: int) -> list[float]:
    """Orthonormal DCT-II basis ``freq`` sampled at ``size`` positions, in double precision,
    evaluated as FcaNet does: ``cos(pi * freq * (pos + 0.5) / size) / sqrt(size)``, times
    ``sqrt(2)`` unless ``freq == 0``."""
    out = []
    for pos in range(size):
        v = math.cos(math.pi * freq * (pos + 0.5) / size) / math.sqrt(size)
        out.append(v if freq == 0 else v * math.sqrt(2))
    return out


def build_dct_filter(
    height: int, width: int, mapper_x: Sequence[int], mapper_y: Sequence[int], channel: int
) -> torch.Tensor:
    """The (channel, height, width) fp32 filter bank: channel group ``i`` (of ``channel //
    len(mapper_x)`` channels) holds the 2-D DCT basis ``(mapper_x[i], mapper_y[i])``; channels
    past the last full group stay zero. Products are taken in double, then rounded to fp32."""
    if len(mapper_x) != len(mapper_y):
        raise ValueError("mapper_x and mapper_y must have the same length")
    num = len(mapper_x)
    if num == 0 or channel % num != 0:
        raise ValueError(f"channel ({channel}) must be a multiple of the number of frequencies ({num})")
    part = channel // num
    filt = torch.zeros(channel, height, width, dtype=torch.float64)
    for i, (u, v) in enumerate(zip(mapper_x, mapper_y)):
        bx = torch.tensor(_dct_basis_1d(u, height), dtype=torch.float64)
        by = torch.tensor(_dct_basis_1d(v, width), dtype=torch.float64)
        filt[i * part : (i + 1) * part] = torch.outer(bx, by)
    return filt.to(torch.float32)


class MultiSpectralDCTLayer(nn.Module):
    """Fixed DCT filter bank (buffer ``weight``, (C, H, W)); ``forward`` = ``dct_pool(x, weight)``."""

    weight: torch.Tensor

    def __init__(self, height: int, width: int, mapper_x: Sequence[int], mapper_y: Sequence[int], channel: int):
        super().__init__()
        if len(mapper_x) != len(mapper_y):
            raise ValueError("mapper_x and mapper_y must have the same length")
        self.num_freq = len(mapper_x)
        self.register_buffer("weight", build_dct_filter(height, width, mapper_x, mapper_y, channel))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"x must have 4 dimensions, got {x.dim()}")
        return dct_pool(x, self.weight)


class MultiSpectralAttention(nn.Module):
    """FcaNet's multi-spectral channel attention.

    ``x * sigmoid(fc(dct_pool(x', dct_filters)))`` where ``x'`` is ``x`` adaptively average-pooled
    to ``(dct_h, dct_w)`` when its size differs. The frequency indices (given in 7x7 space) are
    scaled by ``dct_h // 7`` and ``dct_w // 7``.

    Args:
        channel: input channels (a multiple of the number of frequencies).
        dct_h, dct_w: DCT size (FcaNet: 56 / 28 / 14 / 7 by stage); ``dct_w`` defaults to ``dct_h``.
        reduction: bottleneck ratio of the two-layer MLP.
        freq_sel_method: ``top|low|bot`` + ``1|2|4|8|16|32``.
        dct_size: keyword shortcut setting both ``dct_h`` and ``dct_w`` (int or (h, w)).
    """

    def __init__(
        self,
        channel: int,
        dct_h: int = 7,
        dct_w: int | None = None,
        reduction: int = 16,
        freq_sel_method: str = "top16",
        *,
        dct_size: int | Sequence[int] | None = None,
    ):
        super().__init__()
        if dct_size is not None:
            dct_h, dct_w = (dct_size, dct_size) if isinstance(dct_size, int) else tuple(dct_size)
        if dct_w is None:
            dct_w = dct_h
        if channel // reduction < 1:
            raise ValueError(f"channel // reduction must be >= 1, got {channel} // {reduction}")
        self.reduction = reduction
        self.dct_h = dct_h
        self.dct_w = dct_w

        mapper_x, mapper_y = get_freq_indices(freq_sel_method)
        self.num_split = len(mapper_x)
        # indices are given for a 7x7 space: (1, 1) in 7x7 is (2, 2) in 14x14
        mapper_x = [u * (dct_h // 7) for u in mapper_x]
        mapper_y = [v * (dct_w // 7) for v in mapper_y]

        self.dct_layer = MultiSpectralDCTLayer(dct_h, dct_w, mapper_x, mapper_y, channel)
        self.fc = nn.Sequential(
            nn.Linear(channel, channel // reduction, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(channel // reduction, channel, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        pooled = x
        if h != self.dct_h or w != self.dct_w:
            pooled = F.adaptive_avg_pool2d(x, (self.dct_h, self.dct_w))
        y = self.fc(self.dct_layer(pooled)).view(n, c, 1, 1)
        return x * y.expand_as(x)

    def extra_repr(self) -> str:
        return f"dct=({self.dct_h}, {self.dct_w}), reduction={self.reduction}, num_freq={self.num_split}"


# upstream name
MultiSpectralAttentionLayer = MultiSpectralAttention

_OURS: dict[str, type[nn.Module]] = {"fca": MultiSpectralAttention}
_TIMM_CANDIDATES = (
    "se", "ese", "eca", "ecam", "ceca", "ge", "gc", "gca", "cbam", "lcbam", "coord", "scoord",
    "ela", "strip", "sk", "splat", "lambda", "bottleneck", "halo", "nl", "bat",
)  # fmt: skip


def _timm_knows(name: str) -> bool:
    try:
        return _timm_get_attn(name) is not None
    except (AssertionError, ValueError, KeyError):
        return False


def list_attn() -> list[str]:
    """Attention type names the factory accepts (ours, then the ones timm knows)."""
    return [*_OURS, *(n for n in _TIMM_CANDIDATES if _timm_knows(n))]


def get_attn(attn_type: Any) -> Any:
    """The attention class / constructor for ``attn_type``; ``None`` for None / '' / False.

    Strings are case-insensitive: ``"fca"`` is ours, anything else goes to
    ``timm.layers.get_attn``. A module class or instance is passed through as timm does.
    Unknown names raise ``ValueError`` listing the known types.
    """
    if attn_type is None or attn_type is False or (isinstance(attn_type, str) and not attn_type.strip()):
        return None
    if isinstance(attn_type, str):
        key = attn_type.strip().lower()
        if key in _OURS:
            return _OURS[key]
        try:
            cls = _timm_get_attn(key)
        except AssertionError:
            cls = None
        if cls is None:
            raise ValueError(f"unknown attention type {attn_type!r}; known: {', '.join(list_attn())}")
        return cls
    return _timm_get_attn(attn_type)


def create_attn(attn_type: Any, channels: int, **kwargs: Any) -> nn.Module | None:
    """Build attention ``attn_type`` over ``channels`` channels, or return ``None`` for none.

    ``create_attn("fca", c, dct_size=14)`` builds :class:`MultiSpectralAttention` with a 14x14
    DCT (default 7x7; see :data:`FCANET_DCT_SIZES` for FcaNet's per-stage sizes); other kwargs go
    to the module's constructor (``reduction``, ``freq_sel_method`` / timm's ``rd_ratio`` ...).
    """
    cls = get_attn(attn_type)
    if cls is None:
        return None
    if isinstance(cls, nn.Module):
        return cls
    return cls(channels, **kwargs)
