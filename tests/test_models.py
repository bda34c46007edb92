"""Registry-wide checks, run for every registered model with no per-model work: build, forward
and backward on a tiny input, eval determinism, state-dict round trip, card params and GMACs,
bad input."""

from __future__ import annotations

import pytest
import torch

import zoo
from zoo.cost import count_gmacs, count_params
from zoo.hub import save_safetensors
from zoo.registry import get_entry

MODELS = zoo.list_models()


def tiny_input(name: str, batch: int = 2) -> torch.Tensor:
    entry = get_entry(name)
    size = list(entry.test_size or entry.input_size)
    if entry.test_size is None and len(size) == 3:  # images: keep channels, shrink the sides
        size[1], size[2] = min(size[1], 32), min(size[2], 32)
    g = torch.Generator().manual_seed(0)
    if entry.input_range is None:  # mean/std-normalised input
        return torch.randn((batch, *size), generator=g)
    lo, hi = entry.input_range
    return lo + (hi - lo) * torch.rand((batch, *size), generator=g)


def build(name: str, **kwargs) -> torch.nn.Module:
    """The model the behaviour tests run: the card's, or the small width its entry names."""
    return zoo.create(name, **{**get_entry(name).test_args, **kwargs})


def test_registry_is_not_empty():
    assert "rlfn_x4" in MODELS and "rlfn_s_x4" in MODELS


@pytest.mark.parametrize("name", MODELS)
def test_forward_backward(name):
    m = build(name).train()
    x = tiny_input(name)
    y = m(x)
    assert torch.isfinite(y).all()
    if hasattr(m, "rate_distortion"):  # learned codecs: the rate term and aux loss train the entropy models
        out = m.rate_distortion(x)
        assert out["x_hat"].shape == y.shape and torch.isfinite(out["loss"])
        (out["loss"] + out["aux_loss"]).backward()
    elif hasattr(m, "example_loss"):  # models whose forward uses only part of the network (SAM's forward is
        # the image encoder; a codec's codebooks learn through their own losses): a loss that reaches all of it
        loss = m.example_loss(x)
        assert loss.ndim == 0 and torch.isfinite(loss)
        loss.backward()
    else:
        y.float().pow(2).mean().backward()
    trainable = [(n, p) for n, p in m.named_parameters() if p.requires_grad]
    assert trainable
    no_grad = [n for n, p in trainable if p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"
    assert all(torch.isfinite(p.grad).all() for _, p in trainable)


@pytest.mark.parametrize("name", MODELS)
def test_eval_deterministic_and_state_dict_round_trip(name, tmp_path):
    m = build(name).eval()
    x = tiny_input(name, batch=1)
    with torch.no_grad():
        a, b = m(x), m(x)
    assert torch.equal(a, b)
    f = save_safetensors(m.state_dict(), tmp_path / "w.safetensors")
    torch.manual_seed(123)  # a differently initialised copy
    m2 = build(name, checkpoint_path=f).eval()
    with torch.no_grad():
        assert torch.equal(m2(x), a)
    assert m2.pretrained_cfg["architecture"] == name


@pytest.mark.parametrize("name", MODELS)
def test_card_params_and_gmacs(name):
    entry = get_entry(name)
    assert entry.params is not None and entry.gmacs is not None, f"{name}: the card must state params and GMACs"
    try:  # no need to initialise the weights to count them (a 500M-parameter model builds in no time)
        with torch.device("meta"):
            m = zoo.create(name)
        gmacs = count_gmacs(m, entry.input_size)
    except Exception:  # a model whose construction or forward reads values: count on the CPU
        m = zoo.create(name)
        gmacs = count_gmacs(m, entry.input_size)
    assert count_params(m) == entry.params
    assert gmacs == pytest.approx(entry.gmacs, rel=1e-4, abs=1e-4)


@pytest.mark.parametrize("name", MODELS)
def test_card_fields(name):
    card = zoo.info(name)
    for key in ("task", "family", "paper", "license", "input_size"):
        assert card[key], f"{name}: card lacks {key}"
    for tag, cfg in card["pretrained"].items():
        assert cfg["url"] or cfg["hf_hub_id"] or cfg["file"], f"{name}.{tag}: no source"
        assert cfg["license"], f"{name}.{tag}: no licence"
        assert cfg["verified"] == bool(cfg["sha256"]), f"{name}.{tag}: verified must mean a sha256 computed here"


@pytest.mark.parametrize("name", [n for n in MODELS if len(get_entry(n).input_size) == 3])
def test_bad_image_input(name):
    m = build(name).eval()
    x = tiny_input(name, batch=1)
    c = x.shape[1]
    with pytest.raises(ValueError, match=f"expected {c} channels"):
        m(torch.cat([x, x[:, :1]], 1))
    with pytest.raises(ValueError, match="4-D"):
        m(x[0])
    with pytest.raises(ValueError, match="floating-point"):
        m((x * 255).to(torch.uint8))
    if get_entry(name).input_range is None:
        return  # normalised input: any float values are valid
    lo, hi = get_entry(name).input_range
    with pytest.raises(ValueError, match="expected values in"):
        m(x * 255 if hi == 1 else x * 1000)
