"""Filter functions for SAM and MobileSAM checkpoints (:mod:`zoo.models.mobile_sam`).

The authors' files (``sam_vit_{b,l,h}_*.pth`` from facebookresearch/segment-anything,
``weights/mobile_sam.pt`` from ChaoningZhang/MobileSAM) are plain state dicts of their ``Sam``
module. Our modules keep their names except where a timm block is reused:

- SAM's ViT blocks are timm's ``vision_transformer_sam.Block``: ``mlp.lin1/lin2`` -> ``mlp.fc1/fc2``;
- MobileSAM's TinyViT units are timm's ``ConvNorm``: conv-BN ``.c.`` -> ``.conv.``;
- MobileSAM's file also holds TinyViT's ImageNet classifier (``image_encoder.norm_head``,
  ``image_encoder.head``), which the segmentation model never runs: dropped.

:func:`to_authors_sam` is the inverse (our state dict -> the authors' names), used to load our
weights into the authors' modules (``Sam.authors_reference``).
"""

from __future__ import annotations

import torch

from .filters import rename_keys

StateDict = dict[str, torch.Tensor]

__all__ = ["filter_sam", "filter_mobile_sam", "to_authors_sam", "TINYVIT_HEAD_PREFIXES"]

TINYVIT_HEAD_PREFIXES = ("image_encoder.norm_head.", "image_encoder.head.")
_MARKER = "mask_decoder.iou_token.weight"

_TO_OURS = [
    (r"^(image_encoder\.blocks\.\d+\.mlp)\.lin([12])\.", r"\1.fc\2."),  # SAM ViT (timm Block)
    (r"^(image_encoder\.(?:patch_embed|layers)\..*)\.c\.(weight)$", r"\1.conv.\2"),  # TinyViT (timm ConvNorm)
]
_TO_AUTHORS = [
    (r"^(image_encoder\.blocks\.\d+\.mlp)\.fc([12])\.", r"\1.lin\2."),
    (r"^(image_encoder\.(?:patch_embed|layers)\..*)\.conv\.(weight)$", r"\1.c.\2"),
]


def _check(state_dict: StateDict, family: str) -> None:
    if _MARKER not in state_dict:
        raise KeyError(f"not a {family} state dict: no {_MARKER!r} (first keys: {list(state_dict)[:3]})")


def filter_sam(state_dict: StateDict, model: torch.nn.Module | None = None) -> StateDict:
    """segment-anything's ``sam_vit_*.pth`` (or a zoo file of the same model) -> our names."""
    _check(state_dict, "SAM")
    return rename_keys(state_dict, _TO_OURS)


def filter_mobile_sam(state_dict: StateDict, model: torch.nn.Module | None = None) -> StateDict:
    """MobileSAM's ``mobile_sam.pt`` (or a zoo file of the same model) -> our names, without the
    unused TinyViT classifier."""
    _check(state_dict, "MobileSAM")
    kept = {k: v for k, v in state_dict.items() if not k.startswith(TINYVIT_HEAD_PREFIXES)}
    return rename_keys(kept, _TO_OURS)


def to_authors_sam(state_dict: StateDict) -> StateDict:
    """Our state dict -> the authors' names (segment_anything / mobile_sam ``Sam``)."""
    return rename_keys(state_dict, _TO_AUTHORS)
