"""MobileTL fine-tuning (zoo.tasks.classification.mobiletl): unchanged forward, exact gradients
where the sign approximation is exact, frozen parts without gradients, measured memory, training."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import zoo
from zoo.tasks.classification.mobiletl import (
    FrozenScaleNormAct,
    SignMaskAct,
    activation_memory,
    apply_mobiletl,
    count_saved_tensors,
    frozen_scale_norm,
    main,
    mobiletl_block_memory,
    pack_mask,
    sign_mask_act,
    unpack_mask,
)

MODELS = ["mobilenetv2_100", "mobilenetv3_large_100"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small CPU convolutions: one thread avoids OpenMP oversubscription on a shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN parameters and statistics, so that an eval-form norm is not an identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.3)
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
    return model


def _calibrate_norms(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Running statistics := the statistics of batch ``x`` (so frozen-statistics norms normalise)."""
    saved = {}
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            saved[m] = m.momentum
            m.reset_running_stats()
            m.momentum = None  # cumulative average over one batch = that batch's statistics
    model.train()
    with torch.no_grad():
        model(x)
    for m, mom in saved.items():
        m.momentum = mom
    return model


def _same_mode_reference(reference: nn.Module, ml: nn.Module) -> nn.Module:
    """``reference`` (the unmodified model) in train mode with the norms MobileTL froze in eval."""
    reference.train()
    for name, m in ml.named_modules():
        if isinstance(m, FrozenScaleNormAct):
            reference.get_submodule(name).eval()
    return reference


def _copy_requires_grad(reference: nn.Module, ml: nn.Module) -> None:
    flags = {n: p.requires_grad for n, p in ml.named_parameters()}
    for n, p in reference.named_parameters():
        p.requires_grad_(flags[n])


# ---------------------------------------------------------------------------------------------
# forward unchanged, state dict unchanged
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("top", [None, 5])
def test_outputs_unchanged(name, top):
    model = _randomize_norms(zoo.create(name))
    reference = copy.deepcopy(model)
    ml = apply_mobiletl(copy.deepcopy(model), train_top_blocks=top)
    x = torch.randn(3, 3, 64, 64)

    with torch.no_grad():
        diff_eval = (ml.eval()(x) - reference.eval()(x)).abs().max().item()
    assert diff_eval < 1e-6

    ref = _same_mode_reference(reference, ml)
    y_ml, y_ref = ml.train()(x), ref(x)
    assert (y_ml - y_ref).abs().max().item() < 1e-6
    # the norms still trained normally updated their running statistics identically
    sd_ml, sd_ref = ml.state_dict(), ref.state_dict()
    assert list(sd_ml) == list(sd_ref)
    for k in sd_ml:
        assert torch.equal(sd_ml[k], sd_ref[k]), k
    # and the checkpoint of the unmodified model loads strictly
    ml.load_state_dict(model.state_dict(), strict=True)


# ---------------------------------------------------------------------------------------------
# the custom autograd functions
# ---------------------------------------------------------------------------------------------


def test_pack_mask_roundtrip():
    for shape in [(1,), (7,), (8,), (2, 3, 5, 7), (3, 17, 4, 4)]:
        m = torch.rand(shape) > 0.5
        p = pack_mask(m)
        assert p.dtype == torch.uint8 and p.numel() == math.ceil(m.numel() / 8)
        assert torch.equal(unpack_mask(p, m.shape), m)
    m = (torch.randn(2, 6, 5, 3) > 0).contiguous(memory_format=torch.channels_last)
    assert torch.equal(unpack_mask(pack_mask(m), m.shape), m)
    # bit order: element i is bit (i % 8) of byte i // 8
    m = torch.tensor([True, False, True, True, False, False, False, True, True])
    assert pack_mask(m).tolist() == [1 + 4 + 8 + 128, 1]


def _true_derivative(kind: str, x: torch.Tensor) -> torch.Tensor:
    """The activation's exact derivative, written out in float64 (PyTorch's convention at kinks)."""
    if kind == "relu":
        return (x > 0).double()
    if kind == "relu6":
        return ((x > 0) & (x < 6)).double()
    # Hard-Swish: 0 up to -3, (2x + 3) / 6 between, 1 from 3 on
    return torch.where(x <= -3, torch.zeros_like(x), torch.where(x >= 3, torch.ones_like(x), (2 * x + 3) / 6))


_KIND_MODULE = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "hardswish": nn.Hardswish,
}


@pytest.mark.parametrize("kind", ["relu", "relu6", "hardswish", "timm_hard_swish", "timm_hard_swish_me"])
@pytest.mark.parametrize("pack", [True, False])
def test_sign_mask_act_backward(kind, pack):
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(2, 3, 5, 7, generator=g, dtype=torch.float64) * 20 - 10)
    x.view(-1)[:6] = torch.tensor([0.0, 6.0, 3.0, -3.0, 1e-300, -1e-300], dtype=torch.float64)
    gy = torch.randn(x.shape, generator=g, dtype=torch.float64)

    xa = x.clone().requires_grad_(True)
    with count_saved_tensors() as saved:
        y = sign_mask_act(xa, kind, pack)
    y.backward(gy)

    base = "hardswish" if "swish" in kind else kind
    reference = {"relu": F.relu, "relu6": F.relu6, "hardswish": F.hardswish}[base]
    torch.testing.assert_close(y, reference(x), rtol=1e-15, atol=1e-15)
    # the implemented formula: dx = dy * 1[x > 0], exactly
    assert torch.equal(xa.grad, gy * (x > 0).double())
    # only the mask is stored: 1 bit (packed) or 1 byte (bool) per element
    assert saved.bytes == (math.ceil(x.numel() / 8) if pack else x.numel())

    # against the true derivative (autograd of the real activation)
    xt = x.clone().requires_grad_(True)
    reference(xt).backward(gy)
    torch.testing.assert_close(xt.grad, gy * _true_derivative(base, x), rtol=1e-14, atol=1e-15)
    if base == "relu":
        exact = torch.ones_like(x, dtype=torch.bool)
    elif base == "relu6":
        exact = x < 6  # the approximation ignores the upper clip
    else:
        exact = (x <= -3) | (x >= 3)  # equal outside Hard-Swish's quadratic part
    assert torch.equal(xa.grad[exact], xt.grad[exact])
    if base != "relu":
        assert not torch.equal(xa.grad[~exact], xt.grad[~exact])  # it is an approximation there


def test_sign_mask_act_module_keeps_inplace_forward_without_grad():
    act = SignMaskAct(nn.ReLU6(inplace=True))
    x = torch.randn(2, 4, 3, 3) * 8
    with torch.no_grad():
        y = act(x.clone())
    assert torch.equal(y, F.relu6(x))
    with pytest.raises(ValueError, match="supports"):
        SignMaskAct(nn.SiLU())


def test_frozen_scale_norm_backward():
    g = torch.Generator().manual_seed(2)
    c = 5
    x = torch.randn(3, c, 4, 6, generator=g, dtype=torch.float64)
    w, b = torch.rand(c, generator=g, dtype=torch.float64) + 0.5, torch.randn(c, generator=g, dtype=torch.float64)
    mean, var = torch.randn(c, generator=g, dtype=torch.float64), torch.rand(c, generator=g, dtype=torch.float64) + 0.5
    gy = torch.randn(x.shape, generator=g, dtype=torch.float64)
    eps = 1e-3

    xa, ba = x.clone().requires_grad_(True), b.clone().requires_grad_(True)
    with count_saved_tensors(exclude=[w, mean, var]) as saved:
        y = frozen_scale_norm(xa, ba, w, mean, var, eps)
    y.backward(gy)
    assert saved.bytes == c * 8  # one scale per channel, nothing of the size of x

    # autograd through the eval-form batch norm, scale frozen
    xr, br = x.clone().requires_grad_(True), b.clone().requires_grad_(True)
    yr = F.batch_norm(xr, mean, var, w, br, False, 0.0, eps)
    yr.backward(gy)
    torch.testing.assert_close(y, yr, rtol=0, atol=1e-14)
    torch.testing.assert_close(xa.grad, xr.grad, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(ba.grad, br.grad, rtol=1e-13, atol=1e-14)
    # and the closed form: dx = dy * w / sqrt(var + eps), dbias = sum(dy)
    torch.testing.assert_close(xa.grad, gy * (w / (var + eps).sqrt()).view(1, -1, 1, 1), rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(ba.grad, gy.sum((0, 2, 3)), rtol=1e-13, atol=1e-14)


# ---------------------------------------------------------------------------------------------
# gradients of a whole network
# ---------------------------------------------------------------------------------------------


class _SignBackward(nn.Module):
    """Reference activation built from plain autograd ops whose derivative is exactly 1[x > 0]:
    relu(x) + (act(x) - relu(x)).detach()."""

    def __init__(self, act: nn.Module):
        super().__init__()
        self.act = act

    def forward(self, x):
        r = F.relu(x)
        with torch.no_grad():
            a = self.act(x.clone())
        return r + (a - r).detach()


def _grads(model: nn.Module, x: torch.Tensor, w: torch.Tensor) -> dict[str, torch.Tensor | None]:
    model.zero_grad(set_to_none=True)
    (model(x) * w).sum().backward()
    return {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize("name,top", [("mobilenetv2_100", 4), ("mobilenetv3_large_100", 5)])
def test_gradients_match_autograd_reference(name, top):
    torch.manual_seed(0)
    model = _randomize_norms(zoo.create(name, num_classes=3)).double()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    w = torch.randn(2, 3, dtype=torch.float64)
    ml = apply_mobiletl(copy.deepcopy(model), train_top_blocks=top)
    ref = _same_mode_reference(copy.deepcopy(model), ml)
    _copy_requires_grad(ref, ml)
    for path, m in ml.named_modules():
        if isinstance(m, SignMaskAct):
            parent, _, attr = path.rpartition(".")
            setattr(ref.get_submodule(parent) if parent else ref, attr, _SignBackward(ref.get_submodule(path)))

    g_ml, g_ref = _grads(ml.train(), x, w), _grads(ref, x, w)
    n_checked = 0
    for n, p in ml.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(g_ml[n], g_ref[n], rtol=1e-9, atol=1e-12, msg=n)
            n_checked += 1
        else:
            assert g_ml[n] is None and g_ref[n] is None, n
    assert n_checked > 20


def test_gradients_equal_true_gradients_when_relu6_is_not_clipped():
    """MobileNetV2 with frozen statistics calibrated on the batch: no pre-activation in the trained
    blocks reaches 6, where the sign backward is ReLU6's true derivative: the gradients of the
    trained parameters equal plain autograd through the unmodified layers."""
    torch.manual_seed(0)
    x = torch.randn(4, 3, 64, 64, dtype=torch.float64)
    model = _calibrate_norms(zoo.create("mobilenetv2_100", num_classes=2).double(), x)
    ml = apply_mobiletl(copy.deepcopy(model), train_top_blocks=3)
    ref = _same_mode_reference(copy.deepcopy(model), ml)
    _copy_requires_grad(ref, ml)

    peaks = []
    hooks = [m.register_forward_pre_hook(lambda mod, a: peaks.append(a[0].max().item())) for m in ml.modules() if isinstance(m, SignMaskAct)]
    w = torch.randn(4, 2, dtype=torch.float64)
    g_ml, g_ref = _grads(ml.train(), x, w), _grads(ref, x, w)
    for h in hooks:
        h.remove()
    assert len(peaks) == 3 * 2 + 1 and max(peaks) < 6.0  # the precondition that makes it exact
    for n, p in ml.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(g_ml[n], g_ref[n], rtol=1e-9, atol=1e-12, msg=n)


def test_frozen_parts_get_no_gradient():
    model = zoo.create("mobilenetv3_large_100", num_classes=4)
    top = 5
    ml = apply_mobiletl(model, train_top_blocks=top).train()
    before = {n: t.clone() for n, t in ml.state_dict().items()}
    ml(torch.randn(2, 3, 64, 64)).logsumexp(1).sum().backward()

    flat = [b for stage in ml.blocks for b in stage]
    trained_ids = {id(p) for b in flat[-top:] for p in b.parameters()}
    head_ids = {id(p) for mod in (ml.conv_head, ml.classifier) for p in mod.parameters()}
    for n, p in ml.named_parameters():
        in_top = id(p) in trained_ids or id(p) in head_ids
        frozen_scale = n.endswith(".weight") and isinstance(ml.get_submodule(n.rpartition(".")[0]), FrozenScaleNormAct)
        expect = in_top and not frozen_scale
        assert p.requires_grad == expect, n
        assert (p.grad is not None) == expect, n
    # inside a trained block: internal norms train the shift only, the last norm everything
    blk = flat[-2]  # an InvertedResidual with SE
    assert isinstance(blk.bn1, FrozenScaleNormAct) and isinstance(blk.bn2, FrozenScaleNormAct)
    assert blk.bn1.weight.grad is None and blk.bn1.bias.grad is not None
    assert blk.bn3.weight.grad is not None and blk.bn3.bias.grad is not None
    assert isinstance(blk.bn1.act, SignMaskAct) and isinstance(blk.se.act1, SignMaskAct)
    # frozen statistics never move; the last norms' statistics do
    after = ml.state_dict()
    for n, value in before.items():
        if isinstance(ml.get_submodule(n.rpartition(".")[0]), FrozenScaleNormAct):
            assert torch.equal(value, after[n]), n
    assert not torch.equal(before[f"blocks.{len(ml.blocks) - 2}.1.bn3.running_mean"], after[f"blocks.{len(ml.blocks) - 2}.1.bn3.running_mean"])


# ---------------------------------------------------------------------------------------------
# memory
# ---------------------------------------------------------------------------------------------


def test_block_memory_exact():
    """A stride-1 MobileNetV2 IRB (expansion 6), N x C x H x W input, E = 6C. MobileTL stores
    exactly: the block input (for conv_pw), the depthwise input and the projection input (E each),
    the last norm's input and its two per-channel statistics, two packed masks (E*N*H*W bits
    each) and two per-channel scales of the frozen norms."""
    model = zoo.create("mobilenetv2_100")
    block = model.blocks[2][1]  # 32 -> 192 -> 32, stride 1
    n, c, h, w = 2, 32, 10, 10
    e = 6 * c
    plain, ours = mobiletl_block_memory(block, torch.randn(n, c, h, w))
    f = 4  # float32
    expected = f * n * h * w * (c + e + e + c) + f * 2 * c + 2 * math.ceil(e * n * h * w / 8) + 2 * f * e
    assert ours == expected
    # the plain block stores at least the textbook 26 maps (x, 2 x norm input, 2 x activation,
    # projection input... counted in C-channel units: 1 + 6 + 6 + 6 + 6 + 1); PyTorch's in-place
    # ReLU6 adds a copy of its input on top of that (38 units)
    unit = f * n * h * w * c
    assert plain >= 26 * unit
    assert 1 - ours / plain > 1 - ours / (26 * unit) > 0.44


def test_network_memory_reduction():
    """mobilenetv2_100, 2 x 3 x 64 x 64. Every part's reduction is at most that of a stride-1 IRB
    (1 - 14.375 / 38 = 62.2%, test_block_memory_exact), so the whole network's must be below it;
    the stem and stride-2 blocks store relatively more, but more than 40% must still go."""
    model = zoo.create("mobilenetv2_100")
    size, batch = (3, 64, 64), 2
    full = activation_memory(model, size, batch, "full")
    ml_all = activation_memory(model, size, batch, "mobiletl", None)
    ft5 = activation_memory(model, size, batch, "blocks", 5)
    ml5 = activation_memory(model, size, batch, "mobiletl", 5)
    assert 0.40 < 1 - ml_all / full < 1 - 14.375 / 38
    assert ml5 < ft5 < full and 0.40 < 1 - ml5 / ft5 < 1 - 14.375 / 38
    # affine in the batch size (the per-channel statistics and scales do not scale with it)
    m1, m3 = (activation_memory(model, size, b, "mobiletl", 5) for b in (1, 3))
    assert ml5 - m1 == m3 - ml5 > 0


@pytest.mark.parametrize("name", MODELS)
def test_nothing_stored_below_the_head(name):
    """train_top_blocks=0: only the head stores anything, and exactly what it needs."""
    model = zoo.create(name)
    n, f = 2, 4
    got = activation_memory(model, (3, 64, 64), n, "mobiletl", 0)
    if name == "mobilenetv2_100":
        hw = 2 * 2  # 64 / 32
        # conv_head input (320), bn2 input (1280) + 2 statistics, packed ReLU6 mask, classifier input
        expected = f * n * hw * (320 + 1280) + f * 2 * 1280 + math.ceil(n * hw * 1280 / 8) + f * n * 1280
    else:
        # pooled 960-d input of conv_head, packed Hard-Swish mask (1280), classifier input
        expected = f * n * 960 + math.ceil(n * 1280 / 8) + f * n * 1280
    assert got == expected


# ---------------------------------------------------------------------------------------------
# training and the API
# ---------------------------------------------------------------------------------------------


def test_sgd_steps_reduce_loss():
    torch.manual_seed(0)
    n = 8
    y = torch.arange(n) % 2
    x = torch.randn(n, 3, 64, 64) * 0.5
    x[:, 0] += (y.float() * 2 - 1).view(-1, 1, 1)  # class 1: red up, class 0: red down
    model = apply_mobiletl(zoo.create("mobilenetv2_100", num_classes=2), train_top_blocks=3).train()
    frozen = {n_: p.detach().clone() for n_, p in model.named_parameters() if not p.requires_grad}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    losses = []
    for _ in range(12):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    for n_, p in model.named_parameters():
        if n_ in frozen:
            assert torch.equal(p, frozen[n_]), n_


def test_api_errors_and_options():
    model = zoo.create("mobilenetv2_100")
    with pytest.raises(ValueError, match="out of range"):
        apply_mobiletl(copy.deepcopy(model), train_top_blocks=18)
    with pytest.raises(TypeError, match="blocks"):
        apply_mobiletl(nn.Sequential(nn.Conv2d(3, 3, 1)))
    with pytest.raises(TypeError, match="int or None"):
        apply_mobiletl(copy.deepcopy(model), train_top_blocks=2.0)
    ml = apply_mobiletl(copy.deepcopy(model), train_top_blocks=17)
    assert isinstance(ml.bn1, FrozenScaleNormAct) and not ml.conv_stem.weight.requires_grad
    with pytest.raises(ValueError, match="already"):
        apply_mobiletl(ml)
    v3 = apply_mobiletl(zoo.create("mobilenetv3_large_100"), approx_outside_blocks=False)
    assert type(v3.act2) is nn.Hardswish
    v3 = apply_mobiletl(zoo.create("mobilenetv3_large_100"), train_top_blocks=None)
    assert all(p.requires_grad for n_, p in v3.named_parameters() if not isinstance(v3.get_submodule(n_.rpartition(".")[0]), FrozenScaleNormAct))
    assert isinstance(v3.bn1.act, SignMaskAct)  # a trained stem gets the sign backward too


def test_benchmark_entry_point(capsys):
    assert main(["--models", "mobilenetv2_100", "--size", "64", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    model = zoo.create("mobilenetv2_100")
    full = activation_memory(model, (3, 64, 64), 2, "full")
    ml5 = activation_memory(model, (3, 64, 64), 2, "mobiletl", 5)
    assert "MobileTL top 5 blocks" in out and "IRBs, each alone" in out
    assert f"{full / 2**20:.2f}" in out and f"{-(1 - ml5 / full):+.1%}" in out
