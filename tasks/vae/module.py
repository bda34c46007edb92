"""Distilling a fast decoder (and optionally encoder) for a teacher VAE's latent space.

The student is a zoo model by registry name (default ``taesd``; any model whose
``decode_fn`` -- ``decode`` or ``forward`` -- maps the teacher's latents to RGB in [0, 1]). The
teacher is a frozen diffusers VAE (:mod:`zoo.tasks.vae.teachers`), kept out of the checkpoint.
Each training batch of images (or clips) is encoded by the teacher (``z``: its normalised
posterior mean); the student decodes ``z`` and is trained on

    teacher_weight     * L1(student(z), teacher.decode(z))      distillation
  + image_weight       * L1(student(z), image)                  reconstruction
  + perceptual_weight  * LPIPS(student(z), target)              target: the teacher's decode or the image
  + adversarial_weight * -D(student(z))                          hinge GAN, from step ``disc_start``
  + encoder_weight     * MSE(student.encode(image), z)          only with ``train_encoder``

LPIPS is :class:`~zoo.tasks.vae.evaluate.LPIPS` (VGG-16, ImageNet weights from the local torch hub
cache only: ``feature_weights`` auto | pretrained | random). The discriminator is a PatchGAN
(:class:`PatchDiscriminator`) on the images, or with ``disc_conditional`` on the images
concatenated with the nearest-upsampled latent (a conditional GAN, as TAESD's decoder was
trained); it is trained with the hinge loss ``0.5 * (relu(1 - D(real)) + relu(1 + D(fake)))``
(taming-transformers' ``hinge_d_loss``) on real images.

Only the decoder trains unless ``train_encoder``: the student's ``encoder_attr`` submodule is
frozen. Optimisation is AdamW (``amsgrad`` and betas configurable: TAESD's authors used Adam with
``betas=(0.9, 0.9), amsgrad=True``) under Lightning's manual optimisation; the discriminator's
optimiser is stepped directly, so ``trainer.global_step`` / ``max_steps`` count student steps.
Validation logs PSNR of the student's decode against the teacher's decode (``val/psnr_teacher``)
and against the image (``val/psnr_image``).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..base import TaskConfigError, ZooModule
from .data import crop_to_multiple
from .evaluate import LPIPS, is_video_model, per_frame, spatial_stride, temporal_stride
from .teachers import VAETeacher, build_teacher

__all__ = ["VAEDistillModule", "PatchDiscriminator", "OwnEncoder", "hinge_d_loss"]


def _groups(channels: int) -> int:
    return math.gcd(32, channels)


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator (Isola et al., "Image-to-Image Translation with Conditional
    Adversarial Networks", CVPR 2017) in the N-layer layout of taming-transformers'
    ``NLayerDiscriminator`` (CompVis/taming-transformers, MIT): 4x4 convs, ``layers`` of them with
    stride 2 (widths ``channels * min(2^n, 8)``), one with stride 1, then a 1-channel logit map;
    LeakyReLU 0.2. GroupNorm replaces their BatchNorm (ours: small, uneven batches)."""

    def __init__(self, in_channels: int = 3, channels: int = 64, layers: int = 3):
        super().__init__()
        seq: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        mult = 1
        for n in range(1, layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < layers else 1
            width = channels * mult
            seq += [nn.Conv2d(channels * prev, width, 4, stride, 1, bias=False), nn.GroupNorm(_groups(width), width), nn.LeakyReLU(0.2)]
        seq.append(nn.Conv2d(channels * mult, 1, 4, 1, 1))
        self.main = nn.Sequential(*seq)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class OwnEncoder:
    """``teacher_class: self``: the latents come from the student's own frozen encoder and there
    is no teacher decoder: the decoder learns to reconstruct the image (RAE's stage 1: a ViT
    decoder on a frozen representation encoder). The encoder runs in the student's mode, so a
    model that augments its latents in training (RAE's ``noise_tau``) does so here too."""

    name = "own encoder"
    video = False
    latent_channels = None
    spatial_ratio = None
    temporal_ratio = None

    def __init__(self, encode):
        self._encode = encode

    def parameters(self):
        return iter(())

    def describe(self) -> dict:
        return {"name": self.name, "latent_channels": None, "spatial_ratio": None, "temporal_ratio": None, "video": False}

    def encode_latents(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self._encode(x)

    def decode_latents(self, z: torch.Tensor) -> None:
        return None


def hinge_d_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean())


def _as_images(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, T, H, W)`` clips -> ``(B * T, C, H, W)`` frames; images unchanged."""
    return x.transpose(1, 2).flatten(0, 1) if x.ndim == 5 else x


def _psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return -10 * torch.log10(F.mse_loss(a.float().clamp(0, 1), b.float()).clamp_min(1e-10))


class VAEDistillModule(ZooModule):
    """Decoder distillation for a teacher VAE (see the module docstring).

    Args:
        model / model_args / pretrained / checkpoint_path: the student (see ``ZooModule``).
        teacher: the teacher's weights: a diffusers folder, a checkpoint file or a hub repo id
            (``stabilityai/sd-vae-ft-mse``); ``null`` with ``teacher_config`` for a random teacher.
        teacher_class: diffusers class of the teacher (``AutoencoderKL``, ``AutoencoderKLFlux2``,
            ``AutoencoderKLLTXVideo`` ...), ``zoo:NAME``, or ``self``: the student's own frozen
            encoder gives the latents and the decoder learns the image (RAE, :class:`OwnEncoder`).
        teacher_subfolder: the VAE's folder inside a pipeline repo (``vae``).
        teacher_config: constructor arguments of a randomly initialised teacher (tests).
        teacher_dtype: float32, bfloat16 or float16 for the teacher.
        scaling_factor / shift_factor: override the teacher config's latent factors.
        teacher_decode_kwargs: extra arguments for the teacher's ``decode``.
        normalize_latents: decode the teacher's normalised latents (default; TAESD's convention)
            or, when off, its raw posterior mean (Turbo-VAED's).
        decode_fn / encode_fn: the student's decode / encode methods (``forward``: call it).
        encoder_attr: the student's encoder submodule, frozen unless ``train_encoder``.
        train_encoder: also distil the encoder (MSE to the teacher's latents, TAESD's recipe).
        teacher_weight / image_weight / perceptual_weight / adversarial_weight / encoder_weight:
            loss weights (0 switches a term off).
        perceptual_target: ``teacher`` (its decode) or ``image``.
        feature_weights: VGG-16 weights for LPIPS: auto | pretrained | random.
        disc_start: student steps before the adversarial terms start.
        disc_channels / disc_layers: PatchGAN width and depth.
        disc_conditional: condition the discriminator on the latent.
        disc_lr: the discriminator's learning rate (default: ``lr``).
        lr / betas / weight_decay / amsgrad: AdamW.
        clip_grad_norm: clip the student's gradient norm (None: off).
        scheduler: ``constant`` or ``cosine`` (to ``min_lr_ratio * lr`` over the run's steps),
            both after ``warmup_steps`` of linear warm-up from 0.
    """

    def __init__(
        self,
        model: str = "taesd",
        model_args: dict[str, Any] | None = None,
        pretrained: bool = False,
        checkpoint_path: str | None = None,
        teacher: str | None = None,
        teacher_class: str = "AutoencoderKL",
        teacher_subfolder: str | None = None,
        teacher_config: dict[str, Any] | None = None,
        teacher_dtype: str = "float32",
        scaling_factor: float | None = None,
        shift_factor: float | None = None,
        teacher_decode_kwargs: dict[str, Any] | None = None,
        normalize_latents: bool = True,
        decode_fn: str = "decode",
        encode_fn: str = "encode",
        encoder_attr: str = "encoder",
        train_encoder: bool = False,
        teacher_weight: float = 1.0,
        image_weight: float = 0.0,
        perceptual_weight: float = 0.0,
        perceptual_target: Literal["teacher", "image"] = "teacher",
        feature_weights: Literal["auto", "pretrained", "random"] = "auto",
        adversarial_weight: float = 0.0,
        encoder_weight: float = 1.0,
        disc_start: int = 0,
        disc_channels: int = 64,
        disc_layers: int = 3,
        disc_conditional: bool = False,
        disc_lr: float | None = None,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        clip_grad_norm: float | None = None,
        scheduler: Literal["constant", "cosine"] = "constant",
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.0,
    ):
        super().__init__(model, model_args, pretrained, checkpoint_path)
        self.automatic_optimization = False
        if perceptual_target not in ("teacher", "image"):
            raise TaskConfigError(f"perceptual_target must be 'teacher' or 'image', got {perceptual_target!r}")
        if scheduler not in ("constant", "cosine"):
            raise TaskConfigError(f"scheduler must be 'constant' or 'cosine', got {scheduler!r}")
        if decode_fn != "forward" and not callable(getattr(self.net, decode_fn, None)):
            raise TaskConfigError(f"student {model} has no {decode_fn}() to decode latents with (decode_fn)")
        if train_encoder and (encode_fn == "forward" or not callable(getattr(self.net, encode_fn, None))):
            raise TaskConfigError(f"train_encoder needs a student with an encoder: {model} has no {encode_fn}()")
        if teacher_class == "self":
            if teacher_weight or (perceptual_weight and perceptual_target == "teacher") or train_encoder:
                raise TaskConfigError(
                    "teacher_class 'self' has no teacher decode to distil: set teacher_weight: 0, "
                    "perceptual_target: image and train_encoder: false (the encoder is the frozen one)")
            if not callable(getattr(self.net, encode_fn, None)):
                raise TaskConfigError(f"teacher_class 'self' needs a student with an encoder: {model} has no {encode_fn}()")
            built = OwnEncoder(getattr(self.net, encode_fn))
        else:
            try:
                built = build_teacher(teacher_class, teacher, teacher_subfolder, teacher_config, teacher_dtype,
                                      scaling_factor, shift_factor, teacher_decode_kwargs, normalize_latents)
            except ValueError as e:
                raise TaskConfigError(str(e)) from None
        self._check_pairing(model, built)
        # frozen and out of the state dict: bypass nn.Module's registration
        object.__setattr__(self, "teacher_vae", built)
        object.__setattr__(self, "_lpips", None)

        encoder = getattr(self.net, encoder_attr, None)
        if not train_encoder and isinstance(encoder, nn.Module):
            encoder.requires_grad_(False)
        if not any(p.requires_grad for p in self.net.parameters()):
            raise TaskConfigError(f"student {model} has no trainable parameters left (encoder_attr={encoder_attr!r})")

        self.disc = None
        if adversarial_weight:
            channels = 3 + (built.latent_channels or 0) * bool(disc_conditional)
            if disc_conditional and not built.latent_channels:
                raise TaskConfigError("disc_conditional needs the teacher's latent channel count")
            self.disc = PatchDiscriminator(channels, disc_channels, disc_layers)

    # ------------------------------------------------------------------------------ helpers

    def _check_pairing(self, model: str, teacher: VAETeacher) -> None:
        channels = getattr(self.net, "latent_channels", None)
        if channels and teacher.latent_channels and channels != teacher.latent_channels:
            raise TaskConfigError(
                f"student {model} decodes {channels}-channel latents but teacher {teacher.name} makes "
                f"{teacher.latent_channels}-channel ones: pick a student for this latent space"
                f" (e.g. taesd / taesdxl: 4, taesd3 / taef1: 16, taef2: 32) or set model_args.latent_channels"
            )
        stride = spatial_stride(self.net)
        if stride and teacher.spatial_ratio and stride != teacher.spatial_ratio:
            raise TaskConfigError(
                f"student {model} up-samples latents {stride}x but teacher {teacher.name} down-samples {teacher.spatial_ratio}x"
            )
        frames = temporal_stride(self.net)
        if frames and teacher.video and teacher.temporal_ratio and frames != teacher.temporal_ratio:
            raise TaskConfigError(
                f"student {model} up-samples time {frames}x but teacher {teacher.name} compresses it {teacher.temporal_ratio}x"
            )

    def _teacher(self) -> VAETeacher:
        t: VAETeacher = self.teacher_vae
        p = next(t.parameters(), None)
        if p is not None and p.device != self.device:
            t.to(self.device)
        return t

    def _perceptual(self) -> LPIPS:
        if self._lpips is None:
            object.__setattr__(self, "_lpips", LPIPS(self.hparams.feature_weights))
        if self._lpips.shift.device != self.device:
            self._lpips.to(self.device)
        return self._lpips

    def _frame_wise(self, x: torch.Tensor) -> bool:
        # an image teacher's clip latents, or an image student: decode / encode frame by frame
        return x.ndim == 5 and not (self.teacher_vae.video and is_video_model(self.net))

    def student_decode(self, z: torch.Tensor) -> torch.Tensor:
        fn = self.hparams.decode_fn
        call = self.net if fn == "forward" else getattr(self.net, fn)
        return per_frame(call, z) if self._frame_wise(z) else call(z)

    def student_encode(self, x: torch.Tensor) -> torch.Tensor:
        call = getattr(self.net, self.hparams.encode_fn)
        return per_frame(call, x) if self._frame_wise(x) else call(x)

    def _disc_input(self, img: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if not self.hparams.disc_conditional:
            return _as_images(img)
        if img.ndim == 5 and z.ndim == 5 and img.shape[2] != z.shape[2]:
            raise TaskConfigError("disc_conditional needs one latent frame per image frame (this teacher compresses time)")
        img, z = _as_images(img), _as_images(z)
        return torch.cat([img, F.interpolate(z.to(img.dtype), size=img.shape[-2:], mode="nearest")], dim=1)

    def _multiple(self) -> int:
        return math.lcm(self.teacher_vae.spatial_ratio or 1, spatial_stride(self.net) or 1)

    def _adversarial_on(self) -> bool:
        return self.disc is not None and self.global_step >= self.hparams.disc_start

    # ---------------------------------------------------------------------------- training

    def losses(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The student's loss on a batch of images / clips: ``(loss, terms, tensors)`` with the
        unweighted terms and the tensors (``z``, ``teacher``, ``student``) the step reuses."""
        hp = self.hparams
        teacher = self._teacher()
        z = teacher.encode_latents(x)
        target = teacher.decode_latents(z)
        if target is None:  # teacher_class "self": the image is the only target
            target = x
        out = self.student_decode(z)
        if out.shape != target.shape:
            raise TaskConfigError(
                f"student {hp.model} decodes latents {tuple(z.shape)} to {tuple(out.shape)}, "
                f"teacher {teacher.name} to {tuple(target.shape)}"
            )
        terms: dict[str, torch.Tensor] = {}
        loss = out.new_zeros(())
        if hp.teacher_weight:
            terms["l1_teacher"] = F.l1_loss(out, target)
            loss = loss + hp.teacher_weight * terms["l1_teacher"]
        if hp.image_weight:
            terms["l1_image"] = F.l1_loss(out, x)
            loss = loss + hp.image_weight * terms["l1_image"]
        if hp.perceptual_weight:
            ref = target if hp.perceptual_target == "teacher" else x
            terms["lpips"] = self._perceptual()(out, ref).mean()
            loss = loss + hp.perceptual_weight * terms["lpips"]
        if self._adversarial_on() and hp.adversarial_weight:
            terms["g_adv"] = -self.disc(self._disc_input(out, z)).mean()
            loss = loss + hp.adversarial_weight * terms["g_adv"]
        if hp.train_encoder and hp.encoder_weight:
            terms["encoder_mse"] = F.mse_loss(self.student_encode(x), z)
            loss = loss + hp.encoder_weight * terms["encoder_mse"]
        return loss, terms, {"z": z, "teacher": target, "student": out}

    def on_fit_start(self) -> None:
        if self.disc is not None and str(self.trainer.precision) == "16-mixed":
            raise TaskConfigError("adversarial training steps the discriminator directly: use precision 32-true or bf16-mixed")

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        hp = self.hparams
        opts = self.optimizers()
        opt_g, opt_d = (opts[0], opts[1]) if isinstance(opts, list) else (opts, None)
        loss, terms, t = self.losses(batch)
        opt_g.zero_grad()
        self.manual_backward(loss)
        if hp.clip_grad_norm:
            self.clip_gradients(opt_g, gradient_clip_val=hp.clip_grad_norm, gradient_clip_algorithm="norm")
        opt_g.step()
        sched = self.lr_schedulers()
        if sched is not None:
            sched.step()
        logs = {"train/loss": loss.detach(), **{f"train/{k}": v.detach() for k, v in terms.items()}}
        if opt_d is not None and self.global_step > hp.disc_start:  # global_step already counts this step
            real = self.disc(self._disc_input(batch, t["z"]))
            fake = self.disc(self._disc_input(t["student"].detach(), t["z"]))
            d_loss = hinge_d_loss(real, fake)
            opt_d.zero_grad()
            self.manual_backward(d_loss)
            opt_d.optimizer.step()  # directly: global_step counts student steps only
            logs["train/d_loss"] = d_loss.detach()
        self.log_dict(logs, prog_bar=True, batch_size=batch.shape[0])
        return loss.detach()

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        x = crop_to_multiple(batch, self._multiple())
        teacher = self._teacher()
        z = teacher.encode_latents(x)
        target = teacher.decode_latents(z)
        out = self.student_decode(z).float()
        logs = {"val/psnr_image": _psnr(out, x)}
        if target is not None:
            logs.update({
                "val/psnr_teacher": _psnr(out, target),
                "val/teacher_psnr_image": _psnr(target, x),
                "val/l1_teacher": F.l1_loss(out.clamp(0, 1), target),
            })
        self.log_dict(
            logs,
            prog_bar=True,
            batch_size=x.shape[0],
        )

    def configure_optimizers(self):
        hp = self.hparams
        params = [p for p in self.net.parameters() if p.requires_grad]
        opt_g = torch.optim.AdamW(params, lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay, amsgrad=hp.amsgrad)
        optimizers = [opt_g]
        if self.disc is not None:
            optimizers.append(
                torch.optim.AdamW(self.disc.parameters(), lr=hp.disc_lr or hp.lr, betas=tuple(hp.betas),
                                  weight_decay=hp.weight_decay, amsgrad=hp.amsgrad)
            )
        if hp.scheduler == "cosine" or hp.warmup_steps:
            total = max(1, int(self.trainer.estimated_stepping_batches))
            warm, floor, cosine = hp.warmup_steps, hp.min_lr_ratio, hp.scheduler == "cosine"

            def factor(step: int) -> float:
                if step < warm:
                    return (step + 1) / warm
                if not cosine:
                    return 1.0
                t = min(1.0, (step - warm) / max(1, total - warm))
                return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

            return optimizers, [torch.optim.lr_scheduler.LambdaLR(opt_g, factor)]
        return optimizers

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # `zoo eval` puts this into the network's pretrained_cfg: which latent space it decodes
        hp = self.hparams
        info = {**self.teacher_vae.describe(), "class": hp.teacher_class, "weights": hp.teacher, "subfolder": hp.teacher_subfolder}
        checkpoint["zoo_data_cfg"] = {"vae_teacher": info}
