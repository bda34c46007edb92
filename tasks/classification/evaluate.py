"""Top-1 / top-5 accuracy of a classification model on a folder of class folders (or CIFAR's test
split), with the model's own evaluation preprocessing."""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from zoo.progress import track

from .data import (
    DATASETS,
    build_eval_transform,
    eval_folder,
    open_cifar,
    open_image_folder,
    resolve_eval_data_cfg,
)
from .metrics import topk_correct

__all__ = ["evaluate_classification", "model_num_classes"]


def model_num_classes(model: torch.nn.Module) -> int | None:
    """The model's number of output classes (``num_classes``, else its classifier's outputs)."""
    n = getattr(model, "num_classes", None)
    if isinstance(n, int) and n > 0:
        return n
    get = getattr(model, "get_classifier", None)
    head = get() if callable(get) else None
    out = getattr(head, "out_features", None)
    return int(out) if isinstance(out, int) else None


def _check_classes(model: torch.nn.Module, classes: list[str], where: str) -> None:
    n = model_num_classes(model)
    listing = ", ".join(classes[:5]) + (" ..." if len(classes) > 5 else "")
    if n is not None and n != len(classes):
        raise ValueError(f"{where} has {len(classes)} classes ({listing}) but the model predicts {n} classes")
    names = (getattr(model, "pretrained_cfg", None) or {}).get("label_names")
    if names and list(names) != list(classes):
        if sorted(names) == sorted(classes):
            raise ValueError(f"{where}: the class folders sort differently from the model's classes ({', '.join(names[:5])} ...)")
        unknown = sorted(set(classes) - set(names))
        raise ValueError(
            f"{where}: class folders ({listing}) are not the model's classes; unknown to the model: {', '.join(unknown[:5]) or 'none'}"
        )


@torch.no_grad()
def evaluate_classification(
    model: torch.nn.Module,
    data_root: str | os.PathLike,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    image_size: int | None = None,
    crop_pct: float | None = None,
    dataset: str = "folder",
) -> dict:
    """Top-1 / top-5 accuracy and mean cross-entropy of ``model`` on ``data_root``.

    The images go through the model's own evaluation transform (timm's ``resolve_data_config`` on
    ``model.pretrained_cfg``: resize to ``size / crop_pct``, centre crop, mean / std), so a result
    is comparable with the card's. The class folders (sorted names, as torchvision's
    ``ImageFolder``) must be as many as the model's classes, and the model's own class names where
    its checkpoint records them. The model is put in eval mode (its mode is restored afterwards).

    Args:
        model: a classification model (``forward(images) -> logits``).
        data_root: a folder of class folders, or a folder with ``train/`` and ``val/`` (``val/`` is
            used); for CIFAR, the folder holding torchvision's CIFAR files (the test split is used).
        batch_size: images per forward pass.
        device: torch device to run on.
        num_workers: DataLoader worker processes.
        image_size: evaluate at this size instead of the model's.
        crop_pct: centre-crop fraction instead of the model's.
        dataset: ``folder``, ``cifar10`` or ``cifar100``.

    Returns:
        ``top1`` and ``top5`` (fractions; with fewer than 5 classes top-5 counts all of them),
        ``loss`` (mean cross-entropy), ``num_images`` (also ``images``), ``num_classes``,
        ``throughput`` (images per second of model time), ``seconds`` (the whole run),
        ``data_cfg`` (the preprocessing used), ``model``, ``data``.
    """
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    data_cfg = resolve_eval_data_cfg(model, image_size=image_size, crop_pct=crop_pct)
    transform = build_eval_transform(data_cfg)
    if dataset == "folder":
        folder = eval_folder(data_root)
        ds = open_image_folder(folder, transform)
    else:
        folder = Path(data_root)
        ds = open_cifar(dataset, folder, train=False, transform=transform)
    classes = list(ds.classes)
    if len(ds) == 0:
        raise FileNotFoundError(f"no images under {folder}")
    _check_classes(model, classes, str(folder))

    device = torch.device(device)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=device.type == "cuda")
    was_training = model.training
    model.eval().to(device)
    n = correct1 = correct5 = 0
    loss_sum = 0.0
    model_seconds = 0.0
    start = time.perf_counter()
    try:
        for x, y in track(loader, f"eval on {os.fspath(folder)}", total=len(loader)):
            x, y = x.to(device, non_blocking=True), y.to(device)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            logits = model(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            model_seconds += time.perf_counter() - t0
            logits = logits.float()
            if logits.ndim != 2 or logits.shape[1] != len(classes):
                raise ValueError(f"model output {tuple(logits.shape)} is not (batch, {len(classes)}) logits")
            top1, top5 = topk_correct(logits, y, (1, 5))
            correct1 += int(top1.sum())
            correct5 += int(top5.sum())
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            n += int(y.shape[0])
    finally:
        model.train(was_training)
    return {
        "model": getattr(model, "zoo_name", type(model).__name__),
        "data": os.fspath(folder),
        "num_images": n,
        "images": n,
        "num_classes": len(classes),
        "top1": correct1 / n,
        "top5": correct5 / n,
        "loss": loss_sum / n,
        "throughput": n / model_seconds if model_seconds > 0 else float("inf"),
        "seconds": round(time.perf_counter() - start, 3),
        "data_cfg": {k: (list(v) if isinstance(v, tuple) else v) for k, v in data_cfg.items()},
    }
