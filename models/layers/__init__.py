"""Shared blocks: timm's where timm has them, ours where it does not."""

from .attention import (
    FCANET_DCT_SIZES,
    MultiSpectralAttention,
    MultiSpectralAttentionLayer,
    MultiSpectralDCTLayer,
    build_dct_filter,
    create_attn,
    get_attn,
    get_freq_indices,
    list_attn,
)
from .conv import ConvNormAct, conv2d_same_pad, create_conv2d, get_padding, make_divisible
from .reparam import RepConv2d, fuse_conv_bn, fuse_kernel_bn
from .upsample import PixelShuffleUpsample, pixelshuffle_block

__all__ = [
    "FCANET_DCT_SIZES",
    "ConvNormAct",
    "MultiSpectralAttention",
    "MultiSpectralAttentionLayer",
    "MultiSpectralDCTLayer",
    "PixelShuffleUpsample",
    "RepConv2d",
    "build_dct_filter",
    "conv2d_same_pad",
    "create_attn",
    "create_conv2d",
    "fuse_conv_bn",
    "fuse_kernel_bn",
    "get_attn",
    "get_freq_indices",
    "get_padding",
    "list_attn",
    "make_divisible",
    "pixelshuffle_block",
]
