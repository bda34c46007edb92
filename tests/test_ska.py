"""zoo.models.ops.ska (LSNet's small-kernel aggregation): the PyTorch reference against
independent computations, its gradients, dispatch, and the Triton kernels.

The Triton kernels run on CPU through Triton's interpreter (``TRITON_INTERPRET=1``) in a
subprocess (the interpreter must be switched on before triton is first imported), which writes
its results to a file that this process checks against the reference; on CUDA they are checked
directly (``gpu`` tests, skipped without a GPU).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import zoo.models.ops as ops
from zoo.models.ops import ska as ska_fn
from zoo.models.ops.ska import ska_reference, ska_triton, ska_triton_available

ska_mod = importlib.import_module("zoo.models.ops.ska")  # the module (the package exports the function)

ROOT = Path(__file__).resolve().parents[1]

needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device (torch.cuda.is_available() is False)"
)
needs_triton_cuda = pytest.mark.skipif(
    torch.cuda.is_available() and not ska_triton_available(), reason="CUDA is here but triton is not importable"
)


def _loops(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The definition, one output value at a time (float64): zero padding, channel c -> group c % G."""
    n, c, h, wd = x.shape
    g = w.shape[1]
    k = int(round(w.shape[2] ** 0.5))
    pad = (k - 1) // 2
    out = torch.zeros(n, c, h, wd, dtype=torch.float64)
    xd, wdd = x.double(), w.double()
    for b in range(n):
        for ch in range(c):
            for i in range(h):
                for j in range(wd):
                    s = 0.0
                    for a in range(k):
                        for e in range(k):
                            ii, jj = i + a - pad, j + e - pad
                            if 0 <= ii < h and 0 <= jj < wd:
                                s += float(xd[b, ch, ii, jj]) * float(wdd[b, ch % g, a * k + e, i, j])
                    out[b, ch, i, j] = s
    return out


def _shifts(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The same sum as K*K shifted copies of the zero-padded input (float64), no unfold."""
    n, c, h, wd = x.shape
    g = w.shape[1]
    k = int(round(w.shape[2] ** 0.5))
    pad = (k - 1) // 2
    xp = F.pad(x.double(), (pad, pad, pad, pad))
    group = torch.arange(c) % g
    out = torch.zeros(n, c, h, wd, dtype=torch.float64)
    for a in range(k):
        for e in range(k):
            out = out + xp[:, :, a : a + h, e : e + wd] * w.double()[:, group, a * k + e]
    return out


# -- registry and dispatch -----------------------------------------------------------------


def test_registered_with_both_backends():
    assert "ska" in ops.list_ops() and "dct_pool" in ops.list_ops()
    assert ops.op_backends("ska") == ["reference", "triton"]
    assert ops.get_op("ska").reference is ska_reference


def test_cpu_dispatch_env_and_explicit_backend(monkeypatch):
    x, w = torch.randn(1, 4, 3, 3), torch.randn(1, 2, 9, 3, 3)
    monkeypatch.delenv(ops.ENV_VAR, raising=False)
    assert ska_triton_available(x, w) is False  # CPU tensors
    assert ops.get_op("ska").select(x, w) == "reference"
    torch.testing.assert_close(ska_fn(x, w), ska_reference(x, w), rtol=0, atol=0)
    with pytest.raises(ops.BackendUnavailableError, match="triton"):
        ska_fn(x, w, backend="triton")
    monkeypatch.setenv(ops.ENV_VAR, "reference")
    assert ops.get_op("ska").select(x, w) == "reference"


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_traced_graph_uses_the_reference():
    x, w = torch.randn(1, 4, 5, 5), torch.randn(1, 2, 9, 5, 5)
    traced = torch.jit.trace(lambda a, b: ska_fn(a, b), (x, w), check_trace=False)
    x2, w2 = torch.randn(1, 4, 5, 5), torch.randn(1, 2, 9, 5, 5)
    torch.testing.assert_close(traced(x2, w2), ska_reference(x2, w2), rtol=0, atol=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a CUDA machine other tests load the kernel module")
def test_cpu_dispatch_never_imports_the_kernel_module():
    ska_fn(torch.randn(1, 4, 3, 3), torch.randn(1, 2, 9, 3, 3))
    assert "zoo.models.ops._triton_ska" not in sys.modules


# -- the reference -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, c, g, k, h, w",
    [
        (2, 8, 1, 3, 4, 5),  # one group: every channel shares the kernels
        (1, 16, 2, 3, 5, 4),  # LSNet's layout: C = 8 G
        (2, 6, 4, 3, 3, 6),  # C not a multiple of G: channel c uses group c % G
        (1, 4, 2, 5, 4, 4),  # 5x5 kernels, padding 2
        (1, 3, 3, 1, 2, 3),  # 1x1 kernels: a per-pixel, per-channel scale
    ],
)
def test_reference_matches_the_definition(n, c, g, k, h, w):
    torch.manual_seed(0)
    x = torch.randn(n, c, h, w, dtype=torch.float64)
    wt = torch.randn(n, g, k * k, h, w, dtype=torch.float64)
    out = ska_reference(x, wt)
    assert out.shape == x.shape and out.dtype == torch.float64
    torch.testing.assert_close(out, _loops(x, wt), rtol=1e-12, atol=1e-12)


def test_reference_matches_shifted_sum_float32():
    torch.manual_seed(1)
    x = torch.randn(2, 64, 14, 14)
    w = torch.randn(2, 8, 9, 14, 14)
    out = ska_reference(x, w)
    ref = _shifts(x, w)
    err = float((out.double() - ref).abs().max() / ref.abs().max())
    assert out.dtype == torch.float32 and err < 1e-6, err


def test_channel_to_group_assignment():
    """A kernel bank that is the identity (centre tap 1) in group 1 and zero elsewhere passes
    exactly the channels c with c % G == 1 and zeroes the others."""
    g, c = 4, 12
    x = torch.randn(1, c, 5, 5)
    w = torch.zeros(1, g, 9, 5, 5)
    w[:, 1, 4] = 1.0
    out = ska_reference(x, w)
    for ch in range(c):
        expected = x[0, ch] if ch % g == 1 else torch.zeros(5, 5)
        assert torch.equal(out[0, ch], expected), ch
    # a kernel that is 1 at the top-left tap reads the upper-left neighbour (zero outside)
    w = torch.zeros(1, g, 9, 5, 5)
    w[:, :, 0] = 1.0
    out = ska_reference(x, w)
    assert torch.equal(out[0, :, 1:, 1:], x[0, :, :-1, :-1])
    assert torch.equal(out[0, :, 0, :], torch.zeros(c, 5)) and torch.equal(out[0, :, :, 0], torch.zeros(c, 5))


def test_reference_dtype_promotion_and_channels_last():
    x = torch.randn(1, 8, 6, 6)
    w = torch.randn(1, 1, 9, 6, 6)
    assert ska_reference(x.half(), w).dtype == torch.float32
    assert ska_reference(x.double(), w).dtype == torch.float64
    cl = ska_reference(x.contiguous(memory_format=torch.channels_last), w)
    torch.testing.assert_close(cl, ska_reference(x, w), rtol=0, atol=0)


@pytest.mark.parametrize(
    "x_shape, w_shape, match",
    [
        ((1, 4, 5, 5), (1, 2, 4, 5, 5), "odd K"),  # 2x2 kernels
        ((1, 4, 5, 5), (1, 2, 8, 5, 5), "odd K"),  # not a square
        ((1, 4, 5, 5), (1, 2, 9, 5, 4), "does not fit"),
        ((2, 4, 5, 5), (1, 2, 9, 5, 5), "does not fit"),
        ((4, 5, 5), (1, 2, 9, 5, 5), "4-D"),
        ((1, 4, 5, 5), (1, 2, 9, 25), "5-D"),
    ],
)
def test_bad_shapes_raise(x_shape, w_shape, match):
    with pytest.raises(ValueError, match=match):
        ska_fn(torch.randn(*x_shape), torch.randn(*w_shape))


@pytest.mark.parametrize("c, g", [(8, 2), (5, 2)], ids=["divisible", "not_divisible"])
def test_reference_gradcheck(c, g):
    torch.manual_seed(0)
    x = torch.randn(2, c, 4, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, g, 9, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ska_reference, (x, w))


# -- the Triton autograd wrapper, with the kernels stood in for ----------------------------


def _fake_kernels() -> types.SimpleNamespace:
    """Kernel module stand-in: forward and gradients from the float64 shifted-sum definition."""

    def forward(x, w):
        return _shifts(x, w).to(torch.result_type(x, w))

    def backward(grad, x, w, need_x, need_w):
        with torch.enable_grad():  # autograd.Function.backward runs with grad mode off
            xd = x.detach().double().requires_grad_()
            wd = w.detach().double().requires_grad_()
            gx, gw = torch.autograd.grad(_shifts(xd, wd), (xd, wd), grad.double())
        return (gx.to(x.dtype) if need_x else None), (gw.to(w.dtype) if need_w else None)

    return types.SimpleNamespace(ska_forward=forward, ska_backward=backward)


def test_triton_wrapper_autograd_on_cpu(monkeypatch):
    monkeypatch.setattr(ska_mod, "_triton_module", _fake_kernels)
    x = torch.randn(1, 6, 4, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(1, 3, 9, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ska_triton, (x, w))
    # only the input that needs a gradient gets one
    xf = torch.randn(1, 6, 4, 4, requires_grad=True)
    (gx,) = torch.autograd.grad(ska_triton(xf, w.detach().float()).sum(), (xf,))
    (rx,) = torch.autograd.grad(ska_reference(xf, w.detach().float()).sum(), (xf,))
    torch.testing.assert_close(gx, rx, rtol=1e-5, atol=1e-5)


# -- Triton kernels on CPU, through triton's interpreter -----------------------------------

_INTERP_SCRIPT = textwrap.dedent(
    """
    import importlib.util, sys, torch

    # the kernel file imports only torch and triton: load it alone (importing zoo costs seconds)
    spec = importlib.util.spec_from_file_location("_interp_triton_ska", sys.argv[1])
    kern = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kern)
    torch.manual_seed(0)
    cases = {
        # name: (N, C, G, K, H, W, x dtype, w dtype)
        "lsnet_fp64": (2, 16, 2, 3, 5, 7, torch.float64, torch.float64),
        "uneven_fp64": (1, 10, 4, 3, 6, 5, torch.float64, torch.float64),
        "k5_fp32": (1, 8, 2, 5, 4, 6, torch.float32, torch.float32),
        "rows_over_block_fp32": (1, 40, 2, 3, 3, 3, torch.float32, torch.float32),
        "groups_over_channels_fp32": (1, 3, 4, 3, 4, 4, torch.float32, torch.float32),
        "hw_blocks_fp16": (1, 16, 2, 3, 20, 30, torch.float16, torch.float16),
        "hw_blocks_bf16": (1, 16, 2, 3, 20, 30, torch.bfloat16, torch.bfloat16),
        "mixed_fp16_fp32": (1, 8, 1, 3, 5, 5, torch.float16, torch.float32),
    }
    res = {}
    for name, (n, c, g, k, h, w, xdt, wdt) in cases.items():
        x = torch.randn(n, c, h, w).to(xdt)
        wt = torch.randn(n, g, k * k, h, w).to(wdt)
        out = kern.ska_forward(x, wt)
        go = torch.randn(out.shape).to(out.dtype)
        gx, gw = kern.ska_backward(go, x, wt)
        res[name] = dict(x=x, w=wt, go=go, out=out, gx=gx, gw=gw)
    # a non-contiguous input (a transposed view)
    x = torch.randn(1, 8, 6, 5).transpose(2, 3)
    wt = torch.randn(1, 2, 9, 5, 6)
    res["noncontig"] = dict(x=x.contiguous(), w=wt, out=kern.ska_forward(x, wt))
    # only one gradient asked for
    gx, gw = kern.ska_backward(torch.ones(1, 4, 3, 3), torch.randn(1, 4, 3, 3), torch.randn(1, 2, 9, 3, 3), True, False)
    res["only_x"] = dict(gx_is_none=gx is None, gw_is_none=gw is None)
    torch.save(res, sys.argv[2])
    print("DONE")
    """
)

_TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 2e-2, torch.bfloat16: 4e-2}


@pytest.mark.slow
def test_triton_kernels_in_interpreter(tmp_path):
    """Forward and both gradients of the Triton kernels (run by triton's interpreter on CPU)
    against the reference and its autograd: fp64 / fp32 / fp16 / bf16, LSNet's C = 8 G layout,
    C not a multiple of G, 5x5 kernels, more channels per group than one row block, more
    groups than channels, several pixel blocks, mixed dtypes, a non-contiguous input."""
    pytest.importorskip("triton")
    kernel_file = Path(ska_mod.__file__).with_name("_triton_ska.py")
    out_file = tmp_path / "interp.pt"
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _INTERP_SCRIPT, str(kernel_file), str(out_file)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0 and "DONE" in proc.stdout, proc.stderr[-3000:]
    res = torch.load(out_file, weights_only=True)
    for name, r in res.items():
        if name in ("noncontig", "only_x"):
            continue
        x, w, go = r["x"], r["w"], r["go"]
        assert r["out"].dtype == torch.result_type(x, w), name
        assert r["gx"].dtype == x.dtype and r["gw"].dtype == w.dtype, name
        tol = max(_TOL[x.dtype], _TOL[w.dtype])
        xd = x.double().requires_grad_()
        wd = w.double().requires_grad_()
        ref = ska_reference(xd, wd)
        gx_ref, gw_ref = torch.autograd.grad(ref, (xd, wd), go.double())
        for got, want, what in ((r["out"], ref.detach(), "out"), (r["gx"], gx_ref, "grad x"), (r["gw"], gw_ref, "grad w")):
            err = float((got.double() - want).abs().max() / want.abs().max().clamp_min(1e-30))
            assert err < tol, (name, what, err)
    ref = ska_reference(res["noncontig"]["x"], res["noncontig"]["w"])
    torch.testing.assert_close(res["noncontig"]["out"], ref, rtol=1e-5, atol=1e-5)
    assert res["only_x"] == {"gx_is_none": False, "gw_is_none": True}


# -- Triton kernels on CUDA ----------------------------------------------------------------


@pytest.mark.gpu
@needs_cuda
@needs_triton_cuda
@pytest.mark.parametrize(
    "dtype,tol", [(torch.float32, 1e-5), (torch.float16, 1e-2), (torch.bfloat16, 2e-2)], ids=["fp32", "fp16", "bf16"]
)
@pytest.mark.parametrize(
    "shape", [(2, 128, 8, 28, 28), (4, 256, 32, 14, 14), (1, 384, 48, 7, 7), (3, 20, 6, 9, 11)], ids=str
)
def test_triton_parity_cuda(shape, dtype, tol, monkeypatch):
    monkeypatch.delenv(ops.ENV_VAR, raising=False)
    n, c, g, h, w = shape
    x = torch.randn(n, c, h, w, device="cuda", dtype=dtype, requires_grad=True)
    wt = torch.randn(n, g, 9, h, w, device="cuda", dtype=dtype, requires_grad=True)
    assert ops.get_op("ska").select(x, wt) == "triton"
    out = ska_fn(x, wt)
    xr = x.detach().double().requires_grad_()
    wr = wt.detach().double().requires_grad_()
    ref = ska_fn(xr, wr, backend="reference")
    assert out.dtype == dtype and out.shape == x.shape
    scale = ref.abs().max().item()
    torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol * scale)
    go = torch.randn_like(out)
    gx, gw = torch.autograd.grad(out, (x, wt), go)
    rx, rw = torch.autograd.grad(ref, (xr, wr), go.double())
    assert gx.dtype == dtype and gw.dtype == dtype
    torch.testing.assert_close(gx.double(), rx, rtol=tol, atol=tol * rx.abs().max().item())
    torch.testing.assert_close(gw.double(), rw, rtol=tol, atol=tol * rw.abs().max().item())


@pytest.mark.gpu
@needs_cuda
@needs_triton_cuda
def test_triton_fp64_gradcheck_and_layouts_cuda(monkeypatch):
    x = torch.randn(1, 6, 4, 5, device="cuda", dtype=torch.float64, requires_grad=True)
    w = torch.randn(1, 3, 9, 4, 5, device="cuda", dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: ska_fn(a, b, backend="triton"), (x, w))
    xc = torch.randn(2, 64, 14, 14, device="cuda").contiguous(memory_format=torch.channels_last)
    wc = torch.randn(2, 8, 9, 14, 14, device="cuda")
    torch.testing.assert_close(ska_fn(xc, wc, backend="triton"), ska_reference(xc, wc), rtol=1e-5, atol=1e-4)
    monkeypatch.setenv(ops.ENV_VAR, "reference")
    assert ops.get_op("ska").select(xc, wc) == "reference"
