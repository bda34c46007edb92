"""Automatic mask generation: segment everything in an image with a promptable model.

A grid of single-point prompts (optionally again on overlapping crops) is run through
:class:`~zoo.tasks.segmentation.predictor.SamPredictor` in batches; masks are kept by the model's
predicted IoU and by their stability score, de-duplicated by box NMS (``torchvision.ops``), and
optionally cleaned of small islands and holes (``scipy.ndimage`` connected components). The
algorithm, its defaults and its output records follow ``SamAutomaticMaskGenerator`` of
segment-anything (https://github.com/facebookresearch/segment-anything, Apache-2.0), so the same
weights give the same masks.

Masks come back as boolean arrays or as COCO run-length encodings: ``uncompressed_rle``
(``{"size": [H, W], "counts": [ints]}``, column-major runs starting with background) or
``coco_rle`` (the compressed string form of pycocotools, written here without it).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from itertools import product
from typing import Any

import numpy as np
import torch
from torchvision.ops import batched_nms, box_area

from .predictor import SamPredictor, _as_uint8_hwc

__all__ = [
    "SamAutomaticMaskGenerator",
    "area_from_rle",
    "batched_mask_to_box",
    "build_all_layer_point_grids",
    "build_point_grid",
    "calculate_stability_score",
    "coco_to_rle",
    "decode_segmentation",
    "generate_crop_boxes",
    "mask_to_rle",
    "remove_small_regions",
    "rle_to_coco",
    "rle_to_mask",
]

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")


# ------------------------------------------------------------------------------ point grids, crops
def build_point_grid(n_per_side: int) -> np.ndarray:
    """(n*n, 2) points (x, y) in [0, 1]: cell centres of an n x n grid, x varying fastest."""
    if n_per_side < 0:
        raise ValueError(f"points per side must be >= 0, got {n_per_side}")
    if n_per_side == 0:
        return np.zeros((0, 2))
    half = 1.0 / (2 * n_per_side)
    side = np.linspace(half, 1.0 - half, n_per_side)
    xs, ys = np.meshgrid(side, side, indexing="xy")
    return np.stack([xs.reshape(-1), ys.reshape(-1)], axis=-1)


def build_all_layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int) -> list[np.ndarray]:
    """One grid per crop layer; layer i has ``int(n / scale**i)`` points per side."""
    return [build_point_grid(int(n_per_side / (scale_per_layer ** i))) for i in range(n_layers + 1)]


def generate_crop_boxes(im_size: Sequence[int], n_layers: int, overlap_ratio: float) -> tuple[list[list[int]], list[int]]:
    """XYXY crop boxes: the whole image, then (2**(i+1))**2 overlapping crops for layer i+1."""
    im_h, im_w = int(im_size[0]), int(im_size[1])
    boxes, layers = [[0, 0, im_w, im_h]], [0]
    short = min(im_h, im_w)
    for i in range(n_layers):
        n = 2 ** (i + 1)
        overlap = int(overlap_ratio * short * (2 / n))
        cw = math.ceil((overlap * (n - 1) + im_w) / n)
        ch = math.ceil((overlap * (n - 1) + im_h) / n)
        x0s = [int((cw - overlap) * k) for k in range(n)]
        y0s = [int((ch - overlap) * k) for k in range(n)]
        for x0, y0 in product(x0s, y0s):
            boxes.append([x0, y0, min(x0 + cw, im_w), min(y0 + ch, im_h)])
            layers.append(i + 1)
    return boxes, layers


# ------------------------------------------------------------------------------------------ RLE
def mask_to_rle(masks: torch.Tensor | np.ndarray) -> list[dict[str, Any]]:
    """(B, H, W) (or (H, W)) boolean masks -> COCO uncompressed RLEs.

    Runs are over the column-major (Fortran-order) flattening and start with a background run
    (0 when the first pixel is foreground), as pycocotools expects.
    """
    t = torch.as_tensor(masks)
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3:
        raise ValueError(f"expected (B, H, W) or (H, W) masks, got shape {tuple(t.shape)}")
    b, h, w = t.shape
    flat = t.bool().transpose(1, 2).reshape(b, h * w)
    out = []
    if h * w == 0:
        return [{"size": [h, w], "counts": [0]} for _ in range(b)]
    change = (flat[:, 1:] != flat[:, :-1]).nonzero()
    for i in range(b):
        idx = change[change[:, 0] == i, 1] + 1
        bounds = torch.cat([idx.new_zeros(1), idx, idx.new_full((1,), h * w)])
        runs = (bounds[1:] - bounds[:-1]).tolist()
        counts = ([0] if bool(flat[i, 0]) else []) + runs
        out.append({"size": [int(h), int(w)], "counts": [int(c) for c in counts]})
    return out


def _check_rle(rle: Any) -> tuple[int, int, list[int]]:
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError("an RLE is a dict with 'size' [H, W] and 'counts'")
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        counts = coco_to_rle(rle)["counts"]
    counts = [int(c) for c in counts]
    if any(c < 0 for c in counts) or sum(counts) != h * w:
        raise ValueError(f"corrupt RLE: counts must be non-negative and sum to H*W = {h * w}, got sum {sum(counts)}")
    return h, w, counts


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """COCO RLE (uncompressed, or compressed string counts) -> (H, W) bool array."""
    h, w, counts = _check_rle(rle)
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, counts)
    return np.ascontiguousarray(flat.reshape(w, h).T)


def area_from_rle(rle: dict[str, Any]) -> int:
    """Foreground pixel count of an RLE."""
    _, _, counts = _check_rle(rle)
    return int(sum(counts[1::2]))


def rle_to_coco(rle: dict[str, Any]) -> dict[str, Any]:
    """Uncompressed RLE -> pycocotools' compressed form (``counts`` a string, LEB128-like, 5 bits
    per character with offset 48, each count after the second coded as a difference)."""
    h, w, counts = _check_rle(rle)
    chars = []
    for i, c in enumerate(counts):
        x = c - counts[i - 2] if i > 2 else c
        while True:
            ch = x & 0x1F
            x >>= 5
            more = (x != -1) if ch & 0x10 else (x != 0)
            if more:
                ch |= 0x20
            chars.append(chr(ch + 48))
            if not more:
                break
    return {"size": [h, w], "counts": "".join(chars)}


def coco_to_rle(rle: dict[str, Any]) -> dict[str, Any]:
    """pycocotools' compressed RLE (string or bytes counts) -> uncompressed RLE."""
    s = rle["counts"]
    if isinstance(s, bytes):
        s = s.decode("ascii")
    if not isinstance(s, str):
        return {"size": list(rle["size"]), "counts": [int(c) for c in s]}
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            if p >= len(s):
                raise ValueError("corrupt compressed RLE string (truncated)")
            c = ord(s[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"corrupt compressed RLE string (character {s[p]!r})")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return {"size": [int(v) for v in rle["size"]], "counts": counts}


def decode_segmentation(seg: Any) -> np.ndarray:
    """A record's ``segmentation`` (bool array, uncompressed or compressed RLE) -> (H, W) bool."""
    if isinstance(seg, dict):
        return rle_to_mask(seg)
    return np.asarray(seg).astype(bool)


# ------------------------------------------------------------------------------- mask measures
def calculate_stability_score(logits: torch.Tensor, mask_threshold: float, offset: float) -> torch.Tensor:
    """IoU of the masks thresholded at ``threshold + offset`` and ``threshold - offset``."""
    inter = (logits > (mask_threshold + offset)).sum((-1, -2), dtype=torch.int64)
    union = (logits > (mask_threshold - offset)).sum((-1, -2), dtype=torch.int64)
    return inter.float() / union.float()


def batched_mask_to_box(masks: torch.Tensor) -> torch.Tensor:
    """(..., H, W) bool -> (..., 4) XYXY boxes of the foreground, inclusive pixel indices;
    [0, 0, 0, 0] for an empty mask."""
    shape = masks.shape
    if masks.numel() == 0:
        return torch.zeros(*shape[:-2], 4, dtype=torch.long, device=masks.device)
    h, w = shape[-2:]
    m = masks.reshape(-1, h, w).bool()
    rows, cols = m.any(-1), m.any(-2)  # (N, H), (N, W)
    ar_h = torch.arange(h, device=m.device)
    ar_w = torch.arange(w, device=m.device)
    y1 = torch.where(rows, ar_h, -1).amax(-1)
    y0 = torch.where(rows, ar_h, h).amin(-1)
    x1 = torch.where(cols, ar_w, -1).amax(-1)
    x0 = torch.where(cols, ar_w, w).amin(-1)
    box = torch.stack([x0, y0, x1, y1], -1)
    box = box * rows.any(-1, keepdim=True)
    return box.reshape(*shape[:-2], 4)


def is_box_near_crop_edge(boxes: torch.Tensor, crop_box: Sequence[int], orig_box: Sequence[int], atol: float = 20.0) -> torch.Tensor:
    """Boxes (crop frame) touching a crop edge that is not also an image edge."""
    crop = torch.as_tensor(crop_box, dtype=torch.float, device=boxes.device)
    orig = torch.as_tensor(orig_box, dtype=torch.float, device=boxes.device)
    b = (boxes + _offset(crop_box, boxes.device)).float()
    near_crop = torch.isclose(b, crop[None], atol=atol, rtol=0)
    near_img = torch.isclose(b, orig[None], atol=atol, rtol=0)
    return (near_crop & ~near_img).any(1)


def _offset(crop_box: Sequence[int], device: torch.device, n: int = 4) -> torch.Tensor:
    x0, y0 = int(crop_box[0]), int(crop_box[1])
    return torch.tensor([[x0, y0] * (n // 2)], device=device)


def remove_small_regions(mask: np.ndarray, area_thresh: float, mode: str) -> tuple[np.ndarray, bool]:
    """Fill holes (``mode="holes"``) or drop islands (``"islands"``) smaller than ``area_thresh``
    pixels (8-connected components). Returns the mask and whether it changed. An island-only
    mask whose islands are all small keeps its largest one."""
    from scipy import ndimage

    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    holes = mode == "holes"
    work = (~mask) if holes else mask.astype(bool)
    labels, n = ndimage.label(work, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return mask, False
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    small = np.flatnonzero(sizes < area_thresh) + 1
    if small.size == 0:
        return mask, False
    if holes:
        return mask.astype(bool) | np.isin(labels, small), True
    keep = np.setdiff1d(np.arange(1, n + 1), small)
    if keep.size == 0:
        keep = np.array([int(np.argmax(sizes)) + 1])
    return np.isin(labels, keep), True


# ---------------------------------------------------------------------------- record container
class _Records:
    """Columns of per-mask data (tensors or lists) filtered and concatenated together."""

    def __init__(self, **cols: Any) -> None:
        self.cols: dict[str, Any] = dict(cols)

    def __getitem__(self, k: str) -> Any:
        return self.cols[k]

    def __setitem__(self, k: str, v: Any) -> None:
        self.cols[k] = v

    def __len__(self) -> int:
        for v in self.cols.values():
            return len(v)
        return 0

    def filter(self, keep: torch.Tensor) -> None:
        keep = torch.as_tensor(keep)
        idx = keep.nonzero().flatten() if keep.dtype == torch.bool else keep.long()
        for k, v in self.cols.items():
            if isinstance(v, torch.Tensor):
                self.cols[k] = v[idx.to(v.device)]
            else:
                self.cols[k] = [v[int(i)] for i in idx]

    def cat(self, other: _Records) -> None:
        for k, v in other.cols.items():
            if k not in self.cols:
                self.cols[k] = v
            elif isinstance(v, torch.Tensor):
                self.cols[k] = torch.cat([self.cols[k], v.to(self.cols[k].device)])
            else:
                self.cols[k] = list(self.cols[k]) + list(v)


def _batches(n: int, size: int) -> Iterator[slice]:
    for s in range(0, n, size):
        yield slice(s, min(s + size, n))


class SamAutomaticMaskGenerator:
    """Masks for everything in an image.

    >>> gen = SamAutomaticMaskGenerator(zoo.create("mobile_sam_vit_t", pretrained=True).eval())
    >>> records = gen.generate(image)   # HWC uint8
    >>> records[0].keys()  # segmentation, area, bbox (XYWH), predicted_iou, point_coords, stability_score, crop_box

    Arguments (segment-anything's names and defaults, chosen there for ViT-H): ``points_per_side``
    (grid of n x n single-point prompts, or ``point_grids``: one (N, 2) array in [0, 1] per crop
    layer), ``points_per_batch``, ``pred_iou_thresh``, ``stability_score_thresh``,
    ``stability_score_offset``, ``box_nms_thresh``, ``crop_n_layers`` (0: no crops),
    ``crop_nms_thresh``, ``crop_overlap_ratio``, ``crop_n_points_downscale_factor``,
    ``min_mask_region_area`` (> 0: fill holes and drop islands smaller than that, then NMS
    again), ``output_mode`` ("binary_mask", "uncompressed_rle" or "coco_rle").
    """

    def __init__(
        self,
        model: torch.nn.Module,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: list[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
    ) -> None:
        if (points_per_side is None) == (point_grids is None):
            raise ValueError("give exactly one of points_per_side and point_grids")
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {OUTPUT_MODES}, got {output_mode!r}")
        if points_per_batch < 1:
            raise ValueError(f"points_per_batch must be >= 1, got {points_per_batch}")
        if crop_n_layers < 0:
            raise ValueError(f"crop_n_layers must be >= 0, got {crop_n_layers}")
        if points_per_side is not None:
            grids = build_all_layer_point_grids(points_per_side, crop_n_layers, crop_n_points_downscale_factor)
        else:
            grids = [np.asarray(g, dtype=np.float64) for g in point_grids]  # type: ignore[union-attr]
            if len(grids) != crop_n_layers + 1:
                raise ValueError(f"point_grids needs one grid per crop layer ({crop_n_layers + 1}), got {len(grids)}")
            for g in grids:
                if g.ndim != 2 or g.shape[1] != 2 or g.min(initial=0) < 0 or g.max(initial=0) > 1:
                    raise ValueError("each point grid must be an (N, 2) array of (x, y) in [0, 1]")
        self.point_grids = grids
        self.predictor = SamPredictor(model)
        self.points_per_batch = int(points_per_batch)
        self.pred_iou_thresh = float(pred_iou_thresh)
        self.stability_score_thresh = float(stability_score_thresh)
        self.stability_score_offset = float(stability_score_offset)
        self.box_nms_thresh = float(box_nms_thresh)
        self.crop_n_layers = int(crop_n_layers)
        self.crop_nms_thresh = float(crop_nms_thresh)
        self.crop_overlap_ratio = float(crop_overlap_ratio)
        self.min_mask_region_area = int(min_mask_region_area)
        self.output_mode = output_mode

    @staticmethod
    def _image(image: Any) -> Any:
        arr = _as_uint8_hwc(image)
        if arr is not None:
            return arr
        t = image[0] if image.ndim == 4 and image.shape[0] == 1 else image
        if not t.is_floating_point() or t.ndim != 3 or t.shape[0] != 3:
            raise ValueError(f"expected an HWC uint8 image or a (3, H, W) float tensor in [0, 1], got {tuple(image.shape)} {image.dtype}")
        return t

    @torch.no_grad()
    def generate(self, image: Any) -> list[dict[str, Any]]:
        """Records for every mask found in ``image`` (HWC uint8 / PIL, or CHW float in [0, 1])."""
        img = self._image(image)
        size = tuple(img.shape[:2]) if isinstance(img, np.ndarray) else tuple(img.shape[-2:])
        data = self._generate_masks(img, size)
        if self.min_mask_region_area > 0 and len(data):
            data = self._remove_small_regions(data, self.min_mask_region_area, max(self.box_nms_thresh, self.crop_nms_thresh))
        out = []
        boxes = data["boxes"].tolist() if len(data) else []
        for i in range(len(data)):
            rle = data["rles"][i]
            if self.output_mode == "binary_mask":
                seg: Any = rle_to_mask(rle)
            elif self.output_mode == "coco_rle":
                seg = rle_to_coco(rle)
            else:
                seg = rle
            x0, y0, x1, y1 = boxes[i]
            cx0, cy0, cx1, cy1 = data["crop_boxes"][i].tolist()
            out.append({
                "segmentation": seg,
                "area": area_from_rle(rle),
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "predicted_iou": float(data["iou_preds"][i]),
                "point_coords": [data["points"][i].tolist()],
                "stability_score": float(data["stability_score"][i]),
                "crop_box": [cx0, cy0, cx1 - cx0, cy1 - cy0],
            })
        return out

    def _generate_masks(self, img: Any, size: tuple[int, int]) -> _Records:
        crops, layers = generate_crop_boxes(size, self.crop_n_layers, self.crop_overlap_ratio)
        data = _Records()
        for crop, layer in zip(crops, layers):
            data.cat(self._process_crop(img, crop, layer, size))
        if len(crops) > 1 and len(data):
            # between crops, prefer masks from smaller crops
            scores = 1.0 / box_area(data["crop_boxes"].float())
            keep = batched_nms(data["boxes"].float(), scores.to(data["boxes"].device),
                               torch.zeros(len(data), device=data["boxes"].device), iou_threshold=self.crop_nms_thresh)
            data.filter(keep)
        return data

    def _process_crop(self, img: Any, crop: list[int], layer: int, orig: tuple[int, int]) -> _Records:
        x0, y0, x1, y1 = crop
        sub = img[y0:y1, x0:x1, :] if isinstance(img, np.ndarray) else img[:, y0:y1, x0:x1]
        sub_size = (y1 - y0, x1 - x0)
        self.predictor.set_image(sub)
        pts = self.point_grids[layer] * np.array(sub_size, dtype=np.float64)[None, ::-1]
        data = _Records()
        for sl in _batches(len(pts), self.points_per_batch):
            data.cat(self._process_batch(pts[sl], crop, orig))
        self.predictor.reset_image()
        if len(data) == 0:
            return data
        keep = batched_nms(data["boxes"].float(), data["iou_preds"].float(),
                           torch.zeros(len(data), device=data["boxes"].device), iou_threshold=self.box_nms_thresh)
        data.filter(keep)
        data["boxes"] = data["boxes"] + _offset(crop, data["boxes"].device)
        data["points"] = data["points"] + torch.tensor([[x0, y0]], dtype=data["points"].dtype)
        data["crop_boxes"] = torch.tensor([crop] * len(data), dtype=torch.long).reshape(-1, 4)
        return data

    def _process_batch(self, points: np.ndarray, crop: list[int], orig: tuple[int, int]) -> _Records:
        oh, ow = orig
        pred = self.predictor
        coords = pred.transform_coords(torch.from_numpy(points), dtype=torch.float64)[:, None, :]
        labels = torch.ones(coords.shape[:2], dtype=torch.int32)
        logits, iou, _ = pred.predict_torch(coords, labels, multimask_output=True, return_logits=True)
        c = logits.shape[1]
        data = _Records(masks=logits.flatten(0, 1), iou_preds=iou.flatten(0, 1).cpu(),
                        points=torch.from_numpy(np.repeat(points, c, axis=0)))
        del logits
        if self.pred_iou_thresh > 0.0:
            data.filter(data["iou_preds"] > self.pred_iou_thresh)
        data["stability_score"] = calculate_stability_score(data["masks"], pred.mask_threshold, self.stability_score_offset).cpu()
        if self.stability_score_thresh > 0.0:
            data.filter(data["stability_score"] >= self.stability_score_thresh)
        data["masks"] = data["masks"] > pred.mask_threshold
        data["boxes"] = batched_mask_to_box(data["masks"]).cpu()
        near = is_box_near_crop_edge(data["boxes"], crop, [0, 0, ow, oh])
        if near.any():
            data.filter(~near)
        masks = data["masks"]
        x0, y0, x1, y1 = crop
        if (x0, y0, x1, y1) != (0, 0, ow, oh):
            masks = torch.nn.functional.pad(masks, (x0, ow - x1, y0, oh - y1), value=False)
        data["rles"] = mask_to_rle(masks.cpu())
        del data.cols["masks"]
        return data

    @staticmethod
    def _remove_small_regions(data: _Records, min_area: int, nms_thresh: float) -> _Records:
        """Fill small holes, drop small islands, then NMS again preferring unchanged masks."""
        masks, scores = [], []
        for rle in data["rles"]:
            m = rle_to_mask(rle)
            m, ch1 = remove_small_regions(m, min_area, "holes")
            m, ch2 = remove_small_regions(m, min_area, "islands")
            masks.append(torch.from_numpy(np.ascontiguousarray(m)))
            scores.append(0.0 if (ch1 or ch2) else 1.0)
        stack = torch.stack(masks)
        boxes = batched_mask_to_box(stack)
        score_t = torch.tensor(scores)
        keep = batched_nms(boxes.float(), score_t, torch.zeros(len(boxes)), iou_threshold=nms_thresh)
        rles, bxs = list(data["rles"]), data["boxes"].clone()
        for i in keep.tolist():
            if scores[i] == 0.0:
                rles[i] = mask_to_rle(stack[i][None])[0]
                bxs[i] = boxes[i]
        data["rles"], data["boxes"] = rles, bxs
        data.filter(keep)
        return data
