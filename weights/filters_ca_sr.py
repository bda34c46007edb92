"""Filter functions for the channel-attention SR families: RCAN, HAN and SAFMN.

Our module names are the authors' (yulunzhang/RCAN, wwlCape/HAN, sunny2109/SAFMN), so the keys
of their files map 1:1. What the filters add is a clear refusal of a file of another variant or
architecture, before the strict load, naming the keys that tell them apart: an RCAN x2 file
offered to ``rcan_x4`` is refused because of its upsampler (``tail.0.*``), a HAN file offered to
RCAN because of its ``la.*`` / ``csa.*`` / ``last*`` modules, a SAFMN-L file offered to
``safmn_x4`` because of its width and depth. Each takes ``(state_dict, model)`` and returns the
state dict to load.
"""

from __future__ import annotations

import math
import re

import torch

from zoo.hub import CheckpointError

__all__ = ["filter_rcan", "filter_han", "filter_safmn", "edsr_upsampler_scale"]

StateDict = dict[str, torch.Tensor]

_HAN_ONLY = ("la.", "csa.", "last_conv.", "last.")


def edsr_upsampler_scale(state_dict: StateDict, prefix: str = "tail.0") -> int | None:
    """The upscale factor of an EDSR ``Upsampler`` stored under ``prefix`` (convs at ``prefix.0``,
    ``prefix.2`` ...: C -> 4C per x2 stage, C -> 9C for x3); None when there is none or the
    layout is not EDSR's."""
    scale, i = 1, 0
    while f"{prefix}.{i}.weight" in state_dict:
        w = state_dict[f"{prefix}.{i}.weight"]
        if w.ndim != 4 or w.shape[1] == 0 or w.shape[0] % w.shape[1]:
            return None
        ratio = w.shape[0] // w.shape[1]
        if ratio == 4:
            scale *= 2
        elif ratio == 9:
            scale *= 3
        else:
            return None
        i += 2
    return scale if i else None


def _shapes(state_dict: StateDict, prefix: str) -> str:
    keys = sorted((k for k in state_dict if k.startswith(prefix) and k.endswith(".weight")), key=_natural)
    return ", ".join(f"{k} {tuple(state_dict[k].shape)}" for k in keys) or "none"


def _natural(key: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key)]


def _filter_edsr_family(state_dict: StateDict, model: torch.nn.Module, family: str) -> StateDict:
    sd = dict(state_dict)
    scale = int(getattr(model, "scale"))
    han_keys = sorted(k for k in sd if k.startswith(_HAN_ONLY))
    if family == "rcan" and han_keys:
        raise CheckpointError(
            f"the file is a HAN checkpoint (it has {', '.join(han_keys[:4])}), not RCAN: load it with han_x{scale}"
        )
    if family == "han" and "head.0.weight" in sd and not han_keys:
        raise CheckpointError(
            "the file is an RCAN checkpoint (no la.gamma / csa.conv.weight / last_conv.weight / last.weight), "
            f"not HAN: load it with rcan_x{scale}"
        )
    if "tail.0.0.weight" not in sd or "head.0.weight" not in sd:
        raise CheckpointError(
            f"the file is not an {family.upper()} checkpoint of the authors' layout "
            "(it has no head.0.weight / tail.0.0.weight)"
        )
    file_cfg = {
        "n_resgroups": len({k.split(".")[1] for k in sd if re.match(r"body\.\d+\.body\.0\.body\.0\.weight$", k)}),
        "n_resblocks": len({k.split(".")[3] for k in sd if re.match(r"body\.0\.body\.\d+\.body\.0\.weight$", k)}),
        "n_feats": int(sd["head.0.weight"].shape[0]),
    }
    own_cfg = {k: getattr(model, k, None) for k in file_cfg}
    if file_cfg != own_cfg:
        args = ", ".join(f"{k}={v}" for k, v in file_cfg.items() if own_cfg[k] != v)
        raise CheckpointError(
            f"the file is a {family.upper()} with {', '.join(f'{k}={v}' for k, v in file_cfg.items())} (from its body.* "
            f"and head.0.weight {tuple(sd['head.0.weight'].shape)}); the model has "
            f"{', '.join(f'{k}={v}' for k, v in own_cfg.items())}: create it with {args}"
        )
    file_scale = edsr_upsampler_scale(sd, "tail.0")
    if file_scale != scale:
        own = model.state_dict()
        what = f"x{file_scale}" if file_scale else "of an unknown scale"
        hint = f": create {family}_x{file_scale}" if file_scale else ""
        raise CheckpointError(
            f"the file's upsampler is {what} (tail keys {_shapes(sd, 'tail.0.')}), the model "
            f"{type(model).__name__} x{scale} expects tail keys {_shapes(own, 'tail.0.')}{hint}"
        )
    return sd


def filter_rcan(state_dict: StateDict, model: torch.nn.Module) -> StateDict:
    """yulunzhang/RCAN ``RCAN_BIX{2,3,4,8}.pt`` (and EDSR-PyTorch's RCAN): keys map 1:1; a file
    of another scale or a HAN file is refused with the keys that show it."""
    return _filter_edsr_family(state_dict, model, "rcan")


def filter_han(state_dict: StateDict, model: torch.nn.Module) -> StateDict:
    """wwlCape/HAN ``HAN_BIX{2,3,4,8}.pt``: keys map 1:1; a file of another scale or a plain RCAN
    file is refused with the keys that show it."""
    return _filter_edsr_family(state_dict, model, "han")


def filter_safmn(state_dict: StateDict, model: torch.nn.Module) -> StateDict:
    """sunny2109/SAFMN ``SAFMN_DF2K_x{2,3,4}.pth`` (BasicSR ``params``): keys map 1:1; a file of
    another scale, width or depth (e.g. SAFMN-L, dim 128 x 16 blocks) is refused, naming it."""
    sd = dict(state_dict)
    if "to_feat.weight" not in sd or "to_img.0.weight" not in sd or "feats.0.ccm.ccm.0.weight" not in sd:
        raise CheckpointError(
            "the file is not a SAFMN checkpoint of the authors' layout "
            "(it lacks to_feat.weight / feats.0.ccm.ccm.0.weight / to_img.0.weight)"
        )
    dim = int(sd["to_feat.weight"].shape[0])
    n_blocks = len({k.split(".")[1] for k in sd if re.match(r"feats\.\d+\.", k)})
    hidden = int(sd["feats.0.ccm.ccm.0.weight"].shape[0])
    out = int(sd["to_img.0.weight"].shape[0])
    scale = math.isqrt(out // 3) if out % 3 == 0 else 0
    if scale * scale * 3 != out:
        raise CheckpointError(f"to_img.0.weight {tuple(sd['to_img.0.weight'].shape)} is not a SAFMN pixel-shuffle head")
    file_cfg = {"dim": dim, "n_blocks": n_blocks, "ffn_scale": hidden / dim}
    own_cfg = {"dim": model.dim, "n_blocks": model.n_blocks, "ffn_scale": model.hidden_dim / model.dim}
    if scale != model.scale or file_cfg != own_cfg:
        args = ", ".join(f"{k}={v:g}" for k, v in file_cfg.items() if own_cfg[k] != v)
        hint = f"create safmn_x{scale}" + (f" with {args}" if args else "")
        raise CheckpointError(
            f"the file is SAFMN dim={dim}, n_blocks={n_blocks}, ffn_scale={hidden / dim:g}, x{scale} "
            f"(to_feat.weight {tuple(sd['to_feat.weight'].shape)}, to_img.0.weight {tuple(sd['to_img.0.weight'].shape)}); "
            f"the model is dim={model.dim}, n_blocks={model.n_blocks}, ffn_scale={own_cfg['ffn_scale']:g}, "
            f"x{model.scale}: {hint}"
        )
    return sd
