"""Super-resolution data: HR folders for training, paired HR/LR folders for evaluation.

Training (:class:`SRTrainDataset`) follows the DIV2K-style pipeline: a random HR crop of
``patch_size * scale`` pixels, a random flip / rot90 (the 8 dihedral transforms), and the LR
patch made on the fly by bicubic downsampling of the HR crop with PIL
(``Image.resize(..., Image.BICUBIC)``). PIL's bicubic is the Keys kernel with a = -0.5 and, when
downsampling, widens its support by the scale factor (antialiasing), as MATLAB's ``imresize``
does; it is what DIV2K-style PyTorch pipelines use when they have no pre-made LR folder.

Evaluation (:class:`SRPairedDataset`) reads the standard benchmark layout
``root/HR/x{scale}/NAME.png`` + ``root/LR/x{scale}/NAME.png`` (Set5, Set14, B100, Urban100,
Manga109 as EDSR / BasicSR ship them). An HR image larger than ``LR * scale`` is cropped to it
(mod-crop, top-left); a smaller one is an error.

Images are read with PIL: grey images become RGB by repeating the channel, RGBA / LA drop alpha,
palette images are expanded, 16-bit images are scaled to 8 bits.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..base import ImageFolderDataModule
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

__all__ = [
    "IMAGE_EXTENSIONS",
    "list_images",
    "load_rgb",
    "read_image",
    "SRTrainDataset",
    "SRPairedDataset",
    "SRDataModule",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")


def list_images(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Image files (png / jpg / bmp, any case) under ``folder``, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Open an image as 8-bit RGB (grey repeated to 3 channels, alpha dropped)."""
    try:
        img = Image.open(path)
        img.load()
    except (OSError, SyntaxError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from None
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grey: PIL's convert("L") clips instead of scaling; scale 0-65535 to 0-255.
        arr = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(np.clip(np.round(arr / 257.0), 0, 255).astype(np.uint8), mode="L")
    if img.mode != "RGB":
        img = img.convert("RGB")  # L / P / LA / RGBA / CMYK / YCbCr -> RGB
    return img


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as a uint8 ``(H, W, 3)`` RGB array."""
    return np.array(load_rgb(path))


def _to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL RGB -> float (3, H, W) in [0, 1]."""
    return TF.to_dtype(TF.pil_to_tensor(img), torch.float32, scale=True)


class SRTrainDataset(Dataset):
    """Random LR/HR patch pairs from a folder of HR images (searched recursively).

    ``patch_size`` is the LR patch size; the HR patch is ``patch_size * scale``. Each item is
    ``{"lr": (3, P, P), "hr": (3, P*s, P*s)}`` float in [0, 1]. ``repeat`` repeats the folder
    within one epoch (so a small folder makes a useful epoch); ``cache`` keeps decoded images in
    memory (per worker).
    """

    def __init__(
        self,
        hr_dir: str | os.PathLike,
        scale: int,
        patch_size: int = 64,
        repeat: int = 1,
        augment: bool = True,
        cache: bool = False,
    ):
        if scale < 1:
            raise ValueError(f"scale must be >= 1, got {scale}")
        if patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {patch_size}")
        if repeat < 1:
            raise ValueError(f"repeat must be >= 1, got {repeat}")
        self.files = list_images(hr_dir)
        if not self.files:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {hr_dir}")
        self.hr_dir = Path(hr_dir)
        self.scale = scale
        self.patch_size = patch_size
        self.repeat = repeat
        self.cache = cache
        self._cache: dict[int, Image.Image] = {}
        hr_patch = patch_size * scale
        ops: list = [v2.RandomCrop(hr_patch)]
        if augment:
            ops += [
                v2.RandomHorizontalFlip(),
                v2.RandomVerticalFlip(),
                # A square patch: rotating by exactly 90 degrees is a lossless transpose in PIL.
                v2.RandomApply([v2.RandomRotation((90, 90))], p=0.5),
            ]
        self.transform = v2.Compose(ops)

    def __len__(self) -> int:
        return len(self.files) * self.repeat

    def _hr(self, i: int) -> Image.Image:
        if i in self._cache:
            return self._cache[i]
        img = load_rgb(self.files[i])
        if self.cache:
            self._cache[i] = img
        return img

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        i = index % len(self.files)
        hr = self._hr(i)
        need = self.patch_size * self.scale
        if hr.width < need or hr.height < need:
            raise ValueError(
                f"HR image {self.files[i]} is {hr.width}x{hr.height}, smaller than the HR patch "
                f"{need}x{need} (patch_size {self.patch_size} x scale {self.scale})"
            )
        hr_patch = self.transform(hr)
        lr_patch = hr_patch.resize((self.patch_size, self.patch_size), Image.BICUBIC)
        return {"lr": _to_tensor(lr_patch), "hr": _to_tensor(hr_patch)}


class SRPairedDataset(Dataset):
    """Paired benchmark images: ``root/HR/x{scale}/NAME`` and ``root/LR/x{scale}/NAME``.

    Each item is ``{"lr": (3, h, w), "hr": (3, h*s, w*s), "name": NAME}`` float in [0, 1]; the
    HR image is mod-cropped to ``LR * scale`` (a smaller HR image is a ``ValueError``).
    """

    def __init__(self, root: str | os.PathLike, scale: int):
        root = Path(root)
        self.root = root
        self.scale = int(scale)
        self.hr_dir = root / "HR" / f"x{self.scale}"
        self.lr_dir = root / "LR" / f"x{self.scale}"
        for d, what in ((root, "data folder"), (self.hr_dir, "HR folder"), (self.lr_dir, "LR folder")):
            if not d.is_dir():
                raise FileNotFoundError(
                    f"{what} {d} does not exist (expected {root}/HR/x{self.scale}/*.png and {root}/LR/x{self.scale}/*.png)"
                )
        hr_files = list_images(self.hr_dir, recursive=False)
        if not hr_files:
            raise FileNotFoundError(f"no images in {self.hr_dir}")
        lr_by_stem = {p.stem: p for p in list_images(self.lr_dir, recursive=False)}
        self.pairs: list[tuple[Path, Path]] = []
        for hr in hr_files:
            lr = self.lr_dir / hr.name
            if not lr.is_file():
                lr = lr_by_stem.get(hr.stem)
            if lr is None:
                raise FileNotFoundError(f"HR image {hr} has no LR partner {self.lr_dir / hr.name}")
            self.pairs.append((hr, lr))

    def __len__(self) -> int:
        return len(self.pairs)

    def read_pair(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        """``(lr, hr, name)`` as uint8 ``(H, W, 3)`` arrays, HR mod-cropped to ``LR * scale``."""
        hr_path, lr_path = self.pairs[index]
        lr = read_image(lr_path)
        hr = read_image(hr_path)
        h, w = lr.shape[0] * self.scale, lr.shape[1] * self.scale
        if hr.shape[0] < h or hr.shape[1] < w:
            raise ValueError(
                f"HR image {hr_path} is {hr.shape[1]}x{hr.shape[0]}, smaller than LR {lr.shape[1]}x{lr.shape[0]} "
                f"x {self.scale} = {w}x{h}; is it the x{self.scale} LR image?"
            )
        return lr, hr[:h, :w], hr_path.stem

    def __getitem__(self, index: int) -> dict:
        lr, hr, name = self.read_pair(index)
        return {
            "lr": TF.to_dtype(TF.to_image(lr), torch.float32, scale=True).as_subclass(torch.Tensor),
            "hr": TF.to_dtype(TF.to_image(hr), torch.float32, scale=True).as_subclass(torch.Tensor),
            "name": name,
        }


class SRDataModule(ImageFolderDataModule):
    """Training patches from ``train_dir`` (HR images) and, optionally, validation on a paired
    benchmark folder ``val_dir`` (``HR/x{scale}`` + ``LR/x{scale}``, e.g. Set5).

    Args:
        train_dir: folder of HR training images (searched recursively), e.g. DIV2K_train_HR.
        val_dir: paired benchmark root, or None for no validation.
        scale: upscale factor; must match the model's.
        patch_size: LR patch size (HR patch = patch_size * scale).
        batch_size: patches per step (per device under DDP).
        num_workers: DataLoader worker processes.
        repeat: passes over the folder per epoch.
        cache: keep decoded training images in memory (per worker).
    """

    def __init__(
        self,
        train_dir: str,
        val_dir: str | None = None,
        scale: int = 4,
        patch_size: int = 64,
        batch_size: int = 16,
        num_workers: int = 4,
        repeat: int = 1,
        cache: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters()
        # Fail early, with the path, before any model is built or process launched.
        if not Path(train_dir).is_dir():
            raise FileNotFoundError(f"training folder {train_dir} does not exist")
        if val_dir is not None and not Path(val_dir).is_dir():
            raise FileNotFoundError(f"validation folder {val_dir} does not exist")
        self.train_dir = train_dir
        self.val_dir = val_dir
        self.scale = scale
        self.patch_size = patch_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.repeat = repeat
        self.cache = cache
        self.train_set: SRTrainDataset | None = None
        self.val_set: SRPairedDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = SRTrainDataset(self.train_dir, self.scale, self.patch_size, repeat=self.repeat, cache=self.cache)
        if stage in (None, "fit", "validate") and self.val_dir is not None and self.val_set is None:
            self.val_set = SRPairedDataset(self.val_dir, self.scale)

