"""A generated instance-segmentation dataset: shapes on textured backgrounds.

:func:`make_shapes_dataset` writes, for tests and demos of the segmentation task (the project
ships no third-party data)::

    ROOT/images/NAME.png              RGB image
    ROOT/masks/NAME/000.png ...       one mask per instance (0 / 255), per-instance PNG layout
    ROOT/annotations.json             the same instances in COCO format (compressed RLE)

Each image has a textured background (smooth noise, a sinusoidal grating and pixel noise, in
random colours) and 1 to ``max_instances`` filled shapes -- ellipses, rotated rectangles and
star-shaped polygons -- each with its own colour and stripe texture, drawn in order so later
shapes occlude earlier ones. An instance's mask is what stays visible of its shape; instances
left with fewer than ``min_area`` pixels are dropped. Everything follows from ``seed``.
Category ids: 1 ellipse, 2 rectangle, 3 polygon.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .data import rle_encode

__all__ = ["CATEGORIES", "make_shapes_dataset", "shapes_image"]

CATEGORIES = [{"id": 1, "name": "ellipse"}, {"id": 2, "name": "rectangle"}, {"id": 3, "name": "polygon"}]


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Random values on a coarse grid, upsampled bicubically to (h, w): a smooth field in ~[0, 1]."""
    grid = rng.random((cells, cells)).astype(np.float32)
    img = Image.fromarray(grid, mode="F").resize((w, h), Image.BICUBIC)
    return np.clip(np.asarray(img), 0.0, 1.0)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle, period = rng.uniform(0, math.pi), rng.uniform(6, 24)
    grating = 0.5 + 0.5 * np.sin(2 * math.pi * (xx * math.cos(angle) + yy * math.sin(angle)) / period)
    smooth = _smooth_noise(rng, h, w, int(rng.integers(3, 8)))
    c0, c1, c2 = (rng.uniform(0, 255, 3) for _ in range(3))
    img = (smooth[..., None] * c0 + (1 - smooth[..., None]) * c1) * 0.8 + grating[..., None] * c2 * 0.2
    img += rng.normal(0, 6, (h, w, 3))
    return img


def _shape_polygon(rng: np.random.Generator, kind: str, h: int, w: int) -> list[tuple[float, float]]:
    s = min(h, w)
    cx, cy = rng.uniform(0.1 * w, 0.9 * w), rng.uniform(0.1 * h, 0.9 * h)
    rx, ry = rng.uniform(0.08, 0.3) * s, rng.uniform(0.08, 0.3) * s
    theta = rng.uniform(0, math.pi)
    ct, st = math.cos(theta), math.sin(theta)
    if kind == "ellipse":
        t = np.linspace(0, 2 * math.pi, 64, endpoint=False)
        pts = np.stack([rx * np.cos(t), ry * np.sin(t)], 1)
    elif kind == "rectangle":
        pts = np.array([[-rx, -ry], [rx, -ry], [rx, ry], [-rx, ry]])
    else:  # a star-shaped polygon: sorted angles, radii in [0.45, 1]
        n = int(rng.integers(5, 10))
        t = np.sort(rng.uniform(0, 2 * math.pi, n))
        r = rng.uniform(0.45, 1.0, n)
        pts = np.stack([rx * r * np.cos(t), rx * r * np.sin(t)], 1)
    rot = pts @ np.array([[ct, st], [-st, ct]])
    return [(float(cx + x), float(cy + y)) for x, y in rot]


def shapes_image(
    rng: np.random.Generator, h: int, w: int, max_instances: int = 4, min_area: int = 64
) -> tuple[np.ndarray, list[np.ndarray], list[int]]:
    """One image: ``(uint8 (h, w, 3), [bool (h, w) visible instance masks], [category ids])``."""
    img = _background(rng, h, w)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    drawn: list[np.ndarray] = []
    kinds: list[int] = []
    for _ in range(int(rng.integers(1, max_instances + 1))):
        cat = int(rng.integers(1, 4))
        canvas = Image.new("L", (w, h), 0)
        ImageDraw.Draw(canvas).polygon(_shape_polygon(rng, CATEGORIES[cat - 1]["name"], h, w), fill=255)
        m = np.asarray(canvas) > 0
        if not m.any():
            continue
        base, stripe = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        angle, period = rng.uniform(0, math.pi), rng.uniform(4, 12)
        stripes = (np.sin(2 * math.pi * (xx * math.cos(angle) + yy * math.sin(angle)) / period) > 0)[..., None]
        fill = np.where(stripes, stripe, base) * 0.7 + base * 0.3 + rng.normal(0, 4, (h, w, 3))
        img = np.where(m[..., None], fill, img)
        drawn.append(m)
        kinds.append(cat)
    masks, cats = [], []
    covered = np.zeros((h, w), dtype=bool)
    for m, cat in zip(reversed(drawn), reversed(kinds)):  # the last drawn is on top
        visible = m & ~covered
        covered |= m
        if visible.sum() >= min_area:
            masks.append(visible)
            cats.append(cat)
    masks.reverse()
    cats.reverse()
    return np.clip(np.round(img), 0, 255).astype(np.uint8), masks, cats


def make_shapes_dataset(
    root: str | os.PathLike,
    num_images: int = 8,
    sizes: Sequence[tuple[int, int]] = ((96, 128), (128, 96)),
    max_instances: int = 4,
    min_area: int = 64,
    seed: int = 0,
) -> Path:
    """Write the dataset (layout: module docstring) under ``root``; image ``i`` has size ``sizes[i % len(sizes)]`` (h, w).

    Images whose instances were all dropped are regenerated, so every image has at least one.
    Returns ``root``.
    """
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    coco: dict = {"images": [], "annotations": [], "categories": CATEGORIES}
    ann_id = 1
    for i in range(num_images):
        h, w = sizes[i % len(sizes)]
        while True:
            img, masks, cats = shapes_image(rng, h, w, max_instances, min_area)
            if masks:
                break
        name = f"shapes_{i:03d}"
        Image.fromarray(img).save(root / "images" / f"{name}.png")
        (root / "masks" / name).mkdir(parents=True, exist_ok=True)
        coco["images"].append({"id": i + 1, "file_name": f"{name}.png", "height": h, "width": w})
        for k, (m, cat) in enumerate(zip(masks, cats)):
            Image.fromarray(m.astype(np.uint8) * 255).save(root / "masks" / name / f"{k:03d}.png")
            rows, cols = np.nonzero(m)
            x0, y0 = int(cols.min()), int(rows.min())
            coco["annotations"].append({
                "id": ann_id, "image_id": i + 1, "category_id": cat, "iscrowd": 0,
                "segmentation": rle_encode(m), "area": int(m.sum()),
                "bbox": [x0, y0, int(cols.max()) - x0 + 1, int(rows.max()) - y0 + 1],
            })
            ann_id += 1
    tmp = root / "annotations.json.tmp"
    tmp.write_text(json.dumps(coco), encoding="utf-8")
    os.replace(tmp, root / "annotations.json")
    return root
