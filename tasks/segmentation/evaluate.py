"""Promptable-segmentation evaluation: mIoU against reference instance masks, and agreement with a teacher.

For every reference instance of every image (:func:`~zoo.tasks.segmentation.data.read_instance_dataset`:
COCO-format annotations, per-instance PNG masks or SA-1B files) the model is prompted three
ways, with prompts derived from the reference mask alone (so every model gets the same ones):

- ``point``: one foreground point at the mask's centre-most pixel (the maximum of the Euclidean
  distance transform of the mask, the image border counting as background; SAM's and RITM's
  first click). SAM answers a single point with 3 masks; the one with the highest predicted IoU
  is scored (SAM's protocol); ``point_oracle`` scores the best of the 3 against the reference;
- ``points``: ``num_points`` foreground points: the first as above, each next one the mask pixel
  that maximises min(distance to the boundary, distance to the points so far) -- spread over the
  object, away from its edges; one mask (``multimask_output=False``);
- ``box``: the mask's tight box ``x0, y0, x1, y1`` (first / last foreground column and row, SAM's
  ``batched_mask_to_box`` convention); one mask.

``miou_*`` is the mean over all instances of the IoU with the reference mask
(:mod:`zoo.tasks.segmentation.metrics`). With a ``teacher`` (MobileSAM's measure of how well the
distilled model agrees with SAM), the teacher is given the same prompts and ``agreement_*`` is the
mean IoU between the model's and the teacher's masks; ``teacher_miou_*`` is the teacher's own score.
Ties in the distance maxima go to the first pixel in row-major order.

The model is a SAM-family network (wrapped in :class:`~zoo.tasks.segmentation.predictor.SamPredictor`,
which resizes and pads each image as SAM does and returns masks at the original size) or any
object with the predictor's ``set_image`` / ``predict``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from ..base import TaskConfigError
from .data import read_instance_dataset
from .metrics import mask_iou, mean_iou

__all__ = ["PROMPTS", "as_predictor", "center_points", "evaluate_segmentation", "instance_prompts", "mask_box"]

PROMPTS = ("point", "points", "box")


def center_points(mask: np.ndarray, k: int = 1) -> np.ndarray:
    """``k`` (x, y) points inside ``mask`` (H, W): the distance-transform maximum, then the
    pixels farthest from both the boundary and the points so far (see the module docstring)."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise ValueError("cannot place a point in an empty mask")
    dist = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    score = np.where(mask, dist, -1.0)
    rows, cols = np.indices(mask.shape)
    points = []
    for _ in range(k):
        idx = int(np.argmax(score))
        y, x = divmod(idx, mask.shape[1])
        points.append((float(x), float(y)))
        away = np.hypot(rows - y, cols - x)
        score = np.where(mask, np.minimum(score, away), -1.0)
    return np.asarray(points, dtype=np.float64)


def mask_box(mask: np.ndarray) -> np.ndarray:
    """The tight box ``(x0, y0, x1, y1)`` of a non-empty mask, last column / row included."""
    rows, cols = np.nonzero(np.asarray(mask, dtype=bool))
    if rows.size == 0:
        raise ValueError("an empty mask has no box")
    return np.asarray([cols.min(), rows.min(), cols.max(), rows.max()], dtype=np.float64)


def instance_prompts(masks: np.ndarray, num_points: int = 3) -> dict[str, np.ndarray]:
    """The prompts for N masks (N, H, W): ``point`` (N, 1, 2), ``points`` (N, num_points, 2), ``box`` (N, 4)."""
    pts = [center_points(m, max(1, num_points)) for m in masks]
    return {
        "point": np.stack([p[:1] for p in pts]),
        "points": np.stack([p[:num_points] for p in pts]),
        "box": np.stack([mask_box(m) for m in masks]),
    }


def as_predictor(model: Any, device: torch.device | str | None = None) -> Any:
    """A predictor for ``model``: itself if it has ``set_image`` / ``predict``, else a
    :class:`SamPredictor` on the model (in eval mode, on ``device``)."""
    if hasattr(model, "set_image") and hasattr(model, "predict"):
        return model
    if not hasattr(model, "predict_masks"):
        raise TaskConfigError(f"{type(model).__name__} is not a promptable segmentation model (no predict_masks)")
    from .predictor import SamPredictor

    model.eval()
    if device is not None:
        model.to(device)
    return SamPredictor(model)


def _predict(predictor: Any, prompts: dict[str, np.ndarray], chunk: int) -> dict[str, torch.Tensor]:
    """Masks (N, H, W) for each prompt kind, and the 3 single-point candidates (N, 3, H, W)."""
    out: dict[str, list[torch.Tensor]] = {"point": [], "point_candidates": [], "points": [], "box": []}
    n = len(prompts["box"])
    for s in range(0, n, chunk):
        sl = slice(s, min(n, s + chunk))
        p1 = torch.from_numpy(prompts["point"][sl])
        masks, scores, _ = predictor.predict(points=p1, labels=torch.ones(p1.shape[:2], dtype=torch.int64), multimask_output=True)
        masks, scores = torch.as_tensor(masks).bool().cpu(), torch.as_tensor(scores).float().cpu()
        out["point"].append(masks[torch.arange(masks.shape[0]), scores.argmax(1)])
        out["point_candidates"].append(masks)
        pk = torch.from_numpy(prompts["points"][sl])
        masks, _, _ = predictor.predict(points=pk, labels=torch.ones(pk.shape[:2], dtype=torch.int64), multimask_output=False)
        out["points"].append(torch.as_tensor(masks).bool().cpu()[:, 0])
        masks, _, _ = predictor.predict(boxes=torch.from_numpy(prompts["box"][sl]), multimask_output=False)
        out["box"].append(torch.as_tensor(masks).bool().cpu()[:, 0])
    return {k: torch.cat(v) for k, v in out.items()}


def _parse_args(text: str | dict | None) -> dict[str, Any]:
    if text is None or isinstance(text, dict):
        return dict(text or {})
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"teacher_args must be a YAML / JSON mapping: {e}") from None
    if not isinstance(value, dict):
        raise ValueError(f"teacher_args must be a YAML / JSON mapping, got {text!r}")
    return value


def _build_teacher(teacher: Any, checkpoint: str | None, pretrained: bool, args: str | dict | None) -> tuple[Any, str]:
    if not isinstance(teacher, str):
        name = (getattr(teacher, "pretrained_cfg", None) or {}).get("architecture", type(teacher).__name__)
        return teacher, name
    kwargs = _parse_args(args)
    if kwargs:
        import zoo

        return zoo.create(teacher, pretrained=pretrained, checkpoint_path=checkpoint, **kwargs), teacher
    from ..cli import load_eval_model

    return load_eval_model(teacher, checkpoint, pretrained), teacher


def evaluate_segmentation(
    model: Any,
    data_root: str,
    teacher: str | None = None,
    teacher_checkpoint: str | None = None,
    teacher_pretrained: bool = False,
    teacher_args: str | None = None,
    num_points: int = 3,
    max_images: int | None = None,
    max_instances: int | None = None,
    chunk: int = 32,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """mIoU of ``model`` for one-point, multi-point and box prompts on an instance-mask folder.

    Args:
        model: a SAM-family model (or a predictor-like object, see the module docstring).
        data_root: COCO-format folder, per-instance PNG masks (images/ + masks/) or SA-1B files.
        teacher: registry name of a reference model (e.g. sam_vit_h): adds the agreement mIoU.
        teacher_checkpoint: the teacher's weights (an authors' file, a zoo file or a zoo train .ckpt).
        teacher_pretrained: use the teacher's registry weights.
        teacher_args: the teacher's constructor arguments as YAML / JSON, e.g. '{img_size: 256}'.
        num_points: foreground points of the multi-point prompt.
        max_images: score only the first N images.
        max_instances: score only the first N instances of each image.
        chunk: prompts per decoder call.
    """
    if num_points < 1:
        raise ValueError(f"num_points must be at least 1, got {num_points}")
    t0 = time.perf_counter()
    samples = read_instance_dataset(data_root, max_images)
    device = torch.device(device) if device is not None else None
    predictor = as_predictor(model, device)
    teacher_predictor, teacher_name = None, None
    if teacher is not None:
        t, teacher_name = _build_teacher(teacher, teacher_checkpoint, teacher_pretrained, teacher_args)
        teacher_predictor = as_predictor(t, device)

    from zoo.progress import track

    kinds = ["point", "point_oracle", "points", "box"]
    ious: dict[str, list[torch.Tensor]] = {k: [] for k in kinds}
    agree: dict[str, list[torch.Tensor]] = {k: [] for k in PROMPTS}
    t_ious: dict[str, list[torch.Tensor]] = {k: [] for k in PROMPTS}
    rows = []
    with torch.inference_mode():
        for sample in track(samples, "segmentation eval", total=len(samples)):
            masks = sample.load_masks()
            if max_instances:
                masks = masks[:max_instances]
            if len(masks) == 0:
                continue
            image = sample.load_image()
            if masks.shape[1:] != image.shape[:2]:
                raise ValueError(f"{sample.name}: masks of {masks.shape[1:]} for an image of {image.shape[:2]}")
            prompts = instance_prompts(masks, num_points)
            gt = torch.from_numpy(masks)
            predictor.set_image(image)
            pred = _predict(predictor, prompts, chunk)
            row: dict[str, Any] = {"image": sample.name, "instances": len(masks)}
            per = {
                "point": mask_iou(pred["point"], gt),
                "point_oracle": mask_iou(pred["point_candidates"], gt[:, None]).amax(1),
                "points": mask_iou(pred["points"], gt),
                "box": mask_iou(pred["box"], gt),
            }
            for k in kinds:
                ious[k].append(per[k])
                row[f"miou_{k}"] = float(per[k].mean())
            if teacher_predictor is not None:
                teacher_predictor.set_image(image)
                tpred = _predict(teacher_predictor, prompts, chunk)
                for k in PROMPTS:
                    a, ti = mask_iou(pred[k], tpred[k]), mask_iou(tpred[k], gt)
                    agree[k].append(a)
                    t_ious[k].append(ti)
                    row[f"agreement_{k}"] = float(a.mean())
            rows.append(row)
    if not rows:
        raise TaskConfigError(f"no instances to score under {data_root}")
    result: dict[str, Any] = {
        "model": (getattr(model, "pretrained_cfg", None) or {}).get("architecture", type(model).__name__),
        "data": str(data_root),
        "num_images": len(rows),
        "instances": int(sum(r["instances"] for r in rows)),
        "num_points": int(num_points),
    }
    for k in kinds:
        result[f"miou_{k}"] = mean_iou(torch.cat(ious[k]))
    if teacher_predictor is not None:
        result["teacher"] = teacher_name
        for k in PROMPTS:
            result[f"agreement_{k}"] = mean_iou(torch.cat(agree[k]))
        for k in PROMPTS:
            result[f"teacher_miou_{k}"] = mean_iou(torch.cat(t_ious[k]))
    result["seconds"] = time.perf_counter() - t0
    result["per_image"] = rows
    return result
