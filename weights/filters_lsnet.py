"""Filter function for LSNet (THU-MIG/lsnet): the authors' checkpoint -> our LSNet.

Our module names are the authors' (``model/lsnet.py``: ``patch_embed.N.{c,bn}``,
``blocksS.N.{mixer,se,ffn}``, ``head.{bn,l}``, ``head_dist``), so the work is to take off what
training put around the weights and to say clearly when a file does not fit:

- the authors' trainer (DeiT / EfficientViT ``main.py``) saves ``{"model": ..., "model_ema":
  ..., "optimizer": ..., ...}``; ``model`` is what their ``--resume`` evaluation loads and what
  we read (the zoo loader has usually opened it already); ``state_dict`` / ``state_dict_ema``
  wrappers of other trainers are opened too;
- ``module.`` (DataParallel / DDP), ``_orig_mod.`` (``torch.compile``) and ``model.`` prefixes,
  when every key has them;
- ``attention_bias_idxs`` (a buffer that only enumerates relative offsets, the same in every
  file) is taken from the model when a file lacks it (timm-style exports drop it);
- a distilled file (``head_dist.*``, the README's ``*_distill.pth``) needs the model built with
  ``distillation=True`` (the ``.in1k_distill`` tags do that) and a plain file the plain model: the
  mismatch is reported by name instead of as a list of missing keys.

The published files are the training (unfused) form; the authors' ``fuse()`` methods, which our
modules have too (``zoo.optimize``), are applied after loading, never to the files.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .filters import StateDict, unwrap_training_checkpoint

__all__ = ["filter_lsnet"]


_WRAPPERS = ("model", "state_dict", "model_ema", "state_dict_ema")
_PREFIXES = ("module.", "_orig_mod.", "model.")
_MARKER = "patch_embed.0.c.weight"  # the stem's first conv: every LSNet file has it


def filter_lsnet(state_dict: Mapping[str, Any], model: torch.nn.Module) -> StateDict:
    """THU-MIG/lsnet ``lsnet_{t,s,b}[_distill].pth`` (or a training checkpoint) -> our LSNet."""
    sd = unwrap_training_checkpoint(state_dict, _WRAPPERS, _PREFIXES, _MARKER, "an LSNet")
    own = model.state_dict()
    for key, value in own.items():
        if key.endswith("attention_bias_idxs") and key not in sd:
            sd[key] = value.clone()
    file_distilled = any(k.startswith("head_dist.") for k in sd)
    model_distilled = any(k.startswith("head_dist.") for k in own)
    if file_distilled and not model_distilled:
        raise ValueError(
            "a distilled LSNet checkpoint (it has head_dist.*): build the model with distillation=True "
            "(the .in1k_distill tag does that)"
        )
    if model_distilled and not file_distilled and "head.l.weight" in sd:
        raise ValueError(
            "this LSNet checkpoint has no distillation head (head_dist.*): build the model without "
            "distillation (the .in1k tag)"
        )
    return sd
