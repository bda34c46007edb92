"""Turbo-VAED: mobile video-VAE decoders distilled into a teacher's latent space.

"Turbo-VAED: Fast and Stable Transfer of Video-VAEs to Mobile Devices" (Ya Zou, Jingfeng Yao et al.,
HUST, arXiv 2508.09136). The design follows the authors' ``AutoencoderKLTurboVAED`` decoder
(hustvl/Turbo-VAED, ``diffusers_vae/src/diffusers/models/autoencoders/autoencoder_kl_turbo_vaed.py``,
Apache-2.0, itself modified from diffusers' LTX-Video autoencoder) and its four published configs
(``configs/Turbo-VAED-{Hunyuan,Cog,LTX,DC}.json``):

- a 3x3x3 input conv, a mid block and four up blocks of residual blocks (channel RMSNorm without
  affine, SiLU, conv; a LayerNorm + 1x1x1 conv shortcut where the width changes); the lowest
  resolution blocks use 3D *depthwise-separable* convs (k x k x k depthwise + 1x1x1 pointwise,
  ``k = decoder_dw_kernel_size = 5``);
- the *decoupled 3D pixel shuffle* upsampler: one 3x3x3 conv to ``C * st * sh * sw`` channels, then
  a temporal shuffle followed by a spatial 2D pixel shuffle, i.e. ``b (c sh sw st) t h w ->
  b c (t st) (h sh) (w sw)``, and the first ``st - 1`` frames are dropped (the causal video-VAE
  convention ``T = 1 + st * (T_lat - 1)``; the Video DC-AE config keeps them: ``T = st * T_lat``).
  The resnets right after an upsampler use ReLU for their first activation;
- for 4x4-patchified teachers (LTX, DC-AE) two extra conv + 2D pixel-shuffle stages and a
  BatchNorm3d (no affine) before the output conv.

Temporal padding replicates the edge frames; ``is_causal`` (False in every published config) pads
only on the left. Depthwise-separable convs always pad on both sides, as the authors' do.

The model is the authors' ``TurboVAEDDecoder3d``: its module names are theirs, so a plain decoder
state dict (what their training script loads into ``model.decoder``) loads unchanged, and
:func:`~zoo.weights.filters_vaed.filter_turbo_vaed` also takes the whole ``AutoencoderKLTurboVAED``
state dict (``decoder.`` prefix, latent-stat buffers and the distillation-only projection heads,
which are dropped). The published ``Turbo-VAED-<teacher>.pth`` files (hub ``hustvl/Turbo-VAED``) are
one or the other; the LTX file's reported size (169 MB) fits the whole-model form (41.90 M decoder +
0.39 M projection-head parameters in float32).

Decoder only: the teacher VAE's *encoder* makes the latents (un-normalised, as the teacher's
``encode(...).latent_dist`` gives them; Turbo-VAED was distilled on them). ``decode(z)`` /
``forward(z)`` take ``(B, C_lat, T_lat, H_lat, W_lat)`` and return video ``(B, 3, T, H, W)`` in
[0, 1]: the authors' decoder works in [-1, 1], and the model maps ``x -> (x + 1) / 2`` inside
(not clamped; clamp for display).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from zoo.pretrained import PretrainedCfg
from zoo.registry import register_model
from zoo.weights.filters_vaed import filter_turbo_vaed

__all__ = [
    "TurboVAED",
    "ChannelRMSNorm",
    "CausalConv3d",
    "DepthwiseSeparableConv3d",
    "ResnetBlock3d",
    "PixelShuffle3dUpsampler",
    "pixel_shuffle_3d",
    "TURBO_VAED_CONFIGS",
]

_PAPER = "Turbo-VAED: Fast and Stable Transfer of Video-VAEs to Mobile Devices"
_SOURCE = "https://github.com/hustvl/Turbo-VAED"
_HF_REPO = "hustvl/Turbo-VAED"


def pixel_shuffle_3d(x: torch.Tensor, st: int, sh: int, sw: int) -> torch.Tensor:
    """The decoupled 3D pixel shuffle: temporal, then spatial, in one rearrange."""
    return rearrange(x, "b (c sh sw st) t h w -> b c (t st) (h sh) (w sw)", st=st, sh=sh, sw=sw)


class ChannelRMSNorm(nn.Module):
    """RMS norm over the channel dim of a (B, C, ...) tensor, no affine (the authors' ``RMSNorm``
    with ``elementwise_affine=False`` applied channels-last); statistics in float32."""

    def __init__(self, eps: float = 1e-8):
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var = x.to(torch.promote_types(x.dtype, torch.float32)).pow(2).mean(1, keepdim=True)
        return (x * torch.rsqrt(var + self.eps)).to(x.dtype)


class ChannelLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the channel dim of a (B, C, T, H, W) tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.movedim(1, -1)).movedim(-1, 1)


def _pad_time(x: torch.Tensor, k: int, causal: bool) -> torch.Tensor:
    if k <= 1:
        return x
    left, right = (k - 1, 0) if causal else ((k - 1) // 2, (k - 1) // 2)
    return F.pad(x, (0, 0, 0, 0, left, right), mode="replicate")


class CausalConv3d(nn.Module):
    """``TurboVAEDCausalConv3d``: replicate-padded in time, zero-padded in space (``.conv``)."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, is_causal: bool = False):
        super().__init__()
        self.kernel_size = kernel_size
        self.is_causal = is_causal
        self.conv = nn.Conv3d(cin, cout, kernel_size, padding=(0, kernel_size // 2, kernel_size // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(_pad_time(x, self.kernel_size, self.is_causal))


class DepthwiseSeparableConv3d(nn.Module):
    """``TurboVAEDCausalDepthwiseSeperableConv3d``: k x k x k depthwise then 1x1x1 pointwise conv
    (time padded symmetrically whatever ``is_causal`` says, as in the authors' code)."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, is_causal: bool = False):
        super().__init__()
        self.kernel_size = kernel_size
        self.depthwise_conv = nn.Conv3d(cin, cin, kernel_size, padding=(0, kernel_size // 2, kernel_size // 2), groups=cin)
        self.pointwise_conv = nn.Conv3d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise_conv(self.depthwise_conv(_pad_time(x, self.kernel_size, False)))


class ResnetBlock3d(nn.Module):
    """``TurboVAEDResnetBlock3d``: norm1, act, conv1, norm2, SiLU, conv2, plus the (normed,
    projected where the width changes) input. ``relu_first``: the authors' ``is_upsampler_modified``."""

    def __init__(
        self,
        cin: int,
        cout: int,
        dw: bool = False,
        dw_kernel_size: int = 5,
        is_causal: bool = False,
        relu_first: bool = False,
        eps: float = 1e-6,
    ):
        super().__init__()
        conv = DepthwiseSeparableConv3d if dw else CausalConv3d
        k = dw_kernel_size if dw else 3
        self.norm1 = ChannelRMSNorm()
        self.act1 = nn.ReLU() if relu_first else nn.SiLU()
        self.conv1 = conv(cin, cout, k, is_causal=is_causal)
        self.norm2 = ChannelRMSNorm()
        self.act2 = nn.SiLU()
        self.conv2 = conv(cout, cout, k, is_causal=is_causal)
        self.norm3 = ChannelLayerNorm(cin, eps=eps) if cin != cout else None
        self.conv_shortcut = conv(cin, cout, 1, is_causal=is_causal) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act1(self.norm1(x)))
        h = self.conv2(self.act2(self.norm2(h)))
        if self.norm3 is not None:
            x = self.conv_shortcut(self.norm3(x))
        return h + x


class PixelShuffle3dUpsampler(nn.Module):
    """``TurboVAEDUpsampler3d``: conv to ``C * st * sh * sw`` channels, decoupled 3D pixel shuffle,
    drop the first ``st - 1`` frames (unless ``keep_first_frames``, the Video DC-AE config)."""

    def __init__(self, channels: int, stride: Sequence[int] = (2, 2, 2), is_causal: bool = False, keep_first_frames: bool = False):
        super().__init__()
        self.stride = tuple(stride)
        self.keep_first_frames = keep_first_frames
        st, sh, sw = self.stride
        self.conv = CausalConv3d(channels, channels * st * sh * sw, 3, is_causal=is_causal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        st, sh, sw = self.stride
        x = pixel_shuffle_3d(self.conv(x), st, sh, sw)
        return x if self.keep_first_frames else x[:, :, st - 1:]


class MidBlock3d(nn.Module):
    def __init__(self, channels: int, num_layers: int, **kw: Any):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock3d(channels, channels, **kw) for _ in range(num_layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for r in self.resnets:
            x = r(x)
        return x


class UpBlock3d(nn.Module):
    """``TurboVAEDUpBlock3d``: width change (a resnet), optional upsampler, resnets."""

    def __init__(
        self,
        cin: int,
        cout: int,
        num_layers: int,
        upsample: bool,
        spatial_only: bool,
        keep_first_frames: bool,
        dw: bool,
        dw_kernel_size: int,
        is_causal: bool,
        eps: float,
    ):
        super().__init__()
        kw = dict(dw=dw, dw_kernel_size=dw_kernel_size, is_causal=is_causal, eps=eps)
        self.conv_in = ResnetBlock3d(cin, cout, **kw) if cin != cout else None
        self.upsamplers = None
        if upsample:
            stride = (1, 2, 2) if spatial_only else (2, 2, 2)
            self.upsamplers = nn.ModuleList([PixelShuffle3dUpsampler(cout, stride, is_causal, keep_first_frames)])
        self.resnets = nn.ModuleList([ResnetBlock3d(cout, cout, relu_first=upsample, **kw) for _ in range(num_layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv_in is not None:
            x = self.conv_in(x)
        if self.upsamplers is not None:
            for up in self.upsamplers:
                x = up(x)
        for r in self.resnets:
            x = r(x)
        return x


class Conv2dUpsampler(nn.Module):
    """``TurboVAEDConv2d(Split)Upsampler``: per-frame 3x3 conv + 2D pixel shuffle."""

    def __init__(self, channels: int, factor: int = 2):
        super().__init__()
        self.factor = factor
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[2]
        x = F.pixel_shuffle(self.conv(rearrange(x, "b c t h w -> (b t) c h w")), self.factor)
        return rearrange(x, "(b t) c h w -> b c t h w", t=t)


class TurboVAED(nn.Module):
    """The Turbo-VAED decoder (``TurboVAEDDecoder3d``) with the zoo's video interface.

    Arguments are the authors' config keys (lists in encoder order, lowest resolution last, as in
    their JSON files); the published configs are in :data:`TURBO_VAED_CONFIGS`.
    """

    def __init__(
        self,
        latent_channels: int = 16,
        out_channels: int = 3,
        block_out_channels: Sequence[int] = (16, 32, 256, 512),
        layers_per_block: Sequence[int] = (5, 4, 4, 4, 5),
        spatio_temporal_scaling: Sequence[bool] = (True, True, True, False),
        spatio_only: Sequence[bool] = (True, False, False, False),
        is_dw_conv: Sequence[bool] = (False, False, False, True, True),
        dw_kernel_size: int = 5,
        patch_size: int = 1,
        is_video_dc_ae: bool = False,
        is_causal: bool = False,
        resnet_norm_eps: float = 1e-6,
        teacher: str = "",
    ):
        super().__init__()
        n = len(block_out_channels)
        if not (len(spatio_temporal_scaling) == len(spatio_only) == n and len(layers_per_block) == len(is_dw_conv) == n + 1):
            raise ValueError("block_out_channels, spatio_temporal_scaling and spatio_only need one entry per block; "
                             "layers_per_block and is_dw_conv one more (the mid block)")
        if patch_size not in (1, 2, 4):
            raise ValueError(f"patch_size must be 1, 2 or 4, got {patch_size}")
        self.latent_channels = latent_channels
        self.out_channels = out_channels
        self.patch_size = patch_size
        self.teacher = teacher
        self.keep_first_frames = is_video_dc_ae
        # the decoder runs the encoder's lists backwards: lowest resolution first
        chans = list(reversed(block_out_channels))
        scaling = list(reversed(spatio_temporal_scaling))
        layers = list(reversed(layers_per_block))
        dws = list(reversed(is_dw_conv))
        only = list(reversed(spatio_only))
        common = dict(dw_kernel_size=dw_kernel_size, is_causal=is_causal, eps=resnet_norm_eps)

        self.conv_in = CausalConv3d(latent_channels, chans[0], 3, is_causal=is_causal)
        self.mid_block = MidBlock3d(chans[0], layers[0], dw=dws[0], **common)
        self.up_blocks = nn.ModuleList()
        c = chans[0]
        for i in range(n):
            self.up_blocks.append(UpBlock3d(c, chans[i], layers[i + 1], scaling[i], only[i], is_video_dc_ae, dws[i + 1], **common))
            c = chans[i]
        self.temporal_stride = 2 ** sum(1 for s, o in zip(scaling, only) if s and not o)
        self.spatial_stride = 2 ** sum(bool(s) for s in scaling) * patch_size

        self.conv_act = nn.SiLU()
        if patch_size >= 2:
            self.norm_up_1 = ChannelRMSNorm()
            self.upsampler2d_1 = Conv2dUpsampler(c)
            c //= 4
        if patch_size >= 4:
            self.norm_up_2 = ChannelRMSNorm()
            self.upsampler2d_2 = Conv2dUpsampler(c)
            c //= 4
        self.norm_out: nn.Module = ChannelRMSNorm() if patch_size == 1 else nn.BatchNorm3d(c, affine=False)
        self.conv_out = CausalConv3d(c, out_channels, 3, is_causal=is_causal)

    def num_frames(self, latent_frames: int) -> int:
        """Frames decoded from ``latent_frames`` latent frames."""
        if self.keep_first_frames:
            return self.temporal_stride * latent_frames
        return 1 + self.temporal_stride * (latent_frames - 1)

    def _check(self, z: object) -> None:
        layout = "(B, C_lat, T_lat, H_lat, W_lat)"
        name = f"{type(self).__name__}.decode latent"
        if not isinstance(z, torch.Tensor):
            raise ValueError(f"{name}: expected a torch.Tensor {layout}, got {type(z).__name__}")
        if torch.jit.is_tracing():
            return
        if z.ndim != 5:
            raise ValueError(
                f"{name}: expected a 5-D tensor {layout} with C_lat={self.latent_channels} "
                f"(the {self.teacher or 'teacher'} VAE encoder's latent video), got shape {tuple(z.shape)}"
            )
        if not z.is_floating_point():
            raise ValueError(f"{name}: expected a floating-point tensor, got dtype {z.dtype}")
        if z.shape[1] != self.latent_channels:
            raise ValueError(
                f"{name}: expected {self.latent_channels} channels {layout} (the {self.teacher or 'teacher'} latent space), "
                f"got {z.shape[1]} (shape {tuple(z.shape)})"
            )
        if min(z.shape[2:]) < 1:
            raise ValueError(f"{name}: expected at least one latent frame, row and column, got {tuple(z.shape)}")

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent video (B, C_lat, T_lat, H_lat, W_lat) -> RGB video (B, 3, T, H, W) in [0, 1]."""
        self._check(z)
        x = self.conv_in(z)
        x = self.mid_block(x)
        for block in self.up_blocks:
            x = block(x)
        if self.patch_size >= 2:
            x = self.upsampler2d_1(self.conv_act(self.norm_up_1(x)))
        if self.patch_size >= 4:
            x = self.upsampler2d_2(self.conv_act(self.norm_up_2(x)))
        x = self.conv_out(self.conv_act(self.norm_out(x)))
        return (x + 1) / 2  # the authors' [-1, 1] -> [0, 1]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder only: ``forward`` is :meth:`decode` (the teacher's encoder makes ``z``)."""
        return self.decode(z)


# The authors' configs/Turbo-VAED-*.json, decoder keys (``decoder_*`` prefixes dropped). Keys a
# file leaves out take the class defaults of their ``AutoencoderKLTurboVAED`` (the decoder reads
# ``decoder_spatio_temporal_scaling``, default (True, True, True, False), which no file sets).
TURBO_VAED_CONFIGS: dict[str, dict[str, Any]] = {
    "hunyuan": dict(
        latent_channels=16, block_out_channels=(16, 32, 256, 512), layers_per_block=(5, 4, 4, 4, 5),
        spatio_only=(True, False, False, False), is_dw_conv=(False, False, False, True, True), dw_kernel_size=5,
        patch_size=1, teacher="HunyuanVideo",
    ),
    "cogvideox": dict(
        latent_channels=16, block_out_channels=(16, 32, 256, 512), layers_per_block=(5, 4, 4, 4, 5),
        spatio_only=(True, False, False, False), is_dw_conv=(False, False, False, True, True), dw_kernel_size=5,
        patch_size=1, teacher="CogVideoX",
    ),
    "ltx": dict(
        latent_channels=128, block_out_channels=(64, 128, 256, 512), layers_per_block=(3, 2, 3, 1, 1),
        spatio_only=(False, False, False, False), is_dw_conv=(False, False, False, True, True), dw_kernel_size=5,
        patch_size=4, teacher="LTX-Video",
    ),
    "dc": dict(
        latent_channels=128, block_out_channels=(64, 128, 256, 512), layers_per_block=(4, 3, 3, 3, 4),
        spatio_only=(True, False, False, False), is_dw_conv=(False, False, False, True, True), dw_kernel_size=5,
        patch_size=4, is_video_dc_ae=True, teacher="Video DC-AE",
    ),
}


def _hf_cfg(filename: str, teacher: str, note: str = "") -> PretrainedCfg:
    return PretrainedCfg(
        tag="hustvl",
        hf_hub_id=_HF_REPO,
        hf_filename=filename,
        filename=filename,
        license="Apache-2.0",
        filter_fn=filter_turbo_vaed,
        verified=False,
        sha256=None,
        description=f"the authors' decoder distilled from the {teacher} VAE{note}",
    )


_UNCONFIRMED = (" (file name inferred from the authors' config name; the LTX and Cog files of the same hub repo "
                "are the ones downstream users name)")


def _build(config: str, **kwargs: Any) -> TurboVAED:
    return TurboVAED(**{**TURBO_VAED_CONFIGS[config], **kwargs})


_COMMON = dict(task="vae", family="turbo_vaed", paper=_PAPER, arxiv="2508.09136", license="Apache-2.0", source=_SOURCE,
               input_range=None)


@register_model(
    **_COMMON, input_size=(16, 5, 32, 32), test_size=(16, 2, 2, 2), params=40_687_811, gmacs=824.660984,
    description="Turbo-VAED decoder for the HunyuanVideo VAE latent space (16 ch, 4x temporal, 8x spatial; "
    "input_size: 17 frames at 256x256)",
    pretrained_cfgs=[_hf_cfg("Turbo-VAED-Hunyuan.pth", "HunyuanVideo", _UNCONFIRMED)],
)
def turbo_vaed_hunyuan(**kwargs: Any) -> TurboVAED:
    return _build("hunyuan", **kwargs)


@register_model(
    **_COMMON, input_size=(16, 5, 32, 32), test_size=(16, 2, 2, 2), params=40_687_811, gmacs=824.660984,
    description="Turbo-VAED decoder for the CogVideoX VAE latent space (16 ch, 4x temporal, 8x spatial; "
    "input_size: 17 frames at 256x256)",
    pretrained_cfgs=[_hf_cfg("Turbo-VAED-Cog.pth", "CogVideoX")],
)
def turbo_vaed_cogvideox(**kwargs: Any) -> TurboVAED:
    return _build("cogvideox", **kwargs)


@register_model(
    **_COMMON, input_size=(128, 3, 8, 8), test_size=(128, 2, 1, 1), params=41_896_023, gmacs=101.580931,
    description="Turbo-VAED decoder for the LTX-Video VAE latent space (128 ch, 8x temporal, 32x spatial; "
    "input_size: 17 frames at 256x256)",
    pretrained_cfgs=[_hf_cfg("Turbo-VAED-LTX.pth", "LTX-Video")],
)
def turbo_vaed_ltx(**kwargs: Any) -> TurboVAED:
    return _build("ltx", **kwargs)


@register_model(
    **_COMMON, input_size=(128, 4, 8, 8), test_size=(128, 2, 1, 1), params=45_831_383, gmacs=156.060353,
    description="Turbo-VAED decoder for the Video DC-AE latent space (128 ch, 4x temporal without the causal first "
    "frame, 32x spatial; input_size: 16 frames at 256x256)",
    pretrained_cfgs=[_hf_cfg("Turbo-VAED-DC.pth", "Video DC-AE", _UNCONFIRMED)],
)
def turbo_vaed_dc(**kwargs: Any) -> TurboVAED:
    return _build("dc", **kwargs)
