"""Descript Audio Codec (DAC): "High-Fidelity Audio Compression with Improved RVQGAN"
(Kumar et al., NeurIPS 2023, arXiv 2306.06546).

Architecture and state-dict names follow the authors' code, descript-audio-codec
(``dac/model/dac.py``, ``dac/nn/{layers,quantize}.py``; MIT, github.com/descriptinc/
descript-audio-codec), so the published weight files load with no renaming: ``encoder.block.N``,
``quantizer.quantizers.N.{in_proj,out_proj}.{weight_g,weight_v,bias}``,
``quantizer.quantizers.N.codebook.weight``, ``decoder.model.N``. Those files are saved as
``{"state_dict": ..., "metadata": {"kwargs": ...}}``; :func:`filter_dac` unwraps that.

The codec: a Snake/weight-norm convolutional encoder downsampling by ``prod(encoder_rates)``
(512 at 44.1 kHz, 320 at 16 / 24 kHz) to a 1024-channel latent, a residual VQ of
``n_codebooks`` factorised codebooks (1024 codes of 8 dims, l2-normalised) trained with
quantizer dropout (variable bitrate: any prefix of the codebooks decodes), and a mirrored
decoder with tanh output. Input is zero-padded on the right to a multiple of the hop, as the
authors do.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.pretrained import PretrainedCfg
from zoo.registry import register_model

from .audio_codec import AudioCodec
from .layers.audio import DACDecoder, DACEncoder
from .layers.quantize import ResidualVQ

__all__ = ["DAC", "DAC_CONFIGS", "filter_dac"]

_SOURCE = "https://github.com/descriptinc/descript-audio-codec"
_RELEASES = "https://github.com/descriptinc/descript-audio-codec/releases/download"
_PAPER = "High-Fidelity Audio Compression with Improved RVQGAN"
_ARXIV = "2306.06546"

# The authors' published configurations (conf/final/*.yml of descript-audio-codec).
DAC_CONFIGS: dict[str, dict[str, Any]] = {
    "16khz": dict(encoder_dim=64, encoder_rates=(2, 4, 5, 8), decoder_dim=1536, decoder_rates=(8, 5, 4, 2),
                  n_codebooks=12, codebook_size=1024, codebook_dim=8, sample_rate=16000),
    "24khz": dict(encoder_dim=64, encoder_rates=(2, 4, 5, 8), decoder_dim=1536, decoder_rates=(8, 5, 4, 2),
                  n_codebooks=32, codebook_size=1024, codebook_dim=8, sample_rate=24000),
    "44khz": dict(encoder_dim=64, encoder_rates=(2, 4, 8, 8), decoder_dim=1536, decoder_rates=(8, 8, 4, 2),
                  n_codebooks=9, codebook_size=1024, codebook_dim=8, sample_rate=44100),
    "44khz_16kbps": dict(encoder_dim=64, encoder_rates=(2, 4, 8, 8), latent_dim=128, decoder_dim=1536,
                         decoder_rates=(8, 8, 4, 2), n_codebooks=18, codebook_size=1024, codebook_dim=8,
                         sample_rate=44100),
}


def filter_dac(state_dict: Mapping[str, Any], model: nn.Module) -> dict[str, torch.Tensor]:
    """descript-audio-codec weight files (``weights*.pth``): ``{"state_dict": ..., "metadata":
    {"kwargs": ...}}`` (the loader usually unwraps ``state_dict`` already). Our names are the
    authors', so the tensors map 1:1; a file of another codec raises ``KeyError``."""
    sd: Any = state_dict
    if isinstance(sd.get("state_dict"), Mapping):
        sd = sd["state_dict"]
    sd = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    marker = "quantizer.quantizers.0.codebook.weight"
    if marker not in sd:
        raise KeyError(f"not a descript-audio-codec state dict: no {marker!r} (first keys: {list(sd)[:3]})")
    return sd


class DAC(AudioCodec):
    """DAC generator (encoder, residual VQ, decoder) in the authors' layout.

    Args:
        encoder_dim: width of the first encoder conv (doubles at each of ``encoder_rates``).
        encoder_rates: encoder strides; their product is the hop length.
        latent_dim: latent channels (default ``encoder_dim * 2 ** len(encoder_rates)``).
        decoder_dim: width of the first decoder conv (halves at each of ``decoder_rates``).
        decoder_rates: decoder upsampling factors.
        n_codebooks, codebook_size, codebook_dim: the residual VQ.
        quantizer_dropout: share of each training batch that uses a random number of
            codebooks (the authors train with 0.5).
        sample_rate: audio sample rate in Hz.
        channels: audio channels (1 in DAC; multichannel variants use more).
    """

    causal = False

    def __init__(
        self,
        encoder_dim: int = 64,
        encoder_rates: Sequence[int] = (2, 4, 8, 8),
        latent_dim: int | None = None,
        decoder_dim: int = 1536,
        decoder_rates: Sequence[int] = (8, 8, 4, 2),
        n_codebooks: int = 9,
        codebook_size: int = 1024,
        codebook_dim: int | Sequence[int] = 8,
        quantizer_dropout: float = 0.0,
        sample_rate: int = 44100,
        channels: int = 1,
    ):
        super().__init__()
        if math.prod(encoder_rates) != math.prod(decoder_rates):
            raise ValueError(f"encoder rates {tuple(encoder_rates)} and decoder rates {tuple(decoder_rates)} "
                             "must have the same product (the hop length)")
        if decoder_dim % 2 ** len(decoder_rates):
            raise ValueError(f"decoder_dim {decoder_dim} must be divisible by 2 ** {len(decoder_rates)}")
        self.encoder_dim = encoder_dim
        self.encoder_rates = list(encoder_rates)
        self.decoder_dim = decoder_dim
        self.decoder_rates = list(decoder_rates)
        self.latent_dim = latent_dim or encoder_dim * 2 ** len(encoder_rates)
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.hop_length = int(math.prod(encoder_rates))
        self.n_codebooks = int(n_codebooks)
        self.codebook_size = int(codebook_size)
        self.codebook_dim = codebook_dim
        self.encoder = DACEncoder(encoder_dim, encoder_rates, self.latent_dim, d_in=channels)
        self.quantizer = ResidualVQ(self.latent_dim, n_codebooks, codebook_size, codebook_dim, quantizer_dropout)
        self.decoder = DACDecoder(self.latent_dim, decoder_dim, decoder_rates, d_out=channels)
        for m in self.modules():  # the authors' init_weights: on their weight-normed convs only the bias takes
            if isinstance(m, nn.Conv1d) and m.bias is not None:
                nn.init.zeros_(m.bias)

    # -- the AudioCodec contract ---------------------------------------------------------------

    def _pad(self, wav: torch.Tensor) -> torch.Tensor:
        right = -wav.shape[-1] % self.hop_length
        return F.pad(wav, (0, right)) if right else wav

    @torch.no_grad()
    def encode(self, wav: torch.Tensor, n_quantizers: int | None = None) -> torch.Tensor:
        """Codes (B, n_q, ceil(T / hop_length)) of ``wav`` (B, channels, T) in [-1, 1]."""
        self.check_wav(wav)
        return self.quantizer.encode(self.encoder(self._pad(wav)), n_quantizers)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Audio (B, channels, T_frames * hop_length) from codes (B, n_q, T_frames), n_q <= n_codebooks.

        With an odd decoder rate (5 in the 16 / 24 kHz models) the authors' transposed conv
        (kernel 10, stride 5, padding 3) makes 5T - 1 samples of T, so their decoder returns
        ``T_frames * hop_length - 8``; the missing tail is zero-padded here."""
        return self._pad_to(self.decoder(self.quantizer.decode(codes)), codes.shape[-1] * self.hop_length)

    @staticmethod
    def _pad_to(y: torch.Tensor, length: int) -> torch.Tensor:
        short = length - y.shape[-1]
        return F.pad(y, (0, short)) if short > 0 else y[..., :length]

    def forward_train(self, wav: torch.Tensor, n_quantizers: int | None = None) -> dict[str, torch.Tensor]:
        """DAC's forward: reconstruction trimmed to the input length, codes and the VQ losses
        (quantizer dropout in training mode when ``n_quantizers`` is None)."""
        self.check_wav(wav)
        length = wav.shape[-1]
        out = self.quantizer(self.encoder(self._pad(wav)), n_quantizers)
        y = self._pad_to(self.decoder(out.z_q), length)
        return dict(wav=y, codes=out.codes, commitment_loss=out.commitment_loss, codebook_loss=out.codebook_loss)


def _cfg(tag: str, file: str, release: str, bitrate: str) -> PretrainedCfg:
    return PretrainedCfg(
        tag=tag,
        url=f"{_RELEASES}/{release}/{file}",
        license="MIT",
        verified=False,
        sha256=None,
        filter_fn=filter_dac,
        description=f"the authors' {bitrate} release {release}",
    )


_COMMON = dict(task="audio_codec", family="dac", paper=_PAPER, arxiv=_ARXIV, license="MIT", source=_SOURCE,
               input_range=(-1.0, 1.0))
# a narrow model of the same layout for the registry-wide behaviour tests
_TEST_ARGS = dict(encoder_dim=4, decoder_dim=32, n_codebooks=4, codebook_size=64)


@register_model(**_COMMON, input_size=(1, 16000), test_size=(1, 1280), test_args=_TEST_ARGS,
                params=74_175_906, gmacs=40.096554, pretrained_cfgs=[_cfg("v0_0_5", "weights_16khz.pth", "0.0.5", "6 kbps")],
                description="DAC 16 kHz: hop 320 (50 Hz frames), 12 codebooks of 1024, 6 kbps")
def dac_16khz(**kwargs: Any) -> DAC:
    return DAC(**{**DAC_CONFIGS["16khz"], "quantizer_dropout": 0.5, **kwargs})


@register_model(**_COMMON, input_size=(1, 24000), test_size=(1, 1280), test_args=_TEST_ARGS,
                params=74_708_706, gmacs=60.198851, pretrained_cfgs=[_cfg("v0_0_4", "weights_24khz.pth", "0.0.4", "24 kbps")],
                description="DAC 24 kHz: hop 320 (75 Hz frames), 32 codebooks of 1024, 24 kbps")
def dac_24khz(**kwargs: Any) -> DAC:
    return DAC(**{**DAC_CONFIGS["24khz"], "quantizer_dropout": 0.5, **kwargs})


@register_model(**_COMMON, input_size=(1, 44100), test_size=(1, 2048), test_args=_TEST_ARGS,
                params=76_651_890, gmacs=100.926013, pretrained_cfgs=[_cfg("v0_0_1", "weights.pth", "0.0.1", "8 kbps")],
                description="DAC 44.1 kHz: hop 512 (86 Hz frames), 9 codebooks of 1024, 7.75 kbps")
def dac_44khz(**kwargs: Any) -> DAC:
    return DAC(**{**DAC_CONFIGS["44khz"], "quantizer_dropout": 0.5, **kwargs})


@register_model(**_COMMON, input_size=(1, 44100), test_size=(1, 2048), test_args=_TEST_ARGS,
                params=64_213_250, gmacs=99.840387,
                pretrained_cfgs=[_cfg("v1_0_0", "weights_44khz_16kbps.pth", "1.0.0", "16 kbps")],
                description="DAC 44.1 kHz 16 kbps: 128-channel latent, 18 codebooks of 1024, 15.5 kbps")
def dac_44khz_16kbps(**kwargs: Any) -> DAC:
    return DAC(**{**DAC_CONFIGS["44khz_16kbps"], "quantizer_dropout": 0.5, **kwargs})
