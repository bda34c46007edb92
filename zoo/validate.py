"""Input checks shared by every model: a wrong shape, dtype, channel count or value range gets a
``ValueError`` that names what was expected.

Shape, dtype and channel checks are static and also run under tracing / export; the value-range
check reads the data, so it runs in eager mode only (it would otherwise become a graph guard).
"""

from __future__ import annotations

import torch

__all__ = ["check_image", "is_exporting"]

# Slack for values a resampler pushes just outside [0, 1]; catches 0-255 and [-1, 1] inputs.
RANGE_SLACK = 0.01


def is_exporting() -> bool:
    return bool(
        torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or torch.compiler.is_compiling()
        or torch.onnx.is_in_onnx_export()
    )


def check_image(
    x: object,
    *,
    channels: int,
    name: str = "input",
    value_range: tuple[float, float] | None = (0.0, 1.0),
    layout: str = "(B, C, H, W)",
    min_size: int = 1,
) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor {layout}, got {type(x).__name__}")
    if torch.jit.is_tracing():  # shapes are symbolic for the tracer: checks would become constants
        return
    if x.ndim != 4:
        raise ValueError(f"{name}: expected a 4-D tensor {layout} with C={channels}, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(
            f"{name}: expected a floating-point tensor with values in {list(value_range or ())}, got dtype {x.dtype}"
            " (convert uint8 images with x.float() / 255)"
        )
    if x.shape[1] != channels:
        raise ValueError(f"{name}: expected {channels} channels {layout}, got {x.shape[1]} (shape {tuple(x.shape)})")
    if x.shape[-2] < min_size or x.shape[-1] < min_size:
        raise ValueError(f"{name}: expected height and width of at least {min_size}, got {tuple(x.shape[-2:])}")
    if value_range is not None and not is_exporting() and x.numel() and not x.is_meta:
        lo, hi = value_range
        mn, mx = torch.aminmax(x.detach())
        mn, mx = float(mn), float(mx)
        if mn != mn or mx != mx:
            raise ValueError(f"{name}: contains NaN")
        span = hi - lo
        if mn < lo - RANGE_SLACK * span or mx > hi + RANGE_SLACK * span:
            raise ValueError(f"{name}: expected values in [{lo:g}, {hi:g}], got [{mn:.4g}, {mx:.4g}]")
