"""Architectures, one module per family; importing this package registers them all."""

from . import rlfn  # noqa: F401
