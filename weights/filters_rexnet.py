"""Filter function for the ReXNet authors' checkpoints (clovaai/rexnet ``rexnetv1_*.pth``, MIT,
Copyright 2020-present NAVER Corp.) into timm's ``RexNet`` (``zoo.models.timm_models``).

timm has no such converter (its ``rexnet_*.nav_in1k`` weights were converted once, offline), so
the mapping is written here from reading both implementations:

===================================================  ===========================================
authors' ``ReXNetV1`` (``rexnetv1.py``)                timm ``RexNet``
===================================================  ===========================================
``features.0`` / ``features.1`` (stem conv / BN)     ``stem.conv`` / ``stem.bn``
``features.{3+b}.out.*`` (``LinearBottleneck`` b)    ``features.{b}.*`` (see below)
``features.{3+B}`` / ``features.{4+B}`` (1x1 conv)   ``features.{B}.conv`` / ``features.{B}.bn``
``output.1`` (1x1 conv with bias)                    ``head.fc`` (``Linear``: weight squeezed)
===================================================  ===========================================

with B the number of blocks. Inside a block the authors keep one ``out`` sequence:
``[expand conv, BN, SiLU]`` (when the expansion ratio is not 1), ``depthwise conv, BN``,
``[SE]``, ``ReLU6``, ``project conv, BN``; timm names them ``conv_exp.{conv,bn}``,
``conv_dw.{conv,bn}``, ``se``, ``conv_pwl.{conv,bn}``. The authors' SE is
``fc = [conv, BN, ReLU, conv, Sigmoid]`` -> timm's ``se.fc1``, ``se.bn``, ``se.fc2``.
Which block has an expansion conv and which an SE is read from the file itself (a block's first
conv is the 1x1 expansion or else the 3x3 depthwise; SE keys are there or not), so the filter
works for every width multiplier.
"""

from __future__ import annotations

import re

import torch

__all__ = ["filter_rexnet"]

StateDict = dict[str, torch.Tensor]

_SE = {"0": "fc1", "1": "bn", "3": "fc2"}
_KEY = re.compile(r"^features\.(\d+)\.(.+)$")


def _block_names(has_exp: bool, has_se: bool) -> list[str | None]:
    """timm module name for each index of the authors' ``out`` sequence (None: no parameters)."""
    names: list[str | None] = ["conv_exp.conv", "conv_exp.bn", None] if has_exp else []
    names += ["conv_dw.conv", "conv_dw.bn"]
    names += ["se"] if has_se else []
    names += [None, "conv_pwl.conv", "conv_pwl.bn"]
    return names


def filter_rexnet(state_dict: StateDict, model: torch.nn.Module) -> StateDict:
    """clovaai/rexnet ``ReXNetV1`` state dict -> timm ``RexNet``. A file already in timm's layout
    (``stem.conv.weight``) is returned as it is."""
    if "stem.conv.weight" in state_dict:
        return dict(state_dict)
    if "features.0.weight" not in state_dict or "output.1.weight" not in state_dict:
        raise KeyError(
            "not a clovaai ReXNetV1 state dict (expected 'features.0.weight' and 'output.1.weight', "
            f"got e.g. {', '.join(list(state_dict)[:3])})"
        )
    block_ids = sorted({int(m.group(1)) for k in state_dict if (m := _KEY.match(k)) and m.group(2).startswith("out.")})
    if not block_ids or block_ids != list(range(3, 3 + len(block_ids))):
        raise KeyError(f"unexpected block indices in the authors' features: {block_ids}")
    n_blocks = len(block_ids)
    pen = 3 + n_blocks  # the final 1x1 conv (then its BN, SiLU, pool)

    layouts: dict[int, list[str | None]] = {}
    for i in block_ids:
        first = state_dict[f"features.{i}.out.0.weight"]
        has_exp = first.shape[-1] == 1  # a 1x1 expansion conv first; else the depthwise 3x3 comes first
        has_se = any(k.startswith(f"features.{i}.out.") and ".fc." in k for k in state_dict)
        layouts[i] = _block_names(has_exp, has_se)

    out: StateDict = {}
    for key, value in state_dict.items():
        if key.startswith("output.1."):
            param = key[len("output.1."):]
            out[f"head.fc.{param}"] = value.flatten(1) if param == "weight" else value
            continue
        m = _KEY.match(key)
        if m is None:
            raise KeyError(f"unexpected key in a ReXNetV1 state dict: {key}")
        i, rest = int(m.group(1)), m.group(2)
        if i in (0, 1):
            out[f"stem.{'conv' if i == 0 else 'bn'}.{rest}"] = value
        elif i in layouts:
            sub = re.match(r"^out\.(\d+)\.(.+)$", rest)
            if sub is None:
                raise KeyError(f"unexpected key in a ReXNetV1 block: {key}")
            j, param = int(sub.group(1)), sub.group(2)
            names = layouts[i]
            name = names[j] if j < len(names) else None
            if name is None:
                raise KeyError(f"{key}: index {j} of block {i - 3} holds no parameters in ReXNetV1")
            if name == "se":
                fc = re.match(r"^fc\.(\d+)\.(.+)$", param)
                if fc is None or fc.group(1) not in _SE:
                    raise KeyError(f"unexpected SE key: {key}")
                name, param = f"se.{_SE[fc.group(1)]}", fc.group(2)
            out[f"features.{i - 3}.{name}.{param}"] = value
        elif i in (pen, pen + 1):
            out[f"features.{n_blocks}.{'conv' if i == pen else 'bn'}.{rest}"] = value
        else:
            raise KeyError(f"unexpected key in a ReXNetV1 state dict: {key}")
    return out
