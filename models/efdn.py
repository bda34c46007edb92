"""EFDN: Edge-enhanced Feature Distillation Network for Efficient Super-Resolution (Yan Wang,
CVPR 2022 workshops, arXiv 2204.08759); winner (overall performance) of NTIRE 2023 efficient SR
and the baseline of the NTIRE 2025 efficient SR challenge.

Sources followed (layout, state-dict names and numerics; the code here is our own):

- the network: Amazingren/NTIRE2025_ESR ``models/team00_EFDN.py`` (MIT License, Copyright (c)
  2025 BinRen), the challenge's baseline ``EFDN``, identical to icandle/EFDN
  ``models/EFDN_deploy.py``: a 3x3 head, four ``Cell`` blocks (a 1x1 conv + PReLU, two
  re-parameterised 3x3 convs + PReLU, four 1x1 half-width branches fused by a 1x1 conv, RFDN's ESA
  and a residual), three 1x1 ``local_fuse`` convs in the authors' (unusual) wiring, a long skip,
  a pixel-shuffle tail, and an output clamped to [0, 1]. Inputs in [0, 1] (``data_range = 1.0``
  in the challenge's ``test_demo.py``).
- the train form: the edge-enhanced diverse branch block ``EDBB`` and ``SeqConv3x3`` of the same
  file (after ECBSR and DBB): ``act(rep_conv(x) + conv1x1(x) + sobel_x(x) + sobel_y(x) +
  laplacian(x) [+ conv1x1_3x3(x)] [+ x])``, where the edge branches are a 1x1 conv, a border
  padding with the 1x1 bias, and a per-channel learnable scale times a fixed Sobel / Laplacian
  mask. ``reparameterize()`` (and ``zoo.optimize``) fold an EDBB into a single 3x3 ``rep_conv``,
  the deploy form (``EDBB_deploy``), whose state-dict names are the published file's.

Train form vs deploy form: ``deploy=False`` (the default) builds the EDBB branches, for training;
``deploy=True`` builds ``rep_conv`` alone, which is what ``model_zoo/team00_EFDN.pth`` holds: that
file loads unchanged into ``zoo.create("efdn_x4", pretrained=True, deploy=True)``. Loaded into the
default train form, each EDBB's ``rep_conv`` takes the published kernel and the other branches are
set to add exactly zero (:func:`~zoo.weights.filters_esr.filter_efdn`): same outputs bit for bit,
``zoo.optimize`` returns the published deploy network, and fine-tuning can grow the branches
again. (Cfgs select no form, so that a train-form file reloads into the train form it came from,
bit-exact.)

Two deliberate differences from the authors' ``EDBB``: the ``conv1x1_3x3`` branch is only built
with ``with_13=True`` (upstream always builds it and, with the default ``with_13=False``, never
uses it: 23,136 dead parameters per block that would never get a gradient), and the unused
``gv`` mode is left out. The fixed
edge masks are frozen parameters (``requires_grad=False``), as upstream, so they appear in the
state dict and in the parameter count. One name differs from the authors' state dict: each
cell's 1x1 fusion conv is ``fusion`` here, ``fuse`` upstream (a child called ``fuse`` would be
taken by timm's ``reparameterize_model``, behind ``zoo.optimize``, for a fusing method);
:func:`~zoo.weights.filters_esr.filter_efdn` renames it when an authors' file loads.

Parameters: deploy form 276,192 (``sum(p.numel() for p in EFDN().parameters())`` of team00's
code, the challenge README's 0.276 M; 16.69 GMACs at 256x256, its 16.70 GFLOPs by fvcore); train
form as registered (``with_13=False``) 364,128: each EDBB adds ``conv1x1`` (2,352) and three edge
branches (2,880 each, the frozen 432-value masks included). The authors' train-form EDBB, with
its always-built ``conv1x1_3x3`` (23,136), would count 549,216.
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo.pretrained import PretrainedCfg
from zoo.registry import register_model
from zoo.weights.filters_esr import filter_efdn

from .base import SRModel
from .layers.upsample import pixelshuffle_block
from .rfdn import ESA

__all__ = ["EFDN", "EFDNCell", "EDBB", "SeqConv3x3", "fuse_edbb"]

_PAPER = "Edge-enhanced Feature Distillation Network for Efficient Super-Resolution"
_NTIRE25 = "https://github.com/Amazingren/NTIRE2025_ESR"

# The fixed 3x3 edge filters of the EDBB edge branches (row-major).
EDGE_MASKS: dict[str, tuple[tuple[float, ...], ...]] = {
    "conv1x1-sobelx": ((1.0, 0.0, -1.0), (2.0, 0.0, -2.0), (1.0, 0.0, -1.0)),
    "conv1x1-sobely": ((1.0, 2.0, 1.0), (0.0, 0.0, 0.0), (-1.0, -2.0, -1.0)),
    "conv1x1-laplacian": ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0)),
}
SEQ_TYPES = ("conv1x1-conv3x3", *EDGE_MASKS)


class SeqConv3x3(nn.Module):
    """A 1x1 conv followed by a 3x3 conv, the 1x1 output padded by one pixel *with its own bias*
    (so the pair is exactly one 3x3 conv, border included).

    ``conv1x1-conv3x3``: a learnable 3x3 conv (``k0, b0`` (mid, in), ``k1, b1`` (out, mid)).
    ``conv1x1-sobelx`` / ``-sobely`` / ``-laplacian``: a depthwise 3x3 conv ``scale * mask`` +
    ``bias`` with a fixed edge ``mask`` (frozen parameter) and a learnable per-channel ``scale``.
    """

    def __init__(self, seq_type: str, in_channels: int, out_channels: int, depth_multiplier: float = 1.0):
        super().__init__()
        if seq_type not in SEQ_TYPES:
            raise ValueError(f"seq_type must be one of {', '.join(SEQ_TYPES)}, got {seq_type!r}")
        self.type = seq_type
        self.in_channels = in_channels
        self.out_channels = out_channels
        if seq_type == "conv1x1-conv3x3":
            self.mid_channels = int(out_channels * depth_multiplier)
            first = nn.Conv2d(in_channels, self.mid_channels, 1)
            second = nn.Conv2d(self.mid_channels, out_channels, 3)
            self.k0, self.b0 = first.weight, first.bias
            self.k1, self.b1 = second.weight, second.bias
        else:
            first = nn.Conv2d(in_channels, out_channels, 1)
            self.k0, self.b0 = first.weight, first.bias
            self.scale = nn.Parameter(torch.randn(out_channels, 1, 1, 1) * 1e-3)
            self.bias = nn.Parameter(torch.randn(out_channels) * 1e-3)
            mask = torch.tensor(EDGE_MASKS[seq_type], dtype=torch.float32)
            self.mask = nn.Parameter(mask.expand(out_channels, 1, 3, 3).clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y0 = F.conv2d(x, self.k0, self.b0)
        y0 = F.pad(y0, (1, 1, 1, 1))
        b0 = self.b0.view(1, -1, 1, 1)
        y0[:, :, 0:1, :] = b0
        y0[:, :, -1:, :] = b0
        y0[:, :, :, 0:1] = b0
        y0[:, :, :, -1:] = b0
        if self.type == "conv1x1-conv3x3":
            return F.conv2d(y0, self.k1, self.b1)
        return F.conv2d(y0, self.scale * self.mask, self.bias, groups=self.out_channels)

    def extra_repr(self) -> str:
        return f"{self.type}, {self.in_channels}, {self.out_channels}"


def _seq_kernel(p: Mapping[str, torch.Tensor], prefix: str, seq_type: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The 3x3 (kernel, bias), float64, of one SeqConv3x3 given its tensors under ``prefix``."""
    k0 = p[f"{prefix}.k0"].double()[:, :, 0, 0]  # (mid or out, in)
    b0 = p[f"{prefix}.b0"].double()
    if seq_type == "conv1x1-conv3x3":
        k1 = p[f"{prefix}.k1"].double()  # (out, mid, 3, 3)
        kernel = torch.einsum("omhw,mi->oihw", k1, k0)
        bias = p[f"{prefix}.b1"].double() + torch.einsum("omhw,m->o", k1, b0)
        return kernel, bias
    t = p[f"{prefix}.scale"].double() * p[f"{prefix}.mask"].double()  # (out, 1, 3, 3)
    kernel = t * k0[:, :, None, None]
    bias = p[f"{prefix}.bias"].double() + b0 * t.sum(dim=(1, 2, 3))
    return kernel, bias


def fuse_edbb(
    params: Mapping[str, torch.Tensor], with_13: bool = False, with_idt: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """The single 3x3 (kernel, bias), in float64, equal to an EDBB's train-form branches.

    ``params`` holds the block's tensors under the authors' names, relative to the block
    (``rep_conv.weight``, ``conv1x1.bias``, ``conv1x1_sbx.k0`` ...); ``with_13`` adds the
    ``conv1x1_3x3`` branch and ``with_idt`` the identity, as in the block's forward.
    """
    kernel = params["rep_conv.weight"].double().clone()
    bias = params["rep_conv.bias"].double().clone()
    kernel += F.pad(params["conv1x1.weight"].double(), [1, 1, 1, 1])
    bias += params["conv1x1.bias"].double()
    branches = [("conv1x1_sbx", "conv1x1-sobelx"), ("conv1x1_sby", "conv1x1-sobely"), ("conv1x1_lpl", "conv1x1-laplacian")]
    if with_13:
        branches.append(("conv1x1_3x3", "conv1x1-conv3x3"))
    for name, seq_type in branches:
        k, b = _seq_kernel(params, name, seq_type)
        kernel += k
        bias += b
    if with_idt:
        if kernel.shape[0] != kernel.shape[1]:
            raise ValueError("the identity branch needs as many input as output channels")
        idx = torch.arange(kernel.shape[0])
        kernel[idx, idx, 1, 1] += 1.0
    return kernel, bias


def _make_act(act_type: str, channels: int) -> nn.Module | None:
    if act_type == "prelu":
        return nn.PReLU(num_parameters=channels)
    if act_type == "relu":
        return nn.ReLU(inplace=True)
    if act_type == "linear":
        return None
    raise ValueError(f"act_type must be 'prelu', 'relu' or 'linear', got {act_type!r}")


class EDBB(nn.Module):
    """Edge-enhanced diverse branch block: a re-parameterisable 3x3 conv + activation.

    Train form: ``act(rep_conv(x) + conv1x1(x) + conv1x1_sbx(x) + conv1x1_sby(x) +
    conv1x1_lpl(x) [+ conv1x1_3x3(x) with with_13] [+ x with with_idt])``. Deploy form
    (``deploy=True`` or after :meth:`reparameterize`): ``act(rep_conv(x))``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        depth_multiplier: float | None = None,
        act_type: str = "prelu",
        with_idt: bool = False,
        with_13: bool = False,
        deploy: bool = False,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.depth_multiplier = 1.0 if depth_multiplier is None else depth_multiplier
        self.with_13 = with_13
        self.with_idt = with_idt and in_channels == out_channels
        self.deploy = deploy
        self.rep_conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        if not deploy:
            self.conv1x1 = nn.Conv2d(in_channels, out_channels, 1)
            if with_13:
                self.conv1x1_3x3 = SeqConv3x3("conv1x1-conv3x3", in_channels, out_channels, self.depth_multiplier)
            self.conv1x1_sbx = SeqConv3x3("conv1x1-sobelx", in_channels, out_channels)
            self.conv1x1_sby = SeqConv3x3("conv1x1-sobely", in_channels, out_channels)
            self.conv1x1_lpl = SeqConv3x3("conv1x1-laplacian", in_channels, out_channels)
        act = _make_act(act_type, out_channels)
        if act is not None:
            self.act = act
        self.act_type = act_type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.rep_conv(x)
        if not self.deploy:
            y = y + self.conv1x1(x) + self.conv1x1_sbx(x) + self.conv1x1_sby(x) + self.conv1x1_lpl(x)
            if self.with_idt:
                y = y + x
            if self.with_13:
                y = y + self.conv1x1_3x3(x)
        return self.act(y) if self.act_type != "linear" else y

    def get_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The fused 3x3 (kernel, bias), float64, of the train-form branches."""
        return fuse_edbb(dict(self.named_parameters()), with_13=self.with_13, with_idt=self.with_idt)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold all branches into ``rep_conv`` in place, delete them, set ``deploy``."""
        if self.deploy:
            return
        ref = self.rep_conv.weight
        kernel, bias = self.get_kernel_bias()
        conv = nn.Conv2d(self.in_channels, self.out_channels, 3, padding=1, device=ref.device, dtype=ref.dtype)
        conv.weight.copy_(kernel.to(ref.dtype))
        conv.bias.copy_(bias.to(ref.dtype))
        for name in ("conv1x1", "conv1x1_3x3", "conv1x1_sbx", "conv1x1_sby", "conv1x1_lpl"):
            if hasattr(self, name):
                delattr(self, name)
        self.rep_conv = conv
        self.deploy = True

    switch_to_deploy = reparameterize  # the authors' name

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, with_13={self.with_13}, with_idt={self.with_idt}, deploy={self.deploy}"


class Conv1x1PReLU(nn.Module):
    """1x1 conv + PReLU (the authors' ``conv``: ``conv1x1``, ``act``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1x1 = nn.Conv2d(channels, channels, 1)
        self.act = nn.PReLU(num_parameters=channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv1x1(x))


class EFDNCell(nn.Module):
    """EFDN's block (the authors' ``Cell``): 1x1 + PReLU, two EDBBs, the input and the three
    intermediate features each reduced to half width by a 1x1 branch, concatenated, fused by a
    1x1 conv (``fusion``; ``fuse`` upstream), ESA, plus the input."""

    def __init__(self, channels: int = 48, deploy: bool = False, with_13: bool = False, with_idt: bool = False):
        super().__init__()
        self.conv1 = Conv1x1PReLU(channels)
        self.conv2 = EDBB(channels, channels, with_13=with_13, with_idt=with_idt, deploy=deploy)
        self.conv3 = EDBB(channels, channels, with_13=with_13, with_idt=with_idt, deploy=deploy)
        self.fusion = nn.Conv2d(channels * 2, channels, 1)  # the authors' ``fuse`` (see the module doc)
        self.att = ESA(channels)
        self.branch = nn.ModuleList([nn.Conv2d(channels, channels // 2, 1) for _ in range(4)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = self.conv1(x)
        out2 = self.conv2(out1)
        out3 = self.conv3(out2)
        feats = [self.branch[0](x), self.branch[1](out1), self.branch[2](out2), self.branch[3](out3)]
        out = self.att(self.fusion(torch.cat(feats, dim=1)))
        return out + x


class EFDN(SRModel):
    """EFDN: 3x3 head, four cells with 1x1 ``local_fuse`` links, a long skip, pixel-shuffle tail,
    output clamped to [0, 1]."""

    rgb_range = 1.0

    def __init__(
        self,
        scale: int = 4,
        channels: int = 48,
        in_channels: int = 3,
        out_channels: int = 3,
        deploy: bool = False,
        with_13: bool = False,
        with_idt: bool = False,
    ):
        super().__init__()
        if scale < 1:
            raise ValueError(f"EFDN scale must be a positive integer, got {scale}")
        self.scale = scale
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.head = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.cells = nn.ModuleList([EFDNCell(channels, deploy=deploy, with_13=with_13, with_idt=with_idt) for _ in range(4)])
        self.local_fuse = nn.ModuleList([nn.Conv2d(channels * 2, channels, 1) for _ in range(3)])
        self.tail = pixelshuffle_block(channels, out_channels, scale)

    @property
    def deploy(self) -> bool:
        return all(m.deploy for m in self.modules() if isinstance(m, EDBB))

    def reparameterize(self) -> None:
        """Fold every EDBB into its single 3x3 conv (the deploy form), in place."""
        for m in self.modules():
            if isinstance(m, EDBB):
                m.reparameterize()

    def forward_raw(self, x: torch.Tensor) -> torch.Tensor:
        out0 = self.head(x)
        out1 = self.cells[0](out0)
        out2 = self.cells[1](out1)
        out2_fuse = self.local_fuse[0](torch.cat([out1, out2], dim=1))
        out3 = self.cells[2](out2_fuse)
        out3_fuse = self.local_fuse[1](torch.cat([out2, out3], dim=1))
        out4 = self.cells[3](out3_fuse)
        # the authors fuse out2 (not out3) with out4 here
        out4_fuse = self.local_fuse[2](torch.cat([out2, out4], dim=1))
        return self.tail(out4_fuse + out0).clamp(0, 1)


@register_model(
    task="sr", family="efdn", paper=_PAPER, arxiv="2204.08759", license="MIT",
    source=f"{_NTIRE25} (team 00, models/team00_EFDN.py); https://github.com/icandle/EFDN",
    input_size=(3, 256, 256), params=364_128, gmacs=22.2022,
    description="EFDN, 48 channels, x4, train form (EDBB branches); 276,192 params / 16.69 GMACs in deploy form",
    pretrained_cfgs=[
        PretrainedCfg(
            tag="ntire25",
            url=f"{_NTIRE25}/raw/main/model_zoo/team00_EFDN.pth",
            sha256=None,
            verified=False,
            license="MIT",
            filter_fn=filter_efdn,
            description=(
                "The NTIRE 2025 efficient-SR baseline (team 00, EFDN), a deploy-form file (one rep_conv per EDBB): "
                "create with deploy=True for the deploy network, or zoo.optimize the default train form"
            ),
        )
    ],
)
def efdn_x4(**kwargs) -> EFDN:
    """EFDN, 48 channels, x4 (NTIRE 2023 ESR winner, NTIRE 2025 ESR baseline)."""
    return EFDN(**{"scale": 4, **kwargs})
