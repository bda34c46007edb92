"""Filter function for SimpleNetV1 (Coderx7/SimpleNet_Pytorch ``simplenetv1_*.pth``).

The authors' ImageNet model is one flat ``features`` sequence plus a ``classifier`` linear layer,
and :class:`zoo.models.simplenet.SimpleNet` keeps those names and indices, so their files map 1:1.
The check here turns a file of another layout into a clear error instead of a list of missing
keys.
"""

from __future__ import annotations

import torch

__all__ = ["filter_simplenet"]

StateDict = dict[str, torch.Tensor]


def filter_simplenet(state_dict: StateDict, model: torch.nn.Module) -> StateDict:
    """The authors' state dict (``features.N.*``, ``classifier.*``): our keys already."""
    if "features.0.weight" not in state_dict or "classifier.weight" not in state_dict:
        raise KeyError(
            "not a SimpleNetV1 ImageNet state dict (expected 'features.0.weight' and 'classifier.weight', "
            f"got e.g. {', '.join(list(state_dict)[:3])})"
        )
    return dict(state_dict)
