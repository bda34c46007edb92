"""Teacher autoencoders for decoder distillation: diffusers' VAEs, used as they are.

:class:`VAETeacher` wraps a diffusers autoencoder (``AutoencoderKL``, ``AutoencoderKLFlux2``,
``AutoencoderDC``, ``AutoencoderKLCogVideoX``, ``AutoencoderKLLTXVideo``, ``AutoencoderKLWan`` ...)
or a zoo VAE (``zoo:taesd``) behind one convention, the one the zoo's tiny autoencoders use:

- images are RGB in [0, 1] (the teacher sees ``2 x - 1``), ``(B, 3, H, W)``; video teachers take
  clips ``(B, 3, T, H, W)``;
- latents are the ones a diffusion model (and a distilled decoder) works with, the posterior
  mean normalised as diffusers' pipelines do before denoising::

      z = (mean - shift_factor - latents_mean) * scaling_factor / latents_std

  with ``shift_factor`` / ``latents_mean`` 0 and ``scaling_factor`` / ``latents_std`` 1 where a
  teacher's config has none (SD: ``mean * 0.18215``; SD3 / FLUX.1: ``(mean - shift) * scale``;
  LTX-Video, Mochi, SDXL-style configs with per-channel statistics; Wan / Qwen-Image:
  ``(mean - latents_mean) / latents_std``; FLUX.2's ``AutoencoderKLFlux2`` has no factors, so
  its latents are the raw 32-channel mean, which TAEF2 decodes -- its BatchNorm acts on patchified
  latents inside the pipeline);
- ``decode_latents(z)`` inverts that and returns the teacher's image in [0, 1];
- ``normalize_latents=False`` gives the raw posterior mean instead (decoders distilled on raw
  latents, such as Turbo-VAED).

A video teacher given images (``(B, 3, H, W)``) encodes them as one-frame clips and returns
``(B, C, h, w)`` latents (its "image mode", e.g. Qwen-Image's VAE); an image teacher given clips
encodes every frame. Weights load offline first (a local folder, a single ``.safetensors`` /
``.ckpt`` file, or the Hugging Face cache) and are downloaded only when they are missing and
``HF_HUB_OFFLINE`` is not set.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

__all__ = ["VAETeacher", "build_teacher", "tiny_autoencoder_kl_config", "DTYPES"]

# ``org/name`` or ``name`` as the Hugging Face hub spells repo ids
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def tiny_autoencoder_kl_config(latent_channels: int = 4, width: int = 16, downsamples: int = 3) -> dict[str, Any]:
    """Config of a small random ``AutoencoderKL`` with ``2 ** downsamples`` down-sampling (8x by
    default, like SD's), for tests and smoke runs."""
    levels = downsamples + 1
    return {
        "block_out_channels": [width] * levels,
        "down_block_types": ["DownEncoderBlock2D"] * levels,
        "up_block_types": ["UpDecoderBlock2D"] * levels,
        "layers_per_block": 1,
        "latent_channels": latent_channels,
        "norm_num_groups": min(8, width),
        "mid_block_add_attention": False,
    }


def _diffusers_class(name: str) -> type:
    try:
        import diffusers
    except ImportError as e:  # pragma: no cover - diffusers is a dependency
        raise ImportError("teacher VAEs come from diffusers: pip install diffusers") from e
    cls = getattr(diffusers, name, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        known = sorted(n for n in dir(diffusers) if n.startswith(("Autoencoder", "ConsistencyDecoder", "VQModel")))
        raise ValueError(f"teacher class {name!r} is not a diffusers model (autoencoders: {', '.join(known)})")
    return cls


def _load_pretrained(cls: type, path: str, subfolder: str | None, dtype: torch.dtype) -> nn.Module:
    """``cls`` from a local folder, a single checkpoint file, the Hugging Face cache, or (online)
    the hub, in that order."""
    import importlib.util

    from huggingface_hub import is_offline_mode

    # without accelerate, diffusers warns on every load unless told not to try it
    kw: dict[str, Any] = {} if importlib.util.find_spec("accelerate") else {"low_cpu_mem_usage": False}
    local = Path(path).expanduser()
    if local.is_file():
        if not hasattr(cls, "from_single_file"):
            raise ValueError(f"{cls.__name__} cannot load a single checkpoint file ({local}); pass a diffusers folder")
        return cls.from_single_file(str(local), torch_dtype=dtype, **kw)
    if local.is_dir():
        return cls.from_pretrained(str(local), subfolder=subfolder, torch_dtype=dtype, **kw)
    if not _REPO_ID.fullmatch(path):
        raise FileNotFoundError(f"teacher weights {path} not found (neither a folder, a file nor a hub repo id)")
    where = f"{path}" + (f" (subfolder {subfolder})" if subfolder else "")
    try:
        return cls.from_pretrained(path, subfolder=subfolder, torch_dtype=dtype, local_files_only=True, **kw)
    except (OSError, ValueError) as e:
        if is_offline_mode():
            raise FileNotFoundError(f"teacher {where} is not in the Hugging Face cache and HF_HUB_OFFLINE is set") from e
    try:
        return cls.from_pretrained(path, subfolder=subfolder, torch_dtype=dtype, **kw)
    except Exception as e:  # network / hub errors of every kind: one clear message, cause chained
        raise FileNotFoundError(f"cannot load teacher {cls.__name__} from {where}: {type(e).__name__}: {e}") from e


def _config_value(vae: nn.Module, key: str) -> Any:
    config = getattr(vae, "config", None)
    if config is None:
        return None
    return config.get(key) if hasattr(config, "get") else getattr(config, key, None)


def _attr_or_config(vae: nn.Module, key: str) -> Any:
    # an instance attribute (LTX-Video computes its ratios), else the config entry; diffusers
    # warns when config entries are read as attributes
    return vars(vae).get(key) or _config_value(vae, key)


class VAETeacher(nn.Module):
    """A frozen teacher autoencoder (see the module docstring for the conventions).

    Args:
        vae: a diffusers autoencoder, or a zoo VAE (``encode`` / ``decode`` on [0, 1] images).
        scaling_factor / shift_factor: override the config's factors (diffusers teachers).
        decode_kwargs: extra keyword arguments for ``vae.decode`` (e.g. LTX-Video's ``temb``).
        name: how errors and checkpoints name the teacher.
        normalize_latents: False: the latents are the raw posterior mean (no factors, no
            per-channel statistics), for decoders distilled on those (Turbo-VAED).
    """

    def __init__(
        self,
        vae: nn.Module,
        scaling_factor: float | None = None,
        shift_factor: float | None = None,
        decode_kwargs: dict[str, Any] | None = None,
        name: str | None = None,
        normalize_latents: bool = True,
    ):
        super().__init__()
        self.vae = vae.eval().requires_grad_(False)
        self.name = name or type(vae).__name__
        self.is_diffusers = getattr(vae, "config", None) is not None and hasattr(vae, "from_pretrained")
        self.decode_kwargs = dict(decode_kwargs or {})
        # latents of 5-D (video) teachers have a time axis; 3-D convolutions tell them apart
        self.video = self.is_diffusers and any(isinstance(m, nn.Conv3d) for m in vae.modules())
        self.normalize_latents = normalize_latents
        if not normalize_latents:  # the raw posterior mean (e.g. what Turbo-VAED decodes)
            scale, shift = None, None
        elif self.is_diffusers:
            scale = scaling_factor if scaling_factor is not None else _config_value(vae, "scaling_factor")
            shift = shift_factor if shift_factor is not None else _config_value(vae, "shift_factor")
        else:
            scale, shift = scaling_factor, shift_factor
        self.scaling_factor = float(scale) if scale is not None else 1.0
        self.shift_factor = float(shift) if shift is not None else 0.0
        mean, std = self._channel_stats(vae) if normalize_latents else (None, None)
        self.register_buffer("latents_mean", mean, persistent=False)
        self.register_buffer("latents_std", std, persistent=False)
        self.latent_channels = self._latent_channels(vae)
        self.spatial_ratio = self._spatial_ratio(vae)
        ratio = _attr_or_config(vae, "temporal_compression_ratio")
        self.temporal_ratio = int(ratio) if ratio else (1 if not self.video else None)

    # ------------------------------------------------------------------ what the teacher is

    @staticmethod
    def _channel_stats(vae: nn.Module) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        stats = []
        for key in ("latents_mean", "latents_std"):
            value = dict(vae.named_buffers(recurse=False)).get(key)  # LTX-Video keeps them as buffers
            if value is None:
                value = _config_value(vae, key)  # SDXL-style / Wan / Mochi / Qwen configs
            stats.append(None if value is None else torch.as_tensor(value, dtype=torch.float32).detach().clone().flatten())
        return stats[0], stats[1]

    @staticmethod
    def _latent_channels(vae: nn.Module) -> int | None:
        for key in ("latent_channels", "z_dim"):
            value = _config_value(vae, key)
            if value:
                return int(value)
        value = getattr(vae, "latent_channels", None)  # zoo VAEs
        return int(value) if value else None

    @staticmethod
    def _spatial_ratio(vae: nn.Module) -> int | None:
        ratio = _attr_or_config(vae, "spatial_compression_ratio")
        if ratio:
            return int(ratio)
        stride = getattr(vae, "stride", None)  # zoo VAEs
        if isinstance(stride, int):
            return stride
        blocks = _config_value(vae, "block_out_channels")
        return 2 ** (len(blocks) - 1) if blocks else None

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    def train(self, mode: bool = True) -> VAETeacher:  # a teacher never leaves eval mode
        return super().train(False)

    def extra_repr(self) -> str:
        return (f"name={self.name}, latent_channels={self.latent_channels}, spatial_ratio={self.spatial_ratio}, "
                f"scaling_factor={self.scaling_factor}, shift_factor={self.shift_factor}, video={self.video}")

    def describe(self) -> dict[str, Any]:
        """What a checkpoint records about the teacher."""
        return {"name": self.name, "latent_channels": self.latent_channels, "spatial_ratio": self.spatial_ratio,
                "temporal_ratio": self.temporal_ratio, "scaling_factor": self.scaling_factor,
                "shift_factor": self.shift_factor, "normalize_latents": self.normalize_latents, "video": self.video}

    # --------------------------------------------------------------------- normalisation

    def _stats(self, z: torch.Tensor) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        shape = (1, -1) + (1,) * (z.ndim - 2)
        mean = self.latents_mean.to(z).view(shape) if self.latents_mean is not None else 0.0
        std = self.latents_std.to(z).view(shape) if self.latents_std is not None else 1.0
        return mean, std

    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(raw)
        return (raw - self.shift_factor - mean) * self.scaling_factor / std

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(z)
        return z * std / self.scaling_factor + mean + self.shift_factor

    # ------------------------------------------------------------------- encode / decode

    def _check(self, x: torch.Tensor, what: str, channels: int | None) -> None:
        if not isinstance(x, torch.Tensor) or x.ndim not in (4, 5):
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"teacher {self.name}: {what} must be (B, C, H, W) or (B, C, T, H, W), got {shape}")
        if channels is not None and x.shape[1] != channels:
            raise ValueError(f"teacher {self.name}: {what} must have {channels} channels, got shape {tuple(x.shape)}")
        r = self.spatial_ratio
        if what == "images" and r and (x.shape[-1] % r or x.shape[-2] % r):
            raise ValueError(f"teacher {self.name}: image sides must be multiples of {r}, got {tuple(x.shape[-2:])}")

    @torch.no_grad()
    def encode_latents(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> the normalised posterior mean (float32)."""
        self._check(images, "images", 3)
        if not self.is_diffusers:
            return self.vae.encode(images.to(self.dtype)).float()
        frames = images.ndim == 5
        x = images
        if self.video and not frames:
            x = x.unsqueeze(2)  # one-frame clips
        elif frames and not self.video:
            b, c, t, h, w = x.shape
            x = x.transpose(1, 2).reshape(b * t, c, h, w)
        out = self.vae.encode(x.to(self.dtype) * 2 - 1)
        dist = getattr(out, "latent_dist", None)
        if dist is not None:
            raw = dist.mode()  # the mean of a Gaussian posterior
        else:
            raw = getattr(out, "latent", None)
            raw = out[0] if raw is None else raw
        z = self.normalize(raw.float())
        if self.video and not frames:
            z = z.squeeze(2)
        elif frames and not self.video:
            z = z.reshape(b, t, *z.shape[1:]).transpose(1, 2)
        return z

    @torch.no_grad()
    def decode_latents(self, z: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        """Normalised latents -> images in [0, 1] (float32; clamped unless ``clamp=False``)."""
        self._check(z, "latents", self.latent_channels)
        if not self.is_diffusers:
            y = self.vae.decode(z.to(self.dtype)).float()
            return y.clamp(0, 1) if clamp else y
        frames = z.ndim == 5
        raw = self.denormalize(z.float())
        if self.video and not frames:
            raw = raw.unsqueeze(2)
        elif frames and not self.video:
            b, c, t, h, w = raw.shape
            raw = raw.transpose(1, 2).reshape(b * t, c, h, w)
        out = self.vae.decode(raw.to(self.dtype), **self.decode_kwargs)
        y = getattr(out, "sample", None)
        y = (out[0] if y is None else y).float().add(1).div(2)
        if self.video and not frames:
            y = y.squeeze(2)
        elif frames and not self.video:
            y = y.reshape(b, t, *y.shape[1:]).transpose(1, 2)
        return y.clamp(0, 1) if clamp else y

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The teacher's reconstruction of ``images``."""
        return self.decode_latents(self.encode_latents(images))


def build_teacher(
    teacher: str = "AutoencoderKL",
    path: str | None = None,
    subfolder: str | None = None,
    config: dict[str, Any] | None = None,
    dtype: str = "float32",
    scaling_factor: float | None = None,
    shift_factor: float | None = None,
    decode_kwargs: dict[str, Any] | None = None,
    normalize_latents: bool = True,
) -> VAETeacher:
    """A frozen :class:`VAETeacher`.

    Args:
        teacher: a diffusers class name (``AutoencoderKL``, ``AutoencoderKLLTXVideo`` ...), or
            ``zoo:NAME`` for a registered zoo VAE (``path`` is then its checkpoint file).
        path: a diffusers folder, a single checkpoint file, or a hub repo id
            (``stabilityai/sd-vae-ft-mse``); ``None`` with ``config`` builds a random teacher.
        subfolder: the folder of the VAE inside a pipeline repo (``vae``).
        config: constructor arguments of a randomly initialised teacher (tests, smoke runs); see
            :func:`tiny_autoencoder_kl_config`.
        dtype: ``float32``, ``bfloat16`` or ``float16`` for the teacher's weights.
        scaling_factor / shift_factor: override the teacher config's latent factors.
        decode_kwargs: extra arguments for the teacher's ``decode``.
        normalize_latents: False for the raw posterior mean (see :class:`VAETeacher`).
    """
    if dtype not in DTYPES:
        raise ValueError(f"teacher dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    torch_dtype = DTYPES[dtype]
    if teacher.startswith("zoo:"):
        import zoo

        name = teacher[len("zoo:"):]
        vae = zoo.create(name, checkpoint_path=path)
        vae = vae.to(torch_dtype) if torch_dtype != torch.float32 else vae
        if not (hasattr(vae, "encode") and hasattr(vae, "decode")):
            raise ValueError(f"zoo model {name!r} is not an autoencoder (it needs encode and decode)")
        return VAETeacher(vae, scaling_factor, shift_factor, decode_kwargs, name=teacher, normalize_latents=normalize_latents)
    cls = _diffusers_class(teacher)
    if path is not None and config is not None:
        raise ValueError("give the teacher's weights (path) or a config for a random teacher, not both")
    if path is not None:
        vae = _load_pretrained(cls, str(path), subfolder, torch_dtype)
        name = f"{teacher}:{path}" + (f"/{subfolder}" if subfolder else "")
    elif config is not None:
        vae = cls(**dict(config))
        vae = vae.to(torch_dtype) if torch_dtype != torch.float32 else vae
        name = f"{teacher}(random)"
    else:
        raise ValueError(f"teacher {teacher}: give its weights (a folder, a file or a hub repo id) or a config")
    return VAETeacher(vae, scaling_factor, shift_factor, decode_kwargs, name=name, normalize_latents=normalize_latents)
