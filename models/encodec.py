"""EnCodec: High Fidelity Neural Audio Compression (Défossez et al., 2022).

Layout and numerics follow the authors' code, facebookresearch/encodec (MIT, Copyright Meta
Platforms; the installed ``encodec`` package, version 0.1.1): a SEANet encoder / decoder with a
two-layer LSTM, a residual vector quantizer of EMA codebooks, and EnCodec's bandwidth rule
(``n_q = floor(kbps / (log2(1024) * frame_rate / 1000))``). Module names equal the authors', so
their published files (``encodec_24khz-d7cc33bc.th``, ``encodec_48khz-7e698e3e.th``) load
unchanged (``encoder.model.0.conv.conv.weight_g``, ``quantizer.vq.layers.0._codebook.embed``, ...).

- ``encodec_24khz``: mono, causal convolutions with weight norm, 1.5 / 3 / 6 / 12 / 24 kbps
  (2 .. 32 codebooks of 1024 at 75 Hz). It streams (:meth:`EncodecModel.stream_encode` /
  ``stream_decode``, the base class's stateful layers): after the start, one frame in gives one
  code frame out. At the very start the authors' causal convolutions pad with a *reflection* of
  the first samples, which looks ahead by up to 6 steps at the 75 Hz layers; the stream therefore
  holds its first pieces until ``stream_warmup_frames`` (7) frames have arrived, and then gives
  exactly the one-shot codes / audio.
- ``encodec_48khz``: stereo, non-causal, every conv followed by a GroupNorm(1, C) over time
  ("time_group_norm", no weight norm), 3 / 6 / 12 / 24 kbps (2 .. 16 codebooks at 150 Hz). As in
  the authors' model it codes 1 s segments that overlap by 1 %: each segment is divided by its
  RMS (the mean over channels; ``scale = 1e-8 + rms``), coded, decoded, multiplied back, and the
  segments are joined by a linear cross-fade (``_linear_overlap_add``). The per-segment scales are
  side information that the decoder needs: ``encode(wav, return_scales=True)`` gives them and
  ``decode(codes, scales=...)`` takes them (the authors' own format stores them as float32).

Codes are (B, n_q, frames); for the segmented model the segments' frames are concatenated in
time (every segment but the last has ``segment_frames`` frames, so the split is unambiguous).

The SEANet blocks are the shared ones of :mod:`zoo.models.layers.audio` (which keep EnCodec's
names and padding numerics); the quantizer is :mod:`zoo.models.layers.vq_ema`.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Iterable, Iterator, Sequence

import torch
import torch.nn as nn

from zoo.pretrained import PretrainedCfg
from zoo.registry import register_model

from .audio_codec import AudioCodec
from .layers.audio import SConv1d, SConvTranspose1d, SEANetDecoder, SEANetEncoder
from .layers.vq_ema import ResidualVectorQuantizer

__all__ = ["EncodecModel", "filter_encodec", "linear_overlap_add"]

_PAPER = "High Fidelity Neural Audio Compression"
_ARXIV = "2210.13438"
_SOURCE = "https://github.com/facebookresearch/encodec"
_ROOT_URL = "https://dl.fbaipublicfiles.com/encodec/v0/"


def linear_overlap_add(frames: Sequence[torch.Tensor], stride: int) -> torch.Tensor:
    """Join ``frames`` (..., T_i) placed every ``stride`` samples with triangular weights,
    normalised by the summed weights (EnCodec's ``_linear_overlap_add``): a position covered by
    one frame keeps it, two overlapping frames cross-fade linearly."""
    if not frames:
        raise ValueError("no frames to join")
    first = frames[0]
    device, dtype = first.device, first.dtype
    total = stride * (len(frames) - 1) + frames[-1].shape[-1]
    length = first.shape[-1]
    t = torch.linspace(0, 1, length + 2, device=device, dtype=dtype)[1:-1]
    weight = 0.5 - (t - 0.5).abs()  # > 0 everywhere: no division by zero below
    sum_weight = torch.zeros(total, device=device, dtype=dtype)
    out = torch.zeros(*first.shape[:-1], total, device=device, dtype=dtype)
    offset = 0
    for frame in frames:
        n = frame.shape[-1]
        out[..., offset : offset + n] += weight[:n] * frame
        sum_weight[offset : offset + n] += weight[:n]
        offset += stride
    return out / sum_weight


class EncodecModel(AudioCodec):
    """EnCodec on raw waveforms (B, channels, T) in [-1, 1].

    Args:
        sample_rate: Hz.
        channels: audio channels.
        causal: causal convolutions (streamable) or centred ones.
        norm: ``"weight_norm"`` (24 kHz) or ``"time_group_norm"`` (48 kHz).
        normalize: divide each segment by its RMS before coding (48 kHz).
        segment: segment duration in seconds for the overlap-add path (None: the whole input).
        overlap: overlap between segments, a fraction of the segment.
        target_bandwidths: the kbps the model was trained for.
        n_filters, dimension, ratios, n_residual_layers, lstm: SEANet sizes (EnCodec's 32, 128,
            (8, 5, 4, 2), 1, 2).
        codebook_size: entries per codebook (1024).
        n_q: codebooks (default EnCodec's: enough for the largest target bandwidth).
        quantizer_dropout: in training, draw the bandwidth per batch from ``target_bandwidths``
            (variable-bandwidth training of the paper).
        decay, kmeans_init, kmeans_iters, threshold_ema_dead_code: codebook training (EnCodec's
            0.99, True, 50, 2).
    """

    def __init__(
        self,
        sample_rate: int = 24_000,
        channels: int = 1,
        causal: bool = True,
        norm: str = "weight_norm",
        normalize: bool = False,
        segment: float | None = None,
        overlap: float = 0.01,
        target_bandwidths: Sequence[float] = (1.5, 3.0, 6.0, 12.0, 24.0),
        n_filters: int = 32,
        dimension: int = 128,
        ratios: Sequence[int] = (8, 5, 4, 2),
        n_residual_layers: int = 1,
        lstm: int = 2,
        codebook_size: int = 1024,
        n_q: int | None = None,
        quantizer_dropout: bool = True,
        decay: float = 0.99,
        kmeans_init: bool = True,
        kmeans_iters: int = 50,
        threshold_ema_dead_code: float = 2,
        name: str = "unset",
    ):
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        if codebook_size < 2 or codebook_size & (codebook_size - 1):
            raise ValueError(f"codebook_size must be a power of 2, got {codebook_size}")
        if segment is not None and segment <= 0:
            raise ValueError(f"segment must be positive seconds or None, got {segment}")
        if not 0.0 <= overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {overlap}")
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.causal = bool(causal)
        self.normalize = bool(normalize)
        self.segment = segment
        self.overlap = overlap
        self.target_bandwidths = [float(b) for b in target_bandwidths]
        self.name = name
        self.bandwidth: float | None = None  # set_target_bandwidth; None: every codebook
        self.encoder = SEANetEncoder(
            channels=channels, dimension=dimension, n_filters=n_filters, n_residual_layers=n_residual_layers,
            ratios=ratios, norm=norm, causal=causal, lstm=lstm,
        )
        self.hop_length = int(self.encoder.hop_length)
        frame_rate = math.ceil(self.sample_rate / self.hop_length)
        if n_q is None:  # EnCodec's rule (10-bit codebooks)
            n_q = int(1000 * max(self.target_bandwidths) // (frame_rate * 10))
        bw_per_q = math.log2(codebook_size) * frame_rate / 1000
        dropout_n_q = sorted({min(n_q, max(1, math.floor(b / bw_per_q))) for b in self.target_bandwidths})
        self.quantizer = ResidualVectorQuantizer(
            dimension=dimension, n_q=n_q, bins=codebook_size, decay=decay, kmeans_init=kmeans_init,
            kmeans_iters=kmeans_iters, threshold_ema_dead_code=threshold_ema_dead_code,
            quantizer_dropout=quantizer_dropout, dropout_n_q=dropout_n_q,
        )
        self.decoder = SEANetDecoder(
            channels=channels, dimension=dimension, n_filters=n_filters, n_residual_layers=n_residual_layers,
            ratios=ratios, norm=norm, causal=causal, lstm=lstm,
        )
        self.n_codebooks = n_q
        self.codebook_size = codebook_size
        self._arch = dict(norm=norm, n_filters=n_filters, dimension=dimension, ratios=list(ratios),
                          n_residual_layers=n_residual_layers, lstm=lstm)

    # ------------------------------------------------------------------------------ settings
    def set_target_bandwidth(self, bandwidth: float | None) -> None:
        """Use ``bandwidth`` kbps (one of ``target_bandwidths``; None: every codebook)."""
        if bandwidth is not None and float(bandwidth) not in self.target_bandwidths:
            raise ValueError(
                f"this model does not support the bandwidth {bandwidth} kbps; "
                f"select one of {self.target_bandwidths}"
            )
        self.bandwidth = None if bandwidth is None else float(bandwidth)

    def n_quantizers_for_bandwidth(self, bandwidth: float | None) -> int:
        """EnCodec's rule: codebooks used at ``bandwidth`` kbps (None: all)."""
        return self.quantizer.n_quantizers_for_bandwidth(math.ceil(self.sample_rate / self.hop_length), bandwidth)

    def _n_q(self, n_quantizers: int | None) -> int:
        if n_quantizers is None:
            return self.n_quantizers_for_bandwidth(self.bandwidth)
        n = int(n_quantizers)
        if not 1 <= n <= self.n_codebooks:
            raise ValueError(f"n_quantizers must be in 1..{self.n_codebooks}, got {n_quantizers}")
        return n

    @property
    def segment_length(self) -> int | None:
        return None if self.segment is None else int(self.segment * self.sample_rate)

    @property
    def segment_stride(self) -> int | None:
        length = self.segment_length
        return None if length is None else max(1, int((1 - self.overlap) * length))

    @property
    def segment_frames(self) -> int | None:
        """Code frames of one full segment."""
        length = self.segment_length
        return None if length is None else math.ceil(length / self.hop_length)

    @property
    def uses_scales(self) -> bool:
        """True when decoding needs the per-segment scales (side information)."""
        return self.normalize

    # ------------------------------------------------------------------------------ segments
    def _segments(self, length: int) -> list[tuple[int, int]]:
        seg, stride = self.segment_length, self.segment_stride
        if seg is None:
            return [(0, length)]
        return [(off, min(length, off + seg)) for off in range(0, length, stride)]

    def _encode_segment(self, x: torch.Tensor, n_q: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        scale = None
        if self.normalize:
            mono = x.mean(dim=1, keepdim=True)
            volume = mono.pow(2).mean(dim=2, keepdim=True).sqrt()
            scale = 1e-8 + volume
            x = x / scale
            scale = scale.view(-1, 1)
        codes = self.quantizer.encode(self.encoder(x), n_q)
        return codes, scale

    def _decode_segment(self, codes: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
        out = self.decoder(self.quantizer.decode(codes))
        if scale is not None:
            out = out * scale.view(-1, 1, 1)
        return out

    def encode_frames(
        self, wav: torch.Tensor, n_quantizers: int | None = None
    ) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """The authors' layout: a list of (codes (B, n_q, frames), scale (B, 1) or None), one per
        segment."""
        self.check_wav(wav)
        n_q = self._n_q(n_quantizers)
        return [self._encode_segment(wav[..., a:b], n_q) for a, b in self._segments(wav.shape[-1])]

    def decode_frames(self, frames: Sequence[tuple[torch.Tensor, torch.Tensor | None]]) -> torch.Tensor:
        """Inverse of :meth:`encode_frames`: decoded segments joined by linear overlap-add."""
        if self.segment_length is None:
            if len(frames) != 1:
                raise ValueError(f"this model codes one segment, got {len(frames)}")
            return self._decode_segment(*frames[0])
        return linear_overlap_add([self._decode_segment(c, s) for c, s in frames], self.segment_stride)

    # ------------------------------------------------------------------------------ contract
    def encode(self, wav: torch.Tensor, n_quantizers: int | None = None, return_scales: bool = False):
        """Codes (B, n_q, frames) of ``wav`` (B, C, T); with ``return_scales``, also the
        per-segment scales (B, segments) float tensor (None when the model does not normalise).
        ``n_quantizers`` None: the target bandwidth's (``set_target_bandwidth``), else all."""
        frames = self.encode_frames(wav, n_quantizers)
        codes = torch.cat([c for c, _ in frames], dim=-1)
        if not return_scales:
            return codes
        scales = torch.cat([s for _, s in frames], dim=1) if self.normalize else None
        return codes, scales

    def _check_codes(self, codes: torch.Tensor) -> None:
        if not isinstance(codes, torch.Tensor) or codes.dim() != 3:
            shape = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
            raise ValueError(f"codes must be a (B, n_q, frames) integer tensor, got {shape}")
        if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
            raise ValueError(f"codes must be an integer tensor, got {codes.dtype}")
        if not 1 <= codes.shape[1] <= self.n_codebooks:
            raise ValueError(f"codes have {codes.shape[1]} codebooks; this model has 1..{self.n_codebooks}")
        if codes.shape[-1] == 0:
            raise ValueError("codes have no frames")

    def split_codes(self, codes: torch.Tensor) -> list[torch.Tensor]:
        """Per-segment codes of a concatenated (B, n_q, frames) tensor."""
        step = self.segment_frames
        return [codes] if step is None else list(codes.split(step, dim=-1))

    def decode(self, codes: torch.Tensor, scales: torch.Tensor | None = None) -> torch.Tensor:
        """Waveform (B, C, T') from codes (B, n_q, frames); a normalising model (48 kHz) needs the
        ``scales`` (B, segments) that :meth:`encode` returned with ``return_scales=True``."""
        self._check_codes(codes)
        parts = self.split_codes(codes)
        if self.normalize:
            if scales is None:
                raise ValueError(
                    f"{self.name}: this model normalises each segment; decode(codes, scales=...) needs the "
                    "scales from encode(wav, return_scales=True)"
                )
            if scales.dim() != 2 or scales.shape != (codes.shape[0], len(parts)):
                raise ValueError(
                    f"scales must be (B, segments) = ({codes.shape[0]}, {len(parts)}), got {tuple(scales.shape)}"
                )
            frames = [(c, scales[:, i : i + 1]) for i, c in enumerate(parts)]
        else:
            frames = [(c, None) for c in parts]
        return self.decode_frames(frames)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """Reconstruction trimmed to the input length (training mode: :meth:`forward_train`)."""
        self.check_wav(wav)
        if self.training:
            return self.forward_train(wav)["wav"]
        return self.decode_frames(self.encode_frames(wav))[..., : wav.shape[-1]]

    def forward_train(self, wav: torch.Tensor, n_quantizers: int | None = None) -> dict[str, torch.Tensor]:
        """One pass with gradients on a training crop (one segment, as the authors train):
        normalise (48 kHz), encode, quantize (EMA codebook update, quantizer dropout when
        ``n_quantizers`` is None), decode, rescale, trim."""
        self.check_wav(wav)
        x, scale = wav, None
        if self.normalize:
            volume = wav.mean(dim=1, keepdim=True).pow(2).mean(dim=2, keepdim=True).sqrt()
            scale = 1e-8 + volume
            x = wav / scale
        n_q = None if n_quantizers is None else self._n_q(n_quantizers)
        if n_q is None and not (self.training and self.quantizer.quantizer_dropout):
            n_q = self._n_q(None)
        q = self.quantizer(self.encoder(x), n_q)
        y = self.decoder(q.z_q)
        if scale is not None:
            y = y * scale
        return dict(wav=y[..., : wav.shape[-1]], codes=q.codes, commitment_loss=q.commitment_loss,
                    codebook_loss=q.codebook_loss)

    # ------------------------------------------------------------------------------ streaming
    @property
    def stream_warmup_frames(self) -> int:
        """Frames a stream must hold before its first call (encoder and decoder alike) so that
        every causal conv's reflect padding of the signal start sees the same samples as in a
        one-shot call (``padding + 1`` steps at each layer's rate)."""
        hop, frames = self.hop_length, 1
        down = 1  # input samples per step at the current encoder layer
        for m in self.encoder.modules():
            if isinstance(m, SConv1d):
                frames = max(frames, math.ceil((m.padding_total + 1) * down / hop))
                down *= m.conv.conv.stride[0]
        up = 1  # steps per code frame at the current decoder layer
        for m in self.decoder.modules():
            if isinstance(m, SConv1d):
                frames = max(frames, math.ceil((m.padding_total + 1) / up))
            elif isinstance(m, SConvTranspose1d):
                up *= m.convtr.convtr.stride[0]
        return frames

    def stream_encode(self, chunks: Iterable[torch.Tensor], n_quantizers: int | None = None) -> Iterator[torch.Tensor]:
        """Codes of (B, C, n) pieces as they come (see the base class); the first pieces are held
        until ``stream_warmup_frames * hop_length`` samples are there. The codes equal
        ``encode`` of the whole signal zero-padded to a multiple of ``hop_length``."""
        return super().stream_encode(_hold_until(chunks, self.stream_warmup_frames * self.hop_length), n_quantizers)

    def stream_decode(self, code_frames: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        """Audio of codes (B, n_q, f) as they come (see the base class); the first codes are
        held until ``stream_warmup_frames`` frames are there. Equal to slices of ``decode``."""
        return super().stream_decode(_hold_until(code_frames, self.stream_warmup_frames))

    # ------------------------------------------------------------------------------ reference
    def authors_reference(self) -> nn.Module:
        """The authors' ``encodec.EncodecModel`` with this model's weights and bandwidth (their
        ``forward(wav)`` is the trimmed reconstruction, like ours)."""
        try:
            import encodec
            from encodec import modules as em
            from encodec import quantization as eq
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("authors_reference() needs the `encodec` package (pip install encodec)") from e
        a = self._arch
        kw = dict(channels=self.channels, dimension=a["dimension"], n_filters=a["n_filters"],
                  n_residual_layers=a["n_residual_layers"], ratios=list(a["ratios"]), norm=a["norm"],
                  causal=self.causal, lstm=a["lstm"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.nn.utils.weight_norm
            enc, dec = em.SEANetEncoder(**kw), em.SEANetDecoder(**kw)
            qz = eq.ResidualVectorQuantizer(dimension=a["dimension"], n_q=self.n_codebooks, bins=self.codebook_size)
            ref = encodec.EncodecModel(
                enc, dec, qz, list(self.target_bandwidths), self.sample_rate, self.channels,
                normalize=self.normalize, segment=self.segment, overlap=self.overlap, name=self.name,
            )
        ref.load_state_dict(self.state_dict(), strict=True)
        ref.bandwidth = self.bandwidth
        p = next(self.parameters())
        return ref.to(device=p.device, dtype=p.dtype).train(self.training)


def _hold_until(pieces: Iterable[torch.Tensor], length: int) -> Iterator[torch.Tensor]:
    """Join the first (B, C, n) pieces until they hold ``length`` steps, then pass the rest on."""
    held: list[torch.Tensor] = []
    count = 0
    it = iter(pieces)
    for piece in it:
        if not isinstance(piece, torch.Tensor) or piece.ndim != 3:
            shape = tuple(piece.shape) if isinstance(piece, torch.Tensor) else type(piece).__name__
            raise ValueError(f"stream pieces must be 3-D tensors (B, C, n), got {shape}")
        held.append(piece)
        count += piece.shape[-1]
        if count >= length:
            break
    if held:
        yield held[0] if len(held) == 1 else torch.cat(held, -1)
    yield from it


def filter_encodec(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """The authors' ``encodec_*.th`` files: our module names are theirs, keys map 1:1."""
    if not any(k.startswith("quantizer.vq.layers.") for k in state_dict):
        raise KeyError("not an EnCodec state dict (no quantizer.vq.layers.*)")
    return dict(state_dict)


_COMMON: dict[str, Any] = dict(
    task="audio_codec",
    family="encodec",
    paper=_PAPER,
    arxiv=_ARXIV,
    license="MIT",
    source=_SOURCE,
    input_range=(-1.0, 1.0),
)

_MODELS: dict[str, dict[str, Any]] = {
    "encodec_24khz": dict(sample_rate=24_000, channels=1, causal=True, norm="weight_norm", normalize=False,
                          segment=None, target_bandwidths=(1.5, 3.0, 6.0, 12.0, 24.0)),
    "encodec_48khz": dict(sample_rate=48_000, channels=2, causal=False, norm="time_group_norm", normalize=True,
                          segment=1.0, target_bandwidths=(3.0, 6.0, 12.0, 24.0)),
}


def _create(name: str, **kwargs: Any) -> EncodecModel:
    return EncodecModel(**{**_MODELS[name], "name": name, **kwargs})


# narrow widths for the registry-wide behaviour tests (the card's numbers are the full model's)
_TEST_ARGS = dict(n_filters=4, dimension=16, lstm=1, codebook_size=64, n_q=4, kmeans_iters=3)


@register_model(
    **_COMMON,
    input_size=(1, 24_000),
    test_size=(1, 2_400),
    test_args=_TEST_ARGS,
    params=14_851_810,
    gmacs=3.2941056,
    description="EnCodec 24 kHz mono, causal (streamable), 1.5 / 3 / 6 / 12 / 24 kbps",
    pretrained_cfgs=[
        PretrainedCfg(
            tag="v0",
            url=_ROOT_URL + "encodec_24khz-d7cc33bc.th",
            license="MIT",
            verified=False,
            sha256=None,
            filter_fn=filter_encodec,
            description="the authors' 24 kHz model (sha256 prefix d7cc33bc in the file name)",
        )
    ],
)
def encodec_24khz(**kwargs: Any) -> EncodecModel:
    """EnCodec 24 kHz: mono, causal, 32 codebooks of 1024 at 75 Hz."""
    return _create("encodec_24khz", **kwargs)


@register_model(
    **_COMMON,
    input_size=(2, 48_000),
    test_size=(2, 4_800),
    test_args={**_TEST_ARGS, "segment": 0.04},
    params=14_856_294,
    gmacs=6.37248512,
    description="EnCodec 48 kHz stereo, non-causal, 1 s segments with 1 % overlap, 3 / 6 / 12 / 24 kbps",
    pretrained_cfgs=[
        PretrainedCfg(
            tag="v0",
            url=_ROOT_URL + "encodec_48khz-7e698e3e.th",
            license="MIT",
            verified=False,
            sha256=None,
            filter_fn=filter_encodec,
            description="the authors' 48 kHz model (sha256 prefix 7e698e3e in the file name)",
        )
    ],
)
def encodec_48khz(**kwargs: Any) -> EncodecModel:
    """EnCodec 48 kHz: stereo, non-causal, 16 codebooks of 1024 at 150 Hz, per-segment scales."""
    return _create("encodec_48khz", **kwargs)
