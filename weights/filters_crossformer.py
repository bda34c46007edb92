"""Filter function for the authors' CrossFormer checkpoints (cheerss/CrossFormer, MIT):
``crossformer-t.pth`` / ``crossformer-s.pth`` -> :class:`zoo.models.crossformer.CrossFormer`.

The authors' training script saves ``{'model': state_dict, 'optimizer': ..., ...}`` (the loader
unwraps ``model``; a dict still wrapped is unwrapped here too). Parameter names are ours already.
Their classification code also stores two buffers in every attention module, built for the
224 x 224 group size it was made for: ``attn.biases`` (the DPB input table of offsets) and
``attn.relative_position_index``. Our attention builds both from the group shape at each forward
(so that any input size works), so the filter checks that the stored ones are the standard
tables (a file from some other variant would not be) and drops them. ``attn_mask`` is ``None`` in
their code and never stored.
"""

from __future__ import annotations

import torch

__all__ = ["filter_crossformer"]

StateDict = dict[str, torch.Tensor]


def _tables(gh: int, gw: int) -> tuple[torch.Tensor, torch.Tensor]:
    from zoo.models.crossformer import relative_offsets

    return relative_offsets(gh, gw)


def _group_side(n_offsets: int) -> int:
    # (2g - 1)^2 offsets for a g x g group
    side = (round(n_offsets ** 0.5) + 1) // 2
    if (2 * side - 1) ** 2 != n_offsets:
        raise ValueError(f"attn.biases holds {n_offsets} offsets, not (2g-1)^2 for a square group")
    return side


def filter_crossformer(state_dict: StateDict, model: torch.nn.Module) -> StateDict:
    """Unwrap ``model``, verify and drop the stored DPB offset tables and relative indices."""
    if "model" in state_dict and isinstance(state_dict["model"], dict):
        state_dict = state_dict["model"]
    if all(k.startswith("module.") for k in state_dict):
        state_dict = {k[len("module."):]: v for k, v in state_dict.items()}
    out: StateDict = {}
    for key, value in state_dict.items():
        if key.endswith(".attn.biases"):
            g = _group_side(value.shape[0])
            table, _ = _tables(g, g)
            if value.shape != table.shape or not torch.equal(value.to(table.dtype), table):
                raise ValueError(f"{key} is not CrossFormer's DPB offset table for a {g} x {g} group")
            continue
        if key.endswith(".attn.relative_position_index"):
            g = round(value.shape[0] ** 0.5)
            _, index = _tables(g, g)
            if value.shape != index.shape or not torch.equal(value.to(index.dtype), index):
                raise ValueError(f"{key} is not CrossFormer's relative position index for a {g} x {g} group")
            continue
        out[key] = value
    return out
