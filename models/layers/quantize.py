"""Quantizers for neural audio codecs, behind one interface.

Every quantizer: ``forward(z (B, D, T), n_quantizers=None) -> QuantizerOutput(z_q, codes
(B, n_q, T), commitment_loss, codebook_loss)``, ``encode(z, n_quantizers=None) -> codes``,
``decode(codes) -> z_q``, attributes ``n_codebooks`` (the most codebooks it uses) and
``codebook_size`` (per codebook). The nearest-codeword search is the ``nearest_codeword`` op of
:mod:`zoo.models.ops`. Losses of residual stacks are summed over the stages (DAC's convention).

- :class:`FactorizedVQ`: DAC's codebook (descript-audio-codec ``dac/nn/quantize.py``, MIT):
  a weight-normed 1x1 ``in_proj`` to a low-dimensional space (``codebook_dim``, 8 in DAC), the
  nearest code by cosine similarity (l2-normalised codes and inputs, Yu et al. "Improved
  VQGAN"), the raw code vector back through ``out_proj``; straight-through estimator,
  commitment ``mse(z_e, z_q.detach())`` and codebook ``mse(z_q, z_e.detach())`` losses.
- :class:`VectorQuantize`: a plain learned codebook (squared L2 search, same losses, no
  projection), a stage for the group / mask-channel stacks.
- :class:`ResidualVQ`: DAC's ``ResidualVectorQuantize`` (state-dict names ``quantizers.N.
  {in_proj,out_proj}.{weight_g,weight_v,bias}``, ``quantizers.N.codebook.weight``), with DAC's
  quantizer dropout for variable bitrate: in training, the first ``int(B * quantizer_dropout)``
  items of a batch use a random number of codebooks in 1..n (drawn from the global generator
  exactly as DAC draws it), the rest use all.
- :class:`GroupResidualVQ`: HiFi-Codec's group-residual VQ (Yang et al. 2023, AcademiCodec):
  the channels are split into ``n_groups`` groups, each quantized by its own residual VQ; codes
  are stage-major (``codes[:, s * G + g]`` = stage ``s`` of group ``g``), so a prefix of the
  codes is a lower bitrate.
- :class:`FSQ`: finite scalar quantization (Mentzer et al. 2023, google-research/
  finite_scalar_quantization, Apache-2.0): each dimension bounded by ``tanh`` to its number of
  levels and rounded (straight-through); the code is the mixed-radix index of the digits.
- :class:`MaskChannelRVQ`: Language-Codec's masked-channel RVQ (Ji et al. 2024,
  jishengpeng/Languagecodec ``LanguageVectorQuantization``, MIT): the first ``n_masked``
  quantizers each see one contiguous slice of the channels (the rest zeroed:
  ``[i * D // k, (i + 1) * D // k)``), the next one quantizes the input minus their sum, and the
  rest are an ordinary residual stack. Any stage quantizer can be used (``stage=`` factory;
  Language-Codec's are EMA codebooks, :class:`~.vq_ema.VectorQuantization`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import nearest_codeword
from .audio import WNConv1d

__all__ = [
    "FSQ",
    "FactorizedVQ",
    "GroupResidualVQ",
    "MaskChannelRVQ",
    "QuantizerOutput",
    "ResidualVQ",
    "VectorQuantize",
    "check_n_quantizers",
]


class QuantizerOutput(NamedTuple):
    """What every quantizer's ``forward`` returns.

    z_q: (B, D, T) quantized latent (straight-through: gradients flow to the input).
    codes: (B, n_q, T) LongTensor of code indices.
    commitment_loss: scalar tensor, pulls the encoder towards its codes.
    codebook_loss: scalar tensor, pulls the codes towards the encoder (0 for EMA / FSQ).
    """

    z_q: torch.Tensor
    codes: torch.Tensor
    commitment_loss: torch.Tensor
    codebook_loss: torch.Tensor


def check_n_quantizers(n_quantizers: int | None, n_codebooks: int) -> int:
    """``n_quantizers`` as an int in [1, n_codebooks] (None: all); ValueError otherwise."""
    if n_quantizers is None:
        return n_codebooks
    if isinstance(n_quantizers, torch.Tensor):
        raise TypeError("n_quantizers must be an int, not a tensor")
    n = int(n_quantizers)
    if n != n_quantizers or not 1 <= n <= n_codebooks:
        raise ValueError(f"n_quantizers must be an integer in [1, {n_codebooks}], got {n_quantizers}")
    return n


def _check_latent(z: torch.Tensor, dim: int) -> None:
    if not isinstance(z, torch.Tensor) or z.dim() != 3:
        raise ValueError(f"expected a latent (B, {dim}, T), got {getattr(z, 'shape', type(z))}")
    if z.shape[1] != dim:
        raise ValueError(f"expected {dim} latent channels, got {z.shape[1]} (shape {tuple(z.shape)})")


def _check_codes(codes: torch.Tensor, n_codebooks: int, codebook_size: int, multiple: int = 1) -> None:
    if not isinstance(codes, torch.Tensor) or codes.dim() != 3:
        raise ValueError(f"expected codes (B, n_q, T), got {getattr(codes, 'shape', type(codes))}")
    if codes.dtype.is_floating_point or codes.dtype == torch.bool or codes.is_complex():
        raise ValueError(f"codes must be an integer tensor, got {codes.dtype}")
    n_q = codes.shape[1]
    if not 1 <= n_q <= n_codebooks or n_q % multiple:
        raise ValueError(
            f"codes have {n_q} codebooks; expected 1..{n_codebooks}" + (f" in multiples of {multiple}" if multiple > 1 else "")
        )
    if codes.numel() and not codes.is_meta and (int(codes.min()) < 0 or int(codes.max()) >= codebook_size):
        raise ValueError(f"codes out of range [0, {codebook_size})")


# --------------------------------------------------------------------------------------------
# single codebooks
# --------------------------------------------------------------------------------------------


class _Codebook(nn.Module):
    """Shared parts of the learned-codebook stages; subclasses set ``in_proj`` / ``out_proj``
    and ``codebook`` (an ``nn.Embedding``), in that order (DAC's state-dict order)."""

    n_codebooks = 1
    metric = "l2"
    # Apply the straight-through expression z_e + (z_q - z_e).detach() in eval too (DAC does,
    # and its residual arithmetic, hence its codes, depend on it).
    st_always = False

    def __init__(self, input_dim: int, codebook_size: int, codebook_dim: int):
        super().__init__()
        if input_dim < 1 or codebook_size < 1 or codebook_dim < 1:
            raise ValueError("input_dim, codebook_size and codebook_dim must be positive")
        self.input_dim = input_dim
        self.codebook_size = codebook_size
        self.codebook_dim = codebook_dim

    def nearest(self, z_e: torch.Tensor) -> torch.Tensor:
        """Code indices (B, T) of the projected latents ``z_e`` (B, codebook_dim, T)."""
        b = z_e.shape[0]
        flat = z_e.transpose(1, 2).reshape(-1, z_e.shape[1])
        return nearest_codeword(flat, self.codebook.weight, self.metric).view(b, -1)

    def embed(self, indices: torch.Tensor) -> torch.Tensor:
        """Code vectors (B, codebook_dim, T) of ``indices`` (B, T)."""
        return F.embedding(indices, self.codebook.weight).transpose(1, 2)

    def quantize(self, z: torch.Tensor):
        """(z_q in the input space, indices (B, T), commitment (B,), codebook (B,) losses)."""
        z_e = self.in_proj(z)
        indices = self.nearest(z_e)
        z_c = self.embed(indices)
        commitment = F.mse_loss(z_e, z_c.detach(), reduction="none").mean([1, 2])
        codebook = F.mse_loss(z_c, z_e.detach(), reduction="none").mean([1, 2])
        if self.st_always or self.training or z_e.requires_grad:
            z_c = z_e + (z_c - z_e).detach()
        return self.out_proj(z_c), indices, commitment, codebook

    def forward(self, z: torch.Tensor, n_quantizers: int | None = None) -> QuantizerOutput:
        _check_latent(z, self.input_dim)
        check_n_quantizers(n_quantizers, 1)
        z_q, indices, commitment, codebook = self.quantize(z)
        return QuantizerOutput(z_q, indices[:, None], commitment.mean(), codebook.mean())

    @torch.no_grad()
    def encode(self, z: torch.Tensor, n_quantizers: int | None = None) -> torch.Tensor:
        _check_latent(z, self.input_dim)
        check_n_quantizers(n_quantizers, 1)
        return self.nearest(self.in_proj(z))[:, None]

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        _check_codes(codes, 1, self.codebook_size)
        return self.out_proj(self.embed(codes[:, 0]))


class FactorizedVQ(_Codebook):
    """DAC's ``VectorQuantize``: weight-normed 1x1 ``in_proj`` (input_dim -> codebook_dim),
    cosine-similarity search against ``codebook`` (an ``nn.Embedding``), ``out_proj`` back."""

    metric = "cosine"
    st_always = True

    def __init__(self, input_dim: int, codebook_size: int, codebook_dim: int = 8):
        super().__init__(input_dim, codebook_size, codebook_dim)
        self.in_proj = WNConv1d(input_dim, codebook_dim, kernel_size=1)
        self.out_proj = WNConv1d(codebook_dim, input_dim, kernel_size=1)
        self.codebook = nn.Embedding(codebook_size, codebook_dim)


class VectorQuantize(_Codebook):
    """A learned codebook on the input itself (no projection), squared-L2 search; the
    straight-through estimator is applied when gradients are needed, so in eval ``forward``'s
    ``z_q`` is exactly ``decode(encode(z))``."""

    def __init__(self, input_dim: int, codebook_size: int):
        super().__init__(input_dim, codebook_size, input_dim)
        self.in_proj = nn.Identity()
        self.out_proj = nn.Identity()
        self.codebook = nn.Embedding(codebook_size, input_dim)


# --------------------------------------------------------------------------------------------
# residual stacks
# --------------------------------------------------------------------------------------------


def _dropout_n_quantizers(batch: int, n_codebooks: int, p: float, device: torch.device) -> torch.Tensor:
    """DAC's per-item number of codebooks in training: n + 1 (all) except the first
    ``int(batch * p)`` items, which draw from 1..n (same generator calls as DAC)."""
    n_q = torch.ones((batch,)) * n_codebooks + 1
    drawn = torch.randint(1, n_codebooks + 1, (batch,))
    n_drop = int(batch * p)
    n_q[:n_drop] = drawn[:n_drop]
    return n_q.to(device)


class ResidualVQ(nn.Module):
    """DAC's residual VQ of :class:`FactorizedVQ` stages (``quantizers``) with quantizer dropout.

    ``n_quantizers`` uses the first n codebooks (eval, or training with an explicit value);
    in training with ``n_quantizers=None`` every stage runs and DAC's quantizer dropout masks
    each item's later stages (``codes`` then holds all ``n_codebooks``)."""

    def __init__(
        self,
        input_dim: int = 512,
        n_codebooks: int = 9,
        codebook_size: int = 1024,
        codebook_dim: int | Sequence[int] = 8,
        quantizer_dropout: float = 0.0,
    ):
        super().__init__()
        if n_codebooks < 1:
            raise ValueError(f"n_codebooks must be positive, got {n_codebooks}")
        if isinstance(codebook_dim, int):
            codebook_dim = [codebook_dim] * n_codebooks
        if len(codebook_dim) != n_codebooks:
            raise ValueError(f"{len(codebook_dim)} codebook dims for {n_codebooks} codebooks")
        if not 0.0 <= float(quantizer_dropout) <= 1.0:
            raise ValueError(f"quantizer_dropout must be in [0, 1], got {quantizer_dropout}")
        self.input_dim = input_dim
        self.n_codebooks = n_codebooks
        self.codebook_size = codebook_size
        self.codebook_dim = list(codebook_dim)
        self.quantizer_dropout = float(quantizer_dropout)
        self.quantizers = nn.ModuleList(
            [FactorizedVQ(input_dim, codebook_size, d) for d in self.codebook_dim]
        )

    def _run(self, z: torch.Tensor, n_q: int | torch.Tensor) -> QuantizerOutput:
        """The residual loop; ``n_q`` an int (stop after n_q stages) or a per-item tensor
        (run all stages, mask)."""
        z_q: torch.Tensor | float = 0.0
        residual = z
        commitment = z.new_zeros(())
        codebook = z.new_zeros(())
        codes = []
        per_item = isinstance(n_q, torch.Tensor)
        for i, quantizer in enumerate(self.quantizers):
            if not per_item and i >= n_q:
                break
            z_q_i, idx, commit_i, cb_i = quantizer.quantize(residual)
            mask = torch.full((z.shape[0],), fill_value=i, device=z.device) < n_q
            z_q = z_q + z_q_i * mask[:, None, None]
            residual = residual - z_q_i
            commitment = commitment + (commit_i * mask).mean()
            codebook = codebook + (cb_i * mask).mean()
            codes.append(idx)
        return QuantizerOutput(z_q, torch.stack(codes, dim=1), commitment, codebook)

    def forward(self, z: torch.Tensor, n_quantizers: int | None = None) -> QuantizerOutput:
        _check_latent(z, self.input_dim)
        n = check_n_quantizers(n_quantizers, self.n_codebooks)
        if self.training and n_quantizers is None:
            return self._run(z, _dropout_n_quantizers(z.shape[0], self.n_codebooks, self.quantizer_dropout, z.device))
        return self._run(z, n)

    @torch.no_grad()
    def encode(self, z: torch.Tensor, n_quantizers: int | None = None) -> torch.Tensor:
        """Codes (B, n_q, T), computed with the same arithmetic as DAC's forward."""
        _check_latent(z, self.input_dim)
        return self._run(z, check_n_quantizers(n_quantizers, self.n_codebooks)).codes

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Sum of ``out_proj(code vector)`` over the given codebooks (DAC's ``from_codes``)."""
        _check_codes(codes, self.n_codebooks, self.codebook_size)
        z_q: torch.Tensor | float = 0.0
        for i in range(codes.shape[1]):
            q = self.quantizers[i]
            z_q = z_q + q.out_proj(q.embed(codes[:, i]))
        return z_q


class GroupResidualVQ(nn.Module):
    """Group-residual VQ: ``n_groups`` slices of the channels, each its own :class:`ResidualVQ`
    (``groups.G``) with ``n_codebooks_per_group`` stages. ``n_codebooks`` counts all codebooks
    (``n_groups * n_codebooks_per_group``); ``n_quantizers`` must be a multiple of ``n_groups``.
    Quantizer dropout draws one number of stages per item, shared by the groups."""

    def __init__(
        self,
        input_dim: int = 512,
        n_groups: int = 2,
        n_codebooks_per_group: int = 2,
        codebook_size: int = 1024,
        codebook_dim: int | Sequence[int] = 8,
        quantizer_dropout: float = 0.0,
    ):
        super().__init__()
        if n_groups < 1 or input_dim % n_groups:
            raise ValueError(f"input_dim {input_dim} is not divisible into {n_groups} groups")
        self.input_dim = input_dim
        self.n_groups = n_groups
        self.n_codebooks_per_group = n_codebooks_per_group
        self.n_codebooks = n_groups * n_codebooks_per_group
        self.codebook_size = codebook_size
        self.quantizer_dropout = float(quantizer_dropout)
        self.groups = nn.ModuleList(
            [
                ResidualVQ(input_dim // n_groups, n_codebooks_per_group, codebook_size, codebook_dim, quantizer_dropout)
                for _ in range(n_groups)
            ]
        )

    def _stages(self, n_quantizers: int | None) -> int:
        n = check_n_quantizers(n_quantizers, self.n_codebooks)
        if n % self.n_groups:
            raise ValueError(f"n_quantizers must be a multiple of the {self.n_groups} groups, got {n}")
        return n // self.n_groups

    def _interleave(self, codes: list[torch.Tensor]) -> torch.Tensor:
        # per-group (B, S, T) -> stage-major (B, S * G, T)
        return torch.stack(codes, dim=2).flatten(1, 2)

    def forward(self, z: torch.Tensor, n_quantizers: int | None = None) -> QuantizerOutput:
        _check_latent(z, self.input_dim)
        stages = self._stages(n_quantizers)
        if self.training and n_quantizers is None:
            n_q: int | torch.Tensor = _dropout_n_quantizers(
                z.shape[0], self.n_codebooks_per_group, self.quantizer_dropout, z.device
            )
        else:
            n_q = stages
        outs = [g._run(part, n_q) for g, part in zip(self.groups, z.chunk(self.n_groups, dim=1))]
        return QuantizerOutput(
            torch.cat([o.z_q for o in outs], dim=1),
            self._interleave([o.codes for o in outs]),
            sum(o.commitment_loss for o in outs),
            sum(o.codebook_loss for o in outs),
        )

    @torch.no_grad()
    def encode(self, z: torch.Tensor, n_quantizers: int | None = None) -> torch.Tensor:
        _check_latent(z, self.input_dim)
        stages = self._stages(n_quantizers)
        return self._interleave(
            [g._run(part, stages).codes for g, part in zip(self.groups, z.chunk(self.n_groups, dim=1))]
        )

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        _check_codes(codes, self.n_codebooks, self.codebook_size, multiple=self.n_groups)
        per_group = codes.unflatten(1, (-1, self.n_groups))  # (B, S, G, T)
        return torch.cat([g.decode(per_group[:, :, i]) for i, g in enumerate(self.groups)], dim=1)


# --------------------------------------------------------------------------------------------
# finite scalar quantization
# --------------------------------------------------------------------------------------------


class FSQ(nn.Module):
    """Finite scalar quantization with ``levels`` per dimension (e.g. (8, 5, 5, 5)).

    ``dim`` (default ``len(levels)``): the latent channels; when it differs, linear
    ``project_in`` / ``project_out`` map to and from ``len(levels)`` dims. Each dimension is
    bounded, ``tanh(z + shift) * (L - 1)(1 + eps) / 2 - offset`` (offset 1/2 for even L), rounded
    with a straight-through gradient and scaled by ``1 / (L // 2)``. The code of a frame is
    ``sum_i digit_i * prod_{j<i} L_j`` with ``digit = round value + L // 2`` in [0, L).
    No codebook, so both losses are zero."""

    def __init__(self, levels: Sequence[int], dim: int | None = None, eps: float = 1e-3):
        super().__init__()
        levels = [int(v) for v in levels]
        if not levels or any(v < 2 for v in levels):
            raise ValueError(f"FSQ needs at least one dimension with >= 2 levels, got {levels}")
        self.levels = levels
        self.eps = eps
        self.n_codebooks = 1
        self.codebook_size = int(math.prod(levels))
        self.input_dim = dim or len(levels)
        lv = torch.tensor(levels, dtype=torch.float64)
        basis = torch.cumprod(torch.tensor([1] + levels[:-1], dtype=torch.int64), 0)
        self.register_buffer("_levels", lv.float(), persistent=False)
        self.register_buffer("_basis", basis, persistent=False)
        proj = self.input_dim != len(levels)
        self.project_in = nn.Linear(self.input_dim, len(levels)) if proj else nn.Identity()
        self.project_out = nn.Linear(len(levels), self.input_dim) if proj else nn.Identity()

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """Squash channel-last ``z`` so that rounding gives L values per dimension."""
        half_l = (self._levels - 1) * (1 + self.eps) / 2
        offset = torch.where(self._levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half_l)
        return torch.tanh(z + shift) * half_l - offset

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Channel-last ``z`` (..., len(levels)) -> quantized values in [-1, 1] (straight-through)."""
        b = self.bound(z)
        q = torch.round(b)
        if self.training or b.requires_grad:
            q = b + (q - b).detach()
        return q / (self._levels // 2)

    def codes_to_indices(self, zhat: torch.Tensor) -> torch.Tensor:
        """Quantized values (..., len(levels)) -> mixed-radix indices (...)."""
        half = self._levels // 2
        digits = torch.round(zhat * half + half).long()
        return (digits * self._basis).sum(-1)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices (...) -> quantized values (..., len(levels))."""
        half = self._levels // 2
        digits = (indices[..., None] // self._basis) % self._basis.new_tensor(self.levels)
        return (digits.to(half.dtype) - half) / half

    def forward(self, z: torch.Tensor, n_quantizers: int | None = None) -> QuantizerOutput:
        _check_latent(z, self.input_dim)
        check_n_quantizers(n_quantizers, 1)
        zq = self.quantize(self.project_in(z.transpose(1, 2)))
        codes = self.codes_to_indices(zq.detach())[:, None]
        out = self.project_out(zq).transpose(1, 2)
        zero = z.new_zeros(())
        return QuantizerOutput(out, codes, zero, zero)

    @torch.no_grad()
    def encode(self, z: torch.Tensor, n_quantizers: int | None = None) -> torch.Tensor:
        _check_latent(z, self.input_dim)
        check_n_quantizers(n_quantizers, 1)
        return self.codes_to_indices(self.quantize(self.project_in(z.transpose(1, 2))))[:, None]

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        _check_codes(codes, 1, self.codebook_size)
        return self.project_out(self.indices_to_codes(codes[:, 0])).transpose(1, 2)


# --------------------------------------------------------------------------------------------
# mask-channel RVQ (Language-Codec)
# --------------------------------------------------------------------------------------------


class MaskChannelRVQ(nn.Module):
    """Language-Codec's RVQ: stages ``layers.N`` of the full width ``dim``.

    Stage ``i < n_masked`` quantizes the input with every channel outside
    ``[i * dim // n_masked, (i + 1) * dim // n_masked)`` zeroed; stage ``n_masked`` quantizes the
    input minus the (detached) sum of those; later stages quantize the running residual (each
    previous stage's output detached), as EnCodec's RVQ. ``z_q`` is the sum of all stages.

    ``stage(i) -> module`` builds stage i (any quantizer of this interface with one codebook;
    default a plain :class:`VectorQuantize`). Training with quantizer dropout
    (``quantizer_dropout_choices``, Language-Codec draws n_q from 3..8 per batch) applies only
    when ``n_quantizers`` is None."""

    def __init__(
        self,
        dim: int = 128,
        n_codebooks: int = 8,
        codebook_size: int = 1024,
        n_masked: int = 3,
        stage: Callable[[int], nn.Module] | None = None,
        quantizer_dropout_choices: Sequence[int] | None = None,
    ):
        super().__init__()
        if not 0 <= n_masked <= min(n_codebooks, dim):
            raise ValueError(f"n_masked must be in [0, min(n_codebooks, dim)], got {n_masked}")
        self.input_dim = dim
        self.n_codebooks = n_codebooks
        self.codebook_size = codebook_size
        self.n_masked = n_masked
        self.quantizer_dropout_choices = list(quantizer_dropout_choices or [])
        for c in self.quantizer_dropout_choices:
            check_n_quantizers(c, n_codebooks)
        make = stage or (lambda i: VectorQuantize(dim, codebook_size))
        self.layers = nn.ModuleList([make(i) for i in range(n_codebooks)])
        bounds = [i * dim // n_masked for i in range(n_masked + 1)] if n_masked else []
        mask = torch.zeros(n_masked, dim)
        for i in range(n_masked):
            mask[i, bounds[i] : bounds[i + 1]] = 1.0
        self.register_buffer("channel_mask", mask, persistent=False)

    def _masked(self, z: torch.Tensor, i: int) -> torch.Tensor:
        keep = self.channel_mask[i].to(torch.bool)[None, :, None]
        return torch.where(keep, z, torch.zeros((), dtype=z.dtype, device=z.device))

    def _n_q(self, n_quantizers: int | None) -> int:
        if n_quantizers is None and self.training and self.quantizer_dropout_choices:
            choice = int(torch.randint(0, len(self.quantizer_dropout_choices), (1,)).item())
            return self.quantizer_dropout_choices[choice]
        return check_n_quantizers(n_quantizers, self.n_codebooks)

    def forward(self, z: torch.Tensor, n_quantizers: int | None = None) -> QuantizerOutput:
        _check_latent(z, self.input_dim)
        n_q = self._n_q(n_quantizers)
        z_q: torch.Tensor | float = 0.0
        masked_sum: torch.Tensor | float = 0.0
        residual = z
        prev: torch.Tensor | None = None
        codes, commitment, codebook = [], z.new_zeros(()), z.new_zeros(())
        for i in range(n_q):
            if i < self.n_masked:
                out = self.layers[i](self._masked(z, i))
                masked_sum = masked_sum + out.z_q.detach()
            else:
                if i == self.n_masked:
                    residual = z - masked_sum
                else:
                    residual = residual - prev
                out = self.layers[i](residual)
            prev = out.z_q.detach()
            z_q = z_q + out.z_q
            codes.append(out.codes)
            commitment = commitment + out.commitment_loss
            codebook = codebook + out.codebook_loss
        return QuantizerOutput(z_q, torch.cat(codes, dim=1), commitment, codebook)

    @torch.no_grad()
    def encode(self, z: torch.Tensor, n_quantizers: int | None = None) -> torch.Tensor:
        _check_latent(z, self.input_dim)
        n_q = check_n_quantizers(n_quantizers, self.n_codebooks)
        masked_sum: torch.Tensor | float = 0.0
        residual = z
        prev: torch.Tensor | None = None
        codes = []
        for i in range(n_q):
            layer = self.layers[i]
            if i < self.n_masked:
                c = layer.encode(self._masked(z, i))
                q = layer.decode(c)
                masked_sum = masked_sum + q
            else:
                residual = z - masked_sum if i == self.n_masked else residual - prev
                c = layer.encode(residual)
                q = layer.decode(c)
            prev = q
            codes.append(c)
        return torch.cat(codes, dim=1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        _check_codes(codes, self.n_codebooks, self.codebook_size)
        z_q: torch.Tensor | float = 0.0
        for i in range(codes.shape[1]):
            z_q = z_q + self.layers[i].decode(codes[:, i : i + 1])
        return z_q
