"""zoo.models.layers: the attention factory, FcaNet's multi-spectral attention, RepConv2d."""

from __future__ import annotations

import math

import pytest
import timm.layers
from timm.layers.cbam import CbamModule
import torch
import torch.nn as nn
import torch.nn.functional as F

import zoo
from zoo.models.layers import (
    FCANET_DCT_SIZES,
    ConvNormAct,
    MultiSpectralAttention,
    MultiSpectralAttentionLayer,
    RepConv2d,
    conv2d_same_pad,
    create_attn,
    fuse_conv_bn,
    get_attn,
    get_freq_indices,
    make_divisible,
)

# FcaNet's "top" table (7x7 frequency space), typed in independently of the module under test
TOP16_X = [0, 0, 6, 0, 0, 1, 1, 4, 5, 1, 3, 0, 0, 0, 3, 2]
TOP16_Y = [0, 1, 0, 5, 2, 0, 2, 0, 0, 6, 0, 4, 6, 3, 5, 2]


def dct_basis(u: int, v: int, h: int, w: int) -> torch.Tensor:
    """Orthonormal 2-D DCT-II basis (u, v) on an h x w grid, straight from the textbook formula."""
    i = torch.arange(h, dtype=torch.float64)
    j = torch.arange(w, dtype=torch.float64)
    cu = math.sqrt((1.0 if u == 0 else 2.0) / h)
    cv = math.sqrt((1.0 if v == 0 else 2.0) / w)
    col = cu * torch.cos(math.pi * u * (2 * i + 1) / (2 * h))
    row = cv * torch.cos(math.pi * v * (2 * j + 1) / (2 * w))
    return col[:, None] * row[None, :]


# -- conv helpers --------------------------------------------------------------------------


def test_conv_reexports_are_timms():
    assert ConvNormAct is timm.layers.ConvNormAct
    assert make_divisible is timm.layers.make_divisible
    assert make_divisible(37, 8) == 40
    conv = conv2d_same_pad(4, 6, 5, stride=2, dilation=2)
    assert conv.padding == (4, 4)
    assert conv(torch.randn(1, 4, 15, 15)).shape == (1, 6, 8, 8)


# -- attention factory ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,cls", [("se", timm.layers.SEModule), ("eca", timm.layers.EcaModule), ("cbam", CbamModule)]
)
def test_factory_returns_timm_modules(name, cls):
    m = create_attn(name, 64)
    assert type(m) is cls
    assert get_attn(name) is timm.layers.get_attn(name)
    assert type(create_attn(name.upper(), 64)) is cls
    x = torch.randn(2, 64, 9, 11)
    y = m(x)
    assert y.shape == x.shape
    assert not torch.equal(y, x)


def test_factory_fca_and_none():
    assert create_attn(None, 64) is None and create_attn("", 64) is None and get_attn(None) is None
    m = create_attn("fca", 64)
    assert type(m) is MultiSpectralAttention and MultiSpectralAttentionLayer is MultiSpectralAttention
    assert (m.dct_h, m.dct_w) == (7, 7)  # default DCT size
    m14 = create_attn("fca", 256, dct_size=14, reduction=8)
    assert (m14.dct_h, m14.dct_w) == (14, 14) and m14.fc[0].out_features == 32
    assert tuple(m14.dct_layer.weight.shape) == (256, 14, 14)
    x = torch.randn(2, 256, 14, 14)
    assert m14(x).shape == x.shape
    # other timm types pass through
    assert type(create_attn("ese", 32)) is timm.layers.EffectiveSEModule


def test_factory_unknown_type():
    with pytest.raises(ValueError, match="unknown attention type 'nonsense'") as err:
        create_attn("nonsense", 64)
    for known in ("fca", "se", "eca", "cbam"):
        assert known in str(err.value)


# -- FcaNet multi-spectral attention -------------------------------------------------------


def test_freq_index_tables():
    assert get_freq_indices("top16") == (TOP16_X, TOP16_Y)
    assert get_freq_indices("top1") == ([0], [0])
    assert get_freq_indices("low4") == ([0, 0, 1, 1], [0, 1, 0, 1])
    assert get_freq_indices("bot2") == ([6, 1], [6, 4])
    xs, ys = get_freq_indices("top32")
    assert len(xs) == len(ys) == 32 and max(xs) == max(ys) == 6
    with pytest.raises(ValueError, match="top16"):
        get_freq_indices("top3")


@pytest.mark.parametrize("size", [7, 14])
def test_dct_filters_match_formula_and_scaled_indices(size):
    channels = 32  # 16 frequencies x 2 channels each
    m = MultiSpectralAttention(channels, size, size)
    weight = m.dct_layer.weight
    assert weight.dtype == torch.float32 and tuple(weight.shape) == (channels, size, size)
    k = size // 7  # indices live in a 7x7 space, scaled to the DCT size
    for i, (u, v) in enumerate(zip(TOP16_X, TOP16_Y)):
        expected = dct_basis(u * k, v * k, size, size).float()
        torch.testing.assert_close(weight[2 * i], expected, rtol=0, atol=1e-7)
        torch.testing.assert_close(weight[2 * i + 1], expected, rtol=0, atol=1e-7)
    # the DC filter is the constant 1/size; every filter has unit norm
    torch.testing.assert_close(weight[0], torch.full((size, size), 1.0 / size), rtol=0, atol=1e-7)
    torch.testing.assert_close(weight.double().pow(2).sum((1, 2)), torch.ones(channels, dtype=torch.float64))
    # spot value: basis (u, v) = (6k, 0), the third frequency, at position (0, 0)
    spot = math.sqrt(2) * math.cos(math.pi * 6 * k * 0.5 / size) / size
    assert weight[4, 0, 0].item() == pytest.approx(spot, abs=1e-7)


def test_fca_state_dict_and_params():
    m = MultiSpectralAttention(256, 14, 14)
    assert list(m.state_dict()) == ["dct_layer.weight", "fc.0.weight", "fc.2.weight"]
    assert sum(p.numel() for p in m.parameters()) == 2 * 256 * 16 == 8192
    assert [type(x) for x in m.fc] == [nn.Linear, nn.ReLU, nn.Linear, nn.Sigmoid]
    assert m.fc[0].bias is None and m.fc[2].bias is None
    # reloads strictly into a fresh module
    m2 = MultiSpectralAttention(256, dct_size=14)
    m2.load_state_dict(m.state_dict(), strict=True)
    assert FCANET_DCT_SIZES == {64: 56, 128: 28, 256: 14, 512: 7}


def test_fca_dct_pooling_of_a_constant():
    # a constant input only excites the DC filter: sum over 7x7 of 1 * (1/7) = 7
    m = MultiSpectralAttention(32, 7, 7)
    y = m.dct_layer(torch.ones(1, 32, 7, 7))
    torch.testing.assert_close(y[0, :2], torch.full((2,), 7.0))
    torch.testing.assert_close(y[0, 2:], torch.zeros(30), rtol=0, atol=1e-5)


def test_fca_forward_matches_manual_computation():
    m = MultiSpectralAttention(64, 7, 7, reduction=4)
    x = torch.randn(2, 64, 7, 7)
    filt = m.dct_layer.weight
    pooled = torch.einsum("bchw,chw->bc", x, filt)
    gate = torch.sigmoid(F.relu(pooled @ m.fc[0].weight.T) @ m.fc[2].weight.T)
    torch.testing.assert_close(m(x), x * gate[:, :, None, None], rtol=1e-5, atol=1e-6)
    # a different input size is average-pooled to the DCT size first
    x2 = torch.randn(2, 64, 20, 17)
    pooled2 = torch.einsum("bchw,chw->bc", F.adaptive_avg_pool2d(x2, 7), filt)
    gate2 = torch.sigmoid(F.relu(pooled2 @ m.fc[0].weight.T) @ m.fc[2].weight.T)
    torch.testing.assert_close(m(x2), x2 * gate2[:, :, None, None], rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (torch.cuda.is_available() is False)")
def test_fca_cuda_accelerated_matches_reference(monkeypatch):
    monkeypatch.delenv("ZOO_OPS_BACKEND", raising=False)
    m = MultiSpectralAttention(256, 14, 14).cuda().eval()
    x = torch.randn(4, 256, 14, 14, device="cuda")
    with torch.no_grad():
        fast = m(x)
        monkeypatch.setenv("ZOO_OPS_BACKEND", "reference")
        ref = m(x)
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)


def test_fca_rejects_bad_channel_count():
    with pytest.raises(ValueError, match="multiple"):
        MultiSpectralAttention(40, 7, 7, reduction=4)  # 40 is not a multiple of 16 frequencies


# -- RepConv2d -----------------------------------------------------------------------------


def _randomise_bn(model: nn.Module) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)


def _n_convs(model: nn.Module) -> int:
    return sum(isinstance(m, nn.Conv2d) for m in model.modules())


REP_CONFIGS = {
    # name: (in, out, kwargs)
    "plain": (8, 8, dict()),
    "bn_relu": (8, 8, dict(use_bn=True, act_layer="relu")),
    "depthwise_bn": (8, 8, dict(groups=8, use_bn=True)),
    "stride2_bn": (8, 16, dict(stride=2, use_bn=True)),
    "depthwise_stride2": (6, 12, dict(stride=2, groups=6, use_bn=True, act_layer=nn.GELU)),
    "no_identity_k5": (8, 8, dict(kernel_size=5, use_identity=False, use_bn=True)),
    "no_1x1_groups2": (8, 8, dict(groups=2, use_1x1=False)),
    "kxk_only": (4, 8, dict(use_1x1=False, use_identity=False, use_bn=True)),
}


@pytest.mark.parametrize("name", list(REP_CONFIGS))
def test_repconv_reparameterize_equal(name):
    cin, cout, kw = REP_CONFIGS[name]
    m = RepConv2d(cin, cout, **kw)
    _randomise_bn(m)
    m.train()
    with torch.no_grad():  # move the running stats in train mode too
        m(torch.randn(4, cin, 12, 12) * 2 + 0.3)
    m.eval()
    x = torch.randn(2, cin, 13, 11)
    with torch.no_grad():
        y = m(x)
        m.reparameterize()
        y2 = m(x)
    assert m.deploy is True
    assert y.shape == y2.shape
    assert y.abs().max() > 0.1
    rel = ((y2 - y).abs().max() / y.abs().max()).item()
    assert rel < 1e-5, rel
    assert _n_convs(m) == 1 and isinstance(m.reparam_conv, nn.Conv2d)
    assert not any(isinstance(mm, nn.BatchNorm2d) for mm in m.modules())
    assert not hasattr(m, "conv_kxk") and not hasattr(m, "conv_1x1") and not hasattr(m, "identity")
    m.reparameterize()  # idempotent
    assert _n_convs(m) == 1


def test_repconv_branches_and_identity():
    m = RepConv2d(8, 8)
    assert isinstance(m.identity, nn.Identity) and m.conv_1x1 is not None
    assert RepConv2d(8, 16).identity is None and RepConv2d(8, 8, stride=2).identity is None
    assert isinstance(RepConv2d(8, 8, use_bn=True).identity, nn.BatchNorm2d)
    # with every conv zeroed, the plain identity branch passes the input through
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
    x = torch.randn(1, 8, 5, 5)
    torch.testing.assert_close(m(x), x, rtol=0, atol=0)
    with pytest.raises(ValueError, match="odd"):
        RepConv2d(8, 8, kernel_size=4)


def test_repconv_deploy_form_loads_reparameterized_state():
    m = RepConv2d(8, 8, groups=2, use_bn=True, act_layer="relu")
    _randomise_bn(m)
    m.eval()
    m.reparameterize()
    sd = m.state_dict()
    assert sorted(sd) == ["reparam_conv.bias", "reparam_conv.weight"]
    d = RepConv2d(8, 8, groups=2, use_bn=True, act_layer="relu", deploy=True).eval()
    assert _n_convs(d) == 1 and d.deploy
    d.load_state_dict(sd, strict=True)
    x = torch.randn(2, 8, 9, 9)
    torch.testing.assert_close(d(x), m(x), rtol=0, atol=0)


def test_zoo_optimize_sequential():
    model = nn.Sequential(
        RepConv2d(3, 8, use_bn=True, act_layer="relu"),
        RepConv2d(8, 8, use_bn=True, act_layer="relu"),
        RepConv2d(8, 8, groups=8, stride=2, use_bn=True),
    )
    _randomise_bn(model)
    model.eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        y = model(x)
        fast = zoo.optimize(model)
        y2 = fast(x)
    assert fast is not model and not model[0].deploy  # not in place by default
    assert all(b.deploy for b in fast)
    assert len(list(fast.modules())) < len(list(model.modules()))
    assert _n_convs(fast) == 3
    assert ((y2 - y).abs().max() / y.abs().max()).item() < 1e-5


def test_fuse_conv_bn():
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, bias=True)
    bn = nn.BatchNorm2d(6)
    _randomise_bn(bn)
    bn.eval()
    fused = fuse_conv_bn(conv, bn)
    assert fused.stride == (2, 2) and fused.groups == 2 and fused.bias is not None
    x = torch.randn(2, 4, 10, 10)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), bn(conv(x)), rtol=1e-5, atol=1e-5)
