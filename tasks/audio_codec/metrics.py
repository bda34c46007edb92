"""The metrics neural audio codec papers report.

- :func:`code_bitrate`: the exact bitrate of a code tensor: ``n_q * frames * ceil(log2(K))``
  bits over the signal's duration (what the bit-packed ``.zac`` payload holds); the nominal
  ``n_q * log2(K) * frame_rate`` is the codec's ``bitrates`` table.
- :func:`mel_distance`: DAC's multi-scale mel loss (their training / evaluation configuration,
  :func:`zoo.models.layers.audio_losses.dac_mel_loss`) between reference and estimate.
- :func:`stft_distance`: DAC's multi-scale STFT loss (windows 2048 and 512, log + magnitude).
- :func:`si_sdr`: scale-invariant signal-to-distortion ratio in dB (Le Roux et al., "SDR -
  half-baked or well done?", ICASSP 2019; zero-mean, as DAC's ``SISDRLoss``), channels flattened.
- :func:`stoi`: short-time objective intelligibility (pystoi; it resamples to 10 kHz itself),
  averaged over channels.
- :func:`pesq_wb`: wideband PESQ (ITU-T P.862.2, the ``pesq`` package) at 16 kHz, the audio
  resampled with torchaudio first; averaged over channels; None when PESQ finds no speech.

Signals are ``(C, T)`` or ``(T,)`` float tensors / arrays in [-1, 1], reference first.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from zoo.models.layers.audio_losses import MultiScaleSTFTLoss, dac_mel_loss

from .data import resample

__all__ = ["code_bitrate", "nominal_bitrate", "mel_distance", "stft_distance", "si_sdr", "stoi", "pesq_wb", "PESQ_RATE"]

PESQ_RATE = 16000


def _t(x) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach().float().cpu()
    return x[None] if x.ndim == 1 else x


def _check(ref: torch.Tensor, est: torch.Tensor) -> None:
    if ref.shape != est.shape:
        raise ValueError(f"reference {tuple(ref.shape)} and estimate {tuple(est.shape)} differ in shape")


def code_bitrate(n_codebooks: int, frames: int, codebook_size: int, seconds: float) -> float:
    """kbps of ``n_codebooks x frames`` codes of ``ceil(log2(codebook_size))`` bits over ``seconds``."""
    if seconds <= 0:
        raise ValueError(f"duration must be > 0, got {seconds}")
    bits = n_codebooks * frames * max(1, math.ceil(math.log2(codebook_size)))
    return bits / seconds / 1000


def nominal_bitrate(n_codebooks: int, codebook_size: int, sample_rate: int, hop_length: int) -> float:
    """The papers' bitrate: ``n_q * log2(K) * sample_rate / hop_length`` bits per second, in kbps."""
    return n_codebooks * math.log2(codebook_size) * sample_rate / hop_length / 1000


@functools.lru_cache(maxsize=8)
def _mel(sample_rate: int):
    return dac_mel_loss(sample_rate)


@functools.lru_cache(maxsize=1)
def _stft():
    return MultiScaleSTFTLoss()


@torch.no_grad()
def mel_distance(ref, est, sample_rate: int) -> float:
    """DAC's multi-scale mel distance (L1 of log10 mel magnitudes, 7 scales) between the signals."""
    ref, est = _t(ref), _t(est)
    _check(ref, est)
    return float(_mel(int(sample_rate))(est[None], ref[None]))


@torch.no_grad()
def stft_distance(ref, est) -> float:
    """DAC's multi-scale STFT distance (windows 2048 and 512; log10 of the squared magnitude and
    magnitude L1)."""
    ref, est = _t(ref), _t(est)
    _check(ref, est)
    return float(_stft()(est[None], ref[None]))


def si_sdr(ref, est, zero_mean: bool = True) -> float:
    """Scale-invariant SDR in dB: ``10 log10(|a r|^2 / |a r - e|^2)``, ``a = <e, r> / |r|^2``
    (float64; ``inf`` for an estimate that is exactly a scaled reference)."""
    r = _t(ref).double().reshape(-1)
    e = _t(est).double().reshape(-1)
    if r.shape != e.shape:
        raise ValueError(f"reference {tuple(_t(ref).shape)} and estimate {tuple(_t(est).shape)} differ in shape")
    if zero_mean:
        r, e = r - r.mean(), e - e.mean()
    energy = float(r.pow(2).sum())
    if energy == 0:
        return float("nan")
    target = float((e * r).sum()) / energy * r
    noise = float((e - target).pow(2).sum())
    signal = float(target.pow(2).sum())
    if noise == 0:
        return math.inf
    if signal == 0:
        return -math.inf
    return 10 * math.log10(signal / noise)


def stoi(ref, est, sample_rate: int, extended: bool = False) -> float:
    """STOI (pystoi; ``extended``: ESTOI), the mean over channels."""
    from pystoi import stoi as _stoi

    r, e = _t(ref).double().numpy(), _t(est).double().numpy()
    if r.shape != e.shape:
        raise ValueError(f"reference {r.shape} and estimate {e.shape} differ in shape")
    return float(np.mean([_stoi(a, b, int(sample_rate), extended=extended) for a, b in zip(r, e)]))


def pesq_wb(ref, est, sample_rate: int) -> float | None:
    """Wideband PESQ (MOS-LQO, 1.04 .. 4.64) at 16 kHz, the mean over channels; None when PESQ
    cannot score the pair (no detectable speech in the reference, a signal under 1/4 s)."""
    from pesq import PesqError, pesq

    r, e = _t(ref), _t(est)
    _check(r, e)
    r, e = resample(r, int(sample_rate), PESQ_RATE), resample(e, int(sample_rate), PESQ_RATE)
    scores = []
    for a, b in zip(r.double().numpy(), e.double().numpy()):
        if not np.abs(a).max() > 0:  # silence: nothing to score (pesq would divide by zero)
            return None
        try:
            scores.append(pesq(PESQ_RATE, a, b, "wb"))
        except PesqError:
            return None
    return float(np.mean(scores))
