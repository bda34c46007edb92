"""Promptable segmentation with a SAM-family model: compute the image embedding once, then
predict masks for any number of point / box / mask prompts.

The design (and every numerical convention: the long-side resize through PIL, the coordinate
scaling, padding bottom/right, the mask post-processing) follows ``SamPredictor`` and
``ResizeLongestSide`` of segment-anything (https://github.com/facebookresearch/segment-anything,
Apache-2.0), so that the same weights give the same masks as the authors' predictor.

The model is any :class:`zoo.models.mobile_sam.Sam`-like module: ``model(images)`` maps (B, 3, H, W)
RGB in [0, 1] with ``max(H, W) <= model.img_size`` to image embeddings; ``model.predict_masks``
takes prompts in the resized (model input) frame; ``model.postprocess_masks`` brings low-resolution
logits back to the original image size.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["SamPredictor", "image_to_tensor", "preprocess_shape", "resize_longest_side"]


def preprocess_shape(h: int, w: int, long_side: int) -> tuple[int, int]:
    """(H, W) after scaling the longer side to ``long_side`` (SAM's rounding: ``int(x + 0.5)``)."""
    scale = long_side * 1.0 / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def _as_uint8_hwc(image: Any) -> np.ndarray | None:
    """A PIL image or HWC uint8 array as an HWC uint8 RGB array; None for a float tensor."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(
                f"expected an HWC uint8 image (values 0-255) or a CHW floating-point tensor in [0, 1], "
                f"got a numpy array of dtype {image.dtype}")
        if image.ndim != 3:
            raise ValueError(f"expected an HWC uint8 image with 3 channels, got shape {tuple(image.shape)}")
        if image.shape[-1] != 3:
            raise ValueError(f"expected 3 channels (HWC RGB), got shape {tuple(image.shape)}")
        if image.shape[0] < 1 or image.shape[1] < 1:
            raise ValueError(f"empty image of shape {tuple(image.shape)}")
        return np.ascontiguousarray(image)
    if isinstance(image, torch.Tensor):
        if image.dtype == torch.uint8:
            if image.ndim == 4 and image.shape[0] == 1:
                image = image[0]
            if image.ndim != 3 or image.shape[0] != 3:
                raise ValueError(f"expected a uint8 tensor of shape (3, H, W) with 3 channels, got {tuple(image.shape)}")
            return np.ascontiguousarray(image.permute(1, 2, 0).cpu().numpy())
        return None
    raise ValueError(f"expected a PIL image, an HWC uint8 numpy array or a CHW float tensor, got {type(image).__name__}")


def resize_longest_side(image: np.ndarray, long_side: int) -> np.ndarray:
    """HWC uint8 -> HWC uint8 with the longer side ``long_side``: PIL bilinear, as SAM's ``apply_image``."""
    from PIL import Image

    h, w = image.shape[:2]
    nh, nw = preprocess_shape(h, w, long_side)
    if (nh, nw) == (h, w):
        return image
    return np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))


def image_to_tensor(image: Any, long_side: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Any accepted image -> ((1, 3, h, w) float in [0, 1] with ``max(h, w) == long_side``, original (H, W)).

    uint8 images go through PIL's bilinear resize exactly as segment-anything does; float tensors
    (CHW or 1x3xHxW in [0, 1]) through ``F.interpolate(bilinear, antialias=True)``, SAM's
    ``apply_image_torch``.
    """
    arr = _as_uint8_hwc(image)
    if arr is not None:
        orig = (int(arr.shape[0]), int(arr.shape[1]))
        x = torch.from_numpy(np.array(resize_longest_side(arr, long_side))).permute(2, 0, 1)[None]
        return x.float().div(255.0), orig
    t: torch.Tensor = image
    if not t.is_floating_point():
        raise ValueError(f"expected a floating-point CHW tensor in [0, 1] or a uint8 image, got dtype {t.dtype}")
    if t.ndim == 4:
        if t.shape[0] != 1:
            raise ValueError(f"set_image takes one image, got a batch of {t.shape[0]}")
        t = t[0]
    if t.ndim != 3:
        raise ValueError(f"expected a 3-D (3, H, W) image tensor, got shape {tuple(t.shape)}")
    if t.shape[0] != 3:
        raise ValueError(f"expected 3 channels (CHW RGB), got shape {tuple(t.shape)}")
    if t.shape[1] < 1 or t.shape[2] < 1:
        raise ValueError(f"empty image of shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError("image contains NaN or inf values")
    lo, hi = float(t.min()), float(t.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"expected values in [0, 1] for a float image, got [{lo:.4g}, {hi:.4g}]")
    orig = (int(t.shape[1]), int(t.shape[2]))
    nh, nw = preprocess_shape(orig[0], orig[1], long_side)
    x = t[None].float()
    if (nh, nw) != orig:
        x = F.interpolate(x, (nh, nw), mode="bilinear", align_corners=False, antialias=True).clamp_(0, 1)
    return x, orig


def _to_tensor(x: Any, what: str, dtype: torch.dtype) -> torch.Tensor:
    try:
        t = torch.as_tensor(np.asarray(x) if isinstance(x, (list, tuple)) else x)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what} must be an array of numbers: {e}") from None
    if t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"{what} must be numeric, got {t.dtype}")
    t = t.to(dtype)
    if t.is_floating_point() and not torch.isfinite(t).all():
        raise ValueError(f"{what} contains NaN or inf")
    return t


class SamPredictor:
    """SAM's predictor API on a zoo segmentation model.

    >>> pred = SamPredictor(zoo.create("mobile_sam_vit_t", pretrained=True).eval())
    >>> pred.set_image(np.asarray(Image.open("dog.jpg").convert("RGB")))
    >>> masks, scores, logits = pred.predict(points=[[500, 375]], labels=[1])
    >>> masks.shape            # (3, H, W) bool at the original image size
    >>> masks, scores, _ = pred.predict(boxes=[[10, 20, 300, 400], [50, 60, 80, 90]])  # (2, 3, H, W)

    Coordinates are pixels of the original image, (x, y); labels are 1 (foreground), 0
    (background), -1 (padding, ignored), 2 / 3 (top-left / bottom-right box corner).
    """

    def __init__(self, model: torch.nn.Module) -> None:
        for attr in ("img_size", "predict_masks", "postprocess_masks"):
            if not hasattr(model, attr):
                raise ValueError(f"SamPredictor needs a SAM-family model with `{attr}`, got {type(model).__name__}")
        self.model = model
        self.img_size = int(model.img_size)
        self.mask_threshold = float(getattr(model, "mask_threshold", 0.0))
        self.reset_image()

    # ------------------------------------------------------------------ image
    @property
    def device(self) -> torch.device:
        p = next(self.model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    @property
    def _dtype(self) -> torch.dtype:
        p = next(self.model.parameters(), None)
        return p.dtype if p is not None and p.is_floating_point() else torch.float32

    @property
    def is_image_set(self) -> bool:
        return self.features is not None

    def reset_image(self) -> None:
        """Forget the current image and its embedding."""
        self.features: torch.Tensor | None = None
        self.original_size: tuple[int, int] | None = None
        self.input_size: tuple[int, int] | None = None

    @torch.no_grad()
    def set_image(self, image: Any, image_format: str = "RGB") -> SamPredictor:
        """Compute the image embedding of ``image``, reused by every later :meth:`predict`.

        ``image``: HWC uint8 RGB (numpy or PIL, any size), or a CHW float tensor in [0, 1].
        ``image_format="BGR"`` flips the channels of an HWC array first (OpenCV-loaded images).
        """
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        if image_format == "BGR":
            if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[-1] == 3):
                raise ValueError("image_format='BGR' needs an HWC array with 3 channels")
            image = np.ascontiguousarray(image[..., ::-1])
        x, orig = image_to_tensor(image, self.img_size)
        self.set_torch_image(x, orig)
        return self

    @torch.no_grad()
    def set_torch_image(self, transformed: torch.Tensor, original_size: tuple[int, int]) -> None:
        """Set an image already resized on the long side to ``img_size`` ((1, 3, h, w), [0, 1])."""
        if transformed.ndim != 4 or transformed.shape[0] != 1 or transformed.shape[1] != 3:
            raise ValueError(f"expected a (1, 3, h, w) tensor, got shape {tuple(transformed.shape)}")
        if max(transformed.shape[-2:]) != self.img_size:
            raise ValueError(f"expected the longer side to be resized to {self.img_size}, got {tuple(transformed.shape[-2:])}")
        self.reset_image()
        feats = self.model(transformed.to(self.device, self._dtype))
        if isinstance(feats, (tuple, list)):
            feats = feats[0]
        self.features = feats
        self.original_size = (int(original_size[0]), int(original_size[1]))
        self.input_size = (int(transformed.shape[-2]), int(transformed.shape[-1]))

    def get_image_embedding(self) -> torch.Tensor:
        """The current image's embedding, (1, C, h, w)."""
        self._require_image("get_image_embedding")
        return self.features  # type: ignore[return-value]

    def _require_image(self, what: str) -> None:
        if self.features is None:
            raise ValueError(f"no image set: call set_image(image) before {what}()")

    # -------------------------------------------------------------- prompts
    def transform_coords(self, coords: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Original-image (x, y) pixels -> the model-input frame (SAM's ``apply_coords``, computed
        in float64, returned as ``dtype``)."""
        self._require_image("transform_coords")
        assert self.original_size is not None and self.input_size is not None
        (oh, ow), (nh, nw) = self.original_size, self.input_size
        c = torch.as_tensor(coords).detach().to("cpu", torch.float64).clone()
        c[..., 0] = c[..., 0] * (nw / ow)
        c[..., 1] = c[..., 1] * (nh / oh)
        return c.to(dtype)

    def transform_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        return self.transform_coords(boxes.reshape(-1, 2, 2)).reshape(-1, 4)

    def _check_points(self, points: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor, bool]:
        pts = _to_tensor(points, "points", torch.float64)
        batched = pts.ndim == 3
        if pts.ndim == 1 and pts.numel() == 2:
            pts = pts[None]
        if pts.ndim not in (2, 3) or pts.shape[-1] != 2 or pts.shape[-2] < 1:
            raise ValueError(f"points must be (N, 2) or (B, N, 2) (x, y) pixel coordinates, got shape {tuple(pts.shape)}")
        if labels is None:
            lab = torch.ones(pts.shape[:-1], dtype=torch.int64)
        else:
            lab = _to_tensor(labels, "labels", torch.float64)
            if lab.ndim == 0:
                lab = lab[None]
            if tuple(lab.shape) != tuple(pts.shape[:-1]):
                raise ValueError(f"labels must have shape {tuple(pts.shape[:-1])} (one per point), got {tuple(lab.shape)}")
            if not torch.all(lab == lab.round()) or not torch.isin(lab, torch.tensor([-1.0, 0.0, 1.0, 2.0, 3.0])).all():
                raise ValueError("labels must be 1 (foreground), 0 (background), -1 (padding) or 2 / 3 (box corners)")
            lab = lab.long()
        assert self.original_size is not None
        h, w = self.original_size
        real = lab != -1
        x, y = pts[..., 0], pts[..., 1]
        outside = real & ((x < 0) | (x > w) | (y < 0) | (y > h))
        if outside.any():
            bad = pts[outside][0].tolist()
            raise ValueError(f"point ({bad[0]:g}, {bad[1]:g}) is outside the image (width {w}, height {h}); "
                             f"points are (x, y) pixels with 0 <= x <= {w}, 0 <= y <= {h}")
        if not batched:
            pts, lab = pts[None], lab[None]
        return pts, lab, batched

    def _check_boxes(self, boxes: Any) -> tuple[torch.Tensor, bool]:
        b = _to_tensor(boxes, "boxes", torch.float64)
        batched = b.ndim == 2
        if b.ndim == 1:
            b = b[None]
        if b.ndim != 2 or b.shape[-1] != 4 or b.shape[0] < 1:
            raise ValueError(f"boxes must be (4,) or (B, 4) as x0, y0, x1, y1 pixels, got shape {tuple(b.shape)}")
        bad = (b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])
        if bad.any():
            x0, y0, x1, y1 = b[bad][0].tolist()
            raise ValueError(f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) has x1 < x0 or y1 < y0; boxes are x0, y0, x1, y1 "
                             "with x0 <= x1 and y0 <= y1")
        assert self.original_size is not None
        h, w = self.original_size
        away = (b[:, 2] < 0) | (b[:, 3] < 0) | (b[:, 0] > w) | (b[:, 1] > h)
        if away.any():
            x0, y0, x1, y1 = b[away][0].tolist()
            raise ValueError(f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies outside the image (width {w}, height {h})")
        return b, batched

    def _mask_input_size(self) -> tuple[int, int]:
        pe = getattr(self.model, "prompt_encoder", None)
        size = getattr(pe, "mask_input_size", None)
        if size is not None:
            return int(size[0]), int(size[1])
        assert self.features is not None
        return 4 * int(self.features.shape[-2]), 4 * int(self.features.shape[-1])

    def _check_mask_input(self, mask_input: Any) -> tuple[torch.Tensor, bool]:
        m = _to_tensor(mask_input, "mask_input", torch.float32)
        mh, mw = self._mask_input_size()
        if m.ndim == 2:
            m = m[None]
        batched = m.ndim == 4
        if not batched:
            m = m[None]
        if m.ndim != 4 or m.shape[1] != 1 or tuple(m.shape[-2:]) != (mh, mw):
            raise ValueError(f"mask_input must be ({mh}, {mw}), (1, {mh}, {mw}) or (B, 1, {mh}, {mw}) low-res logits "
                             f"(e.g. a previous prediction's low_res_logits[i:i+1]), got shape {tuple(mask_input.shape) if hasattr(mask_input, 'shape') else '?'}")
        return m, batched

    # ------------------------------------------------------------- predict
    @torch.no_grad()
    def predict(
        self,
        points: Any = None,
        labels: Any = None,
        boxes: Any = None,
        mask_input: Any = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Masks for one prompt (or a batch of prompts) on the current image.

        points (N, 2) / (B, N, 2) (x, y) pixels with labels (N,) / (B, N) (default: all 1);
        boxes (4,) / (B, 4) x0, y0, x1, y1; mask_input (1, 256, 256) / (B, 1, 256, 256) logits.
        Returns ``(masks, scores, low_res_logits)``: masks (C, H, W) bool at the original size
        (float logits with ``return_logits=True``), scores (C,) predicted IoU, low-res logits
        (C, 256, 256); with batched prompts a leading B. C is 3 with ``multimask_output`` else 1.
        """
        self._require_image("predict")
        if labels is not None and points is None:
            raise ValueError("labels given without points")
        if points is None and boxes is None and mask_input is None:
            raise ValueError("no prompt: give points (with labels), boxes and/or mask_input")
        batched, sizes = False, []
        pts = lab = bxs = msk = None
        if points is not None:
            pts, lab, b = self._check_points(points, labels)
            batched |= b
            sizes.append(pts.shape[0])
            pts = self.transform_coords(pts)
        if boxes is not None:
            bxs, b = self._check_boxes(boxes)
            batched |= b
            sizes.append(bxs.shape[0])
            bxs = self.transform_boxes(bxs)
        if mask_input is not None:
            msk, b = self._check_mask_input(mask_input)
            batched |= b
            sizes.append(msk.shape[0])
        if len(set(sizes)) > 1:
            raise ValueError(f"batched prompts must agree on the batch size, got {sizes} (points, boxes, mask_input)")
        masks, scores, low = self.predict_torch(pts, lab, bxs, msk, multimask_output, return_logits)
        if not batched:
            return masks[0], scores[0], low[0]
        return masks, scores, low

    @torch.no_grad()
    def predict_torch(
        self,
        point_coords: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batched prompts already in the model-input frame (B, N, 2) / (B, 4) / (B, 1, 256, 256),
        no checks; returns (B, C, H, W) masks, (B, C) scores, (B, C, 256, 256) logits."""
        self._require_image("predict_torch")
        dev = self.device
        kw = {}
        if point_coords is not None:
            # float64 coordinates stay float64 (the model adds the half-pixel offset and scales
            # them before its own cast, as segment-anything's automatic mask generator does)
            kw["point_coords"] = point_coords.to(dev, point_coords.dtype if point_coords.is_floating_point() else torch.float32)
            kw["point_labels"] = point_labels.to(dev, torch.int32) if point_labels is not None else \
                torch.ones(point_coords.shape[:-1], dtype=torch.int32, device=dev)
        if boxes is not None:
            kw["boxes"] = boxes.to(dev, torch.float32)
        if mask_input is not None:
            kw["mask_inputs"] = mask_input.to(dev, torch.float32)
        low, iou = self.model.predict_masks(self.features, multimask_output=multimask_output, **kw)
        assert self.input_size is not None and self.original_size is not None
        masks = self.model.postprocess_masks(low, self.input_size, self.original_size)
        if not return_logits:
            masks = masks > self.mask_threshold
        return masks, iou, low
