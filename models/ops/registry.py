"""A tiny registry of ops with a PyTorch reference and optional accelerated backends.

Each op has one pure-PyTorch ``reference`` (always available: CPU, tracing, export, any dtype)
and any number of accelerated implementations, each with an ``available(*args, **kwargs)``
predicate. Dispatch happens at call time:

1. a per-call ``backend=`` keyword wins: ``"reference"``, ``"auto"`` or a registered backend
   name (an unknown name raises :class:`UnknownBackendError`; a known backend that cannot run
   these inputs raises :class:`BackendUnavailableError`);
2. otherwise the ``ZOO_OPS_BACKEND`` environment variable: ``reference`` forces the reference
   everywhere (debugging, parity checks); a backend name prefers that backend where it is
   registered and available; empty / ``auto`` means the default;
3. the default (``auto``): the first registered backend whose ``available`` says yes, else the
   reference. While tracing / scripting / compiling, ``auto`` always picks the reference, so
   exported graphs contain plain PyTorch ops.

>>> from zoo.models.ops import get_op, list_ops
>>> "dct_pool" in list_ops()
True
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

__all__ = [
    "ENV_VAR",
    "REFERENCE",
    "AUTO",
    "Op",
    "OpImpl",
    "UnknownOpError",
    "UnknownBackendError",
    "BackendUnavailableError",
    "register_op",
    "register_impl",
    "get_op",
    "list_ops",
    "op_backends",
    "call_op",
]

ENV_VAR = "ZOO_OPS_BACKEND"
REFERENCE = "reference"
AUTO = "auto"


class UnknownOpError(ValueError):
    """An op name that is not registered; the message lists the registered ones."""


class UnknownBackendError(ValueError):
    """A backend name that the op does not have; the message lists the op's backends."""


class BackendUnavailableError(RuntimeError):
    """An explicitly requested backend that cannot run the given inputs here."""


def _always(*_args: Any, **_kwargs: Any) -> bool:
    return True


def _in_graph_capture() -> bool:
    """True while TorchScript / FX / dynamo / ONNX tracing: keep graphs to plain PyTorch ops."""
    if torch.jit.is_scripting() or torch.jit.is_tracing():
        return True
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and compiler.is_compiling())


@dataclass
class OpImpl:
    """One accelerated implementation of an op."""

    backend: str
    fn: Callable[..., Any]
    available: Callable[..., bool] = _always

    def is_available(self, *args: Any, **kwargs: Any) -> bool:
        try:
            return bool(self.available(*args, **kwargs))
        except Exception:  # a predicate that cannot decide means "no"
            return False


@dataclass
class Op:
    """A registered op: call it like the function it stands for, plus ``backend=``."""

    name: str
    reference: Callable[..., Any]
    impls: dict[str, OpImpl] = field(default_factory=dict)
    doc: str | None = None

    def backends(self) -> list[str]:
        """``"reference"`` first, then the accelerated backends in registration order."""
        return [REFERENCE, *self.impls]

    def select(self, *args: Any, backend: str | None = None, **kwargs: Any) -> str:
        """The backend a call with these arguments would use."""
        if backend is not None:
            return self._explicit(backend, args, kwargs)
        env = os.environ.get(ENV_VAR, "").strip().lower()
        if env == REFERENCE:
            return REFERENCE
        if _in_graph_capture():
            return REFERENCE
        if env and env != AUTO:
            impl = self.impls.get(env)
            if impl is not None and impl.is_available(*args, **kwargs):
                return env
        for name, impl in self.impls.items():
            if impl.is_available(*args, **kwargs):
                return name
        return REFERENCE

    def _explicit(self, backend: str, args: tuple, kwargs: dict) -> str:
        key = backend.strip().lower()
        if key == REFERENCE:
            return REFERENCE
        if key == AUTO:
            return self.select(*args, **kwargs)
        impl = self.impls.get(key)
        if impl is None:
            raise UnknownBackendError(
                f"op {self.name!r} has no backend {backend!r}; known: {', '.join([AUTO, *self.backends()])}"
            )
        if not impl.is_available(*args, **kwargs):
            raise BackendUnavailableError(
                f"backend {key!r} of op {self.name!r} cannot run these inputs here "
                f"(see its availability check); use backend='auto' or 'reference'"
            )
        return key

    def get_fn(self, backend: str) -> Callable[..., Any]:
        if backend == REFERENCE:
            return self.reference
        try:
            return self.impls[backend].fn
        except KeyError:
            raise UnknownBackendError(
                f"op {self.name!r} has no backend {backend!r}; known: {', '.join(self.backends())}"
            ) from None

    def __call__(self, *args: Any, backend: str | None = None, **kwargs: Any) -> Any:
        chosen = self.select(*args, backend=backend, **kwargs)
        return self.get_fn(chosen)(*args, **kwargs)


_OPS: dict[str, Op] = {}


def register_op(name: str, reference: Callable[..., Any], doc: str | None = None) -> Op:
    """Register op ``name`` with its PyTorch ``reference``; re-registering replaces the reference
    but keeps the accelerated implementations already registered."""
    if not callable(reference):
        raise TypeError(f"reference of op {name!r} must be callable")
    op = _OPS.get(name)
    if op is None:
        op = _OPS[name] = Op(name=name, reference=reference, doc=doc or reference.__doc__)
    else:
        op.reference = reference
    return op


def register_impl(
    name: str,
    backend: str,
    fn: Callable[..., Any],
    available: Callable[..., bool] | None = None,
) -> Callable[..., Any]:
    """Add (or replace) backend ``backend`` of op ``name``; ``available(*args, **kwargs)`` says
    whether it can run a given call (default: always). Returns ``fn``."""
    op = get_op(name)
    key = backend.strip().lower()
    if key in (REFERENCE, AUTO):
        raise ValueError(f"{backend!r} is reserved; register the reference with register_op")
    op.impls[key] = OpImpl(backend=key, fn=fn, available=available or _always)
    return fn


def get_op(name: str) -> Op:
    """The registered op ``name`` (callable); :class:`UnknownOpError` lists the known ones."""
    try:
        return _OPS[name]
    except KeyError:
        raise UnknownOpError(f"unknown op {name!r}; registered ops: {', '.join(list_ops()) or '(none)'}") from None


def list_ops() -> list[str]:
    """Names of the registered ops, sorted."""
    return sorted(_OPS)


def op_backends(name: str) -> list[str]:
    """Backends of op ``name``: ``"reference"`` then the accelerated ones."""
    return get_op(name).backends()


def call_op(name: str, *args: Any, backend: str | None = None, **kwargs: Any) -> Any:
    """Call op ``name`` with dispatch, e.g. ``call_op("dct_pool", x, w)``."""
    return get_op(name)(*args, backend=backend, **kwargs)
