"""Tiny autoencoders for diffusion latent spaces: TAESD, TAESDXL, TAESD3, TAEF1, TAEF2.

The design follows the authors' ``taesd.py`` (madebyollin/taesd, MIT, Copyright (c) 2023 Ollin
Boer Bohan): an encoder and a decoder, each a plain ``nn.Sequential`` of 3x3 convs and residual
``Block``s (three convs, a 1x1 skip where widths differ, ReLU fuse), 8x down / up-sampling, a
soft clamp ``tanh(x / 3) * 3`` on the decoder input. TAEF2 (the FLUX.2 latent space) adds a
"mid-block" branch to the lowest-resolution blocks, ``x + pool(x)`` with ``pool`` = 1x1 conv to
4x width, GroupNorm(4), ReLU, 1x1 conv back.

Module indices are the authors' (``encoder.N`` / ``decoder.N`` here are their ``N``), so their
two files, ``<name>_encoder.pth`` and ``<name>_decoder.pth`` (fp16 ones too), load unchanged:
``zoo.create("taef2", encoder_path=E, decoder_path=D)``. The diffusers format of the same
weights (``AutoencoderTiny``: ``encoder.layers.N``, ``decoder.layers.N-1`` since diffusers
applies the clamp in ``forward``) loads through :func:`~zoo.weights.filters_vae.filter_taesd`.

Images are RGB in [0, 1] (the authors' convention); ``forward`` is the reconstruction
``decode(encode(x))``; ``encode`` needs sides that are multiples of 8 (``forward`` pads by
replication and crops back); ``decode`` checks the latent's channel count.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo.pretrained import PretrainedCfg
from zoo.registry import register_model
from zoo.validate import check_image
from zoo.weights.filters_vae import filter_taesd

__all__ = ["TinyAutoEncoder", "TAEBlock", "Clamp", "taesd_encoder", "taesd_decoder"]

_PAPER = "TAESD: Tiny AutoEncoder for Stable Diffusion"
_SOURCE = "https://github.com/madebyollin/taesd"


def _conv(cin: int, cout: int, **kw: Any) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1, **kw)


class Clamp(nn.Module):
    """Soft clamp of the latent to (-3, 3)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class TAEBlock(nn.Module):
    """Three 3x3 convs with a skip; TAEF2's mid-blocks first add a pooled-width 1x1 branch."""

    def __init__(self, cin: int, cout: int, midblock_gn: bool = False):
        super().__init__()
        self.conv = nn.Sequential(_conv(cin, cout), nn.ReLU(), _conv(cout, cout), nn.ReLU(), _conv(cout, cout))
        self.skip = nn.Conv2d(cin, cout, 1, bias=False) if cin != cout else nn.Identity()
        self.fuse = nn.ReLU()
        self.pool = None
        if midblock_gn:
            wide = cin * 4
            self.pool = nn.Sequential(
                nn.Conv2d(cin, wide, 1, bias=False), nn.GroupNorm(4, wide), nn.ReLU(), nn.Conv2d(wide, cin, 1, bias=False)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + self.skip(x))


def taesd_encoder(latent_channels: int = 4, midblock_gn: bool = False, width: int = 64) -> nn.Sequential:
    c = width
    layers: list[nn.Module] = [_conv(3, c), TAEBlock(c, c)]
    for stage in range(3):
        mid = midblock_gn and stage == 2  # the lowest resolution
        layers += [_conv(c, c, stride=2, bias=False)] + [TAEBlock(c, c, mid) for _ in range(3)]
    layers.append(_conv(c, latent_channels))
    return nn.Sequential(*layers)


def taesd_decoder(latent_channels: int = 4, midblock_gn: bool = False, width: int = 64) -> nn.Sequential:
    c = width
    layers: list[nn.Module] = [Clamp(), _conv(latent_channels, c), nn.ReLU()]
    for stage in range(3):
        mid = midblock_gn and stage == 0  # the lowest resolution
        layers += [TAEBlock(c, c, mid) for _ in range(3)]
        layers += [nn.Upsample(scale_factor=2), _conv(c, c, bias=False)]
    layers += [TAEBlock(c, c), _conv(c, 3)]
    return nn.Sequential(*layers)


class TinyAutoEncoder(nn.Module):
    """TAESD-style encoder + decoder (images in [0, 1], latents in the teacher VAE's scale)."""

    stride = 8
    # The authors' 8-bit latent storage: raw latent <-> [0, 1] (``scale_latents``).
    latent_magnitude = 3.0
    latent_shift = 0.5

    def __init__(self, latent_channels: int = 4, midblock_gn: bool = False, width: int = 64):
        super().__init__()
        self.latent_channels = latent_channels
        self.encoder = taesd_encoder(latent_channels, midblock_gn, width)
        self.decoder = taesd_decoder(latent_channels, midblock_gn, width)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        check_image(x, channels=3, name=f"{type(self).__name__}.encode input (RGB in [0, 1])")
        h, w = x.shape[-2:]
        if not torch.jit.is_tracing() and (h % self.stride or w % self.stride):
            raise ValueError(
                f"encode: height and width must be multiples of {self.stride}, got {h}x{w}"
                " (forward pads and crops back; or pad the image yourself)"
            )
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        check_image(z, channels=self.latent_channels, value_range=None, name=f"{type(self).__name__}.decode latent")
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image(x, channels=3, name=f"{type(self).__name__} input (RGB in [0, 1])")
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.stride, (-w) % self.stride
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        return self.decode(self.encoder(x))[..., :h, :w]

    @classmethod
    def scale_latents(cls, z: torch.Tensor) -> torch.Tensor:
        """Raw latents -> [0, 1] (the authors' 8-bit PNG storage)."""
        return z.div(2 * cls.latent_magnitude).add(cls.latent_shift).clamp(0, 1)

    @classmethod
    def unscale_latents(cls, z: torch.Tensor) -> torch.Tensor:
        return z.sub(cls.latent_shift).mul(2 * cls.latent_magnitude)


def _load_part(module: nn.Module, path: str | os.PathLike, what: str, arch: str) -> None:
    from zoo.hub import apply_state_dict, read_state_dict, unwrap_state_dict

    sd = unwrap_state_dict(read_state_dict(path))
    apply_state_dict(module, sd, f"{arch} {what}", source=str(path))


def _build(name: str, latent_channels: int, midblock_gn: bool, encoder_path=None, decoder_path=None, **kwargs: Any):
    model = TinyAutoEncoder(latent_channels, midblock_gn, **kwargs)
    if encoder_path is not None:
        _load_part(model.encoder, encoder_path, "encoder", name)
    if decoder_path is not None:
        _load_part(model.decoder, decoder_path, "decoder", name)
    return model


def _diffusers_cfg(repo: str, license: str = "MIT") -> PretrainedCfg:
    return PretrainedCfg(
        tag="diffusers",
        hf_hub_id=repo,
        hf_filename="diffusion_pytorch_model.safetensors",
        filename=f"{repo.split('/')[-1]}.safetensors",
        license=license,
        filter_fn=filter_taesd,
        description="the authors' weights in diffusers' AutoencoderTiny layout (one file)",
    )


_COMMON = dict(
    task="vae",
    family="taesd",
    paper=_PAPER,
    arxiv=None,
    license="MIT",
    source=_SOURCE,
    input_size=(3, 512, 512),
    test_size=(3, 32, 32),
)


@register_model(**_COMMON, params=2_445_063, gmacs=131.83746, description="TAESD: Stable Diffusion 1.x/2.x latent space (4 ch)",
                pretrained_cfgs=[_diffusers_cfg("madebyollin/taesd")])
def taesd(encoder_path=None, decoder_path=None, **kwargs: Any):
    return _build("taesd", 4, False, encoder_path, decoder_path, **kwargs)


@register_model(**_COMMON, params=2_445_063, gmacs=131.83746, description="TAESDXL: SDXL latent space (4 ch)",
                pretrained_cfgs=[_diffusers_cfg("madebyollin/taesdxl")])
def taesdxl(encoder_path=None, decoder_path=None, **kwargs: Any):
    return _build("taesdxl", 4, False, encoder_path, decoder_path, **kwargs)


@register_model(**_COMMON, params=2_458_899, gmacs=131.894084, description="TAESD3: Stable Diffusion 3 latent space (16 ch)",
                pretrained_cfgs=[_diffusers_cfg("madebyollin/taesd3")])
def taesd3(encoder_path=None, decoder_path=None, **kwargs: Any):
    return _build("taesd3", 16, False, encoder_path, decoder_path, **kwargs)


@register_model(**_COMMON, params=2_458_899, gmacs=131.894084, description="TAEF1: FLUX.1 latent space (16 ch)",
                pretrained_cfgs=[_diffusers_cfg("madebyollin/taef1")])
def taef1(encoder_path=None, decoder_path=None, **kwargs: Any):
    return _build("taef1", 16, False, encoder_path, decoder_path, **kwargs)


@register_model(**_COMMON, params=2_677_027, gmacs=132.774887,
                description="TAEF2: FLUX.2 latent space (32 ch, mid-block GroupNorm branch); the authors publish "
                "taef2_encoder.pth / taef2_decoder.pth on GitHub: pass them as encoder_path / decoder_path")
def taef2(encoder_path=None, decoder_path=None, **kwargs: Any):
    return _build("taef2", 32, True, encoder_path, decoder_path, **kwargs)
