"""GAN training of a neural audio codec of the registry (DAC's recipe).

descript-audio-codec ``scripts/train.py`` (MIT, github.com/descriptinc/descript-audio-codec), per
step on a batch of random crops ``x``:

1. the generator's ``forward_train(x)`` (quantizer dropout happens there, in training mode):
   reconstruction ``y``, commitment and codebook losses;
2. the discriminator's step on ``(y.detach(), x)``: LSGAN loss summed over its sub-discriminators,
   gradient norm clipped to 10, AdamW;
3. the generator's step on ``15 mel + 2 feature matching + 1 adversarial + 0.25 commitment +
   1 codebook`` (the discriminator just updated; its parameters frozen for this backward),
   gradient norm clipped to 1000, AdamW;
4. both learning rates multiplied by ``gamma = 0.999996`` (ExponentialLR per step).

AdamW has betas (0.8, 0.99), lr 1e-4 and torch's default weight decay 0.01 for both networks.
The discriminator is DAC's by default (MPD periods 2, 3, 5, 7, 11 + multi-band MRD at windows
2048, 1024, 512); EnCodec's MS-STFT and HiFi-GAN's MPD + MSD are options. Multichannel audio is
folded into the batch for the discriminator (each channel judged as a mono signal). Validation
logs DAC's mel distance (``val/mel``, also ``val/loss``), the multi-scale STFT distance, the
waveform L1 and SI-SDR of the eval-mode reconstruction (all codebooks).

Lightning's manual optimisation: the discriminator's optimiser is stepped directly, so
``trainer.global_step`` / ``max_steps`` count generator steps. The discriminator's parameters are
frozen while the generator's loss is differentiated, so under DDP use
``--trainer.strategy=ddp_find_unused_parameters_true``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from zoo.models.layers.audio_losses import (
    DAC_MEL_N_MELS,
    DAC_MEL_WINDOWS,
    MelSpectrogramLoss,
    MultiScaleSTFTLoss,
    discriminator_loss,
    feature_matching_loss,
    generator_loss,
)
from zoo.models.layers.discriminators import build_discriminator

from ..base import TaskConfigError, ZooModule

__all__ = ["AudioCodecModule", "batch_si_sdr"]

_CONTRACT = ("encode", "decode", "forward_train")


def _common_length(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both cut to the shorter length: DAC's decoders with odd up-sampling factors (16 / 24 kHz)
    return a few samples fewer than they were given, as the authors' ``DAC.forward`` does."""
    n = min(x.shape[-1], y.shape[-1])
    return x[..., :n], y[..., :n]


def batch_si_sdr(ref: torch.Tensor, est: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Mean SI-SDR in dB over a batch ``(B, C, T)`` (zero-mean, channels flattened)."""
    r = ref.reshape(ref.shape[0], -1).double()
    e = est.reshape(est.shape[0], -1).double()
    r, e = r - r.mean(-1, keepdim=True), e - e.mean(-1, keepdim=True)
    target = (e * r).sum(-1, keepdim=True) / (r.pow(2).sum(-1, keepdim=True) + eps) * r
    ratio = target.pow(2).sum(-1) / ((e - target).pow(2).sum(-1) + eps)
    return (10 * torch.log10(ratio + eps)).mean().float()


class AudioCodecModule(ZooModule):
    """Generator / discriminator training of an audio codec (see the module docstring).

    Args:
        model / model_args / pretrained / checkpoint_path: the codec (``zoo list --task audio_codec``).
        discriminator: ``dac`` (MPD + MRD, DAC), ``encodec`` (MS-STFT), ``hifigan`` (MPD + MSD) or
            ``none`` (no adversarial terms).
        disc_args: arguments of that discriminator (``dac``: ``periods``, ``fft_sizes``, ``rates``,
            ``bands``, ``period_channels``, ``band_channels``; ``encodec``: ``filters``, ``n_ffts``,
            ``hop_lengths``, ``win_lengths``).
        adversarial_loss: ``lsgan`` (DAC) or ``hinge`` (EnCodec).
        adversarial_reduction: ``sum`` (DAC) or ``mean`` (audiocraft) over sub-discriminators.
        normalize_features: audiocraft's relative feature-matching L1 (DAC: off).
        mel_weight / feature_weight / adversarial_weight / commitment_weight / codebook_weight:
            DAC's lambdas (15, 2, 1, 0.25, 1).
        stft_weight / waveform_weight: multi-scale STFT and waveform L1 terms (DAC: 0).
        mel_n_mels / mel_windows / mel_pow / mel_mag_weight / mel_log_weight / mel_clamp_eps: the
            mel loss (DAC's configuration by default).
        lr / disc_lr / betas / weight_decay: AdamW for the generator / discriminator.
        lr_gamma: ExponentialLR factor per step (both optimisers).
        clip_norm / disc_clip_norm: gradient-norm clipping (DAC: 1000 and 10; None: off).
        disc_start: generator steps before the adversarial terms and discriminator updates start.
        n_quantizers: codebooks used in training (None: all, with the model's quantizer dropout).
    """

    def __init__(
        self,
        model: str = "dac_16khz",
        model_args: dict[str, Any] | None = None,
        pretrained: bool = False,
        checkpoint_path: str | None = None,
        discriminator: Literal["dac", "encodec", "hifigan", "none"] = "dac",
        disc_args: dict[str, Any] | None = None,
        adversarial_loss: Literal["lsgan", "hinge"] = "lsgan",
        adversarial_reduction: Literal["sum", "mean"] = "sum",
        normalize_features: bool = False,
        mel_weight: float = 15.0,
        feature_weight: float = 2.0,
        adversarial_weight: float = 1.0,
        commitment_weight: float = 0.25,
        codebook_weight: float = 1.0,
        stft_weight: float = 0.0,
        waveform_weight: float = 0.0,
        mel_n_mels: Sequence[int] = DAC_MEL_N_MELS,
        mel_windows: Sequence[int] = DAC_MEL_WINDOWS,
        mel_pow: float = 1.0,
        mel_mag_weight: float = 0.0,
        mel_log_weight: float = 1.0,
        mel_clamp_eps: float = 1e-5,
        lr: float = 1e-4,
        disc_lr: float | None = None,
        betas: tuple[float, float] = (0.8, 0.99),
        weight_decay: float = 0.01,
        lr_gamma: float = 0.999996,
        clip_norm: float | None = 1000.0,
        disc_clip_norm: float | None = 10.0,
        disc_start: int = 0,
        n_quantizers: int | None = None,
    ):
        super().__init__(model, model_args, pretrained, checkpoint_path)
        self.automatic_optimization = False
        missing = [m for m in _CONTRACT if not callable(getattr(self.net, m, None))]
        if missing or not getattr(self.net, "sample_rate", 0):
            raise TaskConfigError(
                f"{model} is not an audio codec (it lacks {', '.join(missing) or 'sample_rate'}); see `zoo list --task audio_codec`"
            )
        if adversarial_loss not in ("lsgan", "hinge"):
            raise TaskConfigError(f"adversarial_loss must be 'lsgan' or 'hinge', got {adversarial_loss!r}")
        if adversarial_reduction not in ("sum", "mean"):
            raise TaskConfigError(f"adversarial_reduction must be 'sum' or 'mean', got {adversarial_reduction!r}")
        self.sample_rate = int(self.net.sample_rate)
        self.channels = int(getattr(self.net, "channels", 1))
        self.disc = None
        if discriminator != "none":
            try:
                self.disc = build_discriminator(discriminator, sample_rate=self.sample_rate, **dict(disc_args or {}))
            except (TypeError, ValueError) as e:
                raise TaskConfigError(f"discriminator {discriminator!r}: {e}") from None
        elif adversarial_weight or feature_weight:
            raise TaskConfigError("discriminator 'none' needs adversarial_weight: 0 and feature_weight: 0")
        self.mel_loss = MelSpectrogramLoss(
            self.sample_rate, n_mels=list(mel_n_mels), window_lengths=list(mel_windows), clamp_eps=mel_clamp_eps,
            mag_weight=mel_mag_weight, log_weight=mel_log_weight, pow=mel_pow,
        )
        self.stft_loss = MultiScaleSTFTLoss()

    # ------------------------------------------------------------------------------ helpers

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        for key, mine in (("sample_rate", self.sample_rate), ("channels", self.channels)):
            theirs = getattr(dm, key, None)
            if theirs is not None and int(theirs) != mine:
                raise TaskConfigError(f"data.{key} is {theirs} but model {self.model_name!r} has {key} {mine}")

    def on_fit_start(self) -> None:
        if self.disc is not None and str(self.trainer.precision) == "16-mixed":
            raise TaskConfigError("GAN training steps the discriminator directly: use precision 32-true or bf16-mixed")

    def _disc(self, wav: torch.Tensor):
        b, c, t = wav.shape
        return self.disc(wav.reshape(b * c, 1, t))

    def _adversarial_on(self) -> bool:
        return self.disc is not None and self.global_step >= self.hparams.disc_start

    def generator_losses(self, x: torch.Tensor, out: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The generator's weighted loss and its unweighted terms for batch ``x`` and the
        codec's ``forward_train`` output ``out``."""
        hp = self.hparams
        x, y = _common_length(x, out["wav"])
        terms: dict[str, torch.Tensor] = {"mel": self.mel_loss(y, x)}
        if hp.stft_weight:
            terms["stft"] = self.stft_loss(y, x)
        if hp.waveform_weight:
            terms["waveform"] = F.l1_loss(y, x)
        if self._adversarial_on() and (hp.adversarial_weight or hp.feature_weight):
            d_fake = self._disc(y)
            with torch.no_grad():
                d_real = self._disc(x)
            terms["adversarial"] = generator_loss(d_fake, hp.adversarial_loss, hp.adversarial_reduction)
            terms["feature"] = feature_matching_loss(d_fake, d_real, hp.normalize_features)
        terms["commitment"] = out["commitment_loss"]
        terms["codebook"] = out["codebook_loss"]
        weights = {"mel": hp.mel_weight, "stft": hp.stft_weight, "waveform": hp.waveform_weight,
                   "adversarial": hp.adversarial_weight, "feature": hp.feature_weight,
                   "commitment": hp.commitment_weight, "codebook": hp.codebook_weight}
        loss = sum(weights[k] * v for k, v in terms.items())
        return loss, terms

    # ---------------------------------------------------------------------------- training

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        hp = self.hparams
        x = batch
        opts = self.optimizers()
        opt_g, opt_d = (opts[0], opts[1]) if isinstance(opts, list) else (opts, None)
        out = self.net.forward_train(x, hp.n_quantizers)
        logs: dict[str, torch.Tensor] = {}

        if opt_d is not None and self._adversarial_on():
            real, fake = _common_length(x, out["wav"].detach())
            d_fake, d_real = self._disc(fake), self._disc(real)
            loss_d = discriminator_loss(d_fake, d_real, hp.adversarial_loss, hp.adversarial_reduction)
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(loss_d)
            if hp.disc_clip_norm:
                logs["train/grad_norm_d"] = torch.nn.utils.clip_grad_norm_(self.disc.parameters(), hp.disc_clip_norm)
            opt_d.optimizer.step()  # directly: global_step counts generator steps only
            logs["train/disc_loss"] = loss_d.detach()

        # the discriminator's parameters are frozen for the generator's backward (Lightning's toggle)
        self.toggle_optimizer(opt_g)
        try:
            loss, terms = self.generator_losses(x, out)
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(loss)
        finally:
            self.untoggle_optimizer(opt_g)
        if hp.clip_norm:
            logs["train/grad_norm"] = torch.nn.utils.clip_grad_norm_(self.net.parameters(), hp.clip_norm)
        opt_g.step()
        scheds = self.lr_schedulers()
        for s in scheds if isinstance(scheds, list) else [scheds] if scheds is not None else []:
            s.step()

        logs["train/loss"] = loss.detach()
        logs.update({f"train/{k}": v.detach() for k, v in terms.items() if k != "mel"})
        self.log_dict(logs, prog_bar=False, batch_size=x.shape[0])
        self.log("train/mel", terms["mel"].detach(), prog_bar=True, batch_size=x.shape[0])
        return loss.detach()

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        x, y = _common_length(batch, self.net(batch).float())
        mel = self.mel_loss(y, x)
        self.log_dict({
            "val/loss": mel,
            "val/mel": mel,
            "val/stft": self.stft_loss(y, x),
            "val/waveform": F.l1_loss(y, x),
            "val/si_sdr": batch_si_sdr(x, y),
        }, prog_bar=True, batch_size=x.shape[0], sync_dist=True)

    def configure_optimizers(self):
        hp = self.hparams
        opt_g = torch.optim.AdamW(self.net.parameters(), lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay)
        opts = [opt_g]
        if self.disc is not None:
            opts.append(torch.optim.AdamW(self.disc.parameters(), lr=hp.disc_lr or hp.lr, betas=tuple(hp.betas),
                                          weight_decay=hp.weight_decay))
        return opts, [torch.optim.lr_scheduler.ExponentialLR(o, hp.lr_gamma) for o in opts]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["zoo_data_cfg"] = {"sample_rate": self.sample_rate, "channels": self.channels}
