"""Channel-attention ResNets: ResNet-18/34/50/101/152 with SE, ECA, FcaNet's multi-spectral
attention or CBAM after the last BN of every block, on timm's ``ResNet``.

The network is ``timm.models.resnet.ResNet`` (timm, Apache-2.0) with its ``BasicBlock`` /
``Bottleneck``: torchvision's ResNet v1.5 (stride on the 3x3 conv, 1x1 conv + BN shortcut), the
same module names (``conv1``, ``bn1``, ``layer{1-4}.{i}.conv{1,2,3}`` / ``bn{1,2,3}``,
``downsample.{0,1}``, ``fc``) and timm's ``forward_features`` / ``forward_head`` /
``forward_intermediates`` / ``feature_info``. timm places a block's attention module, named
``se``, after ``bn2`` (basic) / ``bn3`` (bottleneck) and before the residual sum, which is where
both papers below put theirs. The attention modules come from the zoo's factory
(:func:`zoo.models.layers.attention.create_attn`): timm's ``SEModule``, ``EcaModule``,
``CbamModule`` and the zoo's :class:`~zoo.models.layers.attention.MultiSpectralAttention`.

``resnet18`` ... ``resnet152`` take ``attn`` in ``{None, "se", "eca", "fca", "cbam"}`` (and
``attn_kwargs`` for the module): ``zoo.create("resnet50", attn="fca")``. ``"eca"`` sizes its
kernel from the channels by the paper's rule, ``"fca"`` uses FcaNet's per-stage DCT sizes.

Named variants:

- ``fcanet34/50/101/152``: FcaNet (Qin et al., "FcaNet: Frequency Channel Attention Networks",
  ICCV 2021), after cfzd/FcaNet ``model/fcanet.py`` (MIT License, Copyright (c) 2021 cfzd):
  torchvision's ResNet with ``MultiSpectralAttentionLayer(planes * expansion, s, s,
  reduction=16, freq_sel_method="top16")`` in every block, ``s`` = 56 / 28 / 14 / 7 for
  ``planes`` = 64 / 128 / 256 / 512 (the stage's feature size at 224 px). When a stage's feature
  map is not ``s`` x ``s`` (any input but 224 px), the authors' layer average-pools it
  adaptively to ``s`` x ``s`` before the DCT pooling (``F.adaptive_avg_pool2d``; upsampling a
  smaller map by repetition), and so does ours. ``freq_sel_method`` (``top16`` / ``low16`` /
  ``bot16`` ...) and ``reduction`` are constructor arguments. FcaNet-50 has 28,071,976
  parameters (the authors' code; the DCT filters are buffers).
- ``eca_resnet18/34/50/101/152``: ECA-Net (Wang et al., "ECA-Net: Efficient Channel Attention
  for Deep Convolutional Neural Networks", CVPR 2020), after BangguWu/ECANet
  ``models/eca_resnet.py`` (MIT License, Copyright (c) 2019 BangguWu, Qilong Wang): an
  ``eca_layer`` (global average pool, ``Conv1d(1, 1, k, bias=False)`` across channels, sigmoid)
  in every block, one kernel size per stage (``k_size``). The authors' factories take
  ``k_size=[3, 3, 3, 3]`` by default (``eca_resnet18`` in the final version ignores it), but the
  published checkpoints were trained with ``--ksize`` and name their sizes:
  ``eca_resnet18_k3577``, ``eca_resnet34_k3357``, ``eca_resnet50_k3557``,
  ``eca_resnet101_k3357``, ``eca_resnet152_k3357``; their ``eca.conv.weight`` tensors are
  (1, 1, k). Our defaults are those sizes, so the files load. ``k_size=None`` uses the paper's
  adaptive rule instead, ``k = |log2(C) / 2 + 1 / 2|_odd`` on the block's output channels C
  (timm's ``EcaModule``; 3 / 5 / 5 / 5 for ResNet-18/34, 5 / 5 / 5 / 7 for the bottleneck
  nets). Parameters by the authors' code (torchvision's ResNet + sum of k over the blocks):
  ECA-ResNet-50 (k3557) 25,557,112 = ResNet-50's 25,557,032 + 80; the paper's table (and the
  README) says 24.37M, which is not what the code builds (its text: "80 vs. 24.37M", ECA
  module vs. backbone). ECA-ResNet-18 (k3577) 11,689,556, -34 (k3357) 21,797,744, -101 (k3357)
  44,549,317, -152 (k3357) 60,193,042 (the paper lists 11.15M / 20.79M / 42.49M / 57.41M).
- ``se_resnet50`` (Hu et al., "Squeeze-and-Excitation Networks") and ``cbam_resnet50`` (Woo et
  al., "CBAM: Convolutional Block Attention Module"): timm's SE / CBAM modules (reduction 16;
  timm's CBAM channel gate has no biases and its spatial gate is a 7x7 conv + BN),
  the baselines of both papers; ``se_resnet50`` is timm's ``seresnet50`` exactly.

Preprocessing on every card: ImageNet mean/std, resize 256 (bilinear) + centre crop 224 (crop
0.875): the authors' eval (FcaNet ``main.py``: DALI ``resize_shorter=256`` with triangular
(linear) interpolation, crop 224; ECANet ``main.py``: ``Resize(256)``, ``CenterCrop(224)``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn
from timm.models.resnet import BasicBlock, Bottleneck, ResNet

from zoo.pretrained import PretrainedCfg
from zoo.registry import register_model
from zoo.weights.filters import filter_identity
from zoo.weights.filters_resnet import filter_eca_resnet, filter_fcanet

from .backbone import IMAGENET_DATA_CFG, Backbone, build_backbone
from .layers.attention import FCANET_DCT_SIZES, create_attn

__all__ = ["AttnResNet", "StageAttn", "ATTN_TYPES", "RESNET_DEPTHS", "create_attn_resnet"]

ATTN_TYPES: tuple[str, ...] = ("se", "eca", "fca", "cbam")

# depth -> (block, blocks per stage)
RESNET_DEPTHS: dict[int, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}
_PLANES = (64, 128, 256, 512)


class StageAttn:
    """The ``attn_layer`` handed to timm's blocks: builds attention ``attn_type`` over a block's
    output channels, with ``kwargs`` plus the per-stage kwargs of the stage those channels
    belong to (a stage is told by its output channels, which differ from stage to stage).

    timm's blocks call ``attn_layer(channels, device=..., dtype=...)``. For ``"eca"`` with a
    given ``kernel_size`` the module is built with ``channels=None`` (timm's ``EcaModule`` would
    otherwise replace the kernel size by the adaptive one).
    """

    def __init__(self, attn_type: str, kwargs: Mapping[str, Any] | None = None, stage_kwargs: Mapping[int, Mapping[str, Any]] | None = None):
        self.attn_type = attn_type
        self.kwargs = dict(kwargs or {})
        self.stage_kwargs = {int(c): dict(kw) for c, kw in (stage_kwargs or {}).items()}

    def __call__(self, channels: int, device: Any = None, dtype: Any = None) -> nn.Module:
        kwargs = {**self.kwargs, **self.stage_kwargs.get(channels, {})}
        if self.attn_type == "eca" and "kernel_size" in kwargs:
            module = create_attn("eca", None, **kwargs)
        else:
            module = create_attn(self.attn_type, channels, **kwargs)
        if device is not None or dtype is not None:
            module = module.to(device=device, dtype=dtype)
        return module

    def __repr__(self) -> str:
        return f"StageAttn({self.attn_type!r}, {self.kwargs}, {self.stage_kwargs})"


class AttnResNet(ResNet, Backbone):
    """timm's ``ResNet`` with the zoo's input check in ``forward`` (a 4-D float tensor with
    ``in_chans`` channels, else ``ValueError``). ``attn_layer`` (usually a :class:`StageAttn`)
    goes to every block; the rest of the arguments are timm's ``ResNet``'s."""

    def __init__(
        self,
        block: type[nn.Module],
        layers: Sequence[int],
        attn_layer: Any = None,
        in_chans: int = 3,
        block_args: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        block_args = dict(block_args or {})
        if attn_layer is not None:
            block_args["attn_layer"] = attn_layer
        super().__init__(block, tuple(layers), in_chans=in_chans, block_args=block_args, **kwargs)
        self.in_chans = in_chans

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.forward_head(self.forward_features(x))


def _stage_channels(block: type[nn.Module]) -> list[int]:
    return [p * block.expansion for p in _PLANES]


def _attn_layer(
    attn: str | None,
    block: type[nn.Module],
    attn_kwargs: Mapping[str, Any] | None = None,
    eca_k_size: Sequence[int] | None = None,
) -> StageAttn | None:
    if attn is None or attn is False or (isinstance(attn, str) and not attn.strip()):
        if attn_kwargs:
            raise ValueError("attn_kwargs given without an attention type (attn=None)")
        return None
    if not isinstance(attn, str) or attn.strip().lower() not in ATTN_TYPES:
        raise ValueError(f"attn must be None or one of {', '.join(ATTN_TYPES)}, got {attn!r}")
    attn = attn.strip().lower()
    chans = _stage_channels(block)
    stage: dict[int, dict[str, Any]] = {}
    if attn == "fca":  # FcaNet: the DCT size is the stage's feature size at 224 px, keyed by planes
        stage = {c: {"dct_size": FCANET_DCT_SIZES[p]} for c, p in zip(chans, _PLANES)}
    elif attn == "eca" and eca_k_size is not None:
        ks = [int(k) for k in eca_k_size]
        if len(ks) != 4 or any(k < 1 or k % 2 == 0 for k in ks):
            raise ValueError(f"k_size must be 4 odd kernel sizes (one per stage), got {tuple(eca_k_size)}")
        stage = {c: {"kernel_size": k} for c, k in zip(chans, ks)}
    return StageAttn(attn, attn_kwargs, stage)


def create_attn_resnet(
    depth: int,
    attn: str | None = None,
    attn_kwargs: Mapping[str, Any] | None = None,
    *,
    eca_k_size: Sequence[int] | None = None,
    features_only: bool = False,
    out_indices: Sequence[int] | int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """ResNet-``depth`` with attention ``attn`` in every block (see the module docstring);
    ``kwargs`` go to timm's ``ResNet`` (``num_classes``, ``in_chans``, ``drop_rate`` ...)."""
    if depth not in RESNET_DEPTHS:
        raise ValueError(f"depth must be one of {sorted(RESNET_DEPTHS)}, got {depth}")
    block, layers = RESNET_DEPTHS[depth]
    model = AttnResNet(block, layers, attn_layer=_attn_layer(attn, block, attn_kwargs, eca_k_size), **kwargs)
    return build_backbone(model, features_only=features_only, out_indices=out_indices, in_chans=model.in_chans)


# ---------------------------------------------------------------------------------------------
# registration

_DATA_CFG = dict(IMAGENET_DATA_CFG)  # bilinear, resize 256 / crop 224 (crop_pct 0.875): both authors' eval

_CLS = dict(
    task="classification",
    input_size=(3, 224, 224),
    input_range=None,
    data_cfg=_DATA_CFG,
    test_size=(3, 64, 64),
)

# --- plain ResNets (attn argument) -----------------------------------------------------------


def _tv_cfg(depth: int, top1: float, top5: float) -> PretrainedCfg:
    return PretrainedCfg(
        tag="tv_in1k",
        hf_hub_id=f"timm/resnet{depth}.tv_in1k",
        hf_filename="model.safetensors",
        filename=f"resnet{depth}.tv_in1k.safetensors",
        sha256=None,
        verified=False,
        license="BSD-3-Clause",
        filter_fn=filter_identity,
        metrics={"imagenet_top1": top1, "imagenet_top5": top5},
        description=(
            "torchvision's original ImageNet-1k weights (IMAGENET1K_V1, the baseline of the FcaNet and "
            "ECA-Net papers) as timm publishes them; for attn=None only. Not hashed here."
        ),
    )


_RESNET = dict(
    **_CLS,
    family="resnet",
    paper="Deep Residual Learning for Image Recognition",
    arxiv="1512.03385",
    license="Apache-2.0",
    source="https://github.com/huggingface/pytorch-image-models",
)


def _plain(depth: int, attn: str | None, attn_kwargs: Mapping[str, Any] | None, features_only: bool, out_indices: Any, kwargs: dict[str, Any]) -> nn.Module:
    return create_attn_resnet(depth, attn, attn_kwargs, features_only=features_only, out_indices=out_indices, **kwargs)


@register_model(**_RESNET, params=11_689_512, gmacs=1.814073, pretrained_cfgs=[_tv_cfg(18, 69.758, 89.078)],
                description="ResNet-18 (timm's ResNet); attn=None|'se'|'eca'|'fca'|'cbam' adds attention to every block")
def resnet18(attn: str | None = None, attn_kwargs: Mapping[str, Any] | None = None, features_only: bool = False, out_indices: Any = None, **kwargs: Any):
    return _plain(18, attn, attn_kwargs, features_only, out_indices, kwargs)


@register_model(**_RESNET, params=21_797_672, gmacs=3.663761, pretrained_cfgs=[_tv_cfg(34, 73.314, 91.420)],
                description="ResNet-34 (timm's ResNet); attn=None|'se'|'eca'|'fca'|'cbam' adds attention to every block")
def resnet34(attn: str | None = None, attn_kwargs: Mapping[str, Any] | None = None, features_only: bool = False, out_indices: Any = None, **kwargs: Any):
    return _plain(34, attn, attn_kwargs, features_only, out_indices, kwargs)


@register_model(**_RESNET, params=25_557_032, gmacs=4.089184, pretrained_cfgs=[_tv_cfg(50, 76.130, 92.862)],
                description="ResNet-50 (timm's ResNet); attn=None|'se'|'eca'|'fca'|'cbam' adds attention to every block")
def resnet50(attn: str | None = None, attn_kwargs: Mapping[str, Any] | None = None, features_only: bool = False, out_indices: Any = None, **kwargs: Any):
    return _plain(50, attn, attn_kwargs, features_only, out_indices, kwargs)


@register_model(**_RESNET, params=44_549_160, gmacs=7.801405, pretrained_cfgs=[_tv_cfg(101, 77.374, 93.546)],
                description="ResNet-101 (timm's ResNet); attn=None|'se'|'eca'|'fca'|'cbam' adds attention to every block")
def resnet101(attn: str | None = None, attn_kwargs: Mapping[str, Any] | None = None, features_only: bool = False, out_indices: Any = None, **kwargs: Any):
    return _plain(101, attn, attn_kwargs, features_only, out_indices, kwargs)


@register_model(**_RESNET, params=60_192_808, gmacs=11.513627, pretrained_cfgs=[_tv_cfg(152, 78.312, 94.046)],
                description="ResNet-152 (timm's ResNet); attn=None|'se'|'eca'|'fca'|'cbam' adds attention to every block")
def resnet152(attn: str | None = None, attn_kwargs: Mapping[str, Any] | None = None, features_only: bool = False, out_indices: Any = None, **kwargs: Any):
    return _plain(152, attn, attn_kwargs, features_only, out_indices, kwargs)


# --- FcaNet ------------------------------------------------------------------------------------

_FCA_SOURCE = "https://github.com/cfzd/FcaNet"
_FCA_DRIVE = {  # README "Classification models on ImageNet", GoogleDrive links (same files)
    34: "1zTbhu1ynShAG9qH_HKJfOQeWBWVD9dCW",
    50: "1O7qtqHSXdwRzUv_m6wrqB4TVF-rqJInB",
    101: "11CydGJ_dzjdOn9Z3E00enc125SpFJD8k",
    152: "1rtNAmePV4dIpTEkLCT08p6yiRyH0FC3B",
}


def _fca_cfg(depth: int, top1: float, evaluated: float) -> PretrainedCfg:
    return PretrainedCfg(
        tag="in1k",
        url=f"{_FCA_SOURCE}/releases/download/v1.0/fca{depth}.pth",
        sha256=None,
        verified=False,
        license="MIT",
        filter_fn=filter_fcanet,
        metrics={"imagenet_top1": top1},
        data_cfg=_DATA_CFG,
        description=(
            f"The authors' ImageNet-1k weights (fca{depth}.pth, the release their hubconf.py loads; also on "
            f"Google Drive, id {_FCA_DRIVE[depth]}). Top-1 is the paper's; the README measures {evaluated} with the "
            "fp32 file. Not hashed here."
        ),
    )


_FCANET = dict(
    **_CLS,
    family="fcanet",
    paper="FcaNet: Frequency Channel Attention Networks",
    arxiv="2012.11879",
    license="MIT",
    source=_FCA_SOURCE,
)


def _fcanet(depth: int, freq_sel_method: str, reduction: int, features_only: bool, out_indices: Any, kwargs: dict[str, Any]) -> nn.Module:
    attn_kwargs = {"freq_sel_method": freq_sel_method, "reduction": reduction}
    return create_attn_resnet(depth, "fca", attn_kwargs, features_only=features_only, out_indices=out_indices, **kwargs)


@register_model(**_FCANET, params=21_954_856, gmacs=3.663919, pretrained_cfgs=[_fca_cfg(34, 75.07, 75.02)],
                description="FcaNet-34: ResNet-34 + multi-spectral DCT channel attention (top16 frequencies)")
def fcanet34(freq_sel_method: str = "top16", reduction: int = 16, features_only: bool = False, out_indices: Any = None, **kwargs: Any):
    return _fcanet(34, freq_sel_method, reduction, features_only, out_indices, kwargs)


@register_model(**_FCANET, params=28_071_976, gmacs=4.091699, pretrained_cfgs=[_fca_cfg(50, 78.52, 78.57)],
                description="FcaNet-50: ResNet-50 + multi-spectral DCT channel attention (top16 frequencies)")
def fcanet50(freq_sel_method: str = "top16", reduction: int = 16, features_only: bool = False, out_indices: Any = None, **kwargs: Any):
    return _fcanet(50, freq_sel_method, reduction, features_only, out_indices, kwargs)


@register_model(**_FCANET, params=49_292_328, gmacs=7.806149, pretrained_cfgs=[_fca_cfg(101, 79.64, 79.63)],
                description="FcaNet-101: ResNet-101 + multi-spectral DCT channel attention (top16 frequencies)")
def fcanet101(freq_sel_method: str = "top16", reduction: int = 16, features_only: bool = False, out_indices: Any = None, **kwargs: Any):
    return _fcanet(101, freq_sel_method, reduction, features_only, out_indices, kwargs)


@register_model(**_FCANET, params=66_770_984, gmacs=11.520205, pretrained_cfgs=[_fca_cfg(152, 80.08, 80.02)],
                description="FcaNet-152: ResNet-152 + multi-spectral DCT channel attention (top16 frequencies)")
def fcanet152(freq_sel_method: str = "top16", reduction: int = 16, features_only: bool = False, out_indices: Any = None, **kwargs: Any):
    return _fcanet(152, freq_sel_method, reduction, features_only, out_indices, kwargs)


# --- ECA-Net -----------------------------------------------------------------------------------

_ECA_SOURCE = "https://github.com/BangguWu/ECANet"


def _eca_cfg(file: str, drive_id: str, top1: float, top5: float) -> PretrainedCfg:
    return PretrainedCfg(
        tag="in1k",
        url=f"https://drive.google.com/uc?export=download&id={drive_id}",
        filename=f"{file}.pth.tar",
        sha256=None,
        verified=False,
        license="MIT",
        filter_fn=filter_eca_resnet,
        metrics={"imagenet_top1": top1, "imagenet_top5": top5},
        data_cfg=_DATA_CFG,
        description=(
            f"The authors' ImageNet-1k checkpoint ({file}.pth.tar, BangguWu/ECANet README, Google Drive; also "
            "on Baidu Drive), a DataParallel training checkpoint. Metrics from the paper. Not hashed here."
        ),
    )


_ECANET = dict(
    **_CLS,
    family="ecanet",
    paper="ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks",
    arxiv="1910.03151",
    license="MIT",
    source=_ECA_SOURCE,
)


def _eca(depth: int, k_size: Sequence[int] | None, features_only: bool, out_indices: Any, kwargs: dict[str, Any]) -> nn.Module:
    return create_attn_resnet(depth, "eca", eca_k_size=k_size, features_only=features_only, out_indices=out_indices, **kwargs)


@register_model(**_ECANET, params=11_689_556, gmacs=1.814086,
                pretrained_cfgs=[_eca_cfg("eca_resnet18_k3577", "1LMRFRTyzVifGBi2MUpTuYEWW44S8mwyl", 70.92, 89.93)],
                description="ECA-ResNet-18, ECA kernel sizes 3/5/7/7 by stage (the published eca_resnet18_k3577)")
def eca_resnet18(k_size: Sequence[int] | None = (3, 5, 7, 7), features_only: bool = False, out_indices: Any = None, **kwargs: Any):
    return _eca(18, k_size, features_only, out_indices, kwargs)


@register_model(**_ECANET, params=21_797_744, gmacs=3.663782,
                pretrained_cfgs=[_eca_cfg("eca_resnet34_k3357", "15LV5Jkea3GPzvLP5__H7Gg88oNQUxBDE", 74.21, 91.83)],
                description="ECA-ResNet-34, ECA kernel sizes 3/3/5/7 by stage (the published eca_resnet34_k3357)")
def eca_resnet34(k_size: Sequence[int] | None = (3, 3, 5, 7), features_only: bool = False, out_indices: Any = None, **kwargs: Any):
    return _eca(34, k_size, features_only, out_indices, kwargs)


@register_model(**_ECANET, params=25_557_112, gmacs=4.089271,
                pretrained_cfgs=[_eca_cfg("eca_resnet50_k3557", "1670rce333c_lyMWFzBlNZoVUvtxbCF_U", 77.42, 93.62)],
                description="ECA-ResNet-50, ECA kernel sizes 3/5/5/7 by stage (the published eca_resnet50_k3557)")
def eca_resnet50(k_size: Sequence[int] | None = (3, 5, 5, 7), features_only: bool = False, out_indices: Any = None, **kwargs: Any):
    return _eca(50, k_size, features_only, out_indices, kwargs)


@register_model(**_ECANET, params=44_549_317, gmacs=7.801575,
                pretrained_cfgs=[_eca_cfg("eca_resnet101_k3357", "1b5FQ8yDFnZ_UhvWT9txmjI_LjbKkgnvC", 78.65, 94.34)],
                description="ECA-ResNet-101, ECA kernel sizes 3/3/5/7 by stage (the published eca_resnet101_k3357)")
def eca_resnet101(k_size: Sequence[int] | None = (3, 3, 5, 7), features_only: bool = False, out_indices: Any = None, **kwargs: Any):
    return _eca(101, k_size, features_only, out_indices, kwargs)


@register_model(**_ECANET, params=60_193_042, gmacs=11.513869,
                pretrained_cfgs=[_eca_cfg("eca_resnet152_k3357", "1_bYnaOg9ptsILC_iC7uQ5Izv-u2rjYG5", 78.92, 94.55)],
                description="ECA-ResNet-152, ECA kernel sizes 3/3/5/7 by stage (the published eca_resnet152_k3357)")
def eca_resnet152(k_size: Sequence[int] | None = (3, 3, 5, 7), features_only: bool = False, out_indices: Any = None, **kwargs: Any):
    return _eca(152, k_size, features_only, out_indices, kwargs)


# --- SE / CBAM baselines -----------------------------------------------------------------------


@register_model(
    **_CLS,
    family="senet",
    paper="Squeeze-and-Excitation Networks",
    arxiv="1709.01507",
    license="Apache-2.0",
    source="https://github.com/huggingface/pytorch-image-models",
    params=28_088_024,
    gmacs=4.091699,
    description="SE-ResNet-50 (timm's SEModule, reduction 16, in every bottleneck): timm's seresnet50",
)
def se_resnet50(features_only: bool = False, out_indices: Any = None, **kwargs: Any):
    return create_attn_resnet(50, "se", features_only=features_only, out_indices=out_indices, **kwargs)


@register_model(
    **_CLS,
    family="cbam",
    paper="CBAM: Convolutional Block Attention Module",
    arxiv="1807.06521",
    license="Apache-2.0",
    source="https://github.com/huggingface/pytorch-image-models",
    params=28_073_576,
    gmacs=4.095573,
    description="CBAM-ResNet-50 (timm's CbamModule: channel gate, reduction 16, + 7x7 spatial gate, in every bottleneck)",
)
def cbam_resnet50(features_only: bool = False, out_indices: Any = None, **kwargs: Any):
    return create_attn_resnet(50, "cbam", features_only=features_only, out_indices=out_indices, **kwargs)
