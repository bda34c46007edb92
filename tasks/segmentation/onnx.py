"""ONNX export of a SAM-family model's prompt encoder + mask decoder (SAM's standard decoder export).

The exported graph is the one segment-anything's ``scripts/export_onnx_model.py`` /
``SamOnnxModel`` defines (https://github.com/facebookresearch/segment-anything, Apache-2.0), so
tools written for SAM's ONNX decoder (the web demo, onnxruntime pipelines) run it unchanged:

inputs
  ``image_embeddings`` (1, 256, h, w) float32: the image encoder's output (``SamPredictor.get_image_embedding()``),
  ``point_coords`` (1, N, 2) float32: (x, y) in the model-input frame (``SamPredictor.transform_coords``),
  ``point_labels`` (1, N) float32: 1 foreground, 0 background, 2 / 3 box top-left / bottom-right, -1 padding
  (add a (0, 0) point with label -1 when there is no box, as SAM's predictor does),
  ``mask_input`` (1, 1, 4h, 4w) float32: previous low-res logits, ``has_mask_input`` (1,) float32: 1 to use them,
  ``orig_im_size`` (2,) float32: (H, W) of the original image;
  N is dynamic.
outputs
  ``masks`` (1, C, H, W) logits at the original size (threshold at ``model.mask_threshold``),
  ``iou_predictions`` (1, C), ``low_res_masks`` (1, C, 4h, 4w); C is all mask tokens (4: the
  single-mask output first, then the three multimask outputs), or 1 with ``return_single_mask``
  (SAM's selection: the single-mask token for more than 2 points, else the best multimask one).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ONNX_INPUT_NAMES", "ONNX_OUTPUT_NAMES", "SamOnnxDecoder", "check_sam_decoder_onnx", "decoder_example_inputs", "export_sam_decoder"]

ONNX_INPUT_NAMES = ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input", "orig_im_size")
ONNX_OUTPUT_NAMES = ("masks", "iou_predictions", "low_res_masks")


class SamOnnxDecoder(nn.Module):
    """Prompt encoder + mask decoder + mask post-processing with traceable prompt handling
    (no Python branching on the prompts: labels select embeddings arithmetically)."""

    def __init__(self, model: nn.Module, return_single_mask: bool = False) -> None:
        super().__init__()
        for attr in ("prompt_encoder", "mask_decoder", "img_size"):
            if not hasattr(model, attr):
                raise ValueError(f"export_sam_decoder needs a SAM-family model with `{attr}`, got {type(model).__name__}")
        self.prompt_encoder = model.prompt_encoder
        self.mask_decoder = model.mask_decoder
        self.img_size = int(model.img_size)
        self.return_single_mask = bool(return_single_mask)

    def _embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        pe = self.prompt_encoder
        coords = (coords + 0.5) / self.img_size
        emb = pe.pe_layer._pe_encoding(coords)
        labels = labels.unsqueeze(-1).expand_as(emb)
        emb = emb * (labels != -1) + pe.not_a_point_embed.weight * (labels == -1)
        for i in range(len(pe.point_embeddings)):
            emb = emb + pe.point_embeddings[i].weight * (labels == i)
        return emb

    def _embed_masks(self, mask_input: torch.Tensor, has_mask_input: torch.Tensor) -> torch.Tensor:
        pe = self.prompt_encoder
        dense = has_mask_input * pe.mask_downscaling(mask_input)
        return dense + (1 - has_mask_input) * pe.no_mask_embed.weight.reshape(1, -1, 1, 1)

    def _postprocess(self, masks: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
        masks = F.interpolate(masks, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False)
        size = orig_im_size.to(torch.float32)
        pre = torch.floor(size * (self.img_size / torch.max(size)) + 0.5).to(torch.int64)
        masks = masks[..., : pre[0], : pre[1]]
        hw = orig_im_size.to(torch.int64)
        return F.interpolate(masks, size=(hw[0], hw[1]), mode="bilinear", align_corners=False)

    def _select(self, masks: torch.Tensor, iou: torch.Tensor, num_points: int) -> tuple[torch.Tensor, torch.Tensor]:
        n_tok = iou.shape[1]
        reweight = torch.tensor([[1000] + [0] * (n_tok - 1)], device=iou.device, dtype=iou.dtype)
        best = torch.argmax(iou + (num_points - 2.5) * reweight, dim=1)
        rows = torch.arange(masks.shape[0], device=masks.device)
        return masks[rows, best].unsqueeze(1), iou[rows, best].unsqueeze(1)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        orig_im_size: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        sparse = self._embed_points(point_coords, point_labels)
        dense = self._embed_masks(mask_input, has_mask_input)
        low, iou = self.mask_decoder.predict_masks(image_embeddings, self.prompt_encoder.get_dense_pe(), sparse, dense)
        if self.return_single_mask:
            low, iou = self._select(low, iou, point_coords.shape[1])
        return self._postprocess(low, orig_im_size), iou, low


def decoder_example_inputs(model: nn.Module, num_points: int = 3, orig_size: Sequence[int] = (480, 640),
                           has_mask: bool = False, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random but valid decoder inputs (embeddings ~ N(0, 1), points inside the resized image,
    labels cycling 1, 0, 2, 3 with a final -1)."""
    g = torch.Generator().manual_seed(seed)
    h, w = (int(s) for s in model.image_embedding_size)
    s = int(model.img_size)
    mh, mw = 4 * h, 4 * w
    scale = s / max(orig_size)
    lim = torch.tensor([orig_size[1] * scale, orig_size[0] * scale])
    coords = torch.rand(1, num_points, 2, generator=g) * lim
    labels = torch.tensor([[1.0, 0.0, 2.0, 3.0][i % 4] for i in range(num_points)])[None]
    if num_points > 1:
        labels[0, -1] = -1.0
    return {
        "image_embeddings": torch.randn(1, int(model.embed_dim), h, w, generator=g),
        "point_coords": coords,
        "point_labels": labels,
        "mask_input": torch.randn(1, 1, mh, mw, generator=g) if has_mask else torch.zeros(1, 1, mh, mw),
        "has_mask_input": torch.tensor([1.0 if has_mask else 0.0]),
        "orig_im_size": torch.tensor([float(orig_size[0]), float(orig_size[1])]),
    }


def export_sam_decoder(
    model: nn.Module,
    path: str | os.PathLike,
    opset: int = 17,
    return_single_mask: bool = False,
    check: bool = True,
    check_points: Sequence[int] = (1, 3, 5),
) -> dict[str, Any]:
    """Write ``model``'s prompt encoder + mask decoder to ``path`` as SAM's ONNX decoder
    (atomically), then (``check``) run it with onnxruntime against PyTorch for each number of
    points in ``check_points``. Returns ``{"path", "opset", "inputs", "outputs", "max_abs_err":
    {n_points: {output: err}}}``."""
    from zoo.hub import atomic_write

    if opset < 11:
        raise ValueError(f"opset must be >= 11, got {opset}")
    cpu = model if next(model.parameters()).device.type == "cpu" else _cpu_copy(model)
    dec = SamOnnxDecoder(cpu, return_single_mask=return_single_mask).eval()
    example = decoder_example_inputs(cpu, num_points=5)
    dynamic_axes = {"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}}
    path = Path(path)
    with atomic_write(path) as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        with torch.no_grad():
            torch.onnx.export(
                dec,
                tuple(example[k] for k in ONNX_INPUT_NAMES),
                str(tmp),
                export_params=True,
                opset_version=opset,
                do_constant_folding=True,
                input_names=list(ONNX_INPUT_NAMES),
                output_names=list(ONNX_OUTPUT_NAMES),
                dynamic_axes=dynamic_axes,
                dynamo=False,
            )
    info: dict[str, Any] = {"path": str(path), "opset": opset, "return_single_mask": return_single_mask,
                            "inputs": list(ONNX_INPUT_NAMES), "outputs": list(ONNX_OUTPUT_NAMES)}
    if check:
        info["max_abs_err"] = check_sam_decoder_onnx(model, path, num_points=check_points, return_single_mask=return_single_mask)
    return info


def _cpu_copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).to("cpu").float()


def check_sam_decoder_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    num_points: Sequence[int] = (1, 3, 5),
    return_single_mask: bool = False,
    orig_size: Sequence[int] = (480, 640),
) -> dict[int, dict[str, float]]:
    """Max abs difference between onnxruntime and PyTorch on each output, per number of points
    (random embeddings and prompts; the mask prompt is used for every other case)."""
    import onnxruntime as ort

    cpu = model if next(model.parameters()).device.type == "cpu" else _cpu_copy(model)
    dec = SamOnnxDecoder(cpu, return_single_mask=return_single_mask).eval()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out: dict[int, dict[str, float]] = {}
    for i, n in enumerate(num_points):
        inp = decoder_example_inputs(cpu, num_points=int(n), orig_size=orig_size, has_mask=bool(i % 2), seed=i + 1)
        with torch.no_grad():
            ref = dec(*(inp[k] for k in ONNX_INPUT_NAMES))
        got = sess.run(list(ONNX_OUTPUT_NAMES), {k: v.numpy() for k, v in inp.items()})
        errs = {}
        for name, r, g in zip(ONNX_OUTPUT_NAMES, ref, got):
            if tuple(r.shape) != tuple(g.shape):
                raise ValueError(f"ONNX output {name} has shape {tuple(g.shape)}, PyTorch {tuple(r.shape)}")
            errs[name] = float(np.abs(r.numpy() - g).max())
        out[int(n)] = errs
    return out
