"""Upstream checkpoint conversion, hub publishing and model cards."""
