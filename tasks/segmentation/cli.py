"""``zoo segment``: promptable segmentation of one image file.

    zoo segment IMAGE --model mobile_sam_vit_t --pretrained --point 320,240 [--point X,Y --label 0] \\
        [--box X0,Y0,X1,Y1] --out mask.png [--overlay overlay.png] [--json]
    zoo segment IMAGE --model mobile_sam_vit_t --pretrained --auto --out DIR [--points-per-side 32]

Prompt mode writes the best mask (by predicted IoU) as a 0/255 PNG and an overlay PNG (the image
with the mask tinted, points and box drawn; ``mask.overlay.png`` beside the mask by default).
``--auto`` runs :class:`~zoo.tasks.segmentation.amg.SamAutomaticMaskGenerator` and writes one PNG
per mask (largest first), ``overlay.png`` and ``masks.json`` (the records, with COCO RLE). Every
file is written atomically.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["add_segment_parser", "cmd_segment"]


def add_segment_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``segment`` sub-command to ``subparsers`` (an ``add_subparsers()`` result)."""
    s = subparsers.add_parser("segment", help="segment one image with a promptable model (points / box, or --auto)",
                              description="Segment one image with a SAM-family model: from points and/or a box, "
                                          "or everything with --auto.")
    s.add_argument("input", help="image file")
    s.add_argument("--model", required=True, help="a segmentation model, e.g. mobile_sam_vit_t (see `zoo list --task segmentation`)")
    s.add_argument("--checkpoint", help="weight file: the authors' (mobile_sam.pt, sam_vit_b_01ec64.pth), a zoo file or a `zoo train` .ckpt")
    s.add_argument("--pretrained", action="store_true", help="use the registry's published weights")
    s.add_argument("--point", action="append", default=[], metavar="X,Y", help="a point prompt in pixels (repeatable)")
    s.add_argument("--label", action="append", default=[], metavar="1|0",
                   help="label of each --point, in order: 1 foreground (default), 0 background")
    s.add_argument("--box", metavar="X0,Y0,X1,Y1", help="a box prompt in pixels")
    mm = s.add_mutually_exclusive_group()
    mm.add_argument("--multimask", dest="multimask", action="store_true", default=None,
                    help="predict three candidate masks and keep the best (default for a single point)")
    mm.add_argument("--single-mask", dest="multimask", action="store_false", help="predict one mask (default for several prompts)")
    s.add_argument("--auto", action="store_true", help="segment everything (automatic mask generation); --out is a folder")
    s.add_argument("--out", required=True, help="mask PNG (prompt mode) or output folder (--auto)")
    s.add_argument("--overlay", help="overlay PNG (default: OUT with .overlay.png; --auto: DIR/overlay.png)")
    s.add_argument("--points-per-side", type=int, default=32, help="--auto: grid of N x N point prompts")
    s.add_argument("--points-per-batch", type=int, default=64, help="--auto: prompts per decoder batch")
    s.add_argument("--pred-iou-thresh", type=float, default=0.88, help="--auto: minimum predicted IoU")
    s.add_argument("--stability-score-thresh", type=float, default=0.95, help="--auto: minimum stability score")
    s.add_argument("--box-nms-thresh", type=float, default=0.7, help="--auto: box IoU for duplicate removal")
    s.add_argument("--crop-n-layers", type=int, default=0, help="--auto: also run on 4, 16 ... crops")
    s.add_argument("--min-mask-region-area", type=int, default=0, help="--auto: fill holes / drop islands smaller than this")
    s.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(fn=cmd_segment)
    return s


def _floats(text: str, n: int, what: str) -> list[float]:
    parts = [t for t in str(text).replace(" ", "").split(",") if t != ""]
    try:
        vals = [float(t) for t in parts]
    except ValueError:
        vals = []
    if len(vals) != n or len(parts) != n:
        fmt = "X,Y" if n == 2 else "X0,Y0,X1,Y1"
        raise ValueError(f"{what} must look like {fmt} (numbers in pixels), got {text!r}")
    return vals


def _labels(labels: Sequence[str], n_points: int) -> list[int]:
    if not labels:
        return [1] * n_points
    if len(labels) != n_points:
        raise ValueError(f"give one --label per --point ({n_points} points, {len(labels)} labels), or none (all foreground)")
    out = []
    for v in labels:
        if str(v).strip() not in ("0", "1"):
            raise ValueError(f"--label must be 1 (foreground) or 0 (background), got {v!r}")
        out.append(int(str(v).strip()))
    return out


def _load_image(path: str):
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    try:
        with Image.open(p) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from None


def _load_model(a: argparse.Namespace):
    from zoo.tasks.cli import UsageError, load_eval_model

    import zoo

    if not a.model.startswith(("hf-hub:", "local-dir:")):
        entry = zoo.registry.get_entry(a.model)
        if entry.task != "segmentation":
            raise ValueError(f"{a.model} is not a segmentation model (see `zoo list --task segmentation`)")
    try:
        model = load_eval_model(a.model, checkpoint=a.checkpoint, pretrained=a.pretrained)
    except UsageError as e:
        raise ValueError(str(e)) from None
    if not hasattr(model, "predict_masks"):
        raise ValueError(f"{a.model} is not a promptable segmentation model")
    return model.eval().to(a.device)


def _save_png(arr, path: Path) -> None:
    from PIL import Image

    from zoo.hub import atomic_write

    with atomic_write(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")


_PALETTE = [(30, 144, 255), (255, 99, 71), (50, 205, 50), (255, 215, 0), (238, 130, 238), (0, 206, 209),
            (255, 140, 0), (147, 112, 219), (60, 179, 113), (220, 20, 60)]


def overlay_masks(image, masks: Sequence[Any], alpha: float = 0.5, points=None, labels=None, box=None):
    """HWC uint8 image with each (H, W) bool mask tinted in its own colour and outlined, the
    points (green foreground, red background) and the box drawn."""
    import numpy as np
    from PIL import Image, ImageDraw
    from scipy import ndimage

    out = image.astype(np.float32).copy()
    edges = np.zeros(image.shape[:2], dtype=bool)
    for i, m in enumerate(masks):
        m = np.asarray(m, dtype=bool)
        colour = np.array(_PALETTE[i % len(_PALETTE)], dtype=np.float32)
        out[m] = (1 - alpha) * out[m] + alpha * colour
        edges |= m & ~ndimage.binary_erosion(m, border_value=0)
    out[edges] = 255.0
    im = Image.fromarray(out.round().clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    r = max(2, round(max(image.shape[:2]) / 120))
    for (x, y), lab in zip(points or [], labels or []):
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(0, 200, 0) if lab == 1 else (220, 0, 0), outline=(255, 255, 255))
    if box is not None:
        draw.rectangle(list(box), outline=(0, 255, 0), width=max(1, r // 2))
    return np.asarray(im)


def _bbox(mask) -> list[int]:
    import numpy as np

    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return [0, 0, 0, 0]
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def _parse_prompts(a: argparse.Namespace) -> tuple[list[list[float]], list[int] | None, list[float] | None]:
    if a.auto:
        if a.point or a.box or a.label:
            raise ValueError("--auto segments everything: drop --point / --label / --box")
        return [], None, None
    if a.label and not a.point:
        raise ValueError("--label needs --point")
    points = [_floats(p, 2, "--point") for p in a.point]
    labels = _labels(a.label, len(points)) if points else None
    box = _floats(a.box, 4, "--box") if a.box else None
    if not points and box is None:
        raise ValueError("give at least one --point X,Y or a --box X0,Y0,X1,Y1 (or --auto)")
    return points, labels, box


def _prompt_mode(a: argparse.Namespace, model, image) -> dict[str, Any]:
    import numpy as np

    from .predictor import SamPredictor

    points, labels, box = _parse_prompts(a)
    multimask = a.multimask if a.multimask is not None else (len(points) == 1 and box is None)
    pred = SamPredictor(model)
    pred.set_image(image)
    masks, scores, _ = pred.predict(points=points or None, labels=labels, boxes=box, multimask_output=multimask)
    best = int(scores.argmax())
    mask = masks[best].cpu().numpy()
    out = Path(a.out)
    overlay = Path(a.overlay) if a.overlay else out.with_name(out.stem + ".overlay.png")
    _save_png((mask * 255).astype(np.uint8), out)
    _save_png(overlay_masks(image, [mask], points=points, labels=labels, box=box), overlay)
    return {
        "input": a.input, "model": a.model, "mode": "prompt", "out": str(out), "overlay": str(overlay),
        "size": [int(image.shape[0]), int(image.shape[1])], "points": points, "labels": labels, "box": box,
        "multimask": bool(multimask), "score": float(scores[best]), "scores": [float(s) for s in scores],
        "area": int(mask.sum()), "bbox": _bbox(mask),
    }


def _auto_mode(a: argparse.Namespace, model, image) -> dict[str, Any]:
    import numpy as np

    from zoo.hub import atomic_write

    from .amg import SamAutomaticMaskGenerator, rle_to_coco, rle_to_mask

    gen = SamAutomaticMaskGenerator(
        model, points_per_side=a.points_per_side, points_per_batch=a.points_per_batch, pred_iou_thresh=a.pred_iou_thresh,
        stability_score_thresh=a.stability_score_thresh, box_nms_thresh=a.box_nms_thresh, crop_n_layers=a.crop_n_layers,
        min_mask_region_area=a.min_mask_region_area, output_mode="uncompressed_rle",
    )
    records = sorted(gen.generate(image), key=lambda r: -r["area"])
    out = Path(a.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; with --auto it must be a folder")
    out.mkdir(parents=True, exist_ok=True)
    masks, entries = [], []
    for i, r in enumerate(records):
        m = rle_to_mask(r["segmentation"])
        masks.append(m)
        name = f"mask_{i:03d}.png"
        _save_png((m * 255).astype(np.uint8), out / name)
        entries.append({"file": name, "segmentation": rle_to_coco(r["segmentation"]),
                        **{k: r[k] for k in ("area", "bbox", "predicted_iou", "stability_score", "point_coords", "crop_box")}})
    overlay = Path(a.overlay) if a.overlay else out / "overlay.png"
    _save_png(overlay_masks(image, masks), overlay)
    doc = {"image": a.input, "model": a.model, "size": [int(image.shape[0]), int(image.shape[1])],
           "settings": {k: getattr(a, k) for k in ("points_per_side", "pred_iou_thresh", "stability_score_thresh",
                                                    "box_nms_thresh", "crop_n_layers", "min_mask_region_area")},
           "masks": entries}
    with atomic_write(out / "masks.json") as tmp:
        tmp.write_text(json.dumps(doc, indent=1))
    return {"input": a.input, "model": a.model, "mode": "auto", "out": str(out), "overlay": str(overlay),
            "json": str(out / "masks.json"), "size": doc["size"], "num_masks": len(entries),
            "areas": [e["area"] for e in entries]}


def cmd_segment(a: argparse.Namespace) -> int:
    """Run ``zoo segment``; bad arguments raise ValueError (the CLI prints one line, exit 2)."""
    import torch

    _parse_prompts(a)  # bad prompts fail before the model loads
    if a.auto and Path(a.out).suffix.lower() == ".png":
        raise ValueError("with --auto, --out is a folder (one PNG per mask + masks.json), not a .png file")
    for k in ("points_per_side", "points_per_batch"):
        if getattr(a, k) < 1:
            raise ValueError(f"--{k.replace('_', '-')} must be >= 1, got {getattr(a, k)}")
    image = _load_image(a.input)
    model = _load_model(a)
    with torch.inference_mode():
        res = _auto_mode(a, model, image) if a.auto else _prompt_mode(a, model, image)
    if a.json:
        print(json.dumps(res))
    elif a.auto:
        print(f"wrote {res['num_masks']} masks to {res['out']} (masks.json, overlay {res['overlay']})")
    else:
        print(f"wrote {res['out']} (area {res['area']} px, predicted IoU {res['score']:.3f}) and {res['overlay']}")
    return 0
