"""Super-resolution training: L1 loss, Adam, step or cosine schedule, PSNR-Y / SSIM-Y validation."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F

from ..base import TaskConfigError, ZooModule
from .metrics import psnr_ssim_y, to_uint8_image

__all__ = ["SRModule", "fft_l1_loss"]


def fft_l1_loss(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """L1 between the 2-D FFTs (real and imaginary parts) of ``sr`` and ``hr``: SAFMN's FFTLoss."""
    a = torch.view_as_real(torch.fft.fft2(sr.float(), dim=(-2, -1)))
    b = torch.view_as_real(torch.fft.fft2(hr.float(), dim=(-2, -1)))
    return F.l1_loss(a, b)


class SRModule(ZooModule):
    """LightningModule for super-resolution models of the registry (``task == "sr"``).

    The recipe of RLFN / EDSR: L1 loss on [0, 1] images, Adam, and a learning rate halved every
    ``step_size`` optimiser steps (``scheduler: step``) or a cosine decay to ``eta_min`` over
    ``t_max`` steps (``scheduler: cosine``; ``t_max`` defaults to the whole run). The schedule
    steps per iteration, as the papers count it.

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
    ):
        super().__init__(model=model, model_args=model_args, pretrained=pretrained, checkpoint_path=checkpoint_path)
        self.scale = int(getattr(self.net, "scale", 0))
        if self.scale < 1:
            raise ValueError(f"model {model!r} is not a super-resolution model (it has no .scale)")

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
