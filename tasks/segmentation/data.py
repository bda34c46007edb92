"""Data for promptable segmentation: image folders for encoder distillation, instance masks for eval.

Distillation (:class:`SamImageDataset`, :class:`SegmentationDataModule`): every image under a
folder (any layout), resized as SAM resizes (``ResizeLongestSide``: the long side to
``img_size``, PIL bilinear; :func:`zoo.tasks.segmentation.predictor.resize_longest_side`, the
predictor's own) and put in the top-left corner of an ``img_size`` x ``img_size`` uint8 canvas.
Items are dicts: ``image`` (3, S, S) uint8, ``size`` (2,) the resized (h, w) (the rest is
padding: the task normalises the image and zeroes the padding, SAM's ``preprocess``), ``key`` a
string naming the file, its byte size, its modification time and the resize (what teacher
embeddings are cached under), ``index``.

Evaluation (:func:`read_instance_dataset`): images with reference instance masks, in one of

- COCO format: ``annotations.json`` (or ``annotations/*.json``, or any top-level ``*.json`` with
  an ``images`` list) with ``file_name`` relative to ``images/`` (or to the folder);
  ``segmentation`` as compressed RLE (the COCO string, as SA-1B and pycocotools write it),
  uncompressed RLE (a list of counts) -- both decoded by
  :func:`zoo.tasks.segmentation.amg.rle_to_mask`, no pycocotools needed -- or polygons
  (rasterised with PIL, which can differ from pycocotools' rasteriser on boundary pixels);
  ``iscrowd: 1`` annotations are skipped;
- per-instance PNG masks: ``images/NAME.ext`` with ``masks/NAME/*.png`` (one file per instance,
  nonzero = inside) or ``masks/NAME.png`` (a label map: each nonzero value is one instance);
- SA-1B's layout: ``NAME.jpg`` beside ``NAME.json`` holding ``annotations`` with RLE.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

from ..base import ImageFolderDataModule, TaskConfigError
from ..sr.data import IMAGE_EXTENSIONS, list_images, load_rgb
from .amg import mask_to_rle, rle_to_coco, rle_to_mask
from .predictor import resize_longest_side

__all__ = [
    "InstanceSample",
    "SamImageDataset",
    "SegmentationDataModule",
    "decode_segmentation",
    "polygons_to_mask",
    "read_instance_dataset",
    "rle_encode",
]


# --------------------------------------------------------------------------- distillation


class SamImageDataset(Dataset):
    """Images resized and padded for a SAM image encoder of ``img_size`` (see the module docstring)."""

    def __init__(self, root: str | os.PathLike, img_size: int = 1024, max_images: int | None = None):
        if img_size < 16 or img_size % 16:
            raise TaskConfigError(f"img_size must be a positive multiple of 16, got {img_size}")
        self.root = Path(root)
        self.files = list_images(self.root)
        if max_images:
            self.files = self.files[:max_images]
        if not self.files:
            raise TaskConfigError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}")
        self.img_size = img_size

    def __len__(self) -> int:
        return len(self.files)

    def key(self, index: int) -> str:
        """What the teacher's embedding of item ``index`` is cached under: the file (resolved
        path, byte size, modification time) and the resize."""
        path = self.files[index].resolve()
        st = path.stat()
        return f"{path}|{st.st_size}|{st.st_mtime_ns}|longest_side={self.img_size}"

    def keys(self) -> list[str]:
        return [self.key(i) for i in range(len(self))]

    def __getitem__(self, index: int) -> dict[str, Any]:
        img = resize_longest_side(np.asarray(load_rgb(self.files[index])), self.img_size)
        arr = torch.from_numpy(np.array(img)).permute(2, 0, 1)  # (3, h, w) uint8
        canvas = torch.zeros(3, self.img_size, self.img_size, dtype=torch.uint8)
        canvas[:, : arr.shape[1], : arr.shape[2]] = arr
        return {
            "image": canvas,
            "size": torch.tensor([arr.shape[1], arr.shape[2]], dtype=torch.int64),
            "key": self.key(index),
            "index": index,
        }


class SegmentationDataModule(ImageFolderDataModule):
    """``train_dir`` / ``val_dir``: folders of images (any layout, no labels) for encoder distillation.

    Args:
        train_dir: training images (e.g. a part of SA-1B).
        val_dir: validation images (embedding MSE against the teacher); none when null.
        img_size: the encoders' input side (SAM and MobileSAM: 1024); must equal the student's.
        batch_size: images per step and device.
        num_workers: DataLoader workers.
        max_images: use only the first N images of each folder (sorted by path).
    """

    def __init__(
        self,
        train_dir: str,
        val_dir: str | None = None,
        img_size: int = 1024,
        batch_size: int = 8,
        num_workers: int = 4,
        max_images: int | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.batch_size, self.num_workers = batch_size, num_workers

    def _dataset(self, root: str, train: bool) -> SamImageDataset:
        if not Path(root).is_dir():
            raise FileNotFoundError(f"{'training' if train else 'validation'} folder {root} does not exist")
        return SamImageDataset(root, self.hparams.img_size, self.hparams.max_images)

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        self.train_set = self._dataset(hp.train_dir, True)
        self.val_set = self._dataset(hp.val_dir, False) if hp.val_dir else None

    def val_dataloader(self):
        if self.val_set is None:
            return []
        return self._loader(self.val_set, False, self.batch_size, drop_last=False)  # all the same size here


# ------------------------------------------------------------------------ annotations


def rle_encode(mask: np.ndarray) -> dict[str, Any]:
    """A 2-D bool mask as COCO compressed RLE ``{"size": [h, w], "counts": str}`` (pycocotools' ``encode``)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {mask.shape}")
    return rle_to_coco(mask_to_rle(mask[None])[0])


def polygons_to_mask(polygons: Sequence[Sequence[float]], h: int, w: int) -> np.ndarray:
    """COCO polygons ``[[x0, y0, x1, y1, ...], ...]`` rasterised (PIL) into a bool (h, w) mask."""
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    for poly in polygons:
        xy = [float(v) for v in poly]
        if len(xy) >= 6:
            draw.polygon(xy, fill=1, outline=1)
    return np.asarray(canvas, dtype=bool).copy()


def decode_segmentation(seg: Any, h: int, w: int) -> np.ndarray:
    """A COCO ``segmentation`` (RLE dict or polygon list) -> bool (h, w)."""
    if isinstance(seg, dict):
        m = rle_to_mask(seg)
        if m.shape != (h, w):
            raise ValueError(f"RLE of size {m.shape} for an image of {h}x{w}")
        return m
    if isinstance(seg, list):
        return polygons_to_mask(seg, h, w)
    raise ValueError(f"unknown segmentation format {type(seg).__name__}")


# ---------------------------------------------------------------------------- eval reader


@dataclass
class InstanceSample:
    """One image and its reference instances; masks are decoded on demand by :meth:`load_masks`."""

    name: str
    image_path: Path
    loader: Callable[[], list[np.ndarray]] = field(repr=False)
    ids: list[Any] = field(default_factory=list)

    def load_image(self) -> np.ndarray:
        return np.asarray(load_rgb(self.image_path)).copy()

    def load_masks(self) -> np.ndarray:
        """Bool (N, H, W) masks, empty ones dropped."""
        masks = [np.asarray(m, dtype=bool) for m in self.loader()]
        masks = [m for m in masks if m.any()]
        if not masks:
            return np.zeros((0, 0, 0), dtype=bool)
        return np.stack(masks)


def _is_coco(obj: Any) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("images"), list) and isinstance(obj.get("annotations"), list)


def _find_coco_json(root: Path) -> Path | None:
    """``annotations.json``, else the first ``annotations/*.json``, else the first top-level
    ``*.json`` that names an ``images`` list early on (SA-1B's per-image files say ``image``)."""
    if (root / "annotations.json").is_file():
        return root / "annotations.json"
    if (root / "annotations").is_dir():
        found = sorted((root / "annotations").glob("*.json"))
        if found:
            return found[0]
    for path in sorted(root.glob("*.json")):
        try:
            with open(path, encoding="utf-8") as f:
                head = f.read(1 << 16)
        except OSError:
            continue
        if '"images"' in head:
            return path
    return None


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read annotations {path}: {e}") from None


def _coco_samples(root: Path, path: Path) -> list[InstanceSample]:
    coco = _read_json(path)
    if not _is_coco(coco):
        raise ValueError(f"{path} is not a COCO annotation file (needs 'images' and 'annotations' lists)")
    image_dir = root / "images" if (root / "images").is_dir() else root
    by_image: dict[Any, list[dict]] = {}
    for ann in coco["annotations"]:
        if ann.get("iscrowd", 0) or "segmentation" not in ann:
            continue
        by_image.setdefault(ann["image_id"], []).append(ann)
    samples = []
    for info in coco["images"]:
        anns = by_image.get(info["id"])
        if not anns:
            continue
        file = image_dir / info["file_name"]
        if not file.is_file() and (root / info["file_name"]).is_file():
            file = root / info["file_name"]
        if not file.is_file():
            raise FileNotFoundError(f"image {info['file_name']} of {path} not found under {image_dir}")
        h, w = int(info["height"]), int(info["width"])

        def loader(anns=anns, h=h, w=w) -> list[np.ndarray]:
            return [decode_segmentation(a["segmentation"], h, w) for a in anns]

        samples.append(InstanceSample(Path(info["file_name"]).as_posix(), file, loader, [a.get("id") for a in anns]))
    return samples


def _png_samples(root: Path) -> list[InstanceSample]:
    mask_root = root / "masks"
    samples = []
    for image in list_images(root / "images"):
        rel = image.relative_to(root / "images").with_suffix("")
        folder, label_map = mask_root / rel, (mask_root / rel).with_suffix(".png")
        if folder.is_dir():
            files = list_images(folder, recursive=False)

            def loader(files=files) -> list[np.ndarray]:
                return [np.asarray(Image.open(f).convert("L")) > 0 for f in files]

            ids: list[Any] = [f.stem for f in files]
        elif label_map.is_file():

            def loader(label_map=label_map) -> list[np.ndarray]:
                lab = np.asarray(Image.open(label_map))
                if lab.ndim == 3:  # an RGB label map: one instance per colour
                    lab = lab[..., 0].astype(np.int64) << 16 | lab[..., 1].astype(np.int64) << 8 | lab[..., 2]
                return [lab == v for v in np.unique(lab) if v != 0]

            ids = []
        else:
            continue
        samples.append(InstanceSample(image.relative_to(root / "images").as_posix(), image, loader, ids))
    return samples


def _sa1b_samples(root: Path) -> list[InstanceSample]:
    samples = []
    for image in list_images(root):
        js = image.with_suffix(".json")
        if not js.is_file():
            continue

        def loader(js=js) -> list[np.ndarray]:
            obj = _read_json(js)
            info = obj.get("image", {})
            out = []
            for a in obj.get("annotations", []):
                seg = a["segmentation"]
                h, w = (int(info["height"]), int(info["width"])) if "height" in info else tuple(seg["size"])
                out.append(decode_segmentation(seg, h, w))
            return out

        samples.append(InstanceSample(image.relative_to(root).as_posix(), image, loader))
    return samples


def read_instance_dataset(root: str | os.PathLike, max_images: int | None = None) -> list[InstanceSample]:
    """The images of an instance-mask folder with their reference masks (layouts: module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist")
    coco = _find_coco_json(root)
    if coco is not None:
        samples = _coco_samples(root, coco)
    elif (root / "images").is_dir() and (root / "masks").is_dir():
        samples = _png_samples(root)
    else:
        samples = _sa1b_samples(root)
    if not samples:
        raise TaskConfigError(
            f"no annotated images under {root}: expected annotations.json (COCO), images/ + masks/NAME/*.png "
            f"(per-instance PNG masks) or NAME.jpg + NAME.json (SA-1B)"
        )
    return samples[:max_images] if max_images else samples
