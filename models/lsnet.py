"""LSNet: See Large, Focus Small (Wang et al., CVPR 2025; arXiv 2503.23135).

A four-stage hierarchy (strides 8, 16, 32, 64) of blocks that alternate a token mixer and a
ReLU FFN, both residual. Even blocks mix with a RepVGG-style depth-wise conv (3x3 + 1x1 +
identity) followed by squeeze-excite; odd blocks mix with *LS convolution* in stages 1-3 and
with LeViT-style attention (a depth-wise conv on the queries, learned relative-position biases)
in stage 4. LS convolution (:class:`LSConv`) is the paper's "see large, focus small":

- large-kernel perception (:class:`LKP`): 1x1 conv to C/2 -> 7x7 depth-wise conv -> 1x1 conv
  -> 1x1 conv to 9 * C/8 channels + GroupNorm, i.e. one 3x3 kernel per pixel for each of C/8
  channel groups, predicted from a large receptive field;
- small-kernel aggregation (SKA, :func:`zoo.models.ops.ska`): each channel is aggregated over
  its 3x3 neighbourhood with its group's per-pixel kernel (channel ``c`` uses group
  ``c % (C/8)``), then BatchNorm and a residual.

Layout, module names and numerics follow the authors' code, THU-MIG/lsnet ``model/lsnet.py``
and ``model/ska.py`` (licence: none confirmed here, see the card): the state-dict keys are
theirs (``patch_embed.{0,2,4}.{c,bn}``, ``blocksS.N.{mixer,se,ffn}``, ``head.{bn,l}``,
``head_dist``), so the README's ``lsnet_{t,s,b}[_distill].pth`` load through
:func:`zoo.weights.filters_lsnet.filter_lsnet`, which only strips training wrappers. The
SqueezeExcite is timm's, as in the authors' code; SKA runs the project's op (a PyTorch
reference, and Triton kernels on CUDA written here).

Differences from the authors' module:

- other input sizes: the authors' attention indexes its bias table with a fixed (N, N) index
  for the stage-4 map of a 224 px input (4 x 4), so any input that does not give a 4 x 4 map
  fails. Here the bias of a query/key pair is looked up by its offset ``(|dy|, |dx|)`` in the
  same table, clamped to the largest offset the table holds (3): at 4 x 4 this is exactly the
  authors' index (the ``attention_bias_idxs`` buffer, kept for their state dicts), smaller maps
  use the corresponding sub-table, larger ones clip distant offsets;
- the attention recomputes the bias gather every call instead of caching it in ``train(False)``
  (same values), and reshapes instead of ``view`` so channels-last inputs work;
- distillation head: in eval (and in training by default) the output is the mean of ``head``
  and ``head_dist``, as the authors' eval; their training-time tuple ``(head, head_dist)`` is
  returned after ``set_distilled_training(True)`` (timm's LeViT convention);
- ``forward_head`` / ``reset_classifier`` / ``forward_intermediates`` are timm's contract.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import DropPath, SqueezeExcite, trunc_normal_
from timm.models._features import feature_take_indices
from torch import nn

from zoo.pretrained import PretrainedCfg
from zoo.registry import register_model
from zoo.weights.filters_lsnet import filter_lsnet

from .backbone import IMAGENET_BICUBIC_DATA_CFG, Backbone, build_backbone
from .layers.reparam import fuse_conv_bn, fuse_kernel_bn
from .ops.ska import ska

__all__ = [
    "Attention",
    "BNLinear",
    "ConvBN",
    "FFN",
    "LKP",
    "LSConv",
    "LSNet",
    "LSNetBlock",
    "RepVGGDW",
    "Residual",
    "SKA",
    "attention_bias_index",
]


class ConvBN(nn.Sequential):
    """``c`` (conv, no bias) -> ``bn``: the authors' ``Conv2d_BN``; ``fuse()`` returns the
    equivalent ``nn.Conv2d`` (eval statistics)."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        ks: int = 1,
        stride: int = 1,
        pad: int = 0,
        dilation: int = 1,
        groups: int = 1,
        bn_weight_init: float = 1.0,
    ):
        super().__init__()
        self.add_module("c", nn.Conv2d(in_chs, out_chs, ks, stride, pad, dilation, groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(out_chs))
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.constant_(self.bn.bias, 0)

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        return fuse_conv_bn(self.c, self.bn)


class BNLinear(nn.Sequential):
    """``bn`` (BatchNorm1d) -> ``l`` (Linear): the authors' ``BN_Linear`` classifier; ``fuse()``
    folds the norm into the linear layer."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, std: float = 0.02):
        super().__init__()
        self.add_module("bn", nn.BatchNorm1d(in_features))
        self.add_module("l", nn.Linear(in_features, out_features, bias=bias))
        trunc_normal_(self.l.weight, std=std)
        if bias:
            nn.init.constant_(self.l.bias, 0)

    @torch.no_grad()
    def fuse(self) -> nn.Linear:
        bn, lin = self.bn, self.l
        scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        shift = bn.bias.double() - bn.running_mean.double() * scale
        weight = lin.weight.double()
        bias = weight @ shift + (lin.bias.double() if lin.bias is not None else 0.0)
        fused = nn.Linear(lin.in_features, lin.out_features, device=lin.weight.device, dtype=lin.weight.dtype)
        fused.weight.copy_((weight * scale[None, :]).to(lin.weight.dtype))
        fused.bias.copy_(bias.to(lin.weight.dtype))
        return fused


class Residual(nn.Module):
    """``x + m(x)``, with per-sample drop-path in training when ``drop > 0`` (the authors'
    ``Residual``; their networks use ``drop = 0``)."""

    def __init__(self, m: nn.Module, drop: float = 0.0):
        super().__init__()
        self.m = m
        self.drop_path = DropPath(drop) if drop > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.m(x))


class FFN(nn.Module):
    """1x1 ``pw1`` -> ReLU -> 1x1 ``pw2`` (its BN starts at zero)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.pw1 = ConvBN(dim, hidden)
        self.act = nn.ReLU()
        self.pw2 = ConvBN(hidden, dim, bn_weight_init=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw2(self.act(self.pw1(x)))


class RepVGGDW(nn.Module):
    """3x3 depth-wise ``conv`` + 1x1 depth-wise ``conv1`` + identity; ``fuse()`` folds the three
    into one 3x3 depth-wise conv."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv = ConvBN(dim, dim, 3, 1, 1, groups=dim)
        self.conv1 = ConvBN(dim, dim, 1, 1, 0, groups=dim)
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.conv1(x) + x

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        k3, b3 = fuse_kernel_bn(self.conv.c.weight, None, self.conv.bn)
        k1, b1 = fuse_kernel_bn(self.conv1.c.weight, None, self.conv1.bn)
        kernel = k3 + F.pad(k1, [1, 1, 1, 1])
        kernel[:, 0, 1, 1] += 1.0  # the identity: one input channel per group
        fused = fuse_conv_bn(self.conv.c, self.conv.bn)  # a conv of the right geometry
        fused.weight.copy_(kernel.to(fused.weight.dtype))
        fused.bias.copy_((b3 + b1).to(fused.bias.dtype))
        return fused


class LKP(nn.Module):
    """Large-kernel perception: predicts a ``sks x sks`` kernel per pixel for each of
    ``dim // groups`` channel groups -> (B, dim // groups, sks**2, H, W)."""

    def __init__(self, dim: int, lks: int = 7, sks: int = 3, groups: int = 8):
        super().__init__()
        half = dim // 2
        self.cv1 = ConvBN(dim, half)
        self.act = nn.ReLU()
        self.cv2 = ConvBN(half, half, ks=lks, pad=(lks - 1) // 2, groups=half)
        self.cv3 = ConvBN(half, half)
        self.cv4 = nn.Conv2d(half, sks**2 * dim // groups, kernel_size=1)
        self.norm = nn.GroupNorm(num_groups=dim // groups, num_channels=sks**2 * dim // groups)
        self.sks = sks
        self.groups = groups
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.cv3(self.cv2(self.act(self.cv1(x)))))
        w = self.norm(self.cv4(x))
        b, _, h, width = w.shape
        return w.reshape(b, self.dim // self.groups, self.sks**2, h, width)


class SKA(nn.Module):
    """Small-kernel aggregation (no parameters): :func:`zoo.models.ops.ska`, dispatched to the
    Triton kernels on CUDA and to the PyTorch reference elsewhere (and under tracing)."""

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return ska(x, w)


class LSConv(nn.Module):
    """LS convolution: ``bn(ska(x, lkp(x))) + x``."""

    def __init__(self, dim: int):
        super().__init__()
        self.lkp = LKP(dim, lks=7, sks=3, groups=8)
        self.ska = SKA()
        self.bn = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.ska(x, self.lkp(x))) + x


def attention_bias_index(h: int, w: int, resolution: int, device: torch.device | None = None) -> torch.Tensor:
    """(h*w, h*w) indices into a ``resolution x resolution`` table of relative-offset biases:
    pair (i, j) reads ``min(|dy|, r-1) * r + min(|dx|, r-1)``. For ``h = w = resolution`` this is
    the authors' enumeration (offsets numbered in first-seen order, which is this row-major order)."""
    ys = torch.arange(h, device=device).repeat_interleave(w)
    xs = torch.arange(w, device=device).repeat(h)
    dy = (ys[:, None] - ys[None, :]).abs().clamp(max=resolution - 1)
    dx = (xs[:, None] - xs[None, :]).abs().clamp(max=resolution - 1)
    return dy * resolution + dx


class Attention(nn.Module):
    """Multi-head attention with a depth-wise conv on the queries and learned biases per
    relative offset (LeViT / EfficientViT style), the authors' ``Attention``."""

    def __init__(self, dim: int, key_dim: int, num_heads: int = 8, attn_ratio: float = 4.0, resolution: int = 14):
        super().__init__()
        self.num_heads = num_heads
        self.scale = key_dim**-0.5
        self.key_dim = key_dim
        self.nh_kd = nh_kd = key_dim * num_heads
        self.d = int(attn_ratio * key_dim)
        self.dh = self.d * num_heads
        self.attn_ratio = attn_ratio
        self.resolution = resolution
        self.qkv = ConvBN(dim, self.dh + nh_kd * 2, ks=1)
        self.proj = nn.Sequential(nn.ReLU(), ConvBN(self.dh, dim, bn_weight_init=0.0))
        self.dw = ConvBN(nh_kd, nh_kd, 3, 1, 1, groups=nh_kd)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, resolution * resolution))
        self.register_buffer("attention_bias_idxs", attention_bias_index(resolution, resolution, resolution))

    def _bias(self, h: int, w: int) -> torch.Tensor:
        if h == w == self.resolution:
            idx = self.attention_bias_idxs
        else:
            idx = attention_bias_index(h, w, self.resolution, self.attention_biases.device)
        return self.attention_biases[:, idx]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        N = H * W
        q, k, v = self.qkv(x).split([self.nh_kd, self.nh_kd, self.dh], dim=1)
        q = self.dw(q)
        q = q.reshape(B, self.num_heads, -1, N)
        k = k.reshape(B, self.num_heads, -1, N)
        v = v.reshape(B, self.num_heads, -1, N)
        attn = (q.transpose(-2, -1) @ k) * self.scale + self._bias(H, W)
        attn = attn.softmax(dim=-1)
        x = (v @ attn.transpose(-2, -1)).reshape(B, -1, H, W)
        return self.proj(x)


class LSNetBlock(nn.Module):
    """``ffn(se(mixer(x)))``, the authors' ``Block``: even ``depth`` -> RepVGGDW + SE; odd ->
    attention (stage index 3) or LS convolution."""

    def __init__(
        self,
        dim: int,
        key_dim: int = 16,
        num_heads: int = 8,
        attn_ratio: float = 4.0,
        resolution: int = 14,
        stage: int = -1,
        depth: int = -1,
    ):
        super().__init__()
        if depth % 2 == 0:
            self.mixer = RepVGGDW(dim)
            self.se = SqueezeExcite(dim, 0.25)
        else:
            self.se = nn.Identity()
            if stage == 3:
                self.mixer = Residual(Attention(dim, key_dim, num_heads, attn_ratio, resolution=resolution))
            else:
                self.mixer = LSConv(dim)
        self.ffn = Residual(FFN(dim, int(dim * 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn(self.se(self.mixer(x)))


class LSNet(Backbone):
    """LSNet classifier / backbone (timm contract). ``patch_embed`` (three stride-2 3x3 convs)
    then ``blocks1``..``blocks4`` at strides 8, 16, 32 and 64; ``blocksS`` (S > 1) opens with
    the authors' downsampling (stride-2 3x3 depth-wise ``ConvBN`` + 1x1 ``ConvBN``), then its
    blocks. ``blocks1`` may be empty (LSNet-T)."""

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 8,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: Sequence[int] = (64, 128, 192, 256),
        key_dim: Sequence[int] = (16, 16, 16, 16),
        depth: Sequence[int] = (1, 2, 3, 4),
        num_heads: Sequence[int] = (4, 4, 4, 4),
        distillation: bool = False,
        global_pool: str = "avg",
    ):
        super().__init__()
        n = len(embed_dim)
        if not (len(key_dim) == len(depth) == len(num_heads) == n == 4):
            raise ValueError("LSNet has four stages: embed_dim, key_dim, depth and num_heads need four entries each")
        self._check_pool(global_pool)
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.distillation = distillation
        self.distilled_training = False
        e0 = embed_dim[0]
        self.patch_embed = nn.Sequential(
            ConvBN(in_chans, e0 // 4, 3, 2, 1),
            nn.ReLU(),
            ConvBN(e0 // 4, e0 // 2, 3, 2, 1),
            nn.ReLU(),
            ConvBN(e0 // 2, e0, 3, 2, 1),
        )
        resolution = img_size // patch_size
        attn_ratio = [embed_dim[i] / (key_dim[i] * num_heads[i]) for i in range(n)]
        stages = [nn.Sequential() for _ in range(n)]
        self.blocks1, self.blocks2, self.blocks3, self.blocks4 = stages
        self.feature_info: list[dict[str, Any]] = []
        for i in range(n):
            for d in range(depth[i]):
                stages[i].append(
                    LSNetBlock(embed_dim[i], key_dim[i], num_heads[i], attn_ratio[i], resolution, stage=i, depth=d)
                )
            self.feature_info.append(dict(num_chs=embed_dim[i], reduction=patch_size * 2**i, module=f"blocks{i + 1}"))
            if i < n - 1:
                nxt = stages[i + 1]
                nxt.append(ConvBN(embed_dim[i], embed_dim[i], ks=3, stride=2, pad=1, groups=embed_dim[i]))
                nxt.append(ConvBN(embed_dim[i], embed_dim[i + 1], ks=1, stride=1, pad=0))
                resolution = (resolution - 1) // 2 + 1
        self.num_stages = n
        self.num_features = self.head_hidden_size = embed_dim[-1]
        self.head = BNLinear(embed_dim[-1], num_classes) if num_classes > 0 else nn.Identity()
        if distillation:
            self.head_dist = BNLinear(embed_dim[-1], num_classes) if num_classes > 0 else nn.Identity()

    @staticmethod
    def _check_pool(global_pool: str) -> None:
        if global_pool != "avg":
            raise ValueError(f"LSNet pools by global average only (global_pool='avg'), got {global_pool!r}")

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {k for k in self.state_dict() if "attention_biases" in k}

    @torch.jit.ignore
    def set_distilled_training(self, enable: bool = True) -> None:
        """Return ``(head, head_dist)`` logits in training (the authors' distillation recipe)."""
        self.distilled_training = enable

    def _stages(self) -> list[nn.Sequential]:
        return [self.blocks1, self.blocks2, self.blocks3, self.blocks4][: self.num_stages]

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None:
            self._check_pool(global_pool)
        self.num_classes = num_classes
        self.head = BNLinear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if self.distillation:
            self.head_dist = BNLinear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for stage in self._stages():
            x = stage(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False):
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        if pre_logits:
            return x
        if not self.distillation:
            return self.head(x)
        out, out_dist = self.head(x), self.head_dist(x)
        if self.distilled_training and self.training and not torch.jit.is_scripting():
            return out, out_dist
        return (out + out_dist) / 2

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's feature API: the outputs of the stages in ``indices`` (LSNet has no final
        norm, so ``norm`` changes nothing)."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(self.num_stages, indices)
        stages = self._stages()
        if stop_early:
            stages = stages[: max_index + 1]
        intermediates = []
        x = self.patch_embed(x)
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
        self,
        indices: int | list[int] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> list[int]:
        """Drop the stages after the last one in ``indices`` (and the head) for feature
        extraction; returns the absolute indices kept."""
        take_indices, max_index = feature_take_indices(self.num_stages, indices)
        for i in range(max_index + 1, self.num_stages):
            setattr(self, f"blocks{i + 1}", nn.Sequential())
        if max_index < self.num_stages - 1:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
            prune_head = True
        if prune_head:
            self.reset_classifier(0)
        return take_indices


# --- registry -----------------------------------------------------------------------------------

_PAPER = "LSNet: See Large, Focus Small"
_ARXIV = "2503.23135"
_SOURCE = "https://github.com/THU-MIG/lsnet"
_LICENSE = "unspecified (no licence file confirmed for THU-MIG/lsnet here)"
_HF_REPO = "jameslahm/lsnet"  # the README's checkpoint links point at this Hugging Face repo

# The authors' eval transform (DeiT / EfficientViT build_transform, which their main.py uses):
# Resize(int(256 / 224 * 224), bicubic) + CenterCrop(224), timm's IMAGENET_DEFAULT_MEAN / STD.
_DATA_CFG = IMAGENET_BICUBIC_DATA_CFG


def _cfg(variant: str, top1: float, distill: bool) -> PretrainedCfg:
    file = f"lsnet_{variant}{'_distill' if distill else ''}.pth"
    how = "trained with hard distillation (DeiT recipe), distillation head averaged in" if distill else "trained"
    return PretrainedCfg(
        tag="in1k_distill" if distill else "in1k",
        hf_hub_id=_HF_REPO,
        hf_filename=file,
        url=f"https://huggingface.co/{_HF_REPO}/resolve/main/{file}",
        filename=file,
        sha256=None,
        verified=False,
        license=_LICENSE,
        filter_fn=filter_lsnet,
        metrics={"imagenet_top1": top1},
        model_args={"distillation": True} if distill else {},
        description=f"Authors' ImageNet-1k weights, 224 px, {how} ({file}, README table)",
    )


_COMMON = dict(
    task="classification",
    family="lsnet",
    paper=_PAPER,
    arxiv=_ARXIV,
    license=_LICENSE,
    source=_SOURCE,
    input_size=(3, 224, 224),
    input_range=None,
    data_cfg=_DATA_CFG,
    test_size=(3, 64, 64),
)


def _lsnet(features_only: bool, out_indices: Sequence[int] | int | None, config: dict[str, Any], kwargs: dict[str, Any]):
    model = LSNet(**{"img_size": 224, "patch_size": 8, "num_heads": (3, 3, 3, 4), **config, **kwargs})
    return build_backbone(model, features_only=features_only, out_indices=out_indices, in_chans=model.in_chans)


@register_model(
    **_COMMON,
    params=11_409_832,
    gmacs=0.315147392,
    pretrained_cfgs=[_cfg("t", 74.9, False), _cfg("t", 76.1, True)],
    description="LSNet-T: LS convolution backbone, 11.4M params (the authors' lsnet_t)",
)
def lsnet_t(features_only: bool = False, out_indices: Sequence[int] | int | None = None, **kwargs: Any):
    """LSNet-T, the authors' ``lsnet_t``."""
    return _lsnet(features_only, out_indices, dict(embed_dim=(64, 128, 256, 384), depth=(0, 2, 8, 10)), kwargs)


@register_model(
    **_COMMON,
    params=16_146_304,
    gmacs=0.537069632,
    pretrained_cfgs=[_cfg("s", 77.8, False), _cfg("s", 79.0, True)],
    description="LSNet-S: LS convolution backbone, 16.1M params (the authors' lsnet_s)",
)
def lsnet_s(features_only: bool = False, out_indices: Sequence[int] | int | None = None, **kwargs: Any):
    """LSNet-S, the authors' ``lsnet_s``."""
    return _lsnet(features_only, out_indices, dict(embed_dim=(96, 192, 320, 448), depth=(1, 2, 8, 10)), kwargs)


@register_model(
    **_COMMON,
    params=23_313_608,
    gmacs=1.240906752,
    pretrained_cfgs=[_cfg("b", 80.3, False), _cfg("b", 81.6, True)],
    description="LSNet-B: LS convolution backbone, 23.2M params (the authors' lsnet_b)",
)
def lsnet_b(features_only: bool = False, out_indices: Sequence[int] | int | None = None, **kwargs: Any):
    """LSNet-B, the authors' ``lsnet_b``."""
    return _lsnet(features_only, out_indices, dict(embed_dim=(128, 256, 384, 512), depth=(4, 6, 8, 10)), kwargs)
