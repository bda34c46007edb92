"""CrossFormer: A Versatile Vision Transformer Hinging on Cross-scale Attention (Wang et al.,
ICLR 2022, arXiv 2108.00154).

Layout and numerics follow the authors' code, cheerss/CrossFormer (MIT licence, Copyright 2021
cheerss): ``models/crossformer.py`` (classification) and ``models/crossformer_backbone.py`` (the
same network for detection, which takes any input size). Module names are theirs
(``patch_embed.projs.N``, ``layers.S.blocks.B.{norm1,attn.{qkv,proj,pos.*},norm2,mlp.fc1/fc2}``,
``layers.S.downsample.{norm,reductions.N}``, ``norm``, ``head``), so their ImageNet checkpoints
``crossformer-t.pth`` / ``crossformer-s.pth`` load through
:func:`zoo.weights.filters_crossformer.filter_crossformer` (which drops the index buffers the
classification code stores).

The three parts of the paper:

- CEL (cross-scale embedding layer): several convolutions of different kernel sizes and one
  stride, concatenated along channels (``PatchEmbed``: kernels 4/8/16/32, stride 4;
  ``PatchMerging``: kernels 2/4, stride 2; the larger kernels get fewer channels).
- LSDA (long/short distance attention): blocks alternate SDA (attention inside G x G windows of
  adjacent embeddings) and LDA (attention among embeddings sampled every I positions, I the
  stage's ``crs_interval``).
- DPB (dynamic position bias): a small MLP maps each relative offset (dy, dx) to one bias per
  head, so the bias exists for any group size.

Input sizes. The authors' classification model is built for one image size (224) and asserts it;
their detection backbone accepts any size by padding each block's grid at the bottom/right to a
multiple of the group size (SDA) or of the interval (LDA) and masking the padded keys with
-1e6; a stage whose grid is no larger than the group size uses one SDA group covering the
shorter side. This module does the latter for every size (from the input's shape, at every
forward; the authors' detection code caches the shrunk group size on the module). At 224 no
block pads and the grouping is the classification code's exactly: SDA windows of 7, LDA with
intervals 8/4/2 (= 56/7, 28/7, 14/7) in stages 1-3, and stage 4 (7 x 7) is one SDA group.

Features are kept channels-last (B, H, W, C) between blocks; ``forward_features`` returns the
final-normed (B, H, W, C) map, ``forward_intermediates`` NCHW maps taken after each stage's
blocks (before its patch merging), as the authors' detection backbone returns them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, trunc_normal_, use_fused_attn
from timm.models._features import feature_take_indices

from zoo.pretrained import PretrainedCfg
from zoo.registry import register_model
from zoo.weights.filters_crossformer import filter_crossformer

from .backbone import IMAGENET_BICUBIC_DATA_CFG, Backbone, build_backbone

__all__ = ["CrossFormer", "CrossFormerBlock", "DynamicPosBias", "LSDAttention", "PatchEmbed", "PatchMerging"]

_PAPER = "CrossFormer: A Versatile Vision Transformer Hinging on Cross-scale Attention"
_ARXIV = "2108.00154"
_SOURCE = "https://github.com/cheerss/CrossFormer"

# The authors' additive mask value for padded keys (crossformer_backbone.py: NEG_INF).
_NEG_INF = -1000000.0


def cel_dims(dim: int, kernels: Sequence[int]) -> list[int]:
    """Channels of each CEL convolution: halving per larger kernel, the last one as the one
    before it, so they sum to ``dim`` (64 with kernels 4/8/16/32 -> 32, 16, 8, 8)."""
    n = len(kernels)
    return [dim // 2 ** (i + 1) if i < n - 1 else dim // 2 ** i for i in range(n)]


class PatchEmbed(nn.Module):
    """The first CEL: ``len(patch_size)`` convolutions of stride ``patch_size[0]``, centred by
    padding ``(k - stride) // 2``, concatenated, then LayerNorm. (B, C, H, W) -> (B, H/4, W/4, D)."""

    def __init__(self, patch_size: Sequence[int] = (4, 8, 16, 32), in_chans: int = 3, embed_dim: int = 96,
                 norm_layer: type[nn.Module] | None = nn.LayerNorm):
        super().__init__()
        stride = patch_size[0]
        self.projs = nn.ModuleList(
            nn.Conv2d(in_chans, d, kernel_size=k, stride=stride, padding=(k - stride) // 2)
            for k, d in zip(patch_size, cel_dims(embed_dim, patch_size))
        )
        self.norm = norm_layer(embed_dim) if norm_layer is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([proj(x) for proj in self.projs], dim=1).permute(0, 2, 3, 1)
        return self.norm(x)


class PatchMerging(nn.Module):
    """The CEL between stages: LayerNorm, then ``len(patch_size)`` stride-2 convolutions to
    2 x ``dim`` channels in all, concatenated. (B, H, W, C) -> (B, H/2, W/2, 2C)."""

    def __init__(self, dim: int, patch_size: Sequence[int] = (2, 4), norm_layer: type[nn.Module] = nn.LayerNorm):
        super().__init__()
        self.norm = norm_layer(dim)
        self.reductions = nn.ModuleList(
            nn.Conv2d(dim, d, kernel_size=k, stride=2, padding=(k - 2) // 2)
            for k, d in zip(patch_size, cel_dims(2 * dim, patch_size))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x).permute(0, 3, 1, 2)
        return torch.cat([r(x) for r in self.reductions], dim=1).permute(0, 2, 3, 1)


class DynamicPosBias(nn.Module):
    """DPB: relative offsets (dy, dx) -> one bias per head, through Linear(2, d) and three
    (LayerNorm, ReLU, Linear) steps, d = ``dim // 4`` (the authors' non-residual form, the one
    their models use)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.pos_dim = dim // 4
        d = self.pos_dim
        self.pos_proj = nn.Linear(2, d)
        self.pos1 = nn.Sequential(nn.LayerNorm(d), nn.ReLU(inplace=True), nn.Linear(d, d))
        self.pos2 = nn.Sequential(nn.LayerNorm(d), nn.ReLU(inplace=True), nn.Linear(d, d))
        self.pos3 = nn.Sequential(nn.LayerNorm(d), nn.ReLU(inplace=True), nn.Linear(d, num_heads))

    def forward(self, biases: torch.Tensor) -> torch.Tensor:
        return self.pos3(self.pos2(self.pos1(self.pos_proj(biases))))


def relative_offsets(gh: int, gw: int, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The DPB inputs for a gh x gw group: every offset (dy, dx), dy in [1-gh, gh-1] and dx in
    [1-gw, gw-1], row-major, shape ((2gh-1)(2gw-1), 2) (the authors' ``biases``), and for each
    pair of group positions (row-major) the row of its offset in that table, shape (N, N)
    (their ``relative_position_index``)."""
    dy = torch.arange(1 - gh, gh, device=device)
    dx = torch.arange(1 - gw, gw, device=device)
    table = torch.stack(torch.meshgrid(dy, dx, indexing="ij")).flatten(1).t()
    coords = torch.stack(torch.meshgrid(torch.arange(gh, device=device), torch.arange(gw, device=device), indexing="ij")).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :]
    index = (rel[0] + gh - 1) * (2 * gw - 1) + (rel[1] + gw - 1)
    return table, index


class LSDAttention(nn.Module):
    """Multi-head self-attention inside groups of embeddings, with DPB. The authors' ``Attention``
    (names ``qkv``, ``proj``, ``pos``); the group shape is passed at call time."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, qk_scale: float | None = None,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = qk_scale or head_dim ** -0.5
        self.fused_attn = use_fused_attn()
        self.pos = DynamicPosBias(dim // 4, num_heads)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def position_bias(self, gh: int, gw: int) -> torch.Tensor:
        """(heads, gh*gw, gh*gw) bias for a gh x gw group."""
        weight = self.pos.pos_proj.weight
        table, index = relative_offsets(gh, gw, weight.device)
        pos = self.pos(table.to(weight.dtype))
        n = gh * gw
        return pos[index.reshape(-1)].reshape(n, n, -1).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, gh: int, gw: int, key_padding: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B * nG, gh*gw, C), groups in the order the block made them (batch outer);
        key_padding: (nG, gh*gw) bool, True where the key is padding, or None."""
        b_, n, c = x.shape
        qkv = self.qkv(x).reshape(b_, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        bias = self.position_bias(gh, gw).unsqueeze(0)  # 1, nH, N, N
        if key_padding is not None:
            ng = key_padding.shape[0]
            neg = max(_NEG_INF, torch.finfo(bias.dtype).min)
            mask = torch.zeros(key_padding.shape, dtype=bias.dtype, device=bias.device).masked_fill(key_padding, neg)
            bias = (bias + mask[:, None, None, :]).unsqueeze(0).expand(b_ // ng, -1, -1, -1, -1).reshape(b_, self.num_heads, n, n)
        if self.fused_attn:
            x = F.scaled_dot_product_attention(
                q, k, v, attn_mask=bias, dropout_p=self.attn_drop.p if self.training else 0.0, scale=self.scale
            )
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1) + bias
            attn = self.attn_drop(attn.softmax(dim=-1))
            x = attn @ v
        x = x.transpose(1, 2).reshape(b_, n, c)
        return self.proj_drop(self.proj(x))


class CrossFormerBlock(nn.Module):
    """One CrossFormer block on a (B, H, W, C) map: LayerNorm, SDA (``lsda_flag`` 0) or LDA (1),
    residual; LayerNorm, MLP, residual."""

    def __init__(self, dim: int, num_heads: int, group_size: int = 7, interval: int = 8, lsda_flag: int = 0,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, qk_scale: float | None = None, drop: float = 0.0,
                 attn_drop: float = 0.0, drop_path: float = 0.0, act_layer: type[nn.Module] = nn.GELU,
                 norm_layer: type[nn.Module] = nn.LayerNorm):
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.group_size = group_size
        self.interval = interval
        self.lsda_flag = lsda_flag
        self.norm1 = norm_layer(dim)
        self.attn = LSDAttention(dim, num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale, attn_drop=attn_drop, proj_drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer, drop=drop)

    def extra_repr(self) -> str:
        kind = "LDA" if self.lsda_flag else "SDA"
        return f"dim={self.dim}, num_heads={self.num_heads}, {kind}, group_size={self.group_size}, interval={self.interval}"

    def lsda(self, x: torch.Tensor) -> torch.Tensor:
        """Group, attend, ungroup: (B, H, W, C) -> (B, H, W, C). Shapes decide everything here
        (Python ints), so torch.compile sees no data-dependent branch."""
        b, h, w, c = x.shape
        sda = self.lsda_flag == 0 or min(h, w) <= self.group_size
        g = min(self.group_size, h, w)
        i = self.interval
        div = g if sda else i
        pad_b, pad_r = (-h) % div, (-w) % div
        if pad_b or pad_r:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = h + pad_b, w + pad_r
        if sda:  # windows of g x g adjacent embeddings
            gh = gw = g
            shape, perm = (hp // g, g, wp // g, g), (0, 1, 3, 2, 4, 5)
        else:  # embeddings every i positions: group (r, s) holds rows r, r+i, ... and cols s, s+i, ...
            gh, gw = hp // i, wp // i
            shape, perm = (gh, i, gw, i), (0, 2, 4, 1, 3, 5)
        n = gh * gw
        x = x.reshape(b, *shape, c).permute(*perm).reshape(-1, n, c)
        key_padding = None
        if pad_b or pad_r:
            rows = torch.arange(hp, device=x.device) >= h
            cols = torch.arange(wp, device=x.device) >= w
            pad = (rows[:, None] | cols[None, :]).reshape(1, *shape, 1).permute(*perm).reshape(-1, n)
            key_padding = pad
        x = self.attn(x, gh, gw, key_padding)
        # ungroup: the inverse permutation of the grouping
        grouped = [shape[p - 1] for p in perm[1:5]]
        inv = [0] + [perm.index(k) for k in range(1, 5)] + [5]
        x = x.reshape(b, *grouped, c).permute(*inv).reshape(b, hp, wp, c)
        if pad_b or pad_r:
            x = x[:, :h, :w, :]
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.lsda(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class Stage(nn.Module):
    """``depth`` blocks alternating SDA / LDA, then (all stages but the last) a CEL patch merging."""

    def __init__(self, dim: int, depth: int, num_heads: int, group_size: int, interval: int, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, qk_scale: float | None = None, drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: Sequence[float] = (), norm_layer: type[nn.Module] = nn.LayerNorm,
                 merge_size: Sequence[int] | None = None):
        super().__init__()
        self.dim = dim
        dpr = list(drop_path) or [0.0] * depth
        self.blocks = nn.Sequential(*[
            CrossFormerBlock(dim, num_heads, group_size=group_size, interval=interval, lsda_flag=j % 2,
                             mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop,
                             attn_drop=attn_drop, drop_path=dpr[j], norm_layer=norm_layer)
            for j in range(depth)
        ])
        self.downsample = PatchMerging(dim, merge_size, norm_layer) if merge_size is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(x)
        return self.downsample(x) if self.downsample is not None else x


class CrossFormer(Backbone):
    """CrossFormer for ImageNet classification (the authors' ``CrossFormer`` with ``ape=False``)."""

    def __init__(
        self,
        patch_size: Sequence[int] = (4, 8, 16, 32),
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        group_size: Sequence[int] = (7, 7, 7, 7),
        crs_interval: Sequence[int] = (8, 4, 2, 1),
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        patch_norm: bool = True,
        merge_size: Sequence[Sequence[int]] = ((2, 4), (2, 4), (2, 4)),
        global_pool: str = "avg",
    ):
        super().__init__()
        n = len(depths)
        if global_pool not in ("avg", ""):
            raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = int(embed_dim * 2 ** (n - 1))
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, nn.LayerNorm if patch_norm else None)
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.layers = nn.ModuleList()
        self.feature_info: list[dict[str, Any]] = []
        for s in range(n):
            dim = int(embed_dim * 2 ** s)
            self.layers.append(Stage(
                dim, depths[s], num_heads[s], group_size[s], crs_interval[s], mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop_rate, attn_drop=attn_drop_rate,
                drop_path=dpr[sum(depths[:s]):sum(depths[:s + 1])],
                merge_size=merge_size[s] if s < n - 1 else None,
            ))
            self.feature_info.append(dict(num_chs=dim, reduction=patch_size[0] * 2 ** s, module=f"layers.{s}"))
        self.norm = nn.LayerNorm(self.num_features)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None:
            if global_pool not in ("avg", ""):
                raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
            self.global_pool = global_pool
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pos_drop(self.patch_embed(x))
        for stage in self.layers:
            x = stage(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean(dim=(1, 2))
        return x if pre_logits else self.head(x)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's feature API: NCHW maps after each selected stage's blocks (before its patch
        merging); ``norm`` applies the final LayerNorm to the last stage's map."""
        if output_fmt != "NCHW":
            raise ValueError("output_fmt must be 'NCHW'")
        self.check_input(x)
        n = len(self.layers)
        take, max_index = feature_take_indices(n, indices)
        intermediates = []
        x = self.pos_drop(self.patch_embed(x))
        last = max_index if stop_early or intermediates_only else n - 1
        for s, stage in enumerate(self.layers[: last + 1]):
            x = stage.blocks(x)
            if s in take:
                y = self.norm(x) if norm and s == n - 1 else x
                intermediates.append(y.permute(0, 3, 1, 2).contiguous())
            if stage.downsample is not None and s < last:
                x = stage.downsample(x)
        if intermediates_only:
            return intermediates
        if last == n - 1:
            x = self.norm(x)
        return x, intermediates

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True) -> list[int]:
        """Drop the stages (and norm / head) the selected intermediates do not need."""
        take, max_index = feature_take_indices(len(self.layers), indices)
        self.layers = self.layers[: max_index + 1]
        self.layers[-1].downsample = None
        if prune_norm or max_index < len(self.feature_info) - 1:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take


# ------------------------------------------------------------------------------------ registry

# Eval transform of the authors' data/build.py (Swin's): resize the short side to 256/224 of the
# crop, bicubic, centre crop 224, timm's ImageNet mean/std.
_DATA_CFG = IMAGENET_BICUBIC_DATA_CFG

# The README's download links: Google Drive files (also on Baidu: T key nkju, S key fgqj).
_DRIVE_IDS = {"t": "1YSkU9enn-ITyrbxLH13zNcBYvWSEidfq", "s": "1RAkigsgr33va0RZ85S2Shs2BhXYcS6U8"}


def _cfg(variant: str, top1: float) -> PretrainedCfg:
    name = f"crossformer-{variant}.pth"
    return PretrainedCfg(
        tag="in1k",
        url=f"https://drive.google.com/uc?export=download&id={_DRIVE_IDS[variant]}",
        filename=name,
        sha256=None,
        verified=False,
        license="MIT",
        filter_fn=filter_crossformer,
        metrics={"imagenet_top1": top1},
        data_cfg=dict(_DATA_CFG),
        description=(
            f"The authors' ImageNet-1k checkpoint {name} (300 epochs at 224), from the Google Drive "
            f"link in {_SOURCE} (README, 'Image Classification'); top-1 as the README and paper state. "
            "Not hashed here."
        ),
    )


_COMMON = dict(
    task="classification",
    family="crossformer",
    paper=_PAPER,
    arxiv=_ARXIV,
    license="MIT",
    source=_SOURCE,
    input_size=(3, 224, 224),
    input_range=None,
    data_cfg=_DATA_CFG,
    test_size=(3, 64, 64),
)


def _crossformer(features_only: bool = False, out_indices: Sequence[int] | int | None = None, **kwargs: Any) -> nn.Module:
    model = CrossFormer(**kwargs)
    return build_backbone(model, features_only=features_only, out_indices=out_indices, in_chans=model.in_chans)


@register_model(**_COMMON, params=27_776_794, gmacs=2.857428, pretrained_cfgs=[_cfg("t", 81.5)])
def crossformer_t(features_only: bool = False, out_indices: Sequence[int] | int | None = None, **kwargs: Any) -> nn.Module:
    """CrossFormer-T: dim 64, depths 1/1/8/6, heads 2/4/8/16 (configs/tiny_patch4_group7_224.yaml)."""
    args = dict(embed_dim=64, depths=(1, 1, 8, 6), num_heads=(2, 4, 8, 16), drop_path_rate=0.1)
    return _crossformer(features_only, out_indices, **{**args, **kwargs})


@register_model(**_COMMON, params=30_657_394, gmacs=4.906064, pretrained_cfgs=[_cfg("s", 82.5)])
def crossformer_s(features_only: bool = False, out_indices: Sequence[int] | int | None = None, **kwargs: Any) -> nn.Module:
    """CrossFormer-S: dim 96, depths 2/2/6/2, heads 3/6/12/24 (configs/small_patch4_group7_224.yaml)."""
    args = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.2)
    return _crossformer(features_only, out_indices, **{**args, **kwargs})
