"""Filter functions for the lightweight / efficient SR line: IMDN, RFDN, RLFN-pruned (NTIRE 2022),
PAN and EFDN. Each takes ``(state_dict, model)`` (after the loader has unwrapped training
containers and stripped DataParallel's ``module.``) and returns the state dict for ``model``.

Our module names are the authors' for all five families, so for plain-conv networks the work is
recognising a file of *another* family or scale and saying so in one line, instead of a list of
missing keys: an RFDN file handed to ``imdn_x4`` gets "this checkpoint is RFDN (njulj/RFDN), not
IMDN ... load it with zoo.create('rfdn_x4', ...)". For EFDN it is also the two forms of its re-parameterisable EDBB blocks (see
:func:`filter_efdn`).

Model classes are imported when a filter runs (the model modules import this one for their
pretrained cfgs).
"""

from __future__ import annotations

import math
import re
from typing import Callable

import torch

from zoo.hub import CheckpointError

__all__ = [
    "detect_family",
    "filter_imdn",
    "filter_rfdn",
    "filter_rlfn_ntire",
    "filter_pan",
    "filter_efdn",
]

StateDict = dict[str, torch.Tensor]


def _n_blocks(sd: StateDict, fmt: str) -> int:
    n = 0
    while fmt.format(n + 1) in sd:
        n += 1
    return n


def _pixelshuffle_scale(sd: StateDict, key: str, out_channels: int = 3) -> int | None:
    w = sd.get(key)
    if w is None or w.ndim != 4 or w.shape[0] % out_channels:
        return None
    s = math.isqrt(w.shape[0] // out_channels)
    return s if s * s * out_channels == w.shape[0] else None


def _name(stem: str, scale: int | None) -> str:
    return f"{stem}_x{scale}" if scale else f"a {stem}_x* model"


def _rlfn_kind(sd: StateDict) -> tuple[str, str]:
    blocks = _n_blocks(sd, "block_{}.c1_r.weight")
    ch = sd["conv_1.weight"].shape[0]
    mid = sd["block_1.c1_r.weight"].shape[0]
    scale = _pixelshuffle_scale(sd, "upsampler.0.weight")
    if blocks == 4 and ch == 46 and mid == 48:
        return "RLFN-pruned (NTIRE 2022, RLFN_Prune)", _name("rlfn_ntire", scale)
    name = {52: "rlfn", 48: "rlfn_s"}.get(ch, "rlfn")
    return f"RLFN ({blocks} blocks, {ch} channels)", _name(name, scale)


# (family, predicate, description-and-suggestion); the first predicate that holds wins.
_LAYOUTS: list[tuple[str, Callable[[StateDict], bool], Callable[[StateDict], tuple[str, str]]]] = [
    (
        "imdn",
        lambda sd: "IMDB1.c1.weight" in sd and "IMDB1.cca.conv_du.0.weight" in sd,
        lambda sd: ("IMDN (Zheng222/IMDN)", _name("imdn", _pixelshuffle_scale(sd, "upsampler.0.weight"))),
    ),
    (
        "rfdn",
        lambda sd: "B1.c1_d.weight" in sd and "B1.esa.conv1.weight" in sd,
        lambda sd: ("RFDN (njulj/RFDN)", _name("rfdn", _pixelshuffle_scale(sd, "upsampler.0.weight"))),
    ),
    (
        "span",
        lambda sd: "block_1.c1_r.eval_conv.weight" in sd or "block_1.c1_r.sk.weight" in sd,
        lambda sd: ("SPAN (Conv3XC blocks)", "a span_* model"),
    ),
    (
        "rlfn",
        lambda sd: "block_1.c1_r.weight" in sd and "block_1.esa.conv1.weight" in sd and "conv_1.weight" in sd,
        _rlfn_kind,
    ),
    (
        "pan",
        lambda sd: "SCPA_trunk.0.conv1_a.weight" in sd,
        lambda sd: ("PAN (zhaohengyuan1/PAN)", "pan_x4" if "upconv2.weight" in sd else "pan_x2 or pan_x3"),
    ),
    (
        "efdn",
        lambda sd: "cells.0.conv1.conv1x1.weight" in sd,
        lambda sd: ("EFDN (NTIRE 2025 ESR baseline)", "efdn_x4"),
    ),
]


def detect_family(state_dict: StateDict) -> tuple[str, str, str] | None:
    """``(family, description, suggested zoo model)`` for a known layout, else None."""
    for family, test, describe in _LAYOUTS:
        try:
            if test(state_dict):
                desc, suggestion = describe(state_dict)
                return family, desc, suggestion
        except (KeyError, IndexError, AttributeError):
            continue
    return None


def _expect(state_dict: StateDict, family: str, model: torch.nn.Module, scale_key: str | None) -> None:
    """Raise a one-line :class:`CheckpointError` when the file is of another family or scale.

    Files of no known layout go on to the strict loader, which lists what does not fit.
    """
    found = detect_family(state_dict)
    arch = getattr(model, "zoo_name", type(model).__name__)
    if found is not None and found[0] != family:
        _, desc, suggestion = found
        hint = f"use {suggestion}" if suggestion.startswith("a ") else f"load it with zoo.create({suggestion!r}, checkpoint_path=...)"
        raise CheckpointError(f"this checkpoint is {desc}, not {family.upper()}: it cannot load into {arch!r}; {hint}")
    scale = getattr(model, "scale", None)
    if scale_key is not None and scale is not None:
        out_ch = getattr(model, "out_channels", 3)
        file_scale = _pixelshuffle_scale(state_dict, scale_key, out_ch)
        if file_scale is not None and file_scale != scale:
            raise CheckpointError(
                f"the checkpoint upscales x{file_scale} but {arch!r} upscales x{scale}; "
                f"use the x{file_scale} model of the family"
            )


def filter_imdn(state_dict: StateDict, model: torch.nn.Module) -> StateDict:
    """Zheng222/IMDN ``checkpoints/IMDN_x{2,3,4}.pth``: names are ours (``fea_conv``, ``IMDB1..6``,
    ``c.0``, ``LR_conv``, ``upsampler.0``); ``module.`` is stripped by the loader."""
    _expect(state_dict, "imdn", model, "upsampler.0.weight")
    return dict(state_dict)


def filter_rfdn(state_dict: StateDict, model: torch.nn.Module) -> StateDict:
    """njulj/RFDN ``trained_model/RFDN_AIM.pth``: names are ours (``fea_conv``, ``B1..4``,
    ``c.0``, ``LR_conv``, ``upsampler.0``)."""
    _expect(state_dict, "rfdn", model, "upsampler.0.weight")
    return dict(state_dict)


def filter_rlfn_ntire(state_dict: StateDict, model: torch.nn.Module) -> StateDict:
    """bytedance/RLFN ``model_zoo/rlfn_ntire_x4.pth`` (``RLFN_Prune``): names are ours. A full
    RLFN / RLFN-S file is refused with the model to use instead."""
    _expect(state_dict, "rlfn", model, "upsampler.0.weight")
    found = detect_family(state_dict)
    if found is not None and not found[2].startswith("rlfn_ntire"):
        raise CheckpointError(
            f"this checkpoint is {found[1]}, not the pruned NTIRE 2022 RLFN: load it with "
            f"zoo.create({found[2]!r}, checkpoint_path=...)"
        )
    return dict(state_dict)


def filter_pan(state_dict: StateDict, model: torch.nn.Module) -> StateDict:
    """zhaohengyuan1/PAN ``experiments/pretrained_models/PANx{2,3,4}_DF2K.pth``: names are ours.

    x4 files have a second upsampling stage (``upconv2`` / ``att2`` / ``HRconv2``); x2 and x3 files
    have identical shapes, so which of the two a file is cannot be told from it."""
    _expect(state_dict, "pan", model, None)
    scale = getattr(model, "scale", None)
    has_second = "upconv2.weight" in state_dict
    if scale is not None and has_second != (scale == 4):
        what = "x4 (two upsampling stages)" if has_second else "x2 or x3 (one upsampling stage)"
        raise CheckpointError(f"the checkpoint is a PAN {what} but the model upscales x{scale}")
    return dict(state_dict)


_CELL_FUSE = re.compile(r"^(cells\.\d+\.)fuse\.")
_EDBB_BRANCHES = ("conv1x1", "conv1x1_3x3", "conv1x1_sbx", "conv1x1_sby", "conv1x1_lpl")


def _zero_branches(sd: StateDict, block: torch.nn.Module, p: str) -> None:
    """Give a train-form EDBB whose file holds only the fused ``rep_conv`` branches that add
    exactly zero: ``conv1x1`` zero; each edge branch's ``scale`` and ``bias`` zero (its 1x1 conv
    and mask keep the model's values, so the branch can learn when fine-tuned); ``conv1x1_3x3``'s
    ``k1`` / ``b1`` zero. With the identity branch the identity is taken out of the kernel."""
    for name, t in block.state_dict().items():
        key = f"{p}{name}"
        if name.startswith("rep_conv.") or name.startswith("act."):
            continue
        zero = name.startswith("conv1x1.") or name.endswith((".scale", ".bias", ".k1", ".b1"))
        sd[key] = torch.zeros_like(t) if zero else t.detach().clone()
    if block.with_idt:
        w = sd[f"{p}rep_conv.weight"].clone()
        idx = torch.arange(w.shape[0])
        w[idx, idx, 1, 1] -= 1.0
        sd[f"{p}rep_conv.weight"] = w


def filter_efdn(state_dict: StateDict, model: torch.nn.Module) -> StateDict:
    """EFDN files, deploy form (Amazingren/NTIRE2025_ESR ``model_zoo/team00_EFDN.pth``: each EDBB
    is ``rep_conv`` + ``act``) or train form (EDBB branches: ``rep_conv``, ``conv1x1``,
    ``conv1x1_3x3``, ``conv1x1_{sbx,sby,lpl}`` with ``k0/b0/k1/b1`` or ``k0/b0/scale/bias/mask``).

    - deploy-form file -> deploy-form model (``deploy=True``): loads as it is;
    - deploy-form file -> train-form model (the default): ``rep_conv`` takes the published kernel
      and the other branches are set to add exactly zero (see :func:`_zero_branches`), so the
      outputs are the deploy network's bit for bit, ``zoo.optimize`` gives back the published
      kernels, and fine-tuning can grow the branches again;
    - train-form file -> deploy-form model: each EDBB's branches are fused into ``rep_conv`` with
      the model block's settings (``with_13`` / ``with_idt``), exactly as its ``reparameterize()``;
    - train-form file -> train-form model: loads as it is; the authors' EDBB always holds a
      ``conv1x1_3x3`` branch but adds it only with ``with_13``, so without it the keys are dropped.

    The cells' ``fuse`` convs are renamed ``fusion`` (our name); files written by the zoo load as
    they are.
    """
    from zoo.models.efdn import EDBB, fuse_edbb

    _expect(state_dict, "efdn", model, "tail.0.weight")
    # each cell's 1x1 fusion conv: ``fuse`` upstream, ``fusion`` here (see zoo.models.efdn)
    sd = {_CELL_FUSE.sub(r"\1fusion.", k): v for k, v in state_dict.items()}
    for prefix, block in model.named_modules():
        if not isinstance(block, EDBB):
            continue
        p = f"{prefix}."
        branch_keys = {k for k in sd if any(k.startswith(f"{p}{b}.") for b in _EDBB_BRANCHES)}
        if block.deploy:
            if branch_keys:
                try:
                    kernel, bias = fuse_edbb(
                        {k[len(p):]: v for k, v in sd.items() if k.startswith(p)},
                        with_13=block.with_13,
                        with_idt=block.with_idt,
                    )
                except KeyError as e:
                    raise CheckpointError(f"EDBB {prefix!r} in the file lacks {e.args[0]!r}") from None
                dtype = sd[f"{p}rep_conv.weight"].dtype
                for k in branch_keys:
                    del sd[k]
                sd[f"{p}rep_conv.weight"] = kernel.to(dtype)
                sd[f"{p}rep_conv.bias"] = bias.to(dtype)
        elif not branch_keys:
            if f"{p}rep_conv.weight" in sd:
                _zero_branches(sd, block, p)
        elif not block.with_13:
            for k in [k for k in branch_keys if k.startswith(f"{p}conv1x1_3x3.")]:
                del sd[k]
    return sd
