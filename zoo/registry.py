"""The model registry: one decorator, one table, fnmatch listing and close-match errors."""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable

from .pretrained import PretrainedCfg

__all__ = [
    "ModelEntry",
    "register_model",
    "list_models",
    "is_model",
    "get_entry",
    "split_name",
    "UnknownModelError",
]


class UnknownModelError(ValueError):
    """Raised for a model name that is not registered; the message lists the closest names."""


@dataclass
class ModelEntry:
    """Everything the registry knows about one architecture."""

    name: str
    fn: Callable[..., Any]
    task: str
    family: str
    paper: str
    arxiv: str | None
    license: str
    input_size: tuple[int, ...]
    input_range: tuple[float, float] | None = (0.0, 1.0)  # None: normalised input, no range check
    params: int | None = None  # stated on the card, checked against the model by the tests
    gmacs: float | None = None  # at ``input_size``, batch 1
    description: str = ""
    source: str = ""  # the authors' repository
    default_args: dict[str, Any] = field(default_factory=dict)
    pretrained_cfgs: dict[str, PretrainedCfg] = field(default_factory=dict)
    # Preprocessing in timm's names (mean, std, crop_pct, interpolation, crop_mode); the
    # classification eval transform is built from it (a weight cfg's ``data_cfg`` overrides it).
    data_cfg: dict[str, Any] = field(default_factory=dict)
    # Input size for the registry-wide tests (None: the image sides shrunk to 32).
    test_size: tuple[int, ...] | None = None
    # Constructor arguments for the registry-wide behaviour tests of a very large model (a small
    # width of the same architecture); the card's params / GMACs are still checked at full size.
    test_args: dict[str, Any] = field(default_factory=dict)

    @property
    def default_tag(self) -> str | None:
        return next(iter(self.pretrained_cfgs), None)

    def get_cfg(self, tag: str | None = None) -> PretrainedCfg | None:
        if tag is None:
            return self.pretrained_cfgs.get(self.default_tag) if self.pretrained_cfgs else None
        if tag not in self.pretrained_cfgs:
            known = ", ".join(sorted(self.pretrained_cfgs)) or "none"
            raise UnknownModelError(f"model {self.name!r} has no weights tagged {tag!r} (known tags: {known})")
        return self.pretrained_cfgs[tag]

    def card(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "task": self.task,
            "family": self.family,
            "paper": self.paper,
            "arxiv": self.arxiv,
            "license": self.license,
            "source": self.source,
            "description": self.description,
            "input_size": list(self.input_size),
            "input_range": list(self.input_range) if self.input_range is not None else None,
            "data_cfg": dict(self.data_cfg),
            "params": self.params,
            "gmacs": self.gmacs,
            "default_args": dict(self.default_args),
            "pretrained": {tag: cfg.to_dict() for tag, cfg in self.pretrained_cfgs.items()},
        }


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    *,
    task: str,
    family: str,
    paper: str,
    arxiv: str | None,
    license: str,
    input_size: tuple[int, ...],
    input_range: tuple[float, float] | None = (0.0, 1.0),
    params: int | None = None,
    gmacs: float | None = None,
    description: str = "",
    source: str = "",
    pretrained_cfgs: list[PretrainedCfg] | tuple[PretrainedCfg, ...] = (),
    name: str | None = None,
    data_cfg: dict[str, Any] | None = None,
    test_size: tuple[int, ...] | None = None,
    test_args: dict[str, Any] | None = None,
    **default_args: Any,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a factory function under its own name (or ``name``).

    ``default_args`` are keyword arguments bound into the factory for this name, so that one
    function can register several variants. A duplicate name is an error.
    """

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        model_name = name or fn.__name__
        if model_name != model_name.lower() or "." in model_name or ":" in model_name:
            raise ValueError(f"model names are lowercase with no '.' or ':', got {model_name!r}")
        if model_name in _REGISTRY:
            raise ValueError(f"model {model_name!r} is already registered (by {_REGISTRY[model_name].fn.__module__})")
        cfgs: dict[str, PretrainedCfg] = {}
        for cfg in pretrained_cfgs:
            if cfg.tag in cfgs:
                raise ValueError(f"model {model_name!r}: duplicate weight tag {cfg.tag!r}")
            cfgs[cfg.tag] = cfg
        _REGISTRY[model_name] = ModelEntry(
            name=model_name,
            fn=fn,
            task=task,
            family=family,
            paper=paper,
            arxiv=arxiv,
            license=license,
            input_size=tuple(input_size),
            input_range=tuple(input_range) if input_range is not None else None,
            params=params,
            gmacs=gmacs,
            description=description or (fn.__doc__ or "").strip().split("\n")[0],
            source=source,
            default_args=dict(default_args),
            pretrained_cfgs=cfgs,
            data_cfg=dict(data_cfg or {}),
            test_size=tuple(test_size) if test_size is not None else None,
            test_args=dict(test_args or {}),
        )
        return fn

    return decorator


def _ensure_loaded() -> None:
    # Importing the model package runs every family's registrations.
    from . import models  # noqa: F401


def split_name(name: str) -> tuple[str, str | None]:
    """``"rlfn_x4.div2k"`` -> ``("rlfn_x4", "div2k")``."""
    arch, _, tag = name.partition(".")
    return arch, (tag or None)


def _unknown(name: str) -> UnknownModelError:
    close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.5)
    if not close:
        close = sorted(n for n in _REGISTRY if n.split("_")[0] == name.split("_")[0])[:5]
    hint = f"; closest registered names: {', '.join(close)}" if close else ""
    return UnknownModelError(f"unknown model {name!r}{hint} (see `zoo list`)")


def get_entry(name: str) -> ModelEntry:
    _ensure_loaded()
    arch, _ = split_name(name)
    if arch not in _REGISTRY:
        raise _unknown(arch)
    return _REGISTRY[arch]


def is_model(name: str) -> bool:
    _ensure_loaded()
    arch, tag = split_name(name)
    entry = _REGISTRY.get(arch)
    if entry is None:
        return False
    return tag is None or tag in entry.pretrained_cfgs


def list_models(
    pattern: str | list[str] = "*",
    task: str | None = None,
    pretrained: bool = False,
    family: str | None = None,
    with_tags: bool = False,
) -> list[str]:
    """Sorted registered names matching one or more fnmatch patterns.

    ``pretrained=True`` keeps only models with at least one weight cfg; ``with_tags=True`` lists
    ``name.tag`` for each weight cfg instead of bare names.
    """
    _ensure_loaded()
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    out = []
    for name, entry in _REGISTRY.items():
        if task is not None and entry.task != task:
            continue
        if family is not None and entry.family != family:
            continue
        if pretrained and not entry.pretrained_cfgs:
            continue
        names = [f"{name}.{t}" for t in entry.pretrained_cfgs] if with_tags and entry.pretrained_cfgs else [name]
        out.extend(n for n in names if any(fnmatch.fnmatchcase(n, p) or fnmatch.fnmatchcase(name, p) for p in patterns))
    return sorted(out)


def entries() -> list[ModelEntry]:
    _ensure_loaded()
    return [_REGISTRY[n] for n in sorted(_REGISTRY)]
