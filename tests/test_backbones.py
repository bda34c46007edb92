"""The timm model contract, checked for every registered classification backbone: forward_features /
forward_head(pre_logits=), num_features, reset_classifier, feature_info and features_only,
channels-last and torch.compile (graph capture through dynamo + AOTAutograd, which is what breaks
when a model is not compilable; inductor's C++ build is not needed for that)."""

from __future__ import annotations

import pytest
import torch

import zoo
from zoo.registry import get_entry

BACKBONES = zoo.list_models(task="classification")


def _smallest_per_family(names: list[str]) -> list[str]:
    best: dict[str, str] = {}
    for n in names:
        e = get_entry(n)
        if e.family not in best or (e.params or 0) < (get_entry(best[e.family]).params or 0):
            best[e.family] = n
    return sorted(best.values())


# Graph capture is a property of the family's code, shared by its sizes: one (the smallest) per
# family keeps the suite fast; deeper variants only repeat the same blocks.
COMPILE_CHECKED = _smallest_per_family(BACKBONES)


def _input(name: str, batch: int = 1) -> torch.Tensor:
    entry = get_entry(name)
    size = entry.test_size or entry.input_size
    g = torch.Generator().manual_seed(0)
    return torch.randn((batch, *size), generator=g)


def test_there_are_backbones():
    assert len(BACKBONES) >= 1


@pytest.mark.parametrize("name", BACKBONES)
def test_head_features_and_reset(name):
    m = zoo.create(name).eval()
    entry = get_entry(name)
    assert entry.input_range is None, "backbones take mean/std-normalised input"
    for key in ("mean", "std", "crop_pct", "interpolation"):
        assert key in m.pretrained_cfg, f"{name}: the data cfg lacks {key} (the eval transform needs it)"
    x = _input(name, batch=2)
    with torch.no_grad():
        logits = m(x)
        feats = m.forward_features(x)
        pre = m.forward_head(feats, pre_logits=True)
        again = m.forward_head(feats)
    # timm's rule: pre-logits width is head_hidden_size when a head has a hidden layer (MobileNetV3)
    width = getattr(m, "head_hidden_size", None) or m.num_features
    assert logits.shape == (2, m.num_classes)
    assert pre.shape == (2, width)
    torch.testing.assert_close(again, logits, rtol=1e-5, atol=1e-5)
    m.reset_classifier(7)
    with torch.no_grad():
        assert m(x).shape == (2, 7)
    m.reset_classifier(0)
    with torch.no_grad():
        assert m(x).shape == (2, width)


@pytest.mark.parametrize("name", BACKBONES)
def test_features_only(name):
    m = zoo.create(name).eval()
    x = _input(name)
    f = zoo.create(name, features_only=True).eval()
    info = f.feature_info
    chans, reds = info.channels(), info.reduction()
    assert len(chans) == len(m.feature_info) >= 3
    assert reds == sorted(reds), "stages go from fine to coarse"
    with torch.no_grad():
        outs = f(x)
    assert isinstance(outs, (list, tuple)) and len(outs) == len(chans)
    for o, c, r in zip(outs, chans, reds):
        assert o.ndim == 4 and o.shape[1] == c, (name, o.shape, c)
        assert abs(x.shape[-1] / o.shape[-1] - r) <= r / 2, (name, o.shape, r)
    sub = zoo.create(name, features_only=True, out_indices=(-2, -1))
    assert sub.feature_info.channels() == chans[-2:]
    with pytest.raises(ValueError, match="expected 3 channels"):
        f(torch.randn(1, 4, *x.shape[-2:]))


@pytest.mark.parametrize("name", BACKBONES)
def test_channels_last(name):
    m = zoo.create(name).eval()
    x = _input(name)
    with torch.no_grad():
        ref = m(x)
        m = m.to(memory_format=torch.channels_last)
        out = m(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", COMPILE_CHECKED)
def test_torch_compile_captures(name):
    torch._dynamo.reset()
    m = zoo.create(name).eval()
    x = _input(name)
    with torch.no_grad():
        ref = m(x)
        out = torch.compile(m, backend="aot_eager")(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
