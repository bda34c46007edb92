"""ISP data: simulated RAW/RGB pairs from any sRGB folder, Zurich RAW-to-RGB folders, unpaired sets.

Every RAW item is packed RGGB ``(4, h, w)`` float32 in [0, 1], ``(R, G_r, G_b, B)`` = pixels
``(0, 0), (0, 1), (1, 0), (1, 1)`` of each 2x2 Bayer cell, and its sRGB target is ``(3, 2h, 2w)``.

- :class:`SimulatedISPDataset`: random crops of an sRGB folder (flips / rot90 applied to the RGB
  crop, so the Bayer layout stays exact), turned into RAW by the unprocessing simulator
  (:mod:`.unprocess`), with shot / read noise. With ``seed`` every item is deterministic (the
  same crop, metadata and noise every epoch: validation); without, draws come from torch's
  global generator (Lightning seeds each worker).
- :class:`ZurichDataset`: the Zurich RAW-to-RGB layout (Ignatov et al., PyNET, CVPRW 2020):
  ``{split}/huawei_raw/N.png`` (the Huawei P20's Bayer mosaic, R at (0, 0), 10-bit values in a
  16-bit PNG) and ``{split}/canon/N.jpg`` (the aligned Canon 5D Mark IV photo, same size as the
  mosaic). RAW values are normalised as PyNET's ``extract_bayer_channels`` does,
  ``raw / (4 * 255)`` (``black_level=0``, ``white_level=1020``), then clipped to [0, 1]. PyNET
  stacks the channels as ``(B, G, R, G)``; here they are RGGB like every other RAW in the zoo
  (see :func:`zoo.models.isp.filter_pynet_bayer_order` for weights trained on PyNET's order).
- :class:`UnpairedDataset`: RAW from one dataset and sRGB targets from an unrelated folder,
  drawn independently; each item also carries ``raw_rgb``, a classical rendering of the same RAW
  (:func:`.unprocess.naive_render`), the content reference of the unpaired recipe.
- :class:`ISPDataModule`: ``mode`` simulated | zurich, ``pairing`` paired | unpaired.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..base import ImageFolderDataModule
from torchvision.transforms.v2 import functional as TF

from ..sr.data import IMAGE_EXTENSIONS, list_images, load_rgb
from .unprocess import naive_render, pack_bayer, simulate_raw

__all__ = [
    "SimulatedISPDataset",
    "ZurichDataset",
    "UnpairedDataset",
    "ISPDataModule",
    "read_bayer_png",
    "resolve_zurich_split",
    "ZURICH_WHITE_LEVEL",
]

# PyNET's normalisation of the Zurich RAW PNGs: raw / (4 * 255).
ZURICH_WHITE_LEVEL = 4 * 255


def _rgb_tensor(img: Image.Image) -> torch.Tensor:
    return TF.to_dtype(TF.pil_to_tensor(img), torch.float32, scale=True)


def _generator(seed: int | None, index: int) -> torch.Generator | None:
    if seed is None:
        return None
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(index))


def _randint(high: int, g: torch.Generator | None) -> int:
    return int(torch.randint(0, max(high, 1), (), generator=g))


def _random_crop(img: torch.Tensor, size: int, g: torch.Generator | None, step: int = 1) -> tuple[torch.Tensor, int, int]:
    """A ``size`` x ``size`` crop at a random offset that is a multiple of ``step``."""
    h, w = img.shape[-2:]
    y = _randint((h - size) // step + 1, g) * step
    x = _randint((w - size) // step + 1, g) * step
    return img[..., y : y + size, x : x + size], y, x


def _dihedral(img: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    """One of the 8 flips / rotations by 90 degrees (of an RGB image, never of a mosaic)."""
    k = _randint(8, g)
    if k & 1:
        img = img.flip(-1)
    if k & 2:
        img = img.flip(-2)
    if k & 4:
        img = img.transpose(-2, -1)
    return img.contiguous()


class SimulatedISPDataset(Dataset):
    """RAW/RGB pairs simulated from an sRGB folder (searched recursively).

    Each item is ``{"raw": (4, P/2, P/2), "rgb": (3, P, P), "name": str}``: a random
    ``patch_size`` crop (``None``: the whole image, cropped to even sides), optionally augmented,
    unprocessed into RAW with random camera metadata and (``noise``) shot / read noise.

    Args:
        rgb_dir: folder of sRGB images (png / jpg / bmp).
        patch_size: side of the RGB crop (even); None for whole images.
        repeat: passes over the folder per epoch.
        augment: random flips / rot90 of the RGB crop.
        noise: add the simulator's shot / read noise.
        seed: make every item deterministic (validation); None draws from torch's global RNG.
        cache: keep decoded images in memory (per worker).
        max_size: with ``patch_size=None``, centre-crop images to at most this side (even).
    """

    def __init__(
        self,
        rgb_dir: str | os.PathLike,
        patch_size: int | None = 128,
        repeat: int = 1,
        augment: bool = True,
        noise: bool = True,
        seed: int | None = None,
        cache: bool = False,
        max_size: int | None = None,
    ):
        if patch_size is not None and (patch_size < 2 or patch_size % 2):
            raise ValueError(f"patch_size must be an even number >= 2 (RGB pixels), got {patch_size}")
        if repeat < 1:
            raise ValueError(f"repeat must be >= 1, got {repeat}")
        self.files = list_images(rgb_dir)
        if not self.files:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {rgb_dir}")
        self.patch_size = patch_size
        self.repeat = repeat
        self.augment = augment
        self.noise = noise
        self.seed = seed
        self.cache = cache
        self.max_size = max_size
        self._cache: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.files) * self.repeat

    def _image(self, i: int) -> torch.Tensor:
        if i in self._cache:
            return self._cache[i]
        img = _rgb_tensor(load_rgb(self.files[i]))
        if self.cache:
            self._cache[i] = img
        return img

    def __getitem__(self, index: int) -> dict:
        i = index % len(self.files)
        g = _generator(self.seed, index)
        img = self._image(i)
        h, w = img.shape[-2:]
        if self.patch_size is not None:
            if h < self.patch_size or w < self.patch_size:
                raise ValueError(f"image {self.files[i]} is {w}x{h}, smaller than the patch {self.patch_size}x{self.patch_size}")
            img, _, _ = _random_crop(img, self.patch_size, g)
        else:
            th, tw = h - h % 2, w - w % 2
            if self.max_size:
                side = self.max_size - self.max_size % 2
                th, tw = min(th, side), min(tw, side)
            if th < 2 or tw < 2:
                raise ValueError(f"image {self.files[i]} is too small ({w}x{h})")
            y, x = (h - th) // 2, (w - tw) // 2
            y, x = y - y % 2, x - x % 2
            img = img[:, y : y + th, x : x + tw]
        if self.augment:
            img = _dihedral(img, g)
        raw, _ = simulate_raw(img, generator=g, noise=self.noise)
        return {"raw": raw.float(), "rgb": img.contiguous(), "name": self.files[i].stem}


def read_bayer_png(path: str | os.PathLike) -> np.ndarray:
    """A single-channel Bayer PNG (8 or 16 bit) as an integer ``(H, W)`` array."""
    try:
        img = Image.open(path)
        img.load()
    except (OSError, SyntaxError) as e:
        raise ValueError(f"cannot read RAW image {path}: {e}") from None
    arr = np.array(img)
    if arr.ndim != 2:
        raise ValueError(f"RAW image {path} must be a single-channel Bayer mosaic, got shape {arr.shape} (mode {img.mode})")
    return arr


def resolve_zurich_split(root: str | os.PathLike, split: str) -> Path:
    """``root/split`` when it holds ``huawei_raw/``, else ``root`` itself when it does."""
    root = Path(root)
    for d in (root / split, root):
        if (d / "huawei_raw").is_dir():
            return d
    raise FileNotFoundError(
        f"no Zurich RAW-to-RGB folder under {root} (expected {root}/{split}/huawei_raw/*.png and {root}/{split}/canon/*.jpg)"
    )


class ZurichDataset(Dataset):
    """Zurich RAW-to-RGB pairs: ``{split}/huawei_raw/NAME.png`` -> ``{split}/canon/NAME.jpg``.

    Items are ``{"raw": (4, h, w), "rgb": (3, 2h, 2w), "name": NAME}``; ``patch_size`` (RGB
    pixels, even) takes a random aligned crop (RAW offsets on the 2x2 grid, so the Bayer layout
    is kept; no flips, which would change it).

    Args:
        root: dataset root (holding ``train/`` and ``test/``) or one split folder.
        split: ``train`` or ``test`` (any sub-folder name).
        patch_size: RGB crop side; None for whole images.
        black_level: subtracted from the RAW values.
        white_level: the RAW value mapped to 1 (PyNET: 4 * 255).
        seed: deterministic crops; None draws from torch's global RNG.
        with_target: read the Canon images (False: RAW only, e.g. the RAW side of an unpaired set).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        patch_size: int | None = None,
        black_level: float = 0.0,
        white_level: float = ZURICH_WHITE_LEVEL,
        seed: int | None = None,
        with_target: bool = True,
    ):
        if patch_size is not None and (patch_size < 2 or patch_size % 2):
            raise ValueError(f"patch_size must be an even number >= 2 (RGB pixels), got {patch_size}")
        if white_level <= black_level:
            raise ValueError(f"white_level ({white_level}) must be above black_level ({black_level})")
        self.dir = resolve_zurich_split(root, split)
        self.raw_dir = self.dir / "huawei_raw"
        self.rgb_dir = self.dir / "canon"
        self.patch_size = patch_size
        self.black_level = float(black_level)
        self.white_level = float(white_level)
        self.seed = seed
        self.with_target = with_target
        raws = sorted(p for p in self.raw_dir.iterdir() if p.is_file() and p.suffix.lower() == ".png")
        if not raws:
            raise FileNotFoundError(f"no RAW PNGs in {self.raw_dir}")
        self.pairs: list[tuple[Path, Path | None]] = []
        if with_target:
            if not self.rgb_dir.is_dir():
                raise FileNotFoundError(f"target folder {self.rgb_dir} does not exist (expected canon/NAME.jpg beside huawei_raw/)")
            by_stem = {p.stem: p for p in list_images(self.rgb_dir, recursive=False)}
            for raw in raws:
                rgb = by_stem.get(raw.stem)
                if rgb is None:
                    raise FileNotFoundError(f"RAW image {raw} has no target {self.rgb_dir / (raw.stem + '.jpg')}")
                self.pairs.append((raw, rgb))
        else:
            self.pairs = [(raw, None) for raw in raws]
        # Zurich names are 0.png ... N.png: numeric order when every stem is a number.
        if all(p[0].stem.isdigit() for p in self.pairs):
            self.pairs.sort(key=lambda p: int(p[0].stem))

    def __len__(self) -> int:
        return len(self.pairs)

    def read_raw(self, path: Path) -> torch.Tensor:
        bayer = read_bayer_png(path).astype(np.float32)
        if bayer.shape[0] % 2 or bayer.shape[1] % 2:
            bayer = bayer[: bayer.shape[0] - bayer.shape[0] % 2, : bayer.shape[1] - bayer.shape[1] % 2]
        norm = (bayer - self.black_level) / (self.white_level - self.black_level)
        return pack_bayer(torch.from_numpy(norm)).clamp(0.0, 1.0)

    def __getitem__(self, index: int) -> dict:
        raw_path, rgb_path = self.pairs[index]
        raw = self.read_raw(raw_path)
        rgb = None
        if rgb_path is not None:
            rgb = _rgb_tensor(load_rgb(rgb_path))
            want = (2 * raw.shape[-2], 2 * raw.shape[-1])
            if tuple(rgb.shape[-2:]) != want:
                raise ValueError(
                    f"target {rgb_path} is {rgb.shape[-1]}x{rgb.shape[-2]} but RAW {raw_path} gives {want[1]}x{want[0]} "
                    "(the Canon image must be aligned with the RAW mosaic, pixel for pixel)"
                )
        if self.patch_size is not None:
            p = self.patch_size // 2
            if raw.shape[-2] < p or raw.shape[-1] < p:
                raise ValueError(f"RAW image {raw_path} is smaller than the patch {self.patch_size}x{self.patch_size}")
            raw, y, x = _random_crop(raw, p, _generator(self.seed, index))
            if rgb is not None:
                rgb = rgb[:, 2 * y : 2 * (y + p), 2 * x : 2 * (x + p)]
        item = {"raw": raw.contiguous(), "name": raw_path.stem}
        if rgb is not None:
            item["rgb"] = rgb.contiguous()
        return item


class UnpairedDataset(Dataset):
    """RAW from ``raw_dataset`` and sRGB targets from ``target_dir``, with no correspondence.

    Item ``i`` is ``{"raw": (4, h, w), "raw_rgb": (3, 2h, 2w), "target": (3, 2h, 2w)}``: the RAW
    of ``raw_dataset[i]``, its classical rendering (content reference) and a random crop of a
    target image drawn at random (independently of ``i``), randomly flipped / rotated.

    Args:
        raw_dataset: a dataset whose items have ``"raw"`` (all of one size, for batching).
        target_dir: folder of target sRGB images (searched recursively).
        seed: deterministic target draws; None draws from torch's global RNG.
        cache: keep decoded target images in memory (per worker).
    """

    def __init__(self, raw_dataset: Dataset, target_dir: str | os.PathLike, seed: int | None = None, cache: bool = False, augment: bool = True):
        self.raw_dataset = raw_dataset
        self.targets = list_images(target_dir)
        if not self.targets:
            raise FileNotFoundError(f"no target images ({', '.join(IMAGE_EXTENSIONS)}) found under {target_dir}")
        self.seed = seed
        self.cache = cache
        self.augment = augment
        self._cache: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.raw_dataset)  # type: ignore[arg-type]

    def _target(self, j: int) -> torch.Tensor:
        if j in self._cache:
            return self._cache[j]
        img = _rgb_tensor(load_rgb(self.targets[j]))
        if self.cache:
            self._cache[j] = img
        return img

    def __getitem__(self, index: int) -> dict:
        raw = self.raw_dataset[index]["raw"]
        side_h, side_w = 2 * raw.shape[-2], 2 * raw.shape[-1]
        g = _generator(None if self.seed is None else self.seed + 7, index)
        j = _randint(len(self.targets), g)
        img = self._target(j)
        if img.shape[-2] < side_h or img.shape[-1] < side_w:
            raise ValueError(f"target image {self.targets[j]} is {img.shape[-1]}x{img.shape[-2]}, smaller than {side_w}x{side_h}")
        y = _randint(img.shape[-2] - side_h + 1, g)
        x = _randint(img.shape[-1] - side_w + 1, g)
        target = img[:, y : y + side_h, x : x + side_w]
        if self.augment and side_h == side_w:
            target = _dihedral(target, g)
        return {"raw": raw, "raw_rgb": naive_render(raw), "target": target.contiguous()}


class ISPDataModule(ImageFolderDataModule):
    """ISP training data: simulated from an sRGB folder or read from Zurich folders, paired or unpaired.

    Args:
        train_dir: ``mode=simulated``: a folder of sRGB images; ``mode=zurich``: the dataset root
            (``train/huawei_raw`` + ``train/canon``) or the train split folder itself.
        val_dir: validation data of the same kind (``zurich``: its ``test/`` split is used), or None.
        mode: ``simulated`` (unprocessing simulator) or ``zurich`` (real RAW/RGB folders).
        pairing: ``paired`` (RAW with its own RGB) or ``unpaired`` (RAW with unrelated RGB targets).
        target_dir: unpaired targets (sRGB folder); default: ``train_dir`` for simulated data,
            the ``canon`` folder of the train split for Zurich, drawn independently of the RAW.
        patch_size: RGB patch side (even); the RAW patch is half of it.
        batch_size: patches per step (per device under DDP).
        num_workers: DataLoader worker processes.
        repeat: passes over a simulated folder per epoch.
        noise: add shot / read noise to simulated RAW.
        cache: keep decoded images in memory (per worker).
        black_level: Zurich RAW black level.
        white_level: Zurich RAW white level (PyNET: 4 * 255).
        val_size: centre-crop simulated validation images to at most this side (None: whole).
        val_seed: seed of the (deterministic) simulated validation RAW.
    """

    def __init__(
        self,
        train_dir: str,
        val_dir: str | None = None,
        mode: Literal["simulated", "zurich"] = "simulated",
        pairing: Literal["paired", "unpaired"] = "paired",
        target_dir: str | None = None,
        patch_size: int = 128,
        batch_size: int = 16,
        num_workers: int = 4,
        repeat: int = 1,
        noise: bool = True,
        cache: bool = False,
        black_level: float = 0.0,
        white_level: float = ZURICH_WHITE_LEVEL,
        val_size: int | None = 512,
        val_seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        if mode not in ("simulated", "zurich"):
            raise ValueError(f"data.mode must be 'simulated' or 'zurich', got {mode!r}")
        if pairing not in ("paired", "unpaired"):
            raise ValueError(f"data.pairing must be 'paired' or 'unpaired', got {pairing!r}")
        for d, what in ((train_dir, "training folder"), (val_dir, "validation folder"), (target_dir, "target folder")):
            if d is not None and not Path(d).is_dir():
                raise FileNotFoundError(f"{what} {d} does not exist")
        self.train_dir = train_dir
        self.val_dir = val_dir
        self.mode = mode
        self.pairing = pairing
        self.target_dir = target_dir
        self.patch_size = patch_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.repeat = repeat
        self.noise = noise
        self.cache = cache
        self.black_level = black_level
        self.white_level = white_level
        self.val_size = val_size
        self.val_seed = val_seed
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    def _zurich(self, root: str, split: str, patch_size: int | None, seed: int | None, with_target: bool = True) -> ZurichDataset:
        return ZurichDataset(root, split, patch_size, self.black_level, self.white_level, seed=seed, with_target=with_target)

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_set is None:
            if self.mode == "simulated":
                raw_set: Dataset = SimulatedISPDataset(self.train_dir, self.patch_size, self.repeat, noise=self.noise, cache=self.cache)
            else:
                raw_set = self._zurich(self.train_dir, "train", self.patch_size, None, with_target=self.pairing == "paired")
            if self.pairing == "unpaired":
                target_dir = self.target_dir
                if target_dir is None:
                    target_dir = str(self.train_dir if self.mode == "simulated" else resolve_zurich_split(self.train_dir, "train") / "canon")
                raw_set = UnpairedDataset(raw_set, target_dir, cache=self.cache)
            self.train_set = raw_set
        if stage in (None, "fit", "validate") and self.val_dir is not None and self.val_set is None:
            if self.mode == "simulated":
                self.val_set = SimulatedISPDataset(
                    self.val_dir, None, augment=False, noise=self.noise, seed=self.val_seed, max_size=self.val_size
                )
            else:
                self.val_set = self._zurich(self.val_dir, "test", None, self.val_seed)

