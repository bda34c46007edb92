"""What a model costs: params, GMACs, latency and peak memory (``zoo bench``).

GMACs come from ``torch.utils.flop_counter.FlopCounterMode`` (which counts the FLOPs of
matmuls and convolutions, 2 per multiply-accumulate): GMACs = FLOPs / 2 / 1e9. Element-wise
ops, pooling and resampling are not counted, which is the convention papers use.
"""

from __future__ import annotations

import copy
import gc
import statistics
import time
from typing import Any, Sequence

import torch

__all__ = ["count_params", "count_gmacs", "measure_latency", "bench_model", "example_input"]


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def example_input(input_size: Sequence[int], batch: int = 1, device: str | torch.device = "cpu", seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((batch, *input_size), generator=g).to(device)


@torch.no_grad()
def count_gmacs(model: torch.nn.Module, input_size: Sequence[int], batch: int = 1, meta: bool = True) -> float:
    """GMACs of one forward at ``input_size``. With ``meta`` (default) the count runs on a copy of
    the model on the meta device: shapes only, no arithmetic, so it is cheap at any size. A model
    whose forward reads tensor values (an entropy model's ``.item()``) is counted on real data."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    if meta:
        net = copy.deepcopy(model).to("meta").eval()
        x = torch.empty((batch, *input_size), device="meta")
        try:
            with FlopCounterMode(display=False) as counter:
                net(x)
            return counter.get_total_flops() / 2 / 1e9
        except (RuntimeError, NotImplementedError):
            pass  # data-dependent forward: count on real tensors below
    net = model.eval()
    device = next(model.parameters()).device if any(True for _ in model.parameters()) else "cpu"
    x = example_input(input_size, batch, device)
    try:
        with FlopCounterMode(display=False) as counter:
            net(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 2 / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
class _Thunk:
    """``measure_latency`` times ``model(x)``: a call that ignores ``x``."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, _x):
        return self.fn()


def _bench_prompt_decoder(model, ref, x: torch.Tensor, warmup: int, repeats: int) -> dict[str, Any]:
    with torch.no_grad():
        emb = model(x[:1])
    h, w = x.shape[-2:]
    pts = torch.tensor([[[0.5 * w, 0.4 * h]]], device=x.device)
    lbl = torch.ones(1, 1, dtype=torch.int64, device=x.device)
    out: dict[str, Any] = {}
    with torch.no_grad():
        ms = measure_latency(_Thunk(lambda: model.predict_masks(emb, pts, lbl, multimask_output=True)), x, warmup, repeats)
        out["decoder_latency_ms"] = round(ms["median_ms"], 3)
        if ref is not None:
            ref_ms = measure_latency(_Thunk(lambda: ref.predict_masks(emb, pts, lbl, multimask_output=True)), x, warmup, repeats)
            out["reference_decoder_latency_ms"] = round(ref_ms["median_ms"], 3)
            out["decoder_speedup_vs_reference"] = round(ref_ms["median_ms"] / ms["median_ms"], 3)
    return out


def measure_latency(
    model: torch.nn.Module,
    x: torch.Tensor,
    warmup: int = 3,
    repeats: int = 10,
    min_time: float = 0.0,
) -> dict[str, float]:
    """Median / min / max milliseconds of ``model(x)`` after ``warmup`` runs.

    Runs at least ``repeats`` times and until ``min_time`` seconds have passed.
    """
    device = x.device
    for _ in range(warmup):
        model(x)
    _sync(device)
    times: list[float] = []
    start_all = time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - start_all) < min_time:
        t0 = time.perf_counter()
        model(x)
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
        if len(times) >= 10 * max(repeats, 1):
            break
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "runs": len(times)}


@torch.no_grad()
def _peak_memory_mb(model: torch.nn.Module, x: torch.Tensor) -> float | None:
    device = x.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        model(x)
        _sync(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    # CPU: the profiler's allocator accounting gives the peak of live tensors during the call.
    import os

    os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # kineto's "no GPU" notice is noise here
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        model(x)
    live = peak = 0
    events = sorted(
        (e for e in prof.events() if getattr(e, "cpu_memory_usage", 0)),
        key=lambda e: e.time_range.start,
    )
    for e in events:
        # cpu_memory_usage of an op includes its children; only leaf allocations are counted once.
        if e.cpu_children:
            continue
        live += e.cpu_memory_usage
        peak = max(peak, live)
    return peak / 2**20


class _CopyInput(torch.nn.Module):
    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.clone())


def bench_model(
    name: str,
    device: str = "cpu",
    batch: int = 1,
    input_size: Sequence[int] | None = None,
    warmup: int = 3,
    repeats: int = 10,
    optimize: bool = False,
    channels_last: bool = False,
    model: torch.nn.Module | None = None,
    deploy: bool = False,
    compare: str | None = None,
) -> dict[str, Any]:
    """Params, GMACs (per image, at the card's input size), latency and peak memory of ``name``.

    ``deploy`` also times the re-parameterised form (``zoo.optimize``); ``compare="spandrel"``
    also times that library's implementation of the same network with the same weights, in the
    same run on the same input, and reports the ratio (> 1: the zoo is faster).
    """
    import zoo

    from .registry import get_entry

    entry = get_entry(name) if not name.startswith(("hf-hub:", "local-dir:")) else None
    if model is None:
        model = zoo.create(name)
    if input_size is None:
        input_size = tuple(model.pretrained_cfg.get("input_size") or entry.input_size)  # type: ignore[union-attr]
    model = model.eval()
    if optimize:
        model = zoo.optimize(model)
    dev = torch.device(device)
    model = model.to(dev)
    x = example_input(input_size, batch, dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    params = count_params(model)
    gmacs = count_gmacs(model, input_size)
    lat = measure_latency(model, x, warmup=warmup, repeats=repeats)
    mem = _peak_memory_mb(model, x)
    extra: dict[str, Any] = {}
    if deploy:
        fast = zoo.optimize(model)
        with torch.no_grad():
            extra["deploy_max_abs_diff"] = float((fast(x) - model(x)).abs().max())
        extra["deploy_latency_ms"] = round(measure_latency(fast, x, warmup=warmup, repeats=repeats)["median_ms"], 3)
        extra["deploy_speedup"] = round(lat["median_ms"] / extra["deploy_latency_ms"], 3)
        extra["deploy_params"] = count_params(fast)
    if compare:
        from .reference import ReferenceUnavailable, reference_model

        try:
            ref = reference_model(model, compare).to(dev)
        except ReferenceUnavailable as e:
            extra["reference"] = None
            extra["reference_note"] = str(e).splitlines()[0][:200]
        else:
            if channels_last:
                ref = ref.to(memory_format=torch.channels_last)
            with torch.no_grad():
                extra["reference_max_abs_diff"] = float((ref(x.clone()) - model(x)).abs().max())
            # some implementations scale their input in place (spandrel's RCAN): give each call a copy
            ref_ms = measure_latency(_CopyInput(ref), x, warmup=warmup, repeats=repeats)["median_ms"]
            extra["reference"] = f"{compare}:{getattr(ref, 'reference_arch', type(ref).__name__)}"
            extra["reference_latency_ms"] = round(ref_ms, 3)
            extra["speedup_vs_reference"] = round(ref_ms / lat["median_ms"], 3)
            if deploy:
                extra["deploy_speedup_vs_reference"] = round(ref_ms / extra["deploy_latency_ms"], 3)
    if hasattr(model, "predict_masks") and hasattr(model, "prompt_encoder"):
        # promptable segmentation: ``forward`` is the image encoder; time the prompt encoder +
        # mask decoder on its embedding too (one point, multimask), beside the reference's
        ref_model = ref if compare and extra.get("reference") else None
        extra.update(_bench_prompt_decoder(model, ref_model, x, warmup, repeats))
    gc.collect()
    return {
        "model": name,
        "device": str(dev),
        "batch": batch,
        "input_size": list(input_size),
        "params": params,
        "gmacs": round(gmacs, 4),
        "latency_ms": round(lat["median_ms"], 3),
        "latency_min_ms": round(lat["min_ms"], 3),
        "latency_max_ms": round(lat["max_ms"], 3),
        "runs": lat["runs"],
        "peak_memory_mb": None if mem is None else round(mem, 2),
        "optimized": optimize,
        "channels_last": channels_last,
        "threads": torch.get_num_threads(),
        **extra,
    }
