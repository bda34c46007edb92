"""Filters for the learned codecs' published weight files."""

from __future__ import annotations

import torch

from .filters import StateDict

__all__ = ["filter_compressai", "COMPRESSAI_FILES"]

# CompressAI's published MSE files (compressai.zoo.image.model_urls), by architecture and quality.
COMPRESSAI_FILES: dict[str, dict[int, str]] = {
    "bmshj2018-factorized": {q: f"bmshj2018-factorized-prior-{q}-{h}.pth.tar" for q, h in zip(range(1, 9), (
        "446d5c7f", "87279a02", "5c6f152b", "1ed4405a", "866ba797", "9b02ea3a", "6dfd6734", "5232faa3"))},
    "bmshj2018-hyperprior": {q: f"bmshj2018-hyperprior-{q}-{h}.pth.tar" for q, h in zip(range(1, 9), (
        "7eb97409", "93677231", "6d87be32", "de1b779c", "f8b614e1", "1ab9c41e", "3804dcbd", "a583f0cf"))},
    "mbt2018-mean": {q: f"mbt2018-mean-{q}-{h}.pth.tar" for q, h in zip(range(1, 9), (
        "e522738d", "e54a039d", "723404a8", "6dba02a3", "d504e8eb", "a19628ab", "d5d441d1", "8089ae3e"))},
    "cheng2020-anchor": {q: f"cheng2020-anchor-{q}-{h}.pth.tar" for q, h in zip(range(1, 7), (
        "dad2ebff", "a29008eb", "e49be189", "98b0b468", "23852949", "4c052b1a"))},
}


def filter_compressai(state_dict: StateDict, model: torch.nn.Module) -> StateDict:
    """CompressAI's published files -> the current CompressAI layout, as ``compressai.zoo`` does
    on load: DataParallel prefixes, ``downsample`` -> ``skip``, the entropy bottleneck's old
    ``_matrix0`` / ``_bias0`` / ``_factor0`` names -> ``_matrices.0`` ...; then the entropy
    coders' table buffers are resized to the file's (``model.prepare_state_dict``)."""
    from compressai.models.utils import remap_old_keys
    from compressai.zoo.pretrained import load_pretrained

    sd = dict(remap_old_keys("entropy_bottleneck", load_pretrained(dict(state_dict))))
    if hasattr(model, "prepare_state_dict"):
        model.prepare_state_dict(sd)
    return sd
