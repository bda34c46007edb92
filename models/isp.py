"""Learned lightweight smartphone ISPs: packed Bayer RAW in, sRGB out.

Two architectures, both taking packed RGGB RAW ``(B, 4, H/2, W/2)`` in [0, 1] and returning sRGB
``(B, 3, H, W)``:

- ``isp_microisp``: MicroISP (Ignatov et al., "MicroISP: Processing 32MP Photos on Mobile
  Devices with Deep Learning", ECCVW 2022). Ported from the authors' TensorFlow code,
  aiff22/MicroISP ``model.py`` (that repository has no licence file; the architecture is
  re-implemented here, no code or weights are copied): one branch per output colour, each a
  chain of seven 3x3 conv + PReLU layers with two attention-gated residual blocks, a 3x3 conv to
  ``2 x 2`` values, tanh,
  ``* 0.58 + 0.5`` and depth-to-space; a second, identical stage re-processes each branch's
  (pre-shuffle) tanh output. Every PReLU and every attention block has its own parameters, as
  in the TensorFlow graph (each call there creates new variables). Initialisation follows it
  too: conv weights ~ N(0, 1e-3), zero biases, PReLU slopes 0. Module names
  (``generator{1,2}.branches.{colour}.convs.{j}`` / ``acts.{j}`` / ``attention.{k}.*`` /
  ``conv_out``) are ours: no PyTorch MicroISP from the authors could be read here, and the
  TensorFlow checkpoint needs TensorFlow to convert.
- ``isp_llisp`` / ``isp_llisp_robust``: the generator trained in "Learned Lightweight
  Smartphone ISP with Unpaired Data" (Arhire & Timofte, CVPRW 2025), as in the model file of the
  authors' code (``EfficientISP`` / ``RobustISP``, also ``BaselineModel`` of the NTIRE 2026
  baseline gosha20777/unpaired-isp-ntire-baseline derived from it, which was the copy read here;
  no licence file was found with that code, the architecture is re-implemented): three 3x3
  convs (tanh, ReLU, ReLU) and a pixel shuffle. Module names (``conv1``, ``conv2``, ``conv3``)
  match those state dicts, so the authors' ``.pth`` files load as they are (through
  :func:`filter_pynet_bayer_order` for the channel order, see below).

Output range: the authors train on the unclipped output and clip it to [0, 1] when saving
images. These models do the same: in ``train()`` mode the raw output is returned (so no gradient
is cut), in ``eval()`` mode it is clamped to [0, 1].

Bayer channel order: the zoo packs RGGB as ``(R, G_r, G_b, B)`` = pixels ``(0, 0), (0, 1),
(1, 0), (1, 1)`` of each 2x2 cell (Brooks et al.'s ``mosaic``). The authors' data loaders
(PyNET's ``extract_bayer_channels``) stack ``(1, 1), (0, 1), (0, 0), (1, 0)`` instead; a state
dict trained that way loads with :func:`filter_pynet_bayer_order`, which permutes the input
channels of the first convolution(s), so the same RAW gives the same output.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo.registry import register_model
from zoo.validate import check_image

__all__ = [
    "ISPModel",
    "MicroISP",
    "MicroISPAttention",
    "MicroISPBranch",
    "MicroISPStage",
    "LLISP",
    "filter_pynet_bayer_order",
    "PYNET_TO_RGGB",
]

# Our channel c is PyNET's channel PYNET_TO_RGGB[c]: (R, Gr, Gb, B) <- PyNET (B, Gb, R, Gr) slots.
PYNET_TO_RGGB = (2, 1, 3, 0)


class ISPModel(nn.Module):
    """ISP contract: ``forward(raw)`` takes packed RGGB ``(B, 4, h, w)`` in [0, 1] and returns sRGB
    ``(B, 3, 2h, 2w)``; clamped to [0, 1] in eval mode, unclamped in training (see module doc)."""

    in_channels: int = 4
    out_channels: int = 3
    upscale: int = 2  # output pixels per packed pixel, per side

    def forward_raw(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image(x, channels=self.in_channels, name=f"{type(self).__name__} input (packed RGGB RAW)", layout="(B, 4, H/2, W/2)")
        out = self.forward_raw(x)
        return out if self.training else out.clamp(0.0, 1.0)


# ------------------------------------------------------------------------------------ MicroISP


def _prelu(channels: int) -> nn.PReLU:
    # Keras PReLU(shared_axes=[1, 2]): one slope per channel, initialised to 0.
    return nn.PReLU(channels, init=0.0)


class MicroISPAttention(nn.Module):
    """MicroISP's attention: a 1x1 stride-3 conv and three 3x3 stride-3 'valid' convs (each with
    PReLU), global average pooling, 1x1 conv + PReLU, 1x1 conv + sigmoid -> per-channel weights.

    The four stride-3 convs need at least 79 pixels per side; a smaller map (a tiny test input)
    is replicate-padded to 79 first. From 79 pixels on the result is the authors' exactly.
    """

    MIN_SIZE = 79

    def __init__(self, num_features: int = 4, hidden_units: int = 4, attention_dims: int = 4):
        super().__init__()
        f = num_features
        self.conv1 = nn.Conv2d(f, f, 1, stride=3)
        self.act1 = _prelu(f)
        self.conv2 = nn.Conv2d(f, f, 3, stride=3)
        self.act2 = _prelu(f)
        self.conv3 = nn.Conv2d(f, f, 3, stride=3)
        self.act3 = _prelu(f)
        self.conv4 = nn.Conv2d(f, f, 3, stride=3)
        self.act4 = _prelu(f)
        self.fc1 = nn.Conv2d(f, hidden_units, 1)
        self.act5 = _prelu(hidden_units)
        self.fc2 = nn.Conv2d(hidden_units, attention_dims, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h < self.MIN_SIZE or w < self.MIN_SIZE:
            ph, pw = max(self.MIN_SIZE - h, 0), max(self.MIN_SIZE - w, 0)
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        x = self.act1(self.conv1(x))
        x = self.act2(self.conv2(x))
        x = self.act3(self.conv3(x))
        x = self.act4(self.conv4(x))
        x = x.mean(dim=(-2, -1), keepdim=True)
        x = self.act5(self.fc1(x))
        return torch.sigmoid(self.fc2(x))


class MicroISPBranch(nn.Module):
    """One colour branch: ``num_blocks`` 3x3 conv + PReLU layers; every ``res_skip`` layers the
    last one is gated by an attention block and added to the first one of the group; then a 3x3
    conv to ``scale**2`` values and tanh (the caller maps and shuffles it)."""

    def __init__(self, in_channels: int = 4, num_features: int = 4, num_blocks: int = 7, res_skip: int = 3, scale: int = 2):
        super().__init__()
        self.num_blocks = num_blocks
        self.res_skip = res_skip
        self.convs = nn.ModuleList(
            nn.Conv2d(in_channels if j == 0 else num_features, num_features, 3, padding=1) for j in range(num_blocks)
        )
        self.acts = nn.ModuleList(_prelu(num_features) for _ in range(num_blocks))
        n_attn = sum(1 for j in range(num_blocks) if j % res_skip == res_skip - 1 and j % res_skip != 0)
        self.attention = nn.ModuleList(MicroISPAttention(num_features, num_features, num_features) for _ in range(n_attn))
        self.conv_out = nn.Conv2d(num_features, scale * scale, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x
        k = 0
        for j in range(self.num_blocks):
            x = self.acts[j](self.convs[j](x))
            if j % self.res_skip == 0:
                skip = x
            elif j % self.res_skip == self.res_skip - 1:
                x = x * self.attention[k](x) + skip
                k += 1
        return torch.tanh(self.conv_out(x))


class MicroISPStage(nn.Module):
    """One of MicroISP's two stages (TF scopes ``generator-1`` / ``generator-2``): one branch per
    output colour. Stage 1 reads the packed RAW; stage 2 reads branch ``i``'s stage-1 output."""

    def __init__(self, in_channels: int, num_features: int, out_channels: int, num_blocks: int, res_skip: int, scale: int):
        super().__init__()
        self.branches = nn.ModuleList(
            MicroISPBranch(in_channels, num_features, num_blocks, res_skip, scale) for _ in range(out_channels)
        )


class MicroISP(ISPModel):
    """MicroISP: two stages of per-colour attention branches, depth-to-space to full resolution."""

    def __init__(
        self,
        num_features: int = 4,
        in_channels: int = 4,
        out_channels: int = 3,
        num_blocks: int = 7,
        res_skip: int = 3,
        scale: int = 2,
    ):
        super().__init__()
        if in_channels != 4 or scale != 2:
            raise ValueError(f"MicroISP here reads packed Bayer (in_channels=4, scale=2), got in_channels={in_channels}, scale={scale}")
        if num_features != 4:
            # The attention output (4 weights) multiplies the features: the TF graph only works with 4.
            raise ValueError(f"MicroISP's attention produces 4 weights, so num_features must be 4, got {num_features}")
        self.out_channels = out_channels
        self.scale = scale
        self.generator1 = MicroISPStage(in_channels, num_features, out_channels, num_blocks, res_skip, scale)
        self.generator2 = MicroISPStage(scale * scale, num_features, out_channels, num_blocks, res_skip, scale)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The authors' initialisation: conv weights ~ N(0, 1e-3), biases 0, PReLU slopes 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=1e-3)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.PReLU):
                nn.init.zeros_(m.weight)

    def forward_raw(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for b1, b2 in zip(self.generator1.branches, self.generator2.branches):
            stage1 = b1(x)  # the TF graph also builds stage 1's own RGB output; it is unused
            outs.append(F.pixel_shuffle(b2(stage1) * 0.58 + 0.5, self.scale))
        return torch.cat(outs, dim=1)


# --------------------------------------------------------------------------------------- LLISP


class LLISP(ISPModel):
    """The unpaired-ISP paper's generator: conv3x3 + tanh, conv3x3 + ReLU, conv3x3 (to 12) + ReLU,
    pixel shuffle x2. ``hidden=(12, 12)`` is ``EfficientISP``, ``(16, 4)`` is ``RobustISP``."""

    def __init__(self, hidden: Sequence[int] = (12, 12), in_channels: int = 4, out_channels: int = 3):
        super().__init__()
        if len(hidden) != 2:
            raise ValueError(f"hidden must give two widths, got {hidden}")
        if in_channels != 4:
            raise ValueError(f"LLISP reads packed Bayer (in_channels=4), got {in_channels}")
        h1, h2 = (int(h) for h in hidden)
        self.out_channels = out_channels
        self.conv1 = nn.Conv2d(in_channels, h1, 3, padding=1)
        self.conv2 = nn.Conv2d(h1, h2, 3, padding=1)
        self.conv3 = nn.Conv2d(h2, out_channels * 4, 3, padding=1)

    def forward_raw(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.relu(self.conv3(x))
        return F.pixel_shuffle(x, 2)


# ------------------------------------------------------------------------------------- filters


def filter_pynet_bayer_order(state_dict: dict, model: nn.Module | None = None) -> dict:
    """Map a state dict trained on PyNET-order input ``(B, Gb, R, Gr)`` to the zoo's RGGB order by
    permuting the input channels of the layers that read the RAW (``conv1`` for LLISP, every
    ``generator1.branches.*.convs.0`` for MicroISP). Other keys pass through unchanged."""
    idx = list(PYNET_TO_RGGB)
    out = {}
    for k, v in state_dict.items():
        first = k == "conv1.weight" or (k.startswith("generator1.branches.") and k.endswith(".convs.0.weight"))
        if first:
            if v.ndim != 4 or v.shape[1] != 4:
                raise ValueError(f"{k}: expected a conv weight reading 4 Bayer channels, got shape {tuple(v.shape)}")
            v = v[:, idx].contiguous()
        out[k] = v
    return out


# ------------------------------------------------------------------------------------ registry

_MICROISP = dict(
    task="isp",
    family="microisp",
    paper="MicroISP: Processing 32MP Photos on Mobile Devices with Deep Learning",
    arxiv="2211.06770",
    license="unspecified (no licence file in aiff22/MicroISP)",
    source="https://github.com/aiff22/MicroISP",
)
_LLISP = dict(
    task="isp",
    family="llisp",
    paper="Learned Lightweight Smartphone ISP with Unpaired Data",
    arxiv="2505.10420",
    license="unspecified (no licence file found with the authors' code)",
    source="https://github.com/AndreiiArhire/Learned-Lightweight-Smartphone-ISP-with-Unpaired-Data",
)


@register_model(**_MICROISP, input_size=(4, 256, 256), params=13_560, gmacs=0.455916)
def isp_microisp(**kwargs) -> MicroISP:
    """MicroISP (4 features, 7 layers per branch, 2 stages): packed RGGB -> sRGB x2."""
    return MicroISP(**kwargs)


@register_model(**_LLISP, input_size=(4, 256, 256), params=3_060, gmacs=0.198181)
def isp_llisp(**kwargs) -> LLISP:
    """Unpaired-ISP generator (EfficientISP: 4-12-12-12 convs, pixel shuffle): packed RGGB -> sRGB x2."""
    return LLISP(**{"hidden": (12, 12), **kwargs})


@register_model(**_LLISP, input_size=(4, 256, 256), params=1_616, gmacs=0.103809)
def isp_llisp_robust(**kwargs) -> LLISP:
    """Unpaired-ISP generator, RobustISP variant (4-16-4-12 convs, pixel shuffle)."""
    return LLISP(**{"hidden": (16, 4), **kwargs})
