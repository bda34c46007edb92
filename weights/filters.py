"""Filter functions: convert an upstream state dict (after ``module.`` and training wrappers are
stripped by the loader) into the zoo's layout. One per upstream layout; each takes
``(state_dict, model)`` and returns the converted dict, raising ``KeyError``/``ValueError`` on a
file that is not of its layout (the loader turns those into a clear ``CheckpointError``)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import torch

StateDict = dict[str, torch.Tensor]

__all__ = ["filter_identity", "filter_rlfn", "rename_keys", "unwrap_training_checkpoint"]


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


def unwrap_training_checkpoint(
    obj: Mapping[str, Any],
    wrappers: Iterable[str],
    prefixes: Iterable[str] = ("module.", "_orig_mod.", "model."),
    marker: str | None = None,
    family: str = "the expected",
    drop: Iterable[str] = (),
) -> StateDict:
    """The tensors of a training checkpoint: open the first of ``wrappers`` found (nested, up to
    four levels) until a mapping holds tensors, keep the tensors (less the keys in ``drop``, e.g.
    ``AveragedModel``'s ``n_averaged``), then strip each of ``prefixes``
    while *every* key has it (DDP ``module.``, ``torch.compile``'s ``_orig_mod.`` ...). With
    ``marker``, a ``KeyError`` says the file is not a ``family`` state dict when that key is
    missing."""
    wrappers, prefixes = tuple(wrappers), tuple(prefixes)
    for _ in range(4):
        if any(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        inner = next((obj[k] for k in wrappers if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    dropped = set(drop)
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor) and k not in dropped}
    changed = True
    while changed and sd:
        changed = False
        for prefix in prefixes:
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix):]: v for k, v in sd.items()}
                changed = True
    if marker is not None and marker not in sd:
        raise KeyError(f"not {family} state dict: no {marker!r} (first keys: {list(sd)[:3]})")
    return sd
