"""Image encoders for the promptable-segmentation models (:mod:`zoo.models.mobile_sam`).

Three encoders map a normalised, padded ``img_size`` x ``img_size`` image to SAM's
256-channel embedding on the ``img_size / 16`` grid:

- :class:`ImageEncoderViT`: SAM's ViT-B/L/H (facebookresearch/segment-anything, Apache-2.0,
  Copyright (c) Meta Platforms, Inc. and affiliates). The blocks are timm's
  ``vision_transformer_sam.Block`` (windowed / global attention with decomposed relative
  positions, the same numerics); the container keeps SAM's names (``patch_embed.proj``,
  ``pos_embed``, ``blocks.N``, ``neck.0-3``). timm names the block MLP ``mlp.fc1/fc2`` where SAM
  says ``mlp.lin1/lin2``: :func:`zoo.weights.sam_filters.filter_sam` maps them.
- :class:`TinyViT`: MobileSAM's TinyViT-5M (ChaoningZhang/MobileSAM, Apache-2.0; TinyViT itself
  is microsoft/Cream, MIT). The MBConv, TinyViT block and conv-BN units are timm's
  (``timm.models.tiny_vit``, the same numerics); the containers keep MobileSAM's names
  (``patch_embed.seq``, ``layers.N.blocks.M``, ``layers.N.downsample``, ``neck``). timm's
  conv-BN unit names its conv ``conv`` where the authors say ``c``: the filter maps it.
  MobileSAM's changes to TinyViT are kept: the last patch merging has stride 1 (the
  encoder's output stays on the ``img_size / 16`` grid) and SAM's neck replaces the classifier
  (the authors' file also holds the unused ImageNet head, which the filter drops).
- :class:`BackboneNeckEncoder`: any zoo or timm backbone with ``features_only`` (the swappable
  encoder): 1x1 projections of its stride-16 and coarser stages to 256 channels, upsampled to
  the stride-16 grid and summed, then SAM's neck; the fusion is EdgeSAM's
  (chongzhou96/EdgeSAM, ``RepViT(fuse=True)``: 1x1 convs, bicubic 2x upsampling of the
  stride-32 stage, sum, neck).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import LayerNorm2d, PatchEmbed
from timm.models.tiny_vit import ConvNorm, MBConv, TinyVitBlock
from timm.models.vision_transformer_sam import Block as SamBlock

__all__ = ["ImageEncoderViT", "TinyViT", "BackboneNeckEncoder", "sam_neck"]


def sam_neck(in_chans: int, out_chans: int = 256) -> nn.Sequential:
    """SAM's neck: 1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d (no conv biases, eps 1e-6)."""
    return nn.Sequential(
        nn.Conv2d(in_chans, out_chans, 1, bias=False),
        LayerNorm2d(out_chans, eps=1e-6),
        nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False),
        LayerNorm2d(out_chans, eps=1e-6),
    )


class ImageEncoderViT(nn.Module):
    """SAM's plain ViT with windowed attention, global attention at ``global_attn_indexes``,
    decomposed relative positions, an absolute position embedding on the patch grid and the neck."""

    def __init__(
        self,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        out_chans: int = 256,
        window_size: int = 14,
        global_attn_indexes: Sequence[int] = (2, 5, 8, 11),
    ):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of the patch size {patch_size}")
        self.img_size = img_size
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim,
            flatten=False, output_fmt="NHWC", strict_img_size=False,
        )
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.ModuleList(
            SamBlock(
                dim=embed_dim,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=True,
                norm_layer=norm,
                act_layer=nn.GELU,
                use_rel_pos=True,
                window_size=0 if i in global_attn_indexes else window_size,
                input_size=(grid, grid),
            )
            for i in range(depth)
        )
        self.neck = sam_neck(embed_dim, out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.neck(x.permute(0, 3, 1, 2))


class TinyViTPatchEmbed(nn.Module):
    """Two stride-2 3x3 conv-BN with GELU between (``seq.0``, ``seq.2``)."""

    def __init__(self, in_chans: int, embed_dim: int):
        super().__init__()
        self.seq = nn.Sequential(ConvNorm(in_chans, embed_dim // 2, 3, 2, 1), nn.GELU(), ConvNorm(embed_dim // 2, embed_dim, 3, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class PatchMerging(nn.Module):
    """1x1 conv-BN, GELU, depthwise 3x3 conv-BN (``stride`` 2, or 1 for MobileSAM's last merge),
    GELU, 1x1 conv-BN; (B, C, H, W) in and out."""

    def __init__(self, dim: int, out_dim: int, stride: int = 2):
        super().__init__()
        self.act = nn.GELU()
        self.conv1 = ConvNorm(dim, out_dim, 1, 1, 0)
        self.conv2 = ConvNorm(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = ConvNorm(out_dim, out_dim, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.act(self.conv2(self.act(self.conv1(x)))))


class ConvLayer(nn.Module):
    """TinyViT's first stage: MBConv blocks, then patch merging; (B, C, H, W) in and out."""

    def __init__(self, dim: int, depth: int, out_dim: int, expand_ratio: float = 4.0, merge_stride: int | None = 2):
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, dim, expand_ratio, nn.GELU, 0.0) for _ in range(depth))
        self.downsample = PatchMerging(dim, out_dim, merge_stride) if merge_stride else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return x if self.downsample is None else self.downsample(x)


class BasicLayer(nn.Module):
    """A TinyViT attention stage: window-attention blocks (timm's ``TinyVitBlock``, channels
    last inside), then patch merging; (B, C, H, W) in and out."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        out_dim: int,
        mlp_ratio: float = 4.0,
        local_conv_size: int = 3,
        merge_stride: int | None = 2,
    ):
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyVitBlock(
                dim=dim, num_heads=num_heads, window_size=window_size, mlp_ratio=mlp_ratio, local_conv_size=local_conv_size, act_layer=nn.GELU
            )
            for _ in range(depth)
        )
        for blk in self.blocks:
            # 49-token windows with a float bias: scaled_dot_product_attention's CPU path adds
            # mask bookkeeping (all / where) that made the encoder ~6 % slower than the authors'
            # plain softmax(q k^T + bias) v, which timm's unfused branch computes the same way
            blk.attn.fused_attn = False
        self.downsample = PatchMerging(dim, out_dim, merge_stride) if merge_stride else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        for blk in self.blocks:
            x = blk(x)
        x = x.permute(0, 3, 1, 2)
        return x if self.downsample is None else self.downsample(x)


class TinyViT(nn.Module):
    """MobileSAM's TinyViT image encoder (TinyViT-5M by default) with SAM's neck.

    Strides: 4 (patch embedding), 2, 2, then 1 for the last merge (MobileSAM's change), so a
    ``img_size`` input gives a 256 x ``img_size / 16`` x ``img_size / 16`` embedding.
    """

    def __init__(
        self,
        img_size: int = 1024,
        in_chans: int = 3,
        embed_dims: Sequence[int] = (64, 128, 160, 320),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (2, 4, 5, 10),
        window_sizes: Sequence[int] = (7, 7, 14, 7),
        mlp_ratio: float = 4.0,
        mbconv_expand_ratio: float = 4.0,
        local_conv_size: int = 3,
        out_chans: int = 256,
    ):
        super().__init__()
        if img_size % 16:
            raise ValueError(f"img_size {img_size} is not a multiple of 16")
        n = len(depths)
        if not (len(embed_dims) == len(num_heads) == len(window_sizes) == n == 4):
            raise ValueError("TinyViT has 4 stages: embed_dims, depths, num_heads and window_sizes need 4 entries each")
        self.img_size = img_size
        self.patch_embed = TinyViTPatchEmbed(in_chans, embed_dims[0])
        self.layers = nn.ModuleList()
        for i in range(n):
            out_dim = embed_dims[min(i + 1, n - 1)]
            # stride-2 merges after every stage but the last two; MobileSAM's last merge keeps the grid
            merge = None if i == n - 1 else (1 if i == n - 2 else 2)
            if i == 0:
                layer = ConvLayer(embed_dims[0], depths[0], out_dim, mbconv_expand_ratio, merge)
            else:
                layer = BasicLayer(embed_dims[i], depths[i], num_heads[i], window_sizes[i], out_dim, mlp_ratio, local_conv_size, merge)
            self.layers.append(layer)
        self.neck = sam_neck(embed_dims[-1], out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.neck(x)


class BackboneNeckEncoder(nn.Module):
    """A ``features_only`` backbone, 1x1 projections of its stages at ``reduction >= 16`` to
    ``out_chans``, resized to the stride-16 grid (bicubic) and summed, then SAM's neck."""

    def __init__(self, backbone: nn.Module, img_size: int = 1024, out_chans: int = 256, upsample_mode: str = "bicubic"):
        super().__init__()
        if img_size % 16:
            raise ValueError(f"img_size {img_size} is not a multiple of 16")
        info = backbone.feature_info
        chans, reductions = list(info.channels()), list(info.reduction())
        self.use = [i for i, r in enumerate(reductions) if r >= 16]
        if not self.use:
            raise ValueError(f"the backbone has no stage at stride 16 or coarser (reductions {reductions})")
        self.img_size = img_size
        self.upsample_mode = upsample_mode
        self.backbone = backbone
        self.lateral = nn.ModuleList(nn.Conv2d(chans[i], out_chans, 1, bias=False) for i in self.use)
        self.neck = sam_neck(out_chans, out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        grid = (x.shape[-2] // 16, x.shape[-1] // 16)
        y: torch.Tensor | None = None
        for proj, i in zip(self.lateral, self.use):
            f = proj(feats[i])
            if f.shape[-2:] != grid:
                f = F.interpolate(f, size=grid, mode=self.upsample_mode, align_corners=False)
            y = f if y is None else y + f
        return self.neck(y)


def build_feature_backbone(name: str, **kwargs: Any) -> nn.Module:
    """A zoo backbone (``zoo.create(name, features_only=True)``) or else a timm one, all stages."""
    from zoo.registry import is_model

    if is_model(name):
        import zoo

        return zoo.create(name, features_only=True, **kwargs)
    import timm

    return timm.create_model(name, pretrained=False, features_only=True, **kwargs)
