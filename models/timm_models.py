"""Backbones timm already implements, registered as they are (DESIGN.md: where timm has a whole
model, use it).

- ReXNet (Han et al., "Rethinking Channel Dimensions for Efficient Model Design", CVPR 2021;
  authors' code clovaai/rexnet, MIT): ``rexnet_100`` / ``rexnet_150``.
- MobileNetV2 / MobileNetV3-Large, the networks MobileTL fine-tunes and the baselines of the
  efficient-backbone papers: ``mobilenetv2_100``, ``mobilenetv3_large_100``.

The weights are timm's, on the Hugging Face hub (``timm/<name>.<tag>``), in timm's own state-dict
layout; the preprocessing on each card is timm's pretrained cfg for those weights. ReXNet also
lists the authors' own files (``.paper``: clovaai/rexnet's ``rexnetv1_*x.pth`` on Google Drive),
converted to timm's names by ``zoo.weights.filters_rexnet.filter_rexnet``, with the authors' eval
transform (resize 256, centre crop 224: bilinear, crop 0.875).
"""

from __future__ import annotations

from typing import Any

from zoo.pretrained import PretrainedCfg
from zoo.registry import register_model
from zoo.weights.filters import filter_identity
from zoo.weights.filters_rexnet import filter_rexnet

from .backbone import IMAGENET_BICUBIC_DATA_CFG, IMAGENET_DATA_CFG, timm_backbone

_IMAGENET_BICUBIC = IMAGENET_BICUBIC_DATA_CFG


def _timm_cfg(timm_tag: str, license: str, top1: float, description: str) -> PretrainedCfg:
    return PretrainedCfg(
        tag=timm_tag.split(".", 1)[1],
        hf_hub_id=f"timm/{timm_tag}",
        hf_filename="model.safetensors",
        filename=f"{timm_tag}.safetensors",
        license=license,
        filter_fn=filter_identity,
        metrics={"imagenet_top1": top1},
        description=description,
    )


# The authors' eval transform (their benchmark script): Resize(256) + CenterCrop(224), torchvision's
# default bilinear resize, ImageNet mean/std.
_REXNET_AUTHORS_DATA_CFG = {k: v for k, v in IMAGENET_DATA_CFG.items() if k != "num_classes"}


def _rexnet_authors_cfg(drive_id: str, filename: str, top1: float, top5: float) -> PretrainedCfg:
    return PretrainedCfg(
        tag="paper",
        url=f"https://drive.google.com/uc?export=download&id={drive_id}",
        filename=filename,
        sha256=None,
        verified=False,
        license="MIT",
        filter_fn=filter_rexnet,
        metrics={"imagenet_top1": top1, "imagenet_top5": top5},
        data_cfg=_REXNET_AUTHORS_DATA_CFG,
        description=(
            f"The authors' ImageNet-1k weights ({filename}, clovaai/rexnet README, Google Drive), converted "
            "from their ReXNetV1 layout to timm's by filter_rexnet. Not hashed here."
        ),
    )


_REXNET = dict(
    task="classification",
    family="rexnet",
    paper="Rethinking Channel Dimensions for Efficient Model Design",
    arxiv="2007.00992",
    license="MIT",
    source="https://github.com/clovaai/rexnet",
    input_size=(3, 224, 224),
    input_range=None,
    data_cfg=_IMAGENET_BICUBIC,
    test_size=(3, 64, 64),
)


@register_model(
    **_REXNET,
    params=4_796_873,
    gmacs=0.39837,
    pretrained_cfgs=[
        _timm_cfg("rexnet_100.nav_in1k", "MIT", 77.86, "timm's ImageNet-1k weights (authors' recipe)"),
        _rexnet_authors_cfg("1xeIJ3wb83uOowU008ykYj6wDX2dsncA9", "rexnetv1_1.0x.pth", 77.9, 93.9),
    ],
    description="ReXNet x1.0 (timm's implementation)",
)
def rexnet_100(**kwargs: Any):
    return timm_backbone("rexnet_100", **kwargs)


@register_model(
    **_REXNET,
    params=9_728_593,
    gmacs=0.875828,
    pretrained_cfgs=[
        _timm_cfg("rexnet_150.nav_in1k", "MIT", 80.31, "timm's ImageNet-1k weights (authors' recipe)"),
        _rexnet_authors_cfg("1TOBGsbDhTHWBgqcRnyKIR0tHsJTOPUIG", "rexnetv1_1.5x.pth", 80.3, 95.2),
    ],
    description="ReXNet x1.5 (timm's implementation)",
)
def rexnet_150(**kwargs: Any):
    return timm_backbone("rexnet_150", **kwargs)


_MOBILENET = dict(
    task="classification",
    input_size=(3, 224, 224),
    input_range=None,
    data_cfg=_IMAGENET_BICUBIC,
    test_size=(3, 64, 64),
    license="Apache-2.0",
    source="https://github.com/huggingface/pytorch-image-models",
)


@register_model(
    **_MOBILENET,
    family="mobilenetv2",
    paper="MobileNetV2: Inverted Residuals and Linear Bottlenecks",
    arxiv="1801.04381",
    params=3_504_872,
    gmacs=0.300774,
    pretrained_cfgs=[_timm_cfg("mobilenetv2_100.ra_in1k", "Apache-2.0", 72.97, "timm's RandAugment ImageNet-1k weights")],
    description="MobileNetV2 1.0 (timm's implementation)",
)
def mobilenetv2_100(**kwargs: Any):
    return timm_backbone("mobilenetv2_100", **kwargs)


@register_model(
    **_MOBILENET,
    family="mobilenetv3",
    paper="Searching for MobileNetV3",
    arxiv="1905.02244",
    params=5_483_032,
    gmacs=0.21659,
    pretrained_cfgs=[_timm_cfg("mobilenetv3_large_100.ra_in1k", "Apache-2.0", 75.77, "timm's RandAugment ImageNet-1k weights")],
    description="MobileNetV3-Large 1.0 (timm's implementation)",
)
def mobilenetv3_large_100(**kwargs: Any):
    return timm_backbone("mobilenetv3_large_100", **kwargs)
