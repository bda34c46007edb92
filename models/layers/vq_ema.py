"""Vector quantization with an exponential-moving-average codebook (EnCodec's RVQ).

Design and state-dict layout follow EnCodec, facebookresearch/encodec
(``encodec/quantization/core_vq.py`` and ``vq.py``, MIT, Copyright Meta Platforms), itself
derived from lucidrains/vector-quantize-pytorch (MIT). The buffer names are EnCodec's, so its
checkpoints load unchanged: ``vq.layers.N._codebook.{inited, cluster_size, embed, embed_avg}``.

- :class:`EuclideanCodebook`: K code vectors kept as buffers and learned without gradients.
  In training mode every step updates, with decay ``d`` and Laplace smoothing ``eps``::

      N_k  <- d N_k  + (1 - d) n_k                   (cluster_size; n_k = batch count of code k)
      m_k  <- d m_k  + (1 - d) sum_{x -> k} x         (embed_avg)
      e_k  =  m_k / ((N_k + eps) / (sum N + K eps) * sum N)

  Optional k-means initialisation on the first training batch (``kmeans_init``), and dead-code
  restart: a code whose EMA cluster size is below ``threshold_ema_dead_code`` (checked before the
  update, as EnCodec does) is replaced by a random vector of the current batch.
  *Difference from EnCodec 0.1.1:* EnCodec writes the sampled vectors into ``embed`` and then
  overwrites the whole of ``embed`` with ``embed_avg / cluster_size`` in the same step, so its
  restart has no effect. Here the restart is applied after the EMA update and also resets the
  code's statistics (``cluster_size = threshold``, ``embed_avg = sample * smoothed size``, as in
  vector-quantize-pytorch), so a restarted code really sits on a batch vector. A step in which no
  code is dead is numerically identical to EnCodec's (the tests check it).
- :class:`VectorQuantization`: one codebook, with linear ``project_in`` / ``project_out`` when the
  codebook dimension differs from the input's; straight-through estimator and the commitment
  loss ``mse(z_q.detach(), z)`` in training.
- :class:`ResidualVectorQuantization`: the residual stack (``layers``).
- :class:`ResidualVectorQuantizer`: EnCodec's wrapper (``vq``), which maps a bandwidth in kbps to
  a number of codebooks, and quantizer dropout for variable-bandwidth training: in training
  mode, with ``n_quantizers=None``, each batch uses a number of codebooks drawn uniformly from
  the ones its ``bandwidths`` allow (EnCodec paper, Sec. 3.2), or from 1..n_q without a list.

Every quantizer follows the zoo's interface (see :mod:`.quantize`): ``forward(z (B, D, T),
n_quantizers=None) -> QuantizerOutput``, ``encode(z, n_quantizers=None) -> codes (B, n_q, T)``,
``decode(codes) -> z_q``, ``n_codebooks`` and ``codebook_size``. The nearest-codeword search is
the ``nearest_codeword`` op of :mod:`zoo.models.ops`, which computes the distance the way
EnCodec does, so the codes are identical.
"""

from __future__ import annotations

import math
import random
from typing import Sequence

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from ..ops import nearest_codeword
from .quantize import QuantizerOutput

__all__ = [
    "EuclideanCodebook",
    "VectorQuantization",
    "ResidualVectorQuantization",
    "ResidualVectorQuantizer",
    "kmeans",
    "sample_vectors",
]

# bound on the (rows x clusters x dim) difference block of one k-means assignment
_KMEANS_MAX_ELEMENTS = 1 << 24


def _broadcast_buffers(module: nn.Module) -> None:
    """Keep codebook buffers identical across data-parallel workers (rank 0 wins)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for buf in module.buffers():
            dist.broadcast(buf.data, src=0)


def sample_vectors(samples: torch.Tensor, num: int) -> torch.Tensor:
    """``num`` rows of ``samples`` (N, D) at random: without replacement when N >= num.

    Draws from the global generator in the same way as EnCodec, so a seeded run picks the
    same rows."""
    n = samples.shape[0]
    if n >= num:
        idx = torch.randperm(n, device=samples.device)[:num]
    else:
        idx = torch.randint(0, n, (num,), device=samples.device)
    return samples[idx]


def _kmeans_assign(samples: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    # the distance as EnCodec's k-means computes it (explicit differences), in row chunks
    k, d = means.shape
    rows = max(1, _KMEANS_MAX_ELEMENTS // max(1, k * d))
    out = []
    for part in samples.split(rows):
        dists = -(part[:, None, :] - means[None, :, :]).pow(2).sum(-1)
        out.append(dists.max(dim=-1).indices)
    return torch.cat(out)


def kmeans(samples: torch.Tensor, num_clusters: int, num_iters: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on ``samples`` (N, D): returns ``(means (K, D), counts (K,))``.

    Initial means are random samples; an empty cluster keeps its previous mean."""
    dim = samples.shape[-1]
    means = sample_vectors(samples, num_clusters)
    bins = torch.zeros(num_clusters, dtype=torch.long, device=samples.device)
    for _ in range(num_iters):
        buckets = _kmeans_assign(samples, means)
        bins = torch.bincount(buckets, minlength=num_clusters)
        empty = bins == 0
        sums = torch.zeros(num_clusters, dim, dtype=samples.dtype, device=samples.device)
        sums.scatter_add_(0, buckets[:, None].expand(-1, dim), samples)
        new_means = sums / bins.masked_fill(empty, 1)[:, None]
        means = torch.where(empty[:, None], means, new_means)
    return means, bins


class EuclideanCodebook(nn.Module):
    """A codebook of ``codebook_size`` vectors of ``dim`` values with EMA updates.

    Args:
        dim: vector dimension.
        codebook_size: number of codes K.
        kmeans_init: start from zeros and run k-means on the first training batch (else a
            Kaiming-uniform random codebook).
        kmeans_iters: k-means iterations.
        decay: EMA decay of the cluster sizes and sums.
        epsilon: Laplace smoothing of the cluster sizes.
        threshold_ema_dead_code: restart codes whose EMA cluster size is below this (0: never).
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        decay: float = 0.99,
        epsilon: float = 1e-5,
        threshold_ema_dead_code: float = 2,
    ):
        super().__init__()
        if dim < 1 or codebook_size < 1:
            raise ValueError(f"dim and codebook_size must be positive, got {dim} and {codebook_size}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.dim = dim
        self.codebook_size = codebook_size
        self.kmeans_iters = kmeans_iters
        self.decay = decay
        self.epsilon = epsilon
        self.threshold_ema_dead_code = threshold_ema_dead_code
        if kmeans_init:
            embed = torch.zeros(codebook_size, dim)
        else:
            embed = torch.empty(codebook_size, dim)
            nn.init.kaiming_uniform_(embed)
        # EnCodec's buffer names and order
        self.register_buffer("inited", torch.tensor([float(not kmeans_init)]))
        self.register_buffer("cluster_size", torch.zeros(codebook_size))
        self.register_buffer("embed", embed)
        self.register_buffer("embed_avg", embed.clone())

    # -- inference --------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code for each vector of ``x`` (..., D) -> (...)."""
        flat = x.reshape(-1, x.shape[-1]).to(self.embed.dtype)
        return nearest_codeword(flat, self.embed).view(x.shape[:-1])

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Code vectors for ``codes`` (...) -> (..., D)."""
        return F.embedding(codes, self.embed)

    # -- training ---------------------------------------------------------------------------
    @torch.no_grad()
    def init_embed_(self, data: torch.Tensor) -> None:
        """k-means initialisation from ``data`` (N, D), once (``inited`` becomes 1)."""
        if bool(self.inited.item()):
            return
        embed, bins = kmeans(data, self.codebook_size, self.kmeans_iters)
        self.embed.copy_(embed)
        self.embed_avg.copy_(embed)
        self.cluster_size.copy_(bins)
        self.inited.fill_(1.0)
        _broadcast_buffers(self)

    @torch.no_grad()
    def _ema_update_(self, x: torch.Tensor, codes: torch.Tensor) -> None:
        dead = None
        if self.threshold_ema_dead_code > 0:
            dead = self.cluster_size < self.threshold_ema_dead_code  # decided before the update
        onehot = F.one_hot(codes, self.codebook_size).type(x.dtype)
        d = self.decay
        self.cluster_size.mul_(d).add_(onehot.sum(0), alpha=1 - d)
        self.embed_avg.mul_(d).add_((x.t() @ onehot).t(), alpha=1 - d)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.epsilon) / (total + self.codebook_size * self.epsilon) * total
        self.embed.copy_(self.embed_avg / smoothed[:, None])
        if dead is not None and bool(dead.any()):
            self._restart_(x, dead)

    @torch.no_grad()
    def _restart_(self, x: torch.Tensor, dead: torch.Tensor) -> None:
        samples = sample_vectors(x, self.codebook_size)
        self.embed.copy_(torch.where(dead[:, None], samples, self.embed))
        thr = float(self.threshold_ema_dead_code)
        self.cluster_size.masked_fill_(dead, thr)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.epsilon) / (total + self.codebook_size * self.epsilon) * total
        self.embed_avg.copy_(torch.where(dead[:, None], samples * smoothed[:, None], self.embed_avg))
        _broadcast_buffers(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` (..., D) -> (code vectors (..., D) before this step's update, codes (...)).

        In training mode, runs the k-means init (first call) and the EMA / restart update."""
        shape = x.shape
        flat = x.reshape(-1, shape[-1]).to(self.embed.dtype)  # the statistics stay in the buffers' dtype
        if self.training:
            self.init_embed_(flat.detach())
        codes = nearest_codeword(flat, self.embed)
        quantized = F.embedding(codes, self.embed)  # a copy: taken before the update below
        if self.training:
            self._ema_update_(flat.detach(), codes)
        return quantized.view(shape).to(x.dtype), codes.view(shape[:-1])

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, codebook_size={self.codebook_size}, decay={self.decay}, "
                f"threshold_ema_dead_code={self.threshold_ema_dead_code}")


class VectorQuantization(nn.Module):
    """One EMA codebook on (B, D, T) inputs, with projections if ``codebook_dim != dim``.

    ``forward`` returns a :class:`QuantizerOutput` with codes (B, 1, T); ``encode`` /
    ``decode`` work on codes (B, 1, T) (or (B, T))."""

    n_codebooks = 1

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        codebook_dim: int | None = None,
        decay: float = 0.99,
        epsilon: float = 1e-5,
        kmeans_init: bool = True,
        kmeans_iters: int = 50,
        threshold_ema_dead_code: float = 2,
        commitment_weight: float = 1.0,
    ):
        super().__init__()
        cdim = dim if codebook_dim is None else codebook_dim
        proj = cdim != dim
        self.project_in = nn.Linear(dim, cdim) if proj else nn.Identity()
        self.project_out = nn.Linear(cdim, dim) if proj else nn.Identity()
        self.epsilon = epsilon
        self.commitment_weight = commitment_weight
        self._codebook = EuclideanCodebook(
            dim=cdim, codebook_size=codebook_size, kmeans_init=kmeans_init, kmeans_iters=kmeans_iters,
            decay=decay, epsilon=epsilon, threshold_ema_dead_code=threshold_ema_dead_code,
        )
        self.codebook_size = codebook_size
        self.dim = dim

    @property
    def codebook(self) -> torch.Tensor:
        return self._codebook.embed

    def _codes_bt(self, codes: torch.Tensor) -> torch.Tensor:
        if codes.dim() == 3:
            if codes.shape[1] != 1:
                raise ValueError(f"a single codebook takes codes (B, 1, T), got {tuple(codes.shape)}")
            codes = codes[:, 0]
        if codes.dim() != 2:
            raise ValueError(f"codes must be (B, 1, T) or (B, T), got {tuple(codes.shape)}")
        return codes

    def encode(self, z: torch.Tensor, n_quantizers: int | None = None) -> torch.Tensor:
        x = self.project_in(z.transpose(1, 2))
        return self._codebook.encode(x)[:, None]

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        q = self.project_out(self._codebook.decode(self._codes_bt(codes)))
        return q.transpose(1, 2)

    def forward(self, z: torch.Tensor, n_quantizers: int | None = None) -> QuantizerOutput:
        x = self.project_in(z.transpose(1, 2))
        q, codes = self._codebook(x)
        zero = x.new_zeros(())
        commit = zero
        if self.training:
            q = x + (q - x).detach()  # straight-through
            if self.commitment_weight > 0:
                commit = F.mse_loss(q.detach(), x) * self.commitment_weight
        q = self.project_out(q).transpose(1, 2)
        return QuantizerOutput(q, codes[:, None], commit, zero)


class ResidualVectorQuantization(nn.Module):
    """A residual stack of :class:`VectorQuantization` layers (``layers``); each quantizes
    what the previous ones left (SoundStream, Algorithm 1)."""

    def __init__(self, *, num_quantizers: int, **kwargs):
        super().__init__()
        if num_quantizers < 1:
            raise ValueError(f"num_quantizers must be >= 1, got {num_quantizers}")
        self.layers = nn.ModuleList([VectorQuantization(**kwargs) for _ in range(num_quantizers)])

    @property
    def n_codebooks(self) -> int:
        return len(self.layers)

    @property
    def codebook_size(self) -> int:
        return self.layers[0].codebook_size

    def _n_q(self, n_quantizers: int | None) -> int:
        n = len(self.layers) if n_quantizers is None else int(n_quantizers)
        if not 1 <= n <= len(self.layers):
            raise ValueError(f"n_quantizers must be in 1..{len(self.layers)}, got {n_quantizers}")
        return n

    def forward(self, z: torch.Tensor, n_quantizers: int | None = None) -> QuantizerOutput:
        n = self._n_q(n_quantizers)
        residual = z
        out = torch.zeros_like(z)
        codes, commits = [], []
        for layer in self.layers[:n]:
            q, c, commit, _ = layer(residual)
            residual = residual - q
            out = out + q
            codes.append(c)
            commits.append(commit)
        zero = z.new_zeros(())
        # EnCodec's penalty: the mean over the codebooks used of each one's commitment loss
        return QuantizerOutput(out, torch.cat(codes, 1), torch.stack(commits).mean(), zero)

    def encode(self, z: torch.Tensor, n_quantizers: int | None = None) -> torch.Tensor:
        n = self._n_q(n_quantizers)
        residual = z
        codes = []
        for layer in self.layers[:n]:
            c = layer.encode(residual)
            residual = residual - layer.decode(c)
            codes.append(c)
        return torch.cat(codes, 1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        if codes.dim() != 3:
            raise ValueError(f"codes must be (B, n_q, T), got shape {tuple(codes.shape)}")
        n = codes.shape[1]
        if not 1 <= n <= len(self.layers):
            raise ValueError(f"codes have {n} codebooks; this quantizer has 1..{len(self.layers)}")
        if codes.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise ValueError(f"codes must be an integer tensor, got {codes.dtype}")
        k = self.codebook_size
        if codes.numel() and not codes.is_meta and (int(codes.min()) < 0 or int(codes.max()) >= k):
            raise ValueError(f"codes must be in [0, {k}), got values in [{int(codes.min())}, {int(codes.max())}]")
        codes = codes.long()
        out = self.layers[0].decode(codes[:, 0])
        for i in range(1, n):
            out = out + self.layers[i].decode(codes[:, i])
        return out


class ResidualVectorQuantizer(nn.Module):
    """EnCodec's residual vector quantizer: ``vq`` (:class:`ResidualVectorQuantization`) plus
    the bandwidth logic and quantizer dropout.

    Args:
        dimension: latent dimension D.
        n_q: number of codebooks.
        bins: codebook size.
        decay, kmeans_init, kmeans_iters, threshold_ema_dead_code: see :class:`EuclideanCodebook`
            (EnCodec's defaults: 0.99, True, 50, 2).
        codebook_dim: codebook dimension if it differs from ``dimension`` (adds projections).
        quantizer_dropout: in training with ``n_quantizers=None``, draw the number of codebooks
            per batch (from ``dropout_n_q`` when given, else from 1..n_q).
        dropout_n_q: the allowed numbers of codebooks for the dropout (e.g. those of the
            model's target bandwidths).
    """

    def __init__(
        self,
        dimension: int = 256,
        n_q: int = 8,
        bins: int = 1024,
        decay: float = 0.99,
        kmeans_init: bool = True,
        kmeans_iters: int = 50,
        threshold_ema_dead_code: float = 2,
        codebook_dim: int | None = None,
        quantizer_dropout: bool = False,
        dropout_n_q: Sequence[int] | None = None,
    ):
        super().__init__()
        self.n_q = n_q
        self.dimension = dimension
        self.bins = bins
        self.decay = decay
        self.kmeans_init = kmeans_init
        self.kmeans_iters = kmeans_iters
        self.threshold_ema_dead_code = threshold_ema_dead_code
        self.quantizer_dropout = quantizer_dropout
        choices = sorted({int(n) for n in dropout_n_q}) if dropout_n_q else list(range(1, n_q + 1))
        if any(not 1 <= n <= n_q for n in choices):
            raise ValueError(f"dropout_n_q must be in 1..{n_q}, got {choices}")
        self.dropout_n_q = choices
        self.vq = ResidualVectorQuantization(
            dim=dimension, codebook_size=bins, num_quantizers=n_q, codebook_dim=codebook_dim, decay=decay,
            kmeans_init=kmeans_init, kmeans_iters=kmeans_iters, threshold_ema_dead_code=threshold_ema_dead_code,
        )

    @property
    def n_codebooks(self) -> int:
        return self.n_q

    @property
    def codebook_size(self) -> int:
        return self.bins

    # -- bandwidth <-> number of codebooks (EnCodec's rule) -----------------------------------
    def bandwidth_per_quantizer(self, frame_rate: float) -> float:
        """kbps of one codebook at ``frame_rate`` frames per second."""
        return math.log2(self.bins) * frame_rate / 1000

    def n_quantizers_for_bandwidth(self, frame_rate: float, bandwidth: float | None = None) -> int:
        """EnCodec's rule: ``max(1, floor(bandwidth / kbps per codebook))``; all for ``None``."""
        if bandwidth is None or bandwidth <= 0:
            return self.n_q
        return int(max(1, math.floor(bandwidth / self.bandwidth_per_quantizer(frame_rate))))

    def _draw_n_q(self) -> int:
        # one draw per batch from the Python RNG (no device sync; seeded by Lightning's seed_everything)
        return random.choice(self.dropout_n_q)

    def forward(self, z: torch.Tensor, n_quantizers: int | None = None) -> QuantizerOutput:
        if n_quantizers is None and self.training and self.quantizer_dropout:
            n_quantizers = self._draw_n_q()
        return self.vq(z, n_quantizers)

    def encode(self, z: torch.Tensor, n_quantizers: int | None = None) -> torch.Tensor:
        return self.vq.encode(z, n_quantizers)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.vq.decode(codes)
