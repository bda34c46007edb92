"""Base classes that give every family of a task the same outer contract."""

from __future__ import annotations

import torch
import torch.nn as nn

from zoo.validate import check_image

__all__ = ["SRModel"]


class SRModel(nn.Module):
    """Super-resolution contract: ``forward(lr)`` takes RGB in [0, 1] and returns RGB in [0, 1].

    Subclasses implement ``forward_raw`` in the authors' own value range (``rgb_range``: 255 for
    RLFN / RFDN, 1 for SPAN): the scaling happens here, exactly as the authors' test code does it
    (``model(img * 255) / 255``), so their checkpoints give their numbers.
    """

    scale: int
    rgb_range: float = 1.0
    in_channels: int = 3

    def forward_raw(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image(x, channels=self.in_channels, name=f"{type(self).__name__} input (low-resolution RGB)")
        if self.rgb_range != 1.0:
            return self.forward_raw(x * self.rgb_range) / self.rgb_range
        return self.forward_raw(x)
