"""zoo.models.ops: the op registry, dct_pool's reference, and its Triton path.

The Triton kernel is checked on CUDA (``gpu`` tests, skipped without a GPU) and on CPU through
Triton's interpreter (``TRITON_INTERPRET=1``) in a subprocess, since the interpreter must be
switched on before triton is first imported; that subprocess also checks that importing zoo's
layers and ops does not import triton.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
import torch

import zoo.models.ops as ops
from zoo.models.ops import registry

ROOT = Path(__file__).resolve().parents[1]

needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device (torch.cuda.is_available() is False)"
)
needs_triton_cuda = pytest.mark.skipif(
    torch.cuda.is_available() and not ops.triton_available(), reason="CUDA is here but triton is not importable"
)


@pytest.fixture()
def scratch_op():
    """A throwaway op with a fake accelerated backend whose availability the test controls."""
    state = {"available": True}
    name = "_test_scale"
    registry.register_op(name, reference=lambda x: x * 2)
    registry.register_impl(name, "fake", lambda x: x * 2 + 1000, available=lambda x: state["available"])
    yield name, state
    registry._OPS.pop(name, None)


# -- registry ------------------------------------------------------------------------------


def test_registry_lists_dct_pool():
    assert "dct_pool" in ops.list_ops()
    assert ops.op_backends("dct_pool") == ["reference", "triton"]
    assert ops.get_op("dct_pool").reference is ops.dct_pool_reference


def test_unknown_op_raises_with_known_names():
    with pytest.raises(ops.UnknownOpError, match="dct_pool") as err:
        ops.get_op("no_such_op")
    assert isinstance(err.value, ValueError)
    with pytest.raises(ops.UnknownOpError):
        ops.op_backends("no_such_op")


def test_unknown_backend_raises_with_known_backends():
    x, w = torch.randn(1, 2, 3, 3), torch.randn(2, 3, 3)
    with pytest.raises(ops.UnknownBackendError, match="triton") as err:
        ops.dct_pool(x, w, backend="cuda_magic")
    assert "reference" in str(err.value)


def test_unavailable_backend_is_an_error_when_asked_for():
    x, w = torch.randn(1, 2, 3, 3), torch.randn(2, 3, 3)  # CPU tensors: no triton path
    assert ops.triton_available(x, w) is False
    with pytest.raises(ops.BackendUnavailableError, match="triton"):
        ops.dct_pool(x, w, backend="triton")


def test_reserved_backend_names(scratch_op):
    name, _ = scratch_op
    with pytest.raises(ValueError, match="reserved"):
        ops.register_impl(name, "reference", lambda x: x)


def test_dispatch_order_env_and_per_call(scratch_op, monkeypatch):
    name, state = scratch_op
    x = torch.tensor([1.0, 2.0])
    op = ops.get_op(name)
    monkeypatch.delenv(ops.ENV_VAR, raising=False)
    # auto: the accelerated backend when available ...
    assert op.select(x) == "fake"
    assert op(x).tolist() == [1002.0, 1004.0]
    # ... else the reference
    state["available"] = False
    assert op.select(x) == "reference"
    assert op(x).tolist() == [2.0, 4.0]
    with pytest.raises(ops.BackendUnavailableError):
        op(x, backend="fake")
    state["available"] = True
    # the env var forces the reference ...
    monkeypatch.setenv(ops.ENV_VAR, "reference")
    assert op(x).tolist() == [2.0, 4.0]
    # ... and a per-call backend wins over it
    assert op(x, backend="fake").tolist() == [1002.0, 1004.0]
    assert ops.call_op(name, x, backend="FAKE").tolist() == [1002.0, 1004.0]
    # "auto" per call still honours the env var
    assert op(x, backend="auto").tolist() == [2.0, 4.0]
    monkeypatch.setenv(ops.ENV_VAR, "auto")
    assert op(x).tolist() == [1002.0, 1004.0]


def test_graph_capture_uses_reference(scratch_op):
    name, _ = scratch_op
    op = ops.get_op(name)
    traced = torch.jit.trace(lambda t: op(t), torch.tensor([1.0, 2.0]), check_trace=False)
    assert traced(torch.tensor([3.0])).tolist() == [6.0]


# -- dct_pool reference --------------------------------------------------------------------


def test_dct_pool_reference_known_values():
    # x[b, c] = arange, weight = ones on channel 0, 2s on channel 1
    x = torch.arange(2 * 2 * 2 * 3, dtype=torch.float32).reshape(2, 2, 2, 3)
    w = torch.stack([torch.ones(2, 3), 2 * torch.ones(2, 3)])
    out = ops.dct_pool(x, w)
    # sums of 0..5, 6..11, 12..17, 18..23 are 15, 51, 87, 123
    assert out.tolist() == [[15.0, 102.0], [87.0, 246.0]]
    assert out.shape == (2, 2)


def test_dct_pool_reference_matches_loop():
    x, w = torch.randn(3, 5, 4, 6), torch.randn(5, 4, 6)
    out = ops.dct_pool(x, w, backend="reference")
    expected = torch.empty(3, 5)
    for b in range(3):
        for c in range(5):
            expected[b, c] = sum(float(x[b, c, i, j]) * float(w[c, i, j]) for i in range(4) for j in range(6))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert ops.get_op("dct_pool").select(x, w) == "reference"  # CPU tensors
    torch.testing.assert_close(ops.dct_pool(x, w), out, rtol=0, atol=0)


def test_dct_pool_forced_reference_env(monkeypatch):
    monkeypatch.setenv(ops.ENV_VAR, "reference")
    x, w = torch.randn(2, 4, 3, 3), torch.randn(4, 3, 3)
    assert ops.get_op("dct_pool").select(x, w) == "reference"
    torch.testing.assert_close(ops.dct_pool(x, w), (x * w).sum(dim=(2, 3)), rtol=0, atol=0)


def test_dct_pool_reference_gradients():
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: ops.dct_pool(a, b), (x, w))


# -- Triton kernel on CPU, through triton's interpreter ------------------------------------

_INTERP_SCRIPT = textwrap.dedent(
    """
    import importlib.util, json, sys, torch

    # the kernel file imports only torch and triton: load it alone (importing zoo costs seconds)
    spec = importlib.util.spec_from_file_location("_interp_triton_dct_pool", sys.argv[1])
    kern = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kern)
    torch.manual_seed(0)
    res = {}

    def err(out, x, w):
        ref = (x.double() * w.double()).sum(dim=(2, 3))
        return float((out.double() - ref).abs().max() / ref.abs().max())

    for dtype, key in ((torch.float32, "fp32"), (torch.float16, "fp16"), (torch.bfloat16, "bf16")):
        x = torch.randn(2, 70, 7, 9).to(dtype)  # C not a multiple of the channel block
        w = torch.randn(70, 7, 9).to(dtype)
        out = kern.dct_pool_forward(x, w)
        res[key] = [err(out, x, w), str(out.dtype), list(out.shape)]
    x = torch.randn(2, 6, 300, 5)[:, :, ::2].transpose(2, 3)  # non-contiguous, H*W > one block
    w = torch.randn(6, 5, 150)
    res["noncontig"] = err(kern.dct_pool_forward(x, w), x, w)
    out = kern.dct_pool_forward(torch.randn(3, 8, 4, 4, dtype=torch.float16), torch.randn(8, 4, 4))
    res["mixed_dtype"] = str(out.dtype)
    print("RESULT" + json.dumps(res))
    """
)


@pytest.mark.slow
def test_triton_kernel_in_interpreter():
    """The Triton kernel itself, run on CPU by triton's interpreter: fp32 / fp16 / bf16,
    a channel count that is not a multiple of the block, non-contiguous input, mixed dtypes."""
    pytest.importorskip("triton")
    kernel_file = Path(ops.__file__).with_name("_triton_dct_pool.py")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _INTERP_SCRIPT, str(kernel_file)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
    )  # fmt: skip
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    res = json.loads(lines[-1][len("RESULT") :])
    assert res["fp32"][1:] == ["torch.float32", [2, 70]] and res["fp32"][0] < 1e-5
    assert res["fp16"][1] == "torch.float16" and res["fp16"][0] < 1e-2
    assert res["bf16"][1] == "torch.bfloat16" and res["bf16"][0] < 2e-2
    assert res["noncontig"] < 1e-5
    assert res["mixed_dtype"] == "torch.float32"  # fp16 x with an fp32 filter promotes, like torch


def test_triton_autograd_backward_on_cpu(monkeypatch):
    """The autograd wrapper's backward (plain torch), with the kernel stood in by the reference."""
    dct_pool_mod = importlib.import_module("zoo.models.ops.dct_pool")  # the module, not the function
    fake_kernel = types.SimpleNamespace(dct_pool_forward=lambda x, w: dct_pool_mod.dct_pool_reference(x, w).detach())
    monkeypatch.setattr(dct_pool_mod, "_triton_module", lambda: fake_kernel)
    x = torch.randn(2, 5, 6, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 6, 6, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 5, dtype=torch.float64)
    gx, gw = torch.autograd.grad(ops.dct_pool_triton(x, w), (x, w), g)
    assert gx.shape == x.shape and gw.shape == w.shape
    torch.testing.assert_close(gx, g[:, :, None, None] * w, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gw, (g[:, :, None, None] * x).sum(0), rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(ops.dct_pool_triton, (x, w))
    # only the input that needs a gradient gets one
    xf = torch.randn(1, 3, 2, 2, requires_grad=True)
    (gxf,) = torch.autograd.grad(ops.dct_pool_triton(xf, torch.ones(3, 2, 2)).sum(), (xf,))
    torch.testing.assert_close(gxf, torch.ones(1, 3, 2, 2))


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a CUDA machine other tests load the kernel module")
def test_cpu_dispatch_never_imports_the_kernel_module():
    x, w = torch.randn(1, 2, 3, 3), torch.randn(2, 3, 3)
    ops.dct_pool(x, w)
    assert "zoo.models.ops._triton_dct_pool" not in sys.modules


# -- Triton kernel on CUDA -----------------------------------------------------------------


@pytest.mark.gpu
@needs_cuda
@needs_triton_cuda
@pytest.mark.parametrize(
    "dtype,tol", [(torch.float32, 1e-5), (torch.float16, 1e-2), (torch.bfloat16, 2e-2)], ids=["fp32", "fp16", "bf16"]
)
@pytest.mark.parametrize("shape", [(2, 64, 7, 7), (3, 256, 14, 14), (1, 100, 56, 56)], ids=str)
def test_triton_parity_cuda(shape, dtype, tol, monkeypatch):
    monkeypatch.delenv(ops.ENV_VAR, raising=False)
    x = torch.randn(*shape, device="cuda", dtype=dtype)
    w = torch.randn(*shape[1:], device="cuda", dtype=dtype)
    assert ops.get_op("dct_pool").select(x, w) == "triton"
    out = ops.dct_pool(x, w)
    ref = ops.dct_pool(x.float(), w.float(), backend="reference")
    assert out.dtype == dtype and out.shape == shape[:2]
    torch.testing.assert_close(out.float(), ref, rtol=tol, atol=tol * ref.abs().max().item())
    forced = ops.dct_pool(x, w, backend="reference")
    torch.testing.assert_close(out.float(), forced.float(), rtol=tol, atol=tol * ref.abs().max().item())


@pytest.mark.gpu
@needs_cuda
@needs_triton_cuda
def test_triton_noncontiguous_and_env_cuda(monkeypatch):
    x = torch.randn(2, 32, 14, 28, device="cuda")[..., ::2].transpose(2, 3)
    w = torch.randn(32, 14, 14, device="cuda")
    ref = (x * w).sum(dim=(2, 3))
    torch.testing.assert_close(ops.dct_pool(x, w, backend="triton"), ref, rtol=1e-5, atol=1e-4)
    monkeypatch.setenv(ops.ENV_VAR, "reference")
    assert ops.get_op("dct_pool").select(x, w) == "reference"


@pytest.mark.gpu
@needs_cuda
@needs_triton_cuda
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 1e-2)], ids=["fp32", "fp16"])
def test_triton_gradient_parity_cuda(dtype, tol):
    x = torch.randn(4, 64, 14, 14, device="cuda", dtype=dtype, requires_grad=True)
    w = torch.randn(64, 14, 14, device="cuda", dtype=dtype, requires_grad=True)
    g = torch.randn(4, 64, device="cuda", dtype=dtype)
    gx, gw = torch.autograd.grad(ops.dct_pool(x, w, backend="triton"), (x, w), g)
    rx, rw = torch.autograd.grad(ops.dct_pool(x, w, backend="reference"), (x, w), g)
    assert gx.dtype == dtype and gw.dtype == dtype
    torch.testing.assert_close(gx.float(), rx.float(), rtol=tol, atol=tol)
    torch.testing.assert_close(gw.float(), rw.float(), rtol=tol, atol=tol * rw.float().abs().max().item())

