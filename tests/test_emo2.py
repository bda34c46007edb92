"""EMOv2 (zhangzjn/EMOv2): parity with the authors' code (golden), the authors' parameter counts,
their checkpoint wrappers, and the padded hybrid window attention against a direct per-window
computation."""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import need

import zoo
from zoo.cost import count_params
from zoo.hub import CheckpointError
from zoo.models.emo2 import HybridWindowAttention
from zoo.registry import get_entry


def _golden_rule(data_dir):
    path = need(data_dir / "golden" / "golden_rule.py", "golden fill rule")
    spec = importlib.util.spec_from_file_location("golden_rule", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_golden_emo2_1m(data_dir, tmp_path):
    """``EMO2_1M_k5_hybrid()`` of the authors, weights by the golden rule, eval at 224 px."""
    golden = np.load(need(data_dir / "golden" / "emo2_1m.npz", "EMOv2-1M golden"))
    keys = json.loads(str(golden["keys"]))
    model = zoo.create("emo2_1m")
    # the same keys, in the same order, with the same shapes as the authors' state dict
    assert [(k, list(v.shape)) for k, v in model.state_dict().items()] == [(k, list(s)) for k, s, _ in keys]
    f = tmp_path / "emo2_1m_golden.pth"
    torch.save(_golden_rule(data_dir).fill(keys), f)
    model = zoo.create("emo2_1m", checkpoint_path=f).eval()
    x = torch.from_numpy(golden["input"])
    ref = torch.from_numpy(golden["output"])
    with torch.no_grad():
        out = model(x)
    assert out.shape == ref.shape == (1, 1000)
    rel = float((out - ref).norm() / ref.norm())
    max_rel = float((out - ref).abs().max() / ref.abs().max())
    # measured: 1.5e-7 (L2) and 2.1e-7 (max-abs / max |ref|) on CPU, float32
    assert rel < 1e-4 and max_rel < 1e-4, (rel, max_rel)


@pytest.mark.parametrize(
    "name, authors",
    [
        ("emo2_1m", None),  # exact: the golden's count of the authors' EMO2_1M_k5_hybrid()
        ("emo2_2m", "2.384M"),  # fvcore table in resources/Cls/log_train_EMOv2_2M_224.txt
        ("emo2_5m", "5.126M"),  # fvcore table in resources/Cls/log_train_EMOv2_5M_224.txt
    ],
)
def test_params_match_authors(name, authors):
    n = count_params(zoo.create(name))
    assert n == get_entry(name).params
    if authors is None:
        assert n == 1_460_844
    else:
        assert f"{n / 1e6:.3f}M" == authors


def _model_and_reference(name="emo2_1m"):
    torch.manual_seed(1)
    model = zoo.create(name).eval()
    with torch.no_grad():  # give the layer scales and norms non-trivial values
        for k, v in model.state_dict().items():
            if v.is_floating_point() and (k.endswith("gamma") or "norm" in k):
                v.copy_(torch.rand_like(v) * 0.5 + 0.5 if not k.endswith("running_mean") else torch.randn_like(v) * 0.1)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(x)
    return model, x, ref


def test_authors_checkpoint_wrappers_load(tmp_path):
    model, x, ref = _model_and_reference()
    sd = model.state_dict()
    other = {k: torch.zeros_like(v) for k, v in sd.items()}
    files = {
        # the authors' trainer: net (read by their loader by default) and net_E (EMA)
        "trainer.pth": {"net": {f"module.{k}": v for k, v in sd.items()}, "net_E": other, "epoch": 300},
        "wrapped.pth": {"state_dict": {f"module.model.{k}": v for k, v in sd.items()}},
        "compiled.pth": {"model": {f"_orig_mod.{k}": v for k, v in sd.items()}},
        "swa.pth": {**{f"module.{k}": v for k, v in sd.items()}, "n_averaged": torch.tensor(3)},
    }
    for name, obj in files.items():
        torch.save(obj, tmp_path / name)
        loaded = zoo.create("emo2_1m", checkpoint_path=tmp_path / name).eval()
        with torch.no_grad():
            assert torch.equal(loaded(x), ref), name


def test_foreign_checkpoint_is_refused(tmp_path):
    torch.save({"conv.weight": torch.zeros(4, 3, 3, 3)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not an EMOv2 state dict"):
        zoo.create("emo2_1m", checkpoint_path=tmp_path / "other.pth")


def _direct_window_attention(attn: HybridWindowAttention, x: torch.Tensor, modes) -> torch.Tensor:
    """Zero-pad to the window multiple, attend window by window with explicit slicing, crop."""
    B, _, H, W = x.shape
    ws = attn.window_size
    wh, ww = (H, W) if ws <= 0 else (ws, ws)
    Hp, Wp = math.ceil(H / wh) * wh, math.ceil(W / ww) * ww
    xp = F.pad(x, (0, Wp - W, 0, Hp - H))
    q, k = attn.qk(xp).chunk(2, dim=1)
    v = attn.v(xp)
    n1, n2 = Hp // wh, Wp // ww
    heads = attn.num_head
    out = torch.zeros(B, v.shape[1], Hp, Wp)
    for mode in modes:
        for a in range(n1):
            for b in range(n2):
                if mode == "close":
                    rows, cols = slice(a * wh, (a + 1) * wh), slice(b * ww, (b + 1) * ww)
                else:  # remote: every n-th row / column, starting at the window's offset
                    rows, cols = slice(a, Hp, n1), slice(b, Wp, n2)
                for h in range(heads):
                    dq, dv = q.shape[1] // heads, v.shape[1] // heads
                    qh = q[:, h * dq:(h + 1) * dq, rows, cols].flatten(2).transpose(1, 2)
                    kh = k[:, h * dq:(h + 1) * dq, rows, cols].flatten(2).transpose(1, 2)
                    vh = v[:, h * dv:(h + 1) * dv, rows, cols]
                    p = torch.softmax(qh @ kh.transpose(1, 2) / math.sqrt(dq), dim=-1)
                    y = (p @ vh.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(vh.shape)
                    out[:, h * dv:(h + 1) * dv, rows, cols] += y
    return out[:, :, :H, :W]


@pytest.mark.parametrize(
    "modes, window, size",
    [
        (("remote", "close"), 4, (10, 9)),  # padded to 12 x 12, 3 x 3 windows
        (("remote", "close"), 4, (8, 12)),  # no padding
        (("remote",), 3, (7, 5)),
        (("close",), 3, (7, 5)),
        (("remote", "close"), 0, (5, 6)),  # window <= 0: the whole map
    ],
)
def test_window_attention_matches_direct_computation(modes, window, size):
    torch.manual_seed(0)
    attn = HybridWindowAttention(40, 60, dim_head=20, window_size=window, modes=modes).eval()
    with torch.no_grad():
        for p in attn.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
        x = torch.randn(2, 40, *size)
        out = attn(x)
        ref = _direct_window_attention(attn, x, modes)
    assert out.shape == (2, 60, *size)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_odd_input_sizes_and_features():
    """Inputs whose stage maps are not window multiples (the authors pad): 100 x 76 gives 7 x 5
    and 4 x 3 maps in the attention stages; stage strides are 4, 8, 16, 32 (ceil)."""
    model, _, _ = _model_and_reference("emo2_2m")
    feats = zoo.create("emo2_2m", features_only=True).eval()
    result = feats.model.load_state_dict(model.state_dict(), strict=False)
    assert not result.missing_keys
    assert sorted(result.unexpected_keys) == ["head.bias", "head.weight", "norm.norm.bias", "norm.norm.weight"]
    x = torch.randn(1, 3, 100, 76)
    with torch.no_grad():
        logits = model(x)
        outs = feats(x)
        last = model.forward_intermediates(x, indices=1, intermediates_only=True)[0]
        final = model.forward_features(x)
    assert logits.shape == (1, 1000) and torch.isfinite(logits).all()
    assert [tuple(o.shape[-2:]) for o in outs] == [(25, 19), (13, 10), (7, 5), (4, 3)]
    assert [o.shape[1] for o in outs] == [32, 48, 120, 200]
    assert last.abs().mean() > 0.1  # layer scales were set away from their 1e-6 init
    torch.testing.assert_close(outs[-1], last, rtol=1e-5, atol=1e-6)
    # forward_features = last stage + the final norm
    torch.testing.assert_close(final, model.norm(last), rtol=1e-5, atol=1e-6)
