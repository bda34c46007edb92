"""Convolution helpers: timm's ``ConvNormAct`` / ``make_divisible`` / ``get_padding``, re-exported,
and ``conv2d_same_pad``, the "same"-padded ``nn.Conv2d`` most SR / efficient-net code calls
``conv_layer`` (IMDN, RFDN, RLFN ...)."""

from __future__ import annotations

import torch.nn as nn
from timm.layers import ConvNormAct, create_conv2d, get_padding, make_divisible

__all__ = ["ConvNormAct", "conv2d_same_pad", "create_conv2d", "get_padding", "make_divisible"]


def conv2d_same_pad(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    dilation: int = 1,
    groups: int = 1,
    bias: bool = True,
) -> nn.Conv2d:
    """``nn.Conv2d`` with symmetric padding ``(kernel_size - 1) // 2 * dilation``: output size
    ``ceil(input / stride)`` for odd kernels. State dict: ``weight`` (+ ``bias``)."""
    padding = (kernel_size - 1) // 2 * dilation
    return nn.Conv2d(
        in_channels, out_channels, kernel_size, stride, padding, dilation=dilation, groups=groups, bias=bias
    )
