"""zoo: efficient vision, speech and codec networks, with the authors' weights.

>>> import zoo
>>> zoo.list_models("rlfn*", task="sr")
['rlfn_s_x2', 'rlfn_s_x4', 'rlfn_x2', 'rlfn_x4']
>>> model = zoo.create("rlfn_x4")
"""

from __future__ import annotations

__version__ = "0.1.0"

from .factory import create, load_checkpoint
from .hub import CheckpointError
from .pretrained import PretrainedCfg
from .registry import UnknownModelError, is_model, list_models, register_model


def info(model_name: str, measure: bool = False) -> dict:
    """The model card as a dict: task, family, paper, licence, params, GMACs, input spec,
    metrics and weight sources. ``measure=True`` also counts params and GMACs on the model."""
    from .registry import get_entry

    card = get_entry(model_name).card()
    if measure:
        from .cost import count_gmacs, count_params

        model = create(card["name"]).eval()
        card["measured"] = {"params": count_params(model), "gmacs": count_gmacs(model, card["input_size"])}
    return card


def optimize(model, inplace: bool = False):
    """Turn every re-parameterisable block into its deploy form (outputs equal to ~1e-5).

    Uses timm's ``reparameterize_model``, which calls ``reparameterize()`` / ``fuse()`` on every
    module that has one; returns the model in eval mode.
    """
    from timm.utils.model import reparameterize_model

    model = reparameterize_model(model.eval(), inplace=inplace)
    if hasattr(model, "fuse"):  # timm's walk only visits children: the root block itself too
        model = model.fuse()
    elif hasattr(model, "reparameterize"):
        model.reparameterize()
    return model.eval()


__all__ = [
    "CheckpointError",
    "PretrainedCfg",
    "UnknownModelError",
    "create",
    "info",
    "is_model",
    "list_models",
    "load_checkpoint",
    "optimize",
    "register_model",
]
