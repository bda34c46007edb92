"""VAE evaluation: reconstruct images (or clips) and score them.

Each image is encoded -- by the model's own encoder, or by the teacher's when the model decodes
a teacher's latent space (a decoder-only model, or ``teacher`` given) -- and decoded by the
model. Scores, on uint8-rounded RGB as the field reports them:

- ``psnr`` / ``ssim``: the model's reconstruction against the image (PSNR over the RGB values,
  peak 255; SSIM per RGB channel with an 11x11 Gaussian window, sigma 1.5, 'valid' filtering --
  scikit-image's and BasicSR's convention -- averaged over the channels);
- with a teacher, ``psnr_teacher`` / ``ssim_teacher``: against the teacher's own reconstruction
  of the same latent (how well a distilled decoder imitates it), and ``teacher_psnr`` /
  ``teacher_ssim``: the teacher's reconstruction against the image (the ceiling);
- with ``lpips``, LPIPS (VGG) of the reconstruction against the image;
- ``decode_ms``: the model's decode time per image (after one untimed warm-up decode; CUDA is
  synchronised around it).

Images are cut (top-left) to multiples of the model's and the teacher's down-sampling factor,
after the optional centre crop ``size``. With ``frames=T`` the folder holds frame folders and
video files (see :mod:`zoo.tasks.vae.data`); each sequence's first ``T`` frames are one clip,
scored per frame and averaged.

:class:`LPIPS` is LPIPS (Zhang et al., CVPR 2018; richzhang/PerceptualSimilarity, BSD-2-Clause)
with the VGG-16 backbone: torchvision's VGG-16 (ImageNet weights from the local torch hub cache
only, see :func:`vgg16_features`) tapped at relu1_2 .. relu5_3,
channel-normalised, squared differences weighted by LPIPS v0.1's linear layers (the file
torchmetrics ships, ``lpips_models/vgg.pth``), averaged over space and summed over layers.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..base import TaskConfigError
from ..image_codec.evaluate import psnr
from ..sr.data import list_images
from ..sr.metrics import ssim as _ssim_channel, to_uint8_image
from .data import center_crop, crop_to_multiple, image_tensor, list_sequences, read_frames
from .teachers import VAETeacher, build_teacher

__all__ = ["evaluate_vae", "psnr", "ssim", "LPIPS", "lpips_linear_weights", "vgg16_features", "per_frame", "is_video_model",
           "spatial_stride", "temporal_stride"]

# relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in torchvision's ``vgg16().features``
_VGG16_TAPS = (3, 8, 15, 22, 29)
_VGG16_CHANNELS = (64, 128, 256, 512, 512)
# LPIPS's input scaling (its ``ScalingLayer``), applied to images in [-1, 1]
_LPIPS_SHIFT = (-0.030, -0.088, -0.188)
_LPIPS_SCALE = (0.458, 0.448, 0.450)


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """SSIM of two images ``(1, 3, H, W)`` in [0, 1] on their uint8 values, per RGB channel and
    averaged (:func:`zoo.tasks.sr.metrics.ssim`: 11x11 Gaussian window, sigma 1.5, 'valid'
    filtering, as scikit-image's ``structural_similarity(gaussian_weights=True,
    use_sample_covariance=False)``)."""
    ua, ub = to_uint8_image(a), to_uint8_image(b)
    return float(np.mean([_ssim_channel(ua[..., c], ub[..., c]) for c in range(3)]))


def lpips_linear_weights() -> list[torch.Tensor] | None:
    """LPIPS v0.1's VGG linear-layer weights from the file torchmetrics ships (None if absent)."""
    try:
        import torchmetrics.functional.image.lpips as tm_lpips
    except ImportError:  # pragma: no cover - torchmetrics is a dependency of lightning
        return None
    path = Path(tm_lpips.__file__).parent / "lpips_models" / "vgg.pth"
    if not path.is_file():
        return None
    sd = torch.load(path, map_location="cpu", weights_only=True)
    return [sd[f"lin{k}.model.1.weight"].float() for k in range(len(_VGG16_TAPS))]


def vgg16_features(feature_weights: str = "auto") -> nn.Sequential:
    """torchvision's ``vgg16().features`` (the convolutional part only: the 100M-parameter
    classifier is never built) with its ImageNet weights from the local torch hub cache
    (``$TORCH_HOME/hub/checkpoints``, never downloaded): ``auto`` falls back to random weights
    with a warning, ``pretrained`` raises ``FileNotFoundError``, ``random`` never loads them."""
    from torchvision.models import VGG16_Weights
    from torchvision.models.vgg import cfgs, make_layers

    if feature_weights not in ("auto", "pretrained", "random"):
        raise ValueError(f"feature_weights must be 'auto', 'pretrained' or 'random', got {feature_weights!r}")
    features = make_layers(cfgs["D"], batch_norm=False)
    if feature_weights == "random":
        return features
    url = VGG16_Weights.DEFAULT.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    if cached.is_file():
        sd = torch.load(cached, map_location="cpu", weights_only=True)
        features.load_state_dict({k[len("features."):]: v for k, v in sd.items() if k.startswith("features.")})
        return features
    msg = f"torchvision vgg16 weights not found at {cached} (download {url} there to use them)"
    if feature_weights == "pretrained":
        raise FileNotFoundError(msg)
    warnings.warn(msg + "; using a randomly initialised network", stacklevel=2)
    return features


class LPIPS(nn.Module):
    """LPIPS distance (VGG) between images in [0, 1]; returns one value per image ``(B,)``.

    Args:
        feature_weights: VGG-16's ImageNet weights: ``auto`` (from the local torch hub cache when
            there, else random with a warning), ``pretrained`` (required), ``random`` (tests).
        linear: weight channels with LPIPS's learned linear layers (else all channels equally,
            LPIPS's "baseline" variant).

    Frozen; its weights never enter a checkpoint of the module that uses it.
    """

    def __init__(self, feature_weights: str = "auto", linear: bool = True):
        super().__init__()
        self.features = vgg16_features(feature_weights)[: _VGG16_TAPS[-1] + 1]
        for m in self.features:
            if isinstance(m, nn.ReLU):
                m.inplace = False
        self.register_buffer("shift", torch.tensor(_LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        weights = lpips_linear_weights() if linear else None
        if weights is None:
            if linear:
                warnings.warn("LPIPS linear weights not found (torchmetrics' lpips_models/vgg.pth); weighting channels equally", stacklevel=2)
            weights = [torch.full((1, c, 1, 1), 1.0 / c) for c in _VGG16_CHANNELS]
        for k, w in enumerate(weights):
            self.register_buffer(f"lin{k}", w, persistent=False)
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> LPIPS:
        return super().train(False)

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _VGG16_TAPS:
                out.append(x)
        return out

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.ndim == 5:  # clips: every frame is an image
            a, b = a.transpose(1, 2).flatten(0, 1), b.transpose(1, 2).flatten(0, 1)
        fa = self._taps((a * 2 - 1 - self.shift) / self.scale)
        fb = self._taps((b * 2 - 1 - self.shift) / self.scale)
        total = a.new_zeros(a.shape[0])
        for k, (x, y) in enumerate(zip(fa, fb)):
            x = x / torch.sqrt(1e-8 + x.pow(2).sum(1, keepdim=True))
            y = y / torch.sqrt(1e-8 + y.pow(2).sum(1, keepdim=True))
            total = total + F.conv2d((x - y).pow(2), getattr(self, f"lin{k}")).mean((1, 2, 3))
        return total


# ------------------------------------------------------------------------------- evaluation


def _int_attr(model: nn.Module, keys: tuple[str, ...]) -> int | None:
    for key in keys:
        value = getattr(model, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def spatial_stride(model: nn.Module) -> int | None:
    """A VAE's spatial down / up-sampling factor, if it says (``stride``, ``spatial_stride`` or
    ``spatial_compression_ratio``)."""
    return _int_attr(model, ("stride", "spatial_stride", "spatial_compression_ratio"))


def temporal_stride(model: nn.Module) -> int | None:
    """A video VAE's temporal factor, if it says (``temporal_stride`` / ``temporal_compression_ratio``)."""
    return _int_attr(model, ("temporal_stride", "temporal_compression_ratio"))


def _call(model: nn.Module, method: str, x: torch.Tensor, frame_wise: bool = False) -> torch.Tensor:
    """``model.method(x)`` (``forward``: ``model(x)``); with ``frame_wise``, clips go frame by frame."""
    fn = model if method == "forward" else getattr(model, method)
    return per_frame(fn, x) if frame_wise else fn(x)


def per_frame(fn, x: torch.Tensor) -> torch.Tensor:
    """``fn`` on every frame of a ``(B, C, T, H, W)`` clip (as a batch of images); images as they are."""
    if x.ndim != 5:
        return fn(x)
    b, t = x.shape[0], x.shape[2]
    y = fn(x.transpose(1, 2).flatten(0, 1))
    return y.reshape(b, t, *y.shape[1:]).transpose(1, 2)


def is_video_model(model: nn.Module) -> bool:
    """Whether a model's encode / decode take clips ``(B, C, T, H, W)`` (it says so with a
    ``video`` attribute or a temporal stride); image models see clips frame by frame."""
    return getattr(model, "video", False) is True or temporal_stride(model) is not None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _frames_of(x: torch.Tensor) -> list[torch.Tensor]:
    """``(1, 3, H, W)`` -> [itself]; ``(1, 3, T, H, W)`` -> T images ``(1, 3, H, W)``."""
    return [x] if x.ndim == 4 else [x[:, :, t] for t in range(x.shape[2])]


def _scores(pred: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """Mean PSNR and SSIM over the frames of ``pred`` vs ``target``."""
    if pred.shape != target.shape:
        raise ValueError(f"reconstruction has shape {tuple(pred.shape)}, the reference {tuple(target.shape)}")
    p = [psnr(a, b) for a, b in zip(_frames_of(pred), _frames_of(target))]
    s = [ssim(a, b) for a, b in zip(_frames_of(pred), _frames_of(target))]
    return float(np.mean(p)), float(np.mean(s))


def _mean(values: list) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


@torch.no_grad()
def evaluate_vae(
    model: nn.Module,
    data_root: str | os.PathLike,
    device: str | torch.device = "cpu",
    teacher: str | VAETeacher | None = None,
    teacher_class: str = "AutoencoderKL",
    teacher_subfolder: str | None = None,
    teacher_dtype: str = "float32",
    normalize_latents: bool = True,
    encoder: str = "auto",
    frames: int = 0,
    frame_stride: int = 1,
    size: int | None = None,
    max_images: int | None = None,
    lpips: bool = False,
    decode_fn: str = "decode",
    encode_fn: str = "encode",
) -> dict[str, Any]:
    """Reconstruct every image (or clip) under ``data_root`` and score it.

    Args:
        teacher: the teacher VAE whose latent space the model decodes: its weights (a diffusers
            folder, a checkpoint file or a hub repo id, for ``teacher_class``), or a built
            :class:`~zoo.tasks.vae.teachers.VAETeacher`; None: no teacher.
        teacher_class: diffusers class of the teacher (or ``zoo:NAME``).
        teacher_subfolder: folder of the VAE inside a pipeline repo (``vae``).
        teacher_dtype: float32, bfloat16 or float16 for the teacher.
        normalize_latents: the model decodes the teacher's normalised latents (scaling / shift
            factors, channel statistics: what diffusion models and TAESD use); off: the raw
            posterior mean (Turbo-VAED).
        encoder: who makes the latents: ``model``, ``teacher`` or ``auto`` (the teacher when there
            is one or the model has no encoder).
        frames: 0 for image folders; T to score the first T frames of each frame folder / video.
        frame_stride: keep every k-th frame.
        size: centre-crop images to this side first (None: whole images).
        max_images: score at most this many images / clips.
        lpips: also report LPIPS (VGG) against the image; needs torchvision's VGG-16 weights in
            the torch hub cache.
        decode_fn: the model's decode method (``forward`` calls the model).
        encode_fn: the model's encode method.
    """
    root = Path(data_root)
    if not root.is_dir():
        raise FileNotFoundError(f"no such folder: {root}")
    device = torch.device(device)
    if encoder not in ("auto", "model", "teacher"):
        raise TaskConfigError(f"encoder must be 'auto', 'model' or 'teacher', got {encoder!r}")
    if decode_fn != "forward" and not callable(getattr(model, decode_fn, None)):
        raise TaskConfigError(f"this model has no {decode_fn}() (is it a VAE? see `zoo list --task vae`)")
    if isinstance(teacher, str):
        teacher = build_teacher(teacher_class, teacher, teacher_subfolder, dtype=teacher_dtype,
                                normalize_latents=normalize_latents)
    has_encoder = callable(getattr(model, encode_fn, None))
    use_teacher = encoder == "teacher" or (encoder == "auto" and (teacher is not None or not has_encoder))
    if use_teacher and teacher is None:
        known = (getattr(model, "pretrained_cfg", None) or {}).get("vae_teacher")
        known = known.get("name") if isinstance(known, dict) else getattr(model, "teacher", None)
        hint = f" (its latent space: {known})" if isinstance(known, str) and known else ""
        raise TaskConfigError(f"this model has no {encode_fn}(): give the teacher VAE whose latents it decodes{hint}")
    if not use_teacher and not has_encoder:
        raise TaskConfigError(f"encoder='model' but the model has no {encode_fn}()")
    student_channels = getattr(model, "latent_channels", None)
    if teacher is not None and student_channels and teacher.latent_channels and student_channels != teacher.latent_channels:
        raise TaskConfigError(
            f"the model decodes {student_channels}-channel latents, teacher {teacher.name} makes {teacher.latent_channels}"
        )

    if frames:
        items = [p for p, _ in list_sequences(root, min_frames=frames, frame_stride=frame_stride)]
        what = "frame folders or videos"
    else:
        items = list_images(root)
        what = "images"
    items = items[:max_images] if max_images else items
    if not items:
        raise TaskConfigError(f"no {what} found under {root}")

    model = model.eval().to(device)
    video_model = is_video_model(model)
    if teacher is not None:
        teacher = teacher.to(device)
    multiple = spatial_stride(model) or 8
    if teacher is not None and teacher.spatial_ratio:
        multiple = math.lcm(multiple, teacher.spatial_ratio)
    perceptual = LPIPS("pretrained").to(device) if lpips else None

    rows: list[dict[str, Any]] = []
    warm = False
    for path in items:
        x = read_frames(path, 0, frames, frame_stride) if frames else image_tensor(path)
        if frames and x.shape[1] < frames:
            raise ValueError(f"{path} has {x.shape[1]} frames, fewer than {frames}")
        x = crop_to_multiple(center_crop(x, size), multiple)[None].to(device)
        z = teacher.encode_latents(x) if use_teacher else _call(model, encode_fn, x, frame_wise=not video_model)
        # clips decode frame by frame unless both the model and the latent space are video ones
        frame_wise = not (video_model and (not use_teacher or teacher.video))
        if not warm:
            _call(model, decode_fn, z, frame_wise)
            warm = True
        _sync(device)
        t0 = time.perf_counter()
        y = _call(model, decode_fn, z, frame_wise)
        _sync(device)
        dt = time.perf_counter() - t0
        y = y.float().clamp(0, 1).cpu()
        xc = x.cpu()
        p, s = _scores(y, xc)
        row: dict[str, Any] = {"image": path.name, "psnr": p, "ssim": s}
        if teacher is not None:
            t = teacher.decode_latents(z).cpu()
            row["psnr_teacher"], row["ssim_teacher"] = _scores(y, t)
            row["teacher_psnr"], row["teacher_ssim"] = _scores(t, xc)
        if perceptual is not None:
            row["lpips"] = float(perceptual(y.to(device), x).mean())
        row["decode_ms"] = 1000 * dt
        if frames:
            row["frames"] = int(y.shape[2])
        rows.append(row)

    result: dict[str, Any] = {
        "model": (getattr(model, "pretrained_cfg", None) or {}).get("architecture", type(model).__name__),
        "data": str(root),
        "images": len(rows),
        "encoder": "teacher" if use_teacher else "model",
    }
    if teacher is not None:
        result["teacher"] = teacher.name
    for key in ("psnr", "ssim", "psnr_teacher", "ssim_teacher", "teacher_psnr", "teacher_ssim", "lpips", "decode_ms"):
        if key in rows[0]:
            result[key] = _mean([r[key] for r in rows])
    result["per_image"] = rows
    return result
