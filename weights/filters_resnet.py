"""Filter functions for the channel-attention ResNets (``zoo.models.resnet_attn``) and
ECA-MobileNetV2 (``zoo.models.eca_mobilenetv2``): the authors' state dicts -> ours.

Our ResNets are timm's ``ResNet``, whose names are torchvision's (``conv1``, ``bn1``,
``layer{1-4}.{i}.conv1/bn1/...``, ``downsample.0/1``, ``fc``) except that timm calls a block's
attention module ``se``. So:

- cfzd/FcaNet (MIT) ``fca{34,50,101,152}.pth`` (torchvision ResNet + ``att``, a
  ``MultiSpectralAttentionLayer`` with ``dct_layer.weight``, ``fc.0.weight``, ``fc.2.weight``):
  ``layerX.Y.att.*`` -> ``layerX.Y.se.*``; everything else is unchanged.
- BangguWu/ECANet (MIT) ``eca_resnet*_k*.pth.tar`` (their own torchvision-style ResNet + ``eca``,
  an ``eca_layer`` with ``conv.weight`` of shape (1, 1, k)): ``layerX.Y.eca.*`` ->
  ``layerX.Y.se.*`` (timm's ``EcaModule`` keeps its 1-D conv as ``conv`` too).
- BangguWu/ECANet ``eca_mobilenetv2_k13.pth.tar``: our module names are the authors'
  (``features``, ``classifier``), so only the wrappers come off.

Files in our own layout (``se``; what the zoo itself writes) pass through unchanged.

The ECANet files are training checkpoints, ``{"epoch", "arch", "state_dict", "best_prec1",
"optimizer"}``, saved from ``nn.DataParallel``: ``state_dict`` is opened and the ``module.``
prefix taken off (the zoo loader usually did both already; the filters do it again so they can
be used on their own). FcaNet's eval script loads its files into a DataParallel model after
adding ``module.``; such copies load too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["filter_fcanet", "filter_eca_resnet", "filter_eca_mobilenetv2", "strip_wrappers"]

StateDict = dict[str, torch.Tensor]

_WRAPPERS = ("state_dict", "model", "net")
_PREFIXES = ("module.", "_orig_mod.")


def strip_wrappers(state_dict: Mapping[str, Any]) -> StateDict:
    """Open ``{"state_dict": ...}``-style training checkpoints and take off ``module.`` /
    ``_orig_mod.`` prefixes (when every key has them); keep only tensors."""
    obj: Mapping[str, Any] = state_dict
    for _ in range(3):
        if any(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        for key in _WRAPPERS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
        else:
            break
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    changed = True
    while changed and sd:
        changed = False
        for prefix in _PREFIXES:
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix):]: v for k, v in sd.items()}
                changed = True
    return sd


def _rename_block_attn(sd: StateDict, upstream: str) -> StateDict:
    """``layerX.Y.<upstream>.rest`` -> ``layerX.Y.se.rest``; other keys unchanged."""
    out: StateDict = {}
    for k, v in sd.items():
        parts = k.split(".")
        if len(parts) > 3 and parts[0].startswith("layer") and parts[2] == upstream:
            parts[2] = "se"
            k = ".".join(parts)
        out[k] = v
    return out


def _require(sd: StateDict, marker: str, what: str) -> None:
    """A ResNet state dict with block attention named ``marker`` (the authors') or ``se`` (ours,
    e.g. a file the zoo wrote)."""
    if "conv1.weight" not in sd or not any(f".{m}." in k for k in sd for m in (marker, "se")):
        raise KeyError(f"not {what} state dict: no 'conv1.weight' / '*.{marker}.*' keys (first keys: {list(sd)[:3]})")


def filter_fcanet(state_dict: Mapping[str, Any], model: torch.nn.Module) -> StateDict:
    """cfzd/FcaNet ``fca*.pth`` (``model/fcanet.py`` layout) -> our ``fcanet*`` (timm ResNet)."""
    sd = strip_wrappers(state_dict)
    _require(sd, "att", "an FcaNet")
    return _rename_block_attn(sd, "att")


def filter_eca_resnet(state_dict: Mapping[str, Any], model: torch.nn.Module) -> StateDict:
    """BangguWu/ECANet ``eca_resnet*_k*.pth.tar`` (``models/eca_resnet.py`` layout) -> our
    ``eca_resnet*`` (timm ResNet with ``EcaModule`` as ``se``)."""
    sd = strip_wrappers(state_dict)
    _require(sd, "eca", "an ECA-ResNet")
    return _rename_block_attn(sd, "eca")


def filter_eca_mobilenetv2(state_dict: Mapping[str, Any], model: torch.nn.Module) -> StateDict:
    """BangguWu/ECANet ``eca_mobilenetv2_k13.pth.tar`` (``models/eca_mobilenetv2.py``) -> ours:
    same names, wrappers off."""
    sd = strip_wrappers(state_dict)
    if "features.0.0.weight" not in sd or "classifier.1.weight" not in sd:
        raise KeyError(f"not an ECA-MobileNetV2 state dict: no 'features.0.0.weight' / 'classifier.1.weight' (first keys: {list(sd)[:3]})")
    return sd
