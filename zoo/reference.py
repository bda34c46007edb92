"""Other people's implementations of the same architecture, for speed ratios in ``zoo bench``.

``reference_model(model, "timm")`` rebuilds a backbone with timm's implementation of the same
network (the table :data:`TIMM_EQUIVALENTS`, or :func:`register_timm_equivalent`), loading our
state dict strictly: a name or shape that differs is :class:`ReferenceUnavailable`, never a
silently different network.

``reference_model(model, "authors")`` calls ``model.authors_reference()``, which a family whose
authors publish a package implements (their module, our weights, the same call convention).

``reference_model(model, "spandrel")`` rebuilds ``model`` (same weights, same input convention)
with spandrel, which implements several SR architectures (SPAN, RCAN, SAFMN ...). Our state
dicts keep the authors' names, so spandrel's own state-dict detection recognises them; a family
whose names differ registers a converter with :func:`register_to_upstream`.
"""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["reference_model", "register_to_upstream", "register_timm_equivalent", "TIMM_EQUIVALENTS", "ReferenceUnavailable"]

REFERENCES = ("spandrel", "timm", "authors")

# zoo name -> timm name of the same architecture with the same state-dict layout
TIMM_EQUIVALENTS: dict[str, str] = {
    **{f"resnet{d}": f"resnet{d}" for d in (18, 34, 50, 101, 152)},
    "se_resnet50": "seresnet50",
    **{n: n for n in ("rexnet_100", "rexnet_150", "mobilenetv2_100", "mobilenetv3_large_100")},
}


def register_timm_equivalent(zoo_name: str, timm_name: str) -> None:
    TIMM_EQUIVALENTS[zoo_name] = timm_name

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
    if impl == "timm":
        return _timm_reference(model)
    if impl == "authors":
        # a family whose authors publish a package implements ``authors_reference()``: their module
        # with this model's weights, called the same way as ``model`` (same input, same output)
        build = getattr(model, "authors_reference", None)
        if build is None:
            raise ReferenceUnavailable(f"{model.zoo_name}: no authors' implementation is wired for comparison")
        net = build()
        net.reference_arch = getattr(net, "reference_arch", type(net).__module__ + "." + type(net).__name__)
        return net
    if impl != "spandrel":
        raise ReferenceUnavailable(f"unknown reference implementation {impl!r} (known: {', '.join(REFERENCES)})")
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
    net.reference_arch = desc.architecture.name  # type: ignore[attr-defined]
    return net


def _timm_reference(model: torch.nn.Module) -> torch.nn.Module:
    import timm

    name = getattr(model, "zoo_name", None)
    timm_name = TIMM_EQUIVALENTS.get(name or "")
    if timm_name is None:
        raise ReferenceUnavailable(f"timm has no implementation of {name} with the same layout")
    if getattr(model, "zoo_args", {}).get("attn"):  # resnet50(attn="fca") is not timm's resnet50
        raise ReferenceUnavailable(f"timm's {timm_name} has no {model.zoo_args['attn']!r} attention")
    net = timm.create_model(timm_name, pretrained=False, num_classes=getattr(model, "num_classes", 1000))
    try:
        net.load_state_dict(model.state_dict(), strict=True)
    except RuntimeError as e:
        raise ReferenceUnavailable(f"timm's {timm_name} does not take {name}'s state dict: {str(e).splitlines()[0]}") from None
    net.reference_arch = timm_name  # type: ignore[attr-defined]
    return net.eval()
