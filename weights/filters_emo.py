"""Filter functions for the EMO family (zhangzjn/EMOv2): upstream state dict -> ours.

Our module names are the authors' (``model/lib_emo/emo2.py``), so the work is only to take off
what training put around the weights:

- the authors' trainer saves ``{"net": ..., "net_E": ...}`` (``net_E`` the EMA copy); their
  loader (``model/__init__.py``, ``get_model``) reads ``net`` unless asked for the EMA, and so do
  we (the zoo loader has usually opened ``net`` already); ``state_dict`` / ``model`` /
  ``model_ema`` / ``state_dict_ema`` wrappers of other trainers are opened too;
- ``module.`` (DataParallel / DDP, timm's ``ModelEma``), ``_orig_mod.`` (``torch.compile``)
  and ``model.`` prefixes, when every key has them;
- ``n_averaged`` (``torch.optim.swa_utils.AveragedModel``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .filters import StateDict, unwrap_training_checkpoint

__all__ = ["filter_emo2"]


_WRAPPERS = ("net", "net_E", "state_dict", "model", "model_ema", "state_dict_ema")
_PREFIXES = ("module.", "_orig_mod.", "model.")
_MARKER = "stage0.0.conv.weight"  # the stem's first conv: every EMO / EMOv2 file has it


def filter_emo2(state_dict: Mapping[str, Any], model: torch.nn.Module) -> StateDict:
    """zhangzjn/EMOv2 ``EMOv2_*.pth`` (and EMO-style training checkpoints) -> our EMO2."""
    return unwrap_training_checkpoint(state_dict, _WRAPPERS, _PREFIXES, _MARKER, "an EMOv2", drop=("n_averaged",))
