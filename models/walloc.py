"""WaLLoC: wavelet-domain learned lossy compression (Jacobellis & Yadwadkar, "Learned Compression
for Compressed Learning", arXiv 2412.09405).

The design follows the authors' ``walloc.walloc.Codec2D`` (PyPI ``walloc`` 1.2.1,
github.com/danjacobellis/walloc; no licence file is published with it), rewritten here without
its ``diffusers`` / ``pytorch_wavelets`` dependencies:

- **Wavelet packet transform** (``wt`` / ``iwt``): ``J`` levels of the one-level 2-D CDF 9/7
  (``bior4.4``) DWT with periodization, every level applied to *all* channels (a full packet
  tree), so ``(B, C, H, W)`` becomes ``(B, C * 4^J, H / 2^J, W / 2^J)``. The filter banks are the
  arithmetic of ``pytorch_wavelets`` (roll, strided correlation, fold of the wrapped tail) and the
  filters are its buffers, under its names (``wt.h0_col`` ...), so the authors' files load
  unchanged. Like ``pytorch_wavelets``, the fold wraps only once, so a level whose input is
  shorter than the filters (< 10 px, i.e. images under 40 px with J=3) is not exactly invertible.
- **Encoder**: one 1x1 conv from the ``C * 4^J`` packet channels to ``latent_dim`` (the
  "lightweight" encoder of the published models) or, with ``lightweight_encode=False``, a
  one-stage VAE encoder (``diffusers``' ``Encoder`` layout: conv, two ResNet blocks, a mid-block
  with self-attention, GroupNorm-SiLU-conv). Then the **entropy bottleneck**: the latent is
  companded to a uniform variable ``2 L (Phi(y / s) - 1/2)`` with ``L = 2^(b-1) - 1/2 - 1e-3`` and
  ``s = (2^(b-1) - 1) / 1.85`` (``b = latent_bits``), and rounded (uniform noise in training).
- **Decoder**: the inverse compander ``s Phi^-1(z / 2L + 1/2)`` and a one-stage VAE decoder
  (``diffusers``' ``Decoder`` layout: conv, mid-block with attention, three ResNet blocks,
  GroupNorm-SiLU-conv) back to the packet channels, then the inverse packet transform. All the
  depth (and the cost) is in the decoder: encoding is 0.004 % of the MACs.

State-dict names are the authors' (``encoder.0.weight``, ``decoder.1.mid_block.attentions.0.to_q``
...). Images are RGB in [0, 1] here (the authors feed ``x - 0.5`` and clamp the output to
[-0.5, 0.5]; both shifts are inside ``forward``).

**Bitstream** (``compress_bytes``): WaLLoC has no learned entropy model. The rounded latent is
offset to unsigned bytes (``+ 2^(b-1)``), its channels are tiled into a 3-channel image
(``latent_dim = 3 n^2`` channels -> an ``n x n`` mosaic of ``h x w`` tiles, the authors'
``concatenate_channels``; other widths are zero-padded to the next ``3 n^2``) and that image is
coded as lossless WebP, exactly the authors' ``latent_to_pil(z, latent_bits, 3)`` +
``save(format="WEBP", lossless=True)``; the WebP payload is framed in the zoo's ``.zic``
container. ``rate_distortion``'s ``bpp`` is the zeroth-order empirical entropy of the rounded
latent (per channel, no gradient: WaLLoC trains on distortion only, the noise is its
bottleneck).

``walloc_rgb`` quality 1 is the authors' ``RGB_16x`` model (J=3, 12 latent channels: 16x fewer
numbers than pixels), quality 2 ``RGB_4x`` (J=3, 48 channels); both have a 768-wide decoder and
8-bit latents. ``RGB_16x.json`` (huggingface.co/danjacobellis/walloc) gives the first config; the
second is inferred (``RGB_4x.json`` was not readable here): 4x = 192 packet channels / 48, and
its 229 MB file holds 57.14 M fp32 parameters, which is this config (the 228 MB 16x file: 56.89 M).
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from zoo.container import IMAGE_MAGIC, ContainerError, pack, unpack
from zoo.models.image_codecs import ImageCodecMixin
from zoo.pretrained import PretrainedCfg
from zoo.registry import register_model
from zoo.validate import check_image
from zoo.weights.filters import filter_identity

__all__ = [
    "Walloc", "WaveletPacketAnalysis", "WaveletPacketSynthesis", "VAEEncoder", "VAEDecoder",
    "bior44_filters", "WALLOC_CONFIGS",
]

# CDF 9/7 (pywt "bior4.4") half filters, centre tap first: the 9-tap analysis lowpass and the
# 7-tap synthesis lowpass; the highpasses are their alternating-sign mirrors.
_CDF97_ANALYSIS_LO = (0.8526986790088938, 0.37740285561283066, -0.11062440441843718,
                      -0.023849465019556843, 0.03782845550726404)
_CDF97_SYNTHESIS_LO = (0.7884856164055829, 0.41809227322161724, -0.04068941760916406,
                       -0.06453888262869706)


def bior44_filters() -> dict[str, list[float]]:
    """pywt's ``Wavelet("bior4.4")`` filters (length 10): ``dec_lo``, ``dec_hi``, ``rec_lo``, ``rec_hi``."""
    a, s = _CDF97_ANALYSIS_LO, _CDF97_SYNTHESIS_LO
    dec_lo = [0.0, *a[::-1], *a[1:]]
    rec_lo = [0.0, *s[::-1], *s[1:], 0.0, 0.0]
    rec_hi = [(-1) ** k * v for k, v in enumerate(dec_lo)]
    dec_hi = [(-1) ** (k + 1) * v for k, v in enumerate(rec_lo)]
    return {"dec_lo": dec_lo, "dec_hi": dec_hi, "rec_lo": rec_lo, "rec_hi": rec_hi}


def _analysis_1d(x: torch.Tensor, h0: torch.Tensor, h1: torch.Tensor, dim: int) -> torch.Tensor:
    """Periodized two-band analysis of every channel along ``dim`` (2 = H, 3 = W); channel ``c``
    becomes ``2c`` (lowpass) and ``2c + 1`` (highpass). ``h0`` / ``h1`` are the time-reversed
    decomposition filters (correlation), shaped along ``dim``."""
    c, taps = x.shape[1], h0.numel()
    half, n2 = taps // 2, x.shape[dim] // 2
    weight = torch.cat([h0, h1], 0).to(x.dtype).repeat(c, 1, 1, 1)
    stride, padding = ((2, 1), (taps - 1, 0)) if dim == 2 else ((1, 2), (0, taps - 1))
    y = F.conv2d(torch.roll(x, -half, dims=dim), weight, stride=stride, padding=padding, groups=c)
    head = y.narrow(dim, 0, half) + y.narrow(dim, n2, half)  # fold the wrapped tail back
    return torch.cat([head, y.narrow(dim, half, max(n2 - half, 0))], dim).narrow(dim, 0, n2)


def _synthesis_1d(x: torch.Tensor, g0: torch.Tensor, g1: torch.Tensor, dim: int) -> torch.Tensor:
    """Inverse of :func:`_analysis_1d`: channel pairs ``(2c, 2c + 1)`` (low, high) -> channel ``c``."""
    groups, taps, n = x.shape[1] // 2, g0.numel(), 2 * x.shape[dim]
    weight = torch.cat([g0, g1], 0).to(x.dtype).repeat(groups, 1, 1, 1)
    stride = (2, 1) if dim == 2 else (1, 2)
    y = F.conv_transpose2d(x, weight, stride=stride, groups=groups)
    head = y.narrow(dim, 0, taps - 2) + y.narrow(dim, n, taps - 2)
    y = torch.cat([head, y.narrow(dim, taps - 2, max(n - taps + 2, 0))], dim).narrow(dim, 0, n)
    return torch.roll(y, 1 - taps // 2, dims=dim)


class WaveletPacketAnalysis(nn.Module):
    """One level of the 2-D DWT on every channel: ``(B, C, H, W) -> (B, 4C, H/2, W/2)`` with
    channel ``4c + f``, ``f`` = (LL, W-low/H-high, W-high/H-low, HH). Buffers are
    ``pytorch_wavelets.DWTForward``'s (the authors' ``wt``)."""

    def __init__(self):
        super().__init__()
        f = bior44_filters()
        h0, h1 = torch.tensor(f["dec_lo"][::-1]), torch.tensor(f["dec_hi"][::-1])
        self.register_buffer("h0_col", h0.reshape(1, 1, -1, 1).clone())
        self.register_buffer("h1_col", h1.reshape(1, 1, -1, 1).clone())
        self.register_buffer("h0_row", h0.reshape(1, 1, 1, -1).clone())
        self.register_buffer("h1_row", h1.reshape(1, 1, 1, -1).clone())

    def forward(self, x: torch.Tensor, levels: int = 1) -> torch.Tensor:
        for _ in range(levels):
            x = _analysis_1d(x, self.h0_row, self.h1_row, dim=3)
            x = _analysis_1d(x, self.h0_col, self.h1_col, dim=2)
        return x


class WaveletPacketSynthesis(nn.Module):
    """Inverse of :class:`WaveletPacketAnalysis`; buffers are ``pytorch_wavelets.DWTInverse``'s
    (the authors' ``iwt``)."""

    def __init__(self):
        super().__init__()
        f = bior44_filters()
        g0, g1 = torch.tensor(f["rec_lo"]), torch.tensor(f["rec_hi"])
        self.register_buffer("g0_col", g0.reshape(1, 1, -1, 1).clone())
        self.register_buffer("g1_col", g1.reshape(1, 1, -1, 1).clone())
        self.register_buffer("g0_row", g0.reshape(1, 1, 1, -1).clone())
        self.register_buffer("g1_row", g1.reshape(1, 1, 1, -1).clone())

    def forward(self, x: torch.Tensor, levels: int = 1) -> torch.Tensor:
        for _ in range(levels):
            x = _synthesis_1d(x, self.g0_col, self.g1_col, dim=2)
            x = _synthesis_1d(x, self.g0_row, self.g1_row, dim=3)
        return x


# -- the entropy bottleneck ------------------------------------------------------------------
class ToUniform(nn.Module):
    """Compand to a uniform variable on ``[-latent_max, latent_max]``: ``2 L (Phi(x / s) - 1/2)``."""

    def __init__(self, scale: float, latent_max: float):
        super().__init__()
        self.scale, self.latent_max = scale, latent_max

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cdf = 0.5 * (1 + torch.erf(x / self.scale / math.sqrt(2)))
        return 2 * self.latent_max * (cdf - 0.5)


class Round(nn.Module):
    """Rounding in eval, additive uniform noise in training."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return x + (torch.rand_like(x) - 0.5)
        return torch.round(x)


class ToNormal(nn.Module):
    """Inverse compander: ``s Phi^-1(clip(x / 2L + 1/2, 1e-4, 1 - 1e-4))``."""

    def __init__(self, scale: float, latent_max: float):
        super().__init__()
        self.scale, self.latent_max = scale, latent_max

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = F.hardtanh(x / (2 * self.latent_max) + 0.5, 0.0001, 0.9999)
        return self.scale * (torch.erfinv(2 * p - 1) * math.sqrt(2))


# -- the VAE blocks (diffusers' AutoencoderKL layout, one stage, no resampling) ---------------
class ResnetBlock2D(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int = 32, eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=eps)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, cout, eps=eps)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class SpatialSelfAttention(nn.Module):
    """Single-head self-attention over the pixels, GroupNorm first, residual after."""

    def __init__(self, channels: int, groups: int = 32, eps: float = 1e-6):
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, channels, eps=eps)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels), nn.Dropout(0.0)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = self.group_norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        q, k, v = (proj(t).unsqueeze(1) for proj in (self.to_q, self.to_k, self.to_v))
        out = F.scaled_dot_product_attention(q, k, v).squeeze(1)
        out = self.to_out[1](self.to_out[0](out))
        return out.transpose(1, 2).reshape(b, c, h, w) + x


class UNetMidBlock2D(nn.Module):
    def __init__(self, channels: int, groups: int = 32):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(channels, channels, groups) for _ in range(2)])
        self.attentions = nn.ModuleList([SpatialSelfAttention(channels, groups)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x)
        for attn, resnet in zip(self.attentions, self.resnets[1:]):
            x = resnet(attn(x))
        return x


class _ResnetStage(nn.Module):
    """``DownEncoderBlock2D`` / ``UpDecoderBlock2D`` without resampling: ``num_layers`` ResNet blocks."""

    def __init__(self, cin: int, cout: int, num_layers: int, groups: int = 32):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(cin if i == 0 else cout, cout, groups) for i in range(num_layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        return x


class VAEEncoder(nn.Module):
    """diffusers ``Encoder(block_out_channels=(width,), layers_per_block=2, double_z=False)``."""

    def __init__(self, cin: int, cout: int, width: int, groups: int = 32):
        super().__init__()
        self.conv_in = nn.Conv2d(cin, width, 3, padding=1)
        self.down_blocks = nn.ModuleList([_ResnetStage(width, width, 2, groups)])
        self.mid_block = UNetMidBlock2D(width, groups)
        self.conv_norm_out = nn.GroupNorm(groups, width, eps=1e-6)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(width, cout, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(self.conv_act(self.conv_norm_out(x)))


class VAEDecoder(nn.Module):
    """diffusers ``Decoder(block_out_channels=(width,), layers_per_block=2)``."""

    def __init__(self, cin: int, cout: int, width: int, groups: int = 32):
        super().__init__()
        self.conv_in = nn.Conv2d(cin, width, 3, padding=1)
        self.mid_block = UNetMidBlock2D(width, groups)
        self.up_blocks = nn.ModuleList([_ResnetStage(width, width, 3, groups)])
        self.conv_norm_out = nn.GroupNorm(groups, width, eps=1e-6)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(width, cout, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mid_block(self.conv_in(x))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(self.conv_act(self.conv_norm_out(x)))


# -- the codec --------------------------------------------------------------------------------
class Walloc(ImageCodecMixin, nn.Module):
    """WaLLoC ``Codec2D`` with the zoo's image-codec contract (see the module docstring)."""

    zoo_arch = "walloc_rgb"

    def __init__(
        self,
        channels: int = 3,
        J: int = 3,
        Ne: int | None = None,
        Nd: int = 768,
        latent_dim: int = 12,
        latent_bits: int = 8,
        lightweight_encode: bool = True,
        quality: int = 0,
    ):
        nn.Module.__init__(self)
        if not lightweight_encode and not Ne:
            raise ValueError("walloc: the full encoder (lightweight_encode=False) needs its width Ne")
        self.channels, self.J, self.Ne, self.Nd = channels, J, Ne, Nd
        self.freq_bands = 4**J
        self.latent_dim, self.latent_bits = latent_dim, latent_bits
        self.latent_max = 2 ** (latent_bits - 1) - 1 + 0.5 - 1e-3
        self.lightweight_encode = lightweight_encode
        self.quality = quality
        self.stride = 2**J
        self.wt = WaveletPacketAnalysis()
        self.iwt = WaveletPacketSynthesis()
        self.clamp = nn.Hardtanh(-0.5, 0.5)
        scale = (2 ** (latent_bits - 1) - 1) / 1.85
        bands = channels * self.freq_bands
        enc = nn.Conv2d(bands, latent_dim, 1) if lightweight_encode else VAEEncoder(bands, latent_dim, Ne)
        self.encoder = nn.Sequential(enc, ToUniform(scale, self.latent_max), Round())
        self.decoder = nn.Sequential(ToNormal(scale, self.latent_max), VAEDecoder(latent_dim, bands, Nd))

    # -- the authors' transform API (signals centred on 0: image - 0.5) ----------------------
    def wavelet_analysis(self, x: torch.Tensor, J: int | None = None) -> torch.Tensor:
        return self.wt(x, self.J if J is None else J)

    def wavelet_synthesis(self, X: torch.Tensor, J: int | None = None) -> torch.Tensor:
        return self.iwt(X, self.J if J is None else J)

    # -- shapes --------------------------------------------------------------------------------
    def _check(self, x: torch.Tensor) -> None:
        check_image(x, channels=self.channels, name=f"{self.zoo_arch} input (image in [0, 1])")

    def _check_latent(self, z: torch.Tensor) -> None:
        check_image(z, channels=self.latent_dim, name=f"{self.zoo_arch} latent", value_range=None,
                    layout="(B, latent_dim, H / 2^J, W / 2^J)")

    # -- encode / decode (latent = the rounded, companded integers) --------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Image in [0, 1] with sides that are multiples of ``2^J`` -> the latent (integers in
        eval, noisy in training), ``(B, latent_dim, H / 2^J, W / 2^J)``."""
        self._check(x)
        if x.shape[-2] % self.stride or x.shape[-1] % self.stride:
            raise ValueError(f"{self.zoo_arch}.encode: height and width must be multiples of {self.stride}, "
                             f"got {tuple(x.shape[-2:])} (forward pads for you)")
        return self.encoder(self.wavelet_analysis(x - 0.5))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent -> image in [0, 1] (clamped, as the authors do)."""
        self._check_latent(z)
        return self.clamp(self.wavelet_synthesis(self.decoder(z))) + 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        h, w = x.shape[-2:]
        return self.decode(self.encode(self._pad(x)))[..., :h, :w]

    # -- training quantities -----------------------------------------------------------------
    def _symbol_bits(self, z: torch.Tensor) -> torch.Tensor:
        """Zeroth-order empirical entropy (bits) of the rounded latent, one histogram per channel."""
        levels = 2**self.latent_bits
        q = (torch.round(z.detach()).long() + levels // 2).clamp(0, levels - 1)
        q = q.transpose(0, 1).reshape(z.shape[1], -1)
        counts = torch.zeros(z.shape[1], levels, device=z.device).scatter_add_(1, q, torch.ones_like(q, dtype=torch.float))
        p = counts / q.shape[1]
        return -(counts * torch.log2(p.clamp_min(1e-12))).sum()

    def rate_distortion(self, x: torch.Tensor, lmbda: float = 0.01) -> dict[str, torch.Tensor]:
        """MSE of the unclamped reconstruction (the authors' training loss) plus ``tf_loss`` (the
        MSE in the wavelet domain, their second term); ``bpp`` is the empirical entropy of the
        rounded latent (no gradient), ``aux_loss`` is 0 (no entropy model to fit)."""
        self._check(x)
        n, _, h, w = x.shape
        X = self.wavelet_analysis(self._pad(x) - 0.5)
        z = self.encoder(X)
        X_hat = self.decoder(z)
        x_rec = self.wavelet_synthesis(X_hat)[..., :h, :w] + 0.5
        mse = F.mse_loss(x_rec, x)
        bpp = self._symbol_bits(z) / (n * h * w)
        return {
            "x_hat": self.clamp(x_rec - 0.5) + 0.5,
            "bpp": bpp,
            "mse": mse,
            "tf_loss": F.mse_loss(X_hat, X),
            "loss": lmbda * 255**2 * mse + bpp,
            "aux_loss": torch.zeros((), device=x.device),
        }

    def aux_loss(self) -> torch.Tensor:
        return torch.zeros(())

    def update(self, scale_table: Any = None, force: bool = False, update_quantiles: bool = False) -> bool:
        """No range-coder tables to refresh (the latent is coded as lossless WebP)."""
        return False

    def _ensure_tables(self) -> None:
        pass

    # -- bitstream: lossless WebP of the byte latent, in the .zic container --------------------
    def _mosaic_side(self) -> int:
        return math.ceil(math.sqrt(self.latent_dim / 3))

    @torch.no_grad()
    def latent_to_webp(self, z: torch.Tensor) -> bytes:
        """One rounded latent ``(1, latent_dim, h, w)`` -> lossless WebP bytes (authors' layout)."""
        from PIL import Image

        if self.latent_bits > 8:
            raise ValueError(f"{self.zoo_arch}: {self.latent_bits}-bit latents do not fit an 8-bit WebP")
        n = self._mosaic_side()
        z = F.pad(z, (0, 0, 0, 0, 0, 3 * n * n - self.latent_dim))
        q = (z.round().to(torch.int64) + 2 ** (self.latent_bits - 1)).to(torch.uint8).cpu()
        mosaic = rearrange(q[0], "(c nh nw) h w -> (nh h) (nw w) c", c=3, nh=n, nw=n).numpy()
        if max(mosaic.shape[:2]) > 16383:
            raise ValueError(f"{self.zoo_arch}: latent mosaic {mosaic.shape[1]}x{mosaic.shape[0]} exceeds WebP's 16383 px")
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(mosaic), mode="RGB").save(buf, format="WEBP", lossless=True)
        return buf.getvalue()

    def webp_to_latent(self, data: bytes, size: tuple[int, int]) -> torch.Tensor:
        from PIL import Image

        try:
            img = Image.open(io.BytesIO(data))
            img.load()
        except Exception as e:  # noqa: BLE001 - PIL raises many types for a corrupt stream
            raise ContainerError(f"{self.zoo_arch}: the latent image does not decode ({e})") from None
        n, (h, w) = self._mosaic_side(), size
        arr = np.asarray(img.convert("RGB"))
        if arr.shape != (n * h, n * w, 3):
            raise ContainerError(f"{self.zoo_arch}: latent image is {arr.shape}, expected {(n * h, n * w, 3)}")
        q = rearrange(torch.from_numpy(arr.copy()), "(nh h) (nw w) c -> 1 (c nh nw) h w", nh=n, nw=n)
        z = q.to(torch.float32) - 2 ** (self.latent_bits - 1)
        return z[:, : self.latent_dim]

    @torch.no_grad()
    def compress_bytes(self, x: torch.Tensor) -> bytes:
        """One image (1, C, H, W) in [0, 1] -> ``.zic`` bytes holding the lossless-WebP latent."""
        self._check(x)
        if x.shape[0] != 1:
            raise ValueError(f"compress_bytes takes one image (1, C, H, W), got batch {x.shape[0]}")
        h, w = x.shape[-2:]
        X = self.wavelet_analysis(self._pad(x) - 0.5)
        z = torch.round(self.encoder[1](self.encoder[0](X)))
        header = {
            "model": self.zoo_arch,
            "quality": self.quality,
            "height": int(h),
            "width": int(w),
            "shape": [int(s) for s in z.shape[-2:]],
            "latent": "webp-lossless",
            "weights": self.weights_fingerprint(),
        }
        return pack(IMAGE_MAGIC, header, [[self.latent_to_webp(z)]])

    @torch.no_grad()
    def decompress_bytes(self, data: bytes) -> torch.Tensor:
        header, groups = unpack(data, IMAGE_MAGIC, "compressed image")
        if header.get("model") != self.zoo_arch or header.get("quality") != self.quality:
            raise ContainerError(
                f"compressed image was made by {header.get('model')} quality {header.get('quality')}, "
                f"not {self.zoo_arch} quality {self.quality}: decompress with that model"
            )
        if header.get("weights") != self.weights_fingerprint():
            raise ContainerError(
                f"compressed image was made with other {self.zoo_arch} weights (fingerprint {header.get('weights')}, "
                f"these are {self.weights_fingerprint()}): decompress with the same weights (--pretrained / --checkpoint)"
            )
        if len(groups) != 1 or len(groups[0]) != 1:
            raise ContainerError(f"{self.zoo_arch}: expected one latent image in the file")
        z = self.webp_to_latent(groups[0][0], tuple(header["shape"]))
        device = next(self.parameters()).device
        x = self.decode(z.to(device))
        return x[..., : header["height"], : header["width"]].clamp(0, 1)


# -- registry ---------------------------------------------------------------------------------
# RGB_16x.json as published (huggingface.co/danjacobellis/walloc); RGB_4x's inferred (module docstring).
WALLOC_CONFIGS: dict[int, dict[str, Any]] = {
    1: dict(channels=3, J=3, Ne=None, Nd=768, latent_dim=12, latent_bits=8, lightweight_encode=True),
    2: dict(channels=3, J=3, Ne=None, Nd=768, latent_dim=48, latent_bits=8, lightweight_encode=True),
}
_FILES = {1: "RGB_16x.pth", 2: "RGB_4x.pth"}
_SOURCE = "https://github.com/danjacobellis/walloc"
_LICENSE = "unspecified (no licence published with walloc)"


def _cfg(q: int) -> PretrainedCfg:
    ratio = 3 * 4 ** WALLOC_CONFIGS[q]["J"] // WALLOC_CONFIGS[q]["latent_dim"]
    return PretrainedCfg(
        tag=f"mse_q{q}",
        hf_hub_id="danjacobellis/walloc",
        hf_filename=_FILES[q],
        license=_LICENSE,
        filter_fn=filter_identity,
        model_args={"quality": q},
        description=f"the authors' {_FILES[q]} ({ratio}x dimensionality reduction, LSDIR, MSE)",
    )


@register_model(task="image_codec", family="walloc", paper="Learned Compression for Compressed Learning",
                arxiv="2412.09405", license=_LICENSE, source=_SOURCE, input_size=(3, 256, 256), test_size=(3, 64, 64),
                params=56_885_964, gmacs=59.855628, quality=1, pretrained_cfgs=[_cfg(1), _cfg(2)],
                description="WaLLoC RGB codec: 3-level CDF 9/7 wavelet packets, 1x1-conv encoder (0.0024 GMACs), "
                            "768-wide VAE decoder (59.8 GMACs at 256x256), 8-bit latent as lossless WebP; "
                            "quality 1 = RGB_16x, 2 = RGB_4x")
def walloc_rgb(quality: int = 1, **kwargs: Any) -> Walloc:
    if quality not in WALLOC_CONFIGS:
        raise ValueError(f"walloc_rgb: quality must be one of {sorted(WALLOC_CONFIGS)}, got {quality}")
    return Walloc(**{**WALLOC_CONFIGS[quality], **kwargs}, quality=quality)
