"""Image folders for codec training: random crops with flips for training, whole images for
validation (cropped to a multiple of the codec's stride so the rate is measured on what is coded)."""

from __future__ import annotations

import os
import random

import torch
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as TF
from torch.utils.data import Dataset

from ..base import ImageFolderDataModule, TaskConfigError
from ..sr.data import list_images, load_rgb

__all__ = ["CodecImageDataset", "ImageCodecDataModule"]


class CodecImageDataset(Dataset):
    """RGB images in [0, 1]: random ``patch_size`` crops (smaller images are padded by
    reflection) with flips when ``train``, else the whole image."""

    def __init__(self, root: str | os.PathLike, patch_size: int | None = 256, train: bool = True, repeat: int = 1):
        self.files = list_images(root)
        if not self.files:
            raise TaskConfigError(f"no images found under {root}")
        self.patch_size, self.train, self.repeat = patch_size, train, max(1, repeat)

    def __len__(self) -> int:
        return len(self.files) * (self.repeat if self.train else 1)

    def __getitem__(self, index: int) -> torch.Tensor:
        img = TF.to_dtype(TF.to_image(load_rgb(self.files[index % len(self.files)])), torch.float32, scale=True)
        img = img.as_subclass(torch.Tensor)
        if self.train and self.patch_size:
            p = self.patch_size
            h, w = img.shape[-2:]
            if h < p or w < p:
                img = TF.pad(img, [0, 0, max(0, p - w), max(0, p - h)], padding_mode="reflect")
            img = T.RandomCrop(p)(img)
            if random.random() < 0.5:
                img = img.flip(-1)
            if random.random() < 0.5:
                img = img.flip(-2)
        return img


class ImageCodecDataModule(ImageFolderDataModule):
    """``train_dir`` / ``val_dir`` folders of images (any layout below them)."""

    def __init__(
        self,
        train_dir: str,
        val_dir: str | None = None,
        patch_size: int = 256,
        batch_size: int = 8,
        num_workers: int = 0,
        repeat: int = 1,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.batch_size, self.num_workers = batch_size, num_workers

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        self.train_set = CodecImageDataset(hp.train_dir, hp.patch_size, train=True, repeat=hp.repeat)
        self.val_set = CodecImageDataset(hp.val_dir, None, train=False) if hp.val_dir else None
