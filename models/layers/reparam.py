"""Structural re-parameterisation: multi-branch conv blocks that fold into one conv for inference.

:class:`RepConv2d` trains as ``act(kxk conv [+BN] + 1x1 conv [+BN] + identity [BN])`` (the
RepVGG design of Ding et al., "RepVGG: Making VGG-style ConvNets Great Again", CVPR 2021; also
the re-parameterisable convs of ECBSR / RepSR / MobileOne / SPAN) and ``reparameterize()``
folds the branches into a single ``nn.Conv2d`` (``reparam_conv``). ``zoo.optimize(model)``
(timm's ``reparameterize_model``) calls ``reparameterize()`` on every such block.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import create_act_layer

__all__ = ["RepConv2d", "fuse_conv_bn", "fuse_kernel_bn"]


def fuse_kernel_bn(
    kernel: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold eval-mode ``bn`` (running stats) into a conv ``kernel`` / ``bias``, in float64.

    ``bn(conv(x)) = gamma * (conv(x) - mean) / sqrt(var + eps) + beta``, so the new kernel is
    ``kernel * gamma / std`` per output channel and the new bias ``beta + (bias - mean) * gamma / std``.
    """
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fuse a BatchNorm without running stats (track_running_stats=False)")
    kernel = kernel.detach().double()
    mean = bn.running_mean.detach().double()
    var = bn.running_var.detach().double()
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(mean)
    bias = torch.zeros_like(mean) if bias is None else bias.detach().double()
    scale = gamma / torch.sqrt(var + bn.eps)
    return kernel * scale.reshape(-1, *([1] * (kernel.dim() - 1))), beta + (bias - mean) * scale


def fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new ``nn.Conv2d`` (with bias) equal to ``bn(conv(x))`` with ``bn`` in eval mode."""
    kernel, bias = fuse_kernel_bn(conv.weight, conv.bias, bn)
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=True,
        padding_mode=conv.padding_mode,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    with torch.no_grad():
        fused.weight.copy_(kernel.to(conv.weight.dtype))
        fused.bias.copy_(bias.to(conv.weight.dtype))
    return fused


def _make_act(act_layer: Any) -> nn.Module:
    if act_layer is None:
        return nn.Identity()
    if isinstance(act_layer, nn.Module):
        return act_layer
    act = create_act_layer(act_layer)
    return nn.Identity() if act is None else act


def _conv_branch(in_ch: int, out_ch: int, kernel_size: int, stride: int, groups: int, use_bn: bool) -> nn.Sequential:
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    layers["conv"] = nn.Conv2d(
        in_ch, out_ch, kernel_size, stride=stride, padding=kernel_size // 2, groups=groups, bias=not use_bn
    )
    if use_bn:
        layers["bn"] = nn.BatchNorm2d(out_ch)
    return nn.Sequential(layers)


class RepConv2d(nn.Module):
    """Re-parameterisable ``kernel_size`` conv: branches in training, one conv when deployed.

    Train form (``deploy=False``)::

        act(conv_kxk(x) + conv_1x1(x) + identity(x))

    with ``conv_kxk`` / ``conv_1x1`` = conv (+ BN when ``use_bn``; convs have a bias only
    without BN), the 1x1 branch when ``use_1x1`` (and ``kernel_size > 1``), and the identity
    branch when ``use_identity`` and shapes allow (``in_ch == out_ch`` and ``stride == 1``): a
    ``BatchNorm2d`` with ``use_bn``, else the plain input. Deploy form: ``act(reparam_conv(x))``.

    State dict (train): ``conv_kxk.conv.weight`` [``.bias``] / ``conv_kxk.bn.*``,
    ``conv_1x1.conv.*`` / ``conv_1x1.bn.*``, ``identity.*`` (BN only); (deploy):
    ``reparam_conv.weight``, ``reparam_conv.bias``. ``reparameterize()`` folds BN running stats,
    so compare outputs in eval mode.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        use_1x1: bool = True,
        use_identity: bool = True,
        use_bn: bool = False,
        act_layer: Any = None,
        deploy: bool = False,
    ):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        if in_ch % groups or out_ch % groups:
            raise ValueError(f"in_ch ({in_ch}) and out_ch ({out_ch}) must be divisible by groups ({groups})")
        self.in_channels = in_ch
        self.out_channels = out_ch
        self.kernel_size = kernel_size
        self.stride = stride
        self.groups = groups
        self.padding = kernel_size // 2
        self.use_bn = use_bn
        self.deploy = deploy
        self.act = _make_act(act_layer)

        if deploy:
            self.reparam_conv = self._new_conv()
            return
        self.conv_kxk = _conv_branch(in_ch, out_ch, kernel_size, stride, groups, use_bn)
        self.conv_1x1 = _conv_branch(in_ch, out_ch, 1, stride, groups, use_bn) if use_1x1 and kernel_size > 1 else None
        if use_identity and in_ch == out_ch and stride == 1:
            self.identity = nn.BatchNorm2d(in_ch) if use_bn else nn.Identity()
        else:
            self.identity = None

    def _new_conv(self, device=None, dtype=None) -> nn.Conv2d:
        return nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            groups=self.groups,
            bias=True,
            device=device,
            dtype=dtype,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deploy:
            return self.act(self.reparam_conv(x))
        out = self.conv_kxk(x)
        if self.conv_1x1 is not None:
            out = out + self.conv_1x1(x)
        if self.identity is not None:
            out = out + self.identity(x)
        return self.act(out)

    # -- folding ---------------------------------------------------------------------------

    def _branch_kernel(self, branch: nn.Sequential) -> tuple[torch.Tensor, torch.Tensor]:
        conv: nn.Conv2d = branch.conv
        if "bn" in branch._modules:
            kernel, bias = fuse_kernel_bn(conv.weight, conv.bias, branch.bn)
        else:
            kernel = conv.weight.detach().double()
            bias = conv.bias.detach().double() if conv.bias is not None else kernel.new_zeros(kernel.shape[0])
        pad = (self.kernel_size - conv.kernel_size[0]) // 2
        if pad:
            kernel = F.pad(kernel, [pad, pad, pad, pad])
        return kernel, bias

    def _identity_kernel(self, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        per_group = self.in_channels // self.groups
        kernel = torch.zeros(
            self.in_channels, per_group, self.kernel_size, self.kernel_size, dtype=torch.float64, device=ref.device
        )
        idx = torch.arange(self.in_channels, device=ref.device)
        kernel[idx, idx % per_group, self.padding, self.padding] = 1.0
        if isinstance(self.identity, nn.BatchNorm2d):
            return fuse_kernel_bn(kernel, None, self.identity)
        return kernel, kernel.new_zeros(self.in_channels)

    def get_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The single equivalent (kernel, bias), in float64, of the train-form branches."""
        kernel, bias = self._branch_kernel(self.conv_kxk)
        if self.conv_1x1 is not None:
            k1, b1 = self._branch_kernel(self.conv_1x1)
            kernel, bias = kernel + k1, bias + b1
        if self.identity is not None:
            ki, bi = self._identity_kernel(kernel)
            kernel, bias = kernel + ki, bias + bi
        return kernel, bias

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold all branches into ``reparam_conv`` in place, delete them, set ``deploy``."""
        if self.deploy:
            return
        ref = self.conv_kxk.conv.weight
        kernel, bias = self.get_kernel_bias()
        conv = self._new_conv(device=ref.device, dtype=ref.dtype)
        conv.weight.copy_(kernel.to(ref.dtype))
        conv.bias.copy_(bias.to(ref.dtype))
        for name in ("conv_kxk", "conv_1x1", "identity"):
            delattr(self, name)
        self.reparam_conv = conv
        self.deploy = True

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"groups={self.groups}, deploy={self.deploy}"
        )
