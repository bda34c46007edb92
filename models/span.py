"""SPAN: Swift Parameter-free Attention Network for Efficient Super-Resolution (Wan et al., CVPRW
2024, arXiv 2311.12770), and the NTIRE winners built on it: SPAN-F (NTIRE 2025 ESR) and DSCLoRA
(NTIRE 2025 ESR winner, arXiv 2504.11271).

Sources followed (layout, state-dict names and numerics; the code here is our own):

- SPAN: hongyuanyu/SPAN ``basicsr/archs/span_arch.py`` (Apache-2.0, Copyright the SPAN authors,
  Cheng Wan, Hongyuan Yu et al.). ``Conv3XC`` is the re-parameterisable 3x3 conv (1x1 -> 3x3 ->
  1x1 expansion branch on a zero-padded input, plus a 1x1 skip) whose fused kernel lives in
  ``eval_conv``; ``SPAB`` is the block with the parameter-free attention
  ``(out3 + x) * (sigmoid(out3) - 0.5)``; the network normalises its [0, 1] input as
  ``(x - rgb_mean) * 255`` and returns [0, 1] directly.
- SPAN ch28 (NTIRE 2024 ESR, team 38, XiaomiMM): Amazingren/NTIRE2024_ESR
  ``models/team38_SPAN.py`` (MIT, Copyright (c) 2024 BinRen): the same network with 28 channels,
  published in deploy form (``eval_conv`` only).
- SPAN-F (NTIRE 2025 ESR, team 24): Amazingren/NTIRE2025_ESR ``models/team24_SPANF.py`` (MIT,
  Copyright (c) 2025 BinRen): no input normalisation; a grouped 3x3 "nearest" shortcut
  (``conv_near``) straight from the input; five SPABs, the first taking the image itself (no
  attention there, its channels change); ``conv_cat`` over [shortcut, block 5, block 1]; a last
  Conv3XC to ``3 * scale**2`` channels and a pixel shuffle. Published in deploy form only; the
  train form here uses SPAN's Conv3XC.
- DSCLoRA (NTIRE 2025 ESR, team 23): Yaozzz666/DSCF-SR ``models/team23_DSCF.py`` (MIT): SPAN with
  26 channels in deploy form, whose block convs (rank 2, alpha 4), ``conv_2`` and the pixel-shuffle
  conv ``upsampler.0`` (rank 8, alpha 16) carry ConvLoRA (loralib's ``Conv2d``: ``lora_A`` of
  shape (r*k, in*k), ``lora_B`` of (out*k, r*k), ``weight + (B @ A).view(weight.shape) * alpha/r``);
  only the LoRA factors train.

Train form vs deploy form. ``deploy=False`` (the default) builds Conv3XC with its branches and an
``eval_conv`` that holds the fused kernel (not trained, as upstream). In training mode the branches
run; in eval mode ``eval_conv`` runs, exactly what the authors' inference does (it re-fuses before
every eval forward). Here the fusion runs when the weights can have changed, not in ``forward``:
on ``eval()`` / ``train(False)``, after ``load_state_dict`` and before ``state_dict()``, so
``eval_conv`` always mirrors the branches whenever it is used or saved, and the forward pass has
no side effects (and its GMACs are the deploy network's). ``deploy=True`` builds ``eval_conv``
alone (a plain trainable conv), which is what deploy-only files hold; ``zoo.optimize(model)`` /
``model.reparameterize()`` turns a train-form model into it.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo.pretrained import PretrainedCfg
from zoo.registry import register_model
from zoo.validate import check_image
from zoo.weights.filters_span import filter_dsclora, filter_span

from .base import SRModel
from .layers.upsample import pixelshuffle_block

__all__ = ["Conv3XC", "SPAB", "SPAN", "SPANF", "LoRAConv2d", "DSCLoRA", "fuse_conv3xc", "merge_lora"]

# DIV2K RGB mean used by SPAN's input normalisation (as in EDSR / BasicSR).
SPAN_RGB_MEAN = (0.4488, 0.4371, 0.4040)


# ------------------------------------------------------------------------------------ Conv3XC


@torch.no_grad()
def fuse_conv3xc(
    w1: torch.Tensor,
    b1: torch.Tensor,
    w2: torch.Tensor,
    b2: torch.Tensor,
    w3: torch.Tensor,
    b3: torch.Tensor,
    w_sk: torch.Tensor,
    b_sk: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The single 3x3 (kernel, bias), in float64, equal to Conv3XC's train-form branches.

    Branch: ``conv3(conv2(conv1(pad1(x))))`` with 1x1 ``w1`` (m, cin), valid 3x3 ``w2`` (n, m) and
    1x1 ``w3`` (cout, n); skip: 1x1 ``w_sk``. Padding before the first 1x1 conv means its bias
    ``b1`` reaches every tap of the 3x3 conv, border included, so the composition is exactly a
    zero-padded 3x3 conv with kernel ``w3 . w2 . w1`` and bias ``w3 (sum_taps w2) b1 + w3 b2 + b3``.
    The skip adds ``w_sk`` at the centre tap.
    """
    f64 = torch.float64
    a = w1.to(f64).flatten(1)  # (m, cin)
    k2 = w2.to(f64)  # (n, m, kh, kw)
    c = w3.to(f64).flatten(1)  # (cout, n)
    n, m, kh, kw = k2.shape
    t = (c @ k2.reshape(n, m * kh * kw)).view(c.shape[0], m, kh * kw)  # w3 . w2: (cout, m, taps)
    kernel = (t.transpose(1, 2) @ a).transpose(1, 2).reshape(c.shape[0], a.shape[1], kh, kw)  # . w1
    bias_mid = k2.sum((2, 3)) @ b1.to(f64) + b2.to(f64)  # (n,)
    bias = c @ bias_mid + b3.to(f64)
    kernel[:, :, kh // 2, kw // 2] += w_sk.to(f64).flatten(1)
    return kernel, bias + b_sk.to(f64)


def _refresh_after_load(module: "Conv3XC", incompatible_keys: Any) -> None:
    module.update_params()


def _refresh_before_save(module: "Conv3XC", prefix: str, keep_vars: bool) -> None:
    module.update_params()


class Conv3XC(nn.Module):
    """SPAN's re-parameterisable 3x3 conv (stride 1, with bias).

    Train form: ``sk`` (1x1) + ``conv`` = [1x1 to ``in*gain``, valid 3x3 to ``out*gain``, 1x1 to
    ``out``] on the input zero-padded by one pixel, and ``eval_conv`` (3x3, padding 1) holding the
    fused kernel, not trained. Deploy form: ``eval_conv`` only. State dict as upstream:
    ``sk.*``, ``conv.{0,1,2}.*``, ``eval_conv.*``.
    """

    def __init__(self, in_channels: int, out_channels: int, gain: int = 2, deploy: bool = False):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.gain = gain
        self.deploy = deploy
        if not deploy:
            self.sk = nn.Conv2d(in_channels, out_channels, 1)
            self.conv = nn.Sequential(
                nn.Conv2d(in_channels, in_channels * gain, 1),
                nn.Conv2d(in_channels * gain, out_channels * gain, 3, padding=0),
                nn.Conv2d(out_channels * gain, out_channels, 1),
            )
        self.eval_conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        if not deploy:
            self.eval_conv.weight.requires_grad_(False)
            self.eval_conv.bias.requires_grad_(False)
            self.update_params()
            self.register_load_state_dict_post_hook(_refresh_after_load)
            self.register_state_dict_pre_hook(_refresh_before_save)

    @torch.no_grad()
    def update_params(self) -> None:
        """Write the fused kernel of the branches into ``eval_conv`` (train form only)."""
        if self.deploy:
            return
        c0, c1, c2 = self.conv
        kernel, bias = fuse_conv3xc(
            c0.weight, c0.bias, c1.weight, c1.bias, c2.weight, c2.bias, self.sk.weight, self.sk.bias
        )
        for param, value in ((self.eval_conv.weight, kernel), (self.eval_conv.bias, bias)):
            value = value.to(param.dtype)
            # Unchanged values are not rewritten: no version bump under a live autograd graph.
            if param.is_meta or not torch.equal(param, value):
                param.copy_(value)

    def train(self, mode: bool = True) -> "Conv3XC":
        super().train(mode)
        if not mode:
            self.update_params()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.deploy and self.training:
            return self.conv(F.pad(x, (1, 1, 1, 1))) + self.sk(x)
        return self.eval_conv(x)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold the branches into ``eval_conv`` in place and drop them (deploy form)."""
        if self.deploy:
            return
        self.update_params()
        del self.sk
        del self.conv
        self.eval_conv.weight.requires_grad_(True)
        self.eval_conv.bias.requires_grad_(True)
        self.deploy = True

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, gain={self.gain}, deploy={self.deploy}"


# ------------------------------------------------------------------------------------ blocks


class SPAB(nn.Module):
    """Swift parameter-free attention block: three Conv3XC (SiLU after the first two) and, when
    the channels are kept, the attention ``(out3 + x) * (sigmoid(out3) - 0.5)``.

    ``forward`` returns ``(out, silu(out1), silu(out2), out3)``: the authors' SiLU runs in place,
    so the "out1" their networks pass on (SPAN's last-block feature, DSCLoRA's distilled
    features) is the activated one.
    """

    def __init__(self, in_channels: int, mid_channels: int | None = None, out_channels: int | None = None, deploy: bool = False):
        super().__init__()
        mid = mid_channels or in_channels
        out = out_channels or in_channels
        self.in_channels, self.out_channels = in_channels, out
        self.c1_r = Conv3XC(in_channels, mid, gain=2, deploy=deploy)
        self.c2_r = Conv3XC(mid, mid, gain=2, deploy=deploy)
        self.c3_r = Conv3XC(mid, out, gain=2, deploy=deploy)
        self.act1 = nn.SiLU()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        out1 = self.act1(self.c1_r(x))
        out2 = self.act1(self.c2_r(out1))
        out3 = self.c3_r(out2)
        if self.in_channels == self.out_channels:
            out = (out3 + x) * (torch.sigmoid(out3) - 0.5)
        else:
            out = out3
        return out, out1, out2, out3


# ------------------------------------------------------------------------------------ LoRA


class LoRAConv2d(nn.Conv2d):
    """ConvLoRA (loralib's ``Conv2d``, as DSCLoRA uses it): ``conv(x, weight + delta, bias)`` with
    ``delta = (lora_B @ lora_A).view(weight.shape) * lora_alpha / r``; ``lora_A`` (r*k, in*k) is
    Kaiming-uniform initialised and ``lora_B`` (out*k, r*k) zero, so a fresh layer equals its conv.
    ``fuse()`` returns the plain ``nn.Conv2d`` with the update merged (``zoo.optimize``)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, r: int, lora_alpha: float, padding: int = 0, bias: bool = True
    ):
        super().__init__(in_channels, out_channels, kernel_size, padding=padding, bias=bias)
        if r < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {r}")
        k = self.kernel_size[0]
        self.r = r
        self.lora_alpha = lora_alpha
        self.scaling = lora_alpha / r
        self.lora_A = nn.Parameter(torch.zeros(r * k, in_channels * k))
        self.lora_B = nn.Parameter(torch.zeros(out_channels * k, r * k))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, r: int, lora_alpha: float) -> "LoRAConv2d":
        if conv.groups != 1 or conv.kernel_size[0] != conv.kernel_size[1] or conv.stride != (1, 1):
            raise ValueError("ConvLoRA needs a square, ungrouped, stride-1 conv")
        new = cls(
            conv.in_channels, conv.out_channels, conv.kernel_size[0], r, lora_alpha, padding=conv.padding[0], bias=conv.bias is not None
        )
        new = new.to(device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(conv.weight)
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
        return new

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A).view(self.weight.shape) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight + self.delta_weight(), self.bias)

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        conv = nn.Conv2d(
            self.in_channels, self.out_channels, self.kernel_size, padding=self.padding, bias=self.bias is not None,
            device=self.weight.device, dtype=self.weight.dtype,
        )
        conv.weight.copy_(self.weight + self.delta_weight())
        if self.bias is not None:
            conv.bias.copy_(self.bias)
        return conv

    def extra_repr(self) -> str:
        return super().extra_repr() + f", r={self.r}, lora_alpha={self.lora_alpha}"


def merge_lora(module: nn.Module) -> nn.Module:
    """Replace every :class:`LoRAConv2d` under ``module`` by its merged plain conv, in place."""
    for name, child in list(module.named_children()):
        if isinstance(child, LoRAConv2d):
            setattr(module, name, child.fuse())
        else:
            merge_lora(child)
    return module


# ------------------------------------------------------------------------------------ networks


class _Reparameterizable(SRModel):
    deploy: bool

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Deploy form in place: every Conv3XC folded to ``eval_conv``, every LoRA merged."""
        for m in self.modules():
            if isinstance(m, Conv3XC):
                m.reparameterize()
        merge_lora(self)
        self.deploy = True


class SPAN(_Reparameterizable):
    """SPAN: Conv3XC stem, ``num_blocks`` SPABs, ``conv_2`` (Conv3XC) on the last block,
    ``conv_cat`` (1x1) over [stem, conv_2, block 1, last block's SiLU(out1)], pixel-shuffle upsampler.

    Input [0, 1]; with ``norm`` the network sees ``(x - rgb_mean) * img_range`` (the authors'
    default: 255 and the DIV2K mean); its output is [0, 1] as it is (no de-normalisation).
    """

    rgb_range = 1.0

    def __init__(
        self,
        scale: int = 4,
        channels: int = 48,
        in_channels: int = 3,
        out_channels: int = 3,
        num_blocks: int = 6,
        img_range: float = 255.0,
        rgb_mean: Sequence[float] = SPAN_RGB_MEAN,
        norm: bool = True,
        deploy: bool = False,
    ):
        super().__init__()
        if scale < 1:
            raise ValueError(f"SPAN scale must be >= 1, got {scale}")
        if num_blocks < 1:
            raise ValueError(f"SPAN needs at least one block, got num_blocks={num_blocks}")
        if norm and len(rgb_mean) != in_channels:
            raise ValueError(f"rgb_mean has {len(rgb_mean)} values for {in_channels} input channels")
        self.scale = scale
        self.in_channels = in_channels
        self.channels = channels
        self.num_blocks = num_blocks
        self.img_range = float(img_range)
        self.norm = norm
        self.deploy = deploy
        # Same construction order as upstream, so a seeded init matches theirs.
        self.conv_1 = Conv3XC(in_channels, channels, gain=2, deploy=deploy)
        for i in range(num_blocks):
            self.add_module(f"block_{i + 1}", SPAB(channels, deploy=deploy))
        self.conv_cat = nn.Conv2d(channels * 4, channels, 1)
        self.conv_2 = Conv3XC(channels, channels, gain=2, deploy=deploy)
        self.upsampler = pixelshuffle_block(channels, out_channels, scale)
        self.register_buffer("mean", torch.tensor(list(rgb_mean), dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def _run(self, x: torch.Tensor, feature_blocks: Sequence[int] = ()) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if self.norm:
            x = (x - self.mean) * self.img_range
        feat = self.conv_1(x)
        feats: list[torch.Tensor] = []
        out = feat
        out_b1 = out1 = feat
        for i in range(1, self.num_blocks + 1):
            out, out1, out2, out3 = getattr(self, f"block_{i}")(out)
            if i == 1:
                out_b1 = out
            if i in feature_blocks:
                feats += [out1, out2, out3]
        out = self.conv_cat(torch.cat([feat, self.conv_2(out), out_b1, out1], 1))
        return self.upsampler(out), feats

    def forward_raw(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x)[0]

    def forward_with_features(self, x: torch.Tensor, blocks: Sequence[int] = (1, 2, 3)) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(forward(x), features)``: for each block in ``blocks``, its SiLU(conv1), SiLU(conv2)
        and conv3 outputs (the features DSCLoRA distils, 3 per block)."""
        check_image(x, channels=self.in_channels, name=f"{type(self).__name__} input (low-resolution RGB)")
        bad = [b for b in blocks if not 1 <= b <= self.num_blocks]
        if bad:
            raise ValueError(f"blocks must be in 1..{self.num_blocks}, got {bad}")
        return self._run(x, tuple(blocks))


class SPANF(_Reparameterizable):
    """SPAN-F: ``conv_near`` (grouped 3x3, no bias) from the input, ``num_blocks`` SPABs (the first
    from the image to ``channels``, without attention), ``conv_cat`` (1x1) over [conv_near,
    last block, block 1], ``conv_2`` (Conv3XC) to ``in_channels * scale**2``, pixel shuffle.
    Input and output [0, 1], no normalisation."""

    rgb_range = 1.0

    def __init__(self, scale: int = 4, channels: int = 32, in_channels: int = 3, num_blocks: int = 5, deploy: bool = False):
        super().__init__()
        if scale < 1:
            raise ValueError(f"SPAN-F scale must be >= 1, got {scale}")
        if num_blocks < 1:
            raise ValueError(f"SPAN-F needs at least one block, got num_blocks={num_blocks}")
        self.scale = scale
        self.in_channels = in_channels
        self.channels = channels
        self.num_blocks = num_blocks
        self.deploy = deploy
        up = in_channels * scale * scale
        self.conv_near = nn.Conv2d(in_channels, up, 3, padding=1, groups=in_channels, bias=False)
        with torch.no_grad():  # start as nearest-neighbour upsampling (the authors' NearestNeighborUpsampler)
            self.conv_near.weight.zero_()
            self.conv_near.weight[:, 0, 1, 1] = 1.0
        self.block_1 = SPAB(in_channels, channels, channels, deploy=deploy)
        for i in range(2, num_blocks + 1):
            self.add_module(f"block_{i}", SPAB(channels, deploy=deploy))
        self.conv_cat = nn.Conv2d(channels * 2 + up, channels, 1)
        self.conv_2 = Conv3XC(channels, up, gain=2, deploy=deploy)
        self.depth_to_space = nn.PixelShuffle(scale)

    def forward_raw(self, x: torch.Tensor) -> torch.Tensor:
        near = self.conv_near(x)
        out_b1 = out = self.block_1(x)[0]
        for i in range(2, self.num_blocks + 1):
            out = getattr(self, f"block_{i}")(out)[0]
        out = self.conv_cat(torch.cat([near, out, out_b1], 1))
        return self.depth_to_space(self.conv_2(out))


class DSCLoRA(SPAN):
    """DSCLoRA: SPAN in deploy form with ConvLoRA on the SPAB convs (``body_rank`` /
    ``body_alpha``), on ``conv_2`` and on the pixel-shuffle conv (``tail_rank`` / ``tail_alpha``).

    With ``freeze_base`` (the authors' ``mark_only_lora_as_trainable(bias='none')``) only the
    ``lora_A`` / ``lora_B`` factors train. ``zoo.optimize`` merges them: a plain SPAN (deploy form).
    """

    def __init__(
        self,
        scale: int = 4,
        channels: int = 26,
        in_channels: int = 3,
        out_channels: int = 3,
        num_blocks: int = 6,
        img_range: float = 255.0,
        rgb_mean: Sequence[float] = SPAN_RGB_MEAN,
        norm: bool = True,
        body_rank: int = 2,
        body_alpha: float = 4.0,
        tail_rank: int = 8,
        tail_alpha: float = 16.0,
        freeze_base: bool = True,
    ):
        super().__init__(scale, channels, in_channels, out_channels, num_blocks, img_range, rgb_mean, norm, deploy=True)
        for i in range(1, num_blocks + 1):
            block = getattr(self, f"block_{i}")
            for conv in (block.c1_r, block.c2_r, block.c3_r):
                conv.eval_conv = LoRAConv2d.from_conv(conv.eval_conv, body_rank, body_alpha)
        self.conv_2.eval_conv = LoRAConv2d.from_conv(self.conv_2.eval_conv, tail_rank, tail_alpha)
        self.upsampler[0] = LoRAConv2d.from_conv(self.upsampler[0], tail_rank, tail_alpha)
        self.freeze_base = freeze_base
        if freeze_base:
            for name, p in self.named_parameters():
                p.requires_grad_("lora_" in name.rsplit(".", 1)[-1])

    @torch.no_grad()
    def reparameterize(self) -> None:
        super().reparameterize()
        for p in self.parameters():
            p.requires_grad_(True)


# ------------------------------------------------------------------------------------ registry

_SPAN_PAPER = "Swift Parameter-free Attention Network for Efficient Super-Resolution"
_SPAN_SOURCE = "https://github.com/hongyuanyu/SPAN"
_NTIRE24 = "https://github.com/Amazingren/NTIRE2024_ESR"
_NTIRE25 = "https://github.com/Amazingren/NTIRE2025_ESR"
_DSCF = "https://github.com/Yaozzz666/DSCF-SR"
_SPAN_DRIVE = "https://drive.google.com/file/d/1iYUA2TzKuxI0vzmA-UXr_nB43XgPOXUg/view?usp=sharing"


def _span_official_cfg(filename: str) -> PretrainedCfg:
    # The authors publish their checkpoints only inside one Google Drive zip (span.zip), not as
    # single downloadable files: the cfg names the file in that archive, looked up in
    # ZOO_WEIGHTS_DIR / the zoo cache (or pass checkpoint_path=).
    return PretrainedCfg(
        tag="paper",
        file=filename,
        sha256=None,
        verified=False,
        license="Apache-2.0",
        filter_fn=filter_span,
        description=(
            f"The authors' checkpoint {filename} (train form, BasicSR 'params'), from span.zip at "
            f"{_SPAN_DRIVE} (linked from {_SPAN_SOURCE}); extract it into ZOO_WEIGHTS_DIR or the zoo cache"
        ),
    )


_SPAN_COMMON = dict(task="sr", family="span", paper=_SPAN_PAPER, arxiv="2311.12770", input_size=(3, 256, 256))

# Params: sum of model.parameters() of the authors' code, train form incl. eval_conv (as
# hongyuanyu/SPAN span_arch.py and spandrel count them); the deploy form (zoo.optimize) is smaller.


@register_model(
    **_SPAN_COMMON, license="Apache-2.0", source=_SPAN_SOURCE, params=2_236_728, gmacs=27.868,
    pretrained_cfgs=[_span_official_cfg("spanx4_ch48.pth")],
)
def span_ch48_x4(**kwargs) -> SPAN:
    """SPAN, 48 channels (SPAN-S of the paper), x4; 426,288 params in deploy form."""
    return SPAN(**{"scale": 4, "channels": 48, **kwargs})


@register_model(
    **_SPAN_COMMON, license="Apache-2.0", source=_SPAN_SOURCE, params=2_221_140, gmacs=26.8488,
    pretrained_cfgs=[_span_official_cfg("spanx2_ch48.pth")],
)
def span_ch48_x2(**kwargs) -> SPAN:
    """SPAN, 48 channels, x2; 410,700 params in deploy form."""
    return SPAN(**{"scale": 2, "channels": 48, **kwargs})


@register_model(
    **_SPAN_COMMON, license="MIT", source=f"{_NTIRE24}/blob/main/models/team38_SPAN.py", params=769_428, gmacs=9.8338,
    pretrained_cfgs=[
        PretrainedCfg(
            tag="ntire24",
            url=f"{_NTIRE24}/raw/main/model_zoo/team38_span_ch28_slim.pth",
            sha256=None,
            verified=False,
            license="MIT",
            filter_fn=filter_span,
            model_args={"deploy": True},
            description="NTIRE 2024 ESR winning entry (XiaomiMM, team 38), deploy form (eval_conv only)",
        )
    ],
)
def span_ch28_x4(**kwargs) -> SPAN:
    """SPAN, 28 channels, x4: the NTIRE 2024 efficient-SR winner; 150,688 params in deploy form."""
    return SPAN(**{"scale": 4, "channels": 28, **kwargs})


@register_model(
    **{**_SPAN_COMMON, "paper": f"SPAN-F, NTIRE 2025 efficient SR challenge entry (team 24); {_SPAN_PAPER}"},
    license="MIT", source=f"{_NTIRE25}/blob/main/models/team24_SPANF.py", params=808_248, gmacs=9.6815,
    pretrained_cfgs=[
        PretrainedCfg(
            tag="ntire25",
            url=f"{_NTIRE25}/raw/main/model_zoo/team24_spanf.pth",
            sha256="1508c566008654646bea1edff537c83dd7a6fe8f6ffda3f25f9eb7ba09cbbcd3",
            verified=True,
            license="MIT",
            filter_fn=filter_span,
            model_args={"deploy": True},
            metrics={"set5_x4_psnr_y": 31.774},
            description="NTIRE 2025 ESR entry of team 24 (SPAN-F), deploy form (eval_conv only)",
        )
    ],
)
def spanf_ch32_x4(**kwargs) -> SPANF:
    """SPAN-F, 32 channels, x4 (NTIRE 2025 ESR); 148,288 params in deploy form (team24_SPANF.py)."""
    return SPANF(**{"scale": 4, "channels": 32, **kwargs})


@register_model(
    task="sr", family="span", paper="Distillation-Supervised Convolutional Low-Rank Adaptation for Efficient Image Super-Resolution",
    arxiv="2504.11271", license="MIT", source=f"{_DSCF}/blob/main/models/team23_DSCF.py", input_size=(3, 256, 256),
    params=156_748, gmacs=8.5361,
    pretrained_cfgs=[
        PretrainedCfg(
            tag="ntire25",
            url=f"{_DSCF}/raw/main/model_zoo/team23_DSCF.pth",
            sha256=None,
            verified=False,
            license="MIT",
            filter_fn=filter_dsclora,
            description="NTIRE 2025 ESR winner (team 23, DSCLoRA); also at the authors' Hugging Face repo sssefe/DSCLoRA",
        )
    ],
)
def dsclora_x4(**kwargs) -> DSCLoRA:
    """DSCLoRA: SPAN 26 channels with ConvLoRA, x4 (NTIRE 2025 ESR winner); merged: a 130,828-param SPAN."""
    return DSCLoRA(**{"scale": 4, "channels": 26, **kwargs})
