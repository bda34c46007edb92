"""Pixel-shuffle upsamplers used by the SR families."""

from __future__ import annotations

import math

import torch.nn as nn

__all__ = ["pixelshuffle_block", "PixelShuffleUpsample"]


def pixelshuffle_block(in_channels: int, out_channels: int, scale: int, kernel_size: int = 3, bias: bool = True) -> nn.Sequential:
    """One conv to ``out_channels * scale**2`` then ``PixelShuffle(scale)`` (ESPCN style).

    State-dict layout ``0.weight``/``0.bias``, as in IMDN / RFDN / RLFN / SPAN's ``pixelshuffle_block``.
    """
    conv = nn.Conv2d(in_channels, out_channels * scale * scale, kernel_size, padding=kernel_size // 2, bias=bias)
    return nn.Sequential(conv, nn.PixelShuffle(scale))


class PixelShuffleUpsample(nn.Sequential):
    """EDSR / RCAN style upsampler: log2(scale) x (conv -> PixelShuffle(2)) for powers of two,
    one conv -> PixelShuffle(3) for x3. Layout ``0.weight``, ``2.weight`` ... as in EDSR's ``Upsampler``."""

    def __init__(self, channels: int, scale: int, bias: bool = True):
        layers: list[nn.Module] = []
        if scale & (scale - 1) == 0:
            for _ in range(int(math.log2(scale))):
                layers += [nn.Conv2d(channels, 4 * channels, 3, padding=1, bias=bias), nn.PixelShuffle(2)]
        elif scale == 3:
            layers += [nn.Conv2d(channels, 9 * channels, 3, padding=1, bias=bias), nn.PixelShuffle(3)]
        else:
            raise ValueError(f"scale must be a power of two or 3, got {scale}")
        super().__init__(*layers)
