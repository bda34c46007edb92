"""Audio folders for codec training and evaluation.

Any folder of audio files (wav, flac, ogg, aiff, mp3: what soundfile reads), searched
recursively. Files are read with soundfile as float32, resampled with torchaudio when their
rate differs from the model's, and brought to the model's channel count (mono files repeated,
multichannel files mixed down to mono; other mismatches are errors).

Training items are random crops of ``segment_seconds`` (DAC: 0.38 s); like audiotools'
``salient_excerpt`` (DAC's loader) a crop quieter than ``loudness_cutoff`` dB is redrawn up to
``num_tries`` times (RMS level here, LUFS there). Shorter files are zero-padded. Optionally the
level is normalised (``volume_norm_db``: RMS in dBFS, a stand-in for DAC's ``VolumeNorm`` to -16
LUFS) and rescaled when that would clip (DAC's ``RescaleAudio``). Validation items are the first
``val_segment_seconds`` of each file (whole files when None, one per batch).
"""

from __future__ import annotations

import math
import os
import random
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..base import TaskConfigError

__all__ = [
    "AUDIO_EXTENSIONS",
    "list_audio",
    "audio_info",
    "read_audio",
    "load_audio",
    "match_channels",
    "resample",
    "AudioSegmentDataset",
    "AudioDataModule",
]

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".mp3")


def list_audio(root: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Audio files under ``root`` (sorted; hidden files skipped)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"audio folder {root} does not exist")
    it = root.rglob("*") if recursive else root.iterdir()
    return sorted(p for p in it if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS and not p.name.startswith("."))


def audio_info(path: str | os.PathLike) -> tuple[int, int, int]:
    """``(sample_rate, channels, frames)`` of a file."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except (RuntimeError, sf.LibsndfileError) as e:
        raise ValueError(f"cannot read audio file {path}: {e}") from None
    return int(info.samplerate), int(info.channels), int(info.frames)


def read_audio(path: str | os.PathLike, start: int = 0, frames: int = -1) -> tuple[torch.Tensor, int]:
    """``(wav (C, T) float32, sample_rate)``: ``frames`` samples from ``start`` (-1: to the end)."""
    import soundfile as sf

    try:
        data, sr = sf.read(str(path), start=start, frames=frames, dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as e:
        raise ValueError(f"cannot read audio file {path}: {e}") from None
    return torch.from_numpy(np.ascontiguousarray(data.T)), int(sr)


def resample(wav: torch.Tensor, orig: int, new: int) -> torch.Tensor:
    """torchaudio's band-limited (windowed sinc) resampling along the last axis."""
    if orig == new:
        return wav
    import torchaudio

    g = math.gcd(int(orig), int(new))
    return torchaudio.functional.resample(wav, int(orig) // g, int(new) // g)


def match_channels(wav: torch.Tensor, channels: int, name: str = "audio") -> torch.Tensor:
    """``(C, T)`` -> ``(channels, T)``: mono repeated, several channels averaged to mono."""
    c = wav.shape[-2]
    if c == channels:
        return wav
    if c == 1:
        return wav.expand(*wav.shape[:-2], channels, wav.shape[-1]).contiguous()
    if channels == 1:
        return wav.mean(dim=-2, keepdim=True)
    raise ValueError(f"{name} has {c} channels; the model takes {channels} (only mono <-> {channels} is converted)")


def load_audio(path: str | os.PathLike, sample_rate: int, channels: int, max_seconds: float | None = None) -> torch.Tensor:
    """A whole file (or its first ``max_seconds``) as ``(channels, T)`` at ``sample_rate``."""
    sr, _, _ = audio_info(path)
    frames = -1 if max_seconds is None else math.ceil(max_seconds * sr)
    wav, sr = read_audio(path, 0, frames)
    wav = resample(match_channels(wav, channels, str(path)), sr, sample_rate)
    if max_seconds is not None:
        wav = wav[..., : round(max_seconds * sample_rate)]
    return wav


def _rms_db(wav: torch.Tensor) -> float:
    ms = float(wav.double().pow(2).mean())
    return -math.inf if ms <= 0 else 10 * math.log10(ms)


class AudioSegmentDataset(Dataset):
    """Items ``(channels, segment)`` float32 from the audio files under ``root``.

    Args:
        root: folder (searched recursively) or a list of files.
        sample_rate / channels: the model's.
        segment_seconds: crop length (None: whole files, evaluation only).
        train: random crops (else the start of each file).
        repeat: passes over the files per epoch (training).
        loudness_cutoff: redraw training crops whose RMS level (dBFS) is below this (None: never).
        num_tries: redraws before keeping a quiet crop.
        volume_norm_db: normalise each item's RMS level to this many dBFS (None: keep the level).
    """

    def __init__(
        self,
        root: str | os.PathLike | list,
        sample_rate: int,
        channels: int = 1,
        segment_seconds: float | None = 0.38,
        train: bool = True,
        repeat: int = 1,
        loudness_cutoff: float | None = -40.0,
        num_tries: int = 8,
        volume_norm_db: float | None = None,
    ):
        self.files = list(root) if isinstance(root, (list, tuple)) else list_audio(root)
        if not self.files:
            raise TaskConfigError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) found under {root}")
        self.sample_rate, self.channels = int(sample_rate), int(channels)
        self.segment = None if segment_seconds is None else max(1, round(segment_seconds * self.sample_rate))
        self.train, self.repeat = train, max(1, int(repeat))
        self.loudness_cutoff, self.num_tries = loudness_cutoff, max(1, int(num_tries))
        self.volume_norm_db = volume_norm_db
        self._info: dict[int, tuple[int, int, int]] = {}

    def __len__(self) -> int:
        return len(self.files) * (self.repeat if self.train else 1)

    def info(self, i: int) -> tuple[int, int, int]:
        if i not in self._info:
            self._info[i] = audio_info(self.files[i])
        return self._info[i]

    def _crop(self, i: int, start_s: float | None) -> torch.Tensor:
        """``segment`` samples at the model's rate from second ``start_s`` (None: random)."""
        sr, _, n = self.info(i)
        seg = self.segment
        assert seg is not None
        need = math.ceil(seg * sr / self.sample_rate) + (8 if sr != self.sample_rate else 0)
        if start_s is None:
            start = random.randint(0, max(0, n - need))
        else:
            start = min(int(start_s * sr), max(0, n - need))
        wav, _ = read_audio(self.files[i], start, min(need, n - start))
        wav = resample(match_channels(wav, self.channels, str(self.files[i])), sr, self.sample_rate)[..., :seg]
        if wav.shape[-1] < seg:
            wav = torch.nn.functional.pad(wav, (0, seg - wav.shape[-1]))
        return wav

    def _level(self, wav: torch.Tensor) -> torch.Tensor:
        if self.volume_norm_db is not None:
            db = _rms_db(wav)
            if math.isfinite(db):
                wav = wav * 10 ** ((self.volume_norm_db - db) / 20)
        peak = float(wav.abs().max()) if wav.numel() else 0.0
        return wav / peak if peak > 1.0 else wav

    def __getitem__(self, index: int) -> torch.Tensor:
        i = index % len(self.files)
        if self.segment is None:
            wav = load_audio(self.files[i], self.sample_rate, self.channels)
        elif not self.train:
            wav = self._crop(i, 0.0)
        else:
            wav = self._crop(i, None)
            for _ in range(self.num_tries - 1):
                if self.loudness_cutoff is None or _rms_db(wav) >= self.loudness_cutoff:
                    break
                wav = self._crop(i, None)
        return self._level(wav.float())


class AudioDataModule(L.LightningDataModule):
    """Training crops from ``train_dir`` and validation excerpts from ``val_dir`` (folders of
    audio files, any layout below them).

    Args:
        train_dir: training folder.
        val_dir: validation folder (None: no validation).
        sample_rate: the model's sample rate (files are resampled to it).
        channels: the model's channel count.
        segment_seconds: training crop length (DAC: 0.38 s).
        batch_size: crops per step (per device).
        num_workers: DataLoader worker processes.
        val_segment_seconds: validation excerpt (DAC: 5 s; None: whole files, batch 1).
        repeat: passes over the training files per epoch.
        loudness_cutoff: redraw training crops quieter than this RMS level in dBFS (None: off).
        volume_norm_db: normalise every item to this RMS level in dBFS (None: off).
    """

    def __init__(
        self,
        train_dir: str,
        val_dir: str | None = None,
        sample_rate: int = 16000,
        channels: int = 1,
        segment_seconds: float = 0.38,
        batch_size: int = 72,
        num_workers: int = 4,
        val_segment_seconds: float | None = 5.0,
        repeat: int = 1,
        loudness_cutoff: float | None = -40.0,
        volume_norm_db: float | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        if not Path(train_dir).is_dir():
            raise FileNotFoundError(f"training folder {train_dir} does not exist")
        if val_dir is not None and not Path(val_dir).is_dir():
            raise FileNotFoundError(f"validation folder {val_dir} does not exist")
        if segment_seconds <= 0:
            raise TaskConfigError(f"segment_seconds must be > 0, got {segment_seconds}")
        self.sample_rate, self.channels = int(sample_rate), int(channels)
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.train_set: AudioSegmentDataset | None = None
        self.val_set: AudioSegmentDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = AudioSegmentDataset(hp.train_dir, hp.sample_rate, hp.channels, hp.segment_seconds, train=True,
                                                 repeat=hp.repeat, loudness_cutoff=hp.loudness_cutoff,
                                                 volume_norm_db=hp.volume_norm_db)
        if stage in (None, "fit", "validate") and hp.val_dir is not None and self.val_set is None:
            self.val_set = AudioSegmentDataset(hp.val_dir, hp.sample_rate, hp.channels, hp.val_segment_seconds,
                                               train=False, volume_norm_db=hp.volume_norm_db)

    def _loader(self, ds: Dataset, shuffle: bool, batch_size: int, drop_last: bool) -> DataLoader:
        return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          pin_memory=torch.cuda.is_available(), drop_last=drop_last,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None
        if len(self.train_set) < self.batch_size:
            raise TaskConfigError(
                f"{len(self.train_set)} training crops per epoch for batch_size {self.batch_size}: raise data.repeat"
            )
        return self._loader(self.train_set, True, self.batch_size, drop_last=True)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        bs = self.batch_size if self.hparams.val_segment_seconds is not None else 1
        return self._loader(self.val_set, False, bs, drop_last=False)
