"""Filters for the VAE decoders' published weight files."""

from __future__ import annotations

import re

import torch

from .filters import StateDict

__all__ = ["filter_taesd"]

_DIFFUSERS = re.compile(r"^(encoder|decoder)\.layers\.(\d+)\.(.*)$")


def filter_taesd(state_dict: StateDict, model: torch.nn.Module) -> StateDict:
    """The tiny autoencoders' weights -> ours.

    Accepts our own layout (``encoder.N`` / ``decoder.N``, the authors' module indices) and
    diffusers' ``AutoencoderTiny`` layout (``encoder.layers.N``; ``decoder.layers.N`` is the
    authors' ``N + 1``, since diffusers applies the latent clamp in ``forward`` rather than as the
    decoder's first module).
    """
    out: StateDict = {}
    for k, v in state_dict.items():
        m = _DIFFUSERS.match(k)
        if m:
            part, idx, rest = m.group(1), int(m.group(2)), m.group(3)
            k = f"{part}.{idx + 1 if part == 'decoder' else idx}.{rest}"
        out[k] = v
    return out
