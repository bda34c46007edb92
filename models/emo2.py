"""EMOv2: Pushing 5M Vision Model Frontier (Zhang et al., 2024; arXiv 2412.06674), the extension
of EMO ("Rethinking Mobile Block for Efficient Attention-based Models", ICCV 2023).

The network is a four-stage hierarchy of i2RMB blocks (improved inverted residual mobile block,
``iiRMB`` in the code): a norm, one "efficient operator" (a 1x1 expansion conv in the CNN stages,
window attention whose values are the expanded features in the attention stages), a depth-wise
conv with a residual around it, a 1x1 projection and a layer-scaled residual. The attention of
EMOv2 is *hybrid*: each token attends inside its local (contiguous) ``window_size`` window and
inside its dilated ("remote") window, which strides over the whole map, and the two results are
summed. Feature maps that are not a multiple of the window are zero-padded on the right / bottom
first (the padded tokens take part in the attention, as in the authors' code) and cropped after.

Layout, module names and numerics follow the authors' code, zhangzjn/EMOv2
``model/lib_emo/emo2.py`` and ``basic_modules.py`` (licence: none confirmed here, see the card):
the state-dict keys are theirs (``stage0.N``, ``stageS.N.{norm, eops.0.{net, qk, v},
conv_local, proj, ls.gamma}``, ``norm.norm``, ``head``), so their published ``EMOv2_*_224.pth``
files load through :func:`zoo.weights.filters_emo.filter_emo2`, which only strips training
wrappers. Registered configurations are the authors' ``EMO2_{1M,2M,5M}_k5_hybrid`` factories,
the ones their README publishes ImageNet-1k weights for.

Differences from the authors' module, none numerical: ``forward_features`` includes the final
``norm`` (timm's convention; the authors apply it in ``forward``), the head is timm's contract
(``forward_head`` / ``reset_classifier`` / ``forward_intermediates``), ``drop_path_rate``
defaults to 0 (the authors' factories use 0.04036 / 0.05 / 0.05 for training) and activations
are not in-place.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange
from timm.layers import DropPath, LayerNorm2d, trunc_normal_
from timm.models._features import feature_take_indices
from torch import nn

from zoo.pretrained import PretrainedCfg
from zoo.registry import register_model
from zoo.weights.filters_emo import filter_emo2

from .backbone import IMAGENET_BICUBIC_DATA_CFG, Backbone, build_backbone

__all__ = ["EMO2", "IIRMB", "ConvNormAct", "HybridWindowAttention", "LayerNorm2dWrap", "LayerScale2d"]

_NORMS = ("bn_2d", "ln_2d", "none")
_ACTS = {"none": nn.Identity, "relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU}


class LayerNorm2dWrap(nn.Module):
    """Channel LayerNorm of an NCHW map, eps 1e-6, held as ``.norm`` (the authors' ``LayerNorm2d``
    keeps its ``nn.LayerNorm`` there, so the keys are ``<name>.norm.weight`` / ``.bias``)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.norm = LayerNorm2d(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


def _norm(kind: str, dim: int) -> nn.Module:
    if kind == "bn_2d":
        return nn.BatchNorm2d(dim, eps=1e-6)
    if kind == "ln_2d":
        return LayerNorm2dWrap(dim)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {_NORMS}, got {kind!r}")


def _act(kind: str) -> nn.Module:
    if kind not in _ACTS:
        raise ValueError(f"activation must be one of {tuple(_ACTS)}, got {kind!r}")
    return _ACTS[kind]()


class ConvNormAct(nn.Module):
    """``conv`` -> ``norm`` -> ``act`` with the authors' names and padding rule
    (``ceil(((k - 1) + 1 - stride) / 2)``); ``norm``/``act`` ``"none"`` hold no parameters."""

    def __init__(
        self,
        dim_in: int,
        dim_out: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
        norm_layer: str = "bn_2d",
        act_layer: str = "relu",
    ):
        super().__init__()
        padding = math.ceil((kernel_size - stride) / 2)
        self.conv = nn.Conv2d(dim_in, dim_out, kernel_size, stride, padding, groups=groups, bias=bias)
        self.norm = _norm(norm_layer, dim_out)
        self.act = _act(act_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class ConvOp(nn.Module):
    """The CNN "efficient operator": a conv (1x1 in every published config) + activation, as
    ``net`` (the authors' ``Conv``)."""

    def __init__(
        self,
        dim_in: int,
        dim_mid: int,
        kernel_size: int = 1,
        groups: int = 1,
        bias: bool = True,
        act_layer: str = "relu",
    ):
        super().__init__()
        self.net = ConvNormAct(
            dim_in, dim_mid, kernel_size, groups=groups, bias=bias, norm_layer="none", act_layer=act_layer
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LayerScale2d(nn.Module):
    """Per-channel scale with the authors' parameter shape ``(1, C, 1, 1)`` (timm's
    ``LayerScale2d`` stores ``(C,)``, which would not load their ``ls.gamma``)."""

    def __init__(self, dim: int, init_values: float = 1e-6):
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(1, dim, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


# window layouts: "close" = contiguous ws x ws windows, "remote" = dilated windows (stride n)
_TO_WIN = {
    "close": "b (g d) (n1 h) (n2 w) -> (b n1 n2) g (h w) d",
    "remote": "b (g d) (h n1) (w n2) -> (b n1 n2) g (h w) d",
}
_FROM_WIN = {
    "close": "(b n1 n2) g (h w) d -> b (g d) (n1 h) (n2 w)",
    "remote": "(b n1 n2) g (h w) d -> b (g d) (h n1) (w n2)",
}


class HybridWindowAttention(nn.Module):
    """Window multi-head self-attention over expanded values (the authors' ``EW_MHSA_*``).

    ``qk``: 1x1 conv to ``2 * dim_in`` (queries then keys, ``dim_head`` channels a head),
    ``v``: 1x1 conv + activation to ``dim_mid`` (the inverted-residual expansion, split evenly
    over the heads). ``modes`` lists the window layouts summed: ``("remote",)`` (EMO), or
    ``("remote", "close")`` (EMOv2's hybrid). ``window_size <= 0`` attends over the whole map.
    """

    def __init__(
        self,
        dim_in: int,
        dim_mid: int,
        dim_head: int = 32,
        window_size: int = 7,
        modes: Sequence[str] = ("remote", "close"),
        qkv_bias: bool = True,
        act_layer: str = "gelu",
        attn_drop: float = 0.0,
        v_group: bool = False,
    ):
        super().__init__()
        if dim_in % dim_head:
            raise ValueError(f"dim_in {dim_in} is not a multiple of dim_head {dim_head}")
        self.num_head = dim_in // dim_head
        if dim_mid % self.num_head:
            raise ValueError(f"dim_mid {dim_mid} does not split over {self.num_head} heads")
        if not modes or any(m not in _TO_WIN for m in modes):
            raise ValueError(f"modes must be a non-empty subset of {tuple(_TO_WIN)}, got {modes!r}")
        self.dim_head = dim_head
        self.window_size = window_size
        self.modes = tuple(modes)
        self.scale = dim_head**-0.5
        self.qk = ConvNormAct(dim_in, dim_in * 2, 1, bias=qkv_bias, norm_layer="none", act_layer="none")
        v_groups = self.num_head if v_group else 1
        self.v = ConvNormAct(
            dim_in, dim_mid, 1, groups=v_groups, bias=qkv_bias, norm_layer="none", act_layer=act_layer
        )
        self.attn_drop = nn.Dropout(attn_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        wh, ww = (H, W) if self.window_size <= 0 else (self.window_size, self.window_size)
        pad_b, pad_r = (wh - H % wh) % wh, (ww - W % ww) % ww
        if pad_b or pad_r:
            x = F.pad(x, (0, pad_r, 0, pad_b))
        n1, n2 = (H + pad_b) // wh, (W + pad_r) // ww
        q, k = self.qk(x).chunk(2, dim=1)
        v = self.v(x)
        out = None
        for mode in self.modes:
            to_win = _TO_WIN[mode]
            qw = rearrange(q, to_win, g=self.num_head, n1=n1, n2=n2)
            kw = rearrange(k, to_win, g=self.num_head, n1=n1, n2=n2)
            vw = rearrange(v, to_win, g=self.num_head, n1=n1, n2=n2)
            attn = self.attn_drop(((qw @ kw.transpose(-2, -1)) * self.scale).softmax(dim=-1))
            y = rearrange(attn @ vw, _FROM_WIN[mode], n1=n1, n2=n2, h=wh, w=ww)
            out = y if out is None else out + y
        if pad_b or pad_r:
            out = out[:, :, :H, :W]
        return out


class IIRMB(nn.Module):
    """i2RMB: norm -> efficient operator(s) -> depth-wise conv (+ skip) -> 1x1 projection ->
    layer scale (+ skip). ``eops`` codes, as the authors': 0 conv, 1 remote-window attention,
    2 close-window attention, 3 hybrid (remote + close) attention."""

    _EOP_MODES: ClassVar[dict[int, tuple[str, ...]]] = {1: ("remote",), 2: ("close",), 3: ("remote", "close")}

    def __init__(
        self,
        dim_in: int,
        dim_out: int,
        has_skip: bool = True,
        exp_ratio: float = 1.0,
        norm_layer: str = "bn_2d",
        act_layer: str = "relu",
        dw_ks: int = 3,
        stride: int = 1,
        dim_head: int = 64,
        window_size: int = 7,
        eops: Sequence[int] = (0,),
        conv_ks: int = 1,
        conv_groups: int = 1,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        drop: float = 0.0,
        drop_path: float = 0.0,
        v_group: bool = False,
        ls_value: float = 1e-6,
    ):
        super().__init__()
        self.norm = _norm(norm_layer, dim_in)
        dim_mid = int(dim_in * exp_ratio)
        self.has_skip = dim_in == dim_out and stride == 1 and has_skip
        ops: list[nn.Module] = []
        for code in eops:
            if code == 0:
                ops.append(ConvOp(dim_in, dim_mid, conv_ks, conv_groups, bias=qkv_bias, act_layer=act_layer))
            elif code in self._EOP_MODES:
                ops.append(
                    HybridWindowAttention(
                        dim_in, dim_mid, dim_head=dim_head, window_size=window_size, modes=self._EOP_MODES[code],
                        qkv_bias=qkv_bias, act_layer=act_layer, attn_drop=attn_drop, v_group=v_group,
                    )
                )
            else:
                raise ValueError(f"efficient operator codes are 0-3, got {code!r}")
        self.eops = nn.ModuleList(ops)
        if dw_ks > 0:
            self.conv_local = ConvNormAct(
                dim_mid, dim_mid, dw_ks, stride=stride, groups=dim_mid, norm_layer="bn_2d", act_layer="silu"
            )
        else:
            self.conv_local = nn.Identity()
        self.proj_drop = nn.Dropout(drop)
        self.proj = ConvNormAct(dim_mid, dim_out, 1, norm_layer="none", act_layer="none")
        self.ls = LayerScale2d(dim_out, ls_value) if ls_value > 0 else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm(x)
        y = self.eops[0](x)
        for op in self.eops[1:]:
            y = y + op(x)
        local = self.conv_local(y)
        x = y + local if self.has_skip else local
        x = self.proj(self.proj_drop(x))
        x = self.ls(x)
        return shortcut + self.drop_path(x) if self.has_skip else x


class EMO2(Backbone):
    """EMOv2 classifier / backbone (timm contract). Stages ``stage1``..``stage4`` at strides 4, 8,
    16 and 32 after the stride-2 stem ``stage0``; the first block of a stage downsamples with a
    conv operator at twice the expansion ratio."""

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        depths: Sequence[int] = (2, 2, 8, 3),
        embed_dims: Sequence[int] = (32, 48, 80, 180),
        exp_ratios: Sequence[float] = (2.0, 2.5, 3.0, 3.5),
        norm_layers: Sequence[str] = ("bn_2d", "bn_2d", "ln_2d", "ln_2d"),
        act_layers: Sequence[str] = ("silu", "silu", "gelu", "gelu"),
        dw_kss: Sequence[int] = (5, 5, 5, 5),
        dim_heads: Sequence[int] = (16, 16, 20, 20),
        window_sizes: Sequence[int] = (7, 7, 7, 7),
        hybrid_eopss: Sequence[Sequence[int]] = ((0,), (0,), (3,), (3,)),
        conv_kss: Sequence[int] = (1, 1, 1, 1),
        conv_groupss: Sequence[int] = (1, 1, 1, 1),
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        v_group: bool = False,
        ls_value: float = 1e-6,
        global_pool: str = "avg",
    ):
        super().__init__()
        n = len(depths)
        per_stage = (embed_dims, exp_ratios, norm_layers, act_layers, dw_kss, dim_heads, window_sizes, hybrid_eopss,
                     conv_kss, conv_groupss)
        if not all(len(s) == n for s in per_stage):
            raise ValueError("every per-stage setting needs one entry per stage")
        self._check_pool(global_pool)
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.drop_rate = drop_rate
        dprs = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        dim = embed_dims[0] // 2
        self.stage0 = nn.ModuleList([
            ConvNormAct(in_chans, dim, 3, stride=2, bias=True, norm_layer="bn_2d", act_layer="silu"),
            ConvNormAct(dim, dim, 3, groups=dim, norm_layer="bn_2d", act_layer="silu"),
            ConvNormAct(dim, dim, 1, norm_layer="none", act_layer="none"),
        ])
        self.feature_info: list[dict[str, Any]] = []
        reduction, start = 2, 0
        for i in range(n):
            blocks = []
            for j in range(depths[i]):
                first = j == 0
                blocks.append(IIRMB(
                    dim, embed_dims[i],
                    has_skip=not first,
                    exp_ratio=exp_ratios[i] * 2 if first else exp_ratios[i],
                    norm_layer=norm_layers[i], act_layer=act_layers[i],
                    dw_ks=(dw_kss[i] if dw_kss[i] > 0 else 5) if first else dw_kss[i],
                    stride=2 if first else 1,
                    dim_head=dim_heads[i], window_size=window_sizes[i],
                    eops=(0,) if first else tuple(hybrid_eopss[i]),
                    conv_ks=1 if first else conv_kss[i], conv_groups=1 if first else conv_groupss[i],
                    qkv_bias=qkv_bias, attn_drop=attn_drop, drop=drop_rate, drop_path=dprs[start + j],
                    v_group=v_group, ls_value=ls_value,
                ))
                dim = embed_dims[i]
            start += depths[i]
            reduction *= 2
            setattr(self, f"stage{i + 1}", nn.ModuleList(blocks))
            self.feature_info.append(dict(num_chs=dim, reduction=reduction, module=f"stage{i + 1}"))
        self.num_stages = n
        self.num_features = self.head_hidden_size = dim
        self.norm = _norm(norm_layers[-1], dim)
        self.head = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    @staticmethod
    def _check_pool(global_pool: str) -> None:
        if global_pool != "avg":
            raise ValueError(f"EMO2 pools by channel mean only (global_pool='avg'), got {global_pool!r}")

    @torch.jit.ignore
    def no_weight_decay_keywords(self) -> set[str]:
        return {"gamma"}

    def _stages(self) -> list[nn.ModuleList]:
        return [getattr(self, f"stage{i + 1}") for i in range(self.num_stages)]

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None:
            self._check_pool(global_pool)
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.stage0:
            x = blk(x)
        for stage in self._stages():
            for blk in stage:
                x = blk(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=(2, 3))
        if self.drop_rate:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
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
        """timm's feature API: the outputs of the stages in ``indices`` (``norm``: the final
        norm applied to the last stage's)."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(self.num_stages, indices)
        last = self.num_stages - 1
        stages = self._stages()
        if stop_early:
            stages = stages[: max_index + 1]
        intermediates = []
        for blk in self.stage0:
            x = blk(x)
        for i, stage in enumerate(stages):
            for blk in stage:
                x = blk(x)
            if i in take_indices:
                intermediates.append(self.norm(x) if norm and i == last else x)
        if intermediates_only:
            return intermediates
        if len(stages) - 1 == last:
            x = self.norm(x)
        return x, intermediates

    def prune_intermediate_layers(
        self,
        indices: int | list[int] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> list[int]:
        """Drop the stages after the last one in ``indices`` (and the norm / head) for feature
        extraction; returns the absolute indices kept."""
        take_indices, max_index = feature_take_indices(self.num_stages, indices)
        pruned_end = max_index < self.num_stages - 1
        for i in range(max_index + 1, self.num_stages):
            setattr(self, f"stage{i + 1}", nn.ModuleList())
        if prune_norm or pruned_end:
            self.norm = nn.Identity()
        if pruned_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or pruned_end:
            self.reset_classifier(0)
        return take_indices


# --- registry -----------------------------------------------------------------------------------

_PAPER = "EMOv2: Pushing 5M Vision Model Frontier"
_ARXIV = "2412.06674"
_SOURCE = "https://github.com/zhangzjn/EMOv2"
_LICENSE = "unspecified (no licence file confirmed for zhangzjn/EMOv2 here)"
# the weights live in the authors' zhangzjn/data repository (README links are its blob pages)
_WEIGHTS = "https://github.com/zhangzjn/data/raw/main/emov2_pretrained_weights"

# configs/emo2/emo2_224.py test transforms: Resize(int(224 / 0.875), bicubic), CenterCrop(224),
# ImageNet mean / std (timm's IMAGENET_DEFAULT_*)
_DATA_CFG = IMAGENET_BICUBIC_DATA_CFG


def _cfg(file: str, tag: str, top1: float, description: str, **extra: Any) -> PretrainedCfg:
    return PretrainedCfg(
        tag=tag,
        url=f"{_WEIGHTS}/{file}",
        sha256=None,
        verified=False,
        license=_LICENSE,
        filter_fn=filter_emo2,
        metrics={"imagenet_top1": top1},
        description=description,
        **extra,
    )


def _plain(size: str, top1: float) -> PretrainedCfg:
    return _cfg(
        f"EMOv2_{size}_224.pth", "in1k", top1,
        f"Authors' ImageNet-1k weights, 224 px, 300 epochs (EMOv2_{size}_224.pth)",
    )


def _kd(size: str, top1: float) -> PretrainedCfg:
    return _cfg(
        f"EMOv2_{size}_224_KD.pth", "in1k_kd", top1,
        f"Authors' ImageNet-1k weights trained with knowledge distillation, 224 px (EMOv2_{size}_224_KD.pth)",
    )


_COMMON = dict(
    task="classification",
    family="emo2",
    paper=_PAPER,
    arxiv=_ARXIV,
    license=_LICENSE,
    source=_SOURCE,
    input_size=(3, 224, 224),
    input_range=None,
    data_cfg=_DATA_CFG,
    test_size=(3, 64, 64),
)

# the authors' factories (EMO2_{1M,2M,5M}_k5_hybrid): all share these
_HYBRID = dict(
    norm_layers=("bn_2d", "bn_2d", "ln_2d", "ln_2d"),
    act_layers=("silu", "silu", "gelu", "gelu"),
    dw_kss=(5, 5, 5, 5),
    window_sizes=(7, 7, 7, 7),
    hybrid_eopss=((0,), (0,), (3,), (3,)),
    conv_kss=(1, 1, 1, 1),
    conv_groupss=(1, 1, 1, 1),
    qkv_bias=True,
    v_group=False,
    ls_value=1e-6,
)


def _emo2(features_only: bool, out_indices: Sequence[int] | int | None, config: dict[str, Any], kwargs: dict[str, Any]):
    model = EMO2(**{**_HYBRID, **config, **kwargs})
    return build_backbone(model, features_only=features_only, out_indices=out_indices, in_chans=model.in_chans)


@register_model(
    **_COMMON,
    params=1_460_844,
    gmacs=0.279936,
    pretrained_cfgs=[_plain("1M", 72.3), _kd("1M", 73.5)],
    description="EMOv2-1M (EMO2_1M_k5_hybrid): hybrid-window i2RMB, 1.46M params",
)
def emo2_1m(features_only: bool = False, out_indices: Sequence[int] | int | None = None, **kwargs: Any):
    """EMOv2-1M, the authors' ``EMO2_1M_k5_hybrid``."""
    config = dict(
        depths=(2, 2, 8, 3), embed_dims=(32, 48, 80, 180), exp_ratios=(2.0, 2.5, 3.0, 3.5), dim_heads=(16, 16, 20, 20)
    )
    return _emo2(features_only, out_indices, config, kwargs)


@register_model(
    **_COMMON,
    params=2_384_312,
    gmacs=0.480812,
    pretrained_cfgs=[_plain("2M", 75.8), _kd("2M", 76.7)],
    description="EMOv2-2M (EMO2_2M_k5_hybrid): hybrid-window i2RMB, 2.38M params",
)
def emo2_2m(features_only: bool = False, out_indices: Sequence[int] | int | None = None, **kwargs: Any):
    """EMOv2-2M, the authors' ``EMO2_2M_k5_hybrid``."""
    config = dict(
        depths=(3, 3, 9, 3), embed_dims=(32, 48, 120, 200), exp_ratios=(2.0, 2.5, 3.0, 3.5), dim_heads=(16, 16, 20, 20)
    )
    return _emo2(features_only, out_indices, config, kwargs)


@register_model(
    **_COMMON,
    params=5_126_440,
    gmacs=1.025114,
    pretrained_cfgs=[
        _plain("5M", 79.4),
        _kd("5M", 80.9),
        _cfg(
            "EMOv2_5M_512.pth", "in1k_512", 82.9,
            "Authors' stronger-recipe weights (README 'EMOv2-5M*'), evaluated at 512 px with configs/emo2/emo2_512.py",
            data_cfg={**_DATA_CFG, "input_size": (3, 512, 512)},
        ),
    ],
    description="EMOv2-5M (EMO2_5M_k5_hybrid): hybrid-window i2RMB, 5.13M params",
)
def emo2_5m(features_only: bool = False, out_indices: Sequence[int] | int | None = None, **kwargs: Any):
    """EMOv2-5M, the authors' ``EMO2_5M_k5_hybrid``."""
    config = dict(
        depths=(3, 3, 9, 3), embed_dims=(48, 72, 160, 288), exp_ratios=(2.0, 3.0, 4.0, 4.0), dim_heads=(16, 24, 32, 32)
    )
    return _emo2(features_only, out_indices, config, kwargs)
