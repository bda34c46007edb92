"""Image classification data: ImageFolder trees and CIFAR-10/100, with timm's preprocessing.

Layouts (``dataset: folder``):

- ``data_dir/train/<class>/*.jpg`` and ``data_dir/val/<class>/*.jpg`` (ImageNet's layout; the
  sub-folder names are ``train_split`` / ``val_split``), or
- ``data_dir/<class>/*.jpg``: one folder, split per class into training and validation images
  (``val_fraction``, a fixed seed, so every rank and every run draws the same split).

Classes are the sorted sub-folder names (torchvision's ``ImageFolder``); the training and
validation folders must hold the same classes. ``dataset: cifar10`` / ``cifar100`` reads
torchvision's CIFAR files under ``data_dir`` (``download: true`` fetches them, nothing is
downloaded otherwise).

Preprocessing is timm's (huggingface/pytorch-image-models, Apache-2.0), so that training and
evaluation match the models' published numbers:

- evaluation: :func:`resolve_eval_data_cfg` is ``timm.data.resolve_data_config`` on the model (it
  reads ``model.pretrained_cfg``, which the zoo fills with each weight file's mean / std /
  crop_pct / interpolation), optionally overridden (``image_size`` ...); :func:`build_eval_transform`
  turns it into ``Resize(size / crop_pct) + CenterCrop(size) + ToTensor + Normalize``
  (``timm.data.create_transform``).
- training: ``timm.data.create_transform(is_training=True)``: random-resized crop, flips, colour
  jitter, RandAugment / AutoAugment (``auto_augment: rand-m9-mstd0.5-inc1``), random erasing;
  mixup / cutmix with label smoothing act on whole batches (:func:`build_mixup`, timm's ``Mixup``,
  applied by the LightningModule).
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import DataLoader, Dataset

from ..base import ImageFolderDataModule, TaskConfigError
from ..sr.data import load_rgb

__all__ = [
    "DATASETS",
    "IMAGE_EXTENSIONS",
    "resolve_eval_data_cfg",
    "build_eval_transform",
    "build_train_transform",
    "build_mixup",
    "open_image_folder",
    "open_cifar",
    "eval_folder",
    "split_per_class",
    "TransformedSubset",
    "ClassificationDataModule",
]

DATASETS = ("folder", "cifar10", "cifar100")
# torchvision's ImageFolder extensions, any case.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


# ------------------------------------------------------------------------------- transforms


def resolve_eval_data_cfg(
    model: torch.nn.Module | None,
    image_size: int | None = None,
    crop_pct: float | None = None,
    interpolation: str | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> dict[str, Any]:
    """The model's evaluation preprocessing, as ``timm.data.resolve_data_config(model=model)``
    gives it (``input_size``, ``interpolation``, ``mean``, ``std``, ``crop_pct``, ``crop_mode``),
    with the given values taking precedence. ``model=None`` gives timm's ImageNet defaults."""
    import timm.data

    in_chans = int(getattr(model, "in_chans", 3) or 3)
    args: dict[str, Any] = {"in_chans": in_chans}
    if image_size is not None:
        if int(image_size) < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}")
        args["input_size"] = (in_chans, int(image_size), int(image_size))
    if crop_pct is not None:
        if not 0 < float(crop_pct) <= 1:
            raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
        args["crop_pct"] = float(crop_pct)
    if interpolation is not None:
        args["interpolation"] = interpolation
    if mean is not None:
        args["mean"] = tuple(float(v) for v in mean)
    if std is not None:
        args["std"] = tuple(float(v) for v in std)
    if model is None:
        return dict(timm.data.resolve_data_config(args))
    return dict(timm.data.resolve_data_config(args, model=model))


def build_eval_transform(data_cfg: dict[str, Any]) -> Callable:
    """``timm.data.create_transform(**data_cfg)``: resize to ``size / crop_pct``, centre crop,
    to tensor, normalise."""
    import timm.data

    keys = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
    return timm.data.create_transform(**{k: data_cfg[k] for k in keys if k in data_cfg}, is_training=False)


def build_train_transform(
    data_cfg: dict[str, Any],
    scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
    hflip: float = 0.5,
    vflip: float = 0.0,
    color_jitter: float = 0.0,
    auto_augment: str | None = None,
    interpolation: str | None = None,
    re_prob: float = 0.0,
    re_mode: str = "pixel",
    re_count: int = 1,
) -> Callable:
    """timm's training transform at the size, mean and std of ``data_cfg``: random-resized crop
    (``scale``, ``ratio``; ``interpolation`` defaults to the model's, ``random`` picks bilinear or
    bicubic per image), flips, colour jitter (0 = off), ``auto_augment`` (``rand-m9-mstd0.5-inc1``
    is RandAugment, ``original`` / ``v0`` AutoAugment), random erasing (``re_prob``)."""
    import timm.data

    return timm.data.create_transform(
        data_cfg["input_size"],
        is_training=True,
        scale=tuple(scale),
        ratio=tuple(ratio),
        hflip=hflip,
        vflip=vflip,
        color_jitter=color_jitter if color_jitter else None,
        auto_augment=auto_augment,
        interpolation=interpolation or data_cfg.get("interpolation", "bilinear"),
        mean=tuple(data_cfg["mean"]),
        std=tuple(data_cfg["std"]),
        re_prob=re_prob,
        re_mode=re_mode,
        re_count=re_count,
    )


def build_mixup(
    num_classes: int,
    mixup_alpha: float = 0.0,
    cutmix_alpha: float = 0.0,
    prob: float = 1.0,
    switch_prob: float = 0.5,
    mode: str = "batch",
    label_smoothing: float = 0.0,
):
    """timm's ``Mixup`` (mixup and / or cutmix on a batch, soft targets with label smoothing), or
    None when neither is on (alphas 0 or ``prob`` 0)."""
    if (mixup_alpha <= 0 and cutmix_alpha <= 0) or prob <= 0:
        return None
    from timm.data import Mixup

    return Mixup(
        mixup_alpha=mixup_alpha,
        cutmix_alpha=cutmix_alpha,
        prob=prob,
        switch_prob=switch_prob,
        mode=mode,
        label_smoothing=label_smoothing,
        num_classes=num_classes,
    )


# -------------------------------------------------------------------------------- datasets


def _is_image(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS)


def open_image_folder(root: str | os.PathLike, transform: Callable | None = None):
    """torchvision ``ImageFolder`` over ``root/<class>/<image>`` with the zoo's image reader
    (grey / palette / 16-bit / alpha images become 8-bit RGB); clear errors for a missing folder,
    a folder without class sub-folders and an empty class."""
    from torchvision.datasets import ImageFolder

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    if not any(p.is_dir() for p in root.iterdir()):
        raise FileNotFoundError(f"{root} has no class sub-folders (expected {root}/<class>/<image>)")
    try:
        return ImageFolder(str(root), transform=transform, loader=load_rgb, is_valid_file=_is_image)
    except FileNotFoundError as e:  # torchvision: "Found no valid file for the classes ..."
        raise FileNotFoundError(f"{root}: {e}") from None


def open_cifar(
    name: str, root: str | os.PathLike, train: bool, transform: Callable | None = None, download: bool = False
):
    """torchvision's CIFAR-10 / CIFAR-100 under ``root``. Without ``download`` a missing copy is a
    ``FileNotFoundError`` that says how to get it; with it, a failed download (no network) too."""
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = {"cifar10": CIFAR10, "cifar100": CIFAR100}[name]
    pretty = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}[name]
    if download:
        try:
            return cls(str(root), train=train, transform=transform, download=True)
        except (OSError, RuntimeError) as e:  # URLError is an OSError
            raise FileNotFoundError(
                f"{pretty} is not under {root} and downloading it failed ({type(e).__name__}: {e}); without network, "
                f"put the extracted {cls.base_folder}/ from {cls.url} there"
            ) from None
    try:
        return cls(str(root), train=train, transform=transform, download=False)
    except RuntimeError as e:  # "Dataset not found or corrupted"
        raise FileNotFoundError(
            f"{pretty} not found under {root} ({e}); pass download=true (--data.download=true) to fetch it, "
            f"or put the extracted {cls.base_folder}/ from {cls.url} there"
        ) from None


def eval_folder(root: str | os.PathLike, val_split: str = "val", train_split: str = "train") -> Path:
    """The folder of class folders to evaluate: ``root/val`` when ``root`` has both ``train/`` and
    ``val/`` (ImageNet's layout), else ``root`` itself."""
    root = Path(root)
    if (root / val_split).is_dir() and (root / train_split).is_dir():
        return root / val_split
    return root


def split_per_class(targets: Sequence[int], val_fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Indices ``(train, val)``: per class, a seeded random ``val_fraction`` of its images (at least
    one when the fraction is > 0, and never all of them) go to validation."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, t in enumerate(targets):
        by_class[int(t)].append(i)
    g = torch.Generator().manual_seed(int(seed))
    train, val = [], []
    for c in sorted(by_class):
        idx = by_class[c]
        order = [idx[j] for j in torch.randperm(len(idx), generator=g).tolist()]
        n_val = round(len(idx) * val_fraction)
        if val_fraction > 0:
            n_val = max(n_val, 1)
        n_val = min(n_val, len(idx) - 1)
        val += order[:n_val]
        train += order[n_val:]
    return sorted(train), sorted(val)


class TransformedSubset(Dataset):
    """``(transform(image), target)`` for the given indices of a dataset that returns untransformed
    ``(image, target)`` pairs: one folder scan, two transforms (training / validation)."""

    def __init__(self, base: Dataset, indices: Sequence[int] | None, transform: Callable | None):
        self.base = base
        self.indices = list(range(len(base))) if indices is None else list(indices)  # type: ignore[arg-type]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        img, target = self.base[self.indices[i]]
        return (self.transform(img) if self.transform is not None else img), target


# ------------------------------------------------------------------------------ datamodule


class ClassificationDataModule(ImageFolderDataModule):
    """Training and validation batches for ``zoo train classification``.

    The preprocessing follows the model being trained (``trainer.lightning_module.net``, or
    :meth:`set_model` outside a Trainer): validation uses exactly the model's evaluation transform
    (:func:`resolve_eval_data_cfg`, what ``zoo eval classification`` uses too), training timm's
    augmentation pipeline at the same size, mean and std.

    Args:
        data_dir: ``folder``: a folder with ``train/`` and ``val/`` class folders, or a single
            folder of class folders (split by ``val_fraction``). CIFAR: where its files are (or go).
        dataset: ``folder``, ``cifar10`` or ``cifar100``.
        train_split: name of the training sub-folder.
        val_split: name of the validation sub-folder (absent = no validation).
        val_fraction: single-folder layout: fraction of each class held out for validation
            (0 = no validation).
        split_seed: seed of that split.
        download: CIFAR only: download the files into ``data_dir`` if they are not there.
        image_size: training and evaluation size; None = the model's (its ``input_size``).
        crop_pct: evaluation centre-crop fraction; None = the model's.
        interpolation: evaluation resize interpolation; None = the model's.
        mean: normalisation mean; None = the model's.
        std: normalisation std; None = the model's.
        train_interpolation: random-resized-crop interpolation (``random``, ``bilinear``,
            ``bicubic``); None = the model's.
        scale: random-resized-crop area range.
        ratio: random-resized-crop aspect-ratio range.
        hflip: horizontal flip probability.
        vflip: vertical flip probability.
        color_jitter: colour jitter strength (0 = off; timm skips it when ``auto_augment`` is set).
        auto_augment: timm AutoAugment / RandAugment string, e.g. ``rand-m9-mstd0.5-inc1``.
        re_prob: random erasing probability.
        re_mode: random erasing fill (``pixel``: per-pixel normal noise, ``const``, ``rand``).
        re_count: random erasing boxes per image.
        batch_size: training batch per device (under DDP the global batch is devices x this).
        val_batch_size: validation batch; None = ``batch_size``.
        num_workers: DataLoader worker processes.
    """

    def __init__(
        self,
        data_dir: str,
        dataset: Literal["folder", "cifar10", "cifar100"] = "folder",
        train_split: str = "train",
        val_split: str = "val",
        val_fraction: float = 0.1,
        split_seed: int = 0,
        download: bool = False,
        image_size: int | None = None,
        crop_pct: float | None = None,
        interpolation: str | None = None,
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
        train_interpolation: str | None = None,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (0.75, 1.3333333333333333),
        hflip: float = 0.5,
        vflip: float = 0.0,
        color_jitter: float = 0.0,
        auto_augment: str | None = None,
        re_prob: float = 0.0,
        re_mode: str = "pixel",
        re_count: int = 1,
        batch_size: int = 64,
        val_batch_size: int | None = None,
        num_workers: int = 4,
    ):
        super().__init__()
        self.save_hyperparameters()
        if dataset not in DATASETS:
            raise TaskConfigError(f"dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
        if not 0 <= val_fraction < 1:
            raise TaskConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if batch_size < 1 or (val_batch_size is not None and val_batch_size < 1):
            raise TaskConfigError(f"batch sizes must be >= 1, got {batch_size} / {val_batch_size}")
        # Fail early, with the path, before any model is built or process launched.
        if dataset == "folder" and not Path(data_dir).is_dir():
            raise FileNotFoundError(f"data folder {data_dir} does not exist")
        self.data_dir = data_dir
        self.dataset = dataset
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.classes: list[str] = []
        self.eval_data_cfg: dict[str, Any] | None = None
        self._model: torch.nn.Module | None = None

    # -- the model whose preprocessing is used

    def set_model(self, model: torch.nn.Module) -> None:
        """Use ``model``'s data config (outside a Trainer; inside one the trained module's ``net``)."""
        self._model = model

    def _net(self) -> torch.nn.Module | None:
        if self._model is not None:
            return self._model
        trainer = getattr(self, "trainer", None)
        module = getattr(trainer, "lightning_module", None) if trainer is not None else None
        return getattr(module, "net", None)

    def transforms(self) -> tuple[Callable, Callable]:
        """``(train, eval)`` transforms for the current model; sets ``eval_data_cfg``."""
        hp = self.hparams
        self.eval_data_cfg = resolve_eval_data_cfg(
            self._net(), hp.image_size, hp.crop_pct, hp.interpolation, hp.mean, hp.std
        )
        train = build_train_transform(
            self.eval_data_cfg,
            scale=hp.scale,
            ratio=hp.ratio,
            hflip=hp.hflip,
            vflip=hp.vflip,
            color_jitter=hp.color_jitter,
            auto_augment=hp.auto_augment,
            interpolation=hp.train_interpolation,
            re_prob=hp.re_prob,
            re_mode=hp.re_mode,
            re_count=hp.re_count,
        )
        return train, build_eval_transform(self.eval_data_cfg)

    @property
    def num_classes(self) -> int | None:
        """Number of classes once ``setup`` has run, else None."""
        return len(self.classes) or None

    # -- Lightning hooks

    def prepare_data(self) -> None:
        # Lightning runs this on one process per node: the only place that downloads.
        if self.dataset != "folder" and self.hparams.download:
            for train in (True, False):
                open_cifar(self.dataset, self.data_dir, train, download=True)

    def setup(self, stage: str | None = None) -> None:
        train_tf, eval_tf = self.transforms()
        want_train = stage in (None, "fit")
        if self.dataset != "folder":
            if want_train:
                base = open_cifar(self.dataset, self.data_dir, True)
                self.train_set = TransformedSubset(base, None, train_tf)
                self.classes = list(base.classes)
            base = open_cifar(self.dataset, self.data_dir, False)
            self.val_set = TransformedSubset(base, None, eval_tf)
            self.classes = list(base.classes)
            return
        hp = self.hparams
        root = Path(self.data_dir)
        train_dir, val_dir = root / hp.train_split, root / hp.val_split
        if train_dir.is_dir():  # train/ + val/
            train_base = open_image_folder(train_dir)
            self.classes = list(train_base.classes)
            if want_train:
                self.train_set = TransformedSubset(train_base, None, train_tf)
            if val_dir.is_dir():
                val_base = open_image_folder(val_dir)
                if list(val_base.classes) != self.classes:
                    only_train = sorted(set(self.classes) - set(val_base.classes))
                    only_val = sorted(set(val_base.classes) - set(self.classes))
                    raise TaskConfigError(
                        f"{train_dir} and {val_dir} hold different classes (only in {hp.train_split}: "
                        f"{', '.join(only_train) or 'none'}; only in {hp.val_split}: {', '.join(only_val) or 'none'})"
                    )
                self.val_set = TransformedSubset(val_base, None, eval_tf)
            return
        base = open_image_folder(root)  # a single folder of class folders
        self.classes = list(base.classes)
        train_idx, val_idx = split_per_class(base.targets, hp.val_fraction, hp.split_seed)
        if want_train:
            self.train_set = TransformedSubset(base, train_idx, train_tf)
        self.val_set = TransformedSubset(base, val_idx, eval_tf) if val_idx else None

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            raise RuntimeError("setup('fit') has not run")
        if len(self.train_set) < self.batch_size:  # type: ignore[arg-type]
            raise TaskConfigError(
                f"{len(self.train_set)} training images are fewer than one batch of {self.batch_size} "  # type: ignore[arg-type]
                "(the last partial batch is dropped): lower data.batch_size"
            )
        return self._loader(self.train_set, True, self.batch_size, drop_last=True)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        return self._loader(self.val_set, False, self.val_batch_size, drop_last=False)
