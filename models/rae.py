"""RAE: Representation Autoencoders, a ViT decoder on a frozen representation encoder.

"Diffusion Transformers with Representation Autoencoders" (Boyang Zheng, Nanye Ma, Shengbang Tong,
Saining Xie; arXiv 2510.11690). The design follows the authors' stage-1 ``RAE`` (bytetriper/RAE,
``src/stage1/rae.py``, ``stage1/encoders/dinov2.py``, ``stage1/decoders/decoder.py``; MIT) with
their published DINOv2-B configuration (``configs/stage1/pretrained/DINOv2-B.yaml``):

- encoder: DINOv2 ViT-B/14 with 4 registers (the authors load ``facebook/dinov2-with-registers-base``
  with Hugging Face; here timm's ``vit_base_patch14_reg4_dinov2``, the same weights), frozen. The
  image (RGB in [0, 1]) is resized to ``encoder_input_size`` (224; bicubic, as the authors) and
  ImageNet-normalised; the tokens are the last layer's *patch* tokens (class and register tokens
  dropped) after the final LayerNorm *without its affine* (the authors set ``weight = bias = None``):
  ``encode(x)`` returns them, (B, 256, 768), the RAE latent;
- decoder: the authors' ``GeneralDecoder``, a ViT-MAE-style decoder: linear embed to the decoder
  width, a trainable class token, fixed 2D sin-cos position embeddings, pre-norm ViT blocks
  (LayerNorm eps 1e-12, exact GELU; timm ``Block`` here, q/k/v fused), LayerNorm, a linear head to
  16x16x3 pixels per token, un-patchify, ImageNet de-normalisation: ``decode(tokens)`` returns the
  image (B, 3, 256, 256) in [0, 1] (not clamped). The published decoder is ViT-XL (1152 wide, 28
  blocks, 16 heads, MLP 4096), trained with latent noise ``noise_tau = 0.8`` (``ViTXL_n08``).
  A token grid other than the decoder's is resized bilinearly first (the authors' ``interpolate_latent``).

``forward(x)`` = ``decode(encode(x))``. In training mode ``encode`` adds the authors' latent noise
``z + sigma * n`` with ``sigma ~ U(0, noise_tau)`` per sample (``noise_tau = 0`` by default; the
authors trained the decoder with 0.8).

Module names of the decoder are the authors' except inside the blocks, which are timm's;
:func:`~zoo.weights.filters_vaed.filter_rae` converts the authors' decoder file
(``decoders/dinov2/wReg_base/ViTXL_n08/model.pt`` on ``nyu-visionx/RAE-collections``) and completes
it with the encoder (timm's DINOv2 weights, fetched when the model has none).
:func:`~zoo.weights.filters_vaed.hf_dinov2_to_timm` converts the Hugging Face encoder file.
The latent statistics (``stats/.../stat.pt``) that the authors' diffusion stage normalises with are
not part of this model.
"""

from __future__ import annotations

import math
import os
from functools import partial
from typing import Any

import numpy as np
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from timm.models.vision_transformer import Block

from zoo.pretrained import PretrainedCfg
from zoo.registry import register_model
from zoo.validate import check_image
from zoo.weights.filters_vaed import filter_rae, hf_dinov2_to_timm

__all__ = ["RAE", "RAEDecoder", "sincos_pos_embed_2d", "RAE_DECODERS"]

_PAPER = "Diffusion Transformers with Representation Autoencoders"
_SOURCE = "https://github.com/bytetriper/RAE"
_HF_REPO = "nyu-visionx/RAE-collections"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# decoder sizes (ViT-MAE decoder fields): ViTXL is the published decoder (the authors' configs/decoder/ViTXL);
# ViTB / ViTL are the smaller sizes of their decoder-scaling study, for training your own
RAE_DECODERS: dict[str, dict[str, int]] = {
    "ViTB": dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072),
    "ViTL": dict(hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096),
    "ViTXL": dict(hidden_size=1152, num_layers=28, num_heads=16, intermediate_size=4096),
}


def sincos_pos_embed_2d(dim: int, grid: int, cls_token: bool = True) -> torch.Tensor:
    """MAE's fixed 2D sin-cos position embedding (grid_size x grid_size, optional zero class row),
    computed in float64 as the authors' numpy code does, returned as float32 (1, N, dim)."""
    if dim % 4:
        raise ValueError(f"the sin-cos position embedding needs a width divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4))
    gw, gh = np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32))  # w first, as MAE

    def emb(pos: np.ndarray) -> np.ndarray:
        out = np.einsum("m,d->md", pos.reshape(-1).astype(np.float64), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    pe = np.concatenate([emb(gw), emb(gh)], axis=1)  # MAE: first half from grid[0] (the w coordinates)
    if cls_token:
        pe = np.concatenate([np.zeros([1, dim]), pe], axis=0)
    return torch.from_numpy(pe).float().unsqueeze(0)


class RAEDecoder(nn.Module):
    """The authors' ``GeneralDecoder`` (ViT-MAE decoder over all tokens, trainable class token)."""

    def __init__(
        self,
        latent_dim: int = 768,
        num_patches: int = 256,
        patch_size: int = 16,
        hidden_size: int = 1152,
        num_layers: int = 28,
        num_heads: int = 16,
        intermediate_size: int = 4096,
        out_channels: int = 3,
        layer_norm_eps: float = 1e-12,
    ):
        super().__init__()
        grid = math.isqrt(num_patches)
        if grid * grid != num_patches:
            raise ValueError(f"num_patches must be a square, got {num_patches}")
        self.num_patches = num_patches
        self.grid = grid
        self.patch_size = patch_size
        self.out_channels = out_channels
        self.image_size = grid * patch_size
        norm = partial(nn.LayerNorm, eps=layer_norm_eps)
        self.decoder_embed = nn.Linear(latent_dim, hidden_size)
        # fixed (not trained), but a parameter as in the authors' module, so their file's key loads
        self.decoder_pos_embed = nn.Parameter(sincos_pos_embed_2d(hidden_size, grid), requires_grad=False)
        self.trainable_cls_token = nn.Parameter(torch.zeros(1, 1, hidden_size))
        self.decoder_layers = nn.ModuleList(
            Block(hidden_size, num_heads, mlp_ratio=intermediate_size / hidden_size, qkv_bias=True, norm_layer=norm)
            for _ in range(num_layers)
        )
        self.decoder_norm = norm(hidden_size)
        self.decoder_pred = nn.Linear(hidden_size, patch_size**2 * out_channels)

    def interpolate_latent(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        if n == self.num_patches:
            return x
        side = math.isqrt(n)
        x = rearrange(x, "b (h w) c -> b c h w", h=side, w=side)
        x = F.interpolate(x, size=(self.grid, self.grid), mode="bilinear", align_corners=False)
        return rearrange(x, "b c h w -> b (h w) c")

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        return rearrange(x, "b (h w) (p q c) -> b c (h p) (w q)", h=self.grid, w=self.grid, p=p, q=p, c=self.out_channels)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, latent_dim) tokens -> (B, C, H, W) in the encoder's normalised pixel space."""
        x = self.interpolate_latent(self.decoder_embed(tokens))
        x = torch.cat([self.trainable_cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.decoder_pos_embed.to(x.dtype)
        for blk in self.decoder_layers:
            x = blk(x)
        x = self.decoder_pred(self.decoder_norm(x))
        return self.unpatchify(x[:, 1:])


class RAE(nn.Module):
    """Frozen timm representation encoder + the authors' ViT decoder (images in [0, 1])."""

    def __init__(
        self,
        encoder_name: str = "vit_base_patch14_reg4_dinov2.lvd142m",
        encoder_input_size: int = 224,
        encoder_kwargs: dict[str, Any] | None = None,
        decoder: str | dict[str, int] = "ViTXL",
        decoder_patch_size: int = 16,
        noise_tau: float = 0.0,
        encoder_pretrained: bool = False,
        encoder_path: str | os.PathLike | None = None,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ):
        super().__init__()
        self.encoder_name = encoder_name
        self.encoder_input_size = encoder_input_size
        self.encoder_kwargs = dict(encoder_kwargs or {})
        self.noise_tau = noise_tau
        self.encoder = self._make_encoder(pretrained=encoder_pretrained)
        self.encoder_loaded = bool(encoder_pretrained)
        ps = self.encoder.patch_embed.patch_size[0]
        if encoder_input_size % ps:
            raise ValueError(f"encoder_input_size {encoder_input_size} must be a multiple of the encoder patch size {ps}")
        self.num_patches = (encoder_input_size // ps) ** 2
        self.latent_channels = self.encoder.embed_dim
        dec = RAE_DECODERS[decoder] if isinstance(decoder, str) else dict(decoder)
        self.decoder = RAEDecoder(self.latent_channels, self.num_patches, decoder_patch_size, **dec)
        self.image_size = self.decoder.image_size
        # float64 so that a float64 model keeps the exact constants; cast to the input's dtype on use
        self.register_buffer("pixel_mean", torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std, dtype=torch.float64).view(1, 3, 1, 1), persistent=False)
        if encoder_path is not None:
            self.load_encoder_file(encoder_path)

    # -- encoder weights ---------------------------------------------------------------------

    def _make_encoder(self, pretrained: bool) -> nn.Module:
        enc = timm.create_model(
            self.encoder_name, pretrained=pretrained, img_size=self.encoder_input_size, num_classes=0, **self.encoder_kwargs
        )
        # the authors' Dinov2withNorm: final LayerNorm without its affine
        enc.norm = nn.LayerNorm(enc.embed_dim, eps=enc.norm.eps, elementwise_affine=False)
        enc.requires_grad_(False)
        return enc

    def load_encoder_pretrained(self) -> None:
        """Fetch the encoder's weights with timm (Hugging Face hub ``timm/...`` or its cache)."""
        from zoo.hub import CheckpointError

        try:
            enc = self._make_encoder(pretrained=True)
        except Exception as e:  # offline / not cached
            raise CheckpointError(
                f"the RAE decoder file holds no encoder, and timm could not get {self.encoder_name!r} weights "
                f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); build the model with "
                "encoder_path= (timm or Hugging Face DINOv2 file) or with the timm weights in the HF cache"
            ) from None
        self.encoder.load_state_dict(enc.state_dict())
        self.encoder_loaded = True

    def load_encoder_file(self, path: str | os.PathLike) -> None:
        """Load encoder weights from a file in timm's layout or the Hugging Face
        ``Dinov2WithRegistersModel`` layout (``facebook/dinov2-with-registers-base``)."""
        from zoo.hub import apply_state_dict, read_state_dict, unwrap_state_dict

        sd = unwrap_state_dict(read_state_dict(path))
        if "embeddings.position_embeddings" in sd:
            sd = hf_dinov2_to_timm(sd, self.encoder.patch_embed.grid_size)
        else:
            sd = {k: v for k, v in sd.items() if k not in ("norm.weight", "norm.bias", "head.weight", "head.bias")}
            pe = sd.get("pos_embed")
            if pe is not None and pe.shape != self.encoder.pos_embed.shape:
                from timm.layers import resample_abs_pos_embed

                sd["pos_embed"] = resample_abs_pos_embed(pe, list(self.encoder.patch_embed.grid_size), num_prefix_tokens=0)
        apply_state_dict(self.encoder, sd, f"{self.encoder_name} encoder", source=str(path))
        self.encoder_loaded = True

    # -- the autoencoder ---------------------------------------------------------------------

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """RGB (B, 3, H, W) in [0, 1] -> normalised patch tokens (B, N, C)."""
        check_image(x, channels=3, name=f"{type(self).__name__}.encode input (RGB in [0, 1])")
        s = self.encoder_input_size
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bicubic", align_corners=False)
        x = (x - self.pixel_mean.to(x.dtype)) / self.pixel_std.to(x.dtype)
        z = self.encoder.forward_features(x)[:, self.encoder.num_prefix_tokens:]
        if self.training and self.noise_tau > 0:
            sigma = self.noise_tau * torch.rand((z.shape[0], 1, 1), device=z.device, dtype=z.dtype)
            z = z + sigma * torch.randn_like(z)
        return z

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens (B, N, C) (or the authors' 2D grid (B, C, h, w)) -> RGB (B, 3, H, W), ~[0, 1]."""
        name = f"{type(self).__name__}.decode latent"
        if not isinstance(tokens, torch.Tensor):
            raise ValueError(f"{name}: expected a torch.Tensor (B, N, {self.latent_channels}), got {type(tokens).__name__}")
        if tokens.ndim == 4:
            check_image(tokens, channels=self.latent_channels, value_range=None, name=name, layout="(B, C, h, w)")
            tokens = rearrange(tokens, "b c h w -> b (h w) c")
        if tokens.ndim != 3:
            raise ValueError(f"{name}: expected a 3-D tensor (B, N, {self.latent_channels}) of tokens, got shape {tuple(tokens.shape)}")
        if not tokens.is_floating_point():
            raise ValueError(f"{name}: expected a floating-point tensor, got dtype {tokens.dtype}")
        if tokens.shape[-1] != self.latent_channels:
            raise ValueError(f"{name}: expected {self.latent_channels} channels (B, N, C), got {tokens.shape[-1]}")
        n = tokens.shape[1]
        if math.isqrt(n) ** 2 != n or n == 0:
            raise ValueError(f"{name}: expected a square number of tokens (h * w with h = w), got {n}")
        x = self.decoder(tokens)
        return x * self.pixel_std.to(x.dtype) + self.pixel_mean.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``decode(encode(x))`` at the decoder's size (256x256 for the published one)."""
        return self.decode(self.encode(x))


def _decoder_cfg(tag: str, path: str, description: str, **model_args: Any) -> PretrainedCfg:
    return PretrainedCfg(
        tag=tag,
        hf_hub_id=_HF_REPO,
        hf_filename=path,
        filename=f"rae_{path.replace('/', '_')}",
        license="MIT",
        filter_fn=filter_rae,
        verified=False,
        sha256=None,
        model_args=model_args,
        description=description,
    )


@register_model(
    task="vae", family="rae", paper=_PAPER, arxiv="2510.11690", license="MIT", source=_SOURCE,
    input_size=(3, 256, 256), test_size=(3, 28, 28), params=501_078_400, gmacs=134.363317,
    test_args=dict(encoder_kwargs=dict(depth=2, embed_dim=32, num_heads=2), encoder_input_size=56,
                   decoder=dict(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=48), decoder_patch_size=4),
    description="RAE: frozen DINOv2-B/14 (4 registers) encoder + ViT-XL decoder, 256x256 (768-channel 16x16 token latent)",
    pretrained_cfgs=[
        _decoder_cfg("in1k", "decoders/dinov2/wReg_base/ViTXL_n08/model.pt",
                     "the authors' ViT-XL decoder trained on ImageNet-1k at 256x256 with noise_tau 0.8; the encoder "
                     "weights come from timm (the file has none)"),
        _decoder_cfg("in1k_i512", "decoders/dinov2/wReg_base/ViTXL_n08_i512/model.pt",
                     "the authors' ViT-XL decoder for 512x512 images (encoder at 448: 32x32 tokens); builds the model "
                     "with encoder_input_size=448", encoder_input_size=448),
    ],
)
def rae_dinov2_b(**kwargs: Any) -> RAE:
    return RAE(**kwargs)
