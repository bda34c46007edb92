"""Filter functions: convert an upstream state dict (after ``module.`` and training wrappers are
stripped by the loader) into the zoo's layout. One per upstream layout; each takes
``(state_dict, model)`` and returns the converted dict, raising ``KeyError``/``ValueError`` on a
file that is not of its layout (the loader turns those into a clear ``CheckpointError``)."""

from __future__ import annotations

import re
from typing import Iterable

import torch

StateDict = dict[str, torch.Tensor]

__all__ = ["filter_identity", "rename_keys", "filter_rlfn"]


def rename_keys(state_dict: StateDict, rules: Iterable[tuple[str, str]]) -> StateDict:
    """Apply regex ``(pattern, replacement)`` rules to every key, in order."""
    rules = [(re.compile(p), r) for p, r in rules]
    out: StateDict = {}
    for k, v in state_dict.items():
        for pat, rep in rules:
            k = pat.sub(rep, k)
        out[k] = v
    return out


def filter_identity(state_dict: StateDict, model: torch.nn.Module) -> StateDict:
    """For upstream files whose keys are ours already."""
    return state_dict


def filter_rlfn(state_dict: StateDict, model: torch.nn.Module) -> StateDict:
    """bytedance/RLFN ``model_zoo/*.pth``: our module names mirror the authors', so keys map 1:1."""
    return filter_identity(state_dict, model)
