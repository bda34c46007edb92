"""ISP training: a paired baseline and the unpaired recipe of Arhire & Timofte (CVPRW 2025).

``recipe: paired`` -- the network sees each RAW with its own sRGB photo: L1, optionally plus
MS-SSIM (torchmetrics) and a VGG-19 ``relu5_4`` perceptual term (PyNET's content layer); Adam.

``recipe: unpaired`` -- "Learned Lightweight Smartphone ISP with Unpaired Data" (authors' code:
AndreiiArhire/Learned-Lightweight-Smartphone-ISP-with-Unpaired-Data, followed as in its NTIRE 2026
baseline gosha20777/unpaired-isp-ntire-baseline; re-implemented here, nothing copied). The
generator never sees its own target. Its loss has

- a content term: VGG-19 ``relu5_4`` features of the Lab lightness (``L / 100``, as 3 channels,
  ImageNet-normalised) of the output against those of a classical rendering of the same RAW
  (``raw_rgb``), ``2 * sum((a - b)^2) / (numel / B)``;
- a total-variation term (mean squared horizontal + vertical differences);
- adversarial terms from several discriminators, each on feature maps of a frozen pretrained
  network, against unrelated target photos:
  * "texture" discriminators on AlexNet feature maps (LPIPS's ``relu1..relu5`` slices; layers
    0 and 3 by default: 64 and 256 channels) of the grey images (BT.601 luma, as 3 channels);
  * a "colour" discriminator on ViT patch tokens of the images blurred by a 21x21 Gaussian
    (sigma 3), resized to the ViT's input size;
  every discriminator is the authors' conv stack (5 convs, LeakyReLU 0.2, two dense layers; the
  first dense layer's width is inferred from the first batch) or, for ViT tokens, their 3-layer
  MLP averaged over tokens.

The adversarial loss is the relativistic pairing loss with zero-centred R1 + R2 gradient
penalties on the (feature) inputs (R3GAN): ``D: softplus(-(D(real) - D(fake))) + 500 (R1 + R2)``
(the authors' ``gamma / 2 * 100`` with ``gamma = 10``), ``G: softplus(-(D(fake) - D(real)))``.
As in the authors' code, each generator term is divided by the norm of its own gradient with
respect to the generator's parameters (``grad_normalize``), then weighted. The generator steps
every batch (Adam, betas 0.5 / 0.9); each discriminator steps every ``disc_every`` batches
(Adam, lr 1e-5, gradient norm clipped to 1). This runs under Lightning's manual optimisation;
``trainer.global_step`` counts generator steps (the discriminators' optimisers are stepped
directly so that ``max_steps`` means generator steps).

Pretrained feature networks come from torchvision (VGG-19, AlexNet) and timm (the ViT), and
are loaded only from local files (``feature_weights``): ``auto`` uses the weights when they are
already in the torch hub cache (``$TORCH_HOME/hub/checkpoints``) / the Hugging Face cache and
falls back to random initialisation with a warning; ``pretrained`` requires them; ``random``
never loads them (tests). They are frozen, kept out of the module's state dict (so checkpoints
stay small) and built on first use.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..base import TaskConfigError, ZooModule
from .evaluate import psnr_ssim_rgb

__all__ = [
    "ISPModule",
    "FeatureDiscriminator",
    "TokenDiscriminator",
    "load_torchvision_model",
    "load_timm_model",
    "lab_lightness",
    "tv_loss",
    "gaussian_blur_kernel",
]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# LPIPS's AlexNet slices end at these ReLUs (torchvision ``alexnet().features`` indices).
_ALEXNET_RELUS = ("features.1", "features.4", "features.7", "features.9", "features.11")
_ALEXNET_CHANNELS = (64, 192, 384, 256, 256)
_MS_SSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)

FeatureWeights = Literal["auto", "pretrained", "random"]


# ------------------------------------------------------------------------ pretrained networks


def _frozen(net: nn.Module) -> nn.Module:
    for m in net.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False  # features are tapped between layers
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def load_torchvision_model(name: str, feature_weights: FeatureWeights = "auto") -> nn.Module:
    """A torchvision model with its default ImageNet weights when they are in the local torch hub
    cache (never downloaded); random weights otherwise (``auto``: with a warning)."""
    import torchvision

    builder = torchvision.models.get_model_builder(name)
    weights = torchvision.models.get_model_weights(name).DEFAULT
    if feature_weights == "random":
        return builder(weights=None)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if cached.is_file():
        return builder(weights=weights, progress=False)
    msg = f"torchvision {name} weights not found at {cached} (download {weights.url} there to use them)"
    if feature_weights == "pretrained":
        raise FileNotFoundError(msg)
    warnings.warn(msg + "; using a randomly initialised network", stacklevel=2)
    return builder(weights=None)


def load_timm_model(name: str, feature_weights: FeatureWeights = "auto") -> nn.Module:
    """A timm model with its pretrained weights when they are in the local Hugging Face cache
    (never downloaded); random weights otherwise (``auto``: with a warning)."""
    import timm

    if feature_weights == "random":
        return timm.create_model(name, pretrained=False)
    path = None
    cfg = timm.models.get_pretrained_cfg(name.split(".")[0] if "." not in name else name)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        for filename in ("model.safetensors", "pytorch_model.bin"):
            found = try_to_load_from_cache(hub_id, filename)
            if isinstance(found, str):
                path = found
                break
    if path is not None:
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": path})
    msg = f"timm {name} weights not found in the Hugging Face cache (repo {hub_id or '?'})"
    if feature_weights == "pretrained":
        raise FileNotFoundError(msg)
    warnings.warn(msg + "; using a randomly initialised network", stacklevel=2)
    return timm.create_model(name, pretrained=False)


class _VGGContent(nn.Module):
    """VGG features up to one layer (default ``relu5_4`` of VGG-19), ImageNet-normalised input."""

    def __init__(self, name: str, layer: int, feature_weights: FeatureWeights):
        super().__init__()
        vgg = load_torchvision_model(name, feature_weights)
        self.features = vgg.features[: layer + 1]
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        _frozen(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features((x - self.mean) / self.std)


class _AlexNetTaps(nn.Module):
    """LPIPS's AlexNet feature maps (``relu1`` .. ``relu5``), on unnormalised input as in the
    authors' use of ``lpips_net.net``."""

    def __init__(self, layers: list[int], feature_weights: FeatureWeights):
        super().__init__()
        from torchvision.models.feature_extraction import create_feature_extractor

        alexnet = _frozen(load_torchvision_model("alexnet", feature_weights))
        self.layers = list(layers)
        self.body = create_feature_extractor(alexnet, {_ALEXNET_RELUS[k]: str(k) for k in sorted(set(layers))})
        _frozen(self)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.body(x)


class _ViTTokens(nn.Module):
    """Patch tokens (after the final norm, prefix tokens dropped) of a timm ViT."""

    def __init__(self, name: str, feature_weights: FeatureWeights):
        super().__init__()
        self.vit = load_timm_model(name, feature_weights)
        self.input_size = int(self.vit.pretrained_cfg.get("input_size", (3, 224, 224))[-1])
        self.num_prefix = int(getattr(self.vit, "num_prefix_tokens", 1))
        self.dim = int(self.vit.num_features)
        _frozen(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return self.vit.forward_features(x)[:, self.num_prefix :]


# ------------------------------------------------------------------------------ discriminators


class FeatureDiscriminator(nn.Module):
    """The authors' discriminator on feature maps: 5x5/2, 3x3/2, 3x3, 3x3, 3x3/2 convs (48, 128,
    192, 192, 128 channels, LeakyReLU 0.2), flatten, dense 1024 (width of its input inferred on
    the first call), LeakyReLU, dense 1 (a logit)."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 48, 5, stride=2, padding=2)
        self.conv2 = nn.Conv2d(48, 128, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(128, 192, 3, padding=1)
        self.conv4 = nn.Conv2d(192, 192, 3, padding=1)
        self.conv5 = nn.Conv2d(192, 128, 3, stride=2, padding=1)
        self.fc1 = nn.LazyLinear(1024)
        self.fc2 = nn.Linear(1024, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4, self.conv5):
            x = F.leaky_relu(conv(x), 0.2)
        x = F.leaky_relu(self.fc1(x.flatten(1)), 0.2)
        return self.fc2(x)


class TokenDiscriminator(nn.Module):
    """The authors' ViT-token discriminator: an MLP (hidden 512, ReLU) per token, averaged."""

    def __init__(self, in_dim: int = 768, hidden: int = 512):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.layers(tokens).mean(dim=1)


# ---------------------------------------------------------------------------------- loss terms


def lab_lightness(rgb: torch.Tensor) -> torch.Tensor:
    """CIE L* (0-100) of sRGB ``(B, 3, H, W)`` (D65), ``(B, 1, H, W)``."""
    lin = torch.where(rgb > 0.04045, ((rgb.clamp_min(0.04045) + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    y = 0.2126729 * lin[:, 0:1] + 0.7151522 * lin[:, 1:2] + 0.0721750 * lin[:, 2:3]
    eps = (6.0 / 29.0) ** 3
    f = torch.where(y > eps, y.clamp_min(eps) ** (1.0 / 3.0), y / (3 * (6.0 / 29.0) ** 2) + 4.0 / 29.0)
    return 116.0 * f - 16.0


def tv_loss(img: torch.Tensor) -> torch.Tensor:
    """Mean squared vertical plus mean squared horizontal differences."""
    dy = img[:, :, 1:, :] - img[:, :, :-1, :]
    dx = img[:, :, :, 1:] - img[:, :, :, :-1]
    return dy.pow(2).mean() + dx.pow(2).mean()


def gaussian_blur_kernel(size: int = 21, nsig: float = 3.0) -> torch.Tensor:
    """The authors' (DPED's) blur kernel: Gaussian bin masses over ``[-nsig, nsig]``, the square
    root of their outer product, normalised to sum 1."""
    interval = (2 * nsig + 1.0) / size
    x = torch.linspace(-nsig - interval / 2.0, nsig + interval / 2.0, size + 1, dtype=torch.float64)
    k1 = torch.diff(torch.special.ndtr(x))
    k = torch.sqrt(torch.outer(k1, k1))
    return (k / k.sum()).float()


def _luma3(x: torch.Tensor) -> torch.Tensor:
    y = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    return y.expand(-1, 3, -1, -1)


def _zero_centered_penalty(inputs: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    (grad,) = torch.autograd.grad(logits.sum(), inputs, create_graph=True)
    return grad.pow(2).flatten(1).sum(1)


def _ms_ssim_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

    side = min(pred.shape[-2:])
    scales = 1
    while scales < len(_MS_SSIM_BETAS) and side > 10 * 2 ** scales:  # (kernel - 1) * 2^(scales)
        scales += 1
    betas = torch.tensor(_MS_SSIM_BETAS[:scales])
    betas = tuple((betas / betas.sum()).tolist())
    val = multiscale_structural_similarity_index_measure(pred, target, data_range=1.0, betas=betas, normalize="relu")
    return 1.0 - val


# ------------------------------------------------------------------------------------- module


class ISPModule(ZooModule):
    """LightningModule for ISP models of the registry (``task == "isp"``).

    Batches: paired ``{"raw", "rgb"}``; unpaired ``{"raw", "raw_rgb", "target"}`` (see
    :class:`~zoo.tasks.isp.data.ISPDataModule`). Validation (``{"raw", "rgb"}``) logs
    ``val/psnr`` and ``val/ssim`` (RGB, uint8-rounded, as :func:`~zoo.tasks.isp.evaluate.evaluate_isp`).

    Args:
        model, model_args, pretrained, checkpoint_path: see :class:`~zoo.tasks.base.ZooModule`.
        recipe: ``paired`` (supervised baseline) or ``unpaired`` (adversarial, Arhire & Timofte).
        lr: generator Adam learning rate.
        betas: generator Adam betas.
        weight_decay: generator Adam weight decay.
        scheduler: ``none`` or ``cosine`` (to ``eta_min`` over the run), per step.
        eta_min: cosine floor.
        l1_weight: paired: weight of L1.
        ms_ssim_weight: paired: weight of ``1 - MS-SSIM`` (0: off).
        perceptual_weight: paired: weight of the VGG-19 ``relu5_4`` MSE (0: off; needs VGG weights).
        content_net: torchvision VGG for the content / perceptual term.
        content_layer: index in ``vgg.features`` of the content layer (35 = VGG-19 ``relu5_4``).
        feature_weights: pretrained feature networks: ``auto`` (local weights if present, else
            random with a warning), ``pretrained`` (required), ``random`` (never load; tests).
        content_weight: unpaired: weight of the content term.
        tv_weight: unpaired: weight of the total-variation term.
        texture_layers: unpaired: AlexNet (LPIPS) layers (0-4) with a texture discriminator each.
        texture_weight: unpaired: weight of each texture discriminator's generator loss.
        color_net: unpaired: timm ViT for the colour discriminator (None: no colour discriminator).
        color_weight: unpaired: weight of the colour discriminator's generator loss.
        disc_lr: discriminators' Adam learning rate.
        disc_betas: discriminators' Adam betas.
        disc_every: generator steps per discriminator step.
        disc_grad_clip: discriminators' gradient-norm clip (0: off).
        gp_weight: weight of the R1 + R2 penalties.
        grad_normalize: divide each generator term by the norm of its gradient (authors' weighting).
        disc_patch_size: RGB patch side of the training batches, used to size the
            discriminators' dense layers before training when the datamodule has no ``patch_size``.
    """

    def __init__(
        self,
        model: str = "isp_microisp",
        model_args: dict[str, Any] | None = None,
        pretrained: bool = False,
        checkpoint_path: str | None = None,
        recipe: Literal["paired", "unpaired"] = "paired",
        lr: float = 5e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        scheduler: Literal["none", "cosine"] = "none",
        eta_min: float = 1e-6,
        l1_weight: float = 1.0,
        ms_ssim_weight: float = 0.0,
        perceptual_weight: float = 0.0,
        content_net: str = "vgg19",
        content_layer: int = 35,
        feature_weights: FeatureWeights = "auto",
        content_weight: float = 1.0,
        tv_weight: float = 1.0,
        texture_layers: list[int] | None = None,
        texture_weight: float = 1.0,
        color_net: str | None = "vit_base_patch16_224",
        color_weight: float = 1.0,
        disc_lr: float = 1e-5,
        disc_betas: tuple[float, float] = (0.5, 0.9),
        disc_every: int = 10,
        disc_grad_clip: float = 1.0,
        gp_weight: float = 500.0,
        grad_normalize: bool = True,
        disc_patch_size: int | None = None,
    ):
        super().__init__(model=model, model_args=model_args, pretrained=pretrained, checkpoint_path=checkpoint_path)
        task = (getattr(self.net, "pretrained_cfg", None) or {}).get("task")
        if (task is not None and task != "isp") or getattr(self.net, "in_channels", None) != 4:
            raise TaskConfigError(f"model {model!r} is not an ISP model (task {task!r}); see `zoo list --task isp`")
        if recipe not in ("paired", "unpaired"):
            raise TaskConfigError(f"model.recipe must be 'paired' or 'unpaired', got {recipe!r}")
        if disc_every < 1:
            raise TaskConfigError(f"model.disc_every must be >= 1, got {disc_every}")
        self.recipe = recipe
        self.texture_layers = [0, 3] if texture_layers is None else [int(k) for k in texture_layers]
        if any(k < 0 or k >= len(_ALEXNET_RELUS) for k in self.texture_layers):
            raise TaskConfigError(f"model.texture_layers must be AlexNet layers 0-4, got {self.texture_layers}")
        self._nets: dict[str, nn.Module] = {}  # frozen feature networks: not submodules, not saved
        self.discriminators = nn.ModuleList()
        if recipe == "unpaired":
            self.automatic_optimization = False
            for k in self.texture_layers:
                self.discriminators.append(FeatureDiscriminator(_ALEXNET_CHANNELS[k]))
            if color_net:
                self.discriminators.append(TokenDiscriminator(self._net("color").dim))
            if not len(self.discriminators):
                raise TaskConfigError("the unpaired recipe needs at least one discriminator (texture_layers or color_net)")
        self.register_buffer("blur_kernel", gaussian_blur_kernel().expand(3, 1, 21, 21).clone(), persistent=False)

    # ----------------------------------------------------------------------- feature networks

    def _net(self, kind: str) -> nn.Module:
        hp = self.hparams
        if kind not in self._nets:
            if kind == "content":
                self._nets[kind] = _VGGContent(hp.content_net, hp.content_layer, hp.feature_weights)
            elif kind == "texture":
                self._nets[kind] = _AlexNetTaps(self.texture_layers, hp.feature_weights)
            elif kind == "color":
                self._nets[kind] = _ViTTokens(hp.color_net, hp.feature_weights)
            else:  # pragma: no cover
                raise KeyError(kind)
        net = self._nets[kind]
        device = self.blur_kernel.device if hasattr(self, "blur_kernel") else torch.device("cpu")
        if next(net.parameters()).device != device:
            net.to(device)
        return net

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        pairing = getattr(dm, "pairing", None)
        if stage == "fit" and pairing is not None and pairing != self.recipe:
            raise TaskConfigError(f"model.recipe is {self.recipe!r} but data.pairing is {pairing!r}; set both to the same")
        if self.recipe != "unpaired" or stage != "fit":
            return
        # Size the discriminators' first dense layers (lazy) before the optimisers are built.
        patch = getattr(dm, "patch_size", None) or self.hparams.disc_patch_size
        if not patch:
            raise TaskConfigError("the unpaired recipe needs the training patch size (data.patch_size or model.disc_patch_size)")
        with torch.no_grad():
            x = torch.zeros(1, 3, int(patch), int(patch), device=self.blur_kernel.device)
            for k, d in zip(self.texture_layers, self.discriminators):
                if isinstance(d.fc1, nn.LazyLinear) and d.fc1.has_uninitialized_params():
                    d(self._texture_features(x)[str(k)])

    # ------------------------------------------------------------------------------- features

    def _content_features(self, img: torch.Tensor) -> torch.Tensor:
        light = (lab_lightness(img) / 100.0).expand(-1, 3, -1, -1)
        return self._net("content")(light)

    def _texture_features(self, img: torch.Tensor) -> dict[str, torch.Tensor]:
        return self._net("texture")(_luma3(img))

    def _color_features(self, img: torch.Tensor) -> torch.Tensor:
        blurred = F.conv2d(img, self.blur_kernel.to(img.dtype), padding=10, groups=3)
        return self._net("color")(blurred)

    def _disc_inputs(self, real: torch.Tensor, fake: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(real, fake) inputs of every discriminator, in the order of ``self.discriminators``."""
        pairs = []
        if self.texture_layers:
            both = self._texture_features(torch.cat([real, fake]))
            for k in self.texture_layers:
                r, f = both[str(k)].chunk(2)
                pairs.append((r, f))
        if self.hparams.color_net:
            r, f = self._color_features(torch.cat([real, fake])).chunk(2)
            pairs.append((r, f))
        return pairs

    # ---------------------------------------------------------------------------------- losses

    def paired_loss(self, out: torch.Tensor, rgb: torch.Tensor) -> dict[str, torch.Tensor]:
        hp = self.hparams
        terms = {"l1": F.l1_loss(out, rgb)}
        loss = hp.l1_weight * terms["l1"]
        if hp.ms_ssim_weight:
            terms["ms_ssim"] = _ms_ssim_loss(out.clamp(0, 1), rgb)
            loss = loss + hp.ms_ssim_weight * terms["ms_ssim"]
        if hp.perceptual_weight:
            net = self._net("content")
            terms["perceptual"] = F.mse_loss(net(out), net(rgb))
            loss = loss + hp.perceptual_weight * terms["perceptual"]
        terms["loss"] = loss
        return terms

    def _gen_params(self) -> list[torch.Tensor]:
        return [p for p in self.net.parameters() if p.requires_grad]

    def _grad_norm(self, loss: torch.Tensor) -> torch.Tensor:
        grads = torch.autograd.grad(loss, self._gen_params(), retain_graph=True, allow_unused=True)
        sq = sum((g.detach().float().pow(2).sum() for g in grads if g is not None), torch.zeros((), device=loss.device))
        return 1.0 / (sq.sqrt() + 1e-8)

    def generator_terms(self, gen: torch.Tensor, raw_rgb: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """The unpaired generator's loss terms (unweighted)."""
        a, b = self._content_features(gen), self._content_features(raw_rgb).detach()
        terms = {"content": 2.0 * (a - b).pow(2).sum() / (a.numel() / a.shape[0]), "tv": tv_loss(gen)}
        for i, (d, (real, fake)) in enumerate(zip(self.discriminators, self._disc_inputs(target, gen))):
            terms[f"gan{i}"] = F.softplus(-(d(fake) - d(real.detach()))).mean()
        return terms

    def discriminator_loss(self, i: int, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """Relativistic pairing loss of discriminator ``i`` with R1 + R2 penalties on its inputs."""
        d = self.discriminators[i]
        real = real.detach().requires_grad_(True)
        fake = fake.detach().requires_grad_(True)
        real_logits, fake_logits = d(real), d(fake)
        penalty = _zero_centered_penalty(real, real_logits) + _zero_centered_penalty(fake, fake_logits)
        return F.softplus(-(real_logits - fake_logits)).mean() + self.hparams.gp_weight * penalty.mean()

    def _term_weight(self, name: str) -> float:
        hp = self.hparams
        if name == "content":
            return hp.content_weight
        if name == "tv":
            return hp.tv_weight
        i = int(name[3:])
        return hp.texture_weight if i < len(self.texture_layers) else hp.color_weight

    # -------------------------------------------------------------------------------- steps

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        if self.recipe == "paired":
            out = self.net(batch["raw"])
            terms = self.paired_loss(out, batch["rgb"])
            bs = batch["raw"].shape[0]
            self.log("train/loss", terms["loss"], prog_bar=True, on_step=True, on_epoch=False, batch_size=bs)
            for k, v in terms.items():
                if k != "loss":
                    self.log(f"train/{k}", v, on_step=True, on_epoch=False, batch_size=bs)
            return terms["loss"]
        self._unpaired_step(batch)
        return None

    def _unpaired_step(self, batch: dict[str, torch.Tensor]) -> None:
        hp = self.hparams
        opt_g, *opt_ds = self.optimizers()
        step = self.global_step
        raw, raw_rgb, target = batch["raw"], batch["raw_rgb"], batch["target"]
        bs = raw.shape[0]

        # Generator step (the discriminators' parameters frozen meanwhile).
        self.toggle_optimizer(opt_g)
        gen = self.net(raw)
        terms = self.generator_terms(gen, raw_rgb, target)
        objective = torch.zeros((), device=gen.device)
        for name, value in terms.items():
            scale = self._grad_norm(value) if hp.grad_normalize else 1.0
            objective = objective + self._term_weight(name) * scale * value
        opt_g.zero_grad()
        self.manual_backward(objective)
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        # The weighted sum of the raw terms (the optimised objective rescales each by 1 / |grad|).
        g_loss = sum(self._term_weight(name) * value.detach() for name, value in terms.items())
        self.log("train/g_loss", g_loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=bs)
        for name, value in terms.items():
            self.log(f"train/{name}", value.detach(), on_step=True, on_epoch=False, batch_size=bs)

        # Discriminator steps on the same batch, every ``disc_every`` generator steps.
        if step % hp.disc_every:
            return
        with torch.no_grad():
            pairs = self._disc_inputs(target, gen.detach())
        for i, (opt, (real, fake)) in enumerate(zip(opt_ds, pairs)):
            self.toggle_optimizer(opt)
            d_loss = self.discriminator_loss(i, real, fake)
            opt.zero_grad()
            self.manual_backward(d_loss)
            if hp.disc_grad_clip:
                self.clip_gradients(opt, gradient_clip_val=hp.disc_grad_clip, gradient_clip_algorithm="norm")
            opt.optimizer.step()  # not LightningOptimizer.step: global_step counts generator steps
            self.untoggle_optimizer(opt)
            self.log(f"train/d_loss{i}", d_loss.detach(), prog_bar=i == 0, on_step=True, on_epoch=False, batch_size=bs)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.recipe == "unpaired" and self.hparams.scheduler != "none":
            sch = self.lr_schedulers()
            if sch is not None:
                sch.step()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out = self.net(batch["raw"]).float().clamp(0, 1)
        psnrs, ssims = [], []
        for i in range(out.shape[0]):
            p, s = psnr_ssim_rgb(out[i], batch["rgb"][i])
            psnrs.append(p if math.isfinite(p) else 100.0)
            ssims.append(s)
        n = len(psnrs)
        self.log("val/psnr", sum(psnrs) / n, prog_bar=True, on_epoch=True, sync_dist=True, batch_size=n)
        self.log("val/ssim", sum(ssims) / n, on_epoch=True, sync_dist=True, batch_size=n)

    def configure_optimizers(self):
        hp = self.hparams
        opt_g = torch.optim.Adam(self.net.parameters(), lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay)
        sched = None
        if hp.scheduler == "cosine":
            t_max = max(1, int(self.trainer.estimated_stepping_batches))
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt_g, T_max=t_max, eta_min=hp.eta_min)
        elif hp.scheduler != "none":
            raise ValueError(f"scheduler must be 'none' or 'cosine', got {hp.scheduler!r}")
        if self.recipe == "paired":
            if sched is None:
                return {"optimizer": opt_g}
            return {"optimizer": opt_g, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        opt_ds = [torch.optim.Adam(d.parameters(), lr=hp.disc_lr, betas=tuple(hp.disc_betas)) for d in self.discriminators]
        if sched is None:
            return [opt_g, *opt_ds]
        return [opt_g, *opt_ds], [sched]
