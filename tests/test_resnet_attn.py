"""Channel-attention ResNets (FcaNet, ECA-Net, SE, CBAM) and ECA-MobileNetV2: parity with the
authors' code (FcaNet-50 golden), with timm (same architecture, random weights), with an
independent functional re-implementation of the ECANet authors' forward (their state-dict
layout, loaded through our filters), and the authors' parameter counts."""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from conftest import need

import zoo
from zoo.cost import count_params
from zoo.hub import CheckpointError
from zoo.models.layers.attention import MultiSpectralAttention
from zoo.registry import get_entry


def _golden_rule(data_dir):
    path = need(data_dir / "golden" / "golden_rule.py", "golden fill rule")
    spec = importlib.util.spec_from_file_location("golden_rule", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _x(size: int = 64, batch: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out - ref).norm() / ref.norm())


# --- FcaNet ---------------------------------------------------------------------------------


def test_golden_fcanet50(data_dir, tmp_path):
    """cfzd/FcaNet ``fcanet50()``, weights by the golden rule, eval at 224 px."""
    golden = np.load(need(data_dir / "golden" / "fcanet50.npz", "FcaNet-50 golden"))
    keys = json.loads(str(golden["keys"]))
    model = zoo.create("fcanet50")
    # the authors' keys, order and shapes, with timm's ``se`` for their ``att``
    assert [(k, list(v.shape)) for k, v in model.state_dict().items()] == [
        (k.replace(".att.", ".se."), list(s)) for k, s, _ in keys
    ]
    f = tmp_path / "fca50_golden.pth"
    torch.save(_golden_rule(data_dir).fill(keys), f)
    model = zoo.create("fcanet50", checkpoint_path=f).eval()
    x = torch.from_numpy(golden["input"])
    ref = torch.from_numpy(golden["output"])
    with torch.no_grad():
        out = model(x)
    assert out.shape == ref.shape == (1, 1000)
    rel = _rel(out, ref)
    max_rel = float((out - ref).abs().max() / ref.abs().max())
    # measured: 0.0 and 0.0 (bit-identical) on CPU, float32
    assert rel < 1e-4 and max_rel < 1e-4, (rel, max_rel)


def _dct_1d(freq: int, size: int) -> np.ndarray:
    pos = np.arange(size)
    b = np.cos(np.pi * freq * (pos + 0.5) / size) / np.sqrt(size)
    return b if freq == 0 else b * np.sqrt(2)


# the paper's (and the authors' get_freq_indices) first four frequencies, in 7x7 space
_TOP = [(0, 0), (0, 1), (6, 0), (0, 5)]
_LOW = [(0, 0), (0, 1), (1, 0), (1, 1)]


@pytest.mark.parametrize("method, table", [("top16", _TOP), ("low16", _LOW)])
def test_fcanet_dct_filters_per_stage(method, table):
    """DCT size 56 / 28 / 14 / 7 by stage, frequencies scaled from 7x7 space, 16 channel groups."""
    model = zoo.create("fcanet50", freq_sel_method=method)
    for layer, (chans, size) in zip((model.layer1, model.layer2, model.layer3, model.layer4), ((256, 56), (512, 28), (1024, 14), (2048, 7))):
        att = layer[0].se
        assert isinstance(att, MultiSpectralAttention)
        w = att.dct_layer.weight
        assert tuple(w.shape) == (chans, size, size)
        group = chans // 16
        for i, (u, v) in enumerate(table):
            s = size // 7
            expect = np.outer(_dct_1d(u * s, size), _dct_1d(v * s, size))
            np.testing.assert_allclose(w[i * group].numpy(), expect, rtol=0, atol=1e-6)
            assert torch.equal(w[i * group], w[(i + 1) * group - 1])
        assert att.fc[0].weight.shape == (chans // 16, chans) and att.fc[2].weight.shape == (chans, chans // 16)
    with pytest.raises(ValueError, match="freq_sel_method"):
        zoo.create("fcanet34", freq_sel_method="mid16")


def _adaptive_avg_pool(x: torch.Tensor, out: int) -> torch.Tensor:
    """PyTorch's adaptive average pooling rule, cell i = [floor(i n / out), ceil((i + 1) n / out))."""
    n = x.shape[-1]
    cells = [(i * n // out, -(-(i + 1) * n // out)) for i in range(out)]
    rows = torch.stack([x[:, :, a:b, :].mean(2) for a, b in cells], 2)
    return torch.stack([rows[:, :, :, a:b].mean(3) for a, b in cells], 3)


def test_fcanet_other_input_size_pools_adaptively():
    """At 64 px the last stage is 2x2: the authors' layer average-pools it adaptively to the 7x7
    DCT size before the DCT pooling (``if h != self.dct_h or w != self.dct_w``)."""
    torch.manual_seed(0)
    att = zoo.create("fcanet50").layer4[0].se.eval()
    x = torch.randn(2, 2048, 2, 2)
    with torch.no_grad():
        out = att(x)
        y = (_adaptive_avg_pool(x, 7) * att.dct_layer.weight).sum((2, 3))
        y = torch.sigmoid(att.fc[2](torch.relu(att.fc[0](y))))
    torch.testing.assert_close(out, x * y[:, :, None, None], rtol=1e-5, atol=1e-6)


def test_fcanet_filter_rejects_other_layouts(tmp_path):
    f = tmp_path / "tv_resnet50.pth"
    torch.save(torchvision.models.resnet50().state_dict(), f)
    with pytest.raises(CheckpointError, match="FcaNet"):
        zoo.create("fcanet50", checkpoint_path=f)


# --- parity with timm -------------------------------------------------------------------------


@pytest.mark.parametrize("ours, theirs, args", [("resnet18", "resnet18", {}), ("resnet50", "resnet50", {}), ("se_resnet50", "seresnet50", {}), ("resnet18", "seresnet18", {"attn": "se"})])
def test_same_outputs_as_timm(ours, theirs, args, tmp_path):
    torch.manual_seed(1)
    ref_model = timm.create_model(theirs, pretrained=False).eval()
    with torch.no_grad():  # non-trivial BN statistics and scales (timm zero-inits the last BN)
        for k, v in ref_model.state_dict().items():
            if k.endswith(("running_var", "bn3.weight", "bn2.weight")):
                v.copy_(torch.rand_like(v) * 0.5 + 0.75)
    f = tmp_path / "timm.pth"
    torch.save(ref_model.state_dict(), f)
    model = zoo.create(ours, checkpoint_path=f, **args).eval()
    x = _x(64)
    with torch.no_grad():
        assert torch.equal(model(x), ref_model(x))


# --- the ECANet authors' layout ------------------------------------------------------------------


def _bn_keys(prefix: str, c: int) -> list:
    f32 = "torch.float32"
    return [
        [f"{prefix}.weight", [c], f32], [f"{prefix}.bias", [c], f32], [f"{prefix}.running_mean", [c], f32],
        [f"{prefix}.running_var", [c], f32], [f"{prefix}.num_batches_tracked", [], "torch.int64"],
    ]  # fmt: skip


def _eca_resnet_keys(bottleneck: bool, layers, k_size) -> list:
    """The state-dict keys of BangguWu/ECANet ``models/eca_resnet.py`` ``ResNet`` (written from
    reading it): conv1, bn1, then per block conv1, bn1, conv2, bn2, [conv3, bn3], eca.conv,
    [downsample.0 / .1]; fc."""
    f32 = "torch.float32"
    exp = 4 if bottleneck else 1
    keys = [["conv1.weight", [64, 3, 7, 7], f32], *_bn_keys("bn1", 64)]
    inplanes = 64
    for s, (planes, n, k) in enumerate(zip((64, 128, 256, 512), layers, k_size)):
        for i in range(n):
            p = f"layer{s + 1}.{i}"
            stride = 2 if (s > 0 and i == 0) else 1
            if bottleneck:
                keys += [[f"{p}.conv1.weight", [planes, inplanes, 1, 1], f32], *_bn_keys(f"{p}.bn1", planes)]
                keys += [[f"{p}.conv2.weight", [planes, planes, 3, 3], f32], *_bn_keys(f"{p}.bn2", planes)]
                keys += [[f"{p}.conv3.weight", [planes * 4, planes, 1, 1], f32], *_bn_keys(f"{p}.bn3", planes * 4)]
            else:
                keys += [[f"{p}.conv1.weight", [planes, inplanes, 3, 3], f32], *_bn_keys(f"{p}.bn1", planes)]
                keys += [[f"{p}.conv2.weight", [planes, planes, 3, 3], f32], *_bn_keys(f"{p}.bn2", planes)]
            keys += [[f"{p}.eca.conv.weight", [1, 1, k], f32]]
            if stride != 1 or inplanes != planes * exp:
                keys += [[f"{p}.downsample.0.weight", [planes * exp, inplanes, 1, 1], f32], *_bn_keys(f"{p}.downsample.1", planes * exp)]
            inplanes = planes * exp
    return keys + [["fc.weight", [1000, 512 * exp], f32], ["fc.bias", [1000], f32]]


def _bn(x, sd, p):
    return F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"], False, 0.0, 1e-5)


def _eca(x, w):
    """The authors' ``eca_layer``: channel means, Conv1d across channels, sigmoid gate."""
    y = x.mean((2, 3)).unsqueeze(1)  # (B, 1, C)
    y = torch.sigmoid(F.conv1d(y, w, padding=(w.shape[-1] - 1) // 2))
    return x * y.transpose(1, 2).unsqueeze(-1)


def _eca_resnet_reference(sd, bottleneck: bool, layers, x):
    """The authors' ``ResNet.forward`` written with torch.nn.functional on their state dict."""
    x = F.relu(_bn(F.conv2d(x, sd["conv1.weight"], stride=2, padding=3), sd, "bn1"))
    x = F.max_pool2d(x, 3, 2, 1)
    for s, n in enumerate(layers):
        for i in range(n):
            p = f"layer{s + 1}.{i}"
            stride = 2 if (s > 0 and i == 0) else 1
            if bottleneck:
                out = F.relu(_bn(F.conv2d(x, sd[f"{p}.conv1.weight"]), sd, f"{p}.bn1"))
                out = F.relu(_bn(F.conv2d(out, sd[f"{p}.conv2.weight"], stride=stride, padding=1), sd, f"{p}.bn2"))
                out = _bn(F.conv2d(out, sd[f"{p}.conv3.weight"]), sd, f"{p}.bn3")
            else:
                out = F.relu(_bn(F.conv2d(x, sd[f"{p}.conv1.weight"], stride=stride, padding=1), sd, f"{p}.bn1"))
                out = _bn(F.conv2d(out, sd[f"{p}.conv2.weight"], padding=1), sd, f"{p}.bn2")
            out = _eca(out, sd[f"{p}.eca.conv.weight"])
            res = x
            if f"{p}.downsample.0.weight" in sd:
                res = _bn(F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=stride), sd, f"{p}.downsample.1")
            x = F.relu(out + res)
    return F.linear(x.mean((2, 3)), sd["fc.weight"], sd["fc.bias"])


@pytest.mark.parametrize(
    "name, bottleneck, layers, k_size",
    [("eca_resnet18", False, (2, 2, 2, 2), (3, 5, 7, 7)), ("eca_resnet50", True, (3, 4, 6, 3), (3, 5, 5, 7))],
)
def test_eca_resnet_authors_checkpoint(name, bottleneck, layers, k_size, data_dir, tmp_path):
    """An ECANet training checkpoint ({"state_dict": DataParallel "module." keys, ...}) loads through
    the filter, every ``eca.conv.weight`` (1, 1, k) lands in the block's ``se.conv``, and the model
    matches the authors' forward (re-written functionally)."""
    keys = _eca_resnet_keys(bottleneck, layers, k_size)
    sd = _golden_rule(data_dir).fill(keys)
    f = tmp_path / f"{name}.pth.tar"
    torch.save({"epoch": 100, "arch": name, "state_dict": {f"module.{k}": v for k, v in sd.items()}, "best_prec1": 77.4}, f)
    model = zoo.create(name, checkpoint_path=f).eval()
    assert len(model.state_dict()) == len(keys)
    for s, (n, k) in enumerate(zip(layers, k_size)):
        for i in range(n):
            w = getattr(model, f"layer{s + 1}")[i].se.conv.weight
            assert w.shape == (1, 1, k)
            assert torch.equal(w, sd[f"layer{s + 1}.{i}.eca.conv.weight"])
    x = _x(32, batch=2)
    with torch.no_grad():
        out = model(x)
        ref = _eca_resnet_reference(sd, bottleneck, layers, x)
    rel = _rel(out, ref)
    assert rel < 1e-5, rel  # measured: 0.0 (bit-identical) on CPU, float32


def test_eca_kernel_sizes():
    """Adaptive rule (k_size=None): k = |log2(C)/2 + 1/2|_odd on the block's output channels."""

    def rule(c):
        t = int((math.log2(c) + 1) / 2)
        return t if t % 2 else t + 1

    model = zoo.create("eca_resnet50", k_size=None)
    for layer, c in zip((model.layer1, model.layer2, model.layer3, model.layer4), (256, 512, 1024, 2048)):
        assert layer[0].se.conv.weight.shape == (1, 1, rule(c))
    assert [rule(c) for c in (256, 512, 1024, 2048)] == [5, 5, 5, 7]
    with pytest.raises(ValueError, match="k_size"):
        zoo.create("eca_resnet18", k_size=(3, 4, 5, 7))
    with pytest.raises(ValueError, match="k_size"):
        zoo.create("eca_resnet18", k_size=(3, 5, 7))


def _eca_mbv2_keys() -> list:
    """BangguWu/ECANet ``models/eca_mobilenetv2.py`` ``ECA_MobileNetV2`` state-dict keys."""
    f32 = "torch.float32"
    keys = [["features.0.0.weight", [32, 3, 3, 3], f32], *_bn_keys("features.0.1", 32)]
    settings = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
    inp, idx, blocks = 32, 1, []
    for t, c, n, s in settings:
        for i in range(n):
            hidden, p, j = inp * t, f"features.{idx}.conv", 0
            if t != 1:
                keys += [[f"{p}.0.0.weight", [hidden, inp, 1, 1], f32], *_bn_keys(f"{p}.0.1", hidden)]
                j = 1
            keys += [[f"{p}.{j}.0.weight", [hidden, 1, 3, 3], f32], *_bn_keys(f"{p}.{j}.1", hidden)]
            keys += [[f"{p}.{j + 1}.weight", [c, hidden, 1, 1], f32], *_bn_keys(f"{p}.{j + 2}", c)]
            keys += [[f"{p}.{j + 3}.conv.weight", [1, 1, 1 if c <= 96 else 3], f32]]
            blocks.append((idx, t != 1, s if i == 0 else 1, inp == c and (s if i == 0 else 1) == 1))
            inp, idx = c, idx + 1
    keys += [[f"features.{idx}.0.weight", [1280, 320, 1, 1], f32], *_bn_keys(f"features.{idx}.1", 1280)]
    return keys + [["classifier.1.weight", [1000, 1280], f32], ["classifier.1.bias", [1000], f32]], blocks


def _eca_mbv2_reference(sd, blocks, x):
    def cbr(x, p, stride=1, groups=1):
        w = sd[f"{p}.0.weight"]
        return _bn(F.conv2d(x, w, stride=stride, padding=(w.shape[-1] - 1) // 2, groups=groups), sd, f"{p}.1").clamp(0, 6)

    x = cbr(x, "features.0", stride=2)
    for idx, expand, stride, res in blocks:
        p, j, out = f"features.{idx}.conv", 0, x
        if expand:
            out, j = cbr(out, f"{p}.0"), 1
        out = cbr(out, f"{p}.{j}", stride=stride, groups=out.shape[1])
        out = _bn(F.conv2d(out, sd[f"{p}.{j + 1}.weight"]), sd, f"{p}.{j + 2}")
        out = _eca(out, sd[f"{p}.{j + 3}.conv.weight"])
        x = x + out if res else out
    x = cbr(x, f"features.{len(blocks) + 1}")
    return F.linear(x.mean(-1).mean(-1), sd["classifier.1.weight"], sd["classifier.1.bias"])


def test_eca_mobilenetv2_authors_checkpoint(data_dir, tmp_path):
    keys, blocks = _eca_mbv2_keys()
    model = zoo.create("eca_mobilenetv2")
    assert [(k, list(v.shape)) for k, v in model.state_dict().items()] == [(k, s) for k, s, _ in keys]
    sd = _golden_rule(data_dir).fill(keys)
    f = tmp_path / "eca_mobilenetv2_k13.pth.tar"
    torch.save({"epoch": 400, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, f)
    model = zoo.create("eca_mobilenetv2", checkpoint_path=f).eval()
    assert torch.equal(model.features[17].conv[4].conv.weight, sd["features.17.conv.4.conv.weight"])
    x = _x(64, batch=2)
    with torch.no_grad():
        out = model(x)
        ref = _eca_mbv2_reference(sd, blocks, x)
    rel = _rel(out, ref)
    assert rel < 1e-5, rel  # measured: 0.0 (bit-identical) on CPU, float32
    bad = tmp_path / "tv_mbv2.pth"
    torch.save(torchvision.models.mobilenet_v2().state_dict(), bad)  # torchvision names its head classifier.1 too
    with pytest.raises(CheckpointError):
        zoo.create("eca_mobilenetv2", checkpoint_path=bad)


# --- parameter counts against the authors' code ----------------------------------------------------


def _n(m):
    return sum(p.numel() for p in m.parameters())


def test_params_match_authors_code():
    # FcaNet-50: /work/shared/upstream/README.md (the authors' fcanet50()); DCT filters are buffers
    assert count_params(zoo.create("fcanet50")) == get_entry("fcanet50").params == 28_071_976
    # ECANet: torchvision's ResNet / MobileNetV2 (the authors' layout) + one k-tap conv per block
    eca50 = _n(torchvision.models.resnet50()) + 3 * 3 + 4 * 5 + 6 * 5 + 3 * 7
    assert eca50 - _n(torchvision.models.resnet50()) == 80  # the paper: "80 vs. 24.37M"
    assert count_params(zoo.create("eca_resnet50")) == get_entry("eca_resnet50").params == eca50
    eca18 = _n(torchvision.models.resnet18()) + 2 * (3 + 5 + 7 + 7)
    assert count_params(zoo.create("eca_resnet18")) == get_entry("eca_resnet18").params == eca18
    mbv2 = _n(torchvision.models.mobilenet_v2()) + 13 * 1 + 4 * 3
    assert count_params(zoo.create("eca_mobilenetv2")) == get_entry("eca_mobilenetv2").params == mbv2
    # the baseline SE-ResNet-50 is timm's
    assert get_entry("se_resnet50").params == _n(timm.create_model("seresnet50"))


# --- the attn argument ---------------------------------------------------------------------------


@pytest.mark.parametrize("attn, cls_name", [(None, None), ("se", "SEModule"), ("eca", "EcaModule"), ("fca", "MultiSpectralAttention"), ("cbam", "CbamModule")])
def test_attn_argument(attn, cls_name):
    model = zoo.create("resnet18", attn=attn).eval()
    blocks = [b for layer in (model.layer1, model.layer2, model.layer3, model.layer4) for b in layer]
    if attn is None:
        assert all(b.se is None for b in blocks)
        assert count_params(model) == _n(torchvision.models.resnet18())
    else:
        assert all(type(b.se).__name__ == cls_name for b in blocks)
        assert count_params(model) > _n(torchvision.models.resnet18())
    if attn == "fca":  # FcaNet's per-stage DCT sizes on the basic blocks too
        assert [layer[0].se.dct_layer.weight.shape[-1] for layer in (model.layer1, model.layer2, model.layer3, model.layer4)] == [56, 28, 14, 7]
    if attn == "eca":  # adaptive kernel: 64 -> 3, 128 / 256 / 512 -> 5
        assert [layer[0].se.conv.weight.shape[-1] for layer in (model.layer1, model.layer2, model.layer3, model.layer4)] == [3, 5, 5, 5]
    with torch.no_grad():
        assert model(_x(64)).shape == (1, 1000)


def test_attn_argument_resnet50_equals_named_variants():
    assert count_params(zoo.create("resnet50", attn="fca")) == 28_071_976  # = FcaNet-50
    assert count_params(zoo.create("resnet50", attn="se")) == get_entry("se_resnet50").params
    assert count_params(zoo.create("resnet50", attn="cbam")) == get_entry("cbam_resnet50").params
    m = zoo.create("resnet34", attn="fca", attn_kwargs={"freq_sel_method": "bot16"})
    ref = zoo.create("fcanet34", freq_sel_method="bot16")
    assert [k for k in m.state_dict()] == [k for k in ref.state_dict()]
    assert torch.equal(m.layer4[0].se.dct_layer.weight, ref.layer4[0].se.dct_layer.weight)
    with pytest.raises(ValueError, match="attn must be"):
        zoo.create("resnet50", attn="nonlocal")
