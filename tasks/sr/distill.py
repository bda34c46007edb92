"""Knowledge distillation for super-resolution: DSCLoRA's recipe (Chai et al., "Distillation-
Supervised Convolutional Low-Rank Adaptation for Efficient Image Super-Resolution", CVPRW 2025,
arXiv 2504.11271; code: Yaozzz666/DSCF-SR, MIT).

The student (``dsclora_x4``: a pretrained SPAN whose convs carry ConvLoRA, only the LoRA factors
trainable) learns from a frozen teacher (a pretrained SPAN, e.g. ``span_ch48_x4``) with

    L = lambda_rec * L1(SR_s, HR) + lambda_ts * L1(SR_s, SR_t) + lambda_ad * sum_l L_AD(F_s^l, F_t^l)

where ``L_AD`` is the spatial feature-affinity loss of FAKD (He et al., "FAKD: Feature-Affinity
Based Knowledge Distillation for Efficient Image Super-Resolution", ICIP 2020), the paper's
reference for it: each feature map (B, C, H, W) is L2-normalised over channels at every pixel,
its affinity ``A = F^T F`` (B, HW, HW) relates every pair of pixels, and the loss is the mean
absolute difference between the student's and the teacher's affinities. Channels may differ
(26 vs 48): the affinity is HW x HW either way. The distilled features are those the authors'
DSCF network returns: SiLU(conv1), SiLU(conv2) and conv3 of SPAB blocks 1-3 (nine maps), which
``SPAN.forward_with_features`` gives for student and teacher alike.

The loss weights and optimiser defaults here (lambda 1 / 1 / 1 ...) are ours: the authors
released no training code or options (Yaozzz666/DSCF-SR holds the model and the challenge test
script only), and the paper's values could not be checked; ``configs/sr/dsclora_x4.yaml`` says
which parts of its recipe are the authors'.

The HW x HW affinity of a 64 x 64 patch has 16.7M entries per image: the loss is computed in
blocks of rows (each block recomputed in the backward pass), so memory stays bounded by
``max_affinity_elements`` whatever the patch and batch size; the value is the same.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

import zoo

from ..base import TaskConfigError
from .module import SRModule

__all__ = ["SRDistillModule", "spatial_affinity", "affinity_l1"]

_EPS = 1e-7  # FAKD's epsilon in the channel-norm division


def _normalise(feat: torch.Tensor, eps: float = _EPS) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, HW), each pixel's channel vector divided by (its L2 norm + eps)."""
    f = feat.flatten(2)
    return f / (f.pow(2).sum(1, keepdim=True).sqrt() + eps)


def spatial_affinity(feat: torch.Tensor, eps: float = _EPS) -> torch.Tensor:
    """The (B, HW, HW) spatial affinity (cosine similarity of every pair of pixels) of ``feat``."""
    n = _normalise(feat, eps)
    return n.transpose(1, 2) @ n


def _rows_abs_sum(ns: torch.Tensor, nt: torch.Tensor, start: int, size: int) -> torch.Tensor:
    a_s = ns[:, :, start : start + size].transpose(1, 2) @ ns
    a_t = nt[:, :, start : start + size].transpose(1, 2) @ nt
    return (a_s - a_t).abs().sum()


def affinity_l1(student: torch.Tensor, teacher: torch.Tensor, eps: float = _EPS, max_affinity_elements: int = 1 << 24) -> torch.Tensor:
    """Mean |A_s - A_t| over the (B, HW, HW) spatial affinities of two feature maps.

    Equal to ``F.l1_loss(spatial_affinity(student), spatial_affinity(teacher))``; above
    ``max_affinity_elements`` entries it is summed over blocks of rows, each recomputed in the
    backward pass (activation checkpointing), so memory is bounded.
    """
    if student.ndim != 4 or teacher.ndim != 4:
        raise ValueError(f"expected (B, C, H, W) feature maps, got {tuple(student.shape)} and {tuple(teacher.shape)}")
    if student.shape[0] != teacher.shape[0] or student.shape[-2:] != teacher.shape[-2:]:
        raise ValueError(
            f"student and teacher features must share batch and spatial size, got {tuple(student.shape)} and {tuple(teacher.shape)}"
        )
    ns, nt = _normalise(student, eps), _normalise(teacher.to(student.dtype), eps)
    b, n = ns.shape[0], ns.shape[-1]
    if b * n * n <= max_affinity_elements:
        return (ns.transpose(1, 2) @ ns - nt.transpose(1, 2) @ nt).abs().mean()
    rows = max(1, max_affinity_elements // (b * n))
    total = ns.new_zeros(())
    for start in range(0, n, rows):
        if torch.is_grad_enabled() and ns.requires_grad:
            total = total + checkpoint(_rows_abs_sum, ns, nt, start, rows, use_reentrant=False)
        else:
            total = total + _rows_abs_sum(ns, nt, start, rows)
    return total / (b * n * n)


class SRDistillModule(SRModule):
    """SR training with a frozen teacher: reconstruction + teacher-output + feature-affinity loss.

    Args:
        model, model_args, pretrained, checkpoint_path: the student (see :class:`SRModule`);
            for DSCLoRA, ``checkpoint_path`` is the pretrained SPAN it adapts (a SPAN file of the
            same size, or a DSCLoRA file to continue from).
        teacher: registry name of the teacher (a SPAN: it must give ``forward_with_features``).
        teacher_args: keyword arguments for the teacher constructor.
        teacher_pretrained: start the teacher from the registry's weights.
        teacher_checkpoint: the teacher's weight file (an authors' file or a zoo file).
        lambda_rec: weight of L1(student SR, HR).
        lambda_ts: weight of L1(student SR, teacher SR).
        lambda_ad: weight of the summed feature-affinity losses (0 turns feature distillation off).
        distill_blocks: SPAB blocks whose three features are distilled.
        max_affinity_elements: affinity entries computed at once (memory bound, not the result).
        lr, betas, weight_decay, scheduler, step_size, gamma, t_max, eta_min: see :class:`SRModule`
            (only parameters with ``requires_grad`` change: DSCLoRA's LoRA factors).

    The teacher stays in eval mode (its train-form Conv3XC run the fused kernels) and out of the
    optimiser; its weights are saved in Lightning checkpoints under ``teacher.``, and ``zoo eval``
    reads only the student (``net.``). Lightning's notice that modules are "in eval mode at the
    start of training" counts the teacher's: that is intended.
    """

    def __init__(
        self,
        model: str = "dsclora_x4",
        model_args: dict[str, Any] | None = None,
        pretrained: bool = False,
        checkpoint_path: str | None = None,
        teacher: str = "span_ch48_x4",
        teacher_args: dict[str, Any] | None = None,
        teacher_pretrained: bool = False,
        teacher_checkpoint: str | None = None,
        lambda_rec: float = 1.0,
        lambda_ts: float = 1.0,
        lambda_ad: float = 1.0,
        distill_blocks: tuple[int, ...] = (1, 2, 3),
        max_affinity_elements: int = 1 << 24,
        lr: float = 5e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        scheduler: Literal["step", "cosine", "none"] = "step",
        step_size: int = 200_000,
        gamma: float = 0.5,
        t_max: int | None = None,
        eta_min: float = 1e-7,
    ):
        super().__init__(
            model=model, model_args=model_args, pretrained=pretrained, checkpoint_path=checkpoint_path, lr=lr, betas=betas,
            weight_decay=weight_decay, scheduler=scheduler, step_size=step_size, gamma=gamma, t_max=t_max, eta_min=eta_min,
        )  # fmt: skip
        for role, name, has_weights in (
            ("student", model, pretrained or checkpoint_path is not None),
            ("teacher", teacher, teacher_pretrained or teacher_checkpoint is not None),
        ):
            if not has_weights:
                warnings.warn(
                    f"distillation {role} {name!r} starts from random weights (no pretrained / checkpoint given): "
                    "the recipe adapts a pretrained SPAN with a pretrained teacher",
                    stacklevel=2,
                )
        self.teacher = zoo.create(teacher, pretrained=teacher_pretrained, checkpoint_path=teacher_checkpoint, **(teacher_args or {}))
        self.teacher.eval()
        self.teacher.requires_grad_(False)
        t_scale = int(getattr(self.teacher, "scale", 0))
        if t_scale != self.scale:
            raise TaskConfigError(f"teacher {teacher!r} upscales x{t_scale} but the student {model!r} x{self.scale}")
        if lambda_ad > 0:
            for role, net, name in (("student", self.net, model), ("teacher", self.teacher, teacher)):
                if not hasattr(net, "forward_with_features"):
                    raise TaskConfigError(f"{role} {name!r} gives no intermediate features for the affinity loss (set lambda_ad: 0)")
        if not any(p.requires_grad for p in self.net.parameters()):
            raise TaskConfigError(f"student {model!r} has no trainable parameters")
        self.distill_blocks = tuple(int(b) for b in distill_blocks)

    def train(self, mode: bool = True) -> "SRDistillModule":
        super().train(mode)
        self.teacher.eval()  # frozen: always the inference form
        return self

    def distill_losses(self, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        """The three loss terms and their weighted sum (``loss``) for one batch."""
        hp = self.hparams
        if hp.lambda_ad > 0:
            sr, feats_s = self.net.forward_with_features(lr, self.distill_blocks)
            with torch.no_grad():
                sr_t, feats_t = self.teacher.forward_with_features(lr, self.distill_blocks)
            l_ad = sum(
                (affinity_l1(fs, ft, max_affinity_elements=hp.max_affinity_elements) for fs, ft in zip(feats_s, feats_t)),
                sr.new_zeros(()),
            )
        else:
            sr = self.net(lr)
            with torch.no_grad():
                sr_t = self.teacher(lr)
            l_ad = sr.new_zeros(())
        l_rec = F.l1_loss(sr, hr)
        l_ts = F.l1_loss(sr, sr_t)
        loss = hp.lambda_rec * l_rec + hp.lambda_ts * l_ts + hp.lambda_ad * l_ad
        return {"loss": loss, "l_rec": l_rec, "l_ts": l_ts, "l_ad": l_ad}

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        losses = self.distill_losses(batch["lr"], batch["hr"])
        n = batch["lr"].shape[0]
        self.log("train/loss", losses["loss"], prog_bar=True, on_step=True, on_epoch=False, batch_size=n)
        for key in ("l_rec", "l_ts", "l_ad"):
            self.log(f"train/{key}", losses[key], on_step=True, on_epoch=False, batch_size=n)
        return losses["loss"]
