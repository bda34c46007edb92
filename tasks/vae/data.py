"""Data for VAE decoder distillation: image folders, and clips for video teachers.

Images (``frames=0``): every image under the folder (any layout); training takes random
``patch_size`` crops (smaller images are padded by reflection) with horizontal flips;
validation takes the centre ``val_size`` crop (the whole image when ``None``), cut down to a
multiple of ``multiple_of`` (the teacher's down-sampling factor).

Clips (``frames=T``): sequences are folders that hold the frames of one video as images (sorted
by name; ``frame_stride`` keeps every k-th frame) and video files (``.mp4``, ``.mkv``, ``.webm``,
``.avi``, ``.mov``; decoded with PyAV, frame by frame up to the clip's last frame). Training takes
``T`` consecutive frames from a random start with one random crop and flip for the whole clip;
validation the first ``T`` frames, centre-cropped. Items are ``(3, H, W)`` images or
``(3, T, H, W)`` clips in [0, 1].
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import torch
import torchvision.transforms.v2.functional as TF
from torch.utils.data import Dataset

from ..base import ImageFolderDataModule, TaskConfigError
from ..sr.data import IMAGE_EXTENSIONS, list_images, load_rgb

__all__ = [
    "VIDEO_EXTENSIONS",
    "VAEImageDataset",
    "VAEClipDataset",
    "VAEDataModule",
    "list_sequences",
    "read_frames",
    "image_tensor",
    "crop_to_multiple",
    "center_crop",
]

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov")


def image_tensor(path: str | os.PathLike) -> torch.Tensor:
    """An image file as float RGB ``(3, H, W)`` in [0, 1]."""
    return TF.to_dtype(TF.pil_to_tensor(load_rgb(path)), torch.float32, scale=True)


def crop_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Crop the last two dimensions (top-left) to multiples of ``multiple``."""
    if multiple <= 1:
        return x
    h, w = x.shape[-2:]
    hh, ww = h - h % multiple, w - w % multiple
    if hh == 0 or ww == 0:
        raise ValueError(f"an image of {h}x{w} is smaller than the model's stride {multiple}")
    return x[..., :hh, :ww]


def center_crop(x: torch.Tensor, size: int | None) -> torch.Tensor:
    """The centre ``size`` x ``size`` crop of the last two dimensions (what fits; all of it for None)."""
    if not size:
        return x
    h, w = x.shape[-2:]
    th, tw = min(size, h), min(size, w)
    top, left = (h - th) // 2, (w - tw) // 2
    return x[..., top : top + th, left : left + tw]


def _random_crop_flip(x: torch.Tensor, size: int) -> torch.Tensor:
    """One random ``size`` crop and horizontal flip for every frame of ``x`` (``(..., H, W)``)."""
    h, w = x.shape[-2:]
    if h < size or w < size:
        ph, pw = max(0, size - h), max(0, size - w)
        # (3, H, W) and (3, T, H, W) both pad as (C, H, W) / (N, C, H, W)
        x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="reflect" if ph < h and pw < w else "replicate")
        h, w = x.shape[-2:]
    top, left = random.randint(0, h - size), random.randint(0, w - size)
    x = x[..., top : top + size, left : left + size]
    if random.random() < 0.5:
        x = x.flip(-1)
    return x


class VAEImageDataset(Dataset):
    """RGB images in [0, 1] (see the module docstring)."""

    def __init__(
        self,
        root: str | os.PathLike,
        patch_size: int | None = 256,
        train: bool = True,
        repeat: int = 1,
        val_size: int | None = None,
        multiple_of: int = 8,
    ):
        self.files = list_images(root)
        if not self.files:
            raise TaskConfigError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}")
        self.patch_size, self.train, self.repeat = patch_size, train, max(1, repeat)
        self.val_size, self.multiple_of = val_size, multiple_of

    def __len__(self) -> int:
        return len(self.files) * (self.repeat if self.train else 1)

    def __getitem__(self, index: int) -> torch.Tensor:
        img = image_tensor(self.files[index % len(self.files)])
        if self.train and self.patch_size:
            return _random_crop_flip(img, self.patch_size)
        return crop_to_multiple(center_crop(img, self.val_size), self.multiple_of)


def list_sequences(root: str | os.PathLike, min_frames: int = 1, frame_stride: int = 1) -> list[tuple[Path, int]]:
    """``(path, number of frames)`` of every sequence under ``root``: folders whose images are
    the frames of one video (counted after ``frame_stride``), and video files (length read on
    first use: reported as 0 here). Folders with fewer than ``min_frames`` frames are skipped."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"video folder {root} does not exist")
    out: list[tuple[Path, int]] = []
    for folder in sorted({p.parent for p in list_images(root)}):
        n = len(range(0, len(list_images(folder, recursive=False)), max(1, frame_stride)))
        if n >= min_frames:
            out.append((folder, n))
    videos = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
    out += [(p, 0) for p in videos]
    return sorted(out)


def read_frames(path: str | os.PathLike, start: int = 0, count: int | None = None, frame_stride: int = 1) -> torch.Tensor:
    """Frames ``start .. start + count`` (after ``frame_stride``) of a frame folder or a video file
    as float ``(3, T, H, W)`` in [0, 1]."""
    path = Path(path)
    stride = max(1, frame_stride)
    if path.is_dir():
        files = list_images(path, recursive=False)[::stride]
        files = files[start : None if count is None else start + count]
        if not files:
            raise ValueError(f"no frames in {path} from frame {start}")
        return torch.stack([image_tensor(f) for f in files], dim=1)
    try:
        import av
    except ImportError:
        raise ValueError(f"reading video file {path} needs PyAV (pip install av), or extract its frames into a folder") from None
    # decode only up to the last frame asked for: memory is bounded by the clip, not the video
    stop = None if count is None else (start + count) * stride
    frames = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{path} has no video stream")
            for i, frame in enumerate(container.decode(video=0)):
                if stop is not None and i >= stop:
                    break
                if i % stride == 0 and i // stride >= start:
                    frames.append(torch.from_numpy(frame.to_ndarray(format="rgb24")))
    except av.error.FFmpegError as e:
        raise ValueError(f"cannot read video file {path}: {e}") from None
    if not frames:
        raise ValueError(f"no frames in {path} from frame {start}")
    clip = torch.stack(frames, dim=1).permute(3, 1, 0, 2)  # (H,T,W,3) -> (3,T,H,W)
    return TF.to_dtype(clip, torch.float32, scale=True)  # as image_tensor: the same floats as a frame folder


class VAEClipDataset(Dataset):
    """Clips of ``frames`` consecutive frames ``(3, T, H, W)`` in [0, 1] (see the module docstring)."""

    def __init__(
        self,
        root: str | os.PathLike,
        frames: int,
        patch_size: int | None = 256,
        train: bool = True,
        repeat: int = 1,
        frame_stride: int = 1,
        val_size: int | None = None,
        multiple_of: int = 8,
    ):
        if frames < 1:
            raise TaskConfigError(f"frames must be at least 1, got {frames}")
        self.sequences = list_sequences(root, min_frames=frames, frame_stride=frame_stride)
        if not self.sequences:
            raise TaskConfigError(
                f"no frame folders with at least {frames} frames and no video files ({', '.join(VIDEO_EXTENSIONS)}) under {root}"
            )
        self.frames, self.patch_size, self.train, self.repeat = frames, patch_size, train, max(1, repeat)
        self.frame_stride, self.val_size, self.multiple_of = frame_stride, val_size, multiple_of

    def __len__(self) -> int:
        return len(self.sequences) * (self.repeat if self.train else 1)

    def __getitem__(self, index: int) -> torch.Tensor:
        path, n = self.sequences[index % len(self.sequences)]
        if path.is_dir():
            start = random.randint(0, n - self.frames) if self.train else 0
            clip = read_frames(path, start, self.frames, self.frame_stride)
        else:
            video = read_frames(path, 0, None, self.frame_stride)
            if video.shape[1] < self.frames:
                raise ValueError(f"video {path} has {video.shape[1]} frames, fewer than {self.frames}")
            start = random.randint(0, video.shape[1] - self.frames) if self.train else 0
            clip = video[:, start : start + self.frames]
        if self.train and self.patch_size:
            return _random_crop_flip(clip, self.patch_size)
        return crop_to_multiple(center_crop(clip, self.val_size), self.multiple_of)


class VAEDataModule(ImageFolderDataModule):
    """``train_dir`` / ``val_dir`` folders of images (``frames: 0``) or of frame folders and
    video files (``frames: T``, for video teachers).

    Args:
        patch_size: side of the random training crops.
        val_size: side of the centre crop validated on (``null``: whole images, one at a time).
        multiple_of: validation crops are cut to multiples of this (the teacher's down-sampling).
        frames: 0 for images, else the clip length ``T``.
        frame_stride: keep every k-th frame of a sequence.
        repeat: passes over the training folder per epoch.
    """

    def __init__(
        self,
        train_dir: str,
        val_dir: str | None = None,
        patch_size: int = 256,
        batch_size: int = 16,
        num_workers: int = 4,
        repeat: int = 1,
        val_size: int | None = 512,
        multiple_of: int = 8,
        frames: int = 0,
        frame_stride: int = 1,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.batch_size, self.num_workers = batch_size, num_workers

    def _dataset(self, root: str, train: bool) -> Dataset:
        hp = self.hparams
        if not Path(root).is_dir():
            raise FileNotFoundError(f"{'training' if train else 'validation'} folder {root} does not exist")
        if hp.frames:
            return VAEClipDataset(root, hp.frames, hp.patch_size, train, hp.repeat, hp.frame_stride, hp.val_size, hp.multiple_of)
        return VAEImageDataset(root, hp.patch_size, train, hp.repeat, hp.val_size, hp.multiple_of)

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        self.train_set = self._dataset(hp.train_dir, True)
        self.val_set = self._dataset(hp.val_dir, False) if hp.val_dir else None
