"""``zoo eval audio_codec``: code every file of a folder through the real bitstream and score
the decoded audio.

Each file is read (soundfile), resampled to the codec's rate (torchaudio) and brought to its
channel count, compressed to a ``.zac`` byte string (:meth:`AudioCodec.compress_with_info`) and
decompressed. Reported per file and as the mean over files:

- ``bitrate_kbps``: the codes' exact bitrate from their layout, ``n_q * frames *
  ceil(log2(K))`` bits over the file's duration (frames = ceil(T / hop), so slightly above the
  nominal rate for short files); ``file_kbps``: the whole ``.zac`` file, header included;
  ``nominal_kbps``: ``n_q * log2(K) * frame rate``;
- ``mel_distance`` (DAC's multi-scale mel loss), ``stft_distance`` (DAC's multi-scale STFT loss),
  ``si_sdr`` (dB), ``stoi`` (pystoi), ``pesq`` (wideband, at 16 kHz) of the decoded audio
  against the input at the codec's rate.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..base import TaskConfigError
from .data import list_audio, load_audio
from .metrics import code_bitrate, mel_distance, nominal_bitrate, pesq_wb, si_sdr, stft_distance
from .metrics import stoi as stoi_score

__all__ = ["evaluate_audio_codec"]

_METRICS = ("bitrate_kbps", "file_kbps", "nominal_kbps", "mel_distance", "stft_distance", "si_sdr", "stoi", "pesq",
            "encode_rtf", "decode_rtf")


def _mean(values: list) -> float | None:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(vals)) if vals else None


@torch.no_grad()
def evaluate_audio_codec(
    model: torch.nn.Module,
    data_root: str | os.PathLike,
    device: str | torch.device = "cpu",
    bitrate: float | None = None,
    max_files: int | None = None,
    max_seconds: float | None = None,
    pesq: bool = True,
    stoi: bool = True,
    entropy_coding: bool = False,
) -> dict[str, Any]:
    """Compress and decompress every audio file under ``data_root`` and measure what came out.

    Args:
        bitrate: target bitrate in kbps (the most codebooks within it; None: all codebooks).
        max_files: score at most this many files (sorted by path).
        max_seconds: use at most the first this many seconds of each file.
        pesq: also compute wideband PESQ (speech only; None where PESQ finds no speech).
        stoi: also compute STOI.
        entropy_coding: range-code the codes (reported in ``file_kbps``; the codes are the same).
    """
    if not all(callable(getattr(model, m, None)) for m in ("compress_with_info", "decompress")):
        raise TaskConfigError("this model is not an audio codec (no compress / decompress); see `zoo list --task audio_codec`")
    root = Path(data_root)
    if not root.is_dir():
        raise FileNotFoundError(f"no such folder: {root}")
    files = list_audio(root)[:max_files] if max_files else list_audio(root)
    if not files:
        raise TaskConfigError(f"no audio files found under {root}")
    if max_seconds is not None and max_seconds <= 0:
        raise TaskConfigError(f"max_seconds must be > 0, got {max_seconds}")
    n_q = model.n_quantizers_for(bitrate)
    sr, channels = int(model.sample_rate), int(model.channels)
    nominal = nominal_bitrate(n_q, model.codebook_size, sr, model.hop_length)
    model = model.eval().to(device)

    rows: list[dict[str, Any]] = []
    for path in files:
        x = load_audio(path, sr, channels, max_seconds)[None]  # (1, C, T) at the codec's rate
        if x.shape[-1] == 0:
            raise ValueError(f"{path} holds no audio")
        seconds = x.shape[-1] / sr
        t0 = time.perf_counter()
        data, info = model.compress_with_info(x.to(device), n_quantizers=n_q, entropy_coding=entropy_coding)
        t1 = time.perf_counter()
        y = model.decompress(data).float().cpu()
        t2 = time.perf_counter()
        if y.shape != x.shape:
            raise RuntimeError(f"{path.name}: decoded {tuple(y.shape)}, expected {tuple(x.shape)}")
        frames = math.ceil(x.shape[-1] / model.hop_length)
        ref, est = x[0], y[0].clamp(-1, 1)
        row: dict[str, Any] = {
            "file": str(path.relative_to(root)),
            "seconds": seconds,
            "n_q": int(info.get("n_q", n_q)),
            "bitrate_kbps": code_bitrate(n_q, frames, model.codebook_size, seconds),
            "file_kbps": 8 * len(data) / seconds / 1000,
            "nominal_kbps": nominal,
            "mel_distance": mel_distance(ref, est, sr),
            "stft_distance": stft_distance(ref, est),
            "si_sdr": si_sdr(ref, est),
            "stoi": stoi_score(ref, est, sr) if stoi else None,
            "pesq": pesq_wb(ref, est, sr) if pesq else None,
            "encode_rtf": (t1 - t0) / seconds,
            "decode_rtf": (t2 - t1) / seconds,
        }
        rows.append(row)

    result: dict[str, Any] = {
        "model": getattr(model, "zoo_name", type(model).__name__),
        "data": str(root),
        "files": len(rows),
        "num_images": len(rows),  # the eval table's "mean of N" row
        "sample_rate": sr,
        "n_q": n_q,
        "seconds": float(sum(r["seconds"] for r in rows)),  # of audio, all files
    }
    for k in _METRICS:
        result[k] = _mean([r[k] for r in rows])
    result["per_file"] = rows
    return result
