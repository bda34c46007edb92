"""Deployment exports: ONNX (checked with onnxruntime against PyTorch) and ``torch.export``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .cost import example_input
from .hub import atomic_write

__all__ = ["export_onnx", "export_program", "check_onnx"]


def _dims(x: torch.Tensor, dynamic_hw: bool, dynamic_batch: bool) -> dict[int, str]:
    dims: dict[int, str] = {}
    if dynamic_batch:
        dims[0] = "batch"
    if dynamic_hw and x.ndim == 4:
        dims[2], dims[3] = "height", "width"
    return dims


def check_onnx(path: str | os.PathLike, model: torch.nn.Module, x: torch.Tensor) -> float:
    """Run the ONNX file with onnxruntime on ``x`` and return the max abs difference to PyTorch."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    (got,) = sess.run(None, {name: x.detach().cpu().numpy()})
    with torch.no_grad():
        ref = model(x).detach().cpu().numpy()
    if got.shape != ref.shape:
        raise RuntimeError(f"onnxruntime output shape {got.shape} differs from PyTorch's {ref.shape}")
    return float(np.max(np.abs(got - ref)))


def export_onnx(
    model: torch.nn.Module,
    path: str | os.PathLike,
    input_size: Sequence[int],
    opset: int = 18,
    dynamic_hw: bool = True,
    dynamic_batch: bool = True,
    check: bool = True,
    atol: float = 1e-4,
) -> dict[str, Any]:
    """Export to ONNX with dynamic batch / spatial axes; with ``check``, compare onnxruntime with
    PyTorch on a random input of ``input_size`` and a second, differently sized one."""
    model = model.eval()
    x = example_input(input_size)
    path = Path(path)
    dims = _dims(x, dynamic_hw, dynamic_batch)
    with atomic_write(path) as tmp, torch.no_grad():
        torch.onnx.export(
            model, (x,), str(tmp), input_names=["input"], output_names=["output"], opset_version=opset,
            dynamic_axes={"input": dims, "output": dims} if dims else None, dynamo=False,
        )
        import onnx

        onnx.checker.check_model(str(tmp))
    out: dict[str, Any] = {"path": str(path), "opset": opset, "bytes": path.stat().st_size}
    if check:
        errs = [check_onnx(path, model, x)]
        if dynamic_hw and len(input_size) == 3:
            c, h, w = input_size
            errs.append(check_onnx(path, model, example_input((c, max(h // 2, 8) + 4, max(w // 2, 8) + 2), seed=1)))
        out["max_abs_err"] = max(errs)
        if out["max_abs_err"] > atol:
            raise RuntimeError(f"ONNX output differs from PyTorch by {out['max_abs_err']:.3g} (> {atol})")
    return out


def export_program(
    model: torch.nn.Module,
    path: str | os.PathLike,
    input_size: Sequence[int],
    dynamic_hw: bool = False,
    check: bool = True,
    atol: float = 1e-5,
) -> dict[str, Any]:
    """``torch.export`` the model and save the ExportedProgram (``.pt2``); with ``check``, reload it
    and compare its output with the eager model."""
    model = model.eval()
    x = example_input(input_size)
    dynamic_shapes = None
    if dynamic_hw and x.ndim == 4:
        h, w = torch.export.Dim("height", min=16), torch.export.Dim("width", min=16)
        dynamic_shapes = ({2: h, 3: w},)
    with torch.no_grad():
        program = torch.export.export(model, (x,), dynamic_shapes=dynamic_shapes)
    path = Path(path)
    with atomic_write(path) as tmp:
        torch.export.save(program, str(tmp))
    out: dict[str, Any] = {"path": str(path), "bytes": path.stat().st_size}
    if check:
        loaded = torch.export.load(str(path)).module()
        with torch.no_grad():
            err = float((loaded(x) - model(x)).abs().max())
        out["max_abs_err"] = err
        if err > atol:
            raise RuntimeError(f"exported program differs from eager by {err:.3g} (> {atol})")
    return out
