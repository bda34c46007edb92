"""Filter functions for the SPAN family (SPAN, SPAN ch28, SPAN-F, DSCLoRA): upstream state dict
-> ours, for the model that was built (train form or deploy form).

Our module names are the authors' (``conv_1``, ``block_N.cK_r.{sk,conv.J,eval_conv}``,
``conv_cat``, ``conv_2``, ``upsampler.0``, ``conv_near``, ``*.lora_A`` / ``*.lora_B``), so the
work is about the two forms of Conv3XC:

- a file with the branches (``sk`` / ``conv.*``): its ``eval_conv`` is whatever the last fusion
  left there (the authors' SPAN re-fuses before every eval forward and ignores it), so it is
  recomputed from the branches; a deploy-form model keeps only that fused ``eval_conv``;
- a deploy-form file (``eval_conv`` only) loads into a deploy-form model; into a train-form model
  it is refused with a clear error (the branches cannot be recovered from a fused kernel).

The model classes are imported when a filter runs, not at import time (``zoo.models.span``
imports this module for its pretrained cfgs).
"""

from __future__ import annotations

import torch

from zoo.hub import CheckpointError

__all__ = ["filter_span", "filter_dsclora"]

StateDict = dict[str, torch.Tensor]

_BRANCH_SUFFIXES = ("sk.weight", "sk.bias") + tuple(f"conv.{i}.{p}" for i in range(3) for p in ("weight", "bias"))


def filter_span(state_dict: StateDict, model: torch.nn.Module) -> StateDict:
    """SPAN / SPAN-F files, train form (hongyuanyu/SPAN) or deploy form (NTIRE ``model_zoo``)."""
    from zoo.models.span import Conv3XC, fuse_conv3xc

    sd = dict(state_dict)
    if "no_norm" in sd:  # spandrel's marker of a SPAN without input normalisation
        if getattr(model, "norm", False):
            raise CheckpointError(
                "the file is a SPAN without input normalisation ('no_norm'); create the model with norm=False"
            )
        del sd["no_norm"]
    for prefix, module in model.named_modules():
        if not isinstance(module, Conv3XC):
            continue
        p = f"{prefix}." if prefix else ""
        branch_keys = [p + s for s in _BRANCH_SUFFIXES]
        present = [k for k in branch_keys if k in sd]
        if present and len(present) != len(branch_keys):
            missing = sorted(set(branch_keys) - set(present))
            raise CheckpointError(f"Conv3XC {prefix!r} in the file lacks {', '.join(missing)}")
        if present:
            kernel, bias = fuse_conv3xc(*(sd[k] for k in (branch_keys[2:] + branch_keys[:2])))
            dtype = sd[p + "sk.weight"].dtype
            sd[p + "eval_conv.weight"] = kernel.to(dtype)
            sd[p + "eval_conv.bias"] = bias.to(dtype)
            if module.deploy:
                for k in branch_keys:
                    del sd[k]
        elif not module.deploy and p + "eval_conv.weight" in sd:
            raise CheckpointError(
                "the file holds the deploy form of SPAN (eval_conv only, no sk / conv branches): "
                "create the model with deploy=True"
            )
    return sd


def filter_dsclora(state_dict: StateDict, model: torch.nn.Module) -> StateDict:
    """DSCLoRA files (Yaozzz666/DSCF-SR ``model_zoo/team23_DSCF.pth``), or a plain SPAN file of
    the same size as the base: LoRA factors absent from the file start as the model's fresh ones
    (``lora_B = 0``: no update yet), which is what the authors' loader (``strict=False``) does."""
    from zoo.models.span import LoRAConv2d

    sd = filter_span(state_dict, model)
    for prefix, module in model.named_modules():
        if not isinstance(module, LoRAConv2d):
            continue
        a, b = f"{prefix}.lora_A", f"{prefix}.lora_B"
        if (a in sd) != (b in sd):
            raise CheckpointError(f"LoRA layer {prefix!r} in the file has only one of lora_A / lora_B")
        if a not in sd and f"{prefix}.weight" in sd:
            sd[a] = module.lora_A.detach().clone()
            sd[b] = torch.zeros_like(module.lora_B)
    return sd
