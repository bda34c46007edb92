"""Rate-distortion training of a learned image codec (CompressAI's recipe).

Loss ``lmbda * 255^2 * MSE + bpp`` with bpp from the entropy models' likelihoods; the entropy
bottleneck's auxiliary loss (which fits its quantiles, used only by the range coder) is added
with its own learning rate. Since the rate-distortion loss does not depend on the quantiles and
the auxiliary loss depends on nothing else, one Adam over two parameter groups is the same as
CompressAI's two optimisers. ``lmbda`` defaults to CompressAI's MSE table for the model's quality.
"""

from __future__ import annotations

from typing import Any

import torch

from ..base import TaskConfigError, ZooModule

__all__ = ["ImageCodecModule", "MSE_LAMBDAS"]

# CompressAI's training lambdas for the MSE models, quality 1..8 (its docs' model zoo table).
MSE_LAMBDAS = {1: 0.0018, 2: 0.0035, 3: 0.0067, 4: 0.0130, 5: 0.0250, 6: 0.0483, 7: 0.0932, 8: 0.1800}


class ImageCodecModule(ZooModule):
    def __init__(
        self,
        model: str,
        model_args: dict[str, Any] | None = None,
        pretrained: bool = False,
        checkpoint_path: str | None = None,
        lmbda: float | None = None,
        lr: float = 1e-4,
        aux_lr: float = 1e-3,
        clip_max_norm: float = 1.0,
        scheduler: str = "plateau",
        milestones: list[int] | None = None,
    ):
        super().__init__(model, model_args, pretrained, checkpoint_path)
        if not hasattr(self.net, "rate_distortion"):
            raise TaskConfigError(f"{model} is not a learned codec (no rate_distortion); see `zoo list --task image_codec`")
        quality = getattr(self.net, "quality", None)
        if lmbda is None:  # the model's own training lambda (shallow NTC), else CompressAI's table
            lmbda = getattr(self.net, "rd_lambda", None) or MSE_LAMBDAS.get(quality, 0.01)
        self.lmbda = float(lmbda)

    def _aux_names(self) -> set[str]:
        return {n for n, _ in self.net.named_parameters() if n.endswith(".quantiles")}

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        out = self.net.rate_distortion(batch, self.lmbda)
        loss = out["loss"] + out["aux_loss"]
        self.log_dict({"train/loss": out["loss"], "train/bpp": out["bpp"], "train/mse": out["mse"],
                       "train/aux": out["aux_loss"]}, prog_bar=True, batch_size=batch.shape[0])
        return loss

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        out = self.net.rate_distortion(batch, self.lmbda)
        psnr = -10 * torch.log10(out["mse"].clamp_min(1e-10))
        self.log_dict({"val/loss": out["loss"], "val/bpp": out["bpp"], "val/psnr": psnr},
                      prog_bar=True, batch_size=batch.shape[0])

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        # CompressAI clips the main parameters only (not the quantiles)
        if self.hparams.clip_max_norm:
            aux = self._aux_names()
            params = [p for n, p in self.net.named_parameters() if n not in aux]
            torch.nn.utils.clip_grad_norm_(params, self.hparams.clip_max_norm)

    def configure_optimizers(self) -> dict:
        aux = self._aux_names()
        main = [p for n, p in self.net.named_parameters() if n not in aux]
        quant = [p for n, p in self.net.named_parameters() if n in aux]
        opt = torch.optim.Adam([{"params": main, "lr": self.hparams.lr}, {"params": quant, "lr": self.hparams.aux_lr}])
        if self.hparams.scheduler == "none":
            return {"optimizer": opt}
        if self.hparams.scheduler == "plateau":  # CompressAI's examples/train.py
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, "min")
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "train/loss", "interval": "epoch"}}
        if self.hparams.scheduler == "multistep":
            sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=self.hparams.milestones or [], gamma=0.1)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        raise TaskConfigError(f"scheduler must be 'plateau', 'multistep' or 'none', got {self.hparams.scheduler!r}")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # the range coder's tables follow the trained distributions: refresh them before saving
        self.net.update(force=True)
        checkpoint["state_dict"] = dict(self.state_dict())

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # table buffers change size with training: size ours to the checkpoint's first
        self.net.prepare_state_dict({k[len("net."):]: v for k, v in state_dict.items() if k.startswith("net.")})
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
