"""Other people's implementations of the same architecture, for speed ratios in ``zoo bench``.

``reference_model(model, "spandrel")`` rebuilds ``model`` (same weights, same input convention)
with spandrel, which implements several SR architectures (SPAN, RCAN, SAFMN ...). Our state
dicts keep the authors' names, so spandrel's own state-dict detection recognises them; a family
whose names differ registers a converter with :func:`register_to_upstream`.
"""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["reference_model", "register_to_upstream", "ReferenceUnavailable"]

_TO_UPSTREAM: dict[str, Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]] = {}


class ReferenceUnavailable(ValueError):
    pass


def register_to_upstream(family: str):
    """Decorator: ``fn(our_state_dict) -> the authors' state dict`` for ``family``."""

    def deco(fn):
        _TO_UPSTREAM[family] = fn
        return fn

    return deco


def reference_model(model: torch.nn.Module, impl: str = "spandrel") -> torch.nn.Module:
    """The ``impl`` implementation of ``model`` with the same weights, taking the same input."""
    if impl != "spandrel":
        raise ReferenceUnavailable(f"unknown reference implementation {impl!r} (known: spandrel)")
    try:
        import spandrel
    except ImportError:
        raise ReferenceUnavailable("spandrel is not installed (pip install spandrel)") from None
    from .registry import get_entry

    family = get_entry(model.zoo_name).family
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if family in _TO_UPSTREAM:
        sd = _TO_UPSTREAM[family](sd)
    try:
        desc = spandrel.ModelLoader().load_from_state_dict(sd)
    except Exception as e:  # spandrel raises its own UnsupportedModelError and others
        raise ReferenceUnavailable(f"spandrel has no implementation of {model.zoo_name}: {type(e).__name__}: {e}") from None
    if getattr(desc, "scale", None) != getattr(model, "scale", None):
        raise ReferenceUnavailable(f"spandrel read {model.zoo_name} as {desc.architecture.name} x{desc.scale}")
    net = desc.model.eval()
    net.spandrel_arch = desc.architecture.name  # type: ignore[attr-defined]
    return net
