"""``nearest_codeword(x, codebook)``: index of the nearest codebook row for every row of ``x``.

For ``x`` (N, D) and ``codebook`` (K, D) returns a LongTensor (N,) with
``argmin_k ||x_n - c_k||^2`` (``metric="l2"``) or, with ``metric="cosine"``, the same after
l2-normalising both (the largest cosine similarity; DAC's l2-normalised codes).

The distance is computed the way the reference codecs compute it, so codes match them bit for
bit: ``x.pow(2).sum(1) - 2 * x @ c.T + c.pow(2).sum(1)`` and the index of the largest negated
distance (descript-audio-codec ``dac/nn/quantize.py``, MIT; EnCodec ``encodec/quantization/
core_vq.py``, MIT). Rows are processed in chunks so the (N, K) distance matrix never holds more
than ``max_elements`` entries at once (an input that fits in one chunk is one matmul, exactly
as the authors do it).

Backends: ``reference`` only (plain PyTorch; the indices are not differentiable, so the search
runs without autograd). A fused kernel is not needed for the codec sizes here: with K = 1024 and
D = 8 the search is a small matmul.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .registry import register_op

__all__ = ["DEFAULT_MAX_ELEMENTS", "nearest_codeword", "nearest_codeword_reference"]

#: default bound on the number of distance entries held at once (2**24 fp32 = 64 MiB)
DEFAULT_MAX_ELEMENTS = 1 << 24

_METRICS = ("l2", "cosine")


def _check(x: torch.Tensor, codebook: torch.Tensor, metric: str) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(codebook, torch.Tensor):
        raise TypeError("nearest_codeword expects tensors x (N, D) and codebook (K, D)")
    if x.dim() != 2 or codebook.dim() != 2:
        raise ValueError(
            f"nearest_codeword expects x (N, D) and codebook (K, D), got shapes "
            f"{tuple(x.shape)} and {tuple(codebook.shape)}"
        )
    if x.shape[1] != codebook.shape[1]:
        raise ValueError(
            f"x has {x.shape[1]} dims per row but the codebook has {codebook.shape[1]}"
        )
    if codebook.shape[0] == 0:
        raise ValueError("the codebook is empty")
    if metric not in _METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {_METRICS}")


def _nearest_chunk(x: torch.Tensor, codebook: torch.Tensor, c2: torch.Tensor) -> torch.Tensor:
    dist = x.pow(2).sum(1, keepdim=True) - 2 * x @ codebook.t() + c2
    return (-dist).max(1)[1]


def nearest_codeword_reference(
    x: torch.Tensor,
    codebook: torch.Tensor,
    metric: str = "l2",
    max_elements: int | None = None,
) -> torch.Tensor:
    """Nearest codebook row for each row of ``x``: x (N, D), codebook (K, D) -> LongTensor (N,).

    ``metric``: ``"l2"`` (squared Euclidean) or ``"cosine"`` (both sides l2-normalised first).
    ``max_elements`` bounds the (rows x K) distance block computed at once (default 2**24)."""
    _check(x, codebook, metric)
    with torch.no_grad():
        x = x.detach()
        codebook = codebook.detach()
        if metric == "cosine":
            x = F.normalize(x)
            codebook = F.normalize(codebook)
        c2 = codebook.pow(2).sum(1, keepdim=True).t()
        n, k = x.shape[0], codebook.shape[0]
        limit = DEFAULT_MAX_ELEMENTS if max_elements is None else int(max_elements)
        rows = max(1, limit // k)
        if n <= rows:
            return _nearest_chunk(x, codebook, c2)
        return torch.cat([_nearest_chunk(part, codebook, c2) for part in x.split(rows)])


_OP = register_op("nearest_codeword", reference=nearest_codeword_reference, doc=__doc__)


def nearest_codeword(
    x: torch.Tensor,
    codebook: torch.Tensor,
    metric: str = "l2",
    max_elements: int | None = None,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """Index (N,) of the nearest row of ``codebook`` (K, D) for each row of ``x`` (N, D),
    dispatched through the ops registry (``backend="reference"`` forces the reference)."""
    return _OP(x, codebook, metric, max_elements, backend=backend)
