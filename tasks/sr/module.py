"""Super-resolution training: L1 loss (+ optional FFT / EFDN edge-gradient terms), Adam, step or
cosine schedule, PSNR-Y / SSIM-Y validation, and initialisation from a model of another scale."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F

from zoo.hub import CheckpointError, read_state_dict, unwrap_state_dict

from ..base import NET_PREFIX, TaskConfigError, ZooModule
from .losses import eg_loss
from .metrics import psnr_ssim_y, to_uint8_image

__all__ = ["UPSAMPLER_KEYS", "SRModule", "fft_l1_loss", "format_init_report", "init_from_checkpoint"]

# State-dict prefixes of the scale-dependent upsampler in the registry's SR families: ``tail.``
# (RCAN, HAN, EFDN), ``upsampler.`` (RLFN, RFDN, IMDN, SPAN), ``to_img.`` (SAFMN).
UPSAMPLER_KEYS = ("tail.", "upsampler.", "to_img.")


def fft_l1_loss(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """L1 between the 2-D FFTs (real and imaginary parts) of ``sr`` and ``hr``: SAFMN's FFTLoss."""
    a = torch.view_as_real(torch.fft.fft2(sr.float(), dim=(-2, -1)))
    b = torch.view_as_real(torch.fft.fft2(hr.float(), dim=(-2, -1)))
    return F.l1_loss(a, b)


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _listing(keys: Sequence[str], limit: int = 8) -> str:
    if not keys:
        return "none"
    more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _modules(keys: Sequence[str]) -> str:
    tops: list[str] = []
    for k in keys:
        top = k.split(".", 1)[0]
        if top not in tops:
            tops.append(top)
    return ", ".join(tops) or "none"


def init_from_checkpoint(
    net: torch.nn.Module,
    path: str | os.PathLike,
    strict: bool = True,
    upsampler: Literal["match", "new"] = "match",
    upsampler_keys: Sequence[str] = UPSAMPLER_KEYS,
) -> dict[str, Any]:
    """Initialise ``net`` from a weight file of the same architecture at another scale.

    The recipe of RCAN / HAN ("we use the x2 model as pre-trained network for x3, x4"): every
    tensor of the file whose name and shape match one of ``net`` is copied; the upsampler (keys
    starting with one of ``upsampler_keys``) may differ and keeps its fresh initialisation where
    it does. This is what the authors' non-strict loader does (yulunzhang/RCAN
    ``RCAN_TestCode/code/model/rcan.py``, ``RCAN.load_state_dict``: copy on a name match, skip a
    ``tail`` tensor whose shape differs, raise for any other); so from an RCAN x2 file an x4 model
    also takes the x2 ``tail.0.0`` (its first 2x upsampling conv, same shape) and ``tail.1``, and
    only ``tail.0.2`` stays new. ``upsampler="new"`` keeps the whole upsampler new instead.

    Outside the upsampler a shape mismatch is always an error. ``strict=True`` also refuses a
    model tensor the file lacks and a file tensor the model lacks (a file of another architecture
    or variant: a HAN file offered to RCAN, another width or depth); ``strict=False`` ignores
    those, but at least one tensor outside the upsampler must load.

    ``path`` is a zoo safetensors file, an authors' file whose keys are the model's (RCAN's and
    HAN's ``*_BIX2.pt``), or a ``zoo train`` Lightning checkpoint (its ``net.*`` weights).
    Returns the report ``{"loaded", "new", "skipped", "ignored"}`` (lists of keys: copied; left
    at their initialisation because the file lacks them; left because the shape differs or
    ``upsampler="new"``, as ``"key: file shape vs model shape"``; file keys the model lacks).
    """
    if upsampler not in ("match", "new"):
        raise ValueError(f"upsampler must be 'match' or 'new', got {upsampler!r}")
    up = tuple(upsampler_keys)
    raw = read_state_dict(path)
    sd = unwrap_state_dict(raw)
    if any(k.startswith(NET_PREFIX) for k in sd):  # a zoo train checkpoint: the network only
        sd = {k[len(NET_PREFIX):]: v for k, v in sd.items() if k.startswith(NET_PREFIX)}
    own = net.state_dict()

    def in_up(key: str) -> bool:
        return key.startswith(up)

    loaded, new, skipped, mismatched = [], [], [], []
    for k, v in own.items():
        if k not in sd:
            new.append(k)
        elif _shape(sd[k]) != _shape(v):
            (skipped if in_up(k) else mismatched).append(f"{k}: {_shape(sd[k])} vs {_shape(v)}")
        elif upsampler == "new" and in_up(k):
            skipped.append(f"{k}: kept new (upsampler: new)")
        else:
            loaded.append(k)
    ignored = [k for k in sd if k not in own]
    arch = type(net).__name__
    where = f"{path} does not fit {arch} outside the upsampler ({', '.join(up)}): is it a checkpoint of another architecture or variant?"
    if mismatched:
        raise CheckpointError(f"{where} {len(mismatched)} shape mismatches (file vs model), e.g. {_listing(mismatched, 3)}")
    body_missing = [k for k in new if not in_up(k)]
    body_ignored = [k for k in ignored if not in_up(k)]
    if strict and (body_missing or body_ignored):
        parts = []
        if body_missing:
            parts.append(f"the file lacks {len(body_missing)} model tensors, e.g. {_listing(body_missing, 3)}")
        if body_ignored:
            parts.append(f"the model lacks {len(body_ignored)} file tensors, e.g. {_listing(body_ignored, 3)}")
        raise CheckpointError(f"{where} {'; '.join(parts)} (init_strict: false loads what matches)")
    if not any(not in_up(k) for k in loaded):
        raise CheckpointError(f"{path}: no tensor outside the upsampler matches {arch} by name and shape")
    for k in loaded:
        with torch.no_grad():
            own[k].copy_(sd[k].to(dtype=own[k].dtype))
    return {"loaded": loaded, "new": new, "skipped": skipped, "ignored": ignored}


def format_init_report(path: str | os.PathLike, report: dict[str, list[str]], total: int) -> str:
    """One paragraph naming what ``init_from_checkpoint`` loaded, left new and skipped."""
    return (
        f"init_from {path}: loaded {len(report['loaded'])} of {total} tensors (modules: {_modules(report['loaded'])}); "
        f"new, not in the file: {_listing(report['new'])}; "
        f"skipped: {_listing(report['skipped'])}; "
        f"file tensors not in the model: {_listing(report['ignored'])}"
    )


class SRModule(ZooModule):
    """LightningModule for super-resolution models of the registry (``task == "sr"``).

    The recipe of RLFN / EDSR: L1 loss on [0, 1] images, Adam, and a learning rate halved every
    ``step_size`` optimiser steps (``scheduler: step``) or a cosine decay to ``eta_min`` over
    ``t_max`` steps (``scheduler: cosine``; ``t_max`` defaults to the whole run). The schedule
    steps per iteration, as the papers count it. Optional extra terms: SAFMN's FFT L1
    (``fft_weight``) and EFDN's edge-enhanced gradient-variance loss (``eg_weight``); optional
    start from a model of another scale (``init_from``, RCAN / HAN's x2 -> x3 / x4 recipe).

    Args:
        model, model_args, pretrained, checkpoint_path: see :class:`~zoo.tasks.base.ZooModule`.
        lr: Adam learning rate.
        betas: Adam betas.
        weight_decay: Adam weight decay.
        scheduler: ``step``, ``cosine`` or ``none``.
        step_size: iterations between two multiplications by ``gamma`` (``step``).
        gamma: decay factor (``step``).
        t_max: cosine period in iterations; None = the run's total steps.
        eta_min: cosine floor.
        fft_weight: weight of an extra L1 loss between the FFTs of output and target (SAFMN: 0.05).
        eg_weight: weight of EFDN's edge-enhanced gradient-variance loss
            (:func:`~zoo.tasks.sr.losses.eg_loss`; 0 = off).
        eg_patch_size: patch side of that loss's variance maps (8, as the GV loss code).
        eg_weights: its per-filter weights (lambda_x, lambda_y, lambda_l) for Sobel-x, Sobel-y
            and Laplacian.
        init_from: a weight file of the same architecture at another scale (e.g. an x2 model for
            an x4 run, as RCAN / HAN do): see :func:`init_from_checkpoint`. Cannot be combined with
            ``pretrained`` / ``checkpoint_path``. What was loaded, left new and skipped is logged
            and kept in ``self.init_report``. (To rebuild a trained module without the file, pass
            ``init_from=None`` to ``load_from_checkpoint``: the checkpoint's weights replace it.)
        init_strict: refuse a file whose tensors outside the upsampler do not all match.
        init_upsampler: ``match`` copies upsampler tensors whose name and shape match (the
            authors' loader); ``new`` keeps the whole upsampler at its fresh initialisation.
        init_upsampler_keys: state-dict prefixes of the upsampler (allowed to differ).
    """

    def __init__(
        self,
        model: str = "rlfn_x4",
        model_args: dict[str, Any] | None = None,
        pretrained: bool = False,
        checkpoint_path: str | None = None,
        lr: float = 5e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        scheduler: Literal["step", "cosine", "cosine_restarts", "none"] = "step",
        step_size: int = 200_000,
        gamma: float = 0.5,
        t_max: int | None = None,
        eta_min: float = 1e-7,
        fft_weight: float = 0.0,
        eg_weight: float = 0.0,
        eg_patch_size: int = 8,
        eg_weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
        init_from: str | None = None,
        init_strict: bool = True,
        init_upsampler: Literal["match", "new"] = "match",
        init_upsampler_keys: tuple[str, ...] = UPSAMPLER_KEYS,
    ):
        if init_from is not None and (pretrained or checkpoint_path is not None):
            raise TaskConfigError("init_from cannot be combined with pretrained / checkpoint_path: give one source of weights")
        super().__init__(model=model, model_args=model_args, pretrained=pretrained, checkpoint_path=checkpoint_path)
        self.scale = int(getattr(self.net, "scale", 0))
        if self.scale < 1:
            raise ValueError(f"model {model!r} is not a super-resolution model (it has no .scale)")
        if eg_weight < 0 or eg_patch_size < 2 or len(tuple(eg_weights)) != 3:
            raise TaskConfigError(
                f"eg_weight must be >= 0, eg_patch_size >= 2 and eg_weights three numbers, got "
                f"{eg_weight}, {eg_patch_size}, {tuple(eg_weights)}"
            )
        self.init_report: dict[str, list[str]] | None = None
        if init_from is not None:
            self.init_report = init_from_checkpoint(
                self.net, init_from, strict=init_strict, upsampler=init_upsampler, upsampler_keys=init_upsampler_keys
            )
            from lightning.pytorch.utilities import rank_zero_info

            rank_zero_info(format_init_report(init_from, self.init_report, len(self.net.state_dict())))

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        data_scale = getattr(dm, "scale", None)
        if data_scale is not None and int(data_scale) != self.scale:
            raise TaskConfigError(f"data.scale is {data_scale} but model {self.model_name!r} upscales x{self.scale}")

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        sr = self.net(batch["lr"])
        loss = F.l1_loss(sr, batch["hr"])
        if self.hparams.fft_weight:
            loss_fft = fft_l1_loss(sr, batch["hr"])
            self.log("train/loss_fft", loss_fft, on_step=True, on_epoch=False, batch_size=batch["lr"].shape[0])
            loss = loss + self.hparams.fft_weight * loss_fft
        if self.hparams.get("eg_weight"):
            loss_eg = eg_loss(sr, batch["hr"], self.hparams.eg_patch_size, self.hparams.eg_weights)
            self.log("train/loss_eg", loss_eg, on_step=True, on_epoch=False, batch_size=batch["lr"].shape[0])
            loss = loss + self.hparams.eg_weight * loss_eg
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=batch["lr"].shape[0])
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        lr, hr = batch["lr"], batch["hr"]
        sr = self.net(lr).float()
        psnrs, ssims = [], []
        for i in range(sr.shape[0]):
            p, s = psnr_ssim_y(to_uint8_image(sr[i]), to_uint8_image(hr[i]), self.scale)
            psnrs.append(p)
            ssims.append(s)
        n = len(psnrs)
        self.log("val/psnr_y", sum(psnrs) / n, prog_bar=True, on_epoch=True, sync_dist=True, batch_size=n)
        self.log("val/ssim_y", sum(ssims) / n, on_epoch=True, sync_dist=True, batch_size=n)

    def configure_optimizers(self) -> dict:
        hp = self.hparams
        opt = torch.optim.Adam(self.net.parameters(), lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay)
        if hp.scheduler == "none":
            return {"optimizer": opt}
        if hp.scheduler == "step":
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=hp.step_size, gamma=hp.gamma)
        elif hp.scheduler == "cosine":
            t_max = hp.t_max or int(self.trainer.estimated_stepping_batches)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, t_max), eta_min=hp.eta_min)
        elif hp.scheduler == "cosine_restarts":
            # BasicSR's CosineAnnealingRestartLR with equal periods and restart weights 1 (PAN)
            if not hp.t_max:
                raise ValueError("scheduler 'cosine_restarts' needs t_max (the period in iterations)")
            sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=int(hp.t_max), eta_min=hp.eta_min)
        else:
            raise ValueError(f"scheduler must be 'step', 'cosine', 'cosine_restarts' or 'none', got {hp.scheduler!r}")
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
