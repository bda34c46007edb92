"""MobileTL: memory-efficient fine-tuning of inverted-residual networks.

Chiang, Frumkin, Liang and Marculescu, "MobileTL: On-device Transfer Learning with Inverted
Residual Blocks", AAAI 2023 (arXiv 2212.03246). The authors' code was announced but is not
public, so this follows the paper's text (Fig. 2 and Sec. "Method"); the networks are timm's
``EfficientNet`` / ``MobileNetV3`` classes (huggingface/pytorch-image-models, Apache-2.0), whose
blocks (``DepthwiseSeparableConv``, ``InvertedResidual``, ``ConvBnAct``) keep their norm and
activation fused in timm's ``BatchNormAct2d``.

What :func:`apply_mobiletl` does to a model, in place:

1. **Top blocks only.** ``model.blocks`` (all stages, flattened) is split: the top
   ``train_top_blocks`` blocks and the head (``conv_head`` / ``bn2`` / ``classifier`` ...) are
   trained, the stem and the blocks below are frozen. Frozen means ``requires_grad=False`` and
   norms that always use their running statistics, so no autograd graph is built below the first
   trainable layer and nothing is stored there. The first trainable conv still stores its input
   (the frozen part's output), which it needs for its weight gradient.
2. **Internal norms train their shift only.** In a trainable block every norm but the last (the
   norms after the expansion and the depthwise conv of an IRB) becomes :class:`FrozenScaleNormAct`:
   scale (``weight``) and global statistics (``running_mean`` / ``running_var``) frozen, shift
   (``bias``) trained. The paper freezes the statistics too ("we only train shifts, and freeze
   scales and global statistics"), and that is what makes the layer free: with frozen statistics
   the norm is ``y = x * a + b`` with constant ``a = weight / sqrt(running_var + eps)``, so
   ``dL/dx = a * dL/dy`` and ``dL/dbias = sum(dL/dy)`` need no activation at all. (With batch
   statistics even a frozen scale would need the normalised input in the backward, since
   ``dL/dx`` then depends on ``x_hat``; so this layer uses the running statistics in train mode
   as well as in eval mode and never updates them.) The last norm of the block (after the
   projection conv: a narrow tensor) is trained as usual: scale, shift and batch statistics.
3. **Sign-approximated activations.** Every ReLU / ReLU6 / Hard-Swish of the trainable part is
   wrapped in :class:`SignMaskAct`: the forward is the activation itself, the backward uses the
   derivative of a sign function, ``dy/dx ~= 1[x > 0]``, so only a binary mask is stored, bit
   packed (1 bit per element, ``pack_masks=True``) or as ``torch.bool`` (1 byte). The
   approximation is exact for ReLU; for ReLU6 it differs from the true derivative only where
   ``x > 6`` (true 0, approximation 1); for Hard-Swish (true derivative 0 below -3,
   ``(2x + 3) / 6`` between, 1 from 3 on) it is exact outside (-3, 3). ``approx_outside_blocks``
   applies the same to the head's (and, when trained, the stem's) activations.

Forward outputs are unchanged (the frozen norms run ``F.batch_norm`` in eval form, the
activations run the original functions); in train mode they equal the original model with the
frozen norms in eval mode. State-dict names and shapes are unchanged, so checkpoints load both
ways.

:func:`activation_memory` counts the bytes of the tensors autograd saves for the backward during
one training forward (``torch.autograd.graph.saved_tensors_hooks``; each storage counted once,
the model's own parameters and buffers not counted). ``python -m zoo.tasks.classification.mobiletl``
prints the comparison for ``mobilenetv2_100`` and ``mobilenetv3_large_100``.

Measured (torch 2.9.1, CPU, 8 x 3 x 224 x 224; the paper reports 46.3% / 53.3% for a V2 / V3 IRB
with expansion 6):

- one V3 IRB (Hard-Swish + SE, expansion 6, stride 1): 53.1% less; one V2 IRB (expansion 6,
  stride 1): 62.2% less. PyTorch's in-place ReLU6 (``hardtanh_``) and Hard-Swish save a *copy* of
  their input (their backward needs the original), so a plain V2 block stores 38 expanded-width
  units where a count that lets ReLU6 share its output with the next conv gives 26; against 26,
  MobileTL's 14.375 would be 44.7%, close to the paper's V2 figure. In-place ReLU (early V3
  blocks) saves its output, shared with the next conv, so there MobileTL saves only the norms'
  inputs (34% for the expansion-3 SE blocks); summed over all IRBs: V2 61.9%, V3 47.4%.
- whole network, every block trained: V2 59.1%, V3 45.1% less than full fine-tuning; top 5
  blocks: 60.6% / 54.1% less than plainly fine-tuning the same 5 blocks, 95.5% / 90.3% less than
  full fine-tuning.
- training conv/linear FLOPs with the top 5 blocks (of timm's 16 in V3, counting the final 1x1
  ``ConvBnAct``): 39% less than full fine-tuning (paper: 36%).
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "FrozenScaleNormAct",
    "SavedTensorCounter",
    "SignMaskAct",
    "activation_memory",
    "apply_mobiletl",
    "benchmark",
    "count_saved_tensors",
    "freeze_lower_blocks",
    "frozen_scale_norm",
    "mobiletl_block_memory",
    "pack_mask",
    "prepare",
    "sign_mask_act",
    "training_gflops",
    "unpack_mask",
]

# Default number of fine-tuned top blocks: the paper's headline MobileNetV3 setting ("a 36%
# reduction in FLOPs when fine-tuning 5 blocks, while only incurring a 0.6% accuracy reduction
# on CIFAR10").
DEFAULT_TOP_BLOCKS = 5


# --------------------------------------------------------------------------------------------
# 1-bit masks
# --------------------------------------------------------------------------------------------


def _bit_weights(device: torch.device) -> torch.Tensor:
    return torch.bitwise_left_shift(torch.ones(8, dtype=torch.uint8, device=device), torch.arange(8, dtype=torch.uint8, device=device))


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """Pack a boolean tensor into ``ceil(numel / 8)`` bytes (logical, row-major element order)."""
    flat = mask.reshape(-1).to(torch.uint8)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return (flat.view(-1, 8) * _bit_weights(flat.device)).sum(dim=1, dtype=torch.uint8)


def unpack_mask(packed: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`pack_mask`: the boolean tensor of ``shape``."""
    numel = 1
    for s in shape:
        numel *= int(s)
    bits = packed.unsqueeze(1).bitwise_and(_bit_weights(packed.device)).ne(0)
    return bits.view(-1)[:numel].view(tuple(shape))


# --------------------------------------------------------------------------------------------
# Activations with a sign-function backward
# --------------------------------------------------------------------------------------------


def _timm_hard_swish(x: torch.Tensor) -> torch.Tensor:
    from timm.layers.activations import hard_swish

    return hard_swish(x, False)


def _timm_hard_swish_me(x: torch.Tensor) -> torch.Tensor:
    from timm.layers.activations_me import hard_swish_fwd

    return hard_swish_fwd(x)


# kind -> the exact forward of the activation module it replaces (never in place)
_ACT_FORWARD = {
    "relu": F.relu,
    "relu6": F.relu6,
    "hardswish": F.hardswish,
    "timm_hard_swish": _timm_hard_swish,
    "timm_hard_swish_me": _timm_hard_swish_me,
}


def _act_kind(act: nn.Module) -> str | None:
    """The kind of a supported activation module, None for anything else."""
    from timm.layers.activations import HardSwish
    from timm.layers.activations_me import HardSwishMe

    if type(act) is nn.ReLU:
        return "relu"
    if type(act) is nn.ReLU6:
        return "relu6"
    if type(act) is nn.Hardswish:
        return "hardswish"
    if type(act) is HardSwish:
        return "timm_hard_swish"
    if type(act) is HardSwishMe:
        return "timm_hard_swish_me"
    return None


class _SignMaskActFn(torch.autograd.Function):
    """``y = act(x)``; backward ``dx = dy * 1[x > 0]`` from a stored (packed) mask only."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, kind: str, pack: bool) -> torch.Tensor:  # type: ignore[override]
        y = _ACT_FORWARD[kind](x)
        mask = x > 0
        ctx.pack = pack
        ctx.shape = tuple(x.shape)
        ctx.save_for_backward(pack_mask(mask) if pack else mask)
        return y

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        (saved,) = ctx.saved_tensors
        mask = unpack_mask(saved, ctx.shape) if ctx.pack else saved
        return grad_out * mask.to(grad_out.dtype), None, None


def sign_mask_act(x: torch.Tensor, kind: str = "relu6", pack: bool = True) -> torch.Tensor:
    """Functional form of :class:`SignMaskAct` (``kind`` one of relu, relu6, hardswish,
    timm_hard_swish, timm_hard_swish_me)."""
    if kind not in _ACT_FORWARD:
        raise ValueError(f"unknown activation kind {kind!r}; expected one of {sorted(_ACT_FORWARD)}")
    return _SignMaskActFn.apply(x, kind, pack)


class SignMaskAct(nn.Module):
    """Wraps a ReLU / ReLU6 / Hard-Swish module: same forward, sign-function backward that stores
    a binary mask (bit packed when ``pack``) instead of the activation's input."""

    def __init__(self, act: nn.Module, pack: bool = True):
        super().__init__()
        kind = _act_kind(act)
        if kind is None:
            raise ValueError(f"SignMaskAct supports ReLU, ReLU6 and Hard-Swish, not {type(act).__name__}")
        self.act = act
        self.kind = kind
        self.pack = pack

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return _SignMaskActFn.apply(x, self.kind, self.pack)
        return self.act(x)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, pack={self.pack}"


# --------------------------------------------------------------------------------------------
# Norm with frozen scale and statistics
# --------------------------------------------------------------------------------------------


class _FrozenScaleNormFn(torch.autograd.Function):
    """Eval-form batch norm; only the input and the shift get gradients, nothing large is stored."""

    @staticmethod
    def forward(ctx, x, bias, weight, running_mean, running_var, eps: float):  # type: ignore[override]
        y = F.batch_norm(x, running_mean, running_var, weight, bias, False, 0.0, eps)
        scale = torch.rsqrt(running_var + eps)
        if weight is not None:
            scale = scale * weight
        ctx.has_bias = bias is not None
        ctx.save_for_backward(scale)  # one value per channel
        return y

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        (scale,) = ctx.saved_tensors
        shape = (1, -1) + (1,) * (grad_out.ndim - 2)
        grad_x = grad_out * scale.to(grad_out.dtype).view(shape) if ctx.needs_input_grad[0] else None
        grad_b = None
        if ctx.has_bias and ctx.needs_input_grad[1]:
            dims = [0] + list(range(2, grad_out.ndim))
            grad_b = grad_out.sum(dim=dims, dtype=scale.dtype)
        return grad_x, grad_b, None, None, None, None


def frozen_scale_norm(x, bias, weight, running_mean, running_var, eps: float = 1e-5) -> torch.Tensor:
    """Functional form of :class:`FrozenScaleNormAct`'s norm (no activation)."""
    return _FrozenScaleNormFn.apply(x, bias, weight, running_mean, running_var, eps)


class FrozenScaleNormAct(nn.Module):
    """A batch norm (+ activation) with frozen scale and frozen running statistics.

    Built from a ``nn.BatchNorm2d`` or timm ``BatchNormAct2d``; keeps its parameter and buffer
    names (``weight``, ``bias``, ``running_mean``, ``running_var``, ``num_batches_tracked``) so
    state dicts are unchanged. ``train_shift`` leaves ``bias`` trainable (MobileTL's internal
    norms); without it the layer is fully frozen (the frozen lower part of the network). The
    statistics are used in train and eval mode alike and never updated. ``act`` replaces the
    norm's own activation (e.g. a :class:`SignMaskAct`); by default that activation is kept.
    Deliberately not a ``_BatchNorm`` subclass, so BN utilities (SyncBatchNorm conversion,
    "set BN to train/eval" helpers) leave it alone.
    """

    def __init__(self, bn: nn.BatchNorm2d, train_shift: bool = True, act: nn.Module | None = None):
        super().__init__()
        if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or bn.running_mean is None:
            raise ValueError(f"FrozenScaleNormAct needs a batch norm with running statistics, got {type(bn).__name__}")
        self.num_features = bn.num_features
        self.eps = float(bn.eps)
        self.weight = bn.weight
        self.bias = bn.bias
        if self.weight is not None:
            self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(bool(train_shift))
        self.register_buffer("running_mean", bn.running_mean)
        self.register_buffer("running_var", bn.running_var)
        self.register_buffer("num_batches_tracked", bn.num_batches_tracked)
        self.drop = getattr(bn, "drop", None) or nn.Identity()
        self.act = act if act is not None else (getattr(bn, "act", None) or nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        needs_graph = torch.is_grad_enabled() and (x.requires_grad or (self.bias is not None and self.bias.requires_grad))
        if needs_graph:
            x = _FrozenScaleNormFn.apply(x, self.bias, self.weight, self.running_mean, self.running_var, self.eps)
        else:
            x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return self.act(self.drop(x))

    def extra_repr(self) -> str:
        train = self.bias is not None and self.bias.requires_grad
        return f"{self.num_features}, eps={self.eps}, frozen scale and statistics, shift trained={train}"


# --------------------------------------------------------------------------------------------
# Applying MobileTL to a model
# --------------------------------------------------------------------------------------------


def _flat_blocks(model: nn.Module) -> list[nn.Module]:
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.Sequential):
        raise TypeError(
            f"MobileTL needs a timm EfficientNet / MobileNetV3-style model with a `blocks` nn.Sequential of stages, "
            f"got {type(model).__name__}"
        )
    out: list[nn.Module] = []
    for stage in blocks:
        out.extend(stage if isinstance(stage, nn.Sequential) else [stage])
    return out


def _split_around_blocks(model: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
    """Top-level modules registered before ``blocks`` (stem) and after it (head)."""
    stem: list[nn.Module] = []
    head: list[nn.Module] = []
    seen = False
    for name, child in model.named_children():
        if name == "blocks":
            seen = True
        elif seen:
            head.append(child)
        else:
            stem.append(child)
    return stem, head


def _is_bn(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, new)


def _norm_names(root: nn.Module) -> list[str]:
    """Batch norms under ``root`` in registration (= forward, for timm blocks) order."""
    return [n for n, m in root.named_modules() if n and _is_bn(m)]


def _freeze(modules: Iterable[nn.Module]) -> None:
    """No gradients and running-statistics norms: nothing is stored for these modules."""
    for mod in modules:
        for p in mod.parameters():
            p.requires_grad_(False)
        if _is_bn(mod):  # a top-level norm (the stem's bn1) cannot be replaced through its parent here
            continue
        for name in _norm_names(mod):
            _replace(mod, name, FrozenScaleNormAct(mod.get_submodule(name), train_shift=False))


def _freeze_top_level_norms(model: nn.Module, modules: list[nn.Module]) -> None:
    for name, child in list(model.named_children()):
        if any(child is m for m in modules) and _is_bn(child):
            setattr(model, name, FrozenScaleNormAct(child, train_shift=False))


def _wrap_acts(root: nn.Module, pack: bool) -> None:
    """Wrap every supported activation under ``root`` (standalone or inside a norm-act) in a
    :class:`SignMaskAct`; ``root`` itself may be an activation only through its parent."""
    targets = [n for n, m in root.named_modules() if n and _act_kind(m) is not None]
    for name in targets:
        parent_name = name.rpartition(".")[0]
        parent = root.get_submodule(parent_name) if parent_name else root
        if isinstance(parent, SignMaskAct):
            continue
        _replace(root, name, SignMaskAct(root.get_submodule(name), pack=pack))


def _set_trainable(modules: Iterable[nn.Module]) -> None:
    for mod in modules:
        for p in mod.parameters():
            p.requires_grad_(True)


def _resolve_top(n_blocks: int, train_top_blocks: int | None) -> int:
    if train_top_blocks is None:
        return n_blocks
    if isinstance(train_top_blocks, bool) or not isinstance(train_top_blocks, int):
        raise TypeError(f"train_top_blocks must be an int or None, got {train_top_blocks!r}")
    if not 0 <= train_top_blocks <= n_blocks:
        raise ValueError(f"train_top_blocks={train_top_blocks} out of range: the model has {n_blocks} blocks (0..{n_blocks}, or None for all)")
    return train_top_blocks


def _check_fresh(model: nn.Module) -> None:
    if any(isinstance(m, (FrozenScaleNormAct, SignMaskAct)) for m in model.modules()):
        raise ValueError("the model already has frozen norms / MobileTL layers; apply to an unmodified model")


def freeze_lower_blocks(model: nn.Module, train_top_blocks: int | None = DEFAULT_TOP_BLOCKS) -> nn.Module:
    """Plain top-block fine-tuning (the paper's "FT-BLKs" baseline), in place: the stem and all but
    the top ``train_top_blocks`` blocks are frozen (no gradients, running-statistics norms); the
    top blocks and the head are trained with unmodified layers. ``None`` trains everything."""
    _check_fresh(model)
    blocks = _flat_blocks(model)
    top = _resolve_top(len(blocks), train_top_blocks)
    stem, head = _split_around_blocks(model)
    low, high = blocks[: len(blocks) - top], blocks[len(blocks) - top :]
    trainable = high + head + (stem if train_top_blocks is None else [])
    _set_trainable(trainable)
    if train_top_blocks is not None:
        _freeze(stem + low)
        _freeze_top_level_norms(model, stem)
    return model


def apply_mobiletl(
    model: nn.Module,
    train_top_blocks: int | None = DEFAULT_TOP_BLOCKS,
    pack_masks: bool = True,
    approx_outside_blocks: bool = True,
) -> nn.Module:
    """Turn ``model`` (a timm EfficientNet / MobileNetV2 / MobileNetV3, as the zoo registers them)
    into its MobileTL fine-tuning form, in place, and return it.

    ``train_top_blocks``: how many of the flattened ``model.blocks`` (counted from the output;
    17 in MobileNetV2, 16 in MobileNetV3-Large including its final 1x1 ``ConvBnAct``) are
    fine-tuned, with the head; the stem and the blocks below are frozen. ``None`` trains the
    whole network (stem included) with the MobileTL rules in every block.
    ``pack_masks``: store activation masks with 1 bit per element (else ``torch.bool``).
    ``approx_outside_blocks``: give the head's (and a trained stem's) activations the
    sign-function backward too; their norms are trained normally.

    Parameters: in trained blocks, conv / SE weights and the last norm of each block train; the
    other norms train only their ``bias``. Everything frozen has ``requires_grad=False``; build
    the optimizer from ``[p for p in model.parameters() if p.requires_grad]``.
    """
    _check_fresh(model)
    blocks = _flat_blocks(model)
    top = _resolve_top(len(blocks), train_top_blocks)
    freeze_lower_blocks(model, train_top_blocks)
    stem, head = _split_around_blocks(model)
    for block in blocks[len(blocks) - top :]:
        names = _norm_names(block)
        # internal norms: frozen scale + statistics, trained shift, sign-mask activation
        for name in names[:-1]:
            bn = block.get_submodule(name)
            act = getattr(bn, "act", None)
            new_act = SignMaskAct(act, pack=pack_masks) if act is not None and _act_kind(act) is not None else None
            _replace(block, name, FrozenScaleNormAct(bn, train_shift=True, act=new_act))
        # the last norm stays a full batch norm; every remaining activation gets the sign backward
        _wrap_acts(block, pack_masks)
    if approx_outside_blocks:
        outside = head + (stem if train_top_blocks is None else [])
        for name, child in list(model.named_children()):
            if not any(child is m for m in outside):
                continue
            if _act_kind(child) is not None:
                setattr(model, name, SignMaskAct(child, pack=pack_masks))
            else:
                _wrap_acts(child, pack_masks)
    return model


# --------------------------------------------------------------------------------------------
# Measuring the memory saved for the backward
# --------------------------------------------------------------------------------------------


@dataclass
class SavedTensorCounter:
    """What autograd saved for the backward inside :func:`count_saved_tensors`."""

    bytes: int = 0
    tensors: int = 0
    storages: int = 0
    by_dtype: dict[str, int] = field(default_factory=dict)
    _seen: set = field(default_factory=set, repr=False)
    _refs: list = field(default_factory=list, repr=False)


def _storage_key(t: torch.Tensor) -> tuple[str, int]:
    return (str(t.device), t.untyped_storage().data_ptr())


@contextmanager
def count_saved_tensors(exclude: Iterable[torch.Tensor] = ()) -> Iterator[SavedTensorCounter]:
    """Count the tensors autograd saves for the backward in this context: each storage once, at
    its real size (a bool mask 1 byte per element, a packed mask 1 bit); storages of the tensors in
    ``exclude`` (a model's parameters and buffers) are not counted."""
    counter = SavedTensorCounter()
    skip = {_storage_key(t) for t in exclude if t.untyped_storage().nbytes() > 0}

    def pack(t: torch.Tensor) -> torch.Tensor:
        counter.tensors += 1
        storage = t.untyped_storage()
        key = _storage_key(t)
        if storage.nbytes() == 0 or key in skip or key in counter._seen:
            return t
        counter._seen.add(key)
        counter._refs.append(storage)  # keeps the address from being reused while counting
        counter.storages += 1
        counter.bytes += storage.nbytes()
        name = str(t.dtype).replace("torch.", "")
        counter.by_dtype[name] = counter.by_dtype.get(name, 0) + storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield counter
    counter._refs.clear()


_MODES = ("full", "blocks", "mobiletl")


def prepare(model: nn.Module, mode: str = "mobiletl", train_top_blocks: int | None = DEFAULT_TOP_BLOCKS, **mobiletl_args: Any) -> nn.Module:
    """A copy of ``model`` set up for one fine-tuning ``mode``: ``full`` (every parameter, plain
    layers), ``blocks`` (plain top-block fine-tuning, :func:`freeze_lower_blocks`) or ``mobiletl``
    (:func:`apply_mobiletl`)."""
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    net = copy.deepcopy(model)
    if mode == "full":
        _check_fresh(net)
        for p in net.parameters():
            p.requires_grad_(True)
    elif mode == "blocks":
        freeze_lower_blocks(net, train_top_blocks)
    else:
        apply_mobiletl(net, train_top_blocks, **mobiletl_args)
    return net.train()


def activation_memory(
    model: nn.Module,
    input_size: Sequence[int] = (3, 224, 224),
    batch: int = 8,
    mode: str = "full",
    train_top_blocks: int | None = DEFAULT_TOP_BLOCKS,
    **mobiletl_args: Any,
) -> int:
    """Bytes of the tensors saved for the backward by one training forward of a copy of
    ``model`` (left unchanged) at ``(batch, *input_size)``, fine-tuned as ``mode``
    (``"full"``, ``"blocks"`` or ``"mobiletl"``, see :func:`prepare`). Parameters and buffers are
    not counted; they are resident whatever the fine-tuning scheme. Memory is linear in ``batch``.
    """
    net = prepare(model, mode, train_top_blocks, **mobiletl_args)
    param = next(iter(net.parameters()))
    x = torch.randn((batch, *input_size), device=param.device, dtype=param.dtype)
    with count_saved_tensors(exclude=list(net.parameters()) + list(net.buffers())) as counter:
        out = net(x)
    del out
    return counter.bytes


def mobiletl_block_memory(block: nn.Module, x: torch.Tensor, pack_masks: bool = True) -> tuple[int, int]:
    """Saved-for-backward bytes of one block in train mode, ``(plain, mobiletl)``, the paper's
    Fig. 1 comparison. ``x`` is the block's input; it requires a gradient (as inside a fine-tuned
    network), and it is counted, since the block's first conv stores it in both schemes."""
    wrapper = nn.Module()
    wrapper.blocks = nn.Sequential(nn.Sequential(copy.deepcopy(block)))
    apply_mobiletl(wrapper, train_top_blocks=1, pack_masks=pack_masks)
    results = []
    for net in (copy.deepcopy(block), wrapper.blocks):
        net.train()
        xi = x.detach().clone().requires_grad_(True)
        with count_saved_tensors(exclude=list(net.parameters()) + list(net.buffers())) as c:
            y = net(xi)
        del y
        results.append(c.bytes)
    return results[0], results[1]


# --------------------------------------------------------------------------------------------
# Benchmark entry point
# --------------------------------------------------------------------------------------------


def training_gflops(net: nn.Module, x: torch.Tensor) -> float:
    """Conv / linear GFLOPs (2 per multiply-accumulate) of one training step per image: the
    forward, plus in the backward an input gradient for every layer whose input requires one and
    a weight gradient for every layer whose weight is trained (each as costly as the forward).
    Counted from the layers' shapes (torch's FlopCounterMode over-counts depthwise conv backward)."""
    total = [0.0]

    def hook(mod: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        inp = inputs[0]
        if isinstance(mod, nn.Conv2d):
            kh, kw = mod.kernel_size
            macs = out.numel() * (mod.in_channels // mod.groups) * kh * kw
        else:
            macs = out.numel() * mod.in_features
        n = 1 + int(inp.requires_grad) + int(mod.weight.requires_grad)
        total[0] += 2.0 * macs * n

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        net(x)
    finally:
        for h in handles:
            h.remove()
    return total[0] / x.shape[0] / 1e9


def benchmark(
    names: Sequence[str] = ("mobilenetv2_100", "mobilenetv3_large_100"),
    input_size: Sequence[int] = (3, 224, 224),
    batch: int = 8,
    train_top_blocks: int = DEFAULT_TOP_BLOCKS,
    flops: bool = True,
) -> list[dict[str, Any]]:
    """Rows of the MobileTL memory table (see :func:`main`): per model, full fine-tuning, MobileTL
    on every block, plain fine-tuning of the top blocks, MobileTL on the top blocks, and the sum
    over the inverted-residual blocks measured one by one (``mode="irb"``, the paper's Fig. 1)."""
    from timm.models._efficientnet_blocks import InvertedResidual

    import zoo

    rows: list[dict[str, Any]] = []
    for name in names:
        model = zoo.create(name)
        x = torch.randn((batch, *input_size))
        setups = [
            ("full fine-tuning", "full", None, None),
            ("MobileTL, all blocks", "mobiletl", None, "full fine-tuning"),
            (f"FT top {train_top_blocks} blocks", "blocks", train_top_blocks, None),
            (f"MobileTL top {train_top_blocks} blocks", "mobiletl", train_top_blocks, f"FT top {train_top_blocks} blocks"),
        ]
        measured: dict[str, int] = {}
        for label, mode, top, plain in setups:
            net = prepare(model, mode, top)
            with count_saved_tensors(exclude=list(net.parameters()) + list(net.buffers())) as c:
                out = net(x)
            del out, net
            measured[label] = c.bytes
            row = {
                "model": name,
                "setup": label,
                "mode": mode,
                "train_top_blocks": top,
                "trainable_params": sum(p.numel() for p in prepare(model, mode, top).parameters() if p.requires_grad),
                "activation_bytes": c.bytes,
                "reduction_vs_full": None if mode == "full" else 1.0 - c.bytes / measured["full fine-tuning"],
                "reduction_vs_plain": (1.0 - c.bytes / measured[plain]) if plain else None,
            }
            if flops:
                row["train_gflops_per_image"] = training_gflops(prepare(model, mode, top), x[:1])
            rows.append(row)
        # block level: every inverted-residual block alone, fed its real input (batch 1, scaled)
        ref = copy.deepcopy(model).eval()
        with torch.no_grad():
            feats = ref.bn1(ref.conv_stem(x[:1]))
        plain_sum = ours_sum = n_irb = 0
        fig1: tuple[str, int, int] | None = None
        for i, block in enumerate(_flat_blocks(ref)):
            if isinstance(block, InvertedResidual):
                p, o = mobiletl_block_memory(block, feats)
                plain_sum, ours_sum, n_irb = plain_sum + p, ours_sum + o, n_irb + 1
                expansion = block.conv_pw.out_channels / block.conv_pw.in_channels
                if fig1 is None and expansion == 6 and block.conv_dw.stride == (1, 1):
                    se = "" if isinstance(block.se, nn.Identity) else " + SE"
                    act = type(block.bn1.act).__name__
                    fig1 = (f"block {i} ({act}{se}, expansion 6, stride 1)", p, o)
            with torch.no_grad():
                feats = block(feats)
        rows.append(
            {
                "model": name,
                "setup": f"{n_irb} IRBs, each alone",
                "mode": "irb",
                "train_top_blocks": None,
                "trainable_params": None,
                "plain_bytes": plain_sum * batch,
                "activation_bytes": ours_sum * batch,
                "reduction_vs_full": None,
                "reduction_vs_plain": 1.0 - ours_sum / plain_sum,
            }
        )
        if fig1 is not None:
            rows.append(
                {
                    "model": name,
                    "setup": fig1[0],
                    "mode": "irb",
                    "train_top_blocks": None,
                    "trainable_params": None,
                    "plain_bytes": fig1[1] * batch,
                    "activation_bytes": fig1[2] * batch,
                    "reduction_vs_full": None,
                    "reduction_vs_plain": 1.0 - fig1[2] / fig1[1],
                }
            )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m zoo.tasks.classification.mobiletl",
        description="Activation memory saved for the backward: full fine-tuning vs MobileTL.",
    )
    parser.add_argument("--models", nargs="+", default=["mobilenetv2_100", "mobilenetv3_large_100"])
    parser.add_argument("--size", type=int, default=224, help="input height = width (default 224)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--top-blocks", type=int, default=DEFAULT_TOP_BLOCKS)
    parser.add_argument("--no-flops", action="store_true", help="skip the training-GFLOPs column")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    rows = benchmark(args.models, (3, args.size, args.size), args.batch, args.top_blocks, flops=not args.no_flops)

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{-v:+.1%}"

    print(f"Tensors saved for the backward by one training forward, input {args.batch}x3x{args.size}x{args.size}, CPU")
    print("(MiB = 2^20 bytes; parameters not counted; 'vs plain': MobileTL against the same blocks fine-tuned plainly)")
    head = f"{'model':<22} {'setup':<24} {'trainable':>9} {'saved MiB':>10} {'vs full':>8} {'vs plain':>9} {'train GFLOPs/img':>17}"
    print(head)
    print("-" * len(head))
    for r in rows:
        if r["mode"] == "irb":
            continue
        gfl = f"{r['train_gflops_per_image']:.3f}" if "train_gflops_per_image" in r else "-"
        print(
            f"{r['model']:<22} {r['setup']:<24} {r['trainable_params'] / 1e6:>8.2f}M {r['activation_bytes'] / 2**20:>10.2f} "
            f"{pct(r['reduction_vs_full']):>8} {pct(r['reduction_vs_plain']):>9} {gfl:>17}"
        )
    print()
    print("Inverted-residual blocks alone (the paper's Fig. 1 comparison), same input size and batch:")
    for r in rows:
        if r["mode"] == "irb":
            print(
                f"{r['model']:<22} {r['setup']:<50} plain {r['plain_bytes'] / 2**20:7.2f} MiB -> MobileTL "
                f"{r['activation_bytes'] / 2**20:7.2f} MiB ({pct(r['reduction_vs_plain'])})"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
