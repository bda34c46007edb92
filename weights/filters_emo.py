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

__all__ = ["filter_emo2"]

StateDict = dict[str, torch.Tensor]

_WRAPPERS = ("net", "net_E", "state_dict", "model", "model_ema", "state_dict_ema")
_PREFIXES = ("module.", "_orig_mod.", "model.")
_MARKER = "stage0.0.conv.weight"  # the stem's first conv: every EMO / EMOv2 file has it


def _unwrap(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    for _ in range(4):
        if any(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
        for key in _WRAPPERS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
        else:
            return obj
    return obj


def filter_emo2(state_dict: Mapping[str, Any], model: torch.nn.Module) -> StateDict:
    """zhangzjn/EMOv2 ``EMOv2_*.pth`` (and EMO-style training checkpoints) -> our EMO2."""
    sd = {k: v for k, v in _unwrap(state_dict).items() if isinstance(v, torch.Tensor) and k != "n_averaged"}
    changed = True
    while changed and sd:
        changed = False
        for prefix in _PREFIXES:
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix):]: v for k, v in sd.items()}
                changed = True
    if _MARKER not in sd:
        raise KeyError(f"not an EMOv2 state dict: no {_MARKER!r} (first keys: {list(sd)[:3]})")
    return sd
