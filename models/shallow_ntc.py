"""Shallow-decoder neural transform coding (Yang & Mandt, "Computationally-Efficient Neural Image
Compression with Shallow Decoders", ICCV 2023, arXiv 2304.06244; first titled "Asymmetrically-
powered Neural Image Compression with Shallow Decoders").

The design follows the authors' TensorFlow code (github.com/mandt-lab/shallow-ntc, UCI
non-commercial licence: ``common/transforms.py``, ``common/elic.py``, ``mshyper/models.py`` and
the ``mshyper/configs``), rewritten in PyTorch. Their code is TensorFlow / tensorflow-compression,
so the state-dict names here are our own, in CompressAI's convention (``g_a``, ``g_s``, ``h_a``,
``h_s``, ``entropy_bottleneck``, ``gaussian_conditional``); convolutions keep TensorFlow's
``padding="SAME"`` arithmetic (asymmetric for even kernels / strided layers, transposed
convolutions cropped the way ``conv2d_transpose`` defines them) so that their numerics carry over.

- **Analysis** (strong, the cost is here): ELIC's transform (He et al. 2022; four 5x5 stride-2
  convs 192-192-192-320, three residual blocks after each of the first three, Cheng 2020's
  simplified attention after the second and the last conv), or for ``shallow_ntc_2layer_cnn``
  four 5x5 stride-2 convs with leaky ReLU (alpha 0.2), 256 wide.
- **Synthesis** (shallow): ``shallow_ntc_jpeg_like`` is one transposed conv (320 -> 3, kernel
  18, stride 16: every latent vector paints an overlapping 18x18 patch, 1.2 kMACs / pixel);
  ``shallow_ntc_2layer`` is the paper's two-layer synthesis, ``out(IGDN1(convT_13x13/8(z)) +
  convT_13x13/8(z))`` with 12 hidden channels and a 5x5 stride-2 output layer (5.3 kMACs /
  pixel); ``shallow_ntc_2layer_cnn`` is the authors' later variant without the residual branch,
  24 hidden channels, trained with mixed quantization (``mshyper/configs/two_layer_syn2.py``).
- **Entropy model**: the mean-scale hyperprior of Minnen et al. 2018 through CompressAI:
  ``h_a`` (3x3, 5x5/2, 5x5/2 convs, ReLU), ``h_s`` (5x5/2, 5x5/2, 3x3 transposed convs -> 640 =
  means and log-"indexes"), a factorized ``EntropyBottleneck`` for ``z`` (tfc's
  ``NoisyDeepFactorized``: filters (3, 3)) and a ``GaussianConditional`` for ``y`` whose 64-scale
  table (0.11 ... 256, log-spaced) is the authors' ``SCALE_FN``. As in their code, ``h_s``'s second
  half goes through ``exp`` and is used as the *index* into that table (continuous in training,
  rounded to the nearest table entry for coding). ``z`` is quantized around the bottleneck's
  medians (CompressAI's offset), also for the mixed-quantization variant, where the authors'
  ``offset_heuristic=False`` rounds ``z`` without an offset.

``quality`` 1-7 names the authors' rate points (``rd_lambda`` 0.00125 ... 0.08 with their loss
``bpp + lambda * MSE`` on 0-255 pixels, i.e. CompressAI's ``lambda * 255^2 * mse``); it does not
change the architecture. The authors publish TensorFlow checkpoints only
(huggingface.co/yiboyang/shallow-ntc-checkpoints, object-based ``tf.train.Checkpoint``
directories); they are not registered here because the zoo's loader reads torch / safetensors
files.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.layers import GDN1
from compressai.models import CompressionModel

from zoo.models.image_codecs import ImageCodecMixin
from zoo.registry import register_model

__all__ = [
    "ShallowNTC", "Conv2dSame", "ConvTranspose2dSame", "ElicAnalysis", "CNNAnalysis", "JPEGLikeSynthesis",
    "TwoLayerSynthesis", "TwoLayerResSynthesis", "RD_LAMBDAS", "scale_from_index", "tf_same_padding",
]

# The authors' rd_lambda sweep (mshyper/configs), low to high rate.
RD_LAMBDAS = (0.00125, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08)
# mshyper/models.py: 64 scales, log-spaced from 0.11 to 256, addressed by a continuous index.
NUM_SCALES, SCALE_MIN, SCALE_MAX = 64, 0.11, 256.0
_LOG_SCALE_STEP = (math.log(SCALE_MAX) - math.log(SCALE_MIN)) / (NUM_SCALES - 1)


def scale_from_index(index: torch.Tensor) -> torch.Tensor:
    """The authors' ``SCALE_FN``: a (continuous) index in [0, 63] -> the Gaussian's scale."""
    return torch.exp(math.log(SCALE_MIN) + _LOG_SCALE_STEP * index)


def tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's ``padding="SAME"``: (before, after) so that the output has ``ceil(size / stride)``."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """``tf.keras.layers.Conv2D(padding="same")``: TensorFlow's (possibly asymmetric) zero padding."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int = 1):
        super().__init__(cin, cout, kernel_size, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (k, _), (s, _) = self.kernel_size, self.stride
        top, bottom = tf_same_padding(x.shape[-2], k, s)
        left, right = tf_same_padding(x.shape[-1], k, s)
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


class ConvTranspose2dSame(nn.ConvTranspose2d):
    """``tf.keras.layers.Conv2DTranspose(padding="same")``: output ``stride x`` the input, i.e.
    the full transposed convolution cropped by the "SAME" padding of the convolution it
    transposes (``(kernel - stride) // 2`` at the start)."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int = 1):
        if kernel_size < stride:
            raise ValueError(f"ConvTranspose2dSame needs kernel_size >= stride, got {kernel_size} < {stride}")
        super().__init__(cin, cout, kernel_size, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (k, _), (s, _) = self.kernel_size, self.stride
        h, w = x.shape[-2] * s, x.shape[-1] * s
        y = F.conv_transpose2d(x, self.weight, self.bias, stride=s)
        start = (k - s) // 2
        return y[..., start:start + h, start:start + w]


# -- ELIC analysis (common/elic.py) -------------------------------------------------------------
class ResidualBlock(nn.Module):
    """``x + [1x1 -> C/2, ReLU, 3x3, ReLU, 1x1 -> C](x)`` (no activation after the sum)."""

    def __init__(self, channels: int):
        super().__init__()
        half = channels // 2
        self.block = nn.Sequential(
            Conv2dSame(channels, half, 1), nn.ReLU(),
            Conv2dSame(half, half, 3), nn.ReLU(),
            Conv2dSame(half, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class SimpleAttention(nn.Module):
    """Cheng 2020's simplified attention: ``x + trunk(x) * sigmoid(branch(x))``, three residual
    blocks in each path."""

    def __init__(self, channels: int):
        super().__init__()
        self.trunk = nn.Sequential(*(ResidualBlock(channels) for _ in range(3)))
        self.attention_branch = nn.Sequential(*(ResidualBlock(channels) for _ in range(3)),
                                              Conv2dSame(channels, channels, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.trunk(x) * self.attention_branch(x)


class ElicAnalysis(nn.Sequential):
    """ELIC's analysis transform (four 5x5 stride-2 convs), the authors' ``channels=(192, 192,
    192, 320)``; layer order as their ``_transform`` Sequential."""

    def __init__(self, channels: tuple[int, ...] = (192, 192, 192, 320), num_residual_blocks: int = 3, cin: int = 3):
        c0, c1, c2, c3 = channels

        def rbs(c: int) -> list[nn.Module]:
            return [ResidualBlock(c) for _ in range(num_residual_blocks)]

        super().__init__(
            Conv2dSame(cin, c0, 5, 2), *rbs(c0),
            Conv2dSame(c0, c1, 5, 2), *rbs(c1), SimpleAttention(c1),
            Conv2dSame(c1, c2, 5, 2), *rbs(c2),
            Conv2dSame(c2, c3, 5, 2), SimpleAttention(c3),
        )


class CNNAnalysis(nn.Sequential):
    """Four 5x5 stride-2 convs with leaky ReLU (TensorFlow's default slope 0.2)."""

    def __init__(self, channels_base: int = 256, output_channels: int = 320, cin: int = 3):
        c = channels_base
        super().__init__(
            Conv2dSame(cin, c, 5, 2), nn.LeakyReLU(0.2),
            Conv2dSame(c, c, 5, 2), nn.LeakyReLU(0.2),
            Conv2dSame(c, c, 5, 2), nn.LeakyReLU(0.2),
            Conv2dSame(c, output_channels, 5, 2),
        )


# -- shallow syntheses (common/transforms.py) ----------------------------------------------------
class JPEGLikeSynthesis(nn.Module):
    """One transposed conv: each latent vector is the coefficient vector of an overlapping patch."""

    def __init__(self, cin: int = 320, output_channels: int = 3, kernel_size: int = 18, stride: int = 16):
        super().__init__()
        self.conv = ConvTranspose2dSame(cin, output_channels, kernel_size, stride)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.conv(z)


class TwoLayerSynthesis(nn.Module):
    """``conv2(IGDN1(conv1(z)))``: two transposed convs (13x13 stride 8, 5x5 stride 2)."""

    def __init__(self, cin: int = 320, channels: tuple[int, int] = (24, 3), strides: tuple[int, int] = (8, 2),
                 kernel_sizes: tuple[int, int] = (13, 5)):
        super().__init__()
        self.conv1 = ConvTranspose2dSame(cin, channels[0], kernel_sizes[0], strides[0])
        self.activation = GDN1(channels[0], inverse=True)
        self.conv2 = ConvTranspose2dSame(channels[0], channels[1], kernel_sizes[1], strides[1])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.activation(self.conv1(z)))


class TwoLayerResSynthesis(nn.Module):
    """The paper's two-layer synthesis: ``out_conv(IGDN1(base_conv(z)) + res(z))``."""

    def __init__(self, cin: int = 320, channels: tuple[int, int] = (12, 3), strides: tuple[int, int] = (8, 2),
                 kernel_sizes: tuple[int, int] = (13, 5)):
        super().__init__()
        self.base_conv = ConvTranspose2dSame(cin, channels[0], kernel_sizes[0], strides[0])
        self.activation = GDN1(channels[0], inverse=True)
        self.res = ConvTranspose2dSame(cin, channels[0], kernel_sizes[0], strides[0])
        self.out_conv = ConvTranspose2dSame(channels[0], channels[1], kernel_sizes[1], strides[1])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out_conv(self.activation(self.base_conv(z)) + self.res(z))


def hyper_analysis(bottleneck: int) -> nn.Sequential:
    return nn.Sequential(
        Conv2dSame(bottleneck, bottleneck, 3), nn.ReLU(),
        Conv2dSame(bottleneck, bottleneck, 5, 2), nn.ReLU(),
        Conv2dSame(bottleneck, bottleneck, 5, 2),
    )


def hyper_synthesis(bottleneck: int) -> nn.Sequential:
    wide = int(bottleneck * 1.5)
    return nn.Sequential(
        ConvTranspose2dSame(bottleneck, bottleneck, 5, 2), nn.ReLU(),
        ConvTranspose2dSame(bottleneck, wide, 5, 2), nn.ReLU(),
        ConvTranspose2dSame(wide, 2 * bottleneck, 3, 1),
    )


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


# -- the codec ----------------------------------------------------------------------------------
class ShallowNTCNet(CompressionModel):
    """Mean-scale hyperprior codec with a pluggable analysis / synthesis (CompressAI's interface:
    ``forward`` -> ``{"x_hat", "likelihoods"}``, ``compress`` / ``decompress``)."""

    def __init__(self, g_a: nn.Module, g_s: nn.Module, bottleneck: int = 320, mixed_quantization: bool = False):
        super().__init__()
        self.g_a, self.g_s = g_a, g_s
        self.h_a = hyper_analysis(bottleneck)
        self.h_s = hyper_synthesis(bottleneck)
        self.entropy_bottleneck = EntropyBottleneck(bottleneck, filters=(3, 3))
        self.gaussian_conditional = GaussianConditional(None)
        self.mixed_quantization = mixed_quantization
        self.bottleneck = bottleneck

    def entropy_parameters(self, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``h_s(z_hat)`` -> (means, scales, continuous scale-table index in [0, 63])."""
        means, log_index = self.h_s(z_hat).chunk(2, 1)
        index = torch.exp(log_index.clamp(max=math.log(NUM_SCALES - 1)))
        return means, scale_from_index(index), index

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        y = self.g_a(x)
        z = self.h_a(y)
        z_hat, z_likelihoods = self.entropy_bottleneck(z)
        if self.training and self.mixed_quantization:  # rate from the noisy z, decoder sees rounded z
            medians = self.entropy_bottleneck._get_medians()
            z_hat = _round_ste(z - medians) + medians
        means, scales, _ = self.entropy_parameters(z_hat)
        y_hat, y_likelihoods = self.gaussian_conditional(y, scales, means=means)
        if self.training and self.mixed_quantization:
            y_hat = _round_ste(y - means) + means
        return {"x_hat": self.g_s(y_hat), "likelihoods": {"y": y_likelihoods, "z": z_likelihoods}}

    def _indexes(self, index: torch.Tensor) -> torch.Tensor:
        return torch.round(index).clamp(0, NUM_SCALES - 1).to(torch.int32)

    def compress(self, x: torch.Tensor) -> dict[str, Any]:
        y = self.g_a(x)
        z = self.h_a(y)
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, z.size()[-2:])
        means, _, index = self.entropy_parameters(z_hat)
        y_strings = self.gaussian_conditional.compress(y, self._indexes(index), means=means)
        return {"strings": [y_strings, z_strings], "shape": z.size()[-2:]}

    def decompress(self, strings: list, shape: torch.Size) -> dict[str, Any]:
        z_hat = self.entropy_bottleneck.decompress(strings[1], shape)
        means, _, index = self.entropy_parameters(z_hat)
        y_hat = self.gaussian_conditional.decompress(strings[0], self._indexes(index), means=means)
        return {"x_hat": self.g_s(y_hat)}


class ShallowNTC(ImageCodecMixin, ShallowNTCNet):
    """The zoo's image-codec contract on :class:`ShallowNTCNet` (see the module docstring)."""

    stride = 64

    def __init__(self, g_a: nn.Module, g_s: nn.Module, arch: str, quality: int = 4, **kwargs: Any):
        if quality not in range(1, len(RD_LAMBDAS) + 1):
            raise ValueError(f"{arch}: quality must be one of {list(range(1, len(RD_LAMBDAS) + 1))}, got {quality}")
        super().__init__(g_a, g_s, **kwargs)
        self.zoo_arch = arch
        self.quality = quality
        self.rd_lambda = RD_LAMBDAS[quality - 1]

    def analysis(self, x: torch.Tensor) -> torch.Tensor:
        """Image (sides multiples of 16) -> latent ``y``, 320 channels at 1/16 resolution."""
        self._check(x)
        return self.g_a(x)

    def synthesis(self, y_hat: torch.Tensor) -> torch.Tensor:
        """Quantized latent -> reconstruction (the shallow decoder)."""
        return self.g_s(y_hat)


_COMMON = dict(
    task="image_codec",
    family="shallow_ntc",
    paper="Computationally-Efficient Neural Image Compression with Shallow Decoders",
    arxiv="2304.06244",
    license="UCI non-commercial (mandt-lab/shallow-ntc)",
    source="https://github.com/mandt-lab/shallow-ntc",
    input_size=(3, 256, 256),
    test_size=(3, 64, 64),
)


@register_model(**_COMMON, params=23_855_515, gmacs=18.494347, quality=4,
                description="ELIC analysis (16.71 GMACs at 256x256) + the paper's two-layer residual synthesis "
                            "(0.349 GMACs, 48x cheaper) + mean-scale hyperprior")
def shallow_ntc_2layer(quality: int = 4, **kwargs: Any) -> ShallowNTC:
    return ShallowNTC(ElicAnalysis(), TwoLayerResSynthesis(), "shallow_ntc_2layer", quality, **kwargs)


@register_model(**_COMMON, params=22_867_555, gmacs=18.224601, quality=4,
                description="ELIC analysis (16.71 GMACs at 256x256) + JPEG-like one-layer synthesis "
                            "(0.080 GMACs, 210x cheaper) + mean-scale hyperprior")
def shallow_ntc_jpeg_like(quality: int = 4, **kwargs: Any) -> ShallowNTC:
    return ShallowNTC(ElicAnalysis(), JPEGLikeSynthesis(), "shallow_ntc_jpeg_like", quality, **kwargs)


@register_model(**_COMMON, params=21_864_155, gmacs=11.034057, quality=4,
                description="CNN analysis (256 wide, 9.23 GMACs at 256x256) + two-layer synthesis without the residual "
                            "branch (24 hidden channels, 0.371 GMACs, 25x cheaper), mixed-quantization training + "
                            "mean-scale hyperprior")
def shallow_ntc_2layer_cnn(quality: int = 4, **kwargs: Any) -> ShallowNTC:
    kwargs.setdefault("mixed_quantization", True)
    return ShallowNTC(CNNAnalysis(), TwoLayerSynthesis(channels=(24, 3)), "shallow_ntc_2layer_cnn", quality, **kwargs)
